//! corrald's loopback streamable-HTTP MCP endpoint (`[mcp_endpoint]`), driven
//! by the official TypeScript SDK's `Client` + `StreamableHTTPClientTransport`
//! (`tests/peers/mcp-bridge-client.mjs --http URL --token T`) against
//! server-everything and the fixture under the daemon: listing, calls,
//! progress, cancellation the fixture sees, `list_changed` on the session's
//! GET stream after a reload, and DELETE ending the session's engine
//! connection. Then the doors, with plain HTTP on a TCP socket: no token or a
//! wrong one (401), a foreign `Origin` or `Host` (403), an unknown or deleted
//! session (404), an unsupported protocol version (400), a body over the
//! frame limit (413); nothing answers on the machine's non-loopback address,
//! a config (or flag) asking for one is refused; the token file is 0600, kept
//! across restarts, and a symbolic link planted at its name is refused and
//! left alone. Sessions: one whose client went away while its `initialize`
//! was answered is closed (`corral status` counts none left); the endpoint's
//! sessions hold at most half of the connection cap, the least recently used
//! idle one closed for a new one, 503 when every one is busy, while
//! `corral status` still gets in; a cancelled call answered as JSON gets
//! `requestCancelled` (never 404); an answer restarts the idle clock
//! (`CORRAL_MCP_ENDPOINT_IDLE_MS`). What the token grants: an `initialize`
//! asking for Corral's own protocol, or for servers of the session's own
//! (`sessionServers`, here a command that would leave a file behind), is
//! refused, unless `allow_session_servers` allows the latter (the fixture
//! then runs as long as the session). 300 connections that send nothing do
//! not keep a client with the token out: the oldest of them are closed.
//! Requests answered on SSE one after another on one kept-alive
//! connection do not each wait for the client's delayed ACK (the endpoint
//! sets `TCP_NODELAY`). corrald runs at `CORRAL_LOG=trace` and its
//! log never holds the token or a session id.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use corral_protocol::ServerStatus;
use corral_tests::{
    KillSurvivorsOnDrop, SERVER_WAIT, TestDaemon, WAIT, corral_command, everything_config, fixture_config,
    fixture_python, fixture_script, poll_until, run_command, run_corral, wait_for_status, within,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::bridge::{TsClient, wait_for_stderr_line};
use crate::http::assert_not_logged;

/// The endpoint on, on a free loopback port.
const ENDPOINT: &str = "\n[mcp_endpoint]\nenabled = true\nlisten = \"127.0.0.1:0\"\n";

/// An `initialize` as a client sends it.
const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw-http","version":"1"}}}"#;

/// What `corral mcp url --json` says.
#[derive(Clone)]
struct Endpoint {
    url: String,
    /// `Bearer TOKEN`.
    authorization: String,
    address: SocketAddr,
}

impl Endpoint {
    fn token(&self) -> &str {
        self.authorization
            .strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("not a bearer token: {}", self.authorization.len()))
    }
}

/// The endpoint of `daemon`, as `corral mcp url --json` prints it.
async fn endpoint_of(daemon: &TestDaemon) -> Endpoint {
    let output = run_corral(daemon.socket_path(), &["mcp", "url", "--json"]).await;
    assert!(output.status.success(), "corral mcp url: {}", output.stderr);
    let printed: Value = serde_json::from_str(&output.stdout).expect("corral mcp url --json prints JSON");
    let url = printed["url"].as_str().expect("a url").to_owned();
    let authorization = printed["headers"]["Authorization"]
        .as_str()
        .expect("an Authorization header")
        .to_owned();
    let address = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/mcp"))
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("not http://ADDRESS/mcp: {url}"));
    Endpoint {
        url,
        authorization,
        address,
    }
}

/// One HTTP answer: status, headers (names in lower case), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(found, _)| found == name)
            .map(|(_, value)| value.as_str())
    }

    /// The JSON-RPC error message of the body.
    fn error_message(&self) -> String {
        let body: Value = serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"));
        body["error"]["message"].as_str().unwrap_or_default().to_owned()
    }
}

/// One request on a new connection (`Connection: close`), as any HTTP client
/// would send it: `Host` is the endpoint's address unless `headers` names one.
async fn exchange(address: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let request = request_text(address, method, path, headers, body);
    let mut stream = connect(address).await;
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut bytes = Vec::new();
    within("the MCP endpoint's answer", stream.read_to_end(&mut bytes))
        .await
        .expect("read the answer");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A new TCP connection to the endpoint.
async fn connect(address: SocketAddr) -> tokio::net::TcpStream {
    within(
        "connecting to the MCP endpoint",
        tokio::net::TcpStream::connect(address),
    )
    .await
    .expect("connect to the MCP endpoint")
}

/// The text of one request (`Connection: close`), as [`exchange`] sends it.
fn request_text(address: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {address}\r\n"));
    }
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-length"))
    {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    request
}

/// A POST of `body` to /mcp with `headers`, JSON (and answered as JSON) unless they say otherwise.
async fn post(endpoint: &Endpoint, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut all = vec![("Content-Type", "application/json")];
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("accept")) {
        all.push(("Accept", "application/json"));
    }
    all.extend_from_slice(headers);
    exchange(endpoint.address, "POST", "/mcp", &all, body).await
}

