//! A structure-aware fuzzer over the daemon's socket, for a bounded number of cases.
//!
//! Messages are generated from the protocol's shape — every method the daemon serves, plus unknown
//! ones; params of the right shape with wrong values, of the wrong shape, or missing; ids of every
//! JSON type; notifications, stray responses, `$/cancelRequest`s of live and unknown ids, batches —
//! and sent in both framings on many connections. Two kinds of connection:
//!
//! - **clean**: every message is well-framed JSON. Oracle: every request with a valid id gets exactly
//!   one response with that id, nothing is answered twice, and notifications get no answer.
//! - **dirty**: the same messages with byte-level mutations (flipped, dropped, inserted bytes, cut
//!   frames, invalid UTF-8, framing switched mid-stream). Oracle: whatever the daemon does to that
//!   connection (errors, a close), it keeps serving the others.
//!
//! After every round a connection opened before the fuzzing must still answer `daemon/status`, and
//! at the end the daemon is alive, its memory bounded, and nothing it was asked to add is running.
//!
//! The run is deterministic for a seed: `CORRAL_FUZZ_SEED` (default fixed) and
//! `CORRAL_FUZZ_CASES` (messages; default [`DEFAULT_CASES`]). A failure prints the seed and the
//! connection's messages so it can be replayed. The counts of a run are in `docs/benchmarks.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use corral_tests::{RawConnection, RecvError, TestDaemon, WAIT, WireFraming};
use serde_json::{Map, Value, json};

/// Messages sent in a default run (clean and dirty together).
const DEFAULT_CASES: usize = 6_000;
/// Default seed, so that CI runs the same cases every time; set `CORRAL_FUZZ_SEED` to explore.
const DEFAULT_SEED: u64 = 0x00c0_44a1_f022_2026;
/// Messages on one connection, at most.
const MAX_MESSAGES_PER_CONNECTION: usize = 40;
/// Resident memory the daemon may reach during the run (KiB): generous for a debug build, far
/// below what an unbounded buffer or queue would reach.
const MAX_RSS_KIB: u64 = 256 * 1024;

/// splitmix64: small, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Every method a front-end may call, and a few it may not.
const METHODS: &[&str] = &[
    "initialize",
    "daemon/status",
    "mcpServer/list",
    "mcpServer/get",
    "mcpServer/start",
    "mcpServer/stop",
    "mcpServer/restart",
    "mcpServer/add",
    "mcpServer/remove",
    "mcpServer/oauthLogin",
    "mcpServer/logout",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "events/replay",
    "config/reload",
    "debug/wedgeSupervisor",
    "shutdown",
    "",
    "rpc.on",
    "mcpServer/startupStatus/updated",
];

/// Names a request may carry: the built-in server, servers the fuzzer adds, and junk.
const SERVER_NAMES: &[&str] = &["corral", "fuzz-a", "fuzz-b", "missing", "", "a/b", "\u{0}", "ünïcode"];

fn random_string(rng: &mut Rng) -> Value {
    let pieces: [&str; 12] = [
        "",
        "a",
        "corral",
        "\u{0}",
        "é",
        "\"",
        "\\",
        "\n",
        "{}",
        "ab\u{7f}c",
        "🦀",
        "-1",
    ];
    let mut text = String::new();
    for _ in 0..rng.below(4) {
        let piece = *rng.pick::<&str>(&pieces);
        text.push_str(piece);
    }
    if rng.chance(3) {
        text.push_str(&"x".repeat(rng.below(70_000)));
    }
    Value::from(text)
}

fn random_number(rng: &mut Rng) -> Value {
    match rng.below(7) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(i64::MIN),
        4 => json!(1.5e300),
        5 => json!(-0.0),
        _ => json!(rng.below(1_000)),
    }
}

/// Any JSON value, nested up to `depth`.
fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let kinds = if depth == 0 { 4 } else { 6 };
    match rng.below(kinds) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(50)),
        2 => random_number(rng),
        3 => random_string(rng),
        4 => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth - 1)).collect()),
        _ => {
            let keys = [
                "name",
                "server",
                "tool",
                "arguments",
                "uri",
                "cursor",
                "afterSeq",
                "id",
                "x",
                "_meta",
            ];
            let mut object = Map::new();
            for _ in 0..rng.below(4) {
                object.insert(rng.pick(&keys).to_string(), random_value(rng, depth - 1));
            }
            Value::Object(object)
        }
    }
}

