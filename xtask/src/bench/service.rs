//! `cargo xtask bench --service`: the self-scan API's own figures (issue 3), measured end to end in the lab: POST-to-complete times, 100 concurrent deep scans, API latency under load.
//!
//! The engine daemon and the control API run in the lab's scanner namespace (`Stack`), with
//! the engine's metrics on 127.0.0.1:9464 of that namespace. Every client is an *agent*: this
//! program re-executed inside the target namespace (`xtask bench --service-agent`), which
//! issues the HTTP requests the parent asks for over its stdin, each bound to a lab host
//! address (so the requester the API sees is that lab host), times them with its own
//! monotonic clock, and also runs the webhook receiver (on 198.19.255.254:9999, an address no
//! scan targets). A scan's POST-to-complete time is the agent's time of the webhook's arrival
//! minus the time the POST's response was read: no polling granularity.
//!
//! Phases, in one run:
//! 1. fast and deep scans from 198.18.0.2, one at a time, `--repeats` times each (the API is
//!    restarted between deep scans: its 1-deep-scan-per-IP-per-5-minutes counter lives in
//!    memory);
//! 2. one deep scan alone from an extra host (the single-scan rate), then `--concurrent`
//!    deep scans at once from as many extra hosts, engine `--max-running` at its default;
//! 3. `--concurrent` more deep scans from other hosts while every scanning host polls (GET)
//!    and re-POSTs (joining its live scan) and `--pollers` more addresses poll, each address
//!    at most 28 requests a minute (the edge limit is 30): latency in `hdrhistogram`s;
//! 4. (unless `--skip-extra`) the concurrent burst again with `--max-running-alt`, and once
//!    with the engine's default queue (`--max-queued 64`) to count the scans it refuses.
//!
//! Every host is its own "ASN" (`--asn-table`), so the per-ASN deep limit (200 an hour) does
//! not throttle the bench. Probes are the engine's `portscope_engine_probes_sent_total`.
//!
//! **Network safety:** everything runs in the lab's namespaces (no default route); the agent
//! refuses any API or listen address outside the lab's 198.18.0.0/15; every request, wait and
//! child process is bounded; only processes started here are stopped, by PID; the labs are
//! torn down on every exit path (`LabGuard`, `Stack` and `Agent` drop in that order).
//!
//! One module per job: `options` (flags), `agent` (the in-namespace agent, its line protocol
//! and its requests, made with `crate::http`: ureq bound to the lab host address), `webhook`
//! (its webhook receiver), `handle` (the parent's side of the agent), `metrics` (Prometheus
//! and softnet parsing; the timeline is sampled by `measure::sample_during`), `session` (the
//! lab, the stack and the agent), `phases` and `load` (the phase drivers), `results` (what is recorded),
//! `render` (the table). The bench's constants are here; each module imports what it uses
//! from its siblings.

mod agent;
mod handle;
mod load;
mod metrics;
mod options;
mod phases;
mod render;
mod results;
mod session;
#[cfg(test)]
mod tests;
mod webhook;

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;

use crate::release::{cargo_build_release, cpus, loadavg, publish, unix_now, workspace_root};
use crate::stack::FAST_PORTS;

use crate::lab::truth;
use crate::stack::API_PORT;

pub use self::agent::agent;
use self::options::Options;
use self::phases::{burst, main_lab, phase1};
use self::render::{notes, render, rows};
use self::results::Report;
use self::session::{hosts, Session};

/// The hidden flag that turns `xtask bench` into the in-namespace agent.
pub const AGENT: &str = "--service-agent";

/// The engine's `--max-running` default (engine/cli/src/engine_cmd.rs).
const ENGINE_MAX_RUNNING_DEFAULT: u32 = 8;
/// The engine's `--max-queued` default.
const ENGINE_MAX_QUEUED_DEFAULT: u32 = 64;
/// Queue length for the main runs: every concurrent scan is accepted.
const MAX_QUEUED: u32 = 1024;
/// The rate `Stack` gives the engine (its global ceiling and each chunk's rate).
const ENGINE_RATE: u64 = 250_000;
/// The engine's own `--rate` default.
const ENGINE_DEFAULT_RATE: u64 = 10_000;
/// The engine's metrics endpoint inside the scanner namespace.
const METRICS_LISTEN: &str = "127.0.0.1:9464";
/// The API inside the scanner namespace (`Stack::url_v4`).
const API_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), API_PORT);
/// The webhook receiver's port, on the lab's last extra host (which no scan targets).
const HOOK_PORT: u16 = 9999;
/// The host of phase 1 (the lab's primary target).
const HOST: Ipv4Addr = truth::TARGET_V4;
/// Pause between single scans.
const SETTLE: Duration = Duration::from_millis(1000);
/// Time between two requests of one load client: at most 28 a minute (edge limit 30).
const LOAD_INTERVAL: Duration = Duration::from_millis(2200);
/// Bounds on waiting.
const FAST_LIMIT: Duration = Duration::from_secs(90);
const DEEP_LIMIT: Duration = Duration::from_secs(300);
const BURST_LIMIT: Duration = Duration::from_secs(1200);
/// Longest wait for one request's reply from the agent (its own socket timeouts are shorter).
const REQUEST_LIMIT: Duration = Duration::from_secs(40);
/// The agent's socket timeouts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Idle GETs before the load phase (at most one per poller address).
const IDLE_REQUESTS: usize = 100;

