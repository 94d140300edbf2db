//! The self-scan API end to end in-process: router via `oneshot`, fake engine, temp SQLite
//! file, manual clock. Exact status codes, bodies and headers of seed 000. A scan is a job
//! scan: the API's in-process worker sends each chunk to the fake engine as its own engine
//! scan, and the tests answer those chunk runs.

mod support;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use portscope_control_api::engine::fake::{FakeEngine, OnSubmit};
use portscope_control_api::model::ScanType;
use portscope_core::results::PortState::{Closed, Filtered, Open};
use portscope_proto::{Request as EngineRequest, ScanKind};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::{Harness, T0};

const FAST_SPEC: &str = "21,22,23,25,53,80,110,111,135,139,143,443,445,465,587,993,995,1433,1521,2049,3306,3389,5432,5900,6379,8080,8443,9000,9200,11211,27017,50000";

fn assert_ratelimit_headers(r: &support::Reply) {
    assert_eq!(r.header("x-ratelimit-limit"), Some("30"), "{:?}", r.headers);
    assert!(r.header("x-ratelimit-remaining").is_some());
    assert!(r.header_u64("x-ratelimit-reset") > T0);
}

#[tokio::test]
async fn get_without_a_scan_is_status_none() {
    let h = Harness::new().await;
    let r = h.get("/v1/fast", "198.18.0.10").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.text,
        r#"{"ip":"198.18.0.10","scan_type":"fast","status":"none"}"#
    );
    assert_eq!(r.header("x-ratelimit-limit"), Some("30"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("29"));
    assert_eq!(r.header_u64("x-ratelimit-reset"), T0 + 60);
    assert_eq!(r.header("x-scan-duration-ms"), None);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = h.get("/v1/deep", "198.18.0.10").await;
    assert_eq!(
        r.body,
        json!({"ip": "198.18.0.10", "scan_type": "deep", "status": "none"})
    );
    assert_eq!(r.header("x-ratelimit-remaining"), Some("28"));
}

