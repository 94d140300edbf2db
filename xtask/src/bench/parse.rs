//! What each scanner under test wrote, read back: its results into an `Answer`, and its own
//! counts (probes, rounds, scan time) where it prints them. Reads text; runs nothing.

use std::net::IpAddr;

use anyhow::Context;
use serde::Deserialize;

use super::scenario::{Answer, Scenario, State};
use super::tools::Tool;

/// What a finished run said, read from its files.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub answer: Answer,
    /// Probes sent by the tool's own count, if it prints one.
    pub probes: Option<u64>,
    /// Something worth a footnote.
    pub note: Option<String>,
    /// The tool's own scan time, where it prints one (Portscope's `done in`: from the
    /// scan's submission to its last result, the engine's sockets already open).
    pub scan_s: Option<f64>,
}

/// The text of a run's three files.
#[derive(Debug, Clone, Default)]
pub struct Texts {
    pub stdout: String,
    pub stderr: String,
    pub result: String,
}

/// Parse a run of `tool` on `scenario`.
pub fn parse(tool: Tool, scenario: &Scenario, texts: &Texts) -> anyhow::Result<Parsed> {
    let mut answer = Answer::new(scenario);
    let mut note = None;
    let mut scan_s = None;
    let probes = match tool {
        Tool::Portscope => {
            parse_portscope(&texts.result, &mut answer)?;
            note = portscope_rounds(&texts.stderr);
            scan_s = portscope_scan_time(&texts.stderr);
            portscope_probes(&texts.stderr)
        }
        Tool::Masscan => {
            parse_masscan(&texts.result, &mut answer);
            if let Some(over) = masscan_overrun(&texts.stderr) {
                note = Some(format!(
                    "exited {over} s after its --wait ended (receive thread stuck; a known masscan exit hang)"
                ));
            }
            None
        }
        Tool::Zmap => {
            parse_zmap(&texts.result, *scenario.ports.start(), &mut answer);
            zmap_probes(&texts.stderr)
        }
        Tool::Nmap | Tool::NmapMinRate => {
            parse_nmap_xml(&texts.result, &mut answer);
            nmap_probes(&texts.stdout)
        }
    };
    Ok(Parsed {
        answer,
        probes,
        note,
        scan_s,
    })
}

/// One line of Portscope's NDJSON.
#[derive(Deserialize)]
struct PortLine<'a> {
    ip: IpAddr,
    port: u16,
    #[serde(borrow)]
    state: &'a str,
}

/// Portscope `--format ndjson`: one `{"ip":..,"port":..,"state":..}` per line.
fn parse_portscope(text: &str, answer: &mut Answer) -> anyhow::Result<()> {
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let l: PortLine<'_> = serde_json::from_str(line)
            .with_context(|| format!("portscope output line {}", n + 1))?;
        answer.set(l.ip, l.port, State::from_word(l.state));
    }
    Ok(())
}

/// `...; 65551 probes sent (185940/s) ...` on Portscope's stderr.
fn portscope_probes(stderr: &str) -> Option<u64> {
    let line = stderr.lines().rev().find(|l| l.contains(" probes sent"))?;
    let before = &line[..line.find(" probes sent")?];
    before.rsplit(' ').next()?.parse().ok()
}

/// `portscope: done in 0.151s: ...` on Portscope's stderr -> 0.151.
fn portscope_scan_time(stderr: &str) -> Option<f64> {
    let line = stderr.lines().rev().find(|l| l.contains("done in "))?;
    let rest = line.split("done in ").nth(1)?;
    rest[..rest.find("s:")?].parse().ok()
}

/// `... in 5 round(s); estimated loss per try 2.00%; ...` -> `5 rounds, est. loss 2.00%/try`.
fn portscope_rounds(stderr: &str) -> Option<String> {
    let line = stderr.lines().rev().find(|l| l.contains(" round(s)"))?;
    let rounds = line[..line.find(" round(s)")?].rsplit(' ').next()?;
    let loss = line
        .split("estimated loss per try ")
        .nth(1)
        .and_then(|r| r.split(';').next());
    Some(match loss {
        Some(l) => format!("{rounds} rounds, est. loss {l}/try"),
        None => format!("{rounds} rounds"),
    })
}

