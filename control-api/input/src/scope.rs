//! What a token may scan: managed-scan targets (IP, CIDR, host name) and token scopes
//! (CIDRs and domain names: `example.com` exactly, or `*.example.com` for names under it),
//! and the pure half of the scope check every managed scan passes before it is queued.
//!
//! Rules (**Invariant:** the engine is only ever given addresses that passed them):
//! - an IP target must lie in a scope CIDR;
//! - a CIDR target must lie entirely inside one scope CIDR;
//! - a domain target needs a scope entry for the name AND every address it resolves to
//!   inside the scope CIDRs; the engine is given those addresses, never the name, so a
//!   later DNS change cannot redirect the scan.
//!
//! Resolution is the API's ([`Scope::admit`] says when a name needs it, and
//! [`Scope::admit_resolved`] checks its answer). This is not the engine's target policy:
//! that still applies underneath.

use crate::netaddr::normalise;
use crate::order::{cidr_addresses, MAX_SCAN_PROBES};
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

/// Why a target does not parse (the API answers 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Blank.
    #[error("target is empty")]
    Empty,
    /// Has a `/` but is not a CIDR.
    #[error("{0} is not a valid CIDR")]
    BadCidr(String),
    /// A CIDR of more than [`MAX_SCAN_PROBES`] addresses.
    #[error(
        "{target} is too large: {addresses} addresses; at most {MAX_SCAN_PROBES} probes \
         (addresses x ports) per scan"
    )]
    TooLarge {
        /// The target as given (trimmed).
        target: String,
        /// Its addresses.
        addresses: u128,
    },
    /// Neither an address, a CIDR nor a host name.
    #[error("{0} is not an IP address, CIDR or host name")]
    NotATarget(String),
}

/// Why a scope entry does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// `*.x` where `x` is not a host name.
    #[error("bad scope entry {0}")]
    BadWildcard(String),
    /// Neither a CIDR, an address nor a host name.
    #[error("bad scope entry {0}: not a CIDR or domain")]
    BadEntry(String),
}

/// Why a target is refused by a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// An address or CIDR outside the scope CIDRs (403).
    #[error("{0} is outside this token's scope")]
    Outside(String),
    /// A host name with no scope entry (403).
    #[error("{0} is not in this token's scope (add the name to the token's scope)")]
    NameOutside(String),
    /// A host name that resolved to nothing (400).
    #[error("{0} has no addresses")]
    NoAddresses(String),
    /// A host name in scope with an address outside it (403).
    #[error("{name} resolves to {addr}, which is outside this token's scope")]
    ResolvesOutside {
        /// The name.
        name: String,
        /// The first address outside.
        addr: IpAddr,
    },
}

/// What a scope check decided before any DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// In scope: what the engine is given (the address or the CIDR).
    Addrs(Vec<String>),
    /// The name is in scope; its addresses must be resolved and passed to
    /// [`Scope::admit_resolved`].
    Resolve(String),
}

/// A scope entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeEntry {
    /// Addresses.
    Net(IpNet),
    /// A domain name, exact.
    Name(String),
    /// `*.suffix`: any name strictly under `suffix`.
    Wildcard(String),
}

/// A token's scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Vec<ScopeEntry>);

/// A validated scan target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// One address.
    Ip(IpAddr),
    /// A network (scanned as one multi-host engine scan).
    Net(IpNet),
    /// A host name, lower case, no trailing dot.
    Domain(String),
}

impl fmt::Display for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetSpec::Ip(ip) => write!(f, "{ip}"),
            TargetSpec::Net(n) => write!(f, "{n}"),
            TargetSpec::Domain(d) => f.write_str(d),
        }
    }
}

/// Parses a host name: LDH labels of 1-63 bytes, at most 253 bytes, at least two labels,
/// a top-level label that is not all digits. Lower-cases and drops a trailing dot.
pub fn parse_domain(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
    if s.is_empty() || s.len() > 253 {
        return None;
    }
    let labels: Vec<&str> = s.split('.').collect();
    let ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !labels
            .last()
            .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some(s)
}

