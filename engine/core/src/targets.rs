//! Target and port specifications, validated into an indexable scan space.
//!
//! `TargetSet` turns addresses and CIDR ranges (minus exclusions) into sorted, disjoint
//! ranges so the runtime can map a target index to an address and back without any
//! per-address state; [`PortSet`] (in `ports`) does the same for port specs. A scan's pair
//! index is `target_index * ports.len() + port_index`.

pub use crate::ports::PortSet;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The largest number of (target x port) pairs one scan may cover.
pub const MAX_PAIRS: u64 = 1 << 36;

/// Errors in target or port specifications.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Not an address or CIDR.
    #[error("invalid target `{0}`: expected an IPv4/IPv6 address, CIDR (198.18.0.0/24) or range (198.18.0.1-198.18.0.9)")]
    BadTarget(String),
    /// Not a port list.
    #[error("invalid port spec `{0}`: expected a list like 22,80,1000-2000 or - for 1-65535")]
    BadPorts(String),
    /// A port outside 1-65535 (`-p 0`, `-p 70000`).
    #[error("port {port} in `{spec}` is out of range: ports are 1-65535")]
    PortOutOfRange {
        /// The whole spec.
        spec: String,
        /// The offending number.
        port: u64,
    },
    /// A range written high to low (`-p 80-20`).
    #[error("port range {hi}-{lo} is backwards: did you mean {lo}-{hi}?")]
    PortsBackwards {
        /// The smaller port.
        lo: u16,
        /// The larger port.
        hi: u16,
    },
    /// Nothing left to scan.
    #[error("no targets left to scan after exclusions")]
    Empty,
    /// The space is too large. The count saturates at `u128::MAX` (`::/0` alone holds
    /// 2^128 addresses), so it is a lower bound when it reads `u128::MAX`.
    #[error("scan too large: {} target x port pairs (at most {MAX_PAIRS})", shown(*.0))]
    TooLarge(u128),
}

/// A pair count for messages: exact, or "at least 2^128 - 1" once saturated.
fn shown(count: u128) -> String {
    if count == u128::MAX {
        format!("at least {count}")
    } else {
        count.to_string()
    }
}

/// Parses a target: an address, a CIDR (host bits cleared) or an inclusive range
/// `first-last` of one family. Returns the first and last address.
pub fn parse_target(s: &str) -> Result<(IpAddr, IpAddr), SpecError> {
    let t = s.trim();
    if let Some((a, b)) = t.split_once('-') {
        let bad = || SpecError::BadTarget(t.to_string());
        let a: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let b: IpAddr = b.trim().parse().map_err(|_| bad())?;
        if a.is_ipv4() != b.is_ipv4() || key(a) > key(b) {
            return Err(bad());
        }
        return Ok((a, b));
    }
    let n = parse_net(t)?;
    Ok((n.network(), n.broadcast()))
}

/// Parses an address or CIDR. A bare address becomes a /32 or /128. Host bits are cleared.
pub fn parse_net(s: &str) -> Result<IpNet, SpecError> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| SpecError::BadTarget(s.to_string()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Range {
    v6: bool,
    /// First address (IPv4 in the low 32 bits).
    start: u128,
    /// Last address, inclusive.
    end: u128,
}

fn key(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    }
}

fn to_addr(v6: bool, x: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(x))
    } else {
        IpAddr::V4(Ipv4Addr::from(x as u32))
    }
}

/// A validated set of target addresses, indexable in `0..len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSet {
    ranges: Vec<Range>,
    /// `first_index[i]` is the index of `ranges[i].start`.
    first_index: Vec<u64>,
    len: u64,
}

impl TargetSet {
    /// Builds the set `include - exclude` from CIDRs. Overlaps are merged.
    pub fn new(include: &[IpNet], exclude: &[IpNet]) -> Result<Self, SpecError> {
        let r = |n: &IpNet| (n.network(), n.broadcast());
        let inc: Vec<_> = include.iter().map(r).collect();
        let exc: Vec<_> = exclude.iter().map(r).collect();
        Self::from_ranges(&inc, &exc)
    }

