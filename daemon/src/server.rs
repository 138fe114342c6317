//! One task per MCP server: its lifecycle state machine, restart policy and
//! teardown.
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
//! with capped exponential backoff until it crashes too often.
//!
//! A streamable-HTTP server (`run_http`, transport details in `http.rs`)
//! has no process: "died" means a failed `ping` after the transport could
//! not reach it, or a session that could not be renewed after a 404; it is
//! then reconnected with the same restart policy.
//!
//! Teardown is bounded: close the MCP session (stdin EOF), wait
//! [`TeardownPolicy::stdin_grace`], SIGTERM the process group, wait
//! [`TeardownPolicy::term_grace`], SIGKILL the group. The group is signalled
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
//! `processExited`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_protocol::config::{HttpConfig, ServerConfig, TransportConfig};
use corral_protocol::{
    DaemonNotification, FailureReason, McpServerStatus, ServerInfo, ServerStatus, StartupStatusUpdated,
    ToolsListChanged,
};
use process_wrap::tokio::ChildWrapper;
use rmcp::model::Tool;
use rmcp::service::RunningService;
use rmcp::{Peer, RoleClient, ServiceExt as _};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::auth::credentials::{CredentialState, Credentials};
use crate::builtin::CorralServer;
use crate::hub::Hub;
use crate::mcp_client::ServerClient;
use crate::process::cgroup;
use crate::process::reaper;
use crate::process::scan;
use crate::process::teardown::{TeardownPolicy, describe_exit, reap_adopted, teardown};
use crate::raw::RawWire;
use crate::transport::http::{self, HttpBackend, HttpFailure};
use crate::transport::stdio::{self, LaunchError, StderrTail};

/// The state of one server, written only by its task.
#[derive(Debug, Clone)]
pub(crate) struct ServerState {
    /// What front-ends see, kept as the wire type itself. Its `uptime_ms` and
    /// `stderr_tail` are filled in when a snapshot is taken.
    pub(crate) public: McpServerStatus,
    pub(crate) ready_since: Option<Instant>,
    /// The MCP session's peer, while ready: requests from front-ends go through it.
    pub(crate) peer: Option<Peer<RoleClient>>,
    /// The tools the server listed when it became ready (all of them, unfiltered).
    pub(crate) tools: Arc<Vec<Tool>>,
    /// The session's answers as the server wrote them (stdio servers).
    pub(crate) raw: Option<Arc<RawWire>>,
    /// For a ready streamable-HTTP server: how a request that found its
    /// session expired (HTTP 404) asks for a new one.
    pub(crate) session_recovery: Option<SessionRecovery>,
}

