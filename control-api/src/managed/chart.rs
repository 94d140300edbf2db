//! The report page's exposure chart: open ports (bars) and grade score (line, with the
//! letter above each bar) over the target's completed scans, as inline SVG with no
//! script and no external assets (the page's CSP allows neither). [`history`] reads the
//! points, [`exposure_svg`] draws them.

use super::report::esc;
use super::store::{MScanRow, MStore};
use crate::model::Status;
use portscope_core::results::PortState;
use std::fmt::Write;

/// Scans shown at most (the most recent ones).
pub const MAX_POINTS: i64 = 20;

/// One completed scan of the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposurePoint {
    /// Scan id.
    pub id: String,
    /// Completion date (`2026-04-03`).
    pub date: String,
    /// Open ports found (all hosts).
    pub open: u64,
    /// Letter grade.
    pub grade: String,
    /// 0-100.
    pub score: i64,
}

/// The target's completed scans up to `row` (same token, same target), oldest first.
pub async fn history(store: &MStore, row: &MScanRow) -> Result<Vec<ExposurePoint>, sqlx::Error> {
    let (rows, _) = store
        .list_scans(&row.token_id, Some(&row.target), MAX_POINTS * 3, 0)
        .await?;
    let mut points = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.status == Status::Complete && r.created_at_ms <= row.created_at_ms)
        .take(MAX_POINTS as usize)
    {
        let open = store
            .ports(&r.id)
            .await?
            .iter()
            .filter(|p| p.state == PortState::Open.as_str())
            .count() as u64;
        points.push(ExposurePoint {
            id: r.id.clone(),
            date: super::date(r.completed_at.unwrap_or(r.created_at_ms / 1000)),
            open,
            grade: r.grade.clone().unwrap_or_else(|| "-".into()),
            score: r.grade_score.unwrap_or(0).clamp(0, 100),
        });
    }
    points.reverse();
    Ok(points)
}

const W: i64 = 720;
const H: i64 = 260;
const LEFT: i64 = 48;
const RIGHT: i64 = 48;
const TOP: i64 = 28;
const BOTTOM: i64 = 44;

/// The chart, or a sentence when there is no completed scan yet.
pub fn exposure_svg(points: &[ExposurePoint]) -> String {
    if points.is_empty() {
        return "<p>No completed scan of this target yet.</p>".into();
    }
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let max_open = points.iter().map(|p| p.open).max().unwrap_or(0).max(1);
    // The port axis tops at a multiple of 4, so its four grid steps are whole ports.
    let top = max_open.div_ceil(4) * 4;
    let n = points.len() as i64;
    let slot = plot_w / n;
    let bar = (slot * 3 / 5).max(2);
    let y_open = |v: u64| TOP + plot_h - (v as i64 * plot_h / top as i64);
    let y_score = |s: i64| TOP + plot_h - (s * plot_h / 100);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg id=\"exposure\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" \
         width=\"{W}\" height=\"{H}\" role=\"img\" aria-labelledby=\"exposure-title\" \
         font-family=\"sans-serif\" font-size=\"11\">\
         <title id=\"exposure-title\">Open ports (bars) and grade score (line) over {n} \
         scan{}</title>",
        if n == 1 { "" } else { "s" }
    );
    // Axes and grid.
    for i in 0..=4 {
        let y = TOP + plot_h * i / 4;
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#555\">{}</text>\
             <text x=\"{}\" y=\"{}\" fill=\"#1a5\">{}</text>",
            W - RIGHT,
            LEFT - 6,
            y + 4,
            top * (4 - i as u64) / 4,
            W - RIGHT + 6,
            y + 4,
            100 * (4 - i) / 4
        );
    }
    let _ = write!(
        s,
        "<text x=\"{LEFT}\" y=\"14\" fill=\"#357\">open ports</text>\
         <text x=\"{}\" y=\"14\" text-anchor=\"end\" fill=\"#1a5\">grade score</text>",
        W - RIGHT
    );
    let mut line = String::new();
    for (i, p) in points.iter().enumerate() {
        let cx = LEFT + slot * i as i64 + slot / 2;
        let y = y_open(p.open);
        let _ = write!(
            s,
            "<rect class=\"bar\" x=\"{}\" y=\"{y}\" width=\"{bar}\" height=\"{}\" fill=\"#357\">\
             <title>{}: {} open, grade {} ({}/100)</title></rect>\
             <text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>\
             <text x=\"{cx}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
            cx - bar / 2,
            TOP + plot_h - y,
            esc(&p.date),
            p.open,
            esc(&p.grade),
            p.score,
            y - 4,
            esc(&p.grade),
            H - BOTTOM + 16,
            esc(&p.date),
        );
        let _ = write!(
            line,
            "{}{cx},{}",
            if i == 0 { "" } else { " " },
            y_score(p.score)
        );
    }
    let _ = write!(
        s,
        "<polyline class=\"score\" points=\"{line}\" fill=\"none\" stroke=\"#1a5\" \
         stroke-width=\"2\"/>"
    );
    for (i, p) in points.iter().enumerate() {
        let cx = LEFT + slot * i as i64 + slot / 2;
        let _ = write!(
            s,
            "<circle cx=\"{cx}\" cy=\"{}\" r=\"3\" fill=\"#1a5\"/>",
            y_score(p.score)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(open: u64, grade: &str, score: i64) -> ExposurePoint {
        ExposurePoint {
            id: format!("s{open}"),
            date: "2024-04-01".into(),
            open,
            grade: grade.into(),
            score,
        }
    }

    #[test]
    fn one_bar_and_point_per_scan_scaled_to_a_round_top() {
        let svg = exposure_svg(&[p(3, "B", 77), p(7, "F", 12), p(0, "A+", 100)]);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        assert_eq!(svg.matches("<circle").count(), 3);
        // 7 open ports -> an 8-port axis in steps of 2; the 0-port scan has an empty bar.
        assert!(
            svg.contains(">8</text>") && svg.contains(">6</text>"),
            "{svg}"
        );
        assert!(svg.contains("height=\"0\""));
        assert!(svg.contains(">A+</text>") && svg.contains(">F</text>"));
        assert!(!svg.contains("<script") && !svg.contains("href"));
        assert!(exposure_svg(&[]).starts_with("<p>"));
        let esc = exposure_svg(&[p(1, "<b>", 50)]);
        assert!(!esc.contains("<b>") && esc.contains("&lt;b&gt;"));
    }
}
