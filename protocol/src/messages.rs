//! Methods, parameters, results and notifications of the front-end API.
//!
//! Each method is a zero-sized type implementing [`Request`] (params and result
//! types plus the method name); each notification implements
//! [`Notification`]. Field names are camelCase on the wire. `Option` fields
//! that describe state are sent as explicit `null` so that typed front-ends see
//! every key.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A JSON-RPC method a front-end calls on the daemon.
pub trait Request {
    /// Method name on the wire, e.g. `mcpServer/list`.
    const METHOD: &'static str;
    /// The `params` member. Methods without parameters accept `null`, `{}` or no `params` at all.
    type Params: Serialize + DeserializeOwned + JsonSchema;
    /// The `result` member of a successful response.
    type Result: Serialize + DeserializeOwned + JsonSchema;
}

/// A JSON-RPC notification the daemon pushes to front-ends.
pub trait Notification {
    /// Method name on the wire, e.g. `mcpServer/startupStatus/updated`.
    const METHOD: &'static str;
    /// The `params` member.
    type Params: Serialize + DeserializeOwned + JsonSchema;
}

/// Methods that take no parameters use this (serialized as `{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

// ---------------------------------------------------------------------------
// initialize

/// `initialize`: the first request on every connection.
#[derive(Debug)]
pub enum Initialize {}
impl Request for Initialize {
    const METHOD: &'static str = "initialize";
    type Params = InitializeParams;
    type Result = InitializeResult;
}

/// Parameters of `initialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct InitializeParams {
    /// Protocol version the front-end speaks (see `docs/protocol.md`, Versioning).
    pub protocol_version: u32,
    /// Who is connecting; shown in logs and `daemon/status`.
    pub client_info: ClientInfo,
    /// What the front-end can do for the daemon.
    #[serde(default)]
    pub capabilities: ClientCapabilities,
}

impl InitializeParams {
    /// Params for a client speaking this crate's [`crate::PROTOCOL_VERSION`].
    pub fn new(client_info: ClientInfo) -> Self {
        Self {
            protocol_version: crate::PROTOCOL_VERSION,
            client_info,
            capabilities: ClientCapabilities::default(),
        }
    }
}

/// Name and version of a front-end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClientInfo {
    /// Front-end name, e.g. `corral-cli` or `nvim-corral`.
    pub name: String,
    /// Front-end version, free-form.
    #[serde(default)]
    pub version: Option<String>,
}

impl ClientInfo {
    /// A client info with a name and a version.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: Some(version.into()),
        }
    }
}

/// What a front-end can do when the daemon asks it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ClientCapabilities {
    /// The front-end answers `elicitation/create` requests forwarded from MCP servers.
    #[serde(default)]
    pub elicitation: bool,
    /// The front-end answers `sampling/createMessage` requests forwarded from MCP servers.
    #[serde(default)]
    pub sampling: bool,
}

/// Result of `initialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct InitializeResult {
    /// Protocol version the daemon speaks.
    pub protocol_version: u32,
    /// The daemon answering.
    pub daemon_info: DaemonInfo,
    /// Identifier of this connection (session) inside the daemon.
    pub connection_id: u64,
    /// Sequence number of the newest notification sent so far (0 if none).
    /// Notifications pushed on this connection have larger numbers.
    pub last_seq: u64,
    /// How many past notifications the daemon keeps for `events/replay`.
    pub replay_capacity: u32,
}

impl InitializeResult {
    /// A result for the given daemon and connection.
    pub fn new(daemon_info: DaemonInfo, connection_id: u64, last_seq: u64, replay_capacity: u32) -> Self {
        Self {
            protocol_version: crate::PROTOCOL_VERSION,
            daemon_info,
            connection_id,
            last_seq,
            replay_capacity,
        }
    }
}

/// Identity of the daemon process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DaemonInfo {
    /// Always `corrald`.
    pub name: String,
    /// Daemon version (semver).
    pub version: String,
    /// Process id of the daemon.
    pub pid: u32,
}

impl DaemonInfo {
    /// Daemon info for a version and pid.
    pub fn new(version: impl Into<String>, pid: u32) -> Self {
        Self {
            name: "corrald".to_owned(),
            version: version.into(),
            pid,
        }
    }
}

// ---------------------------------------------------------------------------
// daemon/status

/// `daemon/status`: the daemon's own state, for `corral status`.
#[derive(Debug)]
pub enum DaemonStatusRequest {}
impl Request for DaemonStatusRequest {
    const METHOD: &'static str = "daemon/status";
    type Params = NoParams;
    type Result = DaemonStatus;
}

/// Result of `daemon/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DaemonStatus {
    /// The daemon answering.
    pub daemon_info: DaemonInfo,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Socket the daemon serves.
    pub socket_path: String,
    /// Config file the daemon reads (it need not exist).
    pub config_path: String,
    /// Whether that config file exists.
    pub config_file_exists: bool,
    /// Servers by status.
    pub servers: ServerCounts,
    /// Front-end connections open now (including the one asking).
    pub connections: u32,
    /// Sequence number of the newest notification.
    pub last_seq: u64,
    /// Why the config file could not be used, if it could not (the daemon then
    /// runs with no config servers until the file is fixed).
    pub config_error: Option<String>,
    /// Where OAuth credentials are stored; `null` from a daemon that does not say.
    #[serde(default)]
    pub credentials_store: Option<CredentialsStoreStatus>,
    /// Why the children record (`<socket>.children`, which lets the next daemon
    /// clean up after this one is killed with SIGKILL) cannot be written, while
    /// it cannot; the daemon keeps retrying. `null` when it is up to date.
    #[serde(default)]
    pub children_record_error: Option<String>,
    /// Most front-end connections served at once (from the connection cap and
    /// the open-file limit); beyond it, new connections are closed at once.
    /// `null` from a daemon that does not say.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Connections closed at once since the daemon started because
    /// `maxConnections` were open. `null` from a daemon that does not say.
    #[serde(default)]
    pub refused_connections: Option<u64>,
    /// Progress notifications (`mcpServer/progress`) dropped since the daemon
    /// started because a front-end did not read them fast enough (each such
    /// front-end was told with `mcpServer/progress/lagged`). `null` from a
    /// daemon that does not say.
    #[serde(default)]
    pub dropped_progress: Option<u64>,
    /// Notifications to the service manager (`sd_notify`: readiness, status,
    /// watchdog pings) dropped since the daemon started because the manager
    /// did not read them in time; 0 when no manager listens. `null` from a
    /// daemon that does not say.
    #[serde(default)]
    pub service_notices_dropped: Option<u64>,
    /// The loopback streamable-HTTP MCP endpoint (`[mcp_endpoint]`): `null` when it is not
    /// turned on (or from a daemon that does not say).
    #[serde(default)]
    pub mcp_endpoint: Option<McpEndpointStatus>,
}

/// The loopback streamable-HTTP MCP endpoint, when it is turned on: where it serves and where
/// its bearer token is, or why it does not serve. The token itself is never on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct McpEndpointStatus {
    /// The MCP endpoint's URL, e.g. `http://127.0.0.1:7767/mcp`; `null` when it does not serve.
    pub url: Option<String>,
    /// The file holding the bearer token every request must carry (`Authorization: Bearer …`),
    /// readable by this user only; `null` when it does not serve.
    pub token_file: Option<String>,
    /// Why the endpoint does not serve (the port is taken, the token file is not safe…), if so.
    pub error: Option<String>,
}

impl McpEndpointStatus {
    /// An endpoint serving at `url`, with its token in `token_file`.
    pub fn serving(url: impl Into<String>, token_file: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            token_file: Some(token_file.into()),
            error: None,
        }
    }

    /// An endpoint turned on that could not start, and why.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            url: None,
            token_file: None,
            error: Some(error.into()),
        }
    }
}

/// Where the daemon keeps OAuth credentials (the `credentials_store` setting and what it resolved to).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CredentialsStoreStatus {
    /// The configured mode: `auto`, `keyring`, `file` or `encrypted-file`.
    pub mode: String,
    /// The store in use.
    pub backend: CredentialsBackend,
    /// Where: the keyring's name, or the file's path (and the key's place for an encrypted file).
    pub location: String,
    /// Why the store differs from the first choice (e.g. no keyring, so the file is used), if it does.
    pub note: Option<String>,
}

impl CredentialsStoreStatus {
    /// A store status.
    pub fn new(mode: impl Into<String>, backend: CredentialsBackend, location: impl Into<String>) -> Self {
        Self {
            mode: mode.into(),
            backend,
            location: location.into(),
            note: None,
        }
    }

    /// The same status with a note saying why this store was chosen.
    pub fn with_note(mut self, note: Option<String>) -> Self {
        self.note = note;
        self
    }
}

