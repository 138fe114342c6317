//! Daemon-wide notifications: sequence numbers, a bounded replay history and
//! fan-out to every initialized connection.
//!
//! Each notification is serialized once, numbered, kept in a ring of the last
//! [`EventHub::capacity`] notifications and sent on a `tokio::sync::broadcast`
//! channel of the same capacity. The broadcast ring *is* the per-connection
//! queue: every connection reads it at its own pace through its own cursor, a
//! publisher never waits for any of them, and a connection that falls more
//! than `capacity` notifications behind is told exactly which sequence
//! numbers it missed (`events/lagged`) instead of stalling the daemon.
//!
//! The history is bounded in bytes too ([`HISTORY_BYTES`], 16 MiB; the
//! newest notification is always kept): large notifications push the oldest
//! ones out before `capacity` (`EVENT_HISTORY`, 1024) is reached. Server
//! names are at most 128 bytes (`config::MAX_SERVER_NAME_BYTES`, for config
//! and session servers alike), so notifications about servers stay small.
//!
//! Invariants: a `seq` is assigned, the notification recorded and sent under
//! one lock, so broadcast order is `seq` order and numbers have no gaps; a
//! [`Subscription`] is taken under the same lock, so it starts exactly after
//! its `last_seq` (a connection's `initialize` answer carries it, and every
//! notification the connection then gets has a greater `seq`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use corral_protocol::DaemonNotification;
use tokio::sync::broadcast;

/// Most bytes of serialized notifications the replay history keeps (the
/// newest notification is always kept, whatever its size).
pub const HISTORY_BYTES: usize = 16 * 1024 * 1024;

/// A notification ready to be written to any connection.
#[derive(Debug)]
pub struct EventFrame {
    /// Its daemon-wide sequence number.
    pub seq: u64,
    /// The complete JSON-RPC notification, serialized once for all connections.
    pub json: Box<str>,
    /// The typed notification, for `events/replay`.
    pub notification: DaemonNotification,
}

/// Owner of sequence numbers and the replay history. Shared as part of the
/// [`Hub`](super::Hub), next to the routes to single front-ends.
#[derive(Debug)]
pub struct EventHub {
    state: Mutex<HubState>,
    sender: broadcast::Sender<Arc<EventFrame>>,
    /// The newest sequence number sent: written only under the lock (so read
    /// there, it is the hub's `last_seq`), readable without it by the
    /// connections' writers ([`Subscription::published`]).
    published: Arc<AtomicU64>,
    capacity: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct HubState {
    history: VecDeque<Arc<EventFrame>>,
    /// Sum of the JSON lengths of `history`.
    history_bytes: usize,
}

/// A connection's view of the event stream, starting after `last_seq`.
#[derive(Debug)]
pub struct Subscription {
    /// Notifications published after `last_seq`.
    pub receiver: broadcast::Receiver<Arc<EventFrame>>,
    /// The newest sequence number when the subscription was taken.
    pub last_seq: u64,
    /// The newest sequence number published so far (set before its frame is
    /// sent): a connection whose writer delivered less has notifications to
    /// write before an answer that was made after them.
    pub published: Arc<AtomicU64>,
}

/// What `events/replay` returns.
#[derive(Debug)]
pub struct Replay {
    /// Notifications after the requested sequence number, oldest first.
    pub notifications: Vec<DaemonNotification>,
    /// Whether the history still held all of them.
    pub complete: bool,
    /// The newest sequence number at the time of the replay.
    pub last_seq: u64,
}

impl EventHub {
    /// A hub keeping the last `capacity` notifications, at most [`HISTORY_BYTES`] of them.
    pub fn new(capacity: usize) -> Self {
        Self::with_max_bytes(capacity, HISTORY_BYTES)
    }

    /// A hub keeping the last `capacity` notifications, at most `max_bytes` of them.
    pub fn with_max_bytes(capacity: usize, max_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        let (sender, _) = broadcast::channel(capacity);
        Self {
            state: Mutex::new(HubState {
                history: VecDeque::with_capacity(capacity),
                history_bytes: 0,
            }),
            sender,
            published: Arc::new(AtomicU64::new(0)),
            capacity,
            max_bytes,
        }
    }

    /// How many notifications the history keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // The state is a counter and a ring buffer: valid after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number, serialize, record and send a notification built by `make` from its sequence number.
    ///
    /// Never waits on a connection. Returns the sequence number.
    pub fn publish(&self, make: impl FnOnce(u64) -> DaemonNotification) -> u64 {
        let mut state = self.lock();
        let last_seq = self.published.load(Ordering::Relaxed);
        let seq = last_seq + 1;
        let notification = make(seq);
        debug_assert_eq!(notification.seq(), seq, "notification must carry the seq it was given");
        let json = serde_json::json!({
            "jsonrpc": "2.0",
            "method": notification.method(),
            "params": match serde_json::to_value(&notification) {
                Ok(value) => value.get("params").cloned().unwrap_or_default(),
                Err(error) => {
                    // Our own protocol types always serialize; keep the daemon alive if not.
                    tracing::error!(%error, "cannot serialize a notification");
                    return last_seq;
                }
            },
        })
        .to_string()
        .into_boxed_str();
        let frame = Arc::new(EventFrame {
            seq,
            json,
            notification,
        });
        state.history_bytes += frame.json.len();
        state.history.push_back(frame.clone());
        while state.history.len() > 1 && (state.history.len() > self.capacity || state.history_bytes > self.max_bytes) {
            if let Some(oldest) = state.history.pop_front() {
                state.history_bytes -= oldest.json.len();
            }
        }
        // Sent under the lock so that broadcast order is seq order. An error only
        // means that no connection is subscribed right now.
        self.published.store(seq, Ordering::Release);
        let _ = self.sender.send(frame);
        seq
    }

