//! The daemon process and its socket: signals, one daemon per socket, stale
//! sockets, permissions, the peer uid check, and a broken config file.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use corral_tests::{TestDaemon, WAIT, emit_test_events, run_command, within};
use serde_json::{Value, json};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|error| panic!("metadata of {}: {error}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Stop with `signal` while a front-end is connected: exit code 0, the
/// front-end sees the connection close, the socket is gone (the lock file
/// stays: see `the_lock_file_is_never_unlinked_so_two_daemons_never_both_own_a_socket`).
async fn stops_cleanly_on(signal: libc::c_int) {
    let mut daemon = TestDaemon::start();
    let client = daemon.connect_client().await;
    client.daemon_status().await.expect("daemon/status");
    assert!(daemon.socket_path().exists());
    assert!(daemon.lock_path().exists());
    let status = daemon.signal_and_wait(signal);
    assert_eq!(
        status.code(),
        Some(0),
        "signal {signal}: {status}; stderr:\n{}",
        daemon.stderr()
    );
    assert!(!daemon.socket_path().exists(), "the socket file is removed");
    assert!(daemon.lock_path().exists(), "the lock file stays");
    within("the client to see the connection close", client.closed()).await;
    assert!(daemon.stderr().contains("shutting down"), "{}", daemon.stderr());
}

#[tokio::test]
async fn sigterm_exits_zero_and_removes_the_socket() {
    stops_cleanly_on(libc::SIGTERM).await;
}

#[tokio::test]
async fn sigint_exits_zero_and_removes_the_socket() {
    stops_cleanly_on(libc::SIGINT).await;
}

/// A service manager, or a front-end that started the daemon and watches for
/// its socket, may stop the daemon the moment the socket exists; the daemon
/// must already be able to shut down cleanly then. (A race, so it is tried
/// many times; each attempt takes a few milliseconds.)
#[test]
fn sigterm_as_soon_as_the_socket_appears_still_exits_cleanly() {
    for attempt in 1..=50 {
        let mut daemon = TestDaemon::builder().spawn();
        let deadline = Instant::now() + WAIT;
        // Deliberately no sleep: signal the daemon at the first moment its socket exists.
        while std::fs::symlink_metadata(daemon.socket_path()).is_err() {
            assert!(
                Instant::now() < deadline,
                "no socket after {WAIT:?}:\n{}",
                daemon.stderr()
            );
            assert!(
                daemon.try_exit_status().is_none(),
                "corrald exited:\n{}",
                daemon.stderr()
            );
            std::thread::yield_now();
        }
        let status = daemon.sigterm_and_wait();
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: corrald died of a SIGTERM sent right after its socket appeared ({status}); \
             socket left behind: {}",
            daemon.socket_path().exists()
        );
        assert!(!daemon.socket_path().exists(), "attempt {attempt}: socket left behind");
    }
}

