//! The front-end API: accepts connections on the daemon's socket, checks who
//! is connecting, and runs one `connection` task per front-end.
//!
//! Architecture invariant: this room never uses rmcp and never names
//! `server`, `transport` or `process` (`tests/tests/architecture.rs` holds
//! it). It talks to the rest of the daemon only through the [`DaemonContext`]
//! (supervisor handle, event hub, `Auth`, daemon facts, and plain receivers
//! such as the children record's error, handed over at boot); a request for
//! a server goes through `mcp::forward`, and its failure comes back as plain
//! data, worded in `rpc`.
//!
//! The accept loop (`serve` here, one body for every platform; `listen` only
//! binds and accepts) takes a connection of the daemon's own uid
//! (`SO_PEERCRED` on Unix; another uid's is closed at once), admits it
//! through the `Gate` (`admission`: the connection cap, the handshake queue,
//! the partial-frame budget), gives it a `Session` and the hub's `Link`, and
//! runs it as a task of the daemon's tracker. When it ends, its resource
//! subscriptions are released and the session servers it added are removed.
//! Every transport comes in through the `Engine`: the socket's accept loop,
//! and the loopback HTTP endpoint (`crate::endpoint`), whose MCP sessions are
//! connections over an in-memory duplex, admitted and served the same way.
//! A connection refused at the cap is counted (`daemon/status`) and logged at
//! most once per 10 s with the count since the last line, and so is a failed
//! accept (typically `EMFILE`, after which the loop backs off 50 ms): a flood
//! of connects is never a flood of log lines.

mod admission;
mod connection;
mod dispatch;
mod handlers;
mod in_flight;
pub mod listen;
pub(crate) mod router;
mod rpc;
mod session;
mod wake_gate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use corral_protocol::{DaemonInfo, McpEndpointStatus};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::reload::ReloadHandle;
use crate::hub::Hub;
pub(crate) use crate::hub::link::Door;
use crate::supervisor::SupervisorHandle;
pub use admission::ConnectionLimits;
pub(crate) use admission::open_file_limit;
use admission::{Admission, ConnectionGuard, Gate};
pub(crate) use connection::HungUp;

/// Step-ups at a server's start (403 `insufficient_scope` on its `tools/list`): the step-up of a
/// `tools/call`, driven by the status notifications; a task of the daemon until `shutdown`.
pub(crate) fn spawn_step_ups_at_start(context: &Arc<DaemonContext>, shutdown: CancellationToken) {
    context
        .tasks
        .spawn(handlers::auth::step_up_at_start(context.clone(), shutdown));
}

/// At most one log line per this interval about refused connections (and
/// failed accepts), with the count since the last one.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

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
    pub config_error: watch::Receiver<Option<String>>,
    /// Why the children record cannot be written, while it cannot (the
    /// process registry publishes it).
    pub children_record_error: watch::Receiver<Option<String>>,
    /// The service manager's notifier, whose drops `daemon/status` reports.
    pub notifier: crate::service::Notifier,
    /// The loopback MCP endpoint's state, once boot started it (`None`: off).
    pub mcp_endpoint: watch::Receiver<Option<McpEndpointStatus>>,
    /// The supervisor of every server.
    pub supervisor: SupervisorHandle,
    /// The way out to front-ends.
    pub hub: Arc<Hub>,
    /// Asks the reloader to read the config file again.
    pub reload: ReloadHandle,
    /// Credentials, logins and `authStatus`.
    pub auth: Arc<Auth>,
    /// The daemon's task tracker, for what a handler leaves running.
    pub tasks: TaskTracker,
    /// Per-connection deadlines and the partial-frame budget.
    pub connection_limits: ConnectionLimits,
    /// Register `debug/*` methods for tests and benchmarks.
    pub test_hooks: bool,
}

