//! The command line: clap's argument structs, plus the rewrite of nmap's and masscan's
//! two-letter flags (`-oX FILE`, `-oA BASE`, `-iL FILE`) into long options clap can parse.
//!
//! nmap spells its output flags as one short option with a glued letter; clap would read
//! `-oX` as `-o` with the value `X`. [`rewrite_nmap_flags`] turns exactly those tokens into
//! long options before clap sees them, so `-oX` without a file is clap's ordinary "value
//! required" error and never a file named `X`.

use crate::output::Format;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "portscope",
    version,
    about = "Stateless TCP SYN port scanner. Scan only what you are authorised to scan."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// SYN-scan targets and classify every port as open, closed or filtered.
    Scan(Box<ScanArgs>),
    /// Run the engine daemon: own the raw sockets, serve scans over a Unix socket.
    Engine(Box<crate::engine_cmd::EngineArgs>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub(crate) enum Show {
    /// Also report closed ports.
    Closed,
}

/// How replies are read (`--rx-ring`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum RxRing {
    /// The memory-mapped TPACKET_V3 ring (recvmmsg for scans of fewer than 40,000 pairs, or
    /// if the kernel refuses the ring).
    #[default]
    Auto,
    /// The ring; fail if it cannot be set up.
    On,
    /// recvmmsg on the capture socket.
    Off,
}

impl From<RxRing> for portscope_transport::sys::RxRing {
    fn from(r: RxRing) -> Self {
        match r {
            RxRing::Auto => Self::Auto,
            RxRing::On => Self::On,
            RxRing::Off => Self::Off,
        }
    }
}

/// `aa:bb:cc:dd:ee:ff`.
fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bytes: Option<Vec<u8>> = s
        .split(':')
        .map(|h| {
            (h.len() == 2)
                .then(|| u8::from_str_radix(h, 16).ok())
                .flatten()
        })
        .collect();
    bytes
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| format!("{s:?} is not a MAC address like 02:00:00:00:00:01"))
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: say on or off")),
    }
}

/// How probes leave, for `portscope scan` and `portscope engine` alike: link-layer frames
/// to a known next hop, or (without `--router-mac`) the kernel's IP output path.
#[derive(Args, Debug, Clone)]
pub(crate) struct LinkArgs {
    /// Send link-layer frames on --interface to this next-hop MAC (as masscan's
    /// --router-mac): skips the kernel's IP output path; every probe goes to that hop.
    #[arg(long, value_name = "MAC", requires = "interface", value_parser = parse_mac)]
    pub router_mac: Option<[u8; 6]>,
    /// With --router-mac: bypass the interface's queueing discipline (PACKET_QDISC_BYPASS).
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub qdisc_bypass: bool,
}

impl LinkArgs {
    /// The send path these flags choose, frames going out on `interface` (clap makes
    /// --router-mac require --interface).
    pub(crate) fn via(&self, interface: Option<&str>) -> crate::SendVia {
        match (self.router_mac, interface) {
            (Some(next_hop), Some(interface)) => crate::SendVia::Link {
                interface: interface.to_owned(),
                next_hop,
                qdisc_bypass: self.qdisc_bypass,
            },
            _ => crate::SendVia::Ip,
        }
    }
}

