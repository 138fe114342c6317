//! The measurements themselves. Each returns raw samples; `main` summarizes
//! and prints them. Nothing here asserts on timing.
//!
//! Every wait is bounded: the hot loops are bounded as a whole by the phase
//! timeout `main` wraps around them (a timer per request would add its own
//! cost to what is measured), and every other wait has its own deadline.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use corral_client::{Client, ConnectOptions};
use serde::Deserialize;
use tokio::sync::{Barrier, mpsc};
use tokio::task::JoinSet;

use crate::cpu::{self, CpuUse};
use crate::daemon::{DaemonProcess, Memory};
use crate::raw::{Incoming, LineReader, RawConnection};

/// The request every round-trip measurement repeats.
const LIST: &str = "mcpServer/list";
/// What `mcpServer/list` answers when the daemon has no servers.
const EMPTY_LIST: &str = r#"{"servers":[]}"#;
/// The notification `debug/emitTestEvents` publishes.
const TEST_EVENT: &str = "mcpServer/startupStatus/updated";
/// Longest wait for one fan-out round, one start-up, or connections to close.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Latencies of a measured loop and the CPU time spent during it.
#[derive(Debug)]
pub(crate) struct Measured {
    pub(crate) samples: Vec<Duration>,
    pub(crate) cpu: CpuUse,
}

/// Time `requests` sequential `mcpServer/list` calls on `connection` after `warmup` unmeasured ones.
async fn time_raw_calls(
    connection: &mut RawConnection,
    daemon_pid: Option<u32>,
    warmup: usize,
    requests: usize,
) -> anyhow::Result<Measured> {
    let result = connection.call(LIST, None).await?;
    if result != EMPTY_LIST {
        bail!("`{LIST}` answered {result}, expected {EMPTY_LIST}: is the daemon running without servers?");
    }
    for _ in 0..warmup {
        connection.call(LIST, None).await?;
    }
    let mut samples = Vec::with_capacity(requests);
    let cpu_before = cpu::Snapshot::take(daemon_pid)?;
    for _ in 0..requests {
        let started = Instant::now();
        connection.call(LIST, None).await?;
        samples.push(started.elapsed());
    }
    let cpu = cpu::Snapshot::take(daemon_pid)?.since(&cpu_before);
    Ok(Measured { samples, cpu })
}

/// One connection, sequential `mcpServer/list` calls through the raw client.
pub(crate) async fn round_trip_raw(
    socket: &Path,
    daemon_pid: u32,
    warmup: usize,
    requests: usize,
) -> anyhow::Result<Measured> {
    let mut connection = RawConnection::connect(socket, "corral-bench-raw").await?;
    time_raw_calls(&mut connection, Some(daemon_pid), warmup, requests).await
}

/// The raw client against the smallest possible server: a thread of this
/// process that answers every line at once. What is left of a round trip
/// when the daemon does no work at all (socket, wake-ups, client).
pub(crate) async fn round_trip_floor(warmup: usize, requests: usize) -> anyhow::Result<Measured> {
    let (client_end, server_end) = std::os::unix::net::UnixStream::pair().context("creating a socket pair")?;
    // The server thread ends at end of stream, or after this long without a request.
    server_end
        .set_read_timeout(Some(STEP_TIMEOUT))
        .context("setting a read timeout")?;
    std::thread::Builder::new()
        .name("floor-server".to_owned())
        .spawn(move || answer_every_line(&server_end))
        .context("starting the floor server thread")?;
    client_end
        .set_nonblocking(true)
        .context("making the socket non-blocking")?;
    let stream = tokio::net::UnixStream::from_std(client_end).context("registering the socket with tokio")?;
    let mut connection = RawConnection::initialize(stream, "corral-bench-floor").await?;
    time_raw_calls(&mut connection, None, warmup, requests).await
}

/// Answer each request line with an empty `mcpServer/list` result carrying the request's id.
fn answer_every_line(stream: &std::os::unix::net::UnixStream) -> std::io::Result<()> {
    use std::io::{BufRead as _, Write as _};
    let mut reader = std::io::BufReader::new(stream);
    let mut writer = stream;
    let mut line = String::new();
    let mut reply = Vec::with_capacity(128);
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        // The raw client writes `{"jsonrpc":"2.0","id":N,…`: no JSON parser needed.
        let id = line
            .split_once("\"id\":")
            .map_or("null", |(_, rest)| rest.split(',').next().unwrap_or("null"));
        reply.clear();
        writeln!(reply, "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{EMPTY_LIST}}}")?;
        writer.write_all(&reply)?;
    }
}

