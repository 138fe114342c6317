//! Boot, and its mirror, the shutdown: the one place that makes the daemon's
//! long-lived objects and hands them to each other ([`start`], [`wire`]), and
//! takes them down in order ([`Running::shut_down`]).
//!
//! Architecture invariant: only boot names the built-in server (it is
//! injected into the supervisor as an `InProcessServer`), and only boot holds
//! the process registry, the socket guard and the task tracker all together.
//! Order matters and is kept here: the open-file limit is raised before
//! anything is opened; the children record is acted on only once the socket
//! lock is held; the socket is removed before the lock is released, after
//! every task had its time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{EVENT_HISTORY, Options, SHUTDOWN_GRACE};
use crate::{api, auth, builtin, config, endpoint, hub, process, service, supervisor};

/// The daemon between boot and shutdown: what [`run`](crate::run) waits on,
/// and what the shutdown needs.
pub(crate) struct Running {
    /// The accept loop; it ends on its own only if it could not start.
    pub(crate) accept_loop: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Asks the reloader to read the config file again (SIGHUP).
    pub(crate) reload: config::reload::ReloadHandle,
    notifier: service::Notifier,
    tracker: TaskTracker,
    processes: Arc<process::reaper::Registry>,
    /// Removes the socket when dropped.
    #[cfg(unix)]
    socket_guard: api::listen::unix::SocketGuard,
}

/// Bring the daemon up: load the config, bind (or adopt) the socket, take
/// over the children record, make the credential store (opened on first
/// use), wire everything
/// ([`wire`]), start the accept loop and the loopback MCP endpoint (when
/// turned on), and tell a service manager.
pub(crate) async fn start(
    mut options: Options,
    started: Instant,
    shutdown: &CancellationToken,
) -> anyhow::Result<Running> {
    let notifier = service::Notifier::start();
    // Before anything is opened: the connection cap is derived from it.
    let open_files = raise_open_file_limit();
    tracing::debug!(?open_files, "open-file limit");
    let config_snapshot = config::reload::FileSnapshot::take(&options.config_path);
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
    if let Some(OpenFiles {
        inherited,
        in_force,
        hard,
    }) = open_files
        && inherited < in_force
    {
        // Raised for corrald's own sockets and pipes; servers start with the
        // limit corrald was given, as if the user had started them.
        processes.set_child_open_files(inherited, hard);
    }

    // Opened by whatever needs it first (an HTTP server, a login, `daemon/status`): a daemon
    // without HTTP servers never connects to D-Bus for the keyring.
    let credentials = auth::credentials::Credentials::lazy(config.credentials_store, &options.data_dir);

    // Before the gate is made: the endpoint's files are kept out of the connection cap.
    let endpoint = endpoint::Settings::of(&config.mcp_endpoint, options.mcp_endpoint);
    if let Ok(Some(settings)) = &endpoint {
        options.connection_limits.other_files = settings.open_files();
    }

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
        mcp_endpoint,
    } = wire(
        Wiring {
            config: &config,
            config_path: options.config_path.clone(),
            snapshot: config_snapshot,
            config_error,
            socket_path: options.socket_path.clone(),
            started,
            builtin_server: options.builtin_server,
            credentials: Some(credentials),
            processes: processes.clone(),
            notifier: notifier.clone(),
            poll_interval: options.config_poll_interval,
            answer_deadline: options.answer_deadline,
            connection_limits: options.connection_limits,
            test_hooks: options.test_hooks,
        },
        shutdown,
        &tracker,
    );
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
    let engine = api::Engine::new(context, shutdown.clone())?;
    // Before the socket's first connection is accepted, so that whoever asks
    // `daemon/status` (`corral mcp url`) finds the endpoint's state. The
    // socket serves whatever happens to the endpoint: its failure is
    // reported (log, `daemon/status`), never fatal.
    match endpoint {
        Ok(None) => {}
        Ok(Some(mut settings)) => {
            settings.idle_session = options.mcp_endpoint_idle;
            let status = endpoint::start(settings, engine.clone(), &options.data_dir, shutdown, &tracker).await;
            mcp_endpoint.send_replace(Some(status));
        }
        Err(error) => {
            tracing::error!("the MCP endpoint is not served: {error}");
            mcp_endpoint.send_replace(Some(corral_protocol::McpEndpointStatus::failed(error)));
        }
    }
    let accept_loop = tracker.spawn(api::serve(acceptor, engine, tracker.clone()));

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
    Ok(Running {
        accept_loop,
        reload,
        notifier,
        tracker,
        processes,
        #[cfg(unix)]
        socket_guard,
    })
}

