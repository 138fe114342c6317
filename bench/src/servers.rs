//! Measurements with real MCP servers under corrald, each on a fresh daemon
//! whose servers come from a generated `config.toml`: how long servers take
//! to become `ready` alone and many at once, how long `mcpServer/stop` takes
//! and whether the process tree is gone when it answers, and how much the
//! daemon's own memory grows per running server.
//!
//! Every wait has a deadline; `main` also bounds each measurement as a whole.
//! Every daemon is stopped with SIGTERM (its servers are torn down by it) and
//! afterwards the processes of this run are looked for (see [`survivors`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use corral_protocol::{
    DaemonNotification, EventsReplayResult, McpServerGetResult, McpServerListResult, McpServerStatus, ServerOrigin,
    ServerStatus, StartupStatusUpdated,
};

use crate::cpu;
use crate::daemon::{DaemonProcess, Memory};
use crate::peers::{Peer, Peers};
use crate::raw::{Incoming, RawConnection};
use crate::survivors::{self, Survivor};

/// Longest wait for all servers of one daemon to be ready. 32 fixture
/// servers on two CPUs needed 11–18 s (see `docs/benchmarks.md`); this leaves room for a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait for one `mcpServer/*` answer. A stop takes at most about
/// 2.5 s by the daemon's teardown bound.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a daemon's socket, or for it to answer the first calls.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(5);
/// Polling interval of `mcpServer/list` where readiness is not what is timed.
const LIST_POLL: Duration = Duration::from_millis(5);
/// How long the daemon is left alone between "all ready" and the second memory reading.
const SETTLE: Duration = Duration::from_secs(1);

const STATUS_NOTIFICATION: &str = "mcpServer/startupStatus/updated";

/// A daemon started with a config, and one initialized raw connection to it.
pub(crate) struct ServedDaemon {
    pub(crate) daemon: DaemonProcess,
    pub(crate) connection: RawConnection,
}

impl ServedDaemon {
    /// Spawn corrald with `config`, connect, and check that it took the config's `expected` servers.
    pub(crate) async fn start(corrald: &Path, config: &str, expected: usize) -> anyhow::Result<Self> {
        Self::start_with_env(corrald, config, expected, &[]).await
    }

    /// [`Self::start`] with `env` set in the daemon's environment.
    pub(crate) async fn start_with_env(
        corrald: &Path,
        config: &str,
        expected: usize,
        env: &[(&str, std::ffi::OsString)],
    ) -> anyhow::Result<Self> {
        let mut daemon = DaemonProcess::spawn_with_config_and_env(corrald, config, env)?;
        daemon
            .wait_until_accepting(Duration::from_millis(1), DAEMON_TIMEOUT)
            .await?;
        let mut connection = tokio::time::timeout(
            DAEMON_TIMEOUT,
            RawConnection::connect(daemon.socket_path(), "corral-bench-servers"),
        )
        .await
        .context("`initialize` not answered in time")??;
        let status = call(&mut connection, "daemon/status", None).await?;
        let status: serde_json::Value = serde_json::from_str(&status).context("parsing `daemon/status`")?;
        if !status["configError"].is_null() {
            bail!("corrald rejected the generated config: {}", status["configError"]);
        }
        // `servers.total` also counts the built-in `corral` server: compare the config's own.
        let from_config = list(&mut connection).await?.len();
        if from_config != expected {
            bail!("corrald has {from_config} servers from the config, the generated config has {expected}: {status}");
        }
        Ok(Self { daemon, connection })
    }

    /// Close the connection, SIGTERM the daemon (it tears its servers down),
    /// then look for processes of this run that survived it.
    pub(crate) async fn stop(self) -> anyhow::Result<(Duration, Vec<Survivor>)> {
        let Self { daemon, connection } = self;
        drop(connection);
        let stopped = daemon.stop().await?;
        if !stopped.status.success() {
            bail!("corrald exited with {} after SIGTERM", stopped.status);
        }
        Ok((stopped.took, survivors::find()))
    }
}

/// `method` on `connection`, bounded by [`CALL_TIMEOUT`].
pub(crate) async fn call(connection: &mut RawConnection, method: &str, params: Option<&str>) -> anyhow::Result<String> {
    tokio::time::timeout(CALL_TIMEOUT, connection.call(method, params))
        .await
        .with_context(|| format!("`{method}` not answered within {CALL_TIMEOUT:?}"))?
}

