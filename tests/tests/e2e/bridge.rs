//! `corral mcp` driven by real MCP clients: the official TypeScript SDK
//! (`tests/peers/mcp-bridge-client.mjs`, `Client` + `StdioClientTransport`,
//! driven line by line) and the official Python SDK
//! (`tests/peers/mcp_bridge_client.py`, `stdio_client` + `ClientSession`),
//! against a real daemon running server-everything and the fixture: listing
//! (namespaced, shortened, passed through), calls, progress, cancellation
//! reaching the server, a not-ready server's tool error, `list_changed`
//! after a reload and a stop; server-everything's elicitation (form and URL
//! mode) and sampling answered by the SDK client's handlers when it declared
//! them, withdrawn from it with `notifications/cancelled` at the answer
//! deadline and when it cancels the call, declined when it did not declare
//! them; a daemon restart under a connected client
//! (the call in flight answered with an error, the lists announced as
//! changed, and the client goes on; a question of a crashed daemon
//! withdrawn from the client with `notifications/cancelled`, and its late
//! answer kept from the next daemon, whose own question of the same number
//! gets another id; the client's `logging/setLevel` in force on the next
//! daemon); `corral mcp`'s options (`--exclude`,
//! `--no-builtin`, `--separator`, `--config` with a project's `.mcp.json`)
//! shaping what the client sees, before and after a daemon restart, its own
//! server started again by the new daemon. Then the bridge on its own: starting
//! corrald when none runs (detached, one daemon for two bridges started at
//! once), starting it again when it is stopped under a connected client
//! (the session restored on the wire, the replay's answer never shown),
//! leaving a crashed corrald it did not start to its service manager for
//! longer than `RestartSec`, and `--no-start`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use corral_client::{Client, ConnectOptions};
use corral_protocol::ServerStatus;
use corral_tests::{
    KillSurvivorsOnDrop, SERVER_WAIT, TestDaemon, WAIT, assert_all_gone, binary, everything_config, fixture_config,
    fixture_python, fixture_script, is_alive, peers_dir, poll_until, read_pid_file, send_signal, text_of,
    wait_for_pid_file, wait_for_status, within_for,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long one step of a client may take (a call, a listing, a start).
pub(crate) const STEP: Duration = Duration::from_secs(30);

/// A fixture server whose name is long enough that `NAME__echo` (65
/// characters) is shortened, while `NAME__pid` (64) is not.
const LONG_NAME: &str = "a-fixture-server-with-a-name-long-enough-to-need-shortening";

/// The environment a `corral mcp` (and a corrald it starts) gets in these
/// tests: nothing of the developer's daemon, service manager or keyring.
pub(crate) fn isolated_env(command: &mut Command, state_dir: &Path) {
    for name in [
        "CORRAL_SOCKET",
        "CORRAL_CONFIG",
        "CORRAL_LOG_FORMAT",
        "CORRAL_TEST_HOOKS",
        "CORRAL_NO_BUILTIN_SERVER",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "DBUS_SESSION_BUS_ADDRESS",
    ] {
        command.env_remove(name);
    }
    command.env("XDG_STATE_HOME", state_dir);
}

fn node_available() {
    assert!(
        peers_dir()
            .join("node_modules/@modelcontextprotocol/sdk/package.json")
            .is_file(),
        "the MCP TypeScript SDK is missing: install the test peers with `bash tests/run.sh` (or `npm ci --prefix tests/peers`)"
    );
    if let Err(error) = std::process::Command::new("node").arg("--version").output() {
        panic!("Node.js is needed for this test ({error}): install Node.js 20 or newer with npm");
    }
}

/// The TypeScript SDK's client, running `corral mcp` as its server, or
/// speaking to corrald's loopback HTTP endpoint (`mcp_endpoint.rs`).
pub(crate) struct TsClient {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// `{"event": …}` lines read while waiting for something else.
    events: Vec<Value>,
}

impl TsClient {
    /// Start the client on `corral mcp ARGS` and wait until it is connected.
    pub(crate) async fn start(args: &[&str], env: &[(&str, OsString)], state_dir: &Path) -> (Self, Value) {
        let mut script_args = vec![binary("corral").into_os_string()];
        script_args.extend(args.iter().map(OsString::from));
        Self::launch(&script_args, env, state_dir).await
    }

    /// Start the client on `StreamableHTTPClientTransport` to the MCP
    /// endpoint at `url`, sending `token`, and wait until it is connected.
    pub(crate) async fn start_http(url: &str, token: &str, state_dir: &Path) -> (Self, Value) {
        let script_args = ["--http", url, "--token", token].map(OsString::from);
        Self::launch(&script_args, &[], state_dir).await
    }

    /// `node mcp-bridge-client.mjs SCRIPT_ARGS`, connected.
    async fn launch(script_args: &[OsString], env: &[(&str, OsString)], state_dir: &Path) -> (Self, Value) {
        node_available();
        let mut command = Command::new("node");
        command
            .arg(peers_dir().join("mcp-bridge-client.mjs"))
            .args(script_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        isolated_env(&mut command, state_dir);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start node");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut client = Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            events: Vec::new(),
        };
        let connected = client.next_line().await;
        assert_eq!(connected["event"], "connected", "{connected}");
        (client, connected)
    }

    async fn next_line(&mut self) -> Value {
        let line = within_for(STEP, "a line from the TypeScript MCP client", self.lines.next_line())
            .await
            .expect("reading the client's output")
            .unwrap_or_else(|| panic!("the TypeScript MCP client exited (see its stderr above)"));
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
    }

    /// The pid of the client's own process (node).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id().expect("the client is running")
    }

    /// server-everything's `trigger-long-running-operation` (1.5 s, 3 steps)
    /// with a progress token: its progress comes back in order with the
    /// client's token, then its result. The last step is written right
    /// before the result, and this SDK drops a progress notification that
    /// arrives in the same read as the response (typescript-sdk#2580): 2 or 3
    /// steps are accepted.
    pub(crate) async fn long_call_with_progress(&mut self) {
        let long = self
            .op(
                json!({"op": "call", "name": "everything__trigger-long-running-operation",
                       "arguments": {"duration": 1.5, "steps": 3}, "progress": true}),
            )
            .await;
        let all_steps = json!([{"progress": 1, "total": 3}, {"progress": 2, "total": 3}, {"progress": 3, "total": 3}]);
        let received = long["progress"].as_array().expect("progress");
        assert!(
            (2..=3).contains(&received.len()) && received[..] == all_steps.as_array().expect("steps")[..received.len()],
            "{long}"
        );
        assert_eq!(
            long["result"]["content"][0]["text"], "Long running operation completed. Duration: 1.5 seconds, Steps: 3.",
            "{long}"
        );
    }

    /// Run one command; its outcome line (events read meanwhile are kept).
    pub(crate) async fn op(&mut self, command: Value) -> Value {
        let op = command["op"].clone();
        let mut line = command.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the client");
        loop {
            let line = self.next_line().await;
            if line["op"] == op {
                return line;
            }
            assert!(
                line.get("event").is_some(),
                "unexpected line {line} while waiting for {op}"
            );
            self.events.push(line);
        }
    }

    pub(crate) async fn list(&mut self) -> (Vec<String>, Vec<Value>) {
        let listed = self.op(json!({"op": "list"})).await;
        let names = listed["names"]
            .as_array()
            .unwrap_or_else(|| panic!("no names in {listed}"))
            .iter()
            .map(|name| name.as_str().expect("a name is a string").to_owned())
            .collect();
        let tools = listed["tools"].as_array().cloned().unwrap_or_default();
        (names, tools)
    }

    pub(crate) async fn call(&mut self, name: &str, arguments: Value) -> Value {
        self.op(json!({"op": "call", "name": name, "arguments": arguments}))
            .await
    }

    /// Wait (bounded) for the next `toolsListChanged` event not seen yet.
    pub(crate) async fn list_changed(&mut self) {
        let _ = self.event("toolsListChanged").await;
    }

    /// Wait (bounded) for the next `kind` event not seen yet, and return it;
    /// other events are kept.
    pub(crate) async fn event(&mut self, kind: &str) -> Value {
        if let Some(index) = self.events.iter().position(|event| event["event"] == kind) {
            return self.events.remove(index);
        }
        within_for(SERVER_WAIT, kind, async {
            loop {
                let line = self.next_line().await;
                assert!(line.get("event").is_some(), "{line} while waiting for {kind}");
                if line["event"] == kind {
                    return line;
                }
                self.events.push(line);
            }
        })
        .await
    }

    /// Forget the `list_changed` events received so far.
    pub(crate) fn forget_events(&mut self) {
        self.events.clear();
    }

    /// The server requests the client's handlers got (`request` and
    /// `withdrawn` events) since the last call of this, in order.
    pub(crate) fn server_requests(&mut self) -> Vec<Value> {
        let (taken, kept) = std::mem::take(&mut self.events)
            .into_iter()
            .partition(|event| event["event"] == "request" || event["event"] == "withdrawn");
        self.events = kept;
        taken
    }

    pub(crate) async fn close(mut self) {
        assert_eq!(self.op(json!({"op": "close"})).await["op"], "close");
        let status = within_for(STEP, "the TypeScript MCP client to exit", self.child.wait())
            .await
            .expect("wait for node");
        assert!(status.success(), "the TypeScript MCP client failed: {status}");
    }
}

