//! Validates what an operator or API client asks for (`ScanRequest`, strings) into a
//! `ScanPlan` (typed, checked) once, so nothing downstream re-parses or re-checks shapes.
//! Policy (which targets may be probed at all) is the engine's, checked on submit; a caller
//! that has the policy at hand checks it here too ([`ScanRequest::plan_within`]), before any
//! route lookup, so a denied target is refused as such and never reaches the routing table.

use portscope_core::classify::{Sources, ROUNDS};
use portscope_core::policy::{PolicyError, TargetPolicy};
use portscope_core::retry::{RetryPolicy, DEFAULT_MAX_RETRIES};
use portscope_core::rtt::WaitBounds;
use portscope_core::targets::{parse_target, PortSet, SpecError, TargetSet, MAX_PAIRS};
use portscope_core::Nanos;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

/// An unvalidated scan request.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// Addresses, CIDRs and `first-last` ranges.
    pub targets: Vec<String>,
    /// Port spec (`22,80,1000-2000`, `-`).
    pub ports: String,
    /// Addresses and CIDRs to leave out.
    pub exclude: Vec<String>,
    /// Packets per second for this scan (the engine's global ceiling still applies).
    pub rate: u64,
    /// Retransmissions of silent pairs.
    pub retries: u8,
    /// Upper bound on the wait for replies after each round.
    pub max_wait: Duration,
    /// Lower bound on that wait.
    pub min_wait: Duration,
    /// Send every probe from this source port (nmap's `-g`); `None`: the engine's per-scan
    /// ports.
    pub source_port: Option<u16>,
}

impl Default for ScanRequest {
    fn default() -> Self {
        ScanRequest {
            targets: Vec::new(),
            ports: "-".into(),
            exclude: Vec::new(),
            rate: 100_000,
            retries: 2,
            max_wait: Duration::from_secs(1),
            min_wait: portscope_core::rtt::DEFAULT_MIN_WAIT,
            source_port: None,
        }
    }
}

/// Why a request is invalid.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Bad target or port spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Too many retries.
    #[error("--retries {0} is too many: at most {max}", max = ROUNDS - 1)]
    Retries(u8),
    /// Rate 0.
    #[error("--rate must be at least 1 packet per second")]
    Rate,
    /// min > max wait.
    #[error("the minimum wait ({min:?}) exceeds --max-wait ({max:?})")]
    Wait {
        /// Minimum.
        min: Duration,
        /// Maximum.
        max: Duration,
    },
    /// Source port 0.
    #[error("--source-port 0 is not a port: give 1 to 65535")]
    SourcePort,
    /// More (target x port) pairs than the caller's limit.
    #[error("scan too large: {pairs} target x port pairs (at most {max})")]
    TooLarge {
        /// Pairs asked for.
        pairs: u128,
        /// The limit.
        max: u64,
    },
    /// A target the policy denies.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// No route to a family of targets.
    #[error("no route to {target}: {err}")]
    NoRoute {
        /// The target tried.
        target: IpAddr,
        /// The routing error.
        err: io::Error,
    },
}

/// A validated scan.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    /// Targets.
    pub targets: TargetSet,
    /// Ports.
    pub ports: PortSet,
    /// Our source address per family.
    pub sources: Sources,
    /// Packets per second.
    pub rate: u64,
    /// Retransmissions of silent pairs: adaptive by default (at least the request's
    /// `retries`); set [`RetryPolicy::Fixed`] for an exact count.
    pub retries: RetryPolicy,
    /// Wait bounds.
    pub wait: WaitBounds,
    /// Scans with the same group share one fair share of the engine's rate (the engine
    /// daemon puts all chunks of one scan in one group); `None` is a group of its own.
    pub group: Option<u64>,
    /// Every probe's source port, when fixed (see [`ScanRequest::source_port`]).
    pub source_port: Option<u16>,
}

/// What [`ScanRequest::plan_within`] checks a request against before any route lookup.
#[derive(Debug, Clone, Copy)]
pub struct PlanLimits<'a> {
    /// Targets this policy refuses fail with [`PlanError::Policy`].
    pub policy: &'a TargetPolicy,
    /// At most this many (target x port) pairs ([`PlanError::TooLarge`] beyond).
    pub max_pairs: u64,
}

impl ScanRequest {
    /// Validates the request. `route` says which local address reaches a target (the
    /// transport's `route_source`; a fixed map in tests). The target policy is not checked
    /// here (the engine checks it on submit); see [`ScanRequest::plan_within`].
    pub fn plan(
        &self,
        route: &dyn Fn(IpAddr) -> io::Result<IpAddr>,
    ) -> Result<ScanPlan, PlanError> {
        self.plan_checked(None, MAX_PAIRS, route)
    }

