//! CPU time used by the daemon and by the benchmark itself, so that a latency
//! can be split into work done and time spent waiting (wake-ups, scheduling).

use std::time::Duration;

use anyhow::Context as _;

/// Cumulative user + system CPU time of the daemon and of this process (all threads, living and exited).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    daemon: Option<Duration>,
    bench: Duration,
}

/// CPU time spent between two snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuUse {
    /// `None` when no daemon took part (the floor measurement).
    pub(crate) daemon: Option<Duration>,
    pub(crate) bench: Duration,
}

impl Snapshot {
    /// CPU time of `daemon_pid` (if any) and of this process so far.
    pub(crate) fn take(daemon_pid: Option<u32>) -> anyhow::Result<Self> {
        Ok(Self {
            daemon: daemon_pid.map(|pid| process_cpu(&pid.to_string())).transpose()?,
            bench: process_cpu("self")?,
        })
    }

    /// CPU time spent since `earlier`.
    pub(crate) fn since(&self, earlier: &Snapshot) -> CpuUse {
        CpuUse {
            daemon: self
                .daemon
                .zip(earlier.daemon)
                .map(|(now, then)| now.saturating_sub(then)),
            bench: self.bench.saturating_sub(earlier.bench),
        }
    }
}

/// `utime + stime` from `/proc/<pid>/stat`. Its resolution is one clock tick
/// (10 ms at the usual 100 Hz), fine over the seconds a measurement runs.
fn process_cpu(pid: &str) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may contain spaces: count fields after the last `)`.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("{path} has no `)`"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of proc(5); field 3 (state) is index 0 here.
    let ticks = |index: usize| -> anyhow::Result<u64> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("{path}: field {} is not a tick count", index + 3))
    };
    let total_ticks = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks_per_second = u64::try_from(ticks_per_second).ok().filter(|&hz| hz > 0).unwrap_or(100);
    Ok(Duration::from_nanos(total_ticks * 1_000_000_000 / ticks_per_second))
}
