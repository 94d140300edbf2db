//! Several outputs from one scan (`--format` on stdout plus `-oX`, `-oG`, `-oA` files).
//!
//! Every result goes to every output. An output that fails (stdout gone after a hangup, a
//! full disk) is dropped with its error remembered, and the others carry on, so a scan
//! stopped by SIGHUP still completes its files.

use super::{HostFlag, Report, ScanEnd, ScanMeta};
use portscope_core::results::PortResult;
use std::io;

/// One named output.
struct Sink {
    /// `stdout` or the file name, for error messages.
    name: String,
    report: Box<dyn Report + Send>,
}

/// All outputs of a scan.
pub struct Tee {
    sinks: Vec<Sink>,
    /// `name: error` of each output that failed.
    failures: Vec<String>,
}

impl std::fmt::Debug for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.sinks.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Tee").field("outputs", &names).finish()
    }
}

impl Tee {
    /// No outputs yet.
    pub fn new() -> Self {
        Tee {
            sinks: Vec::new(),
            failures: Vec::new(),
        }
    }

    /// Adds an output called `name`.
    pub fn add(&mut self, name: String, report: Box<dyn Report + Send>) {
        self.sinks.push(Sink { name, report });
    }

    /// What failed so far, one `name: error` each.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// Runs `f` on every output, dropping the ones that fail.
    fn each(&mut self, mut f: impl FnMut(&mut dyn Report) -> io::Result<()>) {
        let failures = &mut self.failures;
        self.sinks.retain_mut(|s| match f(s.report.as_mut()) {
            Ok(()) => true,
            Err(e) => {
                failures.push(format!("{}: {e}", s.name));
                false
            }
        });
    }

    /// [`Report::begin`] on every output.
    pub fn begin(&mut self, meta: &ScanMeta) {
        self.each(|r| r.begin(meta));
    }

    /// [`Report::result`] on every output.
    pub fn result(&mut self, res: &PortResult) {
        self.each(|r| r.result(res));
    }

    /// [`Report::host_flag`] on every output.
    pub fn host_flag(&mut self, flag: &HostFlag) {
        self.each(|r| r.host_flag(flag));
    }

    /// [`Report::end`] on every output.
    pub fn end(&mut self, end: &ScanEnd) {
        self.each(|r| r.end(end));
    }

    /// [`Report::flush`] on every output.
    pub fn flush(&mut self) {
        self.each(|r| r.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{end, meta, results, Sink as Buf};
    use super::super::{new_report, Format, ReportFilter};
    use super::*;
    use std::io::Write;

    /// A writer that fails after `ok` writes, like stdout after a hangup.
    struct Breaks(u32);
    impl Write for Breaks {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("terminal gone"));
            }
            self.0 -= 1;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_does_not_stop_the_others() {
        let f = ReportFilter::default();
        let (a, b) = (Buf::default(), Buf::default());
        let mut tee = Tee::new();
        tee.add(
            "stdout".into(),
            new_report(Format::Ndjson, f, Box::new(Breaks(1))),
        );
        tee.add(
            "a.xml".into(),
            new_report(Format::Xml, f, Box::new(a.clone())),
        );
        tee.add(
            "b.json".into(),
            new_report(Format::Json, f, Box::new(b.clone())),
        );
        tee.begin(&meta());
        for r in results() {
            tee.result(&r);
            // As the scan loop does now and then: stdout's second write fails.
            tee.flush();
        }
        tee.end(&end(false));
        assert_eq!(tee.failures().len(), 1, "{:?}", tee.failures());
        assert!(tee.failures()[0].starts_with("stdout: terminal gone"));
        assert!(a.text().ends_with("</nmaprun>\n"), "{}", a.text());
        let v: Vec<PortResult> = serde_json::from_str(&b.text()).unwrap();
        assert_eq!(v.len(), 11);
    }
}
