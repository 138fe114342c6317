//! The connection's transport loop: a reader task, a writer task, and requests matched by id in
//! both directions.
//!
//! - **Out:** every message goes through one bounded queue to the writer task, which writes one
//!   line per message. A request registers a oneshot under a fresh id before it is sent; the
//!   reader completes it when the response arrives. A request given up by its caller (timeout,
//!   dropped future) is withdrawn with `$/cancelRequest`, so the daemon stops the work too.
//! - **In:** the reader cuts lines with the protocol crate's bounded [`FrameDecoder`] and parses
//!   each with [`Message::parse`]. Responses go to their waiting request; notifications to one
//!   bounded queue (in arrival order); requests *from the daemon* (`mcpServer/elicitation/request`,
//!   `mcpServer/sampling/createMessage`) to the application as [`IncomingRequest`]s — or, when the
//!   application declared no capability, they are refused at once so the daemon never waits.
//! - **End:** when the stream ends or fails, every waiting request fails with `Disconnected`,
//!   the notification queue ends, and [`Connection::closed`] resolves. Dropping the
//!   [`Connection`] aborts both tasks, which closes the socket.
//!
//! Invariants: every queue is bounded; a full notification queue ends the stream with a reason
//! ([`NotificationsEnd::Overflowed`](crate::NotificationsEnd::Overflowed)) instead of dropping
//! notifications silently; every request from the daemon is answered exactly once (by the
//! application, or by [`IncomingRequest`]'s drop).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use corral_protocol::framing::{self, FrameDecoder, Framing};
use corral_protocol::jsonrpc::{ErrorObject, Message, NotificationMessage, RequestId, RequestMessage, ResponseMessage};
use corral_protocol::{DaemonRequest, ErrorCode};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::ClientError;

/// Size of one read from the socket; frames larger than this span several reads.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Messages waiting for the writer: a full queue makes senders wait (backpressure), never grows.
const OUTGOING_QUEUE: usize = 256;
/// Requests from the daemon waiting for the application to take them; past this they are refused.
const INCOMING_REQUEST_QUEUE: usize = 64;
/// The daemon's cancellation of its own request, and ours of a request we gave up on.
const CANCEL_REQUEST: &str = "$/cancelRequest";

/// How a request ended, before it is turned into a [`ClientError`] naming the method.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The daemon answered with an error.
    Rpc(ErrorObject),
    /// The connection closed before the answer.
    Disconnected,
    /// No answer within the time given.
    Timeout,
}

/// A notification as received: its method and params, decoded later by the stream.
pub(crate) type RawNotification = (String, Value);

/// The receiving ends the client hands to the application.
#[derive(Debug)]
pub(crate) struct Inbox {
    /// Notifications, in arrival order.
    pub(crate) notifications: mpsc::Receiver<RawNotification>,
    /// Set when the notification queue filled and was closed.
    pub(crate) overflowed: Arc<AtomicBool>,
    /// Requests from the daemon, when the client declared a capability.
    pub(crate) requests: Option<mpsc::Receiver<IncomingRequest>>,
}

/// Settings of the transport loop.
#[derive(Debug, Clone)]
pub(crate) struct LoopSettings {
    /// Notifications buffered until the application reads them (at least 1).
    pub(crate) notification_buffer: usize,
    /// Notification methods the application understands; others are skipped (forward compatible).
    pub(crate) notification_methods: Vec<&'static str>,
    /// Whether requests from the daemon are handed to the application.
    pub(crate) accepts_requests: bool,
    /// The largest frame accepted from the daemon.
    pub(crate) max_message_bytes: usize,
}

