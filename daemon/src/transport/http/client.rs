//! The HTTP client of a server's transport: [`HttpBackend`], the
//! authentication seam, and [`Observed`], which reports the server's health
//! and adds the headers a front-end attached to one request to its POST
//! (`mcp::request_headers`), and puts what MCP 2026-07-28 wants on each POST
//! that rmcp leaves out (the headers of `initialize`; a request's log level,
//! `mcp::modern`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use corral_protocol::FailureReason;
use futures_core::stream::BoxStream;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest};
use rmcp::transport::common::client_side_sse::SseRetryPolicy;
use rmcp::transport::streamable_http_client::SseError;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use sse_stream::Sse;
use tokio::sync::mpsc;

use crate::mcp::handler::McpClientHandler;
use crate::mcp::modern::stamp_log_level;
use crate::mcp::request_headers::ScopedHeaders;
use crate::transport::McpSession;

use super::connect::{RETRY_DELAYS, connect_with};
use super::headers::Prepared;
use crate::mcp::classify::{HttpFailure, error_chain};

/// How long connecting (TCP + TLS) may take; the only timeout of the client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The same for a DPoP-bound token: the token as `DPoP`, a proof on every request.
    Dpop(rmcp::transport::auth::AuthClient<super::DpopClient>),
    /// The same reqwest client with a token from a grant for machines (`oauth_grant`), whose
    /// source (`auth::grants`) runs the grant again before the token expires.
    Token(super::token_client::TokenClient<reqwest::Client>),
}

impl HttpBackend {
    /// A plain client for a server. It has a connect timeout but no overall
    /// request timeout, which would cut the long-lived SSE `GET` short.
    /// The server task wraps it in rmcp's `AuthClient` ([`HttpBackend::OAuth`])
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

    /// One attempt to start a session (no retry after a transient failure; see `connect`).
    pub(super) async fn connect(
        &self,
        server: &str,
        prepared: &Prepared,
        handler: McpClientHandler,
        health: mpsc::Sender<HealthSignal>,
    ) -> Result<McpSession, HttpFailure> {
        match self {
            Self::Plain(client) => connect_with(server, client.clone(), prepared, handler, health).await,
            Self::OAuth(client) => connect_with(server, client.clone(), prepared, handler, health).await,
            Self::Dpop(client) => connect_with(server, client.clone(), prepared, handler, health).await,
            Self::Token(client) => connect_with(server, client.clone(), prepared, handler, health).await,
        }
    }
}

/// rmcp's transport config for a server: our headers, and no transparent
/// re-initialization (a 404 reaches us, so that recovery is exactly ours: one
/// rebuild and one retry, see `session` and `server`).
pub(super) fn transport_config(
    prepared: &Prepared,
    health: mpsc::Sender<HealthSignal>,
) -> StreamableHttpClientTransportConfig {
    let mut config = StreamableHttpClientTransportConfig::with_uri(prepared.url.clone())
        .custom_headers(prepared.headers.clone())
        .reinit_on_expired_session(false);
    if let Some(token) = &prepared.bearer_token {
        config = config.auth_header(token.clone());
    }
    config.retry_config = Arc::new(EventStreamRetry { health });
    config
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
pub(super) struct Observed<C> {
    pub(super) inner: C,
    pub(super) health: mpsc::Sender<HealthSignal>,
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

/// The headers of MCP 2026-07-28 on the `initialize` POST, which rmcp sends with the
/// configured headers only: `MCP-Protocol-Version` (the version offered) and `Mcp-Method`
/// (SEP-2243), so that a server of 2026-07-28 reads the request and answers with the versions
/// it supports (see `era`); servers of earlier versions ignore them. Every later POST gets
/// rmcp's own (`MCP-Protocol-Version` as negotiated; `Mcp-Method`, `Mcp-Name` and
/// `Mcp-Param-*` from 2026-07-28 on). Headers already set are kept.
fn start_headers(message: &ClientJsonRpcMessage, headers: &mut HashMap<HeaderName, HeaderValue>) {
    let ClientJsonRpcMessage::Request(request) = message else {
        return;
    };
    let ClientRequest::InitializeRequest(initialize) = &request.request else {
        return;
    };
    let version = HeaderValue::from_str(initialize.params.protocol_version.as_str());
    if let Ok(version) = version {
        headers
            .entry(HeaderName::from_static("mcp-protocol-version"))
            .or_insert(version);
    }
    headers
        .entry(HeaderName::from_static("mcp-method"))
        .or_insert(HeaderValue::from_static("initialize"));
}

impl<C> StreamableHttpClient for Observed<C>
where
    C: StreamableHttpClient + Sync,
{
    type Error = C::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        mut message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        start_headers(&message, &mut custom_headers);
        stamp_log_level(&mut message);
        ScopedHeaders::apply(&message, &mut custom_headers);
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
        mut message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        start_headers(&message, &mut custom_headers);
        stamp_log_level(&mut message);
        ScopedHeaders::apply(&message, &mut custom_headers);
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

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        mut message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        mut custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        start_headers(&message, &mut custom_headers);
        stamp_log_level(&mut message);
        ScopedHeaders::apply(&message, &mut custom_headers);
        // The transport's worker sends every POST through this one: passed on whole, so the inner
        // client applies the transport's body limits (the trait's default would keep only the
        // SSE event limit).
        let result = self
            .inner
            .post_message_with_response_limits(uri, message, session_id, auth_header, custom_headers, limits)
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
