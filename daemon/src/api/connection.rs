//! One front-end connection: framing detection, the reader that dispatches
//! requests into the methods of the connection's mode ([`MethodTables`]),
//! and the writer that interleaves responses with pushed notifications.
//!
//! Flow control, per connection and never shared:
//! - while the writer has nothing to write, it lends the socket
//!   ([`Socket`]): an answer is written by the request itself (the reader
//!   polls it), without
//!   waking the writer, if nothing else waits to be written before it and
//!   the socket takes it at once; what the socket does not take at once is
//!   left for the writer, which writes it before anything else;
//! - other responses go through a bounded queue to the writer; when a front-end
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

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use corral_protocol::framing::{self, FrameDecoder, FrameError, Framing};
use corral_protocol::{
    ErrorCode, EventsLagged, EventsLaggedNotification, Notification, ProgressLagged, ProgressLaggedNotification,
};
use jsonrpsee::types::Id;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Admission;
use super::router::MethodTables;
use super::rpc::rpc_error;
use super::session::{Session, WriterStart};
use crate::hub::events::EventFrame;
use crate::hub::link::{Dialect, Link};

use super::dispatch::{Cancellable, Dispatcher, RequestSlots, error_message};
use super::in_flight::InFlight;
use super::wake_gate::WakeGate;

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
pub(super) enum Outbound {
    /// A complete JSON-RPC message (response or batch response), with the
    /// share of [`OUTBOUND_BYTES`] it holds until written.
    Message(String, OwnedSemaphorePermit),
    /// Start forwarding notifications (sent right after a successful `initialize`).
    Start(WriterStart),
}