    /// Subscribe to notifications newer than the returned `last_seq`.
    pub fn subscribe(&self) -> Subscription {
        let _state = self.lock();
        Subscription {
            receiver: self.sender.subscribe(),
            last_seq: self.published.load(Ordering::Relaxed),
            published: self.published.clone(),
        }
    }

    /// The newest sequence number (0 before the first notification).
    pub fn last_seq(&self) -> u64 {
        let _state = self.lock();
        self.published.load(Ordering::Relaxed)
    }

    /// Notifications with a sequence number greater than `after_seq`.
    pub fn replay(&self, after_seq: u64) -> Replay {
        let state = self.lock();
        let last_seq = self.published.load(Ordering::Relaxed);
        let oldest_kept = state.history.front().map_or(last_seq + 1, |frame| frame.seq);
        let complete = after_seq.saturating_add(1) >= oldest_kept || after_seq >= last_seq;
        let notifications = state
            .history
            .iter()
            .filter(|frame| frame.seq > after_seq)
            .map(|frame| frame.notification.clone())
            .collect();
        Replay {
            notifications,
            complete,
            last_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use corral_protocol::{ServerStatus, StartupStatusUpdated};

    use super::*;

    fn status(seq: u64) -> DaemonNotification {
        DaemonNotification::StartupStatusUpdated(StartupStatusUpdated::new(seq, "s", ServerStatus::Starting))
    }

    #[test]
    fn sequence_numbers_are_contiguous_and_carried_in_the_json() {
        let hub = EventHub::new(4);
        let mut subscription = hub.subscribe();
        assert_eq!(subscription.last_seq, 0);
        assert_eq!(hub.publish(status), 1);
        assert_eq!(hub.publish(status), 2);
        let first = subscription.receiver.try_recv().expect("first frame");
        assert_eq!(first.seq, 1);
        let parsed: serde_json::Value = serde_json::from_str(&first.json).expect("json");
        assert_eq!(parsed["method"], "mcpServer/startupStatus/updated");
        assert_eq!(parsed["params"]["seq"], 1);
    }

    #[test]
    fn replay_is_complete_only_while_history_holds_everything() {
        let hub = EventHub::new(3);
        for _ in 0..5 {
            hub.publish(status);
        }
        let replay = hub.replay(2);
        assert!(replay.complete);
        assert_eq!(
            replay
                .notifications
                .iter()
                .map(DaemonNotification::seq)
                .collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let replay = hub.replay(1);
        assert!(!replay.complete, "seq 2 fell out of the history");
        assert_eq!(replay.notifications.len(), 3);
        let replay = hub.replay(5);
        assert!(replay.complete);
        assert!(replay.notifications.is_empty());
        // A front-end may send any u64 (found by tests/tests/e2e/fuzz_socket.rs: this overflowed).
        let replay = hub.replay(u64::MAX);
        assert!(replay.complete);
        assert!(replay.notifications.is_empty());
    }

    #[test]
    fn the_history_is_bounded_in_bytes() {
        let big = |seq| {
            DaemonNotification::StartupStatusUpdated(StartupStatusUpdated::new(
                seq,
                "x".repeat(1000),
                ServerStatus::Starting,
            ))
        };
        let hub = EventHub::with_max_bytes(100, 3500);
        for _ in 0..10 {
            hub.publish(big);
        }
        let replay = hub.replay(0);
        assert!(!replay.complete);
        let kept: Vec<u64> = replay.notifications.iter().map(DaemonNotification::seq).collect();
        assert_eq!(kept, vec![8, 9, 10], "three frames of about 1.1 kB fit in 3.5 kB");
        // A single notification larger than the bound is still kept (the newest).
        let hub = EventHub::with_max_bytes(100, 10);
        hub.publish(big);
        assert_eq!(hub.replay(0).notifications.len(), 1);
    }

    #[test]
    fn a_slow_subscriber_is_told_how_much_it_missed() {
        let hub = EventHub::new(2);
        let mut subscription = hub.subscribe();
        for _ in 0..5 {
            hub.publish(status);
        }
        match subscription.receiver.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(missed)) => assert_eq!(missed, 3),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(subscription.receiver.try_recv().expect("next").seq, 4);
    }
}
