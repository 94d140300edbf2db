//! nmap `-oX` XML output (`nmaprun`, xmloutputversion 1.05), for tools that read nmap XML.
//! It validates against nmap's DTD (`xmllint --dtdvalid nmap.dtd`).
//!
//! Results are held per host and written at the end: up hosts in address order, ports
//! ascending. A host is up when any of its ports got a reply (open, closed or ICMP); down
//! hosts are counted in `runstats` but not listed, as nmap does without `-v`. Closed ports
//! that are not shown become one `extraports` element. Each host carries the scan's start
//! and end as `starttime`/`endtime` and the measured RTT as `<times>`, as nmap writes them.
//! A host flagged as a SYN proxy gets its open answers as `extraports state="open"` and a
//! `portscope-syn-proxy` host script saying why.
//!
//! `scanner` is `nmap`: the DTD allows no other value, and tools that read nmap XML check
//! it. Portscope names itself in a leading comment (as nmap does), in `args` and `version`.
//! Text is written directly with [`escape`]d attribute values; no XML library is involved.

use super::held::HeldFormat;
use super::{nmap_reason, proto_str, summary, timestr, HostAcc, HostTable, Out, ScanEnd, ScanMeta};
use portscope_core::results::Reason;
use portscope_core::services::tcp_service;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::IpAddr;

/// Writes an nmap-shaped XML document.
pub(super) struct XmlReport;

impl HeldFormat for XmlReport {
    fn begin(&mut self, out: &mut Out, meta: &ScanMeta) -> io::Result<()> {
        write!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <!DOCTYPE nmaprun>\n\
             <!-- Portscope {} scan initiated {} as: {} -->\n\
             <nmaprun scanner=\"nmap\" args=\"{}\" start=\"{}\" startstr=\"{}\" \
             version=\"{}\" xmloutputversion=\"1.05\">\n\
             <scaninfo type=\"syn\" protocol=\"tcp\" numservices=\"{}\" services=\"{}\"/>\n\
             <verbose level=\"0\"/>\n\
             <debugging level=\"0\"/>\n",
            comment(meta.version),
            timestr(meta.start_unix),
            comment(&meta.args),
            escape(&meta.args),
            meta.start_unix,
            timestr(meta.start_unix),
            escape(meta.version),
            meta.ports,
            escape(&meta.port_spec),
        )?;
        out.flush()
    }

    fn end(&mut self, out: &mut Out, hosts: &mut HostTable, end: &ScanEnd) -> io::Result<()> {
        let up = hosts.up();
        let mut text = String::new();
        for (ip, host) in hosts.sorted_up() {
            host_xml(&mut text, ip, host, end);
            out.write_all(text.as_bytes())?;
            text.clear();
        }
        let total = hosts.total();
        let when = timestr(end.end_unix);
        let exit = if end.interrupted {
            "exit=\"error\" errormsg=\"interrupted\""
        } else {
            "exit=\"success\""
        };
        write!(
            out,
            "<runstats><finished time=\"{}\" timestr=\"{when}\" elapsed=\"{:.2}\" \
             summary=\"{}\" {exit}/><hosts up=\"{up}\" down=\"{}\" total=\"{total}\"/>\n\
             </runstats>\n\
             </nmaprun>\n",
            end.end_unix,
            end.elapsed_secs,
            escape(&format!(
                "Portscope done at {when}; {}",
                summary(total, up, end.elapsed_secs)
            )),
            total.saturating_sub(up),
        )?;
        out.flush()
    }
}

