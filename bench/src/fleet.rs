//! Many MCP clients at once, two ways: each through its own `corral mcp`
//! to one daemon that runs one shared server-everything, or each with a
//! server-everything of its own (what users of several MCP clients run
//! today: every client spawns every server).
//!
//! For each setup, [`Options::clients`] clients call `echo` in a closed
//! loop, all at once, for [`Options::duration`] after a warm-up: calls per
//! second (all clients together) and the latency of every call. Then the
//! processes each setup keeps running for those clients, and their memory:
//! `VmRSS` summed (which counts shared pages once per process) and `Pss`
//! summed (shared pages split between the processes that map them: the
//! setup's real cost). The clients themselves (in this process) are the
//! same in both setups and are not counted.
//!
//! Every answer is checked; every process is tagged with the run's tag, so
//! the survivor check finds any left behind.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::task::JoinSet;

use crate::bridge::Bridge;
use crate::daemon::Memory;
use crate::peers::{Peer, Peers};
use crate::servers::{self, ServedDaemon};
use crate::stats::Summary;
use crate::survivors::Survivor;
use crate::tool_call::{DirectClient, SERVER};

/// What the phase can be asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Clients at once, in each setup.
    pub(crate) clients: usize,
    /// Calls per client before measuring.
    pub(crate) warmup: usize,
    /// How long every client calls, in each setup.
    pub(crate) duration: Duration,
}

/// One process a setup runs for its clients.
#[derive(Debug, Clone)]
pub(crate) struct Process {
    pub(crate) what: &'static str,
    pub(crate) memory: Memory,
    /// Proportional set size: its own pages, and its share of pages it shares.
    pub(crate) pss: u64,
}

/// What one setup measured.
#[derive(Debug, Default)]
pub(crate) struct Setup {
    pub(crate) samples: Vec<Duration>,
    /// From the first call of the measured loop to the last answer.
    pub(crate) elapsed: Duration,
    /// Processes kept for the clients, read after the calls.
    pub(crate) processes: Vec<Process>,
}

/// Everything the phase measured.
#[derive(Debug)]
pub(crate) struct Fleet {
    pub(crate) options: Options,
    pub(crate) corral: Setup,
    pub(crate) direct: Setup,
    pub(crate) survivors: Vec<Survivor>,
}

/// A client of either setup: one `echo` at a time.
trait Echo: Send + 'static {
    fn echo(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

impl Echo for Bridge {
    async fn echo(&mut self) -> anyhow::Result<()> {
        self.client.echo().await
    }
}

impl Echo for DirectClient {
    async fn echo(&mut self) -> anyhow::Result<()> {
        DirectClient::echo(self).await
    }
}

/// Warm every client up, then let them all call for `duration` at once.
/// Returns the clients (to be closed by the caller), the samples and the elapsed time.
async fn run<C: Echo>(clients: Vec<C>, options: Options) -> anyhow::Result<(Vec<C>, Vec<Duration>, Duration)> {
    let mut tasks = JoinSet::new();
    let start = Instant::now() + Duration::from_millis(200);
    for mut client in clients {
        let warmup = options.warmup;
        let duration = options.duration;
        tasks.spawn(async move {
            for _ in 0..warmup {
                client.echo().await?;
            }
            tokio::time::sleep_until(start.into()).await;
            let end = start + duration;
            let mut samples = Vec::new();
            while Instant::now() < end {
                let sent = Instant::now();
                client.echo().await?;
                samples.push(sent.elapsed());
            }
            anyhow::Ok((client, samples, Instant::now()))
        });
    }
    let mut clients = Vec::new();
    let mut samples = Vec::new();
    let mut last = start;
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a client task failed") {
            Ok(Ok((client, mut own, finished))) => {
                clients.push(client);
                samples.append(&mut own);
                last = last.max(finished);
            }
            Ok(Err(error)) | Err(error) => failure = Some(error),
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    Ok((clients, samples, last.saturating_duration_since(start)))
}

/// `Pss` of `pid`, in bytes, from `/proc/PID/smaps_rollup`.
fn pss(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no Pss in {path}"))?;
    Ok(kib * 1024)
}

fn process(what: &'static str, pid: u32) -> anyhow::Result<Process> {
    Ok(Process {
        what,
        memory: Memory::of(pid)?,
        pss: pss(pid)?,
    })
}

/// The whole phase: the Corral setup, then the direct one.
pub(crate) async fn measure(corrald: &Path, corral: &Path, peers: &Peers, options: Options) -> anyhow::Result<Fleet> {
    if options.clients == 0 {
        bail!("the fleet measurement needs at least one client");
    }
    let config = peers.config([(SERVER, Peer::Everything)]);
    let mut served = ServedDaemon::start(corrald, &config, 1).await?;
    let names = [SERVER.to_owned()].into_iter().collect();
    let ready = servers::poll_until_ready(&mut served.connection, &names).await?;
    let server_pid = ready[SERVER].pid.context("the ready server has no pid")?;
    let daemon_pid = served.daemon.pid();
    let socket = served.daemon.socket_path().to_path_buf();

    let mut bridges = Vec::with_capacity(options.clients);
    for index in 0..options.clients {
        let mut bridge = Bridge::spawn(corral, &socket)?;
        let name = format!("corral-bench-fleet-{index}");
        if let Err(error) = crate::bridge::bounded_answer(bridge.client.initialize(&name)).await {
            let exit = bridge.close().await;
            return Err(error).context(format!("`corral mcp` {index} did not initialize; it {exit}"));
        }
        bridges.push(bridge);
    }
    let pids: Vec<u32> = bridges.iter().map(|bridge| bridge.pid).collect();
    let (bridges, samples, elapsed) = run(bridges, options).await?;
    let mut processes = vec![
        process("corrald", daemon_pid)?,
        process("server-everything", server_pid)?,
    ];
    for pid in pids {
        processes.push(process("corral mcp", pid)?);
    }
    for bridge in bridges {
        bridge.close().await;
    }
    let corral_setup = Setup {
        samples,
        elapsed,
        processes,
    };
    let (_, mut survivors) = served.stop().await?;

    let mut starting = JoinSet::new();
    for _ in 0..options.clients {
        let everything = peers.everything().to_path_buf();
        starting.spawn(async move { DirectClient::start(&everything).await });
    }
    let mut directs = Vec::with_capacity(options.clients);
    let mut failure = None;
    while let Some(joined) = starting.join_next().await {
        match joined.context("starting a direct client") {
            Ok(Ok(direct)) => directs.push(direct),
            Ok(Err(error)) | Err(error) => failure = Some(error),
        }
    }
    if let Some(error) = failure {
        for direct in directs {
            direct.close().await;
        }
        return Err(error);
    }
    let pids: Vec<u32> = directs.iter().map(|direct| direct.pid).collect();
    let (directs, samples, elapsed) = run(directs, options).await?;
    let mut processes = Vec::new();
    for pid in pids {
        processes.push(process("server-everything", pid)?);
    }
    for direct in directs {
        direct.close().await;
    }
    survivors.extend(crate::survivors::find());
    Ok(Fleet {
        options,
        corral: corral_setup,
        direct: Setup {
            samples,
            elapsed,
            processes,
        },
        survivors,
    })
}

#[allow(
    clippy::cast_precision_loss,
    reason = "memory sizes and call counts are far below 2^52"
)]
fn mebibytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

