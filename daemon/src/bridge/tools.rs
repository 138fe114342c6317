//! MCP `tools/list` and `tools/call` for an MCP client: the tools of every
//! ready server in one list, under the names of [`super::names`], and calls
//! sent on to the server that owns the name.
//!
//! A listing is one page (no cursor); its names are kept ([`Listing`]) so a
//! call finds its server without listing again. A name not in the latest
//! listing is looked up in a fresh one, then read as `server{separator}tool`
//! against every known server, so that calling a tool of a server that is
//! not ready (not listed) says why it is not. Answers pass through as the
//! server wrote them; what corrald has to say about a call (server not
//! ready, gone, timed out) is a tool error (`isError: true`), which the
//! model sees, except a name that means nothing (JSON-RPC invalid params,
//! as MCP asks for an unknown tool) and the server's own JSON-RPC errors,
//! passed on as it gave them.

use std::collections::HashMap;
use std::sync::Arc;

use corral_protocol::{ErrorCode, FailureReason, ServerStatus};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{Bridge, error, names, parse};
use crate::hub::link::Link;
use crate::mcp::forward::{self, JsonObject};
use crate::mcp::route::{NotAvailable, RouteError, TargetSet};

/// The names of one listing, to (server, tool).
pub(crate) type Listing = HashMap<String, (String, String)>;

/// `tools/list`'s params.
#[derive(Debug, Default, serde::Deserialize)]
struct ListParams {
    #[serde(default)]
    cursor: Option<String>,
}

/// `tools/call`'s params: the tool's name, its arguments and `_meta` (with
/// the client's progress token, if any), passed on.
#[derive(Debug, serde::Deserialize)]
struct CallParams {
    name: String,
    #[serde(default)]
    arguments: Option<JsonObject>,
    #[serde(default, rename = "_meta")]
    meta: Option<JsonObject>,
}

// A stopped supervisor (the daemon is shutting down) becomes `shuttingDown`
// through the crate's one `From<SupervisorStopped>` for error objects.

/// `tools/list`: every tool of every ready server that the config's tool
/// filters let through, as the server wrote it but for its name.
pub(crate) async fn list(bridge: &Bridge, params: &Params<'_>) -> Result<Value, ErrorObjectOwned> {
    let ListParams { cursor } = parse(params, "tools/list")?;
    if let Some(cursor) = cursor {
        return Err(error(
            ErrorCode::InvalidParams,
            format!(
                "invalid params for `tools/list`: corral lists every tool in one page; {cursor:?} is not a cursor it gave"
            ),
        ));
    }
    let tools = listing(bridge).await?;
    Ok(json!({ "tools": tools }))
}

/// The tools of every ready server, named; keeps the names for calls.
async fn listing(bridge: &Bridge) -> Result<Vec<Value>, ErrorObjectOwned> {
    // Asking for every server never meets `NotFound`.
    let TargetSet { ready, .. } = bridge.supervisor.targets(None).await?.unwrap_or_default();
    let mut pairs = Vec::new();
    let mut tools = Vec::new();
    for target in &ready {
        let server = &target.config.name;
        let allowed = match target.allowed_tools() {
            Ok(allowed) => allowed,
            Err(failure) => {
                tracing::warn!(
                    server,
                    ?failure,
                    "a ready server's tools cannot be listed for MCP clients"
                );
                continue;
            }
        };
        for tool in allowed {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            pairs.push((server.clone(), name.to_owned()));
            tools.push(tool);
        }
    }
    let names = names::assign(&pairs, &bridge.separator);
    let mut listing = Listing::with_capacity(pairs.len());
    let mut named = Vec::with_capacity(tools.len());
    for ((pair, mut tool), name) in pairs.into_iter().zip(tools).zip(names) {
        let Some(name) = name else {
            tracing::debug!(server = %pair.0, tool = %pair.1, "a server listed a tool twice; the repeat is left out");
            continue;
        };
        tool["name"] = Value::String(name.clone());
        listing.insert(name, pair);
        named.push(tool);
    }
    bridge.set_listed(Arc::new(listing));
    Ok(named)
}

/// What a name in a `tools/call` stands for.
enum Resolved {
    /// A tool of this server, under its own name.
    Tool(String, String),
    /// A server's tool that is not listed now: the server is not ready, or the tool is gone.
    Unlisted(String, String),
}

