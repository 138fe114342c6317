//! Raw bytes on a connection, as a hand-written front-end sends them: the
//! handshake rules, error codes and both framings (newline-delimited JSON and
//! LSP `Content-Length` headers).

use corral_tests::{RawConnection, WireFraming, error_code, error_message, initialize_params};
use serde_json::{Value, json};

use super::InProcessDaemon;

const ONE_SERVER: &str = "[servers.echo]\ncommand = \"true\"\nenabled = false\n";

fn request(id: impl Into<Value>, method: &str, params: Value) -> Value {
    let mut message = json!({"jsonrpc": "2.0", "id": id.into(), "method": method});
    message["params"] = params;
    message
}

// ---------------------------------------------------------------------------
// Newline-delimited JSON

#[tokio::test]
async fn methods_before_initialize_are_not_initialized() {
    let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
    let mut connection = daemon.line_connection();
    for method in ["mcpServer/list", "daemon/status", "no/such/method"] {
        let response = connection.request(method, json!({})).await;
        assert_eq!(error_code(&response), -32002, "{method}: {response}");
        assert!(error_message(&response).contains(method), "{response}");
        assert_eq!(response["jsonrpc"], "2.0");
    }
    // Still usable: initialize now succeeds, then the method does.
    let init = connection.initialize().await;
    assert_eq!(init["protocolVersion"], 1);
    assert_eq!(init["daemonInfo"]["pid"], daemon.pid());
    let list = connection.call("mcpServer/list", json!({})).await;
    assert_eq!(list["servers"][0]["name"], "echo");
    assert_eq!(list["servers"][0]["status"], "stopped");
}

#[tokio::test]
async fn initialize_then_list_by_hand() {
    let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
    let mut connection = daemon.line_connection();
    connection.send(&request(1, "initialize", initialize_params(1))).await;
    let response = connection.recv().await;
    assert_eq!(response["id"], 1);
    assert_eq!(response["result"]["protocolVersion"], 1);
    assert_eq!(response["result"]["daemonInfo"]["name"], "corrald");
    assert_eq!(response["result"]["replayCapacity"], 1024);
    // Params may be omitted or null for methods without params.
    connection
        .send(&json!({"jsonrpc": "2.0", "id": "list", "method": "mcpServer/list"}))
        .await;
    let response = connection.recv().await;
    assert_eq!(response["id"], "list", "string ids are echoed: {response}");
    assert_eq!(response["result"]["servers"].as_array().map(Vec::len), Some(1));
    connection
        .send(&json!({"jsonrpc": "2.0", "id": 3, "method": "daemon/status", "params": null}))
        .await;
    let response = connection.recv().await;
    assert_eq!(response["result"]["servers"]["total"], 1, "{response}");
}

#[tokio::test]
async fn an_unknown_method_is_method_not_found_naming_it() {
    let mut daemon = InProcessDaemon::start().await;
    let mut connection = daemon.line_connection();
    connection.initialize().await;
    let response = connection.request("mcpServer/frobnicate", json!({})).await;
    assert_eq!(error_code(&response), -32601, "{response}");
    assert!(error_message(&response).contains("mcpServer/frobnicate"), "{response}");
}

#[tokio::test]
async fn missing_params_are_invalid_params_naming_the_field() {
    let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
    let mut connection = daemon.line_connection();
    connection.initialize().await;
    let response = connection.request("mcpServer/get", json!({})).await;
    assert_eq!(error_code(&response), -32602, "{response}");
    let message = error_message(&response);
    assert!(message.contains("mcpServer/get"), "names the method: {message}");
    assert!(message.contains("name"), "names the field: {message}");

    let response = connection
        .request("mcpServer/get", json!({"name": "echo", "extra": true}))
        .await;
    assert_eq!(error_code(&response), -32602, "{response}");
    assert!(error_message(&response).contains("extra"), "{response}");

    let response = connection.request("events/replay", json!({})).await;
    assert_eq!(error_code(&response), -32602, "{response}");
    assert!(error_message(&response).contains("afterSeq"), "{response}");
}

