//! Where a request really comes from.
//!
//! The gateway's limits are per client address. Behind a reverse proxy or
//! an ingress every request comes from the proxy, so they would be shared
//! by everyone (one attacker's failed log-ins would lock out all users).
//! A proxy says who its client was in `X-Forwarded-For`, but anyone can
//! write that header, so it is believed only from proxies the gateway is
//! told to trust (`--trusted-proxy`), and only as far as trusted proxies
//! wrote it: the client is the right-most address that is not one of
//! them. Whatever a client wrote further left is never believed.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
pub use ipnet::IpNet;

/// The header proxies append their client's address to.
pub const FORWARDED_FOR: &str = "x-forwarded-for";

/// A proxy (`10.0.0.0/8`) or one address (`10.1.2.3`), as a network.
pub fn parse_proxy(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or network: expected e.g. 10.0.0.0/8, fd00::/8 or 10.1.2.3"))
}

/// The client of a request from `peer` with `forwarded_for` (every
/// `X-Forwarded-For` header, in order), given the proxies trusted.
pub fn client_of(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.iter().rev().flat_map(|header| header.rsplit(',')) {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => client = ip,
            Ok(ip) => return ip,
            // Not an address: what lies left of it is not to be believed.
            Err(_) => return client,
        }
    }
    client
}

/// The middleware: puts the client's address where the limits read it.
pub(crate) async fn resolve(
    axum::extract::State(gateway): axum::extract::State<std::sync::Arc<crate::Gateway>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !gateway.trusted_proxies.is_empty()
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied()
    {
        let headers: Vec<&str> =
            request.headers().get_all(FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
        let client = client_of(peer.ip(), &headers, &gateway.trusted_proxies);
        request.extensions_mut().insert(ConnectInfo(SocketAddr::new(client, peer.port())));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_client_is_the_right_most_address_no_trusted_proxy_wrote() {
        let trusted = [parse_proxy("10.0.0.0/8").unwrap(), parse_proxy("192.0.2.1").unwrap()];
        // Straight from a client: its header is its own word, not believed.
        assert_eq!(client_of(ip("203.0.113.9"), &["198.51.100.1"], &trusted), ip("203.0.113.9"));
        // Through the ingress: the address it saw.
        assert_eq!(client_of(ip("10.0.0.5"), &["203.0.113.9"], &trusted), ip("203.0.113.9"));
        // Two trusted hops (a load balancer, then the ingress).
        assert_eq!(client_of(ip("10.0.0.5"), &["203.0.113.9, 192.0.2.1"], &trusted), ip("203.0.113.9"));
        // A client that writes the header itself cannot pick its address.
        assert_eq!(client_of(ip("10.0.0.5"), &["1.2.3.4, 203.0.113.9"], &trusted), ip("203.0.113.9"));
        assert_eq!(client_of(ip("10.0.0.5"), &["1.2.3.4", "203.0.113.9"], &trusted), ip("203.0.113.9"));
        assert_eq!(client_of(ip("10.0.0.5"), &["garbage, 10.0.0.7"], &trusted), ip("10.0.0.7"));
        // Nothing forwarded: the proxy itself.
        assert_eq!(client_of(ip("10.0.0.5"), &[], &trusted), ip("10.0.0.5"));
        assert_eq!(client_of(ip("10.0.0.5"), &["2001:db8::1"], &trusted), ip("2001:db8::1"));
        assert!(parse_proxy("10.0.0.0/33").unwrap_err().contains("expected e.g. 10.0.0.0/8"));
    }
}
