//! Multi round-trip requests (MRTR, SEP-2322 of MCP 2026-07-28): a server
//! answers `tools/call`, `prompts/get` or `resources/read` with an
//! `input_required` result instead of asking its client mid-call; corrald
//! gets the answers and sends the request again, until the server gives the
//! final result.
//!
//! [`drive`] is the loop, apart from what a round sends and who answers, so
//! its rules are tested here on their own:
//!
//! - every round is a new request (`mcp::forward` sends it: a new JSON-RPC
//!   id, as the spec asks), with the request's own params and nothing else
//!   of the rounds before but what the last `input_required` result asked
//!   for: its `requestState` echoed exactly as the server wrote it (never
//!   read, parsed or changed), none when it had none, and the answers to its
//!   `inputRequests` under their keys (none when it asked nothing);
//! - the state of one call never reaches another: each call drives its own
//!   rounds, and nothing is kept between calls (parallel calls, even to one
//!   server from one front-end, are isolated);
//! - the input requests of a round are answered one after the other, by the
//!   front-end whose call it is ([`answer_each`]; `mcp::handler` asks it as
//!   a classic elicitation or sampling request is asked: same routes,
//!   deadline, paused clock and withdrawal when the call ends); one that
//!   cannot be answered (sampling the front-end cannot do, roots that cannot
//!   be had) ends the call with the reason, since MRTR has no way to tell
//!   the server a request failed; more than [`MAX_INPUT_REQUESTS`] in one
//!   round end the call before any is asked (each waits on a person, one
//!   after the other: a server must not queue up an unbounded interview);
//! - at most [`MAX_ROUNDS`] `input_required` results per call. Each round
//!   that asks something waits on a person at most the answer deadline and
//!   pauses the call's clock, so without a bound a server that keeps asking
//!   would hold a call, and its user, forever. Ten is what the MCP SDKs
//!   bound their own clients to (rmcp's `DEFAULT_MRTR_MAX_ROUNDS`), so a
//!   server written against them fits: a wizard that asks one question per
//!   round has room for nine. Rounds that only carry state (a server
//!   shedding load) wait a little before the retry ([`state_only_pause`]),
//!   and count towards the same bound.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{InputRequest, InputRequests, InputRequiredResult, InputResponses};

use super::handler::McpClientHandler;
use super::route::RouteError;
use crate::hub::link::Link;

/// Most `input_required` results one request may get before corrald gives up (see the module docs).
pub(crate) const MAX_ROUNDS: usize = 10;

/// Most input requests one round (or one task's `input_required` status) may ask (see the module docs).
pub(crate) const MAX_INPUT_REQUESTS: usize = 16;

/// What a round carries besides the request's own params: what the previous
/// `input_required` result asked to be sent back. The first round carries nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Retry {
    /// The answers to the previous result's `inputRequests`, by key (`None`: it asked nothing).
    pub(crate) input_responses: Option<InputResponses>,
    /// The previous result's `requestState`, exactly as the server wrote it (`None`: it had none).
    pub(crate) request_state: Option<String>,
}

/// What the server answered one round with.
#[derive(Debug)]
pub(crate) enum Reply<T> {
    /// The final result.
    Complete(T),
    /// More input is needed: answer it and send the request again.
    InputRequired(InputRequiredResult),
}

/// Drive one request's rounds: `send` sends the request with a round's
/// [`Retry`] and reads the reply; `answer` answers a round's input requests.
/// At most `max_rounds` `input_required` results, then
/// [`RouteError::TooManyRounds`].
pub(crate) async fn drive<T, S, SF, A, AF>(max_rounds: usize, mut send: S, mut answer: A) -> Result<T, RouteError>
where
    S: FnMut(Retry) -> SF,
    SF: Future<Output = Result<Reply<T>, RouteError>>,
    A: FnMut(InputRequests) -> AF,
    AF: Future<Output = Result<InputResponses, RouteError>>,
{
    let mut retry = Retry::default();
    let mut state_only_rounds = 0u32;
    let mut input_required = 0;
    loop {
        let asked = match send(retry).await? {
            Reply::Complete(result) => return Ok(result),
            Reply::InputRequired(asked) => asked,
        };
        input_required += 1;
        if input_required > max_rounds {
            // Nothing more is asked of the user for a request that will not be sent again.
            return Err(RouteError::TooManyRounds { max: max_rounds });
        }
        let requests = asked.input_requests.filter(|requests| !requests.is_empty());
        let input_responses = match requests {
            Some(requests) => {
                state_only_rounds = 0;
                Some(answer(requests).await?)
            }
            None => {
                // rmcp lets no result without either through; a server's answer to nothing is nothing.
                tokio::time::sleep(state_only_pause(state_only_rounds)).await;
                state_only_rounds += 1;
                None
            }
        };
        retry = Retry {
            input_responses,
            request_state: asked.request_state,
        };
    }
}

