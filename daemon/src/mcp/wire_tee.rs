//! A stdio server's wire ([`WireTee`]): corrald's one reader of the server's
//! stdout and one writer of its stdin, with rmcp's session on top of it
//! ([`WireTransport`], the session's `rmcp` transport) and a direct lane
//! beside it for the requests that are only forwarded ([`DirectCall`]).
//!
//! Every line the server writes is read here once and its envelope parsed
//! once (id, method, and `result` or `error` left as raw JSON). What the
//! line is decides where it goes:
//! - the answer to a direct call: to the call's waiter, as the server wrote
//!   it; rmcp never sees it;
//! - `notifications/progress`: to the front-end whose request it is about
//!   (`hub::routes`), at once, in the order the server wrote it, before
//!   anything the server wrote after it is read; rmcp never sees it (its
//!   handler would only drop it);
//! - anything else (answers to rmcp's requests, the server's own requests,
//!   other notifications): parsed into rmcp's typed model and handed to the
//!   session, as rmcp's own stdio transport would (an empty line or one
//!   that is not JSON is skipped; JSON that is not a message gets rmcp's
//!   `Invalid Request` answer). Where corrald asked through rmcp for
//!   something front-ends must get as the server sent it (rmcp's model drops
//!   a `Tool`'s `execution`, keeps `annotations.priority` as `f32`), the
//!   answer is kept here too (a front-end's requests: tools, resources,
//!   prompts, skills, methods passed through, a task's status and result;
//!   not corrald's own `initialize`, `ping` or subscriptions), bounded, for the sender (`mcp::forward`) to
//!   take by id; `tools/list` pages are gathered into a listing, in the
//!   server's order, which the server task takes once when it builds the
//!   session's tool catalog (`mcp::tool_catalog`); the task lists one
//!   listing at a time, so the listing completed last is the one it asked
//!   for. Where nothing was kept (another transport, a line too large),
//!   callers fall back to rmcp's typed value.
//!
//! A direct call (`mcp::forward` sends `tools/call` of a session of MCP
//! before 2026-07-28 this way) is written by the caller's own task, with an
//! id of its own ([`DIRECT_ID_BASE`] upward, where rmcp's 32-bit ids never
//! reach), and answered to that task by the reader: no task of rmcp's in
//! between, and the server's line parsed once. Dropping the call before its
//! answer (timeout, `$/cancelRequest`, a front-end gone) writes
//! `notifications/cancelled` for it; the end of the server's stdout, or of
//! the session, fails every call still waiting ([`WireGone`]), as rmcp fails
//! its own requests then.
//!
//! Writes never interleave: each line goes out whole, under the writer's
//! lock, straight to the pipe while it has room; what does not fit waits in
//! a backlog, in order, which a task of the server's tracker writes as the
//! pipe drains (a caller that gives up never leaves half a line). The
//! backlog holds only lines of requests still in flight, their
//! cancellations and answers to the server's requests, each bounded by the
//! frame limits of whoever sent them; the one line corrald writes on its own
//! account (the `Invalid Request` answer to a malformed message) is dropped
//! rather than queued behind a server that does not read.
//!
//! The wire also tells the server task what rmcp does not: that the server's
//! stdout reached EOF (the MCP transport is gone, whether or not the process
//! runs on), and which lines were not valid JSON (which rmcp would skip
//! silently, so an `initialize` answered with broken JSON would look like no
//! answer): it counts them and flags the first that looks like a JSON-RPC
//! message.
//!
//! The reading is a task of its own ([`WireReader`]), which hands rmcp's
//! session the lines that are rmcp's through a channel of [`READ_AHEAD`]
//! messages, and stops when the session's transport is closed or dropped. What
//! the session learns from the lines (a broken message, the end of stdout) it is
//! told in order, after the lines before it.
//!
//! Invariants: memory is bounded (ids watched, answers kept, line length,
//! the messages read ahead for rmcp, the backlog as above); a line is written whole or not at all; no line the
//! server wrote is ever quoted in a message or a log (it may hold anything).

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use rmcp::RoleClient;
use rmcp::model::ErrorData;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::routes::FrontEnds;

/// Requests corrald sends on its own, whose answers nobody takes: not kept. Every other
/// request is a front-end's (`tools/call`, `resources/read`, listings, skills, a method passed
/// through with `mcpServer/request`) or a task's status and result (`mcp::tasks`, which takes
/// them in the server's words: rmcp's model reads a task of MCP 2025-11-25 as one of 2026-07-28
/// and loses its poll interval), and its answer is kept for the handler that sent it.
const NOT_KEPT: [&str; 5] = [
    "initialize",
    "ping",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
];

/// Whether the answer to a request of `method` is kept (see [`NOT_KEPT`]; of `tasks/*`, which
/// are the task driver's own, only `tasks/get` and `tasks/result`, which it takes).
fn keeps(method: &str) -> bool {
    !NOT_KEPT.contains(&method) && (!method.starts_with("tasks/") || matches!(method, "tasks/get" | "tasks/result"))
}
/// `tools/list`: gathered into a listing ([`WireTee::take_listing`]) instead.
const TOOLS_LIST: &str = "tools/list";
/// Requests watched at once; the oldest is forgotten beyond this (its
/// answer then falls back to rmcp's typed value).
const MAX_WATCHED: usize = 256;
/// Answers kept and not taken yet; the oldest is dropped beyond this.
const MAX_KEPT: usize = 64;
/// Messages for rmcp waiting in the channel; with the one the reader holds while the channel
/// is full, up to three parsed lines (each at most [`MAX_LINE`]) are read ahead of rmcp.
const READ_AHEAD: usize = 2;
/// A line longer than this is dropped unread, as rmcp's own stdio transport does.
const MAX_LINE: usize = DEFAULT_MAX_LINE_LENGTH;
/// Bytes of answers kept and not taken yet: the oldest are dropped beyond this, down to the
/// newest, which is always kept (it is at most [`MAX_LINE`]). Smaller in unit tests, which
/// fill it.
const MAX_KEPT_BYTES: usize = if cfg!(test) { 64 * 1024 } else { 2 * MAX_LINE };
/// The first id of direct calls: above every id rmcp's 32-bit counter gives,
/// and exact as a JSON number in every language (below 2^53).
pub(crate) const DIRECT_ID_BASE: u64 = 1 << 32;
/// Bytes read from the server's stdout at a time (at least).
const READ_CHUNK: usize = 8 * 1024;
/// A read buffer grown beyond this for a long line is given back once empty.
const READ_BUFFER_KEPT: usize = 256 * 1024;
/// A UTF-8 byte order mark, which a line may start with (RFC 8259 lets readers ignore it).
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// Why a direct call is abandoned, as the server is told.
const ABANDONED: &str = "request abandoned by the caller";

