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
//!   (before that there is no session to restore; a later `initialize`,
//!   which the daemon refuses on a session, does not replace it), whether
//!   the client sent `notifications/initialized`, and the params of its
//!   last `logging/setLevel` the daemon accepted;
//! - the replay in progress on a new connection: its request ids, strings
//!   of the bridge's own (`corral-mcp/replay-N` for `initialize`,
//!   `corral-mcp/replay-N/logging` for `logging/setLevel`) sent only while
//!   no request of the client is in flight on that connection, so they
//!   cannot clash; their answers are never passed to the client;
//! - the daemon's requests to the client (elicitation, sampling, ping) not
//!   answered yet, by the id the client knows them by. A daemon numbers its
//!   requests per connection from 1, so after a restart a late answer to a
//!   question of the old daemon would settle an unrelated one of the new
//!   with the same id. So when the connection is lost, the client is told
//!   `notifications/cancelled` (reason [`DAEMON_RESTARTED`]) for each one
//!   still open, and those ids are *withdrawn*: the client's answer to one
//!   is dropped, never sent to a daemon. So are its answers to the requests
//!   the daemon itself withdrew (`notifications/cancelled` from it). A
//!   request of a new daemon whose id is open or withdrawn reaches the
//!   client under an id of the bridge's own (`corral-mcp/asked-N`), put
//!   back into the client's answer and into the daemon's
//!   `notifications/cancelled` of it; only these lines are rewritten. The
//!   last [`WITHDRAWN_KEPT`] withdrawn ids are remembered (a client that
//!   honours `notifications/cancelled` never answers them).
//!
//! Lines that are not JSON, or JSON that is not a JSON-RPC message, are
//! passed on untouched and tracked not at all: the daemon answers them as
//! it answers any front-end. Ids that are neither integers nor strings
//! cannot be tracked either (JSON-RPC allows nothing else that can be
//! answered).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

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

/// Why the client is told `notifications/cancelled` for a request of the
/// daemon's it had not answered when the daemon went away.
pub(crate) const DAEMON_RESTARTED: &str = "corral's daemon restarted";

/// How many withdrawn ids of the daemon's requests are remembered, so that
/// the client's late answers to them are dropped: the newest are kept.
const WITHDRAWN_KEPT: usize = 256;

/// MCP's cancellation notification.
const CANCELLED: &str = "notifications/cancelled";

/// MCP's request that sets the level of log messages the client gets.
const SET_LEVEL: &str = "logging/setLevel";

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
        request_id_of(self.id.as_ref()?)
    }
}

/// `id` as a request id, when it is one JSON-RPC can answer (an integer or a string).
fn request_id_of(id: &Value) -> Option<RequestId> {
    match id {
        Value::String(id) => Some(RequestId::String(id.clone())),
        Value::Number(number) => number.as_i64().map(RequestId::Number),
        _ => None,
    }
}

/// `id` as JSON.
fn id_value(id: &RequestId) -> Value {
    match id {
        RequestId::Number(number) => Value::from(*number),
        RequestId::String(text) => Value::String(text.clone()),
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
    /// The client's answers in it, to requests of the daemon.
    answers: Vec<RequestId>,
    /// It is `notifications/initialized`.
    pub(crate) initialized: bool,
    /// It is `initialize` (options inserted).
    initialize: Option<Initialize>,
    /// It is `logging/setLevel`: its id and params.
    set_level: Option<(RequestId, Value)>,
}

/// The client's `initialize`, as sent (options inserted).
#[derive(Debug, Clone, PartialEq)]
struct Initialize {
    id: RequestId,
    params: Option<Value>,
}

/// What to write to the daemon for a client's line (see [`Tracker::sending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// Its bytes, as they are.
    AsWritten,
    /// These bytes instead: its answers to the daemon's requests under the daemon's ids, or without
    /// the answers to withdrawn requests.
    Rewritten(Vec<u8>),
    /// Nothing: it was all answers to withdrawn requests, or a second `notifications/initialized`.
    Nothing,
}

/// The requests that restore the client's session on a new connection, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Replay {
    /// The `initialize` line, with the bridge's own id.
    pub(crate) initialize: Vec<u8>,
    /// `notifications/initialized`, when the client had sent it.
    pub(crate) initialized: Option<Vec<u8>>,
    /// `logging/setLevel` with the bridge's own id, when the client had set a level.
    pub(crate) set_level: Option<Vec<u8>>,
}

