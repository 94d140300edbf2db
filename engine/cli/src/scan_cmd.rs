//! `portscope scan`: resolves the inputs, checks them (exit 64 before any socket is opened),
//! opens the raw sockets, drops privileges, runs the scan and writes every output.
//!
//! SIGINT, SIGTERM and SIGHUP all stop a scan the same clean way: the engine is asked to
//! cancel, answers already received are written, every output is completed, unanswered
//! ports are not reported as filtered, a resume file is saved, and the exit code is
//! 128 + the signal number.

use crate::args::{ScanArgs, Show};
use crate::guard::{rate_limit_lines, ProxyGuard};
use crate::output::{self, Format, HostFlag, ReportFilter, ScanEnd, ScanMeta, Tee, Times};
use crate::progress::Live;
use crate::resume::{Resolved, ResumeFile, DEFAULT_FILE};
use crate::{note, open_sockets, send_path, Refusal};
use anyhow::{bail, Context, Result};
use portscope_core::policy::TargetPolicy;
use portscope_core::results::{PortResult, PortState};
use portscope_core::targets::parse_net;
use portscope_engine::{
    default_send_threads, pick_cpus, wire_cpus, Engine, EngineConfig, Outcome, PlanLimits,
    RetryPolicy, ScanEvent, ScanPlan, ScanRequest, ScanSummary, SubmitError, MIN_RETRIES,
};
use portscope_transport::sys;
use portscope_transport::{privs, PacketSource};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The signals that stop a scan cleanly.
const STOP_SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
];

/// How long the result loop blocks when nothing is ready and no line waits to be flushed.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Results handled in a burst between two looks at the clock.
const CLOCK_EVERY: u32 = 256;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(Refusal::Usage(e.to_string()))
}

