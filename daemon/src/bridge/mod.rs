//! The bridge: the daemon as one MCP server for MCP clients (Claude Code,
//! Cursor, the official SDKs…), with the tools of every server it runs.
//!
//! An MCP client reaches it on the daemon's socket (`corral mcp` is a pipe
//! of lines from the client's stdio to the socket, which adds the client's
//! options to its `initialize`): the api room serves the
//! connection like any other (framing, limits, slots, batches,
//! cancellation, shutdown) and, once the first `initialize` carries a string
//! `protocolVersion`, dispatches the connection's requests into the table
//! built here ([`methods`]) instead of Corral's. The same table serves the
//! loopback HTTP endpoint's sessions (`crate::endpoint`), which are such
//! connections too.
//!
//! What it owns: MCP's words for the daemon. `initialize` (version
//! negotiation, the client's options: [`view`]), `ping`,
//! `logging/setLevel` (the level of server logs it gets), `tools/list` and `tools/call` ([`tools`]),
//! prompts and resources ([`catalog`]), one namespace of names per client
//! ([`names`]), and the `list_changed` notifications a client gets when
//! what it lists may have changed, with the servers' log messages
//! ([`live`]).
//!
//! Invariants:
//! - an MCP client gets MCP messages only: never Corral's notifications
//!   (the api's writer does not subscribe it to the event hub), its
//!   progress as `notifications/progress` with its own token (the link's
//!   dialect), no `requestCancelled` answer after its own
//!   `notifications/cancelled`;
//! - a server's answers pass through as the server wrote them
//!   (`mcp::forward` returns the raw JSON); the bridge only renames tools
//!   and prompts, and prefixes a resource URI another server already has;
//! - a client sees only what its [`view::View`] shows: never another
//!   client's own servers; its own (`--config`) live exactly as long as its
//!   connection (session servers, reaped by the supervisor when it ends),
//!   and exist only when its link's `Door` allows them: a session of the
//!   loopback HTTP endpoint asking for them is refused (`notPermitted`)
//!   unless `[mcp_endpoint] allow_session_servers` is set, since the token
//!   would otherwise let its holder run commands;
//! - only ready servers' tools are listed; a call to a server that is not
//!   ready answers at once with a tool error saying why and what to do;
//! - requests a server makes of its client (elicitation, sampling) during a
//!   call reach the MCP client that made the call, as MCP's own
//!   `elicitation/create` / `sampling/createMessage` with the server's params
//!   (the link words them), when it declared the capability at `initialize`
//!   ([`can_answer`]: `elicitation: {}` is form mode, URL mode only with
//!   `elicitation.url`); otherwise `hub::routes` declines them, saying why.
//!   Withdrawn ones get MCP's `notifications/cancelled`;
//! - a client that declared `capabilities.roots` gives its roots to the
//!   servers it started for itself (`--config`), and to no config server
//!   (those are shared): they are told at their `initialize` that roots are
//!   offered, their `roots/list` is answered with what the client answers
//!   MCP's `roots/list` (kept until its `notifications/roots/list_changed`,
//!   which they then get too), and the client's roots win over a `roots`
//!   entry of theirs, which is used only when the client does not answer.
//!   `hub::roots` has the rules; the bridge only hands each of its session
//!   servers the client's [`ClientRoots`] when adding it.
//!
//! Dependencies: `mcp::{forward, route}`, the supervisor's handle and the
//! hub; never the api room (which names this one).

pub(crate) mod catalog;
pub(crate) mod live;
pub(crate) mod names;
pub(crate) mod tools;
pub(crate) mod view;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use corral_protocol::ErrorCode;
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::{ErrorObjectOwned, Extensions, Params};
use rmcp::model::ProtocolVersion;
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::hub::link::{CanAnswer, Link};
use crate::hub::roots::ClientRoots;
use crate::supervisor::{ControlAction, RegistryRefusal, SupervisorHandle};

