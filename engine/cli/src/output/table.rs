//! Human-readable result table (nmap's normal output shape), the default on a terminal.
//!
//! Open ports are announced as found (`Discovered open port 22/tcp on 198.18.0.2`, as
//! nmap -v prints them). Results are held per host and printed at the end: up hosts in address order, one line
//! per shown port (`PORT STATE SERVICE REASON`), closed ports that are not shown summed in
//! a `Not shown:` line. Not meant for parsing: use ndjson, json, xml or grepable for that.

use super::held::HeldFormat;
use super::{nmap_reason, proto_str, summary, HostFlag, HostTable, Out, ScanEnd, ScanMeta};
use portscope_core::results::{PortResult, PortState};
use portscope_core::services::tcp_service;
use std::io::{self, Write};

/// Writes the table.
pub(super) struct TableReport;

impl HeldFormat for TableReport {
    fn begin(&mut self, out: &mut Out, meta: &ScanMeta) -> io::Result<()> {
        writeln!(
            out,
            "Portscope {} SYN scan: {} ports on {} address(es)",
            meta.version, meta.ports, meta.targets
        )?;
        out.flush()
    }

    fn result(&mut self, out: &mut Out, r: &PortResult) -> io::Result<()> {
        if r.state == PortState::Open {
            // As nmap -v does: open ports show up the moment they are found.
            writeln!(
                out,
                "Discovered open port {}/{} on {}",
                r.port,
                proto_str(r.proto),
                r.ip
            )?;
            out.flush()?;
        }
        Ok(())
    }

    fn host_flag(&mut self, out: &mut Out, flag: &HostFlag) -> io::Result<()> {
        writeln!(out, "Flagged {}: {}", flag.flag.as_str(), flag.describe())?;
        out.flush()
    }

    fn end(&mut self, out: &mut Out, hosts: &mut HostTable, end: &ScanEnd) -> io::Result<()> {
        let up = hosts.up();
        for (ip, host) in hosts.sorted_up() {
            writeln!(out, "\nScan report for {ip}")?;
            if let Some(f) = &host.flag {
                writeln!(
                    out,
                    "Not shown: {} open tcp ports (syn-ack): SYN proxy or tarpit",
                    f.open_answers
                )?;
            }
            if host.hidden_closed > 0 {
                writeln!(
                    out,
                    "Not shown: {} closed tcp ports (reset)",
                    host.hidden_closed
                )?;
            }
            if host.shown.is_empty() {
                continue;
            }
            writeln!(
                out,
                "{:<11} {:<9} {:<16} REASON",
                "PORT", "STATE", "SERVICE"
            )?;
            for e in &host.shown {
                let port = format!("{}/{}", e.port, proto_str(e.proto));
                let reason = nmap_reason(ip.is_ipv6(), e.reason, e.icmp);
                let reason = if e.ttl > 0 {
                    format!("{reason} ttl {}", e.ttl)
                } else {
                    reason.to_string()
                };
                writeln!(
                    out,
                    "{port:<11} {:<9} {:<16} {reason}",
                    e.state.as_str(),
                    tcp_service(e.port).unwrap_or("unknown"),
                )?;
            }
        }
        let total = hosts.total();
        if end.interrupted {
            writeln!(out, "\nScan interrupted: results are incomplete.")?;
        }
        writeln!(out, "\n{}", summary(total, up, end.elapsed_secs))?;
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{testdata, Format};

    fn render(show_closed: bool) -> String {
        testdata::run(Format::Table, show_closed, &testdata::results(), false)
    }

    #[test]
    fn table_lists_shown_ports_per_up_host() {
        let s = render(false);
        assert!(
            s.contains("Scan report for 198.18.0.2\nNot shown: 2 closed tcp ports (reset)\n"),
            "{s}"
        );
        assert!(
            s.contains("443/tcp     filtered  https            admin-prohibited ttl 63\n"),
            "{s}"
        );
        assert!(
            s.contains("9000/tcp    filtered  cslistener       no-response\n"),
            "{s}"
        );
        assert!(
            !s.contains("Scan report for 198.18.0.3"),
            "down hosts are not listed: {s}"
        );
        assert!(
            s.ends_with("3 IP addresses (2 hosts up) scanned in 0.52 seconds\n"),
            "{s}"
        );
    }

    #[test]
    fn closed_shown_on_request() {
        let s = render(true);
        assert!(!s.contains("Not shown"), "{s}");
        assert!(
            s.contains("80/tcp      closed    http             reset ttl 64\n"),
            "{s}"
        );
    }
}
