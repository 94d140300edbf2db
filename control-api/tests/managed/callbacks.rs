//! Self-scan callbacks are delivery jobs (issue 8): the transaction that makes a scan final
//! queues them, so two API nodes on one database deliver a callback once, however long the
//! receiver takes (before, every node's finisher delivered the pending callbacks of failed
//! scans it saw, and a slow receiver got the same callback from each).

use super::targets::deliveries_left;
use super::*;
use axum::body::Body;
use axum::http::Request;
use portscope_control_api::engine::fake::OnSubmit;
use portscope_control_api::store::callbacks::CallbackState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_scans_callback_is_one_delivery_job_across_two_api_nodes() {
    let m = M::with(
        |c| c.allow_callback = vec!["127.0.0.0/8".parse().unwrap()],
        unscheduled(1000),
    )
    .await;
    let second = m.second_node().await;
    // The receiver takes 1.5 s: both nodes' finishers poll several times meanwhile.
    let (url, got) = support::receiver::receiver(|_| Duration::from_millis(1500)).await;
    m.engine.on_submit(OnSubmit::Reject {
        code: "policy".into(),
        message: "refused".into(),
    });
    let ip = "198.18.0.50";
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/fast")
        .header("x-callback-url", &url)
        .body(Body::empty())
        .unwrap();
    let r = support::oneshot(&m.router, req, ip).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let id = r.body["id"].as_str().map(str::to_owned);
    let scans = m.state.scans().store().clone();
    let scan_id = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let row = m
                .state
                .scans()
                .latest(
                    ip.parse().unwrap(),
                    portscope_control_api::model::ScanType::Fast,
                )
                .await
                .unwrap();
            if let Some(row) = row.filter(|r| r.status == Status::Failed) {
                break row.id;
            }
            assert!(tokio::time::Instant::now() < deadline, "never failed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if let Some(id) = id {
        assert_eq!(id, scan_id);
    }
    // Delivered and recorded, and no delivery job left that could deliver it again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state = scans.callback_state(&scan_id, &url).await.unwrap();
        if state == Some(CallbackState::Delivered) && deliveries_left(&m).await == 0 {
            break;
        }
        let why = || format!("callback not delivered: {state:?}");
        support::wait_round(deadline, Duration::from_millis(20), why).await;
    }
    // Both finishers have polled many times since (250 ms each).
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one delivery across two nodes: {got:?}");
    let req = Request::builder()
        .uri("/v1/fast")
        .body(Body::empty())
        .unwrap();
    let polled = support::oneshot(&m.router, req, ip).await;
    assert_eq!(polled.body["status"], "failed");
    assert_eq!(got[0].1, polled.body);
    assert!(got[0].0.starts_with("dlv_"), "{}", got[0].0);
    second.shutdown().await;
}