/// The JSON messages of an SSE body, in order.
fn events(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap_or_else(|error| panic!("not JSON ({error}): {data}")))
        .collect()
}

/// A GET stream of `session`, open (its answer's head read).
async fn open_listener(endpoint: &Endpoint, session: &str) -> tokio::net::TcpStream {
    let mut stream = connect(endpoint.address).await;
    let request = format!(
        "GET /mcp HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nAuthorization: {}\r\nMcp-Session-Id: {session}\r\n\r\n",
        endpoint.address, endpoint.authorization
    );
    stream.write_all(request.as_bytes()).await.expect("send the GET");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        within("the GET stream's head", stream.read_exact(&mut byte))
            .await
            .expect("read the GET stream's head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-type: text/event-stream"),
        "{head}"
    );
    stream
}

/// A new session: its id.
async fn initialize(endpoint: &Endpoint) -> String {
    let reply = post(endpoint, &[("Authorization", &endpoint.authorization)], INITIALIZE).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let answer: Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(answer["result"]["serverInfo"]["name"], "corral", "{reply:?}");
    let session = reply.header("mcp-session-id").expect("a session id").to_owned();
    assert!(
        session.len() == 32 && session.bytes().all(|byte| byte.is_ascii_hexdigit()),
        "128 bits in hex: {session}"
    );
    session
}

#[tokio::test]
async fn the_typescript_sdk_lists_calls_follows_progress_and_tool_changes_over_the_http_endpoint() {
    let config = format!(
        "{}{}{ENDPOINT}",
        everything_config("everything"),
        fixture_config("fixture", &[])
    );
    let daemon = TestDaemon::builder().config(&config).env("CORRAL_LOG", "trace").start();
    let client = daemon.connect_client().await;
    for server in ["everything", "fixture"] {
        wait_for_status(&client, server, ServerStatus::Ready, SERVER_WAIT).await;
    }
    let endpoint = endpoint_of(&daemon).await;
    let state = tempfile::tempdir().expect("a state dir");
    let (mut mcp, connected) = TsClient::start_http(&endpoint.url, endpoint.token(), state.path()).await;
    assert_eq!(connected["serverVersion"]["name"], "corral", "{connected}");
    assert_eq!(connected["capabilities"]["tools"]["listChanged"], true, "{connected}");
    let session = connected["sessionId"].as_str().expect("a session id").to_owned();
    // The session is a connection of the daemon's, beside this test's client.
    daemon.wait_for_connections(&client, 2).await;

    let (names, _) = mcp.list().await;
    for expected in [
        "everything__echo",
        "everything__trigger-long-running-operation",
        "fixture__echo",
    ] {
        assert!(names.iter().any(|name| name == expected), "{expected} in {names:?}");
    }
    let echoed = mcp
        .call("everything__echo", json!({"message": "hello over http"}))
        .await;
    assert_eq!(
        echoed["result"],
        json!({"content": [{"type": "text", "text": "Echo: hello over http"}]}),
        "{echoed}"
    );

    // Progress comes on the call's own SSE stream, before its result (this
    // SDK may drop the last step when it arrives in the same read as the
    // result, typescript-sdk#2580, as in bridge.rs).
    mcp.long_call_with_progress().await;

    // Cancellation reaches the server.
    mcp.op(json!({"op": "start", "id": "slow", "name": "fixture__sleep", "arguments": {"seconds": 60}}))
        .await;
    wait_for_stderr_line(&client, "fixture", "fixture: sleeping 60").await;
    let aborted = mcp.op(json!({"op": "abort", "id": "slow"})).await;
    assert!(aborted.get("error").is_some(), "the call was aborted: {aborted}");
    wait_for_stderr_line(&client, "fixture", "fixture: sleep cancelled").await;

    // A server added by a reload: the client is told on its GET stream, and lists it.
    mcp.forget_events();
    let config = format!("{config}{}", fixture_config("two", &[]));
    std::fs::write(daemon.config_path(), config).expect("rewrite the config");
    client.config_reload().await.expect("config/reload");
    let mut names = Vec::new();
    for _ in 0..10 {
        mcp.list_changed().await;
        names = mcp.list().await.0;
        if names.iter().any(|name| name == "two__echo") {
            break;
        }
    }
    assert!(names.iter().any(|name| name == "two__echo"), "{names:?}");

    // DELETE (the SDK's terminateSession) ends the session's engine connection.
    assert_eq!(mcp.op(json!({"op": "terminate"})).await["op"], "terminate");
    daemon.wait_for_connections(&client, 1).await;
    let ping = r#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#;
    let after = post(
        &endpoint,
        &[("Authorization", &endpoint.authorization), ("Mcp-Session-Id", &session)],
        ping,
    )
    .await;
    assert_eq!(after.status, 404, "{after:?}");
    mcp.close().await;

    // On the wire: a call's progress goes on the call's own stream, before
    // its result, although the session's GET stream is open.
    let raw_session = initialize(&endpoint).await;
    let mut listener = open_listener(&endpoint, &raw_session).await;
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"everything__trigger-long-running-operation","arguments":{"duration":0.2,"steps":2},"_meta":{"progressToken":"my-token"}}}"#;
    let reply = post(
        &endpoint,
        &[
            ("Authorization", &endpoint.authorization),
            ("Mcp-Session-Id", &raw_session),
            ("Accept", "application/json, text/event-stream"),
        ],
        call,
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("text/event-stream"), "{reply:?}");
    let seen = events(&reply.body);
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (step, message) in seen[..2].iter().enumerate() {
        assert_eq!(
            message,
            &json!({"jsonrpc": "2.0", "method": "notifications/progress",
                    "params": {"progressToken": "my-token", "progress": (step + 1) as f64, "total": 2.0}}),
            "{seen:?}"
        );
    }
    assert_eq!(seen[2]["id"], 3, "{seen:?}");
    let mut heard = vec![0u8; 4096];
    let on_listener = tokio::time::timeout(std::time::Duration::from_millis(300), listener.read(&mut heard)).await;
    assert!(on_listener.is_err(), "nothing on the GET stream: {on_listener:?}");

    assert_not_logged(&daemon, endpoint.token());
    assert_not_logged(&daemon, &session);
    assert_not_logged(&daemon, &raw_session);
}

