//! Faults must end in a clean state, with the outcome and the reason a
//! front-end can rely on:
//!
//! - a server that closes its stdout but keeps running is a crash: its tree
//!   is torn down and it goes through the restart policy;
//! - a grandchild that left the process group *and* cleared its environment
//!   (no marker) still goes with its server on stop, restart, a crash and
//!   the daemon's SIGTERM: corrald knew it as a descendant of the server;
//! - a server that dies right after every handshake always ends the same way
//!   (ready, restarted, then `crashLoop`), whichever event corrald notices first;
//! - failures say what happened: invalid JSON in the `initialize` answer is
//!   a `protocolError`, a `command` that is a directory or not executable
//!   says so (`spawnFailed`), not "not found on PATH".

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_client::Client;
use corral_client::protocol::{FailureReason, ServerStatus};
use corral_tests::{
    KillSurvivorsOnDrop, SERVER_WAIT, StatusRecorder, TestDaemon, assert_all_alive, assert_all_gone, fixture_config,
    get_server, poll_until_for, process_group, scratch_dir, send_signal, toml_string, wait_for_pid_file,
    wait_for_server, wait_for_status,
};
use tempfile::TempDir;

use ServerStatus::{Failed, Ready, Starting};

/// A fixture entry for `name` with `flags`, its pid file in `dir`, and more `key = value` lines.
fn entry(dir: &Path, name: &str, flags: &[&str], extra: &str) -> String {
    let pid_file = pid_file(dir, name).display().to_string();
    let mut all: Vec<&str> = flags.to_vec();
    all.extend(["--pid-file", &pid_file]);
    format!("{}{extra}", fixture_config(name, &all))
}

fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pids"))
}

/// Whether `pid` carries a Corral server marker in its environment.
fn carries_marker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        environ
            .split(|byte| *byte == 0)
            .any(|entry| entry.starts_with(b"CORRAL_SERVER_MARKER="))
    })
}

/// A server with one unmarked escapee: the server's pid and the escapee's,
/// checked to be what the test needs (the escapee alive, outside the server's
/// process group, without a marker), and registered for cleanup by pid.
async fn server_and_escapee(dir: &TempDir, name: &str, cleanup: &mut KillSurvivorsOnDrop) -> [u32; 2] {
    let pids = wait_for_pid_file(&pid_file(dir.path(), name), 2).await;
    let (server, escapee) = (pids[0], pids[1]);
    cleanup.also(escapee);
    assert_all_alive(&[server, escapee], "the server and its escapee");
    assert_eq!(process_group(server), Some(server), "the server leads its group");
    assert_ne!(
        process_group(escapee),
        Some(server),
        "the escapee left the server's group"
    );
    assert!(carries_marker(server), "the server has its marker");
    assert!(!carries_marker(escapee), "the escapee cleared its environment");
    [server, escapee]
}

const ESCAPEE: [&str; 1] = ["--spawn-unmarked-setsid-child"];

/// A daemon running the fixture `tree`, ready, whose grandchild escaped its group and cleared
/// its environment; returns what the test holds (in drop order: the daemon before the
/// survivor cleanup before the scratch dir) and the server's and the escapee's pids.
async fn ready_tree_with_escapee() -> (TempDir, KillSurvivorsOnDrop, TestDaemon, Client, [u32; 2]) {
    let dir = scratch_dir();
    let mut cleanup = KillSurvivorsOnDrop::new([pid_file(dir.path(), "tree")]);
    let daemon = TestDaemon::start_with_config(&entry(dir.path(), "tree", &ESCAPEE, ""));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "tree", Ready, SERVER_WAIT).await;
    let pids = server_and_escapee(&dir, "tree", &mut cleanup).await;
    (dir, cleanup, daemon, client, pids)
}

#[tokio::test]
async fn stop_ends_a_grandchild_that_left_the_group_and_cleared_its_environment() {
    let (_dir, _cleanup, _daemon, client, pids) = ready_tree_with_escapee().await;

    client.mcp_server_stop("tree").await.expect("stop");
    assert_all_gone(
        &pids,
        Duration::ZERO,
        "the server and its unmarked escapee once stop returned",
    )
    .await;
}

