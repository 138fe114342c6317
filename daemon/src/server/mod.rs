//! One task per MCP server, whatever its transport: its lifecycle state machine, restart
//! policy and teardown.
//!
//! ```text
//!            start                 initialize + tools/list
//!  stopped ─────────▶ starting ──────────────────────────▶ ready
//!     ▲                 │  │ stop / daemon shutdown          │ process died
//!     │ stop            │  └──────────▶ cancelled            ▼
//!     │                 │ launch/initialize failed     (backoff) ──▶ starting
//!     │                 ▼                                    │ too many crashes
//!     └──────────── failed ◀─────────────────────────────────┘ (crashLoop)
//! ```
//!
//! The task is the only writer of its server's state (a `watch` channel the
//! supervisor reads for snapshots) and publishes every status change as a
//! `mcpServer/startupStatus/updated` notification. A server stopped on
//! purpose is never restarted; a startup failure is not retried (the user
//! fixes the cause and starts it again); a crash after `ready` is restarted
//! with capped exponential backoff (0.5 s doubling to 30 s by default) until
//! it crashes too often (`crash_loop_limit`, 5 by default, within 2 minutes:
//! `crashLoop`).
//!
//! The room's files:
//! - this file: what the supervisor holds (`ServerHandle`, `ServerCommand`,
//!   `ServerState`) and `spawn`, which takes a `ServerSpec`;
//! - `task`: `ServerTask::run`, the state machine, and the one ready loop over
//!   `TaskEvent`, the same for stdio, streamable HTTP and in-process servers;
//! - `policy`: [`RestartPolicy`], the crash history, the teardown bound;
//! - `session`: what the task owns while the server is ready, the events of
//!   its ready loop, and the one-at-a-time re-listing of its tools.
//!
//! While ready, the task publishes a `mcp::route::SessionHandle` in the
//! server's state: the peer, the `mcp::tool_catalog::ToolCatalog` of the
//! latest listing (built by the task, read by everyone else), the stdio wire
//! and the HTTP session recovery; it replaces the handle's catalog after a
//! re-listing and its peer after a renewed HTTP session.
//!
//! A session server an MCP client started for itself, when that client
//! declared roots, is handed the client's roots (`ServerSpec::client_roots`,
//! `hub::roots`): its handler answers `roots/list` with them, and while the
//! server is ready the task sends it `notifications/roots/list_changed` each
//! time the client says they changed (`TaskEvent::RootsChanged`; a change
//! before a session starts is not news to it, it asks afresh).
//!
//! The transports ([`crate::transport`]) start sessions and end them, and
//! return what happened as values; they never write a server's state.
//!
//! A streamable-HTTP server has no process: "died" means a failed `ping`
//! after the transport could not reach it, or a session that could not be
//! renewed after a 404; it is then reconnected with the same restart policy.
//! An in-process server (the built-in one) is known here only as a
//! [`crate::transport::in_process::InProcessServer`] that boot injects.
//!
//! Teardown is bounded (`stop_timeout_sec`, 2.5 s by default): close the MCP
//! session (stdin EOF), wait `TeardownPolicy::stdin_grace` (40%: 1 s), SIGTERM
//! the process group, wait `TeardownPolicy::term_grace` (the rest: 1.5 s),
//! SIGKILL the group (`process::teardown`). The group is signalled
//! even when the leader exits on its own, so a helper it started in the same
//! group does not outlive it. Every signal also goes to the rest of the
//! server's tree: processes carrying its marker, and its descendants as
//! corrald saw them (by parent pid) when it became ready and again before
//! the session is closed, so a grandchild that left the group *and* cleared
//! its environment still goes (see `scan::descendants`).
//!
//! A server's end is a crash whichever way it shows: its process exits, or
//! its stdout (the MCP transport) closes while the process runs on; both tear
//! the tree down and go through the restart policy. Startup ends by what the
//! server completed, not by which event corrald noticed first: a server that
//! answered `initialize` and `tools/list` and then exited is `ready` and
//! crashed (restarted, and in the end `crashLoop`), even when its exit is
//! noticed before its last answer is read; one that exited before that is
//! `processExited`. Invalid JSON on stdout during startup is a
//! `protocolError`, never a `startupTimeout` (see `transport::stdio`'s
//! `Startup`).

mod policy;
mod session;
mod task;

use std::sync::Arc;
use std::time::Instant;

use corral_protocol::McpServerStatus;
use corral_protocol::config::ServerConfig;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::credentials::Credentials;
use crate::hub::Hub;
use crate::hub::roots::ClientRoots;
use crate::process::reaper;
use crate::transport::in_process::InProcessServer;
use crate::transport::stdio::StderrTail;