/// A running connection: the two tasks and what requests need to reach them.
#[derive(Debug)]
pub(crate) struct Connection {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<String>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// State both tasks and every request share.
#[derive(Debug)]
struct Shared {
    /// Requests sent and not yet answered, and whether the connection has closed (under the same
    /// lock, so a request never registers after the last sweep).
    pending: Mutex<Pending>,
    /// Requests from the daemon that are not answered yet, with the flag that says the daemon
    /// withdrew them.
    incoming: Mutex<HashMap<RequestId, watch::Sender<bool>>>,
    next_id: AtomicI64,
    /// `true` once the connection has closed.
    closed: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Pending {
    closed: bool,
    waiting: HashMap<RequestId, oneshot::Sender<Result<Value, ErrorObject>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked: every operation is one insert or remove.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Mark the connection closed and fail every waiting request (their senders are dropped).
    fn close(&self) {
        let waiting = {
            let mut pending = lock(&self.pending);
            pending.closed = true;
            std::mem::take(&mut pending.waiting)
        };
        drop(waiting);
        for (_, withdrawn) in lock(&self.incoming).drain() {
            let _ = withdrawn.send(true);
        }
        self.closed.send_replace(true);
    }
}

impl Connection {
    /// Start the loop over `stream`; returns the connection and the application's inbox.
    pub(crate) fn start<S>(stream: S, settings: LoopSettings) -> (Connection, Inbox)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (reader_half, writer_half) = tokio::io::split(stream);
        let (outgoing, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        let (notifications_tx, notifications) = mpsc::channel(settings.notification_buffer.max(1));
        let (requests_tx, requests) = if settings.accepts_requests {
            let (tx, rx) = mpsc::channel(INCOMING_REQUEST_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let overflowed = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            incoming: Mutex::new(HashMap::new()),
            next_id: AtomicI64::new(1),
            closed: watch::Sender::new(false),
        });
        let reader = Reader {
            shared: Arc::clone(&shared),
            outgoing: outgoing.clone(),
            notifications: Some(notifications_tx),
            overflowed: Arc::clone(&overflowed),
            requests: requests_tx,
            notification_methods: settings.notification_methods,
        };
        let reader = tokio::spawn(reader.run(reader_half, settings.max_message_bytes));
        let writer = tokio::spawn(write_loop(writer_half, outgoing_rx, Arc::clone(&shared)));
        let connection = Connection {
            shared,
            outgoing,
            reader,
            writer,
        };
        let inbox = Inbox {
            notifications,
            overflowed,
            requests,
        };
        (connection, inbox)
    }

    /// Whether the connection is still open.
    pub(crate) fn is_connected(&self) -> bool {
        !*self.shared.closed.borrow()
    }

