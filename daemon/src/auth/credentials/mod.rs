//! Where OAuth credentials live: the OS keyring, a 0600 file, or an encrypted file, chosen by the
//! `credentials_store` setting, and the per-server view rmcp's `AuthorizationManager` reads and
//! writes through ([`ServerCredentialStore`], an `rmcp::transport::auth::CredentialStore`).
//!
//! Every server's record is one JSON document ([`CredentialRecord`]) under a key made of the server
//! name and a hash of its URL, so a server whose URL changes starts logged out instead of sending
//! one provider's token to another. The record holds rmcp's `StoredCredentials` plus the expiry as
//! an absolute time, which is what `authStatus` classifies ([`classify`]) without starting the
//! server, and the server's DPoP key when its authorization server binds tokens to one
//! (`super::dpop`). Version 1 records (no key) are read as they are; every record written is
//! version 2. A save keeps the key the record already holds unless the store was handed a new
//! one ([`ServerCredentialStore::with_dpop_key`], a login's), and a key that cannot be used makes
//! the record unreadable, with an error naming the server and the way out (a new login).
//!
//! Invariants:
//! - every backend call blocks (D-Bus round trips, fsync), so it runs in `spawn_blocking`;
//! - a store that cannot be read is an error naming the file or keyring, never "no credentials",
//!   and is never overwritten: treating it as logged out would make the next login overwrite a
//!   token that is still good;
//! - no error or log line contains a token: parse errors report a position and a category only;
//! - one refresh per server at a time: [`ServerCredentialStore`] hands rmcp a per-key guard that
//!   every manager of that server shares, and the rotated refresh token is on disk (file: temp
//!   file, fsync, rename) before rmcp returns the new access token. A login's code exchange takes
//!   the same guard ([`ServerCredentialStore::lock_for_update`]), so a refresh in flight cannot
//!   overwrite the new grant with the refreshed old one;
//! - the backend is read at start, after a write, and when another process may have changed it
//!   (the file's or key file's `stat` changed), never per request: corrald is the store's only
//!   writer, so [`Credentials`] keeps a cache of the record texts it read (`RecordCache`), valid
//!   while the `stat` of the backing files is unchanged. Every HTTP request of an OAuth server
//!   reads its token through rmcp's `load`, and a backend read is a D-Bus round trip (keyring)
//!   or a key fetch and a decryption (encrypted file); with the cache it is a `stat` or two.
//!   The keyring has no stamp: it is written through and read once per record. A file write
//!   clears the cache (the next read takes the new stamp); a failed read or write is never
//!   cached.
//!
//! Besides the records, in memory only: each server's last authorization challenge
//! ([`Challenge`]: the `WWW-Authenticate` of a 401, or of a 403 `insufficient_scope`), noted by
//! whoever met it (the server task at a start, a call's step-up) and read by the next login,
//! which asks for its scope (after a 403, together with the scopes granted so far).
//!
//! The backend is chosen once, on first use: boot makes the store with [`Credentials::lazy`],
//! which opens nothing; the first thing that needs it (an HTTP server's start, a login, a
//! logout, `authStatus`, `daemon/status`, which `corral doctor` reads) opens it on a blocking
//! thread, and every later caller gets the same backend. So a daemon without HTTP servers never
//! connects to D-Bus (whose client starts a thread of its own and stays resident). What opening
//! decides is unchanged: `auto` takes the OS keyring if it answers and can store (opened on a
//! thread of its own with a 5 s timeout, since a D-Bus connect has none), else the plain file,
//! saying why; `keyring` without one is a store whose every operation fails naming the reason,
//! at the moment the store is needed, and `daemon/status` shows it.

mod encrypted;
mod file;
mod keyring;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use corral_protocol::config::CredentialsStoreMode;
use corral_protocol::messages::{CredentialsBackend, CredentialsStoreStatus};
use rmcp::transport::auth::{AuthError, CredentialRefreshGuard, CredentialStore, StoredCredentials};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::dpop::{DpopKey, StoredDpopKey};

pub use encrypted::EncryptedFileBackend;
pub use file::FileBackend;
pub use keyring::KeyringBackend;

/// A token that expires within this many seconds counts as expired: rmcp refreshes this close to
/// the end (its `REFRESH_BUFFER_SECS`), so `authStatus` and startup agree on what is usable.
pub const REFRESH_WINDOW_SECS: u64 = 30;

