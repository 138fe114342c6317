//! One server on its way from a client's file into Corral's: the fields as
//! Corral names them, what could not be mapped, and the secrets kept out.
//!
//! Every client format reads its own file and feeds the values through
//! [`ServerDraft`], which owns the rules they share: which values are secrets
//! (kept out of the file, turned into a variable name for corrald's
//! environment), how `${…}` variables are handled, and how the entry is
//! written as a `[servers.NAME]` table. Those rules are for Corral's config
//! file; a session server of `corral mcp --config` is made as the client
//! would have run it ([`Destination`]).
//!
//! Invariant: no note, export or error quotes a value from the client's file
//! (it may be a secret); they name servers, fields, variables and headers.

use std::path::{Path, PathBuf};

use toml_edit::{Array, InlineTable, Item, Table, value};

/// How a client writes variables in its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variables {
    /// No variables (Claude Desktop, Zed, Codex): `${…}` is literal text.
    None,
    /// Claude Code's `.mcp.json`: `${VAR}` and `${VAR:-default}`.
    Shell,
    /// VS Code and Cursor: `${env:VAR}`, `${input:ID}`, `${userHome}`, `${workspaceFolder}`, …
    Editor,
}

/// Where a server entry goes, which decides what happens to secrets and variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination {
    /// Corral's config file (`corral config import`): secrets stay out of it, as variable
    /// names for corrald's environment, and variables are not expanded (the file would keep
    /// their values).
    ConfigFile,
    /// A session server of one `corral mcp` (`--config`): the entry goes over the private
    /// socket to corrald and lives as long as the client, so it is made as the client would
    /// have run the server: `${VAR}` and `${env:VAR}` are expanded from the bridge's
    /// environment (the client's), and values are kept as written, secrets included.
    Session,
}

/// What a server's values may refer to.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// The client, as `--from` names it, for messages.
    pub(crate) client: &'static str,
    pub(crate) variables: Variables,
    /// The user's home directory, for `${userHome}`.
    pub(crate) home: Option<PathBuf>,
    /// The workspace the file belongs to (`.vscode/mcp.json`, `.cursor/mcp.json`), for `${workspaceFolder}`.
    pub(crate) workspace: Option<PathBuf>,
    pub(crate) destination: Destination,
}

/// Something the user should know about one server: a field not mapped, a value changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Note {
    pub(crate) server: String,
    /// The field in the client's file, e.g. `envFile`, `env.GITHUB_TOKEN`, `args[2]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "server `{}`, field `{field}`: {}", self.server, self.message),
            None => write!(f, "server `{}`: {}", self.server, self.message),
        }
    }
}

/// A variable the user must set in corrald's environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Export {
    pub(crate) variable: String,
    pub(crate) server: String,
    /// Where the value was in the client's file, e.g. `env.GITHUB_TOKEN`, `headers.Authorization`.
    pub(crate) field: String,
}

/// A Corral server entry being built from a client's entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Server {
    pub(crate) command: Option<String>,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) env_vars: Vec<String>,
    pub(crate) cwd: Option<String>,
    pub(crate) url: Option<String>,
    pub(crate) bearer_token_env_var: Option<String>,
    pub(crate) http_headers: Vec<(String, String)>,
    pub(crate) env_http_headers: Vec<(String, String)>,
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) oauth_resource: Option<String>,
    pub(crate) oauth_client_id: Option<String>,
    pub(crate) oauth_client_secret_env_var: Option<String>,
    pub(crate) enabled: Option<bool>,
    pub(crate) startup_timeout_sec: Option<f64>,
    pub(crate) tool_timeout_sec: Option<f64>,
    pub(crate) enabled_tools: Option<Vec<String>>,
    pub(crate) disabled_tools: Option<Vec<String>>,
}

