//! Which addresses tenants' providers may reach: the public internet, and the networks the
//! operator allows (`HERALD_PROVIDER_ALLOWED_NETWORKS`). The admin checks a tenant's endpoint
//! when it is given; the workers check it again on every connection, so that a name whose
//! DNS record is switched afterwards still cannot lead inside the network.

use ipnet::IpNet;
use std::net::IpAddr;

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
/// shared (CGNAT), documentation, benchmarking, multicast, reserved or unspecified.
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
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
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
        ] {
            assert!(!is_public(inside.parse().unwrap()), "{inside}");
        }
        for public in ["8.8.8.8", "52.1.2.3", "2606:4700::1111"] {
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
