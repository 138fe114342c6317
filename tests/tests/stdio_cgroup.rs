//! `--server-cgroups` (Linux, cgroup v2): every stdio server runs in a leaf
//! below corrald's cgroup, and whatever is in the leaf goes with the server,
//! even a grandchild that left the process group and cleared its environment
//! after a SIGKILL of corrald itself, which only the cgroup can still find.
//!
//! Under systemd the unit's delegated cgroup plays this part; here the test
//! makes a cgroup of its own below the cgroup v2 mount and moves its own
//! process into it, so the corrald it starts begins there. This file holds one
//! test on purpose: the move is process-wide.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_client::protocol::ServerStatus;
use corral_tests::{
    KillSurvivorsOnDrop, SERVER_WAIT, TestDaemon, assert_all_alive, assert_all_gone, fixture_config, process_group,
    scratch_dir, wait_for_pid_file, wait_for_status,
};

/// The cgroup v2 mount point, from /proc/self/mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// `pid`'s cgroup v2 path (the `0::` line of /proc/PID/cgroup).
fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_owned)
}

/// A cgroup made for the test, with this test process moved into it; on
/// drop the process moves back, leftover leaves are killed, and it is removed.
struct TestCgroup {
    path: PathBuf,
    original: PathBuf,
}

impl TestCgroup {
    fn new() -> TestCgroup {
        let mount = cgroup2_mount().expect(
            "this test needs a cgroup v2 hierarchy (mount -t cgroup2 none /sys/fs/cgroup, or a hybrid setup's /sys/fs/cgroup/unified)",
        );
        let me = std::process::id();
        let own = cgroup_of(me).expect("the test process's cgroup v2 path");
        let original = mount.join(own.trim_start_matches('/'));
        let path = original.join(format!("corral-test-{me}"));
        std::fs::create_dir(&path).unwrap_or_else(|error| {
            panic!(
                "this test needs to create a cgroup ({}: {error}); run it as root (CI does) or in a delegated cgroup",
                path.display()
            )
        });
        std::fs::write(path.join("cgroup.procs"), me.to_string())
            .unwrap_or_else(|error| panic!("cannot move the test into {}: {error}", path.display()));
        TestCgroup { path, original }
    }

    fn leaves(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.path)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.original.join("cgroup.procs"), std::process::id().to_string());
        for leaf in self.leaves() {
            let _ = std::fs::write(leaf.join("cgroup.kill"), "1");
            for _ in 0..100 {
                if std::fs::remove_dir(&leaf).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn pid_file(dir: &Path) -> PathBuf {
    dir.join("tree.pids")
}

fn bystander_pid_file(dir: &Path) -> PathBuf {
    dir.join("bystander.pids")
}

#[tokio::test]
async fn with_server_cgroups_the_leaf_takes_every_process_even_after_a_sigkill_of_corrald() {
    let cgroup = TestCgroup::new();
    let dir = scratch_dir();
    let mut cleanup = KillSurvivorsOnDrop::new([pid_file(dir.path()), bystander_pid_file(dir.path())]);
    let pids_path = pid_file(dir.path()).display().to_string();
    let config = fixture_config(
        "tree",
        &[
            "--spawn-unmarked-setsid-child",
            "--ignore-stdin-close",
            "--pid-file",
            &pids_path,
        ],
    );

    // Stop: the server and its unmarked escapee are in the leaf, and go with it.
    let daemon = TestDaemon::builder()
        .config(&config)
        .env("CORRAL_SERVER_CGROUPS", "1")
        .start();
    let client = daemon.connect_client().await;
    wait_for_status(&client, "tree", ServerStatus::Ready, SERVER_WAIT).await;
    let pids = wait_for_pid_file(&pid_file(dir.path()), 2).await;
    cleanup.also(pids[1]);
    assert_all_alive(&pids, "the server and its escapee");
    assert_ne!(process_group(pids[1]), Some(pids[0]), "the escapee left the group");
    let leaf = cgroup_of(pids[0]).expect("the server's cgroup");
    assert!(
        leaf.contains("/corral-server-"),
        "the server runs in a leaf of its own: {leaf} ({})",
        daemon.stderr()
    );
    assert_eq!(
        cgroup_of(pids[1]).as_deref(),
        Some(leaf.as_str()),
        "the escapee is in the same leaf"
    );
    client.mcp_server_stop("tree").await.expect("stop");
    assert_all_gone(&pids, Duration::ZERO, "the tree once stop returned").await;
    assert!(cgroup.leaves().is_empty(), "the leaf is removed: {:?}", cgroup.leaves());

    // A second daemon on another socket, in the same cgroup: its leaves are
    // its own, and nothing below (a successor's clean-up, a shutdown) touches them.
    let bystander_pids = bystander_pid_file(dir.path()).display().to_string();
    let bystander = TestDaemon::builder()
        .config(&fixture_config("bystander", &["--pid-file", &bystander_pids]))
        .env("CORRAL_SERVER_CGROUPS", "1")
        .start();
    let bystander_client = bystander.connect_client().await;
    wait_for_status(&bystander_client, "bystander", ServerStatus::Ready, SERVER_WAIT).await;
    let bystanders = wait_for_pid_file(&bystander_pid_file(dir.path()), 1).await;
    let bystander_leaf = cgroup_of(bystanders[0]).expect("the bystander's cgroup");
    assert!(
        bystander_leaf.contains("/corral-server-"),
        "the other daemon's server runs in a leaf: {bystander_leaf} ({})",
        bystander.stderr()
    );

    // SIGKILL of corrald: its successor on the same socket and cgroup finds
    // the unmarked escapee in the leaf the dead daemon left.
    client.mcp_server_start("tree").await.expect("start");
    wait_for_status(&client, "tree", ServerStatus::Ready, SERVER_WAIT).await;
    let all = wait_for_pid_file(&pid_file(dir.path()), 4).await;
    let second = all[2..].to_vec();
    cleanup.also(second[1]);
    assert_all_alive(&second, "the second run");
    drop(client);
    let mut first = daemon;
    first.sigkill_and_wait();
    assert_all_alive(&second, "right after SIGKILL of corrald");
    let socket = first.socket_path().to_path_buf();
    let successor = TestDaemon::builder()
        .socket_path(&socket)
        .env("CORRAL_SERVER_CGROUPS", "1")
        .start();
    assert_all_gone(
        &second,
        Duration::from_secs(5),
        "what the killed daemon left, once a new daemon with --server-cgroups serves its socket",
    )
    .await;
    assert!(
        successor.stderr().contains("left by a previous daemon"),
        "the successor says what it did:\n{}",
        successor.stderr()
    );
    assert_all_alive(
        &bystanders,
        "the other daemon's server, after the successor cleaned up its socket's leaves",
    );
    drop(successor);
    assert_all_alive(&bystanders, "the other daemon's server, after the successor shut down");
    assert_eq!(
        cgroup_of(bystanders[0]).as_deref(),
        Some(bystander_leaf.as_str()),
        "still in its own leaf"
    );
    drop(bystander_client);
    drop(bystander);
    assert_all_gone(
        &bystanders,
        Duration::from_secs(5),
        "the other daemon's server, once it stopped",
    )
    .await;
    drop(first);
    drop(cgroup);
}
