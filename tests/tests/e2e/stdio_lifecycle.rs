//! stdio MCP servers under the real corrald, driven through the client SDK
//! and the `corral` CLI: getting ready, stop / start / restart on request, a
//! crash after `ready` and its restart, a disabled server, and many servers
//! started at once.
//!
//! The servers are real: `@modelcontextprotocol/server-everything` and
//! `server-filesystem` (npm), and the fixture server on the official Python
//! SDK (`tests/peers/`, installed by `bash tests/run.sh`).

use std::time::{Duration, Instant};

use corral_client::protocol::{ServerStatus, TransportKind};
use corral_tests::{
    SERVER_WAIT, StatusRecorder, TestDaemon, assert_all_gone, everything_config, filesystem_config, fixture_config,
    get_server, is_alive, run_corral, scratch_dir, send_signal, wait_for_server, wait_for_status,
};

use ServerStatus::{Ready, Starting, Stopped};

/// How long a stopped server is watched to make sure nothing restarts it.
const STAYS_STOPPED_FOR: Duration = Duration::from_secs(2);

#[tokio::test]
async fn server_everything_gets_ready_stops_for_good_starts_and_restarts() {
    let daemon = TestDaemon::start_with_config(&everything_config("everything"));
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();

    let ready = wait_for_status(client, "everything", Ready, SERVER_WAIT).await;
    assert_eq!(ready.tool_count, Some(16), "{ready:#?}");
    let info = ready.server_info.as_ref().expect("serverInfo once ready");
    assert_eq!(info.name, "mcp-servers/everything", "{ready:#?}");
    assert_eq!(ready.transport, TransportKind::Stdio);
    assert!(ready.enabled);
    assert_eq!((ready.failure_reason, ready.error.as_deref()), (None, None));
    assert_eq!(ready.restart_count, 0);
    assert!(ready.uptime_ms.is_some(), "{ready:#?}");
    let first_pid = ready.pid.expect("a ready stdio server has a pid");
    assert!(is_alive(first_pid), "pid {first_pid} is not a live process");
    recorder
        .expect_steps("everything", &[(Starting, None), (Ready, None)], SERVER_WAIT)
        .await;

    // `corral stop` answers once the processes are gone.
    let output = run_corral(daemon.socket_path(), &["stop", "everything"]).await;
    assert!(output.status.success(), "corral stop: {}", output.stderr);
    assert_eq!(output.stdout.trim(), "everything: stopped");
    assert_all_gone(&[first_pid], Duration::ZERO, "the server once `corral stop` returned").await;
    let stopped = get_server(client, "everything").await;
    assert_eq!((stopped.status, stopped.pid, stopped.uptime_ms), (Stopped, None, None));

    // Stopped on purpose: nothing restarts it.
    let watch_until = Instant::now() + STAYS_STOPPED_FOR;
    while Instant::now() < watch_until {
        let server = get_server(client, "everything").await;
        assert_eq!((server.status, server.pid), (Stopped, None), "{server:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    recorder
        .expect_steps(
            "everything",
            &[(Starting, None), (Ready, None), (Stopped, None)],
            SERVER_WAIT,
        )
        .await;

    let output = run_corral(daemon.socket_path(), &["start", "everything"]).await;
    assert!(output.status.success(), "corral start: {}", output.stderr);
    let ready = wait_for_status(client, "everything", Ready, SERVER_WAIT).await;
    let second_pid = ready.pid.expect("pid");
    assert_ne!(second_pid, first_pid, "a start launches a new process");
    assert_eq!(ready.tool_count, Some(16));

    // A restart on request is not a crash: new process, restartCount unchanged.
    let restarted = client.mcp_server_restart("everything").await.expect("restart").server;
    assert_all_gone(&[second_pid], Duration::ZERO, "the old process once restart returned").await;
    assert_ne!(restarted.pid, Some(second_pid));
    let ready = wait_for_status(client, "everything", Ready, SERVER_WAIT).await;
    let third_pid = ready.pid.expect("pid");
    assert_ne!(third_pid, second_pid);
    assert_eq!(ready.restart_count, 0, "{ready:#?}");
    recorder
        .expect_steps(
            "everything",
            &[
                (Starting, None),
                (Ready, None),
                (Stopped, None),
                (Starting, None),
                (Ready, None),
                // restart = stop, then start
                (Stopped, None),
                (Starting, None),
                (Ready, None),
            ],
            SERVER_WAIT,
        )
        .await;
}

#[tokio::test]
async fn server_filesystem_on_a_temp_dir_gets_ready_with_14_tools() {
    let root = scratch_dir();
    let daemon = TestDaemon::start_with_config(&filesystem_config("files", root.path()));
    let client = daemon.connect_client().await;
    let ready = wait_for_status(&client, "files", Ready, SERVER_WAIT).await;
    assert_eq!(ready.tool_count, Some(14), "{ready:#?}");
    let info = ready.server_info.as_ref().expect("serverInfo");
    assert_eq!(info.name, "secure-filesystem-server");
    let pid = ready.pid.expect("pid");
    client.mcp_server_stop("files").await.expect("stop");
    assert_all_gone(&[pid], Duration::ZERO, "server-filesystem once stop returned").await;
}

/// A server that dies after `ready` is restarted (the first restart after 0.5 s).
#[tokio::test]
async fn a_server_killed_after_ready_is_restarted_with_a_new_pid() {
    let daemon = TestDaemon::start_with_config(&fixture_config("victim", &[]));
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    let ready = wait_for_status(client, "victim", Ready, SERVER_WAIT).await;
    assert_eq!(ready.tool_count, Some(3), "echo, pid, sleep: {ready:#?}");
    assert_eq!(
        ready.server_info.as_ref().map(|info| info.name.as_str()),
        Some("fixture")
    );
    let first_pid = ready.pid.expect("pid");

    send_signal(first_pid, libc::SIGKILL);
    let again = wait_for_server(client, "victim", "ready with a new pid", SERVER_WAIT, |server| {
        server.status == Ready && server.pid.is_some_and(|pid| pid != first_pid)
    })
    .await;
    assert_eq!(again.restart_count, 1, "{again:#?}");
    assert_eq!(again.tool_count, Some(3));
    let last_exit = again.last_exit.as_deref().unwrap_or_default();
    assert!(
        last_exit.contains("signal: 9"),
        "lastExit names the SIGKILL: {again:#?}"
    );
    assert!(!is_alive(first_pid));
    recorder
        .expect_steps(
            "victim",
            &[(Starting, None), (Ready, None), (Starting, None), (Ready, None)],
            SERVER_WAIT,
        )
        .await;
}

#[tokio::test]
async fn a_disabled_server_is_never_started_and_emits_nothing() {
    let config = format!(
        "{}enabled = false\n{}",
        fixture_config("dormant", &[]),
        fixture_config("awake", &[])
    );
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    // Every config server's task starts at once: by the time `awake` is
    // ready, `dormant` has long had its chance to publish something.
    wait_for_status(client, "awake", Ready, SERVER_WAIT).await;
    let dormant = get_server(client, "dormant").await;
    assert!(!dormant.enabled, "{dormant:#?}");
    assert_eq!((dormant.status, dormant.pid, dormant.restart_count), (Stopped, None, 0));
    assert_eq!(dormant.last_exit, None, "never launched: {dormant:#?}");
    assert!(
        recorder.updates("dormant").is_empty(),
        "{:?}",
        recorder.updates("dormant")
    );
    assert_eq!(recorder.steps("awake"), [(Starting, None), (Ready, None)]);
}

#[tokio::test]
async fn ten_servers_start_in_parallel_and_all_get_ready() {
    const SERVERS: usize = 10;
    let names: Vec<String> = (0..SERVERS).map(|n| format!("fixture-{n}")).collect();
    let config: String = names.iter().map(|name| fixture_config(name, &[])).collect();
    let started = Instant::now();
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    let deadline = Duration::from_secs(60);
    let list = corral_tests::poll_until_for(deadline, "all ten fixtures to be ready", || async {
        let list = client.mcp_server_list().await.expect("mcpServer/list").servers;
        list.iter().all(|server| server.status == Ready).then_some(list)
    })
    .await;
    let elapsed = started.elapsed();
    eprintln!("{SERVERS} fixture servers ready {elapsed:?} after the daemon was spawned");
    let mut pids: Vec<u32> = list.iter().map(|server| server.pid.expect("pid")).collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), SERVERS, "one process each");

    // All were launched before any became ready: none waited for another.
    let mut starting_seqs = Vec::new();
    let mut ready_seqs = Vec::new();
    for name in &names {
        let updates = recorder.updates(name);
        let steps: Vec<_> = updates.iter().map(|u| u.step()).collect();
        assert_eq!(steps, [(Starting, None), (Ready, None)], "{name}");
        starting_seqs.push(updates[0].update.seq);
        ready_seqs.push(updates[1].update.seq);
    }
    let last_starting = starting_seqs.iter().max();
    let first_ready = ready_seqs.iter().min();
    assert!(
        last_starting < first_ready,
        "every server was `starting` before the first was `ready` (last starting seq {last_starting:?}, \
         first ready seq {first_ready:?})"
    );
}
