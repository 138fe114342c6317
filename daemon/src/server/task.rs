//! The task of one server: its state machine ([`ServerTask::run`]), one run from start to
//! end ([`ServerTask::run_once`]), and the one ready loop every transport shares.
//!
//! A run starts the server through its transport (stdio: `transport::stdio`'s launch and
//! `Startup`; streamable HTTP: `transport::http`'s `HttpConnection`; in-process:
//! `transport::in_process`), which return a started session or a failure value. The task
//! is the only writer of the server's state: it records the pid, `ready`, the tools, the
//! last exit and the failure from those values. While ready, it waits for [`TaskEvent`]s in
//! one loop; a session ends in one place ([`ServerTask::end_session`]), which also resets
//! the state the session filled in.
//!
//! A start is raced against stop, restart and shutdown (`cancelled`), except an in-process
//! one, which is bounded by the startup timeout alone.
//!
//! A stdio server's era is remembered across its runs: the task keeps the `Opening` that
//! worked (`transport::era`), so a server of MCP 2026-07-28 only is started with
//! `server/discover` from its second run on; one that refused `initialize` and exited is
//! launched once more within the same run, started that way. A session of 2026-07-28 gets
//! its listener (`mcp::modern`) before it is reported ready, so a change it makes after
//! `ready` reaches front-ends; the listener lives as long as the session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_protocol::config::{HttpConfig, OAuthGrant, ServerConfig, StdioConfig, TransportConfig};
use corral_protocol::{
    DaemonNotification, FailureReason, ServerInfo, ServerStatus, StartupStatusUpdated, ToolsListChanged,
};
use rmcp::RoleClient;
use rmcp::model::Tool;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::credentials::{Challenge, CredentialState, Credentials, ServerCredentialStore};
use crate::auth::grants::GrantTokens;
use crate::hub::Hub;
use crate::hub::roots::ClientRoots;
use crate::mcp::classify::HttpFailure;
use crate::mcp::handler::McpClientHandler;
use crate::mcp::modern;
use crate::mcp::tool_catalog::{ToolCatalog, ToolFilter};
use crate::mcp::wire_tee::WireTee;
use crate::process::reaper;
use crate::process::teardown::{TeardownPolicy, describe_exit};
use crate::transport::McpSession;
use crate::transport::era::Opening;
use crate::transport::http::{self, ConnectionSpec, HealthSignal, HttpBackend, HttpConnection, Probe};
use crate::transport::in_process::{self, InProcessFailure, InProcessServer};
use crate::transport::stdio::{LaunchSpec, StartFailure, Started, Startup, StderrTail, launch_process};

use super::policy::{AfterCrash, CrashHistory, RestartPolicy, teardown_policy};
use super::session::{HttpRun, ReadySession, ReadyTransport, Relisting, StdioRun, TaskEvent};
use super::{Autostart, Launcher, ServerCommand, ServerSpec, ServerState};
use crate::mcp::route::{RecoveryRequest, SessionHandle, SessionRecovery};

/// How long closing an in-process session may take.
const IN_PROCESS_CLOSE: Duration = Duration::from_secs(1);

/// How long a server of MCP 2026-07-28 may take to acknowledge its `subscriptions/listen`
/// before it is reported ready anyway (its changes are then seen once it does).
const LISTEN_ACK_WAIT: Duration = Duration::from_secs(5);

/// How long closing a session replaced after it expired may take (bookkeeping only).
const EXPIRED_SESSION_CLOSE: Duration = Duration::from_secs(1);

/// The task of one server.
pub(super) struct ServerTask {
    name: String,
    config: ServerConfig,
    hub: Arc<Hub>,
    state: watch::Sender<ServerState>,
    stderr: StderrTail,
    commands: mpsc::Receiver<ServerCommand>,
    shutdown: CancellationToken,
    teardown: TeardownPolicy,
    restart: RestartPolicy,
    tracker: TaskTracker,
    /// The daemon's process registry (leaders, markers, the record).
    processes: Arc<reaper::Registry>,
    /// How the last crash showed (for the `crashLoop` error).
    last_crash: Option<&'static str>,
    /// Whether the server was ready before (so a new `ready` changes its tools).
    was_ready: bool,
    autostart: Autostart,
    launcher: Launcher,
    /// Stored OAuth credentials (HTTP servers without an explicit `Authorization`).
    credentials: Option<Credentials>,
    /// The roots of the MCP client that started the server for itself, if it declared them.
    client_roots: Option<ClientRoots>,
    /// Moves when that client's roots change: the ready session is told.
    roots_changes: Option<watch::Receiver<u64>>,
    /// How a run of this stdio server opened its session last (`initialize`, or MCP
    /// 2026-07-28's `server/discover`): a server's era is its own, so its next runs start
    /// the same way (`transport::era`).
    stdio_opening: Option<Opening>,
}

