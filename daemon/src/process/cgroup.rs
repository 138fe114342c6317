//! Stdio servers in cgroup v2 leaves (Linux, opt-in with `--server-cgroups`).
//!
//! The kernel's own answer to "which processes belong to this server": every
//! process started in a cgroup stays in it (only a process allowed to write
//! the cgroup tree's `cgroup.procs` files can leave), whatever it does with
//! its session, process group, parent or environment. `cgroup.kill` kills
//! every process in it at once (Linux 5.14; before that each listed pid gets
//! SIGKILL until none is left).
//!
//! corrald needs a cgroup it may create children in: under systemd that is
//! the unit's own cgroup with `Delegate=yes` (`systemd/corral.service`). Each
//! run of a stdio server gets a leaf `corral-server-<socket>-<generation>`
//! below the cgroup corrald is in, and the child moves itself into it between
//! fork and exec (`stdio::launch`), so nothing it starts is ever outside.
//! `<socket>` is a hash of the socket's path: two daemons in one cgroup (two
//! sockets, started from one terminal) never share, clean up or kill each
//! other's leaves; a daemon cleans up only what a predecessor on its own
//! socket left (the socket lock says no live daemon owns them). corrald
//! stays where it is: no controllers are enabled, so the "no internal
//! processes" rule does not apply. Where any of this is missing (not Linux,
//! cgroup v1 only, no write access, the flag off) servers run without a leaf
//! and the teardown relies on the process group, the marker and the
//! descendants corrald saw (see `reaper`), with a warning saying why.
//!
//! [`enable`] finds corrald's cgroup (`/proc/self/cgroup`, the cgroup2 mount
//! in `/proc/self/mountinfo`), proves a leaf can be made there, and kills
//! what a predecessor's leaves on this socket still hold. A run's leaf is
//! emptied with `cgroup.kill` at its teardown and removed; at shutdown,
//! [`kill_all_leaves`] is the last resort for any leaf still there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::reaper::Registry;

/// Prefix of the leaves corrald creates (and removes, also a predecessor's).
const LEAF_PREFIX: &str = "corral-server-";

/// Where this daemon's leaves go (the cgroup [`enable`] found usable), their
/// names and numbering. Owned by the process [`Registry`], set once at boot.
#[derive(Debug)]
pub struct Leaves {
    base: PathBuf,
    /// `corral-server-<socket>-`: this daemon's leaves, and only they.
    prefix: String,
    next_leaf: AtomicU64,
}

/// The name prefix of the leaves of the daemon whose children record is at
/// `record` (next to its socket): the same for every daemon serving that
/// socket, different for another socket.
fn leaf_prefix(record: Option<&Path>) -> String {
    use sha2::Digest as _;
    let Some(record) = record else {
        // No record (tests without a socket): this process's own leaves.
        return format!("{LEAF_PREFIX}pid{}-", std::process::id());
    };
    let digest = sha2::Sha256::digest(record.as_os_str().as_encoded_bytes());
    let tag: String = digest.iter().take(6).map(|byte| format!("{byte:02x}")).collect();
    format!("{LEAF_PREFIX}{tag}-")
}

/// Use cgroup leaves for stdio servers: find the cgroup corrald is in, check
/// that a leaf can be made there, and kill what a predecessor left in its
/// leaves. Logs and stays off when that is not possible.
pub fn enable(processes: &Registry) {
    let prefix = leaf_prefix(processes.record_path());
    match usable_base(&prefix) {
        Ok(base) => {
            kill_leftover_leaves(&base, &prefix, "left by a previous daemon", processes);
            tracing::info!(cgroup = %base.display(), "stdio servers run in cgroup leaves below this cgroup");
            processes.set_leaves(Leaves {
                base,
                prefix,
                next_leaf: AtomicU64::new(1),
            });
        }
        Err(why) => tracing::warn!(
            "--server-cgroups: {why}; servers run without cgroups (process group, marker and descendants only)"
        ),
    }
}

/// Whether servers get leaves.
pub fn enabled(processes: &Registry) -> bool {
    processes.leaves().is_some()
}

/// Kill and remove every leaf still there (daemon shutdown, last resort).
/// Returns how many leaves held processes.
pub fn kill_all_leaves(processes: &Registry) -> usize {
    match processes.leaves() {
        Some(leaves) => kill_leftover_leaves(&leaves.base, &leaves.prefix, "still running at shutdown", processes),
        None => 0,
    }
}

fn usable_base(prefix: &str) -> Result<PathBuf, String> {
    if !cfg!(target_os = "linux") {
        return Err("cgroups exist only on Linux".to_owned());
    }
    let mount = cgroup2_mount().ok_or_else(|| "no cgroup v2 hierarchy is mounted".to_owned())?;
    let own = own_cgroup().ok_or_else(|| "corrald's cgroup v2 path is not in /proc/self/cgroup".to_owned())?;
    let base = mount.join(own.trim_start_matches('/'));
    // A probe leaf: the same operations a launch needs (mkdir, open cgroup.procs for writing).
    let probe = base.join(format!("{prefix}probe-{}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|error| {
        format!(
            "cannot create a cgroup in {} ({error}); with systemd, set Delegate=yes on the unit",
            base.display()
        )
    })?;
    let writable = std::fs::OpenOptions::new().write(true).open(probe.join("cgroup.procs"));
    let _ = std::fs::remove_dir(&probe);
    writable.map_err(|error| format!("cannot write {} ({error})", probe.join("cgroup.procs").display()))?;
    Ok(base)
}

/// The mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on a hybrid system), from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        // "... mount-point options - fstype source super-options"
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace()
            .nth(4)
            .map(|path| PathBuf::from(unescape_mount_path(path)))
    })
}

