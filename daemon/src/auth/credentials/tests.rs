use std::sync::Arc;

use rmcp::transport::auth::{CredentialStore as _, OAuthTokenResponse, StoredCredentials};
use serde_json::json;

use super::*;

fn token(access: &str, refresh: Option<&str>, expires_in: Option<u64>) -> OAuthTokenResponse {
    let mut value = json!({ "access_token": access, "token_type": "Bearer" });
    if let Some(refresh) = refresh {
        value["refresh_token"] = json!(refresh);
    }
    if let Some(expires_in) = expires_in {
        value["expires_in"] = json!(expires_in);
    }
    serde_json::from_value(value).expect("a token response")
}

fn record(client_id: &str, token: Option<OAuthTokenResponse>, received_at: Option<u64>) -> CredentialRecord {
    CredentialRecord::new(
        "linear",
        "https://mcp.example/mcp",
        StoredCredentials::new(client_id.to_owned(), token, vec!["read".to_owned()], received_at),
    )
}

const NOW: u64 = 1_800_000_000;

#[test]
fn credentials_are_classified_like_codex() {
    let state = |record: Option<CredentialRecord>| classify(record.as_ref(), NOW);
    assert_eq!(state(None), CredentialState::Missing);
    // Unexpired, no refresh token: usable.
    let fresh = record("client", Some(token("at", None, Some(3600))), Some(NOW));
    assert_eq!(fresh.expires_at, Some(NOW + 3600));
    assert_eq!(state(Some(fresh)), CredentialState::Usable);
    // No expiry known: usable as is.
    assert_eq!(
        state(Some(record("client", Some(token("at", None, None)), None))),
        CredentialState::Usable
    );
    // Expired but refreshable: usable.
    let expired_refreshable = record("client", Some(token("at", Some("rt"), Some(60))), Some(NOW - 120));
    assert_eq!(state(Some(expired_refreshable.clone())), CredentialState::Usable);
    // Expired, no refresh token: a login is needed; likewise inside the refresh window.
    let expired = record("client", Some(token("at", None, Some(60))), Some(NOW - 120));
    assert_eq!(state(Some(expired)), CredentialState::AuthorizationRequired);
    let near = record("client", Some(token("at", None, Some(20))), Some(NOW));
    assert_eq!(state(Some(near)), CredentialState::AuthorizationRequired);
    let near_blank_refresh = record("client", Some(token("at", Some("  "), Some(20))), Some(NOW));
    assert_eq!(state(Some(near_blank_refresh)), CredentialState::AuthorizationRequired);
    // Blank client id, blank access token, no token at all.
    let blank_client = record(" ", Some(token("at", Some("rt"), Some(3600))), Some(NOW));
    assert_eq!(state(Some(blank_client)), CredentialState::AuthorizationRequired);
    let blank_access = record("client", Some(token("", None, Some(3600))), Some(NOW));
    assert_eq!(state(Some(blank_access)), CredentialState::AuthorizationRequired);
    assert_eq!(
        state(Some(record("client", None, None))),
        CredentialState::AuthorizationRequired
    );
    // A refresh the provider rejected.
    let mut rejected = expired_refreshable;
    rejected.refresh_rejected = true;
    assert_eq!(state(Some(rejected)), CredentialState::AuthorizationRequired);
}

#[test]
fn keys_separate_servers_and_urls() {
    let key = store_key("linear", "https://a.example/mcp");
    assert!(key.starts_with("linear|") && key.len() == "linear|".len() + 16, "{key}");
    assert_ne!(key, store_key("linear", "https://b.example/mcp"));
    assert_ne!(key, store_key("other", "https://a.example/mcp"));
}

fn file_store(dir: &Path) -> Credentials {
    let backend = FileBackend::new(dir.join(CREDENTIALS_FILE));
    let status = CredentialsStoreStatus::new("file", CredentialsBackend::File, "test");
    Credentials::from_backend(Backend::File(backend), status)
}

