//! End-to-end tests of a lab with several scanner namespaces (`LabConfig::scanners`), the
//! ground of the multi-node work (issue 8): every scanner reaches the targets over its own
//! veth from its own source address, no namespace has a default route, and a real
//! `portscope scan` from scanners 2 and 3 classifies lab hosts exactly against the truth.
//! Needs root and the workspace binaries (`cargo test --workspace` builds them).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{all_routes, assert_probe_matches_truth, up_lab, CliLab, Exit};
use xtask::lab::{Expected, HostTruth, Lab, LabConfig, LabGuard, Outcome, Scanner};

mod support;

const ALLOW: [&str; 4] = ["--allow", "198.18.0.0/15", "--allow", "2001:2::/48"];

/// A lab name unique to this test process and test: `k<pid % 10000><n>` (`k`: no other
/// test binary names its labs so).
fn lab_name(n: u32) -> String {
    format!("k{}{n}", std::process::id() % 10_000)
}

fn up(n: u32, scanners: u32, hosts: u32) -> LabGuard {
    let cfg = LabConfig {
        name: lab_name(n),
        hosts,
        scanners,
        ..LabConfig::default()
    };
    up_lab(&cfg)
}

fn portscope_bin() -> PathBuf {
    let bin = xtask::stack::bin_dir().unwrap().join("portscope");
    assert!(
        bin.is_file(),
        "{} not built (cargo build -p portscope)",
        bin.display()
    );
    bin
}

/// The source address the kernel of scanner `s` picks towards `dst`.
fn source_towards(s: &Scanner, dst: &str) -> String {
    let out = s.cmd("ip").args(["route", "get", dst]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|&w| w == "src");
    words
        .next()
        .unwrap_or_else(|| panic!("no src in {text}"))
        .to_owned()
}

/// Runs `cmd` with a deadline, killing (only) that child when it passes.
fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("command exceeded {limit:?}: {cmd:?}");
        }
    }
}