/// Mount points escape space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(index) = rest.find('\\') {
        out.push_str(&rest[..index]);
        let code = rest
            .get(index + 1..index + 4)
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[index + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[index + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// corrald's cgroup v2 path (the `0::` line of `/proc/self/cgroup`).
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// One server run's cgroup.
#[derive(Debug, Clone)]
pub struct Leaf {
    path: PathBuf,
    /// Reaps what the leaf's kill re-parented to corrald.
    processes: Arc<Registry>,
}

impl Leaf {
    /// A new leaf for one run of `server`, or `None` when cgroups are off
    /// or the leaf cannot be made (logged, naming the path).
    pub fn create(server: &str, processes: Arc<Registry>) -> Option<Self> {
        let leaves = processes.leaves()?;
        let number = leaves.next_leaf.fetch_add(1, Ordering::Relaxed);
        let path = leaves.base.join(format!("{}{number}", leaves.prefix));
        match std::fs::create_dir(&path) {
            Ok(()) => Some(Self { path, processes }),
            Err(error) => {
                tracing::warn!(server, cgroup = %path.display(), %error, "cannot create the server's cgroup; it runs without one");
                None
            }
        }
    }

    /// The leaf's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `cgroup.procs`, opened for writing (close-on-exec): the child writes
    /// `0` to it between fork and exec to move itself in.
    pub fn procs_for_writing(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))
            .map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("{}: {error}", self.path.join("cgroup.procs").display()),
                )
            })
    }

    /// Whether `pid` is in this leaf (its `/proc/<pid>/cgroup` names it).
    pub fn holds(&self, pid: u32) -> bool {
        let Some(own) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok() else {
            return false;
        };
        let Some(name) = self.path.file_name().and_then(|name| name.to_str()) else {
            return false;
        };
        own.lines()
            .find_map(|line| line.strip_prefix("0::"))
            .is_some_and(|path| path.trim_end().ends_with(&format!("/{name}")))
    }

    /// The pids in the leaf now.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.path)
    }

    /// Whether any process is in the leaf.
    pub fn populated(&self) -> bool {
        populated(&self.path)
    }

    /// SIGKILL everything in the leaf, wait (bounded) until it is empty, remove it.
    /// Blocking: call it from `spawn_blocking`.
    pub fn kill_and_remove(&self) {
        kill_cgroup(&self.path);
        remove_when_empty(&self.path, Duration::from_secs(1), &self.processes);
    }
}

fn pids_in(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .map(|text| text.lines().filter_map(|line| line.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn populated(path: &Path) -> bool {
    match std::fs::read_to_string(path.join("cgroup.events")) {
        Ok(events) => events.lines().any(|line| line.trim() == "populated 1"),
        Err(_) => !pids_in(path).is_empty(),
    }
}

/// `cgroup.kill` where the kernel has it, else SIGKILL to every listed pid.
fn kill_cgroup(path: &Path) {
    if std::fs::write(path.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    #[cfg(unix)]
    for pid in pids_in(path) {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2); a pid listed in the leaf belongs to the server
            // (a process cannot be listed after it was reaped).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Remove an emptied cgroup; killed processes leave it as they exit, so wait
/// (polling, bounded by `limit`) until it is unpopulated. Left in place
/// (and logged) if it does not empty in time; a later daemon removes it.
fn remove_when_empty(path: &Path, limit: Duration, processes: &Registry) {
    if !path.exists() {
        return; // removed already (a teardown's SIGKILL step, then its end)
    }
    let deadline = Instant::now() + limit;
    while populated(path) && Instant::now() < deadline {
        kill_cgroup(path);
        std::thread::sleep(Duration::from_millis(10));
    }
    processes.reap_adopted();
    if let Err(error) = std::fs::remove_dir(path)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(cgroup = %path.display(), %error, "cannot remove a server's cgroup");
    }
}

/// Kill and remove every leaf named `prefix*` under `base` (this socket's
/// daemons' leaves, never another daemon's); returns how many held processes.
fn kill_leftover_leaves(base: &Path, prefix: &str, why: &str, processes: &Registry) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else { return 0 };
    let mut killed = 0;
    for entry in entries.filter_map(Result::ok) {
        let is_leaf = entry.file_name().to_str().is_some_and(|name| name.starts_with(prefix));
        if !is_leaf || !entry.path().is_dir() {
            continue;
        }
        if populated(&entry.path()) {
            killed += 1;
            tracing::warn!(cgroup = %entry.path().display(), "killing the processes of a server cgroup {why}");
        }
        kill_cgroup(&entry.path());
        remove_when_empty(&entry.path(), Duration::from_secs(1), processes);
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path("/sys/fs/cgroup"), "/sys/fs/cgroup");
        assert_eq!(unescape_mount_path("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_path("/odd\\x"), "/odd\\x");
    }

    #[test]
    fn leaves_are_named_by_socket() {
        let one = leaf_prefix(Some(Path::new("/run/user/1000/corral/corral.sock.children")));
        assert_eq!(
            one,
            leaf_prefix(Some(Path::new("/run/user/1000/corral/corral.sock.children")))
        );
        assert_ne!(
            one,
            leaf_prefix(Some(Path::new("/run/user/1000/corral/other.sock.children")))
        );
        assert!(one.starts_with(LEAF_PREFIX) && one.ends_with('-'), "{one}");
        assert_eq!(one.len(), LEAF_PREFIX.len() + 13, "{one}");
        // No socket's prefix is a prefix of another's (the separator ends the tag).
        let other = leaf_prefix(Some(Path::new("/run/user/1000/corral/other.sock.children")));
        assert!(!one.starts_with(&other) && !other.starts_with(&one), "{one} {other}");
    }
}
