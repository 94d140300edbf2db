//! End-to-end tests of the service in the lab: the engine daemon and the control API run in
//! the scanner namespace, clients in the target namespace POST and poll the self-scan API
//! (seed 000) as lab hosts, and results are compared with the lab's ground truth port by
//! port. Also the faults: engine killed mid-scan, API restarted mid-scan, engine restarted.
//! Needs root and the workspace binaries (`cargo test --workspace` builds them).

use serde_json::Value;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use xtask::lab::{LabConfig, LabGuard};
use xtask::stack::{expect_ports_of, HttpReply, Stack, StackOptions, FAST_PORTS};

/// One stack at a time: two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// The stack in a lab of its own, with the lock that keeps it the only one (hold both to the
/// end of the test: the stack drops first).
fn stack(tag: &str, hosts: u32, opts: StackOptions) -> (MutexGuard<'static, ()>, Stack) {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("s{}{}", std::process::id() % 10_000, tag);
    let lab = LabGuard::up(&LabConfig::new(name, hosts)).expect("lab up (needs root)");
    (serial, Stack::up(lab, opts).expect("engine and API up"))
}

/// The engine at `rate` probes per second.
fn engine_rate(rate: u32) -> StackOptions {
    StackOptions {
        engine_args: vec!["--rate".into(), rate.to_string()],
        ..StackOptions::default()
    }
}

/// `POST url` from `source`, which must be accepted (200).
fn post_ok(s: &Stack, source: &str, url: &str) -> HttpReply {
    let r = s.http(source, "POST", url, &[]).unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.body, s.logs());
    r
}

/// Polls `GET url` from `source` until the scan is complete or failed (bounded), every
/// 2.1 s: the API's edge limit is 30 requests per IP per minute, and a client that keeps
/// to it never sees a 429.
fn poll_until_final(s: &Stack, source: &str, url: &str, limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let r = s.http(source, "GET", url, &[]).expect("GET");
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json().unwrap();
        match v["status"].as_str() {
            Some("complete") | Some("failed") => return v,
            Some("queued") | Some("running") => {}
            other => panic!("unexpected status {other:?}: {v}\n{}", s.logs()),
        }
        assert!(
            Instant::now() < deadline,
            "scan not final after {limit:?}: {v}\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(2100));
    }
}

/// Asserts a complete result equals the truth of `addr` over `ports`.
fn assert_result_matches_truth(s: &Stack, v: &Value, addr: &str, ports: &[u16]) {
    assert_eq!(v["status"], "complete", "{v}\n{}", s.logs());
    assert_eq!(v["ip"], addr);
    let host = s
        .lab
        .truth()
        .host(addr.parse::<IpAddr>().unwrap())
        .unwrap()
        .clone();
    let (want_open, want_filtered) = host.open_and_filtered(ports);
    assert_eq!(expect_ports_of(v, "ports_open"), want_open, "open ports");
    assert_eq!(
        expect_ports_of(v, "ports_filtered"),
        want_filtered,
        "filtered ports"
    );
    for p in v["ports_open"].as_array().unwrap() {
        assert_eq!(p["state"], "open");
    }
    assert!(
        v["duration_ms"].as_u64().is_some()
            && v["completed_at"].as_u64().is_some()
            && v["expires_at"].as_u64().is_some(),
        "{v}"
    );
    assert_eq!(
        v["expires_at"].as_u64().unwrap() - v["completed_at"].as_u64().unwrap(),
        86_400,
        "results expire after 24 h"
    );
}

