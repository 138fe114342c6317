//! Codex: `~/.codex/config.toml` (or `$CODEX_HOME/config.toml`, or a
//! project's `.codex/config.toml`), servers as `[mcp_servers.NAME]`. Corral's
//! format took Codex's field names, so most fields carry over as they are;
//! an inline `bearer_token` and secret-looking `http_headers` and `env` values
//! become variables, and `startup_timeout_ms` becomes seconds.

use toml_edit::{Item, TableLike};

use super::draft::{Context, ServerDraft};

pub(crate) fn servers(context: &Context, document: &toml_edit::DocumentMut) -> Result<Vec<ServerDraft>, String> {
    let Some(servers) = document.get("mcp_servers") else {
        return Ok(Vec::new());
    };
    let Some(servers) = servers.as_table_like() else {
        return Err(format!(
            "`mcp_servers` is {}, expected a table of servers",
            servers.type_name()
        ));
    };
    Ok(servers.iter().map(|(name, item)| entry(context, name, item)).collect())
}

fn entry(context: &Context, name: &str, item: &Item) -> ServerDraft {
    let mut draft = ServerDraft::new(name);
    let Some(fields) = item.as_table_like() else {
        draft.mark_unusable(format!("the entry is {}, expected a table", item.type_name()));
        return draft;
    };
    for (field, value) in fields.iter() {
        match field {
            "command" => match value.as_str() {
                Some(command) => draft.server.command = Some(command.to_owned()),
                None => draft.mark_unusable(format!("`command` is {}, expected a string", value.type_name())),
            },
            "args" => match strings(value) {
                Some(args) => draft.args(context, "args", &args),
                None => draft.mark_unusable(format!("`args` is {}, expected an array of strings", value.type_name())),
            },
            "env" => match pairs(value) {
                Some(pairs) => {
                    for (key, item) in pairs {
                        draft.env(context, "env", &key, &item);
                    }
                }
                None => draft.not_mapped("env", "not a table of strings"),
            },
            "env_vars" => env_vars(&mut draft, value),
            "cwd" => match value.as_str() {
                Some(cwd) => draft.server.cwd = Some(cwd.to_owned()),
                None => draft.not_mapped("cwd", "not a string"),
            },
            "url" => match value.as_str() {
                Some(url) => draft.url(context, "url", url),
                None => draft.mark_unusable(format!("`url` is {}, expected a string", value.type_name())),
            },
            "bearer_token" => match value.as_str() {
                Some(token) => draft.bearer_token("bearer_token", token),
                None => draft.not_mapped("bearer_token", "not a string"),
            },
            "bearer_token_env_var" => match value.as_str() {
                Some(variable) => draft.server.bearer_token_env_var = Some(variable.to_owned()),
                None => draft.not_mapped("bearer_token_env_var", "not a string"),
            },
            "http_headers" => match pairs(value) {
                Some(pairs) => {
                    for (key, item) in pairs {
                        draft.header(context, "http_headers", &key, &item);
                    }
                }
                None => draft.not_mapped("http_headers", "not a table of strings"),
            },
            "env_http_headers" => match pairs(value) {
                Some(pairs) => draft.server.env_http_headers.extend(pairs),
                None => draft.not_mapped("env_http_headers", "not a table of strings"),
            },
            "enabled" => match value.as_bool() {
                Some(enabled) => draft.server.enabled = Some(enabled),
                None => draft.not_mapped("enabled", "not a boolean"),
            },
            "startup_timeout_sec" => match seconds(value) {
                Some(seconds) => draft.server.startup_timeout_sec = Some(seconds),
                None => draft.not_mapped("startup_timeout_sec", "not a positive number"),
            },
            "startup_timeout_ms" => match seconds(value) {
                Some(milliseconds) => {
                    draft.server.startup_timeout_sec = Some(milliseconds / 1000.0);
                    draft.note(Some("startup_timeout_ms"), "written as `startup_timeout_sec`");
                }
                None => draft.not_mapped("startup_timeout_ms", "not a positive number"),
            },
            "tool_timeout_sec" => match seconds(value) {
                Some(seconds) => draft.server.tool_timeout_sec = Some(seconds),
                None => draft.not_mapped("tool_timeout_sec", "not a positive number"),
            },
            "enabled_tools" => match strings(value) {
                Some(tools) => draft.server.enabled_tools = Some(tools),
                None => draft.not_mapped("enabled_tools", "not an array of strings"),
            },
            "disabled_tools" => match strings(value) {
                Some(tools) => draft.server.disabled_tools = Some(tools),
                None => draft.not_mapped("disabled_tools", "not an array of strings"),
            },
            "scopes" => match strings(value) {
                Some(scopes) => draft.server.scopes = Some(scopes),
                None => draft.not_mapped("scopes", "not an array of strings"),
            },
            "oauth_resource" => match value.as_str() {
                Some(resource) => draft.server.oauth_resource = Some(resource.to_owned()),
                None => draft.not_mapped("oauth_resource", "not a string"),
            },
            "oauth" => oauth(&mut draft, value),
            "required" => draft.not_mapped(
                "required",
                "Corral starts servers on its own; a client using Corral does not wait for one to be ready",
            ),
            "tools" => draft.not_mapped(
                "tools",
                "per-tool approval is the client's; Corral filters tools with `enabled_tools` and `disabled_tools`",
            ),
            "http_headers_helper" => draft.not_mapped(
                "http_headers_helper",
                "Corral runs no command to make headers: put the value in a variable of corrald's environment and name it in `env_http_headers`",
            ),
            _ => draft.not_mapped(field, "not a field Corral has an equivalent for"),
        }
    }
    if draft.unusable.is_none() && draft.server.command.is_none() && draft.server.url.is_none() {
        draft.mark_unusable("it has neither `command` nor `url`");
    }
    draft
}

