//! `tools/call` round trips to a real MCP server (server-everything's `echo`)
//! through corrald, next to the same calls from a direct `rmcp` client to a
//! server-everything of its own: what the daemon adds to a tool call. Then
//! many front-ends calling at once, and whether a long call on one
//! connection delays short calls on another.
//!
//! The daemon is stopped with SIGTERM and looked after as in [`crate::servers`];
//! the direct server is closed (rmcp kills its child when the transport is
//! dropped), waited for, and SIGKILLed here if it is still there after
//! [`EXIT_TIMEOUT`]. Both carry this run's tag, so the final
//! survivor check finds them either way.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::cpu;
use crate::peers::{Peer, Peers};
use crate::raw::RawConnection;
use crate::servers::{self, ServedDaemon};
use crate::stats::Summary;
use crate::survivors::{self, Survivor};

/// The server's name in the generated config.
pub(crate) const SERVER: &str = "everything";
/// `tools/call` params of every measured call.
const ECHO_PARAMS: &str = r#"{"server":"everything","name":"echo","arguments":{"message":"x"}}"#;
/// What a successful echo of `x` contains.
pub(crate) const ECHO_TEXT: &str = "Echo: x";
/// The tool of the long call (it sleeps `duration` seconds in `steps` timers).
const LONG_TOOL: &str = "trigger-long-running-operation";
/// Steps of the long call (one timer each; no progress token, so no notifications).
const LONG_STEPS: u32 = 4;
/// Longest wait for a direct server's `initialize`, or for it to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most echo calls timed in one window of the long-call comparison.
const WINDOW_CALL_LIMIT: usize = 200_000;

/// What the phase can be asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) warmup: usize,
    pub(crate) requests: usize,
    pub(crate) clients: usize,
    pub(crate) client_warmup: usize,
    pub(crate) client_requests: usize,
    pub(crate) long_call: Duration,
}

/// Latencies of one loop and the CPU time spent during it.
#[derive(Debug)]
pub(crate) struct Timed {
    pub(crate) samples: Vec<Duration>,
    pub(crate) wall: Duration,
    /// corrald's CPU time (`None` for the direct client).
    pub(crate) daemon_cpu: Option<Duration>,
    /// The server process's CPU time (server-everything on Node).
    pub(crate) server_cpu: Duration,
    /// This process's CPU time.
    pub(crate) bench_cpu: Duration,
}

/// Everything the phase measured.
#[derive(Debug)]
pub(crate) struct ToolCalls {
    pub(crate) options: Options,
    /// `name version` the server gave at `initialize`, as corrald reports it.
    pub(crate) server_info: Option<String>,
    /// Raw client → corrald → server-everything, one connection, sequential.
    pub(crate) through_corral: Timed,
    /// `rmcp` client → its own server-everything, sequential.
    pub(crate) direct: Timed,
    /// `options.clients` raw connections at once, all samples.
    pub(crate) concurrent: Timed,
    /// Echo calls on one connection with nothing else going on, for `options.long_call`.
    pub(crate) echo_alone: Vec<Duration>,
    /// Echo calls on one connection while a long call runs on another.
    pub(crate) echo_beside_long: Vec<Duration>,
    /// Sent → answered, of the long call.
    pub(crate) long_call_took: Duration,
    /// How the direct server ended: e.g. "gone 3 ms after the client closed".
    pub(crate) direct_exit: String,
    pub(crate) survivors: Vec<Survivor>,
}

/// `tools/call` of `echo` on `connection`; fails unless it echoed.
pub(crate) async fn echo(connection: &mut RawConnection) -> anyhow::Result<()> {
    let result = connection.call("tools/call", Some(ECHO_PARAMS)).await?;
    if !result.contains(ECHO_TEXT) || result.contains(r#""isError":true"#) {
        bail!("`tools/call` of `echo` answered {result}");
    }
    Ok(())
}

