//! [`Auth`]: the daemon's one authentication object, made once at boot and shared as an
//! `Arc<Auth>`. It owns the credential store, the daemon-wide OAuth settings, the logins waiting
//! for the browser, the step-up bookkeeping, the OAuth discovery cache and the shutdown token that
//! ends waiting logins; its methods are the login flow, logout, the step-up decision and
//! `authStatus`.
//!
//! Invariants: its errors are plain data ([`LoginError`], [`LogoutError`], [`StepUpsExhausted`])
//! that the API words (`api::rpc`), and they never carry a token, a code or a URL's path or query
//! (rmcp's messages quote the URLs they fetched: every message from below is cut with
//! [`redact_urls`]); one login per server at a time (a new one cancels the one waiting); at most
//! [`MAX_STEP_UPS`] step-up logins per server within [`STEP_UP_WINDOW`], and a step-up opens no
//! browser where there is none to open ([`Auth::opens_browser_unasked`]). A login's scopes: the
//! explicit ones, else a step-up's (the server's last challenge, remembered in the credential
//! store, was a 403 `insufficient_scope`: the scopes granted so far and the challenge's), else
//! the configured ones, else the last 401 challenge's (rmcp, seeded with that challenge, which
//! also points discovery at the server's current authorization server). A server with a grant
//! for machines (`oauth_grant`) has no login. This room never names the
//! supervisor, the server tasks, the API or the config reloader: the caller hands in the server's
//! config and restarts the server after a login or a logout.
//!
//! The daemon's shutdown ends a waiting login. A logout deletes the stored record under the
//! server's refresh guard (waiting at most 30 s for a refresh in flight), so a refresh cannot
//! write back what was just removed. Stored tokens are never used for, and a login is refused
//! to, a server whose config sets `Authorization` itself. The rest of the authentication rules
//! live where they act: a 401 with stored credentials is `reauthenticationRequired`, without
//! them `authenticationRequired` (`transport::http`'s `login_failure`); a 401 after `ready`
//! that rmcp's one refresh could not cure fails the server, with no restart loop against a
//! refusing provider (the server task).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use corral_protocol::config::{HttpConfig, ServerConfig, TransportConfig};
use corral_protocol::messages::CredentialsStoreStatus;
use corral_protocol::{AuthStatus, FailureReason, McpServerStatus, TransportKind};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::credentials::{Challenge, Credentials, ServerCredentialStore};
use super::oauth::{
    self, DiscoveryCache, LoginTarget, OAuthSettings, UnsafeAuthorizationUrl, explicit_authorization, redact_urls,
};

/// Step-up authorizations allowed per server within [`STEP_UP_WINDOW`]: a server that keeps
/// asking for scopes it never accepts must not open the browser forever.
pub const MAX_STEP_UPS: usize = 2;
/// The window [`MAX_STEP_UPS`] counts in.
pub const STEP_UP_WINDOW: Duration = Duration::from_secs(600);

/// How long a logout waits for a token refresh in flight to finish before it gives up.
const LOGOUT_GUARD_WAIT: Duration = Duration::from_secs(30);

/// Authentication of the daemon's streamable-HTTP servers: see the module docs.
#[derive(Debug)]
pub struct Auth {
    /// Stored OAuth credentials; `None` only in a daemon built without a store (the in-process
    /// test tier).
    credentials: Option<Credentials>,
    /// The config's daemon-wide OAuth settings (callback listener, opener), fixed at start.
    settings: OAuthSettings,
    /// OAuth logins waiting for the browser.
    logins: Logins,
    /// When each server last had a step-up authorization (insufficient scope), to bound them.
    step_ups: StepUps,
    /// OAuth discovery answers reused by `authStatus`.
    discovered: DiscoveryCache,
    /// The daemon's shutdown: ends logins still waiting.
    shutdown: CancellationToken,
    /// The daemon's task tracker: a login's waiting task and its callback
    /// listener are its tasks, so shutdown waits for them (they end with it).
    tasks: TaskTracker,
}

