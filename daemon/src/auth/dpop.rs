//! DPoP, proof-of-possession tokens (RFC 9449; MCP's SEP-1932 extension): a server's key, the
//! proofs it signs, and the proofs on the token requests.
//!
//! **When.** A login uses DPoP when the authorization server's metadata lists `ES256` in
//! `dpop_signing_alg_values_supported` (the one algorithm corrald signs with; a server that lists
//! others only gets no proof, and bearer tokens). The server's key is then created (or the one
//! already stored is reused), sent with every token request, and stored with the tokens; a run
//! with stored credentials that hold a key sends proofs on its refreshes, and presents the access
//! token as `DPoP` when the authorization server returned `token_type: DPoP` (a server that still
//! answered `Bearer` gets `Bearer`, as RFC 9449 §7.1 has it).
//!
//! **The key.** One ECDSA P-256 key per server record ([`DpopKey`]), kept in the credential store
//! with the tokens (`CredentialRecord::dpop_key`, as PKCS#8, base64url) so it survives a restart
//! and goes away with a logout. The crypto is `aws-lc-rs`, the library rustls already brings in
//! through reqwest, so the daemon's build gains no crate.
//!
//! **Proofs** ([`DpopKey::proof`]): a JWS with `typ: dpop+jwt`, `alg: ES256` and the public `jwk`
//! in its header; `jti` (16 random bytes), `htm`, `htu` (the URL without query and fragment),
//! `iat`, and when given `ath` (base64url SHA-256 of the access token) and `nonce` in its claims.
//!
//! **Token requests** ([`TokenRequestProofs`]): every OAuth request of the server's
//! `AuthorizationManager` goes through it; a `POST` with a `grant_type` (the code exchange, a
//! refresh, any other grant) gets a proof, and an authorization server that answers
//! `use_dpop_nonce` with a `DPoP-Nonce` is asked once more with that nonce (RFC 9449 §8), which is
//! kept for the next token request. The MCP requests' side is `transport::http::DpopClient`.
//!
//! Invariants: the private key is never in a log line, an error or a `Debug` output (only its
//! thumbprint); nor is a proof, a nonce or a token.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::auth::address_policy::AddressPolicy;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use oauth2::http;
use rmcp::transport::auth::{
    AuthorizationMetadata, OAuthHttpClient, OAuthHttpClientError, OAuthHttpClientFuture, OAuthHttpRedirectPolicy,
    OAuthHttpRequest,
};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::transport::http::ProofSigner;

/// The one signing algorithm corrald uses.
pub const ALGORITHM: &str = "ES256";

/// The metadata field that lists an authorization server's DPoP algorithms (RFC 9449 §5.1).
const METADATA_FIELD: &str = "dpop_signing_alg_values_supported";

/// How long an OAuth request may take when rmcp does not say (rmcp's own default).
const OAUTH_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest OAuth response read (rmcp's own limit).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Redirects an OAuth request may follow when it follows any (rmcp's own limit).
const MAX_REDIRECTS: usize = 10;

fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether an authorization server's metadata offers DPoP with [`ALGORITHM`].
pub fn advertises_dpop(metadata: &AuthorizationMetadata) -> bool {
    metadata
        .additional_fields
        .get(METADATA_FIELD)
        .and_then(serde_json::Value::as_array)
        .is_some_and(|algorithms| algorithms.iter().any(|algorithm| algorithm == ALGORITHM))
}

/// A server's DPoP key as the credential store keeps it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredDpopKey {
    /// The signing algorithm, `ES256`.
    pub alg: String,
    /// The private key, PKCS#8 DER, base64url without padding.
    pub pkcs8: String,
}