/// `count` timed echo calls; the samples.
async fn timed_echoes(connection: &mut RawConnection, count: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        echo(connection).await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// Echo calls for `window`, or until `stop` is set, whichever is first (at most [`WINDOW_CALL_LIMIT`]).
async fn echoes_for(
    connection: &mut RawConnection,
    window: Duration,
    stop: Option<&AtomicBool>,
) -> anyhow::Result<Vec<Duration>> {
    let until = Instant::now() + window;
    let mut samples = Vec::new();
    while Instant::now() < until
        && samples.len() < WINDOW_CALL_LIMIT
        && !stop.is_some_and(|stop| stop.load(Ordering::Acquire))
    {
        let started = Instant::now();
        echo(connection).await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// CPU time of corrald, the server and this process, together.
struct CpuReading {
    daemon: Option<Duration>,
    server: Duration,
    bench: Duration,
}

impl CpuReading {
    fn take(daemon_pid: Option<u32>, server_pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            daemon: daemon_pid.map(|pid| cpu::process_cpu(&pid.to_string())).transpose()?,
            server: cpu::process_cpu(&server_pid.to_string())?,
            bench: cpu::process_cpu("self")?,
        })
    }

    fn timed(
        self,
        samples: Vec<Duration>,
        wall: Duration,
        daemon_pid: Option<u32>,
        server_pid: u32,
    ) -> anyhow::Result<Timed> {
        let now = Self::take(daemon_pid, server_pid)?;
        Ok(Timed {
            samples,
            wall,
            daemon_cpu: now.daemon.zip(self.daemon).map(|(now, then)| now.saturating_sub(then)),
            server_cpu: now.server.saturating_sub(self.server),
            bench_cpu: now.bench.saturating_sub(self.bench),
        })
    }
}

/// The whole phase: a daemon with one server-everything, a direct one beside it.
pub(crate) async fn measure(corrald: &Path, peers: &Peers, options: Options) -> anyhow::Result<ToolCalls> {
    let config = peers.config([(SERVER, Peer::Everything)]);
    let mut served = ServedDaemon::start(corrald, &config, 1).await?;
    let names = [SERVER.to_owned()].into_iter().collect();
    let ready = servers::poll_until_ready(&mut served.connection, &names).await?;
    let status = &ready[SERVER];
    let server_pid = status.pid.context("the ready server has no pid")?;
    let server_info = status
        .server_info
        .as_ref()
        .map(|info| format!("{} {}", info.name, info.version));
    let tools = servers::call(
        &mut served.connection,
        "tools/list",
        Some(&serde_json::json!({ "server": SERVER }).to_string()),
    )
    .await?;
    for tool in ["echo", LONG_TOOL] {
        if !tools.contains(&format!(r#""name":"{tool}""#)) {
            bail!("server-everything has no `{tool}` tool: {tools}");
        }
    }
    let daemon_pid = Some(served.daemon.pid());
    let socket = served.daemon.socket_path().to_path_buf();

    // 1 and 2. Through corrald on one connection, and directly with rmcp to a
    // server-everything of its own, in alternating blocks so that both see the same machine.
    let mut connection = RawConnection::connect(&socket, "corral-bench-tool-call").await?;
    let mut direct = DirectClient::start(peers.everything()).await?;
    let compared = compare(&mut connection, &mut direct, daemon_pid, server_pid, options).await;
    let direct_exit = direct.close().await;
    let (through_corral, direct) = compared?;

    // 3. Many front-ends at once.
    let concurrent = concurrent(&socket, daemon_pid, server_pid, options).await?;

    // 4. Echo alone, then beside a long call on another connection.
    let echo_alone = echoes_for(&mut connection, options.long_call, None).await?;
    let (echo_beside_long, long_call_took) = beside_long_call(&socket, &mut connection, options.long_call).await?;

    drop(connection);
    let (_, survivors) = served.stop().await?;
    Ok(ToolCalls {
        options,
        server_info,
        through_corral,
        direct,
        concurrent,
        echo_alone,
        echo_beside_long,
        long_call_took,
        direct_exit,
        survivors,
    })
}

/// Calls per block of the alternation between corrald and the direct client.
const BLOCK: usize = 500;

/// Echo calls through corrald and directly, alternating blocks of [`BLOCK`]
/// (warm-up of each first). The daemon and each server work only in their
/// own blocks, so their CPU time is read once around the whole; the
/// benchmark's own is summed per block.
async fn compare(
    connection: &mut RawConnection,
    direct: &mut DirectClient,
    daemon_pid: Option<u32>,
    server_pid: u32,
    options: Options,
) -> anyhow::Result<(Timed, Timed)> {
    for _ in 0..options.warmup {
        echo(connection).await?;
        direct.echo().await?;
    }
    let (mut through_samples, mut direct_samples) = (
        Vec::with_capacity(options.requests),
        Vec::with_capacity(options.requests),
    );
    let (mut through_wall, mut direct_wall) = (Duration::ZERO, Duration::ZERO);
    let (mut through_bench, mut direct_bench) = (Duration::ZERO, Duration::ZERO);
    let through_before = CpuReading::take(daemon_pid, server_pid)?;
    let direct_before = CpuReading::take(None, direct.pid)?;
    while through_samples.len() < options.requests {
        let count = BLOCK.min(options.requests - through_samples.len());
        let bench = cpu::process_cpu("self")?;
        let started = Instant::now();
        through_samples.append(&mut timed_echoes(connection, count).await?);
        through_wall += started.elapsed();
        let middle = cpu::process_cpu("self")?;
        through_bench += middle.saturating_sub(bench);
        let started = Instant::now();
        for _ in 0..count {
            let sent = Instant::now();
            direct.echo().await?;
            direct_samples.push(sent.elapsed());
        }
        direct_wall += started.elapsed();
        direct_bench += cpu::process_cpu("self")?.saturating_sub(middle);
    }
    let mut through = through_before.timed(through_samples, through_wall, daemon_pid, server_pid)?;
    let mut direct = direct_before.timed(direct_samples, direct_wall, None, direct.pid)?;
    through.bench_cpu = through_bench;
    direct.bench_cpu = direct_bench;
    Ok((through, direct))
}

/// server-everything spawned under an `rmcp` client (`TokioChildProcess`).
pub(crate) struct DirectClient {
    client: rmcp::service::RunningService<rmcp::RoleClient, ()>,
    echo: DirectEcho,
    pub(crate) pid: u32,
}

impl DirectClient {
    pub(crate) async fn start(everything: &Path) -> anyhow::Result<Self> {
        let mut command = tokio::process::Command::new("node");
        command
            .arg(everything)
            .arg("stdio")
            .env(survivors::RUN_TAG_VAR, survivors::run_tag())
            .kill_on_drop(true);
        let (transport, _) = TokioChildProcess::builder(command)
            .stderr(Stdio::null())
            .spawn()
            .context("starting server-everything for the direct client")?;
        let pid = transport.id().context("the direct server has no pid")?;
        let client = match tokio::time::timeout(EXIT_TIMEOUT, ().serve(transport)).await {
            Ok(Ok(client)) => client,
            // The transport was dropped: its child is being killed; make sure.
            Ok(Err(error)) => {
                wait_gone(pid).await;
                return Err(error).context("initializing the direct server");
            }
            Err(_) => {
                wait_gone(pid).await;
                bail!("the direct server did not answer `initialize` within {EXIT_TIMEOUT:?}");
            }
        };
        Ok(Self {
            client,
            echo: DirectEcho::new()?,
            pid,
        })
    }

    /// `call_tool` of `echo`; fails unless it echoed.
    pub(crate) async fn echo(&self) -> anyhow::Result<()> {
        self.echo.call(&self.client, "direct `call_tool` of `echo`").await
    }

    /// Close the client (rmcp drops the transport, whose child guard kills the server); make sure it is
    /// gone. Says how it ended.
    pub(crate) async fn close(self) -> String {
        let Self { client, pid, .. } = self;
        let closed = tokio::time::timeout(EXIT_TIMEOUT, client.cancel()).await;
        let gone = wait_gone(pid).await;
        match closed {
            Ok(Ok(_)) => gone,
            Ok(Err(error)) => format!("{gone} (closing the client failed: {error})"),
            Err(_) => format!("{gone} (closing the client took over {EXIT_TIMEOUT:?})"),
        }
    }
}

/// Wait up to [`EXIT_TIMEOUT`] for `pid` to be gone (or a zombie), then SIGKILL it if it carries this run's tag.
async fn wait_gone(pid: u32) -> String {
    let started = Instant::now();
    while started.elapsed() < EXIT_TIMEOUT {
        if matches!(survivors::process_state(pid), None | Some('Z')) {
            return format!(
                "gone {:.0} ms after the client closed",
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let survivor = Survivor {
        pid,
        cmdline: "direct server-everything".to_owned(),
    };
    if survivors::kill(&survivor) {
        format!("still running {EXIT_TIMEOUT:?} after the client closed: sent SIGKILL")
    } else {
        format!("still running {EXIT_TIMEOUT:?} after the client closed, could not signal it")
    }
}

/// `options.clients` raw connections calling echo at once, each its own fixed count.
async fn concurrent(
    socket: &Path,
    daemon_pid: Option<u32>,
    server_pid: u32,
    options: Options,
) -> anyhow::Result<Timed> {
    let barrier = Arc::new(Barrier::new(options.clients + 1));
    let mut tasks = JoinSet::new();
    for index in 0..options.clients {
        let mut connection = RawConnection::connect(socket, &format!("corral-bench-tool-call-{index}")).await?;
        let barrier = Arc::clone(&barrier);
        let (warmup, requests) = (options.client_warmup, options.client_requests);
        tasks.spawn(async move {
            let mut warmed = Ok(());
            for _ in 0..warmup {
                warmed = echo(&mut connection).await;
                if warmed.is_err() {
                    break;
                }
            }
            // Every task reaches the barrier, so a failed one cannot leave the others waiting.
            barrier.wait().await;
            warmed?;
            let samples = timed_echoes(&mut connection, requests).await?;
            anyhow::Ok((samples, Instant::now()))
        });
    }
    barrier.wait().await;
    let before = CpuReading::take(daemon_pid, server_pid)?;
    let started = Instant::now();
    let mut samples = Vec::with_capacity(options.clients * options.client_requests);
    let mut finished = started;
    while let Some(joined) = tasks.join_next().await {
        let (mut some, at) = joined.context("a concurrent client panicked")??;
        samples.append(&mut some);
        finished = finished.max(at);
    }
    before.timed(samples, finished - started, daemon_pid, server_pid)
}

/// A long call on a second connection; echo calls on `connection` until it answers.
async fn beside_long_call(
    socket: &Path,
    connection: &mut RawConnection,
    long_call: Duration,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let mut long_connection = RawConnection::connect(socket, "corral-bench-long-call").await?;
    let params = serde_json::json!({
        "server": SERVER,
        "name": LONG_TOOL,
        "arguments": { "duration": long_call.as_secs_f64(), "steps": LONG_STEPS },
    })
    .to_string();
    let answered = Arc::new(AtomicBool::new(false));
    let id = long_connection.send("tools/call", Some(&params)).await?;
    let sent = Instant::now();
    let waiter = {
        let answered = Arc::clone(&answered);
        tokio::spawn(async move {
            let result = tokio::time::timeout(
                long_call + servers::CALL_TIMEOUT,
                long_connection.wait_for_result("tools/call", id),
            )
            .await;
            let took = sent.elapsed();
            answered.store(true, Ordering::Release);
            (result, took)
        })
    };
    // Bounded by the window even if the long call never answers.
    let samples = echoes_for(connection, long_call + servers::CALL_TIMEOUT, Some(&answered)).await;
    let (result, took) = waiter.await.context("the long call's task panicked")?;
    let result = result.with_context(|| format!("`{LONG_TOOL}` not answered in time"))??;
    if !result.contains("Long running operation completed") {
        bail!("`{LONG_TOOL}` answered {result}");
    }
    Ok((samples?, took))
}

fn micros(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1e6)
}

fn per_call(total: Duration, calls: usize) -> String {
    micros(total / u32::try_from(calls.max(1)).unwrap_or(u32::MAX))
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
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

/// The report of the phase.
pub(crate) fn print(out: &mut impl Write, calls: &ToolCalls) -> std::io::Result<()> {
    const TARGET_ADDED_P50: Duration = Duration::from_micros(100);
    const TARGET_ADDED_FRACTION: f64 = 0.10;
    let options = &calls.options;
    writeln!(out)?;
    writeln!(
        out,
        "{:<52} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  target",
        format!(
            "tools/call echo {{message:\"x\"}}, {} (µs)",
            calls.server_info.as_deref().unwrap_or("server-everything")
        ),
        "n",
        "p50",
        "p90",
        "p99",
        "max",
        "mean"
    )?;
    let mut through = calls.through_corral.samples.clone();
    let mut direct = calls.direct.samples.clone();
    let (Some(through), Some(direct)) = (Summary::of(&mut through), Summary::of(&mut direct)) else {
        return Ok(());
    };
    row(out, "raw client → corrald → server, 1 connection", &through, "")?;
    row(out, "rmcp client → its own server (direct)", &direct, "(baseline)")?;
    let added = through.p50.as_secs_f64() - direct.p50.as_secs_f64();
    let fraction = added / direct.p50.as_secs_f64().max(f64::MIN_POSITIVE);
    writeln!(
        out,
        "  {:<50} {:>7} {:>9} {:>9} {:>9}            < {} µs: {}; < {:.0} % of direct: {}",
        "corrald adds: p50 difference, p99 difference",
        "",
        format!("{:.1}", added * 1e6),
        "",
        format!("{:.1}", (through.p99.as_secs_f64() - direct.p99.as_secs_f64()) * 1e6),
        TARGET_ADDED_P50.as_micros(),
        verdict(added < TARGET_ADDED_P50.as_secs_f64()),
        TARGET_ADDED_FRACTION * 100.0,
        verdict(fraction < TARGET_ADDED_FRACTION),
    )?;
    writeln!(
        out,
        "  {:<50} {:>7} {:>9}",
        "ratio through corrald / direct, p50",
        "",
        format!(
            "{:.2}×",
            through.p50.as_secs_f64() / direct.p50.as_secs_f64().max(f64::MIN_POSITIVE)
        )
    )?;
    let mut concurrent = calls.concurrent.samples.clone();
    if let Some(summary) = Summary::of(&mut concurrent) {
        #[allow(clippy::cast_precision_loss, reason = "a call count is far below 2^52")]
        let throughput = summary.count as f64 / calls.concurrent.wall.as_secs_f64().max(f64::MIN_POSITIVE);
        #[allow(clippy::cast_precision_loss, reason = "a call count is far below 2^52")]
        let single = through.count as f64 / calls.through_corral.wall.as_secs_f64().max(f64::MIN_POSITIVE);
        row(
            out,
            &format!("{} raw connections at once, per call", options.clients),
            &summary,
            &format!("{throughput:.0} calls/s (1 connection: {single:.0})"),
        )?;
    }
    let long_ms = options.long_call.as_millis();
    let mut alone = calls.echo_alone.clone();
    if let Some(summary) = Summary::of(&mut alone) {
        row(out, &format!("echo alone, for {long_ms} ms"), &summary, "")?;
    }
    let mut beside = calls.echo_beside_long.clone();
    if let Some(summary) = Summary::of(&mut beside) {
        row(
            out,
            &format!("echo while a {long_ms} ms call runs on another conn."),
            &summary,
            "(compare with the line above)",
        )?;
    }
    writeln!(
        out,
        "  the long call ({LONG_TOOL}, {long_ms} ms in {LONG_STEPS} steps) answered after {:.1} ms",
        calls.long_call_took.as_secs_f64() * 1e3
    )?;

    writeln!(out)?;
    writeln!(
        out,
        "{:<52} {:>9} {:>9} {:>9}",
        "tools/call CPU time per call, user + system (µs)", "corrald", "server", "benchmark"
    )?;
    for (label, timed) in [
        ("through corrald, 1 connection", &calls.through_corral),
        ("direct rmcp client (benchmark = rmcp client)", &calls.direct),
        ("through corrald, concurrent connections", &calls.concurrent),
    ] {
        let count = timed.samples.len();
        writeln!(
            out,
            "  {:<50} {:>9} {:>9} {:>9}",
            label,
            timed
                .daemon_cpu
                .map_or_else(|| "-".to_owned(), |cpu| per_call(cpu, count)),
            per_call(timed.server_cpu, count),
            per_call(timed.bench_cpu, count),
        )?;
    }
    writeln!(out, "  direct server: {}", calls.direct_exit)?;
    Ok(())
}

/// `echo {message: "x"}` from a direct rmcp client (stdio or HTTP), checked.
pub(crate) struct DirectEcho {
    params: CallToolRequestParams,
}

impl DirectEcho {
    pub(crate) fn new() -> anyhow::Result<Self> {
        let arguments = serde_json::json!({ "message": "x" });
        let params = CallToolRequestParams::new("echo")
            .with_arguments(arguments.as_object().cloned().context("echo arguments are an object")?);
        Ok(Self { params })
    }

    /// Call `echo` through `client`; fails unless it echoed. `what` names the call in errors.
    pub(crate) async fn call(&self, client: &rmcp::Peer<rmcp::RoleClient>, what: &str) -> anyhow::Result<()> {
        let result = client
            .call_tool(self.params.clone())
            .await
            .with_context(|| what.to_owned())?;
        let text = result.content.first().and_then(|content| content.as_text());
        if result.is_error == Some(true) || text.is_none_or(|text| text.text != ECHO_TEXT) {
            bail!("{what} answered {result:?}");
        }
        Ok(())
    }
}
