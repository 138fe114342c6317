//! Streamable-HTTP MCP servers: building the request headers, the HTTP
//! client and rmcp's streamable-HTTP transport, connecting with retries, and
//! turning transport errors into [`FailureReason`]s.
//!
//! The lifecycle (starting → ready → reconnect after the server went away)
//! is `server.rs`'s, shared with stdio servers; this module only knows HTTP.
//!
//! **The seam for authentication.** Everything here is generic over rmcp's
//! [`StreamableHttpClient`]; which client a server gets is decided in one
//! place, [`HttpBackend`]: a plain `reqwest::Client` with no global timeout
//! (a timeout would cut the long-lived SSE `GET`, [`HttpBackend::plain`]),
//! or rmcp's OAuth-managed `AuthClient<reqwest::Client>` (whose error type
//! is also `reqwest::Error`), chosen in `server.rs::run_http` when stored
//! credentials exist; [`HttpBackend::connect`] dispatches both to the same
//! generic [`connect_with`].
//! Static headers, env headers and a bearer env var are resolved by
//! [`prepare`]; a stored token must never be used when the config has an
//! `Authorization` header (static or from the environment, set or not) or
//! `bearer_token_env_var` ([`Prepared::has_explicit_authorization`]).
//!
//! **Retries.** `initialize` and the first `tools/list` are retried after
//! transient failures (connect errors, no response, HTTP 408/429/500/502/503/504)
//! with short backoff ([`RETRY_DELAYS`]) until the startup deadline, with a
//! fresh transport for every `initialize` attempt. Nothing else is replayed
//! here: `tools/call` and every other request go out once (session recovery
//! after a 404, which retries once, is `server.rs` + `api`).
//!
//! Invariant: no secret (header value, token) appears in an error message or
//! a log line; URLs are not quoted either (they may carry a token).

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use corral_protocol::FailureReason;
use corral_protocol::config::HttpConfig;
use futures_core::stream::BoxStream;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, Tool};
use rmcp::service::{ClientInitializeError, RunningService};
use rmcp::transport::common::client_side_sse::SseRetryPolicy;
use rmcp::transport::streamable_http_client::SseError;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransport, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse,
};
use rmcp::{Peer, RoleClient, ServiceError, ServiceExt as _};
use sse_stream::Sse;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::mcp_client::ServerClient;

/// corrald's MCP session with one server.
pub(crate) type Session = RunningService<RoleClient, ServerClient>;

/// Waits between attempts of `initialize` / `tools/list` after a transient
/// failure; the last one repeats until the startup deadline.
pub(crate) const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// How long connecting (TCP + TLS) may take; the only timeout of the client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers the MCP transport sets itself; configuring them is refused.
const RESERVED_HEADERS: [&str; 3] = ["accept", "mcp-session-id", "last-event-id"];

/// HTTP statuses after which `initialize` / `tools/list` are retried.
const RETRYABLE_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// A server's URL and headers, resolved from its config and corrald's environment.
#[derive(Clone)]
pub(crate) struct Prepared {
    url: Arc<str>,
    headers: HashMap<HeaderName, HeaderValue>,
    /// The token of `bearer_token_env_var` (sent as `Authorization: Bearer …`).
    bearer_token: Option<String>,
    explicit_authorization: bool,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values and the token are secrets: names only.
        f.debug_struct("Prepared")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("bearer_token", &self.bearer_token.is_some())
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Whether the config sets `Authorization` itself (a header or
    /// `bearer_token_env_var`): then no stored credential may be loaded.
    pub(crate) fn has_explicit_authorization(&self) -> bool {
        self.explicit_authorization
    }
}

/// Why a server could not be started or reached, as front-ends see it.
#[derive(Debug, Clone)]
pub(crate) struct HttpFailure {
    pub(crate) reason: FailureReason,
    /// A sentence without secrets.
    pub(crate) message: String,
    /// A transient failure: worth another attempt of an idempotent request.
    pub(crate) retryable: bool,
    /// The server answered 404 to a request carrying a session id.
    pub(crate) session_expired: bool,
}

impl HttpFailure {
    pub(crate) fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            retryable: false,
            session_expired: false,
        }
    }

    fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
}

