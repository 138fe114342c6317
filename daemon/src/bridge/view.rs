//! What one MCP client sees of the daemon's servers ([`View`]), from the
//! options its bridge passed at `initialize` ([`Options`]).
//!
//! `corral mcp` puts them in the first `initialize` request's `_meta`,
//! under [`OPTIONS_KEY`]: the servers to show (`--servers`) or leave out
//! (`--exclude`), the separator of names, whether the built-in `corral`
//! server's tools are there (`--no-builtin`), and the client's own servers
//! (`--config FILE`), which become session servers of the connection: they
//! start with it and are reaped when it ends, whatever ends it. The
//! separator and those servers' names are checked by the protocol crate's
//! rules (`config::check_separator`, `config::check_session_server_name`:
//! a name leaves room for the `-cID` below), the ones `corral mcp` checks
//! its flags and file with; options that break them refuse `initialize`.
//!
//! Pure data, no state: the rules of visibility are here, tested alone.
//! - a session server another connection added is never shown (a project's
//!   servers are its client's);
//! - the client's own session servers are shown under the names it gave
//!   them; in the registry they are named `NAME-cID` (ID: the connection),
//!   so two clients may each have a server called `NAME`, and the names a
//!   client sees (and its tool names) are the same in every run;
//! - a config server of the same name as one of the client's own is
//!   hidden from it (the project's entry wins, as in the clients' own
//!   config scopes);
//! - `servers` and `exclude` apply to the names the client sees, the
//!   built-in one too.

use std::collections::{BTreeMap, BTreeSet};

use corral_protocol::config;
use serde_json::Value;

use super::names;
use crate::mcp::route::Whose;

/// The key of the bridge's options in `initialize`'s `_meta`.
pub(crate) const OPTIONS_KEY: &str = "corral/bridge";

/// The options a bridge passes at `initialize` (`_meta["corral/bridge"]`).
/// Unknown members are ignored, so an older daemon takes a newer bridge.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Options {
    /// Only these servers (by the name the client sees).
    #[serde(default)]
    pub(crate) servers: Option<BTreeSet<String>>,
    /// Never these.
    #[serde(default)]
    pub(crate) exclude: BTreeSet<String>,
    /// Between server and tool or prompt names.
    #[serde(default)]
    pub(crate) separator: Option<String>,
    /// Whether the built-in `corral` server is shown.
    #[serde(default = "shown")]
    pub(crate) builtin: bool,
    /// The client's own servers: name to the server's fields, as `mcpServer/add` takes them.
    #[serde(default)]
    pub(crate) session_servers: BTreeMap<String, Value>,
}

fn shown() -> bool {
    true
}

impl Default for Options {
    fn default() -> Self {
        Self {
            servers: None,
            exclude: BTreeSet::new(),
            separator: None,
            builtin: true,
            session_servers: BTreeMap::new(),
        }
    }
}

impl Options {
    /// The options in `initialize`'s `_meta` (none there: the defaults), or what is wrong with them.
    pub(crate) fn from_initialize(meta: Option<&Value>) -> Result<Self, String> {
        let Some(options) = meta.and_then(|meta| meta.get(OPTIONS_KEY)) else {
            return Ok(Self::default());
        };
        let options: Self = serde_json::from_value(options.clone())
            .map_err(|error| format!("`_meta.{OPTIONS_KEY}` of `initialize`: {error}"))?;
        if let Some(separator) = &options.separator {
            config::check_separator(separator).map_err(|problem| {
                format!("invalid separator {separator:?} in `_meta.{OPTIONS_KEY}` of `initialize`: {problem}")
            })?;
        }
        for name in options.session_servers.keys() {
            // Checked here, not when the server is added: its registry name
            // (`session_name`) must be a valid server name too.
            config::check_session_server_name(name)
                .map_err(|problem| format!("`_meta.{OPTIONS_KEY}.sessionServers` of `initialize`: {problem}"))?;
        }
        Ok(options)
    }
}

/// The registry name of connection `connection`'s session server `name`: a
/// valid server name for every `name` that passed
/// [`config::check_session_server_name`].
pub(crate) fn session_name(name: &str, connection: u64) -> String {
    format!("{name}-c{connection}")
}

/// What one MCP client sees: built from its [`Options`] at `initialize`.
#[derive(Debug, Clone)]
pub(crate) struct View {
    /// The client's connection.
    connection: u64,
    pub(crate) separator: String,
    only: Option<BTreeSet<String>>,
    exclude: BTreeSet<String>,
    builtin: bool,
    /// The client's session servers: registry name to the name it gave.
    own: BTreeMap<String, String>,
}

impl View {
    /// The view of the client on `connection` with `options`.
    pub(crate) fn new(connection: u64, options: &Options) -> Self {
        Self {
            connection,
            separator: options
                .separator
                .clone()
                .unwrap_or_else(|| names::DEFAULT_SEPARATOR.to_owned()),
            only: options.servers.clone(),
            exclude: options.exclude.clone(),
            builtin: options.builtin,
            own: options
                .session_servers
                .keys()
                .map(|name| (session_name(name, connection), name.clone()))
                .collect(),
        }
    }

