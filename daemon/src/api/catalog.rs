//! Resources and prompts of every server, through one socket:
//! `resources/list`, `resources/templates/list`, `resources/read`,
//! `prompts/list`, `prompts/get`.
//!
//! Listings fetch every page of every ready server concurrently, each server
//! bounded by its `tool_timeout_sec`; a server that repeats a pagination
//! cursor is reported as an error rather than looped on. Servers that do not
//! declare the capability are skipped. MCP objects pass through untouched.

use std::collections::HashSet;

use corral_protocol::{
    ErrorCode, ListError, ListParams, ListResult, PromptsGet, PromptsGetParams, PromptsList, Request,
    ResourceTemplatesList, ResourcesList, ResourcesRead, ResourcesReadParams, ServerItem,
};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;
use rmcp::model::{GetPromptRequestParams, GetPromptResponse, PaginatedRequestParams, ReadResourceRequestParams};
use rmcp::{Peer, RoleClient, ServiceError};
use serde::Serialize;

use super::DaemonContext;
use super::methods::{parse_json, parse_params, rpc_error};
use super::tools::{
    SendError, not_available_error, not_ready_servers, send_error, timeout_error, with_session_recovery,
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

    /// One page: the items as JSON and the next cursor.
    async fn page(
        self,
        peer: &Peer<RoleClient>,
        cursor: Option<String>,
    ) -> Result<(Vec<serde_json::Value>, Option<String>), ServiceError> {
        let mut params = PaginatedRequestParams::default();
        params.cursor = cursor;
        let params = Some(params);
        match self {
            Self::Resources => {
                let page = peer.list_resources(params).await?;
                Ok((to_values(&page.resources), page.next_cursor))
            }
            Self::ResourceTemplates => {
                let page = peer.list_resource_templates(params).await?;
                Ok((to_values(&page.resource_templates), page.next_cursor))
            }
            Self::Prompts => {
                let page = peer.list_prompts(params).await?;
                Ok((to_values(&page.prompts), page.next_cursor))
            }
        }
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
            let (page, next) = with_session_recovery(target, |peer| {
                let cursor = cursor.clone();
                async move { kind.page(&peer, cursor).await }
            })
            .await
            .map_err(|error| {
                let error = match error {
                    SendError::Service(error) => error.to_string(),
                    SendError::Recovery(why) => format!("the session expired and a new one could not be made: {why}"),
                };
                format!("MCP server `{server}` failed `{}`: {error}", kind.method())
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
        let read = with_session_recovery(&target, |peer| {
            let uri = uri.clone();
            async move { peer.read_resource(ReadResourceRequestParams::new(uri)).await }
        });
        let result = tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| timeout_error(&server, &what, timeout))?
            .map_err(|error| send_error(&server, &what, error))?;
        serde_json::to_value(result).map_err(|error| {
            rpc_error(
                ErrorCode::InternalError,
                format!("cannot serialize the result: {error}"),
            )
        })
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
        let get = with_session_recovery(&target, |peer| {
            let request = request.clone();
            async move { peer.get_prompt_once(request).await }
        });
        let response = tokio::time::timeout(timeout, get)
            .await
            .map_err(|_| timeout_error(&server, &what, timeout))?
            .map_err(|error| send_error(&server, &what, error))?;
        match response {
            GetPromptResponse::Complete(result) => serde_json::to_value(result)
                .map_err(|error| rpc_error(ErrorCode::InternalError, format!("cannot serialize the result: {error}"))),
            _ => Err(rpc_error(
                ErrorCode::ServerError,
                format!("MCP server `{server}` answered {what} with a result kind corrald does not handle yet (input_required)"),
            )),
        }
    })?;
    Ok(())
}
