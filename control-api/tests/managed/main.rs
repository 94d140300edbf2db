//! The managed-scan API (`/api/v1`, issue 4) end to end in-process: tokens and 401, scope
//! enforcement (IPs, CIDRs, names, retest, trigger-all, scheduler), quotas, the per-IP
//! limit and its headers, the scan lifecycle with partial results, pagination, targets,
//! alerts, findings, SECURITY-FIX.md, the report page and monitor webhooks. Saved targets,
//! the scheduler, alerts, reports and monitors are in `targets.rs`.

mod callbacks;
mod large;
#[path = "../support/mod.rs"]
mod support;
mod targets;

use axum::http::{Method, StatusCode};
use portscope_control_api::managed::service::ManagedSettings;
use portscope_control_api::model::Status;
use portscope_core::results::PortState::{Filtered, Open};
use serde_json::{json, Value};
use std::time::Duration;
use support::managed::{delivery_jobs, unscheduled, M};
use support::T0_MS;

const SCOPE: &[&str] = &[
    "198.18.0.0/24",
    "2001:2::/64",
    "app.example.com",
    "*.lab.example",
];

async fn setup() -> (M, String) {
    let m = M::new().await;
    let t = m.token("ci", SCOPE, 1000, 50).await;
    (m, t)
}

fn scan_body(target: &str) -> Option<Value> {
    Some(json!({ "target": target }))
}

#[tokio::test]
async fn missing_invalid_and_revoked_tokens_get_401_json() {
    let (m, t) = setup().await;
    for (auth, why) in [
        (None, "missing"),
        (Some("pst_0000"), "invalid"),
        (Some("garbage"), "invalid"),
    ] {
        let r = m
            .send(Method::GET, "/api/v1/scans", auth, None, "127.0.0.1")
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{why}");
        assert_eq!(r.body["error"], "unauthorized");
        assert!(r.body["message"].as_str().unwrap().len() > 5);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("ratelimit-limit"), Some("60"));
    }
    // Basic auth is not accepted.
    let r = m
        .send(Method::GET, "/api/v1/scans", None, None, "127.0.0.1")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(m.get("/api/v1/scans", &t).await.status, StatusCode::OK);
    // Revoked: 401 from then on.
    portscope_control_api::managed::tokens::revoke(m.state.managed().store().pool(), "ci", 1)
        .await
        .unwrap();
    let r = m.get("/api/v1/scans", &t).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["message"], "invalid or revoked API token");
    // Only the hash is stored.
    let stored = m
        .state
        .managed()
        .store()
        .pool()
        .fetch_strings("SELECT token_hash FROM api_tokens")
        .await
        .unwrap()
        .remove(0);
    assert_ne!(stored, t);
    assert_eq!(stored.len(), 64);
}

#[tokio::test]
async fn per_ip_limit_is_60_per_minute_with_ratelimit_headers() {
    let (m, t) = setup().await;
    for i in 0..60u32 {
        let r = m
            .send(Method::GET, "/api/v1/scans", Some(&t), None, "127.0.0.9")
            .await;
        assert_eq!(r.status, StatusCode::OK, "request {i}");
        assert_eq!(r.header("ratelimit-limit"), Some("60"));
        assert_eq!(
            r.header("ratelimit-remaining"),
            Some((59 - i).to_string().as_str())
        );
        assert_eq!(r.header("ratelimit-reset"), Some("60"));
        // Seed 001's spelling of the same numbers.
        assert_eq!(r.header("x-ratelimit-limit"), Some("60"));
        assert_eq!(
            r.header("x-ratelimit-remaining"),
            r.header("ratelimit-remaining")
        );
        assert_eq!(r.header("x-ratelimit-reset"), Some("60"));
    }
    m.clock.advance(Duration::from_secs(20));
    // 401s and 404s count too; the 61st is refused.
    let r = m
        .send(Method::GET, "/api/v1/nope", None, None, "127.0.0.9")
        .await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(r.header("retry-after"), Some("40"));
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("ratelimit-reset"), Some("40"));
    // Another address is not affected; the window resets.
    let r = m
        .send(Method::GET, "/api/v1/scans", Some(&t), None, "::1")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    m.clock.advance(Duration::from_secs(40));
    let r = m
        .send(Method::GET, "/api/v1/scans", Some(&t), None, "127.0.0.9")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("ratelimit-remaining"), Some("59"));
    // Unknown paths under /api/v1 are JSON 404 with the headers.
    let r = m.get("/api/v1/nope", &t).await;
    r.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert!(r.header("ratelimit-limit").is_some());
    let r = m.call(Method::DELETE, "/api/v1/scans", &t, None).await;
    r.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert!(r.header("ratelimit-limit").is_some());
    // The self-scan API keeps its own headers.
    let r = m
        .send(Method::GET, "/v1/fast", None, None, "198.18.0.10")
        .await;
    assert_eq!(r.header("x-ratelimit-limit"), Some("30"));
    assert_eq!(r.header("ratelimit-limit"), None);
}