/// The server entry of an `mcpServer/add`: always a program that does not exist or a loopback URL
/// nothing listens on (the fuzzer must not start real programs or reach other hosts), with the
/// other fields fuzzed.
fn server_entry(rng: &mut Rng) -> Value {
    let mut entry = Map::new();
    if rng.chance(70) {
        entry.insert("command".into(), json!("/nonexistent/corral-fuzz-server"));
    } else {
        entry.insert("url".into(), json!("http://127.0.0.1:9/mcp"));
    }
    let fields = [
        "args",
        "env",
        "enabled",
        "startup_timeout_sec",
        "tool_timeout_sec",
        "roots",
        "transport",
        "typo",
    ];
    for _ in 0..rng.below(3) {
        entry.insert(rng.pick(&fields).to_string(), random_value(rng, 2));
    }
    Value::Object(entry)
}

/// Params of the method's own shape (with fuzzed values), or anything else.
fn params_for(rng: &mut Rng, method: &str) -> Option<Value> {
    if rng.chance(15) {
        return if rng.chance(30) {
            None
        } else {
            Some(random_value(rng, 3))
        };
    }
    let name = Value::from(*rng.pick(SERVER_NAMES));
    Some(match method {
        "initialize" => json!({
            "protocolVersion": if rng.chance(80) { json!(1) } else { random_number(rng) },
            "clientInfo": {"name": "fuzz", "version": "0"},
            "capabilities": if rng.chance(50) { json!({}) } else { random_value(rng, 2) },
        }),
        "mcpServer/add" => json!({"name": name, "config": server_entry(rng)}),
        "tools/call" => json!({
            "server": name,
            "tool": rng.pick(&["list_servers", "server_status", "recent_events", "nope"]),
            "arguments": random_value(rng, 2),
        }),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            json!({"server": name, "uri": random_string(rng)})
        }
        "prompts/get" => json!({"server": name, "name": random_string(rng), "arguments": random_value(rng, 1)}),
        "events/replay" => json!({"afterSeq": random_number(rng)}),
        "tools/list" | "resources/list" | "resources/templates/list" | "prompts/list" => {
            if rng.chance(50) {
                json!({})
            } else {
                json!({"server": name})
            }
        }
        "daemon/status" | "mcpServer/list" | "config/reload" => json!({}),
        _ => json!({"name": name}),
    })
}

fn random_id(rng: &mut Rng, next_id: &mut u64) -> Value {
    *next_id += 1;
    match rng.below(10) {
        0 => Value::from(format!("s-{next_id}")),
        1 => Value::Null,
        2 => json!(1.25),
        3 => json!({"id": *next_id}),
        4 => json!([*next_id]),
        _ => json!(*next_id),
    }
}

/// Whether a request id is one JSON-RPC allows (and so one the daemon must answer under).
fn is_valid_id(id: &Value) -> bool {
    id.is_string() || id.as_u64().is_some() || id.as_i64().is_some()
}

/// One message: a request, a notification, a stray response or a cancellation.
fn random_message(rng: &mut Rng, next_id: &mut u64, sent_ids: &[Value]) -> Value {
    match rng.below(20) {
        0 => json!({"jsonrpc": "2.0", "method": rng.pick(METHODS), "params": random_value(rng, 2)}),
        1 => json!({"jsonrpc": "2.0", "id": random_id(rng, next_id), "result": random_value(rng, 2)}),
        2 => json!({"jsonrpc": "2.0", "id": random_id(rng, next_id), "error": {"code": -1, "message": "x"}}),
        3 => {
            let id = if sent_ids.is_empty() || rng.chance(30) {
                random_value(rng, 1)
            } else {
                rng.pick(sent_ids).clone()
            };
            let method = if rng.chance(50) {
                "$/cancelRequest"
            } else {
                "notifications/cancelled"
            };
            let key = if method == "$/cancelRequest" { "id" } else { "requestId" };
            json!({"jsonrpc": "2.0", "method": method, "params": {key: id}})
        }
        4 => {
            // The envelope itself is wrong.
            let mut message = Map::new();
            for key in ["jsonrpc", "id", "method", "params", "result"] {
                if rng.chance(50) {
                    message.insert(key.into(), random_value(rng, 1));
                }
            }
            Value::Object(message)
        }
        _ => {
            let method = *rng.pick(METHODS);
            let mut message = json!({"jsonrpc": "2.0", "id": random_id(rng, next_id), "method": method});
            if let Some(params) = params_for(rng, method) {
                message["params"] = params;
            }
            message
        }
    }
}

/// The entries of `message` (a batch counts each) that are not responses.
fn non_responses(message: &Value) -> Vec<&Value> {
    let entries = match message {
        Value::Array(entries) => entries.iter().collect(),
        other => vec![other],
    };
    entries
        .into_iter()
        .filter(|entry| entry.get("result").is_none() && entry.get("error").is_none())
        .collect()
}

