//! The harness the lab test binaries of xtask share: bringing a named lab up (failing, never
//! skipping, without root), reading a namespace's routes with `ip`, and driving the
//! `cargo xtask lab` command line against a lab that is torn down even when a test fails.

#![allow(dead_code)] // each test binary uses its own subset

use std::process::Command;
use xtask::lab::{Expected, Lab, LabConfig, LabGuard, ProbeResult};

/// Brings the lab `cfg` up, or fails the test saying what it needs.
pub fn up_lab(cfg: &LabConfig) -> LabGuard {
    LabGuard::up(cfg)
        .unwrap_or_else(|e| panic!("lab {} up (needs root and netns): {e:#}", cfg.name))
}

/// Asserts a probe saw what the lab's truth says (an address that is not a lab host must
/// stay silent); the truth's answer. `ctx` names the prober in the message.
pub fn assert_probe_matches_truth(lab: &Lab, r: &ProbeResult, ctx: &str) -> Expected {
    let want = lab
        .truth()
        .expected(r.addr.ip(), r.addr.port())
        .unwrap_or(Expected::FilteredSilent);
    assert_eq!(r.outcome.as_expected(), Some(want), "{ctx}: {r:?}");
    want
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

/// The exit code a `CliLab::step` must end with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Exit {
    /// Exactly this code.
    Is(i32),
    /// Any code but 0.
    Fails,
}

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

    /// `xtask lab COMMAND --name <this lab> ARGS`, which must exit as `exit` and print every
    /// one of `wants`; its output.
    pub fn step(&self, command: &str, args: &[&str], exit: Exit, wants: &[&str]) -> String {
        let mut all = vec![command, "--name", &self.0];
        all.extend(args);
        let (code, text) = self.xtask(&all);
        match exit {
            Exit::Is(want) => assert_eq!(code, want, "lab {all:?}: {text}"),
            Exit::Fails => assert_ne!(code, 0, "lab {all:?}: {text}"),
        }
        for want in wants {
            assert!(text.contains(want), "lab {all:?}: no {want:?} in {text}");
        }
        text
    }
}

impl Drop for CliLab {
    fn drop(&mut self) {
        Lab::down_by_name(&self.0);
    }
}
