//! The options of `corral mcp` (`--servers`, `--exclude`, `--separator`,
//! `--no-builtin`, `--config`), checked before anything is connected, and
//! the `corral/bridge` object that carries them to the daemon in the
//! client's `initialize` (`params._meta["corral/bridge"]`, see `lines.rs`):
//!
//! ```text
//! { "servers": [..], "exclude": [..], "separator": "__", "builtin": false,
//!   "sessionServers": { "NAME": { ..the server's fields.. } } }
//! ```
//!
//! Each key is there only when its flag was given; with no flag at all
//! there is no object (and a `corral/bridge` key the client sent is taken
//! out).
//!
//! `--config FILE` holds per-client servers, which become session servers
//! of this bridge. Two formats:
//! - Corral's own TOML, `[servers.NAME]` tables and nothing else (a
//!   daemon-wide key such as `credentials_store` is refused): checked with
//!   the protocol crate's parser, exactly as the daemon checks its config,
//!   and each table sent as JSON with its fields as written;
//! - the `mcpServers` JSON of Claude Desktop, Claude Code (`.mcp.json`,
//!   `~/.claude.json`) and Cursor (`.cursor/mcp.json`), read by
//!   `corral config import`'s readers (`import/`) with the client's rules
//!   for variables and paths, told apart by the file's name (`.mcp.json` and
//!   `.claude.json`: Claude Code; a file in `.cursor/`: Cursor; any other:
//!   Claude Desktop, whose values are used as written). An entry that runs
//!   `corral mcp` itself is left out.
//!
//! `.toml` files are TOML, `.json` files JSON; another name is JSON when it
//! starts with `{`. Each server is checked with
//! `corral_protocol::config::parse_server_json`, the check `mcpServer/add`
//! makes, and its name with `check_session_server_name` (at most 106 bytes:
//! the daemon registers it as `NAME-cID`), and `--separator` with
//! `check_separator`, the daemon's own checks, so the daemon gets nothing it
//! would refuse. A file that cannot be
//! read, does not parse or holds a server Corral would refuse stops
//! `corral mcp` with exit code 2 before it connects, naming the file, the
//! line where one is known, the server and what is wrong. No value from the
//! file appears in a message (it may hold tokens).

use std::path::Path;

use corral_client::protocol::config;
use serde_json::{Map, Value, json};

use crate::import::{self, Client, draft, jsonc};

/// The flags of `corral mcp` that shape what its client sees.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct BridgeArgs {
    /// Only these servers (their tools), e.g. `--servers github,linear`
    #[arg(long, value_name = "NAMES", value_delimiter = ',', value_parser = server_name)]
    servers: Option<Vec<String>>,
    /// Leave out these servers, e.g. `--exclude slow-one`
    #[arg(long, value_name = "NAMES", value_delimiter = ',', value_parser = server_name)]
    exclude: Option<Vec<String>>,
    /// Between a server's name and its tool's in the names the client sees [default: __]; 1 to 8 of
    /// A-Z a-z 0-9 _ . -
    #[arg(long, value_name = "SEP", value_parser = separator)]
    separator: Option<String>,
    /// Leave out the tools of the built-in `corral` server (servers' status)
    #[arg(long)]
    no_builtin: bool,
    /// Servers of this client only, run while it runs: Corral's TOML (`[servers.NAME]`), or the
    /// `mcpServers` JSON of Claude Desktop, Claude Code (`.mcp.json`) or Cursor
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
}

/// `--servers` and `--exclude` entries: server names as the config allows them.
fn server_name(text: &str) -> Result<String, String> {
    config::check_server_name(text).map(|()| text.to_owned())
}

/// `--separator`: the daemon's rule (1 to 8 characters of `A-Z a-z 0-9 _ . -`).
fn separator(text: &str) -> Result<String, String> {
    config::check_separator(text).map(|()| text.to_owned())
}

