//! Dispatching one connection's messages: requests into the methods of the
//! connection's mode (synchronous ones inline, async ones as futures the
//! connection's reader polls, in a bounded set of slots, cancellable by id),
//! batches, the front-end's answers to the daemon's requests, and
//! cancellations.
//!
//! The mode is decided by the connection's first `initialize`: an integer
//! `protocolVersion` is Corral's protocol (the front-end API's methods), a
//! string is MCP (an MCP client such as `corral mcp`'s: the bridge's
//! methods, [`MethodTables::mcp`]). Corral's protocol is the socket's only:
//! a connection of the loopback HTTP endpoint (its link's `Door`) that asks
//! for it is refused, since anyone with the endpoint's token could otherwise
//! add servers (run commands) and read the config. The tables differ because MCP's
//! `tools/list` and `tools/call` share their names with Corral's; everything
//! else here (limits, slots, batches, cancellation) is the same for both.
//!
//! Decisions:
//! - Our own loop over jsonrpsee's `Methods`, not a jsonrpsee server: those
//!   speak only HTTP/WebSocket and wrap pushes in subscription envelopes,
//!   while editors need LSP framing and bare notifications
//!   (`shared/reference/feasibility.md` §2B). The session reaches handlers
//!   through jsonrpsee `Extensions`.
//! - Synchronous methods (`initialize`) run inline, in order with what
//!   follows them; async methods run as futures of the connection's
//!   [`InFlight`] set, which its reader polls between reads (first right
//!   after dispatching, so a call is on its server's pipe before the reader
//!   reads on), so their answers may come back out of order. Not a task per
//!   request: a spawn, a task's scheduling and its abort handle are work on
//!   every call that this saves. A handler that panics is answered
//!   `internalError`; a handler that computes for long delays this
//!   connection's reading only, and while the reader waits for room in the
//!   outbound queue its requests wait too (they would wait for that room
//!   to answer anyway).
//! - At most `MAX_IN_FLIGHT` (64) requests run; more wait in a bounded room
//!   (`MAX_WAITING_REQUESTS`, 256, and `WAITING_BYTES` of their text), and
//!   beyond it get `tooManyRequests` (-32014) at once. A batch holds at most
//!   `MAX_BATCH_LEN` (256) entries, which run as in-flight requests like any
//!   other; its array is assembled by a future that holds no slot, and at most
//!   64 batches wait for their entries.
//! - An MCP client's `notifications/roots/list_changed` goes to its link
//!   (`Link::roots_changed`), which owns the roots it gave (`hub::roots`);
//!   other notifications are ignored.
//! - Cancellation (`$/cancelRequest`, MCP's `notifications/cancelled`): the
//!   request is registered by id (an abort handle) and whoever removes the
//!   registration answers, so a request is never answered twice; a second in-flight
//!   request with the same id is refused. A cancelled batch entry answers
//!   `requestCancelled` in its place.
//! - At end of stream, running requests are cancelled at once if the
//!   front-end hung up entirely (`POLLHUP`), and get `EOF_GRACE` (2 s) if it
//!   only half-closed.
//!
//! **Invariant:** the reader never waits for a request slot. A front-end's
//! answers to the daemon's requests, its cancellations and its
//! notifications are handled as soon as they are read: otherwise calls
//! waiting on this front-end's elicitation answers could hold every slot
//! while the answers sit unread behind one more request (a deadlock, since
//! those calls' timeouts are paused). Only the outbound byte budget or a
//! full partial-frame budget stops the reader (`connection.rs`).

use std::borrow::Cow;
use std::sync::Arc;

use corral_protocol::{ClientInfo, ErrorCode, Initialize, Request as _};
use futures_util::FutureExt as _;
use futures_util::future::{AbortHandle, Abortable, Aborted, BoxFuture};
use jsonrpsee::types::{ErrorObjectOwned, Id, Params, Request, TwoPointZero};
use jsonrpsee::{ConnectionId, MethodCallback, MethodResponse};
use serde_json::value::RawValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::router::MethodTables;
use super::rpc::rpc_error;
use super::session::Session;
use crate::hub::link::{Dialect, Door, FrontEndError};
#[cfg(test)]
use crate::params::RawJson;
use crate::params::{CALL_METHOD, CallAt, CallShape, ParamsAt, RawFuture, RawParams, Text, once};

