//! `resources/list`, `resources/templates/list`, `resources/read`,
//! `prompts/list` and `prompts/get` through corrald, against
//! server-everything (which offers all of them) and server-filesystem
//! (which offers none): results untouched, servers without the capability
//! simply absent, server errors passed on with the server's own code.

use corral_client::protocol::{ErrorCode, ServerStatus};
use corral_client::{Client, ClientError};
use corral_tests::{SERVER_WAIT, TestDaemon, everything_config, filesystem_config, wait_for_status};
use serde_json::json;

async fn daemon_with_everything_and_files() -> (TestDaemon, Client, tempfile::TempDir) {
    let files = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "{}{}",
        everything_config("everything"),
        filesystem_config("files", files.path())
    );
    let daemon = TestDaemon::start_with_config(&config);
    let client = daemon.connect_client().await;
    for server in ["everything", "files"] {
        wait_for_status(&client, server, ServerStatus::Ready, SERVER_WAIT).await;
    }
    (daemon, client, files)
}

fn code(error: &ClientError) -> Option<ErrorCode> {
    error.error_code()
}

#[tokio::test]
async fn resources_and_templates_are_listed_and_read_untouched() {
    let (_daemon, client, _files) = daemon_with_everything_and_files().await;

    let listing = client.resources_list(None).await.expect("resources/list");
    assert!(listing.errors.is_empty(), "{:?}", listing.errors);
    assert!(
        listing.items.iter().all(|item| item.server == "everything"),
        "files offers no resources"
    );
    let architecture = listing
        .items
        .iter()
        .find(|item| item.item["uri"] == "demo://resource/static/document/architecture.md")
        .expect("server-everything's architecture document is listed");
    assert_eq!(architecture.item["mimeType"], "text/markdown", "{}", architecture.item);

    let templates = client
        .resource_templates_list(Some("everything"))
        .await
        .expect("templates");
    let uris: Vec<&str> = templates
        .items
        .iter()
        .filter_map(|item| item.item["uriTemplate"].as_str())
        .collect();
    assert!(uris.contains(&"demo://resource/dynamic/text/{resourceId}"), "{uris:?}");

    let read = client
        .resources_read("everything", "demo://resource/static/document/architecture.md")
        .await
        .expect("resources/read");
    let text = read["contents"][0]["text"].as_str().expect("text contents");
    assert!(text.contains("Architecture"), "{text}");

    let error = client
        .resources_read("everything", "demo://no/such/resource")
        .await
        .expect_err("unknown resource");
    assert_eq!(code(&error), Some(ErrorCode::ServerError), "{error}");
    let ClientError::Rpc { data, message, .. } = &error else {
        panic!("expected an RPC error, got {error:?}");
    };
    assert!(
        message.contains("`resources/read` of `demo://no/such/resource`"),
        "{message}"
    );
    let server_code = data.as_ref().and_then(|data| data["code"].as_i64());
    assert_eq!(
        server_code,
        Some(-32602),
        "the server's own error code is passed on: {data:?}"
    );
}

#[tokio::test]
async fn prompts_are_listed_and_fetched_with_arguments() {
    let (_daemon, client, _files) = daemon_with_everything_and_files().await;

    let prompts = client.prompts_list(None).await.expect("prompts/list");
    let names: Vec<&str> = prompts
        .items
        .iter()
        .filter_map(|item| item.item["name"].as_str())
        .collect();
    assert!(
        names.contains(&"simple-prompt") && names.contains(&"args-prompt"),
        "{names:?}"
    );
    assert!(prompts.items.iter().all(|item| item.server == "everything"));

    let simple = client
        .prompts_get("everything", "simple-prompt", None)
        .await
        .expect("prompts/get");
    assert!(
        simple["messages"]
            .as_array()
            .is_some_and(|messages| !messages.is_empty()),
        "{simple}"
    );

    let with_arguments = client
        .prompts_get(
            "everything",
            "args-prompt",
            json!({"city": "Lisbon"}).as_object().cloned(),
        )
        .await
        .expect("prompts/get with arguments");
    assert!(with_arguments.to_string().contains("Lisbon"), "{with_arguments}");

    let error = client.prompts_list(Some("nobody")).await.expect_err("unknown server");
    assert_eq!(code(&error), Some(ErrorCode::ServerNotFound), "{error}");
    let files_only = client
        .prompts_list(Some("files"))
        .await
        .expect("a server without prompts");
    assert!(files_only.items.is_empty() && files_only.errors.is_empty());
}

#[tokio::test]
async fn a_servers_log_messages_reach_front_ends_naming_the_server() {
    let (_daemon, mut client, _files) = daemon_with_everything_and_files().await;
    let mut notifications = client.take_notifications().expect("notification stream");
    client
        .tools_call(
            "everything",
            "toggle-simulated-logging",
            None,
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("turn on the server's simulated logging");
    // server-everything logs every 5 s once toggled.
    let log = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            match notifications.next().await {
                Some(Ok(corral_client::ClientNotification::Daemon(
                    corral_client::protocol::DaemonNotification::ServerLog(log),
                ))) => return log,
                Some(_) => {}
                None => panic!("notification stream ended"),
            }
        }
    })
    .await
    .expect("a log message within 20 s");
    assert_eq!(log.name, "everything");
    assert!(
        log.data.as_str().is_some_and(|text| text.contains("message")),
        "{log:?}"
    );
    assert!(
        [
            "debug",
            "info",
            "notice",
            "warning",
            "error",
            "critical",
            "alert",
            "emergency"
        ]
        .contains(&log.level.as_str()),
        "{log:?}"
    );
}