use crate::mcp::route::SessionHandle;
pub use policy::RestartPolicy;

/// The state of one server, written only by its task.
#[derive(Debug, Clone)]
pub(crate) struct ServerState {
    /// What front-ends see, kept as the wire type itself. Its `uptime_ms` and
    /// `stderr_tail` are filled in when a snapshot is taken.
    pub(crate) public: McpServerStatus,
    pub(crate) ready_since: Option<Instant>,
    /// The MCP session, while ready: requests from front-ends go through it
    /// (its peer, its tool catalog, its wire, its way to a new HTTP session).
    /// Shared: every call's target holds it (one count, not a copy of its parts).
    pub(crate) session: Option<Arc<SessionHandle>>,
}

impl ServerState {
    /// A server not started yet, as `identity` (name, origin, transport, enabled) describes it.
    fn stopped(identity: McpServerStatus) -> Self {
        Self {
            public: identity,
            ready_since: None,
            session: None,
        }
    }

    /// What front-ends see now; `stderr_tail` is the caller's to fill.
    pub(crate) fn snapshot(&self) -> McpServerStatus {
        let mut status = self.public.clone();
        status.uptime_ms = self
            .ready_since
            .map(|since| u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX));
        status
    }

    /// Forget everything of the last session: no pid, not ready, no tools, no way in.
    /// What it was (`server_info`, `last_exit`) stays until the next run says otherwise.
    fn clear_session(&mut self) {
        self.public.pid = None;
        self.public.tool_count = None;
        self.ready_since = None;
        self.session = None;
    }
}

/// What the supervisor asks of a server task.
#[derive(Debug)]
pub(crate) enum ServerCommand {
    /// Start if not running; replies once `starting`.
    Start { reply: oneshot::Sender<()> },
    /// Stop and stay stopped; replies once the processes are gone.
    Stop { reply: oneshot::Sender<()> },
    /// Stop if running, then start; replies once the new start has begun.
    Restart { reply: oneshot::Sender<()> },
}

/// The supervisor's handle on one server task.
#[derive(Debug)]
pub(crate) struct ServerHandle {
    /// Shared with every request's target (`mcp::route::CallTarget`): never copied per call.
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) state: watch::Receiver<ServerState>,
    pub(crate) stderr: StderrTail,
    pub(crate) commands: mpsc::Sender<ServerCommand>,
}

/// Where a server's MCP session comes from.
#[derive(Debug, Clone)]
pub(crate) enum Launcher {
    /// Its config: a stdio child process or a streamable-HTTP server.
    Config,
    /// A server inside corrald (the built-in one), served over an in-memory pipe.
    InProcess(Arc<dyn InProcessServer>),
}

/// How a server task begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Autostart {
    /// Launch at once if the config enables it (config servers at daemon start).
    IfEnabled,
    /// Wait for a start command (session servers: the command's reply tells
    /// the front-end the server is starting, and only one trigger exists).
    Never,
}

/// Everything a server task is made of.
#[derive(Debug)]
pub(crate) struct ServerSpec {
    /// Its config entry.
    pub(crate) config: ServerConfig,
    /// How it looks before it ever starts (name, origin, transport, enabled).
    pub(crate) identity: McpServerStatus,
    /// Where its session comes from.
    pub(crate) launcher: Launcher,
    /// The roots of the MCP client that started it for itself, when it
    /// declared them: offered to the server instead of the config's `roots`,
    /// which answer only when the client does not (see `mcp::handler`).
    pub(crate) client_roots: Option<ClientRoots>,
    /// Whether it starts at once.
    pub(crate) autostart: Autostart,
    /// Where its status changes and notifications go.
    pub(crate) hub: Arc<Hub>,
    /// Stored OAuth credentials (HTTP servers).
    pub(crate) credentials: Option<Credentials>,
    /// The daemon's process registry.
    pub(crate) processes: Arc<reaper::Registry>,
    /// Cancelled when the daemon shuts down: the task tears the server down and ends.
    pub(crate) shutdown: CancellationToken,
}

/// Start the task for one server in `tracker`; it runs until `spec.shutdown` is cancelled
/// (tearing the server down first) or the handle's command channel closes.
pub(crate) fn spawn(spec: ServerSpec, tracker: &TaskTracker) -> ServerHandle {
    let (state_tx, state) = watch::channel(ServerState::stopped(spec.identity.clone()));
    let (commands_tx, commands) = mpsc::channel(16);
    let stderr = StderrTail::default();
    let config = Arc::new(spec.config.clone());
    let task = task::ServerTask::new(spec, state_tx, commands, stderr.clone(), tracker.clone());
    tracker.spawn(task.run());
    ServerHandle {
        config,
        state,
        stderr,
        commands: commands_tx,
    }
}
