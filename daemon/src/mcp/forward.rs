//! One request from a front-end, sent on to an MCP server: one function per
//! method ([`call_tool`], [`read_resource`], [`get_prompt`], [`list_all`],
//! [`subscribe`], [`unsubscribe`]) builds the rmcp request and returns the
//! result as JSON, as the server wrote it where corrald could see it, or a
//! [`RouteError`]: plain data that the front-end API words, never an rmcp
//! type.
//!
//! Every request except (un)subscribe goes out through rmcp's
//! `send_cancellable_request`, so its id and progress token are known: the
//! server's answer is returned as the server wrote it when the transport
//! lets corrald see it (`wire_tee`), the server's progress reaches the
//! front-end that asked for it, and dropping the future (timeout,
//! `$/cancelRequest`, a front-end gone) tells the server with
//! `notifications/cancelled`.
//!
//! `tools/call` to a stdio server of MCP before 2026-07-28 does the same
//! without rmcp: the caller's task writes it on the session's wire with an
//! id of the wire's, and the wire's reader hands it the answer as the
//! server wrote it (`wire_tee`'s direct lane; `call_tool_on_wire`). rmcp
//! would only parse the answer into a model nobody reads and pass it
//! through two more tasks; what the caller sees is the same: the raw
//! result, the server's error as `RouteError::Answered`, the session's end
//! as `RouteError::Gone`, progress to its front-end, cancellation on drop.
//! A session of MCP 2026-07-28 keeps rmcp's way, which adds the client's
//! context to each request and counts a server's requests only while one
//! of rmcp's is in flight.
//!
//! A request is never sent twice, with one exception: when a streamable-HTTP
//! server no longer knows the session (HTTP 404 to a request carrying it),
//! it did not run the request; the server's task makes a new session (a new
//! transport and `initialize`) and the request is sent once more on it. A
//! second 404 is an error; every other failure (401 included) is returned as
//! it is.
//!
//! Deadlines are the caller's: these functions wait as long as the server
//! takes, and the caller drops the future when its clock runs out.

// `resources/subscribe` is legacy in MCP 2026-07-28 (`Peer::listen` replaces
// it), but the servers people run negotiate 2025-11-25, where it is the way.
#![allow(deprecated)]

use std::collections::HashSet;
use std::sync::Arc;

use corral_protocol::{PromptsList, Request as _, ResourceTemplatesList, ResourcesList};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CancelledNotificationParam, ClientRequest, GetPromptRequest,
    GetPromptRequestParams, ListPromptsRequest, ListResourceTemplatesRequest, ListResourcesRequest, MetaObject,
    PaginatedRequestParams, ReadResourceRequest, ReadResourceRequestParams, RequestId, RequestMetaObject, ServerResult,
    SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::PeerRequestOptions;
use rmcp::{ErrorData, Peer, RoleClient, ServiceError};
use serde::Serialize;
use serde_json::value::RawValue;

use super::classify::{is_session_expired, required_scope, send_failure};
use super::route::{CallTarget, RouteError};
use super::wire_tee::{DirectAnswer, WireGone, WireTee};
use crate::hub::link::Link;
use crate::hub::routes::FrontEnds;

/// A JSON object, as MCP carries arguments and `_meta`.
pub(crate) type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Most pages fetched from one server for one listing.
const MAX_PAGES: usize = 1000;

/// MCP's `tools/call`.
const TOOLS_CALL: &str = "tools/call";

/// The `_meta` key of an MCP progress token.
const PROGRESS_TOKEN: &str = "progressToken";

/// Where a request's progress goes: the registry, the caller's link and the token it gave.
type ProgressTarget<'a> = (&'a Arc<FrontEnds>, &'a Arc<Link>, serde_json::Value);