#[tokio::test]
async fn the_file_round_trips_is_private_and_leaves_no_temp_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let credentials = file_store(&data);
    let linear = credentials.for_server("linear", "https://mcp.example/mcp");
    let github = credentials.for_server("github", "https://gh.example/mcp");
    assert!(linear.load().await.expect("empty store").is_none());
    let saved = StoredCredentials::new(
        "client".to_owned(),
        Some(token("at-1", Some("rt-1"), Some(60))),
        vec![],
        Some(NOW),
    );
    linear.save(saved).await.expect("save");
    github
        .save(StoredCredentials::new(
            "gh".to_owned(),
            Some(token("gh-at", None, None)),
            vec![],
            None,
        ))
        .await
        .expect("save");
    let record = linear.load_record().await.expect("load").expect("stored");
    assert_eq!(record.expires_at, Some(NOW + 60));
    assert_eq!(record.credentials.client_id, "client");
    let path = data.join(CREDENTIALS_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).expect("file exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "credentials file mode {mode:o}");
        let dir_mode = std::fs::metadata(&data).expect("dir exists").permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700, "data dir mode {dir_mode:o}");
    }
    let names: Vec<_> = std::fs::read_dir(&data)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(CREDENTIALS_FILE)]);
    // Clearing one server keeps the other; clearing the last removes the file.
    linear.clear().await.expect("clear");
    assert!(linear.load().await.expect("load").is_none());
    assert!(github.load().await.expect("load").is_some());
    github.clear().await.expect("clear");
    assert!(!path.exists());
}

#[tokio::test]
async fn a_corrupt_file_is_an_error_naming_it_without_quoting_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = file_store(dir.path());
    let path = dir.path().join(CREDENTIALS_FILE);
    for content in [
        "{\"version\": 1, \"entries\": {\"linear|x\": \"secret-token-value\"".to_owned(),
        "{\"version\": 1, \"entries\": {\"linear|x\": [\"secret-token-value\"]}}".to_owned(),
        "not json secret-token-value".to_owned(),
    ] {
        std::fs::write(&path, &content).expect("write");
        let linear = credentials.for_server("linear", "https://mcp.example/mcp");
        let error = linear.load().await.expect_err("corrupt file is an error").to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("corrupt"), "{error}");
        assert!(!error.contains("secret-token-value"), "{error}");
        // A save must not overwrite the other servers' logins in a file it cannot read.
        let saved = StoredCredentials::new("c".to_owned(), Some(token("at", None, None)), vec![], None);
        linear.save(saved).await.expect_err("save into a corrupt file fails");
        assert_eq!(std::fs::read_to_string(&path).expect("still there"), content);
    }
    // A record that is valid JSON but not a record names the server and the file.
    let document = json!({ "version": 1, "entries": { store_key("linear", "https://mcp.example/mcp"): "{\"secret-token-value\": 1}" } });
    std::fs::write(&path, document.to_string()).expect("write");
    let linear = credentials.for_server("linear", "https://mcp.example/mcp");
    let error = format!("{:#}", linear.load_record().await.expect_err("bad record"));
    assert!(
        error.contains("server `linear`") && error.contains(&path.display().to_string()),
        "{error}"
    );
    assert!(!error.contains("secret-token-value"), "{error}");
}

#[tokio::test]
async fn the_encrypted_file_round_trips_and_rejects_a_wrong_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(ENCRYPTED_CREDENTIALS_FILE);
    let key_path = dir.path().join(KEY_FILE);
    let open = || {
        let backend = EncryptedFileBackend::new(path.clone(), encrypted::KeySource::File(key_path.clone()));
        let status = CredentialsStoreStatus::new("encrypted-file", CredentialsBackend::EncryptedFile, "test");
        Credentials::from_backend(Backend::EncryptedFile(backend), status)
    };
    let store = open().for_server("linear", "https://mcp.example/mcp");
    let saved = StoredCredentials::new(
        "client".to_owned(),
        Some(token("at-secret", Some("rt-secret"), Some(60))),
        vec![],
        Some(NOW),
    );
    store.save(saved).await.expect("save");
    let sealed = std::fs::read(&path).expect("file written");
    assert!(sealed.starts_with(b"CORRALE1"));
    assert!(
        !String::from_utf8_lossy(&sealed).contains("secret"),
        "the file is not plain text"
    );
    assert_eq!(std::fs::read(&key_path).expect("key written").len(), 32);
    // A new daemon reads it back.
    let again = open().for_server("linear", "https://mcp.example/mcp");
    let record = again.load_record().await.expect("decrypts").expect("stored");
    assert_eq!(record.credentials.client_id, "client");
    // Another key: a clear error naming the file, not "logged out".
    std::fs::write(&key_path, [7u8; 32]).expect("replace key");
    let error = format!("{:#}", again.load_record().await.expect_err("wrong key"));
    assert!(
        error.contains(&path.display().to_string()) && error.contains("cannot be decrypted"),
        "{error}"
    );
    // A missing key with the file present is an error too.
    std::fs::remove_file(&key_path).expect("remove key");
    let error = format!("{:#}", again.load_record().await.expect_err("no key"));
    assert!(error.contains("key is missing"), "{error}");
}

