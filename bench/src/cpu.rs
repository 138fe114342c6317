//! CPU time used by the daemon and by the benchmark itself, so that a latency
//! can be split into work done and time spent waiting (wake-ups, scheduling).

use std::collections::HashMap;
use std::time::{Duration, Instant};

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

/// CPU time of process `root` and every process below it now (exited ones are not counted).
pub(crate) fn tree_cpu(root: u32) -> Duration {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let mut parents: HashMap<u32, u32> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 4, the parent, is the second after the command name's closing parenthesis.
        if let Some(parent) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|field| field.parse().ok())
        {
            parents.insert(pid, parent);
        }
    }
    let in_tree = |mut pid: u32| {
        // Bounded: a chain of parents ends at pid 1 or 0.
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match parents.get(&pid) {
                Some(&parent) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    parents
        .keys()
        .filter(|&&pid| in_tree(pid))
        .filter_map(|pid| process_cpu(&pid.to_string()).ok())
        .sum()
}

/// A stretch of the benchmark is disturbed when the machine spent more than this share of one
/// CPU outside the benchmark's processes while it ran…
const DISTURBED_FOREIGN_CPU: f64 = 0.25;
/// … or when the hypervisor ran something else on our vCPUs for more than this share of the
/// machine's time (on a shared host it comes in bursts that slow one setup and not the next).
const DISTURBED_STEAL: f64 = 0.05;

/// What else used the machine during a stretch of the benchmark.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Disturbance {
    /// CPU the machine spent outside this benchmark's process tree, as a share of one CPU.
    pub(crate) foreign: f64,
    /// Time stolen by the hypervisor, as a share of the machine's time (all CPUs).
    pub(crate) steal: f64,
}

impl Disturbance {
    /// Too much to compare what ran during it with what ran during another.
    pub(crate) fn disturbed(&self) -> bool {
        self.foreign > DISTURBED_FOREIGN_CPU || self.steal > DISTURBED_STEAL
    }
}

impl std::fmt::Display for Disturbance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "others {:.2} CPU, steal {:.1} %", self.foreign, self.steal * 100.0)
    }
}

/// Rounds of a comparison until `wanted` undisturbed ones were run, at most twice as many in
/// all: a disturbed round is run again.
pub(crate) struct RoundsWanted {
    wanted: usize,
    run: usize,
    undisturbed: usize,
}

impl RoundsWanted {
    pub(crate) fn new(wanted: usize) -> Self {
        Self {
            wanted: wanted.max(1),
            run: 0,
            undisturbed: 0,
        }
    }

    /// The number of the next round to run (from 0), `None` once enough were.
    pub(crate) fn next(&self) -> Option<usize> {
        (self.undisturbed < self.wanted && self.run < 2 * self.wanted).then_some(self.run)
    }

    /// A round of `what` ran with `disturbance`; said on stderr when it is run again.
    pub(crate) fn ran(&mut self, what: &str, disturbance: &Disturbance) {
        if disturbance.disturbed() {
            eprintln!(
                "corral-bench: {what} round {}: disturbed ({disturbance}); run again",
                self.run
            );
        } else {
            self.undisturbed += 1;
        }
        self.run += 1;
    }
}

/// The items of the rounds `disturbances` tells undisturbed (item and disturbance in the
/// same place), or all of them when none was.
pub(crate) fn kept_rounds<'a, T>(items: &'a [T], disturbances: &[Disturbance]) -> impl Iterator<Item = &'a T> {
    let any_undisturbed = disturbances.iter().any(|disturbance| !disturbance.disturbed());
    items
        .iter()
        .zip(disturbances)
        .filter(move |(_, disturbance)| !any_undisturbed || !disturbance.disturbed())
        .map(|(item, _)| item)
}

/// How each round went, for a report: `n of m rounds undisturbed; 1: …; 2: … (disturbed)`.
pub(crate) fn rounds_line(disturbances: &[Disturbance]) -> String {
    let undisturbed = disturbances.iter().filter(|d| !d.disturbed()).count();
    let each: Vec<String> = disturbances
        .iter()
        .enumerate()
        .map(|(index, d)| {
            let disturbed = if d.disturbed() { ", disturbed" } else { "" };
            format!("{} ({d}{disturbed})", index + 1)
        })
        .collect();
    let over = if undisturbed == 0 {
        "none was undisturbed: the values and medians are of all"
    } else {
        "the values per round and the medians are of those"
    };
    format!(
        "{undisturbed} of {} rounds undisturbed ({over}); rounds: {}",
        disturbances.len(),
        each.join("; ")
    )
}

/// Watches the machine from [`DisturbanceWatch::start`] to [`DisturbanceWatch::stop`].
pub(crate) struct DisturbanceWatch {
    machine: MachineCpu,
    ours: Duration,
    started: Instant,
}

impl DisturbanceWatch {
    pub(crate) fn start() -> anyhow::Result<Self> {
        Ok(Self {
            machine: MachineCpu::take()?,
            ours: tree_cpu(std::process::id()),
            started: Instant::now(),
        })
    }

    pub(crate) fn stop(self) -> anyhow::Result<Disturbance> {
        let wall = self.started.elapsed();
        let machine = MachineCpu::take()?.since(&self.machine);
        let ours = tree_cpu(std::process::id()).saturating_sub(self.ours);
        let foreign = machine.busy.saturating_sub(ours).as_secs_f64() / wall.as_secs_f64().max(1e-9);
        let all = (machine.busy + machine.idle + machine.steal).as_secs_f64();
        let steal = if all > 0.0 {
            machine.steal.as_secs_f64() / all
        } else {
            0.0
        };
        Ok(Disturbance { foreign, steal })
    }
}

/// Clock ticks per second (`_SC_CLK_TCK`), 100 if unknown.
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&hz| hz > 0).unwrap_or(100)
}
