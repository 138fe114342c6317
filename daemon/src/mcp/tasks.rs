//! Tool calls a server runs as tasks: the call is answered at once with a
//! task, which corrald follows until it ends, and then hands the front-end
//! the call's result as if the server had answered it directly.
//!
//! Two generations of MCP tasks, one way of following them ([`follow`]):
//!
//! - **the tasks extension** (`io.modelcontextprotocol/tasks`, SEP-2663, for
//!   MCP 2026-07-28): corrald declares the extension, so a server may answer
//!   any `tools/call` with `resultType: "task"`; `tasks/get` tells the status
//!   and, once `completed` or `failed`, carries the result or the error
//!   itself; a task that needs input (`input_required`) lists its
//!   `inputRequests`, which are answered as MRTR's are (`rounds`) and sent
//!   with `tasks/update`;
//! - **task-augmented requests** (SEP-1686, MCP 2025-11-25, experimental): a
//!   tool whose listing says `execution.taskSupport: "required"` must be
//!   called as a task, so corrald adds `task: {}` to its `tools/call` (only
//!   where it sees the tool as the server wrote it: stdio); `tasks/get` tells
//!   the status, and `tasks/result` gives the result (it waits for the end,
//!   and the server's own requests of the task, an elicitation, come through
//!   the classic route meanwhile).
//!
//! Following: `tasks/get` again after the task's `pollInterval` (never
//! sooner; 1 s when it gives none, at least [`MIN_POLL`]) until the status
//! is terminal or asks for input: input other than what was just answered
//! (after `tasks/update`, a server may show the same requests until it has
//! taken the answers in; they are not asked again). Each change of status or status message
//! reaches the front-end as progress of its call, when it gave a progress
//! token: `progress` counts the changes seen, `message` is "task STATUS:
//! MESSAGE", under a token of corrald's that is new for each call (two calls
//! given one task id do not share a route). How long is the call's business: `tool_timeout_sec` bounds it
//! in active time as it bounds any call (the clock stops while an
//! elicitation waits on the user), and a task's input rounds are bounded
//! like MRTR's ([`super::rounds::MAX_ROUNDS`]).
//!
//! A task left behind is cancelled: when the call's future is dropped (the
//! front-end cancelled the call, timed it out, or went away) before the task
//! ended, corrald sends `tasks/cancel` ([`CancelTaskOnDrop`]; one request,
//! not waited for, like the cancellation notice of a dropped request).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CancelTaskParams, CancelTaskRequest, ClientRequest, CustomRequest, GetTaskParams,
    GetTaskRequest, InputRequests, ServerResult, UpdateTaskParams, UpdateTaskRequest,
};
use rmcp::{Peer, RoleClient};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::forward::{Answer, JsonObject, ProgressTarget, send};
use super::rounds;
use super::route::{CallTarget, RouteError};
use crate::hub::link::Link;

/// The `execution.taskSupport` of a tool that must be called as a task (SEP-1686).
pub(crate) const TASK_SUPPORT_REQUIRED: &str = "required";

/// The extension a client declares to get tasks from a server of 2026-07-28 (SEP-2663).
pub(crate) const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// The least time between two `tasks/get` of one task, whatever the server suggests.
pub(crate) const MIN_POLL: Duration = Duration::from_millis(100);

/// The time between two `tasks/get` when the server suggests none.
const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// How long a `tasks/cancel` sent for a task left behind may take.
const CANCEL_LIMIT: Duration = Duration::from_secs(5);

/// One look at a task: `tasks/get`'s answer, a status notification, or the task a call was
/// answered with, in either generation's words.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Look {
    /// The task's id.
    pub(crate) task_id: String,
    /// Its status as the server wrote it: `working`, `input_required`, `completed`, `failed`,
    /// `cancelled`.
    pub(crate) status: String,
    /// The server's words about it.
    pub(crate) message: Option<String>,
    /// When to look again.
    pub(crate) poll_interval: Option<Duration>,
    /// What it asks for (`input_required`, the tasks extension).
    pub(crate) input_requests: Option<InputRequests>,
    /// Its result (`completed`, the tasks extension).
    pub(crate) result: Option<JsonObject>,
    /// Its error (`failed`, the tasks extension).
    pub(crate) error: Option<JsonObject>,
}

