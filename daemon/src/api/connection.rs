//! One front-end connection: framing detection, the reader that dispatches
//! requests into the [`Methods`] of the RPC module, and the writer that
//! interleaves responses with pushed notifications.
//!
//! Flow control, per connection and never shared:
//! - responses go through a bounded queue to the writer; when a front-end
//!   stops reading, the queue fills, the reader stops reading that
//!   front-end's requests, and nobody else notices;
//! - notifications are read by the writer from the event hub's broadcast
//!   ring at the connection's own pace; if the front-end falls a whole ring
//!   behind, it gets one `events/lagged` notice naming the missed sequence
//!   numbers and resumes from the oldest one still held.
//!
//! Limits, so that one connection can hurt only itself:
//! - responses waiting for the writer are bounded in bytes
//!   ([`OUTBOUND_BYTES`]) as well as in number;
//! - no answer is larger than `MAX_MESSAGE_BYTES` (a larger one becomes a
//!   `messageTooLarge` error for that request), a batch included;
//! - at most [`MAX_IN_FLIGHT`] requests run at once; more wait for a slot
//!   (at most [`MAX_WAITING_REQUESTS`] of them, [`WAITING_BYTES`] in all)
//!   and beyond that are answered `tooManyRequests` at once. The reader
//!   never stops reading for them: a front-end's answers to the daemon's
//!   requests (elicitation) and its cancellations are always read, even
//!   when every running request waits on them;
//! - a batch holds at most [`MAX_BATCH_LEN`] requests, and its entries run
//!   as in-flight requests like any other (the same slots, cancellable), so
//!   the reader goes on reading; at most [`MAX_IN_FLIGHT`] batches wait for
//!   their entries;
//! - a started frame must be completed within the frame deadline, and
//!   `initialize` must come within the handshake deadline
//!   ([`super::ConnectionLimits`]); otherwise the connection is closed.

use std::sync::Arc;

use corral_protocol::framing::{self, FrameDecoder, FrameError, Framing};
use corral_protocol::{
    ErrorCode, EventsLagged, EventsLaggedNotification, Initialize, Notification, ProgressLagged,
    ProgressLaggedNotification, Request as _,
};
use jsonrpsee::types::{ErrorObjectOwned, Id, Params, Request};
use jsonrpsee::{ConnectionId, MethodCallback, MethodResponse, Methods};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Admission;
use super::methods::rpc_error;
use super::session::Session;
use crate::hub::events::{EventFrame, Subscription};
use crate::hub::link::{FrontEndError, Link};

/// Responses waiting for the writer; when full, the reader waits.
const OUTBOUND_QUEUE: usize = 64;
/// Bytes of responses waiting for the writer; when they are used up, whoever
/// answers next waits (the reader too), so a front-end that does not read
/// what it asked for holds at most this much of them in the daemon.
pub(crate) const OUTBOUND_BYTES: usize = 2 * corral_protocol::MAX_MESSAGE_BYTES;
/// Largest write buffer a connection keeps between writes.
const WIRE_BUFFER_KEPT: usize = 256 * 1024;
/// Most requests in one JSON-RPC batch.
pub(crate) const MAX_BATCH_LEN: usize = 256;
/// Requests of one connection running at once (the default of
/// `ConnectionLimits::in_flight`); more wait for a slot while the reader goes
/// on reading, so that answers and cancellations are never stuck behind them.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// Requests of one connection waiting for a slot (the default of
/// `ConnectionLimits::waiting_requests`): one full batch, so that a front-end
/// that pipelines or batches within reason never sees `tooManyRequests`.
pub(crate) const MAX_WAITING_REQUESTS: usize = MAX_BATCH_LEN;
/// Bytes of the requests waiting for a slot (their text, which their
/// unstarted futures hold): one largest message.
pub(crate) const WAITING_BYTES: usize = corral_protocol::MAX_MESSAGE_BYTES;
/// After a front-end closes its sending side, how long its running requests
/// may still answer before they are cancelled.
const EOF_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a write may still take once the daemon is shutting down.
const WRITE_GRACE_ON_SHUTDOWN: std::time::Duration = std::time::Duration::from_millis(250);
/// A connection must show its framing within this many bytes of whitespace.
const MAX_LEADING_WHITESPACE: usize = 4096;
/// Read buffer per connection, alive as long as the connection: kept small because
/// most connections are idle; larger messages simply take several reads.
const READ_CHUNK: usize = 4 * 1024;

/// What the reader (and in-flight requests) hand to the writer.
#[derive(Debug)]
enum Outbound {
    /// A complete JSON-RPC message (response or batch response), with the
    /// share of [`OUTBOUND_BYTES`] it holds until written.
    Message(String, OwnedSemaphorePermit),
    /// Start forwarding notifications (sent right after a successful `initialize`).
    Subscribe(Subscription),
}

