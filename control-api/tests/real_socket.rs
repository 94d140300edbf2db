//! One test over a real TCP socket on 127.0.0.1: `ConnectInfo` comes from the connection,
//! and the loopback requester is the target (the lab config allows 127.0.0.0/8 here; the
//! engine, banners and PTR are fakes, so nothing is probed).

mod support;

use axum::http::StatusCode;
use portscope_control_api::app;
use serde_json::{json, Value};

#[tokio::test]
async fn serves_over_a_real_socket_with_the_peer_as_target() {
    let h = support::Harness::with(|c| c.allow_target.push("127.0.0.0/8".parse().unwrap())).await;
    let base = support::serve_on_loopback(app(h.state.clone())).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let r = client.get(format!("{base}/v1/fast")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-ratelimit-limit"], "30");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "29");
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"ip": "127.0.0.1", "scan_type": "fast", "status": "none"})
    );

    let r = client.post(format!("{base}/v1/fast")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(body["ip"], "127.0.0.1");
    // The in-process worker sends its one chunk to the (fake) engine.
    let run = h.submit_id(0).await;
    assert!(
        run.starts_with(&format!(
            "{}/0/",
            h.state
                .scans()
                .latest(
                    "127.0.0.1".parse().unwrap(),
                    portscope_control_api::model::ScanType::Fast
                )
                .await
                .unwrap()
                .unwrap()
                .id
        )),
        "{run}"
    );

    let r = client.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "27");

    let r = client
        .delete(format!("{base}/v1/deep"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}