fn parse_net(s: &str) -> Option<IpNet> {
    let net: IpNet = s.parse().ok()?;
    let addr = normalise(net.addr());
    let net = if addr != net.addr() {
        // ::ffff:a.b.c.d/n -> a.b.c.d/(n-96)
        IpNet::new(addr, net.prefix_len().checked_sub(96)?).ok()?
    } else {
        net
    };
    Some(net.trunc())
}

impl TargetSpec {
    /// Parses an IP, a CIDR or a host name.
    pub fn parse(s: &str) -> Result<TargetSpec, TargetError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TargetError::Empty);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(TargetSpec::Ip(normalise(ip)));
        }
        if s.contains('/') {
            let net = parse_net(s).ok_or_else(|| TargetError::BadCidr(s.to_string()))?;
            if net.prefix_len() == net.max_prefix_len() {
                return Ok(TargetSpec::Ip(net.addr()));
            }
            // Even one port of it would pass the probe cap (`order::check_size` checks
            // addresses x ports once the ports are known).
            let addresses = cidr_addresses(&net);
            if addresses > MAX_SCAN_PROBES {
                return Err(TargetError::TooLarge {
                    target: s.to_string(),
                    addresses,
                });
            }
            return Ok(TargetSpec::Net(net));
        }
        parse_domain(s)
            .map(TargetSpec::Domain)
            .ok_or_else(|| TargetError::NotATarget(s.to_string()))
    }
}

