//! What corrald returns for tools, resources and prompts is what the MCP
//! server sends: server-everything is asked the same requests directly (an
//! rmcp client of our own on its stdio) and through corrald, and the answers
//! are compared as whole JSON values.
//!
//! The direct answer is the server's JSON as it came off the wire (a tee on
//! the child's stdout records every message before rmcp parses it), not
//! rmcp's re-serialisation of its typed model: "exactly as the server sent
//! it" is the protocol's promise (docs/protocol.md). When the two differ the
//! failure also says whether corrald's answer equals rmcp's typed round trip,
//! which points at where a field was lost.
//!
//! Fields that legitimately differ between two instances of the server are
//! found by asking a second direct instance and excluding only the JSON paths
//! whose values differ between the two direct answers (see
//! [`Report::compare`]); the paths excluded are printed. With
//! server-everything 2026.8.31 these are only the time of day (to the
//! second, `new Date().toLocaleTimeString()`) in the dynamic resources: the
//! `text`/`blob` of `demo://resource/dynamic/{text,blob}/N`, of the embedded
//! resource of `get-resource-reference` and of `resource-prompt`.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corral_client::Client;
use corral_client::protocol::ServerStatus;
use corral_tests::{
    SERVER_WAIT, TestDaemon, everything_config, peers_dir, poll_until, wait_for_status, within, within_for,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ClientCapabilities, ClientConfig, ElicitationCapability,
    FormElicitationCapability, GetPromptRequestParams, GetPromptResponse, Implementation, ReadResourceRequestParams,
    SamplingCapability, UrlElicitationCapability,
};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceError, ServiceExt as _};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;

const SERVER: &str = "everything";
const CALL_WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The direct client

/// server-everything on our own stdio pipes, with an rmcp client and a record of every message it sent.
struct Direct {
    client: Option<RunningService<RoleClient, ClientConfig>>,
    child: Child,
    wire: Arc<Mutex<Vec<Value>>>,
    tee: JoinHandle<()>,
}

/// One answer of the direct server: as sent on the wire, and as rmcp's typed model re-serialises it.
struct Answer {
    wire: Value,
    typed: Value,
}