/// Service name of keyring entries.
pub const KEYRING_SERVICE: &str = "corral";

/// Plain credentials file in the data directory.
pub const CREDENTIALS_FILE: &str = "credentials.json";
/// Encrypted credentials file in the data directory.
pub const ENCRYPTED_CREDENTIALS_FILE: &str = "credentials.enc";
/// Key of the encrypted file when there is no keyring.
pub const KEY_FILE: &str = "credentials.key";

/// The format version of records written now: 2 added `dpopKey`.
pub const RECORD_VERSION: u32 = 2;

/// One server's stored credentials, as kept in every backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRecord {
    /// Format version: 1 (no DPoP key) or [`RECORD_VERSION`].
    pub version: u32,
    /// The server the credentials were obtained for.
    pub server: String,
    /// Its URL at the time (the key also hashes it).
    pub url: String,
    /// When the access token expires, in seconds since the Unix epoch, if the provider said.
    pub expires_at: Option<u64>,
    /// The provider rejected the refresh token (`invalid_grant`): a new login is needed. The
    /// credentials are kept (and shown) until then.
    #[serde(default)]
    pub refresh_rejected: bool,
    /// What rmcp stores: client id, token response, granted scopes, time received.
    pub credentials: StoredCredentials,
    /// The server's DPoP key, when its tokens are bound to one (version 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_key: Option<StoredDpopKey>,
}

impl CredentialRecord {
    /// A record for freshly saved credentials.
    pub fn new(server: &str, url: &str, credentials: StoredCredentials) -> Self {
        Self {
            version: RECORD_VERSION,
            server: server.to_owned(),
            url: url.to_owned(),
            expires_at: expires_at(&credentials),
            refresh_rejected: false,
            credentials,
            dpop_key: None,
        }
    }

    /// Whether the access token is DPoP-bound (`token_type: DPoP`, in any case).
    pub fn dpop_bound(&self) -> bool {
        use oauth2::TokenResponse as _;
        self.credentials
            .token_response
            .as_ref()
            .is_some_and(|token| token.token_type().as_ref().eq_ignore_ascii_case("dpop"))
    }
}

/// The absolute expiry of `credentials`: time received plus `expires_in`.
pub fn expires_at(credentials: &StoredCredentials) -> Option<u64> {
    use oauth2::TokenResponse as _;
    let expires_in = credentials.token_response.as_ref()?.expires_in()?;
    Some(credentials.token_received_at?.saturating_add(expires_in.as_secs()))
}

/// What the stored credentials of a server allow, without asking anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialState {
    /// Nothing stored.
    Missing,
    /// A token that can be used, or refreshed.
    Usable,
    /// Stored, but a login is needed: expired (or about to) with no refresh token, blank client id
    /// or token, or a refresh the provider rejected.
    AuthorizationRequired,
}

/// Classify a stored record at `now` (seconds since the epoch), with codex's rules.
pub fn classify(record: Option<&CredentialRecord>, now: u64) -> CredentialState {
    use oauth2::TokenResponse as _;
    let Some(record) = record else {
        return CredentialState::Missing;
    };
    let credentials = &record.credentials;
    let Some(token) = credentials.token_response.as_ref() else {
        return CredentialState::AuthorizationRequired;
    };
    if record.refresh_rejected || credentials.client_id.trim().is_empty() {
        return CredentialState::AuthorizationRequired;
    }
    let refreshable = token
        .refresh_token()
        .is_some_and(|refresh| !refresh.secret().trim().is_empty());
    let near_expiry = record
        .expires_at
        .or_else(|| expires_at(credentials))
        .is_some_and(|expires_at| now.saturating_add(REFRESH_WINDOW_SECS) >= expires_at);
    if near_expiry {
        return if refreshable {
            CredentialState::Usable
        } else {
            CredentialState::AuthorizationRequired
        };
    }
    if token.access_token().secret().trim().is_empty() && !refreshable {
        return CredentialState::AuthorizationRequired;
    }
    CredentialState::Usable
}

