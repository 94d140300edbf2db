//! Hosts whose answers cannot be taken port by port, between the engine and the outputs.
//!
//! **SYN proxies and tarpits** answer SYN-ACK on nearly every port. Reporting tens of
//! thousands of "open" ports would bury the real results, so [`ProxyGuard`] holds a host's
//! open answers back until it can tell: the engine probes pairs in a random order, so after
//! a share `f` of the first round about `f x ports` of the host's answers are due. Fewer
//! than half of them open: a normal host, its held answers are released and later ones pass.
//! At least 80% open: a proxy, its open answers are only counted and it ends as one
//! [`HostFlag`] in every output. At the end a host still undecided is a proxy when at least
//! 90% of its due answers were open. Hosts probed on fewer than [`MIN_PORTS`] ports are
//! never judged. Closed and filtered answers always pass at once.
//!
//! **Rate-limited answering**: the engine counts RST and ICMP answers per round. When
//! many come only on retries, the target limits its answers; the rate it kept up during the
//! first round is reported in the summary.

use crate::output::{FlagKind, HostFlag, Tee};
use portscope_core::results::{PortResult, PortState};
use portscope_engine::AnswerSpan;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Hosts probed on fewer ports are never flagged.
pub(crate) const MIN_PORTS: u64 = 200;

/// What the guard knows about one host.
#[derive(Debug, Default)]
struct Host {
    opens: u64,
    /// Open answers not yet passed on (undecided hosts only).
    held: Vec<PortResult>,
    decided: Option<bool>, // Some(true) = proxy
}

/// Holds back and counts open answers of hosts that may be SYN proxies.
#[derive(Debug)]
pub(crate) struct ProxyGuard {
    ports: u64,
    hosts: HashMap<IpAddr, Host>,
}

impl ProxyGuard {
    /// A guard for a scan probing `ports` ports on each host.
    pub(crate) fn new(ports: u64) -> Self {
        ProxyGuard {
            ports,
            hosts: HashMap::new(),
        }
    }

    /// Passes `r` on to `out` now, later or never; `share` is the part of the first round
    /// sent so far (0.0 to 1.0).
    pub(crate) fn result(&mut self, r: PortResult, share: f64, out: &mut Tee) {
        if self.ports < MIN_PORTS || r.state != PortState::Open {
            out.result(&r);
            return;
        }
        let due = share * self.ports as f64;
        let h = self.hosts.entry(r.ip).or_default();
        h.opens += 1;
        match h.decided {
            Some(true) => {}
            Some(false) => out.result(&r),
            None => {
                h.held.push(r);
                if due >= MIN_PORTS as f64 {
                    if (h.opens as f64) < 0.5 * due {
                        h.decided = Some(false);
                        for r in h.held.drain(..) {
                            out.result(&r);
                        }
                    } else if h.opens as f64 >= 0.8 * due {
                        h.decided = Some(true);
                        h.held = Vec::new();
                    }
                }
            }
        }
    }

    /// Decides the undecided hosts, writes the flags and returns them; `share` as above
    /// (1.0 for a complete scan).
    pub(crate) fn finish(&mut self, share: f64, out: &mut Tee) -> Vec<HostFlag> {
        let due = share * self.ports as f64;
        let mut flags = Vec::new();
        let mut hosts: Vec<_> = self.hosts.iter_mut().collect();
        hosts.sort_by_key(|(ip, _)| **ip);
        for (ip, h) in hosts {
            if h.decided.is_none() {
                let proxy = due >= MIN_PORTS as f64 && h.opens as f64 >= 0.9 * due;
                h.decided = Some(proxy);
                if !proxy {
                    for r in h.held.drain(..) {
                        out.result(&r);
                    }
                }
            }
            if h.decided == Some(true) {
                let f = HostFlag {
                    ip: *ip,
                    flag: FlagKind::SynProxy,
                    open_answers: h.opens,
                    ports: self.ports,
                };
                out.host_flag(&f);
                flags.push(f);
            }
        }
        flags
    }
}

