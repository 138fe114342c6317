//! MCP clients on the socket, in-process: the first `initialize` decides the
//! connection's mode (a string `protocolVersion` is MCP), an MCP connection
//! answers MCP's methods only and never gets Corral's notifications, and a
//! Corral connection stays Corral's; a server's request reaches an MCP
//! client that declared it in MCP's words, the client's answer comes back
//! through the connection, and one it does not answer in time is withdrawn
//! with MCP's `notifications/cancelled`. Real MCP clients through `corral
//! mcp` and real servers are the end-to-end suite's
//! (`tests/tests/e2e/bridge.rs`).

use std::time::Duration;

use corral_tests::{RawConnection, RecvError, emit_test_events, error_code, error_message};
use serde_json::{Value, json};

use super::InProcessDaemon;
use crate::hub::link::FrontEndError;
use crate::hub::routes::{Caller, Capability, ElicitationMode};

/// MCP `initialize` params, as the TypeScript SDK sends them.
fn mcp_initialize(version: &str) -> Value {
    json!({
        "protocolVersion": version,
        "capabilities": {},
        "clientInfo": {"name": "in-process-mcp-client", "version": "1.0.0"},
    })
}

const CONFIG: &str = "[servers.off]\ncommand = \"true\"\nenabled = false\n";

async fn mcp_connection(daemon: &mut InProcessDaemon) -> RawConnection {
    let mut connection = daemon.line_connection();
    let result = connection.call("initialize", mcp_initialize("2025-06-18")).await;
    assert_eq!(result["protocolVersion"], "2025-06-18", "{result}");
    connection
}

#[tokio::test]
async fn a_string_protocol_version_makes_an_mcp_connection() {
    let mut daemon = InProcessDaemon::start_with_config(Some(CONFIG)).await;
    let mut connection = daemon.line_connection();
    let early = connection.request("tools/list", json!({})).await;
    assert_eq!(error_code(&early), -32002, "initialize first: {early}");

    let result = connection.call("initialize", mcp_initialize("2025-06-18")).await;
    assert_eq!(result["protocolVersion"], "2025-06-18", "{result}");
    assert_eq!(result["serverInfo"]["name"], "corral", "{result}");
    assert_eq!(result["serverInfo"]["version"], env!("CARGO_PKG_VERSION"), "{result}");
    assert_eq!(
        result["capabilities"]["tools"],
        json!({"listChanged": true}),
        "{result}"
    );
    assert!(
        result["instructions"]
            .as_str()
            .is_some_and(|text| text.contains("server__tool")),
        "{result}"
    );
    assert!(result.get("daemonInfo").is_none(), "not Corral's answer: {result}");

    connection
        .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    assert_eq!(connection.call("ping", json!({})).await, json!({}));
    assert_eq!(
        connection.call("logging/setLevel", json!({"level": "debug"})).await,
        json!({})
    );
    let no_level = connection.request("logging/setLevel", json!({})).await;
    assert_eq!(error_code(&no_level), -32602, "{no_level}");
    assert_eq!(
        connection.call("tools/list", json!({})).await,
        json!({"tools": []}),
        "nothing is ready"
    );

    // Corral's methods are not in an MCP connection's table.
    let status = connection.request("daemon/status", json!({})).await;
    assert_eq!(error_code(&status), -32601, "{status}");
    let again = connection.request("initialize", mcp_initialize("2025-06-18")).await;
    assert_eq!(error_code(&again), -32003, "{again}");
    let corral_again = connection
        .request("initialize", corral_tests::initialize_params(1))
        .await;
    assert_eq!(
        error_code(&corral_again),
        -32003,
        "the mode is for life: {corral_again}"
    );
}

