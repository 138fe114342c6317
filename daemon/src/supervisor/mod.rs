//! The supervisor: one actor that owns the registry of MCP servers.
//!
//! Everything else in the daemon holds a cheap [`SupervisorHandle`] and sends
//! it `Command`s; replies come back on oneshot channels. There is no shared
//! mutable server state behind locks: the actor's `run` loop is the only code
//! that reads or changes the registry, so a status snapshot is always
//! consistent.
//!
//! The registry holds config servers, session servers (added by a
//! front-end, with that connection as their owner, removed when it closes;
//! an MCP client's own servers get its roots, `hub::roots`, which no config
//! server ever gets) and the built-in one, which boot injects as an `InProcessServer`. The
//! handle's channel is bounded (256 commands) and replies come on oneshots.
//!
//! Invariant: the actor never waits on a server. Commands to server tasks
//! are `try_send`; a caller that wants to wait (stop, restart, remove) gets a
//! oneshot the server task fires, and waits on it outside the actor. A full
//! server queue (16 commands) refuses a control command with [`ServerBusy`]
//! (`serverBusy`); only a closed one means the daemon is stopping.
//! Snapshots (`mcpServer/list|get`, `counts`) read each task's `watch` of its
//! state, so they are consistent and never ask a task anything.
//!
//! Requests for a server (`call_target`, `targets`) do not ask the actor at
//! all: it publishes the registry's routes (each server's config and the
//! `watch` of its state) into a `watch` of its own whenever the registry
//! changes, and the handle reads them on the caller's task. A call to a ready
//! server costs two uncontended read locks and a few reference counts, not a
//! round trip through the actor's queue; the actor stays the registry's one
//! writer, and a wedged actor holds up no call.
//!
//! What a reloaded config file means (start, stop, restart, keep, refuse) is
//! decided by a pure function, `plan::plan` (`plan.rs`), and only carried out
//! here: a changed entry is stopped in place (it stays listed, `stopped`)
//! and replaced once stopped; until its old tree is gone the name stays
//! reserved (`pending_starts`), so old and new never run together.
//!
//! `Wedge` is a test hook (`debug/wedgeSupervisor`, only with
//! `--enable-test-hooks`) that makes the actor stop answering until released.

mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;

use corral_protocol::config::{Config, ServerConfig, TransportConfig};
use corral_protocol::{McpServerStatus, ServerCounts, ServerOrigin, ServerStatus, TransportKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::auth::credentials::Credentials;
use crate::hub::Hub;
use crate::hub::roots::ClientRoots;
use crate::mcp::route::{CallTarget, NotAvailable, TargetSet};
use crate::process::reaper::Registry;
use crate::server::{self, Launcher, ServerCommand, ServerHandle, ServerSpec, ServerState};
use crate::transport::in_process::InProcessServer;
pub use plan::ConfigDiff;
use plan::Plan;

/// Commands the supervisor accepts: a closed set, handled one at a time.
#[derive(Debug)]
enum Command {
    List {
        reply: oneshot::Sender<Vec<McpServerStatus>>,
    },
    Get {
        name: String,
        reply: oneshot::Sender<Option<McpServerStatus>>,
    },
    Counts {
        reply: oneshot::Sender<ServerCounts>,
    },
    Control {
        name: String,
        action: ControlAction,
        reply: oneshot::Sender<Option<Result<oneshot::Receiver<()>, ServerBusy>>>,
    },
    Add {
        config: Box<ServerConfig>,
        owner: u64,
        roots: Option<ClientRoots>,
        reply: oneshot::Sender<Result<(), RegistryRefusal>>,
    },
    Remove {
        name: String,
        owner: u64,
        reply: oneshot::Sender<Result<oneshot::Receiver<()>, RegistryRefusal>>,
    },
    SessionClosed {
        owner: u64,
    },
    /// A removed server's task finished its teardown: its name is free again.
    Forgotten {
        name: String,
    },
    /// A new config file was loaded and validated: bring the config servers in line with it.
    ApplyConfig {
        config: Box<Config>,
        reply: oneshot::Sender<ConfigDiff>,
    },
    /// A changed config server has stopped: replace it with its new entry.
    Replace {
        name: String,
    },
    /// Test hook (`debug/wedgeSupervisor`): stop handling commands until `release` is cancelled.
    Wedge {
        release: CancellationToken,
    },
    /// The config of one server, or of all (`None`), in name order.
    Configs {
        server: Option<String>,
        reply: oneshot::Sender<Vec<ServerConfig>>,
    },
}

/// Why the registry refused an add or a remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryRefusal {
    /// No server of that name.
    NotFound,
    /// A server of that name already exists.
    Exists,
    /// The server is not the caller's to remove.
    NotPermitted(&'static str),
    /// A server of that name was removed and is still being torn down.
    StillStopping,
}

/// What `mcpServer/start|stop|restart` ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    /// Start if not running.
    Start,
    /// Stop and stay stopped.
    Stop,
    /// Stop if running, then start.
    Restart,
}