    /// Resolves once the connection has closed.
    pub(crate) async fn closed(&self) {
        let mut closed = self.shared.closed.subscribe();
        // An error means the sender is gone, which only happens once everything is closed.
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Send a request and wait at most `timeout` for its response.
    pub(crate) async fn request(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, CallError> {
        let id = RequestId::Number(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let (answer_tx, answer) = oneshot::channel();
        {
            let mut pending = lock(&self.shared.pending);
            if pending.closed {
                return Err(CallError::Disconnected);
            }
            pending.waiting.insert(id.clone(), answer_tx);
        }
        let mut guard = PendingGuard {
            shared: &self.shared,
            outgoing: &self.outgoing,
            id: id.clone(),
            sent: false,
        };
        let line = Message::Request(RequestMessage::new(id, method, Some(params))).to_json();
        if self.outgoing.send(line).await.is_err() {
            return Err(CallError::Disconnected);
        }
        guard.sent = true;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome.map_err(CallError::Rpc),
            Ok(Err(_closed)) => Err(CallError::Disconnected),
            Err(_elapsed) => Err(CallError::Timeout),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closing both halves of the stream closes the socket at once, so the daemon cancels
        // whatever this client still had running (it sees a hang-up, not a half-close).
        self.reader.abort();
        self.writer.abort();
        self.shared.close();
    }
}

/// Removes a request's registration however its wait ends; a request that was sent and is
/// still unanswered (timeout, or the caller dropped the future) is withdrawn on the wire.
struct PendingGuard<'a> {
    shared: &'a Shared,
    outgoing: &'a mpsc::Sender<String>,
    id: RequestId,
    sent: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let unanswered = lock(&self.shared.pending).waiting.remove(&self.id).is_some();
        if unanswered && self.sent {
            let cancel = NotificationMessage::new(CANCEL_REQUEST, Some(json!({ "id": self.id })));
            // Best effort: with the queue full or the connection gone there is nobody to tell.
            let _ = self.outgoing.try_send(Message::Notification(cancel).to_json());
        }
    }
}

/// The reader task's state.
struct Reader {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<String>,
    /// `None` once the application's queue overflowed or was dropped.
    notifications: Option<mpsc::Sender<RawNotification>>,
    overflowed: Arc<AtomicBool>,
    requests: Option<mpsc::Sender<IncomingRequest>>,
    notification_methods: Vec<&'static str>,
}

impl Reader {
    async fn run<R: AsyncRead>(mut self, reader: R, max_message_bytes: usize) {
        tokio::pin!(reader);
        let mut decoder = FrameDecoder::new(Framing::Lines, max_message_bytes);
        let mut chunk = vec![0; READ_CHUNK_BYTES].into_boxed_slice();
        'read: loop {
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => self.handle(&frame),
                    Ok(None) => break,
                    // A frame that cannot be cut (too large): the stream cannot be resynchronised.
                    Err(_) => break 'read,
                }
            }
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => decoder.feed(&chunk[..read]),
            }
        }
        self.shared.close();
    }

    fn handle(&mut self, frame: &[u8]) {
        // A frame that is not a JSON-RPC message is the daemon's bug; the library never prints,
        // and nothing waits on it, so it is skipped.
        let Ok(message) = Message::parse(frame) else { return };
        match message {
            Message::Response(response) => {
                let Some(id) = response.id else { return };
                let waiter = lock(&self.shared.pending).waiting.remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(response.outcome);
                }
            }
            Message::Notification(notification) if notification.method == CANCEL_REQUEST => {
                let id = notification
                    .params
                    .and_then(|params| serde_json::from_value::<RequestId>(params.get("id")?.clone()).ok());
                if let Some(id) = id
                    && let Some(withdrawn) = lock(&self.shared.incoming).get(&id)
                {
                    let _ = withdrawn.send(true);
                }
            }
            Message::Notification(notification) => self.notify(notification),
            Message::Request(request) => self.dispatch(request),
        }
    }

    fn notify(&mut self, notification: NotificationMessage) {
        if !self.notification_methods.contains(&notification.method.as_str()) {
            return; // a kind this client does not know (a newer daemon): skipped, as documented
        }
        let Some(queue) = &self.notifications else { return };
        let params = notification.params.unwrap_or(Value::Null);
        match queue.try_send((notification.method, params)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Visible, never silent: the stream ends with `Overflowed` once drained.
                self.overflowed.store(true, Ordering::Release);
                self.notifications = None;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.notifications = None,
        }
    }

    fn dispatch(&mut self, request: RequestMessage) {
        let refuse = |code: i32, message: &str| {
            let response = ResponseMessage::error(Some(request.id.clone()), ErrorObject::new(code, message));
            let _ = self.outgoing.try_send(Message::Response(response).to_json());
        };
        let Some(queue) = &self.requests else {
            refuse(
                ErrorCode::MethodNotFound.code(),
                "this front-end declared no capability to answer requests from corrald",
            );
            return;
        };
        let (withdrawn_tx, withdrawn) = watch::channel(false);
        lock(&self.shared.incoming).insert(request.id.clone(), withdrawn_tx);
        let incoming = IncomingRequest {
            id: request.id.clone(),
            method: request.method,
            params: request.params.unwrap_or(Value::Null),
            outgoing: self.outgoing.clone(),
            shared: Arc::clone(&self.shared),
            withdrawn,
            answered: false,
        };
        // A full or closed queue hands the request back; dropping it answers with an error.
        if let Err(error) = queue.try_send(incoming) {
            let mut incoming = match error {
                mpsc::error::TrySendError::Full(incoming) | mpsc::error::TrySendError::Closed(incoming) => incoming,
            };
            incoming.answered = true;
            incoming.forget();
            refuse(
                ErrorCode::InternalError.code(),
                "the front-end is not taking requests from corrald (its queue is full or closed)",
            );
        }
    }
}

