//! `portscope`: the operator CLI. Parses arguments (`args`), runs one scan on the engine and
//! writes results in the chosen formats (`scan_cmd`); `portscope engine` (`engine_cmd`) runs
//! the engine daemon instead.
//!
//! It holds no scan logic of its own: planning and policy are the runtime's and core's.

mod args;
mod engine_cmd;
mod guard;
mod inputs;
mod output;
mod progress;
mod resume;
mod scan_cmd;
mod send_path;

use args::{Cli, Command};
use clap::Parser;
use portscope_core::classify::SRC_PORT_BASE;
use portscope_transport::sys::{LinkSink, OpenError, RawSink, SysConfig, SysSource};
use portscope_transport::PacketSink;
use std::io::Write;
use std::process::ExitCode;

/// Exit code when the process lacks CAP_NET_RAW (sysexits EX_NOPERM).
const EXIT_NOPERM: u8 = 77;
/// Exit code for refused or invalid input, command-line errors included (EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let argv = match args::rewrite_nmap_flags(std::env::args().collect()) {
        Ok(v) => v,
        Err(e) => {
            note(&format!("portscope: {e}"));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Scan(args) => scan_cmd::run(*args, argv),
        Command::Engine(args) => engine_cmd::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            note(&format!("portscope: {e:#}"));
            ExitCode::from(exit_code_for(&e))
        }
    }
}

/// Writes one line to stderr, ignoring failure: after SIGHUP the terminal may be gone, and
/// the scan must still finish its files.
pub(crate) fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Typed failures that map to specific exit codes.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NoPermission(String),
}

/// How probes leave: raw IP sockets (the kernel routes each), or frames on `interface` to
/// one next-hop MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SendVia {
    Ip,
    Link {
        interface: String,
        next_hop: [u8; 6],
        qdisc_bypass: bool,
    },
}

/// Opens the raw sockets (replies to any of our source ports, on `interface` or on all,
/// read as `rx_ring` says; probes sent as `via` says, through `senders` sinks, one per send
/// thread); a missing CAP_NET_RAW becomes [`Refusal::NoPermission`]. A fixed `source_port`
/// below the engine's block widens the capture filter down to it (the classifier still
/// rejects everything that is not a reply to this scan).
fn open_sockets(
    interface: Option<String>,
    source_port: Option<u16>,
    rx_ring: args::RxRing,
    via: SendVia,
    expected_replies: Option<u64>,
    senders: usize,
) -> anyhow::Result<(Vec<Box<dyn PacketSink>>, SysSource)> {
    let cfg = SysConfig {
        port_lo: source_port.map_or(SRC_PORT_BASE, |p| p.min(SRC_PORT_BASE)),
        port_hi: u16::MAX,
        interface,
        rx_ring: rx_ring.into(),
        expected_replies,
    };
    let sink = || -> Result<Box<dyn PacketSink>, OpenError> {
        match &via {
            SendVia::Link {
                interface,
                next_hop,
                qdisc_bypass,
            } => Ok(Box::new(LinkSink::open(
                interface,
                *next_hop,
                *qdisc_bypass,
            )?)),
            SendVia::Ip => Ok(Box::new(RawSink::open()?)),
        }
    };
    let opened = SysSource::open(&cfg).and_then(|src| {
        let sinks = (0..senders.max(1))
            .map(|_| sink())
            .collect::<Result<_, _>>()?;
        Ok((sinks, src))
    });
    opened.map_err(|e| match e {
        OpenError::Permission { .. } => anyhow::Error::new(Refusal::NoPermission(e.to_string())),
        other => anyhow::Error::new(other).context("opening raw sockets"),
    })
}

fn exit_code_for(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<Refusal>() {
        Some(Refusal::Usage(_)) => EXIT_USAGE,
        Some(Refusal::NoPermission(_)) => EXIT_NOPERM,
        None => 1,
    }
}
