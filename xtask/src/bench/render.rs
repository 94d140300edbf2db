//! The benchmark's table as printed: one line per scanner run, the ceiling, notes, commands.

use std::fmt::Write as _;

use super::ceiling::BeforeAfter;
use super::Report;

/// Columns of the table; the last one, the note, is free text.
const COLUMNS: usize = 13;
const NOTE: usize = COLUMNS - 1;

/// The table, the notes and the command lines, as printed.
pub(super) fn render(report: &Report) -> String {
    let mut out = String::new();
    writeln!(
        out,
        "\nPortscope vs peers in lab {}; load average before: {}\n",
        report.lab, report.loadavg_before
    )
    .unwrap();
    if let Some(c) = &report.ceiling {
        writeln!(
            out,
            "  ceiling (ps-blast, {} sending thread(s), link-layer frames on {} to {}, qdisc bypassed, same run): {} probes/s into the answering target ({:.2} CPU s per million; {}), {} into a black hole ({:.2})",
            c.threads,
            c.path.iface,
            c.path.next_hop,
            thousands(c.answering().pps.round() as u64),
            c.answering().cpu_s_per_m,
            legs(&c.answering),
            thousands(c.black_hole.pps.round() as u64),
            c.black_hole.cpu_s_per_m,
        )
        .unwrap();
        if let Some(w) = &c.sweep {
            writeln!(
                out,
                "  sweep ceiling (the same ps-blast into {}: every probe answered with a SYN-ACK, which the scanner's kernel resets): {} probes/s ({:.2} CPU s per million; {}), the base of scenario {}'s ratios",
                w.target(),
                thousands(w.legs.higher().pps.round() as u64),
                w.legs.higher().cpu_s_per_m,
                legs(&w.legs),
                w.scenario
            )
            .unwrap();
        }
    }
    for s in &report.scenarios {
        writeln!(
            out,
            "  scenario {} = {}: {}, {} pairs, {} open in the truth",
            s.id,
            s.short,
            s.title,
            thousands(s.pairs),
            thousands(s.open_expected)
        )
        .unwrap();
    }
    let header = [
        "scenario",
        "tool",
        "wall s",
        "probes/s",
        "of ceiling",
        "CPU s",
        "CPU s/M",
        "open found/exp",
        "false opens",
        "3-state ok",
        "vs portscope",
        "SYN-ACKs sent",
        "note",
    ];
    let mut lines: Vec<[String; COLUMNS]> = vec![header.map(str::to_owned)];
    for r in &report.rows {
        let dash = || "-".to_owned();
        let timeout = r.status == "timeout";
        let wall = r.wall_s.map_or_else(
            || r.status.clone(),
            |w| {
                if timeout {
                    format!(">{w:.0}")
                } else {
                    format!("{w:.2}")
                }
            },
        );
        let pps = r.probes_per_s.map_or_else(dash, |p| {
            let star = if r.probes_source == Some("target") {
                "*"
            } else {
                ""
            };
            format!("{}{star}", thousands(p.round() as u64))
        });
        let (found, false_open, exact) = match &r.score {
            Some(sc) => (
                format!("{}/{}", sc.open_found, sc.open_expected),
                sc.false_open.to_string(),
                r.three_state_pct
                    .map_or_else(|| "open only".to_owned(), |p| format!("{p:.3}%")),
            ),
            None => (dash(), dash(), dash()),
        };
        let ratio = r.wall_vs_portscope.map_or_else(dash, |x| {
            if timeout {
                format!(">{x:.1}x")
            } else {
                format!("{x:.2}x")
            }
        });
        let mut note = r.note.clone().unwrap_or_default();
        if let (Some(t), Some(x)) = (r.scan_s, r.scan_of_ceiling) {
            let sep = if note.is_empty() { "" } else { "; " };
            note = format!("{note}{sep}scan {t:.3} s = {:.0}% of ceiling", x * 100.0);
        }
        if r.status != "ok" && r.status != "skipped" && !note.starts_with(&r.status) {
            note = format!("{}: {note}", r.status);
        }
        lines.push([
            r.scenario_short.to_owned(),
            r.tool.to_owned(),
            wall,
            pps,
            r.of_ceiling
                .map_or_else(dash, |x| format!("{:.0}%", x * 100.0)),
            r.cpu_s.map_or_else(dash, |c| format!("{c:.2}")),
            r.cpu_s_per_m.map_or_else(dash, |c| format!("{c:.2}")),
            found,
            false_open,
            exact,
            ratio,
            r.wire.map_or_else(dash, |w| w.synack_out.to_string()),
            note,
        ]);
    }
    let mut widths = [0usize; COLUMNS];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    out.push('\n');
    for line in &lines {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            // Text columns left-aligned, numbers right-aligned.
            if matches!(i, 0 | 1 | NOTE) {
                text += cell;
                if i != NOTE {
                    text += &" ".repeat(pad);
                }
            } else {
                text += &" ".repeat(pad);
                text += cell;
            }
            text += "  ";
        }
        writeln!(out, "{}", text.trim_end()).unwrap();
    }
    out.push('\n');
    for n in &report.notes {
        writeln!(out, "- {n}").unwrap();
    }
    writeln!(out, "\ncommands:").unwrap();
    for r in &report.rows {
        if let Some(c) = &r.command {
            writeln!(out, "  [{} {}] {c}", r.scenario_short, r.tool).unwrap();
        }
    }
    out
}

/// `1234567` -> `1,234,567`.
/// Which of a ceiling's two measurements counts, and how far apart they were.
fn legs(b: &BeforeAfter) -> String {
    match b.after {
        Some(a) => format!(
            "the higher of {} before the scanners and {} after, {:.0}% apart",
            thousands(b.before.pps.round() as u64),
            thousands(a.pps.round() as u64),
            b.spread() * 100.0
        ),
        None => "measured before the scanners only".to_owned(),
    }
}

pub(super) fn thousands(n: u64) -> String {
    let digits = n.to_string().into_bytes();
    let groups: Vec<&str> = digits
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).expect("ASCII digits"))
        .collect();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (1_048_560, "1,048,560"),
        ] {
            assert_eq!(thousands(n), text);
        }
    }
}
