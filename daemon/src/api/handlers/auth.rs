//! `mcpServer/oauthLogin`, `mcpServer/logout`, and the `authStatus` of `mcpServer/list|get`.
//!
//! A login answers with the authorization URL as soon as it exists; a task of the daemon waits for
//! the redirect, publishes `mcpServer/oauthLogin/completed`, and on success restarts the server so
//! it comes up with the new credentials. A second login for the same server replaces the first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use corral_protocol::config::{ServerConfig, TransportConfig};
use corral_protocol::{
    AuthStatus, DaemonNotification, ErrorCode, FailureReason, McpServerLogout, McpServerLogoutResult,
    McpServerOauthLogin, McpServerOauthLoginResult, McpServerStatus, OauthLoginCompleted, Request as _, ServerStatus,
    TransportKind,
};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;
use tokio_util::sync::CancellationToken;

use crate::api::DaemonContext;
use crate::api::rpc::{parse_params, rpc_error, server_not_found};
use crate::auth::oauth::{self, LoginTarget, explicit_authorization};
use crate::supervisor::ControlAction;

/// Logins in progress, by server: cancelling one ends its wait.
#[derive(Debug, Default)]
pub(crate) struct Logins {
    pending: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Logins {
    /// Register a login for `name`, cancelling any earlier one; returns its id and token.
    fn begin(&self, name: &str, parent: &CancellationToken) -> (u64, CancellationToken) {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = parent.child_token();
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, previous)) = pending.insert(name.to_owned(), (id, token.clone())) {
            previous.cancel();
        }
        (id, token)
    }

    /// Forget `name`'s login if it is still login `id`.
    fn end(&self, name: &str, id: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.get(name).is_some_and(|(current, _)| *current == id) {
            pending.remove(name);
        }
    }
}

