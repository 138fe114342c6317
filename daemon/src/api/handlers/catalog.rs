//! Resources and prompts of every server, through one socket:
//! `resources/list`, `resources/templates/list`, `resources/read`,
//! `prompts/list`, `prompts/get`, `resources/subscribe`, `resources/unsubscribe`.
//!
//! Listings fetch every page of every ready server concurrently, each server
//! bounded by its `tool_timeout_sec`; a server that repeats a pagination
//! cursor is reported as an error rather than looped on. Servers that do not
//! declare the capability are skipped. MCP objects pass through untouched.

// `resources/subscribe` is legacy in MCP 2026-07-28 (`Peer::listen` replaces
// it), but the servers people run negotiate 2025-11-25, where it is the way.
#![allow(deprecated)]

use std::collections::HashSet;

use corral_protocol::{
    ErrorCode, ListError, ListParams, ListResult, NoParams, PromptsGet, PromptsGetParams, PromptsList, Request,
    ResourceTemplatesList, ResourcesList, ResourcesRead, ResourcesReadParams, ResourcesSubscribe, ResourcesUnsubscribe,
    ServerItem,
};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;
use rmcp::model::{
    ClientRequest, GetPromptRequest, GetPromptRequestParams, ListPromptsRequest, ListResourceTemplatesRequest,
    ListResourcesRequest, PaginatedRequestParams, ReadResourceRequest, ReadResourceRequestParams, ServerResult,
    SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::{Peer, RoleClient, ServiceError};
use serde::Serialize;

use crate::api::DaemonContext;
use crate::api::forward::{self, Answer, SendError};
use crate::api::rpc::{
    not_available_error, not_ready_servers, parse_json, parse_params, rpc_error, send_error, service_error, session,
    timeout_error,
};
use crate::supervisor::CallTarget;

/// Most pages fetched from one server for one listing.
const MAX_PAGES: usize = 1000;

/// What a listing method lists.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Resources,
    ResourceTemplates,
    Prompts,
}

impl Kind {
    fn method(self) -> &'static str {
        match self {
            Self::Resources => ResourcesList::METHOD,
            Self::ResourceTemplates => ResourceTemplatesList::METHOD,
            Self::Prompts => PromptsList::METHOD,
        }
    }

    /// Whether the server declared the capability at `initialize`.
    fn offered_by(self, peer: &Peer<RoleClient>) -> bool {
        let Some(info) = peer.peer_info() else { return false };
        match self {
            Self::Resources | Self::ResourceTemplates => info.capabilities.resources.is_some(),
            Self::Prompts => info.capabilities.prompts.is_some(),
        }
    }

    /// The member of a page's result that holds the items.
    fn items_key(self) -> &'static str {
        match self {
            Self::Resources => "resources",
            Self::ResourceTemplates => "resourceTemplates",
            Self::Prompts => "prompts",
        }
    }

    /// One page: the items as JSON (as the server wrote them where corrald
    /// saw that) and the next cursor.
    async fn page(
        self,
        target: &CallTarget,
        cursor: Option<String>,
    ) -> Result<(Vec<serde_json::Value>, Option<String>), SendError> {
        let mut params = PaginatedRequestParams::default();
        params.cursor = cursor;
        let request: ClientRequest = match self {
            Self::Resources => ListResourcesRequest::with_param(params).into(),
            Self::ResourceTemplates => ListResourceTemplatesRequest::with_param(params).into(),
            Self::Prompts => ListPromptsRequest::with_param(params).into(),
        };
        let Answer { typed, raw } = forward::send(target, request, None).await?;
        let (typed_items, next_cursor) = match typed {
            ServerResult::ListResourcesResult(page) => (to_values(&page.resources), page.next_cursor),
            ServerResult::ListResourceTemplatesResult(page) => (to_values(&page.resource_templates), page.next_cursor),
            ServerResult::ListPromptsResult(page) => (to_values(&page.prompts), page.next_cursor),
            _ => return Err(SendError::Service(ServiceError::UnexpectedResponse)),
        };
        let raw_items = raw.and_then(|raw| {
            let mut page: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw.get()).ok()?;
            match page.remove(self.items_key())? {
                serde_json::Value::Array(items) if items.len() == typed_items.len() => Some(items),
                _ => None,
            }
        });
        Ok((raw_items.unwrap_or(typed_items), next_cursor))
    }
}