/// `{"name": …}` as JSON text.
fn name_params(name: &str) -> String {
    serde_json::json!({ "name": name }).to_string()
}

/// The status of every server from the config (not the daemon's built-in one, which has no process).
pub(crate) async fn list(connection: &mut RawConnection) -> anyhow::Result<Vec<McpServerStatus>> {
    let result = call(connection, "mcpServer/list", None).await?;
    let list: McpServerListResult =
        serde_json::from_str(&result).with_context(|| format!("parsing `mcpServer/list`: {result}"))?;
    Ok(list
        .servers
        .into_iter()
        .filter(|server| server.origin == ServerOrigin::Config)
        .collect())
}

/// Read notifications until every server in `names` has been reported
/// `ready`; returns when each was, as time since the daemon was spawned
/// (taken when the notification was read). The servers started with the
/// daemon, before this connection existed: `events/replay` from the first
/// `seq` fills in what happened before, live notifications the rest
/// (de-duplicated by `seq`). A `failed` server is an error.
pub(crate) async fn wait_all_ready(
    served: &mut ServedDaemon,
    names: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, Duration>> {
    let ServedDaemon { daemon, connection } = served;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    let replay_id = connection.send("events/replay", Some(r#"{"afterSeq":0}"#)).await?;
    let mut replayed = false;
    let mut tracker = ReadyTracker {
        names,
        seen_seqs: BTreeSet::new(),
        ready: BTreeMap::new(),
    };
    while !(replayed && tracker.ready.len() == names.len()) {
        let line = match tokio::time::timeout_at(deadline, connection.next_line()).await {
            Ok(line) => line?,
            Err(_) => bail!(
                "only {} of {} servers were ready within {READY_TIMEOUT:?}{}",
                tracker.ready.len(),
                names.len(),
                daemon.log_tail()
            ),
        };
        let at = daemon.since_spawn();
        let message: Incoming<'_> =
            serde_json::from_str(line).with_context(|| format!("corrald sent invalid JSON: {line}"))?;
        match message.method {
            Some(STATUS_NOTIFICATION) => {
                let params = message.params.map_or("null", |params| params.get());
                let update: StartupStatusUpdated =
                    serde_json::from_str(params).with_context(|| format!("parsing {STATUS_NOTIFICATION}: {line}"))?;
                tracker.record(update, at)?;
            }
            Some("events/lagged") => bail!("the connection fell behind the daemon's notifications: {line}"),
            Some(_) => {}
            None if message.id == Some(replay_id) => {
                if let Some(error) = message.error {
                    bail!("`events/replay` failed: {}", error.get());
                }
                let result = message.result.map_or("null", |result| result.get());
                let replay: EventsReplayResult =
                    serde_json::from_str(result).with_context(|| format!("parsing `events/replay`: {line}"))?;
                if !replay.complete {
                    bail!("`events/replay` from the first seq is incomplete: the history overflowed");
                }
                for notification in replay.notifications {
                    if let DaemonNotification::StartupStatusUpdated(update) = notification {
                        tracker.record(update, at)?;
                    }
                }
                replayed = true;
            }
            None => bail!("unexpected message from corrald: {line}"),
        }
    }
    Ok(tracker.ready)
}

/// Status changes of the servers being waited for, de-duplicated by `seq`.
struct ReadyTracker<'a> {
    names: &'a BTreeSet<String>,
    seen_seqs: BTreeSet<u64>,
    /// When each server was first read as `ready`.
    ready: BTreeMap<String, Duration>,
}

impl ReadyTracker<'_> {
    fn record(&mut self, update: StartupStatusUpdated, at: Duration) -> anyhow::Result<()> {
        if !self.seen_seqs.insert(update.seq) || !self.names.contains(&update.name) {
            return Ok(());
        }
        match update.status {
            ServerStatus::Ready => {
                self.ready.entry(update.name).or_insert(at);
            }
            ServerStatus::Failed | ServerStatus::Cancelled => bail!(
                "server `{}` is {} instead of starting: {}",
                update.name,
                update.status,
                update.error.as_deref().unwrap_or("no error given")
            ),
            _ => {}
        }
        Ok(())
    }
}

/// Poll `mcpServer/list` every [`LIST_POLL`] until every server in `names`
/// is ready; returns their statuses. For waits that are not what is measured.
pub(crate) async fn poll_until_ready(
    connection: &mut RawConnection,
    names: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, McpServerStatus>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let servers: BTreeMap<String, McpServerStatus> = list(connection)
            .await?
            .into_iter()
            .filter(|server| names.contains(&server.name))
            .map(|server| (server.name.clone(), server))
            .collect();
        if let Some(failed) = servers
            .values()
            .find(|server| matches!(server.status, ServerStatus::Failed))
        {
            bail!(
                "server `{}` failed: {}",
                failed.name,
                failed.error.as_deref().unwrap_or("no error given")
            );
        }
        let ready = servers
            .values()
            .filter(|server| server.status == ServerStatus::Ready)
            .count();
        if ready == names.len() {
            return Ok(servers);
        }
        if Instant::now() >= deadline {
            bail!(
                "only {ready} of {} servers were ready within {READY_TIMEOUT:?}",
                names.len()
            );
        }
        tokio::time::sleep(LIST_POLL).await;
    }
}

