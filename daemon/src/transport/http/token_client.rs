//! [`TokenClient`]: a `StreamableHttpClient` that authenticates every request with a bearer token
//! from a [`TokenSource`], the seam the grants for machines (`auth::grants`) plug into without
//! this room naming them. Like rmcp's `AuthClient` for logins: a request gets the source's
//! current token; a 401 gets the token renewed once and the request sent once more with the new
//! one, and a second 401 (or a renewal that yields the same token) is the server's
//! `AuthRequired`, which `Observed` reports.

use std::collections::HashMap;
use std::sync::Arc;

use corral_protocol::FailureReason;
use futures_core::future::BoxFuture;
use futures_core::stream::BoxStream;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::auth::AuthError;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use sse_stream::Sse;

/// Where a [`TokenClient`] gets its tokens. One per server run, shared by every transport of it.
pub(crate) trait TokenSource: Send + Sync {
    /// A token to send now.
    fn token(&self) -> BoxFuture<'_, Result<String, TokenError>>;
    /// The server rejected `rejected` (HTTP 401): a new token, unless another request already got
    /// one.
    fn renew<'a>(&'a self, rejected: &'a str) -> BoxFuture<'a, Result<String, TokenError>>;
}

/// Why a [`TokenSource`] has no token: how the server fails, and a sentence without secrets.
#[derive(Debug, Clone)]
pub(crate) struct TokenError {
    pub(crate) reason: FailureReason,
    pub(crate) message: String,
}

impl<E: std::error::Error + Send + Sync + 'static> From<TokenError> for StreamableHttpError<E> {
    /// Through rmcp's error as an `AuthError` that `mcp::classify` words back: a transient failure
    /// as a failed refresh (retryable), anything else as a refused client.
    fn from(error: TokenError) -> Self {
        match error.reason {
            FailureReason::Unreachable => StreamableHttpError::Auth(AuthError::TokenRefreshFailed(error.message)),
            _ => StreamableHttpError::Auth(AuthError::ClientCredentialsError(error.message)),
        }
    }
}

/// An HTTP client whose every request carries a token from `source` (see the module docs).
#[derive(Clone)]
pub(crate) struct TokenClient<C> {
    pub(crate) inner: C,
    pub(crate) source: Arc<dyn TokenSource>,
}

impl<C: std::fmt::Debug> std::fmt::Debug for TokenClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenClient")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<C> TokenClient<C>
where
    C: StreamableHttpClient + Sync,
{
    /// Run `call` with the current token; after a 401, once more with a renewed one.
    async fn authenticated<T, F, Fut>(&self, call: F) -> Result<T, StreamableHttpError<C::Error>>
    where
        F: Fn(Option<String>) -> Fut,
        Fut: Future<Output = Result<T, StreamableHttpError<C::Error>>>,
    {
        let token = self.source.token().await?;
        match call(Some(token.clone())).await {
            Err(StreamableHttpError::AuthRequired(challenge)) => {
                let renewed = self.source.renew(&token).await?;
                if renewed == token {
                    return Err(StreamableHttpError::AuthRequired(challenge));
                }
                call(Some(renewed)).await
            }
            result => result,
        }
    }
}

impl<C> StreamableHttpClient for TokenClient<C>
where
    C: StreamableHttpClient + Sync,
{
    type Error = C::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.authenticated(|token| {
            self.inner.post_message(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.authenticated(|token| {
            self.inner.post_message_with_max_sse_event_size(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.authenticated(|token| {
            self.inner.post_message_with_response_limits(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                token,
                custom_headers.clone(),
                limits,
            )
        })
        .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.authenticated(|token| {
            self.inner
                .delete_session(uri.clone(), session_id.clone(), token, custom_headers.clone())
        })
        .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.authenticated(|token| {
            self.inner.get_stream(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                token,
                custom_headers.clone(),
            )
        })
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        _auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, StreamableHttpError<Self::Error>> {
        self.authenticated(|token| {
            self.inner.get_stream_with_max_sse_event_size(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                token,
                custom_headers.clone(),
                max_sse_event_size,
            )
        })
        .await
    }
}
