//! corrald's side of each MCP session: how it introduces itself to servers
//! and what it does with their notifications.
//!
//! - `notifications/tools/list_changed` asks the server's task to re-list
//!   its tools (the task owns the cached list) and tell front-ends;
//! - resource and prompt list changes, resource updates and log messages
//!   (`notifications/message`), become daemon notifications naming the
//!   server, seq-numbered like every other; so does a notification corrald
//!   does not model (a server's own, rmcp's custom notification), as
//!   `mcpServer/notification` with its method and params as they came;
//! - progress goes to the connection whose request it is about;
//! - `elicitation/create` and `sampling/createMessage` are forwarded to the
//!   front-end whose call asked, if it can answer them (see `hub::routes`;
//!   an elicitation in its mode, form or URL), and declined otherwise. The
//!   front-end gets the server's params as rmcp's model reads them (its
//!   `_meta` too; written out again, so members the model does not know
//!   are not passed on), in the front-end's dialect (the link words it: Corral's
//!   `mcpServer/…` request naming the server, or, to an MCP client of
//!   `corral mcp`, MCP's own request), and its answer goes back to the
//!   server as it gave it. An unanswered one is withdrawn after the answer
//!   deadline (`--elicitation-timeout-sec`, 600 s), or as soon as the
//!   front-end has no call to that server running any more (it cancelled
//!   the call, or the call timed out: servers rarely withdraw what they
//!   asked for a call that was cancelled), and answered as cancelled;
//! - `roots/list` is answered from the server's `roots` config, or, for a
//!   server an MCP client started for itself (a session server of
//!   `corral mcp --config`) when that client declared `capabilities.roots`,
//!   with the client's own roots ([`ClientRoots`], fetched over its link
//!   and kept until it says they changed; `hub::roots`).
//!
//! A server of MCP 2026-07-28 asks its questions in the answer to a call
//! instead (an `input_required` result, SEP-2322): `mcp::rounds` has this
//! handler answer each of them ([`McpClientHandler::answer_input`]) the way
//! it answers the classic requests above, asking the front-end whose call
//! it is (which the result names, so no guessing), with the same checks,
//! deadline, paused clock and withdrawal.
//!
//! At `initialize` it declares elicitation (form and URL) and sampling to
//! every server, whoever ends up answering, and roots only when the server
//! has `roots` configured or gets its client's (then with `listChanged` when
//! the client declared it: the server's task sends
//! `notifications/roots/list_changed` after the client's), and the tasks
//! extension (`io.modelcontextprotocol/tasks`: a call may come back as a
//! task, which `mcp::tasks` follows). It offers the version `transport::era`
//! chooses (for every transport) and repeats its version, capabilities and
//! identity in the request's `_meta`, as MCP 2026-07-28 has them on every
//! request ([`McpClientHandler::offering`]). A server of 2026-07-28 sends its
//! list changes and resource updates only on a `subscriptions/listen`
//! stream, which `mcp::modern` opens and hands to the same methods as the
//! notifications above ([`McpClientHandler::tools_changed`] and its
//! siblings). The task builds each listing's `ToolCatalog`
//! (`mcp::tool_catalog`), one listing at a time; this handler only asks.
//! For a stdio server, progress is routed by the wire as the line is read
//! and never reaches rmcp (see `wire_tee`); the routing here is for the
//! other transports.
//!
//! The client's roots win over a `roots` entry of the server's: that entry
//! was written in a file (the project's `--config`; a `.mcp.json` cannot
//! even say it), while the client knows the workspace it has open now, all
//! its folders, and says when they change. The entry is what a user wrote
//! for the server, so it is the fallback when the client fails to answer
//! `roots/list` (no answer within the answer deadline, at most 10 s; an
//! error; an answer that is not a `roots/list` result). Without such an
//! entry the server's `roots/list` then gets an error naming the client's
//! failure. A failure is not kept: the next `roots/list` asks the client
//! again.
//!
//! What a server's notifications carry to every front-end, the `params` of
//! `mcpServer/notification` and the `data` of `mcpServer/log`, is at most
//! [`MAX_PASSED_BYTES`] of JSON ([`bounded`]): a longer string is cut and
//! says so, anything else longer is replaced by a marker naming its size.
//! A server must not fill every front-end's queue and the replay history
//! with one message.

