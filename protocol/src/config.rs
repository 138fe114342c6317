//! The config file: TOML, one `[servers.NAME]` table per MCP server.
//!
//! This module is the single owner of the format: parsing, validation with
//! precise errors (file, line, server, field), defaults and the JSON Schema
//! that editors use to autocomplete the file. It lives in the protocol crate
//! because the file is a public interface: `corral config check` validates it
//! without a daemon, and the daemon loads it with the same code.
//!
//! The text is read with toml's spanned document model ([`DeTable`]) rather
//! than serde structs, so that each check writes its own message, points at
//! the exact key or value, and one pass reports every problem instead of
//! stopping at the first. `FIELDS` is the one list of server fields: it
//! drives unknown-field detection, the wrong-transport check, typo
//! suggestions and the JSON Schema, so they cannot drift apart.
//!
//! Invariant: no message quotes a string value that may be a secret (header
//! values, `env` values, tokens, arguments, URLs). Messages quote keys,
//! environment variable names, header names, transports, numbers and `cwd`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use toml::Spanned;
use toml::de::{DeInteger, DeTable, DeValue};

mod grant;

pub use grant::{ClientAuth, IdentityProvider, JwtAlgorithm, OAuthGrant, SecretMethod, SecretSource};

/// The longest duration any `*_sec` field accepts: one year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Default for `startup_timeout_sec`.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for `stop_timeout_sec`: how long stopping a server may take in all.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_millis(2500);
/// Default for `restart_backoff_initial_sec`.
pub const DEFAULT_RESTART_BACKOFF_INITIAL: Duration = Duration::from_millis(500);
/// Default for `restart_backoff_max_sec`.
pub const DEFAULT_RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Default for `crash_loop_limit`.
pub const DEFAULT_CRASH_LOOP_LIMIT: u32 = 5;
/// Window in which `crash_loop_limit` crashes mark a server `crashLoop`.
pub const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(120);
/// Default for `tool_timeout_sec`.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Default for `[mcp_endpoint]`'s `listen`: loopback only, a fixed port so a client's URL stays valid.
pub const DEFAULT_MCP_ENDPOINT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7767));

/// The only top-level key.
const SERVERS_KEY: &str = "servers";
/// Server names, as a JSON Schema pattern; [`check_server_name`] is the same rule in code.
const SERVER_NAME_PATTERN: &str = "^[A-Za-z0-9_-]+$";
/// Longest server name, in bytes, for config and session servers alike: a
/// name travels in every notification about its server and is kept in the
/// replay history, so it must be small.
pub const MAX_SERVER_NAME_BYTES: usize = 128;
/// Room a session server's registry name takes beyond the name its client
/// gave it: the daemon registers `NAME-cID`, ID being the connection's
/// number (a `u64`: up to 20 digits).
pub const SESSION_SERVER_SUFFIX_BYTES: usize = "-c".len() + 20;
/// Longest name of a client's own server (`corral mcp --config`), in bytes:
/// [`MAX_SERVER_NAME_BYTES`] with room for [`SESSION_SERVER_SUFFIX_BYTES`].
pub const MAX_SESSION_SERVER_NAME_BYTES: usize = MAX_SERVER_NAME_BYTES - SESSION_SERVER_SUFFIX_BYTES;
/// Longest separator between a server's name and its tool's in the names an
/// MCP client sees (`corral mcp --separator`), in characters.
pub const MAX_SEPARATOR_CHARS: usize = 8;
/// Environment variable names, as a JSON Schema pattern; [`env_var_name`] is the same rule in code.
const ENV_VAR_NAME_PATTERN: &str = "^[^=\\u0000]+$";
/// HTTP header names (RFC 9110 tokens), as a JSON Schema pattern; [`header_name`] is the same
/// rule in code.
const HEADER_NAME_PATTERN: &str = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$";
/// Punctuation allowed in an HTTP header name besides letters and digits.
const HEADER_NAME_PUNCTUATION: &str = "!#$%&'*+-.^_`|~";

/// A validated config.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Servers by name.
    pub servers: BTreeMap<String, ServerConfig>,
    /// `credentials_store`: where OAuth credentials are kept (default `auto`).
    pub credentials_store: CredentialsStoreMode,
    /// `oauth_callback_port`: port of the loopback OAuth callback listener (default: ephemeral).
    pub oauth_callback_port: Option<u16>,
    /// `oauth_callback_url`: redirect URI given to authorization servers instead of the loopback one.
    pub oauth_callback_url: Option<String>,
    /// `oauth_opener`: program and arguments that open an authorization URL (appended as the
    /// last argument); default: the system browser.
    pub oauth_opener: Option<Vec<String>>,
    /// `[mcp_endpoint]`: the loopback streamable-HTTP MCP endpoint (off by default).
    pub mcp_endpoint: McpEndpointConfig,
}

/// The `[mcp_endpoint]` table: corrald as one MCP server over streamable HTTP, for MCP
/// clients that take a URL rather than a command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct McpEndpointConfig {
    /// `enabled` (default false): serve the endpoint.
    pub enabled: bool,
    /// `listen` (default `127.0.0.1:7767`): the address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// `allow_non_loopback` (default false): accept a `listen` address that is not loopback.
    pub allow_non_loopback: bool,
    /// `allowed_origins`: `Origin`s accepted besides the endpoint's own loopback ones.
    pub allowed_origins: Vec<String>,
    /// `allow_session_servers` (default false): an endpoint session may start servers of its
    /// own (`_meta["corral/bridge"].sessionServers` in its `initialize`), which lets whoever
    /// holds the token run commands as the user.
    pub allow_session_servers: bool,
}

impl Default for McpEndpointConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: DEFAULT_MCP_ENDPOINT_LISTEN,
            allow_non_loopback: false,
            allowed_origins: Vec::new(),
            allow_session_servers: false,
        }
    }
}

/// Where OAuth credentials are stored: the `credentials_store` key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialsStoreMode {
    /// The OS keyring, or the plain file when no keyring is available.
    #[default]
    Auto,
    /// The OS keyring only.
    Keyring,
    /// A 0600 file in the data directory.
    File,
    /// A file in the data directory encrypted with a key kept in the keyring (or a key file).
    EncryptedFile,
}

impl CredentialsStoreMode {
    /// Every mode, in the order the docs list them.
    pub const ALL: [CredentialsStoreMode; 4] = [Self::Auto, Self::Keyring, Self::File, Self::EncryptedFile];

    /// The value as written in the config file, e.g. `encrypted-file`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Keyring => "keyring",
            Self::File => "file",
            Self::EncryptedFile => "encrypted-file",
        }
    }

    /// The mode a config value names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.as_str() == name)
    }
}

impl std::fmt::Display for CredentialsStoreMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One validated `[servers.NAME]` entry.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The table name.
    pub name: String,
    /// How to reach the server.
    pub transport: TransportConfig,
    /// `enabled` (default true).
    pub enabled: bool,
    /// `startup_timeout_sec` (default 30 s).
    pub startup_timeout: Duration,
    /// `tool_timeout_sec` (default 120 s).
    pub tool_timeout: Duration,
    /// `enabled_tools`: when set, only these tools are offered.
    pub enabled_tools: Option<Vec<String>>,
    /// `disabled_tools`: never offered, applied after `enabled_tools`.
    pub disabled_tools: Vec<String>,
    /// `stop_timeout_sec`: the bound on stopping the server's process tree (default 2.5 s).
    pub stop_timeout: Duration,
    /// `restart_backoff_initial_sec`: delay before the first restart after a crash (default 0.5 s).
    pub restart_backoff_initial: Duration,
    /// `restart_backoff_max_sec`: the longest delay between restarts (default 30 s).
    pub restart_backoff_max: Duration,
    /// `crash_loop_limit`: crashes within [`CRASH_LOOP_WINDOW`] that make the server `crashLoop` (default 5).
    pub crash_loop_limit: u32,
    /// `roots`: what corrald answers the server's `roots/list` with: absolute paths or `file://` URIs.
    /// When set, corrald declares the roots capability to the server.
    pub roots: Option<Vec<String>>,
}

/// Transport-specific part of a server entry.
#[derive(Debug, Clone, PartialEq)]
pub enum TransportConfig {
    /// A child process speaking MCP over stdio.
    Stdio(StdioConfig),
    /// A remote streamable-HTTP server.
    StreamableHttp(HttpConfig),
}

/// `command`, `args`, `env`, `env_vars`, `cwd`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StdioConfig {
    /// Program to run (resolved on the child's PATH).
    pub command: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Literal environment variables set for the child.
    pub env: BTreeMap<String, String>,
    /// Names of the daemon's environment variables passed through to the child.
    pub env_vars: Vec<String>,
    /// Absolute working directory.
    pub cwd: Option<PathBuf>,
}

