//! OAuth login against real authorization servers: the TS SDK's example server with `--oauth`
//! (dynamic client registration + PKCE, approves at once) driven through `corral login` and the
//! `mcpServer/oauthLogin` API, with a test "browser" (`tests/peers/follow_url.py`) as the opener.
//!
//! What is checked: first-time login reason, the login itself (URL, callback, stored
//! credentials, automatic restart to `ready`), `authStatus` before and after, logout, a callback
//! with a foreign `state` refused while the login goes on, the provider's `error_description`
//! reaching the completion notification, no token or authorization code in corrald's log even at
//! `CORRAL_LOG=trace`, and an `authorization_endpoint` that is not https (or http to a loopback
//! host) refused before any opener runs.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use corral_client::Client;
use corral_client::protocol::{AuthStatus, FailureReason, ServerStatus};
use corral_tests::{
    SERVER_WAIT, SecretService, TestDaemon, WAIT, as_metadata, corral_command, follow_url_opener, free_loopback_port,
    get_server, poll_until, protected_rs, run_command, scratch_dir, sdk_oauth_server, toml_string, toml_string_array,
    wait_for_status,
};
use serde_json::Value;

const LOGIN_WAIT: Duration = Duration::from_secs(60);

fn demo_config(mcp_port: u16, extra: &str) -> String {
    format!(
        "credentials_store = \"file\"\n{extra}\n[servers.demo]\nurl = {}\nstartup_timeout_sec = 20\n",
        toml_string(&format!("http://localhost:{mcp_port}/mcp"))
    )
}

fn credentials_file(daemon: &TestDaemon) -> std::path::PathBuf {
    daemon.dir().join("data").join("credentials.json")
}

/// Every record of the credentials file, parsed.
fn stored_records(daemon: &TestDaemon) -> Vec<Value> {
    let text = std::fs::read_to_string(credentials_file(daemon)).expect("the credentials file exists");
    let document: Value = serde_json::from_str(&text).expect("the credentials file is JSON");
    document["entries"]
        .as_object()
        .expect("entries")
        .values()
        .map(|record| serde_json::from_str(record.as_str().expect("a record is a JSON string")).expect("record JSON"))
        .collect()
}

/// Fail if `secret` appears in the daemon's log.
fn assert_not_logged(daemon: &TestDaemon, what: &str, secret: &str) {
    assert!(secret.len() >= 8, "{what} is too short to search for: {secret:?}");
    let log = daemon.stderr();
    assert!(!log.is_empty(), "the daemon's log is empty: nothing was checked");
    assert!(!log.contains(secret), "{what} appears in corrald's log");
}