/// Runs `portscope scan`; `argv` is the whole command line (saved in a resume file).
pub(crate) fn run(args: ScanArgs, argv: Vec<String>) -> Result<ExitCode> {
    if std::env::var_os("RUST_LOG").is_some() {
        // Diagnostics only: the engine's tracing events (e.g. `portscope_runtime=debug`,
        // one line per retry round and rate change) go to stderr.
        portscope_daemon::init_logging();
    }
    let resumed = args.resume.is_some();
    let (args, argv, scan, answered) = match &args.resume {
        Some(path) => {
            let file = ResumeFile::load(path).map_err(usage)?;
            let mut saved = saved_args(&file.argv)?;
            saved.no_progress |= args.no_progress;
            saved.stats_every = args.stats_every.or(saved.stats_every);
            saved.resume_file = Some(path.clone());
            (saved, file.argv, file.scan, file.results)
        }
        None => {
            let scan = Resolved::from_args(&args).map_err(usage)?;
            (args, argv, scan, Vec::new())
        }
    };
    let mut policy = TargetPolicy::default_deny();
    for a in &args.allow {
        policy.allow(parse_net(a).map_err(usage)?);
    }
    let request = ScanRequest {
        targets: scan.targets.clone(),
        ports: scan.ports.clone(),
        exclude: scan.exclude.clone(),
        rate: args.rate,
        retries: args.retries.unwrap_or(MIN_RETRIES).min(args.max_retries),
        max_wait: args.max_wait,
        min_wait: args.min_wait,
        source_port: args.source_port,
    };
    // Policy first, routes second: a refused target is refused the same way whether or not
    // this machine has a route to it, and a dry run only says when there is none.
    let dry_route = |ip: std::net::IpAddr| {
        Ok(sys::route_source(ip).unwrap_or(match ip {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        }))
    };
    // Refuse before touching any socket: a refused target never costs a packet, and the
    // size is counted without overflow before the policy and the routes are asked.
    let limits = || PlanLimits {
        policy: &policy,
        max_pairs: portscope_core::targets::MAX_PAIRS,
    };
    for cpu in [args.send_cpu, args.recv_cpu].into_iter().flatten() {
        if !sys::allowed_cpus().is_ok_and(|c| c.contains(&cpu)) {
            return Err(usage(format!(
                "CPU {cpu} is not one this process may run on"
            )));
        }
    }
    let retry = retry_policy(args.retries, args.max_retries).map_err(usage)?;
    let mut plan = request.plan_within(limits(), &dry_route).map_err(usage)?;
    plan.retries = retry;
    if args.dry_run {
        print_dry_run(&plan, &args, answered.len());
        return Ok(ExitCode::SUCCESS);
    }
    let mut plan = request
        .plan_within(limits(), &sys::route_source)
        .map_err(usage)?;
    plan.retries = retry;

    let (send_cpu, recv_cpu) = pick_cpus(args.send_cpu, args.recv_cpu);
    let send_threads = args
        .send_threads
        .map_or_else(default_send_threads, usize::from);
    let wire_cpus = wire_cpus(send_cpu, send_threads);
    // The ring is sized for this scan: every pair of the first round can answer once.
    let pairs = plan.targets.len().saturating_mul(plan.ports.len() as u64);
    let (via, _) = send_path::choose(&args, plan.targets.ranges());
    let (sinks, source) = open_sockets(
        args.interface.clone(),
        args.source_port,
        args.rx_ring,
        via,
        Some(pairs),
        send_threads,
    )?;
    if let Some(e) = source.ring_error() {
        note(&format!("portscope: no receive ring ({e}), using recvmmsg"));
    }
    privs::drop_all_but_net_raw().context("dropping capabilities")?;

    // From here on a stop signal is only noted; the loop below acts on it, so even one that
    // arrives before the first probe leaves complete outputs.
    let caught = Arc::new(AtomicUsize::new(0));
    for sig in STOP_SIGNALS {
        signal_hook::flag::register_usize(sig, Arc::clone(&caught), sig as usize)
            .context("installing the signal handlers")?;
    }
    let mut out = open_outputs(&args)?;
    let meta = ScanMeta {
        args: argv.join(" "),
        start_unix: unix_now(),
        ports: plan.ports.len(),
        port_spec: scan.ports.clone(),
        targets: plan.targets.len(),
        version: env!("CARGO_PKG_VERSION"),
    };
    let engine = Engine::start_sending_on(
        sinks,
        Box::new(source) as Box<dyn PacketSource>,
        EngineConfig {
            max_rate: args.rate,
            policy,
            probe_ttl: args.ttl,
            send_cpu,
            recv_cpu,
            wire_cpus,
            ..EngineConfig::default()
        },
    );
    let started = Instant::now();
    let ports_per_host = plan.ports.len();
    let mut handle = engine
        .submit_preseeded(plan, answered)
        .map_err(|e| match e {
            SubmitError::Policy(p) => usage(p),
            other => anyhow::Error::new(other),
        })?;

    out.begin(&meta);
    let mut live = Live::new(args.no_progress, args.stats_every, args.max_wait);
    let mut guard = ProxyGuard::new(ports_per_host);
    let mut answers: Vec<PortResult> = Vec::new();
    let mut open = 0u64;
    let mut summary: Option<ScanSummary> = None;
    let mut stopped_by = 0usize;
    // Lines are buffered and flushed once the oldest has waited `FLUSH_EVERY`: one write
    // per batch of lines, not one per line. The clock is read when nothing is ready and
    // every `CLOCK_EVERY` results of a burst, not for every result.
    let mut unflushed: Option<Instant> = None;
    let mut burst = 0u32;
    while summary.is_none() {
        let sig = caught.load(Ordering::SeqCst);
        if sig != 0 && stopped_by == 0 {
            stopped_by = sig;
            handle.cancel();
            if sig == signal_hook::consts::SIGHUP as usize {
                live.hide();
            }
        }
        let p = handle.progress();
        let mut event = handle.next_event(Duration::ZERO);
        burst += 1;
        if event.is_none() || burst >= CLOCK_EVERY {
            burst = 0;
            let now = Instant::now();
            if unflushed.is_some_and(|t| now >= t + output::FLUSH_EVERY) {
                out.flush();
                unflushed = None;
            }
            live.tick(&p, open);
            if event.is_none() {
                let wait = unflushed.map_or(IDLE_WAIT, |t| {
                    (t + output::FLUSH_EVERY).saturating_duration_since(now)
                });
                event = handle.next_event(wait);
            }
        }
        match event {
            Some(ScanEvent::Port(r)) => {
                unflushed.get_or_insert_with(Instant::now);
                if r.state == PortState::Open {
                    open += 1;
                }
                if r.reason != portscope_core::results::Reason::NoResponse {
                    answers.push(r.clone());
                }
                let share = first_round_share(p.sent, p.pairs);
                if r.state == PortState::Open {
                    // The table prints open ports as found: keep them off the progress line.
                    live.suspend(|| guard.result(r, share, &mut out));
                } else {
                    guard.result(r, share, &mut out);
                }
            }
            Some(ScanEvent::Finished(s)) => summary = Some(s),
            None => {}
        }
    }
    live.finish();
    let summary = summary.expect("loop ends with a summary");
    let interrupted = summary.outcome == Outcome::Cancelled;
    let p = handle.progress();
    let share = if interrupted {
        first_round_share(p.sent, p.pairs)
    } else {
        1.0
    };
    let flags = guard.finish(share, &mut out);
    out.end(&ScanEnd {
        start_unix: meta.start_unix,
        end_unix: unix_now(),
        elapsed_secs: started.elapsed().as_secs_f64(),
        interrupted,
        times: times(&summary, args.max_wait),
    });
    let rate_limits = rate_limit_lines(handle.answers_by_round(), handle.answer_spans_by_round());
    print_summary(&summary, &engine, &flags, &rate_limits);
    for f in out.failures() {
        note(&format!("portscope: output failed: {f}"));
    }
    let resume_path = args
        .resume_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FILE));
    if interrupted {
        let file = ResumeFile::new(argv, scan, answers);
        match file.save(&resume_path) {
            Ok(()) => note(&format!(
                "portscope: saved {} answers to {}; finish with: portscope scan --resume {}",
                file.results.len(),
                resume_path.display(),
                resume_path.display()
            )),
            Err(e) => note(&format!(
                "portscope: could not save {}: {e}",
                resume_path.display()
            )),
        }
        let sig = if stopped_by == 0 {
            signal_hook::consts::SIGINT as usize
        } else {
            stopped_by
        };
        return Ok(ExitCode::from(128 + sig as u8));
    }
    if resumed {
        // The scan it saved is finished now.
        let _ = std::fs::remove_file(&resume_path);
    }
    let failed = engine.stats().send_failed.load(Ordering::Relaxed);
    if failed > 0 && failed == summary.sent {
        bail!("the kernel refused every probe (no route to the targets?)");
    }
    Ok(ExitCode::SUCCESS)
}

