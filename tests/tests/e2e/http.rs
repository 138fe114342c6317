//! Streamable-HTTP servers under corrald, against real servers on loopback:
//! server-everything (`streamableHttp` mode, pinned to 127.0.0.1 by
//! `tests/peers/loopback.cjs`) and the SDK fixture
//! `tests/peers/http_fixture_server.py`, which records every request it gets
//! and fails on request.
//!
//! What is checked: tools through corrald; headers, env headers and the
//! bearer token on the wire and never in corrald's log (nor a key in the
//! URL's query, even at `CORRAL_LOG=trace`); `initialize` retried
//! after 503 and while nothing listens yet, `tools/call` never replayed;
//! an expired session (404) recovered once and only once; a server that
//! dies after `ready` reconnected; the failure reason of each kind of
//! failure; the start of a session with a server of either MCP era (the
//! handshake with the 2026-07-28 headers and `_meta`; a server of 2026-07-28
//! only, started without it; one more handshake at the version a server
//! names).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;
use std::path::Path;
use std::time::Duration;

use corral_client::protocol::{ErrorCode, FailureReason, ServerStatus, TransportKind};
use corral_client::{Client, ClientError};
use corral_tests::{
    RecordedRequest, SERVER_WAIT, StatusRecorder, TestDaemon, everything_http, fixture_config, free_loopback_port,
    get_server, http_fixture, loopback_mcp_url, poll_until_for, recorded_requests, scratch_dir, statuses_of,
    toml_string,
};
use serde_json::{Value, json};

use ServerStatus::{Failed, Ready, Starting};

const CALL_WAIT: Duration = Duration::from_secs(30);

fn arguments(value: Value) -> Option<serde_json::Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The text of the first content item of a `CallToolResult`.
fn first_text(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or("<no text>")
}

async fn call_echo(client: &Client, server: &str, message: &str) -> Result<Value, ClientError> {
    client
        .tools_call(server, "echo", arguments(json!({ "message": message })), CALL_WAIT)
        .await
}

fn url_entry(name: &str, port: u16) -> String {
    format!("\n[servers.{name}]\nurl = {}\n", toml_string(&loopback_mcp_url(port)))
}