use super::connection::{MAX_BATCH_LEN, Outlet, WAITING_BYTES};
use super::in_flight::InFlight;

pub(super) struct Dispatcher {
    pub(super) session: Arc<Session>,
    pub(super) methods: MethodTables,
    pub(super) outbound: Outlet,
    pub(super) cancellable: Cancellable,
    pub(super) slots: RequestSlots,
}

/// Where this connection's requests run: at most `in_flight` at once, at
/// most `waiting` (and [`WAITING_BYTES`]) waiting for a slot, in the order
/// they came; beyond that a request is refused at once. Never awaited by the
/// reader.
pub(super) struct RequestSlots {
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
    pub(super) fn new(in_flight: usize, waiting: usize) -> Self {
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
    async fn run(self, running: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        match self {
            Self::Run(slot) => Some(slot),
            // The semaphore is never closed; a place is given up once a slot is had.
            Self::Wait(_place, _bytes) => running.clone().acquire_owned().await.ok(),
        }
    }
}

/// A call's response, available now or later (with the request's id, to cancel it).
enum Dispatched {
    Now(MethodResponse),
    Later(Id<'static>, Pending),
}

/// An answer to come, with the method's name (for its errors).
enum Pending {
    /// A raw method's (`RawMethods`): its `result` laid into the response as it is.
    Raw(&'static str, RawFuture),
    /// A jsonrpsee async method's.
    Method(&'static str, BoxFuture<'static, MethodResponse>),
}

impl Pending {
    /// The whole JSON-RPC answer to request `id`, as text; a handler that
    /// panics is answered `internalError` (the connection and its other
    /// requests go on).
    async fn answer(self, id: &Id<'static>) -> String {
        let method = match &self {
            Self::Raw(method, _) | Self::Method(method, _) => *method,
        };
        let answer = std::panic::AssertUnwindSafe(async {
            match self {
                Self::Raw(method, future) => raw_answer(method, id, future.await),
                Self::Method(method, future) => json_text(not_too_big(method, id.clone(), future.await)),
            }
        })
        .catch_unwind()
        .await;
        answer.unwrap_or_else(|_| {
            tracing::error!(method, "a handler panicked; its request is answered internalError");
            error_message(
                id.clone(),
                rpc_error(
                    ErrorCode::InternalError,
                    format!(
                        "corrald failed while answering `{method}` (a bug: please report it); nothing else was affected"
                    ),
                ),
            )
        })
    }
}

/// Requests running, by request id, so that a front-end can cancel them. A
/// request removes its own entry before it answers; whoever removes the entry
/// decides who answers (the request, or the canceller with
/// `requestCancelled`), so a request is never answered twice. A batch entry
/// is always answered by itself, inside the batch's answer.
pub(super) type Cancellable = std::sync::Mutex<crate::FastMap<Id<'static>, Running>>;

/// How to cancel a running request: abort its future (which drops its call
/// to the server).
pub(super) enum Running {
    /// A request of its own: the canceller answers.
    Request(AbortHandle),
    /// An entry of a batch: it answers `requestCancelled` in the batch.
    BatchEntry(AbortHandle),
}

fn lock_cancellable(cancellable: &Cancellable) -> std::sync::MutexGuard<'_, crate::FastMap<Id<'static>, Running>> {
    // A map of abort handles is valid after any panic.
    cancellable.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Dispatcher {
    /// Send a message to the writer; `false` if the writer is gone.
    pub(super) async fn send(&self, message: String) -> bool {
        self.outbound.send(message).await
    }

    /// Handle one frame; `false` when the connection should close.
    pub(super) async fn handle_frame<'a>(&'a self, frame: Vec<u8>, in_flight: &mut InFlight<'a>) -> bool {
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
        match self.dispatch(text) {
            None => true,
            Some(Dispatched::Now(response)) => {
                self.send(response.into_json().get().to_owned()).await
                    && self.outbound.start_notifications(&self.session).await
            }
            Some(Dispatched::Later(id, pending)) => match self.run_later(id, bytes, pending, in_flight) {
                Ok(()) => true,
                Err((id, error)) => self.send(error_message(id, error)).await,
            },
        }
    }

    /// Run a request among the connection's `in_flight` futures, registered
    /// for cancellation (the reader polls it before it reads on, so a call
    /// is written on its server's pipe first); or the error to answer at
    /// once (a duplicate id, no room).
    fn run_later<'a>(
        &'a self,
        id: Id<'static>,
        bytes: usize,
        pending: Pending,
        in_flight: &mut InFlight<'a>,
    ) -> Result<(), (Id<'static>, ErrorObjectOwned)> {
        let registry = lock_cancellable(&self.cancellable);
        if registry.contains_key(&id) {
            // Two requests with one id could not be told apart (answers, cancels).
            let error = duplicate_id(&id);
            return Err((id, error));
        }
        let Some(admitted) = self.slots.admit(bytes) else {
            tracing::debug!(request = ?id, "request refused: too many running and waiting");
            return Err((id, self.slots.refusal()));
        };
        let answered = self.registered(registry, id.clone(), admitted, pending, Running::Request);
        in_flight.push(Box::pin(async move {
            // Aborted, or removed by a canceller just now: the canceller answered.
            if let Ok(response) = answered.await
                && lock_cancellable(&self.cancellable).remove(&id).is_some()
            {
                self.outbound.send(response).await;
            }
        }));
        Ok(())
    }

