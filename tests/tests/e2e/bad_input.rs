//! Hostile and broken input on one connection: every case gets the documented
//! error or a closed connection, while a second, already open connection keeps
//! working and the daemon process stays alive (and small).

use std::time::Instant;

use corral_tests::{POLL_INTERVAL, RawConnection, TestDaemon, WAIT, error_code, error_message};
use serde_json::{Value, json};

/// A daemon and an initialized connection opened before any bad input is sent.
async fn daemon_with_healthy_connection() -> (TestDaemon, RawConnection) {
    let daemon = TestDaemon::start();
    let mut healthy = daemon.raw_line_connection().await;
    healthy.initialize().await;
    (daemon, healthy)
}

/// The healthy connection still answers and the daemon process is still alive.
async fn assert_still_serving(daemon: &mut TestDaemon, healthy: &mut RawConnection) {
    let status = healthy.call("daemon/status", json!({})).await;
    assert_eq!(status["daemonInfo"]["pid"], daemon.pid());
    daemon.assert_running();
}

/// Poll `daemon/status` on `healthy` until `connections` is `expected`.
async fn wait_for_connections(healthy: &mut RawConnection, expected: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = healthy.call("daemon/status", json!({})).await;
        if status["connections"] == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "daemon/status still reports {} connections after {WAIT:?}, expected {expected}",
            status["connections"]
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The next message on `connection` is an error with `code` and a `null` id.
async fn expect_error_with_null_id(connection: &mut RawConnection, code: i64) -> Value {
    let response = connection.recv().await;
    assert_eq!(error_code(&response), code, "{response}");
    assert_eq!(response["id"], Value::Null, "{response}");
    response
}

#[tokio::test]
async fn invalid_json_is_a_parse_error_with_a_null_id() {
    let (mut daemon, mut healthy) = daemon_with_healthy_connection().await;
    let mut bad = daemon.raw_line_connection().await;
    bad.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\n").await;
    let response = expect_error_with_null_id(&mut bad, -32700).await;
    assert!(error_message(&response).contains("JSON"), "{response}");
    bad.send_raw(b"{not json at all}\n").await;
    expect_error_with_null_id(&mut bad, -32700).await;
    // A parse error in line framing does not end the connection: the next line is a new message.
    bad.initialize().await;
    assert_still_serving(&mut daemon, &mut healthy).await;
}

#[tokio::test]
async fn json_that_is_not_a_request_is_an_invalid_request() {
    let (mut daemon, mut healthy) = daemon_with_healthy_connection().await;
    let mut bad = daemon.raw_line_connection().await;
    // The first message picks the framing; `42` alone could not (it is neither `{` nor `[`).
    bad.send_raw(b"{\"foo\":1}\n").await;
    expect_error_with_null_id(&mut bad, -32600).await;
    bad.send_raw(b"42\n").await;
    expect_error_with_null_id(&mut bad, -32600).await;
    bad.send_raw(b"\"a string\"\n").await;
    expect_error_with_null_id(&mut bad, -32600).await;
    bad.send_raw(b"{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"x\"}\n").await;
    let response = bad.recv().await;
    assert_eq!(error_code(&response), -32600, "{response}");
    assert_eq!(response["id"], 1, "the id is echoed when there is one: {response}");
    bad.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"method\":17}\n")
        .await;
    let response = bad.recv().await;
    assert_eq!(error_code(&response), -32600, "{response}");
    assert_eq!(response["id"], "abc", "{response}");
    bad.initialize().await;
    assert_still_serving(&mut daemon, &mut healthy).await;
}

#[tokio::test]
async fn bytes_that_are_not_utf8_are_a_parse_error() {
    let (mut daemon, mut healthy) = daemon_with_healthy_connection().await;
    let mut bad = daemon.raw_line_connection().await;
    bad.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\xfd\"}\n")
        .await;
    let response = expect_error_with_null_id(&mut bad, -32700).await;
    assert!(error_message(&response).contains("UTF-8"), "{response}");
    bad.initialize().await;

    let mut bad = daemon.raw_content_length_connection().await;
    bad.send_raw(b"Content-Length: 6\r\n\r\n{\"\xc3\x28\"}").await;
    expect_error_with_null_id(&mut bad, -32700).await;
    bad.initialize().await;
    assert_still_serving(&mut daemon, &mut healthy).await;
}