pub(crate) async fn wait_for_stderr_line(client: &Client, server: &str, needle: &str) {
    poll_until(&format!("`{needle}` on {server}'s stderr"), || async {
        let tail = client.mcp_server_get(server).await.ok()?.server.stderr_tail;
        tail.iter().any(|line| line.contains(needle)).then_some(())
    })
    .await;
}

/// A Corral client of the corrald on `socket` (connect and requests bounded by [`WAIT`]).
pub(crate) async fn corral_client(socket: &Path) -> Client {
    let options = ConnectOptions::new("bridge-test", "1")
        .with_socket_path(socket)
        .with_connect_timeout(WAIT)
        .with_request_timeout(WAIT);
    Client::connect(options).await.expect("connect to corrald")
}

pub(crate) fn socket_args(daemon: &TestDaemon) -> Vec<String> {
    vec!["--socket".to_owned(), daemon.socket_path().display().to_string()]
}

#[tokio::test]
async fn the_typescript_sdk_lists_calls_follows_progress_and_cancels_through_corral_mcp() {
    let config = format!(
        "{}{}{}\n[servers.broken]\ncommand = \"no-such-program-for-corral\"\n",
        everything_config("everything"),
        fixture_config("fixture", &[]),
        fixture_config(LONG_NAME, &[]),
    );
    let daemon = TestDaemon::builder().config(&config).builtin_server(true).start();
    let client = daemon.connect_client().await;
    for server in ["everything", "fixture", LONG_NAME, "corral"] {
        wait_for_status(&client, server, ServerStatus::Ready, SERVER_WAIT).await;
    }
    let broken = wait_for_status(&client, "broken", ServerStatus::Failed, SERVER_WAIT).await;
    let state = tempfile::tempdir().expect("a state dir");
    let args = socket_args(&daemon);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut mcp, connected) = TsClient::start(&args, &[], state.path()).await;

    assert_eq!(connected["serverVersion"]["name"], "corral", "{connected}");
    assert_eq!(connected["capabilities"]["tools"]["listChanged"], true, "{connected}");

    // One namespace, every ready server's tools, nothing of the failed one.
    let (names, tools) = mcp.list().await;
    for expected in [
        "everything__echo",
        "everything__trigger-long-running-operation",
        "fixture__echo",
        "fixture__sleep",
        "corral__list_servers",
    ] {
        assert!(names.iter().any(|name| name == expected), "{expected} in {names:?}");
    }
    assert!(!names.iter().any(|name| name.starts_with("broken__")), "{names:?}");
    assert!(names.iter().all(|name| name.chars().count() <= 64), "{names:?}");
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "unique names: {names:?}");

    // Passed through as the server wrote it (what Corral's own tools/list gives), renamed.
    let corral_listing = client
        .tools_list(Some("everything"))
        .await
        .expect("Corral's tools/list");
    let mut echo = corral_listing
        .tools
        .iter()
        .find(|tool| tool.tool["name"] == "echo")
        .expect("everything lists echo")
        .tool
        .clone();
    echo["name"] = json!("everything__echo");
    let listed_echo = tools
        .iter()
        .find(|tool| tool["name"] == "everything__echo")
        .expect("echo listed");
    assert_eq!(listed_echo, &echo, "the tool as the server wrote it, but for its name");

    // Shortened deterministically: 64 characters, a readable prefix, a hash.
    let pid_name = format!("{LONG_NAME}__pid");
    assert_eq!(pid_name.chars().count(), 64);
    assert!(names.contains(&pid_name), "64 characters are kept: {names:?}");
    // The first 55 characters of `server__tool`, `_`, 8 hex digits of SHA-256(server NUL tool).
    let short_name = |tool: &str| {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("{LONG_NAME}\0{tool}").as_bytes());
        let hash: String = digest.iter().take(4).map(|byte| format!("{byte:02x}")).collect();
        let prefix: String = format!("{LONG_NAME}__{tool}").chars().take(55).collect();
        format!("{prefix}_{hash}")
    };
    let short_echo = short_name("echo");
    assert!(names.contains(&short_echo), "{short_echo} in {names:?}");
    assert!(names.contains(&short_name("sleep")), "{names:?}");
    let shortened = mcp.call(&short_echo, json!({"message": "short"})).await;
    assert_eq!(shortened["result"]["content"][0]["text"], "echo: short", "{shortened}");

    // A call passes through exactly.
    let echoed = mcp.call("everything__echo", json!({"message": "hello bridge"})).await;
    assert_eq!(
        echoed["result"],
        json!({"content": [{"type": "text", "text": "Echo: hello bridge"}]}),
        "{echoed}"
    );

    // Progress comes back with the client's own token (the SDK matches it).
    // The last step is written right before the result, and this SDK drops a
    // progress notification that arrives in the same read as the response
    // (typescript-sdk#2580); the order on the wire is checked below, raw.
    mcp.long_call_with_progress().await;

    // Cancellation reaches the server: it sees notifications/cancelled.
    let started = mcp
        .op(json!({"op": "start", "id": "slow", "name": "fixture__sleep", "arguments": {"seconds": 60}}))
        .await;
    assert_eq!(started["id"], "slow");
    wait_for_stderr_line(&client, "fixture", "fixture: sleeping 60").await;
    let aborted = mcp.op(json!({"op": "abort", "id": "slow"})).await;
    assert!(aborted.get("error").is_some(), "the call was aborted: {aborted}");
    wait_for_stderr_line(&client, "fixture", "fixture: sleep cancelled").await;
    let after = mcp.call("fixture__echo", json!({"message": "still here"})).await;
    assert_eq!(after["result"]["content"][0]["text"], "echo: still here", "{after}");

    // A server that is not ready: a tool error saying why and what to do.
    let not_ready = mcp.call("broken__anything", json!({})).await;
    let error = broken.error.clone().expect("the failed server's error");
    assert_eq!(
        not_ready["result"],
        json!({"isError": true, "content": [{"type": "text", "text": format!(
            "MCP server `broken` is not ready (failed: executableNotFound): {error}. To fix: check its \
             `command` in the config (`corral doctor` says what is wrong), then `corral restart broken`"
        )}]}),
        "{not_ready}"
    );

    // A name nobody has: invalid params, as MCP says for an unknown tool.
    let unknown = mcp.call("nobody__echo", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    assert!(
        unknown["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("unknown tool `nobody__echo`")),
        "{unknown}"
    );
    mcp.close().await;

    // On the wire: every step, in order, before the result; and no answer to a cancelled call.
    let mut raw = RawBridge::start(raw_bridge(&daemon, state.path()));
    raw.initialize().await;
    raw.send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "everything__trigger-long-running-operation",
        "arguments": {"duration": 0.2, "steps": 2}, "_meta": {"progressToken": "my-token"}}}))
        .await;
    let mut seen = Vec::new();
    loop {
        let message = raw.recv().await;
        let done = message["id"] == 2;
        seen.push(message);
        if done {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (step, message) in seen[..2].iter().enumerate() {
        assert_eq!(
            message,
            &json!({"jsonrpc": "2.0", "method": "notifications/progress",
                    "params": {"progressToken": "my-token", "progress": (step + 1) as f64, "total": 2.0}}),
            "{seen:?}"
        );
    }
    raw.send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "fixture__sleep", "arguments": {"seconds": 60}}}))
        .await;
    wait_for_stderr_line(&client, "fixture", "fixture: sleeping 60").await;
    raw.send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}}))
        .await;
    raw.send(json!({"jsonrpc": "2.0", "id": 4, "method": "ping"})).await;
    assert_eq!(
        raw.recv().await,
        json!({"jsonrpc": "2.0", "id": 4, "result": {}}),
        "no answer to call 3"
    );
    let (status, stderr) = raw.finish().await;
    assert!(status.success(), "{status}: {stderr}");
}

