//! Living under a service manager: readiness, status, watchdog and stopping
//! notifications (systemd's `sd_notify` protocol), and the listening socket a
//! socket-activating manager hands over.
//!
//! On Linux these talk to `$NOTIFY_SOCKET` through the `sd-notify` crate;
//! without that variable (a terminal, launchd, tests) every notification is a
//! no-op and nothing changes. Other platforms compile the same API as no-ops:
//! launchd has no readiness protocol, and starts corrald with `KeepAlive`.
//!
//! What is sent, in order:
//! - `READY=1` with a `STATUS=` once the socket accepts connections and every
//!   config server has been launched (not when they are ready: startup never
//!   waits for the slowest server);
//! - `STATUS=` again whenever the one-line summary changes ("5 servers: 4
//!   ready, 1 failed");
//! - `RELOADING=1` (with `MONOTONIC_USEC=`) and then `READY=1` around applying
//!   a reloaded config file;
//! - `WATCHDOG=1` every half watchdog interval, but only after the supervisor
//!   actually answered a question: a wedged supervisor stops the pings, and
//!   the service manager restarts the daemon;
//! - `STOPPING=1` when shutdown begins.

use std::sync::Arc;
use std::time::Duration;

use corral_protocol::{DaemonNotification, ServerCounts};
use tokio_util::sync::CancellationToken;

use crate::hub::events::EventHub;
use crate::supervisor::SupervisorHandle;

/// Whether a service manager listens for notifications (`$NOTIFY_SOCKET` is set).
pub fn manager_listens() -> bool {
    cfg!(target_os = "linux") && std::env::var_os("NOTIFY_SOCKET").is_some_and(|socket| !socket.is_empty())
}