/// A server's command queue is full: too many control commands for it are
/// waiting. Nothing was done; the caller may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerBusy;

/// The supervisor stopped (daemon shutting down); the caller should give up.
#[derive(Debug, Clone, Copy)]
pub struct SupervisorStopped;

impl std::fmt::Display for SupervisorStopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the supervisor has stopped: corrald is shutting down")
    }
}

impl std::error::Error for SupervisorStopped {}

/// Cloneable handle to the supervisor actor.
#[derive(Debug, Clone)]
pub struct SupervisorHandle {
    commands: mpsc::Sender<Command>,
    /// The registry as requests need it (`Routes`), as the actor last published it.
    routes: watch::Receiver<Arc<Routes>>,
}

impl SupervisorHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, SupervisorStopped> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(make(reply)).await.map_err(|_| SupervisorStopped)?;
        answer.await.map_err(|_| SupervisorStopped)
    }

    /// Status of every server, sorted by name.
    pub async fn list(&self) -> Result<Vec<McpServerStatus>, SupervisorStopped> {
        self.ask(|reply| Command::List { reply }).await
    }

    /// Status of one server.
    pub async fn get(&self, name: String) -> Result<Option<McpServerStatus>, SupervisorStopped> {
        self.ask(|reply| Command::Get { name, reply }).await
    }

    /// Servers by status.
    pub async fn counts(&self) -> Result<ServerCounts, SupervisorStopped> {
        self.ask(|reply| Command::Counts { reply }).await
    }

    /// Add a server owned by session `owner`, answered `roots/list` with
    /// `roots` (the roots of the MCP client on that session, when it declared
    /// them) rather than its config's. It waits for a start command.
    pub(crate) async fn add(
        &self,
        config: ServerConfig,
        owner: u64,
        roots: Option<ClientRoots>,
    ) -> Result<Result<(), RegistryRefusal>, SupervisorStopped> {
        self.ask(|reply| Command::Add {
            config: Box::new(config),
            owner,
            roots,
            reply,
        })
        .await
    }

    /// Stop and remove a server session `owner` added; returns once its processes are gone.
    pub async fn remove(&self, name: String, owner: u64) -> Result<Result<(), RegistryRefusal>, SupervisorStopped> {
        match self.ask(|reply| Command::Remove { name, owner, reply }).await? {
            Ok(done) => done.await.map(Ok).map_err(|_| SupervisorStopped),
            Err(refusal) => Ok(Err(refusal)),
        }
    }

    /// Every ready server, or `server` (which must be ready). Read from the
    /// published routes, on the caller's task: no round trip to the actor.
    pub fn targets(&self, server: Option<&str>) -> Result<Result<TargetSet, NotAvailable>, SupervisorStopped> {
        self.with_routes(|routes| routes.targets(server))
    }

    /// Where to send a request for `server`, if it is ready. Read from the
    /// published routes, on the caller's task: no round trip to the actor.
    pub fn call_target(&self, server: &str) -> Result<Result<CallTarget, NotAvailable>, SupervisorStopped> {
        self.with_routes(|routes| match routes.servers.get(server) {
            None => Err(NotAvailable::NotFound),
            Some(route) => ready_target(&route.config, &route.state),
        })
    }

    /// `read` the routes the actor published last; `SupervisorStopped` once it has stopped.
    fn with_routes<T>(&self, read: impl FnOnce(&Routes) -> T) -> Result<T, SupervisorStopped> {
        // One atomic load: the actor dropped its sender when it stopped.
        if self.routes.has_changed().is_err() {
            return Err(SupervisorStopped);
        }
        Ok(read(&self.routes.borrow()))
    }

    /// The config of `server` (empty if unknown), or of every server, in name order.
    pub async fn configs(&self, server: Option<String>) -> Result<Vec<ServerConfig>, SupervisorStopped> {
        self.ask(|reply| Command::Configs { server, reply }).await
    }

    /// Session `owner` ended: stop and remove every server it added.
    pub async fn session_closed(&self, owner: u64) {
        // Nothing to do if the daemon is already stopping: shutdown tears everything down.
        let _ = self.commands.send(Command::SessionClosed { owner }).await;
    }

    /// Bring the config servers in line with a newly loaded `config`: only what
    /// changed is touched. Returns at once (teardowns go on in the background).
    pub async fn apply_config(&self, config: Config) -> Result<ConfigDiff, SupervisorStopped> {
        self.ask(|reply| Command::ApplyConfig {
            config: Box::new(config),
            reply,
        })
        .await
    }

    /// Test hook: make the actor stop answering until `release` is cancelled
    /// (or the daemon shuts down), as a deadlocked supervisor would.
    pub fn wedge(&self, release: CancellationToken) -> Result<(), SupervisorStopped> {
        self.commands
            .try_send(Command::Wedge { release })
            .map_err(|_| SupervisorStopped)
    }

    /// Start, stop or restart a server; `Ok(None)` if there is no such server.
    ///
    /// Returns once the server task has done what it replies after (see
    /// [`ControlAction`]): `starting` for start, processes gone for stop.
    ///
    /// `Ok(None)`: no such server; `Ok(Some(Err(ServerBusy)))`: its command
    /// queue is full and the command was not taken.
    pub async fn control(
        &self,
        name: String,
        action: ControlAction,
    ) -> Result<Option<Result<(), ServerBusy>>, SupervisorStopped> {
        let done = self.ask(|reply| Command::Control { name, action, reply }).await?;
        match done {
            None => Ok(None),
            Some(Err(busy)) => Ok(Some(Err(busy))),
            Some(Ok(done)) => done.await.map(|()| Some(Ok(()))).map_err(|_| SupervisorStopped),
        }
    }
}