/// What to do with a line from the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DaemonLine {
    /// Pass it to the client (as the tracker left it: a request of the
    /// daemon's may have got an id of the bridge's own).
    Forward,
    /// The answer to a replayed request: never passed on; `Err` holds the
    /// daemon's error message.
    ReplayAnswered(Result<(), String>),
}

/// What the bridge remembers of the conversation (see the module docs).
#[derive(Debug)]
pub(crate) struct Tracker {
    /// `_meta["corral/bridge"]` for the client's `initialize`; `None`: no option given.
    options: Option<Value>,
    in_flight: BTreeSet<RequestId>,
    /// The `initialize` the daemon answered with a result: the session to restore.
    session: Option<Initialize>,
    /// The client's `initialize` sent and not answered yet.
    initializing: Option<Initialize>,
    /// The client sent `notifications/initialized` (it is replayed).
    client_initialized: bool,
    /// `notifications/initialized` went out on the current connection.
    initialized_sent: bool,
    /// The client's `logging/setLevel` requests in flight: id to params.
    setting_level: BTreeMap<RequestId, Value>,
    /// The params of the client's last `logging/setLevel` the daemon accepted (it is replayed).
    log_level: Option<Value>,
    /// The replayed requests on the current connection not answered yet.
    replaying: Vec<RequestId>,
    replays: u64,
    /// The daemon's requests on the current connection the client has not
    /// answered: the id the client knows one by, to the daemon's.
    asked: BTreeMap<RequestId, RequestId>,
    /// Ids (as the client knows them) of the daemon's requests that were
    /// withdrawn, oldest first: the client's answer to one is dropped.
    withdrawn: VecDeque<RequestId>,
    /// Ids of the bridge's own given to the daemon's requests so far.
    renamed: u64,
}

