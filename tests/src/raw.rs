//! [`RawConnection`]: a hand-written front-end with nothing but a socket and its own framing.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::UnixStream;

use crate::wait::{WAIT, within};

/// How a [`RawConnection`] frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFraming {
    /// One JSON value per line.
    Lines,
    /// `Content-Length: N\r\n\r\n` then N bytes.
    ContentLength,
}

impl WireFraming {
    /// `message` framed for the wire.
    pub fn encode(self, message: &[u8]) -> Vec<u8> {
        match self {
            Self::Lines => {
                let mut out = message.to_vec();
                out.push(b'\n');
                out
            }
            Self::ContentLength => {
                let mut out = format!("Content-Length: {}\r\n\r\n", message.len()).into_bytes();
                out.extend_from_slice(message);
                out
            }
        }
    }
}

/// Why [`RawConnection::try_recv`] returned no message.
#[derive(Debug)]
pub enum RecvError {
    /// The daemon closed the connection (end of stream, or reset after it closed).
    Closed,
    /// Nothing arrived in time.
    Timeout,
    /// The socket failed otherwise.
    Io(io::Error),
    /// The daemon sent bytes that are not a frame of this connection's framing.
    BadFrame(String),
}

/// A byte stream a [`RawConnection`] speaks over: the daemon's socket, or one
/// half of a `tokio::io::duplex` served in-process (corrald's in-process tier).
pub trait RawStream: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug {}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug> RawStream for S {}

/// A front-end written by hand: a byte stream, a framing, and nothing else.
///
/// Received notifications that arrive while waiting for a response are kept
/// and returned first by [`RawConnection::recv`].
#[derive(Debug)]
pub struct RawConnection {
    stream: Box<dyn RawStream>,
    framing: WireFraming,
    buf: Vec<u8>,
    stashed: VecDeque<Value>,
    next_id: u64,
}

impl RawConnection {
    /// Connect to `socket` (bounded by [`WAIT`]).
    pub async fn connect(socket: &Path, framing: WireFraming) -> RawConnection {
        let stream = within("connecting to the daemon's socket", UnixStream::connect(socket))
            .await
            .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", socket.display()));
        RawConnection::from_stream(stream, framing)
    }

    /// A connection over a stream the test opened itself.
    pub fn from_stream(stream: impl RawStream + 'static, framing: WireFraming) -> RawConnection {
        RawConnection {
            stream: Box::new(stream),
            framing,
            buf: Vec::new(),
            stashed: VecDeque::new(),
            next_id: 1000,
        }
    }

    /// Frame `message` and send it.
    pub async fn send(&mut self, message: &Value) {
        let bytes = self.framing.encode(message.to_string().as_bytes());
        self.send_raw(&bytes).await;
    }

