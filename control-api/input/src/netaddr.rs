//! Who is asking: the client address (peer, or `X-Forwarded-For` from trusted proxies),
//! address normalisation, CIDR sets and the prefix-to-ASN table used to group clients.
//!
//! Lookups are longest-prefix matches over a hash map per prefix length, so a full BGP
//! table or a large opt-out list costs at most one hash probe per distinct length. Nothing
//! here does I/O: the API's file loaders read the text and call [`CidrSet::parse_list`]
//! and [`AsnTable::parse`].

use http::HeaderMap;
use ipnet::IpNet;
use portscope_core::targets::{parse_net, SpecError};
use serde::{Deserialize, Deserializer};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Maps an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) to plain IPv4; others unchanged.
pub fn normalise(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// An address or CIDR as written in flags and config (`198.18.0.0/15`, `2001:db8::1`).
/// Host bits are cleared; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_net(s).map(|n| Cidr(canonical_net(n)))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `::ffff:a.b.c.d/(96+n)` becomes `a.b.c.d/n`, so mapped and plain forms match the same.
fn canonical_net(n: IpNet) -> IpNet {
    if let IpNet::V6(v6) = n {
        if let (Some(v4), true) = (v6.network().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(net) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(net);
            }
        }
    }
    n
}

fn bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v) => (false, u128::from(u32::from(v))),
        IpAddr::V6(v) => (true, u128::from(v)),
    }
}

fn mask(v6: bool, x: u128, len: u8) -> u128 {
    let width = if v6 { 128 } else { 32 };
    if len == 0 {
        0
    } else {
        x & (u128::MAX << (width - u32::from(len)))
    }
}

/// Longest-prefix-match map from CIDRs to values.
#[derive(Debug, Clone)]
pub struct PrefixMap<V> {
    map: HashMap<(bool, u8, u128), V>,
    /// Distinct prefix lengths per family (v4, v6), longest first.
    lens: [Vec<u8>; 2],
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap {
            map: HashMap::new(),
            lens: [Vec::new(), Vec::new()],
        }
    }
}

impl<V> PrefixMap<V> {
    /// Adds (or replaces) a prefix.
    pub fn insert(&mut self, net: IpNet, value: V) {
        let net = canonical_net(net.trunc());
        let (v6, x) = bits(net.network());
        let len = net.prefix_len();
        self.map.insert((v6, len, x), value);
        let lens = &mut self.lens[usize::from(v6)];
        if !lens.contains(&len) {
            lens.push(len);
            lens.sort_unstable_by(|a, b| b.cmp(a));
        }
    }

    /// The value of the longest prefix containing `ip` (mapped IPv6 is looked up as IPv4).
    pub fn lookup(&self, ip: IpAddr) -> Option<&V> {
        let (v6, x) = bits(normalise(ip));
        self.lens[usize::from(v6)]
            .iter()
            .find_map(|&len| self.map.get(&(v6, len, mask(v6, x, len))))
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every prefix.
    fn nets(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.map.keys().filter_map(|&(v6, len, x)| {
            let ip = if v6 {
                IpAddr::V6(x.into())
            } else {
                IpAddr::V4(u32::try_from(x).ok()?.into())
            };
            IpNet::new(ip, len).ok()
        })
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A set of CIDRs (opt-out list, trusted proxies, allowed callback ranges).
#[derive(Debug, Clone, Default)]
pub struct CidrSet(PrefixMap<()>);

impl CidrSet {
    /// A set of the given ranges.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut m = PrefixMap::default();
        for n in nets {
            m.insert(n, ());
        }
        CidrSet(m)
    }

    /// Whether `ip` is in any range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.lookup(ip).is_some()
    }

    /// A range of the set that shares at least one address with `net`, or `None` when
    /// every address of `net` is outside the set. Unlike checking the ends of `net`, this
    /// sees a range strictly inside it. Linear in the set's size (one scan per submit).
    pub fn overlapping(&self, net: IpNet) -> Option<IpNet> {
        let net = canonical_net(net.trunc());
        self.0
            .nets()
            .find(|n| n.contains(&net.network()) || net.contains(&n.network()))
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses a list of addresses / CIDRs, one per line; `#` starts a comment. `origin`
    /// (a file name) names the list in errors.
    pub fn parse_list(text: &str, origin: &str) -> Result<Self, ListError> {
        let mut nets = Vec::new();
        for (i, line) in lines(text) {
            let net = parse_net(line).map_err(|source| ListError::Net {
                origin: origin.to_string(),
                line: i,
                source,
            })?;
            nets.push(net);
        }
        Ok(CidrSet::new(nets))
    }
}

/// A malformed line of a CIDR list or of the ASN table (`origin:line: what`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// Not an address or CIDR.
    #[error("{origin}:{line}: {source}")]
    Net {
        /// The list (a file name).
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        source: SpecError,
    },
    /// An ASN table line that is not two fields.
    #[error("{origin}:{line}: expected `CIDR ASN`")]
    NotCidrAsn {
        /// The list (a file name).
        origin: String,
        /// 1-based line number.
        line: usize,
    },
    /// An ASN that is not a number.
    #[error("{origin}:{line}: `{asn}` is not an AS number")]
    Asn {
        /// The list (a file name).
        origin: String,
        /// 1-based line number.
        line: usize,
        /// The field as written.
        asn: String,
    },
}

/// Non-empty lines with comments stripped, numbered from 1.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let l = l.split('#').next().unwrap_or("").trim();
        (!l.is_empty()).then_some((i + 1, l))
    })
}

