//! `cargo xtask bench`: Portscope against masscan, zmap and nmap on the same lab scenarios in one run, judged against the lab's ground truth. Not a micro-benchmark (those are `benches/`).
//!
//! One lab (16 extra hosts, wide: every address of 198.19.0.0/16 answers) serves all three
//! scenarios; each scanner runs only inside its scanner namespace, which has no default
//! route, against 198.18.0.0/15 only. Per run: wall time from spawn to exit, probes per
//! second, CPU time (`measure`), and accuracy against the truth (`scenario::Answer::score`).
//! The table goes to stdout and, as JSON, to `target/bench/results.json`; every scanner's raw
//! output stays in `target/bench/raw/`.
//!
//! **Architecture Invariant:** every scanner process is started through `Lab::scanner_cmd`,
//! is bounded by a timeout, and on timeout only that process is killed, by its PID.

pub mod ceiling;
pub mod measure;
mod notes;
mod options;
mod parse;
mod render;
mod runs;
pub mod scenario;
pub mod service;
pub mod tools;
pub mod zmap;

use std::fs;
use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::lab::{truth, Lab, LabConfig, LabGuard};
use crate::release::{cargo_build_release, cpus, loadavg, publish, unix_now, workspace_root};
use measure::Wire;
use notes::notes;
use options::Options;
use render::render;
use runs::bench_scenario;
use scenario::{Scenario, Score};
use tools::{Env, Tool};

/// The lab every scenario runs in: named per process, so two benches never share one.
fn lab_name() -> String {
    format!("bn{}", std::process::id() % 10_000_000)
}

/// masscan's and zmap's own lists deny 198.18.0.0/15, the whole lab. This one keeps the other
/// reserved ranges of zmap's list and excludes nothing inside the lab.
const BLOCKLIST: &str = "\
# Written by `cargo xtask bench` for masscan (--excludefile) and zmap (-b). zmap's and masscan's
# default lists deny 198.18.0.0/15, the lab's whole range; this one keeps the other reserved
# ranges and excludes nothing inside the lab (which has no default route anyway).
0.0.0.0/8
10.0.0.0/8
100.64.0.0/10
127.0.0.0/8
169.254.0.0/16
172.16.0.0/12
192.0.0.0/24
192.0.2.0/24
192.88.99.0/24
192.168.0.0/16
198.51.100.0/24
203.0.113.0/24
224.0.0.0/4
240.0.0.0/4
255.255.255.255/32
";

/// One line of the table (and of the JSON).
#[derive(Debug, Serialize)]
struct Row {
    scenario: u8,
    scenario_short: &'static str,
    tool: &'static str,
    /// `ok`, `timeout`, `exit N`, `skipped`, `not installed`.
    status: String,
    /// The exact command line, namespace prefix included.
    command: Option<String>,
    /// The representative run (median wall time), then every run's wall time.
    wall_s: Option<f64>,
    wall_all_s: Vec<f64>,
    probes: Option<u64>,
    /// `tool` (its own count) or `target` (SYNs counted arriving at the target: the tool
    /// prints no count).
    probes_source: Option<&'static str>,
    probes_per_s: Option<f64>,
    cpu_s: Option<f64>,
    cpu_user_s: Option<f64>,
    cpu_sys_s: Option<f64>,
    /// Accuracy; `exact` is `None` for open-only tools.
    score: Option<Score>,
    three_state_pct: Option<f64>,
    /// Packets counted at the target during the run.
    wire: Option<Wire>,
    /// Wall time of this row / wall time of Portscope in the same scenario.
    wall_vs_portscope: Option<f64>,
    /// Probes per second / the answering ceiling measured in the same run.
    of_ceiling: Option<f64>,
    /// The tool's own scan time (Portscope: submission to last result, sockets open).
    scan_s: Option<f64>,
    /// Probes per second of scan time / the answering ceiling: like for like with the
    /// ceiling, which `ps-blast` counts over its own send time.
    scan_of_ceiling: Option<f64>,
    /// CPU-seconds per million probes.
    cpu_s_per_m: Option<f64>,
    note: Option<String>,
}