#[test]
fn deep_scan_of_the_requester_matches_truth_ipv4() {
    let (_serial, s) = stack("a", 0, StackOptions::default());
    let url = format!("{}/v1/deep", s.url_v4());
    let r = post_ok(&s, "198.18.0.2", &url);
    let v = r.json().unwrap();
    assert_eq!(
        (v["ip"].as_str(), v["scan_type"].as_str()),
        (Some("198.18.0.2"), Some("deep"))
    );
    assert!(
        matches!(v["status"].as_str(), Some("queued") | Some("running")),
        "{v}"
    );
    assert!(
        r.header("x-ratelimit-limit").is_some()
            && r.header("x-ratelimit-remaining").is_some()
            && r.header("x-ratelimit-reset").is_some()
    );
    let t0 = Instant::now();
    let v = poll_until_final(&s, "198.18.0.2", &url, Duration::from_secs(120));
    eprintln!("deep scan POST-to-complete: {:?}", t0.elapsed());
    let all: Vec<u16> = (1..=65535).collect();
    assert_result_matches_truth(&s, &v, "198.18.0.2", &all);
    let last = s.http("198.18.0.2", "GET", &url, &[]).unwrap();
    assert!(
        last.header("x-scan-duration-ms").is_some(),
        "X-Scan-Duration-Ms on completed results"
    );
    assert_engine_confined(&s);
}

