//! `corrald`, the Corral daemon, as a library: [`run`] is the whole daemon;
//! `main.rs` only parses arguments and sets up logging.
//!
//! Module map, one room per folder (see `docs/ARCHITECTURE.md`):
//! - [`api`]: the socket ([`api::listen`]), connections, framing, JSON-RPC
//!   dispatch, the handlers, and the one mapping of errors to JSON-RPC
//!   errors; never rmcp;
//! - `bridge`: the daemon as one MCP server for MCP clients on the socket
//!   (`corral mcp`): MCP's `initialize`, `tools/list`, `tools/call` over every
//!   ready server, namespaced names, `list_changed`;
//! - [`supervisor`]: the actor owning the registry of MCP servers;
//! - [`server`]: one task per server: lifecycle, restarts, teardown;
//! - [`transport`]: how a server is reached: [`transport::stdio`] (the one
//!   audited place that starts child processes) and `transport::http`
//!   (streamable HTTP: headers, the HTTP client, the seam for OAuth,
//!   connecting with retries);
//! - [`hub`]: the way out to front-ends: [`hub::events`] (sequence numbers,
//!   replay history and fan-out of notifications) and `hub::routes` (servers'
//!   requests, progress and resource subscriptions routed to one front-end);
//! - [`mcp`]: everything that speaks MCP to a server: corrald's client
//!   handler for each session, the way in to a ready session
//!   ([`mcp::route`]), a front-end's request sent on (`mcp::forward`),
//!   what a failure means (`mcp::classify`), and the tee of a stdio
//!   server's wire, so front-ends get answers untouched by rmcp's typed
//!   model;
//! - [`auth`]: OAuth login, the OAuth-managed HTTP client, `authStatus`
//!   ([`auth::oauth`]) and where credentials are stored ([`auth::credentials`]);
//! - [`process`]: finding and killing every process of a server's tree, and
//!   what a killed predecessor left behind ([`process::reaper`]), cgroup
//!   leaves ([`process::cgroup`]);
//! - [`logging`]: tracing-subscriber set-up;
//! - [`config`]: watching the config file and applying a new one live;
//! - [`service`]: readiness, status, watchdog for a service manager, and
//!   socket activation.

pub mod api;
pub mod auth;
mod bridge;
mod builtin;
pub mod config;
pub mod hub;
pub mod logging;
pub mod mcp;
pub mod process;
pub mod server;
pub mod service;
pub mod supervisor;
pub mod transport;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
        }
    }
}