/// The kind of credential store in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum CredentialsBackend {
    /// The OS keyring (Secret Service, macOS Keychain, Windows Credential Manager).
    Keyring,
    /// A 0600 JSON file in the data directory.
    File,
    /// An encrypted file in the data directory.
    EncryptedFile,
    /// None: `keyring` was configured and no keyring is available (see `note`).
    Unavailable,
    /// A store this client does not know (sent by a newer daemon).
    #[serde(other)]
    #[schemars(skip)]
    Unknown,
}

impl CredentialsBackend {
    /// The wire name, e.g. `encryptedFile`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keyring => "keyring",
            Self::File => "file",
            Self::EncryptedFile => "encryptedFile",
            Self::Unavailable => "unavailable",
            Self::Unknown => "unknown",
        }
    }
}

impl DaemonStatus {
    /// The same status with a config error attached.
    pub fn with_config_error(mut self, config_error: Option<String>) -> Self {
        self.config_error = config_error;
        self
    }

    /// The same status with the connection cap and how many connections it refused.
    pub fn with_connection_limit(mut self, max_connections: u32, refused_connections: u64) -> Self {
        self.max_connections = Some(max_connections);
        self.refused_connections = Some(refused_connections);
        self
    }

    /// The same status with the number of progress notifications dropped.
    pub fn with_dropped_progress(mut self, dropped_progress: u64) -> Self {
        self.dropped_progress = Some(dropped_progress);
        self
    }

    /// The same status with the number of service-manager notifications dropped.
    pub fn with_service_notices_dropped(mut self, service_notices_dropped: u64) -> Self {
        self.service_notices_dropped = Some(service_notices_dropped);
        self
    }

    /// The same status saying where credentials are stored.
    pub fn with_credentials_store(mut self, credentials_store: Option<CredentialsStoreStatus>) -> Self {
        self.credentials_store = credentials_store;
        self
    }

    /// The same status with the loopback MCP endpoint's.
    pub fn with_mcp_endpoint(mut self, mcp_endpoint: Option<McpEndpointStatus>) -> Self {
        self.mcp_endpoint = mcp_endpoint;
        self
    }

    /// The same status saying why the children record cannot be written.
    pub fn with_children_record_error(mut self, children_record_error: Option<String>) -> Self {
        self.children_record_error = children_record_error;
        self
    }

    /// A status snapshot.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        daemon_info: DaemonInfo,
        uptime_ms: u64,
        socket_path: String,
        config_path: String,
        config_file_exists: bool,
        servers: ServerCounts,
        connections: u32,
        last_seq: u64,
    ) -> Self {
        Self {
            daemon_info,
            uptime_ms,
            socket_path,
            config_path,
            config_file_exists,
            servers,
            connections,
            last_seq,
            config_error: None,
            credentials_store: None,
            children_record_error: None,
            max_connections: None,
            refused_connections: None,
            dropped_progress: None,
            service_notices_dropped: None,
            mcp_endpoint: None,
        }
    }
}

/// Number of servers in each status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServerCounts {
    /// All servers known to the daemon.
    pub total: u32,
    /// Servers in `starting`.
    pub starting: u32,
    /// Servers in `ready`.
    pub ready: u32,
    /// Servers in `failed`.
    pub failed: u32,
    /// Servers in `cancelled`.
    pub cancelled: u32,
    /// Servers in `stopped`.
    pub stopped: u32,
}

impl ServerCounts {
    /// Count one more server in `status`.
    pub fn add(&mut self, status: ServerStatus) {
        self.total += 1;
        match status {
            ServerStatus::Starting => self.starting += 1,
            ServerStatus::Ready => self.ready += 1,
            ServerStatus::Failed => self.failed += 1,
            ServerStatus::Cancelled => self.cancelled += 1,
            ServerStatus::Stopped => self.stopped += 1,
        }
    }
}

impl std::fmt::Display for ServerCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let noun = if self.total == 1 { "server" } else { "servers" };
        write!(f, "{} {noun}", self.total)?;
        let parts: Vec<String> = [
            (self.ready, "ready"),
            (self.starting, "starting"),
            (self.failed, "failed"),
            (self.cancelled, "cancelled"),
            (self.stopped, "stopped"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, label)| format!("{n} {label}"))
        .collect();
        if !parts.is_empty() {
            write!(f, ": {}", parts.join(", "))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// mcpServer/list, mcpServer/get

/// `mcpServer/list`: every server the daemon knows, in name order.
#[derive(Debug)]
pub enum McpServerList {}
impl Request for McpServerList {
    const METHOD: &'static str = "mcpServer/list";
    type Params = NoParams;
    type Result = McpServerListResult;
}

/// Result of `mcpServer/list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct McpServerListResult {
    /// Servers sorted by name.
    pub servers: Vec<McpServerStatus>,
}

impl McpServerListResult {
    /// A list result.
    pub fn new(servers: Vec<McpServerStatus>) -> Self {
        Self { servers }
    }
}

/// `mcpServer/get`: one server by name.
#[derive(Debug)]
pub enum McpServerGet {}
impl Request for McpServerGet {
    const METHOD: &'static str = "mcpServer/get";
    type Params = McpServerGetParams;
    type Result = McpServerGetResult;
}

/// Parameters of `mcpServer/get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct McpServerGetParams {
    /// Server name as in the config file.
    pub name: String,
}

impl McpServerGetParams {
    /// Params naming a server.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// Result of `mcpServer/get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct McpServerGetResult {
    /// The server.
    pub server: McpServerStatus,
}

impl McpServerGetResult {
    /// A get result.
    pub fn new(server: McpServerStatus) -> Self {
        Self { server }
    }
}

/// `mcpServer/start`: start a stopped, failed or cancelled server (no-op if it is running).
///
/// Answers once the server is `starting`; follow `mcpServer/startupStatus/updated`
/// for the outcome. A started server is restarted after crashes again.
#[derive(Debug)]
pub enum McpServerStart {}
impl Request for McpServerStart {
    const METHOD: &'static str = "mcpServer/start";
    type Params = McpServerControlParams;
    type Result = McpServerGetResult;
}

/// `mcpServer/stop`: stop a server and everything it started; it stays stopped
/// (no automatic restart) until started again.
///
/// Answers once the server's processes are gone.
#[derive(Debug)]
pub enum McpServerStop {}
impl Request for McpServerStop {
    const METHOD: &'static str = "mcpServer/stop";
    type Params = McpServerControlParams;
    type Result = McpServerGetResult;
}

/// `mcpServer/restart`: stop the server (if running) and start it again.
///
/// Answers once the old processes are gone and the new start has begun.
#[derive(Debug)]
pub enum McpServerRestart {}
impl Request for McpServerRestart {
    const METHOD: &'static str = "mcpServer/restart";
    type Params = McpServerControlParams;
    type Result = McpServerGetResult;
}

/// Parameters of `mcpServer/start`, `mcpServer/stop` and `mcpServer/restart`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct McpServerControlParams {
    /// Server name.
    pub name: String,
}

impl McpServerControlParams {
    /// Params naming a server.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// `mcpServer/add`: add a server that lives as long as this connection.
///
/// `config` has the fields of a `[servers.NAME]` table in the config file, as
/// JSON, validated by the same rules. The server starts at once (unless
/// `enabled` is false); when the connection closes, it is stopped, its
/// processes are reaped and it is removed. Answers once it is `starting`.
#[derive(Debug)]
pub enum McpServerAdd {}
impl Request for McpServerAdd {
    const METHOD: &'static str = "mcpServer/add";
    type Params = McpServerAddParams;
    type Result = McpServerGetResult;
}

/// Parameters of `mcpServer/add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct McpServerAddParams {
    /// Name of the new server; must not be in use.
    pub name: String,
    /// The server's fields, as in the config file (e.g. `{"command": "npx", "args": ["-y", "…"]}`).
    pub config: serde_json::Value,
}

impl McpServerAddParams {
    /// Params adding `name` with `config`.
    pub fn new(name: impl Into<String>, config: serde_json::Value) -> Self {
        Self {
            name: name.into(),
            config,
        }
    }
}

/// `mcpServer/remove`: stop and remove a server this connection added.
///
/// Answers once its processes are gone. Config servers are removed by editing
/// the config file; another connection's servers cannot be removed.
#[derive(Debug)]
pub enum McpServerRemove {}
impl Request for McpServerRemove {
    const METHOD: &'static str = "mcpServer/remove";
    type Params = McpServerControlParams;
    type Result = McpServerRemoveResult;
}

/// Result of `mcpServer/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct McpServerRemoveResult {
    /// The name of the removed server.
    pub name: String,
}

