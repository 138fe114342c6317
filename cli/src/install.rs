//! `corral mcp install|uninstall --client NAME [FILE]`: the `corral` entry in
//! an MCP client's config, which makes the client run `corral mcp` (the bridge
//! to every server Corral runs) instead of its own copy of each server.
//!
//! The client's file is edited as text at the byte offsets the JSON reader
//! (`import::jsonc`) recorded, or through `toml_edit` for Codex, so
//! everything else in it (comments, key order, indentation, line endings)
//! stays as it was. Install appends the entry as the last member of the
//! servers object; uninstall's removal is the exact inverse of that edit, so
//! install then uninstall gives the same bytes back. Where the inverse is
//! ambiguous (install had to create the servers object, or the object was
//! empty), uninstall restores the backup install made, when the file is still
//! exactly what install wrote from it; if the file changed since, only the
//! `corral` entry is removed.
//!
//! Invariants: every write is atomic (temporary file, fsync, rename) and keeps
//! the file's permissions; every change is preceded by a backup next to the
//! file, `FILE.corral-<UTC timestamp>.bak` (mode 0600); nothing from the file
//! but entry names is printed (a client's file may hold tokens).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use toml_edit::{DocumentMut, Item, Table, value};

use crate::import::jsonc::{self, Kind, Member, Value};
use crate::import::{self, Client, draft::corral_name};

/// The key of the entry in the client's servers object.
pub(crate) const ENTRY_NAME: &str = "corral";

/// What `corral mcp install` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct InstallOptions {
    pub(crate) client: Client,
    pub(crate) file: Option<PathBuf>,
    /// Also remove the client's entries that are servers in Corral's config.
    pub(crate) replace: bool,
    /// Corral's config, for `--replace`.
    pub(crate) config: Option<PathBuf>,
    pub(crate) dry_run: bool,
}

/// What `corral mcp uninstall` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct UninstallOptions {
    pub(crate) client: Client,
    pub(crate) file: Option<PathBuf>,
    pub(crate) dry_run: bool,
}

/// What install or uninstall did (or would do).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Outcome {
    pub(crate) client: Client,
    pub(crate) file: PathBuf,
    pub(crate) dry_run: bool,
    /// `added`, `updated`, `unchanged`, `removed`, `restored`, `deleted`, `absent`.
    pub(crate) action: &'static str,
    /// The entry as written (install).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) entry: Option<String>,
    /// Client entries removed because Corral runs them now (`--replace`).
    pub(crate) removed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) backup: Option<PathBuf>,
    /// Where the servers object is in the file, e.g. `mcpServers`.
    pub(crate) container: String,
}

/// A JSON value as install writes it: objects keep their keys in order.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    String(String),
    Strings(Vec<String>),
    Object(Vec<(String, Json)>),
}

/// Where a client keeps its servers, and the entry that runs `corral mcp`.
#[derive(Debug, Clone)]
struct Target {
    client: Client,
    file: PathBuf,
    /// Keys from the root to the servers object (JSON clients).
    container: Vec<&'static str>,
    /// The entry's fields in order.
    entry: Vec<(String, Json)>,
}

impl Target {
    fn new(client: Client, file: Option<PathBuf>, corral: &str) -> anyhow::Result<Self> {
        let file = match file {
            Some(file) => file,
            None => client
                .default_files()?
                .into_iter()
                .next()
                .context("no default config file for this client")?,
        };
        let settings = file.file_name().is_some_and(|name| name == "settings.json");
        let container = match client {
            Client::ClaudeDesktop | Client::ClaudeCode | Client::Cursor => vec!["mcpServers"],
            Client::Vscode if settings => vec!["mcp", "servers"],
            Client::Vscode => vec!["servers"],
            Client::Zed => vec!["context_servers"],
            Client::Codex => vec!["mcp_servers"],
        };
        let mut entry = Vec::new();
        if client == Client::Vscode {
            entry.push(("type".to_owned(), Json::String("stdio".to_owned())));
        }
        entry.push(("command".to_owned(), Json::String(corral.to_owned())));
        entry.push(("args".to_owned(), Json::Strings(vec!["mcp".to_owned()])));
        Ok(Self {
            client,
            file,
            container,
            entry,
        })
    }

    fn container_name(&self) -> String {
        self.container.join(".")
    }
}

