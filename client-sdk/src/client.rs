//! The connection to `corrald`: connect, `initialize`, typed requests and the notification stream.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_protocol::{
    ClientCapabilities, ClientInfo, ConfigReload, ConfigReloadResult, DaemonStatus, DaemonStatusRequest, EventsReplay,
    EventsReplayParams, EventsReplayResult, Initialize, InitializeParams, InitializeResult, ListParams, ListResult,
    McpServerAdd, McpServerAddParams, McpServerControlParams, McpServerGet, McpServerGetParams, McpServerGetResult,
    McpServerList, McpServerListResult, McpServerMessageParams, McpServerNotify, McpServerRemove,
    McpServerRemoveResult, McpServerRequest, McpServerRestart, McpServerStart, McpServerStop, NoParams, PromptsGet,
    PromptsGetParams, PromptsList, Request, ResourceTemplatesList, ResourcesList, ResourcesRead, ResourcesReadParams,
    SkillsList, SkillsListResult, SkillsRead, SkillsReadParams, SkillsReadResult, ToolsCall, ToolsCallParams,
    ToolsList, ToolsListParams, ToolsListResult,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::{CallError, Connection, LoopSettings};
use crate::notifications::methods;
use crate::{ClientError, DaemonRequests, Notifications};

/// Default for [`ConnectOptions::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`ConnectOptions::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ConnectOptions::notification_buffer`].
pub const DEFAULT_NOTIFICATION_BUFFER: usize = 4096;

/// How to connect to the daemon.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The socket; `None` means [`corral_protocol::paths::socket_path`]`(None)`
    /// (`$CORRAL_SOCKET`, then the per-user default).
    pub socket_path: Option<PathBuf>,
    /// Who is connecting; the daemon logs it and counts it in `daemon/status`.
    pub client_info: ClientInfo,
    /// How long each request may take unless the call gives its own timeout.
    pub request_timeout: Duration,
    /// How long connecting to the socket and the `initialize` handshake may take together.
    pub connect_timeout: Duration,
    /// How many unread notifications (of all kinds together) are buffered before the stream ends with
    /// [`NotificationsEnd::Overflowed`](crate::NotificationsEnd::Overflowed). At least 1.
    pub notification_buffer: usize,
    /// What this front-end answers when the daemon asks (elicitation, sampling). Declaring one
    /// means taking [`Client::take_requests`] and answering what arrives there.
    pub capabilities: ClientCapabilities,
}

impl ConnectOptions {
    /// Options for a front-end called `client_name` at `client_version`, with default timeouts and socket.
    pub fn new(client_name: impl Into<String>, client_version: impl Into<String>) -> Self {
        Self {
            socket_path: None,
            client_info: ClientInfo::new(client_name, client_version),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            notification_buffer: DEFAULT_NOTIFICATION_BUFFER,
            capabilities: ClientCapabilities::default(),
        }
    }

    /// Connect to this socket instead of the default one.
    pub fn with_socket_path(mut self, socket_path: impl Into<PathBuf>) -> Self {
        self.socket_path = Some(socket_path.into());
        self
    }

    /// Use this default request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Use this timeout for connecting and `initialize`.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Buffer this many unread notifications (all kinds together).
    pub fn with_notification_buffer(mut self, notifications: usize) -> Self {
        self.notification_buffer = notifications;
        self
    }

