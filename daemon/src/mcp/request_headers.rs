//! HTTP headers a front-end attaches to one request for a streamable-HTTP server
//! ([`ScopedHeaders`]): checked here, carried by the request (rmcp's request extensions, which
//! are never serialized) to the server's HTTP client (`transport::http`), which adds them to
//! that request's POST and no other.
//!
//! The check is the config's (`corral_protocol::config::check_http_header`: an RFC 9110 token
//! as the name, no control characters in the value), then the names corrald will not let a
//! front-end set: the MCP transport's own headers, the credentials corrald manages, and the
//! hop-by-hop and proxy headers (about the connection, which the HTTP client manages). A
//! scoped header wins over a configured header of the same name (it is the more specific).
//!
//! Invariants: values are never formatted (`Debug` shows names only), logged or kept beyond
//! the request that carries them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, GetExtensions as _, ListToolsRequest, PaginatedRequestParams};

use super::forward;
use super::route::{CallTarget, RouteError};
use super::tool_catalog::ToolFilter;

/// Headers a front-end may not set for one request: the MCP transport's own (content
/// negotiation, the session, the protocol version, SEP-2243's method and parameter headers,
/// resumption) and the credentials corrald manages (the configured or stored `Authorization`,
/// DPoP proofs). Lowercase.
const REFUSED: [&str; 11] = [
    "accept",
    "content-type",
    "content-length",
    "host",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
    "authorization",
    "dpop",
];

/// The prefix of SEP-2243's per-parameter headers, which the transport derives from a call's arguments.
const REFUSED_PREFIX: &str = "mcp-param-";

/// Headers about the connection rather than the request (RFC 9110 §7.6.1's hop-by-hop headers,
/// `Expect`, `Trailer`), which the HTTP client manages: set by hand they could smuggle a second
/// request, stall the POST or upgrade the connection. Lowercase.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "keep-alive",
    "expect",
    "trailer",
];

/// The prefix of the headers meant for a proxy (`Proxy-Authorization`, `Proxy-Connection`):
/// never a front-end's to send through corrald.
const HOP_BY_HOP_PREFIX: &str = "proxy-";

/// Checked headers for one request. Cheap to clone (the request is cloned for a retry after an
/// expired session, and the headers go with it).
#[derive(Clone)]
pub(crate) struct ScopedHeaders(Arc<Vec<(HeaderName, HeaderValue)>>);

impl std::fmt::Debug for ScopedHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may be secrets: names only.
        f.debug_list().entries(self.0.iter().map(|(name, _)| name)).finish()
    }
}

impl ScopedHeaders {
    /// Check a front-end's `headers`; the error names the header (never its value) and says why.
    pub(crate) fn check(headers: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut checked = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            corral_protocol::config::check_http_header(name, value)?;
            let lower = name.to_ascii_lowercase();
            if REFUSED.contains(&lower.as_str()) || lower.starts_with(REFUSED_PREFIX) {
                let why = if matches!(lower.as_str(), "authorization" | "dpop") {
                    "corrald manages a server's credentials (set them in its config: `bearer_token_env_var`, \
                     `http_headers`, or `corral login`)"
                } else {
                    "the MCP transport sets it itself"
                };
                return Err(format!("header `{name}` cannot be set for one request: {why}"));
            }
            if HOP_BY_HOP.contains(&lower.as_str()) || lower.starts_with(HOP_BY_HOP_PREFIX) {
                return Err(format!(
                    "header `{name}` cannot be set for one request: it is about the connection or a proxy, \
                     not the request, and corrald's HTTP client manages it"
                ));
            }
            let header =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid HTTP header name `{name}`"))?;
            let value = HeaderValue::from_str(value).map_err(|_| format!("invalid value for HTTP header `{name}`"))?;
            checked.push((header, value));
        }
        Ok(Self(Arc::new(checked)))
    }

    /// Add the scoped headers `message` carries, if any, to the headers of its POST.
    pub(crate) fn apply(message: &ClientJsonRpcMessage, headers: &mut HashMap<HeaderName, HeaderValue>) {
        let ClientJsonRpcMessage::Request(request) = message else {
            return;
        };
        let Some(scoped) = request.request.extensions().get::<ScopedHeaders>() else {
            return;
        };
        for (name, value) in scoped.0.iter() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// The server's tools as it lists them for the headers `target` carries (a per-tenant header
/// may change them), every page, the config's tool filters applied: the listing corrald keeps
/// was made without them. A repeated cursor is an error, never a loop ([`forward::all_pages`]).
pub(crate) async fn list_tools_now(target: &CallTarget) -> Result<Vec<serde_json::Value>, RouteError> {
    let filter = ToolFilter::of(&target.config);
    let filter = &filter;
    forward::all_pages(|cursor| async move {
        let mut params = PaginatedRequestParams::default();
        params.cursor = cursor;
        let request = ClientRequest::ListToolsRequest(ListToolsRequest::with_param(params));
        let page = forward::request_value(target, request).await?;
        let Some(listed) = page.get("tools").and_then(serde_json::Value::as_array) else {
            return Err(RouteError::Failed {
                message: "the answer to `tools/list` has no `tools` array".to_owned(),
            });
        };
        let allowed = listed
            .iter()
            .filter(|tool| {
                tool.get("name")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|name| filter.allows(name))
            })
            .cloned()
            .collect();
        Ok((allowed, forward::next_cursor(&page)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)]) -> Result<ScopedHeaders, String> {
        ScopedHeaders::check(
            &pairs
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn headers_are_checked_like_the_configs_and_never_shown() {
        let headers = check(&[("X-Tenant", "acme-secret-tenant")]).expect("a plain header");
        let shown = format!("{headers:?}");
        assert!(shown.contains("x-tenant"), "{shown}");
        assert!(!shown.contains("acme-secret-tenant"), "{shown}");

        let error = check(&[("X Tenant", "a")]).expect_err("not a token");
        assert!(error.contains("invalid HTTP header name"), "{error}");
        let error = check(&[("X-Tenant", "a\r\nInjected: b")]).expect_err("a line break");
        assert!(error.contains("`X-Tenant`"), "{error}");
        assert!(!error.contains("Injected"), "the value is not quoted: {error}");
    }

    #[test]
    fn transport_and_credential_headers_are_refused() {
        for name in [
            "Mcp-Session-Id",
            "accept",
            "MCP-Protocol-Version",
            "Mcp-Param-Region",
            "Mcp-Method",
        ] {
            let error = check(&[(name, "x")]).expect_err(name);
            assert!(error.contains("transport sets it itself"), "{error}");
        }
        for name in ["Authorization", "DPoP"] {
            let error = check(&[(name, "Bearer t")]).expect_err(name);
            assert!(error.contains("credentials"), "{error}");
        }
    }

    #[test]
    fn hop_by_hop_and_proxy_headers_are_refused() {
        for name in [
            "Connection",
            "Transfer-Encoding",
            "TE",
            "Upgrade",
            "Keep-Alive",
            "Expect",
            "Trailer",
            "Proxy-Authorization",
            "proxy-connection",
        ] {
            let error = check(&[(name, "x")]).expect_err(name);
            assert!(error.contains(&format!("`{name}`")), "{error}");
            assert!(error.contains("about the connection or a proxy"), "{error}");
        }
        // Names that only begin alike are the front-end's.
        check(&[("Connectionless", "x"), ("X-Proxy", "y"), ("Tea", "z")]).expect("not hop-by-hop");
    }
}
