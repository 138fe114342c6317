//! `corral-bench`: start the real release `corrald` on a temporary socket and
//! print how fast and how small it is, next to the project's targets.
//!
//! Measured, in order: the floor (the same raw client against a do-nothing
//! server thread); then on one daemon: idle memory after start;
//! `mcpServer/list` round trips through a raw client and through
//! `corral_client`; the same with many concurrent raw clients; notification
//! fan-out to many front-ends; memory after the load; CPU time of daemon and
//! benchmark throughout. Then, on fresh daemons: time from spawn until the
//! socket accepts. It prints numbers and never fails because of them: timing
//! goals are for people to read, not for CI to assert (see `docs/benchmarks.md`).

mod cpu;
mod daemon;
mod raw;
mod scenarios;
mod stats;

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};

use crate::cpu::CpuUse;
use crate::daemon::{DaemonProcess, Memory};
use crate::raw::RawConnection;
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
    /// Worker threads of the benchmark's own runtime [default: one per CPU].
    #[arg(long)]
    client_threads: Option<usize>,
    /// Longest any one measurement may run, in seconds.
    #[arg(long, default_value_t = 300)]
    phase_timeout: u64,
    /// Run only these measurements (comma-separated); memory is always read.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
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
}

impl Args {
    fn runs(&self, phase: Phase) -> bool {
        self.only.is_empty() || self.only.contains(&phase)
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
}

fn main() -> ExitCode {
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
    Ok(())
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
    floor: Option<SingleReport>,
    raw: Option<SingleReport>,
    sdk: Option<SingleReport>,
    concurrent: Option<ConcurrentReport>,
    fan_out: Option<FanOutReport>,
    /// Connections open (as the daemon counts them) and the memory then.
    memory_connected: Option<(u64, Memory)>,
    memory_after: Option<Memory>,
    startup: Option<StartupReport>,
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
