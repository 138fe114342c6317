//! What MCP servers ask of their client, through corrald, against the real
//! `@modelcontextprotocol/server-everything` and `server-filesystem`:
//! elicitation answered by a test front-end over the socket (declined when
//! none can answer, withdrawn at the deadline or when the call that caused
//! it is cancelled), sampling declined or answered, roots from the
//! config, progress routed to the caller, resource subscriptions.

use std::time::Duration;

use corral_protocol::ServerStatus;
use corral_tests::{
    RawConnection, RecvError, SERVER_WAIT, TestDaemon, WireFraming, everything_config, filesystem_config, scratch_dir,
    text_of, toml_string_array, wait_for_status, within_for,
};
use serde_json::{Value, json};

/// A front-end over a raw line-framed connection, initialized with `capabilities`.
pub(crate) async fn front_end(daemon: &TestDaemon, name: &str, capabilities: Value) -> RawConnection {
    let mut connection = RawConnection::connect(daemon.socket_path(), WireFraming::Lines).await;
    connection
        .call(
            "initialize",
            json!({
                "protocolVersion": 1,
                "clientInfo": {"name": name, "version": "0"},
                "capabilities": capabilities,
            }),
        )
        .await;
    connection
}

/// A daemon running server-everything (plus `extra` config), ready.
async fn everything_daemon(extra: &str) -> TestDaemon {
    let daemon = TestDaemon::start_with_config(&format!("{}{extra}", everything_config("everything")));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "everything", ServerStatus::Ready, SERVER_WAIT).await;
    daemon
}

/// Send a request without waiting for its answer; returns its id.
pub(crate) async fn send_request(connection: &mut RawConnection, id: u64, method: &str, params: Value) -> Value {
    let id = json!(id);
    connection
        .send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
        .await;
    id
}

/// Read messages until `wanted` matches one; the others are returned too, in order.
pub(crate) async fn read_until(connection: &mut RawConnection, wanted: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
    let mut others = Vec::new();
    for _ in 0..1000 {
        let message = connection.recv().await;
        if wanted(&message) {
            return (message, others);
        }
        others.push(message);
    }
    panic!("no wanted message among 1000: {others:?}");
}

/// `connection` got nothing meant for one front-end: after a round trip, no
/// message is waiting but notifications every front-end gets (they carry a
/// `seq`, like a server's late `tools/listChanged`).
async fn assert_nothing_received(connection: &mut RawConnection, who: &str) {
    connection.call("daemon/status", json!({})).await;
    for _ in 0..100 {
        match connection.try_recv(Duration::from_millis(100)).await {
            Err(RecvError::Timeout) => return,
            Ok(message) if message["params"]["seq"].is_u64() && message.get("id").is_none() => {}
            other => panic!("{who} got {other:?}"),
        }
    }
    panic!("{who} got more than 100 broadcast notifications");
}

/// Call server-everything's `trigger-elicitation-request` as request `id`
/// and wait for the elicitation it causes on the same connection; returns the call's
/// id and the daemon's request.
async fn start_elicitation(caller: &mut RawConnection, id: u64) -> (Value, Value) {
    let call = send_request(
        caller,
        id,
        "tools/call",
        json!({"server": "everything", "name": "trigger-elicitation-request", "arguments": {}}),
    )
    .await;
    let (request, _) = read_until(caller, is_request("mcpServer/elicitation/request")).await;
    (call, request)
}

fn is_request(method: &'static str) -> impl Fn(&Value) -> bool {
    move |message| message["method"] == method && message.get("id").is_some()
}

pub(crate) fn is_response(id: &Value) -> impl Fn(&Value) -> bool + '_ {
    move |message| message.get("id") == Some(id) && message.get("method").is_none()
}

