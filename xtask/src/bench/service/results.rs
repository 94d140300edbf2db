//! What the benchmark records: latency percentiles, scan runs checked against the lab's truth,
//! bursts, the load phase and the report that `service.json` holds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::lab::Truth;
use crate::stack::ports_of;

use super::agent::Reply;
use super::handle::Hook;
use super::metrics::EngineSample;
use super::FAST_PORTS;

/// Latency percentiles of one kind of request, client side.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Latency {
    pub(super) n: u64,
    pub(super) p50_ms: f64,
    pub(super) p90_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
}

pub(super) fn new_hist() -> Histogram<u64> {
    // Microseconds, 1 us to 120 s, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

pub(super) fn latency(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Latency {
        n: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    })
}

/// One scan, from its POST to its webhook.
#[derive(Debug, Clone, Serialize)]
pub(super) struct ScanRun {
    pub(super) src: String,
    pub(super) kind: String,
    pub(super) post_status: u16,
    pub(super) post_outcome: String,
    pub(super) post_latency_ms: f64,
    /// POST response read -> webhook received.
    pub(super) post_to_complete_s: Option<f64>,
    /// POST sent -> webhook received (the rate's denominator).
    pub(super) wall_s: Option<f64>,
    /// Webhook received, seconds after the burst's first POST (bursts only).
    pub(super) done_at_s: Option<f64>,
    /// `complete`, `failed: REASON`, `no webhook`, `not accepted`.
    pub(super) status: String,
    /// The API's `duration_ms` (the engine's run time, queue excluded).
    pub(super) duration_ms: Option<u64>,
    pub(super) open_found: usize,
    pub(super) open_ok: bool,
    pub(super) filtered_ok: bool,
    /// How the result differs from the truth, if it does (the first 8 ports of each kind).
    pub(super) diff: Option<String>,
    /// Ports whose open/filtered/closed state differs from the truth.
    pub(super) wrong_ports: usize,
    /// Single scans only.
    pub(super) probes: Option<u64>,
    pub(super) probes_per_s: Option<f64>,
}

impl ScanRun {
    pub(super) fn truth_ok(&self) -> bool {
        self.status == "complete" && self.open_ok && self.filtered_ok
    }
}

/// The open and filtered ports of `ip` a `kind` scan should report.
pub(super) fn want(
    truth: &Truth,
    ip: IpAddr,
    kind: &str,
) -> Option<(BTreeSet<u16>, BTreeSet<u16>)> {
    let host = truth.host(ip)?;
    let scanned: Vec<u16> = if kind == "deep" {
        host.open
            .iter()
            .chain(&host.filtered_silent)
            .chain(&host.filtered_icmp)
            .copied()
            .collect()
    } else {
        FAST_PORTS.to_vec()
    };
    Some(host.open_and_filtered(&scanned))
}

pub(super) fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// A `ScanRun` from the POST's reply and the webhook, checked against the truth.
pub(super) fn scan_run(
    truth: &Truth,
    src: Ipv4Addr,
    kind: &str,
    post: &Reply,
    hook: Option<&Hook>,
) -> ScanRun {
    let mut run = ScanRun {
        src: src.to_string(),
        kind: kind.to_owned(),
        post_status: post.status,
        post_outcome: post.outcome(),
        post_latency_ms: post.latency_us() as f64 / 1000.0,
        post_to_complete_s: None,
        wall_s: None,
        done_at_s: None,
        status: if post.status == 200 {
            "no webhook".into()
        } else {
            "not accepted".into()
        },
        duration_ms: None,
        open_found: 0,
        open_ok: false,
        filtered_ok: false,
        diff: None,
        wrong_ports: 0,
        probes: None,
        probes_per_s: None,
    };
    let Some(hook) = hook else { return run };
    run.post_to_complete_s = Some(secs(hook.t_us.saturating_sub(post.t_end_us)));
    run.wall_s = Some(secs(hook.t_us.saturating_sub(post.t_start_us)));
    let v: Value = serde_json::from_str(&hook.body).unwrap_or(Value::Null);
    run.status = match v["status"].as_str() {
        Some("complete") => "complete".into(),
        Some("failed") => format!("failed: {}", v["fail_reason"].as_str().unwrap_or("?")),
        other => format!("webhook status {other:?}"),
    };
    run.duration_ms = v["duration_ms"].as_u64();
    let open = ports_of(&v, "ports_open");
    run.open_found = open.len();
    if let Some((want_open, want_filtered)) = want(truth, src.into(), kind) {
        let filtered = ports_of(&v, "ports_filtered");
        run.open_ok = v["ip"] == src.to_string() && open == want_open;
        run.filtered_ok = filtered == want_filtered;
        let mut diff = Vec::new();
        for (what, got, want) in [
            ("open", &open, &want_open),
            ("filtered", &filtered, &want_filtered),
        ] {
            let missing: Vec<_> = want.difference(got).collect();
            let extra: Vec<_> = got.difference(want).collect();
            run.wrong_ports += missing.len() + extra.len();
            for (how, ports) in [("missing", missing), ("extra", extra)] {
                if !ports.is_empty() {
                    let first: Vec<_> = ports.iter().take(8).collect();
                    diff.push(format!("{what} {how}: {} {first:?}", ports.len()));
                }
            }
        }
        run.diff = (!diff.is_empty()).then(|| diff.join("; "));
    }
    run
}

