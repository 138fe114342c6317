//! OAuth for streamable-HTTP servers, on top of rmcp's `auth` feature: the login flow (discovery,
//! registration, PKCE, Corral's own loopback callback listener, the opener), the OAuth-managed
//! HTTP client a server's transport uses afterwards, and `authStatus`.
//!
//! rmcp does the protocol: RFC 9728 / RFC 8414 / OIDC discovery (seeded by the server's
//! `WWW-Authenticate` challenge when there is one), pre-registered client, client ID metadata
//! document or dynamic registration, PKCE S256, the RFC 8707 `resource` parameter, the code
//! exchange and refreshes. Corral adds what rmcp leaves to the application: where credentials are
//! stored (`credentials`), the redirect listener, opening the URL, the scope precedence
//! (explicit > configured `scopes` > the challenge's scope > discovered `scopes_supported`, the
//! last two by rmcp), and what the daemon does with the outcome.
//!
//! A login ([`start_login`]): bind the callback listener (hyper; 127.0.0.1 on a free port
//! unless `oauth_callback_url` / `oauth_callback_port` say otherwise), take the server's last
//! challenge (noted when a request got 401 or 403, `credentials::Challenge`) or else probe the
//! server once for its 401 challenge, let rmcp discover (from that challenge's
//! `resource_metadata`: after the server names a new authorization server, the login registers
//! there), register and build the PKCE authorization URL,
//! check that URL ([`check_authorization_url`]: `https`, or `http` to a loopback host;
//! anything else is a `protocolError` and no opener runs), hand it to the opener, and leave a
//! task waiting for the redirect. The opener is the configured command (the URL as its last
//! argument, no shell) or the system's: `xdg-open` / `open` through the stdio room's opener
//! spawn point, and on Windows `ShellExecuteW`, never `cmd /C start`, which would read `&` and
//! `|` in the URL as command separators. The code exchange stores the tokens through the
//! server's `ServerCredentialStore` under its refresh guard, as a refresh does.
//!
//! `auth_client` gives a server run with stored credentials rmcp's `AuthClient` (the
//! `OAuth` variant of the HTTP backend): one `AuthorizationManager` per run, shared by every
//! transport of the run, so concurrent requests that find the token expired refresh it once,
//! and an expired token is refreshed before the request that needs it (`initialize`
//! included).
//!
//! DPoP ([`super::dpop`]): a login first asks discovery (rmcp's, as the login itself will)
//! whether the authorization server offers DPoP with ES256; if so its manager sends every OAuth
//! request through `dpop::TokenRequestProofs` and the key is stored with the tokens. A run whose
//! record has a key does the same for its refreshes, and a DPoP-bound token gets the `Dpop`
//! variant of the HTTP backend.
//!
//! Invariants: no token, code, client secret or authorization URL appears in a log line (the URL
//! carries the PKCE challenge and state, and goes only to the caller and the opener); a callback
//! whose `state` is not the login's is answered 400 and ignored, so a stray or forged request
//! cannot end or hijack the login; one login per server at a time (`Auth` enforces it).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use corral_protocol::AuthStatus;
use corral_protocol::config::{Config, HttpConfig, ServerConfig, TransportConfig};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use rmcp::transport::auth::{AuthClient, AuthorizationManager, AuthorizationRequest, OAuthClientConfig, OAuthState};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::credentials::{CredentialState, Credentials, ServerCredentialStore};
use crate::auth::dpop::{self, DpopKey, TokenRequestProofs};
use crate::transport::http::{DpopClient, HttpBackend};

/// How long a login waits for the browser to come back.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long discovery requests for `authStatus` and the challenge probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Client name sent in dynamic client registration.
const CLIENT_NAME: &str = "Corral";

/// The daemon-wide OAuth settings of the config, read once at start (`config::settings`
/// warns when a reload changes one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthSettings {
    /// `oauth_callback_port`.
    pub callback_port: Option<u16>,
    /// `oauth_callback_url`.
    pub callback_url: Option<String>,
    /// `oauth_opener`.
    pub opener: Option<Vec<String>>,
}

impl OAuthSettings {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            callback_port: config.oauth_callback_port,
            callback_url: config.oauth_callback_url.clone(),
            opener: config.oauth_opener.clone(),
        }
    }
}

/// A login waiting for the browser: the URL to open, and the task that finishes it.
#[derive(Debug)]
pub struct PendingLogin {
    /// The authorization URL (also handed to the opener).
    pub authorization_url: String,
    /// Resolves when the login ended: `Err` says why it failed, without secrets.
    pub outcome: oneshot::Receiver<Result<(), String>>,
}

