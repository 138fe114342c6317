//! The client against a scripted fake daemon on an in-memory pipe or a real
//! Unix socket: handshake order, typed results, error mapping, notification
//! delivery, overflow and disconnects. The real daemon is exercised by the
//! workspace's `tests/` crate.

use std::time::Duration;

use corral_protocol::error::UpgradeSide;
use corral_protocol::{DaemonNotification, ErrorCode, ServerStatus};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::{Client, ClientError, ClientNotification, ConnectOptions, NotificationsEnd};

/// Upper bound for every wait in these tests; reaching it is a failure.
const WAIT: Duration = Duration::from_secs(10);

fn example(name: &str) -> Value {
    let path = format!("{}/../protocol/examples/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("parse {path}: {error}"))
}

/// The daemon's end of a connection, driven line by line by a test.
struct FakeDaemon {
    lines: tokio::io::Lines<BufReader<Box<dyn tokio::io::AsyncRead + Send + Unpin>>>,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
}

impl FakeDaemon {
    fn new<S>(stream: S) -> Self
    where
        S: tokio::io::AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        let reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = Box::new(reader);
        Self {
            lines: BufReader::new(reader).lines(),
            writer: Box::new(writer),
        }
    }

    async fn next_request(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("client sent nothing in time")
            .expect("read from client")
            .expect("client closed the connection");
        serde_json::from_str(&line).expect("client sent valid JSON")
    }

    async fn send(&mut self, message: Value) {
        let mut line = serde_json::to_vec(&message).expect("serialize");
        line.push(b'\n');
        self.writer.write_all(&line).await.expect("write to client");
    }

    async fn answer(&mut self, request: &Value, result: Value) {
        self.send(json!({"jsonrpc": "2.0", "id": request["id"], "result": result}))
            .await;
    }

    /// Answer with the `result` or `error` of a committed protocol example.
    async fn answer_with_example(&mut self, request: &Value, name: &str) {
        let mut response = example(name);
        response["id"] = request["id"].clone();
        self.send(response).await;
    }

    /// Read `initialize` and answer it like the protocol example.
    async fn accept_initialize(&mut self) -> Value {
        let request = self.next_request().await;
        assert_eq!(request["method"], "initialize", "first request must be initialize");
        self.answer_with_example(&request, "initialize.response").await;
        request
    }
}

fn status_update(seq: u64, name: &str, status: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "mcpServer/startupStatus/updated",
        "params": {"seq": seq, "name": name, "status": status, "error": null, "failureReason": null},
    })
}

fn options() -> ConnectOptions {
    ConnectOptions::new("corral-client-tests", "0.0.0").with_connect_timeout(WAIT)
}

/// A client connected to a fake daemon whose `initialize` answer is the protocol example.
async fn connected() -> (Client, FakeDaemon) {
    let (client_end, daemon_end) = tokio::io::duplex(64 * 1024);
    let mut daemon = FakeDaemon::new(daemon_end);
    let (client, _) = tokio::join!(
        Client::connect_with_stream(client_end, options()),
        daemon.accept_initialize()
    );
    (client.expect("initialize succeeds"), daemon)
}

async fn next_notification(
    notifications: &mut crate::Notifications,
) -> Option<Result<ClientNotification, ClientError>> {
    tokio::time::timeout(WAIT, notifications.next())
        .await
        .expect("notification stream made no progress in time")
}

