//! Idle memory as a user runs corrald: the built-in server on, no config servers. Read once the
//! daemon has been left alone for [`QUIET`], then again after one front-end asked `daemon/status`
//! (which opens the credential store) and `mcpServer/list`: the code a request runs is mapped
//! then.
//!
//! Most of an idle corrald's RSS is pages of its executable, and how many the kernel maps at each
//! fault depends on how the file sits in the page cache: the same binary read 12.1 MiB just after
//! the linker wrote it, 14.5 MiB as a fresh copy, 12.7–13.2 MiB read back from disk. So the
//! executable is first dropped from the page cache (`POSIX_FADV_DONTNEED`; pages another process
//! maps stay), and every reading starts as a daemon started at login does.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::bridge::BridgeMemory;
use crate::daemon::DaemonProcess;
use crate::raw::RawConnection;
use crate::servers;

/// How long the daemon is left alone after its socket accepts.
const QUIET: Duration = Duration::from_secs(3);
/// Issue #13's goal for an idle corrald with its built-in server.
const TARGET_BYTES: u64 = 8 * 1024 * 1024;

/// One reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    pub(crate) memory: BridgeMemory,
    pub(crate) threads: u64,
}

/// What the phase measured.
#[derive(Debug)]
pub(crate) struct Idle {
    pub(crate) quiet: Reading,
    pub(crate) after_use: Reading,
}

fn reading(pid: u32) -> anyhow::Result<Reading> {
    Ok(Reading {
        memory: BridgeMemory::of(pid)?,
        threads: crate::scale::threads(pid)?,
    })
}

pub(crate) async fn measure(corrald: &Path) -> anyhow::Result<Idle> {
    drop_from_page_cache(corrald);
    let mut daemon = DaemonProcess::spawn_with_builtin(corrald)?;
    daemon
        .wait_until_accepting(Duration::from_millis(1), Duration::from_secs(5))
        .await?;
    tokio::time::sleep(QUIET).await;
    let quiet = reading(daemon.pid())?;
    let mut connection = RawConnection::connect(daemon.socket_path(), "corral-bench-idle").await?;
    servers::call(&mut connection, "daemon/status", None).await?;
    servers::call(&mut connection, "mcpServer/list", None).await?;
    drop(connection);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_use = reading(daemon.pid())?;
    daemon.stop().await?;
    Ok(Idle { quiet, after_use })
}

/// Ask the kernel to drop the file's clean pages from the page cache (best effort: the reading
/// says nothing about it, and a failure only leaves the cache as it was).
fn drop_from_page_cache(path: &Path) {
    use std::os::fd::AsRawFd as _;
    if let Ok(file) = std::fs::File::open(path) {
        // SAFETY: a valid descriptor for the call's duration; the advice changes no memory of ours.
        unsafe {
            libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

pub(crate) fn print(out: &mut impl Write, idle: &Idle) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "{:<52} {:>7} {:>8} {:>8} {:>8}  target",
        "daemon memory with the built-in server (MiB)", "VmRSS", "RssAnon", "RssFile", "threads"
    )?;
    for (label, reading) in [
        (format!("left alone {} s after start", QUIET.as_secs()), idle.quiet),
        (
            "after one front-end's daemon/status, mcpServer/list".to_owned(),
            idle.after_use,
        ),
    ] {
        writeln!(
            out,
            "  {:<50} {:>7} {:>8} {:>8} {:>8}  VmRSS ≤ 8 MiB: {}",
            label,
            crate::mebibytes(reading.memory.memory.rss),
            crate::mebibytes(reading.memory.anon),
            crate::mebibytes(reading.memory.file),
            reading.threads,
            crate::verdict(reading.memory.memory.rss <= TARGET_BYTES)
        )?;
    }
    Ok(())
}