impl Look {
    /// Read a task from its JSON: the fields of a task at the top level (`tasks/get`, the
    /// tasks extension's `resultType: "task"`), or under `task` (SEP-1686's answer to a
    /// task-augmented call). The poll interval is `pollIntervalMs` (SEP-2663) or
    /// `pollInterval` (SEP-1686), in milliseconds.
    pub(crate) fn from_json(value: &Value) -> Result<Self, String> {
        let task = match value.get("task") {
            Some(task) if task.is_object() => task,
            _ => value,
        };
        let text = |key: &str| task.get(key).and_then(Value::as_str).map(str::to_owned);
        let task_id = text("taskId").ok_or("the task has no `taskId`")?;
        let status = text("status").ok_or("the task has no `status`")?;
        let poll_interval = ["pollIntervalMs", "pollInterval"]
            .iter()
            .find_map(|key| task.get(*key).and_then(Value::as_u64))
            .map(Duration::from_millis);
        let object = |key: &str| task.get(key).and_then(Value::as_object).cloned();
        let input_requests = match task.get("inputRequests") {
            Some(requests) => Some(
                serde_json::from_value(requests.clone())
                    .map_err(|error| format!("the task's `inputRequests` are not MCP input requests: {error}"))?,
            ),
            None => None,
        };
        Ok(Self {
            task_id,
            status,
            message: text("statusMessage"),
            poll_interval,
            input_requests,
            result: object("result"),
            error: object("error"),
        })
    }

    /// Whether the task has ended: `completed`, `failed` or `cancelled`.
    pub(crate) fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "cancelled")
    }

    /// Whether the task waits for input.
    pub(crate) fn needs_input(&self) -> bool {
        self.status == "input_required"
    }

    /// Whether the task waits for input it already has: its input requests are `answered`
    /// (as JSON), the ones just sent with `tasks/update`, which it may not have taken in yet.
    fn asks_again(&self, answered: Option<&Value>) -> bool {
        self.needs_input()
            && answered.is_some_and(|answered| {
                self.input_requests
                    .as_ref()
                    .and_then(|requests| serde_json::to_value(requests).ok())
                    .as_ref()
                    == Some(answered)
            })
    }

    /// How long to wait before looking again: the server's interval, at least [`MIN_POLL`].
    pub(crate) fn next_look_in(&self) -> Duration {
        self.poll_interval.unwrap_or(DEFAULT_POLL).max(MIN_POLL)
    }

    /// The progress message of this look: "task STATUS", with the server's words after a colon.
    pub(crate) fn progress_message(&self) -> String {
        match &self.message {
            Some(message) => format!("task {}: {message}", self.status),
            None => format!("task {}", self.status),
        }
    }

    /// The task as it ended otherwise than completed, as an error.
    pub(crate) fn not_completed(&self) -> RouteError {
        RouteError::TaskNotCompleted {
            task: self.task_id.clone(),
            status: self.status.clone(),
            message: self.message.clone(),
        }
    }
}

/// Follow a task from `first` until it ends or asks for input other than `answered` (the
/// JSON of the input requests just answered, which a server may still show for a while):
/// `get` looks at it again (`tasks/get`), after the interval the last look asks for; `seen`
/// hears of every look whose status or message differs from the one before (the first one
/// included). Returns the last look.
pub(crate) async fn follow<G, GF>(
    first: Look,
    answered: Option<&Value>,
    mut get: G,
    mut seen: impl FnMut(&Look),
) -> Result<Look, RouteError>
where
    G: FnMut() -> GF,
    GF: Future<Output = Result<Look, RouteError>>,
{
    let mut look = first;
    let mut told: Option<(String, Option<String>)> = None;
    loop {
        let now = (look.status.clone(), look.message.clone());
        if told.as_ref() != Some(&now) {
            seen(&look);
            told = Some(now);
        }
        if look.is_terminal() || look.needs_input() && !look.asks_again(answered) {
            return Ok(look);
        }
        tokio::time::sleep(look.next_look_in()).await;
        let next = get().await?;
        if next.task_id != look.task_id {
            return Err(RouteError::Failed {
                message: format!(
                    "tasks/get of task `{}` answered about task `{}`",
                    look.task_id, next.task_id
                ),
            });
        }
        look = next;
    }
}

/// Which generation of MCP tasks a call was answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Generation {
    /// The tasks extension (SEP-2663): `resultType: "task"`, the result in `tasks/get`.
    Extension,
    /// A task-augmented request (SEP-1686): the result from `tasks/result`.
    Augmented,
}

