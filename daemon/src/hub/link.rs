//! The daemon's side of one front-end connection ([`Link`]): what the
//! front-end said it can answer ([`CanAnswer`]), the requests a server makes
//! of its client passed on to it (numbered, their answers matched by id,
//! withdrawn when no longer awaited or not answered in time), and progress,
//! dropped and counted when it does not read it in time.
//!
//! A link speaks the dialect of its connection ([`Dialect`], fixed by the
//! connection's first `initialize`): Corral's protocol, or MCP for an MCP
//! client on the socket (`corral mcp`). What the hub routes to one
//! front-end is worded in that dialect here, so nobody else needs to know
//! which it is:
//!
//! | | Corral's protocol | MCP |
//! |---|---|---|
//! | a server's request | `mcpServer/elicitation/request`, `mcpServer/sampling/createMessage` with `{server, request}` | `elicitation/create`, `sampling/createMessage` with the server's params as they are |
//! | withdrawn | `$/cancelRequest {id}` | `notifications/cancelled {requestId, reason}` |
//! | progress | `mcpServer/progress {server, token, …}` | `notifications/progress {progressToken, …}` |
//! | the client's roots | — (not in Corral's protocol) | `roots/list` ([`super::roots`]) |
//!
//! The link also keeps what an MCP client answered to `roots/list` for the
//! servers it started for itself, until it says its roots changed
//! ([`Link::roots_changed`]; the cache and its rules are `super::roots`').
//!
//! The front-end's answer is the same in both: the MCP result, or a
//! JSON-RPC error, which the connection hands to [`Link::resolve`].
//!
//! Everything for one front-end goes through one bounded queue
//! (`LINK_QUEUE`, 64 messages), which the connection's writer reads only
//! after the `initialize` response. A request waits for room in it (its
//! deadline bounds the wait); a notification (progress) is sent
//! with `try_send` and dropped, and counted, when there is none. Once the
//! connection is gone the link is closed and every waiting request fails
//! with `Disconnected`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use corral_protocol::{
    ClientCapabilities, DaemonRequest as _, ElicitationRequest, Notification as _, Progress, ProgressNotification,
    SamplingRequest, ServerRequestParams,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::roots::RootsCache;
use super::routes::Capability;

/// Messages from the daemon to one front-end waiting for its writer; a
/// request waits for room, a progress notification is dropped when full (and
/// counted: the front-end gets `mcpServer/progress/lagged`).
pub(super) const LINK_QUEUE: usize = 64;

/// LSP's cancellation notification, sent when the daemon withdraws a request.
pub(super) const CANCEL_REQUEST: &str = "$/cancelRequest";

/// MCP's progress notification, what an MCP client's progress is sent as.
const MCP_PROGRESS: &str = "notifications/progress";

/// MCP's cancellation notification, what a request to an MCP client is withdrawn with.
pub(super) const MCP_CANCELLED: &str = "notifications/cancelled";

/// MCP's methods of a server's requests, what an MCP client is asked with.
const MCP_ELICIT: &str = "elicitation/create";
const MCP_SAMPLE: &str = "sampling/createMessage";

/// What sets the deadline of a server's elicitation or sampling request, for
/// the front-end told it was withdrawn.
const ANSWER_DEADLINE_SET_BY: &str = "corrald --elicitation-timeout-sec";

/// Which of a server's requests a front-end said at `initialize` it can answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CanAnswer {
    /// Form-mode `elicitation/create`: the user fills in fields.
    pub(crate) form_elicitation: bool,
    /// URL-mode `elicitation/create`: the user is sent to a URL.
    pub(crate) url_elicitation: bool,
    /// `sampling/createMessage`.
    pub(crate) sampling: bool,
    /// `roots/list` (an MCP client that declared `capabilities.roots`): the
    /// servers it started for itself get its roots (see [`super::roots`]).
    pub(crate) roots: bool,
    /// It sends `notifications/roots/list_changed` when its roots change
    /// (`capabilities.roots.listChanged`), so its answer may be kept until then.
    pub(crate) roots_list_changed: bool,
}

