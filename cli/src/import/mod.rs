//! `corral config import --from CLIENT [FILE]`: the MCP servers another client
//! runs, written into Corral's config file.
//!
//! One module per client format reads that client's documented file
//! (`claude_desktop`, `claude_code`, `codex`, `cursor`, `vscode`, `zed`; the
//! JSON entry most of them share is `mcp_servers`), and hands each entry to a
//! [`draft::ServerDraft`], which maps the fields and keeps secrets out. This
//! module finds the files, settles names, and writes Corral's file.
//!
//! `corral mcp --config FILE` reads a client's file with the same readers
//! ([`read_client_file`]) for a different destination,
//! [`draft::Destination::Session`]: its servers go to corrald as session
//! servers of that bridge, not into a file (see `pipe/options.rs`).
//!
//! Invariants:
//! - Nothing is written that the daemon would reject: each server is checked
//!   alone with the protocol crate's loader (a server Corral would reject is
//!   reported and left out), and the whole resulting file is checked again
//!   before it is written.
//! - Corral's file keeps its comments and formatting (`toml_edit`); it is
//!   replaced atomically (temporary file, fsync, rename), mode 0600.
//! - An entry already in Corral's config is never overwritten without
//!   `--replace`; every field that does not map is named in a note; no value
//!   from the client's file appears in the output or an error (only names).

mod claude_code;
mod claude_desktop;
mod codex;
mod cursor;
pub(crate) mod draft;
pub(crate) mod jsonc;
mod mcp_servers;
mod vscode;
mod zed;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use corral_client::protocol::{config, paths};
use serde::Serialize;
use toml_edit::{DocumentMut, Item, Table};

use draft::{Context, Destination, Export, Note, ServerDraft, Variables};

/// The MCP clients Corral reads and installs itself into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Client {
    /// Claude Desktop: `claude_desktop_config.json`
    ClaudeDesktop,
    /// Claude Code: `~/.claude.json` or a project's `.mcp.json`
    ClaudeCode,
    /// Codex: `~/.codex/config.toml`
    Codex,
    /// Cursor: `~/.cursor/mcp.json` or a project's `.cursor/mcp.json`
    Cursor,
    /// VS Code: the user's `mcp.json` (or `settings.json`), or a workspace's `.vscode/mcp.json`
    Vscode,
    /// Zed: `settings.json`
    Zed,
}

impl Client {
    /// The name `--from` and `--client` take.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ClaudeDesktop => "claude-desktop",
            Self::ClaudeCode => "claude-code",
            Self::Codex => "codex",
            Self::Cursor => "cursor",
            Self::Vscode => "vscode",
            Self::Zed => "zed",
        }
    }

    /// The name people know the client by, for messages.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Self::ClaudeDesktop => "Claude Desktop",
            Self::ClaudeCode => "Claude Code",
            Self::Codex => "Codex",
            Self::Cursor => "Cursor",
            Self::Vscode => "VS Code",
            Self::Zed => "Zed",
        }
    }

    /// The client's user-level config files on this system, the first being where
    /// `corral mcp install` writes.
    pub(crate) fn default_files(self) -> anyhow::Result<Vec<PathBuf>> {
        let base = directories::BaseDirs::new()
            .context("cannot find your home directory: give the client's config file as an argument")?;
        let home = base.home_dir();
        let config = base.config_dir();
        Ok(match self {
            // macOS: ~/Library/Application Support/Claude, Windows: %APPDATA%\Claude; on Linux,
            // where there is no official build, the XDG config directory the community builds use.
            Self::ClaudeDesktop => vec![config.join("Claude").join("claude_desktop_config.json")],
            Self::ClaudeCode => vec![home.join(".claude.json")],
            Self::Codex => {
                let codex_home = std::env::var_os("CODEX_HOME")
                    .filter(|dir| !dir.is_empty())
                    .map_or_else(|| home.join(".codex"), PathBuf::from);
                vec![codex_home.join("config.toml")]
            }
            Self::Cursor => vec![home.join(".cursor").join("mcp.json")],
            Self::Vscode => {
                let user = config.join("Code").join("User");
                vec![user.join("mcp.json"), user.join("settings.json")]
            }
            Self::Zed => vec![zed_settings(home, config)],
        })
    }

    /// How the client writes variables in values.
    fn variables(self) -> Variables {
        match self {
            Self::ClaudeCode => Variables::Shell,
            Self::Cursor | Self::Vscode => Variables::Editor,
            Self::ClaudeDesktop | Self::Codex | Self::Zed => Variables::None,
        }
    }

    /// The workspace a project-level file belongs to (for `${workspaceFolder}`).
    fn workspace(self, file: &Path) -> Option<PathBuf> {
        match self {
            Self::Cursor => draft::workspace_of(file, ".cursor"),
            Self::Vscode => draft::workspace_of(file, ".vscode"),
            _ => None,
        }
    }
}