/// What a login needs to know about its server.
#[derive(Debug, Clone)]
pub struct LoginTarget {
    /// Server name.
    pub name: String,
    /// Its HTTP config.
    pub http: HttpConfig,
    /// Where its credentials go.
    pub store: ServerCredentialStore,
}

/// The redirect URI and the socket that receives it.
struct CallbackListener {
    listener: tokio::net::TcpListener,
    redirect_uri: String,
    path: String,
}

async fn bind_callback(settings: &OAuthSettings) -> anyhow::Result<CallbackListener> {
    if let Some(callback_url) = &settings.callback_url {
        let url = url::Url::parse(callback_url).context("oauth_callback_url is not a valid URL")?;
        let host = url.host_str().unwrap_or_default();
        let bind_ip: IpAddr = match host.trim_start_matches('[').trim_end_matches(']') {
            "localhost" | "127.0.0.1" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            "::1" => IpAddr::V6(Ipv6Addr::LOCALHOST),
            // The browser reaches a non-loopback callback host from elsewhere: listen on all interfaces.
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let port = settings.callback_port.or(url.port_or_known_default()).unwrap_or(0);
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(bind_ip, port))
            .await
            .with_context(|| format!("cannot listen for the OAuth callback on port {port}"))?;
        return Ok(CallbackListener {
            listener,
            redirect_uri: callback_url.clone(),
            path: url.path().to_owned(),
        });
    }
    let port = settings.callback_port.unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
        .await
        .with_context(|| format!("cannot listen for the OAuth callback on 127.0.0.1:{port}"))?;
    let port = listener.local_addr().context("callback listener address")?.port();
    Ok(CallbackListener {
        listener,
        redirect_uri: format!("http://127.0.0.1:{port}/callback"),
        path: "/callback".to_owned(),
    })
}

/// Ask the server once without credentials: its 401/403 `WWW-Authenticate` challenge seeds
/// discovery (RFC 9728 `resource_metadata`, the required `scope`).
pub async fn probe_challenge(url: &str) -> Option<String> {
    let client = reqwest::Client::builder().timeout(PROBE_TIMEOUT).build().ok()?;
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "corrald", "version": env!("CARGO_PKG_VERSION") },
        },
    });
    let response = client
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .ok()?;
    if !matches!(response.status().as_u16(), 401 | 403) {
        return None;
    }
    let challenge = response.headers().get(reqwest::header::WWW_AUTHENTICATE)?;
    challenge.to_str().ok().map(str::to_owned)
}

/// The client secret of a pre-registered client, from the environment variable or the file the
/// config names.
fn client_secret(http: &HttpConfig) -> anyhow::Result<Option<String>> {
    if let Some(path) = &http.oauth_client_secret_file {
        let source = corral_protocol::config::SecretSource::File(path.clone());
        let secret = super::grants::read_secret(&source, "oauth_client_secret")?;
        return Ok(Some(secret.expose().to_owned()));
    }
    let Some(variable) = &http.oauth_client_secret_env_var else {
        return Ok(None);
    };
    match std::env::var(variable) {
        Ok(secret) if !secret.trim().is_empty() => Ok(Some(secret)),
        Ok(_) => anyhow::bail!("environment variable `{variable}` (oauth_client_secret_env_var) is empty"),
        Err(std::env::VarError::NotPresent) => {
            anyhow::bail!("environment variable `{variable}` (oauth_client_secret_env_var) is not set")
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("environment variable `{variable}` (oauth_client_secret_env_var) is not valid Unicode")
        }
    }
}

