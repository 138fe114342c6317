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
//! The router never waits for a stream: a stream's queue ([`Outbox`]) takes
//! at most [`STREAM_QUEUE`] messages and [`STREAM_BYTES`], and keeps its
//! last place for the response, which therefore always fits. Progress for a
//! stream that is full is dropped (and logged), as the socket drops a slow
//! front-end's progress; another message for a full stream goes elsewhere as
//! above. So one client that does not read one stream never holds up the
//! rest of its session. Choosing a stream and parking happen under the one
//! lock of the session's routes, so a stream opened meanwhile never misses
//! a message.
//!
//! Life: a session is in [`Sessions`] from the moment it opens, counted
//! under the endpoint's own cap ([`Sessions::make_room`]: at most half the
//! engine's connections, so that the socket's front-ends always get in; at
//! the cap the least recently used idle session is closed for a new one),
//! but it serves requests only once its `initialize` succeeded
//! ([`Opening::establish`]); an [`Opening`] dropped before that (the client
//! went away, `initialize` failed) closes it. It ends when its engine
//! connection does, on DELETE, when idle ([`Sessions::close_idle`]: nothing
//! running, no stream open, nothing asked or answered for the idle period),
//! when evicted, and when the daemon shuts down: the duplex is dropped, the
//! engine sees end of stream (and, but for shutdown, that the client is gone
//! for good, so it cancels what the client left running at once), and the
//! connection ends as a socket's does: its session servers are removed.
//! Every stream of the session then ends.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::OsRng;
use chacha20poly1305::aead::rand_core::RngCore as _;
use corral_protocol::framing::{FrameDecoder, Framing};
use corral_protocol::jsonrpc::{Message, RequestId, ResponseMessage};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;

/// Bytes the duplex between a session and its engine connection buffers each way.
const DUPLEX_BYTES: usize = 64 * 1024;
/// The client's messages waiting to be written to the engine.
const ENGINE_QUEUE: usize = 64;
/// Messages waiting for one stream's writer (the last place is the response's).
const STREAM_QUEUE: usize = 64;
/// Bytes of the messages other than the response waiting for one stream's
/// writer (one message is taken whatever its size when none waits).
const STREAM_BYTES: usize = 4 * 1024 * 1024;
/// Messages for the client waiting for a stream to carry them.
const MAX_PARKED: usize = 256;
/// Bytes of those messages.
const MAX_PARKED_BYTES: usize = 4 * 1024 * 1024;
/// Read buffer for the engine's output.
const READ_CHUNK: usize = 16 * 1024;
/// MCP's progress notification.
const PROGRESS: &str = "notifications/progress";
/// Where a request's progress token is in its params.
pub(super) const REQUEST_PROGRESS_TOKEN: &str = "/_meta/progressToken";
/// Where a progress notification's token is in its params.
const PROGRESS_TOKEN: &str = "/progressToken";

/// A request id as the key of its waiter: its JSON text (`5`, `"abc"`).
pub(super) fn request_key(id: &RequestId) -> String {
    serde_json::to_string(id).unwrap_or_default()
}

/// The progress token at `pointer` in `params` ([`REQUEST_PROGRESS_TOKEN`]
/// of a request, `/progressToken` of its progress), as JSON text: how a
/// request and its progress find each other.
pub(super) fn progress_token(params: Option<&Value>, pointer: &str) -> Option<String> {
    params?.pointer(pointer).map(Value::to_string)
}

/// The router's end of one stream's queue (an SSE stream's, or the one
/// answer of a POST answered as JSON); see the module docs.
pub(super) struct Outbox {
    sender: mpsc::Sender<String>,
    /// Bytes queued and not yet taken by the [`Inbox`].
    queued: Arc<AtomicUsize>,
}

/// The stream's end of its queue.
pub(super) struct Inbox {
    receiver: mpsc::Receiver<String>,
    queued: Arc<AtomicUsize>,
}

/// A new stream queue.
fn stream_queue() -> (Outbox, Inbox) {
    let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            sender,
            queued: queued.clone(),
        },
        Inbox { receiver, queued },
    )
}

/// Why a message was not queued for a stream: it is given back.
enum NotQueued {
    /// The stream has no room for it.
    Full(String),
    /// The stream is gone.
    Gone(String),
}