/// docs/protocol.md: "an unknown field or a wrong type is `-32602` with a
/// message naming the method and the field".
#[tokio::test]
async fn a_param_of_the_wrong_type_is_invalid_params_naming_the_field() {
    let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
    let mut connection = daemon.line_connection();
    connection.initialize().await;
    let response = connection.request("mcpServer/get", json!({"name": 5})).await;
    assert_eq!(error_code(&response), -32602, "{response}");
    let message = error_message(&response);
    assert!(message.contains("mcpServer/get"), "names the method: {message}");
    assert!(message.contains("name"), "names the field `name`: {message}");
}

#[tokio::test]
async fn initialize_twice_is_already_initialized() {
    let mut daemon = InProcessDaemon::start().await;
    let mut connection = daemon.line_connection();
    let first = connection.initialize().await;
    let response = connection.request("initialize", initialize_params(1)).await;
    assert_eq!(error_code(&response), -32003, "{response}");
    // The first initialize still stands.
    let status = connection.call("daemon/status", json!({})).await;
    assert_eq!(status["daemonInfo"]["pid"], first["daemonInfo"]["pid"]);
}

#[tokio::test]
async fn an_unsupported_protocol_version_says_which_side_to_upgrade() {
    let mut daemon = InProcessDaemon::start().await;
    let mut connection = daemon.line_connection();
    let response = connection.request("initialize", initialize_params(99)).await;
    assert_eq!(error_code(&response), -32004, "{response}");
    let data = &response["error"]["data"];
    assert_eq!(data["upgrade"], "daemon", "{response}");
    assert_eq!(data["requested"], 99);
    assert_eq!(data["minSupported"], 1);
    assert_eq!(data["maxSupported"], 1);
    assert!(error_message(&response).contains("upgrade corrald"), "{response}");

    let response = connection.request("initialize", initialize_params(0)).await;
    assert_eq!(error_code(&response), -32004, "{response}");
    assert_eq!(response["error"]["data"]["upgrade"], "client", "{response}");

    // A refused version does not initialize the connection; a good one then does.
    let response = connection.request("mcpServer/list", json!({})).await;
    assert_eq!(error_code(&response), -32002, "{response}");
    connection.initialize().await;
}

#[tokio::test]
async fn a_batch_gets_an_array_of_responses_with_matching_ids() {
    let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
    let mut connection = daemon.line_connection();
    connection.initialize().await;
    connection
        .send(&json!([
            request(10, "mcpServer/list", json!({})),
            request("eleven", "mcpServer/get", json!({"name": "echo"})),
        ]))
        .await;
    let response = connection.recv().await;
    let responses = response.as_array().expect("a batch gets an array");
    assert_eq!(responses.len(), 2, "{response}");
    let by_id = |id: Value| {
        responses
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no response with id {id} in {response}"))
    };
    assert_eq!(by_id(json!(10))["result"]["servers"][0]["name"], "echo");
    assert_eq!(by_id(json!("eleven"))["result"]["server"]["name"], "echo");
}

#[tokio::test]
async fn a_notification_from_the_client_gets_no_response() {
    let mut daemon = InProcessDaemon::start().await;
    let mut connection = daemon.line_connection();
    // Before initialize too: a notification is never answered, not even with -32002.
    connection
        .send(&json!({"jsonrpc": "2.0", "method": "client/somethingHappened", "params": {"x": 1}}))
        .await;
    connection.send(&request(1, "initialize", initialize_params(1))).await;
    let response = connection.recv().await;
    assert_eq!(
        response["id"], 1,
        "the first message back answers initialize: {response}"
    );
    assert!(response.get("result").is_some(), "{response}");

    connection
        .send(&json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 99}}))
        .await;
    connection.send(&request(2, "daemon/status", json!({}))).await;
    let response = connection.recv().await;
    assert_eq!(response["id"], 2, "only the request is answered: {response}");
    assert!(response.get("result").is_some(), "{response}");
}

#[tokio::test]
async fn crlf_line_endings_and_blank_lines_work() {
    let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
    let mut connection = daemon.line_connection();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(request(1, "initialize", initialize_params(1)).to_string().as_bytes());
    bytes.extend_from_slice(b"\r\n\r\n");
    bytes.extend_from_slice(request(2, "mcpServer/list", json!({})).to_string().as_bytes());
    bytes.extend_from_slice(b"\r\n");
    connection.send_raw(&bytes).await;
    let first = connection.recv().await;
    let second = connection.recv().await;
    assert_eq!(first["id"], 1, "{first}");
    assert!(first.get("result").is_some(), "{first}");
    assert_eq!(second["id"], 2, "{second}");
    assert_eq!(second["result"]["servers"][0]["name"], "echo");
}

