//! Session servers: added by one connection with `mcpServer/add`, shared in
//! listings, removable only by their session, and stopped with their whole
//! process tree when the session ends. Real processes: the Python fixture
//! server from `tests/peers`, which records its pid and its children's pids.

use std::path::{Path, PathBuf};
use std::time::Duration;

use corral_client::protocol::{ErrorCode, ServerOrigin, ServerStatus};
use corral_client::{Client, ClientError};
use corral_tests::{TestDaemon, poll_until, poll_until_for, workspace_root};
use serde_json::{Value, json};

fn fixture_python() -> PathBuf {
    let python = workspace_root().join("tests/peers/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `bash tests/run.sh` to install the test peers",
        python.display()
    );
    python
}

/// A session server entry running the fixture with `flags`, recording pids in `pid_file`.
fn fixture_entry(pid_file: &Path, flags: &[&str]) -> Value {
    let script = workspace_root().join("tests/peers/fixture_server.py");
    let mut args = vec![json!(script.display().to_string())];
    args.extend(flags.iter().map(|flag| json!(flag)));
    args.extend([json!("--pid-file"), json!(pid_file.display().to_string())]);
    json!({ "command": fixture_python().display().to_string(), "args": args })
}

/// Whether `pid` is a live process (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

async fn read_pids(pid_file: &Path, expected: usize) -> Vec<u32> {
    poll_until("the fixture to write its pids", || async {
        let text = std::fs::read_to_string(pid_file).ok()?;
        let pids: Vec<u32> = text.lines().filter_map(|line| line.trim().parse().ok()).collect();
        (pids.len() >= expected).then_some(pids)
    })
    .await
}

async fn wait_for_status(client: &Client, name: &str, status: ServerStatus) {
    poll_until_for(Duration::from_secs(20), &format!("`{name}` to be {status}"), || async {
        let server = client.mcp_server_get(name).await.ok()?.server;
        (server.status == status).then_some(())
    })
    .await;
}

async fn assert_all_gone(pids: &[u32], limit: Duration) {
    poll_until_for(limit, &format!("processes {pids:?} to be gone"), || async {
        pids.iter().all(|pid| !alive(*pid)).then_some(())
    })
    .await;
}

fn rpc_code(error: &ClientError) -> Option<ErrorCode> {
    error.error_code()
}

#[tokio::test]
async fn a_session_server_and_its_escaped_child_die_with_the_connection() {
    let daemon = TestDaemon::start();
    let owner = daemon.connect_client().await;
    let other = daemon.connect_client().await;
    let pid_file = daemon.dir().join("session.pids");
    // Ignores stdin close and has a grandchild in its own session: only a
    // group kill plus the marker scan leave nothing behind.
    let entry = fixture_entry(&pid_file, &["--ignore-stdin-close", "--spawn-setsid-child"]);
    let added = owner
        .mcp_server_add("scratch", entry)
        .await
        .expect("mcpServer/add")
        .server;
    assert_eq!(added.origin, ServerOrigin::Session);
    assert_eq!(added.status, ServerStatus::Starting, "answered once starting");

    // Every front-end sees it; it becomes ready like a config server.
    wait_for_status(&other, "scratch", ServerStatus::Ready).await;
    let pids = read_pids(&pid_file, 2).await;
    assert!(pids.iter().all(|pid| alive(*pid)), "server and child run: {pids:?}");

    drop(owner);
    assert_all_gone(&pids, Duration::from_secs(6)).await;
    poll_until("the session server to leave the list", || async {
        let servers = other.mcp_server_list().await.ok()?.servers;
        servers.iter().all(|server| server.name != "scratch").then_some(())
    })
    .await;
}

#[tokio::test]
async fn add_validates_like_the_config_file_and_refuses_taken_names() {
    let daemon = TestDaemon::start_with_config("[servers.shared]\ncommand = \"true\"\nenabled = false\n");
    let client = daemon.connect_client().await;

    let error = client
        .mcp_server_add(
            "mixed",
            json!({"command": "x", "url": "http://127.0.0.1:9/mcp", "bearer_token": "s3cr3t"}),
        )
        .await
        .expect_err("invalid entry");
    assert_eq!(rpc_code(&error), Some(ErrorCode::InvalidParams), "{error}");
    let message = error.to_string();
    assert!(message.contains("field `url`"), "names the mixing field: {message}");
    assert!(
        message.contains("field `bearer_token`"),
        "names the inline token: {message}"
    );
    assert!(!message.contains("s3cr3t"), "never echoes a secret: {message}");

    let error = client
        .mcp_server_add("shared", json!({"command": "true", "enabled": false}))
        .await
        .expect_err("name taken by a config server");
    assert_eq!(rpc_code(&error), Some(ErrorCode::ServerExists), "{error}");

    let error = client
        .mcp_server_remove("shared")
        .await
        .expect_err("config servers stay");
    assert_eq!(rpc_code(&error), Some(ErrorCode::NotPermitted), "{error}");
    let error = client.mcp_server_remove("nobody").await.expect_err("unknown");
    assert_eq!(rpc_code(&error), Some(ErrorCode::ServerNotFound), "{error}");
}

