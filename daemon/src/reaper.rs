//! Making sure nothing a server started outlives it, even processes that left
//! its process group (a grandchild that called `setsid`, a double-forked
//! daemon), and even when corrald itself was killed with SIGKILL.
//!
//! How descendants are found: every server process gets the variable
//! [`MARKER_VAR`] = `<daemon instance>/<server>/<generation>` in its
//! environment, and children inherit their parent's environment. A process
//! whose environment carries a server's marker belongs to that server,
//! whoever its parent is now. Before signalling, a process's start time is
//! checked again, so a pid reused by an unrelated process is never touched.
//!
//! On Linux corrald is also a child subreaper (`PR_SET_CHILD_SUBREAPER`):
//! orphans of servers are re-parented to it rather than to init, and it reaps
//! their zombies (only those: the servers it spawned itself are reaped by
//! tokio). That is also how a process without the marker (it cleared its
//! environment) is found: [`descendants`] follows parent pids from the server
//! and from the descendants seen before, so a process that was in the tree
//! when corrald looked stays the server's after it is orphaned.
//!
//! The *record* (`<socket>.children`, next to the socket, so it is per daemon
//! and gone after a reboot with the runtime directory) holds the daemon's
//! instance id and each running server's pid and start time. A daemon that
//! starts and finds a record from a predecessor that did not shut down kills
//! what that predecessor left: every process carrying its instance's marker,
//! and every recorded pid whose start time still matches exactly *and* that
//! carries that instance's marker.
//!
//! The record is trusted only when it cannot have been planted: a regular file
//! (opened with `O_NOFOLLOW`), owned by our uid, mode 0600, in a directory
//! private to us. A recorded start time of 0 (unknown) never matches. The
//! record is written 0600 through a temp file created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` and renamed over it. A write that fails (disk
//! full) is retried on the next change and by a timer ([`Registry::retry_record`]),
//! and shown in `daemon/status.childrenRecordError` until one succeeds: until
//! then a SIGKILLed daemon's servers would survive it.
//!
//! The process scanning reads `/proc` and is Linux-only; elsewhere the process
//! group (Job Object on Windows) is the only guarantee.

use std::collections::BTreeMap;
#[cfg(target_os = "linux")]
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// Environment variable that marks every process of a server's tree.
pub const MARKER_VAR: &str = "CORRAL_SERVER_MARKER";

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

/// The daemon's processes registry: which server leaders are running, and the
/// record on disk. One per daemon process.
#[derive(Debug)]
pub struct Registry {
    instance: String,
    record_path: Option<PathBuf>,
    state: Mutex<RegistryState>,
}

#[derive(Debug, Default)]
struct RegistryState {
    /// Running server leaders by pid, with their server's name (spawned by
    /// us, reaped by tokio). Keyed by pid: a removed server's name may be
    /// reused while its old process is still being torn down.
    leaders: BTreeMap<u32, (String, ProcessId)>,
    generation: u64,
    /// Why the last write of the record failed; `None` once one succeeded.
    record_error: Option<String>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    instance: String,
    daemon_pid: u32,
    children: Vec<RecordedChild>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordedChild {
    server: String,
    #[serde(flatten)]
    process: ProcessId,
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

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// The registry; [`init`] must have been called (tests get one without a record).
pub fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| Registry::new(None))
}

/// Set up reaping for a daemon whose record lives at `record_path`: become a
/// subreaper, kill what a predecessor left, write a fresh record.
///
/// Call once, after the socket lock is held (so no live daemon owns the record).
pub fn init(record_path: &Path) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag; no memory is passed.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become a child subreaper");
        }
    }
    if let Some(record) = read_trusted_record(record_path) {
        kill_predecessors_leftovers(&record);
    }
    let registry = REGISTRY.get_or_init(|| Registry::new(Some(record_path.to_path_buf())));
    if registry.record_path.as_deref() != Some(record_path) {
        tracing::warn!("process registry was used before init; the record is not kept");
    }
    registry.write_record();
}

