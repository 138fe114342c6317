//! The bridge: the daemon as one MCP server for MCP clients (Claude Code,
//! Cursor, the official SDKs…), with the tools of every server it runs.
//!
//! An MCP client reaches it on the daemon's socket (`corral mcp` is a byte
//! pipe from the client's stdio to the socket): the api room serves the
//! connection like any other (framing, limits, slots, batches,
//! cancellation, shutdown) and, once the first `initialize` carries a string
//! `protocolVersion`, dispatches the connection's requests into the table
//! built here ([`methods`]) instead of Corral's. The same table serves the
//! loopback HTTP endpoint's sessions (`crate::endpoint`), which are such
//! connections too.
//!
//! What it owns: MCP's words for the daemon. `initialize` (version
//! negotiation), `ping`, `logging/setLevel`, `tools/list` and `tools/call`
//! ([`tools`]) with one namespace of names ([`names`]), and the
//! `notifications/tools/list_changed` a client gets when the set of tools
//! may have changed ([`live`]).
//!
//! Invariants:
//! - an MCP client gets MCP messages only: never Corral's notifications
//!   (the api's writer does not subscribe it to the event hub), its
//!   progress as `notifications/progress` with its own token (the link's
//!   dialect), no `requestCancelled` answer after its own
//!   `notifications/cancelled`;
//! - a server's answers pass through as the server wrote them
//!   (`mcp::forward` returns the raw JSON); the bridge only renames tools;
//! - only ready servers' tools are listed; a call to a server that is not
//!   ready answers at once with a tool error saying why and what to do;
//! - requests a server makes of its client (elicitation, sampling) are
//!   declined for MCP clients in this phase: the link is registered without
//!   those capabilities, so `hub::routes` declines them, saying so.
//!
//! Dependencies: `mcp::{forward, route}`, the supervisor's handle and the
//! hub; never the api room (which names this one).

pub(crate) mod live;
pub(crate) mod names;
pub(crate) mod tools;

use std::sync::{Arc, Mutex, PoisonError};

use corral_protocol::{ClientCapabilities, ErrorCode};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::{ErrorObjectOwned, Extensions, Params};
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::hub::link::Link;
use crate::supervisor::SupervisorHandle;

/// What an MCP client is told about this server at `initialize`.
const INSTRUCTIONS: &str = "Corral runs the user's MCP servers; this server offers the tools of every one \
that is ready, named `server__tool`. A tool of a server that is not ready answers with an error that says \
why and what to do. The `corral__*` tools show each server's status.";

/// The bridge's state, shared by its method handlers (the context of its
/// `RpcModule`).
#[derive(Debug)]
pub(crate) struct Bridge {
    pub(crate) supervisor: SupervisorHandle,
    pub(crate) hub: Arc<Hub>,
    /// The daemon's task tracker: each MCP connection's list follower is its task.
    tasks: TaskTracker,
    /// Between server and tool in the names clients see.
    pub(crate) separator: String,
    /// The names of the latest full listing, to their server and tool: how
    /// a `tools/call` finds its server without listing again.
    listed: Mutex<Arc<tools::Listing>>,
}

impl Bridge {
    /// A bridge to the servers of `supervisor`, reaching clients through `hub`.
    pub(crate) fn new(supervisor: SupervisorHandle, hub: Arc<Hub>, tasks: TaskTracker) -> Self {
        Self {
            supervisor,
            hub,
            tasks,
            separator: names::DEFAULT_SEPARATOR.to_owned(),
            listed: Mutex::default(),
        }
    }