/// Run the daemon until SIGTERM or SIGINT (Ctrl-C on Windows), or `shutdown` is cancelled.
pub async fn run(
    // Only the Unix socket code (socket activation) changes the options.
    #[cfg_attr(windows, allow(unused_mut))] mut options: Options,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let started = Instant::now();
    // Installed before the socket exists: from the moment a front-end (or a
    // service manager) can see the daemon, SIGTERM means a clean shutdown,
    // never the default action that would leave the socket behind. SIGHUP
    // (reload) too, whose default action would kill the daemon.
    let mut signals = ShutdownSignals::install()?;
    let mut reload_signals = ReloadSignals::install()?;
    let notifier = service::Notifier::start();
    // Before anything is opened: the connection cap is derived from it.
    let open_files = api::raise_open_file_limit();
    tracing::debug!(?open_files, "open-file limit");
    let config_snapshot = crate::config::reload::FileSnapshot::take(&options.config_path);
    let (config, config_error) = match corral_protocol::config::load(&options.config_path) {
        Ok(config) => (config, None),
        Err(error) => {
            // A broken file must not take the daemon down: run without config
            // servers, say exactly what is wrong, and let the user fix it.
            tracing::error!("config not loaded, running with no config servers:\n{error}");
            (corral_protocol::config::Config::default(), Some(error.to_string()))
        }
    };
    #[cfg(unix)]
    let (listener, socket_guard) = {
        let (listener, guard) = match options.inherited.listener.take() {
            Some(fd) => {
                let (listener, guard, path) = api::listen::unix::adopt(fd, &options.socket_path)?;
                tracing::info!(socket = %path.display(), "serving the socket passed by the service manager");
                options.socket_path = path;
                (listener, guard)
            }
            None => api::listen::unix::bind(&options.socket_path)?,
        };
        let listener = tokio::net::UnixListener::from_std(listener).context("registering the socket with tokio")?;
        (listener, guard)
    };
    #[cfg(windows)]
    let pipe = api::listen::windows::bind(&options.socket_path)?;
    // Only now, holding the socket lock, is the record ours to act on.
    let processes = process::reaper::init(&record_path(&options.socket_path));
    if options.server_cgroups {
        process::cgroup::enable(&processes);
    }

    // Opening the keyring is a D-Bus round trip (or a timeout): off the runtime.
    let credentials = {
        let (mode, data_dir) = (config.credentials_store, options.data_dir.clone());
        tokio::task::spawn_blocking(move || auth::credentials::Credentials::open(mode, &data_dir))
            .await
            .context("opening the credential store")?
    };

    let tracker = TaskTracker::new();
    #[cfg(target_os = "linux")]
    tracker.spawn(process::reap::reap_adopted_orphans(processes.clone(), shutdown.clone()));
    tracker.spawn(process::reap::retry_children_record(
        processes.clone(),
        shutdown.clone(),
    ));
    let Wired {
        hub,
        supervisor,
        reload,
        config_error,
        context,
    } = wire(
        Wiring {
            config: &config,
            config_path: options.config_path.clone(),
            snapshot: config_snapshot,
            config_error,
            socket_path: options.socket_path.clone(),
            started,
            builtin_server: options.builtin_server,
            credentials: Some(credentials.clone()),
            processes: processes.clone(),
            notifier: notifier.clone(),
            poll_interval: options.config_poll_interval,
            answer_deadline: options.answer_deadline,
            test_hooks: options.test_hooks,
        },
        &shutdown,
        &tracker,
    );
    let context = Arc::new(context.with_connection_limits(options.connection_limits).with_oauth(
        credentials,
        auth::oauth::OAuthSettings::from_config(&config),
        shutdown.clone(),
    ));
    tracing::info!(
        socket = %options.socket_path.display(),
        config = %options.config_path.display(),
        servers = config.servers.len(),
        "corrald {} listening",
        env!("CARGO_PKG_VERSION"),
    );
    #[cfg(unix)]
    let acceptor = api::listen::unix::UnixAcceptor::new(listener);
    #[cfg(windows)]
    let acceptor = api::listen::windows::PipeAcceptor::new(options.socket_path.clone(), pipe);
    let server = tracker.spawn(api::serve(acceptor, context, shutdown.clone(), tracker.clone()));

    // The socket accepts (the listener exists and the accept loop runs) and
    // every config server has been launched: tell a service manager.
    tracker.spawn(service::run(
        notifier.clone(),
        supervisor,
        hub,
        config_error,
        options.inherited.watchdog,
        shutdown.child_token(),
    ));

    let mut server = server;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            signal = signals.recv() => {
                tracing::info!(signal, "shutting down");
                break;
            }
            () = reload_signals.recv() => {
                tracing::info!("SIGHUP: reloading the config file");
                reload.request(corral_protocol::ReloadTrigger::Signal);
            }
            result = &mut server => {
                // The accept loop only ends on its own if it could not start.
                result.context("accept loop panicked")??;
                break;
            }
        }
    }
    notifier.notify(service::Notice::Stopping("stopping every server"));
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        tracing::warn!(grace = ?SHUTDOWN_GRACE, "some tasks did not finish in time; exiting anyway");
    }
    let left = processes.kill_everything_left();
    process::cgroup::kill_all_leaves(&processes);
    if left > 0 {
        tracing::warn!(
            processes = left,
            "killed server processes still alive after the shutdown grace"
        );
    }
    processes.remove_record();
    #[cfg(unix)]
    drop(socket_guard);
    notifier.flush(Duration::from_secs(1));
    tracing::info!("stopped");
    Ok(())
}

