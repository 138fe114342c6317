//! The way back from MCP servers to front-ends.
//!
//! - Requests a server makes of its client (`elicitation/create`,
//!   `sampling/createMessage`) go only to the front-end whose `tools/call` to
//!   that server is running ([`FrontEnds::caller`]), and only if it declared
//!   it can answer them (for elicitation, in the request's mode: form or
//!   URL); otherwise they are declined, with the reason. When no front-end
//!   or several are calling that server, nobody is asked: MCP's requests do
//!   not name the call they belong to. One application's question is never
//!   shown to another application. Each connection has a [`Link`]: the
//!   daemon's requests to it are numbered, their answers are matched by id,
//!   an abandoned request is withdrawn, and so is one whose front-end's
//!   calls to that server have all ended ([`FrontEnds::calls_ended`]: the
//!   call that caused it was cancelled or timed out) or that is not answered
//!   within [`FrontEnds::answer_deadline`] (`--elicitation-timeout-sec`,
//!   600 s); `mcp::handler` then answers the server cancelled. The link
//!   words each in the front-end's dialect.
//! - Progress (`notifications/progress`) goes to the connection whose
//!   request carried a progress token: the request to the server carries
//!   rmcp's token (unique per server session), mapped back to the
//!   front-end's while the request runs, and worded in the front-end's
//!   dialect (`mcpServer/progress`, or MCP's `notifications/progress` for an
//!   MCP client). It goes into the link's bounded queue with `try_send`:
//!   progress a front-end does not read
//!   fast enough is dropped, never queued without bound, and counted: per
//!   connection ([`Link::take_missed_progress`], which the connection's writer
//!   turns into `mcpServer/progress/lagged` for a Corral front-end) and for
//!   `daemon/status` ([`FrontEnds::dropped_progress`]).
//! - While an elicitation waits on the user, the timeout of the calls of the
//!   asked front-end to that server is paused
//!   ([`CallGuard::within`], keyed by connection and server);
//!   nobody else's clock stops.
//! - Resource subscriptions are counted across front-ends: the server is
//!   subscribed once and unsubscribed when the last front-end lets go; the
//!   server's task subscribes again when the server comes back ready or its
//!   HTTP session is renewed.
//!
//! Invariants: a server's request never goes to a front-end that did not
//! call that server, and is withdrawn from it once it has no call to that
//! server running; one front-end's pending elicitation never stops another
//! front-end's clock; no request to a front-end waits without a deadline; no
//! progress is dropped without the front-end being told and the drop counted.
//!
//! Like the event hub, this knows nothing of MCP itself; `mcp` and
//! the `api` handlers use it.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Notify;

use super::link::{CanAnswer, Door, Link};
use crate::FastMap;

/// How long a front-end has to answer a server's request (an elicitation
/// waits on a person) before it is withdrawn and answered as cancelled.
pub(crate) const DEFAULT_ANSWER_DEADLINE: Duration = Duration::from_secs(600);

/// Registry of front-ends and what is routed to them.
#[derive(Debug)]
pub(crate) struct FrontEnds {
    state: Mutex<State>,
    /// Woken whenever a call ends ([`FrontEnds::calls_ended`]), when someone waits for that.
    call_ended: Notify,
    /// How many [`FrontEnds::calls_ended`] wait: a call that ends wakes them only then.
    watching_ends: AtomicUsize,
    /// [`FrontEnds::answer_deadline`], in milliseconds.
    answer_deadline_ms: AtomicU64,
    /// [`FrontEnds::dropped_progress`].
    dropped_progress: AtomicU64,
}

impl Default for FrontEnds {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            call_ended: Notify::new(),
            watching_ends: AtomicUsize::new(0),
            answer_deadline_ms: AtomicU64::new(u64::try_from(DEFAULT_ANSWER_DEADLINE.as_millis()).unwrap_or(u64::MAX)),
            dropped_progress: AtomicU64::new(0),
        }
    }
}

/// Who may answer a server's request: the front-end whose call asked.
#[derive(Debug)]
pub(crate) enum Caller {
    /// Exactly one front-end has calls to the server running, and it can answer.
    One(Arc<Link>),
    /// No request can go to a front-end; the reason, for the server and the log.
    Declined(&'static str),
}

#[derive(Debug, Default)]
struct State {
    /// Initialized connections by id.
    links: FastMap<u64, Weak<Link>>,
    /// (server, corrald's progress token as JSON text) to the connection and
    /// the token it gave.
    progress: FastMap<(String, String), (Weak<Link>, Value)>,
    /// How many tokens [`FrontEnds::fresh_token`] made.
    tokens_made: u64,
    /// The pause clocks, per connection asked and server: stopped while an
    /// elicitation waits on the user, and counting the calls running
    /// ([`PauseClock::calls`]). Calls and pause guards hold their clock
    /// itself; an entry goes with its connection, and they are as many as the
    /// pairs that ever had a call.
    paused: FastMap<u64, FastMap<String, Arc<PauseClock>>>,
    /// (server, uri) to the connections subscribed to it.
    subscriptions: HashMap<(String, String), BTreeSet<u64>>,
}

/// Which kind of server request a front-end must be able to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capability {
    /// `elicitation/create`, in this mode.
    Elicitation(ElicitationMode),
    /// `sampling/createMessage`.
    Sampling,
}

