//! Requests in flight, in-process: cancellation of a running request
//! (`$/cancelRequest`, MCP's `notifications/cancelled`, a batch entry), the
//! request slots, batches that mix requests with notifications and
//! responses, and requests before `initialize`, each checked message by
//! message on the wire.
//!
//! A request is held "running" by wedging the supervisor
//! (`debug/wedgeSupervisor`): every method that asks it waits until
//! `debug/releaseSupervisor`, as calls to a slow server would.

use std::collections::BTreeMap;

use corral_tests::{RawConnection, WAIT, error_code, error_message, initialize_params};
use serde_json::{Value, json};

use super::InProcessDaemon;

fn request(id: impl Into<Value>, method: &str, params: Value) -> Value {
    let mut message = json!({"jsonrpc": "2.0", "id": id.into(), "method": method});
    message["params"] = params;
    message
}

/// The answer to a cancelled request, exactly as the daemon writes it.
fn cancelled(id: impl Into<Value>) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.into(),
        "error": {"code": -32800, "message": "request cancelled by the client"},
    })
}

/// An initialized line connection to a daemon whose supervisor does not answer.
async fn wedged(daemon: &mut InProcessDaemon) -> RawConnection {
    let mut connection = daemon.line_connection();
    connection.initialize().await;
    connection.call("debug/wedgeSupervisor", json!({})).await;
    connection
}

#[tokio::test]
async fn cancelling_a_running_request_answers_it_once_with_request_cancelled() {
    let mut daemon = InProcessDaemon::start().await;
    let mut connection = wedged(&mut daemon).await;
    // Both wait on the supervisor; a frame is dispatched before the next is
    // read, so each is running when its cancel arrives.
    connection.send(&request("lsp", "mcpServer/list", json!({}))).await;
    connection.send(&request(7, "mcpServer/list", json!({}))).await;

    connection
        .send(&json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "lsp"}}))
        .await;
    assert_eq!(connection.recv().await, cancelled("lsp"), "LSP's way");
    connection
        .send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                      "params": {"requestId": 7, "reason": "the user gave up"}}))
        .await;
    assert_eq!(connection.recv().await, cancelled(7), "MCP's way");

    // Cancelling again, or an id never sent, is answered with nothing.
    for id in [json!("lsp"), json!(7), json!(99)] {
        connection
            .send(&json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": id}}))
            .await;
    }
    // Once the supervisor answers again, the cancelled requests get no second
    // answer: the next message on the wire answers the next request.
    let released = connection.call("debug/releaseSupervisor", json!({})).await;
    assert_eq!(released["released"], true, "{released}");
    connection.send(&request("after", "mcpServer/list", json!({}))).await;
    assert_eq!(
        connection.recv().await,
        json!({"jsonrpc": "2.0", "id": "after", "result": {"servers": []}})
    );
}

#[tokio::test]
async fn a_cancelled_batch_entry_is_answered_inside_the_batch_in_its_place() {
    let mut daemon = InProcessDaemon::start().await;
    let mut connection = wedged(&mut daemon).await;
    // Cancelled by a message of its own, while the batch waits for it.
    connection
        .send(&json!([
            request("held", "mcpServer/list", json!({})),
            request("replay", "events/replay", json!({"afterSeq": 0})),
        ]))
        .await;
    connection
        .send(&json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "held"}}))
        .await;
    let replay = json!({"jsonrpc": "2.0", "id": "replay",
                        "result": {"complete": true, "lastSeq": 0, "notifications": []}});
    assert_eq!(connection.recv().await, json!([cancelled("held"), replay.clone()]));

    // Cancelled from inside the same batch: the cancel is a notification of
    // the batch (no entry of its own), and the entry is cancelled in place.
    connection
        .send(&json!([
            request("replay", "events/replay", json!({"afterSeq": 0})),
            request("held", "mcpServer/list", json!({})),
            {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": "held"}},
        ]))
        .await;
    assert_eq!(connection.recv().await, json!([replay, cancelled("held")]));
}