impl Direct {
    async fn start() -> Direct {
        let entry = peers_dir()
            .join("node_modules")
            .join("@modelcontextprotocol/server-everything/dist/index.js");
        assert!(
            entry.is_file(),
            "{} does not exist: install the test peers with `bash tests/run.sh` (it runs `npm ci` in tests/peers)",
            entry.display()
        );
        let mut child = tokio::process::Command::new("node")
            .arg(&entry)
            .arg("stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn `node` (install Node.js, then `bash tests/run.sh`)");
        let stdout = child.stdout.take().expect("the child's stdout is piped");
        let stdin = child.stdin.take().expect("the child's stdin is piped");
        let wire = Arc::new(Mutex::new(Vec::new()));
        let (mut to_rmcp, rmcp_reads) = tokio::io::duplex(1 << 20);
        let recorded = Arc::clone(&wire);
        let tee = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(message) = serde_json::from_str::<Value>(&line) {
                    recorded.lock().unwrap_or_else(PoisonError::into_inner).push(message);
                }
                if to_rmcp.write_all(line.as_bytes()).await.is_err() || to_rmcp.write_all(b"\n").await.is_err() {
                    break;
                }
            }
        });
        // The same capabilities as corrald's own client (elicitation in both
        // modes and sampling; no roots unless configured): server-everything
        // offers some tools only to clients declaring them.
        let mut capabilities = ClientCapabilities::default();
        let mut elicitation = ElicitationCapability::default();
        elicitation.form = Some(FormElicitationCapability::default());
        elicitation.url = Some(UrlElicitationCapability::default());
        capabilities.elicitation = Some(elicitation);
        capabilities.sampling = Some(SamplingCapability::default());
        let config = ClientConfig::new(capabilities, Implementation::new("corral-passthrough-test", "0"));
        let client = within_for(
            SERVER_WAIT,
            "`initialize` of a direct server-everything",
            config.serve((rmcp_reads, stdin)),
        )
        .await
        .expect("initialize a direct server-everything");
        Direct {
            client: Some(client),
            child,
            wire,
            tee,
        }
    }

    fn client(&self) -> &RunningService<RoleClient, ClientConfig> {
        self.client.as_ref().expect("the client runs until `stop`")
    }

    /// Run one request; returns the `result` of the one response the server sent meanwhile.
    async fn ask<T, F>(&self, what: &str, request: F) -> Answer
    where
        T: Serialize,
        F: Future<Output = Result<T, ServiceError>>,
    {
        let before = self.wire.lock().unwrap_or_else(PoisonError::into_inner).len();
        let typed = within_for(CALL_WAIT, what, request)
            .await
            .unwrap_or_else(|error| panic!("{what} (direct): {error}"));
        let wire = self.wire.lock().unwrap_or_else(PoisonError::into_inner);
        let responses: Vec<&Value> = wire[before..]
            .iter()
            .filter(|message| message.get("id").is_some() && message.get("method").is_none())
            .collect();
        assert_eq!(
            responses.len(),
            1,
            "{what}: one response on the wire, got {responses:#?}"
        );
        Answer {
            wire: responses[0]
                .get("result")
                .cloned()
                .unwrap_or_else(|| panic!("{what}: not a result: {}", responses[0])),
            typed: serde_json::to_value(typed).expect("serialize rmcp's result"),
        }
    }

    async fn tools_list(&self) -> Answer {
        self.ask("tools/list", self.client().list_tools(None)).await
    }

    async fn tools_call(&self, name: &str, arguments: &Value) -> Answer {
        let mut request = CallToolRequestParams::new(name.to_owned());
        request.arguments = object(arguments);
        let what = format!("tools/call of {name}");
        self.ask(&what, async {
            match self.client().call_tool_once(request).await? {
                CallToolResponse::Complete(result) => Ok(result),
                _ => Err(ServiceError::UnexpectedResponse),
            }
        })
        .await
    }

    async fn resources_list(&self) -> Answer {
        self.ask("resources/list", self.client().list_resources(None)).await
    }

    async fn resource_templates_list(&self) -> Answer {
        self.ask("resources/templates/list", self.client().list_resource_templates(None))
            .await
    }

    async fn resources_read(&self, uri: &str) -> Answer {
        self.ask(
            &format!("resources/read of {uri}"),
            self.client().read_resource(ReadResourceRequestParams::new(uri)),
        )
        .await
    }

    async fn prompts_list(&self) -> Answer {
        self.ask("prompts/list", self.client().list_prompts(None)).await
    }

    async fn prompts_get(&self, name: &str, arguments: &Value) -> Answer {
        let mut request = GetPromptRequestParams::new(name.to_owned());
        request.arguments = object(arguments);
        let what = format!("prompts/get of {name}");
        self.ask(&what, async {
            match self.client().get_prompt_once(request).await? {
                GetPromptResponse::Complete(result) => Ok(result),
                _ => Err(ServiceError::UnexpectedResponse),
            }
        })
        .await
    }

    /// Close the client (closing the server's stdin), then kill the server and reap it.
    async fn stop(mut self) {
        if let Some(client) = self.client.take() {
            within("closing the direct rmcp client", client.cancel())
                .await
                .expect("the direct rmcp client stops");
        }
        // kill() is SIGKILL then wait: bounded by the kernel, not by the server.
        within("the direct server-everything to be killed", self.child.kill())
            .await
            .expect("kill the direct server-everything");
        within("the stdout tee to end", &mut self.tee)
            .await
            .expect("the tee task ends cleanly");
    }
}

fn object(value: &Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map.clone()),
        Value::Null => None,
        other => panic!("arguments must be an object: {other}"),
    }
}

// ---------------------------------------------------------------------------
// Comparing

/// JSON paths (`/a/0/b`) at which `a` and `b` differ, as deep as both have the same shape.
fn differing_paths(a: &Value, b: &Value, path: &str, out: &mut BTreeSet<String>) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (a.get(key), b.get(key)) {
                    (Some(a), Some(b)) => differing_paths(a, b, &child, out),
                    _ => {
                        out.insert(child);
                    }
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (index, (a, b)) in a.iter().zip(b).enumerate() {
                differing_paths(a, b, &format!("{path}/{index}"), out);
            }
        }
        _ if a == b => {}
        _ => {
            out.insert(path.to_owned());
        }
    }
}

/// Whether `path` is at or below one of `volatile`.
fn is_volatile(path: &str, volatile: &BTreeSet<String>) -> bool {
    volatile
        .iter()
        .any(|v| path == v || path.strip_prefix(v.as_str()).is_some_and(|rest| rest.starts_with('/')))
}

/// The paths at which two direct answers differ.
fn volatile_paths(first: &Answer, second: &Answer) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    differing_paths(&first.wire, &second.wire, "", &mut paths);
    paths
}