/// What an MCP client is told about this server at `initialize`.
const INSTRUCTIONS: &str = "Corral runs the user's MCP servers; this server offers the tools, prompts and \
resources of every one that is ready, tools named `server__tool` and prompts `server__prompt`. A tool of a \
server that is not ready answers with an error that says why and what to do. The `corral__*` tools show each \
server's status.";

/// The bridge's state, shared by its method handlers (the context of its
/// `RpcModule`).
#[derive(Debug)]
pub(crate) struct Bridge {
    pub(crate) supervisor: SupervisorHandle,
    pub(crate) hub: Arc<Hub>,
    /// The daemon's task tracker: each MCP connection's list follower is its task.
    tasks: TaskTracker,
    /// Every initialized MCP client, by connection: removed when its
    /// connection ends (its follower's [`Registered`] guard).
    clients: Arc<Mutex<Clients>>,
}

/// The initialized MCP clients, by connection.
type Clients = HashMap<u64, Arc<Client>>;

/// One MCP client: what it sees, and the names of its latest listings (how
/// a call finds its server without listing again).
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) view: view::View,
    pub(crate) tools: Mutex<Arc<tools::Listing>>,
    pub(crate) prompts: Mutex<Arc<tools::Listing>>,
    pub(crate) resources: Mutex<Arc<catalog::Resources>>,
    /// The least severe server log message it gets ([`log_rank`]; `logging/setLevel`).
    pub(crate) log_rank: AtomicUsize,
}