/// What `initialize` and `daemon/status` say about the daemon itself, and
/// the receivers `daemon/status` reads what changes from.
#[derive(Debug)]
pub(crate) struct DaemonFacts {
    pub(crate) daemon_info: DaemonInfo,
    pub(crate) started: Instant,
    pub(crate) socket_path: PathBuf,
    pub(crate) config_path: PathBuf,
    /// Why the config file could not be used the last time it was read, if so.
    pub(crate) config_error: watch::Receiver<Option<String>>,
    /// Why the children record cannot be written, while it cannot.
    pub(crate) children_record_error: watch::Receiver<Option<String>>,
    /// The service manager's notifier, for `daemon/status.serviceNoticesDropped`.
    pub(crate) notifier: crate::service::Notifier,
    /// The loopback MCP endpoint's state, for `daemon/status.mcpEndpoint`.
    pub(crate) mcp_endpoint: watch::Receiver<Option<McpEndpointStatus>>,
}

/// Daemon-wide facts and handles the method handlers need.
#[derive(Debug)]
pub struct DaemonContext {
    /// What the daemon says about itself.
    pub(crate) facts: DaemonFacts,
    pub(crate) supervisor: SupervisorHandle,
    pub(crate) hub: Arc<Hub>,
    pub(crate) reload: ReloadHandle,
    /// Credentials, logins, step-ups and `authStatus`: the one `Auth` of the daemon.
    pub(crate) auth: Arc<Auth>,
    /// The daemon's task tracker: what a handler leaves running (a login's
    /// completion, an MCP client's list follower) is its task, so shutdown
    /// waits for it.
    pub(crate) tasks: TaskTracker,
    /// Who gets in: the connection cap, the handshake queue, the partial-frame budget.
    pub(crate) gate: Arc<Gate>,
    /// Whether `debug/*` is registered, and what it keeps.
    pub(crate) test_hooks: handlers::debug::TestHooks,
}

impl DaemonContext {
    /// Context for a daemon described by `spec`.
    pub fn new(spec: ContextSpec) -> Self {
        let ContextSpec {
            started,
            socket_path,
            config_path,
            config_error,
            children_record_error,
            notifier,
            mcp_endpoint,
            supervisor,
            hub,
            reload,
            auth,
            tasks,
            connection_limits,
            test_hooks,
        } = spec;
        Self {
            facts: DaemonFacts {
                daemon_info: DaemonInfo::new(env!("CARGO_PKG_VERSION"), std::process::id()),
                started,
                socket_path,
                config_path,
                config_error,
                children_record_error,
                notifier,
                mcp_endpoint,
            },
            supervisor,
            hub,
            reload,
            auth,
            tasks,
            gate: Arc::new(Gate::new(connection_limits)),
            test_hooks: handlers::debug::TestHooks::new(test_hooks),
        }
    }
}

/// Serve one connection, which came in at `door`, as session `id` of
/// `engine`; when it ends, so do the servers it added.
///
/// `hung_up` tells, once the front-end's side reached end of stream, whether
/// it closed the connection entirely (so nothing it asked can be answered)
/// rather than only its sending half.
async fn run_connection<S>(
    stream: S,
    hung_up: connection::HungUp,
    id: u64,
    door: Door,
    engine: Engine,
    guard: ConnectionGuard,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let Engine {
        context,
        methods,
        shutdown,
    } = engine;
    let (link, link_messages) = context.hub.routes.new_link(id, door);
    let session = Arc::new(session::Session::new(id, link.clone()));
    let admission = context.gate.admission(&session, &guard);
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
    let Some(guard) = context.gate.admit_or_wait().await else {
        return false;
    };
    let engine = Engine {
        context,
        methods,
        shutdown,
    };
    run_connection(stream, Box::new(|| false), id, Door::Socket, engine, guard).await;
    true
}