/// Summary lines for each kind of answer (RST, ICMP) that looks rate-limited: at least 100
/// of them and a fifth answered only a retry. Random loss also leaves answers for the
/// retries, about the loss per try (~10% at 5% loss each way, which a 5% bar called a
/// limit); a limiter below the probing rate leaves far more. `by_round` is the engine's count of answers per
/// round as `[open, closed, filtered]`, `spans` when the first and last of them arrived. A
/// limiter drops what exceeds its rate, so the first round's answers over the time they took
/// to arrive are the rate it lets out (timed by the receive thread, not by this loop).
pub(crate) fn rate_limit_lines(by_round: &[[u64; 3]], spans: &[[AnswerSpan; 3]]) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, i) in [("RST", 1), ("ICMP unreachable", 2)] {
        let a = by_round.first().map_or(0, |r| r[i]);
        let b: u64 = by_round.iter().skip(1).map(|r| r[i]).sum();
        let span = spans
            .first()
            .map_or(Duration::ZERO, |r| r[i].length().as_duration());
        if b >= 100 && b * 5 >= a + b {
            lines.push(format!(
                "{name} answers are rate-limited by the target: {:.0}/s measured in the first round, {b} of {} answered only a retry",
                a as f64 / span.as_secs_f64().max(1e-3),
                a + b
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{new_report, Format, ReportFilter};
    use portscope_core::results::Reason;
    use portscope_core::Nanos;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn r(ip: &str, port: u16, state: PortState) -> PortResult {
        let reason = if state == PortState::Open {
            Reason::SynAck
        } else {
            Reason::Reset
        };
        PortResult::tcp(ip.parse().unwrap(), port, state, reason, Some(64))
    }

    /// 1000 ports on two hosts, in interleaved order: .2 answers SYN-ACK everywhere, .3
    /// has ports 1-5 open and the rest closed.
    fn scan(stop_at: usize) -> (String, Vec<HostFlag>) {
        let buf = Buf::default();
        let mut out = Tee::new();
        let f = ReportFilter::default();
        out.add(
            "t".into(),
            new_report(Format::Ndjson, f, Box::new(buf.clone())),
        );
        let mut g = ProxyGuard::new(1000);
        let mut n = 0;
        for port in 1..=1000u16 {
            for ip in ["198.18.0.2", "198.18.0.3"] {
                n += 1;
                if n > stop_at {
                    break;
                }
                let state = if ip.ends_with(".2") || port <= 5 {
                    PortState::Open
                } else {
                    PortState::Closed
                };
                g.result(r(ip, port, state), n as f64 / 2000.0, &mut out);
            }
        }
        let flags = g.finish((stop_at.min(2000) as f64) / 2000.0, &mut out);
        out.end(&crate::output::ScanEnd {
            start_unix: 0,
            end_unix: 0,
            elapsed_secs: 0.0,
            interrupted: false,
            times: None,
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        (text, flags)
    }

    #[test]
    fn a_host_open_everywhere_is_one_flag() {
        let (text, flags) = scan(usize::MAX);
        assert_eq!(flags.len(), 1);
        assert_eq!(flags[0].ip.to_string(), "198.18.0.2");
        assert_eq!(flags[0].open_answers, 1000);
        assert!(!text.contains(r#""ip":"198.18.0.2","port""#), "{text}");
        let opens = text.matches(r#""state":"open""#).count();
        assert_eq!(opens, 5, "the normal host's open ports all pass: {text}");
        assert!(text.contains(
            r#"{"ip":"198.18.0.2","flag":"syn-proxy","open_answers":1000,"ports":1000}"#
        ));
    }

    #[test]
    fn an_early_stop_still_judges_on_the_answers_due() {
        // 30% of the scan: 300 answers due per host.
        let (text, flags) = scan(600);
        assert_eq!(flags.len(), 1, "{text}");
        assert_eq!(text.matches(r#""state":"open""#).count(), 5);
        // 5% of the scan: too few answers to judge, everything passes.
        let (text, flags) = scan(100);
        assert!(flags.is_empty());
        assert_eq!(text.matches(r#""state":"open""#).count(), 55);
    }

    #[test]
    fn rate_limited_resets_are_reported_with_their_rate() {
        let mut spans = vec![[AnswerSpan::default(); 3]; 16];
        // The first round's RSTs arrived over 0.1 s, its ICMP errors over 0.2 s.
        spans[0][1] = AnswerSpan {
            first: Some(Nanos::from_millis(5)),
            last: Nanos::from_millis(105),
        };
        spans[0][2] = AnswerSpan {
            first: Some(Nanos::from_millis(5)),
            last: Nanos::from_millis(205),
        };
        let a = |by_round: &[[u64; 3]]| rate_limit_lines(by_round, &spans);
        let mut by_round = vec![[0u64; 3]; 16];
        by_round[0] = [5, 900, 0];
        assert!(a(&by_round).is_empty(), "no late answers");
        by_round[1] = [0, 95, 300];
        let lines = a(&by_round);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].starts_with("ICMP unreachable answers are rate-limited"),
            "{lines:?}"
        );
        // 10% of the RSTs late: what 5% loss each way does, not a limit.
        by_round[2] = [0, 5, 0];
        assert_eq!(a(&by_round).len(), 1, "{:?}", a(&by_round));
        by_round[2] = [0, 130, 0];
        let lines = a(&by_round);
        assert_eq!(lines.len(), 2, "{lines:?}");
        // 900 answers over exactly 0.1 s of the receive clock.
        let rate: f64 = lines[0]["RST answers are rate-limited by the target: ".len()..]
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(rate, 9_000.0, "{lines:?}");
        assert!(
            lines[0].contains("225 of 1125 answered only a retry"),
            "{lines:?}"
        );
    }
}
