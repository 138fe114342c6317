//! `tools/list` and `tools/call`: front-ends reach every server's tools
//! through one socket.
//!
//! The handlers ask the supervisor for a ready server's target (a cheap
//! clone) and send the request through `mcp::forward` themselves, so a slow
//! tool never holds up the supervisor or other calls. MCP objects (tools,
//! results) pass through as the server sent them (see `mcp::wire_tee`).
//!
//! The config's tool filters apply to listing and calling alike: both read
//! the server's `ToolCatalog`, which holds only the tools the filters let
//! through. `tool_timeout_sec` bounds a call in active time
//! (`CallGuard::within`): the clock stops while a server's
//! elicitation waits on this call's front-end, and only then. A call's
//! progress goes back to its caller; while it runs, this connection is the
//! one the server's elicitations and sampling requests go to
//! (`FrontEnds::call_started`). A front-end's request-scoped `headers` go
//! on the call (or, for `tools/list` of one server, on a listing asked of
//! the server then, the filters applied: the kept one was made without
//! them); see `mcp::request_headers`. A 403 `insufficient_scope`
//! (`RouteError::InsufficientScope`) starts a step-up login (`auth.rs`;
//! only where a browser can be opened, else `corral login` asks for the
//! scope), waited for at most 10 s, and the error says how it went.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use corral_protocol::{Request as _, ServerTool, ToolsCall, ToolsCallParams, ToolsList, ToolsListResult};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::value::RawValue;

use crate::api::DaemonContext;
use crate::api::rpc::{
    not_available_error, not_ready_servers, parse_params, parse_quickly, route_error, scoped_target, scoped_targets,
    timeout_error, with_sentence,
};
use crate::hub::link::Link;
use crate::mcp::forward::{self, JsonObject};
use crate::mcp::request_headers::list_tools_now;
use crate::mcp::route::RouteError;
use crate::params::{CallView, RawJson, RawMethods, RawParams, arguments_fit, raw_arguments};

/// How long a `tools/call` answered with 403 `insufficient_scope` waits for
/// the step-up re-authorization to start (discovery, registration, the URL).
const STEP_UP_START: Duration = Duration::from_secs(10);

/// `tools/call`'s params with the arguments as the front-end wrote them: they are only
/// passed on to the server, never read here. Takes a subset of what `ToolsCallParams`
/// takes (the fields, unknown ones refused; arguments an object), so whatever it does
/// not take is read, and refused or not, as `ToolsCallParams`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CallParams<'a> {
    /// Borrowed from the request unless escaped: no copy per call.
    #[serde(borrow)]
    server: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
    #[serde(default, rename = "_meta")]
    meta: Option<JsonObject>,
}

/// Register `tools/list` (`tools/call` is a raw method: [`register_raw`]).
pub(crate) fn register(module: &mut RpcModule<DaemonContext>) -> Result<(), RegisterMethodError> {
    module.register_async_method(ToolsList::METHOD, |params, context, _| async move {
        let params = parse_params::<ToolsList>(&params)?;
        let targets = context
            .supervisor
            .targets(params.server.as_deref())?
            .map_err(|not_available| not_available_error(params.server.as_deref().unwrap_or(""), &not_available))?;
        let mut tools = Vec::new();
        if let Some(headers) = &params.headers {
            // Asked with the front-end's headers: the server's listing for them, not the one kept.
            for target in scoped_targets(targets.ready, &params.server, Some(headers))? {
                let server = target.config.name.clone();
                let timeout = target.config.tool_timeout;
                let listed = tokio::time::timeout(timeout, list_tools_now(&target))
                    .await
                    .map_err(|_| timeout_error(&server, "`tools/list`", timeout))?
                    .map_err(|error| route_error(&server, "`tools/list`", error))?;
                tools.extend(listed.into_iter().map(|tool| ServerTool::new(server.clone(), tool)));
            }
            return Ok(ToolsListResult::new(tools, not_ready_servers(targets.not_ready)));
        }
        for target in &targets.ready {
            let server = &target.config.name;
            let allowed = target
                .allowed_tools()
                .map_err(|error| route_error(server, "`tools/list`", error))?;
            tools.extend(allowed.into_iter().map(|tool| ServerTool::new(server.clone(), tool)));
        }
        let not_ready = not_ready_servers(targets.not_ready);
        Ok::<_, ErrorObjectOwned>(ToolsListResult::new(tools, not_ready))
    })?;

    Ok(())
}

