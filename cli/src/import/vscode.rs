//! VS Code: an `mcp.json` (a workspace's `.vscode/mcp.json` or the user
//! profile's) with `servers` and `inputs`, or the user `settings.json` with
//! `mcp.servers`. Values may use `${input:ID}` (VS Code asks the user, and
//! keeps the answer in its secret storage), `${env:NAME}`, `${userHome}` and
//! `${workspaceFolder}`. A value VS Code asks for becomes a variable of
//! corrald's environment.

use super::draft::{Context, ServerDraft};
use super::jsonc::Value;
use super::mcp_servers;

pub(crate) fn servers(context: &Context, root: &Value) -> Result<Vec<ServerDraft>, String> {
    if let Some(servers) = root.get("servers") {
        return mcp_servers::entries(context, servers, "servers");
    }
    match root.get("mcp").and_then(|mcp| mcp.get("servers")) {
        Some(servers) => mcp_servers::entries(context, servers, "mcp.servers"),
        None => Ok(Vec::new()),
    }
}