/// Send `head`, then `fill` bytes up to `total` bytes, as fast as the daemon
/// takes them. The daemon is expected to answer and close the connection
/// midway, so a failed write ends the flood quietly.
async fn flood(connection: &mut RawConnection, head: &[u8], fill: u8, total: usize) {
    const CHUNK: usize = 256 * 1024;
    if connection.try_send_raw(head).await.is_err() {
        return;
    }
    let chunk = vec![fill; CHUNK];
    let mut sent = head.len();
    while sent < total {
        let n = CHUNK.min(total - sent);
        if connection.try_send_raw(&chunk[..n]).await.is_err() {
            return;
        }
        sent += n;
    }
}

/// Memory the daemon used to refuse one message: (growth of the current RSS, growth of the peak RSS) in KiB.
fn memory_growth(daemon: &TestDaemon, before: (u64, u64), case: &str) -> (u64, u64) {
    let (rss, peak) = (daemon.rss_kib(), daemon.peak_rss_kib());
    let growth = (rss.saturating_sub(before.0), peak.saturating_sub(before.1));
    eprintln!(
        "{case}: daemon RSS {} KiB before, {rss} KiB after (+{} KiB); peak {} KiB before, {peak} KiB after (+{} KiB)",
        before.0, growth.0, before.1, growth.1
    );
    growth
}

#[tokio::test]
async fn a_9_mib_line_is_refused_and_the_connection_closed() {
    let (mut daemon, mut healthy) = daemon_with_healthy_connection().await;
    let before = (daemon.rss_kib(), daemon.peak_rss_kib());
    let mut bad = daemon.raw_line_connection().await;
    // A JSON string that never ends: no newline within 9 MiB.
    flood(
        &mut bad,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"",
        b'x',
        9 * 1024 * 1024,
    )
    .await;
    let response = expect_error_with_null_id(&mut bad, -32005).await;
    assert!(error_message(&response).contains("limit"), "{response}");
    bad.expect_closed().await;
    assert_still_serving(&mut daemon, &mut healthy).await;
    let (rss_growth, peak_growth) = memory_growth(&daemon, before, "9 MiB line");
    assert!(rss_growth < 64 * 1024, "RSS grew by {rss_growth} KiB");
    assert!(peak_growth < 64 * 1024, "peak RSS grew by {peak_growth} KiB");
}

#[tokio::test]
async fn a_declared_100_mb_message_is_refused_before_it_is_buffered() {
    let (mut daemon, mut healthy) = daemon_with_healthy_connection().await;
    let before = (daemon.rss_kib(), daemon.peak_rss_kib());
    let mut bad = daemon.raw_content_length_connection().await;
    // Offer the whole announced body: a daemon that buffered it would grow by 100 MB.
    flood(
        &mut bad,
        b"Content-Length: 100000000\r\n\r\n{\"jsonrpc\":\"2.0\",\"x\":\"",
        b'y',
        100_000_000,
    )
    .await;
    let response = expect_error_with_null_id(&mut bad, -32005).await;
    assert!(error_message(&response).contains("100000000"), "{response}");
    bad.expect_closed().await;
    assert_still_serving(&mut daemon, &mut healthy).await;
    let (rss_growth, peak_growth) = memory_growth(&daemon, before, "Content-Length: 100000000");
    assert!(rss_growth < 64 * 1024, "RSS grew by {rss_growth} KiB");
    assert!(
        peak_growth < 64 * 1024,
        "peak RSS grew by {peak_growth} KiB for a message that should have been refused unread"
    );
}

#[tokio::test]
async fn oversized_and_malformed_headers_close_the_connection() {
    let (mut daemon, mut healthy) = daemon_with_healthy_connection().await;
    let mut bad = daemon.raw_content_length_connection().await;
    bad.send_raw(b"Content-Length: twelve\r\n\r\n{}").await;
    let response = expect_error_with_null_id(&mut bad, -32700).await;
    assert!(error_message(&response).contains("Content-Length"), "{response}");
    bad.expect_closed().await;

    let mut bad = daemon.raw_content_length_connection().await;
    bad.send_raw(b"Content-Type: text/plain\r\n\r\n{}").await;
    expect_error_with_null_id(&mut bad, -32700).await;
    bad.expect_closed().await;

    // A header block that never ends.
    let mut bad = daemon.raw_content_length_connection().await;
    flood(&mut bad, b"X-Padding: ", b'a', 64 * 1024).await;
    expect_error_with_null_id(&mut bad, -32005).await;
    bad.expect_closed().await;
    assert_still_serving(&mut daemon, &mut healthy).await;
}