/// `tools/call`: a raw method (`params::RawMethods`), its result the server's JSON as it
/// wrote it.
pub(crate) fn register_raw(methods: &mut RawMethods, context: Arc<DaemonContext>) {
    methods.register(
        ToolsCall::METHOD,
        Arc::new(move |params, link| Box::pin(call(params, context.clone(), link))),
    );
}

async fn call(
    mut params: RawParams,
    context: Arc<DaemonContext>,
    link: Arc<Link>,
) -> Result<Box<RawValue>, ErrorObjectOwned> {
    // Read in the request's pass, when it read them as a call: taken as `CallParams` would.
    let quick = params.take_call().and_then(|call| call.view(&params));
    let (read, full_arguments);
    let (server, name, arguments, meta, headers) = match quick {
        Some(CallView {
            server: Some(server),
            name,
            arguments,
            meta,
            others: false,
        }) if arguments_fit(arguments) => (server, name, arguments, meta, None),
        // Refused params are refused as `ToolsCallParams` refuses them (`parse_quickly`).
        _ => {
            read = params.params();
            match parse_quickly::<CallParams<'_>, ToolsCallParams>(&read, ToolsCall::METHOD, |quick| {
                arguments_fit(quick.arguments.map(RawJson::from))
            })? {
                Ok(CallParams {
                    server,
                    name,
                    arguments,
                    meta,
                }) => (server, name, arguments.map(RawJson::from), meta, None),
                Err(ToolsCallParams {
                    server,
                    name,
                    arguments,
                    meta,
                    headers,
                    ..
                }) => {
                    full_arguments = raw_arguments(arguments.as_ref())?;
                    (
                        Cow::Owned(server),
                        Cow::Owned(name),
                        full_arguments.as_deref().map(RawJson::from),
                        meta,
                        headers,
                    )
                }
            }
        }
    };
    let target = context
        .supervisor
        .call_target(&server)?
        .map_err(|not_available| not_available_error(&server, &not_available))?;
    // Words for an error only: not formatted on a call that succeeds.
    let what = || format!("`tools/call` of `{name}`");
    let target = scoped_target(target, headers.as_ref())?;
    // With headers the server may have tools its kept listing does not show: the filters
    // still apply, whether the tool exists is the server's to say.
    let allowed = if headers.is_some() {
        target.check_tool_allowed(&name)
    } else {
        target.check_tool(&name)
    };
    allowed.map_err(|error| route_error(&server, &what(), error))?;
    let frontends = &context.hub.routes;
    // While it runs, this connection is the one the server's elicitations go to.
    let call_guard = frontends.call_started(&server, link.id);
    let timeout = target.config.tool_timeout;
    // Boxed apart from this future: each of the two then fits the allocator's small-block
    // cache, where one future of both would take its slow path (and be copied whole).
    let mut call = Box::pin(forward::call_tool(&target, &name, arguments, meta, (frontends, &link)));
    // The clock stops while an elicitation of this server waits on this front-end's user.
    let answer = call_guard
        .within(timeout, call.as_mut())
        .await
        .ok_or_else(|| timeout_error(&server, &what(), timeout))?;
    match answer {
        Ok(result) => Ok(result),
        Err(RouteError::InsufficientScope { required, error }) => {
            // 403 insufficient_scope: re-authorize with the scope the server asked for.
            // Bounded: discovery and registration with a hanging authorization
            // server must not keep this call from being answered.
            // Boxed: the step-up's future is large, and the common path must not carry
            // (and copy, at every move) its size.
            let step_up = Box::pin(super::auth::step_up(context.clone(), &server, Some(&required)));
            let step_up = tokio::time::timeout(STEP_UP_START, step_up)
                .await
                .unwrap_or_else(|_| {
                    format!(
                        "re-authorization with scope `{required}` did not start within {}s; run `corral login {server} --scopes ...`",
                        STEP_UP_START.as_secs()
                    )
                });
            Err(with_sentence(&route_error(&server, &what(), *error), &step_up))
        }
        Err(error) => Err(route_error(&server, &what(), error)),
    }
}