/// `cargo xtask bench --service`; `args` without `--service`.
pub fn run(args: &[String]) -> anyhow::Result<i32> {
    let opts: Options = crate::args::parse("bench --service", args);
    opts.check()?;
    let root = workspace_root();
    let out_dir = root.join("target/bench");
    let logs = out_dir.join("service");
    fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let bins = match &opts.bins {
        Some(dir) => dir.clone(),
        None => {
            eprintln!("bench --service: building the release binaries ...");
            cargo_build_release(&root, &["-p", "portscope", "-p", "portscope-control-api"])?;
            root.join("target/release")
        }
    };
    let (loadavg_before, cpus) = (loadavg(), cpus());

    // Main lab: phase 1 on 198.18.0.2; extra hosts 1..=N burst, N+1 single, N+2..=2N+1 load
    // scans, then the pollers, then the webhook receiver.
    let n = opts.concurrent;
    // Lab names unique to this run (two benches at once must not share a lab).
    let lab = |k: u32| format!("bs{:05}{k}", std::process::id() % 100_000);
    let (one, single, main_burst, load) = {
        let mut s = Session::open(&lab(1), opts.main_lab_hosts(), &[], &bins, &logs)?;
        let agent = s.agent.as_ref().context("the agent is gone")?;
        main_lab(&mut s.stack, agent, &opts)?
    };
    let mut bursts = vec![main_burst];
    let mut default_rate = None;
    if !opts.skip_extra {
        let alt = opts.max_running_alt.to_string();
        let s = Session::open(&lab(2), n + 1, &["--max-running", &alt], &bins, &logs)?;
        eprintln!("bench --service: {n} deep scans at once, engine --max-running {alt}");
        bursts.push(burst(
            &s.stack,
            s.agent()?,
            &hosts(1, n),
            "alt",
            &format!("max-running {alt}"),
            opts.max_running_alt,
            MAX_QUEUED,
        )?);
        drop(s);

        let queued = ENGINE_MAX_QUEUED_DEFAULT.to_string();
        let s = Session::open(&lab(3), n + 1, &["--max-queued", &queued], &bins, &logs)?;
        eprintln!(
            "bench --service: {n} deep scans at once, engine defaults (--max-queued {queued})"
        );
        let agent = s.agent()?;
        let mut b = burst(
            &s.stack,
            agent,
            &hosts(1, n),
            "dq",
            "engine defaults (max-queued 64)",
            ENGINE_MAX_RUNNING_DEFAULT,
            ENGINE_MAX_QUEUED_DEFAULT,
        )?;
        // A refused host asks again at once.
        if let Some(r) = b.runs.iter().find(|r| r.post_status != 200) {
            let src: Ipv4Addr = r.src.parse()?;
            let again = agent.request(src, "POST", "/v1/deep", None);
            b.note = Some(format!(
                "{} of {} POSTs refused; {src} POSTing again at once gets: {}",
                b.scans - b.accepted,
                b.scans,
                again.outcome()
            ));
        }
        bursts.push(b);
        drop(s);

        let rate = ENGINE_DEFAULT_RATE.to_string();
        let mut s = Session::open(&lab(4), 1, &["--rate", &rate], &bins, &logs)?;
        eprintln!(
            "bench --service: fast and deep scans from {HOST} at the engine's default --rate {rate}"
        );
        let agent = s.agent.as_ref().context("the agent is gone")?;
        default_rate = Some(phase1(&mut s.stack, agent, opts.repeats)?);
        drop(s);
    }

    let report = Report {
        generated_unix: unix_now(),
        cpus,
        loadavg_before,
        engine_rate_pps: ENGINE_RATE,
        engine_max_running_default: ENGINE_MAX_RUNNING_DEFAULT,
        engine_max_queued_default: ENGINE_MAX_QUEUED_DEFAULT,
        engine_chunks_in_flight: 4,
        deep_chunks: 32,
        options: BTreeMap::from([
            ("repeats".into(), opts.repeats.to_string()),
            ("concurrent".into(), opts.concurrent.to_string()),
            ("pollers".into(), opts.pollers.to_string()),
            ("max_running_alt".into(), opts.max_running_alt.to_string()),
            ("skip_extra".into(), opts.skip_extra.to_string()),
        ]),
        rows: rows(&one, default_rate.as_ref(), &single, &bursts, &load, cpus),
        notes: notes(&opts, cpus),
        phase1: one,
        default_rate,
        single,
        bursts,
        load,
    };
    publish(
        "bench --service",
        &render(&report),
        &out_dir.join("service.json"),
        &report,
    )?;
    Ok(0)
}