#[tokio::test]
async fn corral_login_registers_authorizes_stores_and_the_server_comes_up() {
    let scratch = scratch_dir();
    let (mcp_port, auth_port) = (free_loopback_port(), free_loopback_port());
    let _server = sdk_oauth_server(mcp_port, auth_port, scratch.path());
    let browser_log = scratch.path().join("browser.log");
    let code_file = scratch.path().join("authorization-code");
    let daemon = TestDaemon::builder()
        .config(&demo_config(mcp_port, &follow_url_opener()))
        .env("FOLLOW_URL_LOG", &browser_log)
        .env("FOLLOW_URL_CODE_FILE", &code_file)
        // The most a user can ask for: not even trace may log a code or a token.
        .env("CORRAL_LOG", "trace")
        .start();
    let client = daemon.connect_client().await;

    // Never logged in: the first-time reason, not reauthenticationRequired.
    let before = wait_for_status(&client, "demo", ServerStatus::Failed, SERVER_WAIT).await;
    assert_eq!(
        before.failure_reason,
        Some(FailureReason::AuthenticationRequired),
        "{before:?}"
    );
    assert!(
        before
            .error
            .as_deref()
            .is_some_and(|error| error.contains("corral login demo")),
        "{before:?}"
    );
    assert_eq!(before.auth_status, Some(AuthStatus::NotLoggedIn), "{before:?}");

    let mut login = corral_command();
    login.args(["login", "demo", "--socket"]).arg(daemon.socket_path());
    let output = run_command(&mut login, LOGIN_WAIT);
    assert!(
        output.status.success(),
        "corral login failed:\n{}\n{}",
        output.stdout,
        output.stderr
    );
    let url_line = output
        .stdout
        .lines()
        .find(|line| line.trim_start().starts_with("http"))
        .unwrap_or_else(|| panic!("no URL printed:\n{}", output.stdout));
    for part in [
        "code_challenge_method=S256",
        "response_type=code",
        "resource=",
        "state=",
        "redirect_uri=http%3A%2F%2F127.0.0.1%3A",
    ] {
        assert!(url_line.contains(part), "{part} missing from {url_line}");
    }
    assert!(output.stdout.contains("Logged in to demo"), "{}", output.stdout);
    // The "browser" writes its log after the callback's answer reaches it, which can be after
    // `corral login` has already seen the login complete.
    let opened = poll_until("the opener to write its log", || async {
        std::fs::read_to_string(&browser_log)
            .ok()
            .filter(|text| !text.trim().is_empty())
    })
    .await;
    assert_eq!(opened.trim(), "200");

    // Restarted with the new credentials, without being asked.
    let ready = wait_for_status(&client, "demo", ServerStatus::Ready, SERVER_WAIT).await;
    assert_eq!(ready.auth_status, Some(AuthStatus::OAuth), "{ready:?}");
    let greeting = client
        .tools_call(
            "demo",
            "greet",
            serde_json::json!({ "name": "corral" }).as_object().cloned(),
            WAIT,
        )
        .await
        .expect("greet through the OAuth-managed transport");
    assert!(greeting.to_string().contains("corral"), "{greeting}");

    let records = stored_records(&daemon);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record["server"], "demo");
    assert!(
        record["expiresAt"].as_u64().is_some(),
        "absolute expiry stored: {record}"
    );
    let access_token = record["credentials"]["token_response"]["access_token"]
        .as_str()
        .expect("an access token");
    assert_not_logged(&daemon, "the access token", access_token);
    if let Some(refresh_token) = record["credentials"]["token_response"]["refresh_token"].as_str() {
        assert_not_logged(&daemon, "the refresh token", refresh_token);
    }
    let code = poll_until("the browser to record the code it carried to the callback", || async {
        std::fs::read_to_string(&code_file).ok().filter(|code| !code.is_empty())
    })
    .await;
    assert_not_logged(&daemon, "the authorization code", &code);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(credentials_file(&daemon))
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let mut logout = corral_command();
    logout.args(["logout", "demo", "--socket"]).arg(daemon.socket_path());
    let output = run_command(&mut logout, WAIT);
    assert!(
        output.status.success() && output.stdout.contains("Logged out of demo"),
        "{}",
        output.stdout
    );
    assert!(
        !credentials_file(&daemon).exists(),
        "the last record's logout removes the file"
    );
    // Restarted without credentials: a first login is needed again.
    let after = wait_for_status(&client, "demo", ServerStatus::Failed, SERVER_WAIT).await;
    assert_eq!(
        after.failure_reason,
        Some(FailureReason::AuthenticationRequired),
        "{after:?}"
    );
    assert_eq!(
        get_server(&client, "demo").await.auth_status,
        Some(AuthStatus::NotLoggedIn)
    );
}

/// GET `url` on loopback with a plain HTTP/1.1 request; returns (status, body).
fn http_get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = std::net::TcpStream::connect(authority).expect("connect to the callback listener");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    (status, response)
}

fn query_value(url: &str, name: &str) -> String {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .map(percent_decode)
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).expect("ascii");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            index += 3;
        } else {
            out.push(if bytes[index] == b'+' { b' ' } else { bytes[index] });
            index += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

async fn next_login_completion(client: &mut Client) -> corral_client::protocol::OauthLoginCompleted {
    let mut notifications = client.take_notifications().expect("notification stream");
    corral_tests::next_login_completion(&mut notifications, LOGIN_WAIT).await
}

#[tokio::test]
async fn a_foreign_state_is_refused_and_the_providers_error_description_is_reported() {
    let scratch = scratch_dir();
    let (mcp_port, auth_port) = (free_loopback_port(), free_loopback_port());
    let _server = sdk_oauth_server(mcp_port, auth_port, scratch.path());
    // An opener that does nothing: the test plays the browser.
    let daemon = TestDaemon::start_with_config(&demo_config(mcp_port, "oauth_opener = [\"true\"]"));
    let client = daemon.connect_client().await;
    let notifications_client = daemon.connect_client().await;
    let started = client
        .mcp_server_oauth_login("demo", Some(vec!["mcp:tools".to_owned()]))
        .await
        .expect("mcpServer/oauthLogin");
    let url = started.authorization_url;
    assert!(
        url.contains("scope=mcp%3Atools"),
        "explicit scopes are requested: {url}"
    );
    let redirect_uri = query_value(&url, "redirect_uri");
    let state = query_value(&url, "state");
    assert!(redirect_uri.starts_with("http://127.0.0.1:"), "{redirect_uri}");

    let (status, page) = http_get(&format!("{redirect_uri}?code=stolen&state=not-{state}"));
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("Invalid OAuth callback"), "{page}");
    let (status, _) = http_get(&format!("{redirect_uri}/elsewhere?code=x&state={state}"));
    assert_eq!(status, 404);

    // The login is still waiting: the provider's error ends it, with its description.
    let mut watcher = notifications_client;
    let completion = tokio::spawn(async move { next_login_completion(&mut watcher).await });
    let (status, page) = http_get(&format!(
        "{redirect_uri}?error=access_denied&error_description=The+user+said+no&state={state}"
    ));
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("The user said no"), "{page}");
    let done = completion.await.expect("watcher task");
    assert!(!done.success);
    let error = done.error.expect("an error");
    assert!(
        error.contains("The user said no") && error.contains("access_denied"),
        "{error}"
    );
    assert!(
        !credentials_file(&daemon).exists(),
        "nothing stored after a refused login"
    );
}

