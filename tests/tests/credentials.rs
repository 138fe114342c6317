//! The credential store as the daemon reports it: `auto` without a keyring falls back to the file,
//! a real Secret Service (gnome-keyring on a private D-Bus) is used when there is one.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use corral_tests::{TestDaemon, WAIT, corral_command, run_command, scratch_dir};
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

/// A private session bus with gnome-keyring's Secret Service on it, stopped on drop.
#[derive(Debug)]
pub struct SecretService {
    bus: Child,
    keyring: Child,
    address: String,
    _home: tempfile::TempDir,
}

impl SecretService {
    /// Start one; fails with the install command when gnome-keyring is missing.
    pub fn start() -> Self {
        let home = scratch_dir();
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon not found: apt-get install dbus (tests/run.sh installs it)");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().expect("piped"))
            .read_line(&mut address)
            .expect("read the bus address");
        let address = address.trim().to_owned();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("share"))
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gnome-keyring-daemon not found: apt-get install gnome-keyring (tests/run.sh installs it)");
        // An empty password unlocks a new login keyring; closing stdin ends the prompt.
        drop(keyring.stdin.take());
        // It prints its control socket once the Secret Service is on the bus.
        let mut ready = String::new();
        BufReader::new(keyring.stdout.take().expect("piped"))
            .read_line(&mut ready)
            .expect("read gnome-keyring's start line");
        assert!(
            ready.contains("GNOME_KEYRING_CONTROL"),
            "gnome-keyring did not start: {ready:?}"
        );
        Self {
            bus,
            keyring,
            address,
            _home: home,
        }
    }

    /// `DBUS_SESSION_BUS_ADDRESS` for corrald.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        for child in [&mut self.keyring, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
