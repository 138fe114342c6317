//! One request to a token endpoint (RFC 6749 §3.2): the grant's parameters, the client's
//! authentication (`none`, `client_secret_basic`, `client_secret_post`, `private_key_jwt`), and
//! the answer read as a bearer token or as the authorization server's OAuth error.
//!
//! Invariants: never follows a redirect (a token request carries secrets); the endpoint is
//! `https`, or `http` to a loopback host; no secret, assertion or token in an error: an error
//! says the endpoint's origin, the HTTP status and the OAuth error code and description.

use std::time::Duration;

use base64::Engine as _;
use corral_protocol::FailureReason;
use corral_protocol::config::{JwtAlgorithm, SecretMethod};
use serde::Deserialize;

use super::GrantError;
use super::secret::Secret;
use crate::auth::credentials::now_epoch_secs;

/// How long one token request may take.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest token response read.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// Lifetime of a `private_key_jwt` assertion.
const ASSERTION_LIFETIME_SECS: u64 = 300;
/// Longest OAuth `error_description` quoted in an error.
const MAX_DESCRIPTION_CHARS: usize = 200;

/// The client assertion type of RFC 7523 §2.2.
const JWT_BEARER_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The HTTP client of token requests: no redirects, a timeout.
pub(crate) fn http_client() -> Result<reqwest::Client, GrantError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TOKEN_REQUEST_TIMEOUT)
        .build()
        .map_err(|error| {
            GrantError::new(
                FailureReason::ConfigInvalid,
                format!("cannot build an HTTP client: {error}"),
            )
        })
}

/// How the client authenticates one request, with its secrets read.
#[derive(Debug)]
pub(crate) enum ClientCredentials {
    /// A public client: `client_id` in the body, when there is one.
    None { client_id: Option<String> },
    /// A client secret, by HTTP Basic or in the body.
    Secret {
        client_id: String,
        secret: Secret,
        method: SecretMethod,
    },
    /// `private_key_jwt`: an assertion signed with the client's key, audience the issuer.
    PrivateKeyJwt {
        client_id: String,
        key: Secret,
        algorithm: JwtAlgorithm,
    },
}

/// A `private_key_jwt` client assertion (RFC 7523 §2.2 and §3): `iss` and `sub` the client id,
/// `aud` the authorization server's issuer identifier, a fresh `jti`, valid
/// [`ASSERTION_LIFETIME_SECS`].
pub(crate) fn client_assertion(
    client_id: &str,
    audience: &str,
    key: &Secret,
    algorithm: JwtAlgorithm,
    key_field: &str,
) -> Result<String, GrantError> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let (jws, family) = match algorithm {
        JwtAlgorithm::Rs256 => (Algorithm::RS256, "RSA"),
        JwtAlgorithm::Rs384 => (Algorithm::RS384, "RSA"),
        JwtAlgorithm::Rs512 => (Algorithm::RS512, "RSA"),
        JwtAlgorithm::Ps256 => (Algorithm::PS256, "RSA"),
        JwtAlgorithm::Ps384 => (Algorithm::PS384, "RSA"),
        JwtAlgorithm::Ps512 => (Algorithm::PS512, "RSA"),
        JwtAlgorithm::Es256 => (Algorithm::ES256, "EC"),
        JwtAlgorithm::Es384 => (Algorithm::ES384, "EC"),
        JwtAlgorithm::EdDsa => (Algorithm::EdDSA, "Ed25519"),
        _ => {
            return Err(GrantError::config(format!(
                "oauth_private_key_algorithm `{}` is not supported",
                algorithm.as_str()
            )));
        }
    };
    let pem = key.expose().as_bytes();
    let encoding_key = match family {
        "RSA" => EncodingKey::from_rsa_pem(pem),
        "EC" => EncodingKey::from_ec_pem(pem),
        _ => EncodingKey::from_ed_pem(pem),
    }
    .map_err(|error| {
        GrantError::config(format!(
            "the private key ({key_field}) is not a PEM {family} key usable with {} ({})",
            algorithm.as_str(),
            error.kind_name()
        ))
    })?;
    let now = now_epoch_secs();
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECS,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    jsonwebtoken::encode(&Header::new(jws), &claims, &encoding_key).map_err(|error| {
        GrantError::config(format!(
            "cannot sign the client assertion with the private key ({key_field}) and {}: the key does not fit \
             the algorithm ({}); set oauth_private_key_algorithm to the key's",
            algorithm.as_str(),
            error.kind_name()
        ))
    })
}

