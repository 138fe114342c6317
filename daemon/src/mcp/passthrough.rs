//! MCP requests and notifications corrald does not model, passed to one server for a
//! front-end (`mcpServer/request`, `mcpServer/notify`): `completion/complete`,
//! `logging/setLevel`, a server's own methods (codex's `codex/sandbox-state`).
//!
//! Sent as rmcp's custom messages with the method and params the front-end gave, through
//! `forward` (cancel on drop, one retry after an expired HTTP session); the answer comes back
//! as the server wrote it where corrald sees it (stdio), rmcp's reading of it otherwise.
//!
//! What is refused, and why ([`check_request`], [`check_notification`]):
//! - methods corrald runs itself, where a front-end's copy would break its state or its rules:
//!   `initialize` (one session per server, shared by every front-end: a second one would
//!   renegotiate it under them); `tools/list` and `tools/call` (the config's `enabled_tools` /
//!   `disabled_tools` govern them: `tools/list` and `tools/call` of Corral's protocol apply
//!   them); `resources/subscribe`, `resources/unsubscribe` and `subscriptions/listen` (corrald
//!   keeps who is subscribed and tells the server when nobody is); `tasks/*` (the tasks of
//!   corrald's calls are corrald's, and one front-end could read or cancel another's);
//! - notifications corrald sends itself: `notifications/initialized` (once per session),
//!   `notifications/cancelled` (the ids on a server's session are corrald's, so a front-end
//!   cannot name its own request, only someone else's: it cancels its own with
//!   `$/cancelRequest`), `notifications/progress` (progress tokens of a server's requests are
//!   corrald's) and `notifications/roots/list_changed` (sent when the roots corrald gives change);
//! - a method of a capability the server did not declare at `initialize`: `completion/complete`
//!   (`completions`), `logging/setLevel` (`logging`), `prompts/*` (`prompts`), `resources/*`
//!   (`resources`), `skills/*` and `resources/directory/read` (the skills extension, the latter
//!   with `directoryRead`). A method corrald does not know needs none: it is the server's to
//!   answer.

use std::sync::Arc;

use rmcp::model::{
    ClientNotification, ClientRequest, CustomNotification, CustomRequest, MetaObject, RequestMetaObject,
    ServerCapabilities,
};
use serde_json::value::RawValue;

use super::forward::{self, ProgressTarget};
use super::route::{CallTarget, RouteError};
use crate::hub::link::Link;
use crate::hub::routes::FrontEnds;

/// Why a method is not passed through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// corrald runs the method itself.
    Modelled {
        /// The method.
        method: String,
        /// Why it cannot be passed through, and what to do instead.
        why: &'static str,
    },
    /// The server did not declare the capability the method belongs to.
    Undeclared {
        /// The method.
        method: String,
        /// The capability, as MCP names it.
        capability: &'static str,
    },
}

impl Refusal {
    /// In words, for `server`.
    pub(crate) fn describe(&self, server: &str) -> String {
        match self {
            Self::Modelled { method, why } => {
                format!("`{method}` is not passed through to MCP server `{server}`: {why}")
            }
            Self::Undeclared { method, capability } => format!(
                "`{method}` is not passed through to MCP server `{server}`: the server did not declare the \
                 `{capability}` capability it belongs to"
            ),
        }
    }
}

/// Requests corrald runs itself, and why each is not passed through.
const MODELLED_REQUESTS: [(&str, &str); 6] = [
    (
        "initialize",
        "corrald keeps one session per server, shared by every front-end; a second `initialize` would renegotiate it",
    ),
    (
        "tools/list",
        "the config's tool filters apply to it: use Corral's `tools/list`",
    ),
    (
        "tools/call",
        "the config's tool filters apply to it: use Corral's `tools/call`",
    ),
    (
        "resources/subscribe",
        "corrald keeps who is subscribed: use Corral's `resources/subscribe`",
    ),
    (
        "resources/unsubscribe",
        "corrald keeps who is subscribed: use Corral's `resources/unsubscribe`",
    ),
    (
        "subscriptions/listen",
        "corrald keeps the session's subscriptions: use Corral's `resources/subscribe`",
    ),
];