fn to_values<T: Serialize>(items: &[T]) -> Vec<serde_json::Value> {
    items
        .iter()
        .filter_map(|item| serde_json::to_value(item).ok())
        .collect()
}

/// Every page of `kind` from one server, or why not.
async fn list_all(kind: Kind, target: &CallTarget) -> Result<Vec<serde_json::Value>, String> {
    let server = &target.config.name;
    let fetch = async {
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        let mut cursor = None;
        for _ in 0..MAX_PAGES {
            let (page, next) = kind
                .page(target, cursor)
                .await
                // Worded by the one mapping of send errors, which never quotes the server's URL
                // (a transport error's own text does, token and all).
                .map_err(|error| {
                    crate::api::rpc::send_error(server, &format!("`{}`", kind.method()), error)
                        .message()
                        .to_owned()
                })?;
            items.extend(page);
            match next {
                None => return Ok(items),
                Some(next) if !seen.insert(next.clone()) => {
                    return Err(format!(
                        "MCP server `{server}` repeated the pagination cursor {next:?} in `{}`",
                        kind.method()
                    ));
                }
                Some(next) => cursor = Some(next),
            }
        }
        Err(format!(
            "MCP server `{server}` returned more than {MAX_PAGES} pages for `{}`",
            kind.method()
        ))
    };
    let timeout = target.config.tool_timeout;
    tokio::time::timeout(timeout, fetch).await.unwrap_or_else(|_| {
        Err(format!(
            "MCP server `{server}` did not finish `{}` within {timeout:?} (tool_timeout_sec)",
            kind.method()
        ))
    })
}

/// `kind` of every ready server (or of one), fetched concurrently.
async fn list(kind: Kind, context: &DaemonContext, params: ListParams) -> Result<ListResult, ErrorObjectOwned> {
    let targets = context
        .supervisor
        .targets(params.server.clone())
        .await?
        .map_err(|not_available| not_available_error(params.server.as_deref().unwrap_or(""), &not_available))?;
    let only_one = params.server.is_some();
    let mut fetches = tokio::task::JoinSet::new();
    for (index, target) in targets.ready.into_iter().enumerate() {
        if !kind.offered_by(&target.peer) {
            continue;
        }
        fetches.spawn(async move { (index, target.config.name.clone(), list_all(kind, &target).await) });
    }
    let mut results = Vec::new();
    while let Some(joined) = fetches.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(error) => tracing::error!(%error, "a listing task failed"),
        }
    }
    results.sort_by_key(|(index, _, _)| *index);
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (_, server, result) in results {
        match result {
            Ok(found) => items.extend(found.into_iter().map(|item| ServerItem::new(server.clone(), item))),
            Err(message) if only_one => return Err(rpc_error(ErrorCode::ServerError, message)),
            Err(message) => errors.push(ListError::new(server, message)),
        }
    }
    Ok(ListResult::new(items, not_ready_servers(targets.not_ready), errors))
}

