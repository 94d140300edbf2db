//! Scans outlive restarts and outages: results and live scans across an API restart, a failed
//! queue poll, engine restarts and outages, and the engine's refusals (policy, busy,
//! duplicate).

use super::*;

#[tokio::test]
async fn results_survive_an_api_restart() {
    let h = Harness::new().await;
    let ip = "198.18.0.27";
    let id = h.fast_run(ip).await;
    // duration_ms is wall time from the chunk's claim to its commit, not engine time.
    h.clock.advance(Duration::from_millis(900));
    let before = h
        .complete_fast(&id, ip, &[(22, Open), (443, Open)], 30, 5)
        .await;
    assert_eq!(before.body["status"], "complete");

    let h = h.restart(Arc::new(FakeEngine::new())).await;
    let after = h.get("/v1/fast", ip).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.text, before.text);
    assert_eq!(after.header("x-scan-duration-ms"), Some("900"));
}

/// A queue worker whose heartbeat or fetch fails (SQLite's write lock held past its 5 s
/// busy timeout) ends, as apalis 1 workers do at a backend error; it is built anew and
/// runs the next scan's chunk once the lock is gone. Without the rebuild, nothing would
/// claim the chunk again.
#[tokio::test]
async fn a_failed_queue_poll_does_not_stop_the_worker() {
    let h = Harness::new().await;
    if h.db_path().to_string_lossy().starts_with("postgres") {
        return; // a PostgreSQL poll fails on an outage instead: jobs_lab's outage test
    }
    let ip = "198.18.0.41";
    // Heartbeats come every second: one waits out the busy timeout and fails.
    let held = support::hold_scans_table(&h.db_path()).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    drop(held);
    assert_eq!(h.post("/v1/fast", ip).await.status, StatusCode::OK);
    let id = h.submit_id(0).await;
    let r = h.complete_fast(&id, ip, &[(22, Open)], 3, 50).await;
    assert_eq!(r.body["ports_open"][0]["port"], 22);
}

#[tokio::test]
async fn a_live_scan_survives_an_api_restart_and_its_chunk_is_run_again() {
    let engine = Arc::new(FakeEngine::new());
    let h = Harness::with_engine(engine.clone(), |_| {}).await;
    let ip = "198.18.0.28";
    let first = h.fast_run(ip).await;
    // Results of a run that never committed are not kept.
    h.engine.ports(&first, 0, &[(80, Open), (8080, Open)], 7);

    // The API (and its worker) restarts mid-chunk; the new worker runs the chunk again.
    let h = h.restart(engine.clone()).await;
    let second = h.submit_id(1).await;
    assert_ne!(second, first);
    assert_eq!(h.chunk_runs()[1].1, 0, "the same chunk");
    // Wall time since the first claim (the run before the restart), not engine time.
    h.clock.advance(Duration::from_millis(4000));
    let r = h
        .complete_fast(&second, ip, &[(22, Open), (80, Open)], 7, 7)
        .await;
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
    let first = h.fast_run(ip).await;
    h.engine.ports(&first, 0, &[(443, Open)], 2);
    h.engine.restart();
    let second = h.submit_id(1).await;
    assert_ne!(second, first);
    assert_eq!(h.get("/v1/fast", ip).await.body["status"], "queued");
    h.clock.advance(Duration::from_millis(50));
    let r = h.complete_fast(&second, ip, &[(22, Open)], 3, 3).await;
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
    h.wait_row(ip, ScanType::Fast, |r| r.status == Status::Failed)
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
    let engine = Arc::new(FakeEngine::disconnected());
    let h = Harness::with_engine(engine.clone(), |_| {}).await;
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
    h.complete_fast(&id, ip, &[(22, Open)], 31, 70).await;
    assert_eq!(engine.submitted_ids().len(), 1);
}

#[tokio::test]
async fn a_policy_rejection_fails_the_scan_at_once() {
    let h = Harness::new().await;
    h.engine_rejects("policy", "198.18.0.35 is denied");
    let r = h.post("/v1/fast", "198.18.0.35").await;
    assert_eq!(r.status, StatusCode::OK, "the API's own policy allows it");
    h.wait_status("198.18.0.35", ScanType::Fast, Status::Failed)
        .await;
    let r = h.get("/v1/fast", "198.18.0.35").await;
    assert_eq!(
        r.body,
        json!({"ip": "198.18.0.35", "scan_type": "fast", "status": "failed",
               "chunks_complete": 0, "total_chunks": 1, "fail_reason": "rejected_policy"})
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.engine.submitted_ids().len(), 1, "not retried");
}

/// A harness whose worker retries 50 ms apart and whose engine refuses with `refusal` (code,
/// message), and its reply to a POST of `path` for `ip`.
async fn posted_to_a_refusing_engine(
    refusal: (&str, &str),
    path: &str,
    ip: &str,
) -> (Harness, support::Reply) {
    let h = Harness::with(|c| c.worker_retry_ms = 50).await;
    h.engine_rejects(refusal.0, refusal.1);
    let r = h.post(path, ip).await;
    (h, r)
}

#[tokio::test]
async fn a_busy_engine_delays_a_deep_scan_instead_of_refusing_it() {
    // Retries 50 ms apart: 10 attempts take 0.5 s, time enough to switch the fake to
    // accepting before a chunk uses them all up.
    let ip = "198.18.0.37";
    let (h, r) = posted_to_a_refusing_engine(("busy", "queue full"), "/v1/deep", ip).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "queued");
    h.submit_id(0).await;
    // The engine has room again: the refused chunks run again, and the scan completes.
    // Wall time from the first claim to the last commit (32 chunks of 10 ms engine time).
    h.clock.advance(Duration::from_millis(1000));
    h.accept_and_finish(ip, ScanType::Deep, 32, 10).await;
    h.wait_status(ip, ScanType::Deep, Status::Complete).await;
    assert_eq!(h.get("/v1/deep", ip).await.body["duration_ms"], 1000);
}

#[tokio::test]
async fn a_duplicate_rejection_reruns_the_chunk_under_a_new_run_id() {
    let ip = "198.18.0.39";
    let refusal = ("duplicate", "a scan with this id exists");
    let (h, r) = posted_to_a_refusing_engine(refusal, "/v1/fast", ip).await;
    assert_eq!(r.status, StatusCode::OK);
    let first = h.submit_id(0).await;
    h.accept_and_finish(ip, ScanType::Fast, 1, 5).await;
    h.wait_status(ip, ScanType::Fast, Status::Complete).await;
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
