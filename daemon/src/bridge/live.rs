//! `notifications/{tools,prompts,resources}/list_changed` for one MCP
//! client: told whenever what it would list may have changed — a server it
//! sees became ready, stopped being ready (failed, stopped, removed,
//! restarting), or changed its tools, prompts or resources.
//!
//! One task per MCP connection ([`spawn`], at `initialize`) follows the
//! event hub and the set of ready servers the client sees. Coalesced, never
//! lost: a change is sent at once unless one was sent less than
//! [`INTERVAL`] ago; then one notification of each kind that changed goes
//! out when the interval is over, for every change meanwhile. Falling
//! behind the hub (`Lagged`) counts as a change of everything. The
//! notifications wait for room in the link's queue rather than being
//! dropped.
//!
//! The same task passes the log messages of the servers the client sees
//! (`notifications/message`) at or above the client's level
//! (`logging/setLevel`, `info` until it sets one), the logger named after
//! the server (`server` or `server/logger`). A log message is dropped, not
//! waited for, when the link's queue is full: a chatty server must not hold
//! up what the client asked for.
//!
//! The task lives as long as the connection: it ends when the connection's
//! writer is gone (the link's queue closed), which every connection's end
//! and the daemon's shutdown bring about, or when the hub or the supervisor
//! is gone; its end takes the client out of the bridge ([`Registered`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use corral_protocol::{DaemonNotification, ServerLog, ServerStatus};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::{Client, Registered};
use crate::hub::Hub;
use crate::hub::events::EventFrame;
use crate::hub::link::Link;
use crate::supervisor::SupervisorHandle;

/// MCP's notification that the tool list changed.
pub(crate) const TOOLS_LIST_CHANGED: &str = "notifications/tools/list_changed";
/// MCP's notification that the prompt list changed.
pub(crate) const PROMPTS_LIST_CHANGED: &str = "notifications/prompts/list_changed";
/// MCP's notification that the resource list changed.
pub(crate) const RESOURCES_LIST_CHANGED: &str = "notifications/resources/list_changed";
/// MCP's log message notification.
pub(crate) const LOG_MESSAGE: &str = "notifications/message";

/// At most one `list_changed` of each kind per this interval.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// What may have changed, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Changes {
    tools: bool,
    prompts: bool,
    resources: bool,
}

impl Changes {
    const ALL: Self = Self {
        tools: true,
        prompts: true,
        resources: true,
    };
    const NONE: Self = Self {
        tools: false,
        prompts: false,
        resources: false,
    };

    fn any(self) -> bool {
        self != Self::NONE
    }

    fn add(&mut self, other: Self) {
        self.tools |= other.tools;
        self.prompts |= other.prompts;
        self.resources |= other.resources;
    }

    /// The notifications to send for these changes.
    fn methods(self) -> impl Iterator<Item = &'static str> {
        [
            (self.tools, TOOLS_LIST_CHANGED),
            (self.prompts, PROMPTS_LIST_CHANGED),
            (self.resources, RESOURCES_LIST_CHANGED),
        ]
        .into_iter()
        .filter_map(|(changed, method)| changed.then_some(method))
    }
}

/// Follow the servers `client` sees for it, on `link`; `registered` is dropped when the task ends.
pub(crate) fn spawn(
    tasks: &TaskTracker,
    supervisor: SupervisorHandle,
    hub: Arc<Hub>,
    link: Arc<Link>,
    client: Arc<Client>,
    registered: Registered,
) {
    // Subscribed here, while `initialize` is being answered, not in the task:
    // a server that becomes ready before the task first runs is not missed.
    // And before the ready set is read, so no change falls between.
    let events = hub.events.subscribe().receiver;
    drop(hub);
    let span = tracing::debug_span!("mcp_client_lists", connection = link.id);
    tasks.spawn(follow(supervisor, events, link, client, registered).instrument(span));
}