/// `tools/call` of tool `name` with `arguments` (a JSON object, as the front-end wrote
/// it) and `_meta`, for the front-end on `caller`'s link: the progress token in `meta`,
/// if any, is what that front-end's progress carries.
pub(crate) async fn call_tool(
    target: &CallTarget,
    name: String,
    arguments: Option<&RawValue>,
    meta: Option<JsonObject>,
    caller: (&Arc<FrontEnds>, &Arc<Link>),
) -> Result<Box<RawValue>, RouteError> {
    // rmcp puts a progress token of its own on every request; the
    // front-end's, if it gave one, is what its progress carries.
    let mut meta = meta;
    let progress_token = meta.as_mut().and_then(|meta| meta.remove(PROGRESS_TOKEN));
    if let Some(wire) = target.direct_wire() {
        let progress = progress_token.map(|token| (caller.0, caller.1, token));
        return call_tool_on_wire(wire, target, &name, arguments, meta, progress).await;
    }
    let mut request = CallToolRequestParams::new(name);
    request.arguments = arguments
        .map(|arguments| serde_json::from_str::<JsonObject>(arguments.get()))
        .transpose()
        .map_err(|error| RouteError::Failed {
            message: format!("the call's arguments are not a JSON object: {error}"),
        })?;
    request.meta = meta.map(|meta| RequestMetaObject(MetaObject(meta)));
    let (frontends, link) = caller;
    let progress = progress_token.map(|token| (frontends, link, token));
    // Boxed: rmcp's way is the larger future, and the direct lane's callers must not
    // carry (and copy, at every move) its size.
    let Answer { typed, raw } = Box::pin(send(target, CallToolRequest::new(request), progress)).await?;
    match typed {
        ServerResult::CallToolResult(result) => json(raw, &result),
        _ => Err(RouteError::UnhandledResult {
            kinds: "input_required or task",
        }),
    }
}

/// `tools/call`'s params as the wire writes them.
#[derive(Serialize)]
struct CallToolParams<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a RawValue>,
    #[serde(rename = "_meta", skip_serializing_if = "Option::is_none")]
    meta: Option<&'a JsonObject>,
}

/// `tools/call` straight onto a stdio session's wire (`wire_tee`): written by this
/// task, answered to it by the wire's reader with the server's `result` as it wrote
/// it; rmcp is not in between. The request is the one rmcp would write but for its
/// own progress token, which goes only on a call whose front-end gave one (the call's
/// id serves as corrald's token). Dropping the future before the answer tells the
/// server the call is cancelled, as [`CancelOnDrop`] does for rmcp's requests.
async fn call_tool_on_wire(
    wire: &Arc<WireTee>,
    target: &CallTarget,
    name: &str,
    arguments: Option<&RawValue>,
    meta: Option<JsonObject>,
    progress: Option<ProgressTarget<'_>>,
) -> Result<Box<RawValue>, RouteError> {
    let gone = |WireGone| RouteError::from_service(ServiceError::TransportClosed);
    let mut call = wire.begin_call().map_err(gone)?;
    let mut meta = meta;
    // Routed before the request is written: the server may report progress at once.
    let _route = progress.map(|(frontends, link, theirs)| {
        let ours = serde_json::Value::from(call.id());
        meta.get_or_insert_with(JsonObject::new)
            .insert(PROGRESS_TOKEN.to_owned(), ours.clone());
        frontends.progress_route(&target.config.name, link, &ours, theirs)
    });
    let params = CallToolParams {
        name,
        arguments,
        meta: meta.as_ref(),
    };
    call.send(TOOLS_CALL, &params).map_err(gone)?;
    match call.answer().await.map_err(gone)? {
        DirectAnswer::Result(result) => Ok(result),
        DirectAnswer::Error(error) => Err(match serde_json::from_str::<ErrorData>(error.get()) {
            Ok(error) => RouteError::Answered {
                code: error.code.0,
                message: error.message.into_owned(),
                data: error.data,
            },
            Err(why) => RouteError::Failed {
                message: format!("the server answered with an error that is not a JSON-RPC error object: {why}"),
            },
        }),
        DirectAnswer::Empty => Err(RouteError::Failed {
            message: "the server answered with neither a result nor an error".to_owned(),
        }),
    }
}

