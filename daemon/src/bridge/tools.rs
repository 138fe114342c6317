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
//! passed on as it gave them. A call to a server of MCP 2026-07-28 names
//! the client's log level (`logging/setLevel`) in its `_meta`, where that
//! version moved it (`mcp::modern`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use corral_protocol::{ErrorCode, FailureReason, ServerStatus};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::{Bridge, Client, error, keep, latest, names, parse, parse_quickly};
use crate::hub::link::Link;
use crate::mcp::forward::{self, JsonObject};
use crate::mcp::modern;
use crate::mcp::route::{CallTarget, NotAvailable, RouteError, TargetSet};
use crate::params::{CallView, RawJson, RawParams, arguments_fit, raw_arguments};

/// The names of one listing, to (server, tool).
pub(crate) type Listing = HashMap<String, (String, String)>;

/// The params of a listing (`tools/list`, `prompts/list`, …).
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

/// [`CallParams`] with the arguments as the client wrote them: they are only passed on.
/// Takes a subset of what `CallParams` takes (arguments an object), so whatever it does
/// not take is read, and refused or not, as `CallParams`.
#[derive(Debug, serde::Deserialize)]
struct RawCallParams<'a> {
    name: String,
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(default, rename = "_meta")]
    meta: Option<JsonObject>,
}

// A stopped supervisor (the daemon is shutting down) becomes `shuttingDown`
// through the crate's one `From<SupervisorStopped>` for error objects.

/// `tools/list`: every tool of every ready server that the config's tool
/// filters let through, as the server wrote it but for its name.
pub(crate) async fn list(bridge: &Bridge, client: &Client, params: &Params<'_>) -> Result<Value, ErrorObjectOwned> {
    one_page(params, "tools/list")?;
    let tools = listing(bridge, client).await?;
    Ok(json!({ "tools": tools }))
}

/// Read a listing's params, refusing a cursor: the bridge lists everything in one page.
pub(crate) fn one_page(params: &Params<'_>, method: &str) -> Result<(), ErrorObjectOwned> {
    let ListParams { cursor } = parse(params, method)?;
    match cursor {
        None => Ok(()),
        Some(cursor) => Err(error(
            ErrorCode::InvalidParams,
            format!(
                "invalid params for `{method}`: corral lists everything in one page; {cursor:?} is not a cursor it gave"
            ),
        )),
    }
}

/// The ready servers `client` may see, each with the name it knows it by.
pub(crate) async fn visible_ready(
    bridge: &Bridge,
    client: &Client,
) -> Result<Vec<(String, CallTarget)>, ErrorObjectOwned> {
    // Asking for every server never meets `NotFound`.
    let TargetSet { ready, whose, .. } = bridge.supervisor.targets(None)?.unwrap_or_default();
    Ok(ready
        .into_iter()
        .filter_map(|target| {
            let shown = client.view.shown_name(&target.config.name, &whose)?.to_owned();
            Some((shown, target))
        })
        .collect())
}

/// The tools of every ready server `client` sees, named; keeps the names for calls.
async fn listing(bridge: &Bridge, client: &Client) -> Result<Vec<Value>, ErrorObjectOwned> {
    let mut sources = Vec::new();
    for (shown, target) in visible_ready(bridge, client).await? {
        let server = target.config.name.clone();
        match target.allowed_tools() {
            Ok(allowed) => sources.push((shown, server, allowed)),
            Err(failure) => tracing::warn!(
                server,
                ?failure,
                "a ready server's tools cannot be listed for MCP clients"
            ),
        }
    }
    let (listing, named) = name_items(sources, &client.view.separator);
    keep(&client.tools, listing);
    Ok(named)
}

