//! The fixed scan every format's tests print, and an in-memory sink to print it into.

use super::*;
use portscope_core::results::{PortResult, PortState, Reason};

fn r(
    ip: &str,
    port: u16,
    state: PortState,
    reason: Reason,
    ttl: Option<u8>,
    icmp: Option<(u8, u8)>,
) -> PortResult {
    PortResult {
        icmp_type: icmp.map(|i| i.0),
        icmp_code: icmp.map(|i| i.1),
        ..PortResult::tcp(ip.parse().unwrap(), port, state, reason, ttl)
    }
}

/// 3 addresses x 5 ports, in scrambled order: 198.18.0.2 (open, 2 closed, ICMP 3/13,
/// no-response), 198.18.0.3 (down: all no-response) and 2001:db8::1 (open, 2 closed,
/// ICMPv6 1/1, no-response).
pub(crate) fn results() -> Vec<PortResult> {
    use PortState::*;
    use Reason::*;
    vec![
        r("2001:db8::1", 443, Open, SynAck, Some(57), None),
        r("198.18.0.2", 80, Closed, Reset, Some(64), None),
        r("198.18.0.3", 22, Filtered, NoResponse, None, None),
        r("198.18.0.2", 9000, Filtered, NoResponse, None, None),
        r("2001:db8::1", 22, Closed, Reset, Some(58), None),
        r(
            "198.18.0.2",
            443,
            Filtered,
            IcmpUnreachable,
            Some(63),
            Some((3, 13)),
        ),
        r("198.18.0.3", 9000, Filtered, NoResponse, None, None),
        r(
            "2001:db8::1",
            80,
            Filtered,
            IcmpUnreachable,
            Some(60),
            Some((1, 1)),
        ),
        r("198.18.0.2", 22, Open, SynAck, Some(64), None),
        r("198.18.0.3", 80, Filtered, NoResponse, None, None),
        r("2001:db8::1", 9000, Filtered, NoResponse, None, None),
        r("198.18.0.2", 81, Closed, Reset, Some(64), None),
        r("198.18.0.3", 443, Filtered, NoResponse, None, None),
        r("2001:db8::1", 81, Closed, Reset, Some(58), None),
        r("198.18.0.3", 81, Filtered, NoResponse, None, None),
    ]
}

pub(crate) fn meta() -> ScanMeta {
    ScanMeta {
        args: r#"portscope -p 22,80,81,443,9000 --note "a<b&c" 198.18.0.2-198.18.0.3 2001:db8::1"#
            .to_owned(),
        start_unix: 1_795_350_097,
        ports: 5,
        port_spec: "22,80,81,443,9000".to_owned(),
        targets: 3,
        version: "0.1.0",
    }
}

pub(crate) fn end(interrupted: bool) -> ScanEnd {
    ScanEnd {
        start_unix: 1_795_350_097,
        end_unix: 1_795_350_098,
        elapsed_secs: 0.523,
        interrupted,
        times: Some(Times {
            srtt_us: 310,
            rttvar_us: 95,
            timeout_us: 10_000,
        }),
    }
}

/// 198.18.0.9 answered SYN-ACK on all 5 ports (its results are not in [`results`]).
pub(crate) fn proxy_flag() -> HostFlag {
    HostFlag {
        ip: "198.18.0.9".parse().unwrap(),
        flag: FlagKind::SynProxy,
        open_answers: 5,
        ports: 5,
    }
}

/// A cloneable in-memory sink, so a test can read what a boxed report wrote.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Sink {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An in-memory sink that keeps each `write` call apart, to see how output is chunked.
#[derive(Debug, Clone, Default)]
pub(crate) struct Calls(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Calls {
    pub(crate) fn writes(&self) -> Vec<Vec<u8>> {
        self.0.lock().unwrap().clone()
    }
}

impl Write for Calls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs a whole scan through `new_report` and returns the text written.
pub(crate) fn run(
    format: Format,
    show_closed: bool,
    results: &[PortResult],
    interrupted: bool,
) -> String {
    let sink = Sink::default();
    let mut report = new_report(format, ReportFilter { show_closed }, Box::new(sink.clone()));
    report.begin(&meta()).unwrap();
    for r in results {
        report.result(r).unwrap();
    }
    report.end(&end(interrupted)).unwrap();
    sink.text()
}

/// [`run`] with closed ports hidden, plus [`proxy_flag`] for 198.18.0.9 after the results.
pub(crate) fn run_flagged(format: Format) -> String {
    let sink = Sink::default();
    let mut report = new_report(format, ReportFilter::default(), Box::new(sink.clone()));
    report.begin(&meta()).unwrap();
    for r in &results() {
        report.result(r).unwrap();
    }
    report.host_flag(&proxy_flag()).unwrap();
    report.end(&end(false)).unwrap();
    sink.text()
}
