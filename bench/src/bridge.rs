//! `tools/call` of server-everything's `echo` through `corral mcp` (the
//! bridge: a pipe of lines from an MCP client's stdio to corrald's socket), next
//! to the same call on corrald's socket and from a direct `rmcp` client to
//! a server-everything of its own; and the memory of the `corral mcp`
//! process.
//!
//! Five paths, measured in the same run on one daemon, round by round in
//! blocks of [`BLOCK`] calls, the order of the paths rotated each round:
//! - direct: `rmcp` client → its own server-everything (the baseline);
//! - Corral on the socket: the raw client of measurement 1, Corral's
//!   `tools/call {server, name, arguments}` (what measurement 9 times);
//! - MCP on the socket: a raw MCP client (one JSON line per message) on the
//!   socket itself, `tools/call` of `everything__echo`: the bridge's own
//!   cost without the pipe process;
//! - `corral mcp`: the same raw MCP client over the stdin/stdout of
//!   `corral --socket <the daemon's> mcp --no-start`;
//! - the HTTP endpoint: a raw MCP client over streamable HTTP
//!   ([`HttpMcp`]: one kept-alive HTTP/1.1 connection, answers on SSE) to
//!   the daemon's loopback endpoint, which this phase's daemon serves on a
//!   free port (`[mcp_endpoint]` with `listen = "127.0.0.1:0"`).
//!
//! Every answer is checked. The `corral mcp` process carries this run's tag
//! (so the survivor check finds it); it is closed by closing its stdin,
//! waited for, and SIGKILLed after [`EXIT_TIMEOUT`] if still there; the
//! HTTP session is ended with DELETE.

use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::cpu;
use crate::daemon::Memory;
use crate::http_mcp::{Endpoint, HttpMcp};
use crate::peers::{Peer, Peers};
use crate::raw::{RawConnection, result_of};
use crate::servers::{self, ServedDaemon};
use crate::stats::Summary;
use crate::survivors::{self, Survivor};
use crate::tool_call::{self, DirectClient, ECHO_TEXT, SERVER};

/// The MCP protocol version the raw MCP client asks for at `initialize`.
pub(crate) const MCP_VERSION: &str = "2025-06-18";
/// `tools/call` params of every measured MCP call (the bridge's name for server-everything's `echo`).
pub(crate) const ECHO_PARAMS: &str = r#"{"name":"everything__echo","arguments":{"message":"x"}}"#;
/// Longest wait for an answer outside the timed loops (`initialize`, `tools/list`, the HTTP
/// session's DELETE), or for the `corral mcp` process to exit.
pub(crate) const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls per block of the rotation.
const BLOCK: usize = 250;
/// RSS of one idle `corral mcp` process that issue #11 aims for.
const TARGET_BRIDGE_RSS_BYTES: u64 = 5 * 1024 * 1024;

/// What the phase can be asked for: as for measurement 10, unmeasured then
/// measured sequential calls per path.
pub(crate) use crate::http_call::Options;

/// The samples of one path and the CPU time spent in its blocks.
#[derive(Debug, Default)]
pub(crate) struct Series {
    pub(crate) samples: Vec<Duration>,
    pub(crate) daemon_cpu: Duration,
    pub(crate) server_cpu: Duration,
    pub(crate) bridge_cpu: Duration,
    pub(crate) bench_cpu: Duration,
}

/// Everything the phase measured.
#[derive(Debug)]
pub(crate) struct BridgeCalls {
    pub(crate) options: Options,
    /// `name version` the server gave at `initialize`, as corrald reports it.
    pub(crate) server_info: Option<String>,
    /// What the bridge answered to `initialize`: `serverInfo` name and version, protocol version.
    pub(crate) bridge_info: String,
    pub(crate) direct: Series,
    pub(crate) corral_socket: Series,
    pub(crate) mcp_socket: Series,
    pub(crate) corral_mcp: Series,
    pub(crate) http_endpoint: Series,
    /// The endpoint's URL.
    pub(crate) endpoint_url: String,
    /// How the HTTP client's session ended.
    pub(crate) http_exit: String,
    /// The `corral mcp` process right after `initialize` and `notifications/initialized`.
    pub(crate) bridge_memory_initialized: BridgeMemory,
    /// The same process, idle again after all calls.
    pub(crate) bridge_memory_after: BridgeMemory,
    /// The `corral mcp` binary that was run.
    pub(crate) corral: String,
    /// How the `corral mcp` process ended after its stdin was closed.
    pub(crate) bridge_exit: String,
    /// How the direct server ended.
    pub(crate) direct_exit: String,
    pub(crate) survivors: Vec<Survivor>,
}

