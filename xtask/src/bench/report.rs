//! The benchmark's report: one row per scanner and scenario, the scenarios, the ceiling and
//! the footnotes, as written to `target/bench/results.json` and rendered by `render`.

use serde::Serialize;

use super::ceiling;
use super::measure::Wire;
use super::options::Options;
use super::scenario::{Scenario, Score};
use super::tools::Tool;

/// One line of the table (and of the JSON).
#[derive(Debug, Serialize)]
pub(super) struct Row {
    pub(super) scenario: u8,
    pub(super) scenario_short: &'static str,
    pub(super) tool: &'static str,
    /// `ok`, `timeout`, `exit N`, `skipped`, `not installed`.
    pub(super) status: String,
    /// The exact command line, namespace prefix included.
    pub(super) command: Option<String>,
    /// The representative run (median wall time), then every run's wall time.
    pub(super) wall_s: Option<f64>,
    pub(super) wall_all_s: Vec<f64>,
    pub(super) probes: Option<u64>,
    /// `tool` (its own count) or `target` (SYNs counted arriving at the target: the tool
    /// prints no count).
    pub(super) probes_source: Option<&'static str>,
    pub(super) probes_per_s: Option<f64>,
    pub(super) cpu_s: Option<f64>,
    pub(super) cpu_user_s: Option<f64>,
    pub(super) cpu_sys_s: Option<f64>,
    /// Accuracy; `exact` is `None` for open-only tools.
    pub(super) score: Option<Score>,
    pub(super) three_state_pct: Option<f64>,
    /// Packets counted at the target during the run.
    pub(super) wire: Option<Wire>,
    /// Wall time of this row / wall time of Portscope in the same scenario.
    pub(super) wall_vs_portscope: Option<f64>,
    /// Probes per second / the answering ceiling measured in the same run.
    pub(super) of_ceiling: Option<f64>,
    /// The tool's own scan time (Portscope: submission to last result, sockets open).
    pub(super) scan_s: Option<f64>,
    /// Probes per second of scan time / the answering ceiling: like for like with the
    /// ceiling, which `ps-blast` counts over its own send time.
    pub(super) scan_of_ceiling: Option<f64>,
    /// CPU-seconds per million probes.
    pub(super) cpu_s_per_m: Option<f64>,
    pub(super) note: Option<String>,
}

impl Row {
    pub(super) fn empty(scenario: &Scenario, tool: Tool, status: String) -> Row {
        Row {
            scenario: scenario.id,
            scenario_short: scenario.short,
            tool: tool.label(),
            status,
            command: None,
            wall_s: None,
            wall_all_s: Vec::new(),
            probes: None,
            probes_source: None,
            probes_per_s: None,
            cpu_s: None,
            cpu_user_s: None,
            cpu_sys_s: None,
            score: None,
            three_state_pct: None,
            wire: None,
            wall_vs_portscope: None,
            of_ceiling: None,
            scan_s: None,
            scan_of_ceiling: None,
            cpu_s_per_m: None,
            note: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub(super) struct ScenarioInfo {
    pub(super) id: u8,
    pub(super) short: &'static str,
    pub(super) title: &'static str,
    pub(super) pairs: u64,
    pub(super) open_expected: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) generated_unix: u64,
    pub(super) cpus: usize,
    /// `/proc/loadavg` just before the first run: other work on the machine skews the numbers.
    pub(super) loadavg_before: String,
    pub(super) rate_pps: u64,
    pub(super) runs: usize,
    pub(super) nmap_cap_s: u64,
    pub(super) lab: String,
    /// The lab's ceiling measured in this run (`None` when ps-blast could not run).
    pub(super) ceiling: Option<ceiling::Ceiling>,
    pub(super) scenarios: Vec<ScenarioInfo>,
    pub(super) rows: Vec<Row>,
    pub(super) notes: Vec<String>,
}

/// Footnotes: settings of every tool, and what the numbers mean.
pub(super) fn notes(opts: &Options, cpus: usize) -> Vec<String> {
    vec![
        format!(
            "rates: Portscope, masscan and zmap at {} pps; nmap has no fixed rate: -T5 (initial/max RTT timeout 250/300 ms, \
             at most 2 retries, scan delay at most 5 ms) and a second row adding --min-rate 100000 --max-retries 2",
            opts.rate
        ),
        "waits: Portscope defaults (silent ports only retried: at least 2 retries, or 1 after a first round of 9,000+ \
         answers, more while the loss measured from them says a port may still be wrong, at most 10; per-round wait \
         2 x p99 + p50 of the measured RTT, at least 3 ms, at most 1 s); \
         masscan --wait 1 (default 10) and no retries (default; a retry would re-probe every pair); \
         zmap --cooldown-time 1 (default 8), one probe per target (default); nmap by its timing template"
            .into(),
        format!(
            "Portscope runs its send and receive threads on {cpus} CPUs that it shares with the target's kernel \
             (every SYN, SYN-ACK and RST of the lab is processed by the same machine) and with the other scanner-side work"
        ),
        "wall s: spawn to exit of `ip netns exec ... scanner` (1 ms polling); probes/s: the tool's own count / wall, \
         or (*) SYNs counted arriving at the target / wall where the tool prints no count (masscan); \
         of ceiling: probes/s over the answering ceiling"
            .into(),
        "note `scan T s = X% of ceiling`: Portscope's own scan time (`done in`: submission to last result, its \
         sockets already open, which is what a long-lived engine, the daemon behind the API, pays per scan) and its \
         probes over that time against the ceiling, like for like with ps-blast, which counts over its own send time; \
         the wall figure adds process start, socket and ring set-up and teardown (kernel RCU grace periods) and exit"
            .into(),
        "CPU s: user+sys of the scanner and its reaped children (getrusage RUSAGE_CHILDREN delta); \
         softirq work of the veth, much of it the target's, is charged to whoever is on the CPU, usually the scanner"
            .into(),
        "open found/exp: reported open that are open / open in the lab truth; false opens: reported open but not open; \
         3-state: pairs whose open/closed/filtered state is exactly right (Portscope --show closed NDJSON, nmap XML); \
         masscan and zmap report open ports only"
            .into(),
        "SYN-ACKs sent: counted leaving the target (nftables, target namespace) during the run; a tool that finds \
         fewer open ports than that lost replies on its own receive side (a port probed twice may answer twice)"
            .into(),
        "Portscope writes a line for every pair (--show closed: 1,048,560 NDJSON lines in scenario 2); nmap's XML \
         collapses the closed ports into one element; masscan and zmap write open ports only"
            .into(),
        format!(
            "each tool ran {} time(s); the row is the run with the median wall time; nmap is killed after {} s",
            opts.runs,
            opts.nmap_cap.as_secs()
        ),
    ]
}
