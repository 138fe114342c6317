//! How corrald grows with the number of servers it runs: for each count (1, 8, 32, 256 by
//! default), a fresh daemon whose config has that many stdio servers, each the benchmark's own
//! `--serve-echo-mcp` (see [`crate::echo_server`]: the cheapest MCP server to start, so that the
//! numbers are corrald's and not the machine's), and:
//!
//! - start → all ready: from the daemon's spawn until every server was reported `ready`
//!   (`mcpServer/startupStatus/updated`, replayed from the first `seq` and then live);
//! - the daemon's `VmRSS` and thread count when all were ready, and [`SETTLE`] later;
//! - `mcpServer/list` round trips (the answer grows with the servers), `tools/list` of every
//!   server at once, and `tools/call` of one server's `echo` (which should not grow), each on
//!   one raw connection, sequential, after a warm-up.
//!
//! The daemon runs without the built-in server, like the benchmark's other server measurements,
//! so that the counts are the config's.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::daemon::Memory;
use crate::raw::RawConnection;
use crate::servers::{self, ServedDaemon};
use crate::stats::Summary;
use crate::survivors::{self, Survivor};

/// How long the daemon is left alone between "all ready" and the second memory reading.
const SETTLE: Duration = Duration::from_secs(1);
/// `startup_timeout_sec` of every generated server.
const STARTUP_TIMEOUT_SEC: u64 = 170;

/// What the phase can be asked for.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Server counts, in the order measured.
    pub(crate) counts: Vec<usize>,
    /// Measured `mcpServer/list` and `tools/call` round trips per count (a tenth of it for `tools/list`).
    pub(crate) requests: usize,
    /// Unmeasured round trips of each kind before the measured ones.
    pub(crate) warmup: usize,
}

/// One count's numbers.
#[derive(Debug)]
pub(crate) struct Count {
    pub(crate) servers: usize,
    /// `/proc/loadavg` when this count began.
    pub(crate) load: String,
    /// Spawn → the first and the last server `ready`.
    pub(crate) first_ready: Duration,
    pub(crate) all_ready: Duration,
    /// corrald's CPU time from spawn until all were ready.
    pub(crate) daemon_cpu: Duration,
    pub(crate) ready_memory: Memory,
    pub(crate) settled_memory: Memory,
    pub(crate) threads: u64,
    pub(crate) server_list: Summary,
    pub(crate) tools_list: Summary,
    /// Bytes of one `tools/list` answer.
    pub(crate) tools_list_bytes: usize,
    pub(crate) call: Summary,
    /// SIGTERM → corrald exited, every server torn down.
    pub(crate) shutdown: Duration,
}

/// What the phase measured.
#[derive(Debug)]
pub(crate) struct Scale {
    pub(crate) options: Options,
    pub(crate) counts: Vec<Count>,
    pub(crate) survivors: Vec<Survivor>,
}

/// The `config.toml` of `count` echo servers, `echo-0001` …, each this executable with `--serve-echo-mcp`.
fn config(count: usize) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("finding this executable (the echo servers are it)")?;
    let command = crate::peers::toml_string(&exe.display().to_string());
    let tag = crate::peers::toml_string(survivors::run_tag());
    Ok((1..=count)
        .map(|index| {
            format!(
                "\n[servers.{}]\ncommand = {command}\nargs = [\"--serve-echo-mcp\"]\nstartup_timeout_sec = {STARTUP_TIMEOUT_SEC}\nenv = {{ {} = {tag} }}\n",
                name(index),
                survivors::RUN_TAG_VAR
            )
        })
        .collect())
}

fn name(index: usize) -> String {
    format!("echo-{index:04}")
}

/// The whole phase.
pub(crate) async fn measure(corrald: &Path, options: Options) -> anyhow::Result<Scale> {
    let mut counts = Vec::with_capacity(options.counts.len());
    let mut survivors = Vec::new();
    for &count in &options.counts {
        eprintln!("corral-bench: scale: {count} servers…");
        let (measured, found) = one_count(corrald, count, &options)
            .await
            .with_context(|| format!("{count} servers"))?;
        counts.push(measured);
        survivors.extend(found);
    }
    Ok(Scale {
        options,
        counts,
        survivors,
    })
}

