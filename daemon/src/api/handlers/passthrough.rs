//! `mcpServer/request` and `mcpServer/notify`: MCP requests and notifications Corral does not
//! model, passed to one server as the front-end gave them (`mcp::passthrough` says which are
//! refused and why).
//!
//! A request runs as a call of the front-end that sends it (`FrontEnds::call_started`), like
//! `tools/call`: what the server asks meanwhile goes to that front-end only, and the server's
//! `tool_timeout_sec` bounds it in active time. Its answer is the server's result,
//! untouched, or its JSON-RPC error as a `serverError` naming the server (`data` holds the
//! server's `code`, `message` and `data`). A refusal is `notPermitted`, with `data.method` and,
//! for a capability the server did not declare, `data.capability`. A `_meta.progressToken` in
//! the params gets this connection the request's `mcpServer/progress`.

use corral_protocol::{ErrorCode, McpServerMessageParams, McpServerNotify, McpServerRequest, NoParams, Request as _};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;

use crate::api::DaemonContext;
use crate::api::rpc::{not_available_error, parse_params, route_error, session, timeout_error, within_active_time};
use crate::mcp::passthrough::{self, Refusal};

/// `notPermitted` for `refusal`, naming `server`.
fn refused(server: &str, refusal: &Refusal) -> ErrorObjectOwned {
    let data = match refusal {
        Refusal::Modelled { method, .. } => serde_json::json!({ "method": method }),
        Refusal::Undeclared { method, capability } => serde_json::json!({ "method": method, "capability": capability }),
    };
    ErrorObjectOwned::owned(ErrorCode::NotPermitted.code(), refusal.describe(server), Some(data))
}

/// Register `mcpServer/request` and `mcpServer/notify`.
pub(crate) fn register(module: &mut RpcModule<DaemonContext>) -> Result<(), RegisterMethodError> {
    module.register_async_method(McpServerRequest::METHOD, |params, context, extensions| async move {
        let McpServerMessageParams {
            server, method, params, ..
        } = parse_params::<McpServerRequest>(&params)?;
        let target = context
            .supervisor
            .call_target(&server)?
            .map_err(|not_available| not_available_error(&server, &not_available))?;
        passthrough::check_request(&method, passthrough::capabilities(&target).as_ref())
            .map_err(|refusal| refused(&server, &refusal))?;
        let session = session(&extensions)?;
        let what = format!("`{method}`");
        let request = passthrough::request(&target, method, params, (&context.hub.routes, &session.link));
        within_active_time(&context, &target, &session.link, &what, request)
            .await?
            .map_err(|error| route_error(&server, &what, error))
    })?;

    module.register_async_method(McpServerNotify::METHOD, |params, context, _| async move {
        let McpServerMessageParams {
            server, method, params, ..
        } = parse_params::<McpServerNotify>(&params)?;
        let target = context
            .supervisor
            .call_target(&server)?
            .map_err(|not_available| not_available_error(&server, &not_available))?;
        passthrough::check_notification(&method).map_err(|refusal| refused(&server, &refusal))?;
        let what = format!("notification `{method}`");
        let timeout = target.config.tool_timeout;
        tokio::time::timeout(timeout, passthrough::notify(&target, method, params))
            .await
            .map_err(|_| timeout_error(&server, &what, timeout))?
            .map_err(|error| route_error(&server, &what, error))?;
        Ok::<_, ErrorObjectOwned>(NoParams {})
    })?;
    Ok(())
}