/// How one launch of a stdio server ended.
enum StdioStart {
    /// Started, or failed for good (already reported).
    Done(Box<Result<(ReadySession, Vec<Tool>), RunEnd>>),
    /// It refused `initialize` as a server of MCP 2026-07-28 does and exited: launch it
    /// again and start with this.
    Relaunch(Opening),
}

/// How one run of the server (launch to teardown) ended.
#[derive(Debug)]
pub(super) enum RunEnd {
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

impl ServerTask {
    pub(super) fn new(
        spec: ServerSpec,
        state: watch::Sender<ServerState>,
        commands: mpsc::Receiver<ServerCommand>,
        stderr: StderrTail,
        tracker: TaskTracker,
    ) -> Self {
        let ServerSpec {
            config,
            identity: _,
            launcher,
            client_roots,
            autostart,
            hub,
            credentials,
            processes,
            shutdown,
        } = spec;
        Self {
            name: config.name.clone(),
            teardown: teardown_policy(&config),
            restart: RestartPolicy::from_config(&config),
            config,
            hub,
            state,
            stderr,
            commands,
            shutdown,
            tracker,
            processes,
            last_crash: None,
            was_ready: false,
            autostart,
            launcher,
            credentials,
            // Only a client that says when its roots change moves them.
            roots_changes: client_roots
                .as_ref()
                .filter(|roots| roots.list_changed())
                .map(ClientRoots::changes),
            client_roots,
            stdio_opening: None,
        }
    }

    /// The state machine: start when asked (or at once), restart after a crash with
    /// backoff, give up after too many crashes, stop on request, end with the daemon.
    pub(super) async fn run(mut self) {
        let mut want_running = self.autostart == Autostart::IfEnabled && self.config.enabled;
        let mut pending_reply: Option<oneshot::Sender<()>> = None;
        let mut crashes = CrashHistory::default();
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
                        crashes.clear();
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
                    let delay = match crashes.record(&self.restart, ready_for, Instant::now()) {
                        AfterCrash::Restart(delay) => delay,
                        AfterCrash::CrashLoop(count) => {
                            let error = format!(
                                "`{}` crashed {count} times within {:?}; not restarting it until it is started again{}",
                                self.name,
                                self.restart.crash_window,
                                self.last_exit_suffix()
                            );
                            self.fail(FailureReason::CrashLoop, error);
                            want_running = false;
                            continue;
                        }
                    };
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

    /// Start, serve until something ends it, end the session.
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
        // The new session asks for the client's roots as they are now: only
        // later changes are news to it.
        if let Some(changes) = &mut self.roots_changes {
            changes.borrow_and_update();
        }
        let (tools_changed, tools_changed_rx) = mpsc::channel(1);
        let started = if let Launcher::InProcess(server) = &self.launcher {
            let server = server.clone();
            self.start_in_process(server.as_ref()).await
        } else {
            match self.config.transport.clone() {
                TransportConfig::Stdio(config) => self.start_stdio(&config, tools_changed).await,
                TransportConfig::StreamableHttp(config) => self.start_http(&config, tools_changed).await,
            }
        };
        match started {
            Ok((session, tools)) => self.serve(session, tools, tools_changed_rx).await,
            Err(end) => end,
        }
    }