// MCP logging is deprecated by SEP-2577 (spec 2026-07-28), but the servers
// people run today negotiate 2025-11-25 and still send it: forward it while
// they do.
#![allow(deprecated)]

use std::sync::Arc;

use corral_protocol::{DaemonNotification, ListChanged, ResourceUpdated, ServerLog, ServerNotification};
use rmcp::model::{
    ClientCapabilities, ClientConfig, CreateMessageRequestParams, CreateMessageResult, CustomNotification,
    ElicitRequestParams, ElicitResult, ElicitationAction, ElicitationCapability, ErrorCode, FormElicitationCapability,
    Implementation, InputRequest, ListRootsResult, LoggingMessageNotificationParam, ProgressNotificationParam,
    ProtocolVersion, RequestMetaObject, ResourceUpdatedNotificationParam, Root, RootsCapabilities, SamplingCapability,
    UrlElicitationCapability,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ClientHandler, ErrorData, RoleClient};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::hub::link::{FrontEndError, Link};
use crate::hub::roots::ClientRoots;
use crate::hub::routes::{Caller, Capability, ElicitationMode};
use crate::mcp::modern::ListenControl;
use crate::mcp::tasks::TASKS_EXTENSION;

/// The MCP client handler of one server's session.
#[derive(Debug, Clone)]
pub(crate) struct McpClientHandler {
    name: String,
    hub: Arc<Hub>,
    /// Tells the server's task that the tool list changed (capacity 1: coalesced).
    tools_changed: mpsc::Sender<()>,
    /// What `roots/list` answers from the config; `None`: none configured.
    roots: Option<Vec<Root>>,
    /// The roots of the MCP client that started this server for itself: they win over `roots`.
    client_roots: Option<ClientRoots>,
    /// Progress is routed by the session's raw wire (in order), not here.
    progress_from_wire: bool,
    /// The protocol version `initialize` offers, with the client's context in its `_meta`
    /// ([`McpClientHandler::offering`]); `None`: rmcp's default, without `_meta`.
    offer: Option<ProtocolVersion>,
    /// The session's `subscriptions/listen`, for a server of MCP 2026-07-28 (`mcp::modern`).
    listen: Arc<ListenControl>,
}

impl McpClientHandler {
    /// A handler for server `name`; tool list changes go to `tools_changed`.
    pub(crate) fn new(name: String, hub: Arc<Hub>, tools_changed: mpsc::Sender<()>) -> Self {
        Self {
            name,
            hub,
            tools_changed,
            roots: None,
            client_roots: None,
            progress_from_wire: false,
            offer: None,
            listen: Arc::default(),
        }
    }

    /// The session's `subscriptions/listen` (used only with a server of MCP 2026-07-28).
    pub(crate) fn listen_control(&self) -> &Arc<ListenControl> {
        &self.listen
    }

    /// The server's name.
    pub(crate) fn server(&self) -> &str {
        &self.name
    }

    /// The URIs of this server front-ends are subscribed to.
    pub(crate) fn subscribed_uris(&self) -> Vec<String> {
        self.hub.routes.subscriptions(&self.name)
    }

    /// The server said its tools changed: the task lists them again.
    pub(crate) fn tools_changed(&self) {
        // A full channel already holds a pending refresh, which covers this one too.
        let _ = self.tools_changed.try_send(());
    }

    /// The server said its resources changed: front-ends are told.
    pub(crate) fn resources_changed(&self) {
        let name = self.name.clone();
        self.hub
            .events
            .publish(|seq| DaemonNotification::ResourcesListChanged(ListChanged::new(seq, name)));
    }