/// `corral mcp --socket` of `daemon`, with pipes for [`RawBridge`].
fn raw_bridge(daemon: &TestDaemon, state_dir: &Path) -> Command {
    let mut command = Command::new(binary("corral"));
    command
        .arg("mcp")
        .arg("--socket")
        .arg(daemon.socket_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    isolated_env(&mut command, state_dir);
    command
}

#[tokio::test]
async fn the_client_is_told_when_tools_come_and_go() {
    let config = fixture_config("one", &[]);
    let daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    wait_for_status(&client, "one", ServerStatus::Ready, SERVER_WAIT).await;
    let state = tempfile::tempdir().expect("a state dir");
    let args = socket_args(&daemon);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut mcp, _) = TsClient::start(&args, &[], state.path()).await;
    let (names, _) = mcp.list().await;
    assert_eq!(names, ["one__echo", "one__pid", "one__sleep"], "{names:?}");

    // A reload adds a server: once it is ready, the client is told, and lists it.
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
    assert_eq!(
        names,
        [
            "one__echo",
            "one__pid",
            "one__sleep",
            "two__echo",
            "two__pid",
            "two__sleep"
        ],
        "{names:?}"
    );
    let called = mcp.call("two__echo", json!({"message": "new"})).await;
    assert_eq!(called["result"]["content"][0]["text"], "echo: new", "{called}");

    // A server stops: told again, and its tools are gone.
    mcp.forget_events();
    client.mcp_server_stop("one").await.expect("stop one");
    mcp.list_changed().await;
    let (names, _) = mcp.list().await;
    assert_eq!(names, ["two__echo", "two__pid", "two__sleep"], "{names:?}");
    let stopped = mcp.call("one__echo", json!({"message": "x"})).await;
    assert_eq!(stopped["result"]["isError"], true, "{stopped}");
    assert_eq!(
        stopped["result"]["content"][0]["text"],
        "MCP server `one` is not ready (stopped). To fix: start it with `corral start one`",
        "{stopped}"
    );
    mcp.close().await;
}

#[tokio::test]
async fn the_python_sdk_lists_and_calls_through_corral_mcp() {
    let daemon = TestDaemon::start_with_config(&everything_config("everything"));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "everything", ServerStatus::Ready, SERVER_WAIT).await;
    let state = tempfile::tempdir().expect("a state dir");
    let mut command = Command::new(fixture_python());
    command
        .arg(peers_dir().join("mcp_bridge_client.py"))
        .arg(binary("corral"))
        .arg("--socket")
        .arg(daemon.socket_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    isolated_env(&mut command, state.path());
    let output = within_for(STEP * 2, "the Python MCP client", command.output())
        .await
        .expect("run the Python MCP client");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the Python MCP client failed ({}):\n{stderr}",
        output.status
    );
    let summary: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    assert_eq!(summary["serverName"], "corral", "{summary}");
    assert!(
        summary["protocolVersion"]
            .as_str()
            .is_some_and(|version| version.starts_with("20")),
        "{summary}"
    );
    let names = summary["names"].as_array().expect("names");
    assert!(names.contains(&json!("everything__echo")), "{summary}");
    assert!(
        names
            .iter()
            .all(|name| name.as_str().is_some_and(|name| name.starts_with("everything__"))),
        "{summary}"
    );
    assert_eq!(
        summary["echo"]["content"],
        json!([{"type": "text", "text": "Echo: from python"}]),
        "{summary}"
    );
    assert_eq!(summary["echo"]["isError"], false, "{summary}");
}

/// A daemon running server-everything, ready, whose front-ends have
/// `answer_deadline_sec` to answer a server's request.
async fn everything_daemon(answer_deadline_sec: &str) -> TestDaemon {
    let daemon = TestDaemon::builder()
        .config(&everything_config("everything"))
        .env("CORRAL_ELICITATION_TIMEOUT_SEC", answer_deadline_sec)
        .start();
    let client = daemon.connect_client().await;
    wait_for_status(&client, "everything", ServerStatus::Ready, SERVER_WAIT).await;
    daemon
}

