//! A streamable-HTTP server's MCP sessions, as functions the server task calls and values
//! they return: the first session ([`HttpConnection::start`]), a new one after the server
//! answered 404 to the session id ([`HttpConnection::renew`]), and a liveness `ping` after
//! the transport could not reach the server ([`probe`]).
//!
//! An [`HttpConnection`] is what one run of the server keeps to open sessions: the HTTP
//! client (plain, or OAuth-managed with the stored credentials, chosen by the task before
//! the run), the prepared headers, how to make a client handler, and where the transport
//! reports the server's health. Nothing here writes a server's state.
//!
//! Invariant: an authentication failure names the login the user needs ([`login_failure`]):
//! stored credentials that could not be used or refreshed are `reauthenticationRequired`;
//! none stored is `authenticationRequired` (the first login); a grant for machines' tokens
//! refused is `authenticationRequired` with what to check instead of a login.

use std::time::Duration;

use corral_protocol::FailureReason;
use rmcp::model::Tool;
use tokio::sync::mpsc;

use crate::mcp::handler::McpClientHandler;
use crate::transport::McpSession;

use super::client::{HealthSignal, HttpBackend};
use super::connect::{reconnect, start};
use super::headers::Prepared;
use crate::mcp::classify::{HttpFailure, classify_service};

/// How long a liveness `ping` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A new client handler for each session of the run.
pub(crate) type HandlerFactory = Box<dyn Fn() -> McpClientHandler + Send + Sync>;

/// What opening a session of a streamable-HTTP server needs.
pub(crate) struct ConnectionSpec {
    /// The server's name.
    pub(crate) name: String,
    /// The HTTP client (plain or OAuth-managed).
    pub(crate) backend: HttpBackend,
    /// The resolved headers.
    pub(crate) prepared: Prepared,
    /// Makes the client handler of each new session.
    pub(crate) handler: HandlerFactory,
    /// Whether the backend uses stored OAuth credentials (it decides which login a 401 asks for).
    pub(crate) had_credentials: bool,
    /// The grant for machines the tokens come from (`oauth_grant`), if any: a 401 then asks for
    /// no login.
    pub(crate) grant: Option<&'static str>,
    /// `startup_timeout_sec`: the bound of a start and of a renewal.
    pub(crate) startup_timeout: Duration,
}

/// One run's way to open sessions with a streamable-HTTP server.
pub(crate) struct HttpConnection {
    spec: ConnectionSpec,
    /// Where every transport of the run reports the server's health.
    health: mpsc::Sender<HealthSignal>,
}

impl HttpConnection {
    /// A connection and the receiving end of its health signals.
    pub(crate) fn new(spec: ConnectionSpec) -> (Self, mpsc::Receiver<HealthSignal>) {
        // Capacity 1: one pending signal covers every later one.
        let (health, signals) = mpsc::channel(1);
        (Self { spec, health }, signals)
    }

    /// The first session and the tools listed, both within `startup_timeout_sec`, retried
    /// after transient failures. An authentication failure names the login needed.
    pub(crate) async fn start(&self) -> Result<(McpSession, Vec<Tool>), HttpFailure> {
        let spec = &self.spec;
        let limit = spec.startup_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let startup = start(
            &spec.name,
            &spec.backend,
            &spec.prepared,
            &spec.handler,
            self.health.clone(),
            deadline,
        );
        let outcome = match tokio::time::timeout_at(deadline, startup).await {
            Ok(outcome) => outcome,
            Err(_) => Err(HttpFailure::new(
                FailureReason::StartupTimeout,
                format!("initialize and tools/list did not finish within {limit:?} (startup_timeout_sec)"),
            )),
        };
        outcome.map_err(|failure| login_failure(&spec.name, failure, spec.had_credentials, spec.grant))
    }

    /// A new session in place of an expired one: a new transport and one `initialize`
    /// (itself retried after transient failures within `startup_timeout_sec`). On failure, why.
    pub(crate) async fn renew(&self) -> Result<McpSession, String> {
        let spec = &self.spec;
        tracing::info!(server = %spec.name, "the session expired (HTTP 404); re-initializing");
        let deadline = tokio::time::Instant::now() + spec.startup_timeout;
        let renewed = tokio::time::timeout_at(
            deadline,
            reconnect(
                &spec.name,
                &spec.backend,
                &spec.prepared,
                &spec.handler,
                self.health.clone(),
                deadline,
            ),
        )
        .await;
        match renewed {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(failure)) => Err(format!(
                "re-initializing after an expired session failed: {}",
                failure.message
            )),
            Err(_) => Err("re-initializing after an expired session timed out".to_owned()),
        }
    }

    /// The failure of a session whose token the server rejected (HTTP 401) after the OAuth
    /// client could not refresh it: retrying would only repeat it.
    pub(crate) fn authentication_required(&self) -> HttpFailure {
        login_failure(
            &self.spec.name,
            HttpFailure::new(
                FailureReason::AuthenticationRequired,
                "the server requires authentication (HTTP 401)",
            ),
            self.spec.had_credentials,
            self.spec.grant,
        )
    }
}

/// What a `ping` says about a streamable-HTTP server that seemed unreachable.
#[derive(Debug)]
pub(crate) enum Probe {
    /// It answered (if only with an error).
    Alive,
    /// It answered 404 to the session id.
    SessionExpired,
    /// It did not answer: why.
    Gone(String),
}

/// Ping the server on `session`, within [`PROBE_TIMEOUT`].
pub(crate) async fn probe(session: &McpSession) -> Probe {
    let ping = rmcp::model::ClientRequest::PingRequest(rmcp::model::PingRequest::default());
    match tokio::time::timeout(PROBE_TIMEOUT, session.peer().send_request(ping)).await {
        Ok(Ok(_)) => Probe::Alive,
        Ok(Err(error)) => {
            let failure = classify_service(&error);
            if failure.session_expired {
                Probe::SessionExpired
            } else if matches!(error, rmcp::ServiceError::McpError(_)) {
                // It answered, if only with an error: it is there.
                Probe::Alive
            } else {
                Probe::Gone(failure.message)
            }
        }
        Err(_) => Probe::Gone(format!("no answer to ping within {PROBE_TIMEOUT:?}")),
    }
}

/// An authentication failure says which login is needed: stored credentials that could not be used
/// or refreshed → `reauthenticationRequired`; none stored → `authenticationRequired` (first login);
/// tokens of a grant for machines → `authenticationRequired`, and no login but what to check.
fn login_failure(name: &str, mut failure: HttpFailure, had_credentials: bool, grant: Option<&str>) -> HttpFailure {
    if failure.reason != FailureReason::AuthenticationRequired {
        return failure;
    }
    if let Some(grant) = grant {
        failure.message = format!(
            "{}: the server refused the token of the {grant} grant (oauth_grant), a new one too; check that the \
             client may use this server (its scopes, `scopes`, `oauth_resource`), then `corral restart {name}`",
            failure.message
        );
    } else if had_credentials {
        failure.reason = FailureReason::ReauthenticationRequired;
        failure.message = format!(
            "the stored OAuth credentials were rejected or expired and could not be refreshed: run `corral login {name}`"
        );
    } else {
        failure.message = format!("{}; not logged in: run `corral login {name}`", failure.message);
    }
    failure
}
