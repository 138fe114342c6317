//! Claude Code: `~/.claude.json`, with the user's servers under `mcpServers`
//! and each project's own (the "local" scope) under
//! `projects.<directory>.mcpServers`; or a project's `.mcp.json`, servers under
//! `mcpServers`. Entries have `type` (`stdio`, `http`, `sse`), and values may
//! use `${VAR}` and `${VAR:-default}`.
//!
//! Claude Code starts a project's servers in the project directory, so a
//! project's stdio servers get that directory as `cwd` (said in a note).

use std::path::Path;

use super::draft::{Context, ServerDraft};
use super::jsonc::Value;
use super::mcp_servers;

pub(crate) fn servers(context: &Context, root: &Value, file: &Path) -> Result<Vec<ServerDraft>, String> {
    let mut drafts = match root.get("mcpServers") {
        Some(servers) => mcp_servers::entries(context, servers, "mcpServers")?,
        None => Vec::new(),
    };
    if let Some(projects) = root.get("projects") {
        let Some(projects) = projects.members() else {
            return Err(format!("`projects` is {}, expected an object", projects.describe()));
        };
        for project in projects {
            let Some(servers) = project.value.get("mcpServers") else {
                continue;
            };
            let container = format!("projects.{}.mcpServers", project.key);
            for mut draft in mcp_servers::entries(context, servers, &container)? {
                draft.note(
                    None,
                    format!("from project `{}` (Claude Code's local scope)", project.key),
                );
                draft.project = Some(project.key.clone());
                in_directory(&mut draft, &project.key);
                drafts.push(draft);
            }
        }
    } else if file.file_name().is_some_and(|name| name == ".mcp.json") {
        // A project's shared servers: they run in the directory of the file.
        if let Some(directory) = file.parent().and_then(|parent| std::path::absolute(parent).ok()) {
            let directory = directory.to_string_lossy().into_owned();
            for draft in &mut drafts {
                in_directory(draft, &directory);
            }
        }
    }
    Ok(drafts)
}

/// A stdio server without `cwd` runs in the project directory, as Claude Code runs it.
fn in_directory(draft: &mut ServerDraft, directory: &str) {
    if draft.server.command.is_some() && draft.server.cwd.is_none() {
        draft.server.cwd = Some(directory.to_owned());
        draft.note(
            Some("cwd"),
            format!("set to `{directory}`: Claude Code starts the server in the project directory"),
        );
    }
}
