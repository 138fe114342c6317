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
//! environment) is found: [`descendants`](super::scan::descendants) follows parent pids from the server
//! and from the descendants seen before, so a process that was in the tree
//! when corrald looked stays the server's after it is orphaned.
//!
//! The *record* (`<socket>.children`, next to the socket, so it is per daemon
//! and, in the runtime directory, gone after a reboot) holds the daemon's
//! instance id, the boot it was written in (`/proc/sys/kernel/random/boot_id`)
//! and each running server leader's pid and start time. A daemon that starts
//! and finds a record from a predecessor that did not shut down kills what
//! that predecessor left: every process carrying its instance's marker, and
//! every recorded leader (with its process group) whose start time still
//! matches exactly and that either carries that instance's marker or was
//! recorded in this boot (the record's boot id is ours).
//!
//! Why a recorded leader does not need the marker: leaders that exec with a
//! cleaned environment (`env -i`), overwrite their environment area
//! (setproctitle) or are not dumpable (`/proc/<pid>/environ` unreadable) carry
//! none we can see, and they would survive a SIGKILLed daemon with their whole
//! process group. Pid plus exact, non-zero start time names one process within
//! one boot (a pid is not reused within the clock tick its process started
//! in), the boot id rules out a record that survived a reboot (a runtime
//! directory that is not a tmpfs), and the record is trusted only when we
//! wrote it (below). A record without a boot id (written by an earlier
//! version) still needs the marker, as it did then.
//!
//! The record is trusted only when it cannot have been planted: a regular file
//! (opened with `O_NOFOLLOW`) owned by our uid that nobody else can write
//! (no group or other write bit: the previous version wrote it 0644), in a
//! directory private to us, which is opened once and checked on its
//! descriptor; the record, its temp file and the rename between them are
//! reached relative to that descriptor (`openat`, `renameat`, `unlinkat`), so
//! a directory swapped in at the same path is never read or written. A record
//! of another boot is ignored. A recorded start time of 0 (unknown) never
//! matches. The record is written 0600 through a temp file created with
//! `O_CREAT|O_EXCL|O_NOFOLLOW` and renamed over it. A write that fails (disk
//! full) is retried on the next change and every 2 s
//! ([`Registry::retry_record`], from `reap`), and shown in
//! `daemon/status.childrenRecordError` (and by `corral status` and `doctor`)
//! until one succeeds: until then a SIGKILLed daemon's servers would survive
//! it.
//!
//! The [`Registry`] (leaders, markers, the record, the cgroup leaves) is
//! made once at boot by [`init`], after the socket lock is held, and passed
//! down as an `Arc` (supervisor, server tasks, `transport::stdio`'s launch,
//! the reap and record-retry tasks of `reap`): there is no process-wide one.
//! A leader is registered under the registry's lock while it is spawned, so
//! the orphan reaper never sees a leader it does not know; `/proc` scans
//! (`scan`) never run under that lock, which every launch needs.
//! `daemon/status` gets only a `watch` receiver of the record's error
//! ([`Registry::record_errors`]). The server task records a server's
//! descendants when it becomes ready and again before it closes the session,
//! and follows them from there.
//!
//! Which guarantee holds where: with a cgroup leaf (Linux, cgroup v2, a
//! delegated cgroup, `--server-cgroups`; see `cgroup`) every process a
//! server started goes with it on stop, restart, crash and daemon SIGTERM,
//! and after a SIGKILL of corrald the next daemon kills what the leaves
//! hold. Without, on Linux: the process group, every process carrying the
//! marker, and every descendant seen at `ready` or at the start of the
//! teardown (or started later below one of those); not caught: a process
//! that cleared its environment *and* was orphaned before corrald looked (a
//! double fork, or a helper started after `ready` whose server then died on
//! its own), and, after a SIGKILL of corrald, any unmarked process outside a
//! recorded leader's process group (the successor knows only the record and
//! the marker). Elsewhere the process scanning (`/proc`, Linux-only) is
//! missing, and the process group (Job Object on Windows) is the only
//! guarantee.