/// `url`, `bearer_token_env_var`, `http_headers`, `env_http_headers`, `scopes`, `oauth_resource`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Endpoint URL (`http://` or `https://`).
    pub url: String,
    /// Environment variable holding a bearer token.
    pub bearer_token_env_var: Option<String>,
    /// Static headers.
    pub http_headers: BTreeMap<String, String>,
    /// Header name to the environment variable holding its value.
    pub env_http_headers: BTreeMap<String, String>,
    /// OAuth scopes to request.
    pub scopes: Vec<String>,
    /// RFC 8707 resource to request tokens for.
    pub oauth_resource: Option<String>,
    /// `oauth_client_id`: a client registered with the authorization server beforehand.
    pub oauth_client_id: Option<String>,
    /// `oauth_client_secret_env_var`: environment variable holding that client's secret.
    pub oauth_client_secret_env_var: Option<String>,
    /// `oauth_client_metadata_url`: an https URL of a client ID metadata document.
    pub oauth_client_metadata_url: Option<String>,
    /// `oauth_client_secret_file`: absolute path of a file holding that client's secret.
    pub oauth_client_secret_file: Option<PathBuf>,
    /// `oauth_grant` and its fields: tokens from a grant for machines instead of a login.
    pub oauth_grant: Option<Box<OAuthGrant>>,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", format_problems(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<ConfigProblem>,
    },
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigProblem {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The server table the problem is in, if any.
    pub server: Option<String>,
    /// The field the problem is about, if any.
    pub field: Option<String>,
    /// What is wrong, as a sentence without a trailing period.
    pub message: String,
}

fn format_problems(path: &Path, problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|problem| problem.display_with_path(path))
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigProblem {
    /// `path:line:column: server `x`, field `y`: message`.
    pub fn display_with_path(&self, path: &Path) -> String {
        let mut out = path.display().to_string();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
            if let Some(column) = self.column {
                out.push_str(&format!(":{column}"));
            }
        }
        out.push_str(&format!(": {self}"));
        out
    }
}

/// Load the config at `path`. A missing file is the default config (no servers).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => parse(&text, path),
        Err(error) => {
            // Point at the first bad byte, counting lines in the valid prefix.
            let valid = String::from_utf8_lossy(&error.as_bytes()[..error.utf8_error().valid_up_to()]);
            let mut problems = Problems::new(&valid);
            problems.add(valid.len()..valid.len(), None, None, "the file is not valid UTF-8");
            problems.into_result(path, Config::default())
        }
    }
}

/// Parse and validate config text; `path` is used in error messages only.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let mut problems = Problems::new(text);
    let config = check_document(text, &mut problems);
    problems.into_result(path, config)
}

/// Validate one server entry given as JSON (as `mcpServer/add` receives it),
/// with exactly the rules of a `[servers.NAME]` table in the file.
///
/// The entry is turned into TOML and checked by the same code as the file, so
/// the two can never disagree; the problems carry server and field names but
/// no line numbers (there is no file).
pub fn parse_server_json(name: &str, entry: &Value) -> Result<ServerConfig, Vec<ConfigProblem>> {
    let problem = |message: String| ConfigProblem {
        line: None,
        column: None,
        server: Some(shown_name(name).to_owned()),
        field: None,
        message,
    };
    // Before the name is copied into a document to check.
    if let Err(message) = check_server_name(name) {
        return Err(vec![problem(message)]);
    }
    if !entry.is_object() {
        return Err(vec![problem("expected an object with the server's fields".to_owned())]);
    }
    let entry = toml::Value::try_from(entry)
        .map_err(|error| vec![problem(format!("cannot be expressed in the config format: {error}"))])?;
    let mut servers = toml::Table::new();
    servers.insert(name.to_owned(), entry);
    let mut document = toml::Table::new();
    document.insert("servers".to_owned(), toml::Value::Table(servers));
    let text = toml::to_string(&document).map_err(|error| vec![problem(format!("cannot be checked: {error}"))])?;
    match parse(&text, Path::new("<mcpServer/add>")) {
        Ok(mut config) => config
            .servers
            .remove(name)
            .ok_or_else(|| vec![problem("invalid server name".to_owned())]),
        Err(ConfigError::Invalid { problems, .. }) => Err(problems
            .into_iter()
            .map(|mut problem| {
                problem.line = None;
                problem.column = None;
                problem
            })
            .collect()),
        Err(error) => Err(vec![problem(error.to_string())]),
    }
}

impl std::fmt::Display for ConfigProblem {
    /// `server `x`, field `y`: message`, without a location.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.server, &self.field) {
            (Some(server), Some(field)) => write!(f, "server `{server}`, field `{field}`: ")?,
            (Some(server), None) => write!(f, "server `{server}`: ")?,
            (None, Some(field)) => write!(f, "field `{field}`: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

/// JSON Schema (draft 2020-12) of the config file, for editors.
///
/// Built from `FIELDS` rather than derived, because the file is not read
/// through serde structs (see the module comment). It describes every field
/// with its type, default and description, and adds the transport rules an
/// editor can check: exactly one of `command` and `url`, an explicit
/// `transport` that agrees with it, and no field of the other transport.
pub fn json_schema() -> Value {
    let properties: serde_json::Map<String, Value> = FIELDS
        .iter()
        .map(|field| {
            let mut schema = (field.schema)();
            if let Some(object) = schema.as_object_mut() {
                object.insert("description".to_owned(), Value::from(field.description));
            }
            (field.name.to_owned(), schema)
        })
        .collect();
    let transport_rules: Vec<Value> = Transport::ALL
        .iter()
        .map(|&transport| {
            let forbidden: serde_json::Map<String, Value> = FIELDS
                .iter()
                .filter(|field| field.transport.is_some_and(|only| only != transport))
                .map(|field| (field.name.to_owned(), Value::Bool(false)))
                .collect();
            json!({
                "if": {
                    "anyOf": [
                        { "required": [transport.selector()] },
                        {
                            "required": ["transport"],
                            "properties": { "transport": { "const": transport.name() } },
                        },
                    ]
                },
                "then": { "required": [transport.selector()], "properties": forbidden },
            })
        })
        .collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Corral config",
        "description": "The config file of corrald: one [servers.NAME] table per MCP server. \
            See docs/configuration.md.",
        "type": "object",
        "properties": {
            SERVERS_KEY: {
                "description": "MCP servers supervised by corrald, by name.",
                "type": "object",
                "propertyNames": { "pattern": SERVER_NAME_PATTERN, "maxLength": MAX_SERVER_NAME_BYTES },
                "additionalProperties": { "$ref": "#/$defs/server" },
                "default": {},
            },
            "credentials_store": {
                "description": "Where OAuth credentials are stored: `auto` (the OS keyring, or the \
                    file when there is no keyring), `keyring`, `file` (0600 file in the data \
                    directory) or `encrypted-file` (encrypted with a key kept in the keyring, or in \
                    a 0600 key file when there is none).",
                "type": "string",
                "enum": CredentialsStoreMode::ALL.map(CredentialsStoreMode::as_str),
                "default": "auto",
            },
            "oauth_callback_port": {
                "description": "Port of corrald's loopback listener for OAuth redirects (default: \
                    a free port chosen for each login).",
                "type": "integer",
                "minimum": 1,
                "maximum": 65535,
            },
            "oauth_callback_url": {
                "description": "Redirect URI registered with authorization servers, when it must \
                    differ from http://127.0.0.1:PORT/callback; corrald listens on its port (on \
                    all interfaces when its host is not a loopback name).",
                "type": "string",
                "format": "uri",
                "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]",
            },
            "oauth_opener": {
                "description": "Program and arguments that open an OAuth authorization URL, which \
                    is appended as the last argument (default: the system browser: xdg-open, open \
                    or start).",
                "type": "array",
                "items": { "type": "string" },
                "minItems": 1,
            },
            MCP_ENDPOINT_KEY: mcp_endpoint_schema(),
        },
        "additionalProperties": false,
        "$defs": {
            "server": {
                "description": "One MCP server: `command` makes it a stdio child process, \
                    `url` a streamable HTTP server.",
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
                "oneOf": [
                    { "required": [Transport::Stdio.selector()] },
                    { "required": [Transport::StreamableHttp.selector()] },
                ],
                "allOf": transport_rules,
            }
        },
    })
}