impl McpServerRemoveResult {
    /// A remove result.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// Everything a front-end needs to show one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct McpServerStatus {
    /// Server name (unique within the daemon).
    pub name: String,
    /// Where the server's definition comes from.
    pub origin: ServerOrigin,
    /// How the daemon talks to the server.
    pub transport: TransportKind,
    /// `false` when the config says `enabled = false`: not started automatically, but `mcpServer/start` still starts it.
    pub enabled: bool,
    /// Lifecycle status.
    pub status: ServerStatus,
    /// Why the server failed; `null` unless `status` is `failed`.
    pub failure_reason: Option<FailureReason>,
    /// A readable sentence saying what went wrong; `null` unless `status` is `failed`.
    pub error: Option<String>,
    /// Process id of a running stdio server.
    pub pid: Option<u32>,
    /// How many times the daemon restarted the server after it died.
    pub restart_count: u32,
    /// Number of tools the server offers (after the config's filters), once ready.
    pub tool_count: Option<u32>,
    /// What the server said about itself at `initialize`.
    pub server_info: Option<ServerInfo>,
    /// Milliseconds since the server became ready.
    pub uptime_ms: Option<u64>,
    /// How the server's last process ended, e.g. `exit status: 3` or `signal: 9 (SIGKILL)`.
    pub last_exit: Option<String>,
    /// The last lines the server wrote to stderr, oldest first (at most 20).
    pub stderr_tail: Vec<String>,
    /// How the server authenticates, computed without starting it; `null` when it could not be
    /// determined (see `authError`).
    #[serde(default)]
    pub auth_status: Option<AuthStatus>,
    /// Why `authStatus` could not be determined, e.g. a corrupt credential store (names the file).
    #[serde(default)]
    pub auth_error: Option<String>,
}

impl McpServerStatus {
    /// A server that has not been started; other fields are filled in by the caller.
    pub fn new(name: impl Into<String>, origin: ServerOrigin, transport: TransportKind) -> Self {
        Self {
            name: name.into(),
            origin,
            transport,
            enabled: true,
            status: ServerStatus::Stopped,
            failure_reason: None,
            error: None,
            pid: None,
            restart_count: 0,
            tool_count: None,
            server_info: None,
            uptime_ms: None,
            last_exit: None,
            stderr_tail: Vec::new(),
            auth_status: None,
            auth_error: None,
        }
    }
}

/// Where a server's definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ServerOrigin {
    /// The config file; shared by all front-ends.
    Config,
    /// Added at runtime by one front-end; lives as long as that connection.
    Session,
    /// Shipped inside the daemon.
    BuiltIn,
}

/// How the daemon talks to a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum TransportKind {
    /// A child process speaking MCP over stdin/stdout.
    Stdio,
    /// A remote server speaking MCP streamable HTTP.
    StreamableHttp,
    /// An in-process server.
    BuiltIn,
}

/// Lifecycle status of a server.
///
/// The first four values are the codex app-server's, with the same meaning.
/// `stopped` is Corral's addition: the server is not running and nobody is
/// trying to start it (disabled, stopped on purpose, or not started yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ServerStatus {
    /// Being launched and initialized.
    Starting,
    /// Initialized and its tools listed; calls are routed to it.
    Ready,
    /// Startup or the running server failed; see `failureReason` and `error`.
    Failed,
    /// Startup was abandoned because the server was stopped or the daemon is shutting down.
    Cancelled,
    /// Not running and not being started.
    Stopped,
}

impl ServerStatus {
    /// The wire name, e.g. `ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Stopped => "stopped",
        }
    }
}

impl std::fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a server is `failed`: a closed set a front-end can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum FailureReason {
    /// The server's config entry is invalid (the error names the field).
    ConfigInvalid,
    /// The stdio command was not found on the server's PATH.
    ExecutableNotFound,
    /// The OS refused to start the process (permissions, resource limits…).
    SpawnFailed,
    /// `initialize` and the first `tools/list` did not finish within `startup_timeout_sec`.
    StartupTimeout,
    /// The process exited before it was ready (the error has the exit status and stderr tail).
    ProcessExited,
    /// The server answered `initialize` or `tools/list` with an error or broke the protocol.
    ProtocolError,
    /// The server kept dying after start; the daemon gave up restarting it.
    CrashLoop,
    /// The HTTP server could not be reached (connect, DNS or TLS error).
    Unreachable,
    /// The HTTP server answered with an error status.
    HttpError,
    /// The server needs a login and no credentials are stored (first-time login).
    AuthenticationRequired,
    /// Stored OAuth credentials exist but are expired and could not be refreshed;
    /// the user must log in again. Same meaning as codex's `reauthenticationRequired`.
    ReauthenticationRequired,
    /// The credentials lack a scope the server requires.
    InsufficientScope,
    /// A reason this client does not know (sent by a newer daemon).
    #[serde(other)]
    #[schemars(skip)]
    Unknown,
}

impl FailureReason {
    /// The wire name, e.g. `reauthenticationRequired`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigInvalid => "configInvalid",
            Self::ExecutableNotFound => "executableNotFound",
            Self::SpawnFailed => "spawnFailed",
            Self::StartupTimeout => "startupTimeout",
            Self::ProcessExited => "processExited",
            Self::ProtocolError => "protocolError",
            Self::CrashLoop => "crashLoop",
            Self::Unreachable => "unreachable",
            Self::HttpError => "httpError",
            Self::AuthenticationRequired => "authenticationRequired",
            Self::ReauthenticationRequired => "reauthenticationRequired",
            Self::InsufficientScope => "insufficientScope",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a server authenticates: codex's `McpAuthStatus` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum AuthStatus {
    /// No authentication: a stdio or built-in server, or an HTTP server without OAuth support.
    Unsupported,
    /// The server supports OAuth and no usable credentials are stored: `corral login NAME`.
    NotLoggedIn,
    /// The config supplies the credentials (`bearer_token_env_var` or an `Authorization` header).
    BearerToken,
    /// Usable (or refreshable) OAuth credentials are stored.
    #[serde(rename = "oAuth")]
    OAuth,
    /// A value this client does not know (sent by a newer daemon).
    #[serde(other)]
    #[schemars(skip)]
    Unknown,
}

impl AuthStatus {
    /// The wire name, e.g. `notLoggedIn`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsupported => "unsupported",
            Self::NotLoggedIn => "notLoggedIn",
            Self::BearerToken => "bearerToken",
            Self::OAuth => "oAuth",
            Self::Unknown => "unknown",
        }
    }
}

/// What an MCP server said about itself at `initialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServerInfo {
    /// `serverInfo.name`.
    pub name: String,
    /// `serverInfo.version`.
    pub version: String,
    /// `serverInfo.title`, when given.
    pub title: Option<String>,
    /// Negotiated MCP protocol version.
    pub protocol_version: Option<String>,
}

impl ServerInfo {
    /// Server info as given at `initialize`.
    pub fn new(name: String, version: String, title: Option<String>, protocol_version: Option<String>) -> Self {
        Self {
            name,
            version,
            title,
            protocol_version,
        }
    }
}

// ---------------------------------------------------------------------------
// tools/list, tools/call

/// `tools/list`: the tools of every ready server, or of one.
///
/// Only tools the config's `enabled_tools` / `disabled_tools` let through are
/// listed. Each tool is the MCP `Tool` object exactly as the server sent it.
#[derive(Debug)]
pub enum ToolsList {}
impl Request for ToolsList {
    const METHOD: &'static str = "tools/list";
    type Params = ToolsListParams;
    type Result = ToolsListResult;
}

/// Parameters of `tools/list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ToolsListParams {
    /// Only this server's tools (it must be ready); all ready servers' when absent.
    #[serde(default)]
    pub server: Option<String>,
    /// HTTP headers for this listing only (see [`RequestHeaders`]): `server` must be a
    /// streamable-HTTP server, which is then asked for its tools with them (the config's tool
    /// filters still apply) instead of answering from the listing corrald keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<RequestHeaders>,
}

impl ToolsListParams {
    /// List every ready server's tools.
    pub fn all() -> Self {
        Self {
            server: None,
            headers: None,
        }
    }

    /// List one server's tools.
    pub fn server(name: impl Into<String>) -> Self {
        Self {
            server: Some(name.into()),
            headers: None,
        }
    }

    /// The same listing sent with request-scoped HTTP `headers`.
    pub fn with_headers(mut self, headers: Option<RequestHeaders>) -> Self {
        self.headers = headers;
        self
    }
}

/// HTTP headers a front-end attaches to one request for a streamable-HTTP server (a per-user
/// or per-tenant header, say), name to value.
///
/// Checked like the config's `http_headers` (an RFC 9110 token as the name; no line breaks or
/// other control characters in the value); headers the MCP transport sets itself
/// (`Accept`, `Content-Type`, `Mcp-Session-Id`, `MCP-Protocol-Version`, `Mcp-Method`,
/// `Mcp-Name`, `Mcp-Param-*`, `Last-Event-Id`, …) and credentials corrald manages
/// (`Authorization`, `DPoP`) are refused. Sent on that request only (a retry after an expired
/// session included), never stored and never logged. Refused for stdio and built-in servers.
pub type RequestHeaders = std::collections::BTreeMap<String, String>;