/// Name the items (tools or prompts) of `sources` — (the name the client
/// knows the server by, its registry name, its items) — for a client; an
/// item without a `name` is left out. The listing maps each given name to
/// (registry name, the item's own name).
pub(crate) fn name_items(sources: Vec<(String, String, Vec<Value>)>, separator: &str) -> (Listing, Vec<Value>) {
    let mut pairs = Vec::new();
    let mut servers = Vec::new();
    let mut items = Vec::new();
    for (shown, server, own) in sources {
        for item in own {
            let Some(name) = item.get("name").and_then(Value::as_str) else {
                continue;
            };
            pairs.push((shown.clone(), name.to_owned()));
            servers.push(server.clone());
            items.push(item);
        }
    }
    let names = names::assign(&pairs, separator);
    let mut listing = Listing::with_capacity(pairs.len());
    let mut named = Vec::with_capacity(items.len());
    for (((pair, server), mut item), name) in pairs.into_iter().zip(servers).zip(items).zip(names) {
        let Some(name) = name else {
            tracing::debug!(server = %pair.0, name = %pair.1, "a server listed a name twice; the repeat is left out");
            continue;
        };
        item["name"] = Value::String(name.clone());
        listing.insert(name, (server, pair.1));
        named.push(item);
    }
    (listing, named)
}

/// What a name in a `tools/call` stands for.
enum Resolved {
    /// A tool of this server, under its own name.
    Tool(String, String),
    /// A server's tool that is not listed now: the server is not ready, or the tool is gone.
    Unlisted(String, String),
}

/// Find the server and tool of `name`: the latest listing, a fresh one,
/// then `server{separator}tool` against every server the client sees
/// (disabled ones too).
async fn resolve(bridge: &Bridge, client: &Client, name: &str) -> Result<Resolved, ErrorObjectOwned> {
    if let Some((server, tool)) = latest(&client.tools).get(name) {
        return Ok(Resolved::Tool(server.clone(), tool.clone()));
    }
    listing(bridge, client).await?;
    if let Some((server, tool)) = latest(&client.tools).get(name) {
        return Ok(Resolved::Tool(server.clone(), tool.clone()));
    }
    let whose = bridge.supervisor.targets(None)?.unwrap_or_default().whose;
    let servers: Vec<String> = bridge
        .supervisor
        .configs(None)
        .await?
        .into_iter()
        .filter_map(|config| Some(client.view.shown_name(&config.name, &whose)?.to_owned()))
        .collect();
    let split = names::split(name, &servers, &client.view.separator)
        .and_then(|(shown, tool)| Some((client.view.registry_name(&shown, &whose)?, tool)));
    match split {
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
    client: &Client,
    mut params: RawParams,
    link: &Arc<Link>,
) -> Result<Box<RawValue>, ErrorObjectOwned> {
    // Read in the request's pass, when it read them as a call: taken as `RawCallParams`
    // would (other members, `server` among them, ignored).
    let quick = params.take_call().and_then(|call| call.view(&params));
    let (read, full_arguments);
    let (name, arguments, mut meta) = match quick {
        Some(CallView {
            name, arguments, meta, ..
        }) if arguments_fit(arguments) => (name, arguments, meta),
        _ => {
            read = params.params();
            match parse_quickly::<RawCallParams<'_>, CallParams>(&read, "tools/call", |quick| {
                arguments_fit(quick.arguments.map(RawJson::from))
            })? {
                Ok(RawCallParams { name, arguments, meta }) => (Cow::Owned(name), arguments.map(RawJson::from), meta),
                Err(CallParams { name, arguments, meta }) => {
                    full_arguments = raw_arguments(arguments.as_ref())?;
                    (Cow::Owned(name), full_arguments.as_deref().map(RawJson::from), meta)
                }
            }
        }
    };
    let (server, tool, listed) = match resolve(bridge, client, &name).await? {
        Resolved::Tool(server, tool) => (server, tool, true),
        Resolved::Unlisted(server, tool) => (server, tool, false),
    };
    let target = match bridge.supervisor.call_target(&server)? {
        Ok(target) => target,
        Err(NotAvailable::NotFound) => {
            return tool_error(&format!(
                "MCP server `{server}` is no longer configured in corral; list the tools again"
            ));
        }
        Err(not_available) => return tool_error(&advice(&server, &not_available)),
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
    let call_guard = frontends.call_started(&server, link.id);
    let timeout = target.config.tool_timeout;
    // A server of MCP 2026-07-28 logs for a request at the level the request names: the
    // client's `logging/setLevel`, unless its own `_meta` names one.
    let level = super::LOG_LEVELS[client.log_rank.load(Ordering::Relaxed).min(super::LOG_LEVELS.len() - 1)];
    modern::with_log_level(&target, &mut meta, level);
    // Boxed apart from this future: each of the two then fits the allocator's small-block
    // cache, where one future of both would take its slow path (and be copied whole).
    let mut sent = Box::pin(forward::call_tool(&target, &tool, arguments, meta, (frontends, link)));
    let Some(answer) = call_guard.within(timeout, sent.as_mut()).await else {
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
        Err(failure) => tool_error(&failed(&server, &tool, &failure)),
    }
}

