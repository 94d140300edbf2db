//! What the tasks that run the release binaries (demo, soak, bench) share: the workspace
//! root, `cargo build --release` of the packages they drive, and the clock and load figures
//! their reports open with, and writing those reports.

use anyhow::{bail, Context};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// The workspace's root directory (xtask's parent).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `cargo build --release --quiet ARGS` in `root` (with the `cargo` running this task, if
/// any); fails unless the build succeeds.
pub fn cargo_build_release(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--quiet"])
        .args(args)
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

/// Builds what the service tasks run (the CLI and engine, the API, and xtask itself for the
/// clients in the lab), saying so as `task`; returns the directory of the binaries.
pub fn build_service(root: &Path, task: &str) -> anyhow::Result<PathBuf> {
    eprintln!("{task}: building the release binaries ...");
    cargo_build_release(
        root,
        &[
            "-p",
            "portscope",
            "-p",
            "portscope-control-api",
            "-p",
            "xtask",
        ],
    )?;
    Ok(root.join("target/release"))
}

/// Prints a report's `text` and writes the report as pretty JSON to `json`, saying so as
/// `task`.
pub fn publish(task: &str, text: &str, json: &Path, report: &impl Serialize) -> anyhow::Result<()> {
    print!("{text}");
    std::fs::write(json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    eprintln!("{task}: wrote {}", json.display());
    Ok(())
}

/// Wall-clock now in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The first three fields of `/proc/loadavg` (empty if it cannot be read): other work on the
/// machine skews a benchmark's numbers.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The CPUs this process may run on (1 if unknown).
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
