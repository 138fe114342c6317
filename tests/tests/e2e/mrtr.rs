//! Servers of MCP 2026-07-28's new kinds, through corrald, driven by test front-ends: a
//! stateless server (no `initialize`) of the official Python SDK (`http_fixture_server.py
//! --no-initialize`) whose `confirm` tool asks its questions in an `input_required` result
//! (MRTR, SEP-2322: the SDK seals its `requestState` and verifies the echo), used over
//! Corral's protocol by two front-ends at once and through `corral mcp` by the TypeScript
//! SDK's client, and whose tool changes reach front-ends from the `subscriptions/listen` stream
//! corrald keeps open (with every call asking for its log level in `_meta`); and
//! server-everything's `simulate-research-query`, a tool that must run as a task (SEP-1686),
//! followed to its result with its progress, its question, and its cancellation.

use std::ffi::OsString;

use corral_protocol::ServerStatus;
use corral_tests::{
    SERVER_WAIT, TestDaemon, everything_config, free_loopback_port, http_fixture, loopback_mcp_url, poll_until_for,
    recorded_requests, scratch_dir, statuses_of, text_of, toml_string, toml_string_array, wait_for_status,
};
use serde_json::{Value, json};

use super::bridge::{TsClient, socket_args};
use super::server_requests::{front_end, is_response, read_until, send_request};

/// The config entry of the stateless fixture at `port`, with `root` as its roots.
fn stateless_entry(port: u16, root: &str) -> String {
    format!(
        "\n[servers.stateless]\nurl = {}\nroots = {}\n",
        toml_string(&loopback_mcp_url(port)),
        toml_string_array(&[root.to_owned()])
    )
}

/// The elicitation `connection` is asked next (other messages are skipped).
async fn next_elicitation(connection: &mut corral_tests::RawConnection) -> Value {
    read_until(connection, |message| {
        message["method"] == "mcpServer/elicitation/request"
    })
    .await
    .0
}

#[tokio::test]
async fn a_stateless_server_serves_everything_and_asks_each_calling_front_end_its_own_questions() {
    let scratch = scratch_dir();
    let record = scratch.path().join("requests.jsonl");
    let root = scratch.path().join("root");
    std::fs::create_dir(&root).expect("a root");
    let root = root.display().to_string();
    let port = free_loopback_port();
    let _fixture = http_fixture(port, &record, &["--no-initialize"]);
    let daemon = TestDaemon::start_with_config(&stateless_entry(port, &root));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "stateless", ServerStatus::Ready, SERVER_WAIT).await;

    // Tools, prompts and resources, as from any server.
    let tools: Vec<String> = client
        .tools_list(Some("stateless"))
        .await
        .expect("tools/list")
        .tools
        .iter()
        .filter_map(|tool| tool.tool["name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        tools.contains(&"confirm".to_owned()) && tools.contains(&"echo".to_owned()),
        "{tools:?}"
    );
    let echoed = client
        .tools_call(
            "stateless",
            "echo",
            json!({"message": "hi"}).as_object().cloned(),
            SERVER_WAIT,
        )
        .await
        .expect("echo");
    assert_eq!(text_of(&echoed), "echo: hi");
    let prompts = client.prompts_list(Some("stateless")).await.expect("prompts/list");
    assert_eq!(prompts.items.len(), 1, "{prompts:?}");
    let prompt = client
        .prompts_get("stateless", "greeting", json!({"name": "Ada"}).as_object().cloned())
        .await
        .expect("prompts/get");
    assert_eq!(
        prompt["messages"][0]["content"]["text"], "Say hello to Ada.",
        "{prompt}"
    );
    let resources = client.resources_list(Some("stateless")).await.expect("resources/list");
    assert_eq!(resources.items[0].item["uri"], "fixture://note", "{resources:?}");
    let note = client
        .resources_read("stateless", "fixture://note")
        .await
        .expect("resources/read");
    assert_eq!(note["contents"][0]["text"], "a note from the fixture", "{note}");

    // Two front-ends call the MRTR tool at once: each is asked its own question, and each
    // call's answer and state go back with its own retry (the SDK refuses a changed state).
    let mut alpha = front_end(&daemon, "alpha", json!({"elicitation": true})).await;
    let mut beta = front_end(&daemon, "beta", json!({"elicitation": true})).await;
    let call = |topic: &str| json!({"server": "stateless", "name": "confirm", "arguments": {"topic": topic}});
    let alpha_call = send_request(&mut alpha, 1, "tools/call", call("alpha")).await;
    let beta_call = send_request(&mut beta, 1, "tools/call", call("beta")).await;
    let asked_alpha = next_elicitation(&mut alpha).await;
    let asked_beta = next_elicitation(&mut beta).await;
    assert_eq!(asked_alpha["params"]["server"], "stateless", "{asked_alpha}");
    assert_eq!(
        asked_alpha["params"]["request"]["message"], "Go ahead with alpha?",
        "{asked_alpha}"
    );
    assert_eq!(
        asked_beta["params"]["request"]["message"], "Go ahead with beta?",
        "{asked_beta}"
    );
    beta.send(&json!({"jsonrpc": "2.0", "id": asked_beta["id"], "result": {"action": "decline"}}))
        .await;
    alpha
        .send(&json!({"jsonrpc": "2.0", "id": asked_alpha["id"],
                       "result": {"action": "accept", "content": {"sure": true}}}))
        .await;
    let root_uri = format!("file://{root}");
    let (answered, _) = read_until(&mut alpha, is_response(&alpha_call)).await;
    assert_eq!(
        text_of(&answered["result"]),
        format!("alpha: accept {{\"sure\": true}}; roots ['{root_uri}']"),
        "{answered}"
    );
    let (answered, _) = read_until(&mut beta, is_response(&beta_call)).await;
    assert_eq!(
        text_of(&answered["result"]),
        format!("beta: decline null; roots ['{root_uri}']"),
        "{answered}"
    );

    // A front-end that cannot answer elicitation gets the server's answer to a decline, with
    // corrald's reason, and is asked nothing.
    let mut mute = front_end(&daemon, "mute", json!({})).await;
    let mute_call = send_request(&mut mute, 1, "tools/call", call("gamma")).await;
    let (answered, before) = read_until(&mut mute, is_response(&mute_call)).await;
    assert!(text_of(&answered["result"]).starts_with("gamma: decline"), "{answered}");
    assert!(
        before
            .iter()
            .all(|message| message["method"] != "mcpServer/elicitation/request"),
        "{before:?}"
    );

    // On the wire: `initialize` refused once, then the server of 2026-07-28's own start, no
    // session, and two requests per MRTR call.
    let requests = recorded_requests(&record);
    assert_eq!(statuses_of(&requests, "initialize"), [200], "answered with an error");
    assert_eq!(statuses_of(&requests, "server/discover"), [200]);
    assert!(
        requests.iter().all(|request| !request.session),
        "no session: {requests:#?}"
    );
    assert_eq!(statuses_of(&requests, "tools/call").len(), 1 + 3 * 2, "{requests:#?}");
}

