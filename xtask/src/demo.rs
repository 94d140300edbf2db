//! `cargo xtask demo`: the main job for a new user. Builds the release binaries, brings the
//! lab up, deep-scans a lab host with the CLI (result table, checked against ground truth),
//! then starts the service inside the lab (the engine daemon with CAP_NET_RAW only, the
//! control API as an unprivileged user) and runs the self-scan API's curl quick start from
//! a lab host, so the requester address is the lab host: fast, then deep, polled to the
//! end, printed and checked port by port. Everything stops cleanly and the lab (which has
//! no default route) is taken down. No packet leaves the lab.

use crate::lab::{Expected, LabConfig, LabGuard};
use crate::release::{build_service, workspace_root};
use crate::stack::{ports_of, Stack, StackOptions, FAST_PORTS};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const ALLOW: [&str; 4] = ["--allow", "198.18.0.0/15", "--allow", "2001:2::/48"];
/// The lab host that plays the server checking its own exposure.
const HOST: &str = "198.18.0.2";

/// Runs the demo; returns the exit code.
pub fn run(args: &[String]) -> anyhow::Result<i32> {
    if let Some(a) = args.first() {
        bail!("unknown demo argument {a:?} (usage: cargo xtask demo)");
    }
    let root = workspace_root();
    let bins = build_service(&root, "demo")?;
    let lab = LabGuard::up(&LabConfig {
        name: "demo".into(),
        ..LabConfig::default()
    })?;
    eprintln!(
        "demo: lab up: scanner namespace {} (no default route), targets in {}",
        lab.scanner_ns(),
        lab.target_ns()
    );

    // 1. The operator CLI.
    eprintln!("\ndemo: 1/2 CLI deep scan of {HOST} (all 65,535 ports) from inside the lab:\n");
    let bin = bins.join("portscope");
    let table = lab
        .scanner_cmd(&bin)
        .args([
            "scan",
            HOST,
            "-p",
            "-",
            "--rate",
            "250000",
            "--format",
            "table",
            "--no-progress",
        ])
        .args(ALLOW)
        .status()
        .context("running portscope")?;
    if !table.success() {
        bail!("portscope exited with {table}");
    }
    let mut wrong = verify_cli(&lab, &bin, HOST)?;

    // 2. The service: engine daemon + control API, the seed's curl quick start.
    eprintln!("\ndemo: 2/2 the self-scan API: starting the engine (CAP_NET_RAW only) and the API (user nobody) ...");
    let stack = Stack::up_with(lab, StackOptions::default(), bins)?;
    let (elog, alog) = stack.log_paths();
    eprintln!(
        "demo: the API listens on {} and {} inside namespace {}; engine socket {}; logs {} and {}",
        stack.url_v4(),
        stack.url_v6(),
        stack.lab.scanner_ns(),
        stack.socket().display(),
        elog.display(),
        alog.display()
    );
    for kind in ["fast", "deep"] {
        wrong += quick_start(&stack, kind)?;
    }
    drop(stack);
    eprintln!("\ndemo: engine and API stopped, lab down");
    if wrong == 0 {
        eprintln!("demo: every result matched the lab's ground truth");
        Ok(0)
    } else {
        eprintln!("demo: {wrong} ports differed from the lab's ground truth");
        Ok(1)
    }
}

/// The seed's quick start from the lab host: `curl -X POST .../v1/KIND`, then
/// `curl .../v1/KIND` until the scan is complete or failed. Prints each reply; returns the
/// number of ports that differ from the ground truth.
fn quick_start(stack: &Stack, kind: &str) -> anyhow::Result<usize> {
    let url = format!("{}/v1/{kind}", stack.url_v4());
    eprintln!("\n$ curl -X POST {url}        # on {HOST}");
    let t0 = Instant::now();
    let r = stack.http(HOST, "POST", &url, &[])?;
    println!("{}", r.body.trim());
    if r.status != 200 {
        bail!("POST {url} answered {}: {}", r.status, r.body);
    }
    eprintln!(
        "$ curl {url}                # polled every 2 s (the edge limit is 30 requests a minute)"
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let v = loop {
        std::thread::sleep(Duration::from_millis(2000));
        let r = stack.http(HOST, "GET", &url, &[])?;
        let v = r.json()?;
        match v["status"].as_str() {
            Some("complete") | Some("failed") => break v,
            _ if Instant::now() > deadline => bail!(
                "{kind} scan not finished after 180 s: {v}\n{}",
                stack.logs()
            ),
            _ => eprintln!("   {}", r.body.trim()),
        }
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    eprintln!(
        "demo: {kind} scan: POST to complete in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    if v["status"] != "complete" {
        bail!("{kind} scan failed: {v}");
    }
    let host = stack
        .lab
        .truth()
        .host(HOST.parse()?)
        .context("host in truth")?;
    let scanned: Vec<u16> = if kind == "deep" {
        (1..=65535).collect()
    } else {
        FAST_PORTS.to_vec()
    };
    let (want_open, want_filtered) = host.open_and_filtered(&scanned);
    let wrong = ports_of(&v, "ports_open")
        .symmetric_difference(&want_open)
        .count()
        + ports_of(&v, "ports_filtered")
            .symmetric_difference(&want_filtered)
            .count();
    if wrong == 0 {
        eprintln!(
            "demo: {kind} scan of {HOST}: open and filtered ports match the lab's ground truth"
        );
    }
    Ok(wrong)
}

/// Scans `target` with the CLI as NDJSON (closed shown) and compares every port with the
/// ground truth. Returns the number of wrong ports.
fn verify_cli(lab: &LabGuard, bin: &Path, target: &str) -> anyhow::Result<usize> {
    let out = lab
        .scanner_cmd(bin)
        .args([
            "scan",
            target,
            "-p",
            "-",
            "--rate",
            "250000",
            "--format",
            "ndjson",
            "--show",
            "closed",
            "--no-progress",
        ])
        .args(ALLOW)
        .stderr(Stdio::null())
        .output()
        .context("running portscope")?;
    let addr: IpAddr = target.parse()?;
    let host = lab.truth().host(addr).context("target not in truth")?;
    let mut got: HashMap<u16, String> = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let port = v["port"].as_u64().context("port")? as u16;
        got.insert(port, v["state"].as_str().unwrap_or("").to_string());
    }
    let wrong = (1..=65535u16)
        .filter(|p| {
            let want = match host.expected(*p) {
                Expected::Open => "open",
                Expected::Closed => "closed",
                Expected::FilteredSilent | Expected::FilteredIcmp => "filtered",
            };
            got.get(p).map(String::as_str) != Some(want)
        })
        .count();
    if wrong == 0 {
        eprintln!("demo: {target}: all 65,535 ports match the lab's ground truth");
    } else {
        eprintln!("demo: {target}: {wrong} ports differ from the lab's ground truth");
    }
    Ok(wrong)
}
