//! What every handler shares: parsing params, the caller's [`Session`], and
//! the one mapping from the daemon's errors to JSON-RPC error objects
//! (`serverNotFound` is worded here, once).
//!
//! Params that do not parse are `invalidParams` naming the method and the
//! field's path. Everything a request to a server can meet (`RouteError`,
//! `NotAvailable`, a timeout) is worded by `route_error` and its neighbours,
//! so every handler says the same thing for the same failure.

use std::sync::Arc;
use std::time::Duration;

use corral_protocol::{ErrorCode, NotReadyServer, Request, RequestHeaders, ServerStatus};
use jsonrpsee::types::{ErrorObjectOwned, Extensions, Params};

use super::DaemonContext;
use super::session::Session;
use crate::auth::{LoginError, LogoutError};
use crate::hub::link::Link;
use crate::logging::redact_urls;
use crate::mcp::request_headers::ScopedHeaders;
use crate::mcp::route::{CallTarget, NotAvailable, RouteError};
use crate::supervisor::{RegistryRefusal, ServerBusy, SupervisorStopped};

pub(crate) use crate::params::{error as rpc_error, parse as parse_json, parse_quickly};

impl From<SupervisorStopped> for ErrorObjectOwned {
    fn from(stopped: SupervisorStopped) -> Self {
        rpc_error(ErrorCode::ShuttingDown, stopped.to_string())
    }
}

/// Why an OAuth login for `name` could not start. The whole message is cut with
/// `redact_urls` (a server's error may quote a URL carrying a token); the
/// `protocolError` of an unsafe authorization URL names only its scheme or host.
pub(crate) fn login_error(name: &str, error: &LoginError) -> ErrorObjectOwned {
    let failed = |why: &str| {
        rpc_error(
            ErrorCode::ServerError,
            redact_urls(&format!("OAuth login for `{name}` failed: {why}")),
        )
    };
    match error {
        LoginError::NotHttp => rpc_error(
            ErrorCode::InvalidRequest,
            format!("`{name}` is not a streamable HTTP server: OAuth login is only for streamable HTTP servers"),
        ),
        LoginError::ExplicitAuthorization => rpc_error(
            ErrorCode::InvalidRequest,
            format!(
                "`{name}` sets `Authorization` in its config (bearer_token_env_var or a header): stored OAuth credentials would not be used"
            ),
        ),
        LoginError::MachineGrant(grant) => rpc_error(
            ErrorCode::InvalidRequest,
            format!(
                "`{name}` gets its tokens with the {grant} grant (oauth_grant), without a login: when its grant \
                 fails, fix what the server's error names and run `corral restart {name}`"
            ),
        ),
        LoginError::NoBrowser(scopes) => rpc_error(
            ErrorCode::InvalidRequest,
            match scopes {
                Some(scopes) => format!(
                    "corrald has no `oauth_opener` and no display to open a browser on: run `corral login {name}`, \
                     which asks for scopes `{scopes}`"
                ),
                None => format!(
                    "corrald has no `oauth_opener` and no display to open a browser on: run `corral login {name}`"
                ),
            },
        ),
        LoginError::NoCredentialStore => failed("no credential store"),
        // The server's metadata broke the protocol's rules: said as a failure reason.
        LoginError::UnsafeAuthorizationUrl(unsafe_url) => ErrorObjectOwned::owned(
            ErrorCode::ServerError.code(),
            format!("OAuth login for `{name}` failed: {unsafe_url}"),
            Some(serde_json::json!({ "failureReason": corral_protocol::FailureReason::ProtocolError })),
        ),
        LoginError::Failed(why) => failed(why),
    }
}

/// Why the logout of `name` failed.
pub(crate) fn logout_error(name: &str, error: &LogoutError) -> ErrorObjectOwned {
    match error {
        LogoutError::RefreshInProgress => rpc_error(
            ErrorCode::ServerBusy,
            format!("logout of `{name}`: a token refresh is still in progress; try again"),
        ),
        LogoutError::Failed(why) => rpc_error(
            ErrorCode::InternalError,
            redact_urls(&format!("logout of `{name}` failed: {why}")),
        ),
    }
}

