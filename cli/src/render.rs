//! Human-readable text for each command's result (the `--json` output is the protocol types' own JSON).

use corral_client::ClientNotification;
use corral_client::protocol::{
    DaemonNotification, DaemonStatus, McpServerStatus, ServerItem, ServerSkill, ServerTool, SkillsReadResult,
};
use serde::Serialize;
use serde_json::Value;

use crate::table::{Table, key_values, one_line};

/// `text` safe to write to a terminal: without control characters but line breaks and tabs
/// (what servers write, tool results, skill files, log lines, error messages, could move the
/// cursor, retitle the window or rewrite the screen with escape sequences, C1 controls
/// included). Borrowed when there is nothing to remove.
pub(crate) fn terminal_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if text.contains(unsafe_char) {
        std::borrow::Cow::Owned(text.chars().filter(|c| !unsafe_char(*c)).collect())
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The DETAIL column is cut here; `corral get NAME` shows the whole text.
const DETAIL_MAX_CHARS: usize = 120;

/// The wire name of a protocol enum value, e.g. `streamableHttp`.
pub(crate) fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// `2d 3h`, `1h 5m`, `3m 12s`, `12s`.
pub(crate) fn duration_ms(ms: u64) -> String {
    let seconds = ms / 1000;
    let (days, hours, minutes, secs) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {secs}s")
    } else {
        format!("{secs}s")
    }
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

/// `corral status`.
pub(crate) fn status(status: &DaemonStatus) -> String {
    let daemon = &status.daemon_info;
    let config = if status.config_file_exists {
        status.config_path.clone()
    } else {
        format!("{} (does not exist: no servers configured)", status.config_path)
    };
    let mut pairs = vec![
        (
            "daemon",
            format!("{} {} (pid {})", daemon.name, daemon.version, daemon.pid),
        ),
        ("uptime", duration_ms(status.uptime_ms)),
        ("socket", status.socket_path.clone()),
        ("config", config),
    ];
    if let Some(error) = &status.config_error {
        pairs.push(("config error", one_line(error, usize::MAX)));
    }
    if let Some(error) = &status.children_record_error {
        pairs.push(("record error", one_line(error, usize::MAX)));
    }
    if let Some(store) = &status.credentials_store {
        let mut line = format!("{} ({}, mode {})", store.backend.as_str(), store.location, store.mode);
        if let Some(note) = &store.note {
            line.push_str(&format!("; {note}"));
        }
        pairs.push(("credentials", line));
    }
    if let Some(endpoint) = &status.mcp_endpoint {
        let line = match (&endpoint.url, &endpoint.error) {
            (Some(url), _) => format!("{url} (`corral mcp url` prints the header it needs)"),
            (None, Some(error)) => format!("not served: {}", one_line(error, usize::MAX)),
            (None, None) => "not served".to_owned(),
        };
        pairs.push(("mcp endpoint", line));
    }
    pairs.push(("servers", status.servers.to_string()));
    let connections = match status.max_connections {
        Some(max) => format!("{} (at most {max})", status.connections),
        None => status.connections.to_string(),
    };
    pairs.push(("connections", connections));
    if let Some(refused) = status.refused_connections.filter(|refused| *refused > 0) {
        pairs.push((
            "refused",
            format!("{refused} connections since start (the cap was reached)"),
        ));
    }
    if let Some(dropped) = status.dropped_progress.filter(|dropped| *dropped > 0) {
        pairs.push((
            "dropped",
            format!("{dropped} progress notifications since start (front-ends that did not read them in time)"),
        ));
    }
    pairs.push(("last event", status.last_seq.to_string()));
    key_values(&pairs)
}

/// Failure reason and error of a server, or `disabled`.
fn detail(server: &McpServerStatus) -> String {
    let mut parts = Vec::new();
    if !server.enabled {
        parts.push("disabled".to_owned());
    }
    match (&server.failure_reason, &server.error) {
        (Some(reason), Some(error)) => parts.push(format!("{}: {error}", wire_name(reason))),
        (Some(reason), None) => parts.push(wire_name(reason)),
        (None, Some(error)) => parts.push(error.clone()),
        (None, None) => {}
    }
    parts.join("; ")
}

/// `corral list`.
pub(crate) fn server_table(servers: &[McpServerStatus]) -> String {
    if servers.is_empty() {
        return "no MCP servers (add them to the config file; check it with `corral config check`)\n".to_owned();
    }
    let mut table = Table::new(&["NAME", "TRANSPORT", "ORIGIN", "STATUS", "TOOLS", "PID", "DETAIL"]);
    for server in servers {
        table.row(vec![
            server.name.clone(),
            wire_name(&server.transport),
            wire_name(&server.origin),
            server.status.to_string(),
            or_dash(server.tool_count),
            or_dash(server.pid),
            one_line(&detail(server), DETAIL_MAX_CHARS),
        ]);
    }
    table.render()
}

/// `corral get NAME`: every field.
pub(crate) fn server_details(server: &McpServerStatus) -> String {
    let server_info = server.server_info.as_ref().map(|info| {
        let mut text = format!("{} {}", info.name, info.version);
        if let Some(title) = &info.title {
            text.push_str(&format!(" \"{title}\""));
        }
        if let Some(protocol) = &info.protocol_version {
            text.push_str(&format!(" (MCP {protocol})"));
        }
        text
    });
    let pairs = [
        ("name", server.name.clone()),
        ("status", server.status.to_string()),
        ("enabled", if server.enabled { "yes" } else { "no" }.to_owned()),
        ("transport", wire_name(&server.transport)),
        ("origin", wire_name(&server.origin)),
        ("pid", or_dash(server.pid)),
        ("tools", or_dash(server.tool_count)),
        ("uptime", or_dash(server.uptime_ms.map(duration_ms))),
        ("restarts", server.restart_count.to_string()),
        ("server info", or_dash(server_info)),
        ("failure reason", or_dash(server.failure_reason.as_ref().map(wire_name))),
        (
            "auth",
            match (&server.auth_status, &server.auth_error) {
                (_, Some(error)) => format!("unknown: {}", one_line(error, usize::MAX)),
                (Some(status), None) => status.as_str().to_owned(),
                (None, None) => "-".to_owned(),
            },
        ),
        ("error", or_dash(server.error.as_ref())),
        ("last exit", or_dash(server.last_exit.as_ref())),
    ];
    let mut text = key_values(&pairs);
    if !server.stderr_tail.is_empty() {
        text.push_str("stderr (most recent last):\n");
        for line in &server.stderr_tail {
            text.push_str(&format!("  {}\n", one_line(line, 200)));
        }
    }
    text
}

/// `corral tools`: one row per tool.
pub(crate) fn tool_table(tools: &[ServerTool]) -> String {
    if tools.is_empty() {
        return "no tools (no server is ready, or they offer none)\n".to_owned();
    }
    let mut table = Table::new(&["SERVER", "TOOL", "DESCRIPTION"]);
    for tool in tools {
        let description = tool.tool.get("description").and_then(Value::as_str).unwrap_or("");
        table.row(vec![
            tool.server.clone(),
            tool.name().unwrap_or("?").to_owned(),
            one_line(description.lines().next().unwrap_or(""), 80),
        ]);
    }
    table.render()
}

/// `corral resources|prompts`: one row per item: server, the `key` field, description.
pub(crate) fn item_table(items: &[ServerItem], header: &str, key: &str) -> String {
    if items.is_empty() {
        return "none (no ready server offers any)\n".to_owned();
    }
    let mut table = Table::new(&["SERVER", header, "DESCRIPTION"]);
    for item in items {
        let field = |name: &str| item.item.get(name).and_then(Value::as_str).unwrap_or("");
        let description = match field("description") {
            "" => field("name"),
            description => description,
        };
        table.row(vec![
            item.server.clone(),
            field(key).to_owned(),
            one_line(description.lines().next().unwrap_or(""), 80),
        ]);
    }
    table.render()
}

/// `corral skills`: one row per skill; the URI tells apart two skills of one name.
pub(crate) fn skill_table(skills: &[ServerSkill]) -> String {
    if skills.is_empty() {
        return "none (no ready server offers skills)\n".to_owned();
    }
    let mut table = Table::new(&["SERVER", "SKILL", "URI", "DESCRIPTION"]);
    for skill in skills {
        let description = skill
            .skill
            .get("frontmatter")
            .and_then(|frontmatter| frontmatter.get("description"))
            .and_then(Value::as_str)
            .unwrap_or("");
        table.row(vec![
            skill.server.clone(),
            skill.name.clone().unwrap_or_else(|| "?".to_owned()),
            skill.uri.clone().unwrap_or_else(|| "?".to_owned()),
            one_line(description.lines().next().unwrap_or(""), 80),
        ]);
    }
    table.render()
}

/// `corral skills read`: a text file as it is, a binary one described.
pub(crate) fn skill_file(file: &SkillsReadResult) -> String {
    match &file.text {
        Some(text) if text.ends_with('\n') => text.clone(),
        Some(text) => format!("{text}\n"),
        None => format!(
            "[{}: {}, {} bytes; use --json for the data]\n",
            file.uri,
            file.mime_type.as_deref().unwrap_or("?"),
            file.size
        ),
    }
}

/// `corral read`: text contents as they are, binary contents described.
pub(crate) fn resource_contents(result: &Value) -> String {
    let mut out = String::new();
    for content in result.get("contents").and_then(Value::as_array).into_iter().flatten() {
        match content.get("text").and_then(Value::as_str) {
            Some(text) => out.push_str(text),
            None => {
                let uri = content.get("uri").and_then(Value::as_str).unwrap_or("?");
                let mime = content.get("mimeType").and_then(Value::as_str).unwrap_or("?");
                let size = content
                    .get("blob")
                    .and_then(Value::as_str)
                    .map_or(0, |blob| blob.len() * 3 / 4);
                out.push_str(&format!("[{uri}: {mime}, about {size} bytes; use --json for the data]"));
            }
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// `corral call`: the result's content, readably; `--json` prints it raw.
pub(crate) fn call_result(result: &Value) -> String {
    let mut out = String::new();
    let content = result
        .get("content")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for block in &content {
        let kind = block.get("type").and_then(Value::as_str).unwrap_or("?");
        let line = match kind {
            "text" => block.get("text").and_then(Value::as_str).unwrap_or("").to_owned(),
            "image" | "audio" => {
                let mime = block.get("mimeType").and_then(Value::as_str).unwrap_or("?");
                let size = block
                    .get("data")
                    .and_then(Value::as_str)
                    .map_or(0, |data| data.len() * 3 / 4);
                format!("[{kind} {mime}, about {size} bytes]")
            }
            "resource_link" => {
                let uri = block.get("uri").and_then(Value::as_str).unwrap_or("?");
                format!("[resource link {uri}]")
            }
            "resource" => {
                let resource = block.get("resource").cloned().unwrap_or_default();
                match resource.get("text").and_then(Value::as_str) {
                    Some(text) => text.to_owned(),
                    None => format!(
                        "[resource {}]",
                        resource.get("uri").and_then(Value::as_str).unwrap_or("?")
                    ),
                }
            }
            other => format!("[{other} content]"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    // Structured content is shown only when there is no readable content.
    if let Some(structured) = result.get("structuredContent").filter(|value| !value.is_null())
        && content.is_empty()
    {
        out.push_str(&serde_json::to_string_pretty(structured).unwrap_or_default());
        out.push('\n');
    }
    if result.get("isError").and_then(Value::as_bool) == Some(true) {
        out.insert_str(0, "tool error:\n");
    }
    out
}

/// `corral events`: one line per notification.
pub(crate) fn notification(notification: &ClientNotification) -> String {
    match notification {
        ClientNotification::Daemon(DaemonNotification::StartupStatusUpdated(update)) => {
            let mut line = format!("[{}] {}: {}", update.seq, update.name, update.status);
            match (&update.failure_reason, &update.error) {
                (Some(reason), Some(error)) => {
                    line.push_str(&format!(" ({}: {})", wire_name(reason), one_line(error, usize::MAX)));
                }
                (Some(reason), None) => line.push_str(&format!(" ({})", wire_name(reason))),
                (None, Some(error)) => {
                    line.push_str(&format!(" ({})", one_line(error, usize::MAX)));
                }
                (None, None) => {}
            }
            line
        }
        ClientNotification::Lagged(lagged) => format!(
            "[lagged] corrald could not deliver {} notifications (seq {}..={}); see them with `corral events --since {}`",
            lagged.missed,
            lagged.first_missed_seq,
            lagged.last_missed_seq,
            lagged.first_missed_seq.saturating_sub(1)
        ),
        ClientNotification::Daemon(DaemonNotification::ToolsListChanged(change)) => {
            format!(
                "[{}] {}: tools changed ({} tools)",
                change.seq, change.name, change.tool_count
            )
        }
        ClientNotification::Daemon(DaemonNotification::ResourcesListChanged(change)) => {
            format!("[{}] {}: resources changed", change.seq, change.name)
        }
        ClientNotification::Daemon(DaemonNotification::PromptsListChanged(change)) => {
            format!("[{}] {}: prompts changed", change.seq, change.name)
        }
        ClientNotification::Daemon(DaemonNotification::ServerLog(log)) => {
            let message = match &log.data {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let logger = log
                .logger
                .as_deref()
                .map(|logger| format!(" {logger}"))
                .unwrap_or_default();
            format!(
                "[{}] {}: log {}{logger}: {}",
                log.seq,
                log.name,
                log.level,
                one_line(&message, 300)
            )
        }
        ClientNotification::Daemon(DaemonNotification::ResourceUpdated(update)) => {
            format!("[{}] {}: resource updated: {}", update.seq, update.name, update.uri)
        }
        ClientNotification::Daemon(DaemonNotification::ConfigReloaded(reloaded)) => {
            format!(
                "[{}] config reloaded ({}): {}",
                reloaded.seq,
                trigger_name(reloaded.trigger),
                reload_summary(
                    &reloaded.added,
                    &reloaded.removed,
                    &reloaded.changed,
                    &reloaded.warnings
                )
            )
        }
        ClientNotification::Daemon(DaemonNotification::ConfigReloadFailed(failed)) => format!(
            "[{}] config not reloaded ({}), the running config stays: {}",
            failed.seq,
            trigger_name(failed.trigger),
            failed.error.lines().collect::<Vec<_>>().join(" | ")
        ),
        ClientNotification::Daemon(DaemonNotification::OauthLoginCompleted(done)) => match &done.error {
            None => format!("[{}] {}: OAuth login succeeded", done.seq, done.name),
            Some(error) => format!(
                "[{}] {}: OAuth login failed: {}",
                done.seq,
                done.name,
                one_line(error, 300)
            ),
        },
        ClientNotification::Daemon(DaemonNotification::ServerNotification(sent)) => {
            let params = sent
                .params
                .as_ref()
                .map(|params| format!(": {}", one_line(&params.to_string(), 300)))
                .unwrap_or_default();
            format!("[{}] {}: notification {}{params}", sent.seq, sent.server, sent.method)
        }
        other => format!("[?] {}", other.method()),
    }
}

fn trigger_name(trigger: corral_client::protocol::ReloadTrigger) -> String {
    serde_json::to_value(trigger)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// `added a, b; removed c; changed d` or `nothing changed`.
fn reload_summary(added: &[String], removed: &[String], changed: &[String], warnings: &[String]) -> String {
    let mut parts = Vec::new();
    for (label, names) in [("added", added), ("removed", removed), ("changed", changed)] {
        if !names.is_empty() {
            parts.push(format!("{label} {}", names.join(", ")));
        }
    }
    if parts.is_empty() {
        parts.push("nothing changed".to_owned());
    }
    let mut summary = parts.join("; ");
    for warning in warnings {
        summary.push_str(&format!("; warning: {warning}"));
    }
    summary
}

/// `corral config reload`.
pub(crate) fn config_reload(result: &corral_client::protocol::ConfigReloadResult) -> String {
    if result.applied {
        format!(
            "reloaded: {}\n",
            reload_summary(&result.added, &result.removed, &result.changed, &result.warnings)
        )
    } else {
        format!(
            "not reloaded, the running config stays:\n{}\n",
            result.error.as_deref().unwrap_or("unknown error")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use corral_client::protocol::{
        DaemonInfo, EventsLagged, FailureReason, McpServerListResult, ServerCounts, ServerStatus, StartupStatusUpdated,
    };

    fn example_servers() -> Vec<McpServerStatus> {
        let path = format!(
            "{}/../protocol/examples/mcp-server-list.response.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("read example");
        let response: serde_json::Value = serde_json::from_str(&text).expect("parse example");
        let result: McpServerListResult = serde_json::from_value(response["result"].clone()).expect("decode example");
        result.servers
    }

    #[test]
    fn reload_notifications_and_results_say_what_changed() {
        use corral_client::protocol::{ConfigReloadFailed, ConfigReloadResult, ConfigReloaded, ReloadTrigger};
        let reloaded = ConfigReloaded::new(
            7,
            "/c.toml",
            ReloadTrigger::File,
            vec!["a".to_owned()],
            vec![],
            vec!["b".to_owned(), "c".to_owned()],
            vec!["server `x` was not started".to_owned()],
        );
        assert_eq!(
            notification(&ClientNotification::Daemon(DaemonNotification::ConfigReloaded(
                reloaded.clone()
            ))),
            "[7] config reloaded (file): added a; changed b, c; warning: server `x` was not started"
        );
        let failed = ConfigReloadFailed::new(
            8,
            "/c.toml",
            ReloadTrigger::Signal,
            "/c.toml:1:1: one\n/c.toml:2:1: two",
        );
        assert_eq!(
            notification(&ClientNotification::Daemon(DaemonNotification::ConfigReloadFailed(
                failed.clone()
            ))),
            "[8] config not reloaded (signal), the running config stays: /c.toml:1:1: one | /c.toml:2:1: two"
        );
        assert_eq!(
            config_reload(&ConfigReloadResult::applied(&ConfigReloaded::new(
                9,
                "/c.toml",
                ReloadTrigger::Request,
                vec![],
                vec![],
                vec![],
                vec![]
            ))),
            "reloaded: nothing changed\n"
        );
        assert_eq!(
            config_reload(&ConfigReloadResult::failed(&failed)),
            "not reloaded, the running config stays:\n/c.toml:1:1: one\n/c.toml:2:1: two\n"
        );
    }

    #[test]
    fn list_shows_one_row_per_server_with_detail() {
        let text = server_table(&example_servers());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["NAME", "TRANSPORT", "ORIGIN", "STATUS", "TOOLS", "PID", "DETAIL"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["filesystem", "stdio", "config", "ready", "14", "4311"]
        );
        assert!(
            lines[2].starts_with("github") && lines[2].ends_with("disabled"),
            "{text}"
        );
        assert!(lines[3].contains("streamableHttp"), "{text}");
        assert!(
            lines[3].contains("reauthenticationRequired: stored OAuth credentials"),
            "{text}"
        );
    }

    #[test]
    fn an_empty_list_says_so() {
        assert!(server_table(&[]).starts_with("no MCP servers"));
    }

    #[test]
    fn get_shows_every_field() {
        let servers = example_servers();
        let text = server_details(&servers[0]);
        for expected in [
            "name:",
            "filesystem",
            "status:",
            "ready",
            "pid:",
            "4311",
            "tools:",
            "14",
            "uptime:",
            "1m 33s",
            "secure-filesystem-server 0.2.0 (MCP 2025-11-25)",
            "failure reason:",
            "error:",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn status_names_daemon_socket_config_and_counts() {
        let mut counts = ServerCounts::default();
        counts.add(ServerStatus::Ready);
        counts.add(ServerStatus::Failed);
        let daemon_status = DaemonStatus::new(
            DaemonInfo::new("0.1.0", 4242),
            3_723_000,
            "/run/user/1000/corral/corral.sock".into(),
            "/home/ada/.config/corral/config.toml".into(),
            false,
            counts,
            2,
            18,
        );
        let text = status(&daemon_status);
        for expected in [
            "corrald 0.1.0 (pid 4242)",
            "1h 2m",
            "/run/user/1000/corral/corral.sock",
            "config.toml (does not exist",
            "2 servers: 1 ready, 1 failed",
            "connections:",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(
            !text.contains("at most"),
            "a daemon that does not say has no cap shown:\n{text}"
        );

        let quiet = daemon_status
            .clone()
            .with_connection_limit(896, 0)
            .with_dropped_progress(0);
        let text = status(&quiet);
        assert!(text.contains("2 (at most 896)"), "{text}");
        assert!(!text.contains("refused"), "no refusals, no line:\n{text}");
        assert!(!text.contains("dropped"), "nothing dropped, no line:\n{text}");

        let overloaded = daemon_status.with_connection_limit(896, 7).with_dropped_progress(120);
        let text = status(&overloaded);
        assert!(text.contains("refused:"), "{text}");
        assert!(text.contains("7 connections since start"), "{text}");
        assert!(text.contains("120 progress notifications"), "{text}");
    }

    #[test]
    fn notification_lines() {
        let ready = ClientNotification::Daemon(DaemonNotification::StartupStatusUpdated(StartupStatusUpdated::new(
            3,
            "github",
            ServerStatus::Ready,
        )));
        assert_eq!(notification(&ready), "[3] github: ready");
        let failed =
            ClientNotification::Daemon(DaemonNotification::StartupStatusUpdated(StartupStatusUpdated::failed(
                18,
                "linear",
                FailureReason::ReauthenticationRequired,
                "log in again\nwith corral login",
            )));
        assert_eq!(
            notification(&failed),
            "[18] linear: failed (reauthenticationRequired: log in again; with corral login)"
        );
        let lagged = ClientNotification::Lagged(EventsLagged::new(250, 1001));
        assert_eq!(
            notification(&lagged),
            "[lagged] corrald could not deliver 250 notifications (seq 1001..=1250); \
             see them with `corral events --since 1000`"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms(850), "0s");
        assert_eq!(duration_ms(93_000), "1m 33s");
        assert_eq!(duration_ms(3_600_000), "1h 0m");
        assert_eq!(duration_ms(2 * 86_400_000 + 3 * 3_600_000), "2d 3h");
    }

    #[test]
    fn a_servers_escape_sequences_never_reach_the_terminal() {
        let hostile = "title\u{1b}]0;pwned\u{7}\r\nred \u{1b}[31mtext\u{9b}2J\u{7f}\tend\n";
        assert_eq!(terminal_safe(hostile), "title]0;pwned\nred [31mtext2J\tend\n");
        assert!(matches!(terminal_safe("plain\ttext\n"), std::borrow::Cow::Borrowed(_)));
    }
}
