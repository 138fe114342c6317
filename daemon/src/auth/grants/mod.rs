//! The grants for machines (`oauth_grant`): a streamable-HTTP server's OAuth tokens obtained by
//! corrald alone, without a browser: `client_credentials` (SEP-1046), `jwt_bearer` (RFC 7523,
//! workload identity, SEP-1933) and `enterprise_managed` (SEP-990: RFC 8693 token exchange at the
//! identity provider for an ID-JAG, then the JWT-bearer grant at the authorization server).
//!
//! [`GrantTokens`] is one server run's token source (the transport's `TokenSource`): it discovers
//! the authorization server once per run (RFC 9728 protected-resource metadata, then RFC 8414,
//! through rmcp), hands out the current token, and runs the grant again when none is held or the
//! one held expires within [`refresh_margin`] (before expiry, never after), and when the server
//! rejected the one held (HTTP 401). The token requests are `token`'s; the secrets are read by
//! `secret` for every grant; the enterprise exchange is rmcp's (`transport::auth::enterprise`).
//!
//! Invariants:
//! - one grant at a time per server: within a run behind the run's own lock, across runs (a
//!   restart while requests are in flight, `authStatus`) behind the server's refresh guard in the
//!   credential store, the one rmcp's refreshes and a login's code exchange take; whoever waited
//!   takes the token the other one got instead of running the grant again;
//! - tokens are stored like a login's ([`CredentialRecord`],
//!   with the authorization server's `issuer` and the client id): a stored token is only used
//!   for the issuer and client it was issued to (after an authorization-server migration, the
//!   grant runs at the new one and the old token is never sent); a store that cannot be read or
//!   written costs only the reuse across runs, never the grant;
//! - secrets are only sent to an `https` token endpoint (or `http` to a loopback host), no
//!   request follows a redirect, and no secret, assertion or token appears in an error or a log
//!   line: errors name the server's grant, the endpoint's origin, the config field and the
//!   variable or file, and the OAuth error the authorization server answered.

mod enterprise;
mod secret;
mod token;

use corral_protocol::FailureReason;
use corral_protocol::config::{ClientAuth, HttpConfig, OAuthGrant, SecretMethod};
use futures_core::future::BoxFuture;
use rmcp::transport::auth::{AuthorizationManager, CredentialStore as _, OAuthTokenResponse, StoredCredentials};
use tokio::sync::{Mutex, OnceCell};

use super::credentials::{CredentialRecord, REFRESH_WINDOW_SECS, ServerCredentialStore, now_epoch_secs};
use crate::logging::redact_urls;
use crate::transport::http::{TokenError, TokenSource};
use token::ClientCredentials;

pub(crate) use secret::read as read_secret;

/// The RFC 7523 grant type.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Why a grant did not yield a token: a failure reason and a sentence without secrets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct GrantError {
    /// How the server fails when this happens at its start.
    pub reason: FailureReason,
    /// What went wrong and what to do.
    pub message: String,
}

impl GrantError {
    fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// A secret or key that cannot be read or used: the config's to fix.
    fn config(message: impl Into<String>) -> Self {
        Self::new(FailureReason::ConfigInvalid, message)
    }
}

/// How long before its expiry a token counts as expired: the credential store's window (30 s),
/// or half the lifetime of a shorter-lived token.
pub fn refresh_margin(lifetime_secs: u64) -> u64 {
    REFRESH_WINDOW_SECS.min(lifetime_secs / 2)
}

/// A token held, with when it stops being used.
#[derive(Clone)]
struct HeldToken {
    access_token: String,
    /// When it counts as expired (expiry minus [`refresh_margin`]); `None`: until rejected.
    renew_at: Option<u64>,
}

impl HeldToken {
    fn usable(&self, now: u64) -> bool {
        self.renew_at.is_none_or(|renew_at| now < renew_at)
    }
}

/// The authorization server of a run, as discovered.
#[derive(Debug, Clone)]
struct AuthorizationServer {
    /// Its issuer identifier (the audience of client assertions, the key of stored tokens).
    issuer: String,
    /// Its token endpoint.
    token_endpoint: reqwest::Url,
    /// `token_endpoint_auth_methods_supported`, if it says.
    auth_methods: Option<Vec<String>>,
}