/// What a jsonwebtoken error is, in a word or two (its `Display` never holds key material, but
/// a kind is all a user needs).
trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for jsonwebtoken::errors::Error {
    fn kind_name(&self) -> String {
        format!("{:?}", self.kind())
            .split(['(', ' '])
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A token endpoint's successful answer.
#[derive(Debug)]
pub(crate) struct IssuedToken {
    /// The access token.
    pub(crate) access_token: String,
    /// Its lifetime, if the authorization server said.
    pub(crate) expires_in: Option<u64>,
    /// The scopes granted, if the authorization server said.
    pub(crate) scope: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    expires_in: Option<serde_json::Value>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: Option<String>,
    error_description: Option<String>,
}

/// The origin of `url` (scheme, host, port), for messages: a URL's path or query may carry
/// secrets.
pub(crate) fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

/// `url` parsed, if it is `https`, or `http` to a loopback host: where secrets may be sent.
pub(crate) fn secure_endpoint(url: &str, what: &str) -> Result<reqwest::Url, GrantError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| GrantError::new(FailureReason::ProtocolError, format!("the {what} is not a valid URL")))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" if parsed.host().is_some() => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(GrantError::new(
            FailureReason::ProtocolError,
            format!(
                "the {what} ({}) is neither https nor http to a loopback host; corrald sends no credentials there",
                origin(&parsed)
            ),
        )),
    }
}

/// POST `params` to `endpoint` with `client`'s authentication; `issuer` is the audience of a
/// `private_key_jwt` assertion; `stage` names the request in errors (e.g. "the client_credentials
/// grant"); `key_field` names the private key's config field.
pub(crate) async fn request(
    http: &reqwest::Client,
    endpoint: &reqwest::Url,
    issuer: &str,
    params: &[(&str, &str)],
    client: &ClientCredentials,
    stage: &str,
    key_field: &str,
) -> Result<IssuedToken, GrantError> {
    let (body, basic) = form(issuer, params, client, key_field)?;
    let mut request = http
        .post(endpoint.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(body);
    if let Some(basic) = basic {
        let mut value = reqwest::header::HeaderValue::from_str(&basic)
            .map_err(|_| GrantError::config("the client id or secret cannot be sent with HTTP Basic"))?;
        value.set_sensitive(true);
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    let at = origin(endpoint);
    let response = request.send().await.map_err(|error| {
        // reqwest's message quotes the URL: its causes only.
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        let why = if error.is_timeout() {
            "timed out".to_owned()
        } else {
            causes.join(": ")
        };
        GrantError::new(
            FailureReason::Unreachable,
            format!("{stage}: cannot reach the token endpoint at {at}: {why}"),
        )
    })?;
    let status = response.status();
    let body = read_limited(response).await.map_err(|why| {
        GrantError::new(
            FailureReason::Unreachable,
            format!("{stage}: the answer of the token endpoint at {at} broke off: {why}"),
        )
    })?;
    if !status.is_success() {
        return Err(rejection(stage, &at, status, &body));
    }
    let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
        GrantError::new(
            FailureReason::ProtocolError,
            format!("{stage}: the token endpoint at {at} answered HTTP {status} without a token response"),
        )
    })?;
    if !parsed.token_type.eq_ignore_ascii_case("bearer") {
        return Err(GrantError::new(
            FailureReason::ProtocolError,
            format!(
                "{stage}: the token endpoint at {at} issued a `{}` token; corrald sends bearer tokens only",
                parsed.token_type.chars().take(32).collect::<String>()
            ),
        ));
    }
    if parsed.access_token.trim().is_empty() {
        return Err(GrantError::new(
            FailureReason::ProtocolError,
            format!("{stage}: the token endpoint at {at} issued an empty access token"),
        ));
    }
    // Some servers send `expires_in` as a string.
    let expires_in = match &parsed.expires_in {
        Some(serde_json::Value::Number(number)) => number.as_u64(),
        Some(serde_json::Value::String(text)) => text.trim().parse().ok(),
        _ => None,
    };
    Ok(IssuedToken {
        access_token: parsed.access_token,
        expires_in,
        scope: parsed.scope,
    })
}