/// Seconds since the Unix epoch.
pub fn now_epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The key of a server's record: its name and the first 16 hex digits of SHA-256 of its URL.
pub fn store_key(server: &str, url: &str) -> String {
    let digest = sha2::Sha256::digest(url.as_bytes());
    let hex: String = digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect();
    format!("{server}|{hex}")
}

/// A key-value store of records; every method blocks.
#[derive(Debug)]
pub enum Backend {
    /// The OS keyring.
    Keyring(KeyringBackend),
    /// A plain 0600 file.
    File(FileBackend),
    /// An encrypted file.
    EncryptedFile(EncryptedFileBackend),
    /// `keyring` was configured and there is none; every operation fails with this reason.
    Unavailable(String),
}

impl Backend {
    fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        match self {
            Backend::Keyring(keyring) => keyring.get(key),
            Backend::File(file) => file.get(key),
            Backend::EncryptedFile(file) => file.get(key),
            Backend::Unavailable(reason) => Err(anyhow::anyhow!("no credential store: {reason}")),
        }
    }

    fn set(&self, key: &str, value: &str) -> anyhow::Result<()> {
        match self {
            Backend::Keyring(keyring) => keyring.set(key, value),
            Backend::File(file) => file.set(key, value),
            Backend::EncryptedFile(file) => file.set(key, value),
            Backend::Unavailable(reason) => Err(anyhow::anyhow!("no credential store: {reason}")),
        }
    }

    fn delete(&self, key: &str) -> anyhow::Result<bool> {
        match self {
            Backend::Keyring(keyring) => keyring.delete(key),
            Backend::File(file) => file.delete(key),
            Backend::EncryptedFile(file) => file.delete(key),
            Backend::Unavailable(reason) => Err(anyhow::anyhow!("no credential store: {reason}")),
        }
    }

    /// What the backing files look like now, to tell whether what was read is still current;
    /// `None` when that cannot be told (then nothing is cached). The keyring is written by corrald
    /// only, so it has no stamp to change.
    fn stamp(&self) -> Option<Stamp> {
        match self {
            Backend::Keyring(_) => Some((FileState::NotAFile, FileState::NotAFile)),
            Backend::File(file) => Some((FileState::of(file.path())?, FileState::NotAFile)),
            Backend::EncryptedFile(file) => {
                let key = match file.key_file() {
                    Some(path) => FileState::of(path)?,
                    None => FileState::NotAFile,
                };
                Some((FileState::of(file.path())?, key))
            }
            Backend::Unavailable(_) => None,
        }
    }

    /// Whether a write goes through to the cache as is (the keyring) rather than clearing it (a
    /// file, rewritten whole, whose new stamp is taken by the next read).
    fn writes_through(&self) -> bool {
        matches!(self, Backend::Keyring(_))
    }

    /// Where records are, for error messages.
    fn describe(&self) -> String {
        match self {
            Backend::Keyring(keyring) => keyring.describe(),
            Backend::File(file) => format!("credentials file {}", file.path().display()),
            Backend::EncryptedFile(file) => format!("encrypted credentials file {}", file.path().display()),
            Backend::Unavailable(_) => "no credential store".to_owned(),
        }
    }
}

/// A backing file as `stat` sees it: any write (ours renames a new file in: a new inode; an
/// editor's in place: a new mtime and ctime) changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    /// The backend has no such file.
    NotAFile,
    /// The file does not exist.
    Missing,
    /// The file, by identity, size and times.
    Present {
        len: u64,
        modified: SystemTime,
        device: u64,
        inode: u64,
        changed_secs: i64,
        changed_nanos: i64,
    },
}

