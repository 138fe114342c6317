//! The JSON server entry most clients share: `command`/`args`/`env` for stdio,
//! `type`/`url`/`headers` for HTTP, as Claude Desktop, Claude Code, Cursor and
//! VS Code write it (under `mcpServers` or `servers`). Each client's module
//! says where the entries are and how its variables look; this one maps the
//! fields, so a field means the same thing whichever client wrote it.

use super::draft::{Context, ServerDraft};
use super::jsonc::{Kind, Member, Value};

/// Every entry of the object `servers` (`mcpServers` or `servers`), as drafts.
pub(crate) fn entries(context: &Context, servers: &Value, container: &str) -> Result<Vec<ServerDraft>, String> {
    let Some(members) = servers.members() else {
        return Err(format!(
            "`{container}` is {}, expected an object of servers",
            servers.describe()
        ));
    };
    Ok(members.iter().map(|member| entry(context, member)).collect())
}

/// One entry.
pub(crate) fn entry(context: &Context, member: &Member) -> ServerDraft {
    let mut draft = ServerDraft::new(&member.key);
    let Some(fields) = member.value.members() else {
        draft.mark_unusable(format!("the entry is {}, expected an object", member.value.describe()));
        return draft;
    };
    let transport = member.value.get("type").and_then(Value::as_str);
    match transport {
        None | Some("stdio" | "http" | "streamable-http" | "streamableHttp" | "streamable_http") => {}
        Some("sse") => draft.note(
            Some("type"),
            "`sse` is the legacy HTTP+SSE transport; Corral speaks streamable HTTP, which the server must offer too \
             (often at a URL ending in `/mcp` instead of `/sse`)",
        ),
        Some(other) => draft.mark_unusable(format!("type `{other}` is not a transport Corral supports")),
    }
    for field in fields {
        let name = field.key.as_str();
        let value = &field.value;
        match name {
            "type" => {}
            "command" => match value.as_str() {
                Some(command) => draft.server.command = Some(draft.text(context, "command", command)),
                None => draft.mark_unusable(format!("`command` is {}, expected a string", value.describe())),
            },
            "args" => match strings(value) {
                Some(args) => draft.args(context, "args", &args),
                None => draft.mark_unusable(format!("`args` is {}, expected an array of strings", value.describe())),
            },
            "env" => each_pair(&mut draft, "env", value, |draft, key, item| {
                draft.env(context, "env", key, item);
            }),
            "cwd" => match value.as_str() {
                Some(cwd) => draft.server.cwd = Some(draft.text(context, "cwd", cwd)),
                None => draft.not_mapped("cwd", "not a string"),
            },
            "url" => match value.as_str() {
                Some(url) => draft.url(context, "url", url),
                None => draft.mark_unusable(format!("`url` is {}, expected a string", value.describe())),
            },
            "headers" => each_pair(&mut draft, "headers", value, |draft, key, item| {
                draft.header(context, "headers", key, item);
            }),
            "oauth" => oauth(&mut draft, value),
            "auth" => cursor_auth(&mut draft, value),
            "disabled" => match value.kind {
                Kind::Bool(disabled) => draft.server.enabled = Some(!disabled),
                _ => draft.not_mapped("disabled", "not a boolean"),
            },
            "enabled" => match value.kind {
                Kind::Bool(enabled) => draft.server.enabled = Some(enabled),
                _ => draft.not_mapped("enabled", "not a boolean"),
            },
            "envFile" => draft.not_mapped(
                "envFile",
                "Corral reads no env file: set the variables in corrald's environment and list them in `env_vars`",
            ),
            "headersHelper" => draft.not_mapped(
                "headersHelper",
                "Corral runs no command to make headers: put the value in a variable of corrald's environment and name it in `env_http_headers`",
            ),
            "autoApprove" | "alwaysAllow" => draft.not_mapped(
                name,
                "Corral does not ask before tool calls; the client that calls through Corral still decides",
            ),
            "sandboxEnabled" | "sandbox" => {
                draft.not_mapped(name, "Corral does not sandbox servers; it runs them as its own user");
            }
            "dev" => draft.not_mapped(name, "VS Code's development mode (watch and debug) has no equivalent in Corral"),
            _ => draft.not_mapped(name, "not a field Corral has an equivalent for"),
        }
    }
    if draft.unusable.is_none() && draft.server.command.is_none() && draft.server.url.is_none() {
        draft.mark_unusable("it has neither `command` nor `url`");
    }
    if draft.server.command.is_some() && draft.server.url.is_some() {
        draft.mark_unusable("it has both `command` and `url`");
    }
    draft
}