    /// Declare what this front-end answers: MCP servers' elicitations and sampling requests are
    /// then forwarded to it, to be taken from [`Client::take_requests`].
    pub fn with_capabilities(mut self, capabilities: ClientCapabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// The socket these options connect to.
    pub fn resolved_socket_path(&self) -> PathBuf {
        corral_protocol::paths::socket_path(self.socket_path.as_deref())
    }
}

impl Default for ConnectOptions {
    /// A client called `corral-client` with this crate's version.
    fn default() -> Self {
        Self::new("corral-client", env!("CARGO_PKG_VERSION"))
    }
}

/// An initialized connection to `corrald`.
///
/// Requests may be sent concurrently from several tasks (`&self`). A request
/// whose caller gives up on it (its timeout passes, or its future is dropped)
/// is withdrawn with `$/cancelRequest`, so the daemon stops the work too.
/// Dropping the client closes the connection and ends its [`Notifications`]
/// and [`DaemonRequests`]. The client runs background tasks, so it must be
/// created inside a Tokio runtime with the time driver enabled.
pub struct Client {
    connection: Connection,
    socket_path: PathBuf,
    request_timeout: Duration,
    initialize_result: InitializeResult,
    notifications: Option<Notifications>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("socket_path", &self.socket_path)
            .field("request_timeout", &self.request_timeout)
            .field("initialize_result", &self.initialize_result)
            .field("connected", &self.connection.is_connected())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connect to the daemon's socket (a named pipe on Windows) and run `initialize`.
    ///
    /// Fails with [`ClientError::DaemonNotRunning`] when the socket is missing
    /// or refuses connections, [`ClientError::VersionMismatch`] when the
    /// daemon does not serve this protocol version.
    ///
    /// On Unix, before a single byte is sent, the socket's directory must be
    /// private to this user ([`corral_protocol::paths::check_private_dir`])
    /// and the process at the other end must run as this user's uid
    /// (`SO_PEERCRED` / `getpeereid`); otherwise this fails with
    /// [`ClientError::UntrustedSocket`]: another user could be impersonating
    /// corrald to read what the front-end sends.
    pub async fn connect(options: ConnectOptions) -> Result<Client, ClientError> {
        let socket = options.resolved_socket_path();
        #[cfg(unix)]
        match corral_protocol::paths::check_private_dir(corral_protocol::paths::socket_dir(&socket)) {
            Ok(()) => {}
            Err(reason) if reason.is_missing() => return Err(ClientError::DaemonNotRunning { socket }),
            Err(reason) => return Err(ClientError::UntrustedSocket { socket, reason }),
        }
        let started = tokio::time::Instant::now();
        let stream = match tokio::time::timeout(options.connect_timeout, open_stream(&socket)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(connect_error(socket, error)),
            Err(_elapsed) => {
                return Err(ClientError::Connect {
                    socket,
                    error: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {:?}", options.connect_timeout),
                    ),
                });
            }
        };
        #[cfg(unix)]
        if let Err(reason) = check_peer(&stream) {
            return Err(ClientError::UntrustedSocket { socket, reason });
        }
        let remaining = options.connect_timeout.saturating_sub(started.elapsed());
        let options = ConnectOptions {
            socket_path: Some(socket),
            connect_timeout: remaining,
            ..options
        };
        Self::connect_with_stream(stream, options).await
    }

