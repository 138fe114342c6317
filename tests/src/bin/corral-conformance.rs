//! `corral-conformance URL`: Corral as the client under test of the official MCP client
//! conformance suite (`@modelcontextprotocol/conformance`, run by `tests/tests/e2e/conformance.rs`).
//!
//! The harness appends the server URL as the last argument and names the scenario in
//! `MCP_CONFORMANCE_SCENARIO` (credentials, if any, in `MCP_CONFORMANCE_CONTEXT`). This program
//! runs a real corrald with one streamable-HTTP server entry for that URL (for the scenarios of
//! the grants for machines, with `oauth_grant` and the context's client, its secret in the
//! environment and its key, workload JWT or ID token in files), and drives it like a
//! front-end would: when the server needs a login, `mcpServer/oauthLogin` with
//! `tests/peers/follow_url.py` as the opener (the harness's authorization server approves at
//! once); once the server is `ready`, it calls tools through corrald as the scenario expects:
//! the calls the harness hands over in the context (`toolCalls`: name and arguments), the
//! focal tool's `inputSchema` echoed back for `json-schema-2020-12-preservation`, `add_numbers`
//! for `tools_call`, every tool listed for `sep-2322-client-request-state`, else the first
//! tool listed. It declares elicitation and accepts every
//! form elicitation with the defaults of the requested schema (what a user pressing "accept"
//! on a prefilled form sends); URL elicitations are declined. In the skills scenarios
//! (`sep-2640-client-*`) it lists the server's skills and, except in the one that checks that
//! nothing is fetched ahead of need, loads each (`skills/read`: corrald verifies it against
//! its entry) and reads its other files once it verified. Exit status 0 when the server
//! became ready, the calls the scenario grades succeeded, and none of the secrets the scenario
//! handed over appears in corrald's log (at `CORRAL_LOG=trace`).
//!
//! In the DPoP scenarios (`auth/dpop*`) corrald is then stopped and started again over the same
//! data directory, and the server must become ready without a login and answer the calls
//! again: the key its token is bound to came back from the credential store (the harness's
//! server checks every proof's key against the token's `cnf.jkt`, and the scheme).

use std::process::ExitCode;
use std::time::Duration;

use corral_client::protocol::{
    ClientCapabilities, DaemonNotification, ElicitationRequest, FailureReason, ServerStatus, SkillsReadParams,
};
use corral_client::{Client, ClientNotification, DaemonRequests};
use corral_tests::{TestDaemon, follow_url_opener, scratch_dir, toml_string};
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
    // The secrets of the grants for machines go to files (and one to the environment), as an
    // operator would keep them; the directory lives as long as the daemon.
    let secrets = tempfile::tempdir().map_err(|error| format!("cannot make a directory for secrets: {error}"))?;
    if let Some(grant) = grant_config(scenario, context, secrets.path())? {
        server.push_str(&grant);
    } else if let Some(client_id) = context["client_id"].as_str() {
        server.push_str(&format!("oauth_client_id = {}\n", toml_string(client_id)));
        if context["client_secret"].is_string() {
            server.push_str("oauth_client_secret_env_var = \"CORRAL_CONFORMANCE_CLIENT_SECRET\"\n");
        }
    } else if scenario == "auth/basic-cimd" {
        server.push_str("oauth_client_metadata_url = \"https://conformance-test.local/client-metadata.json\"\n");
    }
    let config = format!("credentials_store = \"file\"\n{}\n{server}", follow_url_opener());
    // Kept across a restart of corrald (the daemon's own directory goes with it).
    let data = scratch_dir();
    let start = || {
        let mut builder = TestDaemon::builder()
            .config(&config)
            .env("CORRAL_DATA_DIR", data.path())
            // Everything it can log, so that the check of secrets sees every line.
            .env("CORRAL_LOG", "trace");
        if let Some(secret) = context["client_secret"].as_str() {
            builder = builder.env("CORRAL_CONFORMANCE_CLIENT_SECRET", secret);
        }
        builder.start()
    };
    let daemon = start();
    let outcome = drive(&daemon, scenario, context, true)
        .await
        .and_then(|()| secrets_not_logged(&daemon.stderr(), context));
    if outcome.is_err() || !scenario.starts_with("auth/dpop") {
        if outcome.is_err() {
            eprintln!("corrald's log:\n{}", daemon.stderr());
        }
        return outcome;
    }
    drop(daemon);
    let daemon = start();
    let outcome = drive(&daemon, scenario, context, false)
        .await
        .and_then(|()| secrets_not_logged(&daemon.stderr(), context))
        .map_err(|error| format!("after a restart of corrald: {error}"));
    if outcome.is_err() {
        eprintln!("corrald's log after the restart:\n{}", daemon.stderr());
    }
    outcome
}

