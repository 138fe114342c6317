//! What a session with a server of MCP 2026-07-28 needs beyond its start (`transport::era`)
//! and beyond the `_meta` rmcp puts on every request: the server's change notifications,
//! which come only on a `subscriptions/listen` stream, and the log level, which moved into
//! each request's `_meta`. Whatever the transport.
//!
//! **Change notifications** ([`listen`]). A server of 2026-07-28 sends
//! `notifications/{tools,prompts,resources}/list_changed` and `notifications/resources/updated`
//! only to a client that asked for them with `subscriptions/listen`, on that request's
//! stream (stdio: the one channel, each notification tagged with the request's id). When a
//! modern session becomes ready the server's task starts one listener, which keeps one such
//! request open for what the server declared (`listChanged` of tools, prompts, resources;
//! with `resources.subscribe`, the URIs front-ends subscribed to) and hands what arrives to
//! the session's handler, where a legacy server's notifications go too: the tools are listed
//! again and front-ends are told (`mcpServer/tools/listChanged`, the bridge's
//! `notifications/tools/list_changed`, and the others). A front-end's `resources/subscribe`
//! or the last `resources/unsubscribe` of a URI opens the stream again with the new set of
//! URIs ([`resubscribe`], answered once the server acknowledged it); the old one is
//! cancelled. A stream that ends (the server closed it, a dropped HTTP stream, notifications
//! missed) is opened again after a backoff (1 s doubling to 30 s; at once after a miss),
//! and, as nothing is replayed, front-ends are then told that everything may have changed.
//! A server that refuses `subscriptions/listen` is asked again only when the URIs change.
//! The listener ends with the session (the task drops it) or when the transport closes.
//!
//! **Log level** ([`stamp_log_level`], [`with_log_level`]). In 2026-07-28 a server sends
//! `notifications/message` for a request only when the request's `_meta` names
//! `io.modelcontextprotocol/logLevel`, and only at or above it. A legacy server sends what it
//! likes (corrald never sends `logging/setLevel`), and corrald passes all of it to front-ends
//! (`mcpServer/log`; the bridge filters at each MCP client's `logging/setLevel`). So that a
//! modern server's logs reach front-ends as a legacy server's do, every request corrald sends
//! such a server (rmcp's `_meta` names a version without `initialize`) asks for `debug`
//! unless it already names a level: a front-end's own `_meta` (Corral's `tools/call` passes
//! it on), or the level an MCP client of the bridge set with `logging/setLevel`, which the
//! bridge puts on its calls ([`with_log_level`]). The transports apply the stamp as a request
//! goes out (stdio: the pipe's transport; streamable HTTP: `Observed`).

// MCP logging is deprecated by SEP-2577 (spec 2026-07-28), which is also where the per-request
// level this module sets comes from: servers of that version still log while it is there.
#![allow(deprecated)]

use std::time::Duration;

use rmcp::model::{
    ClientJsonRpcMessage, ClientRequest, GetMeta as _, LoggingLevel, ServerNotification, SubscriptionFilter,
};
use rmcp::service::SubscriptionEnd;
use rmcp::{Peer, RoleClient, ServiceError};
use tokio::sync::{oneshot, watch};
use tokio_util::task::AbortOnDropHandle;
use tokio_util::task::TaskTracker;

use super::forward::JsonObject;
use super::handler::McpClientHandler;
use super::route::{CallTarget, RouteError};

/// The `_meta` key of a request's log level (MCP 2026-07-28).
pub(crate) const LOG_LEVEL_KEY: &str = "io.modelcontextprotocol/logLevel";

/// The level corrald asks a server of 2026-07-28 for when nobody named one: every message,
/// as a legacy server sends them.
pub(crate) const DEFAULT_LOG_LEVEL: LoggingLevel = LoggingLevel::Debug;