/// A listing replaced whole: valid after any panic.
pub(crate) fn latest<T>(listing: &Mutex<Arc<T>>) -> Arc<T> {
    listing.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Keep `new` as the latest listing.
pub(crate) fn keep<T>(listing: &Mutex<Arc<T>>, new: T) {
    *listing.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
}

impl Bridge {
    /// A bridge to the servers of `supervisor`, reaching clients through `hub`.
    pub(crate) fn new(supervisor: SupervisorHandle, hub: Arc<Hub>, tasks: TaskTracker) -> Self {
        Self {
            supervisor,
            hub,
            tasks,
            clients: Arc::default(),
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, Clients> {
        lock_clients(&self.clients)
    }

    /// The client on the connection of this request.
    fn client(&self, extensions: &Extensions) -> Result<Arc<Client>, ErrorObjectOwned> {
        self.client_of(&*link(extensions)?)
    }

    /// The client on `link`'s connection, once its `initialize` is answered.
    fn client_of(&self, link: &Link) -> Result<Arc<Client>, ErrorObjectOwned> {
        self.clients().get(&link.id).cloned().ok_or_else(|| {
            error(
                ErrorCode::InvalidRequest,
                "this connection has not finished `initialize`",
            )
        })
    }
}

fn lock_clients(clients: &Mutex<Clients>) -> std::sync::MutexGuard<'_, Clients> {
    // A map of handles: valid after any panic.
    clients.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a client from the bridge when dropped: held by its connection's follower.
#[derive(Debug)]
pub(crate) struct Registered {
    clients: Arc<Mutex<Clients>>,
    connection: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock_clients(&self.clients).remove(&self.connection);
    }
}

/// The bridge's methods: what the api dispatches an MCP client's requests into
/// (`tools/call` is a raw method: [`raw_methods`]).
pub(crate) fn methods(bridge: Arc<Bridge>) -> Result<RpcModule<Bridge>, RegisterMethodError> {
    let mut module = RpcModule::from_arc(bridge);
    module.register_method("initialize", |params, bridge, extensions| {
        initialize(&params, bridge, extensions)
    })?;
    module.register_method("ping", |_, _, _| Ok::<_, ErrorObjectOwned>(json!({})))?;
    module.register_method("logging/setLevel", |params, bridge, extensions| {
        let SetLevel { level } = parse(&params, "logging/setLevel")?;
        let rank = log_rank(&level).ok_or_else(|| {
            error(
                ErrorCode::InvalidParams,
                format!(
                    "invalid params for `logging/setLevel`: unknown level {level:?}; use one of {}",
                    LOG_LEVELS.join(", ")
                ),
            )
        })?;
        bridge.client(extensions)?.log_rank.store(rank, Ordering::Relaxed);
        Ok::<_, ErrorObjectOwned>(json!({}))
    })?;
    module.register_async_method("tools/list", |params, bridge, extensions| async move {
        let client = bridge.client(&extensions)?;
        tools::list(&bridge, &client, &params).await
    })?;
    catalog::register(&mut module)?;
    Ok(module)
}

/// The bridge's methods that answer with a server's JSON as it is ([`RawMethods`]):
/// `tools/call`.
pub(crate) fn raw_methods(bridge: Arc<Bridge>) -> RawMethods {
    let mut methods = RawMethods::default();
    methods.register(
        "tools/call",
        Arc::new(move |params, link| {
            let bridge = bridge.clone();
            Box::pin(async move {
                let client = bridge.client_of(&link)?;
                tools::call(&bridge, &client, params, &link).await
            })
        }),
    );
    methods
}

/// `logging/setLevel`'s params.
#[derive(Debug, serde::Deserialize)]
struct SetLevel {
    level: String,
}

/// MCP's log levels, least severe first.
pub(crate) const LOG_LEVELS: [&str; 8] = [
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// The least severe level a client gets until it sets one.
const DEFAULT_LOG_LEVEL: &str = "info";

/// Where `level` is among [`LOG_LEVELS`]; `None` for a word MCP does not have.
pub(crate) fn log_rank(level: &str) -> Option<usize> {
    LOG_LEVELS.iter().position(|known| *known == level)
}

/// MCP `initialize`'s params, as far as the bridge reads them.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitializeParams {
    protocol_version: String,
    /// What the client can do; read only for the server requests it answers.
    #[serde(default)]
    capabilities: serde_json::Map<String, Value>,
    /// Where `corral mcp` puts the client's options ([`view::OPTIONS_KEY`]).
    #[serde(default, rename = "_meta")]
    meta: Option<Value>,
}

/// Which of a server's requests an MCP client that declared `capabilities`
/// can answer, as MCP says: `elicitation` declares form mode when it has
/// neither `form` nor `url` (as before 2025-11-25), else the modes it
/// names; `sampling` declares sampling; `roots` declares `roots/list`, and
/// `roots.listChanged: true` that it says when they change.
fn can_answer(capabilities: &serde_json::Map<String, Value>) -> CanAnswer {
    let declared = |value: Option<&Value>| value.is_some_and(|value| !value.is_null());
    let elicitation = capabilities.get("elicitation").filter(|value| !value.is_null());
    let mode = |name: &str| elicitation.is_some_and(|elicitation| declared(elicitation.get(name)));
    let roots = capabilities.get("roots").filter(|value| !value.is_null());
    CanAnswer {
        form_elicitation: elicitation.is_some() && (mode("form") || !mode("url")),
        url_elicitation: mode("url"),
        sampling: declared(capabilities.get("sampling")),
        roots: roots.is_some(),
        roots_list_changed: roots.is_some_and(|roots| roots.get("listChanged") == Some(&Value::Bool(true))),
    }
}

/// Answer `initialize`: the version, the capabilities, who we are. The api
/// marks the connection initialized once this succeeds. The client's own
/// servers (`--config`) are added as session servers of its connection in
/// the background: `initialize` never waits for a server.
fn initialize(params: &Params<'_>, bridge: &Bridge, extensions: &Extensions) -> Result<Value, ErrorObjectOwned> {
    let InitializeParams {
        protocol_version,
        capabilities,
        meta,
    } = parse(params, "initialize")?;
    let options = view::Options::from_initialize(meta.as_ref()).map_err(|problem| {
        error(
            ErrorCode::InvalidParams,
            format!("invalid params for `initialize`: {problem}"),
        )
    })?;
    let link = link(extensions)?;
    if !options.session_servers.is_empty() && !link.door.may_start_servers() {
        return Err(error(
            ErrorCode::NotPermitted,
            format!(
                "`_meta[\"{}\"].sessionServers` of `initialize`: a session of corrald's MCP endpoint may not start \
                 servers of its own, since that lets whoever holds the endpoint's token run commands as you; set \
                 `allow_session_servers = true` in [mcp_endpoint] to allow it, or run the client through `corral mcp \
                 --config FILE` instead",
                view::OPTIONS_KEY
            ),
        ));
    }
    // A server's requests reach this client only as far as it said it can answer them.
    bridge.hub.routes.register(&link, can_answer(&capabilities));
    let client = Arc::new(Client {
        view: view::View::new(link.id, &options),
        tools: Mutex::default(),
        prompts: Mutex::default(),
        resources: Mutex::default(),
        log_rank: AtomicUsize::new(log_rank(DEFAULT_LOG_LEVEL).unwrap_or_default()),
    });
    bridge.clients().insert(link.id, client.clone());
    let registered = Registered {
        clients: bridge.clients.clone(),
        connection: link.id,
    };
    live::spawn(
        &bridge.tasks,
        bridge.supervisor.clone(),
        bridge.hub.clone(),
        link.clone(),
        client,
        registered,
    );
    if !options.session_servers.is_empty() {
        let adding = add_session_servers(bridge.supervisor.clone(), link, options.session_servers);
        bridge.tasks.spawn(adding);
    }
    Ok(json!({
        "protocolVersion": negotiate(&protocol_version),
        "capabilities": {
            "tools": { "listChanged": true },
            "prompts": { "listChanged": true },
            "resources": { "listChanged": true },
            "logging": {},
        },
        "serverInfo": { "name": "corral", "version": env!("CARGO_PKG_VERSION") },
        "instructions": INSTRUCTIONS,
    }))
}

/// Add the client's own servers as session servers of its connection (see
/// [`view`]), and start the enabled ones; they get the client's roots when
/// it declared them (`hub::roots`). An entry that is not valid is
/// left out, and logged with what is wrong. If the connection ended while
/// they were being added, they are removed again: the api's own clean-up
/// (after the link is closed) may have run before they existed.
async fn add_session_servers(
    supervisor: SupervisorHandle,
    link: Arc<Link>,
    servers: std::collections::BTreeMap<String, Value>,
) {
    let roots = ClientRoots::of(&link);
    for (shown, fields) in servers {
        let name = view::session_name(&shown, link.id);
        let config = match corral_protocol::config::parse_server_json(&name, &fields) {
            Ok(config) => config,
            Err(problems) => {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                left_out(&link, &shown, &problems.join("; ")).await;
                continue;
            }
        };
        let enabled = config.enabled;
        match supervisor.add(config, link.id, roots.clone()).await {
            Err(_stopped) => return,
            Ok(Err(refusal)) => {
                let why = match refusal {
                    RegistryRefusal::Exists => format!("corral already runs a server named `{name}`"),
                    RegistryRefusal::StillStopping => format!("a server named `{name}` is still stopping"),
                    other => format!("{other:?}"),
                };
                left_out(&link, &shown, &why).await;
                continue;
            }
            Ok(Ok(())) => {}
        }
        tracing::info!(server = %shown, registered_as = %name, connection = link.id, "an MCP client's own server was added");
        if enabled && supervisor.control(name, ControlAction::Start).await.is_err() {
            return;
        }
    }
    if link.is_closed() {
        supervisor.session_closed(link.id).await;
    }
}

/// Say, in corrald's log and to the client (an MCP log message: the
/// client's user may never read corrald's log), that its own server `shown`
/// is left out, and why.
async fn left_out(link: &Link, shown: &str, why: &str) {
    let text = format!("your server `{shown}` (from `corral mcp --config`) is left out: {why}");
    tracing::warn!(server = %shown, connection = link.id, "an MCP client's own server is left out: {why}");
    let params = json!({ "level": "error", "logger": "corral", "data": text });
    let _ = link.notify_reliably(live::LOG_MESSAGE, params).await;
}

/// The version to answer a client that asked for `requested`: the same when
/// rmcp's model knows it and it still has an `initialize` handshake, else
/// the newest that has one (a client that cannot speak it closes the
/// connection, as MCP says).
fn negotiate(requested: &str) -> String {
    ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .filter(|known| known.has_initialize())
        .find(|known| known.as_str() == requested)
        .unwrap_or(&ProtocolVersion::LATEST_WITH_INITIALIZE)
        .as_str()
        .to_owned()
}

/// Whether the bridge speaks `version` (one it would answer `initialize`
/// with): what the loopback HTTP endpoint checks an `MCP-Protocol-Version`
/// header against.
pub(crate) fn speaks(version: &str) -> bool {
    ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .any(|known| known.has_initialize() && known.as_str() == version)
}

/// The connection's link, which the api puts on every request of an MCP client.
pub(super) fn link(extensions: &Extensions) -> Result<Arc<Link>, ErrorObjectOwned> {
    extensions
        .get::<Arc<Link>>()
        .cloned()
        .ok_or_else(|| error(ErrorCode::InternalError, "no connection attached to this call"))
}

pub(crate) use crate::params::{RawMethods, error, parse, parse_quickly};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_gets_its_own_version_when_known_else_the_newest_with_a_handshake() {
        for known in ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"] {
            assert_eq!(negotiate(known), known);
        }
        assert_eq!(negotiate("2099-01-01"), "2025-11-25", "unknown: the newest");
        assert_eq!(
            negotiate("2026-07-28"),
            "2025-11-25",
            "no `initialize` in that revision"
        );
        assert_eq!(negotiate(""), "2025-11-25");
        assert!(speaks("2025-06-18") && speaks("2025-11-25"));
        assert!(!speaks("2026-07-28") && !speaks("2099-01-01") && !speaks(""));
    }

    #[test]
    fn the_server_requests_a_client_can_answer_are_read_from_its_capabilities() {
        let read = |capabilities: Value| {
            let capabilities = capabilities.as_object().cloned().expect("an object");
            let can = can_answer(&capabilities);
            (can.form_elicitation, can.url_elicitation, can.sampling)
        };
        assert_eq!(read(json!({})), (false, false, false));
        assert_eq!(read(json!({"roots": {"listChanged": true}})), (false, false, false));
        let roots = |capabilities: Value| {
            let can = can_answer(capabilities.as_object().expect("an object"));
            (can.roots, can.roots_list_changed)
        };
        assert_eq!(roots(json!({})), (false, false));
        assert_eq!(roots(json!({"roots": null})), (false, false));
        assert_eq!(roots(json!({"roots": {}})), (true, false));
        assert_eq!(roots(json!({"roots": {"listChanged": false}})), (true, false));
        assert_eq!(roots(json!({"roots": {"listChanged": true}})), (true, true));
        assert_eq!(roots(json!({"sampling": {}, "elicitation": {}})), (false, false));
        assert_eq!(
            read(json!({"elicitation": {}})),
            (true, false, false),
            "`{{}}` is form mode"
        );
        assert_eq!(read(json!({"elicitation": {"form": {}}})), (true, false, false));
        assert_eq!(read(json!({"elicitation": {"url": {}}})), (false, true, false));
        assert_eq!(
            read(json!({"elicitation": {"form": {"applyDefaults": true}, "url": {}}})),
            (true, true, false)
        );
        assert_eq!(read(json!({"sampling": {}})), (false, false, true));
        assert_eq!(
            read(json!({"sampling": {"tools": {}}, "elicitation": {}})),
            (true, false, true)
        );
        assert_eq!(
            read(json!({"elicitation": null, "sampling": null})),
            (false, false, false)
        );
    }
}
