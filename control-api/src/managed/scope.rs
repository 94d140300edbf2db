//! What a token may scan, and the check every managed scan passes before anything is
//! queued. Targets, scopes and the scope rules are [`portscope_input::scope`] (pure,
//! re-exported here); this module adds name resolution ([`Resolver`]) and maps refusals
//! onto HTTP errors (403 outside the scope, 400 for a malformed target or a name that does
//! not resolve).
//!
//! Resolution goes through [`Resolver`], so tests need no DNS. This is not the engine's
//! target policy: that still applies underneath.

use crate::http::error::ApiError;
use async_trait::async_trait;
pub use portscope_input::scope::{
    parse_domain, Admission, Refusal, Scope, ScopeEntry, ScopeError, TargetError, TargetSpec,
};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

impl From<TargetError> for ApiError {
    /// A malformed target is a 400 with the error's text.
    fn from(e: TargetError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<Refusal> for ApiError {
    /// Outside the scope is a 403; a name without addresses a 400.
    fn from(e: Refusal) -> Self {
        match e {
            Refusal::NoAddresses(_) => ApiError::BadRequest(e.to_string()),
            Refusal::Outside(_) | Refusal::NameOutside(_) | Refusal::ResolvesOutside { .. } => {
                ApiError::OutOfScope(e.to_string())
            }
        }
    }
}

/// [`Scope`]'s check with resolution: what the engine is given for a target.
#[async_trait]
pub trait Authorize {
    /// Checks a target against the scope and returns what the engine is given: the
    /// address, the CIDR, or every resolved address of a name. 403 when outside, 400 when
    /// a name does not resolve.
    async fn authorize(
        &self,
        target: &TargetSpec,
        resolver: &dyn Resolver,
    ) -> Result<Vec<String>, ApiError>;
}

#[async_trait]
impl Authorize for Scope {
    async fn authorize(
        &self,
        target: &TargetSpec,
        resolver: &dyn Resolver,
    ) -> Result<Vec<String>, ApiError> {
        match self.admit(target)? {
            Admission::Addrs(addrs) => Ok(addrs),
            Admission::Resolve(name) => {
                let addrs = resolver
                    .resolve(&name)
                    .await
                    .map_err(ApiError::BadRequest)?;
                Ok(self.admit_resolved(&name, addrs)?)
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