/// The result of editing a client's text.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    text: String,
    action: &'static str,
    /// The entry as written, for the output.
    entry: Option<String>,
    removed: Vec<String>,
}

/// The absolute path of this `corral`, which the entry runs.
fn this_corral() -> anyhow::Result<String> {
    let path = std::env::current_exe().context("cannot find the path of this corral")?;
    let path = std::path::absolute(&path).unwrap_or(path);
    path.into_os_string()
        .into_string()
        .map_err(|_| anyhow::anyhow!("the path of this corral is not UTF-8, which a JSON config cannot hold"))
}

/// `corral mcp install`.
pub(crate) fn install(options: &InstallOptions) -> anyhow::Result<Outcome> {
    let corral = this_corral()?;
    let target = Target::new(options.client, options.file.clone(), &corral)?;
    let original = read_optional(&target.file)?;
    let remove = if options.replace {
        imported_names(options.config.as_deref())?
    } else {
        Vec::new()
    };
    let change = install_text(&target, original.as_deref(), &remove)?;
    let mut outcome = Outcome {
        client: options.client,
        file: target.file.clone(),
        dry_run: options.dry_run,
        action: change.action,
        entry: change.entry.clone(),
        removed: change.removed.clone(),
        backup: None,
        container: target.container_name(),
    };
    if change.action == "unchanged" && change.removed.is_empty() {
        return Ok(outcome);
    }
    if original.is_some() {
        outcome.backup = Some(backup_path(&target.file));
    }
    if !options.dry_run {
        if let (Some(original), Some(backup)) = (&original, &outcome.backup) {
            import::write_atomically(backup, original.as_bytes(), 0o600)?;
        }
        import::write_atomically(&target.file, change.text.as_bytes(), file_mode(&target.file))?;
    }
    Ok(outcome)
}

/// `corral mcp uninstall`.
pub(crate) fn uninstall(options: &UninstallOptions) -> anyhow::Result<Outcome> {
    let corral = this_corral()?;
    let target = Target::new(options.client, options.file.clone(), &corral)?;
    let mut outcome = Outcome {
        client: options.client,
        file: target.file.clone(),
        dry_run: options.dry_run,
        action: "absent",
        entry: None,
        removed: Vec::new(),
        backup: None,
        container: target.container_name(),
    };
    let Some(current) = read_optional(&target.file)? else {
        return Ok(outcome);
    };
    if !has_entry(&target, &current)? {
        return Ok(outcome);
    }
    // Unchanged since install: put back exactly what install started from.
    match newest_backup(&target.file) {
        Some(backup) => {
            if let Ok(before) = std::fs::read_to_string(&backup)
                && !has_entry(&target, &before).unwrap_or(true)
                && install_entry_text(&target, Some(&before)).is_ok_and(|text| text == current)
            {
                outcome.action = "restored";
                outcome.backup = Some(backup);
                if !options.dry_run {
                    import::write_atomically(&target.file, before.as_bytes(), file_mode(&target.file))?;
                }
                return Ok(outcome);
            }
        }
        None => {
            // Install created the file: it is still only what install wrote.
            if install_entry_text(&target, None).is_ok_and(|text| text == current) {
                outcome.action = "deleted";
                if !options.dry_run {
                    std::fs::remove_file(&target.file)
                        .with_context(|| format!("cannot remove {}", target.file.display()))?;
                }
                return Ok(outcome);
            }
        }
    }
    let text = remove_entry_text(&target, &current)?;
    outcome.action = "removed";
    outcome.backup = Some(backup_path(&target.file));
    if !options.dry_run {
        if let Some(backup) = &outcome.backup {
            import::write_atomically(backup, current.as_bytes(), 0o600)?;
        }
        import::write_atomically(&target.file, text.as_bytes(), file_mode(&target.file))?;
    }
    Ok(outcome)
}

/// The file's text, `None` when it does not exist; an error names the file.
fn read_optional(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{}: the file is not valid UTF-8", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The names, as they are in Corral's config, of its servers (`--replace` removes client entries
/// that `config import` named so).
fn imported_names(config: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let path = corral_client::protocol::paths::config_path(config);
    let config = corral_client::protocol::config::load(&path)
        .map_err(|error| anyhow::anyhow!("{error}\n`--replace` needs Corral's config to know which servers it runs"))?;
    Ok(config.servers.into_keys().collect())
}

/// The permissions to write the file back with: its own, or 0600 for a new one.
fn file_mode(path: &Path) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).map_or(0o600, |metadata| metadata.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        0o600
    }
}

