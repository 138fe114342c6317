//! `corrald`, the Corral daemon, as a library: [`run`] is the whole daemon
//! (boot → wait for a signal → shut down); `main.rs` only parses arguments
//! and sets up logging.
//!
//! Module map, one line per room (see `docs/ARCHITECTURE.md`):
//! - `boot`: makes the daemon's long-lived objects, wires them together, and shuts down;
//! - `signals`: SIGTERM/SIGINT and SIGHUP (Ctrl-C on Windows), caught from the start;
//! - [`api`]: the socket, connections, JSON-RPC dispatch, the handlers; never rmcp;
//! - `bridge`: the daemon as one MCP server for MCP clients on the socket (`corral mcp`);
//! - `endpoint`: the loopback streamable-HTTP MCP endpoint: HTTP in front of the same engine and bridge;
//! - [`supervisor`]: the actor owning the registry of MCP servers;
//! - [`server`]: one task per server: lifecycle, restarts, teardown;
//! - [`transport`]: how a server is reached (stdio, the one spawn point; streamable HTTP; in-process);
//! - [`hub`]: the way out to front-ends: events (seq, replay, fan-out) and routes;
//! - [`mcp`]: everything that speaks MCP to a server (handler, route, forward, classify, wire tee);
//! - [`auth`]: the daemon's one [`auth::Auth`]: credentials, OAuth logins, step-ups, `authStatus`;
//! - [`process`]: no server process outlives corrald: the registry, reaping, cgroup leaves;
//! - [`logging`]: tracing-subscriber set-up and the redacting writer;
//! - `params`: JSON-RPC params and error objects, shared by `api` and `bridge`;
//! - `private_file`: files only this user may read, created where nothing planted redirects them;
//! - [`config`]: watching the config file, applying it live, the daemon-wide settings;
//! - [`service`]: readiness, status, watchdog for a service manager, and socket activation;
//! - `builtin`: the built-in `corral` MCP server (named only by `boot`).

pub mod api;
pub mod auth;
mod boot;
mod bridge;
mod builtin;
pub mod config;
mod endpoint;
pub mod hub;
pub mod logging;
pub mod mcp;
mod params;
mod private_file;
pub mod process;
pub mod server;
pub mod service;
mod signals;
pub mod supervisor;
pub mod transport;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

/// A hash map for what a call touches: foldhash instead of the standard
/// SipHash, which cost about 1.4k instructions per `tools/call` in four maps.
/// Its seeds are random per process, so keys a front-end picks (request ids)
/// still cannot be chosen to collide.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// How many notifications the replay history (and each connection's backlog) holds.
pub const EVENT_HISTORY: usize = 1024;

/// Longest wait for connections and tasks to finish on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the daemon needs to know to run.
#[derive(Debug)]
#[non_exhaustive]
pub struct Options {
    /// Socket to serve.
    pub socket_path: PathBuf,
    /// Config file to read (need not exist).
    pub config_path: PathBuf,
    /// Register `debug/*` methods for tests and benchmarks.
    pub test_hooks: bool,
    /// Run the built-in `corral` server (on by default).
    pub builtin_server: bool,
    /// What a service manager passed (socket activation, watchdog interval).
    pub inherited: service::Inherited,
    /// How often the config file is checked for changes.
    pub config_poll_interval: Duration,
    /// Where stored credentials live (the credentials files; see `credentials`).
    pub data_dir: PathBuf,
    /// Put each stdio server in a cgroup v2 leaf below corrald's cgroup
    /// (needs a delegated cgroup: `Delegate=yes` under systemd; see `cgroup`).
    pub server_cgroups: bool,
    /// Per-connection deadlines (handshake, frame).
    pub connection_limits: api::ConnectionLimits,
    /// How long a front-end has to answer a server's elicitation or sampling
    /// request before it is withdrawn and answered as cancelled.
    pub answer_deadline: Duration,
    /// `--mcp-endpoint ADDR`: serve the loopback MCP endpoint there, whatever
    /// the config file's `[mcp_endpoint]` says about `enabled` and `listen`.
    pub mcp_endpoint: Option<std::net::SocketAddr>,
    /// How long an MCP endpoint session may be idle before it is closed.
    pub mcp_endpoint_idle: Duration,
}

impl Options {
    /// Options for a socket and a config file.
    pub fn new(socket_path: PathBuf, config_path: PathBuf) -> Self {
        Self {
            socket_path,
            config_path,
            test_hooks: false,
            builtin_server: true,
            inherited: service::Inherited::default(),
            config_poll_interval: crate::config::reload::POLL_INTERVAL,
            data_dir: corral_protocol::paths::data_dir(None),
            server_cgroups: false,
            connection_limits: api::ConnectionLimits::default(),
            answer_deadline: hub::routes::DEFAULT_ANSWER_DEADLINE,
            mcp_endpoint: None,
            mcp_endpoint_idle: endpoint::IDLE_SESSION,
        }
    }
}

/// Run the daemon until SIGTERM or SIGINT (Ctrl-C on Windows), or `shutdown` is cancelled.
pub async fn run(options: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    // Installed before the socket exists: from the moment a front-end (or a
    // service manager) can see the daemon, SIGTERM means a clean shutdown,
    // never the default action that would leave the socket behind. SIGHUP
    // (reload) too, whose default action would kill the daemon.
    let mut shutdown_signals = signals::ShutdownSignals::install()?;
    let mut reload_signals = signals::ReloadSignals::install()?;
    let mut daemon = boot::start(options, started, &shutdown).await?;
    wait(&mut daemon, &mut shutdown_signals, &mut reload_signals, &shutdown).await?;
    daemon.shut_down(&shutdown).await;
    Ok(())
}

/// Serve until a shutdown signal or `shutdown`, reloading the config on
/// SIGHUP. `Err`: the accept loop could not start (the daemon stops at once).
async fn wait(
    daemon: &mut boot::Running,
    shutdown_signals: &mut signals::ShutdownSignals,
    reload_signals: &mut signals::ReloadSignals,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            signal = shutdown_signals.recv() => {
                tracing::info!(signal, "shutting down");
                return Ok(());
            }
            () = reload_signals.recv() => {
                tracing::info!("SIGHUP: reloading the config file");
                daemon.reload.request(corral_protocol::ReloadTrigger::Signal);
            }
            result = &mut daemon.accept_loop => {
                // The accept loop only ends on its own if it could not start.
                result.context("accept loop panicked")??;
                return Ok(());
            }
        }
    }
}
