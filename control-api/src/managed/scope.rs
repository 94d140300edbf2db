//! What a token may scan, and the check every managed scan passes before anything is
//! queued. A scope is a list of CIDRs and domain names (`example.com` exactly, or
//! `*.example.com` for names under it).
//!
//! Rules (**Invariant:** the engine is only ever given addresses that passed them):
//! - an IP target must lie in a scope CIDR;
//! - a CIDR target must lie entirely inside one scope CIDR;
//! - a domain target needs a scope entry for the name AND every address it resolves to
//!   inside the scope CIDRs; the engine is given those addresses, never the name, so a
//!   later DNS change cannot redirect the scan.
//!
//! Resolution goes through [`Resolver`], so tests need no DNS. This is not the engine's
//! target policy: that still applies underneath.

use super::order::{cidr_addresses, MAX_SCAN_PROBES};
use crate::http::error::ApiError;
use crate::netaddr::normalise;
use async_trait::async_trait;
use ipnet::IpNet;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

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
    /// Parses an IP, a CIDR or a host name; the message says what is wrong.
    pub fn parse(s: &str) -> Result<TargetSpec, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("target is empty".into());
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(TargetSpec::Ip(normalise(ip)));
        }
        if s.contains('/') {
            let net = parse_net(s).ok_or_else(|| format!("{s} is not a valid CIDR"))?;
            if net.prefix_len() == net.max_prefix_len() {
                return Ok(TargetSpec::Ip(net.addr()));
            }
            // Even one port of it would pass the probe cap (`order::check_size` checks
            // addresses x ports once the ports are known).
            let addresses = cidr_addresses(&net);
            if addresses > MAX_SCAN_PROBES {
                return Err(format!(
                    "{s} is too large: {addresses} addresses; at most {MAX_SCAN_PROBES} probes \
                     (addresses x ports) per scan"
                ));
            }
            return Ok(TargetSpec::Net(net));
        }
        parse_domain(s)
            .map(TargetSpec::Domain)
            .ok_or_else(|| format!("{s} is not an IP address, CIDR or host name"))
    }
}

/// Resolves host names to addresses.
#[async_trait]
pub trait Resolver: Send + Sync + fmt::Debug + 'static {
    /// Every address of `name` (A and AAAA), or why not.
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String>;
}

/// The system resolver (`getaddrinfo` through tokio), with a deadline.
#[derive(Debug, Clone, Copy)]
pub struct SystemResolver {
    /// Deadline per lookup.
    pub timeout: Duration,
}

impl Default for SystemResolver {
    fn default() -> Self {
        SystemResolver {
            timeout: Duration::from_secs(3),
        }
    }
}

#[async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        let found = tokio::time::timeout(self.timeout, tokio::net::lookup_host((name, 0)))
            .await
            .map_err(|_| format!("{name} did not resolve in time"))?
            .map_err(|e| format!("{name} does not resolve: {e}"))?;
        Ok(found.map(|a| a.ip()).collect())
    }
}

/// A fixed table (tests, labs).
#[derive(Debug, Clone, Default)]
pub struct StaticResolver(pub HashMap<String, Vec<IpAddr>>);

#[async_trait]
impl Resolver for StaticResolver {
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| format!("{name} does not resolve"))
    }
}

impl Scope {
    /// Parses entries (CIDR, IP, `name`, `*.name`).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Scope, String> {
        let mut out = Vec::new();
        for e in entries.into_iter().map(str::trim).filter(|e| !e.is_empty()) {
            let entry = if let Some(rest) = e.strip_prefix("*.") {
                ScopeEntry::Wildcard(
                    parse_domain(rest).ok_or_else(|| format!("bad scope entry {e}"))?,
                )
            } else if let Ok(ip) = e.parse::<IpAddr>() {
                ScopeEntry::Net(IpNet::from(normalise(ip)))
            } else if let Some(net) = parse_net(e) {
                ScopeEntry::Net(net)
            } else {
                ScopeEntry::Name(
                    parse_domain(e)
                        .ok_or_else(|| format!("bad scope entry {e}: not a CIDR or domain"))?,
                )
            };
            out.push(entry);
        }
        Ok(Scope(out))
    }

    /// Parses the stored form (one entry per line).
    pub fn parse_text(text: &str) -> Result<Scope, String> {
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

    /// Checks a target against the scope and returns what the engine is given: the address,
    /// the CIDR, or every resolved address of a name. 403 when outside, 400 when a name
    /// does not resolve.
    pub async fn authorize(
        &self,
        target: &TargetSpec,
        resolver: &dyn Resolver,
    ) -> Result<Vec<String>, ApiError> {
        match target {
            TargetSpec::Ip(ip) if self.contains_ip(*ip) => Ok(vec![ip.to_string()]),
            TargetSpec::Net(net) if self.contains_net(net) => Ok(vec![net.to_string()]),
            TargetSpec::Ip(_) | TargetSpec::Net(_) => Err(ApiError::OutOfScope(format!(
                "{target} is outside this token's scope"
            ))),
            TargetSpec::Domain(name) => {
                if !self.contains_name(name) {
                    return Err(ApiError::OutOfScope(format!(
                        "{name} is not in this token's scope (add the name to the token's scope)"
                    )));
                }
                let addrs = resolver.resolve(name).await.map_err(ApiError::BadRequest)?;
                if addrs.is_empty() {
                    return Err(ApiError::BadRequest(format!("{name} has no addresses")));
                }
                let addrs: BTreeSet<IpAddr> = addrs.into_iter().map(normalise).collect();
                if let Some(bad) = addrs.iter().find(|a| !self.contains_ip(**a)) {
                    return Err(ApiError::OutOfScope(format!(
                        "{name} resolves to {bad}, which is outside this token's scope"
                    )));
                }
                Ok(addrs.iter().map(IpAddr::to_string).collect())
            }
        }
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

    #[tokio::test]
    async fn scope_rules() {
        let s =
            Scope::parse(["198.18.0.0/24", "2001:2::/48", "example.com", "*.lab.test"]).unwrap();
        let mut r = StaticResolver::default();
        r.0.insert("example.com".into(), vec!["198.18.0.5".parse().unwrap()]);
        r.0.insert(
            "a.lab.test".into(),
            vec!["198.18.0.6".parse().unwrap(), "198.18.1.1".parse().unwrap()],
        );
        r.0.insert("evil.com".into(), vec!["198.18.0.5".parse().unwrap()]);
        let ok = |t: &str| TargetSpec::parse(t).unwrap();
        assert_eq!(
            s.authorize(&ok("198.18.0.7"), &r).await.unwrap(),
            vec!["198.18.0.7"]
        );
        assert_eq!(
            s.authorize(&ok("198.18.0.128/25"), &r).await.unwrap(),
            vec!["198.18.0.128/25"]
        );
        assert!(s.authorize(&ok("198.18.0.0/23"), &r).await.is_err());
        assert!(s.authorize(&ok("198.18.1.1"), &r).await.is_err());
        assert_eq!(
            s.authorize(&ok("example.com"), &r).await.unwrap(),
            vec!["198.18.0.5"]
        );
        // Name in scope, one address outside.
        assert!(matches!(
            s.authorize(&ok("a.lab.test"), &r).await,
            Err(ApiError::OutOfScope(_))
        ));
        // Address in scope, name not.
        assert!(matches!(
            s.authorize(&ok("evil.com"), &r).await,
            Err(ApiError::OutOfScope(_))
        ));
        assert!(!s.contains_name("lab.test"));
        assert!(!s.contains_name("xlab.test"));
        assert_eq!(Scope::parse_text(&s.to_text()).unwrap(), s);
    }
}