/// The `corral mcp` process's memory: `VmRSS` and `VmHWM`, and how much of
/// the RSS is its own (`RssAnon`: heap, stacks) rather than mapped files
/// (`RssFile`: its binary and shared libraries, shared with other processes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BridgeMemory {
    pub(crate) memory: Memory,
    pub(crate) anon: u64,
    pub(crate) file: u64,
}

impl BridgeMemory {
    fn of(pid: u32) -> anyhow::Result<Self> {
        let memory = Memory::of(pid)?;
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let kib: u64 = status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no number of kB for {name} in {path}"))?;
            Ok(kib * 1024)
        };
        Ok(Self {
            memory,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
        })
    }
}

/// The params of the raw MCP clients' `initialize` (JSON text): no capabilities.
pub(crate) fn initialize_params(client_name: &str) -> String {
    serde_json::json!({
        "protocolVersion": MCP_VERSION,
        "capabilities": {},
        "clientInfo": { "name": client_name, "version": env!("CARGO_PKG_VERSION") },
    })
    .to_string()
}

/// The notification after `initialize`.
pub(crate) const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// A raw MCP client: one JSON-RPC message per line, `serde_json` only, over any byte stream.
pub(crate) struct McpLines<R, W> {
    reader: BufReader<R>,
    writer: W,
    line: String,
    next_id: u64,
    request: Vec<u8>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> McpLines<R, W> {
    pub(crate) fn new(reader: R, writer: W) -> Self {
        Self {
            reader: BufReader::with_capacity(64 * 1024, reader),
            writer,
            line: String::with_capacity(1024),
            next_id: 1,
            request: Vec::with_capacity(256),
        }
    }

    /// `initialize` with a string `protocolVersion` (which makes corrald speak MCP), then
    /// `notifications/initialized`. Returns the `initialize` result.
    pub(crate) async fn initialize(&mut self, client_name: &str) -> anyhow::Result<String> {
        let result = self.call("initialize", Some(&initialize_params(client_name))).await?;
        self.write_line(INITIALIZED.as_bytes()).await?;
        Ok(result)
    }

    async fn write_line(&mut self, message: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(message).await?;
        self.writer.write_all(b"\n").await?;
        self.writer.flush().await.context("sending to the MCP server")
    }

    /// Call `method` and return its `result` as JSON text; notifications and requests from the
    /// server meanwhile are skipped, an error response is an error.
    async fn call(&mut self, method: &str, params: Option<&str>) -> anyhow::Result<String> {
        let id = self.send(method, params).await?;
        loop {
            self.line.clear();
            let read = self
                .reader
                .read_line(&mut self.line)
                .await
                .with_context(|| format!("reading the answer to `{method}`"))?;
            if read == 0 {
                bail!("`{method}` (id {id}): the MCP server closed its output");
            }
            if let Some(result) = result_of(self.line.trim_end(), method, id, "the MCP server")? {
                return Ok(result.to_owned());
            }
        }
    }

    /// `tools/call` of `everything__echo`; fails unless it echoed.
    pub(crate) async fn echo(&mut self) -> anyhow::Result<()> {
        self.echo_with(ECHO_PARAMS).await
    }

    /// `tools/call` with `params` (an echo of `x` under some name); fails unless it echoed.
    pub(crate) async fn echo_with(&mut self, params: &str) -> anyhow::Result<()> {
        let result = self.call("tools/call", Some(params)).await?;
        check_echo(&result)
    }

    /// The id the next request gets.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Send a request without waiting for its answer; returns its id.
    pub(crate) async fn send(&mut self, method: &str, params: Option<&str>) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        crate::raw::write_request(&mut self.request, id, method, params);
        self.writer
            .write_all(&self.request)
            .await
            .with_context(|| format!("sending `{method}`"))?;
        self.writer
            .flush()
            .await
            .with_context(|| format!("sending `{method}`"))?;
        Ok(id)
    }