/// A `CallToolResult` with `isError: true` and `text`.
fn tool_error(text: &str) -> Result<Box<RawValue>, ErrorObjectOwned> {
    let result = json!({ "content": [{ "type": "text", "text": text }], "isError": true });
    serde_json::value::to_raw_value(&result).map_err(|failure| error(ErrorCode::InternalError, failure.to_string()))
}

/// Why `server` cannot take a request, and what the user can do about it.
pub(crate) fn advice(server: &str, not_available: &NotAvailable) -> String {
    let text = not_available.describe(server);
    let NotAvailable::NotReady {
        status, failure_reason, ..
    } = not_available
    else {
        return format!("{text}; list again");
    };
    let advice = match (status, failure_reason) {
        (ServerStatus::Starting, _) => "it is starting: call again in a moment".to_owned(),
        (ServerStatus::Ready, _) => "call again".to_owned(),
        (ServerStatus::Stopped | ServerStatus::Cancelled, _) => format!("start it with `corral start {server}`"),
        (
            ServerStatus::Failed,
            Some(FailureReason::AuthenticationRequired | FailureReason::ReauthenticationRequired),
        ) => format!("log in with `corral login {server}`; it starts again by itself after the login"),
        (ServerStatus::Failed, Some(FailureReason::InsufficientScope)) => {
            format!("log in again with `corral login {server}`, which asks for the scope the server named")
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
fn failed(server: &str, tool: &str, failure: &RouteError) -> String {
    let text = failure.describe(server, &format!("the call of `{tool}`"));
    match failure {
        RouteError::InsufficientScope { required, .. } => {
            format!("{text}; log in with the scope it asks for: `corral login {server} --scopes {required}`")
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_ready(status: ServerStatus, reason: Option<FailureReason>, error: Option<&str>) -> NotAvailable {
        NotAvailable::NotReady {
            status,
            failure_reason: reason,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn a_not_ready_server_is_explained_with_what_to_do() {
        let text = advice(
            "github",
            &not_ready(
                ServerStatus::Failed,
                Some(FailureReason::AuthenticationRequired),
                Some("the server needs a login"),
            ),
        );
        assert_eq!(
            text,
            "MCP server `github` is not ready (failed: authenticationRequired): the server needs a login. \
             To fix: log in with `corral login github`; it starts again by itself after the login"
        );
        let text = advice("fs", &not_ready(ServerStatus::Stopped, None, None));
        assert_eq!(
            text,
            "MCP server `fs` is not ready (stopped). To fix: start it with `corral start fs`"
        );
        let text = advice(
            "fs",
            &not_ready(ServerStatus::Failed, Some(FailureReason::CrashLoop), Some("exited 3")),
        );
        assert!(text.contains("(failed: crashLoop): exited 3."), "{text}");
        assert!(text.ends_with("`corral restart fs` starts it again"), "{text}");
        let text = advice(
            "fs",
            &not_ready(ServerStatus::Starting, None, Some("ignored unless failed")),
        );
        assert_eq!(
            text,
            "MCP server `fs` is not ready (starting). To fix: it is starting: call again in a moment"
        );
    }

    #[test]
    fn a_call_that_needs_a_scope_says_how_to_log_in_with_it() {
        let failure = RouteError::InsufficientScope {
            required: "repo".to_owned(),
            error: Box::new(RouteError::Http {
                reason: FailureReason::InsufficientScope,
                message: "HTTP 403".to_owned(),
            }),
        };
        assert_eq!(
            failed("github", "create_issue", &failure),
            "MCP server `github` failed the call of `create_issue`: HTTP 403; \
             log in with the scope it asks for: `corral login github --scopes repo`"
        );
    }
}
