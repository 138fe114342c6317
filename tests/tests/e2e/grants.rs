//! The grants for machines (`oauth_grant`) against oauth2-mock-server
//! (`tests/peers/oauth_mock_as.mjs`, which answers `client_credentials` and JWT-bearer requests
//! and logs SHA-256 prefixes of the secrets, assertions and tokens it sees) and an MCP server on
//! the official Python SDK that accepts its JWTs (`tests/peers/protected_rs.py`). The grants
//! against the conformance suite's own authorization servers (each client authentication,
//! enterprise-managed authorization, workload identity) are `conformance`'s.
//!
//! What is checked here, which the suite does not: the token is renewed by running the grant
//! again before it expires, once for concurrent calls that need it, with the secret read again
//! from its file (a rotated secret is the one sent); a workload JWT file is read again for every
//! grant; a refused grant fails the server with what to check, and `corral restart` after the
//! fix brings it up; a missing secret file is `configInvalid` naming it; an inline secret in the
//! config is refused naming server and field; `corral login` is refused for such servers and
//! their `authStatus` is `oAuth`; and no secret, assertion or token in corrald's log at
//! `CORRAL_LOG=trace` or in any message.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use corral_client::Client;
use corral_client::protocol::{AuthStatus, FailureReason, ServerStatus};
use corral_tests::{
    HttpPeer, SERVER_WAIT, TestDaemon, WAIT, free_loopback_port, get_server, json_lines, oauth_mock_as, protected_rs,
    scratch_dir, toml_string, wait_for_status,
};
use serde_json::{Value, json};
use sha2::Digest as _;

/// How long the authorization server's tokens live: renewed by the grant 2 s before they expire
/// (half the lifetime, under the 30 s window), so the tests wait seconds, not minutes.
const LIFETIME_SECS: u64 = 4;