/// How many stderr lines a status snapshot carries.
const SNAPSHOT_STDERR_LINES: usize = 20;

fn snapshot(handle: &ServerHandle) -> McpServerStatus {
    let mut status = handle.state.borrow().snapshot();
    status.stderr_tail = handle.stderr.last(SNAPSHOT_STDERR_LINES);
    status
}

/// How a server looks before it ever starts: who it is, not what it does.
fn identity(config: &ServerConfig, origin: ServerOrigin) -> McpServerStatus {
    let transport = match (origin, &config.transport) {
        (ServerOrigin::BuiltIn, _) => TransportKind::BuiltIn,
        (_, TransportConfig::Stdio(_)) => TransportKind::Stdio,
        (_, TransportConfig::StreamableHttp(_)) => TransportKind::StreamableHttp,
    };
    let mut status = McpServerStatus::new(config.name.clone(), origin, transport);
    status.enabled = config.enabled;
    status
}

/// One server in the registry.
#[derive(Debug)]
struct ServerEntry {
    handle: ServerHandle,
    origin: ServerOrigin,
    /// The session that added it (session servers only).
    owner: Option<u64>,
}

impl ServerEntry {
    fn snapshot(&self) -> McpServerStatus {
        snapshot(&self.handle)
    }
}

/// The registry as requests need it: each server's config, its task's state
/// (the `watch` the task alone writes), where it came from and whose it is.
/// The actor publishes a new one into a `watch` whenever the registry
/// changes (a server added, removed or replaced); `call_target` and
/// `targets` read it on the caller's task. A server's readiness and session
/// are read from its state at that moment, so a call to a ready server
/// needs nothing of the actor, and a wedged actor holds up no call.
#[derive(Debug, Default)]
struct Routes {
    servers: BTreeMap<String, Route>,
}