/// Serve one connection until the front-end leaves, breaks the protocol
/// beyond repair, or the daemon shuts down.
pub(crate) async fn serve<S>(
    stream: S,
    hung_up: HungUp,
    session: Arc<Session>,
    link_messages: mpsc::Receiver<String>,
    methods: Methods,
    admission: Admission,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let span = tracing::info_span!("connection", id = session.id);
    let Admission {
        limits,
        evicted,
        partial_frames,
    } = admission;
    let handshake = handshake_expired(session.clone(), limits.handshake, evicted);
    let partial_frames = PartialFrameBudget {
        deadline: limits.frame,
        shared: partial_frames,
        held: 0,
    };
    let slots = RequestSlots::new(limits.in_flight, limits.waiting_requests);
    let serving = serve_until_done(
        stream,
        hung_up,
        session,
        link_messages,
        methods,
        (partial_frames, slots),
        shutdown,
    );
    async move {
        tokio::select! {
            () = serving => {}
            why = handshake => tracing::debug!(
                deadline = ?limits.handshake,
                "closing a connection that did not complete `initialize`: {why}"
            ),
        }
    }
    .instrument(span)
    .await;
}

/// Completes (saying why) once `deadline` has passed without `initialize`,
/// or when the connection is `evicted` before `initialize` to make room for
/// a newer one; never once initialized.
async fn handshake_expired(
    session: Arc<Session>,
    deadline: std::time::Duration,
    evicted: CancellationToken,
) -> &'static str {
    let why = tokio::select! {
        () = tokio::time::sleep(deadline) => "the handshake deadline passed",
        () = evicted.cancelled() => "too many connections are waiting for their handshake; this was the oldest",
    };
    if session.is_initialized() {
        std::future::pending::<()>().await;
    }
    why
}

/// Aborts a task when dropped: the connection's writer must not outlive it
/// (a writer stuck on a front-end that does not read would hold the socket).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What bounds this connection's unfinished message: its deadline, and this
/// connection's share of the daemon-wide budget for unfinished messages (as
/// many permits, bytes, as its decoder holds, given back as frames complete
/// and when the connection ends).
struct PartialFrameBudget {
    deadline: std::time::Duration,
    shared: Arc<Semaphore>,
    held: usize,
}

impl PartialFrameBudget {
    /// Hold `buffered` bytes: wait for more permits, or give some back.
    async fn hold(&mut self, buffered: usize) {
        if buffered > self.held {
            let more = u32::try_from(buffered - self.held).unwrap_or(u32::MAX);
            // The semaphore is never closed.
            if let Ok(permits) = self.shared.acquire_many(more).await {
                permits.forget();
                self.held += more as usize;
            }
        } else if buffered < self.held {
            self.shared.add_permits(self.held - buffered);
            self.held = buffered;
        }
    }
}

impl Drop for PartialFrameBudget {
    fn drop(&mut self) {
        self.shared.add_permits(self.held);
    }
}

/// [`serve`] without the handshake deadline (which may drop this future at any await).
async fn serve_until_done<S>(
    stream: S,
    hung_up: HungUp,
    session: Arc<Session>,
    link_messages: mpsc::Receiver<String>,
    methods: Methods,
    (mut partial_frames, slots): (PartialFrameBudget, RequestSlots),
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    // One block, as when this was `serve`'s instrumented body.
    {
        tracing::debug!("connected");
        let (mut reader, writer) = tokio::io::split(stream);
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut prefix = Vec::new();
        let framing = loop {
            let read = tokio::select! {
                () = shutdown.cancelled() => return,
                read = reader.read(&mut chunk) => read,
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(n) => prefix.extend_from_slice(&chunk[..n]),
            }
            match framing::detect(&prefix) {
                Ok(Some(framing)) => break framing,
                Ok(None) if prefix.len() <= MAX_LEADING_WHITESPACE => {}
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "closing connection");
                    let mut writer = writer;
                    let reply = error_message(Id::Null, rpc_error(ErrorCode::ParseError, error.to_string()));
                    let mut wire = Vec::new();
                    framing::encode(Framing::Lines, reply.as_bytes(), &mut wire);
                    let _ = writer.write_all(&wire).await;
                    let _ = writer.shutdown().await;
                    return;
                }
            }
        };
        tracing::debug!(%framing, "framing detected");
        let mut decoder = FrameDecoder::new(framing, corral_protocol::MAX_MESSAGE_BYTES);
        decoder.feed(&prefix);

        let (outbound, outbound_rx) = mpsc::channel(OUTBOUND_QUEUE);
        let mut writer_task = AbortOnDrop(tokio::spawn(
            write_loop(
                writer,
                framing,
                outbound_rx,
                (link_messages, session.link.clone()),
                shutdown.clone(),
            )
            .in_current_span(),
        ));
        let dispatcher = Dispatcher {
            session,
            methods,
            outbound: Outlet {
                sender: outbound,
                budget: Arc::new(Semaphore::new(OUTBOUND_BYTES)),
            },
            cancellable: Cancellable::default(),
            slots,
        };
        let mut in_flight = JoinSet::new();
        let end = dispatcher
            .read_loop(
                &mut reader,
                &mut decoder,
                &mut chunk,
                &mut in_flight,
                &mut partial_frames,
                &shutdown,
            )
            .await;
        tracing::debug!(?end, "reader finished");
        let Dispatcher { outbound, .. } = dispatcher;
        drop(outbound);
        let mut writer_done = false;
        if end == ReadEnd::Eof && hung_up() {
            // Gone entirely (Ctrl-C, a crash): nobody can read the answers.
            if !in_flight.is_empty() {
                tracing::debug!(requests = in_flight.len(), "front-end hung up; cancelling its requests");
            }
        } else if end == ReadEnd::Eof {
            // The front-end closed only its sending half (a script piping
            // requests in): answer what it asked, for a while; whatever still
            // runs after the grace is cancelled.
            tokio::select! {
                () = async { while in_flight.join_next().await.is_some() {} } => {}
                _ = &mut writer_task.0 => writer_done = true,
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(EOF_GRACE) => tracing::debug!(
                    requests = in_flight.len(),
                    "front-end closed its side; cancelling what it left running"
                ),
            }
        }
        in_flight.abort_all();
        if !writer_done {
            let _ = (&mut writer_task.0).await;
        }
        tracing::debug!("disconnected");
    }
}

