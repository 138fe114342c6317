//! Notifications through a real socket: a front-end that stops reading (it
//! gets `events/lagged`; nobody else notices). Sequence numbers, fan-out and
//! replay are tested in-process (corrald's `src/tests/notifications.rs`).

use std::time::{Duration, Instant};

use corral_tests::{TestDaemon, emit_test_events, next_notification, starting_status_update};
use serde_json::{Value, json};

#[tokio::test]
async fn a_front_end_that_never_reads_does_not_slow_the_others() {
    const TOTAL: u64 = 5_000;
    const BATCH: u32 = 250;
    let daemon = TestDaemon::start();
    // A: initializes, then never reads again (until the end of the test).
    let mut stuck = daemon.raw_line_connection().await;
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