/// One server of [`Routes`].
#[derive(Debug)]
struct Route {
    config: Arc<ServerConfig>,
    state: watch::Receiver<ServerState>,
    origin: ServerOrigin,
    /// The session that added it (session servers only).
    owner: Option<u64>,
}

impl Routes {
    /// Every ready server, or `only` (which must be ready), with whose each is.
    fn targets(&self, only: Option<&str>) -> Result<TargetSet, NotAvailable> {
        let mut set = TargetSet::default();
        let routes: Vec<&Route> = match only {
            Some(name) => vec![self.servers.get(name).ok_or(NotAvailable::NotFound)?],
            None => self.servers.values().collect(),
        };
        for route in routes {
            if let Some(owner) = route.owner {
                set.whose.owners.insert(route.config.name.clone(), owner);
            }
            if route.origin == ServerOrigin::BuiltIn {
                set.whose.built_in.insert(route.config.name.clone());
            }
            match ready_target(&route.config, &route.state) {
                Ok(target) => set.ready.push(target),
                Err(not_ready) if only.is_some() => return Err(not_ready),
                Err(NotAvailable::NotReady {
                    status, failure_reason, ..
                }) => {
                    // Disabled servers that were never started are not "missing" anything.
                    if route.config.enabled || status != ServerStatus::Stopped {
                        set.not_ready.push((route.config.name.clone(), status, failure_reason));
                    }
                }
                Err(NotAvailable::NotFound) => {}
            }
        }
        Ok(set)
    }
}

/// The actor. Created by [`spawn`], owned by its task.
#[derive(Debug)]
struct SupervisorActor {
    servers: BTreeMap<String, ServerEntry>,
    /// Names of removed servers whose teardown is still running: reserved,
    /// so a new server never shares a name with a dying one's notifications.
    removing: std::collections::BTreeSet<String>,
    /// Config servers to start once the server of the same name is stopped
    /// and forgotten (a changed entry: the old process tree goes first, and
    /// the old entry stays listed, `stopped`, until then).
    pending_starts: BTreeMap<String, ServerConfig>,
    commands: mpsc::Receiver<Command>,
    /// A sender to this actor, for the tasks that report a teardown finished.
    to_self: mpsc::Sender<Command>,
    hub: Arc<Hub>,
    /// Stored OAuth credentials, handed to every server task.
    credentials: Option<Credentials>,
    /// The process registry, handed to every server task.
    processes: Arc<Registry>,
    shutdown: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    /// Where [`Routes`] are published.
    routes: watch::Sender<Arc<Routes>>,
    /// The registry changed since the routes were last published.
    routes_stale: bool,
}

impl SupervisorActor {
    /// Put `entry` in the registry under `name`.
    fn insert_entry(&mut self, name: String, entry: ServerEntry) {
        self.servers.insert(name, entry);
        self.routes_stale = true;
    }

    /// Take `name` out of the registry.
    fn take_entry(&mut self, name: &str) -> Option<ServerEntry> {
        let entry = self.servers.remove(name);
        self.routes_stale |= entry.is_some();
        entry
    }

    /// Publish the registry's routes if it changed since they were last published.
    fn publish_routes(&mut self) {
        if !std::mem::take(&mut self.routes_stale) {
            return;
        }
        let servers = self
            .servers
            .iter()
            .map(|(name, entry)| {
                let route = Route {
                    config: entry.handle.config.clone(),
                    state: entry.handle.state.clone(),
                    origin: entry.origin,
                    owner: entry.owner,
                };
                (name.clone(), route)
            })
            .collect();
        self.routes.send_replace(Arc::new(Routes { servers }));
    }

    /// Stop a server taken out of the registry; its name stays reserved until
    /// its teardown is done. The returned receiver fires then.
    fn remove_entry(&mut self, name: String, entry: ServerEntry) -> oneshot::Receiver<()> {
        let teardown_done = stop_and_forget(entry);
        self.removing.insert(name.clone());
        let (done, done_rx) = oneshot::channel();
        let to_self = self.to_self.clone();
        self.tracker.spawn(async move {
            let _ = teardown_done.await;
            let _ = to_self.send(Command::Forgotten { name }).await;
            let _ = done.send(());
        });
        done_rx
    }

