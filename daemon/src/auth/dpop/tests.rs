//! The proofs as a server checks them (claims, `ath`, the signature against the `jwk` of the
//! proof's own header), the stored form of the key, and the nonces of both sides, each against a
//! loopback HTTP server that asks for one: answered with it once, and never asked a third time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use rmcp::transport::auth::{
    AuthorizationManager, CredentialStore as _, InMemoryCredentialStore, OAuthClientConfig, StoredCredentials,
};
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient as _, StreamableHttpError, StreamableHttpPostResponse,
};
use serde_json::{Value, json};

use super::*;
use crate::transport::http::DpopClient;

fn decode_segment(segment: &str) -> Value {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// A proof's header and claims, after checking its signature with the public key its header
/// carries, as a server does (RFC 9449 §4.3).
fn verified(proof: &str) -> (Value, Value) {
    let parts: Vec<&str> = proof.split('.').collect();
    assert_eq!(parts.len(), 3, "a compact JWS: {proof}");
    let header = decode_segment(parts[0]);
    let claims = decode_segment(parts[1]);
    let jwk = &header["jwk"];
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert!(jwk.get("d").is_none(), "no private part in the header: {jwk}");
    let coordinate = |name: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().expect("coordinate"))
            .expect("base64url")
    };
    let mut point = vec![4_u8];
    point.extend(coordinate("x"));
    point.extend(coordinate("y"));
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .expect("base64url signature");
    assert_eq!(signature.len(), 64, "ES256 signatures are r || s");
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the signature verifies with the proof's own jwk");
    (header, claims)
}

fn ath(token: &str) -> String {
    base64url(&sha2::Sha256::digest(token.as_bytes()))
}

#[test]
fn a_proof_has_the_claims_rfc_9449_asks_for_and_verifies_with_its_jwk() {
    let key = DpopKey::generate().expect("key");
    let proof = key
        .proof_at(
            "POST",
            "https://mcp.example:8443/mcp?session=1#frag",
            Some("the-token"),
            Some("n-1"),
            1_800_000_000,
        )
        .expect("proof");
    let (header, claims) = verified(&proof);
    assert_eq!(header["typ"], "dpop+jwt");
    assert_eq!(header["alg"], "ES256");
    assert_eq!(&header["jwk"], key.public_jwk());
    assert_eq!(claims["htm"], "POST");
    assert_eq!(claims["htu"], "https://mcp.example:8443/mcp", "no query, no fragment");
    assert_eq!(claims["iat"], 1_800_000_000);
    assert_eq!(claims["ath"], ath("the-token"));
    assert_eq!(claims["nonce"], "n-1");
    let jti = claims["jti"].as_str().expect("jti");
    assert_eq!(jti.len(), 22, "16 random bytes, base64url");

    // Without a token and a nonce: neither claim; a new jti every time.
    let plain = key
        .proof("POST", "https://as.example/token", None, None)
        .expect("proof");
    let (_, plain_claims) = verified(&plain);
    assert!(plain_claims.get("ath").is_none() && plain_claims.get("nonce").is_none());
    assert_ne!(plain_claims["jti"], claims["jti"]);
    let now = crate::auth::credentials::now_epoch_secs();
    let issued = plain_claims["iat"].as_u64().expect("iat");
    assert!(issued.abs_diff(now) <= 5, "iat is now: {issued} vs {now}");

    // The thumbprint is RFC 7638's over the jwk the proofs carry.
    let jwk = key.public_jwk();
    let canonical = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        jwk["x"].as_str().expect("x"),
        jwk["y"].as_str().expect("y")
    );
    assert_eq!(key.thumbprint(), base64url(&sha2::Sha256::digest(canonical.as_bytes())));
}

#[test]
fn the_stored_key_signs_like_the_original_and_is_never_shown() {
    let key = DpopKey::generate().expect("key");
    let stored = key.to_stored().expect("stored");
    let again = DpopKey::from_stored(&stored).expect("readable");
    assert_eq!(again.thumbprint(), key.thumbprint());
    let (header, _) = verified(
        &again
            .proof("GET", "https://mcp.example/mcp", None, None)
            .expect("proof"),
    );
    assert_eq!(&header["jwk"], key.public_jwk());
    for shown in [format!("{stored:?}"), format!("{key:?}"), format!("{again:?}")] {
        assert!(!shown.contains(&stored.pkcs8), "{shown}");
    }
    let error = DpopKey::from_stored(&StoredDpopKey {
        alg: "ES256".to_owned(),
        pkcs8: base64url(b"not a key at all"),
    })
    .expect_err("garbage");
    assert!(error.to_string().contains("PKCS#8"), "{error}");
}

