//! Every method of the front-end API: one line per group of handlers; and
//! the tables a connection dispatches into, one per mode ([`MethodTables`]).

use std::sync::Arc;

use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::{Methods, RpcModule};

use crate::params::RawMethods;

use super::DaemonContext;
use super::handlers;

/// The front-end API's methods (with `debug/*` when test hooks are on).
pub(crate) fn build(context: Arc<DaemonContext>) -> Result<RpcModule<DaemonContext>, RegisterMethodError> {
    let test_hooks = context.test_hooks.enabled;
    let mut module = RpcModule::from_arc(context);
    handlers::daemon::register(&mut module)?;
    handlers::servers::register(&mut module)?;
    handlers::tools::register(&mut module)?;
    handlers::catalog::register(&mut module)?;
    handlers::skills::register(&mut module)?;
    handlers::passthrough::register(&mut module)?;
    handlers::auth::register(&mut module)?;
    if test_hooks {
        handlers::debug::register(&mut module)?;
    }
    Ok(module)
}

/// The methods a connection dispatches into, by the mode its first
/// `initialize` decided: Corral's protocol, or MCP (an MCP client on the
/// socket, served by the bridge). Cheap to clone (shared tables).
#[derive(Clone)]
pub(crate) struct MethodTables {
    /// The front-end API ([`build`]).
    pub(crate) corral: Methods,
    /// The bridge: the daemon as one MCP server (`crate::bridge`).
    pub(crate) mcp: Methods,
    /// The front-end API's methods that answer with a server's JSON ([`RawMethods`]).
    pub(crate) corral_raw: Arc<RawMethods>,
    /// The bridge's.
    pub(crate) mcp_raw: Arc<RawMethods>,
}

/// Both tables of a daemon with `context`.
pub(crate) fn tables(context: Arc<DaemonContext>) -> Result<MethodTables, RegisterMethodError> {
    let bridge = Arc::new(crate::bridge::Bridge::new(
        context.supervisor.clone(),
        context.hub.clone(),
        context.tasks.clone(),
    ));
    let mut corral_raw = RawMethods::default();
    handlers::tools::register_raw(&mut corral_raw, context.clone());
    Ok(MethodTables {
        mcp_raw: Arc::new(crate::bridge::raw_methods(bridge.clone())),
        mcp: crate::bridge::methods(bridge)?.into(),
        corral: build(context)?.into(),
        corral_raw: Arc::new(corral_raw),
    })
}
