//! The endpoint's HTTP side: one handler per request ([`Service::handle`]),
//! the checks in order (Host, Origin, token, path, method), then POST, GET
//! and DELETE of MCP's streamable HTTP onto the sessions, and the bodies it
//! answers with: one JSON object, or an SSE stream ([`SseStream`]).
//!
//! Decisions:
//! - one JSON-RPC message per POST, as the transport says since 2025-06-18:
//!   a batch is refused (400), so every answer has exactly one request;
//! - a request is answered on an SSE stream whenever the client accepts one
//!   (then its progress and the daemon's requests can reach it before the
//!   response), else as one JSON object;
//! - `initialize` is answered only once the engine did, so that the
//!   `Mcp-Session-Id` header is sent with a successful answer only; a failed
//!   `initialize` ends its session at once;
//! - one GET stream per session (a second one while it is open: 409); no
//!   resumption (`Last-Event-ID` is ignored): events carry no id;
//! - a request's answer waits for the engine however long the call takes; a
//!   client that goes away does not cancel it (as the transport says: it
//!   sends `notifications/cancelled` for that, after which no answer comes,
//!   so the cancelled request's stream ends at once, and a request answered
//!   as JSON gets a `requestCancelled` error: never 404, which would tell
//!   the client its session is gone);
//! - whatever a handler registered is undone when hyper drops it (its
//!   client went away): a session whose `initialize` is under way is closed
//!   (`session::Opening`), a request not yet written to the engine is
//!   withdrawn (`session::Registration`).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use corral_protocol::ErrorCode;
use corral_protocol::jsonrpc::{EnvelopeError, Message, RequestId};
use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::checks::{self, Accepts, Allowed, SESSION_HEADER};
use super::session::{
    Inbox, REQUEST_PROGRESS_TOKEN, Refused, Session, Sessions, StreamGuard, Waiter, progress_token, request_key,
};
use super::token::Token;
use crate::api;

/// The one path the endpoint serves.
pub(super) const PATH: &str = "/mcp";
/// How long the engine may take to answer `initialize`.
const INITIALIZE_WAIT: Duration = Duration::from_secs(10);
/// How long a request's body may take to arrive once its headers did.
const BODY_WAIT: Duration = Duration::from_secs(30);
/// A comment on an idle SSE stream this often, so that a client gone away is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The headers a browser at an allowed origin may send.
const CORS_REQUEST_HEADERS: &str =
    "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID";

/// What every request's handler shares.
pub(super) struct Service {
    pub(super) engine: api::Engine,
    pub(super) token: Token,
    pub(super) allowed: Allowed,
    pub(super) sessions: Arc<Sessions>,
    /// What its sessions may do.
    pub(super) door: api::Door,
    pub(super) tracker: TaskTracker,
    pub(super) shutdown: CancellationToken,
}

/// A response of the endpoint.
type Answer = Response<Body>;

impl Service {
    /// Answer one request of a TCP connection whose `trusted` is set once
    /// one of its requests carried the token.
    pub(super) async fn handle(&self, request: Request<Incoming>, trusted: &AtomicBool) -> Answer {
        let (parts, body) = request.into_parts();
        if let Err(why) = self.allowed.check_host(&parts.headers) {
            return refusal(StatusCode::FORBIDDEN, ErrorCode::InvalidRequest, why);
        }
        let origin = match self.allowed.check_origin(&parts.headers) {
            Ok(origin) => origin,
            Err(why) => return refusal(StatusCode::FORBIDDEN, ErrorCode::InvalidRequest, why),
        };
        let mut answer = if parts.method == Method::OPTIONS && origin.is_some() {
            preflight()
        } else if !checks::authorized(&parts.headers, &self.token) {
            unauthorized(parts.headers.contains_key(header::AUTHORIZATION))
        } else {
            // This connection's client has the token: it is not closed to make room.
            trusted.store(true, Ordering::Release);
            self.authorized(&parts, body).await
        };
        if let Some(origin) = origin {
            let headers = answer.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("Mcp-Session-Id"),
            );
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        answer
    }