/// A server as one client entry makes it, with what the user must know.
#[derive(Debug, Clone)]
pub(crate) struct ServerDraft {
    /// The name in Corral's config.
    pub(crate) name: String,
    /// The name in the client's file.
    pub(crate) client_name: String,
    pub(crate) server: Server,
    pub(crate) notes: Vec<Note>,
    pub(crate) exports: Vec<Export>,
    /// Inline secret values by variable, to tell two different values for one variable apart
    /// across servers; never printed.
    pub(crate) secret_values: Vec<(String, String)>,
    /// Set when the entry cannot become a Corral server at all: why.
    pub(crate) unusable: Option<String>,
    /// The project directory the entry belongs to, when the client keeps servers per project.
    pub(crate) project: Option<String>,
}

/// Placeholder written where a secret had to be left out of an argument or URL.
pub(crate) const SECRET_PLACEHOLDER: &str = "SECRET-NOT-IMPORTED";

impl ServerDraft {
    /// A draft for the client's entry `client_name`; the Corral name is derived from it.
    pub(crate) fn new(client_name: &str) -> Self {
        let name = corral_name(client_name);
        let mut draft = Self {
            name: name.clone(),
            client_name: client_name.to_owned(),
            server: Server::default(),
            notes: Vec::new(),
            exports: Vec::new(),
            secret_values: Vec::new(),
            unusable: None,
            project: None,
        };
        if name != client_name {
            draft.note(
                None,
                format!(
                    "imported as `{name}`: Corral server names are ASCII letters, digits, `_` and `-` (at most {} bytes)",
                    corral_client::protocol::config::MAX_SERVER_NAME_BYTES
                ),
            );
        }
        draft
    }

