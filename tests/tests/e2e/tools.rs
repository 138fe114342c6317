//! `tools/list` and `tools/call` through corrald, against server-everything
//! and the SDK fixture: results pass through untouched, the config's tool
//! filters apply to listing and calling, and every failure is a typed error
//! that names the server and the tool.

use std::time::{Duration, Instant};

use corral_client::protocol::{ErrorCode, ServerStatus};
use corral_client::{Client, ClientError};
use corral_tests::{SERVER_WAIT, TestDaemon, everything_config, fixture_config, wait_for_status};
use serde_json::{Value, json};

const CALL_WAIT: Duration = Duration::from_secs(30);

fn arguments(value: Value) -> Option<serde_json::Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Wait (bounded) until `server`'s stderr tail has a line containing `needle`.
async fn wait_for_stderr_line(client: &Client, server: &str, needle: &str) {
    corral_tests::poll_until(&format!("`{needle}` on {server}'s stderr"), || async {
        let tail = client.mcp_server_get(server).await.ok()?.server.stderr_tail;
        tail.iter().any(|line| line.contains(needle)).then_some(())
    })
    .await;
}

fn code(error: &ClientError) -> Option<ErrorCode> {
    error.error_code()
}

async fn ready_daemon(config: &str, servers: &[&str]) -> (TestDaemon, Client) {
    let daemon = TestDaemon::start_with_config(config);
    let client = daemon.connect_client().await;
    for server in servers {
        wait_for_status(&client, server, ServerStatus::Ready, SERVER_WAIT).await;
    }
    (daemon, client)
}

#[tokio::test]
async fn tools_of_every_ready_server_are_listed_raw_and_filtered_by_the_config() {
    let config = format!(
        "{}disabled_tools = [\"get-env\"]\n\n{}\n[servers.off]\ncommand = \"true\"\nenabled = false\n\n[servers.missing]\ncommand = \"no-such-program-for-corral\"\n",
        everything_config("everything"),
        fixture_config("fixture", &[]),
    );
    let (_daemon, client) = ready_daemon(&config, &["everything", "fixture"]).await;
    wait_for_status(&client, "missing", ServerStatus::Failed, SERVER_WAIT).await;

    let listing = client.tools_list(None).await.expect("tools/list");
    let everything: Vec<&str> = listing
        .tools
        .iter()
        .filter(|tool| tool.server == "everything")
        .filter_map(|tool| tool.name())
        .collect();
    assert_eq!(everything.len(), 15, "16 tools minus the disabled one: {everything:?}");
    assert!(!everything.contains(&"get-env"), "disabled_tools applies to listing");
    let fixture: Vec<&str> = listing
        .tools
        .iter()
        .filter(|tool| tool.server == "fixture")
        .filter_map(|tool| tool.name())
        .collect();
    assert_eq!(fixture, ["echo", "pid", "sleep"]);

    // The MCP fields are the server's own, untouched.
    let echo = listing
        .tools
        .iter()
        .find(|tool| tool.server == "everything" && tool.name() == Some("echo"))
        .expect("echo is listed");
    assert_eq!(echo.tool["inputSchema"]["type"], "object");
    assert!(
        echo.tool["inputSchema"]["properties"]["message"].is_object(),
        "{}",
        echo.tool
    );
    assert!(echo.tool["description"].as_str().is_some_and(|text| !text.is_empty()));

    // The failed server is reported; the disabled one is not "missing" anything.
    let not_ready: Vec<(&str, ServerStatus)> = listing
        .not_ready
        .iter()
        .map(|server| (server.name.as_str(), server.status))
        .collect();
    assert_eq!(not_ready, [("missing", ServerStatus::Failed)]);

    let one = client.tools_list(Some("fixture")).await.expect("tools/list one server");
    assert_eq!(one.tools.len(), 3);
    assert!(one.tools.iter().all(|tool| tool.server == "fixture"));
    let error = client
        .tools_list(Some("off"))
        .await
        .expect_err("a stopped server has no tools");
    assert_eq!(code(&error), Some(ErrorCode::ServerNotReady), "{error}");
    let error = client.tools_list(Some("nobody")).await.expect_err("unknown server");
    assert_eq!(code(&error), Some(ErrorCode::ServerNotFound), "{error}");
}