/// masscan `-oL`: `open tcp PORT ADDR TIMESTAMP`.
fn parse_masscan(text: &str, answer: &mut Answer) {
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["open", "tcp", port, addr, ..] = f[..] {
            if let (Ok(port), Ok(addr)) = (port.parse(), addr.parse()) {
                answer.set(addr, port, State::Open);
            }
        }
    }
}

/// How many seconds past its `--wait` masscan was still running: the most negative
/// `waiting -N-secs` in its status lines.
fn masscan_overrun(stderr: &str) -> Option<u64> {
    stderr
        .split("waiting ")
        .skip(1)
        .filter_map(|rest| rest.split("-secs").next()?.parse::<i64>().ok())
        .min()
        .filter(|&w| w < -1)
        .map(i64::unsigned_abs)
}

/// zmap `-O csv`: a header line, then one responder per line, as `saddr` (zmap 2.1, one
/// port: `port`) or `saddr,sport` (zmap 4).
fn parse_zmap(text: &str, port: u16, answer: &mut Answer) {
    for line in text.lines().map(str::trim) {
        let (addr, sport) = line.split_once(',').unwrap_or((line, ""));
        let port = if sport.is_empty() {
            Some(port)
        } else {
            sport.parse().ok()
        };
        if let (Ok(addr), Some(port)) = (addr.parse::<IpAddr>(), port) {
            answer.set(addr, port, State::Open);
        }
    }
}