    /// A request that passed the checks and the token: by path and method.
    async fn authorized(&self, parts: &hyper::http::request::Parts, body: Incoming) -> Answer {
        if parts.uri.path() != PATH {
            return refusal(
                StatusCode::NOT_FOUND,
                ErrorCode::InvalidRequest,
                "no such path: the MCP endpoint is /mcp",
            );
        }
        match parts.method {
            Method::POST => self.post(&parts.headers, body).await,
            Method::GET => self.get(&parts.headers),
            Method::DELETE => self.delete(&parts.headers),
            _ => {
                let mut answer = refusal(
                    StatusCode::METHOD_NOT_ALLOWED,
                    ErrorCode::InvalidRequest,
                    "the MCP endpoint takes POST, GET and DELETE",
                );
                answer
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                answer
            }
        }
    }

    /// POST: one message of the client's.
    async fn post(&self, headers: &HeaderMap, body: Incoming) -> Answer {
        let is_json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::InvalidRequest,
                "a POST to the MCP endpoint carries one JSON-RPC message as `Content-Type: application/json`",
            );
        }
        let body = match read_body(headers, body).await {
            Ok(body) => body,
            Err(refused) => return refused.answer(),
        };
        let message = match ClientMessage::read(&body) {
            Ok(message) => message,
            Err(refused) => return refused.answer(),
        };
        let accepts = Accepts::of(headers);
        let Some(session_id) = header_text(headers, SESSION_HEADER) else {
            return match message.kind {
                Kind::Request { key, .. } if message.method.as_deref() == Some("initialize") => {
                    self.initialize(&message.line, key, accepts).await
                }
                _ => refusal(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    "no Mcp-Session-Id header: send `initialize` first, then the session id its answer \
                     carries with every request",
                ),
            };
        };
        if let Err(why) = checks::check_version(headers) {
            return refusal(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, &why);
        }
        let Some(session) = self.sessions.get(session_id) else {
            return unknown_session();
        };
        session.touch();
        let (key, progress_token) = match message.kind {
            Kind::Request { key, progress_token } => (key, progress_token),
            // A notification or a response of the client's: written, accepted.
            Kind::Cancels(_) | Kind::NoAnswer => {
                if !session.send(&message.line).await {
                    return unknown_session();
                }
                if let Kind::Cancels(key) = &message.kind {
                    // No answer comes for a cancelled request: its stream ends now.
                    session.unregister(key);
                }
                return empty(StatusCode::ACCEPTED);
            }
        };
        if !accepts.event_stream && !accepts.json {
            return refusal(
                StatusCode::NOT_ACCEPTABLE,
                ErrorCode::InvalidRequest,
                "the answer to a request is `text/event-stream` or `application/json`: accept one of them",
            );
        }
        let (waiter, mut answers) = Waiter::new(progress_token, accepts.event_stream);
        let (registration, backlog) = match session.register(key.clone(), waiter) {
            Ok(registered) => registered,
            Err(Refused::Duplicate) => {
                return json_message(&error_response(
                    Some(&key),
                    ErrorCode::InvalidRequest,
                    &format!("a request with id {key} is already in flight in this session"),
                ));
            }
            Err(_) => return unknown_session(),
        };
        // Dropped here (the session ended, or hyper dropped this handler
        // because its client went away): the request is withdrawn.
        if !session.send(&message.line).await {
            return unknown_session();
        }
        registration.sent();
        if accepts.event_stream {
            return events(SseStream::new(backlog, answers, Some(session.stream_opened())));
        }
        match answers.recv().await {
            Some(response) => json_message(&response),
            // The session is alive: the client cancelled the request. A 404
            // would tell it to start a new session.
            None if !session.is_ended() => json_message(&error_response(
                Some(&key),
                ErrorCode::RequestCancelled,
                "the request was cancelled (notifications/cancelled): it has no result",
            )),
            None => unknown_session(),
        }
    }

    /// `initialize` without a session: a new session, kept if the engine says yes.
    async fn initialize(&self, line: &str, key: String, accepts: Accepts) -> Answer {
        let Some(slot) = self.sessions.make_room() else {
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TooManyRequests,
                &format!(
                    "the MCP endpoint serves at most {} sessions and every one is busy (a request running or a \
                     stream open): end sessions you no longer use with DELETE, or try again later",
                    self.sessions.max()
                ),
            );
        };
        let opened = Session::open(
            &self.engine,
            self.door,
            &self.sessions,
            slot,
            &self.tracker,
            &self.shutdown,
        );
        let Some(opening) = opened.await else {
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::TooManyRequests,
                &format!(
                    "corrald serves {} connections and sessions already; close some (or end sessions with DELETE) \
                     and try again",
                    self.engine.max_connections()
                ),
            );
        };
        // From here on, whatever ends this handler without keeping the
        // session (a failure, or hyper dropping it because its client went
        // away) drops `opening`, which closes the session.
        let session = opening.session().clone();
        let (waiter, mut answers) = Waiter::new(None, false);
        let Ok((registration, _)) = session.register(key, waiter) else {
            return shutting_down();
        };
        if !session.send(line).await {
            return shutting_down();
        }
        registration.sent();
        let Ok(Some(answer)) = tokio::time::timeout(INITIALIZE_WAIT, answers.recv()).await else {
            return refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::InternalError,
                "corrald did not answer `initialize` in time; try again",
            );
        };
        let succeeded = serde_json::from_str::<Value>(&answer).is_ok_and(|answer| answer.get("result").is_some());
        // Nothing to keep on failure: the client gets the engine's error, no session.
        let kept = if succeeded { opening.establish() } else { None };
        let Some(session) = kept else {
            return json_message(&answer);
        };
        let mut answer = if accepts.event_stream {
            events(SseStream::new(
                VecDeque::from([answer]),
                Inbox::ended(),
                Some(session.stream_opened()),
            ))
        } else {
            json_message(&answer)
        };
        if let Ok(id) = HeaderValue::from_str(&session.id) {
            answer.headers_mut().insert(HeaderName::from_static(SESSION_HEADER), id);
        }
        answer
    }

    /// GET: the session's stream of messages that answer no request.
    fn get(&self, headers: &HeaderMap) -> Answer {
        if !Accepts::of(headers).event_stream {
            return refusal(
                StatusCode::NOT_ACCEPTABLE,
                ErrorCode::InvalidRequest,
                "a GET of the MCP endpoint opens an SSE stream: send `Accept: text/event-stream`",
            );
        }
        let session = match self.session_of(headers) {
            Ok(session) => session,
            Err(refused) => return refused.answer(),
        };
        session.touch();
        match session.open_listener() {
            Ok((inbox, backlog)) => events(SseStream::new(backlog, inbox, Some(session.stream_opened()))),
            Err(Refused::ListenerOpen) => refusal(
                StatusCode::CONFLICT,
                ErrorCode::InvalidRequest,
                "this session has a GET stream open already",
            ),
            Err(_) => unknown_session(),
        }
    }

    /// DELETE: the client ends its session.
    fn delete(&self, headers: &HeaderMap) -> Answer {
        if let Err(refused) = self.session_of(headers) {
            return refused.answer();
        }
        match header_text(headers, SESSION_HEADER).and_then(|id| self.sessions.take(id)) {
            Some(session) => {
                tracing::debug!(
                    connection = session.connection,
                    "MCP endpoint: the client ended its session"
                );
                session.close();
                empty(StatusCode::NO_CONTENT)
            }
            None => unknown_session(),
        }
    }

    /// The session a GET or DELETE names, its protocol version checked.
    fn session_of(&self, headers: &HeaderMap) -> Result<Arc<Session>, Refusal> {
        let Some(id) = header_text(headers, SESSION_HEADER) else {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "no Mcp-Session-Id header: send the session id the answer to `initialize` carried",
            ));
        };
        if let Err(why) = checks::check_version(headers) {
            return Err(Refusal::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, why));
        }
        self.sessions.get(id).ok_or_else(Refusal::unknown_session)
    }
}