/// `portscope scan`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ScanArgs {
    /// Addresses or CIDR ranges (IPv4 or IPv6).
    #[arg(value_name = "TARGET", required_unless_present_any = ["input_list", "resume"])]
    pub targets: Vec<String>,
    /// Read targets from FILE, one or more per line (`-` for standard input); `#` starts a
    /// comment. nmap's `-iL`.
    #[arg(long = "input-list", value_name = "FILE")]
    pub input_list: Option<PathBuf>,
    /// Ports: a list like 22,80,1000-2000, or - for 1-65535.
    #[arg(short = 'p', long = "ports", conflicts_with_all = ["top_ports", "fast"])]
    pub ports: Option<String>,
    /// Scan the N most common TCP ports (nmap's frequency table).
    #[arg(long = "top-ports", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub top_ports: Option<u16>,
    /// Fast scan: the 100 most common TCP ports (`--top-ports 100`).
    #[arg(short = 'F', long = "fast")]
    pub fast: bool,
    /// Leave these ports out (same syntax as -p).
    #[arg(long = "exclude-ports", value_name = "PORTS")]
    pub exclude_ports: Option<String>,
    /// Packets per second (global ceiling).
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Retransmit silent ports exactly N times [default: adaptive, see --max-retries].
    #[arg(long, value_name = "N")]
    pub retries: Option<u8>,
    /// Without --retries, silent ports are retried at least twice, then while the loss
    /// measured from the retries says some may still be wrong, at most this many times.
    #[arg(long, value_name = "N", default_value_t = portscope_engine::DEFAULT_MAX_RETRIES)]
    pub max_retries: u8,
    /// Pin the send thread to this CPU [default: the first CPU this process may use].
    #[arg(long, value_name = "CPU")]
    pub send_cpu: Option<usize>,
    /// Pin the receive thread to this CPU [default: another one].
    #[arg(long, value_name = "CPU")]
    pub recv_cpu: Option<usize>,
    /// Threads that put probes on the wire: the send thread and N-1 helpers, pinned to
    /// the other CPUs in turn (most of a probe's cost is the kernel's, in the sending
    /// thread). Like zmap's --sender-threads [default: 2 where this process may use two
    /// CPUs or more, else 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub send_threads: Option<u16>,
    /// Upper bound on the wait for replies after each round (the wait itself follows the
    /// measured RTT), e.g. 500ms, 2s.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,
    /// Lower bound on that wait.
    #[arg(long, default_value = "3ms", value_parser = humantime::parse_duration, hide = true)]
    pub min_wait: Duration,
    /// Allow a range the default policy denies (private, loopback, benchmarking, ...).
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<String>,
    /// Leave out addresses or ranges.
    #[arg(long = "exclude", value_name = "CIDR")]
    pub exclude: Vec<String>,
    /// Leave out the addresses and ranges listed in FILE (same syntax as -iL).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_file: Option<PathBuf>,
    /// Format on standard output (or -o FILE) [default: table on a terminal, else ndjson].
    #[arg(long)]
    pub format: Option<Format>,
    /// Write the --format output to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write nmap XML to FILE (`-oX FILE`).
    #[arg(long = "output-xml", value_name = "FILE")]
    pub output_xml: Option<PathBuf>,
    /// Also write nmap grepable lines to FILE (`-oG FILE`).
    #[arg(long = "output-grepable", value_name = "FILE")]
    pub output_grepable: Option<PathBuf>,
    /// Also write the human table to FILE (`-oN FILE`).
    #[arg(long = "output-normal", value_name = "FILE")]
    pub output_normal: Option<PathBuf>,
    /// Also write a JSON array to FILE (`-oJ FILE`, as masscan).
    #[arg(long = "output-json", value_name = "FILE")]
    pub output_json: Option<PathBuf>,
    /// Also write masscan list lines to FILE (`-oL FILE`).
    #[arg(long = "output-list", value_name = "FILE")]
    pub output_list: Option<PathBuf>,
    /// Write BASE.xml, BASE.gnmap and BASE.nmap, as nmap's `-oA BASE`.
    #[arg(long = "output-all", value_name = "BASE")]
    pub output_all: Option<PathBuf>,
    /// Also report closed ports.
    #[arg(long)]
    pub show: Vec<Show>,
    /// IPv4 TTL / IPv6 hop limit of the probes.
    #[arg(long, default_value_t = portscope_core::probe::PROBE_TTL, value_parser = clap::value_parser!(u8).range(1..))]
    pub ttl: u8,
    /// Send every probe from this TCP source port, e.g. 53 (nmap's and masscan's
    /// --source-port, nmap's -g) [default: the engine's own ports, 61440-65535].
    #[arg(short = 'g', long = "source-port", value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub source_port: Option<u16>,
    /// Capture replies on this interface only (default: all).
    #[arg(long)]
    pub interface: Option<String>,
    /// Read replies through a memory-mapped ring (one wake-up per block) or recvmmsg.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub rx_ring: RxRing,
    #[command(flatten)]
    pub link: LinkArgs,
    /// Without --router-mac: send link-layer frames when the kernel's rule, route and
    /// neighbour tables give every target one Ethernet next hop with a known MAC (as masscan
    /// and zmap find their gateway's), else the kernel's IP path; off: always the IP path.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub auto_link: bool,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Print a status line to stderr every DURATION (e.g. 10s), terminal or not.
    #[arg(long = "stats-every", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stats_every: Option<Duration>,
    /// Print what would be probed and exit: no packet is sent, no privilege needed.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Where an interrupted scan saves its state [default: portscope.resume].
    #[arg(long = "resume-file", value_name = "FILE")]
    pub resume_file: Option<PathBuf>,
    /// Finish a scan saved by an interrupt, without probing answered ports again.
    #[arg(long = "resume", value_name = "FILE", conflicts_with_all = ["targets", "input_list"])]
    pub resume: Option<PathBuf>,
}

impl ScanArgs {
    /// The extra output files (-oX, -oG, -oN, -oJ, -oL, -oA) as (format, path).
    pub(crate) fn extra_outputs(&self) -> Vec<(Format, PathBuf)> {
        let mut v = Vec::new();
        let one = [
            (Format::Xml, &self.output_xml),
            (Format::Grepable, &self.output_grepable),
            (Format::Table, &self.output_normal),
            (Format::Json, &self.output_json),
            (Format::List, &self.output_list),
        ];
        for (f, p) in one {
            if let Some(p) = p {
                v.push((f, p.clone()));
            }
        }
        if let Some(base) = &self.output_all {
            for (f, ext) in [
                (Format::Xml, "xml"),
                (Format::Grepable, "gnmap"),
                (Format::Table, "nmap"),
            ] {
                let mut name = base.clone().into_os_string();
                name.push(".");
                name.push(ext);
                v.push((f, PathBuf::from(name)));
            }
        }
        v
    }
}