impl Row {
    fn empty(scenario: &Scenario, tool: Tool, status: String) -> Row {
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
struct ScenarioInfo {
    id: u8,
    short: &'static str,
    title: &'static str,
    pairs: u64,
    open_expected: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    generated_unix: u64,
    cpus: usize,
    /// `/proc/loadavg` just before the first run: other work on the machine skews the numbers.
    loadavg_before: String,
    rate_pps: u64,
    runs: usize,
    nmap_cap_s: u64,
    /// The zmap that ran (Debian's, or the build `--zmap` named).
    zmap: zmap::Zmap,
    lab: String,
    /// The lab's ceiling measured in this run (`None` when ps-blast could not run).
    ceiling: Option<ceiling::Ceiling>,
    scenarios: Vec<ScenarioInfo>,
    rows: Vec<Row>,
    notes: Vec<String>,
}

/// Runs the benchmark; returns the exit code.
pub fn run(args: &[String]) -> anyhow::Result<i32> {
    if args.first().map(String::as_str) == Some(service::AGENT) {
        return service::agent(&args[1..]);
    }
    if args.iter().any(|a| a == "--service") {
        let rest: Vec<String> = args.iter().filter(|a| *a != "--service").cloned().collect();
        return service::run(&rest);
    }
    let opts = Options::parse(args).unwrap_or_else(|e| e.exit());
    let scenarios = Scenario::select(opts.quick, opts.big, opts.loss.is_some());
    for s in &scenarios {
        check_in_lab(s)?;
    }
    let root = workspace_root();
    let out_dir = root.join("target/bench");
    let raw = out_dir.join("raw");
    fs::create_dir_all(&raw).with_context(|| format!("creating {}", raw.display()))?;
    fs::write(out_dir.join("blocklist.conf"), BLOCKLIST)?;

    eprintln!("bench: building the release scanner ...");
    cargo_build_release(
        &root,
        &[
            "-p",
            "portscope",
            "-p",
            "portscope-benches",
            // `--bin` filters every package named: name both binaries.
            "--bin",
            "portscope",
            "--bin",
            "ps-blast",
        ],
    )?;

    let lab = LabGuard::up(&LabConfig {
        name: lab_name(),
        hosts: 16,
        wide: true,
        ..LabConfig::default()
    })?;
    measure::install_wire_counters(&lab)?;
    let env = Env {
        portscope: root.join("target/release/portscope"),
        rate: opts.rate,
        iface: lab.scanner_if().to_owned(),
        scanner_ip: match lab.truth().scanner_v4 {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(_) => bail!("the lab's scanner v4 address is not v4"),
        },
        router_mac: router_mac(&lab)?,
        blocklist: "../blocklist.conf".into(),
        portscope_args: opts.portscope_args.clone(),
        zmap: match &opts.zmap {
            Some(path) => zmap::Zmap::detect(path)?,
            None => zmap::Zmap::detect(zmap::SYSTEM).unwrap_or_else(|_| zmap::Zmap::debian()),
        },
    };
    let send_path = ceiling::SendPath {
        iface: env.iface.clone(),
        next_hop: env.router_mac.clone(),
    };
    let (loadavg_before, cpus) = (loadavg(), cpus());
    eprintln!(
        "bench: lab {} up (no default route); next hop {}; load average {loadavg_before} on {cpus} CPUs",
        lab.name(),
        env.router_mac
    );

    let threads = opts.send_threads(cpus);
    let blast = root.join("target/release/ps-blast");
    let mut ceiling = match ceiling::measure(&lab, &blast, &raw, threads, send_path) {
        Ok(c) => {
            eprintln!(
                "bench: ceiling {:.0} probes/s answered, {:.0} into a black hole",
                c.answering().pps,
                c.black_hole.pps
            );
            Some(c)
        }
        Err(e) => {
            eprintln!("bench: no ceiling: {e:#}");
            None
        }
    };
    if let (Some(c), Some(s)) = (ceiling.as_mut(), scenarios.iter().find(|s| s.is_sweep())) {
        match c.measure_sweep(&lab, &blast, &raw, s) {
            Ok(w) => eprintln!(
                "bench: sweep ceiling {:.0} probes/s into {} (scenario {}'s base)",
                w.legs.before.pps,
                w.target(),
                w.scenario
            ),
            Err(e) => eprintln!("bench: no sweep ceiling: {e:#}"),
        }
    }

    let mut rows = Vec::new();
    let mut infos = Vec::new();
    for s in &scenarios {
        if s.id == scenario::LOSS_ID {
            lab.set_impairments(opts.loss.unwrap_or(0.0), None)?;
        }
        let open_expected = scenario::Answer::new(s)
            .score(lab.truth(), false)
            .open_expected;
        infos.push(ScenarioInfo {
            id: s.id,
            short: s.short,
            title: s.title,
            pairs: s.pairs(),
            open_expected,
        });
        eprintln!("\nbench: scenario {}: {}", s.id, s.title);
        let first_row = rows.len();
        rows.extend(bench_scenario(&lab, &env, &raw, s, &opts)?);
        let base = rows[first_row..]
            .iter()
            .find(|r| r.tool == Tool::Portscope.label() && r.status == "ok")
            .and_then(|r| r.wall_s);
        for row in &mut rows[first_row..] {
            row.wall_vs_portscope = base.zip(row.wall_s).map(|(b, w)| w / b);
        }
    }
    if let Some(c) = ceiling.as_mut() {
        lab.set_impairments(0.0, None)?;
        match c.measure_after(&lab, &blast, &raw) {
            Ok(()) => eprintln!(
                "\nbench: ceiling after the scanners {:.0} probes/s answered ({:.0}% apart; ratios against the higher){}",
                c.answering.after.map_or(0.0, |a| a.pps),
                c.answering.spread() * 100.0,
                c.sweep
                    .as_ref()
                    .and_then(|w| w.legs.after)
                    .map_or(String::new(), |a| format!(", {:.0} into the sweep", a.pps))
            ),
            Err(e) => eprintln!("\nbench: no ceiling after the scanners: {e:#}"),
        }
    }
    for row in &mut rows {
        let base = ceiling.as_ref().map(|c| c.base_for(row.scenario).pps);
        row.of_ceiling = base.zip(row.probes_per_s).map(|(c, p)| p / c);
        row.scan_of_ceiling = base
            .zip(row.scan_s.zip(row.probes))
            .map(|(c, (t, p))| p as f64 / t.max(1e-9) / c);
    }
    let lab_name = lab.name().to_owned();
    drop(lab);

    let report = Report {
        generated_unix: unix_now(),
        cpus,
        loadavg_before,
        rate_pps: opts.rate,
        runs: opts.runs,
        nmap_cap_s: opts.nmap_cap.as_secs(),
        zmap: env.zmap.clone(),
        lab: format!("{lab_name} (16 extra hosts; wide: every 198.19.0.0/16 address answers)"),
        ceiling,
        scenarios: infos,
        notes: notes(&opts, &env.zmap, cpus),
        rows,
    };
    publish(
        "bench",
        &render(&report),
        &out_dir.join("results.json"),
        &report,
    )?;
    Ok(0)
}

/// Refuse a scenario outside the lab's 198.18.0.0/15.
fn check_in_lab(s: &Scenario) -> anyhow::Result<()> {
    let lab = |a: Ipv4Addr| u32::from(a) >> 17 == u32::from(truth::SCANNER_V4) >> 17;
    if !lab(s.first) || !lab(s.last) {
        bail!("scenario {} leaves 198.18.0.0/15", s.id);
    }
    Ok(())
}

/// MAC of the target's end of the veth (`link/ether ...` of `ip -n <target> link show`).
fn router_mac(lab: &Lab) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["-n", lab.target_ns(), "link", "show", lab.target_if()])
        .output()
        .context("running ip link show")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_owned)
        .with_context(|| {
            format!(
                "no link/ether in `ip link show {}`: {text}",
                lab.target_if()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_stay_in_the_lab() {
        for s in Scenario::all(false) {
            check_in_lab(&s).unwrap();
        }
        let outside = Scenario {
            last: Ipv4Addr::new(198, 20, 0, 0),
            ..Scenario::all(true).remove(0)
        };
        assert!(check_in_lab(&outside).is_err());
    }
}
