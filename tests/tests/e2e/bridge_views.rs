//! What an MCP client sees through the bridge beyond tools: the prompts,
//! resources and log messages of every server (the official TypeScript SDK
//! through `corral mcp`, against two server-everything instances whose URIs
//! collide), and each client's own view (`_meta["corral/bridge"]` at
//! `initialize`, what `corral mcp` writes there): `servers`, `exclude`, the
//! separator, and the client's own servers, which no other client sees and
//! which die with its connection, with the client killed and with its
//! bridge killed — checked by pid, grandchildren included; `list_changed`
//! when a server crashes and when it is back. The client's roots: the
//! TypeScript SDK client declares them, and server-everything started for it
//! with `corral mcp --config` reports them (`get-roots-list`), the new ones
//! after the client changes them, its `roots` entry when the client does not
//! answer, an error when it has none; a config server reports its own
//! config's, and a client without roots gives its servers none. And the MCP
//! Inspector's CLI, a third client, through `corral mcp`.

use std::time::Duration;

use corral_protocol::{ServerOrigin, ServerStatus};
use corral_tests::{
    KillSurvivorsOnDrop, RawConnection, SERVER_WAIT, TestDaemon, WireFraming, assert_all_gone, binary,
    everything_config, fixture_config, fixture_python, fixture_script, peers_dir, poll_until, send_signal, text_of,
    toml_string_array, wait_for_pid_file, wait_for_status, within_for,
};
use serde_json::{Value, json};

use super::bridge::{
    STEP, TsClient, own_proj_pid as ts_own_proj_pid, socket_args, wait_for_names, wait_for_stderr_line,
};

/// Where a listing's items are in its result.
fn items<'a>(listed: &'a Value, key: &str) -> &'a [Value] {
    listed[key].as_array().unwrap_or_else(|| panic!("no {key} in {listed}"))
}

fn strings<'a>(items: &'a [Value], key: &str) -> Vec<&'a str> {
    items.iter().filter_map(|item| item[key].as_str()).collect()
}

