//! `mcpServer/oauthLogin`, `mcpServer/logout`, the `authStatus` of `mcpServer/list|get`, and the
//! step-up after a 403 `insufficient_scope`, on `tools/call` and at a server's start (a task that
//! follows the status notifications, [`step_up_at_start`]): JSON-RPC only. The flow is
//! [`Auth`](crate::auth::Auth)'s; here the server's config comes from the supervisor, the outcome
//! becomes an answer, a notification or a restart, and errors are worded through `rpc`.
//!
//! A login answers with the authorization URL as soon as it exists; a task of the daemon waits for
//! the redirect, publishes `mcpServer/oauthLogin/completed`, and on success restarts the server so
//! it comes up with the new credentials. A second login for the same server replaces the first.
//!
//! A step-up is a login nobody asked for: it starts only where corrald may open a browser
//! (`Auth::opens_browser_unasked`: an `oauth_opener`, or a display) and counts against
//! [`MAX_STEP_UPS`]; elsewhere the sentence says to run `corral login NAME`, which asks for the
//! same scopes (the challenge is remembered).

use std::sync::Arc;

use corral_protocol::config::ServerConfig;
use corral_protocol::{
    DaemonNotification, FailureReason, McpServerLogout, McpServerLogoutResult, McpServerOauthLogin,
    McpServerOauthLoginResult, McpServerStatus, OauthLoginCompleted, Request as _, ServerStatus,
};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;

use crate::api::DaemonContext;
use crate::api::rpc::{login_error, logout_error, parse_params, server_not_found};
use crate::auth::{LoginError, MAX_STEP_UPS, StartedLogin};
use crate::logging::redact_urls;
use crate::supervisor::ControlAction;

/// Fill in `authStatus` (or `authError`) of `statuses`, whose configs are `configs`.
pub(crate) async fn fill_auth_status(
    context: &DaemonContext,
    statuses: &mut [McpServerStatus],
    configs: &[ServerConfig],
) {
    context.auth.fill_auth_status(statuses, configs).await;
}

/// The config of server `name`, or `serverNotFound`.
async fn server_config(context: &DaemonContext, name: &str) -> Result<ServerConfig, ErrorObjectOwned> {
    context
        .supervisor
        .configs(Some(name.to_owned()))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| server_not_found(name))
}

/// Start a login for `name`; returns the authorization URL. A task publishes
/// `mcpServer/oauthLogin/completed` when it ends and restarts the server after a success.
pub(crate) async fn start_login(
    context: Arc<DaemonContext>,
    name: String,
    scopes: Option<Vec<String>>,
) -> Result<String, ErrorObjectOwned> {
    let config = server_config(&context, &name).await?;
    let started = context
        .auth
        .start_login(&config, scopes)
        .await
        .map_err(|error| login_error(&name, &error))?;
    Ok(finish_in_background(context, name, started))
}

/// Leave a task waiting for the end of `started`: it publishes `mcpServer/oauthLogin/completed`
/// and, after a success, restarts the server. Returns the authorization URL.
fn finish_in_background(context: Arc<DaemonContext>, name: String, started: StartedLogin) -> String {
    let authorization_url = started.authorization_url.clone();
    let tasks = context.tasks.clone();
    tasks.spawn(async move {
        let error = started.finished().await.err();
        let success = error.is_none();
        context
            .hub
            .events
            .publish(|seq| DaemonNotification::OauthLoginCompleted(OauthLoginCompleted::new(seq, name.clone(), error)));
        if success {
            // The server comes up with the new credentials without being asked.
            if let Err(error) = context.supervisor.control(name.clone(), ControlAction::Restart).await {
                tracing::warn!(server = %name, "cannot restart after login: {}", redact_urls(&error.to_string()));
            }
        }
    });
    authorization_url
}