/// `oauth: {clientId, clientSecret, callbackPort, …}` (Claude Code, VS Code).
fn oauth(draft: &mut ServerDraft, value: &Value) {
    let Some(fields) = value.members() else {
        draft.not_mapped("oauth", "not an object");
        return;
    };
    for field in fields {
        let name = format!("oauth.{}", field.key);
        match (field.key.as_str(), field.value.as_str()) {
            ("clientId", Some(client_id)) => draft.server.oauth_client_id = Some(client_id.to_owned()),
            ("clientSecret", Some(secret)) => draft.oauth_client_secret(&name, secret),
            ("callbackPort", _) => draft.not_mapped(
                &name,
                "Corral has one OAuth callback port for every server: `oauth_callback_port` at the top of its config",
            ),
            _ => draft.not_mapped(&name, "not a field Corral has an equivalent for"),
        }
    }
}

/// Cursor's static OAuth client: `auth: {CLIENT_ID, CLIENT_SECRET, scopes}`.
fn cursor_auth(draft: &mut ServerDraft, value: &Value) {
    let Some(fields) = value.members() else {
        draft.not_mapped("auth", "not an object");
        return;
    };
    for field in fields {
        let name = format!("auth.{}", field.key);
        match (field.key.as_str(), field.value.as_str()) {
            ("CLIENT_ID", Some(client_id)) => draft.server.oauth_client_id = Some(client_id.to_owned()),
            ("CLIENT_SECRET", Some(secret)) => draft.oauth_client_secret(&name, secret),
            ("scopes", _) => match strings(&field.value) {
                Some(scopes) => draft.server.scopes = Some(scopes),
                None => draft.not_mapped(&name, "not an array of strings"),
            },
            _ => draft.not_mapped(&name, "not a field Corral has an equivalent for"),
        }
    }
}

/// An array of strings (numbers and booleans taken as written).
pub(crate) fn strings(value: &Value) -> Option<Vec<String>> {
    let Kind::Array(items) = &value.kind else {
        return None;
    };
    items
        .iter()
        .map(|item| match &item.kind {
            Kind::String(text) => Some(text.clone()),
            Kind::Number(number) => Some(number.clone()),
            Kind::Bool(flag) => Some(flag.to_string()),
            _ => None,
        })
        .collect()
}

/// An object's members as `(key, Some(text))`, numbers and booleans as written, `None` for others.
/// Each string member of the object `value` (field `field`) handed to
/// `apply`; a member that is not a string, or a `value` that is not an
/// object, is named as not mapped.
pub(crate) fn each_pair(
    draft: &mut ServerDraft,
    field: &str,
    value: &Value,
    mut apply: impl FnMut(&mut ServerDraft, &str, &str),
) {
    match string_pairs(value) {
        Some(pairs) => {
            for (key, item) in pairs {
                match item {
                    Some(item) => apply(draft, &key, &item),
                    None => draft.not_mapped(&format!("{field}.{key}"), "not a string"),
                }
            }
        }
        None => draft.not_mapped(field, "not an object"),
    }
}

pub(crate) fn string_pairs(value: &Value) -> Option<Vec<(String, Option<String>)>> {
    let members = value.members()?;
    Some(
        members
            .iter()
            .map(|member| {
                let text = match &member.value.kind {
                    Kind::String(text) => Some(text.clone()),
                    Kind::Number(number) => Some(number.clone()),
                    Kind::Bool(flag) => Some(flag.to_string()),
                    _ => None,
                };
                (member.key.clone(), text)
            })
            .collect(),
    )
}
