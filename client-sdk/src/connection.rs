//! The connection's transport loop: a reader task, a writer task, and requests matched by id in
//! both directions.
//!
//! - **Out:** requests go through one bounded queue to the writer task, which writes one line per
//!   message; answers to the daemon's requests and `$/cancelRequest`s go through a second queue
//!   the writer drains first, so a backlog of requests never holds them up or drops them (that
//!   queue holds at most one message per outstanding daemon request and per pending call). A
//!   request registers a oneshot under a fresh id before it is sent; the reader completes it when
//!   the response arrives. A request given up by its caller (timeout, dropped future) is withdrawn
//!   with `$/cancelRequest`, so the daemon stops the work too.
//! - **In:** the reader cuts lines with the protocol crate's bounded [`FrameDecoder`] and parses
//!   each with [`Message::parse`]. Responses go to their waiting request; notifications to one
//!   bounded queue (in arrival order); requests *from the daemon* (`mcpServer/elicitation/request`,
//!   `mcpServer/sampling/createMessage`) to the application as [`IncomingRequest`]s — or, until
//!   the application has taken the request stream (or when it declared no capability), they are
//!   refused at once so the daemon never waits. A message whose envelope is broken is still
//!   answered or failed when its id can be read.
//! - **End:** when the stream ends or fails (either direction), the connection is marked closed,
//!   every waiting request fails with `Disconnected`, the notification queue ends, the writer
//!   drops its half so the socket closes, and [`Connection::closed`] resolves. Dropping the
//!   [`Connection`] aborts both tasks, which closes the socket at once.
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
    /// The daemon's answer carried this request's id but was not a valid response.
    Malformed(String),
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
    accepts_requests: bool,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

/// State both tasks and every request share.
#[derive(Debug)]
struct Shared {
    /// Requests sent and not yet answered, and whether the connection has closed (under the same
    /// lock, so a request never registers after the last sweep).
    pending: Mutex<Pending>,
    /// Requests from the daemon that are not answered yet, and where new ones go.
    incoming: Mutex<Incoming>,
    /// Answers to the daemon's requests and cancellations: drained before `outgoing`, never
    /// full. Unbounded on purpose: it holds at most one message per daemon request not yet
    /// answered (the daemon bounds those) and one cancellation per pending call.
    control: mpsc::UnboundedSender<String>,
    next_id: AtomicI64,
    /// `true` once the connection has closed.
    closed: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Pending {
    closed: bool,
    waiting: HashMap<RequestId, oneshot::Sender<Result<Value, CallError>>>,
}

#[derive(Debug, Default)]
struct Incoming {
    closed: bool,
    /// Where requests go once the application took the stream; `None` before (or never).
    queue: Option<mpsc::Sender<IncomingRequest>>,
    /// Unanswered requests, with the flag that says the daemon withdrew them.
    withdrawn: HashMap<RequestId, watch::Sender<bool>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent even if a holder panicked: every operation is one insert or remove.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Mark the connection closed and fail every waiting request (their senders are dropped).
    fn close(&self) {
        // First the flag, so that whoever sees a request fail also sees the connection closed.
        self.closed.send_replace(true);
        let waiting = {
            let mut pending = lock(&self.pending);
            pending.closed = true;
            std::mem::take(&mut pending.waiting)
        };
        drop(waiting);
        let withdrawn = {
            let mut incoming = lock(&self.incoming);
            incoming.closed = true;
            incoming.queue = None;
            std::mem::take(&mut incoming.withdrawn)
        };
        for (_, withdrawn) in withdrawn {
            let _ = withdrawn.send(true);
        }
    }

