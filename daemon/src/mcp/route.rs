//! The way in to a ready server's MCP session, as types: where a request to
//! one server goes ([`CallTarget`]: the server's config and a `SessionHandle`),
//! the servers a request for "all" goes to ([`TargetSet`]), why a server cannot
//! take a request now ([`NotAvailable`]), why a request sent there failed
//! (`RouteError`), and how a request that found a streamable-HTTP session
//! expired asks the server's task for a new one (`SessionRecovery`).
//!
//! The server's task makes the `SessionHandle` when the server becomes
//! ready and updates it when the session's peer or tool catalog changes; the
//! supervisor's handle hands out cheap clones (reference counts: the config is
//! shared, never copied per call); `forward` sends requests through them.
//! A target is a snapshot: the session may end after it was taken, and a
//! request on it then fails like any request to a server that went away.
//!
//! Invariant: what leaves this room for the front-end API is plain data
//! (protocol types, JSON, `RouteError`); the rmcp types inside a target are
//! private to it and read in this room only (`pub(super)` accessors for
//! `forward`).

use std::sync::Arc;

use corral_protocol::config::{ServerConfig, TransportConfig};
use corral_protocol::{FailureReason, ServerStatus};
use rmcp::model::ProtocolVersion;
use rmcp::{Peer, RoleClient};
use tokio::sync::{mpsc, oneshot};

use super::handler::McpClientHandler;
use super::request_headers::ScopedHeaders;
use super::tool_catalog::ToolCatalog;
use super::wire_tee::WireTee;

/// The ready servers a request for "all servers" (or one) goes to, and the
/// enabled ones left out because they are not ready.
#[derive(Debug, Default)]
pub struct TargetSet {
    /// Ready servers, in name order.
    pub ready: Vec<CallTarget>,
    /// Servers left out, with their status and failure reason.
    pub not_ready: Vec<(String, ServerStatus, Option<FailureReason>)>,
    /// Whose each server asked about is (disabled ones too).
    pub whose: Whose,
}

/// Whose servers are, for a front-end that shows each client its own: the
/// session servers' connections, and the built-in servers.
#[derive(Debug, Default, Clone)]
pub struct Whose {
    /// A session server's name to the connection that added it.
    pub owners: std::collections::HashMap<String, u64>,
    /// The names of the built-in servers.
    pub built_in: std::collections::HashSet<String>,
}

/// What a request needs of a ready server's live MCP session: its peer, its
/// tools, its wire (stdio) and its way to a new session (streamable HTTP).
#[derive(Debug, Clone)]
pub(crate) struct SessionHandle {
    /// The session's MCP peer.
    peer: Peer<RoleClient>,
    /// The tools of the session's latest listing, filtered by the config.
    catalog: Arc<ToolCatalog>,
    /// The session's wire, when corrald reads and writes it itself (stdio).
    wire: Option<Arc<WireTee>>,
    /// Whether `tools/call` goes straight onto the wire (see [`CallTarget::direct_wire`]).
    direct: bool,
    /// For a streamable-HTTP server: how to get a new session after a 404.
    recovery: Option<SessionRecovery>,
    /// The session's handler, which answers what a server asks in an `input_required`
    /// result as it answers the server's own requests (`rounds`).
    handler: McpClientHandler,
}

impl SessionHandle {
    /// The handle of a session that just became ready.
    pub(crate) fn new(
        peer: Peer<RoleClient>,
        catalog: Arc<ToolCatalog>,
        wire: Option<Arc<WireTee>>,
        recovery: Option<SessionRecovery>,
        handler: McpClientHandler,
    ) -> Self {
        // MCP 2026-07-28 puts the client's context in every request's `_meta` and lets a
        // server's request count only while one of the client's runs (rmcp enforces both):
        // such a session's calls stay with rmcp, which knows them.
        let direct = wire.is_some()
            && peer
                .peer_info()
                .is_some_and(|info| info.protocol_version < ProtocolVersion::V_2026_07_28);
        Self {
            peer,
            catalog,
            wire,
            direct,
            recovery,
            handler,
        }
    }

    /// How many tools front-ends see (the config's filters applied).
    pub(crate) fn tool_count(&self) -> usize {
        self.catalog.len()
    }

