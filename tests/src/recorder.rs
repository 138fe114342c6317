//! [`StatusRecorder`]: every `mcpServer/startupStatus/updated` a client sees, in order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use corral_client::protocol::{DaemonNotification, FailureReason, ServerStatus, StartupStatusUpdated};
use corral_client::{Client, ClientNotification};

use crate::daemon::TestDaemon;
use crate::wait::{POLL_INTERVAL, within};

/// A status step of a server: its status and, on `failed`, the reason.
pub type StatusStep = (ServerStatus, Option<FailureReason>);

/// One recorded `mcpServer/startupStatus/updated`, with when this test saw it.
#[derive(Debug, Clone)]
pub struct RecordedUpdate {
    /// The notification.
    pub update: StartupStatusUpdated,
    /// When it arrived (for notifications fetched with `events/replay`: when the replay answered).
    pub received: Instant,
}

impl RecordedUpdate {
    /// Status and failure reason.
    pub fn step(&self) -> StatusStep {
        (self.update.status, self.update.failure_reason)
    }
}

#[derive(Debug, Default)]
struct Recorded {
    by_seq: BTreeMap<u64, RecordedUpdate>,
    /// Sequence numbers of the other notifications (other kinds share the counter).
    other_seqs: std::collections::BTreeSet<u64>,
    /// `events/lagged` and undecodable notifications: the record is incomplete.
    problems: Vec<String>,
}

/// Records every `mcpServer/startupStatus/updated` of a daemon, from its
/// first one (fetched with `events/replay`, so statuses published before
/// the recorder connected are included) on, ordered by `seq`. Other
/// notification kinds only count towards the check that no `seq` was missed.
///
/// It has its own connection; a task feeds it while the test awaits.
#[derive(Debug)]
pub struct StatusRecorder {
    client: Client,
    recorded: Arc<Mutex<Recorded>>,
    task: tokio::task::JoinHandle<()>,
}

impl StatusRecorder {
    /// Connect to `daemon` and start recording.
    pub async fn start(daemon: &TestDaemon) -> StatusRecorder {
        let mut client = daemon.connect_client().await;
        let mut notifications = client
            .take_notifications()
            .expect("a fresh client has its notification stream");
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let feed = recorded.clone();
        // Live first, then the replay: a notification published in between is
        // in one or the other (or both: `seq` de-duplicates).
        let task = tokio::spawn(async move {
            while let Some(item) = notifications.next().await {
                let mut recorded = feed.lock().unwrap_or_else(PoisonError::into_inner);
                match item {
                    Ok(ClientNotification::Daemon(DaemonNotification::StartupStatusUpdated(update))) => {
                        let received = Instant::now();
                        recorded.by_seq.insert(update.seq, RecordedUpdate { update, received });
                    }
                    Ok(other) => match other.seq() {
                        Some(seq) => {
                            recorded.other_seqs.insert(seq);
                        }
                        None => recorded.problems.push(format!("{other:?}")),
                    },
                    Err(error) => recorded.problems.push(format!("undecodable notification: {error}")),
                }
            }
        });
        let replay = within("events/replay", client.events_replay(0))
            .await
            .expect("events/replay");
        assert!(
            replay.complete,
            "the daemon's history no longer holds its first notifications"
        );
        {
            let received = Instant::now();
            let mut recorded = recorded.lock().unwrap_or_else(PoisonError::into_inner);
            for notification in replay.notifications {
                let seq = notification.seq();
                if let DaemonNotification::StartupStatusUpdated(update) = notification {
                    recorded
                        .by_seq
                        .entry(update.seq)
                        .or_insert(RecordedUpdate { update, received });
                } else {
                    recorded.other_seqs.insert(seq);
                }
            }
        }
        StatusRecorder { client, recorded, task }
    }

    /// The recorder's own client (usable for requests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every update recorded so far for server `name`, in `seq` order.
    ///
    /// Fails the test if a notification was lost (a gap in `seq`) or the
    /// stream lagged: the recorder must see everything for its sequences to mean anything.
    pub fn updates(&self, name: &str) -> Vec<RecordedUpdate> {
        let recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(
            recorded.problems.is_empty(),
            "the record is incomplete: {:?}",
            recorded.problems
        );
        let mut seqs: Vec<u64> = recorded.by_seq.keys().chain(&recorded.other_seqs).copied().collect();
        seqs.sort_unstable();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "the recorder missed notifications");
        recorded
            .by_seq
            .values()
            .filter(|recorded| recorded.update.name == name)
            .cloned()
            .collect()
    }

    /// Status steps recorded so far for `name`.
    pub fn steps(&self, name: &str) -> Vec<StatusStep> {
        self.updates(name).iter().map(RecordedUpdate::step).collect()
    }

    /// Wait (up to `limit`) until `name` has at least `count` updates; returns all of them.
    pub async fn wait_for_count(&self, name: &str, count: usize, limit: Duration) -> Vec<RecordedUpdate> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let updates = self.updates(name);
            if updates.len() >= count {
                return updates;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {limit:?} waiting for {count} status updates of `{name}`; got {:?}",
                updates.iter().map(|u| &u.update).collect::<Vec<_>>()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Wait until `name` has as many updates as `expected`, then fail unless
    /// they are exactly `expected`, in order. Returns them.
    pub async fn expect_steps(&self, name: &str, expected: &[StatusStep], limit: Duration) -> Vec<RecordedUpdate> {
        let updates = self.wait_for_count(name, expected.len(), limit).await;
        let steps: Vec<StatusStep> = updates.iter().map(RecordedUpdate::step).collect();
        assert_eq!(
            steps,
            expected,
            "status notifications of `{name}`: {:#?}",
            updates.iter().map(|u| &u.update).collect::<Vec<_>>()
        );
        updates
    }
}

impl Drop for StatusRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
