//! A managed scan's ports and size before it is queued: the profile and its port spec, and
//! the size check (at most [`MAX_SCAN_PROBES`] addresses x ports per scan).

use ipnet::IpNet;
use portscope_core::targets::{PortSet, SpecError};

/// The fast scan's 32 ports: common services, always including 25 (SMTP).
pub const FAST_PORTS: [u16; 32] = [
    21, 22, 23, 25, 53, 80, 110, 111, 135, 139, 143, 443, 445, 465, 587, 993, 995, 1433, 1521,
    2049, 3306, 3389, 5432, 5900, 6379, 8080, 8443, 9000, 9200, 11211, 27017, 50000,
];

/// The engine's port spec of the fast profile ([`FAST_PORTS`], comma-separated).
pub fn fast_ports_spec() -> String {
    FAST_PORTS
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The engine's port spec of the deep profile (1-65535).
pub const DEEP_PORTS_SPEC: &str = "-";

/// Most probes (addresses x ports) of one managed scan: 2^29 = 536,870,912, e.g. a /8 on
/// the fast profile's 32 ports, a /16 on 8,192 ports, a deep scan of a /24 (not of a /16:
/// 4.3 billion). A scan is chunk jobs of at most `chunk-probes` probes each (16,384 by
/// default, so at most ~33,000 chunk rows and as many queue jobs, written by the admission's
/// one transaction) and a chunk names its hosts as address ranges, so the cap is on the
/// work, not on addresses: what the store writes grows with chunks, not hosts. At the lab
/// rate (250,000 probes/s) the largest scan is ~36 minutes of one engine's sending.
pub const MAX_SCAN_PROBES: u128 = 1 << 29;

/// Why a profile, a port list or a scan's size is refused (the API answers 400 with this
/// text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// `profile: custom` without `ports`.
    #[error("profile custom needs `ports`")]
    CustomNeedsPorts,
    /// `fast` / `deep` with `ports`.
    #[error("profile {0} takes no `ports`; use profile custom")]
    ProfileTakesNoPorts(String),
    /// Not `fast`, `deep` or `custom`.
    #[error("unknown profile {0}: use fast, deep or custom")]
    UnknownProfile(String),
    /// A malformed port spec.
    #[error("invalid ports {spec}: {source}")]
    InvalidPorts {
        /// The spec as given (trimmed).
        spec: String,
        /// What is wrong.
        source: SpecError,
    },
    /// A spec naming no port.
    #[error("no ports to scan")]
    NoPorts,
    /// More than [`MAX_SCAN_PROBES`] probes.
    #[error(
        "scan too large: {hosts} addresses x {ports} ports = {probes} probes; at most \
         {MAX_SCAN_PROBES} probes per scan (e.g. a /8 on 32 ports, a /16 on 8192 ports, \
         a deep scan of a /24)"
    )]
    TooLarge {
        /// Addresses (saturating).
        hosts: u128,
        /// Ports.
        ports: u64,
        /// Their product (saturating).
        probes: u128,
    },
}

/// A checked profile: name (`fast`, `deep` or `custom`), engine port spec and port count.
pub fn profile_ports(
    profile: Option<&str>,
    ports: Option<&str>,
) -> Result<(String, String, u64), OrderError> {
    let (name, spec) = match (profile, ports) {
        (Some("custom") | None, Some(p)) => ("custom", p.trim().to_string()),
        (Some("custom"), None) => return Err(OrderError::CustomNeedsPorts),
        (Some("fast") | None, None) => ("fast", fast_ports_spec()),
        (Some("deep"), None) => ("deep", DEEP_PORTS_SPEC.to_string()),
        (Some(p @ ("fast" | "deep")), Some(_)) => {
            return Err(OrderError::ProfileTakesNoPorts(p.to_string()))
        }
        (Some(other), _) => return Err(OrderError::UnknownProfile(other.to_string())),
    };
    let set = PortSet::parse(&spec).map_err(|source| OrderError::InvalidPorts {
        spec: spec.clone(),
        source,
    })?;
    if set.is_empty() {
        return Err(OrderError::NoPorts);
    }
    Ok((name.to_string(), spec, set.len()))
}

/// Addresses in `a` (an address or a CIDR), saturating.
fn addresses(a: &str) -> u128 {
    match a.parse::<IpNet>() {
        Ok(n) => cidr_addresses(&n),
        Err(_) => 1,
    }
}

/// Addresses in `n` (`u128::MAX` for an IPv6 /0).
pub fn cidr_addresses(n: &IpNet) -> u128 {
    1u128
        .checked_shl(u32::from(n.max_prefix_len() - n.prefix_len()))
        .unwrap_or(u128::MAX)
}

/// [`OrderError::TooLarge`] when `addrs` x `ports` is more than [`MAX_SCAN_PROBES`].
pub fn check_size(addrs: &[String], ports: u64) -> Result<(), OrderError> {
    let hosts: u128 = addrs
        .iter()
        .map(|a| addresses(a))
        .fold(0u128, u128::saturating_add);
    let probes = hosts.saturating_mul(u128::from(ports));
    if probes > MAX_SCAN_PROBES {
        return Err(OrderError::TooLarge {
            hosts,
            ports,
            probes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_cap_is_addresses_times_ports() {
        let slash8 = ["10.0.0.0/8".to_string()];
        assert!(check_size(&slash8, 32).is_ok(), "a /8 on the fast profile");
        assert!(check_size(&slash8, 33).is_err());
        assert!(check_size(&slash8, 65_535).is_err(), "a /8 on every port");
        let slash16 = ["10.0.0.0/16".to_string()];
        assert!(check_size(&slash16, 8_192).is_ok());
        assert!(check_size(&slash16, 65_535).is_err(), "a deep /16");
        assert!(check_size(&["10.0.0.0/24".to_string()], 65_535).is_ok());
        // Exactly at the cap, and one over (two targets add up).
        let two = ["2001:2::/100".to_string(), "2001:2::1:0:0/100".to_string()];
        assert!(check_size(&two, 1).is_ok());
        let three = [two[0].clone(), two[1].clone(), "10.0.0.1".to_string()];
        assert!(check_size(&three, 1).is_err());
        assert!(check_size(&["::/0".to_string()], 1).is_err(), "saturates");
    }

    #[test]
    fn profiles_and_their_messages() {
        let fast = profile_ports(None, None).unwrap();
        assert_eq!((fast.0.as_str(), fast.2), ("fast", 32));
        assert_eq!(profile_ports(Some("deep"), None).unwrap().2, 65_535);
        assert_eq!(
            profile_ports(None, Some(" 22,80 ")).unwrap(),
            ("custom".to_string(), "22,80".to_string(), 2)
        );
        let msg = |p, q| profile_ports(p, q).unwrap_err().to_string();
        assert_eq!(msg(Some("custom"), None), "profile custom needs `ports`");
        assert_eq!(
            msg(Some("deep"), Some("22")),
            "profile deep takes no `ports`; use profile custom"
        );
        assert_eq!(
            msg(Some("x"), None),
            "unknown profile x: use fast, deep or custom"
        );
        assert!(msg(None, Some("0")).starts_with("invalid ports 0: port 0 in `0`"));
        assert_eq!(
            check_size(&["10.0.0.0/8".to_string()], 33)
                .unwrap_err()
                .to_string(),
            "scan too large: 16777216 addresses x 33 ports = 553648128 probes; at most \
             536870912 probes per scan (e.g. a /8 on 32 ports, a /16 on 8192 ports, a deep \
             scan of a /24)"
        );
    }
}
