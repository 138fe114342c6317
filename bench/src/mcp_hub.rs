//! Corral beside the alternative a user would pick instead: mcp-hub (npm `mcp-hub`, pinned in
//! `bench/peers/package-lock.json`, installed with `npm ci --prefix bench/peers`), in one run,
//! on the same `tools/call` of server-everything's `echo`, round by round:
//!
//! - direct: a raw MCP client (one JSON line per message, [`McpLines`]) on the pipes of a
//!   server-everything of its own: the floor;
//! - Corral, Corral's `tools/call {server, name, arguments}` on the socket (the raw client of
//!   measurement 1);
//! - Corral, MCP on the socket (the bridge's aggregated view, `everything__echo`);
//! - Corral, its loopback streamable-HTTP endpoint (aggregated, [`HttpMcp`]);
//! - mcp-hub's REST API, `POST /api/servers/tools` on one kept-alive HTTP/1.1 connection;
//! - mcp-hub's aggregated MCP endpoint, `/mcp`: MCP's HTTP+SSE transport (a GET stream that
//!   names a `/messages?sessionId=…` URL, POSTs there, answers on the stream), `everything__echo`.
//!
//! mcp-hub runs under Node with `tests/peers/loopback.cjs` preloaded (it would listen on every
//! interface), its state and logs in a temporary directory. Each round runs every setup once,
//! `warmup` unmeasured then `requests` measured sequential calls, in an order rotated each round;
//! its p50 and p99 per setup are kept, with `/proc/loadavg` and the CPU the machine spent outside
//! this benchmark's process tree during the round, and the time the hypervisor stole. A round
//! that [`cpu::Disturbance::disturbed`] calls disturbed is run again (at most as many extra rounds
//! as asked for); the table gives the median over the undisturbed rounds and every round's values.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use tokio::net::UnixStream;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bridge::{self, ECHO_PARAMS, EXIT_TIMEOUT, McpLines, bounded_answer};
use crate::cpu;
use crate::daemon::Memory;
use crate::http_mcp::{Endpoint, HttpMcp};
use crate::peers::{Peer, Peers};
use crate::raw::{RawConnection, result_of};
use crate::servers::{self, ServedDaemon};
use crate::stats::Summary;
use crate::survivors::{self, Survivor};
use crate::tool_call::{self, DirectRaw, SERVER};

/// How long mcp-hub may take to have server-everything connected.
const HUB_READY: Duration = Duration::from_secs(60);
/// The body of mcp-hub's REST call.
const REST_ECHO: &str = r#"{"server_name":"everything","tool":"echo","arguments":{"message":"x"}}"#;

/// What the phase can be asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) rounds: usize,
    pub(crate) warmup: usize,
    pub(crate) requests: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setup {
    Direct,
    CorralSocket,
    CorralMcpSocket,
    CorralHttp,
    HubRest,
    HubMcp,
}

const SETUPS: [Setup; 6] = [
    Setup::Direct,
    Setup::CorralSocket,
    Setup::CorralMcpSocket,
    Setup::CorralHttp,
    Setup::HubRest,
    Setup::HubMcp,
];

impl Setup {
    fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct: raw MCP client on the server's pipes",
            Self::CorralSocket => "Corral: tools/call on the socket (raw client)",
            Self::CorralMcpSocket => "Corral: MCP on the socket (aggregated)",
            Self::CorralHttp => "Corral: loopback HTTP endpoint (aggregated)",
            Self::HubRest => "mcp-hub: REST POST /api/servers/tools",
            Self::HubMcp => "mcp-hub: /mcp, HTTP+SSE (aggregated)",
        }
    }
}

/// One round.
#[derive(Debug)]
pub(crate) struct Round {
    /// `/proc/loadavg` when it began.
    pub(crate) load: String,
    /// What else ran while it did.
    pub(crate) disturbance: cpu::Disturbance,
    /// p50 and p99 per setup, in [`SETUPS`] order.
    pub(crate) setups: Vec<(Duration, Duration)>,
}

/// What the phase measured.
#[derive(Debug)]
pub(crate) struct HubComparison {
    pub(crate) options: Options,
    pub(crate) hub_version: String,
    pub(crate) node_version: String,
    pub(crate) server_info: Option<String>,
    pub(crate) rounds: Vec<Round>,
    /// After the rounds: corrald's and mcp-hub's memory (the servers not counted).
    pub(crate) corrald_memory: Memory,
    pub(crate) hub_memory: Memory,
    pub(crate) survivors: Vec<Survivor>,
}

