//! The daemon's side of one front-end connection ([`Link`]): its requests
//! to the front-end are numbered, their answers matched by id, an abandoned
//! request is withdrawn with `$/cancelRequest`, and progress it does not
//! read in time is dropped and counted.
//!
//! A link speaks the dialect of its connection ([`Dialect`], fixed by the
//! connection's first `initialize`): Corral's protocol, or MCP for an MCP
//! client on the socket (`corral mcp`). What the hub routes to one
//! front-end (progress) is worded in that dialect here, so nobody else
//! needs to know which it is.
//!
//! Everything for one front-end goes through one bounded queue
//! (`LINK_QUEUE`, 64 messages), which the connection's writer reads only
//! after the `initialize` response. A request waits for room in it (its
//! caller's deadline bounds the wait); a notification (progress) is sent
//! with `try_send` and dropped, and counted, when there is none. Once the
//! connection is gone the link is closed and every waiting request fails
//! with `Disconnected`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

use corral_protocol::{ClientCapabilities, Notification as _, Progress, ProgressNotification};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

/// Messages from the daemon to one front-end waiting for its writer; a
/// request waits for room, a progress notification is dropped when full (and
/// counted: the front-end gets `mcpServer/progress/lagged`).
pub(super) const LINK_QUEUE: usize = 64;

/// LSP's cancellation notification, sent when the daemon withdraws a request.
pub(super) const CANCEL_REQUEST: &str = "$/cancelRequest";

/// MCP's progress notification, what an MCP client's progress is sent as.
const MCP_PROGRESS: &str = "notifications/progress";

/// Which protocol the front-end at the other end of a link speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Corral's own protocol (`corral_protocol`): the default.
    Corral,
    /// MCP, as an MCP client of the daemon (`corral mcp`): only MCP messages
    /// may reach it, never Corral's notifications.
    Mcp,
}

/// Why a front-end did not answer a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrontEndError {
    /// The connection closed before the answer came.
    #[error("the front-end disconnected before answering")]
    Disconnected,
    /// The front-end answered with a JSON-RPC error.
    #[error("the front-end answered with error {code}: {message}")]
    Error {
        /// JSON-RPC error code.
        code: i64,
        /// Its message.
        message: String,
        /// Its data, if any.
        data: Option<Value>,
    },
}

/// A pending request's answer: the `result`, or the front-end's error.
type Answer = Result<Value, FrontEndError>;

/// The daemon's side of one front-end connection: sends it requests and
/// notifications (through the connection's writer) and matches its answers.
#[derive(Debug)]
pub(crate) struct Link {
    /// The connection's id.
    pub(crate) id: u64,
    pub(super) capabilities: OnceLock<ClientCapabilities>,
    /// Set once, when the connection's first `initialize` decides it; Corral's until then.
    dialect: OnceLock<Dialect>,
    sender: mpsc::Sender<String>,
    pub(super) pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// Progress notifications dropped since the front-end was last told.
    pub(super) missed_progress: AtomicU64,
}

