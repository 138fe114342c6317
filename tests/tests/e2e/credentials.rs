//! The credential store as the daemon reports it: `auto` without a keyring falls back to the file,
//! a real Secret Service (gnome-keyring on a private D-Bus) is used when there is one.

use corral_tests::{SecretService, TestDaemon, WAIT, corral_command, run_command};
use serde_json::{Value, json};

async fn daemon_status(daemon: &TestDaemon) -> Value {
    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;
    connection.call("daemon/status", json!({})).await
}

#[tokio::test]
async fn auto_without_a_keyring_uses_the_file_and_says_so() {
    let daemon = TestDaemon::start();
    let store = daemon_status(&daemon).await["credentialsStore"].clone();
    assert_eq!(store["mode"], "auto", "{store}");
    assert_eq!(store["backend"], "file", "{store}");
    let file = daemon.dir().join("data").join("credentials.json");
    assert_eq!(store["location"], file.display().to_string(), "{store}");
    let note = store["note"].as_str().expect("a note says why the file is used");
    assert!(note.contains("no OS keyring"), "{note}");

    let mut command = corral_command();
    command.arg("status").arg("--socket").arg(daemon.socket_path());
    let output = run_command(&mut command, WAIT);
    assert!(output.status.success(), "{}", output.stderr);
    let line = output
        .stdout
        .lines()
        .find(|line| line.starts_with("credentials"))
        .unwrap_or_else(|| panic!("no credentials line in:\n{}", output.stdout));
    assert!(line.contains("file (") && line.contains("no OS keyring"), "{line}");
}

#[tokio::test]
async fn keyring_mode_without_a_keyring_is_reported_unavailable() {
    let daemon = TestDaemon::start_with_config("credentials_store = \"keyring\"\n");
    let store = daemon_status(&daemon).await["credentialsStore"].clone();
    assert_eq!(store["backend"], "unavailable", "{store}");
    assert!(
        store["note"]
            .as_str()
            .is_some_and(|note| note.contains("no OS keyring")),
        "{store}"
    );
}

#[tokio::test]
async fn a_real_secret_service_is_used_when_there_is_one() {
    let service = SecretService::start();
    for (mode, backend) in [
        ("auto", "keyring"),
        ("keyring", "keyring"),
        ("encrypted-file", "encryptedFile"),
    ] {
        let daemon = TestDaemon::builder()
            .config(&format!("credentials_store = \"{mode}\"\n"))
            .env("DBUS_SESSION_BUS_ADDRESS", service.address())
            .start();
        let store = daemon_status(&daemon).await["credentialsStore"].clone();
        assert_eq!(store["backend"], backend, "{mode}: {store}");
        assert_eq!(store["note"], Value::Null, "{mode}: {store}");
        assert!(
            store["location"].as_str().is_some_and(|l| l.contains("Secret Service")),
            "{store}"
        );
    }
}

#[tokio::test]
async fn auto_skips_a_keyring_that_cannot_store_without_a_prompt() {
    let service = SecretService::start_without_default_collection();
    let daemon = TestDaemon::builder()
        .env("DBUS_SESSION_BUS_ADDRESS", service.address())
        .start();
    let store = daemon_status(&daemon).await["credentialsStore"].clone();
    assert_eq!(store["backend"], "file", "{store}");
    let note = store["note"].as_str().expect("a note says why");
    assert!(
        note.contains("no OS keyring") && note.contains("Secret Service"),
        "{note}"
    );
}

/// The store is opened by what needs it, not at start: a daemon whose config has no HTTP server
/// does not connect to D-Bus (the keyring's client stays resident, with a thread of its own) until
/// `daemon/status` asks where credentials are; then it reports the same store as before.
#[tokio::test]
async fn the_keyring_is_opened_when_first_needed_not_at_start() {
    let service = SecretService::start();
    let daemon = TestDaemon::builder()
        .config("credentials_store = \"keyring\"\n")
        .env("DBUS_SESSION_BUS_ADDRESS", service.address())
        .start();
    let mut connection = daemon.raw_line_connection().await;
    connection.initialize().await;
    connection.call("mcpServer/list", json!({})).await;
    let opened = |log: &str| log.lines().any(|line| line.contains("credential store"));
    assert!(!opened(&daemon.stderr()), "opened at start:\n{}", daemon.stderr());
    let store = connection.call("daemon/status", json!({})).await["credentialsStore"].clone();
    assert_eq!(store["backend"], "keyring", "{store}");
    assert_eq!(store["note"], Value::Null, "{store}");
    assert!(
        opened(&daemon.stderr()),
        "not opened by daemon/status:\n{}",
        daemon.stderr()
    );
}