/// `tools/call` with `request`'s params, asked to run as a task (SEP-1686: `task: {}`, the
/// server's default time to live).
pub(crate) fn augmented(request: &CallToolRequestParams) -> Result<ClientRequest, RouteError> {
    let mut params = serde_json::to_value(request).map_err(|error| RouteError::Unserializable {
        what: "the tools/call request",
        why: error.to_string(),
    })?;
    if let Some(params) = params.as_object_mut() {
        params.insert("task".to_owned(), json!({}));
    }
    Ok(ClientRequest::CustomRequest(CustomRequest::new(
        "tools/call",
        Some(params),
    )))
}

/// Follow the task `created` (the answer to a `tools/call` of `target`'s server, in
/// `generation`'s words) until it ends, and return the call's result: what the front-end on
/// `link` is asked meanwhile, it answers; its progress, if it gave a token, hears of each
/// change (see the module docs). Dropping the future cancels the task.
pub(crate) async fn run<T: Serialize>(
    target: &CallTarget,
    generation: Generation,
    created: &T,
    link: &Arc<Link>,
    progress: Option<ProgressTarget<'_>>,
) -> Result<Box<RawValue>, RouteError> {
    let server = target.config.name.as_str();
    let created = serde_json::to_value(created).unwrap_or_default();
    let mut look = Look::from_json(&created).map_err(|why| RouteError::Failed {
        message: format!("the server answered with a task corrald cannot read: {why}"),
    })?;
    let task_id = look.task_id.clone();
    tracing::debug!(server, task = task_id, ?generation, "the call runs as a task");
    let mut cancel = CancelTaskOnDrop::new(target.peer().clone(), server, &task_id);
    // The task's changes are progress of the call, under a token of corrald's own, new for
    // this call (another call may be given the same task id).
    let route = progress.map(|(frontends, link, theirs)| {
        let ours = frontends.fresh_token(&task_id);
        let guard = frontends.progress_route(server, link, &ours, theirs);
        (frontends, ours, guard)
    });
    let mut changes = 0.0;
    let mut tell = |seen: &Look| {
        if let Some((frontends, ours, _)) = &route {
            changes += 1.0;
            frontends.route_progress(server, ours, changes, None, Some(seen.progress_message()));
        }
    };
    let mut input_rounds = 0;
    let mut answered = None;
    loop {
        look = follow(look, answered.as_ref(), || get(target, &task_id), &mut tell).await?;
        if look.is_terminal() {
            cancel.disarm();
        }
        match (generation, look.status.as_str()) {
            (_, "cancelled") => return Err(look.not_completed()),
            (Generation::Augmented, _) => {
                // Completed, failed, or waiting for input: `tasks/result` waits for the end
                // and gives the result or the error; the task's requests meanwhile take the
                // classic route to this front-end.
                let result = result_of(target, &task_id).await;
                cancel.disarm();
                return result;
            }
            (Generation::Extension, "completed") => {
                let result = look.result.take().unwrap_or_default();
                return serde_json::value::to_raw_value(&result).map_err(|error| RouteError::Unserializable {
                    what: "the task's result",
                    why: error.to_string(),
                });
            }
            (Generation::Extension, "failed") => {
                let error = look.error.take().unwrap_or_default();
                return Err(
                    match (
                        error.get("code").and_then(Value::as_i64),
                        error.get("message").and_then(Value::as_str),
                    ) {
                        (Some(code), Some(message)) => RouteError::Answered {
                            code: i32::try_from(code).unwrap_or(i32::MIN),
                            message: message.to_owned(),
                            data: error.get("data").cloned(),
                        },
                        _ => look.not_completed(),
                    },
                );
            }
            (Generation::Extension, _) => {
                // Waiting for input: answered as MRTR's are, within the same bound.
                input_rounds += 1;
                if input_rounds > rounds::MAX_ROUNDS {
                    return Err(RouteError::TooManyRounds {
                        max: rounds::MAX_ROUNDS,
                    });
                }
                let requests = look.input_requests.take().unwrap_or_default();
                answered = serde_json::to_value(&requests).ok();
                let responses = rounds::answer_each(target.handler(), link, requests).await?;
                let update = UpdateTaskRequest::new(UpdateTaskParams::new(task_id.clone(), responses));
                send(target, update, None).await?;
                look = get(target, &task_id).await?;
            }
        }
    }
}

