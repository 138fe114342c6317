//! One MCP session of the endpoint: a connection of the api's engine over an
//! in-memory duplex, and the routes of what the engine says back.
//!
//! The engine sees a connection like any socket's: the session writes the
//! client's messages to it as lines (one writer task, `write_lines`), and one
//! task (`route`) reads its output and hands each message to an HTTP
//! stream:
//! - a response goes to the POST that carried its request (by id);
//! - progress for a request answered on an SSE stream goes to that stream,
//!   so that it precedes the request's response, as the engine wrote them;
//! - anything else (other notifications, the daemon's requests) goes to the
//!   session's GET stream when one is open, else to a POST stream that is
//!   open, else waits in a bounded buffer ([`MAX_PARKED`] messages,
//!   [`MAX_PARKED_BYTES`]; the oldest is dropped first) for the next stream
//!   opened.
//!
//! A session ends when its engine connection does, on DELETE, when idle
//! ([`Sessions::close_idle`]) and when the daemon shuts down: the duplex is
//! dropped, the engine sees end of stream (and, for DELETE and idle, that
//! the client is gone for good, so it cancels what the client left running
//! at once), and the connection ends as a socket's does: its session servers
//! are removed. Every stream of the session then ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore as _;
use corral_protocol::framing::{FrameDecoder, Framing};
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;

/// Bytes the duplex between a session and its engine connection buffers each way.
const DUPLEX_BYTES: usize = 64 * 1024;
/// The client's messages waiting to be written to the engine.
const ENGINE_QUEUE: usize = 64;
/// Messages waiting for one SSE stream's writer.
pub(super) const STREAM_QUEUE: usize = 64;
/// Messages for the client waiting for a stream to carry them.
const MAX_PARKED: usize = 256;
/// Bytes of those messages.
const MAX_PARKED_BYTES: usize = 4 * 1024 * 1024;
/// Read buffer for the engine's output.
const READ_CHUNK: usize = 16 * 1024;
/// MCP's progress notification.
const PROGRESS: &str = "notifications/progress";

/// One MCP session: its engine connection and the routes back to its HTTP streams.
pub(super) struct Session {
    /// The `Mcp-Session-Id`: 128 random bits in hex. Never logged.
    pub(super) id: String,
    /// The engine connection's number (for logs).
    pub(super) connection: u64,
    /// The client's messages, as lines, to the writer task.
    to_engine: mpsc::Sender<String>,
    /// Cancelled to end the session: DELETE, idle, the engine connection
    /// ended; a child of the daemon's shutdown.
    closing: CancellationToken,
    /// Set before `closing` when the client is gone for good (DELETE, idle):
    /// the engine then cancels what it left running at once.
    gone: Arc<AtomicBool>,
    state: Mutex<State>,
}

/// What a session's routes hold.
struct State {
    /// Requests waiting for their response, by id (as JSON text).
    pending: HashMap<String, Waiter>,
    /// The GET stream, while open.
    listener: Option<mpsc::Sender<String>>,
    /// Messages no stream could carry yet, oldest first.
    parked: VecDeque<String>,
    parked_bytes: usize,
    /// SSE streams of this session open now.
    open_streams: usize,
    /// The last request or stream closed.
    last_used: Instant,
    /// The engine connection ended: nothing more is routed.
    ended: bool,
}

/// Where the response to one request goes.
pub(super) struct Waiter {
    /// The POST's answer: its SSE stream, or the one JSON object.
    pub(super) to: mpsc::Sender<String>,
    /// The request's `_meta.progressToken`, as JSON text.
    pub(super) progress_token: Option<String>,
    /// Whether `to` is an SSE stream (which may carry other messages too).
    pub(super) stream: bool,
}

/// Why a request could not be registered.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The session ended.
    Ended,
    /// A request with this id waits for its response already.
    Duplicate,
    /// The GET stream is open already.
    ListenerOpen,
}

