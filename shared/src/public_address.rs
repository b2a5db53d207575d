//! Which addresses tenants' providers may reach: the public internet, and the networks the
//! operator allows (`HERALD_PROVIDER_ALLOWED_NETWORKS`). The admin checks a tenant's endpoint
//! when it is given; the workers check it again on every connection, so that a name whose
//! DNS record is switched afterwards still cannot lead inside the network.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr};

/// Networks (CIDR) besides the public internet that tenants' provider endpoints may reach.
#[derive(Debug, Clone, Default)]
pub struct Networks(pub Vec<IpNet>);

impl Networks {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether a tenant's provider may connect to `ip`.
    pub fn reachable(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.contains(ip)
    }
}

/// Whether `ip` is an address on the public internet: not loopback, private, link-local,
/// shared (CGNAT), documentation, benchmarking, multicast, reserved or unspecified; an IPv6
/// address outside global unicast is not, and one that carries an IPv4 address is judged
/// by that address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let embedded = |high: u16, low: u16| {
                let [a, b] = high.to_be_bytes();
                let [c, d] = low.to_be_bytes();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            };
            // Addresses that carry an IPv4 address a translator or relay reaches for
            // them: as public as that address (a NAT64 gateway would take
            // 64:ff9b::a00:5 to 10.0.0.5).
            // The well-known NAT64 prefix, with its IPv4 address in the last 32 bits. Not
            // the local-use one (64:ff9b:1::/48): where its IPv4 address sits depends on the
            // prefix length the operator's translator uses (RFC 6052: /48 to /96), so it is
            // not public (below) unless the operator allows it.
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(embedded(s[6], s[7]));
            }
            if s[0] == 0x2002 {
                return is_public(embedded(s[1], s[2]));
            }
            // Only global unicast (2000::/3) is the internet: outside it are loopback,
            // unique and link-local, the old site-local and IPv4-compatible forms, the rest
            // of 64:ff9b::/16 and multicast. Within it, the protocol assignments of
            // 2001::/23 (Teredo's tunnels among them) and documentation's 2001:db8::/32
            // and 3fff::/20.
            (s[0] & 0xe000) == 0x2000
                && !(s[0] == 0x2001 && s[1] < 0x0200)
                && !(s[0] == 0x2001 && s[1] == 0x0db8)
                && !(s[0] == 0x3fff && s[1] < 0x1000)
        }
    }
}

/// `HERALD_PROVIDER_ALLOWED_NETWORKS`: comma-separated CIDR networks.
pub fn parse_networks(value: &str) -> Result<Networks, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .map_err(|_| format!("`{s}` is not a network like 10.0.0.0/8"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Networks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_addresses_are_not_public() {
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            // IPv4 inside IPv6: NAT64, 6to4, the IPv4-compatible form.
            "64:ff9b::a00:5",
            "64:ff9b::7f00:1",
            "2002:a9fe:a9fe::1",
            "::10.0.0.5",
            // Site-local, Teredo, documentation, multicast; a private address by local NAT64.
            "64:ff9b:1::a00:5",
            // Local-use NAT64 whatever it embeds: a /48 translator takes this one to
            // 10.0.0.5 (its IPv4 address after the prefix), not to the 8.8.8.8 at its end.
            "64:ff9b:1:a00:0:500:808:808",
            "64:ff9b:1::808:808",
            "3fff:1::1",
            "3fff:fff::1",
            "fec0::1",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(inside.parse().unwrap()), "{inside}");
        }
        for public in [
            "8.8.8.8",
            "52.1.2.3",
            "2606:4700::1111",
            "2a03:2880:f10c::1",
            "3fff:1000::1",
            // A public IPv4 address through NAT64 (well-known) or 6to4.
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn allowed_networks_parse_and_widen_the_public_internet() {
        let loopback = parse_networks("127.0.0.0/8, ::1/128").unwrap();
        assert!(loopback.reachable("127.0.0.1".parse().unwrap()));
        assert!(loopback.reachable("8.8.8.8".parse().unwrap()));
        assert!(!loopback.reachable("169.254.169.254".parse().unwrap()));
        assert!(parse_networks("10.0.0.0/8,nonsense").is_err());
    }
}