impl BridgeArgs {
    /// The `corral/bridge` object, reading `--config` if given; `None` when
    /// no option was given. `Err` says what is wrong with the file (exit 2).
    pub(crate) fn meta(&self) -> Result<Option<Value>, String> {
        let mut meta = Map::new();
        if let Some(servers) = &self.servers {
            meta.insert("servers".to_owned(), json!(servers));
        }
        if let Some(exclude) = &self.exclude {
            meta.insert("exclude".to_owned(), json!(exclude));
        }
        if let Some(separator) = &self.separator {
            meta.insert("separator".to_owned(), json!(separator));
        }
        if self.no_builtin {
            meta.insert("builtin".to_owned(), json!(false));
        }
        if let Some(path) = &self.config {
            let session = session_servers(path)?;
            for note in &session.notes {
                eprintln!("corral mcp: {}: {note}", path.display());
            }
            meta.insert("sessionServers".to_owned(), Value::Object(session.servers));
        }
        Ok((!meta.is_empty()).then_some(Value::Object(meta)))
    }
}

/// The servers of a `--config` file, each as `mcpServer/add` takes its `config`.
#[derive(Debug, Default)]
pub(crate) struct SessionServers {
    pub(crate) servers: Map<String, Value>,
    /// What was left out or changed, for stderr.
    pub(crate) notes: Vec<String>,
}

/// Read `path` (see the module docs for the formats).
pub(crate) fn session_servers(path: &Path) -> Result<SessionServers, String> {
    let bytes =
        std::fs::read(path).map_err(|error| format!("cannot read the --config file {}: {error}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let (line, column) = jsonc::line_column(&String::from_utf8_lossy(valid), valid.len());
        format!("{}:{line}:{column}: the file is not valid UTF-8", path.display())
    })?;
    let extension = path.extension().and_then(|extension| extension.to_str());
    let is_json = match extension {
        Some(extension) if extension.eq_ignore_ascii_case("toml") => false,
        Some(extension) if extension.eq_ignore_ascii_case("json") => true,
        _ => text.trim_start_matches('\u{feff}').trim_start().starts_with('{'),
    };
    if is_json {
        from_client_file(path)
    } else {
        from_corral_toml(path, &text)
    }
}

/// Corral's TOML: the protocol crate's checks, then each `[servers.NAME]` table as JSON.
fn from_corral_toml(path: &Path, text: &str) -> Result<SessionServers, String> {
    config::parse(text, path).map_err(|error| error.to_string())?;
    let document = toml_edit::Document::parse(text)
        .map_err(|error| format!("{}: not valid TOML: {}", path.display(), error.message().trim_end()))?;
    let mut servers = Map::new();
    for (key, item) in document.as_table() {
        if key != "servers" {
            let at = document
                .as_table()
                .key(key)
                .and_then(toml_edit::Key::span)
                .map(|span| {
                    let (line, column) = jsonc::line_column(text, span.start);
                    format!(":{line}:{column}")
                })
                .unwrap_or_default();
            return Err(format!(
                "{}{at}: `{key}` is a setting of corrald, not of a server: a --config file holds only \
                 [servers.NAME] tables (put `{key}` in corrald's config)",
                path.display()
            ));
        }
        if let Some(table) = item.as_table_like() {
            for (name, entry) in table.iter() {
                servers.insert(name.to_owned(), toml_item_json(entry).unwrap_or(Value::Null));
            }
        }
    }
    check_each(path, &servers)?;
    Ok(SessionServers {
        servers,
        notes: Vec::new(),
    })
}

/// A client's `mcpServers` JSON, through `corral config import`'s readers.
fn from_client_file(path: &Path) -> Result<SessionServers, String> {
    let client = client_of(path);
    let mut drafts =
        import::read_client_file(client, path, draft::Destination::Session).map_err(|error| format!("{error:#}"))?;
    let mut session = SessionServers::default();
    drafts.retain(|draft| {
        let itself = import::runs_corral_mcp(&draft.server);
        if itself {
            session.notes.push(format!(
                "server `{}` left out: it runs `corral mcp`, this bridge",
                draft.client_name
            ));
        }
        !itself
    });
    let mut problems = Vec::new();
    for draft in &drafts {
        if let Some(reason) = &draft.unusable {
            problems.push(format!("server `{}`: {reason}", draft.client_name));
        }
    }
    if !problems.is_empty() {
        return Err(problems_text(path, &problems));
    }
    import::settle_names(&mut drafts);
    for draft in drafts {
        session.notes.extend(draft.notes.iter().map(ToString::to_string));
        match &draft.unusable {
            // The same server twice (Claude Code's projects): once is enough.
            Some(reason) => session
                .notes
                .push(format!("server `{}` left out: {reason}", draft.client_name)),
            None => {
                let entry = Value::Object(table_json(draft::server_table(&draft.server).iter()));
                session.servers.insert(draft.name, entry);
            }
        }
    }
    check_each(path, &session.servers)?;
    Ok(session)
}