#[tokio::test]
async fn requests_without_the_token_or_from_a_foreign_origin_or_host_or_for_an_unknown_session_are_refused() {
    let daemon = TestDaemon::builder()
        .config(ENDPOINT)
        .env("CORRAL_LOG", "trace")
        .start();
    let endpoint = endpoint_of(&daemon).await;
    let authorization = endpoint.authorization.as_str();

    // No token, a wrong one (same length), another scheme: 401, saying how to authenticate.
    let wrong = format!("Bearer {}", "A".repeat(endpoint.token().len()));
    for headers in [
        vec![],
        vec![("Authorization", wrong.as_str())],
        vec![("Authorization", "Basic Zm9vOmJhcg==")],
    ] {
        let reply = post(&endpoint, &headers, INITIALIZE).await;
        assert_eq!(reply.status, 401, "{headers:?}: {reply:?}");
        // What an MCP client that knows OAuth shows: no resource metadata to
        // discover, and a description that says where the token is.
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer ")
                && !challenge.contains("resource_metadata")
                && challenge.contains("error_description=\"")
                && challenge.contains("corral mcp url"),
            "{reply:?}"
        );
        assert_eq!(
            challenge.contains("error=\"invalid_token\""),
            !headers.is_empty(),
            "invalid_token only when a token was sent (RFC 6750): {reply:?}"
        );
        assert!(reply.error_message().contains("corral mcp url"), "{reply:?}");
        assert!(reply.header("mcp-session-id").is_none(), "{reply:?}");
    }
    let reply = exchange(endpoint.address, "GET", "/mcp", &[("Accept", "text/event-stream")], "").await;
    assert_eq!(reply.status, 401, "a GET needs the token too: {reply:?}");

    // The right token, but a page of another site (DNS rebinding): 403.
    let reply = post(
        &endpoint,
        &[("Authorization", authorization), ("Origin", "http://evil.example")],
        INITIALIZE,
    )
    .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(reply.error_message().contains("Origin"), "{reply:?}");
    let evil_host = format!("evil.example:{}", endpoint.address.port());
    let reply = post(
        &endpoint,
        &[("Authorization", authorization), ("Host", &evil_host)],
        INITIALIZE,
    )
    .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(reply.error_message().contains("Host"), "{reply:?}");

    // The endpoint's own origin is fine, and told so for CORS.
    let own_origin = format!("http://localhost:{}", endpoint.address.port());
    let reply = post(
        &endpoint,
        &[("Authorization", authorization), ("Origin", &own_origin)],
        INITIALIZE,
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("access-control-allow-origin"), Some(own_origin.as_str()));

    // Sessions: an unknown one is 404; a deleted one is gone for every method.
    let session = initialize(&endpoint).await;
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let with = |session| with_session(authorization, session);
    let reply = post(&endpoint, &with(&session), ping).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, r#"{"jsonrpc":"2.0","id":2,"result":{}}"#)
    );
    let unknown = "0".repeat(32);
    let reply = post(&endpoint, &with(&unknown), ping).await;
    assert_eq!(reply.status, 404, "{reply:?}");
    assert!(reply.error_message().contains("initialize"), "{reply:?}");
    let reply = post(&endpoint, &[("Authorization", authorization)], ping).await;
    assert_eq!(reply.status, 400, "no session id: {reply:?}");
    // Not JSON-RPC 2.0, or an id the engine could not answer by: 400, saying which member.
    for (message, member) in [
        (r#"{"id":3,"method":"ping"}"#, "jsonrpc"),
        (r#"{"jsonrpc":"2.0","id":-3,"method":"ping"}"#, "id"),
        (r#"{"jsonrpc":"2.0","id":3.5,"method":"ping"}"#, "id"),
        (r#"[{"jsonrpc":"2.0","id":3,"method":"ping"}]"#, "batch"),
    ] {
        let reply = post(&endpoint, &with(&session), message).await;
        assert_eq!(reply.status, 400, "{message}: {reply:?}");
        assert!(reply.error_message().contains(member), "{message}: {reply:?}");
    }

    // A protocol version the bridge does not speak: 400.
    let mut old = with(&session).to_vec();
    old.push(("MCP-Protocol-Version", "1999-01-01"));
    let reply = post(&endpoint, &old, ping).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.error_message().contains("1999-01-01"), "{reply:?}");

    // A body larger than the socket's frame limit: 413, before it is read.
    let too_long = (corral_protocol::MAX_MESSAGE_BYTES + 1).to_string();
    let mut large = with(&session).to_vec();
    large.push(("Content-Length", too_long.as_str()));
    let reply = post(&endpoint, &large, "").await;
    assert_eq!(reply.status, 413, "{reply:?}");

    // Another path: 404.
    let reply = exchange(
        endpoint.address,
        "POST",
        "/other",
        &[("Authorization", authorization), ("Content-Type", "application/json")],
        ping,
    )
    .await;
    assert_eq!(reply.status, 404, "{reply:?}");

    let reply = exchange(endpoint.address, "DELETE", "/mcp", &with(&session), "").await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let reply = post(&endpoint, &with(&session), ping).await;
    assert_eq!(reply.status, 404, "after DELETE: {reply:?}");
    let mut listen = with(&session).to_vec();
    listen.push(("Accept", "text/event-stream"));
    let reply = exchange(endpoint.address, "GET", "/mcp", &listen, "").await;
    assert_eq!(reply.status, 404, "after DELETE: {reply:?}");
    let reply = exchange(endpoint.address, "DELETE", "/mcp", &with(&session), "").await;
    assert_eq!(reply.status, 404, "after DELETE: {reply:?}");

    assert_not_logged(&daemon, endpoint.token());
    assert_not_logged(&daemon, &session);
}

/// The headers of a request of `session`.
fn with_session<'a>(authorization: &'a str, session: &'a str) -> [(&'static str, &'a str); 2] {
    [("Authorization", authorization), ("Mcp-Session-Id", session)]
}

/// An IPv4 address of this machine that is not loopback: the source address
/// the kernel picks for a route out (a UDP `connect` sends nothing).
fn non_loopback_ipv4() -> IpAddr {
    for target in ["192.0.2.1:9", "198.51.100.1:9", "203.0.113.1:9", "10.255.255.1:9"] {
        let Ok(socket) = std::net::UdpSocket::bind("0.0.0.0:0") else {
            continue;
        };
        if socket.connect(target).is_err() {
            continue;
        }
        if let Ok(local) = socket.local_addr()
            && !local.ip().is_loopback()
            && !local.ip().is_unspecified()
        {
            return local.ip();
        }
    }
    panic!("this test needs a network interface with a non-loopback IPv4 address (see `ip -4 addr`)");
}

#[tokio::test]
async fn nothing_answers_on_a_non_loopback_address_and_a_config_asking_for_one_is_refused() {
    let daemon = TestDaemon::start_with_config(ENDPOINT);
    let endpoint = endpoint_of(&daemon).await;
    // The port answers on loopback…
    within(
        "connecting on loopback",
        tokio::net::TcpStream::connect(endpoint.address),
    )
    .await
    .expect("the endpoint answers on loopback");
    // …and not on the machine's own address.
    let outside = SocketAddr::new(non_loopback_ipv4(), endpoint.address.port());
    let error = within(
        "connecting on a non-loopback address",
        tokio::net::TcpStream::connect(outside),
    )
    .await
    .expect_err("the endpoint must not answer on a non-loopback address");
    assert_eq!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{outside}: {error}"
    );

    // A config that asks for every interface without saying so is refused, saying how.
    let everywhere = "[mcp_endpoint]\nenabled = true\nlisten = \"0.0.0.0:0\"\n";
    let daemon = TestDaemon::start_with_config(everywhere);
    let checked = run_command(
        corral_command().args(["config", "check"]).arg(daemon.config_path()),
        WAIT,
    );
    assert!(!checked.status.success(), "{checked:?}");
    let said = format!("{}{}", checked.stdout, checked.stderr);
    assert!(
        said.contains("`0.0.0.0:0` is not a loopback address") && said.contains("allow_non_loopback = true"),
        "{said}"
    );
    let client = daemon.connect_client().await;
    let status = client.daemon_status().await.expect("daemon/status");
    assert!(
        status
            .config_error
            .as_deref()
            .is_some_and(|error| error.contains("is not a loopback address")),
        "{status:?}"
    );
    assert_eq!(status.mcp_endpoint, None, "a broken config serves no endpoint");
    let url = run_corral(daemon.socket_path(), &["mcp", "url"]).await;
    assert_eq!(url.status.code(), Some(1), "{url:?}");
    assert!(url.stderr.contains("serves no MCP endpoint"), "{}", url.stderr);

    // So is the flag, unless the config allows it.
    let daemon = TestDaemon::builder().env("CORRAL_MCP_ENDPOINT", "0.0.0.0:0").start();
    let url = run_corral(daemon.socket_path(), &["mcp", "url"]).await;
    assert_eq!(url.status.code(), Some(1), "{url:?}");
    assert!(
        url.stderr.contains("turned on but not served") && url.stderr.contains("not a loopback address"),
        "{}",
        url.stderr
    );
}

