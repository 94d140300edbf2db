//! The seeds' own client snippets (`tests/seed_clients/`, copied from the API documents)
//! run against a live API on 127.0.0.1 with only the base URL, the key and the example
//! id replaced: seed 000's curl quick start, seed 002's curl / Python (httpx) /
//! JavaScript (node) quick start, targets and runs, seed 003's curl examples; then seed
//! 002's error shapes over real HTTP. The engine is the fake (nothing is probed): a task
//! finishes every managed scan it is given with ports 22, 443 and 6379 open. The same
//! Python quick start runs against the real engine in the lab in
//! `xtask/tests/seed002_lab.rs`.

mod support;

use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use support::managed::{unscheduled, M};

const SNIPPETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/seed_clients");
/// What a finished fake scan found on the host of `myapp.com`.
const OPEN: [u16; 3] = [22, 443, 6379];

fn python() -> PathBuf {
    support::pytool("python", "PORTSCOPE_PYTHON")
}

/// A snippet with the seeds' base URLs, keys and example ids replaced.
fn snippet(name: &str, base: &str, key: &str, id: Option<&str>) -> String {
    let mut s = std::fs::read_to_string(Path::new(SNIPPETS).join(name)).unwrap();
    for url in [
        "https://securityscanner.dev",
        "https://your-scanner-domain",
        "https://api.portscan.com",
    ] {
        s = s.replace(url, base);
    }
    s = s
        .replace("sk-sec-YOUR_KEY", key)
        .replace("YOUR_API_TOKEN", key);
    if let Some(id) = id {
        s = s
            .replace("a1b2c3d4-e5f6-7890-abcd-ef1234567890", id)
            .replace("abc12345", id);
    }
    s
}