/// The scan arguments saved in a resume file's command line.
fn saved_args(argv: &[String]) -> Result<ScanArgs> {
    let argv = crate::args::rewrite_nmap_flags(argv.to_vec()).map_err(usage)?;
    let cli = <crate::args::Cli as clap::Parser>::try_parse_from(argv)
        .map_err(|e| usage(format!("the resume file's command line: {e}")))?;
    match cli.command {
        crate::args::Command::Scan(a) if a.resume.is_none() => Ok(*a),
        _ => Err(usage("the resume file does not hold a scan command line")),
    }
}

/// Share of the first round sent, 0.0 to 1.0.
fn first_round_share(sent: u64, pairs: u64) -> f64 {
    (sent.min(pairs) as f64 / pairs.max(1) as f64).min(1.0)
}

/// nmap's `<times>` from the measured RTT.
fn times(s: &ScanSummary, max_wait: Duration) -> Option<Times> {
    let p50 = s.rtt_p50?;
    let p99 = s.rtt_p99.unwrap_or(p50);
    Some(Times {
        srtt_us: p50.as_micros() as u64,
        rttvar_us: p99.saturating_sub(p50).as_micros() as u64,
        timeout_us: (2 * p99 + p50).min(max_wait).as_micros() as u64,
    })
}

/// Standard output (or `-o FILE`) in `--format`, plus every `-oX`-style file.
fn open_outputs(args: &ScanArgs) -> Result<Tee> {
    let filter = ReportFilter {
        show_closed: args.show.contains(&Show::Closed),
    };
    let format = args.format.unwrap_or(
        if std::io::stdout().is_terminal() && args.output.is_none() {
            Format::Table
        } else {
            Format::Ndjson
        },
    );
    let create = |path: &PathBuf| -> Result<Box<dyn Write + Send>> {
        Ok(Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ))
    };
    let mut tee = Tee::new();
    match &args.output {
        Some(path) => tee.add(
            path.display().to_string(),
            output::new_report(format, filter, create(path)?),
        ),
        None => tee.add(
            "stdout".into(),
            output::new_report(format, filter, Box::new(std::io::stdout())),
        ),
    }
    for (f, path) in args.extra_outputs() {
        tee.add(
            path.display().to_string(),
            output::new_report(f, filter, create(&path)?),
        );
    }
    Ok(tee)
}