fn mock_keyring() -> KeyringBackend {
    let store: Arc<keyring_core::CredentialStore> = keyring_core::mock::Store::new().expect("mock store");
    KeyringBackend::with_store(store, "mock")
}

#[tokio::test]
async fn the_keyring_round_trips_and_keeps_the_encrypted_files_key() {
    let keyring = mock_keyring();
    let status = CredentialsStoreStatus::new("keyring", CredentialsBackend::Keyring, "mock");
    let credentials = Credentials::from_backend(Backend::Keyring(keyring.clone()), status);
    let store = credentials.for_server("linear", "https://mcp.example/mcp");
    assert!(store.load().await.expect("empty").is_none());
    store
        .save(StoredCredentials::new(
            "client".to_owned(),
            Some(token("at", Some("rt"), Some(60))),
            vec![],
            Some(NOW),
        ))
        .await
        .expect("save");
    assert_eq!(
        store.load_record().await.expect("load").expect("stored").expires_at,
        Some(NOW + 60)
    );
    assert!(store.delete_record().await.expect("delete"));
    assert!(!store.delete_record().await.expect("delete again"));

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(ENCRYPTED_CREDENTIALS_FILE);
    let backend = EncryptedFileBackend::new(path.clone(), encrypted::KeySource::Keyring(keyring.clone()));
    let status = CredentialsStoreStatus::new("encrypted-file", CredentialsBackend::EncryptedFile, "test");
    let encrypted = Credentials::from_backend(Backend::EncryptedFile(backend), status);
    let store = encrypted.for_server("linear", "https://mcp.example/mcp");
    store
        .save(StoredCredentials::new(
            "client".to_owned(),
            Some(token("at", None, None)),
            vec![],
            None,
        ))
        .await
        .expect("save");
    assert_eq!(
        keyring
            .get_secret("credentials-file-key")
            .expect("read")
            .map(|key| key.len()),
        Some(32)
    );
    assert!(
        !dir.path().join(KEY_FILE).exists(),
        "no key file when the keyring holds the key"
    );
    assert!(store.load().await.expect("decrypts").is_some());
}

#[tokio::test]
async fn a_rejected_refresh_marks_the_record_and_keeps_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = file_store(dir.path());
    let store = credentials.for_server("linear", "https://mcp.example/mcp");
    let saved = StoredCredentials::new(
        "client".to_owned(),
        Some(token("at", Some("rt"), Some(60))),
        vec![],
        Some(NOW),
    );
    store.save(saved.clone()).await.expect("save");
    assert_eq!(store.state().await.expect("state"), CredentialState::Usable);
    store.on_refresh_token_rejected(&saved).await.expect("mark");
    let record = store.load_record().await.expect("load").expect("kept");
    assert!(record.refresh_rejected);
    assert_eq!(
        store.state().await.expect("state"),
        CredentialState::AuthorizationRequired
    );
}

#[tokio::test]
async fn one_refresh_guard_per_server() {
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = file_store(dir.path());
    // Two managers of the same server (e.g. the transport was rebuilt) share the guard.
    let first = credentials.for_server("linear", "https://mcp.example/mcp");
    let second = credentials.for_server("linear", "https://mcp.example/mcp");
    let held = first.acquire_refresh_guard().await.expect("guard").expect("some guard");
    let same = credentials.refresh_guard(&store_key("linear", "https://mcp.example/mcp"));
    assert!(same.try_lock().is_err(), "the second manager of the server must wait");
    let other = credentials.refresh_guard(&store_key("github", "https://gh.example/mcp"));
    assert!(other.try_lock().is_ok(), "another server is not held up");
    drop(held);
    assert!(same.try_lock().is_ok(), "released with the guard");
    assert!(second.acquire_refresh_guard().await.expect("guard").is_some());
}