/// How long to wait before retrying after the `n`th `input_required` result in a row that
/// carried only state: 100 ms, doubled each time, at most 1 s.
fn state_only_pause(n: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << n.min(4))).min(Duration::from_secs(1))
}

/// Answer `requests`, one after the other, by asking the front-end on `link` (through
/// `handler`, the server's session handler): the responses by key, or the first one that
/// cannot be had, as the reason the call ends.
pub(crate) async fn answer_each(
    handler: &McpClientHandler,
    link: &Arc<Link>,
    requests: InputRequests,
) -> Result<InputResponses, RouteError> {
    within_bound(&requests)?;
    let mut responses = InputResponses::new();
    for (key, request) in requests {
        match handler.answer_input(link, &request).await {
            Ok(response) => {
                responses.insert(key, response);
            }
            Err(why) => {
                return Err(RouteError::InputNotGiven {
                    what: words_of(&request),
                    why,
                });
            }
        }
    }
    Ok(responses)
}

/// [`RouteError::TooManyInputRequests`] when `requests` are more than [`MAX_INPUT_REQUESTS`]:
/// checked before any is asked, so the user is asked nothing for a call that ends.
fn within_bound(requests: &InputRequests) -> Result<(), RouteError> {
    if requests.len() > MAX_INPUT_REQUESTS {
        return Err(RouteError::TooManyInputRequests {
            asked: requests.len(),
            max: MAX_INPUT_REQUESTS,
        });
    }
    Ok(())
}

