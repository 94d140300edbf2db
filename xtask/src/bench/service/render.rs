//! The report as a table: rows by section with their same-run references, notes, and the
//! rendered text.

use std::fmt::Write as _;

use super::options::Options;
use super::results::{median, Burst, Latency, Load, Phase1, Report, Row, ScanRun};
use super::{
    ENGINE_DEFAULT_RATE, ENGINE_MAX_RUNNING_DEFAULT, ENGINE_RATE, LOAD_INTERVAL, MAX_QUEUED,
};

pub(super) fn f_s(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.3} s"))
}

pub(super) fn f_rate(x: Option<f64>) -> String {
    x.map_or_else(
        || "-".into(),
        |v| super::super::render::thousands(v.round() as u64),
    )
}

pub(super) fn f_lat(l: &Option<Latency>) -> String {
    l.as_ref().map_or_else(
        || "-".into(),
        |l| {
            format!(
                "p50 {:.2} / p99 {:.2} / max {:.2} ms (n={})",
                l.p50_ms, l.p99_ms, l.max_ms, l.n
            )
        },
    )
}

pub(super) fn runs_list(runs: &[ScanRun]) -> String {
    runs.iter()
        .map(|r| {
            r.post_to_complete_s
                .map_or("-".into(), |v| format!("{v:.3}"))
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

pub(super) type AddRow<'a> = dyn FnMut(&str, &str, String, &str) + 'a;

pub(super) fn phase1_rows(s1: &str, p1: &Phase1, add: &mut AddRow<'_>) {
    let n = p1.fast.len();
    let ok = |runs: &[ScanRun]| runs.iter().filter(|r| r.truth_ok()).count();
    add(
        s1,
        &format!("fast: POST -> complete (webhook), median of {n}"),
        format!("{} (runs {} s)", f_s(p1.fast_median_s), runs_list(&p1.fast)),
        "10-20 s (portscan.com)",
    );
    add(
        s1,
        "fast: API duration_ms (engine run), median",
        p1.fast_duration_ms_median
            .map_or("-".into(), |d| format!("{d:.0} ms")),
        "",
    );
    add(
        s1,
        "fast: probes per scan; results = truth",
        format!(
            "{}; {}/{n}",
            p1.fast.first().and_then(|r| r.probes).unwrap_or(0),
            ok(&p1.fast)
        ),
        "32 ports",
    );
    add(
        s1,
        &format!("deep: POST -> complete (webhook), median of {n}"),
        format!("{} (runs {} s)", f_s(p1.deep_median_s), runs_list(&p1.deep)),
        "30-90 s (portscan.com)",
    );
    add(
        s1,
        "deep: API duration_ms (engine run), median",
        p1.deep_duration_ms_median
            .map_or("-".into(), |d| format!("{d:.0} ms")),
        "",
    );
    let deep_rate = median(p1.deep.iter().filter_map(|r| r.probes_per_s));
    add(
        s1,
        "deep: probes per scan; probes/s; results = truth",
        format!(
            "{}; {}; {}/{n}",
            p1.deep
                .first()
                .and_then(|r| r.probes)
                .map_or("-".into(), super::super::render::thousands),
            f_rate(deep_rate),
            ok(&p1.deep)
        ),
        "65,535 ports",
    );
}

pub(super) fn rows(
    p1: &Phase1,
    default_rate: Option<&Phase1>,
    single: &ScanRun,
    bursts: &[Burst],
    load: &Load,
    cpus: usize,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add = |section: &str, metric: &str, value: String, reference: &str| {
        rows.push(Row {
            section: section.into(),
            metric: metric.into(),
            value,
            reference: reference.into(),
        });
    };
    phase1_rows(
        &format!(
            "1 one scan at a time, from {} (engine --rate {ENGINE_RATE})",
            p1.host
        ),
        p1,
        &mut add,
    );
    if let Some(p) = default_rate {
        phase1_rows(
            &format!("1b the same at the engine's default --rate {ENGINE_DEFAULT_RATE}"),
            p,
            &mut add,
        );
    }
    let s2 = format!("2 deep scans of extra hosts (engine --rate {ENGINE_RATE})");
    add(
        &s2,
        &format!("single deep scan ({} alone): POST -> complete", single.src),
        format!(
            "{} (duration_ms {})",
            f_s(single.post_to_complete_s),
            single.duration_ms.map_or("-".into(), |d| d.to_string())
        ),
        "30-90 s",
    );
    add(
        &s2,
        "single deep scan: probes; probes/s",
        format!(
            "{}; {}",
            single
                .probes
                .map_or("-".into(), super::super::render::thousands),
            f_rate(single.probes_per_s)
        ),
        "",
    );
    let burst_rows = |section: &str, b: &Burst, add: &mut AddRow<'_>| {
        add(
            section,
            "scans POSTed / accepted / complete / = truth",
            format!(
                "{} / {} / {} / {}",
                b.scans, b.accepted, b.complete, b.truth_ok
            ),
            "",
        );
        add(
            section,
            "wrong ports; capture-buffer drops; input-backlog drops",
            format!(
                "{}; {}; {}",
                super::super::render::thousands(b.wrong_ports as u64),
                super::super::render::thousands(b.kernel_drops),
                super::super::render::thousands(b.backlog_drops)
            ),
            "0",
        );
        if !b.discards.is_empty() {
            let d: Vec<String> = b
                .discards
                .iter()
                .map(|(k, v)| format!("{k} {}", super::super::render::thousands(*v)))
                .collect();
            add(section, "replies the engine discarded", d.join(", "), "");
        }
        if b.accepted < b.scans {
            let o: Vec<String> = b
                .post_outcomes
                .iter()
                .map(|(k, v)| format!("{v}x {k}"))
                .collect();
            add(section, "POST outcomes", o.join("; "), "");
        }
        add(
            section,
            "first POST -> last webhook (all done)",
            f_s(b.wall_s),
            "",
        );
        add(
            section,
            "webhooks after the first POST: first / median",
            format!("{} / {}", f_s(b.first_done_s), f_s(b.median_done_s)),
            "",
        );
        add(
            section,
            "per-scan duration_ms (engine run, no queue): median / max",
            format!(
                "{} / {} ms",
                b.median_duration_ms
                    .map_or("-".into(), |d| format!("{d:.0}")),
                b.max_duration_ms.map_or("-".into(), |d| d.to_string())
            ),
            "",
        );
        let ratio = b
            .probes_per_s
            .zip(single.probes_per_s)
            .map_or("-".into(), |(a, s)| format!("{:.2}x", a / s));
        add(
            section,
            "aggregate probes/s (vs single)",
            format!("{} ({ratio})", f_rate(b.probes_per_s)),
            "",
        );
        add(
            section,
            "engine scans running / queued (peak)",
            format!("{} / {}", b.peak_running, b.peak_queued),
            &format!("max-running {}, max-queued {}", b.max_running, b.max_queued),
        );
        add(
            section,
            "POST new deep scan, client latency",
            f_lat(&b.post_latency),
            "",
        );
        if let Some(note) = &b.note {
            add(section, "note", note.clone(), "");
        }
    };
    for b in bursts {
        let section = format!("2 {} concurrent deep scans, {}", b.scans, b.label);
        burst_rows(&section, b, &mut add);
    }
    let s3 = format!(
        "3 API latency: {} scanning hosts poll + {} pollers, 1 req / {:.1} s each",
        load.scan_clients,
        load.pollers,
        load.interval_ms as f64 / 1000.0
    );
    add(
        &s3,
        "requests; rate; duration",
        format!(
            "{}; {:.1}/s; {:.1} s",
            load.requests, load.requests_per_s, load.duration_s
        ),
        &format!("{cpus} CPUs shared by all"),
    );
    add(
        &s3,
        "GET /v1/deep, idle (one at a time)",
        f_lat(&load.get_idle),
        "",
    );
    add(&s3, "GET /v1/deep, under load", f_lat(&load.get), "");
    add(
        &s3,
        "POST /v1/deep joining a live scan, under load",
        f_lat(&load.post_join),
        "",
    );
    add(
        &s3,
        "POST /v1/deep new scan, under load",
        f_lat(&load.post_new),
        "",
    );
    add(
        &s3,
        "429s; other non-200s / errors",
        format!("{}; {}", load.rate_limited, load.errors),
        "edge 30/IP/min",
    );
    let b = &load.scans;
    add(
        &s3,
        "its deep scans: complete / = truth; all done; probes/s",
        format!(
            "{} / {}; {}; {}",
            b.complete,
            b.truth_ok,
            f_s(b.wall_s),
            f_rate(b.probes_per_s)
        ),
        "",
    );
    rows
}

pub(super) fn notes(opts: &Options, cpus: usize) -> Vec<String> {
    vec![
        format!(
            "engine: `portscope engine --rate {ENGINE_RATE}` (the Stack's default: global ceiling and each chunk's rate), \
             --max-running {ENGINE_MAX_RUNNING_DEFAULT} (its default) unless stated, 4 chunks in flight per scan, \
             a deep scan = 32 chunks; --max-queued {MAX_QUEUED} so that no scan is refused, except in the \
             'engine defaults' burst (64)"
        ),
        "POST -> complete: the agent in the target namespace (this program re-executed with `ip netns exec`) times \
         the POST (its response fully read) and the webhook (its body fully read) with one monotonic clock; the \
         API sends the webhook after the engine finished, banners were grabbed and the PTR looked up. \
         duration_ms is the API's field: the engine's run time of the scan, queue time excluded"
            .into(),
        "probes/s: delta of the engine's portscope_engine_probes_sent_total (curl in the scanner namespace) \
         from before the POST(s) to after the last webhook, divided by first POST sent -> last webhook"
            .into(),
        "latency: client side, from connect() to the last byte of the response, one new TCP connection per \
         request (ureq bound to the lab host address, no connection kept), like curl's time_total; \
         recorded in hdrhistogram (3 significant digits); only 200s are in the histograms, the rest are \
         counted"
            .into(),
        format!(
            "rate limits: every lab host is its own ASN (--asn-table); every client address sends at most one \
             request per {:.1} s (edge limit 30/min); the API is restarted between the deep scans of phase 1 \
             (its 1-deep-per-IP-per-5-min counter is in memory); pollers are lab hosts that never scan \
             (the lab drops packets to its unlisted addresses), the first 100 of them also sent the idle GETs",
            LOAD_INTERVAL.as_secs_f64()
        ),
        format!(
            "{cpus} CPUs run everything: engine, API, the target's kernel, the agent, this program; \
             repeats {}, concurrent {}",
            opts.repeats, opts.concurrent
        ),
    ]
}

pub(super) fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nPortscope service in the lab ({} CPUs, load average before: {})\n",
        report.cpus, report.loadavg_before
    );
    let header = ["metric", "value", "reference"];
    let cells: Vec<[String; 3]> = report
        .rows
        .iter()
        .map(|r| [r.metric.clone(), r.value.clone(), r.reference.clone()])
        .collect();
    let mut w = header.map(str::len);
    for c in &cells {
        for (wi, cell) in w.iter_mut().zip(c) {
            *wi = (*wi).max(cell.chars().count());
        }
    }
    let line = |c: &[String; 3]| -> String {
        let mut s = String::new();
        for (i, cell) in c.iter().enumerate() {
            s += cell;
            if i < 2 {
                s += &" ".repeat(w[i] - cell.chars().count() + 2);
            }
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "  {}", line(&header.map(str::to_owned)));
    let mut section = "";
    for (r, c) in report.rows.iter().zip(&cells) {
        if r.section != section {
            section = &r.section;
            let _ = writeln!(out, "{section}");
        }
        let _ = writeln!(out, "  {}", line(c));
    }
    out.push('\n');
    for n in &report.notes {
        let _ = writeln!(out, "- {n}");
    }
    out
}