impl NotQueued {
    fn into_text(self) -> String {
        match self {
            Self::Full(text) | Self::Gone(text) => text,
        }
    }
}

impl Outbox {
    /// Queue a message that is not the stream's response, without waiting:
    /// the last place stays the response's, and at most [`STREAM_BYTES`]
    /// wait (any one message when none does).
    fn offer(&self, text: String) -> Result<(), NotQueued> {
        if self.sender.is_closed() {
            return Err(NotQueued::Gone(text));
        }
        let queued = self.queued.load(Ordering::Acquire);
        if self.sender.capacity() <= 1 || (queued > 0 && queued + text.len() > STREAM_BYTES) {
            return Err(NotQueued::Full(text));
        }
        self.queue(text)
    }

    /// Queue the stream's response, in the place kept for it: never waits.
    fn answer(&self, text: String) -> Result<(), NotQueued> {
        self.queue(text)
    }

    fn queue(&self, text: String) -> Result<(), NotQueued> {
        let length = text.len();
        // Counted before it can be taken, so the count never goes below zero.
        self.queued.fetch_add(length, Ordering::AcqRel);
        match self.sender.try_send(text) {
            Ok(()) => Ok(()),
            Err(error) => {
                self.queued.fetch_sub(length, Ordering::AcqRel);
                Err(match error {
                    TrySendError::Full(text) => NotQueued::Full(text),
                    TrySendError::Closed(text) => NotQueued::Gone(text),
                })
            }
        }
    }

    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

impl Inbox {
    /// The next message, `None` once the router let go of the stream (its
    /// response was sent, or the session ended).
    pub(super) fn poll_recv(&mut self, context: &mut Context<'_>) -> Poll<Option<String>> {
        let polled = self.receiver.poll_recv(context);
        if let Poll::Ready(Some(message)) = &polled {
            self.queued.fetch_sub(message.len(), Ordering::AcqRel);
        }
        polled
    }

    /// The next message (see [`Inbox::poll_recv`]).
    pub(super) async fn recv(&mut self) -> Option<String> {
        std::future::poll_fn(|context| self.poll_recv(context)).await
    }

    /// An inbox that ends at once: nothing comes after what a stream starts with.
    pub(super) fn ended() -> Self {
        stream_queue().1
    }
}

/// One MCP session: its engine connection and the routes back to its HTTP streams.
pub(super) struct Session {
    /// The `Mcp-Session-Id`: 128 random bits in hex. Never logged.
    pub(super) id: String,
    /// The engine connection's number (for logs).
    pub(super) connection: u64,
    /// The client's messages, as lines, to the writer task.
    to_engine: mpsc::Sender<String>,
    /// Cancelled to end the session: DELETE, idle, evicted, the engine
    /// connection ended; a child of the daemon's shutdown.
    closing: CancellationToken,
    /// Set before `closing` when the client is gone for good (DELETE, idle):
    /// the engine then cancels what it left running at once.
    gone: Arc<AtomicBool>,
    /// Its place under the endpoint's session cap, given back as soon as it
    /// is closed or ends.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    state: Mutex<State>,
}

/// What a session's routes hold.
struct State {
    /// Requests waiting for their response, by id (as JSON text).
    pending: HashMap<String, Waiter>,
    /// The GET stream, while open.
    listener: Option<Outbox>,
    /// Messages no stream could carry yet, oldest first.
    parked: VecDeque<String>,
    parked_bytes: usize,
    /// SSE streams of this session open now.
    open_streams: usize,
    /// The last request, answer or stream closed.
    last_used: Instant,
    /// Its `initialize` succeeded: it serves requests, and may be closed when idle.
    established: bool,
    /// The engine connection ended: nothing more is routed.
    ended: bool,
    /// Progress notifications dropped because their stream was full.
    dropped_progress: u64,
}

/// Where the response to one request goes.
pub(super) struct Waiter {
    /// The POST's answer: its SSE stream, or the one JSON object.
    to: Outbox,
    /// The request's `_meta.progressToken`, as JSON text.
    progress_token: Option<String>,
    /// Whether `to` is an SSE stream (which may carry other messages too).
    stream: bool,
}

impl Waiter {
    /// A waiter for the response to a request with `progress_token`, on an
    /// SSE stream (`stream`) or as one JSON object; the inbox it comes to.
    pub(super) fn new(progress_token: Option<String>, stream: bool) -> (Self, Inbox) {
        let (to, inbox) = stream_queue();
        (
            Self {
                to,
                progress_token,
                stream,
            },
            inbox,
        )
    }
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

/// A session whose `initialize` is under way: closed when dropped (its
/// client went away, `initialize` failed or took too long) unless
/// [`Opening::establish`] kept it.
pub(super) struct Opening {
    session: Arc<Session>,
    sessions: Arc<Sessions>,
    kept: bool,
}

impl Opening {
    /// The session being opened.
    pub(super) fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Its `initialize` succeeded: from now on it serves requests. `None`
    /// if it ended meanwhile.
    pub(super) fn establish(mut self) -> Option<Arc<Session>> {
        self.kept = self.sessions.establish(&self.session);
        self.kept.then(|| self.session.clone())
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        if !self.kept {
            self.session.close();
        }
    }
}

/// A request waiting for its response: withdrawn when dropped before
/// [`Registration::sent`] (the client went away before the request reached
/// the engine), else its waiter would keep the session busy forever.
pub(super) struct Registration<'s> {
    session: &'s Session,
    key: Option<String>,
}

impl Registration<'_> {
    /// The request was written to the engine: its response will come.
    pub(super) fn sent(mut self) {
        self.key = None;
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.session.unregister(&key);
        }
    }
}