#[tokio::test]
async fn post_queues_a_scan_of_the_requester_with_eta_and_position() {
    let h = Harness::new().await;
    let r = h.post("/v1/fast", "198.18.0.11").await;
    assert_eq!(r.status, StatusCode::OK);
    let queued = json!({
        "ip": "198.18.0.11", "scan_type": "fast", "status": "queued",
        "eta_seconds": 20, "queue_position": 0, "chunks_complete": 0, "total_chunks": 1
    });
    assert_eq!(r.body, queued);
    assert!(r.text.starts_with(
        r#"{"ip":"198.18.0.11","scan_type":"fast","status":"queued","eta_seconds":20"#
    ));
    assert_ratelimit_headers(&r);
    // The worker sends the one chunk: the fast ports at the fast priority.
    let run = h.submit_id(0).await;
    match &h.engine.requests()[..] {
        [EngineRequest::Submit {
            id,
            targets,
            ports,
            kind,
            priority,
        }] => {
            assert_eq!(id, &run);
            assert_eq!(targets, &vec!["198.18.0.11".to_string()]);
            assert_eq!(ports, FAST_SPEC);
            assert_eq!(*kind, ScanKind::Custom);
            assert_eq!(*priority, 5);
        }
        other => panic!("unexpected engine requests {other:?}"),
    }
    assert_eq!(h.get("/v1/fast", "198.18.0.11").await.body, queued);

    // A deep scan behind the (still queued) fast one: 32 chunks of 2,048 ports.
    let r = h.post("/v1/deep", "198.18.0.11").await;
    assert_eq!(
        r.body,
        json!({"ip": "198.18.0.11", "scan_type": "deep", "status": "queued",
               "eta_seconds": 120, "queue_position": 1, "chunks_complete": 0, "total_chunks": 32})
    );
    h.submit_id(1).await;
    let deep: Vec<_> = h.engine.requests()[1..]
        .iter()
        .map(|r| match r {
            EngineRequest::Submit {
                ports,
                kind,
                priority,
                ..
            } => (ports.clone(), *kind, *priority),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    // Whichever chunks the worker took first: ranges of 2,048 ports from 1 (the last, from
    // 63,489, has 2,047), as custom engine scans at the deep priority.
    for (ports, kind, priority) in &deep {
        let (lo, hi) = ports.split_once('-').unwrap();
        let (lo, hi): (u32, u32) = (lo.parse().unwrap(), hi.parse().unwrap());
        assert_eq!((lo - 1) % 2048, 0, "{ports}");
        assert_eq!(hi, (lo + 2047).min(65_535), "{ports}");
        assert_eq!((*kind, *priority), (ScanKind::Custom, 1), "{ports}");
    }
}

#[tokio::test]
async fn complete_with_ports_services_banners_ptr_and_expiry() {
    let h = Harness::new().await;
    let ip = "198.18.0.12";
    h.post("/v1/fast", ip).await;
    let id = h.submit_id(0).await;
    // Ports of a chunk count once the chunk is committed, not before.
    h.engine
        .ports(&id, 0, &[(22, Open), (80, Open), (25, Filtered)], 10);
    h.engine.ports(&id, 0, &[(443, Open), (3306, Closed)], 5);
    let r = h.get("/v1/fast", ip).await;
    assert_eq!(
        r.text,
        r#"{"ip":"198.18.0.12","scan_type":"fast","status":"queued","eta_seconds":20,"queue_position":0,"chunks_complete":0,"total_chunks":1}"#
    );
    assert_eq!(r.header("x-scan-duration-ms"), None);
    // duration_ms: wall time from the chunk's claim to its commit (the engine says 40).
    h.clock.advance(Duration::from_millis(6231));
    h.engine.complete(&id, 40);
    h.wait_status(ip, ScanType::Fast, "complete").await;

    let r = h.get("/v1/fast", ip).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body,
        json!({
            "ip": ip, "scan_type": "fast", "status": "complete",
            "ports_open": [
                {"port": 22, "state": "open", "service": "SSH", "banner": "SSH-2.0-OpenSSH_9.6"},
                {"port": 80, "state": "open", "service": "HTTP", "banner": null},
                {"port": 443, "state": "open", "service": "HTTPS", "banner": null}
            ],
            "ports_filtered": [
                {"port": 25, "state": "filtered", "service": "SMTP", "banner": null}
            ],
            "service_banners": {"22": "SSH-2.0-OpenSSH_9.6"},
            "ptr_record": "mail.example.com",
            "duration_ms": 6231,
            "completed_at": T0 + 6,
            "expires_at": T0 + 6 + 86_400
        })
    );
    assert!(r.text.starts_with(
        r#"{"ip":"198.18.0.12","scan_type":"fast","status":"complete","ports_open":["#
    ));
    assert_eq!(r.header("x-scan-duration-ms"), Some("6231"));
    assert_ratelimit_headers(&r);
    // Banners were grabbed from the open ports only.
    let asked = h.banners.asked.lock().unwrap().clone();
    assert_eq!(asked, vec![(ip.parse().unwrap(), vec![22, 80, 443])]);
}

#[tokio::test]
async fn running_deep_scan_then_failed_shape() {
    let h = Harness::new().await;
    let ip = "198.18.0.13";
    h.post("/v1/deep", ip).await;
    h.finish_chunks(28, |_| Vec::new(), 10).await;
    h.wait_row(ip, ScanType::Deep, |r| r.chunks_complete == 28)
        .await;
    let r = h.get("/v1/deep", ip).await;
    assert_eq!(
        r.text,
        r#"{"ip":"198.18.0.13","scan_type":"deep","status":"running","chunks_complete":28,"total_chunks":32}"#
    );
    // The other chunks fail on every run; the first to use up the 10 attempts the queue
    // allows fails the scan.
    let runs = h.fail_runs(ip, ScanType::Deep, "timeout").await;
    assert!(runs >= 10, "{runs} runs");
    let r = h.get("/v1/deep", ip).await;
    assert_eq!(
        r.text,
        r#"{"ip":"198.18.0.13","scan_type":"deep","status":"failed","chunks_complete":28,"total_chunks":32,"fail_reason":"timeout"}"#
    );
    assert_eq!(r.header("x-scan-duration-ms"), None);
}

#[tokio::test]
async fn duplicate_posts_coalesce_onto_the_live_scan_and_are_not_rate_counted() {
    let h = Harness::new().await;
    let ip = "198.18.0.14";
    let a = h.post("/v1/deep", ip).await;
    let b = h.post("/v1/deep", ip).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(b.status, StatusCode::OK, "{}", b.text);
    assert_eq!(a.body, b.body);
    assert_eq!(b.body["status"], "queued");
    assert_eq!(h.scans().await, 1);

    h.finish_chunks(3, |_| Vec::new(), 10).await;
    h.wait_row(ip, ScanType::Deep, |r| r.chunks_complete == 3)
        .await;
    let c = h.post("/v1/deep", ip).await;
    assert_eq!(
        c.body,
        json!({"ip": ip, "scan_type": "deep", "status": "running", "chunks_complete": 3, "total_chunks": 32})
    );
    assert_eq!(h.scans().await, 1, "one scan for three POSTs");

    // Another type from the same address is another scan.
    h.post("/v1/fast", ip).await;
    assert_eq!(h.scans().await, 2);
}

#[tokio::test]
async fn edge_limit_is_30_per_minute_on_every_endpoint_and_resets() {
    let h = Harness::new().await;
    let ip = "198.18.0.15";
    for i in 0..30u64 {
        let path = if i % 3 == 0 { "/nope" } else { "/v1/fast" };
        let r = h.get(path, ip).await;
        assert_ne!(r.status, StatusCode::TOO_MANY_REQUESTS, "request {i}");
        assert_eq!(r.header_u64("x-ratelimit-remaining"), 29 - i);
    }
    let r = h.get("/v1/fast", ip).await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("30 requests per IP per minute"));
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("30"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header_u64("x-ratelimit-reset"), T0 + 60);
    // Another address has its own window.
    assert_eq!(
        h.get("/v1/fast", "198.18.0.16").await.status,
        StatusCode::OK
    );

    h.clock.advance(Duration::from_secs(45));
    let r = h.post("/v1/fast", ip).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("15"));
    assert_eq!(h.scans().await, 0);

    h.clock.advance(Duration::from_secs(15));
    let r = h.get("/v1/fast", ip).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("29"));
    assert_eq!(r.header_u64("x-ratelimit-reset"), T0 + 120);
}

