//! What a managed scan order is before it is queued: the profile and its port spec, and
//! the size check (target x port pairs the engine accepts in one scan).

use crate::http::error::ApiError;
use crate::model::ScanType;
use ipnet::IpNet;
use portscope_core::targets::PortSet;

/// Most target x port pairs of one managed scan: the engine daemon's default `max_pairs`
/// (it refuses larger submits), so such scans get 400 here instead of a failed row.
pub const MAX_SCAN_PAIRS: u128 = 1 << 24;

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

/// 400 when `addrs` x `ports` is more than the engine accepts in one scan.
pub fn check_size(addrs: &[String], ports: u64) -> Result<(), ApiError> {
    let hosts: u128 = addrs
        .iter()
        .map(|a| match a.parse::<IpNet>() {
            Ok(n) => 1u128
                .checked_shl(u32::from(n.max_prefix_len() - n.prefix_len()))
                .unwrap_or(u128::MAX),
            Err(_) => 1,
        })
        .fold(0u128, u128::saturating_add);
    let pairs = hosts.saturating_mul(u128::from(ports));
    if pairs > MAX_SCAN_PAIRS {
        return Err(ApiError::BadRequest(format!(
            "scan too large: {hosts} addresses x {ports} ports = {pairs} pairs; at most \
             {MAX_SCAN_PAIRS} pairs per scan (e.g. a deep scan of at most a /24, or fewer ports)"
        )));
    }
    Ok(())
}