#[tokio::test]
async fn a_batch_answers_its_requests_in_order_and_its_notifications_and_responses_not_at_all() {
    let mut daemon =
        InProcessDaemon::start_with_config(Some("[servers.echo]\ncommand = \"true\"\nenabled = false\n")).await;
    let mut connection = daemon.line_connection();
    connection.initialize().await;
    connection
        .send(&json!([
            request(1, "mcpServer/list", json!({})),
            {"jsonrpc": "2.0", "method": "client/somethingHappened", "params": {"x": 1}},
            request("two", "no/such/method", json!({})),
            {"jsonrpc": "2.0", "id": 77, "result": {"answer": "to a request the daemon never sent"}},
            {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": 5}},
            request(3, "events/replay", json!({"afterSeq": 0})),
        ]))
        .await;
    let batch = connection.recv().await;
    let answers = batch.as_array().unwrap_or_else(|| panic!("one array: {batch}"));
    let ids: Vec<&Value> = answers.iter().map(|answer| &answer["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!("two"), &json!(3)], "{batch}");
    assert_eq!(answers[0]["result"]["servers"][0]["name"], "echo", "{batch}");
    assert_eq!(error_code(&answers[1]), -32601, "{batch}");
    assert!(error_message(&answers[1]).contains("no/such/method"), "{batch}");
    assert_eq!(answers[2]["result"]["lastSeq"], 0, "{batch}");

    // A batch of notifications and responses only gets no answer at all (not
    // an empty array): the next message answers the next request.
    connection
        .send(&json!([
            {"jsonrpc": "2.0", "method": "client/somethingHappened"},
            {"jsonrpc": "2.0", "id": 78, "error": {"code": -1, "message": "no"}},
        ]))
        .await;
    connection
        .send(&request(4, "events/replay", json!({"afterSeq": 0})))
        .await;
    let next = connection.recv().await;
    assert_eq!(next["id"], 4, "{next}");
    assert!(next.get("result").is_some(), "{next}");
}

#[tokio::test]
async fn a_request_before_initialize_is_answered_not_initialized_and_not_run() {
    let mut daemon = InProcessDaemon::start().await;
    let mut connection = daemon.line_connection();
    connection
        .send(&request(
            1,
            "mcpServer/add",
            json!({"name": "early", "config": {"command": "true", "enabled": false}}),
        ))
        .await;
    assert_eq!(
        connection.recv().await,
        json!({"jsonrpc": "2.0", "id": 1,
               "error": {"code": -32002, "message": "call `initialize` before `mcpServer/add`"}})
    );
    // In a batch, each entry is checked when its turn comes: the entry before
    // `initialize` is refused, the one after it runs.
    connection
        .send(&json!([
            request(2, "mcpServer/list", json!({})),
            request(3, "initialize", initialize_params(1)),
            request(4, "mcpServer/list", json!({})),
        ]))
        .await;
    let batch = connection.recv().await;
    let answers = batch.as_array().unwrap_or_else(|| panic!("one array: {batch}"));
    assert_eq!(answers.len(), 3, "{batch}");
    assert_eq!(
        answers[0],
        json!({"jsonrpc": "2.0", "id": 2,
               "error": {"code": -32002, "message": "call `initialize` before `mcpServer/list`"}})
    );
    assert_eq!(answers[1]["id"], 3, "{batch}");
    assert_eq!(answers[1]["result"]["protocolVersion"], 1, "{batch}");
    // The refused `mcpServer/add` added nothing.
    assert_eq!(
        answers[2],
        json!({"jsonrpc": "2.0", "id": 4, "result": {"servers": []}})
    );
}

// ---------------------------------------------------------------------------
// Request slots (moved from the end-to-end `limits` module: nothing in it
// needs a socket or a process)

/// The daemon's limits of requests per connection: running, and waiting for a slot.
const MAX_IN_FLIGHT: u64 = 64;
const MAX_WAITING_REQUESTS: u64 = 256;

/// Read `count` responses (notifications skipped) and return them by id.
async fn responses(connection: &mut RawConnection, count: usize) -> BTreeMap<String, Value> {
    let mut by_id = BTreeMap::new();
    for _ in 0..count * 4 {
        if by_id.len() == count {
            break;
        }
        let message = match connection.try_recv(WAIT).await {
            Ok(message) => message,
            Err(error) => panic!("after {} of {count} responses: {error:?}", by_id.len()),
        };
        if message.get("method").is_none() {
            by_id.insert(message["id"].to_string(), message);
        }
    }
    assert_eq!(by_id.len(), count, "{by_id:?}");
    by_id
}

#[tokio::test]
async fn requests_beyond_the_slots_wait_without_stopping_the_reader_and_beyond_the_waiting_room_are_refused() {
    // A wedged supervisor holds every `mcpServer/list` (as a slow server
    // would hold calls): 64 of them fill the slots, the 65th waits.
    let mut daemon = InProcessDaemon::start().await;
    let mut connection = daemon.line_connection();
    connection.initialize().await;
    connection.call("debug/wedgeSupervisor", json!({})).await;
    let list = |id: u64| json!({"jsonrpc": "2.0", "id": id, "method": "mcpServer/list"}).to_string() + "\n";
    let mut wire: String = (1..=MAX_IN_FLIGHT + 1).map(list).collect();
    // Behind them on the wire: cancellations of a waiting and a running request.
    for id in [MAX_IN_FLIGHT + 1, 1] {
        wire.push_str(
            &(json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": id}}).to_string() + "\n"),
        );
    }
    connection.send_raw(wire.as_bytes()).await;
    let cancelled = responses(&mut connection, 2).await;
    for id in [MAX_IN_FLIGHT + 1, 1] {
        let response = &cancelled[&id.to_string()];
        assert_eq!(error_code(response), -32800, "requestCancelled: {response}");
    }

    // One slot is free again (request 1 was cancelled): 1 runs, 256 wait,
    // and the next is refused at once, naming the limits.
    let first = 1000;
    let last = first + MAX_WAITING_REQUESTS + 1;
    let wire: String = (first..=last).map(list).collect();
    connection.send_raw(wire.as_bytes()).await;
    let refused = responses(&mut connection, 1).await;
    let response = &refused[&last.to_string()];
    assert_eq!(error_code(response), -32014, "tooManyRequests: {response}");
    assert!(
        error_message(response).contains("this connection already has 64 requests running and 256 waiting"),
        "{response}"
    );

    // The same for a batch's entries, inside its array.
    connection
        .send(&json!([
            {"jsonrpc": "2.0", "id": "b1", "method": "mcpServer/list"},
            {"jsonrpc": "2.0", "id": "b2", "method": "mcpServer/list"},
        ]))
        .await;
    let batch = connection.recv().await;
    let entries = batch.as_array().unwrap_or_else(|| panic!("the batch's array: {batch}"));
    assert_eq!(entries.len(), 2, "{batch}");
    for entry in entries {
        assert_eq!(error_code(entry), -32014, "tooManyRequests: {batch}");
    }

    // A request the daemon answers inline still gets through, and once the
    // supervisor answers again every request that waited is answered.
    let released = connection.call("debug/releaseSupervisor", json!({})).await;
    assert_eq!(released["released"], true, "{released}");
    let answered = responses(&mut connection, (MAX_IN_FLIGHT - 1 + 1 + MAX_WAITING_REQUESTS) as usize).await;
    for (id, response) in &answered {
        assert!(response.get("result").is_some(), "request {id}: {response}");
    }
}