    /// The server said its prompts changed: front-ends are told.
    pub(crate) fn prompts_changed(&self) {
        let name = self.name.clone();
        self.hub
            .events
            .publish(|seq| DaemonNotification::PromptsListChanged(ListChanged::new(seq, name)));
    }

    /// The server said resource `uri` changed: front-ends are told.
    pub(crate) fn resource_updated(&self, uri: String) {
        let name = self.name.clone();
        self.hub
            .events
            .publish(|seq| DaemonNotification::ResourceUpdated(ResourceUpdated::new(seq, name, uri)));
    }

    /// Offer `version` at `initialize` and put the client's context (MCP 2026-07-28's
    /// `_meta`: protocol version, capabilities, client info) in the request, as a server of
    /// 2026-07-28 reads it from every request (SEP-2575): a server that serves only
    /// 2026-07-28 then answers with the versions it supports instead of refusing a request it
    /// cannot read (`transport::era`).
    pub(crate) fn offering(mut self, version: ProtocolVersion) -> Self {
        self.offer = Some(version);
        self
    }

    /// The session's pipes are teed ([`WireTee`](super::wire_tee::WireTee)), which routes progress itself.
    pub(crate) fn progress_from_wire(mut self) -> Self {
        self.progress_from_wire = true;
        self
    }

    /// Offer `roots` (absolute paths or `file://` URIs, from the config) to the server.
    pub(crate) fn with_roots(mut self, roots: Option<&[String]>) -> Self {
        self.roots = roots.map(|roots| roots.iter().map(|root| Root::new(root_uri(root))).collect());
        self
    }

    /// Offer the roots of the MCP client that started this server for itself
    /// (`None`: a config server, or a client that declared no roots).
    pub(crate) fn with_client_roots(mut self, roots: Option<ClientRoots>) -> Self {
        self.client_roots = roots;
        self
    }

    /// The roots the config gives (none when it gives none).
    fn configured_roots(&self) -> ListRootsResult {
        ListRootsResult::new(self.roots.clone().unwrap_or_default())
    }

    /// What `roots/list` answers when the client's roots cannot be had
    /// (`failure` says why): the config's roots, else an error saying so.
    fn without_client_roots(&self, client: &ClientRoots, failure: &str) -> Result<ListRootsResult, ErrorData> {
        if self.roots.is_some() {
            tracing::warn!(
                server = %self.name,
                connection = client.connection(),
                "the roots of the MCP client that started this server cannot be had ({failure}); \
                 answering roots/list with the server's `roots` config"
            );
            return Ok(self.configured_roots());
        }
        tracing::warn!(server = %self.name, connection = client.connection(), "roots/list failed: {failure}");
        Err(ErrorData::internal_error(
            format!(
                "corrald cannot give the roots of the MCP client that started this server: {failure}; \
                 ask again later, or give the server a `roots` entry in its config to fall back to"
            ),
            None,
        ))
    }

    /// The client's roots, asked of it within the answer deadline (at most
    /// `hub::roots::ROOTS_DEADLINE`), or given up when the server cancels.
    async fn list_client_roots(
        &self,
        client: &ClientRoots,
        withdrawn_by_server: impl Future<Output = ()>,
    ) -> Result<ListRootsResult, ErrorData> {
        let deadline = self.hub.routes.answer_deadline();
        let answer = tokio::select! {
            // Dropping the request (when the server cancels) withdraws it from the client.
            answer = client.list(deadline) => answer,
            () = withdrawn_by_server => {
                return Err(ErrorData::new(ErrorCode::INTERNAL_ERROR, "request cancelled by the server", None));
            }
        };
        let failure = match answer {
            Ok(result) => match serde_json::from_value::<ListRootsResult>(result) {
                Ok(roots) => return Ok(roots),
                Err(error) => format!("the client's answer to roots/list is not a list of roots: {error}"),
            },
            Err(FrontEndError::Unanswered(deadline)) => format!(
                "the client did not answer roots/list within {}s (the answer deadline, \
                 corrald --elicitation-timeout-sec, at most 10 s)",
                deadline.as_secs_f64()
            ),
            Err(error) => format!("roots/list: {error}"),
        };
        self.without_client_roots(client, &failure)
    }