    /// Register request `id` for cancellation (`as_running` says who answers a cancelled
    /// one) and make the future of its answer: a slot first (`admitted`), then `pending`'s
    /// answer; `Err(Aborted)` once cancelled. Its entry is the caller's to remove.
    fn registered<'a>(
        &'a self,
        mut registry: std::sync::MutexGuard<'_, crate::FastMap<Id<'static>, Running>>,
        id: Id<'static>,
        admitted: Admitted,
        pending: Pending,
        as_running: fn(AbortHandle) -> Running,
    ) -> Abortable<impl Future<Output = String> + Send + 'a> {
        let (abort, registration) = AbortHandle::new_pair();
        registry.insert(id.clone(), as_running(abort));
        drop(registry);
        Abortable::new(
            async move {
                let _slot = admitted.run(&self.slots.running).await;
                pending.answer(&id).await
            },
            registration,
        )
    }

    /// A JSON-RPC batch: one array of responses, in the order of the calls.
    ///
    /// Calls answered at once (`initialize`, errors) are answered in place;
    /// the others run as in-flight requests (the same [`RequestSlots`], so an
    /// entry may wait for a slot or be refused; cancellable by id), and one
    /// more in-flight future sends the array when the last one is done, so
    /// the reader goes on reading meanwhile.
    async fn handle_batch<'a>(&'a self, text: &str, in_flight: &mut InFlight<'a>) -> bool {
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
            // Each entry's own text: a raw method's future owns its request's.
            match self.dispatch(call.get().to_owned()) {
                None => {}
                Some(Dispatched::Now(response)) => slots.push(BatchSlot::Ready(json_text(response))),
                Some(Dispatched::Later(id, pending)) => {
                    let registry = lock_cancellable(&self.cancellable);
                    if registry.contains_key(&id) {
                        let error = duplicate_id(&id);
                        slots.push(BatchSlot::Ready(error_message(id, error)));
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
                        tracing::debug!(request = ?id, "batch entry refused: too many running and waiting");
                        slots.push(BatchSlot::Ready(error_message(id, self.slots.refusal())));
                        continue;
                    };
                    let entry = self.registered(registry, id.clone(), admitted, pending, Running::BatchEntry);
                    let (answer, answered) = oneshot::channel();
                    in_flight.push(Box::pin(async move {
                        let response = entry.await.unwrap_or_else(|Aborted| {
                            error_message(
                                id.clone(),
                                rpc_error(ErrorCode::RequestCancelled, "request cancelled by the client"),
                            )
                        });
                        lock_cancellable(&self.cancellable).remove(&id);
                        let _ = answer.send(response);
                    }));
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
        // Not a request slot: its entries need those, and they are bounded already.
        let batch_place = batch_place.and_then(Result::ok);
        in_flight.push(Box::pin(async move {
            let _batch_place = batch_place;
            if let Some(batch) = assemble_batch(slots).await
                && self.send(batch).await
            {
                self.outbound.start_notifications(&self.session).await;
            }
        }));
        true
    }

    /// Route one message; `None` when it needs no answer (a notification or a response).
    fn dispatch(&self, text: String) -> Option<Dispatched> {
        let (request, call) = match parse_request(&text, true) {
            Ok(parsed) => parsed,
            Err(parse_error) => return self.not_a_request(&text, &parse_error).map(Dispatched::Now),
        };
        let id = request.id.clone().into_owned();
        let method = request.method.as_ref();
        let initialize = method == Initialize::METHOD;
        if !initialize && !self.session.is_initialized() {
            return Some(Dispatched::Now(MethodResponse::error(
                id,
                rpc_error(
                    ErrorCode::NotInitialized,
                    format!("call `initialize` before `{method}`"),
                ),
            )));
        }
        let mcp_initialize = if initialize {
            let head = InitializeHead::read(request.params.as_deref());
            if head.dialect() == Dialect::Corral && self.session.link.door != Door::Socket {
                return Some(Dispatched::Now(MethodResponse::error(
                    id,
                    rpc_error(
                        ErrorCode::InvalidRequest,
                        "the MCP endpoint speaks MCP only: `initialize` needs a string `protocolVersion` such as \
                         \"2025-11-25\"; Corral's own protocol is served on corrald's socket only",
                    ),
                )));
            }
            // The first `initialize` decides the connection's mode for its whole life.
            self.session.link.set_dialect(head.dialect());
            Some(head)
        } else {
            None
        };
        let mcp = self.session.link.dialect() == Dialect::Mcp;
        if mcp && initialize && self.session.is_initialized() {
            return Some(Dispatched::Now(MethodResponse::error(
                id,
                rpc_error(ErrorCode::AlreadyInitialized, "this connection is already initialized"),
            )));
        }
        let raw_methods = if mcp {
            &self.methods.mcp_raw
        } else {
            &self.methods.corral_raw
        };
        if let Some((method, callback)) = raw_methods.get(method) {
            let params = match call {
                Some(call) => {
                    let call = CallAt::new(&text, call);
                    RawParams::call(text, call)
                }
                None => {
                    let at = ParamsAt::find(&text, request.params.as_deref().map(RawValue::get));
                    RawParams::new(text, at)
                }
            };
            let answer = callback(params, self.session.link.clone());
            return Some(Dispatched::Later(id, Pending::Raw(method, answer)));
        }
        // Params read as a call are not what a table of jsonrpsee's methods takes: read again.
        let request = match call {
            Some(_) => match parse_request(&text, false) {
                Ok((request, _)) => request,
                Err(parse_error) => return self.not_a_request(&text, &parse_error).map(Dispatched::Now),
            },
            None => request,
        };
        let method = request.method.as_ref();
        let params = Params::new(request.params.as_deref().map(RawValue::get));
        let mut extensions = request.extensions.clone();
        extensions.insert(self.session.clone());
        let methods = if mcp {
            // What the bridge's handlers know the connection by: its link.
            extensions.insert(self.session.link.clone());
            &self.methods.mcp
        } else {
            &self.methods.corral
        };
        let max = corral_protocol::MAX_MESSAGE_BYTES;
        let response = match methods.method_with_name(method) {
            Some((_, MethodCallback::Sync(callback))) => {
                let response = not_too_big(method, id.clone(), callback(id, params, max, extensions));
                if mcp
                    && response.is_success()
                    && let Some(head) = mcp_initialize
                {
                    // Answered: the connection is initialized; the writer opens
                    // the link once this answer is written.
                    let _ = self.session.initialize_mcp(head.client_info());
                }
                Dispatched::Now(response)
            }
            Some((method, MethodCallback::Async(callback))) => {
                let connection = ConnectionId(usize::try_from(self.session.id).unwrap_or(usize::MAX));
                let answer = callback(id.clone(), params.into_owned(), connection, max, extensions);
                Dispatched::Later(id, Pending::Method(method, answer))
            }
            Some((_, MethodCallback::Subscription(_) | MethodCallback::Unsubscription(_))) | None => {
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
                ROOTS_LIST_CHANGED => {
                    // What the client's servers were given is stale; they are told (`hub::roots`).
                    tracing::debug!(connection = self.session.id, "the client's roots changed");
                    self.session.link.roots_changed();
                    return None;
                }
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

/// What the api reads of an `initialize` request before dispatching it:
/// the kind of its `protocolVersion` (an integer for Corral's protocol, a
/// string such as `"2025-06-18"` for MCP) and who the client is.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitializeHead {
    #[serde(default)]
    protocol_version: Option<serde_json::Value>,
    #[serde(default)]
    client_info: Option<ClientInfo>,
}

impl InitializeHead {
    /// Read `params` leniently: whatever does not fit is the method's to refuse.
    fn read(params: Option<&RawValue>) -> Self {
        params
            .and_then(|params| serde_json::from_str(params.get()).ok())
            .unwrap_or_default()
    }

    /// MCP when the version is a string; Corral's protocol otherwise (its
    /// own handler answers a missing or wrong version).
    fn dialect(&self) -> Dialect {
        match self.protocol_version {
            Some(serde_json::Value::String(_)) => Dialect::Mcp,
            _ => Dialect::Corral,
        }
    }

    fn client_info(self) -> ClientInfo {
        self.client_info
            .unwrap_or_else(|| ClientInfo::new("an MCP client without clientInfo", ""))
    }
}

/// LSP's cancellation notification.
const CANCEL_REQUEST: &str = "$/cancelRequest";
/// MCP's cancellation notification, accepted too.
const CANCELLED: &str = "notifications/cancelled";
/// An MCP client's roots changed: the servers it started for itself are told.
const ROOTS_LIST_CHANGED: &str = "notifications/roots/list_changed";

/// A request, read without jsonrpsee's untagged `Id`, which builds (and formats) a
/// serde error for each variant it tries before the one that fits: a tenth of the
/// instructions corrald spent on a `tools/call`. What this does not take (an escaped
/// method name, an id that is not null, an unsigned integer or a string, anything that
/// is not a request) is read by jsonrpsee's own `Request`, so what is accepted and the
/// errors for what is not stay jsonrpsee's.
///
/// With `calls`, the request is first read in one pass ([`Envelope`]) in which the
/// params of a `tools/call` that come after its `method` (as every client writes them)
/// are read as a [`CallShape`], the `Request`'s params left empty: they are scanned
/// once, not as a raw value and then again by the handler. What that pass does not take
/// (params the shape does not take, a request written as an array) is read as without
/// it: the params raw.
fn parse_request(text: &str, calls: bool) -> Result<(Request<'_>, Option<CallShape<'_>>), serde_json::Error> {
    if calls
        && let Ok(Envelope { id, method, params }) = Envelope::read(text)
        && let Some(id) = plain_id(id)
    {
        return Ok(match params {
            EnvelopeParams::Raw(params) => (Request::borrowed(method, params, id), None),
            EnvelopeParams::Call(call) => (Request::borrowed(method, None, id), Some(call)),
        });
    }
    #[derive(serde::Deserialize)]
    struct RawEnvelope<'a> {
        #[serde(rename = "jsonrpc")]
        _jsonrpc: TwoPointZero,
        #[serde(borrow)]
        id: &'a RawValue,
        #[serde(borrow)]
        method: Cow<'a, str>,
        #[serde(borrow, default)]
        params: Option<&'a RawValue>,
    }
    if let Ok(RawEnvelope {
        id,
        method: Cow::Borrowed(method),
        params,
        ..
    }) = serde_json::from_str::<RawEnvelope<'_>>(text)
        && let Some(id) = plain_id(id)
    {
        return Ok((Request::borrowed(method, params, id), None));
    }
    serde_json::from_str(text).map(|request| (request, None))
}

/// A request's members as the one pass of [`parse_request`] reads them: as its
/// `RawEnvelope` does (unknown members skipped, a member twice refused), but for a
/// `tools/call`'s params after its method, read as a call, and a request written as an
/// array, which it leaves to `RawEnvelope`.
struct Envelope<'a> {
    id: &'a RawValue,
    method: &'a str,
    params: EnvelopeParams<'a>,
}

enum EnvelopeParams<'a> {
    /// Absent (or `null`) as `None`.
    Raw(Option<&'a RawValue>),
    Call(CallShape<'a>),
}

impl<'a> Envelope<'a> {
    fn read(text: &'a str) -> Result<Self, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let envelope = serde::Deserializer::deserialize_map(&mut deserializer, EnvelopeVisitor)?;
        deserializer.end()?;
        Ok(envelope)
    }
}

struct EnvelopeVisitor;

impl<'de> serde::de::Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON-RPC request")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let (mut jsonrpc, mut id, mut method, mut params) = (None, None, None::<&'de str>, None);
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match key.as_ref() {
                "jsonrpc" => once(&mut jsonrpc, "jsonrpc", map.next_value::<TwoPointZero>()?)?,
                "id" => once(&mut id, "id", map.next_value::<&'de RawValue>()?)?,
                "method" => match map.next_value::<Text<'de>>()?.0 {
                    Cow::Borrowed(name) => once(&mut method, "method", name)?,
                    Cow::Owned(_) => return Err(A::Error::custom("an escaped method name")),
                },
                "params" => {
                    let read = if method == Some(CALL_METHOD) {
                        map.next_value::<Option<CallShape<'de>>>()?
                            .map_or(EnvelopeParams::Raw(None), EnvelopeParams::Call)
                    } else {
                        EnvelopeParams::Raw(map.next_value::<Option<&'de RawValue>>()?)
                    };
                    once(&mut params, "params", read)?;
                }
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        jsonrpc.ok_or_else(|| A::Error::missing_field("jsonrpc"))?;
        Ok(Envelope {
            id: id.ok_or_else(|| A::Error::missing_field("id"))?,
            method: method.ok_or_else(|| A::Error::missing_field("method"))?,
            params: params.unwrap_or(EnvelopeParams::Raw(None)),
        })
    }
}

/// The id `raw` as jsonrpsee's `Id`, when it is one of its three kinds.
fn plain_id(raw: &RawValue) -> Option<Id<'static>> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'n' => (text == "null").then_some(Id::Null),
        b'0'..=b'9' => text.parse().ok().map(Id::Number),
        b'"' => serde_json::from_str::<String>(text).ok().map(|id| Id::Str(id.into())),
        _ => None,
    }
}

