//! The loopback streamable-HTTP MCP endpoint: the daemon as one MCP server at
//! `http://127.0.0.1:PORT/mcp`, for MCP clients that take a URL rather than
//! a command. Off by default (`[mcp_endpoint]` in the config, or corrald's
//! `--mcp-endpoint ADDR`).
//!
//! It is a transport, not a second MCP server: each MCP session is a
//! connection of the api's engine (`api::Engine`) over an in-memory duplex,
//! admitted by the same gate (the connection cap counts sessions), served
//! by the same dispatch and the same bridge method table as `corral mcp` on
//! the socket, and ended the same way (its session servers removed). This
//! room only translates HTTP to lines and back (`session`, `http`). It is a
//! room of its own, not a file of `bridge/`, because it names `api` (for
//! the engine) and `api` names `bridge`.
//!
//! Who may talk to it: loopback TCP is open to every local user, so every
//! request must carry the bearer token (`token`: 32 random bytes, a 0600
//! file in the data directory, compared in constant time; 401 otherwise), a
//! `Host` naming a loopback host and an `Origin`, if any, of its own or
//! configured (`checks`; 403 otherwise: DNS rebinding). It binds what the
//! config says, and the config refuses an address that is not loopback
//! unless `allow_non_loopback` is set.
//!
//! Bounds: a body is at most one message (`MAX_MESSAGE_BYTES`, 413);
//! headers must arrive within [`HEADER_WAIT`] and a body within 30 s; at
//! most [`MAX_HTTP_CONNECTIONS`] TCP connections at once (more are closed at
//! once); sessions are engine connections under the gate's cap; a session
//! with nothing running and no stream open for [`IDLE_SESSION`] is closed.
//!
//! Accepted connections get `TCP_NODELAY`: an SSE answer is two writes (the
//! event, then the end of its chunked body), and with Nagle's algorithm the
//! second waited for the client's delayed ACK, about 40 ms per request for a
//! client that reads each answer whole before sending the next.
//!
//! Shutdown: the accept loop stops, every session's engine connection ends
//! with the daemon's shutdown (so its streams end), and each HTTP connection
//! is shut down gracefully within [`CONNECTION_GRACE`]; every task is the
//! daemon's tracker's.

// Unix only for now (the token file's checks are Unix's): elsewhere `start`
// reports that, and the rest is unused.
#![cfg_attr(not(unix), allow(dead_code))]

mod checks;
mod http;
mod session;
mod token;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use corral_protocol::McpEndpointStatus;
use corral_protocol::config::McpEndpointConfig;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;

/// A session with nothing running and no stream open this long is closed.
pub(crate) const IDLE_SESSION: Duration = Duration::from_secs(30 * 60);
/// TCP connections served at once; more are closed at once.
const MAX_HTTP_CONNECTIONS: usize = 256;
/// A request's headers must arrive within this (hyper's default), which is
/// also how long an idle kept-alive connection stays open.
const HEADER_WAIT: Duration = Duration::from_secs(30);
/// How long an HTTP connection may take to finish once the daemon stops.
const CONNECTION_GRACE: Duration = Duration::from_secs(1);

/// What the endpoint serves, from the config and corrald's flag.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Where to listen.
    pub(crate) listen: SocketAddr,
    /// `Origin`s accepted besides the endpoint's own.
    pub(crate) allowed_origins: Vec<String>,
    /// How long a session may be idle.
    pub(crate) idle_session: Duration,
}

impl Settings {
    /// The endpoint `config` asks for, with `--mcp-endpoint ADDR` (`flag`)
    /// turning it on at that address whatever the file says; `Ok(None)`:
    /// off. `Err`: the flag names an address that is not loopback while the
    /// config does not allow one (the config's own address was checked when
    /// the file was read).
    pub(crate) fn of(config: &McpEndpointConfig, flag: Option<SocketAddr>) -> Result<Option<Self>, String> {
        let listen = match flag {
            Some(listen) => {
                if !listen.ip().is_loopback() && !config.allow_non_loopback {
                    return Err(format!(
                        "--mcp-endpoint {listen}: not a loopback address, so other machines could reach the \
                         endpoint; use 127.0.0.1 or [::1], or set `allow_non_loopback = true` in [mcp_endpoint] \
                         if that is what you want"
                    ));
                }
                listen
            }
            None if config.enabled => config.listen,
            None => return Ok(None),
        };
        Ok(Some(Self {
            listen,
            allowed_origins: config.allowed_origins.clone(),
            idle_session: IDLE_SESSION,
        }))
    }
}

