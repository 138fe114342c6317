//! Streamable-HTTP server peers (`tests/peers/`), on loopback only.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::peers::{fixture_python, npm_peer, peers_dir};
use crate::wait::{POLL_INTERVAL, SERVER_WAIT};

/// A loopback port nothing listens on right now (bound, then released).
///
/// Taken below the kernel's ephemeral range (32768–60999 by default), so that
/// no outgoing connection of any process gets the port between this check and
/// the peer binding it, from a block of 100 per test process, so that test
/// binaries running side by side do not hand out the same ones.
pub fn free_loopback_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let block = u16::try_from(std::process::id() % 120).unwrap_or(0);
    let base = 20_000 + block * 100;
    for _ in 0..100 {
        let port = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// The MCP endpoint URL of an HTTP peer on `port`.
pub fn loopback_mcp_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/mcp")
}

/// One HTTP MCP server process listening on 127.0.0.1; SIGKILLed on drop.
#[derive(Debug)]
pub struct HttpPeer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    stderr_path: PathBuf,
}

impl HttpPeer {
    /// Start `command` (which must listen on 127.0.0.1:`port`) and wait until it accepts connections.
    pub(crate) fn spawn(mut command: Command, port: u16, stderr_path: PathBuf) -> HttpPeer {
        let stderr = File::create(&stderr_path).expect("create the peer's stderr file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("start {command:?}: {error}"));
        let mut peer = HttpPeer {
            child,
            port,
            stderr_path,
        };
        peer.wait_listening();
        peer
    }

    /// Poll (bounded by [`SERVER_WAIT`]) until the port accepts a TCP connection.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + SERVER_WAIT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "HTTP peer on port {} exited ({status}) before listening: {}",
                    self.port,
                    std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "HTTP peer did not listen on 127.0.0.1:{} within {SERVER_WAIT:?}",
                self.port
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL it and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `@modelcontextprotocol/server-everything` in `streamableHttp` mode on
/// 127.0.0.1:`port` (forced onto loopback by `tests/peers/loopback.cjs`).
pub fn everything_http(port: u16, scratch: &Path) -> HttpPeer {
    let entry = npm_peer("@modelcontextprotocol/server-everything/dist/index.js");
    let mut command = Command::new("node");
    command
        .arg("--require")
        .arg(peers_dir().join("loopback.cjs"))
        .arg(entry)
        .arg("streamableHttp")
        .env("PORT", port.to_string());
    HttpPeer::spawn(command, port, scratch.join(format!("everything-{port}.stderr")))
}

/// `tests/peers/http_fixture_server.py` on 127.0.0.1:`port`, recording requests in `record`.
pub fn http_fixture(port: u16, record: &Path, flags: &[&str]) -> HttpPeer {
    let mut command = Command::new(fixture_python());
    command
        .arg(peers_dir().join("http_fixture_server.py"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--record")
        .arg(record)
        .args(flags);
    let stderr = record.with_extension("stderr");
    HttpPeer::spawn(command, port, stderr)
}

/// One request the HTTP fixture received (a line of its `--record` file).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// JSON-RPC method of a POST, if any.
    pub rpc: Option<String>,
    /// Whether an `mcp-session-id` came with it.
    pub session: bool,
    /// The status the fixture answered.
    pub status: u16,
    /// The request headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The keys of the JSON-RPC `params._meta` of a POST, sorted (`None`: no `_meta`).
    pub meta: Option<Vec<String>>,
}

/// Every request in an HTTP fixture's `--record` file so far.
pub fn recorded_requests(record: &Path) -> Vec<RecordedRequest> {
    let text = std::fs::read_to_string(record).unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("bad record line {line:?}: {error}")))
        .collect()
}

/// `(rpc, status)` of the POSTs in `requests` with JSON-RPC method `rpc`.
pub fn statuses_of(requests: &[RecordedRequest], rpc: &str) -> Vec<u16> {
    requests
        .iter()
        .filter(|request| request.rpc.as_deref() == Some(rpc))
        .map(|request| request.status)
        .collect()
}
