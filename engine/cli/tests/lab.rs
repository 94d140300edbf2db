//! End-to-end scans in the network lab: the real `portscope` binary (or the engine library,
//! re-executed inside the lab) scans lab hosts over veth, and every port's state is compared
//! with the lab's ground truth. Needs root (network namespaces, raw sockets): run as root,
//! as CI does. Scans are serialised (the machine has two cores) and bounded in time.

use portscope_core::results::{PortResult, PortState, Reason};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{
    assert_true_answers, lab_named, ok, parse_ndjson, run_bounded, serial, target_mac, truth_of,
    ALLOW, RST_LIMITED_SCAN,
};
use xtask::lab::{assert_reports_match, Expected, HostTruth, LabConfig, LabGuard};

mod support;

fn lab(tag: &str, hosts: u32, loss_pct: f64) -> LabGuard {
    lab_with(tag, hosts, loss_pct, true)
}

/// A lab named after this process and `tag`, so parallel test binaries never collide.
fn lab_with(tag: &str, hosts: u32, loss_pct: f64, offloads: bool) -> LabGuard {
    lab_named(
        "e",
        tag,
        LabConfig {
            hosts,
            loss_pct,
            offloads,
            ..LabConfig::default()
        },
    )
}

fn portscope(lab: &LabGuard, args: &[&str]) -> Command {
    let mut c = lab.0.scanner_cmd(env!("CARGO_BIN_EXE_portscope"));
    c.arg("scan").args(args).arg("--no-progress");
    c
}

fn scan_ndjson(lab: &LabGuard, args: &[&str]) -> (Vec<PortResult>, String) {
    let _serial = serial();
    let mut full: Vec<&str> = args.to_vec();
    full.extend(ALLOW);
    full.extend(["--format", "ndjson"]);
    let r = run_bounded(portscope(lab, &full), Duration::from_secs(120));
    ok(&r);
    // By default replies come through the TPACKET_V3 ring; a fallback would say so here.
    assert!(!r.stderr.contains("no receive ring"), "{}", r.stderr);
    let results = parse_ndjson(&r.stdout);
    (results, r.stderr)
}

/// Asserts that `results` are exactly the truth for `hosts` x `ports`: every reported pair
/// has its true state and reason, every pair is reported once, and (when closed ports are
/// hidden) every unreported pair is truly closed.
fn assert_exact(results: &[PortResult], hosts: &[&HostTruth], ports: &[u16], closed_shown: bool) {
    let mut seen: BTreeMap<(IpAddr, u16), &PortResult> = BTreeMap::new();
    for r in results {
        assert!(
            seen.insert((r.ip, r.port), r).is_none(),
            "{}:{} reported twice",
            r.ip,
            r.port
        );
    }
    assert_reports_match(hosts, ports, seen, |h, _, want, got| match (want, got) {
        (Expected::Open, Some(r)) => r.state == PortState::Open && r.reason == Reason::SynAck,
        (Expected::Closed, Some(r)) => {
            closed_shown && r.state == PortState::Closed && r.reason == Reason::Reset
        }
        (Expected::Closed, None) => !closed_shown,
        (Expected::FilteredSilent, Some(r)) => {
            r.state == PortState::Filtered && r.reason == Reason::NoResponse
        }
        (Expected::FilteredIcmp, Some(r)) => {
            let code = if h.addr.is_ipv6() { (1, 1) } else { (3, 13) };
            r.state == PortState::Filtered
                && r.reason == Reason::IcmpUnreachable
                && (r.icmp_type, r.icmp_code) == (Some(code.0), Some(code.1))
        }
        (_, None) => false,
    });
}

fn all_ports() -> Vec<u16> {
    (1..=65535).collect()
}

/// Scans every port of `addr` with closed ports shown and asserts the exact truth.
fn assert_deep_scan(lab: &LabGuard, addr: &str) -> String {
    let host = truth_of(lab, addr);
    let (results, stderr) = scan_ndjson(
        lab,
        &[addr, "-p", "-", "--rate", "200000", "--show", "closed"],
    );
    assert_eq!(results.len(), 65_535, "{stderr}");
    assert_exact(&results, &[&host], &all_ports(), true);
    stderr
}

