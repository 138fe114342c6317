//! The front-end API: accepts connections on the daemon's socket, checks who
//! is connecting, and runs one `connection` task per front-end.
//!
//! Architecture invariant: this room never uses rmcp and never names
//! `server`, `transport` or `process` (one edge left, listed in
//! `tests/tests/architecture.rs`). It talks to the rest of the daemon only
//! through the [`DaemonContext`] (supervisor handle, event hub, daemon
//! facts); a request for a server goes through `mcp::forward`, and its
//! failure comes back as plain data, worded in `rpc`.

mod connection;
mod dispatch;
mod handlers;
pub mod listen;
pub(crate) mod router;
mod rpc;
mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use corral_protocol::DaemonInfo;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::reload::ReloadHandle;
use crate::hub::Hub;
use crate::supervisor::SupervisorHandle;

/// How long a connection may wait for a slot at the cap while slots are still
/// being given back by connections closed for an unfinished handshake.
const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// Most front-end connections served at once; more are refused (and logged).
/// Lower when the open-file limit does not leave room for this many next to
/// [`FD_RESERVE`] (see [`connection_cap`]).
pub const MAX_CONNECTIONS: usize = 1024;

/// Open files kept free of connections: for spawning servers (three pipes
/// each, and what rmcp and the OS open with them), HTTP servers' sockets,
/// the credential store, the config file and the service manager's socket.
pub const FD_RESERVE: u64 = 128;

/// At most one log line per this interval about refused connections (and
/// failed accepts), with the count since the last one.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Per-connection deadlines, and what all connections share.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A connection that has not completed `initialize` this long after it
    /// was accepted is closed, so idle connections cannot hold every slot.
    pub handshake: Duration,
    /// A message whose first bytes arrived must be complete within this.
    pub frame: Duration,
    /// Bytes of unfinished messages all connections together may hold; a
    /// connection that would pass it is not read until others finish theirs
    /// (or their frame deadline closes them).
    pub partial_frame_bytes: usize,
    /// Requests of one connection running at once; more wait for a slot.
    pub in_flight: usize,
    /// Requests of one connection waiting for a slot (and at most
    /// `connection::WAITING_BYTES` of them); more are answered `tooManyRequests`.
    pub waiting_requests: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            frame: Duration::from_secs(30),
            partial_frame_bytes: 256 * 1024 * 1024,
            in_flight: connection::MAX_IN_FLIGHT,
            waiting_requests: connection::MAX_WAITING_REQUESTS,
        }
    }
}

/// What a connection gets from the accept loop besides its socket.
pub(crate) struct Admission {
    pub(crate) limits: ConnectionLimits,
    /// Cancelled to close the connection if it has not initialized yet.
    pub(crate) evicted: CancellationToken,
    /// The daemon-wide budget of `limits.partial_frame_bytes`.
    pub(crate) partial_frames: Arc<Semaphore>,
}

/// Raise the soft open-file limit to the hard limit (the common default soft
/// limit of 1024 is too low for a daemon serving many front-ends and
/// servers); returns the soft limit in force, `None` where there is none.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read or write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let mut raised = limit;
                raised.rlim_cur = limit.rlim_max;
                // macOS refuses more than OPEN_MAX with RLIM_INFINITY; keep the old limit then.
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const raised) == 0 {
                    limit = raised;
                }
            }
        }
        Some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Connections served at once with a soft open-file limit of `open_files`:
/// [`MAX_CONNECTIONS`], but never more than leaves [`FD_RESERVE`] files free
/// (half of them on a very low limit).
pub fn connection_cap(open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else {
        return MAX_CONNECTIONS;
    };
    let room = if open_files > 2 * FD_RESERVE {
        open_files - FD_RESERVE
    } else {
        open_files / 2
    };
    usize::try_from(room).unwrap_or(usize::MAX).clamp(1, MAX_CONNECTIONS)
}