/// Start a login: bind the callback listener, discover, register, build the authorization URL,
/// hand it to the opener, and leave a task waiting for the redirect.
pub async fn start_login(
    target: LoginTarget,
    explicit_scopes: Option<Vec<String>>,
    settings: &OAuthSettings,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<PendingLogin> {
    let LoginTarget { name, http, store } = target;
    let secret = client_secret(&http)?;
    let callback = bind_callback(settings).await?;
    // The challenge the server last sent (its scope, its `resource_metadata`), else a probe's.
    let challenge = match store.challenge().and_then(|challenge| challenge.header) {
        Some(header) => Some(header),
        None => probe_challenge(&http.url).await,
    };
    let (key, store) = match dpop_for_login(&http.url, challenge.as_deref(), &store).await? {
        Some(key) => {
            tracing::info!(server = %name, thumbprint = key.thumbprint(), "OAuth login with DPoP-bound tokens");
            let store = store.with_dpop_key(key.to_stored()?);
            (Some(Arc::new(key)), store)
        }
        None => (None, store),
    };
    let mut manager = authorization_manager(&http.url, key)
        .await
        .context("cannot prepare the OAuth login")?;
    manager.set_credential_store(store.clone());
    let mut oauth = OAuthState::Unauthorized(manager);
    let mut request = AuthorizationRequest::new(callback.redirect_uri.clone()).with_client_name(CLIENT_NAME);
    if let Some(client_id) = &http.oauth_client_id {
        request = request.with_preregistered_client(client_id.clone());
        if let Some(secret) = &secret {
            request = request.with_client_secret(secret.clone());
        }
    } else if let Some(metadata_url) = &http.oauth_client_metadata_url {
        request = request.with_client_metadata_url(metadata_url.clone());
    }
    if let Some(challenge) = &challenge {
        request = request.with_challenge(challenge.clone());
    }
    // Explicit > configured; with neither, rmcp takes the challenge's scope, then the
    // discovered `scopes_supported`, then none.
    let scopes = explicit_scopes
        .filter(|scopes| !scopes.is_empty())
        .or_else(|| (!http.scopes.is_empty()).then(|| http.scopes.clone()));
    if let Some(scopes) = scopes {
        request = request.with_scopes(scopes);
    }
    oauth
        .start_authorization(request)
        .await
        .map_err(|error| anyhow::anyhow!("OAuth discovery or client registration failed: {error}"))?;
    let mut authorization_url = oauth
        .get_authorization_url()
        .await
        .map_err(|error| anyhow::anyhow!("cannot build the authorization URL: {error}"))?;
    if let Some(resource) = &http.oauth_resource {
        authorization_url = with_query_param(&authorization_url, "resource", resource);
    }
    // Before anyone sees it: the endpoint comes from the server's metadata, and an opener (a
    // browser, a desktop's URL handler) would act on any scheme it is given.
    check_authorization_url(&authorization_url)?;
    let expected_state = query_param(&authorization_url, "state")
        .ok_or_else(|| anyhow::anyhow!("the authorization URL has no state parameter"))?;
    tracing::info!(server = %name, redirect_uri = %callback.redirect_uri, "OAuth login started");
    open_url(settings.opener.as_deref(), &authorization_url, &name);

    let (outcome_tx, outcome) = oneshot::channel();
    let listener_tasks = tasks.clone();
    tasks.spawn(async move {
        let result = wait_for_callback(
            &name,
            oauth,
            &store,
            callback,
            &expected_state,
            shutdown,
            &listener_tasks,
        )
        .await;
        match &result {
            Ok(()) => tracing::info!(server = %name, "OAuth login completed"),
            Err(error) => tracing::warn!(server = %name, "OAuth login failed: {}", redact_urls(error)),
        }
        let _ = outcome_tx.send(result);
    });
    Ok(PendingLogin {
        authorization_url,
        outcome,
    })
}

/// The `AuthorizationManager` of a server at `url`, for a login, a run or any grant: rmcp's own,
/// or, with the server's DPoP key, one whose token requests carry proofs
/// ([`TokenRequestProofs`]).
pub(crate) async fn authorization_manager(
    url: &str,
    dpop_key: Option<Arc<DpopKey>>,
) -> anyhow::Result<AuthorizationManager> {
    let manager = match dpop_key {
        Some(key) => {
            AuthorizationManager::new_with_oauth_http_client(url, Arc::new(TokenRequestProofs::new(key, url)?)).await
        }
        None => AuthorizationManager::new(url).await,
    };
    manager.map_err(|error| anyhow::anyhow!("{error}"))
}

/// The DPoP key a login uses: `Some` when the authorization server's metadata (discovered as
/// rmcp's login will, seeded by the challenge) offers DPoP with ES256; the key stored for the
/// server when it has a usable one, else a new one. Discovery that fails here is left to the
/// login to report.
async fn dpop_for_login(
    url: &str,
    challenge: Option<&str>,
    store: &ServerCredentialStore,
) -> anyhow::Result<Option<DpopKey>> {
    let discovered = async {
        let manager = AuthorizationManager::new(url).await.ok()?;
        manager.resolve_metadata_from_challenge(challenge).await.ok()
    };
    let advertised = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, discovered).await,
        Ok(Some(resolution)) if dpop::advertises_dpop(&resolution.metadata)
    );
    if !advertised {
        return Ok(None);
    }
    // A record that cannot be read (a corrupt key among them) is replaced by this login.
    match store.dpop_key().await {
        Ok(Some(key)) => Ok(Some(key)),
        _ => DpopKey::generate().map(Some),
    }
}

/// The authorization URL a server's metadata led to is not one Corral opens: the API answers
/// `protocolError`. The message names the scheme or host, never the whole URL (it may carry
/// secrets in its query).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnsafeAuthorizationUrl(String);

