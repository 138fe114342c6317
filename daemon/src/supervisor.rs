//! The supervisor: one actor that owns the registry of MCP servers.
//!
//! Everything else in the daemon holds a cheap [`SupervisorHandle`] and sends
//! it [`Command`]s; replies come back on oneshot channels. There is no shared
//! mutable server state behind locks: the actor's `run` loop is the only code
//! that reads or changes the registry, so a status snapshot is always
//! consistent.

use std::collections::BTreeMap;
use std::sync::Arc;

use corral_protocol::config::{Config, ServerConfig, TransportConfig};
use corral_protocol::{McpServerStatus, ServerCounts, ServerOrigin, ServerStatus, TransportKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::events::EventHub;

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
}

/// One server in the registry.
#[derive(Debug)]
struct ServerEntry {
    config: ServerConfig,
    origin: ServerOrigin,
    status: ServerStatus,
}

impl ServerEntry {
    fn snapshot(&self) -> McpServerStatus {
        let transport = match self.config.transport {
            TransportConfig::Stdio(_) => TransportKind::Stdio,
            TransportConfig::StreamableHttp(_) => TransportKind::StreamableHttp,
        };
        let mut status = McpServerStatus::new(self.config.name.clone(), self.origin, transport);
        status.enabled = self.config.enabled;
        status.status = self.status;
        status
    }
}

/// The actor. Created by [`spawn`], owned by its task.
#[derive(Debug)]
struct SupervisorActor {
    servers: BTreeMap<String, ServerEntry>,
    commands: mpsc::Receiver<Command>,
    // Used once servers publish their transitions (stdio lifecycle).
    #[allow(dead_code)]
    events: Arc<EventHub>,
}

/// Bound of the command queue: callers wait (back-pressure) when it is full.
const COMMAND_QUEUE: usize = 256;

/// Start the supervisor for `config`; it runs until `shutdown` is cancelled.
pub fn spawn(
    config: &Config,
    events: Arc<EventHub>,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> SupervisorHandle {
    let (sender, commands) = mpsc::channel(COMMAND_QUEUE);
    let servers = config
        .servers
        .values()
        .map(|server| {
            let entry = ServerEntry {
                config: server.clone(),
                origin: ServerOrigin::Config,
                status: ServerStatus::Stopped,
            };
            (server.name.clone(), entry)
        })
        .collect();
    let actor = SupervisorActor {
        servers,
        commands,
        events,
    };
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
                    counts.add(entry.status);
                }
                let _ = reply.send(counts);
            }
        }
    }
}
