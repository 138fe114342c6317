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
//! `tools/call`, `prompts/get` and `resources/read` may take several
//! requests: a server of MCP 2026-07-28 may answer `input_required`, and
//! the request is sent again, a new request each time, with what it asked
//! for (`rounds`, which holds the rules); a server may answer `tools/call`
//! with a task, which `tasks` follows to its result. Each of these requests
//! is one the server asked for; the rule below is about sending one again
//! unasked.
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
//! of rmcp's is in flight; so does a call of a tool that must run as a
//! task, and every round after the first. A direct answer that names a
//! `resultType` (which only a server of 2026-07-28 should write) is read
//! into rmcp's model and driven like rmcp's answers are, so `rounds` and
//! `tasks` see it.
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
use std::pin::Pin;
use std::sync::Arc;

use corral_protocol::{PromptsList, Request as _, ResourceTemplatesList, ResourcesList};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CancelledNotificationParam, ClientNotification, ClientRequest,
    GetExtensions as _, GetPromptRequest, GetPromptRequestParams, ListPromptsRequest, ListResourceTemplatesRequest,
    ListResourcesRequest, MetaObject, PaginatedRequestParams, ReadResourceRequest, ReadResourceRequestParams,
    RequestId, RequestMetaObject, ServerResult, SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::PeerRequestOptions;
use rmcp::{ErrorData, Peer, RoleClient, ServiceError};
use serde::Serialize;
use serde_json::value::RawValue;

use super::classify::{is_session_expired, required_scope, send_failure};
use super::rounds::{self, Reply, Retry};
use super::route::{CallTarget, RouteError};
use super::tasks;
use super::wire_tee::{DirectAnswer, WireGone, WireTee};
use crate::hub::link::Link;
use crate::hub::routes::FrontEnds;
use crate::params::RawJson;

/// A JSON object, as MCP carries arguments and `_meta` (`params` names it for both tables).
pub(crate) use crate::params::JsonObject;

/// Most pages fetched from one server for one listing.
const MAX_PAGES: usize = 1000;

/// MCP's `tools/call`.
const TOOLS_CALL: &str = "tools/call";

/// The `_meta` key of an MCP progress token.
const PROGRESS_TOKEN: &str = "progressToken";

/// Where a request's progress goes: the registry, the caller's link and the token it gave.
pub(crate) type ProgressTarget<'a> = (&'a Arc<FrontEnds>, &'a Arc<Link>, serde_json::Value);

/// `tools/call` of tool `name` with `arguments` (a JSON object, as the front-end wrote it)
/// and `_meta`, for the front-end on `caller`'s link: the progress token in `meta`, if any,
/// is what that front-end's progress carries. An `input_required` answer is driven to the
/// end (`rounds`), and a task followed until it ends (`tasks`), both with that front-end
/// answering what the server asks.
pub(crate) async fn call_tool(
    target: &CallTarget,
    name: &str,
    arguments: Option<RawJson<'_>>,
    meta: Option<JsonObject>,
    caller: (&Arc<FrontEnds>, &Arc<Link>),
) -> Result<Box<RawValue>, RouteError> {
    // rmcp puts a progress token of its own on every request; the
    // front-end's, if it gave one, is what its progress carries.
    let mut meta = meta;
    let progress_token = meta.as_mut().and_then(|meta| meta.remove(PROGRESS_TOKEN));
    let (frontends, link) = caller;
    let progress = progress_token.map(|token| (frontends, link, token));
    // SEP-1686: a tool that must run as a task is called as one.
    let as_task = target.tool_task_support(name) == Some(tasks::TASK_SUPPORT_REQUIRED);
    let meta = &meta;
    // A stdio server's first round goes straight onto its wire; a plain result (the
    // common case) is the answer, without the rounds' machinery, whose future (kilobytes)
    // is boxed for the calls that need it: this call's future stays small.
    // Made after the first round's await: the typed answer (hundreds of bytes) is no part
    // of the future while it waits.
    let mut on_wire = match target.direct_wire().filter(|_| !as_task) {
        Some(wire) => {
            let result = call_tool_on_wire(wire, target, name, arguments, meta.as_ref(), progress.clone()).await?;
            if !wire.names_result_type(&result) {
                return Ok(result);
            }
            Some(Answer {
                typed: typed_result(&result)?,
                raw: Some(result),
            })
        }
        None => None,
    };
    let round = move |retry: Retry| {
        let progress = progress.clone();
        // The first round's answer, when the wire had it.
        let answered = on_wire.take();
        async move {
            let Answer { typed, raw } = match answered {
                Some(answer) => answer,
                None => {
                    let mut request = CallToolRequestParams::new(name.to_owned());
                    request.arguments = object_arguments(arguments)?;
                    request.meta = meta.clone().map(|meta| RequestMetaObject(MetaObject(meta)));
                    request.input_responses = retry.input_responses;
                    request.request_state = retry.request_state;
                    let request = if as_task {
                        tasks::augmented(&request)?
                    } else {
                        CallToolRequest::new(request).into()
                    };
                    send(target, request, progress.clone()).await?
                }
            };
            match typed {
                ServerResult::CallToolResult(result) => Ok(Reply::Complete(json(raw, &result)?)),
                ServerResult::InputRequiredResult(asked) => Ok(Reply::InputRequired(asked)),
                ServerResult::CreateTaskResult(created) => {
                    // Boxed, as every rarely taken way here: a call's future stays small.
                    Box::pin(tasks::run(
                        target,
                        tasks::Generation::Extension,
                        &created,
                        link,
                        progress,
                    ))
                    .await
                    .map(Reply::Complete)
                }
                ServerResult::CustomResult(created) if as_task => Box::pin(tasks::run(
                    target,
                    tasks::Generation::Augmented,
                    &created.0,
                    link,
                    progress,
                ))
                .await
                .map(Reply::Complete),
                _ => Err(RouteError::UnhandledResult {
                    kinds: "neither a tools/call result, an input_required result nor a task",
                }),
            }
        }
    };
    Box::pin(rounds::drive(rounds::MAX_ROUNDS, round, |requests| {
        Box::pin(rounds::answer_each(target.handler(), link, requests))
    }))
    .await
}

