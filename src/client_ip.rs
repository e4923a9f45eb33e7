//! The client's IP address, as rate limits and logs see it.
//!
//! By default it is the TCP peer. Forwarded headers count only when the peer
//! is a trusted proxy (`TRUSTED_PROXIES`), so that a caller cannot pick its
//! own rate-limit bucket by sending them. Behind trusted proxies the address
//! comes from `CLIENT_IP_HEADER`. For `X-Forwarded-For` it is the right-most
//! entry that is not itself a trusted proxy. For any other header, such as
//! `X-Real-IP` (which Railway's edge rewrites), it is the header's address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::settings::Settings;

/// The resolved client address, stored in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
    header: String,
}

impl ClientIpResolver {
    pub fn new(settings: &Settings) -> Self {
        Self {
            trusted: settings.trusted_proxies.clone(),
            header: settings.client_ip_header.clone(),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Returns the client address for a request from `peer` with `headers`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let mut values = headers
            .get_all(self.header.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok());
        if self.header == "x-forwarded-for" {
            // Each proxy appends the address it received from, so the right-most
            // untrusted entry is the first one a trusted proxy vouched for.
            let entries: Vec<&str> = values.flat_map(|value| value.split(',')).collect();
            for entry in entries.iter().rev() {
                match parse_ip(entry) {
                    Some(ip) if self.is_trusted(ip) => continue,
                    Some(ip) => return ip,
                    None => return peer,
                }
            }
            return peer;
        }
        values.next_back().and_then(parse_ip).unwrap_or(peer)
    }
}

/// Parses an address as proxies write it, with or without a port.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .map(canonical)
}

/// Maps an IPv4 address written as IPv6 (`::ffff:1.2.3.4`) back to IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Resolves the client address of every request and stores it as [`ClientAddr`].
pub async fn resolve_client_ip(
    State(resolver): State<Arc<ClientIpResolver>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let client = resolver.resolve(peer, request.headers());
    request.extensions_mut().insert(ClientAddr(client));
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn resolver(trusted: &[&str], header: &str) -> ClientIpResolver {
        ClientIpResolver {
            trusted: trusted.iter().map(|net| net.parse().unwrap()).collect(),
            header: header.to_owned(),
        }
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let resolver = resolver(&[], "x-forwarded-for");
        let forged = headers("x-forwarded-for", &["1.2.3.4"]);
        assert_eq!(
            resolver.resolve(ip("203.0.113.9"), &forged),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_for_takes_rightmost_untrusted() {
        let resolver = resolver(&["10.0.0.0/8"], "x-forwarded-for");
        let chain = headers("x-forwarded-for", &["6.6.6.6, 198.51.100.7", "10.0.0.3"]);
        assert_eq!(resolver.resolve(ip("10.0.0.2"), &chain), ip("198.51.100.7"));
        let with_port = headers("x-forwarded-for", &["198.51.100.7:4711"]);
        assert_eq!(
            resolver.resolve(ip("10.0.0.2"), &with_port),
            ip("198.51.100.7")
        );
        let all_trusted = headers("x-forwarded-for", &["10.1.1.1"]);
        assert_eq!(
            resolver.resolve(ip("10.0.0.2"), &all_trusted),
            ip("10.0.0.2")
        );
        let junk = headers("x-forwarded-for", &["not-an-ip"]);
        assert_eq!(resolver.resolve(ip("10.0.0.2"), &junk), ip("10.0.0.2"));
        assert_eq!(
            resolver.resolve(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn real_ip_header_from_trusted_proxy() {
        let resolver = resolver(&["100.64.0.0/10"], "x-real-ip");
        let real = headers("x-real-ip", &["198.51.100.7"]);
        assert_eq!(
            resolver.resolve(ip("100.64.1.1"), &real),
            ip("198.51.100.7")
        );
        let forwarded = headers("x-forwarded-for", &["198.51.100.7"]);
        assert_eq!(
            resolver.resolve(ip("100.64.1.1"), &forwarded),
            ip("100.64.1.1")
        );
    }

    #[test]
    fn mapped_ipv4_is_canonical() {
        let resolver = resolver(&["127.0.0.1/32"], "x-forwarded-for");
        assert_eq!(
            resolver.resolve(
                ip("::ffff:127.0.0.1"),
                &headers("x-forwarded-for", &["::ffff:1.2.3.4"])
            ),
            ip("1.2.3.4")
        );
    }
}
