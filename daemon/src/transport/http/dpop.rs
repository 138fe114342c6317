//! DPoP on the MCP requests of a streamable-HTTP server (RFC 9449 §7 and §9, MCP SEP-1932):
//! [`DpopClient`], the HTTP client under rmcp's `AuthClient` for a server whose access token is
//! DPoP-bound.
//!
//! Every request that carries the token carries it as `Authorization: DPoP <token>`, never
//! `Bearer`, with a fresh proof in the `DPoP` header (its own `jti`; `htm` and `htu` of this
//! request; `ath`, the hash of this token; the server's nonce once it gave one). Both go in as
//! headers of the request (rmcp's reqwest client would word the token as `Bearer`), so rmcp's
//! client still does everything else: the body, the event streams, the errors. The proof is
//! signed by a [`ProofSigner`], the server's key, which the `auth` room holds; this room never
//! sees the key.
//!
//! **Nonces.** A server that wants a nonce answers 401 with `WWW-Authenticate: DPoP
//! error="use_dpop_nonce"` and the nonce in a `DPoP-Nonce` header. rmcp's client keeps only the
//! `WWW-Authenticate` of a 401, so corrald learns the nonce with one request of its own: a
//! JSON-RPC `ping` (which MCP defines as free of effects; the server answers 401 again, with the
//! nonce, or answers the ping, which is dropped) carrying the same token and a proof. The request
//! that was refused is then sent again once, with the nonce, and the nonce is kept for the
//! requests after it. A second refusal goes up as it came (rmcp's `AuthClient` may then refresh
//! the token once); nothing here loops. To upstream: rmcp's `AuthRequiredError` should carry the
//! response's `DPoP-Nonce`, which would make the `ping` unnecessary.
//!
//! Invariant: no token, proof or nonce in a log line or an error message; the header values are
//! marked sensitive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_core::stream::BoxStream;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::auth::{AuthError, WWWAuthenticateParams};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use sse_stream::Sse;

/// How long the request that learns a nonce may take.
const NONCE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of the request that learns a server's nonce: a `ping`, which has no effect.
const NONCE_PING: &str = r#"{"jsonrpc":"2.0","id":"corral-dpop-nonce","method":"ping"}"#;

/// The `DPoP` request header (RFC 9449 §4.1).
const DPOP: HeaderName = HeaderName::from_static("dpop");
/// The response header a server hands its nonce in (RFC 9449 §8, §9).
const DPOP_NONCE: &str = "dpop-nonce";

/// Signs DPoP proofs with a server's key (implemented in `auth::dpop`).
pub(crate) trait ProofSigner: Send + Sync {
    /// A fresh proof for one request: `method` and `url` (the `htm` and `htu`; the query and
    /// fragment are left out), the access token it accompanies (`ath`), and the server's nonce.
    /// An error says what failed, without a secret.
    fn proof(&self, method: &str, url: &str, access_token: Option<&str>, nonce: Option<&str>)
    -> Result<String, String>;
}

/// A streamable-HTTP client that presents the access token rmcp's `AuthClient` hands it as a
/// DPoP-bound token: see the module docs. Clones share the nonce.
#[derive(Clone)]
pub(crate) struct DpopClient {
    http: reqwest::Client,
    signer: Arc<dyn ProofSigner>,
    /// The server's latest nonce.
    nonce: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for DpopClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopClient").finish_non_exhaustive()
    }
}

type HttpResult<T> = Result<T, StreamableHttpError<reqwest::Error>>;

/// What a nonce-learning request needs to look like the refused one.
struct Refused<'a> {
    uri: &'a str,
    session_id: Option<&'a str>,
    headers: &'a HashMap<HeaderName, HeaderValue>,
}

impl DpopClient {
    /// A client over `http` whose proofs `signer` signs.
    pub(crate) fn new(http: reqwest::Client, signer: Arc<dyn ProofSigner>) -> Self {
        Self {
            http,
            signer,
            nonce: Arc::new(Mutex::new(None)),
        }
    }

