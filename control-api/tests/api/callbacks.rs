//! Callback URLs: the SSRF rules, and the final result POSTed on completion and on failure.

use super::*;

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
        let r = h.post_with_callback("/v1/fast", "198.18.0.23", url).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{url}");
        assert_eq!(r.body["error"], "invalid_callback", "{url}");
        assert_ratelimit_headers(&r);
    }
    let r = h
        .post_with_callback("/v1/fast", "198.18.0.23", "http://127.0.0.1/hook")
        .await;
    assert_eq!(
        r.body["message"],
        "callback host 127.0.0.1 resolves to 127.0.0.1, which is not a public address"
    );
    assert!(h.engine.requests().is_empty(), "refused before queuing");

    let lab = Harness::with(|c| c.allow_callback = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let r = lab
        .post_with_callback("/v1/fast", "198.18.0.23", "http://127.0.0.1:9/hook")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "queued");
}

#[tokio::test]
async fn webhook_posts_the_final_result_and_retries_after_a_500() {
    let (url, got) = support::webhook_receiver(1).await;
    let h = Harness::with(|c| c.allow_callback = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let ip = "198.18.0.24";
    let r = h.post_with_callback("/v1/fast", ip, &url).await;
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
    h.post_with_callback("/v1/deep", ip, &url).await;
    // A coalesced POST may add its own callback; the same URL is delivered once.
    h.post_with_callback("/v1/deep", ip, &url).await;
    h.finish_deep_chunks(ip, 28).await;
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