#[tokio::test]
async fn deep_scans_are_limited_to_one_per_ip_per_5_minutes() {
    let h = Harness::new().await;
    let ip = "198.18.0.17";
    assert_eq!(h.post("/v1/deep", ip).await.status, StatusCode::OK);
    h.fail_runs(ip, ScanType::Deep, "cancelled").await;
    h.wait_status(ip, ScanType::Deep, "failed").await;

    let r = h.post("/v1/deep", ip).await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(
        r.body["message"],
        "rate limit reached: 1 deep scan per IP per 5 minutes"
    );
    assert_eq!(r.header("retry-after"), Some("300"));
    assert_ratelimit_headers(&r);
    // Fast scans are not limited by it.
    assert_eq!(h.post("/v1/fast", ip).await.status, StatusCode::OK);

    h.clock.advance(Duration::from_secs(299));
    let r = h.post("/v1/deep", ip).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("1"));
    h.clock.advance(Duration::from_secs(1));
    let r = h.post("/v1/deep", ip).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "queued");
    assert_eq!(h.scans().await, 3);
}

/// A harness whose ASN table (`table`, one line) puts the whole lab in one network; the
/// table's folder lives as long as the harness is used.
async fn one_asn(table: &str) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("asn.txt");
    std::fs::write(&path, table).unwrap();
    (Harness::with(|c| c.asn_table = Some(path)).await, dir)
}

/// `n` `kind` scans from as many lab addresses (third octet from `octet0`), all 200; one more
/// from `over` is refused with the per-ASN message and `retry-after: 3600`.
async fn hit_the_asn_limit(h: &Harness, kind: &str, n: u32, octet0: u32, over: &str) {
    let path = format!("/v1/{kind}");
    for i in 0..n {
        let ip = format!("198.18.{}.{}", octet0 + i / 250, 1 + i % 250);
        let r = h.post(&path, &ip).await;
        assert_eq!(r.status, StatusCode::OK, "scan {i}: {}", r.text);
    }
    let r = h.post(&path, over).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.body["message"],
        format!("rate limit reached: {n} {kind} scans per network (ASN) per hour")
    );
    assert_eq!(r.header("retry-after"), Some("3600"));
}