    /// The next message from the server, as text without its newline.
    pub(crate) async fn next_line(&mut self) -> anyhow::Result<&str> {
        self.line.clear();
        let read = self
            .reader
            .read_line(&mut self.line)
            .await
            .context("reading from the MCP server")?;
        if read == 0 {
            bail!("the MCP server closed its output");
        }
        Ok(self.line.trim_end())
    }
}

/// The result of an MCP `tools/call` of `everything__echo`: an error unless it echoed.
pub(crate) fn check_echo(result: &str) -> anyhow::Result<()> {
    if !result.contains(ECHO_TEXT) || result.contains(r#""isError":true"#) {
        bail!("MCP `tools/call` of `everything__echo` answered {result}");
    }
    Ok(())
}

/// `corral --socket <socket> mcp --no-start`, with a raw MCP client on its stdio.
pub(crate) struct Bridge {
    child: Child,
    pub(crate) client: McpLines<ChildStdout, ChildStdin>,
    pub(crate) pid: u32,
}

impl Bridge {
    pub(crate) fn spawn(corral: &Path, socket: &Path) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new(corral)
            .arg("--socket")
            .arg(socket)
            .arg("mcp")
            .arg("--no-start")
            .env(survivors::RUN_TAG_VAR, survivors::run_tag())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Its diagnostics, if any, go to the benchmark's stderr.
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} mcp", corral.display()))?;
        let pid = child.id().context("`corral mcp` has no pid")?;
        let stdin = child.stdin.take().context("`corral mcp` has no stdin pipe")?;
        let stdout = child.stdout.take().context("`corral mcp` has no stdout pipe")?;
        Ok(Self {
            child,
            client: McpLines::new(stdout, stdin),
            pid,
        })
    }

    /// Close its stdin (the client went away); wait for it to exit, SIGKILL it after [`EXIT_TIMEOUT`].
    pub(crate) async fn close(self) -> String {
        let Self { mut child, client, .. } = self;
        drop(client);
        let started = Instant::now();
        match tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) => exited(status, started.elapsed()),
            Ok(Err(error)) => format!("could not be waited for: {error}"),
            Err(_) => {
                let killed = child.kill().await;
                format!(
                    "still running {EXIT_TIMEOUT:?} after its stdin closed: {}",
                    if killed.is_ok() {
                        "sent SIGKILL"
                    } else {
                        "could not signal it"
                    }
                )
            }
        }
    }
}

fn exited(status: ExitStatus, took: Duration) -> String {
    format!(
        "exited ({status}) {:.1} ms after its stdin closed",
        took.as_secs_f64() * 1e3
    )
}

/// CPU time of every process a block may touch.
#[derive(Clone, Copy)]
struct Cpu {
    daemon: Duration,
    server: Duration,
    bridge: Duration,
    bench: Duration,
}

impl Cpu {
    fn take(daemon: u32, server: u32, bridge: u32) -> anyhow::Result<Self> {
        Ok(Self {
            daemon: cpu::process_cpu(&daemon.to_string())?,
            server: cpu::process_cpu(&server.to_string())?,
            bridge: cpu::process_cpu(&bridge.to_string())?,
            bench: cpu::process_cpu("self")?,
        })
    }
}

/// The five paths' clients.
struct Clients {
    direct: DirectClient,
    corral_socket: RawConnection,
    mcp_socket: McpLines<tokio::net::unix::OwnedReadHalf, tokio::net::unix::OwnedWriteHalf>,
    bridge: Bridge,
    http: HttpMcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Direct,
    CorralSocket,
    McpSocket,
    CorralMcp,
    HttpEndpoint,
}

const ORDER: [Which; 5] = [
    Which::Direct,
    Which::CorralSocket,
    Which::McpSocket,
    Which::CorralMcp,
    Which::HttpEndpoint,
];

