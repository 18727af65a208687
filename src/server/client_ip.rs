//! The client's address, as far as it can be trusted.
//!
//! Behind a reverse proxy or load balancer every connection comes from the proxy, so keying
//! limits on the socket peer lets one person lock everyone out. The address a proxy reports
//! (`X-Forwarded-For`, or `Forwarded` with `TRUSTED_PROXY_HEADER=forwarded`) is believed only
//! when the peer is one of `TRUSTED_PROXIES` (CIDRs), and then only the hops the trusted
//! proxies appended: walking the list from the right, the first address that is not a trusted
//! proxy is the client. Anything a client wrote into the header itself sits further left and
//! is never reached, so it cannot choose its own address.

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The request's client address, resolved once by [`middleware`] and kept in the request's
/// extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

pub use crate::server::config::ProxyHeader;

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    proxies.iter().any(|n| n.contains(&ip))
}

/// One address as proxies write it: `1.2.3.4`, `1.2.3.4:567`, `2001:db8::1`, `[2001:db8::1]:80`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[').and_then(|r| r.split_once(']')).and_then(|(ip, _)| ip.parse().ok())
}

/// The hops a header lists, left (farthest) to right (nearest); `None` for one that does not
/// parse (`unknown`, an obfuscated name, garbage).
fn hops(headers: &HeaderMap, which: ProxyHeader) -> Vec<Option<IpAddr>> {
    let name = match which {
        ProxyHeader::XForwardedFor => "x-forwarded-for",
        ProxyHeader::Forwarded => "forwarded",
    };
    let mut out = vec![];
    for value in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
        for element in value.split(',') {
            match which {
                ProxyHeader::XForwardedFor => out.push(parse_hop(element)),
                ProxyHeader::Forwarded => {
                    let for_ = element
                        .split(';')
                        .filter_map(|p| p.trim().split_once('='))
                        .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"));
                    out.push(for_.and_then(|(_, v)| parse_hop(v)));
                }
            }
        }
    }
    out
}

/// What limits key on for a client: an IPv4 address itself; an IPv6 one by its /64, which one
/// subscriber usually holds whole (else each of its 2^64 addresses would be a new client).
pub fn limit_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The client address of a request from `peer`. IPv4-mapped IPv6 addresses (a dual-stack
/// listener's view of an IPv4 peer) count as the IPv4 addresses they are.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet], which: ProxyHeader) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut nearest = peer;
    for hop in hops(headers, which).into_iter().rev().map(|h| h.map(|ip| ip.to_canonical())) {
        match hop {
            Some(ip) if trusted(ip, proxies) => nearest = ip,
            Some(ip) => return ip,
            // A hop a trusted proxy could not name: the last trusted one is all we know.
            None => return nearest,
        }
    }
    nearest
}

/// Resolves [`ClientIp`] for every request.
pub async fn middleware(State(state): State<crate::server::state::AppState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let ip = resolve(peer, req.headers(), &state.config.trusted_proxies, state.config.trusted_proxy_header);
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// The client address of the request a server function or render is serving.
pub fn current() -> Option<IpAddr> {
    leptos::prelude::use_context::<http::request::Parts>().and_then(|p| p.extensions.get::<ClientIp>().map(|c| c.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    const XFF: ProxyHeader = ProxyHeader::XForwardedFor;

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let p = nets(&["10.0.0.0/8"]);
        assert_eq!(resolve(ip("203.0.113.9"), &h(&[("x-forwarded-for", "1.1.1.1")]), &p, XFF), ip("203.0.113.9"));
        assert_eq!(resolve(ip("203.0.113.9"), &h(&[]), &[], XFF), ip("203.0.113.9"));
    }

    #[test]
    fn behind_trusted_proxies_the_first_untrusted_hop_from_the_right_is_the_client() {
        let p = nets(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client sent a forged header; nginx appended the real address.
        let forged = h(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7")]);
        assert_eq!(resolve(ip("127.0.0.1"), &forged, &p, XFF), ip("198.51.100.7"));
        // Two proxies: a load balancer (10.0.0.2) in front of nginx.
        let two = h(&[("x-forwarded-for", "198.51.100.7, 10.0.0.2")]);
        assert_eq!(resolve(ip("127.0.0.1"), &two, &p, XFF), ip("198.51.100.7"));
        // Several header lines are one list, in order.
        let lines = h(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "198.51.100.8:4431")]);
        assert_eq!(resolve(ip("10.1.1.1"), &lines, &p, XFF), ip("198.51.100.8"));
        // No header: the proxy itself.
        assert_eq!(resolve(ip("10.1.1.1"), &h(&[]), &p, XFF), ip("10.1.1.1"));
        // A hop that does not parse stops the walk at the last trusted proxy.
        assert_eq!(resolve(ip("10.1.1.1"), &h(&[("x-forwarded-for", "1.1.1.1, unknown")]), &p, XFF), ip("10.1.1.1"));
    }

    #[test]
    fn ipv4_mapped_peers_are_ipv4_and_ipv6_clients_are_keyed_by_their_64() {
        let p = nets(&["10.0.0.0/8"]);
        let hdr = h(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            resolve(ip("::ffff:10.0.0.1"), &hdr, &p, XFF),
            ip("198.51.100.7"),
            "a dual-stack listener sees the proxy as ::ffff:10.0.0.1"
        );
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), limit_key(ip("2001:db8:1:2:bbbb::9")));
        assert_ne!(limit_key(ip("2001:db8:1:2::1")), limit_key(ip("2001:db8:1:3::1")));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
        assert_eq!(limit_key(ip("203.0.113.5")), "203.0.113.5");
    }

    #[test]
    fn the_forwarded_header_is_read_only_when_configured() {
        let p = nets(&["127.0.0.1/32"]);
        let hdr = h(&[
            ("forwarded", r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https"#),
            ("x-forwarded-for", "5.5.5.5"),
        ]);
        assert_eq!(resolve(ip("127.0.0.1"), &hdr, &p, ProxyHeader::Forwarded), ip("2001:db8:cafe::17"));
        assert_eq!(resolve(ip("127.0.0.1"), &hdr, &p, XFF), ip("5.5.5.5"));
    }
}