impl Dispatcher {
    /// Cancel the in-flight request `target` (an id as JSON): abort its future
    /// (which drops its MCP request, so rmcp sends `notifications/cancelled`
    /// to the server) and answer it with `requestCancelled`. Nothing happens
    /// if it already answered.
    fn cancel(&self, target: &serde_json::Value) -> Option<MethodResponse> {
        let id = match target {
            serde_json::Value::Number(number) => Id::Number(number.as_u64()?),
            serde_json::Value::String(text) => Id::Str(text.clone().into()),
            serde_json::Value::Null => Id::Null,
            _ => return None,
        };
        let abort = match lock_cancellable(&self.cancellable).remove(&id)? {
            Running::Request(abort) => abort,
            Running::BatchEntry(abort) => {
                // Answered by the entry itself, inside the batch.
                tracing::debug!(request = ?id, "batch entry cancelled by the front-end");
                abort.abort();
                return None;
            }
        };
        abort.abort();
        tracing::debug!(request = ?id, "request cancelled by the front-end");
        if self.session.link.dialect() == Dialect::Mcp {
            // MCP: the receiver of `notifications/cancelled` does not answer the request.
            return None;
        }
        Some(MethodResponse::error(
            id,
            rpc_error(ErrorCode::RequestCancelled, "request cancelled by the client"),
        ))
    }
}