    /// The name the client knows registry server `server` by; `None`:
    /// hidden from it.
    pub(crate) fn shown_name<'a>(&'a self, server: &'a str, whose: &Whose) -> Option<&'a str> {
        let shown = match whose.owners.get(server) {
            Some(&owner) if owner != self.connection => return None,
            Some(_) => self.own.get(server).map_or(server, String::as_str),
            None if !self.builtin && whose.built_in.contains(server) => return None,
            // Shadowed by the client's own server of that name.
            None if self.own.values().any(|own| own == server) => return None,
            None => server,
        };
        let selected = self.only.as_ref().is_none_or(|only| only.contains(shown)) && !self.exclude.contains(shown);
        selected.then_some(shown)
    }

    /// The registry name of the server the client calls `shown`, if it may see it.
    pub(crate) fn registry_name(&self, shown: &str, whose: &Whose) -> Option<String> {
        let registry = self
            .own
            .iter()
            .find(|(_, own)| *own == shown)
            .map_or(shown, |(registry, _)| registry.as_str());
        (self.shown_name(registry, whose) == Some(shown)).then(|| registry.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use serde_json::json;

    use super::*;

    fn whose(owners: &[(String, u64)]) -> Whose {
        Whose {
            owners: owners.iter().cloned().collect::<HashMap<_, _>>(),
            built_in: HashSet::from(["corral".to_owned()]),
        }
    }

    fn options(meta: &Value) -> Options {
        Options::from_initialize(Some(&json!({ OPTIONS_KEY: meta }))).expect("valid options")
    }

    #[test]
    fn without_options_a_client_sees_every_config_server_and_the_built_in_one() {
        let view = View::new(7, &Options::from_initialize(None).expect("none"));
        let owners = whose(&[("theirs-c8".to_owned(), 8)]);
        assert_eq!(view.shown_name("github", &owners), Some("github"));
        assert_eq!(view.shown_name("corral", &owners), Some("corral"));
        assert_eq!(view.shown_name("theirs-c8", &owners), None, "another client's server");
        assert_eq!(view.separator, "__");
    }

    #[test]
    fn a_clients_own_servers_have_its_names_and_hide_config_servers_of_the_same_name() {
        let view = View::new(
            7,
            &options(&json!({ "sessionServers": { "github": {"command": "x"}, "proj": {"command": "y"} } })),
        );
        let owners = whose(&[
            (session_name("github", 7), 7),
            (session_name("proj", 7), 7),
            (session_name("proj", 8), 8),
        ]);
        assert_eq!(view.shown_name("github-c7", &owners), Some("github"));
        assert_eq!(view.shown_name("proj-c7", &owners), Some("proj"));
        assert_eq!(view.shown_name("proj-c8", &owners), None);
        assert_eq!(
            view.shown_name("github", &owners),
            None,
            "the config's github is shadowed"
        );
        assert_eq!(view.registry_name("github", &owners).as_deref(), Some("github-c7"));
        assert_eq!(view.registry_name("proj", &owners).as_deref(), Some("proj-c7"));
        assert_eq!(view.registry_name("proj-c8", &owners), None);
        assert_eq!(view.registry_name("other", &owners).as_deref(), Some("other"));
    }

    #[test]
    fn servers_exclude_and_builtin_select_by_the_names_the_client_sees() {
        let view = View::new(
            3,
            &options(&json!({
                "servers": ["a", "mine", "corral"], "exclude": ["a"], "builtin": false,
                "sessionServers": { "mine": {} }, "separator": "."
            })),
        );
        let owners = whose(&[(session_name("mine", 3), 3)]);
        assert_eq!(view.shown_name("a", &owners), None, "excluded wins");
        assert_eq!(view.shown_name("b", &owners), None, "not in --servers");
        assert_eq!(view.shown_name("corral", &owners), None, "--no-builtin");
        assert_eq!(view.shown_name("mine-c3", &owners), Some("mine"));
        assert_eq!(view.separator, ".");
        assert_eq!(view.registry_name("b", &owners), None);
    }

    #[test]
    fn bad_options_are_refused_with_what_is_wrong() {
        for separator in ["", "123456789", "a b", "/", "é"] {
            let params = json!({ "_meta": { OPTIONS_KEY: { "separator": separator } } });
            let error = Options::from_initialize(params.get("_meta")).expect_err(separator);
            assert!(
                error.starts_with(&format!(
                    "invalid separator {separator:?} in `_meta.corral/bridge` of `initialize`: a separator is 1 to 8 \
                     characters"
                )),
                "{error}"
            );
        }
        let longest = "a".repeat(config::MAX_SESSION_SERVER_NAME_BYTES);
        let accepted = options(&json!({ "sessionServers": { longest.clone(): {"command": "x"} } }));
        let registered = session_name(&longest, u64::MAX);
        assert_eq!(config::check_server_name(&registered), Ok(()), "{registered}");
        assert_eq!(accepted.session_servers.len(), 1);
        for name in [format!("{longest}a"), "not ok".to_owned()] {
            let params = json!({ "_meta": { OPTIONS_KEY: { "sessionServers": { name.clone(): {"command": "x"} } } } });
            let error = Options::from_initialize(params.get("_meta")).expect_err(&name);
            assert!(error.contains("`_meta.corral/bridge.sessionServers`"), "{error}");
        }
        let error =
            Options::from_initialize(Some(&json!({ OPTIONS_KEY: { "servers": "a" } }))).expect_err("not a list");
        assert!(error.contains("_meta.corral/bridge"), "{error}");
        let unknown = options(&json!({ "future": 1 }));
        assert!(unknown.builtin, "unknown members are ignored");
    }
}