    /// Launch a stdio server and run its startup over the tee'd pipes, opening the session
    /// the way it worked in an earlier run of this server (else with `initialize`); launched
    /// once more when it refused `initialize` as a server of MCP 2026-07-28 only does and
    /// exited before the start its refusal pointed to.
    async fn start_stdio(
        &mut self,
        config: &StdioConfig,
        tools_changed: mpsc::Sender<()>,
    ) -> Result<(ReadySession, Vec<Tool>), RunEnd> {
        let mut opening = self.stdio_opening.clone().unwrap_or_else(Opening::handshake);
        let mut relaunched = false;
        loop {
            match self.start_stdio_once(config, tools_changed.clone(), opening).await {
                StdioStart::Done(result) => return *result,
                StdioStart::Relaunch(next) if !relaunched => {
                    tracing::info!(
                        server = %self.name,
                        next = %next,
                        "the server refused initialize as a server of MCP 2026-07-28 does, then exited; launching it again"
                    );
                    relaunched = true;
                    opening = next;
                }
                StdioStart::Relaunch(next) => {
                    self.fail(
                        FailureReason::ProtocolError,
                        format!(
                            "`{}`: exited twice before its start ({next}) was answered{}",
                            self.name,
                            self.stderr_suffix()
                        ),
                    );
                    return Err(RunEnd::StartupFailed);
                }
            }
        }
    }

    /// One launch of a stdio server and its startup, opening the session with `opening`.
    async fn start_stdio_once(
        &mut self,
        config: &StdioConfig,
        tools_changed: mpsc::Sender<()>,
        opening: Opening,
    ) -> StdioStart {
        let launched = launch_process(LaunchSpec {
            name: &self.name,
            config,
            processes: &self.processes,
            stderr: &self.stderr,
            tracker: &self.tracker,
        })
        .await;
        let (mut process, pipes) = match launched {
            Ok(launched) => launched,
            Err((reason, error)) => {
                self.fail(reason, format!("`{}`: {error}", self.name));
                return StdioStart::Done(Box::new(Err(RunEnd::StartupFailed)));
            }
        };
        let pid = process.pid();
        self.state.send_modify(|state| state.public.pid = Some(pid));
        let handler = McpClientHandler::new(self.name.clone(), self.hub.clone(), tools_changed)
            .with_roots(self.config.roots.as_deref())
            .with_client_roots(self.client_roots.clone())
            .progress_from_wire();
        let raw = Arc::new(WireTee::new(&self.name, self.hub.routes.clone(), self.tracker.clone()));
        let stdout_closed = raw.stdout_closed();
        let mut startup = Startup::new(pipes, handler, raw.clone(), self.config.startup_timeout, opening);
        let outcome = tokio::select! {
            // Biased: what the startup saw wins over a command noticed in the same poll.
            biased;
            outcome = startup.run(&mut process) => outcome,
            end = next_interruption(&mut self.commands, &self.shutdown) => {
                self.set_status(ServerStatus::Cancelled, None);
                drop(startup); // closes the child's stdin: the first teardown step
                let exit = process.teardown(None, self.teardown).await;
                self.forget_session(exit);
                return StdioStart::Done(Box::new(Err(end)));
            }
        };
        let outcome = match outcome {
            Err(failure) => Err(startup.explain(&mut process, failure).await),
            ready => ready,
        };
        let outcome = match outcome {
            Ok(ready) => Ok(ready),
            Err(StartFailure::Exited(status)) => {
                let exit = describe_exit(status);
                self.state
                    .send_modify(|state| state.public.last_exit = Some(exit.clone()));
                // Let the stderr reader catch the last words before quoting them.
                process.last_words().await;
                Err((
                    FailureReason::ProcessExited,
                    format!("exited during startup ({exit}){}", self.stderr_suffix()),
                ))
            }
            Err(StartFailure::Failed(reason, error)) => Err((reason, error)),
            Err(StartFailure::Relaunch(next)) => {
                drop(startup);
                let exit = process.teardown(None, self.teardown).await;
                self.forget_session(exit);
                return StdioStart::Relaunch(next);
            }
        };
        drop(startup); // closes the child's stdin unless the session now owns it
        StdioStart::Done(Box::new(match outcome {
            Ok(Started {
                session: service,
                tools,
                opening,
            }) => {
                // The server's era is the server's: its next runs start the way this one did.
                self.stdio_opening = Some(opening);
                let transport = ReadyTransport::Stdio(StdioRun {
                    process,
                    stdout_closed,
                    raw,
                });
                Ok((ReadySession { service, transport }, tools))
            }
            Err((reason, error)) => {
                let exit = process.teardown(None, self.teardown).await;
                self.forget_session(exit);
                self.fail(reason, format!("`{}`: {error}", self.name));
                Err(RunEnd::StartupFailed)
            }
        }))
    }

