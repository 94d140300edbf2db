//! The harness the lab test binaries of xtask share: bringing a named lab up (failing, never
//! skipping, without root), reading a namespace's routes with `ip`, and driving the
//! `cargo xtask lab` command line against a lab that is torn down even when a test fails.

#![allow(dead_code)] // each test binary uses its own subset

use std::process::Command;
use xtask::lab::{Lab, LabConfig, LabGuard};

/// Brings the lab `cfg` up, or fails the test saying what it needs.
pub fn up_lab(cfg: &LabConfig) -> LabGuard {
    LabGuard::up(cfg)
        .unwrap_or_else(|e| panic!("lab {} up (needs root and netns): {e:#}", cfg.name))
}

/// Routes of both families in every table of `ns`, read with `ip` directly.
pub fn all_routes(ns: &str) -> String {
    let mut text = String::new();
    for family in ["-4", "-6"] {
        let out = Command::new("ip")
            .args(["-n", ns, family, "route", "show", "table", "all"])
            .output()
            .unwrap();
        assert!(out.status.success(), "ip route in {ns}: {out:?}");
        text += &String::from_utf8(out.stdout).unwrap();
    }
    text
}

/// A lab driven through the `xtask lab` command line; torn down on drop, so an assertion
/// failing half way leaves nothing behind.
pub struct CliLab(pub String);

impl CliLab {
    /// `xtask lab ARGS`: its exit code (-1 if killed) and stdout followed by stderr.
    pub fn xtask(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .arg("lab")
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    }
}

impl Drop for CliLab {
    fn drop(&mut self) {
        Lab::down_by_name(&self.0);
    }
}