/// Serve one connection until the front-end leaves, breaks the protocol
/// beyond repair, or the daemon shuts down.
pub(crate) async fn serve<S>(
    stream: S,
    hung_up: HungUp,
    session: Arc<Session>,
    link_messages: mpsc::Receiver<String>,
    methods: MethodTables,
    admission: Admission,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    // A debug span: every poll of the connection's tasks enters and leaves it, which at the
    // default (info) level cost about a tenth of a `tools/call`'s instructions in corrald.
    // The lines above debug name the connection themselves.
    let span = tracing::debug_span!("connection", id = session.id);
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
        // The handshake's deadline is polled only when its timer or eviction woke it, not
        // at every wake of the connection (each poll of its token takes two locks).
        let (mut serving, mut handshake) = (std::pin::pin!(serving), std::pin::pin!(handshake));
        let handshake_gate = WakeGate::new();
        let why = poll_fn(|cx| {
            if serving.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            handshake_gate.poll(handshake.as_mut(), cx).map(Some)
        })
        .await;
        if let Some(why) = why {
            tracing::debug!(
                deadline = ?limits.handshake,
                "closing a connection that did not complete `initialize`: {why}"
            );
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
    methods: MethodTables,
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
                    tracing::warn!(connection = session.id, %error, "closing connection");
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
        let socket = Arc::new(Socket::new(framing, session.link.clone()));
        let mut writer_task = AbortOnDrop(tokio::spawn(
            write_loop(
                Box::new(writer),
                socket.clone(),
                outbound_rx,
                link_messages,
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
                socket,
            },
            cancellable: Cancellable::default(),
            slots,
        };
        let mut in_flight = InFlight::new();
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
                () = in_flight.finish() => {}
                _ = &mut writer_task.0 => writer_done = true,
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(EOF_GRACE) => tracing::debug!(
                    requests = in_flight.len(),
                    "front-end closed its side; cancelling what it left running"
                ),
            }
        }
        // What still runs is cancelled; then the outlet goes, and the writer
        // ends once it has written what is queued.
        drop(in_flight);
        drop(dispatcher);
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

/// The way to the front-end: the socket when the writer lends it, else a
/// bounded queue to the writer, and a budget of bytes.
#[derive(Clone)]
pub(super) struct Outlet {
    sender: mpsc::Sender<Outbound>,
    /// [`OUTBOUND_BYTES`] permits; a queued message holds as many as its length.
    budget: Arc<Semaphore>,
    socket: Arc<Socket>,
}

impl Outlet {
    /// Write a message to the front-end now if the writer lends the socket
    /// and nothing waits to go before it ([`Socket::write_now`]); else queue
    /// it for the writer once its bytes fit. `false` if the writer is gone.
    pub(super) async fn send(&self, message: String) -> bool {
        if self.socket.write_now(&message, &self.sender) {
            return true;
        }
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
    pub(super) async fn start_notifications(&self, session: &Session) -> bool {
        match session.take_writer_start() {
            Some(start) => self.sender.send(Outbound::Start(start)).await.is_ok(),
            None => true,
        }
    }
}

impl Dispatcher {
    async fn read_loop<'a, R: AsyncRead + Unpin>(
        &'a self,
        reader: &mut R,
        decoder: &mut FrameDecoder,
        chunk: &mut [u8],
        in_flight: &mut InFlight<'a>,
        partial_frames: &mut PartialFrameBudget,
        shutdown: &CancellationToken,
    ) -> ReadEnd {
        let frame_deadline = partial_frames.deadline;
        // When the frame being read began to arrive (bytes buffered, no frame
        // complete since): it must be complete within `frame_deadline`.
        let mut frame_started: Option<tokio::time::Instant> = None;
        // Made once: a waiter made and dropped at every read took the token's lock twice.
        let mut shut_down = std::pin::pin!(shutdown.cancelled());
        let (shutdown_gate, read_gate) = (WakeGate::new(), WakeGate::new());
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
                        tracing::warn!(connection = self.session.id, %error, "closing connection: unusable message");
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
            if decoder.buffered() == 0 {
                frame_started = None;
            } else if frame_started.is_none() {
                frame_started = Some(tokio::time::Instant::now());
            }
            // What is buffered counts against the daemon-wide budget: the next
            // read waits until it fits (other connections finish their
            // messages or are closed at their deadline).
            let event = {
                let read = async {
                    partial_frames.hold(decoder.buffered()).await;
                    reader.read(chunk).await
                };
                let frame_expired = async {
                    match frame_started {
                        Some(started) => tokio::time::sleep_until(started + frame_deadline).await,
                        None => std::future::pending().await,
                    }
                };
                let (mut read, mut frame_expired) = (std::pin::pin!(read), std::pin::pin!(frame_expired));
                read_gate.open();
                // In this order: the requests just dispatched are polled (a call written on its
                // server's pipe) before the socket is read again. The token and the socket are
                // polled only when they woke (most wakes are a request's answer).
                poll_fn(|cx| {
                    if shutdown_gate.poll(shut_down.as_mut(), cx).is_ready() {
                        return Poll::Ready(Waited::Shutdown);
                    }
                    let _ = in_flight.poll_run(cx); // never done: more come between two waits
                    if let Poll::Ready(read) = read_gate.poll(read.as_mut(), cx) {
                        return Poll::Ready(Waited::Read(read));
                    }
                    if frame_started.is_some() && frame_expired.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Waited::FrameExpired);
                    }
                    Poll::Pending
                })
                .await
            };
            let read = match event {
                Waited::Read(read) => read,
                Waited::Shutdown => return ReadEnd::Shutdown,
                Waited::FrameExpired => {
                    tracing::info!(
                        connection = self.session.id,
                        buffered = decoder.buffered(),
                        deadline = ?frame_deadline,
                        "closing connection: a message was started but not completed in time"
                    );
                    let message = format!(
                        "a message was started but not completed within {}s; closing the connection",
                        frame_deadline.as_secs_f64()
                    );
                    self.send(error_message(Id::Null, rpc_error(ErrorCode::InvalidRequest, message)))
                        .await;
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
}

/// What the reader's wait ended with.
enum Waited {
    Read(std::io::Result<usize>),
    Shutdown,
    FrameExpired,
}

/// The writing half of a connection's stream.
type SocketWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// The connection's socket, lent by the writer to whoever answers while it
/// has nothing to write, so that an answer can be written by its request,
/// in the reader's task (one hand-off less per call, and no queue).
///
/// Order: a direct write happens only while the writer holds nothing and
/// the queues to it are empty, checked under the lock the writer takes the
/// socket back with, in the same lock as it takes a message off its queue;
/// so what was queued for the front-end before an answer (its request's
/// progress, a dropped-progress notice, an earlier answer, the `initialize`
/// answer before the notifications it opens) is written before it. Nor is
/// an answer written directly while a notification of the event stream
/// published before it is not delivered yet (the hub's watermark against
/// the writer's), and the writer writes the notifications it can read
/// before each answer it writes: an answer that shows a server's new status
/// never overtakes the notification of it.
pub(super) struct Socket {
    lent: Mutex<Lent>,
    /// Tells the writer that a direct write left bytes for it.
    leftover: Notify,
    /// The hub's newest sequence number published, once the front-end gets
    /// the event stream (set by the writer at its `Start`).
    published: OnceLock<Arc<AtomicU64>>,
    framing: Framing,
    link: Arc<Link>,
}

#[derive(Default)]
struct Lent {
    /// The socket, while the writer has it or lends it (`None` once the writer
    /// is gone or a direct write failed).
    writer: Option<SocketWriter>,
    /// The writer is waiting for something to write: the socket is anyone's.
    idle: bool,
    /// The last direct write; `wire[written..]` did not fit and is the writer's to write first.
    wire: Vec<u8>,
    written: usize,
    /// The newest sequence number of the event stream the writer delivered.
    delivered: u64,
}

impl Socket {
    fn new(framing: Framing, link: Arc<Link>) -> Self {
        Self {
            lent: Mutex::new(Lent::default()),
            leftover: Notify::new(),
            published: OnceLock::new(),
            framing,
            link,
        }
    }

    fn lent(&self) -> MutexGuard<'_, Lent> {
        // A socket and a buffer are usable after any panic.
        self.lent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write `message` now if the writer lends the socket and nothing waits
    /// to be written before it; `false` when it must go through the
    /// writer's queue instead. What the socket does not take at once is
    /// left to the writer (which writes it before anything else); a failed
    /// write leaves the front-end gone, and the writer ends.
    fn write_now(&self, message: &str, queue: &mpsc::Sender<Outbound>) -> bool {
        let mut lent = self.lent();
        let lent = &mut *lent;
        if !lent.idle
            || lent.written < lent.wire.len()
            || queue.capacity() < queue.max_capacity()
            || self.link.has_backlog()
            || self
                .published
                .get()
                .is_some_and(|published| published.load(Ordering::Acquire) > lent.delivered)
        {
            return false;
        }
        let Some(writer) = lent.writer.as_mut() else {
            return false;
        };
        if lent.wire.capacity() > WIRE_BUFFER_KEPT {
            lent.wire = Vec::new();
        }
        lent.wire.clear();
        lent.written = 0;
        framing::encode(self.framing, message.as_bytes(), &mut lent.wire);
        // Never wait here: a `Pending` leaves the rest to the writer, which waits on the socket.
        let mut cx = Context::from_waker(Waker::noop());
        while lent.written < lent.wire.len() {
            match Pin::new(&mut *writer).poll_write(&mut cx, &lent.wire[lent.written..]) {
                Poll::Ready(Ok(written)) if written > 0 => lent.written += written,
                Poll::Ready(result) => {
                    tracing::debug!(error = ?result.err(), "write failed; front-end gone");
                    lent.writer = None;
                    lent.wire.clear();
                    lent.written = 0;
                    self.leftover.notify_one();
                    return true;
                }
                Poll::Pending => {
                    self.leftover.notify_one();
                    return true;
                }
            }
        }
        true
    }

    /// The writer waits, having delivered the event stream up to `delivered`: lend the socket.
    fn lend(&self, writer: SocketWriter, delivered: u64) {
        let mut lent = self.lent();
        lent.writer = Some(writer);
        lent.idle = true;
        lent.delivered = delivered;
    }

    /// The writer's next message from its queues, the socket taken back (no
    /// longer lent) in the same lock as the message is taken off its queue.
    fn poll_queued(
        &self,
        cx: &mut Context<'_>,
        outbound: &mut mpsc::Receiver<Outbound>,
        link_messages: Option<&mut mpsc::Receiver<String>>,
    ) -> Poll<Queued> {
        let mut lent = self.lent();
        let queued = match outbound.poll_recv(cx) {
            Poll::Ready(message) => Queued::Outbound(message),
            Poll::Pending => match link_messages.map(|link| link.poll_recv(cx)) {
                Some(Poll::Ready(message)) => Queued::Link(message),
                Some(Poll::Pending) | None => return Poll::Pending,
            },
        };
        lent.idle = false;
        Poll::Ready(queued)
    }

    /// The writer has something to write: take the socket back, with what
    /// a direct write left unwritten (appended to `wire`, to go first).
    /// `None` if a direct write found the front-end gone.
    fn take_back(&self, wire: &mut Vec<u8>) -> Option<SocketWriter> {
        let mut lent = self.lent();
        lent.idle = false;
        if lent.written < lent.wire.len() {
            wire.extend_from_slice(&lent.wire[lent.written..]);
        }
        lent.wire.clear();
        lent.written = 0;
        lent.writer.take()
    }
}

/// What the writer took off its queues.
enum Queued {
    Outbound(Option<Outbound>),
    Link(Option<String>),
}

/// What woke the writer.
enum Next {
    Queued(Queued),
    Event(Result<Arc<EventFrame>, broadcast::error::RecvError>),
    Leftover,
}

/// Write responses and notifications to the front-end until the reader is done
/// (and the queue drained) or the front-end is gone. While it waits, the
/// socket is lent ([`Socket`]).
///
/// On shutdown, a write that does not finish within [`WRITE_GRACE_ON_SHUTDOWN`]
/// (a front-end that does not read) is abandoned rather than holding up the
/// daemon's exit.
async fn write_loop(
    mut writer: SocketWriter,
    socket: Arc<Socket>,
    mut outbound: mpsc::Receiver<Outbound>,
    mut link_messages: mpsc::Receiver<String>,
    shutdown: CancellationToken,
) {
    let link = socket.link.clone();
    let framing = socket.framing;
    let mut events = EventStream::default();
    // The daemon's requests and targeted notifications: only after the `initialize` response.
    let mut link_open = false;
    let mut wire = Vec::with_capacity(4096);
    loop {
        wire.clear();
        // The written response's share of the byte budget, released once written.
        let mut _written_budget = None;
        socket.lend(writer, events.last_delivered);
        let next = tokio::select! {
            biased;
            queued = poll_fn(|cx| socket.poll_queued(cx, &mut outbound, link_open.then_some(&mut link_messages))) => {
                Next::Queued(queued)
            }
            () = socket.leftover.notified() => Next::Leftover,
            event = next_event(&mut events.receiver) => Next::Event(event),
        };
        writer = match socket.take_back(&mut wire) {
            Some(writer) => writer,
            None => return, // a direct write found the front-end gone
        };
        match next {
            Next::Leftover => {}
            Next::Queued(Queued::Outbound(None)) => break,
            Next::Queued(Queued::Outbound(Some(Outbound::Message(message, budget)))) => {
                _written_budget = Some(budget);
                // What the daemon queued for this front-end before this
                // response goes first: a call's progress precedes its result.
                while link_open && let Ok(earlier) = link_messages.try_recv() {
                    framing::encode(framing, earlier.as_bytes(), &mut wire);
                }
                if link_open {
                    encode_missed_progress(&link, framing, &mut wire);
                }
                // So do the notifications published before it was made.
                events.encode_ready(&link, framing, &mut wire);
                framing::encode(framing, message.as_bytes(), &mut wire);
            }
            Next::Queued(Queued::Outbound(Some(Outbound::Start(start)))) => {
                if let WriterStart::Events(subscription) = start {
                    let _ = socket.published.set(subscription.published);
                    events = EventStream {
                        receiver: Some(subscription.receiver),
                        last_delivered: subscription.last_seq,
                    };
                }
                link_open = true;
            }
            Next::Queued(Queued::Link(Some(message))) => {
                framing::encode(framing, message.as_bytes(), &mut wire);
                encode_missed_progress(&link, framing, &mut wire);
            }
            Next::Queued(Queued::Link(None)) => link_open = false,
            Next::Event(received) => events.encode(received, &link, framing, &mut wire),
        }
        if wire.is_empty() {
            continue;
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
    // What a direct write left, then the end.
    if !wire.is_empty() {
        let _ = writer.write_all(&wire).await;
    }
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
}

/// The connection's place in the daemon's event stream (a Corral front-end
/// after its `initialize`; never for an MCP client).
#[derive(Default)]
struct EventStream {
    receiver: Option<broadcast::Receiver<Arc<EventFrame>>>,
    last_delivered: u64,
}

impl EventStream {
    /// Encode what the stream gave: a notification not delivered yet, or one
    /// `events/lagged` for what the front-end missed by falling a ring behind.
    fn encode(
        &mut self,
        received: Result<Arc<EventFrame>, broadcast::error::RecvError>,
        link: &Link,
        framing: Framing,
        wire: &mut Vec<u8>,
    ) {
        match received {
            Ok(frame) => {
                if frame.seq > self.last_delivered {
                    self.last_delivered = frame.seq;
                    framing::encode(framing, frame.json.as_bytes(), wire);
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let notice = EventsLagged::new(missed, self.last_delivered + 1);
                tracing::warn!(
                    connection = link.id,
                    missed,
                    first = notice.first_missed_seq,
                    "front-end fell behind; notifications dropped for it"
                );
                self.last_delivered = notice.last_missed_seq;
                let message = serde_json::json!({
                    "jsonrpc": "2.0",
                    "method": EventsLaggedNotification::METHOD,
                    "params": notice,
                });
                framing::encode(framing, message.to_string().as_bytes(), wire);
            }
            Err(broadcast::error::RecvError::Closed) => self.receiver = None,
        }
    }

    /// Encode every notification the stream holds now (before an answer).
    fn encode_ready(&mut self, link: &Link, framing: Framing, wire: &mut Vec<u8>) {
        use broadcast::error::{RecvError, TryRecvError};
        while let Some(receiver) = self.receiver.as_mut() {
            let received = match receiver.try_recv() {
                Ok(frame) => Ok(frame),
                Err(TryRecvError::Lagged(missed)) => Err(RecvError::Lagged(missed)),
                Err(TryRecvError::Closed) => Err(RecvError::Closed),
                Err(TryRecvError::Empty) => return,
            };
            self.encode(received, link, framing, wire);
        }
    }
}

/// `mcpServer/progress/lagged`, if progress for this front-end was dropped
/// since it was last told. The writer checks after each message of the link
/// and before each response: progress is dropped only when the link's queue
/// is full (so a message of the link is still to be written after the drop),
/// and it is counted before its request's answer is handed over (so the
/// notice precedes that answer).
fn encode_missed_progress(link: &Link, framing: Framing, wire: &mut Vec<u8>) {
    let missed = link.take_missed_progress();
    // MCP has no such notice, and an MCP client gets nothing but MCP: the
    // drops are counted in `daemon/status` only.
    if missed == 0 || link.dialect() == Dialect::Mcp {
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
