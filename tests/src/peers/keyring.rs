//! A real OS keyring: gnome-keyring's Secret Service on a private session bus.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

use crate::peers::scratch_dir;

/// A private session bus with gnome-keyring's Secret Service on it, stopped on drop.
#[derive(Debug)]
pub struct SecretService {
    bus: Child,
    keyring: Child,
    address: String,
    _home: tempfile::TempDir,
}

impl SecretService {
    /// Start one whose `default` collection can store without a prompt; fails with the install
    /// command when gnome-keyring is missing.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// Start one without a `default` collection, like a fresh headless login: storing needs a
    /// password prompt nobody answers.
    pub fn start_without_default_collection() -> Self {
        Self::start_with(false)
    }

    fn start_with(default_collection: bool) -> Self {
        let home = scratch_dir();
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon not found: apt-get install dbus (tests/run.sh installs it)");
        let mut address = String::new();
        std::io::BufReader::new(bus.stdout.take().expect("piped"))
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
        std::io::BufReader::new(keyring.stdout.take().expect("piped"))
            .read_line(&mut ready)
            .expect("read gnome-keyring's start line");
        assert!(
            ready.contains("GNOME_KEYRING_CONTROL"),
            "gnome-keyring did not start: {ready:?}"
        );
        // A fresh gnome-keyring without a login keyring has no `default` collection, and
        // creating one needs a password prompt: point `default` at the in-memory session
        // collection, which is unlocked.
        if default_collection {
            Self::set_default_collection(&address);
        }
        Self {
            bus,
            keyring,
            address,
            _home: home,
        }
    }

    fn set_default_collection(address: &str) {
        let alias = Command::new("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.secrets",
                "/org/freedesktop/secrets",
                "org.freedesktop.Secret.Service.SetAlias",
                "string:default",
                "objpath:/org/freedesktop/secrets/collection/session",
            ])
            .env("DBUS_SESSION_BUS_ADDRESS", address)
            .stdout(Stdio::null())
            .status()
            .expect("dbus-send not found: apt-get install dbus (tests/run.sh installs it)");
        assert!(alias.success(), "cannot set the keyring's default collection");
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