use std::collections::BTreeMap;
#[cfg(target_os = "linux")]
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

#[cfg(target_os = "linux")]
use super::scan::processes;
use super::scan::{ProcessId, environ_has, is_same_process, marked_processes, read_stat, start_time};
use super::signal::{Signal, send_signal, send_signal_to_group};

/// Environment variable that marks every process of a server's tree.
pub const MARKER_VAR: &str = "CORRAL_SERVER_MARKER";

/// The daemon's processes registry: which server leaders are running, and the
/// record on disk. One per daemon process.
#[derive(Debug)]
pub struct Registry {
    instance: String,
    /// This boot's id, written into the record.
    boot_id: Option<String>,
    record: Option<RecordFile>,
    state: Mutex<RegistryState>,
    /// Where cgroup leaves go, once `cgroup::enable` found a usable cgroup.
    leaves: OnceLock<super::cgroup::Leaves>,
    /// Why the last write of the record failed; `None` once one succeeded. A
    /// `watch`, so `daemon/status` reads it through a receiver handed over at
    /// boot ([`Registry::record_errors`]) without naming this room. Set only
    /// under `state`'s lock, as the writes are.
    record_error: tokio::sync::watch::Sender<Option<String>>,
    /// The soft open-file limit servers start with, when corrald raised its
    /// own: the one corrald was given. Set once, at boot.
    child_open_files: OnceLock<(u64, Option<u64>)>,
}

/// Where the record lives: a file name in the socket's directory.
#[derive(Debug)]
struct RecordFile {
    /// The record's path, for messages.
    path: PathBuf,
    /// The directory, opened and checked once ([`corral_protocol::paths::open_private_dir`]);
    /// every operation on the record goes relative to it. `Err` says why it could not be opened.
    #[cfg(unix)]
    dir: Result<std::os::fd::OwnedFd, String>,
}

#[derive(Debug, Default)]
struct RegistryState {
    /// Running server leaders by pid, with their server's name (spawned by
    /// us, reaped by tokio). Keyed by pid: a removed server's name may be
    /// reused while its old process is still being torn down.
    leaders: BTreeMap<u32, (String, ProcessId)>,
    generation: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    instance: String,
    daemon_pid: u32,
    /// The boot the record was written in; absent in records of earlier versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
    children: Vec<RecordedChild>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordedChild {
    server: String,
    #[serde(flatten)]
    process: ProcessId,
}

/// Set up reaping for a daemon whose record lives at `record_path`: become a
/// subreaper, kill what a predecessor left, write a fresh record.
///
/// Call once, after the socket lock is held (so no live daemon owns the
/// record). The registry is passed down from there (supervisor, server
/// tasks, the launch, the reap task): there is no global one.
pub fn init(record_path: &Path) -> Arc<Registry> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag; no memory is passed.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become a child subreaper");
        }
    }
    let record = RecordFile::open(record_path);
    if let Some(predecessor) = read_trusted_record(&record) {
        kill_predecessors_leftovers(&predecessor);
    }
    let registry = Arc::new(Registry::new(Some(record)));
    registry.write_record();
    registry
}

impl RecordFile {
    /// Open (and check) the directory of the record at `path`.
    fn open(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            #[cfg(unix)]
            dir: corral_protocol::paths::open_private_dir(corral_protocol::paths::socket_dir(path))
                .map_err(|problem| problem.to_string()),
        }
    }

    /// The record's file name in its directory.
    #[cfg(unix)]
    fn name(&self) -> &std::ffi::OsStr {
        self.path.file_name().unwrap_or_default()
    }
}

/// `/proc/sys/kernel/random/boot_id`: a new random id at every boot.
fn boot_id() -> Option<String> {
    #[cfg(target_os = "linux")]
    {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = text.trim();
        (!id.is_empty()).then(|| id.to_owned())
    }
    #[cfg(not(target_os = "linux"))]
    None
}