/// The server's stdin, as the wire writes it.
pub(crate) type Stdin = Box<dyn AsyncWrite + Send + Unpin>;
/// The server's stdout, as the wire reads it.
pub(crate) type Stdout = Box<dyn AsyncRead + Send + Unpin>;

/// One stdio session's wire.
pub(crate) struct WireTee {
    state: Mutex<State>,
    writer: Mutex<Writer>,
    /// Lines the server wrote so far.
    lines_received: AtomicU64,
    /// The server's name, for progress routes.
    server: String,
    frontends: Arc<FrontEnds>,
    /// Where the backlog's writer runs.
    tracker: TaskTracker,
    /// Cancelled when the server's stdout reaches EOF (or fails).
    stdout_closed: CancellationToken,
    /// Cancelled at the first line that looks like a JSON-RPC message (an
    /// object naming `"jsonrpc"`) but is not valid JSON.
    broken_message: CancellationToken,
    /// Cancelled when the session's transport is closed or dropped: stdin is closed, nothing more is read.
    closed: CancellationToken,
    /// Finds `"resultType"` in a direct answer ([`WireTee::names_result_type`]): built once
    /// for the session, not at every call (building one is most of a search's cost).
    result_type: memchr::memmem::Finder<'static>,
}

impl std::fmt::Debug for WireTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireTee")
            .field("server", &self.server)
            .field("stdout_closed", &self.stdout_closed.is_cancelled())
            .field("closed", &self.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    /// Requests sent through rmcp and not answered: (id as JSON text, is `tools/list`).
    watched: VecDeque<(String, bool)>,
    /// Answers (`result` members) not taken yet, by id as JSON text.
    kept: VecDeque<(String, Box<RawValue>)>,
    /// The bytes of the answers in `kept`.
    kept_bytes: usize,
    /// Tools of the listing being gathered (pages so far).
    gathering: Vec<Box<RawValue>>,
    /// The latest complete `tools/list` not taken yet, in the server's order.
    listing: Option<Vec<Box<RawValue>>>,
    /// Of the lines the server wrote, those that are not valid JSON.
    invalid_lines: u64,
    /// Where the first invalid line broke, without its content (it may hold anything).
    first_invalid: Option<String>,
    /// Direct calls waiting for their answer, by id.
    direct: crate::FastMap<u64, oneshot::Sender<DirectAnswer>>,
    /// The id of the next direct call.
    next_direct: u64,
    /// No direct call can be answered any more (stdout ended, or the session did).
    direct_over: bool,
}

/// The writing side: the pipe, and what did not fit in it yet.
#[derive(Default)]
struct Writer {
    /// `None` once closed (or broken).
    stdin: Option<Stdin>,
    /// Bytes waiting for room in the pipe, in order; `backlog[written..]` is still to go.
    backlog: Vec<u8>,
    written: usize,
    /// A task is writing the backlog.
    flushing: bool,
}

impl Writer {
    fn has_backlog(&self) -> bool {
        self.written < self.backlog.len()
    }
}

/// The parts of a JSON-RPC message the wire looks at.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<&'a str>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

impl<'a> Message<'a> {
    /// The envelope of `line`. Read as text when it is (nearly always): its strings and raw
    /// values then need no UTF-8 check each. Otherwise as bytes, which accepts what it always did.
    fn read(line: &'a [u8]) -> serde_json::Result<Self> {
        match std::str::from_utf8(line) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(line),
        }
    }
}

/// `notifications/progress` params.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProgressParams {
    progress_token: serde_json::Value,
    progress: f64,
    #[serde(default)]
    total: Option<f64>,
    #[serde(default)]
    message: Option<String>,
}

/// A `tools/list` result.
#[derive(Deserialize)]
struct ToolsPage {
    tools: Vec<Box<RawValue>>,
    #[serde(default, rename = "nextCursor")]
    next_cursor: Option<serde::de::IgnoredAny>,
}

/// The server's answer to a direct call, as it wrote it.
#[derive(Debug)]
pub(crate) enum DirectAnswer {
    /// Its `result`.
    Result(Box<RawValue>),
    /// Its `error` object.
    Error(Box<RawValue>),
    /// A response with neither.
    Empty,
}

/// The session is over for direct calls: the server's stdout ended, or
/// corrald's side of the session (stdin closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireGone;

