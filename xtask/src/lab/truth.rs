//! Ground truth of a lab: which port of which host is open, closed or filtered. Pure data, no I/O except `load`/`save`.
//!
//! The truth is computed from the lab name and host count alone, so the listener process, the
//! nftables ruleset and the tests all derive their behaviour from the same value.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Ports open on every host (a wildcard listener serves them).
pub const BASE_OPEN: [u16; 13] = [
    22, 25, 80, 443, 3306, 5432, 6379, 8080, 8443, 27017, 31337, 50000, 65535,
];
/// Ports whose SYNs every host drops without an answer.
pub const BASE_FILTERED_SILENT: [u16; 8] = [135, 139, 445, 1433, 3389, 5900, 9000, 9001];
/// Ports every host answers with ICMP administratively prohibited (3/13, ICMPv6 1/1).
pub const BASE_FILTERED_ICMP: [u16; 5] = [23, 111, 2049, 6000, 11211];
/// With `LabConfig::icmp_range`, these ports of every host answer ICMP administratively
/// prohibited as well (clear of every other list: 20000 + k, 30000 + k, `BASE_*`).
pub const ICMP_RANGE: std::ops::RangeInclusive<u16> = 40000..=40999;
/// Extra host `k` also has port `PER_HOST_OPEN_BASE + k` open.
pub const PER_HOST_OPEN_BASE: u16 = 20000;
/// Extra host `k` also has port `PER_HOST_SILENT_BASE + k` silently filtered.
pub const PER_HOST_SILENT_BASE: u16 = 30000;
/// Most extra hosts a lab may have: keeps `20000 + k` and `30000 + k` clear of the base ports
/// (the first collision would be 30000 + 1337 = 31337).
pub const MAX_EXTRA_HOSTS: u32 = 1000;

/// The scanner's addresses.
pub const SCANNER_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const SCANNER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
/// The primary target's addresses (on the target end of the veth).
pub const TARGET_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const TARGET_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);

/// The IPv4 extra-host range, 198.19.0.0/16 (a `local` route on the target): in a wide lab
/// (`Truth::wide`) every address of it answers.
pub const EXTRA_V4_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 19, 0, 0), 16);

/// Whether `addr` is in `EXTRA_V4_NET`.
pub fn in_extra_v4(addr: IpAddr) -> bool {
    let (net, len) = EXTRA_V4_NET;
    match addr {
        IpAddr::V4(a) => u32::from(a) >> (32 - len) == u32::from(net) >> (32 - len),
        IpAddr::V6(_) => false,
    }
}

/// Address of extra IPv4 host `k` (1-based): 198.19.0.0 + k.
pub fn extra_v4(k: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + k)
}

/// Address of extra IPv6 host `k` (1-based): 2001:2:0:1::k.
pub fn extra_v6(k: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(Ipv6Addr::new(0x2001, 2, 0, 1, 0, 0, 0, 0)) + u128::from(k))
}

/// What a SYN to one port of one host gets back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expected {
    /// SYN-ACK.
    Open,
    /// RST.
    Closed,
    /// Nothing at all.
    FilteredSilent,
    /// ICMP destination unreachable, administratively prohibited.
    FilteredIcmp,
}

/// One host's ports. Lists are sorted and disjoint; every other port in 1..=65535 is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTruth {
    pub addr: IpAddr,
    pub open: Vec<u16>,
    pub filtered_silent: Vec<u16>,
    pub filtered_icmp: Vec<u16>,
}

impl HostTruth {
    /// The expected answer for `port`. Port 0 is never listed, so it is `Closed`.
    pub fn expected(&self, port: u16) -> Expected {
        if self.open.binary_search(&port).is_ok() {
            Expected::Open
        } else if self.filtered_silent.binary_search(&port).is_ok() {
            Expected::FilteredSilent
        } else if self.filtered_icmp.binary_search(&port).is_ok() {
            Expected::FilteredIcmp
        } else {
            Expected::Closed
        }
    }