impl CanAnswer {
    /// What a front-end of Corral's protocol can answer: its
    /// `capabilities.elicitation` covers both modes (it gets the server's
    /// params, `mode` included, and shows what it can).
    pub(crate) fn corral(capabilities: &ClientCapabilities) -> Self {
        Self {
            form_elicitation: capabilities.elicitation,
            url_elicitation: capabilities.elicitation,
            sampling: capabilities.sampling,
            // Corral's protocol has no roots: a front-end's own servers get their config's.
            roots: false,
            roots_list_changed: false,
        }
    }
}

/// Which protocol the front-end at the other end of a link speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// Corral's own protocol (`corral_protocol`): the default.
    Corral,
    /// MCP, as an MCP client of the daemon (`corral mcp`): only MCP messages
    /// may reach it, never Corral's notifications.
    Mcp,
}

/// Where a connection came in, which bounds what its front-end may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    /// The daemon's socket: a process of the user's (its uid was checked).
    Socket,
    /// A session of the loopback HTTP MCP endpoint: whoever holds its
    /// token. It speaks MCP only (Corral's protocol, which adds servers and
    /// reads the config, is the socket's), and starts servers of its own
    /// only when `session_servers` (`[mcp_endpoint] allow_session_servers`).
    Endpoint {
        /// Whether it may start servers of its own.
        session_servers: bool,
    },
}

impl Door {
    /// Whether a front-end that came in here may start servers of its own
    /// (session servers), that is, run commands as the user.
    pub(crate) fn may_start_servers(self) -> bool {
        match self {
            Self::Socket => true,
            Self::Endpoint { session_servers } => session_servers,
        }
    }
}

/// Why a front-end did not answer a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrontEndError {
    /// The connection closed before the answer came.
    #[error("the front-end disconnected before answering")]
    Disconnected,
    /// No answer within this deadline: the request was withdrawn.
    #[error("the front-end did not answer within {}s; the request was withdrawn", .0.as_secs_f64())]
    Unanswered(Duration),
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
    /// Where the connection came in.
    pub(crate) door: Door,
    /// Set once, at the connection's `initialize`; nothing until then.
    pub(super) can_answer: OnceLock<CanAnswer>,
    /// Set once, when the connection's first `initialize` decides it; Corral's until then.
    dialect: OnceLock<Dialect>,
    sender: mpsc::Sender<String>,
    pub(super) pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// Progress notifications dropped since the front-end was last told.
    pub(super) missed_progress: AtomicU64,
    /// The client's roots as it last gave them, and how often they changed.
    pub(super) roots: RootsCache,
}

