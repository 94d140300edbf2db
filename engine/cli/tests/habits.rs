//! The real `portscope` binary in the network lab, used with nmap and masscan habits: stops
//! by SIGTERM (`timeout`) and SIGHUP, nmap output flags and target lists, nmap XML checked
//! with `xmllint --dtdvalid` against nmap's own DTD, resume after an interrupt, live status
//! lines, a SYN-proxy host and targets that rate-limit their RSTs or ICMP errors. Needs root (namespaces,
//! raw sockets) and `.ci/setup`'s nmap and libxml2-utils. Scans run one at a time.

use portscope_core::results::{PortResult, Reason};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{
    assert_true_answers, finish, lab_named, ok, parse_ndjson, run_bounded, serial, truth_of, Run,
    ALLOW,
};
use xtask::lab::{Expected, LabConfig, LabGuard};

mod support;

const NMAP_DTD: &str = "/usr/share/nmap/nmap.dtd";
/// `nft::SYN_PROXY_V4` of the lab: answers SYN-ACK on every port.
const SYN_PROXY: &str = "198.19.255.254";

fn lab_with(tag: &str, cfg: LabConfig) -> LabGuard {
    lab_named("h", tag, LabConfig { hosts: 0, ..cfg })
}

/// A scratch directory for one test's files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("ps-habits-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `portscope scan ARGS --allow ...` inside the lab, working directory `dir`.
fn portscope(lab: &LabGuard, dir: &Scratch, args: &[&str]) -> Command {
    let mut c = lab.0.scanner_cmd(env!("CARGO_BIN_EXE_portscope"));
    c.arg("scan")
        .args(args)
        .args(ALLOW)
        .arg("--no-progress")
        .current_dir(&dir.0);
    c
}

/// Runs `portscope scan ARGS` in the lab under `limit` and asserts that it succeeded.
fn scan_ok(lab: &LabGuard, dir: &Scratch, args: &[&str], limit: Duration) -> Run {
    let r = run_bounded(portscope(lab, dir, args), limit);
    ok(&r);
    r
}

