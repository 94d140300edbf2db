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
mod render;
pub mod scenario;
pub mod service;
pub mod tools;

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::lab::{truth, Lab, LabConfig, LabGuard};
use crate::release::{cargo_build_release, cpus, loadavg, publish, unix_now, workspace_root};
use measure::{End, Wire};
use render::{render, thousands};
use scenario::{Scenario, Score};
use tools::{Env, Files, Texts, Tool};

/// What `cargo xtask bench --help` prints after the options.
const AFTER_HELP: &str = "\
The service (engine daemon + API) instead: cargo xtask bench --service [...] (see --service --help).

Scenarios: 1 = 198.18.0.2 x ports 1-65535; 2 = 198.19.0.1-16 x 1-65535; 3 = 198.19.0.0/16 x 80;
4 = 198.19.0.1-198.19.1.0 x 1-65535; 5 = scenario 1 with loss.
Every run also measures the lab's ceiling (ps-blast into the answering target and into a black
hole); each scanner's probes/s is reported as a fraction of it, with CPU-seconds per million probes.
Writes target/bench/results.json and the scanners' raw output to target/bench/raw/.";

/// The lab every scenario runs in: named per process, so two benches never share one.
fn lab_name() -> String {
    format!("bn{}", std::process::id() % 10_000_000)
}
/// Packets per second for Portscope, masscan and zmap unless `--rate` says otherwise.
const RATE: u64 = 250_000;
/// Pause between runs, so one run's late replies and the target's softirq backlog are gone
/// before the next starts.
const SETTLE: Duration = Duration::from_millis(500);

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

/// `cargo xtask bench`: Portscope vs masscan, zmap and nmap on the same lab scenarios.
#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(after_help = AFTER_HELP)]
struct Options {
    /// Scenario 1 only (one host x 65,535 ports).
    #[arg(long)]
    quick: bool,
    /// Run one scanner (both nmap configurations for nmap): portscope, masscan, zmap or nmap.
    #[arg(long, value_name = "TOOL", value_parser = tool_family)]
    only: Option<String>,
    /// Run each scanner N times and report the run with the median wall time.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one)]
    runs: usize,
    /// Kill an nmap run after S seconds and report a timeout.
    #[arg(long = "nmap-cap", value_name = "S", default_value = "300", value_parser = whole_seconds)]
    nmap_cap: Duration,
    /// Add scenario 4: 256 hosts x 65,535 ports (16.8 M probes; minutes).
    #[arg(long)]
    big: bool,
    /// Add scenario 5: scenario 1 through PCT% random loss in both directions.
    #[arg(long, value_name = "PCT", value_parser = loss_pct)]
    loss: Option<f64>,
    /// Append ARG to Portscope's command line (repeatable), e.g. --rx-ring=off.
    #[arg(long = "portscope-arg", value_name = "ARG", allow_hyphen_values = true)]
    portscope_args: Vec<String>,
    /// Packets per second for Portscope, masscan and zmap. Set it above the same-run
    /// ceiling to see how close each gets to it unthrottled.
    #[arg(long, value_name = "PPS", default_value_t = RATE, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
}

/// `--only`: a `Tool::family`.
fn tool_family(s: &str) -> Result<String, String> {
    if Tool::ALL.iter().any(|t| t.family() == s) {
        Ok(s.to_owned())
    } else {
        Err("takes portscope, masscan, zmap or nmap".into())
    }
}

/// `--runs`: a number of at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| "takes a number of at least 1".into())
}

/// `--nmap-cap`: whole seconds, at least 1.
fn whole_seconds(s: &str) -> Result<Duration, String> {
    s.parse()
        .ok()
        .filter(|&n| n >= 1)
        .map(Duration::from_secs)
        .ok_or_else(|| "takes whole seconds, at least 1".into())
}

/// `--loss`: a percentage below 50.
fn loss_pct(s: &str) -> Result<f64, String> {
    s.parse()
        .ok()
        .filter(|p: &f64| (0.0..50.0).contains(p))
        .ok_or_else(|| "takes a percentage below 50".into())
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, clap::Error> {
        crate::args::try_parse("bench", args)
    }

    fn tools(&self) -> impl Iterator<Item = Tool> + '_ {
        Tool::ALL
            .into_iter()
            .filter(|t| self.only.as_deref().is_none_or(|o| t.family() == o))
    }
}

