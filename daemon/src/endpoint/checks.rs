//! What every request must pass before anything else reads it, as pure
//! functions of its headers: a loopback `Host` (DNS rebinding), an allowed
//! `Origin` if any (403 otherwise), the bearer token (401), a protocol
//! version the bridge speaks (400), and what it `Accept`s.

use std::net::{IpAddr, SocketAddr};

use hyper::HeaderMap;
use hyper::header::{ACCEPT, AUTHORIZATION, HOST, HeaderValue, ORIGIN};

use super::token::Token;

/// The session header of streamable HTTP.
pub(super) const SESSION_HEADER: &str = "mcp-session-id";
/// The protocol version header of streamable HTTP.
pub(super) const VERSION_HEADER: &str = "mcp-protocol-version";

/// The hosts and origins a request may name.
#[derive(Debug)]
pub(super) struct Allowed {
    /// The address the endpoint listens on.
    listen: SocketAddr,
    /// Every accepted `Origin`, lower case: the endpoint's own loopback ones, then the configured ones.
    origins: Vec<String>,
}

impl Allowed {
    /// For an endpoint bound to `listen` (its real port), accepting `extra_origins` too.
    pub(super) fn new(listen: SocketAddr, extra_origins: &[String]) -> Self {
        let port = listen.port();
        let own = ["localhost", "127.0.0.1", "[::1]"].map(|host| format!("http://{host}:{port}"));
        let origins = own
            .into_iter()
            .chain(
                extra_origins
                    .iter()
                    .map(|origin| origin.trim_end_matches('/').to_ascii_lowercase()),
            )
            .collect();
        Self { listen, origins }
    }

    /// `Host` must name a loopback host (`localhost`, `127.0.0.1`, `[::1]`,
    /// any port), or the IP address the endpoint listens on (any IP literal
    /// when it listens on every address): never another name, which is what
    /// a DNS-rebinding page sends. `Err`: why not, for the 403.
    pub(super) fn check_host(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let host = headers
            .get(HOST)
            .and_then(|value| value.to_str().ok())
            .ok_or("the request has no Host header")?;
        let name = host_name(host);
        if name.eq_ignore_ascii_case("localhost") {
            return Ok(());
        }
        match name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() || ip == self.listen.ip() || self.listen.ip().is_unspecified() => Ok(()),
            _ => Err("the Host header names neither a loopback host nor the endpoint's address (DNS rebinding?)"),
        }
    }

    /// An `Origin`, when present, must be one of the allowed ones. `Ok`
    /// carries it back (for the CORS headers of its answer).
    pub(super) fn check_origin(&self, headers: &HeaderMap) -> Result<Option<HeaderValue>, &'static str> {
        let Some(origin) = headers.get(ORIGIN) else {
            return Ok(None);
        };
        let allowed = origin.to_str().is_ok_and(|origin| {
            let origin = origin.to_ascii_lowercase();
            self.origins.contains(&origin)
        });
        if allowed {
            Ok(Some(origin.clone()))
        } else {
            Err(
                "the Origin header is not one the endpoint accepts (add it to `allowed_origins` in [mcp_endpoint] if it is yours)",
            )
        }
    }
}

/// The host part of a `Host` header value: without its port, an IPv6 literal with its brackets.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|byte| byte.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether the request carries `Authorization: Bearer <token>` with this token.
pub(super) fn authorized(headers: &HeaderMap, token: &Token) -> bool {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return false;
    };
    let Some((scheme, presented)) = value.as_bytes().split_first_chunk::<7>() else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && token.matches(presented.trim_ascii())
}

/// `Err`: the `MCP-Protocol-Version` header names a version the bridge does not speak.
pub(super) fn check_version(headers: &HeaderMap) -> Result<(), String> {
    let Some(value) = headers.get(VERSION_HEADER) else {
        return Ok(());
    };
    match value.to_str() {
        Ok(version) if crate::bridge::speaks(version) => Ok(()),
        Ok(version) => Err(format!(
            "unsupported MCP-Protocol-Version `{}`: this endpoint speaks the versions it answers `initialize` with",
            version.escape_debug()
        )),
        Err(_) => Err("the MCP-Protocol-Version header is not text".to_owned()),
    }
}

/// What a request's `Accept` header allows for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Accepts {
    /// `text/event-stream`: an SSE stream.
    pub(super) event_stream: bool,
    /// `application/json`: one JSON object (also without an `Accept` header, or with `*/*`).
    pub(super) json: bool,
}

