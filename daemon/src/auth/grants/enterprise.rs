//! `enterprise_managed` (SEP-990) on rmcp's `transport::auth::enterprise`: the user's ID token
//! exchanged at the configured identity provider for an ID-JAG (RFC 8693), redeemed at the MCP
//! server's authorization server with the JWT-bearer grant (RFC 7523). rmcp checks the ID-JAG's
//! bindings (its issuer is the identity provider, its audience the authorization server, its
//! client ours, its resource the server's) and never retries or follows redirects; corrald brings
//! the configuration, the secrets (read for each exchange) and the `private_key_jwt` assertions,
//! and words rmcp's sanitized errors.

use std::sync::Arc;

use corral_protocol::FailureReason;
use corral_protocol::config::{ClientAuth, IdentityProvider, SecretMethod, SecretSource};
use oauth2::ClientSecret;
use rmcp::transport::auth::enterprise::{
    EmaAuthorizationServer, EmaClientAssertion, EmaClientAssertionProvider, EmaClientAuthentication, EmaError,
    EmaExchangeRequest, EmaExchangeStage,
};

use super::token::{self, IssuedToken};
use super::{GrantError, secret};

/// One enterprise-managed exchange, as configured and discovered.
pub(super) struct Exchange<'a> {
    /// "the enterprise_managed grant of `NAME`".
    pub(super) stage: &'a str,
    /// `oauth_client_id`: the client at the authorization server.
    pub(super) client_id: &'a str,
    /// Its authentication there, the secret method settled.
    pub(super) auth: ClientAuth,
    /// The identity provider.
    pub(super) idp: &'a IdentityProvider,
    /// Where the user's ID token is.
    pub(super) id_token: &'a SecretSource,
    /// The authorization server's issuer and token endpoint.
    pub(super) issuer: &'a str,
    pub(super) token_endpoint: &'a str,
    /// The MCP server's resource identifier.
    pub(super) resource: &'a str,
    /// `scopes`.
    pub(super) scopes: &'a [String],
}

impl Exchange<'_> {
    /// Both exchanges, once, without retries.
    pub(super) async fn run(self) -> Result<IssuedToken, GrantError> {
        let stage = self.stage;
        let id_token = secret::read(self.id_token, "oauth_id_token")?;
        let idp_auth = match &self.idp.client_secret {
            Some(source) => EmaClientAuthentication::ClientSecretBasic(ClientSecret::new(
                secret::read(source, "oauth_idp_client_secret")?.expose().to_owned(),
            )),
            None => EmaClientAuthentication::None,
        };
        let idp = EmaAuthorizationServer::new(&self.idp.issuer, &self.idp.token_endpoint, &self.idp.client_id)
            .with_client_authentication(idp_auth);
        let resource_auth = match &self.auth {
            ClientAuth::Secret { secret, method } => {
                let secret = ClientSecret::new(secret::read(secret, "oauth_client_secret")?.expose().to_owned());
                match method {
                    Some(SecretMethod::Post) => EmaClientAuthentication::ClientSecretPost(secret),
                    _ => EmaClientAuthentication::ClientSecretBasic(secret),
                }
            }
            ClientAuth::PrivateKeyJwt { key, algorithm } => {
                let key_field = key.field("oauth_private_key");
                // Read and tried now, so a bad key is reported as such rather than as a failed request.
                let key = secret::read(key, "oauth_private_key")?;
                token::client_assertion(self.client_id, self.issuer, &key, *algorithm, &key_field)?;
                EmaClientAuthentication::JwtAssertion(Arc::new(KeyAssertions {
                    client_id: self.client_id.to_owned(),
                    key,
                    algorithm: *algorithm,
                    key_field,
                }))
            }
            _ => EmaClientAuthentication::None,
        };
        let resource_as = EmaAuthorizationServer::new(self.issuer, self.token_endpoint, self.client_id)
            .with_client_authentication(resource_auth);
        let http = rmcp::transport::auth::default_oauth_http_client().map_err(|error| {
            GrantError::new(
                FailureReason::ConfigInvalid,
                format!("{stage}: cannot build an HTTP client: {error}"),
            )
        })?;
        let exchanged = EmaExchangeRequest::new_with_id_token(idp, resource_as, self.resource, id_token.expose())
            .with_scopes(self.scopes.iter().cloned())
            .exchange(&http, &http)
            .await
            .map_err(|error| ema_error(stage, &error))?;
        let mut scopes: Vec<&str> = exchanged.scopes.iter().map(String::as_str).collect();
        scopes.sort_unstable();
        Ok(IssuedToken {
            access_token: exchanged.access_token.secret().clone(),
            expires_in: exchanged.expires_in.map(|lifetime| lifetime.as_secs()),
            scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
        })
    }
}