/// One run of one tool, measured and scored.
#[derive(Debug)]
struct Run {
    wall: Duration,
    user: Duration,
    sys: Duration,
    end: End,
    probes: Option<u64>,
    scan_s: Option<f64>,
    wire: Wire,
    score: Score,
    note: Option<String>,
}

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
    };
    let (loadavg_before, cpus) = (loadavg(), cpus());
    eprintln!(
        "bench: lab {} up (no default route); next hop {}; load average {loadavg_before} on {cpus} CPUs",
        lab.name(),
        env.router_mac
    );

    let ceiling = match ceiling::measure(&lab, &root.join("target/release/ps-blast"), &raw) {
        Ok(c) => {
            eprintln!(
                "bench: ceiling {:.0} probes/s answered, {:.0} into a black hole",
                c.answering.pps, c.black_hole.pps
            );
            Some(c)
        }
        Err(e) => {
            eprintln!("bench: no ceiling: {e:#}");
            None
        }
    };

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
        for tool in opts.tools() {
            rows.push(bench_tool(&lab, &env, &raw, s, tool, &opts)?);
        }
        let base = rows[first_row..]
            .iter()
            .find(|r| r.tool == Tool::Portscope.label() && r.status == "ok")
            .and_then(|r| r.wall_s);
        for row in &mut rows[first_row..] {
            row.wall_vs_portscope = base.zip(row.wall_s).map(|(b, w)| w / b);
            row.of_ceiling = ceiling
                .zip(row.probes_per_s)
                .map(|(c, p)| p / c.answering.pps);
            row.scan_of_ceiling = ceiling
                .zip(row.scan_s.zip(row.probes))
                .map(|(c, (t, p))| p as f64 / t.max(1e-9) / c.answering.pps);
        }
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
        lab: format!("{lab_name} (16 extra hosts; wide: every 198.19.0.0/16 address answers)"),
        ceiling,
        scenarios: infos,
        notes: notes(&opts, cpus),
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

/// All runs of `tool` on `scenario`, reduced to one row (the run with the median wall time).
fn bench_tool(
    lab: &Lab,
    env: &Env,
    raw: &Path,
    s: &Scenario,
    tool: Tool,
    opts: &Options,
) -> anyhow::Result<Row> {
    if let Some(reason) = tool.skip_reason(s) {
        eprintln!("bench:   {:<18} skipped: {reason}", tool.label());
        let mut row = Row::empty(s, tool, "skipped".into());
        row.note = Some(reason);
        return Ok(row);
    }
    if let Some(bin) = tool.system_binary().filter(|b| !Path::new(b).exists()) {
        let mut row = Row::empty(s, tool, "not installed".into());
        row.note = Some(format!(
            "{bin} is missing (apt-get install {})",
            tool.family()
        ));
        return Ok(row);
    }
    let files = Files::new(tool, s);
    let (program, args) = tools::command(tool, s, env, &files);
    let command = format!(
        "ip netns exec {} {program} {}",
        lab.scanner_ns(),
        args.join(" ")
    );
    let timeout = tool.timeout(opts.nmap_cap, s);
    let mut runs = Vec::new();
    for i in 0..opts.runs {
        std::thread::sleep(SETTLE);
        measure::take_wire(lab)?;
        let mut cmd = lab.scanner_cmd(&program);
        cmd.args(&args).current_dir(raw);
        let m = measure::run_timed(
            &mut cmd,
            timeout,
            &raw.join(&files.stdout),
            &raw.join(&files.stderr),
        )?;
        let wire = measure::take_wire(lab)?;
        let read = |name: &str| fs::read_to_string(raw.join(name)).unwrap_or_default();
        let texts = Texts {
            stdout: read(&files.stdout),
            stderr: read(&files.stderr),
            result: read(&files.result),
        };
        let parsed = tools::parse(tool, s, &texts)
            .with_context(|| format!("reading the output of {command}"))?;
        let score = parsed.answer.score(lab.truth(), tool.three_state());
        let mut note = parsed.note;
        match m.end {
            End::Exited(status) if !status.success() => {
                let first = texts.stderr.lines().find(|l| !l.trim().is_empty());
                note = Some(format!("{status}: {}", first.unwrap_or("").trim()));
            }
            End::TimedOut => {
                note = Some(format!(
                    "killed at the {} s cap; accuracy is of its partial output",
                    timeout.as_secs()
                ));
            }
            End::Exited(_) => {}
        }
        eprintln!(
            "bench:   {:<18} run {}/{}: {:>7.2} s, {}/{} open, {} false{}",
            tool.label(),
            i + 1,
            opts.runs,
            m.wall.as_secs_f64(),
            score.open_found,
            score.open_expected,
            score.false_open,
            score
                .exact_pct()
                .map_or(String::new(), |p| format!(", {p:.3}% exact")),
        );
        runs.push(Run {
            wall: m.wall,
            user: m.user,
            sys: m.sys,
            end: m.end,
            probes: parsed.probes,
            scan_s: parsed.scan_s,
            wire,
            score,
            note,
        });
    }
    let mut row = median_row(s, tool, runs);
    row.command = Some(command);
    Ok(row)
}