#[tokio::test]
async fn sigterm_with_a_front_end_that_never_reads_still_exits() {
    let mut daemon = TestDaemon::start();
    let mut stuck = daemon.raw_line_connection().await;
    stuck.initialize().await;
    let emitter = daemon.connect_client().await;
    // Enough notifications to fill the stuck connection's socket buffer, so
    // the daemon's writer for it is blocked when the signal arrives.
    emit_test_events(&emitter, 3000, "fill").await;
    let started = Instant::now();
    // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
    let sent = unsafe { libc::kill(libc::pid_t::try_from(daemon.pid()).expect("pid"), libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = daemon
        .wait_for_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("corrald did not exit within 15 s of SIGTERM:\n{}", daemon.stderr()));
    eprintln!(
        "SIGTERM with a stuck front-end: exited ({status}) after {:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
    assert!(!daemon.socket_path().exists());
    drop(stuck);
}

#[tokio::test]
async fn a_second_daemon_on_the_same_socket_exits_naming_the_first() {
    let first = TestDaemon::start();
    let client = first.connect_client().await;
    let mut second = TestDaemon::builder().socket_path(first.socket_path()).spawn();
    let status = second
        .wait_for_exit(WAIT)
        .unwrap_or_else(|| panic!("the second corrald kept running:\n{}", second.stderr()));
    assert!(!status.success(), "the second corrald must fail: {status}");
    let stderr = second.stderr();
    assert!(stderr.contains("already serving"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {}", first.pid())),
        "names the first daemon's pid: {stderr}"
    );
    assert!(stderr.contains(&first.socket_path().display().to_string()), "{stderr}");

    // The first daemon is untouched and keeps serving, old and new connections alike.
    assert!(first.socket_path().exists());
    assert!(first.lock_path().exists());
    assert_eq!(
        client.daemon_status().await.expect("status").daemon_info.pid,
        first.pid()
    );
    let fresh = first.connect_client().await;
    assert_eq!(fresh.initialize_result().daemon_info.pid, first.pid());
}

#[tokio::test]
async fn a_killed_daemon_leaves_a_stale_socket_that_the_next_one_replaces() {
    let mut first = TestDaemon::start();
    let client = first.connect_client().await;
    client.daemon_status().await.expect("daemon/status");
    let status = first.sigkill_and_wait();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let socket = first.socket_path().to_path_buf();
    let file_type = std::fs::symlink_metadata(&socket)
        .expect("SIGKILL leaves the socket file behind")
        .file_type();
    assert!(file_type.is_socket());

    let second = TestDaemon::builder().socket_path(&socket).start();
    let client = second.connect_client().await;
    assert_eq!(client.initialize_result().daemon_info.pid, second.pid());
    assert_eq!(
        client.daemon_status().await.expect("status").daemon_info.pid,
        second.pid()
    );
    assert!(second.stderr().contains("stale"), "{}", second.stderr());
    assert_eq!(
        std::fs::read_to_string(second.lock_path()).expect("lock file").trim(),
        second.pid().to_string(),
        "the lock file names the new daemon"
    );
}

/// A daemon that unlinked its lock file on the way out let two successors
/// both own the socket: one that had opened the old file (and locks it once
/// the daemon exits) and one that creates a new file. The test plays the first
/// successor with the lock file's descriptor; the second must be refused.
#[test]
fn the_lock_file_is_never_unlinked_so_two_daemons_never_both_own_a_socket() {
    let mut first = TestDaemon::start();
    let contender = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(first.lock_path())
        .expect("open the lock file as a contending daemon would");
    let status = first.sigterm_and_wait();
    assert_eq!(status.code(), Some(0), "{}", first.stderr());
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let locked = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&contender),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(locked, 0, "the contender holds the lock once the first daemon is gone");

    let mut second = TestDaemon::builder().socket_path(first.socket_path()).spawn();
    let exit = second.wait_for_exit(WAIT);
    assert!(
        exit.is_some_and(|status| !status.success()),
        "a second daemon must not start while the contender holds the lock ({exit:?}); stderr:\n{}",
        second.stderr()
    );
    assert!(second.stderr().contains("another corrald"), "{}", second.stderr());
    drop(contender);
}

#[tokio::test]
async fn the_socket_is_private_and_so_is_a_directory_the_daemon_creates() {
    let daemon = TestDaemon::builder()
        .socket_in_temp_dir("run/corral/corral.sock")
        .start();
    let socket = daemon.socket_path();
    assert!(std::fs::metadata(socket).expect("socket").file_type().is_socket());
    assert_eq!(mode(socket), 0o600, "socket mode");
    assert_eq!(mode(&daemon.lock_path()), 0o600, "lock file mode");
    let created = daemon.dir().join("run/corral");
    assert_eq!(mode(&created), 0o700, "{} mode", created.display());
    assert_eq!(
        mode(&daemon.dir().join("run")),
        0o700,
        "every created directory is private"
    );
    let client = daemon.connect_client().await;
    client.daemon_status().await.expect("daemon/status");
}

/// Connects as uid/gid 65534 (nobody), sends `initialize` and reports what
/// came back; then connects `argv[2]` more times at once (a flood), and
/// reports how many of those the daemon accepted and closed.
const CONNECT_AS_NOBODY: &str = r#"
import json, os, socket, sys
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
result = {"uid": os.getuid()}
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.settimeout(10)
try:
    sock.connect(sys.argv[1])
except OSError as error:
    result.update(outcome="connect-failed", error=str(error))
else:
    request = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"protocolVersion": 1, "clientInfo": {"name": "intruder"}}}
    try:
        sock.sendall((json.dumps(request) + "\n").encode())
        data = sock.recv(65536)
        result.update(outcome="eof" if data == b"" else "answered", data=data.decode("utf-8", "replace"))
    except socket.timeout:
        result.update(outcome="timeout")
    except (ConnectionResetError, BrokenPipeError) as error:
        result.update(outcome="closed", error=str(error))
