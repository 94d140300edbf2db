//! The lab's scanner namespaces: one veth each into the target namespace, each with its own
//! source addresses, for labs with several scanning nodes (`LabConfig::scanners`).
//!
//! Scanner 1 is the lab's original scanner and keeps its names and addresses exactly:
//! `N-s`, `Ns0` / `Nt0`, 198.18.0.1/24 and 2001:2::1/64 (the target end 198.18.0.2 and
//! 2001:2::2, the primary target). Scanner `k` >= 2 gets:
//! - namespace `N-s<k>`, veth `Ns<k-1>` there and `Nt<k-1>` in the target namespace;
//! - 198.18.(k-1).1/24 and 2001:2:0:(100+k-1)::1/64 (hex), the target end .2 / ::2;
//! - routes to the primary target (198.18.0.2/32, 2001:2::2/128) and the extra hosts
//!   (198.19.0.0/16, 2001:2:0:1::/64) via the target end; nothing else, no default route.
//!
//! The target namespace does not forward (a new namespace's default), so scanners cannot
//! reach each other. The target ends of scanners >= 2 are not hosts of the truth: nobody
//! should scan them (the wildcard listener would answer there).

use std::ffi::OsStr;
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use super::exec::{ip, netns_exec};
use super::truth::{SCANNER_V4, SCANNER_V6, TARGET_V4, TARGET_V6};

/// Most scanner namespaces a lab may have.
pub const MAX_SCANNERS: u32 = 16;

/// One scanner namespace of a lab, with its veth and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanner {
    /// 1-based; scanner 1 is the lab's original scanner (`Lab::scanner_ns`).
    pub number: u32,
    /// The namespace: `N-s` for scanner 1, `N-s<k>` for scanner `k`.
    pub ns: String,
    /// The veth end inside `ns`.
    pub iface: String,
    /// The veth end inside the target namespace.
    pub peer_iface: String,
    /// The scanner's source addresses (on `iface`).
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    /// The target end's addresses (on `peer_iface`): the scanner's next hop.
    pub peer_v4: Ipv4Addr,
    pub peer_v6: Ipv6Addr,
}

impl Scanner {
    /// The layout of scanner `number` (1-based, at most `MAX_SCANNERS`) of lab `lab`.
    ///
    /// # Panics
    /// If `number` is 0 or above `MAX_SCANNERS` (`LabConfig` validation rejects that first).
    pub fn layout(lab: &str, number: u32) -> Scanner {
        assert!(
            (1..=MAX_SCANNERS).contains(&number),
            "scanner {number} out of range"
        );
        if number == 1 {
            return Scanner {
                number,
                ns: format!("{lab}-s"),
                iface: format!("{lab}s0"),
                peer_iface: format!("{lab}t0"),
                v4: SCANNER_V4,
                v6: SCANNER_V6,
                peer_v4: TARGET_V4,
                peer_v6: TARGET_V6,
            };
        }
        let i = u8::try_from(number - 1).expect("number <= MAX_SCANNERS");
        let net6 = 0x100 + u16::from(i);
        Scanner {
            number,
            ns: format!("{lab}-s{number}"),
            iface: format!("{lab}s{i}"),
            peer_iface: format!("{lab}t{i}"),
            v4: Ipv4Addr::new(198, 18, i, 1),
            v6: Ipv6Addr::new(0x2001, 2, 0, net6, 0, 0, 0, 1),
            peer_v4: Ipv4Addr::new(198, 18, i, 2),
            peer_v6: Ipv6Addr::new(0x2001, 2, 0, net6, 0, 0, 0, 2),
        }
    }