impl std::fmt::Debug for StoredDpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is a secret.
        f.debug_struct("StoredDpopKey")
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// A server's DPoP key: signs proofs, shows its public half as a JWK.
pub struct DpopKey {
    pair: EcdsaKeyPair,
    /// The public JWK, `{"crv","kty","x","y"}`.
    jwk: serde_json::Value,
    /// RFC 7638 SHA-256 thumbprint of the JWK (what a bound token's `cnf.jkt` names).
    thumbprint: String,
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

impl DpopKey {
    /// A new random key.
    pub fn generate() -> anyhow::Result<Self> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| anyhow::anyhow!("cannot create a DPoP key"))?;
        Self::from_pair(pair)
    }

    /// The key a record holds. The error says what is wrong with it, never what it is.
    pub fn from_stored(stored: &StoredDpopKey) -> anyhow::Result<Self> {
        if stored.alg != ALGORITHM {
            anyhow::bail!("its algorithm is `{}`, not {ALGORITHM}", stored.alg);
        }
        let der = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(stored.pkcs8.trim())
            .map_err(|_| anyhow::anyhow!("it is not base64url"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
            .map_err(|_| anyhow::anyhow!("it is not a P-256 private key in PKCS#8"))?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: EcdsaKeyPair) -> anyhow::Result<Self> {
        // The uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = pair.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            anyhow::bail!("the DPoP key's public point is not an uncompressed P-256 point");
        }
        let (x, y) = (base64url(&point[1..33]), base64url(&point[33..]));
        // RFC 7638: the required members, in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let thumbprint = base64url(&sha2::Sha256::digest(canonical.as_bytes()));
        let jwk = serde_json::json!({ "crv": "P-256", "kty": "EC", "x": x, "y": y });
        Ok(Self { pair, jwk, thumbprint })
    }

    /// The form the credential store keeps.
    pub fn to_stored(&self) -> anyhow::Result<StoredDpopKey> {
        let document = self
            .pair
            .to_pkcs8v1()
            .map_err(|_| anyhow::anyhow!("cannot encode the DPoP key"))?;
        Ok(StoredDpopKey {
            alg: ALGORITHM.to_owned(),
            pkcs8: base64url(document.as_ref()),
        })
    }

    /// The RFC 7638 thumbprint of the public key.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> &serde_json::Value {
        &self.jwk
    }

    /// A fresh proof for one HTTP request (see the module docs).
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> anyhow::Result<String> {
        self.proof_at(
            method,
            url,
            access_token,
            nonce,
            crate::auth::credentials::now_epoch_secs(),
        )
    }

    fn proof_at(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
        issued_at: u64,
    ) -> anyhow::Result<String> {
        let random = SystemRandom::new();
        let mut jti = [0_u8; 16];
        aws_lc_rs::rand::SecureRandom::fill(&random, &mut jti)
            .map_err(|_| anyhow::anyhow!("no randomness for a DPoP proof"))?;
        let header = serde_json::json!({ "typ": "dpop+jwt", "alg": ALGORITHM, "jwk": self.jwk });
        let mut claims = serde_json::json!({
            "jti": base64url(&jti),
            "htm": method,
            "htu": target_uri(url)?,
            "iat": issued_at,
        });
        if let Some(token) = access_token {
            claims["ath"] = base64url(&sha2::Sha256::digest(token.as_bytes())).into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let signing_input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let signature = self
            .pair
            .sign(&random, signing_input.as_bytes())
            .map_err(|_| anyhow::anyhow!("cannot sign a DPoP proof"))?;
        Ok(format!("{signing_input}.{}", base64url(signature.as_ref())))
    }
}

impl ProofSigner for DpopKey {
    fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, String> {
        DpopKey::proof(self, method, url, access_token, nonce).map_err(|error| format!("{error:#}"))
    }
}

/// The `htu` of a request to `url`: the URL without its query and fragment (RFC 9449 §4.2).
fn target_uri(url: &str) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url).map_err(|_| anyhow::anyhow!("a DPoP proof needs an absolute URL"))?;
    parsed.set_query(None);
    parsed.set_fragment(None);
    Ok(parsed.into())
}

/// The OAuth HTTP client of a server that uses DPoP: every OAuth request of its
/// `AuthorizationManager` goes through it, token requests with a proof (see the module docs).
///
/// rmcp builds its own default client with a resolver that keeps hosts named by discovered
/// metadata off private and loopback addresses unless the server's own URL is on one; it keeps
/// that client private, so this one, which has to see every token request, is a reqwest client
/// of its own (same timeout, redirect and size limits) under the same rule, corrald's
/// `AddressPolicy` (`auth::address_policy`). To upstream: a way to wrap rmcp's filtered client.
pub struct TokenRequestProofs {
    key: Arc<DpopKey>,
    policy: AddressPolicy,
    follow_redirects: reqwest::Client,
    stop_redirects: reqwest::Client,
    /// The authorization server's latest nonce.
    nonce: Mutex<Option<String>>,
}