    /// Ask the front-end whose call asked (see [`FrontEnds::caller`]) to
    /// answer a `capability` request with the MCP request `params`, waiting
    /// at most the answer deadline.
    ///
    /// [`FrontEnds::caller`]: crate::hub::routes::FrontEnds::caller
    async fn ask_front_end<P: serde::Serialize, T: DeserializeOwned>(
        &self,
        capability: Capability,
        params: &P,
        context: &RequestContext<RoleClient>,
    ) -> Asked<T> {
        let link = match self.hub.routes.caller(&self.name, capability) {
            Caller::One(link) => link,
            Caller::Declined(reason) => {
                tracing::info!(server = %self.name, ?capability, "declined a server's request: {reason}");
                return Asked::Declined(reason);
            }
        };
        let mut request = match serde_json::to_value(params) {
            Ok(request) => request,
            Err(error) => return Asked::Answer(Err(ErrorData::internal_error(error.to_string(), None))),
        };
        // rmcp moved the request's `_meta` into the context: the front-end gets it back.
        if !context.meta.0.0.is_empty()
            && let Some(request) = request.as_object_mut()
        {
            request.insert("_meta".to_owned(), Value::Object(context.meta.0.0.clone()));
        }
        self.ask_link(&link, capability, request, context.ct.cancelled()).await
    }

    /// Ask `link`, the front-end whose call the request is about, to answer a
    /// `capability` request with the MCP request params `request`: within the
    /// answer deadline, with this front-end's calls to the server paused
    /// while an elicitation waits on its user, withdrawn once its calls to
    /// the server have ended or `withdrawn_by_server` completes.
    async fn ask_link<T: DeserializeOwned>(
        &self,
        link: &Arc<Link>,
        capability: Capability,
        request: Value,
        withdrawn_by_server: impl Future<Output = ()>,
    ) -> Asked<T> {
        let frontends = &self.hub.routes;
        let method = link.method_for(capability);
        tracing::debug!(server = %self.name, connection = link.id, method, "asking a front-end");
        // The user may take their time: this front-end's calls to this server stop their clocks.
        let _pause = matches!(capability, Capability::Elicitation(_)).then(|| frontends.pause(&self.name, link.id));
        let deadline = frontends.answer_deadline();
        let answer = tokio::select! {
            // Dropping the request (in the other branches) withdraws it from the front-end.
            answer = link.ask(&self.name, capability, request, deadline) => answer,
            () = withdrawn_by_server => {
                return Asked::Answer(Err(ErrorData::new(ErrorCode::INTERNAL_ERROR, "request cancelled by the server", None)));
            }
            // The call it is about is over (the front-end cancelled it, or it timed out):
            // nobody is left to show the answer to.
            () = frontends.calls_ended(&self.name, link.id) => {
                tracing::info!(
                    server = %self.name,
                    connection = link.id,
                    method,
                    "the call that caused a server's request ended before the front-end answered; withdrawn"
                );
                return Asked::CallEnded;
            }
        };
        Asked::Answer(match answer {
            Ok(result) => serde_json::from_value(result).map_err(|error| {
                ErrorData::internal_error(
                    format!("the front-end's answer to {method} is not valid: {error}"),
                    None,
                )
            }),
            Err(FrontEndError::Error { code, message, data }) => Err(ErrorData::new(
                ErrorCode(i32::try_from(code).unwrap_or(ErrorCode::INTERNAL_ERROR.0)),
                message,
                data,
            )),
            Err(FrontEndError::Unanswered(deadline)) => {
                tracing::info!(
                    server = %self.name,
                    connection = link.id,
                    method,
                    ?deadline,
                    "a front-end did not answer a server's request in time; withdrawn"
                );
                return Asked::Unanswered(deadline);
            }
            Err(error @ FrontEndError::Disconnected) => Err(ErrorData::internal_error(error.to_string(), None)),
        })
    }

