//! What humans and coding agents read: `SECURITY-FIX.md` in seed 002's shape (YAML front
//! matter `format: security-fix/v1`, then numbered fixes with firewall commands) and the
//! HTML report page behind the per-scan key. Pure text rendering: no I/O, no templates,
//! every value HTML-escaped.

use super::findings::{self, Finding, OpenPort, Severity};
use super::store::{AlertRow, MPortRow, MScanRow};
use super::{date, iso_ms};
use crate::model::Status;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;

fn yaml_str(s: &str) -> String {
    // Double-quoted YAML scalar: escape backslash and quote, drop control characters.
    let mut out = String::from("\"");
    for c in s.chars().filter(|c| !c.is_control()) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn severity_counts(f: &[&Finding]) -> String {
    let c = findings::counts(f.iter().copied());
    let parts: Vec<String> = [
        ("critical", c.critical),
        ("high", c.high),
        ("medium", c.medium),
        ("low", c.low),
        ("info", c.info),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(k, n)| format!("{k}: {n}"))
    .collect();
    format!("{{{}}}", parts.join(", "))
}

/// `SECURITY-FIX.md` for a scan: one entry per host under `targets`, then one numbered fix
/// per finding above INFO, most severe first.
pub fn security_fix(row: &MScanRow, open: &[OpenPort]) -> String {
    let all = findings::findings(open);
    let mut by_host: BTreeMap<String, Vec<&Finding>> = BTreeMap::new();
    for a in row.addresses.split(',').filter(|a| !a.contains('/')) {
        by_host.entry(a.to_string()).or_default();
    }
    for f in &all {
        by_host.entry(f.target.clone()).or_default().push(f);
    }
    let mut out = String::new();
    out.push_str("---\nformat: security-fix/v1\nscanner: portscope\n");
    let _ = writeln!(out, "scan_id: {}", row.id);
    let day = row.completed_at.unwrap_or(row.created_at_ms / 1000);
    let _ = writeln!(out, "scan_date: \"{}\"", date(day));
    out.push_str("targets:\n");
    for (host, fs) in &by_host {
        let (grade, _) = findings::grade(fs.iter().copied());
        let _ = writeln!(out, "  - host: {host}");
        let _ = writeln!(out, "    risk_grade: {grade}");
        let _ = writeln!(out, "    severity_counts: {}", severity_counts(fs));
    }
    if by_host.is_empty() {
        let _ = writeln!(out, "  - host: {}", yaml_str(&row.target));
        out.push_str("    risk_grade: A+\n    severity_counts: {}\n");
    }
    out.push_str("---\n\n");
    let _ = writeln!(out, "# Security Fixes: {}\n", row.target);
    if row.status != Status::Complete {
        let _ = writeln!(
            out,
            "> Scan status: {}. These fixes cover the ports found so far.\n",
            row.status
        );
    }
    let fixes: Vec<&Finding> = all.iter().filter(|f| f.severity > Severity::Info).collect();
    if fixes.is_empty() {
        out.push_str("No fixes needed: no risky service was found open.\n");
    }
    for (n, f) in fixes.iter().enumerate() {
        let service = findings::rule_for(f.port).map_or("Service", |r| r.service);
        let v6 = f.target.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6());
        let ipt = if v6 { "ip6tables" } else { "iptables" };
        let _ = writeln!(
            out,
            "## FIX-{}: Close {service} ({}/tcp) on {} [{}]\n",
            n + 1,
            f.port,
            f.target,
            f.severity.as_str()
        );
        let _ = writeln!(out, "{}\n", f.description);
        let _ = writeln!(out, "Evidence: `{}`\n", f.evidence.replace('`', "'"));
        let _ = writeln!(
            out,
            "Block the port on {} with the firewall the host runs. The rules are inserted \
             first in the input chain, so earlier ACCEPT rules do not override them.\n",
            f.target
        );
        let port = f.port;
        let _ = writeln!(
            out,
            "```sh\n\
             # nftables\n\
             nft insert rule inet filter input tcp dport {port} drop\n\
             # iptables\n\
             {ipt} -I INPUT -p tcp --dport {port} -j DROP\n\
             # to keep access from a trusted range, run this after (it lands above the drop):\n\
             # {ipt} -I INPUT -p tcp --dport {port} -s TRUSTED_CIDR -j ACCEPT\n\
             # ufw\n\
             ufw deny {port}/tcp\n\
             ```\n"
        );
        let _ = writeln!(
            out,
            "Verify: `POST /api/v1/scan/{}/retest`; {}/tcp on {} should no longer be open.\n",
            row.id, f.port, f.target
        );
    }
    out
}

