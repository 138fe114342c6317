//! An MCP client's roots, for the servers it started for itself (its
//! session servers, `corral mcp --config`) and for no other.
//!
//! One owner: the client's connection. Its [`Link`] keeps what the client
//! last answered to `roots/list` ([`RootsCache`]) and a generation that every
//! `notifications/roots/list_changed` of the client bumps (the api calls
//! [`Link::roots_changed`]). A session server is handed a [`ClientRoots`],
//! a handle on its owner's link that exists only when that client declared
//! `capabilities.roots` ([`ClientRoots::of`]), when it is added
//! (`supervisor` → `server::ServerSpec`): its handler (`mcp::handler`)
//! answers the server's `roots/list` with [`ClientRoots::list`], and its task
//! sends the server `notifications/roots/list_changed` when
//! [`ClientRoots::changes`] moves. Nothing is registered anywhere else: the
//! handle goes with the server and is dropped with it (session servers end
//! with their connection), and neither the handler nor the task names the
//! bridge. Config servers are never handed one: they are shared by every
//! client.
//!
//! Rules:
//! - the client's answer is kept only when it declared `roots.listChanged`
//!   (it will say when they change); otherwise every `roots/list` of a
//!   server asks it;
//! - an answer to a fetch overtaken by a change is returned (it is what the
//!   client said) but not kept, and the servers are told of the change;
//! - a fetch waits at most the answer deadline (`--elicitation-timeout-sec`)
//!   and never more than [`ROOTS_DEADLINE`]: a client answers `roots/list`
//!   without its user. Then the request is withdrawn from the client
//!   (`notifications/cancelled`) and the caller gets
//!   [`FrontEndError::Unanswered`]; failures are not kept, the next
//!   `roots/list` asks again;
//! - fetches are not merged: servers asking before the first answer is kept
//!   each ask the client, as they would without corrald.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::link::{FrontEndError, Link};

/// The longest a server's `roots/list` waits for the client's answer.
pub(crate) const ROOTS_DEADLINE: Duration = Duration::from_secs(10);

/// MCP's request for the client's roots.
const ROOTS_LIST: &str = "roots/list";

/// What sets the deadline of a `roots/list`, for the client told it was withdrawn.
const ROOTS_DEADLINE_SET_BY: &str = "roots/list waits the answer deadline, at most 10 s";

/// How long a `roots/list` waits for the client, when the answer deadline is `answer_deadline`.
fn roots_deadline(answer_deadline: Duration) -> Duration {
    answer_deadline.min(ROOTS_DEADLINE)
}

/// What a client answered to `roots/list`, and its changes: a [`Link`]'s.
#[derive(Debug)]
pub(super) struct RootsCache {
    /// The client's last answer kept, with the generation it was asked at.
    answered: Mutex<Option<(u64, Value)>>,
    /// Bumped by each `notifications/roots/list_changed` of the client.
    generation: watch::Sender<u64>,
}

impl Default for RootsCache {
    fn default() -> Self {
        Self {
            answered: Mutex::new(None),
            generation: watch::Sender::new(0),
        }
    }
}

impl RootsCache {
    fn answered(&self) -> MutexGuard<'_, Option<(u64, Value)>> {
        // One value replaced whole: valid after any panic.
        self.answered.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client's roots changed: what it answered before is stale.
    pub(super) fn changed(&self) {
        self.generation
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }
}

/// The roots of the MCP client that started a server for itself: what that
/// server's `roots/list` is answered with.
#[derive(Debug, Clone)]
pub(crate) struct ClientRoots {
    link: Arc<Link>,
}

impl ClientRoots {
    /// The roots of the client on `link`, if it declared `capabilities.roots`
    /// at `initialize` (before that, or without it: `None`).
    pub(crate) fn of(link: &Arc<Link>) -> Option<Self> {
        link.can_answer().roots.then(|| Self { link: link.clone() })
    }

    /// The client's connection.
    pub(crate) fn connection(&self) -> u64 {
        self.link.id
    }

