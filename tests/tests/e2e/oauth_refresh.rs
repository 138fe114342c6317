//! Stored OAuth credentials over time, against oauth2-mock-server (pre-registered client,
//! rotating refresh tokens; `tests/peers/oauth_mock_as.mjs`) and an MCP server on the official
//! Python SDK that accepts its JWTs (`tests/peers/protected_rs.py`). Both peers log SHA-256
//! prefixes of the tokens they see or issue, so the tests can follow tokens without logging them.
//!
//! What is checked: an expired stored token is refreshed exactly once before `initialize`, which
//! then carries the new token; the rotated refresh token is what is stored afterwards; two
//! concurrent calls needing a refresh cause one refresh request; a rejected refresh ends in
//! `failed` + `reauthenticationRequired` with the credentials kept; `authStatus` for every class
//! of stored credentials; a corrupt credentials file is an error naming it, and so is a record
//! whose DPoP key cannot be used (naming the server and `corral login`); credentials of a
//! former authorization server are deleted unused when the server names another one (SEP-2352);
//! no token in the log, even at `CORRAL_LOG=trace`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral_client::Client;
use corral_client::protocol::{AuthStatus, FailureReason, ServerStatus};
use corral_tests::{
    HttpPeer, SERVER_WAIT, TestDaemon, WAIT, free_loopback_port, get_server, json_lines, oauth_mock_as, protected_rs,
    scratch_dir, toml_string, wait_for_status,
};
use serde_json::{Value, json};
use sha2::Digest as _;

const LOGIN_WAIT: Duration = Duration::from_secs(60);

fn digest(value: &str) -> String {
    sha2::Sha256::digest(value.as_bytes())
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// An authorization server, a protected MCP server, and their logs.
struct Peers {
    _scratch: tempfile::TempDir,
    _auth: HttpPeer,
    resource: HttpPeer,
    as_log: PathBuf,
    rs_log: PathBuf,
    control: PathBuf,
    url: String,
}

impl Peers {
    fn start() -> Self {
        let scratch = scratch_dir();
        let (as_port, rs_port) = (free_loopback_port(), free_loopback_port());
        let as_log = scratch.path().join("as.log");
        let rs_log = scratch.path().join("rs.log");
        let control = scratch.path().to_path_buf();
        let auth = oauth_mock_as(as_port, &as_log, &control, 3600);
        let resource = protected_rs(rs_port, &format!("http://127.0.0.1:{as_port}"), &rs_log);
        Self {
            _scratch: scratch,
            _auth: auth,
            resource,
            as_log,
            rs_log,
            control,
            url: format!("http://127.0.0.1:{rs_port}/mcp"),
        }
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "credentials_store = \"file\"\noauth_opener = {opener}\n{extra}\n[servers.rs]\nurl = {url}\n\
             oauth_client_id = \"corral-test-client\"\nstartup_timeout_sec = 20\n",
            opener = corral_tests::follow_url_opener()
                .trim_start_matches("oauth_opener = ")
                .trim(),
            url = toml_string(&self.url),
        )
    }

    /// The MCP server moves to the authorization server at `issuer`: the same server, started
    /// again on its port, naming that one in its protected-resource metadata.
    fn move_resource_to(&mut self, issuer: &str) {
        let port = self.resource.port;
        self.resource.kill();
        self.resource = protected_rs(port, issuer, &self.rs_log);
    }

    /// Token requests the authorization server answered so far.
    fn token_requests(&self) -> Vec<Value> {
        json_lines(&self.as_log)
    }

    /// Authenticated requests the MCP server saw so far.
    fn resource_requests(&self) -> Vec<Value> {
        json_lines(&self.rs_log)
    }
}

fn credentials_path(daemon: &TestDaemon) -> PathBuf {
    daemon.dir().join("data").join("credentials.json")
}

/// The one stored record (parsed) and its key.
fn stored_record(daemon: &TestDaemon) -> (String, Value) {
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(credentials_path(daemon)).expect("credentials file"))
            .expect("JSON");
    let entries = document["entries"].as_object().expect("entries");
    assert_eq!(entries.len(), 1, "{document}");
    let (key, record) = entries.iter().next().expect("one entry");
    (
        key.clone(),
        serde_json::from_str(record.as_str().expect("string")).expect("record JSON"),
    )
}