    /// Run the client over an already connected byte stream (a socket, a named
    /// pipe, or an in-memory pipe in tests) and `initialize`.
    ///
    /// `options.socket_path` is only remembered for [`Client::socket_path`];
    /// `options.connect_timeout` bounds the `initialize` handshake.
    pub async fn connect_with_stream<S>(stream: S, options: ConnectOptions) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let socket_path = options.resolved_socket_path();
        let capabilities = options.capabilities.clone();
        let settings = LoopSettings {
            notification_buffer: options.notification_buffer.max(1),
            notification_methods: methods().collect(),
            accepts_requests: capabilities.elicitation || capabilities.sampling,
            max_message_bytes: corral_protocol::MAX_MESSAGE_BYTES,
        };
        // The notification queue exists before `initialize` goes out: the daemon may push right
        // after answering it, and nothing it sends is lost.
        let (connection, inbox) = Connection::start(stream, settings);
        let mut params = InitializeParams::new(options.client_info.clone());
        params.capabilities = capabilities;
        let initialize_result = call::<Initialize>(&connection, params, options.connect_timeout).await?;
        Ok(Client {
            connection,
            socket_path,
            request_timeout: options.request_timeout,
            initialize_result,
            notifications: Some(Notifications::new(inbox.notifications, inbox.overflowed)),
        })
    }

    /// What the daemon answered to `initialize`.
    pub fn initialize_result(&self) -> &InitializeResult {
        &self.initialize_result
    }

    /// The socket this client connected to.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The notification stream; `Some` on the first call only.
    ///
    /// Until taken, notifications collect in the buffer; a client that never
    /// takes them just lets the buffer fill (it is bounded) and costs nothing more.
    pub fn take_notifications(&mut self) -> Option<Notifications> {
        self.notifications.take()
    }

    /// Requests from the daemon (MCP servers' elicitations and sampling requests); `Some` on the
    /// first call only, and only when [`ConnectOptions::capabilities`] declared one.
    ///
    /// Requests are refused with an error until this is called, and whenever 64 taken ones wait
    /// unread or the stream has been dropped: an MCP server never waits on a client that is not
    /// listening.
    pub fn take_requests(&mut self) -> Option<DaemonRequests> {
        self.connection.take_requests().map(DaemonRequests::new)
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        self.connection.is_connected()
    }

    /// Wait until the connection closes.
    pub async fn closed(&self) {
        self.connection.closed().await;
    }

    /// Call any method with the default request timeout.
    pub async fn request<R: Request>(&self, params: R::Params) -> Result<R::Result, ClientError> {
        call::<R>(&self.connection, params, self.request_timeout).await
    }

    /// Call any method, waiting at most `timeout` for the answer.
    pub async fn request_with_timeout<R: Request>(
        &self,
        params: R::Params,
        timeout: Duration,
    ) -> Result<R::Result, ClientError> {
        call::<R>(&self.connection, params, timeout).await
    }

    /// `daemon/status`.
    pub async fn daemon_status(&self) -> Result<DaemonStatus, ClientError> {
        self.request::<DaemonStatusRequest>(NoParams {}).await
    }

    /// `mcpServer/oauthLogin`: start an OAuth login; the outcome comes as
    /// `mcpServer/oauthLogin/completed` (take the notification stream first so it is not missed).
    pub async fn mcp_server_oauth_login(
        &self,
        name: impl Into<String>,
        scopes: Option<Vec<String>>,
    ) -> Result<corral_protocol::McpServerOauthLoginResult, ClientError> {
        self.request::<corral_protocol::McpServerOauthLogin>(
            corral_protocol::McpServerOauthLoginParams::new(name).with_scopes(scopes),
        )
        .await
    }

    /// `mcpServer/logout`: delete a server's stored OAuth credentials.
    pub async fn mcp_server_logout(
        &self,
        name: impl Into<String>,
    ) -> Result<corral_protocol::McpServerLogoutResult, ClientError> {
        self.request::<corral_protocol::McpServerLogout>(McpServerGetParams::new(name))
            .await
    }

    /// `mcpServer/list`.
    pub async fn mcp_server_list(&self) -> Result<McpServerListResult, ClientError> {
        self.request::<McpServerList>(NoParams {}).await
    }

    /// `mcpServer/get`; an unknown name is [`ClientError::Rpc`] with
    /// [`ErrorCode::ServerNotFound`](corral_protocol::ErrorCode::ServerNotFound).
    pub async fn mcp_server_get(&self, name: impl Into<String>) -> Result<McpServerGetResult, ClientError> {
        self.request::<McpServerGet>(McpServerGetParams::new(name)).await
    }

    /// `mcpServer/start`: start a server that is not running; returns once it is `starting`.
    pub async fn mcp_server_start(&self, name: impl Into<String>) -> Result<McpServerGetResult, ClientError> {
        self.request::<McpServerStart>(McpServerControlParams::new(name)).await
    }

    /// `mcpServer/stop`: stop a server and its processes; returns once they are gone.
    pub async fn mcp_server_stop(&self, name: impl Into<String>) -> Result<McpServerGetResult, ClientError> {
        self.request::<McpServerStop>(McpServerControlParams::new(name)).await
    }

    /// `mcpServer/restart`: stop (if running) and start a server.
    pub async fn mcp_server_restart(&self, name: impl Into<String>) -> Result<McpServerGetResult, ClientError> {
        self.request::<McpServerRestart>(McpServerControlParams::new(name))
            .await
    }

    /// `mcpServer/add`: add a server owned by this connection (`config` has the
    /// config file's fields as JSON); it is stopped and removed when this
    /// client disconnects.
    pub async fn mcp_server_add(
        &self,
        name: impl Into<String>,
        config: serde_json::Value,
    ) -> Result<McpServerGetResult, ClientError> {
        self.request::<McpServerAdd>(McpServerAddParams::new(name, config))
            .await
    }

    /// `mcpServer/remove`: stop and remove a server this connection added.
    pub async fn mcp_server_remove(&self, name: impl Into<String>) -> Result<McpServerRemoveResult, ClientError> {
        self.request::<McpServerRemove>(McpServerControlParams::new(name)).await
    }

    /// `tools/list`: the tools of every ready server, or of `server`.
    pub async fn tools_list(&self, server: Option<&str>) -> Result<ToolsListResult, ClientError> {
        let params = match server {
            Some(server) => ToolsListParams::server(server),
            None => ToolsListParams::all(),
        };
        self.request::<ToolsList>(params).await
    }

    /// `tools/call`: call `tool` on `server`; the result is the server's MCP `CallToolResult`.
    ///
    /// The daemon bounds the call by the server's `tool_timeout_sec`, paused while the user
    /// answers an elicitation; this client waits at most `timeout` in all (answering included)
    /// and then withdraws the call, which cancels it on the server. Give a call that may ask the
    /// user something a timeout that leaves them time to answer.
    pub async fn tools_call(
        &self,
        server: impl Into<String>,
        tool: impl Into<String>,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        self.request_with_timeout::<ToolsCall>(ToolsCallParams::new(server, tool, arguments), timeout)
            .await
    }

    /// `resources/list`: the resources of every ready server, or of `server`.
    pub async fn resources_list(&self, server: Option<&str>) -> Result<ListResult, ClientError> {
        self.request::<ResourcesList>(list_params(server)).await
    }

    /// `resources/templates/list`: the resource templates of every ready server, or of `server`.
    pub async fn resource_templates_list(&self, server: Option<&str>) -> Result<ListResult, ClientError> {
        self.request::<ResourceTemplatesList>(list_params(server)).await
    }

    /// `resources/read`: the server's MCP `ReadResourceResult` for `uri`.
    pub async fn resources_read(
        &self,
        server: impl Into<String>,
        uri: impl Into<String>,
    ) -> Result<serde_json::Value, ClientError> {
        self.request::<ResourcesRead>(ResourcesReadParams::new(server, uri))
            .await
    }

    /// `prompts/list`: the prompts of every ready server, or of `server`.
    pub async fn prompts_list(&self, server: Option<&str>) -> Result<ListResult, ClientError> {
        self.request::<PromptsList>(list_params(server)).await
    }

    /// `prompts/get`: the server's MCP `GetPromptResult`.
    pub async fn prompts_get(
        &self,
        server: impl Into<String>,
        name: impl Into<String>,
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<serde_json::Value, ClientError> {
        self.request::<PromptsGet>(PromptsGetParams::new(server, name, arguments))
            .await
    }

    /// `config/reload`: have the daemon read its config file again now and apply it if valid.
    pub async fn config_reload(&self) -> Result<ConfigReloadResult, ClientError> {
        self.request::<ConfigReload>(NoParams {}).await
    }

    /// `events/replay`: notifications with `seq` greater than `after_seq` still in the daemon's history.
    pub async fn events_replay(&self, after_seq: u64) -> Result<EventsReplayResult, ClientError> {
        self.request::<EventsReplay>(EventsReplayParams::new(after_seq)).await
    }

    /// `skills/list`: the skills (MCP's skills extension) of every ready server that declares
    /// it, or of `server`; no skill file is read.
    pub async fn skills_list(&self, server: Option<&str>) -> Result<SkillsListResult, ClientError> {
        self.request::<SkillsList>(list_params(server)).await
    }

    /// `skills/read`: one file of a skill (`params.file`, else its `SKILL.md`), verified against
    /// the skill's entry; a mismatch is [`ClientError::Rpc`] with `skillVerificationFailed`.
    pub async fn skills_read(&self, params: SkillsReadParams) -> Result<SkillsReadResult, ClientError> {
        self.request::<SkillsRead>(params).await
    }

    /// `mcpServer/request`: send MCP request `method` with `params` to `server` as it is (for
    /// methods Corral does not model); the server's result, untouched.
    pub async fn mcp_server_request(
        &self,
        server: impl Into<String>,
        method: impl Into<String>,
        params: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        self.request::<McpServerRequest>(McpServerMessageParams::new(server, method, params))
            .await
    }

    /// `mcpServer/notify`: send MCP notification `method` with `params` to `server` as it is.
    pub async fn mcp_server_notify(
        &self,
        server: impl Into<String>,
        method: impl Into<String>,
        params: Option<serde_json::Value>,
    ) -> Result<(), ClientError> {
        self.request::<McpServerNotify>(McpServerMessageParams::new(server, method, params))
            .await
            .map(|NoParams {}| ())
    }
}

