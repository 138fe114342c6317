//! A real editor-side JSON-RPC library against the real daemon: vscode-jsonrpc
//! (pinned in tests/peers/package.json) in Content-Length framing, driven by
//! tests/peers/vscode-jsonrpc-client.mjs, which prints one JSON summary line.

use std::process::Command;
use std::time::Duration;

use corral_protocol::ServerStatus;
use corral_tests::{SERVER_WAIT, TestDaemon, everything_config, run_command, wait_for_status};
use serde_json::Value;

#[test]
fn vscode_jsonrpc_initializes_calls_methods_and_receives_notifications() {
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    assert!(
        peers.join("node_modules/vscode-jsonrpc/package.json").is_file(),
        "{} is missing: install the test peers with `bash tests/run.sh` \
         (or `npm ci --prefix tests/peers`)",
        peers.join("node_modules/vscode-jsonrpc").display()
    );
    if let Err(error) = Command::new("node").arg("--version").output() {
        panic!("Node.js is needed for this test ({error}): install Node.js 20 or newer with npm");
    }
    let daemon = TestDaemon::start_with_config("[servers.echo]\ncommand = \"true\"\nenabled = false\n");

    let mut node = Command::new("node");
    node.arg(peers.join("vscode-jsonrpc-client.mjs"))
        .arg(daemon.socket_path());
    // The script has its own 15 s limit; this one only catches a hung node.
    let output = run_command(&mut node, Duration::from_secs(30));
    assert!(
        output.status.success(),
        "the vscode-jsonrpc client failed ({}):\n{}",
        output.status,
        output.stderr
    );
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {}", output.stdout);
    let summary: Value = serde_json::from_str(lines[0]).expect("the summary is JSON");

    assert_eq!(summary["protocolVersion"], 1, "{summary}");
    assert_eq!(summary["daemonPid"], daemon.pid(), "{summary}");
    assert_eq!(summary["replayCapacity"], 1024, "{summary}");
    assert_eq!(summary["serverNames"], serde_json::json!(["echo"]), "{summary}");
    assert_eq!(
        summary["statusSocketPath"],
        daemon.socket_path().display().to_string(),
        "{summary}"
    );
    assert!(summary["statusConnections"].as_u64() >= Some(1), "{summary}");
    assert_eq!(summary["emittedLastSeq"], 3, "{summary}");
    assert_eq!(summary["notificationSeqs"], serde_json::json!([1, 2, 3]), "{summary}");
    assert_eq!(
        summary["notificationNames"],
        serde_json::json!(vec!["from-vscode-jsonrpc"; 3]),
        "{summary}"
    );
    assert_eq!(
        summary["notificationStatuses"],
        serde_json::json!(vec!["starting"; 3]),
        "{summary}"
    );
    assert_eq!(summary["unknownMethod"]["code"], -32601, "{summary}");
    assert!(
        summary["unknownMethod"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no/such/method")),
        "{summary}"
    );
}

#[tokio::test]
async fn vscode_jsonrpc_answers_elicitations_and_receives_progress() {
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    let daemon = TestDaemon::start_with_config(&everything_config("everything"));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "everything", ServerStatus::Ready, SERVER_WAIT).await;

    let mut node = Command::new("node");
    node.arg(peers.join("vscode-jsonrpc-client.mjs"))
        .arg(daemon.socket_path())
        .arg("elicitation");
    let output = tokio::task::spawn_blocking(move || run_command(&mut node, Duration::from_secs(30)))
        .await
        .expect("join");
    assert!(
        output.status.success(),
        "the vscode-jsonrpc client failed ({}):\n{}",
        output.status,
        output.stderr
    );
    let summary: Value = serde_json::from_str(output.stdout.trim()).expect("the summary is JSON");
    assert_eq!(
        summary["asked"],
        serde_json::json!([{"server": "everything", "message": "Please provide inputs for the following fields:"}]),
        "{summary}"
    );
    let elicited = summary["elicitedText"].as_str().unwrap_or_default();
    assert!(elicited.contains("- Name: VS Code"), "{summary}");
    assert!(
        summary["longText"]
            .as_str()
            .is_some_and(|text| text.contains("Long running operation completed")),
        "{summary}"
    );
    assert_eq!(
        summary["progress"],
        serde_json::json!([
            {"token": 42, "progress": 1, "total": 2},
            {"token": 42, "progress": 2, "total": 2},
        ]),
        "{summary}"
    );
}