#[tokio::test]
async fn an_elicitation_goes_to_the_calling_front_end_and_its_answer_back_to_the_server() {
    let daemon = everything_daemon("").await;
    let mut caller = front_end(&daemon, "caller", json!({"elicitation": true})).await;
    // Another capable front-end, more recently active: the caller still gets it.
    let mut bystander = front_end(&daemon, "bystander", json!({"elicitation": true})).await;
    bystander.call("daemon/status", json!({})).await;

    let (call, request) = start_elicitation(&mut caller, 1).await;
    let params = &request["params"];
    assert_eq!(params["server"], "everything", "{request}");
    let mcp = &params["request"];
    assert_eq!(
        mcp["message"], "Please provide inputs for the following fields:",
        "{mcp}"
    );
    let properties = &mcp["requestedSchema"]["properties"];
    assert_eq!(properties["name"]["type"], "string", "{mcp}");
    assert_eq!(
        properties["titledSingleSelectEnum"]["oneOf"].as_array().map(Vec::len),
        Some(3),
        "{mcp}"
    );
    assert_eq!(mcp["requestedSchema"]["required"], json!(["name"]), "{mcp}");

    caller
        .send(&json!({
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": {"action": "accept", "content": {"name": "Ada Lovelace", "check": true, "integer": 7}},
        }))
        .await;
    let (response, _) = read_until(&mut caller, is_response(&call)).await;
    let text = text_of(&response["result"]);
    assert!(text.contains("User provided the requested information"), "{text}");
    assert!(text.contains("- Name: Ada Lovelace"), "{text}");
    assert!(text.contains("- Agreed to terms: true"), "{text}");
    assert!(text.contains("- Favorite Integer: 7"), "{text}");

    assert_nothing_received(&mut bystander, "the bystander, never asked,").await;
}

#[tokio::test]
async fn declines_cancels_and_errors_of_the_front_end_reach_the_server() {
    let daemon = everything_daemon("").await;
    let mut front_end = front_end(&daemon, "answerer", json!({"elicitation": true})).await;
    for (id, answer, expected) in [
        (
            1,
            json!({"result": {"action": "decline"}}),
            "User declined to provide the requested information",
        ),
        (2, json!({"result": {"action": "cancel"}}), "User cancelled"),
    ] {
        let (call, request) = start_elicitation(&mut front_end, id).await;
        let mut reply = answer.clone();
        reply["jsonrpc"] = json!("2.0");
        reply["id"] = request["id"].clone();
        front_end.send(&reply).await;
        let (response, _) = read_until(&mut front_end, is_response(&call)).await;
        let text = text_of(&response["result"]);
        assert!(text.contains(expected), "{answer} gave {text}");
    }

    // An error answer becomes the server's error: the tool call fails with it.
    let (call, request) = start_elicitation(&mut front_end, 3).await;
    front_end
        .send(&json!({
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {"code": -32000, "message": "the user closed the editor"},
        }))
        .await;
    let (response, _) = read_until(&mut front_end, is_response(&call)).await;
    let outcome = response.to_string();
    assert!(outcome.contains("the user closed the editor"), "{outcome}");

    // An answer that is not an ElicitResult is the front-end's fault, said so
    // to the server; the daemon and the connection go on.
    let (call, request) = start_elicitation(&mut front_end, 4).await;
    front_end
        .send(&json!({"jsonrpc": "2.0", "id": request["id"], "result": {"action": "maybe"}}))
        .await;
    let (response, _) = read_until(&mut front_end, is_response(&call)).await;
    let outcome = response.to_string();
    assert!(
        outcome.contains("the front-end's answer to mcpServer/elicitation/request is not valid"),
        "{outcome}"
    );
    // A response to nothing the daemon asked is ignored.
    front_end
        .send(&json!({"jsonrpc": "2.0", "id": 999_999, "result": {"action": "accept"}}))
        .await;
    assert_nothing_received(&mut front_end, "a front-end answering an unknown id").await;
}

#[tokio::test]
async fn without_a_capable_front_end_elicitation_and_sampling_are_declined() {
    let daemon = everything_daemon("").await;
    // Connected, but it did not declare it can answer either.
    let mut plain = front_end(&daemon, "plain", json!({})).await;
    let result = plain
        .call(
            "tools/call",
            json!({"server": "everything", "name": "trigger-elicitation-request", "arguments": {}}),
        )
        .await;
    let text = text_of(&result);
    assert!(text.contains("User declined"), "{text}");

    let response = plain
        .request(
            "tools/call",
            json!({"server": "everything", "name": "trigger-sampling-request", "arguments": {"prompt": "hi"}}),
        )
        .await;
    let outcome = response.to_string();
    assert!(
        outcome.contains("sampling declined: the front-end whose call asked cannot answer it"),
        "{outcome}"
    );
    assert_nothing_received(&mut plain, "the front-end that cannot answer").await;
}

