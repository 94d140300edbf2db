//! Issue 10 (hardening) for the control API: each test reproduces one finding against the
//! real router (or a real socket, or the real binary) and asserts the exact refusal.
//! Scan targets only ever reach the fake engine; sockets are on loopback only.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use portscope_control_api::model::Status;
use portscope_control_api::serve::{serve_with_headers, ConnLimits};
use portscope_proto::Event;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::managed::{alert_kinds, unscheduled, M};
use support::Reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// An API with a token `t` for 198.18.0.0/24 (100 scans a month, 10 at once).
async fn with_token() -> (M, String) {
    let m = M::new().await;
    let token = m.token("t", &["198.18.0.0/24"], 100, 10).await;
    (m, token)
}

/// POST `/v1/fast` with an `X-Callback-Url`, from 198.18.7.7.
async fn fast_with_callback(m: &M, url: &str) -> Reply {
    let req = Request::post("/v1/fast")
        .header("x-callback-url", url)
        .body(Body::empty())
        .unwrap();
    support::oneshot(&m.router, req, "198.18.7.7").await
}

// ---- 1: idle and slow connections -------------------------------------------------

/// Connects from a chosen loopback source address.
async fn connect_from(src: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(src.parse().unwrap(), 0))?;
    s.connect(to).await
}

/// Reads until EOF or `limit`; what was read.
async fn read_all(s: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Asserts that a plain GET from `from` (one connection, closed after) is answered 200.
async fn assert_served(from: &str, addr: SocketAddr) {
    let mut s = connect_from(from, addr).await.unwrap();
    s.write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let text = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:.200}");
}

async fn serve_on_loopback(m: &M, limits: ConnLimits) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = m.router.clone();
    let headers = portscope_control_api::http::protocol_headers(&m.state);
    tokio::spawn(serve_with_headers(
        listener,
        router,
        limits,
        Some(headers),
        std::future::pending(),
    ));
    addr
}