/// The connection engine (framing, limits, slots, batches, cancellation,
/// shutdown, the `Link`), as the way in for every transport: the socket's
/// accept loop ([`serve`]) and the loopback HTTP endpoint (`crate::endpoint`),
/// which serves each of its MCP sessions as a connection over an in-memory
/// duplex. Connections come in through the one [`Gate`] (its cap, its
/// handshake queue), are numbered by it, dispatch into the same method tables
/// (one bridge for every MCP client) and end the same way (their resource
/// subscriptions released, their session servers removed). Each connection
/// knows its [`Door`]: what came in at the endpoint speaks MCP only and adds
/// servers of its own only when the config allows it. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Engine {
    context: Arc<DaemonContext>,
    methods: router::MethodTables,
    shutdown: CancellationToken,
}

impl Engine {
    /// The engine of a daemon with `context`; its connections end when `shutdown` is cancelled.
    pub(crate) fn new(context: Arc<DaemonContext>, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let methods = router::tables(context.clone()).context("registering the front-end methods")?;
        Ok(Self {
            context,
            methods,
            shutdown,
        })
    }

    /// A place for one more connection, or `None` when [`Engine::max_connections`]
    /// are open (counted in `daemon/status.refusedConnections`).
    pub(crate) async fn admit(&self) -> Option<Admitted> {
        let Some(guard) = self.context.gate.admit_or_wait().await else {
            self.context.gate.refused();
            return None;
        };
        Some(Admitted {
            id: self.context.gate.next_connection_id(),
            guard,
        })
    }

    /// Most connections served at once, whatever their transport.
    pub(crate) fn max_connections(&self) -> usize {
        self.context.gate.max_connections()
    }
}

/// A connection the [`Gate`] admitted: its slot under the cap and its number,
/// until [`Admitted::serve`] serves it (or it is dropped, which gives the slot back).
pub(crate) struct Admitted {
    id: u64,
    guard: ConnectionGuard,
}

impl Admitted {
    /// The connection's daemon-unique number (its link's, its session servers' owner).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Serve `stream`, which came in at `door`, as this connection until it
    /// ends. `hung_up`, asked once at end of stream, says whether the other
    /// side is gone entirely (its running requests are cancelled at once)
    /// rather than only done sending.
    pub(crate) async fn serve<S>(self, engine: Engine, stream: S, hung_up: HungUp, door: Door)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        run_connection(stream, hung_up, self.id, door, engine, self.guard).await;
    }
}

/// Accept and serve connections until `shutdown` is cancelled: the one
/// accept loop of every platform ([`listen::Accept`] binds and accepts).
pub(crate) async fn serve(
    mut acceptor: impl listen::Accept,
    engine: Engine,
    tracker: TaskTracker,
) -> anyhow::Result<()> {
    let shutdown = engine.shutdown.clone();
    tracing::info!(
        max_connections = engine.max_connections(),
        open_files = ?open_file_limit(),
        "serving at most {} connections at once",
        engine.max_connections()
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
        let Some(admitted) = engine.admit().await else {
            refusals.refused(engine.max_connections());
            continue;
        };
        tracker.spawn(admitted.serve(engine.clone(), accepted.stream, accepted.hung_up, Door::Socket));
    }
    Ok(())
}

/// Rate-limited warnings about refused connections and failed accepts: a
/// flood of connects must not become a flood of log lines.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    last_logged: Option<Instant>,
    refused_since: u64,
    failed_since: u64,
    foreign_since: u64,
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
    pub(crate) fn refused(&mut self, limit: usize) {
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

    /// A connection from another user (`peer_uid`; `None`: its credentials
    /// could not be read) was closed at once. Another local user can connect
    /// in a loop only where the socket's mode lets them (socket activation's
    /// `SocketMode=`), and must not fill the log either.
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn foreign(&mut self, peer_uid: Option<u32>) {
        self.foreign_since += 1;
        if self.due() {
            tracing::warn!(
                ?peer_uid,
                refused = self.foreign_since,
                "refused a connection from another user (count since the last such line)"
            );
            self.foreign_since = 0;
        }
    }

    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn accept_failed(&mut self, error: &std::io::Error) {
        self.failed_since += 1;
        if self.due() {
            tracing::warn!(%error, failed = self.failed_since, "accepting connections failed (count since the last such line)");
            self.failed_since = 0;
        }
    }
}