    /// Answer one request of an MRTR `input_required` result (SEP-2322) that
    /// `server` returned to the call of the front-end on `link`: the result
    /// to put under its key in the retry's `inputResponses`, or why there is
    /// none (the call then ends with that reason).
    ///
    /// The request goes to `link`, the front-end whose call it is (MRTR names
    /// the call, so there is no guessing, even while other front-ends call
    /// the same server), with what the classic request would get: the same
    /// capability checks, wording, answer deadline, paused clock and
    /// withdrawal when the call ends. An elicitation the front-end cannot
    /// answer is declined and one it leaves unanswered is cancelled, both
    /// with corrald's reason, as for a classic request; sampling has no such
    /// answer, and `roots/list` is answered as the classic request is.
    pub(crate) async fn answer_input(&self, link: &Arc<Link>, request: &InputRequest) -> Result<Value, String> {
        let params = serde_json::to_value(request)
            .ok()
            .and_then(|mut request| request.get_mut("params").map(Value::take))
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        let server_gone = std::future::pending::<()>();
        let answer = match request {
            InputRequest::Elicitation(elicit) => {
                let capability = Capability::Elicitation(elicitation_mode(&elicit.params));
                let asked = match self.hub.routes.can_ask(link, capability) {
                    Err(reason) => Asked::Declined(reason),
                    Ok(()) => self.ask_link(link, capability, params, server_gone).await,
                };
                elicitation_answer(asked).and_then(|result| to_json(&result))
            }
            InputRequest::CreateMessage(_) => {
                let asked = match self.hub.routes.can_ask(link, Capability::Sampling) {
                    Err(reason) => Asked::Declined(reason),
                    Ok(()) => self.ask_link(link, Capability::Sampling, params, server_gone).await,
                };
                sampling_answer(asked).and_then(|result| to_json(&result))
            }
            InputRequest::ListRoots(_) => match &self.client_roots {
                Some(client) => self.list_client_roots(client, server_gone).await,
                None => Ok(self.configured_roots()),
            }
            .and_then(|roots| to_json(&roots)),
            _ => return Err("an input request of a kind corrald does not know".to_owned()),
        };
        answer.map_err(|error| error.message.into_owned())
    }
}

/// The mode of an elicitation: form unless it asks for a URL.
fn elicitation_mode(request: &ElicitRequestParams) -> ElicitationMode {
    match request {
        ElicitRequestParams::UrlElicitationParams { .. } => ElicitationMode::Url,
        // MCP's default mode (the enum is non-exhaustive; MCP has these two modes).
        _ => ElicitationMode::Form,
    }
}

/// `value` as JSON, or an internal error.
fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, ErrorData> {
    serde_json::to_value(value).map_err(|error| ErrorData::internal_error(error.to_string(), None))
}

/// What an elicitation is answered with, whatever came of asking the front-end.
fn elicitation_answer(asked: Asked<ElicitResult>) -> Result<ElicitResult, ErrorData> {
    match asked {
        Asked::Answer(answer) => answer,
        Asked::Declined(reason) => Ok(elicit_result(ElicitationAction::Decline, reason.to_owned())),
        Asked::Unanswered(deadline) => Ok(elicit_result(
            ElicitationAction::Cancel,
            format!(
                "the front-end did not answer within {}s (corrald --elicitation-timeout-sec); the request was withdrawn",
                deadline.as_secs_f64()
            ),
        )),
        Asked::CallEnded => Ok(elicit_result(ElicitationAction::Cancel, CALL_ENDED.to_owned())),
    }
}