/// Resolve a server's headers: `http_headers`, then `env_http_headers` (an
/// unset or blank variable skips its header with a warning), then
/// `bearer_token_env_var` (unset, empty or non-Unicode fails, naming the
/// variable). `lookup` reads corrald's environment.
pub(crate) fn prepare(
    server: &str,
    config: &HttpConfig,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<Prepared, HttpFailure> {
    let invalid = |message: String| HttpFailure::new(FailureReason::ConfigInvalid, message);
    let mut headers = HashMap::new();
    for (name, value) in &config.http_headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("invalid HTTP header name `{name}` in http_headers")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("invalid value for HTTP header `{name}` in http_headers")))?;
        headers.insert(header, value);
    }
    for (name, variable) in &config.env_http_headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("invalid HTTP header name `{name}` in env_http_headers")))?;
        let value = lookup(variable).unwrap_or_default();
        if value.to_string_lossy().trim().is_empty() {
            tracing::warn!(
                server,
                header = %name,
                variable = %variable,
                "environment variable for the header is unset or blank; the header is not sent"
            );
            continue;
        }
        let value = os_bytes(&value)
            .and_then(|bytes| HeaderValue::from_bytes(&bytes).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "environment variable `{variable}` (env_http_headers, header `{name}`) is not a valid HTTP header value"
                ))
            })?;
        headers.insert(header, value);
    }
    let bearer_token = match &config.bearer_token_env_var {
        None => None,
        Some(variable) => {
            let value = lookup(variable).ok_or_else(|| {
                invalid(format!(
                    "environment variable `{variable}` (bearer_token_env_var) is not set"
                ))
            })?;
            let token = value.into_string().map_err(|_| {
                invalid(format!(
                    "environment variable `{variable}` (bearer_token_env_var) is not valid Unicode"
                ))
            })?;
            if token.trim().is_empty() {
                return Err(invalid(format!(
                    "environment variable `{variable}` (bearer_token_env_var) is empty"
                )));
            }
            if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                return Err(invalid(format!(
                    "environment variable `{variable}` (bearer_token_env_var) is not a valid HTTP header value"
                )));
            }
            Some(token)
        }
    };
    if let Some(reserved) = headers.keys().find(|name| RESERVED_HEADERS.contains(&name.as_str())) {
        return Err(invalid(format!(
            "header `{reserved}` is set by the MCP transport itself and cannot be configured"
        )));
    }
    let header_authorization = headers.contains_key(&AUTHORIZATION);
    if header_authorization && bearer_token.is_some() {
        return Err(invalid(
            "both an `Authorization` header and `bearer_token_env_var` are configured; keep one".to_owned(),
        ));
    }
    Ok(Prepared {
        url: Arc::from(config.url.as_str()),
        headers,
        explicit_authorization: configures_authorization(config),
        bearer_token,
    })
}

/// Whether `config` gives the server credentials of its own: an
/// `Authorization` header (static, or from the environment whether or not
/// the variable is set today) or `bearer_token_env_var`. Such a server never
/// gets stored OAuth tokens, cannot be logged in to, and its `authStatus` is
/// `bearerToken`.
pub(crate) fn configures_authorization(config: &HttpConfig) -> bool {
    config.bearer_token_env_var.is_some()
        || config
            .http_headers
            .keys()
            .chain(config.env_http_headers.keys())
            .any(|name| name.eq_ignore_ascii_case(AUTHORIZATION.as_str()))
}

#[cfg(unix)]
fn os_bytes(value: &std::ffi::OsStr) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt as _;
    Some(value.as_bytes().to_vec())
}

#[cfg(not(unix))]
fn os_bytes(value: &std::ffi::OsStr) -> Option<Vec<u8>> {
    value.to_str().map(|value| value.as_bytes().to_vec())
}

/// What the transport noticed about the server while the session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthSignal {
    /// A request or the event stream could not reach the server (connect
    /// error, no response): it may have gone away.
    Unreachable,
    /// The server answered 401 after the OAuth client had tried its stored
    /// credentials and a refresh: a new login is needed.
    AuthRequired,
    /// The server answered 404 to the session id: the session is gone.
    SessionExpired,
}