/// URLs in errors and log lines are cut to their origin: see [`crate::logging::redact_urls`].
pub use crate::logging::redact_urls;

/// Accept only `https` URLs with a host, and `http` to a loopback host (`localhost`, 127.0.0.0/8,
/// `::1`: a local authorization server). Anything else (`file:`, `javascript:`, `smb:`, a
/// registered app's scheme, plain http across the network) is refused before an opener sees it.
pub fn check_authorization_url(url: &str) -> Result<(), UnsafeAuthorizationUrl> {
    let refuse = |why: String| {
        Err(UnsafeAuthorizationUrl(format!(
            "the authorization server's authorization_endpoint {why}; Corral only opens https URLs (or http to a loopback host)"
        )))
    };
    let Ok(parsed) = url::Url::parse(url) else {
        return refuse("is not a valid URL".to_owned());
    };
    let host = parsed.host();
    match (parsed.scheme(), host) {
        ("https", Some(_)) => Ok(()),
        ("http", Some(host)) if is_loopback_host(&host) => Ok(()),
        ("http", Some(host)) => refuse(format!("uses plain http to `{host}`, which is not a loopback host")),
        (scheme @ ("http" | "https"), None) => refuse(format!("is an {scheme} URL without a host")),
        (scheme, _) => refuse(format!("has scheme `{scheme}`")),
    }
}

fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(domain) => domain.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(address) => address.is_loopback(),
        url::Host::Ipv6(address) => address.is_loopback(),
    }
}

/// One request to the callback listener, answered by the login task.
struct CallbackHit {
    query: HashMap<String, String>,
    reply: oneshot::Sender<(StatusCode, String)>,
}

async fn wait_for_callback(
    name: &str,
    mut oauth: OAuthState,
    store: &ServerCredentialStore,
    callback: CallbackListener,
    expected_state: &str,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), String> {
    let (hits_tx, mut hits) = mpsc::channel::<CallbackHit>(8);
    let stop_listening = CancellationToken::new();
    let path = Arc::<str>::from(callback.path.as_str());
    tasks.spawn(serve_callback(
        callback.listener,
        path,
        hits_tx,
        stop_listening.clone(),
        tasks.clone(),
    ));
    let _stop = stop_listening.drop_guard();
    let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    loop {
        let hit = tokio::select! {
            hit = hits.recv() => match hit {
                Some(hit) => hit,
                None => return Err("the callback listener stopped".to_owned()),
            },
            () = tokio::time::sleep_until(deadline) => {
                return Err(format!("no answer from the browser within {} s", LOGIN_TIMEOUT.as_secs()));
            }
            () = shutdown.cancelled() => {
                return Err("cancelled: a new login for this server started, or corrald is shutting down".to_owned());
            }
        };
        let state = hit.query.get("state").map(String::as_str);
        if state != Some(expected_state) {
            // Not this login's redirect (stale tab, forged request): refuse it and keep waiting.
            tracing::warn!(server = %name, "OAuth callback with a state that is not this login's; ignored");
            let _ = hit.reply.send((
                StatusCode::BAD_REQUEST,
                page(
                    "Invalid OAuth callback",
                    "This link does not belong to the login Corral is waiting for.",
                ),
            ));
            continue;
        }
        if let Some(error) = hit.query.get("error") {
            let description = hit.query.get("error_description").map_or("", String::as_str);
            let message = if description.is_empty() {
                format!("the authorization server refused: {error}")
            } else {
                format!("the authorization server refused: {description} ({error})")
            };
            let _ = hit
                .reply
                .send((StatusCode::BAD_REQUEST, page("Login failed", &message)));
            return Err(message);
        }
        let Some(code) = hit.query.get("code") else {
            let message = "the redirect carried neither a code nor an error".to_owned();
            let _ = hit
                .reply
                .send((StatusCode::BAD_REQUEST, page("Login failed", &message)));
            return Err(message);
        };
        let issuer = hit.query.get("iss").map(String::as_str);
        return match exchange_code(&mut oauth, store, code, expected_state, issuer).await {
            Ok(()) => {
                let _ = hit.reply.send((
                    StatusCode::OK,
                    page(
                        "Logged in",
                        &format!("Corral is now logged in to {name}. You can close this window."),
                    ),
                ));
                Ok(())
            }
            Err(error) => {
                let message = redact_urls(&format!("exchanging the authorization code failed: {error}"));
                let _ = hit
                    .reply
                    .send((StatusCode::BAD_GATEWAY, page("Login failed", &message)));
                Err(message)
            }
        };
    }
}

