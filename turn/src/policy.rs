//! Which peers a client may relay to.
//!
//! A TURN relay sends datagrams from the server's own network position, so without a filter
//! a client could reach the server's loopback services, its private network and anything
//! else behind the firewall (SSRF over UDP). Special-purpose ranges are denied by default;
//! an allow-list wins over every rule (the SFU's own media addresses go there, even when
//! they are private), and two switches let tests relay to loopback and private addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address range, `ADDRESS/PREFIX` (a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address range {0:?}: expected ADDRESS or ADDRESS/PREFIX")]
pub struct CidrError(String);

impl Cidr {
    /// `None` if the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is in the range. An IPv4-mapped IPv6 address matches IPv4 ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (a >> shift) == (b >> shift)
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.chars().take(64).collect());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let prefix = match prefix {
            Some(p) => p.parse().map_err(|_| err())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Peer filtering, checked when a permission or channel is created (a denied peer gets 403)
/// and again on every relayed datagram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Ranges always allowed, whatever else says (the SFU's own media addresses).
    pub allowed: Vec<Cidr>,
    /// Allow 127.0.0.0/8 and ::1 (tests).
    pub allow_loopback: bool,
    /// Allow RFC 1918, CGNAT (100.64.0.0/10) and unique-local (fc00::/7) addresses (tests,
    /// or a deployment whose peers are all on one private network).
    pub allow_private: bool,
}

/// What kind of address a peer has, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Public,
    Loopback,
    Private,
    /// Never routable to a legitimate peer: unspecified, link-local, multicast,
    /// documentation, benchmarking, reserved.
    Special,
}

impl PeerPolicy {
    /// Whether a client may relay to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.allowed.iter().any(|c| c.contains(ip)) {
            return true;
        }
        match classify(ip) {
            Class::Public => true,
            Class::Loopback => self.allow_loopback,
            Class::Private => self.allow_private,
            Class::Special => false,
        }
    }
}

/// An IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64 well-known prefix) is
/// judged as that IPv4 address: otherwise `::ffff:127.0.0.1` would pass as "public IPv6".
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let mapped = s[..5] == [0; 5] && s[5] == 0xffff;
    // 64:ff9b::/96, RFC 6052: a NAT64 gateway would forward to the embedded address.
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (mapped || nat64).then_some(low)
}

fn classify(ip: IpAddr) -> Class {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u8) -> bool {
    prefix_eq(
        u32::from(Ipv4Addr::from(net)).into(),
        u32::from(ip).into(),
        prefix,
        32,
    )
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    if in_v4(ip, [127, 0, 0, 0], 8) {
        return Class::Loopback;
    }
    const PRIVATE: [([u8; 4], u8); 4] = [
        ([10, 0, 0, 0], 8),
        ([172, 16, 0, 0], 12),
        ([192, 168, 0, 0], 16),
        ([100, 64, 0, 0], 10), // CGNAT, RFC 6598
    ];
    if PRIVATE.iter().any(|&(n, p)| in_v4(ip, n, p)) {
        return Class::Private;
    }
    const SPECIAL: [([u8; 4], u8); 11] = [
        ([0, 0, 0, 0], 8),       // "this network", includes unspecified
        ([169, 254, 0, 0], 16),  // link-local
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast (deprecated)
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, includes broadcast
        ([255, 255, 255, 255], 32),
    ];
    if SPECIAL.iter().any(|&(n, p)| in_v4(ip, n, p)) {
        return Class::Special;
    }
    Class::Public
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    if ip == Ipv6Addr::LOCALHOST {
        return Class::Loopback;
    }
    let bits = u128::from(ip);
    let in_net = |net: u128, prefix: u8| prefix_eq(net, bits, prefix, 128);
    if in_net(0xfc00 << 112, 7) {
        return Class::Private;
    }
    let special: [(u128, u8); 10] = [
        (0, 96),                      // unspecified and IPv4-compatible (deprecated)
        (0x0064_ff9b_0001 << 80, 48), // local-use NAT64, RFC 8215
        (0x0100 << 112, 64),          // discard-only, RFC 6666
        (0x2001_0000 << 96, 32),      // Teredo
        (0x2001_0002_0000 << 80, 48), // benchmarking
        (0x2001_0db8 << 96, 32),      // documentation
        (0x3fff << 112, 20),          // documentation, RFC 9637
        (0xfe80 << 112, 10),          // link-local
        (0xfec0 << 112, 10),          // site-local (deprecated)
        (0xff00 << 112, 8),           // multicast
    ];
    if special.iter().any(|&(n, p)| in_net(n, p)) {
        return Class::Special;
    }
    Class::Public
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn special_ranges_are_denied_by_default_and_public_ones_allowed() {
        let policy = PeerPolicy::default();
        for denied in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.0.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.251",
            "255.255.255.255",
            "192.0.2.7",
            "198.51.100.7",
            "203.0.113.7",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!policy.allows(ip(denied)), "{denied} must be denied");
        }
        for allowed in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(policy.allows(ip(allowed)), "{allowed} must be allowed");
        }
    }

    #[test]
    fn switches_open_loopback_and_private_but_never_special_ranges() {
        let policy = PeerPolicy {
            allow_loopback: true,
            allow_private: true,
            ..PeerPolicy::default()
        };
        for allowed in [
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "10.0.0.1",
            "fd00::1",
            "100.64.1.1",
        ] {
            assert!(policy.allows(ip(allowed)), "{allowed}");
        }
        for denied in ["169.254.169.254", "0.0.0.0", "ff02::1", "fe80::1"] {
            assert!(!policy.allows(ip(denied)), "{denied}");
        }
    }

    #[test]
    fn the_allow_list_wins() {
        let policy = PeerPolicy {
            allowed: vec![
                "10.0.0.5".parse().expect("cidr"),
                "fd00::/64".parse().expect("cidr"),
            ],
            ..PeerPolicy::default()
        };
        assert!(policy.allows(ip("10.0.0.5")));
        assert!(
            policy.allows(ip("::ffff:10.0.0.5")),
            "mapped form of an allowed address"
        );
        assert!(!policy.allows(ip("10.0.0.6")));
        assert!(policy.allows(ip("fd00::9")));
        assert!(!policy.allows(ip("fd00:0:0:1::9")));
    }

    #[test]
    fn cidrs_parse_strictly() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().map(|c| c.to_string()),
            Ok("10.0.0.0/8".into())
        );
        assert_eq!(
            "::1".parse::<Cidr>().map(|c| c.to_string()),
            Ok("::1/128".into())
        );
        assert!("0.0.0.0/0"
            .parse::<Cidr>()
            .is_ok_and(|c| c.contains(ip("1.2.3.4"))));
        for bad in ["10.0.0.0/33", "::/129", "10.0.0/8", "", "10.0.0.0/x", "/8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }
}