    /// Validates the request in the order that makes each refusal the right one: shapes,
    /// then size (counted without overflow), then the policy, and only then the route
    /// lookup, so `10.0.0.1` is refused by the policy rather than as "no route".
    pub fn plan_within(
        &self,
        limits: PlanLimits<'_>,
        route: &dyn Fn(IpAddr) -> io::Result<IpAddr>,
    ) -> Result<ScanPlan, PlanError> {
        self.plan_checked(Some(limits.policy), limits.max_pairs, route)
    }

    fn plan_checked(
        &self,
        policy: Option<&TargetPolicy>,
        max_pairs: u64,
        route: &dyn Fn(IpAddr) -> io::Result<IpAddr>,
    ) -> Result<ScanPlan, PlanError> {
        let include = self
            .targets
            .iter()
            .map(|t| parse_target(t))
            .collect::<Result<Vec<_>, _>>()?;
        let exclude = self
            .exclude
            .iter()
            .map(|t| parse_target(t))
            .collect::<Result<Vec<_>, _>>()?;
        let targets = TargetSet::from_ranges(&include, &exclude)?;
        let ports = PortSet::parse(&self.ports)?;
        if u16::from(self.retries) >= ROUNDS {
            return Err(PlanError::Retries(self.retries));
        }
        if self.rate == 0 {
            return Err(PlanError::Rate);
        }
        if self.source_port == Some(0) {
            return Err(PlanError::SourcePort);
        }
        if self.min_wait > self.max_wait {
            return Err(PlanError::Wait {
                min: self.min_wait,
                max: self.max_wait,
            });
        }
        let pairs = u128::from(targets.len()) * u128::from(ports.len());
        if pairs > u128::from(max_pairs) {
            return Err(PlanError::TooLarge {
                pairs,
                max: max_pairs,
            });
        }
        if let Some(policy) = policy {
            policy.check(&targets)?;
        }
        let mut sources = Sources::default();
        for v6 in [false, true] {
            if let Some(t) = targets.first_of_family(v6) {
                let src = route(t).map_err(|err| PlanError::NoRoute { target: t, err })?;
                *(if v6 { &mut sources.v6 } else { &mut sources.v4 }) = Some(src);
            }
        }
        Ok(ScanPlan {
            targets,
            ports,
            sources,
            rate: self.rate,
            retries: RetryPolicy::Adaptive {
                min: self.retries,
                max: self.retries.max(DEFAULT_MAX_RETRIES),
            },
            wait: WaitBounds {
                min: Nanos::from(self.min_wait),
                max: Nanos::from(self.max_wait),
            },
            group: None,
            source_port: self.source_port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn request(targets: &[&str], ports: &str) -> ScanRequest {
        ScanRequest {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            ports: ports.into(),
            ..ScanRequest::default()
        }
    }

    /// Plans with the default-deny policy (lab ranges allowed) and a route table that
    /// has no route at all, counting lookups: a refusal must come before any lookup.
    fn plan(targets: &[&str], ports: &str, max_pairs: u64) -> (Result<ScanPlan, PlanError>, u32) {
        let mut policy = TargetPolicy::default_deny();
        policy.allow("198.18.0.0/15".parse().unwrap());
        let lookups = Cell::new(0);
        let route = |_: IpAddr| {
            lookups.set(lookups.get() + 1);
            Err(io::Error::other("network unreachable"))
        };
        let limits = PlanLimits {
            policy: &policy,
            max_pairs,
        };
        (
            request(targets, ports).plan_within(limits, &route),
            lookups.get(),
        )
    }

    #[test]
    fn policy_refuses_before_the_route_lookup() {
        let (r, lookups) = plan(&["10.0.0.1"], "80", 1 << 24);
        let err = r.unwrap_err();
        assert!(
            matches!(&err, PlanError::Policy(p) if p.addr.to_string() == "10.0.0.1"),
            "{err:?}"
        );
        assert!(err.to_string().contains("--allow 10.0.0.0/8"), "{err}");
        assert_eq!(lookups, 0);
        // An allowed target gets as far as the route lookup.
        let (r, lookups) = plan(&["198.18.0.2"], "80", 1 << 24);
        assert!(matches!(r, Err(PlanError::NoRoute { .. })), "{r:?}");
        assert_eq!(lookups, 1);
    }

    #[test]
    fn size_refuses_before_policy_and_never_wraps() {
        // One address plus the whole IPv6 space: 2^128 + 1 addresses.
        let (r, lookups) = plan(&["198.18.0.2", "::/0"], "80", 1 << 24);
        assert!(
            matches!(r, Err(PlanError::Spec(SpecError::TooLarge(u128::MAX)))),
            "{r:?}"
        );
        assert_eq!(lookups, 0);
        // Within the engine's MAX_PAIRS but over the caller's limit, and denied too.
        let (r, lookups) = plan(&["10.0.0.0/16"], "1-1000", 1 << 24);
        let err = r.unwrap_err();
        assert!(
            matches!(
                err,
                PlanError::TooLarge {
                    pairs: 65_536_000,
                    max: 16_777_216
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "scan too large: 65536000 target x port pairs (at most 16777216)"
        );
        assert_eq!(lookups, 0);
    }
}