/// Result of `tools/list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ToolsListResult {
    /// Tools, by server name then in the server's order.
    pub tools: Vec<ServerTool>,
    /// Servers whose tools are missing because they are not ready (all-servers listing only).
    pub not_ready: Vec<NotReadyServer>,
}

impl ToolsListResult {
    /// A listing.
    pub fn new(tools: Vec<ServerTool>, not_ready: Vec<NotReadyServer>) -> Self {
        Self { tools, not_ready }
    }
}

/// One tool of one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServerTool {
    /// The server offering it.
    pub server: String,
    /// The MCP `Tool` as the server sent it (`name`, `description`,
    /// `inputSchema`, `outputSchema`, `annotations`, `_meta`, …).
    pub tool: serde_json::Value,
}

impl ServerTool {
    /// A server's tool.
    pub fn new(server: impl Into<String>, tool: serde_json::Value) -> Self {
        Self {
            server: server.into(),
            tool,
        }
    }

    /// The tool's name, if the tool object has one.
    pub fn name(&self) -> Option<&str> {
        self.tool.get("name").and_then(serde_json::Value::as_str)
    }
}

/// A server left out of a listing because it is not ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct NotReadyServer {
    /// Server name.
    pub name: String,
    /// Its status.
    pub status: ServerStatus,
    /// Why it failed, when it did.
    pub failure_reason: Option<FailureReason>,
}

impl NotReadyServer {
    /// A server that is not ready.
    pub fn new(name: impl Into<String>, status: ServerStatus, failure_reason: Option<FailureReason>) -> Self {
        Self {
            name: name.into(),
            status,
            failure_reason,
        }
    }
}

/// `tools/call`: call a tool of a server; the result is the server's MCP
/// `CallToolResult`, exactly as sent (a tool's own failure is a result with
/// `isError: true`, not a JSON-RPC error).
#[derive(Debug)]
pub enum ToolsCall {}
impl Request for ToolsCall {
    const METHOD: &'static str = "tools/call";
    type Params = ToolsCallParams;
    type Result = serde_json::Value;
}

/// Parameters of `tools/call`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ToolsCallParams {
    /// The server.
    pub server: String,
    /// The tool's name, as the server lists it.
    pub name: String,
    /// The tool's arguments (an object matching its `inputSchema`).
    #[serde(default)]
    pub arguments: Option<serde_json::Map<String, serde_json::Value>>,
    /// MCP `_meta` to send with the call.
    #[serde(default, rename = "_meta")]
    pub meta: Option<serde_json::Map<String, serde_json::Value>>,
    /// HTTP headers for this call only (see [`RequestHeaders`]); for a streamable-HTTP server.
    /// The config's tool filters still apply; whether the tool exists for these headers is the
    /// server's to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<RequestHeaders>,
}

impl ToolsCallParams {
    /// Call `name` on `server` with `arguments`.
    pub fn new(
        server: impl Into<String>,
        name: impl Into<String>,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Self {
        Self {
            server: server.into(),
            name: name.into(),
            arguments,
            meta: None,
            headers: None,
        }
    }

    /// The same call sent with request-scoped HTTP `headers`.
    pub fn with_headers(mut self, headers: Option<RequestHeaders>) -> Self {
        self.headers = headers;
        self
    }
}

// ---------------------------------------------------------------------------
// resources/list, resources/templates/list, resources/read, prompts/list, prompts/get

/// Parameters of the listing methods: one server's, or every ready server's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ListParams {
    /// Only this server (it must be ready); all ready servers when absent.
    #[serde(default)]
    pub server: Option<String>,
    /// HTTP headers for this listing only (see [`RequestHeaders`]): `server` must be a
    /// streamable-HTTP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<RequestHeaders>,
}

impl ListParams {
    /// Every ready server.
    pub fn all() -> Self {
        Self {
            server: None,
            headers: None,
        }
    }

    /// One server.
    pub fn server(name: impl Into<String>) -> Self {
        Self {
            server: Some(name.into()),
            headers: None,
        }
    }

    /// The same listing sent with request-scoped HTTP `headers`.
    pub fn with_headers(mut self, headers: Option<RequestHeaders>) -> Self {
        self.headers = headers;
        self
    }
}

/// One MCP object (resource, resource template, prompt) of one server, as the server sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServerItem {
    /// The server offering it.
    pub server: String,
    /// The MCP object, untouched.
    pub item: serde_json::Value,
}

impl ServerItem {
    /// An item of a server.
    pub fn new(server: impl Into<String>, item: serde_json::Value) -> Self {
        Self {
            server: server.into(),
            item,
        }
    }
}

/// A server whose listing failed (it answered an error, broke pagination or timed out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ListError {
    /// Server name.
    pub server: String,
    /// What went wrong.
    pub message: String,
}

impl ListError {
    /// A failed listing.
    pub fn new(server: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            message: message.into(),
        }
    }
}

/// Result of `resources/list`, `resources/templates/list` and `prompts/list`.
///
/// Every page of every server is fetched (a server that repeats a cursor is
/// an error, not a loop). Servers that do not offer the kind are simply absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ListResult {
    /// The items, by server name then in the server's order.
    pub items: Vec<ServerItem>,
    /// Enabled servers left out because they are not ready.
    pub not_ready: Vec<NotReadyServer>,
    /// Ready servers whose listing failed.
    pub errors: Vec<ListError>,
}

impl ListResult {
    /// A listing.
    pub fn new(items: Vec<ServerItem>, not_ready: Vec<NotReadyServer>, errors: Vec<ListError>) -> Self {
        Self {
            items,
            not_ready,
            errors,
        }
    }
}

/// `resources/list`: resources of every ready server, or of one.
#[derive(Debug)]
pub enum ResourcesList {}
impl Request for ResourcesList {
    const METHOD: &'static str = "resources/list";
    type Params = ListParams;
    type Result = ListResult;
}

/// `resources/templates/list`: resource templates of every ready server, or of one.
#[derive(Debug)]
pub enum ResourceTemplatesList {}
impl Request for ResourceTemplatesList {
    const METHOD: &'static str = "resources/templates/list";
    type Params = ListParams;
    type Result = ListResult;
}

/// `prompts/list`: prompts of every ready server, or of one.
#[derive(Debug)]
pub enum PromptsList {}
impl Request for PromptsList {
    const METHOD: &'static str = "prompts/list";
    type Params = ListParams;
    type Result = ListResult;
}

/// `resources/read`: read a resource; the result is the server's MCP `ReadResourceResult`, untouched.
#[derive(Debug)]
pub enum ResourcesRead {}
impl Request for ResourcesRead {
    const METHOD: &'static str = "resources/read";
    type Params = ResourcesReadParams;
    type Result = serde_json::Value;
}

/// Parameters of `resources/read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ResourcesReadParams {
    /// The server.
    pub server: String,
    /// The resource's URI.
    pub uri: String,
}

impl ResourcesReadParams {
    /// Read `uri` from `server`.
    pub fn new(server: impl Into<String>, uri: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            uri: uri.into(),
        }
    }
}

/// `prompts/get`: get a prompt; the result is the server's MCP `GetPromptResult`, untouched.
#[derive(Debug)]
pub enum PromptsGet {}
impl Request for PromptsGet {
    const METHOD: &'static str = "prompts/get";
    type Params = PromptsGetParams;
    type Result = serde_json::Value;
}

/// Parameters of `prompts/get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct PromptsGetParams {
    /// The server.
    pub server: String,
    /// The prompt's name.
    pub name: String,
    /// The prompt's arguments.
    #[serde(default)]
    pub arguments: Option<serde_json::Map<String, serde_json::Value>>,
}

impl PromptsGetParams {
    /// Get prompt `name` of `server`.
    pub fn new(
        server: impl Into<String>,
        name: impl Into<String>,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Self {
        Self {
            server: server.into(),
            name: name.into(),
            arguments,
        }
    }
}

// ---------------------------------------------------------------------------
// events/replay

/// `events/replay`: notifications newer than a sequence number, from the daemon's bounded history.
#[derive(Debug)]
pub enum EventsReplay {}
impl Request for EventsReplay {
    const METHOD: &'static str = "events/replay";
    type Params = EventsReplayParams;
    type Result = EventsReplayResult;
}

/// Parameters of `events/replay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct EventsReplayParams {
    /// Return notifications with `seq` greater than this (the last one the front-end saw).
    pub after_seq: u64,
}

impl EventsReplayParams {
    /// Replay everything after `after_seq`.
    pub fn new(after_seq: u64) -> Self {
        Self { after_seq }
    }
}