#[tokio::test]
async fn idle_connections_are_capped_and_timed_out_while_real_clients_are_served() {
    let m = M::new().await;
    let limits = ConnLimits {
        header_read: Duration::from_millis(1500),
        idle: Duration::from_secs(5),
        per_ip: 16,
        total: 512,
    };
    let addr = serve_on_loopback(&m, limits).await;
    // 300 connections from one address that start a request head and never finish it.
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        let mut s = connect_from("127.0.0.2", addr).await.unwrap();
        let _ = s.write_all(b"GET /v1/fast HTTP/1.1\r\nHost: x\r\n").await;
        idle.push(s);
    }
    // Everything past the per-address cap is answered at once with the JSON 429.
    for s in idle.iter_mut().skip(16) {
        let text = read_all(s, Duration::from_secs(2)).await;
        assert!(
            text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{text:?}"
        );
        assert!(text.contains(r#""error":"too_many_connections""#), "{text}");
        assert!(text.contains("at most 16"), "{text}");
        refused += 1;
    }
    assert_eq!(refused, 284);
    // A legitimate client from another address is served meanwhile, promptly.
    let t = Instant::now();
    for _ in 0..5 {
        assert_served("127.0.0.3", addr).await;
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // The 16 admitted slow connections are closed by the header-read timeout.
    let t = Instant::now();
    for s in idle.iter_mut().take(16) {
        let text = read_all(s, Duration::from_secs(5)).await;
        assert!(!text.contains("200 OK"), "{text}");
    }
    let waited = t.elapsed();
    assert!(waited < Duration::from_secs(4), "closed after {waited:?}");
    // Their slots are free again: the same address is admitted and served.
    drop(idle);
    assert_served("127.0.0.2", addr).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let m = M::new().await;
    let limits = ConnLimits {
        header_read: Duration::from_millis(800),
        ..ConnLimits::default()
    };
    let addr = serve_on_loopback(&m, limits).await;
    let mut s = connect_from("127.0.0.4", addr).await.unwrap();
    s.write_all(b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let text = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
    let held = t.elapsed();
    assert!(held < Duration::from_secs(3), "kept open {held:?}");
}

// ---- 9: hyper's own errors are JSON ------------------------------------------------

#[tokio::test]
async fn protocol_errors_hyper_answers_itself_are_json() {
    let m = M::new().await;
    let addr = serve_on_loopback(&m, ConnLimits::default()).await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(500_000)
    );
    let many_headers: String = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    for (req, status, code) in [
        (
            "GARBAGE\r\n\r\n".to_string(),
            "400 Bad Request",
            "bad_request",
        ),
        (long_uri, "414 URI Too Long", "uri_too_long"),
        (
            big_header,
            "431 Request Header Fields Too Large",
            "header_fields_too_large",
        ),
        (
            many_headers,
            "431 Request Header Fields Too Large",
            "header_fields_too_large",
        ),
    ] {
        let mut s = connect_from("127.0.0.5", addr).await.unwrap();
        let _ = s.write_all(req.as_bytes()).await;
        let text = read_all(&mut s, Duration::from_secs(5)).await;
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{text:.300}"
        );
        assert!(
            text.contains("content-type: application/json\r\n"),
            "{text:.300}"
        );
        // Not counted (the router never saw it), but the client learns its edge budget.
        assert!(
            text.contains(
                "x-ratelimit-limit: 30\r\nx-ratelimit-remaining: 30\r\nx-ratelimit-reset: "
            ),
            "{text:.400}"
        );
        let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error"], code, "{text:.300}");
    }
}

#[tokio::test]
async fn chunked_bodies_over_the_limit_are_413_on_every_route() {
    let m = M::new().await;
    let token = m.token("t", &["198.18.0.0/15"], 100, 10).await;
    let addr = serve_on_loopback(&m, ConnLimits::default()).await;
    // 20 chunks of 1 KiB, no Content-Length: over the 16 KiB limit only when read.
    let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
    let body = format!("{}0\r\n\r\n", chunk.repeat(20));
    for (path, extra) in [
        (
            "/api/v1/scan",
            format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
        ),
        ("/v1/fast", String::new()),
    ] {
        let mut s = connect_from("127.0.0.6", addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Transfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n"
        );
        let _ = s.write_all(head.as_bytes()).await;
        let _ = s.write_all(body.as_bytes()).await;
        let text = read_all(&mut s, Duration::from_secs(5)).await;
        assert!(
            text.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
            "{path}: {text:.300}"
        );
        assert!(
            text.contains(r#""error":"payload_too_large""#),
            "{path}: {text}"
        );
    }
    assert!(m.submits().await.is_empty());
    assert!(m.engine.submitted_ids().is_empty());
}

#[tokio::test]
async fn a_request_without_authorization_gets_401_even_past_the_rate_limit() {
    let m = M::new().await;
    let from = "198.18.9.9";
    for _ in 0..60 {
        let r = m
            .send(Method::GET, "/api/v1/scans", Some("wrong"), None, from)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = m
        .send(Method::GET, "/api/v1/scans", Some("wrong"), None, from)
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let r = m.send(Method::GET, "/api/v1/scans", None, None, from).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    assert_eq!(r.body["error"], "unauthorized");
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
}

// ---- 2: opt-out inside a CIDR -------------------------------------------------------

#[tokio::test]
async fn an_opted_out_host_inside_a_cidr_refuses_the_whole_scan() {
    let (_dir, list) = support::temp_file("opt-out.txt", "198.19.0.16\n2001:2::40/126\n");
    let m = M::with(|c| c.opt_out = Some(list.clone()), unscheduled(1000)).await;
    let token = m
        .token("t", &["198.19.0.0/16", "2001:2::/48"], 100, 10)
        .await;
    for (target, named) in [
        ("198.19.0.16", "198.19.0.16 is opted out"),
        ("198.19.0.0/27", "198.19.0.0/27 includes 198.19.0.16/32"),
        ("198.19.0.0/16", "includes 198.19.0.16/32"),
        ("2001:2::/120", "2001:2::/120 includes 2001:2::40/126"),
    ] {
        let r = m
            .post_json("/api/v1/scan", &token, json!({"target": target}))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{target}: {}", r.text);
        let msg = r.body["message"].as_str().unwrap();
        assert!(msg.contains(named), "{target}: {msg}");
        let r = m.save_target(&token, json!({"target": target})).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{target}: {}", r.text);
    }
    assert!(m.submits().await.is_empty());
    // The neighbouring /27 does not contain it.
    let r = m
        .post_json("/api/v1/scan", &token, json!({"target": "198.19.0.32/27"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
}

// ---- 3: false alerts ----------------------------------------------------------------

#[tokio::test]
async fn alerts_compare_only_ports_both_scans_covered_with_one_severity_rule() {
    let (m, token) = with_token().await;
    let host = "198.18.0.5";
    let deep = m
        .scan_with(&token, json!({"target": host, "ports": "1-9000"}))
        .await;
    m.complete_with(&deep, &[(host, 22), (host, 8080)]).await;
    // A narrower scan: 22 and 80 only. 22 closed, 80 newly open; 8080 was not probed.
    let narrow = m
        .scan_with(&token, json!({"target": host, "ports": "22,80"}))
        .await;
    m.complete_with(&narrow, &[(host, 80)]).await;
    let got = alert_kinds(&m.get("/api/v1/alerts", &token).await);
    let scan = m.get(&format!("/api/v1/scan/{narrow}"), &token).await;
    let finding = scan.body["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["port"] == 80)
        .unwrap()["severity"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(finding, "MEDIUM");
    assert_eq!(
        got,
        vec![
            ("new_open_port".to_string(), 80, finding),
            ("port_closed".to_string(), 22, "INFO".to_string()),
        ]
    );
}

// ---- 4: numeric bounds ------------------------------------------------------------------

#[tokio::test]
async fn intervals_and_offsets_are_bounded() {
    let (m, token) = with_token().await;
    for bad in [i64::MAX, 366 * 86_400 + 1, 299, -1] {
        let r = m
            .save_target(&token, json!({"target": "198.18.0.9", "interval": bad}))
            .await;
        r.assert_message(StatusCode::BAD_REQUEST, "between 300 and 31622400 seconds");
    }
    let r = m
        .save_target(
            &token,
            json!({"target": "198.18.0.9", "interval": 366 * 86_400}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["nextRunAt"], "2025-04-02T03:06:40.000Z");
    // Due only after the interval: a scheduler round now starts nothing.
    assert_eq!(m.state.managed().run_due().await, 0);
    let r = m
        .get("/api/v1/scans?offset=9223372036854775807", &token)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

// ---- 5: size checked up front, refusals cost no quota ---------------------------------

#[tokio::test]
async fn oversized_scans_are_refused_up_front_and_engine_refusals_cost_no_quota() {
    let m = M::new().await;
    let token = m.token("t", &["198.18.0.0/15"], 1, 10).await;
    let huge = json!({"target": "198.18.0.0/16", "profile": "deep"});
    let r = m.post_json("/api/v1/scan", &token, huge.clone()).await;
    r.assert_message(StatusCode::BAD_REQUEST, "at most 536870912 probes per scan");
    let r = m.save_target(&token, huge).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(m.submits().await.is_empty());
    // A deep /24 fits (256 x 65,535 pairs).
    let id = m
        .scan_with(
            &token,
            json!({"target": "198.18.1.0/24", "profile": "deep"}),
        )
        .await;
    assert_eq!(
        m.chunks(&id).await,
        1024,
        "256 hosts x 4 chunks of 16,384 ports"
    );
    // The engine refuses a chunk as invalid: no other run can change that, so the scan
    // fails at once with the engine's reason.
    let run = m.run_of(&id, 0).await;
    m.engine.emit(Event::Rejected {
        id: run.run,
        code: "invalid".into(),
        message: "scan too large".into(),
    });
    m.wait_status(&id, Status::Failed).await;
    assert_eq!(m.row(&id).await.error.as_deref(), Some("rejected_invalid"));
    // The month's only scan was refused by the engine: the quota is untouched.
    let r = m
        .post_json("/api/v1/scan", &token, json!({"target": "198.18.1.1"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = m
        .post_json("/api/v1/scan", &token, json!({"target": "198.18.1.2"}))
        .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.body["error"], "monthly_limit");
}

// ---- 6 and 7: callbacks -----------------------------------------------------------------

#[tokio::test]
async fn reserved_ipv6_forms_of_internal_addresses_are_refused_as_callbacks() {
    let (m, token) = with_token().await;
    for url in [
        "http://[::127.0.0.1]/",
        "http://[::10.0.0.1]/x",
        "http://[64:ff9b::169.254.169.254]/",
        "http://[2002:a00:1::]/",
        "http://[100::1]/",
    ] {
        let r = fast_with_callback(&m, url).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            r.text
        );
        assert_eq!(r.body["error"], "invalid_callback", "{url}");
        let r = m
            .save_target(&token, json!({"target": "198.18.0.9", "webhookUrl": url}))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{url}: {}", r.text);
        assert!(r.text.contains("not a public address"), "{url}: {}", r.text);
    }
    assert!(m.engine.submitted_ids().is_empty());
}

#[tokio::test]
async fn a_ninth_callback_on_a_coalesced_scan_is_refused_with_the_limit() {
    let m = M::with(
        |c| c.allow_callback.push("127.0.0.0/8".parse().unwrap()),
        unscheduled(1000),
    )
    .await;
    for i in 0..8 {
        let url = format!("http://127.0.0.1:9/hook{i}");
        let r = fast_with_callback(&m, &url).await;
        assert_eq!(r.status, StatusCode::OK, "{i}: {}", r.text);
    }
    let r = fast_with_callback(&m, "http://127.0.0.1:9/hook8").await;
    r.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_callback");
    r.assert_message(StatusCode::UNPROCESSABLE_ENTITY, "8 callback URLs");
    // A URL it already carries still joins.
    let r = fast_with_callback(&m, "http://127.0.0.1:9/hook3").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        m.state.scans().store().count().await.unwrap(),
        1,
        "one scan"
    );
}

// ---- 10: managed scans fail when their chunk never reaches an engine ------------------

/// An engine away for good: each run of the scan's chunk waits for it for the connect
/// bound and is retried; the last attempt the queue allows fails the scan with
/// `engine_unavailable` (no grace-period clock: the queue's attempts are the bound).
#[tokio::test]
async fn managed_scans_fail_with_engine_unavailable_after_their_chunk_attempts() {
    let m = M::with(|c| c.maintenance_interval_ms = 20, unscheduled(1000)).await;
    let token = m.token("t", &["198.18.0.0/24"], 100, 10).await;
    m.engine.disconnect();
    let r = m
        .post_json("/api/v1/scan", &token, json!({"target": "198.18.0.5"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(m.row(&id).await.status, Status::Queued);
    m.wait_status(&id, Status::Failed).await;
    assert_eq!(
        m.row(&id).await.error.as_deref(),
        Some("engine_unavailable")
    );
    let jobs =
        portscope_control_api::store::jobs::JobStore::new(m.state.managed().store().pool().clone());
    assert!(
        jobs.chunks(&id).await.unwrap()[0].runs >= 2,
        "the chunk was retried"
    );
}

// ---- 12: secrets at rest and privileges --------------------------------------------------

#[tokio::test]
async fn report_keys_are_derived_not_stored_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (m, token) = with_token().await;
    let r = m
        .post_json("/api/v1/scan", &token, json!({"target": "198.18.0.5"}))
        .await;
    let url = r.body["reportUrl"].as_str().unwrap().to_string();
    let id = r.created_id();
    let key = url.split("key=").nth(1).unwrap().to_string();
    assert_eq!(key.len(), 48);
    let stored = m
        .state
        .managed()
        .store()
        .pool()
        .fetch_strings("SELECT report_key FROM managed_scans")
        .await
        .unwrap();
    assert_eq!(stored, vec![String::new()]);
    let g = m.get(&format!("/api/v1/scan/{id}"), &token).await;
    assert_eq!(g.body["reportUrl"], url.as_str());
    let page = m.send(Method::GET, &url, None, None, "198.18.0.77").await;
    assert_eq!(page.status, StatusCode::OK);
    let wrong = m
        .send(
            Method::GET,
            &format!("/report/{id}?key={}", "0".repeat(48)),
            None,
            None,
            "198.18.0.77",
        )
        .await;
    assert_eq!(wrong.status, StatusCode::NOT_FOUND);
    // On PostgreSQL (`cargo xtask pg`) there is no database file, only the secret file.
    let on_pg = std::env::var("PORTSCOPE_TEST_PG").is_ok_and(|v| !v.is_empty());
    let files: &[&str] = if on_pg {
        &["portscope.db.secret"]
    } else {
        &["portscope.db", "portscope.db.secret"]
    };
    for f in files {
        let mode = std::fs::metadata(m.dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // The same key after a restart (the secret is on disk, outside the database).
    let m = m.restart(unscheduled(1000)).await;
    let g = m.get(&format!("/api/v1/scan/{id}"), &token).await;
    assert_eq!(g.body["reportUrl"], url.as_str());
}

/// One field of /proc/PID/status.
fn status_field(pid: u32, name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
}

#[test]
fn the_api_binary_holds_no_privileges() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portscope-api"))
        .args(["--listen", "127.0.0.1:0", "--engine-socket"])
        .arg(dir.path().join("none.sock"))
        .arg("--db")
        .arg(dir.path().join("api.db"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Wait until the database exists (the runtime and the listener are up).
    while !dir.path().join("api.db").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let fields: Vec<Option<String>> = [
        "NoNewPrivs",
        "CapEff",
        "CapPrm",
        "CapInh",
        "CapAmb",
        "CapBnd",
    ]
    .iter()
    .map(|f| status_field(pid, f))
    .collect();
    let root = status_field(std::process::id(), "Uid")
        .is_some_and(|u| u.split_whitespace().nth(1) == Some("0"));
    child.kill().unwrap();
    child.wait().unwrap();
    let zero = Some("0000000000000000".to_string());
    assert_eq!(fields[0].as_deref(), Some("1"), "NoNewPrivs");
    for (i, name) in ["CapEff", "CapPrm", "CapInh", "CapAmb"].iter().enumerate() {
        assert_eq!(fields[i + 1], zero, "{name}");
    }
    if root {
        // Started as root it may, and must, empty the bounding set too.
        assert_eq!(fields[5], zero, "CapBnd");
    }
}
