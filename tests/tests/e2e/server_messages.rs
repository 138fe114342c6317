//! MCP that Corral does not model, passed through (`mcpServer/request`, `mcpServer/notify`,
//! `mcpServer/notification`), and request-scoped HTTP headers, against real servers:
//! server-everything (`completion/complete`, `logging/setLevel`), the fixture with
//! `--custom-methods` (a custom request answered after a custom notification, and a custom
//! notification it answers with another), and the HTTP fixture, which records every request's
//! headers.
//!
//! Checked: the server's answer comes back untouched and its error as a `serverError` naming
//! the server; what Corral runs itself, and methods of undeclared capabilities, are
//! `notPermitted` with the reason; a server's custom notifications reach front-ends naming it.
//! Request-scoped headers go on the one request they came with (the call, a listing asked of
//! the server then), on no other, never into corrald's log even at `trace`, and are refused
//! for a stdio server, for credentials and transport headers, and when they do not name one
//! server.

use std::time::Duration;

use corral_client::protocol::{
    ErrorCode, ListParams, ResourcesList, ServerStatus, ToolsCall, ToolsCallParams, ToolsList, ToolsListParams,
};
use corral_client::{Client, ClientError, ClientNotification, Notifications};
use corral_tests::{
    SERVER_WAIT, TestDaemon, everything_config, fixture_config, free_loopback_port, http_fixture, loopback_mcp_url,
    recorded_requests, scratch_dir, toml_string, wait_for_status,
};
use serde_json::{Value, json};

use crate::bridge::wait_for_stderr_line;
use crate::http::assert_not_logged;
use crate::server_requests::{front_end, is_response, read_until, send_request};

const WAIT: Duration = Duration::from_secs(20);

/// The error's code, message and data.
fn rpc_error(error: &ClientError) -> (Option<ErrorCode>, String, Value) {
    match error {
        ClientError::Rpc { message, data, .. } => {
            (error.error_code(), message.clone(), data.clone().unwrap_or_default())
        }
        other => panic!("expected an RPC error, got {other:?}"),
    }
}

/// The next `mcpServer/notification` on `notifications`, within [`WAIT`].
async fn next_server_notification(notifications: &mut Notifications) -> corral_client::protocol::ServerNotification {
    tokio::time::timeout(WAIT, async {
        loop {
            match notifications.next().await {
                Some(Ok(ClientNotification::Daemon(
                    corral_client::protocol::DaemonNotification::ServerNotification(sent),
                ))) => return sent,
                Some(_) => {}
                None => panic!("notification stream ended"),
            }
        }
    })
    .await
    .expect("an mcpServer/notification in time")
}

async fn daemon_with(config: &str, servers: &[&str]) -> (TestDaemon, Client) {
    let daemon = TestDaemon::start_with_config(config);
    let client = daemon.connect_client().await;
    for server in servers {
        wait_for_status(&client, server, ServerStatus::Ready, SERVER_WAIT).await;
    }
    (daemon, client)
}

#[tokio::test]
async fn completion_and_log_level_pass_through_to_server_everything_and_corrals_own_methods_do_not() {
    let config = format!("{}{}", everything_config("everything"), fixture_config("plain", &[]));
    let (_daemon, client) = daemon_with(&config, &["everything", "plain"]).await;

    let completion = client
        .mcp_server_request(
            "everything",
            "completion/complete",
            Some(json!({
                "ref": { "type": "ref/prompt", "name": "completable-prompt" },
                "argument": { "name": "department", "value": "En" }
            })),
        )
        .await
        .expect("completion/complete");
    assert_eq!(
        completion["completion"]["values"],
        json!(["Engineering"]),
        "{completion}"
    );

    let set = client
        .mcp_server_request("everything", "logging/setLevel", Some(json!({ "level": "error" })))
        .await
        .expect("logging/setLevel");
    assert_eq!(set, json!({}));

    // The server's own error, as a serverError naming it, its error in `data`.
    let error = client
        .mcp_server_request("everything", "no/such-method", None)
        .await
        .expect_err("unknown to the server");
    let (code, message, data) = rpc_error(&error);
    assert_eq!(code, Some(ErrorCode::ServerError), "{message}");
    assert!(message.contains("MCP server `everything`"), "{message}");
    assert_eq!(data["code"], -32601, "{data}");

    // What Corral runs itself.
    for method in ["initialize", "tools/call", "resources/subscribe", "tasks/cancel"] {
        let error = client
            .mcp_server_request("everything", method, Some(json!({})))
            .await
            .expect_err(method);
        let (code, message, data) = rpc_error(&error);
        assert_eq!(code, Some(ErrorCode::NotPermitted), "{method}: {message}");
        assert!(
            message.contains(&format!("`{method}` is not passed through to MCP server `everything`")),
            "{message}"
        );
        assert_eq!(data["method"], method);
    }
    for method in ["notifications/cancelled", "notifications/initialized"] {
        let error = client
            .mcp_server_notify("everything", method, Some(json!({ "requestId": 1 })))
            .await
            .expect_err(method);
        assert_eq!(rpc_error(&error).0, Some(ErrorCode::NotPermitted), "{method}");
    }

    // A capability the server did not declare (the Python SDK's server declares neither).
    for (method, capability) in [("completion/complete", "completions"), ("logging/setLevel", "logging")] {
        let error = client
            .mcp_server_request("plain", method, Some(json!({})))
            .await
            .expect_err(method);
        let (code, message, data) = rpc_error(&error);
        assert_eq!(code, Some(ErrorCode::NotPermitted), "{message}");
        assert!(message.contains(&format!("`{capability}` capability")), "{message}");
        assert_eq!(data["capability"], capability);
    }
    let error = client
        .mcp_server_request("nobody", "ping", None)
        .await
        .expect_err("no such server");
    assert_eq!(rpc_error(&error).0, Some(ErrorCode::ServerNotFound));
}