    /// Queue a message on the control queue (answers, cancellations); `false` once closed.
    fn send_control(&self, message: &Message) -> bool {
        self.control.send(message.to_json()).is_ok()
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
        let (control, control_rx) = mpsc::unbounded_channel();
        let (notifications_tx, notifications) = mpsc::channel(settings.notification_buffer.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            incoming: Mutex::new(Incoming::default()),
            control,
            next_id: AtomicI64::new(1),
            closed: watch::Sender::new(false),
        });
        let reader = Reader {
            shared: Arc::clone(&shared),
            notifications: Some(notifications_tx),
            overflowed: Arc::clone(&overflowed),
            accepts_requests: settings.accepts_requests,
            notification_methods: settings.notification_methods,
        };
        let reader = tokio::spawn(reader.run(reader_half, settings.max_message_bytes));
        let writer = tokio::spawn(write_loop(writer_half, control_rx, outgoing_rx, Arc::clone(&shared)));
        let connection = Connection {
            shared,
            outgoing,
            accepts_requests: settings.accepts_requests,
            reader,
            writer,
        };
        let inbox = Inbox {
            notifications,
            overflowed,
        };
        (connection, inbox)
    }

    /// The stream of the daemon's requests, from now on (refused until this is called); `None`
    /// when no capability was declared or the connection has closed.
    pub(crate) fn take_requests(&self) -> Option<mpsc::Receiver<IncomingRequest>> {
        if !self.accepts_requests {
            return None;
        }
        let mut incoming = lock(&self.shared.incoming);
        if incoming.closed || incoming.queue.is_some() {
            return None;
        }
        let (queue, requests) = mpsc::channel(INCOMING_REQUEST_QUEUE);
        incoming.queue = Some(queue);
        Some(requests)
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

    /// Send a request and wait at most `timeout` for its response (queueing it included).
    pub(crate) async fn request(&self, method: &str, params: Value, timeout: Duration) -> Result<Value, CallError> {
        let deadline = tokio::time::Instant::now() + timeout;
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
            id: id.clone(),
            sent: false,
        };
        let line = Message::Request(RequestMessage::new(id, method, Some(params))).to_json();
        match tokio::time::timeout_at(deadline, self.outgoing.send(line)).await {
            Ok(Ok(())) => guard.sent = true,
            Ok(Err(_closed)) => return Err(CallError::Disconnected),
            Err(_elapsed) => return Err(CallError::Timeout),
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(outcome)) => outcome,
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
    id: RequestId,
    sent: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let unanswered = lock(&self.shared.pending).waiting.remove(&self.id).is_some();
        if unanswered && self.sent {
            let cancel = NotificationMessage::new(CANCEL_REQUEST, Some(json!({ "id": self.id })));
            // On the control queue, which is never full; once closed there is nobody to tell.
            self.shared.send_control(&Message::Notification(cancel));
        }
    }
}