    /// Config entries waiting to start whose name has no entry in the
    /// registry any more (the old server of that name is being forgotten):
    /// listed as `stopped`, so a server being replaced never vanishes from
    /// `mcpServer/list` and `mcpServer/get` between its old and new entry.
    fn waiting_entries(&self) -> impl Iterator<Item = &ServerConfig> {
        self.pending_starts
            .iter()
            .filter(|(name, _)| !self.servers.contains_key(*name))
            .map(|(_, config)| config)
    }
}

impl SupervisorActor {
    /// Spawn a config server's task; it starts at once if enabled.
    fn start_config_server(&mut self, config: ServerConfig) {
        // Shared by every client: never one client's roots.
        self.insert_server(config, ServerOrigin::Config, None, None, server::Autostart::IfEnabled);
    }

    /// Spawn the task of a config or session server (`owner`: the session's
    /// connection; `roots`: its client's, for a session server) and register
    /// it under its name.
    fn insert_server(
        &mut self,
        config: ServerConfig,
        origin: ServerOrigin,
        owner: Option<u64>,
        roots: Option<ClientRoots>,
        autostart: server::Autostart,
    ) {
        let name = config.name.clone();
        let spec = ServerSpec {
            identity: identity(&config, origin),
            client_roots: roots,
            config,
            launcher: Launcher::Config,
            autostart,
            hub: self.hub.clone(),
            credentials: self.credentials.clone(),
            processes: self.processes.clone(),
            shutdown: self.shutdown.child_token(),
        };
        let handle = server::spawn(spec, &self.tracker);
        self.insert_entry(name, ServerEntry { handle, origin, owner });
    }

    /// Bring the config servers in line with `config`: [`plan::plan`]
    /// decides, this carries the plan out. Unchanged servers (and their
    /// in-flight calls) are not touched; a changed one is torn down and
    /// started again from its new entry once its old process tree is gone.
    fn apply_config(&mut self, config: Config) -> ConfigDiff {
        let current = plan::Current {
            servers: self
                .servers
                .iter()
                .map(|(name, entry)| {
                    let facts = plan::Entry {
                        config: &entry.handle.config,
                        origin: entry.origin,
                    };
                    (name.as_str(), facts)
                })
                .collect(),
            pending_starts: &self.pending_starts,
            removing: &self.removing,
        };
        let Plan {
            remove,
            start,
            start_after_teardown,
            restart,
            keep,
            refused,
            diff,
        } = plan::plan(&current, config);
        for name in remove {
            self.pending_starts.remove(&name);
            if let Some(entry) = self.take_entry(&name) {
                tracing::info!(server = %name, "config reload: removed from the file, stopping");
                drop(self.remove_entry(name, entry));
            }
        }
        for new in restart {
            tracing::info!(server = %new.name, "config reload: entry changed, restarting");
            self.restart_in_place(new);
        }
        for new in start_after_teardown {
            tracing::info!(server = %new.name, "config reload: starting once the old server is gone");
            self.pending_starts.insert(new.name.clone(), new);
        }
        for new in start {
            tracing::info!(server = %new.name, "config reload: new entry, starting");
            self.start_config_server(new);
        }
        for taken in refused {
            tracing::warn!(server = %taken.name, "config reload: name taken by {}", taken.holder_text());
        }
        if !keep.is_empty() {
            tracing::debug!(servers = ?keep, "config reload: unchanged, left alone");
        }
        diff
    }

    /// Stop a changed config server in place (it stays listed, `stopped`),
    /// then replace it: `Replace` takes it out once it has stopped, and
    /// `Forgotten` starts `new` once its old process tree is gone.
    fn restart_in_place(&mut self, new: ServerConfig) {
        let name = new.name.clone();
        if let Some(entry) = self.servers.get(&name) {
            let (stopped, stopped_rx) = oneshot::channel();
            match entry.handle.commands.try_send(ServerCommand::Stop { reply: stopped }) {
                Ok(()) => {
                    let to_self = self.to_self.clone();
                    let replace = name.clone();
                    self.tracker.spawn(async move {
                        let _ = stopped_rx.await;
                        let _ = to_self.send(Command::Replace { name: replace }).await;
                    });
                }
                Err(error) => {
                    tracing::warn!(server = %name, %error, "server task did not take the stop command; removing it");
                    if let Some(entry) = self.take_entry(&name) {
                        drop(self.remove_entry(name.clone(), entry));
                    }
                }
            }
        }
        self.pending_starts.insert(name, new);
    }
}