impl Accepts {
    pub(super) fn of(headers: &HeaderMap) -> Self {
        let values: Vec<&str> = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        if values.is_empty() {
            return Self {
                event_stream: false,
                json: true,
            };
        }
        let types: Vec<String> = values
            .iter()
            .flat_map(|value| value.split(','))
            .map(|item| item.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .collect();
        let any = types.iter().any(|kind| kind == "*/*");
        Self {
            event_stream: any || types.iter().any(|kind| kind == "text/event-stream" || kind == "text/*"),
            json: any
                || types
                    .iter()
                    .any(|kind| kind == "application/json" || kind == "application/*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_loopback_hosts_and_the_listen_address_pass() {
        let allowed = Allowed::new("127.0.0.1:7767".parse().expect("an address"), &[]);
        for good in [
            "127.0.0.1:7767",
            "127.0.0.1",
            "localhost:7767",
            "LocalHost",
            "[::1]:7767",
            "[::1]",
            "127.0.0.2:1",
        ] {
            assert_eq!(allowed.check_host(&headers(&[("host", good)])), Ok(()), "{good}");
        }
        for bad in [
            "evil.example:7767",
            "localhost.evil.example",
            "localhost.",
            "10.0.0.5:7767",
            "[::2]:7767",
            "",
        ] {
            assert!(allowed.check_host(&headers(&[("host", bad)])).is_err(), "{bad}");
        }
        assert!(allowed.check_host(&HeaderMap::new()).is_err(), "no Host");
        let everywhere = Allowed::new("0.0.0.0:7767".parse().expect("an address"), &[]);
        assert_eq!(everywhere.check_host(&headers(&[("host", "10.0.0.5:7767")])), Ok(()));
        assert!(everywhere.check_host(&headers(&[("host", "evil.example")])).is_err());
        let one = Allowed::new("10.0.0.5:7767".parse().expect("an address"), &[]);
        assert_eq!(one.check_host(&headers(&[("host", "10.0.0.5:7767")])), Ok(()));
        assert!(one.check_host(&headers(&[("host", "10.0.0.6:7767")])).is_err());
    }

    #[test]
    fn origins_are_the_endpoints_own_or_configured_ones() {
        let allowed = Allowed::new(
            "127.0.0.1:7767".parse().expect("an address"),
            &["http://LOCALHOST:6274/".to_owned()],
        );
        assert_eq!(allowed.check_origin(&HeaderMap::new()), Ok(None), "none is fine");
        for good in [
            "http://localhost:7767",
            "http://127.0.0.1:7767",
            "http://[::1]:7767",
            "http://localhost:6274",
        ] {
            assert!(allowed.check_origin(&headers(&[("origin", good)])).is_ok(), "{good}");
        }
        for bad in [
            "http://evil.example",
            "http://localhost:7768",
            "https://localhost:7767",
            "null",
            "http://localhost:7767.evil.example",
        ] {
            assert!(allowed.check_origin(&headers(&[("origin", bad)])).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_bearer_token_is_checked_whatever_the_scheme_case() {
        let token = Token::for_tests("abc");
        assert!(authorized(&headers(&[("authorization", "Bearer abc")]), &token));
        assert!(authorized(&headers(&[("authorization", "bearer abc")]), &token));
        for bad in ["Bearer abd", "Bearer ab", "Basic abc", "Bearerabc", "abc", "Bearer "] {
            assert!(!authorized(&headers(&[("authorization", bad)]), &token), "{bad}");
        }
        assert!(!authorized(&HeaderMap::new(), &token));
    }

    #[test]
    fn protocol_versions_are_the_bridges() {
        assert_eq!(check_version(&HeaderMap::new()), Ok(()));
        assert_eq!(check_version(&headers(&[(VERSION_HEADER, "2025-06-18")])), Ok(()));
        assert!(check_version(&headers(&[(VERSION_HEADER, "1999-01-01")])).is_err());
    }

    #[test]
    fn accept_says_stream_or_json() {
        let both = Accepts::of(&headers(&[("accept", "application/json, text/event-stream")]));
        assert!(both.event_stream && both.json);
        let json = Accepts::of(&headers(&[("accept", "application/json;q=0.9")]));
        assert!(!json.event_stream && json.json);
        assert_eq!(
            Accepts::of(&HeaderMap::new()),
            Accepts {
                event_stream: false,
                json: true
            }
        );
        let any = Accepts::of(&headers(&[("accept", "*/*")]));
        assert!(any.event_stream && any.json);
        let neither = Accepts::of(&headers(&[("accept", "text/html")]));
        assert!(!neither.event_stream && !neither.json);
    }
}