/// One connection, sequential `mcpServer/list` calls through `corral_client::Client`.
pub(crate) async fn round_trip_sdk(
    socket: &Path,
    daemon_pid: u32,
    warmup: usize,
    requests: usize,
) -> anyhow::Result<Measured> {
    let options = ConnectOptions::new("corral-bench-sdk", env!("CARGO_PKG_VERSION"))
        .with_socket_path(socket)
        .with_connect_timeout(STEP_TIMEOUT)
        .with_request_timeout(STEP_TIMEOUT);
    let client = Client::connect(options).await.context("connecting with the SDK")?;
    for _ in 0..warmup {
        client.mcp_server_list().await?;
    }
    let mut samples = Vec::with_capacity(requests);
    let cpu_before = cpu::Snapshot::take(Some(daemon_pid))?;
    for _ in 0..requests {
        let started = Instant::now();
        client.mcp_server_list().await?;
        samples.push(started.elapsed());
    }
    let cpu = cpu::Snapshot::take(Some(daemon_pid))?.since(&cpu_before);
    Ok(Measured { samples, cpu })
}

/// Per-request latencies of several clients at once, and how long the whole took.
#[derive(Debug)]
pub(crate) struct Concurrent {
    pub(crate) samples: Vec<Duration>,
    /// From the moment all clients start measuring until the last one is done.
    pub(crate) wall: Duration,
    pub(crate) cpu: CpuUse,
}

/// `clients` connections, each making sequential `mcpServer/list` calls; all measure at the same time.
pub(crate) async fn round_trip_concurrent(
    socket: &Path,
    daemon_pid: u32,
    clients: usize,
    warmup: usize,
    requests_per_client: usize,
) -> anyhow::Result<Concurrent> {
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(RawConnection::connect(socket, "corral-bench-concurrent").await?);
    }
    // Everyone warms up, then everyone starts measuring together.
    let start_line = Arc::new(Barrier::new(clients + 1));
    let mut tasks = JoinSet::new();
    for mut connection in connections {
        let start_line = start_line.clone();
        tasks.spawn(async move {
            let mut warmed_up = Ok(());
            for _ in 0..warmup {
                if let Err(error) = connection.call(LIST, None).await {
                    warmed_up = Err(error);
                    break;
                }
            }
            // Reach the barrier even after a failure, so that nobody waits for us.
            start_line.wait().await;
            warmed_up?;
            let mut samples = Vec::with_capacity(requests_per_client);
            for _ in 0..requests_per_client {
                let started = Instant::now();
                connection.call(LIST, None).await?;
                samples.push(started.elapsed());
            }
            anyhow::Ok(samples)
        });
    }
    // Taken just before the start: the warm-up CPU is not counted.
    let cpu_before = cpu::Snapshot::take(Some(daemon_pid))?;
    start_line.wait().await;
    let started = Instant::now();
    let mut samples = Vec::with_capacity(clients * requests_per_client);
    while let Some(joined) = tasks.join_next().await {
        samples.extend(joined.context("a concurrent client panicked")??);
    }
    let wall = started.elapsed();
    let cpu = cpu::Snapshot::take(Some(daemon_pid))?.since(&cpu_before);
    Ok(Concurrent { samples, wall, cpu })
}

/// Per round: time from sending `debug/emitTestEvents` until the first,
/// median and last of the listeners has read the notification.
#[derive(Debug, Default)]
pub(crate) struct FanOut {
    pub(crate) first: Vec<Duration>,
    pub(crate) median: Vec<Duration>,
    pub(crate) last: Vec<Duration>,
    /// The daemon's memory while all listeners are connected, and its count of open connections then.
    pub(crate) memory_connected: Option<(u64, Memory)>,
    /// CPU time over the measured rounds.
    pub(crate) cpu: CpuUse,
}

/// A listener read the notification numbered `seq` at `at`.
#[derive(Debug)]
struct Receipt {
    listener: usize,
    seq: u64,
    at: Instant,
}

