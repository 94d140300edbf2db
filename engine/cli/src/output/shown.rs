//! The `--show` filter in front of the streaming formats (ndjson, json, list): only the
//! results the filter shows reach the format. The held formats (xml, grepable, table) filter
//! themselves, since they also count what they do not show.

use super::{HostFlag, Report, ReportFilter, ScanEnd, ScanMeta};
use portscope_core::results::PortResult;
use std::io;

/// A streaming format behind the filter.
pub(super) struct Shown<R> {
    filter: ReportFilter,
    format: R,
}

impl<R: Report> Shown<R> {
    pub(super) fn new(filter: ReportFilter, format: R) -> Self {
        Shown { filter, format }
    }
}

impl<R: Report> Report for Shown<R> {
    fn begin(&mut self, meta: &ScanMeta) -> io::Result<()> {
        self.format.begin(meta)
    }

    fn result(&mut self, r: &PortResult) -> io::Result<()> {
        if self.filter.shows(r.state) {
            self.format.result(r)
        } else {
            Ok(())
        }
    }

    fn host_flag(&mut self, flag: &HostFlag) -> io::Result<()> {
        self.format.host_flag(flag)
    }

    fn end(&mut self, end: &ScanEnd) -> io::Result<()> {
        self.format.end(end)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.format.flush()
    }
}