#[tokio::test]
async fn initialize_goes_first_and_early_notifications_are_kept() {
    let (client_end, daemon_end) = tokio::io::duplex(64 * 1024);
    let mut daemon = FakeDaemon::new(daemon_end);
    let script = async {
        let request = daemon.next_request().await;
        assert_eq!(request["method"], "initialize");
        assert_eq!(request["params"]["protocolVersion"], corral_protocol::PROTOCOL_VERSION);
        assert_eq!(request["params"]["clientInfo"]["name"], "corral-client-tests");
        assert_eq!(request["params"]["clientInfo"]["version"], "0.0.0");
        // Even a push that arrives before the answer must not be lost: the
        // client registers for notifications before it sends `initialize`.
        daemon.send(status_update(17, "filesystem", "starting")).await;
        daemon.answer_with_example(&request, "initialize.response").await;
        daemon.send(example("events-lagged.notification")).await;
    };
    let (client, ()) = tokio::join!(Client::connect_with_stream(client_end, options()), script);
    let mut client = client.expect("initialize succeeds");

    let init = client.initialize_result();
    assert_eq!(init.connection_id, 7);
    assert_eq!(init.last_seq, 16);
    assert_eq!(init.daemon_info.pid, 4242);

    let mut notifications = client.take_notifications().expect("first take");
    assert!(client.take_notifications().is_none(), "notifications are taken once");
    let mut received = Vec::new();
    for _ in 0..2 {
        received.push(
            next_notification(&mut notifications)
                .await
                .expect("open")
                .expect("decodes"),
        );
    }
    received.sort_by_key(|notification| notification.seq());
    match &received[..] {
        [
            ClientNotification::Lagged(lagged),
            ClientNotification::Daemon(DaemonNotification::StartupStatusUpdated(update)),
        ] => {
            assert_eq!(
                (lagged.missed, lagged.first_missed_seq, lagged.last_missed_seq),
                (250, 1001, 1250)
            );
            assert_eq!(
                (update.seq, update.name.as_str(), update.status),
                (17, "filesystem", ServerStatus::Starting)
            );
        }
        other => panic!("unexpected notifications {other:?}"),
    }
}

#[tokio::test]
async fn typed_requests_decode_protocol_examples() {
    let (client, mut daemon) = connected().await;
    let script = async {
        for example_name in [
            "daemon-status.response",
            "mcp-server-list.response",
            "events-replay.response",
        ] {
            let request = daemon.next_request().await;
            daemon.answer_with_example(&request, example_name).await;
        }
        let get = daemon.next_request().await;
        assert_eq!(get["method"], "mcpServer/get");
        assert_eq!(get["params"], json!({"name": "filesystem"}));
        daemon.answer_with_example(&get, "mcp-server-get.response").await;
        daemon
    };
    let requests = async {
        let status = client.daemon_status().await.expect("daemon/status");
        let list = client.mcp_server_list().await.expect("mcpServer/list");
        let replay = client.events_replay(16).await.expect("events/replay");
        let get = client.mcp_server_get("filesystem").await.expect("mcpServer/get");
        (status, list, replay, get)
    };
    let (_daemon, (status, list, replay, get)) = tokio::join!(script, requests);
    assert_eq!(status.servers.total, 3);
    assert_eq!(status.connections, 2);
    let names: Vec<&str> = list.servers.iter().map(|server| server.name.as_str()).collect();
    assert_eq!(names, ["filesystem", "github", "linear"]);
    assert_eq!(replay.notifications.len(), 2);
    assert!(replay.complete);
    assert_eq!(get.server.tool_count, Some(14));
}

#[tokio::test]
async fn params_go_on_the_wire_as_objects() {
    let (client, mut daemon) = connected().await;
    let script = async {
        let status = daemon.next_request().await;
        assert_eq!(status["method"], "daemon/status");
        assert_eq!(status["params"], json!({}));
        daemon.answer_with_example(&status, "daemon-status.response").await;
        let replay = daemon.next_request().await;
        assert_eq!(replay["params"], json!({"afterSeq": 5}));
        daemon.answer_with_example(&replay, "events-replay.response").await;
    };
    let requests = async {
        client.daemon_status().await.expect("daemon/status");
        client.events_replay(5).await.expect("events/replay");
    };
    tokio::join!(script, requests);
}

#[tokio::test]
async fn daemon_errors_are_typed() {
    let (client, mut daemon) = connected().await;
    let script = async {
        let request = daemon.next_request().await;
        daemon.answer_with_example(&request, "error.server-not-found").await;
        let request = daemon.next_request().await;
        // A result of the wrong shape.
        daemon.answer(&request, json!({"servers": "not a list"})).await;
    };
    let requests = async {
        let unknown = client.mcp_server_get("filesytem").await.expect_err("unknown server");
        let malformed = client.mcp_server_list().await.expect_err("malformed result");
        (unknown, malformed)
    };
    let ((), (unknown, malformed)) = tokio::join!(script, requests);
    assert_eq!(unknown.error_code(), Some(ErrorCode::ServerNotFound));
    assert!(matches!(&unknown, ClientError::Rpc { code: -32001, message, .. } if message.contains("filesytem")));
    assert!(matches!(&malformed, ClientError::Decode { method, .. } if method == "mcpServer/list"));
}