#[tokio::test]
async fn sampling_goes_to_a_front_end_that_can_sample() {
    let daemon = everything_daemon("").await;
    let mut sampler = front_end(&daemon, "sampler", json!({"sampling": true})).await;
    let call = send_request(
        &mut sampler,
        1,
        "tools/call",
        json!({"server": "everything", "name": "trigger-sampling-request", "arguments": {"prompt": "a haiku", "maxTokens": 50}}),
    )
    .await;
    let (request, _) = read_until(&mut sampler, is_request("mcpServer/sampling/createMessage")).await;
    let mcp = &request["params"]["request"];
    assert_eq!(request["params"]["server"], "everything");
    assert_eq!(mcp["maxTokens"], 50, "{mcp}");
    let prompt = mcp["messages"][0]["content"]["text"].as_str().unwrap_or_default();
    assert!(prompt.contains("a haiku"), "{mcp}");
    sampler
        .send(&json!({
            "jsonrpc": "2.0",
            "id": request["id"],
            "result": {
                "role": "assistant",
                "content": {"type": "text", "text": "old pond, frog jumps in"},
                "model": "test-model-7",
                "stopReason": "endTurn",
            },
        }))
        .await;
    let (response, _) = read_until(&mut sampler, is_response(&call)).await;
    let text = text_of(&response["result"]);
    assert!(text.contains("old pond, frog jumps in"), "{text}");
    assert!(text.contains("test-model-7"), "{text}");
}

#[tokio::test]
async fn the_call_timeout_stops_while_the_user_answers_an_elicitation() {
    // 1 s to run the tool, but the user takes 2.5 s: the call still succeeds.
    let daemon = TestDaemon::start_with_config(&format!("{}tool_timeout_sec = 1\n", everything_config("everything")));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "everything", ServerStatus::Ready, SERVER_WAIT).await;
    let mut front_end = front_end(&daemon, "slow-user", json!({"elicitation": true})).await;
    let (call, request) = start_elicitation(&mut front_end, 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    front_end
        .send(&json!({"jsonrpc": "2.0", "id": request["id"], "result": {"action": "accept", "content": {"name": "Slow"}}}))
        .await;
    let (response, _) = read_until(&mut front_end, is_response(&call)).await;
    let text = text_of(&response["result"]);
    assert!(text.contains("- Name: Slow"), "{response}");

    // The timeout itself still works when nobody is asked anything.
    let response = front_end
        .request(
            "tools/call",
            json!({"server": "everything", "name": "trigger-long-running-operation", "arguments": {"duration": 3, "steps": 1}}),
        )
        .await;
    assert_eq!(
        corral_tests::error_code(&response),
        -32011,
        "requestTimeout: {response}"
    );
}

#[tokio::test]
async fn an_elicitation_never_goes_to_a_front_end_that_did_not_call() {
    let daemon = everything_daemon("").await;
    // The caller cannot answer elicitations; a bystander can, and is the
    // most recently active front-end. The bystander must not be asked: the
    // question is the caller's application's, and the bystander might never
    // answer (which used to hang the caller's call).
    let mut caller = front_end(&daemon, "caller", json!({})).await;
    let mut bystander = front_end(&daemon, "bystander", json!({"elicitation": true, "sampling": true})).await;
    bystander.call("daemon/status", json!({})).await;
    let call = send_request(
        &mut caller,
        1,
        "tools/call",
        json!({"server": "everything", "name": "trigger-elicitation-request", "arguments": {}}),
    )
    .await;
    let (response, _) = read_until(&mut caller, is_response(&call)).await;
    let text = text_of(&response["result"]);
    assert!(text.contains("User declined"), "{response}");

    let sampling = caller
        .request(
            "tools/call",
            json!({"server": "everything", "name": "trigger-sampling-request", "arguments": {"prompt": "hi"}}),
        )
        .await;
    assert!(
        sampling
            .to_string()
            .contains("sampling declined: the front-end whose call asked cannot answer it"),
        "{sampling}"
    );
    assert_nothing_received(&mut bystander, "the bystander, which did not call,").await;
}