impl Session {
    /// A new session in `sessions`, holding `slot` under their cap: a
    /// connection admitted by the engine's gate (`None` at the gate's cap)
    /// that came in at `door`,
    /// served over a duplex, with its writer and router, all tasks of
    /// `tracker`. The router removes it from `sessions` when it ends.
    pub(super) async fn open(
        engine: &api::Engine,
        door: api::Door,
        sessions: &Arc<Sessions>,
        slot: OwnedSemaphorePermit,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Option<Opening> {
        let admitted = engine.admit().await?;
        let (ours, theirs) = tokio::io::duplex(DUPLEX_BYTES);
        let (reader, writer) = tokio::io::split(ours);
        let gone = Arc::new(AtomicBool::new(false));
        let closing = shutdown.child_token();
        let (to_engine, lines) = mpsc::channel(ENGINE_QUEUE);
        let session = Arc::new(Self::new(admitted.id(), to_engine, closing.clone(), gone.clone(), slot));
        sessions.add(&session);
        tracing::debug!(connection = session.connection, "MCP endpoint: new session");
        let hung_up: api::HungUp = Box::new(move || gone.load(Ordering::Acquire));
        tracker.spawn(admitted.serve(engine.clone(), theirs, hung_up, door));
        tracker.spawn(write_lines(writer, lines, closing));
        tracker.spawn(route(session.clone(), reader, sessions.clone()));
        Some(Opening {
            session,
            sessions: sessions.clone(),
            kept: false,
        })
    }

    fn new(
        connection: u64,
        to_engine: mpsc::Sender<String>,
        closing: CancellationToken,
        gone: Arc<AtomicBool>,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            id: new_session_id(),
            connection,
            to_engine,
            closing,
            gone,
            slot: Mutex::new(Some(slot)),
            state: Mutex::new(State {
                pending: HashMap::new(),
                listener: None,
                parked: VecDeque::new(),
                parked_bytes: 0,
                open_streams: 0,
                last_used: Instant::now(),
                established: false,
                ended: false,
                dropped_progress: 0,
            }),
        }
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
    pub(super) fn register(
        &self,
        key: String,
        waiter: Waiter,
    ) -> Result<(Registration<'_>, VecDeque<String>), Refused> {
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
        state.pending.insert(key.clone(), waiter);
        state.last_used = Instant::now();
        let registration = Registration {
            session: self,
            key: Some(key),
        };
        Ok((registration, backlog))
    }

    /// Forget request `key` (it never reached the engine, or was cancelled): its stream ends.
    pub(super) fn unregister(&self, key: &str) {
        let mut state = self.lock();
        state.pending.remove(key);
        state.last_used = Instant::now();
    }

    /// Open the GET stream: its inbox, and the messages that waited for one.
    pub(super) fn open_listener(&self) -> Result<(Inbox, VecDeque<String>), Refused> {
        let mut state = self.lock();
        if state.ended {
            return Err(Refused::Ended);
        }
        if state.listener.as_ref().is_some_and(|listener| !listener.is_closed()) {
            return Err(Refused::ListenerOpen);
        }
        let (outbox, inbox) = stream_queue();
        state.listener = Some(outbox);
        Ok((inbox, state.take_parked()))
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

    /// Whether it serves requests, nothing runs, no stream is open and nothing came for `idle`.
    fn is_idle(&self, idle: Duration) -> bool {
        let state = self.lock();
        state.established && state.pending.is_empty() && state.open_streams == 0 && state.last_used.elapsed() >= idle
    }

    fn last_used(&self) -> Instant {
        self.lock().last_used
    }

    /// Whether the session ended or is closing: no answer will come any more.
    pub(super) fn is_ended(&self) -> bool {
        self.closing.is_cancelled() || self.lock().ended
    }

    /// End the session for a client gone for good (DELETE, idle, evicted,
    /// an `initialize` nobody waits for): its engine connection closes,
    /// cancelling what it left running, and its place under the cap is free.
    pub(super) fn close(&self) {
        self.gone.store(true, Ordering::Release);
        self.closing.cancel();
        self.give_back_slot();
    }

    fn give_back_slot(&self) {
        // Its place only, valid after any panic.
        drop(self.slot.lock().unwrap_or_else(PoisonError::into_inner).take());
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
        self.give_back_slot();
    }

    /// Route one message of the engine's (see the module docs), without waiting.
    fn deliver(&self, frame: Vec<u8>) {
        let Ok(text) = String::from_utf8(frame) else {
            return;
        };
        let message = Message::parse(text.as_bytes()).ok();
        let mut state = self.lock();
        if state.ended {
            return;
        }
        let text = match message {
            Some(Message::Response(ResponseMessage { id: Some(id), .. })) => {
                match state.pending.remove(&request_key(&id)) {
                    Some(waiter) => {
                        // An answer is use: the idle clock starts again now.
                        state.last_used = Instant::now();
                        if waiter.to.answer(text).is_err() {
                            tracing::debug!(
                                connection = self.connection,
                                "MCP endpoint: a response whose client went away"
                            );
                        }
                    }
                    None => tracing::debug!(
                        connection = self.connection,
                        "MCP endpoint: a response nobody waits for"
                    ),
                }
                return;
            }
            Some(Message::Notification(notification)) if notification.method == PROGRESS => {
                let token = progress_token(notification.params.as_ref(), PROGRESS_TOKEN);
                let stream = token.and_then(|token| {
                    state
                        .pending
                        .values()
                        .find(|waiter| waiter.stream && waiter.progress_token.as_deref() == Some(token.as_str()))
                });
                let Some(stream) = stream else {
                    return state.deliver_elsewhere(text, self.connection);
                };
                match stream.to.offer(text) {
                    Ok(()) => return,
                    Err(NotQueued::Full(_)) => {
                        state.dropped_progress += 1;
                        if state.dropped_progress == 1 {
                            tracing::warn!(
                                connection = self.connection,
                                "MCP endpoint: dropping progress for a call whose client does not read its stream \
                                 (the first of this session)"
                            );
                        }
                        return;
                    }
                    // Its stream is gone: the progress goes where the rest goes.
                    Err(NotQueued::Gone(text)) => text,
                }
            }
            _ => text,
        };
        state.deliver_elsewhere(text, self.connection);
    }

    /// A session of no engine, for the router's tests.
    #[cfg(test)]
    fn detached() -> Arc<Self> {
        let (to_engine, _) = mpsc::channel(1);
        let slot = Arc::new(Semaphore::new(1)).try_acquire_owned().expect("a slot");
        let session = Arc::new(Self::new(0, to_engine, CancellationToken::new(), Arc::default(), slot));
        session.lock().established = true;
        session
    }
}

impl State {
    fn take_parked(&mut self) -> VecDeque<String> {
        self.parked_bytes = 0;
        std::mem::take(&mut self.parked)
    }

    /// A message that answers no request: to the GET stream, else to an
    /// open POST stream, else parked; all under the routes' one lock.
    fn deliver_elsewhere(&mut self, text: String, connection: u64) {
        let mut text = text;
        if let Some(listener) = &self.listener {
            match listener.offer(text) {
                Ok(()) => return,
                Err(NotQueued::Full(unsent)) => text = unsent,
                Err(NotQueued::Gone(unsent)) => {
                    self.listener = None;
                    text = unsent;
                }
            }
        }
        for waiter in self.pending.values().filter(|waiter| waiter.stream) {
            match waiter.to.offer(text) {
                Ok(()) => return,
                Err(unsent) => text = unsent.into_text(),
            }
        }
        self.park(text, connection);
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
                "MCP endpoint: dropped messages for a client that opens no stream to read them, or does not read \
                 the ones it opened (oldest first)"
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
                Ok(Some(frame)) => session.deliver(frame),
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

/// The endpoint's sessions, by id, from the moment they open: at most
/// [`Sessions::max`] of them (see [`Sessions::make_room`]).
pub(super) struct Sessions {
    by_id: Mutex<HashMap<String, Arc<Session>>>,
    /// One permit per session, held until it is closed or ends.
    slots: Arc<Semaphore>,
    max: usize,
}

impl Sessions {
    /// At most `max` sessions (at least one).
    pub(super) fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            by_id: Mutex::default(),
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        // A map replaced entry by entry: valid after any panic.
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Most sessions at once.
    pub(super) fn max(&self) -> usize {
        self.max
    }

    /// A place for a new session: at the cap, the least recently used idle
    /// session (nothing running, no stream open) is closed to make one, as
    /// the gate closes the oldest idle handshake. `None`: every session is
    /// busy.
    pub(super) fn make_room(&self) -> Option<OwnedSemaphorePermit> {
        // A session closed here may have its place taken by another
        // `initialize` at once: try again, a few times.
        for _ in 0..3 {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                return Some(slot);
            }
            let evicted = {
                let mut by_id = self.lock();
                let oldest = by_id
                    .iter()
                    .filter(|(_, session)| session.is_idle(Duration::ZERO))
                    .min_by_key(|(_, session)| session.last_used())
                    .map(|(id, _)| id.clone())?;
                by_id.remove(&oldest)?
            };
            tracing::info!(
                connection = evicted.connection,
                max = self.max,
                "MCP endpoint: closing the least recently used idle session to make room for a new one"
            );
            evicted.close();
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// The session with this id, if it is open and its `initialize` succeeded.
    pub(super) fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock()
            .get(id)
            .filter(|session| session.lock().established)
            .cloned()
    }

    /// Count a session that just opened (its `initialize` under way).
    fn add(&self, session: &Arc<Session>) {
        self.lock().insert(session.id.clone(), session.clone());
    }

    /// Mark a session whose `initialize` succeeded as serving requests;
    /// `false` if it ended or was closed meanwhile.
    fn establish(&self, session: &Arc<Session>) -> bool {
        let by_id = self.lock();
        let present = by_id.get(&session.id).is_some_and(|found| Arc::ptr_eq(found, session));
        let mut state = session.lock();
        if !present || state.ended || session.closing.is_cancelled() {
            return false;
        }
        state.established = true;
        state.last_used = Instant::now();
        true
    }

    /// Take the session with this id out (DELETE), if its `initialize` succeeded.
    pub(super) fn take(&self, id: &str) -> Option<Arc<Session>> {
        let mut by_id = self.lock();
        if !by_id.get(id).is_some_and(|session| session.lock().established) {
            return None;
        }
        by_id.remove(id)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(message: &Value) -> Vec<u8> {
        message.to_string().into_bytes()
    }

    fn progress(token: &str, step: usize) -> Vec<u8> {
        frame(&serde_json::json!({"jsonrpc": "2.0", "method": PROGRESS,
            "params": {"progressToken": token, "progress": step}}))
    }

    /// Every message an inbox holds now.
    fn drain(inbox: &mut Inbox) -> Vec<String> {
        let mut context = Context::from_waker(std::task::Waker::noop());
        let mut messages = Vec::new();
        while let Poll::Ready(Some(message)) = inbox.poll_recv(&mut context) {
            messages.push(message);
        }
        messages
    }

    #[test]
    fn a_stream_nobody_reads_holds_up_nothing_else_and_keeps_a_place_for_its_response() {
        let session = Session::detached();
        let (unread, mut unread_inbox) = Waiter::new(Some("\"slow\"".to_owned()), true);
        let (json, mut json_inbox) = Waiter::new(None, false);
        let (slow, _) = session.register("1".to_owned(), unread).expect("registered");
        slow.sent();
        let (quick, _) = session.register("2".to_owned(), json).expect("registered");
        quick.sent();
        // Far more progress than the stream holds: routing never waits for it.
        for step in 0..10 * STREAM_QUEUE {
            session.deliver(progress("slow", step));
        }
        session.deliver(frame(&serde_json::json!({"jsonrpc": "2.0", "id": 2, "result": {}})));
        assert_eq!(
            drain(&mut json_inbox).len(),
            1,
            "the other request's answer got through"
        );
        session.deliver(frame(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {}})));
        let queued = drain(&mut unread_inbox);
        assert_eq!(queued.len(), STREAM_QUEUE, "{} queued", queued.len());
        assert!(
            queued[..STREAM_QUEUE - 1]
                .iter()
                .all(|message| message.contains(PROGRESS))
        );
        assert!(
            queued[STREAM_QUEUE - 1].contains("\"id\":1"),
            "the response had its place: {}",
            queued[STREAM_QUEUE - 1]
        );
        assert_eq!(session.lock().dropped_progress, (9 * STREAM_QUEUE + 1) as u64);
    }

    #[test]
    fn a_stream_holds_a_bounded_number_of_bytes_besides_its_response() {
        let session = Session::detached();
        let (listener, _) = session.open_listener().expect("a GET stream");
        let large = "x".repeat(STREAM_BYTES / 3);
        let notice = |text: &str| {
            frame(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"data": text}}))
        };
        for _ in 0..4 {
            session.deliver(notice(&large));
        }
        let mut listener = listener;
        assert_eq!(drain(&mut listener).len(), 2, "two thirds fit, not three");
        let state = session.lock();
        assert_eq!(state.parked.len(), 2, "the rest waits for the next stream");
    }

