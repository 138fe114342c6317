//! No survivors: whichever way a stdio server ends (stop, restart, a crash,
//! the daemon's SIGTERM, even a SIGKILL of the daemon followed by the next
//! daemon on the same socket), no process of its tree outlives it. Checked
//! by pid in `/proc`, for the server itself and for grandchildren that stay
//! in its process group, leave it with `setsid`, or double-fork away.
//!
//! The fixture server writes its own pid and its grandchildren's to a pid
//! file before it reads stdin (`tests/peers/README.md`), and
//! `KillSurvivorsOnDrop` kills whatever a failing test leaves behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corral_client::protocol::ServerStatus;
use corral_tests::{
    KillSurvivorsOnDrop, SERVER_WAIT, TestDaemon, assert_all_alive, assert_all_gone, fixture_config, get_server,
    process_group, scratch_dir, send_signal, wait_for_pid_file, wait_for_server, wait_for_status,
};
use tempfile::TempDir;

use ServerStatus::Ready;

/// Flags for a server with one grandchild of each kind; it keeps running
/// after its stdin closes, so only a signal ends it.
const TREE_FLAGS: [&str; 4] = [
    "--ignore-stdin-close",
    "--spawn-child",
    "--spawn-setsid-child",
    "--double-fork",
];

/// Pids a tree server writes: itself, then the grandchildren in flag order.
const TREE_PIDS: usize = 4;

/// A scratch dir holding one pid file per server name, killing what they list on drop.
struct PidFiles {
    dir: TempDir,
    _cleanup: KillSurvivorsOnDrop,
}

impl PidFiles {
    fn new(names: &[&str]) -> Self {
        let dir = scratch_dir();
        let cleanup = KillSurvivorsOnDrop::new(names.iter().map(|name| dir.path().join(format!("{name}.pids"))));
        Self { dir, _cleanup: cleanup }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pids"))
    }

    /// A fixture entry for `name` with `flags` and its pid file.
    fn config(&self, name: &str, flags: &[&str]) -> String {
        let pid_file = self.path(name).display().to_string();
        let mut all: Vec<&str> = flags.to_vec();
        all.extend(["--pid-file", &pid_file]);
        fixture_config(name, &all)
    }
}

/// Check that the tree in `pids` (server, in-group child, setsid child,
/// double-forked daemon) is alive and shaped as the test needs: two of its
/// processes outside the server's process group, so that signalling the
/// group alone could not end them.
fn assert_tree_shape(pids: &[u32], context: &str) {
    assert_eq!(pids.len(), TREE_PIDS, "{context}: {pids:?}");
    assert_all_alive(pids, context);
    let server = pids[0];
    assert_eq!(
        process_group(server),
        Some(server),
        "{context}: the server leads its group"
    );
    assert_eq!(
        process_group(pids[1]),
        Some(server),
        "{context}: --spawn-child stays in the group"
    );
    for escaped in &pids[2..] {
        let group = process_group(*escaped);
        assert!(
            group.is_some() && group != Some(server),
            "{context}: {escaped} should have left the server's group, is in {group:?}"
        );
    }
}

async fn ready_pid(client: &corral_client::Client, name: &str) -> u32 {
    wait_for_status(client, name, Ready, SERVER_WAIT)
        .await
        .pid
        .expect("a ready server has a pid")
}

#[tokio::test]
async fn stop_leaves_no_process_of_the_servers_tree() {
    let files = PidFiles::new(&["tree"]);
    let daemon = TestDaemon::start_with_config(&files.config("tree", &TREE_FLAGS));
    let client = daemon.connect_client().await;
    let pid = ready_pid(&client, "tree").await;
    let pids = wait_for_pid_file(&files.path("tree"), TREE_PIDS).await;
    assert_eq!(pids[0], pid);
    assert_tree_shape(&pids, "before stop");

    let started = Instant::now();
    let stopped = client.mcp_server_stop("tree").await.expect("stop").server;
    let took = started.elapsed();
    eprintln!("stop of a server that ignores stdin close took {took:?}");
    assert_eq!(stopped.status, ServerStatus::Stopped);
    assert_all_gone(&pids, Duration::ZERO, "the tree once stop returned").await;
    let server = get_server(&client, "tree").await;
    assert_eq!(
        server.last_exit.as_deref(),
        Some("signal: 15 (SIGTERM)"),
        "it ignored stdin close, so SIGTERM ended it: {server:#?}"
    );
}

/// The whole ladder with the default `stop_timeout_sec` (2.5 s): stdin close
/// (ignored), 1 s, SIGTERM (ignored), 1.5 s, SIGKILL.
#[tokio::test]
async fn stop_of_a_server_that_ignores_sigterm_ends_it_with_sigkill_within_the_ladder() {
    let files = PidFiles::new(&["stubborn"]);
    let daemon = TestDaemon::start_with_config(&files.config("stubborn", &["--ignore-sigterm", "--spawn-child"]));
    let client = daemon.connect_client().await;
    ready_pid(&client, "stubborn").await;
    let pids = wait_for_pid_file(&files.path("stubborn"), 2).await;
    assert_all_alive(&pids, "before stop");

    let started = Instant::now();
    client.mcp_server_stop("stubborn").await.expect("stop");
    let took = started.elapsed();
    eprintln!("stop of a server that ignores SIGTERM took {took:?}");
    assert_all_gone(&pids, Duration::ZERO, "the server and its child once stop returned").await;
    let server = get_server(&client, "stubborn").await;
    let last_exit = server.last_exit.as_deref().unwrap_or_default();
    assert!(last_exit.contains("signal: 9"), "ended by SIGKILL: {server:#?}");
    // Lower bound: each step got its grace; upper bound: the ladder is bounded
    // (`stop_timeout_sec`, 2.5 s by default: 1 s after stdin close, 1.5 s after SIGTERM).
    assert!(took >= Duration::from_millis(2300), "SIGKILL came too early: {took:?}");
    assert!(took < Duration::from_secs(4), "stop took {took:?}");
}

