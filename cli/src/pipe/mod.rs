//! `corral mcp`: an MCP server on stdio for an MCP client (Claude Code,
//! Cursor, …), backed by the daemon. A pipe of lines: the client's stdin goes
//! to the daemon's socket and the daemon's answers to stdout, each line as it
//! came but for the client's `initialize`, which carries this bridge's
//! options to the daemon (`options.rs`, `lines.rs`). The daemon tells an MCP
//! connection from a Corral one by its first `initialize` and speaks MCP on
//! it (`daemon/src/bridge/`).
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
//! - A bad `--config` file, or no daemon with `--no-start`, ends the
//!   command before the client gets anything (exit 2, exit 3).
//! - The daemon goes away (it stopped, restarted, crashed) while the client
//!   is there (stdin open): the bridge never exits for that. Each request
//!   the daemon took with it gets an error answer (-32603, "corral's daemon
//!   went away during this request…"); each request of the daemon's the
//!   client has not answered (elicitation, sampling) is withdrawn with
//!   `notifications/cancelled` (reason "corral's daemon restarted"), and the
//!   client's late answer to it is dropped, never given to the next daemon,
//!   which numbers its requests from 1 again (`lines.rs`). Then the bridge
//!   reconnects: the socket found and trusted as at the start, attempts
//!   100 ms apart doubling to 2 s, for as long as the client is there.
//! - Reconnecting, it starts corrald again (unless `--no-start`) only when
//!   nothing serves the socket and either the corrald it lost was one it
//!   started itself (the process serving the socket is the one it spawned,
//!   by the socket's peer pid; Linux only, elsewhere never known) or
//!   nothing has served for 5 s (`SERVICE_GRACE`). A corrald run by a
//!   service manager is restarted by it (systemd: `RestartSec=2`) in its
//!   unit and environment; a bridge that started one at once could win the
//!   socket's lock, make the unit's start fail, and leave a corrald with
//!   the MCP client's environment (often no PATH to find servers). At most
//!   one corrald of ours is starting at a time; it is started again after
//!   1 s, then less and less often, up to every 30 s.
//! - On the new connection the bridge restores the client's session before
//!   anything else passes: the client's `initialize` (options included)
//!   under an id of the bridge's own, then `notifications/initialized` if
//!   the client had sent it, then its last `logging/setLevel` the daemon
//!   accepted, under an id of the bridge's own (the client never sees these
//!   answers; a refused level is only said on stderr); then it tells the
//!   client `notifications/tools/list_changed`,
//!   `notifications/resources/list_changed` and
//!   `notifications/prompts/list_changed`. When the daemon went away before
//!   answering `initialize`, there is no session to restore: the client got
//!   its error and starts over.
//! - A line the client writes while no daemon is connected is held (one
//!   line: the client's further lines wait in its pipe) for up to 10 s, a
//!   daemon restart's usual time, and sent once the session is restored;
//!   after 10 s without a daemon, each request is answered at once with an
//!   error saying the daemon is not reachable, and notifications are dropped,
//!   until the bridge is connected again.
//! - Plain blocking I/O on two threads, no async runtime: an idle bridge is
//!   two threads blocked in `read` and a few hundred KiB of heap. A line
//!   longer than the daemon takes (`MAX_MESSAGE_BYTES`) is passed on in
//!   pieces without being looked at, so no line is held whole beyond that;
//!   its pieces all go on the connection its first piece went to, and once
//!   that is lost (or when none was connected) the rest of it is dropped,
//!   never sent into the middle of a new connection (said on stderr).
//! - When stdin closes, the write half of the socket is shut down, and the
//!   daemon's answers to what was asked are still passed on until the daemon
//!   closes the connection (it gives running requests a grace) or
//!   a grace of 5 s has passed; then the bridge exits 0.
//! - Nothing but JSON-RPC lines is written to stdout (the daemon's, and the
//!   bridge's own errors and notifications, each a whole line); every
//!   diagnostic goes to stderr.

pub(crate) mod lines;
pub(crate) mod options;

use std::path::Path;
use std::process::ExitCode;