impl Session {
    /// A new session: a connection admitted by the engine's gate (`None` at
    /// the cap), served over a duplex, with its writer and router, all tasks
    /// of `tracker`. The router removes it from `sessions` when it ends.
    pub(super) async fn open(
        engine: &api::Engine,
        sessions: &Arc<Sessions>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Option<Arc<Self>> {
        let admitted = engine.admit().await?;
        let (ours, theirs) = tokio::io::duplex(DUPLEX_BYTES);
        let (reader, writer) = tokio::io::split(ours);
        let gone = Arc::new(AtomicBool::new(false));
        let closing = shutdown.child_token();
        let (to_engine, lines) = mpsc::channel(ENGINE_QUEUE);
        let session = Arc::new(Self {
            id: new_session_id(),
            connection: admitted.id(),
            to_engine,
            closing: closing.clone(),
            gone: gone.clone(),
            state: Mutex::new(State {
                pending: HashMap::new(),
                listener: None,
                parked: VecDeque::new(),
                parked_bytes: 0,
                open_streams: 0,
                last_used: Instant::now(),
                ended: false,
            }),
        });
        tracing::debug!(connection = session.connection, "MCP endpoint: new session");
        let hung_up: api::HungUp = Box::new(move || gone.load(Ordering::Acquire));
        tracker.spawn(admitted.serve(engine.clone(), theirs, hung_up));
        tracker.spawn(write_lines(writer, lines, closing));
        tracker.spawn(route(session.clone(), reader, sessions.clone()));
        Some(session)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Routes and counters, each valid on its own: usable after a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write one message of the client's to the engine; `false` if the session ended.
    pub(super) async fn send(&self, message: &str) -> bool {
        let mut line = String::with_capacity(message.len() + 1);
        line.push_str(message);
        line.push('\n');
        tokio::select! {
            sent = self.to_engine.send(line) => sent.is_ok(),
            () = self.closing.cancelled() => false,
        }
    }

    /// Wait for the response to request `key` at `waiter`; for a stream,
    /// with the messages that waited for one.
    pub(super) fn register(&self, key: String, waiter: Waiter) -> Result<VecDeque<String>, Refused> {
        let mut state = self.lock();
        if state.ended {
            return Err(Refused::Ended);
        }
        if state.pending.contains_key(&key) {
            return Err(Refused::Duplicate);
        }
        let backlog = if waiter.stream {
            state.take_parked()
        } else {
            VecDeque::new()
        };
        state.pending.insert(key, waiter);
        state.last_used = Instant::now();
        Ok(backlog)
    }

    /// Forget request `key` (it never reached the engine).
    pub(super) fn unregister(&self, key: &str) {
        self.lock().pending.remove(key);
    }

    /// Open the GET stream: its receiver, and the messages that waited for one.
    pub(super) fn open_listener(&self) -> Result<(mpsc::Receiver<String>, VecDeque<String>), Refused> {
        let mut state = self.lock();
        if state.ended {
            return Err(Refused::Ended);
        }
        if state.listener.as_ref().is_some_and(|listener| !listener.is_closed()) {
            return Err(Refused::ListenerOpen);
        }
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        state.listener = Some(sender);
        Ok((receiver, state.take_parked()))
    }

    /// An SSE stream of this session opens: counted until the guard is dropped.
    pub(super) fn stream_opened(self: &Arc<Self>) -> StreamGuard {
        self.lock().open_streams += 1;
        StreamGuard(Arc::downgrade(self))
    }

    /// A request came (or a stream closed): the session is in use.
    pub(super) fn touch(&self) {
        self.lock().last_used = Instant::now();
    }

    /// Whether nothing runs, no stream is open and nothing came for `idle`.
    fn is_idle(&self, idle: Duration) -> bool {
        let state = self.lock();
        state.pending.is_empty() && state.open_streams == 0 && state.last_used.elapsed() >= idle
    }

    /// End the session for a client gone for good (DELETE, idle): its
    /// engine connection closes, cancelling what it left running.
    pub(super) fn close(&self) {
        self.gone.store(true, Ordering::Release);
        self.closing.cancel();
    }

    /// The engine connection ended: nothing more is routed, every stream ends.
    fn end(&self) {
        {
            let mut state = self.lock();
            state.ended = true;
            state.pending.clear();
            state.listener = None;
            state.parked.clear();
            state.parked_bytes = 0;
        }
        self.closing.cancel();
    }

    /// Route one message of the engine's (see the module docs).
    async fn deliver(&self, frame: Vec<u8>) {
        let Ok(text) = String::from_utf8(frame) else {
            return;
        };
        let head: Head = serde_json::from_str(&text).unwrap_or_default();
        if head.method.is_none()
            && let Some(id) = &head.id
        {
            let waiter = self.lock().pending.remove(&id.to_string());
            match waiter {
                Some(waiter) => {
                    // A POST whose client went away: the answer has nowhere to go.
                    let _ = waiter.to.send(text).await;
                }
                None => tracing::debug!(
                    connection = self.connection,
                    "MCP endpoint: a response nobody waits for"
                ),
            }
            return;
        }
        let mut text = text;
        if head.method.as_deref() == Some(PROGRESS)
            && let Some(token) = head.progress_token()
        {
            let stream = self
                .lock()
                .pending
                .values()
                .find(|waiter| waiter.stream && waiter.progress_token.as_deref() == Some(token.as_str()))
                .map(|waiter| waiter.to.clone());
            if let Some(stream) = stream {
                match stream.send(text).await {
                    Ok(()) => return,
                    Err(mpsc::error::SendError(unsent)) => text = unsent,
                }
            }
        }
        self.deliver_elsewhere(text).await;
    }

    /// A message that answers no request: to the GET stream, else to an open
    /// POST stream, else parked.
    async fn deliver_elsewhere(&self, mut text: String) {
        // A stream may close between choosing it and sending: try the next one.
        for _ in 0..3 {
            let target = {
                let mut state = self.lock();
                if state.ended {
                    return;
                }
                if state.listener.as_ref().is_some_and(mpsc::Sender::is_closed) {
                    state.listener = None;
                }
                state.listener.clone().or_else(|| {
                    state
                        .pending
                        .values()
                        .find(|waiter| waiter.stream && !waiter.to.is_closed())
                        .map(|waiter| waiter.to.clone())
                })
            };
            let Some(target) = target else { break };
            match target.send(text).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(unsent)) => text = unsent,
            }
        }
        self.lock().park(text, self.connection);
    }
}