/// The way in to the session of the server of `config`, if its `state` says it is ready.
fn ready_target(config: &Arc<ServerConfig>, state: &watch::Receiver<ServerState>) -> Result<CallTarget, NotAvailable> {
    let state = state.borrow();
    match (&state.session, state.public.status) {
        (Some(session), ServerStatus::Ready) => Ok(CallTarget::new(config.clone(), session.clone())),
        _ => Err(NotAvailable::NotReady {
            status: state.public.status,
            failure_reason: state.public.failure_reason,
            error: state.public.error.clone(),
        }),
    }
}

/// Tell a removed server's task to stop; it ends once its processes are gone
/// (its command channel closes with this entry). The receiver fires then.
fn stop_and_forget(entry: ServerEntry) -> oneshot::Receiver<()> {
    let ServerHandle { config, commands, .. } = entry.handle;
    let (done, done_rx) = oneshot::channel();
    if let Err(error) = commands.try_send(ServerCommand::Stop { reply: done }) {
        tracing::warn!(server = %config.name, %error, "server task did not take the stop command");
    }
    // Dropping the last sender lets the task end after the stop.
    drop(commands);
    done_rx
}

/// Bound of the command queue: callers wait (back-pressure) when it is full.
const COMMAND_QUEUE: usize = 256;