/// Zed keeps `~/.config/zed` on macOS too; on Windows it is `%APPDATA%\Zed`.
fn zed_settings(home: &Path, config: &Path) -> PathBuf {
    if cfg!(windows) {
        config.join("Zed").join("settings.json")
    } else if cfg!(target_os = "macos") {
        home.join(".config").join("zed").join("settings.json")
    } else {
        config.join("zed").join("settings.json")
    }
}

/// What `corral config import` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ImportOptions {
    pub(crate) client: Client,
    /// The client's file; `None`: its default files that exist.
    pub(crate) file: Option<PathBuf>,
    /// Corral's config file (`--config`), else the default.
    pub(crate) config: Option<PathBuf>,
    pub(crate) replace: bool,
    pub(crate) dry_run: bool,
}

/// What an import did (or, with `--dry-run`, would do).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    pub(crate) client: Client,
    pub(crate) sources: Vec<PathBuf>,
    pub(crate) config: PathBuf,
    pub(crate) dry_run: bool,
    pub(crate) written: bool,
    pub(crate) imported: Vec<Imported>,
    pub(crate) skipped: Vec<Skipped>,
    pub(crate) notes: Vec<Note>,
    pub(crate) exports: Vec<Export>,
    /// The resulting config file (`--dry-run` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) toml: Option<String>,
}

/// A server written to Corral's config.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Imported {
    /// Its name in Corral's config.
    pub(crate) name: String,
    /// Its name in the client's file.
    pub(crate) client_name: String,
    pub(crate) transport: &'static str,
    /// It replaced an entry of the same name (`--replace`).
    pub(crate) replaced: bool,
}

/// A client entry not written, and why.
#[derive(Debug, Serialize)]
pub(crate) struct Skipped {
    pub(crate) server: String,
    pub(crate) reason: String,
}