/// Rewrite the one stored record with `change`.
fn edit_record(daemon: &TestDaemon, change: impl FnOnce(&mut Value)) {
    let (key, mut record) = stored_record(daemon);
    change(&mut record);
    let document = json!({ "version": 1, "entries": { key: record.to_string() } });
    std::fs::write(credentials_path(daemon), document.to_string()).expect("write credentials");
}

/// Make the stored access token one that expired an hour ago.
fn expire_stored_token(daemon: &TestDaemon) {
    edit_record(daemon, |record| {
        record["credentials"]["token_received_at"] = json!(now() - 7200);
        record["expiresAt"] = json!(now() - 3600);
    });
}

async fn login(daemon: &TestDaemon) -> Client {
    let mut watcher = daemon.connect_client().await;
    let mut notifications = watcher.take_notifications().expect("notifications");
    let client = daemon.connect_client().await;
    client
        .mcp_server_oauth_login("rs", None)
        .await
        .expect("mcpServer/oauthLogin");
    let done = corral_tests::next_login_completion(&mut notifications, LOGIN_WAIT).await;
    assert!(done.success, "login failed: {:?}", done.error);
    wait_for_status(&client, "rs", ServerStatus::Ready, SERVER_WAIT).await;
    client
}

/// A daemon logging all it can (`CORRAL_LOG=trace`): no token may appear even then.
fn start_daemon(config: &str) -> TestDaemon {
    TestDaemon::builder().config(config).env("CORRAL_LOG", "trace").start()
}

fn assert_tokens_not_logged(daemon: &TestDaemon) {
    let (_, record) = stored_record(daemon);
    let log = daemon.stderr();
    assert!(!log.is_empty());
    for field in ["access_token", "refresh_token"] {
        let token = record["credentials"]["token_response"][field]
            .as_str()
            .expect("stored token");
        assert!(!log.contains(token), "the {field} appears in corrald's log");
    }
}

async fn echo(client: &Client, message: &str) -> Value {
    client
        .tools_call("rs", "echo", json!({ "message": message }).as_object().cloned(), WAIT)
        .await
        .expect("echo")
}

#[tokio::test]
async fn an_expired_stored_token_is_refreshed_once_before_initialize_and_the_rotated_token_is_stored() {
    let peers = Peers::start();
    let daemon = start_daemon(&peers.config(""));
    let client = login(&daemon).await;
    let grants: Vec<Value> = peers.token_requests();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0]["grant"], "authorization_code");
    let first_refresh = grants[0]["issuedRefresh"]
        .as_str()
        .expect("a refresh token was issued")
        .to_owned();

    client.mcp_server_stop("rs").await.expect("stop");
    expire_stored_token(&daemon);
    let seen_before = peers.resource_requests().len();
    client.mcp_server_start("rs").await.expect("start");
    wait_for_status(&client, "rs", ServerStatus::Ready, SERVER_WAIT).await;

    let grants = peers.token_requests();
    assert_eq!(grants.len(), 2, "exactly one refresh: {grants:?}");
    let refresh = &grants[1];
    assert_eq!(refresh["grant"], "refresh_token");
    assert_eq!(refresh["status"], 200);
    assert_eq!(refresh["presentedRefresh"], json!(first_refresh));
    // The first request after the restart is initialize, and it carries the new token.
    let after: Vec<Value> = peers.resource_requests().split_off(seen_before);
    assert_eq!(after[0]["rpc"], "initialize", "{after:?}");
    assert!(
        after.iter().all(|request| request["token"] == refresh["issuedAccess"]),
        "{after:?}"
    );
    // The rotated refresh token is the one stored.
    let (_, record) = stored_record(&daemon);
    let stored_refresh = record["credentials"]["token_response"]["refresh_token"]
        .as_str()
        .expect("stored");
    assert_ne!(
        refresh["issuedRefresh"],
        json!(first_refresh),
        "the mock rotates refresh tokens"
    );
    assert_eq!(json!(digest(stored_refresh)), refresh["issuedRefresh"]);
    assert!(record["expiresAt"].as_u64().expect("expiry") > now(), "{record}");
    assert_eq!(get_server(&client, "rs").await.auth_status, Some(AuthStatus::OAuth));
    assert_tokens_not_logged(&daemon);
}

