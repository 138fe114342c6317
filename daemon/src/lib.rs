//! `corrald`, the Corral daemon, as a library: [`run`] is the whole daemon;
//! `main.rs` only parses arguments and sets up logging.
//!
//! Module map (see `docs/ARCHITECTURE.md`):
//! - [`api`]: the socket, connections, framing, JSON-RPC dispatch;
//! - [`supervisor`]: the actor owning the registry of MCP servers;
//! - [`server`]: one task per server: lifecycle, restarts, teardown;
//! - [`stdio`]: the one audited place that starts child processes;
//! - `http`: streamable-HTTP servers: headers, the HTTP client (the seam for
//!   OAuth), connecting with retries, failure reasons;
//! - [`events`]: sequence numbers, replay history and fan-out of notifications;
//! - [`credentials`]: where OAuth credentials are stored (keyring, file, encrypted file);
//! - [`oauth`]: OAuth login (callback listener, opener), the OAuth-managed HTTP client,
//!   `authStatus`;
//! - [`reaper`]: finding and killing every process of a server's tree, and
//!   what a killed predecessor left behind;
//! - [`logging`]: tracing-subscriber set-up.

pub mod api;
mod builtin;
pub mod credentials;
pub mod events;
mod http;
pub mod logging;
mod mcp_client;
pub mod oauth;
pub mod reaper;
pub mod server;
pub mod stdio;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use corral_protocol::config;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How many notifications the replay history (and each connection's backlog) holds.
pub const EVENT_HISTORY: usize = 1024;

/// Longest wait for connections and tasks to finish on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the daemon needs to know to run.
#[derive(Debug, Clone)]
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
    /// Where stored credentials live (the credentials files; see `credentials`).
    pub data_dir: PathBuf,
}

impl Options {
    /// Options for a socket and a config file.
    pub fn new(socket_path: PathBuf, config_path: PathBuf) -> Self {
        Self {
            socket_path,
            config_path,
            test_hooks: false,
            builtin_server: true,
            data_dir: corral_protocol::paths::data_dir(None),
        }
    }
}

/// Run the daemon until SIGTERM or SIGINT (Ctrl-C on Windows), or `shutdown` is cancelled.
pub async fn run(options: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = Instant::now();
    // Installed before the socket exists: from the moment a front-end (or a
    // service manager) can see the daemon, SIGTERM means a clean shutdown,
    // never the default action that would leave the socket behind.
    let mut signals = ShutdownSignals::install()?;
    let (config, config_error) = match config::load(&options.config_path) {
        Ok(config) => (config, None),
        Err(error) => {
            // A broken file must not take the daemon down: run without config
            // servers, say exactly what is wrong, and let the user fix it.
            tracing::error!("config not loaded, running with no config servers:\n{error}");
            (config::Config::default(), Some(error.to_string()))
        }
    };
    #[cfg(unix)]
    let (listener, socket_guard) = {
        let (listener, guard) = api::socket::bind(&options.socket_path)?;
        let listener = tokio::net::UnixListener::from_std(listener).context("registering the socket with tokio")?;
        (listener, guard)
    };
    #[cfg(windows)]
    let pipe = api::pipe::bind(&options.socket_path)?;
    // Only now, holding the socket lock, is the record ours to act on.
    reaper::init(&record_path(&options.socket_path));

    // Opening the keyring is a D-Bus round trip (or a timeout): off the runtime.
    let credentials = {
        let (mode, data_dir) = (config.credentials_store, options.data_dir.clone());
        tokio::task::spawn_blocking(move || credentials::Credentials::open(mode, &data_dir))
            .await
            .context("opening the credential store")?
    };

    let tracker = TaskTracker::new();
    #[cfg(target_os = "linux")]
    tracker.spawn(reap_adopted_orphans(shutdown.clone()));
    let events = Arc::new(events::EventHub::new(EVENT_HISTORY));
    let supervisor = supervisor::spawn(
        &config,
        options.builtin_server,
        &events,
        Some(credentials.clone()),
        shutdown.child_token(),
        &tracker,
    );
    let context = Arc::new(
        api::DaemonContext::new(
            started,
            options.socket_path.clone(),
            options.config_path.clone(),
            config_error,
            supervisor,
            events,
            options.test_hooks,
        )
        .with_oauth(
            credentials,
            oauth::OAuthSettings::from_config(&config),
            shutdown.clone(),
        ),
    );
    tracing::info!(
        socket = %options.socket_path.display(),
        config = %options.config_path.display(),
        servers = config.servers.len(),
        "corrald {} listening",
        env!("CARGO_PKG_VERSION"),
    );
    #[cfg(unix)]
    let server = tracker.spawn(api::serve(listener, context, shutdown.clone(), tracker.clone()));
    #[cfg(windows)]
    let server = tracker.spawn(api::pipe::serve(
        options.socket_path.clone(),
        pipe,
        context,
        shutdown.clone(),
        tracker.clone(),
    ));

    tokio::select! {
        () = shutdown.cancelled() => {}
        signal = signals.recv() => {
            tracing::info!(signal, "shutting down");
        }
        result = server => {
            // The accept loop only ends on its own if it could not start.
            result.context("accept loop panicked")??;
        }
    }
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "some tasks did not finish in time; exiting anyway");
    }
    let left = reaper::registry().kill_everything_left();
    if left > 0 {
        tracing::warn!(
            processes = left,
            "killed server processes still alive after the shutdown grace"
        );
    }
    reaper::registry().remove_record();
    #[cfg(unix)]
    drop(socket_guard);
    tracing::info!("stopped");
    Ok(())
}

/// The children record lives next to the socket: one per daemon, and in the
/// runtime directory, which a reboot clears along with every pid in it.
fn record_path(socket: &std::path::Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".children");
    socket.with_file_name(name)
}

/// Reap zombies of orphans re-parented to corrald, on every SIGCHLD (and every
/// few seconds, in case signals were coalesced).
#[cfg(target_os = "linux")]
async fn reap_adopted_orphans(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut child_signals = match signal(SignalKind::child()) {
        Ok(signals) => Some(signals),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGCHLD; reaping orphans every few seconds only");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            Some(()) = async { match &mut child_signals { Some(signals) => signals.recv().await, None => None } } => {}
        }
        reaper::registry().reap_adopted();
    }
}

/// SIGTERM and SIGINT, caught from the start of [`run`].
#[cfg(unix)]
struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Wait for either signal; returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Ctrl-C, caught from the start of [`run`] (Windows has no SIGTERM).
#[cfg(windows)]
struct ShutdownSignals;

#[cfg(windows)]
impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self)
    }

    async fn recv(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            // Without a console handler the daemon can still be stopped by the
            // service manager; never return, so the daemon keeps serving.
            Err(_) => std::future::pending().await,
        }
    }
}
