//! `corral mcp`: an MCP server on stdio for an MCP client (Claude Code,
//! Cursor, …), backed by the daemon. A byte pipe: the client's stdin goes to
//! the daemon's socket and the daemon's answers to stdout, unread. The daemon
//! tells an MCP connection from a Corral one by its first `initialize` and
//! speaks MCP on it (`daemon/src/bridge/`).
//!
//! - The socket is found as every other command finds it, and trusted the
//!   same way (a private directory, served by our own uid), before a byte
//!   is sent.
//! - No daemon answering (no socket, or refused) and no `--no-start`: start
//!   `corrald` in the background — the one next to this `corral`, else the
//!   first on PATH — in a session of its own, stdin from `/dev/null`, stdout
//!   and stderr appended to `corrald.log` in the state directory, then
//!   connect within 5 s. Two bridges starting at once both start
//!   a corrald; the socket's lock lets one serve and the other exit, and
//!   both bridges connect to the one that serves.
//! - Plain blocking I/O on two threads, no async runtime: an idle bridge is
//!   two threads blocked in `read` and a few hundred KiB of heap.
//! - When stdin closes, the write half of the socket is shut down, and the
//!   daemon's answers to what was asked are still passed on until the daemon
//!   closes the connection (it gives running requests a grace) or
//!   a grace of 5 s has passed.
//! - Nothing but the daemon's bytes is written to stdout; every diagnostic
//!   goes to stderr.

use std::path::Path;
use std::process::ExitCode;

/// Run `corral mcp` until the client or the daemon goes away.
pub(crate) fn run(socket: Option<&Path>, no_start: bool) -> anyhow::Result<ExitCode> {
    #[cfg(unix)]
    {
        unix::run(socket, no_start)
    }
    #[cfg(not(unix))]
    {
        let _ = (socket, no_start);
        anyhow::bail!("`corral mcp` needs a Unix socket; it does not run on this platform yet")
    }
}

#[cfg(unix)]
mod unix {
    use std::io::{Read, Write};
    use std::net::Shutdown;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt as _;
    use std::path::{Path, PathBuf};
    use std::process::{Command, ExitCode, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::Context as _;
    use corral_client::protocol::paths::{self, UntrustedSocket};

    /// How long a bridge that started corrald waits for it to serve.
    const START_WAIT: Duration = Duration::from_secs(5);
    /// How long answers are still passed on after the client closed stdin.
    const DRAIN_GRACE: Duration = Duration::from_secs(5);
    /// Bytes read at once, in each direction.
    const CHUNK: usize = 16 * 1024;

    /// Where a corrald this command starts logs to.
    fn daemon_log_path() -> PathBuf {
        paths::state_dir().join("corrald.log")
    }

    /// Between two connection attempts while a started corrald comes up.
    const RETRY_INTERVAL: Duration = Duration::from_millis(25);

    /// Why no connection was made.
    #[derive(Debug)]
    enum NoConnection {
        /// Nothing listens there: no directory, no socket file, or refused.
        NotRunning,
        /// The socket must not be used; the message says why.
        Refused(anyhow::Error),
    }

    pub(super) fn run(socket: Option<&Path>, no_start: bool) -> anyhow::Result<ExitCode> {
        let socket = paths::socket_path(socket);
        let stream = match connect(&socket) {
            Ok(stream) => stream,
            Err(NoConnection::Refused(error)) => return Err(error),
            Err(NoConnection::NotRunning) if no_start => {
                eprintln!(
                    "corral mcp: corrald is not running at {} and --no-start was given: start it with `corrald` \
                     or `systemctl --user start corral`, or leave out --no-start",
                    socket.display()
                );
                return Ok(ExitCode::from(crate::EXIT_DAEMON_NOT_RUNNING));
            }
            Err(NoConnection::NotRunning) => start_and_connect(&socket)?,
        };
        pipe(&stream)
    }

    /// Connect to the daemon at `socket`, trusting it only as the other commands do.
    fn connect(socket: &Path) -> Result<UnixStream, NoConnection> {
        let untrusted = |reason: UntrustedSocket| {
            NoConnection::Refused(anyhow::anyhow!(
                "refusing to talk to corrald at {}: {reason}",
                socket.display()
            ))
        };
        match paths::check_private_dir(paths::socket_dir(socket)) {
            Ok(()) => {}
            Err(reason) if reason.is_missing() => return Err(NoConnection::NotRunning),
            Err(reason) => return Err(untrusted(reason)),
        }
        let stream = match UnixStream::connect(socket) {
            Ok(stream) => stream,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(NoConnection::NotRunning);
            }
            Err(error) => {
                return Err(NoConnection::Refused(anyhow::anyhow!(
                    "cannot connect to corrald at {}: {error}",
                    socket.display()
                )));
            }
        };
        let own_uid = paths::effective_uid();
        match peer_uid(&stream) {
            Ok(peer_uid) if peer_uid == own_uid => Ok(stream),
            Ok(peer_uid) => Err(untrusted(UntrustedSocket::PeerIsOtherUser { peer_uid, own_uid })),
            Err(error) => Err(untrusted(UntrustedSocket::PeerUnknown { error })),
        }
    }

