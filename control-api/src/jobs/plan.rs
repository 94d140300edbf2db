//! Cutting a scan into chunk jobs: hosts x port ranges, each chunk at most a given number of
//! probes (about a second of one engine's sending by default). Pure.
//!
//! A chunk names its hosts as the engine's target strings: single addresses and inclusive
//! `first-last` ranges (`core::targets::parse_target`), cut from the scan's [`TargetSet`]
//! by index, so a chunk's row and queue payload grow with the number of address ranges it
//! spans (one, for a CIDR), never with its number of hosts: a one-port scan of a /16 is 4
//! chunks of one range each, not 65,536 listed addresses.

use portscope_core::targets::{parse_target, TargetSet};
use std::net::IpAddr;

/// Probes per chunk by default: ~1 s at the engine's lab rate (250,000 probes/s) would be
/// 250,000; a quarter of a host's ports keeps chunks short enough to move quickly when a
/// node dies and many enough to spread over a few nodes.
pub const DEFAULT_CHUNK_PROBES: u32 = 16_384;

/// One planned chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Hosts, as the engine's targets: addresses and `first-last` ranges.
    pub targets: Vec<String>,
    /// Port spec, `lo-hi`.
    pub ports: String,
    /// Probes it sends (hosts x ports, before retries).
    pub probes: u64,
}

/// The hosts of a scan by index (`0..len`), cut into target strings.
struct Hosts<'a> {
    set: &'a TargetSet,
    /// The indices of each address range's first and last address.
    spans: Vec<(u64, u64)>,
}

impl<'a> Hosts<'a> {
    fn new(set: &'a TargetSet) -> Self {
        let index = |a| set.index_of(a).expect("a range's ends are in its set");
        let spans = set.ranges().map(|(a, b)| (index(a), index(b))).collect();
        Hosts { set, spans }
    }

    fn len(&self) -> u64 {
        self.set.len()
    }

    /// Hosts `from..to` as target strings: one per address range they touch.
    fn targets(&self, from: u64, to: u64) -> Vec<String> {
        let at = self.spans.partition_point(|s| s.0 <= from) - 1;
        let mut out = Vec::new();
        for &(first, last) in &self.spans[at..] {
            if first >= to {
                break;
            }
            let lo = self.set.addr(from.max(first));
            let hi = self.set.addr((to - 1).min(last));
            out.push(if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            });
        }
        out
    }

    /// `(first index, count)` of consecutive groups of at most `per` hosts.
    fn groups(&self, per: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let per = per.max(1);
        (0..self.len().div_ceil(per)).map(move |g| {
            let from = g * per;
            (from, per.min(self.len() - from))
        })
    }
}

/// Addresses in `a..=b` (a parsed target range).
fn span_len(a: IpAddr, b: IpAddr) -> u64 {
    let n = |x: IpAddr| match x {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    };
    (n(b) - n(a) + 1) as u64
}

/// The set of `hosts` (duplicates merged, sorted), or `None` when there are none.
pub fn host_set(hosts: &[IpAddr]) -> Option<TargetSet> {
    let ranges: Vec<(IpAddr, IpAddr)> = hosts.iter().map(|&h| (h, h)).collect();
    TargetSet::from_ranges(&ranges, &[]).ok()
}

/// How many addresses a chunk's target strings name (unreadable ones count as nothing).
pub fn target_count(targets: &[String]) -> u64 {
    targets
        .iter()
        .filter_map(|t| parse_target(t).ok())
        .map(|(a, b)| span_len(a, b))
        .sum()
}

/// Every port of every host in `hosts` (1..=65535), in chunks of at most `chunk_probes`
/// probes: a host's ports are cut into equal ranges when it has more ports than that;
/// otherwise whole hosts are grouped, as many as fit.
pub fn plan_deep(hosts: &[IpAddr], chunk_probes: u32) -> Vec<ChunkSpec> {
    host_set(hosts).map_or_else(Vec::new, |set| plan(&set, 1, 65_535, chunk_probes))
}

