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
//! What its sessions may do is less than the socket's front-ends (their
//! `api::Door`): MCP only, never Corral's protocol, and servers of their own
//! (`sessionServers`, which run commands) only with `allow_session_servers`.
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
//! most [`MAX_HTTP_CONNECTIONS`] TCP connections at once (fewer on a low
//! open-file limit, and kept out of the socket's connection cap: boot
//! reserves their files), and at that cap the oldest connection that has
//! not shown the token is closed for a new one, so another local user
//! holding connections open cannot keep the token's holder out; sessions are engine connections under the gate's cap, and at
//! most half of it (`session::Sessions`: at that cap the least recently
//! used idle session is closed for a new one, and when every one is busy
//! `initialize` gets 503), so HTTP clients can never take every slot from
//! the socket's front-ends; a session with nothing running and no stream
//! open for [`IDLE_SESSION`] is closed, and so is one whose `initialize` is
//! not answered to its client (the client went away).
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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use corral_protocol::McpEndpointStatus;
use corral_protocol::config::McpEndpointConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;

/// A session with nothing running and no stream open this long is closed.
pub(crate) const IDLE_SESSION: Duration = Duration::from_secs(30 * 60);
/// TCP connections served at once (fewer on a low open-file limit: see
/// [`http_connection_cap`]); at the cap the oldest that has not shown the
/// token is closed for a new one.
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
    /// Whether a session may start servers of its own (`allow_session_servers`).
    pub(crate) session_servers: bool,
    /// TCP connections served at once ([`http_connection_cap`]).
    pub(crate) max_http_connections: usize,
}

/// TCP connections the endpoint serves at once with a soft open-file limit
/// of `open_files`: [`MAX_HTTP_CONNECTIONS`], or a quarter of a low limit.
/// Boot keeps them (and the listener) out of the socket's connection cap
/// ([`Settings::open_files`]), so the files a server spawn needs stay free.
pub(crate) fn http_connection_cap(open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else {
        return MAX_HTTP_CONNECTIONS;
    };
    usize::try_from(open_files / 4)
        .unwrap_or(usize::MAX)
        .clamp(1, MAX_HTTP_CONNECTIONS)
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
            session_servers: config.allow_session_servers,
            max_http_connections: http_connection_cap(api::open_file_limit()),
        }))
    }

    /// Open files the endpoint may hold: its TCP connections and its listener.
    pub(crate) fn open_files(&self) -> u64 {
        self.max_http_connections as u64 + 1
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
    // Half the engine's connections at most: the socket's front-ends keep the rest.
    let sessions = Arc::new(session::Sessions::new(engine.max_connections() / 2));
    let service = Arc::new(http::Service {
        engine,
        token,
        allowed: checks::Allowed::new(listen, &settings.allowed_origins),
        sessions: sessions.clone(),
        door: api::Door::Endpoint {
            session_servers: settings.session_servers,
        },
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
    });
    let connections = Arc::new(TcpConnections::new(settings.max_http_connections));
    tracker.spawn(accept_loop(
        listener,
        service,
        connections,
        shutdown.clone(),
        tracker.clone(),
    ));
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
    connections: Arc<TcpConnections>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
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
        let Some(place) = connections.admit() else {
            refusals.refused(connections.max);
            continue;
        };
        // See the module docs; failing to set it only costs time.
        let _ = stream.set_nodelay(true);
        tracker.spawn(serve_connection(stream, service.clone(), shutdown.clone(), place));
    }
}

/// The TCP connections served now, oldest first: at most `max`.
///
/// Anyone on the machine can connect, token or not: a connection that has
/// not shown the token yet gives way, oldest first, to a new one at the cap
/// (as the gate closes the oldest connection still waiting for its
/// handshake), so connections held open by someone without the token never
/// keep the token's holder out. Only when every connection has shown the
/// token is a new one refused.
struct TcpConnections {
    open: Mutex<VecDeque<Arc<TcpConnection>>>,
    max: usize,
}

/// One TCP connection being served.
#[derive(Default)]
struct TcpConnection {
    /// A request of it carried the token.
    trusted: AtomicBool,
    /// Cancelled to close it at once.
    evicted: CancellationToken,
}

/// A connection's place among [`TcpConnections`], given back when dropped.
struct TcpPlace {
    connections: Arc<TcpConnections>,
    connection: Arc<TcpConnection>,
}

impl TcpConnections {
    fn new(max: usize) -> Self {
        Self {
            open: Mutex::default(),
            max: max.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<TcpConnection>>> {
        // A list changed element by element: valid after any panic.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a new connection; at the cap the oldest connection that
    /// has not shown the token is closed for it. `None`: every one has.
    fn admit(self: &Arc<Self>) -> Option<TcpPlace> {
        let mut open = self.lock();
        if open.len() >= self.max {
            let oldest = open
                .iter()
                .position(|connection| !connection.trusted.load(Ordering::Acquire))?;
            if let Some(evicted) = open.remove(oldest) {
                tracing::debug!("MCP endpoint: closing the oldest connection without the token to make room");
                evicted.evicted.cancel();
            }
        }
        let connection = Arc::new(TcpConnection::default());
        open.push_back(connection.clone());
        Some(TcpPlace {
            connections: self.clone(),
            connection,
        })
    }
}

impl Drop for TcpPlace {
    fn drop(&mut self) {
        self.connections
            .lock()
            .retain(|connection| !Arc::ptr_eq(connection, &self.connection));
    }
}

/// Serve one TCP connection's requests (HTTP/1.1, kept alive) until the
/// client closes it, it is evicted (then at once), or the daemon stops (then
/// gracefully, within [`CONNECTION_GRACE`]).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    service: Arc<http::Service>,
    shutdown: CancellationToken,
    place: TcpPlace,
) {
    let connection = place.connection.clone();
    let handler = hyper::service::service_fn(move |request| {
        let (service, connection) = (service.clone(), connection.clone());
        async move { Ok::<_, std::convert::Infallible>(service.handle(request, &connection.trusted).await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_WAIT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), handler);
    let mut served = std::pin::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        () = place.connection.evicted.cancelled() => return,
        () = shutdown.cancelled() => served.as_mut().graceful_shutdown(),
    }
    let _ = tokio::time::timeout(CONNECTION_GRACE, served).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_connection_without_the_token_makes_room() {
        let connections = Arc::new(TcpConnections::new(3));
        let admit = || connections.admit().expect("a place");
        let (first, second, third) = (admit(), admit(), admit());
        first.connection.trusted.store(true, Ordering::Release);
        let fourth = admit();
        assert!(second.connection.evicted.is_cancelled(), "the oldest without the token");
        assert!(!first.connection.evicted.is_cancelled() && !third.connection.evicted.is_cancelled());
        drop(second);
        for place in [&third, &fourth] {
            place.connection.trusted.store(true, Ordering::Release);
        }
        assert!(connections.admit().is_none(), "every connection showed the token");
        drop(first);
        assert!(connections.admit().is_some(), "a place given back");
    }

    #[test]
    fn the_endpoint_serves_fewer_connections_on_a_low_open_file_limit() {
        assert_eq!(http_connection_cap(None), MAX_HTTP_CONNECTIONS);
        assert_eq!(http_connection_cap(Some(1_048_576)), MAX_HTTP_CONNECTIONS);
        assert_eq!(http_connection_cap(Some(128)), 32);
        assert_eq!(http_connection_cap(Some(2)), 1);
    }
}