    /// Say something about `field` (or the whole server).
    pub(crate) fn note(&mut self, field: Option<&str>, message: impl Into<String>) {
        self.notes.push(Note {
            server: self.client_name.clone(),
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    /// A field Corral has no equivalent for.
    pub(crate) fn not_mapped(&mut self, field: &str, why: &str) {
        self.note(Some(field), format!("not imported: {why}"));
    }

    fn export(&mut self, variable: &str, field: &str) {
        if !self.exports.iter().any(|export| export.variable == variable) {
            self.exports.push(Export {
                variable: variable.to_owned(),
                server: self.client_name.clone(),
                field: field.to_owned(),
            });
        }
    }

    fn env_var(&mut self, variable: &str) {
        if !self.server.env_vars.iter().any(|known| known == variable) {
            self.server.env_vars.push(variable.to_owned());
        }
    }

    /// A text field (`command`, `args[i]`, `cwd`, `url`): variables Corral can resolve now are
    /// resolved; the others are kept as written and named in a note.
    pub(crate) fn text(&mut self, context: &Context, field: &str, text: &str) -> String {
        let references = references_in(context.variables, text);
        if references.is_empty() {
            return text.to_owned();
        }
        let mut out = String::new();
        let mut last = 0;
        for reference in &references {
            out.push_str(&text[last..reference.span.start]);
            last = reference.span.end;
            let written = &text[reference.span.clone()];
            if context.destination == Destination::Session
                && let Reference::Env { name, default } = &reference.kind
            {
                match from_environment(name, default.as_deref()) {
                    Some(value) => out.push_str(&value),
                    None => {
                        self.note(
                            Some(field),
                            format!(
                                "`{name}` is not set in the environment of corral mcp: `{written}` is left as written"
                            ),
                        );
                        out.push_str(written);
                    }
                }
                continue;
            }
            if let Reference::Env {
                name,
                default: Some(default),
            } = &reference.kind
            {
                // `${VAR:-default}`: what the client uses when VAR is unset. The default is not
                // quoted in the note: it could be anything.
                self.note(
                    Some(field),
                    format!(
                        "`${{{name}:-…}}` replaced by its default: Corral does not expand variables; \
                         if `{name}` is set where {} runs, write its value instead",
                        context.client
                    ),
                );
                out.push_str(default);
                continue;
            }
            match resolve(context, &reference.kind) {
                Some(resolved) => {
                    self.note(Some(field), format!("`{written}` replaced by `{}`", resolved.display()));
                    out.push_str(&resolved.to_string_lossy());
                }
                None => {
                    let hint = match &reference.kind {
                        Reference::Env { name, .. } => format!(
                            "Corral does not expand variables here: copied as written; write the value of `{name}` instead"
                        ),
                        Reference::Input(id) => format!(
                            "{} asks for input `{id}` when it starts the server; Corral cannot: copied as written, replace it by hand",
                            context.client
                        ),
                        _ => format!(
                            "{} fills in `{written}`; Corral cannot: copied as written",
                            context.client
                        ),
                    };
                    self.note(Some(field), hint);
                    out.push_str(written);
                }
            }
        }
        out.push_str(&text[last..]);
        out
    }

    /// `args`: each argument through [`Self::text`]; an argument that looks secret (or follows a
    /// flag whose name does) is left out: Corral cannot take an argument from the environment.
    pub(crate) fn args(&mut self, context: &Context, field: &str, args: &[String]) {
        let mut previous_flag_secret = false;
        for (index, arg) in args.iter().enumerate() {
            let item_field = format!("{field}[{index}]");
            let mut arg = self.text(context, &item_field, arg);
            if context.destination == Destination::Session {
                self.server.args.push(arg);
                continue;
            }
            let flag_value = arg
                .strip_prefix("--")
                .and_then(|flag| flag.split_once('='))
                .map(|(flag, value)| (flag.to_owned(), value.to_owned()));
            // Only clear signs count here: a false alarm disables the server.
            let secret = match &flag_value {
                Some((flag, value)) => name_looks_secret(flag) || value_is_credential(value),
                None => previous_flag_secret && !arg.starts_with('-') || value_is_credential(&arg),
            };
            if secret {
                arg = match &flag_value {
                    Some((flag, _)) => format!("--{flag}={SECRET_PLACEHOLDER}"),
                    None => SECRET_PLACEHOLDER.to_owned(),
                };
                self.server.enabled = Some(false);
                self.note(
                    Some(&item_field),
                    format!(
                        "looks like a secret: not copied (written as `{SECRET_PLACEHOLDER}`), and the server is imported disabled; \
                         Corral cannot pass an argument from the environment: put the value in by hand, or configure the server through an environment variable"
                    ),
                );
            }
            previous_flag_secret = arg.starts_with('-') && !arg.contains('=') && name_looks_secret(&arg);
            self.server.args.push(arg);
        }
    }

    /// One `env` entry. Secrets (by name or value) and variables become `env_vars`, named in
    /// an export; other values are copied.
    pub(crate) fn env(&mut self, context: &Context, field: &str, key: &str, value: &str) {
        let item_field = format!("{field}.{key}");
        if context.destination == Destination::Session {
            let value = self.text(context, &item_field, value);
            self.server.env.push((key.to_owned(), value));
            return;
        }
        let references = references_in(context.variables, value);
        if let Some(reference) = references.first() {
            let whole = references.len() == 1 && reference.span == (0..value.len());
            match (&reference.kind, whole) {
                (Reference::Env { name, default }, true) => {
                    self.env_var(key);
                    self.export(key, &item_field);
                    if name != key {
                        self.note(
                            Some(&item_field),
                            format!(
                                "{} set it from `{name}`; corrald passes `{key}` through by its own name: export `{key}`",
                                context.client
                            ),
                        );
                    }
                    if default.is_some() {
                        self.note(
                            Some(&item_field),
                            "the default after `:-` is not kept: export the variable",
                        );
                    }
                    return;
                }
                (Reference::Input(id), true) => {
                    self.env_var(key);
                    self.export(key, &item_field);
                    self.note(
                        Some(&item_field),
                        format!(
                            "{} asked for it (input `{id}`); corrald passes `{key}` through from its environment",
                            context.client
                        ),
                    );
                    return;
                }
                (Reference::Env { .. } | Reference::Input(_), false) => {
                    self.env_var(key);
                    self.export(key, &item_field);
                    self.note(
                        Some(&item_field),
                        "the value mixes text and variables, which Corral does not expand: export the whole value as this variable",
                    );
                    return;
                }
                _ => {}
            }
        }
        let value = self.text(context, &item_field, value);
        if name_looks_secret(key) || value_looks_secret(&value) {
            self.env_var(key);
            self.export(key, &item_field);
            self.secret_values.push((key.to_owned(), value));
            return;
        }
        self.server.env.push((key.to_owned(), value));
    }

    /// One HTTP header. `Authorization: Bearer …` becomes `bearer_token_env_var`; other secrets
    /// and variables become `env_http_headers`; the rest is copied to `http_headers`.
    pub(crate) fn header(&mut self, context: &Context, field: &str, name: &str, value: &str) {
        let item_field = format!("{field}.{name}");
        if context.destination == Destination::Session {
            let value = self.text(context, &item_field, value);
            self.server.http_headers.push((name.to_owned(), value));
            return;
        }
        let is_authorization = name.eq_ignore_ascii_case("authorization");
        let bearer = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .map(|_| value[7..].trim());
        let references = references_in(context.variables, value);
        if is_authorization && let Some(token) = bearer {
            let token_references = references_in(context.variables, token);
            let variable = match token_references.as_slice() {
                [reference] if reference.span == (0..token.len()) => match &reference.kind {
                    Reference::Env { name, default } => {
                        if default.is_some() {
                            self.note(
                                Some(&item_field),
                                "the default after `:-` is not kept: export the variable",
                            );
                        }
                        name.clone()
                    }
                    Reference::Input(id) => {
                        self.note(
                            Some(&item_field),
                            format!("{} asked for the token (input `{id}`)", context.client),
                        );
                        derived_variable(&self.name, "TOKEN")
                    }
                    _ => derived_variable(&self.name, "TOKEN"),
                },
                [] => {
                    self.secret_values
                        .push((derived_variable(&self.name, "TOKEN"), token.to_owned()));
                    derived_variable(&self.name, "TOKEN")
                }
                _ => {
                    self.note(
                        Some(&item_field),
                        "the token mixes text and variables, which Corral does not expand: export the whole token as this variable",
                    );
                    derived_variable(&self.name, "TOKEN")
                }
            };
            self.server.bearer_token_env_var = Some(variable.clone());
            self.export(&variable, &item_field);
            return;
        }
        let whole_reference = match references.as_slice() {
            [reference] if reference.span == (0..value.len()) => Some(reference.kind.clone()),
            _ => None,
        };
        let variable = match whole_reference {
            Some(Reference::Env { name, default }) => {
                if default.is_some() {
                    self.note(
                        Some(&item_field),
                        "the default after `:-` is not kept: export the variable",
                    );
                }
                Some(name)
            }
            Some(Reference::Input(id)) => {
                self.note(
                    Some(&item_field),
                    format!("{} asked for it (input `{id}`)", context.client),
                );
                Some(derived_variable(&self.name, &header_suffix(name)))
            }
            _ if !references.is_empty()
                && references
                    .iter()
                    .any(|reference| matches!(reference.kind, Reference::Env { .. } | Reference::Input(_))) =>
            {
                self.note(
                    Some(&item_field),
                    "the value mixes text and variables, which Corral does not expand: export the whole value as this variable",
                );
                Some(derived_variable(&self.name, &header_suffix(name)))
            }
            _ if is_authorization || header_looks_secret(name) || value_looks_secret(value) => {
                let variable = derived_variable(&self.name, &header_suffix(name));
                self.secret_values.push((variable.clone(), value.to_owned()));
                Some(variable)
            }
            _ => None,
        };
        match variable {
            Some(variable) => {
                self.export(&variable, &item_field);
                self.server.env_http_headers.push((name.to_owned(), variable));
            }
            None => {
                let value = self.text(context, &item_field, value);
                self.server.http_headers.push((name.to_owned(), value));
            }
        }
    }

    /// `url`: variables as in [`Self::text`]; a password in it or a secret-looking query
    /// parameter is left out and the server imported disabled.
    pub(crate) fn url(&mut self, context: &Context, field: &str, url: &str) {
        let mut url = self.text(context, field, url);
        if context.destination == Destination::Session {
            self.server.url = Some(url);
            return;
        }
        let (cleaned, removed) = strip_url_secrets(&url);
        if removed {
            url = cleaned;
            self.server.enabled = Some(false);
            self.note(
                Some(field),
                format!(
                    "holds a secret (a password or a key in the query): not copied (written as `{SECRET_PLACEHOLDER}`), and the server is imported disabled; \
                     put the key in a header from the environment (`env_http_headers`) if the server takes one, or in the URL by hand"
                ),
            );
        }
        self.server.url = Some(url);
    }

    /// An OAuth client secret: kept out, as a variable.
    pub(crate) fn oauth_client_secret(&mut self, field: &str, secret: &str) {
        let variable = derived_variable(&self.name, "OAUTH_CLIENT_SECRET");
        self.secret_values.push((variable.clone(), secret.to_owned()));
        self.server.oauth_client_secret_env_var = Some(variable.clone());
        self.export(&variable, field);
    }

    /// A bearer token written inline (Codex's `bearer_token`): kept out, as a variable.
    pub(crate) fn bearer_token(&mut self, field: &str, token: &str) {
        let variable = derived_variable(&self.name, "TOKEN");
        self.secret_values.push((variable.clone(), token.to_owned()));
        self.server.bearer_token_env_var = Some(variable.clone());
        self.export(&variable, field);
    }

    /// The entry cannot become a Corral server: why (the first reason is kept).
    pub(crate) fn mark_unusable(&mut self, why: impl Into<String>) {
        if self.unusable.is_none() {
            self.unusable = Some(why.into());
        }
    }
}

/// The `[servers.NAME]` table for `server`, fields in the order `docs/configuration.md` lists them.
pub(crate) fn server_table(server: &Server) -> Table {
    let mut table = Table::new();
    let strings = |items: &[String]| -> Array { items.iter().map(String::as_str).collect() };
    let pairs = |items: &[(String, String)]| -> InlineTable {
        let mut inline = InlineTable::new();
        for (key, item) in items {
            inline.insert(key, item.as_str().into());
        }
        inline
    };
    if let Some(command) = &server.command {
        table.insert("command", value(command.as_str()));
        if !server.args.is_empty() {
            table.insert("args", value(strings(&server.args)));
        }
        if !server.env.is_empty() {
            table.insert("env", value(pairs(&server.env)));
        }
        if !server.env_vars.is_empty() {
            table.insert("env_vars", value(strings(&server.env_vars)));
        }
        if let Some(cwd) = &server.cwd {
            table.insert("cwd", value(cwd.as_str()));
        }
    }
    if let Some(url) = &server.url {
        table.insert("url", value(url.as_str()));
        if let Some(variable) = &server.bearer_token_env_var {
            table.insert("bearer_token_env_var", value(variable.as_str()));
        }
        if !server.http_headers.is_empty() {
            table.insert("http_headers", value(pairs(&server.http_headers)));
        }
        if !server.env_http_headers.is_empty() {
            table.insert("env_http_headers", value(pairs(&server.env_http_headers)));
        }
        if let Some(scopes) = &server.scopes {
            table.insert("scopes", value(strings(scopes)));
        }
        if let Some(resource) = &server.oauth_resource {
            table.insert("oauth_resource", value(resource.as_str()));
        }
        if let Some(client_id) = &server.oauth_client_id {
            table.insert("oauth_client_id", value(client_id.as_str()));
        }
        if let Some(variable) = &server.oauth_client_secret_env_var {
            table.insert("oauth_client_secret_env_var", value(variable.as_str()));
        }
    }
    if let Some(enabled) = server.enabled {
        table.insert("enabled", value(enabled));
    }
    for (key, seconds) in [
        ("startup_timeout_sec", server.startup_timeout_sec),
        ("tool_timeout_sec", server.tool_timeout_sec),
    ] {
        if let Some(seconds) = seconds {
            table.insert(key, seconds_value(seconds));
        }
    }
    if let Some(tools) = &server.enabled_tools {
        table.insert("enabled_tools", value(strings(tools)));
    }
    if let Some(tools) = &server.disabled_tools {
        table.insert("disabled_tools", value(strings(tools)));
    }
    table
}

/// Whole seconds as an integer (`30`), others as a float (`2.5`).
fn seconds_value(seconds: f64) -> Item {
    if seconds.fract() == 0.0 && seconds.abs() < 1e15 {
        // Exact: a whole number well inside i64.
        value(seconds as i64)
    } else {
        value(seconds)
    }
}

/// A Corral server name for a client's: disallowed characters become `-`.
pub(crate) fn corral_name(client_name: &str) -> String {
    let mut name = String::new();
    for character in client_name.chars() {
        if character.is_ascii_alphanumeric() || character == '_' || character == '-' {
            name.push(character);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let mut name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        name = "server".to_owned();
    }
    name.truncate(corral_client::protocol::config::MAX_SERVER_NAME_BYTES);
    name
}

/// `SERVER_SUFFIX`, upper case: the variable a secret of server `server` goes to.
pub(crate) fn derived_variable(server: &str, suffix: &str) -> String {
    let mut variable = String::new();
    for character in format!("{server}_{suffix}").chars() {
        if character.is_ascii_alphanumeric() {
            variable.push(character.to_ascii_uppercase());
        } else if !variable.ends_with('_') {
            variable.push('_');
        }
    }
    variable.trim_matches('_').to_owned()
}

/// The part of a header name a variable is named after: `X-Api-Key` → `API_KEY`.
fn header_suffix(header: &str) -> String {
    let trimmed = header
        .strip_prefix("X-")
        .or_else(|| header.strip_prefix("x-"))
        .unwrap_or(header);
    trimmed.replace('-', "_").to_ascii_uppercase()
}

/// Whether an environment variable or flag name says it holds a secret.
pub(crate) fn name_looks_secret(name: &str) -> bool {
    name.split(|character: char| !character.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(str::to_ascii_uppercase)
        .any(|part| {
            [
                "TOKEN",
                "SECRET",
                "PASSWORD",
                "PASSWD",
                "CREDENTIAL",
                "APIKEY",
                "PRIVATE",
            ]
            .iter()
            .any(|word| part.contains(word))
                || matches!(part.as_str(), "KEY" | "AUTH" | "PAT" | "COOKIE" | "PASS")
                || part.ends_with("KEY") && part.len() <= 12
                || part.starts_with("AUTH") && !part.starts_with("AUTHOR")
        })
}

/// Whether a header name says it carries a credential.
fn header_looks_secret(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || name_looks_secret(name)
}

/// Whether a value looks like a credential: [`value_is_credential`], or a long
/// random-looking string.
pub(crate) fn value_looks_secret(value: &str) -> bool {
    let value = value.trim();
    if value_is_credential(value) {
        return true;
    }
    value.len() >= 32
        && value
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "-_+=".contains(character))
        && value.chars().any(|character| character.is_ascii_digit())
        && value.chars().any(|character| character.is_ascii_alphabetic())
        && !is_uuid(value)
}

/// Whether a value is clearly a credential: a known token prefix, a JWT, an authorization
/// scheme with credentials, or a URL with a password.
fn value_is_credential(value: &str) -> bool {
    let value = value.trim();
    const PREFIXES: [&str; 24] = [
        "sk-",
        "sk_",
        "pk_live_",
        "rk_live_",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "glpat-",
        "xoxb-",
        "xoxp-",
        "xoxa-",
        "xapp-",
        "AKIA",
        "AIza",
        "ya29.",
        "eyJ",
        "shpat_",
        "npm_",
        "lin_api_",
        "hf_",
        "ntn_",
    ];
    if PREFIXES.iter().any(|prefix| value.starts_with(prefix)) && value.len() >= 12 {
        return true;
    }
    let lower = value.to_ascii_lowercase();
    if (lower.starts_with("bearer ") || lower.starts_with("basic ") || lower.starts_with("token ")) && value.len() > 10
    {
        return true;
    }
    url_password(value)
}

fn is_uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    groups.len() == 5
        && groups.iter().map(|group| group.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|group| group.chars().all(|character| character.is_ascii_hexdigit()))
}

/// Whether `value` is a URL with a password in it (`scheme://user:password@host`).
fn url_password(value: &str) -> bool {
    let Some((_, rest)) = value.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rsplit_once('@').is_some_and(|(userinfo, _)| {
        userinfo
            .split_once(':')
            .is_some_and(|(_, password)| !password.is_empty())
    })
}

/// `url` without a password and with secret-looking query values replaced; whether anything was.
fn strip_url_secrets(url: &str) -> (String, bool) {
    let mut removed = false;
    let mut url = url.to_owned();
    if url_password(&url)
        && let Some(scheme_end) = url.find("://")
    {
        let authority_start = scheme_end + 3;
        let authority_end = url[authority_start..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |index| authority_start + index);
        if let Some(at) = url[authority_start..authority_end].rfind('@') {
            let userinfo = &url[authority_start..authority_start + at];
            if let Some((user, _)) = userinfo.split_once(':') {
                let replaced = format!("{user}:{SECRET_PLACEHOLDER}");
                url.replace_range(authority_start..authority_start + at, &replaced);
                removed = true;
            }
        }
    }
    if let Some(query_start) = url.find('?') {
        let fragment_start = url[query_start..]
            .find('#')
            .map_or(url.len(), |index| query_start + index);
        let query = &url[query_start + 1..fragment_start];
        let mut changed = false;
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, item)) if !item.is_empty() && (name_looks_secret(key) || value_looks_secret(item)) => {
                    changed = true;
                    format!("{key}={SECRET_PLACEHOLDER}")
                }
                _ => pair.to_owned(),
            })
            .collect();
        if changed {
            url.replace_range(query_start + 1..fragment_start, &parts.join("&"));
            removed = true;
        }
    }
    (url, removed)
}