/// A header's value as text, if it has one.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The request's body, at most one message's worth (`MAX_MESSAGE_BYTES`, 413 beyond).
async fn read_body(headers: &HeaderMap, body: Incoming) -> Result<Bytes, Refusal> {
    let max = corral_protocol::MAX_MESSAGE_BYTES;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::MessageTooLarge,
            format!("a message may be at most {max} bytes"),
        )
    };
    let declared = header_text(headers, header::CONTENT_LENGTH.as_str()).and_then(|length| length.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(BODY_WAIT, http_body_util::Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "the request body could not be read",
        )),
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::InvalidRequest,
            format!("the request body did not arrive within {} s", BODY_WAIT.as_secs()),
        )),
    }
}

/// One message of the client's, as the endpoint reads it before writing it to the engine.
struct ClientMessage {
    /// The message as one line (JSON whitespace line breaks made spaces).
    line: String,
    method: Option<String>,
    kind: Kind,
}

/// What a message of the client's is.
enum Kind {
    /// A request: its id (JSON text) and progress token (JSON text).
    Request {
        key: String,
        progress_token: Option<String>,
    },
    /// `notifications/cancelled`: the request it cancels (its id as JSON text).
    Cancels(String),
    /// Another notification, or a response to a request of the daemon's.
    NoAnswer,
}

