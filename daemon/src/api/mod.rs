//! The front-end API: accepts connections on the daemon's socket, checks who
//! is connecting, and runs one [`connection`] task per front-end.
//!
//! Architecture invariant: this module knows nothing about MCP servers or
//! processes. It talks to the rest of the daemon only through the
//! [`DaemonContext`] (supervisor handle, event hub, daemon facts).

mod catalog;
mod connection;
mod forward;
mod methods;
mod oauth;
#[cfg(windows)]
pub mod pipe;
mod session;
#[cfg(unix)]
pub mod socket;
mod tools;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use corral_protocol::DaemonInfo;
use jsonrpsee::Methods;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::EventHub;
use crate::frontends::Link;
use crate::reload::{ConfigErrorCell, ReloadHandle};
use crate::supervisor::SupervisorHandle;

/// Most front-end connections served at once; more are refused (and logged).
pub const MAX_CONNECTIONS: usize = 1024;

/// Daemon-wide facts and handles the method handlers need.
#[derive(Debug)]
pub struct DaemonContext {
    pub(crate) daemon_info: DaemonInfo,
    pub(crate) started: Instant,
    pub(crate) socket_path: PathBuf,
    pub(crate) config_path: PathBuf,
    /// Why the config file could not be used the last time it was read, if so.
    pub(crate) config_error: ConfigErrorCell,
    pub(crate) supervisor: SupervisorHandle,
    pub(crate) events: Arc<EventHub>,
    pub(crate) reload: ReloadHandle,
    /// Test hook: releases a supervisor wedged by `debug/wedgeSupervisor`.
    pub(crate) wedge_release: std::sync::Mutex<Option<CancellationToken>>,
    /// Whether `debug/*` methods for tests and benchmarks are registered.
    pub(crate) test_hooks: bool,
    /// Stored OAuth credentials; `None` only in contexts built without a store.
    pub(crate) credentials: Option<crate::credentials::Credentials>,
    /// The config's daemon-wide OAuth settings (callback listener, opener).
    pub(crate) oauth_settings: crate::oauth::OAuthSettings,
    /// OAuth logins waiting for the browser.
    pub(crate) logins: oauth::Logins,
    /// When each server last had a step-up authorization (insufficient scope), to bound them.
    pub(crate) step_ups: std::sync::Mutex<std::collections::HashMap<String, Vec<std::time::Instant>>>,
    /// The daemon's shutdown: ends logins still waiting.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    connections: AtomicU32,
    /// One permit per open connection, at most [`MAX_CONNECTIONS`].
    connection_slots: Arc<Semaphore>,
}

impl DaemonContext {
    /// The same context with a credential store, OAuth settings and the daemon's shutdown token.
    pub fn with_oauth(
        mut self,
        credentials: crate::credentials::Credentials,
        settings: crate::oauth::OAuthSettings,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        self.credentials = Some(credentials);
        self.oauth_settings = settings;
        self.shutdown = shutdown;
        self
    }

    /// Context for a daemon that started at `started`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        started: Instant,
        socket_path: PathBuf,
        config_path: PathBuf,
        config_error: ConfigErrorCell,
        supervisor: SupervisorHandle,
        events: Arc<EventHub>,
        reload: ReloadHandle,
        test_hooks: bool,
    ) -> Self {
        Self {
            daemon_info: DaemonInfo::new(env!("CARGO_PKG_VERSION"), std::process::id()),
            started,
            socket_path,
            config_path,
            config_error,
            supervisor,
            events,
            reload,
            wedge_release: std::sync::Mutex::new(None),
            test_hooks,
            credentials: None,
            oauth_settings: crate::oauth::OAuthSettings::default(),
            logins: oauth::Logins::default(),
            step_ups: std::sync::Mutex::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            connections: AtomicU32::new(0),
            connection_slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    pub(crate) fn open_connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Count a new connection if there is room for it; the guard uncounts it.
    fn admit(self: &Arc<Self>) -> Option<ConnectionGuard> {
        let permit = self.connection_slots.clone().try_acquire_owned().ok()?;
        self.connections.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionGuard {
            context: self.clone(),
            _permit: permit,
        })
    }
}

/// Decrements the open-connection count when a connection task ends.
struct ConnectionGuard {
    context: Arc<DaemonContext>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.context.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serve one connection as session `id`; when it ends, so do the servers it added.
///
/// `hung_up` tells, once the front-end's side reached end of stream, whether
/// it closed the connection entirely (so nothing it asked can be answered)
/// rather than only its sending half.
async fn run_connection<S>(
    stream: S,
    hung_up: connection::HungUp,
    id: u64,
    methods: Methods,
    context: Arc<DaemonContext>,
    shutdown: CancellationToken,
    guard: ConnectionGuard,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (link, link_messages) = Link::new(id);
    let session = Arc::new(session::Session::new(id, link.clone()));
    connection::serve(stream, hung_up, session, link_messages, methods, shutdown).await;
    link.close();
    for (server, uri) in context.events.frontends().disconnected(id) {
        catalog::release_subscription(&context, server, uri).await;
    }
    context.supervisor.session_closed(id).await;
    drop(guard);
}

/// Accept and serve connections until `shutdown` is cancelled.
#[cfg(unix)]
pub async fn serve(
    listener: tokio::net::UnixListener,
    context: Arc<DaemonContext>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> anyhow::Result<()> {
    let methods: Methods = methods::build(context.clone())
        .context("registering the front-end methods")?
        .into();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own_uid = unsafe { libc::geteuid() };
    let mut next_id: u64 = 1;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Typically EMFILE: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(credentials) if credentials.uid() == own_uid => {}
            Ok(credentials) => {
                tracing::warn!(peer_uid = credentials.uid(), "refused a connection from another user");
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "refused a connection: cannot read peer credentials");
                continue;
            }
        }
        let Some(guard) = context.admit() else {
            tracing::warn!(
                limit = MAX_CONNECTIONS,
                "refused a connection: too many open connections"
            );
            continue;
        };
        let hung_up = socket::hang_up_probe(&stream);
        tracker.spawn(run_connection(
            stream,
            hung_up,
            next_id,
            methods.clone(),
            context.clone(),
            shutdown.clone(),
            guard,
        ));
        next_id += 1;
    }
    Ok(())
}