impl State {
    fn take_parked(&mut self) -> VecDeque<String> {
        self.parked_bytes = 0;
        std::mem::take(&mut self.parked)
    }

    /// Keep `text` for the next stream, dropping the oldest beyond the bounds.
    fn park(&mut self, text: String, connection: u64) {
        if self.ended {
            return;
        }
        self.parked_bytes += text.len();
        self.parked.push_back(text);
        let mut dropped = 0usize;
        while self.parked.len() > MAX_PARKED || self.parked_bytes > MAX_PARKED_BYTES {
            let Some(oldest) = self.parked.pop_front() else { break };
            self.parked_bytes -= oldest.len();
            dropped += 1;
        }
        if dropped > 0 {
            tracing::warn!(
                connection,
                dropped,
                "MCP endpoint: dropped messages for a client that opens no stream to read them (oldest first)"
            );
        }
    }
}

/// Counts an open SSE stream of a session; dropped when the stream ends or
/// its client goes away, which counts as use (the idle clock restarts).
pub(super) struct StreamGuard(Weak<Session>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(session) = self.0.upgrade() {
            let mut state = session.lock();
            state.open_streams = state.open_streams.saturating_sub(1);
            state.last_used = Instant::now();
        }
    }
}

/// What the router reads of a message before routing it.
#[derive(Debug, Default, serde::Deserialize)]
struct Head {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<Box<RawValue>>,
}