impl ClientMessage {
    /// Read one POST body: a single JSON-RPC 2.0 message (the protocol
    /// crate's reading, as every other front-end's), else the 400 saying why.
    fn read(body: &[u8]) -> Result<Self, Refusal> {
        let bad = |code, message: String| Err(Refusal::new(StatusCode::BAD_REQUEST, code, message));
        let Ok(text) = std::str::from_utf8(body) else {
            return bad(ErrorCode::ParseError, "the body is not UTF-8".to_owned());
        };
        let message = match Message::parse(body) {
            Ok(message) => message,
            Err(EnvelopeError::Json(error)) => return bad(ErrorCode::ParseError, format!("not JSON: {error}")),
            Err(error) => {
                return bad(
                    ErrorCode::InvalidRequest,
                    format!("{error}: a POST carries one JSON-RPC 2.0 message (streamable HTTP since 2025-06-18)"),
                );
            }
        };
        let (method, kind) = match message {
            Message::Request(request) => {
                if matches!(request.id, RequestId::Number(number) if number < 0) {
                    // The engine answers integer ids from 0 up: another
                    // would be answered with a `null` id, to no POST.
                    return bad(
                        ErrorCode::InvalidRequest,
                        "a request's `id` must be a string or a non-negative integer".to_owned(),
                    );
                }
                let kind = Kind::Request {
                    key: request_key(&request.id),
                    progress_token: progress_token(request.params.as_ref(), REQUEST_PROGRESS_TOKEN),
                };
                (Some(request.method), kind)
            }
            Message::Notification(notification) => {
                let cancels = (notification.method == CANCELLED)
                    .then(|| notification.params.as_ref()?.get("requestId").cloned())
                    .flatten()
                    .and_then(|id| serde_json::from_value::<RequestId>(id).ok());
                let kind = cancels.map_or(Kind::NoAnswer, |id| Kind::Cancels(request_key(&id)));
                (Some(notification.method), kind)
            }
            Message::Response(_) => (None, Kind::NoAnswer),
        };
        Ok(Self {
            line: one_line(text).into_owned(),
            method,
            kind,
        })
    }
}

/// `text` on one line: line breaks in valid JSON are whitespace (inside
/// strings they are escaped), so they become spaces. The engine reads one
/// message per line; an SSE `data:` line ends at a CR or an LF.
fn one_line(text: &str) -> Cow<'_, str> {
    if text.contains(['\n', '\r']) {
        Cow::Owned(text.replace(['\n', '\r'], " "))
    } else {
        Cow::Borrowed(text)
    }
}

/// MCP's cancellation notification.
const CANCELLED: &str = "notifications/cancelled";

/// A JSON-RPC error response to the request with id `key` (JSON text).
fn error_response(key: Option<&str>, code: ErrorCode, message: &str) -> String {
    let id = key
        .and_then(|key| serde_json::from_str::<Value>(key).ok())
        .unwrap_or(Value::Null);
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code.code(), "message": message}}).to_string()
}

/// Why a request is refused: its status and the JSON-RPC error saying why.
struct Refusal {
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 404: see [`unknown_session`].
    fn unknown_session() -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::InvalidRequest, UNKNOWN_SESSION)
    }

    fn answer(self) -> Answer {
        refusal(self.status, self.code, &self.message)
    }
}

/// A refusal: `status`, and a JSON-RPC error without an id saying why
/// (logged at debug level: no message quotes a header that may be secret).
fn refusal(status: StatusCode, code: ErrorCode, message: &str) -> Answer {
    tracing::debug!(status = status.as_u16(), "MCP endpoint: refused a request: {message}");
    let body = serde_json::json!({"jsonrpc": "2.0", "error": {"code": code.code(), "message": message}});
    let mut answer = json_message(&body.to_string());
    *answer.status_mut() = status;
    answer
}