#[tokio::test]
async fn the_version_is_negotiated() {
    let mut daemon = InProcessDaemon::start().await;
    for (asked, answered) in [
        ("2024-11-05", "2024-11-05"),
        ("2025-03-26", "2025-03-26"),
        ("2025-11-25", "2025-11-25"),
        ("1999-01-01", "2025-11-25"),
    ] {
        let mut connection = daemon.line_connection();
        let result = connection.call("initialize", mcp_initialize(asked)).await;
        assert_eq!(result["protocolVersion"], answered, "asked {asked}: {result}");
    }
}

#[tokio::test]
async fn an_mcp_client_never_gets_corrals_notifications() {
    let mut daemon = InProcessDaemon::start().await;
    let emitter = daemon.connect_client().await;
    let mut connection = mcp_connection(&mut daemon).await;
    assert_eq!(emit_test_events(&emitter, 5, "not-for-mcp").await, 5);
    match connection.try_recv(std::time::Duration::from_millis(300)).await {
        Err(RecvError::Timeout) => {}
        other => panic!("an MCP client got something it did not ask for: {other:?}"),
    }
    // The next message is the answer: nothing was queued before it.
    connection
        .send(&json!({"jsonrpc": "2.0", "id": "p", "method": "ping"}))
        .await;
    let answer = connection.recv().await;
    assert_eq!(answer, json!({"jsonrpc": "2.0", "id": "p", "result": {}}));
}

#[tokio::test]
async fn calls_of_unknown_tools_and_of_servers_that_are_not_ready() {
    let mut daemon = InProcessDaemon::start_with_config(Some(CONFIG)).await;
    let mut connection = mcp_connection(&mut daemon).await;

    let unknown = connection
        .request("tools/call", json!({"name": "nobody__echo", "arguments": {}}))
        .await;
    assert_eq!(error_code(&unknown), -32602, "{unknown}");
    assert!(
        error_message(&unknown).contains("unknown tool `nobody__echo`"),
        "{unknown}"
    );

    let stopped = connection
        .call(
            "tools/call",
            json!({"name": "off__echo", "arguments": {"message": "hi"}}),
        )
        .await;
    assert_eq!(stopped["isError"], true, "{stopped}");
    assert_eq!(
        stopped["content"],
        json!([{"type": "text", "text": "MCP server `off` is not ready (stopped). To fix: start it with `corral start off`"}]),
        "{stopped}"
    );

    let no_name = connection.request("tools/call", json!({"arguments": {}})).await;
    assert_eq!(error_code(&no_name), -32602, "{no_name}");
    assert!(error_message(&no_name).contains("name"), "{no_name}");
    let cursor = connection.request("tools/list", json!({"cursor": "x"})).await;
    assert_eq!(error_code(&cursor), -32602, "{cursor}");
}

