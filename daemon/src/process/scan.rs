//! Reading `/proc`: a process by pid *and* start time ([`ProcessId`]), a
//! server's descendants by parent pid, and processes by the marker in their
//! environment. Every scan is blocking: callers run it in `spawn_blocking`,
//! never on a runtime thread and never under the registry's lock.

use super::reaper::MARKER_VAR;

/// A process, identified by pid *and* start time (clock ticks since boot),
/// so that a reused pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessId {
    /// Process id.
    pub pid: u32,
    /// Start time from `/proc/<pid>/stat` (0 where unknown).
    pub start_time: u64,
}

impl ProcessId {
    /// `pid` with its start time now (0 if it is gone or unknown).
    pub fn of(pid: u32) -> Self {
        Self {
            pid,
            start_time: start_time(pid).unwrap_or_default(),
        }
    }
}

/// Whether `id` is alive (not a zombie) and still the process it was.
pub fn is_same_process(id: ProcessId) -> bool {
    match read_stat(id.pid) {
        Some(stat) => !stat.zombie && (id.start_time == 0 || stat.id.start_time == id.start_time),
        None => false,
    }
}

/// The live descendants of `roots` (by parent pid, transitively), the roots
/// excluded: one `/proc/*/stat` scan. Roots are checked by start time, so a
/// reused pid's children are never taken for a server's.
///
/// This is the subreaper's own knowledge of a server's tree: a process that
/// left the process group and cleared its environment (no marker) is still a
/// descendant of the server while its parent chain is intact, and once its
/// parent dies it is re-parented to corrald (the subreaper) with its own
/// children still below it. So a tree seen while it was whole (recorded by
/// the caller and passed back as `roots`) stays findable after orphaning.
/// Blocking: call it from `spawn_blocking`.
pub fn descendants(roots: &[ProcessId]) -> Vec<ProcessId> {
    let all = processes();
    let live: Vec<&Stat> = all.iter().filter(|process| !process.zombie).collect();
    let mut found: Vec<ProcessId> = Vec::new();
    // A root with an unknown start time is never trusted: its pid may be reused.
    let mut frontier: Vec<u32> = roots
        .iter()
        .filter(|root| root.start_time != 0 && all.iter().any(|process| process.id == **root))
        .map(|root| root.pid)
        .collect();
    // Bounded: each process is added at most once, so the loop runs at most
    // once per live process.
    while let Some(parent) = frontier.pop() {
        for child in live.iter().filter(|process| process.ppid == parent) {
            if !found.contains(&child.id) && !roots.contains(&child.id) {
                found.push(child.id);
                frontier.push(child.id.pid);
            }
        }
    }
    found
}

/// Live processes (not zombies) carrying a marker: exactly `marker`, or any
/// marker starting with it when it ends with `/` (a whole daemon instance).
/// Blocking (reads every process's environment): call it from `spawn_blocking`.
pub fn marked_processes(marker: &str) -> Vec<ProcessId> {
    let needle = format!("{MARKER_VAR}={marker}");
    let prefix = marker.ends_with('/');
    let me = std::process::id();
    processes()
        .into_iter()
        .filter(|process| process.id.pid != me && !process.zombie)
        .filter(|process| environ_has(process.id.pid, needle.as_bytes(), prefix))
        .map(|process| process.id)
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Stat {
    pub(super) id: ProcessId,
    pub(super) ppid: u32,
    pub(super) zombie: bool,
}

#[cfg(target_os = "linux")]
pub(super) fn processes() -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_stat)
        .collect()
}

#[cfg(not(target_os = "linux"))]
pub(super) fn processes() -> Vec<Stat> {
    Vec::new()
}

/// Parse `/proc/<pid>/stat`: state (field 3), ppid (4), start time (22).
#[cfg(target_os = "linux")]
pub(super) fn read_stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = *fields.first()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(Stat {
        id: ProcessId { pid, start_time },
        ppid,
        zombie: state == "Z" || state == "X",
    })
}

#[cfg(not(target_os = "linux"))]
pub(super) fn read_stat(_pid: u32) -> Option<Stat> {
    None
}

pub(super) fn start_time(pid: u32) -> Option<u64> {
    read_stat(pid).map(|stat| stat.id.start_time)
}

pub(super) fn environ_has(pid: u32, needle: &[u8], prefix: bool) -> bool {
    match std::fs::read(format!("/proc/{pid}/environ")) {
        Ok(environ) => environ.split(|byte| *byte == 0).any(|entry| {
            if prefix {
                entry.starts_with(needle)
            } else {
                entry == needle
            }
        }),
        Err(_) => false,
    }
}
