//! The built-in `corral` server: there on a fresh install with no config
//! file, in-process, and reporting the daemon's own state through the same
//! `tools/list` / `tools/call` as every other server.

use std::time::Duration;

use corral_client::protocol::{ServerOrigin, ServerStatus, TransportKind};
use corral_tests::{SERVER_WAIT, TestDaemon, run_corral, wait_for_status};
use serde_json::json;

const CALL_WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_fresh_install_has_the_built_in_server_and_its_tools_work_from_the_cli() {
    // No config file at all.
    let daemon = TestDaemon::builder().builtin_server(true).start();
    let client = daemon.connect_client().await;
    let corral = wait_for_status(&client, "corral", ServerStatus::Ready, SERVER_WAIT).await;
    assert_eq!(corral.origin, ServerOrigin::BuiltIn);
    assert_eq!(corral.transport, TransportKind::BuiltIn);
    assert_eq!(corral.pid, None, "in-process: no child");
    assert_eq!(corral.tool_count, Some(3));

    let tools = run_corral(daemon.socket_path(), &["tools"]).await;
    assert!(tools.status.success(), "{}", tools.stderr);
    for tool in ["list_servers", "server_status", "recent_events"] {
        assert!(
            tools.stdout.contains(tool),
            "`corral tools` lists {tool}:\n{}",
            tools.stdout
        );
    }
    let call = run_corral(daemon.socket_path(), &["call", "corral", "list_servers"]).await;
    assert!(call.status.success(), "{}", call.stderr);
    assert!(call.stdout.contains("corral: ready, 3 tools"), "{}", call.stdout);
}

#[tokio::test]
async fn the_built_in_server_explains_another_servers_failure() {
    let config = "[servers.broken]\ncommand = \"sh\"\nargs = [\"-c\", \"echo 'missing API key' >&2; exit 7\"]\n";
    let daemon = TestDaemon::builder().builtin_server(true).config(config).start();
    let client = daemon.connect_client().await;
    wait_for_status(&client, "corral", ServerStatus::Ready, SERVER_WAIT).await;
    wait_for_status(&client, "broken", ServerStatus::Failed, SERVER_WAIT).await;

    let listing = client
        .tools_call("corral", "list_servers", None, CALL_WAIT)
        .await
        .expect("list_servers");
    let servers = listing["structuredContent"]["servers"]
        .as_array()
        .expect("structured servers");
    let names: Vec<&str> = servers.iter().filter_map(|server| server["name"].as_str()).collect();
    assert_eq!(names, ["broken", "corral"]);
    assert!(
        listing["content"][0]["text"]
            .as_str()
            .is_some_and(|text| text.contains("broken: failed (processExited"))
    );

    let status = client
        .tools_call(
            "corral",
            "server_status",
            json!({"name": "broken"}).as_object().cloned(),
            CALL_WAIT,
        )
        .await
        .expect("server_status");
    let text = status["content"][0]["text"].as_str().expect("text");
    assert!(
        text.contains("exit status: 7") && text.contains("missing API key"),
        "{text}"
    );
    assert_eq!(status["structuredContent"]["server"]["failureReason"], "processExited");

    let events = client
        .tools_call(
            "corral",
            "recent_events",
            json!({"limit": 50}).as_object().cloned(),
            CALL_WAIT,
        )
        .await
        .expect("recent_events");
    let text = events["content"][0]["text"].as_str().expect("text");
    assert!(
        text.contains("\"name\":\"broken\"") && text.contains("\"status\":\"failed\""),
        "{text}"
    );

    let unknown = client
        .tools_call(
            "corral",
            "server_status",
            json!({"name": "nope"}).as_object().cloned(),
            CALL_WAIT,
        )
        .await
        .expect("a tool error is a result");
    assert_eq!(unknown["isError"], true, "{unknown}");
}

#[tokio::test]
async fn the_built_in_server_can_be_turned_off() {
    let daemon = TestDaemon::builder().builtin_server(false).start();
    let client = daemon.connect_client().await;
    let servers = client.mcp_server_list().await.expect("list").servers;
    assert!(servers.is_empty(), "{servers:?}");
}
