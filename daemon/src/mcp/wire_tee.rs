//! The tee of a stdio server's wire ([`WireTee`]): the server's answers as
//! it wrote them, and what rmcp does not say about its stdout.
//!
//! rmcp parses every message into its typed model, and a few fields do not
//! survive the round trip (a `Tool`'s `execution`, which rmcp has no field
//! for; `annotations.priority`, which it keeps as `f32`). Front-ends must
//! get what the server sent, so corrald tees the server's pipes before rmcp
//! reads them: the requests corrald writes say which ids to watch (a
//! front-end's: tools, resources, prompts, skills, methods passed through;
//! not corrald's own `initialize`, `ping`, subscriptions, tasks), and the
//! answers to those ids are kept, bounded, for
//! the sender of the request (`mcp::forward`) to take by id. `tools/list` pages are
//! gathered into a listing, in the server's order, which the server task takes once
//! when it builds the session's tool catalog (`mcp::tool_catalog`); the task lists
//! one listing at a time, so the listing completed last is the one it asked for.
//! Where nothing was kept (another transport, a message too large), callers fall
//! back to rmcp's typed value.
//!
//! The tee also tells the server task what rmcp does not: that the server's
//! stdout reached EOF (the MCP transport is gone, whether or not the process
//! runs on), and which lines were not valid JSON (rmcp skips them silently,
//! so an `initialize` answered with broken JSON would look like no answer):
//! it counts them and flags the first that looks like a JSON-RPC message.
//!
//! Progress is routed from here too, in the order the server wrote it: rmcp
//! hands notifications to spawned tasks but responses straight to the
//! waiting request, so a request's last progress could otherwise reach the
//! front-end after its result. Routed here, it is in the caller's link queue
//! before the result is handed over, and the connection's writer drains that
//! queue before it writes the response.
//!
//! Invariants: memory is bounded (ids watched, answers kept, line length);
//! no line the server wrote is ever quoted in a message or a log (it may
//! hold anything).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

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
/// A line longer than this is passed on but not inspected.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// Raw answers of one server session.
#[derive(Debug)]
pub(crate) struct WireTee {
    state: Mutex<State>,
    /// The server's name, for progress routes.
    server: String,
    frontends: Arc<FrontEnds>,
    /// Cancelled when the server's stdout reaches EOF (or fails).
    stdout_closed: CancellationToken,
    /// Cancelled at the first line that looks like a JSON-RPC message (an
    /// object naming `"jsonrpc"`) but is not valid JSON.
    broken_message: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    /// Requests sent and not answered: (id as JSON text, is `tools/list`).
    watched: VecDeque<(String, bool)>,
    /// Answers (`result` members) not taken yet, by id as JSON text.
    kept: VecDeque<(String, Box<RawValue>)>,
    /// Tools of the listing being gathered (pages so far).
    gathering: Vec<Box<RawValue>>,
    /// The latest complete `tools/list` not taken yet, in the server's order.
    listing: Option<Vec<Box<RawValue>>>,
    /// Lines the server wrote so far.
    lines_received: u64,
    /// Of those, lines that are not valid JSON.
    invalid_lines: u64,
    /// Where the first invalid line broke, without its content (it may hold anything).
    first_invalid: Option<String>,
}

/// The parts of a JSON-RPC message the tee looks at.
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