    /// The session's tools after a re-listing.
    pub(crate) fn set_catalog(&mut self, catalog: Arc<ToolCatalog>) {
        self.catalog = catalog;
    }

    /// A streamable-HTTP session replaced after it expired: its peer and the generation it is.
    pub(crate) fn set_renewed(&mut self, peer: Peer<RoleClient>, recovery: SessionRecovery) {
        self.peer = peer;
        self.recovery = Some(recovery);
    }
}

/// Where a request to one server goes, and under which limits.
#[derive(Debug, Clone)]
pub struct CallTarget {
    /// Its config (timeouts, the name), shared with the server's registry entry.
    pub config: Arc<ServerConfig>,
    /// Its session.
    session: Arc<SessionHandle>,
    /// HTTP headers the front-end attached to the requests sent through this target.
    request_headers: Option<ScopedHeaders>,
}

impl CallTarget {
    /// A request to `session` of the server configured by `config`.
    pub(crate) fn new(config: Arc<ServerConfig>, session: Arc<SessionHandle>) -> Self {
        Self {
            config,
            session,
            request_headers: None,
        }
    }

    /// This target with `headers` on every request sent through it: for a streamable-HTTP
    /// server only (why not, otherwise, in words naming the server).
    pub(crate) fn with_request_headers(mut self, headers: ScopedHeaders) -> Result<Self, String> {
        if !matches!(self.config.transport, TransportConfig::StreamableHttp(_)) {
            return Err(format!(
                "request-scoped headers are for streamable-HTTP servers, and MCP server `{}` is a stdio or \
                 built-in server: send the request without `headers`",
                self.config.name
            ));
        }
        self.request_headers = Some(headers);
        Ok(self)
    }

    /// The headers the front-end attached, if any.
    pub(super) fn request_headers(&self) -> Option<&ScopedHeaders> {
        self.request_headers.as_ref()
    }

    /// Whether tool `name` may be called: the config lets it through and the
    /// server listed it.
    pub(crate) fn check_tool(&self, name: &str) -> Result<(), RouteError> {
        self.session.catalog.check(name)
    }

    /// Whether the config's filters let tool `name` through, whether or not the server listed
    /// it: for a call with request-scoped headers, for which the server may have tools its
    /// listing without them does not show.
    pub(crate) fn check_tool_allowed(&self, name: &str) -> Result<(), RouteError> {
        self.session.catalog.check_allowed(name)
    }

    /// The tools the config lets through, in the server's order: as the
    /// server wrote them where corrald saw that, rmcp's typed tool otherwise.
    pub(crate) fn allowed_tools(&self) -> Result<Vec<serde_json::Value>, RouteError> {
        self.session.catalog.listing()
    }

    /// Whether the server declared resource subscriptions at `initialize`.
    pub(crate) fn offers_subscriptions(&self) -> bool {
        self.session
            .peer
            .peer_info()
            .and_then(|info| {
                info.capabilities
                    .resources
                    .as_ref()
                    .and_then(|resources| resources.subscribe)
            })
            .unwrap_or(false)
    }

    /// A tool's `execution.taskSupport` as the server listed it (seen on stdio only).
    pub(super) fn tool_task_support(&self, name: &str) -> Option<&str> {
        self.session.catalog.task_support(name)
    }

    /// The session's handler.
    pub(super) fn handler(&self) -> &McpClientHandler {
        &self.session.handler
    }

    /// The session's MCP peer.
    pub(super) fn peer(&self) -> &Peer<RoleClient> {
        &self.session.peer
    }

    /// The session's wire, if corrald sees it.
    pub(super) fn wire(&self) -> Option<&Arc<WireTee>> {
        self.session.wire.as_ref()
    }

    /// The wire a `tools/call` goes onto directly, without rmcp: a stdio session
    /// of MCP before 2026-07-28, whose calls need nothing of rmcp's (see
    /// `wire_tee`); `None` for every other session.
    pub(super) fn direct_wire(&self) -> Option<&Arc<WireTee>> {
        self.session.wire.as_ref().filter(|_| self.session.direct)
    }

    /// How to get a new session after a 404 (streamable HTTP).
    pub(super) fn session_recovery(&self) -> Option<&SessionRecovery> {
        self.session.recovery.as_ref()
    }
}

