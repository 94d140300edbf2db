//! Who may be scanned: opted-out and non-public addresses, IPv6 and IPv4-mapped
//! requesters, `X-Forwarded-For` from trusted proxies.

use super::*;

#[tokio::test]
async fn opted_out_addresses_get_403() {
    let lines = "# opted out\n198.18.7.0/24\n2001:2::dead # one host\n";
    let (_dir, list) = support::temp_file("opt-out.txt", lines);
    let h = Harness::with(|c| c.opt_out = Some(list)).await;
    for ip in ["198.18.7.9", "::ffff:198.18.7.1", "2001:2::dead"] {
        for m in [Method::POST, Method::GET] {
            let r = h.call(m.clone(), "/v1/fast", ip, &[]).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{m} from {ip}");
            assert_eq!(
                r.body,
                json!({"error": "not_available", "message": "this address is opted out of scanning or restricted"})
            );
            assert_ratelimit_headers(&r);
        }
    }
    assert!(h.engine.requests().is_empty());
    h.post("/v1/fast", "198.18.8.1")
        .await
        .assert_status(StatusCode::OK);
}

#[tokio::test]
async fn non_public_addresses_get_422_invalid_target() {
    let h = Harness::new().await;
    for ip in [
        "10.0.0.1",
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "::1",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "169.254.1.1",
        "192.0.2.1",
        "224.0.0.1",
        "fe80::1",
        "fd00::1",
        "2001:db8::1",
    ] {
        let r = h.post("/v1/fast", ip).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{ip}");
        assert_eq!(r.body["error"], "invalid_target", "{ip}");
        assert_ratelimit_headers(&r);
        h.get("/v1/deep", ip)
            .await
            .assert_status(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let r = h.post("/v1/fast", "::ffff:127.0.0.1").await;
    assert_eq!(
        r.body,
        json!({"error": "invalid_target",
               "message": "127.0.0.1 cannot be scanned: it is in 127.0.0.0/8 (loopback (RFC 1122)), which is not publicly routable"})
    );
    assert!(h.engine.requests().is_empty());
}

#[tokio::test]
async fn ipv6_and_ipv4_mapped_requesters() {
    let h = Harness::new().await;
    let r = h.post("/v1/fast", "2001:2::5").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["ip"], "2001:2::5");
    let r = h.post("/v1/fast", "::ffff:198.18.0.18").await;
    assert_eq!(r.body["ip"], "198.18.0.18");
    h.submit_id(1).await;
    let mut targets: Vec<Vec<String>> = h
        .engine
        .requests()
        .into_iter()
        .filter_map(|r| match r {
            EngineRequest::Submit { targets, .. } => Some(targets),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            vec!["198.18.0.18".to_string()],
            vec!["2001:2::5".to_string()]
        ]
    );
    // The mapped and plain forms are one client.
    assert_eq!(
        h.get("/v1/fast", "198.18.0.18").await.body["status"],
        "queued"
    );
}

#[tokio::test]
async fn x_forwarded_for_is_honoured_only_from_trusted_proxies() {
    let h = Harness::with(|c| c.trusted_proxy = vec!["127.0.0.1".parse().unwrap()]).await;
    // (method, peer, X-Forwarded-For, the client the API sees).
    for (method, peer, xff, client) in [
        // Trusted proxy: the right-most untrusted hop is the client.
        (
            Method::GET,
            "127.0.0.1",
            "203.0.113.5, 198.18.0.20",
            "198.18.0.20",
        ),
        (
            Method::POST,
            "::ffff:127.0.0.1",
            "198.18.0.21, 127.0.0.1",
            "198.18.0.21",
        ),
        // Untrusted peer: the header is ignored.
        (Method::GET, "198.18.0.30", "198.18.0.40", "198.18.0.30"),
    ] {
        let post = method == Method::POST;
        let r = h
            .call(method, "/v1/fast", peer, &[("x-forwarded-for", xff)])
            .await;
        assert_eq!(r.body["ip"], client, "{peer} {xff}");
        if post {
            assert_eq!(r.body["status"], "queued");
        }
    }
    // The proxy without a header is itself the client (and loopback is refused).
    let r = h.get("/v1/fast", "127.0.0.1").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    // A malformed chain from a trusted proxy is a 400.
    let r = from_proxy(&h, "198.18.0.1, bogus").await;
    r.assert_error(StatusCode::BAD_REQUEST, "bad_request");
    assert_ratelimit_headers(&r);
    // The edge limit counts the forwarded client, not the proxy.
    let r = from_proxy(&h, "198.18.0.22").await;
    assert_eq!(r.header("x-ratelimit-remaining"), Some("29"));
}

/// GET `/v1/fast` from the trusted proxy on loopback, forwarding `xff`.
async fn from_proxy(h: &Harness, xff: &str) -> support::Reply {
    h.call(
        Method::GET,
        "/v1/fast",
        "127.0.0.1",
        &[("x-forwarded-for", xff)],
    )
    .await
}