/// The reader task's state.
struct Reader {
    shared: Arc<Shared>,
    /// `None` once the application's queue overflowed or was dropped.
    notifications: Option<mpsc::Sender<RawNotification>>,
    overflowed: Arc<AtomicBool>,
    /// Whether the application declared a capability (and so may take requests).
    accepts_requests: bool,
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
        let message = match Message::parse(frame) {
            Ok(message) => message,
            Err(error) => return self.broken(frame, &error.to_string()),
        };
        match message {
            Message::Response(response) => {
                let Some(id) = response.id else { return };
                let waiter = lock(&self.shared.pending).waiting.remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(response.outcome.map_err(CallError::Rpc));
                }
            }
            Message::Notification(notification) if notification.method == CANCEL_REQUEST => {
                let id = notification
                    .params
                    .and_then(|params| serde_json::from_value::<RequestId>(params.get("id")?.clone()).ok());
                if let Some(id) = id
                    && let Some(withdrawn) = lock(&self.shared.incoming).withdrawn.get(&id)
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

    /// A frame that is not a valid message: the daemon's bug, but whoever waits on its id is
    /// still told — a request from the daemon is refused, a call of ours fails — and anything
    /// without a readable id is skipped (the library never prints).
    fn broken(&mut self, frame: &[u8], problem: &str) {
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(frame) else {
            return;
        };
        let Some(id) = object.get("id").filter(|id| !id.is_null()) else {
            return;
        };
        if object.contains_key("method") {
            // Written by hand: the id may be one `RequestId` cannot hold (a float, say).
            let refusal = json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": ErrorCode::InvalidRequest.code(), "message": format!("invalid request: {problem}")},
            });
            let _ = self.shared.control.send(refusal.to_string());
        } else if let Ok(id) = serde_json::from_value::<RequestId>(id.clone()) {
            let waiter = lock(&self.shared.pending).waiting.remove(&id);
            if let Some(waiter) = waiter {
                let _ = waiter.send(Err(CallError::Malformed(problem.to_owned())));
            }
        }
    }

    fn dispatch(&mut self, request: RequestMessage) {
        let RequestMessage { id, method, params, .. } = request;
        let shared = &self.shared;
        let refuse = |code: ErrorCode, message: &str| {
            let error = ErrorObject::new(code.code(), message);
            shared.send_control(&Message::Response(ResponseMessage::error(Some(id.clone()), error)));
        };
        let mut incoming = lock(&self.shared.incoming);
        if incoming.closed {
            return;
        }
        let Some(queue) = incoming.queue.clone() else {
            drop(incoming);
            let message = if self.accepts_requests {
                "this front-end is not taking requests from corrald yet"
            } else {
                "this front-end declared no capability to answer requests from corrald"
            };
            refuse(ErrorCode::MethodNotFound, message);
            return;
        };
        if incoming.withdrawn.contains_key(&id) {
            drop(incoming);
            refuse(ErrorCode::InvalidRequest, "a request with this id is still unanswered");
            return;
        }
        let (withdrawn_tx, withdrawn) = watch::channel(false);
        incoming.withdrawn.insert(id.clone(), withdrawn_tx);
        drop(incoming);
        let incoming = IncomingRequest {
            id: id.clone(),
            method,
            params: params.unwrap_or(Value::Null),
            shared: Arc::clone(&self.shared),
            withdrawn,
            answered: false,
        };
        // A full or closed queue hands the request back; it is refused instead of queued.
        if let Err(error) = queue.try_send(incoming) {
            let (mpsc::error::TrySendError::Full(mut incoming) | mpsc::error::TrySendError::Closed(mut incoming)) =
                error;
            incoming.answered = true;
            incoming.forget();
            refuse(
                ErrorCode::InternalError,
                "the front-end is not taking requests from corrald (its queue is full or closed)",
            );
        }
    }
}

async fn write_loop<W: AsyncWrite>(
    writer: W,
    mut control: mpsc::UnboundedReceiver<String>,
    mut outgoing: mpsc::Receiver<String>,
    shared: Arc<Shared>,
) {
    tokio::pin!(writer);
    let mut closed = shared.closed.subscribe();
    let mut frame = Vec::new();
    loop {
        let message = tokio::select! {
            biased;
            // The reader saw the end: drop our half too, so the socket closes.
            _ = closed.wait_for(|closed| *closed) => break,
            Some(message) = control.recv() => message,
            Some(message) = outgoing.recv() => message,
            else => break,
        };
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

    /// Answer with `result` (for an elicitation, the MCP `ElicitResult`). The answer is queued
    /// ahead of this client's own requests; it fails only when the connection has closed.
    pub fn respond(self, result: Value) -> Result<(), ClientError> {
        let response = ResponseMessage::result(self.id.clone(), result);
        self.send(response)
    }

    /// Answer with `R`'s typed result.
    pub fn respond_as<R: DaemonRequest>(self, result: &R::Result) -> Result<(), ClientError> {
        let value = serde_json::to_value(result).map_err(|error| ClientError::Encode {
            method: R::METHOD.to_owned(),
            error,
        })?;
        self.respond(value)
    }

    /// Answer with a JSON-RPC error; the daemon passes it to the server as it is.
    pub fn respond_error(self, code: i32, message: impl Into<String>) -> Result<(), ClientError> {
        let response = ResponseMessage::error(Some(self.id.clone()), ErrorObject::new(code, message));
        self.send(response)
    }

    fn send(mut self, response: ResponseMessage) -> Result<(), ClientError> {
        self.answered = true;
        self.forget();
        if self.shared.send_control(&Message::Response(response)) && !*self.shared.closed.borrow() {
            Ok(())
        } else {
            Err(ClientError::Disconnected)
        }
    }

    /// Stop tracking the daemon's withdrawal of this request.
    fn forget(&self) {
        lock(&self.shared.incoming).withdrawn.remove(&self.id);
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
        self.shared.send_control(&Message::Response(response));
    }
}
