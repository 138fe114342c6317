//! Other processes: the workspace binaries, bounded commands, and processes by pid (alive,
//! gone, signalled, killed on drop).

use std::io::{self, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::wait::{POLL_INTERVAL, WAIT, poll_until};

/// Path of a workspace binary (`corrald`, `corral`) built next to this test executable.
///
/// Panics with the command that builds it when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("path of the running test executable");
    // target/<profile>/deps/<test>-<hash>  →  target/<profile>/<name>; a binary of this
    // package (corral-conformance) lives in target/<profile>/ itself.
    let beside = exe.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if beside.is_file() {
        return beside;
    }
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps/");
    let path = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} does not exist: build the binaries with `cargo build --workspace --bins` \
         (or run the whole suite with `bash tests/run.sh`)",
        path.display()
    );
    path
}

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace")
        .to_path_buf()
}

/// What a finished command printed.
#[derive(Debug)]
pub struct CommandOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Run `command` to completion with piped output, killing it and failing the test after `limit`.
pub fn run_command(command: &mut Command, limit: Duration) -> CommandOutput {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {description}: {error}"));
    let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let stdout = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout_pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let stderr = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{description} did not finish within {limit:?}; stderr so far:\n{}",
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    };
    CommandOutput {
        status,
        stdout: stdout.join().expect("stdout reader thread"),
        stderr: stderr.join().expect("stderr reader thread"),
    }
}

/// A `corral` command with no inherited `CORRAL_*` variables.
pub fn corral_command() -> Command {
    let mut command = Command::new(binary("corral"));
    command
        .env_remove("CORRAL_SOCKET")
        .env_remove("CORRAL_CONFIG")
        .env_remove("CORRAL_SERVICE_DIR");
    command
}

/// Run `corral ARGS --socket SOCKET` to completion (bounded by [`WAIT`]) on a
/// blocking thread, so the async test's own connections keep being served meanwhile.
pub async fn run_corral(socket: &Path, args: &[&str]) -> CommandOutput {
    let mut command = corral_command();
    command.args(args).arg("--socket").arg(socket);
    tokio::task::spawn_blocking(move || run_command(&mut command, WAIT))
        .await
        .expect("the thread running corral")
}

// ---------------------------------------------------------------------------
// Processes by pid

/// State letter and start time (clock ticks after boot) of `pid`, from `/proc/<pid>/stat`.
pub fn process_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command (field 2) may hold spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

/// Process group of `pid` (field 5 of `/proc/<pid>/stat`).
pub fn process_group(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Whether `pid` is a live process. A zombie is dead: it has exited and only
/// waits for a parent (possibly an init that never reaps) to collect it.
pub fn is_alive(pid: u32) -> bool {
    matches!(process_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Fail the test unless every pid in `pids` is a live process now.
pub fn assert_all_alive(pids: &[u32], context: &str) {
    let dead: Vec<u32> = pids.iter().copied().filter(|pid| !is_alive(*pid)).collect();
    assert!(
        dead.is_empty(),
        "{context}: expected pids {pids:?} alive, but {dead:?} are gone"
    );
}

/// Wait (up to `limit`) until no pid in `pids` is a live process; fail naming the survivors.
pub async fn assert_all_gone(pids: &[u32], limit: Duration, context: &str) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|pid| is_alive(*pid)).collect();
        if alive.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let described: Vec<String> = alive
                .iter()
                .map(|pid| {
                    let command = std::fs::read(format!("/proc/{pid}/cmdline"))
                        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
                        .unwrap_or_default();
                    format!("{pid} ({})", command.trim())
                })
                .collect();
            panic!("{context}: still alive after {limit:?}: {described:?} (of {pids:?})");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The pids in a fixture's `--pid-file`, in the order written (empty if it does not exist yet).
pub fn read_pid_file(path: &Path) -> Vec<u32> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                line.trim()
                    .parse()
                    .unwrap_or_else(|error| panic!("bad line {line:?} in {}: {error}", path.display()))
            })
            .collect(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("cannot read {}: {error}", path.display()),
    }
}

/// Wait (bounded by [`WAIT`]) until `path` lists at least `count` pids; returns them all.
pub async fn wait_for_pid_file(path: &Path, count: usize) -> Vec<u32> {
    poll_until(&format!("{count} pids in {}", path.display()), || async {
        let pids = read_pid_file(path);
        (pids.len() >= count).then_some(pids)
    })
    .await
}

/// Send `signal` to `pid`, failing the test if it cannot be sent.
pub fn send_signal(pid: u32, signal: libc::c_int) {
    let target = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) has no memory-safety preconditions.
    let result = unsafe { libc::kill(target, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal}): {}", io::Error::last_os_error());
}

/// Cleans up after a test whose servers start processes: on drop, SIGKILLs
/// every live process listed in its pid files (or added by pid) that still
/// carries a Corral server marker in its environment, so that a failing test
/// leaks nothing and a reused pid is never touched.
#[derive(Debug, Default)]
pub struct KillSurvivorsOnDrop {
    pid_files: Vec<PathBuf>,
    /// Processes added by pid, with their start time then.
    processes: Vec<(u32, u64)>,
}

impl KillSurvivorsOnDrop {
    /// Watch these pid files.
    pub fn new(pid_files: impl IntoIterator<Item = PathBuf>) -> Self {
        Self {
            pid_files: pid_files.into_iter().collect(),
            processes: Vec::new(),
        }
    }

    /// Also kill `pid` on drop if it is then still the process it is now (same
    /// start time), whatever its environment: for a grandchild that cleared
    /// its environment and so carries no marker to recognise it by.
    pub fn also(&mut self, pid: u32) {
        if let Some((_, start_time)) = process_stat(pid) {
            self.processes.push((pid, start_time));
        }
    }
}

impl Drop for KillSurvivorsOnDrop {
    fn drop(&mut self) {
        for &(pid, start_time) in &self.processes {
            if is_alive(pid) && process_stat(pid).is_some_and(|(_, now)| now == start_time) {
                eprintln!("killing leftover process {pid} (added by pid)");
                if let Ok(target) = libc::pid_t::try_from(pid) {
                    // SAFETY: kill(2); the pid was just checked to be the same process (start time).
                    unsafe { libc::kill(target, libc::SIGKILL) };
                }
            }
        }
        for path in &self.pid_files {
            let Ok(text) = std::fs::read_to_string(path) else {
                continue;
            };
            for pid in text.lines().filter_map(|line| line.trim().parse::<u32>().ok()) {
                let marked = std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                    environ
                        .split(|b| *b == 0)
                        .any(|e| e.starts_with(b"CORRAL_SERVER_MARKER="))
                });
                if is_alive(pid) && marked {
                    eprintln!("killing leftover server process {pid} (listed in {})", path.display());
                    if let Ok(target) = libc::pid_t::try_from(pid) {
                        // SAFETY: kill(2); the pid was just checked to be a marked server process.
                        unsafe { libc::kill(target, libc::SIGKILL) };
                    }
                }
            }
        }
    }
}