/// `tasks/get` of `task_id`: the task as the server wrote it where corrald sees that.
async fn get(target: &CallTarget, task_id: &str) -> Result<Look, RouteError> {
    let request = GetTaskRequest::new(GetTaskParams::new(task_id));
    let Answer { typed, raw } = send(target, request, None).await?;
    let value = match raw {
        Some(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
        None => serde_json::to_value(&typed).unwrap_or_default(),
    };
    Look::from_json(&value).map_err(|why| RouteError::Failed {
        message: format!("tasks/get of task `{task_id}` answered with something that is not a task: {why}"),
    })
}

/// `tasks/result` of `task_id` (SEP-1686): the original call's result, or its error.
async fn result_of(target: &CallTarget, task_id: &str) -> Result<Box<RawValue>, RouteError> {
    let request = ClientRequest::CustomRequest(CustomRequest::new("tasks/result", Some(json!({ "taskId": task_id }))));
    let Answer { typed, raw } = send(target, request, None).await?;
    if let Some(raw) = raw {
        return Ok(raw);
    }
    let value = match typed {
        ServerResult::CustomResult(custom) => custom.0,
        other => serde_json::to_value(&other).unwrap_or_default(),
    };
    serde_json::value::to_raw_value(&value).map_err(|error| RouteError::Unserializable {
        what: "the task's result",
        why: error.to_string(),
    })
}

/// Sends `tasks/cancel` for a task when dropped, unless disarmed: the call that follows the
/// task was given up before the task ended.
#[derive(Debug)]
pub(crate) struct CancelTaskOnDrop {
    peer: Peer<RoleClient>,
    server: String,
    /// `None` once disarmed.
    task_id: Option<String>,
}

impl CancelTaskOnDrop {
    /// Armed for task `task_id` of `server`, on `peer`.
    pub(crate) fn new(peer: Peer<RoleClient>, server: &str, task_id: &str) -> Self {
        Self {
            peer,
            server: server.to_owned(),
            task_id: Some(task_id.to_owned()),
        }
    }

    /// The task ended (or was never ours to cancel): send nothing.
    pub(crate) fn disarm(&mut self) {
        self.task_id = None;
    }
}

impl Drop for CancelTaskOnDrop {
    fn drop(&mut self) {
        let Some(task_id) = self.task_id.take() else { return };
        let (peer, server) = (self.peer.clone(), std::mem::take(&mut self.server));
        // Not a task of the daemon's tracker (a drop has no handle to it): one request,
        // bounded by CANCEL_LIMIT and by the session, which shutdown closes.
        tokio::spawn(async move {
            let request =
                ClientRequest::CancelTaskRequest(CancelTaskRequest::new(CancelTaskParams::new(task_id.clone())));
            match tokio::time::timeout(CANCEL_LIMIT, peer.send_request(request)).await {
                Ok(Ok(_)) => tracing::info!(server, task = task_id, "cancelled a task its call left behind"),
                Ok(Err(error)) => tracing::info!(server, task = task_id, %error, "tasks/cancel failed"),
                Err(_) => tracing::info!(server, task = task_id, "tasks/cancel was not answered in time"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    #[expect(clippy::needless_pass_by_value, reason = "called with json! literals")]
    fn look(value: Value) -> Look {
        Look::from_json(&value).expect("a task")
    }

    #[test]
    fn both_generations_of_tasks_are_read() {
        // SEP-1686: the answer to a task-augmented call, the task under `task`.
        let augmented = look(
            json!({"task": {"taskId": "t1", "status": "working", "statusMessage": "started",
            "createdAt": "2025-11-25T10:30:00Z", "lastUpdatedAt": "2025-11-25T10:30:00Z", "ttl": 60000,
            "pollInterval": 250}}),
        );
        assert_eq!(augmented.task_id, "t1");
        assert_eq!(augmented.poll_interval, Some(Duration::from_millis(250)));
        assert_eq!(augmented.progress_message(), "task working: started");
        // SEP-2663: `resultType: "task"` and `tasks/get`, the payload inlined.
        let completed = look(json!({"resultType": "complete", "taskId": "t2", "status": "completed",
            "createdAt": "x", "lastUpdatedAt": "y", "ttlMs": null, "pollIntervalMs": 500,
            "result": {"content": [{"type": "text", "text": "done"}]}}));
        assert!(completed.is_terminal());
        assert_eq!(completed.poll_interval, Some(Duration::from_millis(500)));
        assert_eq!(completed.result.expect("inlined")["content"][0]["text"], "done");
        let asking = look(json!({"taskId": "t3", "status": "input_required", "inputRequests": {
            "q": {"method": "elicitation/create", "params": {"message": "Which?",
                "requestedSchema": {"type": "object", "properties": {}}}}}}));
        assert!(asking.needs_input() && !asking.is_terminal());
        assert_eq!(asking.input_requests.expect("listed").len(), 1);
        assert!(Look::from_json(&json!({"status": "working"})).is_err_and(|why| why.contains("taskId")));
    }

    #[test]
    fn the_servers_poll_interval_is_honoured_but_never_below_the_floor() {
        let with = |interval: Option<u64>| {
            let mut value = json!({"taskId": "t", "status": "working"});
            if let Some(interval) = interval {
                value["pollInterval"] = json!(interval);
            }
            look(value).next_look_in()
        };
        assert_eq!(with(Some(2500)), Duration::from_millis(2500));
        assert_eq!(with(Some(0)), MIN_POLL);
        assert_eq!(with(None), DEFAULT_POLL);
    }

    #[tokio::test]
    async fn a_task_is_followed_until_it_ends_telling_each_change_once() {
        let answers = Mutex::new(vec![
            json!({"taskId": "t", "status": "working", "statusMessage": "step 1", "pollInterval": 10}),
            json!({"taskId": "t", "status": "working", "statusMessage": "step 1", "pollInterval": 10}),
            json!({"taskId": "t", "status": "working", "statusMessage": "step 2", "pollInterval": 10}),
            json!({"taskId": "t", "status": "completed", "pollInterval": 10}),
        ]);
        let polls = Mutex::new(0usize);
        let mut told = Vec::new();
        let first = look(json!({"taskId": "t", "status": "working", "pollInterval": 10}));
        let started = tokio::time::Instant::now();
        let last = follow(
            first,
            None,
            || {
                *polls.lock().expect("not poisoned") += 1;
                let next = answers.lock().expect("not poisoned").remove(0);
                std::future::ready(Ok(look(next)))
            },
            |seen| told.push(seen.progress_message()),
        )
        .await
        .expect("followed");
        assert_eq!(last.status, "completed");
        assert_eq!(*polls.lock().expect("not poisoned"), 4);
        assert!(started.elapsed() >= MIN_POLL * 4, "never sooner than the floor");
        assert_eq!(
            told,
            [
                "task working",
                "task working: step 1",
                "task working: step 2",
                "task completed"
            ]
        );
    }

    #[tokio::test]
    async fn following_stops_when_the_task_asks_for_input_or_fails() {
        for (status, expected) in [
            ("input_required", "input_required"),
            ("failed", "failed"),
            ("cancelled", "cancelled"),
        ] {
            let last = follow(
                look(json!({"taskId": "t", "status": "working", "pollInterval": 1})),
                None,
                || std::future::ready(Ok(look(json!({"taskId": "t", "status": status})))),
                |_| {},
            )
            .await
            .expect("followed");
            assert_eq!(last.status, expected);
        }
        let error = follow(
            look(json!({"taskId": "t", "status": "working", "pollInterval": 1})),
            None,
            || std::future::ready(Ok(look(json!({"taskId": "other", "status": "completed"})))),
            |_| {},
        )
        .await;
        assert!(matches!(error, Err(RouteError::Failed { .. })), "{error:?}");
    }
    #[tokio::test]
    async fn input_just_answered_is_not_asked_again_while_the_task_still_shows_it() {
        let asking = |key: &str| {
            json!({"taskId": "t", "status": "input_required", "pollInterval": 10, "inputRequests": {
                key: {"method": "elicitation/create", "params": {"message": "Which?",
                    "requestedSchema": {"type": "object", "properties": {}}}}}})
        };
        let answered = serde_json::to_value(look(asking("q")).input_requests).expect("JSON");
        // The same request shown twice more, then the task moves on.
        let answers = Mutex::new(vec![asking("q"), json!({"taskId": "t", "status": "completed"})]);
        let polls = Mutex::new(0usize);
        let started = tokio::time::Instant::now();
        let last = follow(
            look(asking("q")),
            Some(&answered),
            || {
                *polls.lock().expect("not poisoned") += 1;
                std::future::ready(Ok(look(answers.lock().expect("not poisoned").remove(0))))
            },
            |_| {},
        )
        .await
        .expect("followed");
        assert_eq!(last.status, "completed");
        assert_eq!(*polls.lock().expect("not poisoned"), 2);
        assert!(started.elapsed() >= MIN_POLL * 2, "polled at the interval");

        // A new question is one to ask.
        let last = follow(
            look(asking("q")),
            Some(&answered),
            || std::future::ready(Ok(look(asking("other")))),
            |_| {},
        )
        .await
        .expect("followed");
        assert!(last.needs_input());
        assert!(last.input_requests.expect("listed").contains_key("other"));
    }
}