#[tokio::test]
async fn scan_lifecycle_with_partial_results_grade_and_summary() {
    let (m, t) = setup().await;
    let r = m
        .post_json(
            "/api/v1/scan",
            &t,
            json!({"target": "198.18.0.5", "domain": "app.example.com"}),
        )
        .await;
    let id = r.created_id();
    // Seed 003: a UUID, in its hyphenated form.
    let uuid = uuid::Uuid::parse_str(&id).expect("scan id is a UUID");
    assert_eq!(uuid.hyphenated().to_string(), id);
    assert_eq!(uuid.get_version_num(), 4);
    assert_eq!(r.body["status"], "queued");
    let report = r.body["reportUrl"].as_str().unwrap().to_string();
    assert!(report.starts_with(&format!("/report/{id}?key=")));
    assert_eq!(r.body.as_object().unwrap().len(), 3);
    match &m.submits().await[..] {
        [(sid, targets, ports)] => {
            assert_eq!(sid, &id);
            assert_eq!(targets, &vec!["198.18.0.5".to_string()]);
            // One chunk (a host's fast ports); its port spec in ranges.
            assert!(ports.starts_with("21-23,25"), "{ports}");
        }
        other => panic!("{other:?}"),
    }

    // A worker sent its one chunk to the engine, which queues it.
    m.wait(&id, |r| r.total_chunks == 1).await;
    let r = m.get(&format!("/api/v1/scan/{id}"), &t).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "queued");
    assert_eq!(r.body["domain"], "app.example.com");
    assert_eq!(r.body["createdAt"], "2024-04-01T03:06:40.000Z");
    assert_eq!(r.body["startedAt"], Value::Null);
    assert_eq!(r.body["grade"], Value::Null);
    assert_eq!(
        r.body["progress"],
        json!({"chunksComplete": 0, "totalChunks": 1})
    );

    // The engine runs it: running (the worker's clock, here the API's).
    m.clock.advance(Duration::from_secs(5));
    m.progress(&id, 0).await;
    m.wait(&id, |r| r.status == Status::Running).await;
    let r = m.get(&format!("/api/v1/scan/{id}"), &t).await;
    assert_eq!(r.body["status"], "running");
    assert_eq!(r.body["partial"], true);
    assert_eq!(r.body["startedAt"], "2024-04-01T03:06:45.000Z");
    assert_eq!(r.body["results"], json!([]));

    // Complete: grade from exposure, banners, per-host summary with closed counts.
    m.banners
        .by_port
        .lock()
        .unwrap()
        .insert(22, "SSH-2.0-OpenSSH_9.6".into());
    m.ports(
        &id,
        0,
        &[
            ("198.18.0.5", 22, Open),
            ("198.18.0.5", 25, Filtered),
            ("198.18.0.5", 6379, Open),
        ],
    )
    .await;
    m.clock.advance(Duration::from_secs(10));
    m.finish_chunk(&id, 0, 15_000).await;
    m.wait_status(&id, Status::Complete).await;
    let r = m.get(&format!("/api/v1/scan/{id}"), &t).await;
    assert_eq!(r.body["status"], "complete");
    assert_eq!(r.body["grade"], "D");
    assert_eq!(r.body["gradeScore"], 57);
    assert_eq!(r.body["completedAt"], "2024-04-01T03:06:55.000Z");
    assert_eq!(r.body["partial"], false);
    assert_eq!(r.body["error"], Value::Null);
    assert_eq!(r.body["results"][0]["banner"], "SSH-2.0-OpenSSH_9.6");
    assert_eq!(
        r.body["summary"]["findings"],
        json!({"total": 2, "critical": 1, "high": 0, "medium": 0, "low": 1, "info": 0})
    );
    assert_eq!(r.body["findings"][0]["severity"], "CRITICAL");
    assert_eq!(
        r.body["findings"][0]["title"],
        "Redis (6379/tcp) exposed on 198.18.0.5"
    );
    let r = m.get(&format!("/api/v1/scans/{id}/summary"), &t).await;
    assert_eq!(
        r.body["hosts"],
        json!([{"host": "198.18.0.5", "open": 2, "filtered": 1, "closed": 29}])
    );
    // The plural alias of seed 001.
    assert_eq!(
        m.get(&format!("/api/v1/scans/{id}"), &t).await.body["grade"],
        "D"
    );
    // Cancel after completion: 400.
    let r = m.post(&format!("/api/v1/scan/{id}/cancel"), &t, None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Unknown and other tokens' scans: 404.
    let other = m.token("other", SCOPE, 10, 5).await;
    m.get(&format!("/api/v1/scan/{id}"), &other)
        .await
        .assert_status(StatusCode::NOT_FOUND);
    m.get("/api/v1/scan/m-nope", &t)
        .await
        .assert_status(StatusCode::NOT_FOUND);
}

