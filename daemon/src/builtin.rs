//! The built-in MCP server `corral`: always there, even with no config file,
//! so that an agent connected through Corral can inspect its own MCP setup.
//!
//! It runs in-process on rmcp's server side and is served over an in-memory
//! duplex (no child process), under the same lifecycle task as every other
//! server, so listing, calling and status work the same way. Boot injects it
//! ([`injected`]): the supervisor and the server task know it only as a
//! [`InProcessServer`], so this module is the only one that depends on both
//! the supervisor and the server it runs under.
//!
//! Tools: `list_servers` (every server and its status), `server_status`
//! (everything about one server, with its stderr tail), `recent_events`
//! (the latest daemon notifications).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use corral_protocol::McpServerStatus;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, InitializeResult,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, Tool, ToolsCapability,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Value, json};
use tokio::io::DuplexStream;

use crate::hub::Hub;
use crate::supervisor::SupervisorHandle;
use crate::transport::in_process::InProcessServer;

/// Name of the built-in server.
pub(crate) const NAME: &str = "corral";

/// Most events `recent_events` returns.
const MAX_EVENTS: u64 = 200;

/// The built-in server: reads the daemon's state through the supervisor handle.
#[derive(Debug, Clone)]
pub(crate) struct CorralServer {
    supervisor: SupervisorHandle,
    hub: Arc<Hub>,
}

/// The built-in server as the supervisor takes it at boot: its name and the server.
pub(crate) fn injected(supervisor: SupervisorHandle, hub: Arc<Hub>) -> (&'static str, Arc<dyn InProcessServer>) {
    (NAME, Arc::new(CorralServer { supervisor, hub }))
}

impl InProcessServer for CorralServer {
    fn serve(&self, io: DuplexStream) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let server = self.clone();
        Box::pin(async move {
            match rmcp::ServiceExt::serve(server, io).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(error) => tracing::warn!(%error, "the built-in server did not start"),
            }
        })
    }
}

impl CorralServer {
    async fn servers(&self) -> Result<Vec<McpServerStatus>, ErrorData> {
        self.supervisor
            .list()
            .await
            .map_err(|stopped| ErrorData::internal_error(stopped.to_string(), None))
    }

    async fn call(&self, name: &str, arguments: &serde_json::Map<String, Value>) -> Result<CallToolResult, ErrorData> {
        match name {
            "list_servers" => {
                let servers = self.servers().await?;
                let lines: Vec<String> = servers.iter().map(summary_line).collect();
                let text = if lines.is_empty() {
                    "no MCP servers".to_owned()
                } else {
                    lines.join("\n")
                };
                Ok(result(text, json!({ "servers": servers })))
            }
            "server_status" => {
                let Some(wanted) = arguments.get("name").and_then(Value::as_str) else {
                    return Ok(CallToolResult::error(vec![ContentBlock::text(
                        "missing argument `name` (a server name from list_servers)",
                    )]));
                };
                let servers = self.servers().await?;
                match servers.into_iter().find(|server| server.name == wanted) {
                    Some(server) => {
                        let mut text = summary_line(&server);
                        if let Some(exit) = &server.last_exit {
                            text.push_str(&format!("\nlast exit: {exit}"));
                        }
                        if !server.stderr_tail.is_empty() {
                            text.push_str("\nstderr (most recent last):\n");
                            text.push_str(&server.stderr_tail.join("\n"));
                        }
                        Ok(result(text, json!({ "server": server })))
                    }
                    None => Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                        "no MCP server named `{wanted}`"
                    ))])),
                }
            }
            "recent_events" => {
                let limit = arguments
                    .get("limit")
                    .and_then(Value::as_u64)
                    .unwrap_or(20)
                    .clamp(1, MAX_EVENTS);
                let last = self.hub.events.last_seq();
                let replay = self.hub.events.replay(last.saturating_sub(limit));
                let lines: Vec<String> = replay
                    .notifications
                    .iter()
                    .map(|notification| {
                        let params = serde_json::to_value(notification)
                            .ok()
                            .and_then(|value| value.get("params").cloned())
                            .unwrap_or_default();
                        format!("[{}] {} {}", notification.seq(), notification.method(), params)
                    })
                    .collect();
                let text = if lines.is_empty() {
                    "no events yet".to_owned()
                } else {
                    lines.join("\n")
                };
                Ok(result(text, json!({ "events": replay.notifications })))
            }
            other => Err(ErrorData::invalid_params(
                format!("the built-in server has no tool `{other}`"),
                None,
            )),
        }
    }
}

/// `name: status (reason: error)`, one line.
fn summary_line(server: &McpServerStatus) -> String {
    let mut line = format!("{}: {}", server.name, server.status);
    if let Some(reason) = server.failure_reason {
        line.push_str(&format!(" ({reason}"));
        if let Some(error) = &server.error {
            line.push_str(&format!(": {error}"));
        }
        line.push(')');
    }
    if let Some(count) = server.tool_count {
        line.push_str(&format!(", {count} tools"));
    }
    line
}

/// A result with readable text and the same data structured.
fn result(text: String, structured: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

fn tools() -> Vec<Tool> {
    let schema = |value: Value| match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(serde_json::Map::new()),
    };
    vec![
        Tool::new(
            "list_servers",
            "Every MCP server Corral supervises, with its status, failure reason and tool count",
            schema(json!({ "type": "object", "properties": {} })),
        ),
        Tool::new(
            "server_status",
            "Everything about one MCP server: status, failure reason and error, pid, restarts, last exit, stderr tail",
            schema(json!({
                "type": "object",
                "properties": { "name": { "type": "string", "description": "Server name, as list_servers shows it" } },
                "required": ["name"]
            })),
        ),
        Tool::new(
            "recent_events",
            "The latest daemon notifications (status changes, tool list changes, server logs), oldest first",
            schema(json!({
                "type": "object",
                "properties": { "limit": { "type": "integer", "minimum": 1, "maximum": MAX_EVENTS, "default": 20 } }
            })),
        ),
    ]
}

impl ServerHandler for CorralServer {
    fn get_info(&self) -> InitializeResult {
        let mut capabilities = ServerCapabilities::default();
        capabilities.tools = Some(ToolsCapability::default());
        InitializeResult::new(capabilities)
            .with_server_info(Implementation::new("corral", env!("CARGO_PKG_VERSION")))
            .with_instructions("Corral's own state: which MCP servers run, why one failed, what happened recently.")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let arguments = request.arguments.unwrap_or_default();
        self.call(&request.name, &arguments)
            .await
            .map(CallToolResponse::Complete)
    }
}
