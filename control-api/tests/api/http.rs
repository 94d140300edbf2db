//! The HTTP edge: JSON errors (404, 405, 413, 408), the OpenAPI document and the metrics
//! listener.

use super::*;

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