/// A scan of several chunks shows the committed chunks' ports while the rest run
/// (partial results), and its progress in chunks.
#[tokio::test]
async fn committed_chunks_are_partial_results_while_the_rest_run() {
    let (m, t) = setup().await;
    let id = m
        .scan_with(&t, json!({"target": "198.18.0.5", "profile": "deep"}))
        .await;
    assert_eq!(m.chunks(&id).await, 4, "65,535 ports in chunks of 16,384");
    // The first chunk claim is at T0 (the engine sees a run only after its claim).
    m.run_of(&id, 0).await;
    m.clock.advance(Duration::from_secs(5));
    m.ports(
        &id,
        0,
        &[("198.18.0.5", 22, Open), ("198.18.0.5", 25, Filtered)],
    )
    .await;
    m.finish_chunk(&id, 0, 1000).await;
    m.wait(&id, |r| r.chunks_complete == 1).await;
    let r = m.get(&format!("/api/v1/scan/{id}"), &t).await;
    assert_eq!(r.body["status"], "running");
    assert_eq!(r.body["partial"], true);
    assert_eq!(
        r.body["progress"],
        json!({"chunksComplete": 1, "totalChunks": 4})
    );
    assert_eq!(
        r.body["results"],
        json!([
            {"host": "198.18.0.5", "port": 22, "state": "open", "service": "SSH", "banner": null},
            {"host": "198.18.0.5", "port": 25, "state": "filtered", "service": "SMTP", "banner": null}
        ])
    );
    assert_eq!(r.body["findings"][0]["severity"], "LOW");
    assert_eq!(r.body["summary"]["findings"]["low"], 1);
    // The other chunks commit one after another, 7 s later: 12 s of wall time from the
    // first claim to the last commit, for 4 s of engine time in all.
    m.clock.advance(Duration::from_secs(7));
    for chunk in 1..4 {
        m.finish_chunk(&id, chunk, 1000).await;
        m.wait(&id, |r| r.chunks_complete == i64::from(chunk) + 1)
            .await;
    }
    m.wait_status(&id, Status::Complete).await;
    assert_eq!(
        m.row(&id).await.duration_ms,
        Some(12_000),
        "wall time from the first chunk claim to the last commit, not the engine time summed"
    );
}

