//! `tools/call` round trips to a real MCP server (server-everything's `echo`)
//! through corrald, next to the same calls without corrald: directly over the
//! server's pipes, and through a do-nothing relay ([`crate::relay`]), the
//! limit of any design with a daemon in the middle. Then many front-ends
//! calling at once next to the server's own pipelined ceiling and to the
//! shared relay (the limit of a daemon that puts many front-ends on one
//! server), and whether a long call on one connection delays short calls on
//! another.
//!
//! Four setups, each with a server-everything of its own but corrald's, in
//! the same run, round by round, taking turns of `--tool-turn` calls within
//! a round (so a burst of load on a shared
//! machine falls on all of them alike), the order rotated each round:
//! - direct: a raw MCP client (one JSON line per message, `serde_json` only)
//!   on the pipes of a server it spawned: the floor;
//! - relay: the same raw MCP client on the relay's socket;
//! - Corral: the raw client of measurement 1 on corrald's socket, Corral's
//!   `tools/call {server, name, arguments}`;
//! - rmcp: an `rmcp` client on the pipes of a server it spawned (what this
//!   measurement compared with before the relay; kept for continuity).
//!
//! What corrald and the relay add is each one's p50 (p99) minus the direct
//! one, per round; the goal of issue #13 is Corral's added ≤ 1.25 × the
//! relay's at p50 and ≤ 1.5 × at p99.
//!
//! The daemon is stopped with SIGTERM and looked after as in [`crate::servers`];
//! the direct servers are closed, waited for, and SIGKILLed here if still
//! there after [`EXIT_TIMEOUT`]; the relay is killed (its server ends with
//! its stdin). All carry this run's tag, so the final survivor check finds
//! them either way.

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
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::process::{ChildStdin, ChildStdout};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::bridge::{McpLines, check_echo};
use crate::cpu::{self, Disturbance, DisturbanceWatch, RoundsWanted};
use crate::peers::{Peer, Peers};
use crate::raw::{RawConnection, result_of};
use crate::relay::RelayProcess;
use crate::servers::{self, ServedDaemon};
use crate::stats::Summary;
use crate::survivors::{self, Survivor};

/// The server's name in the generated config.
pub(crate) const SERVER: &str = "everything";
/// `tools/call` params of every measured call.
const ECHO_PARAMS: &str = r#"{"server":"everything","name":"echo","arguments":{"message":"x"}}"#;
/// MCP `tools/call` params of the same call, straight to the server (direct and through the relay).
const MCP_ECHO_PARAMS: &str = r#"{"name":"echo","arguments":{"message":"x"}}"#;
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
/// Calls in flight at once on the direct server's pipes in the throughput ceiling.
pub(crate) const PIPELINE_DEPTH: usize = 16;
/// Corral's added latency over the relay's that issue #13 aims for, at p50 and at p99.
const GOAL_RATIO_P50: f64 = 1.25;
const GOAL_RATIO_P99: f64 = 1.5;
/// Corral's throughput with many front-ends as a share of the direct pipelined ceiling (issue #13).
const GOAL_THROUGHPUT_SHARE: f64 = 0.80;

/// What the phase can be asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Unmeasured calls per setup before the first round.
    pub(crate) warmup: usize,
    /// Measured calls per setup and round.
    pub(crate) requests: usize,
    /// Rounds (each setup once per round; also the throughput rounds).
    pub(crate) rounds: usize,
    /// Calls a setup makes in a row before the next one takes its turn, within a round.
    pub(crate) turn: usize,
    pub(crate) clients: usize,
    pub(crate) client_warmup: usize,
    pub(crate) client_requests: usize,
    pub(crate) long_call: Duration,
}

/// Latencies of one loop and the CPU time spent during it.
#[derive(Debug)]
pub(crate) struct Timed {
    pub(crate) samples: Vec<Duration>,
    /// corrald's CPU time (`None` for the direct client).
    pub(crate) daemon_cpu: Option<Duration>,
    /// The server process's CPU time (server-everything on Node).
    pub(crate) server_cpu: Duration,
    /// This process's CPU time.
    pub(crate) bench_cpu: Duration,
}

