//! Zed: `settings.json` (JSON with comments), servers under `context_servers`.
//! A custom server is `command` (a string), `args`, `env`; the older shape
//! nests them as `command: {path, args, env}` (with `source: "custom"`). A
//! remote server is `url` and `headers`. `timeout` is the tool call timeout in
//! seconds. A server provided by a Zed extension (`settings` and no command)
//! cannot be imported: the extension computes its command.

use super::draft::{Context, ServerDraft};
use super::jsonc::{Kind, Member, Value};
use super::mcp_servers::{each_pair, strings};

pub(crate) fn servers(context: &Context, root: &Value) -> Result<Vec<ServerDraft>, String> {
    let Some(servers) = root.get("context_servers") else {
        return Ok(Vec::new());
    };
    let Some(members) = servers.members() else {
        return Err(format!(
            "`context_servers` is {}, expected an object of servers",
            servers.describe()
        ));
    };
    Ok(members.iter().map(|member| entry(context, member)).collect())
}

fn entry(context: &Context, member: &Member) -> ServerDraft {
    let mut draft = ServerDraft::new(&member.key);
    let Some(fields) = member.value.members() else {
        draft.mark_unusable(format!("the entry is {}, expected an object", member.value.describe()));
        return draft;
    };
    let source = member.value.get("source").and_then(Value::as_str);
    let has_command = member.value.get("command").is_some();
    let has_url = member.value.get("url").is_some();
    if source == Some("extension") || (!has_command && !has_url && member.value.get("settings").is_some()) {
        draft.mark_unusable(
            "a Zed extension provides this server and computes its command; add the command it runs to Corral's config by hand",
        );
        return draft;
    }
    for field in fields {
        let name = field.key.as_str();
        let value = &field.value;
        match name {
            "source" => {}
            "command" => match &value.kind {
                Kind::String(command) => draft.server.command = Some(draft.text(context, "command", command)),
                // The older shape: `command: {path, args, env}`.
                Kind::Object(_) => nested_command(context, &mut draft, value),
                _ => draft.mark_unusable(format!("`command` is {}, expected a string", value.describe())),
            },
            "args" => match strings(value) {
                Some(args) => draft.args(context, "args", &args),
                None => draft.mark_unusable(format!("`args` is {}, expected an array of strings", value.describe())),
            },
            "env" => env(context, &mut draft, "env", value),
            "url" => match value.as_str() {
                Some(url) => draft.url(context, "url", url),
                None => draft.mark_unusable(format!("`url` is {}, expected a string", value.describe())),
            },
            "headers" => each_pair(&mut draft, "headers", value, |draft, key, item| {
                draft.header(context, "headers", key, item);
            }),
            "enabled" => match value.kind {
                Kind::Bool(enabled) => draft.server.enabled = Some(enabled),
                _ => draft.not_mapped("enabled", "not a boolean"),
            },
            "timeout" => match &value.kind {
                Kind::Number(seconds) => match seconds.parse::<f64>() {
                    Ok(seconds) if seconds > 0.0 => draft.server.tool_timeout_sec = Some(seconds),
                    _ => draft.not_mapped("timeout", "not a positive number of seconds"),
                },
                _ => draft.not_mapped("timeout", "not a number"),
            },
            "remote" => match value.kind {
                Kind::Bool(false) => {}
                _ => draft.not_mapped(
                    "remote",
                    "Corral runs servers on its own machine, not on a Zed remote-development host",
                ),
            },
            "oauth" => oauth(&mut draft, value),
            "settings" => {
                if value.members().is_none_or(|members| !members.is_empty()) {
                    draft.not_mapped("settings", "settings for a Zed extension; Corral passes none");
                }
            }
            _ => draft.not_mapped(name, "not a field Corral has an equivalent for"),
        }
    }
    if draft.unusable.is_none() && draft.server.command.is_none() && draft.server.url.is_none() {
        draft.mark_unusable("it has neither `command` nor `url`");
    }
    draft
}

fn nested_command(context: &Context, draft: &mut ServerDraft, command: &Value) {
    let Some(fields) = command.members() else {
        return;
    };
    for field in fields {
        let name = format!("command.{}", field.key);
        match field.key.as_str() {
            "path" => match field.value.as_str() {
                Some(path) => draft.server.command = Some(draft.text(context, &name, path)),
                None => draft.mark_unusable(format!("`{name}` is {}, expected a string", field.value.describe())),
            },
            "args" => match strings(&field.value) {
                Some(args) => draft.args(context, &name, &args),
                None => draft.mark_unusable(format!(
                    "`{name}` is {}, expected an array of strings",
                    field.value.describe()
                )),
            },
            "env" => env(context, draft, &name, &field.value),
            "timeout" => match &field.value.kind {
                Kind::Number(seconds) => match seconds.parse::<f64>() {
                    Ok(seconds) if seconds > 0.0 => draft.server.tool_timeout_sec = Some(seconds),
                    _ => draft.not_mapped(&name, "not a positive number of seconds"),
                },
                _ => draft.not_mapped(&name, "not a number"),
            },
            _ => draft.not_mapped(&name, "not a field Corral has an equivalent for"),
        }
    }
}

fn env(context: &Context, draft: &mut ServerDraft, field: &str, value: &Value) {
    if matches!(value.kind, Kind::Null) {
        return;
    }
    each_pair(draft, field, value, |draft, key, item| {
        draft.env(context, field, key, item);
    });
}

/// `oauth: {client_id, client_secret}`: a pre-registered OAuth client.
fn oauth(draft: &mut ServerDraft, value: &Value) {
    let Some(fields) = value.members() else {
        draft.not_mapped("oauth", "not an object");
        return;
    };
    for field in fields {
        let name = format!("oauth.{}", field.key);
        match (field.key.as_str(), field.value.as_str()) {
            ("client_id", Some(client_id)) => draft.server.oauth_client_id = Some(client_id.to_owned()),
            ("client_secret", Some(secret)) => draft.oauth_client_secret(&name, secret),
            _ => draft.not_mapped(&name, "not a field Corral has an equivalent for"),
        }
    }
}
