//! What `corral mcp` reads of the lines it passes on, and what it remembers
//! of them to survive a daemon restart: pure, no I/O, so every rule is a
//! unit test.
//!
//! MCP over stdio is newline-delimited JSON-RPC. Each line is looked at
//! only as far as needed — its `method` and `id`, or for a batch those of
//! each entry — with serde skipping everything else, and passed on as it
//! came, byte for byte. The one exception is the client's `initialize`: it
//! is parsed whole, the options of this bridge are put into its
//! `params._meta["corral/bridge"]` (replacing a key of that name the client
//! sent itself), it is written out again (compact JSON, members in
//! serde_json's order) and kept, to be sent again to a new daemon.
//!
//! The [`Tracker`] holds:
//! - the ids of the client's requests sent to the daemon and not answered
//!   yet (a batch's entries each on their own), so that when the daemon
//!   goes away each of them gets exactly one answer, the error of
//!   [`Tracker::connection_lost`];
//! - the client's `initialize` once the daemon answered it with a result
//!   (before that there is no session to restore), and whether the client
//!   sent `notifications/initialized`;
//! - the replay in progress on a new connection: its request id, which is
//!   a string of the bridge's own (`corral-mcp/replay-N`) sent only while
//!   no request of the client is in flight on that connection, so it
//!   cannot clash; its answer is never passed to the client.
//!
//! Lines that are not JSON, or JSON that is not a JSON-RPC message, are
//! passed on untouched and tracked not at all: the daemon answers them as
//! it answers any front-end. Ids that are neither integers nor strings
//! cannot be tracked either (JSON-RPC allows nothing else that can be
//! answered).

use std::collections::BTreeSet;

use corral_client::protocol::ErrorCode;
use corral_client::protocol::jsonrpc::{
    ErrorObject, Message, NotificationMessage, RequestId, RequestMessage, ResponseMessage,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

/// The `_meta` key under which the bridge's options travel in `initialize`.
pub(crate) const META_KEY: &str = "corral/bridge";

/// What the client is told about a request the daemon took with it when it
/// went away.
pub(crate) const DAEMON_WENT_AWAY: &str =
    "corral's daemon went away during this request (it stopped or restarted); corral mcp is reconnecting: try again";

/// What the client is told about a request it sent while no daemon could be
/// reached for longer than the bridge holds requests.
pub(crate) const DAEMON_UNREACHABLE: &str = "corral's daemon is not reachable (it stopped or restarted) and corral mcp is still reconnecting: \
     try again later; corral mcp's stderr says why";

/// The notifications a client gets once its session was restored on a new daemon.
pub(crate) const LIST_CHANGED: [&str; 3] = [
    "notifications/tools/list_changed",
    "notifications/resources/list_changed",
    "notifications/prompts/list_changed",
];

/// One message, read only as far as the bridge needs.
#[derive(Debug, Deserialize)]
struct Peek<'a> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default, borrow)]
    method: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

impl Peek<'_> {
    /// The id, when it is one JSON-RPC can answer (an integer or a string).
    fn request_id(&self) -> Option<RequestId> {
        match self.id.as_ref()? {
            Value::String(id) => Some(RequestId::String(id.clone())),
            Value::Number(number) => number.as_i64().map(RequestId::Number),
            _ => None,
        }
    }
}

/// A line's messages, peeked: one for an object, each entry for a batch,
/// none for anything else.
fn peek(line: &[u8]) -> Vec<Peek<'_>> {
    let start = line.iter().position(|byte| !byte.is_ascii_whitespace());
    match start.map(|index| line[index]) {
        Some(b'{') => serde_json::from_slice::<Peek<'_>>(line)
            .map(|one| vec![one])
            .unwrap_or_default(),
        Some(b'[') => serde_json::from_slice::<Vec<Peek<'_>>>(line).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// A line from the client, ready to be sent to the daemon.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClientLine {
    /// The bytes to send: as the client wrote them, but for `initialize`.
    pub(crate) bytes: Vec<u8>,
    /// The requests in it, which the daemon owes an answer.
    pub(crate) requests: Vec<RequestId>,
    /// It is `notifications/initialized`.
    pub(crate) initialized: bool,
}

/// The client's `initialize`, as sent (options inserted).
#[derive(Debug, Clone)]
struct Initialize {
    id: RequestId,
    params: Option<Value>,
    /// The daemon answered it with a result: there is a session to restore.
    answered: bool,
}