/// `--dry-run`: what would be probed, on stdout. Nothing is opened or sent.
fn print_dry_run(plan: &ScanPlan, args: &ScanArgs, answered: usize) {
    let ranges: Vec<String> = plan
        .targets
        .ranges()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let pairs = plan.targets.len() * plan.ports.len();
    let ports = plan.ports.as_slice();
    let spec = crate::inputs::port_spec(
        Some(
            &ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        None,
        None,
    )
    .unwrap_or_default();
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "# portscope dry run: nothing is sent");
    let _ = writeln!(
        o,
        "targets: {} address(es): {}",
        plan.targets.len(),
        ranges.join(", ")
    );
    let _ = writeln!(o, "ports: {} port(s): {spec}", plan.ports.len());
    for (family, src) in [("ipv4", plan.sources.v4), ("ipv6", plan.sources.v6)] {
        match src {
            Some(s) if s.is_unspecified() => {
                let _ = writeln!(o, "source {family}: none (no route to the targets)");
            }
            Some(s) => {
                let _ = writeln!(o, "source {family}: {s}");
            }
            None => {}
        }
    }
    let (_, path) = send_path::choose(args, plan.targets.ranges());
    let _ = writeln!(o, "send: {path}");
    let _ = match plan.source_port {
        Some(p) => writeln!(o, "source port: {p} (every probe and retry)"),
        None => writeln!(o, "source port: one per round, from 61440-65535"),
    };
    let _ = writeln!(
        o,
        "probes: {pairs} in the first round{}, {} for silent ports, at {} per second (first round about {:.1}s)",
        if answered > 0 {
            format!(" less {answered} already answered")
        } else {
            String::new()
        },
        match plan.retries {
            RetryPolicy::Fixed(n) => format!("{n} retry round(s)"),
            RetryPolicy::Adaptive { min, max } =>
                format!("{min} to {max} retry rounds (as the measured loss asks)"),
        },
        args.rate,
        pairs.saturating_sub(answered as u64) as f64 / args.rate.max(1) as f64
    );
    let _ = writeln!(o, "policy: every target is allowed");
}

/// `--retries N` is a fixed count; without it, adaptive up to `--max-retries`.
fn retry_policy(retries: Option<u8>, max: u8) -> Result<RetryPolicy, String> {
    let limit = portscope_engine::MAX_RETRIES;
    match retries {
        Some(n) if n > limit => Err(format!("--retries {n} is too many: at most {limit}")),
        Some(n) => Ok(RetryPolicy::Fixed(n)),
        None if max > limit => Err(format!("--max-retries {max} is too many: at most {limit}")),
        None => Ok(RetryPolicy::Adaptive {
            min: MIN_RETRIES.min(max),
            max,
        }),
    }
}

fn print_summary(s: &ScanSummary, engine: &Engine, flags: &[HostFlag], rate_limits: &[String]) {
    let stats = engine.stats();
    let secs = s.elapsed.as_secs_f64();
    let withheld: u64 = flags.iter().map(|f| f.open_answers).sum();
    let mut line = format!(
        "portscope: {} in {:.3}s: {} open, {} closed, {} filtered of {} ports; {} probes sent ({:.0}/s) in {} round(s)",
        match s.outcome {
            Outcome::Complete => "done",
            Outcome::Cancelled => "interrupted",
        },
        secs,
        s.open - withheld.min(s.open),
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
    if let Some(q) = s.est_loss {
        line.push_str(&format!("; estimated loss per try {:.2}%", q * 100.0));
    }
    if let (Some(p50), Some(p99)) = (s.rtt_p50, s.rtt_p99) {
        line.push_str(&format!("; rtt p50 {p50:?} p99 {p99:?}"));
    }
    note(&line);
    for f in flags {
        note(&format!(
            "portscope: flagged {}: {}",
            f.flag.as_str(),
            f.describe()
        ));
    }
    for l in rate_limits {
        note(&format!("portscope: {l}"));
    }
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
        note(&format!("portscope: discarded: {}", parts.join(" ")));
    }
}