/// The row of the run with the median wall time (the lower middle one for an even count).
fn median_row(s: &Scenario, tool: Tool, mut runs: Vec<Run>) -> Row {
    let wall_all_s = runs.iter().map(|r| r.wall.as_secs_f64()).collect();
    runs.sort_by_key(|r| r.wall);
    let r = runs.swap_remove((runs.len() - 1) / 2);
    let status = match r.end {
        End::Exited(s) if s.success() => "ok".to_owned(),
        End::Exited(s) => s
            .code()
            .map_or_else(|| "killed".to_owned(), |c| format!("exit {c}")),
        End::TimedOut => "timeout".to_owned(),
    };
    let wall = r.wall.as_secs_f64();
    let (probes, source) = match r.probes {
        Some(p) => (p, "tool"),
        None => (r.wire.syn_in, "target"),
    };
    let cpu = (r.user + r.sys).as_secs_f64();
    let mut row = Row::empty(s, tool, status);
    row.wall_s = Some(wall);
    row.wall_all_s = wall_all_s;
    row.probes = Some(probes);
    row.probes_source = Some(source);
    row.probes_per_s = Some(probes as f64 / wall.max(1e-9));
    row.cpu_s = Some(cpu);
    row.cpu_s_per_m = Some(cpu / (probes.max(1) as f64 / 1e6));
    row.cpu_user_s = Some(r.user.as_secs_f64());
    row.cpu_sys_s = Some(r.sys.as_secs_f64());
    row.three_state_pct = r.score.exact_pct();
    row.score = Some(r.score);
    row.wire = Some(r.wire);
    row.note = r.note;
    row.scan_s = r.scan_s;
    row
}

/// Footnotes: settings of every tool, and what the numbers mean.
fn notes(opts: &Options, cpus: usize) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options() {
        let o = Options::parse(&[]).unwrap();
        assert_eq!(
            (o.quick, o.only.clone(), o.runs, o.rate),
            (false, None, 1, RATE)
        );
        assert_eq!(o.tools().count(), 5);
        assert_eq!(
            Options::parse(&args(&["--rate", "1000000"])).unwrap().rate,
            1_000_000
        );
        let o = Options::parse(&args(&["--quick", "--only", "nmap", "--runs", "3"])).unwrap();
        assert!(o.quick);
        assert_eq!(o.runs, 3);
        assert_eq!(
            o.tools().collect::<Vec<_>>(),
            [Tool::Nmap, Tool::NmapMinRate]
        );
        let o = Options::parse(&args(&["--portscope-arg", "--rx-ring=off"])).unwrap();
        assert_eq!(o.portscope_args, ["--rx-ring=off"]);
        for bad in [
            &["--only", "unicornscan"][..],
            &["--runs", "0"],
            &["--runs"],
            &["--fast"],
            &["--nmap-cap", "x"],
            &["--rate", "0"],
            &["--rate", "fast"],
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

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

    #[test]
    fn numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_048_560), "1,048,560");
    }

    #[test]
    fn median_picks_the_middle_run() {
        let s = Scenario::all(true).remove(0);
        let run = |ms: u64| Run {
            wall: Duration::from_millis(ms),
            user: Duration::ZERO,
            sys: Duration::from_millis(ms / 2),
            end: End::TimedOut,
            probes: None,
            scan_s: Some(ms as f64 / 1000.0),
            wire: Wire {
                syn_in: 1000,
                ..Wire::default()
            },
            score: Score {
                pairs: 1,
                open_expected: 1,
                open_found: 1,
                false_open: 0,
                exact: None,
            },
            note: None,
        };
        let row = median_row(&s, Tool::Masscan, vec![run(300), run(100), run(200)]);
        assert_eq!(row.wall_s, Some(0.2));
        assert_eq!(row.wall_all_s, [0.3, 0.1, 0.2]);
        assert_eq!(row.status, "timeout");
        assert_eq!(row.probes_source, Some("target"));
        assert_eq!(row.probes_per_s, Some(5000.0));
        assert_eq!(row.scan_s, Some(0.2), "the median run's own scan time");
        let mut row = row;
        row.scan_of_ceiling = Some(0.9);
        let table = render(&Report {
            generated_unix: 0,
            cpus: 2,
            loadavg_before: "0.00".into(),
            rate_pps: RATE,
            runs: 3,
            nmap_cap_s: 300,
            lab: "x".into(),
            ceiling: None,
            scenarios: Vec::new(),
            rows: vec![row],
            notes: Vec::new(),
        });
        assert!(table.contains("5,000*"), "{table}");
        assert!(table.contains("scan 0.200 s = 90% of ceiling"), "{table}");
    }
}
