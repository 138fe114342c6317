//! `skills/list` and `skills/read`: the skills of servers that declare MCP's skills extension
//! (SEP-2640), listed without reading a file, and one file of one skill loaded, verified
//! against the skill's entry (`mcp::skills` holds the rules).
//!
//! A listing fetches every page of every ready server that declares the extension,
//! concurrently, each within its `tool_timeout_sec`; a server named explicitly that does not
//! declare it is reported in `errors`, so `corral skills SERVER` says why it shows nothing. A
//! read runs as a call of the front-end that asks (`FrontEnds::call_started`): what the server
//! asks meanwhile goes to it only, and the server's `tool_timeout_sec` bounds the read as a
//! whole (listing, then reading) in active time. A
//! file that does not match its entry is `skillVerificationFailed`, naming the server, the
//! skill and what differs; its content is not returned.

use corral_protocol::{
    ErrorCode, ListError, ListParams, Request as _, ServerSkill, SkillsList, SkillsListResult, SkillsRead,
    SkillsReadParams, SkillsReadResult,
};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;

use crate::api::DaemonContext;
use crate::api::rpc::{
    not_available_error, not_ready_servers, parse_params, route_error, rpc_error, scoped_targets, session,
    within_active_time,
};
use crate::mcp::route::CallTarget;
use crate::mcp::skills::{self, SkillError};

/// The skills of every ready server that declares the extension (or of one).
async fn list(context: &DaemonContext, params: ListParams) -> Result<SkillsListResult, ErrorObjectOwned> {
    let targets = context
        .supervisor
        .targets(params.server.as_deref())?
        .map_err(|not_available| not_available_error(params.server.as_deref().unwrap_or(""), &not_available))?;
    let only_one = params.server.is_some();
    let ready = scoped_targets(targets.ready, &params.server, params.headers.as_ref())?;
    let mut errors = Vec::new();
    let mut fetches = tokio::task::JoinSet::new();
    for (index, target) in ready.into_iter().enumerate() {
        let server = target.config.name.clone();
        if !skills::offered_by(&target) {
            if only_one {
                errors.push(ListError::new(
                    server.clone(),
                    format!(
                        "MCP server `{server}` does not declare the skills extension (io.modelcontextprotocol/skills)"
                    ),
                ));
            }
            continue;
        }
        fetches.spawn(async move {
            let timeout = target.config.tool_timeout;
            let listed = match tokio::time::timeout(timeout, skills::list(&target)).await {
                Ok(Ok(listed)) => Ok(listed),
                Ok(Err(error)) => Err(error.describe(&server, "`skills/list`")),
                Err(_) => Err(format!(
                    "MCP server `{server}` did not finish `skills/list` within {timeout:?} (tool_timeout_sec)"
                )),
            };
            (index, server, listed)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = fetches.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(error) => tracing::error!(%error, "a skills listing task failed"),
        }
    }
    results.sort_by_key(|(index, _, _)| *index);
    let mut found = Vec::new();
    for (_, server, listed) in results {
        match listed {
            Ok(entries) => found.extend(
                entries
                    .into_iter()
                    .map(|(entry, problem)| ServerSkill::new(server.clone(), entry, problem)),
            ),
            Err(message) if only_one => return Err(rpc_error(ErrorCode::ServerError, message)),
            Err(message) => errors.push(ListError::new(server, message)),
        }
    }
    Ok(SkillsListResult::new(
        found,
        not_ready_servers(targets.not_ready),
        errors,
    ))
}

/// What `skills/read` answers for `error`, naming `server` and the skill.
fn skill_error(server: &str, skill: &str, error: SkillError) -> ErrorObjectOwned {
    let list_again = format!("list the skills again (`corral skills {server}`)");
    match error {
        SkillError::Route { request, error } => route_error(server, &request, error),
        SkillError::NotFound { wanted, listed } => rpc_error(
            ErrorCode::InvalidParams,
            if listed.is_empty() {
                format!("MCP server `{server}` lists no skill `{wanted}` (it lists none)")
            } else {
                format!(
                    "MCP server `{server}` lists no skill `{wanted}`; it lists: {}",
                    listed.join(", ")
                )
            },
        ),
        SkillError::Ambiguous { name, uris } => rpc_error(
            ErrorCode::InvalidParams,
            format!(
                "MCP server `{server}` has {} skills named `{name}`: give the URI of the one to read ({})",
                uris.len(),
                uris.join(", ")
            ),
        ),
        SkillError::InvalidEntry { skill, problem } => rpc_error(
            ErrorCode::SkillVerificationFailed,
            format!("skill `{skill}` of MCP server `{server}` cannot be loaded: its entry is invalid: {problem}"),
        ),
        SkillError::NotInSkill { skill: uri, file } => rpc_error(
            ErrorCode::SkillVerificationFailed,
            format!(
                "skill `{skill}` of MCP server `{server}` has no file `{file}`: its entry ({uri}) does not list it; \
                 {list_again}"
            ),
        ),
        SkillError::Verification { skill, mismatch } => rpc_error(
            ErrorCode::SkillVerificationFailed,
            format!("skill `{skill}` of MCP server `{server}`: {mismatch}; its content was not used: {list_again}"),
        ),
    }
}

/// Register `skills/list` and `skills/read`.
pub(crate) fn register(module: &mut RpcModule<DaemonContext>) -> Result<(), RegisterMethodError> {
    module.register_async_method(SkillsList::METHOD, |params, context, _| async move {
        list(&context, parse_params::<SkillsList>(&params)?).await
    })?;

    module.register_async_method(SkillsRead::METHOD, |params, context, extensions| async move {
        let SkillsReadParams {
            server,
            skill,
            file,
            entry,
            ..
        } = parse_params::<SkillsRead>(&params)?;
        let target: CallTarget = context
            .supervisor
            .call_target(&server)?
            .map_err(|not_available| not_available_error(&server, &not_available))?;
        if !skills::offered_by(&target) {
            return Err(rpc_error(
                ErrorCode::InvalidParams,
                format!(
                    "MCP server `{server}` does not declare the skills extension (io.modelcontextprotocol/skills): \
                     it has no skills to read"
                ),
            ));
        }
        let what = format!("reading skill `{skill}`");
        let link = &session(&extensions)?.link;
        let read = Box::pin(skills::read(&target, &skill, file.as_deref(), entry));
        let file = within_active_time(&context, &target, link, &what, read)
            .await?
            .map_err(|error| skill_error(&server, &skill, error))?;
        Ok::<_, ErrorObjectOwned>(
            SkillsReadResult::new(
                server,
                file.skill_uri,
                file.uri,
                file.mime_type,
                file.size,
                file.digest,
                file.verified,
                file.entry,
            )
            .with_text(file.text)
            .with_blob(file.blob),
        )
    })?;
    Ok(())
}