#[tokio::test]
async fn only_the_owning_session_removes_and_remove_reaps_the_tree() {
    let daemon = TestDaemon::start();
    let owner = daemon.connect_client().await;
    let other = daemon.connect_client().await;
    let pid_file = daemon.dir().join("owned.pids");
    let entry = fixture_entry(&pid_file, &["--spawn-child", "--double-fork"]);
    owner.mcp_server_add("owned", entry).await.expect("mcpServer/add");
    wait_for_status(&owner, "owned", ServerStatus::Ready).await;
    let pids = read_pids(&pid_file, 3).await;

    let error = other.mcp_server_remove("owned").await.expect_err("not the owner");
    assert_eq!(rpc_code(&error), Some(ErrorCode::NotPermitted), "{error}");
    assert!(pids.iter().all(|pid| alive(*pid)), "a refused remove changes nothing");

    let removed = owner.mcp_server_remove("owned").await.expect("mcpServer/remove");
    assert_eq!(removed.name, "owned");
    // remove answers once the processes are gone: no polling needed, but allow
    // the kernel a moment to finish reaping the double-forked daemon.
    assert_all_gone(&pids, Duration::from_secs(1)).await;
    let error = owner.mcp_server_get("owned").await.expect_err("removed");
    assert_eq!(rpc_code(&error), Some(ErrorCode::ServerNotFound), "{error}");

    // The name is free again.
    owner
        .mcp_server_add("owned", json!({"command": "true", "enabled": false}))
        .await
        .expect("the name can be reused");
}

#[tokio::test]
async fn a_session_ending_leaves_config_servers_and_other_sessions_alone() {
    let pid_dir = tempfile::tempdir().expect("temp dir");
    let config_pids = pid_dir.path().join("config.pids");
    let config_entry = fixture_entry(&config_pids, &[]);
    let config = format!(
        "[servers.shared]\ncommand = {}\nargs = {}\n",
        config_entry["command"], config_entry["args"]
    );
    let daemon = TestDaemon::start_with_config(&config);
    let first = daemon.connect_client().await;
    let second = daemon.connect_client().await;
    let second_pids = daemon.dir().join("second.pids");
    second
        .mcp_server_add("second-only", fixture_entry(&second_pids, &[]))
        .await
        .expect("mcpServer/add");
    wait_for_status(&first, "shared", ServerStatus::Ready).await;
    wait_for_status(&first, "second-only", ServerStatus::Ready).await;
    let shared_pid = read_pids(&config_pids, 1).await[0];

    let first_pids = daemon.dir().join("first.pids");
    first
        .mcp_server_add("first-only", fixture_entry(&first_pids, &[]))
        .await
        .expect("mcpServer/add");
    wait_for_status(&second, "first-only", ServerStatus::Ready).await;
    let first_pid = read_pids(&first_pids, 1).await[0];
    drop(first);
    assert_all_gone(&[first_pid], Duration::from_secs(5)).await;

    let servers = second.mcp_server_list().await.expect("list").servers;
    let names: Vec<&str> = servers.iter().map(|server| server.name.as_str()).collect();
    assert_eq!(names, ["second-only", "shared"]);
    assert!(
        servers.iter().all(|server| server.status == ServerStatus::Ready),
        "{servers:?}"
    );
    assert!(alive(shared_pid), "the config server is untouched");
}

#[tokio::test]
async fn an_added_server_that_cannot_launch_fails_once_and_is_not_retried() {
    use corral_client::protocol::FailureReason;
    use corral_tests::StatusRecorder;
    let daemon = TestDaemon::start();
    let recorder = StatusRecorder::start(&daemon).await;
    let client = daemon.connect_client().await;
    client
        .mcp_server_add("nope", json!({"command": "no-such-program-for-corral"}))
        .await
        .expect("mcpServer/add");
    let expected = [
        (ServerStatus::Starting, None),
        (ServerStatus::Failed, Some(FailureReason::ExecutableNotFound)),
    ];
    recorder.expect_steps("nope", &expected, Duration::from_secs(10)).await;
    // A second launch would follow at once; give it ample time to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recorder.updates("nope").len(), 2, "a startup failure is not retried");
}
