//! Resources and prompts of every server, through one socket:
//! `resources/list`, `resources/templates/list`, `resources/read`,
//! `prompts/list`, `prompts/get`, `resources/subscribe`, `resources/unsubscribe`.
//!
//! Listings fetch every page of every ready server concurrently, each server
//! bounded by its `tool_timeout_sec`; a server that repeats a pagination
//! cursor is reported as an error rather than looped on. Servers that do not
//! declare the capability are skipped. MCP objects pass through untouched.
//! A listing of one streamable-HTTP server may carry the front-end's
//! request-scoped `headers` (`mcp::request_headers`).
//!
//! `resources/read` and `prompts/get` run as calls of the front-end that
//! asks (`FrontEnds::call_started`), like `tools/call`: what the server asks
//! meanwhile (an elicitation, or an `input_required` result's requests) goes
//! to it, and `tool_timeout_sec` bounds them in active time.

use corral_protocol::{
    ErrorCode, ListError, ListParams, ListResult, NoParams, PromptsGet, PromptsGetParams, Request, ResourcesRead,
    ResourcesReadParams, ResourcesSubscribe, ResourcesUnsubscribe, ServerItem,
};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;

use crate::api::DaemonContext;
use crate::api::rpc::{
    not_available_error, not_ready_servers, parse_json, parse_params, route_error, rpc_error, scoped_targets, session,
    timeout_error, within_active_time,
};
use crate::mcp::forward::{self, ListKind};
use crate::mcp::route::RouteError;

/// `kind` of every ready server (or of one), fetched concurrently.
async fn list(kind: ListKind, context: &DaemonContext, params: ListParams) -> Result<ListResult, ErrorObjectOwned> {
    let targets = context
        .supervisor
        .targets(params.server.as_deref())?
        .map_err(|not_available| not_available_error(params.server.as_deref().unwrap_or(""), &not_available))?;
    let only_one = params.server.is_some();
    let ready = scoped_targets(targets.ready, &params.server, params.headers.as_ref())?;
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (target, result) in forward::list_each(kind, ready).await {
        let server = target.config.name.clone();
        match result {
            Ok(found) => items.extend(found.into_iter().map(|item| ServerItem::new(server.clone(), item))),
            Err(failure) if only_one => {
                return Err(rpc_error(ErrorCode::ServerError, failure.describe(&server, kind)));
            }
            Err(failure) => errors.push(ListError::new(server.clone(), failure.describe(&server, kind))),
        }
    }
    Ok(ListResult::new(items, not_ready_servers(targets.not_ready), errors))
}

/// Register the resource and prompt methods.
pub(crate) fn register(module: &mut RpcModule<DaemonContext>) -> Result<(), RegisterMethodError> {
    for kind in ListKind::ALL {
        module.register_async_method(kind.method(), move |params, context, _| async move {
            list(kind, &context, parse_json(&params, kind.method())?).await
        })?;
    }

    module.register_async_method(ResourcesRead::METHOD, |params, context, extensions| async move {
        let ResourcesReadParams { server, uri, .. } = parse_params::<ResourcesRead>(&params)?;
        let target = context
            .supervisor
            .call_target(&server)?
            .map_err(|not_available| not_available_error(&server, &not_available))?;
        let what = format!("`resources/read` of `{uri}`");
        let link = session(&extensions)?.link.clone();
        let read = forward::read_resource(&target, uri, &link);
        within_active_time(&context, &target, &link, &what, read)
            .await?
            .map_err(|error| route_error(&target.config.name, &what, error))
    })?;

    module.register_async_method(PromptsGet::METHOD, |params, context, extensions| async move {
        let PromptsGetParams {
            server,
            name,
            arguments,
            ..
        } = parse_params::<PromptsGet>(&params)?;
        let target = context
            .supervisor
            .call_target(&server)?
            .map_err(|not_available| not_available_error(&server, &not_available))?;
        let what = format!("`prompts/get` of `{name}`");
        let link = session(&extensions)?.link.clone();
        let get = forward::get_prompt(&target, name, arguments, &link);
        within_active_time(&context, &target, &link, &what, get)
            .await?
            .map_err(|error| route_error(&target.config.name, &what, error))
    })?;

    module.register_async_method(ResourcesSubscribe::METHOD, |params, context, extensions| async move {
        let ResourcesReadParams { server, uri, .. } = parse_params::<ResourcesSubscribe>(&params)?;
        let connection = session(&extensions)?.id;
        let target = context
            .supervisor
            .call_target(&server)?
            .map_err(|not_available| not_available_error(&server, &not_available))?;
        let what = format!("`resources/subscribe` of `{uri}`");
        if !target.offers_subscriptions() {
            return Err(route_error(&server, &what, RouteError::SubscriptionsUnsupported));
        }
        if context.hub.routes.subscribe(&server, &uri, connection) {
            let timeout = target.config.tool_timeout;
            let subscribed = tokio::time::timeout(timeout, forward::subscribe(&target, uri.clone()))
                .await
                .map_err(|_| timeout_error(&server, &what, timeout))
                .and_then(|result| result.map_err(|error| route_error(&server, &what, error)));
            if let Err(error) = subscribed {
                // The server refused: this connection holds no subscription after all.
                let _ = context.hub.routes.unsubscribe(&server, &uri, connection);
                return Err(error);
            }
        }
        Ok::<_, ErrorObjectOwned>(NoParams {})
    })?;

    module.register_async_method(ResourcesUnsubscribe::METHOD, |params, context, extensions| async move {
        let ResourcesReadParams { server, uri, .. } = parse_params::<ResourcesUnsubscribe>(&params)?;
        let connection = session(&extensions)?.id;
        match context.hub.routes.unsubscribe(&server, &uri, connection) {
            None => Err(rpc_error(
                ErrorCode::InvalidParams,
                format!("this connection is not subscribed to `{uri}` of MCP server `{server}`"),
            )),
            Some(false) => Ok(NoParams {}),
            Some(true) => {
                release_subscription(&context, server, uri).await;
                Ok(NoParams {})
            }
        }
    })?;
    Ok(())
}

/// Tell `server` that no front-end wants updates of `uri` any more. Best
/// effort: a server that is not ready has forgotten the subscription anyway.
pub(crate) async fn release_subscription(context: &DaemonContext, server: String, uri: String) {
    let Ok(Ok(target)) = context.supervisor.call_target(&server) else {
        return;
    };
    let request = forward::unsubscribe(&target, uri.clone());
    match tokio::time::timeout(target.config.tool_timeout, request).await {
        Ok(Ok(())) => tracing::debug!(server, uri, "unsubscribed: no front-end wants updates"),
        Ok(Err(error)) => tracing::debug!(server, uri, ?error, "unsubscribing failed"),
        Err(_) => tracing::debug!(server, uri, "unsubscribing timed out"),
    }
}