/// `FILE.corral-<UTC timestamp with nanoseconds>.bak`: sorts by time, never clashes.
fn backup_path(file: &Path) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let name = file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.with_file_name(format!("{name}.corral-{}.bak", utc_stamp(now)))
}

/// `YYYYMMDDTHHMMSS.nnnnnnnnnZ` for a time since the epoch.
fn utc_stamp(since_epoch: std::time::Duration) -> String {
    let seconds = since_epoch.as_secs();
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since_epoch.subsec_nanos()
    )
}

/// The newest backup of `file` that install or uninstall made.
fn newest_backup(file: &Path) -> Option<PathBuf> {
    let name = file.file_name()?.to_string_lossy().into_owned();
    let prefix = format!("{name}.corral-");
    let directory = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::read_dir(directory)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|candidate| candidate.starts_with(&prefix) && candidate.ends_with(".bak"))
        .max()
        .map(|newest| file.with_file_name(newest))
}

/// Whether the file has the `corral` entry.
fn has_entry(target: &Target, text: &str) -> anyhow::Result<bool> {
    if target.client == Client::Codex {
        let document = import::parse_toml(&target.file, text)?;
        return Ok(document
            .get("mcp_servers")
            .and_then(Item::as_table_like)
            .is_some_and(|servers| servers.contains_key(ENTRY_NAME)));
    }
    if text.trim().is_empty() {
        return Ok(false);
    }
    let root = import::parse_json(&target.file, text)?;
    Ok(find_container(&root, &target.container).is_some_and(|container| container.get(ENTRY_NAME).is_some()))
}

/// The text after install, without `--replace` (what uninstall compares against).
fn install_entry_text(target: &Target, text: Option<&str>) -> anyhow::Result<String> {
    Ok(install_text(target, text, &[])?.text)
}

fn install_text(target: &Target, text: Option<&str>, remove: &[String]) -> anyhow::Result<Change> {
    if target.client == Client::Codex {
        install_toml(target, text, remove)
    } else {
        install_json(target, text, remove)
    }
}

fn remove_entry_text(target: &Target, text: &str) -> anyhow::Result<String> {
    if target.client == Client::Codex {
        let mut document = import::parse_toml(&target.file, text)?;
        if let Some(servers) = document.get_mut("mcp_servers").and_then(Item::as_table_like_mut) {
            servers.remove(ENTRY_NAME);
        }
        return Ok(document.to_string());
    }
    let root = import::parse_json(&target.file, text)?;
    let Some(container) = find_container(&root, &target.container) else {
        return Ok(text.to_owned());
    };
    let members = container.members().unwrap_or_default();
    match members.iter().rposition(|member| member.key == ENTRY_NAME) {
        Some(index) => Ok(remove_member(text, container, index)),
        None => Ok(text.to_owned()),
    }
}

// ---------------------------------------------------------------------------
// Codex: TOML

