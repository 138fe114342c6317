//! The way in to a ready server's MCP session, as types: where a request to
//! one server goes ([`CallTarget`]), the servers a request for "all" goes to
//! ([`TargetSet`]), why a server cannot take a request now
//! ([`NotAvailable`]), why a request sent there failed (`RouteError`),
//! the config's tool filters (`tool_allowed`), and how a request that
//! found a streamable-HTTP session expired asks the server's task for a new
//! one (`SessionRecovery`).
//!
//! The supervisor hands these out (a cheap clone of what the server's task
//! published while ready); `forward` sends requests through them. A target
//! is a snapshot: the session may end after it was taken, and a request on
//! it then fails like any request to a server that went away.
//!
//! Invariant: what leaves this room for the front-end API is plain data
//! (protocol types, JSON, `RouteError`); the rmcp types inside a target
//! are read in this room only (the supervisor copies them in).

use std::sync::Arc;

use corral_protocol::config::ServerConfig;
use corral_protocol::{FailureReason, ServerStatus};
use rmcp::model::Tool;
use rmcp::{Peer, RoleClient};
use tokio::sync::{mpsc, oneshot};

use super::wire_tee::WireTee;

/// The ready servers a request for "all servers" (or one) goes to, and the
/// enabled ones left out because they are not ready.
#[derive(Debug, Default)]
pub struct TargetSet {
    /// Ready servers, in name order.
    pub ready: Vec<CallTarget>,
    /// Servers left out, with their status and failure reason.
    pub not_ready: Vec<(String, ServerStatus, Option<FailureReason>)>,
}

/// Where a request to one server goes, and under which limits.
#[derive(Debug, Clone)]
pub struct CallTarget {
    /// The server's MCP peer.
    pub(crate) peer: Peer<RoleClient>,
    /// Its config (tool filters, timeouts).
    pub config: ServerConfig,
    /// Its tools as listed when it became ready.
    pub(crate) tools: Arc<Vec<Tool>>,
    /// Its answers as it wrote them, when the transport lets corrald see them.
    pub(crate) raw: Option<Arc<WireTee>>,
    /// For a streamable-HTTP server: how to get a new session after a 404.
    pub(crate) session_recovery: Option<SessionRecovery>,
}

impl CallTarget {
    /// Whether tool `name` may be called: the config lets it through and the
    /// server listed it.
    pub(crate) fn check_tool(&self, name: &str) -> Result<(), RouteError> {
        if !tool_allowed(&self.config, name) {
            return Err(RouteError::ToolDisabled { tool: name.to_owned() });
        }
        if !self.tools.iter().any(|tool| tool.name == name) {
            return Err(RouteError::UnknownTool { tool: name.to_owned() });
        }
        Ok(())
    }

    /// The tools the config lets through, in the server's order: as the
    /// server wrote them where corrald saw that, rmcp's typed tool otherwise.
    pub(crate) fn allowed_tools(&self) -> Result<Vec<serde_json::Value>, RouteError> {
        let raw = self.raw.as_ref().map(|raw| raw.tools()).unwrap_or_default();
        self.tools
            .iter()
            .filter(|tool| tool_allowed(&self.config, &tool.name))
            .map(|tool| {
                match raw.get(tool.name.as_ref()) {
                    Some(raw) => serde_json::from_str(raw.get()),
                    None => serde_json::to_value(tool),
                }
                .map_err(|error| RouteError::Unserializable {
                    what: "a tool",
                    why: error.to_string(),
                })
            })
            .collect()
    }

    /// Whether the server declared resource subscriptions at `initialize`.
    pub(crate) fn offers_subscriptions(&self) -> bool {
        self.peer
            .peer_info()
            .and_then(|info| {
                info.capabilities
                    .resources
                    .as_ref()
                    .and_then(|resources| resources.subscribe)
            })
            .unwrap_or(false)
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
    /// The server answered with a result kind corrald does not handle yet.
    UnhandledResult {
        /// The kinds this method may answer with that corrald does not handle, as MCP names them.
        kinds: &'static str,
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

/// Whether the config's `enabled_tools` / `disabled_tools` let `tool` through.
pub(crate) fn tool_allowed(config: &ServerConfig, tool: &str) -> bool {
    let enabled = config
        .enabled_tools
        .as_ref()
        .is_none_or(|enabled| enabled.iter().any(|name| name == tool));
    enabled && !config.disabled_tools.iter().any(|name| name == tool)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_filters_apply_enabled_then_disabled() {
        let text = "[servers.s]\ncommand = \"x\"\nenabled_tools = [\"a\", \"b\"]\ndisabled_tools = [\"b\"]\n";
        let config = corral_protocol::config::parse(text, std::path::Path::new("t.toml")).expect("valid");
        let server = &config.servers["s"];
        assert!(tool_allowed(server, "a"));
        assert!(!tool_allowed(server, "b"), "disabled wins");
        assert!(!tool_allowed(server, "c"), "not in enabled_tools");
    }
}