async fn one_count(corrald: &Path, count: usize, options: &Options) -> anyhow::Result<(Count, Vec<Survivor>)> {
    let load = crate::load_average();
    let config = config(count)?;
    let mut served = ServedDaemon::start(corrald, &config, count).await?;
    let names: BTreeSet<String> = (1..=count).map(name).collect();
    let ready = servers::wait_all_ready(&mut served, &names).await?;
    let daemon_cpu = crate::cpu::process_cpu(&served.daemon.pid().to_string())?;
    let ready_memory = served.daemon.memory()?;
    let mut times: Vec<Duration> = ready.into_values().collect();
    times.sort_unstable();
    let (first_ready, all_ready) = (
        times.first().copied().unwrap_or_default(),
        times.last().copied().unwrap_or_default(),
    );
    tokio::time::sleep(SETTLE).await;
    let settled_memory = served.daemon.memory()?;
    let threads = threads(served.daemon.pid())?;

    let connection = &mut served.connection;
    let server_list = timed(
        connection,
        "mcpServer/list",
        None,
        options.warmup,
        options.requests,
        |_| Ok(()),
    )
    .await?;
    let all_tools = r"{}";
    let mut tools_list_bytes = 0;
    let tools_list = timed(
        connection,
        "tools/list",
        Some(all_tools),
        (options.warmup / 10).max(1),
        (options.requests / 10).max(1),
        |answer| {
            tools_list_bytes = answer.len();
            let listed = answer.matches(r#""name":"echo""#).count();
            if listed == count {
                Ok(())
            } else {
                bail!("`tools/list` listed {listed} echo tools of {count} servers")
            }
        },
    )
    .await?;
    let call_params =
        serde_json::json!({ "server": name(1), "name": "echo", "arguments": { "message": "x" } }).to_string();
    let call = timed(
        connection,
        "tools/call",
        Some(&call_params),
        options.warmup,
        options.requests,
        |answer| {
            if answer.contains("Echo: x") && !answer.contains(r#""isError":true"#) {
                Ok(())
            } else {
                bail!("`tools/call` of `echo` answered {answer}")
            }
        },
    )
    .await?;
    let (shutdown, found) = served.stop().await?;
    Ok((
        Count {
            servers: count,
            load,
            first_ready,
            all_ready,
            daemon_cpu,
            ready_memory,
            settled_memory,
            threads,
            server_list,
            tools_list,
            tools_list_bytes,
            call,
            shutdown,
        },
        found,
    ))
}

/// `warmup` then `requests` sequential calls of `method`; each answer goes through `check`.
async fn timed(
    connection: &mut RawConnection,
    method: &str,
    params: Option<&str>,
    warmup: usize,
    requests: usize,
    mut check: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<Summary> {
    let mut samples = Vec::with_capacity(requests);
    for index in 0..warmup + requests {
        let started = Instant::now();
        let answer = servers::call(connection, method, params).await?;
        let elapsed = started.elapsed();
        check(&answer)?;
        if index >= warmup {
            samples.push(elapsed);
        }
    }
    Summary::of(&mut samples).with_context(|| format!("no `{method}` measured"))
}

/// `Threads:` of `/proc/<pid>/status`.
pub(crate) fn threads(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|value| value.trim().parse().ok())
        .with_context(|| format!("no Threads line in {path}"))
}

pub(crate) fn print(out: &mut impl Write, scale: &Scale) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "scale: N stdio servers (corral-bench --serve-echo-mcp) under one corrald, no built-in server; \
         {} warm-up + {} measured round trips (tools/list: a tenth), one raw connection",
        scale.options.warmup, scale.options.requests
    )?;
    let mut header = format!("  {:<46}", "servers");
    for count in &scale.counts {
        header.push_str(&format!(" {:>10}", count.servers));
    }
    writeln!(out, "{header}")?;
    let row = |out: &mut dyn Write, label: &str, cell: &dyn Fn(&Count) -> String| -> std::io::Result<()> {
        let mut line = format!("  {label:<46}");
        for count in &scale.counts {
            line.push_str(&format!(" {:>10}", cell(count)));
        }
        writeln!(out, "{line}")
    };
    let ms = |duration: Duration| format!("{:.1}", duration.as_secs_f64() * 1e3);
    let us = |duration: Duration| format!("{:.0}", duration.as_secs_f64() * 1e6);
    row(out, "load average (1 min) at the start", &|count| {
        count.load.split_whitespace().next().unwrap_or("?").to_owned()
    })?;
    row(out, "spawn → first server ready (ms)", &|count| ms(count.first_ready))?;
    row(out, "spawn → all servers ready (ms)", &|count| ms(count.all_ready))?;
    row(out, "corrald CPU, spawn → all ready (ms)", &|count| {
        ms(count.daemon_cpu)
    })?;
    row(out, "corrald VmRSS, all ready (MiB)", &|count| {
        crate::mebibytes(count.ready_memory.rss)
    })?;
    row(
        out,
        &format!("corrald VmRSS, {} s later (MiB)", SETTLE.as_secs()),
        &|count| crate::mebibytes(count.settled_memory.rss),
    )?;
    row(out, "corrald VmHWM (MiB)", &|count| {
        crate::mebibytes(count.settled_memory.hwm)
    })?;
    if let Some(first) = scale.counts.first() {
        row(
            out,
            &format!("  per server over {} server(s) (KiB)", first.servers),
            &|count| {
                let servers = count.servers.saturating_sub(first.servers);
                if servers == 0 {
                    return "-".to_owned();
                }
                let grown = i64::try_from(count.settled_memory.rss).unwrap_or(i64::MAX)
                    - i64::try_from(first.settled_memory.rss).unwrap_or(i64::MAX);
                crate::kibibytes(grown / i64::try_from(servers).unwrap_or(i64::MAX))
            },
        )?;
    }
    row(out, "corrald threads", &|count| count.threads.to_string())?;
    row(out, "mcpServer/list p50 (µs)", &|count| us(count.server_list.p50))?;
    row(out, "mcpServer/list p99 (µs)", &|count| us(count.server_list.p99))?;
    row(out, "tools/list, every server, p50 (µs)", &|count| {
        us(count.tools_list.p50)
    })?;
    row(out, "tools/list, every server, p99 (µs)", &|count| {
        us(count.tools_list.p99)
    })?;
    row(out, "tools/list answer (KiB)", &|count| {
        format!("{:.1}", count.tools_list_bytes as f64 / 1024.0)
    })?;
    row(out, "tools/call echo of one server p50 (µs)", &|count| {
        us(count.call.p50)
    })?;
    row(out, "tools/call echo of one server p99 (µs)", &|count| {
        us(count.call.p99)
    })?;
    row(out, "SIGTERM → corrald exited, all torn down (ms)", &|count| {
        ms(count.shutdown)
    })?;
    Ok(())
}
