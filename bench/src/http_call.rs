//! `tools/call` round trips to server-everything over streamable HTTP:
//! through corrald (raw client → corrald → HTTP → server) next to a direct
//! `rmcp` streamable-HTTP client of the same server process, in the same run
//! and in alternating blocks, so both see the same machine and server.
//!
//! The server runs `streamableHttp` on a free loopback port, pinned to
//! 127.0.0.1 by `tests/peers/loopback.cjs`, and carries this run's tag. It
//! is killed (and reaped) before the daemon is stopped, so the survivor
//! check after the daemon does not count it.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rmcp::ServiceExt as _;
use rmcp::transport::StreamableHttpClientTransport;

use crate::peers::Peers;
use crate::raw::RawConnection;
use crate::servers::{self, ServedDaemon};
use crate::stats::Summary;
use crate::survivors::{self, Survivor};
use crate::tool_call::{DirectEcho, SERVER, echo};

/// Calls per block of the alternation.
const BLOCK: usize = 250;
/// Longest wait for the server to listen, and for the direct client's `initialize`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the phase can be asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) warmup: usize,
    pub(crate) requests: usize,
}

/// Everything the phase measured.
#[derive(Debug)]
pub(crate) struct HttpCalls {
    pub(crate) options: Options,
    pub(crate) server_info: Option<String>,
    pub(crate) through_corral: Vec<Duration>,
    pub(crate) direct: Vec<Duration>,
    pub(crate) survivors: Vec<Survivor>,
}

/// server-everything in `streamableHttp` mode on 127.0.0.1; killed on drop.
struct HttpServer {
    child: tokio::process::Child,
    port: u16,
}

impl HttpServer {
    async fn start(peers: &Peers) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|listener| listener.local_addr())
            .context("finding a free loopback port")?
            .port();
        let child = tokio::process::Command::new("node")
            .arg("--require")
            .arg(peers.loopback_preload())
            .arg(peers.everything())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .env(survivors::RUN_TAG_VAR, survivors::run_tag())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting server-everything in streamableHttp mode")?;
        let mut server = Self { child, port };
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!("server-everything (HTTP) exited with {status} before listening");
            }
            if Instant::now() > deadline {
                bail!("server-everything (HTTP) did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(server)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

struct DirectClient {
    client: rmcp::service::RunningService<rmcp::RoleClient, ()>,
    echo: DirectEcho,
}

impl DirectClient {
    async fn start(url: &str) -> anyhow::Result<Self> {
        let transport = StreamableHttpClientTransport::from_uri(url.to_owned());
        let client = tokio::time::timeout(START_TIMEOUT, ().serve(transport))
            .await
            .context("the direct client's initialize timed out")?
            .context("initializing the direct HTTP client")?;
        Ok(Self {
            client,
            echo: DirectEcho::new()?,
        })
    }

    async fn echo(&self) -> anyhow::Result<()> {
        self.echo
            .call(&self.client, "direct `call_tool` of `echo` over HTTP")
            .await
    }
}

/// The whole phase.
pub(crate) async fn measure(corrald: &Path, peers: &Peers, options: Options) -> anyhow::Result<HttpCalls> {
    let server = HttpServer::start(peers).await?;
    let url = server.url();
    let config = format!("[servers.{SERVER}]\nurl = {}\n", serde_json::to_string(&url)?);
    let mut served = ServedDaemon::start(corrald, &config, 1).await?;
    let names = [SERVER.to_owned()].into_iter().collect();
    let ready = servers::poll_until_ready(&mut served.connection, &names).await?;
    let server_info = ready[SERVER]
        .server_info
        .as_ref()
        .map(|info| format!("{} {}", info.name, info.version));
    let mut connection = RawConnection::connect(served.daemon.socket_path(), "corral-bench-http-call").await?;
    let direct = DirectClient::start(&url).await?;
    let measured = alternate(&mut connection, &direct, options).await;
    let _ = tokio::time::timeout(START_TIMEOUT, direct.client.cancel()).await;
    drop(connection);
    server.stop().await;
    let (_, survivors) = served.stop().await?;
    let (through_corral, direct) = measured?;
    Ok(HttpCalls {
        options,
        server_info,
        through_corral,
        direct,
        survivors,
    })
}

/// Warm-up of both, then blocks of [`BLOCK`] calls through corrald and direct, in turn.
async fn alternate(
    connection: &mut RawConnection,
    direct: &DirectClient,
    options: Options,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    for _ in 0..options.warmup {
        echo(connection).await?;
        direct.echo().await?;
    }
    let mut through = Vec::with_capacity(options.requests);
    let mut straight = Vec::with_capacity(options.requests);
    while through.len() < options.requests {
        let count = BLOCK.min(options.requests - through.len());
        for _ in 0..count {
            let started = Instant::now();
            echo(connection).await?;
            through.push(started.elapsed());
        }
        for _ in 0..count {
            let started = Instant::now();
            direct.echo().await?;
            straight.push(started.elapsed());
        }
    }
    Ok((through, straight))
}

pub(crate) fn print(out: &mut impl Write, calls: &HttpCalls) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "{:<52} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        format!(
            "tools/call echo over streamable HTTP, {} (µs)",
            calls.server_info.as_deref().unwrap_or("server-everything")
        ),
        "n",
        "p50",
        "p90",
        "p99",
        "max",
        "mean"
    )?;
    let (mut through, mut direct) = (calls.through_corral.clone(), calls.direct.clone());
    let (Some(through), Some(direct)) = (Summary::of(&mut through), Summary::of(&mut direct)) else {
        return Ok(());
    };
    row(out, "raw client → corrald → HTTP server, 1 connection", &through)?;
    row(out, "rmcp HTTP client → the same server (direct)", &direct)?;
    writeln!(
        out,
        "  {:<50} {:>7} {:>9} {:>9} {:>9}",
        "corrald adds: p50 difference, p99 difference",
        "",
        format!("{:.1}", (through.p50.as_secs_f64() - direct.p50.as_secs_f64()) * 1e6),
        "",
        format!("{:.1}", (through.p99.as_secs_f64() - direct.p99.as_secs_f64()) * 1e6),
    )?;
    writeln!(
        out,
        "  ({} warm-up calls each, then {} measured each in alternating blocks of {BLOCK})",
        calls.options.warmup, calls.options.requests
    )
}

fn row(out: &mut impl Write, label: &str, summary: &Summary) -> std::io::Result<()> {
    writeln!(
        out,
        "  {:<50} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        label,
        summary.count,
        micros(summary.p50),
        micros(summary.p90),
        micros(summary.p99),
        micros(summary.max),
        micros(summary.mean),
    )
}

fn micros(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1e6)
}
