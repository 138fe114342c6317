//! Which addresses an OAuth client of corrald may reach, for the OAuth HTTP clients corrald
//! builds itself (today the DPoP one, `dpop::TokenRequestProofs`); rmcp's own client applies the
//! same rule to every other server.
//!
//! The hosts an OAuth flow talks to come from metadata the MCP server (or whoever answers in its
//! name) discovered for us, so a hostile server could name an address inside the user's machine
//! or network (a cloud metadata service, a router's admin page) and have corrald send requests
//! there. The rule: a global address is always fine; a loopback address only when the server's
//! own URL is loopback (`localhost`, `127.0.0.1`, `::1`), a private one (RFC 1918, CGNAT, IPv6
//! unique-local) only when the server's URL is a private address itself; link-local,
//! unspecified, multicast, broadcast and the other reserved ranges never. IPv6 addresses that
//! carry an IPv4 one (mapped, compatible, NAT64, 6to4) are judged by the IPv4 address.
//!
//! It is applied where the address is known: to every name the client resolves
//! ([`FilteringResolver`]), and to IP literals in a URL, which reqwest connects to without
//! resolving ([`AddressPolicy::check_url`], also applied to each redirect).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// What an address is, for the rule in the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Global,
    Loopback,
    Private,
    Reserved,
}

fn class_v4(ip: Ipv4Addr) -> Class {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Class::Private
    } else if ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        || (a == 198 && (b == 18 || b == 19))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
    {
        Class::Reserved
    } else {
        Class::Global
    }
}

/// The IPv4 address inside an IPv6 one that carries it: mapped (`::ffff:a.b.c.d`), compatible
/// (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::from((u32::from(s[6]) << 16) | u32::from(s[7]));
    match s[..6] {
        [0, 0, 0, 0, 0, 0xffff] | [0x64, 0xff9b, 0, 0, 0, 0] => Some(low),
        [0, 0, 0, 0, 0, 0] if !ip.is_loopback() && !ip.is_unspecified() => Some(low),
        [0x2002, ..] => Some(Ipv4Addr::from((u32::from(s[1]) << 16) | u32::from(s[2]))),
        _ => None,
    }
}

fn class(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(ip) => class_v4(ip),
        IpAddr::V6(ip) => {
            if let Some(v4) = embedded_v4(ip) {
                return class_v4(v4);
            }
            let first = ip.segments()[0];
            if ip.is_loopback() {
                Class::Loopback
            } else if first & 0xfe00 == 0xfc00 {
                Class::Private
            } else if ip.is_unspecified()
                || ip.is_multicast()
                || first & 0xffc0 == 0xfe80
                // Teredo, and NAT64's local-use prefix: the IPv4 address inside cannot be judged.
                || ip.segments()[..2] == [0x2001, 0]
                || ip.segments()[..3] == [0x64, 0xff9b, 1]
            {
                Class::Reserved
            } else {
                Class::Global
            }
        }
    }
}

/// The addresses one server's OAuth requests may reach (the rule in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AddressPolicy {
    loopback: bool,
    private: bool,
}

impl AddressPolicy {
    /// The policy for the MCP server at `server_url`: loopback addresses when its host is
    /// loopback, private ones when its host is a private IP literal.
    pub(crate) fn for_server(server_url: &str) -> Self {
        let host = url::Url::parse(server_url)
            .ok()
            .and_then(|url| url.host().map(|host| host.to_owned()));
        match host {
            Some(url::Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                let loopback = name == "localhost" || name.ends_with(".localhost");
                Self {
                    loopback,
                    private: false,
                }
            }
            Some(url::Host::Ipv4(ip)) => Self::for_class(class(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => Self::for_class(class(IpAddr::V6(ip))),
            None => Self {
                loopback: false,
                private: false,
            },
        }
    }

    fn for_class(class: Class) -> Self {
        Self {
            loopback: class == Class::Loopback,
            private: class == Class::Private,
        }
    }

    /// Whether a request may go to `ip`.
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        match class(ip) {
            Class::Global => true,
            Class::Loopback => self.loopback,
            Class::Private => self.private,
            Class::Reserved => false,
        }
    }

    /// `Err` naming the host when `url`'s host is an IP literal the policy refuses (names are
    /// judged when they are resolved, by [`FilteringResolver`]).
    pub(crate) fn check_url(&self, url: &url::Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if self.allows(ip) {
            Ok(())
        } else {
            Err(format!(
                "refusing an OAuth request to {ip}: discovered metadata may not send corrald to a local, private or reserved address the MCP server's own URL is not on"
            ))
        }
    }

    /// A redirect policy that follows at most `max` redirects, none of them to a refused literal.
    pub(crate) fn redirects(self, max: usize) -> reqwest::redirect::Policy {
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= max {
                attempt.error(format!("more than {max} redirects"))
            } else if let Err(refused) = self.check_url(attempt.url()) {
                attempt.error(refused)
            } else {
                attempt.follow()
            }
        })
    }

    /// The resolver that applies this policy to every name the client looks up.
    pub(crate) fn resolver(self) -> Arc<FilteringResolver> {
        Arc::new(FilteringResolver { policy: self })
    }
}