#[tokio::test]
async fn custom_requests_and_notifications_go_both_ways() {
    let (_daemon, mut client) = daemon_with(&fixture_config("plain", &["--custom-methods"]), &["plain"]).await;
    let mut notifications = client.take_notifications().expect("notification stream");

    // The server's answer as it wrote it (a null member, a float), `_meta` left out of the params.
    let answer = client
        .mcp_server_request(
            "plain",
            "fixture/echo",
            Some(json!({ "a": 1, "b": [true, "x"], "_meta": { "progressToken": "p-1" } })),
        )
        .await
        .expect("a custom request");
    assert_eq!(
        answer,
        json!({ "echoed": { "a": 1, "b": [true, "x"] }, "kept": { "n": 2.5, "list": [1, "two"], "none": null } })
    );
    let event = next_server_notification(&mut notifications).await;
    assert_eq!(
        (event.server.as_str(), event.method.as_str()),
        ("plain", "fixture/event")
    );
    assert_eq!(
        event.params,
        Some(json!({ "about": "fixture/echo", "params": { "a": 1, "b": [true, "x"] } }))
    );

    client
        .mcp_server_notify("plain", "fixture/poke", Some(json!({ "n": 7 })))
        .await
        .expect("a custom notification");
    let poked = next_server_notification(&mut notifications).await;
    assert_eq!(poked.method, "fixture/poked");
    assert_eq!(poked.params, Some(json!({ "n": 7 })));

    // Kept for replay like every daemon notification.
    let replay = client.events_replay(0).await.expect("events/replay");
    assert!(
        replay
            .notifications
            .iter()
            .any(|notification| notification.method() == "mcpServer/notification"),
        "{replay:?}"
    );
}