#[test]
fn only_es256_in_the_metadata_turns_dpop_on() {
    let metadata = |value: Option<Value>| {
        let mut metadata = AuthorizationMetadata::default();
        if let Some(value) = value {
            metadata.additional_fields.insert(METADATA_FIELD.to_owned(), value);
        }
        metadata
    };
    assert!(advertises_dpop(&metadata(Some(json!(["RS256", "ES256"])))));
    assert!(!advertises_dpop(&metadata(Some(json!(["RS256", "EdDSA"])))));
    assert!(!advertises_dpop(&metadata(Some(json!([])))));
    assert!(!advertises_dpop(&metadata(Some(json!("ES256")))));
    assert!(!advertises_dpop(&metadata(None)));
}

/// One request a test server saw.
#[derive(Debug, Clone)]
struct Seen {
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Seen {
    fn proof_claims(&self) -> Value {
        let proof = self.headers.get("dpop").expect("a DPoP header").to_str().expect("text");
        verified(proof).1
    }
}

type Answer = (u16, Vec<(&'static str, String)>, String);

/// A loopback HTTP server that records every request and answers with `answer`.
async fn serve(
    answer: impl Fn(&Seen, usize) -> Answer + Send + Sync + 'static,
) -> (String, Arc<std::sync::Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Seen>::new()));
    let answer = Arc::new(answer);
    let recorded = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (seen, answer) = (recorded.clone(), answer.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let (seen, answer) = (seen.clone(), answer.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.map(|body| body.to_bytes()).unwrap_or_default();
                        let request = Seen {
                            headers: parts.headers,
                            body,
                        };
                        let (status, headers, body) = {
                            let mut seen = seen.lock().expect("lock");
                            seen.push(request.clone());
                            answer(&request, seen.len())
                        };
                        let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        for (name, value) in headers {
                            response
                                .headers_mut()
                                .insert(name, hyper::header::HeaderValue::from_str(&value).expect("value"));
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{address}"), seen)
}

/// A manager whose refreshes go through [`TokenRequestProofs`] to `base`'s `/token`.
async fn refreshing_manager(base: &str, key: Arc<DpopKey>) -> AuthorizationManager {
    let client = Arc::new(TokenRequestProofs::new(key, &format!("{base}/mcp")).expect("client"));
    let mut manager = AuthorizationManager::new_with_oauth_http_client(format!("{base}/mcp"), client)
        .await
        .expect("manager");
    let mut metadata = AuthorizationMetadata::default();
    metadata.authorization_endpoint = format!("{base}/authorize");
    metadata.token_endpoint = format!("{base}/token");
    manager.set_metadata(metadata);
    let store = InMemoryCredentialStore::new();
    let stored: StoredCredentials = serde_json::from_value(json!({
        "client_id": "corral-test",
        "token_response": { "access_token": "old", "refresh_token": "rt", "token_type": "DPoP", "expires_in": 60 },
        "granted_scopes": [],
        "token_received_at": crate::auth::credentials::now_epoch_secs(),
    }))
    .expect("credentials");
    store.save(stored).await.expect("save");
    manager.set_credential_store(store);
    manager
        .configure_client(OAuthClientConfig::new("corral-test", "http://127.0.0.1/callback"))
        .expect("client");
    manager
}

fn use_dpop_nonce(nonce: String) -> Answer {
    (
        400,
        vec![("dpop-nonce", nonce)],
        json!({ "error": "use_dpop_nonce", "error_description": "a nonce, please" }).to_string(),
    )
}

#[tokio::test]
async fn the_token_endpoint_s_nonce_is_sent_once_more_and_kept_and_never_asked_for_a_third_time() {
    let key = Arc::new(DpopKey::generate().expect("key"));
    // Wants nonce `as-1`; answers a proof that has it with a DPoP-bound token.
    let (base, seen) = serve(|request, _| {
        if request.proof_claims()["nonce"] == "as-1" {
            let token =
                json!({ "access_token": "bound", "refresh_token": "rt-2", "token_type": "DPoP", "expires_in": 3600 });
            (200, vec![], token.to_string())
        } else {
            use_dpop_nonce("as-1".to_owned())
        }
    })
    .await;
    let manager = refreshing_manager(&base, key.clone()).await;
    let token = manager
        .refresh_token()
        .await
        .expect("the refresh succeeds with the nonce");
    assert!(
        oauth2::TokenResponse::token_type(&token)
            .as_ref()
            .eq_ignore_ascii_case("dpop")
    );
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 2, "asked, then asked once more: {seen:?}");
        let form: HashMap<String, String> = url::form_urlencoded::parse(&seen[1].body).into_owned().collect();
        assert_eq!(form["grant_type"], "refresh_token");
        for (request, nonce) in seen.iter().zip([None, Some("as-1")]) {
            let claims = request.proof_claims();
            assert_eq!(claims["htm"], "POST");
            assert_eq!(claims["htu"], format!("{base}/token"));
            assert!(claims.get("ath").is_none(), "no access token at the token endpoint");
            assert_eq!(claims["nonce"].as_str(), nonce);
        }
        assert_ne!(seen[0].proof_claims()["jti"], seen[1].proof_claims()["jti"]);
    }
    // The nonce is kept: the next refresh has it from the start.
    manager.refresh_token().await.expect("second refresh");
    assert_eq!(seen.lock().expect("lock").len(), 3);
    assert_eq!(seen.lock().expect("lock")[2].proof_claims()["nonce"], "as-1");

    // A server that asks every time (a new nonce each time) is asked twice, and its error
    // goes back to rmcp.
    let (base, seen) = serve(|_, count| use_dpop_nonce(format!("as-{count}"))).await;
    let manager = refreshing_manager(&base, key).await;
    let error = manager.refresh_token().await.expect_err("refused twice");
    assert!(error.to_string().contains("use_dpop_nonce"), "{error}");
    assert_eq!(seen.lock().expect("lock").len(), 2, "once more, and only once");
}

#[tokio::test]
async fn requests_that_are_not_token_requests_carry_no_proof() {
    let key = Arc::new(DpopKey::generate().expect("key"));
    let (base, seen) = serve(|_, _| (200, vec![], json!({ "resource": "x" }).to_string())).await;
    let manager = AuthorizationManager::new_with_oauth_http_client(
        format!("{base}/mcp"),
        Arc::new(TokenRequestProofs::new(key, &format!("{base}/mcp")).expect("client")),
    )
    .await
    .expect("manager");
    let _ = manager.resolve_metadata().await;
    let seen = seen.lock().expect("lock");
    assert!(!seen.is_empty(), "discovery went through the client");
    assert!(
        seen.iter().all(|request| request.headers.get("dpop").is_none()),
        "{seen:?}"
    );
}

fn tools_list() -> rmcp::model::ClientJsonRpcMessage {
    serde_json::from_value(json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/list" })).expect("message")
}

/// An MCP server that wants nonce `rs-1`: 401 `use_dpop_nonce` to a proof without it.
fn mcp_server_answer(request: &Seen, rotate: Option<usize>) -> Answer {
    let wanted = match rotate {
        Some(count) => format!("rs-{count}"),
        None => "rs-1".to_owned(),
    };
    let message: Value = serde_json::from_slice(&request.body).expect("JSON-RPC");
    if request.proof_claims()["nonce"] == wanted.as_str() && rotate.is_none() {
        let answer = json!({ "jsonrpc": "2.0", "id": message["id"], "result": { "tools": [] } });
        return (200, vec![], answer.to_string());
    }
    let next = match rotate {
        Some(count) => format!("rs-{}", count + 1),
        None => wanted,
    };
    (
        401,
        vec![
            (
                "www-authenticate",
                r#"DPoP error="use_dpop_nonce", error_description="nonce""#.to_owned(),
            ),
            ("dpop-nonce", next),
        ],
        json!({ "error": "use_dpop_nonce" }).to_string(),
    )
}

#[tokio::test]
async fn an_mcp_server_s_nonce_is_learned_the_request_sent_once_more_and_never_a_third_time() {
    let key = Arc::new(DpopKey::generate().expect("key"));
    let (base, seen) = serve(|request, _| mcp_server_answer(request, None)).await;
    let uri: Arc<str> = Arc::from(format!("{base}/mcp"));
    let client = DpopClient::new(reqwest::Client::new(), key.clone());
    let mut headers = HashMap::new();
    headers.insert(
        reqwest::header::HeaderName::from_static("mcp-protocol-version"),
        reqwest::header::HeaderValue::from_static("2025-11-25"),
    );
    headers.insert(
        reqwest::header::HeaderName::from_static("mcp-method"),
        reqwest::header::HeaderValue::from_static("tools/list"),
    );
    let answer = client
        .post_message(
            uri.clone(),
            tools_list(),
            None,
            Some("the-token".to_owned()),
            headers.clone(),
        )
        .await
        .expect("answered after the nonce");
    assert!(matches!(answer, StreamableHttpPostResponse::Json(..)), "{answer:?}");
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(
            seen.len(),
            3,
            "refused, the ping that learns the nonce, sent once more: {seen:?}"
        );
        let methods: Vec<Value> = seen
            .iter()
            .map(|request| serde_json::from_slice::<Value>(&request.body).expect("JSON")["method"].clone())
            .collect();
        assert_eq!(methods, [json!("tools/list"), json!("ping"), json!("tools/list")]);
        assert_eq!(seen[1].headers["mcp-method"], "ping");
        assert_eq!(seen[1].headers["mcp-protocol-version"], "2025-11-25");
        for (request, nonce) in seen.iter().zip([None, None, Some("rs-1")]) {
            assert_eq!(request.headers["authorization"], "DPoP the-token", "never Bearer");
            let claims = request.proof_claims();
            assert_eq!(claims["htm"], "POST");
            assert_eq!(claims["htu"], &*uri);
            assert_eq!(claims["ath"], ath("the-token"));
            assert_eq!(claims["nonce"].as_str(), nonce);
        }
        let jtis: std::collections::HashSet<String> = seen
            .iter()
            .map(|request| request.proof_claims()["jti"].to_string())
            .collect();
        assert_eq!(jtis.len(), 3, "a fresh proof for every request");
    }
    // The nonce is kept: the next request has it from the start.
    client
        .post_message(
            uri.clone(),
            tools_list(),
            None,
            Some("the-token".to_owned()),
            headers.clone(),
        )
        .await
        .expect("answered at once");
    assert_eq!(seen.lock().expect("lock").len(), 4);

    // A server that refuses every nonce: the request, the ping, once more, and the 401 goes up.
    let (base, seen) = serve(|request, count| mcp_server_answer(request, Some(count))).await;
    let client = DpopClient::new(reqwest::Client::new(), key);
    let error = client
        .post_message(
            Arc::from(format!("{base}/mcp")),
            tools_list(),
            None,
            Some("t".to_owned()),
            headers,
        )
        .await
        .expect_err("refused");
    assert!(matches!(error, StreamableHttpError::AuthRequired(_)), "{error:?}");
    assert_eq!(seen.lock().expect("lock").len(), 3, "once more, and only once");
}

#[tokio::test]
async fn without_a_token_a_request_goes_out_without_a_proof() {
    let key = Arc::new(DpopKey::generate().expect("key"));
    let (base, seen) = serve(|_, _| {
        (
            401,
            vec![(
                "www-authenticate",
                r#"DPoP resource_metadata="http://x/prm""#.to_owned(),
            )],
            String::new(),
        )
    })
    .await;
    let client = DpopClient::new(reqwest::Client::new(), key);
    let error = client
        .post_message(
            Arc::from(format!("{base}/mcp")),
            tools_list(),
            None,
            None,
            HashMap::new(),
        )
        .await
        .expect_err("401");
    assert!(matches!(error, StreamableHttpError::AuthRequired(_)), "{error:?}");
    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.get("dpop").is_none() && seen[0].headers.get("authorization").is_none());
}