/// The engine, started as root, scanned exactly the truth above as `nobody` with only
/// CAP_NET_RAW (bit 13), an empty bounding set, no_new_privs and a seccomp filter.
fn assert_engine_confined(s: &Stack) {
    let pid = s.engine_pid().expect("engine running");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:\t")))
            .unwrap_or_else(|| panic!("no {name} in\n{status}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let nobody = xtask::stack::API_UID.to_string();
    assert_eq!(
        field("Uid"),
        [nobody.as_str(); 4],
        "real, effective, saved, fs uid"
    );
    assert_eq!(field("Gid")[..3], [nobody.as_str(); 3]);
    let net_raw = format!("{:016x}", 1u64 << 13);
    for set in ["CapEff", "CapPrm"] {
        assert_eq!(field(set), [net_raw.as_str()], "{set}: CAP_NET_RAW only");
    }
    for (name, want) in [
        ("CapInh", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
        ("CapBnd", "0000000000000000"),
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
    ] {
        assert_eq!(field(name), [want], "{name}");
    }
    let log = std::fs::read_to_string(s.log_paths().0).unwrap();
    assert!(
        log.contains("confined: CAP_NET_RAW only") && log.contains("seccomp=Enforce"),
        "{log}"
    );
}

#[test]
fn fast_scan_ipv6_and_the_other_hosts_view() {
    let (_serial, s) = stack("b", 2, StackOptions::default());
    // IPv6 requester: the target is its own address.
    let url6 = format!("{}/v1/fast", s.url_v6());
    post_ok(&s, "2001:2::2", &url6);
    let v = poll_until_final(&s, "2001:2::2", &url6, Duration::from_secs(60));
    assert_result_matches_truth(&s, &v, "2001:2::2", &FAST_PORTS);
    // An extra host asking for its own fast scan gets its own address scanned.
    let url = format!("{}/v1/fast", s.url_v4());
    post_ok(&s, "198.19.0.1", &url);
    let v = poll_until_final(&s, "198.19.0.1", &url, Duration::from_secs(60));
    assert_eq!(v["ip"], "198.19.0.1");
    // Nobody else's scan: 198.19.0.2 has none.
    let none = s
        .http("198.19.0.2", "GET", &url, &[])
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(none["status"], "none");
}

#[test]
fn engine_killed_mid_scan_fails_the_scan_and_a_restarted_engine_serves_again() {
    let (_serial, mut s) = stack(
        "c",
        0,
        StackOptions {
            // Give up on a vanished engine after 5 s instead of 30.
            api_config: Some("engine-grace-secs = 5\n".into()),
            // Slow enough that the scan is still running when the engine dies.
            ..engine_rate(5000)
        },
    );
    let url = format!("{}/v1/deep", s.url_v4());
    post_ok(&s, "198.18.0.2", &url);
    std::thread::sleep(Duration::from_millis(1500));
    s.stop_engine(true);
    let v = poll_until_final(&s, "198.18.0.2", &url, Duration::from_secs(60));
    assert_eq!(v["status"], "failed", "{v}");
    let reason = v["fail_reason"].as_str().unwrap_or("");
    assert!(
        reason == "engine_restarted" || reason == "engine_unavailable",
        "{v}"
    );
    assert!(v["total_chunks"].as_u64() == Some(32), "{v}");
    // Engine back: the API reconnects and a new scan (of another requester) completes.
    s.start_engine().unwrap();
    let fast = format!("{}/v1/fast", s.url_v4());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.http("198.18.0.2", "POST", &fast, &[]).unwrap();
        if r.status == 200 {
            let v = poll_until_final(&s, "198.18.0.2", &fast, Duration::from_secs(60));
            if v["status"] == "complete" {
                break;
            }
        } else {
            // Until the API has reconnected it answers 503 engine_unavailable.
            assert_eq!(r.status, 503, "{}", r.body);
        }
        assert!(
            Instant::now() < deadline,
            "no complete scan after the engine restart\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(2100));
    }
}

#[test]
fn api_restarted_mid_scan_loses_nothing() {
    let (_serial, mut s) = stack("d", 0, engine_rate(20_000));
    let url = format!("{}/v1/deep", s.url_v4());
    post_ok(&s, "198.18.0.2", &url);
    std::thread::sleep(Duration::from_millis(800));
    s.stop_api(true);
    std::thread::sleep(Duration::from_millis(500));
    s.start_api().unwrap();
    let v = poll_until_final(&s, "198.18.0.2", &url, Duration::from_secs(120));
    let all: Vec<u16> = (1..=65535).collect();
    assert_result_matches_truth(&s, &v, "198.18.0.2", &all);
}

#[test]
fn malformed_frame_on_the_engine_socket_does_not_crash_it() {
    let (_serial, mut s) = stack("e", 0, StackOptions::default());
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(3)\ns.connect(sys.argv[1])\n\
             s.sendall(b'\\xff\\xff\\xff\\xffgarbage')\nd=b''\ntry:\n  while True:\n    c=s.recv(4096)\n    if not c: break\n    d+=c\nexcept Exception: pass\nprint(d)",
        )
        .arg(s.socket())
        .output()
        .unwrap();
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        reply.contains("error"),
        "an error frame comes back: {reply}"
    );
    assert!(s.engine_running(), "the engine survived\n{}", s.logs());
    let fast = format!("{}/v1/fast", s.url_v4());
    post_ok(&s, "198.18.0.2", &fast);
    let v = poll_until_final(&s, "198.18.0.2", &fast, Duration::from_secs(60));
    assert_eq!(v["status"], "complete", "{v}");
}

#[test]
fn webhook_is_received_by_a_receiver_in_the_lab() {
    let (_serial, s) = stack("f", 0, StackOptions::default());
    // A one-shot HTTP receiver on the lab host, bounded to 60 s, printing the body it got.
    let receiver = s
        .lab
        .target_cmd("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import http.server,sys,socketserver\n\
             class H(http.server.BaseHTTPRequestHandler):\n\
             \x20 def do_POST(self):\n\
             \x20   n=int(self.headers.get('Content-Length',0)); b=self.rfile.read(n)\n\
             \x20   self.send_response(204); self.end_headers(); sys.stdout.write(b.decode()); sys.stdout.flush()\n\
             \x20   raise SystemExit\n\
             s=http.server.HTTPServer(('198.18.0.2',9999),H); s.timeout=60\n\
             s.handle_request()",
        )
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let url = format!("{}/v1/fast", s.url_v4());
    let r = s
        .http(
            "198.18.0.2",
            "POST",
            &url,
            &["-H", "X-Callback-Url: http://198.18.0.2:9999/hook"],
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let out = receiver.wait_with_output().unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("webhook body {body:?}: {e}\n{}", s.logs()));
    assert_eq!(
        (v["ip"].as_str(), v["scan_type"].as_str()),
        (Some("198.18.0.2"), Some("fast"))
    );
    assert_result_matches_truth(&s, &v, "198.18.0.2", &FAST_PORTS);
    // A callback to a non-public address outside the allowed lab range is refused up front.
    let bad = s
        .http(
            "198.18.0.2",
            "POST",
            &format!("{}/v1/deep", s.url_v4()),
            &["-H", "X-Callback-Url: http://127.0.0.1:9/x"],
        )
        .unwrap();
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(bad.json().unwrap()["error"], "invalid_callback");
}