/// The first wait before a stream that ended is opened again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait before a stream that ended is opened again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether the session with this peer is one of MCP 2026-07-28 or later (no `initialize`):
/// opened with `server/discover`, or a handshake that named such a version.
pub(crate) fn is_modern(peer: &Peer<RoleClient>) -> bool {
    peer.peer_info()
        .is_some_and(|info| !info.protocol_version.has_initialize())
}

/// Put [`DEFAULT_LOG_LEVEL`] in the `_meta` of an outgoing request of a modern session
/// (its `_meta` names a version without `initialize`), unless it names a level already.
/// `server/discover` and `subscriptions/listen` carry none: no log message belongs to them.
pub(crate) fn stamp_log_level(message: &mut ClientJsonRpcMessage) {
    let ClientJsonRpcMessage::Request(request) = message else {
        return;
    };
    if matches!(
        request.request,
        ClientRequest::DiscoverRequest(_)
            | ClientRequest::SubscriptionsListenRequest(_)
            | ClientRequest::InitializeRequest(_)
    ) {
        return;
    }
    let modern = request
        .request
        .get_meta()
        .protocol_version()
        .is_some_and(|version| !version.has_initialize());
    if !modern {
        return;
    }
    // A level may sit in the request's own `_meta` (a front-end's) or in rmcp's extension.
    let named = request.request.get_meta().0.contains_key(LOG_LEVEL_KEY)
        || serde_json::to_value(&request.request)
            .ok()
            .is_some_and(|request| request["params"]["_meta"].get(LOG_LEVEL_KEY).is_some());
    if !named {
        request.request.get_meta_mut().set_log_level(DEFAULT_LOG_LEVEL);
    }
}

/// Put `level` (an MCP log level) in `meta` as the request's log level, when `target` is a
/// server of 2026-07-28 and `meta` names none: the level of the front-end the request is for.
/// A legacy server's requests are left as they are (it takes `logging/setLevel`, not this).
pub(crate) fn with_log_level(target: &CallTarget, meta: &mut Option<JsonObject>, level: &str) {
    if !is_modern(target.peer()) {
        return;
    }
    let meta = meta.get_or_insert_with(JsonObject::new);
    meta.entry(LOG_LEVEL_KEY)
        .or_insert_with(|| serde_json::Value::String(level.to_owned()));
}

/// The state of a session's listener that requests share: which set of URIs is wanted, and
/// which one the open stream was acknowledged for.
#[derive(Debug)]
pub(crate) struct ListenControl {
    /// Bumped when the URIs front-ends subscribed to changed.
    wanted: watch::Sender<u64>,
    /// The latest `wanted` a stream was opened for, and how that went.
    opened: watch::Sender<(u64, Result<(), ListenRefused>)>,
}

impl Default for ListenControl {
    fn default() -> Self {
        Self {
            wanted: watch::Sender::new(0),
            opened: watch::Sender::new((0, Ok(()))),
        }
    }
}

/// Why `subscriptions/listen` was not acknowledged.
#[derive(Debug, Clone)]
enum ListenRefused {
    /// The server answered with an error.
    Answered {
        code: i32,
        message: String,
        data: Option<serde_json::Value>,
    },
    /// Anything else, in rmcp's words.
    Failed(String),
}

impl ListenRefused {
    fn of(error: ServiceError) -> Self {
        match error {
            ServiceError::McpError(error) => Self::Answered {
                code: error.code.0,
                message: error.message.into_owned(),
                data: error.data,
            },
            other => Self::Failed(other.to_string()),
        }
    }

    fn into_route_error(self) -> RouteError {
        match self {
            Self::Answered { code, message, data } => RouteError::Answered { code, message, data },
            Self::Failed(message) => RouteError::Failed {
                message: format!("subscriptions/listen: {message}"),
            },
        }
    }
}

impl ListenControl {
    /// Record how opening the stream for `generation` went.
    fn opened(&self, generation: u64, outcome: Result<(), ListenRefused>) {
        let _previous = self.opened.send_replace((generation, outcome));
    }
}

