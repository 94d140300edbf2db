//! `cargo xtask soak [--secs S] [--hosts N]`: the service under an hour's mix of clients,
//! compressed into a few minutes, in the lab. The engine daemon and the API run as in the
//! demo ([`Stack`]); a client process in the target namespace runs, at once and for `S`
//! seconds (default 180):
//!
//! - `N` lab hosts (default 12) each scanning itself once per 10 s (POST /v1/fast, then GET
//!   every 2.5 s until complete), each result checked port by port against the lab's
//!   ground truth: 6 scans per host per minute, an hour of a client scanning every 10
//!   minutes compressed 60x;
//! - one host holding slow connections (request heads never finished) up to twice the
//!   per-address cap, replacing each as the API closes or refuses it;
//! - one host sending malformed requests (garbage, long URI, too many headers, oversized
//!   chunked bodies, unknown paths) and checking every answer is a JSON error.
//!
//! The API's resident memory and open file descriptors are read from `/proc` after a
//! warm-up scan and again after the clients stop; the report gives both and their ratio.
//! It fails (exit 1) on any lost or wrong result, any non-JSON error, or descriptors that
//! did not come back to their start. Bounded: the client stops itself at the deadline and
//! is killed by PID 60 s after; the lab (no default route) is torn down on exit.

use crate::http::{connect_from, Timeouts};
use crate::lab::{LabConfig, LabGuard, Truth};
use crate::release::{build_service, workspace_root};
use crate::stack::{ports_of, Stack, StackOptions, API_PORT, FAST_PORTS};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Hidden flag: run as the client inside the target namespace.
pub const CLIENT: &str = "--soak-client";

/// The API's connection limits in the soak (small, so the slow client hits them).
const PER_IP: usize = 16;
const HEADER_SECS: u64 = 2;

/// What the client counted.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Counts {
    /// Scans started (200 on POST).
    pub posted: u64,
    /// Complete and equal to ground truth.
    pub correct: u64,
    /// Complete but different from ground truth.
    pub wrong: u64,
    /// Failed, or not complete within 90 s.
    pub lost: u64,
    /// POSTs or GETs answered 429 (limits doing their job).
    pub limited: u64,
    /// Other requests made by the scanning hosts.
    pub requests: u64,
    /// Slow connections opened.
    pub slow_opened: u64,
    /// ... refused at once by the per-address cap (JSON 429).
    pub slow_refused: u64,
    /// ... closed by the API's header-read timeout.
    pub slow_closed: u64,
    /// Malformed requests sent.
    pub bad_sent: u64,
    /// ... answered with a JSON error.
    pub bad_json: u64,
    /// First few problems, for the report.
    pub problems: Vec<String>,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.posted += o.posted;
        self.correct += o.correct;
        self.wrong += o.wrong;
        self.lost += o.lost;
        self.limited += o.limited;
        self.requests += o.requests;
        self.slow_opened += o.slow_opened;
        self.slow_refused += o.slow_refused;
        self.slow_closed += o.slow_closed;
        self.bad_sent += o.bad_sent;
        self.bad_json += o.bad_json;
        self.problems.extend(o.problems);
        self.problems.truncate(10);
    }
}

/// Resident memory (kB) and open descriptors of a process.
fn sample(pid: u32) -> anyhow::Result<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((rss, fds))
}

/// `cargo xtask soak`'s options.
#[derive(Debug, clap::Parser)]
struct Options {
    /// How long the clients run, in seconds.
    #[arg(long, value_name = "S", default_value_t = 180,
          value_parser = clap::value_parser!(u64).range(10..=1800))]
    secs: u64,
    /// Lab hosts that scan themselves.
    #[arg(long, value_name = "N", default_value_t = 12,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    hosts: u32,
}

/// The options of the client half (`soak client`), given by the driver.
#[derive(Debug, clap::Parser)]
struct ClientOptions {
    /// The lab whose truth to load.
    #[arg(long)]
    lab: String,
    /// When to stop, in seconds from the start.
    #[arg(long)]
    secs: u64,
    /// Lab hosts that scan themselves.
    #[arg(long)]
    hosts: usize,
}