/// Find the server and tool of `name`: the latest listing, a fresh one,
/// then `server{separator}tool` against every server (disabled ones too).
async fn resolve(bridge: &Bridge, name: &str) -> Result<Resolved, ErrorObjectOwned> {
    if let Some((server, tool)) = bridge.listed().get(name) {
        return Ok(Resolved::Tool(server.clone(), tool.clone()));
    }
    listing(bridge).await?;
    if let Some((server, tool)) = bridge.listed().get(name) {
        return Ok(Resolved::Tool(server.clone(), tool.clone()));
    }
    let servers: Vec<String> = bridge
        .supervisor
        .configs(None)
        .await?
        .into_iter()
        .map(|config| config.name)
        .collect();
    match names::split(name, &servers, &bridge.separator) {
        Some((server, tool)) => Ok(Resolved::Unlisted(server, tool.to_owned())),
        None => Err(error(
            ErrorCode::InvalidParams,
            format!("unknown tool `{name}`: no server corral runs has a tool of that name; list the tools again"),
        )),
    }
}

/// `tools/call`: send the call to the server that owns the name, with the
/// client's arguments and `_meta`; the server's progress reaches `link`
/// with the client's token, and the client's `notifications/cancelled`
/// (the api aborts this future) cancels it on the server.
pub(crate) async fn call(
    bridge: &Bridge,
    params: &Params<'_>,
    link: &Arc<Link>,
) -> Result<Box<RawValue>, ErrorObjectOwned> {
    let CallParams { name, arguments, meta } = parse(params, "tools/call")?;
    let (server, tool, listed) = match resolve(bridge, &name).await? {
        Resolved::Tool(server, tool) => (server, tool, true),
        Resolved::Unlisted(server, tool) => (server, tool, false),
    };
    let target = match bridge.supervisor.call_target(server.clone()).await? {
        Ok(target) => target,
        Err(NotAvailable::NotFound) => {
            return tool_error(&format!(
                "MCP server `{server}` is no longer configured in corral; list the tools again"
            ));
        }
        Err(NotAvailable::NotReady {
            status,
            failure_reason,
            error,
        }) => return tool_error(&not_ready(&server, status, failure_reason, error.as_deref())),
    };
    if let Err(failure) = target.check_tool(&tool) {
        let why = match failure {
            RouteError::ToolDisabled { .. } => "the config's enabled_tools / disabled_tools leave it out",
            _ => "the server does not list it (any more)",
        };
        let message = if listed {
            format!("tool `{name}` (`{tool}` of MCP server `{server}`) cannot be called: {why}; list the tools again")
        } else {
            format!("unknown tool `{name}`: MCP server `{server}` has no tool `{tool}` ({why})")
        };
        return Err(error(ErrorCode::InvalidParams, message));
    }
    let frontends = &bridge.hub.routes;
    // While it runs, this connection is the one the server's requests would go to.
    let _call = frontends.call_started(&server, link.id);
    let timeout = target.config.tool_timeout;
    let sent = forward::call_tool(&target, tool.clone(), arguments, meta, (frontends, link));
    let Some(answer) = frontends.active_time_timeout(&server, link.id, timeout, sent).await else {
        return tool_error(&format!(
            "MCP server `{server}` did not answer the call of `{tool}` within {}s (its tool_timeout_sec); \
             the call was cancelled on the server",
            timeout.as_secs_f64()
        ));
    };
    match answer {
        Ok(result) => Ok(result),
        // The server's own refusal, as it gave it (a direct client would see the same).
        Err(RouteError::Answered { code, message, data }) => Err(ErrorObjectOwned::owned(code, message, data)),
        Err(failure) => tool_error(&failed(&server, &tool, failure)),
    }
}

/// A `CallToolResult` with `isError: true` and `text`.
fn tool_error(text: &str) -> Result<Box<RawValue>, ErrorObjectOwned> {
    let result = json!({ "content": [{ "type": "text", "text": text }], "isError": true });
    serde_json::value::to_raw_value(&result).map_err(|failure| error(ErrorCode::InternalError, failure.to_string()))
}