/// The last status line's `send: N done` on zmap's stderr.
fn zmap_probes(stderr: &str) -> Option<u64> {
    let line = stderr.lines().rev().find(|l| l.contains(" done ("))?;
    let rest = &line[line.find("send: ")? + "send: ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// `Raw packets sent: 65544 (2.884MB) | ...` on nmap's stdout with `-v`.
fn nmap_probes(stdout: &str) -> Option<u64> {
    let rest = &stdout[stdout.rfind("Raw packets sent: ")? + "Raw packets sent: ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The value of attribute `name` in the inside of a tag (`port protocol="tcp" portid="22"`).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}

/// `1-21,24,26-79` -> ports.
fn port_list(list: &str) -> impl Iterator<Item = u16> + '_ {
    list.split(',').flat_map(|part| {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let lo: u16 = lo.trim().parse().unwrap_or(1);
        let hi: u16 = hi.trim().parse().unwrap_or(0);
        lo..=hi
    })
}

/// nmap `-oX`. Per `<host>`: the IPv4/IPv6 `<address>`, explicit `<port>` states, and the
/// collapsed `<extraports state=..>` whose `<extrareasons ports=..>` list the ports (nmap
/// 7.80 and later); an `<extraports>` without port lists is the state of every unlisted
/// port. A hand-rolled tag walk: nmap's XML is regular and this keeps xtask free of an XML
/// dependency.
fn parse_nmap_xml(text: &str, answer: &mut Answer) {
    #[derive(Default)]
    struct Host {
        addr: Option<IpAddr>,
        ports: Vec<(u16, State)>,
        /// States of `<extraports>` that came without port lists.
        unlisted: Vec<State>,
    }
    let mut host: Option<Host> = None;
    let mut port: Option<u16> = None;
    let mut extra: Option<(State, bool)> = None;
    for piece in text.split('<').skip(1) {
        let tag = piece.split('>').next().unwrap_or("");
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap_or("");
        let closing = tag.starts_with('/');
        let Some(h) = host.as_mut() else {
            if name == "host" && !closing {
                host = Some(Host::default());
            }
            continue;
        };
        match (closing, name, tag.trim_start_matches('/')) {
            (false, "address", _) => {
                if matches!(attr(tag, "addrtype"), Some("ipv4" | "ipv6")) {
                    h.addr = attr(tag, "addr").and_then(|a| a.parse().ok());
                }
            }
            (false, "port", _) => port = attr(tag, "portid").and_then(|p| p.parse().ok()),
            (false, "state", _) => {
                if let (Some(p), Some(s)) = (port.take(), attr(tag, "state")) {
                    h.ports.push((p, State::from_word(s)));
                }
            }
            (false, "extraports", _) => {
                extra = attr(tag, "state").map(|s| (State::from_word(s), false));
            }
            (false, "extrareasons", _) => {
                if let (Some((state, listed)), Some(list)) = (extra.as_mut(), attr(tag, "ports")) {
                    *listed = true;
                    h.ports.extend(port_list(list).map(|p| (p, *state)));
                }
            }
            (true, _, "extraports") => {
                if let Some((state, false)) = extra.take() {
                    h.unlisted.push(state);
                }
            }
            (true, _, "host") => {
                let h = host.take().expect("inside a host");
                let Some(addr) = h.addr else { continue };
                if let [state] = h.unlisted[..] {
                    answer.set_host(addr, state);
                }
                for (p, s) in h.ports {
                    answer.set(addr, p, s);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(id: u8) -> Scenario {
        Scenario::all(false).remove(usize::from(id - 1))
    }

    /// What `tool` made of `result` and `stderr` in scenario `s`.
    fn parsed(tool: Tool, s: &Scenario, result: &str, stderr: &str) -> Parsed {
        let texts = Texts {
            result: result.into(),
            stderr: stderr.into(),
            ..Texts::default()
        };
        parse(tool, s, &texts).unwrap()
    }

    /// Asserts the state `a` holds for each (address, port).
    fn assert_states(a: &Answer, want: &[(&str, u16, State)]) {
        for &(ip, port, state) in want {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(a.get(addr, port), state, "{ip} port {port}");
        }
    }

    #[test]
    fn portscope_rounds_and_loss_are_read_from_the_summary() {
        let line = "portscope: done in 1.2s: 13 open, 65509 closed, 13 filtered of 65535 ports; \
                    66892 probes sent (55388/s) in 4 round(s); estimated loss per try 2.00%; rtt p50 1ms p99 7ms";
        assert_eq!(
            portscope_rounds(line).as_deref(),
            Some("4 rounds, est. loss 2.00%/try")
        );
        assert_eq!(portscope_probes(line), Some(66892));
        assert_eq!(portscope_scan_time(line), Some(1.2));
        assert_eq!(portscope_rounds("nothing"), None);
        assert_eq!(portscope_scan_time("nothing"), None);
    }

    #[test]
    fn portscope_output() {
        let s = scenario(1);
        let text = "{\"ip\":\"198.18.0.2\",\"port\":22,\"proto\":\"tcp\",\"state\":\"open\",\"reason\":\"syn-ack\",\"ttl\":64}\n\
                    {\"ip\":\"198.18.0.2\",\"port\":135,\"proto\":\"tcp\",\"state\":\"filtered\",\"reason\":\"no-response\"}\n\
                    {\"ip\":\"198.18.0.2\",\"port\":1,\"proto\":\"tcp\",\"state\":\"closed\",\"reason\":\"reset\",\"ttl\":64}\n";
        let stderr =
            "portscope: done in 0.341s: 13 open, 65509 closed, 13 filtered of 65535 ports; \
                      65551 probes sent (192170/s) in 3 round(s); rtt p50 477µs p99 2.079ms\n";
        let p = parsed(Tool::Portscope, &s, text, stderr);
        let a = "198.18.0.2";
        assert_states(
            &p.answer,
            &[
                (a, 22, State::Open),
                (a, 135, State::Filtered),
                (a, 1, State::Closed),
                (a, 2, State::Missing),
            ],
        );
        assert_eq!(p.probes, Some(65551));
        assert!(parse_portscope("{not json", &mut Answer::new(&s)).is_err());
    }

    #[test]
    fn masscan_output() {
        let s = scenario(2);
        let text = "#masscan\nopen tcp 20003 198.19.0.3 1795344365\nopen tcp 80 198.19.0.16 1795344365\n# end\n";
        let stderr = "rate:  0.00-kpps, 100.00% done, waiting 0-secs, found=2       \r\
                      rate:  0.00-kpps, 100.00% done, waiting -41-secs, found=2       \r";
        let p = parsed(Tool::Masscan, &s, text, stderr);
        assert_states(
            &p.answer,
            &[
                ("198.19.0.3", 20003, State::Open),
                ("198.19.0.16", 80, State::Open),
            ],
        );
        assert_eq!(p.probes, None);
        assert!(p.note.unwrap().contains("41 s"));
        assert_eq!(masscan_overrun("waiting 0-secs waiting -1-secs"), None);
    }

    #[test]
    fn zmap_output() {
        let s = scenario(3);
        let stderr = " 0:00 0%; send: 1 5.71 Kp/s (137 p/s avg); recv: 0 0 p/s (0 p/s avg)\n \
                      0:01 72%; send: 65536 done (163 Kp/s avg); recv: 65533 65.5 Kp/s (65.1 Kp/s avg); drops: 0 p/s\n\
                      Nov 22 10:46:15.059 [INFO] zmap: completed\n";
        let p = parsed(
            Tool::Zmap,
            &s,
            "saddr\n198.19.162.139\n198.19.0.0\n",
            stderr,
        );
        assert_states(
            &p.answer,
            &[
                ("198.19.0.0", 80, State::Open),
                ("198.19.162.139", 80, State::Open),
                ("198.19.0.1", 80, State::Missing),
            ],
        );
        assert_eq!(p.probes, Some(65536));
        // zmap 4 `-f saddr,sport`: the port is on the line.
        let p = parsed(
            Tool::Zmap,
            &scenario(2),
            "saddr,sport\n198.19.0.3,20003\n198.19.0.16,80\n198.19.0.4,x\n",
            "",
        );
        assert_states(
            &p.answer,
            &[
                ("198.19.0.3", 20003, State::Open),
                ("198.19.0.16", 80, State::Open),
                ("198.19.0.3", 80, State::Missing),
                ("198.19.0.4", 1, State::Missing),
            ],
        );
    }

    /// Trimmed from a real `nmap -sS -Pn -n -T5 -p- -v -oX` of the lab (nmap 7.93).
    const NMAP_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<nmaprun scanner="nmap" args="nmap -sS -Pn -n -T5 -p- -v -oX n1.xml 198.18.0.2" version="7.93">
<hosthint><status state="up" reason="arp-response" reason_ttl="0"/>
<address addr="198.18.0.9" addrtype="ipv4"/>
</hosthint>
<host starttime="1795344380" endtime="1795344382"><status state="up" reason="arp-response" reason_ttl="0"/>
<address addr="198.18.0.2" addrtype="ipv4"/>
<address addr="26:8E:FA:04:61:F9" addrtype="mac"/>
<hostnames>
</hostnames>
<ports><extraports state="closed" count="65530">
<extrareasons reason="reset" count="65530" proto="tcp" ports="1-21,24-134,136-60000,60002-65534"/>
</extraports>
<port protocol="tcp" portid="22"><state state="open" reason="syn-ack" reason_ttl="64"/><service name="ssh" method="table" conf="3"/></port>
<port protocol="tcp" portid="23"><state state="filtered" reason="admin-prohibited" reason_ttl="64"/></port>
<port protocol="tcp" portid="135"><state state="filtered" reason="no-response" reason_ttl="0"/></port>
<port protocol="tcp" portid="65535"><state state="open" reason="syn-ack" reason_ttl="64"/></port>
</ports>
</host>
<host><status state="up" reason="user-set" reason_ttl="0"/>
<address addr="198.18.0.3" addrtype="ipv4"/>
<ports><extraports state="closed" count="65534">
</extraports>
<port protocol="tcp" portid="80"><state state="open|filtered" reason="no-response" reason_ttl="0"/></port>
</ports>
</host>
<runstats><finished time="1795344382" elapsed="1.75" exit="success"/></runstats>
</nmaprun>
"#;

    #[test]
    fn nmap_xml() {
        let s = Scenario {
            last: "198.18.0.3".parse().unwrap(),
            ..scenario(1)
        };
        let mut a = Answer::new(&s);
        parse_nmap_xml(NMAP_XML, &mut a);
        let (h, h3) = ("198.18.0.2", "198.18.0.3");
        assert_states(
            &a,
            &[
                (h, 22, State::Open),
                (h, 65535, State::Open),
                (h, 23, State::Filtered),
                (h, 135, State::Filtered),
                (h, 1, State::Closed),
                (h, 65534, State::Closed),
                (h, 60000, State::Closed),
                // In no list: nmap said nothing about it.
                (h, 60001, State::Missing),
                // The host hint is not a host.
                ("198.18.0.9", 22, State::Missing),
                // No port lists: the one extraports state covers every unlisted port.
                (h3, 1, State::Closed),
                (h3, 80, State::Other),
            ],
        );
        assert_eq!(
            nmap_probes(
                "Nmap done\n           Raw packets sent: 65544 (2.884MB) | Rcvd: 65528 (2.621MB)\n"
            ),
            Some(65544)
        );
        assert_eq!(port_list("1-3,7").collect::<Vec<_>>(), [1, 2, 3, 7]);
    }
}