impl Clients {
    async fn echo(&mut self, which: Which) -> anyhow::Result<()> {
        match which {
            Which::Direct => self.direct.echo().await,
            Which::CorralSocket => tool_call::echo(&mut self.corral_socket).await,
            Which::McpSocket => self.mcp_socket.echo().await,
            Which::CorralMcp => self.bridge.client.echo().await,
            Which::HttpEndpoint => self.http.echo().await,
        }
    }
}

/// The whole phase: a daemon with one server-everything and its HTTP endpoint; a direct
/// server-everything beside it; a `corral mcp`.
pub(crate) async fn measure(
    corrald: &Path,
    corral: &Path,
    peers: &Peers,
    options: Options,
) -> anyhow::Result<BridgeCalls> {
    // The endpoint on a port the system picks: `daemon/status` says which.
    let config = format!(
        "[mcp_endpoint]\nenabled = true\nlisten = \"127.0.0.1:0\"\n{}",
        peers.config([(SERVER, Peer::Everything)])
    );
    let mut served = ServedDaemon::start(corrald, &config, 1).await?;
    let names = [SERVER.to_owned()].into_iter().collect();
    let ready = servers::poll_until_ready(&mut served.connection, &names).await?;
    let status = &ready[SERVER];
    let server_pid = status.pid.context("the ready server has no pid")?;
    let server_info = status
        .server_info
        .as_ref()
        .map(|info| format!("{} {}", info.name, info.version));
    let daemon_pid = served.daemon.pid();
    let socket = served.daemon.socket_path().to_path_buf();
    let endpoint = Endpoint::of(&mut served.connection).await?;

    let corral_socket = RawConnection::connect(&socket, "corral-bench-bridge-corral").await?;
    let stream = UnixStream::connect(&socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))?;
    let (read, write) = stream.into_split();
    let mut mcp_socket = McpLines::new(read, write);
    bounded_answer(mcp_socket.initialize("corral-bench-bridge-socket")).await?;
    let tools = bounded_answer(mcp_socket.call("tools/list", None)).await?;
    if !tools.contains(r#""name":"everything__echo""#) {
        bail!("the bridge lists no `everything__echo`: {tools}");
    }

    let mut bridge = Bridge::spawn(corral, &socket)?;
    let initialized = bounded_answer(bridge.client.initialize("corral-bench-bridge-pipe")).await;
    let bridge_info = match initialized {
        Ok(result) => describe_initialize(&result),
        Err(error) => {
            let exit = bridge.close().await;
            return Err(error).context(format!("`corral mcp` did not initialize; it {exit}"));
        }
    };
    let bridge_pid = bridge.pid;
    let bridge_memory_initialized = BridgeMemory::of(bridge_pid)?;

    let connected = tokio::time::timeout(EXIT_TIMEOUT, HttpMcp::connect(&endpoint, "corral-bench-bridge-http")).await;
    let http = match connected {
        Ok(Ok((http, _))) => http,
        Ok(Err(error)) => {
            bridge.close().await;
            return Err(error);
        }
        Err(_) => {
            bridge.close().await;
            bail!("no MCP session on {} within {EXIT_TIMEOUT:?}", endpoint.url);
        }
    };
    let direct = match DirectClient::start(peers.everything()).await {
        Ok(direct) => direct,
        Err(error) => {
            bridge.close().await;
            return Err(error);
        }
    };
    let mut clients = Clients {
        direct,
        corral_socket,
        mcp_socket,
        bridge,
        http,
    };
    let compared = rotate(&mut clients, [daemon_pid, server_pid, bridge_pid], options).await;
    let bridge_memory_after = BridgeMemory::of(bridge_pid);
    let Clients {
        direct,
        corral_socket,
        mcp_socket,
        bridge,
        http,
    } = clients;
    let direct_exit = direct.close().await;
    let bridge_exit = bridge.close().await;
    let http_exit = http.close().await;
    drop((corral_socket, mcp_socket));
    let [direct, corral_socket, mcp_socket, corral_mcp, http_endpoint] = compared?;
    let bridge_memory_after = bridge_memory_after?;

    let (_, survivors) = served.stop().await?;
    Ok(BridgeCalls {
        options,
        server_info,
        bridge_info,
        direct,
        corral_socket,
        mcp_socket,
        corral_mcp,
        http_endpoint,
        endpoint_url: endpoint.url,
        http_exit,
        bridge_memory_initialized,
        bridge_memory_after,
        corral: corral.display().to_string(),
        bridge_exit,
        direct_exit,
        survivors,
    })
}

