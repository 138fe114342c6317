//! A raw MCP client over streamable HTTP, for corrald's loopback endpoint:
//! as lean as the raw MCP client of the bridge measurement, so that the two
//! compare transports and not client libraries.
//!
//! One kept-alive HTTP/1.1 connection (hyper's client connection, no pool),
//! `TCP_NODELAY` as HTTP clients set it; one POST per message with the
//! headers the transport asks for (`Authorization: Bearer`, `Mcp-Session-Id`
//! and `MCP-Protocol-Version` after `initialize`, and `Accept:
//! application/json, text/event-stream`, as the MCP SDKs send it, so the
//! endpoint answers a request on an SSE stream, which it closes after the
//! response). The whole answer is read before the next request, as a
//! sequential client on one connection must; its JSON-RPC messages are
//! routed like the line clients' (`raw::result_of`). The URL and the token
//! are found as `corral mcp url` finds them: `daemon/status` names them, the
//! token is read from its file with the protocol crate's private-file check.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use tokio::task::JoinHandle;

use crate::bridge::{self, ECHO_PARAMS, INITIALIZED, MCP_VERSION};
use crate::raw::{RawConnection, result_of};
use crate::servers;

/// What the endpoint's answers carry as the session, and its requests send back.
const SESSION_HEADER: HeaderName = HeaderName::from_static("mcp-session-id");
/// The protocol version every request after `initialize` names.
const VERSION_HEADER: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// What an MCP client accepts as the answer to a POST.
const ACCEPT: HeaderValue = HeaderValue::from_static("application/json, text/event-stream");
/// Who answers, in error messages.
const PEER: &str = "corrald's MCP endpoint";

/// Where the endpoint serves and what its requests must carry.
pub(crate) struct Endpoint {
    /// E.g. `http://127.0.0.1:40123/mcp`.
    pub(crate) url: String,
    address: SocketAddr,
    path: String,
    /// `Bearer TOKEN`.
    authorization: HeaderValue,
}

impl std::fmt::Debug for Endpoint {
    /// Never the token.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Endpoint")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// The endpoint of the daemon on `connection`, from its `daemon/status`.
    pub(crate) async fn of(connection: &mut RawConnection) -> anyhow::Result<Self> {
        let status = servers::call(connection, "daemon/status", None).await?;
        let status: corral_protocol::DaemonStatus =
            serde_json::from_str(&status).with_context(|| format!("parsing `daemon/status`: {status}"))?;
        let Some(endpoint) = status.mcp_endpoint else {
            bail!("corrald serves no MCP endpoint although its config turns it on");
        };
        let (Some(url), Some(token_file)) = (endpoint.url, endpoint.token_file) else {
            bail!(
                "corrald's MCP endpoint is not served: {}",
                endpoint.error.as_deref().unwrap_or("it does not say why")
            );
        };
        let token = corral_protocol::paths::read_private_file(Path::new(&token_file), 1024)
            .with_context(|| format!("reading the MCP endpoint's token from {token_file}"))?
            .with_context(|| format!("the MCP endpoint's token file {token_file} does not exist"))?;
        let token = String::from_utf8(token).with_context(|| format!("the token in {token_file} is not text"))?;
        let authorization = HeaderValue::try_from(format!("Bearer {}", token.trim()))
            .with_context(|| format!("the token in {token_file} is not a header value"))?;
        let (authority, path) = url
            .strip_prefix("http://")
            .and_then(|rest| rest.split_once('/'))
            .with_context(|| format!("the MCP endpoint's URL is not http://HOST:PORT/PATH: {url}"))?;
        let address = authority
            .parse()
            .with_context(|| format!("the MCP endpoint's URL names no IP address and port: {url}"))?;
        let path = format!("/{path}");
        Ok(Self {
            url,
            address,
            path,
            authorization,
        })
    }
}

/// An initialized MCP session on one HTTP/1.1 connection.
pub(crate) struct HttpMcp {
    sender: SendRequest<Full<Bytes>>,
    /// hyper's connection task; aborted on drop.
    connection: JoinHandle<()>,
    host: HeaderValue,
    path: String,
    authorization: HeaderValue,
    session: HeaderValue,
    next_id: u64,
    request: Vec<u8>,
}

