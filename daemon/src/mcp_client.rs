//! corrald's side of each MCP session: how it introduces itself to servers
//! and what it does with their notifications.
//!
//! - `notifications/tools/list_changed` asks the server's task to re-list
//!   its tools (the task owns the cached list) and tell front-ends;
//! - resource and prompt list changes, and log messages
//!   (`notifications/message`), become daemon notifications naming the
//!   server, seq-numbered like every other.

// MCP logging is deprecated by SEP-2577 (spec 2026-07-28), but the servers
// people run today negotiate 2025-11-25 and still send it: forward it while
// they do.
#![allow(deprecated)]

use std::sync::Arc;

use corral_protocol::{DaemonNotification, ListChanged, ServerLog};
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, LoggingMessageNotificationParam};
use rmcp::service::NotificationContext;
use rmcp::{ClientHandler, RoleClient};
use tokio::sync::mpsc;

use crate::events::EventHub;

/// The MCP client handler of one server's session.
#[derive(Debug, Clone)]
pub(crate) struct ServerClient {
    name: String,
    events: Arc<EventHub>,
    /// Tells the server's task that the tool list changed (capacity 1: coalesced).
    tools_changed: mpsc::Sender<()>,
}

impl ServerClient {
    /// A handler for server `name`; tool list changes go to `tools_changed`.
    pub(crate) fn new(name: String, events: Arc<EventHub>, tools_changed: mpsc::Sender<()>) -> Self {
        Self {
            name,
            events,
            tools_changed,
        }
    }
}

/// What corrald says about itself at `initialize`.
pub(crate) fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("corrald", env!("CARGO_PKG_VERSION")),
    )
}

impl ClientHandler for ServerClient {
    fn get_info(&self) -> ClientConfig {
        client_config()
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        // A full channel already holds a pending refresh, which covers this one too.
        let _ = self.tools_changed.try_send(());
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let name = self.name.clone();
        self.events
            .publish(|seq| DaemonNotification::ResourcesListChanged(ListChanged::new(seq, name)));
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let name = self.name.clone();
        self.events
            .publish(|seq| DaemonNotification::PromptsListChanged(ListChanged::new(seq, name)));
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
        self.events
            .publish(|seq| DaemonNotification::ServerLog(ServerLog::new(seq, name, level, params.logger, params.data)));
    }
}