impl Registry {
    /// A registry with no record file, for the in-process test tier (which
    /// starts no stdio server, so there is nothing to record).
    #[cfg(test)]
    pub(crate) fn without_record() -> Arc<Self> {
        Arc::new(Self::new(None))
    }

    fn new(record: Option<RecordFile>) -> Self {
        let me = std::process::id();
        let start = start_time(me).unwrap_or_default();
        Self {
            instance: format!("{me}-{start}"),
            boot_id: boot_id(),
            record,
            state: Mutex::new(RegistryState::default()),
            leaves: OnceLock::new(),
            child_open_files: OnceLock::new(),
            record_error: tokio::sync::watch::Sender::new(None),
        }
    }

    /// The cgroup leaves of stdio servers, if `cgroup::enable` set them up.
    pub(crate) fn leaves(&self) -> Option<&super::cgroup::Leaves> {
        self.leaves.get()
    }

    /// Where the children record lives (`None`: a registry without one):
    /// it names the socket this daemon serves, and so the daemon.
    pub(super) fn record_path(&self) -> Option<&Path> {
        self.record.as_ref().map(|record| record.path.as_path())
    }

    /// The soft open-file limit a server starts with, if it is not corrald's own.
    /// (soft, hard; `None`: unlimited), read once at boot: no `getrlimit` per launch.
    pub(crate) fn child_open_files(&self) -> Option<(u64, Option<u64>)> {
        self.child_open_files.get().copied()
    }

    /// Set once, at boot, when corrald raised its own soft open-file limit.
    pub(crate) fn set_child_open_files(&self, soft: u64, hard: Option<u64>) {
        let _ = self.child_open_files.set((soft, hard));
    }

    /// Set once, at boot, by `cgroup::enable`.
    pub(super) fn set_leaves(&self, leaves: super::cgroup::Leaves) {
        let _ = self.leaves.set(leaves);
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
        let Some(record_file) = &self.record else { return };
        let path = &record_file.path;
        // Written under the lock: concurrent spawns and teardowns must not
        // interleave their writes or rename an older snapshot over a newer one.
        let state = self.lock();
        let record = Record {
            instance: self.instance.clone(),
            daemon_pid: std::process::id(),
            boot_id: self.boot_id.clone(),
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
            .and_then(|bytes| write_atomically(record_file, &bytes));
        match result {
            Ok(()) => {
                if self.record_error.send_replace(None).is_some() {
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
                if self.record_error.borrow().is_none() {
                    tracing::warn!(record = %path.display(), %error, "cannot write the children record; retrying");
                }
                self.record_error.send_replace(Some(message));
            }
        }
        drop(state);
    }

    /// Why the children record could not be written, while it cannot: a
    /// receiver that always holds the latest (for `daemon/status`).
    pub fn record_errors(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.record_error.subscribe()
    }

    /// Write the record again if the last write failed (called on a timer).
    pub fn retry_record(&self) {
        if self.record_error.borrow().is_some() {
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
        let Some(record) = &self.record else { return };
        #[cfg(unix)]
        if let Ok(dir) = &record.dir {
            let _ = rustix::fs::unlinkat(dir, record.name(), rustix::fs::AtFlags::empty());
        }
        #[cfg(not(unix))]
        let _ = std::fs::remove_file(&record.path);
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
                    // Checked again under the lock, which spawning a leader
                    // holds: a leader spawned after the snapshot above that
                    // already exited is a zombie of ours too, and reaping it
                    // here would steal its exit status from tokio (found in
                    // review: `lastExit` became "No child processes").
                    let state = self.lock();
                    if state.leaders.contains_key(&process.id.pid) {
                        continue;
                    }
                    // SAFETY: waitpid on a specific zombie child; status pointer may be null.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
                    drop(state);
                }
            }
        }
    }
}