/// The HTTP client a server's transport uses: **the authentication seam**.
///
/// Add the OAuth-managed client as a variant (`OAuth(AuthClient<reqwest::Client>)`)
/// and one arm in [`HttpBackend::connect`]; nothing else in the daemon changes.
#[derive(Debug, Clone)]
pub(crate) enum HttpBackend {
    /// Plain reqwest (rustls): static headers, env headers and a bearer token from the environment.
    Plain(reqwest::Client),
    /// rmcp's OAuth-managed client over the same reqwest client: stored credentials, refreshed
    /// before they expire (one manager per server run, shared by every transport of the run).
    OAuth(rmcp::transport::auth::AuthClient<reqwest::Client>),
}

impl HttpBackend {
    /// A plain client for a server. It has a connect timeout but no overall
    /// request timeout, which would cut the long-lived SSE `GET` short.
    /// `server.rs` wraps it in rmcp's `AuthClient` ([`HttpBackend::OAuth`])
    /// when the server has stored OAuth credentials and its config sets no
    /// `Authorization` of its own.
    pub(crate) fn plain() -> Result<Self, HttpFailure> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|error| {
                HttpFailure::new(
                    FailureReason::ConfigInvalid,
                    format!("cannot build an HTTP client: {}", error_chain(&error)),
                )
            })?;
        Ok(Self::Plain(client))
    }

    /// One transport and one `initialize` (no retry; see `connect`).
    async fn connect(
        &self,
        prepared: &Prepared,
        handler: ServerClient,
        health: mpsc::Sender<HealthSignal>,
    ) -> Result<Session, HttpFailure> {
        match self {
            Self::Plain(client) => connect_with(client.clone(), prepared, handler, health).await,
            Self::OAuth(client) => connect_with(client.clone(), prepared, handler, health).await,
        }
    }
}

/// rmcp's transport config for a server: our headers, and no transparent
/// re-initialization (a 404 reaches us, so that recovery is exactly ours: one
/// rebuild and one retry, see `server.rs`).
fn transport_config(prepared: &Prepared, health: mpsc::Sender<HealthSignal>) -> StreamableHttpClientTransportConfig {
    let mut config = StreamableHttpClientTransportConfig::with_uri(prepared.url.clone())
        .custom_headers(prepared.headers.clone())
        .reinit_on_expired_session(false);
    if let Some(token) = &prepared.bearer_token {
        config = config.auth_header(token.clone());
    }
    config.retry_config = Arc::new(EventStreamRetry { health });
    config
}