/// Result of `events/replay`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct EventsReplayResult {
    /// The notifications, oldest first. The same notification may also arrive
    /// live on the connection: de-duplicate by `seq`.
    pub notifications: Vec<DaemonNotification>,
    /// `false` when the history no longer holds some notifications after
    /// `afterSeq`: the front-end must re-read state (`mcpServer/list`).
    pub complete: bool,
    /// Newest sequence number when the replay was taken.
    pub last_seq: u64,
    /// The methods of the notifications skipped when reading (unknown to this version), in
    /// order; not on the wire.
    #[serde(skip)]
    #[schemars(skip)]
    pub skipped: Vec<String>,
}

impl EventsReplayResult {
    /// A replay result.
    pub fn new(notifications: Vec<DaemonNotification>, complete: bool, last_seq: u64) -> Self {
        Self {
            notifications,
            complete,
            last_seq,
            skipped: Vec::new(),
        }
    }
}

/// Read leniently: a notification whose `method` this version does not know (a newer
/// corrald's) is skipped and its method kept in [`EventsReplayResult::skipped`], so one new
/// kind does not make the whole replay unreadable (live, such a notification is not
/// subscribed to, so never seen). A notification of a known method that does not decode is
/// still an error.
impl<'de> Deserialize<'de> for EventsReplayResult {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The wire form, each notification decoded on its own below.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            notifications: Vec<serde_json::Value>,
            complete: bool,
            last_seq: u64,
        }
        let wire = Wire::deserialize(deserializer)?;
        let mut notifications = Vec::with_capacity(wire.notifications.len());
        let mut skipped = Vec::new();
        for item in wire.notifications {
            match item.get("method").and_then(serde_json::Value::as_str) {
                Some(method) if !DaemonNotification::METHODS.contains(&method) => skipped.push(method.to_owned()),
                _ => notifications.push(serde_json::from_value(item).map_err(serde::de::Error::custom)?),
            }
        }
        Ok(Self {
            notifications,
            complete: wire.complete,
            last_seq: wire.last_seq,
            skipped,
        })
    }
}

// ---------------------------------------------------------------------------
// resources/subscribe, resources/unsubscribe

/// `resources/subscribe`: ask `server` to send `resources/updated` for `uri`
/// (MCP `resources/subscribe`). Updates arrive as `mcpServer/resources/updated`.
#[derive(Debug)]
pub enum ResourcesSubscribe {}
impl Request for ResourcesSubscribe {
    const METHOD: &'static str = "resources/subscribe";
    type Params = ResourcesReadParams;
    type Result = NoParams;
}

/// `resources/unsubscribe`: this front-end no longer wants updates of `uri`.
/// The server is told once no connected front-end is subscribed.
#[derive(Debug)]
pub enum ResourcesUnsubscribe {}
impl Request for ResourcesUnsubscribe {
    const METHOD: &'static str = "resources/unsubscribe";
    type Params = ResourcesReadParams;
    type Result = NoParams;
}

// ---------------------------------------------------------------------------
// skills/list, skills/read (MCP's skills extension, SEP-2640)

/// `skills/list`: the skills of every ready server that declares MCP's skills extension
/// (`io.modelcontextprotocol/skills`, SEP-2640), or of one; every page of each server's
/// `skills/list`.
///
/// Listing reads no skill file: a skill's files are read one at a time with `skills/read`,
/// when a front-end loads it. Servers that do not declare the extension are simply absent.
/// Each entry is the server's, untouched; one that breaks a rule of the extension is listed
/// with the `problem` that keeps `skills/read` from loading it.
#[derive(Debug)]
pub enum SkillsList {}
impl Request for SkillsList {
    const METHOD: &'static str = "skills/list";
    type Params = ListParams;
    type Result = SkillsListResult;
}

/// Result of `skills/list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SkillsListResult {
    /// The skills, by server name then in the server's order.
    pub skills: Vec<ServerSkill>,
    /// Enabled servers left out because they are not ready.
    pub not_ready: Vec<NotReadyServer>,
    /// Ready servers whose listing failed.
    pub errors: Vec<ListError>,
}

impl SkillsListResult {
    /// A listing.
    pub fn new(skills: Vec<ServerSkill>, not_ready: Vec<NotReadyServer>, errors: Vec<ListError>) -> Self {
        Self {
            skills,
            not_ready,
            errors,
        }
    }
}

/// One skill of one server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServerSkill {
    /// The server offering it.
    pub server: String,
    /// The skill's name (its frontmatter's `name`), when the entry has one. Names are labels,
    /// not identifiers: two skills of one server may share one (the `uri` tells them apart).
    pub name: Option<String>,
    /// The URI of the skill's `SKILL.md`, when the entry has one: what identifies it.
    pub uri: Option<String>,
    /// The skill entry as the server sent it (`uri`, `frontmatter`, `resources`: every file
    /// with its `digest` and `size`, or `"dynamic"`).
    pub skill: serde_json::Value,
    /// Why `skills/read` will not load this skill (the entry breaks a rule of the skills
    /// extension); `null` when it is sound.
    pub problem: Option<String>,
}

impl ServerSkill {
    /// A skill `entry` of `server`, with the `problem` that keeps it from loading, if any.
    pub fn new(server: impl Into<String>, skill: serde_json::Value, problem: Option<String>) -> Self {
        let field = |key: &str| skill.get(key).and_then(serde_json::Value::as_str).map(str::to_owned);
        let uri = field("uri");
        let name = skill
            .get("frontmatter")
            .and_then(|frontmatter| frontmatter.get("name"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        Self {
            server: server.into(),
            name,
            uri,
            skill,
            problem,
        }
    }
}

/// `skills/read`: load one file of a skill, verified against the skill's entry.
///
/// The entry is the one the front-end passes (`entry`, as `skills/list` gave it: a front-end
/// acting on a skill holds the entry it loaded it from), else the server's current one
/// (`skills/list`, then `skills/get` for a URI the listing does not have). The file must be
/// listed in the entry; it is read with `resources/read`, and its bytes must have the entry's
/// `size` and `digest`; a `SKILL.md`'s YAML frontmatter must equal the entry's `frontmatter`,
/// field by field. Any mismatch is a `skillVerificationFailed` error naming the server, the
/// skill and what differs, and the content is not returned. A skill whose `resources` is
/// `"dynamic"` has no digests to check: its files are returned with `verified: false` (the
/// frontmatter is still compared).
#[derive(Debug)]
pub enum SkillsRead {}
impl Request for SkillsRead {
    const METHOD: &'static str = "skills/read";
    type Params = SkillsReadParams;
    type Result = SkillsReadResult;
}

/// Parameters of `skills/read`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct SkillsReadParams {
    /// The server.
    pub server: String,
    /// The skill: its name, as `skills/list` gives it, or the URI of its `SKILL.md` (which a
    /// name shared by two skills of the server needs).
    pub skill: String,
    /// The file to read: its URI, or its path under the skill's root (`references/FORMS.md`);
    /// the skill's `SKILL.md` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The skill entry to verify against, as `skills/list` gave it; the server's current entry
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<serde_json::Value>,
}

impl SkillsReadParams {
    /// Read the `SKILL.md` of `skill` (a name or a URI) of `server`.
    pub fn new(server: impl Into<String>, skill: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            skill: skill.into(),
            file: None,
            entry: None,
        }
    }

    /// Read `file` of the skill instead (a URI, or a path under the skill's root).
    pub fn with_file(mut self, file: Option<String>) -> Self {
        self.file = file;
        self
    }

    /// Verify against `entry` (as `skills/list` gave it) instead of the server's current one.
    pub fn with_entry(mut self, entry: Option<serde_json::Value>) -> Self {
        self.entry = entry;
        self
    }
}

/// Result of `skills/read`: one verified file of a skill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SkillsReadResult {
    /// The server.
    pub server: String,
    /// The URI of the skill's `SKILL.md`.
    pub skill_uri: String,
    /// The URI of the file read.
    pub uri: String,
    /// The file's MIME type, as the server gave it.
    pub mime_type: Option<String>,
    /// The content of a text file.
    pub text: Option<String>,
    /// The content of a binary file, base64 as the server sent it.
    pub blob: Option<String>,
    /// Its length in bytes.
    pub size: u64,
    /// Its SHA-256 digest, `sha256:` and 64 lowercase hex digits.
    pub digest: String,
    /// Whether the bytes were checked against a digest and size of the entry: `false` only for
    /// a skill whose `resources` is `"dynamic"`.
    pub verified: bool,
    /// The skill entry the file was verified against.
    pub entry: serde_json::Value,
}

impl SkillsReadResult {
    /// A file read at `uri` of the skill `skill_uri` of `server`, with its `size` and `digest`,
    /// verified (or not) against `entry`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: impl Into<String>,
        skill_uri: impl Into<String>,
        uri: impl Into<String>,
        mime_type: Option<String>,
        size: u64,
        digest: impl Into<String>,
        verified: bool,
        entry: serde_json::Value,
    ) -> Self {
        Self {
            server: server.into(),
            skill_uri: skill_uri.into(),
            uri: uri.into(),
            mime_type,
            text: None,
            blob: None,
            size,
            digest: digest.into(),
            verified,
            entry,
        }
    }

    /// The same result carrying text content.
    pub fn with_text(mut self, text: Option<String>) -> Self {
        self.text = text;
        self
    }

    /// The same result carrying binary content (base64).
    pub fn with_blob(mut self, blob: Option<String>) -> Self {
        self.blob = blob;
        self
    }
}

