//! Result output formats of the operator CLI: NDJSON, JSON, masscan list, nmap XML, grepable
//! and a human table.
//!
//! Every format is a [`Report`] that sees the whole scan: [`Report::begin`] once, then
//! [`Report::result`] for every (address, port) pair exactly once in the engine's random
//! order (closed ports included), then [`Report::end`] once, also after an interrupt. Each
//! format decides what to print from the [`ReportFilter`] and keeps its own counts. The
//! streaming formats (ndjson, json, list) write as results arrive; the nmap formats (xml,
//! grepable) hold results per host and write them sorted at the end.
//!
//! This module does not read the scan engine, parse the command line or pick the output
//! file; it only turns results into text. The one clock it reads is the wall clock for the
//! per-line time of the list format, as masscan does.

mod grepable;
mod held;
mod json;
mod list;
mod ndjson;
mod object;
mod shown;
mod table;
mod tee;
mod xml;

use shown::Shown;

pub use tee::Tee;

use portscope_core::results::{PortResult, PortState, Proto, Reason};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::net::IpAddr;
use std::str::FromStr;

/// An output format, as named on the command line (`-o ndjson` and so on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// One JSON object per reported port per line, each line written whole.
    #[default]
    Ndjson,
    /// One JSON array of the same objects, streamed.
    Json,
    /// masscan's `-oL`: `open tcp 22 198.18.0.2 <unix time>` lines.
    List,
    /// nmap's `-oX` XML, hosts sorted by address and ports ascending.
    Xml,
    /// nmap's `-oG` grepable lines, one per up host.
    Grepable,
    /// A human-readable table per host (nmap's normal output); the default on a terminal.
    Table,
}