/// Whether the front-end closed the connection entirely (not just its
/// sending half); asked once, at end of stream.
pub(crate) type HungUp = Box<dyn Fn() -> bool + Send + Sync>;

/// Why the reader stopped.
#[derive(Debug, PartialEq, Eq)]
enum ReadEnd {
    /// End of stream from the front-end.
    Eof,
    /// A read error, an unrecoverable framing error or a gone writer.
    Broken,
    /// The daemon is shutting down.
    Shutdown,
}

struct Dispatcher {
    session: Arc<Session>,
    methods: Methods,
    outbound: Outlet,
    cancellable: Cancellable,
    slots: RequestSlots,
}

/// Where this connection's requests run: at most `in_flight` at once, at
/// most `waiting` (and [`WAITING_BYTES`]) waiting for a slot, in the order
/// they came; beyond that a request is refused at once. Never awaited by the
/// reader.
struct RequestSlots {
    running: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    waiting_bytes: Arc<Semaphore>,
    /// Batches whose answer array waits for entries still running.
    batches: Arc<Semaphore>,
    in_flight: usize,
    max_waiting: usize,
}

/// A request's place: a running slot, or a place in the waiting room.
enum Admitted {
    Run(OwnedSemaphorePermit),
    /// The place (one request, and its bytes) is given up once it runs.
    Wait(OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl RequestSlots {
    fn new(in_flight: usize, waiting: usize) -> Self {
        let in_flight = in_flight.clamp(1, Semaphore::MAX_PERMITS);
        let max_waiting = waiting.min(Semaphore::MAX_PERMITS);
        Self {
            running: Arc::new(Semaphore::new(in_flight)),
            waiting: Arc::new(Semaphore::new(max_waiting)),
            waiting_bytes: Arc::new(Semaphore::new(WAITING_BYTES)),
            batches: Arc::new(Semaphore::new(in_flight)),
            in_flight,
            max_waiting,
        }
    }

    /// A slot for a request of `bytes`, or a place to wait for one; `None`
    /// when the waiting room is full too.
    fn admit(&self, bytes: usize) -> Option<Admitted> {
        // Free permits mean nobody waits (tokio hands released permits to
        // waiters first), so this never overtakes a waiting request.
        if let Ok(slot) = self.running.clone().try_acquire_owned() {
            return Some(Admitted::Run(slot));
        }
        let place = self.waiting.clone().try_acquire_owned().ok()?;
        let bytes = u32::try_from(bytes.clamp(1, WAITING_BYTES)).unwrap_or(u32::MAX);
        let held = self.waiting_bytes.clone().try_acquire_many_owned(bytes).ok()?;
        Some(Admitted::Wait(place, held))
    }

    /// The answer to a request refused by [`RequestSlots::admit`] (or to a
    /// batch entry when too many batches wait).
    fn refusal(&self) -> ErrorObjectOwned {
        rpc_error(
            ErrorCode::TooManyRequests,
            format!(
                "this connection already has {} requests running and {} waiting (or {WAITING_BYTES} bytes of \
                 them); nothing was done: send it again once some are answered",
                self.in_flight, self.max_waiting
            ),
        )
    }
}

impl Admitted {
    /// Wait for a running slot if there is none yet; hold it while the request runs.
    async fn run(self, running: Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        match self {
            Self::Run(slot) => Some(slot),
            // The semaphore is never closed; a place is given up once a slot is had.
            Self::Wait(_place, _bytes) => running.acquire_owned().await.ok(),
        }
    }
}

/// The way to the writer: a bounded queue, and a budget of bytes.
#[derive(Clone)]
struct Outlet {
    sender: mpsc::Sender<Outbound>,
    /// [`OUTBOUND_BYTES`] permits; a queued message holds as many as its length.
    budget: Arc<Semaphore>,
}

impl Outlet {
    /// Queue a message for the writer once its bytes fit; `false` if the writer is gone.
    async fn send(&self, message: String) -> bool {
        // No message is larger than the budget (answers are cut at
        // MAX_MESSAGE_BYTES), but never ask for more than exists.
        let bytes = u32::try_from(message.len().clamp(1, OUTBOUND_BYTES)).unwrap_or(u32::MAX);
        let Ok(permit) = self.budget.clone().acquire_many_owned(bytes).await else {
            return false;
        };
        self.sender.send(Outbound::Message(message, permit)).await.is_ok()
    }

    /// After the response to a successful `initialize` is queued (alone or in
    /// a batch), hand the session's subscription to the writer, so that no
    /// notification precedes that response. `false` if the writer is gone.
    async fn start_notifications(&self, session: &Session) -> bool {
        match session.take_subscription() {
            Some(subscription) => self.sender.send(Outbound::Subscribe(subscription)).await.is_ok(),
            None => true,
        }
    }
}

/// The boxed future jsonrpsee's async callbacks return.
type ResponseFuture = std::pin::Pin<Box<dyn std::future::Future<Output = MethodResponse> + Send + 'static>>;

/// A call's response, available now or later (with the request's id, to cancel it).
enum Dispatched {
    Now(MethodResponse),
    Later(Id<'static>, ResponseFuture),
}

/// Requests running as tasks, by request id (as JSON text), so that a
/// front-end can cancel them. A task removes its own entry before it answers;
/// whoever removes the entry decides who answers (the task, or the canceller
/// with `requestCancelled`), so a request is never answered twice. A batch
/// entry is always answered by its task, inside the batch's answer.
type Cancellable = Arc<std::sync::Mutex<std::collections::HashMap<String, Running>>>;

/// How to cancel a running request.
enum Running {
    /// A request of its own: abort the task; the canceller answers.
    Request(tokio::task::AbortHandle),
    /// An entry of a batch: tell its task, which answers `requestCancelled` in the batch.
    BatchEntry(CancellationToken),
}

fn lock_cancellable(
    cancellable: &Cancellable,
) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Running>> {
    // A map of abort handles is valid after any panic.
    cancellable.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Dispatcher {
    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        reader: &mut R,
        decoder: &mut FrameDecoder,
        chunk: &mut [u8],
        in_flight: &mut JoinSet<()>,
        partial_frames: &mut PartialFrameBudget,
        shutdown: &CancellationToken,
    ) -> ReadEnd {
        let frame_deadline = partial_frames.deadline;
        // When the frame being read began to arrive (bytes buffered, no frame
        // complete since): it must be complete within `frame_deadline`.
        let mut frame_started: Option<tokio::time::Instant> = None;
        loop {
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => {
                        frame_started = None;
                        if !self.handle_frame(frame, in_flight).await {
                            return ReadEnd::Broken;
                        }
                    }
                    Ok(None) => break,
                    Err(error) => {
                        tracing::warn!(%error, "closing connection: unusable message");
                        let code = match error {
                            FrameError::TooLarge { .. } => ErrorCode::MessageTooLarge,
                            FrameError::Unrecognized { .. } | FrameError::BadHeader(_) => ErrorCode::ParseError,
                        };
                        self.send(error_message(Id::Null, rpc_error(code, error.to_string())))
                            .await;
                        return ReadEnd::Broken;
                    }
                }
            }
            while in_flight.try_join_next().is_some() {}
            if decoder.buffered() == 0 {
                frame_started = None;
            } else if frame_started.is_none() {
                frame_started = Some(tokio::time::Instant::now());
            }
            let frame_expired = async {
                match frame_started {
                    Some(started) => tokio::time::sleep_until(started + frame_deadline).await,
                    None => std::future::pending().await,
                }
            };
            // What is buffered counts against the daemon-wide budget: the next
            // read waits until it fits (other connections finish their
            // messages or are closed at their deadline).
            let read = tokio::select! {
                () = shutdown.cancelled() => return ReadEnd::Shutdown,
                read = async {
                    partial_frames.hold(decoder.buffered()).await;
                    reader.read(chunk).await
                } => read,
                () = frame_expired => {
                    tracing::info!(
                        buffered = decoder.buffered(),
                        deadline = ?frame_deadline,
                        "closing connection: a message was started but not completed in time"
                    );
                    let message = format!(
                        "a message was started but not completed within {}s; closing the connection",
                        frame_deadline.as_secs_f64()
                    );
                    self.send(error_message(Id::Null, rpc_error(ErrorCode::InvalidRequest, message))).await;
                    return ReadEnd::Broken;
                }
            };
            match read {
                Ok(0) => return ReadEnd::Eof,
                Ok(n) => decoder.feed(&chunk[..n]),
                Err(error) => {
                    tracing::debug!(%error, "read failed");
                    return ReadEnd::Broken;
                }
            }
        }
    }

    /// Send a message to the writer; `false` if the writer is gone.
    async fn send(&self, message: String) -> bool {
        self.outbound.send(message).await
    }

    /// Handle one frame; `false` when the connection should close.
    async fn handle_frame(&self, frame: Vec<u8>, in_flight: &mut JoinSet<()>) -> bool {
        let text = match String::from_utf8(frame) {
            Ok(text) => text,
            Err(_) => {
                let error = rpc_error(ErrorCode::ParseError, "message is not valid UTF-8");
                return self.send(error_message(Id::Null, error)).await;
            }
        };
        if text.trim_start().starts_with('[') {
            return self.handle_batch(&text, in_flight).await;
        }
        let bytes = text.len();
        match self.dispatch(&text) {
            None => true,
            Some(Dispatched::Now(response)) => {
                self.send(response.into_json().get().to_owned()).await
                    && self.outbound.start_notifications(&self.session).await
            }
            Some(Dispatched::Later(id, future)) => {
                let key = id_key(&id);
                if lock_cancellable(&self.cancellable).contains_key(&key) {
                    // Two requests with one id could not be told apart (answers, cancels).
                    let error = rpc_error(
                        ErrorCode::InvalidRequest,
                        format!("a request with id {key} is already in flight on this connection"),
                    );
                    return self.send(error_message(id, error)).await;
                }
                let Some(admitted) = self.slots.admit(bytes) else {
                    tracing::debug!(request = %key, "request refused: too many running and waiting");
                    return self.send(error_message(id, self.slots.refusal())).await;
                };
                let running = self.slots.running.clone();
                let outbound = self.outbound.clone();
                let cancellable = self.cancellable.clone();
                // Held across spawn and insert, so the task cannot look for its
                // entry before it exists.
                let mut registry = lock_cancellable(&self.cancellable);
                let task_key = key.clone();
                let handle = in_flight.spawn(
                    async move {
                        let _slot = admitted.run(running).await;
                        let response = future.await;
                        if lock_cancellable(&cancellable).remove(&task_key).is_none() {
                            return; // cancelled: the canceller answered
                        }
                        outbound.send(response.into_json().get().to_owned()).await;
                    }
                    .in_current_span(),
                );
                registry.insert(key, Running::Request(handle));
                true
            }
        }
    }

    /// A JSON-RPC batch: one array of responses, in the order of the calls.
    ///
    /// Calls answered at once (`initialize`, errors) are answered in place;
    /// the others run as in-flight requests (the same [`RequestSlots`], so an
    /// entry may wait for a slot or be refused; cancellable by id), and a
    /// task of the connection sends the array when the last one is done, so
    /// the reader goes on reading meanwhile.
    async fn handle_batch(&self, text: &str, in_flight: &mut JoinSet<()>) -> bool {
        let calls: Vec<&RawValue> = match serde_json::from_str(text) {
            Ok(calls) => calls,
            Err(error) => {
                let error = rpc_error(ErrorCode::ParseError, format!("invalid JSON: {error}"));
                return self.send(error_message(Id::Null, error)).await;
            }
        };
        if calls.is_empty() {
            let error = rpc_error(ErrorCode::InvalidRequest, "empty batch");
            return self.send(error_message(Id::Null, error)).await;
        }
        if calls.len() > MAX_BATCH_LEN {
            let error = rpc_error(
                ErrorCode::InvalidRequest,
                format!(
                    "a batch may hold at most {MAX_BATCH_LEN} requests; this one has {}",
                    calls.len()
                ),
            );
            return self.send(error_message(Id::Null, error)).await;
        }
        let mut slots = Vec::with_capacity(calls.len());
        // This batch's place among the batches waiting for their entries,
        // taken with its first entry that runs; `Err` if there was none.
        let mut batch_place: Option<Result<OwnedSemaphorePermit, ()>> = None;
        for call in calls {
            match self.dispatch(call.get()) {
                None => {}
                Some(Dispatched::Now(response)) => slots.push(BatchSlot::Ready(response.into_json())),
                Some(Dispatched::Later(id, future)) => {
                    let key = id_key(&id);
                    let mut registry = lock_cancellable(&self.cancellable);
                    if registry.contains_key(&key) {
                        let error = rpc_error(
                            ErrorCode::InvalidRequest,
                            format!("a request with id {key} is already in flight on this connection"),
                        );
                        slots.push(BatchSlot::Ready(MethodResponse::error(id, error).into_json()));
                        continue;
                    }
                    let place =
                        batch_place.get_or_insert_with(|| self.slots.batches.clone().try_acquire_owned().map_err(drop));
                    let admitted = if place.is_ok() {
                        self.slots.admit(call.get().len())
                    } else {
                        None
                    };
                    let Some(admitted) = admitted else {
                        tracing::debug!(request = %key, "batch entry refused: too many running and waiting");
                        slots.push(BatchSlot::Ready(
                            MethodResponse::error(id, self.slots.refusal()).into_json(),
                        ));
                        continue;
                    };
                    let running = self.slots.running.clone();
                    let cancel = CancellationToken::new();
                    let (answer, answered) = oneshot::channel();
                    let cancellable = self.cancellable.clone();
                    let task_cancel = cancel.clone();
                    let task_key = key.clone();
                    in_flight.spawn(
                        async move {
                            let response = tokio::select! {
                                response = async {
                                    let _slot = admitted.run(running).await;
                                    future.await
                                } => response,
                                () = task_cancel.cancelled() => MethodResponse::error(
                                    id,
                                    rpc_error(ErrorCode::RequestCancelled, "request cancelled by the client"),
                                ),
                            };
                            lock_cancellable(&cancellable).remove(&task_key);
                            let _ = answer.send(response.into_json());
                        }
                        .in_current_span(),
                    );
                    registry.insert(key, Running::BatchEntry(cancel));
                    slots.push(BatchSlot::Pending(answered));
                }
            }
        }
        if slots.is_empty() {
            return true;
        }
        if slots.iter().all(|slot| matches!(slot, BatchSlot::Ready(_))) {
            let Some(batch) = assemble_batch(slots).await else {
                return false;
            };
            return self.send(batch).await && self.outbound.start_notifications(&self.session).await;
        }
        let outbound = self.outbound.clone();
        let session = self.session.clone();
        // Not a request slot: its entries need those, and they are bounded already.
        let batch_place = batch_place.and_then(Result::ok);
        in_flight.spawn(
            async move {
                let _batch_place = batch_place;
                if let Some(batch) = assemble_batch(slots).await
                    && outbound.send(batch).await
                {
                    outbound.start_notifications(&session).await;
                }
            }
            .in_current_span(),
        );
        true
    }

    /// Route one message; `None` when it needs no answer (a notification or a response).
    fn dispatch(&self, text: &str) -> Option<Dispatched> {
        let request: Request<'_> = match serde_json::from_str(text) {
            Ok(request) => request,
            Err(parse_error) => return self.not_a_request(text, &parse_error).map(Dispatched::Now),
        };
        let id = request.id.clone().into_owned();
        let method = request.method.as_ref();
        self.session.link.touch();
        if method != Initialize::METHOD && !self.session.is_initialized() {
            return Some(Dispatched::Now(MethodResponse::error(
                id,
                rpc_error(
                    ErrorCode::NotInitialized,
                    format!("call `initialize` before `{method}`"),
                ),
            )));
        }
        let params = Params::new(request.params.as_deref().map(RawValue::get));
        let mut extensions = request.extensions.clone();
        extensions.insert(self.session.clone());
        let max = corral_protocol::MAX_MESSAGE_BYTES;
        let response = match self.methods.method(method) {
            Some(MethodCallback::Sync(callback)) => {
                Dispatched::Now(not_too_big(method, id.clone(), callback(id, params, max, extensions)))
            }
            Some(MethodCallback::Async(callback)) => {
                let connection = ConnectionId(usize::try_from(self.session.id).unwrap_or(usize::MAX));
                let answer = callback(id.clone(), params.into_owned(), connection, max, extensions);
                let method = method.to_owned();
                let response_id = id.clone();
                Dispatched::Later(
                    id,
                    Box::pin(async move { not_too_big(&method, response_id, answer.await) }),
                )
            }
            Some(MethodCallback::Subscription(_) | MethodCallback::Unsubscription(_)) | None => {
                Dispatched::Now(MethodResponse::error(
                    id,
                    rpc_error(ErrorCode::MethodNotFound, format!("method `{method}` not found")),
                ))
            }
        };
        Some(response)
    }