    /// Builds the set `include - exclude` from inclusive address ranges (as returned by
    /// [`parse_target`]). Overlaps are merged.
    pub fn from_ranges(
        include: &[(IpAddr, IpAddr)],
        exclude: &[(IpAddr, IpAddr)],
    ) -> Result<Self, SpecError> {
        let span = |&(a, b): &(IpAddr, IpAddr)| {
            let ((v6, start), (_, end)) = (key(a), key(b));
            Range { v6, start, end }
        };
        let mut ranges: Vec<Range> = include.iter().map(span).collect();
        ranges.sort();
        let mut merged: Vec<Range> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if last.v6 == r.v6 && r.start <= last.end.saturating_add(1) => {
                    last.end = last.end.max(r.end);
                }
                _ => merged.push(r),
            }
        }
        for ex in exclude.iter().map(span) {
            let mut out = Vec::with_capacity(merged.len() + 1);
            for r in merged {
                if r.v6 != ex.v6 || ex.end < r.start || ex.start > r.end {
                    out.push(r);
                    continue;
                }
                if ex.start > r.start {
                    out.push(Range {
                        end: ex.start - 1,
                        ..r
                    });
                }
                if ex.end < r.end {
                    out.push(Range {
                        start: ex.end + 1,
                        ..r
                    });
                }
            }
            merged = out;
        }
        let mut first_index = Vec::with_capacity(merged.len());
        let mut total: u128 = 0;
        for r in &merged {
            first_index.push(u64::try_from(total).map_err(|_| SpecError::TooLarge(total))?);
            // `::/0` holds 2^128 addresses, one more than a u128 counts: saturate rather
            // than wrap, so an absurd set is refused as too large and never looks small.
            total = total.saturating_add((r.end - r.start).saturating_add(1));
            if total > u128::from(MAX_PAIRS) {
                return Err(SpecError::TooLarge(total));
            }
        }
        if total == 0 {
            return Err(SpecError::Empty);
        }
        Ok(TargetSet {
            ranges: merged,
            first_index,
            len: total as u64,
        })
    }

    /// Number of addresses.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: an empty set is rejected at construction.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address at `index` (`index < len()`).
    pub fn addr(&self, index: u64) -> IpAddr {
        let i = self.first_index.partition_point(|&f| f <= index) - 1;
        let r = &self.ranges[i];
        to_addr(r.v6, r.start + u128::from(index - self.first_index[i]))
    }

    /// The index of `addr`, or `None` if it is not in the set.
    #[inline]
    pub fn index_of(&self, addr: IpAddr) -> Option<u64> {
        let (v6, x) = key(addr);
        let i = self
            .ranges
            .partition_point(|r| (r.v6, r.start) <= (v6, x))
            .checked_sub(1)?;
        let r = &self.ranges[i];
        (r.v6 == v6 && x <= r.end).then(|| self.first_index[i] + (x - r.start) as u64)
    }

    /// Whether any target is IPv4 / IPv6.
    pub fn families(&self) -> (bool, bool) {
        (
            self.ranges.iter().any(|r| !r.v6),
            self.ranges.iter().any(|r| r.v6),
        )
    }

    /// The first address of each family, if any (used to pick a source address by route).
    pub fn first_of_family(&self, v6: bool) -> Option<IpAddr> {
        self.ranges
            .iter()
            .find(|r| r.v6 == v6)
            .map(|r| to_addr(r.v6, r.start))
    }

    /// The set as CIDR-free inclusive ranges, for policy checks and display.
    pub fn ranges(&self) -> impl Iterator<Item = (IpAddr, IpAddr)> + '_ {
        self.ranges
            .iter()
            .map(|r| (to_addr(r.v6, r.start), to_addr(r.v6, r.end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|x| parse_net(x).unwrap()).collect()
    }

    #[test]
    fn targets_index_round_trip_and_exclude() {
        let t = TargetSet::new(
            &nets(&["198.18.0.0/30", "198.18.0.2", "2001:2::/126", "198.19.0.10"]),
            &nets(&["198.18.0.1"]),
        )
        .unwrap();
        let all: Vec<String> = (0..t.len()).map(|i| t.addr(i).to_string()).collect();
        assert_eq!(
            all,
            [
                "198.18.0.0",
                "198.18.0.2",
                "198.18.0.3",
                "198.19.0.10",
                "2001:2::",
                "2001:2::1",
                "2001:2::2",
                "2001:2::3"
            ]
        );
        for i in 0..t.len() {
            assert_eq!(t.index_of(t.addr(i)), Some(i));
        }
        assert_eq!(t.index_of("198.18.0.1".parse().unwrap()), None);
        assert_eq!(t.index_of("2001:2::4".parse().unwrap()), None);
        assert_eq!(t.index_of("0.0.0.0".parse().unwrap()), None);
        assert_eq!(t.families(), (true, true));
    }

    #[test]
    fn ranges_parse() {
        let (a, b) = parse_target("198.19.0.1-198.19.0.8").unwrap();
        assert_eq!(
            (a.to_string(), b.to_string()),
            ("198.19.0.1".into(), "198.19.0.8".into())
        );
        let t = TargetSet::from_ranges(
            &[(a, b), parse_target("2001:2:0:1::1-2001:2:0:1::2").unwrap()],
            &[],
        )
        .unwrap();
        assert_eq!(t.len(), 10);
        assert_eq!(
            parse_target("198.18.0.0/31").unwrap().1.to_string(),
            "198.18.0.1"
        );
        for bad in ["1.2.3.4-::1", "1.2.3.9-1.2.3.1", "1.2.3.4-x"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_and_empty_targets() {
        assert!(matches!(parse_net("example"), Err(SpecError::BadTarget(_))));
        assert!(matches!(
            parse_net("1.2.3.4/33"),
            Err(SpecError::BadTarget(_))
        ));
        assert_eq!(
            TargetSet::new(&nets(&["198.18.0.1"]), &nets(&["198.18.0.0/24"])),
            Err(SpecError::Empty)
        );
        assert!(matches!(
            TargetSet::new(&nets(&["2001:2::/48"]), &[]),
            Err(SpecError::TooLarge(_))
        ));
    }

    /// `::/0` alone is 2^128 addresses: the count must saturate, never wrap to a small
    /// number (one address plus `::/0` used to wrap to 1 and pass the size check).
    #[test]
    fn whole_address_space_is_too_large_not_wrapped() {
        for set in [
            &["198.18.0.2", "::/0"][..],
            &["::/0"],
            &["::/0", "2001:2::1"],
            &["::/1", "8000::/1"],
            &["0.0.0.0/0", "::/0"],
        ] {
            let err = TargetSet::new(&nets(set), &[]).unwrap_err();
            assert!(
                matches!(err, SpecError::TooLarge(n) if n > u128::from(MAX_PAIRS)),
                "{set:?}: {err:?}"
            );
            assert!(err.to_string().starts_with("scan too large"), "{err}");
        }
        let err = TargetSet::new(&nets(&["198.18.0.2", "::/0"]), &[]).unwrap_err();
        assert_eq!(err, SpecError::TooLarge(u128::MAX));
        assert!(
            err.to_string()
                .contains("at least 340282366920938463463374607431768211455"),
            "{err}"
        );
        // The same through the range form.
        let all = parse_target("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").unwrap();
        assert_eq!(
            TargetSet::from_ranges(&[all], &[]),
            Err(SpecError::TooLarge(u128::MAX))
        );
        // The largest set that fits is still accepted.
        assert_eq!(
            TargetSet::new(&nets(&["2001:2::/92"]), &[]).unwrap().len(),
            MAX_PAIRS
        );
    }
}