#[test]
fn deep_scan_ipv4_host_matches_truth_on_all_65535_ports() {
    let lab = lab("a", 0, 0.0);
    let stderr = assert_deep_scan(&lab, "198.18.0.2");
    assert!(
        stderr.contains("portscope: done"),
        "summary on stderr: {stderr}"
    );
}

#[test]
fn deep_scan_with_veth_offloads_off_matches_truth() {
    // TSO/GSO/GRO off changes what the capture sees (no coalescing, full checksums).
    let lab = lab_with("j", 0, 0.0, false);
    assert_deep_scan(&lab, "198.18.0.2");
}

#[test]
fn deep_scan_through_recvmmsg_matches_truth() {
    // A one-host deep scan reads through the TPACKET_V3 ring by default, a scan of fewer
    // than `RING_MIN_REPLIES` pairs with recvmmsg: that path stays exact on the whole
    // range too. Three send threads here (more than this machine's CPUs: two share one),
    // two by default.
    let lab = lab("n", 0, 0.0);
    let host = truth_of(&lab, "198.18.0.2");
    let (results, stderr) = scan_ndjson(
        &lab,
        &[
            "198.18.0.2",
            "-p",
            "-",
            "--show",
            "closed",
            "--rx-ring",
            "off",
            "--send-threads",
            "3",
        ],
    );
    assert_eq!(results.len(), 65_535, "{stderr}");
    assert_exact(&results, &[&host], &all_ports(), true);
}

#[test]
fn deep_scan_through_link_frames_and_the_ip_path_matches_truth() {
    // --router-mac: probes leave as AF_PACKET frames (qdisc bypassed); --auto-link off: as
    // IP packets the kernel routes (the default finds the frames' next hop by itself, so
    // the other lab tests cover that). IPv4 and IPv6 each way.
    let lab = lab("o", 0, 0.0);
    let mac = target_mac(&lab);
    let iface = lab.0.scanner_if();
    for addr in ["198.18.0.2", "2001:2::2"] {
        let host = truth_of(&lab, addr);
        let link = ["--interface", iface, "--router-mac", &mac];
        for path in [&link[..], &["--auto-link", "off"]] {
            let mut args = vec![addr, "-p", "-", "--show", "closed"];
            args.extend(path);
            let (results, stderr) = scan_ndjson(&lab, &args);
            assert_eq!(results.len(), 65_535, "{path:?}: {stderr}");
            assert_exact(&results, &[&host], &all_ports(), true);
        }
    }
}

/// What `--dry-run` says about the send path for `targets` in `lab`.
fn send_line(lab: &LabGuard, targets: &[&str], extra: &[&str]) -> String {
    let mut args = targets.to_vec();
    args.extend(["-p", "80", "--dry-run"]);
    args.extend(ALLOW);
    args.extend(extra);
    let r = run_bounded(portscope(lab, &args), Duration::from_secs(30));
    ok(&r);
    let line = r.stdout.lines().find(|l| l.starts_with("send: "));
    line.unwrap_or_else(|| panic!("no send line: {}", r.stdout))
        .to_owned()
}

