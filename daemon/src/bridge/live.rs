//! `notifications/tools/list_changed` for one MCP client: told whenever the
//! tools it would list may have changed — a server became ready, stopped
//! being ready (failed, stopped, removed, restarting), or re-listed its
//! tools.
//!
//! One task per MCP connection ([`spawn`], at `initialize`) follows the
//! event hub and the set of ready servers. Coalesced, never lost: a change
//! is sent at once unless one was sent less than [`INTERVAL`] ago; then
//! one notification goes out when the interval is over, for every change
//! meanwhile. Falling behind the hub (`Lagged`) counts as a change. The
//! notification waits for room in the link's queue rather than being
//! dropped.
//!
//! The task lives as long as the connection: it ends when the connection's
//! writer is gone (the link's queue closed), which every connection's end
//! and the daemon's shutdown bring about, or when the hub or the supervisor
//! is gone.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use corral_protocol::{DaemonNotification, ServerStatus};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::hub::Hub;
use crate::hub::link::Link;
use crate::supervisor::SupervisorHandle;

/// MCP's notification that the tool list changed.
pub(crate) const TOOLS_LIST_CHANGED: &str = "notifications/tools/list_changed";

/// At most one `list_changed` per this interval.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// Follow the tools of every server for the MCP client on `link`.
pub(crate) fn spawn(tasks: &TaskTracker, supervisor: SupervisorHandle, hub: Arc<Hub>, link: Arc<Link>) {
    let span = tracing::debug_span!("mcp_client_tools", connection = link.id);
    tasks.spawn(follow(supervisor, hub, link).instrument(span));
}

async fn follow(supervisor: SupervisorHandle, hub: Arc<Hub>, link: Arc<Link>) {
    // Subscribed before the ready set is read, so no change falls between.
    let mut events = hub.events.subscribe().receiver;
    drop(hub);
    let Some(mut ready) = ready_servers(&supervisor).await else {
        return;
    };
    let mut pending = Coalescer::default();
    loop {
        tokio::select! {
            biased;
            () = link.closed() => return,
            event = events.recv() => match event {
                Ok(frame) => {
                    if changes_tools(&frame.notification, &mut ready) {
                        pending.changed();
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "fell behind the event hub; telling the client its tools may have changed");
                    pending.changed();
                    let Some(now_ready) = ready_servers(&supervisor).await else { return };
                    ready = now_ready;
                }
                Err(RecvError::Closed) => return,
            },
            () = sleep_until(pending.due()) => {
                if !link.notify_reliably(TOOLS_LIST_CHANGED, serde_json::json!({})).await {
                    return;
                }
                pending.sent(Instant::now());
            }
        }
    }
}

/// The names of the ready servers; `None` once the supervisor is gone.
async fn ready_servers(supervisor: &SupervisorHandle) -> Option<HashSet<String>> {
    let targets = supervisor.targets(None).await.ok()?.unwrap_or_default();
    Some(targets.ready.into_iter().map(|target| target.config.name).collect())
}

/// Whether `notification` may change the tools a client lists, keeping
/// `ready` (the ready servers) up to date. Every `ready` counts, even for a
/// server already in the set (it may have restarted with other tools; and
/// the set may have been read after the client listed).
fn changes_tools(notification: &DaemonNotification, ready: &mut HashSet<String>) -> bool {
    match notification {
        DaemonNotification::StartupStatusUpdated(update) if update.status == ServerStatus::Ready => {
            ready.insert(update.name.clone());
            true
        }
        DaemonNotification::StartupStatusUpdated(update) => ready.remove(&update.name),
        DaemonNotification::ToolsListChanged(_) => true,
        _ => false,
    }
}

/// When the next `list_changed` is due.
#[derive(Debug, Default)]
struct Coalescer {
    /// A change not told yet.
    pending: bool,
    last_sent: Option<Instant>,
}

impl Coalescer {
    fn changed(&mut self) {
        self.pending = true;
    }

    /// When to send: now, or [`INTERVAL`] after the last one; `None` with nothing to send.
    fn due(&self) -> Option<Instant> {
        if !self.pending {
            return None;
        }
        let now = Instant::now();
        Some(self.last_sent.map_or(now, |last| (last + INTERVAL).max(now)))
    }

    fn sent(&mut self, at: Instant) {
        self.pending = false;
        self.last_sent = Some(at);
    }
}

/// Sleep until `due`, or forever when there is nothing due.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use corral_protocol::{StartupStatusUpdated, ToolsListChanged};

    use super::*;

    fn status(name: &str, status: ServerStatus) -> DaemonNotification {
        DaemonNotification::StartupStatusUpdated(StartupStatusUpdated::new(1, name, status))
    }

    #[test]
    fn ready_servers_coming_and_going_change_the_tools() {
        let mut ready = HashSet::from(["a".to_owned()]);
        assert!(
            !changes_tools(&status("b", ServerStatus::Starting), &mut ready),
            "b was not listed"
        );
        assert!(changes_tools(&status("b", ServerStatus::Ready), &mut ready));
        assert!(
            changes_tools(&status("b", ServerStatus::Ready), &mut ready),
            "ready again: may be new tools"
        );
        assert!(
            changes_tools(&status("a", ServerStatus::Failed), &mut ready),
            "a's tools are gone"
        );
        assert!(
            !changes_tools(&status("a", ServerStatus::Starting), &mut ready),
            "already gone"
        );
        assert!(changes_tools(&status("b", ServerStatus::Stopped), &mut ready));
        assert!(ready.is_empty());
        let listed = DaemonNotification::ToolsListChanged(ToolsListChanged::new(2, "c", 3));
        assert!(changes_tools(&listed, &mut ready));
    }

    #[test]
    fn changes_are_sent_at_once_then_at_most_once_per_interval() {
        let mut coalescer = Coalescer::default();
        assert_eq!(coalescer.due(), None, "nothing to say");
        coalescer.changed();
        let first = coalescer.due().expect("due");
        assert!(first <= Instant::now(), "the first change goes at once");
        coalescer.sent(first);
        assert_eq!(coalescer.due(), None);
        coalescer.changed();
        coalescer.changed();
        let second = coalescer.due().expect("due");
        assert!(second >= first + INTERVAL, "not before the interval is over");
        coalescer.sent(second);
        assert_eq!(coalescer.due(), None, "both changes told by one notification");
    }
}
