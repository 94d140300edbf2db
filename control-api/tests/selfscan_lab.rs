//! The self-scan API on chunk jobs with a real engine in the lab: `/v1/deep` posted to
//! `portscope-api` serving (the embedded default: its in-process worker runs the 32 chunks
//! on the engine in a scanner namespace), every port of the lab host checked against the
//! truth, and a second `portscope-api --no-worker` on the same database answering the same
//! GET; then a fast scan. And an API node SIGKILLed in the middle of a deep scan: restarted
//! on the same database, it finishes the scan exactly. Each on SQLite and on PostgreSQL.
//! The requester is the lab host, named by `X-Forwarded-For` from the trusted loopback
//! proxy. Needs root and the workspace binaries (`cargo test --workspace` builds them).

mod jobs_support;

use jobs_support::{assert_exact, Worker, WORKER_UID};
use portscope_control_api::model::ScanType;
use portscope_control_api::store::jobs::{migrate_queue, JobStore};
use portscope_control_api::store::{Db, Store};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};
use xtask::lab::{Expected, LabConfig, LabGuard};
use xtask::nodes::Engines;
use xtask::stack::expect_ports_of;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A config file in `dir` for an API on `addr` over `db` and the engine at `socket`.
fn config(
    dir: &Path,
    name: &str,
    addr: SocketAddr,
    db: &str,
    socket: &Path,
    extra: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "listen = [\"{addr}\"]\ndb = \"{db}\"\nengine-socket = \"{}\"\n\
             secret-file = \"{}\"\nallow-target = [\"198.18.0.0/15\", \"2001:2::/48\"]\n\
             trusted-proxy = [\"127.0.0.1/32\"]\nbanners = false\nptr = false\n{extra}\n",
            socket.display(),
            dir.join("shared.secret").display()
        ),
    )
    .unwrap();
    path
}

/// `GET|POST base/v1/deep` as the lab host `client`: status and body text.
async fn call(method: reqwest::Method, base: &str, client: IpAddr) -> (u16, String) {
    call_kind(method, base, "deep", client).await
}

/// `GET|POST base/v1/KIND` as the lab host `client`: status and body text.
async fn call_kind(
    method: reqwest::Method,
    base: &str,
    kind: &str,
    client: IpAddr,
) -> (u16, String) {
    let r = reqwest::Client::new()
        .request(method, format!("{base}/v1/{kind}"))
        .header("x-forwarded-for", client.to_string())
        .send()
        .await;
    match r {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap()),
        Err(_) => (0, String::new()),
    }
}