/// The token of the stored record, for comparisons.
async fn stored_access(store: &ServerCredentialStore) -> Option<String> {
    use oauth2::TokenResponse as _;
    let record = store.load_record().await.expect("load")?;
    Some(record.credentials.token_response?.access_token().secret().clone())
}

fn credentials_with(access: &str) -> StoredCredentials {
    StoredCredentials::new(
        "client".to_owned(),
        Some(token(access, Some("rt"), Some(3600))),
        vec![],
        Some(NOW),
    )
}

#[tokio::test]
async fn the_file_is_read_at_start_after_a_write_and_when_it_changed_not_per_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(CREDENTIALS_FILE);
    let credentials = file_store(dir.path());
    let linear = credentials.for_server("linear", "https://mcp.example/mcp");
    // Start: one read, also when there is nothing; then none.
    assert_eq!(stored_access(&linear).await, None);
    assert_eq!(stored_access(&linear).await, None);
    assert_eq!(credentials.backend_reads(), 1);
    // After a write: one read (the file's new stamp comes with it), then none.
    linear.save(credentials_with("at-1")).await.expect("save");
    for _ in 0..10 {
        assert_eq!(stored_access(&linear).await.as_deref(), Some("at-1"));
        assert_eq!(linear.state().await.expect("state"), CredentialState::Usable);
    }
    assert_eq!(credentials.backend_reads(), 2);
    // Another process changes the file (in place, same length): read again, and its content is seen.
    let edited = std::fs::read_to_string(&path).expect("read").replace("at-1", "at-2");
    std::fs::write(&path, edited).expect("edit in place");
    assert_eq!(stored_access(&linear).await.as_deref(), Some("at-2"));
    assert_eq!(stored_access(&linear).await.as_deref(), Some("at-2"));
    assert_eq!(credentials.backend_reads(), 3);
    // Replaced by rename, or removed: likewise.
    let replacement = dir.path().join("replacement.json");
    std::fs::write(
        &replacement,
        std::fs::read_to_string(&path).expect("read").replace("at-2", "at-3"),
    )
    .expect("write");
    std::fs::rename(&replacement, &path).expect("rename over");
    assert_eq!(stored_access(&linear).await.as_deref(), Some("at-3"));
    std::fs::remove_file(&path).expect("remove");
    assert_eq!(stored_access(&linear).await, None);
    assert_eq!(stored_access(&linear).await, None);
    assert_eq!(credentials.backend_reads(), 5);
    // A corrupt file is never answered from the cache: the error comes every time.
    std::fs::write(&path, "not json").expect("corrupt");
    for _ in 0..2 {
        linear.load_record().await.expect_err("corrupt");
    }
}

#[tokio::test]
async fn the_keyring_is_read_once_and_written_through() {
    let status = CredentialsStoreStatus::new("keyring", CredentialsBackend::Keyring, "mock");
    let credentials = Credentials::from_backend(Backend::Keyring(mock_keyring()), status);
    let linear = credentials.for_server("linear", "https://mcp.example/mcp");
    let github = credentials.for_server("github", "https://gh.example/mcp");
    assert_eq!(stored_access(&linear).await, None);
    linear.save(credentials_with("at-1")).await.expect("save");
    for _ in 0..10 {
        assert_eq!(stored_access(&linear).await.as_deref(), Some("at-1"));
    }
    assert_eq!(credentials.backend_reads(), 1, "only the first load of `linear` reads");
    assert_eq!(stored_access(&github).await, None);
    assert_eq!(credentials.backend_reads(), 2, "each record is read once");
    assert!(linear.delete_record().await.expect("delete"));
    assert_eq!(stored_access(&linear).await, None);
    assert_eq!(credentials.backend_reads(), 2);
}