/// What a sampling request is answered with, whatever came of asking the front-end.
fn sampling_answer(asked: Asked<CreateMessageResult>) -> Result<CreateMessageResult, ErrorData> {
    match asked {
        Asked::Answer(answer) => answer,
        Asked::Declined(reason) => Err(ErrorData::new(
            ErrorCode::INVALID_REQUEST,
            format!("sampling declined: {reason}"),
            None,
        )),
        Asked::Unanswered(deadline) => Err(ErrorData::new(
            ErrorCode::INTERNAL_ERROR,
            format!(
                "sampling cancelled: the front-end did not answer within {}s (corrald --elicitation-timeout-sec); \
                 the request was withdrawn",
                deadline.as_secs_f64()
            ),
            None,
        )),
        Asked::CallEnded => Err(ErrorData::new(
            ErrorCode::INTERNAL_ERROR,
            format!("sampling cancelled: {CALL_ENDED}"),
            None,
        )),
    }
}

/// What came of asking a front-end.
enum Asked<T> {
    /// The front-end's answer (or its error, or corrald's about it).
    Answer(Result<T, ErrorData>),
    /// No front-end was asked; why.
    Declined(&'static str),
    /// The front-end did not answer within this deadline; the request was withdrawn.
    Unanswered(std::time::Duration),
    /// The front-end's calls to the server ended before it answered; the request was withdrawn.
    CallEnded,
}

/// What the server is told when [`Asked::CallEnded`].
const CALL_ENDED: &str = "the call that caused it ended (cancelled or timed out) before the front-end answered; \
                          the request was withdrawn";

/// An elicitation result with `action` and corrald's `reason` in `_meta`.
fn elicit_result(action: ElicitationAction, reason: String) -> ElicitResult {
    let mut result = ElicitResult::new(action);
    let mut meta = rmcp::model::MetaObject::new();
    meta.insert("corral/reason".to_owned(), reason.into());
    result.meta = Some(meta);
    result
}

/// A `file://` URI for a root written as an absolute path; URIs pass as they are.
fn root_uri(root: &str) -> String {
    if root
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("file://"))
    {
        return root.to_owned();
    }
    url::Url::from_file_path(root).map_or_else(|()| format!("file://{root}"), String::from)
}

/// What corrald says about itself at `initialize`: it can take elicitation
/// and sampling requests (and forwards them to a front-end that can answer),
/// and offers `roots` when the server has roots configured or gets its
/// client's.
pub(crate) fn client_config(roots: Option<RootsCapabilities>) -> ClientConfig {
    let mut capabilities = ClientCapabilities::default();
    let mut elicitation = ElicitationCapability::default();
    elicitation.form = Some(FormElicitationCapability::default());
    elicitation.url = Some(UrlElicitationCapability::default());
    capabilities.elicitation = Some(elicitation);
    capabilities.sampling = Some(SamplingCapability::default());
    capabilities.roots = roots;
    // A server of 2026-07-28 may run a call as a task (SEP-2663); `mcp::tasks` follows it.
    capabilities.extensions = Some([(TASKS_EXTENSION.to_owned(), serde_json::Map::new())].into());
    ClientConfig::new(capabilities, Implementation::new("corrald", env!("CARGO_PKG_VERSION")))
}

impl ClientHandler for McpClientHandler {
    fn get_info(&self) -> ClientConfig {
        let roots = match &self.client_roots {
            Some(client) => {
                let mut roots = RootsCapabilities::default();
                // The server is told of a change only when the client tells corrald.
                roots.list_changed = client.list_changed().then_some(true);
                Some(roots)
            }
            None => self.roots.is_some().then(RootsCapabilities::default),
        };
        let config = client_config(roots);
        match &self.offer {
            None => config,
            Some(version) => {
                let mut config = config.with_protocol_version(version.clone());
                config.meta = Some(RequestMetaObject::with_client_context(
                    version.clone(),
                    config.client_info.clone(),
                    config.capabilities.clone(),
                ));
                config
            }
        }
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let capability = Capability::Elicitation(elicitation_mode(&request));
        elicitation_answer(self.ask_front_end(capability, &request, &context).await)
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        sampling_answer(self.ask_front_end(Capability::Sampling, &params, &context).await)
    }