fn install_toml(target: &Target, text: Option<&str>, remove: &[String]) -> anyhow::Result<Change> {
    let mut document = match text {
        Some(text) => import::parse_toml(&target.file, text)?,
        None => DocumentMut::new(),
    };
    let empty = document.as_table().is_empty();
    let servers = document.entry("mcp_servers").or_insert_with(|| {
        let mut servers = Table::new();
        servers.set_implicit(true);
        Item::Table(servers)
    });
    let Some(servers) = servers.as_table_like_mut() else {
        anyhow::bail!("{}: `mcp_servers` is not a table", target.file.display());
    };
    let mut removed = Vec::new();
    for name in servers.iter().map(|(name, _)| name.to_owned()).collect::<Vec<_>>() {
        if name != ENTRY_NAME && remove.contains(&corral_name(&name)) {
            servers.remove(&name);
            removed.push(name);
        }
    }
    let command = target
        .entry
        .iter()
        .find_map(|(key, item)| match item {
            Json::String(command) if key == "command" => Some(command.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let ours = servers
        .get(ENTRY_NAME)
        .and_then(Item::as_table_like)
        .is_some_and(|entry| {
            entry.get("command").and_then(Item::as_str) == Some(command.as_str())
                && entry
                    .get("args")
                    .and_then(Item::as_array)
                    .is_some_and(|args| args.iter().map(toml_edit::Value::as_str).eq([Some("mcp")]))
        });
    let mut table = Table::new();
    table.insert("command", value(command.as_str()));
    table.insert("args", value(toml_edit::Array::from_iter(["mcp"])));
    let shown = format!("[mcp_servers.{ENTRY_NAME}]\n{table}");
    let action = if ours {
        "unchanged"
    } else if let Some(old) = servers.get(ENTRY_NAME).and_then(Item::as_table) {
        *table.decor_mut() = old.decor().clone();
        table.set_position(old.position());
        servers.insert(ENTRY_NAME, Item::Table(table));
        "updated"
    } else {
        if !empty {
            table.decor_mut().set_prefix("\n");
        }
        servers.insert(ENTRY_NAME, Item::Table(table));
        "added"
    };
    Ok(Change {
        text: document.to_string(),
        action,
        entry: Some(shown),
        removed,
    })
}

// ---------------------------------------------------------------------------
// JSON clients: text edits at recorded offsets

fn install_json(target: &Target, text: Option<&str>, remove: &[String]) -> anyhow::Result<Change> {
    let Some(text) = text.filter(|text| !text.trim().is_empty()) else {
        // A new file, formatted as the clients write theirs.
        let mut nested = wrap(ENTRY_NAME, entry_json(target));
        for key in target.container.iter().rev() {
            nested = wrap(key, nested);
        }
        let style = Style {
            unit: "  ".to_owned(),
            newline: "\n",
        };
        let mut text = render_value(&nested, Some(("", &style)));
        text.push('\n');
        return Ok(Change {
            text,
            action: "added",
            entry: Some(shown_entry(target)),
            removed: Vec::new(),
        });
    };
    let mut text = text.to_owned();
    let mut removed = Vec::new();
    // `--replace`: one entry at a time, reading the text again after each edit.
    loop {
        let root = import::parse_json(&target.file, &text)?;
        let Some(container) = find_container(&root, &target.container) else {
            break;
        };
        let members = container.members().unwrap_or_default();
        let Some(index) = members.iter().position(|member| {
            member.key != ENTRY_NAME && !removed.contains(&member.key) && remove.contains(&corral_name(&member.key))
        }) else {
            break;
        };
        removed.push(members[index].key.clone());
        text = remove_member(&text, container, index);
    }
    let root = import::parse_json(&target.file, &text)?;
    if root.members().is_none() {
        anyhow::bail!(
            "{}: the file is {}, expected a JSON object",
            target.file.display(),
            root.describe()
        );
    }
    let style = Style::of(&text, &root);
    // The deepest object of the container path that exists, and the keys still missing.
    let mut object = &root;
    let mut depth = 0;
    while depth < target.container.len() {
        match object.get(target.container[depth]) {
            Some(next) if next.members().is_some() => {
                object = next;
                depth += 1;
            }
            Some(next) => anyhow::bail!(
                "{}: `{}` is {}, expected an object",
                target.file.display(),
                target.container[..=depth].join("."),
                next.describe()
            ),
            None => break,
        }
    }
    if depth == target.container.len()
        && let Some(existing) = object.get(ENTRY_NAME)
    {
        if is_our_entry(target, existing) {
            return Ok(Change {
                text,
                action: "unchanged",
                entry: Some(shown_entry(target)),
                removed,
            });
        }
        // Another `corral` entry (an older path): its value is replaced in place.
        let indent = indent_of(&text, existing.span.start);
        let multiline = text[existing.span.clone()].contains('\n');
        let rendered = render_value(&entry_json(target), multiline.then_some((indent.as_str(), &style)));
        let mut updated = text.clone();
        updated.replace_range(existing.span.clone(), &rendered);
        return Ok(Change {
            text: updated,
            action: "updated",
            entry: Some(shown_entry(target)),
            removed,
        });
    }
    let mut member_value = entry_json(target);
    let mut key = ENTRY_NAME;
    if depth < target.container.len() {
        member_value = wrap(ENTRY_NAME, member_value);
        for missing in target.container[depth + 1..].iter().rev() {
            member_value = wrap(missing, member_value);
        }
        key = target.container[depth];
    }
    let updated = insert_member(&text, object, key, &member_value, &style);
    Ok(Change {
        text: updated,
        action: "added",
        entry: Some(shown_entry(target)),
        removed,
    })
}

/// The entry as the output shows it: over lines, indented from the left margin.
fn shown_entry(target: &Target) -> String {
    let style = Style {
        unit: "  ".to_owned(),
        newline: "\n",
    };
    format!(
        "{}: {}",
        json_string(ENTRY_NAME),
        render_value(&entry_json(target), Some(("", &style)))
    )
}

fn wrap(key: &str, inner: Json) -> Json {
    Json::Object(vec![(key.to_owned(), inner)])
}

fn entry_json(target: &Target) -> Json {
    Json::Object(target.entry.clone())
}

/// JSON text of `item`: on one line (`{"command": "…", "args": ["mcp"]}`) when `pretty` is
/// `None`, else objects over several lines, indented from the given indentation of the line
/// the value starts on. Arrays of strings stay on one line, as the clients' docs write them.
fn render_value(item: &Json, pretty: Option<(&str, &Style)>) -> String {
    match item {
        Json::String(text) => json_string(text),
        Json::Strings(items) => {
            let inner: Vec<String> = items.iter().map(|item| json_string(item)).collect();
            format!("[{}]", inner.join(", "))
        }
        Json::Object(pairs) => match pretty {
            None => {
                let inner: Vec<String> = pairs
                    .iter()
                    .map(|(key, item)| format!("{}: {}", json_string(key), render_value(item, None)))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
            Some((indent, style)) => {
                let inner_indent = format!("{indent}{}", style.unit);
                let inner: Vec<String> = pairs
                    .iter()
                    .map(|(key, item)| {
                        format!(
                            "{inner_indent}{}: {}",
                            json_string(key),
                            render_value(item, Some((&inner_indent, style)))
                        )
                    })
                    .collect();
                format!(
                    "{{{newline}{}{newline}{indent}}}",
                    inner.join(&format!(",{}", style.newline)),
                    newline = style.newline
                )
            }
        },
    }
}

fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

/// Whether `existing` runs this corral's bridge already.
fn is_our_entry(target: &Target, existing: &Value) -> bool {
    target.entry.iter().all(|(key, expected)| {
        let Some(found) = existing.get(key) else {
            return false;
        };
        match (expected, &found.kind) {
            (Json::String(expected), Kind::String(found)) => expected == found,
            (Json::Strings(expected), Kind::Array(found)) => {
                expected.len() == found.len()
                    && expected
                        .iter()
                        .zip(found)
                        .all(|(expected, found)| found.as_str() == Some(expected.as_str()))
            }
            _ => false,
        }
    })
}

/// The servers object at `path` from the root, when it exists.
fn find_container<'a>(root: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut object = root;
    for key in path {
        object = object.get(key)?;
    }
    object.members().is_some().then_some(object)
}

/// How the file is laid out: its indentation step and line ending.
#[derive(Debug, Clone)]
struct Style {
    unit: String,
    newline: &'static str,
}

impl Style {
    fn of(text: &str, root: &Value) -> Self {
        let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
        // The indentation of the root's first member, when it is on a line of its own.
        let unit = root
            .members()
            .and_then(|members| members.first())
            .map(|first| (indent_of(text, first.key_span.start), first.key_span.start))
            .filter(|(indent, start)| !indent.is_empty() && line_start(text, *start) + indent.len() == *start)
            .map_or_else(|| "  ".to_owned(), |(indent, _)| indent);
        Self { unit, newline }
    }
}

/// Offset of the start of the line holding `at`.
fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map_or(0, |index| index + 1)
}

/// Offset of the end of the line holding `at` (before `\n` or `\r\n`, or the end of the text).
fn line_end(text: &str, at: usize) -> usize {
    let end = text[at..].find('\n').map_or(text.len(), |index| at + index);
    if end > at && text.as_bytes().get(end - 1) == Some(&b'\r') && end < text.len() {
        end - 1
    } else {
        end
    }
}

/// Offset just after the line break ending the line holding `at` (or the end of the text).
fn next_line_start(text: &str, at: usize) -> usize {
    text[at..].find('\n').map_or(text.len(), |index| at + index + 1)
}

/// The whitespace the line holding `at` starts with.
fn indent_of(text: &str, at: usize) -> String {
    text[line_start(text, at)..]
        .chars()
        .take_while(|character| *character == ' ' || *character == '\t')
        .collect()
}

/// Whether `text[from..to]` is only spaces and, at the end, a `//` comment.
fn trivia_to_line_end(text: &str, from: usize, to: usize) -> bool {
    let rest = text[from..to].trim_start_matches([' ', '\t']);
    rest.is_empty() || rest.starts_with("//")
}

/// Whether the key is the first thing on its line.
fn first_on_line(text: &str, at: usize) -> bool {
    text[line_start(text, at)..at].trim_matches([' ', '\t']).is_empty()
}

/// Append `"key": item` to `object`; the new text.
///
/// Over several lines the member gets a line of its own after the last one, with its
/// indentation (a comma is added after the last value, and a comment after that value stays
/// where it was); on one line it follows `, `. An empty object on one line gets the member
/// inline. [`remove_member`] undoes each of these exactly.
fn insert_member(text: &str, object: &Value, key: &str, item: &Json, style: &Style) -> String {
    let members = object.members().unwrap_or_default();
    let open = object.span.start;
    let multiline = text[object.span.clone()].contains('\n');
    let mut out = text.to_owned();
    match members.last() {
        None if multiline => {
            let indent = format!("{}{}", indent_of(text, open), style.unit);
            let member = format!("{}: {}", json_string(key), render_value(item, Some((&indent, style))));
            out.insert_str(open + 1, &format!("{}{indent}{member}", style.newline));
            out
        }
        None => {
            let member = format!("{}: {}", json_string(key), render_value(item, None));
            out.insert_str(open + 1, &member);
            out
        }
        Some(last) if !multiline => {
            let member = format!("{}: {}", json_string(key), render_value(item, None));
            out.insert_str(last.value.span.end, &format!(", {member}"));
            out
        }
        Some(last) => {
            let indent = indent_of(text, last.key_span.start);
            let member = format!("{}: {}", json_string(key), render_value(item, Some((&indent, style))));
            let value_end = last.value.span.end;
            let after = jsonc::skip_trivia(text, value_end);
            let trailing_comma = text.as_bytes().get(after) == Some(&b',');
            if trailing_comma {
                let end = line_end(text, after + 1);
                let at = if trivia_to_line_end(text, after + 1, end) {
                    end
                } else {
                    after + 1
                };
                out.insert_str(at, &format!("{}{indent}{member},", style.newline));
            } else {
                let end = line_end(text, value_end);
                if trivia_to_line_end(text, value_end, end) {
                    out.insert_str(end, &format!("{}{indent}{member}", style.newline));
                    out.insert(value_end, ',');
                } else {
                    out.insert_str(value_end, &format!(",{}{indent}{member}", style.newline));
                }
            }
            out
        }
    }
}

/// Remove member `index` of `object`: the inverse of [`insert_member`] for what it writes, and
/// a tidy removal (its lines, and the comma that went with it) for anything else.
fn remove_member(text: &str, object: &Value, index: usize) -> String {
    let members: &[Member] = object.members().unwrap_or_default();
    let member = &members[index];
    let open = object.span.start;
    let value_end = member.value.span.end;
    let after = jsonc::skip_trivia(text, value_end);
    let own_comma = text.as_bytes().get(after) == Some(&b',');
    let multiline = text[object.span.clone()].contains('\n');
    let mut out = text.to_owned();
    let end_of_member = if own_comma { after + 1 } else { value_end };
    let own_lines = multiline
        && first_on_line(text, member.key_span.start)
        && trivia_to_line_end(text, end_of_member, line_end(text, end_of_member))
        && !text[end_of_member..line_end(text, end_of_member)].contains("//");
    if own_lines {
        let lines = line_start(text, member.key_span.start)..next_line_start(text, end_of_member);
        let is_last = index + 1 == members.len();
        if is_last && !own_comma && index > 0 {
            // The comma install added after the previous value goes too.
            let previous_end = members[index - 1].value.span.end;
            let comma = jsonc::skip_trivia(text, previous_end);
            out.replace_range(lines, "");
            if text.as_bytes().get(comma) == Some(&b',') {
                out.replace_range(comma..comma + 1, "");
            }
        } else {
            out.replace_range(lines, "");
        }
        return out;
    }
    if index > 0 {
        // `…, "corral": {…}` on the same line as the previous value.
        let previous_end = members[index - 1].value.span.end;
        let end = if own_comma && index + 1 < members.len() {
            value_end
        } else {
            end_of_member
        };
        let start = if own_comma && index + 1 == members.len() {
            // Keep the previous value's comma as the trailing one.
            jsonc::skip_trivia(text, previous_end) + 1
        } else {
            previous_end
        };
        out.replace_range(start.min(end)..end, "");
    } else if members.len() > 1 {
        out.replace_range(member.key_span.start..members[1].key_span.start, "");
    } else {
        out.replace_range(open + 1..end_of_member, "");
    }
    out
}

/// The lines `corral mcp install|uninstall` prints.
pub(crate) fn lines(outcome: &Outcome, installing: bool) -> Vec<String> {
    let file = outcome.file.display();
    let would = if outcome.dry_run { "would " } else { "" };
    let mut lines = Vec::new();
    let container = &outcome.container;
    match outcome.action {
        "unchanged" if installing => lines.push(format!("{file} already runs this corral (`{ENTRY_NAME}` in `{container}`)")),
        "added" | "updated" => {
            let verb = match (outcome.action, outcome.dry_run) {
                ("added", false) => "added",
                ("added", true) => "would add",
                (_, false) => "updated",
                (_, true) => "would update",
            };
            lines.push(format!("{verb} in {file}, `{container}`:"));
            if let Some(entry) = &outcome.entry {
                for line in entry.lines() {
                    lines.push(format!("  {line}"));
                }
            }
        }
        "restored" => lines.push(format!(
            "{would}restore {file} from {} (the file as it was before `corral mcp install`)",
            outcome.backup.as_ref().map(|backup| backup.display().to_string()).unwrap_or_default()
        )),
        "deleted" => lines.push(format!("{would}delete {file}: `corral mcp install` had created it")),
        "removed" => lines.push(format!(
            "{would}remove `{ENTRY_NAME}` from `{container}` in {file} (the file changed since install, so the rest stays as it is)"
        )),
        _ => lines.push(format!("{file} has no `{ENTRY_NAME}` entry: nothing to do")),
    }
    if !outcome.removed.is_empty() {
        lines.push(format!(
            "{would}remove from `{container}`, because Corral runs them now: {}",
            outcome.removed.join(", ")
        ));
    }
    if let Some(backup) = &outcome.backup
        && outcome.action != "restored"
    {
        let verb = if outcome.dry_run { "would back up" } else { "backed up" };
        lines.push(format!("{verb} the file to {}", backup.display()));
    }
    if installing && !outcome.dry_run && matches!(outcome.action, "added" | "updated") {
        lines.push(format!(
            "restart {} to use Corral; `corral mcp uninstall --client {}` undoes this",
            outcome.client.title(),
            outcome.client.name()
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(client: Client, file: &str) -> Target {
        Target::new(client, Some(PathBuf::from(file)), "/opt/corral/bin/corral").expect("target")
    }

    /// Install then the structural removal gives the same bytes back, for every shape
    /// `insert_member` handles.
    #[test]
    fn removal_undoes_insertion_exactly() {
        let cases = [
            "{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\"}\n  }\n}\n",
            "{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\"} // a comment\n  }\n}\n",
            "{\n  \"mcpServers\": {\n    \"a\": {\"command\": \"x\"},\n  },\n}\n",
            "{\r\n\t\"mcpServers\": {\r\n\t\t\"a\": {\r\n\t\t\t\"command\": \"x\"\r\n\t\t}\r\n\t}\r\n}\r\n",
            "{\"mcpServers\":{\"a\":{\"command\":\"x\"}}}",
            "{\"mcpServers\": {}}",
            "{\"mcpServers\": { }}",
            "{\n  \"mcpServers\": {\n  }\n}",
            "{\n  \"mcpServers\": {\n    \"a\": 1 }\n}",
        ];
        let target = target(Client::ClaudeDesktop, "claude_desktop_config.json");
        for case in cases {
            let installed = install_json(&target, Some(case), &[]).expect("install");
            assert_eq!(installed.action, "added", "{case:?}");
            assert!(jsonc::parse(&installed.text).is_ok(), "{:?}", installed.text);
            let removed = remove_entry_text(&target, &installed.text).expect("uninstall");
            assert_eq!(removed, case, "installed: {:?}", installed.text);
        }
    }

    #[test]
    fn an_entry_is_written_in_the_files_style() {
        let target = target(Client::Vscode, "mcp.json");
        let text = "{\n    \"servers\": {\n        \"a\": {\"command\": \"x\"}\n    }\n}\n";
        let installed = install_json(&target, Some(text), &[]).expect("install");
        assert_eq!(
            installed.text,
            "{\n    \"servers\": {\n        \"a\": {\"command\": \"x\"},\n        \"corral\": {\n            \"type\": \"stdio\",\n            \"command\": \"/opt/corral/bin/corral\",\n            \"args\": [\"mcp\"]\n        }\n    }\n}\n"
        );
        let again = install_json(&target, Some(&installed.text), &[]).expect("install again");
        assert_eq!(
            (again.action, again.text.as_str()),
            ("unchanged", installed.text.as_str())
        );
    }

    #[test]
    fn a_missing_container_is_created_and_a_missing_file_written() {
        let target = target(Client::Vscode, "settings.json");
        let text = "{\n  // editor\n  \"editor.fontSize\": 14\n}\n";
        let installed = install_json(&target, Some(text), &[]).expect("install");
        assert_eq!(
            installed.text,
            "{\n  // editor\n  \"editor.fontSize\": 14,\n  \"mcp\": {\n    \"servers\": {\n      \"corral\": {\n        \"type\": \"stdio\",\n        \"command\": \"/opt/corral/bin/corral\",\n        \"args\": [\"mcp\"]\n      }\n    }\n  }\n}\n"
        );
        let created = install_json(&target, None, &[]).expect("install");
        assert_eq!(
            created.text,
            "{\n  \"mcp\": {\n    \"servers\": {\n      \"corral\": {\n        \"type\": \"stdio\",\n        \"command\": \"/opt/corral/bin/corral\",\n        \"args\": [\"mcp\"]\n      }\n    }\n  }\n}\n"
        );
    }

    #[test]
    fn replace_removes_the_imported_entries_and_nothing_else() {
        let target = target(Client::Cursor, "mcp.json");
        let text = "{\n  \"mcpServers\": {\n    \"github\": {\"command\": \"a\"},\n    \"keep\": {\"command\": \"b\"},\n    \"My Notes\": {\"command\": \"c\"}\n  }\n}\n";
        let installed =
            install_json(&target, Some(text), &["github".to_owned(), "My-Notes".to_owned()]).expect("install");
        assert_eq!(installed.removed, ["github", "My Notes"]);
        assert_eq!(
            installed.text,
            "{\n  \"mcpServers\": {\n    \"keep\": {\"command\": \"b\"},\n    \"corral\": {\n      \"command\": \"/opt/corral/bin/corral\",\n      \"args\": [\"mcp\"]\n    }\n  }\n}\n"
        );
    }

    #[test]
    fn an_entry_for_another_corral_is_updated_in_place() {
        let target = target(Client::ClaudeCode, ".mcp.json");
        let text = "{\n  \"mcpServers\": {\n    \"corral\": {\"command\": \"/old/corral\", \"args\": [\"mcp\"]},\n    \"b\": {}\n  }\n}\n";
        let installed = install_json(&target, Some(text), &[]).expect("install");
        assert_eq!(installed.action, "updated");
        assert_eq!(
            installed.text,
            "{\n  \"mcpServers\": {\n    \"corral\": {\"command\": \"/opt/corral/bin/corral\", \"args\": [\"mcp\"]},\n    \"b\": {}\n  }\n}\n"
        );
    }

    #[test]
    fn codex_tables_round_trip() {
        let target = target(Client::Codex, "config.toml");
        let text = "# Codex\nmodel = \"o3\"\n\n[mcp_servers.docs]\ncommand = \"docs-mcp\" # local\n";
        let installed = install_toml(&target, Some(text), &[]).expect("install");
        assert_eq!(
            installed.text,
            format!("{text}\n[mcp_servers.corral]\ncommand = \"/opt/corral/bin/corral\"\nargs = [\"mcp\"]\n")
        );
        assert_eq!(remove_entry_text(&target, &installed.text).expect("remove"), text);
    }

    #[test]
    fn utc_stamps_are_civil_dates() {
        assert_eq!(
            utc_stamp(std::time::Duration::new(1_781_432_100, 7)),
            "20260614T101500.000000007Z"
        );
        assert_eq!(utc_stamp(std::time::Duration::ZERO), "19700101T000000.000000000Z");
    }
}