closed = 0
for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 0):
    flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    flood.settimeout(10)
    try:
        flood.connect(sys.argv[1])
        if flood.recv(1) == b"":
            closed += 1
    except OSError:
        pass
    finally:
        flood.close()
result.update(flood_closed=closed)
print(json.dumps(result))
"#;

#[tokio::test]
async fn connections_from_another_user_are_closed_without_an_answer() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test connects as another user, which needs root (the test machines and CI run as root)"
    );
    let daemon = TestDaemon::start();
    // Let anyone reach the socket, so that only the daemon's own check stands in the way.
    std::fs::set_permissions(daemon.dir(), std::fs::Permissions::from_mode(0o777)).expect("chmod dir");
    std::fs::set_permissions(daemon.socket_path(), std::fs::Permissions::from_mode(0o666)).expect("chmod socket");

    if let Err(error) = Command::new("python3").arg("--version").output() {
        panic!("python3 is needed for this test ({error}): install it with `apt-get install python3`");
    }
    let mut python = Command::new("python3");
    python
        .arg("-c")
        .arg(CONNECT_AS_NOBODY)
        .arg(daemon.socket_path())
        .arg("50");
    let output = run_command(&mut python, WAIT);
    assert!(output.status.success(), "python3 failed: {}", output.stderr);
    let result: Value = serde_json::from_str(output.stdout.trim())
        .unwrap_or_else(|error| panic!("python3 printed no JSON ({error}): {}", output.stdout));
    assert_eq!(result["uid"], 65534, "privileges were dropped: {result}");
    let outcome = result["outcome"].as_str().unwrap_or_default();
    assert!(
        outcome == "eof" || outcome == "closed",
        "a connection from uid 65534 must be closed without an answer, got {result}"
    );

    assert_eq!(
        result["flood_closed"], 50,
        "every connection of the flood was closed: {result}"
    );

    corral_tests::poll_until("the daemon to log the refused connection", || async {
        daemon
            .stderr()
            .contains("refused a connection from another user")
            .then_some(())
    })
    .await;
    // 51 refusals within a second: one log line (the count comes with the next one).
    let stderr = daemon.stderr();
    assert_eq!(
        stderr.matches("refused a connection from another user").count(),
        1,
        "a flood of refused connections is one log line per interval:\n{stderr}"
    );
    // The daemon's own user is still served.
    let mut same_user = daemon.raw_line_connection().await;
    same_user.initialize().await;
    let status = same_user.call("daemon/status", json!({})).await;
    assert_eq!(status["daemonInfo"]["pid"], daemon.pid());
}

#[tokio::test]
async fn a_broken_config_file_is_reported_and_the_daemon_serves_anyway() {
    let daemon = TestDaemon::start_with_config("[servers.fine]\ncommand = \"true\"\n\n[servers.broken]\ncommand = 3\n");
    let client = daemon.connect_client().await;
    let status = client.daemon_status().await.expect("daemon/status");
    let config_path = daemon.config_path().display().to_string();
    let error = status.config_error.expect("daemon/status reports the config error");
    assert!(
        error.contains(&format!("{config_path}:5")),
        "names the file and line: {error}"
    );
    assert!(error.contains("broken"), "names the server: {error}");
    assert!(error.contains("command"), "names the field: {error}");
    assert!(status.config_file_exists);
    assert_eq!(status.servers.total, 0, "a broken file contributes no servers");
    assert!(client.mcp_server_list().await.expect("list").servers.is_empty());

    let mut corral = corral_tests::corral_command();
    corral.arg("status").arg("--socket").arg(daemon.socket_path());
    let output = run_command(&mut corral, WAIT);
    assert!(output.status.success(), "{}", output.stderr);
    assert!(output.stdout.contains("config error"), "{}", output.stdout);
    assert!(output.stdout.contains(&format!("{config_path}:5")), "{}", output.stdout);
}