    async fn list_roots(&self, context: RequestContext<RoleClient>) -> Result<ListRootsResult, ErrorData> {
        match &self.client_roots {
            Some(client) => self.list_client_roots(client, context.ct.cancelled()).await,
            None => Ok(self.configured_roots()),
        }
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        if self.progress_from_wire {
            return;
        }
        let Ok(token) = serde_json::to_value(&params.progress_token) else {
            return;
        };
        self.hub
            .routes
            .route_progress(&self.name, &token, params.progress, params.total, params.message);
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.resource_updated(params.uri);
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed();
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.resources_changed();
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.prompts_changed();
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        _context: NotificationContext<RoleClient>,
    ) {
        // A notification corrald does not model: every front-end gets it as it came.
        let name = self.name.clone();
        let CustomNotification { method, params, .. } = notification;
        let params = params.map(bounded);
        self.hub
            .events
            .publish(|seq| DaemonNotification::ServerNotification(ServerNotification::new(seq, name, method, params)));
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let level = serde_json::to_value(params.level)
            .ok()
            .and_then(|level| level.as_str().map(str::to_owned))
            .unwrap_or_else(|| "info".to_owned());
        let name = self.name.clone();
        self.hub.events.publish(|seq| {
            DaemonNotification::ServerLog(ServerLog::new(seq, name, level, params.logger, bounded(params.data)))
        });
    }
}

/// Most bytes of serialized JSON a server's notification passes on to front-ends (see the
/// module docs).
pub(crate) const MAX_PASSED_BYTES: usize = 64 * 1024;

/// `value` if its JSON is at most [`MAX_PASSED_BYTES`]; else a string cut to that many bytes
/// (at a character boundary) followed by ` [cut by corrald: N bytes]`, and any other value
/// replaced by `{"corral/cut": {"bytes": N, "max": MAX}}` (JSON cannot be cut and stay JSON).
pub(crate) fn bounded(value: Value) -> Value {
    let bytes = serde_json::to_vec(&value).map_or(0, |json| json.len());
    if bytes <= MAX_PASSED_BYTES {
        return value;
    }
    match value {
        Value::String(mut text) => {
            let mut end = MAX_PASSED_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push_str(&format!(" [cut by corrald: {bytes} bytes]"));
            Value::String(text)
        }
        _ => serde_json::json!({ "corral/cut": { "bytes": bytes, "max": MAX_PASSED_BYTES } }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_servers_notification_is_passed_on_whole_or_cut_with_a_marker() {
        let small = json!({ "a": [1, 2, "three"] });
        assert_eq!(bounded(small.clone()), small);

        let big = json!({ "blob": "x".repeat(MAX_PASSED_BYTES) });
        let bytes = serde_json::to_vec(&big).expect("JSON").len();
        assert_eq!(
            bounded(big),
            json!({ "corral/cut": { "bytes": bytes, "max": MAX_PASSED_BYTES } })
        );

        // A long log line keeps its beginning, cut at a character boundary.
        let line = format!("é{}", "x".repeat(MAX_PASSED_BYTES));
        let Value::String(cut) = bounded(Value::String(line)) else {
            panic!("still a string");
        };
        assert!(cut.starts_with("éxxx"), "{}", &cut[..10]);
        assert!(
            cut.ends_with(&format!(" [cut by corrald: {} bytes]", MAX_PASSED_BYTES + 4)),
            "{}",
            &cut[cut.len() - 40..]
        );
        assert!(cut.len() < MAX_PASSED_BYTES + 64);
    }
}