/// 401: no token (`token_sent` false) or a wrong one. The challenge names
/// no `resource_metadata`, since the token is not OAuth's, and its
/// `error_description` (like the body) says where the token is: an MCP
/// client that knows OAuth shows that rather than failing at discovery.
fn unauthorized(token_sent: bool) -> Answer {
    let mut answer = refusal(
        StatusCode::UNAUTHORIZED,
        ErrorCode::InvalidRequest,
        "missing or wrong bearer token: send `Authorization: Bearer TOKEN` with the token `corral mcp url` prints \
         (this endpoint does not use OAuth)",
    );
    // RFC 6750: `invalid_token` only when a token came.
    let challenge = if token_sent {
        concat!(
            r#"Bearer realm="corral", error="invalid_token", error_description=""#,
            "wrong token: run `corral mcp url` and send the Authorization header it prints",
            '"'
        )
    } else {
        concat!(
            r#"Bearer realm="corral", error_description=""#,
            "no token: run `corral mcp url` and send the Authorization header it prints",
            '"'
        )
    };
    answer
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    answer
}

/// 503: the session just opened ended at once.
fn shutting_down() -> Answer {
    refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ShuttingDown,
        "the new session ended at once: corrald is shutting down",
    )
}

/// 404 for a session that does not exist (any more): the client starts a new one.
fn unknown_session() -> Answer {
    Refusal::unknown_session().answer()
}

/// Why a session id is refused.
const UNKNOWN_SESSION: &str =
    "no such session (it ended, or corrald restarted): send `initialize` without a session id for a new one";

/// One JSON message, 200.
fn json_message(message: &str) -> Answer {
    let mut answer = Response::new(Body::Bytes(Some(Bytes::from(message.to_owned()))));
    answer
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

/// No body.
fn empty(status: StatusCode) -> Answer {
    let mut answer = Response::new(Body::Bytes(None));
    *answer.status_mut() = status;
    answer
}

/// An SSE stream, 200.
fn events(stream: SseStream) -> Answer {
    let mut answer = Response::new(Body::Events(stream));
    let headers = answer.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    answer
}

/// The answer to a CORS preflight from an allowed origin (it carries no token).
fn preflight() -> Answer {
    let mut answer = empty(StatusCode::NO_CONTENT);
    let headers = answer.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(CORS_REQUEST_HEADERS),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    answer
}

/// A response body: bytes at once, or an SSE stream.
pub(super) enum Body {
    /// The whole body (`None` once sent, or for none).
    Bytes(Option<Bytes>),
    /// Events as they come.
    Events(SseStream),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Bytes(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            Body::Events(stream) => stream.poll_event(context),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Bytes(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Bytes(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64)),
            Body::Events(_) => SizeHint::default(),
        }
    }
}

/// An SSE stream: the messages that waited for it, then whatever comes,
/// until its sender is gone (the response was sent, or the session ended);
/// a comment every [`KEEP_ALIVE`] meanwhile.
pub(super) struct SseStream {
    backlog: VecDeque<String>,
    messages: Inbox,
    keep_alive: tokio::time::Interval,
    /// Counts the stream open in its session until it is dropped.
    _open: Option<StreamGuard>,
}

impl SseStream {
    fn new(backlog: VecDeque<String>, messages: Inbox, open: Option<StreamGuard>) -> Self {
        let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
        keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            backlog,
            messages,
            keep_alive,
            _open: open,
        }
    }

    fn poll_event(&mut self, context: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(message) = self.backlog.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(event(&message)))));
        }
        match self.messages.poll_recv(context) {
            Poll::Ready(Some(message)) => return Poll::Ready(Some(Ok(Frame::data(event(&message))))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if self.keep_alive.poll_tick(context).is_ready() {
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n")))));
        }
        Poll::Pending
    }
}

/// One SSE event carrying `message`, whose JSON may hold a raw CR (a
/// server's answer passes through as it wrote it): made one line.
fn event(message: &str) -> Bytes {
    Bytes::from(format!("event: message\ndata: {}\n\n", one_line(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_data_line_whatever_line_breaks_the_json_holds() {
        let message = "{\"jsonrpc\":\"2.0\",\r\"id\":1,\r\n\"result\":{\"text\":\"a\\r\\nb\"}}";
        let event = event(message);
        let text = std::str::from_utf8(&event).expect("UTF-8");
        assert!(!text.contains('\r'), "{text:?}");
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!((lines[0], lines[2], lines[3]), ("event: message", "", ""));
        let data = lines[1].strip_prefix("data: ").expect("a data line");
        assert_eq!(
            serde_json::from_str::<Value>(data).expect("JSON"),
            serde_json::from_str::<Value>(message).expect("JSON"),
            "the same message"
        );
    }
}
