//! `mcpServer/list|get|start|stop|restart|add|remove`: the registry of
//! servers, through the supervisor's handle.

use corral_protocol::{
    ErrorCode, McpServerAdd, McpServerAddParams, McpServerControlParams, McpServerGet, McpServerGetParams,
    McpServerGetResult, McpServerList, McpServerListResult, McpServerRemove, McpServerRemoveResult, McpServerRestart,
    McpServerStart, McpServerStop, NoParams, Request,
};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;

use crate::api::DaemonContext;
use crate::api::rpc::{busy_error, parse_params, refusal_error, rpc_error, server_not_found, session};
use crate::supervisor::{ControlAction, RegistryRefusal};

/// Register the methods on the registry of servers.
pub(crate) fn register(module: &mut RpcModule<DaemonContext>) -> Result<(), RegisterMethodError> {
    module.register_async_method(McpServerList::METHOD, |params, context, _| async move {
        let NoParams {} = parse_params::<McpServerList>(&params)?;
        let mut servers = context.supervisor.list().await?;
        let configs = context.supervisor.configs(None).await?;
        super::auth::fill_auth_status(&context, &mut servers, &configs).await;
        Ok::<_, ErrorObjectOwned>(McpServerListResult::new(servers))
    })?;

    module.register_async_method(McpServerGet::METHOD, |params, context, _| async move {
        let McpServerGetParams { name, .. } = parse_params::<McpServerGet>(&params)?;
        match context.supervisor.get(name.clone()).await? {
            Some(server) => {
                let mut servers = [server];
                let configs = context.supervisor.configs(Some(name.clone())).await?;
                super::auth::fill_auth_status(&context, &mut servers, &configs).await;
                let [server] = servers;
                Ok(McpServerGetResult::new(server))
            }
            None => Err(server_not_found(&name)),
        }
    })?;

    register_control::<McpServerStart>(module, ControlAction::Start)?;
    register_control::<McpServerStop>(module, ControlAction::Stop)?;
    register_control::<McpServerRestart>(module, ControlAction::Restart)?;

    module.register_async_method(McpServerAdd::METHOD, |params, context, extensions| async move {
        let McpServerAddParams { name, config, .. } = parse_params::<McpServerAdd>(&params)?;
        // Checked first, and never echoed when invalid: a name can be megabytes long.
        corral_protocol::config::check_server_name(&name).map_err(|problem| {
            rpc_error(
                ErrorCode::InvalidParams,
                format!("invalid params for `{}`: field `name`: {problem}", McpServerAdd::METHOD),
            )
        })?;
        let session = session(&extensions)?;
        let config = corral_protocol::config::parse_server_json(&name, &config).map_err(|problems| {
            let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
            rpc_error(
                ErrorCode::InvalidParams,
                format!("invalid server config for `{name}`: {}", problems.join("; ")),
            )
        })?;
        let enabled = config.enabled;
        context
            .supervisor
            // Corral's protocol has no roots: the server gets its config's, if any.
            .add(config, session.id, None)
            .await?
            .map_err(|refusal| refusal_error(&name, &refusal))?;
        if enabled {
            // Answer once it is `starting`, like `mcpServer/start`.
            if let Some(Err(busy)) = context.supervisor.control(name.clone(), ControlAction::Start).await? {
                return Err(busy_error(&name, busy));
            }
        }
        let server = context.supervisor.get(name.clone()).await?;
        server
            .map(McpServerGetResult::new)
            .ok_or_else(|| refusal_error(&name, &RegistryRefusal::NotFound))
    })?;

    module.register_async_method(McpServerRemove::METHOD, |params, context, extensions| async move {
        let McpServerControlParams { name, .. } = parse_params::<McpServerRemove>(&params)?;
        let session = session(&extensions)?;
        context
            .supervisor
            .remove(name.clone(), session.id)
            .await?
            .map_err(|refusal| refusal_error(&name, &refusal))?;
        Ok::<_, ErrorObjectOwned>(McpServerRemoveResult::new(name))
    })?;
    Ok(())
}

/// `mcpServer/start|stop|restart`: forward to the supervisor, answer with the server's status after.
fn register_control<R>(module: &mut RpcModule<DaemonContext>, action: ControlAction) -> Result<(), RegisterMethodError>
where
    R: Request<Params = McpServerControlParams, Result = McpServerGetResult>,
{
    module.register_async_method(R::METHOD, move |params, context, _| async move {
        let McpServerControlParams { name, .. } = parse_params::<R>(&params)?;
        let not_found = || server_not_found(&name);
        context
            .supervisor
            .control(name.clone(), action)
            .await?
            .ok_or_else(not_found)?
            .map_err(|busy| busy_error(&name, busy))?;
        let server = context.supervisor.get(name.clone()).await?.ok_or_else(not_found)?;
        Ok::<_, ErrorObjectOwned>(McpServerGetResult::new(server))
    })?;
    Ok(())
}
