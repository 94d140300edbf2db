//! The engine's target policy: default deny of special-purpose ranges, explicit allows.
//!
//! The deny list is the IANA IPv4 and IPv6 Special-Purpose Address Registries (as zmap's
//! default blocklist), plus multicast and the reserved 240/4. Loopback and the benchmarking
//! ranges the lab uses (198.18.0.0/15, 2001:2::/48) are denied like everything else; an
//! operator opens them with an explicit allow. User exclusions are not policy: they are
//! subtracted from the target set (see `targets`). A refusal names the range and its
//! registry entry so the operator knows what to do.

use crate::targets::TargetSet;
use ipnet::IpNet;
use std::net::IpAddr;

/// Special-purpose ranges denied by default, with the registry name shown in errors.
pub const DEFAULT_DENY: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network (RFC 791)"),
    ("10.0.0.0/8", "private use (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (RFC 6598)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link local (RFC 3927)"),
    ("172.16.0.0/12", "private use (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"),
    ("192.31.196.0/24", "AS112-v4 (RFC 7535)"),
    ("192.52.193.0/24", "AMT (RFC 7450)"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private use (RFC 1918)"),
    (
        "192.175.48.0/24",
        "direct delegation AS112 service (RFC 7534)",
    ),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved (RFC 1112)"),
    ("255.255.255.255/32", "limited broadcast (RFC 919)"),
    ("::/128", "unspecified address (RFC 4291)"),
    ("::1/128", "loopback address (RFC 4291)"),
    ("::ffff:0:0/96", "IPv4-mapped address (RFC 4291)"),
    ("64:ff9b::/96", "IPv4-IPv6 translation (RFC 6052)"),
    ("64:ff9b:1::/48", "IPv4-IPv6 translation (RFC 8215)"),
    ("100::/64", "discard-only address block (RFC 6666)"),
    // Before its enclosing 2001::/23, so a refusal suggests the narrowest --allow.
    ("2001:2::/48", "benchmarking (RFC 5180)"),
    ("2001::/23", "IETF protocol assignments (RFC 2928)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("2002::/16", "6to4 (RFC 3056)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("5f00::/16", "segment routing SIDs (RFC 9602)"),
    ("fc00::/7", "unique-local (RFC 4193)"),
    ("fe80::/10", "link-local unicast (RFC 4291)"),
    ("ff00::/8", "multicast (RFC 4291)"),
];

/// A refused target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to scan {addr}: it is in {range} ({name}), which the target policy denies by default; \
     if you own and are authorised to scan it, pass --allow {range}"
)]
pub struct PolicyError {
    /// The first refused address.
    pub addr: IpAddr,
    /// The denied range it falls in.
    pub range: IpNet,
    /// The registry name of that range.
    pub name: &'static str,
}

/// Deny list plus explicit allows.
#[derive(Debug, Clone)]
pub struct TargetPolicy {
    deny: Vec<(IpNet, &'static str)>,
    allow: Vec<IpNet>,
}

impl Default for TargetPolicy {
    fn default() -> Self {
        Self::default_deny()
    }
}

fn span(n: &IpNet) -> (bool, u128, u128) {
    match n {
        IpNet::V4(n) => (
            false,
            u32::from(n.network()).into(),
            u32::from(n.broadcast()).into(),
        ),
        IpNet::V6(n) => (true, n.network().into(), n.broadcast().into()),
    }
}

fn key(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(v) => (false, u32::from(v).into()),
        IpAddr::V6(v) => (true, v.into()),
    }
}

fn addr_of(v6: bool, x: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(x.into())
    } else {
        IpAddr::V4((x as u32).into())
    }
}

impl TargetPolicy {
    /// The built-in deny list with nothing allowed.
    pub fn default_deny() -> Self {
        TargetPolicy {
            deny: DEFAULT_DENY
                .iter()
                .map(|(n, name)| (n.parse().expect("built-in range parses"), *name))
                .collect(),
            allow: Vec::new(),
        }
    }

    /// Explicitly allows `net` even where the deny list covers it.
    pub fn allow(&mut self, net: IpNet) -> &mut Self {
        self.allow.push(net.trunc());
        self
    }