impl Head {
    /// `params.progressToken` as JSON text, if any.
    fn progress_token(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Params {
            #[serde(rename = "progressToken")]
            progress_token: serde_json::Value,
        }
        let params: Params = serde_json::from_str(self.params.as_ref()?.get()).ok()?;
        Some(params.progress_token.to_string())
    }
}

/// 128 random bits in hex: unguessable, and visible ASCII as the spec asks.
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Write the client's messages to the engine until the session closes.
async fn write_lines(
    mut writer: WriteHalf<DuplexStream>,
    mut lines: mpsc::Receiver<String>,
    closing: CancellationToken,
) {
    loop {
        let line = tokio::select! {
            biased;
            () = closing.cancelled() => break,
            line = lines.recv() => match line {
                Some(line) => line,
                None => break,
            },
        };
        let written = tokio::select! {
            () = closing.cancelled() => break,
            written = writer.write_all(line.as_bytes()) => written,
        };
        if written.is_err() {
            break;
        }
    }
}

/// Read the engine's output and route each message until the engine
/// connection ends or the session closes; then end the session.
async fn route(session: Arc<Session>, mut reader: ReadHalf<DuplexStream>, sessions: Arc<Sessions>) {
    let mut decoder = FrameDecoder::new(Framing::Lines, corral_protocol::MAX_MESSAGE_BYTES);
    let mut chunk = vec![0u8; READ_CHUNK];
    'reading: loop {
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => tokio::select! {
                    () = session.closing.cancelled() => break 'reading,
                    () = session.deliver(frame) => {}
                },
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(connection = session.connection, %error, "MCP endpoint: unusable message from the engine");
                    break 'reading;
                }
            }
        }
        let read = tokio::select! {
            () = session.closing.cancelled() => break,
            read = reader.read(&mut chunk) => read,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => decoder.feed(&chunk[..n]),
        }
    }
    // Our end of the duplex goes (with the writer's half): the engine sees
    // end of stream, and its writes fail, so it ends at once.
    drop(reader);
    session.end();
    sessions.remove(&session);
    tracing::debug!(connection = session.connection, "MCP endpoint: session ended");
}

/// The endpoint's sessions, by id. At most the engine's connection cap of
/// them exist, since each is a connection.
#[derive(Default)]
pub(super) struct Sessions {
    by_id: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        // A map replaced entry by entry: valid after any panic.
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session with this id, if it is open.
    pub(super) fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    /// Add a session whose `initialize` succeeded; `false` if it ended meanwhile.
    pub(super) fn insert(&self, session: &Arc<Session>) -> bool {
        let mut by_id = self.lock();
        if session.lock().ended {
            return false;
        }
        by_id.insert(session.id.clone(), session.clone());
        true
    }

    /// Take the session with this id out (DELETE).
    pub(super) fn take(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().remove(id)
    }

    /// Forget `session` (it ended), unless another has its id.
    fn remove(&self, session: &Arc<Session>) {
        let mut by_id = self.lock();
        if by_id.get(&session.id).is_some_and(|found| Arc::ptr_eq(found, session)) {
            by_id.remove(&session.id);
        }
    }

    /// Close every session idle for `idle` (no request running, no stream
    /// open, nothing new): the number closed.
    pub(super) fn close_idle(&self, idle: Duration) -> usize {
        let idle_sessions: Vec<Arc<Session>> = {
            let mut by_id = self.lock();
            let ids: Vec<String> = by_id
                .iter()
                .filter(|(_, session)| session.is_idle(idle))
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| by_id.remove(id)).collect()
        };
        for session in &idle_sessions {
            tracing::info!(connection = session.connection, idle = ?idle, "MCP endpoint: closing an idle session");
            session.close();
        }
        idle_sessions.len()
    }
}