/// `serverInfo` and `protocolVersion` of an `initialize` result, for the report.
fn describe_initialize(result: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(result).unwrap_or_default();
    format!(
        "{} {}, protocol {}",
        value["serverInfo"]["name"].as_str().unwrap_or("?"),
        value["serverInfo"]["version"].as_str().unwrap_or("?"),
        value["protocolVersion"].as_str().unwrap_or("?")
    )
}

/// `answer` within [`EXIT_TIMEOUT`].
pub(crate) async fn bounded_answer(answer: impl Future<Output = anyhow::Result<String>>) -> anyhow::Result<String> {
    tokio::time::timeout(EXIT_TIMEOUT, answer)
        .await
        .with_context(|| format!("no answer within {EXIT_TIMEOUT:?}"))?
}

/// Warm-up on every path, then rounds of one block per path, the order rotated by one each round.
/// CPU time is read around each block (every process of every path), so each path gets the
/// CPU of its own blocks only.
async fn rotate(
    clients: &mut Clients,
    [daemon, server, bridge]: [u32; 3],
    options: Options,
) -> anyhow::Result<[Series; 5]> {
    for _ in 0..options.warmup {
        for which in ORDER {
            clients.echo(which).await?;
        }
    }
    let mut paths: [Series; 5] = Default::default();
    let mut round = 0;
    let mut done = 0;
    while done < options.requests {
        let count = BLOCK.min(options.requests - done);
        for step in 0..ORDER.len() {
            let index = (round + step) % ORDER.len();
            let which = ORDER[index];
            // The direct server is not corrald's: its CPU is read in place of the server's.
            let server_pid = if which == Which::Direct {
                clients.direct.pid
            } else {
                server
            };
            let before = Cpu::take(daemon, server_pid, bridge)?;
            let path = &mut paths[index];
            for _ in 0..count {
                let sent = Instant::now();
                clients.echo(which).await?;
                path.samples.push(sent.elapsed());
            }
            let after = Cpu::take(daemon, server_pid, bridge)?;
            path.daemon_cpu += after.daemon.saturating_sub(before.daemon);
            path.server_cpu += after.server.saturating_sub(before.server);
            path.bridge_cpu += after.bridge.saturating_sub(before.bridge);
            path.bench_cpu += after.bench.saturating_sub(before.bench);
        }
        done += count;
        round += 1;
    }
    Ok(paths)
}

fn micros(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1e6)
}

fn per_call(total: Duration, calls: usize) -> String {
    micros(total / u32::try_from(calls.max(1)).unwrap_or(u32::MAX))
}

#[allow(clippy::cast_precision_loss, reason = "memory sizes are far below 2^52 bytes")]
fn mebibytes(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1024.0 * 1024.0))
}

fn row(out: &mut impl Write, label: &str, summary: &Summary, note: &str) -> std::io::Result<()> {
    let line = format!(
        "  {:<50} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  {note}",
        label,
        summary.count,
        micros(summary.p50),
        micros(summary.p90),
        micros(summary.p99),
        micros(summary.max),
        micros(summary.mean),
    );
    writeln!(out, "{}", line.trim_end())
}

fn difference(label: &str, out: &mut impl Write, above: &Summary, below: &Summary) -> std::io::Result<()> {
    let micros = |a: Duration, b: Duration| format!("{:+.1}", (a.as_secs_f64() - b.as_secs_f64()) * 1e6);
    writeln!(
        out,
        "  {:<50} {:>7} {:>9} {:>9} {:>9}",
        label,
        "",
        micros(above.p50, below.p50),
        "",
        micros(above.p99, below.p99),
    )
}