// ---------------------------------------------------------------------------
// Content-Length

#[tokio::test]
async fn content_length_handshake_and_list() {
    let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
    let mut connection = daemon.content_length_connection();
    // Answers come back in Content-Length framing, or the raw reader would not parse them.
    let response = connection.request("mcpServer/list", json!({})).await;
    assert_eq!(error_code(&response), -32002);
    let init = connection.initialize().await;
    assert_eq!(init["daemonInfo"]["pid"], daemon.pid());
    let list = connection.call("mcpServer/list", json!({})).await;
    assert_eq!(list["servers"][0]["name"], "echo");
    let response = connection.request("nope", json!({})).await;
    assert_eq!(error_code(&response), -32601);
}

#[tokio::test]
async fn content_length_with_a_content_type_header() {
    let mut daemon = InProcessDaemon::start().await;
    let mut connection = daemon.content_length_connection();
    let body = request(1, "initialize", initialize_params(1)).to_string();
    let message = format!(
        "Content-Type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    connection.send_raw(message.as_bytes()).await;
    let response = connection.recv().await;
    assert_eq!(response["id"], 1);
    assert!(response.get("result").is_some(), "{response}");
}

#[tokio::test]
async fn content_length_messages_split_across_writes() {
    let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
    let mut connection = daemon.content_length_connection();
    let frame = |id: u64, method: &str, params: Value, content_type: bool| {
        let body = request(id, method, params).to_string();
        let content_type = if content_type {
            "Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n"
        } else {
            ""
        };
        format!("Content-Length: {}\r\n{content_type}\r\n{body}", body.len()).into_bytes()
    };
    let messages = [
        frame(1, "initialize", initialize_params(1), false),
        frame(2, "mcpServer/list", json!({}), true),
        frame(3, "daemon/status", json!({}), true),
        frame(4, "mcpServer/get", json!({"name": "echo"}), false),
        frame(5, "mcpServer/list", json!({}), false),
    ];
    let find = |message: &[u8], needle: &[u8]| {
        message
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("needle in frame")
    };
    // Where each message (after the first) is cut: inside the header name,
    // between two headers, inside the blank line that ends the headers, and
    // inside the body.
    let cuts = [
        0,
        "Content-Le".len(),
        find(&messages[2], b"Content-Type"),
        find(&messages[3], b"\r\n\r\n") + 3,
        messages[4].len() - 7,
    ];
    // Each write is the tail of message k and the head of message k+1; the
    // response to k proves the daemon read that write, so the head of k+1
    // sits in its buffer while the next write is made.
    for k in 0..messages.len() {
        let mut write = messages[k][cuts[k]..].to_vec();
        if let Some(next) = messages.get(k + 1) {
            write.extend_from_slice(&next[..cuts[k + 1]]);
        }
        connection.send_raw(&write).await;
        let response = connection.recv().await;
        assert_eq!(response["id"], k + 1, "{response}");
        assert!(response.get("result").is_some(), "message {}: {response}", k + 1);
    }
}

#[tokio::test]
async fn two_content_length_messages_in_one_write() {
    let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
    let mut connection = daemon.content_length_connection();
    let mut write =
        WireFraming::ContentLength.encode(request(1, "initialize", initialize_params(1)).to_string().as_bytes());
    write.extend(WireFraming::ContentLength.encode(request(2, "mcpServer/list", json!({})).to_string().as_bytes()));
    connection.send_raw(&write).await;
    let first = connection.recv().await;
    let second = connection.recv().await;
    assert_eq!(first["id"], 1, "{first}");
    assert_eq!(second["id"], 2, "{second}");
    assert_eq!(second["result"]["servers"][0]["name"], "echo");
}

#[tokio::test]
async fn both_framings_on_one_daemon_at_once() {
    let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
    let mut lines: RawConnection = daemon.line_connection();
    let mut headers = daemon.content_length_connection();
    lines.initialize().await;
    headers.initialize().await;
    let from_lines = lines.call("mcpServer/list", json!({})).await;
    let from_headers = headers.call("mcpServer/list", json!({})).await;
    assert_eq!(from_lines, from_headers);
}

// ---------------------------------------------------------------------------
// Answers written by their request's task (the writer lends the socket)

/// An answer the socket does not take at once is finished, by the
/// connection's writer, before anything that follows it: answers, queued or
/// written by their own task, and notifications never interleave, in either
/// framing, however small the socket's buffer.
#[tokio::test]
async fn answers_too_large_for_the_socket_are_finished_before_anything_else() {
    const SOCKET_BUFFER: usize = 256;
    const REQUESTS: usize = 24;
    for framing in [WireFraming::Lines, WireFraming::ContentLength] {
        let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
        let mut connection = daemon.connect_with_buffer(framing, SOCKET_BUFFER);
        connection.initialize().await;
        // Unread: answers to unknown methods (each larger than the socket's
        // buffer, answered by the reader at once), answers of handlers that
        // wait (`mcpServer/list` asks the supervisor), and notifications.
        for k in 0..REQUESTS {
            let message = match k % 3 {
                0 => request(k, &format!("no/such/{}", "m".repeat(1000 + k)), json!({})),
                1 => request(k, "mcpServer/list", json!({})),
                _ => request(k, "debug/emitTestEvents", json!({"count": 3, "name": format!("n{k}")})),
            };
            connection.send(&message).await;
        }
        let mut answered = std::collections::BTreeSet::new();
        let mut notifications = 0;
        // Bounded: every request is answered once, and 3 notifications per emit.
        while answered.len() < REQUESTS || notifications < REQUESTS / 3 * 3 {
            let message = connection.recv().await;
            if message.get("method").is_some() {
                assert_eq!(message["method"], "mcpServer/startupStatus/updated", "{message}");
                notifications += 1;
                continue;
            }
            let k = message["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{framing:?}: an answer without its id: {message}"));
            let k = usize::try_from(k).expect("id");
            match k % 3 {
                0 => {
                    assert_eq!(error_code(&message), -32601, "{framing:?}: {message}");
                    assert!(
                        error_message(&message).contains(&"m".repeat(1000 + k)),
                        "{framing:?}: {message}"
                    );
                }
                1 => assert_eq!(
                    message["result"]["servers"][0]["name"], "echo",
                    "{framing:?}: {message}"
                ),
                _ => assert!(message["result"]["lastSeq"].is_u64(), "{framing:?}: {message}"),
            }
            assert!(answered.insert(k), "{framing:?}: request {k} answered twice");
        }
        // Still in step: the next request's answer is the next message.
        let list = connection.call("mcpServer/list", json!({})).await;
        assert_eq!(list["servers"][0]["name"], "echo", "{framing:?}");
    }
}

