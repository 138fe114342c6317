//! The committed schema and examples must match what the code generates, and
//! every example must parse into the typed message it claims to be.
//!
//! After a deliberate protocol change: `CORRAL_UPDATE_SNAPSHOTS=1 cargo test -p corral-protocol`,
//! then read the diff of `protocol/schema` and `protocol/examples` before committing.

use std::path::{Path, PathBuf};

use corral_protocol::schema::{examples, protocol_schema};
use corral_protocol::*;
use serde_json::Value;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn updating() -> bool {
    std::env::var_os("CORRAL_UPDATE_SNAPSHOTS").is_some_and(|v| v == "1")
}

/// Compare `value` with the committed file, or rewrite the file when updating.
fn check_snapshot(path: &Path, value: &Value) -> Result<(), String> {
    let rendered = serde_json::to_string_pretty(value).expect("serializable") + "\n";
    if updating() {
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("create snapshot dir");
        std::fs::write(path, &rendered).expect("write snapshot");
        return Ok(());
    }
    let committed = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e} (run CORRAL_UPDATE_SNAPSHOTS=1 cargo test -p corral-protocol)",
            path.display()
        )
    })?;
    if committed != rendered {
        return Err(format!(
            "{} differs from what the code generates; if the change is deliberate, run \
             CORRAL_UPDATE_SNAPSHOTS=1 cargo test -p corral-protocol and review the diff",
            path.display()
        ));
    }
    Ok(())
}