/// `BRIDGE_CLIENT_CAPABILITIES` for the TypeScript client.
fn declaring(capabilities: &Value) -> [(&'static str, OsString); 1] {
    [("BRIDGE_CLIENT_CAPABILITIES", capabilities.to_string().into())]
}

#[tokio::test]
async fn a_servers_elicitation_and_sampling_reach_the_typescript_client_that_declared_them() {
    let daemon = everything_daemon("3").await;
    let state = tempfile::tempdir().expect("a state dir");
    let args = socket_args(&daemon);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = declaring(&json!({"elicitation": {}, "sampling": {}}));
    let (mut mcp, _) = TsClient::start(&args, &env, state.path()).await;
    mcp.op(json!({"op": "answers",
        "elicitation": {"action": "accept", "content": {"name": "Grace Hopper", "check": true, "integer": 42}},
        "sampling": {"role": "assistant", "content": {"type": "text", "text": "sampled by the client of corral mcp"},
                     "model": "bridge-client-model-1", "stopReason": "endTurn"}}))
        .await;

    // The SDK's elicitation handler gets MCP's own request, and the server its answer.
    let elicited = mcp.call("everything__trigger-elicitation-request", json!({})).await;
    let text = text_of(&elicited["result"]);
    assert!(text.contains("User provided the requested information"), "{elicited}");
    assert!(text.contains("- Name: Grace Hopper"), "{text}");
    assert!(text.contains("- Agreed to terms: true"), "{text}");
    assert!(text.contains("- Favorite Integer: 42"), "{text}");
    let requests = mcp.server_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["method"], "elicitation/create", "{requests:?}");
    let params = &requests[0]["params"];
    assert_eq!(
        params["message"], "Please provide inputs for the following fields:",
        "{params}"
    );
    assert_eq!(params["requestedSchema"]["required"], json!(["name"]), "{params}");

    // Sampling likewise.
    let sampled = mcp
        .call(
            "everything__trigger-sampling-request",
            json!({"prompt": "a haiku", "maxTokens": 30}),
        )
        .await;
    let text = text_of(&sampled["result"]);
    assert!(text.contains("sampled by the client of corral mcp"), "{sampled}");
    assert!(text.contains("bridge-client-model-1"), "{text}");
    let requests = mcp.server_requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["method"], "sampling/createMessage", "{requests:?}");
    assert_eq!(requests[0]["params"]["maxTokens"], 30, "{requests:?}");
    assert!(
        requests[0]["params"]["messages"][0]["content"]["text"]
            .as_str()
            .is_some_and(|prompt| prompt.contains("a haiku")),
        "{requests:?}"
    );

    // URL mode was not declared (`elicitation: {}` is form mode): declined, never shown to it.
    let url = mcp
        .call(
            "everything__trigger-url-elicitation",
            json!({"url": "https://example.com/corral-e2e"}),
        )
        .await;
    let text = text_of(&url["result"]);
    assert!(text.contains("User declined to open the URL"), "{url}");
    assert!(text.contains("this is a URL-mode elicitation"), "{text}");
    assert!(text.contains("form mode only"), "{text}");
    assert_eq!(mcp.server_requests(), Vec::<Value>::new(), "the client was not asked");

    // Not answered within the deadline (3 s): withdrawn from the client with
    // MCP's `notifications/cancelled` (the SDK aborts its handler), and the server told "cancel".
    mcp.op(json!({"op": "answers", "elicitation": "hang"})).await;
    let unanswered = mcp.call("everything__trigger-elicitation-request", json!({})).await;
    let text = text_of(&unanswered["result"]);
    assert!(text.contains("User cancelled the elicitation dialog"), "{unanswered}");
    assert!(text.contains("did not answer within 3s"), "{text}");
    let requests = mcp.server_requests();
    assert_eq!(requests.len(), 2, "asked, then withdrawn: {requests:?}");
    assert_eq!(requests[0]["event"], "request", "{requests:?}");
    assert_eq!(
        requests[1],
        json!({"event": "withdrawn", "method": "elicitation/create",
               "reason": "corral withdrew this request: no answer within 3s (corrald --elicitation-timeout-sec)"}),
        "{requests:?}"
    );

    // The client cancels the call whose server asked it something: the
    // question is withdrawn at once (server-everything does not withdraw it
    // itself), not left open until the deadline.
    mcp.op(json!({"op": "start", "id": "asks", "name": "everything__trigger-elicitation-request"}))
        .await;
    let asked = mcp.event("request").await;
    assert_eq!(asked["method"], "elicitation/create", "{asked}");
    let aborted = mcp.op(json!({"op": "abort", "id": "asks"})).await;
    assert!(aborted.get("error").is_some(), "the call was aborted: {aborted}");
    let withdrawn = mcp.event("withdrawn").await;
    assert_eq!(
        withdrawn["reason"],
        "corral withdrew this request: nothing waits for its answer any more (the call that caused it ended, or \
         the MCP server that made it cancelled it or went away)",
        "{withdrawn}"
    );

    // The connection goes on.
    let echoed = mcp.call("everything__echo", json!({"message": "after"})).await;
    assert_eq!(echoed["result"]["content"][0]["text"], "Echo: after", "{echoed}");
    mcp.close().await;
}

#[tokio::test]
async fn a_typescript_client_is_asked_only_what_it_declared() {
    let daemon = everything_daemon("60").await;
    let state = tempfile::tempdir().expect("a state dir");
    let args = socket_args(&daemon);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Nothing declared: the server gets a decline, saying why.
    let (mut plain, _) = TsClient::start(&args, &[], state.path()).await;
    let elicited = plain.call("everything__trigger-elicitation-request", json!({})).await;
    let text = text_of(&elicited["result"]);
    assert!(
        text.contains("User declined to provide the requested information"),
        "{elicited}"
    );
    assert!(text.contains("did not declare `capabilities.elicitation`"), "{text}");
    let sampled = plain
        .call("everything__trigger-sampling-request", json!({"prompt": "hi"}))
        .await;
    assert!(
        sampled.to_string().contains(
            "sampling declined: the front-end whose call asked cannot answer it (it did not declare \
             `capabilities.sampling`)"
        ),
        "{sampled}"
    );
    plain.close().await;

    // URL mode declared: a URL-mode elicitation reaches the client as the server sent it.
    let env = declaring(&json!({"elicitation": {"form": {}, "url": {}}}));
    let (mut browser, _) = TsClient::start(&args, &env, state.path()).await;
    browser
        .op(json!({"op": "answers", "elicitation": {"action": "accept"}}))
        .await;
    let opened = browser
        .call(
            "everything__trigger-url-elicitation",
            json!({"url": "https://example.com/corral-e2e", "message": "Open it", "elicitationId": "e2e-1"}),
        )
        .await;
    let text = text_of(&opened["result"]);
    assert!(text.contains("User completed the URL elicitation flow"), "{opened}");
    let requests = browser.server_requests();
    assert_eq!(
        requests,
        [json!({"event": "request", "method": "elicitation/create", "params": {
            "mode": "url", "url": "https://example.com/corral-e2e", "message": "Open it", "elicitationId": "e2e-1"}})],
    );
    browser.close().await;
}