/// How an elicitation asks the user: MCP's `mode` (form when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ElicitationMode {
    /// Fields to fill in (`requestedSchema`).
    Form,
    /// A URL to open (`url`).
    Url,
}

/// Why a front-end that can answer `can` cannot answer a `capability`
/// request; `None` when it can.
fn cannot_answer(can: CanAnswer, capability: Capability) -> Option<&'static str> {
    let declared_elicitation = can.form_elicitation || can.url_elicitation;
    match capability {
        Capability::Elicitation(_) if !declared_elicitation => {
            Some("the front-end whose call asked cannot answer it (it did not declare `capabilities.elicitation`)")
        }
        Capability::Elicitation(ElicitationMode::Form) if !can.form_elicitation => Some(
            "the front-end whose call asked cannot answer it: this is a form-mode elicitation, and it declared \
             URL mode only (`capabilities.elicitation.url` without `form`)",
        ),
        Capability::Elicitation(ElicitationMode::Url) if !can.url_elicitation => Some(
            "the front-end whose call asked cannot answer it: this is a URL-mode elicitation, and it declared \
             form mode only (no `capabilities.elicitation.url`)",
        ),
        Capability::Sampling if !can.sampling => {
            Some("the front-end whose call asked cannot answer it (it did not declare `capabilities.sampling`)")
        }
        _ => None,
    }
}

impl FrontEnds {
    fn state(&self) -> MutexGuard<'_, State> {
        // Plain maps, consistent after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A link for the new connection `id`, which came in at `door`; the receiver feeds the connection's writer.
    pub(crate) fn new_link(&self, id: u64, door: Door) -> (Arc<Link>, tokio::sync::mpsc::Receiver<String>) {
        Link::new(id, door)
    }

    /// `link` finished `initialize`, saying it can answer `can`.
    pub(crate) fn register(&self, link: &Arc<Link>, can: CanAnswer) {
        let _ = link.can_answer.set(can);
        self.state().links.insert(link.id, Arc::downgrade(link));
    }

    /// Connection `id` ended; returns the subscriptions nobody holds any more.
    pub(crate) fn disconnected(&self, id: u64) -> Vec<(String, String)> {
        let mut state = self.state();
        state.links.remove(&id);
        // Its calls have ended (and with them their watchers): a call still counted would
        // no longer be seen by `caller`.
        let clocks = state.paused.remove(&id);
        debug_assert!(
            clocks.is_none_or(|clocks| clocks.values().all(|clock| !clock.running())),
            "connection {id} disconnected with calls still running"
        );
        let mut released = Vec::new();
        state.subscriptions.retain(|key, holders| {
            if holders.remove(&id) && holders.is_empty() {
                released.push(key.clone());
            }
            !holders.is_empty()
        });
        released
    }

    /// Progress notifications dropped since the daemon started because
    /// their front-end's queue was full (`daemon/status`).
    pub(crate) fn dropped_progress(&self) -> u64 {
        self.dropped_progress.load(Ordering::Relaxed)
    }

    /// How long a front-end has to answer a server's request.
    pub(crate) fn answer_deadline(&self) -> Duration {
        Duration::from_millis(self.answer_deadline_ms.load(Ordering::Relaxed))
    }

