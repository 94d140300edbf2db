//! A webhook receiver on loopback that records every request (its `X-Portscope-Delivery`
//! id and JSON body) and answers 200 after a delay chosen per request, so a test can stall
//! a delivery (a kill mid-delivery) or slow every one (two nodes racing). Shared by the
//! suites that include it (`durable_webhooks`, `managed`).

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (delivery id, body) of every request received.
pub type Got = Arc<Mutex<Vec<(String, Value)>>>;

/// Serves `POST /hook`; request `n` (from 0) is answered after `delay(n)`. Returns the URL.
pub async fn receiver(delay: fn(usize) -> Duration) -> (String, Got) {
    let got: Got = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let g = g.clone();
            async move {
                let id = headers
                    .get("x-portscope-delivery")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let n = {
                    let mut g = g.lock().unwrap();
                    g.push((id, serde_json::from_slice(&body).unwrap()));
                    g.len() - 1
                };
                tokio::time::sleep(delay(n)).await;
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}