/// Why `server` cannot take a call, and what the user can do about it.
pub(crate) fn not_ready(
    server: &str,
    status: ServerStatus,
    reason: Option<FailureReason>,
    error: Option<&str>,
) -> String {
    let mut text = format!("MCP server `{server}` is not ready ({status}");
    if let Some(reason) = reason {
        text.push_str(&format!(": {reason}"));
    }
    text.push(')');
    if let Some(error) = error.filter(|_| status == ServerStatus::Failed) {
        text.push_str(&format!(": {error}"));
    }
    let advice = match (status, reason) {
        (ServerStatus::Starting, _) => "it is starting: call again in a moment".to_owned(),
        (ServerStatus::Ready, _) => "call again".to_owned(),
        (ServerStatus::Stopped | ServerStatus::Cancelled, _) => format!("start it with `corral start {server}`"),
        (
            ServerStatus::Failed,
            Some(FailureReason::AuthenticationRequired | FailureReason::ReauthenticationRequired),
        ) => format!("log in with `corral login {server}`; it starts again by itself after the login"),
        (ServerStatus::Failed, Some(FailureReason::InsufficientScope)) => {
            format!("log in with the scopes it needs: `corral login {server} --scopes ...`")
        }
        (ServerStatus::Failed, Some(FailureReason::ConfigInvalid)) => {
            "fix its entry in the config file (`corral config check` says where); corral reloads it by itself"
                .to_owned()
        }
        (ServerStatus::Failed, Some(FailureReason::ExecutableNotFound | FailureReason::SpawnFailed)) => {
            format!(
                "check its `command` in the config (`corral doctor` says what is wrong), then `corral restart {server}`"
            )
        }
        (ServerStatus::Failed, Some(FailureReason::Unreachable | FailureReason::HttpError)) => {
            format!("check that the server is up and reachable, then `corral restart {server}`")
        }
        _ => format!("`corral get {server}` shows its stderr; `corral restart {server}` starts it again"),
    };
    format!("{text}. To fix: {advice}")
}

/// What a call that failed on the way (not the server's own error) met.
fn failed(server: &str, tool: &str, failure: RouteError) -> String {
    let during = format!("the call of `{tool}`");
    match failure {
        RouteError::Unreachable { message } => {
            format!("MCP server `{server}` could not be reached during {during}: {message}")
        }
        RouteError::Http { reason, message } => format!("MCP server `{server}` failed {during} ({reason}): {message}"),
        RouteError::Gone { message } => format!("MCP server `{server}` went away during {during}: {message}"),
        RouteError::SessionLost { why } => {
            format!("MCP server `{server}` lost its session during {during} and no new one could be made: {why}")
        }
        RouteError::InsufficientScope { required, error } => format!(
            "{}; log in with the scope it asks for: `corral login {server} --scopes {required}`",
            failed(server, tool, *error)
        ),
        RouteError::UnhandledResult { kinds } => {
            format!("MCP server `{server}` answered {during} with a result kind corral does not pass on yet ({kinds})")
        }
        RouteError::Answered { message, .. } | RouteError::Failed { message } => {
            format!("{during} on MCP server `{server}` failed: {message}")
        }
        other => format!("{during} on MCP server `{server}` failed: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_not_ready_server_is_explained_with_what_to_do() {
        let text = not_ready(
            "github",
            ServerStatus::Failed,
            Some(FailureReason::AuthenticationRequired),
            Some("the server needs a login"),
        );
        assert_eq!(
            text,
            "MCP server `github` is not ready (failed: authenticationRequired): the server needs a login. \
             To fix: log in with `corral login github`; it starts again by itself after the login"
        );
        let text = not_ready("fs", ServerStatus::Stopped, None, None);
        assert_eq!(
            text,
            "MCP server `fs` is not ready (stopped). To fix: start it with `corral start fs`"
        );
        let text = not_ready(
            "fs",
            ServerStatus::Failed,
            Some(FailureReason::CrashLoop),
            Some("exited 3"),
        );
        assert!(text.contains("(failed: crashLoop): exited 3."), "{text}");
        assert!(text.ends_with("`corral restart fs` starts it again"), "{text}");
        let text = not_ready("fs", ServerStatus::Starting, None, Some("ignored unless failed"));
        assert_eq!(
            text,
            "MCP server `fs` is not ready (starting). To fix: it is starting: call again in a moment"
        );
    }
}