/// One server run's tokens from its grant for machines: see the module docs.
pub struct GrantTokens {
    server: String,
    grant: OAuthGrant,
    /// The MCP server's URL.
    url: String,
    /// The `resource` of token requests (RFC 8707): `oauth_resource`, else the server's URL.
    resource: String,
    /// `scopes`.
    scopes: Vec<String>,
    store: Option<ServerCredentialStore>,
    http: reqwest::Client,
    /// Discovered at the first grant of the run.
    authorization_server: OnceCell<AuthorizationServer>,
    /// The token of this run; its lock makes the run's grants one at a time.
    held: Mutex<Option<HeldToken>>,
}

impl std::fmt::Debug for GrantTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantTokens")
            .field("server", &self.server)
            .field("grant", &self.grant.name())
            .finish_non_exhaustive()
    }
}

impl GrantTokens {
    /// The token source of one run of server `server` (config `http`, whose `oauth_grant` is
    /// `grant`), storing its tokens in `store` when there is one.
    pub fn new(
        server: &str,
        http: &HttpConfig,
        grant: OAuthGrant,
        store: Option<ServerCredentialStore>,
    ) -> Result<Self, GrantError> {
        Ok(Self {
            server: server.to_owned(),
            grant,
            url: http.url.clone(),
            resource: http.oauth_resource.clone().unwrap_or_else(|| http.url.clone()),
            scopes: http.scopes.clone(),
            store,
            http: token::http_client()?,
            authorization_server: OnceCell::new(),
            held: Mutex::new(None),
        })
    }

    /// A token to send now: the one held, or a new one.
    pub async fn token(&self) -> Result<String, GrantError> {
        let mut held = self.held.lock().await;
        if let Some(token) = held.as_ref().filter(|token| token.usable(now_epoch_secs())) {
            return Ok(token.access_token.clone());
        }
        let token = self.obtain(None).await?;
        let access_token = token.access_token.clone();
        *held = Some(token);
        Ok(access_token)
    }

    /// The server rejected `rejected`: a new token, unless another request already got one.
    pub async fn renew(&self, rejected: &str) -> Result<String, GrantError> {
        let mut held = self.held.lock().await;
        if let Some(token) = held
            .as_ref()
            .filter(|token| token.access_token != rejected && token.usable(now_epoch_secs()))
        {
            return Ok(token.access_token.clone());
        }
        tracing::info!(server = %self.server, grant = self.grant.name(), "the server rejected the token; running the grant again");
        let token = self.obtain(Some(rejected)).await?;
        let access_token = token.access_token.clone();
        *held = Some(token);
        Ok(access_token)
    }

    /// What the grant is called in messages.
    fn stage(&self) -> String {
        format!("the {} grant of `{}`", self.grant.name(), self.server)
    }

    /// The authorization server, discovered at the first call of the run.
    async fn authorization_server(&self) -> Result<&AuthorizationServer, GrantError> {
        self.authorization_server
            .get_or_try_init(|| async {
                let unreachable = |why: String| {
                    GrantError::new(
                        FailureReason::Unreachable,
                        format!("{}: OAuth discovery failed: {}", self.stage(), redact_urls(&why)),
                    )
                };
                let manager = AuthorizationManager::new(self.url.as_str())
                    .await
                    .map_err(|error| unreachable(error.to_string()))?;
                let resolution = manager
                    .resolve_metadata()
                    .await
                    .map_err(|error| unreachable(error.to_string()))?;
                if !resolution.source.is_discovered() {
                    return Err(GrantError::new(
                        FailureReason::ProtocolError,
                        format!(
                            "{}: the server publishes no OAuth metadata (RFC 9728 protected-resource or RFC 8414 \
                             authorization-server metadata), so there is no authorization server to ask",
                            self.stage()
                        ),
                    ));
                }
                let metadata = resolution.metadata;
                let Some(issuer) = metadata.issuer.clone().filter(|issuer| !issuer.is_empty()) else {
                    return Err(GrantError::new(
                        FailureReason::ProtocolError,
                        format!("{}: the authorization server's metadata has no `issuer`", self.stage()),
                    ));
                };
                let token_endpoint = token::secure_endpoint(&metadata.token_endpoint, "token endpoint")
                    .map_err(|error| GrantError::new(error.reason, format!("{}: {}", self.stage(), error.message)))?;
                let auth_methods = metadata
                    .additional_fields
                    .get("token_endpoint_auth_methods_supported")
                    .and_then(|methods| methods.as_array())
                    .map(|methods| {
                        methods
                            .iter()
                            .filter_map(|method| method.as_str().map(str::to_owned))
                            .collect()
                    });
                Ok(AuthorizationServer {
                    issuer,
                    token_endpoint,
                    auth_methods,
                })
            })
            .await
    }