/// JSON Schema of the `[mcp_endpoint]` table.
fn mcp_endpoint_schema() -> Value {
    let listen = DEFAULT_MCP_ENDPOINT_LISTEN.to_string();
    json!({
        "description": "The loopback streamable-HTTP MCP endpoint: corrald as one MCP server at \
            http://LISTEN/mcp for MCP clients that take a URL; every request needs the bearer \
            token `corral mcp url` prints. Read when corrald starts.",
        "type": "object",
        "properties": {
            "enabled": {
                "description": "Serve the endpoint (default: off).",
                "type": "boolean",
                "default": false,
            },
            "listen": {
                "description": "IP address and port to listen on, e.g. `127.0.0.1:7767` or \
                    `[::1]:7767`; port 0 picks a free port. An address that is not loopback is \
                    refused unless `allow_non_loopback` is true.",
                "type": "string",
                "default": listen,
            },
            "allow_non_loopback": {
                "description": "Accept a `listen` address that is not loopback, which makes the \
                    endpoint reachable from other machines (default: false).",
                "type": "boolean",
                "default": false,
            },
            "allowed_origins": {
                "description": "`Origin`s accepted besides the endpoint's own \
                    (http://localhost:PORT, http://127.0.0.1:PORT, http://[::1]:PORT), e.g. a \
                    browser-based client's `http://localhost:6274`. Any other `Origin` is refused (403).",
                "type": "array",
                "items": { "type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]+$" },
                "default": [],
            },
            "allow_session_servers": {
                "description": "Let an endpoint session start servers of its own, as `corral mcp \
                    --config` does (`_meta[\"corral/bridge\"].sessionServers` in its `initialize`): \
                    whoever holds the token can then run any command as you (default: false).",
                "type": "boolean",
                "default": false,
            },
        },
        "additionalProperties": false,
    })
}

/// How a server is reached, as named in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Stdio,
    StreamableHttp,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Stdio, Transport::StreamableHttp];

    /// The value of `transport` that names it.
    fn name(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::StreamableHttp => "streamable_http",
        }
    }

    fn from_name(name: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|transport| transport.name() == name)
    }

    /// The field whose presence selects this transport.
    fn selector(self) -> &'static str {
        match self {
            Transport::Stdio => "command",
            Transport::StreamableHttp => "url",
        }
    }
}

/// One field a server table may have.
struct FieldSpec {
    name: &'static str,
    /// The only transport the field applies to; `None` when every server accepts it.
    transport: Option<Transport>,
    /// For the JSON Schema (editors show it on hover).
    description: &'static str,
    /// JSON Schema of the value, without the description.
    schema: fn() -> Value,
}

/// Every field a server table may have: common ones, then stdio, then streamable HTTP.
const FIELDS: &[FieldSpec] = &[
    FieldSpec {
        name: "transport",
        transport: None,
        description: "How to reach the server. Optional: `command` selects stdio and `url` selects \
            streamable_http; when given, it must agree with them.",
        schema: || {
            json!({
                "type": "string",
                "enum": [Transport::Stdio.name(), Transport::StreamableHttp.name()],
            })
        },
    },
    FieldSpec {
        name: "enabled",
        transport: None,
        description: "Whether corrald starts the server by itself; a disabled server is listed \
            and can still be started on request (`corral start NAME`).",
        schema: || json!({ "type": "boolean", "default": true }),
    },
    FieldSpec {
        name: "startup_timeout_sec",
        transport: None,
        description: "Seconds allowed for starting the server and the MCP initialize handshake \
            (integer or float, greater than 0).",
        schema: || {
            json!({
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_DURATION.as_secs(),
                "default": DEFAULT_STARTUP_TIMEOUT.as_secs(),
            })
        },
    },
    FieldSpec {
        name: "tool_timeout_sec",
        transport: None,
        description: "Seconds allowed for one tool call (integer or float, greater than 0).",
        schema: || {
            json!({
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_DURATION.as_secs(),
                "default": DEFAULT_TOOL_TIMEOUT.as_secs(),
            })
        },
    },
    FieldSpec {
        name: "stop_timeout_sec",
        transport: None,
        description: "Seconds stopping the server may take in all: stdin is closed, then the \
            process group gets SIGTERM after 40% of this and SIGKILL at the end (greater than 0).",
        schema: || {
            json!({
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_DURATION.as_secs(),
                "default": DEFAULT_STOP_TIMEOUT.as_secs_f64(),
            })
        },
    },
    FieldSpec {
        name: "restart_backoff_initial_sec",
        transport: None,
        description: "Seconds before restarting a server that died after it was ready; doubles \
            with every consecutive crash (greater than 0).",
        schema: || {
            json!({
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_DURATION.as_secs(),
                "default": DEFAULT_RESTART_BACKOFF_INITIAL.as_secs_f64(),
            })
        },
    },
    FieldSpec {
        name: "restart_backoff_max_sec",
        transport: None,
        description: "The longest wait between restarts (greater than 0).",
        schema: || {
            json!({
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_DURATION.as_secs(),
                "default": DEFAULT_RESTART_BACKOFF_MAX.as_secs(),
            })
        },
    },
    FieldSpec {
        name: "crash_loop_limit",
        transport: None,
        description: "After this many crashes within 2 minutes the server is marked failed \
            (`crashLoop`) and not restarted until it is started again (a positive integer).",
        schema: || json!({ "type": "integer", "minimum": 1, "default": DEFAULT_CRASH_LOOP_LIMIT }),
    },
    FieldSpec {
        name: "enabled_tools",
        transport: None,
        description: "When set, only these tools of the server are offered.",
        schema: || json!({ "type": "array", "items": { "type": "string", "minLength": 1 } }),
    },
    FieldSpec {
        name: "disabled_tools",
        transport: None,
        description: "Tools never offered, applied after `enabled_tools`.",
        schema: || {
            json!({
                "type": "array",
                "items": { "type": "string", "minLength": 1 },
                "default": [],
            })
        },
    },
    FieldSpec {
        name: "roots",
        transport: None,
        description: "The roots (directories) the server may work in, as absolute paths or file:// \
            URIs: corrald answers the server's `roots/list` with them. When absent, corrald does not \
            offer roots to the server.",
        schema: || {
            json!({
                "type": "array",
                "items": { "type": "string", "minLength": 1 },
            })
        },
    },
    FieldSpec {
        name: "command",
        transport: Some(Transport::Stdio),
        description: "stdio: the program to run, looked up on PATH. Its presence selects the stdio \
            transport.",
        schema: || json!({ "type": "string", "minLength": 1 }),
    },
    FieldSpec {
        name: "args",
        transport: Some(Transport::Stdio),
        description: "stdio: arguments passed to `command`.",
        schema: || json!({ "type": "array", "items": { "type": "string" }, "default": [] }),
    },
    FieldSpec {
        name: "env",
        transport: Some(Transport::Stdio),
        description: "stdio: environment variables set for the child, name to literal value.",
        schema: || {
            json!({
                "type": "object",
                "propertyNames": { "pattern": ENV_VAR_NAME_PATTERN },
                "additionalProperties": { "type": "string" },
                "default": {},
            })
        },
    },
    FieldSpec {
        name: "env_vars",
        transport: Some(Transport::Stdio),
        description: "stdio: names of corrald's environment variables passed through to the child.",
        schema: || {
            json!({
                "type": "array",
                "items": { "type": "string", "pattern": ENV_VAR_NAME_PATTERN },
                "default": [],
            })
        },
    },
    FieldSpec {
        name: "cwd",
        transport: Some(Transport::Stdio),
        description: "stdio: absolute working directory of the child (default: corrald's).",
        schema: || json!({ "type": "string", "minLength": 1 }),
    },
    FieldSpec {
        name: "url",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http: the MCP endpoint, an http:// or https:// URL. Its presence \
            selects the streamable_http transport.",
        schema: || {
            json!({
                "type": "string",
                "format": "uri",
                "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]",
            })
        },
    },
    FieldSpec {
        name: "bearer_token_env_var",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http: name of an environment variable of corrald holding a bearer \
            token, sent as `Authorization: Bearer ...`.",
        schema: || json!({ "type": "string", "pattern": ENV_VAR_NAME_PATTERN }),
    },
    FieldSpec {
        name: "http_headers",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http: headers sent with every request, name to literal value.",
        schema: || {
            json!({
                "type": "object",
                "propertyNames": { "pattern": HEADER_NAME_PATTERN },
                "additionalProperties": { "type": "string" },
                "default": {},
            })
        },
    },
    FieldSpec {
        name: "env_http_headers",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http: headers sent with every request, name to the environment \
            variable of corrald holding the value.",
        schema: || {
            json!({
                "type": "object",
                "propertyNames": { "pattern": HEADER_NAME_PATTERN },
                "additionalProperties": { "type": "string", "pattern": ENV_VAR_NAME_PATTERN },
                "default": {},
            })
        },
    },
    FieldSpec {
        name: "scopes",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http: OAuth scopes to request.",
        schema: || {
            json!({
                "type": "array",
                "items": { "type": "string", "pattern": "^\\S+$" },
                "default": [],
            })
        },
    },
    FieldSpec {
        name: "oauth_resource",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http: the resource (RFC 8707) to request OAuth tokens for, an \
            http:// or https:// URL.",
        schema: || json!({ "type": "string", "format": "uri" }),
    },
    FieldSpec {
        name: "oauth_client_id",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http: OAuth client id registered with the authorization server \
            beforehand (skips dynamic client registration).",
        schema: || json!({ "type": "string", "minLength": 1 }),
    },
    FieldSpec {
        name: "oauth_client_secret_env_var",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http: name of an environment variable of corrald holding the \
            secret of `oauth_client_id`, for confidential clients.",
        schema: || json!({ "type": "string", "pattern": ENV_VAR_NAME_PATTERN }),
    },
    FieldSpec {
        name: "oauth_client_metadata_url",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http: https URL of a client ID metadata document to use as the \
            client id when the authorization server supports them (instead of dynamic registration).",
        schema: || json!({ "type": "string", "format": "uri" }),
    },
    file_field(
        "oauth_client_secret_file",
        "streamable_http: absolute path of a file holding the secret of `oauth_client_id` (read \
         when it is needed; surrounding whitespace is ignored); instead of \
         `oauth_client_secret_env_var`.",
    ),
    FieldSpec {
        name: "oauth_grant",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http: get tokens without a browser, with a grant for machines: \
            `client_credentials` (the client's secret or private key), `jwt_bearer` (a workload \
            identity JWT, `oauth_assertion_file`) or `enterprise_managed` (the user's ID token \
            exchanged at the enterprise identity provider, `oauth_idp_*`). The grant runs again \
            before its token expires. Without it, the server logs in interactively (`corral login`).",
        schema: || json!({ "type": "string", "enum": grant::GRANT_NAMES }),
    },
    FieldSpec {
        name: "oauth_client_auth",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http, with `oauth_grant`: how the client authenticates at the token \
            endpoint. Default: `private_key_jwt` with a private key, with a secret \
            `client_secret_basic` (or `client_secret_post` when the authorization server lists \
            only that), else `none`.",
        schema: || json!({ "type": "string", "enum": grant::CLIENT_AUTH_NAMES }),
    },
    env_var_field(
        "oauth_private_key_env_var",
        "streamable_http, with `oauth_grant`: name of an environment variable of corrald holding \
         the client's PEM private key for `private_key_jwt`.",
    ),
    file_field(
        "oauth_private_key_file",
        "streamable_http, with `oauth_grant`: absolute path of the client's PEM private key \
         (PKCS#8, PKCS#1 or SEC1) for `private_key_jwt`.",
    ),
    FieldSpec {
        name: "oauth_private_key_algorithm",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http, with `oauth_grant`: the JWS algorithm of the `private_key_jwt` \
            assertions, which the key must fit.",
        schema: || {
            json!({
                "type": "string",
                "enum": JwtAlgorithm::ALL.map(JwtAlgorithm::as_str),
                "default": JwtAlgorithm::default().as_str(),
            })
        },
    },
    env_var_field(
        "oauth_assertion_env_var",
        "streamable_http, with `oauth_grant = \"jwt_bearer\"`: name of an environment variable of \
         corrald holding the workload's JWT.",
    ),
    file_field(
        "oauth_assertion_file",
        "streamable_http, with `oauth_grant = \"jwt_bearer\"`: absolute path of the workload's JWT \
         (e.g. a projected service account token), read again for every grant.",
    ),
    FieldSpec {
        name: "oauth_idp_issuer",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http, with `oauth_grant = \"enterprise_managed\"`: the issuer \
            identifier of the enterprise identity provider, exactly as in its metadata.",
        schema: || json!({ "type": "string", "format": "uri" }),
    },
    FieldSpec {
        name: "oauth_idp_token_endpoint",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http, with `oauth_grant = \"enterprise_managed\"`: the identity \
            provider's token endpoint, where the ID token is exchanged for an ID-JAG.",
        schema: || json!({ "type": "string", "format": "uri" }),
    },
    FieldSpec {
        name: "oauth_idp_client_id",
        transport: Some(Transport::StreamableHttp),
        description: "streamable_http, with `oauth_grant = \"enterprise_managed\"`: corrald's client \
            id at the identity provider.",
        schema: || json!({ "type": "string", "minLength": 1 }),
    },
    env_var_field(
        "oauth_idp_client_secret_env_var",
        "streamable_http, with `oauth_grant = \"enterprise_managed\"`: name of an environment \
         variable of corrald holding the secret of `oauth_idp_client_id` (a confidential client).",
    ),
    file_field(
        "oauth_idp_client_secret_file",
        "streamable_http, with `oauth_grant = \"enterprise_managed\"`: absolute path of a file \
         holding the secret of `oauth_idp_client_id`.",
    ),
    env_var_field(
        "oauth_id_token_env_var",
        "streamable_http, with `oauth_grant = \"enterprise_managed\"`: name of an environment \
         variable of corrald holding the user's ID token from the identity provider.",
    ),
    file_field(
        "oauth_id_token_file",
        "streamable_http, with `oauth_grant = \"enterprise_managed\"`: absolute path of a file \
         holding the user's ID token from the identity provider, read again for every grant (keep \
         it fresh with the identity provider's own tooling).",
    ),
];