    /// Set [`FrontEnds::answer_deadline`] (`--elicitation-timeout-sec`).
    pub(crate) fn set_answer_deadline(&self, deadline: Duration) {
        self.answer_deadline_ms.store(
            u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The front-end that may answer a `capability` request of `server`: the
    /// one whose call to `server` is running, if it declared the capability.
    ///
    /// MCP does not say which call a server's request belongs to (on stdio it
    /// carries no reference to one), so corrald goes by who is calling: when
    /// calls of several front-ends to `server` run at once it cannot tell
    /// whose call asked, and declines rather than ask the wrong application.
    /// No call running (a server asking on its own) is declined too.
    pub(crate) fn caller(&self, server: &str, capability: Capability) -> Caller {
        let state = self.state();
        let mut callers = state
            .paused
            .iter()
            .filter(|(_, clocks)| clocks.get(server).is_some_and(|clock| clock.running()))
            .map(|(connection, _)| *connection);
        let Some(first) = callers.next() else {
            return Caller::Declined("no front-end has a call to this server running, so no front-end asked");
        };
        if callers.any(|connection| connection != first) {
            return Caller::Declined(
                "calls of several front-ends to this server are running and corrald cannot tell whose call asked",
            );
        }
        let Some(link) = state.links.get(&first).and_then(Weak::upgrade) else {
            return Caller::Declined("the front-end whose call asked has disconnected");
        };
        match cannot_answer(link.can_answer(), capability) {
            Some(reason) => Caller::Declined(reason),
            None => Caller::One(link),
        }
    }

    /// Whether `link`, whose call a server's request names (an MCP
    /// `input_required` result, SEP-2322), can answer a `capability`
    /// request: the same check as [`FrontEnds::caller`]'s, without the
    /// guessing, since the request names its call; the reason when it cannot.
    pub(crate) fn can_ask(&self, link: &Link, capability: Capability) -> Result<(), &'static str> {
        match cannot_answer(link.can_answer(), capability) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    /// Record a call of connection `connection` to `server` until the guard
    /// drops; the guard's [`CallGuard::within`] runs the call under its
    /// active-time limit. One lock for both.
    pub(crate) fn call_started(self: &Arc<Self>, server: &str, connection: u64) -> CallGuard {
        let mut state = self.state();
        let clock = State::pause_clock(&mut state, server, connection);
        // Under the lock: `caller` sees every call that started before it looked.
        clock.calls.fetch_add(1, Ordering::SeqCst);
        drop(state);
        CallGuard {
            frontends: self.clone(),
            clock,
        }
    }

    /// Completes once `connection` has no call to `server` running any more
    /// (at once if it has none): the call whose server asked `connection`
    /// something has ended, so nothing needs the answer.
    pub(crate) async fn calls_ended(&self, server: &str, connection: u64) {
        // Counted before looking (and uncounted however this ends), so a call that
        // ends after the look sees someone is watching and wakes it.
        self.watching_ends.fetch_add(1, Ordering::SeqCst);
        let _watching = WatchingEnds(&self.watching_ends);
        loop {
            // Registered before looking, so an end between the look and the wait is not missed.
            let ended = self.call_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let running = self
                .state()
                .paused
                .get(&connection)
                .and_then(|clocks| clocks.get(server))
                .is_some_and(|clock| clock.running());
            if !running {
                return;
            }
            ended.await;
        }
    }

    /// Pause the timeouts of `connection`'s calls to `server` until the guard drops.
    pub(crate) fn pause(self: &Arc<Self>, server: &str, connection: u64) -> PauseGuard {
        let clock = State::pause_clock(&mut self.state(), server, connection);
        clock.pause();
        PauseGuard { clock }
    }

    /// A progress token of corrald's never made before: `about` (a task's id), after a number,
    /// so two routes never share a key even when what they are about is the same.
    pub(crate) fn fresh_token(&self, about: &str) -> Value {
        let mut state = self.state();
        state.tokens_made += 1;
        Value::String(format!("corrald-task:{}:{about}", state.tokens_made))
    }

    /// Route progress `server` sends with token `ours` (what corrald put on
    /// the request) to `link`, as its own token `theirs`, until the guard drops.
    pub(crate) fn progress_route(
        self: &Arc<Self>,
        server: &str,
        link: &Arc<Link>,
        ours: &Value,
        theirs: Value,
    ) -> ProgressRoute {
        let key = (server.to_owned(), ours.to_string());
        self.state()
            .progress
            .insert(key.clone(), (Arc::downgrade(link), theirs));
        ProgressRoute {
            frontends: self.clone(),
            key,
        }
    }

    /// Send progress `server` reported with token `ours` (what corrald put on
    /// the request) to the front-end whose request it is, with that
    /// front-end's own token; nothing when no running request has `ours`.
    pub(crate) fn route_progress(
        &self,
        server: &str,
        ours: &Value,
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    ) {
        let target = {
            let state = self.state();
            state
                .progress
                .get(&(server.to_owned(), ours.to_string()))
                .and_then(|(link, theirs)| Some((link.upgrade()?, theirs.clone())))
        };
        let Some((link, theirs)) = target else {
            tracing::debug!(server, %ours, "progress for no running request");
            return;
        };
        if !link.notify_progress(server, theirs, (progress, total, message)) {
            // Counted, and told the front-end by its writer, before it
            // writes anything else (so before the request's answer).
            link.missed_progress.fetch_add(1, Ordering::Relaxed);
            self.dropped_progress.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connection `connection` subscribes to `uri` of `server`; `true` if it is the first.
    pub(crate) fn subscribe(&self, server: &str, uri: &str, connection: u64) -> bool {
        let mut state = self.state();
        let holders = state
            .subscriptions
            .entry((server.to_owned(), uri.to_owned()))
            .or_default();
        let first = holders.is_empty();
        holders.insert(connection);
        first
    }

    /// Connection `connection` unsubscribes; `Some(true)` if it was the last
    /// one, `None` if it was not subscribed.
    pub(crate) fn unsubscribe(&self, server: &str, uri: &str, connection: u64) -> Option<bool> {
        let mut state = self.state();
        let key = (server.to_owned(), uri.to_owned());
        let holders = state.subscriptions.get_mut(&key)?;
        if !holders.remove(&connection) {
            return None;
        }
        let last = holders.is_empty();
        if last {
            state.subscriptions.remove(&key);
        }
        Some(last)
    }

    /// The URIs of `server` some front-end is subscribed to (to renew after a restart).
    pub(crate) fn subscriptions(&self, server: &str) -> Vec<String> {
        self.state()
            .subscriptions
            .keys()
            .filter(|(subscribed, _)| subscribed == server)
            .map(|(_, uri)| uri.clone())
            .collect()
    }
}

impl State {
    /// The clock of `connection`'s calls to `server`, made at its first call (or pause).
    fn pause_clock(state: &mut State, server: &str, connection: u64) -> Arc<PauseClock> {
        let servers = state.paused.entry(connection).or_default();
        if let Some(clock) = servers.get(server) {
            return Arc::clone(clock);
        }
        let clock = Arc::<PauseClock>::default();
        servers.insert(server.to_owned(), Arc::clone(&clock));
        clock
    }
}

/// The clock of one front-end's calls to one server: it stops while one of
/// them waits on that front-end's user ([`FrontEnds::pause`]). Read when a
/// call starts (the pauses before it) and again only when its deadline passes.
#[derive(Debug, Default)]
pub(crate) struct PauseClock {
    state: Mutex<Pauses>,
    /// Woken when the last pause ends.
    resumed: Notify,
    /// Calls of this front-end to this server running ([`CallGuard`]s alive).
    calls: AtomicUsize,
}

#[derive(Debug, Default)]
struct Pauses {
    /// Pauses going on.
    count: usize,
    /// How long the pauses that ended lasted, together.
    ended: Duration,
    /// When the pauses going on began.
    since: Option<Instant>,
}

impl PauseClock {
    /// A call of this front-end to this server is running.
    fn running(&self) -> bool {
        self.calls.load(Ordering::SeqCst) > 0
    }

    fn pauses(&self) -> MutexGuard<'_, Pauses> {
        // Plain numbers: valid after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pause(&self) {
        let mut pauses = self.pauses();
        if pauses.count == 0 {
            pauses.since = Some(Instant::now());
        }
        pauses.count += 1;
    }

    fn resume(&self) {
        let mut pauses = self.pauses();
        pauses.count = pauses.count.saturating_sub(1);
        if pauses.count > 0 {
            return;
        }
        if let Some(since) = pauses.since.take() {
            pauses.ended += since.elapsed();
        }
        drop(pauses);
        self.resumed.notify_waiters();
    }

    /// How long the clock was paused in all until `now`, and whether it is now.
    fn paused(&self, now: Instant) -> (Duration, bool) {
        let pauses = self.pauses();
        let going_on = pauses
            .since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since));
        (pauses.ended + going_on, pauses.count > 0)
    }
}

/// `future` for at most `limit` of active time: time while `clock` is paused does not count.
/// One timer, set for `limit`; only when it fires is the clock read, and the timer set
/// again for what is left (after the pause going on, if any, has ended).
async fn within_active_time<F: Future>(
    clock: &PauseClock,
    limit: Duration,
    mut future: Pin<&mut F>,
) -> Option<F::Output> {
    let started = Instant::now();
    let (paused_before, _) = clock.paused(started);
    let Some(deadline) = started.checked_add(limit) else {
        return Some(future.await); // a limit beyond any clock's range is none
    };
    let timer = tokio::time::sleep_until(deadline.into());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            biased;
            output = future.as_mut() => return Some(output),
            () = &mut timer => {}
        }
        // Registered before the clock is read: a resume after the read wakes it.
        let resumed = clock.resumed.notified();
        tokio::pin!(resumed);
        resumed.as_mut().enable();
        let now = Instant::now();
        let (paused, paused_now) = clock.paused(now);
        let active = now
            .saturating_duration_since(started)
            .saturating_sub(paused.saturating_sub(paused_before));
        if active >= limit {
            return None;
        }
        if paused_now {
            // The timer has fired: the next look at the clock comes right after the resume.
            tokio::select! {
                biased;
                output = future.as_mut() => return Some(output),
                () = resumed => {}
            }
        } else if let Some(deadline) = now.checked_add(limit - active) {
            timer.as_mut().reset(deadline.into());
        } else {
            return Some(future.await);
        }
    }
}