/// The soft open-file limit now, if there is one.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed.
        (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } == 0).then_some(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// What a [`DaemonContext`] is made of: the daemon's facts and the handles
/// boot created.
#[derive(Debug)]
pub struct ContextSpec {
    /// When the daemon started.
    pub started: Instant,
    /// The socket it serves.
    pub socket_path: PathBuf,
    /// The config file it reads.
    pub config_path: PathBuf,
    /// Why the config file could not be used the last time it was read, if so.
    pub config_error: tokio::sync::watch::Receiver<Option<String>>,
    /// The supervisor of every server.
    pub supervisor: SupervisorHandle,
    /// The way out to front-ends.
    pub hub: Arc<Hub>,
    /// Asks the reloader to read the config file again.
    pub reload: ReloadHandle,
    /// Register `debug/*` methods for tests and benchmarks.
    pub test_hooks: bool,
}

/// Daemon-wide facts and handles the method handlers need.
#[derive(Debug)]
pub struct DaemonContext {
    pub(crate) daemon_info: DaemonInfo,
    pub(crate) started: Instant,
    pub(crate) socket_path: PathBuf,
    pub(crate) config_path: PathBuf,
    /// Why the config file could not be used the last time it was read, if so.
    pub(crate) config_error: tokio::sync::watch::Receiver<Option<String>>,
    pub(crate) supervisor: SupervisorHandle,
    pub(crate) hub: Arc<Hub>,
    pub(crate) reload: ReloadHandle,
    /// Test hook: releases a supervisor wedged by `debug/wedgeSupervisor`.
    pub(crate) wedge_release: std::sync::Mutex<Option<CancellationToken>>,
    /// Whether `debug/*` methods for tests and benchmarks are registered.
    pub(crate) test_hooks: bool,
    /// Stored OAuth credentials; `None` only in contexts built without a store.
    pub(crate) credentials: Option<crate::auth::credentials::Credentials>,
    /// The process registry, for `daemon/status.childrenRecordError`
    /// (`None`: a context without one, which has no record either).
    pub(crate) processes: Option<Arc<crate::process::reaper::Registry>>,
    /// The service manager's notifier, for `daemon/status.serviceNoticesDropped`.
    pub(crate) notifier: crate::service::Notifier,
    /// The config's daemon-wide OAuth settings (callback listener, opener).
    pub(crate) oauth_settings: crate::auth::oauth::OAuthSettings,
    /// OAuth logins waiting for the browser.
    pub(crate) logins: handlers::auth::Logins,
    /// When each server last had a step-up authorization (insufficient scope), to bound them.
    /// OAuth discovery answers reused by `authStatus`.
    pub(crate) discovered: Arc<crate::auth::oauth::DiscoveryCache>,
    pub(crate) step_ups: std::sync::Mutex<std::collections::HashMap<String, Vec<std::time::Instant>>>,
    /// The daemon's shutdown: ends logins still waiting.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    connections: AtomicU32,
    /// One permit per open connection, at most [`DaemonContext::max_connections`].
    connection_slots: Arc<Semaphore>,
    /// The connection cap (from [`connection_cap`]).
    max_connections: usize,
    /// Connections refused because the cap was reached, since start.
    refused_connections: AtomicU64,
    /// Connections admitted whose task has not yet registered its handshake
    /// (see [`DaemonContext::admit_or_wait`]).
    unregistered: AtomicU32,
    /// Deadlines of every connection.
    pub(crate) connection_limits: ConnectionLimits,
    /// Permits for the bytes of unfinished messages, shared by all connections.
    partial_frames: Arc<Semaphore>,
    /// Connections that have not completed `initialize` yet, oldest first,
    /// with the token that closes each (see [`DaemonContext::awaiting_handshake`]).
    handshakes:
        std::sync::Mutex<std::collections::VecDeque<(std::sync::Weak<session::Session>, CancellationToken, Slot)>>,
}

impl DaemonContext {
    /// The same context with a credential store, OAuth settings and the daemon's shutdown token.
    pub fn with_oauth(
        mut self,
        credentials: crate::auth::credentials::Credentials,
        settings: crate::auth::oauth::OAuthSettings,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        self.credentials = Some(credentials);
        self.oauth_settings = settings;
        self.shutdown = shutdown;
        self
    }

    /// Context for a daemon described by `spec`.
    pub fn new(spec: ContextSpec) -> Self {
        let ContextSpec {
            started,
            socket_path,
            config_path,
            config_error,
            supervisor,
            hub,
            reload,
            test_hooks,
        } = spec;
        let max_connections = connection_cap(open_file_limit());
        Self {
            daemon_info: DaemonInfo::new(env!("CARGO_PKG_VERSION"), std::process::id()),
            started,
            socket_path,
            config_path,
            config_error,
            supervisor,
            hub,
            reload,
            wedge_release: std::sync::Mutex::new(None),
            test_hooks,
            credentials: None,
            processes: None,
            notifier: crate::service::Notifier::default(),
            oauth_settings: crate::auth::oauth::OAuthSettings::default(),
            logins: handlers::auth::Logins::default(),
            discovered: Arc::default(),
            step_ups: std::sync::Mutex::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            connections: AtomicU32::new(0),
            connection_slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            refused_connections: AtomicU64::new(0),
            unregistered: AtomicU32::new(0),
            connection_limits: ConnectionLimits::default(),
            partial_frames: Arc::new(Semaphore::new(ConnectionLimits::default().partial_frame_bytes)),
            handshakes: std::sync::Mutex::default(),
        }
    }

    /// Most connections that may wait for their `initialize` at once: a
    /// quarter of the slots, so that idle connections never hold them all.
    fn max_handshakes(&self) -> usize {
        (self.max_connections / 4).max(1)
    }

    /// `session` was just accepted and has not said `initialize`: count it
    /// among the waiting handshakes. When they are at [`Self::max_handshakes`],
    /// the oldest one still waiting is closed to make room, so a front-end that
    /// initializes at once (like `corral status`) always gets in, however many
    /// idle connections are open. The returned token is cancelled to close
    /// this connection the same way.
    ///
    /// A closed one gives its connection slot back at once, not when its task
    /// has wound down: under a flood of idle connects the slots would otherwise
    /// fill with connections already being closed, and the front-end that
    /// initializes at once was refused at the cap (seen under load). Its file
    /// descriptor is covered by the reserve until the task ends.
    fn awaiting_handshake(&self, session: &Arc<session::Session>, slot: &Slot) -> CancellationToken {
        let token = CancellationToken::new();
        let mut handshakes = self
            .handshakes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.unregistered.fetch_sub(1, Ordering::Relaxed);
        handshakes.retain(|(waiting, _, _)| waiting.upgrade().is_some_and(|waiting| !waiting.is_initialized()));
        while handshakes.len() >= self.max_handshakes() {
            let Some((_, oldest, oldest_slot)) = handshakes.pop_front() else {
                break;
            };
            oldest.cancel();
            drop(
                oldest_slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take(),
            );
        }
        handshakes.push_back((Arc::downgrade(session), token.clone(), slot.clone()));
        token
    }

    /// The process registry whose record errors `daemon/status` reports.
    pub fn with_processes(mut self, processes: Arc<crate::process::reaper::Registry>) -> Self {
        self.processes = Some(processes);
        self
    }

    /// The service manager's notifier whose drops `daemon/status` reports.
    pub fn with_notifier(mut self, notifier: crate::service::Notifier) -> Self {
        self.notifier = notifier;
        self
    }

    /// The same context with these per-connection deadlines.
    pub fn with_connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.connection_limits = limits;
        self.partial_frames = Arc::new(Semaphore::new(limits.partial_frame_bytes.min(Semaphore::MAX_PERMITS)));
        self
    }

    /// Most connections served at once.
    pub(crate) fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Connections refused at the cap since start.
    pub(crate) fn refused_connections(&self) -> u64 {
        self.refused_connections.load(Ordering::Relaxed)
    }

    pub(crate) fn open_connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Count a new connection if there is room for it; the guard uncounts it.
    fn admit(self: &Arc<Self>) -> Option<ConnectionGuard> {
        let permit = self.connection_slots.clone().try_acquire_owned().ok()?;
        Some(self.admitted(permit))
    }

    fn admitted(self: &Arc<Self>, permit: tokio::sync::OwnedSemaphorePermit) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.unregistered.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            context: self.clone(),
            slot: Arc::new(std::sync::Mutex::new(Some(permit))),
        }
    }

    /// A slot for a new connection, or `None` at the cap. When connections
    /// admitted just before have not yet registered their handshakes (their
    /// tasks have not run: the accept loop outpaces them in a burst of
    /// connects), the cap is not final yet: registering closes the oldest idle
    /// ones and gives their slots back, so this waits for that (at most
    /// [`ADMISSION_WAIT`]) rather than refusing a front-end that would have
    /// fitted (seen under load: `corral status` refused amid idle connects).
    async fn admit_or_wait(self: &Arc<Self>) -> Option<ConnectionGuard> {
        if let Some(guard) = self.admit() {
            return Some(guard);
        }
        if self.unregistered.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let permit = tokio::time::timeout(ADMISSION_WAIT, self.connection_slots.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(self.admitted(permit))
    }
}

