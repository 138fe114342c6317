//! `debug/*`: methods that exist only when corrald runs with
//! `--enable-test-hooks`, and the state they keep ([`TestHooks`]).

use corral_protocol::{DaemonNotification, NoParams, ServerStatus, StartupStatusUpdated};
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::ErrorObjectOwned;
use tokio_util::sync::CancellationToken;

use crate::api::DaemonContext;
use crate::api::rpc::parse_json;

/// Whether the `debug/*` methods are registered, and what they keep between
/// calls. Never enabled by default.
#[derive(Debug, Default)]
pub(crate) struct TestHooks {
    /// Register `debug/*` methods for tests and benchmarks.
    pub(crate) enabled: bool,
    /// Releases a supervisor wedged by `debug/wedgeSupervisor`.
    wedge_release: std::sync::Mutex<Option<CancellationToken>>,
}

impl TestHooks {
    /// Test hooks, registered or not.
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            wedge_release: std::sync::Mutex::default(),
        }
    }
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

/// What `debug/panic` runs: a handler's bug.
fn a_bug() -> Result<serde_json::Value, ErrorObjectOwned> {
    panic!("debug/panic was called")
}

/// Methods that exist only when corrald runs with `--enable-test-hooks`:
/// seams for tests and benchmarks that need traffic the daemon would not
/// produce on its own. Never enabled by default.
pub(crate) fn register(module: &mut RpcModule<DaemonContext>) -> Result<(), RegisterMethodError> {
    module.register_method("debug/emitTestEvents", |params, context, _| {
        let params: EmitTestEvents = parse_json(&params, "debug/emitTestEvents")?;
        let mut last = 0;
        for _ in 0..params.count {
            last = context.hub.events.publish(|seq| {
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
            .test_hooks
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
            .test_hooks
            .wedge_release
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        Ok::<_, ErrorObjectOwned>(
            serde_json::json!({ "released": release.inspect(CancellationToken::cancel).is_some() }),
        )
    })?;
    // A handler with a bug: panics once it has waited (so on the connection's
    // reader, among its requests), to show the panic is the request's only.
    module.register_async_method("debug/panic", |params, _, _| async move {
        let NoParams {} = parse_json(&params, "debug/panic")?;
        tokio::task::yield_now().await;
        a_bug()
    })?;
    Ok(())
}