/// Uncounts a waiter of [`FrontEnds::calls_ended`].
struct WatchingEnds<'a>(&'a AtomicUsize);

impl Drop for WatchingEnds<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A call of one front-end to one server, recorded in [`FrontEnds`] until dropped.
#[derive(Debug)]
pub(crate) struct CallGuard {
    frontends: Arc<FrontEnds>,
    /// The clock of this front-end's calls to this server, which counts them.
    clock: Arc<PauseClock>,
}

impl CallGuard {
    /// Run `future`, this call, for at most `limit` of active time: the clock
    /// stops while an elicitation of its server asked of its front-end waits on
    /// the user ([`FrontEnds::pause`]). `None` on timeout.
    ///
    /// `future` is pinned by the caller: a call's future is kilobytes, and an async fn
    /// taking it by value keeps its own copy of it (the argument), and another for each
    /// place it is pinned or awaited.
    pub(crate) fn within<F: Future>(
        &self,
        limit: Duration,
        future: Pin<&mut F>,
    ) -> impl Future<Output = Option<F::Output>> {
        within_active_time(&self.clock, limit, future)
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.clock.calls.fetch_sub(1, Ordering::SeqCst);
        // After the call is uncounted (both in one total order, SeqCst): a waiter counted
        // before it looked either saw the call gone or is woken here.
        if self.frontends.watching_ends.load(Ordering::SeqCst) > 0 {
            self.frontends.call_ended.notify_waiters();
        }
    }
}