/// Why a request to a server failed, or was not sent: plain data (no rmcp
/// types), worded for front-ends in one place (`api::rpc`). Messages that
/// come from a transport never quote its URL (see `classify`).
#[derive(Debug)]
pub(crate) enum RouteError {
    /// The server answered with a JSON-RPC error, passed on as it gave it.
    Answered {
        /// Its error code.
        code: i32,
        /// Its message.
        message: String,
        /// Its `data`, if any.
        data: Option<serde_json::Value>,
    },
    /// A streamable-HTTP server could not be reached.
    Unreachable {
        /// What happened, without the URL.
        message: String,
    },
    /// A streamable-HTTP request failed otherwise (an HTTP status, OAuth).
    Http {
        /// The failure reason front-ends see.
        reason: FailureReason,
        /// What happened, without the URL.
        message: String,
    },
    /// The transport closed or could not send: the server went away.
    Gone {
        /// rmcp's words.
        message: String,
    },
    /// The request failed in another way (an answer of the wrong kind).
    Failed {
        /// rmcp's words.
        message: String,
    },
    /// The session expired (HTTP 404) and no new one could be made.
    SessionLost {
        /// Why not.
        why: String,
    },
    /// The server answered 403 `insufficient_scope`: the caller may start a
    /// re-authorization asking for `required`; `error` is the failure as such.
    InsufficientScope {
        /// The scope the server named (empty when it named none).
        required: String,
        /// The failure, worded like any other.
        error: Box<RouteError>,
    },
    /// The server answered with a result of a kind the method does not have.
    UnhandledResult {
        /// What the result is not: "neither a tools/call result, …".
        kinds: &'static str,
    },
    /// The server still asked for input after this many `input_required` rounds (`rounds`).
    TooManyRounds {
        /// The bound.
        max: usize,
    },
    /// An input request of an `input_required` result could not be answered (`rounds`).
    InputNotGiven {
        /// The request, in words: "a `sampling/createMessage` request", …
        what: &'static str,
        /// Why not.
        why: String,
    },
    /// An `input_required` result (or a task's) asked more at once than corrald answers (`rounds`).
    TooManyInputRequests {
        /// How many it asked.
        asked: usize,
        /// The bound.
        max: usize,
    },
    /// The server ran the request as a task that did not complete (`tasks`).
    TaskNotCompleted {
        /// The task's id.
        task: String,
        /// Its last status: `failed`, `cancelled`, or what went wrong following it.
        status: String,
        /// The server's words, if any.
        message: Option<String>,
    },
    /// The answer (or a tool of a listing) could not be serialized.
    Unserializable {
        /// What: "the result", "a tool".
        what: &'static str,
        /// serde's words.
        why: String,
    },
    /// A listing: the server repeated a pagination cursor.
    RepeatedCursor {
        /// The cursor it repeated.
        cursor: String,
    },
    /// A listing: the server returned more pages than corrald fetches.
    TooManyPages {
        /// How many pages corrald fetches at most.
        max: usize,
    },
    /// `tools/call` of a tool the config's `enabled_tools` / `disabled_tools` leave out.
    ToolDisabled {
        /// The tool's name.
        tool: String,
    },
    /// `tools/call` of a tool the server did not list.
    UnknownTool {
        /// The tool's name.
        tool: String,
    },
    /// `resources/subscribe` to a server that did not declare subscriptions.
    SubscriptionsUnsupported,
}