/// Why a login could not start; the API words it (`api::rpc::login_error`).
#[derive(Debug)]
pub enum LoginError {
    /// The server is not a streamable-HTTP server: OAuth is only for those.
    NotHttp,
    /// The server's config sets `Authorization` itself: stored credentials would not be used.
    ExplicitAuthorization,
    /// The server gets its tokens with a grant for machines (`oauth_grant`, named here): there is
    /// nothing to log in to.
    MachineGrant(&'static str),
    /// The daemon has no credential store to keep the tokens in.
    NoCredentialStore,
    /// The server's metadata led to an authorization URL Corral does not open (a protocol error).
    UnsafeAuthorizationUrl(UnsafeAuthorizationUrl),
    /// A step-up nobody asked for would open a browser, and there is none to open: no
    /// `oauth_opener` and no display. The scopes the login would ask for, if known.
    NoBrowser(Option<String>),
    /// Anything else (callback listener, discovery, registration): why, with URLs cut to their
    /// origin.
    Failed(String),
}

/// Why a logout failed; the API words it (`api::rpc::logout_error`).
#[derive(Debug)]
pub enum LogoutError {
    /// A token refresh held the server's refresh guard for longer than a logout waits (30 s).
    RefreshInProgress,
    /// The store could not delete the record: why, with URLs cut to their origin.
    Failed(String),
}

/// A server already had [`MAX_STEP_UPS`] step-up logins within [`STEP_UP_WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUpsExhausted;

/// A login whose authorization URL exists and which now waits for the browser.
#[derive(Debug)]
#[must_use = "a started login stays registered until `finished` is awaited"]
pub struct StartedLogin {
    /// The authorization URL (also handed to the opener): for the caller only, never logged.
    pub authorization_url: String,
    outcome: oneshot::Receiver<Result<(), String>>,
    auth: Arc<Auth>,
    name: String,
    id: u64,
    store: ServerCredentialStore,
}

impl StartedLogin {
    /// Wait until the login ended (the browser came back, it failed, it timed out, or a new login
    /// or the daemon's shutdown cancelled it). `Err` says why it failed, without secrets. A
    /// success answers the server's last challenge: it is forgotten.
    pub async fn finished(self) -> Result<(), String> {
        let outcome = self
            .outcome
            .await
            .unwrap_or_else(|_| Err("the login task ended unexpectedly".to_owned()));
        self.auth.logins.end(&self.name, self.id);
        if outcome.is_ok() {
            self.store.forget_challenge();
        }
        outcome
    }
}

/// A logout's outcome. It holds the server's refresh guard until dropped, so the caller can have
/// the server restarted first: a refresh of the running session cannot save the old grant again
/// after the delete.
#[derive(Debug)]
#[must_use = "dropping it releases the refresh guard at once"]
pub struct LoggedOut {
    /// Whether stored credentials were removed.
    pub removed: bool,
    _refresh_guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Auth {
    /// The daemon's authentication: `credentials` (the store boot opened, if any), the config's
    /// OAuth `settings` as read at start, and the daemon's `shutdown`, which ends waiting logins.
    pub fn new(
        credentials: Option<Credentials>,
        settings: OAuthSettings,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            credentials,
            settings,
            logins: Logins::default(),
            step_ups: StepUps::default(),
            discovered: DiscoveryCache::default(),
            shutdown,
            tasks,
        }
    }

    /// The credential store, for whoever starts servers with stored credentials.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Where the credentials are stored and how the store stands, for `daemon/status` (opening
    /// the store if nothing needed it before: see `credentials`).
    pub async fn credentials_status(&self) -> Option<CredentialsStoreStatus> {
        let credentials = self.credentials.as_ref()?;
        match credentials.status().await {
            Ok(status) => Some(status),
            Err(error) => {
                tracing::error!("the credential store could not be opened: {error:#}");
                None
            }
        }
    }

    fn store(&self, name: &str, http: &HttpConfig) -> Option<ServerCredentialStore> {
        oauth::server_store(self.credentials.as_ref(), name, http)
    }