/// The report of the phase.
pub(crate) fn print(out: &mut impl Write, fleet: &Fleet) -> std::io::Result<()> {
    let clients = fleet.options.clients;
    writeln!(out)?;
    writeln!(
        out,
        "{:<52} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10} {:>10}",
        format!(
            "{clients} MCP clients calling echo at once, {:?} each",
            fleet.options.duration
        ),
        "calls/s",
        "p50 µs",
        "p99 µs",
        "processes",
        "RSS MiB",
        "PSS MiB",
        "calls"
    )?;
    for (label, setup) in [
        ("each through its own `corral mcp`, one shared server", &fleet.corral),
        ("each with its own server-everything (today)", &fleet.direct),
    ] {
        let count = setup.samples.len();
        let Some(summary) = Summary::of(&mut setup.samples.clone()) else {
            writeln!(out, "  {label:<50} no calls")?;
            continue;
        };
        #[allow(clippy::cast_precision_loss, reason = "call counts are far below 2^52")]
        let rate = count as f64 / setup.elapsed.as_secs_f64().max(f64::EPSILON);
        let rss: u64 = setup.processes.iter().map(|process| process.memory.rss).sum();
        let pss: u64 = setup.processes.iter().map(|process| process.pss).sum();
        writeln!(
            out,
            "  {label:<50} {:>9.0} {:>9.1} {:>9.1} {:>9} {:>10} {:>10} {:>10}",
            rate,
            summary.p50.as_secs_f64() * 1e6,
            summary.p99.as_secs_f64() * 1e6,
            setup.processes.len(),
            mebibytes(rss),
            mebibytes(pss),
            count
        )?;
    }
    writeln!(out, "  processes and their memory after the calls (MiB):")?;
    for (label, setup) in [("  Corral", &fleet.corral), ("  today", &fleet.direct)] {
        let mut kinds: Vec<(&str, usize, u64, u64)> = Vec::new();
        for process in &setup.processes {
            match kinds.iter_mut().find(|(what, ..)| *what == process.what) {
                Some(kind) => {
                    kind.1 += 1;
                    kind.2 += process.memory.rss;
                    kind.3 += process.pss;
                }
                None => kinds.push((process.what, 1, process.memory.rss, process.pss)),
            }
        }
        let parts: Vec<String> = kinds
            .iter()
            .map(|(what, count, rss, pss)| {
                format!("{count} × {what} (RSS {}, PSS {})", mebibytes(*rss), mebibytes(*pss))
            })
            .collect();
        writeln!(out, "  {label}: {}", parts.join(", "))?;
    }
    writeln!(
        out,
        "  {} warm-up calls per client; the clients are this benchmark's tasks (the same in both setups, not counted)",
        fleet.options.warmup
    )?;
    Ok(())
}