/// Start the supervisor for `config`; it runs until `shutdown` is cancelled.
///
/// `builtin` gets the supervisor's handle and returns the built-in server
/// (its name and the in-process server), or `None` when it is turned off:
/// boot injects it, so the supervisor knows it only as an [`InProcessServer`].
pub fn spawn(
    config: &Config,
    builtin: impl FnOnce(SupervisorHandle) -> Option<(&'static str, Arc<dyn InProcessServer>)>,
    hub: &Arc<Hub>,
    credentials: Option<Credentials>,
    processes: Arc<Registry>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> SupervisorHandle {
    let (sender, commands) = mpsc::channel(COMMAND_QUEUE);
    let (routes, routes_rx) = watch::channel(Arc::new(Routes::default()));
    let handle = SupervisorHandle {
        commands: sender.clone(),
        routes: routes_rx,
    };
    let mut actor = SupervisorActor {
        servers: BTreeMap::new(),
        removing: std::collections::BTreeSet::new(),
        pending_starts: BTreeMap::new(),
        commands,
        to_self: sender.clone(),
        hub: hub.clone(),
        credentials,
        processes,
        shutdown,
        tracker: tracker.clone(),
        routes,
        routes_stale: false,
    };
    // Every config server's task starts now, all at once: none waits for another.
    for server in config.servers.values() {
        actor.start_config_server(server.clone());
    }
    match builtin(handle.clone()) {
        None => tracing::info!("the built-in server is turned off"),
        Some((name, _)) if actor.servers.contains_key(name) => tracing::warn!(
            server = name,
            "the config defines a server named like the built-in one; the built-in server is not started"
        ),
        Some((name, server)) => match builtin_config(name) {
            Ok(config) => {
                let entry = ServerEntry {
                    handle: server::spawn(
                        ServerSpec {
                            identity: identity(&config, ServerOrigin::BuiltIn),
                            config,
                            launcher: Launcher::InProcess(server),
                            client_roots: None,
                            autostart: server::Autostart::IfEnabled,
                            hub: hub.clone(),
                            credentials: None,
                            processes: actor.processes.clone(),
                            shutdown: actor.shutdown.child_token(),
                        },
                        tracker,
                    ),
                    origin: ServerOrigin::BuiltIn,
                    owner: None,
                };
                actor.insert_entry(name.to_owned(), entry);
            }
            Err(problems) => tracing::error!(?problems, "cannot set up the built-in server"),
        },
    }
    actor.publish_routes();
    tracker.spawn(actor.run());
    handle
}

/// The built-in server's settings: the defaults of a config entry (its
/// `command` is never run: the built-in's launcher is in-process).
fn builtin_config(name: &str) -> Result<ServerConfig, Vec<corral_protocol::config::ConfigProblem>> {
    corral_protocol::config::parse_server_json(name, &serde_json::json!({ "command": "corrald" }))
}

impl SupervisorActor {
    async fn run(mut self) {
        loop {
            let command = tokio::select! {
                () = self.shutdown.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => command,
                    None => break,
                },
            };
            if let Command::Wedge { release } = command {
                tracing::warn!("test hook: the supervisor stops answering until released");
                tokio::select! {
                    () = self.shutdown.cancelled() => break,
                    () = release.cancelled() => {}
                }
                tracing::warn!("test hook: the supervisor answers again");
                continue;
            }
            self.handle(command);
            self.publish_routes();
        }
        tracing::debug!("supervisor stopped");
    }

    fn handle(&mut self, command: Command) {
        // A caller that went away no longer wants its reply: ignore send errors.
        match command {
            Command::List { reply } => {
                let mut list: Vec<McpServerStatus> = self.servers.values().map(ServerEntry::snapshot).collect();
                list.extend(
                    self.waiting_entries()
                        .map(|config| identity(config, ServerOrigin::Config)),
                );
                list.sort_by(|a, b| a.name.cmp(&b.name));
                let _ = reply.send(list);
            }
            Command::Get { name, reply } => {
                let status = match self.servers.get(&name) {
                    Some(entry) => Some(entry.snapshot()),
                    None => self
                        .waiting_entries()
                        .find(|config| config.name == name)
                        .map(|config| identity(config, ServerOrigin::Config)),
                };
                let _ = reply.send(status);
            }
            Command::Configs { server, reply } => {
                let configs = self
                    .servers
                    .iter()
                    .filter(|(name, _)| server.as_ref().is_none_or(|only| only == *name))
                    .map(|(_, entry)| ServerConfig::clone(&entry.handle.config))
                    .collect();
                let _ = reply.send(configs);
            }
            Command::Counts { reply } => {
                let mut counts = ServerCounts::default();
                for entry in self.servers.values() {
                    counts.add(entry.handle.state.borrow().public.status);
                }
                for _ in self.waiting_entries() {
                    counts.add(corral_protocol::ServerStatus::Stopped);
                }
                let _ = reply.send(counts);
            }
            Command::Control { name, action, reply } => {
                let Some(entry) = self.servers.get(&name) else {
                    let _ = reply.send(None);
                    return;
                };
                let (done, done_rx) = oneshot::channel();
                let command = match action {
                    ControlAction::Start => ServerCommand::Start { reply: done },
                    ControlAction::Stop => ServerCommand::Stop { reply: done },
                    ControlAction::Restart => ServerCommand::Restart { reply: done },
                };
                // try_send: the actor never waits on one server. A full queue
                // (commands pending) refuses the command: the caller is told
                // the server is busy (`serverBusy`), not that the daemon stops.
                match entry.handle.commands.try_send(command) {
                    Ok(()) => {
                        let _ = reply.send(Some(Ok(done_rx)));
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::debug!(server = %name, "server's command queue is full; command refused");
                        let _ = reply.send(Some(Err(ServerBusy)));
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        // The server's task ended: the daemon is shutting down.
                        drop(reply);
                    }
                }
            }
            Command::Add {
                config,
                owner,
                roots,
                reply,
            } => {
                if self.servers.contains_key(&config.name) {
                    let _ = reply.send(Err(RegistryRefusal::Exists));
                    return;
                }
                if self.removing.contains(&config.name) {
                    let _ = reply.send(Err(RegistryRefusal::StillStopping));
                    return;
                }
                tracing::info!(server = %config.name, session = owner, "session added a server");
                // Idle until the add handler's start command: one trigger, one launch.
                self.insert_server(
                    *config,
                    ServerOrigin::Session,
                    Some(owner),
                    roots,
                    server::Autostart::Never,
                );
                let _ = reply.send(Ok(()));
            }
            Command::Remove { name, owner, reply } => {
                let refusal = match self.servers.get(&name) {
                    None => Some(RegistryRefusal::NotFound),
                    Some(entry) if entry.origin != ServerOrigin::Session => Some(RegistryRefusal::NotPermitted(
                        "only servers added with `mcpServer/add` can be removed; edit the config file for the others",
                    )),
                    Some(entry) if entry.owner != Some(owner) => Some(RegistryRefusal::NotPermitted(
                        "this server was added by another connection; only that connection can remove it",
                    )),
                    Some(_) => None,
                };
                if let Some(refusal) = refusal {
                    let _ = reply.send(Err(refusal));
                    return;
                }
                if let Some(entry) = self.take_entry(&name) {
                    let _ = reply.send(Ok(self.remove_entry(name, entry)));
                }
            }
            Command::Forgotten { name } => {
                self.removing.remove(&name);
                if let Some(config) = self.pending_starts.remove(&name) {
                    self.start_config_server(config);
                }
            }
            Command::ApplyConfig { config, reply } => {
                let _ = reply.send(self.apply_config(*config));
            }
            Command::Replace { name } => {
                // Still wanted (a later reload may have removed it meanwhile)?
                if self.pending_starts.contains_key(&name)
                    && let Some(entry) = self.take_entry(&name)
                {
                    // Its processes are gone; `Forgotten` starts the new entry.
                    drop(self.remove_entry(name, entry));
                }
            }
            Command::Wedge { .. } => {
                // Handled in `run`, which owns the waiting.
            }
            Command::SessionClosed { owner } => {
                let owned: Vec<String> = self
                    .servers
                    .iter()
                    .filter(|(_, entry)| entry.owner == Some(owner))
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in owned {
                    tracing::info!(server = %name, session = owner, "session closed: stopping its server");
                    if let Some(entry) = self.take_entry(&name) {
                        // Teardown goes on in the server's task, tracked for shutdown.
                        drop(self.remove_entry(name, entry));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use corral_protocol::ServerStatus;

    use super::*;

    /// An actor with no servers, driven by hand (its `run` loop is not started).
    fn actor() -> SupervisorActor {
        let (sender, commands) = mpsc::channel(COMMAND_QUEUE);
        SupervisorActor {
            servers: BTreeMap::new(),
            removing: std::collections::BTreeSet::new(),
            pending_starts: BTreeMap::new(),
            commands,
            to_self: sender,
            hub: Arc::new(Hub::new(16)),
            credentials: None,
            processes: Registry::without_record(),
            shutdown: CancellationToken::new(),
            tracker: tokio_util::task::TaskTracker::new(),
            routes: watch::channel(Arc::new(Routes::default())).0,
            routes_stale: false,
        }
    }

    #[tokio::test]
    async fn a_server_between_its_old_and_new_entry_is_still_listed_stopped() {
        let mut actor = actor();
        let config = corral_protocol::config::parse(
            "[servers.slow]\ncommand = \"true\"\n[servers.other]\ncommand = \"true\"\nenabled = false\n",
            Path::new("case.toml"),
        )
        .expect("a valid config");
        // The state a replace passes through: the old entry forgotten (the
        // name still being torn down), the new one waiting to start.
        actor.removing.insert("slow".to_owned());
        actor
            .pending_starts
            .insert("slow".to_owned(), config.servers["slow"].clone());

        let (reply, answer) = oneshot::channel();
        actor.handle(Command::Get {
            name: "slow".to_owned(),
            reply,
        });
        let status = answer.await.expect("an answer").expect("`slow` is still known");
        assert_eq!(status.status, ServerStatus::Stopped);
        assert_eq!(status.origin, ServerOrigin::Config);

        let (reply, answer) = oneshot::channel();
        actor.handle(Command::List { reply });
        let names: Vec<String> = answer
            .await
            .expect("an answer")
            .into_iter()
            .map(|status| status.name)
            .collect();
        assert_eq!(names, ["slow"]);

        let (reply, answer) = oneshot::channel();
        actor.handle(Command::Counts { reply });
        let counts = answer.await.expect("an answer");
        assert_eq!((counts.total, counts.stopped), (1, 1), "{counts:?}");

        let (reply, answer) = oneshot::channel();
        actor.handle(Command::Get {
            name: "other".to_owned(),
            reply,
        });
        assert!(
            answer.await.expect("an answer").is_none(),
            "a name nobody waits for is unknown"
        );
    }
}
