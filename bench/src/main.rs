//! `corral-bench`: start the real release `corrald` on a temporary socket and
//! print how fast and how small it is, next to the project's targets.
//!
//! Measured, in order: idle memory with the built-in server (`idle.rs`); the floor (the same raw client against a do-nothing
//! server thread); then on one daemon: idle memory after start;
//! `mcpServer/list` round trips through a raw client and through
//! `corral_client`; the same with many concurrent raw clients; notification
//! fan-out to many front-ends; memory after the load; CPU time of daemon and
//! benchmark throughout. Then, on fresh daemons: time from spawn until the
//! socket accepts; and with real MCP servers from a generated config (the
//! test peers): one server vs. many starting at once, `mcpServer/stop`
//! latency, and the daemon's memory per running server; and `tools/call` of
//! server-everything's `echo` through corrald next to a direct rmcp client,
//! with many front-ends, and beside a long call; the same call through
//! `corral mcp` (the bridge) and through the daemon's loopback HTTP MCP
//! endpoint next to the socket and the direct client, and the bridge
//! process's memory. At the end it looks
//! for processes of this run that are still alive. It prints numbers and
//! never fails because of them: timing goals are for people to read, not for
//! CI to assert (see `docs/benchmarks.md`).

mod bridge;
mod cpu;
mod daemon;
mod echo_server;
mod fleet;
mod http_call;
mod http_mcp;
mod idle;
mod mcp_hub;
mod oauth_call;
mod oauth_login;
mod peers;
mod raw;
mod relay;
mod scale;
mod scenarios;
mod servers;
mod stats;
mod survivors;
mod tool_call;

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};

use crate::cpu::CpuUse;
use crate::daemon::{DaemonProcess, Memory};
use crate::peers::{Peer, Peers};
use crate::raw::RawConnection;
use crate::servers::{MemoryPerServer, StartComparison, StartRun, Stops};
use crate::stats::Summary;

/// Benchmark the Corral daemon over its socket (spawns its own corrald; prints numbers, asserts nothing).
#[derive(Debug, Parser)]
#[command(name = "corral-bench", version, about)]
struct Args {
    /// The corrald binary [default: `corrald` next to this executable, i.e. target/release/corrald].
    #[arg(long, value_name = "PATH")]
    corrald: Option<PathBuf>,
    /// Unmeasured `mcpServer/list` calls before the single-client measurements.
    #[arg(long, default_value_t = 2_000)]
    warmup: usize,
    /// Measured `mcpServer/list` calls, single client (raw and SDK each).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Unmeasured calls per concurrent client.
    #[arg(long, default_value_t = 200)]
    client_warmup: usize,
    /// Measured calls per concurrent client.
    #[arg(long, default_value_t = 2_000)]
    client_requests: usize,
    /// Connected, initialized front-ends receiving each notification.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=1000))]
    listeners: u16,
    /// Unmeasured fan-out rounds.
    #[arg(long, default_value_t = 10)]
    warmup_rounds: usize,
    /// Measured fan-out rounds (one notification each).
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Fresh daemons started (and stopped) to time start-up.
    #[arg(long, default_value_t = 20)]
    startups: usize,
    /// Interval between connection attempts while a daemon starts, in milliseconds.
    #[arg(long, default_value_t = 1)]
    poll_ms: u64,
    /// The corral CLI, run as `corral mcp` by the `bridge` measurement [default: `corral` next to the corrald].
    #[arg(long, value_name = "PATH")]
    corral: Option<PathBuf>,
    /// Worker threads of the benchmark's own runtime [default: one per CPU].
    #[arg(long)]
    client_threads: Option<usize>,
    /// Longest any one measurement may run, in seconds.
    #[arg(long, default_value_t = 300)]
    phase_timeout: u64,
    /// Run only these measurements (comma-separated); memory is always read.
    /// Without it, every measurement except `server-start-fixture` runs.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// The test peers (MCP servers) the server measurements run [default: tests/peers of the source tree].
    #[arg(long, value_name = "DIR")]
    peers_dir: Option<PathBuf>,
    /// Servers started at once (parallel start, memory per server).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=99))]
    servers: u16,
    /// Fresh daemons per case of the parallel start (one server, then all of them, alternating).
    #[arg(long, default_value_t = 3)]
    start_runs: usize,
    /// `mcpServer/stop` calls timed per kind of server.
    #[arg(long, default_value_t = 5)]
    stop_runs: usize,
    /// Unmeasured `tools/call` echo calls before each single-connection measurement (through corrald, direct).
    #[arg(long, default_value_t = 1_000)]
    tool_warmup: usize,
    /// Measured `tools/call` echo calls, one connection (through corrald and direct each; in
    /// `tool-call`, spread over `--tool-rounds` rounds).
    #[arg(long, default_value_t = 5_000)]
    tool_requests: usize,
    /// Rounds of `tool-call`: each setup (direct, relay, Corral, rmcp) once per round, the order
    /// rotated; also the rounds of its throughput comparison.
    #[arg(long, default_value_t = 5)]
    tool_rounds: usize,
    /// Calls a setup of `tool-call` makes in a row before the next takes its turn, within a
    /// round (its first call finds the processes of that setup idle).
    #[arg(long, default_value_t = 100)]
    tool_turn: usize,
    /// Front-ends calling `tools/call` echo at once.
    #[arg(long, default_value_t = 16)]
    tool_clients: usize,
    /// Unmeasured echo calls per concurrent front-end.
    #[arg(long, default_value_t = 100)]
    tool_client_warmup: usize,
    /// Measured echo calls per concurrent front-end.
    #[arg(long, default_value_t = 500)]
    tool_client_requests: usize,
    /// Duration of the long call beside which echo calls are timed, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    long_call_ms: u64,
    /// Unmeasured `tools/call` calls to the OAuth server, per credential store.
    #[arg(long, default_value_t = 100)]
    oauth_call_warmup: usize,
    /// Measured `tools/call` calls to the OAuth server, per credential store.
    #[arg(long, default_value_t = 1_000)]
    oauth_call_requests: usize,
    /// MCP clients at once in the `fleet` measurement (each with its own `corral mcp`, or its own server).
    #[arg(long, default_value_t = 8)]
    fleet_clients: usize,
    /// How long the `fleet` clients call in each setup, in seconds.
    #[arg(long, default_value_t = 5)]
    fleet_seconds: u64,
    /// Server counts of the `scale` measurement, each on a fresh daemon.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 32, 256])]
    scale_counts: Vec<usize>,
    /// Measured `mcpServer/list` and `tools/call` round trips per count in `scale` (`tools/list`: a tenth).
    #[arg(long, default_value_t = 2_000)]
    scale_requests: usize,
    /// Unmeasured round trips of each kind per count in `scale`.
    #[arg(long, default_value_t = 200)]
    scale_warmup: usize,
    /// Undisturbed rounds of the `mcp-hub` comparison (a disturbed one is run again, at most as many times).
    #[arg(long, default_value_t = 5)]
    hub_rounds: usize,
    /// Unmeasured echo calls per setup and round of the `mcp-hub` comparison.
    #[arg(long, default_value_t = 500)]
    hub_warmup: usize,
    /// Measured echo calls per setup and round of the `mcp-hub` comparison.
    #[arg(long, default_value_t = 2_000)]
    hub_requests: usize,
}