/// Run the import.
pub(crate) fn run(options: &ImportOptions) -> anyhow::Result<Report> {
    let sources = match &options.file {
        Some(file) => vec![file.clone()],
        None => {
            let candidates = options.client.default_files()?;
            let found: Vec<PathBuf> = candidates.iter().filter(|path| path.is_file()).cloned().collect();
            if found.is_empty() {
                let tried: Vec<String> = candidates.iter().map(|path| path.display().to_string()).collect();
                anyhow::bail!(
                    "no {} config found (looked for {}): give the file as an argument",
                    options.client.title(),
                    tried.join(", ")
                );
            }
            found
        }
    };
    let mut drafts = Vec::new();
    for source in &sources {
        drafts.extend(read_client_file(options.client, source, Destination::ConfigFile)?);
    }
    for draft in &mut drafts {
        if runs_corral_mcp(&draft.server) {
            draft.mark_unusable("it runs `corral mcp`, Corral itself (the entry `corral mcp install` writes)");
        }
    }
    settle_names(&mut drafts);

    let config_path = paths::config_path(options.config.as_deref());
    let existing_text = match std::fs::read(&config_path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "{} is not UTF-8 text: fix Corral's config first (`corral config check`); nothing was imported",
                config_path.display()
            )
        })?,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", config_path.display())),
    };
    let existing = config::parse(&existing_text, &config_path).map_err(|error| {
        anyhow::anyhow!("{error}\nfix Corral's config first (`corral config check`); nothing was imported")
    })?;
    let mut document: DocumentMut = existing_text
        .parse()
        .with_context(|| format!("cannot edit {}", config_path.display()))?;

    let mut report = Report {
        client: options.client,
        sources: sources.clone(),
        config: config_path.clone(),
        dry_run: options.dry_run,
        written: false,
        imported: Vec::new(),
        skipped: Vec::new(),
        notes: Vec::new(),
        exports: Vec::new(),
        toml: None,
    };
    let mut taken_variables: Vec<(String, String, Option<String>)> = Vec::new();
    for mut draft in drafts {
        if draft.unusable.is_none()
            && let Err(problems) = check_alone(&draft)
        {
            draft.mark_unusable(format!("Corral would reject it: {problems}"));
        }
        if let Some(reason) = draft.unusable.take() {
            report.skipped.push(Skipped {
                server: draft.client_name,
                reason,
            });
            continue;
        }
        let exists = existing.servers.contains_key(&draft.name);
        if exists && !options.replace {
            report.skipped.push(Skipped {
                server: draft.client_name,
                reason: format!(
                    "`{}` is already in {}; `--replace` overwrites it",
                    draft.name,
                    config_path.display()
                ),
            });
            continue;
        }
        // One environment serves every server: the same variable with two different inline
        // values cannot be right for both.
        for export in &draft.exports {
            let value = draft
                .secret_values
                .iter()
                .find(|(variable, _)| *variable == export.variable)
                .map(|(_, value)| value.clone());
            if let Some((_, other, other_value)) = taken_variables
                .iter()
                .find(|(variable, other, _)| *variable == export.variable && *other != draft.client_name)
                && value.is_some()
                && other_value.is_some()
                && *other_value != value
            {
                draft.notes.push(Note {
                    server: draft.client_name.clone(),
                    field: Some(export.field.clone()),
                    message: format!(
                        "`{}` is also needed by `{other}`, with another value in the client's file; corrald has one environment: \
                         give one of them a variable of its own by hand",
                        export.variable
                    ),
                });
            }
            taken_variables.push((export.variable.clone(), draft.client_name.clone(), value));
        }
        insert_server(&mut document, &draft)?;
        report.imported.push(Imported {
            name: draft.name.clone(),
            client_name: draft.client_name.clone(),
            transport: if draft.server.command.is_some() {
                "stdio"
            } else {
                "streamable_http"
            },
            replaced: exists,
        });
        report.notes.extend(draft.notes);
        report.exports.extend(draft.exports);
    }

    let text = document.to_string();
    if let Err(error) = config::parse(&text, &config_path) {
        anyhow::bail!(
            "the imported config would not load, so nothing was written (a bug in `corral config import`; please report it):\n{error}"
        );
    }
    if options.dry_run {
        report.toml = Some(text);
    } else if !report.imported.is_empty() {
        write_atomically(&config_path, text.as_bytes(), 0o600)?;
        report.written = true;
    }
    Ok(report)
}