/// A connection's slot under the cap: given back when the connection ends, or
/// earlier when it is closed for not completing its handshake in time.
type Slot = Arc<std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>;

/// Decrements the open-connection count when a connection task ends (and
/// gives its slot back, if eviction did not already).
struct ConnectionGuard {
    context: Arc<DaemonContext>,
    slot: Slot,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        // Taken, not just dropped with this handle: the handshake list may hold another.
        drop(
            self.slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        self.context.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serve one connection as session `id`; when it ends, so do the servers it added.
///
/// `hung_up` tells, once the front-end's side reached end of stream, whether
/// it closed the connection entirely (so nothing it asked can be answered)
/// rather than only its sending half.
async fn run_connection<S>(
    stream: S,
    hung_up: connection::HungUp,
    id: u64,
    methods: router::MethodTables,
    context: Arc<DaemonContext>,
    shutdown: CancellationToken,
    guard: ConnectionGuard,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (link, link_messages) = context.hub.routes.new_link(id);
    let session = Arc::new(session::Session::new(id, link.clone()));
    let admission = Admission {
        limits: context.connection_limits,
        evicted: context.awaiting_handshake(&session, &guard.slot),
        partial_frames: context.partial_frames.clone(),
    };
    connection::serve(stream, hung_up, session, link_messages, methods, admission, shutdown).await;
    link.close();
    for (server, uri) in context.hub.routes.disconnected(id) {
        handlers::catalog::release_subscription(&context, server, uri).await;
    }
    context.supervisor.session_closed(id).await;
    drop(guard);
}

/// Serve one connection over any byte stream, admitted like an accepted one
/// (the connection cap, the handshake deadline): the in-process test tier's
/// way in (`crate::tests`), which serves one half of a `tokio::io::duplex`.
/// `false`: refused at the cap. A duplex has no "hung up entirely" apart
/// from its end of stream, so end of stream is treated as a half-close.
#[cfg(test)]
pub(crate) async fn serve_stream<S>(
    stream: S,
    id: u64,
    methods: router::MethodTables,
    context: Arc<DaemonContext>,
    shutdown: CancellationToken,
) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let Some(guard) = context.admit_or_wait().await else {
        return false;
    };
    run_connection(stream, Box::new(|| false), id, methods, context, shutdown, guard).await;
    true
}

/// Accept and serve connections until `shutdown` is cancelled: the one
/// accept loop of every platform ([`listen::Accept`] binds and accepts).
pub(crate) async fn serve(
    mut acceptor: impl listen::Accept,
    context: Arc<DaemonContext>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> anyhow::Result<()> {
    let methods = router::tables(context.clone()).context("registering the front-end methods")?;
    let mut next_id: u64 = 1;
    tracing::info!(
        max_connections = context.max_connections,
        open_files = ?open_file_limit(),
        "serving at most {} connections at once",
        context.max_connections
    );
    let mut refusals = RefusalLog::default();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = acceptor.accept() => accepted,
        };
        let accepted = match accepted {
            Ok(Some(accepted)) => accepted,
            Ok(None) => continue,
            Err(error) => {
                // Typically EMFILE: back off briefly instead of spinning.
                refusals.accept_failed(&error);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(guard) = context.admit_or_wait().await else {
            context.refused_connections.fetch_add(1, Ordering::Relaxed);
            refusals.refused(context.max_connections);
            continue;
        };
        tracker.spawn(run_connection(
            accepted.stream,
            accepted.hung_up,
            next_id,
            methods.clone(),
            context.clone(),
            shutdown.clone(),
            guard,
        ));
        next_id += 1;
    }
    Ok(())
}

/// Rate-limited warnings about refused connections and failed accepts: a
/// flood of connects must not become a flood of log lines.
#[derive(Debug, Default)]
struct RefusalLog {
    last_logged: Option<Instant>,
    refused_since: u64,
    failed_since: u64,
}

impl RefusalLog {
    fn due(&mut self) -> bool {
        let due = self
            .last_logged
            .is_none_or(|last| last.elapsed() >= REFUSAL_LOG_INTERVAL);
        if due {
            self.last_logged = Some(Instant::now());
        }
        due
    }

    /// A connection was closed at once: `limit` connections are open.
    #[cfg_attr(windows, allow(dead_code))]
    fn refused(&mut self, limit: usize) {
        self.refused_since += 1;
        if self.due() {
            tracing::warn!(
                limit,
                refused = self.refused_since,
                "refused connections: too many open connections (count since the last such line; see daemon/status)"
            );
            self.refused_since = 0;
        }
    }

    #[cfg_attr(windows, allow(dead_code))]
    fn accept_failed(&mut self, error: &std::io::Error) {
        self.failed_since += 1;
        if self.due() {
            tracing::warn!(%error, failed = self.failed_since, "accepting connections failed (count since the last such line)");
            self.failed_since = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_the_fd_reserve_free() {
        assert_eq!(connection_cap(None), MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(1_048_576)), MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(1024)), 1024 - 128);
        assert_eq!(connection_cap(Some(257)), 129);
        assert_eq!(connection_cap(Some(256)), 128, "half of a low limit");
        assert_eq!(connection_cap(Some(10)), 5);
        assert_eq!(connection_cap(Some(0)), 1, "never zero: corral status must get in");
    }
}