impl Tracker {
    /// A tracker inserting `options` (the `corral/bridge` object) into the client's `initialize`.
    pub(crate) fn new(options: Option<Value>) -> Self {
        Self {
            options,
            in_flight: BTreeSet::new(),
            session: None,
            initializing: None,
            client_initialized: false,
            initialized_sent: false,
            setting_level: BTreeMap::new(),
            log_level: None,
            replaying: Vec::new(),
            replays: 0,
            asked: BTreeMap::new(),
            withdrawn: VecDeque::new(),
            renamed: 0,
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
        let answers: Vec<RequestId> = peeked
            .iter()
            .filter(|message| message.method.is_none())
            .filter_map(Peek::request_id)
            .collect();
        let single = (peeked.len() == 1 && line.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{'))
            .then(|| peeked.first())
            .flatten();
        let method = single.and_then(|message| message.method.as_deref());
        let initialized =
            single.is_some_and(|message| message.id.is_none()) && method == Some("notifications/initialized");
        let (initialize_id, set_level_id) = match (method, requests.as_slice()) {
            (Some("initialize"), [id]) => (Some(id.clone()), None),
            (Some(SET_LEVEL), [id]) => (None, Some(id.clone())),
            _ => (None, None),
        };
        drop(peeked);
        if initialized {
            self.client_initialized = true;
        }
        let set_level = set_level_id.and_then(|id| Some((id, params_of(&line)?)));
        let (bytes, initialize) = match initialize_id {
            Some(id) => self.rewrite_initialize(id, line),
            None => (line, None),
        };
        ClientLine {
            bytes,
            requests,
            answers,
            initialized,
            initialize,
            set_level,
        }
    }

    /// The options put into `initialize`, and the `initialize` to keep for a
    /// replay; the line as it came when it needs no change.
    fn rewrite_initialize(&self, id: RequestId, line: Vec<u8>) -> (Vec<u8>, Option<Initialize>) {
        let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(&line) else {
            return (line, None);
        };
        let changed = match message.get_mut("params") {
            Some(Value::Object(params)) => insert_options(params, self.options.as_ref()),
            _ => false,
        };
        let initialize = Some(Initialize {
            id,
            params: message.get("params").cloned(),
        });
        if !changed {
            return (line, initialize);
        }
        let mut bytes = Value::Object(message).to_string().into_bytes();
        bytes.push(b'\n');
        (bytes, initialize)
    }

    /// `line` is about to be written to the daemon: its requests are in
    /// flight from now, and its answers settle the daemon's requests. What to
    /// write instead of its bytes, or nothing at all (see [`Outgoing`]; a
    /// `notifications/initialized` that already went out on this connection,
    /// with the replay, is not sent again).
    pub(crate) fn sending(&mut self, line: &ClientLine) -> Outgoing {
        if line.initialized {
            if self.initialized_sent {
                return Outgoing::Nothing;
            }
            self.initialized_sent = true;
        }
        self.in_flight.extend(line.requests.iter().cloned());
        if let Some(initialize) = &line.initialize {
            self.initializing = Some(initialize.clone());
        }
        if let Some((id, params)) = &line.set_level {
            self.setting_level.insert(id.clone(), params.clone());
        }
        // The client's id of each answer that must change: to the daemon's id, or out (`None`).
        let mut changes: BTreeMap<&RequestId, Option<RequestId>> = BTreeMap::new();
        for id in &line.answers {
            if let Some(daemon_id) = self.asked.remove(id) {
                if daemon_id != *id {
                    changes.insert(id, Some(daemon_id));
                }
            } else if let Some(at) = self.withdrawn.iter().position(|withdrawn| withdrawn == id) {
                self.withdrawn.remove(at);
                changes.insert(id, None);
            }
        }
        if changes.is_empty() {
            return Outgoing::AsWritten;
        }
        let edited = edit_messages(&line.bytes, |message| {
            if message.contains_key("method") {
                return Edit::Keep;
            }
            let Some(id) = message.get("id").and_then(request_id_of) else {
                return Edit::Keep;
            };
            match changes.get(&id) {
                None => Edit::Keep,
                Some(None) => Edit::Drop,
                Some(Some(daemon_id)) => {
                    message.insert("id".to_owned(), id_value(daemon_id));
                    Edit::Changed
                }
            }
        });
        match edited {
            None => Outgoing::AsWritten,
            Some(bytes) if bytes.is_empty() => Outgoing::Nothing,
            Some(bytes) => Outgoing::Rewritten(bytes),
        }
    }

    /// Look at a line the daemon wrote: answers settle their requests, its
    /// requests are awaited from the client (under an id of the bridge's own
    /// when theirs is taken), its `notifications/cancelled` withdraw them.
    pub(crate) fn daemon_line(&mut self, line: &mut Vec<u8>) -> DaemonLine {
        // The daemon's id of each of its requests the client gets under another.
        let mut renamed: BTreeMap<RequestId, RequestId> = BTreeMap::new();
        let mut cancels = false;
        for message in peek(line) {
            match (message.method.as_deref(), message.request_id()) {
                (Some(_), Some(id)) => {
                    let taken = self.asked.contains_key(&id) || self.withdrawn.contains(&id);
                    let client_id = if taken {
                        self.renamed += 1;
                        let own = RequestId::String(format!("corral-mcp/asked-{}", self.renamed));
                        renamed.insert(id.clone(), own.clone());
                        own
                    } else {
                        id.clone()
                    };
                    self.asked.insert(client_id, id);
                }
                (Some(CANCELLED), None) => cancels |= message.id.is_none(),
                (Some(_), None) | (None, None) => {}
                (None, Some(id)) => {
                    let succeeded = message.error.is_none();
                    if let Some(at) = self.replaying.iter().position(|replayed| *replayed == id) {
                        self.replaying.remove(at);
                        return DaemonLine::ReplayAnswered(if succeeded { Ok(()) } else { Err(error_message(line)) });
                    }
                    self.in_flight.remove(&id);
                    if self.initializing.as_ref().is_some_and(|initialize| initialize.id == id) {
                        let initialize = self.initializing.take();
                        if succeeded {
                            self.session = initialize;
                        }
                    }
                    if let Some(params) = self.setting_level.remove(&id)
                        && succeeded
                    {
                        self.log_level = Some(params);
                    }
                }
            }
        }
        if (!renamed.is_empty() || cancels)
            && let Some(edited) = self.edit_daemon_line(line, &renamed)
        {
            *line = edited;
        }
        DaemonLine::Forward
    }

    /// The daemon's requests in `line` under the ids in `renamed`, and its
    /// `notifications/cancelled` withdrawing them under the client's ids;
    /// `None` when nothing changed.
    fn edit_daemon_line(&mut self, line: &[u8], renamed: &BTreeMap<RequestId, RequestId>) -> Option<Vec<u8>> {
        edit_messages(line, |message| {
            let id = message.get("id").and_then(request_id_of);
            if message.get("method").and_then(Value::as_str) == Some(CANCELLED) && !message.contains_key("id") {
                let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) else {
                    return Edit::Keep;
                };
                let Some(daemon_id) = params.get("requestId").and_then(request_id_of) else {
                    return Edit::Keep;
                };
                let Some(client_id) = self
                    .asked
                    .iter()
                    .find(|(_, asked)| **asked == daemon_id)
                    .map(|(client_id, _)| client_id.clone())
                else {
                    return Edit::Keep;
                };
                self.asked.remove(&client_id);
                self.withdraw(client_id.clone());
                if client_id == daemon_id {
                    return Edit::Keep;
                }
                params.insert("requestId".to_owned(), id_value(&client_id));
                return Edit::Changed;
            }
            match id.and_then(|id| renamed.get(&id)) {
                Some(client_id) if message.contains_key("method") => {
                    message.insert("id".to_owned(), id_value(client_id));
                    Edit::Changed
                }
                _ => Edit::Keep,
            }
        })
    }

    /// Remember that the client's answer to `id` goes nowhere.
    fn withdraw(&mut self, id: RequestId) {
        if self.withdrawn.len() >= WITHDRAWN_KEPT {
            self.withdrawn.pop_front();
        }
        self.withdrawn.push_back(id);
    }

    /// The connection to the daemon ended: an error line for each request
    /// it took with it (they are no longer in flight), and a
    /// `notifications/cancelled` for each of its requests the client has
    /// not answered (withdrawn from now).
    pub(crate) fn connection_lost(&mut self) -> Vec<Vec<u8>> {
        self.initialized_sent = false;
        self.replaying.clear();
        self.initializing = None;
        self.setting_level.clear();
        let lost = std::mem::take(&mut self.in_flight);
        let mut lines: Vec<Vec<u8>> = lost.into_iter().map(|id| error_line(id, DAEMON_WENT_AWAY)).collect();
        for (client_id, _) in std::mem::take(&mut self.asked) {
            lines.push(cancelled_line(&client_id, DAEMON_RESTARTED));
            self.withdraw(client_id);
        }
        lines
    }

    /// Error lines for the requests of a line that will not be sent.
    pub(crate) fn refuse(line: &ClientLine) -> Vec<Vec<u8>> {
        line.requests
            .iter()
            .map(|id| error_line(id.clone(), DAEMON_UNREACHABLE))
            .collect()
    }

    /// What restores the client's session on a new connection, if it has
    /// one: its `initialize` under an id of the bridge's own,
    /// `notifications/initialized` if it had sent it, and its last accepted
    /// `logging/setLevel` under an id of the bridge's own.
    pub(crate) fn replay(&mut self) -> Option<Replay> {
        let session = self.session.as_ref()?;
        self.replays += 1;
        let id = RequestId::String(format!("corral-mcp/replay-{}", self.replays));
        let request = Message::Request(RequestMessage::new(id.clone(), "initialize", session.params.clone()));
        self.replaying = vec![id];
        let initialized = self.client_initialized.then(|| {
            self.initialized_sent = true;
            notification_line("notifications/initialized")
        });
        let set_level = self.log_level.clone().map(|params| {
            let id = RequestId::String(format!("corral-mcp/replay-{}/logging", self.replays));
            self.replaying.push(id.clone());
            line_of(&Message::Request(RequestMessage::new(id, SET_LEVEL, Some(params))))
        });
        Some(Replay {
            initialize: line_of(&request),
            initialized,
            set_level,
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

/// What [`edit_messages`] does with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edit {
    /// Leave it as it is.
    Keep,
    /// It was changed.
    Changed,
    /// Leave it out.
    Drop,
}

/// `line` with `edit` applied to each of its messages (the object, or each
/// object of a batch), written out again (compact, one line; empty when no
/// message is left); `None` when nothing changed or it is not JSON.
fn edit_messages(line: &[u8], mut edit: impl FnMut(&mut Map<String, Value>) -> Edit) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(line).ok()?;
    let mut changed = false;
    let mut keep = |message: &mut Value| match message {
        Value::Object(message) => match edit(message) {
            Edit::Keep => true,
            Edit::Changed => {
                changed = true;
                true
            }
            Edit::Drop => {
                changed = true;
                false
            }
        },
        _ => true,
    };
    let empty = match &mut value {
        Value::Array(batch) => {
            batch.retain_mut(&mut keep);
            batch.is_empty()
        }
        message => !keep(message),
    };
    if !changed {
        return None;
    }
    if empty {
        return Some(Vec::new());
    }
    let mut bytes = value.to_string().into_bytes();
    bytes.push(b'\n');
    Some(bytes)
}

/// The `params` of a message, when it has some.
fn params_of(line: &[u8]) -> Option<Value> {
    let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(line) else {
        return None;
    };
    message.remove("params")
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

/// `notifications/cancelled` of the request `id`, for `reason`, as a line.
pub(crate) fn cancelled_line(id: &RequestId, reason: &str) -> Vec<u8> {
    let params = serde_json::json!({ "requestId": id_value(id), "reason": reason });
    line_of(&Message::Notification(NotificationMessage::new(
        CANCELLED,
        Some(params),
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
            assert_eq!(tracker.sending(sent), Outgoing::AsWritten);
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
            assert_eq!(tracker.daemon_line(&mut line(&answer)), DaemonLine::Forward);
        }
        assert_eq!(
            tracker.in_flight(),
            [RequestId::Number(2), RequestId::String("a\"b".into())]
        );
        // The daemon goes away: one error each, then nothing is in flight; its own
        // request, unanswered, is withdrawn from the client.
        let errors: Vec<Value> = tracker.connection_lost().iter().map(|bytes| parsed(bytes)).collect();
        assert_eq!(
            errors,
            [
                json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32603, "message": DAEMON_WENT_AWAY}}),
                json!({"jsonrpc": "2.0", "id": "a\"b", "error": {"code": -32603, "message": DAEMON_WENT_AWAY}}),
                json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                       "params": {"requestId": 2, "reason": DAEMON_RESTARTED}}),
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
        assert_eq!(tracker.sending(&init), Outgoing::AsWritten);
        assert_eq!(tracker.replay(), None, "not answered yet");
        // The daemon died before answering: the client gets the error, nothing is replayed.
        assert_eq!(tracker.connection_lost().len(), 1);
        assert_eq!(tracker.replay(), None);

        // Sent again and answered this time.
        let init = tracker.client_line(line(&initialize(&json!(1), None)));
        assert_eq!(tracker.sending(&init), Outgoing::AsWritten);
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"protocolVersion": "2025-06-18"}});
        assert_eq!(tracker.daemon_line(&mut line(&answer)), DaemonLine::Forward);
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
        tracker.daemon_line(&mut line(&json!({"jsonrpc": "2.0", "id": 1, "result": {}})));
        let initialized = tracker.client_line(line(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})));
        assert!(initialized.initialized);
        assert_eq!(tracker.sending(&initialized), Outgoing::AsWritten);
        assert_eq!(
            tracker.sending(&initialized),
            Outgoing::Nothing,
            "not twice on one connection"
        );

        assert!(tracker.connection_lost().is_empty());
        let replay = tracker.replay().expect("a replay");
        assert_eq!(
            replay.initialized.as_deref().map(parsed),
            Some(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        );
        assert_eq!(
            tracker.sending(&initialized),
            Outgoing::Nothing,
            "the replay sent it on this connection: a held copy is not sent again"
        );
        // A client request with the replay's id in flight cannot be confused: the replay's
        // answer is recognised by its id and never forwarded.
        assert_eq!(
            tracker.daemon_line(&mut line(
                &json!({"jsonrpc": "2.0", "id": "corral-mcp/replay-1", "result": {}})
            )),
            DaemonLine::ReplayAnswered(Ok(()))
        );
        assert_eq!(
            tracker.daemon_line(&mut line(
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
            tracker.daemon_line(&mut line(&json!({"jsonrpc": "2.0", "id": "corral-mcp/replay-2",
                "error": {"code": -32602, "message": "unknown server `x`"}}))),
            DaemonLine::ReplayAnswered(Err("unknown server `x`".to_owned()))
        );
    }

    /// A tracker whose client's session is established (initialize answered, initialized sent).
    fn in_session() -> Tracker {
        let mut tracker = Tracker::new(None);
        let init = tracker.client_line(line(&initialize(&json!(0), None)));
        assert_eq!(tracker.sending(&init), Outgoing::AsWritten);
        tracker.daemon_line(&mut line(&json!({"jsonrpc": "2.0", "id": 0, "result": {}})));
        let initialized = tracker.client_line(line(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})));
        assert_eq!(tracker.sending(&initialized), Outgoing::AsWritten);
        tracker
    }

    /// The restored session's replies from a new daemon, swallowed.
    fn restore(tracker: &mut Tracker) -> Replay {
        let replay = tracker.replay().expect("a session to restore");
        let id = parsed(&replay.initialize)["id"].clone();
        assert_eq!(
            tracker.daemon_line(&mut line(&json!({"jsonrpc": "2.0", "id": id, "result": {}}))),
            DaemonLine::ReplayAnswered(Ok(()))
        );
        replay
    }

    fn elicitation(id: &Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": "elicitation/create",
               "params": {"message": "Your name?", "requestedSchema": {"type": "object"}}})
    }

    fn accepted(id: &Value, name: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "result": {"action": "accept", "content": {"name": name}}})
    }

    fn sent(tracker: &mut Tracker, message: &Value) -> Outgoing {
        let client_line = tracker.client_line(line(message));
        tracker.sending(&client_line)
    }

    #[test]
    fn the_daemons_open_requests_are_cancelled_when_it_goes_and_late_answers_never_reach_the_next() {
        let mut tracker = in_session();
        // The old daemon asks twice; the client answers the second only.
        for id in [1, 2] {
            let mut asked = line(&elicitation(&json!(id)));
            let before = asked.clone();
            assert_eq!(tracker.daemon_line(&mut asked), DaemonLine::Forward);
            assert_eq!(asked, before, "passed on byte for byte");
        }
        assert_eq!(
            sent(&mut tracker, &accepted(&json!(2), "answered")),
            Outgoing::AsWritten
        );

        // It goes: the open question is withdrawn from the client.
        let lost: Vec<Value> = tracker.connection_lost().iter().map(|bytes| parsed(bytes)).collect();
        assert_eq!(
            lost,
            [json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": 1, "reason": DAEMON_RESTARTED}})]
        );
        assert_eq!(DAEMON_RESTARTED, "corral's daemon restarted");
        restore(&mut tracker);

        // The new daemon numbers from 1 again: its 1 reaches the client under an id of the
        // bridge's own (the client may still show the old 1); 2 was answered, so it is free.
        let mut asked = line(&elicitation(&json!(1)));
        assert_eq!(tracker.daemon_line(&mut asked), DaemonLine::Forward);
        assert_eq!(parsed(&asked), elicitation(&json!("corral-mcp/asked-1")));
        assert!(asked.ends_with(b"\n") && !asked[..asked.len() - 1].contains(&b'\n'));
        let mut second = line(&elicitation(&json!(2)));
        tracker.daemon_line(&mut second);
        assert_eq!(parsed(&second), elicitation(&json!(2)));

        // The late answer to the old 1 goes nowhere; the answer to the new one goes under the
        // daemon's id.
        assert_eq!(sent(&mut tracker, &accepted(&json!(1), "late")), Outgoing::Nothing);
        let Outgoing::Rewritten(answer) = sent(&mut tracker, &accepted(&json!("corral-mcp/asked-1"), "now")) else {
            panic!("the answer gets the daemon's id back");
        };
        assert_eq!(parsed(&answer), accepted(&json!(1), "now"));
        // Once dropped, an id is not withdrawn any more; an answer to what nobody asked passes.
        assert_eq!(sent(&mut tracker, &accepted(&json!(1), "again")), Outgoing::AsWritten);

        // In a batch, only the late answer is left out.
        let mut third = line(&elicitation(&json!(3)));
        tracker.daemon_line(&mut third);
        tracker.connection_lost();
        let batch = json!([accepted(&json!(3), "late"), {"jsonrpc": "2.0", "id": 9, "method": "ping"}]);
        assert_eq!(
            sent(&mut tracker, &batch),
            Outgoing::Rewritten(line(&json!([{"jsonrpc": "2.0", "id": 9, "method": "ping"}])))
        );
        assert_eq!(tracker.in_flight(), [RequestId::Number(9)]);
    }

    #[test]
    fn the_daemons_own_cancellation_withdraws_too_and_names_the_clients_id() {
        let mut tracker = in_session();
        tracker.daemon_line(&mut line(&elicitation(&json!(1))));
        let cancel = |id: &Value| {
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                   "params": {"requestId": id, "reason": "no answer within 3s"}})
        };
        let mut cancelled = line(&cancel(&json!(1)));
        let before = cancelled.clone();
        assert_eq!(tracker.daemon_line(&mut cancelled), DaemonLine::Forward);
        assert_eq!(cancelled, before, "the client knows the request by the daemon's id");
        assert_eq!(sent(&mut tracker, &accepted(&json!(1), "too late")), Outgoing::Nothing);
        assert!(
            tracker.connection_lost().is_empty(),
            "nothing open: the client is not told twice"
        );

        // On a new connection, a renamed request is withdrawn under the name the client knows.
        tracker.daemon_line(&mut line(&elicitation(&json!(7))));
        tracker.connection_lost();
        restore(&mut tracker);
        let mut asked = line(&elicitation(&json!(7)));
        tracker.daemon_line(&mut asked);
        assert_eq!(parsed(&asked)["id"], "corral-mcp/asked-1");
        let mut cancelled = line(&cancel(&json!(7)));
        tracker.daemon_line(&mut cancelled);
        assert_eq!(parsed(&cancelled), cancel(&json!("corral-mcp/asked-1")));
        assert_eq!(
            sent(&mut tracker, &accepted(&json!("corral-mcp/asked-1"), "too late")),
            Outgoing::Nothing
        );
        // A cancellation of what the client was never asked passes untouched.
        let mut unknown = line(&cancel(&json!(99)));
        let before = unknown.clone();
        tracker.daemon_line(&mut unknown);
        assert_eq!(unknown, before);
    }

    #[test]
    fn only_the_newest_withdrawn_ids_are_remembered() {
        let mut tracker = in_session();
        let count = i64::try_from(WITHDRAWN_KEPT).expect("small") + 10;
        for id in 1..=count {
            tracker.daemon_line(&mut line(&elicitation(&json!(id))));
        }
        assert_eq!(tracker.connection_lost().len(), WITHDRAWN_KEPT + 10);
        assert_eq!(tracker.withdrawn.len(), WITHDRAWN_KEPT);
        assert_eq!(
            sent(&mut tracker, &accepted(&json!(1), "forgotten")),
            Outgoing::AsWritten
        );
        assert_eq!(sent(&mut tracker, &accepted(&json!(count), "kept")), Outgoing::Nothing);
    }

    #[test]
    fn a_refused_second_initialize_leaves_the_session_to_restore() {
        let mut tracker = in_session();
        let again = tracker.client_line(line(&initialize(&json!("again"), Some(json!({"x": 1})))));
        assert_eq!(tracker.sending(&again), Outgoing::AsWritten);
        tracker.daemon_line(&mut line(&json!({"jsonrpc": "2.0", "id": "again",
            "error": {"code": -32600, "message": "already initialized"}})));
        let replay = tracker.replay().expect("the first session is still there");
        assert_eq!(
            parsed(&replay.initialize)["params"],
            initialize(&json!(0), None)["params"]
        );
    }

    #[test]
    fn the_clients_last_accepted_log_level_is_replayed_after_initialize() {
        let mut tracker = in_session();
        let set_level = |id: i64, level: &str| {
            json!({"jsonrpc": "2.0", "id": id, "method": "logging/setLevel",
                                                      "params": {"level": level}})
        };
        assert_eq!(tracker.replay().expect("a replay").set_level, None, "no level set yet");
        tracker.connection_lost();

        assert_eq!(sent(&mut tracker, &set_level(5, "debug")), Outgoing::AsWritten);
        tracker.daemon_line(&mut line(&json!({"jsonrpc": "2.0", "id": 5, "result": {}})));
        // Refused, or lost with the connection: the accepted one stays.
        sent(&mut tracker, &set_level(6, "loud"));
        tracker.daemon_line(&mut line(&json!({"jsonrpc": "2.0", "id": 6,
            "error": {"code": -32602, "message": "unknown level"}})));
        sent(&mut tracker, &set_level(7, "error"));
        assert_eq!(tracker.connection_lost().len(), 1, "the error for 7");

        let replay = restore(&mut tracker);
        assert_eq!(
            replay.initialized.as_deref().map(parsed),
            Some(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        );
        let replayed = parsed(&replay.set_level.expect("the level is replayed"));
        assert_eq!(
            replayed,
            json!({"jsonrpc": "2.0", "id": "corral-mcp/replay-2/logging", "method": "logging/setLevel",
                   "params": {"level": "debug"}})
        );
        assert_eq!(
            tracker.daemon_line(&mut line(
                &json!({"jsonrpc": "2.0", "id": "corral-mcp/replay-2/logging",
                "result": {}})
            )),
            DaemonLine::ReplayAnswered(Ok(())),
            "its answer is not the client's"
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