impl Link {
    /// A link for connection `id`, which came in at `door`; the receiver feeds the connection's writer.
    pub(super) fn new(id: u64, door: Door) -> (Arc<Self>, mpsc::Receiver<String>) {
        let (sender, receiver) = mpsc::channel(LINK_QUEUE);
        let link = Self {
            id,
            door,
            can_answer: OnceLock::new(),
            dialect: OnceLock::new(),
            sender,
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            missed_progress: AtomicU64::new(0),
            roots: RootsCache::default(),
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

    /// What the front-end said it can answer (nothing before its `initialize`).
    pub(super) fn can_answer(&self) -> CanAnswer {
        self.can_answer.get().copied().unwrap_or_default()
    }

    /// The method a server's `capability` request reaches this front-end as.
    pub(crate) fn method_for(&self, capability: Capability) -> &'static str {
        match (self.dialect(), capability) {
            (Dialect::Corral, Capability::Elicitation(_)) => ElicitationRequest::METHOD,
            (Dialect::Corral, Capability::Sampling) => SamplingRequest::METHOD,
            (Dialect::Mcp, Capability::Elicitation(_)) => MCP_ELICIT,
            (Dialect::Mcp, Capability::Sampling) => MCP_SAMPLE,
        }
    }

    /// Ask the front-end a `capability` request `server` made of its client,
    /// `params` being the MCP request's params as rmcp's model read them,
    /// worded in the link's dialect; wait at most `deadline` for the answer
    /// (then withdraw it: [`FrontEndError::Unanswered`]). Dropping the future
    /// withdraws the request too.
    pub(crate) async fn ask(
        self: &Arc<Self>,
        server: &str,
        capability: Capability,
        params: Value,
        deadline: Duration,
    ) -> Answer {
        let params = match self.dialect() {
            // A struct of a string and a JSON value: serializing it cannot fail.
            Dialect::Corral => serde_json::to_value(ServerRequestParams::new(server, params)).unwrap_or_default(),
            Dialect::Mcp => params,
        };
        self.request(self.method_for(capability), params, deadline, ANSWER_DEADLINE_SET_BY)
            .await
    }

    /// Send `method` with `params` and wait at most `deadline` for the
    /// answer (`set_by`: what sets it, said to the front-end when the request
    /// is withdrawn at it). Dropping the future withdraws the request.
    pub(super) async fn request(
        self: &Arc<Self>,
        method: &str,
        params: Value,
        deadline: Duration,
        set_by: &'static str,
    ) -> Answer {
        if self.closed.load(Ordering::Acquire) {
            return Err(FrontEndError::Disconnected);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, answered) = oneshot::channel();
        self.pending().insert(id, answer);
        let mut withdraw = Withdraw {
            link: Arc::downgrade(self),
            id,
            sent: false,
            why: Withdrawal::NoLongerAwaited,
        };
        // Closed after the check above: the entry would never be answered.
        if self.closed.load(Ordering::Acquire) {
            return Err(FrontEndError::Disconnected);
        }
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let exchange = async {
            // Waiting for room in the queue counts against the deadline too.
            if self.sender.send(message.to_string()).await.is_err() {
                return Err(FrontEndError::Disconnected);
            }
            withdraw.sent = true;
            answered.await.unwrap_or(Err(FrontEndError::Disconnected))
        };
        let outcome = tokio::time::timeout(deadline, exchange).await;
        match outcome {
            // Answered (its entry is gone, so nothing is withdrawn), or disconnected.
            Ok(answer) => answer,
            Err(_) => {
                withdraw.why = Withdrawal::Deadline(deadline, set_by);
                Err(FrontEndError::Unanswered(deadline))
            }
        }
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

    /// Whether something for the front-end waits on this link: a message in
    /// its queue (or room reserved for one), or dropped progress not told
    /// yet. The connection's writer then goes first, so that what was queued
    /// for a request precedes its answer.
    pub(crate) fn has_backlog(&self) -> bool {
        self.sender.capacity() < self.sender.max_capacity() || self.missed_progress.load(Ordering::Relaxed) > 0
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

    /// The client said its roots changed (`notifications/roots/list_changed`):
    /// forget the ones it gave, and tell the servers that get them (their
    /// tasks watch [`super::roots::ClientRoots::changes`]).
    pub(crate) fn roots_changed(&self) {
        self.roots.changed();
    }

    /// The connection ended: every waiting request fails with `Disconnected`.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.pending().clear();
    }
}

/// Why the daemon withdraws a request it sent a front-end.
#[derive(Debug, Clone, Copy)]
enum Withdrawal {
    /// Its waiter went away: the call that caused it ended, or the server
    /// withdrew its request, or its session ended.
    NoLongerAwaited,
    /// It was not answered within this deadline, which this sets.
    Deadline(Duration, &'static str),
}

impl std::fmt::Display for Withdrawal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoLongerAwaited => f.write_str(
                "corral withdrew this request: nothing waits for its answer any more (the call that caused it \
                 ended, or the MCP server that made it cancelled it or went away)",
            ),
            Self::Deadline(deadline, set_by) => write!(
                f,
                "corral withdrew this request: no answer within {}s ({set_by})",
                deadline.as_secs_f64()
            ),
        }
    }
}

/// Withdraws a request that is still waiting for its answer when dropped:
/// removes it, and, if it reached the queue, tells the front-end in its dialect.
struct Withdraw {
    link: Weak<Link>,
    id: u64,
    /// The request is in the link's queue (the front-end may see it).
    sent: bool,
    why: Withdrawal,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        let Some(link) = self.link.upgrade() else { return };
        // Answered, or the link closed: nothing to withdraw.
        if link.pending().remove(&self.id).is_none() || !self.sent {
            return;
        }
        let _ = match link.dialect() {
            Dialect::Corral => link.notify(CANCEL_REQUEST, json!({ "id": self.id })),
            Dialect::Mcp => link.notify(
                MCP_CANCELLED,
                json!({ "requestId": self.id, "reason": self.why.to_string() }),
            ),
        };
    }
}