impl std::fmt::Debug for TokenRequestProofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequestProofs")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TokenRequestProofs {
    /// The OAuth client of the server at `server_url` whose key is `key`.
    pub(crate) fn new(key: Arc<DpopKey>, server_url: &str) -> anyhow::Result<Self> {
        let policy = AddressPolicy::for_server(server_url);
        let build = |redirects: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .timeout(OAUTH_TIMEOUT)
                .redirect(redirects)
                .dns_resolver(policy.resolver())
                .build()
                .map_err(|error| anyhow::anyhow!("cannot build the OAuth HTTP client: {error}"))
        };
        Ok(Self {
            key,
            policy,
            follow_redirects: build(policy.redirects(MAX_REDIRECTS))?,
            stop_redirects: build(reqwest::redirect::Policy::none())?,
            nonce: Mutex::new(None),
        })
    }

    /// Send `request` once, with a proof carrying `nonce` when it is a token request.
    async fn send_once(
        &self,
        request: &http::Request<Vec<u8>>,
        proof: bool,
        nonce: Option<&str>,
        redirect_policy: OAuthHttpRedirectPolicy,
        timeout: Option<Duration>,
    ) -> Result<http::Response<Vec<u8>>, OAuthHttpClientError> {
        let client = match redirect_policy {
            OAuthHttpRedirectPolicy::Stop => &self.stop_redirects,
            _ => &self.follow_redirects,
        };
        let target = url::Url::parse(&request.uri().to_string())?;
        self.policy.check_url(&target)?;
        let mut outgoing = client
            .request(request.method().clone(), target)
            .headers(request.headers().clone())
            .body(request.body().clone());
        if let Some(timeout) = timeout {
            outgoing = outgoing.timeout(timeout);
        }
        if proof {
            let proof = self
                .key
                .proof("POST", &request.uri().to_string(), None, nonce)
                .map_err(|error| -> OAuthHttpClientError { format!("{error:#}").into() })?;
            let mut value = http::HeaderValue::from_str(&proof)?;
            value.set_sensitive(true);
            outgoing = outgoing.header("dpop", value);
        }
        let mut response = outgoing.send().await?;
        let mut answer = http::Response::builder()
            .status(response.status())
            .version(response.version());
        for (name, value) in response.headers() {
            answer = answer.header(name, value);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(format!("the OAuth response is larger than {MAX_RESPONSE_BYTES} bytes").into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(answer.body(body)?)
    }

    fn remember_nonce(&self, response: &http::Response<Vec<u8>>) -> Option<String> {
        let nonce = response.headers().get("dpop-nonce")?.to_str().ok()?.trim().to_owned();
        if nonce.is_empty() {
            return None;
        }
        *self.nonce.lock().unwrap_or_else(PoisonError::into_inner) = Some(nonce.clone());
        Some(nonce)
    }
}

/// Whether an OAuth request is a token request: a form `POST` with a `grant_type`.
fn is_token_request(request: &http::Request<Vec<u8>>) -> bool {
    request.method() == http::Method::POST
        && url::form_urlencoded::parse(request.body()).any(|(name, _)| name == "grant_type")
}

/// Whether a token endpoint's answer asks for a DPoP nonce (RFC 9449 §8).
fn asks_for_nonce(response: &http::Response<Vec<u8>>) -> bool {
    matches!(response.status().as_u16(), 400 | 401)
        && serde_json::from_slice::<serde_json::Value>(response.body())
            .is_ok_and(|body| body["error"] == "use_dpop_nonce")
}

impl OAuthHttpClient for TokenRequestProofs {
    fn execute(&self, request: OAuthHttpRequest) -> OAuthHttpClientFuture<'_> {
        Box::pin(async move {
            let redirect_policy = request.redirect_policy;
            let timeout = request.timeout;
            let request = request.request;
            let proof = is_token_request(&request);
            let nonce = self.nonce.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let response = self
                .send_once(&request, proof, nonce.as_deref(), redirect_policy, timeout)
                .await?;
            if !proof {
                return Ok(response);
            }
            let fresh_nonce = self.remember_nonce(&response);
            match fresh_nonce {
                // Once: a second `use_dpop_nonce` goes back to rmcp as the token endpoint's error.
                Some(fresh_nonce) if asks_for_nonce(&response) => {
                    tracing::debug!("the authorization server asked for a DPoP nonce; asking once more with it");
                    let retried = self
                        .send_once(&request, true, Some(&fresh_nonce), redirect_policy, timeout)
                        .await?;
                    self.remember_nonce(&retried);
                    Ok(retried)
                }
                _ => Ok(response),
            }
        })
    }
}

#[cfg(test)]
mod tests;