/// The key rate limits group clients by: an ASN from the table, or else the client's
/// /24 (IPv4) or /48 (IPv6).
#[derive(Debug, Clone, Default)]
pub struct AsnTable(PrefixMap<u32>);

impl AsnTable {
    /// Parses lines `CIDR ASN` (`198.18.0.0/15 64512` or `... AS64512`; `#` comments);
    /// `origin` names the table in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ListError> {
        let mut m = PrefixMap::default();
        for (i, line) in lines(text) {
            let mut parts = line.split_whitespace();
            let (Some(net), Some(asn), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ListError::NotCidrAsn {
                    origin: origin.to_string(),
                    line: i,
                });
            };
            let net = parse_net(net).map_err(|source| ListError::Net {
                origin: origin.to_string(),
                line: i,
                source,
            })?;
            let digits = asn.trim_start_matches("AS").trim_start_matches("as");
            let asn: u32 = digits.parse().map_err(|_| ListError::Asn {
                origin: origin.to_string(),
                line: i,
                asn: asn.to_string(),
            })?;
            m.insert(net, asn);
        }
        Ok(AsnTable(m))
    }

    /// The grouping key for `ip`: `AS64512`, or `198.18.0.0/24` / `2001:db8::/48`.
    pub fn group(&self, ip: IpAddr) -> String {
        let ip = normalise(ip);
        if let Some(asn) = self.0.lookup(ip) {
            return format!("AS{asn}");
        }
        let len = if ip.is_ipv4() { 24 } else { 48 };
        IpNet::new(ip, len)
            .map(|n| n.trunc().to_string())
            .unwrap_or_else(|_| ip.to_string())
    }
}

/// Why no client address could be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed X-Forwarded-For entry `{0}` from a trusted proxy")]
pub struct ForwardedError(pub String);

/// The client's address: the peer, or, when the peer is a trusted proxy, the right-most
/// `X-Forwarded-For` address that is not itself a trusted proxy. All header lines are
/// read in order. Entries may carry a port (`1.2.3.4:5`, `[2001:db8::1]:5`). If every
/// entry is trusted, the left-most one is the client.
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &CidrSet,
) -> Result<IpAddr, ForwardedError> {
    let peer = normalise(peer);
    if !trusted.contains(peer) {
        return Ok(peer);
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for e in entries.iter().rev() {
        let ip = parse_hop(e).ok_or_else(|| ForwardedError(e.to_string()))?;
        client = normalise(ip);
        if !trusted.contains(client) {
            return Ok(client);
        }
    }
    Ok(client)
}

fn parse_hop(s: &str) -> Option<IpAddr> {
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(s: &[&str]) -> CidrSet {
        CidrSet::new(s.iter().map(|x| parse_net(x).unwrap()))
    }

    #[test]
    fn mapped_addresses_normalise_and_match_v4_ranges() {
        assert_eq!(normalise(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(normalise(ip("2001:db8::1")), ip("2001:db8::1"));
        let s = set(&["198.18.0.0/15", "::ffff:10.0.0.0/104"]);
        assert!(s.contains(ip("::ffff:198.19.1.1")));
        assert!(s.contains(ip("10.9.9.9")));
        assert!(!s.contains(ip("198.20.0.1")));
    }

    #[test]
    fn longest_prefix_wins_in_the_asn_table() {
        let t = AsnTable::parse(
            "# comment\n198.18.0.0/15 64512\n198.18.5.0/24 AS64513 # more\n2001:2::/32 64514\n",
            "t",
        )
        .unwrap();
        assert_eq!(t.group(ip("198.18.5.9")), "AS64513");
        assert_eq!(t.group(ip("198.19.0.1")), "AS64512");
        assert_eq!(t.group(ip("2001:2:0:1::9")), "AS64514");
        assert_eq!(t.group(ip("8.8.4.4")), "8.8.4.0/24");
        assert_eq!(t.group(ip("2a00:1:2:3::1")), "2a00:1:2::/48");
        let err = AsnTable::parse("198.18.0.0/15\n", "t").unwrap_err();
        assert_eq!(err.to_string(), "t:1: expected `CIDR ASN`");
    }

    #[test]
    fn forwarded_for_is_only_honoured_from_trusted_proxies() {
        let trusted = set(&["127.0.0.1", "10.0.0.0/8"]);
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            "203.0.113.9, 198.18.0.7".parse().unwrap(),
        );
        h.append("x-forwarded-for", "10.1.1.1".parse().unwrap());
        // Untrusted peer: header ignored.
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &trusted).unwrap(),
            ip("198.51.100.1")
        );
        // Trusted peer: right-most untrusted entry.
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), &h, &trusted).unwrap(),
            ip("198.18.0.7")
        );
        // No header: the proxy itself.
        assert_eq!(
            client_ip(ip("127.0.0.1"), &HeaderMap::new(), &trusted).unwrap(),
            ip("127.0.0.1")
        );
        let mut bad = HeaderMap::new();
        bad.append("x-forwarded-for", "1.2.3.4, garbage".parse().unwrap());
        assert!(client_ip(ip("127.0.0.1"), &bad, &trusted).is_err());
        let mut port = HeaderMap::new();
        port.append("x-forwarded-for", "[2001:2::5]:443".parse().unwrap());
        assert_eq!(
            client_ip(ip("127.0.0.1"), &port, &trusted).unwrap(),
            ip("2001:2::5")
        );
    }
}