/// Write `bytes` to the record through `<name minus extension>.tmp` in its
/// directory, created anew (`O_CREAT|O_EXCL|O_NOFOLLOW`, 0600) so that nothing
/// already at that name, least of all a symbolic link, is ever written
/// through, then renamed over the record (a rename replaces a link at the
/// record's name itself, never its target). Both go relative to the
/// directory's descriptor.
#[cfg(unix)]
fn write_atomically(record: &RecordFile, bytes: &[u8]) -> std::io::Result<()> {
    use rustix::fs::AtFlags;
    use std::io::Write as _;
    let dir = record.dir.as_ref().map_err(|why| std::io::Error::other(why.clone()))?;
    let name = record.name();
    let temporary = Path::new(name).with_extension("tmp");
    let mut file = crate::private_file::create_anew(dir, &temporary)?;
    file.write_all(bytes)?;
    drop(file);
    rustix::fs::renameat(dir, &temporary, dir, name).map_err(|error| {
        let _ = rustix::fs::unlinkat(dir, &temporary, AtFlags::empty());
        error.into()
    })
}

/// The largest record read back: a record lists one leader per running server.
const MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;

/// Read the record a predecessor left, if there is one we can trust: in a
/// directory private to us (checked on the descriptor it is read through), a
/// regular file of our uid that nobody else can write, with a well-formed
/// instance id, written in this boot if it says which. Anything else is
/// ignored with a warning naming the path and what is wrong, and nothing is
/// killed.
#[cfg(unix)]
fn read_trusted_record(record_file: &RecordFile) -> Option<Record> {
    use rustix::fs::{FileType, Mode, OFlags};
    use std::io::Read as _;
    let path = &record_file.path;
    let ignore = |why: String| {
        tracing::warn!(record = %path.display(), "ignoring the children record: {why}; nothing is killed");
        None
    };
    let dir = match &record_file.dir {
        Ok(dir) => dir,
        Err(problem) => return ignore(problem.clone()),
    };
    let file = match rustix::fs::openat(
        dir,
        record_file.name(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(file) => file,
        Err(rustix::io::Errno::NOENT) => return None,
        Err(rustix::io::Errno::LOOP) => return ignore("it is a symbolic link".to_owned()),
        Err(error) => return ignore(format!("cannot open it: {}", std::io::Error::from(error))),
    };
    let stat = match rustix::fs::fstat(&file) {
        Ok(stat) => stat,
        Err(error) => return ignore(format!("cannot inspect it: {}", std::io::Error::from(error))),
    };
    let own_uid = corral_protocol::paths::effective_uid();
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return ignore("it is not a regular file".to_owned());
    }
    if stat.st_uid != own_uid {
        return ignore(format!("it belongs to uid {}, not to you (uid {own_uid})", stat.st_uid));
    }
    // What matters is that nobody else can write it: the previous version
    // wrote it 0644, this one writes 0600.
    #[allow(clippy::useless_conversion, reason = "`st_mode` is a u16 on macOS")]
    let mode = u32::from(stat.st_mode) & 0o7777;
    if mode & 0o022 != 0 {
        return ignore(format!("it has mode {mode:o}: other users can write it"));
    }
    let mut bytes = Vec::new();
    if let Err(error) = std::fs::File::from(file).take(MAX_RECORD_BYTES).read_to_end(&mut bytes) {
        return ignore(format!("cannot read it: {error}"));
    }
    let record: Record = match serde_json::from_slice(&bytes) {
        Ok(record) => record,
        Err(error) => return ignore(format!("it is not a children record: {error}")),
    };
    if !is_instance_id(&record.instance) {
        return ignore("its instance id is not `<pid>-<start time>`".to_owned());
    }
    if let (Some(recorded), Some(now)) = (&record.boot_id, boot_id())
        && *recorded != now
    {
        return ignore(format!(
            "it was written in another boot (boot id {recorded}, now {now}): its pids name other processes now"
        ));
    }
    Some(record)
}

