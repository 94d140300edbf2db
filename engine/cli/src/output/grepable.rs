//! nmap `-oG` grepable output: a `Status: Up` line and a `Ports:` line per up host.
//!
//! Results are held per host and written at the end, up hosts in address order and ports
//! ascending; down hosts are only counted, as nmap does without `-v`. Closed ports that are
//! not shown are summed into `Ignored State: closed (N)`. An interrupted scan gets a
//! `# Scan interrupted` comment before the final `# Portscope done` line. A host flagged as
//! a SYN proxy gets a `# syn-proxy: ...` comment line before its lines, and its open
//! answers are not listed.

use super::held::HeldFormat;
use super::{proto_str, summary, timestr, HostAcc, HostTable, Out, ScanEnd, ScanMeta};
use portscope_core::services::tcp_service;
use std::io::{self, Write};
use std::net::IpAddr;

/// Writes nmap-grepable lines.
pub(super) struct GrepableReport;

impl HeldFormat for GrepableReport {
    fn begin(&mut self, out: &mut Out, meta: &ScanMeta) -> io::Result<()> {
        writeln!(
            out,
            "# Nmap-style grepable output: portscope {} scan initiated {} as: {}",
            one_line(meta.version),
            timestr(meta.start_unix),
            one_line(&meta.args)
        )?;
        out.flush()
    }

    fn end(&mut self, out: &mut Out, hosts: &mut HostTable, end: &ScanEnd) -> io::Result<()> {
        let up = hosts.up();
        for (ip, host) in hosts.sorted_up() {
            write_host(out, ip, host)?;
        }
        let total = hosts.total();
        if end.interrupted {
            writeln!(out, "# Scan interrupted: results are incomplete")?;
        }
        writeln!(
            out,
            "# Portscope done at {} -- {}",
            timestr(end.end_unix),
            summary(total, up, end.elapsed_secs)
        )?;
        out.flush()
    }
}

/// Writes one up host's two lines. A host whose ports are all hidden gets only the status
/// line, as in nmap.
fn write_host(out: &mut Out, ip: &IpAddr, host: &HostAcc) -> io::Result<()> {
    if let Some(f) = &host.flag {
        writeln!(out, "# {}: {}", f.flag.as_str(), f.describe())?;
    }
    writeln!(out, "Host: {ip} ()\tStatus: Up")?;
    if host.shown.is_empty() {
        return Ok(());
    }
    write!(out, "Host: {ip} ()\tPorts: ")?;
    for (i, e) in host.shown.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        // port/state/protocol/owner/service/rpc/version/
        write!(
            out,
            "{sep}{}/{}/{}//{}///",
            e.port,
            e.state.as_str(),
            proto_str(e.proto),
            tcp_service(e.port).unwrap_or("")
        )?;
    }
    if host.hidden_closed > 0 {
        write!(out, "\tIgnored State: closed ({})", host.hidden_closed)?;
    }
    writeln!(out)
}

/// `s` with line breaks and other control characters turned into spaces, so a header
/// stays one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{results, run};
    use super::super::Format;
    use super::*;
    use portscope_core::results::PortResult;

    const HEADER: &str = "# Nmap-style grepable output: portscope 0.1.0 scan initiated Sun Nov 22 12:21:37 2026 as: portscope -p 22,80,81,443,9000 --note \"a<b&c\" 198.18.0.2-198.18.0.3 2001:db8::1\n";
    const DONE: &str = "# Portscope done at Sun Nov 22 12:21:38 2026 -- 3 IP addresses (2 hosts up) scanned in 0.52 seconds\n";

    #[test]
    fn closed_hidden() {
        let want = format!(
            "{HEADER}{}{DONE}",
            "Host: 198.18.0.2 ()\tStatus: Up\n\
             Host: 198.18.0.2 ()\tPorts: 22/open/tcp//ssh///, 443/filtered/tcp//https///, 9000/filtered/tcp//cslistener///\tIgnored State: closed (2)\n\
             Host: 2001:db8::1 ()\tStatus: Up\n\
             Host: 2001:db8::1 ()\tPorts: 80/filtered/tcp//http///, 443/open/tcp//https///, 9000/filtered/tcp//cslistener///\tIgnored State: closed (2)\n"
        );
        assert_eq!(run(Format::Grepable, false, &results(), false), want);
    }

    #[test]
    fn closed_shown() {
        let want = format!(
            "{HEADER}{}{DONE}",
            "Host: 198.18.0.2 ()\tStatus: Up\n\
             Host: 198.18.0.2 ()\tPorts: 22/open/tcp//ssh///, 80/closed/tcp//http///, 81/closed/tcp//hosts2-ns///, 443/filtered/tcp//https///, 9000/filtered/tcp//cslistener///\n\
             Host: 2001:db8::1 ()\tStatus: Up\n\
             Host: 2001:db8::1 ()\tPorts: 22/closed/tcp//ssh///, 80/filtered/tcp//http///, 81/closed/tcp//hosts2-ns///, 443/open/tcp//https///, 9000/filtered/tcp//cslistener///\n"
        );
        assert_eq!(run(Format::Grepable, true, &results(), false), want);
    }

    #[test]
    fn ignored_state_counts_closed_per_host() {
        let mut rs = results();
        // Many more closed ports on the IPv6 host, an unknown-service open port on the v4 one.
        for port in 1000..1100 {
            rs.push(PortResult {
                ip: "2001:db8::1".parse().unwrap(),
                port,
                ..rs[4].clone()
            });
        }
        rs.push(PortResult {
            port: 31337,
            ..rs[8].clone()
        });
        let text = run(Format::Grepable, false, &rs, false);
        let ports: Vec<&str> = text.lines().filter(|l| l.contains("\tPorts: ")).collect();
        assert_eq!(ports.len(), 2);
        assert!(
            ports[0].ends_with(", 31337/open/tcp/////\tIgnored State: closed (2)"),
            "{}",
            ports[0]
        );
        assert!(
            ports[1].ends_with("\tIgnored State: closed (102)"),
            "{}",
            ports[1]
        );
    }

    #[test]
    fn all_closed_host_gets_only_status_line() {
        let rs: Vec<PortResult> = results()
            .into_iter()
            .filter(|r| r.ip.is_ipv6() && r.port == 22)
            .collect();
        let text = run(Format::Grepable, false, &rs, true);
        let want = format!(
            "{HEADER}Host: 2001:db8::1 ()\tStatus: Up\n\
             # Scan interrupted: results are incomplete\n\
             # Portscope done at Sun Nov 22 12:21:38 2026 -- 3 IP addresses (1 host up) scanned in 0.52 seconds\n"
        );
        assert_eq!(text, want);
    }

    #[test]
    fn header_stays_one_line() {
        assert_eq!(one_line("a\nb\tc"), "a b c");
    }
}
