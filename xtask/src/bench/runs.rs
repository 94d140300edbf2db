//! The scanners on one scenario: every run measured (wall, CPU, wire) and scored against the
//! lab's truth, the tools' runs interleaved, each tool reduced to the row of its median run.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::measure::{self, End, Wire};
use super::options::Options;
use super::parse::{self, Texts};
use super::scenario::{Scenario, Score};
use super::tools::{self, Env, Files, Tool};
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

/// Every tool of the run on `s`, `opts.runs` times each, interleaved (run 1 of every tool,
/// then run 2, ...: the machine's speed drifts by tens of percent within minutes, and
/// interleaving spreads that drift over all tools alike), each reduced to the row of its
/// median run, in `opts.tools()` order.
pub(super) fn bench_scenario(
    lab: &Lab,
    env: &Env,
    raw: &Path,
    s: &Scenario,
    opts: &Options,
) -> anyhow::Result<Vec<Row>> {
    let plans: Vec<Result<Plan, Row>> = opts
        .tools()
        .map(|tool| Plan::new(lab, env, s, tool, opts))
        .collect::<anyhow::Result<_>>()?;
    let mut runs: Vec<Vec<Run>> = plans.iter().map(|_| Vec::new()).collect();
    for i in 0..opts.runs {
        for (plan, done) in plans.iter().zip(&mut runs) {
            if let Ok(plan) = plan {
                done.push(plan.run(lab, raw, s, (i, opts.runs))?);
            }
        }
    }
    Ok(plans
        .into_iter()
        .zip(runs)
        .map(|(plan, done)| match plan {
            Ok(plan) => {
                let mut row = median_row(s, plan.tool, done);
                row.command = Some(plan.command);
                row
            }
            Err(row) => row,
        })
        .collect())
}

/// How one tool runs on one scenario.
struct Plan {
    tool: Tool,
    files: Files,
    program: String,
    args: Vec<String>,
    /// The whole command line, quoted, for the table.
    command: String,
    timeout: Duration,
}

impl Plan {
    /// The tool's command for `s`, or the row saying why it does not run.
    fn new(
        lab: &Lab,
        env: &Env,
        s: &Scenario,
        tool: Tool,
        opts: &Options,
    ) -> anyhow::Result<Result<Plan, Row>> {
        if let Some(reason) = tool.skip_reason(s, env) {
            eprintln!("bench:   {:<18} skipped: {reason}", tool.label());
            let mut row = Row::empty(s, tool, "skipped".into());
            row.note = Some(reason);
            return Ok(Err(row));
        }
        if let Some(bin) = tool.peer_binary(env).filter(|b| !Path::new(b).exists()) {
            let mut row = Row::empty(s, tool, "not installed".into());
            row.note = Some(format!(
                "{bin} is missing (apt-get install {}, or --zmap PATH for a zmap build)",
                tool.family()
            ));
            return Ok(Err(row));
        }
        let files = Files::new(tool, s);
        let (program, args) = tools::command(tool, s, env, &files);
        let quoted = shlex::try_join(args.iter().map(String::as_str))
            .with_context(|| format!("quoting {args:?}"))?;
        let command = format!("ip netns exec {} {program} {quoted}", lab.scanner_ns());
        Ok(Ok(Plan {
            tool,
            files,
            program,
            args,
            command,
            timeout: tool.timeout(opts.nmap_cap, s),
        }))
    }

    /// Run `i` of `of`: measured, read and scored.
    fn run(
        &self,
        lab: &Lab,
        raw: &Path,
        s: &Scenario,
        (i, of): (usize, usize),
    ) -> anyhow::Result<Run> {
        let (tool, files) = (self.tool, &self.files);
        std::thread::sleep(SETTLE);
        measure::take_wire(lab)?;
        let mut cmd = lab.scanner_cmd(&self.program);
        cmd.args(&self.args).current_dir(raw);
        let m = measure::run_timed(
            &mut cmd,
            self.timeout,
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
        let parsed = parse::parse(tool, s, &texts)
            .with_context(|| format!("reading the output of {}", self.command))?;
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
                    self.timeout.as_secs()
                ));
            }
            End::Exited(_) => {}
        }
        eprintln!(
            "bench:   {:<18} run {}/{}: {:>7.2} s, {}/{} open, {} false{}",
            tool.label(),
            i + 1,
            of,
            m.wall.as_secs_f64(),
            score.open_found,
            score.open_expected,
            score.false_open,
            score
                .exact_pct()
                .map_or(String::new(), |p| format!(", {p:.3}% exact")),
        );
        Ok(Run {
            wall: m.wall,
            user: m.user,
            sys: m.sys,
            end: m.end,
            probes: parsed.probes,
            scan_s: parsed.scan_s,
            wire,
            score,
            note,
        })
    }
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