/// Why `tasks/*` is not passed through.
const TASKS: &str = "the tasks of corrald's calls are corrald's, and one front-end could read or cancel another's";

/// Notifications corrald sends itself, and why each is not passed through.
const MODELLED_NOTIFICATIONS: [(&str, &str); 4] = [
    (
        "notifications/initialized",
        "corrald sent it when the session started; it is sent once",
    ),
    (
        "notifications/cancelled",
        "the request ids on a server's session are corrald's, so it could only cancel another's request: \
         cancel your own with `$/cancelRequest`",
    ),
    (
        "notifications/progress",
        "the progress tokens of a server's requests are corrald's",
    ),
    (
        "notifications/roots/list_changed",
        "corrald sends it when the roots it gives the server change",
    ),
];

/// Whether request `method` may be passed to a server that declared `capabilities`.
pub(crate) fn check_request(method: &str, capabilities: Option<&ServerCapabilities>) -> Result<(), Refusal> {
    if let Some((_, why)) = MODELLED_REQUESTS.iter().find(|(modelled, _)| *modelled == method) {
        return Err(Refusal::Modelled {
            method: method.to_owned(),
            why,
        });
    }
    if method.starts_with("tasks/") {
        return Err(Refusal::Modelled {
            method: method.to_owned(),
            why: TASKS,
        });
    }
    let Some((capability, declared)) = capability_of(method, capabilities) else {
        return Ok(());
    };
    if declared {
        Ok(())
    } else {
        Err(Refusal::Undeclared {
            method: method.to_owned(),
            capability,
        })
    }
}

