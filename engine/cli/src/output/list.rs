//! masscan `-oL` list output: `#masscan`, then `open tcp 22 198.18.0.2 <unix time>` lines,
//! then `# end`.
//!
//! The time on each line is the wall-clock second the result reached the writer (masscan
//! prints when it saw the reply). Lines are written whole and flushed whenever the scan has
//! nothing ready (`Report::flush`), so a `tail -f` sees them within milliseconds.
//! An interrupted scan gets a `# interrupted` comment line before `# end`; a host flagged as
//! a SYN proxy gets a `# syn-proxy: ...` comment line instead of its open ports.

use super::{proto_str, HostFlag, Out, Report, ScanEnd, ScanMeta};
use portscope_core::results::PortResult;
use std::io::{self, Write};

/// Writes printed results as masscan list lines (behind `Shown`).
pub(super) struct ListReport {
    out: Out,
    /// The line being built, written whole so a flush never splits it.
    line: Vec<u8>,
    /// Wall clock in Unix seconds; a fixed function in tests.
    clock: fn() -> u64,
}

impl ListReport {
    pub(super) fn new(out: Out, clock: fn() -> u64) -> Self {
        ListReport {
            out,
            line: Vec::with_capacity(64),
            clock,
        }
    }
}

impl Report for ListReport {
    fn begin(&mut self, _meta: &ScanMeta) -> io::Result<()> {
        self.out.write_all(b"#masscan\n")?;
        self.out.flush()
    }

    fn result(&mut self, r: &PortResult) -> io::Result<()> {
        self.line.clear();
        writeln!(
            self.line,
            "{} {} {} {} {}",
            r.state.as_str(),
            proto_str(r.proto),
            r.port,
            r.ip,
            (self.clock)()
        )?;
        self.out.write_all(&self.line)
    }

    fn host_flag(&mut self, flag: &HostFlag) -> io::Result<()> {
        writeln!(self.out, "# {}: {}", flag.flag.as_str(), flag.describe())?;
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn end(&mut self, end: &ScanEnd) -> io::Result<()> {
        if end.interrupted {
            self.out.write_all(b"# interrupted\n")?;
        }
        self.out.write_all(b"# end\n")?;
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::shown::Shown;
    use super::super::testdata::{end, meta, results, Sink};
    use super::super::ReportFilter;
    use super::*;

    fn run(show_closed: bool, results: &[PortResult], interrupted: bool) -> String {
        let sink = Sink::default();
        let out = io::BufWriter::new(Box::new(sink.clone()) as Box<dyn Write + Send>);
        let list = ListReport::new(out, || 1_795_350_098);
        let mut report = Shown::new(ReportFilter { show_closed }, list);
        report.begin(&meta()).unwrap();
        for r in results {
            report.result(r).unwrap();
        }
        report.end(&end(interrupted)).unwrap();
        sink.text()
    }

    #[test]
    fn closed_hidden() {
        let want = "\
#masscan
open tcp 443 2001:db8::1 1795350098
filtered tcp 22 198.18.0.3 1795350098
filtered tcp 9000 198.18.0.2 1795350098
filtered tcp 443 198.18.0.2 1795350098
filtered tcp 9000 198.18.0.3 1795350098
filtered tcp 80 2001:db8::1 1795350098
open tcp 22 198.18.0.2 1795350098
filtered tcp 80 198.18.0.3 1795350098
filtered tcp 9000 2001:db8::1 1795350098
filtered tcp 443 198.18.0.3 1795350098
filtered tcp 81 198.18.0.3 1795350098
# end
";
        assert_eq!(run(false, &results(), false), want);
    }

    #[test]
    fn closed_shown() {
        let text = run(true, &results(), false);
        assert_eq!(text.lines().count(), 2 + results().len());
        assert!(text.contains("\nclosed tcp 80 198.18.0.2 1795350098\n"));
        assert!(text.contains("\nclosed tcp 22 2001:db8::1 1795350098\n"));
    }

    #[test]
    fn interrupted() {
        assert_eq!(run(false, &[], true), "#masscan\n# interrupted\n# end\n");
        assert_eq!(
            run(false, &results()[..1], true),
            "#masscan\nopen tcp 443 2001:db8::1 1795350098\n# interrupted\n# end\n"
        );
    }
}
