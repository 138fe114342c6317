//! How a stdio server fails, as a front-end sees it: the exact sequence of
//! `mcpServer/startupStatus/updated` notifications (status and
//! `failureReason`) for every failure corrald can detect at launch or
//! startup, a stop during startup (`cancelled`), and a server that keeps
//! dying after `ready` (restarts with backoff, then `crashLoop`).

use std::time::{Duration, Instant};

use corral_client::protocol::{FailureReason, ServerStatus};
use corral_tests::{
    KillSurvivorsOnDrop, SERVER_WAIT, StatusRecorder, TestDaemon, assert_all_gone, fixture_config, get_server,
    is_alive, scratch_dir, send_signal, toml_string, wait_for_pid_file, wait_for_server, wait_for_status,
};

use ServerStatus::{Cancelled, Failed, Ready, Starting};

fn failed(reason: FailureReason) -> (ServerStatus, Option<FailureReason>) {
    (Failed, Some(reason))
}

/// One daemon with one server per failure, all started at once
/// (`processExited` has its own test below).
#[tokio::test]
async fn each_startup_failure_has_its_exact_notification_sequence_and_reason() {
    let scratch = scratch_dir();
    let hang_pids = scratch.path().join("hang.pids");
    let _cleanup = KillSurvivorsOnDrop::new([hang_pids.clone()]);
    let missing_cwd = scratch.path().join("no-such-dir");
    let config = format!(
        r#"
[servers.missing]
command = "corral-test-no-such-program"
{bad_cwd}cwd = {missing_cwd}
{hang}startup_timeout_sec = 1
{disabled}enabled = false
"#,
        bad_cwd = fixture_config("bad-cwd", &[]),
        missing_cwd = toml_string(&missing_cwd.display().to_string()),
        hang = fixture_config(
            "hang",
            &["--hang-on-initialize", "--pid-file", &hang_pids.display().to_string()]
        ),
        disabled = fixture_config("disabled", &["--crash-on-start"]),
    );
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();

    // executableNotFound: the error names the program and the PATH searched.
    let updates = recorder
        .expect_steps(
            "missing",
            &[(Starting, None), failed(FailureReason::ExecutableNotFound)],
            SERVER_WAIT,
        )
        .await;
    let error = updates[1].update.error.clone().expect("a failed update has an error");
    assert!(error.contains("`corral-test-no-such-program`"), "{error}");
    assert!(error.contains("PATH="), "{error}");
    let server = get_server(client, "missing").await;
    assert_eq!(server.failure_reason, Some(FailureReason::ExecutableNotFound));
    assert_eq!(
        server.error.as_deref(),
        Some(error.as_str()),
        "get agrees with the notification"
    );
    assert_eq!(
        (server.pid, server.last_exit.as_deref()),
        (None, None),
        "never launched"
    );

    // configInvalid: a cwd that does not exist; the error names it.
    let updates = recorder
        .expect_steps(
            "bad-cwd",
            &[(Starting, None), failed(FailureReason::ConfigInvalid)],
            SERVER_WAIT,
        )
        .await;
    let error = updates[1].update.error.clone().expect("error");
    assert!(error.contains(&missing_cwd.display().to_string()), "{error}");

    // startupTimeout: initialize never answered within startup_timeout_sec = 1.
    let hang_pid = wait_for_pid_file(&hang_pids, 1).await[0];
    let updates = recorder
        .expect_steps(
            "hang",
            &[(Starting, None), failed(FailureReason::StartupTimeout)],
            SERVER_WAIT,
        )
        .await;
    let error = updates[1].update.error.clone().expect("error");
    assert!(error.contains("startup_timeout_sec"), "{error}");
    assert_all_gone(&[hang_pid], Duration::ZERO, "the timed-out server once it is `failed`").await;

    // Failures are not retried, and a disabled server says nothing at all.
    for name in ["missing", "bad-cwd", "hang"] {
        let server = get_server(client, name).await;
        assert_eq!((server.status, server.restart_count), (Failed, 0), "{server:#?}");
        assert_eq!(recorder.updates(name).len(), 2, "{name}: no retry");
    }
    assert!(recorder.updates("disabled").is_empty());
    assert_eq!(get_server(client, "disabled").await.status, ServerStatus::Stopped);
}