/// Exchange the authorization code for tokens; rmcp stores them through `store`. Under the
/// server's refresh guard, as a refresh is (load → exchange → save): a refresh in flight saves
/// first and the new grant after it, never the other way round.
async fn exchange_code(
    oauth: &mut OAuthState,
    store: &ServerCredentialStore,
    code: &str,
    state: &str,
    issuer: Option<&str>,
) -> Result<(), rmcp::transport::auth::AuthError> {
    let _guard = store.lock_for_update().await;
    oauth.handle_callback_with_issuer(code, state, issuer).await
}

/// A small HTML page; `text` is escaped.
fn page(title: &str, text: &str) -> String {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Corral: {title}</title></head>\
         <body><h1>{title}</h1><p>{text}</p></body></html>\n",
        title = escape(title),
        text = escape(text)
    )
}

/// Serve the callback path until `stop`: every request on it goes to the login task.
async fn serve_callback(
    listener: tokio::net::TcpListener,
    path: Arc<str>,
    hits: mpsc::Sender<CallbackHit>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "OAuth callback listener: accept failed");
                    continue;
                }
            },
        };
        let path = path.clone();
        let hits = hits.clone();
        // Not cancelled with the listener: the last answer (the success or error page) is
        // written after the login task has finished. Bounded instead.
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let path = path.clone();
                let hits = hits.clone();
                async move { Ok::<_, Infallible>(answer_callback(request, &path, &hits).await) }
            });
            // One request per connection: a browser that keeps the connection
            // open after the page must not hold this task (and the daemon's
            // shutdown, which waits for it) until the timeout.
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
        });
    }
}

async fn answer_callback(
    request: Request<hyper::body::Incoming>,
    path: &str,
    hits: &mpsc::Sender<CallbackHit>,
) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response
    };
    if request.uri().path() != path {
        return respond(StatusCode::NOT_FOUND, page("Not found", "Nothing here."));
    }
    let query: HashMap<String, String> = url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let (reply_tx, reply) = oneshot::channel();
    if hits.send(CallbackHit { query, reply: reply_tx }).await.is_err() {
        return respond(
            StatusCode::GONE,
            page("Login over", "Corral is no longer waiting for this login."),
        );
    }
    match reply.await {
        Ok((status, body)) => respond(status, body),
        Err(_) => respond(
            StatusCode::GONE,
            page("Login over", "Corral is no longer waiting for this login."),
        ),
    }
}

/// `url` with query parameter `name` set to `value` (replacing any).
fn with_query_param(url: &str, name: &str, value: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(key, _)| key != name)
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair(name, value);
    parsed.to_string()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    parsed
        .query_pairs()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Hand the URL (checked by [`check_authorization_url`]) to the opener: the configured command
/// (the URL as its last argument, no shell), else the system browser. Failing to open is not
/// fatal: the URL was returned to the caller too.
fn open_url(opener: Option<&[String]>, url: &str, server: &str) {
    let opened = match opener {
        Some(argv) => {
            let argv: Vec<String> = argv.iter().cloned().chain(std::iter::once(url.to_owned())).collect();
            crate::transport::stdio::spawn_opener(&argv)
        }
        None => open_in_system_browser(url, server),
    };
    if let Err(error) = opened {
        tracing::warn!(
            server,
            "cannot open the authorization URL (it was returned to the caller): {error:#}"
        );
    }
}

#[cfg(target_os = "macos")]
fn open_in_system_browser(url: &str, _server: &str) -> anyhow::Result<()> {
    crate::transport::stdio::spawn_opener(&["open".to_owned(), url.to_owned()])
}

/// Windows: no shell (`cmd /C start "" URL` read `&` and `|` in the URL as command separators);
/// the shell's URL handler through `ShellExecuteW`, which may block (DDE), so on a blocking thread.
#[cfg(windows)]
fn open_in_system_browser(url: &str, server: &str) -> anyhow::Result<()> {
    let url = url.to_owned();
    let server = server.to_owned();
    tokio::task::spawn_blocking(move || {
        if let Err(error) = crate::transport::stdio::shell_open_url(&url) {
            tracing::warn!(
                server,
                "cannot open the authorization URL (it was returned to the caller): {error:#}"
            );
        }
    });
    Ok(())
}

#[cfg(not(any(target_os = "macos", windows)))]
fn open_in_system_browser(url: &str, _server: &str) -> anyhow::Result<()> {
    crate::transport::stdio::spawn_opener(&["xdg-open".to_owned(), url.to_owned()])
}

