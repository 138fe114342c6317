//! Claude Desktop: `claude_desktop_config.json`, servers under `mcpServers`
//! (stdio: `command`, `args`, `env`). Values are used as written: Claude
//! Desktop expands no variables.

use super::draft::{Context, ServerDraft};
use super::jsonc::Value;
use super::mcp_servers;

pub(crate) fn servers(context: &Context, root: &Value) -> Result<Vec<ServerDraft>, String> {
    match root.get("mcpServers") {
        Some(servers) => mcp_servers::entries(context, servers, "mcpServers"),
        None => Ok(Vec::new()),
    }
}