/// Wait (bounded) until the wall clock's second has changed.
async fn next_wall_clock_second() {
    let second = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs()
    };
    let now = second();
    poll_until("the next wall-clock second", || async {
        (second() != now).then_some(())
    })
    .await;
}

/// A difference found between the direct server and corrald.
struct Difference {
    what: String,
    path: String,
    direct: Option<Value>,
    corral: Option<Value>,
    corral_equals_rmcp_typed: bool,
}

/// Collects differences so that one run reports all of them.
#[derive(Default)]
struct Report {
    differences: Vec<Difference>,
    volatile: Vec<(String, BTreeSet<String>)>,
    compared: usize,
}

impl Report {
    /// Compare corrald's `corral` with the direct answer `first`, excluding
    /// the paths that differ between two direct instances: `ask_second` asks
    /// the second instance. If corrald differs in a path that the two direct
    /// answers share, the second instance is asked again in a later
    /// wall-clock second, since server-everything puts the time of day (to
    /// the second) in some answers, which two quick calls may share.
    async fn compare<F, Fut>(&mut self, what: &str, first: &Answer, corral: &Value, ask_second: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Answer>,
    {
        self.compared += 1;
        let mut differences = BTreeSet::new();
        differing_paths(&first.wire, corral, "", &mut differences);
        if differences.is_empty() {
            return;
        }
        let mut volatile = volatile_paths(first, &ask_second().await);
        if differences.iter().any(|path| !is_volatile(path, &volatile)) {
            next_wall_clock_second().await;
            volatile = volatile_paths(first, &ask_second().await);
        }
        if !volatile.is_empty() {
            self.volatile.push((what.to_owned(), volatile.clone()));
        }
        for path in differences.into_iter().filter(|path| !is_volatile(path, &volatile)) {
            let corral_equals_rmcp_typed = first.typed.pointer(&path) == corral.pointer(&path);
            self.differences.push(Difference {
                what: what.to_owned(),
                direct: first.wire.pointer(&path).cloned(),
                corral: corral.pointer(&path).cloned(),
                corral_equals_rmcp_typed,
                path,
            });
        }
    }

    fn assert_none(self) {
        eprintln!(
            "compared {} answers; fields differing between two direct instances (excluded): {:?}",
            self.compared, self.volatile
        );
        let show = |value: &Option<Value>| value.as_ref().map_or_else(|| "<absent>".to_owned(), Value::to_string);
        let lines: Vec<String> = self
            .differences
            .iter()
            .map(|d| {
                format!(
                    "{} at {}: the server sent {}, corrald returned {}{}",
                    d.what,
                    d.path,
                    show(&d.direct),
                    show(&d.corral),
                    if d.corral_equals_rmcp_typed {
                        " (= rmcp's typed model re-serialised)"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        assert!(
            lines.is_empty(),
            "corrald's answers differ from server-everything's own ({} differences):\n{}",
            lines.len(),
            lines.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------
// Setup

async fn ready_daemon() -> (TestDaemon, Client) {
    let daemon = TestDaemon::start_with_config(&everything_config(SERVER));
    let client = daemon.connect_client().await;
    wait_for_status(&client, SERVER, ServerStatus::Ready, SERVER_WAIT).await;
    (daemon, client)
}

/// corrald and two direct instances, started concurrently.
async fn start_all() -> ((TestDaemon, Client), Direct, Direct) {
    tokio::join!(
        Box::pin(ready_daemon()),
        Box::pin(Direct::start()),
        Box::pin(Direct::start())
    )
}

/// The `item`s of a corrald listing, failing on a listing error of the server.
fn items(listing: &corral_client::protocol::ListResult) -> Vec<Value> {
    assert!(listing.errors.is_empty(), "listing errors: {:?}", listing.errors);
    assert!(listing.not_ready.is_empty(), "not ready: {:?}", listing.not_ready);
    listing
        .items
        .iter()
        .map(|item| {
            assert_eq!(item.server, SERVER);
            item.item.clone()
        })
        .collect()
}

/// `list[key]` of a direct listing.
fn direct_items(answer: &Answer, key: &str) -> Answer {
    assert!(answer.wire[key].is_array(), "no `{key}` array in {}", answer.wire);
    Answer {
        wire: answer.wire[key].clone(),
        typed: answer.typed[key].clone(),
    }
}

/// A list of named objects as one object keyed by name, so that paths name the item.
fn by_name(list: &Value) -> Value {
    let list = list.as_array().unwrap_or_else(|| panic!("not a list: {list}"));
    let mut map = Map::new();
    for item in list {
        let name = item["name"].as_str().unwrap_or_else(|| panic!("no name in {item}"));
        assert!(
            map.insert(name.to_owned(), item.clone()).is_none(),
            "{name} listed twice"
        );
    }
    Value::Object(map)
}

/// The tools of a direct `tools/list`, keyed by name.
fn direct_tools(answer: &Answer) -> Answer {
    let tools = direct_items(answer, "tools");
    Answer {
        wire: by_name(&tools.wire),
        typed: by_name(&tools.typed),
    }
}

/// Fail unless `arguments` fits `tool`'s `inputSchema`: known properties, all required ones present.
fn assert_valid_arguments(tool: &Value, arguments: &Value) {
    let name = &tool["name"];
    let schema = &tool["inputSchema"];
    let properties = schema["properties"].as_object().cloned().unwrap_or_default();
    for key in arguments.as_object().expect("arguments are an object").keys() {
        assert!(properties.contains_key(key), "{name} has no argument `{key}`: {schema}");
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let required = required.as_str().expect("required names are strings");
        assert!(
            arguments.get(required).is_some(),
            "{name} requires `{required}`: {schema}"
        );
    }
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn tools_list_and_tools_call_pass_the_servers_json_through_unchanged() {
    let ((_daemon, client), first, second) = start_all().await;
    let mut report = Report::default();

    // tools/list: every tool object, matched by name; and the server's order.
    let direct = first.tools_list().await;
    let listing = within("tools/list through corrald", client.tools_list(Some(SERVER)))
        .await
        .expect("tools/list through corrald");
    assert!(listing.not_ready.is_empty(), "{:?}", listing.not_ready);
    let direct_list = direct.wire["tools"].as_array().expect("direct tools").clone();
    let direct_names: Vec<&str> = direct_list.iter().filter_map(|tool| tool["name"].as_str()).collect();
    let corral_names: Vec<&str> = listing.tools.iter().filter_map(|tool| tool.name()).collect();
    assert_eq!(corral_names, direct_names, "the same tools, in the server's order");
    assert!(listing.tools.iter().all(|tool| tool.server == SERVER));
    let corral_tools = by_name(&Value::Array(
        listing.tools.iter().map(|tool| tool.tool.clone()).collect(),
    ));
    report
        .compare("tools/list tools", &direct_tools(&direct), &corral_tools, || async {
            direct_tools(&second.tools_list().await)
        })
        .await;

    // tools/call, with arguments checked against each tool's inputSchema.
    let calls = [
        ("echo", json!({"message": "hello passthrough"})),
        ("get-sum", json!({"a": 2, "b": 3.5})),
        ("get-structured-content", json!({"location": "Chicago"})),
        ("get-tiny-image", json!({})),
        (
            "get-annotated-message",
            json!({"messageType": "success", "includeImage": true}),
        ),
        ("get-annotated-message", json!({"messageType": "error"})),
        ("get-annotated-message", json!({"messageType": "debug"})),
        ("get-resource-links", json!({"count": 4})),
        (
            "get-resource-reference",
            json!({"resourceType": "Text", "resourceId": 2}),
        ),
        (
            "get-resource-reference",
            json!({"resourceType": "Blob", "resourceId": 3}),
        ),
    ];
    let mut seen_kinds = BTreeSet::new();
    let mut seen_structured = false;
    for (name, arguments) in &calls {
        let Some(tool) = direct_list.iter().find(|tool| tool["name"] == *name) else {
            assert_eq!(*name, "get-tiny-image", "{name} is not listed: {direct_names:?}");
            continue;
        };
        assert_valid_arguments(tool, arguments);
        let what = format!("tools/call {name} {arguments}");
        let direct = first.tools_call(name, arguments).await;
        let corral = within_for(
            CALL_WAIT,
            &what,
            client.tools_call(SERVER, *name, object(arguments), CALL_WAIT),
        )
        .await
        .unwrap_or_else(|error| panic!("{what} through corrald: {error}"));
        for content in direct.wire["content"].as_array().into_iter().flatten() {
            seen_kinds.insert(content["type"].as_str().unwrap_or("?").to_owned());
        }
        seen_structured |= direct.wire.get("structuredContent").is_some();
        report
            .compare(&what, &direct, &corral, || second.tools_call(name, arguments))
            .await;
    }
    // The comparisons covered the content kinds they are meant to cover.
    for kind in ["text", "image", "resource_link", "resource"] {
        assert!(seen_kinds.contains(kind), "no `{kind}` content among {seen_kinds:?}");
    }
    assert!(seen_structured, "no structuredContent compared");

    first.stop().await;
    second.stop().await;
    report.assert_none();
}

#[tokio::test]
async fn resources_pass_the_servers_json_through_unchanged() {
    let ((_daemon, client), first, second) = start_all().await;
    let mut report = Report::default();

    // resources/list: every item, in order.
    let direct = direct_items(&first.resources_list().await, "resources");
    let listing = within("resources/list through corrald", client.resources_list(Some(SERVER)))
        .await
        .expect("resources/list through corrald");
    let resources = Value::Array(items(&listing));
    assert!(
        resources.as_array().is_some_and(|list| !list.is_empty()),
        "server-everything lists resources"
    );
    report
        .compare("resources/list items", &direct, &resources, || async {
            direct_items(&second.resources_list().await, "resources")
        })
        .await;

    // resources/templates/list: every item, in order.
    let direct_templates = direct_items(&first.resource_templates_list().await, "resourceTemplates");
    let templates = within(
        "resources/templates/list through corrald",
        client.resource_templates_list(Some(SERVER)),
    )
    .await
    .expect("resources/templates/list through corrald");
    report
        .compare(
            "resources/templates/list items",
            &direct_templates,
            &Value::Array(items(&templates)),
            || async { direct_items(&second.resource_templates_list().await, "resourceTemplates") },
        )
        .await;

    // resources/read: the first listed resource (text), and a text and a blob
    // resource from the templates (the static list has no blob).
    let listed_uri = resources[0]["uri"].as_str().expect("a resource has a uri").to_owned();
    let template_uri = |name_part: &str| {
        let template = direct_templates
            .wire
            .as_array()
            .and_then(|list| {
                list.iter()
                    .find(|t| t["uriTemplate"].as_str().is_some_and(|u| u.contains(name_part)))
            })
            .unwrap_or_else(|| panic!("a `{name_part}` template in {}", direct_templates.wire));
        template["uriTemplate"]
            .as_str()
            .expect("uriTemplate")
            .replace("{resourceId}", "7")
    };
    let uris = [listed_uri, template_uri("/text/"), template_uri("/blob/")];
    let mut saw = (false, false);
    for uri in &uris {
        let what = format!("resources/read {uri}");
        let direct = first.resources_read(uri).await;
        let corral = within(&what, client.resources_read(SERVER, uri.as_str()))
            .await
            .unwrap_or_else(|error| panic!("{what} through corrald: {error}"));
        let contents = direct.wire["contents"].as_array().cloned().unwrap_or_default();
        saw.0 |= contents.iter().any(|c| c.get("text").is_some());
        saw.1 |= contents.iter().any(|c| c.get("blob").is_some());
        report
            .compare(&what, &direct, &corral, || second.resources_read(uri))
            .await;
    }
    assert_eq!(saw, (true, true), "read a text and a blob resource: {uris:?}");

    first.stop().await;
    second.stop().await;
    report.assert_none();
}

#[tokio::test]
async fn prompts_pass_the_servers_json_through_unchanged() {
    let ((_daemon, client), first, second) = start_all().await;
    let mut report = Report::default();

    let direct = direct_items(&first.prompts_list().await, "prompts");
    let listing = within("prompts/list through corrald", client.prompts_list(Some(SERVER)))
        .await
        .expect("prompts/list through corrald");
    report
        .compare(
            "prompts/list items",
            &direct,
            &Value::Array(items(&listing)),
            || async { direct_items(&second.prompts_list().await, "prompts") },
        )
        .await;

    let gets = [
        ("simple-prompt", Value::Null),
        ("args-prompt", json!({"city": "Chicago", "state": "IL"})),
        ("args-prompt", json!({"city": "Lisbon"})),
        ("resource-prompt", json!({"resourceType": "Text", "resourceId": "2"})),
    ];
    for (name, arguments) in &gets {
        let what = format!("prompts/get {name} {arguments}");
        let direct = first.prompts_get(name, arguments).await;
        let corral = within(&what, client.prompts_get(SERVER, *name, object(arguments)))
            .await
            .unwrap_or_else(|error| panic!("{what} through corrald: {error}"));
        report
            .compare(&what, &direct, &corral, || second.prompts_get(name, arguments))
            .await;
    }

    first.stop().await;
    second.stop().await;
    report.assert_none();
}