/// Register the resource and prompt methods.
pub(crate) fn register(module: &mut RpcModule<DaemonContext>) -> Result<(), RegisterMethodError> {
    for kind in [Kind::Resources, Kind::ResourceTemplates, Kind::Prompts] {
        module.register_async_method(kind.method(), move |params, context, _| async move {
            list(kind, &context, parse_json(&params, kind.method())?).await
        })?;
    }

    module.register_async_method(ResourcesRead::METHOD, |params, context, _| async move {
        let ResourcesReadParams { server, uri, .. } = parse_params::<ResourcesRead>(&params)?;
        let target = context
            .supervisor
            .call_target(server.clone())
            .await?
            .map_err(|not_available| not_available_error(&server, &not_available))?;
        let what = format!("`resources/read` of `{uri}`");
        let timeout = target.config.tool_timeout;
        let request = ReadResourceRequest::new(ReadResourceRequestParams::new(uri));
        let Answer { typed, raw } = tokio::time::timeout(timeout, forward::send(&target, request, None))
            .await
            .map_err(|_| timeout_error(&server, &what, timeout))?
            .map_err(|error| send_error(&server, &what, error))?;
        match typed {
            ServerResult::ReadResourceResult(result) => forward::json(raw, &result),
            _ => Err(rpc_error(
                ErrorCode::ServerError,
                format!("MCP server `{server}` answered {what} with a result kind corrald does not handle yet (input_required)"),
            )),
        }
    })?;

    module.register_async_method(PromptsGet::METHOD, |params, context, _| async move {
        let PromptsGetParams {
            server,
            name,
            arguments,
            ..
        } = parse_params::<PromptsGet>(&params)?;
        let target = context
            .supervisor
            .call_target(server.clone())
            .await?
            .map_err(|not_available| not_available_error(&server, &not_available))?;
        let what = format!("`prompts/get` of `{name}`");
        let mut request = GetPromptRequestParams::new(name);
        request.arguments = arguments;
        let timeout = target.config.tool_timeout;
        let request = GetPromptRequest::new(request);
        let Answer { typed, raw } = tokio::time::timeout(timeout, forward::send(&target, request, None))
            .await
            .map_err(|_| timeout_error(&server, &what, timeout))?
            .map_err(|error| send_error(&server, &what, error))?;
        match typed {
            ServerResult::GetPromptResult(result) => forward::json(raw, &result),
            _ => Err(rpc_error(
                ErrorCode::ServerError,
                format!("MCP server `{server}` answered {what} with a result kind corrald does not handle yet (input_required)"),
            )),
        }
    })?;

    module.register_async_method(ResourcesSubscribe::METHOD, |params, context, extensions| async move {
        let ResourcesReadParams { server, uri, .. } = parse_params::<ResourcesSubscribe>(&params)?;
        let connection = session(&extensions)?.id;
        let target = context
            .supervisor
            .call_target(server.clone())
            .await?
            .map_err(|not_available| not_available_error(&server, &not_available))?;
        let supported = target
            .peer
            .peer_info()
            .and_then(|info| {
                info.capabilities
                    .resources
                    .as_ref()
                    .and_then(|resources| resources.subscribe)
            })
            .unwrap_or(false);
        if !supported {
            return Err(rpc_error(
                ErrorCode::ServerError,
                format!("MCP server `{server}` does not support resource subscriptions"),
            ));
        }
        if context.hub.routes.subscribe(&server, &uri, connection) {
            let what = format!("`resources/subscribe` of `{uri}`");
            let timeout = target.config.tool_timeout;
            let subscribed =
                tokio::time::timeout(timeout, target.peer.subscribe(SubscribeRequestParams::new(uri.clone())))
                    .await
                    .map_err(|_| timeout_error(&server, &what, timeout))
                    .and_then(|result| result.map_err(|error| service_error(&server, &what, error)));
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
    let Ok(Ok(target)) = context.supervisor.call_target(server.clone()).await else {
        return;
    };
    let request = target.peer.unsubscribe(UnsubscribeRequestParams::new(uri.clone()));
    match tokio::time::timeout(target.config.tool_timeout, request).await {
        Ok(Ok(())) => tracing::debug!(server, uri, "unsubscribed: no front-end wants updates"),
        Ok(Err(error)) => tracing::debug!(server, uri, %error, "unsubscribing failed"),
        Err(_) => tracing::debug!(server, uri, "unsubscribing timed out"),
    }
}