// ---------------------------------------------------------------------------
// mcpServer/request, mcpServer/notify, mcpServer/notification: MCP passed through

/// `mcpServer/request`: send an MCP request Corral does not model (`completion/complete`,
/// `logging/setLevel`, a server's custom methods) to one server; the result is the server's,
/// untouched.
///
/// Refused (`notPermitted`) for methods Corral runs itself, where passing through would break
/// its state or its rules (`initialize`; `tools/list` and `tools/call`, which the config's tool
/// filters govern; resource subscriptions; tasks; see `docs/protocol.md`), and for a method of a
/// capability the server did not declare (`completion/complete` needs `completions`,
/// `logging/setLevel` needs `logging`, `skills/*` the skills extension, …). The
/// server's JSON-RPC error is a `serverError` naming the server, with its error in `data`. A
/// `_meta.progressToken` in `params` gets this connection `mcpServer/progress`. Bounded by the
/// server's `tool_timeout_sec`.
#[derive(Debug)]
pub enum McpServerRequest {}
impl Request for McpServerRequest {
    const METHOD: &'static str = "mcpServer/request";
    type Params = McpServerMessageParams;
    type Result = serde_json::Value;
}

/// `mcpServer/notify`: send an MCP notification Corral does not model to one server.
///
/// Refused (`notPermitted`) for notifications Corral sends itself (`notifications/initialized`,
/// `notifications/cancelled` — its request ids are Corral's, and another front-end's request
/// could be cancelled —, `notifications/progress`, `notifications/roots/list_changed`).
/// Answered once the notification is sent.
#[derive(Debug)]
pub enum McpServerNotify {}
impl Request for McpServerNotify {
    const METHOD: &'static str = "mcpServer/notify";
    type Params = McpServerMessageParams;
    type Result = NoParams;
}

/// Params of `mcpServer/request` and `mcpServer/notify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct McpServerMessageParams {
    /// The server.
    pub server: String,
    /// The MCP method, e.g. `completion/complete` or `codex/sandbox-state`.
    pub method: String,
    /// The MCP `params`, passed as they are (an object, when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
}

impl McpServerMessageParams {
    /// `method` with `params` for `server`.
    pub fn new(server: impl Into<String>, method: impl Into<String>, params: Option<serde_json::Value>) -> Self {
        Self {
            server: server.into(),
            method: method.into(),
            params,
        }
    }
}

/// `mcpServer/notification`: a server sent a notification Corral does not model (a custom
/// one, such as codex's), passed to every front-end as it came.
#[derive(Debug)]
pub enum ServerNotificationNotification {}
impl Notification for ServerNotificationNotification {
    const METHOD: &'static str = "mcpServer/notification";
    type Params = ServerNotification;
}

/// Params of `mcpServer/notification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServerNotification {
    /// Daemon-wide sequence number of this notification.
    pub seq: u64,
    /// The server that sent it.
    pub server: String,
    /// Its MCP method.
    pub method: String,
    /// Its MCP `params`, as the server sent them (`null` when it sent none).
    pub params: Option<serde_json::Value>,
}

impl ServerNotification {
    /// Notification `method` with `params` from `server`.
    pub fn new(
        seq: u64,
        server: impl Into<String>,
        method: impl Into<String>,
        params: Option<serde_json::Value>,
    ) -> Self {
        Self {
            seq,
            server: server.into(),
            method: method.into(),
            params,
        }
    }
}

// ---------------------------------------------------------------------------
// Requests the daemon sends to front-ends

/// A JSON-RPC request the daemon sends to a front-end, which answers it.
///
/// Only front-ends that declared the matching capability at `initialize`
/// receive these; the response carries the request's `id` as usual.
pub trait DaemonRequest {
    /// Method name on the wire, e.g. `mcpServer/elicitation/request`.
    const METHOD: &'static str;
    /// The `params` member.
    type Params: Serialize + DeserializeOwned + JsonSchema;
    /// The `result` member the front-end answers with.
    type Result: Serialize + DeserializeOwned + JsonSchema;
}

/// `mcpServer/elicitation/request`: an MCP server asks the user for input
/// (MCP `elicitation/create`). Sent to a front-end with
/// `capabilities.elicitation`: the one whose `tools/call` to that server is
/// running, else the most recently active one. The result is the MCP
/// `ElicitResult` (`{action: "accept" | "decline" | "cancel", content?}`),
/// passed to the server as is. While it waits, the timeout of calls to that
/// server is paused.
#[derive(Debug)]
pub enum ElicitationRequest {}
impl DaemonRequest for ElicitationRequest {
    const METHOD: &'static str = "mcpServer/elicitation/request";
    type Params = ServerRequestParams;
    type Result = serde_json::Value;
}

/// `mcpServer/sampling/createMessage`: an MCP server asks for an LLM
/// completion (MCP `sampling/createMessage`). Sent only to a front-end with
/// `capabilities.sampling`; the result is the MCP `CreateMessageResult`.
#[derive(Debug)]
pub enum SamplingRequest {}
impl DaemonRequest for SamplingRequest {
    const METHOD: &'static str = "mcpServer/sampling/createMessage";
    type Params = ServerRequestParams;
    type Result = serde_json::Value;
}

/// Params of a request an MCP server made of its client, forwarded to a front-end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServerRequestParams {
    /// The server that asks.
    pub server: String,
    /// The MCP request's `params`, as the server sent them.
    pub request: serde_json::Value,
}

impl ServerRequestParams {
    /// A request of `server` with MCP params `request`.
    pub fn new(server: impl Into<String>, request: serde_json::Value) -> Self {
        Self {
            server: server.into(),
            request,
        }
    }
}

// ---------------------------------------------------------------------------
// Notifications

/// `mcpServer/startupStatus/updated`: a server changed lifecycle status.
#[derive(Debug)]
pub enum StartupStatusUpdatedNotification {}
impl Notification for StartupStatusUpdatedNotification {
    const METHOD: &'static str = "mcpServer/startupStatus/updated";
    type Params = StartupStatusUpdated;
}

/// Params of `mcpServer/startupStatus/updated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct StartupStatusUpdated {
    /// Daemon-wide sequence number of this notification.
    pub seq: u64,
    /// Server name.
    pub name: String,
    /// New status.
    pub status: ServerStatus,
    /// Readable reason; `null` unless `status` is `failed`.
    pub error: Option<String>,
    /// Typed reason; `null` unless `status` is `failed`.
    pub failure_reason: Option<FailureReason>,
}

impl StartupStatusUpdated {
    /// A status change that is not a failure.
    pub fn new(seq: u64, name: impl Into<String>, status: ServerStatus) -> Self {
        Self {
            seq,
            name: name.into(),
            status,
            error: None,
            failure_reason: None,
        }
    }

    /// A `failed` status change.
    pub fn failed(seq: u64, name: impl Into<String>, reason: FailureReason, error: impl Into<String>) -> Self {
        Self {
            seq,
            name: name.into(),
            status: ServerStatus::Failed,
            error: Some(error.into()),
            failure_reason: Some(reason),
        }
    }
}

/// `mcpServer/tools/listChanged`: a server's tool list may have changed;
/// fetch it again. Sent when a server says its tools changed
/// (`notifications/tools/list_changed`: corrald re-lists them first) and
/// whenever a server becomes ready again after a restart.
#[derive(Debug)]
pub enum ToolsListChangedNotification {}
impl Notification for ToolsListChangedNotification {
    const METHOD: &'static str = "mcpServer/tools/listChanged";
    type Params = ToolsListChanged;
}

/// Params of `mcpServer/tools/listChanged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ToolsListChanged {
    /// Daemon-wide sequence number of this notification.
    pub seq: u64,
    /// Server name.
    pub name: String,
    /// Number of tools it offers now (after the config's filters).
    pub tool_count: u32,
}

impl ToolsListChanged {
    /// A tool list change for `name`.
    pub fn new(seq: u64, name: impl Into<String>, tool_count: u32) -> Self {
        Self {
            seq,
            name: name.into(),
            tool_count,
        }
    }
}

/// `mcpServer/resources/listChanged`: a server said its resources changed; fetch them again.
#[derive(Debug)]
pub enum ResourcesListChangedNotification {}
impl Notification for ResourcesListChangedNotification {
    const METHOD: &'static str = "mcpServer/resources/listChanged";
    type Params = ListChanged;
}