impl WireTee {
    /// The wire of a session of `server`; progress goes through `frontends`,
    /// the backlog's writer runs in `tracker`. Its pipes come with [`WireTee::transport`].
    pub(crate) fn new(server: &str, frontends: Arc<FrontEnds>, tracker: TaskTracker) -> Self {
        Self {
            state: Mutex::new(State {
                next_direct: DIRECT_ID_BASE,
                ..State::default()
            }),
            writer: Mutex::default(),
            lines_received: AtomicU64::new(0),
            server: server.to_owned(),
            frontends,
            tracker,
            stdout_closed: CancellationToken::new(),
            broken_message: CancellationToken::new(),
            closed: CancellationToken::new(),
            result_type: memchr::memmem::Finder::new(br#""resultType""#),
        }
    }

    /// Whether a direct answer's `result` may name its `resultType` (MCP 2026-07-28's
    /// `input_required`, a task): the key's bytes appear in it unescaped, which no
    /// string's content can make them do. A result without it is a plain one, passed on
    /// as the server wrote it; one with it (or with a value that happens to spell the
    /// key) is read into rmcp's model first (`forward`).
    pub(crate) fn names_result_type(&self, result: &RawValue) -> bool {
        self.result_type.find(result.get().as_bytes()).is_some()
    }

    /// The session's rmcp transport over the server's `stdout` and `stdin`.
    /// Dropping it (or rmcp closing it) closes the server's stdin: the first
    /// step of every teardown.
    pub(crate) fn transport(self: &Arc<Self>, stdout: Stdout, stdin: Stdin) -> WireTransport {
        self.writer().stdin = Some(stdin);
        let (sender, messages) = mpsc::channel(READ_AHEAD);
        let reader = WireReader {
            wire: self.clone(),
            stdout,
            buffer: Vec::with_capacity(READ_CHUNK),
            start: 0,
            scanned: 0,
            discarding: false,
        };
        let reader = self.tracker.spawn(reader.run(sender)).abort_handle();
        WireTransport {
            wire: self.clone(),
            messages,
            reader,
        }
    }

    /// Cancelled once the server's stdout reached EOF: the session is over.
    pub(crate) fn stdout_closed(&self) -> CancellationToken {
        self.stdout_closed.clone()
    }

    /// Cancelled once the server wrote a JSON-RPC message that is not valid JSON.
    pub(crate) fn broken_message(&self) -> CancellationToken {
        self.broken_message.clone()
    }

    /// How many lines the server wrote that are not valid JSON.
    pub(crate) fn invalid_lines(&self) -> u64 {
        self.state().invalid_lines
    }

    /// Where the first invalid line broke, e.g. `line 1 of its stdout, column 58: EOF while parsing a value`.
    pub(crate) fn invalid_summary(&self) -> String {
        self.state()
            .first_invalid
            .clone()
            .unwrap_or_else(|| "no invalid line".to_owned())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Bounded queues, consistent after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        // A pipe and a byte queue; a panic mid-write leaves at worst a line the server rejects.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer (`result`) to request `id` (any JSON-serializable id), if it was kept.
    pub(crate) fn take(&self, id: &impl serde::Serialize) -> Option<Box<RawValue>> {
        let key = serde_json::to_string(id).ok()?;
        let mut state = self.state();
        let index = state.kept.iter().position(|(kept, _)| *kept == key)?;
        let (_, result) = state.kept.remove(index)?;
        state.kept_bytes -= result.get().len();
        Some(result)
    }

    /// Forget request `id`, which its sender abandoned: its answer, if it comes or came, is
    /// not kept for anyone.
    pub(crate) fn forget(&self, id: &impl serde::Serialize) {
        let Ok(key) = serde_json::to_string(id) else {
            return;
        };
        let mut state = self.state();
        state.watched.retain(|(watched, _)| *watched != key);
        if let Some(index) = state.kept.iter().position(|(kept, _)| *kept == key)
            && let Some((_, result)) = state.kept.remove(index)
        {
            state.kept_bytes -= result.get().len();
        }
    }

    /// The tools of the latest complete `tools/list`, in the server's order, as the server
    /// wrote them, unless taken already (or not seen: a page too large to read).
    pub(crate) fn take_listing(&self) -> Option<Vec<Box<RawValue>>> {
        self.state().listing.take()
    }

    /// A direct call: its id and the place its answer comes to. Written with [`DirectCall::send`].
    pub(crate) fn begin_call(self: &Arc<Self>) -> Result<DirectCall, WireGone> {
        let (answer_tx, answer) = oneshot::channel();
        let id = {
            let mut state = self.state();
            if state.direct_over {
                return Err(WireGone);
            }
            let id = state.next_direct;
            state.next_direct += 1;
            state.direct.insert(id, answer_tx);
            id
        };
        Ok(DirectCall {
            wire: self.clone(),
            id,
            answer,
            sent: false,
            answered: false,
        })
    }

    /// Forget direct call `id`; whether it was still waiting for its answer.
    fn forget_call(&self, id: u64) -> bool {
        self.state().direct.remove(&id).is_some()
    }

    /// No direct call will be answered any more: fail those waiting, refuse new ones.
    fn end_direct_calls(&self) {
        let waiting = {
            let mut state = self.state();
            state.direct_over = true;
            std::mem::take(&mut state.direct)
        };
        // Dropping the senders fails the waiters (outside the lock).
        drop(waiting);
    }

    /// Close corrald's side: the server's stdin (EOF), the backlog, the direct calls.
    fn close(&self) {
        let stdin = {
            let mut writer = self.writer();
            writer.backlog = Vec::new();
            writer.written = 0;
            writer.stdin.take()
        };
        drop(stdin);
        self.closed.cancel();
        self.end_direct_calls();
    }

    /// Write `line` (which ends with a newline) whole: straight to the pipe
    /// while it has room, the rest into the backlog. `Err` once stdin is
    /// closed or broken (the server went away).
    fn write_line(self: &Arc<Self>, line: &[u8]) -> Result<(), WireGone> {
        let mut writer = self.writer();
        let writer = &mut *writer;
        let queued = writer.has_backlog();
        let Some(stdin) = writer.stdin.as_mut() else {
            return Err(WireGone);
        };
        let mut rest = line;
        if !queued {
            // Nothing queued before it: try the pipe now, without waiting. A `Pending`
            // leaves the pipe's readiness to the backlog's task, which polls with its waker.
            let mut cx = Context::from_waker(Waker::noop());
            while !rest.is_empty() {
                match Pin::new(&mut *stdin).poll_write(&mut cx, rest) {
                    Poll::Ready(Ok(written)) if written > 0 => rest = &rest[written..],
                    Poll::Ready(_) => {
                        // EOF or an error (EPIPE): the server no longer reads its stdin.
                        writer.stdin = None;
                        return Err(WireGone);
                    }
                    Poll::Pending => break,
                }
            }
            if rest.is_empty() {
                return Ok(());
            }
            writer.backlog.clear();
            writer.written = 0;
        }
        writer.backlog.extend_from_slice(rest);
        if !writer.flushing {
            writer.flushing = true;
            let wire = self.clone();
            self.tracker.spawn(async move {
                let closed = wire.closed.clone();
                tokio::select! {
                    () = poll_fn(|cx| wire.poll_backlog(cx)) => {}
                    () = closed.cancelled() => wire.writer().flushing = false,
                }
            });
        }
        Ok(())
    }

    /// Write the backlog as the pipe takes it; ready once it is empty (or the pipe is gone).
    fn poll_backlog(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut writer = self.writer();
        let writer = &mut *writer;
        loop {
            let queued = writer.has_backlog();
            let (Some(stdin), true) = (writer.stdin.as_mut(), queued) else {
                writer.backlog.clear();
                writer.written = 0;
                writer.flushing = false;
                return Poll::Ready(());
            };
            match Pin::new(stdin).poll_write(cx, &writer.backlog[writer.written..]) {
                Poll::Ready(Ok(written)) if written > 0 => writer.written += written,
                Poll::Ready(_) => writer.stdin = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// A line corrald wrote to the server through rmcp: watch the ids whose answers are kept.
    fn sent(&self, line: &[u8]) {
        let Ok(message) = Message::read(line) else {
            return;
        };
        let (Some(id), Some(method)) = (message.id, message.method) else {
            return;
        };
        let is_list = method == TOOLS_LIST;
        if !is_list && !keeps(method) {
            return;
        }
        let mut state = self.state();
        if is_list {
            // A listing starts with a request without a cursor.
            let first_page = message
                .params
                .and_then(|params| serde_json::from_str::<HashMap<&str, &RawValue>>(params.get()).ok())
                .is_none_or(|params| !params.contains_key("cursor"));
            if first_page {
                // What a listing left behind is not this listing's.
                state.gathering.clear();
                state.listing = None;
            }
        }
        state.watched.push_back((id.get().to_owned(), is_list));
        if state.watched.len() > MAX_WATCHED {
            state.watched.pop_front();
        }
    }

    /// A line the server wrote (without its newline): delivered here, or returned for rmcp
    /// (a message of its, or the news of a broken one, in the order the server wrote them).
    fn received(self: &Arc<Self>, line: &[u8]) -> Option<ForRmcp> {
        let number = self.lines_received.fetch_add(1, Ordering::Relaxed) + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let Ok(message) = Message::read(line) else {
            // Not JSON at all: counted, and nothing rmcp could read. JSON of another shape
            // (or a method name with escapes, which the envelope cannot borrow): rmcp's.
            if !self.not_a_message(line, number) {
                return self.for_rmcp(line, false);
            }
            // Told (`broken_message`) when rmcp took what the server wrote before it.
            return looks_like_a_message(line).then_some(ForRmcp::Broken);
        };
        match (message.id, message.method) {
            (None, Some(PROGRESS)) => {
                self.progress(message.params);
                None
            }
            (Some(id), None) => {
                if let Some(direct) = direct_id(id) {
                    self.answer_direct(direct, &message);
                    return None;
                }
                if let Some(result) = message.result {
                    self.keep(id, result);
                }
                self.for_rmcp(line, false)
            }
            (None, Some(_)) => self.for_rmcp(line, true),
            _ => self.for_rmcp(line, false),
        }
    }

    /// Hand the answer to direct call `id` to its waiter (if it still waits).
    fn answer_direct(&self, id: u64, message: &Message<'_>) {
        let Some(waiter) = self.state().direct.remove(&id) else {
            tracing::debug!(server = %self.server, id, "answer to a direct call nobody waits for (abandoned)");
            return;
        };
        let answer = match (message.result, message.error) {
            (Some(result), _) => DirectAnswer::Result(result.to_owned()),
            (None, Some(error)) => DirectAnswer::Error(error.to_owned()),
            (None, None) => DirectAnswer::Empty,
        };
        let _ = waiter.send(answer);
    }

    /// Keep the answer to a request rmcp sent, if it is watched.
    fn keep(&self, id: &RawValue, result: &RawValue) {
        let mut state = self.state();
        let Some(index) = state.watched.iter().position(|(watched, _)| watched == id.get()) else {
            return;
        };
        let Some((key, is_list)) = state.watched.remove(index) else {
            return;
        };
        if !is_list {
            state.kept_bytes += result.get().len();
            state.kept.push_back((key, result.to_owned()));
            while state.kept.len() > MAX_KEPT || (state.kept_bytes > MAX_KEPT_BYTES && state.kept.len() > 1) {
                if let Some((_, dropped)) = state.kept.pop_front() {
                    state.kept_bytes -= dropped.get().len();
                }
            }
            return;
        }
        let Ok(page) = serde_json::from_str::<ToolsPage>(result.get()) else {
            return;
        };
        state.gathering.extend(page.tools);
        if page.next_cursor.is_none() {
            state.listing = Some(std::mem::take(&mut state.gathering));
        }
    }

    /// A line for rmcp, parsed into its model as its own stdio transport would: a line
    /// that is not JSON, or a notification that does not fit, is skipped; other JSON that
    /// does not fit is answered `Invalid Request` (without an id).
    fn for_rmcp(self: &Arc<Self>, line: &[u8], is_notification: bool) -> Option<ForRmcp> {
        match serde_json::from_slice(line) {
            Ok(message) => Some(ForRmcp::Message(message)),
            Err(error) if error.classify() == serde_json::error::Category::Data && !is_notification => {
                tracing::debug!(server = %self.server, %error, "a message of the server does not fit MCP");
                self.answer_invalid();
                None
            }
            Err(error) => {
                tracing::debug!(server = %self.server, %error, "skipped a line of the server that does not fit MCP");
                None
            }
        }
    }

    /// `Invalid Request` to the server, unless the pipe is backed up (then nobody needs it).
    fn answer_invalid(self: &Arc<Self>) {
        if self.writer().has_backlog() {
            return;
        }
        let answer = TxJsonRpcMessage::<RoleClient>::error(ErrorData::invalid_request("Invalid request", None), None);
        if let Ok(mut line) = serde_json::to_vec(&answer) {
            line.push(b'\n');
            let _ = self.write_line(&line);
        }
    }

    /// A line that is not a JSON-RPC message; returns whether it is not JSON at all
    /// (then counted as invalid).
    fn not_a_message(&self, line: &[u8], number: u64) -> bool {
        let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(line) else {
            return false; // valid JSON, just not a message: rmcp's business
        };
        let mut state = self.state();
        state.invalid_lines += 1;
        if state.first_invalid.is_none() {
            let text = error.to_string();
            let what = text.split(" at line ").next().unwrap_or(&text);
            state.first_invalid = Some(format!(
                "line {number} of its stdout, column {}: {what}",
                error.column()
            ));
        }
        true
    }

    /// The server's stdout ended (or failed): the session is over.
    fn stdout_ended(&self) {
        self.stdout_closed.cancel();
        self.end_direct_calls();
    }
}

/// Whether a line that is not JSON looks like a JSON-RPC message (an object naming
/// `"jsonrpc"`): a broken one, which ends the session's start (`broken_message`).
fn looks_like_a_message(line: &[u8]) -> bool {
    let trimmed = line.trim_ascii_start();
    trimmed.starts_with(b"{") && trimmed.windows(9).any(|window| window == b"\"jsonrpc\"")
}

/// The id of a direct call, if `id` is one.
fn direct_id(id: &RawValue) -> Option<u64> {
    id.get().parse::<u64>().ok().filter(|id| *id >= DIRECT_ID_BASE)
}

/// The MCP progress notification.
const PROGRESS: &str = "notifications/progress";

impl WireTee {
    /// Route progress to the front-end whose request it is about, now,
    /// before anything the server wrote after it is read.
    fn progress(&self, params: Option<&RawValue>) {
        let Some(params) = params.and_then(|params| serde_json::from_str::<ProgressParams>(params.get()).ok()) else {
            return;
        };
        self.frontends.route_progress(
            &self.server,
            &params.progress_token,
            params.progress,
            params.total,
            params.message,
        );
    }
}

/// A request sent on the wire directly, and the place its answer comes to.
/// Dropped before its answer came, it tells the server the request is abandoned.
#[derive(Debug)]
pub(crate) struct DirectCall {
    wire: Arc<WireTee>,
    id: u64,
    answer: oneshot::Receiver<DirectAnswer>,
    sent: bool,
    answered: bool,
}

/// Room for a small request's line at once (a larger one grows).
const REQUEST_LINE: usize = 256;

/// `notifications/cancelled`, as the wire writes it.
#[derive(Serialize)]
struct Cancelled {
    jsonrpc: &'static str,
    method: &'static str,
    params: CancelledParams,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CancelledParams {
    request_id: u64,
    reason: &'static str,
}

impl DirectCall {
    /// The request's id on the wire (also the progress token it may carry).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Write the request: `method` with `params`.
    #[cfg(test)]
    pub(crate) fn send(&mut self, method: &str, params: &impl Serialize) -> Result<(), WireGone> {
        self.send_written(method, |line| serde_json::to_writer(line, params))
    }

    /// Write the request: `method` with the params `write_params` writes (JSON). The wire
    /// is one message a line, and params written as a front-end wrote them (a call's
    /// arguments) may span several (a `Content-Length` frame, the HTTP endpoint): in JSON
    /// text a raw line end can only be whitespace between tokens (a string's is escaped),
    /// so each is sent as a space, the same JSON on one line.
    pub(crate) fn send_written(
        &mut self,
        method: &str,
        write_params: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
    ) -> Result<(), WireGone> {
        // The envelope's constant parts as they are: only the method and the params are
        // serialized (what serde would write for the request as a struct, byte for byte).
        let mut line = Vec::with_capacity(REQUEST_LINE);
        line.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
        line.extend_from_slice(itoa::Buffer::new().format(self.id).as_bytes());
        line.extend_from_slice(br#","method":"#);
        serde_json::to_writer(&mut line, method).map_err(|_| WireGone)?;
        line.extend_from_slice(br#","params":"#);
        let params = line.len();
        write_params(&mut line).map_err(|_| WireGone)?;
        if memchr::memchr2(b'\n', b'\r', &line[params..]).is_some() {
            for byte in &mut line[params..] {
                if matches!(*byte, b'\n' | b'\r') {
                    *byte = b' ';
                }
            }
        }
        line.extend_from_slice(b"}\n");
        self.wire.write_line(&line)?;
        self.sent = true;
        Ok(())
    }

    /// The server's answer; `Err` when the session ended first.
    pub(crate) async fn answer(&mut self) -> Result<DirectAnswer, WireGone> {
        let answer = (&mut self.answer).await.map_err(|_| WireGone)?;
        self.answered = true;
        Ok(answer)
    }
}

impl Drop for DirectCall {
    fn drop(&mut self) {
        if self.answered || !self.wire.forget_call(self.id) || !self.sent {
            return;
        }
        let notice = Cancelled {
            jsonrpc: "2.0",
            method: "notifications/cancelled",
            params: CancelledParams {
                request_id: self.id,
                reason: ABANDONED,
            },
        };
        if let Ok(mut line) = serde_json::to_vec(&notice) {
            line.push(b'\n');
            if self.wire.write_line(&line).is_err() {
                tracing::debug!(server = %self.wire.server, "cannot tell the server a request was cancelled");
            }
        }
    }
}

/// What the reader hands rmcp's side of the wire, in the order the server wrote it.
#[allow(
    clippy::large_enum_variant,
    reason = "at most two wait in the channel; boxing would allocate for every message"
)]
enum ForRmcp {
    /// A message of rmcp's.
    Message(RxJsonRpcMessage<RoleClient>),
    /// A line that looks like a JSON-RPC message but is not valid JSON: told
    /// (`broken_message`) once rmcp took every line before it, as when rmcp read the pipe.
    Broken,
}

/// rmcp's transport of a stdio session: what rmcp sends goes out through the
/// wire's writer; what it receives is what the wire's reader ([`WireReader`], a task of
/// its own) did not deliver itself. The reader is stopped when the transport is closed
/// or dropped.
pub(crate) struct WireTransport {
    wire: Arc<WireTee>,
    /// The lines for rmcp, parsed; closed when the server's stdout ended.
    messages: mpsc::Receiver<ForRmcp>,
    /// The reader's task.
    reader: AbortHandle,
}

impl std::fmt::Debug for WireTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireTransport")
            .field("wire", &self.wire)
            .finish_non_exhaustive()
    }
}

impl WireTransport {
    /// The session is over: the reader stops, the server's stdin is closed.
    fn end(&self) {
        self.reader.abort();
        self.wire.close();
    }
}

impl Transport<RoleClient> for WireTransport {
    type Error = io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let wire = self.wire.clone();
        let line = serde_json::to_vec(&item);
        async move {
            let mut line = line?;
            wire.sent(&line);
            line.push(b'\n');
            wire.write_line(&line)
                .map_err(|WireGone| io::Error::new(io::ErrorKind::BrokenPipe, "the server's stdin is closed"))
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            match self.messages.recv().await {
                Some(ForRmcp::Message(message)) => return Some(message),
                Some(ForRmcp::Broken) => self.wire.broken_message.cancel(),
                None => {
                    // The reader reached the end of the server's stdout. Told here, once rmcp
                    // took every line before it (an answer written just before the end still
                    // reaches its request before the session is torn down), as when rmcp read
                    // the pipe itself.
                    self.wire.stdout_ended();
                    return None;
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.end();
        Ok(())
    }
}

impl Drop for WireTransport {
    fn drop(&mut self) {
        self.end();
    }
}

/// The one reader of a server's stdout: a task of its own, so that an answer to a direct
/// call wakes only this task and its caller (rmcp's session task, with its channels and
/// timers, is woken only for what is rmcp's). Lines for rmcp go through a short channel:
/// while rmcp does not take them, reading waits, as it would if rmcp read the pipe itself.
struct WireReader {
    wire: Arc<WireTee>,
    stdout: Stdout,
    /// What was read and not handled yet: `buffer[start..]`, of which `buffer[start..scanned]`
    /// holds no newline.
    buffer: Vec<u8>,
    start: usize,
    scanned: usize,
    /// Dropping the rest of a line longer than [`MAX_LINE`].
    discarding: bool,
}

impl WireReader {
    /// Read until the server's stdout ends (or fails), or rmcp's side of the channel is gone.
    async fn run(mut self, messages: mpsc::Sender<ForRmcp>) {
        loop {
            while let Some((start, end)) = self.next_line() {
                if let Some(item) = self.wire.received(&self.buffer[start..end])
                    && messages.send(item).await.is_err()
                {
                    return; // the transport is gone: the session is over
                }
            }
            self.compact();
            self.buffer.reserve(READ_CHUNK);
            match self.stdout.read_buf(&mut self.buffer).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(server = %self.wire.server, %error, "reading the server's stdout failed");
                    break;
                }
            }
        }
        // Nothing more can answer a direct call. That the stdout ended is told when rmcp
        // finds the channel closed (it closes when this returns): after rmcp's lines.
        self.wire.end_direct_calls();
    }

    /// The next complete line in the buffer (without its newline, `\r` and a UTF-8 BOM), as a range.
    fn next_line(&mut self) -> Option<(usize, usize)> {
        loop {
            let newline = memchr::memchr(b'\n', &self.buffer[self.scanned..]).map(|offset| self.scanned + offset);
            let Some(newline) = newline else {
                self.scanned = self.buffer.len();
                if !self.discarding && self.scanned - self.start > MAX_LINE {
                    tracing::error!(
                        server = %self.wire.server,
                        max = MAX_LINE,
                        "the server wrote a line longer than the limit; dropping it"
                    );
                    self.discarding = true;
                }
                if self.discarding {
                    self.start = self.scanned;
                }
                return None;
            };
            let (start, end) = (self.start, newline);
            self.start = newline + 1;
            self.scanned = self.start;
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            let (mut first, mut last) = (start, end);
            if last > first && self.buffer[last - 1] == b'\r' {
                last -= 1;
            }
            if self.buffer[first..last].starts_with(UTF8_BOM) {
                first += UTF8_BOM.len();
            }
            return Some((first, last));
        }
    }

    /// Drop what was handled; give back a buffer grown for a long line once it is empty.
    fn compact(&mut self) {
        if self.start == self.buffer.len() {
            self.buffer.clear();
            if self.buffer.capacity() > READ_BUFFER_KEPT {
                self.buffer = Vec::with_capacity(READ_CHUNK);
            }
        } else if self.start > 0 {
            self.buffer.drain(..self.start);
        } else {
            return;
        }
        self.scanned -= self.start;
        self.start = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

    use super::*;

    /// A wire without pipes: lines are fed by hand.
    fn wire() -> Arc<WireTee> {
        Arc::new(WireTee::new("s", Arc::new(FrontEnds::default()), TaskTracker::new()))
    }

    #[test]
    fn a_result_names_its_result_type_only_with_the_key_itself() {
        let wire = wire();
        let names = |text: &str| wire.names_result_type(&RawValue::from_string(text.to_owned()).expect("JSON"));
        assert!(!names(r#"{"content":[{"type":"text","text":"Echo: x"}]}"#));
        assert!(names(r#"{"resultType":"input_required","inputRequests":{}}"#));
        assert!(names(r#"{"content":[],"resultType" : "complete"}"#));
        assert!(
            !names(r#"{"content":[{"type":"text","text":"a \"resultType\" in words"}]}"#),
            "a string's content never spells the key unescaped"
        );
    }

    fn feed(wire: &Arc<WireTee>, sent: &str, received: &str) {
        wire.sent(sent.as_bytes());
        assert!(
            wire.received(received.as_bytes()).is_some(),
            "an answer to rmcp's request is rmcp's"
        );
    }

    /// A wire over in-memory pipes: (the wire, rmcp's transport, the server's side: its stdin
    /// to read what corrald wrote, its stdout to write to corrald). `room`: the stdin pipe's size.
    fn piped(
        room: usize,
    ) -> (
        Arc<WireTee>,
        WireTransport,
        BufReader<tokio::io::DuplexStream>,
        tokio::io::DuplexStream,
    ) {
        let wire = wire();
        let (stdin, server_stdin) = tokio::io::duplex(room);
        let (server_stdout, stdout) = tokio::io::duplex(64 * 1024);
        let transport = wire.transport(Box::new(stdout), Box::new(stdin));
        (wire, transport, BufReader::new(server_stdin), server_stdout)
    }

    /// Wait (at most 5 s) until `done`; fail naming `what` otherwise.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not within 5 s: {what}");
    }

    /// What rmcp's side receives next (at most 5 s).
    async fn receive(transport: &mut WireTransport) -> Option<RxJsonRpcMessage<RoleClient>> {
        tokio::time::timeout(Duration::from_secs(5), transport.receive())
            .await
            .expect("rmcp's side received within 5 s")
    }

    async fn read_line(reader: &mut BufReader<tokio::io::DuplexStream>) -> serde_json::Value {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
            .await
            .expect("a line within 5 s")
            .expect("readable");
        serde_json::from_str(&line).expect("a JSON line")
    }

    #[test]
    fn invalid_json_is_counted_and_a_broken_message_is_flagged() {
        let wire = wire();
        // Stray output is neither rmcp's nor a broken message.
        assert!(wire.received(b"this is not json").is_none());
        assert!(wire.received(b"{broken").is_none());
        assert!(
            wire.received(b"[1, 2]").is_none(),
            "valid JSON, not a message: skipped by rmcp's rules"
        );
        assert!(wire.received(b"   ").is_none());
        assert_eq!(wire.invalid_lines(), 2);
        let summary = wire.invalid_summary();
        assert!(summary.starts_with("line 1 of its stdout, column "), "{summary}");
        assert!(
            !summary.contains("this is not json"),
            "never quotes the line: {summary}"
        );
        assert!(
            matches!(
                wire.received(br#"{"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": "#),
                Some(ForRmcp::Broken)
            ),
            "a broken message, for rmcp's side to be told in order"
        );
        assert_eq!(wire.invalid_lines(), 3);
    }

    #[test]
    fn answers_to_watched_requests_are_kept_verbatim_until_taken() {
        let wire = wire();
        let result = r#"{"content":[{"type":"text","text":"hi","annotations":{"priority":0.7}}],"x-extra":[1.0]}"#;
        feed(
            &wire,
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo"}}"#,
            &format!(r#"{{"jsonrpc":"2.0","id":7,"result":{result}}}"#),
        );
        // Not watched: initialize, notifications, errors.
        feed(
            &wire,
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        );
        feed(
            &wire,
            r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":8,"error":{"code":1,"message":"no"}}"#,
        );
        assert_eq!(wire.take(&1).map(|raw| raw.get().to_owned()), None);
        assert_eq!(wire.take(&8).map(|raw| raw.get().to_owned()), None);
        assert_eq!(wire.take(&7).map(|raw| raw.get().to_owned()).as_deref(), Some(result));
        assert!(wire.take(&7).is_none(), "taken once");
    }

    /// The tools of a taken listing, as text.
    fn taken(wire: &WireTee) -> Option<Vec<String>> {
        wire.take_listing()
            .map(|tools| tools.iter().map(|tool| tool.get().to_owned()).collect())
    }

    #[test]
    fn tools_list_pages_become_one_listing_in_order_taken_once() {
        let wire = wire();
        feed(
            &wire,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"z","execution":{"taskSupport":"forbidden"}}, {"name":"a"}],"nextCursor":"p2"}}"#,
        );
        assert_eq!(taken(&wire), None, "incomplete listing");
        feed(
            &wire,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"cursor":"p2"}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[ {"name":"b"} ]}}"#,
        );
        assert_eq!(
            taken(&wire).expect("a complete listing"),
            [
                r#"{"name":"z","execution":{"taskSupport":"forbidden"}}"#,
                r#"{"name":"a"}"#,
                r#"{"name":"b"}"#
            ],
            "every page, in the server's order, byte for byte"
        );
        assert_eq!(taken(&wire), None, "taken once");
    }

    #[test]
    fn a_new_listing_starts_over_what_earlier_ones_left() {
        let wire = wire();
        feed(
            &wire,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"half"}],"nextCursor":"p2"}}"#,
        );
        // The next page never came (the listing was abandoned); a new listing begins.
        feed(
            &wire,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/list","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"new"}]}}"#,
        );
        assert_eq!(taken(&wire).expect("a complete listing"), [r#"{"name":"new"}"#]);

        feed(
            &wire,
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"untaken"}]}}"#,
        );
        // The next listing's answer is not one the wire can read (rmcp decides what it is).
        wire.sent(br#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}}"#);
        let _ = wire.received(br#"{"jsonrpc":"2.0","id":5,"result":{"tools":"not a list"}}"#);
        assert_eq!(taken(&wire), None, "never an earlier listing for a later one");
    }

    #[test]
    fn memory_is_bounded() {
        let wire = wire();
        for id in 0..1000 {
            feed(
                &wire,
                &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call"}}"#),
                &format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#),
            );
            wire.sent(format!(r#"{{"jsonrpc":"2.0","id":{},"method":"tools/call"}}"#, id + 5000).as_bytes());
        }
        let state = wire.state();
        assert_eq!(state.kept.len(), MAX_KEPT);
        assert_eq!(state.watched.len(), MAX_WATCHED);
    }

    #[test]
    fn kept_answers_are_bounded_in_bytes_and_the_newest_is_kept() {
        let wire = wire();
        // Each answer a quarter of the bound: at most four are kept.
        let text = "x".repeat(MAX_KEPT_BYTES / 4);
        for id in 0..10 {
            feed(
                &wire,
                &format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"resources/read"}}"#),
                &format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"text":"{text}"}}}}"#),
            );
        }
        {
            let state = wire.state();
            assert!(state.kept_bytes <= MAX_KEPT_BYTES, "{} bytes kept", state.kept_bytes);
            assert_eq!(state.kept.len(), 3, "the newest three fit beside each other");
            let total: usize = state.kept.iter().map(|(_, result)| result.get().len()).sum();
            assert_eq!(state.kept_bytes, total, "the count follows the answers");
        }
        assert!(wire.take(&9).is_some(), "the newest answer is kept");
        assert!(wire.take(&0).is_none(), "the oldest went first");
        let state = wire.state();
        let total: usize = state.kept.iter().map(|(_, result)| result.get().len()).sum();
        assert_eq!(state.kept_bytes, total, "taking an answer takes its bytes");
    }

    #[test]
    fn an_abandoned_request_keeps_no_answer() {
        let wire = wire();
        wire.sent(br#"{"jsonrpc":"2.0","id":7,"method":"resources/read"}"#);
        wire.forget(&7);
        let _ = wire.received(br#"{"jsonrpc":"2.0","id":7,"result":{"contents":[]}}"#);
        assert!(wire.take(&7).is_none(), "the answer came after its sender gave up");
        assert_eq!(wire.state().kept_bytes, 0);
        // Forgotten after it came: dropped too.
        feed(
            &wire,
            r#"{"jsonrpc":"2.0","id":8,"method":"resources/read"}"#,
            r#"{"jsonrpc":"2.0","id":8,"result":{"contents":[]}}"#,
        );
        wire.forget(&8);
        let state = wire.state();
        assert!(state.kept.is_empty());
        assert_eq!(state.kept_bytes, 0);
    }

    #[tokio::test]
    async fn lines_split_across_reads_are_joined_and_crlf_bom_and_empty_lines_are_rmcps_rules() {
        let (_wire, mut transport, _server_stdin, mut server_stdout) = piped(1024);
        let line = "\u{feff}{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\r\n";
        let (first, second) = line.as_bytes().split_at(10);
        server_stdout.write_all(b"\n\r\n").await.expect("write");
        server_stdout.write_all(first).await.expect("write");
        let receiving = tokio::spawn(async move { (transport.receive().await, transport) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        server_stdout.write_all(second).await.expect("write");
        let (message, _transport) = tokio::time::timeout(Duration::from_secs(5), receiving)
            .await
            .expect("received within 5 s")
            .expect("the task");
        let message = serde_json::to_value(message.expect("a message")).expect("serializable");
        assert_eq!(message["method"], "notifications/tools/list_changed", "{message}");
    }

    #[tokio::test]
    async fn a_direct_call_is_answered_to_its_caller_and_never_handed_to_rmcp() {
        let (wire, mut transport, mut server_stdin, mut server_stdout) = piped(1024);
        let mut call = wire.begin_call().expect("a live wire");
        call.send("tools/call", &serde_json::json!({"name": "echo"}))
            .expect("sent");
        let request = read_line(&mut server_stdin).await;
        assert_eq!(request["method"], "tools/call");
        let id = request["id"].as_u64().expect("a numeric id");
        assert!(id >= DIRECT_ID_BASE, "above rmcp's ids: {id}");
        assert_eq!(
            request,
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo"}}),
            "the whole request, and nothing else"
        );
        // The server answers, then says something rmcp must see.
        let answer = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[],"x":1.0}}}}"#);
        server_stdout.write_all(answer.as_bytes()).await.expect("write");
        server_stdout
            .write_all(b"\n{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n")
            .await
            .expect("write");
        let message = receive(&mut transport).await.expect("a message");
        let message = serde_json::to_value(message).expect("serializable");
        assert_eq!(
            message["method"], "notifications/tools/list_changed",
            "the answer went to its caller, not to rmcp: {message}"
        );
        match call.answer().await.expect("answered") {
            DirectAnswer::Result(raw) => assert_eq!(raw.get(), r#"{"content":[],"x":1.0}"#, "as the server wrote it"),
            other => panic!("not a result: {other:?}"),
        }
        drop(call);
        // Answered: nothing more is written for it.
        let mut next = wire.begin_call().expect("a live wire");
        next.send("ping", &serde_json::json!({})).expect("sent");
        assert_eq!(
            read_line(&mut server_stdin).await["method"],
            "ping",
            "no cancellation before it"
        );
    }

    #[tokio::test]
    async fn a_direct_call_is_answered_while_rmcp_takes_nothing_and_the_reader_stops_with_the_session() {
        let (wire, transport, mut server_stdin, mut server_stdout) = piped(1024);
        // rmcp's side is busy elsewhere: something of its own is waiting for it first.
        server_stdout
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n")
            .await
            .expect("write");
        let mut call = wire.begin_call().expect("a live wire");
        call.send("tools/call", &serde_json::json!({"name": "echo"}))
            .expect("sent");
        let id = read_line(&mut server_stdin).await["id"].as_u64().expect("an id");
        let answer = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{}}}}\n");
        server_stdout.write_all(answer.as_bytes()).await.expect("write");
        let answered = tokio::time::timeout(Duration::from_secs(5), call.answer())
            .await
            .expect("answered within 5 s, though rmcp never received");
        assert!(matches!(answered, Ok(DirectAnswer::Result(_))), "{answered:?}");
        // The session ends: nothing reads the server's stdout any more.
        drop(transport);
        let mut writes = 0;
        // A pipe of 64 KiB: once the reader is gone, a write fails (or fills it, then fails).
        while server_stdout.write_all(&[b'\n'; 1024]).await.is_ok() {
            writes += 1;
            assert!(
                writes <= 1000,
                "the server's stdout is still read after the session ended"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn the_end_of_stdout_is_told_after_rmcp_took_the_lines_before_it() {
        let (wire, mut transport, _server_stdin, mut server_stdout) = piped(1024);
        server_stdout
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n")
            .await
            .expect("write");
        drop(server_stdout);
        // The direct lane learns of the end at once ...
        eventually("direct calls refused after the server's stdout ended", || {
            wire.begin_call().is_err()
        })
        .await;
        // ... the session only after it took the answer written before the end.
        assert!(!wire.stdout_closed().is_cancelled(), "told before rmcp took its answer");
        let answer = receive(&mut transport).await.expect("the answer before the end");
        assert_eq!(serde_json::to_value(answer).expect("serializable")["id"], 1);
        assert!(!wire.stdout_closed().is_cancelled());
        assert!(receive(&mut transport).await.is_none(), "then the end");
        assert!(wire.stdout_closed().is_cancelled());
    }

    #[tokio::test]
    async fn a_broken_message_is_told_after_rmcp_took_the_lines_before_it() {
        let (wire, mut transport, _server_stdin, mut server_stdout) = piped(1024);
        server_stdout
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n{\"jsonrpc\": \"2.0\", \"id\": 2, \"res\n")
            .await
            .expect("write");
        eventually("the broken line read", || wire.invalid_lines() > 0).await;
        assert!(
            !wire.broken_message.is_cancelled(),
            "told before rmcp took the answer before it"
        );
        let answer = receive(&mut transport).await.expect("the answer before it");
        assert_eq!(serde_json::to_value(answer).expect("serializable")["id"], 1);
        // rmcp asks for more: it is told on the way, and nothing else comes.
        let more = tokio::time::timeout(Duration::from_millis(200), transport.receive()).await;
        assert!(more.is_err(), "no message after the broken line");
        assert!(wire.broken_message.is_cancelled());
    }

    #[tokio::test]
    async fn params_written_over_several_lines_go_on_the_wire_as_one() {
        let (wire, _transport, mut server_stdin, _server_stdout) = piped(1024);
        let mut call = wire.begin_call().expect("a live wire");
        let params =
            "{\"name\": \"echo\",\r\n \"arguments\": {\n  \"message\": \"two\\nlines\",\n  \"n\": [1,\n 2]\n}}";
        call.send_written("tools/call", |line| {
            line.extend_from_slice(params.as_bytes());
            Ok(())
        })
        .expect("sent");
        // One line, the same JSON.
        let sent = read_line(&mut server_stdin).await;
        assert_eq!(
            sent["params"],
            serde_json::json!({"name": "echo", "arguments": {"message": "two\nlines", "n": [1, 2]}})
        );
    }

    #[tokio::test]
    async fn a_dropped_direct_call_is_cancelled_on_the_server_and_its_late_answer_dropped() {
        let (wire, mut transport, mut server_stdin, mut server_stdout) = piped(1024);
        let mut call = wire.begin_call().expect("a live wire");
        call.send("tools/call", &serde_json::json!({"name": "sleep"}))
            .expect("sent");
        let id = read_line(&mut server_stdin).await["id"].as_u64().expect("an id");
        drop(call);
        let cancelled = read_line(&mut server_stdin).await;
        assert_eq!(
            cancelled,
            serde_json::json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
                               "params": {"requestId": id, "reason": ABANDONED}})
        );
        // A late answer reaches nobody, and rmcp never sees it.
        let late = format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{}}}}\n");
        server_stdout.write_all(late.as_bytes()).await.expect("write");
        server_stdout
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\"}\n")
            .await
            .expect("write");
        let message = receive(&mut transport).await.expect("a message");
        let message = serde_json::to_value(message).expect("serializable");
        assert_eq!(message["method"], "ping", "{message}");
    }

    #[tokio::test]
    async fn the_end_of_stdout_or_of_the_session_fails_the_calls_waiting() {
        let (wire, mut transport, _server_stdin, server_stdout) = piped(1024);
        let mut call = wire.begin_call().expect("a live wire");
        call.send("tools/call", &serde_json::json!({})).expect("sent");
        drop(server_stdout);
        assert!(receive(&mut transport).await.is_none(), "EOF ends rmcp's session");
        assert!(wire.stdout_closed().is_cancelled());
        assert_eq!(call.answer().await.err(), Some(WireGone));
        assert!(wire.begin_call().is_err(), "no new call on a wire whose stdout ended");

        let (wire, transport, mut server_stdin, _server_stdout) = piped(1024);
        let mut call = wire.begin_call().expect("a live wire");
        call.send("tools/call", &serde_json::json!({})).expect("sent");
        drop(transport);
        assert_eq!(call.answer().await.err(), Some(WireGone), "the session's end fails it");
        let _request = read_line(&mut server_stdin).await;
        let mut rest = String::new();
        let read = server_stdin.read_line(&mut rest).await.expect("readable");
        assert_eq!(read, 0, "and closes the server's stdin: {rest}");
    }

    #[tokio::test]
    async fn lines_never_interleave_when_the_pipe_is_full() {
        // A pipe of 64 bytes: every line waits in the backlog for the server to read.
        let (wire, _transport, server_stdin, _server_stdout) = piped(64);
        let reader = tokio::spawn(async move {
            let mut server_stdin = server_stdin;
            let mut lines = Vec::new();
            for _ in 0..60 {
                lines.push(read_line(&mut server_stdin).await);
            }
            lines
        });
        let mut calls = Vec::new();
        for round in 0..20 {
            for size in [1, 100, 1000] {
                let mut call = wire.begin_call().expect("a live wire");
                call.send(
                    "tools/call",
                    &serde_json::json!({"round": round, "pad": "x".repeat(size)}),
                )
                .expect("sent");
                calls.push(call);
            }
        }
        let lines = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("all lines within 5 s")
            .expect("the reader");
        let ids: Vec<u64> = lines.iter().map(|line| line["id"].as_u64().expect("an id")).collect();
        let expected: Vec<u64> = calls.iter().map(DirectCall::id).collect();
        assert_eq!(ids, expected, "every line whole, in order");
    }
}