/// No secret the scenario handed over (client secret, private key, workload JWT, ID token) in
/// corrald's log.
fn secrets_not_logged(log: &str, context: &Value) -> Result<(), String> {
    for key in ["client_secret", "private_key_pem", "valid_jwt", "idp_id_token"] {
        let Some(secret) = context[key].as_str() else {
            continue;
        };
        // A PEM key by its base64 lines, which are what would leak.
        let leaked = secret
            .lines()
            .filter(|line| !line.starts_with("-----") && line.len() >= 16)
            .any(|line| log.contains(line));
        if leaked {
            return Err(format!("the scenario's `{key}` appears in corrald's log"));
        }
    }
    Ok(())
}

/// The `oauth_grant` lines of the scenarios of the grants for machines (the context carries the
/// client and its secret, key, workload JWT or ID token), with the secrets written to files in
/// `secrets`; `None` for the other scenarios.
fn grant_config(scenario: &str, context: &Value, secrets: &std::path::Path) -> Result<Option<String>, String> {
    let text = |key: &str| {
        context[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("the scenario's context has no `{key}`"))
    };
    let file = |name: &str, key: &str| -> Result<String, String> {
        let path = secrets.join(name);
        std::fs::write(&path, text(key)?).map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        Ok(toml_string(&path.display().to_string()))
    };
    let lines = match scenario {
        "auth/client-credentials-jwt" => format!(
            "oauth_grant = \"client_credentials\"\noauth_client_id = {}\noauth_private_key_file = {}\n\
             oauth_private_key_algorithm = {}\n",
            toml_string(&text("client_id")?),
            file("client-key.pem", "private_key_pem")?,
            toml_string(&text("signing_algorithm")?),
        ),
        "auth/client-credentials-basic" => format!(
            "oauth_grant = \"client_credentials\"\noauth_client_id = {}\n\
             oauth_client_secret_env_var = \"CORRAL_CONFORMANCE_CLIENT_SECRET\"\n",
            toml_string(&text("client_id")?),
        ),
        "auth/wif-jwt-bearer" => format!(
            "oauth_grant = \"jwt_bearer\"\noauth_client_id = {}\noauth_assertion_file = {}\n",
            toml_string(&text("client_id")?),
            file("workload.jwt", "valid_jwt")?,
        ),
        "auth/enterprise-managed-authorization" | "auth/cross-app-access-complete-flow" => format!(
            "oauth_grant = \"enterprise_managed\"\noauth_client_id = {}\n\
             oauth_client_secret_env_var = \"CORRAL_CONFORMANCE_CLIENT_SECRET\"\noauth_idp_issuer = {}\n\
             oauth_idp_token_endpoint = {}\noauth_idp_client_id = {}\noauth_id_token_file = {}\n",
            toml_string(&text("client_id")?),
            toml_string(&text("idp_issuer")?),
            toml_string(&text("idp_token_endpoint")?),
            toml_string(&text("idp_client_id")?),
            file("id-token.jwt", "idp_id_token")?,
        ),
        _ => return Ok(None),
    };
    Ok(Some(lines))
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

/// How many logins (the front-end's, and step-ups corrald starts by itself) a start may take.
const MAX_LOGINS: usize = 4;
/// How many step-ups corrald starts by itself for one server within 10 minutes (`MAX_STEP_UPS`).
const STEP_UPS: usize = 2;

/// The server's status once it came up or gave up, after what a user would do: `corral login`
/// while it asks for a login (its first, or again after its authorization server changed), and
/// waiting while corrald re-authorizes it by itself after a 403 `insufficient_scope` at its start
/// (the opener follows the URL), as often as corrald does that.
async fn come_up(
    client: &Client,
    notifications: &mut corral_client::Notifications,
) -> Result<corral_client::protocol::McpServerStatus, String> {
    let mut server = settled(client).await?;
    let mut step_ups = 0;
    for _ in 0..MAX_LOGINS {
        match (server.status, server.failure_reason) {
            (
                ServerStatus::Failed,
                Some(FailureReason::AuthenticationRequired | FailureReason::ReauthenticationRequired),
            ) => {
                client
                    .mcp_server_oauth_login(NAME, None)
                    .await
                    .map_err(|error| format!("mcpServer/oauthLogin: {error}"))?;
                login_outcome(notifications).await?;
            }
            (ServerStatus::Failed, Some(FailureReason::InsufficientScope)) if step_ups < STEP_UPS => {
                step_ups += 1;
                login_outcome(notifications).await?;
            }
            _ => return Ok(server),
        }
        server = restarted(client, notifications).await?;
    }
    Ok(server)
}

/// The server's status once the start after a login (`starting`, then something else) is over.
async fn restarted(
    client: &Client,
    notifications: &mut corral_client::Notifications,
) -> Result<corral_client::protocol::McpServerStatus, String> {
    let mut started = false;
    loop {
        let next = tokio::time::timeout(WAIT, notifications.next())
            .await
            .map_err(|_| "the server did not start again after the login".to_owned())?
            .ok_or("notification stream ended")?
            .map_err(|error| error.to_string())?;
        let ClientNotification::Daemon(DaemonNotification::StartupStatusUpdated(update)) = next else {
            continue;
        };
        if update.name != NAME {
            continue;
        }
        if update.status == ServerStatus::Starting {
            started = true;
        } else if started {
            return settled(client).await;
        }
    }
}

/// Answer what the server asks through corrald: a form elicitation accepted with the schema's
/// defaults, anything else declined.
async fn answer_requests(mut requests: DaemonRequests) {
    while let Some(request) = requests.next().await {
        let answer = match request.params_as::<ElicitationRequest>() {
            Some(Ok(params)) if params.request.get("url").is_none() => {
                json!({ "action": "accept", "content": schema_defaults(&params.request["requestedSchema"]) })
            }
            _ => json!({ "action": "decline" }),
        };
        let _ = request.respond(answer);
    }
}

/// The `default` of every property of an elicitation's `requestedSchema` that has one.
fn schema_defaults(schema: &Value) -> Value {
    let defaults = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, property)| Some((name.clone(), property.get("default")?.clone())))
        .collect();
    Value::Object(defaults)
}