#[tokio::test]
async fn prompts_and_resources_of_every_server_reach_an_mcp_client() {
    let config = format!(
        "{}{}{}",
        everything_config("everything"),
        everything_config("second"),
        fixture_config("fixture", &[])
    );
    let daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    for server in ["everything", "second", "fixture"] {
        wait_for_status(&client, server, ServerStatus::Ready, SERVER_WAIT).await;
    }
    let state = tempfile::tempdir().expect("a state dir");
    let args = socket_args(&daemon);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut mcp, connected) = TsClient::start(&args, &[], state.path()).await;
    assert_eq!(connected["capabilities"]["prompts"]["listChanged"], true, "{connected}");
    assert_eq!(
        connected["capabilities"]["resources"]["listChanged"], true,
        "{connected}"
    );

    // Prompts: one namespace, named like tools, got from the server that has them.
    let listed = mcp.op(json!({"op": "prompts"})).await;
    let names = strings(items(&listed, "prompts"), "name");
    for expected in [
        "everything__simple-prompt",
        "everything__args-prompt",
        "second__simple-prompt",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert!(!names.iter().any(|name| name.starts_with("fixture__")), "{names:?}");
    let got = mcp
        .op(json!({"op": "getPrompt", "name": "second__args-prompt", "arguments": {"city": "Lyon", "state": "AURA"}}))
        .await;
    let text = got["result"]["messages"][0]["content"]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("a message: {got}"));
    assert!(text.contains("Lyon"), "the server's prompt, with the arguments: {got}");
    let unknown = mcp.op(json!({"op": "getPrompt", "name": "nobody__prompt"})).await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    assert!(
        unknown["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("unknown prompt `nobody__prompt`")),
        "{unknown}"
    );

    // Resources keep their URIs; the second server's copies of the first's are prefixed.
    let listed = mcp.op(json!({"op": "resources"})).await;
    let resources = items(&listed, "resources");
    let uris = strings(resources, "uri");
    let first: Vec<&str> = uris
        .iter()
        .copied()
        .filter(|uri| !uri.starts_with("corral://"))
        .collect();
    assert!(!first.is_empty(), "{uris:?}");
    for uri in &first {
        let prefixed = format!("corral://second/{uri}");
        assert!(uris.contains(&prefixed.as_str()), "{prefixed} in {uris:?}");
    }
    assert_eq!(uris.len(), first.len() * 2, "{uris:?}");
    let plain = first[0];
    let read = mcp.op(json!({"op": "read", "uri": plain})).await;
    assert_eq!(read["result"]["contents"][0]["uri"], plain, "{read}");
    let prefixed = format!("corral://second/{plain}");
    let from_second = mcp.op(json!({"op": "read", "uri": prefixed})).await;
    assert_eq!(
        from_second["result"]["contents"][0]["uri"], plain,
        "read from the second server under its own URI: {from_second}"
    );
    assert_eq!(
        from_second["result"]["contents"][0]["text"],
        read["result"]["contents"][0]["text"]
    );

    // Templates: listed the same way; a URI only a template names is read from its server.
    let listed = mcp.op(json!({"op": "templates"})).await;
    let templates = strings(items(&listed, "resourceTemplates"), "uriTemplate");
    assert!(
        templates.contains(&"demo://resource/dynamic/text/{resourceId}"),
        "{templates:?}"
    );
    assert!(
        templates.contains(&"corral://second/demo://resource/dynamic/text/{resourceId}"),
        "{templates:?}"
    );
    let dynamic = mcp
        .op(json!({"op": "read", "uri": "demo://resource/dynamic/text/7"}))
        .await;
    assert_eq!(
        dynamic["result"]["contents"][0]["uri"], "demo://resource/dynamic/text/7",
        "{dynamic}"
    );
    let nowhere = mcp.op(json!({"op": "read", "uri": "nowhere://at/all"})).await;
    assert_eq!(nowhere["error"]["code"], -32002, "resource not found: {nowhere}");
    assert!(
        nowhere["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("nowhere://at/all")),
        "{nowhere}"
    );

    // Server logs reach the client at its level, the logger named after the server.
    let refused = mcp.op(json!({"op": "setLevel", "level": "loud"})).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    let set = mcp.op(json!({"op": "setLevel", "level": "debug"})).await;
    assert!(set.get("error").is_none(), "{set}");
    let toggled = mcp.call("everything__toggle-simulated-logging", json!({})).await;
    assert!(toggled["result"]["isError"] != true, "{toggled}");
    let log = mcp.event("log").await;
    assert_eq!(log["params"]["logger"], "everything", "{log}");
    assert!(
        log["params"]["data"]
            .as_str()
            .is_some_and(|data| data.contains("message")),
        "the server's own message: {log}"
    );
    let _ = mcp.call("everything__toggle-simulated-logging", json!({})).await;

    // A server stops: every list the client has may have changed, and it is told so.
    mcp.forget_events();
    client.mcp_server_stop("second").await.expect("stop second");
    for kind in ["toolsListChanged", "promptsListChanged", "resourcesListChanged"] {
        let _ = mcp.event(kind).await;
    }
    let listed = mcp.op(json!({"op": "resources"})).await;
    let uris = strings(items(&listed, "resources"), "uri");
    assert!(!uris.iter().any(|uri| uri.starts_with("corral://second/")), "{uris:?}");
    let gone = mcp.op(json!({"op": "read", "uri": prefixed})).await;
    assert!(gone.get("error").is_some(), "a stopped server's resource: {gone}");
    mcp.close().await;
}

/// An MCP client on the daemon's socket (what `corral mcp` pipes), with `options`
/// as `initialize`'s `_meta["corral/bridge"]`.
async fn mcp_client(daemon: &TestDaemon, options: Option<Value>) -> RawConnection {
    let mut connection = RawConnection::connect(daemon.socket_path(), WireFraming::Lines).await;
    let mut params = json!({
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "bridge-views-test", "version": "1.0.0"},
    });
    if let Some(options) = options {
        params["_meta"] = json!({ "corral/bridge": options });
    }
    let result = connection.call("initialize", params).await;
    assert_eq!(result["serverInfo"]["name"], "corral", "{result}");
    connection
        .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    connection
}

async fn tool_names(connection: &mut RawConnection) -> Vec<String> {
    let listed = connection.call("tools/list", json!({})).await;
    let mut names: Vec<String> = strings(items(&listed, "tools"), "name")
        .into_iter()
        .map(str::to_owned)
        .collect();
    names.sort();
    names
}

/// The pid `proj.pid` answers client `a` with, once that is its own `proj`'s (a session server).
async fn own_proj_pid(a: &mut RawConnection, client: &corral_client::Client) -> Option<u32> {
    if !tool_names(a).await.contains(&"proj.pid".to_owned()) {
        return None;
    }
    let called = a.call("tools/call", json!({"name": "proj.pid", "arguments": {}})).await;
    let pid: u32 = text_of(&called).parse().ok()?;
    let servers = client.mcp_server_list().await.ok()?.servers;
    let own = servers
        .into_iter()
        .find(|server| server.origin == ServerOrigin::Session && server.name.starts_with("proj-c"))?;
    (own.pid == Some(pid)).then_some(pid)
}