/// A private directory for a daemon `corral mcp` starts itself: its socket,
/// config, data and state (the log), and a fixture's pid file.
struct AutoStart {
    dir: tempfile::TempDir,
}

impl AutoStart {
    fn new() -> Self {
        // Short, so that the socket path fits a socket address.
        let dir = tempfile::Builder::new()
            .prefix("e2e-mcp-")
            .tempdir_in("/tmp")
            .expect("a temp dir");
        let pid_file = dir.path().join("fixture.pids");
        let config = format!(
            "{}\n",
            fixture_config("fixture", &["--pid-file", &pid_file.display().to_string()])
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write the config");
        Self { dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run").join("corral.sock")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("fixture.pids")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("state").join("corral").join("corrald.log")
    }

    /// `corral mcp --socket …` with this directory's config, data and state.
    fn bridge(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(binary("corral"));
        command.arg("mcp").arg("--socket").arg(self.socket()).args(extra);
        isolated_env(&mut command, &self.dir.path().join("state"));
        command
            .env("CORRAL_CONFIG", self.dir.path().join("config.toml"))
            .env("CORRAL_DATA_DIR", self.dir.path().join("data"))
            .env("CORRAL_LOG", "debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    async fn status(&self) -> corral_protocol::DaemonStatus {
        let client = corral_client(&self.socket()).await;
        client.daemon_status().await.expect("daemon/status")
    }

    /// The live corrald processes serving this directory's socket.
    fn daemons(&self) -> Vec<u32> {
        let socket = self.socket().display().to_string();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let arguments: Vec<String> = cmdline
                .split(|byte| *byte == 0)
                .map(|argument| String::from_utf8_lossy(argument).into_owned())
                .collect();
            let is_corrald = arguments
                .first()
                .is_some_and(|program| Path::new(program).file_name().is_some_and(|name| name == "corrald"));
            if is_corrald && arguments.contains(&socket) && is_alive(pid) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for AutoStart {
    /// A daemon a bridge started runs in its own session and outlives the
    /// bridge: whatever the test did or failed to do, stop it (SIGTERM, so it
    /// takes its servers along; SIGKILL after a bounded wait).
    fn drop(&mut self) {
        let daemons = self.daemons();
        for &pid in &daemons {
            corral_tests::send_signal(pid, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while daemons.iter().any(|&pid| is_alive(pid)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for &pid in &daemons {
            if is_alive(pid) {
                corral_tests::send_signal(pid, libc::SIGKILL);
            }
        }
    }
}

/// A bridge process driven with raw MCP lines.
struct RawBridge {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl RawBridge {
    fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("start corral mcp");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        }
    }

    async fn send(&mut self, message: Value) {
        let mut line = message.to_string();
        line.push('\n');
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line.as_bytes()).await.expect("write to corral mcp");
    }

    /// The next line corral mcp writes, as JSON (nothing else may appear on its stdout).
    async fn recv(&mut self) -> Value {
        let line = within_for(STEP, "a line from corral mcp", self.lines.next_line())
            .await
            .expect("read corral mcp's stdout")
            .expect("corral mcp ended its output early");
        serde_json::from_str(&line).unwrap_or_else(|error| panic!("not JSON on stdout ({error}): {line}"))
    }

    async fn initialize(&mut self) -> Value {
        self.initialize_declaring(&json!({})).await
    }

    /// `initialize` (id 1) declaring `capabilities`; the result.
    async fn initialize_declaring(&mut self, capabilities: &Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": capabilities,
            "clientInfo": {"name": "raw-bridge-test", "version": "1"}}}))
            .await;
        let answer = self.recv().await;
        assert_eq!(answer["id"], 1, "{answer}");
        answer["result"].clone()
    }

    /// The next line that is not a `list_changed` notification.
    async fn recv_skipping_list_changed(&mut self) -> Value {
        loop {
            let message = self.recv().await;
            if !is_list_changed(&message) {
                return message;
            }
        }
    }

    /// Read (bounded) until the three `list_changed` notifications of a
    /// restored session have come; anything else read meanwhile is returned.
    async fn until_restored(&mut self) -> Vec<Value> {
        let mut others = Vec::new();
        within_for(SERVER_WAIT, "the restored session's list_changed", async {
            loop {
                let message = self.recv().await;
                if message["method"] == "notifications/prompts/list_changed" {
                    return;
                }
                if !is_list_changed(&message) {
                    others.push(message);
                }
            }
        })
        .await;
        others
    }

    /// Close stdin (the client is done) and wait for corral mcp to exit; its stderr.
    async fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(self.stdin.take());
        while let Ok(Ok(Some(line))) = tokio::time::timeout(STEP, self.lines.next_line()).await {
            let _: Value = serde_json::from_str(&line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt as _;
            let _ = within_for(STEP, "corral mcp's stderr", pipe.read_to_string(&mut stderr)).await;
        }
        let status = within_for(STEP, "corral mcp to exit", self.child.wait())
            .await
            .expect("wait for corral mcp");
        (status, stderr)
    }
}

/// The session id of `pid` (field 6 of `/proc/<pid>/stat`).
fn session_of(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

#[tokio::test]
async fn corral_mcp_starts_a_detached_corrald_that_outlives_it() {
    let setup = AutoStart::new();
    let mut survivors = KillSurvivorsOnDrop::new([setup.pid_file()]);
    assert!(setup.daemons().is_empty(), "no daemon before");

    let mut bridge = RawBridge::start(setup.bridge(&[]));
    let result = bridge.initialize().await;
    assert_eq!(result["serverInfo"]["name"], "corral", "{result}");
    let daemon_pid = setup.status().await.daemon_info.pid;
    survivors.also(daemon_pid);
    // The built-in server is there too, and the fixture once ready.
    let client = corral_client(&setup.socket()).await;
    wait_for_status(&client, "fixture", ServerStatus::Ready, SERVER_WAIT).await;
    drop(client);
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .await;
    let listed = loop {
        let message = bridge.recv().await;
        if message["id"] == 2 {
            break message;
        }
        let method = message["method"].as_str().unwrap_or_default();
        assert!(
            [
                "notifications/tools/list_changed",
                "notifications/prompts/list_changed",
                "notifications/resources/list_changed"
            ]
            .contains(&method),
            "only MCP: {message}"
        );
    };
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|tool| tool["name"].as_str())
        .collect();
    assert!(
        names.contains(&"corral__list_servers") && names.contains(&"fixture__echo"),
        "{names:?}"
    );

    let (status, stderr) = bridge.finish().await;
    assert!(
        status.success(),
        "corral mcp exits 0 when its client is done: {status}\n{stderr}"
    );
    assert!(stderr.contains("started corrald"), "{stderr}");

    // Detached: its own session, still serving after the bridge is gone, logging to the state dir.
    assert!(is_alive(daemon_pid), "corrald outlives the bridge that started it");
    assert_eq!(
        session_of(daemon_pid),
        Some(daemon_pid),
        "corrald leads a session of its own"
    );
    assert_eq!(setup.daemons(), vec![daemon_pid]);
    assert_eq!(setup.status().await.daemon_info.pid, daemon_pid);
    let log = std::fs::read_to_string(setup.log()).expect("corrald's log in the state dir");
    assert!(log.contains("fixture"), "the log is corrald's: {log}");

    // Stopped, it leaves nothing behind.
    let fixture = wait_for_pid_file(&setup.pid_file(), 1).await;
    send_signal(daemon_pid, libc::SIGTERM);
    let mut everything = fixture;
    everything.push(daemon_pid);
    assert_all_gone(&everything, SERVER_WAIT, "corrald and its servers after SIGTERM").await;
    assert!(setup.daemons().is_empty());
}

#[tokio::test]
async fn two_bridges_started_at_once_end_with_one_daemon() {
    let setup = AutoStart::new();
    let mut survivors = KillSurvivorsOnDrop::new([setup.pid_file()]);
    let mut first = RawBridge::start(setup.bridge(&[]));
    let mut second = RawBridge::start(setup.bridge(&[]));
    let (one, two) = tokio::join!(first.initialize(), second.initialize());
    assert_eq!(one["serverInfo"]["name"], "corral", "{one}");
    assert_eq!(two["serverInfo"]["name"], "corral", "{two}");

    let daemon = poll_until("exactly one corrald serving the socket", || async {
        let daemons = setup.daemons();
        (daemons.len() == 1).then(|| daemons[0])
    })
    .await;
    survivors.also(daemon);
    let status = setup.status().await;
    assert_eq!(status.daemon_info.pid, daemon);
    assert_eq!(status.connections, 3, "both bridges and this client on the one daemon");

    let (first_status, first_stderr) = first.finish().await;
    let (second_status, second_stderr) = second.finish().await;
    assert!(first_status.success(), "{first_status}: {first_stderr}");
    assert!(second_status.success(), "{second_status}: {second_stderr}");
    let mut pids = read_pid_file(&setup.pid_file());
    send_signal(daemon, libc::SIGTERM);
    pids.push(daemon);
    assert_all_gone(&pids, SERVER_WAIT, "corrald and its servers after SIGTERM").await;
}

#[tokio::test]
async fn no_start_with_no_daemon_fails_clearly() {
    let setup = AutoStart::new();
    let mut command = setup.bridge(&["--no-start"]);
    command.stdin(Stdio::null());
    let output = within_for(STEP, "corral mcp --no-start", command.output())
        .await
        .expect("run corral mcp");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout, the client's channel");
    assert!(
        stderr.contains("corrald is not running at") && stderr.contains("--no-start"),
        "{stderr}"
    );
    assert!(setup.daemons().is_empty(), "nothing was started");
}

/// What the bridge answers a request the daemon took with it (`cli/src/pipe/lines.rs`).
const DAEMON_WENT_AWAY: &str =
    "corral's daemon went away during this request (it stopped or restarted); corral mcp is reconnecting: try again";

#[tokio::test]
async fn the_typescript_sdk_goes_on_through_a_daemon_restart() {
    let config = fixture_config("one", &[]);
    let mut daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    wait_for_status(&client, "one", ServerStatus::Ready, SERVER_WAIT).await;
    let state = tempfile::tempdir().expect("a state dir");
    // `--no-start`: the test starts the next daemon itself, on the same socket.
    let mut args = socket_args(&daemon);
    args.push("--no-start".to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut mcp, connected) = TsClient::start(&args, &[], state.path()).await;
    let bridge_pid = u32::try_from(connected["pid"].as_u64().expect("the bridge's pid")).expect("a pid");
    let called = mcp.call("one__echo", json!({"message": "before"})).await;
    assert_eq!(called["result"]["content"][0]["text"], "echo: before", "{called}");

    // A call in flight when the daemon stops: the client gets an error for it.
    let started = mcp
        .op(json!({"op": "start", "id": "slow", "name": "one__sleep", "arguments": {"seconds": 60}}))
        .await;
    assert_eq!(started["id"], "slow");
    wait_for_stderr_line(&client, "one", "fixture: sleeping 60").await;
    drop(client);
    mcp.forget_events();
    let socket = daemon.socket_path().to_path_buf();
    let stopped = daemon.sigterm_and_wait();
    assert!(stopped.success(), "corrald stops on SIGTERM: {stopped}");
    let lost = mcp.op(json!({"op": "wait", "id": "slow"})).await;
    assert_eq!(lost["error"]["code"], -32603, "{lost}");
    assert!(
        lost["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains(DAEMON_WENT_AWAY)),
        "{lost}"
    );

    // A new daemon on the same socket: the bridge reconnects and says the lists changed.
    let second = TestDaemon::builder().config(&config).socket_path(&socket).start();
    for event in ["toolsListChanged", "resourcesListChanged", "promptsListChanged"] {
        mcp.event(event).await;
    }
    let mut names = Vec::new();
    for _ in 0..10 {
        names = mcp.list().await.0;
        if names.iter().any(|name| name == "one__echo") {
            break;
        }
        mcp.list_changed().await;
    }
    assert_eq!(names, ["one__echo", "one__pid", "one__sleep"], "{names:?}");
    let called = mcp.call("one__echo", json!({"message": "after"})).await;
    assert_eq!(called["result"]["content"][0]["text"], "echo: after", "{called}");

    // Neither the client nor `corral mcp` ever exited.
    assert!(is_alive(bridge_pid), "corral mcp is still the client's server");
    assert!(
        mcp.child.try_wait().expect("the client's status").is_none(),
        "the client is still running"
    );
    mcp.close().await;
    drop(second);
}

/// A `notifications/{tools,resources,prompts}/list_changed` from the daemon.
fn is_list_changed(message: &Value) -> bool {
    message.get("id").is_none()
        && message["method"]
            .as_str()
            .is_some_and(|method| method.starts_with("notifications/") && method.ends_with("/list_changed"))
}

#[tokio::test]
async fn a_bridge_starts_corrald_again_and_restores_the_session_on_the_wire() {
    let setup = AutoStart::new();
    let mut survivors = KillSurvivorsOnDrop::new([setup.pid_file()]);
    let mut bridge = RawBridge::start(setup.bridge(&[]));
    bridge.initialize().await;
    bridge
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    let first = setup.status().await.daemon_info.pid;
    survivors.also(first);
    let client = corral_client(&setup.socket()).await;
    wait_for_status(&client, "fixture", ServerStatus::Ready, SERVER_WAIT).await;
    bridge
        .send(json!({"jsonrpc": "2.0", "id": "slow-call", "method": "tools/call",
                     "params": {"name": "fixture__sleep", "arguments": {"seconds": 60}}}))
        .await;
    wait_for_stderr_line(&client, "fixture", "fixture: sleeping 60").await;
    drop(client);

    send_signal(first, libc::SIGTERM);
    // Exactly these lines, in this order: the lost call's error, then the three
    // notifications once the session is restored (the old daemon's own list_changed
    // notifications, as its servers stop, may come first). The replayed initialize's
    // answer never shows.
    let mut lost = bridge.recv().await;
    while is_list_changed(&lost) {
        lost = bridge.recv().await;
    }
    assert_eq!(
        lost,
        json!({"jsonrpc": "2.0", "id": "slow-call", "error": {"code": -32603, "message": DAEMON_WENT_AWAY}})
    );
    for method in [
        "notifications/tools/list_changed",
        "notifications/resources/list_changed",
        "notifications/prompts/list_changed",
    ] {
        assert_eq!(
            within_for(SERVER_WAIT, method, bridge.recv()).await,
            json!({"jsonrpc": "2.0", "method": method})
        );
    }
    assert_all_gone(&[first], SERVER_WAIT, "the stopped corrald").await;
    let second = poll_until("one new corrald serving the socket", || async {
        let daemons = setup.daemons();
        (daemons.len() == 1 && daemons[0] != first).then(|| daemons[0])
    })
    .await;
    survivors.also(second);
    assert_eq!(setup.status().await.daemon_info.pid, second);

    // The restored session serves the client's requests, under its own ids.
    let client = corral_client(&setup.socket()).await;
    wait_for_status(&client, "fixture", ServerStatus::Ready, SERVER_WAIT).await;
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                     "params": {"name": "fixture__echo", "arguments": {"message": "again"}}}))
        .await;
    let answer = loop {
        let message = bridge.recv().await;
        if message.get("id").is_some() {
            break message;
        }
        assert!(is_list_changed(&message), "only MCP: {message}");
    };
    assert_eq!(answer["id"], 3, "{answer}");
    assert_eq!(answer["result"]["content"][0]["text"], "echo: again", "{answer}");
    drop(client);