#[tokio::test]
async fn calls_return_the_servers_result_untouched() {
    let (_daemon, client) = ready_daemon(&everything_config("everything"), &["everything"]).await;

    let echo = client
        .tools_call(
            "everything",
            "echo",
            arguments(json!({"message": "hello corral"})),
            CALL_WAIT,
        )
        .await
        .expect("tools/call echo");
    assert_eq!(
        echo["content"][0],
        json!({"type": "text", "text": "Echo: hello corral"})
    );

    let sum = client
        .tools_call("everything", "get-sum", arguments(json!({"a": 2, "b": 3})), CALL_WAIT)
        .await
        .expect("tools/call get-sum");
    assert_eq!(sum["content"][0]["text"], "The sum of 2 and 3 is 5.");

    let structured = client
        .tools_call(
            "everything",
            "get-structured-content",
            arguments(json!({"location": "New York"})),
            CALL_WAIT,
        )
        .await
        .expect("tools/call get-structured-content");
    assert!(structured["structuredContent"].is_object(), "{structured}");

    // A tool's own failure is a result with isError, not a JSON-RPC error.
    let invalid = client
        .tools_call("everything", "get-sum", arguments(json!({"a": "two"})), CALL_WAIT)
        .await;
    match invalid {
        Ok(result) => assert_eq!(result["isError"], true, "{result}"),
        Err(error) => assert_eq!(code(&error), Some(ErrorCode::ServerError), "{error}"),
    }
}

#[tokio::test]
async fn calls_that_cannot_be_made_are_typed_errors_naming_server_and_tool() {
    let config = format!(
        "{}disabled_tools = [\"get-env\"]\n\n[servers.off]\ncommand = \"true\"\nenabled = false\n",
        everything_config("everything")
    );
    let (_daemon, client) = ready_daemon(&config, &["everything"]).await;

    let error = client
        .tools_call("everything", "get-env", None, CALL_WAIT)
        .await
        .expect_err("disabled by the config");
    assert_eq!(code(&error), Some(ErrorCode::ToolNotAvailable), "{error}");
    assert!(
        error.to_string().contains("`get-env`") && error.to_string().contains("`everything`"),
        "{error}"
    );

    let error = client
        .tools_call("everything", "no-such-tool", None, CALL_WAIT)
        .await
        .expect_err("unknown tool");
    assert_eq!(code(&error), Some(ErrorCode::ToolNotAvailable), "{error}");

    let started = Instant::now();
    let error = client
        .tools_call("off", "echo", None, CALL_WAIT)
        .await
        .expect_err("not ready");
    assert_eq!(code(&error), Some(ErrorCode::ServerNotReady), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answers at once, never hangs"
    );
    let ClientError::Rpc { data, .. } = &error else {
        panic!("expected an RPC error, got {error:?}");
    };
    assert_eq!(data.as_ref().map(|data| &data["status"]), Some(&json!("stopped")));

    let error = client
        .tools_call("nobody", "echo", None, CALL_WAIT)
        .await
        .expect_err("unknown server");
    assert_eq!(code(&error), Some(ErrorCode::ServerNotFound), "{error}");
}

#[tokio::test]
async fn a_call_beyond_tool_timeout_is_cancelled_and_the_server_keeps_serving() {
    let config = format!("{}tool_timeout_sec = 1\n", fixture_config("slow", &[]));
    let (_daemon, client) = ready_daemon(&config, &["slow"]).await;

    let started = Instant::now();
    let error = client
        .tools_call("slow", "sleep", arguments(json!({"seconds": 20})), CALL_WAIT)
        .await
        .expect_err("times out");
    let elapsed = started.elapsed();
    assert_eq!(code(&error), Some(ErrorCode::RequestTimeout), "{error}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(10),
        "bounded by tool_timeout_sec: {elapsed:?}"
    );
    // The timed-out request was cancelled on the server, not left running.
    wait_for_stderr_line(&client, "slow", "fixture: sleep cancelled").await;

    let echo = client
        .tools_call("slow", "echo", arguments(json!({"message": "still here"})), CALL_WAIT)
        .await
        .expect("the server still answers");
    assert_eq!(echo["content"][0]["text"], "echo: still here");
    let server = client.mcp_server_get("slow").await.expect("get").server;
    assert_eq!((server.status, server.restart_count), (ServerStatus::Ready, 0));
}