/// A streamable-HTTP field naming the environment variable of corrald that holds a secret.
const fn env_var_field(name: &'static str, description: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        transport: Some(Transport::StreamableHttp),
        description,
        schema: || json!({ "type": "string", "pattern": ENV_VAR_NAME_PATTERN }),
    }
}

/// A streamable-HTTP field naming the absolute path of a file that holds a secret.
const fn file_field(name: &'static str, description: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        transport: Some(Transport::StreamableHttp),
        description,
        schema: || json!({ "type": "string", "minLength": 1 }),
    }
}

/// The field that sets `Authorization` in an HTTP config, if one does: `bearer_token_env_var`,
/// or an `Authorization` header (static or from the environment).
fn explicit_authorization(http: &HttpConfig) -> Option<&'static str> {
    let is_authorization = |name: &String| name.eq_ignore_ascii_case("authorization");
    if http.bearer_token_env_var.is_some() {
        Some("bearer_token_env_var")
    } else if http.http_headers.keys().any(is_authorization) {
        Some("http_headers")
    } else if http.env_http_headers.keys().any(is_authorization) {
        Some("env_http_headers")
    } else {
        None
    }
}

/// Names people write for a field they know from other MCP clients' config files.
const FIELD_ALIASES: &[(&str, &str)] = &[("headers", "http_headers"), ("type", "transport")];

/// Problems found so far, with byte offsets turned into lines and columns.
struct Problems<'t> {
    text: &'t str,
    found: Vec<ConfigProblem>,
}

impl<'t> Problems<'t> {
    fn new(text: &'t str) -> Self {
        Problems {
            text,
            found: Vec::new(),
        }
    }

    fn add(&mut self, span: Range<usize>, server: Option<&str>, field: Option<&str>, message: impl Into<String>) {
        let (line, column) = line_and_column(self.text, span.start);
        self.found.push(ConfigProblem {
            line: Some(line),
            column: Some(column),
            server: server.map(|server| shown_name(server).to_owned()),
            field: field.map(str::to_owned),
            message: message.into(),
        });
    }

    /// The text of `span` as written in the file, for quoting numbers and keys.
    fn source(&self, span: Range<usize>) -> &'t str {
        self.text.get(span).unwrap_or_default()
    }

    fn add_syntax_error(&mut self, error: &toml::de::Error) {
        let message = error
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .trim_end_matches('.');
        let mut message = format!("invalid TOML: {message}");
        let Some(span) = error.span() else {
            self.found.push(ConfigProblem {
                line: None,
                column: None,
                server: None,
                field: None,
                message,
            });
            return;
        };
        // toml points at the repeated key without naming it; a key is never a secret.
        if error.message() == "duplicate key" && !span.is_empty() {
            message.push_str(&format!(" `{}`", self.source(span.clone()).escape_debug()));
        }
        self.add(span, None, None, message);
    }

    /// `Ok(config)` when nothing was found, else every problem in file order.
    fn into_result(mut self, path: &Path, config: Config) -> Result<Config, ConfigError> {
        if self.found.is_empty() {
            return Ok(config);
        }
        // Stable: problems at the same place keep the order they were found in.
        self.found.sort_by_key(|problem| (problem.line, problem.column));
        Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems: self.found,
        })
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    // Editors do not count a byte-order mark as a column.
    let column = before[line_start..].trim_start_matches('\u{feff}').chars().count() + 1;
    (line, column)
}

