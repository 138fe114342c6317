//! Cursor: `~/.cursor/mcp.json` (global) or a project's `.cursor/mcp.json`,
//! servers under `mcpServers`; values may use `${env:NAME}`, `${userHome}` and
//! `${workspaceFolder}` (known for a project file: the folder holding `.cursor`).

use super::draft::{Context, ServerDraft};
use super::jsonc::Value;
use super::mcp_servers;

pub(crate) fn servers(context: &Context, root: &Value) -> Result<Vec<ServerDraft>, String> {
    match root.get("mcpServers") {
        Some(servers) => mcp_servers::entries(context, servers, "mcpServers"),
        None => Ok(Vec::new()),
    }
}
