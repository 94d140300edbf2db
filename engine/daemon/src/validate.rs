//! Validating a submit into a plan and its chunks, before anything is queued: the id and
//! priority, the number of target strings, a cheap bound on the port spec, then (in the
//! engine's `plan_within`) size counted without overflow, the target policy, and only then
//! the route lookup. Touches no daemon state.

use crate::chunks::{chunk_ranges, port_spec_size};
use crate::config::{DaemonConfig, RouteFn};
use portscope_core::policy::TargetPolicy;
use portscope_engine::{PlanError, PlanLimits, ScanPlan, ScanRequest};
use portscope_proto::RejectCode;
use portscope_proto::ScanKind;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Fair-share group ids handed to the engine, one per scan.
static NEXT_GROUP: AtomicU64 = AtomicU64::new(1);

/// Why a submit is refused: its code and a message saying what to change.
pub(crate) type Refusal = (RejectCode, String);

/// One submit's fields.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Submit<'a> {
    pub id: &'a str,
    pub targets: &'a [String],
    pub ports: &'a str,
    pub kind: ScanKind,
    pub priority: u8,
}

/// Validates `s` into a plan (with a fresh fair-share group) and its chunks' port ranges.
pub(crate) fn plan(
    c: &DaemonConfig,
    policy: &TargetPolicy,
    route: &RouteFn,
    s: Submit<'_>,
) -> Result<(ScanPlan, Vec<Range<usize>>), Refusal> {
    let invalid = |m: String| (RejectCode::Invalid, m);
    let (id, priority) = (s.id, s.priority);
    if id.is_empty() || id.len() > c.max_id_len || id.chars().any(char::is_control) {
        return Err(invalid(format!(
            "scan id must be 1 to {} bytes without control characters",
            c.max_id_len
        )));
    }
    if priority > 9 {
        return Err(invalid(format!("priority {priority} out of range 0..=9")));
    }
    if s.targets.is_empty() || s.targets.len() > c.max_targets {
        return Err(invalid(format!(
            "{} targets given: 1 to {} allowed",
            s.targets.len(),
            c.max_targets
        )));
    }
    let listed = port_spec_size(s.ports);
    if listed > 65_535 * 4 {
        return Err(invalid(format!(
            "port spec lists {listed} ports; list each port at most a few times"
        )));
    }
    let settings = &c.scan;
    let request = ScanRequest {
        targets: s.targets.to_vec(),
        ports: s.ports.to_string(),
        exclude: Vec::new(),
        rate: settings.rate,
        retries: settings.retries,
        max_wait: settings.max_wait,
        min_wait: settings.min_wait,
        source_port: None,
    };
    // Size (counted without overflow), then policy, then routes: each refusal is the right
    // one. The engine checks the policy again on every chunk.
    let limits = PlanLimits {
        policy,
        max_pairs: c.max_pairs,
    };
    let plan = request.plan_within(limits, &**route).map_err(|e| match e {
        PlanError::Policy(p) => (RejectCode::Policy, p.to_string()),
        other => invalid(other.to_string()),
    })?;
    let ranges = chunk_ranges(plan.ports.len() as usize, s.kind);
    // One fair-share group per scan: its chunks share one part of the engine's rate.
    let plan = ScanPlan {
        group: Some(NEXT_GROUP.fetch_add(1, Relaxed)),
        ..plan
    };
    Ok((plan, ranges))
}