#[test]
fn protocol_schema_matches_committed_file() {
    check_snapshot(&crate_dir().join("schema/protocol.schema.json"), &protocol_schema())
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn config_schema_matches_committed_file() {
    check_snapshot(&crate_dir().join("schema/config.schema.json"), &config::json_schema())
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn examples_match_committed_files_and_nothing_stale_remains() {
    let dir = crate_dir().join("examples");
    let generated = examples();
    let mut failures = Vec::new();
    for (name, value) in &generated {
        if let Err(e) = check_snapshot(&dir.join(name), value) {
            failures.push(e);
        }
    }
    let names: Vec<&str> = generated.iter().map(|(name, _)| *name).collect();
    for entry in std::fs::read_dir(&dir).expect("examples dir exists") {
        let file_name = entry.expect("dir entry").file_name().to_string_lossy().into_owned();
        if !names.contains(&file_name.as_str()) {
            failures.push(format!("{file_name} is committed but no longer generated: delete it"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Deserialize `value` as `T` and check that serializing it back gives the same JSON.
fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &Value) {
    let typed: T = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{value} does not parse: {e}"));
    assert_eq!(&serde_json::to_value(&typed).expect("serializable"), value);
}

#[test]
fn every_committed_example_parses_as_its_typed_message() {
    if updating() {
        // Another test is rewriting the files right now; they are checked on the next run.
        return;
    }
    let dir = crate_dir().join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("examples dir exists") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("readable example");
        let message: Value = serde_json::from_str(&text).expect("example is JSON");
        assert_eq!(message["jsonrpc"], "2.0", "{}", path.display());
        let name = path.file_name().expect("file name").to_string_lossy().into_owned();
        let method = message.get("method").and_then(Value::as_str);
        match (method, name.contains(".response.")) {
            (Some(Initialize::METHOD), _) => round_trip::<InitializeParams>(&message["params"]),
            (Some(DaemonStatusRequest::METHOD), _) => round_trip::<NoParams>(&message["params"]),
            (Some(McpServerList::METHOD), _) => round_trip::<NoParams>(&message["params"]),
            (Some(McpServerGet::METHOD), _) => round_trip::<McpServerGetParams>(&message["params"]),
            (Some(McpServerAdd::METHOD), _) => round_trip::<McpServerAddParams>(&message["params"]),
            (Some(ToolsList::METHOD), _) => round_trip::<ToolsListParams>(&message["params"]),
            (Some(ToolsCall::METHOD), _) => round_trip::<ToolsCallParams>(&message["params"]),
            (Some(ResourcesList::METHOD | ResourceTemplatesList::METHOD | PromptsList::METHOD), _) => {
                round_trip::<ListParams>(&message["params"]);
            }
            (Some(ResourcesRead::METHOD), _) => round_trip::<ResourcesReadParams>(&message["params"]),
            (Some(PromptsGet::METHOD), _) => round_trip::<PromptsGetParams>(&message["params"]),
            (
                Some(
                    McpServerStart::METHOD | McpServerStop::METHOD | McpServerRestart::METHOD | McpServerRemove::METHOD,
                ),
                _,
            ) => {
                round_trip::<McpServerControlParams>(&message["params"]);
            }
            (Some(EventsReplay::METHOD), _) => round_trip::<EventsReplayParams>(&message["params"]),
            (Some(StartupStatusUpdatedNotification::METHOD), _) => {
                round_trip::<StartupStatusUpdated>(&message["params"]);
            }
            (Some(EventsLaggedNotification::METHOD), _) => round_trip::<EventsLagged>(&message["params"]),
            (Some(ToolsListChangedNotification::METHOD), _) => round_trip::<ToolsListChanged>(&message["params"]),
            (Some(ResourcesListChangedNotification::METHOD | PromptsListChangedNotification::METHOD), _) => {
                round_trip::<ListChanged>(&message["params"]);
            }
            (Some(ServerLogNotification::METHOD), _) => round_trip::<ServerLog>(&message["params"]),
            (Some(ResourcesSubscribe::METHOD | ResourcesUnsubscribe::METHOD), _) => {
                round_trip::<ResourcesReadParams>(&message["params"]);
            }
            (Some(ResourceUpdatedNotification::METHOD), _) => round_trip::<ResourceUpdated>(&message["params"]),
            (Some(ProgressNotification::METHOD), _) => round_trip::<Progress>(&message["params"]),
            (Some(ProgressLaggedNotification::METHOD), _) => round_trip::<ProgressLagged>(&message["params"]),
            (Some(ElicitationRequest::METHOD | SamplingRequest::METHOD), _) => {
                round_trip::<ServerRequestParams>(&message["params"]);
            }
            (Some(ConfigReload::METHOD), _) => round_trip::<NoParams>(&message["params"]),
            (Some(ConfigReloadedNotification::METHOD), _) => round_trip::<ConfigReloaded>(&message["params"]),
            (Some(ConfigReloadFailedNotification::METHOD), _) => {
                round_trip::<ConfigReloadFailed>(&message["params"]);
            }
            (Some(McpServerOauthLogin::METHOD), _) => round_trip::<McpServerOauthLoginParams>(&message["params"]),
            (Some(McpServerLogout::METHOD), _) => round_trip::<McpServerGetParams>(&message["params"]),
            (Some(OauthLoginCompletedNotification::METHOD), _) => {
                round_trip::<OauthLoginCompleted>(&message["params"]);
            }
            (Some(SkillsList::METHOD), _) => round_trip::<ListParams>(&message["params"]),
            (Some(SkillsRead::METHOD), _) => round_trip::<SkillsReadParams>(&message["params"]),
            (Some(McpServerRequest::METHOD | McpServerNotify::METHOD), _) => {
                round_trip::<McpServerMessageParams>(&message["params"]);
            }
            (Some(ServerNotificationNotification::METHOD), _) => {
                round_trip::<ServerNotification>(&message["params"]);
            }
            (Some(other), _) => panic!("{}: unknown method {other}", path.display()),
            (None, true) => {
                let result = &message["result"];
                match name.split(".response.").next().expect("prefix") {
                    "initialize" => round_trip::<InitializeResult>(result),
                    "daemon-status" => round_trip::<DaemonStatus>(result),
                    "mcp-server-list" => round_trip::<McpServerListResult>(result),
                    "mcp-server-get" | "mcp-server-stop" | "mcp-server-add" => {
                        round_trip::<McpServerGetResult>(result);
                    }
                    "mcp-server-remove" => round_trip::<McpServerRemoveResult>(result),
                    "tools-list" => round_trip::<ToolsListResult>(result),
                    "tools-call" => round_trip::<serde_json::Value>(result),
                    "resources-list" => round_trip::<ListResult>(result),
                    "events-replay" => round_trip::<EventsReplayResult>(result),
                    "elicitation" => round_trip::<serde_json::Value>(result),
                    "config-reload" => round_trip::<ConfigReloadResult>(result),
                    "mcp-server-oauth-login" => round_trip::<McpServerOauthLoginResult>(result),
                    "mcp-server-logout" => round_trip::<McpServerLogoutResult>(result),
                    "skills-list" => round_trip::<SkillsListResult>(result),
                    "skills-read" => round_trip::<SkillsReadResult>(result),
                    "mcp-server-request" => round_trip::<serde_json::Value>(result),
                    "mcp-server-notify" => round_trip::<NoParams>(result),
                    other => panic!("{}: no result type known for {other}", path.display()),
                }
            }
            (None, false) => {
                let code = message["error"]["code"].as_i64().expect("error example has a code");
                let code = ErrorCode::from_code(i32::try_from(code).expect("i32 code")).expect("a documented code");
                if code == ErrorCode::ProtocolVersionMismatch {
                    round_trip::<error::VersionMismatchData>(&message["error"]["data"]);
                }
            }
        }
        checked += 1;
    }
    assert_eq!(checked, examples().len());
}

#[test]
fn unknown_failure_reasons_from_a_newer_daemon_still_parse() {
    let update: StartupStatusUpdated = serde_json::from_value(serde_json::json!({
        "seq": 3, "name": "x", "status": "failed", "error": "boom", "failureReason": "somethingNew"
    }))
    .expect("parses");
    assert_eq!(update.failure_reason, Some(FailureReason::Unknown));
}

#[test]
fn failure_reason_names_are_the_wire_names() {
    for reason in [
        FailureReason::ConfigInvalid,
        FailureReason::ExecutableNotFound,
        FailureReason::SpawnFailed,
        FailureReason::StartupTimeout,
        FailureReason::ProcessExited,
        FailureReason::ProtocolError,
        FailureReason::CrashLoop,
        FailureReason::Unreachable,
        FailureReason::HttpError,
        FailureReason::AuthenticationRequired,
        FailureReason::ReauthenticationRequired,
        FailureReason::InsufficientScope,
    ] {
        assert_eq!(serde_json::to_value(reason).expect("serializes"), reason.as_str());
    }
}

#[test]
fn every_daemon_notification_in_the_examples_is_in_methods() {
    let mut seen = std::collections::BTreeSet::new();
    for (_, message) in examples() {
        if let Ok(notification) = serde_json::from_value::<DaemonNotification>(message.clone()) {
            assert!(
                DaemonNotification::METHODS.contains(&notification.method()),
                "{} is missing from DaemonNotification::METHODS",
                notification.method()
            );
            seen.insert(notification.method());
        }
    }
    assert_eq!(
        seen.len(),
        DaemonNotification::METHODS.len(),
        "an example of every notification: {seen:?}"
    );
}

/// A replay holding a notification of a kind this version does not know (a newer corrald's)
/// still reads: that one is skipped and its method noted; a known kind that does not decode
/// is still an error.
#[test]
fn a_replay_skips_notifications_of_unknown_kinds() {
    let (_, response) = examples()
        .into_iter()
        .find(|(name, _)| *name == "events-replay.response.json")
        .expect("the example");
    let mut result = response["result"].clone();
    let known = result["notifications"].as_array().expect("a list").clone();
    assert_eq!(known.len(), 2);
    let future = serde_json::json!({ "method": "mcpServer/future/kind", "params": { "seq": 17, "what": 1 } });
    result["notifications"] = Value::Array(vec![known[0].clone(), future, known[1].clone()]);
    let replay: EventsReplayResult = serde_json::from_value(result.clone()).expect("the replay reads");
    assert_eq!(replay.skipped, ["mcpServer/future/kind"]);
    assert_eq!(
        serde_json::to_value(&replay.notifications).expect("serializes"),
        Value::Array(known.clone())
    );
    assert_eq!(
        serde_json::to_value(&replay).expect("serializes")["notifications"],
        Value::Array(known.clone()),
        "`skipped` is not on the wire"
    );

    result["notifications"][0]["params"] = serde_json::json!({ "seq": "not a number" });
    serde_json::from_value::<EventsReplayResult>(result).expect_err("a known kind that does not decode");
}

/// docs/protocol.md, Versioning: params to the daemon are strict (an unknown field is refused,
/// naming it), except `initialize`'s, which a newer front-end must always get through.
#[test]
fn params_refuse_unknown_fields_except_initialize() {
    let error = serde_json::from_value::<McpServerGetParams>(serde_json::json!({"name": "a", "dryRun": true}))
        .expect_err("an unknown param is refused");
    assert!(
        error.to_string().contains("dryRun"),
        "the error names the field: {error}"
    );
    let error = serde_json::from_value::<NoParams>(serde_json::json!({"verbose": true}))
        .expect_err("even where a method takes none");
    assert!(error.to_string().contains("verbose"), "{error}");

    let initialize: InitializeParams = serde_json::from_value(serde_json::json!({
        "protocolVersion": 1,
        "clientInfo": {"name": "newer", "version": "9"},
        "capabilities": {"elicitation": true, "someFutureCapability": {"x": 1}},
        "someFutureField": 3,
    }))
    .expect("initialize ignores what it does not know");
    assert!(initialize.capabilities.elicitation);
}