fn assert_valid_nmap_xml(path: &str) {
    let out = Command::new("xmllint")
        .args(["--noout", "--dtdvalid", NMAP_DTD, path])
        .output()
        .expect("xmllint (apt-get install libxml2-utils nmap; .ci/setup does)");
    assert!(
        out.status.success(),
        "{path} is not valid nmap XML: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

/// The rate at the start of `s`, `N/s` as the CLI prints it.
fn per_second(s: &str) -> Option<f64> {
    s.split('/').next()?.parse().ok()
}

/// The measured rate of a rate-limit line (`portscope: ... by the target: N/s ...`).
fn limited_rate(line: &str) -> f64 {
    line.split(": ")
        .nth(2)
        .and_then(per_second)
        .unwrap_or_else(|| panic!("{line}"))
}

/// "N probes sent" from the summary line.
fn probes_sent(stderr: &str) -> u64 {
    let at = stderr.find(" probes sent").expect("summary line");
    stderr[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn sigterm_and_sighup_stop_as_cleanly_as_ctrl_c() {
    let lab = lab_with("a", LabConfig::default());
    let _serial = serial();
    for (sig, code) in [("TERM", 143), ("HUP", 129)] {
        let dir = Scratch::new(&format!("sig{sig}"));
        let (json, resume) = (dir.path("out.json"), dir.path("scan.resume"));
        let args = [
            "198.18.0.2",
            "-p",
            "-",
            "--rate",
            "5000",
            "--show",
            "closed",
            "--format",
            "xml",
            "-oJ",
            &json,
            "--resume-file",
            &resume,
        ];
        let run = if sig == "TERM" {
            // As `timeout` (and systemd, container runtimes) stop a process.
            let mut c = lab.0.scanner_cmd("timeout");
            c.args(["--preserve-status", "-s", "TERM", "1.5"])
                .arg(env!("CARGO_BIN_EXE_portscope"))
                .arg("scan")
                .args(args)
                .args(ALLOW)
                .arg("--no-progress")
                .current_dir(&dir.0);
            run_bounded(c, Duration::from_secs(30))
        } else {
            // As a dropped SSH session does (ip netns exec execs portscope in place).
            let mut child = portscope(&lab, &dir, &args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            let kill = Command::new("kill")
                .args([&format!("-{sig}"), &child.id().to_string()])
                .status()
                .unwrap();
            assert!(kill.success());
            finish(&mut child, Duration::from_secs(30))
        };
        assert_eq!(run.status.code(), Some(code), "SIG{sig}: {}", run.stderr);
        assert!(
            run.stderr.contains("portscope: interrupted in"),
            "SIG{sig}: {}",
            run.stderr
        );
        // The XML on stdout is complete and valid.
        let xml = dir.path("stdout.xml");
        std::fs::write(&xml, &run.stdout).unwrap();
        assert_valid_nmap_xml(&xml);
        assert!(run
            .stdout
            .contains(r#"exit="error" errormsg="interrupted""#));
        // The JSON file is a complete array of true answers.
        let v: Vec<PortResult> =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("JSON array");
        assert!(
            v.len() > 1000 && v.len() < 65_535,
            "SIG{sig}: {} results",
            v.len()
        );
        assert_true_answers(&truth_of(&lab, "198.18.0.2"), &v);
        assert!(Path::new(&resume).exists(), "SIG{sig}: resume file written");
    }
}

#[test]
fn resume_finishes_without_reprobing_and_matches_an_uninterrupted_scan() {
    let lab = lab_with("b", LabConfig::default());
    let _serial = serial();
    let dir = Scratch::new("resume");
    let (gnmap, xml, resume) = (dir.path("r.gnmap"), dir.path("r.xml"), dir.path("r.resume"));
    let args = |g: &str, x: &str| -> Vec<String> {
        [
            "198.18.0.2",
            "-p",
            "1-20000",
            "--rate",
            "5000",
            "--show",
            "closed",
            "-oG",
            g,
            "-oX",
            x,
            "--resume-file",
            &resume,
            "--format",
            "ndjson",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    // Interrupted after about 1.5 s: about 7,500 of 20,000 pairs sent.
    let mut first = portscope(
        &lab,
        &dir,
        &args(&gnmap, &xml)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap()
        .success());
    let first = finish(&mut first, Duration::from_secs(30));
    assert_eq!(first.status.code(), Some(130), "{}", first.stderr);
    let saved = parse_ndjson(&first.stdout).len() as u64;
    assert!(
        saved > 1000 && saved < 20_000,
        "{saved} answers before the interrupt"
    );
    assert!(
        first
            .stderr
            .contains(&format!("saved {saved} answers to {resume}")),
        "{}",
        first.stderr
    );

    let mut c = lab.0.scanner_cmd(env!("CARGO_BIN_EXE_portscope"));
    c.args(["scan", "--resume", &resume, "--no-progress"])
        .current_dir(&dir.0);
    let resumed = run_bounded(c, Duration::from_secs(60));
    ok(&resumed);
    // Exactly the unanswered pairs went out: round 0 for the rest, and two retries for each
    // of the 8 silently filtered ports in 1-20000 (one when the resumed first round's
    // answers alone bound the loss: `retry::quiet_first_retry_suffices`).
    let answered_now = 20_000 - saved - 8;
    let retries = if portscope_core::retry::quiet_first_retry_suffices(&[answered_now, 0]) {
        1
    } else {
        2
    };
    assert_eq!(
        probes_sent(&resumed.stderr),
        20_000 - saved + 8 * retries,
        "{}",
        resumed.stderr
    );
    assert_eq!(
        parse_ndjson(&resumed.stdout).len(),
        20_000,
        "every pair once, merged"
    );
    assert!(
        !Path::new(&resume).exists(),
        "a finished resume removes its file"
    );
    assert_valid_nmap_xml(&xml);

    // The same scan, uninterrupted, writes the same hosts and ports.
    let (gnmap2, xml2) = (dir.path("u.gnmap"), dir.path("u.xml"));
    let mut fast = args(&gnmap2, &xml2);
    fast[4] = "100000".into();
    let whole = run_bounded(
        portscope(
            &lab,
            &dir,
            &fast.iter().map(String::as_str).collect::<Vec<_>>(),
        ),
        Duration::from_secs(60),
    );
    ok(&whole);
    let body = |p: &str, keep: &dyn Fn(&str) -> bool| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| keep(l))
            .map(str::to_owned)
            .collect()
    };
    let hosts = |l: &str| l.starts_with("Host: ");
    let ports = |l: &str| l.contains("<port ") || l.contains("<extraports");
    assert_eq!(body(&gnmap, &hosts), body(&gnmap2, &hosts));
    assert_eq!(body(&xml, &ports), body(&xml2, &ports));
    assert_eq!(body(&xml, &ports).len(), 20_000);
}

#[test]
fn nmap_flags_target_lists_and_status_lines_on_a_real_scan() {
    let lab = lab_with("c", LabConfig::default());
    let _serial = serial();
    let dir = Scratch::new("flags");
    let list = dir.path("targets.txt");
    std::fs::write(&list, "# lab hosts\n198.18.0.2\n2001:2::2 198.18.0.3\n").unwrap();
    let exclude = dir.path("exclude.txt");
    std::fs::write(&exclude, "198.18.0.3\n").unwrap();
    let base = dir.path("web");
    let r = scan_ok(
        &lab,
        &dir,
        &[
            "-iL",
            &list,
            "--exclude-file",
            &exclude,
            "-F",
            "--exclude-ports",
            "80",
            "-oA",
            &base,
            "--format",
            "ndjson",
            "--rate",
            "200",
            "--stats-every",
            "100ms",
        ],
        Duration::from_secs(60),
    );
    // Exactly the truth on nmap's 100 most common ports but 80, for both hosts.
    let truth = lab.0.truth().clone();
    let mut want = BTreeSet::new();
    let top: Vec<u16> = include_str!("../data/top-ports-tcp.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(|p| p.parse().unwrap())
        .take(100)
        .filter(|p| *p != 80)
        .collect();
    for addr in ["198.18.0.2", "2001:2::2"] {
        let h = truth.host(addr.parse().unwrap()).unwrap();
        for &p in &top {
            let state = match h.expected(p) {
                Expected::Open => "open",
                Expected::Closed => continue,
                Expected::FilteredIcmp | Expected::FilteredSilent => "filtered",
            };
            want.insert((addr.to_owned(), p, state.to_owned()));
        }
    }
    let got: BTreeSet<_> = parse_ndjson(&r.stdout)
        .into_iter()
        .map(|x| (x.ip.to_string(), x.port, x.state.as_str().to_owned()))
        .collect();
    assert_eq!(got, want);
    // -oA wrote all three, and the XML validates against nmap's DTD.
    assert_valid_nmap_xml(&format!("{base}.xml"));
    let xml = std::fs::read_to_string(format!("{base}.xml")).unwrap();
    assert!(
        xml.contains(r#"<nmaprun scanner="nmap""#) && xml.contains("<times srtt="),
        "{xml}"
    );
    assert!(xml.contains(r#"<host starttime=""#), "{xml}");
    let gnmap = std::fs::read_to_string(format!("{base}.gnmap")).unwrap();
    assert!(
        gnmap.contains(
            "Host: 198.18.0.2 ()\tPorts: 22/open/tcp//ssh///, 23/filtered/tcp//telnet///"
        ),
        "{gnmap}"
    );
    let normal = std::fs::read_to_string(format!("{base}.nmap")).unwrap();
    assert!(
        normal.contains("Discovered open port 22/tcp on 198.18.0.2"),
        "{normal}"
    );
    assert!(normal.contains("Scan report for 2001:2::2"), "{normal}");
    // About 200 probes at 200/s: at least one status line, each within 80 columns.
    let status: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("portscope: status ["))
        .collect();
    assert!(!status.is_empty(), "{}", r.stderr);
    for l in &status {
        assert!(
            l.len() - "portscope: status ".len() <= 79 && l.contains(" open, "),
            "{l}"
        );
    }
}

#[test]
fn a_syn_proxy_is_one_flag_not_thousands_of_open_ports() {
    let lab = lab_with(
        "d",
        LabConfig {
            syn_proxy: true,
            ..LabConfig::default()
        },
    );
    let _serial = serial();
    let dir = Scratch::new("proxy");
    let xml = dir.path("p.xml");
    let r = scan_ok(
        &lab,
        &dir,
        &[
            SYN_PROXY,
            "198.18.0.2",
            "-p",
            "1-5000",
            "--rate",
            "20000",
            "-oX",
            &xml,
            "--format",
            "ndjson",
        ],
        Duration::from_secs(60),
    );
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let proxy: Vec<_> = lines.iter().filter(|v| v["ip"] == SYN_PROXY).collect();
    assert_eq!(proxy.len(), 1, "one flag line, no open ports: {proxy:?}");
    assert_eq!(proxy[0]["flag"], "syn-proxy");
    assert_eq!(proxy[0]["ports"], 5000);
    assert!(
        proxy[0]["open_answers"].as_u64().unwrap() >= 4900,
        "{proxy:?}"
    );
    // The real host's open ports still come through.
    let real_open = lines
        .iter()
        .filter(|v| v["ip"] == "198.18.0.2" && v["state"] == "open")
        .count();
    assert_eq!(
        real_open, 5,
        "22 25 80 443 3306: BASE_OPEN below 5000: {}",
        r.stdout
    );
    assert!(
        r.stderr.contains(&format!(
            "flagged syn-proxy: {SYN_PROXY} answered SYN-ACK on"
        )),
        "{}",
        r.stderr
    );
    assert_valid_nmap_xml(&xml);
    let text = std::fs::read_to_string(&xml).unwrap();
    assert!(
        text.contains(r#"<script id="portscope-syn-proxy""#),
        "{text}"
    );
    assert!(
        !text.contains(&format!(
            r#"<address addr="{SYN_PROXY}" addrtype="ipv4"/>
<ports><port "#
        )),
        "{text}"
    );
}

#[test]
fn rate_limited_rsts_are_reported_with_the_measured_rate() {
    let lab = lab_with(
        "e",
        LabConfig {
            rst_limit: Some(20_000),
            ..LabConfig::default()
        },
    );
    let _serial = serial();
    let dir = Scratch::new("rst");
    // The target counts the SYNs it gets and the RSTs that pass its limiter; a thread
    // samples both while the scan runs, so the test knows what the limiter really let out
    // during round 0 (which ends when the 65,535th SYN is in). On a busy machine that is far
    // below 20,000/s: while the send thread is descheduled no SYNs arrive, and the
    // limiter's burst of 10 saves nothing of the pause.
    lab.0
        .target_nft(
            "table inet clirst {\n counter syn_in {}\n counter rst_out {}\n\
             chain pre { type filter hook prerouting priority -300; policy accept;\n\
             tcp flags & (syn | ack) == syn counter name syn_in\n}\n\
             chain post { type filter hook postrouting priority 300; policy accept;\n\
             tcp flags & rst == rst counter name rst_out\n}\n}\n",
        )
        .expect("nft counters in the target");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (r, samples) = std::thread::scope(|sc| {
        let sampler = sc.spawn(|| {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = lab
                    .0
                    .target_nft_query(&["list", "counters", "table", "inet", "clirst"])
                    .expect("list the counters");
                let (mut name, mut syn, mut rst) = ("", 0u64, 0u64);
                for l in text.lines().map(str::trim) {
                    if let Some(n) = l.strip_prefix("counter ") {
                        name = n.trim_end_matches(" {");
                    } else if let Some(rest) = l.strip_prefix("packets ") {
                        let n = rest.split(' ').next().unwrap().parse().unwrap();
                        match name {
                            "syn_in" => syn = n,
                            "rst_out" => rst = n,
                            _ => {}
                        }
                    }
                }
                samples.push((Instant::now(), syn, rst));
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        });
        // Stops the sampler however the scan ends (a panic here must not hang the scope).
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(50));
        let r = scan_ok(
            &lab,
            &dir,
            &[
                "198.18.0.2",
                "-p",
                "-",
                "--rate",
                "100000",
                "--format",
                "ndjson",
            ],
            Duration::from_secs(120),
        );
        drop(_stop);
        (r, sampler.join().unwrap())
    });
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("portscope: RST answers are rate-limited by the target: "))
        .unwrap_or_else(|| panic!("no rate-limit line: {}", r.stderr));
    let rate = limited_rate(line);
    // Round 0 as the target saw it: from the last sample before its first SYN to the first
    // sample with all 65,535 in (so the interval is a little long, the rate a little low).
    let start = samples
        .iter()
        .rposition(|s| s.1 == 0)
        .expect("a sample before the scan");
    let end = samples
        .iter()
        .position(|s| s.1 >= 65_535)
        .expect("a sample after round 0");
    let (t0, _, rst0) = samples[start];
    let (t1, _, rst1) = samples[end];
    let limiter = (rst1 - rst0) as f64 / t1.duration_since(t0).as_secs_f64();
    eprintln!("{line}; target's counters over round 0: {limiter:.0}/s");
    // The scanner's figure (round-0 answers over the time they took to arrive, timed by the
    // engine's receive thread) is what the limiter let out, and never above its limit.
    assert!(rate <= 20_000.0 * 1.2, "{line}");
    assert!(
        (0.7 * limiter..=1.5 * limiter).contains(&rate),
        "{line}; the target's counters say {limiter:.0}/s over round 0 ({} samples)",
        end - start
    );
}

#[test]
fn ttl_sets_the_probes_ttl_and_hop_limit() {
    let lab = lab_with("f", LabConfig::default());
    let _serial = serial();
    let dir = Scratch::new("ttl");
    // Count, in the target, SYNs from the scanner that arrive with TTL / hop limit 33.
    lab.0
        .target_nft(
            "table inet clittl {\n\
         chain c { type filter hook prerouting priority -300; policy accept;\n\
         ip saddr 198.18.0.1 tcp flags syn ip ttl 33 counter\n\
         ip6 saddr 2001:2::1 tcp flags syn ip6 hoplimit 33 counter\n}\n}\n",
        )
        .expect("nft counters in the target");
    scan_ok(
        &lab,
        &dir,
        &[
            "198.18.0.2",
            "2001:2::2",
            "-p",
            "1-100",
            "--ttl",
            "33",
            "--retries",
            "0",
            "--format",
            "ndjson",
        ],
        Duration::from_secs(30),
    );
    let text = lab
        .0
        .target_nft_query(&["list", "chain", "inet", "clittl", "c"])
        .expect("list the counters");
    let counts: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("counter packets ").nth(1))
        .map(|rest| rest.split(' ').next().unwrap())
        .collect();
    assert_eq!(counts, ["100", "100"], "{text}");
    // Nothing else may ask for a TTL of 0.
    let zero = run_bounded(
        portscope(&lab, &dir, &["198.18.0.2", "-p", "80", "--ttl", "0"]),
        Duration::from_secs(10),
    );
    assert_eq!(zero.status.code(), Some(64), "{}", zero.stderr);
}

#[test]
fn rate_limited_icmp_is_retried_until_answered_and_reported_with_its_rate() {
    // Ports 40000-40999 answer ICMP admin-prohibited, at most 1,000 a second; the scan asks
    // 4,000 probes a second of them, so most answer only a retry. Each must still come out filtered by its ICMP answer
    // (not guessed from silence), and the summary names the rate the target lets out.
    let lab = lab_with(
        "i",
        LabConfig {
            icmp_range: true,
            icmp_limit: Some(1_000),
            ..LabConfig::default()
        },
    );
    let host = truth_of(&lab, "198.18.0.2");
    let _serial = serial();
    let dir = Scratch::new("icmp");
    let r = scan_ok(
        &lab,
        &dir,
        &[
            "198.18.0.2",
            "-p",
            "39990-41009",
            "--rate",
            "4000",
            "--format",
            "ndjson",
        ],
        Duration::from_secs(60),
    );
    let results = parse_ndjson(&r.stdout);
    assert_true_answers(&host, &results);
    let icmp: BTreeSet<u16> = results
        .iter()
        .filter(|p| p.reason == Reason::IcmpUnreachable && p.icmp_code == Some(13))
        .map(|p| p.port)
        .collect();
    assert_eq!(
        icmp,
        xtask::lab::truth::ICMP_RANGE.collect(),
        "{}",
        r.stderr
    );
    assert_eq!(
        results.len(),
        1000,
        "closed ports are not shown: {}",
        r.stderr
    );
    // The report needs the target to have limited: a send thread starved of CPU (a loaded
    // machine) that averages under twice the limit is not refused enough to tell. Above
    // that, the line is required.
    let sent_rate: f64 = r
        .stderr
        .lines()
        .find_map(|l| l.split("probes sent (").nth(1))
        .and_then(per_second)
        .unwrap_or_else(|| panic!("no summary: {}", r.stderr));
    let line = r.stderr.lines().find(|l| {
        l.starts_with("portscope: ICMP unreachable answers are rate-limited by the target: ")
    });
    let Some(line) = line else {
        assert!(sent_rate < 2_000.0, "no rate-limit line: {}", r.stderr);
        eprintln!("sent at {sent_rate}/s only (a loaded machine): the limiter was not reached");
        return;
    };
    let rate = limited_rate(line);
    eprintln!("{line}");
    // 1,000 a second, plus the limiter's burst of 50 over a first round of about 0.25 s.
    assert!((600.0..=1_800.0).contains(&rate), "{line}");
    assert!(
        !r.stderr.contains("RST answers are rate-limited"),
        "{}",
        r.stderr
    );
}