#[tokio::test]
async fn deep_scans_are_limited_to_200_per_asn_per_hour() {
    let (h, _dir) = one_asn("# lab\n198.18.0.0/15 AS64512\n").await;
    hit_the_asn_limit(&h, "deep", 200, 1, "198.19.200.1").await;
    // Another network (not in the table: grouped by /48) is not limited.
    assert_eq!(h.post("/v1/deep", "2001:2::1").await.status, StatusCode::OK);
    h.clock.advance(Duration::from_secs(3600));
    assert_eq!(
        h.post("/v1/deep", "198.19.200.1").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn fast_scans_are_limited_to_2000_per_asn_per_hour() {
    // No ASN table: IPv4 clients are grouped by /24; 2000 scans need 8 /24s, so use a table.
    let (h, _dir) = one_asn("198.18.0.0/15 64512\n").await;
    hit_the_asn_limit(&h, "fast", 2000, 0, "198.19.0.1").await;
    // Coalescing onto a live scan still answers.
    assert_eq!(
        h.post("/v1/fast", "198.18.0.1").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn opted_out_addresses_get_403() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("opt-out.txt");
    std::fs::write(
        &list,
        "# opted out\n198.18.7.0/24\n2001:2::dead # one host\n",
    )
    .unwrap();
    let h = Harness::with(|c| c.opt_out = Some(list)).await;
    for ip in ["198.18.7.9", "::ffff:198.18.7.1", "2001:2::dead"] {
        for m in [Method::POST, Method::GET] {
            let r = h.call(m.clone(), "/v1/fast", ip, &[]).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{m} from {ip}");
            assert_eq!(
                r.body,
                json!({"error": "not_available", "message": "this address is opted out of scanning or restricted"})
            );
            assert_ratelimit_headers(&r);
        }
    }
    assert!(h.engine.requests().is_empty());
    assert_eq!(
        h.post("/v1/fast", "198.18.8.1").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn non_public_addresses_get_422_invalid_target() {
    let h = Harness::new().await;
    for ip in [
        "10.0.0.1",
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "::1",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "169.254.1.1",
        "192.0.2.1",
        "224.0.0.1",
        "fe80::1",
        "fd00::1",
        "2001:db8::1",
    ] {
        let r = h.post("/v1/fast", ip).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{ip}");
        assert_eq!(r.body["error"], "invalid_target", "{ip}");
        assert_ratelimit_headers(&r);
        assert_eq!(
            h.get("/v1/deep", ip).await.status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    let r = h.post("/v1/fast", "::ffff:127.0.0.1").await;
    assert_eq!(
        r.body,
        json!({"error": "invalid_target",
               "message": "127.0.0.1 cannot be scanned: it is in 127.0.0.0/8 (loopback (RFC 1122)), which is not publicly routable"})
    );
    assert!(h.engine.requests().is_empty());
}

#[tokio::test]
async fn ipv6_and_ipv4_mapped_requesters() {
    let h = Harness::new().await;
    let r = h.post("/v1/fast", "2001:2::5").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["ip"], "2001:2::5");
    let r = h.post("/v1/fast", "::ffff:198.18.0.18").await;
    assert_eq!(r.body["ip"], "198.18.0.18");
    h.submit_id(1).await;
    let mut targets: Vec<Vec<String>> = h
        .engine
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            EngineRequest::Submit { targets, .. } => Some(targets),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            vec!["198.18.0.18".to_string()],
            vec!["2001:2::5".to_string()]
        ]
    );
    // The mapped and plain forms are one client.
    assert_eq!(
        h.get("/v1/fast", "198.18.0.18").await.body["status"],
        "queued"
    );
}

#[tokio::test]
async fn x_forwarded_for_is_honoured_only_from_trusted_proxies() {
    let h = Harness::with(|c| c.trusted_proxy = vec!["127.0.0.1".parse().unwrap()]).await;
    // (method, peer, X-Forwarded-For, the client the API sees).
    for (method, peer, xff, client) in [
        // Trusted proxy: the right-most untrusted hop is the client.
        (
            Method::GET,
            "127.0.0.1",
            "203.0.113.5, 198.18.0.20",
            "198.18.0.20",
        ),
        (
            Method::POST,
            "::ffff:127.0.0.1",
            "198.18.0.21, 127.0.0.1",
            "198.18.0.21",
        ),
        // Untrusted peer: the header is ignored.
        (Method::GET, "198.18.0.30", "198.18.0.40", "198.18.0.30"),
    ] {
        let post = method == Method::POST;
        let r = h
            .call(method, "/v1/fast", peer, &[("x-forwarded-for", xff)])
            .await;
        assert_eq!(r.body["ip"], client, "{peer} {xff}");
        if post {
            assert_eq!(r.body["status"], "queued");
        }
    }
    // The proxy without a header is itself the client (and loopback is refused).
    let r = h.get("/v1/fast", "127.0.0.1").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // A malformed chain from a trusted proxy is a 400.
    let r = h
        .call(
            Method::GET,
            "/v1/fast",
            "127.0.0.1",
            &[("x-forwarded-for", "198.18.0.1, bogus")],
        )
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    assert_ratelimit_headers(&r);
    // The edge limit counts the forwarded client, not the proxy.
    let r = h
        .call(
            Method::GET,
            "/v1/fast",
            "127.0.0.1",
            &[("x-forwarded-for", "198.18.0.22")],
        )
        .await;
    assert_eq!(r.header("x-ratelimit-remaining"), Some("29"));
}

#[tokio::test]
async fn callback_urls_must_be_public_http_unless_allowed() {
    let h = Harness::new().await;
    for url in [
        "http://127.0.0.1/hook",
        "http://[::1]:8080/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "ftp://198.51.100.7/hook",
        "not a url",
    ] {
        let r = h
            .call(
                Method::POST,
                "/v1/fast",
                "198.18.0.23",
                &[("x-callback-url", url)],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        assert_eq!(r.body["error"], "invalid_callback", "{url}");
        assert_ratelimit_headers(&r);
    }
    let r = h
        .call(
            Method::POST,
            "/v1/fast",
            "198.18.0.23",
            &[("x-callback-url", "http://127.0.0.1/hook")],
        )
        .await;
    assert_eq!(
        r.body["message"],
        "callback host 127.0.0.1 resolves to 127.0.0.1, which is not a public address"
    );
    assert!(h.engine.requests().is_empty(), "refused before queuing");

    let lab = Harness::with(|c| c.allow_callback = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let r = lab
        .call(
            Method::POST,
            "/v1/fast",
            "198.18.0.23",
            &[("x-callback-url", "http://127.0.0.1:9/hook")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "queued");
}

#[tokio::test]
async fn webhook_posts_the_final_result_and_retries_after_a_500() {
    let (url, got) = support::webhook_receiver(1).await;
    let h = Harness::with(|c| c.allow_callback = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let ip = "198.18.0.24";
    let r = h
        .call(
            Method::POST,
            "/v1/fast",
            ip,
            &[("x-callback-url", url.as_str())],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = h.submit_id(0).await;
    h.engine.ports(&id, 0, &[(22, Open)], 31);
    h.engine.complete(&id, 1200);
    h.wait_for("two webhook attempts", || got.lock().unwrap().len() >= 2)
        .await;
    let polled = h.get("/v1/fast", ip).await.body;
    assert_eq!(polled["status"], "complete");
    let bodies = got.lock().unwrap().clone();
    assert_eq!(bodies, vec![polled.clone(), polled]);
    h.wait_for("delivery recorded", || {
        let text = h.state.0.metrics.render();
        text.contains(r#"portscope_webhook_deliveries_total{result="delivered"} 1"#)
            && text.contains(r#"portscope_webhook_deliveries_total{result="retried"} 1"#)
    })
    .await;
}

#[tokio::test]
async fn webhook_fires_on_failure_too() {
    let (url, got) = support::webhook_receiver(0).await;
    let h = Harness::with(|c| c.allow_callback = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let ip = "198.18.0.25";
    h.call(
        Method::POST,
        "/v1/deep",
        ip,
        &[("x-callback-url", url.as_str())],
    )
    .await;
    // A coalesced POST may add its own callback; the same URL is delivered once.
    h.call(
        Method::POST,
        "/v1/deep",
        ip,
        &[("x-callback-url", url.as_str())],
    )
    .await;
    h.finish_chunks(28, |_| Vec::new(), 10).await;
    h.wait_row(ip, ScanType::Deep, |r| r.chunks_complete == 28)
        .await;
    h.fail_runs(ip, ScanType::Deep, "timeout").await;
    h.wait_for("webhook", || !got.lock().unwrap().is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bodies = got.lock().unwrap().clone();
    assert_eq!(
        bodies,
        vec![json!({"ip": ip, "scan_type": "deep", "status": "failed",
                    "chunks_complete": 28, "total_chunks": 32, "fail_reason": "timeout"})]
    );
}

#[tokio::test]
async fn json_errors_for_unknown_paths_methods_and_oversized_bodies() {
    let h = Harness::new().await;
    let ip = "198.18.0.26";
    let r = h.get("/v2/anything", ip).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.body,
        json!({"error": "not_found", "message": "no such endpoint; see /v1/openapi.json"})
    );
    assert_ratelimit_headers(&r);

    for m in [Method::DELETE, Method::PUT, Method::PATCH] {
        let r = h.call(m.clone(), "/v1/fast", ip, &[]).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m}");
        assert_eq!(
            r.body,
            json!({"error": "method_not_allowed", "message": "method not allowed on this endpoint; see /v1/openapi.json"})
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("allow"), Some("GET,HEAD,POST"));
        assert_ratelimit_headers(&r);
    }
    let r = h.call(Method::POST, "/v1/openapi.json", ip, &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);

    let big = Request::builder()
        .method(Method::POST)
        .uri("/v1/fast")
        .header("content-type", "application/json")
        .header("content-length", "100000")
        .body(Body::from(vec![b'x'; 100_000]))
        .unwrap();
    let r = h.send(big, ip).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.body,
        json!({"error": "payload_too_large", "message": "request body too large"})
    );
    assert_ratelimit_headers(&r);
    assert!(h.engine.requests().is_empty());
}

#[tokio::test]
async fn slow_requests_time_out_with_a_json_408() {
    let h = Harness::with(|c| c.request_timeout_secs = 1).await;
    // Another connection holds the database's write lock (SQLite) or the scans table
    // (PostgreSQL) for longer than the request may take: the POST's insert waits.
    let _held = support::hold_scans_table(&h.db_path()).await;
    let r = h.post("/v1/fast", "198.18.0.38").await;
    assert_eq!(r.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(
        r.body,
        json!({"error": "timeout", "message": "request timed out"})
    );
    assert_ratelimit_headers(&r);
}

#[tokio::test]
async fn results_survive_an_api_restart() {
    let h = Harness::new().await;
    let ip = "198.18.0.27";
    h.post("/v1/fast", ip).await;
    let id = h.submit_id(0).await;
    h.engine.ports(&id, 0, &[(22, Open), (443, Open)], 30);
    // duration_ms is wall time from the chunk's claim to its commit, not engine time.
    h.clock.advance(Duration::from_millis(900));
    h.engine.complete(&id, 5);
    h.wait_status(ip, ScanType::Fast, "complete").await;
    let before = h.get("/v1/fast", ip).await;
    assert_eq!(before.body["status"], "complete");

    let h = h.restart(Arc::new(FakeEngine::new())).await;
    let after = h.get("/v1/fast", ip).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.text, before.text);
    assert_eq!(after.header("x-scan-duration-ms"), Some("900"));
}

/// A queue poll that fails (SQLite's write lock held past its 5 s busy timeout while a job
/// waits) ends apalis 0.7's poll stream; the worker is built anew and runs the chunk once
/// the lock is gone. Before, the worker went on heartbeating without ever polling again.
#[tokio::test]
async fn a_failed_queue_poll_does_not_stop_the_worker() {
    // Polls 2 s apart, so the lock is taken between the POST and the next poll.
    let h = Harness::with(|c| c.worker_poll_ms = 2000).await;
    if h.db_path().to_string_lossy().starts_with("postgres") {
        return; // a PostgreSQL poll fails on an outage instead: jobs_lab's outage test
    }
    let ip = "198.18.0.41";
    assert_eq!(h.post("/v1/fast", ip).await.status, StatusCode::OK);
    let held = support::hold_scans_table(&h.db_path()).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        h.engine.submitted_ids().is_empty(),
        "claimed through the lock"
    );
    drop(held);
    let id = h.submit_id(0).await;
    h.engine.ports(&id, 0, &[(22, Open)], 3);
    h.engine.complete(&id, 50);
    h.wait_status(ip, ScanType::Fast, "complete").await;
    let r = h.get("/v1/fast", ip).await;
    assert_eq!(r.body["ports_open"][0]["port"], 22);
}

#[tokio::test]
async fn a_live_scan_survives_an_api_restart_and_its_chunk_is_run_again() {
    let engine = Arc::new(FakeEngine::new());
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let clock = portscope_control_api::clock::ManualClock::at(support::T0_MS);
    let h = Harness::build(support::lab_config(dir.path()), engine.clone(), clock, dir).await;
    let ip = "198.18.0.28";
    h.post("/v1/fast", ip).await;
    let first = h.submit_id(0).await;
    // Results of a run that never committed are not kept.
    h.engine.ports(&first, 0, &[(80, Open), (8080, Open)], 7);

    // The API (and its worker) restarts mid-chunk; the new worker runs the chunk again.
    let h = h.restart(engine.clone()).await;
    let second = h.submit_id(1).await;
    assert_ne!(second, first);
    assert_eq!(h.chunk_runs()[1].1, 0, "the same chunk");
    engine.ports(&second, 0, &[(22, Open), (80, Open)], 7);
    // Wall time since the first claim (the run before the restart), not engine time.
    h.clock.advance(Duration::from_millis(4000));
    engine.complete(&second, 7);
    h.wait_status(ip, ScanType::Fast, "complete").await;
    let r = h.get("/v1/fast", ip).await;
    let open: Vec<u64> = r.body["ports_open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(open, vec![22, 80]);
    assert_eq!(r.body["duration_ms"], 4000);
    assert_eq!(engine.submitted_ids().len(), 2);
}

#[tokio::test]
async fn an_engine_restart_reruns_the_chunk_instead_of_failing_the_scan() {
    let h = Harness::new().await;
    let ip = "198.18.0.29";
    h.post("/v1/fast", ip).await;
    let first = h.submit_id(0).await;
    h.engine.ports(&first, 0, &[(443, Open)], 2);
    h.engine.restart();
    let second = h.submit_id(1).await;
    assert_ne!(second, first);
    assert_eq!(h.get("/v1/fast", ip).await.body["status"], "queued");
    h.engine.ports(&second, 0, &[(22, Open)], 3);
    h.clock.advance(Duration::from_millis(50));
    h.engine.complete(&second, 3);
    h.wait_status(ip, ScanType::Fast, "complete").await;
    let r = h.get("/v1/fast", ip).await;
    assert_eq!(r.body["ports_open"][0]["port"], 22);
    assert_eq!(r.body["ports_open"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["duration_ms"], 50);
}

#[tokio::test]
async fn an_unreachable_engine_fails_the_scan_once_the_chunk_attempts_are_used_up() {
    let h = Harness::new().await;
    let ip = "198.18.0.31";
    h.engine.disconnect();
    let metrics = h.state.0.metrics.clone();
    h.state.maintain().await;
    h.wait_for("link down", || metrics.engine_connected.get() == 0)
        .await;
    // A POST is still accepted: the scan waits in the queue for any worker's engine.
    let r = h.post("/v1/fast", ip).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "queued");
    // Each run waits `worker-connect-ms` (200 ms here) for the engine; the tenth fails it.
    h.wait_row(ip, ScanType::Fast, |r| r.status == "failed")
        .await;
    let r = h.get("/v1/fast", ip).await;
    assert_eq!(
        r.body,
        json!({"ip": ip, "scan_type": "fast", "status": "failed",
               "chunks_complete": 0, "total_chunks": 1, "fail_reason": "engine_unavailable"})
    );
    assert!(h.engine.requests().is_empty(), "nothing reached the engine");
}

#[tokio::test]
async fn scans_posted_while_the_engine_is_briefly_away_run_when_it_is_back() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let engine = Arc::new(FakeEngine::disconnected());
    let clock = portscope_control_api::clock::ManualClock::at(support::T0_MS);
    let h = Harness::build(support::lab_config(dir.path()), engine.clone(), clock, dir).await;
    let ip = "198.18.0.33";
    let r = h.post("/v1/fast", ip).await;
    assert_eq!(
        r.body,
        json!({"ip": ip, "scan_type": "fast", "status": "queued", "eta_seconds": 20,
               "queue_position": 0, "chunks_complete": 0, "total_chunks": 1})
    );
    assert!(engine.requests().is_empty());
    engine.connect();
    let id = h.submit_id(0).await;
    engine.ports(&id, 0, &[(22, Open)], 31);
    engine.complete(&id, 70);
    h.wait_status(ip, ScanType::Fast, "complete").await;
    assert_eq!(engine.submitted_ids().len(), 1);
}

#[tokio::test]
async fn results_expire_after_24_hours_and_are_purged() {
    let h = Harness::new().await;
    let ip = "198.18.0.34";
    h.post("/v1/fast", ip).await;
    let id = h.submit_id(0).await;
    h.engine.complete(&id, 100);
    h.wait_status(ip, ScanType::Fast, "complete").await;
    let r = h.get("/v1/fast", ip).await;
    assert_eq!(r.body["expires_at"], T0 + 86_400);
    h.clock.advance(Duration::from_secs(86_399));
    h.state.maintain().await;
    assert_eq!(h.get("/v1/fast", ip).await.body["status"], "complete");
    h.clock.advance(Duration::from_secs(1));
    assert_eq!(
        h.get("/v1/fast", ip).await.body,
        json!({"ip": ip, "scan_type": "fast", "status": "none"})
    );
    assert_eq!(h.state.scans().store().count().await.unwrap(), 1);
    h.state.maintain().await;
    assert_eq!(h.state.scans().store().count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_policy_rejection_fails_the_scan_at_once() {
    let h = Harness::new().await;
    h.engine_rejects("policy", "198.18.0.35 is denied");
    let r = h.post("/v1/fast", "198.18.0.35").await;
    assert_eq!(r.status, StatusCode::OK, "the API's own policy allows it");
    h.wait_status("198.18.0.35", ScanType::Fast, "failed").await;
    let r = h.get("/v1/fast", "198.18.0.35").await;
    assert_eq!(
        r.body,
        json!({"ip": "198.18.0.35", "scan_type": "fast", "status": "failed",
               "chunks_complete": 0, "total_chunks": 1, "fail_reason": "rejected_policy"})
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.engine.submitted_ids().len(), 1, "not retried");
}

#[tokio::test]
async fn a_busy_engine_delays_a_deep_scan_instead_of_refusing_it() {
    // Retries one poll apart: 10 attempts take 0.5 s, time enough to switch the fake to
    // accepting before a chunk uses them all up.
    let h = Harness::with(|c| c.worker_poll_ms = 50).await;
    let ip = "198.18.0.37";
    h.engine_rejects("busy", "queue full");
    let r = h.post("/v1/deep", ip).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "queued");
    h.submit_id(0).await;
    // The engine has room again: the refused chunks run again, and the scan completes.
    let from = h.engine.submitted_ids().len();
    h.engine.on_submit(OnSubmit::Accept {
        queue_position: 0,
        total_chunks: 1,
    });
    // Wall time from the first claim to the last commit (32 chunks of 10 ms engine time).
    h.clock.advance(Duration::from_millis(1000));
    h.finish_runs_from(from, ip, ScanType::Deep, 32, 10).await;
    h.wait_status(ip, ScanType::Deep, "complete").await;
    assert_eq!(h.get("/v1/deep", ip).await.body["duration_ms"], 1000);
}

#[tokio::test]
async fn a_duplicate_rejection_reruns_the_chunk_under_a_new_run_id() {
    let h = Harness::with(|c| c.worker_poll_ms = 50).await;
    let ip = "198.18.0.39";
    h.engine_rejects("duplicate", "a scan with this id exists");
    let r = h.post("/v1/fast", ip).await;
    assert_eq!(r.status, StatusCode::OK);
    let first = h.submit_id(0).await;
    let from = h.engine.submitted_ids().len();
    h.engine.on_submit(OnSubmit::Accept {
        queue_position: 0,
        total_chunks: 1,
    });
    h.finish_runs_from(from, ip, ScanType::Fast, 1, 5).await;
    h.wait_status(ip, ScanType::Fast, "complete").await;
    let runs = h.engine.submitted_ids();
    assert!(runs.len() >= 2, "{runs:?}");
    let scan = |run: &String| run.split('/').next().unwrap().to_string();
    assert!(
        runs.iter().all(|r| scan(r) == scan(&first)),
        "one scan: {runs:?}"
    );
    let mut distinct = runs.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        runs.len(),
        "every run has its own engine id"
    );
}

#[tokio::test]
async fn openapi_document_and_metrics() {
    let h = Harness::new().await;
    let ip = "198.18.0.37";
    h.post("/v1/fast", ip).await;
    let r = h.get("/v1/openapi.json", ip).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    for (path, methods) in [("/v1/fast", ["get", "post"]), ("/v1/deep", ["get", "post"])] {
        for m in methods {
            assert!(r.body["paths"][path][m].is_object(), "{m} {path}");
        }
    }
    let events = &r.body["paths"]["/v1/{kind}/events"]["get"]["responses"]["200"]["content"];
    assert!(events["text/event-stream"].is_object(), "{events}");
    let schemas = &r.body["components"]["schemas"];
    assert!(schemas["ScanResponse"].is_object());
    assert!(schemas["ErrorBody"].is_object());

    // Not on the public router; its own listener serves it.
    let r = h.get("/metrics", ip).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let resp = tower::ServiceExt::oneshot(
        portscope_control_api::http::metrics_app(h.state.clone()),
        axum::http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    for needle in [
        r#"portscope_api_request_duration_seconds_count{route="/v1/fast",method="POST",status="200"} 1"#,
        r#"portscope_api_request_duration_seconds_count{route="/v1/openapi.json",method="GET",status="200"} 1"#,
        r#"portscope_scans{state="queued"} 1"#,
        r#"portscope_scans{state="complete"} 0"#,
        "portscope_queue_depth 1",
        "portscope_engine_connected 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}