/// reqwest's resolver for a client under an [`AddressPolicy`]: the system's lookup, with the
/// refused addresses left out; a name with none left is an error naming it.
#[derive(Debug)]
pub(crate) struct FilteringResolver {
    policy: AddressPolicy,
}

impl reqwest::dns::Resolve for FilteringResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|addr| policy.allows(addr.ip())).collect();
            if allowed.is_empty() {
                return Err(format!(
                    "refusing an OAuth request to {host}: it resolves only to local, private or reserved addresses the MCP server's own URL is not on"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("parses")
    }

    #[test]
    fn a_public_server_reaches_only_global_addresses() {
        let policy = AddressPolicy::for_server("https://mcp.example.com/mcp");
        assert!(policy.allows(ip("93.184.216.34")));
        assert!(policy.allows(ip("2606:4700::1111")));
        for refused in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "100.64.0.1",
            "fd00::1",
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2001:0::1",
        ] {
            assert!(!policy.allows(ip(refused)), "{refused} must be refused");
        }
    }

    #[test]
    fn a_loopback_server_may_reach_loopback_but_not_private_or_link_local() {
        for server in [
            "http://127.0.0.1:8080/mcp",
            "http://localhost:3000/mcp",
            "http://[::1]:9/mcp",
        ] {
            let policy = AddressPolicy::for_server(server);
            assert!(policy.allows(ip("127.0.0.1")), "{server}");
            assert!(policy.allows(ip("::1")), "{server}");
            assert!(policy.allows(ip("1.1.1.1")), "{server}");
            assert!(!policy.allows(ip("192.168.0.10")), "{server}");
            assert!(!policy.allows(ip("169.254.169.254")), "{server}");
        }
    }

    #[test]
    fn a_private_server_may_reach_private_but_not_loopback() {
        let policy = AddressPolicy::for_server("http://10.0.0.5/mcp");
        assert!(policy.allows(ip("10.0.0.6")));
        assert!(policy.allows(ip("192.168.1.1")));
        assert!(!policy.allows(ip("127.0.0.1")));
        assert!(!policy.allows(ip("169.254.169.254")));
    }

    #[test]
    fn ip_literals_in_urls_are_checked_and_names_are_left_to_the_resolver() {
        let policy = AddressPolicy::for_server("https://mcp.example.com/mcp");
        let refused = policy
            .check_url(&url::Url::parse("http://169.254.169.254/latest/meta-data").expect("url"))
            .expect_err("refused");
        assert!(refused.contains("169.254.169.254"), "{refused}");
        assert!(
            policy
                .check_url(&url::Url::parse("http://[::1]:80/token").expect("url"))
                .is_err()
        );
        assert!(
            policy
                .check_url(&url::Url::parse("https://auth.example.com/token").expect("url"))
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_resolver_leaves_out_refused_addresses_and_names_a_host_with_none_left() {
        use reqwest::dns::Resolve as _;
        let public = AddressPolicy::for_server("https://mcp.example.com/mcp").resolver();
        let refused = match public.resolve("localhost".parse().expect("parses")).await {
            Ok(addrs) => panic!(
                "localhost resolved for a public server: {:?}",
                addrs.collect::<Vec<_>>()
            ),
            Err(error) => error.to_string(),
        };
        assert!(refused.contains("localhost"), "{refused}");

        let local = AddressPolicy::for_server("http://127.0.0.1:1/mcp").resolver();
        let addrs: Vec<SocketAddr> = local
            .resolve("localhost".parse().expect("parses"))
            .await
            .expect("io")
            .collect();
        assert!(
            !addrs.is_empty() && addrs.iter().all(|addr| addr.ip().is_loopback()),
            "{addrs:?}"
        );
    }

    #[tokio::test]
    async fn a_client_under_the_policy_refuses_a_redirect_to_a_refused_literal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("io");
        let port = listener.local_addr().expect("ok").port();
        // A loopback server that redirects to the link-local metadata address.
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("io");
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
            let answer = "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest\r\nContent-Length: 0\r\n\r\n";
            tokio::io::AsyncWriteExt::write_all(&mut stream, answer.as_bytes())
                .await
                .expect("ok");
        });
        let policy = AddressPolicy::for_server(&format!("http://127.0.0.1:{port}/mcp"));
        let client = reqwest::Client::builder()
            .redirect(policy.redirects(10))
            .dns_resolver(policy.resolver())
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("ok");
        let error = client
            .get(format!(
                "http://127.0.0.1:{port}/.well-known/oauth-authorization-server"
            ))
            .send()
            .await
            .expect_err("refused");
        assert!(error.is_redirect(), "{error:?}");
        assert!(format!("{error:?}").contains("169.254.169.254"), "{error:?}");
        server.await.expect("io");
    }
}