fn check_document(text: &str, problems: &mut Problems<'_>) -> Config {
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    // Errors after the first are often consequences of it (an unclosed string
    // swallows the lines after it), so only the first one in the file is
    // reported, and a document the parser had to guess at is not checked.
    let first_syntax_error = syntax_errors
        .iter()
        .min_by_key(|error| error.span().map_or(usize::MAX, |span| span.start));
    if let Some(error) = first_syntax_error {
        problems.add_syntax_error(error);
        return Config::default();
    }
    let mut config = Config::default();
    for (key, value) in document.get_ref() {
        let key_name: &str = key.get_ref();
        if key_name == SERVERS_KEY {
            config.servers = check_servers(value, problems);
        } else if GLOBAL_KEYS.contains(&key_name) {
            check_global(key_name, value, problems, &mut config);
        } else {
            let candidates = std::iter::once(SERVERS_KEY).chain(GLOBAL_KEYS.iter().copied());
            let message = match closest(key_name, candidates) {
                Some(suggestion) => format!("unknown top-level key, did you mean `{suggestion}`?"),
                None => format!(
                    "unknown top-level key, the known ones are `{SERVERS_KEY}`, `{}`",
                    GLOBAL_KEYS.join("`, `")
                ),
            };
            problems.add(key.span(), None, Some(key_name), message);
        }
    }
    config
}

fn check_servers(value: &Spanned<DeValue<'_>>, problems: &mut Problems<'_>) -> BTreeMap<String, ServerConfig> {
    let mut servers = BTreeMap::new();
    let Some(table) = value.get_ref().as_table() else {
        let message = format!("expected a table of servers, found {}", describe(value.get_ref()));
        problems.add(value.span(), None, Some(SERVERS_KEY), message);
        return servers;
    };
    for (name, entry) in table {
        let name_span = name.span();
        let name: &str = name.get_ref();
        if let Err(message) = check_server_name(name) {
            problems.add(name_span.clone(), Some(name), None, message);
        }
        let Some(fields) = entry.get_ref().as_table() else {
            let message = format!("expected a table, found {}", describe(entry.get_ref()));
            problems.add(entry.span(), Some(name), None, message);
            continue;
        };
        let check = ServerCheck {
            name,
            name_span,
            fields,
            misplaced: Vec::new(),
            problems,
        };
        if let Some(server) = check.run() {
            servers.insert(name.to_owned(), server);
        }
    }
    servers
}

/// Checks one server table and reads it into a [`ServerConfig`].
///
/// Readers return what they could read even after reporting a problem: the
/// caller discards the whole config when any problem was found, so a
/// half-checked value never escapes.
struct ServerCheck<'c, 't, 'i> {
    name: &'c str,
    /// Where the server's name is written (`[servers.NAME]`), for problems about missing fields.
    name_span: Range<usize>,
    fields: &'c DeTable<'i>,
    /// Fields already reported as belonging to the other transport; their values are not checked.
    misplaced: Vec<&'static str>,
    problems: &'c mut Problems<'t>,
}