/// The client whose rules apply to a JSON file, by its name.
fn client_of(path: &Path) -> Client {
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
    let directory = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .unwrap_or_default();
    if name == ".mcp.json" || name == ".claude.json" {
        Client::ClaudeCode
    } else if directory == ".cursor" {
        Client::Cursor
    } else {
        Client::ClaudeDesktop
    }
}

/// Every server through the check `mcpServer/add` makes, and its name
/// through the daemon's check of a session server's name (room for `-cID`).
fn check_each(path: &Path, servers: &Map<String, Value>) -> Result<(), String> {
    let problems: Vec<String> = servers
        .iter()
        .flat_map(|(name, entry)| match config::parse_server_json(name, entry) {
            Err(problems) => problems.iter().map(ToString::to_string).collect(),
            // The name is a server name (at most 128 bytes): short enough to show.
            Ok(_) => config::check_session_server_name(name)
                .err()
                .map(|problem| format!("server `{name}`: {problem}"))
                .into_iter()
                .collect::<Vec<_>>(),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems_text(path, &problems))
    }
}

fn problems_text(path: &Path, problems: &[String]) -> String {
    problems
        .iter()
        .map(|problem| format!("{}: {problem}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A TOML item as JSON (`None` for an empty item).
fn toml_item_json(item: &toml_edit::Item) -> Option<Value> {
    match item {
        toml_edit::Item::None => None,
        toml_edit::Item::Value(value) => Some(toml_value_json(value)),
        toml_edit::Item::Table(table) => Some(Value::Object(table_json(table.iter()))),
        toml_edit::Item::ArrayOfTables(tables) => Some(Value::Array(
            tables
                .iter()
                .map(|table| Value::Object(table_json(table.iter())))
                .collect(),
        )),
    }
}

fn table_json<'a>(entries: impl Iterator<Item = (&'a str, &'a toml_edit::Item)>) -> Map<String, Value> {
    entries
        .filter_map(|(key, item)| Some((key.to_owned(), toml_item_json(item)?)))
        .collect()
}

fn toml_value_json(value: &toml_edit::Value) -> Value {
    match value {
        toml_edit::Value::String(text) => Value::String(text.value().clone()),
        toml_edit::Value::Integer(number) => Value::from(*number.value()),
        toml_edit::Value::Float(number) => Value::from(*number.value()),
        toml_edit::Value::Boolean(flag) => Value::Bool(*flag.value()),
        toml_edit::Value::Datetime(datetime) => Value::String(datetime.value().to_string()),
        toml_edit::Value::Array(items) => Value::Array(items.iter().map(toml_value_json).collect()),
        toml_edit::Value::InlineTable(table) => Value::Object(
            table
                .iter()
                .map(|(key, item)| (key.to_owned(), toml_value_json(item)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Command {
        #[command(flatten)]
        bridge: BridgeArgs,
    }

    fn args(line: &[&str]) -> Result<BridgeArgs, clap::Error> {
        Command::try_parse_from(std::iter::once("corral-mcp").chain(line.iter().copied())).map(|command| command.bridge)
    }

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("a directory");
        }
        std::fs::write(&path, text).expect("write the file");
        path
    }

    #[test]
    fn each_flag_becomes_its_key_and_only_then() {
        assert_eq!(args(&[]).expect("no flags").meta(), Ok(None));
        let meta = args(&["--servers", "a,b", "--exclude", "c", "--separator", ".", "--no-builtin"])
            .expect("flags")
            .meta();
        assert_eq!(
            meta,
            Ok(Some(
                json!({"servers": ["a", "b"], "exclude": ["c"], "separator": ".", "builtin": false})
            ))
        );
        assert_eq!(
            args(&["--exclude", "x"]).expect("flags").meta(),
            Ok(Some(json!({"exclude": ["x"]})))
        );
    }

    #[test]
    fn separators_and_names_are_checked_saying_what_is_allowed() {
        for good in ["__", ".", "-", "_x.9-", "12345678"] {
            assert_eq!(separator(good).as_deref(), Ok(good));
        }
        for bad in ["", "123456789", "a b", "/", "::", "é"] {
            let error = separator(bad).expect_err(bad);
            assert!(error.contains("1 to 8 characters"), "{error}");
        }
        let error = args(&["--separator", "a/b"]).expect_err("a bad separator");
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("1 to 8 characters"), "{error}");
        let error = args(&["--servers", "ok,not ok"]).expect_err("a bad name");
        assert!(error.to_string().contains("invalid server name"), "{error}");
    }

    #[test]
    fn corral_toml_servers_go_as_written_and_pass_the_add_check() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = write(
            dir.path(),
            "project.toml",
            r#"
[servers.files]
command = "npx"
args = ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]
env = { LOG = "debug" }
tool_timeout_sec = 2.5
enabled_tools = ["read_file"]

[servers.remote]
url = "https://mcp.example.com/mcp"
env_http_headers = { "X-Api-Key" = "REMOTE_KEY" }
"#,
        );
        let session = session_servers(&path).expect("a valid file");
        assert_eq!(
            Value::Object(session.servers.clone()),
            json!({
                "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                          "env": {"LOG": "debug"}, "tool_timeout_sec": 2.5, "enabled_tools": ["read_file"]},
                "remote": {"url": "https://mcp.example.com/mcp", "env_http_headers": {"X-Api-Key": "REMOTE_KEY"}},
            })
        );
        for (name, entry) in &session.servers {
            config::parse_server_json(name, entry).unwrap_or_else(|problems| panic!("{name}: {problems:?}"));
        }
        let meta = args(&["--config", &path.display().to_string()])
            .expect("flags")
            .meta()
            .expect("a valid file");
        assert_eq!(meta, Some(json!({"sessionServers": Value::Object(session.servers)})));
    }

    #[test]
    fn a_bad_toml_file_names_file_line_and_problem() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = write(dir.path(), "bad.toml", "[servers.x]\ncommand = \"a\"\ncomand = \"b\"\n");
        let error = session_servers(&path).expect_err("an unknown field");
        assert!(
            error.starts_with(&format!("{}:3:1: server `x`, field `comand`", path.display())),
            "{error}"
        );
        let path = write(dir.path(), "syntax.toml", "[servers.x]\ncommand = \n");
        let error = session_servers(&path).expect_err("a syntax error");
        assert!(error.starts_with(&format!("{}:2:", path.display())), "{error}");
        let path = write(dir.path(), "global.toml", "[servers.x]\ncommand = \"a\"\n\n[other]\n");
        let error = session_servers(&path).expect_err("a key that is not servers");
        assert!(error.contains(&format!("{}:", path.display())), "{error}");
        let path = write(dir.path(), "daemon.toml", "credentials_store = \"file\"\n");
        let error = session_servers(&path).expect_err("a daemon setting");
        assert_eq!(
            error,
            format!(
                "{}:1:1: `credentials_store` is a setting of corrald, not of a server: a --config file holds only \
                 [servers.NAME] tables (put `credentials_store` in corrald's config)",
                path.display()
            )
        );
        let error = session_servers(&dir.path().join("missing.toml")).expect_err("no file");
        assert!(error.starts_with("cannot read the --config file"), "{error}");
    }

    #[test]
    fn a_claude_code_project_file_runs_its_servers_in_the_project_as_claude_code_would() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = write(
            dir.path(),
            ".mcp.json",
            r#"{"mcpServers": {
                "local": {"command": "python3", "args": ["server.py", "--home=${HOME}"],
                          "env": {"API_TOKEN": "ghp_0123456789abcdefABCDEF0123456789abcd", "FROM": "${NO_SUCH_VARIABLE_FOR_CORRAL:-fallback}"}},
                "remote": {"type": "http", "url": "https://mcp.example.com/mcp",
                           "headers": {"Authorization": "Bearer secret-token"}},
                "corral": {"command": "corral", "args": ["mcp"]}
            }}"#,
        );
        let session = session_servers(&path).expect("a valid file");
        let home = std::env::var("HOME").expect("HOME is set");
        let project = std::path::absolute(dir.path()).expect("absolute");
        assert_eq!(
            Value::Object(session.servers.clone()),
            json!({
                "local": {"command": "python3", "args": ["server.py", format!("--home={home}")],
                          "env": {"API_TOKEN": "ghp_0123456789abcdefABCDEF0123456789abcd", "FROM": "fallback"},
                          "cwd": project.display().to_string()},
                "remote": {"url": "https://mcp.example.com/mcp",
                           "http_headers": {"Authorization": "Bearer secret-token"}},
            }),
            "values as the client would use them, secrets included: they go over the private socket, not into a file"
        );
        for (name, entry) in &session.servers {
            config::parse_server_json(name, entry).unwrap_or_else(|problems| panic!("{name}: {problems:?}"));
        }
        assert!(
            session
                .notes
                .iter()
                .any(|note| note.contains("`corral` left out: it runs `corral mcp`")),
            "{:?}",
            session.notes
        );
        assert!(
            !session
                .notes
                .iter()
                .any(|note| note.contains("ghp_") || note.contains("secret-token")),
            "no value in a note: {:?}",
            session.notes
        );
    }

    #[test]
    fn cursor_and_desktop_files_follow_their_clients_rules() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let cursor = write(
            dir.path(),
            "work/.cursor/mcp.json",
            r#"{"mcpServers": {"tool": {"command": "${workspaceFolder}/bin/tool", "args": ["${env:HOME}"]}}}"#,
        );
        let session = session_servers(&cursor).expect("a valid file");
        let workspace = std::path::absolute(dir.path().join("work")).expect("absolute");
        let home = std::env::var("HOME").expect("HOME is set");
        assert_eq!(
            session.servers["tool"],
            json!({"command": format!("{}/bin/tool", workspace.display()), "args": [home]})
        );
        let desktop = write(
            dir.path(),
            "servers.json",
            r#"{"mcpServers": {"Plain Name": {"command": "tool", "args": ["${HOME}"]}}}"#,
        );
        let session = session_servers(&desktop).expect("a valid file");
        assert_eq!(
            Value::Object(session.servers),
            json!({"Plain-Name": {"command": "tool", "args": ["${HOME}"]}}),
            "Claude Desktop expands nothing; names become Corral names"
        );
    }

    #[test]
    fn a_servers_name_leaves_room_for_the_connection_the_daemon_adds() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let longest = "n".repeat(config::MAX_SESSION_SERVER_NAME_BYTES);
        let path = write(
            dir.path(),
            "fits.toml",
            &format!("[servers.{longest}]\ncommand = \"x\"\n"),
        );
        assert!(session_servers(&path).expect("fits").servers.contains_key(&longest));
        // A server name the config would take (128 bytes at most), but too long once `-cID` is added.
        let long = format!("{longest}n");
        for (name, text) in [
            ("long.toml", format!("[servers.{long}]\ncommand = \"x\"\n")),
            (
                "long.json",
                format!("{{\"mcpServers\": {{\"{long}\": {{\"command\": \"x\"}}}}}}"),
            ),
        ] {
            let path = write(dir.path(), name, &text);
            let error = session_servers(&path).expect_err(name);
            assert_eq!(
                error,
                format!(
                    "{}: server `{long}`: the name of a client's own server is 107 bytes long; the limit is 106 \
                     bytes (corrald adds `-c` and the connection's number to it): shorten it",
                    path.display()
                )
            );
        }
    }

    #[test]
    fn a_bad_json_file_names_file_line_and_problem() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = write(
            dir.path(),
            "bad.json",
            "{\"mcpServers\": {\n  \"x\": {\"command\": \"a\",}\n  oops\n}}",
        );
        let error = session_servers(&path).expect_err("a syntax error");
        assert!(error.starts_with(&format!("{}:3:", path.display())), "{error}");
        let path = write(
            dir.path(),
            "unusable.json",
            r#"{"mcpServers": {"old": {"type": "websocket", "url": "ws://x"}, "half": {"args": ["x"]}}}"#,
        );
        let error = session_servers(&path).expect_err("servers Corral cannot run");
        assert_eq!(
            error,
            format!(
                "{0}: server `old`: type `websocket` is not a transport Corral supports\n\
                 {0}: server `half`: it has neither `command` nor `url`",
                path.display()
            )
        );
        let path = write(
            dir.path(),
            "rejected.json",
            r#"{"mcpServers": {"rel": {"command": "x", "cwd": "relative/dir"}}}"#,
        );
        let error = session_servers(&path).expect_err("a relative cwd");
        assert!(
            error.starts_with(&format!("{}: server `rel`, field `cwd`", path.display())),
            "{error}"
        );
    }
}