#[tokio::test]
async fn a_front_end_cancels_an_in_flight_call_with_cancel_request() {
    let (daemon, client) = ready_daemon(&fixture_config("slow", &[]), &["slow"]).await;
    let mut raw = daemon.raw_line_connection().await;
    raw.initialize().await;
    let call = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"server": "slow", "name": "sleep", "arguments": {"seconds": 20}}
    });
    raw.send(&call).await;
    // Wait until the call has reached the server (the fixture says so on
    // stderr), then cancel it the LSP way.
    wait_for_stderr_line(&client, "slow", "fixture: sleeping").await;
    let started = Instant::now();
    raw.send(&json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 7}}))
        .await;
    let response = raw.response_to(&json!(7)).await;
    assert_eq!(
        response["error"]["code"],
        ErrorCode::RequestCancelled.code(),
        "{response}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancelled at once: {:?}",
        started.elapsed()
    );

    // Cancelling an unknown or finished request answers nothing; the connection goes on.
    raw.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}}))
        .await;
    let echo = raw
        .call(
            "tools/call",
            json!({"server": "slow", "name": "echo", "arguments": {"message": "after"}}),
        )
        .await;
    assert_eq!(echo["content"][0]["text"], "echo: after", "{echo}");
    let server = client.mcp_server_get("slow").await.expect("get").server;
    assert_eq!((server.status, server.restart_count), (ServerStatus::Ready, 0));
}

#[tokio::test]
async fn a_front_end_that_hangs_up_has_its_call_cancelled_without_the_half_close_grace() {
    let (daemon, client) = ready_daemon(&fixture_config("slow", &[]), &["slow"]).await;
    let mut raw = daemon.raw_line_connection().await;
    raw.initialize().await;
    raw.send(&json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"server": "slow", "name": "sleep", "arguments": {"seconds": 20}}
    }))
    .await;
    wait_for_stderr_line(&client, "slow", "fixture: sleeping").await;
    // Closed entirely (what Ctrl-C on `corral call` does), not half-closed:
    // the daemon cancels at once instead of waiting for answers nobody reads.
    drop(raw);
    wait_for_stderr_line(&client, "slow", "fixture: sleep cancelled").await;
    corral_tests::poll_until("the daemon to log the hang-up", || async {
        daemon
            .stderr()
            .contains("front-end hung up; cancelling its requests")
            .then_some(())
    })
    .await;
    let server = client.mcp_server_get("slow").await.expect("get").server;
    assert_eq!((server.status, server.restart_count), (ServerStatus::Ready, 0));
}

