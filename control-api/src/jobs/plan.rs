//! Cutting a scan into chunk jobs: hosts x port ranges, each chunk at most a given number of
//! probes (about a second of one engine's sending by default). Pure.

use std::net::IpAddr;

/// Probes per chunk by default: ~1 s at the engine's lab rate (250,000 probes/s) would be
/// 250,000; a quarter of a host's ports keeps chunks short enough to move quickly when a
/// node dies and many enough to spread over a few nodes.
pub const DEFAULT_CHUNK_PROBES: u32 = 16_384;

/// One planned chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Addresses.
    pub targets: Vec<String>,
    /// Port spec, `lo-hi`.
    pub ports: String,
    /// Probes it sends (targets x ports, before retries).
    pub probes: u64,
}

/// Every port of every host in `hosts` (1..=65535), in chunks of at most `chunk_probes`
/// probes: a host's ports are cut into equal ranges when it has more ports than that;
/// otherwise whole hosts are grouped, as many as fit.
pub fn plan_deep(hosts: &[IpAddr], chunk_probes: u32) -> Vec<ChunkSpec> {
    plan(hosts, 1, 65_535, chunk_probes)
}

/// Ports `lo..=hi` of every host in `hosts`, in chunks of at most `chunk_probes` probes.
pub fn plan(hosts: &[IpAddr], lo: u16, hi: u16, chunk_probes: u32) -> Vec<ChunkSpec> {
    let chunk_probes = u64::from(chunk_probes.max(1));
    if hosts.is_empty() || lo > hi {
        return Vec::new();
    }
    let ports = u64::from(hi - lo) + 1;
    if ports <= chunk_probes {
        let per_chunk = (chunk_probes / ports).max(1) as usize;
        return hosts
            .chunks(per_chunk)
            .map(|group| ChunkSpec {
                targets: group.iter().map(IpAddr::to_string).collect(),
                ports: format!("{lo}-{hi}"),
                probes: ports * group.len() as u64,
            })
            .collect();
    }
    let pieces = ports.div_ceil(chunk_probes);
    let size = ports.div_ceil(pieces);
    let mut out = Vec::new();
    for host in hosts {
        let mut start = u64::from(lo);
        while start <= u64::from(hi) {
            let end = (start + size - 1).min(u64::from(hi));
            out.push(ChunkSpec {
                targets: vec![host.to_string()],
                ports: format!("{start}-{end}"),
                probes: end - start + 1,
            });
            start = end + 1;
        }
    }
    out
}

/// `ports` (sorted, distinct) of every host in `hosts`, in chunks of at most
/// `chunk_probes` probes: the port list is cut into pieces of at most that many ports when
/// it is longer; otherwise whole hosts are grouped, as many as fit (a managed scan's plan).
pub fn plan_ports(hosts: &[IpAddr], ports: &[u16], chunk_probes: u32) -> Vec<ChunkSpec> {
    let per = chunk_probes.max(1) as usize;
    if hosts.is_empty() || ports.is_empty() {
        return Vec::new();
    }
    if ports.len() <= per {
        let spec = port_spec(ports);
        return hosts
            .chunks((per / ports.len()).max(1))
            .map(|group| ChunkSpec {
                targets: group.iter().map(IpAddr::to_string).collect(),
                ports: spec.clone(),
                probes: (ports.len() * group.len()) as u64,
            })
            .collect();
    }
    let pieces = ports.len().div_ceil(per);
    let size = ports.len().div_ceil(pieces);
    let specs: Vec<(String, u64)> = ports
        .chunks(size)
        .map(|p| (port_spec(p), p.len() as u64))
        .collect();
    hosts
        .iter()
        .flat_map(|h| {
            specs.iter().map(move |(spec, n)| ChunkSpec {
                targets: vec![h.to_string()],
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
    use std::collections::BTreeSet;

    fn hosts(n: u8) -> Vec<IpAddr> {
        (1..=n).map(|k| IpAddr::from([198, 19, 0, k])).collect()
    }

    /// Every (host, port) pair exactly once.
    fn pairs(chunks: &[ChunkSpec]) -> (usize, BTreeSet<(String, u16)>) {
        let mut all = BTreeSet::new();
        let mut count = 0;
        for c in chunks {
            let (lo, hi) = c.ports.split_once('-').unwrap();
            let (lo, hi): (u16, u16) = (lo.parse().unwrap(), hi.parse().unwrap());
            for t in &c.targets {
                for p in lo..=hi {
                    count += 1;
                    all.insert((t.clone(), p));
                }
            }
            assert_eq!(c.probes, c.targets.len() as u64 * (u64::from(hi - lo) + 1));
        }
        (count, all)
    }

    #[test]
    fn deep_plans_cover_every_pair_once() {
        let chunks = plan_deep(&hosts(3), DEFAULT_CHUNK_PROBES);
        assert_eq!(chunks.len(), 12, "4 chunks a host");
        assert!(chunks.iter().all(|c| c.probes <= 16_384));
        let (count, all) = pairs(&chunks);
        assert_eq!((count, all.len()), (3 * 65_535, 3 * 65_535));
    }

    #[test]
    fn short_port_ranges_group_hosts() {
        let chunks = plan(&hosts(5), 1, 1000, 2500);
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[0].targets.len(), 2);
        assert_eq!(chunks[2].targets.len(), 1);
        let (count, all) = pairs(&chunks);
        assert_eq!((count, all.len()), (5000, 5000));
        assert!(plan(&[], 1, 10, 5).is_empty());
        assert_eq!(plan(&hosts(1), 7, 7, 0).len(), 1);
        assert_eq!(spec_ports("1-16384"), 16_384);
        assert_eq!(spec_ports("22,80-81"), 3);
        assert_eq!(spec_ports("-"), 65_535);
    }

    #[test]
    fn port_lists_plan_like_ranges() {
        let all: Vec<u16> = (1..=65_535).collect();
        let deep = plan_ports(&hosts(2), &all, DEFAULT_CHUNK_PROBES);
        assert_eq!(deep, plan_deep(&hosts(2), DEFAULT_CHUNK_PROBES));
        let few = plan_ports(&hosts(3), &[22, 80, 81, 443], 8);
        assert_eq!(few.len(), 2);
        assert_eq!(few[0].ports, "22,80-81,443");
        assert_eq!((few[0].probes, few[1].probes), (8, 4));
        let cut = plan_ports(&hosts(1), &[1, 2, 3, 5, 7], 2);
        let specs: Vec<&str> = cut.iter().map(|c| c.ports.as_str()).collect();
        assert_eq!(specs, ["1-2", "3,5", "7"]);
    }
}