impl<'c, 'i> ServerCheck<'c, '_, 'i> {
    fn run(mut self) -> Option<ServerConfig> {
        self.check_field_names();
        let transport = self.select_transport();
        if let Some(transport) = transport {
            self.check_fields_belong_to(transport);
        }
        let enabled = self.boolean("enabled");
        let startup_timeout = self.seconds("startup_timeout_sec");
        let tool_timeout = self.seconds("tool_timeout_sec");
        let stop_timeout = self.seconds("stop_timeout_sec");
        let restart_backoff_initial = self.seconds("restart_backoff_initial_sec");
        let restart_backoff_max = self.seconds("restart_backoff_max_sec");
        let crash_loop_limit = self.positive_integer("crash_loop_limit");
        let enabled_tools = self.string_list("enabled_tools", tool_name);
        let disabled_tools = self.string_list("disabled_tools", tool_name);
        let roots = self.string_list("roots", root);
        let stdio = StdioConfig {
            command: self.string("command", program).unwrap_or_default(),
            args: self.string_list("args", no_nul).unwrap_or_default(),
            env: self.string_map("env", env_var_name, env_value).unwrap_or_default(),
            env_vars: self.string_list("env_vars", env_var_name).unwrap_or_default(),
            cwd: self.string("cwd", absolute_path).map(PathBuf::from),
        };
        let http = HttpConfig {
            url: self.string("url", http_url).unwrap_or_default(),
            bearer_token_env_var: self.string("bearer_token_env_var", env_var_name),
            http_headers: self
                .string_map("http_headers", header_name, header_value)
                .unwrap_or_default(),
            env_http_headers: self
                .string_map("env_http_headers", header_name, |_, variable| env_var_name(variable))
                .unwrap_or_default(),
            scopes: self.string_list("scopes", oauth_scope).unwrap_or_default(),
            oauth_resource: self.string("oauth_resource", http_url),
            oauth_client_id: self.string("oauth_client_id", program),
            oauth_client_secret_env_var: self.string("oauth_client_secret_env_var", env_var_name),
            oauth_client_metadata_url: self.string("oauth_client_metadata_url", http_url),
            oauth_client_secret_file: self.string("oauth_client_secret_file", secret_file).map(PathBuf::from),
            oauth_grant: None,
        };
        let http = HttpConfig {
            oauth_grant: self
                .grant(&grant::GrantInputs {
                    client_id: http.oauth_client_id.as_deref(),
                    client_secret_env_var: http.oauth_client_secret_env_var.as_deref(),
                    client_secret_file: http.oauth_client_secret_file.as_ref(),
                    explicit_authorization: explicit_authorization(&http),
                })
                .map(Box::new),
            ..http
        };
        Some(ServerConfig {
            name: self.name.to_owned(),
            transport: match transport? {
                Transport::Stdio => TransportConfig::Stdio(stdio),
                Transport::StreamableHttp => TransportConfig::StreamableHttp(http),
            },
            enabled: enabled.unwrap_or(true),
            startup_timeout: startup_timeout.unwrap_or(DEFAULT_STARTUP_TIMEOUT),
            tool_timeout: tool_timeout.unwrap_or(DEFAULT_TOOL_TIMEOUT),
            enabled_tools,
            disabled_tools: disabled_tools.unwrap_or_default(),
            stop_timeout: stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
            restart_backoff_initial: restart_backoff_initial.unwrap_or(DEFAULT_RESTART_BACKOFF_INITIAL),
            restart_backoff_max: restart_backoff_max.unwrap_or(DEFAULT_RESTART_BACKOFF_MAX),
            crash_loop_limit: crash_loop_limit.unwrap_or(DEFAULT_CRASH_LOOP_LIMIT),
            roots,
        })
    }

    fn report(&mut self, field: Option<&str>, span: Range<usize>, message: impl Into<String>) {
        self.problems.add(span, Some(self.name), field, message);
    }

    fn type_error(&mut self, field: &str, value: &Spanned<DeValue<'_>>, expected: &str) {
        let message = format!("expected {expected}, found {}", describe(value.get_ref()));
        self.report(Some(field), value.span(), message);
    }

    /// Unknown fields, with a suggestion when one is close.
    fn check_field_names(&mut self) {
        for key in self.fields.keys() {
            let name: &str = key.get_ref();
            if FIELDS.iter().any(|field| field.name == name) {
                continue;
            }
            let inline_secret = grant::INLINE_SECRETS.iter().find(|(field, _)| *field == name);
            let message = if name == "bearer_token" {
                // Tokens in a config file end up in backups and dotfile repositories.
                "inline tokens are not allowed, put the token in an environment variable and set \
                 `bearer_token_env_var` to its name"
                    .to_owned()
            } else if let Some((_, instead)) = inline_secret {
                format!(
                    "inline secrets are not allowed, put the secret in a file or an environment \
                     variable of corrald and set {instead}"
                )
            } else {
                match suggest_field(name) {
                    Some(suggestion) => format!("unknown field, did you mean `{suggestion}`?"),
                    None => "unknown field".to_owned(),
                }
            };
            self.report(Some(name), key.span(), message);
        }
    }

    /// The transport `command`, `url` and `transport` agree on, after reporting any disagreement.
    fn select_transport(&mut self) -> Option<Transport> {
        let declared = self.declared_transport();
        let command = self.fields.get_key_value(Transport::Stdio.selector());
        let url = self.fields.get_key_value(Transport::StreamableHttp.selector());
        let implied = match (command, url) {
            (Some(_), None) => Transport::Stdio,
            (None, Some(_)) => Transport::StreamableHttp,
            (Some(_), Some((url_key, _))) => {
                let message = "cannot be combined with `command`, a server has either \
                    `command` (stdio transport) or `url` (streamable_http transport)";
                self.report(Some(url_key.get_ref()), url_key.span(), message);
                return None;
            }
            (None, None) => {
                let span = self.name_span.clone();
                match declared {
                    Some((transport, _)) => {
                        let message = format!("required by the {} transport, but missing", transport.name());
                        self.report(Some(transport.selector()), span, message);
                    }
                    None => {
                        let message = "missing `command` (stdio transport) or `url` (streamable_http transport)";
                        self.report(None, span, message);
                    }
                }
                return None;
            }
        };
        match declared {
            Some((transport, span)) if transport != implied => {
                let message = format!(
                    "says `{}`, but `{}` selects the {} transport",
                    transport.name(),
                    implied.selector(),
                    implied.name()
                );
                self.report(Some("transport"), span, message);
                None
            }
            _ => Some(implied),
        }
    }

    /// `transport`, if given and valid, with where it is written.
    fn declared_transport(&mut self) -> Option<(Transport, Range<usize>)> {
        let value = self.value("transport")?;
        let Some(name) = value.get_ref().as_str() else {
            self.type_error("transport", value, "`stdio` or `streamable_http`");
            return None;
        };
        match Transport::from_name(name) {
            Some(transport) => Some((transport, value.span())),
            None => {
                let message = format!(
                    "unknown transport `{}`, expected `stdio` or `streamable_http`",
                    name.escape_debug()
                );
                self.report(Some("transport"), value.span(), message);
                None
            }
        }
    }

    /// Fields of the other transport.
    fn check_fields_belong_to(&mut self, transport: Transport) {
        for key in self.fields.keys() {
            let Some(field) = FIELDS.iter().find(|field| field.name == key.get_ref()) else {
                continue;
            };
            if let Some(only) = field.transport
                && only != transport
            {
                let message = format!(
                    "only for {} servers, but this server uses the {} transport",
                    only.name(),
                    transport.name()
                );
                self.report(Some(field.name), key.span(), message);
                self.misplaced.push(field.name);
            }
        }
    }

    /// The value of `field`, unless it is absent or was already reported as misplaced.
    fn value(&self, field: &str) -> Option<&'c Spanned<DeValue<'i>>> {
        if self.misplaced.contains(&field) {
            return None;
        }
        self.fields.get(field)
    }

    /// Run `check` on a string read from the file, reporting its complaint at `span`.
    fn checked(
        &mut self,
        field: &str,
        span: Range<usize>,
        text: &str,
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Option<String> {
        match check(text) {
            Ok(()) => Some(text.to_owned()),
            Err(message) => {
                self.report(Some(field), span, message);
                None
            }
        }
    }

    fn string(&mut self, field: &str, check: impl Fn(&str) -> Result<(), String>) -> Option<String> {
        let value = self.value(field)?;
        let Some(text) = value.get_ref().as_str() else {
            self.type_error(field, value, "a string");
            return None;
        };
        self.checked(field, value.span(), text, check)
    }

    fn boolean(&mut self, field: &str) -> Option<bool> {
        let value = self.value(field)?;
        let boolean = value.get_ref().as_bool();
        if boolean.is_none() {
            self.type_error(field, value, "a boolean (`true` or `false`)");
        }
        boolean
    }

    /// A duration written as a positive integer or float number of seconds.
    fn seconds(&mut self, field: &str) -> Option<Duration> {
        const EXPECTED: &str = "a number of seconds greater than 0";
        let value = self.value(field)?;
        let seconds = match value.get_ref() {
            DeValue::Integer(integer) => integer_as_f64(integer),
            DeValue::Float(float) => float.as_str().parse().unwrap_or(f64::NAN),
            _ => {
                self.type_error(field, value, EXPECTED);
                return None;
            }
        };
        let written = self.problems.source(value.span());
        if seconds.is_nan() || seconds <= 0.0 {
            self.report(
                Some(field),
                value.span(),
                format!("expected {EXPECTED}, found {written}"),
            );
            return None;
        }
        // A day-long tool call is plausible, a year-long one is not; and far beyond that a deadline
        // (`Instant::now() + duration`) overflows, which panicked a server task.
        match Duration::try_from_secs_f64(seconds) {
            Ok(duration) if duration <= MAX_DURATION => Some(duration),
            _ => {
                self.report(
                    Some(field),
                    value.span(),
                    format!(
                        "too large (at most {} seconds, one year), found {written}",
                        MAX_DURATION.as_secs()
                    ),
                );
                None
            }
        }
    }

    fn positive_integer(&mut self, field: &str) -> Option<u32> {
        const EXPECTED: &str = "a whole number greater than 0";
        let value = self.value(field)?;
        let DeValue::Integer(integer) = value.get_ref() else {
            self.type_error(field, value, EXPECTED);
            return None;
        };
        let number = integer_as_f64(integer);
        if !(1.0..=f64::from(u32::MAX)).contains(&number) || number.fract() != 0.0 {
            let written = self.problems.source(value.span());
            self.report(
                Some(field),
                value.span(),
                format!("expected {EXPECTED}, found {written}"),
            );
            return None;
        }
        // In range and whole, checked just above.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(number as u32)
    }

    fn string_list(&mut self, field: &str, check: impl Fn(&str) -> Result<(), String>) -> Option<Vec<String>> {
        let value = self.value(field)?;
        let Some(items) = value.get_ref().as_array() else {
            self.type_error(field, value, "an array of strings");
            return None;
        };
        let mut strings = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match item.get_ref().as_str() {
                Some(text) => strings.extend(self.checked(field, item.span(), text, &check)),
                None => {
                    let message = format!(
                        "expected an array of strings, item {} is {}",
                        index + 1,
                        describe(item.get_ref())
                    );
                    self.report(Some(field), item.span(), message);
                }
            }
        }
        Some(strings)
    }

    /// A table of strings; `check_key` complains at the key, `check_value` (given the key and
    /// the value) at the value.
    fn string_map(
        &mut self,
        field: &str,
        check_key: impl Fn(&str) -> Result<(), String>,
        check_value: impl Fn(&str, &str) -> Result<(), String>,
    ) -> Option<BTreeMap<String, String>> {
        let value = self.value(field)?;
        let Some(table) = value.get_ref().as_table() else {
            self.type_error(field, value, "a table of strings");
            return None;
        };
        let mut strings = BTreeMap::new();
        for (key, item) in table {
            let key_name: &str = key.get_ref();
            let key_ok = self.checked(field, key.span(), key_name, &check_key).is_some();
            let Some(text) = item.get_ref().as_str() else {
                let message = format!(
                    "expected a table of strings, `{}` is {}",
                    key_name.escape_debug(),
                    describe(item.get_ref())
                );
                self.report(Some(field), item.span(), message);
                continue;
            };
            let value_ok = self
                .checked(field, item.span(), text, |text| check_value(key_name, text))
                .is_some();
            if key_ok && value_ok {
                strings.insert(key_name.to_owned(), text.to_owned());
            }
        }
        Some(strings)
    }
}

/// Top-level keys besides `servers`: daemon-wide settings.
const GLOBAL_KEYS: &[&str] = &[
    "credentials_store",
    "oauth_callback_port",
    "oauth_callback_url",
    "oauth_opener",
    MCP_ENDPOINT_KEY,
];

/// The table of the loopback MCP endpoint's settings.
const MCP_ENDPOINT_KEY: &str = "mcp_endpoint";
/// The keys of `[mcp_endpoint]`.
const MCP_ENDPOINT_KEYS: &[&str] = &[
    "enabled",
    "listen",
    "allow_non_loopback",
    "allowed_origins",
    "allow_session_servers",
];

