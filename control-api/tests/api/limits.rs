//! Rate limits: the edge limit on every endpoint, deep scans per IP, scans per ASN.

use super::*;

#[tokio::test]
async fn edge_limit_is_30_per_minute_on_every_endpoint_and_resets() {
    let h = Harness::new().await;
    let ip = "198.18.0.15";
    for i in 0..30u64 {
        let path = if i % 3 == 0 { "/nope" } else { "/v1/fast" };
        let r = h.get(path, ip).await;
        assert_ne!(r.status, StatusCode::TOO_MANY_REQUESTS, "request {i}");
        assert_eq!(r.header_u64("x-ratelimit-remaining"), 29 - i);
    }
    let r = h.get("/v1/fast", ip).await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("30 requests per IP per minute"));
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("30"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header_u64("x-ratelimit-reset"), T0 + 60);
    // Another address has its own window.
    h.get("/v1/fast", "198.18.0.16")
        .await
        .assert_status(StatusCode::OK);

    h.clock.advance(Duration::from_secs(45));
    let r = h.post("/v1/fast", ip).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("15"));
    assert_eq!(h.scans().await, 0);

    h.clock.advance(Duration::from_secs(15));
    let r = h.get("/v1/fast", ip).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("29"));
    assert_eq!(r.header_u64("x-ratelimit-reset"), T0 + 120);
}

#[tokio::test]
async fn deep_scans_are_limited_to_one_per_ip_per_5_minutes() {
    let h = Harness::new().await;
    let ip = "198.18.0.17";
    assert_eq!(h.post("/v1/deep", ip).await.status, StatusCode::OK);
    h.fail_runs(ip, ScanType::Deep, "cancelled").await;
    h.wait_status(ip, ScanType::Deep, Status::Failed).await;

    let r = h.post("/v1/deep", ip).await;
    r.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(
        r.body["message"],
        "rate limit reached: 1 deep scan per IP per 5 minutes"
    );
    assert_eq!(r.header("retry-after"), Some("300"));
    assert_ratelimit_headers(&r);
    // Fast scans are not limited by it.
    assert_eq!(h.post("/v1/fast", ip).await.status, StatusCode::OK);

    h.clock.advance(Duration::from_secs(299));
    let r = h.post("/v1/deep", ip).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("1"));
    h.clock.advance(Duration::from_secs(1));
    let r = h.post("/v1/deep", ip).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["status"], "queued");
    assert_eq!(h.scans().await, 3);
}

/// A harness whose ASN table (`table`, one line) puts the whole lab in one network; the
/// table's folder lives as long as the harness is used.
async fn one_asn(table: &str) -> (Harness, tempfile::TempDir) {
    let (dir, path) = support::temp_file("asn.txt", table);
    (Harness::with(|c| c.asn_table = Some(path)).await, dir)
}

/// `n` `kind` scans from as many lab addresses (third octet from `octet0`), all 200; one more
/// from `over` is refused with the per-ASN message and `retry-after: 3600`.
async fn hit_the_asn_limit(h: &Harness, kind: &str, n: u32, octet0: u32, over: &str) {
    let path = format!("/v1/{kind}");
    for i in 0..n {
        let ip = format!("198.18.{}.{}", octet0 + i / 250, 1 + i % 250);
        let r = h.post(&path, &ip).await;
        assert_eq!(r.status, StatusCode::OK, "scan {i}: {}", r.text);
    }
    let r = h.post(&path, over).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.body["message"],
        format!("rate limit reached: {n} {kind} scans per network (ASN) per hour")
    );
    assert_eq!(r.header("retry-after"), Some("3600"));
}

#[tokio::test]
async fn deep_scans_are_limited_to_200_per_asn_per_hour() {
    let (h, _dir) = one_asn("# lab\n198.18.0.0/15 AS64512\n").await;
    hit_the_asn_limit(&h, "deep", 200, 1, "198.19.200.1").await;
    // Another network (not in the table: grouped by /48) is not limited.
    assert_eq!(h.post("/v1/deep", "2001:2::1").await.status, StatusCode::OK);
    h.clock.advance(Duration::from_secs(3600));
    h.post("/v1/deep", "198.19.200.1")
        .await
        .assert_status(StatusCode::OK);
}

#[tokio::test]
async fn fast_scans_are_limited_to_2000_per_asn_per_hour() {
    // No ASN table: IPv4 clients are grouped by /24; 2000 scans need 8 /24s, so use a table.
    let (h, _dir) = one_asn("198.18.0.0/15 64512\n").await;
    hit_the_asn_limit(&h, "fast", 2000, 0, "198.19.0.1").await;
    // Coalescing onto a live scan still answers.
    h.post("/v1/fast", "198.18.0.1")
        .await
        .assert_status(StatusCode::OK);
}