pub(super) fn error_message(id: Id<'_>, error: ErrorObjectOwned) -> String {
    json_text(MethodResponse::error(id, error))
}

/// A response's JSON as text (no copy).
fn json_text(response: MethodResponse) -> String {
    Box::<str>::from(response.into_json()).into_string()
}

/// The answer to request `id` of `method`, a raw method (`router::RawMethods`): its
/// `result` written in as it is, neither serialized nor parsed again (it is the
/// server's JSON, read once by the wire), laid out as jsonrpsee lays out its own; an
/// error as jsonrpsee words it; `messageTooLarge`, as `not_too_big` says it, beyond
/// `MAX_MESSAGE_BYTES`.
fn raw_answer(method: &str, id: &Id<'_>, answer: Result<Box<RawValue>, ErrorObjectOwned>) -> String {
    let result = match answer {
        Ok(result) => result,
        Err(error) => return error_message(id.clone(), error),
    };
    let mut number = itoa::Buffer::new();
    let escaped;
    let id_text = match id {
        Id::Null => "null",
        Id::Number(id) => number.format(*id),
        Id::Str(_) => match serde_json::to_string(id) {
            Ok(text) => {
                escaped = text;
                &escaped
            }
            Err(_) => {
                return error_message(
                    id.clone(),
                    rpc_error(ErrorCode::InternalError, "cannot write the request's id"),
                );
            }
        },
    };
    const HEAD: &str = r#"{"jsonrpc":"2.0","id":"#;
    const RESULT: &str = r#","result":"#;
    let length = HEAD.len() + id_text.len() + RESULT.len() + result.get().len() + 1;
    if length > corral_protocol::MAX_MESSAGE_BYTES {
        return error_message(id.clone(), too_big_error(method));
    }
    let mut text = String::with_capacity(length);
    text.push_str(HEAD);
    text.push_str(id_text);
    text.push_str(RESULT);
    text.push_str(result.get());
    text.push('}');
    text
}