/// The OAuth-managed HTTP client for a server with stored credentials, or `None` when it has
/// none, or none rmcp kept (then the plain client goes out unauthenticated and a 401 says a login
/// is needed): stored credentials bound to another authorization server than the one the
/// server's protected-resource metadata names now are deleted unused.
///
/// One per server run, cloned into every transport of that run, so every request shares one
/// `AuthorizationManager` behind one mutex: concurrent requests that find the token expired
/// refresh it once (the second waits for the lock, then reads the refreshed token). The store's
/// refresh guard extends that to managers of other runs.
///
/// A record with a DPoP key gets proofs on its token requests (refreshes); a DPoP-bound access
/// token is presented as `DPoP` with a proof on every MCP request ([`HttpBackend::Dpop`]).
pub(crate) async fn auth_client(
    http: &HttpConfig,
    store: &ServerCredentialStore,
    base: reqwest::Client,
) -> anyhow::Result<Option<HttpBackend>> {
    let Some(record) = store.load_record().await? else {
        return Ok(None);
    };
    let dpop_bound = record.dpop_bound();
    let key = store.dpop_key().await?.map(Arc::new);
    let mut manager = authorization_manager(&http.url, key.clone())
        .await
        .context("cannot prepare OAuth")?;
    manager.set_credential_store(store.clone());
    // rmcp discards credentials bound to an issuer other than the one the server's metadata names
    // now (SEP-2352): they are never sent to the new authorization server.
    let stored_issuer = store.load_record().await?.and_then(|record| record.credentials.issuer);
    let restored = manager
        .initialize_from_store()
        .await
        .map_err(|error| anyhow::anyhow!("cannot use the stored OAuth credentials: {error}"))?;
    if !restored {
        if stored_issuer.is_some() && store.state().await? == CredentialState::Missing {
            tracing::warn!(
                server = %store.server(),
                "the server names another authorization server now; the credentials of the former one were deleted, a new login registers there"
            );
        }
        return Ok(None);
    }
    if let (Some(client_id), Some(secret)) = (&http.oauth_client_id, client_secret(http)?) {
        // A confidential client refreshes with its secret, which is not stored.
        let config = OAuthClientConfig::new(client_id.clone(), "http://127.0.0.1/callback").with_client_secret(secret);
        manager
            .configure_client(config)
            .map_err(|error| anyhow::anyhow!("cannot configure the OAuth client: {error}"))?;
    }
    Ok(Some(match key {
        Some(key) if dpop_bound => HttpBackend::Dpop(AuthClient::new(DpopClient::new(base, key), manager)),
        _ => HttpBackend::OAuth(AuthClient::new(base, manager)),
    }))
}

/// Whether the config sets `Authorization` itself (a header, static or from the environment, or
/// `bearer_token_env_var`): then stored OAuth tokens are never used, a login is refused, and the
/// `authStatus` is `bearerToken`.
pub(crate) fn explicit_authorization(config: &ServerConfig) -> bool {
    match &config.transport {
        TransportConfig::StreamableHttp(http) => crate::transport::http::configures_authorization(http),
        _ => false,
    }
}

/// `authStatus` of an HTTP server, without starting it: an explicit `Authorization` →
/// `bearerToken`; stored credentials → `oAuth` if usable, `notLoggedIn` if a login is needed;
/// none → `notLoggedIn` when the server asked for a login (its last start failed with 401) or
/// publishes OAuth metadata (RFC 9728 / RFC 8414 well-known documents), else `unsupported`.
/// `Err` when the store cannot be read: never reported as logged out.
pub async fn auth_status(
    http: &HttpConfig,
    explicit_authorization: bool,
    asked_for_login: bool,
    store: &ServerCredentialStore,
    discovered: &DiscoveryCache,
) -> anyhow::Result<AuthStatus> {
    if explicit_authorization {
        return Ok(AuthStatus::BearerToken);
    }
    match store.state().await? {
        CredentialState::Usable => return Ok(AuthStatus::OAuth),
        CredentialState::AuthorizationRequired => return Ok(AuthStatus::NotLoggedIn),
        CredentialState::Missing => {}
    }
    if asked_for_login || publishes_oauth_metadata(discovered, &http.url).await {
        Ok(AuthStatus::NotLoggedIn)
    } else {
        Ok(AuthStatus::Unsupported)
    }
}

/// How long a discovery answer is reused by `authStatus`: `mcpServer/list` must not send a
/// round of well-known requests to every server each time a front-end refreshes its view.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// Discovery answers by URL, with when they were found, for `authStatus`. A cache, not state:
/// losing it costs one discovery per server. One per daemon, owned by [`super::Auth`].
#[derive(Debug, Default)]
pub struct DiscoveryCache {
    found: std::sync::Mutex<HashMap<String, (std::time::Instant, bool)>>,
}

