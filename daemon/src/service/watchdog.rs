//! The service task: `READY=1`, `STATUS=` on every change, and `WATCHDOG=1`
//! while the supervisor answers.

use std::sync::Arc;
use std::time::Duration;

use corral_protocol::{DaemonNotification, ServerCounts};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::supervisor::SupervisorHandle;

use super::notify::{Notice, Notifier};

/// The one-line status a service manager shows (`systemctl --user status corral`).
pub fn status_line(counts: &ServerCounts, config_error: bool) -> String {
    let mut line = counts.to_string();
    if config_error {
        line.push_str("; config file invalid, see `corral doctor`");
    }
    line
}

/// How long the service task waits for the supervisor to answer before it
/// counts the check as missed.
const SUPERVISOR_ANSWER_LIMIT: Duration = Duration::from_secs(2);

/// Keep the service manager informed until `shutdown`: `READY=1`, then
/// `STATUS=` on every change and `WATCHDOG=1` while the supervisor answers.
///
/// Does nothing when no manager listens.
pub async fn run(
    notifier: Notifier,
    supervisor: SupervisorHandle,
    hub: Arc<Hub>,
    config_error: tokio::sync::watch::Receiver<Option<String>>,
    watchdog: Option<Duration>,
    shutdown: CancellationToken,
) {
    if !notifier.manager_listens() {
        return;
    }
    let mut subscription = hub.events.subscribe().receiver;
    let counts = supervisor.counts().await.unwrap_or_default();
    let mut last_status = status_line(&counts, config_error.borrow().is_some());
    notifier.notify(Notice::Ready(&last_status));
    tracing::info!(status = %last_status, watchdog = ?watchdog, "told the service manager corrald is ready");

    // Half the interval, as sd_watchdog_enabled(3) advises; never a busy loop.
    let period = watchdog.map_or(Duration::from_secs(3600), |interval| {
        (interval / 2).max(Duration::from_millis(10))
    });
    let answer_limit = watchdog.map_or(SUPERVISOR_ANSWER_LIMIT, |_| period.min(SUPERVISOR_ANSWER_LIMIT));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut missed_checks: u32 = 0;
    loop {
        let watchdog_tick = tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => true,
            received = subscription.recv() => match received {
                // Only status changes and reloads change the summary: server
                // logs and list changes must not cost a supervisor question each.
                Ok(frame) => match frame.notification {
                    DaemonNotification::StartupStatusUpdated(_)
                    | DaemonNotification::ConfigReloaded(_)
                    | DaemonNotification::ConfigReloadFailed(_) => false,
                    _ => continue,
                },
                // Missed some: one refresh covers them all.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => false,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        };
        if !watchdog_tick && missed_checks > 0 {
            // The watchdog check owns the status line while the supervisor is silent.
            continue;
        }
        let answer = tokio::time::timeout(answer_limit, supervisor.counts()).await;
        match answer {
            Ok(Ok(counts)) => {
                if missed_checks > 0 {
                    tracing::warn!(missed_checks, "the supervisor answers again; watchdog pings resume");
                    missed_checks = 0;
                    last_status.clear();
                }
                let status = status_line(&counts, config_error.borrow().is_some());
                if status != last_status {
                    notifier.notify(Notice::Status(&status));
                    last_status = status;
                }
                if watchdog_tick && watchdog.is_some() {
                    notifier.notify(Notice::Watchdog);
                }
            }
            // The supervisor has stopped: shutdown is under way.
            Ok(Err(_)) => return,
            Err(_) if watchdog_tick => {
                missed_checks += 1;
                let status = format!(
                    "the supervisor has not answered {missed_checks} watchdog check(s) in a row; watchdog pings withheld"
                );
                tracing::error!("{status}");
                notifier.notify(Notice::Status(&status));
                last_status = status;
            }
            Err(_) => {}
        }
    }
}