    /// Whether the client says when its roots change (so the servers can be told).
    pub(crate) fn list_changed(&self) -> bool {
        self.link.can_answer().roots_list_changed
    }

    /// Moves each time the client says its roots changed.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.link.roots.generation.subscribe()
    }

    /// The client's `roots/list` result (`{"roots": [...]}`, as it answered),
    /// kept from before if nothing changed since, else asked for, waiting at
    /// most `deadline` (capped at [`ROOTS_DEADLINE`]). Dropping the future
    /// withdraws the request from the client.
    pub(crate) async fn list(&self, deadline: Duration) -> Result<Value, FrontEndError> {
        let cache = &self.link.roots;
        let keep = self.list_changed();
        let generation = *cache.generation.borrow();
        if keep
            && let Some((at, roots)) = cache.answered().as_ref()
            && *at == generation
        {
            return Ok(roots.clone());
        }
        let deadline = roots_deadline(deadline);
        let roots = self
            .link
            .request(ROOTS_LIST, json!({}), deadline, ROOTS_DEADLINE_SET_BY)
            .await?;
        tracing::debug!(connection = self.link.id, generation, "an MCP client gave its roots");
        if keep {
            let mut answered = cache.answered();
            // Not over the answer of a fetch that began after a later change.
            if answered.as_ref().is_none_or(|(at, _)| *at <= generation) {
                *answered = Some((generation, roots.clone()));
            }
        }
        Ok(roots)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;
    use crate::hub::link::{CanAnswer, MCP_CANCELLED};
    use crate::hub::routes::FrontEnds;

    /// Long enough never to pass in a test that does not wait for it.
    const NO_DEADLINE: Duration = Duration::from_secs(3600);

    /// A link of an MCP client that declared `roots` (with `listChanged` or not).
    fn client(list_changed: bool) -> (Arc<Link>, mpsc::Receiver<String>) {
        let frontends = FrontEnds::default();
        let (link, queue) = frontends.new_link(7, crate::hub::link::Door::Socket);
        link.set_dialect(crate::hub::link::Dialect::Mcp);
        let can = CanAnswer {
            roots: true,
            roots_list_changed: list_changed,
            ..CanAnswer::default()
        };
        frontends.register(&link, can);
        (link, queue)
    }

    /// The next request the client got, answered with `roots`; its method.
    async fn answer(link: &Link, queue: &mut mpsc::Receiver<String>, roots: &Value) -> String {
        let sent = queue.recv().await.expect("a request for the client");
        let sent: Value = serde_json::from_str(&sent).expect("JSON");
        let id = sent["id"].as_u64().expect("a request id");
        assert!(link.resolve(id, Ok(json!({ "roots": roots }))), "{sent}");
        sent["method"].as_str().expect("a method").to_owned()
    }

    #[tokio::test]
    async fn only_a_client_that_declared_roots_has_them() {
        let frontends = FrontEnds::default();
        let (link, _queue) = frontends.new_link(1, crate::hub::link::Door::Socket);
        assert!(ClientRoots::of(&link).is_none(), "before `initialize`");
        frontends.register(&link, CanAnswer::default());
        assert!(ClientRoots::of(&link).is_none(), "not declared");
        let (link, _queue) = client(false);
        let roots = ClientRoots::of(&link).expect("declared");
        assert_eq!(roots.connection(), 7);
        assert!(!roots.list_changed());
    }

    #[tokio::test]
    async fn the_answer_is_kept_until_the_client_says_its_roots_changed() {
        let (link, mut queue) = client(true);
        let roots = ClientRoots::of(&link).expect("declared");
        let changes = roots.changes();
        let first = json!([{"uri": "file:///one"}]);
        let (listed, method) = tokio::join!(roots.list(NO_DEADLINE), answer(&link, &mut queue, &first));
        assert_eq!(method, "roots/list");
        assert_eq!(listed.expect("answered"), json!({ "roots": first }));

        // Kept: the client is not asked again.
        assert_eq!(roots.list(NO_DEADLINE).await.expect("kept"), json!({ "roots": first }));
        assert!(queue.try_recv().is_err(), "the client was asked again");
        assert!(!changes.has_changed().expect("the link is there"));

        // Changed: the servers' tasks see it, and the next list asks again.
        link.roots_changed();
        assert!(changes.has_changed().expect("the link is there"));
        let second = json!([{"uri": "file:///two", "name": "two"}]);
        let (listed, _) = tokio::join!(roots.list(NO_DEADLINE), answer(&link, &mut queue, &second));
        assert_eq!(listed.expect("answered"), json!({ "roots": second }));
        assert_eq!(roots.list(NO_DEADLINE).await.expect("kept"), json!({ "roots": second }));
        assert!(queue.try_recv().is_err());
    }

    #[tokio::test]
    async fn an_answer_overtaken_by_a_change_is_given_but_not_kept() {
        let (link, mut queue) = client(true);
        let roots = ClientRoots::of(&link).expect("declared");
        let old = json!([{"uri": "file:///old"}]);
        let answered = async {
            let sent = queue.recv().await.expect("a request");
            // The client's roots change while its answer is on the way.
            link.roots_changed();
            let id = serde_json::from_str::<Value>(&sent).expect("JSON")["id"]
                .as_u64()
                .expect("an id");
            link.resolve(id, Ok(json!({ "roots": old })));
        };
        let (listed, ()) = tokio::join!(roots.list(NO_DEADLINE), answered);
        assert_eq!(listed.expect("answered"), json!({ "roots": old }));
        let new = json!([{"uri": "file:///new"}]);
        let (listed, _) = tokio::join!(roots.list(NO_DEADLINE), answer(&link, &mut queue, &new));
        assert_eq!(listed.expect("asked again"), json!({ "roots": new }));
    }

    #[tokio::test]
    async fn without_list_changed_every_list_asks_the_client() {
        let (link, mut queue) = client(false);
        let roots = ClientRoots::of(&link).expect("declared");
        for uri in ["file:///a", "file:///b"] {
            let given = json!([{ "uri": uri }]);
            let (listed, _) = tokio::join!(roots.list(NO_DEADLINE), answer(&link, &mut queue, &given));
            assert_eq!(listed.expect("answered"), json!({ "roots": given }));
        }
    }

    #[test]
    fn a_list_waits_the_answer_deadline_and_never_more_than_ten_seconds() {
        assert_eq!(roots_deadline(Duration::from_secs(600)), ROOTS_DEADLINE);
        assert_eq!(ROOTS_DEADLINE, Duration::from_secs(10));
        assert_eq!(roots_deadline(Duration::from_secs(2)), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_unanswered_list_is_withdrawn_at_the_deadline_and_not_kept() {
        let (link, mut queue) = client(true);
        let roots = ClientRoots::of(&link).expect("declared");
        let deadline = Duration::from_millis(50);
        let listed = roots.list(deadline).await;
        assert!(
            matches!(listed, Err(FrontEndError::Unanswered(waited)) if waited == deadline),
            "{listed:?}"
        );
        let asked: Value = serde_json::from_str(&queue.recv().await.expect("asked")).expect("JSON");
        assert_eq!(asked["method"], "roots/list");
        let withdrawn: Value = serde_json::from_str(&queue.recv().await.expect("withdrawn")).expect("JSON");
        assert_eq!(withdrawn["method"], MCP_CANCELLED);
        assert_eq!(withdrawn["params"]["requestId"], asked["id"]);
        assert_eq!(
            withdrawn["params"]["reason"],
            "corral withdrew this request: no answer within 0.05s (roots/list waits the answer deadline, at most 10 s)"
        );
        // Nothing was kept: the next list asks again.
        let given = json!([{"uri": "file:///late"}]);
        let (listed, _) = tokio::join!(roots.list(NO_DEADLINE), answer(&link, &mut queue, &given));
        assert_eq!(listed.expect("answered"), json!({ "roots": given }));
    }
}
