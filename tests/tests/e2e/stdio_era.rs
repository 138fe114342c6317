//! Stdio servers of either MCP era through corrald, with what corrald wrote to them recorded
//! line by line: `tests/peers/fixture_server.py --record` (the official Python SDK, which
//! records what it reads), and `tests/peers/stdio_recorder.py` in front of server-everything.
//!
//! - A stateless server of MCP 2026-07-28 only (`--no-initialize`: it refuses `initialize`
//!   and the SDK serves the rest in 2026-07-28) is started on the same process with
//!   `server/discover`; every request carries the version's `_meta`, a call asks for its log
//!   level there; its tool, prompt and resource changes come on the `subscriptions/listen`
//!   stream corrald opens (again when a front-end subscribes to a resource) and reach
//!   front-ends as a legacy server's do, through `corral mcp` too (the TypeScript SDK's
//!   client, whose `logging/setLevel` is the level its calls ask for); its MRTR tool asks
//!   the calling front-end.
//! - One that exits after refusing `initialize` (as rmcp's servers do) is launched once
//!   more and started with `server/discover`, and so is every later run of it.
//! - One that refuses the version offered is offered the one it names, on the same process.
//! - server-everything (a server of 2025-11-25) gets the `initialize` it always got, with the
//!   2026-07-28 `_meta` beside it, and none of 2026-07-28's requests or `_meta` after it.

use std::ffi::OsString;
use std::path::Path;

use corral_protocol::ServerStatus;
use corral_tests::{
    SERVER_WAIT, TestDaemon, fixture_config, peers_dir, scratch_dir, stdlib_python, text_of, toml_string,
    toml_string_array, wait_for_status,
};
use serde_json::{Value, json};

use super::bridge::{TsClient, socket_args};
use super::server_requests::{front_end, is_response, read_until, send_request};

/// The keys every request of MCP 2026-07-28 carries in `_meta` (clientInfo: SHOULD).
const MODERN_KEYS: [&str; 3] = [
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/clientInfo",
];

/// The messages recorded in `record` so far (one JSON object a line).
fn recorded(record: &Path) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("bad record line {line:?}: {error}")))
        .collect()
}

/// The recorded messages of `method`.
fn of_method<'a>(wire: &'a [Value], method: &str) -> Vec<&'a Value> {
    wire.iter().filter(|message| message["method"] == method).collect()
}

/// The `_meta` key `key` of a recorded message.
fn meta<'a>(message: &'a Value, key: &str) -> &'a Value {
    &message["meta"][key]
}

/// A config entry for the fixture recording into `record`, with `flags`.
fn recorded_fixture(name: &str, record: &Path, flags: &[&str]) -> String {
    let record = record.display().to_string();
    let mut all = vec!["--record", record.as_str()];
    all.extend_from_slice(flags);
    fixture_config(name, &all)
}