#[tokio::test]
async fn an_mcp_client_of_corral_mcp_answers_a_stateless_servers_questions() {
    let scratch = scratch_dir();
    let record = scratch.path().join("requests.jsonl");
    let root = scratch.path().display().to_string();
    let port = free_loopback_port();
    let _fixture = http_fixture(port, &record, &["--no-initialize"]);
    let daemon = TestDaemon::start_with_config(&stateless_entry(port, &root));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "stateless", ServerStatus::Ready, SERVER_WAIT).await;
    let state = tempfile::tempdir().expect("a state dir");
    let args = socket_args(&daemon);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: [(&str, OsString); 1] = [(
        "BRIDGE_CLIENT_CAPABILITIES",
        json!({"elicitation": {}}).to_string().into(),
    )];
    let (mut mcp, _) = TsClient::start(&args, &env, state.path()).await;
    mcp.op(json!({"op": "answers", "elicitation": {"action": "accept", "content": {"sure": true}}}))
        .await;

    let confirmed = mcp.call("stateless__confirm", json!({"topic": "delta"})).await;
    assert_eq!(
        text_of(&confirmed["result"]),
        format!("delta: accept {{\"sure\": true}}; roots ['file://{root}']"),
        "{confirmed}"
    );
    let requests = mcp.server_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0]["method"], "elicitation/create",
        "MCP's own request: {requests:?}"
    );
    assert_eq!(requests[0]["params"]["message"], "Go ahead with delta?", "{requests:?}");

    let prompt = mcp
        .op(json!({"op": "getPrompt", "name": "stateless__greeting", "arguments": {"name": "Ada"}}))
        .await;
    assert_eq!(
        prompt["result"]["messages"][0]["content"]["text"], "Say hello to Ada.",
        "{prompt}"
    );
    let note = mcp.op(json!({"op": "read", "uri": "fixture://note"})).await;
    assert_eq!(
        note["result"]["contents"][0]["text"], "a note from the fixture",
        "{note}"
    );
    mcp.close().await;
}

