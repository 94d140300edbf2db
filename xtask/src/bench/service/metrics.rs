//! Engine and kernel counters: the engine's Prometheus text (read with curl inside the scanner
//! namespace), `/proc/net/softnet_stat` backlog drops, and a timed reading for `measure::sample_during`.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::lab::Lab;

use super::METRICS_LISTEN;

/// One reading of the engine's metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct EngineSample {
    /// Seconds since the phase started (0 for single readings).
    pub(super) t_s: f64,
    pub(super) probes_sent: u64,
    pub(super) running: u64,
    pub(super) queued: u64,
    pub(super) complete: u64,
    pub(super) failed: u64,
    /// Packets the kernel dropped because the engine's capture buffer was full.
    pub(super) kernel_drops: u64,
    /// `/proc/net/softnet_stat` drops, summed over CPUs (not from the engine).
    pub(super) backlog_drops: u64,
    /// `portscope_engine_discards_total` by reason (not in the timeline).
    #[serde(skip)]
    pub(super) discards: BTreeMap<String, u64>,
}

pub(super) fn parse_metrics(text: &str) -> anyhow::Result<EngineSample> {
    let mut s = EngineSample::default();
    let mut seen = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<u64>() else {
            continue;
        };
        match name.trim() {
            "portscope_engine_probes_sent_total" => {
                s.probes_sent = v;
                seen = true;
            }
            "portscope_engine_scans{state=\"running\"}" => s.running = v,
            "portscope_engine_scans{state=\"queued\"}" => s.queued = v,
            "portscope_engine_scans{state=\"complete\"}" => s.complete = v,
            "portscope_engine_scans{state=\"failed\"}" => s.failed = v,
            "portscope_engine_kernel_drops_total" => s.kernel_drops = v,
            other => {
                if let Some(reason) = other
                    .strip_prefix("portscope_engine_discards_total{reason=\"")
                    .and_then(|r| r.strip_suffix("\"}"))
                {
                    s.discards.insert(reason.to_owned(), v);
                }
            }
        }
    }
    if !seen {
        bail!("no portscope_engine_probes_sent_total in the engine's metrics");
    }
    Ok(s)
}

/// Sum of the `dropped` column (the second) of `/proc/net/softnet_stat`: packets the per-CPU
/// input backlog had no room for.
pub(super) fn parse_softnet(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum()
}

/// The engine's metrics, read with curl inside the scanner namespace, and the backlog drops.
pub(super) fn engine_sample(lab: &Lab) -> anyhow::Result<EngineSample> {
    let backlog_drops =
        parse_softnet(&fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default());
    let text = crate::lab::run(
        lab.scanner_cmd("curl")
            .args(["-sS", "--max-time", "5", "--connect-timeout", "2"])
            .arg(format!("http://{METRICS_LISTEN}/metrics")),
    )
    .context("reading the engine's metrics")?;
    let mut s = parse_metrics(&text)?;
    s.backlog_drops = backlog_drops;
    Ok(s)
}

/// How often the engine is sampled during a burst.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// A reading taken `t` after the phase started (`None` when the engine did not answer).
pub(super) fn sample_at(lab: &Lab, t: Duration) -> Option<EngineSample> {
    let mut s = engine_sample(lab).ok()?;
    s.t_s = t.as_secs_f64();
    Some(s)
}