#[tokio::test]
async fn half_written_frames_then_disconnect() {
    let (mut daemon, mut healthy) = daemon_with_healthy_connection().await;
    let halves: [&[u8]; 4] = [
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"meth",
        b"Content-Len",
        b"Content-Length: 80\r\n",
        b"Content-Length: 80\r\n\r\n{\"jsonrpc\":\"2.0\"",
    ];
    for half in halves {
        let mut bad = daemon.raw_line_connection().await;
        bad.send_raw(half).await;
        drop(bad);
    }
    // Also a half message from a connection that had initialized.
    let mut bad = daemon.raw_content_length_connection().await;
    bad.initialize().await;
    bad.send_raw(b"Content-Length: 500\r\n\r\n{\"jsonrpc\":").await;
    drop(bad);
    // And one that half-closes: the daemon sees EOF mid-frame and must not wait for more.
    let mut bad = daemon.raw_line_connection().await;
    bad.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1").await;
    bad.shutdown_write().await;
    bad.expect_closed().await;

    assert_still_serving(&mut daemon, &mut healthy).await;
    wait_for_connections(&mut healthy, 1).await;
}

#[tokio::test]
async fn unrecognized_first_bytes_are_a_parse_error_and_close() {
    let (mut daemon, mut healthy) = daemon_with_healthy_connection().await;
    for first_bytes in [&b"\x00\x01"[..], b"\x16\x03\x01\x02\x00", b"42\n", b"-- hello\n"] {
        let mut bad = daemon.raw_line_connection().await;
        bad.send_raw(first_bytes).await;
        let response = expect_error_with_null_id(&mut bad, -32700).await;
        assert!(error_message(&response).contains("framing"), "{response}");
        bad.expect_closed().await;
    }
    assert_still_serving(&mut daemon, &mut healthy).await;
}

#[tokio::test]
async fn an_empty_batch_is_an_invalid_request() {
    let (mut daemon, mut healthy) = daemon_with_healthy_connection().await;
    let mut bad = daemon.raw_line_connection().await;
    bad.send_raw(b"[]\n").await;
    expect_error_with_null_id(&mut bad, -32600).await;
    // A batch of garbage gets one error per element; the connection lives on.
    bad.send_raw(b"[1, {\"foo\":2}]\n").await;
    let response = bad.recv().await;
    let errors = response.as_array().unwrap_or_else(|| panic!("an array: {response}"));
    assert_eq!(errors.len(), 2, "{response}");
    assert!(errors.iter().all(|e| error_code(e) == -32600), "{response}");
    bad.initialize().await;
    assert_still_serving(&mut daemon, &mut healthy).await;
}

#[tokio::test]
async fn a_thousand_connect_disconnect_cycles_leave_the_daemon_healthy() {
    let (mut daemon, mut healthy) = daemon_with_healthy_connection().await;
    let before = (daemon.rss_kib(), daemon.peak_rss_kib());
    let started = Instant::now();
    for cycle in 0..1000 {
        let mut connection = daemon.raw_line_connection().await;
        match cycle % 5 {
            // Connect and leave without a byte.
            0 => {}
            // Half a message, then gone.
            1 => {
                connection
                    .send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"init")
                    .await;
            }
            // Initialize, read the answer, leave.
            2 => {
                connection.initialize().await;
            }
            // Initialize and leave without reading the answer.
            3 => {
                connection
                    .send(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                  "params": corral_tests::initialize_params(1)}))
                    .await;
            }
            // Half a Content-Length frame.
            _ => connection.send_raw(b"Content-Length: 99\r\n\r\n{").await,
        }
        drop(connection);
        if cycle % 100 == 99 {
            daemon.assert_running();
        }
    }
    eprintln!("1000 connect/disconnect cycles took {:?}", started.elapsed());
    assert_still_serving(&mut daemon, &mut healthy).await;
    wait_for_connections(&mut healthy, 1).await;
    let (rss_growth, _) = memory_growth(&daemon, before, "1000 connect/disconnect cycles");
    assert!(rss_growth < 64 * 1024, "RSS grew by {rss_growth} KiB: connections leak");
    // New connections are still accepted and served after all that.
    let mut fresh = daemon.raw_content_length_connection().await;
    fresh.initialize().await;
}