/// A call's arguments, as the front-end wrote them, as rmcp's model holds them.
fn object_arguments(arguments: Option<RawJson<'_>>) -> Result<Option<JsonObject>, RouteError> {
    arguments
        .map(|arguments| serde_json::from_str::<JsonObject>(arguments.get()))
        .transpose()
        .map_err(|error| RouteError::Failed {
            message: format!("the call's arguments are not a JSON object: {error}"),
        })
}

/// A result the direct lane got, read into rmcp's model of a server's result.
fn typed_result(result: &RawValue) -> Result<ServerResult, RouteError> {
    serde_json::from_str(result.get()).map_err(|error| RouteError::Unserializable {
        what: "the result",
        why: error.to_string(),
    })
}

/// `tools/call`'s params as the wire writes them.
struct CallToolParams<'a> {
    name: &'a str,
    arguments: Option<RawJson<'a>>,
    meta: Option<&'a JsonObject>,
}

impl CallToolParams<'_> {
    /// Write them to `out` as serde writes such a struct (`arguments` and `_meta` only when
    /// given), the arguments as the front-end wrote them: JSON read once already, which
    /// serde could write only as its own raw value, read again to be made. (Line ends in
    /// them are the wire's to put on one line: `DirectCall::send_written`.)
    fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        out.extend_from_slice(br#"{"name":"#);
        serde_json::to_writer(&mut *out, self.name)?;
        if let Some(arguments) = self.arguments {
            out.extend_from_slice(br#","arguments":"#);
            out.extend_from_slice(arguments.get().as_bytes());
        }
        if let Some(meta) = self.meta {
            out.extend_from_slice(br#","_meta":"#);
            serde_json::to_writer(&mut *out, meta)?;
        }
        out.push(b'}');
        Ok(())
    }
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
    arguments: Option<RawJson<'_>>,
    meta: Option<&JsonObject>,
    progress: Option<ProgressTarget<'_>>,
) -> Result<Box<RawValue>, RouteError> {
    let gone = |WireGone| RouteError::from_service(ServiceError::TransportClosed);
    let mut call = wire.begin_call().map_err(gone)?;
    // Routed before the request is written: the server may report progress at once.
    let mut with_token = None;
    let _route = progress.map(|(frontends, link, theirs)| {
        let ours = serde_json::Value::from(call.id());
        with_token
            .get_or_insert_with(|| meta.cloned().unwrap_or_default())
            .insert(PROGRESS_TOKEN.to_owned(), ours.clone());
        frontends.progress_route(&target.config.name, link, &ours, theirs)
    });
    let params = CallToolParams {
        name,
        arguments,
        meta: with_token.as_ref().or(meta),
    };
    call.send_written(TOOLS_CALL, |line| params.write(line)).map_err(gone)?;
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

/// `resources/read` of `uri`, for the front-end on `caller`, which answers what the server
/// asks in `input_required` results (`rounds`).
pub(crate) async fn read_resource(
    target: &CallTarget,
    uri: String,
    caller: &Arc<Link>,
) -> Result<Box<RawValue>, RouteError> {
    let round = |retry: Retry| {
        let mut request = ReadResourceRequestParams::new(uri.clone());
        request.input_responses = retry.input_responses;
        request.request_state = retry.request_state;
        async move {
            let Answer { typed, raw } = send(target, ReadResourceRequest::new(request), None).await?;
            match typed {
                ServerResult::ReadResourceResult(result) => Ok(Reply::Complete(json(raw, &result)?)),
                ServerResult::InputRequiredResult(asked) => Ok(Reply::InputRequired(asked)),
                _ => Err(RouteError::UnhandledResult {
                    kinds: "neither a resources/read result nor an input_required result",
                }),
            }
        }
    };
    rounds::drive(rounds::MAX_ROUNDS, round, |requests| {
        Box::pin(rounds::answer_each(target.handler(), caller, requests))
    })
    .await
}

/// `prompts/get` of prompt `name` with `arguments`, for the front-end on `caller`, which
/// answers what the server asks in `input_required` results (`rounds`).
pub(crate) async fn get_prompt(
    target: &CallTarget,
    name: String,
    arguments: Option<JsonObject>,
    caller: &Arc<Link>,
) -> Result<Box<RawValue>, RouteError> {
    let round = |retry: Retry| {
        let mut request = GetPromptRequestParams::new(name.clone());
        request.arguments = arguments.clone();
        request.input_responses = retry.input_responses;
        request.request_state = retry.request_state;
        async move {
            let Answer { typed, raw } = send(target, GetPromptRequest::new(request), None).await?;
            match typed {
                ServerResult::GetPromptResult(result) => Ok(Reply::Complete(json(raw, &result)?)),
                ServerResult::InputRequiredResult(asked) => Ok(Reply::InputRequired(asked)),
                _ => Err(RouteError::UnhandledResult {
                    kinds: "neither a prompts/get result nor an input_required result",
                }),
            }
        }
    };
    rounds::drive(rounds::MAX_ROUNDS, round, |requests| {
        Box::pin(rounds::answer_each(target.handler(), caller, requests))
    })
    .await
}

/// `resources/subscribe` to `uri`. Sent on the target's session as it is:
/// no renewal after a 404 (a new session renews every subscription itself).
/// A server of MCP 2026-07-28 has no `resources/subscribe`: its
/// `subscriptions/listen` stream is opened again with the URIs front-ends now
/// hold, `uri` among them (`modern`).
pub(crate) async fn subscribe(target: &CallTarget, uri: String) -> Result<(), RouteError> {
    if super::modern::is_modern(target.peer()) {
        return super::modern::resubscribe(target).await;
    }
    target
        .peer()
        .subscribe(SubscribeRequestParams::new(uri))
        .await
        .map_err(RouteError::from_service)
}

/// `resources/unsubscribe` from `uri`, on the target's session as it is (a
/// server of MCP 2026-07-28: its stream opened again without `uri`, `modern`).
pub(crate) async fn unsubscribe(target: &CallTarget, uri: String) -> Result<(), RouteError> {
    if super::modern::is_modern(target.peer()) {
        return super::modern::resubscribe(target).await;
    }
    target
        .peer()
        .unsubscribe(UnsubscribeRequestParams::new(uri))
        .await
        .map_err(RouteError::from_service)
}

/// Any request (`request`, built by the caller: a skill's, one passed through), with its
/// progress going to `progress` if given: the answer as the server wrote it where corrald saw
/// that (the wire tee keeps every request's but corrald's own), else rmcp's typed answer
/// serialized (a result rmcp does not know is kept whole, as `CustomResult`).
pub(crate) async fn request_raw(
    target: &CallTarget,
    request: ClientRequest,
    progress: Option<ProgressTarget<'_>>,
) -> Result<Box<RawValue>, RouteError> {
    let Answer { typed, raw } = send(target, request, progress).await?;
    json(raw, &typed)
}

/// [`request_raw`] without progress, parsed.
pub(crate) async fn request_value(
    target: &CallTarget,
    request: ClientRequest,
) -> Result<serde_json::Value, RouteError> {
    let raw = request_raw(target, request, None).await?;
    serde_json::from_str(raw.get()).map_err(|error| RouteError::Unserializable {
        what: "the result",
        why: error.to_string(),
    })
}

/// Send `notification` to `target`'s server, on its session as it is.
pub(crate) async fn notify(target: &CallTarget, notification: ClientNotification) -> Result<(), RouteError> {
    target
        .peer()
        .send_notification(notification)
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
    all_pages(|cursor| kind.page(target, cursor)).await
}

/// Every page of one listing, where `page(cursor)` asks for one page and gives its items and
/// the next cursor: the one paging loop of every listing corrald asks a server for. A server
/// that repeats a cursor, or has more than [`MAX_PAGES`] pages, is an error, never a loop.
pub(crate) async fn all_pages<T, Page, Asked>(mut page: Page) -> Result<Vec<T>, RouteError>
where
    Page: FnMut(Option<String>) -> Asked,
    Asked: std::future::Future<Output = Result<(Vec<T>, Option<String>), RouteError>>,
{
    let mut items = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor = None;
    for _ in 0..MAX_PAGES {
        let (listed, next) = page(cursor).await?;
        items.extend(listed);
        match next {
            None => return Ok(items),
            Some(next) if !seen.insert(next.clone()) => return Err(RouteError::RepeatedCursor { cursor: next }),
            Some(next) => cursor = Some(next),
        }
    }
    Err(RouteError::TooManyPages { max: MAX_PAGES })
}

/// The `nextCursor` of a page as JSON: `None` when there is none, or it is empty.
pub(crate) fn next_cursor(page: &serde_json::Value) -> Option<String> {
    page.get("nextCursor")
        .and_then(serde_json::Value::as_str)
        .filter(|cursor| !cursor.is_empty())
        .map(str::to_owned)
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
pub(super) struct Answer {
    pub(super) typed: ServerResult,
    pub(super) raw: Option<Box<RawValue>>,
}

/// Send `request` to `target`'s server and wait for the answer, renewing an
/// expired HTTP session once (see the module documentation). Boxed: the
/// future is large (rmcp's request, kept for the retry, and two sends), and
/// every caller's future would otherwise carry it, and copy it at every move.
pub(super) fn send<'a>(
    target: &'a CallTarget,
    request: impl Into<ClientRequest>,
    progress: Option<ProgressTarget<'a>>,
) -> Pin<Box<dyn Future<Output = Result<Answer, RouteError>> + Send + 'a>> {
    Box::pin(send_unboxed(target, request.into(), progress))
}

/// [`send`], unboxed.
async fn send_unboxed(
    target: &CallTarget,
    mut request: ClientRequest,
    progress: Option<ProgressTarget<'_>>,
) -> Result<Answer, RouteError> {
    if let Some(headers) = target.request_headers() {
        // The HTTP client reads them from the request (`transport::http`): on the retry too;
        // never serialized.
        request.extensions_mut().insert(headers.clone());
    }
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
        wire: target.wire().cloned(),
        id: Some(id.clone()),
    };
    let typed = handle.await_response().await;
    cancel.id = None;
    let raw = target.wire().and_then(|wire| wire.take(&id));
    Ok(Answer { typed: typed?, raw })
}

