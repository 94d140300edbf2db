//! One scanner on one scenario: every run measured (wall, CPU, wire) and scored against the
//! lab's truth, reduced to the row of the median run.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::measure::{self, End, Wire};
use super::options::Options;
use super::scenario::{Scenario, Score};
use super::tools::{self, Env, Files, Texts, Tool};
use super::Row;
use crate::lab::Lab;

/// Pause between runs, so one run's late replies and the target's softirq backlog are gone
/// before the next starts.
const SETTLE: Duration = Duration::from_millis(500);

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

/// All runs of `tool` on `scenario`, reduced to one row (the run with the median wall time).
pub(super) fn bench_tool(
    lab: &Lab,
    env: &Env,
    raw: &Path,
    s: &Scenario,
    tool: Tool,
    opts: &Options,
) -> anyhow::Result<Row> {
    if let Some(reason) = tool.skip_reason(s, env) {
        eprintln!("bench:   {:<18} skipped: {reason}", tool.label());
        let mut row = Row::empty(s, tool, "skipped".into());
        row.note = Some(reason);
        return Ok(row);
    }
    if let Some(bin) = tool.peer_binary(env).filter(|b| !Path::new(b).exists()) {
        let mut row = Row::empty(s, tool, "not installed".into());
        row.note = Some(format!(
            "{bin} is missing (apt-get install {}, or --zmap PATH for a zmap build)",
            tool.family()
        ));
        return Ok(row);
    }
    let files = Files::new(tool, s);
    let (program, args) = tools::command(tool, s, env, &files);
    let quoted = shlex::try_join(args.iter().map(String::as_str))
        .with_context(|| format!("quoting {args:?}"))?;
    let command = format!("ip netns exec {} {program} {quoted}", lab.scanner_ns());
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

#[cfg(test)]
mod tests {
    use super::super::ceiling::{BeforeAfter, Ceiling, Leg, SweepLeg};
    use super::super::options::RATE;
    use super::super::render::render;
    use super::super::Report;
    use super::*;

    fn leg(pps: f64) -> Leg {
        Leg {
            pps,
            cpu_s_per_m: 1.0,
        }
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
            zmap: crate::bench::zmap::Zmap::debian(),
            lab: "x".into(),
            ceiling: Some(Ceiling {
                threads: 2,
                path: super::super::ceiling::tests::path(),
                answering: BeforeAfter {
                    before: leg(250_000.0),
                    after: Some(leg(200_000.0)),
                },
                black_hole: leg(500_000.0),
                sweep: Some(SweepLeg {
                    scenario: 3,
                    block: "198.19.0.0/16".into(),
                    port: 80,
                    legs: BeforeAfter {
                        before: leg(150_000.0),
                        after: Some(leg(120_000.0)),
                    },
                }),
            }),
            scenarios: Vec::new(),
            rows: vec![row],
            notes: Vec::new(),
        });
        assert!(
            table.contains("250,000 probes/s into the answering target (1.00 CPU s per million; the higher of 250,000 before the scanners and 200,000 after, 20% apart)"),
            "{table}"
        );
        assert!(
            table.contains("sweep ceiling (the same ps-blast into 198.19.0.0/16 port 80: every probe answered with a SYN-ACK, which the scanner's kernel resets): 150,000 probes/s (1.00 CPU s per million; the higher of 150,000 before the scanners and 120,000 after, 20% apart), the base of scenario 3's ratios"),
            "{table}"
        );
        assert!(table.contains("5,000*"), "{table}");
        assert!(table.contains("scan 0.200 s = 90% of ceiling"), "{table}");
    }
}