#[tokio::test]
async fn the_token_file_is_private_kept_across_restarts_and_a_planted_link_is_refused() {
    let data = tempfile::tempdir().expect("a data dir");
    let data_dir = data.path().join("data");
    let daemon = TestDaemon::builder()
        .config(ENDPOINT)
        .env("CORRAL_DATA_DIR", &data_dir)
        .start();
    let endpoint = endpoint_of(&daemon).await;
    let client = daemon.connect_client().await;
    let status = client.daemon_status().await.expect("daemon/status");
    let endpoint_status = status.mcp_endpoint.expect("the endpoint's status");
    let token_file = endpoint_status.token_file.expect("a token file");
    assert_eq!(Path::new(&token_file), data_dir.join("mcp-endpoint.token"));
    assert_eq!(endpoint_status.url.as_deref(), Some(endpoint.url.as_str()));
    {
        use std::os::unix::fs::MetadataExt as _;
        let metadata = std::fs::symlink_metadata(&token_file).expect("the token file");
        assert!(metadata.file_type().is_file());
        assert_eq!(metadata.mode() & 0o777, 0o600, "{token_file}");
        assert_eq!(metadata.uid(), corral_protocol::paths::effective_uid());
    }
    let written = std::fs::read_to_string(&token_file).expect("read the token");
    assert_eq!(written.trim(), endpoint.token());
    assert_eq!(endpoint.token().len(), 43, "32 bytes in URL-safe base64");
    drop(client);
    drop(daemon);

    // The next daemon keeps it.
    let daemon = TestDaemon::builder()
        .config(ENDPOINT)
        .env("CORRAL_DATA_DIR", &data_dir)
        .start();
    assert_eq!(endpoint_of(&daemon).await.token(), written.trim());
    drop(daemon);

    // A link planted at its name: refused, and nothing is written through it.
    std::fs::remove_file(&token_file).expect("remove the token file");
    let target = data.path().join("planted");
    std::fs::write(&target, "not yours\n").expect("the link's target");
    std::os::unix::fs::symlink(&target, &token_file).expect("plant a link");
    let daemon = TestDaemon::builder()
        .config(ENDPOINT)
        .env("CORRAL_DATA_DIR", &data_dir)
        .start();
    let client = daemon.connect_client().await;
    let status = client.daemon_status().await.expect("daemon/status");
    let endpoint_status = status.mcp_endpoint.expect("the endpoint's status");
    assert_eq!(endpoint_status.url, None, "{endpoint_status:?}");
    let error = endpoint_status.error.expect("why it is not served");
    assert!(
        error.contains(&token_file) && error.contains("is a symbolic link") && error.contains("remove it"),
        "{error}"
    );
    let url = run_corral(daemon.socket_path(), &["mcp", "url"]).await;
    assert_eq!(url.status.code(), Some(1), "{url:?}");
    assert!(url.stderr.contains("is a symbolic link"), "{}", url.stderr);
    assert_eq!(std::fs::read_to_string(&target).expect("the target"), "not yours\n");
    assert!(
        std::fs::symlink_metadata(&token_file)
            .expect("the link")
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn a_cancelled_requests_stream_ends_and_idle_sessions_are_closed_but_not_one_with_its_stream_open() {
    let idle_ms = 300;
    let daemon = TestDaemon::builder()
        .config(&format!("{}{ENDPOINT}", fixture_config("fixture", &[])))
        .env("CORRAL_MCP_ENDPOINT_IDLE_MS", idle_ms.to_string())
        .start();
    let client = daemon.connect_client().await;
    wait_for_status(&client, "fixture", ServerStatus::Ready, SERVER_WAIT).await;
    let endpoint = endpoint_of(&daemon).await;

    // A call on its SSE stream, cancelled by the client: no answer comes, the stream ends.
    let cancelling = initialize(&endpoint).await;
    let call = r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"fixture__sleep","arguments":{"seconds":60}}}"#;
    let running = tokio::spawn({
        let (endpoint, session) = (endpoint.clone(), cancelling.clone());
        async move {
            let mut headers = with_session(&endpoint.authorization, &session).to_vec();
            headers.push(("Accept", "text/event-stream"));
            post(&endpoint, &headers, call).await
        }
    });
    wait_for_stderr_line(&client, "fixture", "fixture: sleeping 60").await;
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}"#;
    let reply = post(&endpoint, &with_session(&endpoint.authorization, &cancelling), cancel).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let ended = within("the cancelled call's stream to end", running)
        .await
        .expect("the call's task");
    assert_eq!((ended.status, events(&ended.body)), (200, vec![]), "{ended:?}");
    wait_for_stderr_line(&client, "fixture", "fixture: sleep cancelled").await;

    // The same call answered as JSON: the POST gets a `requestCancelled`
    // error, never 404 (which would tell the client its session is gone).
    let call = r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"fixture__sleep","arguments":{"seconds":61}}}"#;
    let running = tokio::spawn({
        let (endpoint, session) = (endpoint.clone(), cancelling.clone());
        async move { post(&endpoint, &with_session(&endpoint.authorization, &session), call).await }
    });
    wait_for_stderr_line(&client, "fixture", "fixture: sleeping 61").await;
    let cancel = r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":6}}"#;
    let reply = post(&endpoint, &with_session(&endpoint.authorization, &cancelling), cancel).await;
    assert_eq!(reply.status, 202, "{reply:?}");
    let ended = within("the cancelled JSON call's answer", running)
        .await
        .expect("the call's task");
    assert_eq!(ended.status, 200, "{ended:?}");
    let answer: Value = serde_json::from_str(&ended.body).expect("JSON");
    assert_eq!(answer["id"], 6, "{ended:?}");
    assert_eq!(
        answer["error"]["code"],
        corral_protocol::ErrorCode::RequestCancelled.code(),
        "{ended:?}"
    );
    let ping = r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#;
    let reply = post(&endpoint, &with_session(&endpoint.authorization, &cancelling), ping).await;
    assert_eq!(reply.status, 200, "the session lives on: {reply:?}");

    // Idle sessions' engine connections end (the cancelled one's too): this
    // client and the listening session remain.
    let idle = initialize(&endpoint).await;
    let listening = initialize(&endpoint).await;
    let _listener = open_listener(&endpoint, &listening).await;
    daemon.wait_for_connections(&client, 2).await;
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    for closed in [&idle, &cancelling] {
        let reply = post(&endpoint, &with_session(&endpoint.authorization, closed), ping).await;
        assert_eq!(reply.status, 404, "an idle session is closed: {reply:?}");
    }
    // Several idle periods pass: a session whose GET stream is open stays.
    tokio::time::sleep(std::time::Duration::from_millis(3 * idle_ms)).await;
    let reply = post(&endpoint, &with_session(&endpoint.authorization, &listening), ping).await;
    assert_eq!(reply.status, 200, "the listening session is kept: {reply:?}");
    daemon.wait_for_connections(&client, 2).await;
}