    let (status, stderr) = bridge.finish().await;
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("reconnected to corrald"), "{stderr}");
    assert!(stderr.matches("started corrald").count() >= 2, "{stderr}");
    let mut pids = read_pid_file(&setup.pid_file());
    send_signal(second, libc::SIGTERM);
    pids.push(second);
    assert_all_gone(&pids, SERVER_WAIT, "corrald and its servers after SIGTERM").await;
}

/// The tool names a client lists, sorted.
async fn sorted_names(mcp: &mut TsClient) -> Vec<String> {
    let mut names = mcp.list().await.0;
    names.sort();
    names
}

/// List (bounded, following `list_changed`) until the client sees exactly `expected`.
pub(crate) async fn wait_for_names(mcp: &mut TsClient, expected: &[&str]) {
    let mut names = Vec::new();
    for _ in 0..20 {
        names = sorted_names(mcp).await;
        if names == expected {
            return;
        }
        mcp.list_changed().await;
    }
    panic!("the client lists {names:?}, not {expected:?}");
}

/// The pid `proj.pid` answers with, and that it is the client's own session server's.
pub(crate) async fn own_proj_pid(mcp: &mut TsClient, socket: &Path) -> u32 {
    let called = mcp.call("proj.pid", json!({})).await;
    let pid: u32 = called["result"]["content"][0]["text"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("a pid: {called}"));
    let client = corral_client(socket).await;
    let servers = client.mcp_server_list().await.expect("mcpServer/list").servers;
    let own = servers
        .iter()
        .find(|server| server.name.starts_with("proj-c"))
        .unwrap_or_else(|| panic!("the client's own proj among {servers:?}"));
    assert_eq!(own.origin, corral_protocol::ServerOrigin::Session, "{own:?}");
    assert_eq!(own.pid, Some(pid), "proj.pid is answered by the client's own server");
    pid
}