/// Check one daemon-wide key and store its value in `config`.
fn check_global(key: &str, value: &Spanned<DeValue<'_>>, problems: &mut Problems<'_>, config: &mut Config) {
    if key == MCP_ENDPOINT_KEY {
        match value.get_ref().as_table() {
            Some(table) => config.mcp_endpoint = check_mcp_endpoint(table, problems),
            None => {
                let message = format!("expected a table, found {}", describe(value.get_ref()));
                problems.add(value.span(), None, Some(key), message);
            }
        }
        return;
    }
    let mut report = |message: String| problems.add(value.span(), None, Some(key), message);
    match (key, value.get_ref()) {
        ("credentials_store", DeValue::String(name)) => match CredentialsStoreMode::from_name(name) {
            Some(mode) => config.credentials_store = mode,
            None => {
                let known = CredentialsStoreMode::ALL.map(CredentialsStoreMode::as_str).join("`, `");
                report(format!(
                    "unknown credentials store `{}`, expected one of `{known}`",
                    name.escape_debug()
                ));
            }
        },
        ("oauth_callback_port", DeValue::Integer(integer)) => {
            let number = integer_as_f64(integer);
            if (1.0..=65535.0).contains(&number) {
                config.oauth_callback_port = Some(number as u16);
            } else {
                report("expected a port number from 1 to 65535".to_owned());
            }
        }
        ("oauth_callback_url", DeValue::String(url)) => match http_url(url) {
            Ok(()) => config.oauth_callback_url = Some(url.to_string()),
            Err(message) => report(message),
        },
        ("oauth_opener", DeValue::Array(items)) => {
            let mut words = Vec::new();
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::String(word) if !word.contains('\0') => words.push(word.to_string()),
                    other => {
                        report(format!("expected strings without NUL, found {}", describe(other)));
                        return;
                    }
                }
            }
            if words.first().is_none_or(|program| program.is_empty()) {
                report("expected the program to run and its arguments, found no program".to_owned());
            } else {
                config.oauth_opener = Some(words);
            }
        }
        ("oauth_callback_port", other) => report(format!("expected an integer, found {}", describe(other))),
        ("oauth_opener", other) => report(format!("expected an array of strings, found {}", describe(other))),
        (_, other) => report(format!("expected a string, found {}", describe(other))),
    }
}

/// Check the `[mcp_endpoint]` table: every problem reported, the settings read.
fn check_mcp_endpoint(table: &DeTable<'_>, problems: &mut Problems<'_>) -> McpEndpointConfig {
    let mut endpoint = McpEndpointConfig::default();
    let field = |key: &str| format!("{MCP_ENDPOINT_KEY}.{key}");
    let mut listen_span = None;
    for (key, value) in table {
        let key_name: &str = key.get_ref();
        let mut report = |message: String| problems.add(value.span(), None, Some(&field(key_name)), message);
        match (key_name, value.get_ref()) {
            ("enabled", DeValue::Boolean(enabled)) => endpoint.enabled = *enabled,
            ("allow_non_loopback", DeValue::Boolean(allow)) => endpoint.allow_non_loopback = *allow,
            ("allow_session_servers", DeValue::Boolean(allow)) => endpoint.allow_session_servers = *allow,
            ("enabled" | "allow_non_loopback" | "allow_session_servers", other) => report(format!(
                "expected a boolean (`true` or `false`), found {}",
                describe(other)
            )),
            ("listen", DeValue::String(text)) => match text.parse::<SocketAddr>() {
                Ok(address) => {
                    endpoint.listen = address;
                    listen_span = Some(value.span());
                }
                Err(_) => report(format!(
                    "expected an IP address and a port such as `{DEFAULT_MCP_ENDPOINT_LISTEN}` or `[::1]:7767`, \
                     found `{}`",
                    text.escape_debug()
                )),
            },
            ("listen", other) => report(format!("expected a string, found {}", describe(other))),
            ("allowed_origins", DeValue::Array(items)) => {
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(origin) => match web_origin(origin) {
                            Ok(()) => endpoint.allowed_origins.push(origin.to_string()),
                            Err(message) => problems.add(item.span(), None, Some(&field(key_name)), message),
                        },
                        other => problems.add(
                            item.span(),
                            None,
                            Some(&field(key_name)),
                            format!("expected an array of strings, found {}", describe(other)),
                        ),
                    }
                }
            }
            ("allowed_origins", other) => report(format!("expected an array of strings, found {}", describe(other))),
            _ => {
                let message = match closest(key_name, MCP_ENDPOINT_KEYS.iter().copied()) {
                    Some(suggestion) => format!("unknown key, did you mean `{suggestion}`?"),
                    None => format!("unknown key, the known ones are `{}`", MCP_ENDPOINT_KEYS.join("`, `")),
                };
                problems.add(key.span(), None, Some(&field(key_name)), message);
            }
        }
    }
    if let Some(span) = listen_span
        && !endpoint.listen.ip().is_loopback()
        && !endpoint.allow_non_loopback
    {
        let message = format!(
            "`{}` is not a loopback address: the endpoint would be reachable from other machines; listen \
             on 127.0.0.1 or [::1], or set `allow_non_loopback = true` in [{MCP_ENDPOINT_KEY}] if that is \
             what you want",
            endpoint.listen
        );
        problems.add(span, None, Some(&field("listen")), message);
    }
    endpoint
}

/// An origin as a browser sends it: `http` or `https`, a host, an optional port, nothing after.
fn web_origin(origin: &str) -> Result<(), String> {
    http_url(origin)?;
    let after_scheme = origin.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.contains(['/', '?', '#', '@']) {
        // Not quoted: what follows the host may be a password or a token.
        return Err("not an origin: write only the scheme, host and port, such as `http://localhost:6274`".to_owned());
    }
    Ok(())
}

/// A TOML value's type with its article, for "expected …, found …".
fn describe(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// The integer's value; one too large for `u64` becomes infinity (then rejected as too large).
fn integer_as_f64(integer: &DeInteger<'_>) -> f64 {
    // Only decimal integers may carry a sign in TOML.
    if integer.radix() == 10 {
        integer.as_str().parse().unwrap_or(f64::NAN)
    } else {
        u64::from_str_radix(integer.as_str(), integer.radix()).map_or(f64::INFINITY, |value| value as f64)
    }
}

/// A server name to show in a problem: a name too long to be valid is cut
/// (a multi-MiB name must not be echoed back whole).
fn shown_name(name: &str) -> &str {
    if name.len() <= MAX_SERVER_NAME_BYTES {
        return name;
    }
    let mut end = MAX_SERVER_NAME_BYTES.min(32);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Whether `name` is a valid server name; the error says why not (without the name).
pub fn check_server_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_SERVER_NAME_BYTES {
        return Err(format!(
            "server name is {} bytes long; the limit is {MAX_SERVER_NAME_BYTES} bytes",
            name.len()
        ));
    }
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || character == '_' || character == '-');
    if valid {
        Ok(())
    } else {
        Err("invalid server name, use only ASCII letters, digits, `_` and `-`".to_owned())
    }
}

/// Whether `name` is a valid name for a client's own server (a session
/// server of `corral mcp --config`): a server name with room for the
/// `-cID` the daemon adds ([`MAX_SESSION_SERVER_NAME_BYTES`]); the error says
/// why not (without the name).
pub fn check_session_server_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_SESSION_SERVER_NAME_BYTES {
        return Err(format!(
            "the name of a client's own server is {} bytes long; the limit is {MAX_SESSION_SERVER_NAME_BYTES} bytes \
             (corrald adds `-c` and the connection's number to it): shorten it",
            name.len()
        ));
    }
    check_server_name(name)
}

/// Whether `separator` may go between a server's name and its tool's in the
/// names an MCP client sees: 1 to [`MAX_SEPARATOR_CHARS`] of
/// `A-Z a-z 0-9 _ . -`, what every client takes in a tool name. The error
/// says what is allowed (without the value).
pub fn check_separator(separator: &str) -> Result<(), String> {
    let allowed = |character: char| character.is_ascii_alphanumeric() || matches!(character, '_' | '.' | '-');
    if (1..=MAX_SEPARATOR_CHARS).contains(&separator.chars().count()) && separator.chars().all(allowed) {
        Ok(())
    } else {
        Err(format!(
            "a separator is 1 to {MAX_SEPARATOR_CHARS} characters, each an ASCII letter, digit, `_`, `.` or `-`"
        ))
    }
}

fn no_nul(text: &str) -> Result<(), String> {
    if text.contains('\0') {
        Err("must not contain a NUL character".to_owned())
    } else {
        Ok(())
    }
}

fn program(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    no_nul(text)
}

fn absolute_path(text: &str) -> Result<(), String> {
    no_nul(text)?;
    if Path::new(text).is_absolute() {
        Ok(())
    } else {
        Err(format!("must be an absolute path, found `{}`", text.escape_debug()))
    }
}

/// Where a secret is read from (`*_file` of the grants): an absolute path, never quoted (a secret
/// pasted into the wrong field must not end up in a message).
fn secret_file(text: &str) -> Result<(), String> {
    if text.contains('\0') || !Path::new(text).is_absolute() {
        Err("must be an absolute path (of the file holding the secret)".to_owned())
    } else {
        Ok(())
    }
}

/// The environment variable holding a secret (`*_env_var` of the grants): a name, never quoted.
fn secret_env_var(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['=', '\0']) {
        Err("must be the name of an environment variable (not empty, no `=` or NUL), not the secret itself".to_owned())
    } else {
        Ok(())
    }
}

/// A root: an absolute path or a `file://` URI.
fn root(text: &str) -> Result<(), String> {
    no_nul(text)?;
    let is_file_uri = text
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("file://"));
    if is_file_uri || Path::new(text).is_absolute() {
        Ok(())
    } else {
        Err(format!(
            "must be an absolute path or a file:// URI, found `{}`",
            text.escape_debug()
        ))
    }
}