#[tokio::test]
async fn a_client_gone_while_its_initialize_is_answered_leaves_no_session_behind() {
    // Short idle: the sessions whose answer was written before the client
    // went are closed by the sweeper, so every one must end.
    let daemon = TestDaemon::builder()
        .config(ENDPOINT)
        .env("CORRAL_MCP_ENDPOINT_IDLE_MS", "300")
        .start();
    let client = daemon.connect_client().await;
    let endpoint = endpoint_of(&daemon).await;
    let request = request_text(
        endpoint.address,
        "POST",
        "/mcp",
        &[
            ("Authorization", &endpoint.authorization),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ],
        INITIALIZE,
    );
    for _ in 0..20 {
        let mut stream = connect(endpoint.address).await;
        stream.write_all(request.as_bytes()).await.expect("send initialize");
        drop(stream);
    }
    daemon.wait_for_connections(&client, 1).await;
    // And the endpoint still opens sessions.
    initialize(&endpoint).await;
}

#[tokio::test]
async fn endpoint_sessions_have_a_cap_of_their_own_and_the_least_recently_used_idle_one_makes_room() {
    // A low open-file limit makes the caps small.
    let daemon = TestDaemon::builder()
        .config(ENDPOINT)
        .open_files_limit(128, 128)
        .start();
    let client = daemon.connect_client().await;
    let endpoint = endpoint_of(&daemon).await;
    let status = client.daemon_status().await.expect("daemon/status");
    let max_connections = status.max_connections.expect("the connection cap") as usize;
    let cap = max_connections / 2;
    assert!(cap >= 4, "{status:?}");
    let mut sessions = Vec::new();
    for _ in 0..cap {
        sessions.push(initialize(&endpoint).await);
    }
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
    let with = |session| with_session(&endpoint.authorization, session);

    // At the cap, every session idle: the least recently used (the first) is closed for a new one.
    let newest = initialize(&endpoint).await;
    let reply = post(&endpoint, &with(&sessions[0]), ping).await;
    assert_eq!(
        reply.status, 404,
        "the least recently used session made room: {reply:?}"
    );
    for session in &sessions[1..] {
        let reply = post(&endpoint, &with(session), ping).await;
        assert_eq!(reply.status, 200, "{reply:?}");
    }

    // Every session busy (its GET stream open): a new one is refused, saying
    // why, and the socket's front-ends still get in.
    let mut listeners = Vec::new();
    for session in sessions[1..].iter().chain([&newest]) {
        listeners.push(open_listener(&endpoint, session).await);
    }
    let reply = post(&endpoint, &[("Authorization", &endpoint.authorization)], INITIALIZE).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    let why = reply.error_message();
    assert!(
        why.contains(&format!("{cap} sessions")) && why.contains("DELETE"),
        "{why}"
    );
    assert!(reply.header("mcp-session-id").is_none(), "{reply:?}");
    let status = run_corral(daemon.socket_path(), &["status"]).await;
    assert!(
        status.status.success(),
        "corral status at the endpoint's cap: {status:?}"
    );

    // A stream closed: its session is idle again, and makes room.
    drop(listeners.remove(0));
    let reopened = poll_until("a session to make room once its stream closed", || async {
        let reply = post(&endpoint, &[("Authorization", &endpoint.authorization)], INITIALIZE).await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert!(reopened.header("mcp-session-id").is_some(), "{reopened:?}");
    let reply = post(&endpoint, &with(&sessions[1]), ping).await;
    assert_eq!(reply.status, 404, "{reply:?}");
}

#[tokio::test]
async fn an_endpoint_session_speaks_mcp_only_and_starts_servers_of_its_own_only_when_the_config_allows_it() {
    let daemon = TestDaemon::start_with_config(ENDPOINT);
    let client = daemon.connect_client().await;
    let endpoint = endpoint_of(&daemon).await;
    let scratch = tempfile::tempdir().expect("a temp dir");
    let marker = scratch.path().join("ran");
    let own_server = |fields: Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw-http", "version": "1"},
            "_meta": {"corral/bridge": {"sessionServers": {"mine": fields}}}}})
        .to_string()
    };
    let authorization = [("Authorization", endpoint.authorization.as_str())];

    // The token alone does not let its holder run a command.
    let touch = json!({"command": "/bin/sh", "args": ["-c", format!("touch '{}'", marker.display())]});
    let reply = post(&endpoint, &authorization, &own_server(touch)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.header("mcp-session-id").is_none(), "{reply:?}");
    let answer: Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(answer["id"], 1, "{reply:?}");
    assert_eq!(
        answer["error"]["code"],
        corral_protocol::ErrorCode::NotPermitted.code(),
        "{reply:?}"
    );
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("sessionServers") && message.contains("allow_session_servers = true"),
        "{message}"
    );

    // Nor does Corral's own protocol, whose methods add servers and read the
    // config: it is the socket's.
    let corral = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": corral_protocol::PROTOCOL_VERSION,
        "clientInfo": {"name": "raw-http", "version": "1"}}});
    let reply = post(&endpoint, &authorization, &corral.to_string()).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.header("mcp-session-id").is_none(), "{reply:?}");
    let answer: Value = serde_json::from_str(&reply.body).expect("JSON");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("MCP") && message.contains("socket"), "{reply:?}");

    daemon.wait_for_connections(&client, 1).await;
    let servers = client.mcp_server_list().await.expect("mcpServer/list").servers;
    assert!(
        servers.iter().all(|server| !server.name.starts_with("mine")),
        "{servers:?}"
    );
    assert!(!marker.exists(), "nothing ran");

    // Allowed by the config: the client's own server lives as long as its session.
    let daemon = TestDaemon::start_with_config(&format!("{ENDPOINT}allow_session_servers = true\n"));
    let client = daemon.connect_client().await;
    let endpoint = endpoint_of(&daemon).await;
    let fixture = json!({
        "command": fixture_python().display().to_string(),
        "args": [fixture_script().display().to_string()],
    });
    let reply = post(
        &endpoint,
        &[("Authorization", endpoint.authorization.as_str())],
        &own_server(fixture),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let session = reply.header("mcp-session-id").expect("a session").to_owned();
    let name = poll_until("the session's own server to be added", || async {
        let servers = client.mcp_server_list().await.ok()?.servers;
        servers
            .into_iter()
            .find(|server| server.name.starts_with("mine-c"))
            .map(|server| server.name)
    })
    .await;
    let mut survivors = KillSurvivorsOnDrop::new([]);
    let ready = wait_for_status(&client, &name, ServerStatus::Ready, SERVER_WAIT).await;
    survivors.also(ready.pid.expect("a pid"));
    let reply = exchange(
        endpoint.address,
        "DELETE",
        "/mcp",
        &with_session(&endpoint.authorization, &session),
        "",
    )
    .await;
    assert_eq!(reply.status, 204, "{reply:?}");
    poll_until("the session's own server to be removed", || async {
        let servers = client.mcp_server_list().await.ok()?.servers;
        servers.iter().all(|server| server.name != name).then_some(())
    })
    .await;
}