#[tokio::test]
async fn corral_mcp_options_shape_the_clients_view_through_a_daemon_restart() {
    let config = format!("{}{}", fixture_config("one", &[]), fixture_config("two", &[]));
    let mut daemon = TestDaemon::builder().config(&config).builtin_server(true).start();
    let mut survivors = KillSurvivorsOnDrop::new([]);
    let client = daemon.connect_client().await;
    for server in ["one", "two", "corral"] {
        wait_for_status(&client, server, ServerStatus::Ready, SERVER_WAIT).await;
    }
    drop(client);
    let project = tempfile::tempdir().expect("a project dir");
    let mcp_json = project.path().join(".mcp.json");
    let entry = json!({"mcpServers": {"proj": {
        "command": fixture_python().display().to_string(),
        "args": [fixture_script().display().to_string()],
    }}});
    std::fs::write(&mcp_json, entry.to_string()).expect("write .mcp.json");
    let state = tempfile::tempdir().expect("a state dir");
    let mut args = socket_args(&daemon);
    let mcp_json = mcp_json.display().to_string();
    args.extend(
        [
            "--no-start",
            "--exclude",
            "two",
            "--no-builtin",
            "--separator",
            ".",
            "--config",
            &mcp_json,
        ]
        .map(str::to_owned),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut mcp, _) = TsClient::start(&args, &[], state.path()).await;
    let expected = [
        "one.echo",
        "one.pid",
        "one.sleep",
        "proj.echo",
        "proj.pid",
        "proj.sleep",
    ];
    wait_for_names(&mut mcp, &expected).await;
    let first_proj = own_proj_pid(&mut mcp, daemon.socket_path()).await;
    survivors.also(first_proj);

    // A new daemon: the same view, and the client's own server started again by it.
    let socket = daemon.socket_path().to_path_buf();
    assert!(daemon.sigterm_and_wait().success());
    assert_all_gone(
        &[first_proj],
        SERVER_WAIT,
        "the client's own server with the old daemon",
    )
    .await;
    let _second = TestDaemon::builder()
        .config(&config)
        .builtin_server(true)
        .socket_path(&socket)
        .start();
    mcp.event("promptsListChanged").await;
    wait_for_names(&mut mcp, &expected).await;
    let second_proj = own_proj_pid(&mut mcp, &socket).await;
    survivors.also(second_proj);
    assert_ne!(second_proj, first_proj);

    // The client goes: its own server goes with it.
    mcp.close().await;
    assert_all_gone(&[second_proj], SERVER_WAIT, "the client's own server after the client").await;
}

/// Why `corral mcp` withdraws a question of a daemon that went away (`cli/src/pipe/lines.rs`).
const DAEMON_RESTARTED: &str = "corral's daemon restarted";

/// An elicitation answer accepting with `name`.
fn accepting(id: &Value, name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {"action": "accept", "content": {"name": name}}})
}