impl Format {
    /// Every format, in the order the help text lists them.
    pub const ALL: [Format; 6] = [
        Format::Ndjson,
        Format::Json,
        Format::List,
        Format::Xml,
        Format::Grepable,
        Format::Table,
    ];

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Json => "json",
            Format::List => "list",
            Format::Xml => "xml",
            Format::Grepable => "grepable",
            Format::Table => "table",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not one of [`Format::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFormatError(String);

impl fmt::Display for ParseFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown output format `{}`: use one of ndjson, json, list, xml, grepable, table",
            self.0
        )
    }
}

impl std::error::Error for ParseFormatError {}

impl FromStr for Format {
    type Err = ParseFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseFormatError(s.to_owned()))
    }
}

/// Which port states are printed. Open and filtered always are; closed only on request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportFilter {
    /// Print closed ports too (otherwise they are only counted).
    pub show_closed: bool,
}

impl ReportFilter {
    /// Whether a port in `state` is printed.
    pub fn shows(self, state: PortState) -> bool {
        state != PortState::Closed || self.show_closed
    }
}

/// What the scan is, known before the first result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanMeta {
    /// The command line, as the operator typed it (printed, never parsed).
    pub args: String,
    /// Wall-clock start, Unix seconds.
    pub start_unix: u64,
    /// Ports probed per host.
    pub ports: u64,
    /// The port list as given, e.g. `1-65535` (nmap's `services` attribute).
    pub port_spec: String,
    /// Number of target addresses.
    pub targets: u64,
    /// Portscope's version.
    pub version: &'static str,
}

/// How the scan ended, known after the last result.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanEnd {
    /// Wall-clock start, Unix seconds (nmap's per-host `starttime`).
    pub start_unix: u64,
    /// Wall-clock end, Unix seconds.
    pub end_unix: u64,
    /// Scan duration in seconds.
    pub elapsed_secs: f64,
    /// The operator stopped the scan before every pair had its answer.
    pub interrupted: bool,
    /// Round-trip times measured, if any reply came (nmap's `<times>`).
    pub times: Option<Times>,
}

/// nmap's `<times srtt rttvar to>`, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// Smoothed RTT: the median measured.
    pub srtt_us: u64,
    /// RTT variation: 99th percentile minus median.
    pub rttvar_us: u64,
    /// The reply timeout the scan used after each round.
    pub timeout_us: u64,
}

/// Why a host's answers are reported as one flag instead of port by port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlagKind {
    /// SYN-ACK on nearly every port: a SYN proxy, tarpit or SYN cookie front, not open ports.
    SynProxy,
}

impl FlagKind {
    /// The name printed in every format.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::SynProxy => "syn-proxy",
        }
    }
}

/// A host whose open answers are not believable one by one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostFlag {
    /// The host.
    pub ip: IpAddr,
    /// What it looks like.
    pub flag: FlagKind,
    /// SYN-ACK answers received from it (not reported as open ports).
    pub open_answers: u64,
    /// Ports probed on it.
    pub ports: u64,
}

impl HostFlag {
    /// One human sentence, the same in every format.
    pub fn describe(&self) -> String {
        format!(
            "{} answered SYN-ACK on {} of {} ports probed: a SYN proxy or tarpit, its open ports are not listed",
            self.ip, self.open_answers, self.ports
        )
    }
}

/// A result writer in one format.
///
/// Call order: `begin` once, `result` for every pair, `end` once. After `end` the output
/// is complete and flushed, and is a valid document of its format even when the scan was
/// interrupted and produced no results.
pub trait Report {
    /// Writes the header, if the format has one.
    fn begin(&mut self, meta: &ScanMeta) -> io::Result<()>;
    /// Takes one pair's final answer (closed ones too); prints it now, later, or never.
    fn result(&mut self, r: &PortResult) -> io::Result<()>;
    /// Takes a flagged host: its open answers are withheld and this stands for them.
    fn host_flag(&mut self, flag: &HostFlag) -> io::Result<()>;
    /// Writes what was held back and the trailer, then flushes.
    fn end(&mut self, end: &ScanEnd) -> io::Result<()>;
    /// Hands every whole line written so far to the output. Lines are written whole and
    /// buffered, so the output is a valid prefix of its format whenever this has run; the
    /// caller flushes when no result is ready (and at least every [`FLUSH_EVERY`]).
    fn flush(&mut self) -> io::Result<()>;
}

/// The longest a printed line waits in the buffer while results keep arriving.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// A [`Report`] in `format` writing to `out`.
///
/// `out` is buffered here; pass the raw stdout or file.
pub fn new_report(
    format: Format,
    filter: ReportFilter,
    out: Box<dyn Write + Send>,
) -> Box<dyn Report + Send> {
    let out = io::BufWriter::new(out);
    match format {
        Format::Ndjson => Box::new(Shown::new(filter, ndjson::NdjsonReport::new(out))),
        Format::Json => Box::new(Shown::new(filter, json::JsonReport::new(out))),
        Format::List => Box::new(Shown::new(filter, list::ListReport::new(out, unix_now))),
        Format::Xml => Box::new(held::Held::new(xml::XmlReport, filter, out)),
        Format::Grepable => Box::new(held::Held::new(grepable::GrepableReport, filter, out)),
        Format::Table => Box::new(held::Held::new(table::TableReport, filter, out)),
    }
}

/// The buffered writer every format writes to.
type Out = io::BufWriter<Box<dyn Write + Send>>;

/// Wall-clock now in Unix seconds (0 if the clock is before 1970).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Lower-case protocol name as printed.
fn proto_str(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
    }
}

/// Formats Unix seconds as UTC the way C's `ctime` does, as nmap prints times:
/// `Sun Nov 22 12:21:37 2026`, `Thu Jan  1 00:00:00 1970` (day padded with a space).
fn timestr(unix: u64) -> String {
    const CTIME: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(CTIME).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// nmap's `reason` word for a port answer (`reason.cc`'s singular names).
///
/// ICMP codes map as nmap maps them: for IPv4 type 3, codes 0/1/2/3/9/10/13 are
/// net-unreach, host-unreach, proto-unreach, port-unreach, net-prohibited,
/// host-prohibited, admin-prohibited; for ICMPv6 type 1, codes 0/1/2/3/4/5/6 are
/// no-route, admin-prohibited, beyond-scope, host-unreach, port-unreach,
/// admin-prohibited, reject-route. Other codes are `dest-unreach`, other types
/// `unknown-response`.
fn nmap_reason(v6: bool, reason: Reason, icmp: Option<(u8, u8)>) -> &'static str {
    match reason {
        Reason::SynAck | Reason::Reset | Reason::NoResponse => reason.as_str(),
        Reason::IcmpUnreachable => match (v6, icmp) {
            (false, Some((3, code))) => match code {
                0 => "net-unreach",
                1 => "host-unreach",
                2 => "proto-unreach",
                3 => "port-unreach",
                9 => "net-prohibited",
                10 => "host-prohibited",
                13 => "admin-prohibited",
                _ => "dest-unreach",
            },
            (true, Some((1, code))) => match code {
                0 => "no-route",
                1 | 5 => "admin-prohibited",
                2 => "beyond-scope",
                3 => "host-unreach",
                4 => "port-unreach",
                6 => "reject-route",
                _ => "dest-unreach",
            },
            _ => "unknown-response",
        },
    }
}

/// "1 IP address" / "2 IP addresses": nmap's counted noun.
fn counted(n: u64, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// nmap's scan summary: `3 IP addresses (2 hosts up) scanned in 0.52 seconds`.
fn summary(total: u64, up: u64, elapsed_secs: f64) -> String {
    format!(
        "{} ({} up) scanned in {elapsed_secs:.2} seconds",
        counted(total, "IP address", "IP addresses"),
        counted(up, "host", "hosts"),
    )
}

/// One port's answer as the buffering formats keep it: the result without its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PortEntry {
    port: u16,
    proto: Proto,
    state: PortState,
    reason: Reason,
    /// Reply TTL; 0 for no-response, as nmap prints it.
    ttl: u8,
    /// ICMP (type, code) for icmp-unreachable.
    icmp: Option<(u8, u8)>,
}

impl PortEntry {
    fn of(r: &PortResult) -> Self {
        PortEntry {
            port: r.port,
            proto: r.proto,
            state: r.state,
            reason: r.reason,
            ttl: r.ttl.unwrap_or(0),
            icmp: r.icmp_type.zip(r.icmp_code),
        }
    }

    /// Whether the target answered at all.
    fn is_reply(&self) -> bool {
        self.reason != Reason::NoResponse
    }

    /// How well this reply shows the host is up: open, then closed, then ICMP; lower is
    /// better, ties go to the lower port. Makes the host's status reason independent of
    /// the order results arrive in.
    fn status_rank(&self) -> (u8, u16) {
        let rank = match self.state {
            PortState::Open => 0,
            PortState::Closed => 1,
            PortState::Filtered => 2,
        };
        (rank, self.port)
    }
}

/// What the buffering formats know about one host.
#[derive(Debug, Default)]
struct HostAcc {
    /// The ports to print, in arrival order until [`HostTable::sorted_up`].
    shown: Vec<PortEntry>,
    /// Closed ports not printed (nmap's "Ignored State" / `extraports`).
    hidden_closed: u64,
    /// The best reply from this host; `None` (and no flag) means the host is down.
    status: Option<PortEntry>,
    /// Set when the host's open answers were withheld as a SYN proxy.
    flag: Option<HostFlag>,
}

impl HostAcc {
    fn is_up(&self) -> bool {
        self.status.is_some() || self.flag.is_some()
    }
}

/// Results held per host until the end, for the nmap formats.
///
/// Memory is one small entry per printed port plus one map node per host.
#[derive(Debug, Default)]
struct HostTable {
    hosts: BTreeMap<IpAddr, HostAcc>,
    /// Which states are listed; the others are counted per host.
    filter: ReportFilter,
    /// Addresses in the scan ([`ScanMeta::targets`]), for the down and total counts.
    targets: u64,
}

impl HostTable {
    fn new(filter: ReportFilter) -> Self {
        HostTable {
            filter,
            ..HostTable::default()
        }
    }

    fn record(&mut self, r: &PortResult) {
        let entry = PortEntry::of(r);
        let host = self.hosts.entry(r.ip).or_default();
        if entry.is_reply()
            && host
                .status
                .is_none_or(|s| entry.status_rank() < s.status_rank())
        {
            host.status = Some(entry);
        }
        if self.filter.shows(entry.state) {
            host.shown.push(entry);
        } else {
            host.hidden_closed += 1;
        }
    }

    fn flag(&mut self, flag: &HostFlag) {
        self.hosts.entry(flag.ip).or_default().flag = Some(flag.clone());
    }

    /// Hosts with at least one reply.
    fn up(&self) -> u64 {
        self.hosts.values().filter(|h| h.is_up()).count() as u64
    }

    /// Addresses scanned: the scan's count, or the hosts heard from if that is more.
    fn total(&self) -> u64 {
        self.targets.max(self.hosts.len() as u64)
    }

    /// Up hosts in address order, each with its ports in ascending order.
    fn sorted_up(&mut self) -> impl Iterator<Item = (&IpAddr, &HostAcc)> {
        for host in self.hosts.values_mut().filter(|h| h.is_up()) {
            host.shown.sort_unstable_by_key(|e| e.port);
        }
        self.hosts.iter().filter(|(_, h)| h.is_up())
    }
}

#[cfg(test)]
mod testdata;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>(), Ok(f));
        }
        assert_eq!("XML".parse::<Format>(), Ok(Format::Xml));
        let err = "yaml".parse::<Format>().unwrap_err().to_string();
        assert!(err.contains("`yaml`") && err.contains("grepable"), "{err}");
    }

    #[test]
    fn filter_hides_only_closed() {
        let hide = ReportFilter { show_closed: false };
        let show = ReportFilter { show_closed: true };
        assert!(hide.shows(PortState::Open) && hide.shows(PortState::Filtered));
        assert!(!hide.shows(PortState::Closed));
        assert!(show.shows(PortState::Closed));
    }

    #[test]
    fn timestr_matches_ctime() {
        // Expected values from `date -u -d @N '+%a %b %e %H:%M:%S %Y'`.
        let cases = [
            (0, "Thu Jan  1 00:00:00 1970"),
            (951_782_400, "Tue Feb 29 00:00:00 2000"),
            (1_709_164_800, "Thu Feb 29 00:00:00 2024"),
            (1_795_350_097, "Sun Nov 22 12:21:37 2026"),
            (4_102_444_800, "Fri Jan  1 00:00:00 2100"),
            (253_402_300_799, "Fri Dec 31 23:59:59 9999"),
        ];
        for (unix, want) in cases {
            assert_eq!(timestr(unix), want, "{unix}");
        }
    }

    #[test]
    fn nmap_reason_names() {
        use Reason::*;
        assert_eq!(nmap_reason(false, SynAck, None), "syn-ack");
        assert_eq!(nmap_reason(false, Reset, None), "reset");
        assert_eq!(nmap_reason(true, NoResponse, None), "no-response");
        // (IPv6?, ICMP code, nmap's name); the type is 3 for IPv4, 1 for IPv6.
        let cases = [
            (false, 0, "net-unreach"),
            (false, 1, "host-unreach"),
            (false, 2, "proto-unreach"),
            (false, 3, "port-unreach"),
            (false, 9, "net-prohibited"),
            (false, 10, "host-prohibited"),
            (false, 13, "admin-prohibited"),
            (false, 4, "dest-unreach"),
            (true, 0, "no-route"),
            (true, 1, "admin-prohibited"),
            (true, 2, "beyond-scope"),
            (true, 3, "host-unreach"),
            (true, 4, "port-unreach"),
            (true, 5, "admin-prohibited"),
            (true, 6, "reject-route"),
            (true, 7, "dest-unreach"),
        ];
        for (v6, code, want) in cases {
            let icmp_type = if v6 { 1 } else { 3 };
            let got = nmap_reason(v6, IcmpUnreachable, Some((icmp_type, code)));
            assert_eq!(got, want, "v6 {v6} code {code}");
        }
        assert_eq!(
            nmap_reason(false, IcmpUnreachable, None),
            "unknown-response"
        );
        assert_eq!(
            nmap_reason(true, IcmpUnreachable, Some((3, 13))),
            "unknown-response"
        );
    }

    #[test]
    fn host_status_does_not_depend_on_arrival_order() {
        let mut rs = testdata::results();
        let mut a = HostTable::new(ReportFilter::default());
        let mut b = HostTable::new(ReportFilter::default());
        for r in &rs {
            a.record(r);
        }
        rs.reverse();
        for r in &rs {
            b.record(r);
        }
        let status = |t: &HostTable| -> Vec<_> { t.hosts.values().map(|h| h.status).collect() };
        assert_eq!(status(&a), status(&b));
        assert_eq!(a.up(), 2);
        let v4: IpAddr = "198.18.0.2".parse().unwrap();
        assert_eq!(a.hosts[&v4].status.map(|s| s.port), Some(22));
        assert_eq!(a.hosts[&v4].hidden_closed, 2);
    }

    #[test]
    fn a_flagged_host_shows_in_every_format() {
        let want = [
            (Format::Ndjson, r#"{"ip":"198.18.0.9","flag":"syn-proxy","open_answers":5,"ports":5}"#),
            (Format::Json, r#"{"ip":"198.18.0.9","flag":"syn-proxy","open_answers":5,"ports":5}"#),
            (Format::List, "# syn-proxy: 198.18.0.9 answered SYN-ACK on 5 of 5 ports probed"),
            (Format::Grepable, "# syn-proxy: 198.18.0.9 answered SYN-ACK on 5 of 5 ports probed: a SYN proxy or tarpit, its open ports are not listed\nHost: 198.18.0.9 ()\tStatus: Up\n"),
            (Format::Xml, r#"<extraports state="open" count="5">"#),
            (Format::Xml, r#"<hostscript><script id="portscope-syn-proxy" output="198.18.0.9 answered SYN-ACK on 5 of 5 ports probed"#),
            (Format::Table, "Scan report for 198.18.0.9\nNot shown: 5 open tcp ports (syn-ack): SYN proxy or tarpit\n"),
        ];
        for (format, text) in want {
            let out = testdata::run_flagged(format);
            assert!(out.contains(text), "{format}: {out}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&testdata::run_flagged(Format::Json)).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 12);
        let xml = testdata::run_flagged(Format::Xml);
        assert!(
            xml.contains(r#"<hosts up="3" down="1" total="4"/>"#),
            "{xml}"
        );
    }

    #[test]
    fn summary_counts_nouns_like_nmap() {
        assert_eq!(
            summary(1, 1, 0.5),
            "1 IP address (1 host up) scanned in 0.50 seconds"
        );
        assert_eq!(
            summary(3, 0, 12.346),
            "3 IP addresses (0 hosts up) scanned in 12.35 seconds"
        );
    }
}
