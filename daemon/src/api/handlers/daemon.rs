//! `initialize`, `daemon/status`, `events/replay` and `config/reload`: the
//! daemon itself, not its servers.

use corral_protocol::error::VersionMismatchData;
use corral_protocol::{
    ConfigReload, DaemonStatus, DaemonStatusRequest, ErrorCode, EventsReplay, EventsReplayResult, Initialize,
    InitializeParams, InitializeResult, NoParams, ReloadTrigger, Request,
};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;

use crate::api::DaemonContext;
use crate::api::rpc::{parse_params, rpc_error, session};
use crate::api::session::Session;
use crate::hub::link::CanAnswer;

/// Register the daemon's own methods.
pub(crate) fn register(module: &mut RpcModule<DaemonContext>) -> Result<(), RegisterMethodError> {
    module.register_method(Initialize::METHOD, |params, context, extensions| {
        initialize(parse_params::<Initialize>(&params)?, context, &*session(extensions)?)
    })?;

    module.register_async_method(DaemonStatusRequest::METHOD, |params, context, _| async move {
        parse_params::<DaemonStatusRequest>(&params)?;
        let counts = context.supervisor.counts().await?;
        let credentials_store = context.auth.credentials_status().await;
        let facts = &context.facts;
        Ok::<_, ErrorObjectOwned>(
            DaemonStatus::new(
                facts.daemon_info.clone(),
                u64::try_from(facts.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                facts.socket_path.display().to_string(),
                facts.config_path.display().to_string(),
                facts.config_path.exists(),
                counts,
                context.gate.open_connections(),
                context.hub.events.last_seq(),
            )
            .with_config_error(facts.config_error.borrow().clone())
            .with_connection_limit(
                u32::try_from(context.gate.max_connections()).unwrap_or(u32::MAX),
                context.gate.refused_connections(),
            )
            .with_dropped_progress(context.hub.routes.dropped_progress())
            .with_service_notices_dropped(facts.notifier.dropped())
            .with_credentials_store(credentials_store)
            .with_children_record_error(facts.children_record_error.borrow().clone())
            .with_mcp_endpoint(facts.mcp_endpoint.borrow().clone()),
        )
    })?;

    module.register_method(EventsReplay::METHOD, |params, context, _| {
        let params = parse_params::<EventsReplay>(&params)?;
        let replay = context.hub.events.replay(params.after_seq);
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
    Ok(())
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
        .initialize(params.client_info, params.capabilities.clone(), &context.hub.events)
        .map_err(|()| rpc_error(ErrorCode::AlreadyInitialized, "this connection is already initialized"))?;
    context
        .hub
        .routes
        .register(&session.link, CanAnswer::corral(&params.capabilities));
    Ok(InitializeResult::new(
        context.facts.daemon_info.clone(),
        session.id,
        last_seq,
        u32::try_from(context.hub.events.capacity()).unwrap_or(u32::MAX),
    ))
}
