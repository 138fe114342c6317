//! `tools/list` and `tools/call`: front-ends reach every server's tools
//! through one socket.
//!
//! The handlers ask the supervisor for a ready server's peer (a cheap
//! clone) and talk to the server themselves, so a slow tool never holds up
//! the supervisor or other calls. MCP objects (tools, results) pass through
//! as the server sent them. A call's progress goes back to its caller, and
//! its timeout stops while the server waits for the caller's elicitation answer.

use std::time::Duration;

use corral_protocol::{ErrorCode, Request as _, ServerTool, ToolsCall, ToolsCallParams, ToolsList, ToolsListResult};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;
use rmcp::model::{CallToolRequest, CallToolRequestParams, RequestMetaObject, ServerResult};

use crate::api::DaemonContext;
use crate::api::forward::{self, Answer, SendError};
use crate::api::rpc::{
    not_available_error, not_ready_servers, parse_params, rpc_error, send_error, session, timeout_error,
};
use crate::server::tool_allowed;

/// How long a `tools/call` answered with 403 `insufficient_scope` waits for
/// the step-up re-authorization to start (discovery, registration, the URL).
const STEP_UP_START: Duration = Duration::from_secs(10);

/// The `_meta` key of an MCP progress token.
const PROGRESS_TOKEN: &str = "progressToken";

/// Register `tools/list` and `tools/call`.
pub(crate) fn register(module: &mut RpcModule<DaemonContext>) -> Result<(), RegisterMethodError> {
    module.register_async_method(ToolsList::METHOD, |params, context, _| async move {
        let params = parse_params::<ToolsList>(&params)?;
        let targets = context
            .supervisor
            .targets(params.server.clone())
            .await?
            .map_err(|not_available| not_available_error(params.server.as_deref().unwrap_or(""), &not_available))?;
        let mut tools = Vec::new();
        for target in &targets.ready {
            // As the server wrote them where corrald saw that; rmcp's typed tool otherwise.
            let raw = target.raw.as_ref().map(|raw| raw.tools()).unwrap_or_default();
            for tool in target
                .tools
                .iter()
                .filter(|tool| tool_allowed(&target.config, &tool.name))
            {
                let tool = match raw.get(tool.name.as_ref()) {
                    Some(raw) => serde_json::from_str(raw.get()),
                    None => serde_json::to_value(tool),
                }
                .map_err(|error| rpc_error(ErrorCode::InternalError, format!("cannot serialize a tool: {error}")))?;
                tools.push(ServerTool::new(target.config.name.clone(), tool));
            }
        }
        let not_ready = not_ready_servers(targets.not_ready);
        Ok::<_, ErrorObjectOwned>(ToolsListResult::new(tools, not_ready))
    })?;

    module.register_async_method(ToolsCall::METHOD, |params, context, extensions| async move {
        let ToolsCallParams {
            server,
            name,
            arguments,
            meta,
            ..
        } = parse_params::<ToolsCall>(&params)?;
        let target = context
            .supervisor
            .call_target(server.clone())
            .await?
            .map_err(|not_available| not_available_error(&server, &not_available))?;
        if !tool_allowed(&target.config, &name) {
            return Err(rpc_error(
                ErrorCode::ToolNotAvailable,
                format!("tool `{name}` of MCP server `{server}` is disabled by the config (enabled_tools / disabled_tools)"),
            ));
        }
        if !target.tools.iter().any(|tool| tool.name == name) {
            return Err(rpc_error(
                ErrorCode::ToolNotAvailable,
                format!("MCP server `{server}` has no tool named `{name}`"),
            ));
        }
        let session = session(&extensions)?;
        let frontends = &context.hub.routes;
        // While it runs, this connection is the one the server's elicitations go to.
        let _call = frontends.call_started(&server, session.id);
        // rmcp puts a progress token of its own on every request; the
        // front-end's, if it gave one, is what its progress carries.
        let mut meta = meta;
        let progress_token = meta.as_mut().and_then(|meta| meta.remove(PROGRESS_TOKEN));
        let mut request = CallToolRequestParams::new(name.clone());
        request.arguments = arguments;
        request.meta = meta.map(|meta| RequestMetaObject(rmcp::model::MetaObject(meta)));
        let timeout = target.config.tool_timeout;
        let what = format!("`tools/call` of `{name}`");
        let progress = progress_token.map(|token| (frontends, &session.link, token));
        let request = CallToolRequest::new(request);
        // The clock stops while an elicitation of this server waits on this front-end's user.
        let answer = frontends
            .active_time_timeout(&server, session.id, timeout, forward::send(&target, request, progress))
            .await
            .ok_or_else(|| timeout_error(&server, &what, timeout))?;
        let Answer { typed, raw } = match answer {
            Ok(answer) => answer,
            Err(SendError::Service(error)) if crate::transport::http::required_scope(&error).is_some() => {
                // 403 insufficient_scope: re-authorize with the scope the server asked for.
                let required = crate::transport::http::required_scope(&error).unwrap_or_default();
                // Bounded: discovery and registration with a hanging authorization
                // server must not keep this call from being answered.
                let step_up = tokio::time::timeout(STEP_UP_START, super::auth::step_up(context.clone(), &server, &required))
                    .await
                    .unwrap_or_else(|_| {
                        format!(
                            "re-authorization with scope `{required}` did not start within {}s; run `corral login {server} --scopes ...`",
                            STEP_UP_START.as_secs()
                        )
                    });
                let error = send_error(&server, &what, SendError::Service(error));
                return Err(ErrorObjectOwned::owned(
                    error.code(),
                    format!("{}; {step_up}", error.message()),
                    error.data().map(|data| serde_json::from_str::<serde_json::Value>(data.get()).unwrap_or_default()),
                ));
            }
            Err(error) => return Err(send_error(&server, &what, error)),
        };
        match typed {
            ServerResult::CallToolResult(result) => forward::json(raw, &result),
            _ => Err(rpc_error(
                ErrorCode::ServerError,
                format!(
                    "MCP server `{server}` answered `tools/call` of `{name}` with a result kind corrald does not handle yet (input_required or task)"
                ),
            )),
        }
    })?;
    Ok(())
}