    /// Open the first session of a streamable-HTTP server, with its stored credentials.
    async fn start_http(
        &mut self,
        config: &HttpConfig,
        tools_changed: mpsc::Sender<()>,
    ) -> Result<(ReadySession, Vec<Tool>), RunEnd> {
        let (backend, prepared, had_credentials) = match self.http_backend(config).await {
            Ok(chosen) => chosen,
            Err(failure) => return Err(self.http_failed(failure)),
        };
        let name = self.name.clone();
        let hub = self.hub.clone();
        let roots = self.config.roots.clone();
        let client_roots = self.client_roots.clone();
        let (connection, health) = HttpConnection::new(ConnectionSpec {
            name: self.name.clone(),
            backend,
            prepared,
            handler: Box::new(move || {
                McpClientHandler::new(name.clone(), hub.clone(), tools_changed.clone())
                    .with_roots(roots.as_deref())
                    .with_client_roots(client_roots.clone())
            }),
            had_credentials,
            grant: config.oauth_grant.as_deref().map(OAuthGrant::name),
            startup_timeout: self.config.startup_timeout,
        });
        let outcome = tokio::select! {
            outcome = connection.start() => outcome,
            end = next_interruption(&mut self.commands, &self.shutdown) => {
                self.set_status(ServerStatus::Cancelled, None);
                return Err(end);
            }
        };
        let (service, tools) = match outcome {
            Ok(ready) => ready,
            Err(failure) => return Err(self.http_failed(failure)),
        };
        let (recovery_tx, recovery) = mpsc::channel::<RecoveryRequest>(16);
        let mut run = HttpRun {
            connection,
            health,
            recovery,
            recovery_tx,
            generation: 0,
        };
        // Trouble seen while connecting is behind us.
        run.forget_health();
        let transport = ReadyTransport::Http(run);
        Ok((ReadySession { service, transport }, tools))
    }

    /// The HTTP client of a run: OAuth-managed with the stored credentials (never for a
    /// server whose config sets `Authorization` itself), else plain; the resolved headers;
    /// and whether stored credentials are used.
    async fn http_backend(&self, config: &HttpConfig) -> Result<(HttpBackend, http::Prepared, bool), HttpFailure> {
        let prepared = http::prepare(&self.name, config, |name| std::env::var_os(name))?;
        let backend = HttpBackend::plain()?;
        let store = match &self.credentials {
            Some(credentials) if !prepared.has_explicit_authorization() => {
                Some(credentials.for_server(&self.name, &config.url))
            }
            _ => None,
        };
        if let (Some(grant), HttpBackend::Plain(client)) = (config.oauth_grant.as_deref(), &backend)
            && !prepared.has_explicit_authorization()
        {
            let source = self.grant_tokens(config, grant, store).await?;
            let backend = HttpBackend::Token(http::TokenClient {
                inner: client.clone(),
                source,
            });
            return Ok((backend, prepared, true));
        }
        let (store, client) = match (store, backend) {
            (Some(store), HttpBackend::Plain(client)) => (store, client),
            (_, backend) => return Ok((backend, prepared, false)),
        };
        match store.state().await {
            Err(error) => {
                let message = format!("cannot read the stored OAuth credentials: {error:#}");
                Err(HttpFailure::new(FailureReason::ConfigInvalid, message))
            }
            Ok(CredentialState::Missing) => Ok((HttpBackend::Plain(client), prepared, false)),
            Ok(_) => {
                let restore = crate::auth::oauth::auth_client(config, &store, client.clone());
                match tokio::time::timeout(self.config.startup_timeout, restore).await {
                    Ok(Ok(Some(backend))) => Ok((backend, prepared, true)),
                    Ok(Ok(None)) => {
                        // What rmcp kept but cannot use asks for a login again; what it deleted
                        // (bound to a former authorization server) for a first one.
                        let kept = !matches!(store.state().await, Ok(CredentialState::Missing));
                        Ok((HttpBackend::Plain(client), prepared, kept))
                    }
                    Ok(Err(error)) => Err(HttpFailure::new(FailureReason::Unreachable, format!("{error:#}"))),
                    Err(_) => Err(HttpFailure::new(
                        FailureReason::StartupTimeout,
                        "OAuth metadata discovery did not finish within startup_timeout_sec",
                    )),
                }
            }
        }
    }