/// A notification published before an answer was made is written before
/// that answer, whether the answer goes through the writer or is written by
/// its request's task: `debug/emitTestEvents` publishes its notifications,
/// then answers with the last one's `seq`.
#[tokio::test]
async fn notifications_published_before_an_answer_precede_it() {
    const ROUNDS: u64 = 50;
    const EVENTS: u64 = 3;
    let mut daemon = InProcessDaemon::start_with_config(Some(ONE_SERVER)).await;
    let mut connection = daemon.line_connection();
    connection.initialize().await;
    let mut seen = 0;
    for round in 0..ROUNDS {
        connection
            .send(&request(
                round,
                "debug/emitTestEvents",
                json!({"count": EVENTS, "name": "ordered"}),
            ))
            .await;
        // The answer comes after at most EVENTS notifications.
        let mut answered = false;
        for _ in 0..=EVENTS {
            let message = connection.recv().await;
            if message.get("method").is_some() {
                seen = message["params"]["seq"].as_u64().expect("seq");
                continue;
            }
            assert_eq!(message["id"], round, "{message}");
            let last = message["result"]["lastSeq"].as_u64().expect("lastSeq");
            assert_eq!(seen, last, "round {round}: the answer came before notification {last}");
            answered = true;
            break;
        }
        assert!(answered, "round {round}: no answer after {EVENTS} notifications");
    }
}
