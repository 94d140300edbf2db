//! `cargo xtask demo`: the main job for a new user. Builds the release scanner, brings the
//! lab up, deep-scans a lab host (all 65,535 ports, IPv4 and IPv6) from inside the lab's
//! scanner namespace, prints the result table, checks every port against the lab's ground
//! truth, and takes the lab down again. No packet leaves the lab: it has no default route.

use crate::lab::{Expected, LabConfig, LabGuard};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const ALLOW: [&str; 4] = ["--allow", "198.18.0.0/15", "--allow", "2001:2::/48"];

/// Runs the demo; returns the exit code.
pub fn run(args: &[String]) -> anyhow::Result<i32> {
    let keep = args.iter().any(|a| a == "--keep");
    if let Some(a) = args.iter().find(|a| *a != "--keep") {
        bail!("unknown demo flag {a:?} (usage: cargo xtask demo [--keep])");
    }
    let root = workspace_root();
    eprintln!("demo: building the release scanner ...");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "portscope",
            "-p",
            "xtask",
        ])
        .current_dir(&root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let bin = root.join("target/release/portscope");
    let lab = LabGuard::up(&LabConfig {
        name: "demo".into(),
        ..LabConfig::default()
    })?;
    eprintln!(
        "demo: lab up: scanner namespace {} (no default route), targets in {}",
        lab.scanner_ns(),
        lab.target_ns()
    );
    let mut mismatches = 0;
    for target in ["198.18.0.2", "2001:2::2"] {
        eprintln!("\ndemo: deep scan of {target} (all 65,535 ports) from inside the lab:\n");
        let table = lab
            .scanner_cmd(&bin)
            .args([
                "scan",
                target,
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
        mismatches += verify(&lab, &bin, target)?;
    }
    if keep {
        std::mem::forget(lab);
        eprintln!("\ndemo: lab kept; take it down with `cargo xtask lab down --name demo`");
    }
    Ok(if mismatches == 0 { 0 } else { 1 })
}

/// Scans `target` again as NDJSON with closed ports shown and compares every port with the
/// ground truth. Returns the number of wrong ports.
fn verify(lab: &LabGuard, bin: &PathBuf, target: &str) -> anyhow::Result<usize> {
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

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
