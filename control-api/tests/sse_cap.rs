//! The event streams are bounded: with `MAX_STREAMS` open, one more is refused with 429
//! `too_many_streams`, and closing one frees its slot. (Its own test binary: the slot count
//! is per process.)

mod support;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use portscope_control_api::http::sse::MAX_STREAMS;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use support::managed::M;
use tower::ServiceExt;

#[tokio::test]
async fn one_stream_over_the_cap_is_refused_and_a_closed_one_frees_a_slot() {
    let m = M::new().await;
    let key = m.token("cap", &["198.18.0.0/15"], 100, 5).await;
    let r = m
        .post("/api/v1/scan", &key, Some(json!({"target": "198.18.0.5"})))
        .await;
    let id = r.body["id"].as_str().unwrap().to_string();
    let open = |n: usize| {
        let mut req = Request::get(format!("/api/v1/scan/{id}/events"))
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap();
        // A different client address each time: the per-IP limit is not what is tested.
        let ip = format!("10.{}.{}.1", n / 250, n % 250).parse().unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
        m.router.clone().oneshot(req)
    };
    let mut streams = Vec::new();
    for n in 0..MAX_STREAMS {
        let resp = open(n).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "stream {n}");
        streams.push(resp);
    }
    let over = open(MAX_STREAMS).await.unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = http_body_util::BodyExt::collect(over.into_body())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap();
    assert_eq!(v["error"], "too_many_streams");
    // Dropping a stream (the client leaves) ends its follower within a tick.
    streams.pop();
    for _ in 0..100 {
        let r = open(MAX_STREAMS + 1).await.unwrap();
        if r.status() == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the closed stream's slot never came back");
}