#[test]
fn the_link_path_is_chosen_from_the_kernels_tables_only_when_one_next_hop_serves_all() {
    let lab = lab("w", 2, 0.0);
    let frames = format!(
        "send: link-layer frames on {} to {}, qdisc bypassed (the next hop of every target: ",
        lab.0.scanner_if(),
        target_mac(&lab)
    );
    // The on-link target itself and the hosts routed through it, both families: one MAC.
    let both = ["198.18.0.2", "198.19.0.1-198.19.0.2", "2001:2::2"];
    assert_eq!(
        send_line(&lab, &both, &[]),
        format!("{frames}198.18.0.2, 2001:2::2)")
    );
    // Many on-link hosts have one MAC each: the kernel's IP path, and why.
    assert_eq!(
        send_line(&lab, &["198.18.0.2-198.18.0.3"], &[]),
        "send: the kernel's IP path (the range from 198.18.0.2 is on-link: one MAC per host)"
    );
    assert_eq!(
        send_line(&lab, &["198.18.0.0/24"], &[]),
        "send: the kernel's IP path (the range from 198.18.0.0 holds this host's own address)"
    );
    assert_eq!(
        send_line(&lab, &["198.19.0.1"], &["--auto-link", "off"]),
        "send: the kernel's IP path (--auto-link off)"
    );
    // The neighbour entry gone (and not resolvable: the lab has no other host there).
    let nud = Command::new("ip")
        .args([
            "-n",
            lab.0.scanner_ns(),
            "neigh",
            "flush",
            "dev",
            lab.0.scanner_if(),
        ])
        .status()
        .unwrap();
    assert!(nud.success());
    assert_eq!(
        send_line(&lab, &["198.19.0.1"], &[]),
        "send: the kernel's IP path (the neighbour table has no MAC for 198.18.0.2)"
    );
    // A scan still works (the kernel resolves the neighbour again), and the next one
    // finds it.
    let host = truth_of(&lab, "198.19.0.1");
    let (results, stderr) = scan_ndjson(&lab, &["198.19.0.1", "-p", "1-2000", "--show", "closed"]);
    assert_eq!(results.len(), 2000, "{stderr}");
    assert_exact(&results, &[&host], &(1..=2000).collect::<Vec<u16>>(), true);
    assert!(send_line(&lab, &["198.19.0.1"], &[]).starts_with(&frames));
}

#[test]
fn deep_scan_ipv6_host_matches_truth_on_all_65535_ports() {
    let lab = lab("b", 0, 0.0);
    assert_deep_scan(&lab, "2001:2::2");
}

/// Scans every port of the lab's host through `loss_pct` random loss in both directions
/// with default flags: the retries adapt to the measured loss and every state is exact.
fn assert_exact_through_loss(tag: &str, loss_pct: f64) {
    let lab = lab(tag, 0, loss_pct);
    let host = truth_of(&lab, "198.18.0.2");
    let (results, stderr) = scan_ndjson(&lab, &["198.18.0.2", "-p", "-"]);
    eprintln!("{loss_pct}% loss: {stderr}");
    assert_exact(&results, &[&host], &all_ports(), false);
    // Loss really happened, was measured, and retries went past the old fixed two.
    assert!(!stderr.contains("in 1 round(s)"), "{stderr}");
    assert!(stderr.contains("estimated loss per try"), "{stderr}");
}

#[test]
fn one_percent_loss_is_exact_with_default_flags() {
    assert_exact_through_loss("c", 1.0);
}

#[test]
fn five_percent_loss_is_exact_with_default_flags() {
    assert_exact_through_loss("l", 5.0);
}

#[test]
fn rst_rate_limited_target_is_classified_by_adaptive_retries() {
    // The target sends at most 20,000 RSTs a second; the scan asks for 250,000 probes a
    // second. Round 0 leaves most closed ports silent; retry rounds pace at the measured
    // answer rate, so every port still gets its true state. One retry more than the default
    // leaves room for a descheduled send thread on a busy two-core machine.
    let lab = lab_named(
        "e",
        "k",
        LabConfig {
            hosts: 0,
            rst_limit: Some(20_000),
            ..LabConfig::default()
        },
    );
    let host = truth_of(&lab, "198.18.0.2");
    let (results, stderr) = scan_ndjson(&lab, &RST_LIMITED_SCAN);
    assert_exact(&results, &[&host], &all_ports(), false);
    assert!(
        !stderr.contains("in 1 round(s)"),
        "retries were needed: {stderr}"
    );
}

#[test]
fn bursty_rst_limiter_below_the_pacers_catch_up_is_classified_exactly() {
    // At most 500 RSTs a second with a burst room of 2 (below the pacer's catch-up credit
    // of 4): two RSTs closer than 2 ms apart lose one. Default flags. Retry rounds used to
    // be paced at no less than 1,000/s and to double their rate on a window the limiter
    // had thinned, so each round got about half back, and the cap of 10 retries ended the
    // scan with closed ports reported filtered (3 of 10,000 when first seen). Paced under
    // the limit, smoothly once it drops, it is exact in about 22 s (the limit needs 20 s).
    let lab = lab_named(
        "e",
        "rb",
        LabConfig {
            hosts: 0,
            rst_limit: Some(500),
            rst_burst: 2,
            ..LabConfig::default()
        },
    );
    let host = truth_of(&lab, "198.18.0.2");
    let ports: Vec<u16> = (1..=10_000).collect();
    let (results, stderr) = scan_ndjson(&lab, &["198.18.0.2", "-p", "1-10000", "--show", "closed"]);
    assert_exact(&results, &[&host], &ports, true);
    assert!(
        !stderr.contains("in 1 round(s)"),
        "retries were needed: {stderr}"
    );
}