#[tokio::test]
async fn two_concurrent_calls_needing_a_refresh_cause_one_refresh_request() {
    let peers = Peers::start();
    let daemon = start_daemon(&peers.config(""));
    let client = login(&daemon).await;
    assert_eq!(peers.token_requests().len(), 1);

    // The running server's token expires under it (rmcp reads the store before every request).
    expire_stored_token(&daemon);
    let (first, second) = tokio::join!(echo(&client, "one"), echo(&client, "two"));
    assert!(first.to_string().contains("echo: one"), "{first}");
    assert!(second.to_string().contains("echo: two"), "{second}");

    let grants = peers.token_requests();
    let refreshes: Vec<&Value> = grants
        .iter()
        .filter(|grant| grant["grant"] == "refresh_token")
        .collect();
    assert_eq!(refreshes.len(), 1, "one refresh for both calls: {grants:?}");
    let (_, record) = stored_record(&daemon);
    let stored_refresh = record["credentials"]["token_response"]["refresh_token"]
        .as_str()
        .expect("stored");
    assert_eq!(json!(digest(stored_refresh)), refreshes[0]["issuedRefresh"]);
    assert_tokens_not_logged(&daemon);
}

#[tokio::test]
async fn a_rejected_refresh_fails_with_reauthentication_required_and_keeps_the_credentials() {
    let peers = Peers::start();
    let daemon = start_daemon(&peers.config(""));
    let client = login(&daemon).await;
    client.mcp_server_stop("rs").await.expect("stop");
    expire_stored_token(&daemon);
    std::fs::write(peers.control.join("reject-refresh"), "").expect("control file");

    client.mcp_server_start("rs").await.expect("start");
    let failed = wait_for_status(&client, "rs", ServerStatus::Failed, SERVER_WAIT).await;
    assert_eq!(
        failed.failure_reason,
        Some(FailureReason::ReauthenticationRequired),
        "{failed:?}"
    );
    assert!(
        failed
            .error
            .as_deref()
            .is_some_and(|error| error.contains("corral login rs")),
        "{failed:?}"
    );
    let grants = peers.token_requests();
    assert_eq!(grants.last().expect("a refresh")["grant"], "refresh_token");
    assert_eq!(grants.last().expect("a refresh")["status"], 400);
    // Kept, marked, and reported as needing a login.
    let (_, record) = stored_record(&daemon);
    assert_eq!(record["refreshRejected"], true, "{record}");
    assert_eq!(failed.auth_status, Some(AuthStatus::NotLoggedIn));
    assert_tokens_not_logged(&daemon);

    // A new login clears it.
    std::fs::remove_file(peers.control.join("reject-refresh")).expect("remove control file");
    let _ = login(&daemon).await;
    let (_, record) = stored_record(&daemon);
    assert_eq!(record["refreshRejected"], false, "{record}");
}