fn digest(value: &str) -> String {
    sha2::Sha256::digest(value.as_bytes())
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// An authorization server, a protected MCP server, their logs, and a directory for secrets.
struct Peers {
    scratch: tempfile::TempDir,
    _auth: HttpPeer,
    _resource: HttpPeer,
    as_log: PathBuf,
    rs_log: PathBuf,
    url: String,
}

impl Peers {
    fn start() -> Self {
        let scratch = scratch_dir();
        let (as_port, rs_port) = (free_loopback_port(), free_loopback_port());
        let as_log = scratch.path().join("as.log");
        let rs_log = scratch.path().join("rs.log");
        let auth = oauth_mock_as(as_port, &as_log, scratch.path(), LIFETIME_SECS);
        let resource = protected_rs(rs_port, &format!("http://127.0.0.1:{as_port}"), &rs_log);
        Self {
            scratch,
            _auth: auth,
            _resource: resource,
            as_log,
            rs_log,
            url: format!("http://127.0.0.1:{rs_port}/mcp"),
        }
    }

    /// A file in the scratch directory holding `text`, as a TOML string of its path.
    fn secret_file(&self, name: &str, text: &str) -> String {
        let path = self.scratch.path().join(name);
        std::fs::write(&path, text).expect("write a secret file");
        toml_string(&path.display().to_string())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// The server `rs` with the grant `lines`.
    fn config(&self, lines: &str) -> String {
        format!(
            "credentials_store = \"file\"\n\n[servers.rs]\nurl = {}\nstartup_timeout_sec = 20\n{lines}",
            toml_string(&self.url)
        )
    }

    /// The machine grants the authorization server answered so far.
    fn grants(&self) -> Vec<Value> {
        json_lines(&self.as_log)
            .into_iter()
            .filter(|line| line["grant"] != "refresh_token" && line["grant"] != "authorization_code")
            .collect()
    }

    /// The token each authenticated request to the MCP server carried (SHA-256 prefixes).
    fn tokens_seen(&self) -> Vec<String> {
        json_lines(&self.rs_log)
            .into_iter()
            .filter_map(|line| line["token"].as_str().map(str::to_owned))
            .collect()
    }

    /// Create (`present`) or remove the control file `name` of the authorization server.
    fn control(&self, name: &str, present: bool) {
        let path = self.scratch.path().join(name);
        if present {
            std::fs::write(path, "").expect("control file");
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A daemon logging all it can (`CORRAL_LOG=trace`): no secret may appear even then.
fn start_daemon(config: &str) -> TestDaemon {
    TestDaemon::builder().config(config).env("CORRAL_LOG", "trace").start()
}

async fn echo(client: &Client, message: &str) -> Value {
    client
        .tools_call("rs", "echo", json!({ "message": message }).as_object().cloned(), WAIT)
        .await
        .unwrap_or_else(|error| panic!("echo {message}: {error}"))
}

/// The stored access token of the server (the grant's tokens are stored like a login's).
fn stored_access_token(daemon: &TestDaemon) -> String {
    let path = daemon.dir().join("data").join("credentials.json");
    let document: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("credentials file")).expect("JSON");
    let entries = document["entries"].as_object().expect("entries");
    assert_eq!(entries.len(), 1, "{document}");
    let record: Value =
        serde_json::from_str(entries.values().next().and_then(Value::as_str).expect("a record")).expect("record JSON");
    record["credentials"]["token_response"]["access_token"]
        .as_str()
        .expect("stored token")
        .to_owned()
}

/// None of `secrets` in corrald's log.
fn assert_not_logged(daemon: &TestDaemon, secrets: &[&str]) {
    let log = daemon.stderr();
    assert!(!log.is_empty(), "corrald logged nothing at trace");
    for (index, secret) in secrets.iter().enumerate() {
        assert!(!secret.is_empty());
        // Named by its place in the list: not even a test's secret goes to the output.
        assert!(!log.contains(secret), "secret #{index} appears in corrald's log");
    }
}

/// Wait until `condition` holds for the authorization server's machine grants.
fn wait_for_grants(peers: &Peers, what: &str, condition: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + SERVER_WAIT;
    loop {
        let grants = peers.grants();
        if condition(&grants) {
            return grants;
        }
        assert!(Instant::now() < deadline, "{what}: {grants:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Until the token got at `granted` is within its last `LIFETIME_SECS / 2` seconds.
async fn until_renewal_due(granted: Instant) {
    let due = granted + Duration::from_millis(LIFETIME_SECS * 1000 / 2 + 300);
    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
}

#[tokio::test]
async fn client_credentials_tokens_are_renewed_by_the_grant_before_they_expire_with_the_secret_read_again() {
    let peers = Peers::start();
    let first_secret = "grant-secret-from-a-file-6d1f";
    let secret_file = peers.secret_file("client-secret", &format!("{first_secret}\n"));
    let daemon = start_daemon(&peers.config(&format!(
        "oauth_grant = \"client_credentials\"\noauth_client_id = \"corral-ci\"\noauth_client_secret_file = {secret_file}\n"
    )));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "rs", ServerStatus::Ready, SERVER_WAIT).await;
    let granted = Instant::now();
    echo(&client, "one").await;

    let grants = peers.grants();
    assert_eq!(grants.len(), 1, "one grant at the start: {grants:#?}");
    assert_eq!(grants[0]["grant"], "client_credentials");
    assert_eq!(grants[0]["status"], 200);
    assert_eq!(grants[0]["clientAuth"], "basic", "a secret alone: client_secret_basic");
    assert_eq!(grants[0]["clientId"], "corral-ci");
    assert_eq!(
        grants[0]["presentedSecret"],
        digest(first_secret),
        "the file's secret, trimmed"
    );
    assert_eq!(
        grants[0]["resource"],
        peers.url.as_str(),
        "the server's URL as the resource"
    );
    let first_token = grants[0]["issuedAccess"].clone();
    assert!(
        peers.tokens_seen().iter().all(|seen| *seen == first_token),
        "every request carried the grant's token"
    );
    let server = get_server(&client, "rs").await;
    assert_eq!(server.auth_status, Some(AuthStatus::OAuth));
    let stored = stored_access_token(&daemon);
    assert_eq!(digest(&stored), first_token, "the grant's token is stored");

    // The secret is rotated; past the renewal point two calls at once run the grant once, with it.
    let second_secret = "grant-secret-rotated-83c2";
    std::fs::write(peers.path("client-secret"), second_secret).expect("rotate the secret");
    until_renewal_due(granted).await;
    let (two, three) = tokio::join!(echo(&client, "two"), echo(&client, "three"));
    assert!(two.to_string().contains("echo: two") && three.to_string().contains("echo: three"));
    let grants = peers.grants();
    assert_eq!(grants.len(), 2, "one more grant for both calls: {grants:#?}");
    assert_eq!(
        grants[1]["presentedSecret"],
        digest(second_secret),
        "the file is read for every grant"
    );
    let second_token = grants[1]["issuedAccess"].clone();
    assert_ne!(second_token, first_token);
    let seen = peers.tokens_seen();
    assert_eq!(
        seen.last().map(String::as_str),
        second_token.as_str(),
        "the calls carried the new token: {seen:?}"
    );
    let server = get_server(&client, "rs").await;
    assert_eq!(server.status, ServerStatus::Ready, "renewed without a restart");

    // No login for a server with a grant.
    let refused = client
        .mcp_server_oauth_login("rs", None)
        .await
        .expect_err("a grant server has no login")
        .to_string();
    assert!(
        refused.contains("client_credentials grant") && refused.contains("without a login"),
        "{refused}"
    );
    let renewed = stored_access_token(&daemon);
    assert_not_logged(&daemon, &[first_secret, second_secret, &stored, &renewed]);
}

#[tokio::test]
async fn a_refused_grant_fails_the_start_with_what_to_check_and_a_restart_after_the_fix_brings_it_up() {
    let peers = Peers::start();
    let secret = "grant-secret-refused-4e9a";
    peers.control("reject-grant", true);
    let daemon = TestDaemon::builder()
        .config(&peers.config(
            "oauth_grant = \"client_credentials\"\noauth_client_id = \"corral-ci\"\n\
             oauth_client_auth = \"client_secret_post\"\noauth_client_secret_env_var = \"CORRAL_TEST_GRANT_SECRET\"\n",
        ))
        .env("CORRAL_LOG", "trace")
        .env("CORRAL_TEST_GRANT_SECRET", secret)
        .start();
    let client = daemon.connect_client().await;
    let failed = wait_for_status(&client, "rs", ServerStatus::Failed, SERVER_WAIT).await;
    assert_eq!(failed.failure_reason, Some(FailureReason::AuthenticationRequired));
    let error = failed.error.expect("an error");
    for words in [
        "`rs`",
        "the client_credentials grant",
        "refused with `invalid_client`",
        "check oauth_client_id",
    ] {
        assert!(error.contains(words), "{words:?} in {error}");
    }
    assert!(!error.contains(secret));
    let grants = peers.grants();
    assert_eq!(grants.len(), 1, "a refused grant is not retried: {grants:#?}");
    assert_eq!(grants[0]["clientAuth"], "post");
    assert_eq!(grants[0]["presentedSecret"], digest(secret));

    peers.control("reject-grant", false);
    client.mcp_server_restart("rs").await.expect("restart");
    wait_for_status(&client, "rs", ServerStatus::Ready, SERVER_WAIT).await;
    echo(&client, "after the fix").await;
    assert_not_logged(&daemon, &[secret, &stored_access_token(&daemon)]);
}

/// Unpadded base64url (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let block = chunk.iter().enumerate().fold(0u32, |block, (index, byte)| {
            block | (u32::from(*byte) << (16 - 8 * index))
        });
        for index in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((block >> (18 - 6 * index)) & 63) as usize]));
        }
    }
    out
}