impl FileState {
    /// `None` when `path` cannot be looked at (then the backend's own read says why).
    fn of(path: &Path) -> Option<Self> {
        match std::fs::metadata(path) {
            Ok(metadata) => {
                #[cfg(unix)]
                let (device, inode, changed_secs, changed_nanos) = {
                    use std::os::unix::fs::MetadataExt as _;
                    (metadata.dev(), metadata.ino(), metadata.ctime(), metadata.ctime_nsec())
                };
                #[cfg(not(unix))]
                let (device, inode, changed_secs, changed_nanos) = (0, 0, 0, 0);
                Some(Self::Present {
                    len: metadata.len(),
                    modified: metadata.modified().ok()?,
                    device,
                    inode,
                    changed_secs,
                    changed_nanos,
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Some(Self::Missing),
            Err(_) => None,
        }
    }
}

/// The credentials file (or the encrypted file) and its key file.
type Stamp = (FileState, FileState);

/// What the backend held, by record key, as of `stamp`. Records only enter it from a read that
/// no write overtook (`generation`) and that began under the current stamp.
#[derive(Debug, Default)]
struct RecordCache {
    /// The backing files when `records` was read; `None`: nothing is known.
    stamp: Option<Stamp>,
    /// Bumped by every write: a read that began before a write must not cache what it read.
    generation: u64,
    /// Record text by key; `None`: the backend has no such record.
    records: HashMap<String, Option<String>>,
}

/// The daemon's credential store: one backend (opened on first use), its cache, and the refresh
/// guards of every server.
#[derive(Debug, Clone)]
pub struct Credentials {
    inner: Arc<CredentialsInner>,
}

/// An opened backend and what `daemon/status` says of it.
#[derive(Debug)]
struct Opened {
    backend: Backend,
    status: CredentialsStoreStatus,
}

#[derive(Debug)]
struct CredentialsInner {
    /// What to open, for a store made with [`Credentials::lazy`] (`None`: opened when made).
    to_open: Option<(CredentialsStoreMode, PathBuf)>,
    opened: tokio::sync::OnceCell<Opened>,
    /// One async mutex per record key: held by whoever refreshes that server's token, and by a
    /// login storing a new grant.
    refresh_guards: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cache: Mutex<RecordCache>,
    /// Record reads that went to the backend (tests and the benchmark count them).
    backend_reads: AtomicU64,
    /// Tasks waiting for a server's guard in [`ServerCredentialStore::lock_for_update`].
    guard_waiters: AtomicUsize,
    /// The last authorization challenge of each server, by record key (memory only).
    challenges: Mutex<HashMap<String, Challenge>>,
}

/// A server's last authorization challenge: what its next login asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The `WWW-Authenticate` header as the server sent it, when known: it seeds discovery
    /// (`resource_metadata`). Never shown.
    pub header: Option<String>,
    /// The scope it asks for.
    pub scope: Option<String>,
    /// A 403 `insufficient_scope`: the next login asks for the scopes granted so far and `scope`
    /// (a step-up); otherwise (a 401) for `scope` alone.
    pub insufficient_scope: bool,
}

impl Challenge {
    /// The challenge in `header`, sent by the server at `url`.
    pub fn from_header(header: &str, url: &str) -> Self {
        // The base only resolves a relative `resource_metadata`, which the header keeps anyway.
        let params = url::Url::parse(url)
            .map(|base| rmcp::transport::auth::WWWAuthenticateParams::parse(header, &base))
            .unwrap_or_default();
        let insufficient_scope = params.is_insufficient_scope();
        Self {
            header: Some(header.to_owned()),
            scope: params.scope.filter(|scope| !scope.trim().is_empty()),
            insufficient_scope,
        }
    }

    /// A 403 `insufficient_scope` asking for `required` (space-separated), header unknown.
    pub fn insufficient_scope(required: &str) -> Self {
        Self {
            header: None,
            scope: Some(required.to_owned()).filter(|scope| !scope.trim().is_empty()),
            insufficient_scope: true,
        }
    }
}

impl Credentials {
    /// Open the store `mode` names, with files in `data_dir`, now. Blocks (probes the keyring):
    /// call it from `spawn_blocking` or before the runtime is busy.
    pub fn open(mode: CredentialsStoreMode, data_dir: &Path) -> Self {
        let Opened { backend, status } = Opened::open(mode, data_dir);
        Self::from_backend(backend, status)
    }

    /// The store `mode` names, with files in `data_dir`, opened (on a blocking thread) by the
    /// first operation that needs it: see the module docs.
    pub fn lazy(mode: CredentialsStoreMode, data_dir: &Path) -> Self {
        Self::new(Some((mode, data_dir.to_path_buf())), tokio::sync::OnceCell::new())
    }

    /// A store over `backend` (tests use the mock keyring through this).
    pub fn from_backend(backend: Backend, status: CredentialsStoreStatus) -> Self {
        Self::new(None, tokio::sync::OnceCell::new_with(Some(Opened { backend, status })))
    }

    fn new(to_open: Option<(CredentialsStoreMode, PathBuf)>, opened: tokio::sync::OnceCell<Opened>) -> Self {
        Self {
            inner: Arc::new(CredentialsInner {
                to_open,
                opened,
                refresh_guards: Mutex::new(HashMap::new()),
                cache: Mutex::new(RecordCache::default()),
                backend_reads: AtomicU64::new(0),
                guard_waiters: AtomicUsize::new(0),
                challenges: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The backend, opened now (on a blocking thread) if nobody needed it before; concurrent
    /// first callers wait for the one opening.
    async fn opened(&self) -> anyhow::Result<&Opened> {
        self.inner
            .opened
            .get_or_try_init(|| async {
                let (mode, data_dir) = self
                    .inner
                    .to_open
                    .clone()
                    .context("the credential store was made without a backend")?;
                tokio::task::spawn_blocking(move || Opened::open(mode, &data_dir))
                    .await
                    .context("opening the credential store failed")
            })
            .await
    }

    /// Whether the backend has been opened (a lazy store before its first use has not).
    pub fn is_open(&self) -> bool {
        self.inner.opened.initialized()
    }

    /// How many record reads went to the backend so far (the cache answers the others).
    pub fn backend_reads(&self) -> u64 {
        self.inner.backend_reads.load(Ordering::Relaxed)
    }

    /// How many tasks wait for a server's guard to store a login right now.
    pub fn guard_waiters(&self) -> usize {
        self.inner.guard_waiters.load(Ordering::Relaxed)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, RecordCache> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The text of record `key`: from the cache when the backing files have not changed since it
    /// was read, else from the backend.
    async fn get_text(&self, key: &str) -> anyhow::Result<Option<String>> {
        // A `stat` or two, on this thread: far cheaper than the hop to a blocking thread.
        let stamp = self.opened().await?.backend.stamp();
        let generation = {
            let mut cache = self.cache();
            if cache.stamp != stamp {
                cache.records.clear();
                cache.stamp = stamp;
            }
            if stamp.is_some()
                && let Some(text) = cache.records.get(key)
            {
                return Ok(text.clone());
            }
            cache.generation
        };
        self.inner.backend_reads.fetch_add(1, Ordering::Relaxed);
        let owned_key = key.to_owned();
        let text = self.blocking(move |backend| backend.get(&owned_key)).await?;
        let mut cache = self.cache();
        if stamp.is_some() && cache.generation == generation && cache.stamp == stamp {
            cache.records.insert(key.to_owned(), text.clone());
        }
        Ok(text)
    }

    /// Set (`Some`) or delete (`None`) record `key`; `true` when a deleted record existed.
    async fn put_text(&self, key: &str, text: Option<String>) -> anyhow::Result<bool> {
        let owned_key = key.to_owned();
        let value = text.clone();
        let result = self
            .blocking(move |backend| match &value {
                Some(value) => backend.set(&owned_key, value).map(|()| true),
                None => backend.delete(&owned_key),
            })
            .await;
        let writes_through = self.opened().await.is_ok_and(|opened| opened.backend.writes_through());
        let mut cache = self.cache();
        cache.generation += 1;
        if result.is_ok() && writes_through {
            cache.records.insert(key.to_owned(), text);
        } else {
            // Read again next time: the file's new stamp is taken with it; after a failed
            // write nobody knows what the backend holds.
            cache.records.clear();
            cache.stamp = None;
        }
        result
    }

    /// What `daemon/status` shows: where the store is and how it stands (opening it if nobody
    /// needed it before, so that `corral doctor` shows what a login would use).
    pub async fn status(&self) -> anyhow::Result<CredentialsStoreStatus> {
        Ok(self.opened().await?.status.clone())
    }

    /// Where records are, for error messages.
    async fn describe(&self) -> String {
        match self.opened().await {
            Ok(opened) => opened.backend.describe(),
            Err(_) => "credential store".to_owned(),
        }
    }

    /// The store of one server's credentials, for rmcp.
    pub fn for_server(&self, server: &str, url: &str) -> ServerCredentialStore {
        ServerCredentialStore {
            credentials: self.clone(),
            server: server.to_owned(),
            url: url.to_owned(),
            key: store_key(server, url),
            dpop_key: None,
        }
    }

    fn refresh_guard(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut guards = self
            .inner
            .refresh_guards
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guards.entry(key.to_owned()).or_default().clone()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Backend) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.opened().await?;
        let credentials = self.clone();
        tokio::task::spawn_blocking(move || match credentials.inner.opened.get() {
            Some(opened) => operation(&opened.backend),
            None => Err(anyhow::anyhow!("the credential store is not open")),
        })
        .await
        .context("credential store task failed")?
    }
}

impl Opened {
    /// Open the backend `mode` names and log what was chosen. Blocks (probes the keyring).
    fn open(mode: CredentialsStoreMode, data_dir: &Path) -> Self {
        let (backend, status) = open_backend(mode, data_dir);
        let backend_name = status.backend.as_str();
        if let Some(note) = &status.note {
            if mode == CredentialsStoreMode::Auto && status.backend != CredentialsBackend::Unavailable {
                // What `auto` is for (a headless machine has no keyring): worth a line, not a warning.
                tracing::info!(mode = %mode, backend = backend_name, location = %status.location, %note, "credential store");
            } else {
                tracing::warn!(mode = %mode, backend = backend_name, %note, "credential store");
            }
        } else {
            tracing::info!(mode = %mode, backend = backend_name, location = %status.location, "credential store");
        }
        Self { backend, status }
    }
}

fn open_backend(mode: CredentialsStoreMode, data_dir: &Path) -> (Backend, CredentialsStoreStatus) {
    let file = || {
        let backend = FileBackend::new(data_dir.join(CREDENTIALS_FILE));
        let location = backend.path().display().to_string();
        (Backend::File(backend), location)
    };
    match mode {
        CredentialsStoreMode::File => {
            let (backend, location) = file();
            (
                backend,
                CredentialsStoreStatus::new(mode.as_str(), CredentialsBackend::File, location),
            )
        }
        CredentialsStoreMode::Keyring | CredentialsStoreMode::Auto => match KeyringBackend::open().and_then(|keyring| {
            // `auto` must not pick a keyring that answers but cannot store (a Secret Service
            // without a default collection needs a password prompt, which a daemon never sees).
            if mode == CredentialsStoreMode::Auto {
                keyring.probe_write()?;
            }
            Ok(keyring)
        }) {
            Ok(keyring) => {
                let location = keyring.describe();
                let status = CredentialsStoreStatus::new(mode.as_str(), CredentialsBackend::Keyring, location);
                (Backend::Keyring(keyring), status)
            }
            Err(reason) if mode == CredentialsStoreMode::Auto => {
                let (backend, location) = file();
                let note = format!("no OS keyring ({reason}), using the file");
                let status = CredentialsStoreStatus::new(mode.as_str(), CredentialsBackend::File, location)
                    .with_note(Some(note));
                (backend, status)
            }
            Err(reason) => {
                let note = format!("no OS keyring: {reason}");
                let status = CredentialsStoreStatus::new(mode.as_str(), CredentialsBackend::Unavailable, "none")
                    .with_note(Some(note.clone()));
                (Backend::Unavailable(note), status)
            }
        },
        CredentialsStoreMode::EncryptedFile => {
            let path = data_dir.join(ENCRYPTED_CREDENTIALS_FILE);
            let (key_source, note) = match KeyringBackend::open() {
                Ok(keyring) => (encrypted::KeySource::Keyring(keyring), None),
                Err(reason) => (
                    encrypted::KeySource::File(data_dir.join(KEY_FILE)),
                    Some(format!("no OS keyring ({reason}), the key is in a 0600 key file")),
                ),
            };
            let backend = EncryptedFileBackend::new(path, key_source);
            let location = format!("{} (key: {})", backend.path().display(), backend.key_location());
            let status =
                CredentialsStoreStatus::new(mode.as_str(), CredentialsBackend::EncryptedFile, location).with_note(note);
            (Backend::EncryptedFile(backend), status)
        }
        _ => {
            let (backend, location) = file();
            (
                backend,
                CredentialsStoreStatus::new(mode.as_str(), CredentialsBackend::File, location),
            )
        }
    }
}

/// One server's credentials, as rmcp's `AuthorizationManager` sees them.
#[derive(Debug, Clone)]
pub struct ServerCredentialStore {
    credentials: Credentials,
    server: String,
    url: String,
    key: String,
    /// The DPoP key a login uses, stored with the credentials it saves.
    dpop_key: Option<StoredDpopKey>,
}

impl ServerCredentialStore {
    /// This store, saving `key` as the server's DPoP key with the next credentials (a login
    /// that binds its tokens to the key).
    pub fn with_dpop_key(mut self, key: StoredDpopKey) -> Self {
        self.dpop_key = Some(key);
        self
    }

    /// The stored record, if any; an unreadable store, or a record whose DPoP key cannot be
    /// used, is an error naming the server and the store.
    pub async fn load_record(&self) -> anyhow::Result<Option<CredentialRecord>> {
        let Some(text) = self.credentials.get_text(&self.key).await? else {
            return Ok(None);
        };
        let record: CredentialRecord = match serde_json::from_str(&text) {
            Ok(record) => record,
            Err(error) => {
                return Err(anyhow::anyhow!(
                    "the stored credentials of server `{}` in the {} are corrupt ({})",
                    self.server,
                    self.credentials.describe().await,
                    json_error_position(&error)
                ));
            }
        };
        if let Some(stored) = &record.dpop_key
            && let Err(error) = DpopKey::from_stored(stored)
        {
            anyhow::bail!(
                "the DPoP key stored for server `{server}` in the {store} is corrupt ({error:#}); log in again \
                 (`corral login {server}`) to replace it",
                server = self.server,
                store = self.credentials.describe().await,
            );
        }
        Ok(Some(record))
    }

    /// The server's stored DPoP key, if its record has one.
    pub async fn dpop_key(&self) -> anyhow::Result<Option<DpopKey>> {
        let Some(stored) = self.load_record().await?.and_then(|record| record.dpop_key) else {
            return Ok(None);
        };
        // `load_record` checked it.
        DpopKey::from_stored(&stored).map(Some)
    }

    /// The DPoP key a save without a key of its own keeps: a refresh keeps the key its tokens
    /// are bound to. A record that is there but cannot be read (corrupt, or its key corrupt) is
    /// replaced, as it was before keys; a store that cannot be read at all (a keyring that does
    /// not answer) fails the save, so the tokens are never written without the key they are
    /// bound to.
    async fn stored_key_to_keep(&self) -> anyhow::Result<Option<StoredDpopKey>> {
        let Some(text) = self.credentials.get_text(&self.key).await? else {
            return Ok(None);
        };
        let key = serde_json::from_str::<CredentialRecord>(&text)
            .ok()
            .and_then(|record| record.dpop_key)
            .filter(|stored| DpopKey::from_stored(stored).is_ok());
        Ok(key)
    }

    /// Store `record` (atomically for files).
    pub async fn save_record(&self, record: CredentialRecord) -> anyhow::Result<()> {
        let text = serde_json::to_string(&record).context("cannot encode credentials")?;
        self.credentials.put_text(&self.key, Some(text)).await.map(|_| ())
    }

    /// Delete the record; `true` when there was one.
    pub async fn delete_record(&self) -> anyhow::Result<bool> {
        self.credentials.put_text(&self.key, None).await
    }

    /// Hold this server's refresh guard while storing a new grant (a login's code exchange and
    /// save): a refresh holds it from its load to its save, so one in flight finishes first and
    /// cannot overwrite the new grant with the refreshed old one afterwards.
    pub async fn lock_for_update(&self) -> tokio::sync::OwnedMutexGuard<()> {
        let guard = self.credentials.refresh_guard(&self.key);
        if let Ok(held) = guard.clone().try_lock_owned() {
            return held;
        }
        tracing::info!(server = %self.server, "a token refresh is in progress; the new credentials are stored after it");
        let _waiting = WaiterCount::new(&self.credentials.inner.guard_waiters);
        guard.lock_owned().await
    }

    /// Remember `challenge` as the server's last one, for its next login.
    pub fn note_challenge(&self, challenge: Challenge) {
        self.challenges().insert(self.key.clone(), challenge);
    }

    /// The server's last challenge, if one was noted since its last successful login.
    pub fn challenge(&self) -> Option<Challenge> {
        self.challenges().get(&self.key).cloned()
    }

    /// Forget the server's last challenge (a login answered it).
    pub fn forget_challenge(&self) {
        self.challenges().remove(&self.key);
    }

    fn challenges(&self) -> std::sync::MutexGuard<'_, HashMap<String, Challenge>> {
        self.credentials
            .inner
            .challenges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How the stored credentials stand now.
    pub async fn state(&self) -> anyhow::Result<CredentialState> {
        Ok(classify(self.load_record().await?.as_ref(), now_epoch_secs()))
    }

    /// The server this store belongs to.
    pub fn server(&self) -> &str {
        &self.server
    }
}

/// Counts a waiter for as long as it exists (a dropped wait is no longer counted).
struct WaiterCount<'a>(&'a AtomicUsize);

impl<'a> WaiterCount<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for WaiterCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn store_error(error: &anyhow::Error) -> AuthError {
    AuthError::CredentialStoreError(format!("{error:#}"))
}

#[async_trait::async_trait]
impl CredentialStore for ServerCredentialStore {
    async fn load(&self) -> Result<Option<StoredCredentials>, AuthError> {
        let record = self.load_record().await.map_err(|error| store_error(&error))?;
        Ok(record.map(|record| record.credentials))
    }

    async fn save(&self, credentials: StoredCredentials) -> Result<(), AuthError> {
        let mut record = CredentialRecord::new(&self.server, &self.url, credentials);
        record.dpop_key = match &self.dpop_key {
            Some(key) => Some(key.clone()),
            None => self.stored_key_to_keep().await.map_err(|error| store_error(&error))?,
        };
        self.save_record(record).await.map_err(|error| store_error(&error))?;
        tracing::debug!(server = %self.server, "credentials saved");
        Ok(())
    }

    async fn clear(&self) -> Result<(), AuthError> {
        self.delete_record().await.map_err(|error| store_error(&error))?;
        Ok(())
    }

    /// Keep the credentials (the user sees what they were logged in as) but mark them as needing a
    /// new login, so `authStatus` says `notLoggedIn` and the failure says `reauthenticationRequired`.
    async fn on_refresh_token_rejected(&self, rejected: &StoredCredentials) -> Result<(), AuthError> {
        tracing::warn!(server = %self.server, "the authorization server rejected the refresh token");
        let Some(mut record) = self.load_record().await.map_err(|error| store_error(&error))? else {
            return Ok(());
        };
        // Only the credentials that were rejected: a login that replaced them meanwhile stays good.
        if record.credentials.token_received_at == rejected.token_received_at {
            record.refresh_rejected = true;
            self.save_record(record).await.map_err(|error| store_error(&error))?;
        }
        Ok(())
    }

    async fn acquire_refresh_guard(&self) -> Result<Option<CredentialRefreshGuard>, AuthError> {
        let guard = self.credentials.refresh_guard(&self.key).lock_owned().await;
        Ok(Some(CredentialRefreshGuard::new(guard)))
    }
}

/// Where a JSON document broke, without quoting it (it holds tokens).
pub fn json_error_position(error: &serde_json::Error) -> String {
    let category = match error.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected content",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{category} at line {} column {}", error.line(), error.column())
}

/// Write `bytes` to `path` atomically and durably: a 0600 temp file in the same directory, fsync,
/// rename over `path`, fsync the directory. A crash leaves the old file or the new one, never half.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::private_file::create_dir(dir)?;
    let file_name = path.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
    let temp_path: PathBuf = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    // A temp file left by a crash of this pid is removed (unlink never follows a link), then the
    // file is created anew: never opened through a symbolic link, never someone else's file.
    match std::fs::remove_file(&temp_path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot remove {}", temp_path.display())),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let result = (|| {
        let mut file = options
            .open(&temp_path)
            .with_context(|| format!("cannot create {}", temp_path.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", temp_path.display()))?;
        std::fs::rename(&temp_path, path).with_context(|| format!("cannot replace {}", path.display()))?;
        // The rename is only durable once the directory is.
        if let Ok(dir_handle) = std::fs::File::open(dir) {
            let _ = dir_handle.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp_path);
    }
    result
}

/// Read `path`: `None` when it does not exist, an error naming it otherwise.
fn read_file(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(anyhow::anyhow!("cannot read {}: {error}", path.display())),
    }
}

#[cfg(test)]
mod tests;
