//! Issue 8: webhook deliveries survive the API process dying mid-delivery. A real receiver
//! on loopback stalls the first request; the `portscope-api` process delivering it is
//! SIGKILLed while it waits, restarted on the same database, and the delivery arrives again
//! with the same `X-Portscope-Delivery` id (at-least-once; receivers dedupe on the id). On
//! SQLite and on PostgreSQL (a throwaway server). The engine is scripted (`tests/api_node`).

mod api_node;
#[path = "support/receiver.rs"]
mod receiver;

use api_node::{node, pg, restart, send};
use receiver::{receiver, Got};
use reqwest::Method;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Two tests, `$sqlite` and `$postgres`, each running `$run` (an async fn of the database
/// URL and then `$arg`s) on a fresh database: a SQLite file ([`sqlite`]), a throwaway
/// PostgreSQL ([`pg`]).
macro_rules! on_sqlite_and_postgres {
    ($run:ident $(($($arg:expr),*))?: $sqlite:ident, $postgres:ident) => {
        on_sqlite_and_postgres!(@on $sqlite, sqlite(), $run $(, $($arg),*)?);
        on_sqlite_and_postgres!(@on $postgres, pg(), $run $(, $($arg),*)?);
    };
    (@on $name:ident, $db:expr, $run:ident $(, $arg:expr)*) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_db, url) = $db.await;
            $run(&url $(, $arg)*).await;
        }
    };
}

/// A fresh SQLite file (its folder, and its path).
async fn sqlite() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.db").display().to_string();
    (dir, path)
}

/// A receiver whose first request never gets an answer (it stalls until the sender dies);
/// later ones get 200.
async fn stalling_receiver() -> (String, Got) {
    receiver(|n| Duration::from_secs(if n == 0 { 120 } else { 0 })).await
}

async fn wait_for(what: &str, secs: u64, f: impl Fn() -> bool, log: &api_node::Node) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the API's log:\n{}",
            log.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 20 s) until the hook has received `count` deliveries.
async fn wait_deliveries(what: &str, got: &Got, count: usize, n: &api_node::Node) {
    wait_for(what, 20, || got.lock().unwrap().len() == count, n).await;
}

/// Waits for the first (stalled) delivery attempt, SIGKILLs the node, restarts it on the
/// same config and waits for the resumed delivery; checks both carry the same delivery id.
/// The restarted node and the two deliveries.
async fn kill_mid_delivery_and_restart(
    n: api_node::Node,
    got: &Got,
) -> (api_node::Node, Vec<(String, Value)>) {
    wait_deliveries("the first delivery attempt", got, 1, &n).await;
    let log = n.log.clone();
    let config = n.kill();
    let n = restart(&config, &log).await;
    wait_deliveries("the resumed delivery", got, 2, &n).await;
    let got = got.lock().unwrap().clone();
    assert!(
        got[0].0.starts_with("dlv_") && got[0].0.len() == 36,
        "{got:?}"
    );
    assert_eq!(got[0].0, got[1].0, "the same delivery id after the restart");
    (n, got)
}

/// Long attempts (the stall must outlast the kill), loopback callbacks allowed.
const WEBHOOK_CONFIG: &str = "allow-callback = [\"127.0.0.0/8\"]\nwebhook-timeout-ms = 60000\n\
                              webhook-backoff-ms = 100\n";

/// A self-scan's `X-Callback-Url` delivery, killed mid-delivery, arrives after a restart:
/// of a complete scan, or (`ip` = [`api_node::REFUSED`]) of one the engine refused, whose
/// callback the chunk worker's failing transaction queued.
async fn callback_resumes_after_a_kill(db: &str, ip: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (url, got) = stalling_receiver().await;
    let n = node(dir.path(), "a", db, WEBHOOK_CONFIG).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/fast", n.base))
        .header("x-forwarded-for", ip)
        .header("x-callback-url", &url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let (n, got) = kill_mid_delivery_and_restart(n, &got).await;
    let (s, polled) = send(Method::GET, format!("{}/v1/fast", n.base), ip, None, None).await;
    assert_eq!(s, reqwest::StatusCode::OK);
    let status = if ip == api_node::REFUSED {
        "failed"
    } else {
        "complete"
    };
    assert_eq!(polled["status"], status, "{polled}");
    assert_eq!(got[0].1, polled);
    assert_eq!(got[1].1, polled);
}

on_sqlite_and_postgres!(
    callback_resumes_after_a_kill("198.18.6.1"):
    a_callback_killed_mid_delivery_arrives_after_a_restart_on_sqlite,
    a_callback_killed_mid_delivery_arrives_after_a_restart_on_postgres
);

on_sqlite_and_postgres!(
    callback_resumes_after_a_kill(api_node::REFUSED):
    a_failed_scans_callback_killed_mid_delivery_arrives_after_a_restart_on_sqlite,
    a_failed_scans_callback_killed_mid_delivery_arrives_after_a_restart_on_postgres
);

/// `GET /api/v1/scans/{id}` until complete (each poll from its own address: the managed
/// API's per-IP limit is 60 a minute).
async fn wait_complete(base: &str, token: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for k in 0u32.. {
        let ip = format!("198.18.{}.{}", 8 + k / 250, 1 + k % 250);
        let (s, body) = send(
            Method::GET,
            format!("{base}/api/v1/scans/{id}"),
            &ip,
            Some(token),
            None,
        )
        .await;
        assert_eq!(s, reqwest::StatusCode::OK, "{body}");
        if body["status"] == "complete" {
            return;
        }
        assert!(Instant::now() < deadline, "never complete: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A monitor webhook (a saved target's new CRITICAL finding), killed mid-delivery, arrives
/// after a restart: the delivery is a job in the queue (`crate::delivery`).
async fn monitor_resumes_after_a_kill(db: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (url, got) = stalling_receiver().await;
    let n = node(dir.path(), "a", db, WEBHOOK_CONFIG).await;
    let token = api_node::token(db, "monitor", 100, 10);
    let post = |base: String, path: String, body: Option<Value>| {
        let token = token.clone();
        async move {
            send(
                Method::POST,
                format!("{base}{path}"),
                "198.18.7.1",
                Some(&token),
                body,
            )
            .await
        }
    };
    let (s, target) = post(
        n.base.clone(),
        "/api/v1/targets".into(),
        Some(
            serde_json::json!({"target": "198.18.0.99", "webhookUrl": url,
                                "alertMinSeverity": "high"}),
        ),
    )
    .await;
    assert_eq!(s, reqwest::StatusCode::CREATED, "{target}");
    let scan_path = format!("/api/v1/targets/{}/scan", target["id"].as_str().unwrap());
    for _ in 0..2 {
        let (s, scan) = post(n.base.clone(), scan_path.clone(), None).await;
        assert!(s.is_success(), "{s} {scan}");
        wait_complete(&n.base, &token, scan["id"].as_str().unwrap()).await;
    }
    let (_n, got) = kill_mid_delivery_and_restart(n, &got).await;
    assert_eq!(got[0].1, got[1].1, "the same body");
    assert!(got[0].1.to_string().contains("23/tcp"), "{}", got[0].1);
}

on_sqlite_and_postgres!(
    monitor_resumes_after_a_kill:
    a_monitor_webhook_killed_mid_delivery_arrives_after_a_restart_on_sqlite,
    a_monitor_webhook_killed_mid_delivery_arrives_after_a_restart_on_postgres
);