#[tokio::test]
async fn connections_that_sent_no_token_cannot_lock_out_the_tokens_holder() {
    let daemon = TestDaemon::start_with_config(ENDPOINT);
    let endpoint = endpoint_of(&daemon).await;
    // More idle connections than the endpoint serves at once (256).
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(connect(endpoint.address).await);
    }
    // The oldest of them give way to new ones.
    initialize(&endpoint).await;
    let mut byte = [0u8; 1];
    let read = within("the oldest idle connection to be closed", idle[0].read(&mut byte)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn a_sessions_idle_clock_restarts_when_its_call_is_answered() {
    let idle_ms = 1000;
    let daemon = TestDaemon::builder()
        .config(&format!("{}{ENDPOINT}", fixture_config("fixture", &[])))
        .env("CORRAL_MCP_ENDPOINT_IDLE_MS", idle_ms.to_string())
        .start();
    let client = daemon.connect_client().await;
    wait_for_status(&client, "fixture", ServerStatus::Ready, SERVER_WAIT).await;
    let endpoint = endpoint_of(&daemon).await;
    let session = initialize(&endpoint).await;
    let with = with_session(&endpoint.authorization, &session);
    // A call that lasts longer than the idle period, answered as JSON.
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"fixture__sleep","arguments":{"seconds":2}}}"#;
    let reply = post(&endpoint, &with, call).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(reply.body.contains("slept"), "{reply:?}");
    // Less than an idle period after the answer, the session is there.
    tokio::time::sleep(std::time::Duration::from_millis(idle_ms * 6 / 10)).await;
    let ping = r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#;
    let reply = post(&endpoint, &with, ping).await;
    assert_eq!(reply.status, 200, "the answer was use: {reply:?}");
}

