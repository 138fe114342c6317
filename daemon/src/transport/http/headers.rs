//! A server's URL and headers, resolved from its config and corrald's
//! environment ([`prepare`]), without ever quoting a secret.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;

use corral_protocol::FailureReason;
use corral_protocol::config::HttpConfig;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};

use crate::mcp::classify::HttpFailure;

/// Headers the MCP transport sets itself; configuring them is refused.
const RESERVED_HEADERS: [&str; 3] = ["accept", "mcp-session-id", "last-event-id"];

/// A server's URL and headers, resolved from its config and corrald's environment.
#[derive(Clone)]
pub(crate) struct Prepared {
    pub(super) url: Arc<str>,
    pub(super) headers: HashMap<HeaderName, HeaderValue>,
    /// The token of `bearer_token_env_var` (sent as `Authorization: Bearer …`).
    pub(super) bearer_token: Option<String>,
    explicit_authorization: bool,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values and the token are secrets: names only.
        f.debug_struct("Prepared")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("bearer_token", &self.bearer_token.is_some())
            .finish_non_exhaustive()
    }
}

impl Prepared {
    /// Whether the config sets `Authorization` itself (a header or
    /// `bearer_token_env_var`): then no stored credential may be loaded.
    pub(crate) fn has_explicit_authorization(&self) -> bool {
        self.explicit_authorization
    }
}

/// Resolve a server's headers: `http_headers`, then `env_http_headers` (an
/// unset or blank variable skips its header with a warning), then
/// `bearer_token_env_var` (unset, empty or non-Unicode fails, naming the
/// variable). `lookup` reads corrald's environment.
pub(crate) fn prepare(
    server: &str,
    config: &HttpConfig,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<Prepared, HttpFailure> {
    let invalid = |message: String| HttpFailure::new(FailureReason::ConfigInvalid, message);
    let mut headers = HashMap::new();
    for (name, value) in &config.http_headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("invalid HTTP header name `{name}` in http_headers")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| invalid(format!("invalid value for HTTP header `{name}` in http_headers")))?;
        headers.insert(header, value);
    }
    for (name, variable) in &config.env_http_headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("invalid HTTP header name `{name}` in env_http_headers")))?;
        let value = lookup(variable).unwrap_or_default();
        if value.to_string_lossy().trim().is_empty() {
            tracing::warn!(
                server,
                header = %name,
                variable = %variable,
                "environment variable for the header is unset or blank; the header is not sent"
            );
            continue;
        }
        let value = os_bytes(&value)
            .and_then(|bytes| HeaderValue::from_bytes(&bytes).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "environment variable `{variable}` (env_http_headers, header `{name}`) is not a valid HTTP header value"
                ))
            })?;
        headers.insert(header, value);
    }
    let bearer_token = match &config.bearer_token_env_var {
        None => None,
        Some(variable) => {
            let value = lookup(variable).ok_or_else(|| {
                invalid(format!(
                    "environment variable `{variable}` (bearer_token_env_var) is not set"
                ))
            })?;
            let token = value.into_string().map_err(|_| {
                invalid(format!(
                    "environment variable `{variable}` (bearer_token_env_var) is not valid Unicode"
                ))
            })?;
            if token.trim().is_empty() {
                return Err(invalid(format!(
                    "environment variable `{variable}` (bearer_token_env_var) is empty"
                )));
            }
            if HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
                return Err(invalid(format!(
                    "environment variable `{variable}` (bearer_token_env_var) is not a valid HTTP header value"
                )));
            }
            Some(token)
        }
    };
    if let Some(reserved) = headers.keys().find(|name| RESERVED_HEADERS.contains(&name.as_str())) {
        return Err(invalid(format!(
            "header `{reserved}` is set by the MCP transport itself and cannot be configured"
        )));
    }
    let header_authorization = headers.contains_key(&AUTHORIZATION);
    if header_authorization && bearer_token.is_some() {
        return Err(invalid(
            "both an `Authorization` header and `bearer_token_env_var` are configured; keep one".to_owned(),
        ));
    }
    Ok(Prepared {
        url: Arc::from(config.url.as_str()),
        headers,
        explicit_authorization: configures_authorization(config),
        bearer_token,
    })
}

/// Whether `config` gives the server credentials of its own: an
/// `Authorization` header (static, or from the environment whether or not
/// the variable is set today) or `bearer_token_env_var`. Such a server never
/// gets stored OAuth tokens, cannot be logged in to, and its `authStatus` is
/// `bearerToken`.
pub(crate) fn configures_authorization(config: &HttpConfig) -> bool {
    config.bearer_token_env_var.is_some()
        || config
            .http_headers
            .keys()
            .chain(config.env_http_headers.keys())
            .any(|name| name.eq_ignore_ascii_case(AUTHORIZATION.as_str()))
}

#[cfg(unix)]
fn os_bytes(value: &std::ffi::OsStr) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt as _;
    Some(value.as_bytes().to_vec())
}

#[cfg(not(unix))]
fn os_bytes(value: &std::ffi::OsStr) -> Option<Vec<u8>> {
    value.to_str().map(|value| value.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_config(text: &str) -> HttpConfig {
        let config = corral_protocol::config::parse(text, std::path::Path::new("t.toml")).expect("valid");
        match &config.servers["s"].transport {
            corral_protocol::config::TransportConfig::StreamableHttp(http) => http.clone(),
            other => panic!("not HTTP: {other:?}"),
        }
    }

    #[test]
    fn env_headers_skip_blank_variables_and_bearer_names_the_variable() {
        let config = http_config(
            "[servers.s]\nurl = \"http://127.0.0.1:1/mcp\"\nhttp_headers = { X-Static = \"s\" }\n\
             env_http_headers = { X-Set = \"SET\", X-Blank = \"BLANK\", X-Unset = \"UNSET\" }\n\
             bearer_token_env_var = \"TOKEN\"\n",
        );
        let env = |name: &str| match name {
            "SET" => Some(OsString::from("v")),
            "BLANK" => Some(OsString::from("  ")),
            "TOKEN" => Some(OsString::from("secret-token")),
            _ => None,
        };
        let prepared = prepare("s", &config, env).expect("prepared");
        let mut names: Vec<_> = prepared.headers.keys().map(|name| name.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(names, ["x-set", "x-static"]);
        assert_eq!(prepared.bearer_token.as_deref(), Some("secret-token"));
        assert!(prepared.has_explicit_authorization());
        assert!(!format!("{prepared:?}").contains("secret-token"));

        for (value, expected) in [(None, "is not set"), (Some(""), "is empty")] {
            let failure = prepare("s", &config, |name| match name {
                "TOKEN" => value.map(OsString::from),
                _ => None,
            })
            .expect_err("bearer variable problem");
            assert_eq!(failure.reason, FailureReason::ConfigInvalid);
            assert!(failure.message.contains("`TOKEN`"), "{}", failure.message);
            assert!(failure.message.contains(expected), "{}", failure.message);
        }
    }

    #[cfg(unix)]
    #[test]
    fn non_unicode_bearer_token_fails_without_quoting_it() {
        use std::os::unix::ffi::OsStringExt as _;
        let config = http_config("[servers.s]\nurl = \"http://127.0.0.1:1/mcp\"\nbearer_token_env_var = \"TOKEN\"\n");
        let failure =
            prepare("s", &config, |_| Some(OsString::from_vec(vec![0x66, 0xff, 0x67]))).expect_err("non-Unicode token");
        assert!(failure.message.contains("not valid Unicode"), "{}", failure.message);
    }
}