/// Resumes call timeouts of a server when an elicitation is answered.
#[derive(Debug)]
pub(crate) struct PauseGuard {
    clock: Arc<PauseClock>,
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        self.clock.resume();
    }
}

/// A progress route, removed when dropped.
#[derive(Debug)]
pub(crate) struct ProgressRoute {
    frontends: Arc<FrontEnds>,
    key: (String, String),
}

impl Drop for ProgressRoute {
    fn drop(&mut self) {
        self.frontends.state().progress.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::link::{CANCEL_REQUEST, Dialect, FrontEndError, LINK_QUEUE, MCP_CANCELLED};
    use serde_json::json;

    const FORM: Capability = Capability::Elicitation(ElicitationMode::Form);
    const URL: Capability = Capability::Elicitation(ElicitationMode::Url);

    /// Long enough never to pass in a test that does not wait for it.
    const NO_DEADLINE: Duration = Duration::from_secs(3600);

    fn capabilities(elicitation: bool, sampling: bool) -> CanAnswer {
        CanAnswer {
            form_elicitation: elicitation,
            url_elicitation: elicitation,
            sampling,
            ..CanAnswer::default()
        }
    }

    #[tokio::test]
    async fn only_the_calling_front_end_is_asked_and_only_if_it_can_answer() {
        let frontends = Arc::new(FrontEnds::default());
        let (a, _a_rx) = frontends.new_link(1, Door::Socket);
        let (b, _b_rx) = frontends.new_link(2, Door::Socket);
        let (c, _c_rx) = frontends.new_link(3, Door::Socket);
        frontends.register(&a, capabilities(true, false));
        frontends.register(&b, capabilities(true, true));
        frontends.register(&c, capabilities(false, false));
        let target = |capability| match frontends.caller("s", capability) {
            Caller::One(link) => Ok(link.id),
            Caller::Declined(reason) => Err(reason),
        };
        // Capable and recently active front-ends are not asked without a call of theirs.
        assert!(target(FORM).is_err_and(|reason| reason.contains("no front-end has a call")));
        let _other_server = frontends.call_started("t", 2);
        assert!(target(FORM).is_err());
        {
            let _call = frontends.call_started("s", 1);
            let _second = frontends.call_started("s", 1);
            assert_eq!(target(FORM), Ok(1));
            assert!(
                target(Capability::Sampling).is_err_and(|reason| reason.contains("capabilities.sampling")),
                "the caller cannot sample: declined, never sent to the one that can"
            );
            let _incapable = frontends.call_started("s", 3);
            assert!(target(FORM).is_err_and(|reason| reason.contains("several front-ends")));
        }
        let _incapable = frontends.call_started("s", 3);
        assert!(target(FORM).is_err_and(|reason| reason.contains("capabilities.elicitation")));
        drop(c);
        assert!(target(FORM).is_err_and(|reason| reason.contains("disconnected")));
    }

    #[tokio::test]
    async fn answers_are_matched_by_id_and_abandoned_requests_withdrawn() {
        let frontends = FrontEnds::default();
        let (link, mut outbound) = frontends.new_link(1, Door::Socket);
        let asking = {
            let link = link.clone();
            tokio::spawn(async move { link.ask("s", Capability::Sampling, json!({"x": 1}), NO_DEADLINE).await })
        };
        let sent: Value = serde_json::from_str(&outbound.recv().await.expect("request sent")).expect("JSON");
        assert_eq!(sent["method"], "mcpServer/sampling/createMessage");
        let id = sent["id"].as_u64().expect("numeric id");
        assert!(!link.resolve(id + 100, Ok(json!(null))), "unknown ids are not matched");
        assert!(link.resolve(id, Ok(json!({"ok": true}))));
        assert_eq!(asking.await.expect("joined").expect("answered"), json!({"ok": true}));

        let abandoned = {
            let link = link.clone();
            tokio::spawn(async move { link.ask("s", FORM, json!({}), NO_DEADLINE).await })
        };
        let sent: Value = serde_json::from_str(&outbound.recv().await.expect("request sent")).expect("JSON");
        abandoned.abort();
        let cancel: Value = serde_json::from_str(&outbound.recv().await.expect("cancel sent")).expect("JSON");
        assert_eq!(cancel["method"], CANCEL_REQUEST);
        assert_eq!(cancel["params"]["id"], sent["id"]);
        assert!(!link.resolve(sent["id"].as_u64().expect("id"), Ok(json!(null))));

        let waiting = {
            let link = link.clone();
            tokio::spawn(async move { link.ask("s", FORM, json!({}), NO_DEADLINE).await })
        };
        outbound.recv().await.expect("request sent");
        link.close();
        assert!(matches!(
            waiting.await.expect("joined"),
            Err(FrontEndError::Disconnected)
        ));
        assert!(matches!(
            link.ask("s", FORM, json!({}), NO_DEADLINE).await,
            Err(FrontEndError::Disconnected)
        ));
    }

    /// A call of connection 1 to server `s` that takes `lasts`, within `limit` of active time.
    async fn call_lasting(frontends: &Arc<FrontEnds>, limit: Duration, lasts: Duration) -> Option<()> {
        frontends
            .call_started("s", 1)
            .within(limit, std::pin::pin!(tokio::time::sleep(lasts)))
            .await
    }

    #[tokio::test]
    async fn the_timeout_stops_while_an_elicitation_waits() {
        // Real time, with wide margins (no paused clock: tokio's test-util
        // feature would make `cargo test` rebuild every tokio dependent).
        let frontends = Arc::new(FrontEnds::default());
        let limit = Duration::from_secs(1);
        let outcome = frontends
            .call_started("s", 1)
            .within(limit, std::pin::pin!(std::future::pending::<()>()))
            .await;
        assert_eq!(outcome, None, "not paused: the limit applies");
        // Paused from 0.2 s to 2.5 s: a 3 s call has used about 0.7 s.
        let pauser = {
            let frontends = frontends.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let pause = frontends.pause("s", 1);
                tokio::time::sleep(Duration::from_millis(2300)).await;
                drop(pause);
            })
        };
        let outcome = call_lasting(&frontends, limit, Duration::from_secs(3)).await;
        assert_eq!(outcome, Some(()), "the pause did not count");
        pauser.await.expect("joined");
        let other_server = frontends.pause("other", 1);
        let other_connection = frontends.pause("s", 2);
        let outcome = call_lasting(&frontends, limit, Duration::from_secs(3)).await;
        assert_eq!(
            outcome, None,
            "another server's pause, or another connection's, does not count"
        );
        drop(other_server);
        drop(other_connection);
    }

    #[tokio::test]
    async fn a_pause_going_on_when_a_call_starts_stops_its_clock_and_no_limit_is_too_long() {
        let frontends = Arc::new(FrontEnds::default());
        let pause = frontends.pause("s", 1);
        let resumer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            drop(pause);
        });
        // 1.2 s of wall time, all of it paused: a 0.5 s limit is not used up.
        let outcome = call_lasting(&frontends, Duration::from_millis(500), Duration::from_millis(1200)).await;
        assert_eq!(outcome, Some(()), "paused from before the call began");
        resumer.await.expect("joined");
        let outcome = call_lasting(&frontends, Duration::from_millis(300), Duration::from_millis(900)).await;
        assert_eq!(outcome, None, "resumed: the limit applies again");
        let outcome = frontends
            .call_started("s", 1)
            .within(Duration::MAX, std::pin::pin!(async {}))
            .await;
        assert_eq!(outcome, Some(()), "a limit past the clock's range is none");
    }

    #[test]
    fn two_routes_for_one_task_id_get_their_own_tokens_and_progress() {
        let frontends = Arc::new(FrontEnds::default());
        let (first, mut first_out) = frontends.new_link(1, Door::Socket);
        let (second, mut second_out) = frontends.new_link(2, Door::Socket);
        let (one, two) = (frontends.fresh_token("task-1"), frontends.fresh_token("task-1"));
        assert_ne!(one, two);
        let first_route = frontends.progress_route("s", &first, &one, json!("a"));
        let _second_route = frontends.progress_route("s", &second, &two, json!("b"));
        drop(first_route);
        frontends.route_progress("s", &two, 1.0, None, None);
        let queued = second_out
            .try_recv()
            .expect("the first call's end left the second's route");
        let sent: Value = serde_json::from_str(&queued).expect("JSON");
        assert_eq!(sent["params"]["progressToken"], "b");
        assert!(first_out.try_recv().is_err());
    }

    #[tokio::test]
    async fn progress_that_finds_the_queue_full_is_counted_per_link_and_in_all() {
        let frontends = Arc::new(FrontEnds::default());
        let (link, mut outbound) = frontends.new_link(1, Door::Socket);
        let _route = frontends.progress_route("s", &link, &json!(7), json!("theirs"));
        for step in 0..LINK_QUEUE + 5 {
            frontends.route_progress("s", &json!(7), step as f64, None, None);
        }
        assert_eq!(link.take_missed_progress(), 5);
        assert_eq!(link.take_missed_progress(), 0, "told once");
        assert_eq!(frontends.dropped_progress(), 5);
        let first: Value = serde_json::from_str(&outbound.recv().await.expect("queued")).expect("JSON");
        assert_eq!(first["params"]["progressToken"], "theirs");
        frontends.route_progress("s", &json!(7), 100.0, None, None);
        assert_eq!(link.take_missed_progress(), 0, "room again: delivered, not dropped");
        assert_eq!(frontends.dropped_progress(), 5);
    }

    #[tokio::test]
    async fn progress_is_worded_in_the_dialect_of_the_front_end() {
        let frontends = Arc::new(FrontEnds::default());
        let (corral, mut corral_out) = frontends.new_link(1, Door::Socket);
        let (mcp, mut mcp_out) = frontends.new_link(2, Door::Socket);
        mcp.set_dialect(super::super::link::Dialect::Mcp);
        let _corral_route = frontends.progress_route("s", &corral, &json!(1), json!("c"));
        let _mcp_route = frontends.progress_route("s", &mcp, &json!(2), json!(7));
        frontends.route_progress("s", &json!(1), 1.0, Some(2.0), None);
        frontends.route_progress("s", &json!(2), 1.0, Some(2.0), Some("half".to_owned()));
        let to_corral: Value = serde_json::from_str(&corral_out.recv().await.expect("queued")).expect("JSON");
        assert_eq!(to_corral["method"], "mcpServer/progress");
        assert_eq!(to_corral["params"]["server"], "s");
        let to_mcp: Value = serde_json::from_str(&mcp_out.recv().await.expect("queued")).expect("JSON");
        assert_eq!(
            to_mcp,
            json!({"jsonrpc": "2.0", "method": "notifications/progress",
                   "params": {"progressToken": 7, "progress": 1.0, "total": 2.0, "message": "half"}}),
            "MCP's own notification, with the client's token and nothing of Corral's"
        );
    }

    #[tokio::test]
    async fn an_elicitation_is_asked_only_in_a_mode_the_front_end_declared() {
        let frontends = Arc::new(FrontEnds::default());
        let target = |connection: u64, capability| {
            let _call = frontends.call_started("s", connection);
            match frontends.caller("s", capability) {
                Caller::One(link) => Ok(link.id),
                Caller::Declined(reason) => Err(reason),
            }
        };
        let (form_only, _form_rx) = frontends.new_link(1, Door::Socket);
        let (url_only, _url_rx) = frontends.new_link(2, Door::Socket);
        let (both, _both_rx) = frontends.new_link(3, Door::Socket);
        let (neither, _neither_rx) = frontends.new_link(4, Door::Socket);
        for (link, form, url) in [
            (&form_only, true, false),
            (&url_only, false, true),
            (&both, true, true),
            (&neither, false, false),
        ] {
            frontends.register(
                link,
                CanAnswer {
                    form_elicitation: form,
                    url_elicitation: url,
                    ..CanAnswer::default()
                },
            );
        }
        assert_eq!(target(1, FORM), Ok(1));
        assert!(
            target(1, URL)
                .is_err_and(|reason| reason.contains("URL-mode elicitation") && reason.contains("form mode only")),
            "a form-only front-end is never sent to a URL"
        );
        assert_eq!(target(2, URL), Ok(2));
        assert!(target(2, FORM).is_err_and(|reason| reason.contains("URL mode only")));
        assert_eq!(target(3, FORM), Ok(3));
        assert_eq!(target(3, URL), Ok(3));
        for mode in [FORM, URL] {
            assert!(target(4, mode).is_err_and(|reason| reason.contains("did not declare `capabilities.elicitation`")));
        }
    }

    #[tokio::test]
    async fn calls_ended_waits_for_the_last_call_of_that_front_end_to_that_server() {
        let frontends = Arc::new(FrontEnds::default());
        tokio::time::timeout(Duration::from_secs(10), frontends.calls_ended("s", 1))
            .await
            .expect("no call: at once");
        let first = frontends.call_started("s", 1);
        let second = frontends.call_started("s", 1);
        let _other_connection = frontends.call_started("s", 2);
        let _other_server = frontends.call_started("t", 1);
        let waiting = {
            let frontends = frontends.clone();
            tokio::spawn(async move { frontends.calls_ended("s", 1).await })
        };
        drop(first);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "a call of that front-end to that server still runs"
        );
        drop(second);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("ended once the last one did")
            .expect("joined");
    }

    /// The next message a link queued for its front-end, as JSON.
    async fn next_out(outbound: &mut tokio::sync::mpsc::Receiver<String>) -> Value {
        let text = tokio::time::timeout(Duration::from_secs(10), outbound.recv())
            .await
            .expect("a message within 10 s")
            .expect("the link is open");
        serde_json::from_str(&text).expect("JSON")
    }

    #[tokio::test]
    async fn a_servers_request_and_its_withdrawal_are_worded_in_the_dialect_of_the_front_end() {
        let frontends = Arc::new(FrontEnds::default());
        let (corral, mut corral_out) = frontends.new_link(1, Door::Socket);
        let (mcp, mut mcp_out) = frontends.new_link(2, Door::Socket);
        mcp.set_dialect(Dialect::Mcp);
        let params = json!({"mode": "form", "message": "Name?", "_meta": {"k": 1},
                            "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}}}});
        let deadline = Duration::from_millis(200);

        // MCP: the server's request itself; unanswered, MCP's cancellation with a reason.
        let asking = {
            let (mcp, params) = (mcp.clone(), params.clone());
            tokio::spawn(async move { mcp.ask("s", FORM, params, deadline).await })
        };
        let sent = next_out(&mut mcp_out).await;
        assert_eq!(
            sent,
            json!({"jsonrpc": "2.0", "id": sent["id"], "method": "elicitation/create", "params": params}),
            "nothing of Corral's around the server's params"
        );
        assert!(matches!(
            asking.await.expect("joined"),
            Err(FrontEndError::Unanswered(waited)) if waited == deadline
        ));
        let withdrawn = next_out(&mut mcp_out).await;
        assert_eq!(withdrawn["method"], MCP_CANCELLED, "{withdrawn}");
        assert_eq!(withdrawn["params"]["requestId"], sent["id"], "{withdrawn}");
        assert_eq!(
            withdrawn["params"]["reason"],
            "corral withdrew this request: no answer within 0.2s (corrald --elicitation-timeout-sec)"
        );
        assert!(withdrawn.get("id").is_none(), "a notification: {withdrawn}");

        // MCP, abandoned (the server withdrew its request): the same, with that reason.
        let asking = {
            let mcp = mcp.clone();
            tokio::spawn(async move {
                mcp.ask("s", Capability::Sampling, json!({"maxTokens": 5}), NO_DEADLINE)
                    .await
            })
        };
        let sent = next_out(&mut mcp_out).await;
        assert_eq!(sent["method"], "sampling/createMessage", "{sent}");
        assert_eq!(sent["params"], json!({"maxTokens": 5}), "{sent}");
        asking.abort();
        let withdrawn = next_out(&mut mcp_out).await;
        assert_eq!(
            withdrawn["params"],
            json!({"requestId": sent["id"], "reason": "corral withdrew this request: nothing waits for its answer \
                any more (the call that caused it ended, or the MCP server that made it cancelled it or went away)"}),
            "{withdrawn}"
        );

        // Corral: the server named around its params; withdrawn with `$/cancelRequest {id}`.
        let asking = {
            let (corral, params) = (corral.clone(), params.clone());
            tokio::spawn(async move { corral.ask("s", FORM, params, deadline).await })
        };
        let sent = next_out(&mut corral_out).await;
        assert_eq!(sent["method"], "mcpServer/elicitation/request", "{sent}");
        assert_eq!(sent["params"], json!({"server": "s", "request": params}), "{sent}");
        assert!(matches!(
            asking.await.expect("joined"),
            Err(FrontEndError::Unanswered(_))
        ));
        let withdrawn = next_out(&mut corral_out).await;
        assert_eq!(
            withdrawn,
            json!({"jsonrpc": "2.0", "method": CANCEL_REQUEST, "params": {"id": sent["id"]}})
        );

        // Answered in time: the answer, and nothing withdrawn.
        let asking = {
            let mcp = mcp.clone();
            tokio::spawn(async move { mcp.ask("s", URL, json!({"mode": "url"}), NO_DEADLINE).await })
        };
        let sent = next_out(&mut mcp_out).await;
        assert!(mcp.resolve(sent["id"].as_u64().expect("id"), Ok(json!({"action": "accept"}))));
        assert_eq!(
            asking.await.expect("joined").expect("answered"),
            json!({"action": "accept"})
        );
        assert!(mcp_out.try_recv().is_err(), "nothing after the answer");
    }

    #[test]
    fn subscriptions_are_counted_across_front_ends() {
        let frontends = FrontEnds::default();
        assert!(frontends.subscribe("s", "u", 1));
        assert!(!frontends.subscribe("s", "u", 2));
        assert_eq!(frontends.subscriptions("s"), vec!["u".to_owned()]);
        assert_eq!(frontends.unsubscribe("s", "u", 1), Some(false));
        assert_eq!(frontends.unsubscribe("s", "u", 1), None);
        assert!(frontends.subscribe("s", "v", 3));
        assert_eq!(frontends.disconnected(2), vec![("s".to_owned(), "u".to_owned())]);
        assert_eq!(frontends.subscriptions("s"), vec!["v".to_owned()]);
    }
}