/// Runs the soak; returns the exit code.
pub fn run(args: &[String]) -> anyhow::Result<i32> {
    if args.first().map(String::as_str) == Some(CLIENT) {
        return client(&args[1..]);
    }
    let Options { secs, hosts } = crate::args::parse("soak", args);
    let root = workspace_root();
    let bins = build_service(&root, "soak")?;
    let lab = LabGuard::up(&LabConfig::new(
        format!("soak{}", std::process::id() % 100_000),
        hosts + 2,
    ))?;
    let name = lab.name().to_string();
    let truth = lab.truth().clone();
    let stack = Stack::up_with(
        lab,
        StackOptions {
            api_config: Some(format!(
                "header-read-timeout-secs = {HEADER_SECS}\nidle-timeout-secs = 10\n\
                 max-connections-per-ip = {PER_IP}\n"
            )),
            ..StackOptions::default()
        },
        bins.clone(),
    )?;
    let pid = stack.api_pid().context("API not running")?;
    // Warm-up: one scan (curl from the target namespace), so the start sample has the
    // pools and caches of a working API.
    let warm = truth.hosts[0].addr.to_string();
    let url = format!("{}/v1/fast", stack.url_v4());
    stack.http(&warm, "POST", &url, &[])?;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        let r = stack.http(&warm, "GET", &url, &[])?;
        if r.json()?["status"] == "complete" {
            break;
        }
        if Instant::now() > until {
            bail!("warm-up scan not complete: {}\n{}", r.body, stack.logs());
        }
    }
    let (rss0, fds0) = sample(pid)?;
    eprintln!("soak: {secs} s, {hosts} scanning hosts, 1 slow, 1 malformed; API pid {pid}");
    let mut cmd = stack.lab.target_cmd(bins.join("xtask"));
    cmd.args(["soak", CLIENT, "--lab", &name, "--secs", &secs.to_string()])
        .args(["--hosts", &hosts.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().context("starting the soak client")?;
    let deadline = Instant::now() + Duration::from_secs(secs + 60);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the soak client did not stop in time (killed)");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .context("client stdout")?
        .read_to_string(&mut out)?;
    let counts: Counts = serde_json::from_str(out.trim()).context("client report")?;
    // Closed connections are gone after the header timeout.
    std::thread::sleep(Duration::from_secs(HEADER_SECS + 1));
    let (rss1, fds1) = sample(pid)?;
    println!("soak: {secs} s in the lab, {hosts} scanning hosts + 1 slow + 1 malformed client");
    println!(
        "scans: {} posted, {} correct, {} wrong, {} lost; {} other requests, {} answered 429",
        counts.posted, counts.correct, counts.wrong, counts.lost, counts.requests, counts.limited
    );
    println!(
        "slow connections: {} opened, {} refused at once (429), {} closed by the header timeout",
        counts.slow_opened, counts.slow_refused, counts.slow_closed
    );
    println!(
        "malformed requests: {} sent, {} answered with a JSON error",
        counts.bad_sent, counts.bad_json
    );
    println!(
        "API memory: {rss0} kB -> {rss1} kB (x{:.2}); open fds: {fds0} -> {fds1}",
        rss1 as f64 / rss0.max(1) as f64
    );
    for p in &counts.problems {
        println!("problem: {p}");
    }
    let ok = counts.lost == 0
        && counts.wrong == 0
        && counts.posted > 0
        && counts.bad_json == counts.bad_sent
        && fds1 <= fds0 + 2;
    Ok(if ok { 0 } else { 1 })
}

fn api_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::from([198, 18, 0, 1]), API_PORT)
}

/// One raw request from `src` (the malformed ones: no client writes them); (status, body).
fn call_raw(src: IpAddr, raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut s = connect_from(src, api_addr(), Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(raw)?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no response head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((status, body.to_string()))
}

fn request(method: &str, path: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// `method /v1/fast` from `src`: the body of a 200; a 429 or another answer is counted in
/// `c` (`limited`, `problems`) and gives `None`.
fn fast(src: IpAddr, method: &str, c: &mut Counts) -> Option<String> {
    let timeouts = Timeouts {
        connect: Duration::from_secs(3),
        io: Duration::from_secs(20),
    };
    let url = format!("http://{}/v1/fast", api_addr());
    match crate::http::call(src, timeouts, method, &url, &[]) {
        Ok((200, body)) => Some(body),
        Ok((429, _)) => {
            c.limited += 1;
            None
        }
        Ok((s, b)) => {
            c.problems
                .push(format!("{src}: {method} answered {s}: {b}"));
            None
        }
        Err(e) => {
            c.problems.push(format!("{src}: {method}: {e:#}"));
            None
        }
    }
}

/// One fast self-scan of `src`, polled to the end and checked against the truth.
fn scan_once(truth: &Truth, src: IpAddr, c: &mut Counts) {
    let limited = c.limited;
    if fast(src, "POST", c).is_none() {
        if c.limited > limited {
            std::thread::sleep(Duration::from_secs(5));
        }
        return;
    }
    c.posted += 1;
    let Some(host) = truth.host(src) else {
        c.lost += 1;
        return;
    };
    let (want_open, want_filtered) = host.open_and_filtered(&FAST_PORTS);
    let until = Instant::now() + Duration::from_secs(90);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2500));
        c.requests += 1;
        let Some(body) = fast(src, "GET", c) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        match v["status"].as_str() {
            Some("complete") => {
                if ports_of(&v, "ports_open") == want_open
                    && ports_of(&v, "ports_filtered") == want_filtered
                {
                    c.correct += 1;
                } else {
                    c.wrong += 1;
                    c.problems.push(format!("{src}: wrong result {body}"));
                }
                return;
            }
            Some("failed") => break,
            _ => {}
        }
    }
    c.lost += 1;
    c.problems
        .push(format!("{src}: scan not complete within 90 s"));
}

