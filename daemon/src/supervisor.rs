//! The supervisor: one actor that owns the registry of MCP servers.
//!
//! Everything else in the daemon holds a cheap [`SupervisorHandle`] and sends
//! it [`Command`]s; replies come back on oneshot channels. There is no shared
//! mutable server state behind locks: the actor's `run` loop is the only code
//! that reads or changes the registry, so a status snapshot is always
//! consistent.

use std::collections::BTreeMap;
use std::sync::Arc;

use corral_protocol::config::{Config, TransportConfig};
use corral_protocol::{McpServerStatus, ServerCounts, ServerOrigin, TransportKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::events::EventHub;
use crate::server::{self, ServerCommand, ServerHandle};

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
        reply: oneshot::Sender<Option<oneshot::Receiver<()>>>,
    },
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

    /// Start, stop or restart a server; `Ok(None)` if there is no such server.
    ///
    /// Returns once the server task has done what it replies after (see
    /// [`ControlAction`]): `starting` for start, processes gone for stop.
    pub async fn control(&self, name: String, action: ControlAction) -> Result<Option<()>, SupervisorStopped> {
        let done = self.ask(|reply| Command::Control { name, action, reply }).await?;
        match done {
            None => Ok(None),
            Some(done) => done.await.map(Some).map_err(|_| SupervisorStopped),
        }
    }
}

/// How many stderr lines a status snapshot carries.
const SNAPSHOT_STDERR_LINES: usize = 20;

fn snapshot(handle: &ServerHandle, origin: ServerOrigin) -> McpServerStatus {
    let transport = match handle.config.transport {
        TransportConfig::Stdio(_) => TransportKind::Stdio,
        TransportConfig::StreamableHttp(_) => TransportKind::StreamableHttp,
    };
    let state = handle.state.borrow();
    let mut status = McpServerStatus::new(handle.config.name.clone(), origin, transport);
    status.enabled = handle.config.enabled;
    status.status = state.status;
    status.failure_reason = state.failure_reason;
    status.error = state.error.clone();
    status.pid = state.pid;
    status.restart_count = state.restart_count;
    status.tool_count = state.tool_count;
    status.server_info = state.server_info.clone();
    status.uptime_ms = state
        .ready_since
        .map(|since| u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX));
    status.last_exit = state.last_exit.clone();
    status.stderr_tail = handle.stderr.last(SNAPSHOT_STDERR_LINES);
    status
}

/// One server in the registry.
#[derive(Debug)]
struct ServerEntry {
    handle: ServerHandle,
    origin: ServerOrigin,
}

impl ServerEntry {
    fn snapshot(&self) -> McpServerStatus {
        snapshot(&self.handle, self.origin)
    }
}

/// The actor. Created by [`spawn`], owned by its task.
#[derive(Debug)]
struct SupervisorActor {
    servers: BTreeMap<String, ServerEntry>,
    commands: mpsc::Receiver<Command>,
}

/// Bound of the command queue: callers wait (back-pressure) when it is full.
const COMMAND_QUEUE: usize = 256;

/// Start the supervisor for `config`; it runs until `shutdown` is cancelled.
pub fn spawn(
    config: &Config,
    events: &Arc<EventHub>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> SupervisorHandle {
    let (sender, commands) = mpsc::channel(COMMAND_QUEUE);
    // Every config server's task starts now, all at once: none waits for another.
    let servers = config
        .servers
        .values()
        .map(|server| {
            let handle = server::spawn(server.clone(), events.clone(), shutdown.child_token(), tracker);
            let entry = ServerEntry {
                handle,
                origin: ServerOrigin::Config,
            };
            (server.name.clone(), entry)
        })
        .collect();
    let actor = SupervisorActor { servers, commands };
    tracker.spawn(actor.run(shutdown));
    SupervisorHandle { commands: sender }
}

impl SupervisorActor {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let command = tokio::select! {
                () = shutdown.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => command,
                    None => break,
                },
            };
            self.handle(command);
        }
        tracing::debug!("supervisor stopped");
    }

    fn handle(&mut self, command: Command) {
        // A caller that went away no longer wants its reply: ignore send errors.
        match command {
            Command::List { reply } => {
                let _ = reply.send(self.servers.values().map(ServerEntry::snapshot).collect());
            }
            Command::Get { name, reply } => {
                let _ = reply.send(self.servers.get(&name).map(ServerEntry::snapshot));
            }
            Command::Counts { reply } => {
                let mut counts = ServerCounts::default();
                for entry in self.servers.values() {
                    counts.add(entry.handle.state.borrow().status);
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
                // (16 commands pending) drops the command; the caller sees the
                // daemon as stopping, which is rare enough to be honest.
                if let Err(error) = entry.handle.commands.try_send(command) {
                    tracing::warn!(server = %name, %error, "server task did not take the command");
                }
                let _ = reply.send(Some(done_rx));
            }
        }
    }
}