    /// Fill in `authStatus` (or `authError`) of `statuses`, whose configs are `configs`: every
    /// HTTP server's at once (discovery may take up to its timeout per server).
    pub async fn fill_auth_status(self: &Arc<Self>, statuses: &mut [McpServerStatus], configs: &[ServerConfig]) {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, status) in statuses.iter_mut().enumerate() {
            let config = configs.iter().find(|config| config.name == status.name);
            let http = match (status.transport, config.map(|config| &config.transport)) {
                (TransportKind::StreamableHttp, Some(TransportConfig::StreamableHttp(http))) => http.clone(),
                _ => {
                    status.auth_status = Some(AuthStatus::Unsupported);
                    continue;
                }
            };
            let explicit = config.is_some_and(explicit_authorization);
            let asked_for_login = matches!(
                status.failure_reason,
                Some(FailureReason::AuthenticationRequired | FailureReason::ReauthenticationRequired)
            );
            let store = self.store(&status.name, &http);
            let auth = self.clone();
            tasks.spawn(async move {
                let result = match store {
                    // A grant for machines gets its OAuth tokens by itself: never a login.
                    _ if http.oauth_grant.is_some() && !explicit => Ok(AuthStatus::OAuth),
                    Some(store) => oauth::auth_status(&http, explicit, asked_for_login, &store, &auth.discovered).await,
                    None if explicit => Ok(AuthStatus::BearerToken),
                    None => Ok(AuthStatus::Unsupported),
                };
                (index, result)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let Ok((index, result)) = joined else { continue };
            match result {
                Ok(auth_status) => statuses[index].auth_status = Some(auth_status),
                Err(error) => statuses[index].auth_error = Some(redact_urls(&format!("{error:#}"))),
            }
        }
    }

    /// Start a login for the server `config` describes, replacing one still waiting for it:
    /// answers once the authorization URL exists (and was handed to the opener); the returned
    /// [`StartedLogin`] waits for the browser.
    pub async fn start_login(
        self: &Arc<Self>,
        config: &ServerConfig,
        scopes: Option<Vec<String>>,
    ) -> Result<StartedLogin, LoginError> {
        let name = &config.name;
        let TransportConfig::StreamableHttp(http) = &config.transport else {
            return Err(LoginError::NotHttp);
        };
        if explicit_authorization(config) {
            return Err(LoginError::ExplicitAuthorization);
        }
        if let Some(grant) = &http.oauth_grant {
            return Err(LoginError::MachineGrant(grant.name()));
        }
        let Some(store) = self.store(name, http) else {
            return Err(LoginError::NoCredentialStore);
        };
        // Explicit scopes win; else a step-up's (the last challenge was a 403
        // `insufficient_scope`); else the configured ones, then the 401 challenge's (rmcp).
        let scopes = match scopes.filter(|scopes| !scopes.is_empty()) {
            Some(explicit) => Some(explicit),
            None => step_up_scopes(&store, http).await,
        };
        let target = LoginTarget {
            name: name.clone(),
            http: http.clone(),
            store: store.clone(),
        };
        let (id, token) = self.logins.begin(name, &self.shutdown);
        match oauth::start_login(target, scopes, &self.settings, token, &self.tasks).await {
            Ok(pending) => Ok(StartedLogin {
                authorization_url: pending.authorization_url,
                outcome: pending.outcome,
                auth: self.clone(),
                name: name.clone(),
                id,
                store,
            }),
            Err(error) => {
                self.logins.end(name, id);
                Err(match error.downcast::<UnsafeAuthorizationUrl>() {
                    Ok(unsafe_url) => LoginError::UnsafeAuthorizationUrl(unsafe_url),
                    Err(error) => LoginError::Failed(redact_urls(&format!("{error:#}"))),
                })
            }
        }
    }

    /// A request to server `name` got 403 `insufficient_scope`: count a step-up for it, unless
    /// it already had [`MAX_STEP_UPS`] within [`STEP_UP_WINDOW`]. Counted before the login
    /// starts, so a login that fails counts too.
    pub fn allow_step_up(&self, name: &str) -> Result<(), StepUpsExhausted> {
        self.step_ups.admit(name, Instant::now())
    }

    /// Whether corrald may open a browser nobody asked for (a step-up): with an `oauth_opener`,
    /// on macOS and Windows, and elsewhere only with a display (`DISPLAY` or `WAYLAND_DISPLAY`):
    /// a headless `xdg-open` may start a text browser nobody sees.
    pub fn opens_browser_unasked(&self) -> bool {
        opens_browser_unasked(self.settings.opener.is_some(), |variable| std::env::var_os(variable))
    }

    /// Start the re-authorization of a step-up (after [`Auth::allow_step_up`]) of a server whose
    /// request got 403 `insufficient_scope` asking for `required` (space-separated, as the
    /// challenge says them; `None`: the server task noted the challenge already): a login asking
    /// for the scopes granted so far plus the required ones. Without a browser to open
    /// ([`Auth::opens_browser_unasked`]) it only remembers them for `corral login`.
    pub async fn step_up(
        self: &Arc<Self>,
        config: &ServerConfig,
        required: Option<&str>,
    ) -> Result<StartedLogin, LoginError> {
        let name = &config.name;
        let TransportConfig::StreamableHttp(http) = &config.transport else {
            return Err(LoginError::NotHttp);
        };
        let store = self.store(name, http);
        if let (Some(store), Some(required)) = (&store, required) {
            store.note_challenge(Challenge::insufficient_scope(required));
        }
        if !self.opens_browser_unasked() {
            let scopes = match &store {
                Some(store) => step_up_scopes(store, http).await.map(|scopes| scopes.join(" ")),
                None => required.map(str::to_owned),
            };
            return Err(LoginError::NoBrowser(scopes));
        }
        tracing::info!(server = %name, required, "insufficient scope; starting a step-up authorization");
        self.start_login(config, None).await
    }

    /// Delete the stored credentials of the server `config` describes, under its refresh guard
    /// (as a login's save is): a refresh in flight would otherwise save the refreshed grant after
    /// the delete, and the server would stay logged in. `None`: nothing to log out of (not an
    /// HTTP server, or no store).
    pub async fn logout(&self, config: &ServerConfig) -> Result<Option<LoggedOut>, LogoutError> {
        let name = &config.name;
        let TransportConfig::StreamableHttp(http) = &config.transport else {
            return Ok(None);
        };
        let Some(store) = self.store(name, http) else {
            return Ok(None);
        };
        let guard = tokio::time::timeout(LOGOUT_GUARD_WAIT, store.lock_for_update())
            .await
            .map_err(|_| LogoutError::RefreshInProgress)?;
        let removed = store
            .delete_record()
            .await
            .map_err(|error| LogoutError::Failed(redact_urls(&format!("{error:#}"))))?;
        tracing::info!(server = %name, removed, "logged out");
        Ok(Some(LoggedOut {
            removed,
            _refresh_guard: guard,
        }))
    }
}

/// [`Auth::opens_browser_unasked`], given whether an opener is configured and the environment.
fn opens_browser_unasked(opener: bool, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    if opener || cfg!(any(target_os = "macos", windows)) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|variable| env(variable).is_some_and(|value| !value.is_empty()))
}

/// The scopes of a step-up login of the server `store` belongs to, when its last challenge was a
/// 403 `insufficient_scope`: the scopes granted so far (else the configured ones) and the
/// challenge's (SEP-2350's union: a challenge may name only the missing scope).
async fn step_up_scopes(store: &ServerCredentialStore, http: &HttpConfig) -> Option<Vec<String>> {
    let challenge = store.challenge().filter(|challenge| challenge.insufficient_scope)?;
    let mut scopes = match store.load_record().await {
        Ok(Some(record)) if !record.credentials.granted_scopes.is_empty() => record.credentials.granted_scopes,
        _ => http.scopes.clone(),
    };
    for scope in challenge.scope.iter().flat_map(|scope| scope.split_whitespace()) {
        if !scopes.iter().any(|known| known == scope) {
            scopes.push(scope.to_owned());
        }
    }
    Some(scopes).filter(|scopes| !scopes.is_empty())
}

/// Logins in progress, by server: cancelling one ends its wait.
#[derive(Debug, Default)]
struct Logins {
    pending: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next_id: AtomicU64,
}

impl Logins {
    /// Register a login for `name`, cancelling any earlier one; returns its id and token.
    fn begin(&self, name: &str, parent: &CancellationToken) -> (u64, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = parent.child_token();
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, previous)) = pending.insert(name.to_owned(), (id, token.clone())) {
            previous.cancel();
        }
        (id, token)
    }

    /// Forget `name`'s login if it is still login `id`.
    fn end(&self, name: &str, id: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.get(name).is_some_and(|(current, _)| *current == id) {
            pending.remove(name);
        }
    }
}