impl WireTee {
    /// The raw wire of a session of `server`; progress goes through `frontends`.
    pub(crate) fn new(server: &str, frontends: Arc<FrontEnds>) -> Self {
        Self {
            state: Mutex::default(),
            server: server.to_owned(),
            frontends,
            stdout_closed: CancellationToken::new(),
            broken_message: CancellationToken::new(),
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

    /// A line that is not a JSON-RPC message: count it if it is not JSON at all.
    fn not_a_message(&self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Err(error) = serde_json::from_slice::<serde::de::IgnoredAny>(line) else {
            return; // valid JSON, just not a message: rmcp's business
        };
        let mut state = self.state();
        state.invalid_lines += 1;
        if state.first_invalid.is_none() {
            let text = error.to_string();
            let what = text.split(" at line ").next().unwrap_or(&text);
            state.first_invalid = Some(format!(
                "line {} of its stdout, column {}: {what}",
                state.lines_received,
                error.column()
            ));
        }
        drop(state);
        let trimmed = line.trim_ascii_start();
        if trimmed.starts_with(b"{") && trimmed.windows(9).any(|window| window == b"\"jsonrpc\"") {
            self.broken_message.cancel();
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Bounded queues, consistent after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wrap the server's stdout and stdin; rmcp reads and writes through these.
    pub(crate) fn tee<R, W>(self: &Arc<Self>, reader: R, writer: W) -> (TeeReader<R>, TeeWriter<W>) {
        (
            TeeReader {
                inner: reader,
                wire: self.clone(),
                line: Vec::new(),
            },
            TeeWriter {
                inner: writer,
                wire: self.clone(),
                line: Vec::new(),
            },
        )
    }

    /// The answer (`result`) to request `id` (any JSON-serializable id), if it was kept.
    pub(crate) fn take(&self, id: &impl serde::Serialize) -> Option<Box<RawValue>> {
        let key = serde_json::to_string(id).ok()?;
        let mut state = self.state();
        let index = state.kept.iter().position(|(kept, _)| *kept == key)?;
        state.kept.remove(index).map(|(_, result)| result)
    }

    /// The tools of the latest complete `tools/list`, in the server's order, as the server
    /// wrote them, unless taken already (or not seen: a page too large to inspect).
    pub(crate) fn take_listing(&self) -> Option<Vec<Box<RawValue>>> {
        self.state().listing.take()
    }

    /// A line corrald wrote to the server.
    fn sent(&self, line: &[u8]) {
        let Ok(message) = serde_json::from_slice::<Message<'_>>(line) else {
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
        if state.watched.iter().any(|(watched, _)| watched == id.get()) {
            return; // the same bytes offered again after a partial or pending write
        }
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

    /// A line the server wrote to corrald.
    fn received(&self, line: &[u8]) {
        self.state().lines_received += 1;
        let Ok(message) = serde_json::from_slice::<Message<'_>>(line) else {
            self.not_a_message(line);
            return;
        };
        if message.method == Some(PROGRESS) {
            self.progress(message.params);
            return;
        }
        let (Some(id), Some(result), None) = (message.id, message.result, message.method) else {
            return;
        };
        let mut state = self.state();
        let Some(index) = state.watched.iter().position(|(watched, _)| watched == id.get()) else {
            return;
        };
        let Some((key, is_list)) = state.watched.remove(index) else {
            return;
        };
        if !is_list {
            state.kept.push_back((key, result.to_owned()));
            if state.kept.len() > MAX_KEPT {
                state.kept.pop_front();
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
}

/// The MCP progress notification.
const PROGRESS: &str = "notifications/progress";

impl WireTee {
    /// Route progress to the front-end whose request it is about, now,
    /// before rmcp reads what the server wrote after it.
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

/// Feed complete lines of `bytes` to `inspect`, keeping a partial last line in `line`.
fn split_lines(line: &mut Vec<u8>, bytes: &[u8], inspect: impl Fn(&[u8])) {
    let mut rest = bytes;
    while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
        if line.len() <= MAX_LINE {
            line.extend_from_slice(&rest[..newline]);
            if line.len() <= MAX_LINE {
                inspect(line);
            }
        }
        line.clear();
        rest = &rest[newline + 1..];
    }
    if line.len() <= MAX_LINE {
        line.extend_from_slice(rest);
    }
}

/// The server's stdout, inspected on its way to rmcp.
#[derive(Debug)]
pub(crate) struct TeeReader<R> {
    inner: R,
    wire: Arc<WireTee>,
    line: Vec<u8>,
}

impl<R: AsyncRead + Unpin> AsyncRead for TeeReader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let room = buf.remaining();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &polled {
            // Nothing read into a buffer with room: EOF.
            Poll::Ready(Ok(())) if room > 0 && buf.filled().len() == before => self.wire.stdout_closed.cancel(),
            Poll::Ready(Ok(())) => {
                let this = &mut *self;
                split_lines(&mut this.line, &buf.filled()[before..], |line| this.wire.received(line));
            }
            Poll::Ready(Err(_)) => self.wire.stdout_closed.cancel(),
            Poll::Pending => {}
        }
        polled
    }
}

/// The server's stdin, inspected on its way from rmcp.
#[derive(Debug)]
pub(crate) struct TeeWriter<W> {
    inner: W,
    wire: Arc<WireTee>,
    line: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for TeeWriter<W> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // Watch the requests in `buf` *before* they reach the server: once written, the server
        // may answer, and the reader see the answer, before this task runs again (it did under
        // load, and the answer fell back to rmcp's typed copy). A pending or partial write offers
        // the same bytes again, so `sent` ignores an id it already watches.
        // Only bytes that end a line can carry a request, so a chunk without one (a large request
        // written in pieces) costs nothing here; the partial line is copied once, when it ends.
        if let Some(first_end) = buf.iter().position(|&b| b == b'\n') {
            let mut first = Vec::with_capacity(this.line.len() + first_end + 1);
            first.extend_from_slice(&this.line);
            first.extend_from_slice(&buf[..=first_end]);
            split_lines(&mut Vec::new(), &first, |line| this.wire.sent(line));
            split_lines(&mut Vec::new(), &buf[first_end + 1..], |line| this.wire.sent(line));
        }
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            split_lines(&mut this.line, &buf[..written], |_| {});
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> WireTee {
        WireTee::new("s", Arc::new(FrontEnds::default()))
    }

    fn feed(wire: &WireTee, sent: &str, received: &str) {
        wire.sent(sent.as_bytes());
        wire.received(received.as_bytes());
    }

    #[test]
    fn invalid_json_is_counted_and_a_broken_message_is_flagged() {
        let wire = wire();
        wire.received(b"this is not json");
        wire.received(b"{broken");
        wire.received(b"[1, 2]"); // valid JSON, not a message: rmcp's business
        wire.received(b"   ");
        assert_eq!(wire.invalid_lines(), 2);
        assert!(
            !wire.broken_message.is_cancelled(),
            "stray output is not a broken message"
        );
        let summary = wire.invalid_summary();
        assert!(summary.starts_with("line 1 of its stdout, column "), "{summary}");
        assert!(
            !summary.contains("this is not json"),
            "never quotes the line: {summary}"
        );
        wire.received(br#"{"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": "#);
        assert_eq!(wire.invalid_lines(), 3);
        assert!(wire.broken_message.is_cancelled());
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
        // The next listing's answer is not one the tee can read (rmcp decides what it is).
        feed(
            &wire,
            r#"{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":5,"result":{"tools":"not a list"}}"#,
        );
        assert_eq!(taken(&wire), None, "never an earlier listing for a later one");
    }

    #[test]
    fn lines_split_across_reads_are_joined_and_memory_is_bounded() {
        let wire = wire();
        let mut line = Vec::new();
        let sent = b"{\"jsonrpc\":\"2.0\",\"id\":\"s\",\"method\":\"prompts/get\"}\n";
        let (first, second) = sent.split_at(10);
        split_lines(&mut line, first, |l| wire.sent(l));
        split_lines(&mut line, second, |l| wire.sent(l));
        wire.received(br#"{"jsonrpc":"2.0","id":"s","result":{"messages":[]}}"#);
        assert_eq!(
            wire.take(&"s").map(|raw| raw.get().to_owned()).as_deref(),
            Some(r#"{"messages":[]}"#)
        );

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
}
