//! Port specs (`22,80,1000-2000`, `-` for 1-65535) validated into a [`PortSet`]: sorted,
//! de-duplicated ports that map an index to a port and back through their runs of
//! consecutive ports, with no per-port table.
//!
//! The lookups run once per probe and once per reply in random port order. A 65,536-entry
//! table (128 KiB) missed the cache on most of them under the kernel's per-packet work:
//! 93% of `ScanSpace::classify`'s samples and 45% of the send loop's were that one load.
//! A full range is one run; nmap's top 1,000 ports are a few hundred, searched in a few
//! KiB.

use crate::targets::SpecError;

/// A run of consecutive ports, and the index of its first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    lo: u16,
    hi: u16,
    /// Index of `lo` in the set.
    start: u32,
}

/// A validated, sorted, de-duplicated set of TCP ports.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet {
    ports: Vec<u16>,
    /// The ports as maximal runs, ascending.
    runs: Box<[Run]>,
}

impl std::fmt::Debug for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortSet({} ports)", self.ports.len())
    }
}

impl PortSet {
    /// Parses `22,80,1000-2000`, `-` or `1-65535`. Port 0 is not scannable.
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        let bad = || SpecError::BadPorts(spec.to_string());
        let spec = spec.trim();
        if spec == "-" {
            return Ok(Self::from_ports(1..=65535));
        }
        let mut ports = Vec::new();
        for part in spec.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(bad());
            }
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let num = |s: &str, empty: u16| -> Result<u16, SpecError> {
                if s.is_empty() {
                    return Ok(empty);
                }
                let n: u64 = s.parse().map_err(|_| bad())?;
                match u16::try_from(n) {
                    Ok(p) if p > 0 => Ok(p),
                    _ => Err(SpecError::PortOutOfRange {
                        spec: spec.to_string(),
                        port: n,
                    }),
                }
            };
            let (lo, hi) = (num(lo, 1)?, num(hi, 65535)?);
            if lo > hi {
                return Err(SpecError::PortsBackwards { lo: hi, hi: lo });
            }
            ports.extend(lo..=hi);
        }
        if ports.is_empty() {
            return Err(bad());
        }
        Ok(Self::from_ports(ports))
    }

    /// Builds from any port list (0 is dropped).
    pub fn from_ports(ports: impl IntoIterator<Item = u16>) -> Self {
        let mut ports: Vec<u16> = ports.into_iter().filter(|&p| p != 0).collect();
        ports.sort_unstable();
        ports.dedup();
        let mut runs: Vec<Run> = Vec::new();
        for (i, &p) in ports.iter().enumerate() {
            match runs.last_mut() {
                Some(r) if r.hi.checked_add(1) == Some(p) => r.hi = p,
                _ => runs.push(Run {
                    lo: p,
                    hi: p,
                    start: i as u32,
                }),
            }
        }
        PortSet {
            ports,
            runs: runs.into_boxed_slice(),
        }
    }

    /// Number of ports.
    pub fn len(&self) -> u64 {
        self.ports.len() as u64
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The port at `index` (`index < self.len()`).
    #[inline]
    pub fn port(&self, index: u64) -> u16 {
        let i = index as u32;
        let r = match &*self.runs {
            [one] => one,
            runs => &runs[runs.partition_point(|r| r.start <= i) - 1],
        };
        debug_assert!(index < self.len());
        r.lo + (i - r.start) as u16
    }

    /// The index of `port`, if scanned.
    #[inline]
    pub fn index_of(&self, port: u16) -> Option<u64> {
        let r = match &*self.runs {
            [one] => one,
            runs => runs.get(runs.partition_point(|r| r.lo <= port).checked_sub(1)?)?,
        };
        let off = port.wrapping_sub(r.lo);
        (off <= r.hi - r.lo).then(|| u64::from(r.start + u32::from(off)))
    }

    /// The ports in ascending order.
    pub fn as_slice(&self) -> &[u16] {
        &self.ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        assert_eq!(
            PortSet::parse("22,80,1000-1002").unwrap().as_slice(),
            &[22, 80, 1000, 1001, 1002]
        );
        assert_eq!(PortSet::parse("-").unwrap().len(), 65535);
        assert_eq!(PortSet::parse("80,80,22").unwrap().as_slice(), &[22, 80]);
        assert_eq!(PortSet::parse("65530-").unwrap().len(), 6);
        for bad in ["", "0", "a", "5-4", "70000", "1,,2"] {
            assert!(PortSet::parse(bad).is_err(), "{bad}");
        }
        let msg = |s: &str| PortSet::parse(s).unwrap_err().to_string();
        assert_eq!(msg("0"), "port 0 in `0` is out of range: ports are 1-65535");
        assert_eq!(
            msg("22,70000"),
            "port 70000 in `22,70000` is out of range: ports are 1-65535"
        );
        assert_eq!(
            msg("80-20"),
            "port range 80-20 is backwards: did you mean 20-80?"
        );
        let p = PortSet::parse("443,22").unwrap();
        assert_eq!(p.index_of(443), Some(1));
        assert_eq!(p.index_of(80), None);
    }

    #[test]
    fn index_and_port_agree_across_runs() {
        for spec in [
            "-",
            "1",
            "65535",
            "1-3,5,7-9,65535",
            "22,80,443,1000-1002",
            "2-65535",
        ] {
            let set = PortSet::parse(spec).unwrap();
            for (i, &p) in set.as_slice().iter().enumerate() {
                assert_eq!(set.port(i as u64), p, "{spec} #{i}");
                assert_eq!(set.index_of(p), Some(i as u64), "{spec} {p}");
            }
            let mut present = vec![false; 65536];
            for &p in set.as_slice() {
                present[usize::from(p)] = true;
            }
            for p in (0..=u16::MAX).filter(|&p| !present[usize::from(p)]) {
                assert_eq!(set.index_of(p), None, "{spec} {p}");
            }
        }
        let runs = |s: &str| PortSet::parse(s).unwrap().runs.len();
        assert_eq!(
            (runs("-"), runs("1-3,5,7-9,65535"), runs("1,2,3")),
            (1, 4, 1)
        );
    }
}