async fn follow(
    supervisor: SupervisorHandle,
    mut events: broadcast::Receiver<Arc<EventFrame>>,
    link: Arc<Link>,
    client: Arc<Client>,
    registered: Registered,
) {
    let _registered = registered;
    let Some(mut ready) = visible_ready(&supervisor, &client).await else {
        return;
    };
    let mut pending = Coalescer::default();
    loop {
        tokio::select! {
            biased;
            () = link.closed() => return,
            event = events.recv() => match event {
                Ok(frame) => {
                    let changes = match &frame.notification {
                        // Which servers the client sees is the view's to say, with the owners of now.
                        DaemonNotification::StartupStatusUpdated(update) if update.status == ServerStatus::Ready => {
                            let Some(now_ready) = visible_ready(&supervisor, &client).await else { return };
                            ready = now_ready;
                            if ready.contains_key(&update.name) { Changes::ALL } else { Changes::NONE }
                        }
                        DaemonNotification::ServerLog(log) => {
                            forward_log(&link, &client, log, &ready);
                            Changes::NONE
                        }
                        notification => changes(notification, &mut ready),
                    };
                    pending.changed(changes);
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "fell behind the event hub; telling the client its lists may have changed");
                    pending.changed(Changes::ALL);
                    let Some(now_ready) = visible_ready(&supervisor, &client).await else { return };
                    ready = now_ready;
                }
                Err(RecvError::Closed) => return,
            },
            () = sleep_until(pending.due()) => {
                for method in pending.take().methods() {
                    if !link.notify_reliably(method, serde_json::json!({})).await {
                        return;
                    }
                }
                pending.sent(Instant::now());
            }
        }
    }
}

/// The ready servers `client` sees: registry name to the name it knows;
/// `None` once the supervisor is gone.
async fn visible_ready(supervisor: &SupervisorHandle, client: &Client) -> Option<HashMap<String, String>> {
    let targets = supervisor.targets(None).ok()?.unwrap_or_default();
    Some(
        targets
            .ready
            .into_iter()
            .filter_map(|target| {
                let shown = client.view.shown_name(&target.config.name, &targets.whose)?.to_owned();
                Some((target.config.name.clone(), shown))
            })
            .collect(),
    )
}

/// Pass `log` on to the client if it sees the server and the level is one it wants.
fn forward_log(link: &Link, client: &Client, log: &ServerLog, ready: &HashMap<String, String>) {
    let Some(shown) = ready.get(&log.name) else { return };
    // A level MCP does not have is passed on as it is, ranked as `info`.
    let rank = super::log_rank(&log.level).or_else(|| super::log_rank("info"));
    if rank < Some(client.log_rank.load(Ordering::Relaxed)) {
        return;
    }
    let logger = match &log.logger {
        Some(logger) => format!("{shown}/{logger}"),
        None => shown.clone(),
    };
    let params = serde_json::json!({ "level": log.level, "logger": logger, "data": log.data });
    // Dropped when the queue is full (the link logs that).
    let _ = link.notify(LOG_MESSAGE, params);
}

/// What `notification` (other than a server becoming ready) may change
/// for a client that sees the ready servers `ready`, keeping `ready` up
/// to date.
fn changes(notification: &DaemonNotification, ready: &mut HashMap<String, String>) -> Changes {
    let seen = |name: &str| ready.contains_key(name);
    match notification {
        DaemonNotification::StartupStatusUpdated(update) if update.status != ServerStatus::Ready => {
            if ready.remove(&update.name).is_some() {
                Changes::ALL
            } else {
                Changes::NONE
            }
        }
        DaemonNotification::ToolsListChanged(changed) if seen(&changed.name) => Changes {
            tools: true,
            ..Changes::NONE
        },
        DaemonNotification::PromptsListChanged(changed) if seen(&changed.name) => Changes {
            prompts: true,
            ..Changes::NONE
        },
        DaemonNotification::ResourcesListChanged(changed) if seen(&changed.name) => Changes {
            resources: true,
            ..Changes::NONE
        },
        _ => Changes::NONE,
    }
}