    /// The token source of a server with a grant for machines, holding its first token: a grant
    /// that fails fails the start, with the grant's own words (within `startup_timeout_sec`).
    async fn grant_tokens(
        &self,
        config: &HttpConfig,
        grant: &OAuthGrant,
        store: Option<ServerCredentialStore>,
    ) -> Result<Arc<dyn http::TokenSource>, HttpFailure> {
        let tokens = GrantTokens::new(&self.name, config, grant.clone(), store)
            .map_err(|error| HttpFailure::new(error.reason, error.message))?;
        match tokio::time::timeout(self.config.startup_timeout, tokens.token()).await {
            Ok(Ok(_)) => Ok(Arc::new(tokens)),
            Ok(Err(error)) => Err(HttpFailure::new(error.reason, error.message)),
            Err(_) => Err(HttpFailure::new(
                FailureReason::StartupTimeout,
                format!("the {} grant did not finish within startup_timeout_sec", grant.name()),
            )),
        }
    }

    /// Report a failed start of a streamable-HTTP server. The challenge of a 401 or a 403
    /// `insufficient_scope` is noted for the next login, which asks for its scope; a missing
    /// scope says how to get it (a step-up may already have started, `api::handlers::auth`).
    fn http_failed(&self, failure: HttpFailure) -> RunEnd {
        let HttpFailure {
            reason,
            mut message,
            challenge,
            ..
        } = failure;
        if let (Some(challenge), Some(credentials), TransportConfig::StreamableHttp(http)) =
            (challenge, &self.credentials, &self.config.transport)
        {
            credentials
                .for_server(&self.name, &http.url)
                .note_challenge(Challenge::from_header(&challenge, &http.url));
        }
        if reason == FailureReason::InsufficientScope {
            message.push_str(&format!(
                "; `corral login {}` asks for it with the scopes granted so far",
                self.name
            ));
        }
        self.fail(reason, format!("`{}`: {message}", self.name));
        RunEnd::StartupFailed
    }

    /// Start an in-process server (the built-in one) over an in-memory duplex.
    async fn start_in_process(&mut self, server: &dyn InProcessServer) -> Result<(ReadySession, Vec<Tool>), RunEnd> {
        // The built-in's tools never change: nobody listens for that.
        let (tools_changed, _) = mpsc::channel(1);
        let handler = McpClientHandler::new(self.name.clone(), self.hub.clone(), tools_changed);
        let started = in_process::start(server, handler, &self.tracker, self.config.startup_timeout).await;
        match started {
            Ok(started) => {
                let transport = ReadyTransport::InProcess(started.server);
                let session = ReadySession {
                    service: started.service,
                    transport,
                };
                Ok((session, started.tools))
            }
            Err(InProcessFailure::Protocol(error)) => {
                self.fail(
                    FailureReason::ProtocolError,
                    format!("built-in server `{}`: {error}", self.name),
                );
                Err(RunEnd::StartupFailed)
            }
            Err(InProcessFailure::TimedOut) => {
                self.fail(
                    FailureReason::StartupTimeout,
                    format!("built-in server `{}` did not start", self.name),
                );
                Err(RunEnd::StartupFailed)
            }
        }
    }