/// The request that restores the client's session on a new connection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Replay {
    /// The `initialize` line, with the bridge's own id.
    pub(crate) initialize: Vec<u8>,
    /// `notifications/initialized`, when the client had sent it.
    pub(crate) initialized: Option<Vec<u8>>,
}

/// What to do with a line from the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DaemonLine {
    /// Pass it to the client.
    Forward,
    /// The answer to the replayed `initialize`: never passed on; `Err` holds
    /// the daemon's error message.
    ReplayAnswered(Result<(), String>),
}

/// What the bridge remembers of the conversation (see the module docs).
#[derive(Debug)]
pub(crate) struct Tracker {
    /// `_meta["corral/bridge"]` for the client's `initialize`; `None`: no option given.
    options: Option<Value>,
    in_flight: BTreeSet<RequestId>,
    initialize: Option<Initialize>,
    /// The client sent `notifications/initialized` (it is replayed).
    client_initialized: bool,
    /// `notifications/initialized` went out on the current connection.
    initialized_sent: bool,
    replay: Option<RequestId>,
    replays: u64,
}

impl Tracker {
    /// A tracker inserting `options` (the `corral/bridge` object) into the client's `initialize`.
    pub(crate) fn new(options: Option<Value>) -> Self {
        Self {
            options,
            in_flight: BTreeSet::new(),
            initialize: None,
            client_initialized: false,
            initialized_sent: false,
            replay: None,
            replays: 0,
        }
    }