/// `resources/read` of `uri`.
pub(crate) async fn read_resource(target: &CallTarget, uri: String) -> Result<Box<RawValue>, RouteError> {
    let request = ReadResourceRequest::new(ReadResourceRequestParams::new(uri));
    let Answer { typed, raw } = send(target, request, None).await?;
    match typed {
        ServerResult::ReadResourceResult(result) => json(raw, &result),
        _ => Err(RouteError::UnhandledResult {
            kinds: "input_required",
        }),
    }
}

/// `prompts/get` of prompt `name` with `arguments`.
pub(crate) async fn get_prompt(
    target: &CallTarget,
    name: String,
    arguments: Option<JsonObject>,
) -> Result<Box<RawValue>, RouteError> {
    let mut request = GetPromptRequestParams::new(name);
    request.arguments = arguments;
    let Answer { typed, raw } = send(target, GetPromptRequest::new(request), None).await?;
    match typed {
        ServerResult::GetPromptResult(result) => json(raw, &result),
        _ => Err(RouteError::UnhandledResult {
            kinds: "input_required",
        }),
    }
}

/// `resources/subscribe` to `uri`. Sent on the target's session as it is:
/// no renewal after a 404 (a new session renews every subscription itself).
pub(crate) async fn subscribe(target: &CallTarget, uri: String) -> Result<(), RouteError> {
    target
        .peer()
        .subscribe(SubscribeRequestParams::new(uri))
        .await
        .map_err(RouteError::from_service)
}

/// `resources/unsubscribe` from `uri`, on the target's session as it is.
pub(crate) async fn unsubscribe(target: &CallTarget, uri: String) -> Result<(), RouteError> {
    target
        .peer()
        .unsubscribe(UnsubscribeRequestParams::new(uri))
        .await
        .map_err(RouteError::from_service)
}

/// What a listing method lists.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ListKind {
    /// `resources/list`.
    Resources,
    /// `resources/templates/list`.
    ResourceTemplates,
    /// `prompts/list`.
    Prompts,
}

impl ListKind {
    /// Every listing method.
    pub(crate) const ALL: [Self; 3] = [Self::Resources, Self::ResourceTemplates, Self::Prompts];

    /// The method's name: the same in MCP and in Corral's protocol.
    pub(crate) fn method(self) -> &'static str {
        match self {
            Self::Resources => ResourcesList::METHOD,
            Self::ResourceTemplates => ResourceTemplatesList::METHOD,
            Self::Prompts => PromptsList::METHOD,
        }
    }

    /// Whether the server declared the capability at `initialize`.
    pub(crate) fn offered_by(self, target: &CallTarget) -> bool {
        let Some(info) = target.peer().peer_info() else {
            return false;
        };
        match self {
            Self::Resources | Self::ResourceTemplates => info.capabilities.resources.is_some(),
            Self::Prompts => info.capabilities.prompts.is_some(),
        }
    }

    /// The member of a page's result that holds the items.
    fn items_key(self) -> &'static str {
        match self {
            Self::Resources => "resources",
            Self::ResourceTemplates => "resourceTemplates",
            Self::Prompts => "prompts",
        }
    }

    /// One page: the items as JSON (as the server wrote them where corrald
    /// saw that) and the next cursor.
    async fn page(
        self,
        target: &CallTarget,
        cursor: Option<String>,
    ) -> Result<(Vec<serde_json::Value>, Option<String>), RouteError> {
        let mut params = PaginatedRequestParams::default();
        params.cursor = cursor;
        let request: ClientRequest = match self {
            Self::Resources => ListResourcesRequest::with_param(params).into(),
            Self::ResourceTemplates => ListResourceTemplatesRequest::with_param(params).into(),
            Self::Prompts => ListPromptsRequest::with_param(params).into(),
        };
        let Answer { typed, raw } = send(target, request, None).await?;
        let (typed_items, next_cursor) = match typed {
            ServerResult::ListResourcesResult(page) => (to_values(&page.resources), page.next_cursor),
            ServerResult::ListResourceTemplatesResult(page) => (to_values(&page.resource_templates), page.next_cursor),
            ServerResult::ListPromptsResult(page) => (to_values(&page.prompts), page.next_cursor),
            _ => return Err(RouteError::from_service(ServiceError::UnexpectedResponse)),
        };
        let raw_items = raw.and_then(|raw| {
            let mut page: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw.get()).ok()?;
            match page.remove(self.items_key())? {
                serde_json::Value::Array(items) if items.len() == typed_items.len() => Some(items),
                _ => None,
            }
        });
        Ok((raw_items.unwrap_or(typed_items), next_cursor))
    }
}