/// Ports `lo..=hi` of every host in `hosts`, in chunks of at most `chunk_probes` probes.
pub fn plan(hosts: &TargetSet, lo: u16, hi: u16, chunk_probes: u32) -> Vec<ChunkSpec> {
    if lo > hi {
        return Vec::new();
    }
    let ports: Vec<u16> = (lo..=hi).collect();
    plan_ports(hosts, &ports, chunk_probes)
}

/// `ports` (sorted, distinct) of every host in `hosts`, in chunks of at most
/// `chunk_probes` probes: the port list is cut into pieces of at most that many ports when
/// it is longer; otherwise whole hosts are grouped, as many as fit (consecutive hosts by
/// index, so a group of a CIDR is one range).
pub fn plan_ports(hosts: &TargetSet, ports: &[u16], chunk_probes: u32) -> Vec<ChunkSpec> {
    let per = u64::from(chunk_probes.max(1));
    let n = ports.len() as u64;
    if ports.is_empty() {
        return Vec::new();
    }
    let hosts = Hosts::new(hosts);
    if n <= per {
        let spec = port_spec(ports);
        return hosts
            .groups(per / n)
            .map(|(from, count)| ChunkSpec {
                targets: hosts.targets(from, from + count),
                ports: spec.clone(),
                probes: n * count,
            })
            .collect();
    }
    let pieces = n.div_ceil(per);
    let size = n.div_ceil(pieces) as usize;
    let specs: Vec<(String, u64)> = ports
        .chunks(size)
        .map(|p| (port_spec(p), p.len() as u64))
        .collect();
    (0..hosts.len())
        .flat_map(|h| {
            let targets = hosts.targets(h, h + 1);
            specs.iter().map(move |(spec, n)| ChunkSpec {
                targets: targets.clone(),
                ports: spec.clone(),
                probes: *n,
            })
        })
        .collect()
}

/// Sorted, distinct ports as a spec of ranges (`22,80-81`).
pub fn port_spec(ports: &[u16]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let lo = ports[i];
        let mut hi = lo;
        while i + 1 < ports.len() && u32::from(ports[i + 1]) == u32::from(hi) + 1 {
            i += 1;
            hi = ports[i];
        }
        out.push(if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        });
        i += 1;
    }
    out.join(",")
}

