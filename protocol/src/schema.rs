//! Generated artefacts of the protocol: the JSON Schema of every message and
//! one JSON example of each, committed under `protocol/schema/` and
//! `protocol/examples/` and compared against the code by tests.
//!
//! Regenerate after a deliberate change with
//! `CORRAL_UPDATE_SNAPSHOTS=1 cargo test -p corral-protocol`, then read the diff.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Value, json};

use crate::error::{ErrorCode, VersionMismatchData};
use crate::messages::*;

/// The JSON Schema of the whole front-end protocol: every method's params and
/// result, every notification's params, the error codes, under one `$defs`.
pub fn protocol_schema() -> Value {
    let mut generator = SchemaGenerator::new(SchemaSettings::draft2020_12());
    let mut methods = serde_json::Map::new();
    let mut add_method = |method: &str, params: schemars::Schema, result: schemars::Schema| {
        methods.insert(method.to_owned(), json!({ "params": params, "result": result }));
    };
    macro_rules! method {
        ($request:ty) => {
            add_method(
                <$request as Request>::METHOD,
                generator.subschema_for::<<$request as Request>::Params>(),
                generator.subschema_for::<<$request as Request>::Result>(),
            )
        };
    }
    method!(Initialize);
    method!(DaemonStatusRequest);
    method!(McpServerList);
    method!(McpServerGet);
    method!(McpServerStart);
    method!(McpServerStop);
    method!(McpServerRestart);
    method!(McpServerAdd);
    method!(McpServerRemove);
    method!(ToolsList);
    method!(ToolsCall);
    method!(ResourcesList);
    method!(ResourceTemplatesList);
    method!(ResourcesRead);
    method!(PromptsList);
    method!(PromptsGet);
    method!(ResourcesSubscribe);
    method!(ResourcesUnsubscribe);
    method!(EventsReplay);
    method!(McpServerOauthLogin);
    method!(McpServerLogout);
    method!(ConfigReload);
    method!(SkillsList);
    method!(SkillsRead);
    method!(McpServerRequest);
    method!(McpServerNotify);

    let mut daemon_requests = serde_json::Map::new();
    macro_rules! daemon_request {
        ($request:ty) => {
            daemon_requests.insert(
                <$request as DaemonRequest>::METHOD.to_owned(),
                json!({
                    "params": generator.subschema_for::<<$request as DaemonRequest>::Params>(),
                    "result": generator.subschema_for::<<$request as DaemonRequest>::Result>(),
                }),
            )
        };
    }
    daemon_request!(ElicitationRequest);
    daemon_request!(SamplingRequest);

    let mut notifications = serde_json::Map::new();
    macro_rules! notification {
        ($notification:ty) => {
            notifications.insert(
                <$notification as Notification>::METHOD.to_owned(),
                json!({ "params": generator.subschema_for::<<$notification as Notification>::Params>() }),
            )
        };
    }
    notification!(StartupStatusUpdatedNotification);
    notification!(ToolsListChangedNotification);
    notification!(ResourcesListChangedNotification);
    notification!(PromptsListChangedNotification);
    notification!(ServerLogNotification);
    notification!(EventsLaggedNotification);
    notification!(ResourceUpdatedNotification);
    notification!(ProgressNotification);
    notification!(ProgressLaggedNotification);
    notification!(ConfigReloadedNotification);
    notification!(ConfigReloadFailedNotification);
    notification!(OauthLoginCompletedNotification);
    notification!(ServerNotificationNotification);
    let version_mismatch = generator.subschema_for::<VersionMismatchData>();
    let replayable = generator.subschema_for::<DaemonNotification>();

    let error_codes: Vec<Value> = ErrorCode::ALL
        .iter()
        .map(|code| json!({ "code": code.code(), "name": code.name(), "description": code.description() }))
        .collect();

    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Corral front-end protocol",
        "description": "JSON-RPC 2.0 methods and notifications between corrald and its front-ends. See docs/protocol.md.",
        "protocolVersion": crate::PROTOCOL_VERSION,
        "methods": methods,
        "notifications": notifications,
        "daemonRequests": daemon_requests,
        "replayableNotification": replayable,
        "errorCodes": error_codes,
        "errorData": { "protocolVersionMismatch": version_mismatch },
        "$defs": generator.take_definitions(true),
    })
}