/// The drafts of one client file, made for `destination`; an unreadable or malformed file is an
/// error naming it and, for a syntax error, the line and column.
pub(crate) fn read_client_file(
    client: Client,
    path: &Path,
    destination: Destination,
) -> anyhow::Result<Vec<ServerDraft>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let (line, column) = jsonc::line_column(&String::from_utf8_lossy(valid), valid.len());
        anyhow::anyhow!("{}:{line}:{column}: the file is not valid UTF-8", path.display())
    })?;
    let context = Context {
        client: client.title(),
        variables: client.variables(),
        home: directories::BaseDirs::new().map(|base| base.home_dir().to_path_buf()),
        workspace: client.workspace(path),
        destination,
    };
    let drafts = if client == Client::Codex {
        let document = parse_toml(path, &text)?;
        codex::servers(&context, &document)
    } else {
        let root = parse_json(path, &text)?;
        if root.members().is_none() {
            anyhow::bail!(
                "{}: the file is {}, expected a JSON object",
                path.display(),
                root.describe()
            );
        }
        match client {
            Client::ClaudeDesktop => claude_desktop::servers(&context, &root),
            Client::ClaudeCode => claude_code::servers(&context, &root, path),
            Client::Cursor => cursor::servers(&context, &root),
            Client::Vscode => vscode::servers(&context, &root),
            Client::Zed => zed::servers(&context, &root),
            Client::Codex => unreachable!("handled above"),
        }
    };
    drafts.map_err(|message| anyhow::anyhow!("{}: {message}", path.display()))
}

/// A JSON (with comments) client file, or an error with its path, line and column.
pub(crate) fn parse_json(path: &Path, text: &str) -> anyhow::Result<jsonc::Value> {
    jsonc::parse(text).map_err(|error| {
        anyhow::anyhow!(
            "{}:{}:{}: not valid JSON: {}",
            path.display(),
            error.line,
            error.column,
            error.message
        )
    })
}

/// A TOML client file, or an error with its path, line and column (toml's description, never
/// the line itself: it may hold a token).
pub(crate) fn parse_toml(path: &Path, text: &str) -> anyhow::Result<DocumentMut> {
    text.parse::<DocumentMut>().map_err(|error| {
        let (line, column) = jsonc::line_column(text, error.span().map_or(0, |span| span.start));
        let message = error.message().trim_end().replace('\n', "; ");
        anyhow::anyhow!("{}:{line}:{column}: not valid TOML: {message}", path.display())
    })
}

/// Whether a server is the bridge to Corral itself: importing it would make Corral its own server.
pub(crate) fn runs_corral_mcp(server: &draft::Server) -> bool {
    let program = server
        .command
        .as_deref()
        .and_then(|command| Path::new(command).file_stem())
        .is_some_and(|stem| stem == "corral");
    program && server.args.first().is_some_and(|first| first == "mcp")
}

/// Two entries that become the same Corral name: the same server is imported once, a
/// different one gets a suffix (the project's directory name, else a number).
pub(crate) fn settle_names(drafts: &mut [ServerDraft]) {
    let mut seen: Vec<(String, draft::Server)> = Vec::new();
    for draft in drafts.iter_mut() {
        if draft.unusable.is_some() {
            continue;
        }
        if let Some((_, earlier)) = seen.iter().find(|(name, _)| *name == draft.name) {
            if *earlier == draft.server {
                let name = draft.name.clone();
                draft.mark_unusable(format!("the same server as the one imported as `{name}`"));
                continue;
            }
            let taken: BTreeSet<&str> = seen.iter().map(|(name, _)| name.as_str()).collect();
            let mut candidates: Vec<String> = Vec::new();
            if let Some(project) = &draft.project {
                let base = Path::new(project)
                    .file_name()
                    .map(|name| draft::corral_name(&name.to_string_lossy()))
                    .unwrap_or_default();
                if !base.is_empty() {
                    candidates.push(format!("{}-{base}", draft.name));
                }
            }
            candidates.extend((2..1000).map(|number| format!("{}-{number}", draft.name)));
            if let Some(name) = candidates
                .into_iter()
                .find(|candidate| !taken.contains(candidate.as_str()))
            {
                draft.note(
                    None,
                    format!(
                        "imported as `{name}`: `{}` is the name of another server in the file",
                        draft.name
                    ),
                );
                draft.name = name;
            }
        }
        seen.push((draft.name.clone(), draft.server.clone()));
    }
}