/// When the next `list_changed` is due.
#[derive(Debug, Default)]
struct Coalescer {
    /// Changes not told yet.
    pending: Changes,
    last_sent: Option<Instant>,
}

impl Coalescer {
    fn changed(&mut self, changes: Changes) {
        self.pending.add(changes);
    }

    /// The changes to tell now.
    fn take(&mut self) -> Changes {
        std::mem::take(&mut self.pending)
    }

    /// When to send: now, or [`INTERVAL`] after the last one; `None` with nothing to send.
    fn due(&self) -> Option<Instant> {
        if !self.pending.any() {
            return None;
        }
        let now = Instant::now();
        Some(self.last_sent.map_or(now, |last| (last + INTERVAL).max(now)))
    }

    fn sent(&mut self, at: Instant) {
        self.pending = Changes::NONE;
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
    use corral_protocol::{ListChanged, StartupStatusUpdated, ToolsListChanged};

    use super::*;

    fn status(name: &str, status: ServerStatus) -> DaemonNotification {
        DaemonNotification::StartupStatusUpdated(StartupStatusUpdated::new(1, name, status))
    }

    #[test]
    fn servers_leaving_and_lists_changing_change_what_the_client_lists() {
        let mut ready = HashMap::from([("a".to_owned(), "a".to_owned()), ("b".to_owned(), "b".to_owned())]);
        assert_eq!(
            changes(&status("c", ServerStatus::Starting), &mut ready),
            Changes::NONE,
            "c was not listed"
        );
        assert_eq!(changes(&status("a", ServerStatus::Failed), &mut ready), Changes::ALL);
        assert_eq!(
            changes(&status("a", ServerStatus::Starting), &mut ready),
            Changes::NONE,
            "already gone"
        );
        let tools = DaemonNotification::ToolsListChanged(ToolsListChanged::new(2, "b", 3));
        assert_eq!(
            changes(&tools, &mut ready),
            Changes {
                tools: true,
                ..Changes::NONE
            }
        );
        let prompts = DaemonNotification::PromptsListChanged(ListChanged::new(3, "b"));
        assert!(changes(&prompts, &mut ready).prompts);
        let resources = DaemonNotification::ResourcesListChanged(ListChanged::new(4, "b"));
        assert_eq!(
            changes(&resources, &mut ready).methods().collect::<Vec<_>>(),
            [RESOURCES_LIST_CHANGED]
        );
        let hidden = DaemonNotification::ToolsListChanged(ToolsListChanged::new(5, "theirs", 1));
        assert_eq!(
            changes(&hidden, &mut ready),
            Changes::NONE,
            "a server the client does not see"
        );
        assert_eq!(changes(&status("b", ServerStatus::Stopped), &mut ready), Changes::ALL);
        assert!(ready.is_empty());
    }

    #[test]
    fn changes_are_sent_at_once_then_at_most_once_per_interval() {
        let mut coalescer = Coalescer::default();
        assert_eq!(coalescer.due(), None, "nothing to say");
        coalescer.changed(Changes::ALL);
        let first = coalescer.due().expect("due");
        assert!(first <= Instant::now(), "the first change goes at once");
        coalescer.sent(first);
        assert_eq!(coalescer.due(), None);
        coalescer.changed(Changes {
            tools: true,
            ..Changes::NONE
        });
        coalescer.changed(Changes {
            prompts: true,
            ..Changes::NONE
        });
        let second = coalescer.due().expect("due");
        assert!(second >= first + INTERVAL, "not before the interval is over");
        assert_eq!(
            coalescer.take().methods().collect::<Vec<_>>(),
            [TOOLS_LIST_CHANGED, PROMPTS_LIST_CHANGED],
            "both changes told, one notification each"
        );
        coalescer.sent(second);
        assert_eq!(coalescer.due(), None);
    }
}