#[tokio::test]
async fn version_mismatch_is_reported_with_advice() {
    let (client_end, daemon_end) = tokio::io::duplex(64 * 1024);
    let mut daemon = FakeDaemon::new(daemon_end);
    let script = async {
        let request = daemon.next_request().await;
        daemon
            .answer_with_example(&request, "error.protocol-version-mismatch")
            .await;
    };
    let (result, ()) = tokio::join!(Client::connect_with_stream(client_end, options()), script);
    match result.expect_err("mismatch") {
        ClientError::VersionMismatch(data) => {
            assert_eq!(data.upgrade, UpgradeSide::Daemon);
            assert_eq!((data.requested, data.max_supported), (2, 1));
        }
        other => panic!("expected VersionMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn unanswered_requests_time_out_naming_the_method() {
    let (client, mut daemon) = connected().await;
    let error = client
        .request_with_timeout::<corral_protocol::McpServerList>(corral_protocol::NoParams {}, Duration::from_millis(50))
        .await
        .expect_err("no answer");
    assert!(
        matches!(&error, ClientError::Timeout { method, .. } if method == "mcpServer/list"),
        "{error:?}"
    );
    // The request did go out, and was withdrawn when the caller gave up on it, so the daemon
    // stops the work; a late answer is discarded and the connection stays usable.
    let late = daemon.next_request().await;
    assert_eq!(late["method"], "mcpServer/list");
    let cancel = daemon.next_request().await;
    assert_eq!(
        cancel,
        json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": late["id"]}})
    );
    daemon.answer_with_example(&late, "mcp-server-list.response").await;
    let (status, ()) = tokio::join!(client.daemon_status(), async {
        let request = daemon.next_request().await;
        daemon.answer_with_example(&request, "daemon-status.response").await;
    });
    status.expect("connection still usable");
}

#[tokio::test]
async fn a_closed_connection_fails_requests_and_ends_notifications() {
    let (mut client, mut daemon) = connected().await;
    let mut notifications = client.take_notifications().expect("first take");
    daemon.send(status_update(17, "filesystem", "ready")).await;
    drop(daemon);

    let error = tokio::time::timeout(WAIT, client.daemon_status())
        .await
        .expect("answer in time")
        .expect_err("connection closed");
    assert!(matches!(error, ClientError::Disconnected), "{error:?}");
    tokio::time::timeout(WAIT, client.closed())
        .await
        .expect("closed in time");
    assert!(!client.is_connected());

    // What arrived before the close is still delivered, then the stream ends.
    let first = next_notification(&mut notifications)
        .await
        .expect("buffered")
        .expect("decodes");
    assert_eq!(first.seq(), Some(17));
    assert!(next_notification(&mut notifications).await.is_none());
    assert_eq!(notifications.end_reason(), Some(NotificationsEnd::Disconnected));
}

#[tokio::test]
async fn a_full_buffer_ends_the_stream_visibly() {
    let (client_end, daemon_end) = tokio::io::duplex(64 * 1024);
    let mut daemon = FakeDaemon::new(daemon_end);
    let (client, _) = tokio::join!(
        Client::connect_with_stream(client_end, options().with_notification_buffer(2)),
        daemon.accept_initialize()
    );
    let mut client = client.expect("initialize succeeds");
    let mut notifications = client.take_notifications().expect("first take");

    let script = async {
        for seq in 17..22 {
            daemon.send(status_update(seq, "filesystem", "starting")).await;
        }
        let request = daemon.next_request().await;
        daemon.answer_with_example(&request, "daemon-status.response").await;
    };
    // Messages are handled in order, so once this answer is in, all five
    // notifications have met the two-slot buffer.
    let ((), status) = tokio::join!(script, client.daemon_status());
    status.expect("daemon/status");

    let mut seqs = Vec::new();
    while let Some(item) = next_notification(&mut notifications).await {
        seqs.push(item.expect("decodes").seq());
    }
    assert_eq!(seqs, [Some(17), Some(18)]);
    assert_eq!(notifications.end_reason(), Some(NotificationsEnd::Overflowed));
}

#[tokio::test]
async fn undecodable_notifications_are_errors_and_the_stream_goes_on() {
    let (mut client, mut daemon) = connected().await;
    let mut notifications = client.take_notifications().expect("first take");
    daemon
        .send(json!({"jsonrpc": "2.0", "method": "mcpServer/startupStatus/updated", "params": {"seq": "x"}}))
        .await;
    daemon.send(status_update(20, "github", "ready")).await;
    let bad = next_notification(&mut notifications).await.expect("open");
    assert!(
        matches!(&bad, Err(ClientError::Decode { method, .. }) if method == "mcpServer/startupStatus/updated"),
        "{bad:?}"
    );
    let good = next_notification(&mut notifications)
        .await
        .expect("open")
        .expect("decodes");
    assert_eq!(good.seq(), Some(20));
}

#[cfg(unix)]
mod unix_socket {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_means_the_daemon_is_not_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("corral.sock");
        let error = Client::connect(options().with_socket_path(&socket))
            .await
            .expect_err("nothing there");
        assert!(
            matches!(&error, ClientError::DaemonNotRunning { socket: tried } if *tried == socket),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_stale_socket_file_means_the_daemon_is_not_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("corral.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
        assert!(socket.exists(), "the socket file outlives its listener");
        let error = Client::connect(options().with_socket_path(&socket))
            .await
            .expect_err("nobody listens");
        assert!(matches!(error, ClientError::DaemonNotRunning { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn connect_speaks_lines_over_the_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("corral.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let daemon = async {
            let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
                .await
                .expect("client connects in time")
                .expect("accept");
            let mut daemon = FakeDaemon::new(stream);
            daemon.accept_initialize().await;
            daemon
        };
        let (client, _daemon) = tokio::join!(Client::connect(options().with_socket_path(&socket)), daemon);
        let client = client.expect("connect");
        assert_eq!(client.socket_path(), socket);
        assert_eq!(client.initialize_result().connection_id, 7);
    }
}

#[tokio::test]
async fn a_dropped_call_is_withdrawn_on_the_wire() {
    let (client, mut daemon) = connected().await;
    let call = client.daemon_status();
    // Poll the call until it has been sent, then drop it (as `select!` does on Ctrl-C).
    tokio::select! {
        biased;
        _ = call => panic!("nobody answered"),
        request = daemon.next_request() => {
            assert_eq!(request["method"], "daemon/status");
            let cancel = daemon.next_request().await;
            assert_eq!(cancel["method"], "$/cancelRequest");
            assert_eq!(cancel["params"]["id"], request["id"]);
        }
    }
}

/// A client that declared elicitation, connected to a fake daemon.
async fn connected_with_elicitation() -> (Client, FakeDaemon) {
    let (client_end, daemon_end) = tokio::io::duplex(64 * 1024);
    let mut daemon = FakeDaemon::new(daemon_end);
    let mut capabilities = corral_protocol::ClientCapabilities::default();
    capabilities.elicitation = true;
    let (client, initialize) = tokio::join!(
        Client::connect_with_stream(client_end, options().with_capabilities(capabilities)),
        daemon.accept_initialize()
    );
    assert_eq!(
        initialize["params"]["capabilities"]["elicitation"], true,
        "{initialize}"
    );
    (client.expect("initialize succeeds"), daemon)
}

fn elicitation(id: u64) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "mcpServer/elicitation/request",
        "params": {"server": "everything", "request": {"mode": "form", "message": "Your name?",
            "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}}},
    })
}

#[tokio::test]
async fn requests_from_the_daemon_are_answered_by_the_application() {
    let (mut client, mut daemon) = connected_with_elicitation().await;
    let mut requests = client.take_requests().expect("declared elicitation");
    daemon.send(elicitation(1)).await;
    let request = tokio::time::timeout(WAIT, requests.next())
        .await
        .expect("in time")
        .expect("a request");
    assert_eq!(request.method(), "mcpServer/elicitation/request");
    let params = request
        .params_as::<corral_protocol::ElicitationRequest>()
        .expect("an elicitation")
        .expect("decodes");
    assert_eq!(params.server, "everything");
    assert!(request.params_as::<corral_protocol::SamplingRequest>().is_none());
    request
        .respond(json!({"action": "accept", "content": {"name": "Ada"}}))
        .expect("sent");
    let answer = daemon.next_request().await;
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "id": 1, "result": {"action": "accept", "content": {"name": "Ada"}}})
    );

    // Dropped unanswered: the daemon still gets exactly one answer, an error.
    daemon.send(elicitation(2)).await;
    let request = tokio::time::timeout(WAIT, requests.next())
        .await
        .expect("in time")
        .expect("a request");
    drop(request);
    let answer = daemon.next_request().await;
    assert_eq!(answer["id"], 2);
    assert_eq!(answer["error"]["code"], -32603, "{answer}");
}

#[tokio::test]
async fn a_withdrawn_request_is_seen_by_the_application() {
    let (mut client, mut daemon) = connected_with_elicitation().await;
    let mut requests = client.take_requests().expect("declared elicitation");
    daemon.send(elicitation(5)).await;
    let request = tokio::time::timeout(WAIT, requests.next())
        .await
        .expect("in time")
        .expect("a request");
    assert!(!request.is_withdrawn());
    daemon
        .send(json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 5}}))
        .await;
    tokio::time::timeout(WAIT, request.withdrawn())
        .await
        .expect("withdrawn in time");
    assert!(request.is_withdrawn());
}