#[tokio::test]
async fn ctrl_c_on_corral_call_cancels_the_call_on_the_server() {
    let (daemon, client) = ready_daemon(&fixture_config("slow", &[]), &["slow"]).await;
    let mut command = corral_tests::corral_command();
    command
        .args(["call", "slow", "sleep", r#"{"seconds": 20}"#, "--socket"])
        .arg(daemon.socket_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // Killed if the test fails before it exits.
    let corral = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn corral call");
    wait_for_stderr_line(&client, "slow", "fixture: sleeping").await;
    let pid = libc::pid_t::try_from(corral.id().expect("running")).expect("pid fits");
    // SAFETY: signalling our own child, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let output = corral_tests::within("corral call to exit after SIGINT", corral.wait_with_output())
        .await
        .expect("corral exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("cancelled: the call was cancelled on `slow`"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('⠋'),
        "no spinner when stderr is not a terminal: {stderr}"
    );
    wait_for_stderr_line(&client, "slow", "fixture: sleep cancelled").await;
}

/// A server that dies while a call is in flight: the call is answered at once with the
/// typed error naming server and tool (not left to its `tool_timeout_sec`), and the server
/// is restarted and serves again.
#[tokio::test]
async fn a_call_in_flight_when_the_server_dies_is_answered_with_the_typed_error() {
    let (daemon, client) = ready_daemon(&fixture_config("fragile", &[]), &["fragile"]).await;
    let pid = client
        .mcp_server_get("fragile")
        .await
        .expect("get")
        .server
        .pid
        .expect("a ready stdio server has a pid");
    let caller = daemon.connect_client().await;
    let call = tokio::spawn(async move {
        caller
            .tools_call("fragile", "sleep", arguments(json!({"seconds": 60})), CALL_WAIT)
            .await
    });
    wait_for_stderr_line(&client, "fragile", "fixture: sleeping").await;
    let killed = Instant::now();
    corral_tests::send_signal(pid, libc::SIGKILL);
    let error = corral_tests::within("the call to be answered after the kill", call)
        .await
        .expect("the call's task")
        .expect_err("the server died under it");
    assert_eq!(code(&error), Some(ErrorCode::ServerNotReady), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("MCP server `fragile` went away during `tools/call` of `sleep`"),
        "{message}"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "answered when the server went, not at a timeout: {:?}",
        killed.elapsed()
    );
    // Ready again as a new process (the old one may still be listed while it is torn down).
    corral_tests::poll_until("the server to be restarted", || async {
        let server = client.mcp_server_get("fragile").await.ok()?.server;
        (server.status == ServerStatus::Ready && server.pid.is_some_and(|new| new != pid)).then_some(())
    })
    .await;
    let server = client.mcp_server_get("fragile").await.expect("get").server;
    assert_eq!(server.restart_count, 1, "{server:#?}");
    let echo = client
        .tools_call("fragile", "echo", arguments(json!({"message": "back"})), CALL_WAIT)
        .await
        .expect("the restarted server answers");
    assert_eq!(echo["content"][0]["text"], "echo: back");
}

/// Many calls from several front-ends in flight at once on one server: each answer reaches
/// the call it belongs to (corrald gives each request its own id on the server's wire and
/// routes the answer back by it).
#[tokio::test]
async fn concurrent_calls_of_several_front_ends_each_get_their_own_answer() {
    let (daemon, _client) = ready_daemon(&everything_config("everything"), &["everything"]).await;
    let mut calls = tokio::task::JoinSet::new();
    let mut front_ends = Vec::new();
    for front_end in 0..6 {
        let client = std::sync::Arc::new(daemon.connect_client().await);
        for call in 0..20 {
            let client = client.clone();
            calls.spawn(async move {
                let message = format!("front-end {front_end} call {call}");
                let result = client
                    .tools_call("everything", "echo", arguments(json!({"message": message})), CALL_WAIT)
                    .await
                    .expect("echo");
                (message, result)
            });
        }
        front_ends.push(client);
    }
    let mut answered = 0;
    while let Some(joined) = calls.join_next().await {
        let (message, result) = joined.expect("a call's task");
        assert_eq!(result["content"][0]["text"], format!("Echo: {message}"), "{result}");
        answered += 1;
    }
    assert_eq!(answered, 6 * 20);
}

/// The names of `server`'s tools in a `tools/list` of that server, in the listed order.
async fn tool_names(client: &Client, server: &str) -> Vec<String> {
    let listing = client.tools_list(Some(server)).await.expect("tools/list");
    listing
        .tools
        .iter()
        .filter_map(|tool| tool.name().map(str::to_owned))
        .collect()
}

/// Wait (bounded) for a `tools/listChanged` of `server` saying it offers `count` tools.
async fn tools_changed_to(notifications: &mut corral_client::Notifications, server: &str, count: u32) {
    let what = format!("tools/listChanged of {server} with {count} tools");
    corral_tests::within_for(SERVER_WAIT, &what, async {
        // Bounded by the timeout around it.
        loop {
            match notifications.next().await {
                Some(Ok(corral_client::ClientNotification::Daemon(
                    corral_client::protocol::DaemonNotification::ToolsListChanged(changed),
                ))) if changed.name == server && changed.tool_count == count => return,
                Some(_) => {}
                None => panic!("notification stream ended"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn tools_are_listed_again_after_the_server_says_they_changed() {
    // The fixture adds tools while it runs and says so; the config hides `pid`.
    let config = format!(
        "{}disabled_tools = [\"pid\"]\n",
        fixture_config("fixture", &["--changing-tools"])
    );
    let (_daemon, mut client) = ready_daemon(&config, &["fixture"]).await;
    let mut notifications = client.take_notifications().expect("notification stream");
    assert_eq!(tool_names(&client, "fixture").await, ["echo", "sleep", "add_tool"]);

    let added = client
        .tools_call("fixture", "add_tool", arguments(json!({"name": "first"})), CALL_WAIT)
        .await
        .expect("tools/call add_tool");
    assert_eq!(corral_tests::text_of(&added), "added");
    tools_changed_to(&mut notifications, "fixture", 4).await;
    let listing = client.tools_list(Some("fixture")).await.expect("tools/list");
    let names: Vec<&str> = listing.tools.iter().filter_map(|tool| tool.name()).collect();
    assert_eq!(
        names,
        ["echo", "sleep", "add_tool", "first"],
        "the new listing, in the server's order, filtered by the config"
    );
    let first = &listing.tools[3].tool;
    assert_eq!(first["description"], "Added at run time as first.", "{first}");
    assert_eq!(first["_meta"], json!({"zeta": 1, "alpha": [1.5, "two"]}), "{first}");
    assert_eq!(
        first["execution"],
        json!({"taskSupport": "optional"}),
        "as the server wrote it (rmcp's model drops `execution`): {first}"
    );
    assert_eq!(
        first["inputSchema"]["properties"]["message"]["type"], "string",
        "{first}"
    );
    let answer = client
        .tools_call("fixture", "first", arguments(json!({"message": "hi"})), CALL_WAIT)
        .await
        .expect("the new tool can be called");
    assert_eq!(corral_tests::text_of(&answer), "first: hi");
    let error = client
        .tools_call("fixture", "pid", None, CALL_WAIT)
        .await
        .expect_err("still disabled");
    assert_eq!(code(&error), Some(ErrorCode::ToolNotAvailable), "{error}");
    assert!(error.to_string().contains("disabled by the config"), "{error}");

    // Two changes at once: however the re-listings overlap, the last listing has both.
    let (second, third) = tokio::join!(
        client.tools_call("fixture", "add_tool", arguments(json!({"name": "second"})), CALL_WAIT),
        client.tools_call("fixture", "add_tool", arguments(json!({"name": "third"})), CALL_WAIT),
    );
    second.expect("tools/call add_tool second");
    third.expect("tools/call add_tool third");
    tools_changed_to(&mut notifications, "fixture", 6).await;
    let names = tool_names(&client, "fixture").await;
    assert_eq!(names.len(), 6, "{names:?}");
    assert_eq!(names[..4], ["echo", "sleep", "add_tool", "first"]);
    assert!(
        names.contains(&"second".to_owned()) && names.contains(&"third".to_owned()),
        "{names:?}"
    );
    let status = client.mcp_server_get("fixture").await.expect("mcpServer/get");
    assert_eq!(status.server.tool_count, Some(6));
}

/// Send the request `text` (one line) on `connection` and return the response to `id`.
async fn raw_request(connection: &mut corral_tests::RawConnection, text: &str, id: u64) -> Value {
    connection.send_raw(format!("{text}\n").as_bytes()).await;
    connection.response_to(&json!(id)).await
}

#[tokio::test]
async fn a_calls_params_are_taken_and_refused_alike_whether_they_come_before_or_after_its_method() {
    let (daemon, _client) = ready_daemon(&everything_config("everything"), &["everything"]).await;
    let mut corral = daemon.raw_line_connection().await;
    corral.initialize().await;
    let mut id = 100;
    let mut both_orders = async |params: &str| {
        id += 2;
        let after = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{params}}}"#);
        let before = format!(
            r#"{{"params":{params},"id":{},"jsonrpc":"2.0","method":"tools/call"}}"#,
            id + 1
        );
        let after = raw_request(&mut corral, &after, id).await;
        let before = raw_request(&mut corral, &before, id + 1).await;
        assert_eq!(after.get("result"), before.get("result"), "{params}");
        assert_eq!(after.get("error"), before.get("error"), "{params}");
        after
    };

    // Taken: plain, escaped names, `null` arguments, `_meta`.
    for (params, text) in [
        (
            r#"{"server":"everything","name":"echo","arguments":{"message":"a"}}"#,
            "Echo: a",
        ),
        (
            r#"{"arguments":{"message":"b\n"},"name":"e\u0063ho","server":"every\u0074hing","_meta":{"k":1}}"#,
            "Echo: b\n",
        ),
    ] {
        let answer = both_orders(params).await;
        assert_eq!(answer["result"]["content"][0]["text"], text, "{answer}");
    }
    // `null` arguments are none: the server's own refusal of a call without its `message`.
    let answer = both_orders(r#"{"server":"everything","name":"echo","arguments":null}"#).await;
    assert_eq!(answer["result"]["isError"], true, "{answer}");

    // Refused, with the same words, naming what is wrong.
    for (params, words) in [
        (r#"{"name":"echo"}"#, "missing field `server`"),
        (
            r#"{"server":"everything","name":"echo","bogus":1}"#,
            "unknown field `bogus`",
        ),
        (r#"{"server":"everything","name":"echo","arguments":[1]}"#, "arguments"),
        (
            r#"{"server":"everything","name":"echo","name":"echo"}"#,
            "duplicate field `name`",
        ),
        (r#"{"server":null,"name":"echo"}"#, "server"),
    ] {
        let answer = both_orders(params).await;
        assert_eq!(corral_tests::error_code(&answer), -32602, "{params}: {answer}");
        let message = corral_tests::error_message(&answer);
        assert!(
            message.contains("invalid params for `tools/call`") && message.contains(words),
            "{params}: {message}"
        );
    }

    // The bridge (MCP on the same socket) takes a call's params in either order too, ignoring
    // members it does not know (`server` among them).
    let mut mcp = daemon.raw_line_connection().await;
    let initialize = raw_request(
        &mut mcp,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#,
        1,
    )
    .await;
    assert!(initialize.get("result").is_some(), "{initialize}");
    mcp.send_raw(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .await;
    let params = r#"{"name":"everything__echo","arguments":{"message":"c"},"server":"x","task":{"ttl":1}}"#;
    for (text, id) in [
        (
            format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{params}}}"#),
            2,
        ),
        (
            format!(r#"{{"params":{params},"jsonrpc":"2.0","id":3,"method":"tools/call"}}"#),
            3,
        ),
    ] {
        let answer = raw_request(&mut mcp, &text, id).await;
        assert_eq!(answer["result"]["content"][0]["text"], "Echo: c", "{answer}");
    }
}

#[tokio::test]
async fn arguments_written_over_several_lines_reach_a_stdio_server_whole() {
    let (daemon, _client) = ready_daemon(&everything_config("everything"), &["everything"]).await;
    // A Content-Length frame may hold a request written over several lines; a stdio
    // server's wire is one message a line.
    let mut editor = daemon.raw_content_length_connection().await;
    editor.initialize().await;
    let request = "{\r\n  \"jsonrpc\": \"2.0\",\n  \"id\": 7,\n  \"method\": \"tools/call\",\n  \"params\": {\n    \"server\": \"everything\",\n    \"name\": \"echo\",\n    \"arguments\": {\n      \"message\": \"two\\nlines\"\n    }\n  }\n}";
    editor
        .send_raw(&corral_tests::WireFraming::ContentLength.encode(request.as_bytes()))
        .await;
    let answer = editor.response_to(&json!(7)).await;
    assert_eq!(answer["result"]["content"][0]["text"], "Echo: two\nlines", "{answer}");
}