    /// Send bytes exactly as given (no framing), failing the test if the write fails.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(error) = self.try_send_raw(bytes).await {
            panic!("writing {} bytes to corrald failed: {error}", bytes.len());
        }
    }

    /// Send bytes exactly as given; the error when the write fails (e.g. the daemon closed the connection).
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        match tokio::time::timeout(WAIT, self.stream.write_all(bytes)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("writing {} bytes did not finish within {WAIT:?}", bytes.len()),
            )),
        }
    }

    /// Half-close: no more bytes from this side.
    pub async fn shutdown_write(&mut self) {
        within("shutting down the write half", self.stream.shutdown())
            .await
            .expect("shutdown(SHUT_WR)");
    }

    /// The next message (stashed notifications first), failing the test after [`WAIT`] or on close.
    pub async fn recv(&mut self) -> Value {
        match self.try_recv(WAIT).await {
            Ok(message) => message,
            Err(error) => panic!("expected a message from corrald, got {error:?}"),
        }
    }

    /// The next message, or why there is none within `limit`.
    pub async fn try_recv(&mut self, limit: Duration) -> Result<Value, RecvError> {
        if let Some(message) = self.stashed.pop_front() {
            return Ok(message);
        }
        self.read_wire(limit).await
    }

    /// Send a request with a fresh id and return its response; notifications
    /// received meanwhile are stashed for [`RawConnection::recv`].
    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        self.response_to(&json!(id)).await
    }

    /// Wait for the response with this `id`, stashing anything else.
    pub async fn response_to(&mut self, id: &Value) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_wire(remaining).await {
                Ok(message) if message.get("id") == Some(id) => return message,
                Ok(other) => self.stashed.push_back(other),
                Err(error) => panic!("expected the response to request {id}, got {error:?}"),
            }
        }
    }

    /// A request's `result`, failing the test if it is an error.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let response = self.request(method, params).await;
        match response.get("result") {
            Some(result) => result.clone(),
            None => panic!("`{method}` failed: {response}"),
        }
    }

    /// `initialize` with protocol version 1; returns the result.
    pub async fn initialize(&mut self) -> Value {
        self.call("initialize", initialize_params(1)).await
    }

    /// Wait until the daemon closes the connection; fails if a message arrives first or nothing happens.
    pub async fn expect_closed(&mut self) {
        match self.try_recv(WAIT).await {
            Err(RecvError::Closed) => {}
            other => panic!("expected corrald to close the connection, got {other:?}"),
        }
    }

    /// Read one frame from the socket.
    async fn read_wire(&mut self, limit: Duration) -> Result<Value, RecvError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) = self.take_frame()? {
                return serde_json::from_slice(&frame).map_err(|error| {
                    RecvError::BadFrame(format!("not JSON ({error}): {}", String::from_utf8_lossy(&frame)))
                });
            }
            self.buf.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_elapsed) => return Err(RecvError::Timeout),
                Ok(Ok(0)) => return Err(RecvError::Closed),
                Ok(Ok(_)) => {}
                // A Unix socket closed by a peer that left bytes unread reports
                // ECONNRESET once the bytes it did send are consumed.
                Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionReset => return Err(RecvError::Closed),
                Ok(Err(error)) => return Err(RecvError::Io(error)),
            }
        }
    }

    /// Cut one complete frame off the front of the buffer, if there is one.
    fn take_frame(&mut self) -> Result<Option<Vec<u8>>, RecvError> {
        match self.framing {
            WireFraming::Lines => loop {
                let Some(newline) = self.buf.iter().position(|&b| b == b'\n') else {
                    return Ok(None);
                };
                let line: Vec<u8> = self.buf.drain(..=newline).collect();
                let line = line.strip_suffix(b"\n").unwrap_or(&line);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    return Ok(Some(line.to_vec()));
                }
            },
            WireFraming::ContentLength => {
                let Some(header_end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    return Ok(None);
                };
                let headers = String::from_utf8_lossy(&self.buf[..header_end]).into_owned();
                let length = headers
                    .split("\r\n")
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())
                            .flatten()
                    })
                    .ok_or_else(|| RecvError::BadFrame(format!("no Content-Length in headers {headers:?}")))?;
                let body_start = header_end + 4;
                if self.buf.len() < body_start + length {
                    return Ok(None);
                }
                let body = self.buf[body_start..body_start + length].to_vec();
                self.buf.drain(..body_start + length);
                Ok(Some(body))
            }
        }
    }
}

/// `initialize` params for a raw client speaking `protocol_version`.
pub fn initialize_params(protocol_version: u32) -> Value {
    json!({
        "protocolVersion": protocol_version,
        "clientInfo": {"name": "raw-test-client", "version": "0"},
    })
}

/// The `error.code` of a response, failing the test if it is not an error.
pub fn error_code(response: &Value) -> i64 {
    response["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error response, got {response}"))
}

/// The `error.message` of a response, failing the test if it is not an error.
pub fn error_message(response: &Value) -> String {
    response["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error response with a message, got {response}"))
        .to_owned()
}