/// One tool call the scenario expects.
struct Call {
    tool: String,
    arguments: Value,
    /// Whether its failure fails the run: the scenario grades this call's outcome (not so for
    /// the first tool called with no arguments, nor in the auth scenarios, which grade the
    /// authorization).
    graded: bool,
}

/// The tool calls the scenario expects.
fn calls_for(scenario: &str, context: &Value, tools: &[Value]) -> Vec<Call> {
    let graded = !scenario.starts_with("auth/");
    if let Some(calls) = context["toolCalls"].as_array() {
        return calls
            .iter()
            .filter_map(|call| {
                Some(Call {
                    tool: call["name"].as_str()?.to_owned(),
                    arguments: call["arguments"].clone(),
                    graded,
                })
            })
            .collect();
    }
    match scenario {
        "tools_call" => vec![Call {
            tool: "add_numbers".to_owned(),
            arguments: json!({ "a": 5, "b": 3 }),
            graded,
        }],
        // Round-trip the focal tool's inputSchema, as corrald lists it, through the echo tool.
        // MRTR (SEP-2322): every tool, each one graded (input_required rounds, a result without
        // `resultType`, and a plain call between the rounds of others).
        "sep-2322-client-request-state" => tools
            .iter()
            .filter_map(|tool| tool["name"].as_str())
            .map(|tool| Call {
                tool: tool.to_owned(),
                arguments: json!({}),
                graded,
            })
            .collect(),
        "json-schema-2020-12-preservation" => tools
            .iter()
            .filter(|tool| tool["name"] != "json_schema_echo")
            .map(|focal| Call {
                tool: "json_schema_echo".to_owned(),
                arguments: json!({ "schema": focal["inputSchema"] }),
                graded,
            })
            .take(1)
            .collect(),
        _ => tools
            .iter()
            .filter_map(|tool| tool["name"].as_str())
            .map(|tool| Call {
                tool: tool.to_owned(),
                arguments: json!({}),
                graded: false,
            })
            .take(1)
            .collect(),
    }
}