/// Signs a fresh `private_key_jwt` assertion for each request rmcp makes to the authorization
/// server.
struct KeyAssertions {
    client_id: String,
    key: secret::Secret,
    algorithm: corral_protocol::config::JwtAlgorithm,
    key_field: String,
}

#[async_trait::async_trait]
impl EmaClientAssertionProvider for KeyAssertions {
    async fn create_assertion(
        &self,
        server: &EmaAuthorizationServer,
    ) -> Result<EmaClientAssertion, Box<dyn std::error::Error + Send + Sync>> {
        let assertion = token::client_assertion(
            &self.client_id,
            &server.issuer,
            &self.key,
            self.algorithm,
            &self.key_field,
        )?;
        Ok(EmaClientAssertion::new(assertion))
    }
}

/// rmcp's sanitized error, said with the stage and what to do.
fn ema_error(stage: &str, error: &EmaError) -> GrantError {
    let at = |which: &EmaExchangeStage| match which {
        EmaExchangeStage::IdentityProvider => "the identity provider (token exchange for an ID-JAG)",
        _ => "the authorization server (JWT-bearer grant with the ID-JAG)",
    };
    let (reason, message) = match error {
        EmaError::InvalidGrant(EmaExchangeStage::IdentityProvider) => (
            FailureReason::AuthenticationRequired,
            format!(
                "{} refused the ID token (`invalid_grant`): renew it (oauth_id_token_file / oauth_id_token_env_var)",
                at(&EmaExchangeStage::IdentityProvider)
            ),
        ),
        EmaError::InvalidGrant(which) => (
            FailureReason::AuthenticationRequired,
            format!("{} refused the ID-JAG (`invalid_grant`)", at(which)),
        ),
        EmaError::InsufficientUserAuthentication(which) => (
            FailureReason::AuthenticationRequired,
            format!(
                "{} asks for a stronger sign-in (`insufficient_user_authentication`): sign in to the identity provider again and renew the ID token",
                at(which)
            ),
        ),
        EmaError::OAuthRejected {
            stage: which,
            status,
            code,
        } => {
            let reason = if *status >= 500 || *status == 429 {
                FailureReason::Unreachable
            } else {
                FailureReason::AuthenticationRequired
            };
            let advice = if code.starts_with("invalid_client") || code.starts_with("unauthorized_client") {
                "; check the client id and its secret or key there"
            } else {
                ""
            };
            (
                reason,
                format!("{} refused with HTTP {status}: `{code}`{advice}", at(which)),
            )
        }
        EmaError::RequestFailed(which) => (
            FailureReason::Unreachable,
            format!("cannot reach {} (or it timed out)", at(which)),
        ),
        EmaError::InvalidResponse { stage: which, message } => (
            FailureReason::ProtocolError,
            format!("{} answered something corrald does not accept: {message}", at(which)),
        ),
        EmaError::InvalidRequest(why) => (
            FailureReason::ConfigInvalid,
            format!("the exchange cannot be made: {why}"),
        ),
        other => (FailureReason::AuthenticationRequired, other.to_string()),
    };
    GrantError::new(reason, format!("{stage}: {message}"))
}
