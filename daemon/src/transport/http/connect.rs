//! Connecting: a transport and `initialize`, and `tools/list`, retried
//! after transient failures until the startup deadline.

use std::time::Duration;

use rmcp::model::Tool;
use rmcp::transport::streamable_http_client::{StreamableHttpClient, StreamableHttpClientTransport};
use rmcp::{Peer, RoleClient, ServiceExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::mcp::handler::McpClientHandler;
use crate::transport::McpSession;

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

/// Open a transport over `client` and run `initialize` once.
pub(crate) async fn connect_with<C>(
    client: C,
    prepared: &Prepared,
    handler: McpClientHandler,
    health: mpsc::Sender<HealthSignal>,
) -> Result<McpSession, HttpFailure>
where
    C: StreamableHttpClient + Sync,
    C::Error: 'static,
{
    let observed = Observed {
        inner: client,
        health: health.clone(),
    };
    let transport = StreamableHttpClientTransport::with_client(observed, transport_config(prepared, health));
    handler
        .serve(transport)
        .await
        .map_err(|error| classify_initialize(&error))
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
        backend.connect(prepared, handler(), health.clone())
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