#[tokio::test]
async fn sse_answers_on_a_kept_alive_connection_do_not_wait_for_the_clients_delayed_ack() {
    // An SSE answer is two writes: the event, then the end of the chunked
    // body once the response is sent. With Nagle's algorithm on the
    // endpoint's side the second waits for the client's ACK of the first,
    // which a client with nothing to send delays (about 40 ms on Linux): a
    // client that reads each answer whole before its next request on the
    // same connection, as an HTTP/1.1 client must, waited that long per call.
    const PINGS: usize = 15;
    let daemon = TestDaemon::builder().config(ENDPOINT).start();
    let endpoint = endpoint_of(&daemon).await;
    let session = initialize(&endpoint).await;
    let mut stream = within(
        "connecting to the MCP endpoint",
        tokio::net::TcpStream::connect(endpoint.address),
    )
    .await
    .expect("connect to the MCP endpoint");
    stream.set_nodelay(true).expect("TCP_NODELAY on the client's side");
    let mut took = Vec::with_capacity(PINGS);
    let mut chunk = [0u8; 4096];
    for id in 0..PINGS {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        let request = format!(
            "POST /mcp HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nMcp-Session-Id: {session}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             Content-Length: {}\r\n\r\n{body}",
            endpoint.address,
            endpoint.authorization,
            body.len()
        );
        let started = std::time::Instant::now();
        stream.write_all(request.as_bytes()).await.expect("send the ping");
        let mut answer = Vec::new();
        // The answer ends with the last chunk of its chunked body.
        while !answer.ends_with(b"\r\n0\r\n\r\n") {
            let read = within("the ping's answer", stream.read(&mut chunk))
                .await
                .expect("read the ping's answer");
            assert!(
                read > 0 && answer.len() < 64 * 1024,
                "the answer ended early or never did: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&chunk[..read]);
        }
        took.push(started.elapsed());
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 200")
                && text.to_ascii_lowercase().contains("content-type: text/event-stream")
                && text.contains(&format!(r#""id":{id},"result":{{}}"#)),
            "{text}"
        );
    }
    took.sort();
    assert!(
        took[PINGS / 2] < std::time::Duration::from_millis(20),
        "a ping answered on SSE took {:?} at the median (a delayed ACK is about 40 ms): {took:?}",
        took[PINGS / 2]
    );
}