    fn current_nonce(&self) -> Option<String> {
        self.nonce.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// `headers` plus the token as `Authorization: DPoP …` and a fresh proof for this request.
    fn with_proof(
        &self,
        method: &str,
        uri: &str,
        token: &str,
        mut headers: HashMap<HeaderName, HeaderValue>,
        nonce: Option<&str>,
    ) -> HttpResult<HashMap<HeaderName, HeaderValue>> {
        let proof = self
            .signer
            .proof(method, uri, Some(token), nonce)
            .map_err(|error| StreamableHttpError::Auth(AuthError::InternalError(error)))?;
        headers.insert(AUTHORIZATION, sensitive(&format!("DPoP {token}"))?);
        headers.insert(DPOP, sensitive(&proof)?);
        Ok(headers)
    }

    /// Send a request through `send` (given the request's headers) with the token and a proof;
    /// when the server asks for a nonce, learn it and send once more. Without a token the
    /// request goes out as it is (the server's 401 then starts a login).
    async fn send<T, F, Fut>(&self, method: &str, refused: Refused<'_>, token: Option<String>, send: F) -> HttpResult<T>
    where
        F: Fn(HashMap<HeaderName, HeaderValue>) -> Fut,
        Fut: Future<Output = HttpResult<T>>,
    {
        let Some(token) = token else {
            return send(refused.headers.clone()).await;
        };
        let nonce = self.current_nonce();
        let headers = self.with_proof(method, refused.uri, &token, refused.headers.clone(), nonce.as_deref())?;
        match send(headers).await {
            Err(StreamableHttpError::AuthRequired(challenge))
                if asks_for_nonce(&challenge.www_authenticate_header, refused.uri) =>
            {
                let Some(nonce) = self.learn_nonce(&refused, &token).await else {
                    tracing::warn!("the server asked for a DPoP nonce but gave none");
                    return Err(StreamableHttpError::AuthRequired(challenge));
                };
                let headers = self.with_proof(method, refused.uri, &token, refused.headers.clone(), Some(&nonce))?;
                send(headers).await
            }
            other => other,
        }
    }

    /// Ask the server for its nonce with a `ping` that carries the token and a proof, and keep
    /// what its `DPoP-Nonce` header says.
    async fn learn_nonce(&self, refused: &Refused<'_>, token: &str) -> Option<String> {
        let proof = self.signer.proof("POST", refused.uri, Some(token), None).ok()?;
        let mut request = self
            .http
            .post(refused.uri)
            .timeout(NONCE_REQUEST_TIMEOUT)
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, sensitive(&format!("DPoP {token}")).ok()?)
            .header(DPOP, sensitive(&proof).ok()?)
            .header("mcp-method", "ping");
        // The refused request's own headers (the config's, the protocol version), but not those
        // that describe its method.
        for (name, value) in refused.headers {
            let name_text = name.as_str();
            if name_text == "mcp-method" || name_text == "mcp-name" || name_text.starts_with("mcp-param-") {
                continue;
            }
            request = request.header(name, value);
        }
        if let Some(session_id) = refused.session_id {
            request = request.header("mcp-session-id", session_id);
        }
        let response = request.body(NONCE_PING).send().await.ok()?;
        let nonce = response.headers().get(DPOP_NONCE)?.to_str().ok()?.trim().to_owned();
        if nonce.is_empty() {
            return None;
        }
        *self.nonce.lock().unwrap_or_else(PoisonError::into_inner) = Some(nonce.clone());
        Some(nonce)
    }
}

/// A header value that hyper and reqwest never print.
fn sensitive(text: &str) -> HttpResult<HeaderValue> {
    let mut value = HeaderValue::from_str(text).map_err(|_| {
        StreamableHttpError::Auth(AuthError::InternalError(
            "the access token or DPoP proof is not a valid HTTP header value".to_owned(),
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Whether a 401's challenge is a DPoP server asking for a nonce (RFC 9449 §9).
fn asks_for_nonce(challenge: &str, uri: &str) -> bool {
    let Ok(base) = url::Url::parse(uri) else {
        return false;
    };
    WWWAuthenticateParams::parse(challenge, &base).error.as_deref() == Some("use_dpop_nonce")
}

impl StreamableHttpClient for DpopClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<StreamableHttpPostResponse> {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_token,
            custom_headers,
            StreamableHttpResponseLimits::default(),
        )
        .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let refused = Refused {
            uri: &uri,
            session_id: session_id.as_deref(),
            headers: &custom_headers,
        };
        self.send("POST", refused, auth_token, |headers| {
            self.http.post_message_with_max_sse_event_size(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                None,
                headers,
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
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let refused = Refused {
            uri: &uri,
            session_id: session_id.as_deref(),
            headers: &custom_headers,
        };
        self.send("POST", refused, auth_token, |headers| {
            self.http.post_message_with_response_limits(
                uri.clone(),
                message.clone(),
                session_id.clone(),
                None,
                headers,
                limits,
            )
        })
        .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<()> {
        let refused = Refused {
            uri: &uri,
            session_id: Some(&session_id),
            headers: &custom_headers,
        };
        self.send("DELETE", refused, auth_token, |headers| {
            self.http.delete_session(uri.clone(), session_id.clone(), None, headers)
        })
        .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        let refused = Refused {
            uri: &uri,
            session_id: session_id.as_deref(),
            headers: &custom_headers,
        };
        self.send("GET", refused, auth_token, |headers| {
            self.http
                .get_stream(uri.clone(), session_id.clone(), last_event_id.clone(), None, headers)
        })
        .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_token: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<BoxStream<'static, Result<Sse, SseError>>> {
        let refused = Refused {
            uri: &uri,
            session_id: session_id.as_deref(),
            headers: &custom_headers,
        };
        self.send("GET", refused, auth_token, |headers| {
            self.http.get_stream_with_max_sse_event_size(
                uri.clone(),
                session_id.clone(),
                last_event_id.clone(),
                None,
                headers,
                max_sse_event_size,
            )
        })
        .await
    }
}