/// CPU time (user + system, own and reaped children's) and resident memory
/// of the processes of `servers`, summed.
fn servers_usage(servers: &[McpServerStatus]) -> anyhow::Result<(Duration, u64)> {
    let mut cpu_time = Duration::ZERO;
    let mut rss = 0;
    for server in servers {
        let pid = server
            .pid
            .with_context(|| format!("ready server `{}` has no pid", server.name))?;
        cpu_time += cpu::process_cpu(&pid.to_string())?;
        rss += Memory::of(pid)?.rss;
    }
    Ok((cpu_time, rss))
}

/// `count` names for servers of `peer`: `everything-01`, `everything-02`, …
fn server_names(peer: Peer, count: usize) -> Vec<String> {
    (1..=count)
        .map(|index| format!("{}-{index:02}", peer.name_prefix()))
        .collect()
}

/// One daemon started with `count` servers of one peer in its config.
#[derive(Debug)]
pub(crate) struct StartRun {
    pub(crate) servers: usize,
    /// Spawn → each server read as `ready`, sorted.
    pub(crate) ready: Vec<Duration>,
    /// CPU time corrald used from spawn until all were ready.
    pub(crate) daemon_cpu: Duration,
    /// CPU time the servers' processes had used when all were ready, summed.
    pub(crate) servers_cpu: Duration,
    /// The whole machine's CPU time from just before the spawn until all were ready.
    pub(crate) machine_cpu: cpu::MachineCpu,
    /// The daemon's memory when all were ready.
    pub(crate) daemon_memory: Memory,
    /// The servers' `VmRSS`, summed.
    pub(crate) servers_rss: u64,
    /// What the (first) server said about itself at `initialize`, e.g. `mcp-servers/everything 2.0.0`.
    pub(crate) server_info: Option<String>,
    /// SIGTERM → corrald exited, tearing all servers down.
    pub(crate) shutdown: Duration,
    pub(crate) survivors: Vec<Survivor>,
}

impl StartRun {
    /// Spawn → the last server ready.
    pub(crate) fn all_ready(&self) -> Duration {
        self.ready.last().copied().unwrap_or_default()
    }
}

/// Spawn a daemon whose config has `count` servers of `peer` and time until each is ready.
pub(crate) async fn parallel_start(
    corrald: &Path,
    peers: &Peers,
    peer: Peer,
    count: usize,
) -> anyhow::Result<StartRun> {
    let names = server_names(peer, count);
    let config = peers.config(names.iter().map(|name| (name.as_str(), peer)));
    let machine_before = cpu::MachineCpu::take()?;
    let mut served = ServedDaemon::start(corrald, &config, count).await?;
    let wanted: BTreeSet<String> = names.into_iter().collect();
    let ready_at = wait_all_ready(&mut served, &wanted).await?;
    // Read right away, before more work: CPU and memory at the moment all were ready.
    let machine_cpu = cpu::MachineCpu::take()?.since(&machine_before);
    let daemon_cpu = cpu::process_cpu(&served.daemon.pid().to_string())?;
    let daemon_memory = served.daemon.memory()?;
    let servers = list(&mut served.connection).await?;
    let (servers_cpu, servers_rss) = servers_usage(&servers)?;
    let server_info = servers
        .first()
        .and_then(|server| server.server_info.as_ref())
        .map(|info| format!("{} {}", info.name, info.version));
    let mut ready: Vec<Duration> = ready_at.into_values().collect();
    ready.sort_unstable();
    let (shutdown, survivors) = served.stop().await?;
    Ok(StartRun {
        servers: count,
        ready,
        daemon_cpu,
        servers_cpu,
        machine_cpu,
        daemon_memory,
        servers_rss,
        server_info,
        shutdown,
        survivors,
    })
}