/// Where mcp-hub is installed.
fn hub_cli() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    let cli = dir.join("node_modules").join("mcp-hub").join("dist").join("cli.js");
    if !cli.is_file() {
        bail!(
            "{} does not exist: install the benchmark's peers with `npm ci --prefix bench/peers`",
            cli.display()
        );
    }
    Ok(cli)
}

fn hub_version(cli: &Path) -> String {
    let manifest = cli.parent().and_then(Path::parent).map(|dir| dir.join("package.json"));
    manifest
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|value| value["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// The whole phase.
pub(crate) async fn measure(corrald: &Path, peers: &Peers, options: Options) -> anyhow::Result<HubComparison> {
    let cli = hub_cli()?;
    let node_version = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|_| "?".to_owned());

    let config = format!(
        "[mcp_endpoint]\nenabled = true\nlisten = \"127.0.0.1:0\"\n{}",
        peers.config([(SERVER, Peer::Everything)])
    );
    let mut served = ServedDaemon::start(corrald, &config, 1).await?;
    let names = [SERVER.to_owned()].into_iter().collect();
    let ready = servers::poll_until_ready(&mut served.connection, &names).await?;
    let server_info = ready[SERVER]
        .server_info
        .as_ref()
        .map(|info| format!("{} {}", info.name, info.version));
    let socket = served.daemon.socket_path().to_path_buf();
    let endpoint = Endpoint::of(&mut served.connection).await?;

    let hub = Hub::start(&cli, peers).await?;
    let measured = async {
        let mut clients = Clients::connect(&socket, &endpoint, peers, &hub).await?;
        let rounds = rounds(&mut clients, options).await;
        let _ = clients.direct.close().await;
        rounds
    }
    .await;
    let corrald_memory = served.daemon.memory()?;
    let hub_memory = Memory::of(hub.pid);
    hub.stop().await;
    let (_, survivors) = served.stop().await?;
    Ok(HubComparison {
        options,
        hub_version: hub_version(&cli),
        node_version,
        server_info,
        rounds: measured?,
        corrald_memory,
        hub_memory: hub_memory?,
        survivors,
    })
}

/// Run rounds until `options.rounds` undisturbed ones (or as many extra as asked for are spent).
async fn rounds(clients: &mut Clients, options: Options) -> anyhow::Result<Vec<Round>> {
    let mut rounds = Vec::new();
    let mut wanted = cpu::RoundsWanted::new(options.rounds);
    while let Some(attempt) = wanted.next() {
        let load = crate::load_average();
        let watch = cpu::DisturbanceWatch::start()?;
        let mut setups = vec![(Duration::ZERO, Duration::ZERO); SETUPS.len()];
        for step in 0..SETUPS.len() {
            let index = (attempt + step) % SETUPS.len();
            let setup = SETUPS[index];
            for _ in 0..options.warmup {
                clients.echo(setup).await.with_context(|| setup.label())?;
            }
            let mut samples = Vec::with_capacity(options.requests);
            for _ in 0..options.requests {
                let sent = Instant::now();
                clients.echo(setup).await.with_context(|| setup.label())?;
                samples.push(sent.elapsed());
            }
            let summary = Summary::of(&mut samples).context("no samples")?;
            setups[index] = (summary.p50, summary.p99);
        }
        let disturbance = watch.stop()?;
        wanted.ran("mcp-hub", &disturbance);
        rounds.push(Round {
            load,
            disturbance,
            setups,
        });
    }
    Ok(rounds)
}

/// mcp-hub with one server-everything, on a loopback port.
struct Hub {
    child: Child,
    pid: u32,
    address: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Hub {
    async fn start(cli: &Path, peers: &Peers) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("corral-bench-hub-")
            .tempdir()
            .context("creating mcp-hub's directory")?;
        let config = serde_json::json!({
            "mcpServers": {
                SERVER: {
                    "command": "node",
                    "args": [peers.everything(), "stdio"],
                    "env": { survivors::RUN_TAG_VAR: survivors::run_tag() },
                }
            }
        });
        let config_path = dir.path().join("mcp-hub.json");
        std::fs::write(&config_path, config.to_string()).context("writing mcp-hub's config")?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .context("finding a free loopback port")?
            .port();
        let mut child = tokio::process::Command::new("node")
            .arg("--require")
            .arg(peers.loopback_preload())
            .arg(cli)
            .arg("--port")
            .arg(port.to_string())
            .arg("--config")
            .arg(&config_path)
            .env("HOME", dir.path())
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env(survivors::RUN_TAG_VAR, survivors::run_tag())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting mcp-hub")?;
        let pid = child.id().context("mcp-hub has no pid")?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + HUB_READY;
        // Ready when its REST API runs the tool.
        loop {
            if let Ok(mut rest) = Rest::connect(address).await
                && rest.echo().await.is_ok()
            {
                break;
            }
            if let Some(status) = child.try_wait().context("polling mcp-hub")? {
                bail!("mcp-hub exited with {status} before it could call `echo`");
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                bail!("mcp-hub could not call server-everything's `echo` within {HUB_READY:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            child,
            pid,
            address,
            _dir: dir,
        })
    }

    /// SIGTERM, then SIGKILL after [`EXIT_TIMEOUT`]; the processes it started are killed by pid if
    /// they outlive it.
    async fn stop(mut self) {
        let below = descendants(self.pid);
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(EXIT_TIMEOUT, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
        for pid in below {
            if survivors::process_state(pid).is_some()
                && let Ok(pid) = libc::pid_t::try_from(pid)
            {
                // SAFETY: kill(2); the pid was a descendant of mcp-hub a moment ago and carries
                // this run's tag, which the final survivor check also looks for.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// The pids below `root` now.
fn descendants(root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children
                .split_whitespace()
                .filter_map(|child| child.parse::<u32>().ok())
            {
                if found.len() < 1024 && !found.contains(&child) {
                    found.push(child);
                    queue.push(child);
                }
            }
        }
    }
    found
}

/// One kept-alive HTTP/1.1 connection to `address`.
async fn http_connection(address: SocketAddr) -> anyhow::Result<(SendRequest<Full<Bytes>>, JoinHandle<()>)> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .context("starting HTTP/1.1")?;
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((sender, connection))
}

/// mcp-hub (Express) closes a kept-alive connection idle for 5 s, which a setup's connection is
/// while the other setups of a round run: open a new one then (in the warm-up, not timed).
async fn reopen_if_closed(
    sender: &mut SendRequest<Full<Bytes>>,
    connection: &mut JoinHandle<()>,
    address: SocketAddr,
) -> anyhow::Result<()> {
    if sender.is_closed() || connection.is_finished() {
        connection.abort();
        (*sender, *connection) = http_connection(address).await?;
    }
    Ok(())
}

/// POST `body` to `path` on the kept connection (opened again if mcp-hub closed it): the
/// answer's status and whole body.
async fn post_and_read(
    sender: &mut SendRequest<Full<Bytes>>,
    connection: &mut JoinHandle<()>,
    address: SocketAddr,
    path: &str,
    body: &[u8],
) -> anyhow::Result<(StatusCode, Bytes)> {
    let request = post(address, path, body)?;
    reopen_if_closed(sender, connection, address).await?;
    sender.ready().await.context("mcp-hub closed the connection")?;
    let response = sender
        .send_request(request)
        .await
        .with_context(|| format!("no answer from mcp-hub to a POST to {path}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .with_context(|| format!("reading mcp-hub's answer to a POST to {path}"))?
        .to_bytes();
    Ok((status, body))
}

fn post(address: SocketAddr, path: &str, body: &[u8]) -> anyhow::Result<Request<Full<Bytes>>> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, address.to_string())
        .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Full::new(Bytes::copy_from_slice(body)))
        .context("building the request")
}

/// mcp-hub's REST API on one connection.
struct Rest {
    sender: SendRequest<Full<Bytes>>,
    connection: JoinHandle<()>,
    address: SocketAddr,
}

impl Drop for Rest {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Rest {
    async fn connect(address: SocketAddr) -> anyhow::Result<Self> {
        let (sender, connection) = http_connection(address).await?;
        Ok(Self {
            sender,
            connection,
            address,
        })
    }

    async fn echo(&mut self) -> anyhow::Result<()> {
        let (status, body) = post_and_read(
            &mut self.sender,
            &mut self.connection,
            self.address,
            "/api/servers/tools",
            REST_ECHO.as_bytes(),
        )
        .await?;
        let text = String::from_utf8_lossy(&body);
        if status != StatusCode::OK || !text.contains(tool_call::ECHO_TEXT) {
            bail!("mcp-hub's REST `echo` answered {status}: {text}");
        }
        Ok(())
    }
}

/// An MCP session over the HTTP+SSE transport (protocol 2024-11-05): the GET stream's events
/// come through `messages`, requests are POSTed on a connection of their own.
struct SseMcp {
    sender: SendRequest<Full<Bytes>>,
    connection: JoinHandle<()>,
    stream: JoinHandle<()>,
    messages: mpsc::Receiver<String>,
    address: SocketAddr,
    post_path: String,
    next_id: u64,
    request: Vec<u8>,
}

impl Drop for SseMcp {
    fn drop(&mut self) {
        self.connection.abort();
        self.stream.abort();
    }
}

impl SseMcp {
    async fn connect(address: SocketAddr, path: &str) -> anyhow::Result<Self> {
        let (mut get_sender, get_connection) = http_connection(address).await?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::HOST, address.to_string())
            .header(header::ACCEPT, HeaderValue::from_static("text/event-stream"))
            .body(Full::new(Bytes::new()))
            .context("building the GET")?;
        get_sender.ready().await.context("mcp-hub closed the connection")?;
        let response = get_sender.send_request(request).await.context("no answer to the GET")?;
        if response.status() != StatusCode::OK {
            bail!("mcp-hub answered the GET of {path} with {}", response.status());
        }
        let (events, mut messages) = mpsc::channel(64);
        let stream = tokio::spawn(async move {
            let _keep = (get_sender, get_connection);
            read_events(response.into_body(), events).await;
        });
        let endpoint = tokio::time::timeout(EXIT_TIMEOUT, messages.recv())
            .await
            .context("no `endpoint` event on mcp-hub's stream")?
            .context("mcp-hub's stream ended before its `endpoint` event")?;
        let post_path = endpoint
            .strip_prefix("endpoint\n")
            .context("the stream's first event is not `endpoint`")?
            .to_owned();
        let (sender, connection) = http_connection(address).await?;
        let mut client = Self {
            sender,
            connection,
            stream,
            messages,
            address,
            post_path,
            next_id: 1,
            request: Vec::with_capacity(256),
        };
        bounded_answer(client.call("initialize", Some(&bridge::initialize_params("corral-bench-hub")))).await?;
        client.request.clear();
        client.request.extend_from_slice(bridge::INITIALIZED.as_bytes());
        client.send().await?;
        let tools = bounded_answer(client.call("tools/list", None)).await?;
        if !tools.contains(r#""name":"everything__echo""#) {
            bail!("mcp-hub's /mcp lists no `everything__echo`: {tools}");
        }
        Ok(client)
    }

    async fn send(&mut self) -> anyhow::Result<()> {
        let (status, body) = post_and_read(
            &mut self.sender,
            &mut self.connection,
            self.address,
            &self.post_path,
            &self.request,
        )
        .await?;
        if !status.is_success() {
            bail!(
                "mcp-hub answered a POST with {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    async fn call(&mut self, method: &str, params: Option<&str>) -> anyhow::Result<String> {
        let id = self.next_id;
        self.next_id += 1;
        crate::raw::write_request(&mut self.request, id, method, params);
        self.send().await?;
        loop {
            let event = self.messages.recv().await.context("mcp-hub's stream ended")?;
            let Some(data) = event.strip_prefix("message\n") else {
                continue;
            };
            if let Some(result) = result_of(data, method, id, "mcp-hub")? {
                return Ok(result.to_owned());
            }
        }
    }

    async fn echo(&mut self) -> anyhow::Result<()> {
        let result = self.call("tools/call", Some(ECHO_PARAMS)).await?;
        bridge::check_echo(&result)
    }
}

/// Read an SSE body, sending each event as `TYPE\nDATA` (type `message` when it has none).
async fn read_events(mut body: Incoming, events: mpsc::Sender<String>) {
    let mut buffer = String::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else { continue };
        buffer.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut kind = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    kind = if value.trim() == "endpoint" {
                        "endpoint"
                    } else {
                        "message"
                    };
                } else if let Some(value) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if !data.is_empty() && events.send(format!("{kind}\n{data}")).await.is_err() {
                return;
            }
        }
    }
}

struct Clients {
    direct: DirectRaw,
    corral_socket: RawConnection,
    corral_mcp: McpLines<tokio::net::unix::OwnedReadHalf, tokio::net::unix::OwnedWriteHalf>,
    corral_http: HttpMcp,
    hub_rest: Rest,
    hub_mcp: SseMcp,
}

impl Clients {
    async fn connect(socket: &Path, endpoint: &Endpoint, peers: &Peers, hub: &Hub) -> anyhow::Result<Self> {
        let corral_socket = RawConnection::connect(socket, "corral-bench-hub-corral").await?;
        let stream = UnixStream::connect(socket)
            .await
            .with_context(|| format!("connecting to {}", socket.display()))?;
        let (read, write) = stream.into_split();
        let mut corral_mcp = McpLines::new(read, write);
        bounded_answer(corral_mcp.initialize("corral-bench-hub-mcp")).await?;
        let (corral_http, _) = tokio::time::timeout(EXIT_TIMEOUT, HttpMcp::connect(endpoint, "corral-bench-hub-http"))
            .await
            .context("no session on corrald's MCP endpoint in time")??;
        Ok(Self {
            direct: DirectRaw::start(peers.everything()).await?,
            corral_socket,
            corral_mcp,
            corral_http,
            hub_rest: Rest::connect(hub.address).await?,
            hub_mcp: SseMcp::connect(hub.address, "/mcp").await?,
        })
    }

    async fn echo(&mut self, setup: Setup) -> anyhow::Result<()> {
        match setup {
            Setup::Direct => self.direct.echo().await,
            Setup::CorralSocket => tool_call::echo(&mut self.corral_socket).await,
            Setup::CorralMcpSocket => self.corral_mcp.echo().await,
            Setup::CorralHttp => self.corral_http.echo().await,
            Setup::HubRest => self.hub_rest.echo().await,
            Setup::HubMcp => self.hub_mcp.echo().await,
        }
    }
}

fn micros(duration: Duration) -> String {
    format!("{:.0}", duration.as_secs_f64() * 1e6)
}

/// The median of some durations.
fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

pub(crate) fn print(out: &mut impl Write, comparison: &HubComparison) -> std::io::Result<()> {
    let options = comparison.options;
    writeln!(out)?;
    writeln!(
        out,
        "tools/call of {} `echo`, Corral beside mcp-hub {} (Node {}): {} rounds, each {} warm-up + {} measured per setup, order rotated (µs)",
        comparison.server_info.as_deref().unwrap_or("server-everything"),
        comparison.hub_version,
        comparison.node_version,
        options.rounds,
        options.warmup,
        options.requests
    )?;
    let disturbances: Vec<cpu::Disturbance> = comparison.rounds.iter().map(|round| round.disturbance).collect();
    if disturbances.iter().all(cpu::Disturbance::disturbed) {
        writeln!(out, "  EVERY ROUND WAS DISTURBED: the medians below are of all rounds")?;
    }
    let good: Vec<&Round> = cpu::kept_rounds(&comparison.rounds, &disturbances).collect();
    let direct_p50 = median(good.iter().map(|round| round.setups[0].0).collect());
    writeln!(
        out,
        "  {:<48} {:>8} {:>8} {:>10}  p50 of each round (disturbed ones in parentheses)",
        "setup (median of undisturbed rounds)", "p50", "p99", "+p50"
    )?;
    for (index, setup) in SETUPS.iter().enumerate() {
        let p50 = median(good.iter().map(|round| round.setups[index].0).collect());
        let p99 = median(good.iter().map(|round| round.setups[index].1).collect());
        let added = if *setup == Setup::Direct {
            "-".to_owned()
        } else {
            format!("+{}", micros(p50.saturating_sub(direct_p50)))
        };
        let each: Vec<String> = comparison
            .rounds
            .iter()
            .map(|round| {
                let value = micros(round.setups[index].0);
                if round.disturbance.disturbed() {
                    format!("({value})")
                } else {
                    value
                }
            })
            .collect();
        writeln!(
            out,
            "  {:<48} {:>8} {:>8} {:>10}  {}",
            setup.label(),
            micros(p50),
            micros(p99),
            added,
            each.join(" ")
        )?;
    }
    let loads: Vec<String> = comparison
        .rounds
        .iter()
        .map(|round| {
            format!(
                "{}{} ({})",
                round.load.split_whitespace().next().unwrap_or("?"),
                if round.disturbance.disturbed() {
                    ", disturbed"
                } else {
                    ""
                },
                round.disturbance
            )
        })
        .collect();
    writeln!(out, "  load per round: {}", loads.join("; "))?;
    writeln!(
        out,
        "  memory after the rounds (MiB): corrald VmRSS {} (with its HTTP endpoint), mcp-hub VmRSS {} (servers not counted)",
        crate::mebibytes(comparison.corrald_memory.rss),
        crate::mebibytes(comparison.hub_memory.rss)
    )?;
    Ok(())
}