    /// Report `ready`, then serve until the run ends: the one ready loop of every transport.
    async fn serve(
        &mut self,
        mut session: ReadySession,
        tools: Vec<Tool>,
        mut tools_changed: mpsc::Receiver<()>,
    ) -> RunEnd {
        // The list was just fetched: changes announced during startup are in it.
        while tools_changed.try_recv().is_ok() {}
        let (pid, recovery) = match &session.transport {
            ReadyTransport::Stdio(run) => (Some(run.process.pid()), None),
            ReadyTransport::Http(run) => {
                let recovery = SessionRecovery {
                    generation: run.generation,
                    requests: run.recovery_tx.clone(),
                };
                (None, Some(recovery))
            }
            ReadyTransport::InProcess(_) => (None, None),
        };
        let wire = session.wire().cloned();
        let listing = wire.as_deref().and_then(WireTee::take_listing);
        let catalog = ToolCatalog::build(ToolFilter::of(&self.config), tools, listing);
        let handle = SessionHandle::new(
            session.service.peer().clone(),
            Arc::new(catalog),
            wire,
            recovery,
            session.service.service().clone(),
        );
        // A server of MCP 2026-07-28 says what changed only on a stream corrald asks for:
        // opened before the server is reported ready, so no change after `ready` is missed.
        let mut listening = modern::listen(session.service.peer(), session.service.service(), &self.tracker);
        if let Some(listening) = &mut listening {
            listening
                .first_stream(self.config.startup_timeout.min(LISTEN_ACK_WAIT))
                .await;
        }
        self.mark_ready(&session.service, handle, pid);
        match &mut session.transport {
            ReadyTransport::Stdio(run) => run.process.remember_tree().await,
            ReadyTransport::Http(_) => tracing::info!(server = %self.name, "streamable HTTP session ready"),
            ReadyTransport::InProcess(_) => {}
        }

        // One listing at a time, so at most one result waits here.
        let (relisted_tx, mut relisted) = mpsc::channel(1);
        let mut relisting = Relisting::default();
        let end = loop {
            let event = tokio::select! {
                biased;
                event = session.transport_event() => event,
                end = next_interruption(&mut self.commands, &self.shutdown) => TaskEvent::Interrupted(end),
                Some(()) = tools_changed.recv() => TaskEvent::ToolsChanged,
                Some(listed) = relisted.recv() => TaskEvent::Relisted(listed),
                () = roots_changed(&mut self.roots_changes) => TaskEvent::RootsChanged,
            };
            // Why the server is gone, if it is.
            let gone: Option<String> = match event {
                TaskEvent::Interrupted(end) => break end,
                TaskEvent::ToolsChanged => {
                    if relisting.changed() {
                        self.relist(&session, &relisted_tx);
                    }
                    None
                }
                TaskEvent::Relisted(listed) => {
                    self.apply_refreshed_tools(listed);
                    if relisting.finished() {
                        self.relist(&session, &relisted_tx);
                    }
                    None
                }
                TaskEvent::RootsChanged => {
                    self.tell_roots_changed(session.service.peer());
                    None
                }
                TaskEvent::ProcessExited(status) => {
                    let exit = describe_exit(status);
                    tracing::warn!(server = %self.name, pid, %exit, "server process exited");
                    self.state.send_modify(|state| state.public.last_exit = Some(exit));
                    let ready_for = self.ready_for();
                    self.end_session(session).await;
                    return RunEnd::Crashed { ready_for, cause: None };
                }
                TaskEvent::StdoutClosed => {
                    // The MCP transport is gone: every request would fail. A
                    // process that runs on is torn down like a crashed one.
                    tracing::warn!(server = %self.name, pid, "server closed its stdout (the MCP transport); tearing it down");
                    let ready_for = self.ready_for();
                    self.end_session(session).await;
                    return RunEnd::Crashed {
                        ready_for,
                        cause: Some("closed its stdout (the MCP transport) and was torn down"),
                    };
                }
                TaskEvent::Health(signal) => {
                    let ReadySession { service, transport } = &mut session;
                    let ReadyTransport::Http(run) = transport else {
                        continue;
                    };
                    match signal {
                        HealthSignal::Unreachable => match http::probe(service).await {
                            Probe::Alive => None,
                            Probe::SessionExpired => self.renew_http_session(run, service).await.err(),
                            Probe::Gone(why) => Some(why),
                        },
                        HealthSignal::SessionExpired => self.renew_http_session(run, service).await.err(),
                        HealthSignal::AuthRequired => {
                            // The token was rejected and could not be refreshed (or the refresh
                            // token was): retrying would only repeat it. Fail until a new login.
                            let failure = run.connection.authentication_required();
                            self.end_session(session).await;
                            self.fail(failure.reason, format!("`{}`: {}", self.name, failure.message));
                            return RunEnd::StartupFailed;
                        }
                    }
                }
                TaskEvent::Recovery(request) => {
                    let ReadySession { service, transport } = &mut session;
                    let ReadyTransport::Http(run) = transport else {
                        continue;
                    };
                    if request.generation != run.generation {
                        // Someone else already replaced that session.
                        let _ = request.reply.send(Ok(service.peer().clone()));
                        None
                    } else {
                        match self.renew_http_session(run, service).await {
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
            if let Some(why) = gone {
                tracing::warn!(server = %self.name, "the server went away: {why}");
                let ready_for = self.ready_for();
                self.end_session(session).await;
                self.state
                    .send_modify(|state| state.public.last_exit = Some(format!("went away: {why}")));
                return RunEnd::Crashed { ready_for, cause: None };
            }
        };
        // A stdio server's teardown reports `stopped` even when the daemon shuts down;
        // the others are left as they were then.
        let report_stopped = !matches!(end, RunEnd::Shutdown) || matches!(session.transport, ReadyTransport::Stdio(_));
        self.end_session(session).await;
        if report_stopped {
            self.set_status(ServerStatus::Stopped, None);
        }
        end
    }

    /// How long the server has been ready.
    fn ready_for(&self) -> Duration {
        self.state
            .borrow()
            .ready_since
            .map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// Re-list the tools after the server said they changed, in a task of its own: a server
    /// that never answers must not keep the ready loop from stopping or noticing a crash.
    /// Within `tool_timeout_sec`; over streamable HTTP retried after transient failures.
    /// The catalog is built there too, as soon as the listing is complete: rmcp's typed
    /// tools joined with the same listing as the server wrote it, if the wire saw it.
    fn relist(&self, session: &ReadySession, relisted: &mpsc::Sender<Result<ToolCatalog, String>>) {
        let peer = session.service.peer().clone();
        let timeout = self.config.tool_timeout;
        let relisted = relisted.clone();
        let name = self.name.clone();
        let over_http = session.is_http();
        let wire = session.wire().cloned();
        let filter = ToolFilter::of(&self.config);
        self.tracker.spawn(async move {
            let listed = if over_http {
                let deadline = tokio::time::Instant::now() + timeout;
                match tokio::time::timeout_at(deadline, http::list_tools(&name, &peer, deadline)).await {
                    Ok(Ok(tools)) => Ok(tools),
                    Ok(Err(failure)) => Err(failure.message),
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                }
            } else {
                match tokio::time::timeout(timeout, peer.list_all_tools()).await {
                    Ok(Ok(tools)) => Ok(tools),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                }
            };
            let catalog = listed.map(|tools| {
                let listing = wire.as_deref().and_then(WireTee::take_listing);
                ToolCatalog::build(filter, tools, listing)
            });
            let _ = relisted.send(catalog).await;
        });
    }

    /// Take the tools re-listed after the server said they changed, and tell front-ends.
    fn apply_refreshed_tools(&self, listed: Result<ToolCatalog, String>) {
        let catalog = match listed {
            Ok(catalog) => Arc::new(catalog),
            Err(error) => {
                tracing::warn!(server = %self.name, %error, "re-listing tools after list_changed failed");
                return;
            }
        };
        let count = u32::try_from(catalog.len()).unwrap_or(u32::MAX);
        self.state.send_modify(|state| {
            state.public.tool_count = Some(count);
            if let Some(session) = state.session.as_mut() {
                Arc::make_mut(session).set_catalog(catalog);
            }
        });
        let name = self.name.clone();
        self.hub
            .events
            .publish(|seq| DaemonNotification::ToolsListChanged(ToolsListChanged::new(seq, name, count)));
    }

    /// The client that started the server said its roots changed: tell the
    /// server (`notifications/roots/list_changed`), in the background and
    /// within `tool_timeout_sec`, so a server that does not read never holds
    /// the ready loop. It asks again for them (`roots/list`), which the
    /// client answers afresh.
    /// A server of MCP 2026-07-28 is not told: it holds no roots between requests, and asks
    /// for them in the answer to the request that needs them (`input_required`).
    fn tell_roots_changed(&self, peer: &rmcp::Peer<RoleClient>) {
        if modern::is_modern(peer) {
            return;
        }
        let (name, peer, timeout) = (self.name.clone(), peer.clone(), self.config.tool_timeout);
        self.tracker.spawn(async move {
            match tokio::time::timeout(timeout, peer.notify_roots_list_changed()).await {
                Ok(Ok(())) => tracing::debug!(server = %name, "told the server its client's roots changed"),
                Ok(Err(error)) => tracing::warn!(server = %name, %error, "cannot tell the server its roots changed"),
                Err(_) => tracing::warn!(server = %name, "telling the server its roots changed timed out"),
            }
        });
    }

    /// A new session of the server knows nothing of the resource
    /// subscriptions front-ends hold: subscribe again, in the background.
    /// (A server of MCP 2026-07-28 has no `resources/subscribe`: its listener asks for them.)
    fn renew_subscriptions(&self, peer: &rmcp::Peer<RoleClient>) {
        let uris = self.hub.routes.subscriptions(&self.name);
        if uris.is_empty() || modern::is_modern(peer) {
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

    /// Record a session that finished `initialize` and `tools/list` (`handle`: the way in
    /// to it, with its tool catalog), report `ready`, and (if it was ready before) that its
    /// tools changed.
    fn mark_ready(&mut self, service: &McpSession, handle: SessionHandle, pid: Option<u32>) {
        let tool_count = u32::try_from(handle.tool_count()).unwrap_or(u32::MAX);
        let server_info = service.peer_info().map(|info| {
            let implementation = info.server_info.clone().unwrap_or_default();
            ServerInfo::new(
                implementation.name,
                implementation.version,
                implementation.title,
                Some(info.protocol_version.to_string()),
            )
        });
        self.renew_subscriptions(service.peer());
        self.state.send_modify(|state| {
            state.public.tool_count = Some(tool_count);
            state.public.server_info = server_info;
            state.ready_since = Some(Instant::now());
            state.session = Some(Arc::new(handle));
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

    /// Replace an expired session with a new one ([`HttpConnection::renew`]). On success,
    /// front-ends get the new peer and what the old session reported is forgotten; on
    /// failure, why.
    async fn renew_http_session(&self, run: &mut HttpRun, service: &mut McpSession) -> Result<(), String> {
        let renewed = run.connection.renew().await?;
        let old = std::mem::replace(service, renewed);
        run.generation += 1;
        let peer = service.peer().clone();
        let generation = run.generation;
        // The new session knows nothing of the front-ends' resource subscriptions.
        self.renew_subscriptions(&peer);
        let recovery = SessionRecovery {
            generation,
            requests: run.recovery_tx.clone(),
        };
        self.state.send_modify(|state| {
            if let Some(session) = state.session.as_mut() {
                Arc::make_mut(session).set_renewed(peer, recovery);
            }
        });
        // The old session is gone on the server; closing it here is bookkeeping.
        self.tracker.spawn(async move {
            let mut old = old;
            let _ = old.close_with_timeout(EXPIRED_SESSION_CLOSE).await;
        });
        tracing::info!(server = %self.name, generation, "new session after the old one expired");
        // What the old session reported is about the old session.
        run.forget_health();
        Ok(())
    }

    /// End a session (a stdio server's bounded teardown, closing an HTTP or in-process
    /// session) and forget it.
    async fn end_session(&mut self, session: ReadySession) {
        let ReadySession { mut service, transport } = session;
        let exit = match transport {
            ReadyTransport::Stdio(run) => run.process.teardown(Some(service), self.teardown).await,
            ReadyTransport::Http(_) => {
                let _ = service.close_with_timeout(self.teardown.stdin_grace).await;
                None
            }
            ReadyTransport::InProcess(server) => {
                let _ = service.close_with_timeout(IN_PROCESS_CLOSE).await;
                drop(server);
                None
            }
        };
        self.forget_session(exit);
    }

    /// Forget the session of a run that ended (and record how its process ended, if that
    /// was seen): the one place the state a session filled in is reset.
    fn forget_session(&self, exit: Option<String>) {
        self.state.send_modify(|state| {
            state.clear_session();
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
        let name = self.name.clone();
        // Published while the new state is written (the watch's lock held): whoever
        // reads the state and finds it new finds its notification already published,
        // so a front-end's answer that shows a status never overtakes the
        // notification of it (`api/connection.rs`), and a front-end that gets the
        // notification and asks finds the new state.
        self.state.send_modify(|state| {
            state.public.status = status;
            state.public.failure_reason = reason;
            state.public.error = error.clone();
            self.hub.events.publish(|seq| {
                let mut update = StartupStatusUpdated::new(seq, name, status);
                update.failure_reason = reason;
                update.error = error;
                DaemonNotification::StartupStatusUpdated(update)
            });
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

/// Wait until the client's roots change (never, for a server that does not
/// get its client's roots, or once the client's link is gone). Cancel-safe
/// (used inside `select!`).
async fn roots_changed(changes: &mut Option<watch::Receiver<u64>>) {
    if let Some(changes) = changes
        && changes.changed().await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await;
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
mod tests {
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