/// Parse `params` for method `R`; absent or `null` params mean `{}`.
///
/// The error message names the method and the offending field so that a
/// front-end author sees what to fix without reading daemon logs.
pub(crate) fn parse_params<R: Request>(params: &Params<'_>) -> Result<R::Params, ErrorObjectOwned> {
    parse_json(params, R::METHOD)
}

pub(crate) fn session(extensions: &Extensions) -> Result<Arc<Session>, ErrorObjectOwned> {
    extensions
        .get::<Arc<Session>>()
        .cloned()
        .ok_or_else(|| rpc_error(ErrorCode::InternalError, "no session attached to this call"))
}

/// `serverNotFound`: no server has that name.
pub(crate) fn server_not_found(name: &str) -> ErrorObjectOwned {
    rpc_error(ErrorCode::ServerNotFound, format!("no MCP server named `{name}`"))
}

/// `serverBusy`: the server's command queue is full.
pub(crate) fn busy_error(name: &str, _busy: ServerBusy) -> ErrorObjectOwned {
    rpc_error(
        ErrorCode::ServerBusy,
        format!("MCP server `{name}` has too many control commands waiting: retry shortly"),
    )
}

pub(crate) fn refusal_error(name: &str, refusal: &RegistryRefusal) -> ErrorObjectOwned {
    match refusal {
        RegistryRefusal::NotFound => server_not_found(name),
        RegistryRefusal::Exists => rpc_error(
            ErrorCode::ServerExists,
            format!("an MCP server named `{name}` already exists: choose another name"),
        ),
        RegistryRefusal::NotPermitted(why) => rpc_error(ErrorCode::NotPermitted, format!("`{name}`: {why}")),
        RegistryRefusal::StillStopping => rpc_error(
            ErrorCode::ServerExists,
            format!("an MCP server named `{name}` was just removed and is still stopping: try again in a moment"),
        ),
    }
}

/// The protocol's view of servers left out of a listing.
pub(crate) fn not_ready_servers(
    not_ready: Vec<(String, ServerStatus, Option<corral_protocol::FailureReason>)>,
) -> Vec<NotReadyServer> {
    not_ready
        .into_iter()
        .map(|(name, status, reason)| NotReadyServer::new(name, status, reason))
        .collect()
}

/// `serverNotFound` or `serverNotReady` (with status, reason and the server's error).
pub(crate) fn not_available_error(server: &str, not_available: &NotAvailable) -> ErrorObjectOwned {
    match not_available {
        NotAvailable::NotFound => server_not_found(server),
        NotAvailable::NotReady {
            status, failure_reason, ..
        } => {
            let mut message = not_available.describe(server);
            if matches!(status, ServerStatus::Stopped | ServerStatus::Cancelled) {
                message.push_str(&format!(": start it with `corral start {server}`"));
            }
            ErrorObjectOwned::owned(
                ErrorCode::ServerNotReady.code(),
                message,
                Some(serde_json::json!({ "status": status, "failureReason": failure_reason })),
            )
        }
    }
}

/// `requestTimeout` for `request` (e.g. "`tools/call` of `echo`") to `server`.
pub(crate) fn timeout_error(server: &str, request: &str, timeout: Duration) -> ErrorObjectOwned {
    rpc_error(
        ErrorCode::RequestTimeout,
        format!(
            "MCP server `{server}` did not answer {request} within {timeout:?} (tool_timeout_sec); the request was cancelled"
        ),
    )
}

