//! A full disk, for real: the daemon's socket directory on a tmpfs of a few KiB (mounted by the
//! test, as root). The children record then cannot be written ("No space left on device"): the
//! error must name the file, be visible in `daemon/status`, leave the daemon serving, and clear
//! once space is back. Needs root (mount); CI and the development machines run as root, and
//! anywhere else the test fails with a message saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use corral_protocol::ServerStatus;
use corral_tests::{
    SERVER_WAIT, TestDaemon, WAIT, fixture_config, fixture_python, fixture_script, poll_until, run_command,
    scratch_dir, wait_for_status,
};

/// A tmpfs mounted at a directory of the test's, unmounted on drop (lazily, so a failing test
/// whose daemon still holds files there cannot leave the mount behind).
struct TinyTmpfs {
    dir: PathBuf,
}

impl TinyTmpfs {
    fn mount(dir: &Path, size_kib: u32) -> TinyTmpfs {
        std::fs::create_dir_all(dir).expect("the mount point");
        let output = run_command(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size_kib}k,mode=0700"))
                .arg("tmpfs")
                .arg(dir),
            WAIT,
        );
        assert!(
            output.status.success(),
            "this test mounts a tmpfs and needs root (or CAP_SYS_ADMIN): `mount` said {output:?}"
        );
        TinyTmpfs { dir: dir.to_path_buf() }
    }

    /// Fill what is left with one file; returns it.
    fn fill(&self) -> PathBuf {
        let filler = self.dir.join("filler");
        let block = vec![0_u8; 1024];
        let mut file = std::fs::File::create(&filler).expect("create the filler");
        // Bounded: the tmpfs is a few KiB, so this ends in a few iterations with ENOSPC.
        for _ in 0..10_000 {
            use std::io::Write as _;
            if file.write_all(&block).and_then(|()| file.sync_all()).is_err() {
                return filler;
            }
        }
        panic!("{} never filled up", self.dir.display());
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[tokio::test]
async fn a_full_disk_is_reported_naming_the_record_and_the_daemon_goes_on() {
    let scratch = scratch_dir();
    let tmpfs = TinyTmpfs::mount(&scratch.path().join("run"), 64);
    let socket = tmpfs.dir.join("corral.sock");
    let record = tmpfs.dir.join("corral.sock.children");

    let daemon = TestDaemon::builder()
        .socket_path(&socket)
        .config(&fixture_config("first", &[]))
        .start();
    let client = daemon.connect_client().await;
    wait_for_status(&client, "first", ServerStatus::Ready, SERVER_WAIT).await;
    let filler = tmpfs.fill();

    // Adding a server changes the record, which can no longer be written.
    let entry = serde_json::json!({
        "command": fixture_python(),
        "args": [fixture_script()],
    });
    client.mcp_server_add("second", entry).await.expect("mcpServer/add");
    wait_for_status(&client, "second", ServerStatus::Ready, SERVER_WAIT).await;
    let error = poll_until("daemon/status to report the record", || async {
        client
            .daemon_status()
            .await
            .expect("daemon/status")
            .children_record_error
    })
    .await;
    assert!(
        error.contains(&record.display().to_string()) && error.contains("No space left on device"),
        "the error must name the file and the cause: {error}"
    );

    // The daemon goes on: requests are answered and servers run.
    assert_eq!(client.mcp_server_list().await.expect("mcpServer/list").servers.len(), 2);

    std::fs::remove_file(&filler).expect("free the space");
    poll_until("the record to be written again", || async {
        client
            .daemon_status()
            .await
            .expect("daemon/status")
            .children_record_error
            .is_none()
            .then_some(())
    })
    .await;
    let written = std::fs::read_to_string(&record).expect("the record");
    let second = client.mcp_server_get("second").await.expect("mcpServer/get").server;
    let pid = second.pid.expect("the second server's pid");
    assert!(
        written.contains(&pid.to_string()),
        "the record lists the new server {pid}: {written}"
    );
    drop(client);
    drop(daemon);
}