/// How many ports a port spec of `lo-hi` ranges and single ports (comma-separated) names;
/// `-` is all 65,535. Unreadable parts count as nothing.
pub fn spec_ports(spec: &str) -> u64 {
    if spec.trim() == "-" {
        return 65_535;
    }
    spec.split(',')
        .filter_map(|part| {
            let (lo, hi) = part
                .trim()
                .split_once('-')
                .unwrap_or((part.trim(), part.trim()));
            let (lo, hi): (u16, u16) = (lo.parse().ok()?, hi.parse().ok()?);
            (lo <= hi).then(|| u64::from(hi - lo) + 1)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;
    use portscope_core::targets::PortSet;
    use std::collections::BTreeSet;

    fn hosts(n: u8) -> Vec<IpAddr> {
        (1..=n).map(|k| IpAddr::from([198, 19, 0, k])).collect()
    }

    fn set(n: u8) -> TargetSet {
        host_set(&hosts(n)).unwrap()
    }

    /// Every (host, port) pair of the chunks, and how many there were (each pair once when
    /// the two agree).
    fn pairs(chunks: &[ChunkSpec]) -> (usize, BTreeSet<(IpAddr, u16)>) {
        let mut all = BTreeSet::new();
        let mut count = 0;
        for c in chunks {
            let ports = PortSet::parse(&c.ports).unwrap();
            let set = TargetSet::from_ranges(
                &c.targets
                    .iter()
                    .map(|t| parse_target(t).unwrap())
                    .collect::<Vec<_>>(),
                &[],
            )
            .unwrap();
            for h in 0..set.len() {
                for &p in ports.as_slice() {
                    count += 1;
                    all.insert((set.addr(h), p));
                }
            }
            assert_eq!(c.probes, target_count(&c.targets) * ports.len());
        }
        (count, all)
    }

    #[test]
    fn deep_plans_cover_every_pair_once() {
        let chunks = plan_deep(&hosts(3), DEFAULT_CHUNK_PROBES);
        assert_eq!(chunks.len(), 12, "4 chunks a host");
        assert!(chunks.iter().all(|c| c.probes <= 16_384));
        assert_eq!(chunks[4].targets, ["198.19.0.2"]);
        let (count, all) = pairs(&chunks);
        assert_eq!((count, all.len()), (3 * 65_535, 3 * 65_535));
    }

    #[test]
    fn short_port_ranges_group_hosts_as_ranges() {
        let chunks = plan(&set(5), 1, 1000, 2500);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].targets, ["198.19.0.1-198.19.0.2"]);
        assert_eq!(chunks[2].targets, ["198.19.0.5"]);
        let (count, all) = pairs(&chunks);
        assert_eq!((count, all.len()), (5000, 5000));
        assert!(plan_deep(&[], 5).is_empty());
        assert_eq!(plan(&set(1), 7, 7, 0)[0].ports, "7");
        assert_eq!(spec_ports("1-16384"), 16_384);
        assert_eq!(spec_ports("22,80-81"), 3);
        assert_eq!(spec_ports("-"), 65_535);
    }

    #[test]
    fn a_group_across_gaps_names_each_range_it_touches() {
        let hosts: Vec<IpAddr> = ["198.19.0.1", "198.19.0.2", "198.19.0.9", "2001:2::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let chunks = plan_ports(&host_set(&hosts).unwrap(), &[22], 3);
        let targets: Vec<&[String]> = chunks.iter().map(|c| &c.targets[..]).collect();
        assert_eq!(
            targets,
            [
                &["198.19.0.1-198.19.0.2".to_string(), "198.19.0.9".into()][..],
                &["2001:2::1".to_string()][..],
            ]
        );
        assert_eq!(target_count(chunks[0].targets.as_slice()), 3);
        assert_eq!(pairs(&chunks).0, 4);
    }

    #[test]
    fn port_lists_plan_like_ranges() {
        let all: Vec<u16> = (1..=65_535).collect();
        let deep = plan_ports(&set(2), &all, DEFAULT_CHUNK_PROBES);
        assert_eq!(deep, plan_deep(&hosts(2), DEFAULT_CHUNK_PROBES));
        let few = plan_ports(&set(3), &[22, 80, 81, 443], 8);
        assert_eq!(few.len(), 2);
        assert_eq!(few[0].ports, "22,80-81,443");
        assert_eq!((few[0].probes, few[1].probes), (8, 4));
        let cut = plan_ports(&set(1), &[1, 2, 3, 5, 7], 2);
        let specs: Vec<&str> = cut.iter().map(|c| c.ports.as_str()).collect();
        assert_eq!(specs, ["1-2", "3,5", "7"]);
    }

    /// A one-port scan of a /8 (16,777,216 hosts, never probed: planning only) is 1,024
    /// chunks of one range each, a few dozen bytes a chunk, that tile the /8 exactly.
    #[test]
    fn a_one_port_slash_8_plans_in_ranges_not_addresses() {
        let net: IpNet = "198.0.0.0/8".parse().unwrap();
        let set = TargetSet::new(&[net], &[]).unwrap();
        let chunks = plan_ports(&set, &[443], DEFAULT_CHUNK_PROBES);
        assert_eq!(chunks.len(), 1024);
        let bytes: usize = chunks.iter().map(|c| c.targets.concat().len()).sum();
        assert!(bytes < 1024 * 40, "{bytes} bytes of targets");
        let mut next = u32::from(std::net::Ipv4Addr::new(198, 0, 0, 0));
        for c in &chunks {
            assert_eq!(c.targets.len(), 1, "{:?}", c.targets);
            let (a, b) = parse_target(&c.targets[0]).unwrap();
            let (IpAddr::V4(a), IpAddr::V4(b)) = (a, b) else {
                panic!("{:?}", c.targets)
            };
            assert_eq!(u32::from(a), next, "each chunk starts where the last ended");
            assert_eq!(u32::from(b) - u32::from(a) + 1, 16_384);
            assert_eq!(c.probes, 16_384);
            next = u32::from(b).wrapping_add(1);
        }
        assert_eq!(next, u32::from(std::net::Ipv4Addr::new(199, 0, 0, 0)));
    }
}
