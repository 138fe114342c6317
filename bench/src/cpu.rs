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
pub(crate) fn process_cpu(pid: &str) -> anyhow::Result<Duration> {
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
    Ok(Duration::from_nanos(total_ticks * 1_000_000_000 / ticks_per_second()))
}

/// CPU time of the whole machine, all CPUs together, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MachineCpu {
    /// user + nice + system + irq + softirq: time some process (or the kernel for it) ran.
    pub(crate) busy: Duration,
    /// idle + iowait: time no one wanted a CPU.
    pub(crate) idle: Duration,
    /// Time the hypervisor ran something else on our vCPUs.
    pub(crate) steal: Duration,
}

impl MachineCpu {
    /// The counters now.
    pub(crate) fn take() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = stat.lines().next().context("/proc/stat is empty")?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|field| field.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let field = |index: usize| ticks.get(index).copied().unwrap_or(0);
        let to_duration = |total: u64| Duration::from_nanos(total * 1_000_000_000 / ticks_per_second());
        Ok(Self {
            busy: to_duration(field(0) + field(1) + field(2) + field(5) + field(6)),
            idle: to_duration(field(3) + field(4)),
            steal: to_duration(field(7)),
        })
    }

    /// What was spent between `earlier` and `self`.
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        Self {
            busy: self.busy.saturating_sub(earlier.busy),
            idle: self.idle.saturating_sub(earlier.idle),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`), 100 if unknown.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&hz| hz > 0).unwrap_or(100)
}