/// A `${…}` in a value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Located {
    span: std::ops::Range<usize>,
    kind: Reference,
}

/// What a `${…}` refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reference {
    Env { name: String, default: Option<String> },
    Input(String),
    UserHome,
    WorkspaceFolder,
    Other,
}

fn references_in(variables: Variables, text: &str) -> Vec<Located> {
    if variables == Variables::None {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(start) = text[from..].find("${").map(|index| from + index) {
        let Some(end) = text[start..].find('}').map(|index| start + index) else {
            break;
        };
        let inner = &text[start + 2..end];
        let kind = match variables {
            Variables::Shell => match inner.split_once(":-") {
                Some((name, default)) => Reference::Env {
                    name: name.to_owned(),
                    default: Some(default.to_owned()),
                },
                None => Reference::Env {
                    name: inner.to_owned(),
                    default: None,
                },
            },
            Variables::Editor => {
                if let Some(name) = inner.strip_prefix("env:") {
                    Reference::Env {
                        name: name.to_owned(),
                        default: None,
                    }
                } else if let Some(id) = inner.strip_prefix("input:") {
                    Reference::Input(id.to_owned())
                } else if inner == "userHome" {
                    Reference::UserHome
                } else if inner == "workspaceFolder" {
                    Reference::WorkspaceFolder
                } else {
                    Reference::Other
                }
            }
            Variables::None => Reference::Other,
        };
        found.push(Located {
            span: start..end + 1,
            kind,
        });
        from = end + 1;
    }
    found
}

/// `${NAME}` (or `${NAME:-default}`) as the client would expand it: the bridge's own
/// environment is the client's.
fn from_environment(name: &str, default: Option<&str>) -> Option<String> {
    let value = std::env::var(name).ok();
    match default {
        // The shell's `:-`: the default also stands in for an empty value.
        Some(default) => Some(
            value
                .filter(|value| !value.is_empty())
                .unwrap_or_else(|| default.to_owned()),
        ),
        None => value,
    }
}

fn resolve(context: &Context, reference: &Reference) -> Option<PathBuf> {
    match reference {
        Reference::UserHome => context.home.clone(),
        Reference::WorkspaceFolder => context.workspace.clone(),
        _ => None,
    }
}

/// The workspace folder of a project file such as `<workspace>/.vscode/mcp.json`, when `file`
/// is in a directory named `dir_name`.
pub(crate) fn workspace_of(file: &Path, dir_name: &str) -> Option<PathBuf> {
    let parent = file.parent()?;
    if parent.file_name()? == dir_name {
        let workspace = parent.parent()?;
        std::path::absolute(workspace).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_and_values() {
        for name in [
            "GITHUB_TOKEN",
            "GITHUB_PERSONAL_ACCESS_TOKEN",
            "OPENAI_API_KEY",
            "APIKEY",
            "DB_PASSWORD",
            "CLIENT_SECRET",
            "AUTH",
            "X-Api-Key",
            "--api-key",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(name_looks_secret(name), "{name}");
        }
        for name in [
            "LOG_LEVEL",
            "AUTHOR_NAME",
            "PATH",
            "KEYBOARD_LAYOUT",
            "NODE_ENV",
            "PWD",
            "MONKEYPATCHING_ENABLED",
        ] {
            assert!(!name_looks_secret(name), "{name}");
        }
        for value in [
            "ghp_0123456789abcdefABCDEF0123456789abcd",
            "sk-proj-abcdefghijklmnop",
            "Bearer abc.def.ghi",
            "postgres://ada:hunter2@db.example/prod",
            "Z2hwX3h4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4",
        ] {
            assert!(value_looks_secret(value), "{value}");
        }
        for value in [
            "debug",
            "/home/ada/projects/some-long-directory-name/x1",
            "https://api.example.com/v1",
            "123e4567-e89b-12d3-a456-426614174000",
            "postgres://ada@db.example/prod",
        ] {
            assert!(!value_looks_secret(value), "{value}");
        }
    }

    #[test]
    fn url_secrets_are_replaced() {
        assert_eq!(
            strip_url_secrets("https://ada:pw@host.example/mcp?api_key=abc&x=1#f"),
            (
                format!("https://ada:{SECRET_PLACEHOLDER}@host.example/mcp?api_key={SECRET_PLACEHOLDER}&x=1#f"),
                true
            )
        );
        assert_eq!(
            strip_url_secrets("https://host.example/mcp?x=1"),
            ("https://host.example/mcp?x=1".to_owned(), false)
        );
    }

    #[test]
    fn names_and_variables_are_derived_readably() {
        assert_eq!(corral_name("github"), "github");
        assert_eq!(corral_name("My Server (beta)"), "My-Server-beta");
        assert_eq!(corral_name("@scope/pkg.name"), "scope-pkg-name");
        assert_eq!(corral_name("…"), "server");
        assert_eq!(derived_variable("github", "TOKEN"), "GITHUB_TOKEN");
        assert_eq!(
            derived_variable("my-linear", &header_suffix("X-Api-Key")),
            "MY_LINEAR_API_KEY"
        );
    }

    #[test]
    fn references_are_found_by_syntax() {
        let shell = references_in(Variables::Shell, "a ${X:-d} b ${Y}");
        assert_eq!(shell.len(), 2);
        assert_eq!(
            shell[0].kind,
            Reference::Env {
                name: "X".to_owned(),
                default: Some("d".to_owned())
            }
        );
        let editor = references_in(
            Variables::Editor,
            "${input:k}${userHome}/x${workspaceFolder}${pathSeparator}",
        );
        assert_eq!(
            editor.iter().map(|found| found.kind.clone()).collect::<Vec<_>>(),
            [
                Reference::Input("k".to_owned()),
                Reference::UserHome,
                Reference::WorkspaceFolder,
                Reference::Other
            ]
        );
        assert!(references_in(Variables::None, "${X}").is_empty());
    }
}
