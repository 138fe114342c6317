//! Notifications to the service manager (`sd_notify`), sent by one notifier
//! thread behind a bounded queue so no async task ever blocks on the manager.
//!
//! [`Notifier`] owns that thread and its queue: boot starts one and hands a
//! clone to everyone who tells the manager something (the reloader, the
//! watchdog task, shutdown) and to `daemon/status`, which shows how many
//! notifications were dropped. Invariants: notifications reach the manager
//! in the order they were queued (one thread sends them all); queueing never
//! blocks; what does not fit in the queue is dropped, warned about and
//! counted, never waited for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Whether a service manager listens for notifications (`$NOTIFY_SOCKET` is set).
fn manager_listens() -> bool {
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

/// Cloneable handle to the notifier thread: queues notifications for the
/// service manager and counts those dropped.
///
/// `sd_notify` writes to a blocking datagram socket: a manager that is slow to
/// read (or a full socket buffer) would block the caller. One thread sends
/// every notification, in order, so no async task ever blocks on the
/// manager; the queue in front of it is bounded and what overflows is
/// dropped with a warning and counted (`WATCHDOG=1` and `STATUS=` are
/// repeated anyway).
///
/// Without a manager (no `$NOTIFY_SOCKET`; a terminal, launchd, tests) there
/// is no thread and every notification is a no-op; so it is for the
/// [`Default`] one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// `None`: no manager listens.
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    /// The notifier thread's queue; `None` if the thread could not start.
    queue: Option<std::sync::mpsc::SyncSender<Queued>>,
    /// Notifications dropped because the queue was full.
    dropped: AtomicU64,
}

impl Notifier {
    /// A notifier for the service manager named by `$NOTIFY_SOCKET`, with
    /// its thread started; a silent one when no manager listens.
    pub fn start() -> Self {
        if !manager_listens() {
            return Self::default();
        }
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
        let queue = match spawned {
            Ok(_) => Some(sender),
            Err(error) => {
                tracing::warn!(%error, "cannot start the thread that notifies the service manager");
                None
            }
        };
        Self {
            shared: Some(Arc::new(Shared {
                queue,
                dropped: AtomicU64::new(0),
            })),
        }
    }

    /// Whether a service manager listens for notifications.
    pub fn manager_listens(&self) -> bool {
        self.shared.is_some()
    }

    /// Notifications dropped since start because the manager did not read
    /// them (`daemon/status.serviceNoticesDropped`).
    pub fn dropped(&self) -> u64 {
        self.shared
            .as_ref()
            .map_or(0, |shared| shared.dropped.load(Ordering::Relaxed))
    }

    fn queue(&self) -> Option<(&Shared, &std::sync::mpsc::SyncSender<Queued>)> {
        let shared = self.shared.as_deref()?;
        Some((shared, shared.queue.as_ref()?))
    }

    /// Queue `notice` for the service manager; failures are logged, never fatal
    /// (the daemon works without a manager). Never blocks.
    pub fn notify(&self, notice: Notice<'_>) {
        let Some((shared, queue)) = self.queue() else { return };
        let owned = match notice {
            Notice::Ready(status) => OwnedNotice::Ready(status.to_owned()),
            Notice::Status(status) => OwnedNotice::Status(status.to_owned()),
            Notice::Reloading => OwnedNotice::Reloading,
            Notice::Watchdog => OwnedNotice::Watchdog,
            Notice::Stopping(status) => OwnedNotice::Stopping(status.to_owned()),
        };
        if let Err(std::sync::mpsc::TrySendError::Full(_)) = queue.try_send(Queued::Notice(owned)) {
            let dropped = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                dropped,
                "the service manager does not read its notifications; dropped one"
            );
        }
    }

    /// Wait (at most `limit`) until every queued notification has been sent:
    /// the last thing before the process exits, so `STOPPING=1` is not lost.
    pub fn flush(&self, limit: Duration) {
        let Some((_, queue)) = self.queue() else { return };
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if queue.try_send(Queued::Flush(done)).is_ok() && wait.recv_timeout(limit).is_err() {
            tracing::warn!(
                ?limit,
                "the service manager did not take every notification before exit"
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_manager_nothing_is_queued_or_dropped() {
        let notifier = Notifier::default();
        assert!(!notifier.manager_listens());
        notifier.notify(Notice::Watchdog);
        notifier.flush(Duration::from_millis(1));
        assert_eq!(notifier.dropped(), 0);
    }

    #[test]
    fn what_does_not_fit_in_the_queue_is_dropped_and_counted_by_every_clone() {
        // A queue of one that nobody reads: the manager is stuck.
        let (sender, _unread) = std::sync::mpsc::sync_channel(1);
        let notifier = Notifier {
            shared: Some(Arc::new(Shared {
                queue: Some(sender),
                dropped: AtomicU64::new(0),
            })),
        };
        let clone = notifier.clone();
        notifier.notify(Notice::Status("queued"));
        notifier.notify(Notice::Status("dropped"));
        clone.notify(Notice::Watchdog);
        assert_eq!(notifier.dropped(), 2);
        assert_eq!(clone.dropped(), 2, "one count, shared by the clones");
    }
}