/// Start the endpoint: its token (made on first use), its listener, its
/// accept loop and idle sweeper as tasks of `tracker`. What `daemon/status`
/// says about it: where it serves, or why it could not start (corrald runs
/// on without it).
pub(crate) async fn start(
    settings: Settings,
    engine: api::Engine,
    data_dir: &Path,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> McpEndpointStatus {
    match try_start(settings, engine, data_dir, shutdown, tracker).await {
        Ok(status) => status,
        Err(error) => {
            let error = format!("{error:#}");
            tracing::error!("the MCP endpoint is not served: {error}");
            McpEndpointStatus::failed(error)
        }
    }
}

#[cfg(unix)]
async fn try_start(
    settings: Settings,
    engine: api::Engine,
    data_dir: &Path,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<McpEndpointStatus> {
    use anyhow::Context as _;
    let (token, token_file) = {
        let data_dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || token::Token::load_or_create(&data_dir))
            .await
            .context("making the MCP endpoint's token")??
    };
    let listener = tokio::net::TcpListener::bind(settings.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another program using the port? choose another `listen` in [mcp_endpoint])",
            settings.listen
        )
    })?;
    let listen = listener.local_addr().context("reading the MCP endpoint's address")?;
    let url = format!("http://{listen}{}", http::PATH);
    tracing::info!(%url, token_file = %token_file.display(), "serving the MCP endpoint");
    let sessions = Arc::new(session::Sessions::default());
    let service = Arc::new(http::Service {
        engine,
        token,
        allowed: checks::Allowed::new(listen, &settings.allowed_origins),
        sessions: sessions.clone(),
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
    });
    tracker.spawn(accept_loop(listener, service, shutdown.clone(), tracker.clone()));
    tracker.spawn(close_idle_sessions(sessions, settings.idle_session, shutdown.clone()));
    Ok(McpEndpointStatus::serving(url, token_file.display().to_string()))
}

#[cfg(not(unix))]
async fn try_start(
    _settings: Settings,
    _engine: api::Engine,
    _data_dir: &Path,
    _shutdown: &CancellationToken,
    _tracker: &TaskTracker,
) -> anyhow::Result<McpEndpointStatus> {
    anyhow::bail!("the MCP endpoint is not available on this platform yet: use `corral mcp`")
}

/// Accept TCP connections until shutdown, each served by hyper as a task.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    service: Arc<http::Service>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let connections = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    let mut refusals = api::RefusalLog::default();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Typically EMFILE: back off briefly instead of spinning.
                refusals.accept_failed(&error);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            refusals.refused(MAX_HTTP_CONNECTIONS);
            continue;
        };
        // See the module docs; failing to set it only costs time.
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve_connection(stream, service.clone(), shutdown.clone(), slot));
    }
}

/// Serve one TCP connection's requests (HTTP/1.1, kept alive) until the
/// client closes it, or the daemon stops (then gracefully, within
/// [`CONNECTION_GRACE`]).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    service: Arc<http::Service>,
    shutdown: CancellationToken,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let handler = hyper::service::service_fn(move |request| {
        let service = service.clone();
        async move { Ok::<_, std::convert::Infallible>(service.handle(request).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_WAIT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), handler);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    let _ = tokio::time::timeout(CONNECTION_GRACE, connection).await;
}

/// Close sessions idle for `idle`, checking a few times per period, until shutdown.
async fn close_idle_sessions(sessions: Arc<session::Sessions>, idle: Duration, shutdown: CancellationToken) {
    let period = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        sessions.close_idle(idle);
    }
}