#[tokio::test]
async fn a_failed_login_never_quotes_the_servers_url() {
    // Port 9 (discard) on loopback: nothing listens, so discovery fails and rmcp's error quotes
    // the URL it fetched, token and all.
    let config = "[servers.keyed]\nurl = \"http://user:pw@127.0.0.1:9/mcp/path-secret?api_key=query-secret\"\n\
                  enabled = false\n";
    let daemon = TestDaemon::start_with_config(config);
    let client = daemon.connect_client().await;
    let error = client
        .mcp_server_oauth_login("keyed", None)
        .await
        .expect_err("nothing listens there")
        .to_string();
    assert!(error.contains("http://127.0.0.1:9/…"), "the origin says where: {error}");
    let log = daemon.stderr();
    for secret in ["query-secret", "path-secret", "pw@"] {
        assert!(!error.contains(secret), "the error quotes `{secret}`: {error}");
        assert!(!log.contains(secret), "corrald's log quotes `{secret}`");
    }
}

#[tokio::test]
async fn login_is_refused_for_servers_it_cannot_apply_to() {
    let config = "[servers.local]\ncommand = \"true\"\nenabled = false\n\n[servers.bearer]\nurl = \"http://127.0.0.1:9/mcp\"\n\
                  bearer_token_env_var = \"CORRAL_TEST_TOKEN\"\nenabled = false\n";
    let daemon = TestDaemon::start_with_config(config);
    let client = daemon.connect_client().await;
    for (name, expected) in [
        ("local", "only for streamable HTTP"),
        ("bearer", "sets `Authorization`"),
        ("nope", "no MCP server named"),
    ] {
        let error = client
            .mcp_server_oauth_login(name, None)
            .await
            .expect_err("refused")
            .to_string();
        assert!(error.contains(expected), "{name}: {error}");
    }
    assert_eq!(
        get_server(&client, "local").await.auth_status,
        Some(AuthStatus::Unsupported)
    );
    assert_eq!(
        get_server(&client, "bearer").await.auth_status,
        Some(AuthStatus::BearerToken)
    );
}

#[tokio::test]
async fn credentials_in_a_real_keyring_survive_a_daemon_restart() {
    let keyring = SecretService::start();
    let scratch = scratch_dir();
    let (mcp_port, auth_port) = (free_loopback_port(), free_loopback_port());
    let _server = sdk_oauth_server(mcp_port, auth_port, scratch.path());
    let config = demo_config(mcp_port, &follow_url_opener())
        .replace("credentials_store = \"file\"", "credentials_store = \"keyring\"");
    let start = || {
        TestDaemon::builder()
            .config(&config)
            .env("DBUS_SESSION_BUS_ADDRESS", keyring.address())
            .start()
    };
    let daemon = start();
    let client = daemon.connect_client().await;
    wait_for_status(&client, "demo", ServerStatus::Failed, SERVER_WAIT).await;
    let mut login = corral_command();
    login.args(["login", "demo", "--socket"]).arg(daemon.socket_path());
    let output = run_command(&mut login, LOGIN_WAIT);
    assert!(output.status.success(), "{}\n{}", output.stdout, output.stderr);
    wait_for_status(&client, "demo", ServerStatus::Ready, SERVER_WAIT).await;
    assert!(
        !credentials_file(&daemon).exists(),
        "keyring mode writes no credentials file"
    );
    drop(client);
    drop(daemon);

    // A new daemon finds the login in the keyring: ready without logging in again.
    let daemon = start();
    let client = daemon.connect_client().await;
    let ready = wait_for_status(&client, "demo", ServerStatus::Ready, SERVER_WAIT).await;
    assert_eq!(ready.auth_status, Some(AuthStatus::OAuth));
    assert!(
        daemon.stderr().contains("Secret Service"),
        "the log says which store is used"
    );
}