/// Ids of the well-formed requests in `message` (a batch counts its entries): each must be
/// answered exactly once.
fn answerable_ids(message: &Value) -> Vec<Value> {
    non_responses(message)
        .into_iter()
        .filter(|entry| {
            entry.get("method").is_some_and(Value::is_string) && entry.get("jsonrpc") == Some(&json!("2.0"))
        })
        .filter_map(|entry| entry.get("id").filter(|id| is_valid_id(id)).cloned())
        .collect()
}

/// Ids the daemon may answer under: any valid id a message of the connection carried (a
/// malformed message it can still read an id from is answered with an `invalidRequest` error
/// under that id, which may repeat).
fn echoable_ids(message: &Value) -> Vec<Value> {
    let entries = match message {
        Value::Array(entries) => entries.iter().collect(),
        other => vec![other],
    };
    entries
        .into_iter()
        .filter_map(|entry| entry.get("id").filter(|id| is_valid_id(id)).cloned())
        .collect()
}

/// Byte-level damage to an encoded frame.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..=rng.below(3) {
        if bytes.is_empty() {
            bytes.push(b'{');
        }
        let at = rng.below(bytes.len());
        match rng.below(6) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => {
                bytes.remove(at);
            }
            2 => bytes.insert(at, *rng.pick(&[b'\n', b'\r', 0, 0xff, 0xc3, b'"', b'{', b']'])),
            3 => bytes.truncate(at),
            4 => bytes
                .splice(at..at, b"Content-Length: 12\r\n\r\n".iter().copied())
                .for_each(drop),
            _ => bytes.extend_from_slice(&[0xf0, 0x9f, 0x80]),
        }
    }
}

/// At most 300 characters of `text`, for failure messages (fuzzed strings can be long).
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

/// What one connection saw, for the failure message.
struct Transcript {
    seed: u64,
    connection: usize,
    framing: WireFraming,
    sent: Vec<String>,
}

impl Transcript {
    fn describe(&self) -> String {
        let sent: Vec<String> = self.sent.iter().map(|message| shorten(message)).collect();
        format!(
            "seed {:#x}, connection {}, {:?} framing, sent:\n  {}",
            self.seed,
            self.connection,
            self.framing,
            sent.join("\n  ")
        )
    }
}

/// Reads until every expected id is answered; fails on a duplicate or unexpected answer.
async fn collect_answers(
    connection: &mut RawConnection,
    expected: &BTreeSet<String>,
    allowed: &BTreeSet<String>,
    transcript: &Transcript,
) -> Result<(), String> {
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !expected.iter().all(|id| answered.contains_key(id)) {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = match connection.try_recv(remaining).await {
            Ok(message) => message,
            Err(error) => {
                return Err(format!(
                    "waiting for {} answers ({} came, unanswered: {:?}): {error:?}\n{}",
                    expected.len(),
                    expected.iter().filter(|id| answered.contains_key(*id)).count(),
                    expected
                        .iter()
                        .filter(|id| !answered.contains_key(*id))
                        .map(|id| shorten(id))
                        .collect::<Vec<_>>(),
                    transcript.describe()
                ));
            }
        };
        let responses = match message {
            Value::Array(entries) => entries,
            other => vec![other],
        };
        for response in responses {
            if response.get("method").is_some() {
                continue; // a notification (status updates of added servers, events)
            }
            let id = response.get("id").cloned().unwrap_or(Value::Null);
            if id.is_null() {
                continue; // an error about a message without a usable id
            }
            let key = id.to_string();
            let shown = shorten(&response.to_string());
            assert!(
                allowed.contains(&key),
                "an answer to an id no request of this connection carried: {shown}\n{}",
                transcript.describe()
            );
            let count = answered.entry(key.clone()).or_default();
            *count += 1;
            if expected.contains(&key) {
                assert_eq!(
                    *count,
                    1,
                    "a request was answered twice: {shown}\n{}",
                    transcript.describe()
                );
            }
            assert!(
                response.get("result").is_some() != response.get("error").is_some(),
                "a response must carry exactly one of result and error: {shown}\n{}",
                transcript.describe()
            );
        }
    }
    Ok(())
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| {
            let value = value.trim();
            value
                .strip_prefix("0x")
                .map_or_else(|| value.parse().ok(), |hex| u64::from_str_radix(hex, 16).ok())
        })
        .unwrap_or(default)
}