/// The fixture server's fields, as `mcpServer/add` (and `corral mcp --config`) give them.
fn fixture_fields() -> Value {
    json!({
        "command": fixture_python().display().to_string(),
        "args": [fixture_script().display().to_string()],
    })
}

#[tokio::test]
async fn a_clients_own_servers_are_its_alone_and_die_with_its_connection() {
    let config = format!("{}{}", fixture_config("shared", &[]), fixture_config("proj", &[]));
    let daemon = TestDaemon::builder().config(&config).builtin_server(true).start();
    let mut survivors = KillSurvivorsOnDrop::new([]);
    let client = daemon.connect_client().await;
    for server in ["shared", "proj", "corral"] {
        wait_for_status(&client, server, ServerStatus::Ready, SERVER_WAIT).await;
    }

    // Client A: its own `proj` (shadowing the config's), `.` between names, no built-in tools.
    let mut a = mcp_client(
        &daemon,
        Some(json!({
            "separator": ".",
            "builtin": false,
            "sessionServers": { "proj": fixture_fields(), "bad": { "command": 42 } },
        })),
    )
    .await;
    // An entry corrald cannot run is left out, and the client is told (not only corrald's log).
    let told = loop {
        let message = a.recv().await;
        if message["method"] == "notifications/message" {
            break message;
        }
    };
    assert_eq!(told["params"]["level"], "error", "{told}");
    assert_eq!(told["params"]["logger"], "corral", "{told}");
    assert!(
        told["params"]["data"]
            .as_str()
            .is_some_and(|text| text.contains("your server `bad`") && text.contains("left out")),
        "{told}"
    );
    // Bounded: the server starts, then the config's `proj` answers until A's own is ready.
    let deadline = tokio::time::Instant::now() + SERVER_WAIT;
    let a_pid = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client A's own `proj` was not listed and answering within {SERVER_WAIT:?}"
        );
        if let Some(pid) = own_proj_pid(&mut a, &client).await {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    survivors.also(a_pid);
    let names = tool_names(&mut a).await;
    assert_eq!(
        names,
        [
            "proj.echo",
            "proj.pid",
            "proj.sleep",
            "shared.echo",
            "shared.pid",
            "shared.sleep"
        ],
        "A's view: its own proj, shared, nothing built in"
    );

    // Client B, no options: the config's servers, never A's.
    let mut b = mcp_client(&daemon, None).await;
    let names = tool_names(&mut b).await;
    assert!(names.contains(&"proj__pid".to_owned()), "{names:?}");
    assert!(names.contains(&"corral__list_servers".to_owned()), "{names:?}");
    assert!(!names.iter().any(|name| name.contains("proj-c")), "{names:?}");
    let b_proj = b
        .call("tools/call", json!({"name": "proj__pid", "arguments": {}}))
        .await;
    let config_proj = client.mcp_server_get("proj").await.expect("get proj").server.pid;
    assert_eq!(
        text_of(&b_proj).parse::<u32>().ok(),
        config_proj,
        "B calls the config's proj"
    );
    assert_ne!(config_proj, Some(a_pid));
    let not_hers = b
        .request("tools/call", json!({"name": "proj-c1__pid", "arguments": {}}))
        .await;
    assert!(
        not_hers.get("error").is_some() || not_hers["result"]["isError"] == true,
        "another client's server cannot be called: {not_hers}"
    );

    // Client C: `servers` and `exclude`.
    let mut c = mcp_client(
        &daemon,
        Some(json!({ "servers": ["shared", "proj"], "exclude": ["proj"] })),
    )
    .await;
    assert_eq!(
        tool_names(&mut c).await,
        ["shared__echo", "shared__pid", "shared__sleep"]
    );

    // A bad separator is refused at `initialize`, naming it.
    let mut bad = RawConnection::connect(daemon.socket_path(), WireFraming::Lines).await;
    let refused = bad
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"},
                   "_meta": {"corral/bridge": {"separator": "a b"}}}),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("invalid separator \"a b\"")),
        "{refused}"
    );

    // A's connection ends: its own server's processes are gone, and so is the server.
    drop(a);
    assert_all_gone(&[a_pid], Duration::from_secs(10), "client A's own server after A left").await;
    poll_until("client A's own server to be removed", || async {
        let servers = client.mcp_server_list().await.ok()?.servers;
        (!servers.iter().any(|server| server.origin == ServerOrigin::Session)).then_some(())
    })
    .await;
    let names = tool_names(&mut b).await;
    assert!(
        names.contains(&"proj__pid".to_owned()),
        "B still has the config's proj: {names:?}"
    );
}