#[tokio::test]
async fn an_unanswered_elicitation_stops_only_its_callers_clock() {
    // 2 s per call. The first front-end leaves an elicitation unanswered; a
    // second front-end's 4 s call to the same server must still time out.
    let daemon = TestDaemon::start_with_config(&format!("{}tool_timeout_sec = 2\n", everything_config("everything")));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "everything", ServerStatus::Ready, SERVER_WAIT).await;
    let mut asked = front_end(&daemon, "asked", json!({"elicitation": true})).await;
    let mut other = front_end(&daemon, "other", json!({})).await;
    let (call, request) = start_elicitation(&mut asked, 1).await;

    let started = std::time::Instant::now();
    let response = within_for(
        Duration::from_secs(8),
        "the other front-end's call to end",
        other.request(
            "tools/call",
            json!({"server": "everything", "name": "trigger-long-running-operation", "arguments": {"duration": 4, "steps": 1}}),
        ),
    )
    .await;
    assert_eq!(
        corral_tests::error_code(&response),
        -32011,
        "requestTimeout: another front-end's pending elicitation must not stop this call's clock: {response}"
    );

    // The asked front-end's own call was paused all along: answered now,
    // well past its 2 s, it still succeeds.
    assert!(started.elapsed() >= Duration::from_secs(2));
    asked
        .send(&json!({"jsonrpc": "2.0", "id": request["id"], "result": {"action": "accept", "content": {"name": "Late"}}}))
        .await;
    let (response, _) = read_until(&mut asked, is_response(&call)).await;
    assert!(text_of(&response["result"]).contains("- Name: Late"), "{response}");
}

#[tokio::test]
async fn an_unanswered_elicitation_is_withdrawn_at_the_deadline() {
    let daemon = TestDaemon::builder()
        .config(&everything_config("everything"))
        .env("CORRAL_ELICITATION_TIMEOUT_SEC", "2")
        .start();
    let client = daemon.connect_client().await;
    wait_for_status(&client, "everything", ServerStatus::Ready, SERVER_WAIT).await;
    let mut silent = front_end(&daemon, "silent", json!({"elicitation": true, "sampling": true})).await;

    let (call, request) = start_elicitation(&mut silent, 1).await;
    // Never answered: after 2 s corrald withdraws it and tells the server "cancel".
    let (withdrawn, _) = read_until(&mut silent, |message| message["method"] == "$/cancelRequest").await;
    assert_eq!(withdrawn["params"]["id"], request["id"], "{withdrawn}");
    let (response, _) = read_until(&mut silent, is_response(&call)).await;
    assert!(text_of(&response["result"]).contains("User cancelled"), "{response}");

    // Sampling likewise: the call fails with corrald's reason.
    let call = send_request(
        &mut silent,
        2,
        "tools/call",
        json!({"server": "everything", "name": "trigger-sampling-request", "arguments": {"prompt": "hi"}}),
    )
    .await;
    let (request, _) = read_until(&mut silent, is_request("mcpServer/sampling/createMessage")).await;
    let (withdrawn, _) = read_until(&mut silent, |message| message["method"] == "$/cancelRequest").await;
    assert_eq!(withdrawn["params"]["id"], request["id"], "{withdrawn}");
    let (response, _) = read_until(&mut silent, is_response(&call)).await;
    assert!(
        response.to_string().contains("the front-end did not answer within 2s"),
        "{response}"
    );
}