    /// Classify a message that is not a well-formed request.
    fn not_a_request(&self, text: &str, parse_error: &serde_json::Error) -> Option<MethodResponse> {
        let value: serde_json::Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(error) => {
                return Some(MethodResponse::error(
                    Id::Null,
                    rpc_error(ErrorCode::ParseError, format!("invalid JSON: {error}")),
                ));
            }
        };
        let object = value.as_object();
        let has = |key: &str| object.is_some_and(|o| o.contains_key(key));
        let jsonrpc_ok = object.and_then(|o| o.get("jsonrpc")).and_then(|v| v.as_str()) == Some("2.0");
        if jsonrpc_ok && has("method") && !has("id") {
            let method = object
                .and_then(|o| o.get("method"))
                .and_then(|m| m.as_str())
                .unwrap_or("");
            let params = object.and_then(|o| o.get("params"));
            // LSP's `$/cancelRequest {id}`, or MCP's `notifications/cancelled {requestId}`.
            let target = match method {
                CANCEL_REQUEST => params.and_then(|p| p.get("id")),
                CANCELLED => params.and_then(|p| p.get("requestId")),
                _ => {
                    tracing::debug!(method, "ignoring notification from front-end");
                    return None;
                }
            };
            return target.and_then(|target| self.cancel(target));
        }
        if jsonrpc_ok && has("id") && !has("method") && (has("result") || has("error")) {
            self.answer(object?);
            return None;
        }
        let id = match object.and_then(|o| o.get("id")) {
            Some(serde_json::Value::Number(n)) => n.as_u64().map_or(Id::Null, Id::Number),
            Some(serde_json::Value::String(s)) => Id::Str(s.clone().into()),
            _ => Id::Null,
        };
        Some(MethodResponse::error(
            id,
            rpc_error(
                ErrorCode::InvalidRequest,
                format!("not a JSON-RPC 2.0 request: {parse_error}"),
            ),
        ))
    }
}