#[tokio::test]
async fn restart_leaves_no_process_of_the_old_tree() {
    let files = PidFiles::new(&["tree"]);
    let daemon = TestDaemon::start_with_config(&files.config("tree", &TREE_FLAGS));
    let client = daemon.connect_client().await;
    ready_pid(&client, "tree").await;
    let old = wait_for_pid_file(&files.path("tree"), TREE_PIDS).await;
    assert_tree_shape(&old, "before restart");

    client.mcp_server_restart("tree").await.expect("restart");
    assert_all_gone(&old, Duration::ZERO, "the old tree once restart returned").await;
    let ready = wait_for_server(&client, "tree", "ready with a new pid", SERVER_WAIT, |server| {
        server.status == Ready && server.pid.is_some_and(|pid| pid != old[0])
    })
    .await;
    assert_eq!(ready.restart_count, 0, "a restart on request is not a crash");
    let all = wait_for_pid_file(&files.path("tree"), 2 * TREE_PIDS).await;
    let new = &all[TREE_PIDS..];
    assert_eq!(new[0], ready.pid.expect("pid"));
    assert_tree_shape(new, "after restart");
}

/// A server killed from outside takes its whole tree with it, even when
/// grandchildren hold its stdout open (so corrald never sees EOF on it).
#[tokio::test]
async fn a_crashed_servers_tree_goes_with_it_before_the_restart() {
    let files = PidFiles::new(&["crashy"]);
    let mut flags = TREE_FLAGS.to_vec();
    flags.push("--child-inherits-stdio");
    let daemon = TestDaemon::start_with_config(&files.config("crashy", &flags));
    let client = daemon.connect_client().await;
    ready_pid(&client, "crashy").await;
    let old = wait_for_pid_file(&files.path("crashy"), TREE_PIDS).await;
    assert_tree_shape(&old, "before the crash");

    send_signal(old[0], libc::SIGKILL);
    let ready = wait_for_server(
        &client,
        "crashy",
        "ready again after the crash",
        SERVER_WAIT,
        |server| server.status == Ready && server.pid.is_some_and(|pid| pid != old[0]),
    )
    .await;
    assert_eq!(ready.restart_count, 1);
    // The restart happens after the old tree is torn down.
    assert_all_gone(&old, Duration::ZERO, "the crashed server's tree once it was restarted").await;
    let all = wait_for_pid_file(&files.path("crashy"), 2 * TREE_PIDS).await;
    assert_tree_shape(&all[TREE_PIDS..], "after the restart");
}

/// A config with a tree server and a SIGTERM-ignoring one, both with pid files.
fn two_trees(files: &PidFiles) -> String {
    format!(
        "{}{}",
        files.config("tree", &TREE_FLAGS),
        files.config(
            "stubborn",
            &[
                "--ignore-sigterm",
                "--spawn-child",
                "--spawn-setsid-child",
                "--double-fork"
            ]
        )
    )
}

/// Wait until both servers of [`two_trees`] are ready; returns every pid they wrote.
async fn both_trees_ready(daemon: &TestDaemon, files: &PidFiles) -> Vec<u32> {
    let client = daemon.connect_client().await;
    ready_pid(&client, "tree").await;
    ready_pid(&client, "stubborn").await;
    let mut pids = wait_for_pid_file(&files.path("tree"), TREE_PIDS).await;
    pids.extend(wait_for_pid_file(&files.path("stubborn"), TREE_PIDS).await);
    assert_tree_shape(&pids[..TREE_PIDS], "tree");
    assert_tree_shape(&pids[TREE_PIDS..], "stubborn");
    pids
}

#[tokio::test]
async fn daemon_sigterm_leaves_no_process_of_any_server() {
    let files = PidFiles::new(&["tree", "stubborn"]);
    let mut daemon = TestDaemon::start_with_config(&two_trees(&files));
    let pids = both_trees_ready(&daemon, &files).await;

    let started = Instant::now();
    let status = daemon.sigterm_and_wait();
    eprintln!("daemon shutdown with two server trees took {:?}", started.elapsed());
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    assert_all_gone(&pids, Duration::ZERO, "every server process once corrald exited").await;
    assert!(
        !children_record(daemon.socket_path()).exists(),
        "a clean shutdown removes the children record"
    );
}

/// `<socket>.children`, the record a successor uses to clean up.
fn children_record(socket: &Path) -> PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".children");
    PathBuf::from(name)
}

#[tokio::test]
async fn after_a_daemon_sigkill_the_next_daemon_on_the_socket_kills_what_it_left() {
    let files = PidFiles::new(&["tree", "stubborn"]);
    let mut first = TestDaemon::start_with_config(&two_trees(&files));
    let pids = both_trees_ready(&first, &files).await;

    first.sigkill_and_wait();
    // The daemon had no chance to clean up: everything is still running.
    // (So the check below means something.)
    assert_all_alive(&pids, "right after SIGKILL of corrald");
    let socket = first.socket_path().to_path_buf();
    assert!(
        children_record(&socket).exists(),
        "the killed daemon left its children record"
    );

    let second = TestDaemon::builder().socket_path(&socket).start();
    assert_all_gone(
        &pids,
        Duration::from_secs(5),
        "what the killed daemon left, once a new daemon serves its socket",
    )
    .await;
    assert!(
        second.stderr().contains("killed processes left behind"),
        "the successor says what it did:\n{}",
        second.stderr()
    );
    // The successor first: the killed daemon's temp dir holds the socket it serves.
    drop(second);
    drop(first);
}