    /// A new token (or one another run stored meanwhile), under the server's refresh guard.
    async fn obtain(&self, rejected: Option<&str>) -> Result<HeldToken, GrantError> {
        let server = self.authorization_server().await?.clone();
        let _guard = match &self.store {
            Some(store) => store.acquire_refresh_guard().await.ok().flatten(),
            None => None,
        };
        // Reuse what another run stored while this one waited, if it was issued by this
        // authorization server to this client and is neither the rejected token nor expiring.
        let stored = match &self.store {
            Some(store) => match store.load_record().await {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::warn!(server = %self.server, "cannot read the stored credentials; the grant's tokens are not stored: {}", redact_urls(&format!("{error:#}")));
                    None
                }
            },
            None => None,
        };
        if let Some(Some(record)) = &stored
            && let Some(token) = self.reusable(record, &server, rejected)
        {
            return Ok(token);
        }
        let issued = self.run(&server).await?;
        let now = now_epoch_secs();
        let renew_at = issued
            .expires_in
            .map(|lifetime| now.saturating_add(lifetime).saturating_sub(refresh_margin(lifetime)));
        tracing::info!(server = %self.server, grant = self.grant.name(), expires_in = ?issued.expires_in, "token obtained");
        // Stored only where the store could be read: an unreadable store is never overwritten.
        if let (Some(store), Some(_)) = (&self.store, &stored)
            && let Err(error) = self.save(store, &server, &issued, now).await
        {
            tracing::warn!(server = %self.server, "cannot store the grant's token (it is used anyway): {}", redact_urls(&format!("{error:#}")));
        }
        Ok(HeldToken {
            access_token: issued.access_token,
            renew_at,
        })
    }

    /// The stored token, if this run may use it.
    fn reusable(
        &self,
        record: &CredentialRecord,
        server: &AuthorizationServer,
        rejected: Option<&str>,
    ) -> Option<HeldToken> {
        use oauth2::TokenResponse as _;
        let credentials = &record.credentials;
        if record.refresh_rejected
            || credentials.issuer.as_deref() != Some(server.issuer.as_str())
            || credentials.client_id != self.grant.client_id().unwrap_or_default()
        {
            return None;
        }
        let response = credentials.token_response.as_ref()?;
        let access_token = response.access_token().secret();
        if access_token.trim().is_empty() || Some(access_token.as_str()) == rejected {
            return None;
        }
        let lifetime = response.expires_in().map(|lifetime| lifetime.as_secs());
        let renew_at = match (credentials.token_received_at, lifetime) {
            (Some(received), Some(lifetime)) => Some(
                received
                    .saturating_add(lifetime)
                    .saturating_sub(refresh_margin(lifetime)),
            ),
            _ => None,
        };
        let token = HeldToken {
            access_token: access_token.clone(),
            renew_at,
        };
        token.usable(now_epoch_secs()).then_some(token)
    }

    /// Store `issued` as the server's record, under `server`'s issuer and the grant's client.
    async fn save(
        &self,
        store: &ServerCredentialStore,
        server: &AuthorizationServer,
        issued: &token::IssuedToken,
        now: u64,
    ) -> anyhow::Result<()> {
        let mut response = serde_json::json!({
            "access_token": issued.access_token,
            "token_type": "Bearer",
        });
        if let Some(lifetime) = issued.expires_in {
            response["expires_in"] = lifetime.into();
        }
        let response: OAuthTokenResponse = serde_json::from_value(response)?;
        let granted = issued
            .scope
            .as_deref()
            .map(|scope| scope.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_else(|| self.scopes.clone());
        let credentials = StoredCredentials::new(
            self.grant.client_id().unwrap_or_default().to_owned(),
            Some(response),
            granted,
            Some(now),
        )
        .with_issuer(Some(server.issuer.clone()));
        store
            .save(credentials)
            .await
            .map_err(|error| anyhow::anyhow!("{error}"))
    }

    /// Run the grant once at `server`.
    async fn run(&self, server: &AuthorizationServer) -> Result<token::IssuedToken, GrantError> {
        let stage = self.stage();
        let scope = self.scopes.join(" ");
        match &self.grant {
            OAuthGrant::ClientCredentials { .. } => {
                let client = self.client_credentials(server)?;
                let mut params = vec![("grant_type", "client_credentials")];
                if !scope.is_empty() {
                    params.push(("scope", &scope));
                }
                params.push(("resource", &self.resource));
                token::request(
                    &self.http,
                    &server.token_endpoint,
                    &server.issuer,
                    &params,
                    &client,
                    &stage,
                    &self.key_field(),
                )
                .await
            }
            OAuthGrant::JwtBearer { assertion, .. } => {
                let client = self.client_credentials(server)?;
                let assertion = secret::read(assertion, "oauth_assertion")?;
                let mut params = vec![("grant_type", JWT_BEARER_GRANT), ("assertion", assertion.expose())];
                if !scope.is_empty() {
                    params.push(("scope", &scope));
                }
                params.push(("resource", &self.resource));
                token::request(
                    &self.http,
                    &server.token_endpoint,
                    &server.issuer,
                    &params,
                    &client,
                    &stage,
                    &self.key_field(),
                )
                .await
            }
            OAuthGrant::EnterpriseManaged {
                client_id,
                auth,
                idp,
                id_token,
            } => {
                let request = enterprise::Exchange {
                    stage: &stage,
                    client_id,
                    auth: self.secret_method(auth, server),
                    idp,
                    id_token,
                    issuer: &server.issuer,
                    token_endpoint: server.token_endpoint.as_str(),
                    resource: &self.resource,
                    scopes: &self.scopes,
                };
                request.run().await
            }
            _ => Err(GrantError::config(format!("{stage}: this grant is not supported"))),
        }
    }

    /// The config field of the private key, for messages.
    fn key_field(&self) -> String {
        match self.grant.client_auth() {
            ClientAuth::PrivateKeyJwt { key, .. } => key.field("oauth_private_key"),
            _ => "oauth_private_key_file".to_owned(),
        }
    }

    /// `auth` with the secret method settled: the one configured, else Basic unless the
    /// authorization server lists `client_secret_post` and not `client_secret_basic`.
    fn secret_method(&self, auth: &ClientAuth, server: &AuthorizationServer) -> ClientAuth {
        match auth {
            ClientAuth::Secret { secret, method: None } => {
                let listed = |name: &str| {
                    server
                        .auth_methods
                        .as_ref()
                        .is_some_and(|methods| methods.iter().any(|method| method == name))
                };
                let method = if listed("client_secret_post") && !listed("client_secret_basic") {
                    SecretMethod::Post
                } else {
                    SecretMethod::Basic
                };
                ClientAuth::Secret {
                    secret: secret.clone(),
                    method: Some(method),
                }
            }
            other => other.clone(),
        }
    }

    /// The client's authentication for one request, its secret or key read now.
    fn client_credentials(&self, server: &AuthorizationServer) -> Result<ClientCredentials, GrantError> {
        let client_id = self.grant.client_id().map(str::to_owned);
        let needs_id = || {
            client_id.clone().ok_or_else(|| {
                GrantError::config(format!(
                    "{}: the client authentication needs oauth_client_id",
                    self.stage()
                ))
            })
        };
        match self.secret_method(self.grant.client_auth(), server) {
            ClientAuth::Secret { secret, method } => Ok(ClientCredentials::Secret {
                client_id: needs_id()?,
                secret: secret::read(&secret, "oauth_client_secret")?,
                method: method.unwrap_or(SecretMethod::Basic),
            }),
            ClientAuth::PrivateKeyJwt { key, algorithm } => Ok(ClientCredentials::PrivateKeyJwt {
                client_id: needs_id()?,
                key: secret::read(&key, "oauth_private_key")?,
                algorithm,
            }),
            _ => Ok(ClientCredentials::None { client_id }),
        }
    }
}

impl TokenSource for GrantTokens {
    fn token(&self) -> BoxFuture<'_, Result<String, TokenError>> {
        Box::pin(async move { GrantTokens::token(self).await.map_err(token_error) })
    }

    fn renew<'a>(&'a self, rejected: &'a str) -> BoxFuture<'a, Result<String, TokenError>> {
        Box::pin(async move { GrantTokens::renew(self, rejected).await.map_err(token_error) })
    }
}

fn token_error(error: GrantError) -> TokenError {
    TokenError {
        reason: error.reason,
        message: error.message,
    }
}