impl RouteError {
    /// In words, for `request` (e.g. "`tools/call` of `echo`") sent to
    /// `server`: the one wording of every front-end's errors. Never quotes
    /// a streamable-HTTP server's URL (a transport error's own text does,
    /// token and all: `message` here is already without it).
    pub(crate) fn describe(&self, server: &str, request: &str) -> String {
        match self {
            Self::Unreachable { message } => {
                format!("MCP server `{server}` could not be reached during {request}: {message}")
            }
            Self::Http { message, .. } => format!("MCP server `{server}` failed {request}: {message}"),
            Self::Answered { message, .. } => {
                format!("MCP server `{server}` answered {request} with an error: {message}")
            }
            Self::Gone { message } => format!("MCP server `{server}` went away during {request}: {message}"),
            Self::Failed { message } => format!("{request} on MCP server `{server}` failed: {message}"),
            Self::SessionLost { why } => format!(
                "MCP server `{server}` lost the session during {request} and a new one could not be made: {why}"
            ),
            // Worded as the failure it is; whether to re-authorize is the caller's choice.
            Self::InsufficientScope { error, .. } => error.describe(server, request),
            Self::UnhandledResult { kinds } => {
                format!("MCP server `{server}` answered {request} with a result that is {kinds}")
            }
            Self::TooManyRounds { max } => format!(
                "MCP server `{server}` still asked for more input after {max} rounds of {request} \
                 (input_required results); corrald gave up on it: call again, or report the loop to the server's authors"
            ),
            Self::InputNotGiven { what, why } => format!(
                "MCP server `{server}` needs the answer to {what} to finish {request}, \
                 and it could not be had: {why}"
            ),
            Self::TooManyInputRequests { asked, max } => format!(
                "MCP server `{server}` asked for {asked} inputs at once during {request}; corrald answers at most \
                 {max} per round and asked none of them: report it to the server's authors"
            ),
            Self::TaskNotCompleted { task, status, message } => {
                let mut text = format!("MCP server `{server}` ran {request} as task `{task}`, which ended {status}");
                if let Some(message) = message {
                    text.push_str(&format!(": {message}"));
                }
                text
            }
            Self::Unserializable { what, why } => format!("cannot serialize {what}: {why}"),
            Self::RepeatedCursor { cursor } => {
                format!("MCP server `{server}` repeated the pagination cursor {cursor:?} in {request}")
            }
            Self::TooManyPages { max } => format!("MCP server `{server}` returned more than {max} pages for {request}"),
            Self::ToolDisabled { tool } => format!(
                "tool `{tool}` of MCP server `{server}` is disabled by the config (enabled_tools / disabled_tools)"
            ),
            Self::UnknownTool { tool } => format!("MCP server `{server}` has no tool named `{tool}`"),
            Self::SubscriptionsUnsupported => {
                format!("MCP server `{server}` does not support resource subscriptions")
            }
        }
    }
}

impl NotAvailable {
    /// In words, for `server`: "MCP server `x` is not ready (failed:
    /// reason): error". What to do about it is the caller's to add.
    pub(crate) fn describe(&self, server: &str) -> String {
        match self {
            Self::NotFound => format!("no MCP server named `{server}`"),
            Self::NotReady {
                status,
                failure_reason,
                error,
            } => {
                let mut text = format!("MCP server `{server}` is not ready ({status}");
                if let Some(reason) = failure_reason {
                    text.push_str(&format!(": {reason}"));
                }
                text.push(')');
                if let (ServerStatus::Failed, Some(error)) = (status, error) {
                    text.push_str(&format!(": {error}"));
                }
                text
            }
        }
    }
}

/// Why a server cannot serve a request now.
#[derive(Debug, Clone)]
pub enum NotAvailable {
    /// No server of that name.
    NotFound,
    /// It exists but is not ready.
    NotReady {
        /// Its status.
        status: ServerStatus,
        /// Why it failed, if it did.
        failure_reason: Option<FailureReason>,
        /// Its error, if it failed.
        error: Option<String>,
    },
}

/// A cloneable handle to ask a streamable-HTTP server's task for a new MCP
/// session after a request found the current one expired (HTTP 404).
#[derive(Debug, Clone)]
pub(crate) struct SessionRecovery {
    /// Which session the holder's peer belongs to.
    pub(crate) generation: u64,
    /// The server task's end.
    pub(crate) requests: mpsc::Sender<RecoveryRequest>,
}

/// A request for a new session, from a holder of a peer of session `generation`.
#[derive(Debug)]
pub(crate) struct RecoveryRequest {
    /// The session the asker's peer belongs to.
    pub(crate) generation: u64,
    /// The new session's peer, or why there is none.
    pub(crate) reply: oneshot::Sender<Result<Peer<RoleClient>, String>>,
}

impl SessionRecovery {
    /// A peer on a new session: the server task rebuilds the transport and
    /// re-initializes once, unless another request already replaced the
    /// session this handle belongs to (then the current peer comes back).
    pub(crate) async fn recover(&self) -> Result<Peer<RoleClient>, String> {
        let (reply, answer) = oneshot::channel();
        let request = RecoveryRequest {
            generation: self.generation,
            reply,
        };
        let gone = || "the server's task ended the session (it is stopped or reconnecting)".to_owned();
        self.requests.send(request).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}