/// `--crash-on-start` prints `fixture: crashing on start` and exits 3 before
/// reading stdin: `processExited`, with the exit status and the stderr line
/// in the error, `lastExit` and `stderrTail`. Never a protocol error about
/// the closed pipe: which of the two corrald notices first is a race, so
/// several servers are tried at once.
#[tokio::test]
async fn a_server_that_exits_on_start_is_process_exited_with_its_status_and_stderr() {
    const SERVERS: usize = 8;
    let names: Vec<String> = (0..SERVERS).map(|n| format!("crash-{n}")).collect();
    let config: String = names
        .iter()
        .map(|name| fixture_config(name, &["--crash-on-start"]))
        .collect();
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let mut wrong = Vec::new();
    for name in &names {
        let updates = recorder.wait_for_count(name, 2, SERVER_WAIT).await;
        let steps: Vec<_> = updates.iter().map(|u| u.step()).collect();
        let error = updates[1].update.error.clone().unwrap_or_default();
        let server = get_server(recorder.client(), name).await;
        let as_expected = steps == [(Starting, None), failed(FailureReason::ProcessExited)]
            && error.contains("exit status: 3")
            && error.contains("fixture: crashing on start")
            && server.last_exit.as_deref() == Some("exit status: 3")
            && server.stderr_tail == ["fixture: crashing on start"]
            && server.pid.is_none()
            && server.restart_count == 0;
        if !as_expected {
            wrong.push(format!(
                "{name}: steps {steps:?}, error {error:?}, lastExit {:?}, stderrTail {:?}",
                server.last_exit, server.stderr_tail
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {SERVERS} servers that exited with status 3 at start were not reported as expected:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn a_stop_during_startup_is_cancelled_and_ends_the_process() {
    let scratch = scratch_dir();
    let pids = scratch.path().join("hang.pids");
    let _cleanup = KillSurvivorsOnDrop::new([pids.clone()]);
    let config = fixture_config(
        "hang",
        &["--hang-on-initialize", "--pid-file", &pids.display().to_string()],
    );
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    // The pid file is written before the fixture reads stdin: it is now
    // waiting for an `initialize` it will never answer.
    let pid = wait_for_pid_file(&pids, 1).await[0];
    assert_eq!(get_server(client, "hang").await.status, Starting);

    let stopped = client.mcp_server_stop("hang").await.expect("stop").server;
    assert_eq!(stopped.status, Cancelled, "{stopped:#?}");
    assert_all_gone(&[pid], Duration::ZERO, "the server once stop returned").await;
    recorder
        .expect_steps("hang", &[(Starting, None), (Cancelled, None)], SERVER_WAIT)
        .await;
    let server = get_server(client, "hang").await;
    assert_eq!(
        (server.status, server.pid, server.failure_reason),
        (Cancelled, None, None)
    );
}

/// docs/protocol.md: "stopping closes the MCP session (the server sees stdin
/// close), waits 40% of `stop_timeout_sec` (2.5 s by default), sends
/// SIGTERM". `--hang-on-initialize` exits 0 as soon as its stdin closes, so a
/// stop during startup that closes stdin first ends it with status 0, at
/// once; one that skips that step waits a second and kills it with SIGTERM.
#[tokio::test]
async fn a_stop_during_startup_closes_stdin_before_signalling() {
    let scratch = scratch_dir();
    let pids = scratch.path().join("hang.pids");
    let _cleanup = KillSurvivorsOnDrop::new([pids.clone()]);
    let config = fixture_config(
        "hang",
        &["--hang-on-initialize", "--pid-file", &pids.display().to_string()],
    );
    let daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    wait_for_pid_file(&pids, 1).await;
    let started = Instant::now();
    client.mcp_server_stop("hang").await.expect("stop");
    let took = started.elapsed();
    let server = get_server(&client, "hang").await;
    eprintln!("stop during startup took {took:?}; lastExit {:?}", server.last_exit);
    assert_eq!(
        server.last_exit.as_deref(),
        Some("exit status: 0"),
        "the server should have seen its stdin close and exited by itself (stop took {took:?}): {server:#?}"
    );
}

/// Kill the server with SIGKILL each time it is ready; returns when it is no
/// longer restarted (`failed`) or after `kills` kills, with the kill times.
async fn kill_whenever_ready(recorder: &StatusRecorder, name: &str, kills: usize) -> Vec<Instant> {
    let client = recorder.client();
    let mut previous_pid = None;
    let mut killed_at = Vec::new();
    for round in 1..=kills {
        let ready = wait_for_server(
            client,
            name,
            &format!("ready for kill {round}"),
            SERVER_WAIT,
            |server| server.status == Ready && server.pid.is_some() && server.pid != previous_pid,
        )
        .await;
        let pid = ready.pid.expect("pid");
        send_signal(pid, libc::SIGKILL);
        killed_at.push(Instant::now());
        previous_pid = Some(pid);
    }
    killed_at
}

/// After 5 deaths within 2 minutes a server is `failed` with `crashLoop` and left alone.
#[tokio::test]
async fn a_server_killed_five_times_after_ready_ends_in_crash_loop() {
    let daemon = TestDaemon::start_with_config(&fixture_config("fragile", &[]));
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    let started = Instant::now();
    kill_whenever_ready(&recorder, "fragile", 5).await;
    let failed_state = wait_for_status(client, "fragile", Failed, SERVER_WAIT).await;
    eprintln!("five crashes to crashLoop took {:?}", started.elapsed());
    assert_eq!(
        failed_state.failure_reason,
        Some(FailureReason::CrashLoop),
        "{failed_state:#?}"
    );
    assert_eq!(
        failed_state.restart_count, 4,
        "restarted after crashes 1-4, not after the 5th"
    );
    assert_eq!(failed_state.pid, None);
    let error = failed_state.error.clone().unwrap_or_default();
    assert!(error.contains("crashed 5 times"), "{error}");
    assert!(error.contains("signal: 9"), "names how it last ended: {error}");
    let mut expected = vec![(Starting, None), (Ready, None)];
    for _ in 0..4 {
        expected.extend([(Starting, None), (Ready, None)]);
    }
    expected.push(failed(FailureReason::CrashLoop));
    recorder.expect_steps("fragile", &expected, SERVER_WAIT).await;

    // Left alone: a start is what brings it back, with a fresh crash budget.
    let restarted = client.mcp_server_start("fragile").await.expect("start").server;
    assert_eq!(restarted.status, Starting);
    let ready = wait_for_status(client, "fragile", Ready, SERVER_WAIT).await;
    assert!(ready.pid.is_some_and(is_alive));
}

/// docs/protocol.md: "a server that dies after `ready` is restarted after
/// `restart_backoff_initial_sec` (0.5 s), doubling up to
/// `restart_backoff_max_sec` (30 s)" (defaults here). Each kill here comes right after `ready`, so
/// the crashes are consecutive. `starting` is announced at the crash (the
/// restart has begun) and the relaunch waits out the backoff, so the delay from
/// kill to the next `ready` is at least about 0.5 s, 1 s, 2 s. Only lower
/// bounds are asserted (a slow machine makes delays longer, never shorter).
#[tokio::test]
async fn restarts_after_consecutive_crashes_back_off_doubling_from_half_a_second() {
    let daemon = TestDaemon::start_with_config(&fixture_config("fragile", &[]));
    let recorder = StatusRecorder::start(&daemon).await;
    let killed_at = kill_whenever_ready(&recorder, "fragile", 3).await;
    // The third restart: starting, ready, then (starting, ready) x 3.
    let updates = recorder.wait_for_count("fragile", 8, SERVER_WAIT).await;
    let restarts: Vec<Instant> = updates
        .iter()
        .skip(2)
        .filter(|recorded| recorded.update.status == Ready)
        .map(|recorded| recorded.received)
        .collect();
    assert_eq!(restarts.len(), 3, "{updates:#?}");
    let delays: Vec<Duration> = killed_at
        .iter()
        .zip(&restarts)
        .map(|(killed, restarted)| restarted.duration_since(*killed))
        .collect();
    eprintln!("kill → next `ready`: {delays:?}");
    let expected = [500u64, 1000, 2000].map(Duration::from_millis);
    for (n, (delay, backoff)) in delays.iter().zip(expected).enumerate() {
        // 10% below the backoff: timer and notification latency only add time.
        assert!(
            *delay >= backoff.mul_f64(0.9),
            "restart {} came {delay:?} after the crash, expected at least ~{backoff:?} (all delays: {delays:?})",
            n + 1
        );
    }
}