/// Run `corral mcp` until the client goes away.
pub(crate) fn run(socket: Option<&Path>, no_start: bool, bridge: &options::BridgeArgs) -> anyhow::Result<ExitCode> {
    let meta = match bridge.meta() {
        Ok(meta) => meta,
        Err(problems) => {
            for problem in problems.lines() {
                eprintln!("corral mcp: {problem}");
            }
            eprintln!("corral mcp: the --config file cannot be used: fix it (nothing was started)");
            return Ok(ExitCode::from(crate::EXIT_USAGE));
        }
    };
    #[cfg(unix)]
    {
        unix::run(socket, no_start, meta)
    }
    #[cfg(not(unix))]
    {
        let _ = (socket, no_start, meta);
        anyhow::bail!("`corral mcp` needs a Unix socket; it does not run on this platform yet")
    }
}

#[cfg(unix)]
mod unix {
    use std::io::{BufRead, BufReader, Write};
    use std::net::Shutdown;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    use std::os::unix::net::UnixStream;
    use std::os::unix::process::CommandExt as _;
    use std::path::{Path, PathBuf};
    use std::process::{Command, ExitCode, Stdio};
    use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
    use std::time::{Duration, Instant};

    use anyhow::Context as _;
    use corral_client::protocol::paths::{self, UntrustedSocket};

    use super::lines::{self, ClientLine, DaemonLine, LIST_CHANGED, Outgoing, Replay, Tracker};