impl Dispatcher {
    /// A front-end's response to a request of the daemon's: hand it to the waiter.
    fn answer(&self, response: &serde_json::Map<String, serde_json::Value>) {
        let Some(id) = response.get("id").and_then(serde_json::Value::as_u64) else {
            tracing::debug!("ignoring a response with an id the daemon never sent");
            return;
        };
        let answer = match response.get("error") {
            Some(error) => Err(FrontEndError::Error {
                code: error.get("code").and_then(serde_json::Value::as_i64).unwrap_or(0),
                message: error
                    .get("message")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                data: error.get("data").cloned(),
            }),
            None => Ok(response.get("result").cloned().unwrap_or(serde_json::Value::Null)),
        };
        if !self.session.link.resolve(id, answer) {
            tracing::debug!(id, "ignoring a response to no pending request (answered late or twice)");
        }
    }
}

/// LSP's cancellation notification.
const CANCEL_REQUEST: &str = "$/cancelRequest";
/// MCP's cancellation notification, accepted too.
const CANCELLED: &str = "notifications/cancelled";

/// A request id as a map key: its JSON text (`5`, `"abc"`).
fn id_key(id: &Id<'_>) -> String {
    serde_json::to_string(id).unwrap_or_default()
}

impl Dispatcher {
    /// Cancel the in-flight request `target` (an id as JSON): abort its task
    /// (which drops its MCP request, so rmcp sends `notifications/cancelled`
    /// to the server) and answer it with `requestCancelled`. Nothing happens
    /// if it already answered.
    fn cancel(&self, target: &serde_json::Value) -> Option<MethodResponse> {
        let key = target.to_string();
        let handle = match lock_cancellable(&self.cancellable).remove(&key)? {
            Running::Request(handle) => handle,
            Running::BatchEntry(cancel) => {
                // Answered by the entry's task, inside the batch.
                tracing::debug!(request = %key, "batch entry cancelled by the front-end");
                cancel.cancel();
                return None;
            }
        };
        handle.abort();
        tracing::debug!(request = %key, "request cancelled by the front-end");
        let id = match target {
            serde_json::Value::Number(number) => Id::Number(number.as_u64()?),
            serde_json::Value::String(text) => Id::Str(text.clone().into()),
            _ => return None,
        };
        Some(MethodResponse::error(
            id,
            rpc_error(ErrorCode::RequestCancelled, "request cancelled by the client"),
        ))
    }
}

