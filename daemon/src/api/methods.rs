//! The front-end methods, registered in a jsonrpsee [`RpcModule`].
//!
//! Handlers get the daemon-wide [`DaemonContext`] and, through jsonrpsee's
//! `Extensions`, the [`Session`] of the connection that called them. They
//! translate between protocol types and the supervisor's handle and map
//! failures to the documented error codes; they know nothing about sockets or
//! framing.

use std::sync::Arc;

use corral_protocol::error::VersionMismatchData;
use corral_protocol::{
    ConfigReload, DaemonNotification, DaemonStatus, DaemonStatusRequest, ErrorCode, EventsReplay, EventsReplayResult,
    Initialize, InitializeParams, InitializeResult, McpServerAdd, McpServerAddParams, McpServerControlParams,
    McpServerGet, McpServerGetParams, McpServerGetResult, McpServerList, McpServerListResult, McpServerRemove,
    McpServerRemoveResult, McpServerRestart, McpServerStart, McpServerStop, NoParams, ReloadTrigger, Request,
    ServerStatus, StartupStatusUpdated,
};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::{ErrorObjectOwned, Extensions, Params};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::DaemonContext;
use super::session::Session;
use crate::supervisor::{ControlAction, RegistryRefusal, ServerBusy, SupervisorStopped};

/// Build a JSON-RPC error object with one of our codes.
pub(crate) fn rpc_error(code: ErrorCode, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned::<()>(code.code(), message, None)
}

impl From<SupervisorStopped> for ErrorObjectOwned {
    fn from(stopped: SupervisorStopped) -> Self {
        rpc_error(ErrorCode::ShuttingDown, stopped.to_string())
    }
}

/// Parse `params` for method `R`; absent or `null` params mean `{}`.
///
/// The error message names the method and the offending field so that a
/// front-end author sees what to fix without reading daemon logs.
pub(crate) fn parse_params<R: Request>(params: &Params<'_>) -> Result<R::Params, ErrorObjectOwned> {
    parse_json(params, R::METHOD)
}

pub(crate) fn parse_json<T: DeserializeOwned>(params: &Params<'_>, method: &str) -> Result<T, ErrorObjectOwned> {
    let raw = params
        .as_str()
        .map(str::trim)
        .filter(|raw| *raw != "null")
        .unwrap_or("{}");
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = if path == "." {
            format!("invalid params for `{method}`: {inner}")
        } else {
            format!("invalid params for `{method}`: field `{path}`: {inner}")
        };
        rpc_error(ErrorCode::InvalidParams, message)
    })
}

pub(crate) fn session(extensions: &Extensions) -> Result<Arc<Session>, ErrorObjectOwned> {
    extensions
        .get::<Arc<Session>>()
        .cloned()
        .ok_or_else(|| rpc_error(ErrorCode::InternalError, "no session attached to this call"))
}