/// A report section: its heading, then `none` as a paragraph when there are no `items`,
/// else the items, each written by `item`, between `wrap`'s opening and closing markup.
fn section<T>(
    h: &mut String,
    title: &str,
    none: &str,
    items: &[T],
    wrap: [&str; 2],
    item: impl Fn(&mut String, &T),
) {
    let _ = write!(h, "<h2>{title}</h2>");
    if items.is_empty() {
        let _ = write!(h, "<p>{none}</p>");
        return;
    }
    h.push_str(wrap[0]);
    for i in items {
        item(h, i);
    }
    h.push_str(wrap[1]);
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The report page: grade, the exposure chart over the target's scans, open ports,
/// findings, changes since the previous scan.
pub fn html(
    row: &MScanRow,
    ports: &[MPortRow],
    open: &[OpenPort],
    alerts: &[AlertRow],
    history: &[super::chart::ExposurePoint],
) -> String {
    let found = findings::findings(open);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"robots\" content=\"noindex\"><title>Portscope report: {t}</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em}}\
         .CRITICAL{{color:#a00}}.HIGH{{color:#c50}}</style></head><body>\
         <h1>Port scan report: {t}</h1>",
        t = esc(&row.target)
    );
    let _ = write!(
        h,
        "<p>Status: <b>{}</b>. Grade: <b>{}</b> ({}/100). Created {}{}.</p>",
        esc(row.status.as_str()),
        esc(row.grade.as_deref().unwrap_or("-")),
        row.grade_score.map_or("-".to_string(), |s| s.to_string()),
        iso_ms(row.created_at_ms),
        row.completed_at.map_or(String::new(), |c| format!(
            ", completed {}",
            iso_ms(c * 1000)
        ))
    );
    h.push_str("<h2>Exposure over time</h2>");
    h.push_str(&super::chart::exposure_svg(history));
    section(
        &mut h,
        "Open and filtered ports",
        "None found.",
        ports,
        ["<table><tr><th>Host</th><th>Port</th><th>State</th><th>Service</th><th>Banner</th></tr>", "</table>"],
        |h, p| {
            let port = u16::try_from(p.port).unwrap_or(0);
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}/tcp</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.host),
                port,
                esc(&p.state),
                esc(&crate::model::service_name(port).unwrap_or_default()),
                esc(p.banner.as_deref().unwrap_or(""))
            );
        },
    );
    section(
        &mut h,
        "Findings",
        "None.",
        &found,
        [
            "<table><tr><th>Severity</th><th>Finding</th><th>Details</th></tr>",
            "</table>",
        ],
        |h, f| {
            let _ = write!(
                h,
                "<tr><td class=\"{s}\">{s}</td><td>{}</td><td>{}</td></tr>",
                esc(&f.title),
                esc(&f.description),
                s = f.severity.as_str()
            );
        },
    );
    section(
        &mut h,
        "Changes since the last scan",
        "No changes (or no earlier scan of this target).",
        alerts,
        ["<ul>", "</ul>"],
        |h, a| {
            let _ = write!(
                h,
                "<li><b>{}</b> [{}] {}</li>",
                esc(a.kind.as_str()),
                esc(&a.severity),
                esc(&a.message)
            );
        },
    );
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> MScanRow {
        MScanRow {
            ports: "22,445".into(),
            port_count: 2,
            status: Status::Complete,
            submitted: 1,
            chunks_complete: 1,
            total_chunks: 1,
            report_key: "k".into(),
            grade: Some("B".into()),
            grade_score: Some(77),
            duration_ms: Some(1),
            completed_at: Some(1_711_940_900),
            ..MScanRow::queued(
                "m-1".into(),
                "tok",
                "2001:2::/120".into(),
                1_711_940_800_000,
            )
        }
    }

    fn open(host: &str, port: u16, banner: Option<&str>) -> OpenPort {
        OpenPort {
            host: host.into(),
            port,
            banner: banner.map(str::to_string),
            new: false,
        }
    }

    #[test]
    fn fix_file_lists_every_host_and_uses_ip6tables_for_v6() {
        let text = security_fix(
            &row(),
            &[
                open("2001:2::5", 445, None),
                open("2001:2::9", 22, Some("SSH-2.0-x")),
            ],
        );
        assert!(text.starts_with(
            "---\nformat: security-fix/v1\nscanner: portscope\nscan_id: m-1\nscan_date: \"2024-04-01\"\n\
             targets:\n  - host: 2001:2::5\n    risk_grade: B+\n    severity_counts: {high: 1}\n\
             \x20 - host: 2001:2::9\n    risk_grade: A\n    severity_counts: {low: 1}\n---\n\n\
             # Security Fixes: 2001:2::/120\n\n## FIX-1: Close SMB (445/tcp) on 2001:2::5 [HIGH]\n"
        ), "{text}");
        assert!(text.contains("\nip6tables -I INPUT -p tcp --dport 445 -j DROP\n"));
        assert!(text.contains("## FIX-2: Close SSH (22/tcp) on 2001:2::9 [LOW]"));
        let none = security_fix(&row(), &[]);
        assert!(none
            .contains("  - host: \"2001:2::/120\"\n    risk_grade: A+\n    severity_counts: {}\n"));
        assert!(none.contains("No fixes needed"));
    }

    #[test]
    fn html_escapes_everything() {
        let mut r = row();
        r.target = "<script>x</script>".into();
        let ports = vec![MPortRow {
            host: "2001:2::5".into(),
            port: 22,
            state: "open".into(),
            banner: Some("<img src=x onerror=alert(1)>".into()),
        }];
        let page = html(&r, &ports, &[open("2001:2::5", 22, Some("<b>"))], &[], &[]);
        assert!(!page.contains("<script>x"));
        assert!(!page.contains("<img"));
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    }
}