#[tokio::test]
async fn requests_are_refused_until_the_application_takes_them() {
    let (mut client, mut daemon) = connected_with_elicitation().await;
    daemon.send(elicitation(3)).await;
    let answer = daemon.next_request().await;
    assert_eq!(answer["id"], 3);
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not taking requests")),
        "{answer}"
    );
    let mut requests = client.take_requests().expect("declared");
    assert!(client.take_requests().is_none(), "taken once");
    daemon.send(elicitation(4)).await;
    let request = tokio::time::timeout(WAIT, requests.next())
        .await
        .expect("in time")
        .expect("a request");
    request.respond(json!({"action": "decline"})).expect("sent");
    assert_eq!(daemon.next_request().await["id"], 4);
}

#[tokio::test]
async fn broken_envelopes_are_still_answered_or_failed_by_id() {
    let (mut client, mut daemon) = connected_with_elicitation().await;
    let _requests = client.take_requests().expect("declared");
    // A request from the daemon with an id `RequestId` cannot hold is refused under that id.
    daemon
        .send(json!({"jsonrpc": "2.0", "id": 1.5, "method": "mcpServer/elicitation/request", "params": 3}))
        .await;
    let refusal = daemon.next_request().await;
    assert_eq!(refusal["id"], 1.5, "{refusal}");
    assert_eq!(refusal["error"]["code"], -32600, "{refusal}");
    // A malformed answer to one of our calls fails that call at once, naming the method.
    let (status, ()) = tokio::join!(client.daemon_status(), async {
        let request = daemon.next_request().await;
        daemon
            .send(json!({"jsonrpc": "2.0", "id": request["id"], "error": {"code": "not a number"}}))
            .await;
    });
    let error = status.expect_err("a malformed answer");
    assert!(
        matches!(&error, ClientError::Internal { method, .. } if method == "daemon/status"),
        "{error:?}"
    );
}