impl Running {
    /// Stop every task (each gets [`SHUTDOWN_GRACE`]), kill what servers
    /// left, remove the children record, then the socket.
    pub(crate) async fn shut_down(self, shutdown: &CancellationToken) {
        let Self {
            accept_loop: _,
            reload: _,
            notifier,
            tracker,
            processes,
            #[cfg(unix)]
            socket_guard,
        } = self;
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
    }
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
    pub(crate) connection_limits: api::ConnectionLimits,
    pub(crate) test_hooks: bool,
}

/// The handles [`wire`] made.
pub(crate) struct Wired {
    pub(crate) hub: Arc<hub::Hub>,
    pub(crate) supervisor: supervisor::SupervisorHandle,
    pub(crate) reload: config::reload::ReloadHandle,
    pub(crate) config_error: tokio::sync::watch::Receiver<Option<String>>,
    /// The API's context, complete.
    pub(crate) context: Arc<api::DaemonContext>,
    /// Where boot publishes the loopback MCP endpoint's state once started.
    pub(crate) mcp_endpoint: tokio::sync::watch::Sender<Option<corral_protocol::McpEndpointStatus>>,
}

/// The hub, the daemon's [`auth::Auth`], the supervisor (every config server
/// launched, the built-in injected unless turned off), the config reloader (a
/// task of `tracker`) and the API's context.
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
        connection_limits,
        test_hooks,
    } = wiring;
    let hub = Arc::new(hub::Hub::new(EVENT_HISTORY));
    hub.routes.set_answer_deadline(answer_deadline);
    // Read once: the OAuth settings in force, and what a reload compares with.
    let settings = config::settings::DaemonSettings::of(config);
    let auth = Arc::new(auth::Auth::new(
        credentials,
        settings.oauth().clone(),
        shutdown.clone(),
        tracker.clone(),
    ));
    let supervisor = supervisor::spawn(
        config,
        |supervisor| builtin_server.then(|| builtin::injected(supervisor, hub.clone())),
        &hub,
        auth.credentials().cloned(),
        processes.clone(),
        shutdown.child_token(),
        tracker,
    );
    let (config_error_sender, config_error) = tokio::sync::watch::channel(config_error);
    let (mcp_endpoint, mcp_endpoint_status) = tokio::sync::watch::channel(None);
    let (reloader, reload) = config::reload::prepare(config::reload::ReloaderSpec {
        path: config_path.clone(),
        snapshot,
        supervisor: supervisor.clone(),
        hub: hub.clone(),
        config_error: config_error_sender,
        notifier: notifier.clone(),
        poll_interval,
        startup_settings: settings,
    });
    tracker.spawn(reloader.run(shutdown.child_token()));
    let context = Arc::new(api::DaemonContext::new(api::ContextSpec {
        started,
        socket_path,
        config_path,
        config_error: config_error.clone(),
        children_record_error: processes.record_errors(),
        notifier,
        mcp_endpoint: mcp_endpoint_status,
        supervisor: supervisor.clone(),
        hub: hub.clone(),
        reload: reload.clone(),
        auth,
        tasks: tracker.clone(),
        connection_limits,
        test_hooks,
    }));
    api::spawn_step_ups_at_start(&context, shutdown.child_token());
    Wired {
        hub,
        supervisor,
        reload,
        config_error,
        context,
        mcp_endpoint,
    }
}

/// The soft open-file limit corrald was started with, and the one in force
/// after [`raise_open_file_limit`] (`u64::MAX`: unlimited); the hard limit
/// (`None`: unlimited), unchanged.
#[derive(Debug, Clone, Copy)]
struct OpenFiles {
    inherited: u64,
    in_force: u64,
    hard: Option<u64>,
}

/// Raise the soft open-file limit to the hard limit (the common default soft
/// limit of 1024 is too low for a daemon serving many front-ends and
/// servers); `None` where there is no such limit. Servers get the inherited
/// limit back when they start (`Registry::set_child_open_files`), so the
/// raise is corrald's alone.
fn raise_open_file_limit() -> Option<OpenFiles> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let inherited = limit.current.unwrap_or(u64::MAX);
        let mut in_force = inherited;
        let hard = limit.maximum.unwrap_or(u64::MAX);
        if inherited < hard {
            let mut raised = limit;
            raised.current = limit.maximum;
            // macOS refuses more than OPEN_MAX with RLIM_INFINITY; keep the old limit then.
            if setrlimit(Resource::Nofile, raised).is_ok() {
                in_force = hard;
            }
        }
        Some(OpenFiles {
            inherited,
            in_force,
            hard: limit.maximum,
        })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The children record lives next to the socket: one per daemon, and in the
/// runtime directory, which a reboot clears along with every pid in it.
fn record_path(socket: &std::path::Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".children");
    socket.with_file_name(name)
}