    /// The explicit allows.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether a single address may be probed.
    pub fn permits(&self, addr: IpAddr) -> Result<(), PolicyError> {
        let (v6, x) = key(addr);
        self.first_refused(v6, x, x)
    }

    /// Checks every address of a target set; the first refused address is reported.
    pub fn check(&self, targets: &TargetSet) -> Result<(), PolicyError> {
        for (lo, hi) in targets.ranges() {
            let (v6, a) = key(lo);
            let (_, b) = key(hi);
            self.first_refused(v6, a, b)?;
        }
        Ok(())
    }

    /// Finds the first address in `[a, b]` that is denied and not allowed.
    fn first_refused(&self, v6: bool, a: u128, b: u128) -> Result<(), PolicyError> {
        for (net, name) in &self.deny {
            let (dv6, c, d) = span(net);
            if dv6 != v6 || d < a || c > b {
                continue;
            }
            // The overlap [lo, hi] must be covered by allows.
            let (mut lo, hi) = (a.max(c), b.min(d));
            loop {
                let cover = self
                    .allow
                    .iter()
                    .map(span)
                    .filter(|&(av6, s, e)| av6 == v6 && s <= lo && lo <= e)
                    .map(|(_, _, e)| e)
                    .max();
                match cover {
                    Some(e) if e >= hi => break,
                    Some(e) => lo = e + 1,
                    None => {
                        return Err(PolicyError {
                            addr: addr_of(v6, lo),
                            range: *net,
                            name,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::parse_net;

    fn set(s: &[&str]) -> TargetSet {
        let v: Vec<IpNet> = s.iter().map(|x| parse_net(x).unwrap()).collect();
        TargetSet::new(&v, &[]).unwrap()
    }

    #[test]
    fn denies_special_ranges_by_default() {
        let p = TargetPolicy::default_deny();
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "198.18.0.2",
            "198.19.255.255",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "2001:2::1",
            "fd00::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(p.permits(a.parse().unwrap()).is_err(), "{a} must be denied");
        }
        let err = p.check(&set(&["198.18.0.0/24"])).unwrap_err();
        assert_eq!(err.range.to_string(), "198.18.0.0/15");
        assert!(err.to_string().contains("--allow 198.18.0.0/15"), "{err}");
        // IPv6 lab hosts get the benchmarking /48, not the whole IETF /23.
        let err = p.check(&set(&["2001:2::2"])).unwrap_err();
        assert!(err.to_string().contains("--allow 2001:2::/48"), "{err}");
        let err = p.check(&set(&["2001:3::1"])).unwrap_err();
        assert!(err.to_string().contains("--allow 2001::/23"), "{err}");
        let mut q = TargetPolicy::default_deny();
        q.allow(parse_net("2001:2::/48").unwrap());
        assert!(q.check(&set(&["2001:2::2"])).is_ok());
    }

    #[test]
    fn a_range_touching_a_denied_range_is_refused() {
        let p = TargetPolicy::default_deny();
        let err = p
            .check(&set(&["9.255.255.0/24", "10.0.0.0/7"]))
            .unwrap_err();
        assert_eq!(err.addr.to_string(), "10.0.0.0");
    }

    #[test]
    fn allow_opens_exactly_the_range() {
        let mut p = TargetPolicy::default_deny();
        p.allow(parse_net("198.18.0.0/15").unwrap());
        p.allow(parse_net("2001:2::/48").unwrap());
        assert!(p
            .check(&set(&["198.18.0.0/24", "198.19.0.0/16", "2001:2::2"]))
            .is_ok());
        assert!(p.permits("127.0.0.1".parse().unwrap()).is_err());
        assert!(p.permits("2001:3::1".parse().unwrap()).is_err());
        // Two allows that together cover a deny range.
        let mut q = TargetPolicy::default_deny();
        q.allow(parse_net("198.18.0.0/16").unwrap());
        q.allow(parse_net("198.19.0.0/16").unwrap());
        assert!(q.check(&set(&["198.18.255.0/23"])).is_ok());
        assert_eq!(
            q.check(&set(&["198.18.0.0/15", "127.0.0.1"]))
                .unwrap_err()
                .addr
                .to_string(),
            "127.0.0.1"
        );
    }
}
