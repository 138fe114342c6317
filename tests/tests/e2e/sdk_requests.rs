//! A Rust front-end on the client SDK answers what an MCP server asks: the real
//! `@modelcontextprotocol/server-everything` elicits during a tool call, corrald forwards the
//! question to the calling SDK client, and the client's answer reaches the server.

use std::time::Duration;

use corral_client::protocol::{ClientCapabilities, ElicitationRequest, ServerStatus};
use corral_client::{Client, DaemonRequests};
use corral_tests::{SERVER_WAIT, TestDaemon, WAIT, everything_config, text_of, wait_for_status, within};
use serde_json::json;

/// A daemon running server-everything, ready, and an SDK client connected to it that declared
/// the elicitation capability, with its request stream taken.
async fn everything_and_an_eliciting_client() -> (TestDaemon, Client, DaemonRequests) {
    let daemon = TestDaemon::start_with_config(&everything_config("everything"));
    let observer = daemon.connect_client().await;
    wait_for_status(&observer, "everything", ServerStatus::Ready, SERVER_WAIT).await;
    let mut capabilities = ClientCapabilities::default();
    capabilities.elicitation = true;
    let mut client = Client::connect(daemon.client_options().with_capabilities(capabilities))
        .await
        .expect("connect with the elicitation capability");
    let requests = client.take_requests().expect("the capability was declared");
    (daemon, client, requests)
}

#[tokio::test]
async fn an_sdk_front_end_answers_an_elicitation_from_server_everything() {
    let (_daemon, client, mut requests) = everything_and_an_eliciting_client().await;

    let call = client.tools_call("everything", "trigger-elicitation-request", None, WAIT);
    let answer = async {
        let request = within("the elicitation reaching the SDK client", requests.next())
            .await
            .expect("a request before the connection closes");
        let params = request
            .params_as::<ElicitationRequest>()
            .expect("an elicitation")
            .expect("its params decode");
        assert_eq!(params.server, "everything");
        assert_eq!(
            params.request["requestedSchema"]["required"],
            json!(["name"]),
            "{:?}",
            params.request
        );
        request
            .respond(json!({"action": "accept", "content": {"name": "Grace Hopper", "check": true, "integer": 42}}))
            .expect("the answer is sent");
    };
    let (result, ()) = tokio::join!(call, answer);
    let result = result.expect("the tool call succeeds once answered");
    let text = text_of(&result);
    assert!(text.contains("User provided the requested information"), "{text}");
    assert!(text.contains("- Name: Grace Hopper"), "{text}");
    assert!(text.contains("- Favorite Integer: 42"), "{text}");
}

#[tokio::test]
async fn an_sdk_front_end_that_drops_the_question_fails_it_and_the_call_ends() {
    let (_daemon, client, mut requests) = everything_and_an_eliciting_client().await;
    let call = client.tools_call("everything", "trigger-elicitation-request", None, WAIT);
    let drop_it = async {
        let request = within("the elicitation", requests.next()).await.expect("a request");
        // Dropped without an answer: the SDK answers with an error for the application, so the
        // server is not left waiting and the call ends (with the server's view of that error).
        drop(request);
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(call, drop_it) })
        .await
        .expect("the call ends instead of hanging");
    // server-everything reports the error its elicitation got as the tool's error result.
    let result = result.expect("the call is answered");
    assert_eq!(result["isError"], true, "{result}");
    assert!(
        text_of(&result).contains("the front-end dropped the request without answering it"),
        "{result}"
    );
}
