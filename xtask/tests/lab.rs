//! End-to-end tests of the lab with real namespaces (run as root). Each test has its own lab name, so they run in parallel; a `LabGuard` tears each lab down even when the test fails.
//!
//! These tests fail, never skip, when namespaces cannot be created.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use support::{all_routes, assert_probe_matches_truth, up_lab, CliLab, Exit};
use xtask::lab::{Expected, Lab, LabConfig, LabGuard, Outcome};

mod support;

/// A lab name unique to this test process and test: `t<pid % 1000><n>`.
fn lab_name(n: u32) -> String {
    format!("t{}{n}", std::process::id() % 1000)
}

fn up(n: u32, cfg: LabConfig) -> LabGuard {
    let cfg = LabConfig {
        name: lab_name(n),
        ..cfg
    };
    up_lab(&cfg)
}

fn with_hosts(hosts: u32) -> LabConfig {
    LabConfig {
        hosts,
        ..LabConfig::default()
    }
}

fn sock(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(addr.parse().unwrap(), port)
}

fn assert_no_default_route(lab: &Lab) {
    for ns in [lab.scanner_ns(), lab.target_ns()] {
        let routes = all_routes(ns);
        assert!(
            routes.contains("2001:2::/64"),
            "{ns} routes look wrong: {routes}"
        );
        assert!(
            !routes.lines().any(|l| l.starts_with("default")),
            "{ns} has a default route: {routes}"
        );
    }
    assert_eq!(lab.default_routes().unwrap(), Vec::<String>::new());
}

/// Probe every address from the scanner namespace and check it against the truth; an address
/// that is not a host of the lab must stay silent.
fn assert_matches_truth(lab: &Lab, addrs: &[SocketAddr]) {
    let results = lab.probe(addrs, Duration::from_millis(300)).unwrap();
    for r in &results {
        let want = assert_probe_matches_truth(lab, r, "scanner");
        // v4 ICMP errors reach connect() at once; see probe.rs for why v6 ones show at the timeout.
        if want == Expected::FilteredIcmp && r.addr.is_ipv4() {
            assert!(
                r.elapsed < Duration::from_millis(200),
                "slow ICMP error: {r:?}"
            );
            assert!(r.detail.contains("No route to host"), "{r:?}");
        }
        if want == Expected::FilteredIcmp && r.addr.is_ipv6() {
            assert!(r.detail.contains("Permission denied"), "{r:?}");
        }
    }
}

/// A lab with 3 extra hosts (`n` names it) has no default route, and `ports` of every one of
/// `hosts` and the one port of each `outsiders` answer as the truth says.
fn hosts_match_the_truth(n: u32, hosts: &[&str], ports: &[u16], outsiders: &[(&str, u16)]) {
    let lab = up(n, with_hosts(3));
    assert_no_default_route(&lab);
    let mut addrs: Vec<SocketAddr> = hosts
        .iter()
        .flat_map(|h| ports.iter().map(move |p| sock(h, *p)))
        .collect();
    addrs.extend(outsiders.iter().map(|(a, p)| sock(a, *p)));
    assert_matches_truth(&lab, &addrs);
}

#[test]
fn ipv4_primary_and_extra_hosts_match_the_truth() {
    hosts_match_the_truth(
        1,
        &["198.18.0.2", "198.19.0.2", "198.19.0.3"],
        &[
            22, 80, 65535, 21, 20001, 20002, 20003, 135, 9001, 30002, 30003, 23, 11211,
        ],
        // Not hosts of the lab: beyond N inside the local range.
        &[("198.19.0.4", 22), ("198.19.1.1", 80)],
    );
}

#[test]
fn ipv6_primary_and_extra_hosts_match_the_truth() {
    hosts_match_the_truth(
        2,
        &["2001:2::2", "2001:2:0:1::1", "2001:2:0:1::3"],
        &[22, 443, 21, 20001, 20003, 135, 30001, 30003, 23, 2049],
        &[("2001:2:0:1::4", 22)],
    );
}

#[test]
fn wide_lab_answers_on_every_extra_v4_address() {
    let lab = up(
        8,
        LabConfig {
            wide: true,
            ..with_hosts(2)
        },
    );
    assert_no_default_route(&lab);
    assert!(lab.truth().wide);
    let mut addrs = Vec::new();
    // Unlisted addresses, both ends of the range included: the base ports open, the rest
    // closed, nothing filtered.
    for host in ["198.19.0.0", "198.19.0.3", "198.19.77.1", "198.19.255.255"] {
        for port in [80, 22, 81, 135, 23] {
            addrs.push(sock(host, port));
        }
    }
    // Listed hosts keep their own truth, and IPv6 is not widened.
    addrs.extend([
        sock("198.19.0.2", 20002),
        sock("198.19.0.2", 30002),
        sock("198.19.0.2", 23),
        sock("2001:2:0:1::7", 80),
    ]);
    assert_matches_truth(&lab, &addrs);
}

#[test]
fn truth_round_trips_and_down_removes_everything() {
    let lab = up(3, with_hosts(2));
    let name = lab.name().to_owned();
    let state = lab.state_dir();
    assert_eq!(state, Path::new("/run/portscope-lab").join(&name));
    assert_eq!(&xtask::lab::Truth::load(&name).unwrap(), lab.truth());
    let truth = lab.truth();
    assert_eq!(truth.hosts.len(), 6);
    assert_eq!(truth.scanner_ns, format!("{name}-s"));
    let h2 = truth.host("198.19.0.2".parse().unwrap()).unwrap();
    assert_eq!(h2.expected(20002), Expected::Open);
    assert_eq!(h2.expected(20001), Expected::Closed);

    let pid = lab.listener_pid().expect("listener running");
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("lab\0serve\0"), "{cmdline:?}");
    assert!(state.join("listener.log").is_file());

    let (s, t) = (lab.scanner_ns().to_owned(), lab.target_ns().to_owned());
    drop(lab);
    for ns in [s, t] {
        assert!(
            !Path::new("/run/netns").join(&ns).exists(),
            "{ns} survived down"
        );
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "listener {pid} survived down"
    );
    assert!(!state.exists(), "{} survived down", state.display());
}