/// A request got 403 `insufficient_scope` asking for `required` (`None`: a start of the server,
/// whose task noted the challenge): start a re-authorization with the scopes granted so far plus
/// the required ones, unless this server already had [`MAX_STEP_UPS`] recently, or no browser can
/// be opened here (then `corral login NAME` asks for them). Returns a sentence for the caller's
/// error.
pub(crate) async fn step_up(context: Arc<DaemonContext>, name: &str, required: Option<&str>) -> String {
    let asked = required.map_or_else(String::new, |required| format!(" `{required}`"));
    let config = match server_config(&context, name).await {
        Ok(config) => config,
        Err(error) => return format!("re-authorization could not start: {}", error.message()),
    };
    // Without a browser no login starts (`NoBrowser` below), and nothing is counted.
    if context.auth.opens_browser_unasked() && context.auth.allow_step_up(name).is_err() {
        return format!(
            "the server asks for scope{asked} again after {MAX_STEP_UPS} re-authorizations; not trying again: run `corral login {name} --scopes ...`"
        );
    }
    match context.auth.step_up(&config, required).await {
        Ok(started) => {
            let _authorization_url = finish_in_background(context, name.to_owned(), started);
            format!(
                "re-authorization with scope{asked} started (the browser opens); retry after mcpServer/oauthLogin/completed"
            )
        }
        Err(error @ LoginError::NoBrowser(_)) => login_error(name, &error).message().to_owned(),
        Err(error) => format!(
            "re-authorization could not start: {}",
            login_error(name, &error).message()
        ),
    }
}

/// Step-ups at a server's start: a server whose start failed with 403 `insufficient_scope` (its
/// `tools/list`, say) gets the step-up a `tools/call` gets ([`step_up`], within the same
/// [`MAX_STEP_UPS`]), driven by the status notifications until the daemon shuts down.
pub(crate) async fn step_up_at_start(context: Arc<DaemonContext>, shutdown: tokio_util::sync::CancellationToken) {
    let mut subscription = context.hub.events.subscribe();
    loop {
        let frame = tokio::select! {
            () = shutdown.cancelled() => return,
            frame = subscription.receiver.recv() => frame,
        };
        let frame = match frame {
            Ok(frame) => frame,
            // Behind by more than the ring: those servers are left to `corral login`.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        let DaemonNotification::StartupStatusUpdated(update) = &frame.notification else {
            continue;
        };
        if update.status != ServerStatus::Failed || update.failure_reason != Some(FailureReason::InsufficientScope) {
            continue;
        }
        let sentence = step_up(context.clone(), &update.name, None).await;
        tracing::info!(server = %update.name, "at its start: {sentence}");
    }
}

/// Register `mcpServer/oauthLogin` and `mcpServer/logout`.
pub(crate) fn register(module: &mut RpcModule<DaemonContext>) -> Result<(), RegisterMethodError> {
    module.register_async_method(McpServerOauthLogin::METHOD, |params, context, _| async move {
        let params = parse_params::<McpServerOauthLogin>(&params)?;
        let authorization_url = start_login(context, params.name, params.scopes).await?;
        Ok::<_, ErrorObjectOwned>(McpServerOauthLoginResult::new(authorization_url))
    })?;

    module.register_async_method(McpServerLogout::METHOD, |params, context, _| async move {
        let params = parse_params::<McpServerLogout>(&params)?;
        let name = params.name.clone();
        let config = server_config(&context, &name).await?;
        // Holds the server's refresh guard until the restart below was asked for.
        let Some(logged_out) = context
            .auth
            .logout(&config)
            .await
            .map_err(|error| logout_error(&name, &error))?
        else {
            return Ok(McpServerLogoutResult::new(false));
        };
        // A running server would keep its session until the next 401; restart it so it runs
        // (or fails, `authenticationRequired`) without the deleted credentials at once.
        let running = context
            .supervisor
            .get(name.clone())
            .await?
            .is_some_and(|server| matches!(server.status, ServerStatus::Ready | ServerStatus::Starting));
        if logged_out.removed && running {
            context.supervisor.control(name.clone(), ControlAction::Restart).await?;
        }
        Ok::<_, ErrorObjectOwned>(McpServerLogoutResult::new(logged_out.removed))
    })?;
    Ok(())
}