async fn write_loop<W: AsyncWrite>(writer: W, mut outgoing: mpsc::Receiver<String>, shared: Arc<Shared>) {
    tokio::pin!(writer);
    let mut frame = Vec::new();
    while let Some(message) = outgoing.recv().await {
        frame.clear();
        framing::encode(Framing::Lines, message.as_bytes(), &mut frame);
        if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
            break;
        }
    }
    shared.close();
}

/// A request from the daemon — an MCP server's question forwarded to this front-end — to be
/// answered with [`IncomingRequest::respond`] or [`IncomingRequest::respond_error`].
///
/// Dropping it unanswered answers the daemon with an error, so the server is never left waiting
/// on this client. The daemon may withdraw the request (the server gave up):
/// [`IncomingRequest::withdrawn`] resolves then, and a late answer is ignored by the daemon.
#[derive(Debug)]
pub struct IncomingRequest {
    id: RequestId,
    method: String,
    params: Value,
    outgoing: mpsc::Sender<String>,
    shared: Arc<Shared>,
    withdrawn: watch::Receiver<bool>,
    answered: bool,
}

impl IncomingRequest {
    /// The method, e.g. `mcpServer/elicitation/request`.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The request's id (the daemon's own numbering).
    pub fn id(&self) -> &RequestId {
        &self.id
    }

    /// The params as sent.
    pub fn params(&self) -> &Value {
        &self.params
    }

    /// The params decoded as `R`'s, when this request is an `R` (`None` for another method).
    pub fn params_as<R: DaemonRequest>(&self) -> Option<Result<R::Params, ClientError>> {
        (self.method == R::METHOD).then(|| {
            serde_json::from_value(self.params.clone()).map_err(|error| ClientError::Decode {
                method: R::METHOD.to_owned(),
                error,
            })
        })
    }

    /// Whether the daemon has withdrawn the request (or the connection closed).
    pub fn is_withdrawn(&self) -> bool {
        *self.withdrawn.borrow()
    }

    /// Resolves when the daemon withdraws the request, or the connection closes.
    pub async fn withdrawn(&self) {
        let mut withdrawn = self.withdrawn.clone();
        let _ = withdrawn.wait_for(|withdrawn| *withdrawn).await;
    }

    /// Answer with `result` (for an elicitation, the MCP `ElicitResult`).
    pub async fn respond(self, result: Value) -> Result<(), ClientError> {
        let response = ResponseMessage::result(self.id.clone(), result);
        self.send(response).await
    }

    /// Answer with a JSON-RPC error; the daemon passes it to the server as it is.
    pub async fn respond_error(self, code: i32, message: impl Into<String>) -> Result<(), ClientError> {
        let response = ResponseMessage::error(Some(self.id.clone()), ErrorObject::new(code, message));
        self.send(response).await
    }

    async fn send(mut self, response: ResponseMessage) -> Result<(), ClientError> {
        self.answered = true;
        self.forget();
        self.outgoing
            .send(Message::Response(response).to_json())
            .await
            .map_err(|_closed| ClientError::Disconnected)
    }

    /// Stop tracking the daemon's withdrawal of this request.
    fn forget(&self) {
        lock(&self.shared.incoming).remove(&self.id);
    }
}

impl Drop for IncomingRequest {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        self.forget();
        let error = ErrorObject::new(
            ErrorCode::InternalError.code(),
            "the front-end dropped the request without answering it",
        );
        let response = ResponseMessage::error(Some(self.id.clone()), error);
        let _ = self.outgoing.try_send(Message::Response(response).to_json());
    }
}