/// The answer as the server wrote it (`raw`), else rmcp's `typed` value.
pub(super) fn json<T: Serialize>(raw: Option<Box<RawValue>>, typed: &T) -> Result<Box<RawValue>, RouteError> {
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
    /// The session's wire, which then keeps no answer for the request.
    wire: Option<Arc<WireTee>>,
    id: Option<RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        if let Some(wire) = &self.wire {
            wire.forget(&id);
        }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_calls_params_are_written_as_serde_writes_them() {
        let arguments = RawValue::from_string(r#"{"b": [1, "x"], "a": {}}"#.to_owned()).expect("JSON");
        let meta = json!({"progressToken": 7}).as_object().cloned().expect("an object");
        for (arguments, meta) in [
            (None, None),
            (Some(arguments.as_ref()), None),
            (None, Some(&meta)),
            (Some(arguments.as_ref()), Some(&meta)),
        ] {
            #[derive(Serialize)]
            struct AsSerde<'a> {
                name: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                arguments: Option<&'a RawValue>,
                #[serde(rename = "_meta", skip_serializing_if = "Option::is_none")]
                meta: Option<&'a JsonObject>,
            }
            let name = "e\"cho\u{1}";
            let mut written = Vec::new();
            CallToolParams {
                name,
                arguments: arguments.map(RawJson::from),
                meta,
            }
            .write(&mut written)
            .expect("written");
            let serde = serde_json::to_vec(&AsSerde { name, arguments, meta }).expect("serialized");
            assert_eq!(String::from_utf8(written), String::from_utf8(serde));
        }
    }
}