#[tokio::test]
async fn failed_and_cancelled_scans() {
    let (m, t) = setup().await;
    let a = m.scan(&t, "198.18.0.6").await;
    // Every attempt of its chunk fails: the last one fails the scan with the reason.
    assert_eq!(m.fail_runs(&a, "timeout").await, 10);
    m.wait_status(&a, Status::Failed).await;
    let r = m.get(&format!("/api/v1/scan/{a}"), &t).await;
    assert_eq!(
        (r.body["status"].as_str(), r.body["error"].as_str()),
        (Some("failed"), Some("timeout"))
    );

    let b = m.scan(&t, "198.18.0.7").await;
    let r = m.post(&format!("/api/v1/scan/{b}/cancel"), &t, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, json!({"id": b, "status": "cancelled"}));
    // A run of its chunk already on the engine completes with ports: nothing is recorded,
    // and a second cancel is 400.
    let runs: Vec<_> = m.chunk_runs().into_iter().filter(|c| c.scan == b).collect();
    for c in &runs {
        m.ports(&b, c.chunk, &[("198.18.0.7", 22, Open)]).await;
        m.finish_chunk(&b, c.chunk, 10).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(m.row(&b).await.status, Status::Cancelled);
    assert!(m
        .state
        .managed()
        .store()
        .ports(&b)
        .await
        .unwrap()
        .is_empty());
    let r = m.post(&format!("/api/v1/scan/{b}/cancel"), &t, None).await;
    r.assert_message(StatusCode::BAD_REQUEST, "already cancelled");
}

#[tokio::test]
async fn a_live_scan_of_the_same_target_is_409_with_existing_id() {
    let (m, t) = setup().await;
    let id = m
        .post("/api/v1/scan", &t, scan_body("198.18.0.8"))
        .await
        .body["id"]
        .clone();
    let r = m
        .post("/api/v1/scan", &t, scan_body("::ffff:198.18.0.8"))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["existingId"], id);
    assert_eq!(r.body["error"], "scan_in_progress");
    // Retest of a live scan is a 409 too.
    let r = m
        .post(
            &format!("/api/v1/scan/{}/retest", id.as_str().unwrap()),
            &t,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(m.submits().await.len(), 1);
}

#[tokio::test]
async fn bad_requests_get_400() {
    let (m, t) = setup().await;
    for body in [
        json!({"target": "not a target!"}),
        json!({"target": ""}),
        json!({"target": "198.18.0.9", "ports": "0-70000"}),
        json!({"target": "198.18.0.9", "profile": "bogus"}),
        json!({"target": "198.18.0.9", "profile": "fast", "ports": "22"}),
        json!({"target": "198.18.0.9", "domain": "no spaces allowed"}),
        json!({"target": "198.18.0.0/2"}),
        json!({"nope": 1}),
    ] {
        let r = m.post("/api/v1/scan", &t, Some(body.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body} -> {}", r.text);
        assert_eq!(r.body["error"], "bad_request");
    }
    let r = m
        .send(Method::POST, "/api/v1/scan", Some(&t), None, "127.0.0.1")
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(m.submits().await.is_empty());
}

#[tokio::test]
async fn scope_is_enforced_before_anything_is_queued() {
    let (m, t) = setup().await;
    m.dns.set("app.example.com", &["198.18.0.20"]);
    m.dns.set("evil.example.net", &["198.18.0.21"]);
    m.dns
        .set("moved.lab.example", &["198.18.0.22", "198.18.5.1"]);
    m.dns.set("v6.lab.example", &["2001:2::5"]);
    for target in [
        "198.18.1.1",        // outside the CIDR
        "198.18.0.0/23",     // CIDR larger than the scope
        "198.18.0.128/23",   // same, written with host bits
        "2001:2:0:1::1",     // v6 outside
        "evil.example.net",  // name not in scope (its address is)
        "moved.lab.example", // name in scope, one address outside
        "lab.example",       // the wildcard covers names under it, not itself
    ] {
        let r = m.post("/api/v1/scan", &t, scan_body(target)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{target}: {}", r.text);
        assert_eq!(r.body["error"], "out_of_scope");
    }
    assert!(m.engine.requests().is_empty(), "nothing reached the engine");
    // Names in scope are scanned by address, never by name.
    let app = m.scan(&t, "APP.example.com").await;
    m.scan(&t, "v6.lab.example").await;
    let s = m.submits().await;
    assert_eq!(s[0].1, vec!["198.18.0.20".to_string()]);
    assert_eq!(s[1].1, vec!["2001:2::5".to_string()]);
    let got = m.get(&format!("/api/v1/scan/{app}"), &t).await;
    assert_eq!(got.body["target"], "app.example.com");
    assert_eq!(got.body["addresses"], json!(["198.18.0.20"]));
    // A name that does not resolve: 400.
    let r = m
        .post("/api/v1/scan", &t, scan_body("gone.lab.example"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // The API's own target policy still applies under the scope.
    let wide = m.token("wide", &["10.0.0.0/8"], 10, 5).await;
    let r = m.post("/api/v1/scan", &wide, scan_body("10.1.2.3")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("cannot be scanned"));
    assert_eq!(m.submits().await.len(), 2);
}

#[tokio::test]
async fn retest_rechecks_the_scope_when_dns_moves() {
    let (m, t) = setup().await;
    m.dns.set("app.example.com", &["198.18.0.30"]);
    let id = m.scan(&t, "app.example.com").await;
    m.complete_with(&id, &[("198.18.0.30", 443)]).await;
    // The name now points outside the scope: the retest is refused.
    m.dns.set("app.example.com", &["203.0.113.9"]);
    let r = m.post(&format!("/api/v1/scan/{id}/retest"), &t, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(m.submits().await.len(), 1);
    // Back inside: a new scan of the new address, same target.
    m.dns.set("app.example.com", &["198.18.0.31"]);
    let r = m.post(&format!("/api/v1/scan/{id}/retest"), &t, None).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_ne!(r.body["id"], json!(id));
    assert_eq!(m.submits().await[1].1, vec!["198.18.0.31".to_string()]);
    // Another token cannot retest it.
    let other = m.token("other", &["198.18.0.0/16"], 10, 5).await;
    let r = m
        .post(&format!("/api/v1/scan/{id}/retest"), &other, None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_cidr_target_is_one_multi_host_engine_scan_with_per_host_summary() {
    let (m, t) = setup().await;
    let id = m
        .scan_with(
            &t,
            json!({"target": "198.18.0.64/26", "ports": "22,80,443"}),
        )
        .await;
    let s = m.submits().await;
    assert_eq!(s.len(), 1);
    // One chunk of the 64 hosts (192 probes), the CIDR as one address range.
    assert_eq!(s[0].1, ["198.18.0.64-198.18.0.127"]);
    assert_eq!(s[0].2, "22,80,443");
    m.ports(
        &id,
        0,
        &[
            ("198.18.0.65", 22, Open),
            ("198.18.0.65", 80, Filtered),
            ("198.18.0.70", 443, Open),
        ],
    )
    .await;
    m.finish_chunk(&id, 0, 900).await;
    m.wait_status(&id, Status::Complete).await;
    let r = m.get(&format!("/api/v1/scans/{id}/summary"), &t).await;
    assert_eq!(
        r.body["hosts"],
        json!([
            {"host": "198.18.0.65", "open": 1, "filtered": 1, "closed": 1},
            {"host": "198.18.0.70", "open": 1, "filtered": 0, "closed": 2}
        ])
    );
    assert_eq!(r.body["portsPerHost"], 3);
    let r = m.get(&format!("/api/v1/scans/{id}/results"), &t).await;
    assert_eq!(r.body["results"].as_array().unwrap().len(), 3);
    assert_eq!(r.body["partial"], false);
}

#[tokio::test]
async fn quotas_monthly_concurrent_and_queue() {
    let m = M::with(|_| {}, unscheduled(3)).await;
    let t = m.token("small", SCOPE, 2, 1).await;
    let a = m.post("/api/v1/scan", &t, scan_body("198.18.0.40")).await;
    assert_eq!(a.status, StatusCode::CREATED);
    // One live scan at a time.
    let r = m.post("/api/v1/scan", &t, scan_body("198.18.0.41")).await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "concurrent_limit");
    assert!(r.header("retry-after").is_some());
    let id = a.body["id"].as_str().unwrap().to_string();
    m.complete_with(&id, &[]).await;
    m.scan(&t, "198.18.0.41").await;
    let second = m.submits().await[1].0.clone();
    m.fail_runs(&second, "timeout").await;
    m.wait_status(&second, Status::Failed).await;
    // Two scans this month: the third is refused until next month.
    let r = m.post("/api/v1/scan", &t, scan_body("198.18.0.42")).await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "monthly_limit");
    r.assert_message(StatusCode::TOO_MANY_REQUESTS, "monthly scan limit");
    // 2024-04-01T03:06:40Z -> 2024-05-01T00:00:00Z.
    assert_eq!(
        r.header("retry-after"),
        Some((1_714_521_600 - T0_MS / 1000).to_string().as_str())
    );
    m.clock.set_ms(1_714_521_600_000);
    m.scan(&t, "198.18.0.42").await;
    // The queue (all tokens) holds 3 live scans (a worker running one leaves it counted).
    let big = m.token("big", SCOPE, 100, 100).await;
    for ip in ["198.18.0.43", "198.18.0.44"] {
        m.scan(&big, ip).await;
    }
    let r = m.post("/api/v1/scan", &big, scan_body("198.18.0.45")).await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "queue_full");
}

#[tokio::test]
async fn list_paginates_with_total_and_filters_by_target() {
    let (m, t) = setup().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let target = if i % 2 == 0 {
            "198.18.0.50"
        } else {
            "198.18.0.51"
        };
        let id = m.scan(&t, target).await;
        m.complete_with(&id, &[]).await;
        ids.push(id);
        m.clock.advance(Duration::from_secs(1));
    }
    let r = m.get("/api/v1/scans?limit=2&offset=1", &t).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        (
            r.body["total"].as_i64(),
            r.body["limit"].as_i64(),
            r.body["offset"].as_i64()
        ),
        (Some(5), Some(2), Some(1))
    );
    let got: Vec<&str> = r.body["scans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[3].as_str(), ids[2].as_str()], "newest first");
    let first = &r.body["scans"][0];
    assert_eq!(first["grade"], "A+");
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));
    let r = m.get("/api/v1/scans?target=198.18.0.50", &t).await;
    assert_eq!(r.body["total"], 3);
    assert_eq!(r.body["limit"], 50);
    let r = m.get("/api/v1/scans?offset=10", &t).await;
    assert_eq!(
        (
            r.body["total"].as_i64(),
            r.body["scans"].as_array().unwrap().len()
        ),
        (Some(5), 0)
    );
    for bad in [
        "limit=101",
        "limit=0",
        "limit=x",
        "offset=-1",
        "target=not%20valid!",
    ] {
        let r = m.get(&format!("/api/v1/scans?{bad}"), &t).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Other tokens see none of them.
    let other = m.token("other", SCOPE, 10, 5).await;
    assert_eq!(m.get("/api/v1/scans", &other).await.body["total"], 0);
}