    /// Number of closed ports in 1..=65535.
    pub fn closed_count(&self) -> usize {
        65535 - self.open.len() - self.filtered_silent.len() - self.filtered_icmp.len()
    }

    /// Of `ports`, those a scan should report open and those it should report filtered
    /// (silent or ICMP); the rest are closed.
    pub fn open_and_filtered(&self, ports: &[u16]) -> (BTreeSet<u16>, BTreeSet<u16>) {
        let of = |f: fn(Expected) -> bool| -> BTreeSet<u16> {
            ports
                .iter()
                .copied()
                .filter(|p| f(self.expected(*p)))
                .collect()
        };
        (
            of(|e| e == Expected::Open),
            of(|e| matches!(e, Expected::FilteredSilent | Expected::FilteredIcmp)),
        )
    }

    fn base(addr: IpAddr) -> HostTruth {
        HostTruth {
            addr,
            open: BASE_OPEN.to_vec(),
            filtered_silent: BASE_FILTERED_SILENT.to_vec(),
            filtered_icmp: BASE_FILTERED_ICMP.to_vec(),
        }
    }

    /// An unlisted address of a wide lab: only the wildcard listeners (`BASE_OPEN`) answer
    /// with SYN-ACK, every other port with RST, nothing is filtered.
    fn wide(addr: IpAddr) -> HostTruth {
        HostTruth {
            addr,
            open: BASE_OPEN.to_vec(),
            filtered_silent: Vec::new(),
            filtered_icmp: Vec::new(),
        }
    }

    fn extra(addr: IpAddr, k: u32) -> HostTruth {
        let k = u16::try_from(k).expect("k <= MAX_EXTRA_HOSTS");
        let mut host = HostTruth::base(addr);
        host.open.push(PER_HOST_OPEN_BASE + k);
        host.open.sort_unstable();
        host.filtered_silent.push(PER_HOST_SILENT_BASE + k);
        host.filtered_silent.sort_unstable();
        host
    }
}