/// What boot wires together once the socket, the process registry and the
/// credential store exist (also the in-process test tier's daemon, which has
/// no socket).
pub(crate) struct Wiring<'a> {
    pub(crate) config: &'a corral_protocol::config::Config,
    pub(crate) config_path: PathBuf,
    pub(crate) snapshot: config::reload::FileSnapshot,
    /// Why the config file could not be used at start, if so.
    pub(crate) config_error: Option<String>,
    pub(crate) socket_path: PathBuf,
    pub(crate) started: Instant,
    pub(crate) builtin_server: bool,
    pub(crate) credentials: Option<auth::credentials::Credentials>,
    pub(crate) processes: Arc<process::reaper::Registry>,
    pub(crate) notifier: service::Notifier,
    pub(crate) poll_interval: Duration,
    pub(crate) answer_deadline: Duration,
    pub(crate) test_hooks: bool,
}

/// The handles [`wire`] made.
pub(crate) struct Wired {
    pub(crate) hub: Arc<hub::Hub>,
    pub(crate) supervisor: supervisor::SupervisorHandle,
    pub(crate) reload: config::reload::ReloadHandle,
    pub(crate) config_error: tokio::sync::watch::Receiver<Option<String>>,
    /// The API's context, without connection limits or OAuth (the caller's).
    pub(crate) context: api::DaemonContext,
}

/// The hub, the supervisor (every config server launched, the built-in
/// injected unless turned off), the config reloader (a task of `tracker`)
/// and the API's context.
pub(crate) fn wire(wiring: Wiring<'_>, shutdown: &CancellationToken, tracker: &TaskTracker) -> Wired {
    let Wiring {
        config,
        config_path,
        snapshot,
        config_error,
        socket_path,
        started,
        builtin_server,
        credentials,
        processes,
        notifier,
        poll_interval,
        answer_deadline,
        test_hooks,
    } = wiring;
    let hub = Arc::new(hub::Hub::new(EVENT_HISTORY));
    hub.routes.set_answer_deadline(answer_deadline);
    let supervisor = supervisor::spawn(
        config,
        |supervisor| builtin_server.then(|| builtin::injected(supervisor, hub.clone())),
        &hub,
        credentials,
        processes.clone(),
        shutdown.child_token(),
        tracker,
    );
    let (config_error_sender, config_error) = tokio::sync::watch::channel(config_error);
    let (reloader, reload) = config::reload::prepare(config::reload::ReloaderSpec {
        path: config_path.clone(),
        snapshot,
        supervisor: supervisor.clone(),
        hub: hub.clone(),
        config_error: config_error_sender,
        notifier: notifier.clone(),
        poll_interval,
        startup_settings: config::settings::DaemonSettings::of(config),
    });
    tracker.spawn(reloader.run(shutdown.child_token()));
    let context = api::DaemonContext::new(api::ContextSpec {
        started,
        socket_path,
        config_path,
        config_error: config_error.clone(),
        supervisor: supervisor.clone(),
        hub: hub.clone(),
        reload: reload.clone(),
        test_hooks,
    })
    .with_processes(processes)
    .with_notifier(notifier);
    Wired {
        hub,
        supervisor,
        reload,
        config_error,
        context,
    }
}

/// The children record lives next to the socket: one per daemon, and in the
/// runtime directory, which a reboot clears along with every pid in it.
fn record_path(socket: &std::path::Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".children");
    socket.with_file_name(name)
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

/// SIGHUP, the conventional "read your config again" (`systemctl reload`, `kill -HUP`).
#[cfg(unix)]
struct ReloadSignals(tokio::signal::unix::Signal);

#[cfg(unix)]
impl ReloadSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self(
            signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        ))
    }

    async fn recv(&mut self) {
        if self.0.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// Windows has no SIGHUP: reloads come from the file watcher and `config/reload`.
#[cfg(windows)]
struct ReloadSignals;

#[cfg(windows)]
impl ReloadSignals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self)
    }

    async fn recv(&mut self) {
        std::future::pending::<()>().await;
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
