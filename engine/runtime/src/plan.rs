//! Validates what an operator or API client asks for (`ScanRequest`, strings) into a
//! `ScanPlan` (typed, checked) once, so nothing downstream re-parses or re-checks shapes.
//! Policy (which targets may be probed at all) is the engine's, checked on submit.

use portscope_core::classify::{Sources, ROUNDS};
use portscope_core::retry::{RetryPolicy, DEFAULT_MAX_RETRIES};
use portscope_core::rtt::WaitBounds;
use portscope_core::targets::{parse_target, PortSet, SpecError, TargetSet};
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
            min_wait: Duration::from_millis(10),
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
}

impl ScanRequest {
    /// Validates the request. `route` says which local address reaches a target (the
    /// transport's `route_source`; a fixed map in tests).
    pub fn plan(
        &self,
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
        if self.min_wait > self.max_wait {
            return Err(PlanError::Wait {
                min: self.min_wait,
                max: self.max_wait,
            });
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
        })
    }
}
