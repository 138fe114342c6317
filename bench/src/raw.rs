//! A minimal front-end: newline-framed JSON-RPC over a tokio `UnixStream`,
//! parsed with `serde_json` and nothing else, so that round-trip numbers are
//! the daemon's and not a client library's.

use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// One message from the daemon, parsed just enough to route it.
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming<'a> {
    /// Present on responses.
    #[serde(default)]
    pub(crate) id: Option<u64>,
    /// Present on notifications.
    #[serde(default, borrow)]
    pub(crate) method: Option<&'a str>,
    #[serde(default, borrow)]
    pub(crate) params: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub(crate) error: Option<&'a RawValue>,
}

/// The reading half: one line per message.
#[derive(Debug)]
pub(crate) struct LineReader {
    reader: BufReader<OwnedReadHalf>,
    line: String,
}

impl LineReader {
    /// The next message as text (without the newline); an error when the daemon closes the connection.
    pub(crate) async fn next_line(&mut self) -> anyhow::Result<&str> {
        self.line.clear();
        let read = self
            .reader
            .read_line(&mut self.line)
            .await
            .context("reading from corrald")?;
        if read == 0 {
            bail!("corrald closed the connection");
        }
        Ok(self.line.trim_end())
    }
}

/// An initialized raw connection.
#[derive(Debug)]
pub(crate) struct RawConnection {
    reader: LineReader,
    writer: OwnedWriteHalf,
    next_id: u64,
    request: Vec<u8>,
}

impl RawConnection {
    /// Connect and `initialize` as `client_name`.
    pub(crate) async fn connect(socket: &Path, client_name: &str) -> anyhow::Result<Self> {
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        Self::initialize(stream, client_name).await
    }

    /// `initialize` as `client_name` on a connected stream.
    pub(crate) async fn initialize(stream: UnixStream, client_name: &str) -> anyhow::Result<Self> {
        let (reader, writer) = stream.into_split();
        let mut connection = Self {
            reader: LineReader {
                reader: BufReader::with_capacity(64 * 1024, reader),
                line: String::with_capacity(1024),
            },
            writer,
            next_id: 1,
            request: Vec::with_capacity(256),
        };
        let params = serde_json::json!({
            "protocolVersion": corral_protocol::PROTOCOL_VERSION,
            "clientInfo": { "name": client_name, "version": env!("CARGO_PKG_VERSION") },
        })
        .to_string();
        connection.call("initialize", Some(&params)).await?;
        Ok(connection)
    }

    /// The next message from the daemon as text, whatever it is (for callers that route notifications themselves).
    pub(crate) async fn next_line(&mut self) -> anyhow::Result<&str> {
        self.reader.next_line().await
    }

    /// The two halves, for a reader task and a writer kept by its owner.
    pub(crate) fn into_split(self) -> (LineReader, OwnedWriteHalf) {
        (self.reader, self.writer)
    }

    /// Send a request; returns its id. `params` is JSON text.
    pub(crate) async fn send(&mut self, method: &str, params: Option<&str>) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        write_request(&mut self.request, id, method, params);
        self.writer
            .write_all(&self.request)
            .await
            .with_context(|| format!("sending `{method}` to corrald"))?;
        Ok(id)
    }

    /// Call `method` and return its `result` as JSON text. Notifications
    /// arriving meanwhile are skipped; an error response is an error.
    pub(crate) async fn call(&mut self, method: &str, params: Option<&str>) -> anyhow::Result<String> {
        let id = self.send(method, params).await?;
        self.wait_for_result(method, id).await
    }

    /// Read until the response to request `id`.
    pub(crate) async fn wait_for_result(&mut self, method: &str, id: u64) -> anyhow::Result<String> {
        loop {
            let line = self.reader.next_line().await?;
            if let Some(result) = result_of(line, method, id, "corrald")? {
                return Ok(result.to_owned());
            }
        }
    }
}

/// What one message (`line`) from `peer` means to a caller waiting for the
/// answer to its request `id` of `method`: `Ok(None)`, a notification or a
/// request of the peer's, to be skipped; `Ok(Some(result))`, the answer's
/// `result` as JSON text; an error for invalid JSON, an error response, or
/// a response to another request.
pub(crate) fn result_of<'l>(line: &'l str, method: &str, id: u64, peer: &str) -> anyhow::Result<Option<&'l str>> {
    let message: Incoming<'l> =
        serde_json::from_str(line).with_context(|| format!("{peer} sent invalid JSON: {line}"))?;
    if message.method.is_some() {
        return Ok(None);
    }
    if message.id != Some(id) {
        bail!("`{method}` (id {id}): unexpected message from {peer}: {line}");
    }
    if let Some(error) = message.error {
        bail!("`{method}` failed: {}", error.get());
    }
    match message.result {
        Some(result) => Ok(Some(result.get())),
        None => bail!("`{method}`: response without result from {peer}: {line}"),
    }
}

/// One JSON-RPC request line into `buffer` (cleared first). Written by hand:
/// the method names and params the benchmark sends never need escaping, and
/// no serializer runs inside a timed loop.
pub(crate) fn write_request(buffer: &mut Vec<u8>, id: u64, method: &str, params: Option<&str>) {
    buffer.clear();
    buffer.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    buffer.extend_from_slice(id.to_string().as_bytes());
    buffer.extend_from_slice(b",\"method\":\"");
    buffer.extend_from_slice(method.as_bytes());
    buffer.push(b'"');
    if let Some(params) = params {
        buffer.extend_from_slice(b",\"params\":");
        buffer.extend_from_slice(params.as_bytes());
    }
    buffer.extend_from_slice(b"}\n");
}