/// One notification to the service manager (Linux: `sd_notify`).
#[derive(Debug, Clone, Copy)]
pub enum Notice<'a> {
    /// `READY=1` with a status line.
    Ready(&'a str),
    /// `STATUS=…`.
    Status(&'a str),
    /// `RELOADING=1` with the monotonic time systemd 253+ requires.
    Reloading,
    /// `WATCHDOG=1`.
    Watchdog,
    /// `STOPPING=1` with a status line.
    Stopping(&'a str),
}

/// Most notifications waiting for the notifier thread; more are dropped and counted.
const NOTIFY_QUEUE: usize = 64;

/// An owned [`Notice`], queued for the notifier thread.
#[derive(Debug)]
enum Queued {
    Notice(OwnedNotice),
    /// Reply once everything queued before has been sent.
    Flush(std::sync::mpsc::SyncSender<()>),
}

#[derive(Debug)]
// Read only where sd_notify exists (Linux).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
enum OwnedNotice {
    Ready(String),
    Status(String),
    Reloading,
    Watchdog,
    Stopping(String),
}

/// The notifier thread's queue, started on first use.
///
/// `sd_notify` writes to a blocking datagram socket: a manager that is slow to
/// read (or a full socket buffer) would block the caller. One thread sends
/// every notification, in order, so no async task ever blocks on the
/// manager; the queue in front of it is bounded and what overflows is
/// dropped with a warning and counted (`WATCHDOG=1` and `STATUS=` are
/// repeated anyway).
fn queue() -> Option<&'static std::sync::mpsc::SyncSender<Queued>> {
    static QUEUE: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<Queued>>> = std::sync::OnceLock::new();
    QUEUE
        .get_or_init(|| {
            let (sender, receiver) = std::sync::mpsc::sync_channel::<Queued>(NOTIFY_QUEUE);
            let spawned = std::thread::Builder::new()
                .name("corrald-sd-notify".to_owned())
                .spawn(move || {
                    while let Ok(queued) = receiver.recv() {
                        match queued {
                            Queued::Notice(notice) => send_now(&notice),
                            Queued::Flush(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                });
            match spawned {
                Ok(_) => Some(sender),
                Err(error) => {
                    tracing::warn!(%error, "cannot start the thread that notifies the service manager");
                    None
                }
            }
        })
        .as_ref()
}

/// Notifications dropped because the notifier's queue was full.
static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Queue `notice` for the service manager; failures are logged, never fatal
/// (the daemon works without a manager). Never blocks.
pub fn notify(notice: Notice<'_>) {
    if !manager_listens() {
        return;
    }
    let owned = match notice {
        Notice::Ready(status) => OwnedNotice::Ready(status.to_owned()),
        Notice::Status(status) => OwnedNotice::Status(status.to_owned()),
        Notice::Reloading => OwnedNotice::Reloading,
        Notice::Watchdog => OwnedNotice::Watchdog,
        Notice::Stopping(status) => OwnedNotice::Stopping(status.to_owned()),
    };
    let Some(queue) = queue() else { return };
    if let Err(std::sync::mpsc::TrySendError::Full(_)) = queue.try_send(Queued::Notice(owned)) {
        let dropped = DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        tracing::warn!(
            dropped,
            "the service manager does not read its notifications; dropped one"
        );
    }
}

/// Wait (at most `limit`) until every queued notification has been sent:
/// the last thing before the process exits, so `STOPPING=1` is not lost.
pub fn flush(limit: Duration) {
    if !manager_listens() {
        return;
    }
    let Some(queue) = queue() else { return };
    let (done, wait) = std::sync::mpsc::sync_channel(1);
    if queue.try_send(Queued::Flush(done)).is_ok() && wait.recv_timeout(limit).is_err() {
        tracing::warn!(
            ?limit,
            "the service manager did not take every notification before exit"
        );
    }
}

/// Send one notification now (on the notifier thread).
fn send_now(notice: &OwnedNotice) {
    #[cfg(target_os = "linux")]
    {
        use sd_notify::NotifyState;
        let states: Vec<NotifyState<'_>> = match notice {
            OwnedNotice::Ready(status) => vec![NotifyState::Ready, NotifyState::Status(status)],
            OwnedNotice::Status(status) => vec![NotifyState::Status(status)],
            OwnedNotice::Reloading => match NotifyState::monotonic_usec_now() {
                Ok(now) => vec![NotifyState::Reloading, now],
                Err(error) => {
                    tracing::warn!(%error, "cannot read the monotonic clock; not telling the service manager about the reload");
                    return;
                }
            },
            OwnedNotice::Watchdog => vec![NotifyState::Watchdog],
            OwnedNotice::Stopping(status) => vec![NotifyState::Stopping, NotifyState::Status(status)],
        };
        if let Err(error) = sd_notify::notify(&states) {
            tracing::warn!(%error, ?notice, "cannot notify the service manager");
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = notice;
    }
}

/// What the service manager set up for this process, read once at startup
/// (before any thread exists, because reading also removes the variables so
/// that nothing corrald starts inherits them).
#[derive(Debug, Default)]
pub struct Inherited {
    /// The listening socket of socket activation (`LISTEN_FDS`), if any.
    #[cfg(unix)]
    pub listener: Option<std::os::fd::OwnedFd>,
    /// The watchdog interval (`WATCHDOG_USEC`), if the manager wants pings.
    pub watchdog: Option<Duration>,
}

impl Inherited {
    /// Take what the service manager passed.
    ///
    /// # Safety
    ///
    /// Must be called before any other thread exists (it edits the
    /// environment), i.e. first thing in `main`.
    pub unsafe fn take() -> anyhow::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::FromRawFd as _;
            // SAFETY: the caller guarantees no other thread runs.
            let fds: Vec<i32> = unsafe { sd_notify::listen_fds_and_unset_env() }
                .map_err(|error| {
                    anyhow::anyhow!("invalid socket activation variables (LISTEN_FDS/LISTEN_PID): {error}")
                })?
                .collect();
            if fds.len() > 1 {
                anyhow::bail!(
                    "the service manager passed {} sockets (LISTEN_FDS); corrald serves exactly one: check the .socket unit",
                    fds.len()
                );
            }
            // SAFETY: sd_listen_fds semantics: descriptors from 3 on are ours,
            // open, and owned by nobody else in this process.
            let listener = fds.first().map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(*fd) });
            // SAFETY: as above.
            let watchdog = unsafe { sd_notify::watchdog_enabled_and_unset_env() };
            Ok(Self { listener, watchdog })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Ok(Self::default())
        }
    }
}

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
    supervisor: SupervisorHandle,
    events: Arc<EventHub>,
    config_error: crate::config::reload::ConfigErrorCell,
    watchdog: Option<Duration>,
    shutdown: CancellationToken,
) {
    if !manager_listens() {
        return;
    }
    let mut subscription = events.subscribe().receiver;
    let counts = supervisor.counts().await.unwrap_or_default();
    let mut last_status = status_line(&counts, config_error.get().is_some());
    notify(Notice::Ready(&last_status));
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
                let status = status_line(&counts, config_error.get().is_some());
                if status != last_status {
                    notify(Notice::Status(&status));
                    last_status = status;
                }
                if watchdog_tick && watchdog.is_some() {
                    notify(Notice::Watchdog);
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
                notify(Notice::Status(&status));
                last_status = status;
            }
            Err(_) => {}
        }
    }
}
