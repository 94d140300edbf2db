//! How a scan is cut into chunks (by port index), and a cheap bound on how many ports a port
//! spec expands to, checked before the spec is expanded. Pure functions.

use portscope_proto::ScanKind;
use std::ops::Range;

/// Chunks of a deep scan (and of any scan with more than [`CHUNK_THRESHOLD`] ports).
pub const DEEP_CHUNKS: usize = 32;
/// Port lists longer than this are chunked whatever their kind.
pub const CHUNK_THRESHOLD: usize = 2048;

/// Port-index ranges of the chunks of a scan over `ports` ports: one chunk for short lists,
/// otherwise [`DEEP_CHUNKS`] equal ranges (the last one smaller), fewer only when there are
/// fewer ports than that. 65,535 ports give 31 chunks of 2048 and one of 2047.
pub fn chunk_ranges(ports: usize, kind: ScanKind) -> Vec<Range<usize>> {
    if ports == 0 {
        return Vec::new();
    }
    if kind != ScanKind::Deep && ports <= CHUNK_THRESHOLD {
        return std::iter::once(0..ports).collect();
    }
    let size = ports.div_ceil(DEEP_CHUNKS);
    (0..ports)
        .step_by(size)
        .map(|lo| lo..(lo + size).min(ports))
        .collect()
}

/// An upper bound on the number of ports `spec` lists (duplicates counted), read with the
/// grammar of `PortSet::parse` without expanding anything. Malformed parts count as zero
/// (the real parser rejects them). Lets the daemon refuse `1-65535,1-65535,...` before it
/// allocates for it.
pub fn port_spec_size(spec: &str) -> u64 {
    let spec = spec.trim();
    if spec == "-" {
        return 65_535;
    }
    spec.split(',')
        .map(str::trim)
        .map(|part| {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let lo = match lo.trim() {
                "" => Some(1),
                s => s.parse::<u16>().ok(),
            };
            let hi = match hi.trim() {
                "" => Some(65_535),
                s => s.parse::<u16>().ok(),
            };
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo <= hi => u64::from(hi - lo) + 1,
                _ => 0,
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_is_32_chunks_of_2048() {
        let r = chunk_ranges(65_535, ScanKind::Deep);
        assert_eq!(r.len(), 32);
        assert!(r[..31].iter().all(|c| c.len() == 2048));
        assert_eq!(r[31], 63_488..65_535);
        // Contiguous and covering.
        assert!(r.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(r[0].start, 0);
    }

    #[test]
    fn small_lists_are_one_chunk_long_ones_32() {
        let one = |n: usize, k| {
            let r = chunk_ranges(n, k);
            (r.len(), r[0].clone())
        };
        assert_eq!(one(3, ScanKind::Fast), (1, 0..3));
        assert_eq!(one(2048, ScanKind::Custom), (1, 0..2048));
        for n in [2049, 2080, 3000, 40_000, 65_535] {
            let r = chunk_ranges(n, ScanKind::Custom);
            assert_eq!(r.len(), 32, "{n} ports");
            assert_eq!(r.last().unwrap().end, n);
        }
        // Deep with fewer ports than chunks: one port per chunk.
        assert_eq!(chunk_ranges(2, ScanKind::Deep), [0..1, 1..2]);
        assert!(chunk_ranges(0, ScanKind::Fast).is_empty());
    }

    #[test]
    fn spec_size_bounds_without_expanding() {
        assert_eq!(port_spec_size("-"), 65_535);
        assert_eq!(port_spec_size("22,80,1000-2000"), 1003);
        assert_eq!(port_spec_size("-100"), 100);
        assert_eq!(port_spec_size("65000-"), 536);
        assert_eq!(port_spec_size("80,80"), 2);
        assert_eq!(port_spec_size("x,9-1,99999"), 0);
        let bomb = vec!["1-65535"; 10_000].join(",");
        assert_eq!(port_spec_size(&bomb), 655_350_000);
    }
}