/// The measurements that can be selected with `--only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Single-client round trips against a do-nothing server thread (the floor).
    Floor,
    /// Single-client round trips, raw client.
    Raw,
    /// Single-client round trips, `corral_client` SDK.
    Sdk,
    /// Concurrent clients.
    Concurrent,
    /// Notification fan-out.
    FanOut,
    /// Start-up time of fresh daemons.
    Startup,
    /// One server-everything vs. `--servers` of them starting at once.
    ServerStart,
    /// The same with the Python fixture server (about 40 s: not in the default run).
    ServerStartFixture,
    /// `mcpServer/stop` latency, and whether the process is gone at the answer.
    ServerStop,
    /// The daemon's memory without servers and with `--servers` ready ones.
    ServerMemory,
    /// `tools/call` of server-everything's `echo` through corrald vs. a direct rmcp client,
    /// concurrent front-ends, and echo beside a long call (about 15 s).
    ToolCall,
    /// `tools/call` of server-everything's `echo` over streamable HTTP through corrald vs. a
    /// direct rmcp HTTP client of the same server.
    ToolCallHttp,
    /// `tools/call` of server-everything's `echo` through `corral mcp` and through the HTTP
    /// endpoint vs. MCP and Corral's `tools/call` on the socket vs. a direct rmcp client; the
    /// `corral mcp` process's memory.
    Bridge,
    /// `--fleet-clients` MCP clients calling echo at once, each through its own `corral mcp` to one
    /// shared server-everything vs. each with its own server-everything: calls/s, p50/p99, processes
    /// and memory.
    Fleet,
    /// OAuth login request to server `ready`, against the TS SDK's example server with `--oauth`.
    OauthLogin,
    /// `tools/call` to the TS SDK's example server with `--oauth`, once per credential store.
    OauthCall,
    /// Idle memory with the built-in server (as a user runs corrald), left alone and after one
    /// front-end's requests.
    IdleBuiltin,
    /// corrald with 1, 8, 32 and 256 servers (`--scale-counts`; the benchmark's own cheap echo
    /// server): start to all ready, memory, threads, `mcpServer/list`, `tools/list` and one call.
    Scale,
    /// server-everything's `echo` directly, through Corral (socket, MCP on the socket, HTTP
    /// endpoint) and through mcp-hub (REST, /mcp), round by round; needs
    /// `npm ci --prefix bench/peers` (not in the default run).
    McpHub,
}

impl Phase {
    /// Whether a run without `--only` includes this measurement.
    fn in_default_run(self) -> bool {
        !matches!(self, Self::ServerStartFixture | Self::McpHub)
    }
}

impl Args {
    fn runs(&self, phase: Phase) -> bool {
        if self.only.is_empty() {
            phase.in_default_run()
        } else {
            self.only.contains(&phase)
        }
    }

    fn runs_any_server_phase(&self) -> bool {
        [
            Phase::ServerStart,
            Phase::ServerStartFixture,
            Phase::ServerStop,
            Phase::ServerMemory,
            Phase::ToolCall,
            Phase::ToolCallHttp,
            Phase::Bridge,
            Phase::Fleet,
            Phase::OauthLogin,
            Phase::OauthCall,
            Phase::McpHub,
        ]
        .into_iter()
        .any(|phase| self.runs(phase))
    }

    fn corrald(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.corrald {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("finding this executable to locate corrald next to it")?
                .with_file_name("corrald"),
        };
        if !path.is_file() {
            bail!(
                "no corrald at {}: build it with `cargo build --release -p corrald` or pass --corrald",
                path.display()
            );
        }
        Ok(path)
    }

    /// The `corral` binary for `corral mcp`: `--corral`, else the one next to `corrald`.
    fn corral(&self, corrald: &Path) -> anyhow::Result<PathBuf> {
        let path = self.corral.clone().unwrap_or_else(|| corrald.with_file_name("corral"));
        if !path.is_file() {
            bail!(
                "no corral at {}: build it with `cargo build --release -p corral-cli` or pass --corral",
                path.display()
            );
        }
        Ok(path)
    }
}

