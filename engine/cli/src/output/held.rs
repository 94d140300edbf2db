//! The [`Report`] of the formats that hold results per host until the end (xml, grepable,
//! table): it records every result and flag in a [`HostTable`] and counts the scan's
//! addresses, so each format writes only its header, its live lines and its ending.

use super::{HostFlag, HostTable, Out, Report, ReportFilter, ScanEnd, ScanMeta};
use portscope_core::results::PortResult;
use std::io::{self, Write};

/// What one held format writes.
pub(super) trait HeldFormat {
    /// Writes the header (and flushes).
    fn begin(&mut self, out: &mut Out, meta: &ScanMeta) -> io::Result<()>;
    /// Writes what shows a result the moment it arrives, if anything (it is already held).
    fn result(&mut self, _out: &mut Out, _r: &PortResult) -> io::Result<()> {
        Ok(())
    }
    /// Writes what shows a flagged host the moment it arrives, if anything.
    fn host_flag(&mut self, _out: &mut Out, _flag: &HostFlag) -> io::Result<()> {
        Ok(())
    }
    /// Writes the held hosts and the trailer, then flushes.
    fn end(&mut self, out: &mut Out, hosts: &mut HostTable, end: &ScanEnd) -> io::Result<()>;
}

/// A held format writing to `out`.
pub(super) struct Held<F> {
    format: F,
    out: Out,
    hosts: HostTable,
}

impl<F: HeldFormat> Held<F> {
    pub(super) fn new(format: F, filter: ReportFilter, out: Out) -> Self {
        Held {
            format,
            out,
            hosts: HostTable::new(filter),
        }
    }
}

impl<F: HeldFormat> Report for Held<F> {
    fn begin(&mut self, meta: &ScanMeta) -> io::Result<()> {
        self.hosts.targets = meta.targets;
        self.format.begin(&mut self.out, meta)
    }

    fn result(&mut self, r: &PortResult) -> io::Result<()> {
        self.hosts.record(r);
        self.format.result(&mut self.out, r)
    }

    fn host_flag(&mut self, flag: &HostFlag) -> io::Result<()> {
        self.hosts.flag(flag);
        self.format.host_flag(&mut self.out, flag)
    }

    fn end(&mut self, end: &ScanEnd) -> io::Result<()> {
        self.format.end(&mut self.out, &mut self.hosts, end)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