/// One answer of a batch: there already, or to come from its in-flight future.
enum BatchSlot {
    Ready(String),
    Pending(oneshot::Receiver<String>),
}

/// The batch's answer array, in order, once every entry answered; a
/// `messageTooLarge` error instead once the answers pass `MAX_MESSAGE_BYTES`
/// (the ones still to come are awaited and dropped, so memory stays bounded).
/// `None` if an entry's future is gone (the connection is closing).
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
        bytes += answer.len() + 1;
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
    let mut batch = String::with_capacity(bytes + 2);
    batch.push('[');
    for (index, answer) in answers.iter().enumerate() {
        if index > 0 {
            batch.push(',');
        }
        batch.push_str(answer);
    }
    batch.push(']');
    Some(batch)
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
    MethodResponse::error(id, too_big_error(method))
}

/// `messageTooLarge` for an answer to `method` beyond `MAX_MESSAGE_BYTES`.
fn too_big_error(method: &str) -> ErrorObjectOwned {
    rpc_error(
        ErrorCode::MessageTooLarge,
        format!(
            "the answer to `{method}` is larger than {} bytes",
            corral_protocol::MAX_MESSAGE_BYTES
        ),
    )
}

/// The error for a request whose `id` is that of one still running on its connection:
/// two requests with one id could not be told apart (answers, cancels).
fn duplicate_id(id: &Id<'_>) -> ErrorObjectOwned {
    let id = serde_json::to_string(id).unwrap_or_default();
    rpc_error(
        ErrorCode::InvalidRequest,
        format!("a request with id {id} is already in flight on this connection"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a parse gave, comparable: the request's parts, or the error's words.
    fn outcome(parsed: Result<Request<'_>, serde_json::Error>) -> Result<(String, String, Option<String>), String> {
        parsed
            .map(|request| {
                (
                    serde_json::to_string(&request.id).expect("an id serializes"),
                    request.method.into_owned(),
                    request.params.map(|params| params.get().to_owned()),
                )
            })
            .map_err(|error| error.to_string())
    }

    #[test]
    fn the_quick_read_of_a_request_takes_what_jsonrpsee_takes_and_fails_as_it_fails() {
        let cases = [
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#,
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"m","params":null}"#,
            r#"{"id":1,"method":"m","jsonrpc":"2.0","extra":true}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":18446744073709551616,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":-1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":true,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":{},"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools\/call"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"m"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m","params":[1,2]}"#,
            r#"[1]"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"m""#,
        ];
        for case in cases {
            assert_eq!(
                outcome(parse_request(case, false).map(|(request, _)| request)),
                outcome(serde_json::from_str::<Request<'_>>(case)),
                "{case}"
            );
        }
    }

    #[test]
    fn a_calls_params_are_read_in_the_requests_pass_when_they_follow_its_method() {
        let text = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"server":"s","name":"e\u0063ho","arguments":{"m":[1, "x"]},"_meta":{"progressToken":1},"task":{"ttl":1}}}"#;
        let (request, call) = parse_request(text, true).expect("a request");
        assert_eq!((request.method.as_ref(), request.id), ("tools/call", Id::Number(7)));
        assert!(request.params.is_none(), "the params are the call's");
        let call = CallAt::new(text, call.expect("read as a call"));
        let mut params = RawParams::call(text.to_owned(), call);
        let view = params
            .take_call()
            .expect("taken once")
            .view(&params)
            .expect("every part in the text");
        assert_eq!(view.server.as_deref(), Some("s"));
        assert_eq!(view.name, "echo", "an escaped name is read as it means");
        assert_eq!(view.arguments.map(RawJson::get), Some(r#"{"m":[1, "x"]}"#));
        assert_eq!(view.meta, serde_json::json!({"progressToken": 1}).as_object().cloned());
        assert!(view.others, "`task` is another member");
        assert!(params.take_call().is_none());
        // Asked for, the params are found again in the text.
        let found = text.find(r#"{"server""#).expect("params");
        assert_eq!(params.params().as_str(), Some(&text[found..text.len() - 1]));

        let plain = r#"{"method":"tools/call","params":{"name":"echo","arguments":null},"jsonrpc":"2.0","id":1}"#;
        let (_, call) = parse_request(plain, true).expect("a request");
        let call = CallAt::new(plain, call.expect("read as a call"));
        let mut params = RawParams::call(plain.to_owned(), call);
        let view = params.take_call().and_then(|call| call.view(&params)).expect("a view");
        assert_eq!(
            (view.server, view.name.as_ref(), view.arguments.is_none(), view.others),
            (None, "echo", true, false)
        );

        // Read as before, the params raw: before the method, another method, not asked
        // for, and whatever the call's shape does not take.
        for case in [
            r#"{"jsonrpc":"2.0","id":1,"params":{"name":"echo"},"method":"tools/call"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"echo"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","name":"b"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","server":null}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","_meta":[]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["echo"]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"}"#,
            // An array, as serde reads a struct: three members (jsonrpsee's `Request` needs four).
            r#"["2.0",1,"tools/call"]"#,
            r#"["2.0",1,"tools/call",{"name":"a"}]"#,
        ] {
            let read = parse_request(case, true);
            assert!(read.as_ref().map_or(true, |(_, call)| call.is_none()), "{case}");
            assert_eq!(
                outcome(read.map(|(request, _)| request)),
                outcome(parse_request(case, false).map(|(request, _)| request)),
                "{case}"
            );
        }
        // `null` params are none, as before.
        let (request, call) =
            parse_request(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":null}"#, true).expect("a request");
        assert!(request.params.is_none() && call.is_none());
    }

    #[test]
    fn a_raw_answer_is_laid_out_as_jsonrpsee_lays_out_its_own() {
        let result =
            RawValue::from_string(r#"{"content":[{"type":"text","text":"é \" x"}],"x":1.0}"#.to_owned()).expect("JSON");
        for id in [Id::Number(7), Id::Str("a\"b".into()), Id::Null] {
            let max = corral_protocol::MAX_MESSAGE_BYTES;
            let jsonrpsee = json_text(MethodResponse::response(
                id.clone(),
                jsonrpsee::ResponsePayload::success(result.clone()),
                max,
            ));
            assert_eq!(
                raw_answer("tools/call", &id, Ok(result.clone())),
                jsonrpsee,
                "byte for byte"
            );
            let error = rpc_error(ErrorCode::ServerNotReady, "gone");
            assert_eq!(
                raw_answer("tools/call", &id, Err(error.clone())),
                error_message(id.clone(), error)
            );
        }
        let huge =
            RawValue::from_string(format!("\"{}\"", "x".repeat(corral_protocol::MAX_MESSAGE_BYTES))).expect("JSON");
        let answer: serde_json::Value =
            serde_json::from_str(&raw_answer("tools/call", &Id::Number(1), Ok(huge))).expect("JSON");
        assert_eq!(answer["error"]["code"], ErrorCode::MessageTooLarge.code(), "{answer}");
        assert_eq!(
            answer["error"]["message"],
            format!(
                "the answer to `tools/call` is larger than {} bytes",
                corral_protocol::MAX_MESSAGE_BYTES
            )
        );
    }
}