#[tokio::test]
async fn the_encrypted_file_is_decrypted_again_only_when_it_or_its_key_file_changed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_path = dir.path().join(KEY_FILE);
    let backend = EncryptedFileBackend::new(
        dir.path().join(ENCRYPTED_CREDENTIALS_FILE),
        encrypted::KeySource::File(key_path.clone()),
    );
    let status = CredentialsStoreStatus::new("encrypted-file", CredentialsBackend::EncryptedFile, "test");
    let credentials = Credentials::from_backend(Backend::EncryptedFile(backend), status);
    let linear = credentials.for_server("linear", "https://mcp.example/mcp");
    linear.save(credentials_with("at-1")).await.expect("save");
    for _ in 0..10 {
        assert_eq!(stored_access(&linear).await.as_deref(), Some("at-1"));
    }
    // The save read the record first (it keeps the record's DPoP key), then the loads read the
    // new file once.
    assert_eq!(credentials.backend_reads(), 2);
    std::fs::write(&key_path, [7u8; 32]).expect("replace the key");
    let error = format!("{:#}", linear.load_record().await.expect_err("wrong key"));
    assert!(error.contains("cannot be decrypted"), "{error}");
}

/// The file's record texts by key, as written.
fn records_in(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read the credentials file");
    serde_json::from_str::<serde_json::Value>(&text).expect("JSON")["entries"].clone()
}

#[tokio::test]
async fn a_dpop_key_is_stored_with_the_tokens_kept_by_refreshes_and_read_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = "https://mcp.example/mcp";
    let key = crate::auth::dpop::DpopKey::generate().expect("key");
    let stored_key = key.to_stored().expect("stored form");
    // A login saves its grant with the key it used.
    let login = file_store(dir.path())
        .for_server("linear", url)
        .with_dpop_key(stored_key.clone());
    login.save(credentials_with("at-login")).await.expect("save");
    let entry = records_in(&dir.path().join(CREDENTIALS_FILE))[store_key("linear", url)].clone();
    let record: serde_json::Value = serde_json::from_str(entry.as_str().expect("record text")).expect("record");
    assert_eq!(record["version"], RECORD_VERSION);
    assert_eq!(record["dpopKey"]["alg"], "ES256");

    // A refresh (a store handed no key) keeps it.
    let running = file_store(dir.path()).for_server("linear", url);
    running.save(credentials_with("at-refreshed")).await.expect("save");
    assert_eq!(stored_access(&running).await.as_deref(), Some("at-refreshed"));

    // A new daemon over the same file signs with the same key.
    let restarted = file_store(dir.path()).for_server("linear", url);
    let read = restarted.dpop_key().await.expect("readable").expect("a key");
    assert_eq!(read.thumbprint(), key.thumbprint());
    let record = restarted.load_record().await.expect("load").expect("record");
    assert!(!record.dpop_bound(), "the test token is a Bearer token");
}

#[tokio::test]
async fn a_version_1_record_without_a_key_is_read_as_before() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = "https://mcp.example/mcp";
    let old = json!({
        "version": 1,
        "server": "linear",
        "url": url,
        "expiresAt": NOW + 3600,
        "credentials": {
            "client_id": "client",
            "token_response": { "access_token": "at-old", "token_type": "DPoP", "expires_in": 3600 },
            "granted_scopes": [],
            "token_received_at": NOW,
        },
    });
    let file = json!({ "version": 1, "entries": { store_key("linear", url): old.to_string() } });
    std::fs::write(dir.path().join(CREDENTIALS_FILE), file.to_string()).expect("write");
    let store = file_store(dir.path()).for_server("linear", url);
    let record = store.load_record().await.expect("readable").expect("stored");
    assert_eq!(record.version, 1);
    assert!(record.dpop_key.is_none());
    assert!(record.dpop_bound(), "token_type DPoP, in any case");
    assert!(store.dpop_key().await.expect("readable").is_none());
    assert_eq!(stored_access(&store).await.as_deref(), Some("at-old"));
}