/// POSTs `/v1/KIND` as `client`, watches its row in the store every 5 ms (not over HTTP:
/// the edge limit allows 30 requests a minute) until it is final, then GETs it: the final
/// document and the time from the POST to the final row.
async fn scan(
    base: &str,
    kind: &str,
    client: IpAddr,
    store: &Store,
    api: &Worker,
) -> (Value, Duration) {
    let t = if kind == "deep" {
        ScanType::Deep
    } else {
        ScanType::Fast
    };
    let started = Instant::now();
    let (status, text) = call_kind(reqwest::Method::POST, base, kind, client).await;
    assert_eq!(status, 200, "{text}");
    let posted: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(posted["status"], "queued", "{posted}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let took = loop {
        let row = store.latest(&client.to_string(), t, 0).await.unwrap();
        if row.as_ref().is_some_and(|r| r.is_final()) {
            break started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "not finished: {row:?}\n{}",
            api.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (_, text) = call_kind(reqwest::Method::GET, base, kind, client).await;
    (serde_json::from_str(&text).unwrap(), took)
}

/// Waits until the API at `base` answers.
async fn wait_up(base: &str, client: IpAddr, api: &Worker) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(reqwest::Method::GET, base, client).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "{base} did not start:\n{}",
            api.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A lab named `s<pid><tag>` (`s`: no other test binary names its labs so), one scanner.
fn lab(tag: &str) -> LabGuard {
    LabGuard::up(&LabConfig {
        name: format!("s{}{tag}", std::process::id() % 10_000),
        hosts: 0,
        scanners: 1,
        ..LabConfig::default()
    })
    .expect("lab up (needs root)")
}

/// Database `db` made and migrated here, then (SQLite, a file in `dir`) handed to the
/// unprivileged API user.
async fn database(dir: &tempfile::TempDir, db: &str) -> Db {
    let pool = Db::connect(Path::new(db), Duration::from_secs(5))
        .await
        .unwrap();
    migrate_queue(&pool).await.unwrap();
    for f in std::fs::read_dir(dir.path()).unwrap() {
        std::os::unix::fs::chown(f.unwrap().path(), Some(WORKER_UID), Some(WORKER_UID)).unwrap();
    }
    pool
}

/// A throwaway PostgreSQL server of this test's own.
async fn postgres() -> xtask::pg::PgGuard {
    tokio::task::spawn_blocking(xtask::pg::PgGuard::start)
        .await
        .unwrap()
        .expect("PostgreSQL from /usr/lib/postgresql (.ci/setup installs it)")
}

/// A deep scan's document lists exactly the lab truth's open and filtered ports of `host`.
fn assert_deep_matches_truth(lab: &LabGuard, host: IpAddr, body: &Value) {
    let truth = lab.truth().host(host).expect("a lab host");
    let want = |f: fn(Expected) -> bool| -> BTreeSet<u16> {
        (1..=65535u16).filter(|&p| f(truth.expected(p))).collect()
    };
    assert_eq!(
        expect_ports_of(body, "ports_open"),
        want(|e| matches!(e, Expected::Open))
    );
    assert_eq!(
        expect_ports_of(body, "ports_filtered"),
        want(|e| matches!(e, Expected::FilteredSilent | Expected::FilteredIcmp))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_self_scan_runs_on_the_in_process_worker_exactly_and_a_second_api_answers_it() {
    let dir = jobs_support::shared_tempdir();
    let db = dir.path().join("self.db").to_string_lossy().into_owned();
    exercise(1, dir, db).await;
}

/// The same on PostgreSQL: two API nodes on one throwaway server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_on_postgres() {
    let pg = postgres().await;
    exercise(2, jobs_support::shared_tempdir(), pg.url()).await;
    drop(pg);
}

/// The test on database `db` (a SQLite file in `dir`, or a `postgres://` URL); `n` tells
/// its lab apart.
async fn exercise(n: u32, dir: tempfile::TempDir, db: String) {
    let lab = lab(&n.to_string());
    let bins = xtask::stack::bin_dir().unwrap();
    let engines = Engines::start(&lab, &bins, &[]).expect("engine");
    let pool = database(&dir, &db).await;
    let backend = if db.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let socket = &engines.node(1).socket;
    let (a1, a2) = (free_addr(), free_addr());
    let c1 = config(dir.path(), "api1", a1, &db, socket, "");
    let c2 = config(dir.path(), "api2", a2, &db, socket, "worker = false");
    let host = lab.truth().hosts[0].addr;
    let (b1, b2) = (format!("http://{a1}"), format!("http://{a2}"));
    // One after the other: the first makes the shared secret file.
    let api1 = Worker::api_with_config(&bins, &c1, "api1");
    wait_up(&b1, host, &api1).await;
    let api2 = Worker::api_with_config(&bins, &c2, "api2");
    wait_up(&b2, host, &api2).await;

    let store = Store::new(pool.clone());
    let (body, took) = scan(&b1, "deep", host, &store, &api1).await;
    assert_eq!(body["status"], "complete", "{body}\n{}", api1.log());
    assert_eq!(body["ip"], host.to_string());
    eprintln!(
        "{backend}: deep self-scan POST -> complete: {} ms (duration_ms, first claim to last commit: {} ms)",
        took.as_millis(),
        body["duration_ms"]
    );

    // Every port against the truth: the response ...
    assert_deep_matches_truth(&lab, host, &body);
    let truth = lab.truth().host(host).expect("a lab host");
    // ... and the job scan's rows, pair by pair (one run per chunk, all on the API's node).
    let row = store
        .latest(&host.to_string(), ScanType::Deep, 0)
        .await
        .unwrap()
        .unwrap();
    let jobs = JobStore::new(pool.clone());
    let chunks = jobs.chunks(&row.id).await.unwrap();
    assert_eq!(chunks.len(), 32);
    assert!(chunks.iter().all(|c| c.runs == 1), "{chunks:?}");
    assert_exact(lab.truth(), &[host], &jobs, &row.id).await;

    // The API node without a worker answers the same GET from the same database.
    let (s1, t1) = call(reqwest::Method::GET, &b1, host).await;
    let (s2, t2) = call(reqwest::Method::GET, &b2, host).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(t2, t1, "both API nodes answer the same document");
    assert!(api2.log().contains("control API started"), "{}", api2.log());
    assert!(
        !api2.log().contains("chunk worker started"),
        "{}",
        api2.log()
    );

    // A fast scan of the same host on the same worker.
    let (fast, took) = scan(&b1, "fast", host, &store, &api1).await;
    assert_eq!(fast["status"], "complete", "{fast}");
    eprintln!(
        "{backend}: fast self-scan POST -> complete: {} ms (duration_ms: {} ms)",
        took.as_millis(),
        fast["duration_ms"]
    );
    let (open, filtered) = truth.open_and_filtered(&xtask::stack::FAST_PORTS);
    assert_eq!(expect_ports_of(&fast, "ports_open"), open);
    assert_eq!(expect_ports_of(&fast, "ports_filtered"), filtered);
    pool.close().await;
    drop((api1, api2));
}

/// `portscope-api` (the embedded default, SQLite, in-process worker running one chunk at a
/// time) is SIGKILLed while a deep scan is half done and started again on the same
/// database: the scan completes, every pair exactly once and equal to the truth, and the
/// chunks the dead node had committed are not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_node_killed_mid_scan_finishes_it_exactly_after_a_restart() {
    let dir = jobs_support::shared_tempdir();
    let db = dir.path().join("kill.db").to_string_lossy().into_owned();
    killed_and_restarted("k", dir, db).await;
}

/// The same on PostgreSQL: the dead node's claim on its running chunk is given back by
/// apalis's orphan re-enqueueing, and the restarted node runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_kill_and_restart_on_postgres() {
    let pg = postgres().await;
    killed_and_restarted("kp", jobs_support::shared_tempdir(), pg.url()).await;
    drop(pg);
}

/// The kill-and-restart test in lab `name` on database `db` (a SQLite file in `dir`, or a
/// `postgres://` URL).
async fn killed_and_restarted(name: &str, dir: tempfile::TempDir, db: String) {
    let lab = lab(name);
    let bins = xtask::stack::bin_dir().unwrap();
    let engines = Engines::start(&lab, &bins, &[]).expect("engine");
    let pool = database(&dir, &db).await;
    let addr = free_addr();
    let cfg = config(
        dir.path(),
        "api",
        addr,
        &db,
        &engines.node(1).socket,
        "worker-concurrency = 1",
    );
    let host = lab.truth().hosts[0].addr;
    let base = format!("http://{addr}");
    let mut api = Worker::api_with_config(&bins, &cfg, "api-a");
    wait_up(&base, host, &api).await;
    let (status, text) = call(reqwest::Method::POST, &base, host).await;
    assert_eq!(status, 200, "{text}");
    let store = Store::new(pool.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let row = loop {
        let row = store
            .latest(&host.to_string(), ScanType::Deep, 0)
            .await
            .unwrap()
            .expect("the scan's row");
        if row.chunks_complete >= 8 {
            break row;
        }
        assert!(Instant::now() < deadline, "{row:?}\n{}", api.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    api.kill();
    let jobs = JobStore::new(pool.clone());
    let before = jobs.chunks(&row.id).await.unwrap();
    let done_before: Vec<u32> = before
        .iter()
        .filter(|c| c.runs == 1 && c.status == portscope_control_api::jobs::ChunkStatus::Done)
        .map(|c| c.chunk)
        .collect();
    assert!(done_before.len() < 32, "the scan ended before the kill");
    assert!(!store.get(&row.id).await.unwrap().unwrap().is_final());

    let api_b = Worker::api_with_config(&bins, &cfg, "api-b");
    wait_up(&base, host, &api_b).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !store.get(&row.id).await.unwrap().unwrap().is_final() {
        assert!(Instant::now() < deadline, "not finished:\n{}", api_b.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, text) = call(reqwest::Method::GET, &base, host).await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["status"], "complete", "{body}\n{}", api_b.log());
    assert_deep_matches_truth(&lab, host, &body);
    let chunks = jobs.chunks(&row.id).await.unwrap();
    assert_eq!(chunks.len(), 32);
    for c in chunks.iter().filter(|c| done_before.contains(&c.chunk)) {
        assert_eq!(c.runs, 1, "committed before the kill, run again: {c:?}");
    }
    assert_exact(lab.truth(), &[host], &jobs, &row.id).await;
    eprintln!(
        "{name}: killed with {} of 32 chunks committed; the restarted node ran the rest",
        done_before.len()
    );
    pool.close().await;
    drop((api, api_b));
}