/// Every method of the front-end API.
pub(crate) fn build(context: Arc<DaemonContext>) -> Result<RpcModule<DaemonContext>, RegisterMethodError> {
    let test_hooks = context.test_hooks;
    let mut module = RpcModule::from_arc(context);

    module.register_method(Initialize::METHOD, |params, context, extensions| {
        initialize(parse_params::<Initialize>(&params)?, context, &*session(extensions)?)
    })?;

    module.register_async_method(DaemonStatusRequest::METHOD, |params, context, _| async move {
        parse_params::<DaemonStatusRequest>(&params)?;
        let counts = context.supervisor.counts().await?;
        Ok::<_, ErrorObjectOwned>(
            DaemonStatus::new(
                context.daemon_info.clone(),
                u64::try_from(context.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                context.socket_path.display().to_string(),
                context.config_path.display().to_string(),
                context.config_path.exists(),
                counts,
                context.open_connections(),
                context.events.last_seq(),
            )
            .with_config_error(context.config_error.get())
            .with_connection_limit(
                u32::try_from(context.max_connections()).unwrap_or(u32::MAX),
                context.refused_connections(),
            )
            .with_dropped_progress(context.events.frontends().dropped_progress())
            .with_credentials_store(
                context
                    .credentials
                    .as_ref()
                    .map(crate::auth::credentials::Credentials::status),
            )
            .with_children_record_error(crate::process::reaper::registry().record_error()),
        )
    })?;

    module.register_async_method(McpServerList::METHOD, |params, context, _| async move {
        let NoParams {} = parse_params::<McpServerList>(&params)?;
        let mut servers = context.supervisor.list().await?;
        let configs = context.supervisor.configs(None).await?;
        super::oauth::fill_auth_status(&context, &mut servers, &configs).await;
        Ok::<_, ErrorObjectOwned>(McpServerListResult::new(servers))
    })?;

    module.register_async_method(McpServerGet::METHOD, |params, context, _| async move {
        let McpServerGetParams { name, .. } = parse_params::<McpServerGet>(&params)?;
        match context.supervisor.get(name.clone()).await? {
            Some(server) => {
                let mut servers = [server];
                let configs = context.supervisor.configs(Some(name.clone())).await?;
                super::oauth::fill_auth_status(&context, &mut servers, &configs).await;
                let [server] = servers;
                Ok(McpServerGetResult::new(server))
            }
            None => Err(rpc_error(
                ErrorCode::ServerNotFound,
                format!("no MCP server named `{name}`"),
            )),
        }
    })?;

    super::tools::register(&mut module)?;
    super::catalog::register(&mut module)?;
    super::oauth::register(&mut module)?;
    register_control::<McpServerStart>(&mut module, ControlAction::Start)?;
    register_control::<McpServerStop>(&mut module, ControlAction::Stop)?;
    register_control::<McpServerRestart>(&mut module, ControlAction::Restart)?;

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
            .add(config, session.id)
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

    module.register_method(EventsReplay::METHOD, |params, context, _| {
        let params = parse_params::<EventsReplay>(&params)?;
        let replay = context.events.replay(params.after_seq);
        Ok::<_, ErrorObjectOwned>(EventsReplayResult::new(
            replay.notifications,
            replay.complete,
            replay.last_seq,
        ))
    })?;

    module.register_async_method(ConfigReload::METHOD, |params, context, _| async move {
        let NoParams {} = parse_params::<ConfigReload>(&params)?;
        Ok::<_, ErrorObjectOwned>(context.reload.reload(ReloadTrigger::Request).await?)
    })?;

    if test_hooks {
        register_test_hooks(&mut module)?;
    }
    Ok(module)
}

/// `mcpServer/start|stop|restart`: forward to the supervisor, answer with the server's status after.
fn register_control<R>(module: &mut RpcModule<DaemonContext>, action: ControlAction) -> Result<(), RegisterMethodError>
where
    R: Request<Params = McpServerControlParams, Result = McpServerGetResult>,
{
    module.register_async_method(R::METHOD, move |params, context, _| async move {
        let McpServerControlParams { name, .. } = parse_params::<R>(&params)?;
        let not_found = || rpc_error(ErrorCode::ServerNotFound, format!("no MCP server named `{name}`"));
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

/// `serverBusy`: the server's command queue is full.
fn busy_error(name: &str, _busy: ServerBusy) -> ErrorObjectOwned {
    rpc_error(
        ErrorCode::ServerBusy,
        format!("MCP server `{name}` has too many control commands waiting: retry shortly"),
    )
}

fn refusal_error(name: &str, refusal: &RegistryRefusal) -> ErrorObjectOwned {
    match refusal {
        RegistryRefusal::NotFound => rpc_error(ErrorCode::ServerNotFound, format!("no MCP server named `{name}`")),
        RegistryRefusal::Exists => rpc_error(
            ErrorCode::ServerExists,
            format!("an MCP server named `{name}` already exists: choose another name"),
        ),
        RegistryRefusal::NotPermitted(why) => rpc_error(ErrorCode::NotPermitted, format!("`{name}`: {why}")),
        RegistryRefusal::StillStopping => rpc_error(
            ErrorCode::ServerExists,
            format!("an MCP server named `{name}` was just removed and is still stopping: try again in a moment"),
        ),
    }
}

fn initialize(
    params: InitializeParams,
    context: &DaemonContext,
    session: &Session,
) -> Result<InitializeResult, ErrorObjectOwned> {
    let requested = params.protocol_version;
    let supported = corral_protocol::MIN_SUPPORTED_PROTOCOL_VERSION..=corral_protocol::PROTOCOL_VERSION;
    if !supported.contains(&requested) {
        let data = VersionMismatchData::new(requested, *supported.start(), *supported.end());
        return Err(ErrorObjectOwned::owned(
            ErrorCode::ProtocolVersionMismatch.code(),
            data.advice(),
            Some(data),
        ));
    }
    let last_seq = session
        .initialize(params.client_info, params.capabilities.clone(), &context.events)
        .map_err(|()| rpc_error(ErrorCode::AlreadyInitialized, "this connection is already initialized"))?;
    context.events.frontends().register(&session.link, params.capabilities);
    Ok(InitializeResult::new(
        context.daemon_info.clone(),
        session.id,
        last_seq,
        u32::try_from(context.events.capacity()).unwrap_or(u32::MAX),
    ))
}

/// Parameters of `debug/emitTestEvents`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EmitTestEvents {
    count: u32,
    #[serde(default = "default_test_event_name")]
    name: String,
}

fn default_test_event_name() -> String {
    "test-event".to_owned()
}

/// Methods that exist only when corrald runs with `--enable-test-hooks`:
/// seams for tests and benchmarks that need traffic the daemon would not
/// produce on its own. Never enabled by default.
fn register_test_hooks(module: &mut RpcModule<DaemonContext>) -> Result<(), RegisterMethodError> {
    module.register_method("debug/emitTestEvents", |params, context, _| {
        let params: EmitTestEvents = parse_json(&params, "debug/emitTestEvents")?;
        let mut last = 0;
        for _ in 0..params.count {
            last = context.events.publish(|seq| {
                DaemonNotification::StartupStatusUpdated(StartupStatusUpdated::new(
                    seq,
                    params.name.clone(),
                    ServerStatus::Starting,
                ))
            });
        }
        Ok::<_, ErrorObjectOwned>(serde_json::json!({ "lastSeq": last }))
    })?;
    // Make the supervisor stop answering, as a deadlock would, so that tests
    // can see the service watchdog withhold its pings. `debug/releaseSupervisor`
    // (which does not go through the supervisor) undoes it.
    module.register_method("debug/wedgeSupervisor", |params, context, _| {
        let NoParams {} = parse_json(&params, "debug/wedgeSupervisor")?;
        let release = tokio_util::sync::CancellationToken::new();
        context.supervisor.wedge(release.clone())?;
        let previous = context
            .wedge_release
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(release);
        if let Some(previous) = previous {
            previous.cancel();
        }
        Ok::<_, ErrorObjectOwned>(serde_json::json!({}))
    })?;
    module.register_method("debug/releaseSupervisor", |params, context, _| {
        let NoParams {} = parse_json(&params, "debug/releaseSupervisor")?;
        let release = context
            .wedge_release
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Ok::<_, ErrorObjectOwned>(
            serde_json::json!({ "released": release.inspect(CancellationToken::cancel).is_some() }),
        )
    })?;
    Ok(())
}