/// Whether rmcp's discovery finds OAuth metadata for the server (GETs of well-known documents
/// only: listing servers must not open MCP sessions). Bounded by [`PROBE_TIMEOUT`], reused for
/// [`DISCOVERY_TTL`].
async fn publishes_oauth_metadata(cache: &DiscoveryCache, url: &str) -> bool {
    let cached = cache
        .found
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(url)
        .filter(|(at, _)| at.elapsed() < DISCOVERY_TTL)
        .map(|(_, found)| *found);
    if let Some(found) = cached {
        return found;
    }
    let discovered = async {
        let manager = AuthorizationManager::new(url).await.ok()?;
        manager.resolve_metadata().await.ok()
    };
    let found = matches!(tokio::time::timeout(PROBE_TIMEOUT, discovered).await, Ok(Some(_)));
    cache
        .found
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(url.to_owned(), (std::time::Instant::now(), found));
    found
}

/// The credential store of a server, if the daemon has one.
pub fn server_store(credentials: Option<&Credentials>, name: &str, http: &HttpConfig) -> Option<ServerCredentialStore> {
    credentials.map(|credentials| credentials.for_server(name, &http.url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_override_replaces_the_parameter() {
        let url = "https://auth.example/authorize?client_id=c&resource=https%3A%2F%2Fa&state=s";
        let replaced = with_query_param(url, "resource", "https://b.example/");
        assert_eq!(
            query_param(&replaced, "resource").as_deref(),
            Some("https://b.example/")
        );
        assert_eq!(query_param(&replaced, "state").as_deref(), Some("s"));
        assert_eq!(replaced.matches("resource=").count(), 1, "{replaced}");
    }

    #[test]
    fn only_https_and_loopback_http_authorization_urls_are_opened() {
        for url in [
            "https://auth.example.com/authorize?state=s",
            "http://127.0.0.1:8080/authorize",
            "http://127.9.9.9/authorize",
            "http://localhost:1/authorize",
            "http://LOCALHOST/authorize",
            "http://[::1]:8080/authorize",
        ] {
            assert!(check_authorization_url(url).is_ok(), "{url}");
        }
        for (url, named) in [
            ("file:///etc/passwd?state=s", "`file`"),
            ("javascript:alert(1)//?state=s", "`javascript`"),
            ("smb://attacker.example/share", "`smb`"),
            ("ms-settings:privacy", "`ms-settings`"),
            ("HTTP://auth.example.com/authorize", "`auth.example.com`"),
            ("http://localhost.evil.example/authorize", "`localhost.evil.example`"),
            ("http://10.0.0.1/authorize", "`10.0.0.1`"),
            ("not a url", "not a valid URL"),
        ] {
            let error = check_authorization_url(url).expect_err(url).to_string();
            assert!(error.contains(named), "{url}: {error}");
            assert!(!error.contains(url), "{url}: the URL is not quoted: {error}");
        }
    }

    /// A token endpoint on loopback: answers a code exchange at once with the login's tokens;
    /// holds a refresh (reporting it on `refresh_arrived`) until `release_refresh` fires, then
    /// answers with the refreshed old grant.
    async fn token_endpoint(refresh_arrived: oneshot::Sender<()>, release_refresh: oneshot::Receiver<()>) -> String {
        use http_body_util::BodyExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let hold = Arc::new(tokio::sync::Mutex::new((Some(refresh_arrived), Some(release_refresh))));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let hold = hold.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let hold = hold.clone();
                        async move {
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|body| body.to_bytes())
                                .unwrap_or_default();
                            let form: HashMap<String, String> =
                                url::form_urlencoded::parse(&body).into_owned().collect();
                            let tokens = if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
                                let (arrived, release) = {
                                    let mut hold = hold.lock().await;
                                    (hold.0.take(), hold.1.take())
                                };
                                if let Some(arrived) = arrived {
                                    let _ = arrived.send(());
                                }
                                if let Some(release) = release {
                                    let _ = release.await;
                                }
                                ("refreshed-old-access", "refreshed-old-refresh")
                            } else {
                                ("login-access", "login-refresh")
                            };
                            let json = serde_json::json!({
                                "access_token": tokens.0,
                                "refresh_token": tokens.1,
                                "token_type": "Bearer",
                                "expires_in": 3600,
                            });
                            let mut response = Response::new(Full::new(Bytes::from(json.to_string())));
                            response.headers_mut().insert(
                                hyper::header::CONTENT_TYPE,
                                hyper::header::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        format!("http://{address}")
    }

    async fn manager_for(base: &str, store: &ServerCredentialStore) -> AuthorizationManager {
        let mut manager = AuthorizationManager::new(format!("{base}/mcp")).await.expect("manager");
        let mut metadata = rmcp::transport::auth::AuthorizationMetadata::default();
        metadata.authorization_endpoint = format!("{base}/authorize");
        metadata.token_endpoint = format!("{base}/token");
        manager.set_metadata(metadata);
        manager.set_credential_store(store.clone());
        manager
    }

    /// A refresh in flight when a login's code exchange completes must not overwrite the new
    /// grant: the exchange and its save wait for the refresh's guard. Deterministic: the refresh
    /// is held at the token endpoint, and it is released only once the login has either stored
    /// its grant (the bug) or is waiting for the guard (the fix).
    #[tokio::test]
    async fn a_refresh_in_flight_does_not_overwrite_a_new_login() {
        const WAIT: Duration = Duration::from_secs(20);
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = crate::auth::credentials::FileBackend::new(dir.path().join("credentials.json"));
        let status = corral_protocol::messages::CredentialsStoreStatus::new(
            "file",
            corral_protocol::messages::CredentialsBackend::File,
            "test",
        );
        let credentials = Credentials::from_backend(crate::auth::credentials::Backend::File(backend), status);
        let (refresh_arrived_tx, refresh_arrived) = oneshot::channel();
        let (release_refresh, release_refresh_rx) = oneshot::channel();
        let base = token_endpoint(refresh_arrived_tx, release_refresh_rx).await;
        let store = credentials.for_server("s", &format!("{base}/mcp"));
        let old: rmcp::transport::auth::StoredCredentials = serde_json::from_value(serde_json::json!({
            "client_id": "corral-test-client",
            "token_response": {
                "access_token": "old-access", "refresh_token": "old-refresh",
                "token_type": "Bearer", "expires_in": 3600,
            },
            "granted_scopes": [],
            "token_received_at": crate::auth::credentials::now_epoch_secs(),
        }))
        .expect("credentials");
        rmcp::transport::auth::CredentialStore::save(&store, old)
            .await
            .expect("save");

        // The server's run refreshes; the token endpoint holds the answer.
        let mut running = manager_for(&base, &store).await;
        running
            .configure_client(OAuthClientConfig::new(
                "corral-test-client",
                "http://127.0.0.1/callback",
            ))
            .expect("client");
        let refresh = tokio::spawn(async move { running.refresh_token().await.map(|_| ()) });
        tokio::time::timeout(WAIT, refresh_arrived)
            .await
            .expect("the refresh reached the token endpoint")
            .expect("sender kept");

        // Meanwhile a login completes its redirect.
        let session = rmcp::transport::auth::AuthorizationSession::new(
            manager_for(&base, &store).await,
            AuthorizationRequest::new("http://127.0.0.1/callback")
                .with_preregistered_client("corral-test-client")
                .with_scopes(["read"]),
        )
        .await
        .map_err(|(_, error)| error)
        .expect("session");
        let state = query_param(session.get_authorization_url(), "state").expect("state");
        let login_store = store.clone();
        let mut login = tokio::spawn(async move {
            let mut oauth = OAuthState::Session(session);
            exchange_code(&mut oauth, &login_store, "the-code", &state, None).await
        });
        // Release the refresh once the login stored its grant or waits for the guard.
        let login_done = tokio::time::timeout(WAIT, async {
            loop {
                tokio::select! {
                    joined = &mut login => return Some(joined),
                    () = tokio::time::sleep(Duration::from_millis(5)) => {
                        if credentials.guard_waiters() > 0 {
                            return None;
                        }
                    }
                }
            }
        })
        .await
        .expect("the login neither finished nor waited for the guard");
        let _ = release_refresh.send(());
        tokio::time::timeout(WAIT, refresh)
            .await
            .expect("the refresh ends")
            .expect("refresh task")
            .expect("the refresh succeeds");
        let login_result = match login_done {
            Some(joined) => joined,
            None => tokio::time::timeout(WAIT, login).await.expect("the login ends"),
        };
        login_result.expect("login task").expect("the code exchange succeeds");

        let stored = store.load_record().await.expect("load").expect("stored");
        let access = serde_json::to_value(&stored.credentials.token_response).expect("json")["access_token"].clone();
        assert_eq!(
            access, "login-access",
            "the refreshed old grant overwrote the new login"
        );
    }

    #[test]
    fn pages_escape_what_the_provider_sent() {
        let html = page("Login failed", "<script>alert(1)</script> & more");
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"),
            "{html}"
        );
    }
}