fn request(id: u64, method: &str, params: impl serde::Serialize) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

fn response(id: u64, result: impl serde::Serialize) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

fn notification(method: &str, params: impl serde::Serialize) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

/// One example of every message, as `(file name, message)`.
pub fn examples() -> Vec<(&'static str, Value)> {
    let daemon_info = DaemonInfo::new("0.1.0", 4242);
    let mut fs_server = McpServerStatus::new("filesystem", ServerOrigin::Config, TransportKind::Stdio);
    fs_server.status = ServerStatus::Ready;
    fs_server.pid = Some(4311);
    fs_server.tool_count = Some(14);
    fs_server.uptime_ms = Some(93_000);
    fs_server.stderr_tail = vec!["Secure MCP Filesystem Server running on stdio".to_owned()];
    fs_server.auth_status = Some(AuthStatus::Unsupported);
    fs_server.server_info = Some(ServerInfo {
        name: "secure-filesystem-server".to_owned(),
        version: "0.2.0".to_owned(),
        title: None,
        protocol_version: Some("2025-11-25".to_owned()),
    });
    let mut stopped_fs = fs_server.clone();
    stopped_fs.status = ServerStatus::Stopped;
    stopped_fs.pid = None;
    stopped_fs.uptime_ms = None;
    stopped_fs.last_exit = Some("exit status: 0".to_owned());
    let mut scratch = McpServerStatus::new("scratch-files", ServerOrigin::Session, TransportKind::Stdio);
    scratch.status = ServerStatus::Starting;
    scratch.pid = Some(5120);
    let mut linear = McpServerStatus::new("linear", ServerOrigin::Config, TransportKind::StreamableHttp);
    linear.status = ServerStatus::Failed;
    linear.failure_reason = Some(FailureReason::ReauthenticationRequired);
    linear.last_exit = None;
    linear.error = Some(
        "stored OAuth credentials for `linear` expired and could not be refreshed: run `corral login linear`"
            .to_owned(),
    );
    linear.auth_status = Some(AuthStatus::NotLoggedIn);
    let mut disabled = McpServerStatus::new("github", ServerOrigin::Config, TransportKind::StreamableHttp);
    disabled.enabled = false;
    disabled.auth_status = Some(AuthStatus::OAuth);
    let mut counts = ServerCounts::default();
    for server in [&fs_server, &linear, &disabled] {
        counts.add(server.status);
    }
    let mut init_params = InitializeParams::new(ClientInfo::new("nvim-corral", "0.3.1"));
    init_params.capabilities.elicitation = true;
    let started = StartupStatusUpdated::new(17, "filesystem", ServerStatus::Starting);
    let failed = StartupStatusUpdated::failed(
        18,
        "linear",
        FailureReason::ReauthenticationRequired,
        "stored OAuth credentials for `linear` expired and could not be refreshed: run `corral login linear`",
    );

    let reloaded = ConfigReloaded::new(
        23,
        "/home/ada/.config/corral/config.toml",
        ReloadTrigger::File,
        vec!["github".to_owned()],
        vec!["scratch".to_owned()],
        vec!["filesystem".to_owned()],
        Vec::new(),
    );
    let reload_failed = ConfigReloadFailed::new(
        24,
        "/home/ada/.config/corral/config.toml",
        ReloadTrigger::Signal,
        "/home/ada/.config/corral/config.toml:7:1: server `linear`, field `url`: expected a string",
    );

    let skill_md =
        "---\nname: pdf-processing\ndescription: Extract, fill, and assemble PDF documents\n---\n\n# PDF processing\n";
    let skill_entry = json!({
        "uri": "skill://pdf-processing/SKILL.md",
        "frontmatter": { "name": "pdf-processing", "description": "Extract, fill, and assemble PDF documents" },
        "resources": [
            {
                "uri": "skill://pdf-processing/SKILL.md",
                "digest": "sha256:3bdb070202e438244a671fdb4f0ab3247ed23fe49163667fdfe53e37636489f4",
                "size": skill_md.len()
            },
            {
                "uri": "skill://pdf-processing/references/FORMS.md",
                "digest": "sha256:1f0e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0",
                "size": 1843
            }
        ]
    });

    vec![
        ("initialize.request.json", request(1, Initialize::METHOD, &init_params)),
        (
            "initialize.response.json",
            response(1, InitializeResult::new(daemon_info.clone(), 7, 16, 1024)),
        ),
        (
            "daemon-status.request.json",
            request(2, DaemonStatusRequest::METHOD, NoParams {}),
        ),
        (
            "daemon-status.response.json",
            response(
                2,
                DaemonStatus::new(
                    daemon_info,
                    3_600_000,
                    "/run/user/1000/corral/corral.sock".to_owned(),
                    "/home/ada/.config/corral/config.toml".to_owned(),
                    true,
                    counts,
                    2,
                    18,
                )
                .with_connection_limit(896, 0)
                .with_dropped_progress(0)
                .with_service_notices_dropped(0)
                .with_mcp_endpoint(Some(McpEndpointStatus::serving(
                    "http://127.0.0.1:7767/mcp",
                    "/home/ada/.local/share/corral/mcp-endpoint.token",
                ))),
            ),
        ),
        (
            "mcp-server-list.request.json",
            request(3, McpServerList::METHOD, NoParams {}),
        ),
        (
            "mcp-server-list.response.json",
            response(3, McpServerListResult::new(vec![fs_server.clone(), disabled, linear])),
        ),
        (
            "mcp-server-get.request.json",
            request(4, McpServerGet::METHOD, McpServerGetParams::new("filesystem")),
        ),
        (
            "mcp-server-get.response.json",
            response(4, McpServerGetResult::new(fs_server)),
        ),
        (
            "events-replay.request.json",
            request(5, EventsReplay::METHOD, EventsReplayParams::new(16)),
        ),
        (
            "events-replay.response.json",
            response(
                5,
                EventsReplayResult::new(
                    vec![
                        DaemonNotification::StartupStatusUpdated(started.clone()),
                        DaemonNotification::StartupStatusUpdated(failed.clone()),
                    ],
                    true,
                    18,
                ),
            ),
        ),
        (
            "startup-status-updated.starting.notification.json",
            notification(StartupStatusUpdatedNotification::METHOD, started),
        ),
        (
            "startup-status-updated.failed.notification.json",
            notification(StartupStatusUpdatedNotification::METHOD, failed),
        ),
        (
            "tools-list.request.json",
            request(9, ToolsList::METHOD, ToolsListParams::server("everything")),
        ),
        (
            "tools-list.response.json",
            response(
                9,
                ToolsListResult::new(
                    vec![ServerTool::new(
                        "everything",
                        json!({
                            "name": "echo",
                            "description": "Echoes back the input string",
                            "inputSchema": {
                                "type": "object",
                                "properties": { "message": { "type": "string", "description": "Message to echo" } },
                                "required": ["message"]
                            }
                        }),
                    )],
                    vec![NotReadyServer::new(
                        "linear",
                        ServerStatus::Failed,
                        Some(FailureReason::ReauthenticationRequired),
                    )],
                ),
            ),
        ),
        (
            "tools-call.request.json",
            request(
                10,
                ToolsCall::METHOD,
                ToolsCallParams::new("everything", "echo", json!({ "message": "hi" }).as_object().cloned()),
            ),
        ),
        (
            "tools-call.response.json",
            response(
                10,
                json!({ "content": [{ "type": "text", "text": "Echo: hi" }], "isError": false }),
            ),
        ),
        (
            "resources-list.request.json",
            request(12, ResourcesList::METHOD, ListParams::all()),
        ),
        (
            "resources-list.response.json",
            response(
                12,
                ListResult::new(
                    vec![ServerItem::new(
                        "everything",
                        json!({ "uri": "demo://resource/static/document/architecture.md", "name": "architecture.md", "mimeType": "text/markdown" }),
                    )],
                    vec![],
                    vec![ListError::new(
                        "flaky",
                        "MCP server `flaky` repeated the pagination cursor \"p2\"",
                    )],
                ),
            ),
        ),
        (
            "resources-read.request.json",
            request(
                13,
                ResourcesRead::METHOD,
                ResourcesReadParams::new("everything", "demo://resource/static/document/architecture.md"),
            ),
        ),
        (
            "prompts-get.request.json",
            request(
                14,
                PromptsGet::METHOD,
                PromptsGetParams::new("everything", "simple-prompt", None),
            ),
        ),
        (
            "error.server-not-ready.json",
            json!({
                "jsonrpc": "2.0",
                "id": 11,
                "error": {
                    "code": ErrorCode::ServerNotReady.code(),
                    "message": "`linear` is not ready (failed: reauthenticationRequired): run `corral login linear`",
                    "data": { "status": "failed", "failureReason": "reauthenticationRequired" }
                }
            }),
        ),
        (
            "tools-list-changed.notification.json",
            notification(
                ToolsListChangedNotification::METHOD,
                ToolsListChanged::new(19, "filesystem", 14),
            ),
        ),
        (
            "server-log.notification.json",
            notification(
                ServerLogNotification::METHOD,
                ServerLog::new(
                    20,
                    "everything",
                    "info",
                    Some("demo".to_owned()),
                    json!("Info-level message"),
                ),
            ),
        ),
        (
            "resources-list-changed.notification.json",
            notification(
                ResourcesListChangedNotification::METHOD,
                ListChanged::new(21, "everything"),
            ),
        ),
        (
            "prompts-list-changed.notification.json",
            notification(
                PromptsListChangedNotification::METHOD,
                ListChanged::new(22, "everything"),
            ),
        ),
        (
            "resources-subscribe.request.json",
            request(
                12,
                ResourcesSubscribe::METHOD,
                ResourcesReadParams::new("everything", "demo://resource/static/document/architecture.md"),
            ),
        ),
        (
            "resource-updated.notification.json",
            notification(
                ResourceUpdatedNotification::METHOD,
                ResourceUpdated::new(23, "everything", "demo://resource/static/document/architecture.md"),
            ),
        ),
        (
            "progress.notification.json",
            notification(ProgressNotification::METHOD, {
                let mut progress = Progress::new("everything", json!("call-7"), 2.0);
                progress.total = Some(5.0);
                progress
            }),
        ),
        (
            "progress-lagged.notification.json",
            notification(ProgressLaggedNotification::METHOD, ProgressLagged::new(120)),
        ),
        (
            "elicitation.request.json",
            request(
                1,
                ElicitationRequest::METHOD,
                ServerRequestParams::new(
                    "everything",
                    json!({
                        "mode": "form",
                        "message": "Please provide your name",
                        "requestedSchema": {
                            "type": "object",
                            "properties": { "name": { "type": "string", "title": "Name" } },
                            "required": ["name"]
                        }
                    }),
                ),
            ),
        ),
        (
            "elicitation.response.json",
            response(1, json!({ "action": "accept", "content": { "name": "Ada" } })),
        ),
        (
            "events-lagged.notification.json",
            notification(EventsLaggedNotification::METHOD, EventsLagged::new(250, 1001)),
        ),
        (
            "config-reload.request.json",
            request(30, ConfigReload::METHOD, NoParams {}),
        ),
        (
            "config-reloaded.notification.json",
            notification(ConfigReloadedNotification::METHOD, reloaded.clone()),
        ),
        (
            "config-reload-failed.notification.json",
            notification(ConfigReloadFailedNotification::METHOD, reload_failed.clone()),
        ),
        (
            "config-reload.response.json",
            json!({ "jsonrpc": "2.0", "id": 30, "result": ConfigReloadResult::applied(&reloaded) }),
        ),
        (
            "mcp-server-oauth-login.request.json",
            request(
                23,
                McpServerOauthLogin::METHOD,
                McpServerOauthLoginParams::new("linear").with_scopes(Some(vec!["read".to_owned(), "write".to_owned()])),
            ),
        ),
        (
            "mcp-server-oauth-login.response.json",
            response(
                23,
                McpServerOauthLoginResult::new(
                    "https://auth.example/authorize?response_type=code&client_id=corral-7f3a&state=s8Xq2&code_challenge=E9Mel&code_challenge_method=S256&redirect_uri=http%3A%2F%2F127.0.0.1%3A48211%2Fcallback&resource=https%3A%2F%2Fmcp.linear.app%2Fmcp&scope=read+write",
                ),
            ),
        ),
        (
            "oauth-login-completed.notification.json",
            notification(
                OauthLoginCompletedNotification::METHOD,
                OauthLoginCompleted::new(24, "linear", None),
            ),
        ),
        (
            "oauth-login-completed.failed.notification.json",
            notification(
                OauthLoginCompletedNotification::METHOD,
                OauthLoginCompleted::new(
                    25,
                    "linear",
                    Some("the authorization server refused: The user denied access (access_denied)".to_owned()),
                ),
            ),
        ),
        (
            "mcp-server-logout.request.json",
            request(26, McpServerLogout::METHOD, McpServerGetParams::new("linear")),
        ),
        (
            "mcp-server-logout.response.json",
            response(26, McpServerLogoutResult::new(true)),
        ),
        (
            "error.protocol-version-mismatch.json",
            json!({
                "jsonrpc": "2.0",
                "id": 1,
                "error": {
                    "code": ErrorCode::ProtocolVersionMismatch.code(),
                    "message": VersionMismatchData::new(2, 1, 1).advice(),
                    "data": VersionMismatchData::new(2, 1, 1),
                }
            }),
        ),
        (
            "tools-call.headers.request.json",
            request(
                31,
                ToolsCall::METHOD,
                ToolsCallParams::new("crm", "search", json!({ "query": "acme" }).as_object().cloned())
                    .with_headers(Some([("X-Tenant".to_owned(), "acme".to_owned())].into())),
            ),
        ),
        (
            "skills-list.request.json",
            request(32, SkillsList::METHOD, ListParams::server("docs")),
        ),
        (
            "skills-list.response.json",
            response(
                32,
                SkillsListResult::new(
                    vec![ServerSkill::new("docs", skill_entry.clone(), None)],
                    vec![],
                    vec![],
                ),
            ),
        ),
        (
            "skills-read.request.json",
            request(33, SkillsRead::METHOD, SkillsReadParams::new("docs", "pdf-processing")),
        ),
        (
            "skills-read.response.json",
            response(
                33,
                SkillsReadResult::new(
                    "docs",
                    "skill://pdf-processing/SKILL.md",
                    "skill://pdf-processing/SKILL.md",
                    Some("text/markdown".to_owned()),
                    u64::try_from(skill_md.len()).unwrap_or(u64::MAX),
                    "sha256:3bdb070202e438244a671fdb4f0ab3247ed23fe49163667fdfe53e37636489f4",
                    true,
                    skill_entry,
                )
                .with_text(Some(skill_md.to_owned())),
            ),
        ),
        (
            "error.skill-verification-failed.json",
            json!({
                "jsonrpc": "2.0",
                "id": 33,
                "error": {
                    "code": ErrorCode::SkillVerificationFailed.code(),
                    "message": "skill `pdf-processing` of MCP server `docs`: skill://pdf-processing/SKILL.md is 141 bytes, the entry says 102; its content was not used: list the skills again (`corral skills docs`)",
                }
            }),
        ),
        (
            "mcp-server-request.request.json",
            request(
                34,
                McpServerRequest::METHOD,
                McpServerMessageParams::new(
                    "everything",
                    "completion/complete",
                    Some(json!({
                        "ref": { "type": "ref/prompt", "name": "completable-prompt" },
                        "argument": { "name": "department", "value": "En" }
                    })),
                ),
            ),
        ),
        (
            "mcp-server-request.response.json",
            response(
                34,
                json!({ "completion": { "values": ["Engineering"], "total": 1, "hasMore": false } }),
            ),
        ),
        (
            "mcp-server-notify.request.json",
            request(
                35,
                McpServerNotify::METHOD,
                McpServerMessageParams::new(
                    "codex",
                    "codex/sandbox-state",
                    Some(json!({ "sandboxPolicy": { "type": "workspace-write" } })),
                ),
            ),
        ),
        ("mcp-server-notify.response.json", response(35, NoParams {})),
        (
            "server-notification.notification.json",
            notification(
                ServerNotificationNotification::METHOD,
                ServerNotification::new(
                    36,
                    "codex",
                    "codex/event",
                    Some(json!({ "msg": { "type": "task_started" } })),
                ),
            ),
        ),
        (
            "error.server-not-found.json",
            json!({
                "jsonrpc": "2.0",
                "id": 4,
                "error": { "code": ErrorCode::ServerNotFound.code(), "message": "no MCP server named `filesytem`" }
            }),
        ),
    ]
}
