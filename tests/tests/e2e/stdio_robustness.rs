//! Servers that misbehave without failing: one that floods stderr (corrald
//! must keep draining it, keep a bounded tail and bounded memory) and one
//! that prints garbage on stdout before speaking MCP (skipped, not fatal).

use std::time::Instant;

use corral_client::protocol::ServerStatus;
use corral_tests::{SERVER_WAIT, TestDaemon, fixture_config, get_server, wait_for_server, wait_for_status};

use ServerStatus::Ready;

/// Megabytes of stderr the flooding server writes.
const FLOOD_MB: u64 = 20;

/// `stderrTail` in `mcpServer/get` holds at most this many lines (docs/protocol.md).
const STDERR_TAIL_LINES: usize = 20;

#[tokio::test]
async fn a_server_flooding_stderr_stays_ready_with_a_bounded_tail_and_daemon_memory() {
    let config = format!(
        "{}{}enabled = false\n",
        fixture_config("steady", &[]),
        fixture_config("flood", &["--stderr-flood", &FLOOD_MB.to_string()]),
    );
    let daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    // Baseline with one server already up, so the MCP client machinery is warm.
    wait_for_status(&client, "steady", Ready, SERVER_WAIT).await;
    let baseline_kib = daemon.rss_kib();

    let started = Instant::now();
    client.mcp_server_start("flood").await.expect("start flood");
    let ready = wait_for_status(&client, "flood", Ready, SERVER_WAIT).await;
    let pid = ready.pid.expect("pid");
    let done = wait_for_server(&client, "flood", "the end of the stderr flood", SERVER_WAIT, |server| {
        server
            .stderr_tail
            .last()
            .is_some_and(|line| line.starts_with("fixture: stderr flood done"))
    })
    .await;
    let took = started.elapsed();
    let peak_kib = daemon.peak_rss_kib();
    eprintln!(
        "{FLOOD_MB} MB of stderr drained in {took:?}; daemon RSS {baseline_kib} KiB before, peak {peak_kib} KiB, \
         now {} KiB",
        daemon.rss_kib()
    );
    assert!(
        done.stderr_tail.len() <= STDERR_TAIL_LINES,
        "{} lines in stderrTail",
        done.stderr_tail.len()
    );
    assert!(
        done.stderr_tail[..done.stderr_tail.len() - 1]
            .iter()
            .all(|line| line.starts_with("fixture: stderr flood line ")),
        "the tail is the flood's last lines: {:?}",
        done.stderr_tail
    );
    assert_eq!((done.status, done.pid, done.restart_count), (Ready, Some(pid), 0));
    // Keeping the flood (or a large part of it) would cost at least its size.
    let growth_kib = peak_kib.saturating_sub(baseline_kib);
    assert!(
        growth_kib < FLOOD_MB * 1024 / 2,
        "the daemon's peak RSS grew by {growth_kib} KiB while draining {FLOOD_MB} MB of stderr"
    );
    // Still answering, still serving the other server.
    assert_eq!(get_server(&client, "steady").await.status, Ready);
}

#[tokio::test]
async fn a_server_printing_garbage_on_stdout_still_gets_ready() {
    let daemon = TestDaemon::start_with_config(&fixture_config("garbage", &["--garbage-stdout"]));
    let client = daemon.connect_client().await;
    let ready = wait_for_status(&client, "garbage", Ready, SERVER_WAIT).await;
    assert_eq!(ready.tool_count, Some(3), "{ready:#?}");
    assert_eq!(ready.restart_count, 0);
}