#[test]
fn multi_host_scan_ipv4_and_ipv6_matches_truth() {
    let lab = lab("d", 8, 0.0);
    let truth = lab.0.truth().clone();
    let hosts: Vec<&HostTruth> = truth
        .hosts
        .iter()
        .filter(|h| {
            h.addr.to_string().starts_with("198.19.0.")
                || h.addr.to_string().starts_with("2001:2:0:1::")
        })
        .collect();
    assert_eq!(hosts.len(), 16, "8 IPv4 + 8 IPv6 extra hosts");
    let (results, _) = scan_ndjson(
        &lab,
        &[
            "198.19.0.1-198.19.0.8",
            "2001:2:0:1::1-2001:2:0:1::8",
            "-p",
            "-",
            "--rate",
            "250000",
        ],
    );
    assert_exact(&results, &hosts, &all_ports(), false);
}

#[test]
fn two_concurrent_scanner_processes_do_not_cross_talk() {
    // Both processes use the same source ports on the same interface, so each sees the
    // other's replies: only the cookie keeps them apart.
    assert_no_cross_talk("e", &[]);
}

#[test]
fn two_concurrent_scans_from_one_fixed_source_port_do_not_cross_talk() {
    assert_no_cross_talk("n", &["--source-port", "53"]);
}

/// Two scanner processes, with `extra` flags each, scan two hosts at once; each result is
/// exact and each process saw and rejected the other's replies.
fn assert_no_cross_talk(tag: &str, extra: &[&str]) {
    let lab = lab(tag, 2, 0.0);
    let truth = lab.0.truth().clone();
    let _serial = serial();
    let spawn = |target: &str, ports: &str| {
        let mut c = portscope(
            &lab,
            &[target, "-p", ports, "--rate", "60000", "--format", "ndjson"],
        );
        c.args(ALLOW).args(extra);
        std::thread::spawn(move || run_bounded(c, Duration::from_secs(60)))
    };
    let a = spawn("198.18.0.2", "1-40000");
    let b = spawn("198.19.0.1", "1-40000");
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    for (run, addr) in [(a, "198.18.0.2"), (b, "198.19.0.1")] {
        assert!(run.status.success(), "{}", run.stderr);
        let results: Vec<PortResult> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let host = truth.host(addr.parse().unwrap()).unwrap();
        let ports: Vec<u16> = (1..=40000).collect();
        assert_exact(&results, &[host], &ports, false);
        assert!(
            run.stderr.contains("bad_cookie="),
            "the other scan's replies were seen and rejected: {}",
            run.stderr
        );
    }
}