impl Scope {
    /// Parses entries (CIDR, IP, `name`, `*.name`).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Scope, ScopeError> {
        let mut out = Vec::new();
        for e in entries.into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            let entry = if let Some(rest) = e.strip_prefix("*.") {
                ScopeEntry::Wildcard(
                    parse_domain(rest).ok_or_else(|| ScopeError::BadWildcard(e.to_string()))?,
                )
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                ScopeEntry::Net(IpNet::from(normalise(ip)))
            } else if let Some(net) = parse_net(e) {
                ScopeEntry::Net(net)
            } else {
                ScopeEntry::Name(
                    parse_domain(e).ok_or_else(|| ScopeError::BadEntry(e.to_string()))?,
                )
            };
            out.push(entry);
        }
        Ok(Scope(out))
    }

    /// Parses the stored form (one entry per line).
    pub fn parse_text(text: &str) -> Result<Scope, ScopeError> {
        Scope::parse(text.lines())
    }

    /// The stored form.
    pub fn to_text(&self) -> String {
        self.entries().join("\n")
    }

    /// Entries as text.
    pub fn entries(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|e| match e {
                ScopeEntry::Net(n) => n.to_string(),
                ScopeEntry::Name(n) => n.clone(),
                ScopeEntry::Wildcard(n) => format!("*.{n}"),
            })
            .collect()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn nets(&self) -> impl Iterator<Item = &IpNet> {
        self.0.iter().filter_map(|e| match e {
            ScopeEntry::Net(n) => Some(n),
            _ => None,
        })
    }

    /// Whether `ip` is inside a scope CIDR.
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        let ip = normalise(ip);
        self.nets().any(|n| n.contains(&ip))
    }

    /// Whether all of `net` is inside one scope CIDR.
    pub fn contains_net(&self, net: &IpNet) -> bool {
        self.nets().any(|n| n.contains(net))
    }

    /// Whether the name itself is in scope.
    pub fn contains_name(&self, name: &str) -> bool {
        self.0.iter().any(|e| match e {
            ScopeEntry::Name(n) => n == name,
            ScopeEntry::Wildcard(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            ScopeEntry::Net(_) => false,
        })
    }

    /// Checks a target against the scope: an address or CIDR is decided here; a name in
    /// scope needs its addresses ([`Admission::Resolve`]).
    pub fn admit(&self, target: &TargetSpec) -> Result<Admission, Refusal> {
        match target {
            TargetSpec::Ip(ip) if self.contains_ip(*ip) => {
                Ok(Admission::Addrs(vec![ip.to_string()]))
            }
            TargetSpec::Net(net) if self.contains_net(net) => {
                Ok(Admission::Addrs(vec![net.to_string()]))
            }
            TargetSpec::Ip(_) | TargetSpec::Net(_) => Err(Refusal::Outside(target.to_string())),
            TargetSpec::Domain(name) if self.contains_name(name) => {
                Ok(Admission::Resolve(name.clone()))
            }
            TargetSpec::Domain(name) => Err(Refusal::NameOutside(name.clone())),
        }
    }

    /// Checks what `name` resolved to: every address inside the scope CIDRs. Returns the
    /// distinct addresses, sorted, for the engine.
    pub fn admit_resolved(&self, name: &str, addrs: Vec<IpAddr>) -> Result<Vec<String>, Refusal> {
        if addrs.is_empty() {
            return Err(Refusal::NoAddresses(name.to_string()));
        }
        let addrs: BTreeSet<IpAddr> = addrs.into_iter().map(normalise).collect();
        if let Some(bad) = addrs.iter().find(|a| !self.contains_ip(**a)) {
            return Err(Refusal::ResolvesOutside {
                name: name.to_string(),
                addr: *bad,
            });
        }
        Ok(addrs.iter().map(IpAddr::to_string).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_normalise() {
        assert_eq!(
            TargetSpec::parse("::ffff:198.18.0.1").unwrap(),
            TargetSpec::Ip("198.18.0.1".parse().unwrap())
        );
        assert_eq!(
            TargetSpec::parse("198.18.0.9/24").unwrap(),
            TargetSpec::Net("198.18.0.0/24".parse().unwrap())
        );
        assert_eq!(
            TargetSpec::parse("198.18.0.9/32").unwrap(),
            TargetSpec::Ip("198.18.0.9".parse().unwrap())
        );
        assert_eq!(
            TargetSpec::parse("WWW.Example.com.").unwrap(),
            TargetSpec::Domain("www.example.com".into())
        );
        // A /8 parses (the probe cap weighs it with its ports); 2^30 addresses cannot pass.
        assert_eq!(
            TargetSpec::parse("10.0.0.0/8").unwrap(),
            TargetSpec::Net("10.0.0.0/8".parse().unwrap())
        );
        for bad in [
            "",
            "10.0.0.0/2",
            "2001:2::/64",
            "foo",
            "-a.com",
            "a..b",
            "1.2.3",
            "198.18.0.0/33",
        ] {
            assert!(TargetSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scope_rules() {
        let s =
            Scope::parse(["198.18.0.0/24", "2001:2::/48", "example.com", "*.lab.test"]).unwrap();
        let ok = |t: &str| TargetSpec::parse(t).unwrap();
        let addrs = |v: &[&str]| Admission::Addrs(v.iter().map(|a| a.to_string()).collect());
        assert_eq!(s.admit(&ok("198.18.0.7")), Ok(addrs(&["198.18.0.7"])));
        assert_eq!(
            s.admit(&ok("198.18.0.128/25")),
            Ok(addrs(&["198.18.0.128/25"]))
        );
        assert_eq!(
            s.admit(&ok("198.18.0.0/23")).unwrap_err().to_string(),
            "198.18.0.0/23 is outside this token's scope"
        );
        assert!(s.admit(&ok("198.18.1.1")).is_err());
        assert_eq!(
            s.admit(&ok("a.lab.test")),
            Ok(Admission::Resolve("a.lab.test".into()))
        );
        // Address in scope, name not.
        assert_eq!(
            s.admit(&ok("evil.com")),
            Err(Refusal::NameOutside("evil.com".into()))
        );
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        assert_eq!(
            s.admit_resolved(
                "example.com",
                vec![ip("::ffff:198.18.0.5"), ip("198.18.0.5")]
            ),
            Ok(vec!["198.18.0.5".to_string()])
        );
        // Name in scope, one address outside.
        assert_eq!(
            s.admit_resolved("a.lab.test", vec![ip("198.18.0.6"), ip("198.18.1.1")]),
            Err(Refusal::ResolvesOutside {
                name: "a.lab.test".into(),
                addr: ip("198.18.1.1")
            })
        );
        assert_eq!(
            s.admit_resolved("a.lab.test", vec![]),
            Err(Refusal::NoAddresses("a.lab.test".into()))
        );
        assert!(!s.contains_name("lab.test"));
        assert!(!s.contains_name("xlab.test"));
        assert_eq!(Scope::parse_text(&s.to_text()).unwrap(), s);
        assert_eq!(
            Scope::parse(["*.-x"]).unwrap_err().to_string(),
            "bad scope entry *.-x"
        );
    }
}
