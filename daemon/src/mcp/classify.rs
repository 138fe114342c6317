//! What a failed exchange with a server means: rmcp's errors (and, under
//! them, the streamable-HTTP transport's `reqwest` errors) turned into a
//! [`FailureReason`] and a sentence without the URL ([`HttpFailure`]), and
//! the facts the callers decide on: retry or not (`HttpFailure::retryable`), the
//! session expired (HTTP 404, [`is_session_expired`]), a scope is missing
//! (HTTP 403, [`required_scope`]).
//!
//! Where rmcp's errors are classified: the transports use it for
//! `initialize` and their probes, `forward` for a front-end's request.
//!
//! Invariant: no message quotes a URL (it may carry a token) or a secret.

use corral_protocol::FailureReason;
use rmcp::ServiceError;
use rmcp::service::ClientInitializeError;
use rmcp::transport::streamable_http_client::StreamableHttpError;

/// HTTP statuses after which `initialize` / `tools/list` are retried.
const RETRYABLE_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

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
    /// The `WWW-Authenticate` challenge of a 401 or a 403 `insufficient_scope`, as the server
    /// sent it: what the next login asks for (never shown: it may name URLs).
    pub(crate) challenge: Option<String>,
}

impl HttpFailure {
    pub(crate) fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            retryable: false,
            session_expired: false,
            challenge: None,
        }
    }

    fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
}

/// The failure of a session's start: `server/discover`, or the legacy `initialize` after it
/// (`transport::http`'s lifecycle; stdio servers start with `initialize` alone).
pub(crate) fn classify_initialize(error: &ClientInitializeError) -> HttpFailure {
    classify_start(error, "the start of the session")
}

fn classify_start(error: &ClientInitializeError, step: &str) -> HttpFailure {
    // rmcp nests the 401 (or a manager's "authorization required") inside the transport error.
    if error.is_authorization_required() && !matches!(classify_any(error), Some(FailureReason::InsufficientScope)) {
        let mut failure = HttpFailure::new(
            FailureReason::AuthenticationRequired,
            "initialize failed: the server requires authentication (HTTP 401)",
        );
        failure.challenge = challenge_of_start(error);
        return failure;
    }
    match error {
        ClientInitializeError::TransportError { error, .. } => {
            let mut failure = classify_transport(error.error.as_ref());
            failure.message = format!("initialize failed: {}", failure.message);
            failure
        }
        ClientInitializeError::JsonRpcError(error) => HttpFailure::new(
            FailureReason::ProtocolError,
            format!("the server answered {step} with an error: {}", error.message),
        ),
        // The server refused `server/discover` as a server of an earlier MCP version does, and
        // then `initialize` failed too: that second failure is the one that says what is wrong.
        ClientInitializeError::LegacyFallbackFailed { fallback, .. } => classify_start(fallback, "initialize"),
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

/// The challenge of an initialize failure's transport error, if it has one.
fn challenge_of_start(error: &ClientInitializeError) -> Option<String> {
    match error {
        ClientInitializeError::TransportError { error, .. } => classify_transport(error.error.as_ref()).challenge,
        ClientInitializeError::LegacyFallbackFailed { fallback, .. } => challenge_of_start(fallback),
        _ => None,
    }
}

/// The reason of an initialize failure's transport error, if it has one.
fn classify_any(error: &ClientInitializeError) -> Option<FailureReason> {
    match error {
        ClientInitializeError::TransportError { error, .. } => Some(classify_transport(error.error.as_ref()).reason),
        ClientInitializeError::LegacyFallbackFailed { fallback, .. } => classify_any(fallback),
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
        StreamableHttpError::AuthRequired(challenge) => HttpFailure {
            challenge: Some(challenge.www_authenticate_header.clone()).filter(|header| !header.is_empty()),
            ..HttpFailure::new(
                FailureReason::AuthenticationRequired,
                "the server requires authentication (HTTP 401)",
            )
        },
        StreamableHttpError::InsufficientScope(scope) => HttpFailure {
            challenge: Some(scope.www_authenticate_header.clone()).filter(|header| !header.is_empty()),
            ..HttpFailure::new(
                FailureReason::InsufficientScope,
                match &scope.required_scope {
                    Some(required) => {
                        format!("the credentials lack a required scope (HTTP 403; required: {required})")
                    }
                    None => "the credentials lack a required scope (HTTP 403)".to_owned(),
                },
            )
        },
        StreamableHttpError::SessionExpired => HttpFailure {
            session_expired: true,
            ..HttpFailure::new(
                FailureReason::ProtocolError,
                "the server no longer knows the session (HTTP 404)",
            )
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
        // A grant for machines (`auth::grants`) that yielded no token: its sentence says why.
        AuthError::ClientCredentialsError(why) => HttpFailure::new(FailureReason::AuthenticationRequired, why.clone()),
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
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
