//! JSON output: one array of `PortResult` objects, streamed one object per line.
//!
//! `[` is written at the start, `,\n` between objects and `]` at the end, so the output is
//! a valid JSON document once [`Report::end`] has run, interrupted or not. Scan metadata is
//! not printed; use xml for that. A host flagged as a SYN proxy is one flag object (as in
//! ndjson) instead of its open ports.

use super::{object, HostFlag, Out, Report, ScanEnd, ScanMeta};
use portscope_core::results::PortResult;
use std::io::{self, Write};

/// Writes printed [`PortResult`]s as elements of one JSON array (behind `Shown`).
pub(super) struct JsonReport {
    out: Out,
    /// Objects written so far: decides between `\n` and `,\n` before the next one.
    written: u64,
    /// The element being built ([`object::push`]), written in one call.
    line: Vec<u8>,
}

impl JsonReport {
    pub(super) fn new(out: Out) -> Self {
        JsonReport {
            out,
            written: 0,
            line: Vec::with_capacity(256),
        }
    }

    /// One element of the array, after its separator: `write` appends the object.
    fn element(&mut self, write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> io::Result<()> {
        self.line.clear();
        let sep: &[u8] = if self.written == 0 { b"\n" } else { b",\n" };
        self.line.extend_from_slice(sep);
        write(&mut self.line)?;
        self.written += 1;
        self.out.write_all(&self.line)
    }
}

impl Report for JsonReport {
    fn begin(&mut self, _meta: &ScanMeta) -> io::Result<()> {
        self.out.write_all(b"[")?;
        self.out.flush()
    }

    fn result(&mut self, r: &PortResult) -> io::Result<()> {
        self.element(|buf| {
            object::push(buf, r);
            Ok(())
        })
    }

    fn host_flag(&mut self, flag: &HostFlag) -> io::Result<()> {
        self.element(|buf| Ok(serde_json::to_writer(buf, flag)?))
    }

    fn end(&mut self, _end: &ScanEnd) -> io::Result<()> {
        let close: &[u8] = if self.written == 0 { b"]\n" } else { b"\n]\n" };
        self.out.write_all(close)?;
        self.out.flush()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{results, run};
    use super::super::Format;
    use portscope_core::results::PortResult;

    const EXPECTED_HIDDEN: &str = r#"[
{"ip":"2001:db8::1","port":443,"proto":"tcp","state":"open","reason":"syn-ack","ttl":57},
{"ip":"198.18.0.3","port":22,"proto":"tcp","state":"filtered","reason":"no-response"},
{"ip":"198.18.0.2","port":9000,"proto":"tcp","state":"filtered","reason":"no-response"},
{"ip":"198.18.0.2","port":443,"proto":"tcp","state":"filtered","reason":"icmp-unreachable","ttl":63,"icmp_type":3,"icmp_code":13},
{"ip":"198.18.0.3","port":9000,"proto":"tcp","state":"filtered","reason":"no-response"},
{"ip":"2001:db8::1","port":80,"proto":"tcp","state":"filtered","reason":"icmp-unreachable","ttl":60,"icmp_type":1,"icmp_code":1},
{"ip":"198.18.0.2","port":22,"proto":"tcp","state":"open","reason":"syn-ack","ttl":64},
{"ip":"198.18.0.3","port":80,"proto":"tcp","state":"filtered","reason":"no-response"},
{"ip":"2001:db8::1","port":9000,"proto":"tcp","state":"filtered","reason":"no-response"},
{"ip":"198.18.0.3","port":443,"proto":"tcp","state":"filtered","reason":"no-response"},
{"ip":"198.18.0.3","port":81,"proto":"tcp","state":"filtered","reason":"no-response"}
]
"#;

    #[test]
    fn prints_one_array() {
        assert_eq!(run(Format::Json, false, &results(), false), EXPECTED_HIDDEN);
    }

    #[test]
    fn show_closed_array_parses_back_to_every_result() {
        let text = run(Format::Json, true, &results(), false);
        let back: Vec<PortResult> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, results());
    }

    #[test]
    fn interrupted_output_is_valid_json() {
        let empty = run(Format::Json, false, &[], true);
        assert_eq!(empty, "[]\n");
        assert_eq!(
            serde_json::from_str::<Vec<PortResult>>(&empty).unwrap(),
            vec![]
        );

        let some = run(Format::Json, false, &results()[..4], true);
        let back: Vec<PortResult> = serde_json::from_str(&some).unwrap();
        assert_eq!(back.len(), 3);

        // Only closed ports arrived before the interrupt: nothing printed, still valid.
        let closed = run(Format::Json, false, &results()[1..2], true);
        assert_eq!(closed, "[]\n");
    }
}
