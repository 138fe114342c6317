//! Connecting: a transport and the start of a session (`initialize`, or the
//! 2026-07-28 start when the server has no `initialize`, see `transport::era`), and
//! `tools/list`, retried after transient failures until the startup deadline.

use std::time::Duration;

#[cfg(doc)]
use rmcp::model::ProtocolVersion;
use rmcp::model::Tool;
use rmcp::service::{ClientLifecycleMode, ClientServiceExt as _};
use rmcp::transport::streamable_http_client::{StreamableHttpClient, StreamableHttpClientTransport};
use rmcp::{Peer, RoleClient};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::mcp::handler::McpClientHandler;
use crate::transport::McpSession;
use crate::transport::era::{self, Opening};

use super::client::{HealthSignal, HttpBackend, Observed, transport_config};
use super::headers::Prepared;
use crate::mcp::classify::{HttpFailure, classify_initialize, classify_service};

/// Waits between attempts of `initialize` / `tools/list` after a transient
/// failure; the last one repeats until the startup deadline.
pub(crate) const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Open a transport over `client` and start a session ([`era::open`]: `initialize`
/// offering [`ProtocolVersion::LATEST_WITH_INITIALIZE`] with the 2026-07-28 headers and
/// `_meta`, and, when the server refuses it, at most one more start, `initialize` at an
/// older version or the 2026-07-28 `server/discover`). A new transport for each.
pub(crate) async fn connect_with<C>(
    server: &str,
    client: C,
    prepared: &Prepared,
    handler: McpClientHandler,
    health: mpsc::Sender<HealthSignal>,
) -> Result<McpSession, HttpFailure>
where
    C: StreamableHttpClient + Sync,
    C::Error: 'static,
{
    let start = |lifecycle: ClientLifecycleMode, handler: McpClientHandler| {
        let observed = Observed {
            inner: client.clone(),
            health: health.clone(),
        };
        let transport =
            StreamableHttpClientTransport::with_client(observed, transport_config(prepared, health.clone()));
        handler.serve_with_lifecycle(transport, lifecycle)
    };
    // Every start has a new transport already: nothing to make again after one closed.
    era::open(server, Opening::handshake(), handler, start)
        .await
        .map(|(session, _)| session)
        .map_err(|not_opened| classify_initialize(&not_opened.error))
}

/// Connect and list the tools, retrying transient failures until `deadline`:
/// a new transport for every `initialize` attempt; `tools/list` (read-only)
/// is retried on the same session.
pub(crate) async fn start(
    server: &str,
    backend: &HttpBackend,
    prepared: &Prepared,
    handler: impl Fn() -> McpClientHandler,
    health: mpsc::Sender<HealthSignal>,
    deadline: Instant,
) -> Result<(McpSession, Vec<Tool>), HttpFailure> {
    let service = reconnect(server, backend, prepared, handler, health, deadline).await?;
    let tools = list_tools(server, service.peer(), deadline).await?;
    Ok((service, tools))
}

/// A new transport and `initialize`, retried after transient failures until
/// `deadline`, with a new transport for every attempt.
pub(crate) async fn reconnect(
    server: &str,
    backend: &HttpBackend,
    prepared: &Prepared,
    handler: impl Fn() -> McpClientHandler,
    health: mpsc::Sender<HealthSignal>,
    deadline: Instant,
) -> Result<McpSession, HttpFailure> {
    with_retries(server, "initialize", deadline, || {
        backend.connect(server, prepared, handler(), health.clone())
    })
    .await
}

/// `tools/list` (every page), retried after transient failures until `deadline`.
pub(crate) async fn list_tools(
    server: &str,
    peer: &Peer<RoleClient>,
    deadline: Instant,
) -> Result<Vec<Tool>, HttpFailure> {
    with_retries(server, "tools/list", deadline, || async {
        peer.list_all_tools().await.map_err(|error| {
            let mut failure = classify_service(&error);
            failure.message = format!("tools/list failed: {}", failure.message);
            failure
        })
    })
    .await
}

/// Run `attempt` until it succeeds, fails for good, or the next wait would
/// pass `deadline` (then the last failure is returned).
async fn with_retries<T, F, Fut>(server: &str, what: &str, deadline: Instant, attempt: F) -> Result<T, HttpFailure>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, HttpFailure>>,
{
    let mut attempts = 0usize;
    loop {
        let failure = match attempt().await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        let delay = RETRY_DELAYS[attempts.min(RETRY_DELAYS.len() - 1)];
        attempts += 1;
        if !failure.retryable || Instant::now() + delay >= deadline {
            return Err(failure);
        }
        tracing::info!(
            server,
            request = what,
            attempt = attempts,
            ?delay,
            reason = %failure.reason,
            "transient failure, retrying: {}",
            failure.message
        );
        tokio::time::sleep(delay).await;
    }
}
