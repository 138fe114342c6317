//! [`TestDaemon`]: one real `corrald` child process in a private temp dir, its builder, and
//! the daemon's test hook (`debug/emitTestEvents`).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use corral_client::protocol::{DaemonNotification, ServerStatus};
use corral_client::{Client, ClientNotification, ConnectOptions};
use tempfile::TempDir;

use crate::process::binary;
use crate::raw::{RawConnection, WireFraming};
use crate::wait::{EXIT_GRACE, POLL_INTERVAL, WAIT, poll_until};

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

/// Longest socket path a Unix socket address holds on every supported OS.
const MAX_SOCKET_PATH_BYTES: usize = 103;

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

/// The `seq` and `name` of a `starting` status notification (what
/// `debug/emitTestEvents` publishes), failing on anything else.
pub fn starting_status_update(notification: ClientNotification) -> (u64, String) {
    match notification {
        ClientNotification::Daemon(DaemonNotification::StartupStatusUpdated(update)) => {
            assert_eq!(update.status, ServerStatus::Starting, "{update:?}");
            assert_eq!(update.error, None);
            assert_eq!(update.failure_reason, None);
            (update.seq, update.name)
        }
        other => panic!("expected mcpServer/startupStatus/updated, got {other:?}"),
    }
}