impl Registry {
    fn new(record_path: Option<PathBuf>) -> Self {
        let me = std::process::id();
        let start = start_time(me).unwrap_or_default();
        Self {
            instance: format!("{me}-{start}"),
            record_path,
            state: Mutex::new(RegistryState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RegistryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh marker value for the next run of `server`.
    pub fn next_marker(&self, server: &str) -> String {
        let mut state = self.lock();
        state.generation += 1;
        format!("{}/{server}/{}", self.instance, state.generation)
    }

    /// Spawn through `spawn` while holding the registry, then record the
    /// leader: the adopted-orphan reaper never sees a leader it does not know.
    pub fn spawn_leader<T>(
        &self,
        server: &str,
        spawn: impl FnOnce() -> std::io::Result<(T, u32)>,
    ) -> std::io::Result<T> {
        let mut state = self.lock();
        let (spawned, pid) = spawn()?;
        let id = ProcessId {
            pid,
            start_time: start_time(pid).unwrap_or_default(),
        };
        state.leaders.insert(pid, (server.to_owned(), id));
        drop(state);
        self.write_record();
        Ok(spawned)
    }

    /// Forget the leader `pid` (after it was reaped).
    pub fn leader_gone(&self, pid: u32) {
        self.lock().leaders.remove(&pid);
        self.write_record();
    }

    fn write_record(&self) {
        let Some(path) = &self.record_path else { return };
        // Written under the lock: concurrent spawns and teardowns must not
        // interleave their writes or rename an older snapshot over a newer one.
        let mut state = self.lock();
        let record = Record {
            instance: self.instance.clone(),
            daemon_pid: std::process::id(),
            children: state
                .leaders
                .values()
                .map(|(server, process)| RecordedChild {
                    server: server.clone(),
                    process: *process,
                })
                .collect(),
        };
        let result = serde_json::to_vec_pretty(&record)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(path, &bytes));
        match result {
            Ok(()) => {
                if state.record_error.take().is_some() {
                    tracing::info!(record = %path.display(), "the children record is written again");
                }
            }
            Err(error) => {
                let message = format!(
                    "cannot write the children record {}: {error}; if corrald is killed before a write succeeds, \
                     its servers' processes survive it (retrying)",
                    path.display()
                );
                // Once per failure streak, not on every retry.
                if state.record_error.is_none() {
                    tracing::warn!(record = %path.display(), %error, "cannot write the children record; retrying");
                }
                state.record_error = Some(message);
            }
        }
    }

    /// Why the children record could not be written, while it cannot.
    pub fn record_error(&self) -> Option<String> {
        self.lock().record_error.clone()
    }

    /// Write the record again if the last write failed (called on a timer).
    pub fn retry_record(&self) {
        if self.lock().record_error.is_some() {
            self.write_record();
        }
    }

    /// Last resort at shutdown, after the servers' own teardowns had their
    /// time: SIGKILL every process of this daemon's servers still alive
    /// (recorded leaders' groups, and anything carrying this instance's
    /// marker). Returns how many processes carried the marker.
    pub fn kill_everything_left(&self) -> usize {
        let leaders: Vec<ProcessId> = self.lock().leaders.values().map(|(_, process)| *process).collect();
        for leader in leaders {
            if is_same_process(leader) {
                send_signal_to_group(leader.pid, Signal::Kill);
            }
        }
        let marked = marked_processes(&format!("{}/", self.instance));
        for process in &marked {
            send_signal(*process, Signal::Kill);
        }
        self.reap_adopted();
        marked.len()
    }

    /// Remove the record: a clean shutdown leaves nothing to clean up.
    pub fn remove_record(&self) {
        if let Some(path) = &self.record_path {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Reap zombies re-parented to the daemon (never a leader: tokio reaps those).
    ///
    /// Blocking (a `/proc` scan): call it from `spawn_blocking`. The scan runs
    /// outside the registry's lock, which every launch needs: a leader
    /// registered meanwhile is not a zombie yet, and only zombies are reaped.
    pub fn reap_adopted(&self) {
        #[cfg(target_os = "linux")]
        {
            let leaders: HashSet<u32> = self.lock().leaders.keys().copied().collect();
            let me = std::process::id();
            for process in processes() {
                if process.ppid == me && process.zombie && !leaders.contains(&process.id.pid) {
                    let Ok(pid) = i32::try_from(process.id.pid) else {
                        continue;
                    };
                    // A leader spawned after the snapshot above is not a
                    // zombie of ours yet, so it cannot be this pid; tokio
                    // reaps the leaders it spawned.
                    // SAFETY: waitpid on a specific zombie child; status pointer may be null.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
                }
            }
        }
    }
}

/// Write `bytes` to `path` through `<path minus extension>.tmp`, created anew
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`, 0600) so that nothing already at that name,
/// least of all a symbolic link, is ever written through, then renamed over
/// `path` (a rename replaces a link at `path` itself, never its target).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let temporary = path.with_extension("tmp");
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)
    };
    let mut file = match create() {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            // A temp file left by a daemon killed mid-write, or something
            // planted: the directory is ours (checked at bind), so unlink it
            // (which never follows a link) and create our own.
            std::fs::remove_file(&temporary)?;
            create()?
        }
        Err(error) => return Err(error),
    };
    // Exactly 0600 whatever the umask: a successor trusts nothing else.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    drop(file);
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// The largest record read back: a record lists one leader per running server.
const MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;

/// Read the record a predecessor left at `path`, if there is one we can trust:
/// a regular file of our uid, mode 0600, in a directory private to us, with a
/// well-formed instance id. Anything else is ignored with a warning naming
/// the path and what is wrong, and nothing is killed.
#[cfg(unix)]
fn read_trusted_record(path: &Path) -> Option<Record> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let ignore = |why: String| {
        tracing::warn!(record = %path.display(), "ignoring the children record: {why}; nothing is killed");
        None
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
            return ignore("it is a symbolic link".to_owned());
        }
        Err(error) => return ignore(format!("cannot open it: {error}")),
    };
    let metadata = match file.metadata() {
        Ok(metadata) => metadata,
        Err(error) => return ignore(format!("cannot inspect it: {error}")),
    };
    let own_uid = corral_protocol::paths::effective_uid();
    if !metadata.is_file() {
        return ignore("it is not a regular file".to_owned());
    }
    if metadata.uid() != own_uid {
        return ignore(format!(
            "it belongs to uid {}, not to you (uid {own_uid})",
            metadata.uid()
        ));
    }
    if metadata.mode() & 0o7777 != 0o600 {
        return ignore(format!("it has mode {:o}, not 600", metadata.mode() & 0o7777));
    }
    if let Err(problem) = corral_protocol::paths::check_private_dir(corral_protocol::paths::socket_dir(path)) {
        return ignore(problem.to_string());
    }
    let mut bytes = Vec::new();
    if let Err(error) = file.take(MAX_RECORD_BYTES).read_to_end(&mut bytes) {
        return ignore(format!("cannot read it: {error}"));
    }
    let record: Record = match serde_json::from_slice(&bytes) {
        Ok(record) => record,
        Err(error) => return ignore(format!("it is not a children record: {error}")),
    };
    if !is_instance_id(&record.instance) {
        return ignore("its instance id is not `<pid>-<start time>`".to_owned());
    }
    Some(record)
}

#[cfg(not(unix))]
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

/// Without `/proc` nothing is killed from a record anyway (see the module doc).
#[cfg(not(unix))]
fn read_trusted_record(_path: &Path) -> Option<Record> {
    None
}

/// `<pid>-<start time>`, as [`Registry::new`] makes them.
fn is_instance_id(instance: &str) -> bool {
    instance.split_once('-').is_some_and(|(pid, start)| {
        [pid, start]
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
    })
}

/// Kill what a daemon that died without cleaning up left behind.
fn kill_predecessors_leftovers(record: &Record) {
    let instance_marker = format!("{}/", record.instance);
    let mut killed = Vec::new();
    for child in &record.children {
        if is_recorded_process(child.process, &instance_marker) {
            send_signal_to_group(child.process.pid, Signal::Kill);
            send_signal(child.process, Signal::Kill);
            killed.push(format!("{} (pid {})", child.server, child.process.pid));
        }
    }
    let marked = marked_processes(&instance_marker);
    for process in &marked {
        send_signal(*process, Signal::Kill);
    }
    if !killed.is_empty() || !marked.is_empty() {
        tracing::warn!(
            previous_daemon = record.daemon_pid,
            servers = ?killed,
            processes = marked.len(),
            "killed processes left behind by a daemon that did not shut down"
        );
    }
}

/// Whether a process named by a record on disk is still that process: alive,
/// the exact start time recorded (an unknown, 0, matches nothing), and
/// carrying the marker of the record's daemon instance in its environment.
fn is_recorded_process(id: ProcessId, instance_marker: &str) -> bool {
    let needle = format!("{MARKER_VAR}={instance_marker}");
    id.start_time != 0
        && read_stat(id.pid).is_some_and(|stat| !stat.zombie && stat.id.start_time == id.start_time)
        && environ_has(id.pid, needle.as_bytes(), true)
}

/// Signals the reaper sends.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    /// SIGTERM.
    Terminate,
    /// SIGKILL.
    Kill,
}

#[cfg(unix)]
fn signal_number(signal: Signal) -> i32 {
    match signal {
        Signal::Terminate => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    }
}

/// Signal `id` if it is still the same process.
pub fn send_signal(id: ProcessId, signal: Signal) {
    #[cfg(unix)]
    if is_same_process(id) {
        let Ok(pid) = i32::try_from(id.pid) else { return };
        // SAFETY: kill(2) with a pid we just verified; no memory is involved.
        unsafe { libc::kill(pid, signal_number(signal)) };
    }
    #[cfg(not(unix))]
    let _ = (id, signal);
}

fn send_signal_to_group(pgid: u32, signal: Signal) {
    #[cfg(unix)]
    if let Ok(pgid) = i32::try_from(pgid) {
        // SAFETY: killpg(2); a missing group is ESRCH, which is fine.
        unsafe { libc::killpg(pgid, signal_number(signal)) };
    }
    #[cfg(not(unix))]
    let _ = (pgid, signal);
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
struct Stat {
    id: ProcessId,
    ppid: u32,
    zombie: bool,
}

#[cfg(target_os = "linux")]
fn processes() -> Vec<Stat> {
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
fn processes() -> Vec<Stat> {
    Vec::new()
}

/// Parse `/proc/<pid>/stat`: state (field 3), ppid (4), start time (22).
#[cfg(target_os = "linux")]
fn read_stat(pid: u32) -> Option<Stat> {
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
fn read_stat(_pid: u32) -> Option<Stat> {
    None
}

fn start_time(pid: u32) -> Option<u64> {
    read_stat(pid).map(|stat| stat.id.start_time)
}

fn environ_has(pid: u32, needle: &[u8], prefix: bool) -> bool {
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_found_by_pid_and_start_time() {
        let me = std::process::id();
        let id = ProcessId {
            pid: me,
            start_time: start_time(me).expect("own stat"),
        };
        assert!(is_same_process(id));
        let reused = ProcessId {
            pid: me,
            start_time: id.start_time + 1,
        };
        assert!(
            !is_same_process(reused),
            "a different start time is a different process"
        );
    }

    #[test]
    fn a_process_from_a_record_needs_its_exact_start_time_and_the_marker() {
        let me = std::process::id();
        let exact = ProcessId {
            pid: me,
            start_time: start_time(me).expect("own stat"),
        };
        let unknown = ProcessId { pid: me, start_time: 0 };
        assert!(is_same_process(unknown), "live bookkeeping treats 0 as unknown");
        assert!(!is_recorded_process(unknown, "1-1/"), "from disk, 0 matches nothing");
        assert!(
            !is_recorded_process(exact, "1-1/"),
            "the test process does not carry the record's marker"
        );
    }

    #[test]
    fn instance_ids_are_pid_dash_start_time() {
        assert!(is_instance_id("123-456"));
        for bad in ["", "-", "123-", "-456", "1-2/3", "a-1", "123"] {
            assert!(!is_instance_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn markers_are_unique_per_run() {
        let registry = Registry::new(None);
        let first = registry.next_marker("s");
        let second = registry.next_marker("s");
        assert_ne!(first, second);
        assert!(first.starts_with(&registry.instance));
    }
}