/// A JWT as a workload's platform issues it (the mock reads its payload only).
fn workload_jwt(subject: &str) -> String {
    let encode = |value: &Value| base64url(value.to_string().as_bytes());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        encode(&json!({ "alg": "RS256", "typ": "JWT" })),
        encode(&json!({ "iss": "https://k8s.example", "sub": subject, "aud": "mcp" }))
    )
}

#[tokio::test]
async fn a_workload_jwt_file_is_read_again_for_every_grant() {
    let peers = Peers::start();
    let first = workload_jwt("system:serviceaccount:ci:first");
    let assertion_file = peers.secret_file("workload.jwt", &first);
    let daemon = start_daemon(&peers.config(&format!(
        "oauth_grant = \"jwt_bearer\"\noauth_assertion_file = {assertion_file}\n"
    )));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "rs", ServerStatus::Ready, SERVER_WAIT).await;
    let granted = Instant::now();
    echo(&client, "one").await;
    let grants = peers.grants();
    assert_eq!(grants.len(), 1, "{grants:#?}");
    assert_eq!(grants[0]["grant"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
    assert_eq!(grants[0]["presentedAssertion"], digest(&first));
    assert_eq!(
        grants[0]["clientAuth"], "none",
        "no client id, no secret: no client authentication"
    );

    // The platform rotates the token file.
    let second = workload_jwt("system:serviceaccount:ci:second");
    std::fs::write(peers.path("workload.jwt"), &second).expect("rotate");
    until_renewal_due(granted).await;
    echo(&client, "two").await;
    let grants = wait_for_grants(&peers, "a second grant", |grants| grants.len() == 2);
    assert_eq!(grants[1]["presentedAssertion"], digest(&second), "the rotated JWT");
    assert_not_logged(&daemon, &[&first, &second, &stored_access_token(&daemon)]);
}

#[tokio::test]
async fn a_secret_that_cannot_be_read_fails_the_start_naming_the_file_and_an_inline_secret_is_refused() {
    let peers = Peers::start();
    let missing = peers.path("no-such-secret");
    let inline = "inline-secret-value-that-must-not-show-51b0";
    let config = format!(
        "{}\n[servers.inline]\nurl = {}\noauth_grant = \"client_credentials\"\noauth_client_id = \"c\"\n\
         oauth_client_secret = \"{inline}\"\n",
        peers.config(&format!(
            "oauth_grant = \"client_credentials\"\noauth_client_id = \"corral-ci\"\noauth_client_secret_file = {}\n",
            toml_string(&missing.display().to_string())
        )),
        toml_string(&peers.url)
    );
    // An inline secret makes the whole file unusable: corrald runs with no config servers and says why.
    let daemon = start_daemon(&config);
    let client = daemon.connect_client().await;
    let status = client.daemon_status().await.expect("daemon/status");
    let error = status.config_error.expect("the config is refused");
    assert!(
        error.contains("server `inline`, field `oauth_client_secret`: inline secrets are not allowed")
            && error.contains("`oauth_client_secret_env_var` or `oauth_client_secret_file`"),
        "{error}"
    );
    assert!(!error.contains(inline), "{error}");
    assert_not_logged(&daemon, &[inline]);
    drop(client);
    drop(daemon);

    // Without the inline entry, the missing file fails the start with `configInvalid`.
    let daemon = start_daemon(&peers.config(&format!(
        "oauth_grant = \"client_credentials\"\noauth_client_id = \"corral-ci\"\noauth_client_secret_file = {}\n",
        toml_string(&missing.display().to_string())
    )));
    let client = daemon.connect_client().await;
    let failed = wait_for_status(&client, "rs", ServerStatus::Failed, SERVER_WAIT).await;
    assert_eq!(failed.failure_reason, Some(FailureReason::ConfigInvalid));
    let error = failed.error.expect("an error");
    assert!(
        error.contains(&missing.display().to_string()) && error.contains("(oauth_client_secret_file)"),
        "{error}"
    );
    assert!(peers.grants().is_empty(), "no grant without its secret");
}