/// Median of the values present.
pub(super) fn median(xs: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = xs.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Concurrent deep scans, one per host.
#[derive(Debug, Serialize)]
pub(super) struct Burst {
    pub(super) label: String,
    pub(super) max_running: u32,
    pub(super) max_queued: u32,
    pub(super) scans: usize,
    pub(super) post_outcomes: BTreeMap<String, usize>,
    pub(super) accepted: usize,
    pub(super) complete: usize,
    /// Complete, and open and filtered ports equal the truth of that host.
    pub(super) truth_ok: usize,
    /// First POST sent -> last webhook received.
    pub(super) wall_s: Option<f64>,
    pub(super) probes: u64,
    pub(super) probes_per_s: Option<f64>,
    /// Replies the kernel dropped (capture buffer full) during the burst.
    pub(super) kernel_drops: u64,
    /// Packets dropped by the kernel's per-CPU input backlog (`/proc/net/softnet_stat`, all
    /// namespaces: the veth's traffic goes through it) during the burst.
    pub(super) backlog_drops: u64,
    /// Ports of all scans whose state differs from the truth.
    pub(super) wrong_ports: usize,
    /// Replies the engine received but discarded, by reason (non-zero deltas only).
    pub(super) discards: BTreeMap<String, u64>,
    pub(super) first_done_s: Option<f64>,
    pub(super) median_done_s: Option<f64>,
    pub(super) median_duration_ms: Option<f64>,
    pub(super) max_duration_ms: Option<u64>,
    pub(super) post_latency: Option<Latency>,
    pub(super) peak_running: u64,
    pub(super) peak_queued: u64,
    /// Extra observations (the default-queue check).
    pub(super) note: Option<String>,
    pub(super) timeline: Vec<EngineSample>,
    pub(super) runs: Vec<ScanRun>,
}

/// The load phase.
#[derive(Debug, Serialize)]
pub(super) struct Load {
    pub(super) scan_clients: usize,
    pub(super) pollers: usize,
    pub(super) interval_ms: u64,
    pub(super) duration_s: f64,
    pub(super) requests: u64,
    pub(super) requests_per_s: f64,
    pub(super) get_idle: Option<Latency>,
    pub(super) get: Option<Latency>,
    pub(super) post_join: Option<Latency>,
    pub(super) post_new: Option<Latency>,
    /// `GET 200`, `POST 429 rate limit reached: ...`, ... over the whole phase.
    pub(super) outcomes: BTreeMap<String, u64>,
    pub(super) rate_limited: u64,
    pub(super) errors: u64,
    /// The scans of this phase (webhook-timed, as in the burst).
    pub(super) scans: Burst,
}

#[derive(Debug, Serialize)]
pub(super) struct Phase1 {
    pub(super) host: String,
    pub(super) fast: Vec<ScanRun>,
    pub(super) deep: Vec<ScanRun>,
    pub(super) fast_median_s: Option<f64>,
    pub(super) deep_median_s: Option<f64>,
    pub(super) fast_duration_ms_median: Option<f64>,
    pub(super) deep_duration_ms_median: Option<f64>,
}

/// One line of the table.
#[derive(Debug, Serialize)]
pub(super) struct Row {
    pub(super) section: String,
    pub(super) metric: String,
    pub(super) value: String,
    pub(super) reference: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) generated_unix: u64,
    pub(super) cpus: usize,
    pub(super) loadavg_before: String,
    pub(super) engine_rate_pps: u64,
    pub(super) engine_max_running_default: u32,
    pub(super) engine_max_queued_default: u32,
    pub(super) engine_chunks_in_flight: u32,
    pub(super) deep_chunks: u32,
    pub(super) options: BTreeMap<String, String>,
    pub(super) rows: Vec<Row>,
    pub(super) notes: Vec<String>,
    pub(super) phase1: Phase1,
    /// Phase 1 again at the engine's default rate (unless `--skip-extra`).
    pub(super) default_rate: Option<Phase1>,
    pub(super) single: ScanRun,
    pub(super) bursts: Vec<Burst>,
    pub(super) load: Load,
}