#[test]
fn policy_refuses_lab_range_without_allow_and_sends_nothing() {
    let lab = lab("f", 0, 0.0);
    let r = run_bounded(
        portscope(&lab, &["198.18.0.2", "-p", "80"]),
        Duration::from_secs(20),
    );
    assert_eq!(r.status.code(), Some(64), "{}", r.stderr);
    assert!(
        r.stderr.contains("198.18.0.0/15") && r.stderr.contains("--allow"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
    for t in ["127.0.0.1", "10.1.2.3", "::1"] {
        let r = run_bounded(
            portscope(&lab, &[t, "-p", "80", "--allow", "198.18.0.0/15"]),
            Duration::from_secs(20),
        );
        assert_eq!(r.status.code(), Some(64), "{t}: {}", r.stderr);
    }
}

#[test]
fn retry_and_cpu_flags_are_checked_before_any_packet() {
    let lab = lab("m", 0, 0.0);
    for (args, says) in [
        (&["--max-retries", "16"][..], "--max-retries 16 is too many"),
        (&["--retries", "16"], "--retries 16 is too many"),
        (&["--send-cpu", "100000"], "CPU 100000"),
        (&["--recv-cpu", "100000"], "CPU 100000"),
        (&["--send-threads", "0"], "--send-threads"),
    ] {
        let mut c = portscope(&lab, &["198.18.0.2", "-p", "80"]);
        c.args(args).args(ALLOW);
        let r = run_bounded(c, Duration::from_secs(20));
        assert_eq!(r.status.code(), Some(64), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{args:?}: {}", r.stderr);
        assert!(r.stdout.is_empty());
    }
    // A fixed count is exactly that: a silent port probed 1 + 5 times.
    let (results, stderr) = scan_ndjson(&lab, &["198.18.0.2", "-p", "135", "--retries", "5"]);
    assert_eq!(results.len(), 1, "{stderr}");
    assert!(stderr.contains("6 probes sent"), "{stderr}");
    assert!(stderr.contains("in 6 round(s)"), "{stderr}");
}

#[test]
fn without_cap_net_raw_it_says_what_to_grant() {
    let lab = lab("g", 0, 0.0);
    for setpriv in [
        vec!["--reuid=65534", "--regid=65534", "--clear-groups"],
        vec!["--bounding-set=-net_raw", "--inh-caps=-net_raw"],
    ] {
        let mut c = lab.0.scanner_cmd("setpriv");
        c.args(&setpriv)
            .arg(env!("CARGO_BIN_EXE_portscope"))
            .args(["scan", "198.18.0.2", "-p", "80"])
            .args(ALLOW);
        let r = run_bounded(c, Duration::from_secs(20));
        assert_eq!(r.status.code(), Some(77), "{setpriv:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("CAP_NET_RAW") && r.stderr.contains("setcap cap_net_raw+ep"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn interrupt_still_writes_valid_json() {
    let lab = lab("h", 0, 0.0);
    let _serial = serial();
    let host = truth_of(&lab, "198.18.0.2");
    let mut c = portscope(
        &lab,
        &[
            "198.18.0.2",
            "-p",
            "-",
            "--rate",
            "5000",
            "--format",
            "json",
            "--show",
            "closed",
        ],
    );
    c.args(ALLOW);
    let child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(1500));
    // SIGINT to the process we started (ip netns exec execs portscope in place).
    assert!(Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<PortResult> = serde_json::from_slice(&out.stdout).expect("a complete JSON array");
    // ~7,500 probes went out in 1.5 s at 5,000/s: thousands of answers, all true.
    assert!(v.len() > 1000 && v.len() < 65_535, "{} results", v.len());
    assert_true_answers(&host, &v);
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
}

#[test]
fn nmap_and_masscan_formats_on_a_real_scan() {
    let lab = lab("i", 0, 0.0);
    let _serial = serial();
    let run = |fmt: &str| {
        let mut c = portscope(
            &lab,
            &["198.18.0.2", "-p", "20-25,80,135,443", "--format", fmt],
        );
        c.args(ALLOW);
        let r = run_bounded(c, Duration::from_secs(30));
        assert!(r.status.success(), "{fmt}: {}", r.stderr);
        r.stdout
    };
    let xml = run("xml");
    assert!(
        xml.contains(r#"<port protocol="tcp" portid="22"><state state="open" reason="syn-ack""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"portid="23"><state state="filtered" reason="admin-prohibited""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<extraports state="closed" count="3">"#),
        "{xml}"
    );
    let grep = run("grepable");
    assert!(grep.contains("Host: 198.18.0.2 ()\tPorts: 22/open/tcp//ssh///, 23/filtered/tcp//telnet///, 25/open/tcp//smtp///, 80/open/tcp//http///, 135/filtered/tcp//msrpc///, 443/open/tcp//https///\tIgnored State: closed (3)"), "{grep}");
    let list = run("list");
    assert!(
        list.starts_with("#masscan\n")
            && list.contains("open tcp 22 198.18.0.2 ")
            && list.ends_with("# end\n"),
        "{list}"
    );
    let table = run("table");
    assert!(
        table.contains("22/tcp      open      ssh              syn-ack ttl 64"),
        "{table}"
    );
}

/// `nft` counters in the target for the scanner's SYNs, per family: from `sport`, and from
/// any other source port.
fn count_syns_by_source_port(lab: &LabGuard, table: &str, sport: u16) {
    lab.0
        .target_nft(&format!(
            "table inet {table} {{\n\
             chain c {{ type filter hook prerouting priority -300; policy accept;\n\
             ip saddr 198.18.0.1 tcp flags syn tcp sport {sport} counter\n\
             ip saddr 198.18.0.1 tcp flags syn tcp sport != {sport} counter\n\
             ip6 saddr 2001:2::1 tcp flags syn tcp sport {sport} counter\n\
             ip6 saddr 2001:2::1 tcp flags syn tcp sport != {sport} counter\n}}\n}}\n"
        ))
        .expect("nft counters in the target");
}

fn read_syn_counters(lab: &LabGuard, table: &str) -> [u64; 4] {
    let text = lab
        .0
        .target_nft_query(&["list", "chain", "inet", table, "c"])
        .expect("list the counters");
    let counts: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split("counter packets ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
        .collect();
    counts
        .try_into()
        .unwrap_or_else(|c| panic!("{c:?}: {text}"))
}

#[test]
fn fixed_source_port_scan_of_several_hosts_is_exact_and_every_syn_uses_it() {
    let lab = lab("p", 2, 0.0);
    let truth = lab.0.truth().clone();
    count_syns_by_source_port(&lab, "srcport", 53);
    let targets = [
        "198.18.0.2",
        "198.19.0.1",
        "198.19.0.2",
        "2001:2::2",
        "2001:2:0:1::1",
        "2001:2:0:1::2",
    ];
    let hosts: Vec<&HostTruth> = targets
        .iter()
        .map(|t| truth.host(t.parse().unwrap()).unwrap())
        .collect();
    let spec = "1-1000,20001-20002,30001-30002";
    let ports: Vec<u16> = (1..=1000).chain([20001, 20002, 30001, 30002]).collect();
    let mut args: Vec<&str> = targets.to_vec();
    args.extend(["-p", spec, "--source-port", "53", "--retries", "2"]);
    let (results, stderr) = scan_ndjson(&lab, &args);
    assert_exact(&results, &hosts, &ports, false);
    assert!(stderr.contains("in 3 round(s)"), "{stderr}");
    // Every pair once, and every silent pair twice more (--retries 2), all from port 53.
    let syns = |v6: bool| -> u64 {
        hosts
            .iter()
            .filter(|h| h.addr.is_ipv6() == v6)
            .map(|h| {
                let silent = ports
                    .iter()
                    .filter(|p| h.expected(**p) == Expected::FilteredSilent)
                    .count() as u64;
                ports.len() as u64 + 2 * silent
            })
            .sum()
    };
    assert_eq!(
        read_syn_counters(&lab, "srcport"),
        [syns(false), 0, syns(true), 0],
        "SYNs from port 53 / from other ports, IPv4 then IPv6"
    );
}

#[test]
fn fixed_source_port_scan_through_loss_is_exact_with_adaptive_retries() {
    // A retry from a fixed port repeats the 4-tuple and the sequence number, as a TCP
    // stack retransmits: a target whose SYN-ACK was lost answers the retry at once.
    let lab = lab("q", 0, 3.0);
    let host = truth_of(&lab, "198.18.0.2");
    count_syns_by_source_port(&lab, "srcport", 20);
    let (results, stderr) =
        scan_ndjson(&lab, &["198.18.0.2", "-p", "1-6000", "--source-port", "20"]);
    eprintln!("{stderr}");
    let ports: Vec<u16> = (1..=6000).collect();
    assert_exact(&results, &[&host], &ports, false);
    assert!(!stderr.contains("in 1 round(s)"), "{stderr}");
    assert!(stderr.contains("estimated loss per try"), "{stderr}");
    assert!(
        !stderr.contains("rate-limited"),
        "random loss is not a limit: {stderr}"
    );
    let [from20, other, _, _] = read_syn_counters(&lab, "srcport");
    // The counter is ahead of the lab's loss: every pair once, retries on top.
    assert!(from20 > 6000 && other == 0, "{from20} {other}");
}