#[tokio::test]
async fn a_corrupt_dpop_key_is_an_error_naming_the_server_and_the_way_out_without_quoting_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = "https://mcp.example/mcp";
    let path = dir.path().join(CREDENTIALS_FILE);
    let store = file_store(dir.path()).for_server("linear", url).with_dpop_key(
        crate::auth::dpop::DpopKey::generate()
            .expect("key")
            .to_stored()
            .expect("stored"),
    );
    store.save(credentials_with("at")).await.expect("save");
    for (alg, pkcs8) in [
        ("ES256", "not base64url!"),
        ("ES256", "c2VjcmV0LWJ1dC1ub3QtYS1rZXk"),
        ("RS256", "c2VjcmV0LWJ1dC1ub3QtYS1rZXk"),
    ] {
        let mut entries = records_in(&path);
        let key = store_key("linear", url);
        let mut record: serde_json::Value =
            serde_json::from_str(entries[&key].as_str().expect("record text")).expect("record");
        record["dpopKey"] = json!({ "alg": alg, "pkcs8": pkcs8 });
        entries[&key] = json!(record.to_string());
        std::fs::write(&path, json!({ "version": 1, "entries": entries }).to_string()).expect("write");
        let reader = file_store(dir.path()).for_server("linear", url);
        let error = format!("{:#}", reader.load_record().await.expect_err("a corrupt key"));
        assert!(error.contains("`linear`"), "{error}");
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("corral login linear"), "{error}");
        assert!(!error.contains(pkcs8), "the key is not quoted: {error}");
        assert!(reader.state().await.is_err(), "never classified as logged out");
    }
}

#[tokio::test]
async fn a_refresh_that_cannot_read_the_store_fails_instead_of_dropping_the_dpop_key() {
    let store: Arc<keyring_core::CredentialStore> = keyring_core::mock::Store::new().expect("mock store");
    let status = CredentialsStoreStatus::new("keyring", CredentialsBackend::Keyring, "mock");
    let fresh = || {
        Credentials::from_backend(
            Backend::Keyring(KeyringBackend::with_store(store.clone(), "mock")),
            status.clone(),
        )
    };
    let url = "https://mcp.example/mcp";
    let key = crate::auth::dpop::DpopKey::generate().expect("key");
    fresh()
        .for_server("linear", url)
        .with_dpop_key(key.to_stored().expect("stored form"))
        .save(credentials_with("at-login"))
        .await
        .expect("save");

    // The keyring does not answer the refresh's read (a D-Bus hiccup): the save fails, and the
    // record keeps its key, rather than tokens bound to a key being written without it.
    let entry = store
        .build(KEYRING_SERVICE, &store_key("linear", url), None)
        .expect("entry");
    let mock: &keyring_core::mock::Cred = entry.as_any().downcast_ref().expect("a mock entry");
    mock.set_error(keyring_core::Error::NoStorageAccess(Box::new(std::io::Error::other(
        "locked",
    ))));
    let refresh = fresh().for_server("linear", url);
    refresh
        .save(credentials_with("at-refreshed"))
        .await
        .expect_err("an unreadable store fails the save");
    let kept = fresh()
        .for_server("linear", url)
        .dpop_key()
        .await
        .expect("readable")
        .expect("a key");
    assert_eq!(kept.thumbprint(), key.thumbprint());

    // Once the keyring answers, the refresh keeps the key.
    refresh.save(credentials_with("at-refreshed")).await.expect("save");
    let kept = fresh()
        .for_server("linear", url)
        .dpop_key()
        .await
        .expect("readable")
        .expect("a key");
    assert_eq!(kept.thumbprint(), key.thumbprint());
}

#[tokio::test]
async fn a_lazy_store_opens_on_first_use_and_reports_a_corrupt_file_then() {
    let dir = tempfile::tempdir().expect("temp dir");
    let credentials = Credentials::lazy(CredentialsStoreMode::File, dir.path());
    let linear = credentials.for_server("linear", "https://mcp.example/mcp");
    assert!(!credentials.is_open(), "opened before anything needed it");
    let path = dir.path().join(CREDENTIALS_FILE);
    std::fs::write(&path, "not json secret-token-value").expect("write");
    // Concurrent first uses share one opening; each reports the broken file, naming it.
    let (first, second) = tokio::join!(linear.load(), linear.load_record());
    assert!(credentials.is_open());
    let first = first.expect_err("corrupt file is an error").to_string();
    let second = format!("{:#}", second.expect_err("corrupt file is an error"));
    for error in [first, second] {
        assert!(
            error.contains(&path.display().to_string()) && error.contains("corrupt"),
            "{error}"
        );
        assert!(!error.contains("secret-token-value"), "{error}");
    }
    let status = credentials.status().await.expect("status");
    assert_eq!(status.backend, CredentialsBackend::File);
    assert_eq!(status.location, path.display().to_string());
}