    /// `ip netns exec <ns> program`.
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        netns_exec(&self.ns, program)
    }

    /// Create the namespace and the veth into `target_ns`, address both ends, bring them up
    /// and add the scanner's routes. The target namespace must exist.
    pub(super) fn build(&self, target_ns: &str) -> anyhow::Result<()> {
        let (s, sif, tif) = (
            self.ns.as_str(),
            self.iface.as_str(),
            self.peer_iface.as_str(),
        );
        ip(&["netns", "add", s])?;
        ip(&[
            "-n", s, "link", "add", sif, "type", "veth", "peer", "name", tif, "netns", target_ns,
        ])?;
        ip(&["-n", s, "link", "set", "lo", "up"])?;
        for (ns, dev, v4, v6) in [
            (s, sif, self.v4, self.v6),
            (target_ns, tif, self.peer_v4, self.peer_v6),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
            let v6 = format!("{v6}/64");
            ip(&["-n", ns, "addr", "add", &v6, "dev", dev, "nodad"])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        let (via4, via6) = (self.peer_v4.to_string(), self.peer_v6.to_string());
        let mut v4_routes = vec!["198.19.0.0/16".to_owned()];
        let mut v6_routes = vec!["2001:2:0:1::/64".to_owned()];
        if self.number > 1 {
            v4_routes.insert(0, format!("{TARGET_V4}/32"));
            v6_routes.insert(0, format!("{TARGET_V6}/128"));
        }
        for dst in &v4_routes {
            ip(&["-n", s, "route", "add", dst, "via", &via4])?;
        }
        for dst in &v6_routes {
            ip(&["-n", s, "-6", "route", "add", dst, "via", &via6])?;
        }
        Ok(())
    }
}

/// The scanners 1..=`count` of lab `lab`.
pub(super) fn layouts(lab: &str, count: u32) -> Vec<Scanner> {
    (1..=count).map(|k| Scanner::layout(lab, k)).collect()
}

/// How many scanner namespaces lab `lab` has up: scanner 1 and then 2, 3, ... while they exist.
pub(super) fn count_up(lab: &str) -> u32 {
    (2..=MAX_SCANNERS)
        .take_while(|&k| super::ns_exists(&Scanner::layout(lab, k).ns))
        .count() as u32
        + 1
}

/// Every scanner namespace of lab `lab` that exists (`N-s`, `N-s<digits>`), for teardown,
/// which must also find the namespaces of a half-built lab.
pub(super) fn existing_namespaces(lab: &str) -> Vec<String> {
    let prefix = format!("{lab}-s");
    let Ok(dir) = fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut found: Vec<String> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_one_keeps_the_original_layout() {
        let s = Scanner::layout("pslab", 1);
        assert_eq!(s.ns, "pslab-s");
        assert_eq!(
            (s.iface.as_str(), s.peer_iface.as_str()),
            ("pslabs0", "pslabt0")
        );
        assert_eq!(s.v4.to_string(), "198.18.0.1");
        assert_eq!(s.v6.to_string(), "2001:2::1");
        assert_eq!(s.peer_v4.to_string(), "198.18.0.2");
        assert_eq!(s.peer_v6.to_string(), "2001:2::2");
    }

    #[test]
    fn later_scanners_get_their_own_names_and_subnets() {
        let all = layouts("abcdefghi", MAX_SCANNERS);
        let s3 = &all[2];
        assert_eq!(s3.ns, "abcdefghi-s3");
        assert_eq!(s3.iface, "abcdefghis2");
        assert_eq!(s3.peer_iface, "abcdefghit2");
        assert_eq!(s3.v4.to_string(), "198.18.2.1");
        assert_eq!(s3.v6.to_string(), "2001:2:0:102::1");
        assert_eq!(s3.peer_v6.to_string(), "2001:2:0:102::2");
        for s in &all {
            // IFNAMSIZ: 15 characters at most.
            assert!(s.iface.len() <= 15 && s.peer_iface.len() <= 15, "{s:?}");
        }
        let mut v4: Vec<_> = all.iter().map(|s| s.v4).collect();
        let mut ifs: Vec<_> = all.iter().map(|s| s.peer_iface.clone()).collect();
        v4.dedup();
        ifs.sort();
        ifs.dedup();
        assert_eq!((v4.len(), ifs.len()), (all.len(), all.len()));
        // Inside the lab ranges, clear of the extra hosts (198.19.0.0/16, 2001:2:0:1::/64).
        for s in &all {
            assert_eq!(s.v4.octets()[..2], [198, 18], "{s:?}");
            assert_eq!(s.v6.segments()[..3], [0x2001, 2, 0], "{s:?}");
            assert_ne!(s.v6.segments()[3], 1, "{s:?}");
        }
    }
}