fn to_values<T: Serialize>(items: &[T]) -> Vec<serde_json::Value> {
    items
        .iter()
        .filter_map(|item| serde_json::to_value(item).ok())
        .collect()
}

/// Every page of `kind` from one server. A server that repeats a cursor,
/// or has more than [`MAX_PAGES`] pages, is an error, never a loop.
pub(crate) async fn list_all(kind: ListKind, target: &CallTarget) -> Result<Vec<serde_json::Value>, RouteError> {
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor = None;
    for _ in 0..MAX_PAGES {
        let (page, next) = kind.page(target, cursor).await?;
        items.extend(page);
        match next {
            None => return Ok(items),
            Some(next) if !seen.insert(next.clone()) => return Err(RouteError::RepeatedCursor { cursor: next }),
            Some(next) => cursor = Some(next),
        }
    }
    Err(RouteError::TooManyPages { max: MAX_PAGES })
}

/// Why one server's listing gave nothing.
#[derive(Debug)]
pub(crate) enum ListFailure {
    /// A page failed.
    Route(RouteError),
    /// Not every page came within the server's `tool_timeout_sec`.
    TimedOut(std::time::Duration),
}

impl ListFailure {
    /// In words, for `server` and `kind`.
    pub(crate) fn describe(&self, server: &str, kind: ListKind) -> String {
        let what = format!("`{}`", kind.method());
        match self {
            Self::Route(error) => error.describe(server, &what),
            Self::TimedOut(timeout) => {
                format!("MCP server `{server}` did not finish {what} within {timeout:?} (tool_timeout_sec)")
            }
        }
    }
}

