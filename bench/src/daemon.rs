//! The `corrald` under test: spawned from the release binary on a private
//! socket, measured through `/proc`, and always stopped (SIGTERM, then
//! SIGKILL) and reaped, on success, on error and on panic.
//!
//! [`DaemonProcess::spawn`] starts the daemon (the phases that compare
//! with a direct client start server-everything themselves, and the bridge
//! phase starts `corral mcp`). The daemon stays in the benchmark's process group on purpose: a
//! Ctrl-C in the terminal then reaches it too, even if the benchmark itself
//! is killed before its destructors run.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::survivors;

/// How long a SIGTERM'd daemon may take to exit before it gets SIGKILL.
/// Longer than the daemon's own 5 s shutdown grace so that a slow but
/// orderly shutdown is seen as such.
const TERMINATE_GRACE: Duration = Duration::from_secs(7);
/// How often an exiting daemon is polled.
const EXIT_POLL: Duration = Duration::from_millis(2);

/// A running `corrald` with its own temporary directory (socket, config, log).
#[derive(Debug)]
pub(crate) struct DaemonProcess {
    child: Child,
    socket_path: PathBuf,
    log_path: PathBuf,
    /// Removed after the daemon exits (see `Drop`).
    dir: Option<tempfile::TempDir>,
    /// Just before `spawn()` was called.
    spawned_at: Instant,
}

impl DaemonProcess {
    /// Start `corrald` with test hooks on a fresh socket and a config file that does not exist (no servers).
    pub(crate) fn spawn(corrald: &Path) -> anyhow::Result<Self> {
        Self::spawn_inner(corrald, None, &[], false)
    }

    /// Start `corrald` like [`Self::spawn`] but with its built-in server, as a user runs it.
    pub(crate) fn spawn_with_builtin(corrald: &Path) -> anyhow::Result<Self> {
        Self::spawn_inner(corrald, None, &[], true)
    }

    /// Start `corrald` like [`Self::spawn`], with `config` as its `config.toml` (its servers
    /// start as the daemon starts) and `env` set on top (e.g. the address of a private D-Bus).
    pub(crate) fn spawn_with_config_and_env(
        corrald: &Path,
        config: &str,
        env: &[(&str, OsString)],
    ) -> anyhow::Result<Self> {
        Self::spawn_inner(corrald, Some(config), env, false)
    }

    fn spawn_inner(
        corrald: &Path,
        config: Option<&str>,
        env: &[(&str, OsString)],
        builtin: bool,
    ) -> anyhow::Result<Self> {
        // A short prefix keeps the socket path far below the 103-byte limit.
        let dir = tempfile::Builder::new()
            .prefix("corral-bench-")
            .tempdir()
            .context("creating a temporary directory for the daemon's socket")?;
        survivors::record_dir(dir.path());
        let socket_path = dir.path().join("corral.sock");
        let config_path = dir.path().join("config.toml");
        if let Some(config) = config {
            std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
        }
        let log_path = dir.path().join("corrald.log");
        let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(corrald);
        command
            .arg(OsString::from("--socket"))
            .arg(&socket_path)
            .arg(OsString::from("--config"))
            .arg(&config_path)
            .env("CORRAL_TEST_HOOKS", "1")
            // Credentials (the OAuth login phase) stay in this run's directory, never the user's.
            .env("CORRAL_DATA_DIR", dir.path().join("data"))
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            // Marks the daemon as this run's, for the survivor check (children get it from the config).
            .env(survivors::RUN_TAG_VAR, survivors::run_tag())
            // Measure the daemon with its default log level, whatever the caller's shell says.
            .env_remove("CORRAL_LOG")
            .env_remove("RUST_LOG")
            .env_remove("CORRAL_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if !builtin {
            // Only the servers of the config: the built-in `corral` server would be in every
            // `mcpServer/list` answer, and in the counts and timings of the server measurements.
            command.arg(OsString::from("--no-builtin-server"));
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let spawned_at = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", corrald.display()))?;
        Ok(Self {
            child,
            socket_path,
            log_path,
            dir: Some(dir),
            spawned_at,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time since just before the process was spawned.
    pub(crate) fn since_spawn(&self) -> Duration {
        self.spawned_at.elapsed()
    }

    pub(crate) fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The daemon's directory: `config.toml`, and `data/` (its `CORRAL_DATA_DIR`).
    pub(crate) fn dir(&self) -> &Path {
        self.socket_path.parent().unwrap_or(Path::new("."))
    }

    /// Poll-connect every `interval` until the socket accepts a connection;
    /// returns the time since spawn. Fails if the daemon exits or `limit` passes.
    pub(crate) async fn wait_until_accepting(
        &mut self,
        interval: Duration,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        let deadline = self.spawned_at + limit;
        loop {
            if tokio::net::UnixStream::connect(&self.socket_path).await.is_ok() {
                return Ok(self.spawned_at.elapsed());
            }
            if let Some(status) = self.child.try_wait().context("polling corrald")? {
                bail!(
                    "corrald exited with {status} before accepting connections{}",
                    self.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "corrald did not accept connections on {} within {limit:?}{}",
                    self.socket_path.display(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Resident memory of the daemon now, from `/proc/<pid>/status`.
    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        Memory::of(self.pid())
    }

    /// SIGTERM, wait (bounded) for the exit, SIGKILL if it does not come.
    ///
    /// Returns the exit status and how long the orderly part took.
    pub(crate) async fn stop(mut self) -> anyhow::Result<Stopped> {
        let asked = Instant::now();
        self.terminate();
        let deadline = asked + TERMINATE_GRACE;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for corrald to exit")? {
                return Ok(Stopped {
                    status,
                    took: asked.elapsed(),
                });
            }
            if Instant::now() >= deadline {
                self.kill_and_reap();
                bail!(
                    "corrald did not exit within {TERMINATE_GRACE:?} of SIGTERM and was killed{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// The last lines of the daemon's log, prefixed for an error message (empty if there are none).
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return String::new();
        }
        let tail = &lines[lines.len().saturating_sub(10)..];
        format!("\ncorrald log ({}):\n{}", self.log_path.display(), tail.join("\n"))
    }

    fn terminate(&self) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) on the pid of our own unreaped child: the pid cannot
        // have been recycled for another process while we have not waited on it.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    fn kill_and_reap(&mut self) {
        // Errors mean the child is already gone; `wait` then returns at once.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DaemonProcess {
    /// The error and panic path: stop the daemon without a runtime, blocking for at most [`TERMINATE_GRACE`].
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
            let deadline = Instant::now() + TERMINATE_GRACE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(EXIT_POLL);
            }
            self.kill_and_reap();
        }
        // Only now, with the daemon gone, remove its socket directory.
        drop(self.dir.take());
    }
}

/// How a stopped daemon ended.
#[derive(Debug)]
pub(crate) struct Stopped {
    pub(crate) status: ExitStatus,
    /// From SIGTERM to exit.
    pub(crate) took: Duration,
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// Resident set size now.
    pub(crate) rss: u64,
    /// Peak resident set size so far ("high water mark").
    pub(crate) hwm: u64,
}

impl Memory {
    pub(crate) fn of(pid: u32) -> anyhow::Result<Self> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .with_context(|| format!("no {name} line in {path}"))?;
            let kib: u64 = line
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("{name} in {path} is not a number of kB: {line:?}"))?;
            Ok(kib * 1024)
        };
        Ok(Self {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
        })
    }
}