#[tokio::test]
async fn an_elicitation_is_withdrawn_when_the_call_that_caused_it_is_cancelled() {
    let daemon = everything_daemon("").await;
    let mut front_end = front_end(&daemon, "canceller", json!({"elicitation": true})).await;
    let (call, request) = start_elicitation(&mut front_end, 1).await;
    // The user gives up on the call: the question it caused goes away with
    // it (server-everything itself does not withdraw it), long before the
    // answer deadline.
    front_end
        .send(&json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": call}}))
        .await;
    // Both come, in either order: the call's `requestCancelled` and the withdrawal.
    let (mut answered, mut withdrawn) = (None, None);
    for _ in 0..100 {
        if answered.is_some() && withdrawn.is_some() {
            break;
        }
        let message = front_end.recv().await;
        if message["method"] == "$/cancelRequest" {
            withdrawn = Some(message);
        } else if is_response(&call)(&message) {
            answered = Some(message);
        }
    }
    let answered = answered.expect("the cancelled call is answered");
    assert_eq!(answered["error"]["code"], -32800, "{answered}");
    let withdrawn = withdrawn.expect("the question is withdrawn");
    assert_eq!(withdrawn["params"], json!({"id": request["id"]}), "{withdrawn}");
    // A late answer is ignored; the connection goes on.
    front_end
        .send(&json!({"jsonrpc": "2.0", "id": request["id"], "result": {"action": "accept"}}))
        .await;
    assert_nothing_received(&mut front_end, "a front-end answering a withdrawn question").await;
}

#[tokio::test]
async fn progress_goes_to_the_caller_with_its_own_token() {
    let daemon = everything_daemon("").await;
    let mut caller = front_end(&daemon, "caller", json!({})).await;
    let mut other = front_end(&daemon, "other", json!({})).await;
    let call = send_request(
        &mut caller,
        1,
        "tools/call",
        json!({
            "server": "everything",
            "name": "trigger-long-running-operation",
            "arguments": {"duration": 0.6, "steps": 3},
            "_meta": {"progressToken": "my-token"},
        }),
    )
    .await;
    let (response, before) = read_until(&mut caller, is_response(&call)).await;
    assert!(
        text_of(&response["result"]).contains("Long running operation completed"),
        "{response}"
    );
    let progress: Vec<&Value> = before
        .iter()
        .filter(|message| message["method"] == "mcpServer/progress")
        .collect();
    let steps: Vec<(f64, f64)> = progress
        .iter()
        .map(|message| {
            let params = &message["params"];
            assert_eq!(params["server"], "everything", "{message}");
            assert_eq!(params["progressToken"], "my-token", "{message}");
            (
                params["progress"].as_f64().expect("progress"),
                params["total"].as_f64().expect("total"),
            )
        })
        .collect();
    assert_eq!(steps, vec![(1.0, 3.0), (2.0, 3.0), (3.0, 3.0)], "{progress:?}");

    assert_nothing_received(&mut other, "another front-end (progress leaked)").await;
}

#[tokio::test]
async fn roots_come_from_the_config() {
    let allowed = scratch_dir();
    let other = scratch_dir();
    std::fs::write(allowed.path().join("inside.txt"), "in the root").expect("write");
    let roots = [allowed.path().display().to_string()];
    // server-filesystem is started on `other`; the roots replace it.
    let config = format!(
        "{}roots = {}\n{}roots = {}\n",
        filesystem_config("files", other.path()),
        toml_string_array(&roots),
        everything_config("everything"),
        toml_string_array(&["file:///srv/projects"]),
    );
    let daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    wait_for_status(&client, "files", ServerStatus::Ready, SERVER_WAIT).await;
    wait_for_status(&client, "everything", ServerStatus::Ready, SERVER_WAIT).await;
    let mut front_end = front_end(&daemon, "roots", json!({})).await;

    let root = std::fs::canonicalize(allowed.path()).expect("canonical root");
    let socket = daemon.socket_path().to_owned();
    let allowed_dirs = corral_tests::poll_until("server-filesystem to take the roots", || {
        let socket = socket.clone();
        let root = root.clone();
        async move {
            let mut connection = RawConnection::connect(&socket, WireFraming::Lines).await;
            connection.initialize().await;
            let result = connection
                .call(
                    "tools/call",
                    json!({"server": "files", "name": "list_allowed_directories", "arguments": {}}),
                )
                .await;
            let text = text_of(&result);
            text.contains(&root.display().to_string()).then_some(text)
        }
    })
    .await;
    let other_dir = std::fs::canonicalize(other.path()).expect("canonical other");
    assert!(
        !allowed_dirs.contains(&other_dir.display().to_string()),
        "the roots replace the command-line directory: {allowed_dirs}"
    );
    let read = front_end
        .call(
            "tools/call",
            json!({"server": "files", "name": "read_text_file", "arguments": {"path": root.join("inside.txt")}}),
        )
        .await;
    assert_eq!(text_of(&read), "in the root");

    let listed = front_end
        .call(
            "tools/call",
            json!({"server": "everything", "name": "get-roots-list", "arguments": {}}),
        )
        .await;
    let text = text_of(&listed);
    assert!(text.contains("file:///srv/projects"), "{text}");
}

#[tokio::test]
async fn resource_subscriptions_are_shared_and_released_by_the_last_front_end() {
    let daemon = everything_daemon("").await;
    let uri = "demo://resource/static/document/architecture.md";
    let mut first = front_end(&daemon, "first", json!({})).await;
    let mut second = front_end(&daemon, "second", json!({})).await;
    let subscribe = json!({"server": "everything", "uri": uri});

    first.call("resources/subscribe", subscribe.clone()).await;
    // The server saw it (it logs every subscribe request).
    let (log, _) = read_until(&mut first, |message| {
        message["method"] == "mcpServer/log"
            && message["params"]["data"]
                .as_str()
                .is_some_and(|data| data.contains("Received Subscribe Resource request"))
    })
    .await;
    assert!(
        log["params"]["data"].as_str().unwrap_or_default().contains(uri),
        "{log}"
    );
    second.call("resources/subscribe", subscribe.clone()).await;

    // The server's simulated updates start at once and reach front-ends.
    first
        .call(
            "tools/call",
            json!({"server": "everything", "name": "toggle-subscriber-updates", "arguments": {}}),
        )
        .await;
    let (updated, _) = read_until(&mut second, |message| {
        message["method"] == "mcpServer/resources/updated"
    })
    .await;
    assert_eq!(updated["params"]["name"], "everything");
    assert_eq!(updated["params"]["uri"], uri);
    assert!(updated["params"]["seq"].as_u64().is_some(), "{updated}");

    // The first lets go: the second still holds it, the server is not told.
    first.call("resources/unsubscribe", subscribe.clone()).await;
    let again = first.request("resources/unsubscribe", subscribe.clone()).await;
    assert_eq!(corral_tests::error_code(&again), -32602, "{again}");
    // The second leaves: now the server is told.
    drop(second);
    let (log, earlier) = read_until(&mut first, |message| {
        message["method"] == "mcpServer/log"
            && message["params"]["data"]
                .as_str()
                .is_some_and(|data| data.contains("Received Unsubscribe Resource request"))
    })
    .await;
    assert!(
        log["params"]["data"].as_str().unwrap_or_default().contains(uri),
        "{log}"
    );
    let unsubscribes_before = earlier
        .iter()
        .filter(|message| message.to_string().contains("Received Unsubscribe"))
        .count();
    assert_eq!(unsubscribes_before, 0);

    // A server without subscriptions says so.
    let missing = first
        .request("resources/subscribe", json!({"server": "nope", "uri": uri}))
        .await;
    assert_eq!(corral_tests::error_code(&missing), -32001, "{missing}");
    within_for(
        Duration::from_secs(5),
        "daemon still answers",
        first.request("daemon/status", json!({})),
    )
    .await;
}

/// The daemon's limit of requests running at once per connection.
const MAX_IN_FLIGHT: u64 = 64;

#[tokio::test]
async fn elicitations_are_answered_while_every_request_slot_waits_on_them() {
    // Every slot of the connection holds a call waiting on this front-end's
    // answer, and one more call waits for a slot. The answers come after that
    // call on the wire: the daemon must read them anyway, or nothing moves.
    let daemon = everything_daemon("").await;
    let mut front_end = front_end(&daemon, "busy-user", json!({"elicitation": true})).await;
    let mut calls = String::new();
    for id in 1..=MAX_IN_FLIGHT + 1 {
        let call = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"server": "everything", "name": "trigger-elicitation-request", "arguments": {}},
        });
        calls.push_str(&call.to_string());
        calls.push('\n');
    }
    front_end.send_raw(calls.as_bytes()).await;

    // Answer every elicitation as it comes; collect the calls' results.
    let mut results = std::collections::BTreeMap::new();
    let mut elicitations = 0;
    let all_answered = async {
        // Bounded: each call causes one elicitation and one response.
        for _ in 0..4 * (MAX_IN_FLIGHT + 1) {
            if results.len() as u64 == MAX_IN_FLIGHT + 1 {
                break;
            }
            let message = match front_end.try_recv(SERVER_WAIT).await {
                Ok(message) => message,
                Err(error) => panic!(
                    "after {elicitations} elicitations and {} answered calls, nothing more came ({error:?}): \
                     the daemon stopped reading this front-end's answers",
                    results.len()
                ),
            };
            if is_request("mcpServer/elicitation/request")(&message) {
                elicitations += 1;
                front_end
                    .send(&json!({
                        "jsonrpc": "2.0",
                        "id": message["id"],
                        "result": {"action": "accept", "content": {"name": format!("user {elicitations}")}},
                    }))
                    .await;
            } else if message.get("id").is_some() && message.get("method").is_none() {
                results.insert(message["id"].as_u64().expect("numeric id"), message);
            }
        }
    };
    within_for(Duration::from_secs(120), "answering 65 elicitations", all_answered).await;
    assert_eq!(elicitations, MAX_IN_FLIGHT + 1);
    assert_eq!(
        results.keys().copied().collect::<Vec<_>>(),
        (1..=MAX_IN_FLIGHT + 1).collect::<Vec<_>>()
    );
    for response in results.values() {
        let text = text_of(&response["result"]);
        assert!(text.contains("- Name: user "), "{response}");
    }
}