impl Link {
    /// A link for connection `id`; the receiver feeds the connection's writer.
    pub(super) fn new(id: u64) -> (Arc<Self>, mpsc::Receiver<String>) {
        let (sender, receiver) = mpsc::channel(LINK_QUEUE);
        let link = Self {
            id,
            capabilities: OnceLock::new(),
            dialect: OnceLock::new(),
            sender,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            missed_progress: AtomicU64::new(0),
        };
        (Arc::new(link), receiver)
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, oneshot::Sender<Answer>>> {
        // A map of senders is valid after any panic.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fix the link's dialect; only the first call counts (a connection's
    /// mode is decided once).
    pub(crate) fn set_dialect(&self, dialect: Dialect) {
        let _ = self.dialect.set(dialect);
    }

    /// The dialect of the front-end at the other end.
    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect.get().copied().unwrap_or(Dialect::Corral)
    }

    pub(super) fn can_elicit(&self) -> bool {
        self.capabilities.get().is_some_and(|c| c.elicitation)
    }

    pub(super) fn can_sample(&self) -> bool {
        self.capabilities.get().is_some_and(|c| c.sampling)
    }

    /// Send `method` with `params` and wait for the answer. Dropping the
    /// future withdraws the request (`$/cancelRequest`).
    pub(crate) async fn request(self: &Arc<Self>, method: &str, params: Value) -> Answer {
        if self.closed.load(Ordering::Acquire) {
            return Err(FrontEndError::Disconnected);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.pending().insert(id, answer);
        let mut withdraw = Withdraw {
            link: Arc::downgrade(self),
            id,
            armed: true,
        };
        // Closed after the check above: the entry would never be answered.
        if self.closed.load(Ordering::Acquire) {
            return Err(FrontEndError::Disconnected);
        }
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        if self.sender.send(message.to_string()).await.is_err() {
            return Err(FrontEndError::Disconnected);
        }
        let answer = answered.await.unwrap_or(Err(FrontEndError::Disconnected));
        withdraw.armed = false;
        answer
    }

    /// Send a notification if there is room; `false` (and logged) if it was
    /// dropped, for the caller to count.
    pub(crate) fn notify(&self, method: &str, params: impl serde::Serialize) -> bool {
        let message = json!({ "jsonrpc": "2.0", "method": method, "params": params });
        let sent = self.sender.try_send(message.to_string()).is_ok();
        if !sent {
            tracing::debug!(
                connection = self.id,
                method,
                "notification dropped: front-end is not reading"
            );
        }
        sent
    }

    /// Send a notification that must not be lost: wait for room in the
    /// queue. `false` if the connection is gone.
    pub(crate) async fn notify_reliably(&self, method: &str, params: impl serde::Serialize) -> bool {
        let message = json!({ "jsonrpc": "2.0", "method": method, "params": params });
        self.sender.send(message.to_string()).await.is_ok()
    }

    /// Progress `progress` (of `total`, with `message`) of a request of
    /// this front-end's that carried the token `token`, reported by
    /// `server`, worded in the link's dialect; `false` (for the caller to
    /// count) if the queue was full and it was dropped.
    pub(super) fn notify_progress(
        &self,
        server: &str,
        token: Value,
        (progress, total, message): (f64, Option<f64>, Option<String>),
    ) -> bool {
        match self.dialect() {
            Dialect::Corral => {
                let mut params = Progress::new(server, token, progress);
                params.total = total;
                params.message = message;
                self.notify(ProgressNotification::METHOD, params)
            }
            Dialect::Mcp => {
                let mut params = serde_json::Map::new();
                params.insert("progressToken".to_owned(), token);
                params.insert("progress".to_owned(), json!(progress));
                if let Some(total) = total {
                    params.insert("total".to_owned(), json!(total));
                }
                if let Some(message) = message {
                    params.insert("message".to_owned(), Value::String(message));
                }
                self.notify(MCP_PROGRESS, params)
            }
        }
    }

    /// Completes once the connection's writer is gone (the connection ended).
    pub(crate) async fn closed(&self) {
        self.sender.closed().await;
    }

    /// Whether the connection has ended (see [`Link::close`]).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Progress notifications dropped since the last call (for the
    /// connection's writer to tell the front-end).
    pub(crate) fn take_missed_progress(&self) -> u64 {
        self.missed_progress.swap(0, Ordering::Relaxed)
    }

    /// The front-end answered request `id`; `false` if no such request is waiting.
    pub(crate) fn resolve(&self, id: u64, answer: Answer) -> bool {
        match self.pending().remove(&id) {
            Some(waiter) => {
                let _ = waiter.send(answer);
                true
            }
            None => false,
        }
    }

    /// The connection ended: every waiting request fails with `Disconnected`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.pending().clear();
    }
}

/// Withdraws a request whose waiter went away before the answer came.
struct Withdraw {
    link: Weak<Link>,
    id: u64,
    /// Cleared once the answer came.
    armed: bool,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Some(link) = self.link.upgrade() else { return };
        if link.pending().remove(&self.id).is_some() {
            let _ = link.notify(CANCEL_REQUEST, json!({ "id": self.id }));
        }
    }
}
