//! `portscope`: the operator CLI. Parses arguments, opens the raw sockets, drops privileges,
//! runs one scan on the engine and writes results in the chosen format; `portscope engine`
//! (`engine_cmd`) runs the engine daemon instead.
//!
//! It holds no scan logic of its own: planning and policy are the runtime's and core's.

mod engine_cmd;
mod output;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use output::{Format, ReportFilter, ScanEnd, ScanMeta};
use portscope_core::policy::TargetPolicy;
use portscope_core::targets::parse_net;
use portscope_engine::{
    Engine, EngineConfig, Outcome, PlanLimits, ScanEvent, ScanRequest, ScanSummary, SubmitError,
};
use portscope_transport::sys::{self, OpenError, SysConfig};
use portscope_transport::{privs, PacketSink, PacketSource};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Exit code when the process lacks CAP_NET_RAW (sysexits EX_NOPERM).
const EXIT_NOPERM: u8 = 77;
/// Exit code for refused or invalid input (sysexits EX_USAGE).
const EXIT_USAGE: u8 = 64;
/// Exit code when a scan was interrupted (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(Parser, Debug)]
#[command(
    name = "portscope",
    version,
    about = "Stateless TCP SYN port scanner. Scan only what you are authorised to scan."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// SYN-scan targets and classify every port as open, closed or filtered.
    Scan(ScanArgs),
    /// Run the engine daemon: own the raw sockets, serve scans over a Unix socket.
    Engine(engine_cmd::EngineArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Show {
    /// Also report closed ports.
    Closed,
}

#[derive(Args, Debug)]
struct ScanArgs {
    /// Addresses or CIDR ranges (IPv4 or IPv6).
    #[arg(required = true, value_name = "TARGET")]
    targets: Vec<String>,
    /// Ports: a list like 22,80,1000-2000, or - for 1-65535.
    #[arg(short = 'p', long = "ports", default_value = "-")]
    ports: String,
    /// Packets per second (global ceiling).
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Retransmissions for ports that stayed silent.
    #[arg(long, default_value_t = 2)]
    retries: u8,
    /// Upper bound on the wait for replies after each round (the wait itself follows the
    /// measured RTT), e.g. 500ms, 2s.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    max_wait: Duration,
    /// Lower bound on that wait.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration, hide = true)]
    min_wait: Duration,
    /// Allow a range the default policy denies (private, loopback, benchmarking, ...).
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<String>,
    /// Leave out addresses or ranges.
    #[arg(long = "exclude", value_name = "CIDR")]
    exclude: Vec<String>,
    /// Output format [default: ndjson when stdout is not a terminal, table otherwise].
    #[arg(long)]
    format: Option<Format>,
    /// Write results to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<std::path::PathBuf>,
    /// Also report closed ports.
    #[arg(long)]
    show: Vec<Show>,
    /// Capture replies on this interface only (default: all).
    #[arg(long)]
    interface: Option<String>,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(args) => scan(args),
        Command::Engine(args) => engine_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portscope: {e:#}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}

/// Typed failures that map to specific exit codes.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NoPermission(String),
}

fn exit_code_for(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<Refusal>() {
        Some(Refusal::Usage(_)) => EXIT_USAGE,
        Some(Refusal::NoPermission(_)) => EXIT_NOPERM,
        None => 1,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn scan(args: ScanArgs) -> Result<ExitCode> {
    let usage = |e: &dyn std::fmt::Display| Refusal::Usage(e.to_string());
    let mut policy = TargetPolicy::default_deny();
    for a in &args.allow {
        policy.allow(parse_net(a).map_err(|e| usage(&e))?);
    }
    let request = ScanRequest {
        targets: args.targets.clone(),
        ports: args.ports.clone(),
        exclude: args.exclude.clone(),
        rate: args.rate,
        retries: args.retries,
        max_wait: args.max_wait,
        min_wait: args.min_wait,
    };
    // Refuse before touching any socket: a refused target never costs a packet, and the
    // policy answers before the route lookup (a denied target is not "no route").
    let limits = PlanLimits {
        policy: &policy,
        max_pairs: portscope_core::targets::MAX_PAIRS,
    };
    let plan = request
        .plan_within(limits, &sys::route_source)
        .map_err(|e| usage(&e))?;

    let (sink, source) = sys::open(&SysConfig {
        port_lo: portscope_core::classify::SRC_PORT_BASE,
        port_hi: u16::MAX,
        interface: args.interface.clone(),
    })
    .map_err(|e| match e {
        OpenError::Permission { .. } => anyhow::Error::new(Refusal::NoPermission(e.to_string())),
        other => anyhow::Error::new(other).context("opening raw sockets"),
    })?;
    privs::drop_all_but_net_raw().context("dropping capabilities")?;

    let format = args.format.unwrap_or(
        if std::io::stdout().is_terminal() && args.output.is_none() {
            Format::Table
        } else {
            Format::Ndjson
        },
    );
    let out: Box<dyn Write + Send> = match &args.output {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let filter = ReportFilter {
        show_closed: args.show.contains(&Show::Closed),
    };
    let mut report = output::new_report(format, filter, out);
    let pairs = plan.targets.len() * plan.ports.len();
    let meta = ScanMeta {
        args: std::env::args().collect::<Vec<_>>().join(" "),
        start_unix: unix_now(),
        ports: plan.ports.len(),
        port_spec: args.ports.clone(),
        targets: plan.targets.len(),
        version: env!("CARGO_PKG_VERSION"),
    };

    let engine = Engine::start(
        Box::new(sink) as Box<dyn PacketSink>,
        Box::new(source) as Box<dyn PacketSource>,
        EngineConfig {
            max_rate: args.rate,
            policy,
            ..EngineConfig::default()
        },
    );
    let started = Instant::now();
    let mut handle = engine.submit(plan).map_err(|e| match e {
        SubmitError::Policy(p) => anyhow::Error::new(Refusal::Usage(p.to_string())),
        other => anyhow::Error::new(other),
    })?;

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }

    report.begin(&meta)?;
    let bar = progress_bar(pairs, args.no_progress);
    let mut summary: Option<ScanSummary> = None;
    let mut last_tick = Instant::now();
    let mut cancelled = false;
    while summary.is_none() {
        if interrupted.load(Ordering::SeqCst) && !cancelled {
            handle.cancel();
            cancelled = true;
        }
        match handle.next_event(Duration::from_millis(50)) {
            Some(ScanEvent::Port(r)) => report.result(&r)?,
            Some(ScanEvent::Finished(s)) => summary = Some(s),
            None => {}
        }
        if last_tick.elapsed() > Duration::from_millis(100) {
            last_tick = Instant::now();
            let p = handle.progress();
            bar.set_position(p.sent.min(pairs));
            let pps = p.sent as f64 / started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "{pps:.0} pps, replies {}, round {}/{}",
                p.answered,
                p.round + 1,
                p.rounds
            ));
        }
    }
    bar.finish_and_clear();
    let summary = summary.expect("loop ends with a summary");
    let was_interrupted = summary.outcome == Outcome::Cancelled;
    report.end(&ScanEnd {
        end_unix: unix_now(),
        elapsed_secs: started.elapsed().as_secs_f64(),
        interrupted: was_interrupted,
    })?;
    print_summary(&summary, &engine);
    if was_interrupted {
        return Ok(ExitCode::from(EXIT_INTERRUPTED));
    }
    let failed = engine.stats().send_failed.load(Ordering::Relaxed);
    if failed > 0 && failed == summary.sent {
        bail!("the kernel refused every probe (no route to the targets?)");
    }
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(total: u64, disabled: bool) -> ProgressBar {
    if disabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(10));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} probes, {msg}, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn print_summary(s: &ScanSummary, engine: &Engine) {
    let stats = engine.stats();
    let secs = s.elapsed.as_secs_f64();
    let mut line = format!(
        "portscope: {} in {:.3}s: {} open, {} closed, {} filtered of {} ports; {} probes sent ({:.0}/s) in {} round(s)",
        match s.outcome {
            Outcome::Complete => "done",
            Outcome::Cancelled => "interrupted",
        },
        secs,
        s.open,
        s.closed,
        s.filtered,
        s.pairs,
        s.sent,
        s.sent as f64 / secs.max(1e-9),
        s.rounds,
    );
    if s.unknown > 0 {
        line.push_str(&format!(", {} ports not classified", s.unknown));
    }
    if let (Some(p50), Some(p99)) = (s.rtt_p50, s.rtt_p99) {
        line.push_str(&format!("; rtt p50 {p50:?} p99 {p99:?}"));
    }
    eprintln!("{line}");
    let d = stats.discards();
    let mut parts: Vec<String> = d.nonzero().map(|(k, v)| format!("{k}={v}")).collect();
    let drops = stats.kernel_drops.load(Ordering::Relaxed);
    let failed = stats.send_failed.load(Ordering::Relaxed);
    if drops > 0 {
        parts.push(format!("kernel_drops={drops}"));
    }
    if failed > 0 {
        parts.push(format!("send_failed={failed}"));
    }
    if !parts.is_empty() {
        eprintln!("portscope: discarded: {}", parts.join(" "));
    }
}