/// Fresh daemons with one server, and with many of the same, alternating.
#[derive(Debug)]
pub(crate) struct StartComparison {
    pub(crate) peer: Peer,
    pub(crate) alone: Vec<StartRun>,
    pub(crate) together: Vec<StartRun>,
}

/// `runs` times: a daemon with one server of `peer`, then one with `count` of them.
pub(crate) async fn start_comparison(
    corrald: &Path,
    peers: &Peers,
    peer: Peer,
    count: usize,
    runs: usize,
) -> anyhow::Result<StartComparison> {
    let mut comparison = StartComparison {
        peer,
        alone: Vec::with_capacity(runs),
        together: Vec::with_capacity(runs),
    };
    for _ in 0..runs {
        comparison.alone.push(parallel_start(corrald, peers, peer, 1).await?);
        comparison
            .together
            .push(parallel_start(corrald, peers, peer, count).await?);
    }
    Ok(comparison)
}

/// One `mcpServer/stop` and what was left when its answer arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StopSample {
    /// Request sent → response read.
    pub(crate) latency: Duration,
    /// How long the server had been ready when the stop was sent (its
    /// `uptimeMs` at the last poll plus the time since the poll).
    pub(crate) ready_for: Duration,
    /// `/proc/<pid>` of the server's process was gone (not even a zombie).
    pub(crate) process_gone: bool,
    /// No process was left in the server's process group.
    pub(crate) group_gone: bool,
    /// The response said `stopped`, without a pid.
    pub(crate) answered_stopped: bool,
}

/// The stop samples of one peer.
#[derive(Debug)]
pub(crate) struct StopSeries {
    pub(crate) peer: Peer,
    pub(crate) samples: Vec<StopSample>,
}

/// Stop latencies, and the survivors of the daemon's exit.
#[derive(Debug)]
pub(crate) struct Stops {
    pub(crate) series: Vec<StopSeries>,
    pub(crate) survivors: Vec<Survivor>,
}

/// One daemon with one server of each stop behaviour; `runs` times: have all
/// ready, then stop each in turn and time the answer.
pub(crate) async fn stop_latency(corrald: &Path, peers: &Peers, runs: usize) -> anyhow::Result<Stops> {
    let cases = [Peer::Everything, Peer::Fixture, Peer::FixtureIgnoringSigterm];
    let config = peers.config(cases.iter().map(|peer| (peer.name_prefix(), *peer)));
    let mut served = ServedDaemon::start(corrald, &config, cases.len()).await?;
    let names: BTreeSet<String> = cases.iter().map(|peer| peer.name_prefix().to_owned()).collect();
    let mut series: Vec<StopSeries> = cases
        .iter()
        .map(|&peer| StopSeries {
            peer,
            samples: Vec::with_capacity(runs),
        })
        .collect();
    for run in 0..runs {
        if run > 0 {
            // Answered once `starting`; all three start at the same time.
            for name in &names {
                call(&mut served.connection, "mcpServer/start", Some(&name_params(name))).await?;
            }
        }
        let ready = poll_until_ready(&mut served.connection, &names).await?;
        let polled_at = Instant::now();
        for series in &mut series {
            let name = series.peer.name_prefix();
            let pid = ready[name]
                .pid
                .with_context(|| format!("ready server `{name}` has no pid"))?;
            let params = name_params(name);
            let ready_for = Duration::from_millis(ready[name].uptime_ms.unwrap_or(0)) + polled_at.elapsed();
            let sent = Instant::now();
            let result = call(&mut served.connection, "mcpServer/stop", Some(&params)).await?;
            let latency = sent.elapsed();
            // Looked at before anything else: the state at the moment of the answer.
            let process_gone = survivors::process_state(pid).is_none();
            let group_gone = !survivors::group_exists(pid);
            let answer: McpServerGetResult =
                serde_json::from_str(&result).with_context(|| format!("parsing `mcpServer/stop`: {result}"))?;
            series.samples.push(StopSample {
                latency,
                ready_for,
                process_gone,
                group_gone,
                answered_stopped: answer.server.status == ServerStatus::Stopped && answer.server.pid.is_none(),
            });
        }
    }
    let (_, survivors) = served.stop().await?;
    Ok(Stops { series, survivors })
}