#[tokio::test]
async fn restart_ends_a_grandchild_that_left_the_group_and_cleared_its_environment() {
    let (dir, mut cleanup, _daemon, client, old) = ready_tree_with_escapee().await;

    client.mcp_server_restart("tree").await.expect("restart");
    assert_all_gone(&old, Duration::ZERO, "the old tree once restart returned").await;
    wait_for_server(&client, "tree", "ready with a new pid", SERVER_WAIT, |server| {
        server.status == Ready && server.pid.is_some_and(|pid| pid != old[0])
    })
    .await;
    let all = wait_for_pid_file(&pid_file(dir.path(), "tree"), 4).await;
    cleanup.also(all[3]);
}

/// The escapee is orphaned (adopted by corrald) the moment its server is
/// killed; corrald knew it as the server's descendant since `ready`.
#[tokio::test]
async fn a_crash_ends_a_grandchild_that_left_the_group_and_cleared_its_environment() {
    let (dir, mut cleanup, _daemon, client, old) = ready_tree_with_escapee().await;

    send_signal(old[0], libc::SIGKILL);
    let ready = wait_for_server(&client, "tree", "ready again after the crash", SERVER_WAIT, |server| {
        server.status == Ready && server.pid.is_some_and(|pid| pid != old[0])
    })
    .await;
    assert_eq!(ready.restart_count, 1);
    assert_all_gone(&old, Duration::ZERO, "the crashed server's tree once it was restarted").await;
    let all = wait_for_pid_file(&pid_file(dir.path(), "tree"), 4).await;
    cleanup.also(all[3]);
}

#[tokio::test]
async fn daemon_sigterm_ends_a_grandchild_that_left_the_group_and_cleared_its_environment() {
    let dir = scratch_dir();
    let mut cleanup = KillSurvivorsOnDrop::new([pid_file(dir.path(), "a"), pid_file(dir.path(), "b")]);
    // One server that exits on stdin close (its escapee is orphaned at once)
    // and one that must be signalled.
    let config = format!(
        "{}{}",
        entry(dir.path(), "a", &ESCAPEE, ""),
        entry(
            dir.path(),
            "b",
            &["--spawn-unmarked-setsid-child", "--ignore-stdin-close"],
            ""
        )
    );
    let mut daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    wait_for_status(&client, "a", Ready, SERVER_WAIT).await;
    wait_for_status(&client, "b", Ready, SERVER_WAIT).await;
    let mut pids = server_and_escapee(&dir, "a", &mut cleanup).await.to_vec();
    pids.extend(server_and_escapee(&dir, "b", &mut cleanup).await);
    drop(client);

    let status = daemon.sigterm_and_wait();
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    assert_all_gone(&pids, Duration::ZERO, "every server process once corrald exited").await;
}

/// R1: closing stdout ends the MCP session; a process that runs on is torn
/// down like a crashed one and restarted under the restart policy. Here it
/// closes stdout after every handshake, so the policy ends in `crashLoop`.
#[tokio::test]
async fn a_server_that_closes_stdout_but_keeps_running_is_torn_down_and_restarted() {
    let dir = scratch_dir();
    let mut cleanup = KillSurvivorsOnDrop::new([pid_file(dir.path(), "mute")]);
    let config = entry(
        dir.path(),
        "mute",
        &[
            "--close-stdout-after-handshake",
            "--ignore-stdin-close",
            "--spawn-unmarked-setsid-child",
        ],
        "crash_loop_limit = 2\nrestart_backoff_initial_sec = 0.1\n",
    );
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let first = server_and_escapee(&dir, "mute", &mut cleanup).await;

    let updates = recorder
        .expect_steps(
            "mute",
            &[
                (Starting, None),
                (Ready, None),
                (Starting, None),
                (Ready, None),
                (Failed, Some(FailureReason::CrashLoop)),
            ],
            SERVER_WAIT,
        )
        .await;
    let pids = wait_for_pid_file(&pid_file(dir.path(), "mute"), 4).await;
    cleanup.also(pids[3]);
    assert_eq!(&pids[..2], &first);
    assert_all_gone(&pids, Duration::ZERO, "both runs' trees once the server is `failed`").await;
    let error = updates[4].update.error.clone().unwrap_or_default();
    assert!(error.contains("crashed 2 times"), "{error}");
    assert!(error.contains("closed its stdout"), "says why: {error}");
    let server = get_server(recorder.client(), "mute").await;
    assert_eq!((server.restart_count, server.pid), (1, None), "{server:#?}");
}

