//! The scan lifecycle: `none`, queued with its ETA, running, complete with services, banners
//! and PTR, failed, coalesced POSTs, and expiry after 24 hours.

use super::*;

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
    let id = h.fast_run(ip).await;
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
    h.wait_status(ip, ScanType::Fast, Status::Complete).await;

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
    h.finish_deep_chunks(ip, 28).await;
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

    h.finish_deep_chunks(ip, 3).await;
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
async fn results_expire_after_24_hours_and_are_purged() {
    let h = Harness::new().await;
    let ip = "198.18.0.34";
    let id = h.fast_run(ip).await;
    h.engine.complete(&id, 100);
    h.wait_status(ip, ScanType::Fast, Status::Complete).await;
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