/// `mcpServer/prompts/listChanged`: a server said its prompts changed; fetch them again.
#[derive(Debug)]
pub enum PromptsListChangedNotification {}
impl Notification for PromptsListChangedNotification {
    const METHOD: &'static str = "mcpServer/prompts/listChanged";
    type Params = ListChanged;
}

/// Params of `mcpServer/resources/listChanged` and `mcpServer/prompts/listChanged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ListChanged {
    /// Daemon-wide sequence number of this notification.
    pub seq: u64,
    /// Server name.
    pub name: String,
}

impl ListChanged {
    /// A list change of server `name`.
    pub fn new(seq: u64, name: impl Into<String>) -> Self {
        Self { seq, name: name.into() }
    }
}

/// `mcpServer/log`: a log message an MCP server sent (`notifications/message`).
#[derive(Debug)]
pub enum ServerLogNotification {}
impl Notification for ServerLogNotification {
    const METHOD: &'static str = "mcpServer/log";
    type Params = ServerLog;
}

/// Params of `mcpServer/log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ServerLog {
    /// Daemon-wide sequence number of this notification.
    pub seq: u64,
    /// Server name.
    pub name: String,
    /// MCP log level (`debug`, `info`, `notice`, `warning`, `error`, `critical`, `alert`, `emergency`).
    pub level: String,
    /// The server's logger name, if it gave one.
    pub logger: Option<String>,
    /// The message, as the server sent it (any JSON).
    pub data: serde_json::Value,
}

impl ServerLog {
    /// A log message of server `name`.
    pub fn new(
        seq: u64,
        name: impl Into<String>,
        level: impl Into<String>,
        logger: Option<String>,
        data: serde_json::Value,
    ) -> Self {
        Self {
            seq,
            name: name.into(),
            level: level.into(),
            logger,
            data,
        }
    }
}

/// `mcpServer/resources/updated`: a subscribed resource changed (MCP `notifications/resources/updated`).
#[derive(Debug)]
pub enum ResourceUpdatedNotification {}
impl Notification for ResourceUpdatedNotification {
    const METHOD: &'static str = "mcpServer/resources/updated";
    type Params = ResourceUpdated;
}

/// Params of `mcpServer/resources/updated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ResourceUpdated {
    /// Daemon-wide sequence number of this notification.
    pub seq: u64,
    /// Server name.
    pub name: String,
    /// The resource that changed.
    pub uri: String,
}

impl ResourceUpdated {
    /// Resource `uri` of server `name` changed.
    pub fn new(seq: u64, name: impl Into<String>, uri: impl Into<String>) -> Self {
        Self {
            seq,
            name: name.into(),
            uri: uri.into(),
        }
    }
}

/// `mcpServer/progress`: progress of a request this connection made with a
/// `_meta.progressToken` (MCP `notifications/progress`).
///
/// Like `events/lagged` it has no `seq` and is not replayable: it goes only
/// to the connection whose request it is about, carrying that connection's
/// own token.
#[derive(Debug)]
pub enum ProgressNotification {}
impl Notification for ProgressNotification {
    const METHOD: &'static str = "mcpServer/progress";
    type Params = Progress;
}

/// Params of `mcpServer/progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Progress {
    /// The server doing the work.
    pub server: String,
    /// The `_meta.progressToken` the front-end put on its request.
    pub progress_token: serde_json::Value,
    /// Progress so far; increases with every notification.
    pub progress: f64,
    /// Total, if the server knows it.
    #[serde(default)]
    pub total: Option<f64>,
    /// A human-readable message, if the server sent one.
    #[serde(default)]
    pub message: Option<String>,
}

impl Progress {
    /// Progress of `server` for the request with `progress_token`.
    pub fn new(server: impl Into<String>, progress_token: serde_json::Value, progress: f64) -> Self {
        Self {
            server: server.into(),
            progress_token,
            progress,
            total: None,
            message: None,
        }
    }
}

/// `mcpServer/progress/lagged`: progress meant for this connection was
/// dropped because it did not read fast enough.
///
/// Progress waits for the connection's writer in a bounded queue; when the
/// queue is full, progress is dropped rather than held (the next one, or the
/// request's answer, supersedes it) and counted. This notice says how many
/// were dropped since the previous notice; it comes before anything else the
/// daemon writes next to this connection, so before the answer of the request
/// whose progress was dropped. Like `events/lagged` it has no `seq`.
#[derive(Debug)]
pub enum ProgressLaggedNotification {}
impl Notification for ProgressLaggedNotification {
    const METHOD: &'static str = "mcpServer/progress/lagged";
    type Params = ProgressLagged;
}

/// Params of `mcpServer/progress/lagged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ProgressLagged {
    /// How many `mcpServer/progress` notifications were not delivered since the previous notice.
    pub missed: u64,
}

impl ProgressLagged {
    /// A notice for `missed` progress notifications dropped.
    pub fn new(missed: u64) -> Self {
        Self { missed }
    }
}

/// `events/lagged`: this connection fell behind and missed notifications.
///
/// The one notification without a `seq` of its own: it is about this
/// connection, not a daemon event. The missed notifications can be fetched
/// with `events/replay` while the history still holds them.
#[derive(Debug)]
pub enum EventsLaggedNotification {}
impl Notification for EventsLaggedNotification {
    const METHOD: &'static str = "events/lagged";
    type Params = EventsLagged;
}

/// Params of `events/lagged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct EventsLagged {
    /// How many notifications were not delivered.
    pub missed: u64,
    /// `seq` of the first notification not delivered.
    pub first_missed_seq: u64,
    /// `seq` of the last notification not delivered.
    pub last_missed_seq: u64,
}

impl EventsLagged {
    /// A lagged notice for `missed` notifications starting at `first_missed_seq`.
    pub fn new(missed: u64, first_missed_seq: u64) -> Self {
        Self {
            missed,
            first_missed_seq,
            last_missed_seq: first_missed_seq + missed.saturating_sub(1),
        }
    }
}

/// Any notification that carries a daemon-wide `seq` (what `events/replay` returns).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "method", content = "params")]
#[non_exhaustive]
pub enum DaemonNotification {
    /// `mcpServer/startupStatus/updated`.
    #[serde(rename = "mcpServer/startupStatus/updated")]
    StartupStatusUpdated(StartupStatusUpdated),
    /// `mcpServer/tools/listChanged`.
    #[serde(rename = "mcpServer/tools/listChanged")]
    ToolsListChanged(ToolsListChanged),
    /// `mcpServer/resources/listChanged`.
    #[serde(rename = "mcpServer/resources/listChanged")]
    ResourcesListChanged(ListChanged),
    /// `mcpServer/prompts/listChanged`.
    #[serde(rename = "mcpServer/prompts/listChanged")]
    PromptsListChanged(ListChanged),
    /// `mcpServer/log`.
    #[serde(rename = "mcpServer/log")]
    ServerLog(ServerLog),
    /// `mcpServer/resources/updated`.
    #[serde(rename = "mcpServer/resources/updated")]
    ResourceUpdated(ResourceUpdated),
    /// `config/reloaded`.
    #[serde(rename = "config/reloaded")]
    ConfigReloaded(ConfigReloaded),
    /// `config/reloadFailed`.
    #[serde(rename = "config/reloadFailed")]
    ConfigReloadFailed(ConfigReloadFailed),
    /// `mcpServer/oauthLogin/completed`.
    #[serde(rename = "mcpServer/oauthLogin/completed")]
    OauthLoginCompleted(OauthLoginCompleted),
    /// `mcpServer/notification`.
    #[serde(rename = "mcpServer/notification")]
    ServerNotification(ServerNotification),
}

impl DaemonNotification {
    /// The method names of every variant, in declaration order; what a
    /// client subscribes to. Kept next to the variants (a test checks that
    /// each variant's [`DaemonNotification::method`] is listed).
    pub const METHODS: [&'static str; 10] = [
        StartupStatusUpdatedNotification::METHOD,
        ToolsListChangedNotification::METHOD,
        ResourcesListChangedNotification::METHOD,
        PromptsListChangedNotification::METHOD,
        ServerLogNotification::METHOD,
        ResourceUpdatedNotification::METHOD,
        ConfigReloadedNotification::METHOD,
        ConfigReloadFailedNotification::METHOD,
        OauthLoginCompletedNotification::METHOD,
        ServerNotificationNotification::METHOD,
    ];

