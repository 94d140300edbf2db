//! What a managed scan order is before it is queued: the profile and its port spec, and
//! the size check (at most [`MAX_SCAN_PROBES`] addresses x ports per scan).

use crate::http::error::ApiError;
use crate::model::ScanType;
use ipnet::IpNet;
use portscope_core::targets::PortSet;

/// Most probes (addresses x ports) of one managed scan: 2^29 = 536,870,912, e.g. a /8 on
/// the fast profile's 32 ports, a /16 on 8,192 ports, a deep scan of a /24 (not of a /16:
/// 4.3 billion). A scan is chunk jobs of at most `chunk-probes` probes each (16,384 by
/// default, so at most ~33,000 chunk rows and as many queue jobs, written by the admission's
/// one transaction) and a chunk names its hosts as address ranges, so the cap is on the
/// work, not on addresses: what the store writes grows with chunks, not hosts. At the lab
/// rate (250,000 probes/s) the largest scan is ~36 minutes of one engine's sending.
pub const MAX_SCAN_PROBES: u128 = 1 << 29;

/// A scan to start.
#[derive(Debug, Clone, Default)]
pub struct ScanOrder {
    /// IP, CIDR or host name.
    pub target: String,
    /// Domain label (defaults to the target when it is a name).
    pub domain: Option<String>,
    /// `fast` (default), `deep` or `custom`.
    pub profile: Option<String>,
    /// Port spec (implies `custom`).
    pub ports: Option<String>,
    /// Saved target this runs for.
    pub target_id: Option<String>,
}

/// A checked profile: name and engine port spec.
pub fn profile_ports(
    profile: Option<&str>,
    ports: Option<&str>,
) -> Result<(String, String, u64), ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let (name, spec) = match (profile, ports) {
        (Some("custom") | None, Some(p)) => ("custom", p.trim().to_string()),
        (Some("custom"), None) => return Err(bad("profile custom needs `ports`".into())),
        (Some("fast") | None, None) => ("fast", ScanType::Fast.ports_spec()),
        (Some("deep"), None) => ("deep", ScanType::Deep.ports_spec()),
        (Some(p @ ("fast" | "deep")), Some(_)) => {
            return Err(bad(format!(
                "profile {p} takes no `ports`; use profile custom"
            )))
        }
        (Some(other), _) => {
            return Err(bad(format!(
                "unknown profile {other}: use fast, deep or custom"
            )))
        }
    };
    let set = PortSet::parse(&spec).map_err(|e| bad(format!("invalid ports {spec}: {e}")))?;
    if set.is_empty() {
        return Err(bad("no ports to scan".into()));
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

/// 400 when `addrs` x `ports` is more than [`MAX_SCAN_PROBES`].
pub fn check_size(addrs: &[String], ports: u64) -> Result<(), ApiError> {
    let hosts: u128 = addrs
        .iter()
        .map(|a| addresses(a))
        .fold(0u128, u128::saturating_add);
    let probes = hosts.saturating_mul(u128::from(ports));
    if probes > MAX_SCAN_PROBES {
        return Err(ApiError::BadRequest(format!(
            "scan too large: {hosts} addresses x {ports} ports = {probes} probes; at most \
             {MAX_SCAN_PROBES} probes per scan (e.g. a /8 on 32 ports, a /16 on 8192 ports, \
             a deep scan of a /24)"
        )));
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
}