/// Check one server alone with the protocol's loader; the problems, joined, when it fails.
fn check_alone(draft: &ServerDraft) -> Result<(), String> {
    let mut document = DocumentMut::new();
    insert_server(&mut document, draft).map_err(|error| error.to_string())?;
    match config::parse(&document.to_string(), Path::new("import")) {
        Ok(_) => Ok(()),
        Err(config::ConfigError::Invalid { problems, .. }) => Err(problems
            .iter()
            .map(|problem| match &problem.field {
                Some(field) => format!("field `{field}`: {}", problem.message),
                None => problem.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")),
        Err(error) => Err(error.to_string()),
    }
}

/// Write `draft` as `[servers.NAME]`, in place of an entry of that name (keeping its comments).
fn insert_server(document: &mut DocumentMut, draft: &ServerDraft) -> anyhow::Result<()> {
    let empty = document.as_table().is_empty();
    let servers = document.entry("servers").or_insert_with(|| {
        let mut servers = Table::new();
        servers.set_implicit(true);
        Item::Table(servers)
    });
    let Some(servers) = servers.as_table_mut() else {
        anyhow::bail!("`servers` in Corral's config is not written as `[servers.NAME]` tables; import needs that form");
    };
    let mut table = draft::server_table(&draft.server);
    match servers.get(&draft.name).and_then(Item::as_table) {
        Some(old) => {
            *table.decor_mut() = old.decor().clone();
            table.set_position(old.position());
        }
        None if !empty || !servers.is_empty() => table.decor_mut().set_prefix("\n"),
        None => {}
    }
    servers.insert(&draft.name, Item::Table(table));
    Ok(())
}

/// Replace `path` with `contents` atomically: a temporary file in the same directory (created
/// with `mode` on Unix), fsync, rename. A symlink is followed, so the file it points at is
/// replaced and the link stays.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let target = if path.is_symlink() {
        std::fs::canonicalize(path).with_context(|| format!("cannot follow the symlink {}", path.display()))?
    } else {
        path.to_path_buf()
    };
    let directory = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&directory).with_context(|| format!("cannot create {}", directory.display()))?;
    let file_name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = directory.join(format!(".{file_name}.corral-{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let written = (|| -> std::io::Result<()> {
        let mut file = options.open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &target)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("cannot write {}", target.display()));
    }
    Ok(())
}

impl Report {
    /// The summary and notes, one per line.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let sources: Vec<String> = self.sources.iter().map(|path| path.display().to_string()).collect();
        let sources = sources.join(", ");
        if self.imported.is_empty() {
            lines.push(format!("nothing to import from {sources}"));
        } else {
            let verb = if self.dry_run { "would import" } else { "imported" };
            let count = self.imported.len();
            let noun = if count == 1 { "server" } else { "servers" };
            let names: Vec<String> = self
                .imported
                .iter()
                .map(|imported| {
                    let replaced = if imported.replaced { ", replacing the entry" } else { "" };
                    format!("{} ({}{replaced})", imported.name, imported.transport)
                })
                .collect();
            lines.push(format!(
                "{verb} {count} {noun} from {sources} into {}: {}",
                self.config.display(),
                names.join(", ")
            ));
        }
        for skipped in &self.skipped {
            lines.push(format!("not imported: server `{}`: {}", skipped.server, skipped.reason));
        }
        for note in &self.notes {
            lines.push(note.to_string());
        }
        if !self.exports.is_empty() {
            lines.push(
                "set these variables in corrald's environment (the config names them; their values were not copied):"
                    .to_owned(),
            );
            let width = self
                .exports
                .iter()
                .map(|export| export.variable.len())
                .max()
                .unwrap_or(0);
            for export in &self.exports {
                lines.push(format!(
                    "  {:width$}  server `{}`, {}",
                    export.variable, export.server, export.field
                ));
            }
        }
        lines
    }
}