/// `listeners` initialized connections each reading in its own task; `rounds`
/// times, one notification is published and timed until every listener has it.
pub(crate) async fn fan_out(
    daemon: &DaemonProcess,
    listeners: usize,
    warmup_rounds: usize,
    rounds: usize,
) -> anyhow::Result<FanOut> {
    let socket = daemon.socket_path();
    let mut control = RawConnection::connect(socket, "corral-bench-control").await?;
    // Room for a few rounds of receipts: readers never wait on the collector in practice.
    let (receipts, mut receipts_rx) = mpsc::channel(listeners * 4);
    let mut readers = JoinSet::new();
    let mut writers = Vec::with_capacity(listeners);
    for listener in 0..listeners {
        let (reader, writer) = RawConnection::connect(socket, "corral-bench-listener")
            .await
            .with_context(|| format!("connecting listener {listener}"))?
            .into_split();
        // Keep the writing half open: closing it would end the connection.
        writers.push(writer);
        readers.spawn(listen(listener, reader, receipts.clone()));
    }
    drop(receipts);
    let open = open_connections(&mut control).await?;
    let mut result = FanOut {
        memory_connected: Some((open, daemon.memory()?)),
        ..FanOut::default()
    };
    let mut seen = vec![false; listeners];
    let mut arrivals = Vec::with_capacity(listeners);
    let mut cpu_before = cpu::Snapshot::take(Some(daemon.pid()))?;
    for round in 0..warmup_rounds + rounds {
        if round == warmup_rounds {
            cpu_before = cpu::Snapshot::take(Some(daemon.pid()))?;
        }
        seen.fill(false);
        arrivals.clear();
        let sent = Instant::now();
        let result_json = control.call("debug/emitTestEvents", Some(r#"{"count":1}"#)).await?;
        let seq = serde_json::from_str::<EmitResult>(&result_json)
            .with_context(|| format!("`debug/emitTestEvents` answered {result_json}"))?
            .last_seq;
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        while arrivals.len() < listeners {
            let receipt = tokio::select! {
                receipt = receipts_rx.recv() => receipt,
                Some(ended) = readers.join_next() => {
                    ended.context("a listener panicked")??;
                    bail!("a listener stopped reading");
                }
                () = tokio::time::sleep_until(deadline) => bail!(
                    "round {round}: only {} of {listeners} listeners received notification {seq} within {STEP_TIMEOUT:?}",
                    arrivals.len()
                ),
            };
            let Some(receipt) = receipt else {
                bail!("every listener stopped reading");
            };
            if receipt.seq != seq || std::mem::replace(&mut seen[receipt.listener], true) {
                bail!(
                    "round {round}: listener {} received notification {} while waiting for {seq} (once each)",
                    receipt.listener,
                    receipt.seq
                );
            }
            arrivals.push(receipt.at.saturating_duration_since(sent));
        }
        if round < warmup_rounds {
            continue;
        }
        arrivals.sort_unstable();
        result.first.push(arrivals[0]);
        result.median.push(arrivals[listeners / 2]);
        result.last.push(arrivals[listeners - 1]);
    }
    result.cpu = cpu::Snapshot::take(Some(daemon.pid()))?.since(&cpu_before);
    // Aborts the listener tasks; dropping the halves closes the connections.
    readers.shutdown().await;
    drop(writers);
    Ok(result)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmitResult {
    last_seq: u64,
}

#[derive(Debug, Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// Read notifications and report each test event's arrival; ends on error only.
async fn listen(listener: usize, mut reader: LineReader, receipts: mpsc::Sender<Receipt>) -> anyhow::Result<()> {
    loop {
        let line = reader.next_line().await?;
        // Taken before parsing: the parse is the client's cost, not the daemon's.
        let at = Instant::now();
        let message: Incoming<'_> =
            serde_json::from_str(line).with_context(|| format!("listener {listener}: invalid JSON: {line}"))?;
        match message.method {
            Some(TEST_EVENT) => {
                let params = message.params.map_or("null", |params| params.get());
                let SeqOnly { seq } = serde_json::from_str(params)
                    .with_context(|| format!("listener {listener}: notification without a seq: {line}"))?;
                if receipts.send(Receipt { listener, seq, at }).await.is_err() {
                    return Ok(());
                }
            }
            Some("events/lagged") => bail!("listener {listener} fell behind: {line}"),
            _ => {}
        }
    }
}

/// Open connections as the daemon reports them in `daemon/status`.
pub(crate) async fn open_connections(connection: &mut RawConnection) -> anyhow::Result<u64> {
    let status = connection.call("daemon/status", None).await?;
    let status: serde_json::Value = serde_json::from_str(&status).context("parsing `daemon/status`")?;
    status["connections"]
        .as_u64()
        .with_context(|| format!("`daemon/status` has no connection count: {status}"))
}

/// Poll `daemon/status` until only `connection` itself is open (bounded).
pub(crate) async fn wait_until_only_connection(connection: &mut RawConnection) -> anyhow::Result<()> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let open = open_connections(connection).await?;
        if open <= 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("corrald still reports {open} open connections {STEP_TIMEOUT:?} after the load ended");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Times of one start-up of a fresh daemon.
#[derive(Debug, Default)]
pub(crate) struct Startups {
    /// From spawn until a connection is accepted.
    pub(crate) accepting: Vec<Duration>,
    /// From spawn until the first `initialize` is answered.
    pub(crate) initialized: Vec<Duration>,
    /// From SIGTERM until the process exited.
    pub(crate) shutdown: Vec<Duration>,
}

/// Start and stop a fresh daemon `runs` times, poll-connecting every `poll`.
pub(crate) async fn startups(corrald: &Path, runs: usize, poll: Duration) -> anyhow::Result<Startups> {
    let mut result = Startups::default();
    for _ in 0..runs {
        let mut daemon = DaemonProcess::spawn(corrald)?;
        result
            .accepting
            .push(daemon.wait_until_accepting(poll, STEP_TIMEOUT).await?);
        let connection = tokio::time::timeout(
            STEP_TIMEOUT,
            RawConnection::connect(daemon.socket_path(), "corral-bench-startup"),
        )
        .await
        .context("`initialize` not answered in time")??;
        result.initialized.push(daemon.since_spawn());
        drop(connection);
        let stopped = daemon.stop().await?;
        if !stopped.status.success() {
            bail!("corrald exited with {} after SIGTERM", stopped.status);
        }
        result.shutdown.push(stopped.took);
    }
    Ok(result)
}
