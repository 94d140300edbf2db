//! The harness the lab test binaries of the `portscope` CLI share: one lab per test named after
//! the process, one scan at a time, the real binary run under a hard deadline, and its
//! ndjson results read and checked against the lab's ground truth.

#![allow(dead_code)] // each test binary uses its own subset

use portscope_core::results::{PortResult, PortState, Reason};
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use xtask::lab::{Expected, HostTruth, LabConfig, LabGuard};

/// One scan at a time: parallel scans on two cores would measure contention, not us.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the one-scan-at-a-time lock until dropped.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub const ALLOW: [&str; 4] = ["--allow", "198.18.0.0/15", "--allow", "2001:2::/48"];

/// All ports of 198.18.0.2 at 250,000 probes a second, far above a target that rate-limits
/// its RSTs to 20,000 a second: one retry more than the default leaves room for a
/// descheduled send thread on a busy two-core machine.
pub const RST_LIMITED_SCAN: [&str; 7] = [
    "198.18.0.2",
    "-p",
    "-",
    "--rate",
    "250000",
    "--retries",
    "3",
];

/// A lab named `prefix` + this process + `tag`, so parallel test binaries never collide.
pub fn lab_named(prefix: &str, tag: &str, cfg: LabConfig) -> LabGuard {
    let name = format!("{prefix}{}{}", std::process::id() % 10_000, tag);
    LabGuard::up(&LabConfig { name, ..cfg }).expect("bring the lab up (needs root)")
}

pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with a hard deadline; kills (only) that child on timeout.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Run {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    finish(&mut child, limit)
}

/// Collects a child spawned with piped stdout and stderr; kills (only) it after `limit`.
pub fn finish(child: &mut Child, limit: Duration) -> Run {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("command exceeded {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    }
}

/// Asserts that the scanner exited 0, showing its stderr when not.
pub fn ok(r: &Run) {
    assert!(
        r.status.success(),
        "portscope failed: {}\n{}",
        r.status,
        r.stderr
    );
}

pub fn parse_ndjson(text: &str) -> Vec<PortResult> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad ndjson line {l:?}: {e}")))
        .collect()
}

/// The lab's ground truth for one address.
pub fn truth_of(lab: &LabGuard, addr: &str) -> HostTruth {
    lab.0
        .truth()
        .host(addr.parse().unwrap())
        .expect("address is a lab host")
        .clone()
}

/// The MAC address of the target's end of the lab's veth (the next hop for `--router-mac`).
pub fn target_mac(lab: &LabGuard) -> String {
    let out = Command::new("ip")
        .args(["-n", lab.0.target_ns(), "link", "show", lab.0.target_if()])
        .output()
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("the target's MAC")
        .to_owned()
}

/// Every result of an interrupted scan is a true answer for `host` (never a guessed
/// no-response).
pub fn assert_true_answers(host: &HostTruth, results: &[PortResult]) {
    for r in results {
        assert_ne!(
            r.reason,
            Reason::NoResponse,
            "an interrupted scan does not guess filtered"
        );
        let ok = matches!(
            (host.expected(r.port), r.state),
            (Expected::Open, PortState::Open)
                | (Expected::Closed, PortState::Closed)
                | (Expected::FilteredIcmp, PortState::Filtered)
        );
        assert!(ok, "{}:{} is {:?}", r.ip, r.port, r.state);
    }
}