/// Fail if `secret` appears anywhere in the daemon's log; the lines are shown with it masked.
pub(crate) fn assert_not_logged(daemon: &TestDaemon, secret: &str) {
    let log = daemon.stderr();
    assert!(!log.is_empty(), "the daemon's log is empty: nothing was checked");
    assert!(
        !log.contains(secret),
        "a secret value appears in corrald's log:\n{}",
        log.lines()
            .filter(|line| line.contains(secret))
            .map(|line| line.replace(secret, "<secret>"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn server_everything_over_http_lists_and_calls_tools_through_corral() {
    let scratch = scratch_dir();
    let port = free_loopback_port();
    let _everything = everything_http(port, scratch.path());
    // A stdio server beside it: both start at once and report the same way.
    let config = format!("{}{}", url_entry("everything", port), fixture_config("local", &[]));
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    for server in ["everything", "local"] {
        recorder
            .expect_steps(server, &[(Starting, None), (Ready, None)], SERVER_WAIT)
            .await;
    }
    let status = get_server(client, "everything").await;
    assert_eq!(status.transport, TransportKind::StreamableHttp);
    assert_eq!(status.pid, None, "an HTTP server has no process of ours");
    let info = status.server_info.expect("serverInfo once ready");
    assert_eq!(info.name, "mcp-servers/everything");

    let listed = client.tools_list(Some("everything")).await.expect("tools/list");
    let names: Vec<String> = listed
        .tools
        .iter()
        .map(|tool| tool.tool["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(names.iter().any(|name| name == "echo"), "{names:?}");
    assert_eq!(Some(u32::try_from(names.len()).expect("fits")), status.tool_count);

    let result = call_echo(client, "everything", "over http").await.expect("tools/call");
    assert_eq!(first_text(&result), "Echo: over http");
    let sum = client
        .tools_call("everything", "get-sum", arguments(json!({"a": 2, "b": 3})), CALL_WAIT)
        .await
        .expect("get-sum");
    assert!(first_text(&sum).contains('5'), "{sum}");

    // One listing covers both transports.
    let all = client.tools_list(None).await.expect("tools/list of all servers");
    for server in ["everything", "local"] {
        assert!(
            all.tools.iter().any(|tool| tool.server == server),
            "no tools of {server}"
        );
    }
}

#[tokio::test]
async fn a_server_that_dies_after_ready_is_reconnected_and_front_ends_are_told() {
    let scratch = scratch_dir();
    let port = free_loopback_port();
    let mut everything = everything_http(port, scratch.path());
    let config = format!("{}restart_backoff_initial_sec = 0.2\n", url_entry("everything", port));
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    recorder
        .expect_steps("everything", &[(Starting, None), (Ready, None)], SERVER_WAIT)
        .await;

    everything.kill();
    // corrald notices (its event stream breaks and cannot reconnect), says
    // so, and keeps trying to connect within startup_timeout_sec.
    recorder.wait_for_count("everything", 3, SERVER_WAIT).await;
    assert_eq!(recorder.steps("everything")[2], (Starting, None));
    let _everything = everything_http(port, scratch.path());
    recorder
        .expect_steps(
            "everything",
            &[(Starting, None), (Ready, None), (Starting, None), (Ready, None)],
            SERVER_WAIT,
        )
        .await;
    let server = get_server(client, "everything").await;
    assert_eq!(server.restart_count, 1);
    let result = call_echo(client, "everything", "back again")
        .await
        .expect("tools/call after the reconnect");
    assert_eq!(first_text(&result), "Echo: back again");
}

#[tokio::test]
async fn headers_env_headers_and_the_bearer_token_reach_the_server_and_never_the_log() {
    const TOKEN: &str = "corral-test-bearer-9f3a61c2";
    const ENV_HEADER_VALUE: &str = "corral-test-env-header-4b7d";
    const WRONG_TOKEN: &str = "corral-test-wrong-token-77e0";
    // Some providers put an API key in the server's URL.
    const QUERY_TOKEN: &str = "corral-test-query-token-5e21";
    let scratch = scratch_dir();
    let record = scratch.path().join("requests.jsonl");
    let port = free_loopback_port();
    let _fixture = http_fixture(
        port,
        &record,
        &[
            "--require-bearer",
            TOKEN,
            "--www-authenticate",
            "Bearer realm=\"fixture\"",
        ],
    );
    let url = toml_string(&loopback_mcp_url(port));
    let query_url = toml_string(&format!("{}?api_key={QUERY_TOKEN}", loopback_mcp_url(port)));
    // Nothing listens there: the transport's errors quote the URL.
    let unreachable_query_url = toml_string(&format!(
        "{}?api_key={QUERY_TOKEN}",
        loopback_mcp_url(free_loopback_port())
    ));
    let config = format!(
        r#"
[servers.query-token]
url = {query_url}
bearer_token_env_var = "CORRAL_TEST_TOKEN"

[servers.query-token-unreachable]
url = {unreachable_query_url}
startup_timeout_sec = 2

[servers.good]
url = {url}
bearer_token_env_var = "CORRAL_TEST_TOKEN"
http_headers = {{ X-Static = "static-value" }}
env_http_headers = {{ X-From-Env = "CORRAL_TEST_ENV_HEADER", X-Unset = "CORRAL_TEST_NO_SUCH_VARIABLE" }}

[servers.wrong-token]
url = {url}
bearer_token_env_var = "CORRAL_TEST_WRONG_TOKEN"

[servers.unset-token]
url = {url}
bearer_token_env_var = "CORRAL_TEST_NO_SUCH_TOKEN"

[servers.empty-token]
url = {url}
bearer_token_env_var = "CORRAL_TEST_EMPTY_TOKEN"

[servers.binary-token]
url = {url}
bearer_token_env_var = "CORRAL_TEST_BINARY_TOKEN"
"#
    );
    let daemon = TestDaemon::builder()
        .config(&config)
        .env("CORRAL_TEST_TOKEN", TOKEN)
        .env("CORRAL_TEST_ENV_HEADER", ENV_HEADER_VALUE)
        .env("CORRAL_TEST_WRONG_TOKEN", WRONG_TOKEN)
        .env("CORRAL_TEST_EMPTY_TOKEN", "")
        .env(
            "CORRAL_TEST_BINARY_TOKEN",
            OsString::from_vec(b"corral-\xff-token".to_vec()),
        )
        // The most a user can ask for: not even trace may log a secret.
        .env("CORRAL_LOG", "trace")
        .start();
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    recorder
        .expect_steps("good", &[(Starting, None), (Ready, None)], SERVER_WAIT)
        .await;
    let result = call_echo(client, "good", "with headers").await.expect("tools/call");
    assert_eq!(first_text(&result), "echo: with headers");
    recorder
        .expect_steps("query-token", &[(Starting, None), (Ready, None)], SERVER_WAIT)
        .await;
    let result = call_echo(client, "query-token", "key in the URL")
        .await
        .expect("tools/call");
    assert_eq!(first_text(&result), "echo: key in the URL");
    recorder
        .expect_steps(
            "query-token-unreachable",
            &[(Starting, None), (Failed, Some(FailureReason::Unreachable))],
            SERVER_WAIT,
        )
        .await;

    // Every request of `good` (told apart by its X-Static header) carried all three, and not the unset one.
    let requests = recorded_requests(&record);
    let good: Vec<_> = requests
        .iter()
        .filter(|request| request.headers.get("x-static").map(String::as_str) == Some("static-value"))
        .collect();
    assert!(
        good.len() >= 4,
        "initialize, initialized, tools/list, tools/call at least: {good:?}"
    );
    for request in &good {
        assert_eq!(
            request.headers.get("authorization").map(String::as_str),
            Some(&*format!("Bearer {TOKEN}"))
        );
        assert_eq!(
            request.headers.get("x-from-env").map(String::as_str),
            Some(ENV_HEADER_VALUE)
        );
        assert!(!request.headers.contains_key("x-unset"), "{request:?}");
    }
    assert!(good.iter().any(|request| request.rpc.as_deref() == Some("tools/call")));

    // A token the server refuses: authenticationRequired, without a retry.
    recorder
        .expect_steps(
            "wrong-token",
            &[(Starting, None), (Failed, Some(FailureReason::AuthenticationRequired))],
            SERVER_WAIT,
        )
        .await;
    let refused: Vec<_> = recorded_requests(&record)
        .into_iter()
        .filter(|request| {
            request.headers.get("authorization").map(String::as_str) == Some(&*format!("Bearer {WRONG_TOKEN}"))
        })
        .collect();
    assert_eq!(refused.len(), 1, "a 401 is not retried: {refused:?}");

    // An unset, empty or non-Unicode variable fails the start, naming the variable.
    for (server, variable, problem) in [
        ("unset-token", "CORRAL_TEST_NO_SUCH_TOKEN", "is not set"),
        ("empty-token", "CORRAL_TEST_EMPTY_TOKEN", "is empty"),
        ("binary-token", "CORRAL_TEST_BINARY_TOKEN", "is not valid Unicode"),
    ] {
        let updates = recorder
            .expect_steps(
                server,
                &[(Starting, None), (Failed, Some(FailureReason::ConfigInvalid))],
                SERVER_WAIT,
            )
            .await;
        let error = updates[1].update.error.clone().expect("an error");
        assert!(
            error.contains(&format!("`{variable}`")) && error.contains(problem),
            "{error}"
        );
    }

    // The skipped header is named in a warning; no secret is in the log.
    let log = daemon.stderr();
    assert!(
        log.lines().any(|line| line.contains("X-Unset")
            && line.contains("CORRAL_TEST_NO_SUCH_VARIABLE")
            && line.contains("WARN")),
        "no warning about the skipped header:\n{log}"
    );
    for secret in [TOKEN, ENV_HEADER_VALUE, WRONG_TOKEN, QUERY_TOKEN] {
        assert_not_logged(&daemon, secret);
    }
}

#[tokio::test]
async fn initialize_is_retried_after_503_and_tools_call_is_never_replayed() {
    let scratch = scratch_dir();
    let record = scratch.path().join("requests.jsonl");
    let port = free_loopback_port();
    let _fixture = http_fixture(
        port,
        &record,
        &[
            "--fail-initialize",
            "2",
            "--fail-tools-list",
            "1",
            "--fail-tools-call",
            "1",
        ],
    );
    let daemon = TestDaemon::start_with_config(&url_entry("flaky", port));
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    recorder
        .expect_steps("flaky", &[(Starting, None), (Ready, None)], SERVER_WAIT)
        .await;
    assert_eq!(statuses_of(&recorded_requests(&record), "initialize"), [503, 503, 200]);
    assert_eq!(
        statuses_of(&recorded_requests(&record), "tools/list"),
        [503, 200],
        "tools/list is retried too"
    );

    let error = call_echo(client, "flaky", "once").await.expect_err("the call got 503");
    assert_eq!(error.error_code(), Some(ErrorCode::ServerError), "{error}");
    assert!(error.to_string().contains("HTTP 503"), "{error}");
    assert_eq!(
        statuses_of(&recorded_requests(&record), "tools/call"),
        [503],
        "tools/call must go out exactly once"
    );
    // The server is still there: the next call works.
    let result = call_echo(client, "flaky", "twice").await.expect("the next call");
    assert_eq!(first_text(&result), "echo: twice");
    assert_eq!(statuses_of(&recorded_requests(&record), "tools/call"), [503, 200]);
    assert_eq!(recorder.steps("flaky"), [(Starting, None), (Ready, None)]);
}

/// The `_meta` keys MCP 2026-07-28 asks of every request (SEP-2575).
const CLIENT_CONTEXT: [&str; 3] = [
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/protocolVersion",
];

/// The POST of `rpc` in `requests` that the fixture answered with `status`.
fn post_of<'a>(requests: &'a [RecordedRequest], rpc: &str, status: u16) -> &'a RecordedRequest {
    requests
        .iter()
        .find(|request| request.rpc.as_deref() == Some(rpc) && request.status == status)
        .unwrap_or_else(|| panic!("no {rpc} answered {status} among {requests:#?}"))
}

/// Whether `request` carries the client's context in its `_meta` and the header `name: value`.
fn assert_wire(request: &RecordedRequest, headers: &[(&str, &str)]) {
    let meta = request.meta.clone().unwrap_or_default();
    for key in CLIENT_CONTEXT {
        assert!(
            meta.iter().any(|got| got == key),
            "{key} missing from the _meta of {request:#?}"
        );
    }
    for (name, value) in headers {
        assert_eq!(
            request.headers.get(*name).map(String::as_str),
            Some(*value),
            "{name} of {request:#?}"
        );
    }
}

#[tokio::test]
async fn sessions_start_with_servers_of_either_mcp_era_and_of_an_older_version() {
    let scratch = scratch_dir();
    let (dual_record, modern_record, older_record) = (
        scratch.path().join("dual.jsonl"),
        scratch.path().join("modern.jsonl"),
        scratch.path().join("older.jsonl"),
    );
    let (dual_port, modern_port, older_port) = (free_loopback_port(), free_loopback_port(), free_loopback_port());
    // The Python SDK serves both eras; the fixture makes it refuse the handshake as a server of
    // 2026-07-28 only does, or refuse the version offered as a server of 2025-06-18 only.
    let _dual = http_fixture(dual_port, &dual_record, &[]);
    let _modern = http_fixture(modern_port, &modern_record, &["--supported-versions", "2026-07-28"]);
    let _older = http_fixture(older_port, &older_record, &["--supported-versions", "2025-06-18"]);
    let config = [
        url_entry("dual", dual_port),
        url_entry("modern", modern_port),
        url_entry("older", older_port),
    ]
    .concat();
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    for name in ["dual", "modern", "older"] {
        recorder
            .expect_steps(name, &[(Starting, None), (Ready, None)], SERVER_WAIT)
            .await;
        let result = call_echo(client, name, name).await.expect("the call");
        assert_eq!(first_text(&result), format!("echo: {name}"));
    }

    // A server of either era reads the handshake: the newest version with one, and the headers
    // and `_meta` of 2026-07-28. A dual-era server answers it and keeps a session.
    let dual = recorded_requests(&dual_record);
    assert_eq!(statuses_of(&dual, "initialize"), [200]);
    assert_wire(
        post_of(&dual, "initialize", 200),
        &[("mcp-protocol-version", "2025-11-25"), ("mcp-method", "initialize")],
    );
    assert!(
        post_of(&dual, "tools/call", 200).session,
        "the dual-era server keeps a session"
    );

    // A server of 2026-07-28 only refuses it, naming its version: then its own start, and
    // every request with the version in `_meta` and the headers, without a session.
    let modern = recorded_requests(&modern_record);
    assert_eq!(statuses_of(&modern, "initialize"), [400]);
    assert_eq!(statuses_of(&modern, "server/discover"), [200]);
    assert_wire(
        post_of(&modern, "tools/list", 200),
        &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list")],
    );
    assert_wire(
        post_of(&modern, "tools/call", 200),
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "echo"),
        ],
    );
    assert!(modern.iter().all(|request| !request.session), "no session: {modern:#?}");

    // A server that refuses the version offered gets one more handshake, at the version it names.
    let older = recorded_requests(&older_record);
    assert_eq!(statuses_of(&older, "initialize"), [400, 200]);
    assert_eq!(
        post_of(&older, "initialize", 200)
            .headers
            .get("mcp-protocol-version")
            .map(String::as_str),
        Some("2025-06-18")
    );
    assert_eq!(
        post_of(&older, "tools/call", 200).headers["mcp-protocol-version"],
        "2025-06-18"
    );
}

#[tokio::test]
async fn a_401_during_a_session_is_neither_retried_nor_a_session_recovery() {
    let scratch = scratch_dir();
    let record = scratch.path().join("requests.jsonl");
    let port = free_loopback_port();
    let _fixture = http_fixture(port, &record, &["--fail-tools-call", "1", "--fail-status", "401"]);
    let daemon = TestDaemon::start_with_config(&url_entry("revoked", port));
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    recorder
        .expect_steps("revoked", &[(Starting, None), (Ready, None)], SERVER_WAIT)
        .await;
    let error = call_echo(client, "revoked", "refused").await.expect_err("401");
    assert_eq!(error.error_code(), Some(ErrorCode::ServerError), "{error}");
    assert!(error.to_string().contains("401"), "{error}");
    let requests = recorded_requests(&record);
    assert_eq!(statuses_of(&requests, "tools/call"), [401], "sent once");
    assert_eq!(statuses_of(&requests, "initialize"), [200], "no new session");
}

#[tokio::test]
async fn initialize_is_retried_until_a_server_that_starts_late_listens() {
    let scratch = scratch_dir();
    let record = scratch.path().join("requests.jsonl");
    let port = free_loopback_port();
    let daemon = TestDaemon::start_with_config(&url_entry("late", port));
    let recorder = StatusRecorder::start(&daemon).await;
    recorder.wait_for_count("late", 1, SERVER_WAIT).await;
    // Wait until corrald has found nothing listening at least once.
    poll_until_for(SERVER_WAIT, "a refused initialize in corrald's log", || async {
        let log = daemon.stderr();
        log.lines()
            .any(|line| {
                line.contains("transient failure, retrying")
                    && line.contains("late")
                    && line.contains("Connection refused")
            })
            .then_some(())
    })
    .await;
    let _fixture = http_fixture(port, &record, &[]);
    recorder
        .expect_steps("late", &[(Starting, None), (Ready, None)], SERVER_WAIT)
        .await;
    assert_eq!(statuses_of(&recorded_requests(&record), "initialize"), [200]);
}

#[tokio::test]
async fn an_expired_session_is_recovered_once_and_only_once() {
    let scratch = scratch_dir();
    let record = scratch.path().join("requests.jsonl");
    let port = free_loopback_port();
    let _fixture = http_fixture(port, &record, &[]);
    let daemon = TestDaemon::start_with_config(&url_entry("forgetful", port));
    let recorder = StatusRecorder::start(&daemon).await;
    let client = recorder.client();
    recorder
        .expect_steps("forgetful", &[(Starting, None), (Ready, None)], SERVER_WAIT)
        .await;
    let since = |start: usize| recorded_requests(&record).split_off(start);

    // The server forgets its sessions: the next call gets 404, corrald
    // re-initializes once and sends the call once more.
    client
        .tools_call("forgetful", "forget_sessions", None, CALL_WAIT)
        .await
        .expect("forget_sessions");
    let mark = recorded_requests(&record).len();
    let result = call_echo(client, "forgetful", "recovered")
        .await
        .expect("the call after a 404");
    assert_eq!(first_text(&result), "echo: recovered");
    let after = since(mark);
    assert_eq!(statuses_of(&after, "tools/call"), [404, 200], "{after:?}");
    assert_eq!(statuses_of(&after, "initialize"), [200], "one re-initialize");

    // The new session answers 404 too: one recovery, one retry, then an error.
    client
        .tools_call(
            "forgetful",
            "forget_sessions",
            arguments(json!({"also_next": 1})),
            CALL_WAIT,
        )
        .await
        .expect("forget_sessions also_next");
    let mark = recorded_requests(&record).len();
    let error = call_echo(client, "forgetful", "twice")
        .await
        .expect_err("a second 404 is an error");
    assert!(error.to_string().contains("404"), "{error}");
    let after = since(mark);
    assert_eq!(statuses_of(&after, "tools/call"), [404, 404], "{after:?}");
    assert_eq!(statuses_of(&after, "initialize"), [200], "exactly one re-initialize");

    // The next request recovers again, and the server never left `ready`.
    let result = call_echo(client, "forgetful", "later").await.expect("the next call");
    assert_eq!(first_text(&result), "echo: later");
    assert_eq!(recorder.steps("forgetful"), [(Starting, None), (Ready, None)]);
}

#[tokio::test]
async fn each_http_failure_has_its_reason() {
    let scratch = scratch_dir();
    let fixtures: Vec<_> = [
        ("bad-request", vec!["--status", "400"]),
        (
            "unauthorized",
            vec!["--status", "401", "--www-authenticate", "Bearer realm=\"fixture\""],
        ),
        (
            "forbidden",
            vec![
                "--status",
                "403",
                "--www-authenticate",
                "Bearer error=\"insufficient_scope\", scope=\"admin\"",
            ],
        ),
    ]
    .into_iter()
    .map(|(name, flags)| {
        let port = free_loopback_port();
        let record = scratch.path().join(format!("{name}.jsonl"));
        (name, port, http_fixture(port, &record, &flags), record)
    })
    .collect();
    let unreachable_port = free_loopback_port();
    let mut config = format!(
        "{}startup_timeout_sec = 1\n",
        url_entry("unreachable", unreachable_port)
    );
    for (name, port, _, _) in &fixtures {
        config.push_str(&url_entry(name, *port));
    }
    let daemon = TestDaemon::start_with_config(&config);
    let recorder = StatusRecorder::start(&daemon).await;
    for (name, reason, words) in [
        ("unreachable", FailureReason::Unreachable, "Connection refused"),
        ("bad-request", FailureReason::HttpError, "HTTP 400"),
        ("unauthorized", FailureReason::AuthenticationRequired, "401"),
        ("forbidden", FailureReason::InsufficientScope, "admin"),
    ] {
        let updates = recorder
            .expect_steps(name, &[(Starting, None), (Failed, Some(reason))], SERVER_WAIT)
            .await;
        let error = updates[1].update.error.clone().expect("an error");
        assert!(
            error.contains(words) && error.contains(&format!("`{name}`")),
            "{name}: {error}"
        );
    }
    // None of these is retried: one initialize each.
    for (name, _, _, record) in &fixtures {
        assert_eq!(statuses_of(&recorded_requests(record), "initialize").len(), 1, "{name}");
    }
    assert_record_files_exist(fixtures.iter().map(|(_, _, _, record)| record.as_path()));
}

fn assert_record_files_exist<'a>(records: impl Iterator<Item = &'a Path>) {
    for record in records {
        assert!(record.is_file(), "{} was not written", record.display());
    }
}
