//! Resolving the client's address: the socket peer, or behind trusted reverse
//! proxies the rightmost `X-Forwarded-For` entry that is not itself a proxy.
//!
//! Only the rightmost entries were written by proxies we trust; anything to
//! their left may be forged by the client, so the walk stops at the first
//! untrusted address. Lists spread over several headers, spaces, ports and
//! bracketed IPv6 are all accepted (Chihaya broke on lists).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// The client's address as the tracker believes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    /// The client's IP, IPv4-mapped IPv6 folded to IPv4.
    pub ip: IpAddr,
    /// Whether the connection came from a trusted proxy, so the request's own
    /// address parameters (`ip`, `ipv4`, `ipv6`) may be believed.
    pub via_trusted_proxy: bool,
}

/// Resolves the client address from the socket peer and the `X-Forwarded-For`
/// header values (in the order received).
pub fn resolve<'a, I>(peer: IpAddr, forwarded_for: I, trusted: &[IpNet]) -> ClientAddress
where
    I: DoubleEndedIterator<Item = &'a [u8]>,
{
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return ClientAddress {
            ip: peer,
            via_trusted_proxy: false,
        };
    }
    let mut client = peer;
    let entries = forwarded_for
        .rev()
        .flat_map(|value| value.rsplit(|&b| b == b','));
    for entry in entries {
        let Some(ip) = parse_entry(entry) else {
            // A malformed hop: what lies left of it cannot be trusted either.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    ClientAddress {
        ip: client,
        via_trusted_proxy: true,
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:5678`.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> Vec<IpNet> {
        vec![
            "10.0.0.0/8".parse().expect("net"),
            "::1/128".parse().expect("net"),
        ]
    }

    fn resolve_with(peer: &str, headers: &[&str]) -> ClientAddress {
        let peer: IpAddr = peer.parse().expect("ip");
        resolve(peer, headers.iter().map(|h| h.as_bytes()), &trusted())
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn untrusted_peers_are_taken_at_their_word_and_headers_ignored() {
        let client = resolve_with("203.0.113.9", &["198.51.100.1"]);
        assert_eq!(
            client,
            ClientAddress {
                ip: ip("203.0.113.9"),
                via_trusted_proxy: false
            }
        );
    }

    #[test]
    fn rightmost_untrusted_entry_wins() {
        // The client forged 1.1.1.1; our proxies 10.0.0.2 and 10.0.0.3 appended the rest.
        let client = resolve_with("10.0.0.3", &["1.1.1.1, 198.51.100.7, 10.0.0.2"]);
        assert_eq!(
            client,
            ClientAddress {
                ip: ip("198.51.100.7"),
                via_trusted_proxy: true
            }
        );
        // The same list split over several headers.
        let client = resolve_with("10.0.0.3", &["1.1.1.1", "198.51.100.7,10.0.0.2"]);
        assert_eq!(client.ip, ip("198.51.100.7"));
    }

    #[test]
    fn ports_brackets_mapped_addresses_and_garbage() {
        assert_eq!(
            resolve_with("10.0.0.1", &["198.51.100.7:4242"]).ip,
            ip("198.51.100.7")
        );
        assert_eq!(
            resolve_with("::1", &["[2001:db8::5]:80"]).ip,
            ip("2001:db8::5")
        );
        assert_eq!(
            resolve_with("::ffff:10.0.0.1", &["::ffff:198.51.100.7"]).ip,
            ip("198.51.100.7")
        );
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            resolve_with("10.0.0.1", &["198.51.100.7, nonsense, 10.0.0.9"]).ip,
            ip("10.0.0.9")
        );
        // No header: the proxy itself is all we know.
        assert_eq!(resolve_with("10.0.0.1", &[]).ip, ip("10.0.0.1"));
        // Every hop trusted: the leftmost is the best guess.
        assert_eq!(
            resolve_with("10.0.0.1", &["10.0.0.5, 10.0.0.6"]).ip,
            ip("10.0.0.5")
        );
    }
}
