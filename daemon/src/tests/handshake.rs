//! The handshake deadline, in-process: a connection that has not completed
//! `initialize` within `ConnectionLimits::handshake` of being accepted is
//! closed, whatever else it sent; one that has is never closed by it.

use std::time::Duration;

use corral_tests::{POLL_INTERVAL, RecvError, WAIT, error_code, initialize_params};
use serde_json::json;

use super::InProcessDaemon;
use crate::api::ConnectionLimits;

/// Short, so the test is quick; long enough that an `initialize` sent at
/// once completes within it even on a loaded machine.
const HANDSHAKE: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_connection_that_never_initializes_is_closed_at_the_handshake_deadline() {
    let limits = ConnectionLimits {
        handshake: HANDSHAKE,
        ..ConnectionLimits::default()
    };
    let mut daemon = InProcessDaemon::start_with(None, limits).await;
    let opened = tokio::time::Instant::now();
    let mut initialized = daemon.line_connection();
    let mut silent = daemon.line_connection();
    let mut refused = daemon.content_length_connection();
    initialized.initialize().await;

    // Answered, but neither a request before `initialize` nor a refused
    // `initialize` is a handshake.
    let response = refused.request("daemon/status", json!({})).await;
    assert_eq!(error_code(&response), -32002, "{response}");
    let response = refused.request("initialize", initialize_params(99)).await;
    assert_eq!(error_code(&response), -32004, "{response}");

    // Closed without a word (nothing arrives before the end of the stream),
    // at the deadline: not before it, and not at the default one (10 s).
    for connection in [&mut silent, &mut refused] {
        match connection.try_recv(5 * HANDSHAKE).await {
            Err(RecvError::Closed) => {}
            other => panic!("expected corrald to close the connection, got {other:?}"),
        }
    }
    assert!(
        opened.elapsed() >= HANDSHAKE,
        "closed {:?} after opening, before the deadline",
        opened.elapsed()
    );

    // The initialized connection outlives the deadline (nothing arrives, it
    // is not closed) and is the only one left.
    let past_deadline = (opened + 2 * HANDSHAKE).saturating_duration_since(tokio::time::Instant::now());
    match initialized.try_recv(past_deadline).await {
        Err(RecvError::Timeout) => {}
        other => panic!("the initialized connection must be left alone, got {other:?}"),
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = initialized.call("daemon/status", json!({})).await;
        if status["connections"] == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connections are still counted after {WAIT:?}: {status}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