/// Holds up to `2 x PER_IP` unfinished request heads from `src` until `end`.
fn slow(src: IpAddr, end: Instant) -> Counts {
    let mut c = Counts::default();
    let mut conns: Vec<TcpStream> = Vec::new();
    while Instant::now() < end {
        while conns.len() < 2 * PER_IP {
            let Ok(mut s) = connect_from(src, api_addr(), Duration::from_secs(3)) else {
                break;
            };
            let _ = s.write_all(b"GET /v1/fast HTTP/1.1\r\nHost: api\r\n");
            let _ = s.set_read_timeout(Some(Duration::from_millis(5)));
            c.slow_opened += 1;
            conns.push(s);
        }
        conns.retain_mut(|s| {
            let mut buf = [0u8; 512];
            match s.read(&mut buf) {
                Ok(0) => {
                    c.slow_closed += 1;
                    false
                }
                Ok(n) => {
                    if buf[..n].starts_with(b"HTTP/1.1 429") {
                        c.slow_refused += 1;
                    } else {
                        c.slow_closed += 1;
                    }
                    false
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    true
                }
                Err(_) => {
                    c.slow_closed += 1;
                    false
                }
            }
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    c
}

/// Malformed requests from `src` until `end`, each answer checked to be a JSON error.
fn malformed(src: IpAddr, end: Instant) -> Counts {
    let mut c = Counts::default();
    let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
    let kinds: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        format!("GET /{} HTTP/1.1\r\nHost: api\r\n\r\n", "a".repeat(70_000)).into_bytes(),
        format!(
            "GET / HTTP/1.1\r\nHost: api\r\n{}\r\n",
            (0..150)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
        )
        .into_bytes(),
        format!(
            "POST /v1/fast HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n{}0\r\n\r\n",
            chunk.repeat(20)
        )
        .into_bytes(),
        request("GET", "/nope"),
        request("DELETE", "/v1/deep"),
    ];
    let mut i = 0;
    while Instant::now() < end {
        let raw = &kinds[i % kinds.len()];
        i += 1;
        c.bad_sent += 1;
        match call_raw(src, raw) {
            Ok((s, body)) if s >= 400 => {
                let v: Option<serde_json::Value> = serde_json::from_str(&body).ok();
                if v.as_ref().is_some_and(|v| v["error"].is_string()) {
                    c.bad_json += 1;
                } else {
                    c.problems.push(format!(
                        "malformed #{}: {s} without JSON: {body:.100}",
                        i % kinds.len()
                    ));
                }
            }
            Ok((s, _)) => c
                .problems
                .push(format!("malformed #{}: answered {s}", i % kinds.len())),
            Err(e) => c
                .problems
                .push(format!("malformed #{}: {e}", i % kinds.len())),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    c
}

/// The client half, in the target namespace: prints its [`Counts`] as one JSON line.
fn client(args: &[String]) -> anyhow::Result<i32> {
    let ClientOptions { lab, secs, hosts } = crate::args::parse("soak client", args);
    let truth = Truth::load(&lab)?;
    let v4: Vec<IpAddr> = truth
        .hosts
        .iter()
        .map(|h| h.addr)
        .filter(IpAddr::is_ipv4)
        .collect();
    if v4.len() < hosts + 2 {
        bail!("the lab has {} IPv4 hosts, {} needed", v4.len(), hosts + 2);
    }
    let end = Instant::now() + Duration::from_secs(secs);
    let total = std::thread::scope(|s| {
        let scanners: Vec<_> = v4[..hosts]
            .iter()
            .map(|&ip| {
                let truth = &truth;
                s.spawn(move || {
                    let mut c = Counts::default();
                    while Instant::now() < end {
                        // One scan per 10 s per host: POST + polls stay under the edge
                        // limit (30 per minute per address).
                        let cycle = Instant::now() + Duration::from_secs(10);
                        scan_once(truth, ip, &mut c);
                        std::thread::sleep(cycle.saturating_duration_since(Instant::now()));
                    }
                    c
                })
            })
            .collect();
        let slow_ip = v4[hosts];
        let bad_ip = v4[hosts + 1];
        let slow = s.spawn(move || slow(slow_ip, end));
        let bad = s.spawn(move || malformed(bad_ip, end));
        let mut total = Counts::default();
        for h in scanners.into_iter().chain([slow, bad]) {
            total.add(h.join().unwrap_or_default());
        }
        total
    });
    println!("{}", serde_json::to_string(&total)?);
    Ok(0)
}
