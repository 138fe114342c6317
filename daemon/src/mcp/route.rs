//! The way in to a ready server's MCP session, as types: where a request to
//! one server goes ([`CallTarget`]), the servers a request for "all" goes to
//! ([`TargetSet`]), why a server cannot take a request now
//! ([`NotAvailable`]), the config's tool filters ([`tool_allowed`]), and how
//! a request that found a streamable-HTTP session expired asks the server's
//! task for a new one ([`SessionRecovery`]).
//!
//! The supervisor hands these out (a cheap clone of what the server's task
//! published while ready); `forward` sends requests through them. A target
//! is a snapshot: the session may end after it was taken, and a request on
//! it then fails like any request to a server that went away.

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
    pub peer: Peer<RoleClient>,
    /// Its config (tool filters, timeouts).
    pub config: ServerConfig,
    /// Its tools as listed when it became ready.
    pub tools: Arc<Vec<Tool>>,
    /// Its answers as it wrote them, when the transport lets corrald see them.
    pub(crate) raw: Option<Arc<WireTee>>,
    /// For a streamable-HTTP server: how to get a new session after a 404.
    pub(crate) session_recovery: Option<SessionRecovery>,
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