/// The lines of a `--pid-file`.
fn pids(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// corrald on `config`, with `server` ready on MCP `version`: the daemon and a client of it.
async fn ready_on(config: &str, server: &str, version: &str) -> (TestDaemon, corral_client::Client) {
    let daemon = TestDaemon::start_with_config(config);
    let client = daemon.connect_client().await;
    wait_for_status(&client, server, ServerStatus::Ready, SERVER_WAIT).await;
    assert_eq!(negotiated(&client, server).await.as_deref(), Some(version));
    (daemon, client)
}

/// The protocol version the server's `serverInfo` reports.
async fn negotiated(client: &corral_client::Client, name: &str) -> Option<String> {
    let status = client.mcp_server_get(name).await.expect("mcpServer/get").server;
    status.server_info.and_then(|info| info.protocol_version)
}

/// Call `tool` of `server` with `arguments` over `connection`; its text.
async fn call_text(connection: &mut corral_tests::RawConnection, server: &str, tool: &str, arguments: Value) -> String {
    let result = connection
        .call(
            "tools/call",
            json!({"server": server, "name": tool, "arguments": arguments}),
        )
        .await;
    text_of(&result)
}

/// Wait for a notification `method` about server `server` on `connection`.
async fn notified(connection: &mut corral_tests::RawConnection, method: &str, server: &str) -> Value {
    read_until(connection, |message| {
        message["method"] == method && message["params"]["name"] == server
    })
    .await
    .0
}

#[tokio::test]
async fn a_stateless_stdio_server_is_served_in_2026_07_28_and_its_changes_and_logs_reach_front_ends() {
    let scratch = scratch_dir();
    let record = scratch.path().join("wire.jsonl");
    let config = recorded_fixture(
        "modern",
        &record,
        &["--no-initialize", "--changing-tools", "--catalog", "--log-tool"],
    );
    let (daemon, client) = ready_on(&config, "modern", "2026-07-28").await;
    let mut front = front_end(&daemon, "front", json!({"elicitation": true})).await;

    assert_eq!(
        call_text(&mut front, "modern", "echo", json!({"message": "hi"})).await,
        "echo: hi"
    );

    // A new tool: the stream says so, the tools are listed again, front-ends are told.
    assert_eq!(
        call_text(&mut front, "modern", "add_tool", json!({"name": "late"})).await,
        "added"
    );
    let changed = notified(&mut front, "mcpServer/tools/listChanged", "modern").await;
    let tools = client.tools_list(Some("modern")).await.expect("tools/list");
    assert_eq!(changed["params"]["toolCount"], json!(tools.tools.len()), "{changed}");
    assert!(tools.tools.iter().any(|tool| tool.tool["name"] == "late"), "{tools:?}");
    assert_eq!(
        call_text(&mut front, "modern", "late", json!({"message": "x"})).await,
        "late: x"
    );
    // A new prompt.
    call_text(&mut front, "modern", "add_prompt", json!({"name": "second"})).await;
    notified(&mut front, "mcpServer/prompts/listChanged", "modern").await;
    let prompts = client.prompts_list(Some("modern")).await.expect("prompts/list");
    assert_eq!(prompts.items.len(), 2, "{prompts:?}");

    // A resource subscription: the stream is opened again with the URI, and its updates come.
    let note = json!({"server": "modern", "uri": "fixture://note"});
    front.call("resources/subscribe", note.clone()).await;
    call_text(&mut front, "modern", "touch_note", json!({})).await;
    let updated = notified(&mut front, "mcpServer/resources/updated", "modern").await;
    assert_eq!(updated["params"]["uri"], "fixture://note", "{updated}");
    front.call("resources/unsubscribe", note).await;

    // Logs, which this version sends only for a request that asks for them.
    call_text(
        &mut front,
        "modern",
        "log",
        json!({"level": "warning", "message": "careful"}),
    )
    .await;
    let logged = notified(&mut front, "mcpServer/log", "modern").await;
    assert_eq!(logged["params"]["level"], "warning", "{logged}");
    assert_eq!(logged["params"]["data"], "careful", "{logged}");

    // Its MRTR tool asks the calling front-end.
    let call = send_request(
        &mut front,
        100,
        "tools/call",
        json!({"server": "modern", "name": "confirm", "arguments": {"topic": "alpha"}}),
    )
    .await;
    let (asked, _) = read_until(&mut front, |message| {
        message["method"] == "mcpServer/elicitation/request"
    })
    .await;
    assert_eq!(asked["params"]["request"]["message"], "Go ahead with alpha?", "{asked}");
    front
        .send(&json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"sure": true}}}))
        .await;
    let (answered, _) = read_until(&mut front, is_response(&call)).await;
    assert_eq!(
        text_of(&answered["result"]),
        "alpha: accept {\"sure\": true}",
        "{answered}"
    );

    // On the wire: `initialize` (the first message, as every server gets it) refused, then
    // `server/discover` on the same process, then every request with the version's `_meta`.
    let wire = recorded(&record);
    let first = &wire[0];
    assert_eq!(first["method"], "initialize", "{wire:#?}");
    assert_eq!(first["protocolVersion"], "2025-11-25", "{first}");
    for key in MODERN_KEYS {
        assert!(!meta(first, key).is_null(), "initialize's _meta lacks {key}: {first}");
    }
    assert_eq!(meta(first, "io.modelcontextprotocol/clientInfo")["name"], "corrald");
    assert_eq!(
        of_method(&wire, "initialize").len(),
        1,
        "one process, one refusal: {wire:#?}"
    );
    assert_eq!(wire[1]["method"], "server/discover", "{wire:#?}");
    let requests: Vec<&Value> = wire[1..].iter().filter(|message| !message["id"].is_null()).collect();
    for request in &requests {
        assert_eq!(
            meta(request, "io.modelcontextprotocol/protocolVersion"),
            "2026-07-28",
            "{request}"
        );
        for key in MODERN_KEYS {
            assert!(!meta(request, key).is_null(), "{key} missing: {request}");
        }
    }
    let calls = of_method(&wire, "tools/call");
    assert_eq!(calls.len(), 8, "{calls:#?}");
    for call in &calls {
        assert_eq!(
            meta(call, "io.modelcontextprotocol/logLevel"),
            "debug",
            "a call asks for every log level: {call}"
        );
    }
    for start in of_method(&wire, "server/discover")
        .into_iter()
        .chain(of_method(&wire, "subscriptions/listen"))
    {
        assert!(meta(start, "io.modelcontextprotocol/logLevel").is_null(), "{start}");
    }
    // One stream for what the server declared, one more with the note, one more without it;
    // the one before each was cancelled.
    let listens = of_method(&wire, "subscriptions/listen");
    let filters: Vec<&Value> = listens.iter().map(|listen| &listen["notifications"]).collect();
    assert_eq!(
        filters,
        [
            &json!({"toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true}),
            &json!({"toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true,
                    "resourceSubscriptions": ["fixture://note"]}),
            &json!({"toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true}),
        ],
        "{wire:#?}"
    );
    assert_eq!(
        of_method(&wire, "notifications/cancelled").len(),
        2,
        "the replaced streams were cancelled: {wire:#?}"
    );
    assert!(of_method(&wire, "resources/subscribe").is_empty(), "{wire:#?}");
    assert!(of_method(&wire, "logging/setLevel").is_empty(), "{wire:#?}");
}

#[tokio::test]
async fn a_stdio_server_that_exits_after_refusing_initialize_is_launched_again_with_server_discover() {
    let scratch = scratch_dir();
    let record = scratch.path().join("wire.jsonl");
    let pid_file = scratch.path().join("pids");
    let pid_path = pid_file.display().to_string();
    let config = recorded_fixture(
        "modern",
        &record,
        &["--no-initialize-then-exit", "--pid-file", &pid_path],
    );
    let (_daemon, client) = ready_on(&config, "modern", "2026-07-28").await;
    assert_eq!(pids(&pid_file).len(), 2, "launched twice");
    let listed = client
        .tools_call(
            "modern",
            "echo",
            json!({"message": "again"}).as_object().cloned(),
            SERVER_WAIT,
        )
        .await
        .expect("echo");
    assert_eq!(text_of(&listed), "echo: again");
    let wire = recorded(&record);
    let methods: Vec<&str> = wire.iter().filter_map(|message| message["method"].as_str()).collect();
    assert_eq!(
        &methods[..2],
        ["initialize", "server/discover"],
        "the first process got initialize, the second server/discover first: {wire:#?}"
    );

    // Its next run starts as the last one ended: with server/discover, and at once.
    client.mcp_server_restart("modern").await.expect("restart");
    wait_for_status(&client, "modern", ServerStatus::Ready, SERVER_WAIT).await;
    assert_eq!(pids(&pid_file).len(), 3, "one launch for the restart");
    let wire = recorded(&record);
    assert_eq!(of_method(&wire, "initialize").len(), 1, "{wire:#?}");
    assert_eq!(of_method(&wire, "server/discover").len(), 2, "{wire:#?}");
}

#[tokio::test]
async fn a_stdio_server_that_refuses_the_version_offered_is_offered_the_one_it_names() {
    let scratch = scratch_dir();
    let record = scratch.path().join("wire.jsonl");
    let pid_file = scratch.path().join("pids");
    let pid_path = pid_file.display().to_string();
    let config = recorded_fixture(
        "older",
        &record,
        &["--supported-versions", "2025-06-18", "--pid-file", &pid_path],
    );
    let (_daemon, _client) = ready_on(&config, "older", "2025-06-18").await;
    assert_eq!(pids(&pid_file).len(), 1, "the same process");
    let wire = recorded(&record);
    let offered: Vec<&Value> = of_method(&wire, "initialize")
        .iter()
        .map(|initialize| &initialize["protocolVersion"])
        .collect();
    assert_eq!(offered, [&json!("2025-11-25"), &json!("2025-06-18")], "{wire:#?}");
    // A session of 2025-06-18: no 2026-07-28 request after the handshake.
    assert!(of_method(&wire, "server/discover").is_empty(), "{wire:#?}");
    assert!(of_method(&wire, "subscriptions/listen").is_empty(), "{wire:#?}");
}

#[tokio::test]
async fn server_everything_gets_the_handshake_it_always_got_and_nothing_of_2026_07_28_after_it() {
    let scratch = scratch_dir();
    let record = scratch.path().join("wire.jsonl");
    let everything = peers_dir().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let args = [
        peers_dir().join("stdio_recorder.py").display().to_string(),
        record.display().to_string(),
        "node".to_owned(),
        everything.display().to_string(),
        "stdio".to_owned(),
    ];
    let config = format!(
        "\n[servers.everything]\ncommand = {}\nargs = {}\n",
        toml_string(&stdlib_python().display().to_string()),
        toml_string_array(&args)
    );
    let (_daemon, client) = ready_on(&config, "everything", "2025-11-25").await;
    let echoed = client
        .tools_call(
            "everything",
            "echo",
            json!({"message": "hi"}).as_object().cloned(),
            SERVER_WAIT,
        )
        .await
        .expect("echo");
    assert_eq!(text_of(&echoed), "Echo: hi");

    let wire = recorded(&record);
    let first = &wire[0];
    assert_eq!(first["method"], "initialize", "{wire:#?}");
    assert_eq!(first["protocolVersion"], "2025-11-25", "{first}");
    for key in MODERN_KEYS {
        assert!(!meta(first, key).is_null(), "initialize's _meta lacks {key}: {first}");
    }
    assert_eq!(of_method(&wire, "initialize").len(), 1, "{wire:#?}");
    assert_eq!(wire[1]["method"], "notifications/initialized", "{wire:#?}");
    for message in &wire[1..] {
        let method = message["method"].as_str().unwrap_or_default();
        assert!(
            !["server/discover", "subscriptions/listen"].contains(&method),
            "{message}"
        );
        let keys: Vec<&String> = message["meta"]
            .as_object()
            .map(|meta| meta.keys().collect())
            .unwrap_or_default();
        assert!(
            keys.iter().all(|key| !key.starts_with("io.modelcontextprotocol/")),
            "a session of 2025-11-25 carries no 2026-07-28 _meta: {message}"
        );
    }
    assert!(!of_method(&wire, "tools/call").is_empty(), "{wire:#?}");
}

#[tokio::test]
async fn an_mcp_client_of_corral_mcp_sees_a_stateless_servers_changes_and_its_level_goes_with_its_calls() {
    let scratch = scratch_dir();
    let record = scratch.path().join("wire.jsonl");
    let config = recorded_fixture(
        "modern",
        &record,
        &["--no-initialize", "--changing-tools", "--log-tool"],
    );
    let daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    wait_for_status(&client, "modern", ServerStatus::Ready, SERVER_WAIT).await;
    let state = tempfile::tempdir().expect("a state dir");
    let args = socket_args(&daemon);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: [(&str, OsString); 0] = [];
    let (mut mcp, _) = TsClient::start(&args, &env, state.path()).await;
    let (names, _) = mcp.list().await;
    assert!(names.iter().any(|name| name == "modern__add_tool"), "{names:?}");

    let added = mcp.call("modern__add_tool", json!({"name": "fresh"})).await;
    assert_eq!(text_of(&added["result"]), "added", "{added}");
    mcp.list_changed().await;
    let (names, _) = mcp.list().await;
    assert!(names.iter().any(|name| name == "modern__fresh"), "{names:?}");

    // Its level is what its calls ask for: below it, nothing is sent at all.
    assert!(
        mcp.op(json!({"op": "setLevel", "level": "error"}))
            .await
            .get("error")
            .is_none()
    );
    let logged = mcp
        .call("modern__log", json!({"level": "warning", "message": "quiet"}))
        .await;
    assert_eq!(text_of(&logged["result"]), "logged", "{logged}");
    assert!(
        mcp.op(json!({"op": "setLevel", "level": "warning"}))
            .await
            .get("error")
            .is_none()
    );
    mcp.call("modern__log", json!({"level": "warning", "message": "heard"}))
        .await;
    let log = mcp.event("log").await;
    assert_eq!(log["params"]["data"], "heard", "{log}");
    let wire = recorded(&record);
    let levels: Vec<&Value> = of_method(&wire, "tools/call")
        .into_iter()
        .filter(|call| call["meta"].is_object())
        .map(|call| meta(call, "io.modelcontextprotocol/logLevel"))
        .collect();
    assert_eq!(
        levels,
        [&json!("info"), &json!("error"), &json!("warning")],
        "the client's level at each call (info until it set one): {wire:#?}"
    );
    mcp.close().await;
}