/// Asserts a scan's `reported` answers, by (address, port), are the truth of `hosts` x
/// `ports`: `judge(host, port, truth, answer)` says whether one pair's answer (or its
/// absence) is right. Panics with the first wrong pairs, or with reported pairs outside
/// `hosts` x `ports`. For the end-to-end tests of the engine and its daemons.
pub fn assert_reports_match<G: Debug>(
    hosts: &[&HostTruth],
    ports: &[u16],
    mut reported: BTreeMap<(IpAddr, u16), G>,
    judge: impl Fn(&HostTruth, u16, Expected, Option<&G>) -> bool,
) {
    let mut wrong = Vec::new();
    for h in hosts {
        for &port in ports {
            let want = h.expected(port);
            let got = reported.remove(&(h.addr, port));
            if !judge(h, port, want, got.as_ref()) {
                wrong.push(format!("{}:{port} expected {want:?}, got {got:?}", h.addr));
            }
        }
    }
    assert!(
        reported.is_empty(),
        "results for pairs outside the scan: {:?}",
        reported.keys().take(5).collect::<Vec<_>>()
    );
    assert!(
        wrong.is_empty(),
        "{} ports wrong, first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// Everything a test needs to judge a scan of the lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    /// Lab name (`LabConfig::name`).
    pub lab: String,
    pub scanner_ns: String,
    pub target_ns: String,
    pub scanner_v4: IpAddr,
    pub scanner_v6: IpAddr,
    /// Primary target (v4, v6), then extra v4 hosts 1..=N, then extra v6 hosts 1..=N.
    /// Addresses in the extra ranges (198.19.0.0/16, 2001:2:0:1::/64) that are not listed
    /// do not answer at all, unless `wide`.
    pub hosts: Vec<HostTruth>,
    /// Wide lab (`LabConfig::wide`): every unlisted address of 198.19.0.0/16 answers too, with
    /// `BASE_OPEN` open (port 80 among them) and every other port closed. IPv6 is unchanged.
    #[serde(default)]
    pub wide: bool,
}

impl Truth {
    /// The truth of lab `name` with `extra_hosts` extra hosts per family.
    ///
    /// # Panics
    /// If `extra_hosts > MAX_EXTRA_HOSTS` (`LabConfig` validation rejects that first).
    pub fn compute(name: &str, extra_hosts: u32) -> Truth {
        assert!(extra_hosts <= MAX_EXTRA_HOSTS, "too many extra hosts");
        let mut hosts = vec![
            HostTruth::base(TARGET_V4.into()),
            HostTruth::base(TARGET_V6.into()),
        ];
        hosts.extend((1..=extra_hosts).map(|k| HostTruth::extra(extra_v4(k).into(), k)));
        hosts.extend((1..=extra_hosts).map(|k| HostTruth::extra(extra_v6(k).into(), k)));
        Truth {
            lab: name.to_owned(),
            scanner_ns: format!("{name}-s"),
            target_ns: format!("{name}-t"),
            scanner_v4: SCANNER_V4.into(),
            scanner_v6: SCANNER_V6.into(),
            hosts,
            wide: false,
        }
    }

    /// The same truth with `wide` set as given.
    pub fn with_wide(self, wide: bool) -> Truth {
        Truth { wide, ..self }
    }

    /// The same truth, with `ICMP_RANGE` answered by ICMP on every host when `on`.
    pub fn with_icmp_range(mut self, on: bool) -> Truth {
        if on {
            for h in &mut self.hosts {
                h.filtered_icmp.extend(ICMP_RANGE);
                h.filtered_icmp.sort_unstable();
                h.filtered_icmp.dedup();
            }
        }
        self
    }

    /// The host with address `addr`, if the lab lists one (a wide lab's unlisted addresses
    /// are not listed: see `expected`).
    pub fn host(&self, addr: IpAddr) -> Option<&HostTruth> {
        self.hosts.iter().find(|h| h.addr == addr)
    }

    /// The expected answer for `addr:port`, or `None` if no such host exists (it stays silent).
    pub fn expected(&self, addr: IpAddr, port: u16) -> Option<Expected> {
        match self.host(addr) {
            Some(h) => Some(h.expected(port)),
            None if self.wide && in_extra_v4(addr) => Some(HostTruth::wide(addr).expected(port)),
            None => None,
        }
    }

    /// Load the truth of the running lab `name` from its state directory.
    pub fn load(name: &str) -> anyhow::Result<Truth> {
        Truth::load_from(&super::Lab::state_dir_for(name).join("truth.json"))
    }

    /// Load a truth file.
    pub fn load_from(path: &Path) -> anyhow::Result<Truth> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {} (is the lab up?)", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Write the truth as pretty JSON.
    pub fn save_to(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_lists_are_sorted_and_disjoint() {
        for list in [&BASE_OPEN[..], &BASE_FILTERED_SILENT, &BASE_FILTERED_ICMP] {
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{list:?} not sorted");
        }
        let all: std::collections::BTreeSet<u16> = BASE_OPEN
            .iter()
            .chain(&BASE_FILTERED_SILENT)
            .chain(&BASE_FILTERED_ICMP)
            .copied()
            .collect();
        assert_eq!(all.len(), 13 + 8 + 5);
    }

    #[test]
    fn extra_hosts_differ() {
        let truth = Truth::compute("x", MAX_EXTRA_HOSTS);
        assert_eq!(truth.hosts.len(), 2 + 2 * MAX_EXTRA_HOSTS as usize);
        for h in &truth.hosts {
            let mut all: Vec<u16> = h
                .open
                .iter()
                .chain(&h.filtered_silent)
                .chain(&h.filtered_icmp)
                .copied()
                .collect();
            let n = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), n, "{} has overlapping lists", h.addr);
        }
        let h3: IpAddr = "198.19.0.3".parse().unwrap();
        let h4: IpAddr = "2001:2:0:1::4".parse().unwrap();
        assert_eq!(truth.expected(h3, 20003), Some(Expected::Open));
        assert_eq!(truth.expected(h3, 20004), Some(Expected::Closed));
        assert_eq!(truth.expected(h3, 30003), Some(Expected::FilteredSilent));
        assert_eq!(truth.expected(h4, 20004), Some(Expected::Open));
        assert_eq!(truth.expected(h4, 23), Some(Expected::FilteredIcmp));
        assert_eq!(
            truth.expected(TARGET_V4.into(), 20001),
            Some(Expected::Closed)
        );
        assert_eq!(
            truth.expected(TARGET_V6.into(), 65535),
            Some(Expected::Open)
        );
        assert_eq!(
            truth.expected("198.19.3.232".parse().unwrap(), 22),
            Some(Expected::Open)
        );
        assert_eq!(truth.expected("198.19.3.233".parse().unwrap(), 22), None);
        assert_eq!(
            truth.host(TARGET_V4.into()).unwrap().closed_count(),
            65535 - 26
        );
    }

    #[test]
    fn wide_lab_answers_on_every_extra_v4_address() {
        let truth = Truth::compute("x", 2).with_wide(true);
        let unlisted: IpAddr = "198.19.200.7".parse().unwrap();
        assert!(truth.host(unlisted).is_none());
        assert_eq!(truth.expected(unlisted, 80), Some(Expected::Open));
        assert_eq!(truth.expected(unlisted, 81), Some(Expected::Closed));
        assert_eq!(truth.expected(unlisted, 135), Some(Expected::Closed));
        for edge in ["198.19.0.0", "198.19.255.255"] {
            assert_eq!(
                truth.expected(edge.parse().unwrap(), 80),
                Some(Expected::Open)
            );
        }
        // Listed hosts keep their own truth; outside the range and IPv6 nothing changes.
        let h2: IpAddr = "198.19.0.2".parse().unwrap();
        assert_eq!(truth.expected(h2, 30002), Some(Expected::FilteredSilent));
        assert_eq!(truth.expected("198.20.0.1".parse().unwrap(), 80), None);
        assert_eq!(truth.expected("2001:2:0:1::9".parse().unwrap(), 80), None);
        assert!(!in_extra_v4("198.18.0.2".parse().unwrap()));
        assert_eq!(
            Truth::compute("x", 2).expected(unlisted, 80),
            None,
            "a narrow lab's unlisted addresses stay silent"
        );
    }

    #[test]
    fn icmp_range_is_icmp_on_every_host_and_clear_of_the_rest() {
        let plain = Truth::compute("x", 3);
        let truth = plain.clone().with_icmp_range(true);
        assert_eq!(plain.clone().with_icmp_range(false), plain);
        for (h, p) in truth.hosts.iter().zip(&plain.hosts) {
            for port in ICMP_RANGE {
                assert_eq!(p.expected(port), Expected::Closed, "{port}");
                assert_eq!(h.expected(port), Expected::FilteredIcmp, "{port}");
            }
            assert_eq!(h.expected(23), Expected::FilteredIcmp);
            assert_eq!(h.closed_count(), p.closed_count() - ICMP_RANGE.len());
        }
    }

    #[test]
    fn json_round_trip() {
        let truth = Truth::compute("rt", 3);
        let text = serde_json::to_string(&truth).unwrap();
        assert!(text.contains("\"198.19.0.3\""), "{text}");
        assert_eq!(serde_json::from_str::<Truth>(&text).unwrap(), truth);
        let wide = truth.clone().with_wide(true);
        let text = serde_json::to_string(&wide).unwrap();
        assert_eq!(serde_json::from_str::<Truth>(&text).unwrap(), wide);
        // Truth files written before `wide` existed still load, as narrow labs.
        let old = text.replace(",\"wide\":true", "");
        assert_eq!(serde_json::from_str::<Truth>(&old).unwrap(), truth);
    }
}