    #[test]
    fn what_no_stream_takes_waits_for_the_next_one_in_order() {
        let session = Session::detached();
        let notice = |n: usize| {
            frame(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"n": n}}))
        };
        session.deliver(notice(1));
        session.deliver(notice(2));
        let (mut listener, backlog) = session.open_listener().expect("a GET stream");
        assert_eq!(backlog.len(), 2);
        assert!(backlog[0].contains("\"n\":1") && backlog[1].contains("\"n\":2"));
        session.deliver(notice(3));
        let queued = drain(&mut listener);
        assert_eq!(queued.len(), 1);
        assert!(queued[0].contains("\"n\":3"));
    }

    #[test]
    fn an_answer_restarts_the_idle_clock_and_a_request_dropped_before_it_was_sent_is_withdrawn() {
        let session = Session::detached();
        let (waiter, _inbox) = Waiter::new(None, false);
        let (registration, _) = session.register("7".to_owned(), waiter).expect("registered");
        registration.sent();
        session.lock().last_used = Instant::now() - Duration::from_secs(60);
        assert!(!session.is_idle(Duration::from_secs(30)), "a request runs");
        session.deliver(frame(&serde_json::json!({"jsonrpc": "2.0", "id": 7, "result": {}})));
        assert!(!session.is_idle(Duration::from_secs(30)), "answered just now: not idle");
        let (waiter, _inbox) = Waiter::new(None, false);
        let (registration, _) = session.register("8".to_owned(), waiter).expect("registered");
        drop(registration);
        assert!(session.lock().pending.is_empty(), "withdrawn when its POST went away");
    }

    #[test]
    fn at_the_cap_the_least_recently_used_idle_session_makes_room() {
        let sessions = Sessions::new(2);
        let older = Session::detached();
        let newer = Session::detached();
        let busy = |session: &Arc<Session>| session.lock().open_streams = 1;
        for session in [&older, &newer] {
            // Detached sessions hold slots of their own; these hold the cap's.
            *session.slot.lock().expect("slot") = Some(sessions.make_room().expect("room"));
            sessions.add(session);
        }
        older.lock().last_used = Instant::now() - Duration::from_secs(5);
        let slot = sessions.make_room().expect("room made");
        assert!(older.closing.is_cancelled() && !newer.closing.is_cancelled());
        assert!(sessions.get(&older.id).is_none() && sessions.get(&newer.id).is_some());
        busy(&newer);
        assert!(sessions.make_room().is_none(), "every session busy");
        drop(slot);
        assert!(sessions.make_room().is_some(), "a place given back");
    }
}
