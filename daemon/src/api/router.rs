//! Every method of the front-end API: one line per group of handlers.

use std::sync::Arc;

use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;

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
    handlers::auth::register(&mut module)?;
    if test_hooks {
        handlers::debug::register(&mut module)?;
    }
    Ok(module)
}
