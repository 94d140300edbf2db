//! Large CIDR targets: a managed scan's chunks name their hosts as address ranges, so what a
//! scan writes to the database grows with its number of chunks, not with its hosts.
//! Planning and admission only: the fake engine answers, nothing is probed.

use super::*;
use portscope_control_api::store::Db;
use portscope_core::targets::parse_target;
use std::net::{IpAddr, Ipv4Addr};

/// Bytes of the scan's chunk rows' targets and of its queue jobs' payloads.
async fn written_bytes(m: &M, id: &str) -> (i64, i64) {
    let (jobs, job) = match m.state.managed().store().pool() {
        Db::Sqlite(_) => ("Jobs", "job"),
        Db::Postgres(_) => ("apalis.jobs", "job"),
    };
    let rows = "SELECT CAST(SUM(LENGTH(targets)) AS BIGINT) FROM scan_chunks WHERE scan_id = $1"
        .to_string();
    let payloads = format!(
        "SELECT CAST(SUM(LENGTH({job})) AS BIGINT) FROM {jobs}
         WHERE id IN (SELECT job_id FROM scan_chunks WHERE scan_id = $1)"
    );
    let mut out = Vec::new();
    for sql in [rows, payloads] {
        out.push(
            match m.state.managed().store().pool() {
                Db::Sqlite(p) => {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(id)
                        .fetch_one(p)
                        .await
                }
                Db::Postgres(p) => {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
                        .bind(id)
                        .fetch_one(p)
                        .await
                }
            }
            .unwrap(),
        );
    }
    (out[0], out[1])
}

#[tokio::test]
async fn a_one_port_slash_16_is_four_range_chunks_that_cover_it_once() {
    let m = M::new().await;
    let t = m.token("big", &["198.18.0.0/15"], 10, 5).await;
    let id = m
        .scan_with(&t, json!({"target": "198.18.0.0/16", "ports": "443"}))
        .await;
    let jobs =
        portscope_control_api::store::jobs::JobStore::new(m.state.managed().store().pool().clone());
    let chunks = jobs.chunks(&id).await.unwrap();
    // 65,536 hosts x 1 port in chunks of 16,384 probes: 4 chunks, one range each.
    let targets: Vec<Vec<String>> = chunks.iter().map(|c| c.targets.clone()).collect();
    assert_eq!(
        targets,
        [
            ["198.18.0.0-198.18.63.255"],
            ["198.18.64.0-198.18.127.255"],
            ["198.18.128.0-198.18.191.255"],
            ["198.18.192.0-198.18.255.255"],
        ]
    );
    // Every address exactly once: the ranges tile the /16 in order, without gap or overlap.
    let mut next = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    for c in &chunks {
        let (IpAddr::V4(a), IpAddr::V4(b)) = parse_target(&c.targets[0]).unwrap() else {
            panic!("{:?}", c.targets)
        };
        assert_eq!(u32::from(a), next);
        assert_eq!(c.probes, u64::from(u32::from(b) - u32::from(a) + 1));
        next = u32::from(b) + 1;
    }
    assert_eq!(next, u32::from(Ipv4Addr::new(198, 19, 0, 0)));
    // What the scan wrote: a hundred bytes of targets and four small payloads, where
    // listing every address took ~0.9 MB in the rows and as much again in the queue.
    let (rows, payloads) = written_bytes(&m, &id).await;
    assert_eq!(rows, 104);
    assert!(payloads < 4 * 200, "{payloads} bytes of queue payload");
    // The engine is given the range (its target syntax), not 16,384 addresses.
    let run = m.run_of(&id, 0).await;
    assert_eq!(run.targets, ["198.18.0.0-198.18.63.255"]);
    assert_eq!(run.ports, "443");
}