fn tool_name(text: &str) -> Result<(), String> {
    if text.is_empty() {
        Err("tool name must not be empty".to_owned())
    } else {
        Ok(())
    }
}

fn oauth_scope(text: &str) -> Result<(), String> {
    if text.is_empty() || text.chars().any(char::is_whitespace) {
        Err("a scope must be non-empty and contain no whitespace".to_owned())
    } else {
        Ok(())
    }
}

fn env_var_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("environment variable name must not be empty".to_owned())
    } else if name.contains(['=', '\0']) {
        Err(format!(
            "invalid environment variable name `{}`, it must not contain `=` or NUL",
            name.escape_debug()
        ))
    } else {
        Ok(())
    }
}

fn env_value(name: &str, value: &str) -> Result<(), String> {
    if value.contains('\0') {
        Err(format!(
            "value of `{}` must not contain a NUL character",
            name.escape_debug()
        ))
    } else {
        Ok(())
    }
}

/// Whether `name: value` is an HTTP header the config's `http_headers` accepts: a name that is an
/// RFC 9110 token, a value without line breaks or other control characters. The message never
/// quotes the value (it may be a secret). The daemon checks a front-end's request-scoped headers
/// with it too, so both say the same.
pub fn check_http_header(name: &str, value: &str) -> Result<(), String> {
    header_name(name)?;
    header_value(name, value)
}

fn header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("HTTP header name must not be empty".to_owned());
    }
    let is_token = name
        .chars()
        .all(|character| character.is_ascii_alphanumeric() || HEADER_NAME_PUNCTUATION.contains(character));
    if is_token {
        Ok(())
    } else {
        Err(format!(
            "invalid HTTP header name `{}`, use only ASCII letters, digits and \
             {HEADER_NAME_PUNCTUATION}",
            name.escape_debug()
        ))
    }
}

fn header_value(name: &str, value: &str) -> Result<(), String> {
    if value
        .chars()
        .any(|character| character.is_control() && character != '\t')
    {
        Err(format!(
            "value of header `{}` must not contain line breaks or other control characters",
            name.escape_debug()
        ))
    } else {
        Ok(())
    }
}

/// An `http://` or `https://` URL with a host. Never quotes the URL: it may carry a token.
fn http_url(url: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected a URL starting with `http://` or `https://`";
    if url
        .chars()
        .any(|character| character.is_whitespace() || character.is_control())
    {
        return Err("a URL must not contain whitespace or control characters".to_owned());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(EXPECTED.to_owned());
    };
    let scheme_is_well_formed = scheme.starts_with(|character: char| character.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || "+-.".contains(character));
    if !scheme_is_well_formed {
        return Err(EXPECTED.to_owned());
    }
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("unsupported URL scheme `{scheme}`, expected `http` or `https`"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_and_port = authority.rsplit_once('@').map_or(authority, |(_user, host)| host);
    let (host, port) = match host_and_port.strip_prefix('[') {
        // An IPv6 literal: `[::1]:8080`.
        Some(bracketed) => match bracketed.split_once(']') {
            Some((address, after)) => (address, after.strip_prefix(':')),
            None => return Err("the URL has an unclosed `[` in its host".to_owned()),
        },
        None => match host_and_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_and_port, None),
        },
    };
    if host.is_empty() {
        return Err("the URL has no host".to_owned());
    }
    if port.is_some_and(|port| !port.is_empty() && port.parse::<u16>().is_err()) {
        return Err("the URL has an invalid port".to_owned());
    }
    Ok(())
}

/// The known server field closest to a misspelt `name`, if one is close enough.
fn suggest_field(name: &str) -> Option<&'static str> {
    let alias = FIELD_ALIASES
        .iter()
        .find(|(alias, _)| alias.eq_ignore_ascii_case(name))
        .map(|&(_, field)| field);
    alias.or_else(|| closest(name, FIELDS.iter().map(|field| field.name)))
}

/// The candidate closest to `name` in edit distance (ignoring case and `-` versus `_`), if
/// close enough.
fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let normalized = name.to_ascii_lowercase().replace('-', "_");
    // One edit per three characters: catches typos without suggesting unrelated fields.
    let limit = (normalized.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&normalized, candidate), candidate))
        .filter(|&(distance, _)| distance <= limit)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, in characters.
fn edit_distance(from: &str, to: &str) -> usize {
    let to: Vec<char> = to.chars().collect();
    let mut previous: Vec<usize> = (0..=to.len()).collect();
    for (row, from_char) in from.chars().enumerate() {
        let mut current = vec![row + 1; to.len() + 1];
        for (column, &to_char) in to.iter().enumerate() {
            let substitution = previous[column] + usize::from(from_char != to_char);
            current[column + 1] = substitution.min(previous[column + 1] + 1).min(current[column] + 1);
        }
        previous = current;
    }
    previous[to.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_from_one() {
        let text = "ab\nçd\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 3), (2, 1));
        assert_eq!(line_and_column(text, 5), (2, 2));
        assert_eq!(line_and_column(text, 100), (3, 1));
        assert_eq!(line_and_column("\u{feff}[servers]", 3), (1, 1));
    }

    #[test]
    fn server_names_are_at_most_128_bytes_and_a_long_one_is_not_echoed() {
        assert_eq!(check_server_name(&"a".repeat(MAX_SERVER_NAME_BYTES)), Ok(()));
        let long = "a".repeat(1024 * 1024);
        let text = format!("[servers.{long}]\ncommand = \"x\"\n");
        let Err(ConfigError::Invalid { problems, .. }) = parse(&text, Path::new("c.toml")) else {
            panic!("a 1 MiB server name was accepted");
        };
        let shown: String = problems.iter().map(ToString::to_string).collect();
        assert!(
            shown.contains("server name is 1048576 bytes long; the limit is 128 bytes"),
            "{shown}"
        );
        assert!(shown.len() < 1024, "the name is cut in problems: {} bytes", shown.len());
        let problems = parse_server_json(&long, &serde_json::json!({"command": "x"})).expect_err("too long");
        assert!(problems[0].to_string().len() < 1024);
    }

    #[test]
    fn a_session_server_name_leaves_room_for_the_connection_suffix() {
        let longest = "a".repeat(MAX_SESSION_SERVER_NAME_BYTES);
        assert_eq!(check_session_server_name(&longest), Ok(()));
        let registered = format!("{longest}-c{}", u64::MAX);
        assert_eq!(
            registered.len(),
            MAX_SERVER_NAME_BYTES,
            "the longest registry name fits exactly"
        );
        assert_eq!(check_server_name(&registered), Ok(()));
        let error = check_session_server_name(&format!("{longest}a")).expect_err("one byte too long");
        assert!(error.contains("the limit is 106 bytes"), "{error}");
        assert!(error.contains("shorten it"), "{error}");
        let error = check_session_server_name("not ok").expect_err("a bad character");
        assert!(error.contains("invalid server name"), "{error}");
    }

    #[test]
    fn separators_are_one_to_eight_of_the_characters_every_client_takes() {
        for good in ["__", ".", "-", "_x.9-", "12345678"] {
            assert_eq!(check_separator(good), Ok(()), "{good}");
        }
        for bad in ["", "123456789", "a b", "/", "::", "é"] {
            let error = check_separator(bad).expect_err(bad);
            assert_eq!(
                error,
                "a separator is 1 to 8 characters, each an ASCII letter, digit, `_`, `.` or `-`"
            );
        }
    }

    #[test]
    fn suggestions_catch_typos_and_other_clients_spellings_only() {
        assert_eq!(suggest_field("comand"), Some("command"));
        assert_eq!(suggest_field("startup-timeout-sec"), Some("startup_timeout_sec"));
        assert_eq!(suggest_field("startupTimeoutSec"), Some("startup_timeout_sec"));
        assert_eq!(suggest_field("headers"), Some("http_headers"));
        assert_eq!(suggest_field("type"), Some("transport"));
        assert_eq!(suggest_field("colour"), None);
        assert_eq!(suggest_field("x"), None);
    }

    #[test]
    fn urls_need_an_http_scheme_and_a_host() {
        for good in [
            "https://mcp.linear.app/mcp",
            "http://127.0.0.1:8080",
            "HTTPS://[::1]:3000/x",
            "https://u:p@h/",
        ] {
            assert_eq!(http_url(good), Ok(()), "{good}");
        }
        for bad in [
            "mcp.linear.app",
            "ftp://h",
            "https://",
            "https:///path",
            "http://h:port",
            "http://[::1",
            "http://a b",
        ] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
    }
}