#[test]
fn up_replaces_leftovers_of_the_same_name() {
    let cfg = LabConfig::new(lab_name(4), 1);
    let first = Lab::up(&cfg).unwrap();
    let first_pid = first.listener_pid().unwrap();
    // Forget the first handle, as a crashed `up` would, except for reaping its child.
    let second = LabGuard::up(&cfg).expect("second up");
    drop(first);
    assert!(
        !Path::new(&format!("/proc/{first_pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{first_pid}/cmdline"))
                .unwrap()
                .is_empty()
    );
    assert_ne!(second.listener_pid(), Some(first_pid));
    assert_matches_truth(&second, &[sock("198.19.0.1", 20001), sock("2001:2::2", 21)]);
}

#[test]
fn impairments_apply_and_clear() {
    let lab = up(
        5,
        LabConfig {
            hosts: 0,
            loss_pct: 100.0,
            ..LabConfig::default()
        },
    );
    assert_eq!(lab.truth().hosts.len(), 2);
    let open = sock("198.18.0.2", 22);
    let closed = sock("2001:2::2", 21);
    let outcomes = |lab: &Lab| -> Vec<Outcome> {
        let results = lab
            .probe(&[open, closed], Duration::from_millis(300))
            .unwrap();
        results.iter().map(|r| r.outcome).collect()
    };
    assert_eq!(outcomes(&lab), [Outcome::Timeout, Outcome::Timeout]);
    lab.set_impairments(0.0, Some(0)).unwrap();
    assert_eq!(outcomes(&lab), [Outcome::Open, Outcome::Timeout]);
    lab.set_impairments(0.0, Some(1000)).unwrap();
    assert_eq!(outcomes(&lab), [Outcome::Open, Outcome::Refused]);
    lab.set_impairments(0.0, None).unwrap();
    assert_eq!(outcomes(&lab), [Outcome::Open, Outcome::Refused]);
    assert!(lab.set_impairments(101.0, None).is_err());
    // ICMP errors: stopped, then let through again; `set_impairments` leaves the limit be.
    let icmp = [sock("198.18.0.2", 23), sock("2001:2::2", 111)];
    let icmp_outcomes = |lab: &Lab| -> Vec<Outcome> {
        let results = lab.probe(&icmp, Duration::from_millis(300)).unwrap();
        results.iter().map(|r| r.outcome).collect()
    };
    assert_eq!(icmp_outcomes(&lab), [Outcome::Unreachable; 2]);
    lab.set_icmp_limit(Some(0)).unwrap();
    lab.set_impairments(0.0, None).unwrap();
    assert_eq!(icmp_outcomes(&lab), [Outcome::Timeout; 2]);
    assert_eq!(outcomes(&lab), [Outcome::Open, Outcome::Refused]);
    lab.set_icmp_limit(None).unwrap();
    assert_eq!(icmp_outcomes(&lab), [Outcome::Unreachable; 2]);
}

#[test]
fn offloads_off_turns_off_segmentation_offloads() {
    let lab = up(
        6,
        LabConfig {
            hosts: 1,
            offloads: false,
            ..LabConfig::default()
        },
    );
    for (mut cmd, dev) in [
        (lab.scanner_cmd("ethtool"), lab.scanner_if()),
        (lab.target_cmd("ethtool"), lab.target_if()),
    ] {
        let out = cmd.args(["-k", dev]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for feature in [
            "tcp-segmentation-offload: off",
            "generic-segmentation-offload: off",
            "generic-receive-offload: off",
        ] {
            assert!(text.contains(feature), "{dev}: {text}");
        }
    }
    assert_matches_truth(
        &lab,
        &[sock("198.19.0.1", 20001), sock("2001:2:0:1::1", 30001)],
    );
}

#[test]
fn cli_up_status_exec_impair_down() {
    let name = lab_name(7);
    let cli = CliLab(name.clone());
    cli.step(
        "up",
        &["--hosts", "2", "--offloads", "on"],
        Exit::Is(0),
        &[],
    );
    cli.step(
        "status",
        &[],
        Exit::Is(0),
        &["default routes: none", "alive", "2001:2:0:1::2"],
    );
    cli.step(
        "exec",
        &["--", "ip", "-br", "addr"],
        Exit::Is(0),
        &["198.18.0.1/24"],
    );
    let exec_target = ["--target", "--", "sh", "-c", "ip -br addr; exit 7"];
    cli.step("exec", &exec_target, Exit::Is(7), &["198.18.0.2/24"]);
    let impair = ["--loss", "1.5", "--rst-limit", "100", "--icmp-limit", "300"];
    cli.step("impair", &impair, Exit::Is(0), &[]);
    let (_, text) = cli.xtask(&["status", "--name", &name]);
    assert!(
        text.contains("< 150 drop") && text.contains("over 100/second"),
        "{text}"
    );
    assert!(
        text.contains("icmpv6 type destination-unreachable limit rate over 300/second"),
        "{text}"
    );
    let lab = Lab::open(&name).unwrap();
    let target: IpAddr = "198.18.0.2".parse().unwrap();
    assert_eq!(lab.truth().expected(target, 22), Some(Expected::Open));
    cli.step("down", &[], Exit::Is(0), &[]);
    cli.step("status", &[], Exit::Is(1), &[]);
    assert!(Lab::open(&name).is_err());
}