/// A /12-sized target on one port (2^20 probes; 2001:2::/108, inside the lab's IPv6 range):
/// accepted, and planned into 64 chunks of 16,384 probes that each name one address range,
/// so nothing lists its million addresses. Planning and admission only (the fake engine).
#[tokio::test]
async fn a_slash_12_sized_one_port_target_is_sixty_four_range_chunks() {
    let m = M::new().await;
    let t = m.token("big", &["2001:2::/48"], 10, 5).await;
    let id = m
        .scan_with(&t, json!({"target": "2001:2::/108", "ports": "443"}))
        .await;
    let jobs =
        portscope_control_api::store::jobs::JobStore::new(m.state.managed().store().pool().clone());
    let chunks = jobs.chunks(&id).await.unwrap();
    assert_eq!(chunks.len(), 64, "2^20 probes in chunks of 16,384");
    let mut next: u128 = u128::from("2001:2::".parse::<std::net::Ipv6Addr>().unwrap());
    for c in &chunks {
        assert_eq!(c.targets.len(), 1, "one range: {:?}", c.targets);
        let (IpAddr::V6(a), IpAddr::V6(b)) = parse_target(&c.targets[0]).unwrap() else {
            panic!("{:?}", c.targets)
        };
        assert_eq!(u128::from(a), next);
        assert_eq!(u128::from(b) - u128::from(a) + 1, 16_384);
        assert_eq!(c.probes, 16_384);
        next = u128::from(b) + 1;
    }
    assert_eq!(
        next,
        u128::from("2001:2::10:0".parse::<std::net::Ipv6Addr>().unwrap()),
        "the ranges tile the /108 in order"
    );
    assert_eq!(chunks[63].targets, ["2001:2::f:c000-2001:2::f:ffff"]);
    // Bytes, not megabytes: 64 ranges of two addresses each.
    let (rows, payloads) = written_bytes(&m, &id).await;
    assert!(rows < 64 * 40, "{rows} bytes of targets");
    assert!(payloads < 64 * 220, "{payloads} bytes of queue payload");
    let r = m.get(&format!("/api/v1/scan/{id}"), &t).await;
    assert_eq!(
        r.body["progress"],
        json!({"chunksComplete": 0, "totalChunks": 64})
    );
}

/// Over the probe cap (addresses x ports per scan, 2^29): 400 with the numbers, for a scan
/// and a saved target alike, before anything is queued or counted.
#[tokio::test]
async fn targets_over_the_probe_cap_are_refused_with_the_numbers() {
    let m = M::new().await;
    let t = m
        .token("big", &["198.18.0.0/15", "2001:2::/48"], 10, 5)
        .await;
    let cap = "at most 536870912 probes per scan (e.g. a /8 on 32 ports, a /16 on 8192 ports, \
               a deep scan of a /24)";
    for (body, message) in [
        (
            json!({"target": "198.18.0.0/16", "profile": "deep"}),
            format!("scan too large: 65536 addresses x 65535 ports = 4294901760 probes; {cap}"),
        ),
        (
            json!({"target": "2001:2::/100", "ports": "1-3"}),
            format!("scan too large: 268435456 addresses x 3 ports = 805306368 probes; {cap}"),
        ),
        (
            json!({"target": "2001:2::/64", "ports": "443"}),
            "2001:2::/64 is too large: 18446744073709551616 addresses; at most 536870912 \
             probes (addresses x ports) per scan"
                .to_string(),
        ),
    ] {
        let want = json!({"error": "bad_request", "message": message});
        let r = m.post_json("/api/v1/scan", &t, body.clone()).await;
        assert_eq!(
            (r.status, &r.body),
            (StatusCode::BAD_REQUEST, &want),
            "{body}"
        );
        let r = m.save_target(&t, body.clone()).await;
        assert_eq!(
            (r.status, &r.body),
            (StatusCode::BAD_REQUEST, &want),
            "{body}"
        );
    }
    assert!(m.submits().await.is_empty());
    let r = m.get("/api/v1/scans", &t).await;
    assert_eq!(r.body["total"], 0, "{}", r.text);
}

