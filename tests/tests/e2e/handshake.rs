//! The handshake and every method, through the Rust client SDK against the real daemon.

use corral_client::ClientError;
use corral_client::protocol::{ErrorCode, ServerOrigin, ServerStatus, TransportKind};
use corral_tests::{THREE_DISABLED_SERVERS, TestDaemon, error_code};
use serde_json::json;

#[tokio::test]
async fn initialize_reports_the_protocol_version_and_the_daemon_process() {
    let daemon = TestDaemon::start();
    let client = daemon.connect_client().await;
    let init = client.initialize_result();
    assert_eq!(init.protocol_version, corral_client::protocol::PROTOCOL_VERSION);
    assert_eq!(init.daemon_info.name, "corrald");
    assert_eq!(
        init.daemon_info.pid,
        daemon.pid(),
        "daemonInfo.pid is the child we spawned"
    );
    assert_eq!(init.daemon_info.version, env!("CARGO_PKG_VERSION"));
    assert!(init.connection_id >= 1, "{init:?}");
    assert_eq!(init.last_seq, 0, "no notification was published yet");
    assert_eq!(init.replay_capacity, 1024);

    let second = daemon.connect_client().await;
    assert_ne!(
        second.initialize_result().connection_id,
        init.connection_id,
        "every connection gets its own id"
    );
}

#[tokio::test]
async fn daemon_status_reports_paths_counts_and_connections() {
    let daemon = TestDaemon::start_with_config(THREE_DISABLED_SERVERS);
    let client = daemon.connect_client().await;
    // The readiness probe's connection may still be counted for a moment.
    daemon.wait_for_connections(&client, 1).await;
    let status = client.daemon_status().await.expect("daemon/status");
    assert_eq!(status.daemon_info.pid, daemon.pid());
    assert_eq!(status.socket_path, daemon.socket_path().display().to_string());
    assert_eq!(status.config_path, daemon.config_path().display().to_string());
    assert!(status.config_file_exists);
    assert_eq!(status.config_error, None);
    assert_eq!(status.servers.total, 3);
    assert_eq!(
        status.servers.stopped, 3,
        "disabled servers are never launched: {:?}",
        status.servers
    );
    assert_eq!(
        (
            status.servers.starting,
            status.servers.ready,
            status.servers.failed,
            status.servers.cancelled
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(status.connections, 1);
    assert_eq!(status.last_seq, 0);
    assert!(
        status.uptime_ms < 600_000,
        "uptime of a daemon started just now: {}",
        status.uptime_ms
    );

    let other = daemon.connect_client().await;
    daemon.wait_for_connections(&client, 2).await;
    drop(other);
    daemon.wait_for_connections(&client, 1).await;
}

#[tokio::test]
async fn daemon_status_without_a_config_file() {
    let daemon = TestDaemon::start();
    let client = daemon.connect_client().await;
    let status = client.daemon_status().await.expect("daemon/status");
    assert!(!daemon.config_path().exists());
    assert!(!status.config_file_exists);
    assert_eq!(status.config_error, None, "a missing config file is not an error");
    assert_eq!(status.servers.total, 0);
    assert!(client.mcp_server_list().await.expect("list").servers.is_empty());
}

#[tokio::test]
async fn list_and_get_show_config_servers_sorted_and_stopped() {
    let daemon = TestDaemon::start_with_config(THREE_DISABLED_SERVERS);
    let client = daemon.connect_client().await;
    let servers = client.mcp_server_list().await.expect("mcpServer/list").servers;
    let names: Vec<&str> = servers.iter().map(|server| server.name.as_str()).collect();
    assert_eq!(names, ["alpha-http", "middle-disabled", "zeta-stdio"]);

    let expected = [
        ("alpha-http", TransportKind::StreamableHttp, false),
        ("middle-disabled", TransportKind::Stdio, false),
        ("zeta-stdio", TransportKind::Stdio, false),
    ];
    for (server, (name, transport, enabled)) in servers.iter().zip(expected) {
        assert_eq!(server.name, name);
        assert_eq!(server.transport, transport, "{name}");
        assert_eq!(server.enabled, enabled, "{name}");
        assert_eq!(server.origin, ServerOrigin::Config, "{name}");
        assert_eq!(server.status, ServerStatus::Stopped, "{name} is disabled");
        assert_eq!(server.failure_reason, None, "{name}");
        assert_eq!(server.error, None, "{name}");
        assert_eq!(server.pid, None, "{name}");
        assert_eq!(server.restart_count, 0, "{name}");
        assert_eq!(server.tool_count, None, "{name}");
        assert_eq!(server.server_info, None, "{name}");
        assert_eq!(server.uptime_ms, None, "{name}");

        let got = client.mcp_server_get(name).await.expect("mcpServer/get").server;
        assert_eq!(&got, server, "mcpServer/get {name} agrees with mcpServer/list");
    }
}

#[tokio::test]
async fn get_of_an_unknown_server_is_server_not_found() {
    let daemon = TestDaemon::start_with_config(THREE_DISABLED_SERVERS);
    let client = daemon.connect_client().await;
    let error = client
        .mcp_server_get("no-such-server")
        .await
        .expect_err("an unknown name is an error");
    match &error {
        ClientError::Rpc {
            method, code, message, ..
        } => {
            assert_eq!(method, "mcpServer/get");
            assert_eq!(*code, -32001);
            assert!(message.contains("no-such-server"), "{message}");
        }
        other => panic!("expected ClientError::Rpc, got {other:?}"),
    }
    assert_eq!(error.error_code(), Some(ErrorCode::ServerNotFound));
    // The connection is still usable after an error.
    assert_eq!(client.mcp_server_list().await.expect("list").servers.len(), 3);
}

#[tokio::test]
async fn test_hooks_exist_only_when_asked_for() {
    let daemon = TestDaemon::builder().test_hooks(false).start();
    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;
    let response = connection.request("debug/emitTestEvents", json!({"count": 1})).await;
    assert_eq!(error_code(&response), -32601, "{response}");

    let daemon = TestDaemon::start();
    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;
    let result = connection.call("debug/emitTestEvents", json!({"count": 2})).await;
    assert_eq!(result["lastSeq"], 2);
}

#[tokio::test]
async fn a_handler_that_panics_fails_its_request_only() {
    let daemon = TestDaemon::start();
    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;
    // Both in flight at once on one connection: the panic is the first one's only.
    connection
        .send(&json!({"jsonrpc": "2.0", "id": 101, "method": "debug/panic", "params": {}}))
        .await;
    connection
        .send(&json!({"jsonrpc": "2.0", "id": 102, "method": "debug/emitTestEvents", "params": {"count": 1}}))
        .await;
    // In either order, with the test event's notification among them.
    let mut answers = std::collections::HashMap::new();
    for _ in 0..8 {
        let message = connection.recv().await;
        if let Some(id) = message.get("id").and_then(serde_json::Value::as_u64) {
            answers.insert(id, message);
        }
        if answers.len() == 2 {
            break;
        }
    }
    let panicked = &answers[&101];
    assert_eq!(error_code(panicked), -32603, "{panicked}");
    let message = panicked["error"]["message"].as_str().expect("a message");
    assert!(message.contains("`debug/panic`"), "{message}");
    let other = &answers[&102];
    assert_eq!(other["result"]["lastSeq"], 1, "{other}");
    // The connection and the daemon go on.
    let result = connection.call("debug/emitTestEvents", json!({"count": 1})).await;
    assert_eq!(result["lastSeq"], 2);
    let mut other_connection = daemon.raw_line_connection().await;
    other_connection.initialize().await;
}