    fn listed(&self) -> Arc<tools::Listing> {
        // A map replaced whole: valid after any panic.
        self.listed.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_listed(&self, listing: Arc<tools::Listing>) {
        *self.listed.lock().unwrap_or_else(PoisonError::into_inner) = listing;
    }
}

/// The bridge's methods: what the api dispatches an MCP client's requests into.
pub(crate) fn methods(bridge: Bridge) -> Result<RpcModule<Bridge>, RegisterMethodError> {
    let mut module = RpcModule::new(bridge);
    module.register_method("initialize", |params, bridge, extensions| {
        initialize(&params, bridge, extensions)
    })?;
    module.register_method("ping", |_, _, _| Ok::<_, ErrorObjectOwned>(json!({})))?;
    module.register_method("logging/setLevel", |params, _, _| {
        // Accepted: server logs do not reach MCP clients in this phase.
        let _: SetLevel = parse(&params, "logging/setLevel")?;
        Ok::<_, ErrorObjectOwned>(json!({}))
    })?;
    module.register_async_method("tools/list", |params, bridge, _| async move {
        tools::list(&bridge, &params).await
    })?;
    module.register_async_method("tools/call", |params, bridge, extensions| async move {
        let link = link(&extensions)?;
        tools::call(&bridge, &params, &link).await
    })?;
    Ok(module)
}

/// `logging/setLevel`'s params.
#[derive(Debug, serde::Deserialize)]
struct SetLevel {
    /// Required; read only to refuse a request without it.
    #[serde(rename = "level")]
    _level: String,
}

/// MCP `initialize`'s params, as far as the bridge reads them.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitializeParams {
    protocol_version: String,
}

/// Answer `initialize`: the version, the capabilities, who we are. The api
/// marks the connection initialized once this succeeds.
fn initialize(params: &Params<'_>, bridge: &Bridge, extensions: &Extensions) -> Result<Value, ErrorObjectOwned> {
    let params: InitializeParams = parse(params, "initialize")?;
    let link = link(extensions)?;
    // Registered without elicitation or sampling: a server's requests are
    // declined for this client (phase 1), with the reason in the log.
    bridge.hub.routes.register(&link, ClientCapabilities::default());
    live::spawn(&bridge.tasks, bridge.supervisor.clone(), bridge.hub.clone(), link);
    Ok(json!({
        "protocolVersion": negotiate(&params.protocol_version),
        "capabilities": {
            "tools": { "listChanged": true },
            "logging": {},
        },
        "serverInfo": { "name": "corral", "version": env!("CARGO_PKG_VERSION") },
        "instructions": INSTRUCTIONS,
    }))
}

/// The version to answer a client that asked for `requested`: the same when
/// rmcp's model knows it and it still has an `initialize` handshake, else
/// the newest that has one (a client that cannot speak it closes the
/// connection, as MCP says).
fn negotiate(requested: &str) -> String {
    ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .filter(|known| known.has_initialize())
        .find(|known| known.as_str() == requested)
        .unwrap_or(&ProtocolVersion::LATEST_WITH_INITIALIZE)
        .as_str()
        .to_owned()
}

/// Whether the bridge speaks `version` (one it would answer `initialize`
/// with): what the loopback HTTP endpoint checks an `MCP-Protocol-Version`
/// header against.
pub(crate) fn speaks(version: &str) -> bool {
    ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .any(|known| known.has_initialize() && known.as_str() == version)
}

/// The connection's link, which the api puts on every request of an MCP client.
fn link(extensions: &Extensions) -> Result<Arc<Link>, ErrorObjectOwned> {
    extensions
        .get::<Arc<Link>>()
        .cloned()
        .ok_or_else(|| error(ErrorCode::InternalError, "no connection attached to this call"))
}

pub(crate) use crate::params::{error, parse};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_gets_its_own_version_when_known_else_the_newest_with_a_handshake() {
        for known in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
            assert_eq!(negotiate(known), known);
        }
        assert_eq!(negotiate("2099-01-01"), "2025-11-25", "unknown: the newest");
        assert_eq!(
            negotiate("2026-07-28"),
            "2025-11-25",
            "no `initialize` in that revision"
        );
        assert_eq!(negotiate(""), "2025-11-25");
        assert!(speaks("2025-06-18") && speaks("2025-11-25"));
        assert!(!speaks("2026-07-28") && !speaks("2099-01-01") && !speaks(""));
    }
}
