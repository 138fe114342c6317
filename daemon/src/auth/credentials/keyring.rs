//! The OS keyring through keyring-core and the platform's store crate: the Secret Service over
//! D-Bus on Linux, the Keychain on macOS, the Credential Manager on Windows. Each record is one
//! entry, service [`KEYRING_SERVICE`](super::KEYRING_SERVICE), user = the record key.
//!
//! keyring-core is used directly rather than through the `keyring` wrapper: the wrapper cannot be
//! pointed at another store once its platform store failed to start (feasibility report §3), and
//! Corral needs to see that failure to fall back to the file.

use std::sync::Arc;
use std::time::Duration;

use keyring_core::{CredentialStore, Error};

/// How long opening the keyring may take: a D-Bus peer that never answers must not hold up the
/// daemon's start (the store is then reported unavailable).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The OS keyring.
#[derive(Clone)]
pub struct KeyringBackend {
    store: Arc<CredentialStore>,
    name: &'static str,
}

impl std::fmt::Debug for KeyringBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringBackend").field("name", &self.name).finish()
    }
}

impl KeyringBackend {
    /// Connect to the platform keyring, or say why there is none.
    pub fn open() -> Result<Self, String> {
        let (sender, receiver) = std::sync::mpsc::channel();
        // A thread, not a blocking call: the D-Bus connect has no timeout of its own.
        let spawned = std::thread::Builder::new()
            .name("keyring-open".to_owned())
            .spawn(move || {
                let _ = sender.send(platform_store());
            });
        if let Err(error) = spawned {
            return Err(format!("cannot start a thread to open it: {error}"));
        }
        match receiver.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok((store, name))) => Ok(Self { store, name }),
            Ok(Err(error)) => Err(describe_error(&error)),
            Err(_) => Err(format!("it did not answer within {} s", OPEN_TIMEOUT.as_secs())),
        }
    }

    /// Store and delete a throwaway entry, to learn whether this keyring can store anything.
    /// Only where that costs no prompt (the Secret Service); elsewhere opening it is the test.
    pub fn probe_write(&self) -> Result<(), String> {
        if !cfg!(target_os = "linux") {
            return Ok(());
        }
        const PROBE: &str = "corral-probe";
        self.set(PROBE, "probe").map_err(|error| format!("{error:#}"))?;
        self.delete(PROBE).map_err(|error| format!("{error:#}"))?;
        Ok(())
    }

    /// A keyring over any keyring-core store (tests use keyring-core's mock store).
    pub fn with_store(store: Arc<CredentialStore>, name: &'static str) -> Self {
        Self { store, name }
    }

    /// The keyring's name, for status and error messages.
    pub fn describe(&self) -> String {
        format!("OS keyring ({})", self.name)
    }

    fn entry(&self, user: &str) -> anyhow::Result<keyring_core::Entry> {
        self.store
            .build(super::KEYRING_SERVICE, user, None)
            .map_err(|error| anyhow::anyhow!("{}: {}", self.describe(), describe_error(&error)))
    }

    pub(crate) fn get(&self, user: &str) -> anyhow::Result<Option<String>> {
        match self.entry(user)?.get_password() {
            Ok(value) => Ok(Some(value)),
            Err(Error::NoEntry) => Ok(None),
            Err(error) => Err(anyhow::anyhow!(
                "cannot read from the {}: {}",
                self.describe(),
                describe_error(&error)
            )),
        }
    }

    pub(crate) fn set(&self, user: &str, value: &str) -> anyhow::Result<()> {
        self.entry(user)?
            .set_password(value)
            .map_err(|error| anyhow::anyhow!("cannot write to the {}: {}", self.describe(), describe_error(&error)))
    }

    pub(crate) fn delete(&self, user: &str) -> anyhow::Result<bool> {
        match self.entry(user)?.delete_credential() {
            Ok(()) => Ok(true),
            Err(Error::NoEntry) => Ok(false),
            Err(error) => Err(anyhow::anyhow!(
                "cannot delete from the {}: {}",
                self.describe(),
                describe_error(&error)
            )),
        }
    }

    pub(crate) fn get_secret(&self, user: &str) -> anyhow::Result<Option<Vec<u8>>> {
        match self.entry(user)?.get_secret() {
            Ok(value) => Ok(Some(value)),
            Err(Error::NoEntry) => Ok(None),
            Err(error) => Err(anyhow::anyhow!(
                "cannot read from the {}: {}",
                self.describe(),
                describe_error(&error)
            )),
        }
    }

    pub(crate) fn set_secret(&self, user: &str, value: &[u8]) -> anyhow::Result<()> {
        self.entry(user)?
            .set_secret(value)
            .map_err(|error| anyhow::anyhow!("cannot write to the {}: {}", self.describe(), describe_error(&error)))
    }
}

/// keyring-core errors, without the secret some variants carry (`BadEncoding` holds the bytes).
fn describe_error(error: &Error) -> String {
    match error {
        Error::BadEncoding(_) => "an entry is not valid UTF-8".to_owned(),
        Error::BadDataFormat(_, _) => "an entry has an unexpected format".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(target_os = "linux")]
fn platform_store() -> keyring_core::Result<(Arc<CredentialStore>, &'static str)> {
    let store: Arc<CredentialStore> = zbus_secret_service_keyring_store::Store::new()?;
    Ok((store, "Secret Service"))
}

#[cfg(target_os = "macos")]
fn platform_store() -> keyring_core::Result<(Arc<CredentialStore>, &'static str)> {
    let store: Arc<CredentialStore> = apple_native_keyring_store::keychain::Store::new()?;
    Ok((store, "macOS Keychain"))
}

#[cfg(target_os = "windows")]
fn platform_store() -> keyring_core::Result<(Arc<CredentialStore>, &'static str)> {
    let store: Arc<CredentialStore> = windows_native_keyring_store::Store::new()?;
    Ok((store, "Windows Credential Manager"))
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn platform_store() -> keyring_core::Result<(Arc<CredentialStore>, &'static str)> {
    Err(Error::NotSupportedByStore(
        "no keyring support on this platform".to_owned(),
    ))
}