#[tokio::test]
async fn credentials_of_a_former_authorization_server_are_never_sent_to_the_new_one() {
    let mut peers = Peers::start();
    let daemon = start_daemon(&peers.config(""));
    let client = login(&daemon).await;
    let (_, before) = stored_record(&daemon);
    assert!(
        before["credentials"]["issuer"].is_string(),
        "stored with its issuer: {before}"
    );
    let refresh = before["credentials"]["token_response"]["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned();
    let granted_before = peers.token_requests().len();

    // The server names another authorization server (SEP-2352) while its token expired.
    client.mcp_server_stop("rs").await.expect("stop");
    expire_stored_token(&daemon);
    let scratch = scratch_dir();
    let new_log = scratch.path().join("new-as.log");
    let new_port = free_loopback_port();
    let _new_as = oauth_mock_as(new_port, &new_log, scratch.path(), 3600);
    peers.move_resource_to(&format!("http://127.0.0.1:{new_port}"));
    client.mcp_server_start("rs").await.expect("start");

    let failed = wait_for_status(&client, "rs", ServerStatus::Failed, SERVER_WAIT).await;
    assert_eq!(
        failed.failure_reason,
        Some(FailureReason::AuthenticationRequired),
        "a first login at the new authorization server: {failed:?}"
    );
    assert!(
        json_lines(&new_log).is_empty(),
        "the new authorization server saw no request with the old credentials"
    );
    assert_eq!(
        peers.token_requests().len(),
        granted_before,
        "the old one was not asked to refresh either"
    );
    // The file goes with its last record.
    let document: Value = std::fs::read_to_string(credentials_path(&daemon))
        .map_or(Value::Null, |text| serde_json::from_str(&text).expect("JSON"));
    assert!(
        document["entries"].as_object().is_none_or(serde_json::Map::is_empty),
        "the old issuer's record is deleted: {document}"
    );
    assert_eq!(failed.auth_status, Some(AuthStatus::NotLoggedIn));
    assert!(
        !daemon.stderr().contains(&refresh),
        "the refresh token appears in corrald's log"
    );
}

/// The key corrald stores a server's record under.
fn store_key(name: &str, url: &str) -> String {
    format!("{name}|{}", digest(url))
}

fn record(name: &str, url: &str, client_id: &str, token: &Value, received_at: Option<u64>) -> String {
    let expires_at = match (received_at, token.get("expires_in").and_then(Value::as_u64)) {
        (Some(at), Some(lifetime)) => json!(at + lifetime),
        _ => Value::Null,
    };
    json!({
        "version": 1,
        "server": name,
        "url": url,
        "expiresAt": expires_at,
        "credentials": {
            "client_id": client_id,
            "token_response": token.clone(),
            "granted_scopes": [],
            "token_received_at": received_at,
        },
    })
    .to_string()
}

#[tokio::test]
async fn auth_status_for_every_class_of_stored_credentials_and_a_corrupt_file() {
    let peers = Peers::start();
    let url = peers.url.clone();
    let names = ["usable", "refreshable", "expired", "blankclient", "missing"];
    let mut config = String::from("credentials_store = \"file\"\n");
    for name in names {
        config.push_str(&format!(
            "\n[servers.{name}]\nurl = {}\nenabled = false\n",
            toml_string(&url)
        ));
    }
    config.push_str(&format!(
        "\n[servers.bearer]\nurl = {}\nbearer_token_env_var = \"CORRAL_TEST_BEARER\"\nenabled = false\n\
         \n[servers.local]\ncommand = \"true\"\nenabled = false\n",
        toml_string(&url)
    ));
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let token = |access: &str, refresh: Option<&str>, lifetime: u64| {
        let mut token = json!({ "access_token": access, "token_type": "Bearer", "expires_in": lifetime });
        if let Some(refresh) = refresh {
            token["refresh_token"] = json!(refresh);
        }
        token
    };
    let entries = json!({
        store_key("usable", &url): record("usable", &url, "c", &token("at-usable", None, 3600), Some(now())),
        store_key("refreshable", &url): record("refreshable", &url, "c", &token("at-r", Some("rt-r"), 60), Some(now() - 3600)),
        store_key("expired", &url): record("expired", &url, "c", &token("at-e", None, 60), Some(now() - 3600)),
        store_key("blankclient", &url): record("blankclient", &url, "", &token("at-b", Some("rt-b"), 3600), Some(now())),
    });
    let file = data.join("credentials.json");
    std::fs::write(&file, json!({ "version": 1, "entries": entries }).to_string()).expect("write");
    let daemon = TestDaemon::builder()
        .config(&config)
        .env("CORRAL_DATA_DIR", &data)
        .start();
    let client = daemon.connect_client().await;
    let statuses = client.mcp_server_list().await.expect("list").servers;
    let auth = |name: &str| {
        statuses
            .iter()
            .find(|server| server.name == name)
            .unwrap_or_else(|| panic!("{name} listed"))
            .auth_status
    };
    assert_eq!(auth("usable"), Some(AuthStatus::OAuth));
    assert_eq!(auth("refreshable"), Some(AuthStatus::OAuth));
    assert_eq!(auth("expired"), Some(AuthStatus::NotLoggedIn));
    assert_eq!(auth("blankclient"), Some(AuthStatus::NotLoggedIn));
    // Nothing stored, and the server publishes OAuth metadata: a login is possible.
    assert_eq!(auth("missing"), Some(AuthStatus::NotLoggedIn));
    assert_eq!(auth("bearer"), Some(AuthStatus::BearerToken));
    assert_eq!(auth("local"), Some(AuthStatus::Unsupported));

    // A corrupt file: an error naming it, for every server that would read it; never "logged out".
    std::fs::write(&file, "{\"version\": 1, \"entries\": {\"usable|").expect("corrupt");
    let statuses = client.mcp_server_list().await.expect("list still answers").servers;
    let usable = statuses.iter().find(|server| server.name == "usable").expect("listed");
    assert_eq!(usable.auth_status, None);
    let error = usable.auth_error.as_deref().expect("authError");
    assert!(
        error.contains(&file.display().to_string()) && error.contains("corrupt"),
        "{error}"
    );
    client.mcp_server_start("usable").await.expect("start");
    let failed = wait_for_status(&client, "usable", ServerStatus::Failed, SERVER_WAIT).await;
    let message = failed.error.expect("an error");
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("kept"),
        "{\"version\": 1, \"entries\": {\"usable|"
    );
}