#[tokio::test]
async fn a_question_of_a_crashed_daemon_is_withdrawn_and_a_late_answer_never_reaches_the_next() {
    let mut daemon = everything_daemon("60").await;
    let socket = daemon.socket_path().to_path_buf();
    let mut survivors = KillSurvivorsOnDrop::new([]);
    let client = daemon.connect_client().await;
    let everything = client.mcp_server_get("everything").await.expect("mcpServer/get");
    survivors.also(everything.server.pid.expect("a ready stdio server has a pid"));
    drop(client);
    let state = tempfile::tempdir().expect("a state dir");
    let mut command = raw_bridge(&daemon, state.path());
    command.arg("--no-start");
    let mut bridge = RawBridge::start(command);
    bridge.initialize_declaring(&json!({"elicitation": {}})).await;
    bridge
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;

    // The daemon asks the client something during a call, and crashes before it is answered.
    bridge
        .send(json!({"jsonrpc": "2.0", "id": "first", "method": "tools/call",
                     "params": {"name": "everything__trigger-elicitation-request", "arguments": {}}}))
        .await;
    let asked = bridge.recv_skipping_list_changed().await;
    assert_eq!(asked["method"], "elicitation/create", "{asked}");
    let old_id = asked["id"].clone();
    assert!(!daemon.sigkill_and_wait().success());
    // The call gets its error and the question is withdrawn, the client told why.
    assert_eq!(
        bridge.recv_skipping_list_changed().await,
        json!({"jsonrpc": "2.0", "id": "first", "error": {"code": -32603, "message": DAEMON_WENT_AWAY}})
    );
    assert_eq!(
        bridge.recv_skipping_list_changed().await,
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
               "params": {"requestId": old_id, "reason": DAEMON_RESTARTED}})
    );

    // The next daemon numbers its questions from 1 again.
    let second = TestDaemon::builder()
        .config(&everything_config("everything"))
        .env("CORRAL_ELICITATION_TIMEOUT_SEC", "60")
        .socket_path(&socket)
        .start();
    let client = second.connect_client().await;
    let ready = wait_for_status(&client, "everything", ServerStatus::Ready, SERVER_WAIT).await;
    survivors.also(ready.pid.expect("a ready stdio server has a pid"));
    assert_eq!(bridge.until_restored().await, Vec::<Value>::new());
    bridge
        .send(json!({"jsonrpc": "2.0", "id": "second", "method": "tools/call",
                     "params": {"name": "everything__trigger-elicitation-request", "arguments": {}}}))
        .await;
    let asked = bridge.recv_skipping_list_changed().await;
    assert_eq!(asked["method"], "elicitation/create", "{asked}");
    assert_ne!(
        asked["id"], old_id,
        "the client may still show the old question: the new one has another id"
    );

    // The client answers the old question late, then the new one: only the new answer counts.
    bridge.send(accepting(&old_id, "Late Answer")).await;
    bridge.send(accepting(&asked["id"], "Grace Hopper")).await;
    let answered = bridge.recv_skipping_list_changed().await;
    assert_eq!(answered["id"], "second", "{answered}");
    let text = text_of(&answered["result"]);
    assert!(text.contains("- Name: Grace Hopper"), "{answered}");
    assert!(!text.contains("Late Answer"), "{answered}");

    let (status, stderr) = bridge.finish().await;
    assert!(status.success(), "{status}: {stderr}");
    drop(client);
    drop(second);
}

#[tokio::test]
async fn the_clients_logging_level_survives_a_daemon_restart() {
    let config = fixture_config("logs", &["--log-tool"]);
    let mut daemon = TestDaemon::start_with_config(&config);
    let socket = daemon.socket_path().to_path_buf();
    let client = daemon.connect_client().await;
    wait_for_status(&client, "logs", ServerStatus::Ready, SERVER_WAIT).await;
    drop(client);
    let state = tempfile::tempdir().expect("a state dir");
    let mut command = raw_bridge(&daemon, state.path());
    command.arg("--no-start");
    let mut bridge = RawBridge::start(command);
    bridge.initialize().await;
    bridge
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    bridge
        .send(json!({"jsonrpc": "2.0", "id": 2, "method": "logging/setLevel", "params": {"level": "debug"}}))
        .await;
    assert_eq!(
        bridge.recv_skipping_list_changed().await,
        json!({"jsonrpc": "2.0", "id": 2, "result": {}})
    );
    call_and_see_debug_log(&mut bridge, 3, "before").await;

    assert!(daemon.sigterm_and_wait().success());
    let second = TestDaemon::builder().config(&config).socket_path(&socket).start();
    let client = second.connect_client().await;
    wait_for_status(&client, "logs", ServerStatus::Ready, SERVER_WAIT).await;
    // The new daemon has the client at `debug` too (its default is `info`).
    call_and_see_debug_log(&mut bridge, 4, "after").await;

    let (status, stderr) = bridge.finish().await;
    assert!(status.success(), "{status}: {stderr}");
    drop(client);
    drop(second);
}

/// Call `logs__log` at level `debug` (request `id`) and wait (bounded) for
/// both its answer and the log message it sends.
async fn call_and_see_debug_log(bridge: &mut RawBridge, id: u64, message: &str) {
    bridge
        .send(json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                     "params": {"name": "logs__log", "arguments": {"level": "debug", "message": message}}}))
        .await;
    let (mut answered, mut logged) = (false, false);
    within_for(
        SERVER_WAIT,
        &format!("the answer to {id} and the debug log `{message}`"),
        async {
            while !(answered && logged) {
                let line = bridge.recv_skipping_list_changed().await;
                if line["id"] == id {
                    assert_eq!(text_of(&line["result"]), "logged", "{line}");
                    answered = true;
                } else if line["method"] == "notifications/message" {
                    let params = &line["params"];
                    assert!(
                        params["level"] == "debug" && params["logger"] == "logs" && params["data"] == message,
                        "{line}"
                    );
                    logged = true;
                } else {
                    panic!("only MCP of this call: {line}");
                }
            }
        },
    )
    .await;
}

#[tokio::test]
async fn a_bridge_leaves_restarting_a_service_managers_corrald_to_it() {
    let setup = AutoStart::new();
    let mut survivors = KillSurvivorsOnDrop::new([setup.pid_file()]);
    // The service manager's corrald; the bridge only connects to it.
    let mut service = TestDaemon::builder().socket_path(setup.socket()).start();
    let mut bridge = RawBridge::start(setup.bridge(&[]));
    bridge.initialize().await;
    bridge
        .send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;

    // It crashes; its manager restarts it after `RestartSec=2` (systemd/corral.service).
    assert!(!service.sigkill_and_wait().success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        setup.daemons(),
        Vec::<u32>::new(),
        "the bridge started no corrald of its own within RestartSec"
    );
    let restarted = TestDaemon::builder().socket_path(setup.socket()).start();
    assert_eq!(bridge.until_restored().await, Vec::<Value>::new());
    assert_eq!(setup.status().await.daemon_info.pid, restarted.pid());

    // No manager restarts this one: after a while the bridge starts corrald itself.
    let mut restarted = restarted;
    assert!(!restarted.sigkill_and_wait().success());
    assert_eq!(bridge.until_restored().await, Vec::<Value>::new());
    let own = setup.status().await.daemon_info.pid;
    survivors.also(own);
    assert_eq!(setup.daemons(), vec![own]);
    assert_ne!(own, restarted.pid());
    bridge.send(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"})).await;
    let pong = bridge.recv_skipping_list_changed().await;
    assert!(pong["id"] == 2 && pong.get("result").is_some(), "{pong}");

    let (status, stderr) = bridge.finish().await;
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stderr.matches("started corrald").count(), 1, "{stderr}");
    assert!(
        stderr.contains("waiting for its service manager to start it again"),
        "{stderr}"
    );
    let mut pids = read_pid_file(&setup.pid_file());
    send_signal(own, libc::SIGTERM);
    pids.push(own);
    assert_all_gone(&pids, SERVER_WAIT, "corrald and its servers after SIGTERM").await;
}