/// The daemon's memory without servers and with `servers` ready ones.
#[derive(Debug)]
pub(crate) struct MemoryPerServer {
    pub(crate) servers: usize,
    /// A fresh daemon with an empty config, one connection.
    pub(crate) no_servers: Memory,
    /// A fresh daemon with `servers` in its config, one connection, when all were ready.
    pub(crate) ready: Memory,
    /// The same, [`SETTLE`] later.
    pub(crate) settled: Memory,
    pub(crate) settle: Duration,
    /// The same daemon after all its servers were stopped with `mcpServer/stop`.
    pub(crate) stopped: Memory,
    /// The servers' own `VmRSS`, summed, when ready.
    pub(crate) servers_rss: u64,
    pub(crate) survivors: Vec<Survivor>,
}

impl MemoryPerServer {
    /// `(settled − no servers) / servers`, in bytes; negative if the daemon shrank.
    pub(crate) fn per_server(&self) -> i64 {
        let grown = i64::try_from(self.settled.rss).unwrap_or(i64::MAX)
            - i64::try_from(self.no_servers.rss).unwrap_or(i64::MAX);
        grown / i64::try_from(self.servers.max(1)).unwrap_or(i64::MAX)
    }
}

/// Daemon `VmRSS` with no servers, then with `count` ready servers of `peer`, then after stopping them.
pub(crate) async fn memory_per_server(
    corrald: &Path,
    peers: &Peers,
    peer: Peer,
    count: usize,
) -> anyhow::Result<MemoryPerServer> {
    // The same setup without servers: an empty config file and one initialized connection.
    let mut empty = ServedDaemon::start(corrald, "", 0).await?;
    list(&mut empty.connection).await?;
    let no_servers = empty.daemon.memory()?;
    let (_, mut survivors) = empty.stop().await?;

    let names = server_names(peer, count);
    let config = peers.config(names.iter().map(|name| (name.as_str(), peer)));
    let mut served = ServedDaemon::start(corrald, &config, count).await?;
    let wanted: BTreeSet<String> = names.iter().cloned().collect();
    wait_all_ready(&mut served, &wanted).await?;
    let ready = served.daemon.memory()?;
    // Not a synchronisation: the daemon is left idle to see whether its memory is still moving.
    tokio::time::sleep(SETTLE).await;
    let settled = served.daemon.memory()?;
    let servers = list(&mut served.connection).await?;
    let (_, servers_rss) = servers_usage(&servers)?;
    stop_all(&mut served.connection, &names).await?;
    let stopped = served.daemon.memory()?;
    let (_, more_survivors) = served.stop().await?;
    survivors.extend(more_survivors);
    Ok(MemoryPerServer {
        servers: count,
        no_servers,
        ready,
        settled,
        settle: SETTLE,
        stopped,
        servers_rss,
        survivors,
    })
}

/// `mcpServer/stop` for every name at once (the daemon answers each when its processes are gone).
async fn stop_all(connection: &mut RawConnection, names: &[String]) -> anyhow::Result<()> {
    let mut pending = BTreeSet::new();
    for name in names {
        pending.insert(connection.send("mcpServer/stop", Some(&name_params(name))).await?);
    }
    let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
    while !pending.is_empty() {
        let line = tokio::time::timeout_at(deadline, connection.next_line())
            .await
            .with_context(|| format!("{} `mcpServer/stop` calls not answered in time", pending.len()))??;
        let message: Incoming<'_> =
            serde_json::from_str(line).with_context(|| format!("corrald sent invalid JSON: {line}"))?;
        if message.method.is_some() {
            continue;
        }
        if let Some(error) = message.error {
            bail!("`mcpServer/stop` failed: {}", error.get());
        }
        if !message.id.is_some_and(|id| pending.remove(&id)) {
            bail!("unexpected message from corrald: {line}");
        }
    }
    Ok(())
}