/// An input request, in words: "an `elicitation/create` request".
fn words_of(request: &InputRequest) -> &'static str {
    match request {
        InputRequest::Elicitation(_) => "an `elicitation/create` request",
        InputRequest::CreateMessage(_) => "a `sampling/createMessage` request",
        InputRequest::ListRoots(_) => "a `roots/list` request",
        _ => "an input request of a kind corrald does not know",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::{Value, json};

    use super::*;

    /// An `input_required` result from its JSON.
    fn input_required(value: Value) -> InputRequiredResult {
        serde_json::from_value(value).expect("an input_required result")
    }

    /// One elicitation under `key`.
    fn asking(key: &str, state: Option<&str>) -> InputRequiredResult {
        let mut result = json!({
            "resultType": "input_required",
            "inputRequests": {
                key: {"method": "elicitation/create", "params": {
                    "message": "Sure?", "requestedSchema": {"type": "object", "properties": {}}}}
            }
        });
        if let Some(state) = state {
            result["requestState"] = json!(state);
        }
        input_required(result)
    }

    /// Answers every request under its key with `{"answered": key}`, counting the rounds asked.
    fn answering(
        asked: &Mutex<Vec<Vec<String>>>,
    ) -> impl FnMut(InputRequests) -> std::future::Ready<Result<InputResponses, RouteError>> + '_ {
        move |requests: InputRequests| {
            asked
                .lock()
                .expect("not poisoned")
                .push(requests.keys().cloned().collect());
            std::future::ready(Ok(requests
                .keys()
                .map(|key| (key.clone(), json!({ "answered": key })))
                .collect()))
        }
    }

    #[tokio::test]
    async fn the_state_is_echoed_exactly_and_the_answers_sent_under_their_keys() {
        // A state no parser would leave alone: spacing, escapes, a trailing newline.
        let state = "{ \"nonce\" : \"a\\u00e9b\",  \"n\":1 }\n";
        let sent = Mutex::new(Vec::new());
        let asked = Mutex::new(Vec::new());
        let result = drive(
            MAX_ROUNDS,
            |retry: Retry| {
                let round = {
                    let mut sent = sent.lock().expect("not poisoned");
                    sent.push(retry.clone());
                    sent.len()
                };
                std::future::ready(Ok(match round {
                    1 => Reply::InputRequired(asking("confirm", Some(state))),
                    2 => Reply::InputRequired(asking("again", None)),
                    _ => Reply::Complete("done"),
                }))
            },
            answering(&asked),
        )
        .await
        .expect("completed");
        assert_eq!(result, "done");
        let sent = sent.into_inner().expect("not poisoned");
        assert_eq!(sent[0], Retry::default(), "the first round carries nothing");
        assert_eq!(sent[1].request_state.as_deref(), Some(state), "echoed byte for byte");
        assert_eq!(
            sent[1].input_responses,
            Some([("confirm".to_owned(), json!({"answered": "confirm"}))].into())
        );
        assert_eq!(
            sent[2].request_state, None,
            "no state asked: none sent, not the old one"
        );
        assert_eq!(
            sent[2].input_responses,
            Some([("again".to_owned(), json!({"answered": "again"}))].into()),
            "only the last round's answers"
        );
        assert_eq!(asked.into_inner().expect("not poisoned"), [["confirm"], ["again"]]);
    }

    #[tokio::test]
    async fn a_state_only_round_is_retried_with_the_state_and_no_answers() {
        let sent = Mutex::new(Vec::new());
        let asked = Mutex::new(Vec::new());
        drive(
            MAX_ROUNDS,
            |retry: Retry| {
                let first = {
                    let mut sent = sent.lock().expect("not poisoned");
                    sent.push(retry);
                    sent.len() == 1
                };
                std::future::ready(Ok(if first {
                    Reply::InputRequired(input_required(
                        json!({"resultType": "input_required", "requestState": "busy"}),
                    ))
                } else {
                    Reply::Complete(())
                }))
            },
            answering(&asked),
        )
        .await
        .expect("completed");
        let sent = sent.into_inner().expect("not poisoned");
        assert_eq!(
            sent[1],
            Retry {
                input_responses: None,
                request_state: Some("busy".to_owned())
            }
        );
        assert!(asked.into_inner().expect("not poisoned").is_empty(), "nothing to ask");
    }

    #[tokio::test]
    async fn a_server_that_keeps_asking_is_given_up_on_after_the_bound() {
        let rounds = Mutex::new(0usize);
        let asked = Mutex::new(Vec::new());
        let outcome: Result<(), RouteError> = drive(
            3,
            |_retry: Retry| {
                *rounds.lock().expect("not poisoned") += 1;
                std::future::ready(Ok(Reply::InputRequired(asking("more", Some("s")))))
            },
            answering(&asked),
        )
        .await;
        assert!(
            matches!(outcome, Err(RouteError::TooManyRounds { max: 3 })),
            "{outcome:?}"
        );
        assert_eq!(
            *rounds.lock().expect("not poisoned"),
            4,
            "the first request and three retries"
        );
        assert_eq!(
            asked.into_inner().expect("not poisoned").len(),
            3,
            "the fourth input_required result is not asked of the user: nothing would be sent with it"
        );
    }

    #[tokio::test]
    async fn an_input_that_cannot_be_had_ends_the_call_and_sends_nothing_more() {
        let rounds = Mutex::new(0usize);
        let outcome: Result<(), RouteError> = drive(
            MAX_ROUNDS,
            |_retry: Retry| {
                *rounds.lock().expect("not poisoned") += 1;
                std::future::ready(Ok(Reply::InputRequired(asking("sample", None))))
            },
            |_requests| {
                std::future::ready(Err(RouteError::InputNotGiven {
                    what: "a `sampling/createMessage` request",
                    why: "sampling declined".to_owned(),
                }))
            },
        )
        .await;
        assert!(matches!(outcome, Err(RouteError::InputNotGiven { .. })), "{outcome:?}");
        assert_eq!(*rounds.lock().expect("not poisoned"), 1);
    }

    #[test]
    fn more_input_requests_than_the_bound_are_refused_naming_the_server() {
        let many = |count: usize| -> InputRequests {
            let requests: serde_json::Map<String, Value> = (0..count)
                .map(|n| {
                    let request = json!({"method": "elicitation/create", "params": {
                        "message": "Sure?", "requestedSchema": {"type": "object", "properties": {}}}});
                    (format!("q{n}"), request)
                })
                .collect();
            serde_json::from_value(Value::Object(requests)).expect("input requests")
        };
        within_bound(&many(MAX_INPUT_REQUESTS)).expect("at the bound");
        let error = within_bound(&many(MAX_INPUT_REQUESTS + 1)).expect_err("over the bound");
        let message = error.describe("wizard", "`tools/call` of `setup`");
        assert_eq!(
            message,
            "MCP server `wizard` asked for 17 inputs at once during `tools/call` of `setup`; corrald answers at \
             most 16 per round and asked none of them: report it to the server's authors"
        );
    }

    #[test]
    fn an_input_not_given_is_worded_once() {
        let request: InputRequest = serde_json::from_value(json!({"method": "roots/list"})).expect("a request");
        let error = RouteError::InputNotGiven {
            what: words_of(&request),
            why: "the config gives none".to_owned(),
        };
        assert_eq!(
            error.describe("fs", "`tools/call` of `read`"),
            "MCP server `fs` needs the answer to a `roots/list` request to finish `tools/call` of `read`, and it \
             could not be had: the config gives none"
        );
    }

    #[tokio::test]
    async fn parallel_calls_never_see_each_others_state_or_answers() {
        // Two calls' rounds interleaved on one runtime: each round yields before it replies,
        // so the other call runs between any two rounds of one.
        let log = Arc::new(Mutex::new(Vec::new()));
        let call = |name: &'static str| {
            let log = log.clone();
            let rounds = Arc::new(Mutex::new(0usize));
            async move {
                drive(
                    MAX_ROUNDS,
                    |retry: Retry| {
                        let (log, rounds) = (log.clone(), rounds.clone());
                        async move {
                            tokio::task::yield_now().await;
                            log.lock().expect("not poisoned").push((name, retry));
                            let round = {
                                let mut rounds = rounds.lock().expect("not poisoned");
                                *rounds += 1;
                                *rounds
                            };
                            Ok(if round < 3 {
                                Reply::InputRequired(asking(
                                    &format!("{name}-{round}"),
                                    Some(&format!("{name}-state-{round}")),
                                ))
                            } else {
                                Reply::Complete(name)
                            })
                        }
                    },
                    |requests: InputRequests| async move {
                        tokio::task::yield_now().await;
                        Ok(requests.keys().map(|key| (key.clone(), json!(key))).collect())
                    },
                )
                .await
            }
        };
        let unrelated = call("unrelated");
        let other = call("other");
        let (unrelated, other) = tokio::join!(unrelated, other);
        assert_eq!((unrelated.expect("done"), other.expect("done")), ("unrelated", "other"));
        let log = log.lock().expect("not poisoned");
        let names: Vec<&str> = log.iter().map(|(name, _)| *name).collect();
        assert_ne!(
            names,
            ["unrelated", "unrelated", "unrelated", "other", "other", "other"],
            "interleaved"
        );
        for (name, retry) in log.iter() {
            let prefix = format!("{name}-");
            if let Some(state) = &retry.request_state {
                assert!(state.starts_with(&prefix), "{name} got {state}");
            }
            for key in retry.input_responses.iter().flat_map(|responses| responses.keys()) {
                assert!(key.starts_with(&prefix), "{name} got the answer to {key}");
            }
        }
        let first_rounds: Vec<&Retry> = log
            .iter()
            .filter(|(_, retry)| retry.request_state.is_none())
            .map(|(_, retry)| retry)
            .collect();
        assert!(
            first_rounds.iter().all(|retry| retry.input_responses.is_none()),
            "first rounds carry nothing"
        );
    }

    #[test]
    fn state_only_rounds_back_off_up_to_a_second() {
        let pauses: Vec<u64> = (0..7).map(|n| state_only_pause(n).as_millis() as u64).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000, 1000]);
    }
}