#[tokio::test]
async fn a_refresh_rejected_while_running_fails_the_server_with_reauthentication_required() {
    let peers = Peers::start();
    let daemon = start_daemon(&peers.config(""));
    let client = login(&daemon).await;
    expire_stored_token(&daemon);
    std::fs::write(peers.control.join("reject-refresh"), "").expect("control file");

    let error = client
        .tools_call(
            "rs",
            "echo",
            json!({ "message": "after expiry" }).as_object().cloned(),
            WAIT,
        )
        .await
        .expect_err("the call cannot be authorized");
    // The call fails with the 401, or, when the server task saw the refused
    // token first and failed the server, with the session gone under it; the
    // reason is the server's status either way.
    let text = error.to_string();
    assert!(
        text.contains("401") || text.contains("authentication") || text.contains("went away during `tools/call`"),
        "{error}"
    );
    let failed = wait_for_status(&client, "rs", ServerStatus::Failed, SERVER_WAIT).await;
    assert_eq!(
        failed.failure_reason,
        Some(FailureReason::ReauthenticationRequired),
        "{failed:?}"
    );
    let (_, record) = stored_record(&daemon);
    assert_eq!(record["refreshRejected"], true, "kept and marked: {record}");
    let refreshes: Vec<Value> = peers
        .token_requests()
        .into_iter()
        .filter(|grant| grant["grant"] == "refresh_token")
        .collect();
    assert!(
        !refreshes.is_empty() && refreshes.iter().all(|grant| grant["status"] == 400),
        "{refreshes:?}"
    );
    assert_tokens_not_logged(&daemon);
}

#[tokio::test]
async fn a_corrupt_dpop_key_fails_the_server_naming_it_and_the_way_out() {
    // Nothing listens there: the key is checked before any request.
    let url = format!("http://127.0.0.1:{}/mcp", free_loopback_port());
    let scratch = scratch_dir();
    let data = scratch.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let token = json!({ "access_token": "at-bound", "token_type": "DPoP", "expires_in": 3600 });
    let mut stored: Value = serde_json::from_str(&record("bound", &url, "c", &token, Some(now()))).expect("record");
    stored["version"] = json!(2);
    stored["dpopKey"] = json!({ "alg": "ES256", "pkcs8": "c2VjcmV0LWJ1dC1ub3QtYS1rZXk" });
    let file = data.join("credentials.json");
    let text = json!({ "version": 1, "entries": { store_key("bound", &url): stored.to_string() } }).to_string();
    std::fs::write(&file, &text).expect("write");
    let config = format!(
        "credentials_store = \"file\"\n\n[servers.bound]\nurl = {}\nstartup_timeout_sec = 5\n",
        toml_string(&url)
    );
    let daemon = TestDaemon::builder()
        .config(&config)
        .env("CORRAL_DATA_DIR", &data)
        .start();
    let client = daemon.connect_client().await;
    let failed = wait_for_status(&client, "bound", ServerStatus::Failed, SERVER_WAIT).await;
    assert_eq!(failed.failure_reason, Some(FailureReason::ConfigInvalid));
    let message = failed.error.expect("an error");
    for expected in [
        "`bound`",
        "DPoP key",
        "corrupt",
        "corral login bound",
        &file.display().to_string(),
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    assert!(!message.contains("c2VjcmV0"), "the key is not quoted: {message}");
    // `authStatus` is an error too, never "logged out"; the record is left as it was.
    let listed = get_server(&client, "bound").await;
    assert_eq!(listed.auth_status, None);
    let auth_error = listed.auth_error.expect("authError");
    assert!(
        auth_error.contains("DPoP key") && auth_error.contains("`bound`"),
        "{auth_error}"
    );
    assert_eq!(std::fs::read_to_string(&file).expect("kept"), text);
}