/// The request body (the grant's `params` and the client's credentials) and the `Authorization`
/// header of `client_secret_basic`.
fn form(
    issuer: &str,
    params: &[(&str, &str)],
    client: &ClientCredentials,
    key_field: &str,
) -> Result<(String, Option<String>), GrantError> {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(params.iter().copied());
    let mut basic = None;
    match client {
        ClientCredentials::None { client_id } => {
            if let Some(client_id) = client_id {
                form.append_pair("client_id", client_id);
            }
        }
        ClientCredentials::Secret {
            client_id,
            secret,
            method: SecretMethod::Post,
        } => {
            form.append_pair("client_id", client_id);
            form.append_pair("client_secret", secret.expose());
        }
        ClientCredentials::Secret { client_id, secret, .. } => {
            // RFC 6749 §2.3.1: each part form-encoded, then Basic.
            let encode = |text: &str| url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", encode(client_id), encode(secret.expose()));
            basic = Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ));
        }
        ClientCredentials::PrivateKeyJwt {
            client_id,
            key,
            algorithm,
        } => {
            let assertion = client_assertion(client_id, issuer, key, *algorithm, key_field)?;
            form.append_pair("client_assertion_type", JWT_BEARER_ASSERTION_TYPE);
            form.append_pair("client_assertion", &assertion);
        }
    }
    Ok((form.finish(), basic))
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|error| {
        std::error::Error::source(&error).map_or_else(|| "the connection broke".to_owned(), ToString::to_string)
    })? {
        if body.len() + chunk.len() > MAX_TOKEN_RESPONSE_BYTES {
            return Err(format!("more than {MAX_TOKEN_RESPONSE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The authorization server refused: its OAuth error code and description, and what to do.
fn rejection(stage: &str, at: &str, status: reqwest::StatusCode, body: &[u8]) -> GrantError {
    let Ok(ErrorResponse {
        error: Some(code),
        error_description,
    }) = serde_json::from_slice::<ErrorResponse>(body)
    else {
        let reason = if status.is_server_error() || status.as_u16() == 429 {
            FailureReason::Unreachable
        } else {
            FailureReason::AuthenticationRequired
        };
        return GrantError::new(
            reason,
            format!("{stage}: the token endpoint at {at} answered HTTP {status}"),
        );
    };
    let code: String = code
        .chars()
        .filter(|character| character.is_ascii_graphic())
        .take(64)
        .collect();
    let description = error_description
        .map(|text| {
            let text: String = text
                .chars()
                .filter(|character| !character.is_control())
                .take(MAX_DESCRIPTION_CHARS)
                .collect();
            format!(" ({})", crate::logging::redact_urls(&text))
        })
        .unwrap_or_default();
    let advice = match code.as_str() {
        "invalid_client" | "unauthorized_client" => {
            "; check oauth_client_id, its secret or key, and that the client may use this grant"
        }
        "invalid_grant" => "; the grant (assertion or token) was refused: renew it",
        "invalid_scope" => "; check `scopes`",
        "unsupported_grant_type" => "; the authorization server does not offer this grant",
        _ => "",
    };
    let reason = if matches!(code.as_str(), "temporarily_unavailable" | "server_error") {
        FailureReason::Unreachable
    } else {
        FailureReason::AuthenticationRequired
    };
    GrantError::new(
        reason,
        format!("{stage}: the token endpoint at {at} refused with `{code}`{description}{advice}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key made for this test with `openssl genpkey`; it protects nothing.
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgNJZBq7q7NPd4YOjG
PGBjtPOwgXVX6z/w3oR1Z/AiyzOhRANCAARkOk5di3bCwcJfAU/oeMDX9wgI+7DS
SfTYxF+p/u4zzxtM/UleCEShpVCghzc3E6HUqqTcd8JrY5FcW4VcXB1T
-----END PRIVATE KEY-----
";
    const TEST_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZDpOXYt2wsHCXwFP6HjA1/cICPuw
0kn02MRfqf7uM88bTP1JXghEoaVQoIc3NxOh1Kqk3HfCa2ORXFuFXFwdUw==
-----END PUBLIC KEY-----
";

    fn key() -> Secret {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("key.pem");
        std::fs::write(&path, TEST_KEY).expect("write");
        super::super::secret::read(&corral_protocol::config::SecretSource::File(path), "oauth_private_key")
            .expect("read")
    }

    #[test]
    fn a_client_assertion_names_the_client_and_the_issuer_and_lives_five_minutes() {
        let assertion = client_assertion(
            "corral-ci",
            "https://as.example.com",
            &key(),
            JwtAlgorithm::Es256,
            "oauth_private_key_file",
        )
        .expect("signed");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&["https://as.example.com"]);
        validation.set_issuer(&["corral-ci"]);
        let decoding = jsonwebtoken::DecodingKey::from_ec_pem(TEST_PUBLIC_KEY.as_bytes()).expect("public key");
        let claims = jsonwebtoken::decode::<serde_json::Value>(&assertion, &decoding, &validation)
            .expect("verifies with the public key")
            .claims;
        assert_eq!(claims["sub"], "corral-ci");
        let lifetime = claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat");
        assert_eq!(lifetime, ASSERTION_LIFETIME_SECS);
        assert!(claims["jti"].as_str().is_some_and(|jti| jti.len() >= 32), "{claims}");
        let again = client_assertion(
            "corral-ci",
            "https://as.example.com",
            &key(),
            JwtAlgorithm::Es256,
            "oauth_private_key_file",
        )
        .expect("signed");
        assert_ne!(assertion, again, "a fresh jti each time");
    }

    #[test]
    fn a_key_that_does_not_fit_the_algorithm_is_named_without_its_content() {
        let error = client_assertion(
            "c",
            "https://as.example.com",
            &key(),
            JwtAlgorithm::Rs256,
            "oauth_private_key_file",
        )
        .expect_err("an EC key cannot sign RS256")
        .to_string();
        assert!(error.contains("oauth_private_key_file"), "{error}");
        assert!(error.contains("RS256"), "{error}");
        assert!(!error.contains("MIGHAgEA"), "{error}");
    }

    #[test]
    fn secrets_go_only_to_https_or_loopback_http() {
        for good in [
            "https://as.example.com/token",
            "http://127.0.0.1:9/token",
            "http://localhost/t",
            "http://[::1]/t",
        ] {
            assert!(secure_endpoint(good, "token endpoint").is_ok(), "{good}");
        }
        for bad in ["http://as.example.com/token", "ftp://127.0.0.1/x", "not a url"] {
            let error = secure_endpoint(bad, "token endpoint").expect_err(bad).to_string();
            assert!(!error.contains("/token"), "only the origin: {error}");
        }
    }

    #[test]
    fn a_refusal_says_the_oauth_error_and_what_to_do() {
        let body = br#"{"error":"invalid_client","error_description":"bad secret for https://as.example.com/x?k=v"}"#;
        let error = rejection(
            "the client_credentials grant of `s`",
            "https://as.example.com",
            reqwest::StatusCode::UNAUTHORIZED,
            body,
        );
        assert_eq!(error.reason, FailureReason::AuthenticationRequired);
        assert!(
            error.message.contains("refused with `invalid_client`"),
            "{}",
            error.message
        );
        assert!(error.message.contains("check oauth_client_id"), "{}", error.message);
        assert!(
            !error.message.contains("k=v"),
            "URLs cut to their origin: {}",
            error.message
        );
        let busy = rejection("g", "https://as", reqwest::StatusCode::SERVICE_UNAVAILABLE, b"<html>");
        assert_eq!(busy.reason, FailureReason::Unreachable);
    }
}