    /// How long a bridge that started corrald waits for it to serve.
    const START_WAIT: Duration = Duration::from_secs(5);
    /// How long answers are still passed on after the client closed stdin.
    const DRAIN_GRACE: Duration = Duration::from_secs(5);
    /// Bytes read at once from the daemon.
    const CHUNK: usize = 16 * 1024;
    /// The longest line looked at; a longer one is passed on in pieces. The
    /// daemon takes no longer message, and sends none.
    const MAX_LINE: usize = corral_client::protocol::MAX_MESSAGE_BYTES + 1;
    /// A line buffer grown beyond this is let go after use, so that an idle
    /// bridge does not keep the memory of its largest message.
    const KEEP_BUFFER: usize = 64 * 1024;
    /// Stack of the stdin thread: enough for serde's nesting limit.
    const THREAD_STACK: usize = 256 * 1024;
    /// How long a client's line waits for a lost connection to come back.
    const HOLD: Duration = Duration::from_secs(10);
    /// Between reconnection attempts: from this, doubling…
    const RECONNECT_FIRST: Duration = Duration::from_millis(100);
    /// …up to this.
    const RECONNECT_MAX: Duration = Duration::from_secs(2);
    /// Before starting corrald again while reconnecting: from this, doubling…
    const START_AGAIN_FIRST: Duration = Duration::from_secs(1);
    /// …up to this.
    const START_AGAIN_MAX: Duration = Duration::from_secs(30);
    /// How long a bridge that did not start the corrald it lost leaves a
    /// service manager to start it again before starting one itself: well
    /// past systemd's `RestartSec=2` (`systemd/corral.service`).
    const SERVICE_GRACE: Duration = Duration::from_secs(5);
    /// How long a new corrald may take to answer the replayed `initialize`.
    const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);

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

    pub(super) fn run(
        socket: Option<&Path>,
        no_start: bool,
        meta: Option<serde_json::Value>,
    ) -> anyhow::Result<ExitCode> {
        let socket = paths::socket_path(socket);
        let (stream, ours) = match connect(&socket) {
            Ok(stream) => (stream, false),
            Err(NoConnection::Refused(error)) => return Err(error),
            Err(NoConnection::NotRunning) if no_start => {
                eprintln!(
                    "corral mcp: corrald is not running at {} and --no-start was given: start it with `corrald` \
                     or `systemctl --user start corral`, or leave out --no-start",
                    socket.display()
                );
                return Ok(ExitCode::from(crate::EXIT_DAEMON_NOT_RUNNING));
            }
            Err(NoConnection::NotRunning) => {
                let (stream, started) = start_and_connect(&socket)?;
                let ours = serves(&stream, Some(started));
                (stream, ours)
            }
        };
        pipe(socket, no_start, meta, stream, ours)
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
        match peer(&stream) {
            Ok(Peer { uid: peer_uid, .. }) if peer_uid == own_uid => Ok(stream),
            Ok(Peer { uid: peer_uid, .. }) => Err(untrusted(UntrustedSocket::PeerIsOtherUser { peer_uid, own_uid })),
            Err(error) => Err(untrusted(UntrustedSocket::PeerUnknown { error })),
        }
    }

    /// Who serves a connection.
    struct Peer {
        uid: u32,
        /// The process that listens on the socket, where the platform says
        /// (Linux); under socket activation, the service manager.
        pid: Option<u32>,
    }

    /// Whether the corrald serving `stream` is the process `started` (one
    /// this bridge started); `false` when the platform does not say.
    fn serves(stream: &UnixStream, started: Option<u32>) -> bool {
        started.is_some() && peer(stream).ok().and_then(|peer| peer.pid) == started
    }

    /// Who serves `stream`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn peer(stream: &UnixStream) -> std::io::Result<Peer> {
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
            Ok(Peer {
                uid: credentials.uid,
                pid: u32::try_from(credentials.pid).ok().filter(|pid| *pid != 0),
            })
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Who serves `stream`: its uid only.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn peer(stream: &UnixStream) -> std::io::Result<Peer> {
        use std::os::fd::AsRawFd as _;
        let mut uid: libc::uid_t = 0;
        let mut gid: libc::gid_t = 0;
        // SAFETY: the pointers are to two integers the call fills.
        if unsafe { libc::getpeereid(stream.as_raw_fd(), &raw mut uid, &raw mut gid) } == 0 {
            Ok(Peer { uid, pid: None })
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Start corrald in the background and connect to whichever corrald
    /// serves `socket` within [`START_WAIT`] (ours, or one started at the
    /// same moment by another bridge, which won the socket's lock); the
    /// connection and the pid of the corrald started.
    fn start_and_connect(socket: &Path) -> anyhow::Result<(UnixStream, u32)> {
        let log = daemon_log_path();
        let mut daemon = start_daemon(socket, &log)?;
        let started = daemon.id();
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
        reap_in_background(daemon);
        connected.map(|stream| (stream, started))
    }

    /// Reap `daemon` if it exits while this bridge runs (the loser of a start
    /// race exits at once); a corrald that serves outlives this process.
    fn reap_in_background(mut daemon: std::process::Child) {
        let reaper = std::thread::Builder::new()
            .name("corrald-reaper".to_owned())
            .stack_size(64 * 1024)
            .spawn(move || daemon.wait());
        if let Err(error) = reaper {
            eprintln!("corral mcp: cannot watch the corrald it started: {error}");
        }
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

    /// Both threads' view of the bridge.
    struct Shared {
        state: Mutex<State>,
        /// Signalled when the connection is replaced or the client is done.
        changed: Condvar,
        socket: PathBuf,
        no_start: bool,
    }

    struct State {
        tracker: Tracker,
        link: Link,
        /// The corrald connected (or lost last) is one this bridge started.
        daemon_is_ours: bool,
        /// The client closed stdin: no more reconnecting.
        client_done: bool,
    }

    /// Where the client's lines go now.
    enum Link {
        /// The write half of the daemon connection, session restored.
        Connected(Arc<UnixStream>),
        /// The connection ended at `since`; the reader is reconnecting.
        Disconnected { since: Instant },
    }

    impl Shared {
        fn lock(&self) -> MutexGuard<'_, State> {
            // Every update of the state is complete before the lock is released.
            self.state.lock().unwrap_or_else(PoisonError::into_inner)
        }

        fn client_done(&self) -> bool {
            self.lock().client_done
        }

        /// Sleep up to `duration`, waking early when the client is done.
        fn pause(&self, duration: Duration) {
            let state = self.lock();
            if !state.client_done {
                let _ = self.changed.wait_timeout(state, duration);
            }
        }
    }

    /// Pass lines both ways until the client is done, reconnecting whenever
    /// the daemon goes away while it is not.
    fn pipe(
        socket: PathBuf,
        no_start: bool,
        meta: Option<serde_json::Value>,
        stream: UnixStream,
        daemon_is_ours: bool,
    ) -> anyhow::Result<ExitCode> {
        let writer = stream.try_clone().context("cannot use the socket in two directions")?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                tracker: Tracker::new(meta),
                link: Link::Connected(Arc::new(writer)),
                daemon_is_ours,
                client_done: false,
            }),
            changed: Condvar::new(),
            socket,
            no_start,
        });
        let for_stdin = shared.clone();
        let forwarder = std::thread::Builder::new()
            .name("stdin-to-corrald".to_owned())
            .stack_size(THREAD_STACK)
            .spawn(move || {
                forward_client(&for_stdin);
                finish(&for_stdin);
            })
            .context("cannot start the stdin thread")?;
        drop(forwarder);
        let mut reader = BufReader::with_capacity(CHUNK, stream);
        loop {
            let ended = forward_daemon(&shared, &mut reader);
            let lost = {
                let mut state = shared.lock();
                if state.client_done {
                    return Ok(ExitCode::SUCCESS);
                }
                match &ended {
                    AnswersEnd::ClientGone => return Ok(ExitCode::SUCCESS),
                    AnswersEnd::DaemonClosed => {
                        eprintln!("corral mcp: corrald closed the connection (it stopped or restarted); reconnecting");
                    }
                    AnswersEnd::ReadFailed(error) => {
                        eprintln!("corral mcp: reading from corrald failed: {error}; reconnecting");
                    }
                }
                state.link = Link::Disconnected { since: Instant::now() };
                state.tracker.connection_lost()
            };
            if write_to_client(&lost).is_err() {
                return Ok(ExitCode::SUCCESS);
            }
            match reconnect(&shared) {
                Some(next) => reader = next,
                None => return Ok(ExitCode::SUCCESS),
            }
        }
    }

    /// Read the client's lines and send each to the daemon (or hold, or refuse it).
    fn forward_client(shared: &Shared) {
        forward_lines(shared, &mut std::io::stdin().lock());
    }

    /// [`forward_client`] from `input`, until it ends.
    fn forward_lines(shared: &Shared, input: &mut impl BufRead) {
        let mut line = Vec::new();
        // Inside a line longer than MAX_LINE: where its pieces go.
        let mut long_line: Option<LongLine> = None;
        loop {
            let piece = match read_piece(input, &mut line, MAX_LINE) {
                Ok(Piece::End) | Err(_) => return,
                Ok(piece) => piece,
            };
            if long_line.is_some() || piece == Piece::Part {
                let to = long_line.get_or_insert_with(|| LongLine::starting(shared));
                to.deliver(shared, &line);
                if piece == Piece::Line {
                    long_line = None;
                }
                continue;
            }
            let line = shared.lock().tracker.client_line(std::mem::take(&mut line));
            deliver(shared, &line);
        }
    }

    /// Send `line` on the current connection; while there is none, wait for
    /// one up to [`HOLD`] after it was lost, then answer its requests with
    /// an error instead.
    fn deliver(shared: &Shared, line: &ClientLine) {
        let mut state = shared.lock();
        loop {
            let since = match &state.link {
                Link::Connected(stream) => {
                    let stream = stream.clone();
                    let rewritten = match state.tracker.sending(line) {
                        Outgoing::Nothing => return,
                        Outgoing::AsWritten => None,
                        Outgoing::Rewritten(bytes) => Some(bytes),
                    };
                    drop(state);
                    // A failed write means the daemon is gone: the reader finds out and
                    // answers what was in flight, this line's requests included.
                    let _ = (&*stream).write_all(rewritten.as_deref().unwrap_or(&line.bytes));
                    return;
                }
                Link::Disconnected { since } => *since,
            };
            let waited = since.elapsed();
            if waited >= HOLD || state.client_done {
                drop(state);
                let _ = write_to_client(&Tracker::refuse(line));
                return;
            }
            state = shared
                .changed
                .wait_timeout(state, HOLD - waited)
                .map_or_else(|poisoned| poisoned.into_inner().0, |(state, _)| state);
        }
    }

    /// Where the pieces of a line longer than [`MAX_LINE`] go: untracked, all
    /// on the connection its first piece went to. When that connection is
    /// lost (or there was none), the rest of the line is dropped: on a new
    /// connection it would land in the middle of nothing, and the daemon
    /// would close that one too (it takes no line this long anyway).
    enum LongLine {
        To(Arc<UnixStream>),
        Dropped,
    }

    impl LongLine {
        /// The current connection, for a line whose first piece is read now.
        fn starting(shared: &Shared) -> Self {
            match &shared.lock().link {
                Link::Connected(stream) => Self::To(stream.clone()),
                Link::Disconnected { .. } => {
                    eprintln!(
                        "corral mcp: dropped a line longer than {MAX_LINE} bytes from the client: corrald is not \
                         connected (and takes no line this long)"
                    );
                    Self::Dropped
                }
            }
        }

        /// Send `piece` on, if the line's connection is still the current one.
        fn deliver(&mut self, shared: &Shared, piece: &[u8]) {
            let Self::To(stream) = self else { return };
            let current = matches!(&shared.lock().link, Link::Connected(now) if Arc::ptr_eq(now, stream));
            if !current {
                eprintln!(
                    "corral mcp: the connection to corrald was lost in the middle of a line longer than \
                     {MAX_LINE} bytes from the client: dropped the rest of it"
                );
                *self = Self::Dropped;
                return;
            }
            let _ = (&**stream).write_all(piece);
        }
    }

    /// The client closed stdin: stop reconnecting, and give the daemon
    /// [`DRAIN_GRACE`] to answer what was asked.
    fn finish(shared: &Shared) {
        let stream = {
            let mut state = shared.lock();
            state.client_done = true;
            shared.changed.notify_all();
            match &state.link {
                Link::Connected(stream) => Some(stream.clone()),
                Link::Disconnected { .. } => None,
            }
        };
        if let Some(stream) = stream {
            let _ = stream.shutdown(Shutdown::Write);
            std::thread::sleep(DRAIN_GRACE);
            let _ = stream.shutdown(Shutdown::Both);
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

    /// Pass the daemon's lines to stdout as they come, settling the requests they answer.
    fn forward_daemon(shared: &Shared, reader: &mut BufReader<UnixStream>) -> AnswersEnd {
        let mut line = Vec::new();
        let mut in_long_line = false;
        loop {
            let piece = match read_piece(reader, &mut line, MAX_LINE) {
                Ok(Piece::End) => return AnswersEnd::DaemonClosed,
                Ok(piece) => piece,
                Err(error) => return AnswersEnd::ReadFailed(error),
            };
            let forward = if in_long_line || piece == Piece::Part {
                in_long_line = piece == Piece::Part;
                true
            } else {
                // The replay's answer is read by `send_replay`; were one to come
                // here, it is still not the client's.
                shared.lock().tracker.daemon_line(&mut line) == DaemonLine::Forward
            };
            if forward && write_to_client(std::slice::from_ref(&line)).is_err() {
                return AnswersEnd::ClientGone;
            }
            if line.capacity() > KEEP_BUFFER {
                line = Vec::new();
            }
        }
    }

    /// Write whole lines to stdout, together, and flush.
    fn write_to_client(lines: &[Vec<u8>]) -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        for line in lines {
            stdout.write_all(line)?;
        }
        stdout.flush()
    }

    /// What [`read_piece`] read.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Piece {
        /// A line, newline included (none at the end of the stream), or the end of a long one.
        Line,
        /// `max` bytes of a longer line; more follows.
        Part,
        /// The end of the stream, nothing read.
        End,
    }

    /// Read one line into `line` (cleared first), at most `max` bytes of it.
    fn read_piece(reader: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> std::io::Result<Piece> {
        line.clear();
        loop {
            let available = match reader.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if available.is_empty() {
                return Ok(if line.is_empty() { Piece::End } else { Piece::Line });
            }
            let room = available.len().min(max - line.len());
            if let Some(end) = available[..room].iter().position(|byte| *byte == b'\n') {
                line.extend_from_slice(&available[..=end]);
                reader.consume(end + 1);
                return Ok(Piece::Line);
            }
            line.extend_from_slice(&available[..room]);
            reader.consume(room);
            if line.len() >= max {
                return Ok(Piece::Part);
            }
        }
    }

    /// Connect again (starting corrald unless `--no-start`) and restore the
    /// client's session, for as long as the client is there; `None` once it
    /// is done.
    fn reconnect(shared: &Shared) -> Option<BufReader<UnixStream>> {
        let lost_at = Instant::now();
        let lost_was_ours = shared.lock().daemon_is_ours;
        let mut delay = RECONNECT_FIRST;
        let mut starter = Starter::new();
        let mut last_problem = String::new();
        let mut report = |problem: String| {
            if problem != last_problem {
                eprintln!("corral mcp: {problem}; still trying");
                last_problem = problem;
            }
        };
        loop {
            if shared.client_done() {
                return None;
            }
            match connect(&shared.socket) {
                Ok(stream) => match restore(shared, stream, &starter) {
                    Ok(reader) => {
                        starter.hand_off();
                        if reader.is_some() {
                            eprintln!("corral mcp: reconnected to corrald at {}", shared.socket.display());
                        }
                        return reader;
                    }
                    Err(problem) => report(problem),
                },
                Err(NoConnection::Refused(error)) => report(format!("{error:#}")),
                Err(NoConnection::NotRunning) if !shared.no_start => {
                    if may_start(lost_was_ours, lost_at.elapsed()) {
                        if let Err(error) = starter.start_if_due(&shared.socket) {
                            report(format!("{error:#}"));
                        }
                    } else {
                        report(format!(
                            "corrald is not running at {}: waiting for its service manager to start it again \
                             (corral mcp starts it itself after {} s)",
                            shared.socket.display(),
                            SERVICE_GRACE.as_secs()
                        ));
                    }
                }
                Err(NoConnection::NotRunning) => report(format!(
                    "corrald is not running at {} and --no-start was given: waiting for it to be started",
                    shared.socket.display()
                )),
            }
            shared.pause(delay);
            delay = (delay * 2).min(RECONNECT_MAX);
        }
    }

    /// On a new connection: the client's session restored (see the module
    /// docs), then the connection is where the client's lines go; `None`
    /// when the client was done by then (the connection is dropped).
    fn restore(
        shared: &Shared,
        stream: UnixStream,
        starter: &Starter,
    ) -> Result<Option<BufReader<UnixStream>>, String> {
        let ours = serves(&stream, starter.started);
        let writer = stream
            .try_clone()
            .map_err(|error| format!("cannot use the socket in two directions: {error}"))?;
        let mut reader = BufReader::with_capacity(CHUNK, stream);
        let replay = shared.lock().tracker.replay();
        if let Some(replay) = &replay
            && let Err(problem) = send_replay(shared, &writer, &mut reader, replay)
        {
            // Nothing of the client's was sent on it: forget what the replay set up,
            // and withdraw what the daemon asked meanwhile.
            let lost = shared.lock().tracker.connection_lost();
            let _ = write_to_client(&lost);
            return Err(problem);
        }
        if replay.is_some() {
            let told: Vec<Vec<u8>> = LIST_CHANGED
                .iter()
                .map(|method| lines::notification_line(method))
                .collect();
            // A client that is gone is found out by the next write.
            let _ = write_to_client(&told);
        }
        // Published under the lock `finish` takes: either it sees this
        // connection (and shuts it down), or this sees that the client is done.
        let mut state = shared.lock();
        if state.client_done {
            return Ok(None);
        }
        state.link = Link::Connected(Arc::new(writer));
        state.daemon_is_ours = ours;
        shared.changed.notify_all();
        Ok(Some(reader))
    }

    /// Send the replay and wait (bounded) for its answer, which is not passed on.
    fn send_replay(
        shared: &Shared,
        mut writer: &UnixStream,
        reader: &mut BufReader<UnixStream>,
        replay: &Replay,
    ) -> Result<(), String> {
        let failed =
            |error: std::io::Error| format!("restoring the client's session on the new corrald failed: {error}");
        reader
            .get_ref()
            .set_read_timeout(Some(REPLAY_TIMEOUT))
            .map_err(failed)?;
        writer.write_all(&replay.initialize).map_err(failed)?;
        if let Err(message) = replay_answer(shared, reader)? {
            return Err(format!("the new corrald refused the client's session: {message}"));
        }
        if let Some(initialized) = &replay.initialized {
            writer.write_all(initialized).map_err(failed)?;
        }
        if let Some(set_level) = &replay.set_level {
            writer.write_all(set_level).map_err(failed)?;
            if let Err(message) = replay_answer(shared, reader)? {
                // The session stands; the client gets the daemon's default level.
                eprintln!("corral mcp: the new corrald refused the client's logging level: {message}");
            }
        }
        reader.get_ref().set_read_timeout(None).map_err(failed)?;
        Ok(())
    }

    /// Read the daemon's lines (passing on what is the client's) up to the
    /// answer to the next replayed request: `Ok(Err(message))` when the
    /// daemon refused it, `Err` when the connection failed.
    fn replay_answer(shared: &Shared, reader: &mut BufReader<UnixStream>) -> Result<Result<(), String>, String> {
        let mut line = Vec::new();
        loop {
            match read_piece(reader, &mut line, MAX_LINE) {
                Err(error) => {
                    return Err(format!(
                        "restoring the client's session on the new corrald failed: {error}"
                    ));
                }
                Ok(Piece::End) => {
                    return Err(
                        "the new corrald closed the connection while the client's session was restored".to_owned(),
                    );
                }
                Ok(Piece::Part) => {
                    return Err("the new corrald answered the restored session with an overlong line".to_owned());
                }
                Ok(Piece::Line) => {}
            }
            match shared.lock().tracker.daemon_line(&mut line) {
                DaemonLine::ReplayAnswered(answer) => return Ok(answer),
                DaemonLine::Forward => {
                    let _ = write_to_client(std::slice::from_ref(&line));
                }
            }
        }
    }

    /// Whether a reconnecting bridge may start corrald, `unreachable_for`
    /// after it lost one: at once when that one was its own; else only after
    /// [`SERVICE_GRACE`], so that a service manager that restarts its corrald
    /// after a pause (systemd's `RestartSec=2`) does it, in its unit and
    /// environment, rather than a bridge, with the MCP client's.
    fn may_start(lost_was_ours: bool, unreachable_for: Duration) -> bool {
        lost_was_ours || unreachable_for >= SERVICE_GRACE
    }

    /// The corralds one reconnection starts: one at a time, again only
    /// after a pause that grows.
    struct Starter {
        child: Option<std::process::Child>,
        /// The pid of the last one started.
        started: Option<u32>,
        next: Instant,
        delay: Duration,
    }

    impl Starter {
        fn new() -> Self {
            Self {
                child: None,
                started: None,
                next: Instant::now(),
                delay: START_AGAIN_FIRST,
            }
        }

        /// Start corrald unless one of ours is still starting, or it is too soon.
        fn start_if_due(&mut self, socket: &Path) -> anyhow::Result<()> {
            if let Some(child) = &mut self.child {
                match child.try_wait() {
                    Ok(None) => return Ok(()),
                    // Exited (another corrald holds the socket, or it failed) and reaped.
                    _ => self.child = None,
                }
            }
            if Instant::now() < self.next {
                return Ok(());
            }
            self.next = Instant::now() + self.delay;
            self.delay = (self.delay * 2).min(START_AGAIN_MAX);
            let child = start_daemon(socket, &daemon_log_path())?;
            self.started = Some(child.id());
            self.child = Some(child);
            Ok(())
        }

        /// Connected: a corrald still running of ours is reaped when it exits.
        fn hand_off(self) {
            if let Some(child) = self.child {
                reap_in_background(child);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use std::collections::VecDeque;
        use std::io::Read;

        use super::*;

        /// What the client's stdin gives in [`the_tail_of_a_long_line_never_reaches_a_new_connection`].
        enum Input {
            Bytes(Vec<u8>),
            /// The bridge reconnects: the link is a new connection from now.
            Reconnect(UnixStream),
        }

        struct Scripted {
            shared: Arc<Shared>,
            script: VecDeque<Input>,
        }

        impl Read for Scripted {
            fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
                loop {
                    match self.script.pop_front() {
                        None => return Ok(0),
                        Some(Input::Reconnect(stream)) => {
                            self.shared.lock().link = Link::Connected(Arc::new(stream));
                        }
                        Some(Input::Bytes(mut bytes)) => {
                            let count = bytes.len().min(buffer.len());
                            buffer[..count].copy_from_slice(&bytes[..count]);
                            if count < bytes.len() {
                                self.script.push_front(Input::Bytes(bytes.split_off(count)));
                            }
                            return Ok(count);
                        }
                    }
                }
            }
        }

        /// Everything read from `stream` until the other end is closed, on a thread.
        fn drain(mut stream: UnixStream) -> std::thread::JoinHandle<Vec<u8>> {
            std::thread::spawn(move || {
                let mut read = Vec::new();
                stream.read_to_end(&mut read).expect("read the socket");
                read
            })
        }

        #[test]
        fn the_tail_of_a_long_line_never_reaches_a_new_connection() {
            let (first, first_daemon) = UnixStream::pair().expect("a socket pair");
            let (second, second_daemon) = UnixStream::pair().expect("a socket pair");
            let (first_read, second_read) = (drain(first_daemon), drain(second_daemon));
            let shared = Arc::new(Shared {
                state: Mutex::new(State {
                    tracker: Tracker::new(None),
                    link: Link::Connected(Arc::new(first)),
                    daemon_is_ours: false,
                    client_done: false,
                }),
                changed: Condvar::new(),
                socket: PathBuf::from("/nonexistent/corral.sock"),
                no_start: true,
            });
            let next = b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/next\"}\n".to_vec();
            let mut input = BufReader::with_capacity(
                64 * 1024,
                Scripted {
                    shared: shared.clone(),
                    script: VecDeque::from([
                        Input::Bytes(vec![b'x'; MAX_LINE]),
                        Input::Reconnect(second),
                        Input::Bytes(b"the tail\n".to_vec()),
                        Input::Bytes(next.clone()),
                    ]),
                },
            );
            forward_lines(&shared, &mut input);
            drop(input);
            drop(shared);
            let first_got = first_read.join().expect("the first connection's reader");
            let second_got = second_read.join().expect("the second connection's reader");
            assert_eq!(
                first_got.len(),
                MAX_LINE,
                "the first piece went to the first connection"
            );
            assert!(first_got.iter().all(|byte| *byte == b'x'));
            assert_eq!(
                String::from_utf8_lossy(&second_got),
                String::from_utf8_lossy(&next),
                "the new connection gets the next line, none of the long one"
            );
        }

        #[test]
        fn only_a_bridge_that_started_the_lost_corrald_starts_one_at_once() {
            assert!(may_start(true, Duration::ZERO), "its own: at once");
            assert!(!may_start(false, Duration::ZERO), "a service's: not at once");
            assert!(
                !may_start(false, Duration::from_secs(2)),
                "nor at systemd's RestartSec=2"
            );
            assert!(may_start(false, SERVICE_GRACE), "after the grace");
            assert!(SERVICE_GRACE > Duration::from_secs(2) + RECONNECT_MAX);
        }

        #[test]
        fn lines_are_read_whole_up_to_the_limit_and_in_pieces_beyond() {
            let mut input: &[u8] = b"ab\ncdefgh\nij\r\nend";
            let mut line = Vec::new();
            let mut read = Vec::new();
            loop {
                let piece = read_piece(&mut input, &mut line, 4).expect("read");
                if piece == Piece::End {
                    break;
                }
                read.push((piece, String::from_utf8(line.clone()).expect("text")));
            }
            assert_eq!(
                read,
                [
                    (Piece::Line, "ab\n".to_owned()),
                    (Piece::Part, "cdef".to_owned()),
                    (Piece::Line, "gh\n".to_owned()),
                    (Piece::Line, "ij\r\n".to_owned()),
                    (Piece::Line, "end".to_owned()),
                ]
            );
        }
    }
}