/// `env_vars`: names, or (newer Codex) tables with a `name`.
fn env_vars(draft: &mut ServerDraft, value: &Item) {
    let Some(items) = value.as_array() else {
        draft.not_mapped("env_vars", "not an array");
        return;
    };
    for (index, item) in items.iter().enumerate() {
        let field = format!("env_vars[{index}]");
        if let Some(name) = item.as_str() {
            draft.server.env_vars.push(name.to_owned());
        } else if let Some(table) = item.as_inline_table() {
            match table.get("name").and_then(toml_edit::Value::as_str) {
                Some(name) => draft.server.env_vars.push(name.to_owned()),
                None => draft.not_mapped(&field, "a table without a `name`"),
            }
            for (key, _) in table.iter().filter(|(key, _)| *key != "name") {
                draft.not_mapped(&format!("{field}.{key}"), "not a field Corral has an equivalent for");
            }
        } else {
            draft.not_mapped(&field, "not a string");
        }
    }
}

/// `[mcp_servers.NAME.oauth]`: `client_id`; the callback port is Corral-wide.
fn oauth(draft: &mut ServerDraft, value: &Item) {
    let Some(fields) = value.as_table_like() else {
        draft.not_mapped("oauth", "not a table");
        return;
    };
    for (key, item) in fields.iter() {
        let field = format!("oauth.{key}");
        match (key, item.as_str()) {
            ("client_id", Some(client_id)) => draft.server.oauth_client_id = Some(client_id.to_owned()),
            ("client_secret", Some(secret)) => draft.oauth_client_secret(&field, secret),
            ("callback_port", _) => draft.not_mapped(
                &field,
                "Corral has one OAuth callback port for every server: `oauth_callback_port` at the top of its config",
            ),
            _ => draft.not_mapped(&field, "not a field Corral has an equivalent for"),
        }
    }
}

fn strings(item: &Item) -> Option<Vec<String>> {
    item.as_array()?
        .iter()
        .map(|value| value.as_str().map(str::to_owned))
        .collect()
}

fn pairs(item: &Item) -> Option<Vec<(String, String)>> {
    let table: &dyn TableLike = item.as_table_like()?;
    table
        .iter()
        .map(|(key, value)| value.as_str().map(|text| (key.to_owned(), text.to_owned())))
        .collect()
}

fn seconds(item: &Item) -> Option<f64> {
    let seconds = item
        .as_float()
        .or_else(|| item.as_integer().map(|whole| whole as f64))?;
    (seconds > 0.0 && seconds.is_finite()).then_some(seconds)
}
