//! Finding processes of this run that outlived their daemon.
//!
//! Every `corrald` the benchmark spawns and every MCP server those daemons
//! start carry `CORRAL_BENCH_RUN=<this run's tag>` in their environment: the
//! daemon gets it from [`crate::daemon::DaemonProcess`], the servers from the
//! `env` table of the generated config (corrald passes only an allow-list of
//! its own environment on, so the config is the only way in). The tag is
//! inherited by anything a server starts. The daemons' command lines also
//! name their temporary directories. A process matching either is this
//! run's; processes of the same peers started by someone else (a test suite
//! running on the same machine) match neither and are left alone.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

/// The environment variable that marks this run's processes.
pub(crate) const RUN_TAG_VAR: &str = "CORRAL_BENCH_RUN";

/// Temporary directories of the daemons this run spawned.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// This run's tag: the benchmark's pid and its start time, unique on this machine.
pub(crate) fn run_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}-{}", std::process::id(), since_epoch.as_nanos())
    })
}

/// Remember a daemon's temporary directory: a process whose command line names it is this run's.
pub(crate) fn record_dir(dir: &Path) {
    DIRS.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(dir.to_path_buf());
}

/// A live process of this run.
#[derive(Debug, Clone)]
pub(crate) struct Survivor {
    pub(crate) pid: u32,
    /// Its command line, arguments separated by spaces.
    pub(crate) cmdline: String,
}

impl std::fmt::Display for Survivor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}: {}", self.pid, self.cmdline)
    }
}

/// Every live (not zombie) process, other than this one, that is this run's.
pub(crate) fn find() -> Vec<Survivor> {
    let dirs: Vec<String> = DIRS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|dir| dir.display().to_string())
        .collect();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || is_zombie(pid) {
            continue;
        }
        // Processes that exit while we look, or that are not ours to read, are skipped.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " ").trim_end().to_owned())
            .unwrap_or_default();
        if has_tag(pid) || dirs.iter().any(|dir| cmdline.contains(dir.as_str())) {
            found.push(Survivor { pid, cmdline });
        }
    }
    found
}

/// How many live processes run one of `paths` (the peers) without being this run's:
/// someone else's tests, competing for the same CPUs.
pub(crate) fn foreign_processes_running(paths: &[&Path]) -> usize {
    let needles: Vec<String> = paths.iter().map(|path| path.display().to_string()).collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()))
        .filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            needles.iter().any(|needle| cmdline.contains(needle.as_str())) && !has_tag(pid)
        })
        .count()
}

/// SIGKILL a survivor, checking just before that the pid still carries this run's tag
/// (so a pid recycled since [`find`] is never touched). Returns whether it was signalled.
pub(crate) fn kill(survivor: &Survivor) -> bool {
    if !has_tag(survivor.pid) {
        return false;
    }
    let Ok(pid) = libc::pid_t::try_from(survivor.pid) else {
        return false;
    };
    // SAFETY: kill(2) takes plain integers; the pid was checked to be this run's process just now.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

/// Whether `/proc/<pid>/environ` holds this run's tag.
fn has_tag(pid: u32) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let wanted = format!("{RUN_TAG_VAR}={}", run_tag());
    environ.split(|&byte| byte == 0).any(|entry| entry == wanted.as_bytes())
}

/// State of a process from `/proc/<pid>/stat`: `None` when there is no such process.
pub(crate) fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: the state follows the last `)`.
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.trim_start().chars().next()
}

fn is_zombie(pid: u32) -> bool {
    process_state(pid) == Some('Z')
}

/// Whether any process (zombies included) is left in the process group `pgid`.
pub(crate) fn group_exists(pgid: u32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    // SAFETY: signal 0 sends nothing; it only checks whether the group has members.
    unsafe { libc::killpg(pgid, 0) == 0 }
}
