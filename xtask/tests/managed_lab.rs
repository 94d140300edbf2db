//! End-to-end test of managed scans (issue 4) in the lab: a token scoped to a /28 of lab
//! hosts deep-scans that /28 through the control API and the engine daemon; the results
//! match the lab's ground truth host by host; a port opened between two scans raises
//! exactly one alert; the fix file names it; scans outside the scope are refused.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::up_lab;
use xtask::lab::{Expected, LabConfig};
use xtask::stack::{Stack, StackOptions};

mod support;

const NET: &str = "198.19.0.16/28";
const CLIENT: &str = "198.18.0.2";
const NEW_HOST: &str = "198.19.0.20";
const NEW_PORT: u16 = 4444;

fn api(s: &Stack, token: &str, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    s.bearer(CLIENT, token, method, path, body).unwrap()
}

/// Polls a managed scan until it is final, within the 60 requests/minute limit.
fn wait_final(s: &Stack, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (code, v) = api(s, token, "GET", &format!("/api/v1/scan/{id}"), None);
        assert_eq!(code, 200, "{v}");
        match v["status"].as_str() {
            Some("complete") => return v,
            Some("failed") | Some("cancelled") => panic!("scan ended {v}\n{}", s.logs()),
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "scan not final: {v}\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(1100));
    }
}

/// Open and filtered ports per host from a scan's `results`.
fn by_host(v: &Value) -> BTreeMap<IpAddr, (BTreeSet<u16>, BTreeSet<u16>)> {
    let mut m: BTreeMap<IpAddr, (BTreeSet<u16>, BTreeSet<u16>)> = BTreeMap::new();
    for r in v["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {v}"))
    {
        let host: IpAddr = r["host"].as_str().unwrap().parse().unwrap();
        let port = r["port"].as_u64().unwrap() as u16;
        let e = m.entry(host).or_default();
        match r["state"].as_str() {
            Some("open") => e.0.insert(port),
            Some("filtered") => e.1.insert(port),
            other => panic!("unexpected state {other:?} in {r}"),
        };
    }
    m
}

#[test]
fn token_scoped_deep_scan_of_a_slash_28_alerts_and_fix_file() {
    let lab = up_lab(&LabConfig::new(
        format!("m{}", std::process::id() % 10_000),
        32,
    ));
    let s = Stack::up(lab, StackOptions::default()).expect("engine and API up");
    let token = s.create_token("e2e", &[NET], 100).unwrap();

    // Outside the scope: refused before anything is queued.
    let (code, v) = api(
        &s,
        &token,
        "POST",
        "/api/v1/scan",
        Some(r#"{"target":"198.18.0.2","profile":"deep"}"#),
    );
    assert_eq!(code, 403, "{v}");
    let (code, _) = api(&s, "pst_0000", "GET", "/api/v1/scans", None);
    assert_eq!(code, 401);

    // Deep scan of the /28 (one multi-host engine scan).
    let t0 = Instant::now();
    let (code, v) = api(
        &s,
        &token,
        "POST",
        "/api/v1/scan",
        Some(&format!(r#"{{"target":"{NET}","profile":"deep"}}"#)),
    );
    assert_eq!(code, 201, "{v}\n{}", s.logs());
    let first = v["id"].as_str().unwrap().to_string();
    let done = wait_final(&s, &token, &first);
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "managed deep scan of {NET}: POST to complete in {secs:.1} s (poll granularity 1.1 s), {:.0} probes/s lower bound",
        16.0 * 65_535.0 / secs
    );
    let truth = s.lab.truth().clone();
    let found = by_host(&done);
    for k in 16..32u8 {
        let addr: IpAddr = format!("198.19.0.{k}").parse().unwrap();
        let host = truth
            .host(addr)
            .unwrap_or_else(|| panic!("{addr} in truth"));
        let want_open: BTreeSet<u16> = (1..=65535)
            .filter(|p| host.expected(*p) == Expected::Open)
            .collect();
        let want_filtered: BTreeSet<u16> = (1..=65535)
            .filter(|p| {
                matches!(
                    host.expected(*p),
                    Expected::FilteredSilent | Expected::FilteredIcmp
                )
            })
            .collect();
        let (open, filtered) = found.get(&addr).cloned().unwrap_or_default();
        assert_eq!(open, want_open, "{addr} open");
        assert_eq!(filtered, want_filtered, "{addr} filtered");
    }
    assert_eq!(found.len(), 16, "no results outside the /28");

    // Open a new port on one host, then retest: exactly one new-open-port alert.
    let mut listener = s
        .lab
        .target_cmd("/usr/bin/python3")
        .arg("-c")
        .arg(format!(
            "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('{NEW_HOST}',{NEW_PORT}))\ns.listen(64)\nprint('ready',flush=True)\ntime.sleep(120)"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(listener.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let (code, v) = api(
        &s,
        &token,
        "POST",
        &format!("/api/v1/scan/{first}/retest"),
        None,
    );
    assert_eq!(code, 201, "{v}");
    let second = v["id"].as_str().unwrap().to_string();
    let done2 = wait_final(&s, &token, &second);
    let _ = listener.kill();
    let _ = listener.wait();
    let found2 = by_host(&done2);
    assert!(
        found2[&NEW_HOST.parse::<IpAddr>().unwrap()]
            .0
            .contains(&NEW_PORT),
        "the new port is open"
    );

    let (code, alerts) = api(&s, &token, "GET", "/api/v1/alerts", None);
    assert_eq!(code, 200, "{alerts}");
    let list: Vec<&Value> = alerts["alerts"]
        .as_array()
        .or(alerts.as_array())
        .expect("alert list")
        .iter()
        .collect();
    assert_eq!(list.len(), 1, "exactly one alert: {alerts}");
    let a = list[0];
    assert_eq!(
        (a["type"].as_str(), a["host"].as_str(), a["port"].as_u64()),
        (
            Some("new_open_port"),
            Some(NEW_HOST),
            Some(u64::from(NEW_PORT))
        ),
        "{a}"
    );

    let fix = s
        .http(
            CLIENT,
            "GET",
            &format!("{}/api/v1/scan/{second}/fix", s.url_v4()),
            &["-H", &format!("Authorization: Bearer {token}")],
        )
        .unwrap();
    assert_eq!(fix.status, 200);
    assert!(
        fix.body.starts_with("---\n") && fix.body.contains("format: security-fix/v1"),
        "{}",
        fix.body
    );
    assert!(
        fix.body.contains(&NEW_PORT.to_string()) && fix.body.contains(NEW_HOST),
        "the fix file names the new port: {}",
        fix.body
    );
}