#[tokio::test]
async fn when_the_daemon_stops_writing_the_client_closes_the_socket() {
    let (client_end, daemon_end) = tokio::io::duplex(64 * 1024);
    let (daemon_read, mut daemon_write) = tokio::io::split(daemon_end);
    let mut daemon = FakeDaemon::new(tokio::io::join(daemon_read, tokio::io::sink()));
    let initialize = async {
        let request = daemon.next_request().await;
        let mut response = example("initialize.response");
        response["id"] = request["id"].clone();
        let mut line = serde_json::to_vec(&response).expect("serialize");
        line.push(b'\n');
        daemon_write.write_all(&line).await.expect("write");
    };
    let (client, ()) = tokio::join!(Client::connect_with_stream(client_end, options()), initialize);
    let client = client.expect("initialize succeeds");
    // The daemon's side ends: the client must not keep its half open (the daemon would keep the
    // session, its servers and its routes alive for a front-end that can no longer read).
    daemon_write.shutdown().await.expect("shut the daemon's half");
    tokio::time::timeout(WAIT, client.closed())
        .await
        .expect("closed in time");
    let end = tokio::time::timeout(WAIT, daemon.lines.next_line())
        .await
        .expect("the client closed its half in time")
        .expect("read");
    assert_eq!(end, None, "the client's half is closed");
}

#[tokio::test]
async fn without_a_capability_requests_are_refused_at_once() {
    let (mut client, mut daemon) = connected().await;
    assert!(client.take_requests().is_none(), "no capability declared");
    daemon.send(elicitation(9)).await;
    let answer = daemon.next_request().await;
    assert_eq!(answer["id"], 9);
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
}