/// Every page of `kind` from each of `targets` that declared the
/// capability, fetched concurrently, each server within its
/// `tool_timeout_sec`: in the order of `targets`, the ones that do not
/// offer `kind` left out.
pub(crate) async fn list_each(
    kind: ListKind,
    targets: Vec<CallTarget>,
) -> Vec<(CallTarget, Result<Vec<serde_json::Value>, ListFailure>)> {
    let mut fetches = tokio::task::JoinSet::new();
    for (index, target) in targets.into_iter().enumerate() {
        if !kind.offered_by(&target) {
            continue;
        }
        fetches.spawn(async move {
            let timeout = target.config.tool_timeout;
            let items = match tokio::time::timeout(timeout, list_all(kind, &target)).await {
                Ok(Ok(items)) => Ok(items),
                Ok(Err(error)) => Err(ListFailure::Route(error)),
                Err(_) => Err(ListFailure::TimedOut(timeout)),
            };
            (index, target, items)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = fetches.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(error) => tracing::error!(%error, "a listing task failed"),
        }
    }
    results.sort_by_key(|(index, _, _)| *index);
    results.into_iter().map(|(_, target, items)| (target, items)).collect()
}

impl RouteError {
    /// What a request that rmcp reports failed means (see `classify`):
    /// the server's own error, a streamable-HTTP failure in words without
    /// the URL, a transport gone; and under it, a missing scope (HTTP 403
    /// `insufficient_scope`), which a caller may answer with a step-up.
    fn from_service(error: ServiceError) -> Self {
        let scope = required_scope(&error);
        let failure = if let Some(failure) = send_failure(&error) {
            if failure.reason == corral_protocol::FailureReason::Unreachable {
                Self::Unreachable {
                    message: failure.message,
                }
            } else {
                Self::Http {
                    reason: failure.reason,
                    message: failure.message,
                }
            }
        } else {
            match error {
                ServiceError::McpError(error) => Self::Answered {
                    code: error.code.0,
                    message: error.message.into_owned(),
                    data: error.data,
                },
                error @ (ServiceError::TransportClosed | ServiceError::TransportSend(_)) => Self::Gone {
                    message: error.to_string(),
                },
                other => Self::Failed {
                    message: other.to_string(),
                },
            }
        };
        match scope {
            Some(required) => Self::InsufficientScope {
                required,
                error: Box::new(failure),
            },
            None => failure,
        }
    }
}

/// The server's answer: rmcp's typed result, and the `result` exactly as
/// the server wrote it when corrald could see it.
struct Answer {
    typed: ServerResult,
    raw: Option<Box<RawValue>>,
}

/// Send `request` to `target`'s server and wait for the answer, renewing an
/// expired HTTP session once (see the module documentation).
async fn send(
    target: &CallTarget,
    request: impl Into<ClientRequest>,
    progress: Option<ProgressTarget<'_>>,
) -> Result<Answer, RouteError> {
    let request = request.into();
    let error = match send_on(target.peer(), target, request.clone(), progress.clone()).await {
        Ok(answer) => return Ok(answer),
        Err(error) => error,
    };
    let Some(recovery) = target.session_recovery().filter(|_| is_session_expired(&error)) else {
        return Err(RouteError::from_service(error));
    };
    tracing::info!(server = %target.config.name, "request found the session expired; asking for a new one");
    let peer = recovery
        .recover()
        .await
        .map_err(|why| RouteError::SessionLost { why })?;
    send_on(&peer, target, request, progress)
        .await
        .map_err(RouteError::from_service)
}

/// Send `request` on `peer` (a session of `target`'s server) and wait for the answer.
async fn send_on(
    peer: &Peer<RoleClient>,
    target: &CallTarget,
    request: ClientRequest,
    progress: Option<ProgressTarget<'_>>,
) -> Result<Answer, ServiceError> {
    let handle = peer
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await?;
    let _route = progress.map(|(frontends, link, theirs)| {
        let ours = serde_json::to_value(&handle.progress_token).unwrap_or_default();
        frontends.progress_route(&target.config.name, link, &ours, theirs)
    });
    let id = handle.id.clone();
    let mut cancel = CancelOnDrop {
        peer: peer.clone(),
        id: Some(id.clone()),
    };
    let typed = handle.await_response().await;
    cancel.id = None;
    let raw = target.wire().and_then(|wire| wire.take(&id));
    Ok(Answer { typed: typed?, raw })
}

/// The answer as the server wrote it (`raw`), else rmcp's `typed` value.
fn json<T: Serialize>(raw: Option<Box<RawValue>>, typed: &T) -> Result<Box<RawValue>, RouteError> {
    match raw {
        Some(raw) => Ok(raw),
        None => serde_json::value::to_raw_value(typed).map_err(|error| RouteError::Unserializable {
            what: "the result",
            why: error.to_string(),
        }),
    }
}

/// Tells the server a request is abandoned unless disarmed by taking `id`.
struct CancelOnDrop {
    peer: Peer<RoleClient>,
    id: Option<RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let peer = self.peer.clone();
        // Not a task of the daemon's tracker (a drop has no handle to it): one
        // notification, bounded by the session, which shutdown closes.
        tokio::spawn(async move {
            let reason = Some("request abandoned by the caller".to_owned());
            if let Err(error) = peer
                .notify_cancelled(CancelledNotificationParam::new(Some(id), reason))
                .await
            {
                tracing::debug!(%error, "cannot tell the server a request was cancelled");
            }
        });
    }
}