#[tokio::test]
async fn a_configured_callback_url_is_the_redirect_uri_and_its_port_is_listened_on() {
    let scratch = scratch_dir();
    let (mcp_port, auth_port, callback_port) = (free_loopback_port(), free_loopback_port(), free_loopback_port());
    let _server = sdk_oauth_server(mcp_port, auth_port, scratch.path());
    let callback = format!("http://localhost:{callback_port}/oauth/done");
    let extra = format!(
        "{}oauth_callback_url = {}\n",
        follow_url_opener(),
        toml_string(&callback)
    );
    let daemon = TestDaemon::start_with_config(&demo_config(mcp_port, &extra));
    let mut watcher = daemon.connect_client().await;
    let client = daemon.connect_client().await;
    wait_for_status(&client, "demo", ServerStatus::Failed, SERVER_WAIT).await;
    let completion = tokio::spawn(async move { next_login_completion(&mut watcher).await });
    let started = client.mcp_server_oauth_login("demo", None).await.expect("login");
    assert_eq!(query_value(&started.authorization_url, "redirect_uri"), callback);
    let done = completion.await.expect("watcher");
    assert!(done.success, "{:?}", done.error);
    wait_for_status(&client, "demo", ServerStatus::Ready, SERVER_WAIT).await;
}

#[tokio::test]
async fn an_authorization_endpoint_that_is_not_https_or_loopback_http_is_never_opened() {
    let scratch = scratch_dir();
    let (rs_port, as_port) = (free_loopback_port(), free_loopback_port());
    let endpoint_file = scratch.path().join("authorization_endpoint");
    std::fs::write(&endpoint_file, "http://127.0.0.1:9/authorize").expect("endpoint file");
    let _auth = as_metadata(as_port, &endpoint_file);
    let _resource = protected_rs(
        rs_port,
        &format!("http://127.0.0.1:{as_port}"),
        &scratch.path().join("rs.log"),
    );
    // The opener leaves a mark when it runs; it must never run for these endpoints.
    let marker = scratch.path().join("opener-ran");
    let opener = toml_string_array(&[
        "sh".to_owned(),
        "-c".to_owned(),
        format!("echo ran > '{}'", marker.display()),
        "opener".to_owned(),
    ]);
    let config = format!(
        "credentials_store = \"file\"\noauth_opener = {opener}\n[servers.rs]\nurl = {}\n\
         oauth_client_id = \"corral-test-client\"\nstartup_timeout_sec = 20\n",
        toml_string(&format!("http://127.0.0.1:{rs_port}/mcp"))
    );
    let daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    wait_for_status(&client, "rs", ServerStatus::Failed, SERVER_WAIT).await;

    for (endpoint, named) in [
        ("file:///etc/passwd", "`file`"),
        ("javascript:alert(document.cookie)//", "`javascript`"),
        ("smb://attacker.example/share/authorize", "`smb`"),
        ("ms-settings:privacy", "`ms-settings`"),
        ("http://auth.example.com/authorize", "`auth.example.com`"),
    ] {
        std::fs::write(&endpoint_file, endpoint).expect("endpoint file");
        let error = client
            .mcp_server_oauth_login("rs", None)
            .await
            .expect_err(&format!("a login to {endpoint} is refused"));
        let corral_client::ClientError::Rpc {
            code, message, data, ..
        } = &error
        else {
            panic!("{endpoint}: not an RPC error: {error}");
        };
        assert_eq!(*code, -32012, "{endpoint}: {message}");
        assert_eq!(
            data.as_ref().map(|data| &data["failureReason"]),
            Some(&serde_json::json!("protocolError")),
            "{endpoint}: {data:?}"
        );
        assert!(message.contains(named), "{endpoint}: {message}");
        assert!(!message.contains(endpoint), "the whole URL is not quoted: {message}");
        assert!(!marker.exists(), "the opener ran for {endpoint}");
    }
    assert!(
        !credentials_file(&daemon).exists(),
        "nothing stored after a refused login"
    );
}
