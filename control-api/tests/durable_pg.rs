//! Issue 8, the cluster held to its word on a real PostgreSQL with two real `portscope-api`
//! processes (`tests/api_node`): a token's quota, the per-IP edge limit and the per-IP deep
//! scan limit hold exactly under concurrent requests split over both nodes, and concurrent
//! POSTs of one address join one live scan whichever node they reach.

mod api_node;

use api_node::{send, token, two_nodes, Pair};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Asserts that `answers` are `want.0` of status `ok` and `want.1` refused with 429, each
/// with the body `refusal`.
fn assert_split(
    answers: &[(StatusCode, Value)],
    ok: StatusCode,
    want: (usize, usize),
    refusal: Value,
) {
    let count = answers.iter().filter(|(s, _)| *s == ok).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .map(|(_, b)| b)
        .collect();
    assert_eq!((count, refused.len()), want, "{answers:?}");
    for body in refused {
        assert_eq!(body, &refusal);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_holds_exactly_under_concurrent_requests_on_two_nodes() {
    let nodes = two_nodes().await;
    // 5 scans a month; 24 simultaneous POSTs of distinct targets, half on each node, each
    // from its own client address (so no per-IP limit interferes).
    let secret = token(&nodes.url, "quota", 5, 100);
    let posts = (0..24u8).map(|i| {
        let (url, ip, secret) = (
            format!("{}/api/v1/scan", nodes.alternate(i).base),
            format!("198.18.3.{}", 1 + i),
            &secret,
        );
        async move {
            let target = json!({ "target": format!("198.18.0.{}", 20 + i) });
            send(Method::POST, url, &ip, Some(secret), Some(target)).await
        }
    });
    let answers = futures_util::future::join_all(posts).await;
    let refusal = json!({
        "error": "monthly_limit",
        "message": "monthly scan limit reached: 5 scans this month for token quota; \
                    it resets on the 1st (UTC) or ask the operator for a larger plan"
    });
    assert_split(&answers, StatusCode::CREATED, (5, 19), refusal);
    // Both nodes count the same five.
    for n in [&nodes.a, &nodes.b] {
        let (s, list) = send(
            Method::GET,
            format!("{}/api/v1/scans", n.base),
            "198.18.4.1",
            Some(&secret),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{list}");
        assert_eq!(list["total"], 5, "{list}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_limit_holds_exactly_under_concurrent_requests_on_two_nodes() {
    let nodes = two_nodes().await;
    // 30 requests per IP per minute: 44 simultaneous GETs from one client, half on each.
    let gets = (0..44u8).map(|i| nodes.alternate(i).get("/v1/fast", "198.18.5.5"));
    let answers = futures_util::future::join_all(gets).await;
    let refusal = json!({
        "error": "rate_limited",
        "message": "edge limit reached: 30 requests per IP per minute"
    });
    assert_split(&answers, StatusCode::OK, (30, 14), refusal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deep_scan_per_ip_holds_under_concurrent_posts_on_two_nodes() {
    let nodes = two_nodes().await;
    // 1 deep scan per IP per 5 minutes: 24 simultaneous POSTs from one client, half on
    // each node. Exactly one scan is made; every other POST joins it (200) or, once it has
    // finished, is refused by the limit.
    let ip = "198.18.6.6";
    let (answers, mut db) = posts_on_both(&nodes, "/v1/deep", ip).await;
    let refusal = json!({
        "error": "rate_limited",
        "message": "rate limit reached: 1 deep scan per IP per 5 minutes"
    });
    for (s, body) in &answers {
        match *s {
            StatusCode::OK => {}
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(body, &refusal),
            _ => panic!("{s}: {body}"),
        }
    }
    let (scans,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM scans WHERE ip = $1 AND scan_type = 'deep'")
            .bind(ip)
            .fetch_one(&mut db)
            .await
            .unwrap();
    assert_eq!(scans, 1, "{answers:?}");
    let counted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT limiter, count FROM rate_windows \
         WHERE limiter IN ('deep_ip', 'deep_asn') ORDER BY limiter",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let want = vec![("deep_asn".to_string(), 1), ("deep_ip".to_string(), 1)];
    assert_eq!(counted, want, "the refused POSTs gave their counts back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_posts_of_one_address_on_two_nodes_never_run_two_scans_at_once() {
    let nodes = two_nodes().await;
    // 24 simultaneous fast POSTs from one client, half on each node (fast scans have no
    // per-IP limit). A POST joins the live scan of its address or, once that scan is over,
    // starts the next: so no scan may start before the one before it has finished.
    let ip = "198.18.6.7";
    let (answers, mut db) = posts_on_both(&nodes, "/v1/fast", ip).await;
    assert!(
        answers.iter().all(|(s, _)| *s == StatusCode::OK),
        "{answers:?}"
    );
    let spans = loop {
        let spans: Vec<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT j.created_at_ms, j.finished_at_ms FROM job_scans j \
             JOIN scans s ON s.id = j.id \
             WHERE s.ip = $1 AND s.scan_type = 'fast' ORDER BY j.created_at_ms",
        )
        .bind(ip)
        .fetch_all(&mut db)
        .await
        .unwrap();
        if spans.iter().all(|(_, f)| f.is_some()) {
            break spans;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(!spans.is_empty());
    for pair in spans.windows(2) {
        let (finished, next) = (pair[0].1.unwrap(), pair[1].0);
        assert!(next >= finished, "two live scans of one address: {spans:?}");
    }
}

/// 24 simultaneous POSTs of `path` from `ip`, half on each node: the answers, and a
/// connection to the nodes' database.
async fn posts_on_both(
    nodes: &Pair,
    path: &str,
    ip: &str,
) -> (Vec<(StatusCode, Value)>, sqlx::PgConnection) {
    let posts = (0..24u8).map(|i| nodes.alternate(i).post(path, ip));
    let answers = futures_util::future::join_all(posts).await;
    let db = <sqlx::PgConnection as sqlx::Connection>::connect(&nodes.url)
        .await
        .unwrap();
    (answers, db)
}
