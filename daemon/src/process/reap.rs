//! The process room's two background tasks, spawned at boot: reaping the
//! zombies of orphans re-parented to corrald (the subreaper), and retrying
//! a children record that could not be written.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::reaper::Registry;

/// How often a children record that could not be written is tried again
/// (besides on every change of the servers' processes).
const RECORD_RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Keep retrying a failed write of the children record until one succeeds.
pub async fn retry_children_record(processes: Arc<Registry>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(RECORD_RETRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A few small file operations; not worth a blocking thread.
        processes.retry_record();
    }
}

/// Reap zombies of orphans re-parented to corrald, on every SIGCHLD (and every
/// few seconds, in case signals were coalesced).
#[cfg(target_os = "linux")]
pub async fn reap_adopted_orphans(processes: Arc<Registry>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut child_signals = match signal(SignalKind::child()) {
        Ok(signals) => Some(signals),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGCHLD; reaping orphans every few seconds only");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            Some(()) = async { match &mut child_signals { Some(signals) => signals.recv().await, None => None } } => {}
        }
        // A /proc scan: off the runtime threads.
        let processes = processes.clone();
        let _ = tokio::task::spawn_blocking(move || processes.reap_adopted()).await;
    }
}
