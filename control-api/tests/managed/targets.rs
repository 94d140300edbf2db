//! The managed API's saved targets and what hangs off them: CRUD and trigger-all with the
//! scope re-checked, the scheduler, alerts, SECURITY-FIX.md, the report page, monitor
//! webhooks, engine outages and the OpenAPI document.

use super::*;

#[tokio::test]
async fn targets_crud_scan_and_trigger_all_recheck_the_scope() {
    let (m, t) = setup().await;
    m.dns.set("web.lab.example", &["198.18.0.60"]);
    let r = m
        .save_target(&t, json!({"target": "web.lab.example", "label": "web", "profile": "deep", "interval": 3600}))
        .await;
    let web = r.created_id();
    assert_eq!(r.body["profile"], "deep");
    assert_eq!(r.body["interval"], 3600);
    assert_eq!(r.body["nextRunAt"], "2024-04-01T04:06:40.000Z");
    let r = m
        .save_target(&t, json!({"target": "198.18.0.0/28", "ports": "22,443"}))
        .await;
    let net = r.created_id();
    assert_eq!(
        (r.body["profile"].as_str(), r.body["ports"].as_str()),
        (Some("custom"), Some("22,443"))
    );
    // Out of scope at creation: 403; bad fields: 400.
    assert_eq!(
        m.save_target(&t, json!({"target": "198.18.9.9"}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    for bad in [
        json!({}),
        json!({"target": "198.18.0.61", "interval": 5}),
        json!({"target": "198.18.0.61", "alertMinSeverity": "SEVERE"}),
        json!({"target": "198.18.0.61", "webhookUrl": "http://127.0.0.1:9/x"}),
    ] {
        assert_eq!(
            m.save_target(&t, bad.clone()).await.status,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    let r = m.get("/api/v1/targets", &t).await;
    assert_eq!(r.body["total"], 2);
    assert_eq!(
        m.get(&format!("/api/v1/targets/{web}"), &t).await.body["label"],
        "web"
    );
    let r = m
        .call(
            Method::PATCH,
            &format!("/api/v1/targets/{web}"),
            &t,
            Some(json!({"label": "www", "profile": "fast"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.body["label"].as_str(), r.body["profile"].as_str()),
        (Some("www"), Some("fast"))
    );
    let r = m
        .call(
            Method::PUT,
            &format!("/api/v1/targets/{web}"),
            &t,
            Some(json!({"target": "198.18.7.7"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "update out of scope");

    // Per-target scan: through the same checks, linked to the target.
    let r = m
        .post(&format!("/api/v1/targets/{net}/scan"), &t, None)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let net_scan = r.body["id"].as_str().unwrap().to_string();
    // One chunk of the 16 addresses of the CIDR, as one address range.
    assert_eq!(m.submits().await[0].1, ["198.18.0.0-198.18.0.15"]);
    assert_eq!(m.submits().await[0].2, "22,443");

    // DNS moves web out of scope: trigger-all skips it with 403 and the live net scan with
    // 409; nothing new reaches the engine.
    m.dns.set("web.lab.example", &["203.0.113.7"]);
    let r = m.post("/api/v1/scans/trigger-all", &t, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["triggered"], json!([]));
    let skipped = r.body["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 2);
    let of = |id: &str| {
        skipped
            .iter()
            .find(|s| s["targetId"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(of(&web)["status"], 403);
    assert_eq!(of(&web)["error"], "out_of_scope");
    assert_eq!(of(&net)["status"], 409);
    assert_eq!(of(&net)["existingId"], net_scan.as_str());
    assert_eq!(m.submits().await.len(), 1);
    // Back in scope: trigger-all starts web.
    m.dns.set("web.lab.example", &["198.18.0.60"]);
    let r = m.post("/api/v1/scans/trigger-all", &t, None).await;
    assert_eq!(r.body["triggered"][0]["targetId"], web.as_str());
    assert_eq!(m.submits().await[1].1, vec!["198.18.0.60".to_string()]);
    // Delete.
    let r = m
        .call(Method::DELETE, &format!("/api/v1/targets/{web}"), &t, None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    m.get(&format!("/api/v1/targets/{web}"), &t)
        .await
        .assert_status(StatusCode::NOT_FOUND);
    assert_eq!(
        m.call(Method::DELETE, &format!("/api/v1/targets/{web}"), &t, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Other tokens cannot see or scan it.
    let other = m.token("other", SCOPE, 10, 5).await;
    assert_eq!(
        m.get(&format!("/api/v1/targets/{net}"), &other)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        m.post(&format!("/api/v1/targets/{net}/scan"), &other, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

/// One scenario for the scheduler and a schedule missed during downtime: due runs by
/// `run_due`, then the API down for ten intervals and restarted with its scheduler ticking:
/// one run, the next an interval from then; scheduled scans re-check the token's scope.
#[tokio::test]
async fn scheduler_runs_due_targets_once_after_downtime() {
    let (m, t) = setup().await;
    let tid = m
        .save_target(&t, json!({"target": "198.18.0.70", "interval": 3600}))
        .await
        .created_id();
    assert_eq!(m.state.managed().run_due().await, 0, "not due yet");
    m.clock.advance(Duration::from_secs(3600));
    assert_eq!(m.state.managed().run_due().await, 1);
    let id = m.submits().await[0].0.clone();
    m.complete_with(&id, &[]).await;
    assert_eq!(
        m.state.managed().run_due().await,
        0,
        "next run is an interval later"
    );
    // Down for ten intervals, then started again with the scheduler ticking (a new engine).
    m.clock.advance(Duration::from_secs(36_000));
    let m = m
        .restart(ManagedSettings {
            scheduler_interval: Duration::from_millis(20),
            ..ManagedSettings::default()
        })
        .await;
    for _ in 0..200 {
        if !m.submits().await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Many more ticks, same clock: one run, nothing else is due.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(m.submits().await.len(), 1);
    assert_eq!(m.state.managed().run_due().await, 0);
    let r = m.get(&format!("/api/v1/targets/{tid}"), &t).await;
    assert_eq!(
        r.body["nextRunAt"],
        super_iso(T0_MS / 1000 + 3600 + 36_000 + 3600)
    );
    let scans = m.get("/api/v1/scans", &t).await;
    assert_eq!(scans.body["total"], 2);
    // Scheduled scans are re-checked against the token's scope too (revoked: nothing).
    portscope_control_api::managed::tokens::revoke(m.state.managed().store().pool(), "ci", 1)
        .await
        .unwrap();
    m.engine.fail(&m.submits().await[0].0, "timeout");
    m.clock.advance(Duration::from_secs(7200));
    assert_eq!(m.state.managed().run_due().await, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        m.submits().await.len(),
        1,
        "the ticking scheduler started nothing either"
    );
}

/// Two nodes list the same due run; one claims and scans it, and that scan completes before
/// the other node gets to its (stale) listing: the other starts nothing. (Before the claim
/// it scanned the target a second time: no live scan was left for the 409 check to see.)
#[tokio::test]
async fn a_due_run_listed_by_two_nodes_runs_once() {
    let (m, t) = setup().await;
    m.save_target(&t, json!({"target": "198.18.0.71", "interval": 3600}))
        .await
        .created_id();
    m.clock.advance(Duration::from_secs(3600));
    let svc = m.state.managed();
    let now = svc.now_secs();
    let listed = svc.store().due_targets(now).await.unwrap();
    let again = svc.store().due_targets(now).await.unwrap();
    assert_eq!((listed.len(), again.len()), (1, 1));
    assert!(
        svc.run_target(&listed[0], now).await,
        "node A claims the run"
    );
    let id = m.submits().await[0].0.clone();
    m.complete_with(&id, &[]).await;
    assert!(
        !svc.run_target(&again[0], now).await,
        "node B's listing of the same run"
    );
    assert_eq!(m.submits().await.len(), 1);
    assert_eq!(svc.run_due().await, 0, "the next run is an interval later");
}

fn super_iso(secs: u64) -> String {
    portscope_control_api::managed::iso_ms(secs as i64 * 1000)
}

#[tokio::test]
async fn alerts_on_changes_with_acknowledge_and_resolve() {
    let (m, t) = setup().await;
    m.banners
        .by_port
        .lock()
        .unwrap()
        .insert(22, "SSH-2.0-OpenSSH_9.6".into());
    let first = m.scan(&t, "198.18.0.80").await;
    m.complete_with(&first, &[("198.18.0.80", 22), ("198.18.0.80", 80)])
        .await;
    assert_eq!(
        m.get("/api/v1/alerts", &t).await.body["total"],
        0,
        "no baseline, no alerts"
    );
    m.banners
        .by_port
        .lock()
        .unwrap()
        .insert(22, "SSH-2.0-OpenSSH_9.7".into());
    m.clock.advance(Duration::from_secs(60));
    let second = m
        .post_created(&format!("/api/v1/scan/{first}/retest"), &t)
        .await;
    m.complete_with(&second, &[("198.18.0.80", 22), ("198.18.0.80", 3306)])
        .await;
    let r = m.get("/api/v1/alerts", &t).await;
    assert_eq!(r.body["total"], 3);
    assert_eq!(
        support::managed::alert_kinds(&r),
        vec![
            ("banner_changed".into(), 22, "LOW".into()),
            ("new_open_port".into(), 3306, "HIGH".into()),
            ("port_closed".into(), 80, "INFO".into()),
        ]
    );
    let banner = r.body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "banner_changed")
        .unwrap();
    assert_eq!(
        (banner["oldValue"].as_str(), banner["newValue"].as_str()),
        (Some("SSH-2.0-OpenSSH_9.6"), Some("SSH-2.0-OpenSSH_9.7"))
    );
    assert_eq!(banner["scanId"], second.as_str());
    let aid = banner["id"].as_str().unwrap().to_string();
    let r = m
        .post(&format!("/api/v1/alerts/{aid}/acknowledge"), &t, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["status"], "acknowledged");
    assert!(r.body["acknowledgedAt"].is_string());
    let r = m
        .post(&format!("/api/v1/alerts/{aid}/resolve"), &t, None)
        .await;
    assert_eq!(r.body["status"], "resolved");
    let r = m
        .post(&format!("/api/v1/alerts/{aid}/acknowledge"), &t, None)
        .await;
    assert_eq!(r.body["status"], "resolved", "resolved stays resolved");
    assert_eq!(
        m.get("/api/v1/alerts?status=open", &t).await.body["total"],
        2
    );
    assert_eq!(
        m.get("/api/v1/alerts?status=resolved&limit=1", &t)
            .await
            .body["alerts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    m.get("/api/v1/alerts?status=weird", &t)
        .await
        .assert_status(StatusCode::BAD_REQUEST);
    assert_eq!(
        m.post("/api/v1/alerts/al-nope/resolve", &t, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let other = m.token("other", SCOPE, 10, 5).await;
    assert_eq!(
        m.post(&format!("/api/v1/alerts/{aid}/resolve"), &other, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(m.get("/api/v1/alerts", &other).await.body["total"], 0);
}

#[tokio::test]
async fn security_fix_md_in_the_seed_shape() {
    let (m, t) = setup().await;
    let id = m.scan(&t, "198.18.0.90").await;
    m.complete_with(
        &id,
        &[
            ("198.18.0.90", 6379),
            ("198.18.0.90", 3389),
            ("198.18.0.90", 443),
        ],
    )
    .await;
    let r = m.get(&format!("/api/v1/scan/{id}/fix"), &t).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        Some("text/markdown; charset=utf-8")
    );
    let expected_head = format!(
        "---\nformat: security-fix/v1\nscanner: portscope\nscan_id: {id}\nscan_date: \"2024-04-01\"\n\
         targets:\n  - host: 198.18.0.90\n    risk_grade: D\n    severity_counts: {{critical: 1, high: 1, info: 1}}\n---\n\n\
         # Security Fixes: 198.18.0.90\n\n## FIX-1: Close Redis (6379/tcp) on 198.18.0.90 [CRITICAL]\n"
    );
    assert!(r.text.starts_with(&expected_head), "{}", r.text);
    assert!(r
        .text
        .contains("## FIX-2: Close RDP (3389/tcp) on 198.18.0.90 [HIGH]"));
    assert!(!r.text.contains("FIX-3"), "INFO findings are not fixes");
    assert!(r
        .text
        .contains("\niptables -I INPUT -p tcp --dport 6379 -j DROP\n"));
    assert!(r
        .text
        .contains("nft insert rule inet filter input tcp dport 3389 drop"));
    assert!(r.text.contains("ufw deny 6379/tcp"));
    m.get("/api/v1/scan/m-nope/fix", &t)
        .await
        .assert_status(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn report_page_needs_the_scan_key() {
    let (m, t) = setup().await;
    let r = m.post("/api/v1/scan", &t, scan_body("198.18.0.95")).await;
    let id = r.created_id();
    let url = r.body["reportUrl"].as_str().unwrap().to_string();
    m.complete_with(&id, &[("198.18.0.95", 23)]).await;
    let r = m.send(Method::GET, &url, None, None, "127.0.0.1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.text.contains("<h1>Port scan report: 198.18.0.95</h1>"));
    assert!(r.text.contains("Telnet (23/tcp) exposed on 198.18.0.95"));
    assert!(r.text.contains("Grade: <b>C</b> (60/100)"));
    assert!(r.header("ratelimit-limit").is_some());
    for bad in [
        format!("/report/{id}"),
        format!("/report/{id}?key=wrong"),
        format!("{url}x"),
        "/report/m-nope?key=x".to_string(),
    ] {
        let r = m.send(Method::GET, &bad, None, None, "127.0.0.1").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(r.body["error"], "not_found");
    }
}

#[tokio::test]
async fn monitors_post_new_alerts_at_or_above_the_threshold() {
    let m = M::with(
        |c| c.allow_callback = vec!["127.0.0.0/8".parse().unwrap()],
        unscheduled(100),
    )
    .await;
    let t = m.token("ci", SCOPE, 100, 10).await;
    let (url, got) = support::webhook_receiver(0).await;
    let r = m
        .save_target(
            &t,
            json!({"target": "198.18.0.99", "webhookUrl": url, "alertMinSeverity": "high",
                        "alertEmail": "ops@example.com"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["alertMinSeverity"], "HIGH");
    assert_eq!(r.body["alertEmail"], "ops@example.com");
    let bad = m
        .save_target(
            &t,
            json!({"target": "198.18.0.98", "alertEmail": "ops@example.com\r\nBcc: x@y.z"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let tid = r.created_id();
    let a = m
        .post_created(&format!("/api/v1/targets/{tid}/scan"), &t)
        .await;
    m.complete_with(&a, &[("198.18.0.99", 80)]).await;
    let b = m
        .post_created(&format!("/api/v1/targets/{tid}/scan"), &t)
        .await;
    // New: 27017 (CRITICAL) and 22 (LOW); closed: 80 (INFO). Only 27017 is sent.
    m.complete_with(&b, &[("198.18.0.99", 22), ("198.18.0.99", 27017)])
        .await;
    for _ in 0..300 {
        if !got.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["event"], "alerts");
    assert_eq!(got[0]["scanId"], b.as_str());
    let alerts = got[0]["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        (alerts[0]["port"].as_u64(), alerts[0]["severity"].as_str()),
        (Some(27017), Some("CRITICAL"))
    );
    // The same alerts by e-mail.
    for _ in 0..300 {
        if !m.outbox.0.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mail = m.outbox.0.lock().unwrap().clone();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].0, "ops@example.com");
    assert_eq!(
        mail[0].1,
        "[portscope] 1 alert(s) on 198.18.0.99 (CRITICAL)"
    );
    assert!(mail[0]
        .2
        .contains("- [CRITICAL] port 27017/tcp is newly open on 198.18.0.99"));
    assert!(mail[0].2.contains(&format!("/report/{b}?key=")));
}

/// An engine outage does not fail or refuse scans: their chunk runs fail to reach it and
/// are retried, and run once it is back. An engine restart mid-chunk re-runs the chunk.
#[tokio::test]
async fn engine_outages_retry_chunks_and_a_restart_reruns_one() {
    let (m, t) = setup().await;
    let live = m.scan(&t, "198.18.0.110").await;
    m.run_of(&live, 0).await;
    m.engine.disconnect();
    // Accepted while the engine is away (no 503: the scan is durable work in the store).
    let r = m.post("/api/v1/scan", &t, scan_body("198.18.0.111")).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let later = r.body["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(m.chunk_runs().iter().all(|c| c.scan != later));
    m.engine.connect();
    // Both chunks run again on the engine (the lost run of `live` and the new one).
    m.complete_with(&later, &[("198.18.0.111", 22)]).await;
    let runs = |id: &str| m.chunk_runs().into_iter().filter(|c| c.scan == id).count();
    for _ in 0..500 {
        if runs(&live) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        runs(&live) >= 2,
        "the chunk lost with the connection is re-run"
    );
    m.complete_with(&live, &[("198.18.0.110", 443)]).await;
    assert_eq!(m.row(&live).await.error, None);

    // An engine restart mid-chunk: the run is lost and the chunk runs again.
    let c = m.scan(&t, "198.18.0.112").await;
    let first = m.run_of(&c, 0).await;
    m.engine.restart();
    for _ in 0..500 {
        if m.run_of(&c, 0).await.run != first.run {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(m.run_of(&c, 0).await.run, first.run, "a new run of chunk 0");
    m.complete_with(&c, &[("198.18.0.112", 80)]).await;
    let r = m.get(&format!("/api/v1/scans/{c}/results"), &t).await;
    assert_eq!(r.body["results"].as_array().unwrap().len(), 1);
}

/// Delivery jobs (monitor webhooks) queued or being run.
pub(crate) async fn deliveries_left(m: &M) -> i64 {
    let live = ["Pending", "Queued", "Running"];
    delivery_jobs(m)
        .await
        .iter()
        .filter(|(status, _)| live.contains(&status.as_str()))
        .count() as i64
}

/// A managed API that may POST monitor webhooks to 127.0.0.1, with no scheduler.
async fn monitored() -> M {
    M::with(
        |c| c.allow_callback = vec!["127.0.0.0/8".parse().unwrap()],
        ManagedSettings {
            scheduler_interval: Duration::ZERO,
            ..ManagedSettings::default()
        },
    )
    .await
}

/// Waits (bounded) until a webhook has arrived at `got` and no delivery job is left to run,
/// so a second delivery would have arrived too. (A fixed 300 ms wait saw 0 once in 30 runs
/// under load.)
async fn delivered(m: &M, got: &std::sync::Mutex<Vec<Value>>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.lock().unwrap().is_empty() || deliveries_left(m).await > 0 {
        let why = || "no monitor webhook in 20 s".to_string();
        support::wait_round(deadline, Duration::from_millis(10), why).await;
    }
}

/// The monitor webhook is queued by the transaction that makes the scan `complete`, so a
/// crash after that commit cannot lose it, and a `complete` that finds the scan already
/// final (another node won) queues nothing.
#[tokio::test]
async fn the_transaction_that_completes_a_scan_queues_its_monitor_webhook() {
    let m = monitored().await;
    let t = m.token("ci", SCOPE, 100, 10).await;
    let (url, got) = support::webhook_receiver(0).await;
    let id = m.scan(&t, "198.18.0.98").await;
    let job = portscope_control_api::delivery::DeliveryJob {
        id: "monitor-test".into(),
        url,
        body: r#"{"monitor":"test"}"#.into(),
        alerts: Vec::new(),
        callback_of: None,
        email: None,
    };
    let store = m.state.managed().store();
    let now = m.state.managed().now_secs();
    let done = portscope_control_api::store::managed::Completion {
        banners: &[],
        grade: "A",
        score: 100,
        duration_ms: 5,
        now,
        alerts: &[],
        monitor: std::slice::from_ref(&job),
    };
    let complete = || store.complete(&id, &done);
    assert!(complete().await.unwrap(), "the live scan completes");
    assert!(!complete().await.unwrap(), "already final: nothing changes");
    delivered(&m, &got).await;
    let hooks = got.lock().unwrap().clone();
    assert_eq!(
        hooks,
        vec![json!({"monitor": "test"})],
        "exactly the queued one"
    );
}

/// Two API nodes on one database both run the managed finisher: a scan is graded, its
/// alerts raised and its monitors notified once (the store transition to `complete` is the
/// one place that triggers them, and only one node makes it).
#[tokio::test]
async fn two_api_nodes_finish_a_scan_once_and_notify_once() {
    let m = monitored().await;
    let second = m.second_node().await;
    let t = m.token("ci", SCOPE, 100, 10).await;
    let (url, got) = support::webhook_receiver(0).await;
    let r = m
        .post_json(
            "/api/v1/targets",
            &t,
            json!({"target": "198.18.0.97", "webhookUrl": url, "alertEmail": "ops@example.com"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let tid = r.body["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/targets/{tid}/scan");
    let a = m.post_created(&path, &t).await;
    m.complete_with(&a, &[("198.18.0.97", 80)]).await;
    let b = m.post_created(&path, &t).await;
    // The second node's finisher passes run back to back while the scan completes.
    let racing = {
        let svc = second.managed().clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                svc.finish_pass().await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    m.complete_with(&b, &[("198.18.0.97", 27017)]).await;
    racing.await.unwrap();
    // The webhook is a delivery job, claimed by either node's delivery worker on its next poll.
    delivered(&m, &got).await;
    let r = m.get("/api/v1/alerts", &t).await;
    assert_eq!(r.body["total"], 2, "{}", r.text);
    let hooks = got.lock().unwrap().len();
    assert_eq!(hooks, 1, "one monitor webhook, got {hooks}");
    assert_eq!(m.outbox.0.lock().unwrap().len(), 1, "one e-mail");
    let here = m.get(&format!("/api/v1/scan/{b}"), &t).await;
    assert_eq!(here.body["status"], "complete");
    assert_eq!(
        here.body["grade"],
        second
            .managed()
            .store()
            .scan(&b)
            .await
            .unwrap()
            .unwrap()
            .grade
            .unwrap()
            .as_str()
    );
    second.shutdown().await;
}

#[tokio::test]
async fn openapi_document_lists_the_managed_routes() {
    let m = M::new().await;
    let r = m
        .send(Method::GET, "/api/v1/openapi.json", None, None, "127.0.0.1")
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/scan",
        "/api/v1/scan/{id}",
        "/api/v1/scans",
        "/api/v1/scan/{id}/retest",
        "/api/v1/scan/{id}/cancel",
        "/api/v1/scan/{id}/fix",
        "/api/v1/scans/{id}/results",
        "/api/v1/scans/{id}/summary",
        "/api/v1/scans/trigger-all",
        "/api/v1/targets",
        "/api/v1/targets/{id}",
        "/api/v1/targets/{id}/scan",
        "/api/v1/alerts",
        "/api/v1/alerts/{id}/acknowledge",
        "/api/v1/alerts/{id}/resolve",
        "/report/{id}",
    ] {
        assert!(r.body["paths"][p].is_object(), "{p}");
    }
    assert_eq!(
        r.body["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(r.header("ratelimit-limit").is_some());
}