/// The setups of the comparison, in the order of the first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setup {
    Direct,
    Relay,
    Corral,
    Rmcp,
}

impl Setup {
    const ALL: [Self; 4] = [Self::Direct, Self::Relay, Self::Corral, Self::Rmcp];

    fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct: raw MCP client → server's pipes",
            Self::Relay => "relay: raw MCP client → relay → server",
            Self::Corral => "Corral: raw client → corrald → server",
            Self::Rmcp => "rmcp client → server's pipes (earlier baseline)",
        }
    }
}

/// One setup's samples, round by round, and the CPU time of its processes.
#[derive(Debug, Default)]
pub(crate) struct Series {
    /// The samples of each round.
    pub(crate) rounds: Vec<Vec<Duration>>,
    /// Calls made but not timed: the first of each turn, which finds the setup idle.
    pub(crate) untimed: usize,
    /// corrald's or the relay's CPU time over all rounds (`None`: no process in the middle).
    pub(crate) middle_cpu: Option<Duration>,
    pub(crate) server_cpu: Duration,
    pub(crate) bench_cpu: Duration,
}

impl Series {
    /// Every call made (the CPU time is of them all): the timed ones of every round, and the
    /// first of each turn, untimed.
    fn calls(&self) -> usize {
        self.rounds.iter().map(Vec::len).sum::<usize>() + self.untimed
    }

    /// p50 and p99 of each undisturbed round ([`cpu::kept_rounds`]).
    fn per_round(&self, disturbances: &[Disturbance]) -> Vec<Summary> {
        cpu::kept_rounds(&self.rounds, disturbances)
            .filter_map(|round| Summary::of(&mut round.clone()))
            .collect()
    }
}

/// One round of the throughput comparison.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ThroughputRound {
    /// Calls/s of one raw client with [`PIPELINE_DEPTH`] calls in flight on its server's pipes.
    pub(crate) direct_pipelined: f64,
    /// Calls/s of `options.clients` raw connections to corrald at once.
    pub(crate) corral: f64,
    /// Calls/s of `options.clients` raw MCP connections to the shared relay at once.
    pub(crate) shared_relay: f64,
    /// What else used the machine during the round.
    pub(crate) disturbance: Disturbance,
}