/// Asserts that the ndjson `results` of a scan of `host` x 1..=65535 with closed ports shown
/// are exactly the truth: every port once, with its true state and reason.
fn assert_exact(results: &str, host: &HostTruth) {
    let mut seen: BTreeMap<u16, Value> = BTreeMap::new();
    for line in results.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let ip: IpAddr = v["ip"].as_str().unwrap().parse().unwrap();
        assert_eq!(ip, host.addr, "result for another host: {line}");
        let port = u16::try_from(v["port"].as_u64().unwrap()).unwrap();
        assert!(seen.insert(port, v).is_none(), "port {port} reported twice");
    }
    let mut wrong = Vec::new();
    for port in 1..=65535u16 {
        let want = match host.expected(port) {
            Expected::Open => ("open", "syn-ack"),
            Expected::Closed => ("closed", "reset"),
            Expected::FilteredSilent => ("filtered", "no-response"),
            Expected::FilteredIcmp => ("filtered", "icmp-unreachable"),
        };
        let got = seen.get(&port).map(|v| {
            (
                v["state"].as_str().unwrap_or("?"),
                v["reason"].as_str().unwrap_or("?"),
            )
        });
        if got != Some(want) {
            wrong.push(format!("{}:{port} want {want:?}, got {got:?}", host.addr));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} ports wrong, first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

/// A full-range scan of `addr` from scanner `k`, checked port by port against the truth.
fn scan_exactly_from(lab: &Lab, k: u32, addr: &str) {
    let mut cmd = lab.scanner(k).cmd(portscope_bin());
    cmd.args([
        "scan", addr, "-p", "-", "--rate", "200000", "--show", "closed",
    ])
    .args(ALLOW)
    .args(["--format", "ndjson", "--no-progress"]);
    let out = run_bounded(cmd, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scan from scanner {k}: {stderr}");
    let host = lab.truth().host(addr.parse().unwrap()).unwrap();
    assert_exact(&String::from_utf8_lossy(&out.stdout), host);
}

#[test]
fn three_scanners_reach_the_targets_from_their_own_addresses_and_scan_exactly() {
    let lab = up(1, 3, 3);
    let scanners = lab.scanners();
    assert_eq!(scanners.len(), 3);
    // Scanner 1 keeps the lab's usual names and addresses.
    assert_eq!(scanners[0].ns, lab.scanner_ns());
    assert_eq!(lab.scanner_ns(), format!("{}-s", lab.name()));
    assert_eq!(lab.scanner_if(), format!("{}s0", lab.name()));
    assert_eq!(lab.target_if(), format!("{}t0", lab.name()));
    assert_eq!(lab.scanner(3).ns, format!("{}-s3", lab.name()));
    assert_eq!(lab.namespaces().len(), 4);

    // No default route in any namespace, each scanner has its own veth and addresses.
    assert_eq!(lab.default_routes().unwrap(), Vec::<String>::new());
    for ns in lab.namespaces() {
        let routes = all_routes(ns);
        assert!(
            !routes.lines().any(|l| l.starts_with("default")),
            "{ns} has a default route: {routes}"
        );
    }
    let mut sources = Vec::new();
    for s in scanners {
        let addrs =
            String::from_utf8(s.cmd("ip").args(["-br", "addr"]).output().unwrap().stdout).unwrap();
        assert!(addrs.contains(&format!("{}/24", s.v4)), "{}: {addrs}", s.ns);
        assert!(addrs.contains(&s.iface), "{}: {addrs}", s.ns);
        let v4 = source_towards(s, "198.19.0.2");
        let v6 = source_towards(s, "2001:2:0:1::3");
        assert_eq!(source_towards(s, "198.18.0.2"), v4);
        assert_eq!(
            (v4.as_str(), v6.as_str()),
            (&*s.v4.to_string(), &*s.v6.to_string())
        );
        sources.push(v4);
    }
    sources.dedup();
    assert_eq!(
        sources.len(),
        3,
        "scanners share a source address: {sources:?}"
    );

    // Every scanner reaches the primary target and the extra hosts, both families, and
    // what it sees matches the truth; addresses that are not hosts stay silent.
    let sock = |a: &str, p: u16| SocketAddr::new(a.parse().unwrap(), p);
    let addrs = [
        sock("198.18.0.2", 22),
        sock("198.18.0.2", 21),
        sock("198.19.0.2", 20002),
        sock("198.19.0.3", 30003),
        sock("2001:2::2", 443),
        sock("2001:2:0:1::1", 20001),
        sock("2001:2:0:1::3", 23),
        sock("198.19.0.9", 22),
    ];
    for k in 1..=3 {
        let results = lab
            .probe_from(k, &addrs, Duration::from_millis(300))
            .unwrap();
        for r in &results {
            assert_probe_matches_truth(&lab, r, &format!("scanner {k}"));
        }
        assert_eq!(results[0].outcome, Outcome::Open);
    }
    // Scanners cannot reach each other: the target does not forward.
    let other = SocketAddr::new(lab.scanner(3).v4.into(), 22);
    let r = lab
        .probe_from(2, &[other], Duration::from_millis(300))
        .unwrap();
    assert_ne!(r[0].outcome, Outcome::Open, "{r:?}");

    // Real scans, every port, from scanners 2 and 3.
    scan_exactly_from(&lab, 2, "198.19.0.2");
    scan_exactly_from(&lab, 3, "2001:2:0:1::3");
}

#[test]
fn teardown_removes_every_scanner_namespace_and_open_counts_them() {
    let lab = up(2, 2, 1);
    let name = lab.name().to_owned();
    let opened = Lab::open(&name).unwrap();
    assert_eq!(opened.scanners(), lab.scanners());
    drop(opened);
    // One lab impaired at the target drops on every scanner's veth.
    lab.set_impairments(100.0, None).unwrap();
    for k in 1..=2 {
        let r = lab
            .probe_from(
                k,
                &[SocketAddr::new("198.18.0.2".parse().unwrap(), 22)],
                Duration::from_millis(300),
            )
            .unwrap();
        assert_eq!(r[0].outcome, Outcome::Timeout, "scanner {k}: {r:?}");
    }
    lab.set_impairments(0.0, None).unwrap();
    let namespaces: Vec<String> = lab.namespaces().iter().map(|s| s.to_string()).collect();
    assert_eq!(namespaces.len(), 3);
    drop(lab);
    for ns in namespaces {
        assert!(
            !std::path::Path::new("/run/netns").join(&ns).exists(),
            "{ns} survived down"
        );
    }
    assert!(Lab::open(&name).is_err());
}

#[test]
fn cli_up_with_scanners_and_exec_in_one() {
    let name = lab_name(3);
    let cli = CliLab(name.clone());
    cli.step(
        "up",
        &["--hosts", "1", "--scanners", "17"],
        Exit::Fails,
        &["--scanners 17 is not between 1 and 16"],
    );
    let s2 = format!("{name}-s2");
    cli.step(
        "up",
        &["--hosts", "1", "--scanners", "2"],
        Exit::Is(0),
        &[&format!("scanner 2: {s2}")],
    );
    let exec2 = ["--scanner", "2", "--", "ip", "-br", "addr"];
    cli.step("exec", &exec2, Exit::Is(0), &["198.18.1.1/24"]);
    cli.step(
        "exec",
        &["--scanner", "3", "--", "true"],
        Exit::Fails,
        &["has scanners 1 to 2, not 3"],
    );
    cli.step(
        "status",
        &[],
        Exit::Is(0),
        &[&format!("scanner 2 namespace {s2}"), "default routes: none"],
    );
    cli.step("down", &[], Exit::Is(0), &[]);
    assert!(!std::path::Path::new("/run/netns").join(&s2).exists());
}
