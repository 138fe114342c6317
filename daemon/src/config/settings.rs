//! The daemon-wide keys of the config file ([`DaemonSettings`]): read once,
//! at startup; a reload that changes one only warns.

use corral_protocol::config;

use crate::auth::oauth::OAuthSettings;

/// The daemon-wide keys of the config file. They are read once, at startup
/// (the credential store is opened and the OAuth settings fixed then): a
/// reload that changes one says so in its warnings, and the change takes
/// effect when corrald restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    credentials_store: config::CredentialsStoreMode,
    /// The OAuth keys, in the type `auth` uses (one type, owned by `auth`).
    oauth: OAuthSettings,
    /// `[mcp_endpoint]`: the loopback MCP endpoint is started (or not) once.
    mcp_endpoint: config::McpEndpointConfig,
}

impl DaemonSettings {
    /// The daemon-wide settings of `config`.
    pub fn of(config: &config::Config) -> Self {
        Self {
            credentials_store: config.credentials_store,
            oauth: OAuthSettings::from_config(config),
            mcp_endpoint: config.mcp_endpoint.clone(),
        }
    }

    /// The OAuth settings in force (the ones read at startup).
    pub fn oauth(&self) -> &OAuthSettings {
        &self.oauth
    }

    /// One warning per key whose value in `new` differs from this one.
    pub(super) fn changed_in(&self, new: &Self) -> Vec<String> {
        let (oauth, new_oauth) = (&self.oauth, &new.oauth);
        let changed = [
            ("credentials_store", self.credentials_store != new.credentials_store),
            ("oauth_callback_port", oauth.callback_port != new_oauth.callback_port),
            ("oauth_callback_url", oauth.callback_url != new_oauth.callback_url),
            ("oauth_opener", oauth.opener != new_oauth.opener),
            ("mcp_endpoint", self.mcp_endpoint != new.mcp_endpoint),
        ];
        changed
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| format!("`{key}` changed: it is read when corrald starts; restart corrald to apply it"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turning_the_mcp_endpoint_on_asks_for_a_restart() {
        let parse = |text: &str| config::parse(text, std::path::Path::new("config.toml")).expect("a valid config");
        let before = DaemonSettings::of(&parse(""));
        assert!(before.changed_in(&DaemonSettings::of(&parse(""))).is_empty());
        let after = DaemonSettings::of(&parse("[mcp_endpoint]\nenabled = true\n"));
        assert_eq!(
            before.changed_in(&after),
            ["`mcp_endpoint` changed: it is read when corrald starts; restart corrald to apply it"]
        );
    }
}