/// Everything the phase measured.
#[derive(Debug)]
pub(crate) struct ToolCalls {
    pub(crate) options: Options,
    /// `name version` the server gave at `initialize`, as corrald reports it.
    pub(crate) server_info: Option<String>,
    /// The four setups, in the order of [`Setup::ALL`].
    pub(crate) setups: [Series; 4],
    /// `options.clients` raw connections at once, all samples of all rounds.
    pub(crate) concurrent: Timed,
    /// The same through the shared relay (`daemon_cpu`: the relay's).
    pub(crate) concurrent_shared: Timed,
    /// What else used the machine during each latency round.
    pub(crate) disturbances: Vec<Disturbance>,
    /// The throughput rounds.
    pub(crate) throughput: Vec<ThroughputRound>,
    /// Echo calls on one connection with nothing else going on, for `options.long_call`.
    pub(crate) echo_alone: Vec<Duration>,
    /// Echo calls on one connection while a long call runs on another.
    pub(crate) echo_beside_long: Vec<Duration>,
    /// Sent → answered, of the long call.
    pub(crate) long_call_took: Duration,
    /// How the direct servers and the relay ended.
    pub(crate) exits: Vec<String>,
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
async fn timed_echoes(connection: &mut impl Echoes, count: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        connection.echo_once().await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// A connection of the throughput comparison: one checked echo call at a time.
trait Echoes: Send + 'static {
    fn echo_once(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl Echoes for RawConnection {
    fn echo_once(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send {
        echo(self)
    }
}

impl Echoes for McpLines<OwnedReadHalf, OwnedWriteHalf> {
    fn echo_once(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send {
        self.echo_with(MCP_ECHO_PARAMS)
    }
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
    /// What was spent from `before` to this reading.
    fn since(&self, before: &Self) -> Self {
        Self {
            daemon: self
                .daemon
                .zip(before.daemon)
                .map(|(now, then)| now.saturating_sub(then)),
            server: self.server.saturating_sub(before.server),
            bench: self.bench.saturating_sub(before.bench),
        }
    }

    /// The reading of a (middle, server) pair of pids.
    fn of((middle, server): (u32, u32)) -> anyhow::Result<Self> {
        Self::take(Some(middle), server)
    }

    fn take(daemon_pid: Option<u32>, server_pid: u32) -> anyhow::Result<Self> {
        Ok(Self {
            daemon: daemon_pid.map(|pid| cpu::process_cpu(&pid.to_string())).transpose()?,
            server: cpu::process_cpu(&server_pid.to_string())?,
            bench: cpu::process_cpu("self")?,
        })
    }
}

/// The clients of the four setups, and the processes behind them.
struct Clients {
    direct: DirectRaw,
    relay: McpLines<OwnedReadHalf, OwnedWriteHalf>,
    corral: RawConnection,
    rmcp: DirectClient,
    /// (corrald, its server), (the relay, its server).
    pids: Pids,
}

#[derive(Debug, Clone, Copy)]
struct Pids {
    daemon: u32,
    daemon_server: u32,
    relay: u32,
    relay_server: u32,
}

impl Clients {
    async fn echo(&mut self, setup: Setup) -> anyhow::Result<()> {
        match setup {
            Setup::Direct => self.direct.client.echo_with(MCP_ECHO_PARAMS).await,
            Setup::Relay => self.relay.echo_with(MCP_ECHO_PARAMS).await,
            Setup::Corral => echo(&mut self.corral).await,
            Setup::Rmcp => self.rmcp.echo().await,
        }
    }

    /// (the process in the middle, if any; the server) of `setup`.
    fn pids(&self, setup: Setup) -> (Option<u32>, u32) {
        match setup {
            Setup::Direct => (None, self.direct.pid),
            Setup::Relay => (Some(self.pids.relay), self.pids.relay_server),
            Setup::Corral => (Some(self.pids.daemon), self.pids.daemon_server),
            Setup::Rmcp => (None, self.rmcp.pid),
        }
    }
}

/// The whole phase: a daemon with one server-everything; a direct one, a relay and an rmcp one beside it.
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
    let daemon_pid = served.daemon.pid();
    let socket = served.daemon.socket_path().to_path_buf();

    // 1. The four setups, round by round.
    let connection = RawConnection::connect(&socket, "corral-bench-tool-call").await?;
    let relay = RelayProcess::start("node", &[peers.everything(), Path::new("stdio")]).await?;
    let started = start_beside(peers, &relay).await;
    let (direct, relay_client, rmcp) = match started {
        Ok(started) => started,
        Err(error) => {
            relay.stop().await;
            return Err(error);
        }
    };
    let mut clients = Clients {
        direct,
        relay: relay_client,
        corral: connection,
        rmcp,
        pids: Pids {
            daemon: daemon_pid,
            daemon_server: server_pid,
            relay: relay.pid,
            relay_server: 0,
        },
    };
    let compared = match relay.server_pid() {
        Ok(pid) => {
            clients.pids.relay_server = pid;
            rounds(&mut clients, options).await
        }
        Err(error) => Err(error),
    };

    // 2. Throughput: many front-ends on corrald and on the shared relay vs the direct
    // server's pipelined ceiling.
    let (throughput, shared_exit) = match compared {
        Ok(_) => match RelayProcess::start_shared("node", &[peers.everything(), Path::new("stdio")]).await {
            Ok(shared) => {
                let measured = throughput(&socket, &mut clients, &shared, options).await;
                (measured.map(Some), Some(shared.stop().await))
            }
            Err(error) => (Err(error), None),
        },
        Err(_) => (Ok(None), None),
    };
    let Clients {
        direct,
        relay: relay_client,
        corral: mut connection,
        rmcp,
        ..
    } = clients;
    drop(relay_client);
    let mut exits = vec![
        format!("direct server: {}", direct.close().await),
        format!("rmcp's server: {}", rmcp.close().await),
        format!("relay: {}", relay.stop().await),
    ];
    exits.extend(shared_exit.map(|exit| format!("shared relay: {exit}")));
    let (setups, disturbances) = compared?;
    let (concurrent, concurrent_shared, throughput) = throughput?.context("no throughput without the rounds")?;

    // 3. Echo alone, then beside a long call on another connection.
    let echo_alone = echoes_for(&mut connection, options.long_call, None).await?;
    let (echo_beside_long, long_call_took) = beside_long_call(&socket, &mut connection, options.long_call).await?;

    drop(connection);
    let (_, survivors) = served.stop().await?;
    Ok(ToolCalls {
        options,
        server_info,
        setups,
        concurrent,
        concurrent_shared,
        disturbances,
        throughput,
        echo_alone,
        echo_beside_long,
        long_call_took,
        exits,
        survivors,
    })
}

/// The direct raw client, the relay's client and the rmcp client, each with a server of its own.
async fn start_beside(
    peers: &Peers,
    relay: &RelayProcess,
) -> anyhow::Result<(DirectRaw, McpLines<OwnedReadHalf, OwnedWriteHalf>, DirectClient)> {
    let direct = DirectRaw::start(peers.everything()).await?;
    let relay_client = match relay.connect("corral-bench-relay").await {
        Ok(client) => client,
        Err(error) => {
            direct.close().await;
            return Err(error);
        }
    };
    match DirectClient::start(peers.everything()).await {
        Ok(rmcp) => Ok((direct, relay_client, rmcp)),
        Err(error) => {
            direct.close().await;
            Err(error)
        }
    }
}

/// Warm-up on every setup, then `options.rounds` rounds of `options.requests` calls per setup,
/// the setups taking turns of `options.turn` calls, their order rotated by one each round; a disturbed round is run again, up to as many more
/// rounds in all. The process in the middle and each server work only in their own setup's
/// blocks, so their CPU time is read once around everything; the benchmark's own is summed
/// per block.
async fn rounds(clients: &mut Clients, options: Options) -> anyhow::Result<([Series; 4], Vec<Disturbance>)> {
    for _ in 0..options.warmup {
        for setup in Setup::ALL {
            clients.echo(setup).await?;
        }
    }
    let mut series: [Series; 4] = Default::default();
    let mut before = Vec::new();
    for setup in Setup::ALL {
        let (middle, server) = clients.pids(setup);
        before.push(CpuReading::take(middle, server)?);
    }
    let mut wanted = RoundsWanted::new(options.rounds);
    let mut disturbances: Vec<Disturbance> = Vec::new();
    while let Some(round) = wanted.next() {
        let watch = DisturbanceWatch::start()?;
        // The setups take turns of `options.turn` calls (the order rotated each round),
        // so a burst of load on the machine falls on all of them alike.
        let order: Vec<usize> = (0..Setup::ALL.len())
            .map(|step| (round + step) % Setup::ALL.len())
            .collect();
        let mut samples: [Vec<Duration>; 4] = Default::default();
        let mut done = 0;
        while done < options.requests {
            let block = options.turn.min(options.requests - done);
            for &index in &order {
                let bench = cpu::process_cpu("self")?;
                // The turn's first call finds its processes idle: made, not timed, so that
                // the percentiles are of calls in a row as before the turns (1 % of the
                // samples would otherwise be such calls, right at p99).
                clients.echo(Setup::ALL[index]).await?;
                series[index].untimed += 1;
                for _ in 0..block {
                    let sent = Instant::now();
                    clients.echo(Setup::ALL[index]).await?;
                    samples[index].push(sent.elapsed());
                }
                series[index].bench_cpu += cpu::process_cpu("self")?.saturating_sub(bench);
            }
            done += block;
        }
        for (series, samples) in series.iter_mut().zip(samples) {
            series.rounds.push(samples);
        }
        let disturbance = watch.stop()?;
        wanted.ran("tool-call", &disturbance);
        disturbances.push(disturbance);
    }
    for ((setup, series), before) in Setup::ALL.into_iter().zip(&mut series).zip(before) {
        let (middle, server) = clients.pids(setup);
        let spent = CpuReading::take(middle, server)?.since(&before);
        series.middle_cpu = spent.daemon;
        series.server_cpu = spent.server;
    }
    Ok((series, disturbances))
}

/// Rounds of: one raw client with [`PIPELINE_DEPTH`] calls in flight on the direct server's
/// pipes, `options.clients` raw connections to corrald at once, and as many raw MCP
/// connections to the shared relay at once (the order rotated each round), the same number
/// of calls each. The samples and CPU time of corrald's side and of the shared relay's.
async fn throughput(
    socket: &Path,
    clients: &mut Clients,
    shared: &RelayProcess,
    options: Options,
) -> anyhow::Result<(Timed, Timed, Vec<ThroughputRound>)> {
    let calls = options.clients * options.client_requests;
    let mut connections = Vec::with_capacity(options.clients);
    let mut shared_connections = Vec::with_capacity(options.clients);
    for index in 0..options.clients {
        let mut connection = RawConnection::connect(socket, &format!("corral-bench-tool-call-{index}")).await?;
        let mut shared_connection = shared.connect(&format!("corral-bench-shared-relay-{index}")).await?;
        for _ in 0..options.client_warmup {
            echo(&mut connection).await?;
            shared_connection.echo_once().await?;
        }
        connections.push(connection);
        shared_connections.push(shared_connection);
    }
    // The direct ceiling's warm-up.
    clients
        .direct
        .pipelined(options.client_warmup * options.clients)
        .await?;
    let pids = [
        (clients.pids.daemon, clients.pids.daemon_server),
        (shared.pid, shared.server_pid()?),
    ];
    let mut timed = pids.map(|_| Timed {
        samples: Vec::with_capacity(calls * options.rounds),
        daemon_cpu: Some(Duration::ZERO),
        server_cpu: Duration::ZERO,
        bench_cpu: Duration::ZERO,
    });
    let mut rounds: Vec<ThroughputRound> = Vec::new();
    let mut wanted = RoundsWanted::new(options.rounds);
    // Each round's samples, corrald's and the shared relay's, pooled once the round is known
    // undisturbed (all of them, when none is).
    let mut round_samples: Vec<[Vec<Duration>; 2]> = Vec::new();
    while let Some(round) = wanted.next() {
        let watch = DisturbanceWatch::start()?;
        let mut this_round: [Vec<Duration>; 2] = Default::default();
        let mut per_second_of = [0.0; 3];
        for step in 0..per_second_of.len() {
            let setup = (round + step) % per_second_of.len();
            // corrald's or the shared relay's side: (its index, its pids, CPU time before).
            let middle = match setup {
                0 => None,
                _ => Some((setup - 1, CpuReading::of(pids[setup - 1])?)),
            };
            let (samples, took) = match setup {
                0 => (Vec::new(), clients.direct.pipelined(calls).await?),
                1 => {
                    let (back, samples, took) = concurrent(std::mem::take(&mut connections), options).await?;
                    connections = back;
                    (samples, took)
                }
                _ => {
                    let (back, samples, took) = concurrent(std::mem::take(&mut shared_connections), options).await?;
                    shared_connections = back;
                    (samples, took)
                }
            };
            per_second_of[setup] = per_second(calls, took);
            if let Some((index, before)) = middle {
                let spent = CpuReading::of(pids[index])?.since(&before);
                let timed = &mut timed[index];
                this_round[index] = samples;
                timed.daemon_cpu = timed.daemon_cpu.map(|cpu| cpu + spent.daemon.unwrap_or_default());
                timed.server_cpu += spent.server;
                timed.bench_cpu += spent.bench;
            }
        }
        let [direct_pipelined, corral, shared_relay] = per_second_of;
        let disturbance = watch.stop()?;
        wanted.ran("tool-call throughput", &disturbance);
        round_samples.push(this_round);
        rounds.push(ThroughputRound {
            direct_pipelined,
            corral,
            shared_relay,
            disturbance,
        });
    }
    let disturbances: Vec<Disturbance> = rounds.iter().map(|round| round.disturbance).collect();
    for [corral, shared] in cpu::kept_rounds(&round_samples, &disturbances) {
        timed[0].samples.extend_from_slice(corral);
        timed[1].samples.extend_from_slice(shared);
    }
    let [corral, shared_relay] = timed;
    Ok((corral, shared_relay, rounds))
}

#[allow(clippy::cast_precision_loss, reason = "a call count is far below 2^52")]
fn per_second(calls: usize, took: Duration) -> f64 {
    calls as f64 / took.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// A raw MCP client on the pipes of a server-everything it spawned.
pub(crate) struct DirectRaw {
    child: tokio::process::Child,
    client: McpLines<ChildStdout, ChildStdin>,
    pid: u32,
}

impl DirectRaw {
    pub(crate) async fn start(everything: &Path) -> anyhow::Result<Self> {
        let mut child = tokio::process::Command::new("node")
            .arg(everything)
            .arg("stdio")
            .env(survivors::RUN_TAG_VAR, survivors::run_tag())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting server-everything for the direct raw client")?;
        let pid = child.id().context("the direct server has no pid")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the direct server has no pipes");
        };
        let mut direct = Self {
            child,
            client: McpLines::new(stdout, stdin),
            pid,
        };
        if let Err(error) = crate::bridge::bounded_answer(direct.client.initialize("corral-bench-direct")).await {
            direct.close().await;
            return Err(error).context("initializing the direct server");
        }
        Ok(direct)
    }

    /// `calls` echo calls with [`PIPELINE_DEPTH`] in flight at once; how long they took.
    async fn pipelined(&mut self, calls: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut sent = 0;
        let mut answered = 0;
        let mut first_waiting = self.client.next_id();
        while sent < calls.min(PIPELINE_DEPTH) {
            self.client.send("tools/call", Some(MCP_ECHO_PARAMS)).await?;
            sent += 1;
        }
        while answered < calls {
            let line = self.client.next_line().await?;
            // Answers come in order of the requests here (one Node server, one pipe).
            let Some(result) = result_of(line, "tools/call", first_waiting, "the direct server")? else {
                continue;
            };
            check_echo(result)?;
            answered += 1;
            first_waiting += 1;
            if sent < calls {
                self.client.send("tools/call", Some(MCP_ECHO_PARAMS)).await?;
                sent += 1;
            }
        }
        Ok(started.elapsed())
    }

    /// Close its stdin; wait for it to exit, SIGKILL it after [`EXIT_TIMEOUT`].
    /// One `tools/call` of `echo`, its answer checked.
    pub(crate) async fn echo(&mut self) -> anyhow::Result<()> {
        let result = self.client.call("tools/call", Some(MCP_ECHO_PARAMS)).await?;
        if !result.contains(ECHO_TEXT) || result.contains(r#""isError":true"#) {
            bail!("server-everything's `echo` answered {result}");
        }
        Ok(())
    }

    /// Close its stdin; it exits, or is killed after [`EXIT_TIMEOUT`]: how it went, in words.
    pub(crate) async fn close(self) -> String {
        let Self { mut child, client, pid } = self;
        drop(client);
        let started = Instant::now();
        match tokio::time::timeout(EXIT_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) => format!(
                "exited ({status}) {:.0} ms after its stdin closed",
                started.elapsed().as_secs_f64() * 1e3
            ),
            Ok(Err(error)) => format!("pid {pid} could not be waited for: {error}"),
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

/// `connections` calling echo at once, each `options.client_requests` times; the connections
/// back, all samples, and the wall time until the last finished.
async fn concurrent<C: Echoes>(
    connections: Vec<C>,
    options: Options,
) -> anyhow::Result<(Vec<C>, Vec<Duration>, Duration)> {
    let barrier = Arc::new(Barrier::new(connections.len() + 1));
    let mut tasks = JoinSet::new();
    for mut connection in connections {
        let barrier = Arc::clone(&barrier);
        let requests = options.client_requests;
        tasks.spawn(async move {
            barrier.wait().await;
            let samples = timed_echoes(&mut connection, requests).await?;
            anyhow::Ok((connection, samples, Instant::now()))
        });
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut samples = Vec::with_capacity(options.clients * options.client_requests);
    let mut finished = started;
    let mut connections = Vec::with_capacity(options.clients);
    while let Some(joined) = tasks.join_next().await {
        let (connection, mut some, at) = joined.context("a concurrent client panicked")??;
        connections.push(connection);
        samples.append(&mut some);
        finished = finished.max(at);
    }
    Ok((connections, samples, finished - started))
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

/// The median of `values` (sorted in place); 0 when empty.
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        f64::midpoint(values[middle - 1], values[middle])
    }
}

fn us(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// Per-round p50 and p99 of a setup, in µs.
struct Rounds {
    p50: Vec<f64>,
    p99: Vec<f64>,
}

impl Rounds {
    fn of(series: &Series, disturbances: &[Disturbance]) -> Self {
        let summaries = series.per_round(disturbances);
        Self {
            p50: summaries.iter().map(|summary| us(summary.p50)).collect(),
            p99: summaries.iter().map(|summary| us(summary.p99)).collect(),
        }
    }

    fn median_p50(&self) -> f64 {
        median(&mut self.p50.clone())
    }

    fn median_p99(&self) -> f64 {
        median(&mut self.p99.clone())
    }
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|value| format!("{value:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The report of the phase.
pub(crate) fn print(out: &mut impl Write, calls: &ToolCalls) -> std::io::Result<()> {
    let options = &calls.options;
    writeln!(out)?;
    writeln!(
        out,
        "tools/call echo {{message:\"x\"}}, {}: {} rounds of {} calls per setup in turns of {} after {} warm-up calls (µs)",
        calls.server_info.as_deref().unwrap_or("server-everything"),
        options.rounds,
        options.requests,
        options.turn,
        options.warmup
    )?;
    writeln!(
        out,
        "  {:<50} {:>9} {:>9}  {:<30} p99 per round",
        "(p50 and p99: medians of the rounds)", "p50", "p99", "p50 per round"
    )?;
    writeln!(out, "  {}", cpu::rounds_line(&calls.disturbances))?;
    let rounds: Vec<Rounds> = calls
        .setups
        .iter()
        .map(|series| Rounds::of(series, &calls.disturbances))
        .collect();
    for (setup, rounds) in Setup::ALL.into_iter().zip(&rounds) {
        writeln!(
            out,
            "  {:<50} {:>9.1} {:>9.1}  {:<30} {}",
            setup.label(),
            rounds.median_p50(),
            rounds.median_p99(),
            list(&rounds.p50),
            list(&rounds.p99)
        )?;
    }
    let [direct, relay, corral, _] = [0, 1, 2, 3].map(|index| &rounds[index]);
    let added = |above: &Rounds, percentile: fn(&Rounds) -> f64| percentile(above) - percentile(direct);
    let (relay_p50, relay_p99) = (added(relay, Rounds::median_p50), added(relay, Rounds::median_p99));
    let (corral_p50, corral_p99) = (added(corral, Rounds::median_p50), added(corral, Rounds::median_p99));
    writeln!(
        out,
        "  {:<50} {:>+9.1} {:>+9.1}",
        "relay adds over direct", relay_p50, relay_p99
    )?;
    writeln!(
        out,
        "  {:<50} {:>+9.1} {:>+9.1}",
        "Corral adds over direct", corral_p50, corral_p99
    )?;
    // No ratio when the relay added nothing (a disturbed round): shown as NaN, never met.
    let ratio = |corral: f64, relay: f64| if relay > 0.0 { corral / relay } else { f64::NAN };
    let per_round_ratio = |percentile: fn(&Rounds) -> &Vec<f64>| {
        let ratios: Vec<f64> = (0..percentile(direct)
            .len()
            .min(percentile(relay).len())
            .min(percentile(corral).len()))
            .map(|round| {
                let floor = percentile(direct)[round];
                ratio(percentile(corral)[round] - floor, percentile(relay)[round] - floor)
            })
            .collect();
        ratios
            .iter()
            .map(|value| format!("{value:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (p50_ratio, p99_ratio) = (ratio(corral_p50, relay_p50), ratio(corral_p99, relay_p99));
    writeln!(
        out,
        "  {:<50} {:>8.2}× {:>8.2}×  goal ≤ {GOAL_RATIO_P50}× at p50: {}, ≤ {GOAL_RATIO_P99}× at p99: {}",
        "Corral added / relay added",
        p50_ratio,
        p99_ratio,
        verdict(p50_ratio <= GOAL_RATIO_P50),
        verdict(p99_ratio <= GOAL_RATIO_P99),
    )?;
    writeln!(
        out,
        "  {:<50} p50: {}; p99: {}",
        "… per round",
        per_round_ratio(|rounds| &rounds.p50),
        per_round_ratio(|rounds| &rounds.p99)
    )?;

    writeln!(out)?;
    let throughput_disturbances: Vec<Disturbance> = calls.throughput.iter().map(|round| round.disturbance).collect();
    let of_kept = |value: fn(&ThroughputRound) -> f64| -> Vec<f64> {
        cpu::kept_rounds(&calls.throughput, &throughput_disturbances)
            .map(value)
            .collect()
    };
    let mut direct_pipelined = of_kept(|round| round.direct_pipelined);
    let mut corral_calls = of_kept(|round| round.corral);
    let mut shared_calls = of_kept(|round| round.shared_relay);
    writeln!(
        out,
        "tools/call throughput, {} rounds of {} calls each (calls/s)",
        options.rounds,
        options.clients * options.client_requests
    )?;
    writeln!(out, "  {}", cpu::rounds_line(&throughput_disturbances))?;
    for (label, values) in [
        (
            format!("direct, one client, {PIPELINE_DEPTH} calls in flight on the pipes"),
            &direct_pipelined,
        ),
        (
            format!("Corral, {} raw connections at once", options.clients),
            &corral_calls,
        ),
        (
            format!("shared relay, {} raw MCP connections at once", options.clients),
            &shared_calls,
        ),
    ] {
        writeln!(
            out,
            "  {label:<50} {:>9.0}  rounds: {}",
            median(&mut values.clone()),
            list(values)
        )?;
    }
    let ceiling = median(&mut direct_pipelined).max(f64::MIN_POSITIVE);
    let share = median(&mut corral_calls) / ceiling;
    writeln!(
        out,
        "  {:<50} {:>8.0} %  goal ≥ {:.0} %: {}",
        "Corral / direct pipelined ceiling",
        share * 100.0,
        GOAL_THROUGHPUT_SHARE * 100.0,
        verdict(share >= GOAL_THROUGHPUT_SHARE)
    )?;
    let shared_share = median(&mut shared_calls) / ceiling;
    writeln!(
        out,
        "  {:<50} {:>8.0} %  (Corral / shared relay: {:.0} %)",
        "shared relay / direct pipelined ceiling",
        shared_share * 100.0,
        100.0 * share / shared_share.max(f64::MIN_POSITIVE)
    )?;
    writeln!(
        out,
        "  {:<50} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "n", "p50", "p90", "p99", "max", "mean"
    )?;
    let mut concurrent = calls.concurrent.samples.clone();
    if let Some(summary) = Summary::of(&mut concurrent) {
        row(
            out,
            &format!("{} raw connections at once, per call", options.clients),
            &summary,
            "",
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
        "{:<52} {:>16} {:>9} {:>9}",
        "tools/call CPU time per call, user + system (µs)", "corrald or relay", "server", "benchmark"
    )?;
    // One row: the label, then the CPU of the middle (if any), the server and the benchmark.
    let mut cpu_row = |label: &str, cpu: [Option<Duration>; 3], count: usize| {
        let [middle, server, bench] = cpu.map(|cpu| cpu.map_or_else(|| "-".to_owned(), |cpu| per_call(cpu, count)));
        writeln!(out, "  {label:<50} {middle:>16} {server:>9} {bench:>9}")
    };
    for (setup, series) in Setup::ALL.into_iter().zip(&calls.setups) {
        let cpu = [series.middle_cpu, Some(series.server_cpu), Some(series.bench_cpu)];
        cpu_row(setup.label(), cpu, series.calls())?;
    }
    for (label, timed) in [
        ("Corral", &calls.concurrent),
        ("shared relay", &calls.concurrent_shared),
    ] {
        let cpu = [timed.daemon_cpu, Some(timed.server_cpu), Some(timed.bench_cpu)];
        cpu_row(
            &format!("{label}, {} connections at once", options.clients),
            cpu,
            timed.samples.len(),
        )?;
    }
    for exit in &calls.exits {
        writeln!(out, "  {exit}")?;
    }
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