    /// The uid of the process serving `stream`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
        use std::os::fd::AsRawFd as _;
        let mut credentials = libc::ucred { pid: 0, uid: 0, gid: 0 };
        let mut length = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>()).unwrap_or(libc::socklen_t::MAX);
        // SAFETY: the pointers are to a `ucred` and its length, which the call fills.
        let status = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&raw mut credentials).cast(),
                &raw mut length,
            )
        };
        if status == 0 {
            Ok(credentials.uid)
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// The uid of the process serving `stream`.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
        use std::os::fd::AsRawFd as _;
        let mut uid: libc::uid_t = 0;
        let mut gid: libc::gid_t = 0;
        // SAFETY: the pointers are to two integers the call fills.
        if unsafe { libc::getpeereid(stream.as_raw_fd(), &raw mut uid, &raw mut gid) } == 0 {
            Ok(uid)
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Start corrald in the background and connect to whichever corrald
    /// serves `socket` within [`START_WAIT`] (ours, or one started at the
    /// same moment by another bridge, which won the socket's lock).
    fn start_and_connect(socket: &Path) -> anyhow::Result<UnixStream> {
        let log = daemon_log_path();
        let mut daemon = start_daemon(socket, &log)?;
        let deadline = Instant::now() + START_WAIT;
        let connected = loop {
            match connect(socket) {
                Ok(stream) => break Ok(stream),
                Err(NoConnection::Refused(error)) => break Err(error),
                Err(NoConnection::NotRunning) if Instant::now() >= deadline => {
                    let exited = match daemon.try_wait() {
                        Ok(Some(status)) => format!(" (it exited: {status})"),
                        _ => String::new(),
                    };
                    break Err(anyhow::anyhow!(
                        "started corrald, but nothing served {} within {}s{exited}; its log is {}",
                        socket.display(),
                        START_WAIT.as_secs(),
                        log.display()
                    ));
                }
                Err(NoConnection::NotRunning) => std::thread::sleep(RETRY_INTERVAL),
            }
        };
        // Reaped if it exits while this bridge runs (the loser of a start race
        // exits at once); a corrald that serves outlives this process.
        let reaper = std::thread::Builder::new()
            .name("corrald-reaper".to_owned())
            .stack_size(64 * 1024)
            .spawn(move || daemon.wait());
        if let Err(error) = reaper {
            eprintln!("corral mcp: cannot watch the corrald it started: {error}");
        }
        connected
    }

    /// The corrald to start: the one next to this `corral`, else the first on PATH.
    fn corrald_program() -> anyhow::Result<PathBuf> {
        let name = format!("corrald{}", std::env::consts::EXE_SUFFIX);
        if let Some(sibling) = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join(&name)))
            .filter(|sibling| sibling.is_file())
        {
            return Ok(sibling);
        }
        which::which(&name)
            .context("no corrald is running and none was found to start (next to corral, or on PATH): install corrald")
    }

    /// Start corrald for `socket`, detached from this process's terminal,
    /// session and pipes, logging to `log`.
    fn start_daemon(socket: &Path, log: &Path) -> anyhow::Result<std::process::Child> {
        let program = corrald_program()?;
        if let Some(dir) = log.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {} for corrald's log", dir.display()))?;
        }
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(log)
            .with_context(|| format!("cannot open corrald's log {}", log.display()))?;
        let stderr = log_file
            .try_clone()
            .with_context(|| format!("cannot open corrald's log {}", log.display()))?;
        let mut command = Command::new(&program);
        command
            .arg("--socket")
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(stderr);
        // SAFETY: `setsid` is async-signal-safe and touches no memory of the
        // parent; it cannot fail in a child that is not a group leader.
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        eprintln!(
            "corral mcp: started corrald (pid {}), logging to {}",
            child.id(),
            log.display()
        );
        Ok(child)
    }

    /// Pass bytes both ways until the daemon closes the connection, or the
    /// client closed stdin and the answers drained.
    fn pipe(stream: &UnixStream) -> anyhow::Result<ExitCode> {
        let to_daemon = stream.try_clone().context("cannot use the socket in two directions")?;
        let stdin_closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let client_done = stdin_closed.clone();
        let forwarder = std::thread::Builder::new()
            .name("stdin-to-corrald".to_owned())
            .stack_size(64 * 1024)
            .spawn(move || {
                forward_stdin(&to_daemon);
                client_done.store(true, std::sync::atomic::Ordering::Release);
                // Answers to what was asked may still come; not forever.
                let _ = to_daemon.shutdown(Shutdown::Write);
                std::thread::sleep(DRAIN_GRACE);
                let _ = to_daemon.shutdown(Shutdown::Both);
            })
            .context("cannot start the stdin thread")?;
        drop(forwarder);
        let ended = forward_answers(stream);
        if stdin_closed.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(ExitCode::SUCCESS);
        }
        match ended {
            AnswersEnd::ClientGone => Ok(ExitCode::SUCCESS),
            AnswersEnd::DaemonClosed => {
                eprintln!("corral mcp: corrald closed the connection (it stopped or restarted)");
                Ok(ExitCode::from(crate::EXIT_FAILURE))
            }
            AnswersEnd::ReadFailed(error) => {
                eprintln!("corral mcp: reading from corrald failed: {error}");
                Ok(ExitCode::from(crate::EXIT_FAILURE))
            }
        }
    }

    /// Copy stdin to the daemon until stdin ends (or either side fails).
    fn forward_stdin(mut to_daemon: &UnixStream) {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let read = match stdin.read(&mut buffer) {
                Ok(0) => return,
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if to_daemon.write_all(&buffer[..read]).is_err() {
                return;
            }
        }
    }

    /// Why the daemon's answers stopped.
    #[derive(Debug)]
    enum AnswersEnd {
        /// End of stream from the daemon.
        DaemonClosed,
        /// Stdout is closed: the client is gone.
        ClientGone,
        /// The socket failed.
        ReadFailed(std::io::Error),
    }

    /// Copy the daemon's bytes to stdout as they come.
    fn forward_answers(mut from_daemon: &UnixStream) -> AnswersEnd {
        let mut stdout = std::io::stdout().lock();
        let mut buffer = vec![0u8; CHUNK];
        loop {
            let read = match from_daemon.read(&mut buffer) {
                Ok(0) => return AnswersEnd::DaemonClosed,
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return AnswersEnd::ReadFailed(error),
            };
            if stdout.write_all(&buffer[..read]).and_then(|()| stdout.flush()).is_err() {
                return AnswersEnd::ClientGone;
            }
        }
    }
}