    /// Look at a line the client wrote (one line, its newline included);
    /// an `initialize` gets the options and is remembered.
    pub(crate) fn client_line(&mut self, line: Vec<u8>) -> ClientLine {
        let peeked = peek(&line);
        let requests: Vec<RequestId> = peeked
            .iter()
            .filter(|message| message.method.is_some())
            .filter_map(Peek::request_id)
            .collect();
        let single = (peeked.len() == 1 && line.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{'))
            .then(|| peeked.first())
            .flatten();
        let method = single.and_then(|message| message.method.as_deref());
        let initialized =
            single.is_some_and(|message| message.id.is_none()) && method == Some("notifications/initialized");
        let initialize_id = match (method, requests.as_slice()) {
            (Some("initialize"), [id]) => Some(id.clone()),
            _ => None,
        };
        drop(peeked);
        if initialized {
            self.client_initialized = true;
        }
        let bytes = match initialize_id {
            Some(id) => self.rewrite_initialize(id, line),
            None => line,
        };
        ClientLine {
            bytes,
            requests,
            initialized,
        }
    }

    /// The options put into `initialize`, which is kept for a replay; the
    /// line as it came when it needs no change.
    fn rewrite_initialize(&mut self, id: RequestId, line: Vec<u8>) -> Vec<u8> {
        let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(&line) else {
            return line;
        };
        let changed = match message.get_mut("params") {
            Some(Value::Object(params)) => insert_options(params, self.options.as_ref()),
            _ => false,
        };
        self.initialize = Some(Initialize {
            id,
            params: message.get("params").cloned(),
            answered: false,
        });
        if !changed {
            return line;
        }
        let mut bytes = Value::Object(message).to_string().into_bytes();
        bytes.push(b'\n');
        bytes
    }

    /// `line` is about to be written to the daemon: its requests are in
    /// flight from now. `false`: do not write it (`notifications/initialized`
    /// already went out on this connection, with the replay).
    pub(crate) fn sending(&mut self, line: &ClientLine) -> bool {
        if line.initialized {
            if self.initialized_sent {
                return false;
            }
            self.initialized_sent = true;
        }
        self.in_flight.extend(line.requests.iter().cloned());
        true
    }

    /// Look at a line the daemon wrote: answers settle their requests.
    pub(crate) fn daemon_line(&mut self, line: &[u8]) -> DaemonLine {
        for message in peek(line) {
            if message.method.is_some() {
                continue;
            }
            let Some(id) = message.request_id() else {
                continue;
            };
            let succeeded = message.error.is_none();
            if self.replay.as_ref() == Some(&id) {
                self.replay = None;
                return DaemonLine::ReplayAnswered(if succeeded { Ok(()) } else { Err(error_message(line)) });
            }
            self.in_flight.remove(&id);
            if let Some(initialize) = &mut self.initialize
                && initialize.id == id
            {
                initialize.answered = succeeded;
            }
        }
        DaemonLine::Forward
    }

    /// The connection to the daemon ended: an error line for each request
    /// it took with it (they are no longer in flight).
    pub(crate) fn connection_lost(&mut self) -> Vec<Vec<u8>> {
        self.initialized_sent = false;
        self.replay = None;
        let lost = std::mem::take(&mut self.in_flight);
        lost.into_iter().map(|id| error_line(id, DAEMON_WENT_AWAY)).collect()
    }

    /// Error lines for the requests of a line that will not be sent.
    pub(crate) fn refuse(line: &ClientLine) -> Vec<Vec<u8>> {
        line.requests
            .iter()
            .map(|id| error_line(id.clone(), DAEMON_UNREACHABLE))
            .collect()
    }

    /// What restores the client's session on a new connection, if it has
    /// one: its `initialize` under an id of the bridge's own, and
    /// `notifications/initialized` if it had sent it.
    pub(crate) fn replay(&mut self) -> Option<Replay> {
        let initialize = self.initialize.as_ref().filter(|initialize| initialize.answered)?;
        self.replays += 1;
        let id = RequestId::String(format!("corral-mcp/replay-{}", self.replays));
        let request = Message::Request(RequestMessage::new(id.clone(), "initialize", initialize.params.clone()));
        self.replay = Some(id);
        let initialized = self.client_initialized.then(|| {
            self.initialized_sent = true;
            notification_line("notifications/initialized")
        });
        Some(Replay {
            initialize: line_of(&request),
            initialized,
        })
    }

    /// Requests sent and not answered yet.
    #[cfg(test)]
    fn in_flight(&self) -> Vec<RequestId> {
        self.in_flight.iter().cloned().collect()
    }
}

/// Put `options` under `_meta["corral/bridge"]` of `params`, or take a key of
/// that name out when there are no options; whether anything changed.
fn insert_options(params: &mut Map<String, Value>, options: Option<&Value>) -> bool {
    match options {
        Some(options) => {
            let meta = params.entry("_meta").or_insert_with(|| Value::Object(Map::new()));
            match meta {
                Value::Object(meta) => {
                    meta.insert(META_KEY.to_owned(), options.clone());
                    true
                }
                // Not MCP: the daemon says so; no place for the options.
                _ => false,
            }
        }
        None => match params.get_mut("_meta") {
            Some(Value::Object(meta)) => meta.remove(META_KEY).is_some(),
            _ => false,
        },
    }
}

/// The `error.message` of a failed answer, for the log.
fn error_message(line: &[u8]) -> String {
    serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|answer| answer["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "an error without a message".to_owned())
}

/// A JSON-RPC error answer to `id`, as a line.
pub(crate) fn error_line(id: RequestId, message: &str) -> Vec<u8> {
    line_of(&Message::Response(ResponseMessage::error(
        Some(id),
        ErrorObject::new(ErrorCode::InternalError.code(), message),
    )))
}

/// A notification without params, as a line.
pub(crate) fn notification_line(method: &str) -> Vec<u8> {
    line_of(&Message::Notification(NotificationMessage::new(method, None)))
}

fn line_of(message: &Message) -> Vec<u8> {
    let mut bytes = message.to_json().into_bytes();
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn line(value: &Value) -> Vec<u8> {
        let mut bytes = value.to_string().into_bytes();
        bytes.push(b'\n');
        bytes
    }

    fn parsed(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("a JSON line")
    }

    fn options() -> Value {
        json!({"servers": ["a", "b"], "separator": "."})
    }

    fn initialize(id: &Value, meta: Option<Value>) -> Value {
        let mut params = json!({"protocolVersion": "2025-06-18", "capabilities": {},
                                "clientInfo": {"name": "test", "version": "1"}});
        if let Some(meta) = meta {
            params["_meta"] = meta;
        }
        json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": params})
    }

    #[test]
    fn initialize_gets_the_options_beside_the_clients_own_meta_and_replaces_its_key() {
        let mut tracker = Tracker::new(Some(options()));
        let sent = initialize(
            &json!(1),
            Some(json!({"progressToken": 5, "corral/bridge": {"servers": ["evil"]}})),
        );
        let out = tracker.client_line(line(&sent));
        let mut expected = sent.clone();
        expected["params"]["_meta"] = json!({"progressToken": 5, "corral/bridge": options()});
        assert_eq!(parsed(&out.bytes), expected);
        assert!(out.bytes.ends_with(b"\n") && !out.bytes[..out.bytes.len() - 1].contains(&b'\n'));
        assert_eq!(out.requests, [RequestId::Number(1)]);

        let mut tracker = Tracker::new(Some(options()));
        let out = tracker.client_line(line(&initialize(&json!("init"), None)));
        assert_eq!(
            parsed(&out.bytes)["params"]["_meta"],
            json!({"corral/bridge": options()})
        );
    }

    #[test]
    fn without_options_initialize_passes_unchanged_unless_it_carries_the_key() {
        let mut tracker = Tracker::new(None);
        // Spacing and member order of the client's own are kept: the bytes are not rewritten.
        let raw = b"{\"method\": \"initialize\", \"jsonrpc\": \"2.0\", \"id\": 1, \"params\": {\"protocolVersion\": \"2025-06-18\"}}\n".to_vec();
        assert_eq!(tracker.client_line(raw.clone()).bytes, raw);
        let with_key = initialize(&json!(1), Some(json!({"corral/bridge": {"builtin": false}, "x": 1})));
        let out = tracker.client_line(line(&with_key));
        assert_eq!(parsed(&out.bytes)["params"]["_meta"], json!({"x": 1}));
    }

    #[test]
    fn other_lines_pass_byte_for_byte() {
        let mut tracker = Tracker::new(Some(options()));
        for raw in [
            &b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"name\":\"a__b\",\"arguments\":{\"x\":  1}}}\n"[..],
            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":7}}\r\n",
            b"not json at all\n",
            b"\n",
            b"[1, 2\n",
            b"{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"ping\"}\n",
        ] {
            let out = tracker.client_line(raw.to_vec());
            assert_eq!(out.bytes, raw, "{}", String::from_utf8_lossy(raw));
        }
        // An initialize inside a batch is not MCP: passed on untouched.
        let batch = format!("[{}]\n", initialize(&json!(9), None));
        assert_eq!(
            tracker.client_line(batch.clone().into_bytes()).bytes,
            batch.into_bytes()
        );
    }

    #[test]
    fn requests_are_in_flight_from_sending_until_answered_numbers_strings_and_batches() {
        let mut tracker = Tracker::new(None);
        let one = tracker.client_line(line(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})));
        let text = tracker.client_line(line(&json!({"jsonrpc": "2.0", "id": "a\"b", "method": "ping"})));
        let batch = tracker.client_line(line(&json!([
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
            {"jsonrpc": "2.0", "id": "x", "method": "ping"},
        ])));
        // A response the client gives to the daemon's own request is not in flight.
        let answer = tracker.client_line(line(&json!({"jsonrpc": "2.0", "id": 40, "result": {}})));
        assert!(answer.requests.is_empty());
        assert!(tracker.in_flight().is_empty(), "nothing before it is sent");
        for sent in [&one, &text, &batch, &answer] {
            assert!(tracker.sending(sent));
        }
        assert_eq!(
            tracker.in_flight(),
            [
                RequestId::Number(1),
                RequestId::Number(2),
                RequestId::String("a\"b".into()),
                RequestId::String("x".into())
            ]
        );
        // The daemon answers 1 and, in a batch, "x"; a notification and a request of its own
        // with a clashing id settle nothing.
        for answer in [
            json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}),
            json!([{"jsonrpc": "2.0", "id": "x", "result": {}}]),
            json!({"jsonrpc": "2.0", "id": 2, "method": "elicitation/create", "params": {}}),
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
        ] {
            assert_eq!(tracker.daemon_line(&line(&answer)), DaemonLine::Forward);
        }
        assert_eq!(
            tracker.in_flight(),
            [RequestId::Number(2), RequestId::String("a\"b".into())]
        );
        // The daemon goes away: one error each, then nothing is in flight.
        let errors: Vec<Value> = tracker.connection_lost().iter().map(|bytes| parsed(bytes)).collect();
        assert_eq!(
            errors,
            [
                json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32603, "message": DAEMON_WENT_AWAY}}),
                json!({"jsonrpc": "2.0", "id": "a\"b", "error": {"code": -32603, "message": DAEMON_WENT_AWAY}}),
            ]
        );
        assert!(tracker.connection_lost().is_empty());
    }

    #[test]
    fn a_line_never_sent_is_refused_request_by_request() {
        let mut tracker = Tracker::new(None);
        let batch = tracker.client_line(line(&json!([
            {"jsonrpc": "2.0", "id": 5, "method": "tools/list"},
            {"jsonrpc": "2.0", "id": "six", "method": "ping"},
        ])));
        let refused: Vec<Value> = Tracker::refuse(&batch).iter().map(|bytes| parsed(bytes)).collect();
        assert_eq!(
            refused,
            [
                json!({"jsonrpc": "2.0", "id": 5, "error": {"code": -32603, "message": DAEMON_UNREACHABLE}}),
                json!({"jsonrpc": "2.0", "id": "six", "error": {"code": -32603, "message": DAEMON_UNREACHABLE}}),
            ]
        );
        let notification = tracker.client_line(line(&json!({"jsonrpc": "2.0", "method": "notifications/x"})));
        assert!(Tracker::refuse(&notification).is_empty());
    }

    #[test]
    fn the_session_is_replayed_only_once_initialize_was_answered() {
        let mut tracker = Tracker::new(Some(options()));
        assert_eq!(tracker.replay(), None, "no initialize yet: nothing to replay");
        let init = tracker.client_line(line(&initialize(&json!(0), None)));
        assert!(tracker.sending(&init));
        assert_eq!(tracker.replay(), None, "not answered yet");
        // The daemon died before answering: the client gets the error, nothing is replayed.
        assert_eq!(tracker.connection_lost().len(), 1);
        assert_eq!(tracker.replay(), None);

        // Sent again and answered this time.
        let init = tracker.client_line(line(&initialize(&json!(1), None)));
        assert!(tracker.sending(&init));
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-06-18"}});
        assert_eq!(tracker.daemon_line(&line(&answer)), DaemonLine::Forward);
        let replay = tracker.replay().expect("a replay");
        let replayed = parsed(&replay.initialize);
        assert_eq!(replayed["id"], "corral-mcp/replay-1");
        assert_eq!(replayed["method"], "initialize");
        assert_eq!(
            replayed["params"],
            parsed(&init.bytes)["params"],
            "the options included"
        );
        assert_eq!(replayed["params"]["_meta"]["corral/bridge"], options());
        assert_eq!(replay.initialized, None, "the client had not sent initialized");
    }

    #[test]
    fn the_replays_answer_is_swallowed_and_initialized_goes_once_per_connection() {
        let mut tracker = Tracker::new(None);
        let init = tracker.client_line(line(&initialize(&json!(1), None)));
        tracker.sending(&init);
        tracker.daemon_line(&line(&json!({"jsonrpc": "2.0", "id": 1, "result": {}})));
        let initialized = tracker.client_line(line(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})));
        assert!(initialized.initialized);
        assert!(tracker.sending(&initialized));
        assert!(!tracker.sending(&initialized), "not twice on one connection");

        assert!(tracker.connection_lost().is_empty());
        let replay = tracker.replay().expect("a replay");
        assert_eq!(
            replay.initialized.as_deref().map(parsed),
            Some(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        );
        assert!(
            !tracker.sending(&initialized),
            "the replay sent it on this connection: a held copy is not sent again"
        );
        // A client request with the replay's id in flight cannot be confused: the replay's
        // answer is recognised by its id and never forwarded.
        assert_eq!(
            tracker.daemon_line(&line(
                &json!({"jsonrpc": "2.0", "id": "corral-mcp/replay-1", "result": {}})
            )),
            DaemonLine::ReplayAnswered(Ok(()))
        );
        assert_eq!(
            tracker.daemon_line(&line(
                &json!({"jsonrpc": "2.0", "id": "corral-mcp/replay-1", "result": {}})
            )),
            DaemonLine::Forward,
            "only the one answer is swallowed"
        );

        // A second restart: a new id, and the daemon's refusal is reported.
        tracker.connection_lost();
        let replay = tracker.replay().expect("a replay");
        assert_eq!(parsed(&replay.initialize)["id"], "corral-mcp/replay-2");
        assert_eq!(
            tracker.daemon_line(&line(&json!({"jsonrpc": "2.0", "id": "corral-mcp/replay-2",
                "error": {"code": -32602, "message": "unknown server `x`"}}))),
            DaemonLine::ReplayAnswered(Err("unknown server `x`".to_owned()))
        );
    }

    #[test]
    fn the_list_changed_notifications_are_mcp_lines() {
        for method in LIST_CHANGED {
            assert_eq!(
                parsed(&notification_line(method)),
                json!({"jsonrpc": "2.0", "method": method})
            );
        }
    }
}