/// The `mcpServer/progress` messages of `messages`, as their `message`s.
fn progress_messages(messages: &[Value], token: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|message| message["method"] == "mcpServer/progress")
        .map(|message| {
            assert_eq!(message["params"]["progressToken"], token, "{message}");
            message["params"]["message"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_tool_that_must_run_as_a_task_is_followed_to_its_result_asked_through_and_cancelled() {
    let daemon = TestDaemon::start_with_config(&everything_config("everything"));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "everything", ServerStatus::Ready, SERVER_WAIT).await;
    let mut caller = front_end(&daemon, "caller", json!({"elicitation": true})).await;
    let research = |id: &str, ambiguous: bool| {
        json!({"server": "everything", "name": "simulate-research-query",
               "arguments": {"topic": "python", "ambiguous": ambiguous}, "_meta": {"progressToken": id}})
    };

    // Called as a task (the tool requires it), followed to the end: its status changes are the
    // call's progress, and the result is the task's.
    let call = send_request(&mut caller, 1, "tools/call", research("plain", false)).await;
    let (answered, before) = read_until(&mut caller, is_response(&call)).await;
    let report = text_of(&answered["result"]);
    assert!(report.starts_with("# Research Report: python"), "{answered}");
    let told = progress_messages(&before, "plain");
    assert!(
        told.iter().any(|message| message.starts_with("task working")),
        "{told:?}"
    );
    assert!(told.len() >= 2, "more than one status: {told:?}");

    // The task asks a question meanwhile: it reaches the caller, and the answer the task.
    let call = send_request(&mut caller, 2, "tools/call", research("ambiguous", true)).await;
    let asked = read_until(&mut caller, |message| {
        message["method"] == "mcpServer/elicitation/request"
    })
    .await
    .0;
    assert!(
        asked["params"]["request"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("multiple interpretations")),
        "{asked}"
    );
    caller
        .send(&json!({"jsonrpc": "2.0", "id": asked["id"],
                       "result": {"action": "accept", "content": {"interpretation": "snake"}}}))
        .await;
    let (answered, _) = read_until(&mut caller, is_response(&call)).await;
    assert!(
        text_of(&answered["result"]).contains("**Clarification**: snake"),
        "{answered}"
    );

    // The front-end cancels a call whose task runs: corrald cancels the task.
    let call = send_request(&mut caller, 3, "tools/call", research("dropped", false)).await;
    read_until(&mut caller, |message| message["method"] == "mcpServer/progress").await;
    caller
        .send(&json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": call}}))
        .await;
    poll_until_for(SERVER_WAIT, "corrald to cancel the task left behind", || async {
        daemon
            .stderr()
            .contains("cancelled a task its call left behind")
            .then_some(())
    })
    .await;
    // Still usable.
    let call = send_request(
        &mut caller,
        4,
        "tools/call",
        json!({"server": "everything", "name": "echo",
        "arguments": {"message": "after"}}),
    )
    .await;
    let (answered, _) = read_until(&mut caller, is_response(&call)).await;
    assert_eq!(text_of(&answered["result"]), "Echo: after", "{answered}");

    // Through `corral mcp`: the MCP client gets the result, and the task's progress.
    let state = tempfile::tempdir().expect("a state dir");
    let args = socket_args(&daemon);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut mcp, _) = TsClient::start(&args, &[], state.path()).await;
    let done = mcp
        .op(json!({"op": "call", "name": "everything__simulate-research-query",
                   "arguments": {"topic": "rust"}, "progress": true}))
        .await;
    assert!(
        text_of(&done["result"]).starts_with("# Research Report: rust"),
        "{done}"
    );
    let steps = done["progress"].as_array().cloned().unwrap_or_default();
    assert!(
        steps.iter().any(|step| step["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("task "))),
        "{done}"
    );
    mcp.close().await;
}

#[tokio::test]
async fn a_stateless_http_servers_changes_come_on_the_stream_corrald_listens_on() {
    let scratch = scratch_dir();
    let record = scratch.path().join("requests.jsonl");
    let root = scratch.path().display().to_string();
    let port = free_loopback_port();
    let _fixture = http_fixture(port, &record, &["--no-initialize"]);
    let daemon = TestDaemon::start_with_config(&stateless_entry(port, &root));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "stateless", ServerStatus::Ready, SERVER_WAIT).await;
    let mut front = front_end(&daemon, "front", json!({})).await;

    let added = front
        .call(
            "tools/call",
            json!({"server": "stateless", "name": "add_tool", "arguments": {"name": "late"}}),
        )
        .await;
    assert_eq!(text_of(&added), "added");
    let (changed, _) = read_until(&mut front, |message| {
        message["method"] == "mcpServer/tools/listChanged" && message["params"]["name"] == "stateless"
    })
    .await;
    let tools = client.tools_list(Some("stateless")).await.expect("tools/list");
    assert_eq!(changed["params"]["toolCount"], json!(tools.tools.len()), "{changed}");
    let late = front
        .call(
            "tools/call",
            json!({"server": "stateless", "name": "late", "arguments": {"message": "x"}}),
        )
        .await;
    assert_eq!(text_of(&late), "late: x");

    // On the wire: one `subscriptions/listen` (its answer is the stream), and every call asking
    // for its log level in `_meta`, as 2026-07-28 has it.
    let requests = recorded_requests(&record);
    assert_eq!(statuses_of(&requests, "subscriptions/listen"), [200], "{requests:#?}");
    let level = "io.modelcontextprotocol/logLevel".to_owned();
    for request in &requests {
        let asks = request.meta.as_ref().is_some_and(|keys| keys.contains(&level));
        match request.rpc.as_deref() {
            Some("tools/call") => assert!(asks, "{request:?}"),
            Some("subscriptions/listen" | "server/discover" | "initialize") => assert!(!asks, "{request:?}"),
            _ => {}
        }
    }
}