/// The scan's chunk rows (number, targets, ports, job id) and its queue jobs (id, type,
/// status, attempts, payload), both sorted.
#[allow(clippy::type_complexity)]
async fn chunk_and_queue_rows(
    m: &M,
    id: &str,
) -> (
    Vec<(i64, String, String, String)>,
    Vec<(String, String, String, i32, Vec<u8>)>,
) {
    let jobs = match m.state.managed().store().pool() {
        Db::Sqlite(_) => "Jobs",
        Db::Postgres(_) => "apalis.jobs",
    };
    let chunks = "SELECT chunk, targets, ports, job_id FROM scan_chunks WHERE scan_id = $1 \
                  ORDER BY chunk";
    let queue = format!(
        "SELECT id, job_type, status, attempts, job FROM {jobs}
         WHERE id IN (SELECT job_id FROM scan_chunks WHERE scan_id = $1) ORDER BY id"
    );
    // One body for either pool type.
    macro_rules! rows {
        ($p:expr) => {
            (
                sqlx::query_as(chunks).bind(id).fetch_all($p).await.unwrap(),
                sqlx::query_as(sqlx::AssertSqlSafe(queue))
                    .bind(id)
                    .fetch_all($p)
                    .await
                    .unwrap(),
            )
        };
    }
    match m.state.managed().store().pool() {
        Db::Sqlite(p) => rows!(p),
        Db::Postgres(p) => rows!(p),
    }
}

/// A scan at the probe cap (2^24 addresses x the 32 fast ports = 2^29 probes: 32,768
/// chunks) is admitted in one short transaction: while it is in flight, other scans are
/// admitted on other connections (the normal busy timeout, no error), and it holds exactly
/// one chunk row and one pending queue job per chunk, each job's payload naming its chunk.
/// No workers run: nothing is claimed or probed.
#[tokio::test]
async fn a_scan_at_the_probe_cap_is_admitted_while_other_writers_go_on() {
    let m = M::with(|c| c.worker = false, unscheduled(1000)).await;
    let big_token = m.token("big", &["2001:2::/48"], 10, 5).await;
    let small_token = m.token("small", &["198.18.0.0/24"], 100, 100).await;
    let in_flight = std::cell::Cell::new(true);
    let started = std::time::Instant::now();
    let big = async {
        let r = m
            .post_json(
                "/api/v1/scan",
                &big_token,
                json!({"target": "2001:2::/104", "profile": "fast"}),
            )
            .await;
        // A figure for the record, not an assertion.
        eprintln!("cap-sized admission: {:?}", started.elapsed());
        in_flight.set(false);
        r
    };
    let others = async {
        let mut during = Vec::new();
        for host in 1..=40 {
            if !in_flight.get() {
                break;
            }
            let r = m
                .post_json(
                    "/api/v1/scan",
                    &small_token,
                    json!({"target": format!("198.18.0.{host}"), "ports": "22"}),
                )
                .await;
            during.push((r.status, r.text));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        during
    };
    let (big, during) = tokio::join!(big, others);
    assert_eq!(big.status, StatusCode::CREATED, "{}", big.text);
    let id = big.created_id();
    assert!(
        !during.is_empty(),
        "no other writer ran during the admission"
    );
    for (status, text) in &during {
        assert_eq!(*status, StatusCode::CREATED, "{text}");
    }
    let n = (1u64 << 29) / u64::from(portscope_control_api::jobs::plan::DEFAULT_CHUNK_PROBES);
    assert_eq!(n, 32_768);
    let (chunks, queue) = chunk_and_queue_rows(&m, &id).await;
    assert_eq!(chunks.len() as u64, n);
    assert_eq!(queue.len() as u64, n);
    let spec = portscope_control_api::jobs::queue::chunk_spec();
    let mut by_id: std::collections::HashMap<&str, &(i64, String, String, String)> =
        chunks.iter().map(|c| (c.3.as_str(), c)).collect();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.0, i as i64, "chunks numbered 0..n");
    }
    for (job_id, job_type, status, attempts, payload) in &queue {
        let (chunk, targets, ports, _) = by_id.remove(job_id.as_str()).expect("its chunk row");
        assert_eq!(
            (job_type.as_str(), status.as_str(), *attempts),
            (spec.job_type, "Pending", 0)
        );
        let job: portscope_control_api::jobs::ChunkJob = serde_json::from_slice(payload).unwrap();
        assert_eq!(job.scan_id, id);
        assert_eq!(i64::from(job.chunk), *chunk);
        assert_eq!(job.targets.join(","), *targets);
        assert_eq!(job.ports, *ports);
    }
    assert!(by_id.is_empty(), "every chunk row has its queue job");
    let r = m.get(&format!("/api/v1/scan/{id}"), &big_token).await;
    assert_eq!(
        r.body["progress"],
        json!({"chunksComplete": 0, "totalChunks": 32_768})
    );
}
