//! Seed 002's Python quick start, verbatim but for the base URL and key, against the real
//! stack in the lab: the engine daemon probes, the API runs as `nobody`, and the client
//! (httpx, from the venv `.ci/setup` makes) runs in the target namespace. `myapp.com`, the
//! snippet's host, resolves to a lab host through the scanner namespace's own
//! `/etc/netns/<ns>/hosts` (which `ip netns exec` mounts over `/etc/hosts` for the API).
//! The findings it prints must be the lab's ground truth: one per open fast-profile port.
//! Then an `httpx-sse` client reads a managed scan's live event stream from the real
//! engine; the ports streamed must be the ground truth too.
//! Needs root and the workspace binaries.

use serde_json::Value;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use support::up_lab;
use xtask::lab::{Expected, LabConfig};
use xtask::stack::{Stack, StackOptions};

mod support;

/// The lab host `myapp.com` names.
const HOST: &str = "198.19.0.20";
const CLIENT: &str = "198.18.0.2";

/// Removes `/etc/netns/<ns>` when the test ends.
struct NetnsEtc(PathBuf);

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn python() -> PathBuf {
    let p = std::env::var_os("PORTSCOPE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/portscope-pytools/bin/python"));
    assert!(
        p.exists(),
        "no Python with httpx at {} (run .ci/setup)",
        p.display()
    );
    p
}

/// Writes `script` (name, text) into `dir` and runs it there with the venv's Python in the
/// target namespace, with `args` and no proxy; its stdout, once it has exited 0.
fn run_python(s: &Stack, dir: &Path, (name, script): (&str, &str), args: &[&str]) -> String {
    std::fs::write(dir.join(name), script).unwrap();
    let out = s
        .lab
        .target_cmd(python())
        .arg(name)
        .args(args)
        .current_dir(dir)
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name}: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.logs()
    );
    stdout
}

#[test]
fn seed_002_python_quick_start_against_the_lab_stack() {
    let lab = up_lab(&LabConfig::new(
        format!("q{}", std::process::id() % 10_000),
        32,
    ));
    let etc = PathBuf::from("/etc/netns").join(lab.scanner_ns());
    std::fs::create_dir_all(&etc).unwrap();
    let _etc = NetnsEtc(etc.clone());
    std::fs::write(
        etc.join("hosts"),
        format!("127.0.0.1 localhost\n{HOST} myapp.com\n"),
    )
    .unwrap();
    let s = Stack::up(lab, StackOptions::default()).expect("engine and API up");
    let key = s
        .create_token("seed002", &["198.19.0.16/28", "myapp.com"], 10)
        .unwrap();

    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../control-api/tests/seed_clients/002_quickstart.py"
    ))
    .unwrap()
    .replace("https://securityscanner.dev", &s.url_v4())
    .replace("sk-sec-YOUR_KEY", &key);
    let dir = tempfile_dir();
    let stdout = run_python(&s, &dir, ("quickstart.py", &seed), &[]);

    // Ground truth: one finding per open port of the host among the fast profile's.
    let get = |path: &str| {
        let (status, v) = s.bearer(CLIENT, &key, "GET", path, None).unwrap();
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    };
    let runs = get("/v1/runs");
    let run_id = runs["runs"][0]["run_id"].as_str().unwrap().to_string();
    let scan = get(&format!("/api/v1/scan/{run_id}"));
    assert_eq!(scan["addresses"], serde_json::json!([HOST]), "{scan}");
    let probed: BTreeSet<u16> = scan["ports"]
        .as_str()
        .unwrap()
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    let addr: IpAddr = HOST.parse().unwrap();
    let truth = s.lab.truth().host(addr).unwrap();
    let want: BTreeSet<u16> = probed
        .iter()
        .copied()
        .filter(|p| truth.expected(*p) == Expected::Open)
        .collect();
    let found: BTreeSet<u16> = scan["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "open")
        .map(|r| r["port"].as_u64().unwrap() as u16)
        .collect();
    assert_eq!(found, want, "open ports against ground truth");
    assert!(!want.is_empty(), "the lab host has open fast-profile ports");
    eprintln!("seed 002 quick start in the lab: {stdout}");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("Found {} findings", want.len()).as_str()),
        "{stdout}"
    );
    let titled: BTreeSet<u16> = lines
        .map(|l| {
            let port = l.split(" (").nth(1).and_then(|r| r.split('/').next());
            port.and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("finding line {l:?}"))
        })
        .collect();
    assert_eq!(titled, want, "one finding per open port:\n{stdout}");
    let fix = std::fs::read_to_string(dir.join("SECURITY-FIX.md")).unwrap();
    assert!(fix.starts_with("---\nformat: security-fix/v1\n"), "{fix}");
    assert!(fix.contains("myapp.com"), "{fix}");

    // Live results from the real engine: an httpx-sse client starts a scan of another
    // host and reads its event stream to the end; the ports it was sent are the truth.
    let stdout = run_python(
        &s,
        &dir,
        ("events.py", EVENTS),
        &[&s.url_v4(), &key, EVENTS_HOST],
    );
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "result", "{stdout}");
    assert_eq!(last["data"]["status"], "complete", "{stdout}");
    let streamed = |state: &str| -> BTreeSet<u16> {
        events
            .iter()
            .filter(|e| e["event"] == "port" && e["data"]["state"] == state)
            .map(|e| e["data"]["port"].as_u64().unwrap() as u16)
            .collect()
    };
    let host = s.lab.truth().host(EVENTS_HOST.parse().unwrap()).unwrap();
    let truth = |f: &dyn Fn(Expected) -> bool| -> BTreeSet<u16> {
        (1..=EVENTS_PORTS)
            .filter(|p| f(host.expected(*p)))
            .collect()
    };
    assert_eq!(
        streamed("open"),
        truth(&|e| e == Expected::Open),
        "{stdout}"
    );
    assert_eq!(
        streamed("filtered"),
        truth(&|e| matches!(e, Expected::FilteredSilent | Expected::FilteredIcmp)),
        "{stdout}"
    );
    assert!(!streamed("open").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The host and port range of the event-stream scan.
const EVENTS_HOST: &str = "198.19.0.21";
const EVENTS_PORTS: u16 = 4000;

/// Starts a scan and prints its event stream, one JSON line per event.
const EVENTS: &str = r#"
import json, sys, httpx
from httpx_sse import connect_sse
base, key, host = sys.argv[1], sys.argv[2], sys.argv[3]
h = {"Authorization": f"Bearer {key}"}
r = httpx.post(f"{base}/api/v1/scan", headers=h,
               json={"target": host, "profile": "custom", "ports": "1-4000"})
assert r.status_code == 201, r.text
sid = r.json()["id"]
with httpx.Client(timeout=120) as c:
    with connect_sse(c, "GET", f"{base}/api/v1/scan/{sid}/events", headers=h) as es:
        for sse in es.iter_sse():
            print(json.dumps({"event": sse.event, "data": sse.json()}), flush=True)
"#;

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("portscope-seed002-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