fn error_message(id: Id<'_>, error: ErrorObjectOwned) -> String {
    MethodResponse::error(id, error).into_json().get().to_owned()
}

/// One answer of a batch: there already, or to come from its task.
enum BatchSlot {
    Ready(Box<RawValue>),
    Pending(oneshot::Receiver<Box<RawValue>>),
}

/// The batch's answer array, in order, once every entry answered; a
/// `messageTooLarge` error instead once the answers pass `MAX_MESSAGE_BYTES`
/// (the ones still to come are awaited and dropped, so memory stays bounded).
/// `None` if an entry's task is gone (the connection is closing).
async fn assemble_batch(slots: Vec<BatchSlot>) -> Option<String> {
    let max = corral_protocol::MAX_MESSAGE_BYTES;
    let mut answers = Vec::with_capacity(slots.len());
    let mut bytes = 0usize;
    let mut too_large = false;
    for slot in slots {
        let answer = match slot {
            BatchSlot::Ready(answer) => answer,
            BatchSlot::Pending(answered) => answered.await.ok()?,
        };
        bytes += answer.get().len() + 1;
        if bytes > max {
            too_large = true;
            answers.clear();
        }
        if !too_large {
            answers.push(answer);
        }
    }
    if too_large {
        let error = rpc_error(
            ErrorCode::MessageTooLarge,
            format!("the answers to this batch are larger than {max} bytes; send fewer requests per batch"),
        );
        return Some(error_message(Id::Null, error));
    }
    serde_json::to_string(&answers).ok()
}