impl Drop for HttpMcp {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// One POST's answer: its status, content type, session header and whole body.
struct Answer {
    status: StatusCode,
    event_stream: bool,
    session: Option<HeaderValue>,
    body: Bytes,
}

impl HttpMcp {
    /// Connect, `initialize` as `client_name` and send `notifications/initialized`.
    /// Returns the client and the `initialize` result (JSON text).
    pub(crate) async fn connect(endpoint: &Endpoint, client_name: &str) -> anyhow::Result<(Self, String)> {
        let stream = tokio::net::TcpStream::connect(endpoint.address)
            .await
            .with_context(|| format!("connecting to the MCP endpoint at {}", endpoint.url))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .context("starting HTTP/1.1 on the MCP endpoint's connection")?;
        let connection = tokio::spawn(async move {
            // Its end (an error or the daemon closing it) shows as the next request's error.
            let _ = connection.await;
        });
        let host = HeaderValue::try_from(endpoint.address.to_string()).context("the endpoint's address as Host")?;
        let mut client = Self {
            sender,
            connection,
            host,
            path: endpoint.path.clone(),
            authorization: endpoint.authorization.clone(),
            session: HeaderValue::from_static(""),
            next_id: 1,
            request: Vec::with_capacity(256),
        };
        let id = client.write_request("initialize", Some(&bridge::initialize_params(client_name)));
        let answer = client.post(None).await.context("`initialize` on the MCP endpoint")?;
        let result = answer.result("initialize", id)?;
        client.session = answer
            .session
            .with_context(|| format!("{PEER} answered `initialize` without an Mcp-Session-Id header"))?;
        client.request.clear();
        client.request.extend_from_slice(INITIALIZED.as_bytes());
        let answer = client
            .post(Some(&client.session.clone()))
            .await
            .context("`notifications/initialized` on the MCP endpoint")?;
        if answer.status != StatusCode::ACCEPTED {
            bail!(
                "{PEER} answered `notifications/initialized` with {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            );
        }
        Ok((client, result))
    }

    /// `tools/call` of `everything__echo`; fails unless it echoed.
    pub(crate) async fn echo(&mut self) -> anyhow::Result<()> {
        let result = self.call("tools/call", Some(ECHO_PARAMS)).await?;
        bridge::check_echo(&result)
    }

    /// Call `method` in the session; its `result` as JSON text.
    pub(crate) async fn call(&mut self, method: &str, params: Option<&str>) -> anyhow::Result<String> {
        let id = self.write_request(method, params);
        let session = self.session.clone();
        let answer = self
            .post(Some(&session))
            .await
            .with_context(|| format!("`{method}` on the MCP endpoint"))?;
        answer.result(method, id)
    }

    /// End the session with DELETE; says how that went.
    pub(crate) async fn close(mut self) -> String {
        let request = Request::builder()
            .method(Method::DELETE)
            .uri(self.path.as_str())
            .header(header::HOST, self.host.clone())
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(SESSION_HEADER, self.session.clone())
            .header(VERSION_HEADER, MCP_VERSION)
            .body(Full::new(Bytes::new()));
        let deleted = async {
            self.sender.ready().await?;
            self.sender.send_request(request?).await.map_err(anyhow::Error::from)
        };
        match tokio::time::timeout(bridge::EXIT_TIMEOUT, deleted).await {
            Ok(Ok(response)) => format!("session ended with DELETE: {}", response.status()),
            Ok(Err(error)) => format!("DELETE of the session failed: {error:#}"),
            Err(_) => format!("DELETE of the session not answered within {:?}", bridge::EXIT_TIMEOUT),
        }
    }

    /// The next request (JSON-RPC text, no line break) into the buffer; its id.
    fn write_request(&mut self, method: &str, params: Option<&str>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        crate::raw::write_request(&mut self.request, id, method, params);
        // One message per body; the line break the line clients need is not part of it.
        if self.request.last() == Some(&b'\n') {
            self.request.pop();
        }
        id
    }

    /// POST the buffer (in `session`, if any); the whole answer.
    async fn post(&mut self, session: Option<&HeaderValue>) -> anyhow::Result<Answer> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.path.as_str())
            .header(header::HOST, self.host.clone())
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(header::ACCEPT, ACCEPT);
        if let Some(session) = session {
            request = request
                .header(SESSION_HEADER, session.clone())
                .header(VERSION_HEADER, HeaderValue::from_static(MCP_VERSION));
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(&self.request)))
            .context("building the request")?;
        self.sender
            .ready()
            .await
            .with_context(|| format!("{PEER}'s connection closed"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .with_context(|| format!("no answer from {PEER}"))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .with_context(|| format!("reading the answer of {PEER}"))?
            .to_bytes();
        let event_stream = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        Ok(Answer {
            status: parts.status,
            event_stream,
            session: parts.headers.get(SESSION_HEADER).cloned(),
            body,
        })
    }
}

impl Answer {
    /// The `result` of the response to request `id` in this answer (an SSE
    /// stream of messages, or one JSON object).
    fn result(&self, method: &str, id: u64) -> anyhow::Result<String> {
        let text =
            std::str::from_utf8(&self.body).with_context(|| format!("{PEER} answered `{method}` with non-UTF-8"))?;
        if self.status != StatusCode::OK {
            bail!("{PEER} answered `{method}` with {}: {text}", self.status);
        }
        if !self.event_stream {
            return match result_of(text, method, id, PEER)? {
                Some(result) => Ok(result.to_owned()),
                None => bail!("{PEER} answered `{method}` with a message that is not its response: {text}"),
            };
        }
        for data in events(text) {
            if let Some(result) = result_of(&data, method, id, PEER)? {
                return Ok(result.to_owned());
            }
        }
        bail!("{PEER}'s SSE stream for `{method}` ended without its response: {text}")
    }
}

/// The data of each event of an SSE stream (its `data:` lines joined by line breaks;
/// comments, other fields and events without data skipped).
fn events(stream: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    for line in stream.lines() {
        if line.is_empty() {
            events.extend(data.take());
        } else if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            }
        }
    }
    events.extend(data);
    events
}

#[cfg(test)]
mod tests {
    use super::events;

    #[test]
    fn events_are_split_at_blank_lines_and_comments_skipped() {
        let stream = ": keep-alive\n\nevent: message\ndata: {\"a\":1}\n\ndata: one\ndata:two\n\n";
        assert_eq!(events(stream), ["{\"a\":1}", "one\ntwo"]);
    }
}