/// The URIs front-ends subscribed to changed (`resources/subscribe` or the last
/// `resources/unsubscribe` of one): the session's stream is opened again with them. Returns
/// once the server acknowledged it, or with its refusal. The caller bounds the wait.
pub(crate) async fn resubscribe(target: &CallTarget) -> Result<(), RouteError> {
    let control = target.handler().listen_control();
    let mut opened = control.opened.subscribe();
    let mut generation = 0;
    control.wanted.send_modify(|wanted| {
        *wanted += 1;
        generation = *wanted;
    });
    loop {
        {
            let (done, outcome) = &*opened.borrow_and_update();
            if *done >= generation {
                return outcome.clone().map_err(ListenRefused::into_route_error);
            }
        }
        if opened.changed().await.is_err() {
            return Err(RouteError::Gone {
                message: "the session ended".to_owned(),
            });
        }
    }
}

/// A session's listener: ends when dropped.
#[derive(Debug)]
pub(crate) struct Listening {
    _task: AbortOnDropHandle<()>,
    /// Fired once the first stream was acknowledged (or could not be opened).
    first: Option<oneshot::Receiver<()>>,
}

impl Listening {
    /// Wait (at most `limit`) until the first stream was acknowledged or refused: a server
    /// reported ready then has its changes seen from then on.
    pub(crate) async fn first_stream(&mut self, limit: Duration) {
        if let Some(first) = self.first.take()
            && tokio::time::timeout(limit, first).await.is_err()
        {
            tracing::warn!("the server did not acknowledge subscriptions/listen within {limit:?}");
        }
    }
}

/// Start the listener of a ready session, if it is one of MCP 2026-07-28 and the server
/// declared something to listen for (`None` otherwise: a legacy server sends its
/// notifications unasked).
pub(crate) fn listen(peer: &Peer<RoleClient>, handler: &McpClientHandler, tracker: &TaskTracker) -> Option<Listening> {
    if !is_modern(peer) {
        return None;
    }
    let declared = Declared::of(peer);
    if declared == Declared::default() {
        tracing::debug!(
            server = handler.server(),
            "the server declared no changes to listen for"
        );
        return None;
    }
    let (first_tx, first) = oneshot::channel();
    let task = tracker.spawn(run(peer.clone(), handler.clone(), declared, first_tx));
    Some(Listening {
        _task: AbortOnDropHandle::new(task),
        first: Some(first),
    })
}

/// What the server said may change (at `server/discover` or `initialize`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Declared {
    tools: bool,
    prompts: bool,
    resources: bool,
    subscriptions: bool,
}

impl Declared {
    fn of(peer: &Peer<RoleClient>) -> Self {
        let Some(info) = peer.peer_info() else {
            return Self::default();
        };
        let capabilities = &info.capabilities;
        let resources = capabilities.resources.as_ref();
        Self {
            tools: capabilities
                .tools
                .as_ref()
                .and_then(|tools| tools.list_changed)
                .unwrap_or(false),
            prompts: capabilities
                .prompts
                .as_ref()
                .and_then(|prompts| prompts.list_changed)
                .unwrap_or(false),
            resources: resources.and_then(|resources| resources.list_changed).unwrap_or(false),
            subscriptions: resources.and_then(|resources| resources.subscribe).unwrap_or(false),
        }
    }

    /// The filter to ask for, with the URIs front-ends subscribed to; `None`: nothing to ask.
    fn filter(self, uris: Vec<String>) -> Option<SubscriptionFilter> {
        let mut filter = SubscriptionFilter::new();
        filter.tools_list_changed = self.tools.then_some(true);
        filter.prompts_list_changed = self.prompts.then_some(true);
        filter.resources_list_changed = self.resources.then_some(true);
        filter.resource_subscriptions = (self.subscriptions && !uris.is_empty()).then_some(uris);
        (filter != SubscriptionFilter::new()).then_some(filter)
    }
}