    /// The notification's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            Self::StartupStatusUpdated(n) => n.seq,
            Self::ToolsListChanged(n) => n.seq,
            Self::ResourcesListChanged(n) | Self::PromptsListChanged(n) => n.seq,
            Self::ServerLog(n) => n.seq,
            Self::ResourceUpdated(n) => n.seq,
            Self::ConfigReloaded(n) => n.seq,
            Self::ConfigReloadFailed(n) => n.seq,
            Self::OauthLoginCompleted(n) => n.seq,
            Self::ServerNotification(n) => n.seq,
        }
    }

    /// The method name on the wire.
    pub fn method(&self) -> &'static str {
        match self {
            Self::StartupStatusUpdated(_) => StartupStatusUpdatedNotification::METHOD,
            Self::ToolsListChanged(_) => ToolsListChangedNotification::METHOD,
            Self::ResourcesListChanged(_) => ResourcesListChangedNotification::METHOD,
            Self::PromptsListChanged(_) => PromptsListChangedNotification::METHOD,
            Self::ServerLog(_) => ServerLogNotification::METHOD,
            Self::ResourceUpdated(_) => ResourceUpdatedNotification::METHOD,
            Self::ConfigReloaded(_) => ConfigReloadedNotification::METHOD,
            Self::ConfigReloadFailed(_) => ConfigReloadFailedNotification::METHOD,
            Self::OauthLoginCompleted(_) => OauthLoginCompletedNotification::METHOD,
            Self::ServerNotification(_) => ServerNotificationNotification::METHOD,
        }
    }
}

// ---------------------------------------------------------------------------
// config/reload and its notifications

/// `config/reload`: read the config file again now (as SIGHUP and a change of
/// the file do) and apply it if it is valid.
///
/// An invalid file is not an error of the request: the result says
/// `applied: false` with the exact problems, and the running config stays.
#[derive(Debug)]
pub enum ConfigReload {}
impl Request for ConfigReload {
    const METHOD: &'static str = "config/reload";
    type Params = NoParams;
    type Result = ConfigReloadResult;
}

/// What made the daemon read its config file again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ReloadTrigger {
    /// The file changed on disk (the daemon watches it).
    File,
    /// The daemon received SIGHUP (e.g. `systemctl --user reload corral`).
    Signal,
    /// A front-end called `config/reload`.
    Request,
}

/// Result of `config/reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ConfigReloadResult {
    /// Whether the file was valid and applied. When `false`, nothing changed and `error` says why.
    pub applied: bool,
    /// `seq` of the `config/reloaded` or `config/reloadFailed` notification sent for this reload.
    pub seq: u64,
    /// Servers started because the file now has them (empty unless applied).
    pub added: Vec<String>,
    /// Servers stopped and removed because the file no longer has them.
    pub removed: Vec<String>,
    /// Servers restarted because their entry changed.
    pub changed: Vec<String>,
    /// Things the daemon could not do as the file asks, one sentence each naming the server.
    pub warnings: Vec<String>,
    /// Every problem of the file, exactly as `corral config check` prints them; `null` when applied.
    pub error: Option<String>,
}

impl ConfigReloadResult {
    /// The result of a reload that was applied, as its notification says.
    pub fn applied(notification: &ConfigReloaded) -> Self {
        Self {
            applied: true,
            seq: notification.seq,
            added: notification.added.clone(),
            removed: notification.removed.clone(),
            changed: notification.changed.clone(),
            warnings: notification.warnings.clone(),
            error: None,
        }
    }

    /// The result of a reload refused because the file is invalid.
    pub fn failed(notification: &ConfigReloadFailed) -> Self {
        Self {
            applied: false,
            seq: notification.seq,
            added: Vec::new(),
            removed: Vec::new(),
            changed: Vec::new(),
            warnings: Vec::new(),
            error: Some(notification.error.clone()),
        }
    }
}

/// `config/reloaded`: the config file was read again and applied. Servers
/// not named here kept running untouched.
#[derive(Debug)]
pub enum ConfigReloadedNotification {}
impl Notification for ConfigReloadedNotification {
    const METHOD: &'static str = "config/reloaded";
    type Params = ConfigReloaded;
}

/// Params of `config/reloaded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ConfigReloaded {
    /// Daemon-wide sequence number of this notification.
    pub seq: u64,
    /// The config file.
    pub path: String,
    /// What made the daemon read it.
    pub trigger: ReloadTrigger,
    /// Servers new in the file: started (if enabled).
    pub added: Vec<String>,
    /// Servers gone from the file: stopped with their whole process tree, then removed.
    pub removed: Vec<String>,
    /// Servers whose entry changed: stopped, then started with the new entry.
    pub changed: Vec<String>,
    /// Things the daemon could not do as the file asks, one sentence each naming the server.
    pub warnings: Vec<String>,
}

impl ConfigReloaded {
    /// A reload of `path` that was applied.
    pub fn new(
        seq: u64,
        path: impl Into<String>,
        trigger: ReloadTrigger,
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
        warnings: Vec<String>,
    ) -> Self {
        Self {
            seq,
            path: path.into(),
            trigger,
            added,
            removed,
            changed,
            warnings,
        }
    }
}

/// `config/reloadFailed`: the config file was read again but is invalid (or
/// unreadable); the daemon keeps running the config it had.
#[derive(Debug)]
pub enum ConfigReloadFailedNotification {}
impl Notification for ConfigReloadFailedNotification {
    const METHOD: &'static str = "config/reloadFailed";
    type Params = ConfigReloadFailed;
}

/// Params of `config/reloadFailed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ConfigReloadFailed {
    /// Daemon-wide sequence number of this notification.
    pub seq: u64,
    /// The config file.
    pub path: String,
    /// What made the daemon read it.
    pub trigger: ReloadTrigger,
    /// Every problem, one per line (`path:line:column: server `x`, field `y`: message`),
    /// exactly as `corral config check` prints them. Never quotes values that may be secrets.
    pub error: String,
}

impl ConfigReloadFailed {
    /// A refused reload of `path`.
    pub fn new(seq: u64, path: impl Into<String>, trigger: ReloadTrigger, error: impl Into<String>) -> Self {
        Self {
            seq,
            path: path.into(),
            trigger,
            error: error.into(),
        }
    }
}

// ---------------------------------------------------------------------------
// mcpServer/oauthLogin, mcpServer/logout

/// `mcpServer/oauthLogin`: start an OAuth login for a streamable-HTTP server. Returns the
/// authorization URL at once (corrald also opens it with the configured opener); the outcome
/// arrives as `mcpServer/oauthLogin/completed`, and on success the server is (re)started.
#[derive(Debug)]
pub enum McpServerOauthLogin {}
impl Request for McpServerOauthLogin {
    const METHOD: &'static str = "mcpServer/oauthLogin";
    type Params = McpServerOauthLoginParams;
    type Result = McpServerOauthLoginResult;
}

/// Params of `mcpServer/oauthLogin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct McpServerOauthLoginParams {
    /// Server name.
    pub name: String,
    /// Scopes to request instead of the configured or discovered ones.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

impl McpServerOauthLoginParams {
    /// A login for `name` with the default scopes.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            scopes: None,
        }
    }

    /// The same login asking for `scopes`.
    pub fn with_scopes(mut self, scopes: Option<Vec<String>>) -> Self {
        self.scopes = scopes;
        self
    }
}

/// Result of `mcpServer/oauthLogin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct McpServerOauthLoginResult {
    /// The URL the user opens to authorize corrald.
    pub authorization_url: String,
}

impl McpServerOauthLoginResult {
    /// A login waiting at `authorization_url`.
    pub fn new(authorization_url: impl Into<String>) -> Self {
        Self {
            authorization_url: authorization_url.into(),
        }
    }
}

/// `mcpServer/oauthLogin/completed`: how a login started with `mcpServer/oauthLogin` ended.
#[derive(Debug)]
pub enum OauthLoginCompletedNotification {}
impl Notification for OauthLoginCompletedNotification {
    const METHOD: &'static str = "mcpServer/oauthLogin/completed";
    type Params = OauthLoginCompleted;
}

/// Params of `mcpServer/oauthLogin/completed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct OauthLoginCompleted {
    /// Daemon-wide sequence number of this notification.
    pub seq: u64,
    /// Server name.
    pub name: String,
    /// Whether credentials were obtained and stored.
    pub success: bool,
    /// Why not, when `success` is false (the provider's `error_description` when it sent one).
    pub error: Option<String>,
}

impl OauthLoginCompleted {
    /// The outcome of a login for `name`.
    pub fn new(seq: u64, name: impl Into<String>, error: Option<String>) -> Self {
        Self {
            seq,
            name: name.into(),
            success: error.is_none(),
            error,
        }
    }
}

/// `mcpServer/logout`: delete a server's stored OAuth credentials.
#[derive(Debug)]
pub enum McpServerLogout {}
impl Request for McpServerLogout {
    const METHOD: &'static str = "mcpServer/logout";
    type Params = McpServerGetParams;
    type Result = McpServerLogoutResult;
}

/// Result of `mcpServer/logout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct McpServerLogoutResult {
    /// Whether credentials were stored (and are now deleted).
    pub removed: bool,
}

impl McpServerLogoutResult {
    /// A logout that found credentials (`removed`) or none.
    pub fn new(removed: bool) -> Self {
        Self { removed }
    }
}