fn main() -> ExitCode {
    // This executable is also the do-nothing relays of `tool-call` (`relay.rs`), as a process of its own.
    let mut raw_args = std::env::args_os().skip(1);
    let relay_flag = raw_args.next();
    let serve = match relay_flag.as_ref().and_then(|flag| flag.to_str()) {
        Some(relay::SERVE_RELAY_FLAG) => Some(relay::serve as fn(&Path, &[std::ffi::OsString]) -> _),
        Some(relay::SERVE_SHARED_RELAY_FLAG) => Some(relay::serve_shared as fn(&Path, &[std::ffi::OsString]) -> _),
        _ => None,
    };
    if let Some(serve) = serve {
        let socket = raw_args.next().map(PathBuf::from).unwrap_or_default();
        let command: Vec<std::ffi::OsString> = raw_args.skip_while(|arg| arg != "--").skip(1).collect();
        return match serve(&socket, &command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("corral-bench relay: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    // The cheap MCP server the `scale` measurement starts by the hundred: this same executable.
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "--serve-echo-mcp") {
        return match echo_server::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    let args = Args::parse();
    let threads = args
        .client_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("corral-bench: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report {
        client_threads: threads,
        load_before: load_average(),
        ..Report::default()
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = run(&args, &mut report) => outcome,
            // Dropping `run` stops every daemon it started (see `DaemonProcess`'s `Drop`).
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    report.load_after = load_average();
    report.survivors_at_end = Some(kill_survivors());
    let mut stdout = std::io::stdout().lock();
    let printed = report.print(&mut stdout).and_then(|()| stdout.flush());
    if let Err(error) = printed {
        eprintln!("corral-bench: cannot print the report: {error}");
        return ExitCode::FAILURE;
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("corral-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let corrald = args.corrald()?;
    // Looked for now, so that a missing `corral` fails the run before the measurements, not after.
    let corral = if args.runs(Phase::Bridge) || args.runs(Phase::Fleet) {
        Some(args.corral(&corrald)?)
    } else {
        None
    };
    report.corrald = Some(corrald.clone());
    let limit = Duration::from_secs(args.phase_timeout);
    let poll = Duration::from_millis(args.poll_ms.max(1));

    let mut daemon = DaemonProcess::spawn(&corrald)?;
    report.pid = Some(daemon.pid());
    daemon.wait_until_accepting(poll, Duration::from_secs(5)).await?;
    let socket = daemon.socket_path().to_path_buf();
    // Open for the whole run; used to ask the daemon how many connections it still has.
    let mut monitor = RawConnection::connect(&socket, "corral-bench-monitor").await?;
    scenarios::open_connections(&mut monitor).await?;
    report.memory_start = Some(daemon.memory()?);

    if args.runs(Phase::IdleBuiltin) {
        report.idle_builtin =
            Some(bounded("idle memory with the built-in server", limit, idle::measure(&corrald)).await?);
    }
    if args.runs(Phase::Floor) {
        let measured = bounded(
            "round trips, do-nothing server",
            limit,
            scenarios::round_trip_floor(args.warmup, args.requests),
        )
        .await?;
        report.floor = SingleReport::of(measured);
    }
    if args.runs(Phase::Raw) {
        let measured = bounded(
            "round trips, raw client",
            limit,
            scenarios::round_trip_raw(&socket, daemon.pid(), args.warmup, args.requests),
        )
        .await?;
        report.raw = SingleReport::of(measured);
    }
    if args.runs(Phase::Sdk) {
        let measured = bounded(
            "round trips, SDK client",
            limit,
            scenarios::round_trip_sdk(&socket, daemon.pid(), args.warmup, args.requests),
        )
        .await?;
        report.sdk = SingleReport::of(measured);
    }
    if args.runs(Phase::Concurrent) && args.clients > 0 {
        let mut concurrent = bounded(
            "round trips, concurrent clients",
            limit,
            scenarios::round_trip_concurrent(
                &socket,
                daemon.pid(),
                args.clients,
                args.client_warmup,
                args.client_requests,
            ),
        )
        .await?;
        let requests = concurrent.samples.len();
        report.concurrent = Summary::of(&mut concurrent.samples).map(|summary| ConcurrentReport {
            clients: args.clients,
            summary,
            #[allow(clippy::cast_precision_loss, reason = "a request count is far below 2^52")]
            throughput: requests as f64 / concurrent.wall.as_secs_f64(),
            cpu: concurrent.cpu,
        });
    }
    if args.runs(Phase::FanOut) {
        let listeners = usize::from(args.listeners);
        let mut fan_out = bounded(
            "notification fan-out",
            limit,
            scenarios::fan_out(&daemon, listeners, args.warmup_rounds, args.rounds),
        )
        .await?;
        report.memory_connected = fan_out.memory_connected;
        if let (Some(first), Some(median), Some(last)) = (
            Summary::of(&mut fan_out.first),
            Summary::of(&mut fan_out.median),
            Summary::of(&mut fan_out.last),
        ) {
            report.fan_out = Some(FanOutReport {
                listeners,
                first,
                median,
                last,
                cpu: fan_out.cpu,
            });
        }
    }

    scenarios::wait_until_only_connection(&mut monitor).await?;
    report.memory_after = Some(daemon.memory()?);
    drop(monitor);
    let stopped = daemon.stop().await?;
    if !stopped.status.success() {
        bail!("corrald exited with {} after SIGTERM", stopped.status);
    }

    if args.runs(Phase::Startup) && args.startups > 0 {
        let mut startups = bounded(
            "start-up of fresh daemons",
            limit,
            scenarios::startups(&corrald, args.startups, poll),
        )
        .await?;
        if let (Some(accepting), Some(initialized), Some(shutdown)) = (
            Summary::of(&mut startups.accepting),
            Summary::of(&mut startups.initialized),
            Summary::of(&mut startups.shutdown),
        ) {
            report.startup = Some(StartupReport {
                accepting,
                initialized,
                shutdown,
                poll,
            });
        }
    }

    if args.runs_any_server_phase() {
        run_server_phases(args, &corrald, corral.as_deref(), limit, report).await?;
    }
    if args.runs(Phase::Scale) && !args.scale_counts.is_empty() {
        let what = "corrald with more and more servers";
        let options = scale::Options {
            counts: args.scale_counts.clone(),
            requests: args.scale_requests.max(1),
            warmup: args.scale_warmup,
        };
        let scale = bounded(what, limit, scale::measure(&corrald, options)).await?;
        report.note_survivors(what, &scale.survivors);
        report.scale = Some(scale);
    }
    Ok(())
}

/// The measurements with real MCP servers, each on fresh daemons.
async fn run_server_phases(
    args: &Args,
    corrald: &Path,
    corral: Option<&Path>,
    limit: Duration,
    report: &mut Report,
) -> anyhow::Result<()> {
    let peers = Peers::locate(&args.peers_dir.clone().unwrap_or_else(Peers::default_dir))?;
    report.foreign_peer_processes = Some(survivors::foreign_processes_running(&peers.paths()));
    let servers = usize::from(args.servers);
    for (phase, peer) in [
        (Phase::ServerStart, Peer::Everything),
        (Phase::ServerStartFixture, Peer::Fixture),
    ] {
        if !args.runs(phase) || args.start_runs == 0 {
            continue;
        }
        let what = format!("{} start, 1 vs. {servers} at once", peer.label());
        let comparison = bounded(
            &what,
            limit,
            servers::start_comparison(corrald, &peers, peer, servers, args.start_runs),
        )
        .await?;
        for run in comparison.alone.iter().chain(&comparison.together) {
            report.note_survivors(&what, &run.survivors);
        }
        report.server_starts.push(comparison);
    }
    if args.runs(Phase::ServerStop) && args.stop_runs > 0 {
        let what = "mcpServer/stop latency";
        let stops = bounded(what, limit, servers::stop_latency(corrald, &peers, args.stop_runs)).await?;
        report.note_survivors(what, &stops.survivors);
        report.stops = Some(stops);
    }
    if args.runs(Phase::ServerMemory) {
        let what = "daemon memory per server";
        let memory = bounded(
            what,
            limit,
            servers::memory_per_server(corrald, &peers, Peer::Everything, servers),
        )
        .await?;
        report.note_survivors(what, &memory.survivors);
        report.memory_per_server = Some(memory);
    }
    if args.runs(Phase::ToolCall) {
        let what = "tools/call through corrald vs. direct";
        let rounds = args.tool_rounds.max(1);
        let options = tool_call::Options {
            warmup: args.tool_warmup,
            requests: args.tool_requests.max(1).div_ceil(rounds),
            rounds,
            turn: args.tool_turn.max(1),
            clients: args.tool_clients.max(1),
            client_warmup: args.tool_client_warmup,
            client_requests: args.tool_client_requests.max(1),
            long_call: Duration::from_millis(args.long_call_ms.max(1)),
        };
        // Four clients and a daemon's worth of state: on the heap, not in `run`'s future.
        let calls = bounded(what, limit, Box::pin(tool_call::measure(corrald, &peers, options))).await?;
        report.note_survivors(what, &calls.survivors);
        report.tool_calls = Some(calls);
    }
    if args.runs(Phase::ToolCallHttp) {
        let what = "tools/call over streamable HTTP through corrald vs. direct";
        let options = http_call::Options {
            warmup: args.tool_warmup,
            requests: args.tool_requests.max(1),
        };
        let calls = bounded(what, limit, http_call::measure(corrald, &peers, options)).await?;
        report.note_survivors(what, &calls.survivors);
        report.http_calls = Some(calls);
    }
    if let Some(corral) = corral.filter(|_| args.runs(Phase::Bridge)) {
        let what = "tools/call through `corral mcp` and the HTTP endpoint vs. the socket vs. direct";
        let options = bridge::Options {
            warmup: args.tool_warmup,
            requests: args.tool_requests.max(1),
        };
        let calls = bounded(
            what,
            limit,
            // Five clients and a daemon's worth of state: on the heap, not in `run`'s future.
            Box::pin(bridge::measure(corrald, corral, &peers, options)),
        )
        .await?;
        report.note_survivors(what, &calls.survivors);
        report.bridge_calls = Some(calls);
    }
    if let Some(corral) = corral.filter(|_| args.runs(Phase::Fleet)) {
        let what = "MCP clients through their own `corral mcp` vs. each with its own server";
        let options = fleet::Options {
            clients: args.fleet_clients,
            warmup: args.tool_client_warmup,
            duration: Duration::from_secs(args.fleet_seconds.max(1)),
        };
        let fleet = bounded(what, limit, Box::pin(fleet::measure(corrald, corral, &peers, options))).await?;
        report.note_survivors(what, &fleet.survivors);
        report.fleet = Some(fleet);
    }
    if args.runs(Phase::OauthLogin) {
        let what = "OAuth login to ready";
        let logins = bounded(what, limit, oauth_login::measure(corrald, &peers, 10)).await?;
        report.note_survivors(what, &logins.survivors);
        report.oauth_logins = Some(logins);
    }
    if args.runs(Phase::OauthCall) {
        let what = "tools/call to an OAuth server, per credential store";
        let options = oauth_call::Options {
            warmup: args.oauth_call_warmup,
            requests: args.oauth_call_requests.max(1),
        };
        let calls = bounded(what, limit, oauth_call::measure(corrald, &peers, options)).await?;
        report.note_survivors(what, &calls.survivors);
        report.oauth_calls = Some(calls);
    }
    if args.runs(Phase::McpHub) && args.hub_rounds > 0 {
        let what = "tools/call directly, through Corral and through mcp-hub";
        let options = mcp_hub::Options {
            rounds: args.hub_rounds,
            warmup: args.hub_warmup,
            requests: args.hub_requests.max(1),
        };
        let comparison = bounded(what, limit, Box::pin(mcp_hub::measure(corrald, &peers, options))).await?;
        report.note_survivors(what, &comparison.survivors);
        report.mcp_hub = Some(comparison);
    }
    Ok(())
}

/// Find processes of this run still alive (the daemons have all been stopped
/// by now, on every path), warn about each and SIGKILL it.
fn kill_survivors() -> Vec<survivors::Survivor> {
    let found = survivors::find();
    for survivor in &found {
        let killed = survivors::kill(survivor);
        eprintln!(
            "corral-bench: WARNING: a process of this run survived the benchmark ({survivor}); {}",
            if killed { "sent SIGKILL" } else { "could not signal it" }
        );
    }
    found
}

/// Run one measurement within `limit`, saying on stderr what is going on.
async fn bounded<T>(
    what: &str,
    limit: Duration,
    measurement: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    eprintln!("corral-bench: {what}…");
    let started = Instant::now();
    let result = tokio::time::timeout(limit, measurement)
        .await
        .with_context(|| format!("{what}: not finished within {limit:?}"))?
        .with_context(|| format!("{what} failed"));
    eprintln!("corral-bench: {what}: done in {:.1} s", started.elapsed().as_secs_f64());
    result
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The targets the numbers are compared with.
const TARGET_ROUND_TRIP_P50: Duration = Duration::from_micros(100);
const TARGET_FAN_OUT_P99: Duration = Duration::from_millis(5);
/// 15 MB (decimal), the stricter reading of "15 MB".
const TARGET_IDLE_RSS_BYTES: u64 = 15_000_000;
const TARGET_ACCEPTING: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct Report {
    corrald: Option<PathBuf>,
    pid: Option<u32>,
    client_threads: usize,
    load_before: String,
    load_after: String,
    memory_start: Option<Memory>,
    idle_builtin: Option<idle::Idle>,
    floor: Option<SingleReport>,
    raw: Option<SingleReport>,
    sdk: Option<SingleReport>,
    concurrent: Option<ConcurrentReport>,
    fan_out: Option<FanOutReport>,
    /// Connections open (as the daemon counts them) and the memory then.
    memory_connected: Option<(u64, Memory)>,
    memory_after: Option<Memory>,
    startup: Option<StartupReport>,
    /// Processes running the peers, not started by this run, when the server measurements began.
    foreign_peer_processes: Option<usize>,
    server_starts: Vec<StartComparison>,
    stops: Option<Stops>,
    memory_per_server: Option<MemoryPerServer>,
    tool_calls: Option<tool_call::ToolCalls>,
    http_calls: Option<http_call::HttpCalls>,
    bridge_calls: Option<bridge::BridgeCalls>,
    fleet: Option<fleet::Fleet>,
    oauth_logins: Option<oauth_login::Logins>,
    oauth_calls: Option<oauth_call::OauthCalls>,
    scale: Option<scale::Scale>,
    mcp_hub: Option<mcp_hub::HubComparison>,
    /// Processes of this run alive right after their daemon exited: (measurement, process).
    survivors_after_daemon: Vec<(String, survivors::Survivor)>,
    /// How many times that was looked for.
    survivor_checks: usize,
    /// Processes of this run alive at the very end (`None` until looked for).
    survivors_at_end: Option<Vec<survivors::Survivor>>,
}

impl Report {
    fn note_survivors(&mut self, what: &str, found: &[survivors::Survivor]) {
        self.survivor_checks += 1;
        for survivor in found {
            eprintln!("corral-bench: WARNING: {what}: alive after its daemon exited: {survivor}");
            self.survivors_after_daemon.push((what.to_owned(), survivor.clone()));
        }
    }
}

#[derive(Debug)]
struct SingleReport {
    summary: Summary,
    cpu: CpuUse,
}

impl SingleReport {
    fn of(mut measured: scenarios::Measured) -> Option<Self> {
        Summary::of(&mut measured.samples).map(|summary| Self {
            summary,
            cpu: measured.cpu,
        })
    }
}

#[derive(Debug)]
struct ConcurrentReport {
    clients: usize,
    summary: Summary,
    throughput: f64,
    cpu: CpuUse,
}

#[derive(Debug)]
struct FanOutReport {
    listeners: usize,
    first: Summary,
    median: Summary,
    last: Summary,
    cpu: CpuUse,
}

#[derive(Debug)]
struct StartupReport {
    accepting: Summary,
    initialized: Summary,
    shutdown: Summary,
    poll: Duration,
}

fn micros(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1e6)
}

fn millis(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1e3)
}

#[allow(clippy::cast_precision_loss, reason = "memory sizes are far below 2^52 bytes")]
fn mebibytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

impl Report {
    fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(out)?;
        writeln!(
            out,
            "corral-bench {}: corrald {} (pid {})",
            env!("CARGO_PKG_VERSION"),
            self.corrald
                .as_ref()
                .map_or_else(|| "not found".to_owned(), |path| path.display().to_string()),
            self.pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
        )?;
        writeln!(
            out,
            "{} CPUs; benchmark runtime {} worker threads; load average {} before, {} after",
            std::thread::available_parallelism().map_or(0, usize::from),
            self.client_threads,
            self.load_before,
            self.load_after,
        )?;

        let header = |out: &mut dyn Write, title: &str, unit: &str| {
            writeln!(out)?;
            writeln!(
                out,
                "{:<44} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  target",
                format!("{title} ({unit})"),
                "n",
                "p50",
                "p90",
                "p99",
                "max",
                "mean"
            )
        };
        let row = |out: &mut dyn Write, label: &str, summary: &Summary, format: fn(Duration) -> String, note: &str| {
            let line = format!(
                "  {:<42} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}  {note}",
                label,
                summary.count,
                format(summary.p50),
                format(summary.p90),
                format(summary.p99),
                format(summary.max),
                format(summary.mean),
            );
            writeln!(out, "{}", line.trim_end())
        };

        if self.floor.is_some() || self.raw.is_some() || self.sdk.is_some() || self.concurrent.is_some() {
            header(out, "mcpServer/list round trip", "µs")?;
            if let Some(floor) = &self.floor {
                row(
                    out,
                    "floor: raw client, do-nothing server",
                    &floor.summary,
                    micros,
                    "(baseline)",
                )?;
            }
            if let Some(raw) = &self.raw {
                let note = format!(
                    "p50 < {} µs: {}",
                    TARGET_ROUND_TRIP_P50.as_micros(),
                    verdict(raw.summary.p50 < TARGET_ROUND_TRIP_P50)
                );
                row(out, "raw client, 1 connection", &raw.summary, micros, &note)?;
            }
            if let Some(sdk) = &self.sdk {
                row(
                    out,
                    "corral_client SDK, 1 connection",
                    &sdk.summary,
                    micros,
                    "(comparison)",
                )?;
            }
            if let Some(concurrent) = &self.concurrent {
                let label = format!("raw clients, {} connections at once", concurrent.clients);
                let note = format!("throughput {:.0} req/s", concurrent.throughput);
                row(out, &label, &concurrent.summary, micros, &note)?;
            }
        }

        if let Some(fan_out) = &self.fan_out {
            let title = format!("fan-out of 1 notification to {}", fan_out.listeners);
            header(out, &title, "ms")?;
            let note = format!(
                "p99 < {} ms: {}",
                TARGET_FAN_OUT_P99.as_millis(),
                verdict(fan_out.last.p99 < TARGET_FAN_OUT_P99)
            );
            row(out, "until the last front-end has it", &fan_out.last, millis, &note)?;
            row(out, "until half of them have it", &fan_out.median, millis, "")?;
            row(out, "until the first has it", &fan_out.first, millis, "")?;
        }

        self.print_cpu(out)?;

        if self.memory_start.is_some() {
            writeln!(out)?;
            writeln!(
                out,
                "{:<44} {:>9} {:>9}  target",
                "daemon memory, no servers (MiB)", "VmRSS", "VmHWM"
            )?;
        }
        let target_note = |memory: &Memory| {
            format!(
                "VmRSS < 15 MB ({} MiB): {}",
                mebibytes(TARGET_IDLE_RSS_BYTES),
                verdict(memory.rss < TARGET_IDLE_RSS_BYTES)
            )
        };
        if let Some(memory) = &self.memory_start {
            writeln!(
                out,
                "  {:<42} {:>9} {:>9}  {}",
                "idle, after start",
                mebibytes(memory.rss),
                mebibytes(memory.hwm),
                target_note(memory)
            )?;
        }
        if let Some((connections, memory)) = &self.memory_connected {
            writeln!(
                out,
                "  {:<42} {:>9} {:>9}",
                format!("{connections} front-ends connected"),
                mebibytes(memory.rss),
                mebibytes(memory.hwm)
            )?;
        }
        if let Some(memory) = &self.memory_after {
            writeln!(
                out,
                "  {:<42} {:>9} {:>9}  {}",
                "idle, after the load (connections closed)",
                mebibytes(memory.rss),
                mebibytes(memory.hwm),
                target_note(memory)
            )?;
        }

        if let Some(idle) = &self.idle_builtin {
            idle::print(out, idle)?;
        }

        if let Some(startup) = &self.startup {
            let title = format!("start-up, polled every {} ms", startup.poll.as_millis());
            header(out, &title, "ms")?;
            let note = format!(
                "< {} ms: {}",
                TARGET_ACCEPTING.as_millis(),
                verdict(startup.accepting.max < TARGET_ACCEPTING)
            );
            row(
                out,
                "spawn → socket accepts a connection",
                &startup.accepting,
                millis,
                &note,
            )?;
            row(
                out,
                "spawn → first `initialize` answered",
                &startup.initialized,
                millis,
                "",
            )?;
            row(out, "SIGTERM → process exited", &startup.shutdown, millis, "")?;
        }

        self.print_servers(out)?;
        Ok(())
    }

    /// The measurements with real MCP servers.
    fn print_servers(&self, out: &mut impl Write) -> std::io::Result<()> {
        if let Some(foreign) = self.foreign_peer_processes {
            writeln!(out)?;
            writeln!(
                out,
                "MCP servers under corrald ({foreign} processes of the same peers, not started by this run, were running when these began)"
            )?;
        }
        for comparison in &self.server_starts {
            print_start_comparison(out, comparison)?;
        }
        if let Some(stops) = &self.stops {
            print_stops(out, stops)?;
        }
        if let Some(memory) = &self.memory_per_server {
            print_memory_per_server(out, memory)?;
        }
        if let Some(calls) = &self.tool_calls {
            tool_call::print(out, calls)?;
        }
        if let Some(calls) = &self.http_calls {
            http_call::print(out, calls)?;
        }
        if let Some(calls) = &self.bridge_calls {
            bridge::print(out, calls)?;
        }
        if let Some(fleet) = &self.fleet {
            fleet::print(out, fleet)?;
        }
        if let Some(calls) = &self.oauth_calls {
            oauth_call::print(out, calls)?;
        }
        if let Some(logins) = &self.oauth_logins {
            oauth_login::print(out, logins)?;
        }
        if let Some(comparison) = &self.mcp_hub {
            mcp_hub::print(out, comparison)?;
        }
        if let Some(scale) = &self.scale {
            scale::print(out, scale)?;
        }
        if self.survivor_checks > 0 {
            writeln!(out)?;
            if self.survivors_after_daemon.is_empty() {
                writeln!(
                    out,
                    "no process of this run was alive after its daemon exited (checked after every daemon with servers)"
                )?;
            }
            for (what, survivor) in &self.survivors_after_daemon {
                writeln!(out, "WARNING: {what}: alive after its daemon exited: {survivor}")?;
            }
        }
        match &self.survivors_at_end {
            Some(found) if found.is_empty() => writeln!(out, "no process of this run is alive at the end")?,
            Some(found) => {
                for survivor in found {
                    writeln!(out, "WARNING: alive at the end, sent SIGKILL: {survivor}")?;
                }
            }
            None => {}
        }
        Ok(())
    }

    /// CPU time per operation: how much of a latency is work, and whose.
    fn print_cpu(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut rows: Vec<(String, usize, CpuUse)> = Vec::new();
        for (label, single) in [
            ("floor: do-nothing server, per request", &self.floor),
            ("raw client, 1 connection, per request", &self.raw),
            ("SDK, 1 connection, per request", &self.sdk),
        ] {
            if let Some(single) = single {
                rows.push((label.to_owned(), single.summary.count, single.cpu));
            }
        }
        if let Some(concurrent) = &self.concurrent {
            let label = format!("{} raw clients, per request", concurrent.clients);
            rows.push((label, concurrent.summary.count, concurrent.cpu));
        }
        if let Some(fan_out) = &self.fan_out {
            let label = format!("fan-out, per notification to {}", fan_out.listeners);
            rows.push((label, fan_out.last.count, fan_out.cpu));
        }
        if rows.is_empty() {
            return Ok(());
        }
        writeln!(out)?;
        writeln!(
            out,
            "{:<44} {:>9} {:>9}",
            "CPU time, user + system (µs)", "corrald", "benchmark"
        )?;
        for (label, count, cpu) in rows {
            let per = |total: Duration| micros(total / u32::try_from(count.max(1)).unwrap_or(u32::MAX));
            writeln!(
                out,
                "  {:<42} {:>9} {:>9}",
                label,
                cpu.daemon.map_or_else(|| "-".to_owned(), per),
                per(cpu.bench)
            )?;
        }
        Ok(())
    }
}

/// Median, min and max of one value over several runs.
fn spread(values: impl IntoIterator<Item = Duration>) -> Option<Summary> {
    let mut values: Vec<Duration> = values.into_iter().collect();
    Summary::of(&mut values)
}

/// One row of median / min / max over runs, in milliseconds.
fn spread_row(out: &mut impl Write, label: &str, values: Option<Summary>, note: &str) -> std::io::Result<()> {
    let Some(values) = values else {
        return Ok(());
    };
    let line = format!(
        "  {:<62} {:>9} {:>9} {:>9}  {note}",
        label,
        millis(values.p50),
        millis(values.min),
        millis(values.max)
    );
    writeln!(out, "{}", line.trim_end())
}

fn ratio(numerator: Duration, denominator: Duration) -> f64 {
    numerator.as_secs_f64() / denominator.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The ready time of a given rank among the servers of each run (0 = first, 0.5 = median, 1 = last).
fn ready_rank(runs: &[StartRun], fraction: f64) -> Option<Summary> {
    spread(runs.iter().filter_map(|run| {
        // Ranks are small (at most 99 servers), so the f64 round trip is exact.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let index = (fraction * (run.ready.len().saturating_sub(1)) as f64).round() as usize;
        run.ready.get(index).copied()
    }))
}

fn print_start_comparison(out: &mut impl Write, comparison: &StartComparison) -> std::io::Result<()> {
    let count = comparison.together.first().map_or(0, |run| run.servers);
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let info = comparison
        .alone
        .iter()
        .chain(&comparison.together)
        .find_map(|run| run.server_info.clone())
        .unwrap_or_else(|| "?".to_owned());
    writeln!(out)?;
    writeln!(
        out,
        "{:<64} {:>9} {:>9} {:>9}  target",
        format!(
            "start of {} ({info}), {} runs (ms)",
            comparison.peer.label(),
            comparison.alone.len()
        ),
        "median",
        "min",
        "max"
    )?;
    let alone = spread(comparison.alone.iter().map(StartRun::all_ready));
    let together = spread(comparison.together.iter().map(StartRun::all_ready));
    spread_row(out, "1 server: daemon spawn → ready", alone, "")?;
    spread_row(out, &format!("{count} servers: daemon spawn → all ready"), together, "")?;
    spread_row(
        out,
        &format!("{count} servers: daemon spawn → first ready"),
        ready_rank(&comparison.together, 0.0),
        "",
    )?;
    spread_row(
        out,
        &format!("{count} servers: daemon spawn → half ready"),
        ready_rank(&comparison.together, 0.5),
        "",
    )?;
    if let (Some(alone), Some(together)) = (alone, together) {
        let of_medians = ratio(together.p50, alone.p50);
        let per_run: Vec<f64> = comparison
            .alone
            .iter()
            .zip(&comparison.together)
            .map(|(alone, together)| ratio(together.all_ready(), alone.all_ready()))
            .collect();
        let low = per_run.iter().copied().fold(f64::INFINITY, f64::min);
        let high = per_run.iter().copied().fold(0.0, f64::max);
        writeln!(
            out,
            "  {:<62} {:>9} {:>9} {:>9}  < 2×: {}",
            format!("ratio {count} at once / 1 alone (× ; min, max per run)"),
            format!("{of_medians:.2}"),
            format!("{low:.2}"),
            format!("{high:.2}"),
            verdict(of_medians < 2.0)
        )?;
    }
    spread_row(
        out,
        "1 server: CPU of the server until ready",
        spread(comparison.alone.iter().map(|run| run.servers_cpu)),
        "",
    )?;
    spread_row(
        out,
        &format!("{count} servers: CPU of the servers until all ready, sum"),
        spread(comparison.together.iter().map(|run| run.servers_cpu)),
        "",
    )?;
    spread_row(
        out,
        &format!("  … ÷ {cpus} CPUs: the least wall time that CPU needs"),
        spread(
            comparison
                .together
                .iter()
                .map(|run| run.servers_cpu / u32::try_from(cpus).unwrap_or(1)),
        ),
        "",
    )?;
    spread_row(
        out,
        &format!("{count} servers: whole machine's CPU busy, all processes"),
        spread(comparison.together.iter().map(|run| run.machine_cpu.busy)),
        "",
    )?;
    spread_row(
        out,
        &format!("{count} servers: whole machine's CPU idle (+ iowait)"),
        spread(comparison.together.iter().map(|run| run.machine_cpu.idle)),
        "",
    )?;
    spread_row(
        out,
        &format!("{count} servers: CPU stolen by the hypervisor"),
        spread(comparison.together.iter().map(|run| run.machine_cpu.steal)),
        "",
    )?;
    spread_row(
        out,
        "1 server: CPU of corrald from spawn until ready (10 ms ticks)",
        spread(comparison.alone.iter().map(|run| run.daemon_cpu)),
        "",
    )?;
    spread_row(
        out,
        &format!("{count} servers: CPU of corrald from spawn until all ready"),
        spread(comparison.together.iter().map(|run| run.daemon_cpu)),
        "",
    )?;
    spread_row(
        out,
        "1 server: SIGTERM → corrald exited (server torn down)",
        spread(comparison.alone.iter().map(|run| run.shutdown)),
        "",
    )?;
    spread_row(
        out,
        &format!("{count} servers: SIGTERM → corrald exited (all torn down)"),
        spread(comparison.together.iter().map(|run| run.shutdown)),
        "",
    )?;
    let memory = |runs: &[StartRun], pick: fn(&StartRun) -> u64| -> String {
        let mut values: Vec<u64> = runs.iter().map(pick).collect();
        values.sort_unstable();
        values
            .get(values.len() / 2)
            .map_or_else(|| "-".to_owned(), |&bytes| mebibytes(bytes))
    };
    writeln!(
        out,
        "  when all were ready (MiB, median of runs): corrald VmRSS {} with 1 server, {} with {count};",
        memory(&comparison.alone, |run| run.daemon_memory.rss),
        memory(&comparison.together, |run| run.daemon_memory.rss),
    )?;
    writeln!(
        out,
        "    the servers' own VmRSS, summed (not corrald's): {} with 1 server, {} with {count}",
        memory(&comparison.alone, |run| run.servers_rss),
        memory(&comparison.together, |run| run.servers_rss),
    )?;
    Ok(())
}

fn print_stops(out: &mut impl Write, stops: &Stops) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "{:<44} {:>4} {:>9} {:>9} {:>9}  {:<31} expected",
        "mcpServer/stop → answer (ms)", "n", "p50", "max", "min", "gone at the answer"
    )?;
    for series in &stops.series {
        let mut latencies: Vec<Duration> = series.samples.iter().map(|sample| sample.latency).collect();
        let Some(summary) = Summary::of(&mut latencies) else {
            continue;
        };
        let count = series.samples.len();
        let gone = |test: fn(&servers::StopSample) -> bool| series.samples.iter().filter(|sample| test(sample)).count();
        let checks = format!(
            "pid {}/{count}, group {}/{count}, stopped {}/{count}",
            gone(|sample| sample.process_gone),
            gone(|sample| sample.group_gone),
            gone(|sample| sample.answered_stopped)
        );
        let (label, expected) = match series.peer {
            Peer::FixtureIgnoringSigterm => (
                "fixture --ignore-sigterm (needs SIGKILL)",
                "≈ 2500 (1 s after stdin close + 1.5 s after SIGTERM)",
            ),
            Peer::Everything => ("server-everything (exits on stdin close)", "well under 1000"),
            Peer::Fixture => ("fixture (exits on stdin close)", "well under 1000"),
        };
        writeln!(
            out,
            "  {:<42} {:>4} {:>9} {:>9} {:>9}  {:<31} {expected}",
            label,
            summary.count,
            millis(summary.p50),
            millis(summary.max),
            millis(summary.min),
            checks
        )?;
        let in_order: Vec<String> = series
            .samples
            .iter()
            .map(|sample| {
                format!(
                    "{} ({:.0})",
                    millis(sample.latency),
                    sample.ready_for.as_secs_f64() * 1e3
                )
            })
            .collect();
        writeln!(
            out,
            "    in the order measured (how long it had been ready, ms): {}",
            in_order.join(", ")
        )?;
    }
    Ok(())
}

/// `bytes` in KiB, signed.
#[allow(clippy::cast_precision_loss, reason = "memory sizes are far below 2^52 bytes")]
fn kibibytes(bytes: i64) -> String {
    format!("{:.0}", bytes as f64 / 1024.0)
}

fn print_memory_per_server(out: &mut impl Write, memory: &MemoryPerServer) -> std::io::Result<()> {
    const TARGET_PER_SERVER_BYTES: i64 = 1024 * 1024;
    let count = memory.servers;
    writeln!(out)?;
    writeln!(
        out,
        "{:<58} {:>9} {:>9}",
        format!("corrald memory with {count} × server-everything (MiB)"),
        "VmRSS",
        "VmHWM"
    )?;
    for (label, reading) in [
        ("no servers (empty config, 1 connection)".to_owned(), &memory.no_servers),
        (
            format!("{count} servers ready (fresh daemon, 1 connection)"),
            &memory.ready,
        ),
        (
            format!("{count} servers ready, {} s later", memory.settle.as_secs()),
            &memory.settled,
        ),
        (format!("after mcpServer/stop of all {count}"), &memory.stopped),
    ] {
        writeln!(
            out,
            "  {:<56} {:>9} {:>9}",
            label,
            mebibytes(reading.rss),
            mebibytes(reading.hwm)
        )?;
    }
    let per_server = memory.per_server();
    writeln!(
        out,
        "  {:<56} {:>9}            < 1 MiB (1024 KiB): {}",
        format!(
            "per server, (ready {} s later − none) / {count} (KiB)",
            memory.settle.as_secs()
        ),
        kibibytes(per_server),
        verdict(per_server < TARGET_PER_SERVER_BYTES)
    )?;
    writeln!(
        out,
        "  {:<56} {:>9}            (not corrald's memory)",
        format!("the {count} servers' own VmRSS, summed (MiB)"),
        mebibytes(memory.servers_rss)
    )?;
    Ok(())
}