/// Appends one up host's `<host>` element.
fn host_xml(s: &mut String, ip: &IpAddr, host: &HostAcc, end: &ScanEnd) {
    let v6 = ip.is_ipv6();
    // Writing into a String cannot fail; the results are ignored below for that reason.
    let (reason, ttl) = match host.status {
        Some(st) => (nmap_reason(v6, st.reason, st.icmp), st.ttl),
        None => (Reason::SynAck.as_str(), 0), // flagged: its SYN-ACKs are the replies
    };
    let _ = writeln!(
        s,
        "<host starttime=\"{}\" endtime=\"{}\"><status state=\"up\" reason=\"{reason}\" \
         reason_ttl=\"{ttl}\"/>",
        end.start_unix, end.end_unix
    );
    let _ = write!(
        s,
        "<address addr=\"{ip}\" addrtype=\"{}\"/>\n<ports>",
        if v6 { "ipv6" } else { "ipv4" }
    );
    if let Some(f) = &host.flag {
        let n = f.open_answers;
        let _ = write!(
            s,
            "<extraports state=\"open\" count=\"{n}\">\n\
             <extrareasons reason=\"syn-ack\" count=\"{n}\"/>\n\
             </extraports>\n"
        );
    }
    if host.hidden_closed > 0 {
        let n = host.hidden_closed;
        let _ = write!(
            s,
            "<extraports state=\"closed\" count=\"{n}\">\n\
             <extrareasons reason=\"reset\" count=\"{n}\"/>\n\
             </extraports>\n"
        );
    }
    for e in &host.shown {
        let _ = write!(
            s,
            "<port protocol=\"{}\" portid=\"{}\"><state state=\"{}\" reason=\"{}\" \
             reason_ttl=\"{}\"/>",
            proto_str(e.proto),
            e.port,
            e.state.as_str(),
            nmap_reason(v6, e.reason, e.icmp),
            e.ttl
        );
        if let Some(name) = tcp_service(e.port) {
            let _ = write!(
                s,
                "<service name=\"{}\" method=\"table\" conf=\"3\"/>",
                escape(name)
            );
        }
        s.push_str("</port>\n");
    }
    s.push_str("</ports>\n");
    if let Some(f) = &host.flag {
        let _ = writeln!(
            s,
            "<hostscript><script id=\"portscope-{}\" output=\"{}\"/></hostscript>",
            f.flag.as_str(),
            escape(&f.describe())
        );
    }
    if let Some(t) = end.times {
        let _ = writeln!(
            s,
            "<times srtt=\"{}\" rttvar=\"{}\" to=\"{}\"/>",
            t.srtt_us, t.rttvar_us, t.timeout_us
        );
    }
    s.push_str("</host>\n");
}

/// Text safe inside an XML comment: no control characters, and `--` written `-&#45;` as
/// nmap writes it.
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .replace("--", "-&#45;")
}

/// Escapes text for a double-quoted XML attribute value.
///
/// Markup characters become entities; tab, newline and carriage return become character
/// references so parsers keep them; other characters XML 1.0 forbids become U+FFFD.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{results, run};
    use super::super::Format;
    use super::*;
    use portscope_core::results::{PortResult, PortState, Proto, Reason};

    const HEADER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE nmaprun>
<!-- Portscope 0.1.0 scan initiated Sun Nov 22 12:21:37 2026 as: portscope -p 22,80,81,443,9000 -&#45;note "a<b&c" 198.18.0.2-198.18.0.3 2001:db8::1 -->
<nmaprun scanner="nmap" args="portscope -p 22,80,81,443,9000 --note &quot;a&lt;b&amp;c&quot; 198.18.0.2-198.18.0.3 2001:db8::1" start="1795350097" startstr="Sun Nov 22 12:21:37 2026" version="0.1.0" xmloutputversion="1.05">
<scaninfo type="syn" protocol="tcp" numservices="5" services="22,80,81,443,9000"/>
<verbose level="0"/>
<debugging level="0"/>
"#;

    const RUNSTATS: &str = r#"<runstats><finished time="1795350098" timestr="Sun Nov 22 12:21:38 2026" elapsed="0.52" summary="Portscope done at Sun Nov 22 12:21:38 2026; 3 IP addresses (2 hosts up) scanned in 0.52 seconds" exit="success"/><hosts up="2" down="1" total="3"/>
