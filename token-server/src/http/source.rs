//! The source address of a request, for the guessing budgets: the TCP peer, or — only when the
//! peer is one of the configured trusted proxies (`--trusted-proxies`) — the client the proxies
//! name in `Forwarded` (RFC 7239) or, without it, `X-Forwarded-For`.
//!
//! The chain is read from the right (the hop nearest to us) and every trusted hop is skipped: the
//! first untrusted address is the client. Anything left of it was written by the client itself
//! and is ignored, so a client cannot pick its own source by sending the header. An entry that is
//! not an address (`unknown`, an obfuscated identifier, garbage) ends the walk at the last
//! trusted proxy, which then counts as the source.

use axum::http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// Parses `--trusted-proxies`: comma-separated CIDRs or single addresses.
pub fn parse_trusted(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "`{}` is not a CIDR (10.0.0.0/8, fd00::/8) or an address",
                        s.chars().take(64).collect::<String>()
                    )
                })
        })
        .collect()
}

fn trusted(addr: IpAddr, proxies: &[IpNet]) -> bool {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    proxies.iter().any(|n| n.contains(&addr))
}

/// One `for=` value of `Forwarded`, or one `X-Forwarded-For` entry: an address, maybe quoted,
/// bracketed (IPv6) and with a port.
fn node_address(raw: &str) -> Option<IpAddr> {
    let v = raw.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    if let Ok(a) = v.parse::<IpAddr>() {
        return Some(a);
    }
    // IPv4 with a port.
    let (host, port) = v.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The hops a header lists, leftmost first; `None` for an entry that is not an address.
fn hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|v| v.split(','))
            .map(|element| {
                element
                    .split(';')
                    .filter_map(|pair| pair.split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| node_address(v))
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(node_address)
        .collect()
}

/// The source of a request from `peer` with `headers`.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    if proxies.is_empty() || !trusted(peer, proxies) {
        return peer;
    }
    let mut source = peer;
    for hop in hops(headers).into_iter().rev() {
        match hop {
            Some(a) => {
                source = a;
                if !trusted(a, proxies) {
                    break;
                }
            }
            None => break,
        }
    }
    source
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        m
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let proxies = parse_trusted("10.0.0.0/8, 192.0.2.7").expect("parses");
        let xff = h(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(
            client_address(ip("10.1.2.3"), &xff, &proxies),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(ip("198.51.100.1"), &xff, &proxies),
            ip("198.51.100.1"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(
            client_address(ip("10.1.2.3"), &xff, &[]),
            ip("10.1.2.3"),
            "no trusted proxies configured: headers are ignored"
        );
    }

    #[test]
    fn a_client_cannot_choose_its_source_by_prepending_entries() {
        let proxies = parse_trusted("10.0.0.0/8").expect("parses");
        // The client sent `X-Forwarded-For: 1.2.3.4`; the ingress appended the real address.
        let xff = h(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(
            client_address(ip("10.0.0.6"), &xff, &proxies),
            ip("203.0.113.9")
        );
        let two_lines = h(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            client_address(ip("10.0.0.6"), &two_lines, &proxies),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn forwarded_is_preferred_and_its_forms_parse() {
        let proxies = parse_trusted("10.0.0.0/8,fd00::/8").expect("parses");
        for (value, want) in [
            ("for=203.0.113.9", "203.0.113.9"),
            ("for=\"203.0.113.9:4711\";proto=https", "203.0.113.9"),
            ("for=\"[2001:db8::1]:4711\"", "2001:db8::1"),
            ("FOR=198.51.100.2, for=10.0.0.9", "198.51.100.2"),
            ("for=unknown", "10.0.0.1"),
            ("for=_hidden, for=203.0.113.5", "203.0.113.5"),
            ("garbage", "10.0.0.1"),
        ] {
            let m = h(&[("forwarded", value), ("x-forwarded-for", "192.0.2.200")]);
            assert_eq!(
                client_address(ip("10.0.0.1"), &m, &proxies),
                ip(want),
                "{value}"
            );
        }
    }

    #[test]
    fn bad_lists_are_refused_with_the_entry() {
        assert!(
            parse_trusted("10.0.0.0/33")
                .expect_err("bad")
                .contains("10.0.0.0/33")
        );
        assert!(parse_trusted("proxy.local").is_err());
        assert_eq!(parse_trusted("").expect("empty"), vec![]);
        assert_eq!(parse_trusted("::1").expect("address").len(), 1);
    }
}