/// How one stream ended.
enum StreamEnd {
    /// The URIs changed: open the next one at once.
    Resubscribe,
    /// The stream ended; `missed`: notifications may have been lost.
    Ended { missed: bool },
    /// The session is gone.
    SessionGone,
}

/// The listener: one stream at a time, for as long as the session lives.
async fn run(peer: Peer<RoleClient>, handler: McpClientHandler, declared: Declared, first: oneshot::Sender<()>) {
    let mut first = Some(first);
    let server = handler.server().to_owned();
    let control = handler.listen_control().clone();
    let mut wanted = control.wanted.subscribe();
    let mut backoff = FIRST_BACKOFF;
    // Whether a stream was lost since the last one acknowledged: then everything may have changed.
    let mut lost = false;
    loop {
        let generation = *wanted.borrow_and_update();
        let Some(filter) = declared.filter(handler.subscribed_uris()) else {
            control.opened(generation, Ok(()));
            fire(&mut first);
            if wanted.changed().await.is_err() {
                return;
            }
            continue;
        };
        let end = match peer.listen(filter).await {
            Ok(mut subscription) => {
                tracing::debug!(server, acknowledged = ?subscription.acknowledged(), "listening for changes");
                control.opened(generation, Ok(()));
                fire(&mut first);
                if std::mem::take(&mut lost) {
                    everything_changed(&handler);
                }
                backoff = FIRST_BACKOFF;
                follow(&mut subscription, &handler, &mut wanted).await
            }
            Err(error) => {
                let refused = matches!(error, ServiceError::McpError(_));
                tracing::warn!(server, %error, "subscriptions/listen failed; list changes of this server are not seen");
                control.opened(generation, Err(ListenRefused::of(error)));
                fire(&mut first);
                if refused {
                    // Asking again would be refused again: only new URIs make it worth asking.
                    if wanted.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                StreamEnd::Ended { missed: false }
            }
        };
        let wait = match end {
            StreamEnd::Resubscribe => continue,
            StreamEnd::SessionGone => return,
            StreamEnd::Ended { missed } => {
                lost = true;
                if missed { Duration::ZERO } else { backoff }
            }
        };
        if peer.is_transport_closed() {
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            changed = wanted.changed() => if changed.is_err() { return },
        }
    }
}

/// Say the first stream was acknowledged or refused (once).
fn fire(first: &mut Option<oneshot::Sender<()>>) {
    if let Some(first) = first.take() {
        let _ = first.send(());
    }
}

/// Hand what one stream delivers to the handler until it ends or the URIs change.
async fn follow(
    subscription: &mut rmcp::service::Subscription,
    handler: &McpClientHandler,
    wanted: &mut watch::Receiver<u64>,
) -> StreamEnd {
    let server = handler.server();
    loop {
        let next = tokio::select! {
            next = subscription.next() => next,
            changed = wanted.changed() => {
                if changed.is_err() {
                    return StreamEnd::SessionGone;
                }
                let _ = subscription.cancel_with_reason(Some("the resource subscriptions changed".to_owned())).await;
                return StreamEnd::Resubscribe;
            }
        };
        match next {
            Ok(Some(notification)) => deliver(handler, notification),
            Ok(None) => {
                let end = subscription.end();
                tracing::info!(server, ?end, "the subscriptions/listen stream ended; opening it again");
                return match end {
                    Some(SubscriptionEnd::Lagged { .. }) => StreamEnd::Ended { missed: true },
                    _ => StreamEnd::Ended { missed: false },
                };
            }
            Err(error) => {
                tracing::warn!(server, %error, "the subscriptions/listen stream broke; opening it again");
                return StreamEnd::Ended { missed: true };
            }
        }
    }
}

/// One notification of the stream, to where a legacy server's goes.
fn deliver(handler: &McpClientHandler, notification: ServerNotification) {
    match notification {
        ServerNotification::ToolListChangedNotification(_) => handler.tools_changed(),
        ServerNotification::PromptListChangedNotification(_) => handler.prompts_changed(),
        ServerNotification::ResourceListChangedNotification(_) => handler.resources_changed(),
        ServerNotification::ResourceUpdatedNotification(updated) => handler.resource_updated(updated.params.uri),
        other => tracing::debug!(
            server = handler.server(),
            ?other,
            "ignored on the subscriptions/listen stream"
        ),
    }
}

/// A stream was lost and nothing is replayed: whatever it would have said may have happened.
fn everything_changed(handler: &McpClientHandler) {
    handler.tools_changed();
    handler.prompts_changed();
    handler.resources_changed();
}

#[cfg(test)]
mod tests {
    use rmcp::model::{CallToolRequest, CallToolRequestParams, ProtocolVersion, RequestMetaObject};

    use super::*;

    /// A `tools/call` as rmcp sends it: `version` in the `_meta` rmcp adds, `level` in the
    /// request's own (a front-end's).
    fn call_with_version(version: Option<ProtocolVersion>, level: Option<&str>) -> ClientJsonRpcMessage {
        let mut params = CallToolRequestParams::new("echo");
        if let Some(level) = level {
            let mut meta = RequestMetaObject::default();
            meta.0.0.insert(LOG_LEVEL_KEY.to_owned(), serde_json::json!(level));
            params.meta = Some(meta);
        }
        let mut request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        if let Some(version) = version {
            request.get_meta_mut().set_protocol_version(version);
        }
        ClientJsonRpcMessage::request(request, rmcp::model::NumberOrString::Number(7))
    }

    fn level_of(message: &ClientJsonRpcMessage) -> Option<serde_json::Value> {
        let value = serde_json::to_value(message).expect("serializable");
        value["params"]["_meta"].get(LOG_LEVEL_KEY).cloned()
    }

    #[test]
    fn a_modern_request_asks_for_every_log_level_unless_it_names_one() {
        let mut modern = call_with_version(Some(ProtocolVersion::V_2026_07_28), None);
        stamp_log_level(&mut modern);
        assert_eq!(level_of(&modern), Some(serde_json::json!("debug")));

        let mut named = call_with_version(Some(ProtocolVersion::V_2026_07_28), Some("warning"));
        stamp_log_level(&mut named);
        assert_eq!(
            level_of(&named),
            Some(serde_json::json!("warning")),
            "the caller's level wins"
        );
    }

    #[test]
    fn a_legacy_request_and_the_start_are_left_alone() {
        let mut legacy = call_with_version(None, None);
        stamp_log_level(&mut legacy);
        assert_eq!(level_of(&legacy), None);
        let mut handshake_era = call_with_version(Some(ProtocolVersion::V_2025_11_25), None);
        stamp_log_level(&mut handshake_era);
        assert_eq!(level_of(&handshake_era), None);
    }

    #[test]
    fn the_filter_asks_only_for_what_the_server_declared() {
        assert_eq!(Declared::default().filter(vec!["a://b".to_owned()]), None);
        let declared = Declared {
            tools: true,
            prompts: false,
            resources: true,
            subscriptions: true,
        };
        let filter = declared.filter(vec![]).expect("something to listen for");
        assert_eq!(filter.tools_list_changed, Some(true));
        assert_eq!(filter.prompts_list_changed, None);
        assert_eq!(filter.resources_list_changed, Some(true));
        assert_eq!(filter.resource_subscriptions, None, "no URI: none asked");
        let filter = declared.filter(vec!["a://b".to_owned()]).expect("something");
        assert_eq!(filter.resource_subscriptions, Some(vec!["a://b".to_owned()]));
        let only_subscriptions = Declared {
            subscriptions: true,
            ..Declared::default()
        };
        assert_eq!(only_subscriptions.filter(vec![]), None, "nothing to listen for yet");
    }
}
