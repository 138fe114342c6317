//! Notifications, in-process: daemon-wide sequence numbers, fan-out to every
//! front-end, `events/replay`, and when a connection starts receiving them.
//! (A front-end that stops reading is an end-to-end test: it needs a real
//! socket's buffers.)

use corral_client::ClientNotification;
use corral_tests::{RecvError, WAIT, emit_test_events, next_notification, starting_status_update};
use serde_json::json;

use super::InProcessDaemon;

#[tokio::test]
async fn seq_numbers_increase_by_one_across_emits() {
    let mut daemon = InProcessDaemon::start().await;
    let mut client = daemon.connect_client().await;
    let mut notifications = client.take_notifications().expect("notification stream");
    assert_eq!(emit_test_events(&client, 5, "first").await, 5);
    assert_eq!(emit_test_events(&client, 7, "second").await, 12);
    let mut received = Vec::new();
    for _ in 0..12 {
        received.push(starting_status_update(next_notification(&mut notifications).await));
    }
    let seqs: Vec<u64> = received.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    assert!(received[..5].iter().all(|(_, name)| name == "first"), "{received:?}");
    assert!(received[5..].iter().all(|(_, name)| name == "second"), "{received:?}");
    let status = client.daemon_status().await.expect("daemon/status");
    assert_eq!(status.last_seq, 12);
}

#[tokio::test]
async fn every_front_end_receives_every_notification() {
    let mut daemon = InProcessDaemon::start().await;
    let mut first = daemon.connect_client().await;
    let mut second = daemon.connect_client().await;
    let mut raw = daemon.content_length_connection();
    raw.initialize().await;
    let mut first_stream = first.take_notifications().expect("stream");
    let mut second_stream = second.take_notifications().expect("stream");
    // Emitted through the second client: the sender receives its own events too.
    assert_eq!(emit_test_events(&second, 10, "shared").await, 10);
    for stream in [&mut first_stream, &mut second_stream] {
        for expected in 1..=10 {
            let (seq, name) = starting_status_update(next_notification(stream).await);
            assert_eq!((seq, name.as_str()), (expected, "shared"));
        }
    }
    for expected in 1..=10u64 {
        let message = raw.recv().await;
        assert_eq!(message["method"], "mcpServer/startupStatus/updated", "{message}");
        assert_eq!(message["params"]["seq"], expected, "{message}");
        assert!(message.get("id").is_none(), "a notification has no id: {message}");
    }
}

#[tokio::test]
async fn notifications_start_only_after_initialize() {
    let mut daemon = InProcessDaemon::start().await;
    let emitter = daemon.connect_client().await;
    let mut late = daemon.line_connection();
    // Connected but not initialized: these are not for it.
    assert_eq!(emit_test_events(&emitter, 3, "before").await, 3);
    late.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": corral_tests::initialize_params(1)}))
        .await;
    let response = late.recv().await;
    assert_eq!(
        response["id"], 1,
        "the first message is the initialize response: {response}"
    );
    assert_eq!(response["result"]["lastSeq"], 3, "{response}");
    assert_eq!(emit_test_events(&emitter, 1, "after").await, 4);
    let message = late.recv().await;
    assert_eq!(message["params"]["seq"], 4, "{message}");
    assert_eq!(message["params"]["name"], "after", "{message}");
}

#[tokio::test]
async fn replay_returns_what_was_missed_and_says_when_history_is_incomplete() {
    let mut daemon = InProcessDaemon::start().await;
    let emitter = daemon.connect_client().await;
    assert_eq!(emit_test_events(&emitter, 5, "early").await, 5);

    // A front-end that connects later sees where the stream is and replays what it missed.
    let late = daemon.connect_client().await;
    assert_eq!(late.initialize_result().last_seq, 5);
    let capacity = u64::from(late.initialize_result().replay_capacity);
    assert_eq!(capacity, 1024);
    let replay = late.events_replay(2).await.expect("events/replay");
    assert!(replay.complete);
    assert_eq!(replay.last_seq, 5);
    let seqs: Vec<u64> = replay.notifications.iter().map(|n| n.seq()).collect();
    assert_eq!(seqs, [3, 4, 5]);
    for notification in replay.notifications {
        let converted = ClientNotification::from_replayed(notification);
        let (_, name) = starting_status_update(converted);
        assert_eq!(name, "early");
    }
    let replay = late.events_replay(5).await.expect("events/replay");
    assert!(replay.complete && replay.notifications.is_empty(), "{replay:?}");

    // More than the history holds: the oldest are gone, and the replay says so.
    let extra = capacity + 100;
    let last_seq = emit_test_events(&emitter, u32::try_from(extra).expect("small"), "flood").await;
    assert_eq!(last_seq, 5 + extra);
    let replay = late.events_replay(0).await.expect("events/replay");
    assert!(!replay.complete, "seq 1.. fell out of the history");
    assert_eq!(replay.last_seq, last_seq);
    let seqs: Vec<u64> = replay.notifications.iter().map(|n| n.seq()).collect();
    assert_eq!(seqs, ((last_seq - capacity + 1)..=last_seq).collect::<Vec<_>>());
    // Just inside the history is still complete.
    let replay = late.events_replay(last_seq - capacity).await.expect("events/replay");
    assert!(replay.complete);
    assert_eq!(replay.notifications.len(), 1024);
}

/// docs/protocol.md: "From the `initialize` response on, the daemon pushes
/// notifications on the connection"; batches are allowed, so this holds for an
/// `initialize` sent inside a batch too.
#[tokio::test]
async fn initialize_inside_a_batch_still_subscribes_the_connection() {
    let mut daemon = InProcessDaemon::start().await;
    let emitter = daemon.connect_client().await;
    let mut batched = daemon.line_connection();
    batched
        .send(&json!([
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": corral_tests::initialize_params(1)},
            {"jsonrpc": "2.0", "id": 2, "method": "daemon/status"},
        ]))
        .await;
    let responses = batched.recv().await;
    let responses = responses.as_array().expect("an array of responses");
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert!(responses.iter().all(|r| r.get("result").is_some()), "{responses:?}");

    assert_eq!(emit_test_events(&emitter, 2, "after-batch").await, 2);
    for expected in 1..=2u64 {
        match batched.try_recv(WAIT).await {
            Ok(message) => {
                assert_eq!(message["method"], "mcpServer/startupStatus/updated", "{message}");
                assert_eq!(message["params"]["seq"], expected, "{message}");
            }
            Err(RecvError::Timeout) => panic!(
                "a connection initialized inside a batch received no notification within {WAIT:?} \
                 (seq {expected} was published)"
            ),
            Err(error) => panic!("expected notification {expected}, got {error:?}"),
        }
    }
}