/// The report of the phase.
pub(crate) fn print(out: &mut impl Write, calls: &BridgeCalls) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "{:<52} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        format!(
            "tools/call echo through `corral mcp`, {} (µs)",
            calls.server_info.as_deref().unwrap_or("server-everything")
        ),
        "n",
        "p50",
        "p90",
        "p99",
        "max",
        "mean"
    )?;
    let summary = |path: &Series| Summary::of(&mut path.samples.clone());
    let (Some(direct), Some(corral_socket), Some(mcp_socket), Some(corral_mcp), Some(http_endpoint)) = (
        summary(&calls.direct),
        summary(&calls.corral_socket),
        summary(&calls.mcp_socket),
        summary(&calls.corral_mcp),
        summary(&calls.http_endpoint),
    ) else {
        return Ok(());
    };
    row(out, "rmcp client → its own server (direct)", &direct, "(baseline)")?;
    row(out, "raw client → socket, Corral's tools/call", &corral_socket, "")?;
    row(out, "raw MCP client → socket (bridge, no pipe)", &mcp_socket, "")?;
    row(out, "raw MCP client → `corral mcp` → socket", &corral_mcp, "")?;
    row(out, "raw MCP client → HTTP endpoint (SSE answers)", &http_endpoint, "")?;
    difference("`corral mcp` − direct, p50 and p99", out, &corral_mcp, &direct)?;
    difference(
        "`corral mcp` − MCP on the socket (the pipe)",
        out,
        &corral_mcp,
        &mcp_socket,
    )?;
    difference(
        "MCP on the socket − Corral's tools/call",
        out,
        &mcp_socket,
        &corral_socket,
    )?;
    difference("HTTP endpoint − direct", out, &http_endpoint, &direct)?;
    difference("HTTP endpoint − MCP on the socket", out, &http_endpoint, &mcp_socket)?;
    writeln!(
        out,
        "  {} warm-up calls per path, then blocks of {BLOCK} per path in rotating order",
        calls.options.warmup
    )?;

    writeln!(out)?;
    writeln!(
        out,
        "{:<52} {:>10} {:>10} {:>10} {:>10}",
        "tools/call CPU time per call, user + system (µs)", "corrald", "server", "corral mcp", "benchmark"
    )?;
    for (label, path) in [
        ("direct rmcp client (benchmark = rmcp client)", &calls.direct),
        ("raw client, Corral's tools/call on the socket", &calls.corral_socket),
        ("raw MCP client on the socket", &calls.mcp_socket),
        ("raw MCP client through `corral mcp`", &calls.corral_mcp),
        ("raw MCP client on the HTTP endpoint", &calls.http_endpoint),
    ] {
        let count = path.samples.len();
        writeln!(
            out,
            "  {:<50} {:>10} {:>10} {:>10} {:>10}",
            label,
            per_call(path.daemon_cpu, count),
            per_call(path.server_cpu, count),
            per_call(path.bridge_cpu, count),
            per_call(path.bench_cpu, count),
        )?;
    }

    writeln!(out)?;
    writeln!(
        out,
        "{:<52} {:>9} {:>9} {:>9} {:>9}  target",
        "`corral mcp` process memory (MiB)", "VmRSS", "VmHWM", "RssAnon", "RssFile"
    )?;
    for (label, memory) in [
        ("idle, after initialize", &calls.bridge_memory_initialized),
        ("idle, after all the calls", &calls.bridge_memory_after),
    ] {
        writeln!(
            out,
            "  {:<50} {:>9} {:>9} {:>9} {:>9}  VmRSS < 5 MiB: {}",
            label,
            mebibytes(memory.memory.rss),
            mebibytes(memory.memory.hwm),
            mebibytes(memory.anon),
            mebibytes(memory.file),
            if memory.memory.rss < TARGET_BRIDGE_RSS_BYTES {
                "met"
            } else {
                "MISSED"
            }
        )?;
    }
    writeln!(out, "  {}: initialize answered {}", calls.corral, calls.bridge_info)?;
    writeln!(out, "  `corral mcp`: {}", calls.bridge_exit)?;
    writeln!(out, "  direct server: {}", calls.direct_exit)?;
    writeln!(out, "  HTTP endpoint {}: {}", calls.endpoint_url, calls.http_exit)?;
    Ok(())
}