/// List (bounded, following `list_changed`) until the client lists every tool of `wanted`.
async fn wait_until_listed(mcp: &mut TsClient, wanted: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    for _ in 0..20 {
        names = mcp.list().await.0;
        if wanted.iter().all(|tool| names.iter().any(|name| name == tool)) {
            return names;
        }
        mcp.list_changed().await;
    }
    panic!("the client lists {names:?}, not all of {wanted:?}");
}

/// What server-everything's `get-roots-list`, called as `tool`, reports,
/// once it mentions `expected` (polled, bounded: a server takes its roots
/// after the change is announced).
async fn roots_reported(mcp: &mut TsClient, tool: &str, expected: &str) -> String {
    let deadline = tokio::time::Instant::now() + SERVER_WAIT;
    loop {
        let called = mcp.call(tool, json!({})).await;
        let text = text_of(&called["result"]);
        if text.contains(expected) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{tool} did not report {expected} within {SERVER_WAIT:?}; it says: {called}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_clients_roots_reach_the_servers_it_started_and_no_other() {
    // A config server with roots of its own: shared by every client, it never gets a client's.
    let config = format!(
        "{}roots = {}\n",
        everything_config("shared"),
        toml_string_array(&["file:///srv/config-root"])
    );
    // The client's answer deadline, which `roots/list` waits at most too.
    let daemon = TestDaemon::builder()
        .config(&config)
        .env("CORRAL_ELICITATION_TIMEOUT_SEC", "3")
        .start();
    let client = daemon.connect_client().await;
    wait_for_status(&client, "shared", ServerStatus::Ready, SERVER_WAIT).await;
    // The project's own servers: `proj` with a `roots` entry, `bare` without.
    let project = tempfile::tempdir().expect("a project dir");
    let project_toml = project.path().join("corral.toml");
    let servers = format!(
        "{}roots = {}\n{}",
        everything_config("proj"),
        toml_string_array(&["file:///srv/project-file"]),
        everything_config("bare")
    );
    std::fs::write(&project_toml, servers).expect("write the project's servers");
    let state = tempfile::tempdir().expect("a state dir");
    let mut args = socket_args(&daemon);
    args.extend(["--config".to_owned(), project_toml.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // A client with roots: its own servers are offered roots (server-everything
    // has `get-roots-list` only then) and get the client's, not the file's.
    let first = json!([{"uri": "file:///work/first", "name": "first"}]);
    let env = [("BRIDGE_CLIENT_ROOTS", first.to_string().into())];
    let (mut mcp, _) = TsClient::start(&args, &env, state.path()).await;
    wait_until_listed(
        &mut mcp,
        &["proj__get-roots-list", "bare__get-roots-list", "shared__get-roots-list"],
    )
    .await;
    for tool in ["proj__get-roots-list", "bare__get-roots-list"] {
        let text = roots_reported(&mut mcp, tool, "file:///work/first").await;
        assert!(text.contains("Current MCP Roots (1 total)"), "{tool}: {text}");
        assert!(!text.contains("project-file"), "the client's roots win: {tool}: {text}");
    }
    let shared = roots_reported(&mut mcp, "shared__get-roots-list", "file:///srv/config-root").await;
    assert!(
        !shared.contains("/work/"),
        "a config server never gets a client's roots: {shared}"
    );

    // The client changes its roots: its servers are told, ask again, and report the new ones.
    let changed = json!([{"uri": "file:///work/second", "name": "second"}, {"uri": "file:///work/third"}]);
    mcp.op(json!({"op": "roots", "roots": changed})).await;
    for tool in ["proj__get-roots-list", "bare__get-roots-list"] {
        let text = roots_reported(&mut mcp, tool, "file:///work/second").await;
        assert!(text.contains("Current MCP Roots (2 total)"), "{tool}: {text}");
        assert!(text.contains("file:///work/third"), "{tool}: {text}");
        assert!(!text.contains("file:///work/first"), "{tool}: {text}");
    }
    let shared = roots_reported(&mut mcp, "shared__get-roots-list", "file:///srv/config-root").await;
    assert!(!shared.contains("/work/"), "{shared}");

    // The client stops answering `roots/list`: after the deadline (3 s) the
    // question is withdrawn from it, `proj` falls back to its `roots` entry
    // and `bare`, which has none, gets an error saying why.
    mcp.op(json!({"op": "roots", "roots": "hang"})).await;
    let withdrawn = mcp.event("withdrawn").await;
    assert_eq!(
        withdrawn,
        json!({"event": "withdrawn", "method": "roots/list",
               "reason": "corral withdrew this request: no answer within 3s (roots/list waits the answer deadline, at most 10 s)"}),
    );
    let text = roots_reported(&mut mcp, "proj__get-roots-list", "file:///srv/project-file").await;
    assert!(!text.contains("/work/"), "{text}");
    let bare = poll_until("the client's own `bare`", || async {
        let servers = client.mcp_server_list().await.ok()?.servers;
        servers
            .into_iter()
            .find(|server| server.origin == ServerOrigin::Session && server.name.starts_with("bare-c"))
            .map(|server| server.name)
    })
    .await;
    wait_for_stderr_line(
        &client,
        &bare,
        "corrald cannot give the roots of the MCP client that started this server: the client did not answer \
         roots/list within 3s",
    )
    .await;
    mcp.close().await;

    // A client without roots: its servers behave as without corrald's bridge,
    // `proj` gets its `roots` entry and `bare` is offered none.
    let (mut plain, _) = TsClient::start(&args, &[], state.path()).await;
    let names = wait_until_listed(&mut plain, &["proj__get-roots-list", "bare__echo"]).await;
    assert!(
        !names.iter().any(|name| name == "bare__get-roots-list"),
        "no roots offered to `bare`: {names:?}"
    );
    let text = roots_reported(&mut plain, "proj__get-roots-list", "file:///srv/project-file").await;
    assert!(!text.contains("/work/"), "{text}");
    plain.close().await;
}

/// `mcp-inspector --cli corral mcp --socket S ARGS…`: the MCP Inspector's CLI
/// (its own client, on the v2 SDK), which starts `corral mcp` with a short
/// environment of its own, as desktop clients do. Its JSON output, parsed.
async fn inspector(daemon: &TestDaemon, args: &[&str]) -> Value {
    let launcher = peers_dir().join("node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js");
    assert!(
        launcher.is_file(),
        "the MCP Inspector is missing: install the test peers with `bash tests/run.sh`"
    );
    let mut command = tokio::process::Command::new("node");
    command
        .arg(launcher)
        .arg("--cli")
        .arg(binary("corral"))
        .args(["mcp", "--no-start", "--socket"])
        .arg(daemon.socket_path())
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = within_for(STEP, "the MCP Inspector's CLI", command.output())
        .await
        .expect("run the MCP Inspector");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Inspector failed ({}): {stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

#[tokio::test]
async fn the_mcp_inspector_cli_lists_calls_reads_and_gets_through_corral_mcp() {
    let daemon = TestDaemon::start_with_config(&everything_config("everything"));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "everything", ServerStatus::Ready, SERVER_WAIT).await;

    let listed = inspector(&daemon, &["--method", "tools/list"]).await;
    let names = strings(items(&listed, "tools"), "name");
    assert!(names.contains(&"everything__echo"), "{names:?}");
    let called = inspector(
        &daemon,
        &[
            "--method",
            "tools/call",
            "--tool-name",
            "everything__echo",
            "--tool-arg",
            "message=inspected",
        ],
    )
    .await;
    assert_eq!(text_of(&called), "Echo: inspected", "{called}");
    let read = inspector(
        &daemon,
        &["--method", "resources/read", "--uri", "demo://resource/dynamic/text/3"],
    )
    .await;
    assert_eq!(read["contents"][0]["uri"], "demo://resource/dynamic/text/3", "{read}");
    let prompt = inspector(
        &daemon,
        &[
            "--method",
            "prompts/get",
            "--prompt-name",
            "everything__args-prompt",
            "--prompt-args",
            "city=Lyon",
        ],
    )
    .await;
    assert!(
        prompt["messages"][0]["content"]["text"]
            .as_str()
            .is_some_and(|text| text.contains("Lyon")),
        "{prompt}"
    );
    let templates = inspector(&daemon, &["--method", "resources/templates/list"]).await;
    assert!(
        strings(items(&templates, "resourceTemplates"), "uriTemplate")
            .contains(&"demo://resource/dynamic/text/{resourceId}"),
        "{templates}"
    );
}

/// Whatever ends a client's `corral mcp` — the client killed with SIGKILL,
/// or the bridge itself killed — every process of the client's own server
/// (the server and the grandchild it spawned) is gone. (The client closing
/// normally is `bridge::corral_mcp_options_shape_the_clients_view_through_a_daemon_restart`.)
#[tokio::test]
async fn a_clients_own_servers_die_when_the_client_or_its_bridge_is_killed() {
    let daemon = TestDaemon::start_with_config(&fixture_config("shared", &[]));
    let client = daemon.connect_client().await;
    wait_for_status(&client, "shared", ServerStatus::Ready, SERVER_WAIT).await;
    let mut survivors = KillSurvivorsOnDrop::new([]);
    for victim in ["the client", "the bridge"] {
        let project = tempfile::tempdir().expect("a project dir");
        let pid_file = project.path().join("proj.pids");
        let mcp_json = project.path().join(".mcp.json");
        let entry = json!({"mcpServers": {"proj": {
            "command": fixture_python().display().to_string(),
            "args": [fixture_script().display().to_string(), "--spawn-child", "--pid-file",
                     pid_file.display().to_string()],
        }}});
        std::fs::write(&mcp_json, entry.to_string()).expect("write .mcp.json");
        let state = tempfile::tempdir().expect("a state dir");
        let mut args = socket_args(&daemon);
        let mcp_json = mcp_json.display().to_string();
        args.extend(["--no-start", "--separator", ".", "--config", &mcp_json].map(str::to_owned));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (mut mcp, connected) = TsClient::start(&args, &[], state.path()).await;
        let bridge_pid = connected["pid"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok())
            .unwrap_or_else(|| panic!("the bridge's pid: {connected}"));
        wait_for_names(
            &mut mcp,
            &[
                "proj.echo",
                "proj.pid",
                "proj.sleep",
                "shared.echo",
                "shared.pid",
                "shared.sleep",
            ],
        )
        .await;
        let server = ts_own_proj_pid(&mut mcp, daemon.socket_path()).await;
        let pids = wait_for_pid_file(&pid_file, 2).await;
        assert_eq!(pids[0], server, "the pid file's first line is the server's");
        for pid in &pids {
            survivors.also(*pid);
        }
        let killed = if victim == "the client" { mcp.pid() } else { bridge_pid };
        send_signal(killed, libc::SIGKILL);
        assert_all_gone(
            &pids,
            SERVER_WAIT,
            &format!("the client's own server and its child after {victim} was killed"),
        )
        .await;
        assert_all_gone(&[bridge_pid], SERVER_WAIT, "the bridge").await;
        poll_until("the client's own server to be removed from corrald", || async {
            let servers = client.mcp_server_list().await.ok()?.servers;
            (!servers.iter().any(|server| server.origin == ServerOrigin::Session)).then_some(())
        })
        .await;
        drop(mcp);
    }
}

/// A config server that crashes: the client is told its tools changed (they
/// are gone while it restarts), and told again when it is back.
#[tokio::test]
async fn the_client_is_told_when_a_server_crashes_and_again_when_it_is_back() {
    let daemon = TestDaemon::start_with_config(&fixture_config("crashy", &[]));
    let client = daemon.connect_client().await;
    let ready = wait_for_status(&client, "crashy", ServerStatus::Ready, SERVER_WAIT).await;
    let first = ready.pid.expect("a ready stdio server has a pid");
    let state = tempfile::tempdir().expect("a state dir");
    let args = socket_args(&daemon);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut mcp, _) = TsClient::start(&args, &[], state.path()).await;
    let (names, _) = mcp.list().await;
    assert!(names.contains(&"crashy__pid".to_owned()), "{names:?}");

    mcp.forget_events();
    send_signal(first, libc::SIGKILL);
    let _ = mcp.event("toolsListChanged").await;
    // Bounded: told again once it is back (restarted with backoff), with its tools.
    let deadline = tokio::time::Instant::now() + SERVER_WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "crashy's tools did not come back"
        );
        let _ = mcp.event("toolsListChanged").await;
        let (names, _) = mcp.list().await;
        if names.contains(&"crashy__pid".to_owned()) {
            break;
        }
    }
    let called = mcp.call("crashy__pid", json!({})).await;
    let second: u32 = text_of(&called["result"]).parse().expect("a pid");
    assert_ne!(second, first, "a new process answers");
    mcp.close().await;
}