/// Whether notification `method` may be passed to a server.
pub(crate) fn check_notification(method: &str) -> Result<(), Refusal> {
    match MODELLED_NOTIFICATIONS.iter().find(|(modelled, _)| *modelled == method) {
        Some((_, why)) => Err(Refusal::Modelled {
            method: method.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// The capability `method` belongs to and whether `capabilities` declare it; `None` for a
/// method of no capability (`ping`, a server's own).
fn capability_of(method: &str, capabilities: Option<&ServerCapabilities>) -> Option<(&'static str, bool)> {
    let declared = |has: fn(&ServerCapabilities) -> bool| capabilities.is_some_and(has);
    Some(match method {
        "completion/complete" => ("completions", declared(|c| c.completions.is_some())),
        #[allow(deprecated)]
        "logging/setLevel" => ("logging", declared(|c| c.logging.is_some())),
        "resources/directory/read" => (
            "io.modelcontextprotocol/skills (directoryRead)",
            declared(ServerCapabilities::supports_directory_read),
        ),
        _ if method.starts_with("prompts/") => ("prompts", declared(|c| c.prompts.is_some())),
        _ if method.starts_with("resources/") => ("resources", declared(|c| c.resources.is_some())),
        _ if method.starts_with("skills/") => (
            "io.modelcontextprotocol/skills",
            declared(ServerCapabilities::supports_skills),
        ),
        _ => return None,
    })
}

/// The capabilities `target`'s server declared at `initialize`.
pub(crate) fn capabilities(target: &CallTarget) -> Option<ServerCapabilities> {
    target.peer().peer_info().map(|info| info.capabilities.clone())
}

/// Send request `method` with `params` to `target`'s server for the front-end on `caller`'s
/// link; its answer as the server wrote it (see the module documentation). Checked by the
/// caller ([`check_request`]). The params' `_meta` goes with them, but for its progress token:
/// rmcp puts its own on every request, and the front-end's is what the progress routed to it
/// carries.
pub(crate) async fn request(
    target: &CallTarget,
    method: String,
    params: Option<serde_json::Value>,
    caller: (&Arc<FrontEnds>, &Arc<Link>),
) -> Result<Box<RawValue>, RouteError> {
    let (params, meta, progress_token) = split_meta(params);
    let mut request = CustomRequest::new(method, params);
    if let Some(meta) = meta {
        request.extensions.insert(RequestMetaObject(MetaObject(meta)));
    }
    let (frontends, link) = caller;
    let progress: Option<ProgressTarget<'_>> = progress_token.map(|token| (frontends, link, token));
    forward::request_raw(target, ClientRequest::CustomRequest(request), progress).await
}

/// `params` without their `_meta`, the `_meta` without its progress token, and the token.
fn split_meta(
    params: Option<serde_json::Value>,
) -> (
    Option<serde_json::Value>,
    Option<serde_json::Map<String, serde_json::Value>>,
    Option<serde_json::Value>,
) {
    let Some(serde_json::Value::Object(mut params)) = params else {
        return (params, None, None);
    };
    let Some(serde_json::Value::Object(mut meta)) = params.remove("_meta") else {
        return (Some(serde_json::Value::Object(params)), None, None);
    };
    let token = meta.remove("progressToken");
    let meta = (!meta.is_empty()).then_some(meta);
    (Some(serde_json::Value::Object(params)), meta, token)
}

/// Send notification `method` with `params` to `target`'s server. Checked by the caller
/// ([`check_notification`]).
pub(crate) async fn notify(
    target: &CallTarget,
    method: String,
    params: Option<serde_json::Value>,
) -> Result<(), RouteError> {
    let notification = ClientNotification::CustomNotification(CustomNotification::new(method, params));
    forward::notify(target, notification).await
}

#[cfg(test)]
mod tests {
    use rmcp::model::{JsonObject, PromptsCapability};

    use super::*;

    #[test]
    fn methods_corrald_runs_are_refused_with_what_to_do() {
        for method in [
            "initialize",
            "tools/call",
            "tools/list",
            "resources/subscribe",
            "subscriptions/listen",
            "tasks/get",
            "tasks/cancel",
        ] {
            let refusal = check_request(method, Some(&ServerCapabilities::default())).expect_err(method);
            assert!(matches!(refusal, Refusal::Modelled { .. }), "{method}");
            assert!(refusal.describe("s").contains("MCP server `s`"));
        }
        assert!(
            check_request("tools/call", None)
                .expect_err("refused")
                .describe("s")
                .contains("Corral's `tools/call`")
        );
        for method in [
            "notifications/initialized",
            "notifications/cancelled",
            "notifications/progress",
            "notifications/roots/list_changed",
        ] {
            assert!(check_notification(method).is_err(), "{method}");
        }
        check_notification("codex/sandbox-state").expect("a server's own");
        check_notification("notifications/custom").expect("not corrald's");
    }

    #[test]
    fn the_progress_token_leaves_the_meta_and_the_rest_stays() {
        let (params, meta, token) = split_meta(Some(serde_json::json!({
            "argument": { "name": "a" },
            "_meta": { "progressToken": "p-1", "trace": "t" }
        })));
        assert_eq!(params, Some(serde_json::json!({ "argument": { "name": "a" } })));
        assert_eq!(
            meta.and_then(|meta| meta.get("trace").cloned()),
            Some(serde_json::json!("t"))
        );
        assert_eq!(token, Some(serde_json::json!("p-1")));
        assert_eq!(split_meta(None), (None, None, None));
        let (params, meta, token) = split_meta(Some(serde_json::json!({ "_meta": { "progressToken": 7 } })));
        assert_eq!(
            (params, meta, token),
            (Some(serde_json::json!({})), None, Some(serde_json::json!(7)))
        );
    }

    #[test]
    fn a_method_needs_the_capability_it_belongs_to() {
        let none = ServerCapabilities::default();
        let mut some = ServerCapabilities::default();
        some.completions = Some(JsonObject::default());
        some.prompts = Some(PromptsCapability::default());
        assert_eq!(
            check_request("completion/complete", Some(&none)),
            Err(Refusal::Undeclared {
                method: "completion/complete".to_owned(),
                capability: "completions",
            })
        );
        check_request("completion/complete", Some(&some)).expect("declared");
        check_request("prompts/get", Some(&some)).expect("declared");
        assert!(check_request("logging/setLevel", Some(&some)).is_err());
        assert!(check_request("resources/read", Some(&some)).is_err());
        assert!(check_request("skills/list", Some(&some)).is_err());
        assert!(check_request("resources/directory/read", Some(&some)).is_err());
        check_request("codex/sandbox-state", Some(&none)).expect("a server's own method needs nothing");
        check_request("ping", None).expect("ping");
    }
}