impl ServerState {
    /// A server not started yet, as `identity` (name, origin, transport, enabled) describes it.
    fn stopped(identity: McpServerStatus) -> Self {
        Self {
            public: identity,
            ready_since: None,
            peer: None,
            tools: Arc::new(Vec::new()),
            raw: None,
            session_recovery: None,
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
}

/// A cloneable handle to ask a streamable-HTTP server's task for a new MCP
/// session after a request found the current one expired (HTTP 404).
#[derive(Debug, Clone)]
pub(crate) struct SessionRecovery {
    /// Which session the holder's peer belongs to.
    generation: u64,
    requests: mpsc::Sender<RecoveryRequest>,
}

/// A request for a new session, from a holder of a peer of session `generation`.
#[derive(Debug)]
pub(crate) struct RecoveryRequest {
    generation: u64,
    reply: oneshot::Sender<Result<Peer<RoleClient>, String>>,
}

impl SessionRecovery {
    /// A peer on a new session: the server task rebuilds the transport and
    /// re-initializes once, unless another request already replaced the
    /// session this handle belongs to (then the current peer comes back).
    pub(crate) async fn recover(&self) -> Result<Peer<RoleClient>, String> {
        let (reply, answer) = oneshot::channel();
        let request = RecoveryRequest {
            generation: self.generation,
            reply,
        };
        let gone = || "the server's task ended the session (it is stopped or reconnecting)".to_owned();
        self.requests.send(request).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// When a crashed server is restarted, and when the daemon gives up.
#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Delay before the first restart; doubles with every consecutive crash.
    pub initial_backoff: Duration,
    /// Longest delay between restarts.
    pub max_backoff: Duration,
    /// This many crashes within `crash_window` mark the server `crashLoop`.
    pub crash_limit: usize,
    /// See `crash_limit`.
    pub crash_window: Duration,
}

impl RestartPolicy {
    fn from_config(config: &ServerConfig) -> Self {
        Self {
            initial_backoff: config.restart_backoff_initial,
            max_backoff: config.restart_backoff_max,
            crash_limit: usize::try_from(config.crash_loop_limit).unwrap_or(usize::MAX),
            crash_window: corral_protocol::config::CRASH_LOOP_WINDOW,
        }
    }
}

impl RestartPolicy {
    fn backoff(&self, consecutive_crashes: u32) -> Duration {
        let factor = 2u32.saturating_pow(consecutive_crashes.saturating_sub(1).min(16));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
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
    pub(crate) config: ServerConfig,
    pub(crate) state: watch::Receiver<ServerState>,
    pub(crate) stderr: StderrTail,
    pub(crate) commands: mpsc::Sender<ServerCommand>,
}

/// Where a server's MCP session comes from.
#[derive(Debug, Clone)]
pub(crate) enum Launcher {
    /// Its config: a stdio child process or a streamable-HTTP server.
    Config,
    /// The built-in server, in-process.
    BuiltIn(CorralServer),
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

/// Start the task for one server; it runs until `shutdown` is cancelled
/// (tearing the server down first).
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    config: ServerConfig,
    identity: McpServerStatus,
    launcher: Launcher,
    autostart: Autostart,
    hub: Arc<Hub>,
    credentials: Option<Credentials>,
    processes: Arc<reaper::Registry>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> ServerHandle {
    let (state_tx, state) = watch::channel(ServerState::stopped(identity));
    let (commands_tx, commands) = mpsc::channel(16);
    let stderr = StderrTail::default();
    let task = ServerTask {
        name: config.name.clone(),
        config: config.clone(),
        hub,
        state: state_tx,
        stderr: stderr.clone(),
        commands,
        shutdown,
        teardown: TeardownPolicy::within(config.stop_timeout),
        restart: RestartPolicy::from_config(&config),
        tracker: tracker.clone(),
        marker: String::new(),
        processes,
        leaf: None,
        leader: scan::ProcessId { pid: 0, start_time: 0 },
        known_tree: Vec::new(),
        last_crash: None,
        was_ready: false,
        autostart,
        launcher,
        credentials,
    };
    tracker.spawn(task.run());
    ServerHandle {
        config,
        state,
        stderr,
        commands: commands_tx,
    }
}

struct ServerTask {
    name: String,
    config: ServerConfig,
    hub: Arc<Hub>,
    state: watch::Sender<ServerState>,
    stderr: StderrTail,
    commands: mpsc::Receiver<ServerCommand>,
    shutdown: CancellationToken,
    teardown: TeardownPolicy,
    restart: RestartPolicy,
    tracker: tokio_util::task::TaskTracker,
    /// Marker of the current (or last) run's process tree.
    marker: String,
    /// The daemon's process registry (leaders, markers, the record).
    processes: Arc<reaper::Registry>,
    /// The current run's cgroup, when servers get one (`cgroup`).
    leaf: Option<cgroup::Leaf>,
    /// The current (or last) run's leader, with its start time.
    leader: scan::ProcessId,
    /// Descendants of the current run's leader, as seen when it became ready.
    known_tree: Vec<scan::ProcessId>,
    /// How the last crash showed (for the `crashLoop` error).
    last_crash: Option<&'static str>,
    /// Whether the server was ready before (so a new `ready` changes its tools).
    was_ready: bool,
    autostart: Autostart,
    launcher: Launcher,
    /// Stored OAuth credentials (HTTP servers without an explicit `Authorization`).
    credentials: Option<Credentials>,
}

/// An authentication failure says which login is needed: stored credentials that could not be used
/// or refreshed → `reauthenticationRequired`; none stored → `authenticationRequired` (first login).
fn login_failure(name: &str, mut failure: HttpFailure, had_credentials: bool) -> HttpFailure {
    if failure.reason != FailureReason::AuthenticationRequired {
        return failure;
    }
    if had_credentials {
        failure.reason = FailureReason::ReauthenticationRequired;
        failure.message = format!(
            "the stored OAuth credentials were rejected or expired and could not be refreshed: run `corral login {name}`"
        );
    } else {
        failure.message = format!("{}; not logged in: run `corral login {name}`", failure.message);
    }
    failure
}

/// How one run of the server (launch to teardown) ended.
enum RunEnd {
    /// Stopped on request; reply once the processes are gone.
    Stopped(oneshot::Sender<()>),
    /// Restart requested; reply once the new start has begun.
    Restart(oneshot::Sender<()>),
    /// Launch or startup failed (already reported).
    StartupFailed,
    /// Died after `ready`, having been ready for this long; `cause` says how,
    /// where `lastExit` does not (a stdio server that closed its stdout).
    Crashed {
        ready_for: Duration,
        cause: Option<&'static str>,
    },
    /// The daemon is shutting down.
    Shutdown,
}

/// corrald's MCP session with one server.
type Session = RunningService<RoleClient, ServerClient>;

/// A running MCP session with its process.
struct Running {
    service: Session,
    child: Box<dyn ChildWrapper>,
    pid: u32,
}

impl ServerTask {
    async fn run(mut self) {
        let mut want_running = self.autostart == Autostart::IfEnabled && self.config.enabled;
        let mut pending_reply: Option<oneshot::Sender<()>> = None;
        let mut recent_crashes: Vec<Instant> = Vec::new();
        let mut consecutive_crashes = 0u32;
        loop {
            if !want_running {
                let command = tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    command = self.commands.recv() => command,
                };
                match command {
                    None => return,
                    Some(ServerCommand::Stop { reply }) => {
                        let _ = reply.send(());
                    }
                    Some(ServerCommand::Start { reply } | ServerCommand::Restart { reply }) => {
                        want_running = true;
                        pending_reply = Some(reply);
                        recent_crashes.clear();
                        consecutive_crashes = 0;
                    }
                }
                continue;
            }
            let end = self.run_once(pending_reply.take()).await;
            match end {
                RunEnd::Shutdown => return,
                RunEnd::Stopped(reply) => {
                    want_running = false;
                    let _ = reply.send(());
                }
                RunEnd::Restart(reply) => pending_reply = Some(reply),
                RunEnd::StartupFailed => want_running = false,
                RunEnd::Crashed { ready_for, cause } => {
                    self.last_crash = cause;
                    if ready_for >= self.restart.max_backoff {
                        // Stayed up long enough to count as healthy again.
                        consecutive_crashes = 0;
                    }
                    let now = Instant::now();
                    recent_crashes.retain(|at| now.duration_since(*at) < self.restart.crash_window);
                    recent_crashes.push(now);
                    consecutive_crashes += 1;
                    if recent_crashes.len() >= self.restart.crash_limit {
                        let error = format!(
                            "`{}` crashed {} times within {:?}; not restarting it until it is started again{}",
                            self.name,
                            recent_crashes.len(),
                            self.restart.crash_window,
                            self.last_exit_suffix()
                        );
                        self.fail(FailureReason::CrashLoop, error);
                        want_running = false;
                        continue;
                    }
                    let delay = self.restart.backoff(consecutive_crashes);
                    tracing::info!(server = %self.name, ?delay, "restarting after a crash");
                    self.state.send_modify(|state| state.public.restart_count += 1);
                    // The restart has begun (its backoff is part of it): say so
                    // now rather than leave a dead server listed as ready.
                    self.set_status(ServerStatus::Starting, None);
                    // Wait out the backoff, but a stop or a shutdown wins.
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => return,
                        command = self.commands.recv() => match command {
                            None => return,
                            Some(ServerCommand::Stop { reply }) => {
                                self.set_status(ServerStatus::Stopped, None);
                                want_running = false;
                                let _ = reply.send(());
                            }
                            Some(ServerCommand::Start { reply } | ServerCommand::Restart { reply }) => {
                                pending_reply = Some(reply);
                            }
                        },
                    }
                }
            }
        }
    }

    /// Launch, initialize, serve until something ends it, tear down.
    async fn run_once(&mut self, reply_when_starting: Option<oneshot::Sender<()>>) -> RunEnd {
        self.state.send_modify(|state| {
            state.public.pid = None;
            state.public.tool_count = None;
            state.public.server_info = None;
            state.ready_since = None;
        });
        if self.state.borrow().public.status != ServerStatus::Starting {
            self.set_status(ServerStatus::Starting, None);
        }
        if let Some(reply) = reply_when_starting {
            let _ = reply.send(());
        }
        if let Launcher::BuiltIn(server) = &self.launcher {
            let server = server.clone();
            return self.run_builtin(server).await;
        }
        let stdio_config = match &self.config.transport {
            TransportConfig::Stdio(stdio_config) => stdio_config,
            TransportConfig::StreamableHttp(http_config) => {
                let http_config = http_config.clone();
                return self.run_http(&http_config).await;
            }
        };
        let marker = self.processes.next_marker(&self.name);
        let leaf = if cgroup::enabled(&self.processes) {
            let name = self.name.clone();
            let processes = self.processes.clone();
            tokio::task::spawn_blocking(move || cgroup::Leaf::create(&name, processes))
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        let (launched, stderr) = match stdio::launch(&self.name, stdio_config, &marker, leaf.as_ref(), &self.processes)
        {
            Ok(launched) => launched,
            Err(error) => {
                if let Some(leaf) = leaf {
                    let _ = tokio::task::spawn_blocking(move || leaf.kill_and_remove()).await;
                }
                let reason = match &error {
                    LaunchError::ExecutableNotFound { .. } => FailureReason::ExecutableNotFound,
                    LaunchError::BadWorkingDirectory { .. } => FailureReason::ConfigInvalid,
                    LaunchError::NotExecutable { .. } | LaunchError::Spawn { .. } => FailureReason::SpawnFailed,
                };
                self.fail(reason, format!("`{}`: {error}", self.name));
                return RunEnd::StartupFailed;
            }
        };
        let pid = launched.pid;
        tracing::info!(server = %self.name, pid, "launched");
        self.state.send_modify(|state| state.public.pid = Some(pid));
        self.marker = marker;
        self.leaf = leaf;
        // Read now, while the leader cannot have been reaped: its pid is its own.
        self.leader = scan::ProcessId::of(pid);
        self.known_tree.clear();
        let mut drain = self
            .tracker
            .spawn(stdio::drain_stderr(self.name.clone(), stderr, self.stderr.clone()));

        let mut child = launched.child;
        let deadline = tokio::time::Instant::now() + self.config.startup_timeout;
        let (tools_changed, mut tools_changed_rx) = mpsc::channel(1);
        let handler = ServerClient::new(self.name.clone(), self.hub.clone(), tools_changed)
            .with_roots(self.config.roots.as_deref())
            .progress_from_wire();
        let raw = Arc::new(RawWire::new(&self.name, self.hub.routes.clone()));
        let stdout_closed = raw.stdout_closed();
        let broken_message = raw.broken_message();
        let pipes = raw.tee(launched.stdout, launched.stdin);
        let startup = async {
            let service = handler
                .serve(pipes)
                .await
                .map_err(|error| (FailureReason::ProtocolError, format!("initialize failed: {error}")))?;
            let tools = service
                .peer()
                .list_all_tools()
                .await
                .map_err(|error| (FailureReason::ProtocolError, format!("tools/list failed: {error}")))?;
            Ok::<_, (FailureReason, String)>((service, tools))
        };
        let mut startup = Box::pin(startup);
        let outcome = tokio::select! {
            // Biased: a startup that completed wins over an exit noticed in the same poll.
            biased;
            outcome = tokio::time::timeout_at(deadline, &mut startup) => match outcome {
                Ok(outcome) => outcome,
                Err(_) => Err(self.startup_timed_out(&raw)),
            },
            status = child.inner_mut().wait() => {
                // The process is gone, but what it wrote before it went may not
                // have been read yet: let the startup read it (the pipe is at
                // EOF, or a grandchild holds it open, hence the bound). What
                // the server completed decides, not which event came first.
                let grace = EXIT_NOTICE_GRACE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                match tokio::time::timeout(grace, &mut startup).await {
                    Ok(Ok(ready)) => Ok(ready),
                    _ => Err(self.exited_during_startup(status, &mut drain).await),
                }
            }
            () = broken_message.cancelled() => Err((
                FailureReason::ProtocolError,
                format!("the server wrote a JSON-RPC message that is not valid JSON ({})", raw.invalid_summary()),
            )),
            end = next_interruption(&mut self.commands, &self.shutdown) => {
                self.set_status(ServerStatus::Cancelled, None);
                drop(startup); // closes the child's stdin: the first teardown step
                self.teardown_process(None, &mut child, pid).await;
                return end;
            }
        };
        // A closed pipe usually means the process died: say so, with its exit status.
        let outcome = match outcome {
            Err((FailureReason::ProtocolError, error)) => {
                match tokio::time::timeout(EXIT_NOTICE_GRACE, child.inner_mut().wait()).await {
                    Ok(status) => Err(self.exited_during_startup(status, &mut drain).await),
                    Err(_) => Err((FailureReason::ProtocolError, error)),
                }
            }
            other => other,
        };
        drop(startup); // closes the child's stdin unless the session now owns it
        let (service, tools) = match outcome {
            Ok(ready) => ready,
            Err((reason, error)) => {
                self.teardown_process(None, &mut child, pid).await;
                self.fail(reason, format!("`{}`: {error}", self.name));
                return RunEnd::StartupFailed;
            }
        };
        // The list was just fetched: changes announced during startup are in it.
        while tools_changed_rx.try_recv().is_ok() {}
        self.state.send_modify(|state| state.raw = Some(raw));
        self.mark_ready(&service, tools, Some(pid));
        // The tree as it is now, while its parent chains are intact: a
        // grandchild that leaves the group and clears its environment is
        // still known as this server's if the server dies first.
        let leader = self.leader;
        self.known_tree = tokio::task::spawn_blocking(move || scan::descendants(&[leader]))
            .await
            .unwrap_or_default();

        let mut running = Running { service, child, pid };
        let (refreshed_tx, mut refreshed_rx) = mpsc::channel(1);
        loop {
            tokio::select! {
                biased;
                status = running.child.inner_mut().wait() => {
                    let exit = describe_exit(status);
                    tracing::warn!(server = %self.name, pid, %exit, "server process exited");
                    self.state.send_modify(|state| state.public.last_exit = Some(exit));
                    let ready_for = self.state.borrow().ready_since.map_or(Duration::ZERO, |since| since.elapsed());
                    let Running { service, mut child, pid } = running;
                    self.teardown_process(Some(service), &mut child, pid).await;
                    return RunEnd::Crashed { ready_for, cause: None };
                }
                () = stdout_closed.cancelled() => {
                    // The MCP transport is gone: every request would fail. A
                    // process that runs on is torn down like a crashed one.
                    tracing::warn!(server = %self.name, pid, "server closed its stdout (the MCP transport); tearing it down");
                    let ready_for = self.state.borrow().ready_since.map_or(Duration::ZERO, |since| since.elapsed());
                    let Running { service, mut child, pid } = running;
                    self.teardown_process(Some(service), &mut child, pid).await;
                    return RunEnd::Crashed {
                        ready_for,
                        cause: Some("closed its stdout (the MCP transport) and was torn down"),
                    };
                }
                end = next_interruption(&mut self.commands, &self.shutdown) => {
                    self.stop_running(running).await;
                    return end;
                }
                Some(()) = tools_changed_rx.recv() => {
                    // Re-list in a task of its own: a server that never answers
                    // must not keep this loop from stopping or noticing a crash.
                    let peer = running.service.peer().clone();
                    let timeout = self.config.tool_timeout;
                    let refreshed = refreshed_tx.clone();
                    self.tracker.spawn(async move {
                        let listed = match tokio::time::timeout(timeout, peer.list_all_tools()).await {
                            Ok(Ok(tools)) => Ok(tools),
                            Ok(Err(error)) => Err(error.to_string()),
                            Err(_) => Err(format!("no answer within {timeout:?}")),
                        };
                        let _ = refreshed.send(listed).await;
                    });
                }
                Some(listed) = refreshed_rx.recv() => self.apply_refreshed_tools(listed),
            }
        }
    }

    /// Take the tools re-listed after the server said they changed, and tell front-ends.
    fn apply_refreshed_tools(&self, listed: Result<Vec<Tool>, String>) {
        let tools = match listed {
            Ok(tools) => tools,
            Err(error) => {
                tracing::warn!(server = %self.name, %error, "re-listing tools after list_changed failed");
                return;
            }
        };
        let count = tools
            .iter()
            .filter(|tool| tool_allowed(&self.config, &tool.name))
            .count();
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        self.state.send_modify(|state| {
            state.public.tool_count = Some(count);
            state.tools = Arc::new(tools);
        });
        let name = self.name.clone();
        self.hub
            .events
            .publish(|seq| DaemonNotification::ToolsListChanged(ToolsListChanged::new(seq, name, count)));
    }

    /// A new session of the server knows nothing of the resource
    /// subscriptions front-ends hold: subscribe again, in the background.
    fn renew_subscriptions(&self, peer: &rmcp::Peer<RoleClient>) {
        let uris = self.hub.routes.subscriptions(&self.name);
        if uris.is_empty() {
            return;
        }
        let (name, peer, timeout) = (self.name.clone(), peer.clone(), self.config.tool_timeout);
        self.tracker.spawn(async move {
            for uri in uris {
                #[allow(deprecated)] // legacy in MCP 2026-07-28, the way in 2025-11-25
                let request = peer.subscribe(rmcp::model::SubscribeRequestParams::new(uri.clone()));
                match tokio::time::timeout(timeout, request).await {
                    Ok(Ok(())) => tracing::debug!(server = %name, uri, "resource subscription renewed"),
                    Ok(Err(error)) => {
                        tracing::warn!(server = %name, uri, %error, "cannot renew a resource subscription");
                    }
                    Err(_) => tracing::warn!(server = %name, uri, "renewing a resource subscription timed out"),
                }
            }
        });
    }

    /// Record a session that finished `initialize` and `tools/list`, report
    /// `ready`, and (if it was ready before) that its tools changed.
    fn mark_ready(&mut self, service: &Session, tools: Vec<Tool>, pid: Option<u32>) {
        let tool_count = tools
            .iter()
            .filter(|tool| tool_allowed(&self.config, &tool.name))
            .count();
        let tool_count = u32::try_from(tool_count).unwrap_or(u32::MAX);
        let server_info = service.peer_info().map(|info| {
            let implementation = info.server_info.clone().unwrap_or_default();
            ServerInfo::new(
                implementation.name,
                implementation.version,
                implementation.title,
                Some(info.protocol_version.to_string()),
            )
        });
        let peer = service.peer().clone();
        self.renew_subscriptions(&peer);
        self.state.send_modify(|state| {
            state.public.tool_count = Some(tool_count);
            state.public.server_info = server_info;
            state.ready_since = Some(Instant::now());
            state.peer = Some(peer);
            state.tools = Arc::new(tools);
        });
        self.set_status(ServerStatus::Ready, None);
        tracing::info!(server = %self.name, pid, tools = tool_count, "ready");
        if self.was_ready {
            // Tools come back with the server: tell front-ends to fetch them again.
            let name = self.name.clone();
            self.hub
                .events
                .publish(|seq| DaemonNotification::ToolsListChanged(ToolsListChanged::new(seq, name, tool_count)));
        }
        self.was_ready = true;
    }

    /// One run of a streamable-HTTP server: connect (with retries), serve,
    /// recover expired sessions, notice when the server went away.
    async fn run_http(&mut self, config: &HttpConfig) -> RunEnd {
        let failed = |task: &Self, failure: HttpFailure| {
            task.fail(failure.reason, format!("`{}`: {}", task.name, failure.message));
            RunEnd::StartupFailed
        };
        let prepared = match http::prepare(&self.name, config, |name| std::env::var_os(name)) {
            Ok(prepared) => prepared,
            Err(failure) => return failed(self, failure),
        };
        let backend = match HttpBackend::plain() {
            Ok(backend) => backend,
            Err(failure) => return failed(self, failure),
        };
        // Stored OAuth credentials, never for a server whose config sets `Authorization` itself.
        let store = match &self.credentials {
            Some(credentials) if !prepared.has_explicit_authorization() => {
                Some(credentials.for_server(&self.name, &config.url))
            }
            _ => None,
        };
        let mut had_credentials = false;
        let backend = match (store, backend) {
            (Some(store), HttpBackend::Plain(client)) => match store.state().await {
                Err(error) => {
                    let message = format!("cannot read the stored OAuth credentials: {error:#}");
                    return failed(self, HttpFailure::new(FailureReason::ConfigInvalid, message));
                }
                Ok(CredentialState::Missing) => HttpBackend::Plain(client),
                Ok(_) => {
                    had_credentials = true;
                    let restore = crate::auth::oauth::auth_client(config, &store, client.clone());
                    match tokio::time::timeout(self.config.startup_timeout, restore).await {
                        Ok(Ok(Some(auth))) => HttpBackend::OAuth(auth),
                        Ok(Ok(None)) => HttpBackend::Plain(client),
                        Ok(Err(error)) => {
                            let message = format!("{error:#}");
                            return failed(self, HttpFailure::new(FailureReason::Unreachable, message));
                        }
                        Err(_) => {
                            let message = "OAuth metadata discovery did not finish within startup_timeout_sec";
                            return failed(self, HttpFailure::new(FailureReason::StartupTimeout, message));
                        }
                    }
                }
            },
            (_, backend) => backend,
        };
        let (tools_changed, mut tools_changed_rx) = mpsc::channel(1);
        // Capacity 1: one pending signal covers every later one.
        let (health_tx, mut health_rx) = mpsc::channel(1);
        let name = self.name.clone();
        let hub = self.hub.clone();
        let roots = self.config.roots.clone();
        let handler =
            move || ServerClient::new(name.clone(), hub.clone(), tools_changed.clone()).with_roots(roots.as_deref());
        let deadline = tokio::time::Instant::now() + self.config.startup_timeout;
        let startup_timeout = self.config.startup_timeout;
        let startup = http::start(&self.name, &backend, &prepared, &handler, health_tx.clone(), deadline);
        let outcome = tokio::select! {
            outcome = tokio::time::timeout_at(deadline, startup) => match outcome {
                Ok(outcome) => outcome,
                Err(_) => Err(HttpFailure {
                    reason: FailureReason::StartupTimeout,
                    message: format!(
                        "initialize and tools/list did not finish within {startup_timeout:?} (startup_timeout_sec)"
                    ),
                    retryable: false,
                    session_expired: false,
                }),
            },
            end = next_interruption(&mut self.commands, &self.shutdown) => {
                self.set_status(ServerStatus::Cancelled, None);
                return end;
            }
        };
        let (mut service, tools) = match outcome {
            Ok(ready) => ready,
            Err(failure) => return failed(self, login_failure(&self.name, failure, had_credentials)),
        };
        // The list was just fetched: changes announced during startup are in it,
        // and trouble seen while connecting is behind us.
        while tools_changed_rx.try_recv().is_ok() {}
        while health_rx.try_recv().is_ok() {}
        let (recovery_tx, mut recovery_rx) = mpsc::channel::<RecoveryRequest>(16);
        let mut generation = 0u64;
        self.state.send_modify(|state| {
            state.session_recovery = Some(SessionRecovery {
                generation,
                requests: recovery_tx.clone(),
            });
        });
        self.mark_ready(&service, tools, None);
        tracing::info!(server = %self.name, "streamable HTTP session ready");

        let (refreshed_tx, mut refreshed_rx) = mpsc::channel(1);
        let end = loop {
            let generation_before = generation;
            // Why the server is gone, if it is (a stop or shutdown breaks out instead).
            let gone: Option<String> = tokio::select! {
                end = next_interruption(&mut self.commands, &self.shutdown) => break end,
                Some(()) = tools_changed_rx.recv() => {
                    // Read-only: retried after transient failures, within tool_timeout_sec.
                    let peer = service.peer().clone();
                    let timeout = self.config.tool_timeout;
                    let refreshed = refreshed_tx.clone();
                    let name = self.name.clone();
                    self.tracker.spawn(async move {
                        let deadline = tokio::time::Instant::now() + timeout;
                        let listed = match tokio::time::timeout_at(deadline, http::list_tools(&name, &peer, deadline)).await {
                            Ok(Ok(tools)) => Ok(tools),
                            Ok(Err(failure)) => Err(failure.message),
                            Err(_) => Err(format!("no answer within {timeout:?}")),
                        };
                        let _ = refreshed.send(listed).await;
                    });
                    None
                }
                Some(listed) = refreshed_rx.recv() => {
                    self.apply_refreshed_tools(listed);
                    None
                }
                Some(signal) = health_rx.recv() => match signal {
                    http::HealthSignal::Unreachable => match probe(&service).await {
                        Probe::Alive => None,
                        Probe::SessionExpired => self
                            .renew_http_session(&backend, &prepared, &handler, &health_tx, &mut service, &mut generation, &recovery_tx)
                            .await
                            .err(),
                        Probe::Gone(why) => Some(why),
                    },
                    http::HealthSignal::SessionExpired => self
                        .renew_http_session(&backend, &prepared, &handler, &health_tx, &mut service, &mut generation, &recovery_tx)
                        .await
                        .err(),
                    http::HealthSignal::AuthRequired => {
                        // The token was rejected and could not be refreshed (or the refresh
                        // token was): retrying would only repeat it. Fail until a new login.
                        let failure = login_failure(
                            &self.name,
                            HttpFailure::new(FailureReason::AuthenticationRequired, "the server requires authentication (HTTP 401)"),
                            had_credentials,
                        );
                        self.close_http_session(service).await;
                        self.fail(failure.reason, format!("`{}`: {}", self.name, failure.message));
                        return RunEnd::StartupFailed;
                    }
                },
                Some(request) = recovery_rx.recv() => {
                    if request.generation != generation {
                        // Someone else already replaced that session.
                        let _ = request.reply.send(Ok(service.peer().clone()));
                        None
                    } else {
                        match self
                            .renew_http_session(&backend, &prepared, &handler, &health_tx, &mut service, &mut generation, &recovery_tx)
                            .await
                        {
                            Ok(()) => {
                                let _ = request.reply.send(Ok(service.peer().clone()));
                                None
                            }
                            Err(why) => {
                                let _ = request.reply.send(Err(why.clone()));
                                Some(why)
                            }
                        }
                    }
                }
            };
            if generation != generation_before {
                // What the old session reported is about the old session.
                while health_rx.try_recv().is_ok() {}
            }
            if let Some(why) = gone {
                tracing::warn!(server = %self.name, "the server went away: {why}");
                let ready_for = self
                    .state
                    .borrow()
                    .ready_since
                    .map_or(Duration::ZERO, |since| since.elapsed());
                self.close_http_session(service).await;
                self.state
                    .send_modify(|state| state.public.last_exit = Some(format!("went away: {why}")));
                return RunEnd::Crashed { ready_for, cause: None };
            }
        };
        self.close_http_session(service).await;
        if !matches!(end, RunEnd::Shutdown) {
            self.set_status(ServerStatus::Stopped, None);
        }
        end
    }

    /// Replace an expired session: a new transport and one `initialize`
    /// (itself retried after transient failures within `startup_timeout_sec`).
    /// On success, front-ends get the new peer; on failure, why.
    #[allow(clippy::too_many_arguments)]
    async fn renew_http_session(
        &self,
        backend: &HttpBackend,
        prepared: &http::Prepared,
        handler: &impl Fn() -> ServerClient,
        health: &mpsc::Sender<http::HealthSignal>,
        service: &mut Session,
        generation: &mut u64,
        recovery: &mpsc::Sender<RecoveryRequest>,
    ) -> Result<(), String> {
        tracing::info!(server = %self.name, "the session expired (HTTP 404); re-initializing");
        let deadline = tokio::time::Instant::now() + self.config.startup_timeout;
        let renewed = tokio::time::timeout_at(
            deadline,
            http::reconnect(&self.name, backend, prepared, handler, health.clone(), deadline),
        )
        .await;
        let new_service = match renewed {
            Ok(Ok(new_service)) => new_service,
            Ok(Err(failure)) => {
                return Err(format!(
                    "re-initializing after an expired session failed: {}",
                    failure.message
                ));
            }
            Err(_) => return Err("re-initializing after an expired session timed out".to_owned()),
        };
        let old = std::mem::replace(service, new_service);
        *generation += 1;
        let peer = service.peer().clone();
        let generation = *generation;
        // The new session knows nothing of the front-ends' resource subscriptions.
        self.renew_subscriptions(&peer);
        self.state.send_modify(|state| {
            state.peer = Some(peer);
            state.session_recovery = Some(SessionRecovery {
                generation,
                requests: recovery.clone(),
            });
        });
        // The old session is gone on the server; closing it here is bookkeeping.
        self.tracker.spawn(async move {
            let mut old = old;
            let _ = old.close_with_timeout(Duration::from_secs(1)).await;
        });
        tracing::info!(server = %self.name, generation, "new session after the old one expired");
        Ok(())
    }

    /// Close a streamable-HTTP session (bounded) and forget it.
    async fn close_http_session(&self, mut service: Session) {
        let _ = service.close_with_timeout(self.teardown.stdin_grace).await;
        self.state.send_modify(|state| {
            state.ready_since = None;
            state.public.tool_count = None;
            state.peer = None;
            state.session_recovery = None;
            state.tools = Arc::new(Vec::new());
        });
    }

    /// One run of the built-in server: in-process, over an in-memory duplex.
    async fn run_builtin(&mut self, server: CorralServer) -> RunEnd {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server_task = self.tracker.spawn(async move {
            match server.serve(server_io).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(error) => tracing::warn!(%error, "the built-in server did not start"),
            }
        });
        // The built-in's tools never change: nobody listens for that.
        let (tools_changed, _) = mpsc::channel(1);
        let handler = ServerClient::new(self.name.clone(), self.hub.clone(), tools_changed);
        let startup = async {
            let service = handler
                .serve(client_io)
                .await
                .map_err(|error| format!("initialize failed: {error}"))?;
            let tools = service
                .peer()
                .list_all_tools()
                .await
                .map_err(|error| format!("tools/list failed: {error}"))?;
            Ok::<_, String>((service, tools))
        };
        let (mut service, tools) = match tokio::time::timeout(self.config.startup_timeout, startup).await {
            Ok(Ok(ready)) => ready,
            Ok(Err(error)) => {
                server_task.abort();
                self.fail(
                    FailureReason::ProtocolError,
                    format!("built-in server `{}`: {error}", self.name),
                );
                return RunEnd::StartupFailed;
            }
            Err(_) => {
                server_task.abort();
                self.fail(
                    FailureReason::StartupTimeout,
                    format!("built-in server `{}` did not start", self.name),
                );
                return RunEnd::StartupFailed;
            }
        };
        self.mark_ready(&service, tools, None);
        let end = next_interruption(&mut self.commands, &self.shutdown).await;
        let _ = service.close_with_timeout(Duration::from_secs(1)).await;
        server_task.abort();
        self.state.send_modify(|state| {
            state.ready_since = None;
            state.public.tool_count = None;
            state.peer = None;
            state.raw = None;
            state.tools = Arc::new(Vec::new());
        });
        if !matches!(end, RunEnd::Shutdown) {
            self.set_status(ServerStatus::Stopped, None);
        }
        end
    }

    /// The failure of a startup that ran out of time. Invalid JSON on stdout
    /// means the answer came but could not be read: a protocol error.
    fn startup_timed_out(&self, raw: &RawWire) -> (FailureReason, String) {
        let limit = self.config.startup_timeout;
        if raw.invalid_lines() > 0 {
            return (
                FailureReason::ProtocolError,
                format!(
                    "no valid answer to initialize and tools/list within {limit:?} (startup_timeout_sec); \
                     the server wrote {} line(s) on stdout that are not valid JSON ({})",
                    raw.invalid_lines(),
                    raw.invalid_summary()
                ),
            );
        }
        (
            FailureReason::StartupTimeout,
            format!("initialize and tools/list did not finish within {limit:?} (startup_timeout_sec)"),
        )
    }

    /// The failure of a server whose process exited before it was ready:
    /// records the exit and quotes the last stderr lines.
    async fn exited_during_startup(
        &self,
        status: std::io::Result<std::process::ExitStatus>,
        drain: &mut tokio::task::JoinHandle<()>,
    ) -> (FailureReason, String) {
        let exit = describe_exit(status);
        self.state
            .send_modify(|state| state.public.last_exit = Some(exit.clone()));
        // Let the stderr reader catch the last words before quoting them.
        let _ = tokio::time::timeout(Duration::from_millis(200), drain).await;
        (
            FailureReason::ProcessExited,
            format!("exited during startup ({exit}){}", self.stderr_suffix()),
        )
    }

    /// Tear a ready server down on purpose and report `stopped`.
    async fn stop_running(&mut self, running: Running) {
        let Running {
            service,
            mut child,
            pid,
        } = running;
        self.teardown_process(Some(service), &mut child, pid).await;
        self.set_status(ServerStatus::Stopped, None);
    }

    /// The bounded teardown of one process tree; records how it ended.
    async fn teardown_process(&mut self, service: Option<Session>, child: &mut Box<dyn ChildWrapper>, pid: u32) {
        let started = Instant::now();
        let leader = if self.leader.pid == pid {
            self.leader
        } else {
            scan::ProcessId { pid, start_time: 0 }
        };
        let stdin_grace = self.teardown.stdin_grace;
        let close_session = async move {
            if let Some(mut service) = service {
                let _ = service.close_with_timeout(stdin_grace).await;
            }
        };
        let exit = teardown(
            close_session,
            child,
            leader,
            &self.marker,
            &self.known_tree,
            self.leaf.as_ref(),
            self.teardown,
        )
        .await;
        reap_adopted(self.processes.clone()).await;
        if let Some(leaf) = self.leaf.take() {
            // After the ladder nothing of the run may stay: kill what is left, remove the leaf.
            let _ = tokio::task::spawn_blocking(move || leaf.kill_and_remove()).await;
        }
        self.processes.leader_gone(pid);
        tracing::info!(server = %self.name, pid, elapsed = ?started.elapsed(), exit = ?exit, "torn down");
        self.state.send_modify(|state| {
            state.public.pid = None;
            state.ready_since = None;
            state.public.tool_count = None;
            state.peer = None;
            state.raw = None;
            state.tools = Arc::new(Vec::new());
            if let Some(exit) = exit {
                state.public.last_exit = Some(exit);
            }
        });
    }

    fn set_status(&self, status: ServerStatus, failure: Option<(FailureReason, String)>) {
        let (reason, error) = match failure {
            Some((reason, error)) => (Some(reason), Some(error)),
            None => (None, None),
        };
        self.state.send_modify(|state| {
            state.public.status = status;
            state.public.failure_reason = reason;
            state.public.error = error.clone();
        });
        let name = self.name.clone();
        self.hub.events.publish(|seq| {
            let mut update = StartupStatusUpdated::new(seq, name, status);
            update.failure_reason = reason;
            update.error = error;
            DaemonNotification::StartupStatusUpdated(update)
        });
    }

    fn fail(&self, reason: FailureReason, error: String) {
        let error = bounded_text(error, MAX_ERROR_TEXT);
        tracing::warn!(server = %self.name, ?reason, "{error}");
        self.set_status(ServerStatus::Failed, Some((reason, error)));
    }

    fn stderr_suffix(&self) -> String {
        let tail = self.stderr.last(5);
        if tail.is_empty() {
            String::new()
        } else {
            format!("; stderr: {}", tail.join(" | "))
        }
    }

    fn last_exit_suffix(&self) -> String {
        let cause = self.last_crash.map(|cause| format!("; it {cause}")).unwrap_or_default();
        match &self.state.borrow().public.last_exit {
            Some(exit) => format!(" (last {exit}){cause}{}", self.stderr_suffix()),
            None => format!("{cause}{}", self.stderr_suffix()),
        }
    }
}

/// Wait, while a server is starting or running, for something that ends the
/// run: a stop or restart command, or the daemon shutting down. A start is
/// already under way, so it is answered at once and waiting goes on.
/// Cancel-safe (used inside `select!`).
async fn next_interruption(commands: &mut mpsc::Receiver<ServerCommand>, shutdown: &CancellationToken) -> RunEnd {
    loop {
        let command = tokio::select! {
            () = shutdown.cancelled() => return RunEnd::Shutdown,
            command = commands.recv() => command,
        };
        match command {
            None => return RunEnd::Shutdown,
            Some(ServerCommand::Stop { reply }) => return RunEnd::Stopped(reply),
            Some(ServerCommand::Restart { reply }) => return RunEnd::Restart(reply),
            Some(ServerCommand::Start { reply }) => {
                let _ = reply.send(());
            }
        }
    }
}

/// What a `ping` says about a streamable-HTTP server that seemed unreachable.
enum Probe {
    Alive,
    SessionExpired,
    Gone(String),
}

/// How long a liveness `ping` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

async fn probe(service: &Session) -> Probe {
    let ping = rmcp::model::ClientRequest::PingRequest(rmcp::model::PingRequest::default());
    match tokio::time::timeout(PROBE_TIMEOUT, service.peer().send_request(ping)).await {
        Ok(Ok(_)) => Probe::Alive,
        Ok(Err(error)) => {
            let failure = http::classify_service(&error);
            if failure.session_expired {
                Probe::SessionExpired
            } else if matches!(error, rmcp::ServiceError::McpError(_)) {
                // It answered, if only with an error: it is there.
                Probe::Alive
            } else {
                Probe::Gone(failure.message)
            }
        }
        Err(_) => Probe::Gone(format!("no answer to ping within {PROBE_TIMEOUT:?}")),
    }
}

/// Whether the config's `enabled_tools` / `disabled_tools` let `tool` through.
pub(crate) fn tool_allowed(config: &ServerConfig, tool: &str) -> bool {
    let enabled = config
        .enabled_tools
        .as_ref()
        .is_none_or(|enabled| enabled.iter().any(|name| name == tool));
    enabled && !config.disabled_tools.iter().any(|name| name == tool)
}

/// How long, once a server's process exit or a closed transport was noticed
/// during startup, the other may take to show: the rest of its stdout to be
/// read, or its exit status to be collected.
const EXIT_NOTICE_GRACE: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let config = corral_protocol::config::parse("[servers.s]\ncommand = \"x\"\n", std::path::Path::new("t.toml"))
            .expect("valid");
        let policy = RestartPolicy::from_config(&config.servers["s"]);
        assert_eq!(policy.backoff(1), Duration::from_millis(500));
        assert_eq!(policy.backoff(2), Duration::from_secs(1));
        assert_eq!(policy.backoff(3), Duration::from_secs(2));
        assert_eq!(policy.backoff(10), Duration::from_secs(30));
        assert_eq!(policy.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn tool_filters_apply_enabled_then_disabled() {
        let text = "[servers.s]\ncommand = \"x\"\nenabled_tools = [\"a\", \"b\"]\ndisabled_tools = [\"b\"]\n";
        let config = corral_protocol::config::parse(text, std::path::Path::new("t.toml")).expect("valid");
        let server = &config.servers["s"];
        assert!(tool_allowed(server, "a"));
        assert!(!tool_allowed(server, "b"), "disabled wins");
        assert!(!tool_allowed(server, "c"), "not in enabled_tools");
    }
}

/// The longest failure message published or logged. It can quote a config value (a session
/// server's `PATH` when its program is not found), which a front-end can make megabytes long;
/// every copy would live in the event history, the broadcast ring and the log.
const MAX_ERROR_TEXT: usize = 4 * 1024;

/// `text` cut to at most `max` bytes (at a character boundary), saying how much was cut.
fn bounded_text(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("… ({cut} more bytes not shown)"));
    text
}

#[cfg(test)]
mod bounded_text_tests {
    use super::bounded_text;

    #[test]
    fn long_messages_are_cut_at_a_character_boundary_saying_so() {
        assert_eq!(bounded_text("short".to_owned(), 10), "short");
        let long = format!("{}é{}", "a".repeat(9), "b".repeat(100));
        let cut = bounded_text(long, 10);
        assert_eq!(
            cut,
            format!("{}… (102 more bytes not shown)", "a".repeat(9)),
            "é is two bytes"
        );
    }
}