/// Runs the snippet `name` (`sh`, `py` or `mjs`) in `dir` against `base` with `key` (and
/// the example id replaced by `id`); returns stdout, panics on failure.
async fn run(dir: &Path, name: &str, base: &str, key: &str, id: Option<&str>) -> String {
    let code = snippet(name, base, key, id);
    let (program, file, text): (PathBuf, &str, String) = match name.rsplit('.').next() {
        Some("py") => (python(), "snippet.py", code),
        Some("mjs") => (
            PathBuf::from("node"),
            "snippet.mjs",
            // ES module with top-level await that also calls `require`.
            format!(
                "import {{ createRequire }} from \"node:module\"; const require = createRequire(import.meta.url);\n{code}"
            ),
        ),
        _ => (PathBuf::from("bash"), "snippet.sh", format!("set -e\n{code}")),
    };
    std::fs::write(dir.join(file), text).unwrap();
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(file).current_dir(dir).kill_on_drop(true);
    for v in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("NO_PROXY", "*").env("no_proxy", "*");
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{name} ran over 90 s"))
        .unwrap_or_else(|e| panic!("{name} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The API with the fake engine on 127.0.0.1; `myapp.com` and `staging.myapp.com`
/// resolve into the lab range, and 192.168.1.0/24 (seed 003's example) is allowed.
async fn api() -> (Arc<M>, String, String) {
    let m = M::with(
        |c| {
            c.allow_target.push("192.168.1.0/24".parse().unwrap());
            c.allow_target.push("127.0.0.0/8".parse().unwrap());
        },
        unscheduled(1000),
    )
    .await;
    m.dns.set("myapp.com", &["198.18.0.5"]);
    m.dns.set("staging.myapp.com", &["198.18.0.6"]);
    let key = m
        .token(
            "seed-clients",
            &[
                "198.18.0.0/15",
                "myapp.com",
                "*.myapp.com",
                "192.168.1.0/24",
            ],
            1000,
            10,
        )
        .await;
    let base = support::serve_on_loopback(m.router.clone()).await;
    (Arc::new(m), base, key)
}

/// Finishes every managed scan of `myapp.com` the fake engine is given (the scan
/// engine's part), until the test ends.
fn finish_scans(m: &Arc<M>) {
    let m = m.clone();
    tokio::spawn(async move {
        let mut done = HashSet::new();
        loop {
            for (id, targets, _) in m.submits().await {
                if targets == ["198.18.0.5"] && done.insert(id.clone()) {
                    let open: Vec<(&str, u16)> = OPEN.iter().map(|p| ("198.18.0.5", *p)).collect();
                    m.complete_with(&id, &open).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

fn check_fix_file(dir: &Path) {
    let fix = std::fs::read_to_string(dir.join("SECURITY-FIX.md")).unwrap();
    assert!(fix.starts_with("---\nformat: security-fix/v1\n"), "{fix}");
    assert!(fix.contains("Redis (6379/tcp)"), "{fix}");
    std::fs::remove_file(dir.join("SECURITY-FIX.md")).unwrap();
}

/// The API with its scans finished, and seed 002's quick start in `ext` (`py`, `mjs`) run
/// against it in a fresh directory: its printed findings and its SECURITY-FIX.md checked.
async fn quickstart(ext: &str) -> (Arc<M>, String, String, tempfile::TempDir) {
    let (m, base, key) = api().await;
    finish_scans(&m);
    let dir = tempfile::tempdir().unwrap();
    let name = format!("002_quickstart.{ext}");
    let out = run(dir.path(), &name, &base, &key, None).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "Found 3 findings",
            "  [CRITICAL] Redis (6379/tcp) exposed on 198.18.0.5",
            "  [LOW] SSH (22/tcp) exposed on 198.18.0.5",
            "  [INFO] HTTPS (443/tcp) exposed on 198.18.0.5",
        ],
        "{out}"
    );
    check_fix_file(dir.path());
    (m, base, key, dir)
}

/// One request over real HTTP: (status, headers, JSON body or Null).
async fn call(
    method: reqwest::Method,
    url: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut r = c.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&b).unwrap());
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    let h = r.headers().clone();
    let b = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    (s, h, b)
}

async fn runs(base: &str, key: &str) -> Value {
    call(reqwest::Method::GET, &format!("{base}/v1/runs"), key, None)
        .await
        .2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_python_and_curl_snippets_run_verbatim() {
    let (_m, base, key, dir) = quickstart("py").await;
    let first = runs(&base, &key).await["runs"][0].clone();
    let run_id = first["run_id"].as_str().unwrap().to_string();
    assert_eq!(first["status"], "completed");
    assert_eq!(first["target"], "myapp.com");

    // Targets: the scan created myapp.com; the snippet adds staging.
    run(dir.path(), "002_targets.py", &base, &key, None).await;
    let out = run(dir.path(), "002_runs.py", &base, &key, None).await;
    assert_eq!(out, format!("{run_id} myapp.com 3\n"));

    // curl: trigger (a new run), poll the finished run, download its fix file.
    let out = run(dir.path(), "002_quickstart.sh", &base, &key, Some(&run_id)).await;
    let (started, rest) = out.split_once('}').unwrap();
    let started: Value = serde_json::from_str(&format!("{started}}}")).unwrap();
    assert_eq!(started["status"], "started");
    assert_eq!(started["target"], "myapp.com");
    let new_id = started["run_id"].as_str().unwrap();
    assert_eq!(
        started["check_status_url"],
        format!("{base}/v1/scan/{new_id}")
    );
    let polled: Value = serde_json::from_str(rest).unwrap();
    assert_eq!(polled["run_id"], run_id);
    assert_eq!(polled["status"], "completed");
    assert_eq!(polled["summary"]["total"], 3);
    assert_eq!(polled["summary"]["critical"], 1);
    assert!(polled["finished_at"].as_str().unwrap().ends_with("+00:00"));
    assert_eq!(polled["fix_url"], format!("{base}/v1/scan/{run_id}/fix"));
    let f = &polled["findings"][0];
    for field in [
        "target",
        "severity",
        "category",
        "title",
        "description",
        "evidence",
        "tool",
    ] {
        assert!(f[field].is_string(), "finding field {field}: {f}");
    }
    check_fix_file(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_javascript_snippets_run_verbatim_in_node() {
    let (_m, base, key, dir) = quickstart("mjs").await;
    run(dir.path(), "002_targets.mjs", &base, &key, None).await;
    let out = run(dir.path(), "002_runs.mjs", &base, &key, None).await;
    let run_id = runs(&base, &key).await["runs"][0]["id"].clone();
    assert_eq!(out, format!("{} myapp.com 3\n", run_id.as_str().unwrap()));
    let (_, _, targets) = call(
        reqwest::Method::GET,
        &format!("{base}/v1/targets"),
        &key,
        None,
    )
    .await;
    let hosts: Vec<&str> = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts.len(), 2, "{targets}");
    assert!(hosts.contains(&"myapp.com") && hosts.contains(&"staging.myapp.com"));
    let staging = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["host"] == "staging.myapp.com")
        .unwrap();
    assert_eq!(staging["label"], "staging");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_and_000_curl_examples_run_verbatim() {
    let (m, base, key) = api().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let out = run(d, "003_submit.sh", &base, &key, None).await;
    let submitted: Value = serde_json::from_str(&out).unwrap();
    let id = submitted["id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    assert_eq!(submitted["status"], "queued");
    assert!(submitted["reportUrl"]
        .as_str()
        .unwrap()
        .starts_with(&format!("/report/{id}?key=")));
    m.complete_with(&id, &[("192.168.1.1", 22)]).await;

    let out = run(d, "003_status.sh", &base, &key, Some(&id)).await;
    let docs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let [status, first10, filtered, retest] = &docs[..] else {
        panic!("four answers expected:\n{out}")
    };
    assert_eq!(status["id"], id);
    assert_eq!(status["target"], "192.168.1.1");
    assert_eq!(status["domain"], "example.com");
    assert_eq!(status["status"], "complete");
    assert!(status["grade"].is_string() && status["gradeScore"].is_i64());
    for list in [first10, filtered] {
        assert_eq!(list["total"], 1);
        assert_eq!(list["scans"][0]["id"], id);
        assert_eq!(list["scans"][0]["target"], "192.168.1.1");
    }
    assert_eq!(first10["limit"], 10);
    assert_eq!(filtered["limit"], 50);
    let new = retest["id"].as_str().unwrap();
    assert_ne!(new, id);
    assert_eq!(retest["status"], "queued");

    let out = run(d, "003_cancel.sh", &base, &key, Some(new)).await;
    let cancelled: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        cancelled,
        serde_json::json!({"id": new, "status": "cancelled"})
    );

    // Seed 000: the requester (127.0.0.1, allowed here) is the target.
    let out = run(d, "000_quickstart.sh", &base, &key, None).await;
    let (post, get) = out.split_once('}').unwrap();
    let post: Value = serde_json::from_str(&format!("{post}}}")).unwrap();
    let get: Value = serde_json::from_str(get).unwrap();
    assert_eq!(post["status"], "queued");
    assert_eq!(post["ip"], "127.0.0.1");
    assert_eq!(get["ip"], "127.0.0.1");
    assert_eq!(get["scan_type"], "fast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_error_shapes() {
    use reqwest::Method;
    use serde_json::json;
    let (m, base, key) = api().await;
    let url = |p: &str| format!("{base}{p}");
    let (s, _, b) = call(Method::GET, &url("/v1/runs"), "sk-sec-nope", None).await;
    assert_eq!((s, b), (401, json!({"error": "unauthorized"})));
    let (s, _, b) = call(Method::GET, &url("/v1/scan/abc12345"), &key, None).await;
    assert_eq!((s, b), (404, json!({"error": "not found"})));
    let bad = json!({"host": "ftp://myapp.com"});
    let (s, _, b) = call(Method::POST, &url("/v1/scan"), &key, Some(bad)).await;
    assert_eq!(s, 400);
    assert!(b["error"].as_str().unwrap().contains("http"), "{b}");
    assert_eq!(b.as_object().unwrap().len(), 1);
    let add = json!({"host": "https://myapp.com", "label": "prod"});
    let (s, _, created) = call(Method::POST, &url("/v1/targets"), &key, Some(add.clone())).await;
    assert_eq!(s, 201, "{created}");
    assert_eq!(
        (created["host"].clone(), created["label"].clone()),
        (json!("myapp.com"), json!("prod"))
    );
    let (s, _, b) = call(Method::POST, &url("/v1/targets"), &key, Some(add)).await;
    assert_eq!(
        (s, b),
        (
            409,
            json!({"error": "target exists", "target_id": created["id"]})
        )
    );
    // Out of scope: 403 with the reason.
    let out = json!({"host": "198.51.100.7"});
    let (s, _, b) = call(Method::POST, &url("/v1/scan"), &key, Some(out)).await;
    assert_eq!(s, 403, "{b}");
    assert!(b["error"].as_str().unwrap().contains("scope"), "{b}");
    // A monitor is a daily or weekly schedule of the target, HIGH alerts and up.
    let mon = json!({"target": "https://myapp.com", "frequency": "daily"});
    let (s, _, b) = call(Method::POST, &url("/api/monitors"), &key, Some(mon)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        (b["id"].clone(), b["interval"].clone()),
        (created["id"].clone(), json!(86_400))
    );
    assert_eq!(b["alert_min_severity"], "HIGH");
    let (_, _, b) = call(Method::GET, &url("/api/monitors"), &key, None).await;
    assert_eq!(b["monitors"][0]["frequency"], "daily");
    let del = url(&format!("/api/targets/{}", created["id"].as_str().unwrap()));
    assert_eq!(call(Method::DELETE, &del, &key, None).await.0, 204);
    assert_eq!(call(Method::DELETE, &del, &key, None).await.0, 404);
    // The per-IP limit (60 a minute, shared with /api/v1): seed 002's 429 body.
    let mut limited = None;
    for _ in 0..60 {
        let r = call(Method::GET, &url("/v1/runs"), &key, None).await;
        if r.0 == 429 {
            limited = Some(r);
            break;
        }
    }
    let (_, h, b) = limited.expect("the 60-a-minute limit was never reached");
    assert_eq!(b["error"], "rate limit");
    assert!(b["retry_after"].as_u64().unwrap() >= 1, "{b}");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(h["x-ratelimit-remaining"], "0");
    // A live scan of the target: 409 with its run; a monthly quota: seed 002's 402.
    let one = m.token("one-scan", &["198.18.0.0/15"], 1, 1).await;
    m.clock.advance(Duration::from_secs(61));
    let host = json!({"host": "198.18.0.9"});
    let (s, _, b) = call(Method::POST, &url("/v1/scan"), &one, Some(host.clone())).await;
    assert_eq!(s, 201, "{b}");
    let (s, _, b) = call(Method::POST, &url("/v1/scan"), &one, Some(host.clone())).await;
    assert_eq!(s, 409, "the first scan is still running: {b}");
    assert!(
        uuid::Uuid::parse_str(b["run_id"].as_str().unwrap()).is_ok(),
        "{b}"
    );
    let id = m.submits().await.last().unwrap().0.clone();
    m.complete_with(&id, &[]).await;
    let (s, _, b) = call(Method::POST, &url("/v1/scan"), &one, Some(host)).await;
    assert_eq!(s, 402, "{b}");
    assert!(b["error"].as_str().unwrap().contains("monthly"), "{b}");
}