#[tokio::test]
async fn progress_a_front_end_does_not_read_is_dropped_counted_and_noticed() {
    // 2000 progress notifications in about 2 s to a front-end that reads
    // nothing until progress has been dropped: its socket fills, then its
    // queue in the daemon; the rest is dropped, counted and announced.
    const STEPS: u64 = 2000;
    let daemon = everything_daemon("").await;
    let observer = daemon.connect_client().await;
    let mut caller = front_end(&daemon, "slow-reader", json!({})).await;
    let call = send_request(
        &mut caller,
        1,
        "tools/call",
        json!({
            "server": "everything",
            "name": "trigger-long-running-operation",
            "arguments": {"duration": 2, "steps": STEPS},
            "_meta": {"progressToken": "slow-token"},
        }),
    )
    .await;
    corral_tests::poll_until_for(SERVER_WAIT, "daemon/status to count dropped progress", || async {
        let status = observer.daemon_status().await.expect("daemon/status");
        status.dropped_progress.filter(|dropped| *dropped > 0)
    })
    .await;

    let mut delivered = 0;
    let mut notices = Vec::new();
    let mut response = None;
    for _ in 0..STEPS + 100 {
        let message = caller.recv().await;
        if is_response(&call)(&message) {
            response = Some(message);
            break;
        }
        match message["method"].as_str() {
            Some("mcpServer/progress") => {
                assert_eq!(message["params"]["progressToken"], "slow-token", "{message}");
                delivered += 1;
            }
            Some("mcpServer/progress/lagged") => notices.push(message["params"]["missed"].as_u64().expect("missed")),
            _ => {}
        }
    }
    let response = response.expect("the call's answer, after its progress");
    assert!(
        text_of(&response["result"]).contains("Long running operation completed"),
        "{response}"
    );
    let missed: u64 = notices.iter().sum();
    assert!(
        missed > 0,
        "no mcpServer/progress/lagged before the answer ({delivered} progress delivered)"
    );
    assert_eq!(
        delivered + missed,
        STEPS,
        "every progress notification is either delivered or counted as missed (notices {notices:?})"
    );
    let status = observer.daemon_status().await.expect("daemon/status");
    assert_eq!(
        status.dropped_progress,
        Some(missed),
        "daemon/status counts the same drops"
    );
}