#[tokio::test]
async fn fuzzed_frames_get_one_answer_each_and_never_hurt_other_connections() {
    let seed = env_number("CORRAL_FUZZ_SEED", DEFAULT_SEED);
    let cases = env_number("CORRAL_FUZZ_CASES", DEFAULT_CASES as u64) as usize;
    let mut rng = Rng(seed);
    // As a user runs it: the built-in server on, test hooks off (`debug/*` must be unknown methods).
    let mut daemon = TestDaemon::builder().builtin_server(true).test_hooks(false).start();
    let mut healthy = daemon.raw_line_connection().await;
    healthy.initialize().await;

    let mut sent_total = 0;
    let mut clean_requests = 0;
    let mut dirty_connections = 0;
    let mut closed_by_daemon = 0;
    let mut next_id = 0u64;
    let mut connection_index = 0;
    while sent_total < cases {
        connection_index += 1;
        let framing = if rng.chance(50) {
            WireFraming::Lines
        } else {
            WireFraming::ContentLength
        };
        let dirty = rng.chance(35);
        let mut connection = RawConnection::connect(daemon.socket_path(), framing).await;
        let mut transcript = Transcript {
            seed,
            connection: connection_index,
            framing,
            sent: Vec::new(),
        };
        if !dirty || rng.chance(50) {
            connection.initialize().await;
        }
        let count = 1 + rng.below(MAX_MESSAGES_PER_CONNECTION);
        let mut expected = BTreeSet::new();
        let mut allowed = BTreeSet::new();
        let mut sent_ids = Vec::new();
        for _ in 0..count {
            let message = if rng.chance(8) {
                let entries = 1 + rng.below(5);
                Value::Array(
                    (0..entries)
                        .map(|_| random_message(&mut rng, &mut next_id, &sent_ids))
                        .collect(),
                )
            } else {
                random_message(&mut rng, &mut next_id, &sent_ids)
            };
            let text = message.to_string();
            let mut bytes = framing.encode(text.as_bytes());
            if dirty {
                mutate(&mut rng, &mut bytes);
            } else {
                allowed.extend(echoable_ids(&message).iter().map(Value::to_string));
                for id in answerable_ids(&message) {
                    // An id reused on one connection is the front-end's mistake; keep clean ones unique.
                    assert!(expected.insert(id.to_string()), "the generator reused id {id}");
                    sent_ids.push(id);
                }
            }
            transcript.sent.push(text);
            sent_total += 1;
            if connection.try_send_raw(&bytes).await.is_err() {
                assert!(
                    dirty,
                    "the daemon stopped reading a clean connection\n{}",
                    transcript.describe()
                );
                break;
            }
        }
        if dirty {
            dirty_connections += 1;
            // Drain whatever comes until the daemon closes or goes quiet; it must not hang the test.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            loop {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                match connection.try_recv(remaining.min(Duration::from_millis(200))).await {
                    Ok(_) | Err(RecvError::BadFrame(_)) => {}
                    Err(RecvError::Closed | RecvError::Io(_)) => {
                        closed_by_daemon += 1;
                        break;
                    }
                    Err(RecvError::Timeout) => break,
                }
                if remaining.is_zero() {
                    break;
                }
            }
        } else {
            clean_requests += expected.len();
            let answers = collect_answers(&mut connection, &expected, &allowed, &transcript);
            if let Err(failure) = tokio::time::timeout(WAIT * 2, answers)
                .await
                .map_err(|_| "timed out".to_owned())
                .and_then(|r| r)
            {
                let log = daemon.stderr();
                let tail: Vec<&str> = log
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                panic!("{failure}\ncorrald's log (last lines):\n{}", tail.join("\n"));
            }
        }
        drop(connection);
        let status = healthy.call("daemon/status", json!({})).await;
        assert_eq!(
            status["daemonInfo"]["pid"],
            daemon.pid(),
            "the healthy connection stopped answering\n{}",
            transcript.describe()
        );
        daemon.assert_running();
    }

    let peak = daemon.peak_rss_kib();
    eprintln!(
        "fuzz: seed {seed:#x}: {sent_total} messages on {connection_index} connections \
         ({dirty_connections} dirty, {closed_by_daemon} closed by the daemon), \
         {clean_requests} clean requests each answered once; peak RSS {peak} KiB"
    );
    assert!(
        peak < MAX_RSS_KIB,
        "the daemon's peak RSS reached {peak} KiB (bound {MAX_RSS_KIB})"
    );
    // Servers the fuzzer added point at a program that does not exist: none may be running.
    let list = healthy.call("mcpServer/list", json!({})).await;
    for server in list["servers"].as_array().into_iter().flatten() {
        if server["name"] != "corral" {
            assert_ne!(
                server["status"], "ready",
                "a fuzzed server entry became ready: {server}"
            );
        }
    }
}