/// R7: a server that exits right after the answer to `tools/list` (the end
/// of corrald's startup) completed its startup: it is `ready`, then crashed,
/// and goes through the restart policy to `crashLoop`, every time. Several
/// servers at once, each started `crash_loop_limit` times, so that both
/// orders of "answer read" and "exit noticed" occur.
#[tokio::test]
async fn a_server_that_exits_right_after_every_handshake_always_ends_in_crash_loop() {
    const SERVERS: usize = 6;
    let names: Vec<String> = (0..SERVERS).map(|n| format!("brief-{n}")).collect();
    let config: String = names
        .iter()
        .map(|name| {
            format!(
                "{}crash_loop_limit = 3\nrestart_backoff_initial_sec = 0.1\n",
                fixture_config(name, &["--exit-after-handshake"])
            )
        })
        .collect();
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let expected = [
        (Starting, None),
        (Ready, None),
        (Starting, None),
        (Ready, None),
        (Starting, None),
        (Ready, None),
        (Failed, Some(FailureReason::CrashLoop)),
    ];
    let mut wrong = Vec::new();
    for name in &names {
        // Whatever the ending, it is `failed`: wait for that, then compare the whole sequence.
        // Three starts each of six Python servers at once, on a busy machine: a generous bound.
        let steps = poll_until_for(4 * SERVER_WAIT, &format!("`{name}` failed"), || async {
            let steps = recorder.steps(name);
            (steps.last().is_some_and(|(status, _)| *status == Failed)).then_some(steps)
        })
        .await;
        let server = get_server(recorder.client(), name).await;
        let as_expected = steps == expected
            && server.last_exit.as_deref() == Some("exit status: 6")
            && server.restart_count == 2
            && server.pid.is_none();
        if !as_expected {
            wrong.push(format!(
                "{name}: steps {steps:?}, lastExit {:?}, restarts {}",
                server.last_exit, server.restart_count
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {SERVERS} servers that exit right after every handshake did not end in crashLoop after 3 runs:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn invalid_json_in_the_initialize_answer_is_a_protocol_error() {
    let dir = scratch_dir();
    let _cleanup = KillSurvivorsOnDrop::new([pid_file(dir.path(), "broken")]);
    // A startup timeout far beyond the wait below: the failure must come from
    // the broken answer, not from the clock.
    let config = entry(
        dir.path(),
        "broken",
        &["--invalid-initialize-answer"],
        "startup_timeout_sec = 120\n",
    );
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let updates = recorder
        .expect_steps(
            "broken",
            &[(Starting, None), (Failed, Some(FailureReason::ProtocolError))],
            SERVER_WAIT,
        )
        .await;
    let error = updates[1].update.error.clone().unwrap_or_default();
    assert!(error.contains("not valid JSON"), "{error}");
    let pid = wait_for_pid_file(&pid_file(dir.path(), "broken"), 1).await[0];
    assert_all_gone(&[pid], Duration::ZERO, "the server once it is `failed`").await;
}

#[tokio::test]
async fn a_command_that_is_a_directory_or_not_executable_says_so() {
    let dir = scratch_dir();
    let not_executable = dir.path().join("tool.sh");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let on_path = bin.join("corral-test-tool");
    std::fs::write(&on_path, "#!/bin/sh\nexit 0\n").expect("write");
    std::fs::set_permissions(&on_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let config = format!(
        "[servers.directory]\ncommand = {}\n\
         [servers.not-executable]\ncommand = {}\n\
         [servers.on-path]\ncommand = \"corral-test-tool\"\nenv = {{ PATH = {} }}\n",
        toml_string(&dir.path().display().to_string()),
        toml_string(&not_executable.display().to_string()),
        toml_string(&bin.display().to_string()),
    );
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let cases = [
        ("directory", dir.path().display().to_string(), "is a directory"),
        (
            "not-executable",
            not_executable.display().to_string(),
            "is not executable",
        ),
        ("on-path", on_path.display().to_string(), "is not executable"),
    ];
    for (name, path, what) in cases {
        let updates = recorder
            .expect_steps(
                name,
                &[(Starting, None), (Failed, Some(FailureReason::SpawnFailed))],
                SERVER_WAIT,
            )
            .await;
        let error = updates[1].update.error.clone().unwrap_or_default();
        assert!(error.contains(&path), "{name}: names the path: {error}");
        assert!(error.contains(what), "{name}: says what it is: {error}");
        assert!(!error.contains("not found"), "{name}: {error}");
    }
}