#[cfg(not(unix))]
fn write_atomically(record: &RecordFile, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = record.path.with_extension("tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, &record.path)
}

/// Without `/proc` nothing is killed from a record anyway (see the module doc).
#[cfg(not(unix))]
fn read_trusted_record(_record: &RecordFile) -> Option<Record> {
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
    // The reader ignored a record of another boot; this one says it is of ours.
    let this_boot = record.boot_id.is_some() && record.boot_id == boot_id();
    let mut killed = Vec::new();
    for child in &record.children {
        if is_recorded_process(child.process, &instance_marker, this_boot) {
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

/// Whether a leader named by a trusted record on disk is still that process:
/// alive, the exact start time recorded (an unknown, 0, matches nothing), and
/// either recorded in this boot (`this_boot`: pid and start time name one
/// process) or carrying the marker of the record's daemon instance in its
/// environment (a record of an earlier version, without a boot id). See the
/// module doc for why the marker alone would miss leaders.
fn is_recorded_process(id: ProcessId, instance_marker: &str, this_boot: bool) -> bool {
    let needle = format!("{MARKER_VAR}={instance_marker}");
    id.start_time != 0
        && read_stat(id.pid).is_some_and(|stat| !stat.zombie && stat.id.start_time == id.start_time)
        && (this_boot || environ_has(id.pid, needle.as_bytes(), true))
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
    fn a_process_from_a_record_needs_its_exact_start_time_and_this_boot_or_the_marker() {
        let me = std::process::id();
        let exact = ProcessId {
            pid: me,
            start_time: start_time(me).expect("own stat"),
        };
        let unknown = ProcessId { pid: me, start_time: 0 };
        let other = ProcessId {
            pid: me,
            start_time: exact.start_time + 1,
        };
        assert!(is_same_process(unknown), "live bookkeeping treats 0 as unknown");
        for this_boot in [false, true] {
            assert!(
                !is_recorded_process(unknown, "1-1/", this_boot),
                "from disk, 0 matches nothing"
            );
            assert!(!is_recorded_process(other, "1-1/", this_boot), "another start time");
        }
        assert!(
            !is_recorded_process(exact, "1-1/", false),
            "a record without a boot id needs the marker, which the test process does not carry"
        );
        assert!(
            is_recorded_process(exact, "1-1/", true),
            "recorded in this boot with the exact start time: no marker needed"
        );
    }

    /// The record is read through the directory that was checked, even after
    /// its path was renamed away and another directory put in its place.
    #[test]
    fn the_record_is_read_and_written_through_the_checked_directory() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = std::env::temp_dir().join(format!("corrald-record-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("dir");
        std::fs::create_dir_all(&dir).expect("create the test dirs");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
        let path = dir.join("d.sock.children");
        let record = |instance: &str| format!(r#"{{"instance":"{instance}","daemonPid":1,"children":[]}}"#);
        std::fs::write(&path, record("1-1")).expect("write the checked record");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");

        let record_file = RecordFile::open(&path);
        std::fs::rename(&dir, base.join("moved")).expect("rename the dir away");
        std::fs::create_dir(&dir).expect("another dir at the path");
        std::fs::write(&path, record("2-2")).expect("write the swapped-in record");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");

        let read = read_trusted_record(&record_file).expect("the checked record");
        assert_eq!(read.instance, "1-1", "read through the descriptor, not the path");
        write_atomically(&record_file, record("3-3").as_bytes()).expect("write");
        let moved = std::fs::read_to_string(base.join("moved").join("d.sock.children")).expect("read");
        assert!(moved.contains("3-3"), "written into the checked directory: {moved}");
        let swapped = std::fs::read_to_string(&path).expect("read");
        assert!(
            swapped.contains("2-2"),
            "the swapped-in directory is untouched: {swapped}"
        );
        let _ = std::fs::remove_dir_all(base);
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
