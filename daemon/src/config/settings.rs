//! The daemon-wide keys of the config file ([`DaemonSettings`]): read once,
//! at startup; a reload that changes one only warns.

use corral_protocol::config;

/// The daemon-wide keys of the config file. They are read once, at startup
/// (the credential store is opened and the OAuth settings fixed then): a
/// reload that changes one says so in its warnings, and the change takes
/// effect when corrald restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    credentials_store: config::CredentialsStoreMode,
    oauth_callback_port: Option<u16>,
    oauth_callback_url: Option<String>,
    oauth_opener: Option<Vec<String>>,
}

impl DaemonSettings {
    /// The daemon-wide settings of `config`.
    pub fn of(config: &config::Config) -> Self {
        Self {
            credentials_store: config.credentials_store,
            oauth_callback_port: config.oauth_callback_port,
            oauth_callback_url: config.oauth_callback_url.clone(),
            oauth_opener: config.oauth_opener.clone(),
        }
    }

    /// One warning per key whose value in `new` differs from this one.
    pub(super) fn changed_in(&self, new: &Self) -> Vec<String> {
        let changed = [
            ("credentials_store", self.credentials_store != new.credentials_store),
            (
                "oauth_callback_port",
                self.oauth_callback_port != new.oauth_callback_port,
            ),
            ("oauth_callback_url", self.oauth_callback_url != new.oauth_callback_url),
            ("oauth_opener", self.oauth_opener != new.oauth_opener),
        ];
        changed
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| format!("`{key}` changed: it is read when corrald starts; restart corrald to apply it"))
            .collect()
    }
}