</runstats>
</nmaprun>
"#;

    /// The port lines of the two hosts of `testdata::results` that answer, by port.
    const V4_PORTS: [&str; 5] = [
        r#"<port protocol="tcp" portid="22"><state state="open" reason="syn-ack" reason_ttl="64"/><service name="ssh" method="table" conf="3"/></port>"#,
        r#"<port protocol="tcp" portid="80"><state state="closed" reason="reset" reason_ttl="64"/><service name="http" method="table" conf="3"/></port>"#,
        r#"<port protocol="tcp" portid="81"><state state="closed" reason="reset" reason_ttl="64"/><service name="hosts2-ns" method="table" conf="3"/></port>"#,
        r#"<port protocol="tcp" portid="443"><state state="filtered" reason="admin-prohibited" reason_ttl="63"/><service name="https" method="table" conf="3"/></port>"#,
        r#"<port protocol="tcp" portid="9000"><state state="filtered" reason="no-response" reason_ttl="0"/><service name="cslistener" method="table" conf="3"/></port>"#,
    ];
    const V6_PORTS: [&str; 5] = [
        r#"<port protocol="tcp" portid="22"><state state="closed" reason="reset" reason_ttl="58"/><service name="ssh" method="table" conf="3"/></port>"#,
        r#"<port protocol="tcp" portid="80"><state state="filtered" reason="admin-prohibited" reason_ttl="60"/><service name="http" method="table" conf="3"/></port>"#,
        r#"<port protocol="tcp" portid="81"><state state="closed" reason="reset" reason_ttl="58"/><service name="hosts2-ns" method="table" conf="3"/></port>"#,
        r#"<port protocol="tcp" portid="443"><state state="open" reason="syn-ack" reason_ttl="57"/><service name="https" method="table" conf="3"/></port>"#,
        r#"<port protocol="tcp" portid="9000"><state state="filtered" reason="no-response" reason_ttl="0"/><service name="cslistener" method="table" conf="3"/></port>"#,
    ];

    /// The `<host>` block of one of those hosts: the closed ports listed when `shown`, else
    /// folded into `<extraports>` (two each).
    fn host(ttl: u8, addr: &str, family: &str, ports: &[&str], shown: bool) -> String {
        let mut s = format!(
            r#"<host starttime="1795350097" endtime="1795350098"><status state="up" reason="syn-ack" reason_ttl="{ttl}"/>
<address addr="{addr}" addrtype="{family}"/>
<ports>"#
        );
        if !shown {
            s += "<extraports state=\"closed\" count=\"2\">\n<extrareasons reason=\"reset\" count=\"2\"/>\n</extraports>\n";
        }
        for p in ports {
            if shown || !p.contains(r#"<state state="closed""#) {
                s += p;
                s += "\n";
            }
        }
        s + "</ports>\n<times srtt=\"310\" rttvar=\"95\" to=\"10000\"/>\n</host>\n"
    }

    /// Both hosts' blocks.
    fn hosts(shown: bool) -> String {
        host(64, "198.18.0.2", "ipv4", &V4_PORTS, shown)
            + &host(57, "2001:db8::1", "ipv6", &V6_PORTS, shown)
    }

    #[test]
    fn closed_hidden() {
        let text = run(Format::Xml, false, &results(), false);
        assert_eq!(text, format!("{HEADER}{}{RUNSTATS}", hosts(false)));
        check_well_formed(&text);
    }

    #[test]
    fn closed_shown() {
        let text = run(Format::Xml, true, &results(), false);
        assert_eq!(text, format!("{HEADER}{}{RUNSTATS}", hosts(true)));
        check_well_formed(&text);
    }

    #[test]
    fn interrupted_with_no_results_is_well_formed() {
        let text = run(Format::Xml, false, &[], true);
        let want = format!(
            "{HEADER}{}",
            r#"<runstats><finished time="1795350098" timestr="Sun Nov 22 12:21:38 2026" elapsed="0.52" summary="Portscope done at Sun Nov 22 12:21:38 2026; 3 IP addresses (0 hosts up) scanned in 0.52 seconds" exit="error" errormsg="interrupted"/><hosts up="0" down="3" total="3"/>
</runstats>
</nmaprun>
"#
        );
        assert_eq!(text, want);
        check_well_formed(&text);
        check_well_formed(&run(Format::Xml, false, &results()[..5], true));
    }

    #[test]
    fn host_up_on_closed_or_icmp_only_and_unknown_port_has_no_service() {
        let r = |ip: &str, port, state, reason, ttl, icmp: Option<(u8, u8)>| PortResult {
            ip: ip.parse().unwrap(),
            port,
            proto: Proto::Tcp,
            state,
            reason,
            ttl: Some(ttl),
            icmp_type: icmp.map(|i| i.0),
            icmp_code: icmp.map(|i| i.1),
        };
        let rs = [
            r(
                "10.0.0.9",
                31337,
                PortState::Closed,
                Reason::Reset,
                64,
                None,
            ),
            r(
                "10.0.0.10",
                31337,
                PortState::Filtered,
                Reason::IcmpUnreachable,
                250,
                Some((3, 1)),
            ),
        ];
        let text = run(Format::Xml, false, &rs, false);
        check_well_formed(&text);
        // Address order is numeric, not textual: .9 before .10.
        let hosts = r#"<host starttime="1795350097" endtime="1795350098"><status state="up" reason="reset" reason_ttl="64"/>
<address addr="10.0.0.9" addrtype="ipv4"/>
<ports><extraports state="closed" count="1">
<extrareasons reason="reset" count="1"/>
</extraports>
</ports>
<times srtt="310" rttvar="95" to="10000"/>
</host>
<host starttime="1795350097" endtime="1795350098"><status state="up" reason="host-unreach" reason_ttl="250"/>
<address addr="10.0.0.10" addrtype="ipv4"/>
<ports><port protocol="tcp" portid="31337"><state state="filtered" reason="host-unreach" reason_ttl="250"/></port>
</ports>
<times srtt="310" rttvar="95" to="10000"/>
</host>
"#;
        assert!(text.contains(hosts), "{text}");
        assert!(
            text.contains(r#"<hosts up="2" down="1" total="3"/>"#),
            "{text}"
        );
    }

    /// nmap's DTD, from Debian's nmap-common (installed by `.ci/setup`).
    const NMAP_DTD: &str = "/usr/share/nmap/nmap.dtd";

    /// Runs `xmllint --dtdvalid` on `doc`; panics with its complaint if invalid.
    fn assert_valid_against_nmap_dtd(doc: &str) {
        assert!(
            std::path::Path::new(NMAP_DTD).exists(),
            "{NMAP_DTD} is missing: apt-get install nmap libxml2-utils (.ci/setup does)"
        );
        let mut child = std::process::Command::new("xmllint")
            .args(["--noout", "--dtdvalid", NMAP_DTD, "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("xmllint runs (apt-get install libxml2-utils)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(doc.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "xmllint: {}\n{doc}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn every_shape_validates_against_nmaps_dtd() {
        assert_valid_against_nmap_dtd(&run(Format::Xml, false, &results(), false));
        assert_valid_against_nmap_dtd(&run(Format::Xml, true, &results(), false));
        assert_valid_against_nmap_dtd(&run(Format::Xml, false, &[], true));
        assert_valid_against_nmap_dtd(&super::super::testdata::run_flagged(Format::Xml));
    }

    #[test]
    fn escape_handles_markup_and_control_characters() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\ty\nz\r\u{1}"), "x&#9;y&#10;z&#13;\u{fffd}");
        assert_eq!(escape("плюс ünïcode"), "плюс ünïcode");
    }

    /// A small well-formedness check, enough for the output above: one root element,
    /// tags balanced and properly nested, attribute values quoted and free of `<` and of
    /// `&` outside a known entity, no text outside whitespace.
    fn check_well_formed(doc: &str) {
        let mut rest = doc;
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        while let Some(lt) = rest.find('<') {
            assert!(
                rest[..lt].trim().is_empty(),
                "text outside tags: {:?}",
                &rest[..lt]
            );
            let gt = lt + rest[lt..].find('>').expect("unclosed tag");
            let tag = &rest[lt + 1..gt];
            rest = &rest[gt + 1..];
            if tag.starts_with('?') {
                assert!(
                    tag.ends_with('?') && stack.is_empty() && roots == 0,
                    "{tag}"
                );
                continue;
            }
            if tag.starts_with('!') {
                assert!(stack.is_empty() && roots == 0, "{tag}");
                continue;
            }
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
                continue;
            }
            let empty = tag.ends_with('/');
            let body = tag.strip_suffix('/').unwrap_or(tag);
            let (name, mut attrs) = body.split_once(' ').unwrap_or((body, ""));
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            );
            let mut seen = Vec::new();
            loop {
                attrs = attrs.trim_start();
                if attrs.is_empty() {
                    break;
                }
                let (key, after) = attrs.split_once("=\"").expect("attribute without =\"");
                assert!(
                    key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{key}"
                );
                assert!(!seen.contains(&key), "duplicate attribute {key}");
                seen.push(key);
                let close = after.find('"').expect("unterminated attribute");
                let value = &after[..close];
                assert!(!value.contains('<'), "{value}");
                for (i, _) in value.match_indices('&') {
                    let ent = &value[i..value[i..].find(';').map_or(value.len(), |e| i + e + 1)];
                    assert!(
                        ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#9;", "&#10;", "&#13;"]
                            .contains(&ent),
                        "bad entity {ent}"
                    );
                }
                attrs = &after[close + 1..];
            }
            if stack.is_empty() {
                roots += 1;
            }
            if !empty {
                stack.push(name);
            }
        }
        assert!(rest.trim().is_empty(), "trailing text {rest:?}");
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1);
    }
}
