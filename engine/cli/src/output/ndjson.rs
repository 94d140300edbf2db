//! NDJSON output: one `PortResult` JSON object per printed port per line, nothing else.
//! The objects are serde's shape, written by [`object::push`] (the per-port hot path).
//!
//! Each line is written whole into the buffer, which is flushed when the scan has nothing
//! ready (`Report::flush`), so the output is valid NDJSON at any interrupt.
//! No header, no trailer: scan metadata and the end of the scan are not printed. A host
//! flagged as a SYN proxy is one `{"ip":..,"flag":"syn-proxy","open_answers":N,"ports":M}`
//! line instead of its open ports.

use super::{object, HostFlag, Out, Report, ScanEnd, ScanMeta};
use portscope_core::results::PortResult;
use std::io::{self, Write};

/// Writes [`PortResult`]s in serde's shape, one per line (behind `Shown`).
pub(super) struct NdjsonReport {
    out: Out,
    /// The line being built, written whole so a flush never splits it.
    line: Vec<u8>,
}

impl NdjsonReport {
    pub(super) fn new(out: Out) -> Self {
        NdjsonReport {
            out,
            line: Vec::with_capacity(256),
        }
    }

    /// One line: `write` appends the object, then the newline.
    fn write_line(&mut self, write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<()> {
        self.line.clear();
        write(&mut self.line)?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)
    }
}

impl Report for NdjsonReport {
    fn begin(&mut self, _meta: &ScanMeta) -> io::Result<()> {
        Ok(())
    }

    fn result(&mut self, r: &PortResult) -> io::Result<()> {
        self.write_line(|buf| {
            object::push(buf, r);
            Ok(())
        })
    }

    fn host_flag(&mut self, flag: &HostFlag) -> io::Result<()> {
        self.write_line(|buf| Ok(serde_json::to_writer(buf, flag)?))
    }

    fn end(&mut self, _end: &ScanEnd) -> io::Result<()> {
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{meta, results, run, Calls};
    use super::super::{new_report, Format, ReportFilter};
    use portscope_core::results::PortResult;

    const EXPECTED_HIDDEN: &str = r#"{"ip":"2001:db8::1","port":443,"proto":"tcp","state":"open","reason":"syn-ack","ttl":57}
{"ip":"198.18.0.3","port":22,"proto":"tcp","state":"filtered","reason":"no-response"}
{"ip":"198.18.0.2","port":9000,"proto":"tcp","state":"filtered","reason":"no-response"}
{"ip":"198.18.0.2","port":443,"proto":"tcp","state":"filtered","reason":"icmp-unreachable","ttl":63,"icmp_type":3,"icmp_code":13}
{"ip":"198.18.0.3","port":9000,"proto":"tcp","state":"filtered","reason":"no-response"}
{"ip":"2001:db8::1","port":80,"proto":"tcp","state":"filtered","reason":"icmp-unreachable","ttl":60,"icmp_type":1,"icmp_code":1}
{"ip":"198.18.0.2","port":22,"proto":"tcp","state":"open","reason":"syn-ack","ttl":64}
{"ip":"198.18.0.3","port":80,"proto":"tcp","state":"filtered","reason":"no-response"}
{"ip":"2001:db8::1","port":9000,"proto":"tcp","state":"filtered","reason":"no-response"}
{"ip":"198.18.0.3","port":443,"proto":"tcp","state":"filtered","reason":"no-response"}
{"ip":"198.18.0.3","port":81,"proto":"tcp","state":"filtered","reason":"no-response"}
"#;

    #[test]
    fn prints_open_and_filtered_in_arrival_order() {
        assert_eq!(
            run(Format::Ndjson, false, &results(), false),
            EXPECTED_HIDDEN
        );
    }

    #[test]
    fn show_closed_prints_every_result_and_parses_back() {
        let text = run(Format::Ndjson, true, &results(), false);
        let back: Vec<PortResult> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(back, results());
        assert!(text.contains(
            r#"{"ip":"198.18.0.2","port":80,"proto":"tcp","state":"closed","reason":"reset","ttl":64}"#
        ));
    }

    /// Lines reach the output in batches, not one write each, and every write ends at a
    /// line boundary, so neither a flush nor a kill between writes leaves half a line.
    #[test]
    fn lines_are_written_whole_and_in_batches() {
        for format in [Format::Ndjson, Format::List] {
            let calls = Calls::default();
            let filter = ReportFilter { show_closed: true };
            let mut report = new_report(format, filter, Box::new(calls.clone()));
            report.begin(&meta()).unwrap();
            let before = calls.writes().len();
            for _ in 0..200 {
                for r in results() {
                    report.result(&r).unwrap();
                }
            }
            report.flush().unwrap();
            let writes = &calls.writes()[before..];
            let lines: usize = writes
                .iter()
                .map(|w| w.iter().filter(|&&b| b == b'\n').count())
                .sum();
            assert_eq!(lines, 200 * results().len(), "{format}");
            assert!(
                writes.len() <= lines / 50,
                "{format}: {} writes",
                writes.len()
            );
            assert!(writes.iter().all(|w| w.ends_with(b"\n")), "{format}");
        }
    }

    #[test]
    fn interrupted_output_is_still_ndjson() {
        assert_eq!(run(Format::Ndjson, false, &[], true), "");
        let text = run(Format::Ndjson, false, &results()[..4], true);
        assert_eq!(text.lines().count(), 3);
        for line in text.lines() {
            serde_json::from_str::<PortResult>(line).unwrap();
        }
    }
}