/// Drive one daemon through the scenario; `may_log_in`: a login is allowed (not after a
/// restart, where the stored credentials must do).
async fn drive(daemon: &TestDaemon, scenario: &str, context: &Value, may_log_in: bool) -> Result<(), String> {
    let mut watcher = daemon.connect_client().await;
    let mut notifications = watcher.take_notifications().ok_or("no notification stream")?;
    let mut capabilities = ClientCapabilities::default();
    capabilities.elicitation = true;
    let mut client = Client::connect(daemon.client_options().with_capabilities(capabilities))
        .await
        .map_err(|error| format!("connect to corrald: {error}"))?;
    let requests = client.take_requests().ok_or("no request stream")?;
    let _answering = tokio::spawn(answer_requests(requests));
    let server = if may_log_in {
        come_up(&client, &mut notifications).await?
    } else {
        settled(&client).await?
    };
    if server.status != ServerStatus::Ready {
        return Err(format!(
            "the server is {} ({:?}): {}",
            server.status,
            server.failure_reason,
            server.error.unwrap_or_default()
        ));
    }
    let tools: Vec<Value> = client
        .tools_list(Some(NAME))
        .await
        .map_err(|error| error.to_string())?
        .tools
        .into_iter()
        .map(|tool| tool.tool)
        .collect();
    for expected in calls_for(scenario, context, &tools) {
        call(&client, &mut notifications, &expected).await?;
    }
    if scenario.starts_with("sep-2640-client-") {
        skills(&client, scenario).await?;
    }
    Ok(())
}

/// The skills scenarios (SEP-2640): list the server's skills; unless the scenario is the one
/// that checks nothing is fetched ahead of need, load each skill as a user choosing it would
/// (its `SKILL.md`, verified by corrald), and read its supporting files only once it verified.
/// A verification failure is what the tampering scenarios expect: said, and the run goes on.
async fn skills(client: &Client, scenario: &str) -> Result<(), String> {
    let listing = client
        .skills_list(Some(NAME))
        .await
        .map_err(|error| format!("skills/list: {error}"))?;
    if let Some(error) = listing.errors.first() {
        return Err(format!("skills/list: {}", error.message));
    }
    if scenario == "sep-2640-client-no-prefetch" {
        return Ok(());
    }
    for skill in listing.skills.iter().filter(|skill| skill.problem.is_none()) {
        let Some(uri) = skill.uri.clone() else { continue };
        let entry = Some(skill.skill.clone());
        let loaded = client
            .skills_read(SkillsReadParams::new(NAME, uri.clone()).with_entry(entry.clone()))
            .await;
        if let Err(error) = loaded {
            eprintln!("skill {uri} not loaded: {error}");
            continue;
        }
        let files = skill.skill["resources"].as_array().cloned().unwrap_or_default();
        for file in files
            .iter()
            .filter_map(|file| file["uri"].as_str())
            .filter(|file| *file != uri)
        {
            let read = SkillsReadParams::new(NAME, uri.clone())
                .with_file(Some(file.to_owned()))
                .with_entry(entry.clone());
            if let Err(error) = client.skills_read(read).await {
                eprintln!("{file} of skill {uri} not read: {error}");
            }
        }
    }
    Ok(())
}

/// Whether the server failed asking for a login.
async fn needs_login(client: &Client) -> bool {
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.mcp_server_get(NAME).await.is_ok_and(|got| {
        got.server.status == ServerStatus::Failed
            && matches!(
                got.server.failure_reason,
                Some(FailureReason::AuthenticationRequired | FailureReason::ReauthenticationRequired)
            )
    })
}

/// Make a call; a 403 `insufficient_scope` makes corrald re-authorize (a bounded number of
/// times): wait for that login and call again. A failure is an error when the call is graded.
async fn call(
    client: &Client,
    notifications: &mut corral_client::Notifications,
    expected: &Call,
) -> Result<(), String> {
    let Call {
        tool,
        arguments,
        graded,
    } = expected;
    for _ in 0..MAX_LOGINS {
        match client
            .tools_call(NAME, tool, arguments.as_object().cloned(), WAIT)
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if error.to_string().contains("re-authorization with scope") => {
                eprintln!("{error}");
                login_outcome(notifications).await?;
                ready_again(client).await?;
            }
            // The server refused the token (its authorization server changed, say): log in again.
            Err(error) if needs_login(client).await => {
                eprintln!("{error}");
                if come_up(client, notifications).await?.status != ServerStatus::Ready {
                    return Err(format!("tools/call {tool}: {error}; the server did not come back"));
                }
            }
            Err(error) if *graded => return Err(format!("tools/call {tool}: {error}")),
            Err(error) => {
                eprintln!("tools/call {tool}: {error}");
                return Ok(());
            }
        }
    }
    Ok(())
}