#[tokio::test]
async fn a_passthrough_requests_question_goes_to_its_own_front_end_only() {
    let (daemon, client) = daemon_with(&fixture_config("plain", &["--custom-methods"]), &["plain"]).await;
    let ask = |id: u64| {
        (
            id,
            "mcpServer/request",
            json!({"server": "plain", "method": "fixture/ask", "params": {"question": "yours?"}}),
        )
    };
    let is_question =
        |message: &Value| message["method"] == "mcpServer/elicitation/request" && message.get("id").is_some();

    // Another front-end, which could answer, has a call running on the same server: the
    // question is not shown to it. The server does not say which request asks (stdio), so
    // corrald cannot tell whose it is and declines.
    let mut busy = front_end(&daemon, "busy", json!({"elicitation": true})).await;
    let sleeping = send_request(
        &mut busy,
        1,
        "tools/call",
        json!({"server": "plain", "name": "sleep", "arguments": {"seconds": 60}}),
    )
    .await;
    wait_for_stderr_line(&client, "plain", "fixture: sleeping 60").await;
    let mut asker = front_end(&daemon, "asker", json!({"elicitation": true})).await;
    let (id, method, params) = ask(1);
    let request = send_request(&mut asker, id, method, params).await;
    let (response, before) = read_until(&mut asker, is_response(&request)).await;
    assert_eq!(response["result"]["action"], "decline", "{response}");
    assert!(!before.iter().any(is_question), "{before:?}");
    busy.send(&json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": sleeping}}))
        .await;
    let (_, before) = read_until(&mut busy, is_response(&sleeping)).await;
    assert!(
        !before.iter().any(is_question),
        "another front-end's question was shown to this one: {before:?}"
    );

    // Alone, the asker is asked, and its answer goes back to the server.
    let (id, method, params) = ask(2);
    let request = send_request(&mut asker, id, method, params).await;
    let (question, _) = read_until(&mut asker, is_question).await;
    assert_eq!(question["params"]["server"], "plain", "{question}");
    assert_eq!(
        question["params"]["request"]["message"], "fixture/ask: yours?",
        "{question}"
    );
    asker
        .send(&json!({
            "jsonrpc": "2.0",
            "id": question["id"],
            "result": {"action": "accept", "content": {"answer": "mine"}},
        }))
        .await;
    let (response, _) = read_until(&mut asker, is_response(&request)).await;
    assert_eq!(
        response["result"],
        json!({ "action": "accept", "content": { "answer": "mine" } }),
        "{response}"
    );
}

#[tokio::test]
async fn request_scoped_headers_go_on_their_request_only_and_never_into_the_log() {
    const TENANT: &str = "corral-test-tenant-3c9e1f";
    let scratch = scratch_dir();
    let record = scratch.path().join("requests.jsonl");
    let port = free_loopback_port();
    let _fixture = http_fixture(port, &record, &[]);
    let config = format!(
        "\n[servers.crm]\nurl = {}\n{}",
        toml_string(&loopback_mcp_url(port)),
        fixture_config("plain", &[])
    );
    let daemon = TestDaemon::builder()
        .config(&config)
        // The most a user can ask for: not even trace may log a header's value.
        .env("CORRAL_LOG", "trace")
        .start();
    let client = daemon.connect_client().await;
    for server in ["crm", "plain"] {
        wait_for_status(&client, server, ServerStatus::Ready, SERVER_WAIT).await;
    }
    let headers = || Some([("X-Tenant".to_owned(), TENANT.to_owned())].into());
    let arguments = json!({ "message": "scoped" }).as_object().cloned();

    let result = client
        .request_with_timeout::<ToolsCall>(
            ToolsCallParams::new("crm", "echo", arguments.clone()).with_headers(headers()),
            WAIT,
        )
        .await
        .expect("tools/call with headers");
    assert_eq!(result["content"][0]["text"], "echo: scoped");
    let listing = client
        .request::<ToolsList>(ToolsListParams::server("crm").with_headers(headers()))
        .await
        .expect("tools/list with headers");
    assert!(
        listing.tools.iter().any(|tool| tool.name() == Some("echo")),
        "{listing:?}"
    );
    client
        .tools_call("crm", "echo", arguments.clone(), WAIT)
        .await
        .expect("a call without headers");

    let requests = recorded_requests(&record);
    let carried: Vec<&str> = requests
        .iter()
        .filter(|request| request.headers.get("x-tenant").map(String::as_str) == Some(TENANT))
        .filter_map(|request| request.rpc.as_deref())
        .collect();
    assert_eq!(carried, ["tools/call", "tools/list"], "{requests:?}");
    let calls = requests
        .iter()
        .filter(|request| request.rpc.as_deref() == Some("tools/call"))
        .count();
    assert_eq!(calls, 2, "the call without headers went without them: {requests:?}");

    // Refused: a stdio server, credentials, a transport header, a broken value, no server named.
    let refusals = [
        (
            client
                .request::<ToolsCall>(ToolsCallParams::new("plain", "echo", arguments.clone()).with_headers(headers()))
                .await,
            "MCP server `plain` is a stdio or built-in server",
        ),
        (
            client
                .request::<ToolsCall>(
                    ToolsCallParams::new("crm", "echo", arguments.clone())
                        .with_headers(Some([("Authorization".to_owned(), format!("Bearer {TENANT}"))].into())),
                )
                .await,
            "corrald manages a server's credentials",
        ),
        (
            client
                .request::<ToolsCall>(
                    ToolsCallParams::new("crm", "echo", arguments.clone())
                        .with_headers(Some([("Mcp-Session-Id".to_owned(), "x".to_owned())].into())),
                )
                .await,
            "the MCP transport sets it itself",
        ),
        (
            client
                .request::<ToolsCall>(
                    ToolsCallParams::new("crm", "echo", arguments.clone())
                        .with_headers(Some([("X-Tenant".to_owned(), format!("{TENANT}\r\nX-Evil: 1"))].into())),
                )
                .await,
            "must not contain line breaks",
        ),
        (
            client
                .request::<ResourcesList>(ListParams::all().with_headers(headers()))
                .await
                .map(|_| Value::Null),
            "name it with `server`",
        ),
    ];
    for (answer, words) in refusals {
        let error = answer.expect_err(words);
        let (code, message, _) = rpc_error(&error);
        assert_eq!(code, Some(ErrorCode::InvalidParams), "{message}");
        assert!(message.contains(words), "{message}");
        assert!(!message.contains(TENANT), "a value is never quoted: {message}");
    }
    assert_eq!(
        recorded_requests(&record)
            .iter()
            .filter(|request| request.rpc.as_deref() == Some("tools/call"))
            .count(),
        2,
        "nothing refused was sent"
    );
    assert_not_logged(&daemon, TENANT);
}
