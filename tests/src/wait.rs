//! Bounded waits: every wait in the end-to-end tests has a limit, and reaching it is a
//! failure that says what was being waited for.

use std::future::Future;
use std::time::Duration;

use corral_client::protocol::{McpServerStatus, ServerStatus};
use corral_client::{Client, ClientNotification, Notifications};

/// Upper bound of every wait in these tests; reaching it is a failure.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often bounded polls re-check their condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Bound for an MCP server peer to get ready (or fail): generous, because
/// starting Python and Node peers on a loaded 2-core machine takes seconds.
pub const SERVER_WAIT: Duration = Duration::from_secs(30);

/// How long a daemon gets to exit after SIGTERM before it is killed.
pub const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Await `future`, failing the test after [`WAIT`] with a message naming `what`.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    within_for(WAIT, what, future).await
}

/// Await `future`, failing the test after `limit` with a message naming `what`.
pub async fn within_for<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_elapsed) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Poll `condition` every [`POLL_INTERVAL`] until it returns `Some`, failing after [`WAIT`].
pub async fn poll_until<T, F, Fut>(what: &str, condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until_for(WAIT, what, condition).await
}

/// Poll `condition` every [`POLL_INTERVAL`] until it returns `Some`, failing after `limit`.
pub async fn poll_until_for<T, F, Fut>(limit: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = condition().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The next notification on a client's stream, failing after [`WAIT`] or if the stream ends.
pub async fn next_notification(notifications: &mut Notifications) -> ClientNotification {
    match within("a notification from corrald", notifications.next()).await {
        Some(Ok(notification)) => notification,
        Some(Err(error)) => panic!("undecodable notification: {error}"),
        None => panic!("the notification stream ended: {:?}", notifications.end_reason()),
    }
}

/// The next `mcpServer/oauthLogin/completed`, skipping other notifications;
/// fails if none comes within `limit` in all (a login runs the opener and a
/// whole authorization flow, so it gets more than [`WAIT`]).
pub async fn next_login_completion(
    notifications: &mut Notifications,
    limit: Duration,
) -> corral_client::protocol::OauthLoginCompleted {
    use corral_client::protocol::DaemonNotification;
    within_for(limit, "an OAuth login completion", async {
        loop {
            match notifications.next().await {
                Some(Ok(ClientNotification::Daemon(DaemonNotification::OauthLoginCompleted(done)))) => return done,
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("undecodable notification: {error}"),
                None => panic!("the notification stream ended: {:?}", notifications.end_reason()),
            }
        }
    })
    .await
}

/// `mcpServer/get` for `name`, failing the test on an error.
pub async fn get_server(client: &Client, name: &str) -> McpServerStatus {
    client
        .mcp_server_get(name)
        .await
        .unwrap_or_else(|error| panic!("mcpServer/get {name}: {error}"))
        .server
}

/// Poll `mcpServer/get` until `name` has `status`, failing after `limit` with the last state seen.
pub async fn wait_for_status(client: &Client, name: &str, status: ServerStatus, limit: Duration) -> McpServerStatus {
    wait_for_server(client, name, &format!("status {status:?}"), limit, |server| {
        server.status == status
    })
    .await
}

/// Poll `mcpServer/get` until `name` satisfies `condition` (described by
/// `what`), failing after `limit` with the last state seen.
pub async fn wait_for_server(
    client: &Client,
    name: &str,
    what: &str,
    limit: Duration,
    mut condition: impl FnMut(&McpServerStatus) -> bool,
) -> McpServerStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let server = get_server(client, name).await;
        if condition(&server) {
            return server;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for server `{name}` to reach {what}; last state: {server:#?}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