/// Run `request` (`what`, for the words of the timeout's error) of the front-end on `link` to
/// `target`'s server as a call of that front-end (`FrontEnds::call_started`), so what the
/// server asks meanwhile goes to it and to no other front-end, within the server's
/// `tool_timeout_sec` of active time (the clock stops while the front-end's user answers an
/// elicitation).
pub(crate) async fn within_active_time<T>(
    context: &DaemonContext,
    target: &CallTarget,
    link: &Link,
    what: &str,
    request: impl Future<Output = T>,
) -> Result<T, ErrorObjectOwned> {
    let server = &target.config.name;
    let frontends = &context.hub.routes;
    let timeout = target.config.tool_timeout;
    frontends
        .call_started(server, link.id)
        .within(timeout, std::pin::pin!(request))
        .await
        .ok_or_else(|| timeout_error(server, what, timeout))
}

/// The error for `request` (e.g. "`tools/call` of `echo`") sent to `server`
/// that failed, or was not sent, for `error`.
pub(crate) fn route_error(server: &str, request: &str, error: RouteError) -> ErrorObjectOwned {
    let message = error.describe(server, request);
    let (code, data) = match error {
        RouteError::Http { reason, .. } => (
            ErrorCode::ServerError,
            Some(serde_json::json!({ "failureReason": reason })),
        ),
        RouteError::Answered { code, message, data } => (
            ErrorCode::ServerError,
            Some(serde_json::json!({ "code": code, "message": message, "data": data })),
        ),
        RouteError::Unreachable { .. } | RouteError::Gone { .. } | RouteError::SessionLost { .. } => {
            (ErrorCode::ServerNotReady, None)
        }
        RouteError::InsufficientScope { error, .. } => return route_error(server, request, *error),
        RouteError::Unserializable { .. } => (ErrorCode::InternalError, None),
        RouteError::ToolDisabled { .. } | RouteError::UnknownTool { .. } => (ErrorCode::ToolNotAvailable, None),
        RouteError::Failed { .. }
        | RouteError::UnhandledResult { .. }
        | RouteError::TooManyRounds { .. }
        | RouteError::InputNotGiven { .. }
        | RouteError::TooManyInputRequests { .. }
        | RouteError::TaskNotCompleted { .. }
        | RouteError::RepeatedCursor { .. }
        | RouteError::TooManyPages { .. }
        | RouteError::SubscriptionsUnsupported => (ErrorCode::ServerError, None),
    };
    ErrorObjectOwned::owned(code.code(), message, data)
}

/// `targets` with the front-end's request-scoped `headers` on them (none given: as they are).
/// Headers go to one server: `server` must be named, and be a streamable-HTTP server; the
/// headers are checked like the config's. Every refusal is `invalidParams` naming the server
/// or the header, never a value.
pub(crate) fn scoped_targets(
    targets: Vec<CallTarget>,
    server: &Option<String>,
    headers: Option<&RequestHeaders>,
) -> Result<Vec<CallTarget>, ErrorObjectOwned> {
    let Some(headers) = headers else {
        return Ok(targets);
    };
    if server.is_none() {
        return Err(rpc_error(
            ErrorCode::InvalidParams,
            "request-scoped `headers` go to one server: name it with `server`",
        ));
    }
    targets
        .into_iter()
        .map(|target| scoped_target(target, Some(headers)))
        .collect()
}

/// `target` with the front-end's request-scoped `headers` on it (see [`scoped_targets`]).
pub(crate) fn scoped_target(
    target: CallTarget,
    headers: Option<&RequestHeaders>,
) -> Result<CallTarget, ErrorObjectOwned> {
    let Some(headers) = headers else {
        return Ok(target);
    };
    let server = target.config.name.clone();
    let checked = ScopedHeaders::check(headers)
        .map_err(|why| rpc_error(ErrorCode::InvalidParams, format!("MCP server `{server}`: {why}")))?;
    target
        .with_request_headers(checked)
        .map_err(|why| rpc_error(ErrorCode::InvalidParams, why))
}

/// `error` with `sentence` added to its message (`"…; sentence"`), code and data kept.
pub(crate) fn with_sentence(error: &ErrorObjectOwned, sentence: &str) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        error.code(),
        format!("{}; {sentence}", error.message()),
        error
            .data()
            .map(|data| serde_json::from_str::<serde_json::Value>(data.get()).unwrap_or_default()),
    )
}