async fn call<R: Request>(
    connection: &Connection,
    params: R::Params,
    timeout: Duration,
) -> Result<R::Result, ClientError> {
    let params = serde_json::to_value(&params).map_err(|error| ClientError::Encode {
        method: R::METHOD.to_owned(),
        error,
    })?;
    let result = match connection.request(R::METHOD, params, timeout).await {
        Ok(result) => result,
        Err(CallError::Rpc(error)) => return Err(ClientError::from_error_object(R::METHOD, error)),
        Err(CallError::Disconnected) => return Err(ClientError::Disconnected),
        Err(CallError::Malformed(message)) => {
            return Err(ClientError::Internal {
                method: R::METHOD.to_owned(),
                message: format!("corrald's answer is not a valid JSON-RPC response: {message}"),
            });
        }
        Err(CallError::Timeout) => {
            return Err(ClientError::Timeout {
                method: R::METHOD.to_owned(),
                timeout,
            });
        }
    };
    // Decoded here so that a shape mismatch is `Decode` naming the method.
    serde_json::from_value(result).map_err(|error| ClientError::Decode {
        method: R::METHOD.to_owned(),
        error,
    })
}

fn list_params(server: Option<&str>) -> ListParams {
    match server {
        Some(server) => ListParams::server(server),
        None => ListParams::all(),
    }
}