/// jsonrpsee answers a result larger than the limit with its own `-32008
/// "Response is too big"`, which is our `notPermitted`: make it the
/// documented `messageTooLarge`, naming the method.
fn not_too_big(method: &str, id: Id<'static>, response: MethodResponse) -> MethodResponse {
    if response.as_error_code() != Some(jsonrpsee::types::error::OVERSIZED_RESPONSE_CODE) {
        return response;
    }
    let message = serde_json::from_str::<serde_json::Value>(response.as_json().get())
        .ok()
        .and_then(|value| value["error"]["message"].as_str().map(str::to_owned));
    if message.as_deref() != Some(jsonrpsee::types::error::OVERSIZED_RESPONSE_MSG) {
        return response; // one of ours (`notPermitted`)
    }
    MethodResponse::error(
        id,
        rpc_error(
            ErrorCode::MessageTooLarge,
            format!(
                "the answer to `{method}` is larger than {} bytes",
                corral_protocol::MAX_MESSAGE_BYTES
            ),
        ),
    )
}

/// Write responses and notifications to the front-end until the reader is done
/// (and the queue drained) or the front-end is gone.
///
/// On shutdown, a write that does not finish within [`WRITE_GRACE_ON_SHUTDOWN`]
/// (a front-end that does not read) is abandoned rather than holding up the
/// daemon's exit.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    framing: Framing,
    mut outbound: mpsc::Receiver<Outbound>,
    (mut link_messages, link): (mpsc::Receiver<String>, Arc<Link>),
    shutdown: CancellationToken,
) {
    let mut events: Option<broadcast::Receiver<Arc<EventFrame>>> = None;
    // The daemon's requests and targeted notifications: only after the `initialize` response.
    let mut link_open = false;
    let mut last_delivered = 0;
    let mut wire = Vec::with_capacity(4096);
    loop {
        wire.clear();
        // The written response's share of the byte budget, released once written.
        let mut _written_budget = None;
        tokio::select! {
            biased;
            message = outbound.recv() => match message {
                None => break,
                Some(Outbound::Message(message, budget)) => {
                    _written_budget = Some(budget);
                    // What the daemon queued for this front-end before this
                    // response goes first: a call's progress precedes its result.
                    while link_open && let Ok(earlier) = link_messages.try_recv() {
                        framing::encode(framing, earlier.as_bytes(), &mut wire);
                    }
                    if link_open {
                        encode_missed_progress(&link, framing, &mut wire);
                    }
                    framing::encode(framing, message.as_bytes(), &mut wire);
                }
                Some(Outbound::Subscribe(subscription)) => {
                    last_delivered = subscription.last_seq;
                    events = Some(subscription.receiver);
                    link_open = true;
                    continue;
                }
            },
            message = link_messages.recv(), if link_open => match message {
                Some(message) => {
                    framing::encode(framing, message.as_bytes(), &mut wire);
                    encode_missed_progress(&link, framing, &mut wire);
                }
                None => {
                    link_open = false;
                    continue;
                }
            },
            event = next_event(&mut events) => match event {
                Ok(frame) => {
                    if frame.seq <= last_delivered {
                        continue;
                    }
                    last_delivered = frame.seq;
                    framing::encode(framing, frame.json.as_bytes(), &mut wire);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    let notice = EventsLagged::new(missed, last_delivered + 1);
                    tracing::warn!(missed, first = notice.first_missed_seq, "front-end fell behind; notifications dropped for it");
                    last_delivered = notice.last_missed_seq;
                    let message = serde_json::json!({
                        "jsonrpc": "2.0",
                        "method": EventsLaggedNotification::METHOD,
                        "params": notice,
                    });
                    framing::encode(framing, message.to_string().as_bytes(), &mut wire);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    events = None;
                    continue;
                }
            },
        }
        let written = tokio::select! {
            written = writer.write_all(&wire) => written,
            () = async { shutdown.cancelled().await; tokio::time::sleep(WRITE_GRACE_ON_SHUTDOWN).await } => {
                tracing::debug!("abandoning a write to a front-end that does not read: shutting down");
                return;
            }
        };
        if let Err(error) = written {
            tracing::debug!(%error, "write failed; front-end gone");
            return;
        }
        if wire.capacity() > WIRE_BUFFER_KEPT {
            // Not held for the connection's life after one large answer.
            wire = Vec::with_capacity(4096);
        }
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}

/// `mcpServer/progress/lagged`, if progress for this front-end was dropped
/// since it was last told. The writer checks after each message of the link
/// and before each response: progress is dropped only when the link's queue
/// is full (so a message of the link is still to be written after the drop),
/// and it is counted before its request's answer is handed over (so the
/// notice precedes that answer).
fn encode_missed_progress(link: &Link, framing: Framing, wire: &mut Vec<u8>) {
    let missed = link.take_missed_progress();
    if missed == 0 {
        return;
    }
    // Debug only: a chatty server and a slow front-end would make this one
    // line per message written; the count is in `daemon/status`.
    tracing::debug!(missed, "front-end fell behind; progress notifications dropped for it");
    let message = serde_json::json!({
        "jsonrpc": "2.0",
        "method": ProgressLaggedNotification::METHOD,
        "params": ProgressLagged::new(missed),
    });
    framing::encode(framing, message.to_string().as_bytes(), wire);
}

/// The next notification, or never when not subscribed.
async fn next_event(
    events: &mut Option<broadcast::Receiver<Arc<EventFrame>>>,
) -> Result<Arc<EventFrame>, broadcast::error::RecvError> {
    match events {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}
