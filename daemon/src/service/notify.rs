//! Notifications to the service manager (`sd_notify`), sent by one notifier
//! thread behind a bounded queue so no async task ever blocks on the manager.

use std::time::Duration;

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