/// Open a byte stream to the daemon: its Unix socket.
#[cfg(unix)]
async fn open_stream(socket: &std::path::Path) -> std::io::Result<tokio::net::UnixStream> {
    tokio::net::UnixStream::connect(socket).await
}

/// Refuse a stream whose other end runs as another user (root included, unless
/// we are root): checked right after `connect`, before anything is written.
#[cfg(unix)]
fn check_peer(stream: &tokio::net::UnixStream) -> Result<(), corral_protocol::paths::UntrustedSocket> {
    use corral_protocol::paths::UntrustedSocket;
    let own_uid = corral_protocol::paths::effective_uid();
    let peer_uid = stream
        .peer_cred()
        .map_err(|error| UntrustedSocket::PeerUnknown { error })?
        .uid();
    if peer_uid == own_uid {
        Ok(())
    } else {
        Err(UntrustedSocket::PeerIsOtherUser { peer_uid, own_uid })
    }
}

/// Open a byte stream to the daemon: its named pipe. A missing pipe is
/// `NotFound`, which [`connect_error`] reports as "daemon not running".
#[cfg(windows)]
async fn open_stream(pipe: &std::path::Path) -> std::io::Result<tokio::net::windows::named_pipe::NamedPipeClient> {
    tokio::net::windows::named_pipe::ClientOptions::new().open(pipe)
}

fn connect_error(socket: PathBuf, error: std::io::Error) -> ClientError {
    use std::io::ErrorKind;
    match error.kind() {
        // No socket file, or a stale file nobody listens on.
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => ClientError::DaemonNotRunning { socket },
        _ => ClientError::Connect { socket, error },
    }
}