/// Open a transport over `client` and run `initialize` once.
pub(crate) async fn connect_with<C>(
    client: C,
    prepared: &Prepared,
    handler: ServerClient,
    health: mpsc::Sender<HealthSignal>,
) -> Result<Session, HttpFailure>
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
    handler: impl Fn() -> ServerClient,
    health: mpsc::Sender<HealthSignal>,
    deadline: Instant,
) -> Result<(Session, Vec<Tool>), HttpFailure> {
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
    handler: impl Fn() -> ServerClient,
    health: mpsc::Sender<HealthSignal>,
    deadline: Instant,
) -> Result<Session, HttpFailure> {
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

/// The failure of an `initialize`.
pub(crate) fn classify_initialize(error: &ClientInitializeError) -> HttpFailure {
    // rmcp nests the 401 (or a manager's "authorization required") inside the transport error.
    if error.is_authorization_required() && !matches!(classify_any(error), Some(FailureReason::InsufficientScope)) {
        return HttpFailure::new(
            FailureReason::AuthenticationRequired,
            "initialize failed: the server requires authentication (HTTP 401)",
        );
    }
    match error {
        ClientInitializeError::TransportError { error, .. } => {
            let mut failure = classify_transport(error.error.as_ref());
            failure.message = format!("initialize failed: {}", failure.message);
            failure
        }
        ClientInitializeError::JsonRpcError(error) => HttpFailure::new(
            FailureReason::ProtocolError,
            format!("the server answered initialize with an error: {}", error.message),
        ),
        // The worker ended during the handshake: it says why in the log only,
        // and the reason is usually the connection.
        ClientInitializeError::ConnectionClosed(context) => HttpFailure::new(
            FailureReason::Unreachable,
            format!("initialize failed: the connection closed ({context})"),
        )
        .retryable(),
        other => HttpFailure::new(FailureReason::ProtocolError, format!("initialize failed: {other}")),
    }
}

/// The reason of an initialize failure's transport error, if it has one.
fn classify_any(error: &ClientInitializeError) -> Option<FailureReason> {
    match error {
        ClientInitializeError::TransportError { error, .. } => Some(classify_transport(error.error.as_ref()).reason),
        _ => None,
    }
}

/// The failure of a request on a running session.
pub(crate) fn classify_service(error: &ServiceError) -> HttpFailure {
    match error {
        ServiceError::TransportSend(error) => classify_transport(error.error.as_ref()),
        ServiceError::TransportClosed => HttpFailure::new(FailureReason::Unreachable, "the session is closed"),
        ServiceError::McpError(error) => HttpFailure::new(
            FailureReason::ProtocolError,
            format!("the server answered with an error: {}", error.message),
        ),
        other => HttpFailure::new(FailureReason::ProtocolError, other.to_string()),
    }
}

/// What went wrong with a request that failed in the streamable-HTTP
/// transport (`None` for other transports and other errors). Unlike the
/// error's own text, the message never quotes the URL.
pub(crate) fn send_failure(error: &ServiceError) -> Option<HttpFailure> {
    let ServiceError::TransportSend(error) = error else {
        return None;
    };
    error.error.downcast_ref::<StreamableHttpError<reqwest::Error>>()?;
    Some(classify_transport(error.error.as_ref()))
}

/// The scope a 403 `insufficient_scope` challenge asks for, if that is why a request failed.
pub(crate) fn required_scope(error: &ServiceError) -> Option<String> {
    let ServiceError::TransportSend(error) = error else {
        return None;
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error.error.as_ref());
    while let Some(current) = source {
        if let Some(StreamableHttpError::InsufficientScope(scope)) =
            current.downcast_ref::<StreamableHttpError<reqwest::Error>>()
        {
            return scope.required_scope.clone().or_else(|| Some(String::new()));
        }
        source = current.source();
    }
    None
}

/// Whether a request failed because the server no longer knows the session (HTTP 404).
pub(crate) fn is_session_expired(error: &ServiceError) -> bool {
    matches!(error, ServiceError::TransportSend(_)) && classify_service(error).session_expired
}

/// Classify what rmcp's streamable-HTTP transport returned.
fn classify_transport(error: &(dyn std::error::Error + Send + Sync + 'static)) -> HttpFailure {
    let Some(error) = error.downcast_ref::<StreamableHttpError<reqwest::Error>>() else {
        return HttpFailure::new(FailureReason::ProtocolError, error_chain(error));
    };
    match error {
        StreamableHttpError::Client(error) => classify_reqwest(error),
        StreamableHttpError::HttpStatus(status) => status_failure(status.status),
        StreamableHttpError::AuthRequired(_) => HttpFailure::new(
            FailureReason::AuthenticationRequired,
            "the server requires authentication (HTTP 401)",
        ),
        StreamableHttpError::InsufficientScope(scope) => HttpFailure::new(
            FailureReason::InsufficientScope,
            match &scope.required_scope {
                Some(required) => format!("the credentials lack a required scope (HTTP 403; required: {required})"),
                None => "the credentials lack a required scope (HTTP 403)".to_owned(),
            },
        ),
        StreamableHttpError::SessionExpired => HttpFailure {
            reason: FailureReason::ProtocolError,
            message: "the server no longer knows the session (HTTP 404)".to_owned(),
            retryable: false,
            session_expired: true,
        },
        StreamableHttpError::UnexpectedServerResponse(text) => match parse_status(text) {
            Some(status) => status_failure(status),
            None => HttpFailure::new(FailureReason::ProtocolError, format!("unexpected response: {text}")),
        },
        StreamableHttpError::Auth(error) => classify_auth(error),
        StreamableHttpError::ReservedHeaderConflict(name) => HttpFailure::new(
            FailureReason::ConfigInvalid,
            format!("header `{name}` is reserved by the MCP transport and cannot be configured"),
        ),
        // The response or the stream broke off: no answer was received.
        StreamableHttpError::Io(_) | StreamableHttpError::UnexpectedEndOfStream | StreamableHttpError::Sse(_) => {
            HttpFailure::new(
                FailureReason::Unreachable,
                format!("no response: {}", error_chain(error)),
            )
            .retryable()
        }
        other => HttpFailure::new(FailureReason::ProtocolError, error_chain(other)),
    }
}

/// What rmcp's OAuth manager reported while getting or refreshing a token.
fn classify_auth(error: &rmcp::transport::auth::AuthError) -> HttpFailure {
    use rmcp::transport::auth::AuthError;
    match error {
        AuthError::AuthorizationRequired | AuthError::TokenRefreshRejected(_) | AuthError::TokenExpired => {
            HttpFailure::new(
                FailureReason::AuthenticationRequired,
                "the stored OAuth credentials cannot be used or refreshed",
            )
        }
        // A refresh that failed for a transient reason (network, provider 5xx): try again.
        AuthError::TokenRefreshFailed(why) => HttpFailure::new(
            FailureReason::Unreachable,
            format!("refreshing the OAuth token failed: {why}"),
        )
        .retryable(),
        AuthError::CredentialStoreError(why) => HttpFailure::new(
            FailureReason::ConfigInvalid,
            format!("cannot read the stored OAuth credentials: {why}"),
        ),
        other => HttpFailure::new(FailureReason::ProtocolError, format!("OAuth error: {other}")),
    }
}

fn classify_reqwest(error: &reqwest::Error) -> HttpFailure {
    if let Some(status) = error.status() {
        return status_failure(status.as_u16());
    }
    // reqwest's own message quotes the URL, which may carry a token: use the causes only.
    let cause = sources(error);
    if error.is_connect() {
        HttpFailure::new(
            FailureReason::Unreachable,
            format!("cannot connect to the server: {cause}"),
        )
        .retryable()
    } else if error.is_timeout() {
        HttpFailure::new(FailureReason::Unreachable, format!("the request timed out: {cause}")).retryable()
    } else if error.is_builder() {
        HttpFailure::new(
            FailureReason::ConfigInvalid,
            format!("cannot build the request: {cause}"),
        )
    } else {
        // Sent, but no status came back (connection reset, body cut off).
        HttpFailure::new(
            FailureReason::Unreachable,
            format!("no response from the server: {cause}"),
        )
        .retryable()
    }
}

fn status_failure(status: u16) -> HttpFailure {
    let reason = match status {
        401 => FailureReason::AuthenticationRequired,
        _ => FailureReason::HttpError,
    };
    let text = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("");
    let failure = HttpFailure::new(
        reason,
        format!("the server answered HTTP {status} {text}")
            .trim_end()
            .to_owned(),
    );
    if RETRYABLE_STATUSES.contains(&status) {
        failure.retryable()
    } else {
        failure
    }
}

/// The status of rmcp's `"HTTP 503 Service Unavailable: <body>"` messages.
fn parse_status(text: &str) -> Option<u16> {
    text.strip_prefix("HTTP ")?.get(..3)?.parse().ok()
}

/// An error and its causes, `: `-joined.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The causes of an error without the error itself.
fn sources(error: &(dyn std::error::Error + 'static)) -> String {
    match error.source() {
        Some(source) => error_chain(source),
        None => "unknown cause".to_owned(),
    }
}

/// rmcp's SSE reconnect policy for the event stream, which also tells the
/// server task when a reconnect attempt failed (the server may be gone).
#[derive(Debug)]
struct EventStreamRetry {
    health: mpsc::Sender<HealthSignal>,
}

impl SseRetryPolicy for EventStreamRetry {
    fn retry(&self, current_times: usize) -> Option<Duration> {
        if current_times > 0 {
            // A full channel already holds a signal: coalesced.
            let _ = self.health.try_send(HealthSignal::Unreachable);
        }
        let delay = RETRY_DELAYS[current_times.min(RETRY_DELAYS.len() - 1)];
        Some(delay)
    }
}

/// A [`StreamableHttpClient`] that passes everything to `inner` and reports
/// what it sees about the server's health (unreachable, session gone) to the
/// server task. Works over any client, plain or OAuth-managed.
#[derive(Clone)]
struct Observed<C> {
    inner: C,
    health: mpsc::Sender<HealthSignal>,
}

impl<C> Observed<C>
where
    C: StreamableHttpClient,
{
    /// Report what a request saw. A 404 to a POST is not reported: the
    /// request's sender recovers the session itself (once); a 404 to the
    /// event stream's `GET` has no sender waiting, so the task renews the
    /// session then.
    fn observe<T>(&self, result: &Result<T, StreamableHttpError<C::Error>>, stream_of_session: bool) {
        let signal = match result {
            Ok(_) => return,
            Err(StreamableHttpError::Client(error)) => {
                let error: &(dyn std::error::Error + 'static) = error;
                match error.downcast_ref::<reqwest::Error>() {
                    Some(error) if error.status().is_some_and(|status| status.as_u16() == 404) && stream_of_session => {
                        HealthSignal::SessionExpired
                    }
                    Some(error) if error.status().is_none() && !error.is_builder() => HealthSignal::Unreachable,
                    _ => return,
                }
            }
            Err(StreamableHttpError::Io(_)) => HealthSignal::Unreachable,
            Err(StreamableHttpError::AuthRequired(_)) => HealthSignal::AuthRequired,
            Err(_) => return,
        };
        let _ = self.health.try_send(signal);
    }
}

impl<C> StreamableHttpClient for Observed<C>
where
    C: StreamableHttpClient + Sync,
{
    type Error = C::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let result = self
            .inner
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await;
        self.observe(&result, false);
        result
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        let result = self
            .inner
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.observe(&result, false);
        result
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        // Closing a session is not a health check: not observed.
        self.inner
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        let attached = session_id.is_some();
        let result = self
            .inner
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await;
        self.observe(&result, attached);
        result
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        let attached = session_id.is_some();
        let result = self
            .inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        self.observe(&result, attached);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_config(text: &str) -> HttpConfig {
        let config = corral_protocol::config::parse(text, std::path::Path::new("t.toml")).expect("valid");
        match &config.servers["s"].transport {
            corral_protocol::config::TransportConfig::StreamableHttp(http) => http.clone(),
            other => panic!("not HTTP: {other:?}"),
        }
    }

    #[test]
    fn env_headers_skip_blank_variables_and_bearer_names_the_variable() {
        let config = http_config(
            "[servers.s]\nurl = \"http://127.0.0.1:1/mcp\"\nhttp_headers = { X-Static = \"s\" }\n\
             env_http_headers = { X-Set = \"SET\", X-Blank = \"BLANK\", X-Unset = \"UNSET\" }\n\
             bearer_token_env_var = \"TOKEN\"\n",
        );
        let env = |name: &str| match name {
            "SET" => Some(OsString::from("v")),
            "BLANK" => Some(OsString::from("  ")),
            "TOKEN" => Some(OsString::from("secret-token")),
            _ => None,
        };
        let prepared = prepare("s", &config, env).expect("prepared");
        let mut names: Vec<_> = prepared.headers.keys().map(|name| name.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(names, ["x-set", "x-static"]);
        assert_eq!(prepared.bearer_token.as_deref(), Some("secret-token"));
        assert!(prepared.has_explicit_authorization());
        assert!(!format!("{prepared:?}").contains("secret-token"));

        for (value, expected) in [(None, "is not set"), (Some(""), "is empty")] {
            let failure = prepare("s", &config, |name| match name {
                "TOKEN" => value.map(OsString::from),
                _ => None,
            })
            .expect_err("bearer variable problem");
            assert_eq!(failure.reason, FailureReason::ConfigInvalid);
            assert!(failure.message.contains("`TOKEN`"), "{}", failure.message);
            assert!(failure.message.contains(expected), "{}", failure.message);
        }
    }

    #[cfg(unix)]
    #[test]
    fn non_unicode_bearer_token_fails_without_quoting_it() {
        use std::os::unix::ffi::OsStringExt as _;
        let config = http_config("[servers.s]\nurl = \"http://127.0.0.1:1/mcp\"\nbearer_token_env_var = \"TOKEN\"\n");
        let failure =
            prepare("s", &config, |_| Some(OsString::from_vec(vec![0x66, 0xff, 0x67]))).expect_err("non-Unicode token");
        assert!(failure.message.contains("not valid Unicode"), "{}", failure.message);
    }

    #[test]
    fn statuses_map_to_reasons_and_retryability() {
        assert_eq!(status_failure(503).reason, FailureReason::HttpError);
        assert!(status_failure(503).retryable);
        assert!(status_failure(429).retryable);
        assert!(!status_failure(400).retryable);
        assert!(!status_failure(404).retryable);
        assert_eq!(status_failure(401).reason, FailureReason::AuthenticationRequired);
        assert!(!status_failure(401).retryable);
        assert_eq!(parse_status("HTTP 502 Bad Gateway: oops"), Some(502));
        assert_eq!(parse_status("something else"), None);
    }
}