/// Fill in `authStatus` (or `authError`) of `statuses`, whose configs are `configs`.
pub(crate) async fn fill_auth_status(
    context: &DaemonContext,
    statuses: &mut [McpServerStatus],
    configs: &[ServerConfig],
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, status) in statuses.iter_mut().enumerate() {
        let config = configs.iter().find(|config| config.name == status.name);
        let http = match (status.transport, config.map(|config| &config.transport)) {
            (TransportKind::StreamableHttp, Some(TransportConfig::StreamableHttp(http))) => http.clone(),
            _ => {
                status.auth_status = Some(AuthStatus::Unsupported);
                continue;
            }
        };
        let explicit = config.is_some_and(explicit_authorization);
        let asked_for_login = matches!(
            status.failure_reason,
            Some(FailureReason::AuthenticationRequired | FailureReason::ReauthenticationRequired)
        );
        let store = oauth::server_store(context.credentials.as_ref(), &status.name, &http);
        let discovered = context.discovered.clone();
        tasks.spawn(async move {
            let result = match store {
                Some(store) => oauth::auth_status(&http, explicit, asked_for_login, &store, &discovered).await,
                None if explicit => Ok(AuthStatus::BearerToken),
                None => Ok(AuthStatus::Unsupported),
            };
            (index, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((index, result)) = joined else { continue };
        match result {
            Ok(auth_status) => statuses[index].auth_status = Some(auth_status),
            Err(error) => statuses[index].auth_error = Some(oauth::redact_urls(&format!("{error:#}"))),
        }
    }
}

fn login_error(name: &str, message: impl std::fmt::Display) -> ErrorObjectOwned {
    // rmcp's errors quote the URLs they fetched, which may carry a token.
    rpc_error(
        ErrorCode::ServerError,
        oauth::redact_urls(&format!("OAuth login for `{name}` failed: {message}")),
    )
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
    let TransportConfig::StreamableHttp(http) = &config.transport else {
        return Err(rpc_error(
            ErrorCode::InvalidRequest,
            format!("`{name}` is not a streamable HTTP server: OAuth login is only for streamable HTTP servers"),
        ));
    };
    if explicit_authorization(&config) {
        return Err(rpc_error(
            ErrorCode::InvalidRequest,
            format!(
                "`{name}` sets `Authorization` in its config (bearer_token_env_var or a header): stored OAuth credentials would not be used"
            ),
        ));
    }
    let Some(store) = oauth::server_store(context.credentials.as_ref(), &name, http) else {
        return Err(login_error(&name, "no credential store"));
    };
    let target = LoginTarget {
        name: name.clone(),
        http: http.clone(),
        store,
    };
    let (login_id, token) = context.logins.begin(&name, &context.shutdown);
    let pending = oauth::start_login(target, scopes, &context.oauth_settings, token.clone())
        .await
        .map_err(|error| {
            context.logins.end(&name, login_id);
            if let Some(unsafe_url) = error.downcast_ref::<oauth::UnsafeAuthorizationUrl>() {
                // The server's metadata broke the protocol's rules: said as a failure reason.
                return ErrorObjectOwned::owned(
                    ErrorCode::ServerError.code(),
                    format!("OAuth login for `{name}` failed: {unsafe_url}"),
                    Some(serde_json::json!({ "failureReason": FailureReason::ProtocolError })),
                );
            }
            login_error(&name, format_args!("{error:#}"))
        })?;
    let authorization_url = pending.authorization_url.clone();
    tokio::spawn(async move {
        let outcome = pending
            .outcome
            .await
            .unwrap_or_else(|_| Err("the login task ended unexpectedly".to_owned()));
        context.logins.end(&name, login_id);
        let error = outcome.err();
        let success = error.is_none();
        context
            .hub
            .events
            .publish(|seq| DaemonNotification::OauthLoginCompleted(OauthLoginCompleted::new(seq, name.clone(), error)));
        if success {
            // The server comes up with the new credentials without being asked.
            if let Err(error) = context.supervisor.control(name.clone(), ControlAction::Restart).await {
                tracing::warn!(server = %name, "cannot restart after login: {}", oauth::redact_urls(&error.to_string()));
            }
        }
    });
    Ok(authorization_url)
}

/// Step-up authorizations allowed per server within [`STEP_UP_WINDOW`]: a server that keeps
/// asking for scopes it never accepts must not open the browser forever.
const MAX_STEP_UPS: usize = 2;
/// The window [`MAX_STEP_UPS`] counts in.
const STEP_UP_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// A request got 403 `insufficient_scope` asking for `required`: start a re-authorization with
/// the scopes granted so far plus the required ones, unless this server already had
/// [`MAX_STEP_UPS`] recently. Returns a sentence for the caller's error.
pub(crate) async fn step_up(context: Arc<DaemonContext>, name: &str, required: &str) -> String {
    {
        let mut recent = context
            .step_ups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let times = recent.entry(name.to_owned()).or_default();
        times.retain(|at| at.elapsed() < STEP_UP_WINDOW);
        if times.len() >= MAX_STEP_UPS {
            return format!(
                "the server asks for scope `{required}` again after {MAX_STEP_UPS} re-authorizations; not trying again: run `corral login {name} --scopes ...`"
            );
        }
        times.push(std::time::Instant::now());
    }
    let mut scopes: Vec<String> = Vec::new();
    if let Ok(Some(config)) = context
        .supervisor
        .configs(Some(name.to_owned()))
        .await
        .map(|c| c.into_iter().next())
        && let TransportConfig::StreamableHttp(http) = &config.transport
        && let Some(store) = oauth::server_store(context.credentials.as_ref(), name, http)
        && let Ok(Some(record)) = store.load_record().await
    {
        scopes.extend(record.credentials.granted_scopes.iter().cloned());
    }
    for scope in required.split_whitespace() {
        if !scopes.iter().any(|known| known == scope) {
            scopes.push(scope.to_owned());
        }
    }
    tracing::info!(server = %name, required, "insufficient scope; starting a step-up authorization");
    match start_login(
        context,
        name.to_owned(),
        Some(scopes).filter(|scopes| !scopes.is_empty()),
    )
    .await
    {
        Ok(_) => format!(
            "re-authorization with scope `{required}` started (the browser opens); retry after mcpServer/oauthLogin/completed"
        ),
        Err(error) => format!("re-authorization could not start: {}", error.message()),
    }
}

/// How long a logout waits for a token refresh in flight to finish before it answers busy.
const LOGOUT_GUARD_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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
        let TransportConfig::StreamableHttp(http) = &config.transport else {
            return Ok(McpServerLogoutResult::new(false));
        };
        let Some(store) = oauth::server_store(context.credentials.as_ref(), &name, http) else {
            return Ok(McpServerLogoutResult::new(false));
        };
        // Under the refresh guard, as a login's save is: a refresh in flight would otherwise save
        // the refreshed grant after the delete, and the server would stay logged in.
        let _guard = tokio::time::timeout(LOGOUT_GUARD_WAIT, store.lock_for_update())
            .await
            .map_err(|_| {
                rpc_error(
                    ErrorCode::ServerBusy,
                    format!("logout of `{name}`: a token refresh is still in progress; try again"),
                )
            })?;
        let removed = store.delete_record().await.map_err(|error| {
            rpc_error(
                ErrorCode::InternalError,
                oauth::redact_urls(&format!("logout of `{name}` failed: {error:#}")),
            )
        })?;
        tracing::info!(server = %name, removed, "logged out");
        // A running server would keep its session until the next 401; restart it so it runs
        // (or fails, `authenticationRequired`) without the deleted credentials at once.
        let running = context
            .supervisor
            .get(name.clone())
            .await?
            .is_some_and(|server| matches!(server.status, ServerStatus::Ready | ServerStatus::Starting));
        if removed && running {
            context.supervisor.control(name.clone(), ControlAction::Restart).await?;
        }
        Ok::<_, ErrorObjectOwned>(McpServerLogoutResult::new(removed))
    })?;
    Ok(())
}
