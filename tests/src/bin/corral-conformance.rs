//! `corral-conformance URL`: Corral as the client under test of the official MCP client
//! conformance suite (`@modelcontextprotocol/conformance`, run by `tests/tests/e2e/conformance.rs`).
//!
//! The harness appends the server URL as the last argument and names the scenario in
//! `MCP_CONFORMANCE_SCENARIO` (credentials, if any, in `MCP_CONFORMANCE_CONTEXT`). This program
//! runs a real corrald with one streamable-HTTP server entry for that URL, and drives it like a
//! front-end would: when the server needs a login, `mcpServer/oauthLogin` with
//! `tests/peers/follow_url.py` as the opener (the harness's authorization server approves at
//! once); once the server is `ready`, it calls a tool through corrald (`add_numbers` for
//! `tools_call`, else the first tool listed). Exit status 0 when the server became ready.

use std::process::ExitCode;
use std::time::Duration;

use corral_client::protocol::{DaemonNotification, FailureReason, ServerStatus};
use corral_client::{Client, ClientNotification};
use corral_tests::{TestDaemon, follow_url_opener, toml_string};
use serde_json::{Value, json};

const NAME: &str = "target";
const WAIT: Duration = Duration::from_secs(20);

fn main() -> ExitCode {
    let Some(url) = std::env::args().next_back().filter(|arg| arg.starts_with("http")) else {
        eprintln!("usage: corral-conformance URL (the conformance harness appends it)");
        return ExitCode::from(2);
    };
    let scenario = std::env::var("MCP_CONFORMANCE_SCENARIO").unwrap_or_default();
    let context: Value = std::env::var("MCP_CONFORMANCE_CONTEXT")
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start a runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&url, &scenario, &context)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("corral-conformance ({scenario}): {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, scenario: &str, context: &Value) -> Result<(), String> {
    let mut server = format!(
        "[servers.{NAME}]\nurl = {}\nstartup_timeout_sec = 15\n",
        toml_string(url)
    );
    let mut builder = TestDaemon::builder();
    if let Some(client_id) = context["client_id"].as_str() {
        server.push_str(&format!("oauth_client_id = {}\n", toml_string(client_id)));
        if context["client_secret"].is_string() {
            server.push_str("oauth_client_secret_env_var = \"CORRAL_CONFORMANCE_CLIENT_SECRET\"\n");
        }
    } else if scenario == "auth/basic-cimd" {
        server.push_str("oauth_client_metadata_url = \"https://conformance-test.local/client-metadata.json\"\n");
    }
    if let Some(secret) = context["client_secret"].as_str() {
        builder = builder.env("CORRAL_CONFORMANCE_CLIENT_SECRET", secret);
    }
    let config = format!("credentials_store = \"file\"\n{}\n{server}", follow_url_opener());
    let daemon = builder.config(&config).start();
    let outcome = drive(&daemon, scenario).await;
    if outcome.is_err() {
        eprintln!("corrald's log:\n{}", daemon.stderr());
    }
    outcome
}

/// Wait until the server leaves `starting`.
async fn settled(client: &Client) -> Result<corral_client::protocol::McpServerStatus, String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let server = client
            .mcp_server_get(NAME)
            .await
            .map_err(|error| error.to_string())?
            .server;
        if !matches!(server.status, ServerStatus::Starting | ServerStatus::Stopped) {
            return Ok(server);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the server is still {} after {WAIT:?}", server.status));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next `mcpServer/oauthLogin/completed`: `Ok` for a success.
async fn login_outcome(notifications: &mut corral_client::Notifications) -> Result<(), String> {
    loop {
        let next = tokio::time::timeout(WAIT, notifications.next())
            .await
            .map_err(|_| "no login outcome in time".to_owned())?
            .ok_or("notification stream ended")?
            .map_err(|error| error.to_string())?;
        if let ClientNotification::Daemon(DaemonNotification::OauthLoginCompleted(done)) = next {
            return match done.error {
                None => Ok(()),
                Some(error) => Err(format!("login failed: {error}")),
            };
        }
    }
}

/// Wait until the server is ready again after a login (the daemon restarts it).
async fn ready_again(client: &Client) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let server = client
            .mcp_server_get(NAME)
            .await
            .map_err(|error| error.to_string())?
            .server;
        if server.status == ServerStatus::Ready && server.uptime_ms.is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("the server is {} after the login", server.status));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drive(daemon: &TestDaemon, scenario: &str) -> Result<(), String> {
    let mut watcher = daemon.connect_client().await;
    let mut notifications = watcher.take_notifications().ok_or("no notification stream")?;
    let client = daemon.connect_client().await;
    let mut server = settled(&client).await?;
    if server.status == ServerStatus::Failed
        && matches!(
            server.failure_reason,
            Some(FailureReason::AuthenticationRequired | FailureReason::ReauthenticationRequired)
        )
    {
        client
            .mcp_server_oauth_login(NAME, None)
            .await
            .map_err(|error| format!("mcpServer/oauthLogin: {error}"))?;
        login_outcome(&mut notifications).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        server = settled(&client).await?;
    }
    if server.status != ServerStatus::Ready {
        return Err(format!(
            "the server is {} ({:?}): {}",
            server.status,
            server.failure_reason,
            server.error.unwrap_or_default()
        ));
    }
    let tools = client
        .tools_list(Some(NAME))
        .await
        .map_err(|error| error.to_string())?
        .tools;
    let (tool, arguments) = if scenario == "tools_call" {
        ("add_numbers".to_owned(), json!({ "a": 5, "b": 3 }))
    } else {
        match tools.first().and_then(|tool| tool.tool["name"].as_str()) {
            Some(name) => (name.to_owned(), json!({})),
            None => return Ok(()),
        }
    };
    // A 403 insufficient_scope makes corrald re-authorize (a bounded number of times); wait for
    // that login and call again.
    for _ in 0..4 {
        match client
            .tools_call(NAME, &tool, arguments.as_object().cloned(), WAIT)
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if error.to_string().contains("re-authorization with scope") => {
                eprintln!("{error}");
                login_outcome(&mut notifications).await?;
                ready_again(&client).await?;
            }
            Err(error) if scenario == "tools_call" => return Err(format!("tools/call {tool}: {error}")),
            // Auth scenarios grade the authorization, not the tool's answer.
            Err(error) => {
                eprintln!("tools/call {tool}: {error}");
                return Ok(());
            }
        }
    }
    Ok(())
}