/// nmap/masscan spellings and the long options they become.
const GLUED: [(&str, &str); 7] = [
    ("-oX", "--output-xml"),
    ("-oG", "--output-grepable"),
    ("-oN", "--output-normal"),
    ("-oJ", "--output-json"),
    ("-oL", "--output-list"),
    ("-oA", "--output-all"),
    ("-iL", "--input-list"),
];

/// Rewrites nmap's glued flags into long options; everything after `--` is left alone.
/// `-oX=FILE` and `-oXFILE` are not nmap spellings and are rejected with a hint, so a typo
/// never silently becomes `-o` with a strange file name.
pub(crate) fn rewrite_nmap_flags(argv: Vec<String>) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut rest = false;
    for a in argv {
        if rest || a == "--" {
            rest = true;
            out.push(a);
            continue;
        }
        if let Some((_, long)) = GLUED.iter().find(|(short, _)| *short == a) {
            out.push((*long).to_owned());
            continue;
        }
        let glued_prefix = GLUED
            .iter()
            .find(|(short, _)| a.len() > 3 && a.starts_with(short));
        if let Some((short, _)) = glued_prefix {
            return Err(format!(
                "`{a}`: put a space between {short} and its file name, as in `{short} {}`",
                a[3..].trim_start_matches('=')
            ));
        }
        if a.len() == 3 && a.starts_with("-o") && a.as_bytes()[2].is_ascii_uppercase() {
            return Err(format!(
                "`{a}` is not an output flag: use -oX, -oG, -oN, -oJ, -oL or -oA, or -o FILE"
            ));
        }
        out.push(a);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn parse(s: &str) -> Result<ScanArgs, String> {
        let v = rewrite_nmap_flags(argv(s))?;
        match Cli::try_parse_from(v).map_err(|e| e.to_string())?.command {
            Command::Scan(a) => Ok(*a),
            Command::Engine(_) => Err("engine".into()),
        }
    }

    #[test]
    fn wait_floor_defaults_to_the_engines() {
        let a = parse("portscope scan 198.18.0.2").unwrap();
        assert_eq!(a.min_wait, portscope_core::rtt::DEFAULT_MIN_WAIT);
    }

    #[test]
    fn nmap_output_flags_become_files() {
        let a = parse("portscope scan 198.18.0.2 -oX out.xml -oG out.gnmap -oL l.txt").unwrap();
        assert_eq!(a.output_xml, Some("out.xml".into()));
        assert_eq!(a.output_grepable, Some("out.gnmap".into()));
        assert_eq!(a.output_list, Some("l.txt".into()));
        assert_eq!(a.targets, vec!["198.18.0.2"]);
        assert!(a.output.is_none());
    }

    #[test]
    fn output_all_names_three_files() {
        let a = parse("portscope scan 198.18.0.2 -oA scans/web").unwrap();
        let files = a.extra_outputs();
        assert_eq!(
            files,
            vec![
                (Format::Xml, "scans/web.xml".into()),
                (Format::Grepable, "scans/web.gnmap".into()),
                (Format::Table, "scans/web.nmap".into()),
            ]
        );
    }

    #[test]
    fn glued_flag_without_file_is_an_error() {
        let err = parse("portscope scan 198.18.0.2 -oX").unwrap_err();
        assert!(
            err.contains("--output-xml") && err.contains("value"),
            "{err}"
        );
        let err = parse("portscope scan -oX 198.18.0.2").unwrap_err();
        assert!(err.contains("TARGET"), "{err}");
        let err = parse("portscope scan 198.18.0.2 -oXout.xml").unwrap_err();
        assert!(err.contains("-oX out.xml"), "{err}");
        let err = parse("portscope scan 198.18.0.2 -oZ f").unwrap_err();
        assert!(err.contains("not an output flag"), "{err}");
    }

    #[test]
    fn input_list_replaces_targets() {
        let a = parse("portscope scan -iL - -p 80").unwrap();
        assert_eq!(a.input_list, Some("-".into()));
        assert!(a.targets.is_empty());
        assert!(parse("portscope scan -p 80").is_err());
    }

    #[test]
    fn source_port_is_one_to_65535() {
        assert_eq!(
            parse("portscope scan 198.18.0.2 -g 53")
                .unwrap()
                .source_port,
            Some(53)
        );
        let a = parse("portscope scan 198.18.0.2 --source-port 65535").unwrap();
        assert_eq!(a.source_port, Some(65535));
        for bad in ["0", "65536", "70000", "dns", "-1"] {
            let err = parse(&format!("portscope scan 198.18.0.2 --source-port={bad}")).unwrap_err();
            assert!(err.contains("--source-port"), "{bad}: {err}");
        }
    }

    #[test]
    fn after_double_dash_nothing_is_rewritten() {
        let v = rewrite_nmap_flags(argv("portscope scan -- -oX")).unwrap();
        assert_eq!(v.last().unwrap(), "-oX");
    }
}