#[tokio::test]
async fn batches_work_in_mcp_mode_too() {
    let mut daemon = InProcessDaemon::start().await;
    let mut connection = mcp_connection(&mut daemon).await;
    connection
        .send(&json!([
            {"jsonrpc": "2.0", "id": 1, "method": "ping"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
        ]))
        .await;
    let answers = connection.recv().await;
    assert_eq!(
        answers,
        json!([
            {"jsonrpc": "2.0", "id": 1, "result": {}},
            {"jsonrpc": "2.0", "id": 2, "result": {"tools": []}},
        ])
    );
}

#[tokio::test]
async fn an_integer_protocol_version_keeps_corrals_protocol() {
    let mut daemon = InProcessDaemon::start().await;
    let mut corral = daemon.line_connection();
    let result = corral.initialize().await;
    assert!(result.get("daemonInfo").is_some(), "{result}");
    let status = corral.call("daemon/status", json!({})).await;
    assert!(
        status["daemonInfo"].is_object() && status["uptimeMs"].is_u64(),
        "{status}"
    );
    // Corral's `tools/list`, not MCP's.
    let tools = corral.call("tools/list", json!({})).await;
    assert!(tools.get("notReady").is_some(), "{tools}");
}

#[tokio::test]
async fn a_servers_request_reaches_an_mcp_client_in_mcps_words_and_is_withdrawn_in_them() {
    let mut daemon = InProcessDaemon::start().await;
    let routes = daemon.context.hub.routes.clone();
    // The daemon's first connection: id 1.
    let mut connection = daemon.line_connection();
    let mut initialize = mcp_initialize("2025-11-25");
    initialize["capabilities"] = json!({"elicitation": {}, "sampling": {}});
    connection.call("initialize", initialize).await;
    connection
        .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    // A call of this client's to `everything` runs: its requests go to this client.
    let _call = routes.call_started("everything", 1);
    let form = Capability::Elicitation(ElicitationMode::Form);
    let link = match routes.caller("everything", form) {
        Caller::One(link) => link,
        Caller::Declined(reason) => panic!("the client declared elicitation: {reason}"),
    };
    match routes.caller("everything", Capability::Elicitation(ElicitationMode::Url)) {
        Caller::Declined(reason) => assert!(reason.contains("form mode only"), "{reason}"),
        Caller::One(_) => panic!("`elicitation: {{}}` is form mode only"),
    }

    // Answered: MCP's own request with the server's params, and the
    // client's response comes back through the connection as it gave it.
    let params = json!({"mode": "form", "message": "Your name?",
                        "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}});
    let asking = {
        let (link, params, deadline) = (link.clone(), params.clone(), routes.answer_deadline());
        tokio::spawn(async move { link.ask("everything", form, params, deadline).await })
    };
    let request = connection.recv().await;
    assert_eq!(
        request,
        json!({"jsonrpc": "2.0", "id": request["id"], "method": "elicitation/create", "params": params})
    );
    let answer = json!({"action": "accept", "content": {"name": "Ada"}, "_meta": {"x": 1}});
    connection
        .send(&json!({"jsonrpc": "2.0", "id": request["id"], "result": answer}))
        .await;
    assert_eq!(asking.await.expect("joined").expect("answered"), answer);

    // Not answered within the deadline: withdrawn with MCP's notification.
    routes.set_answer_deadline(Duration::from_millis(300));
    let asking = {
        let (link, deadline) = (link.clone(), routes.answer_deadline());
        tokio::spawn(async move {
            link.ask("everything", Capability::Sampling, json!({"maxTokens": 9}), deadline)
                .await
        })
    };
    let request = connection.recv().await;
    assert_eq!(request["method"], "sampling/createMessage", "{request}");
    assert_eq!(request["params"], json!({"maxTokens": 9}), "{request}");
    let withdrawn = connection.recv().await;
    assert_eq!(
        withdrawn,
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {
            "requestId": request["id"],
            "reason": "corral withdrew this request: no answer within 0.3s (corrald --elicitation-timeout-sec)"}})
    );
    assert!(matches!(
        asking.await.expect("joined"),
        Err(FrontEndError::Unanswered(deadline)) if deadline == Duration::from_millis(300)
    ));
    // A late answer is ignored; the connection goes on.
    connection
        .send(&json!({"jsonrpc": "2.0", "id": request["id"], "result": {"role": "assistant"}}))
        .await;
    assert_eq!(connection.call("ping", json!({})).await, json!({}));
}

#[tokio::test]
async fn an_mcp_client_that_declared_nothing_is_not_asked() {
    let mut daemon = InProcessDaemon::start().await;
    let routes = daemon.context.hub.routes.clone();
    let _connection = mcp_connection(&mut daemon).await;
    let _call = routes.call_started("everything", 1);
    for (capability, declare) in [
        (
            Capability::Elicitation(ElicitationMode::Form),
            "`capabilities.elicitation`",
        ),
        (
            Capability::Elicitation(ElicitationMode::Url),
            "`capabilities.elicitation`",
        ),
        (Capability::Sampling, "`capabilities.sampling`"),
    ] {
        match routes.caller("everything", capability) {
            Caller::Declined(reason) => assert!(reason.contains(declare), "{reason}"),
            Caller::One(_) => panic!("{capability:?} was not declared"),
        }
    }
}