/// When each server had its step-up logins, within [`STEP_UP_WINDOW`].
#[derive(Debug, Default)]
struct StepUps {
    recent: Mutex<HashMap<String, Vec<Instant>>>,
}

impl StepUps {
    /// Count a step-up of `name` at `now`, unless it had [`MAX_STEP_UPS`] in the window before.
    fn admit(&self, name: &str, now: Instant) -> Result<(), StepUpsExhausted> {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let times = recent.entry(name.to_owned()).or_default();
        times.retain(|at| now.saturating_duration_since(*at) < STEP_UP_WINDOW);
        if times.len() >= MAX_STEP_UPS {
            return Err(StepUpsExhausted);
        }
        times.push(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_two_step_ups_per_server_in_ten_minutes() {
        let step_ups = StepUps::default();
        let start = Instant::now();
        assert_eq!(step_ups.admit("a", start), Ok(()));
        assert_eq!(step_ups.admit("a", start + Duration::from_secs(1)), Ok(()));
        assert_eq!(
            step_ups.admit("a", start + Duration::from_secs(2)),
            Err(StepUpsExhausted),
            "a third within the window"
        );
        assert_eq!(
            step_ups.admit("b", start + Duration::from_secs(2)),
            Ok(()),
            "counted per server"
        );
        assert_eq!(
            step_ups.admit("a", start + Duration::from_secs(599)),
            Err(StepUpsExhausted),
            "a refusal is not counted, and the window is 10 minutes"
        );
        assert_eq!(
            step_ups.admit("a", start + Duration::from_secs(600)),
            Ok(()),
            "the first one left the window"
        );
        assert_eq!(
            step_ups.admit("a", start + Duration::from_secs(600)),
            Err(StepUpsExhausted),
            "the second one is still in it"
        );
        assert_eq!(step_ups.admit("a", start + Duration::from_secs(601)), Ok(()));
    }

    #[test]
    #[cfg(not(any(target_os = "macos", windows)))]
    fn a_step_up_opens_a_browser_only_with_an_opener_or_a_display() {
        let none = |_: &str| None;
        let display = |variable: &str| (variable == "DISPLAY").then(|| ":0".into());
        let wayland = |variable: &str| (variable == "WAYLAND_DISPLAY").then(|| "wayland-0".into());
        let blank = |_: &str| Some(std::ffi::OsString::new());
        assert!(!opens_browser_unasked(false, none), "headless, no opener");
        assert!(!opens_browser_unasked(false, blank), "an empty DISPLAY is none");
        assert!(opens_browser_unasked(true, none), "the configured opener");
        assert!(opens_browser_unasked(false, display));
        assert!(opens_browser_unasked(false, wayland));
    }

    #[tokio::test]
    async fn a_step_up_asks_for_the_scopes_granted_so_far_and_the_challenged_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = crate::auth::credentials::FileBackend::new(dir.path().join("credentials.json"));
        let status = corral_protocol::messages::CredentialsStoreStatus::new(
            "file",
            corral_protocol::messages::CredentialsBackend::File,
            "test",
        );
        let credentials = Credentials::from_backend(crate::auth::credentials::Backend::File(backend), status);
        let config = corral_protocol::config::parse(
            "[servers.s]\nurl = \"http://127.0.0.1:9/mcp\"\nscopes = [\"configured\"]\n",
            std::path::Path::new("c.toml"),
        )
        .expect("config");
        let TransportConfig::StreamableHttp(http) = &config.servers["s"].transport else {
            panic!("http");
        };
        let store = credentials.for_server("s", &http.url);
        assert_eq!(step_up_scopes(&store, http).await, None, "no challenge: not a step-up");
        store.note_challenge(Challenge::from_header(
            "Bearer scope=\"mcp:basic\", resource_metadata=\"http://127.0.0.1:9/.well-known/oauth-protected-resource\"",
            &http.url,
        ));
        assert_eq!(
            step_up_scopes(&store, http).await,
            None,
            "a 401's challenge is no step-up"
        );
        store.note_challenge(Challenge::from_header(
            "Bearer error=\"insufficient_scope\", scope=\"mcp:write\"",
            &http.url,
        ));
        assert_eq!(
            step_up_scopes(&store, http).await,
            Some(vec!["configured".to_owned(), "mcp:write".to_owned()]),
            "nothing granted yet: the configured scopes and the challenged one"
        );
        let granted: rmcp::transport::auth::StoredCredentials = serde_json::from_value(serde_json::json!({
            "client_id": "c",
            "token_response": { "access_token": "a", "token_type": "Bearer", "expires_in": 3600 },
            "granted_scopes": ["mcp:basic", "mcp:write"],
            "token_received_at": crate::auth::credentials::now_epoch_secs(),
        }))
        .expect("credentials");
        rmcp::transport::auth::CredentialStore::save(&store, granted)
            .await
            .expect("save");
        store.note_challenge(Challenge::insufficient_scope("mcp:admin mcp:write"));
        assert_eq!(
            step_up_scopes(&store, http).await,
            Some(vec![
                "mcp:basic".to_owned(),
                "mcp:write".to_owned(),
                "mcp:admin".to_owned()
            ]),
            "the union, each scope once (SEP-2350)"
        );
        store.forget_challenge();
        assert_eq!(step_up_scopes(&store, http).await, None, "a login answered it");
    }

    #[test]
    fn a_new_login_cancels_the_one_waiting_and_only_the_current_one_is_forgotten() {
        let logins = Logins::default();
        let shutdown = CancellationToken::new();
        let (first, first_token) = logins.begin("s", &shutdown);
        let (second, second_token) = logins.begin("s", &shutdown);
        assert!(first_token.is_cancelled(), "the first login is replaced");
        assert!(!second_token.is_cancelled());
        logins.end("s", first);
        assert!(
            logins
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key("s"),
            "the replaced login's end leaves the new one registered"
        );
        logins.end("s", second);
        assert!(logins.pending.lock().unwrap_or_else(PoisonError::into_inner).is_empty());
        let (_, third_token) = logins.begin("s", &shutdown);
        shutdown.cancel();
        assert!(third_token.is_cancelled(), "the daemon's shutdown ends waiting logins");
    }
}
