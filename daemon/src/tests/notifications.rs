//! Notifications, in-process: daemon-wide sequence numbers, fan-out to every
//! front-end, `events/replay`, when a connection starts receiving them, and
//! a front-end that stops reading (its stream buffers what a socket would,
//! then the daemon's writer for it waits and it falls behind the ring).

use std::time::{Duration, Instant};

use corral_client::ClientNotification;
use corral_tests::{RecvError, WAIT, WireFraming, emit_test_events, next_notification, starting_status_update};
use serde_json::{Value, json};

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

/// What the stream of a front-end that does not read holds before the
/// daemon's writer waits: about a Unix socket's buffers.
const SOCKET_BUFFER: usize = 64 * 1024;

/// Moved from the end-to-end `notifications` module, assertions unchanged:
/// the stream's bounded buffer stands in for the socket's.
#[tokio::test]
async fn a_front_end_that_never_reads_does_not_slow_the_others() {
    const TOTAL: u64 = 5_000;
    const BATCH: u32 = 250;
    let mut daemon = InProcessDaemon::start().await;
    // A: initializes, then never reads again (until the end of the test).
    let mut stuck = daemon.connect_with_buffer(WireFraming::Lines, SOCKET_BUFFER);
    let init = stuck.initialize().await;
    assert_eq!(init["lastSeq"], 0);
    // B: a healthy front-end that reads everything.
    let mut healthy = daemon.connect_client().await;
    let mut notifications = healthy.take_notifications().expect("notification stream");

    let started = Instant::now();
    let mut next_seq = 1;
    while next_seq <= TOTAL {
        let last = emit_test_events(&healthy, BATCH, "flood").await;
        while next_seq <= last {
            let (seq, _) = starting_status_update(next_notification(&mut notifications).await);
            assert_eq!(seq, next_seq, "B receives every notification, in order");
            next_seq += 1;
        }
    }
    let delivery = started.elapsed();
    eprintln!("slow front-end: B received all {TOTAL} notifications in {delivery:?} while A read nothing");
    assert!(
        delivery < Duration::from_secs(30),
        "B took {delivery:?} to receive {TOTAL} notifications"
    );

    // A starts reading: what fit in its socket, then one `events/lagged`
    // naming exactly what it missed, then the rest without a gap.
    let mut before_lag = Vec::new();
    let mut lagged: Option<Value> = None;
    let mut after_lag = Vec::new();
    let read_started = Instant::now();
    loop {
        let message = stuck.recv().await;
        match message["method"].as_str() {
            Some("mcpServer/startupStatus/updated") => {
                let seq = message["params"]["seq"].as_u64().expect("seq");
                if lagged.is_none() {
                    before_lag.push(seq);
                } else {
                    after_lag.push(seq);
                }
                if seq == TOTAL {
                    break;
                }
            }
            Some("events/lagged") => {
                assert!(lagged.is_none(), "one lagged notice per gap: {message}");
                lagged = Some(message["params"].clone());
            }
            _ => panic!("unexpected message on the slow connection: {message}"),
        }
    }
    let lagged = lagged.expect("the slow front-end gets an events/lagged notification");
    let missed = lagged["missed"].as_u64().expect("missed");
    let first_missed = lagged["firstMissedSeq"].as_u64().expect("firstMissedSeq");
    let last_missed = lagged["lastMissedSeq"].as_u64().expect("lastMissedSeq");
    eprintln!(
        "slow front-end: A got {} notifications, then events/lagged {lagged}, then {} more, read in {:?}",
        before_lag.len(),
        after_lag.len(),
        read_started.elapsed()
    );
    assert!(missed > 0, "{lagged}");
    assert_eq!(last_missed, first_missed + missed - 1, "{lagged}");
    let delivered_first: Vec<u64> = (1..first_missed).collect();
    assert_eq!(before_lag, delivered_first, "A gets a gap-free prefix up to the lag");
    let delivered_after: Vec<u64> = (last_missed + 1..=TOTAL).collect();
    assert_eq!(after_lag, delivered_after, "then everything after lastMissedSeq");
    assert!(
        after_lag.len() as u64 <= 1024,
        "no more than the backlog is kept for a slow front-end: {}",
        after_lag.len()
    );
    // A is a normal connection again.
    let status = stuck.call("daemon/status", json!({})).await;
    assert_eq!(status["lastSeq"], TOTAL);
}
