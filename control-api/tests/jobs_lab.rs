//! Chunk jobs run by real `portscope-api worker` processes (or by `portscope-api` serving,
//! with its in-process worker) on real engines in the lab's scanner namespaces
//! (`xtask::nodes::Engines`), with real PostgreSQL (`xtask::pg`) or SQLite: deep scans split
//! into chunks, checked pair by pair against the lab truth; one node killed with SIGKILL
//! mid-scan; a database outage under a running worker.
//! Needs root and the workspace binaries (`cargo test --workspace` builds them).

mod jobs_support;

use jobs_support::{assert_exact, Worker, WORKER_UID};
use portscope_control_api::jobs::plan::plan_deep;
use portscope_control_api::jobs::submit::{submit, wait_finished};
use portscope_control_api::jobs::ChunkStatus;
use portscope_control_api::model::Status;
use portscope_control_api::store::jobs::{migrate_queue, JobStore};
use portscope_control_api::store::Db;
use portscope_proto::ScanKind;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use xtask::lab::{LabConfig, LabGuard};
use xtask::nodes::Engines;
use xtask::pg::PgGuard;

const ACQUIRE: Duration = Duration::from_secs(5);

fn lab(n: u32, scanners: u32) -> LabGuard {
    LabGuard::up(&LabConfig {
        // `j`: no other test binary names its labs so.
        name: format!("j{}{n}", std::process::id() % 10_000),
        hosts: 2,
        scanners,
        ..LabConfig::default()
    })
    .expect("lab up (needs root)")
}

/// The lab's first `n` hosts: primary v4, primary v6, then extra hosts.
fn hosts(lab: &LabGuard, n: usize) -> Vec<IpAddr> {
    lab.truth().hosts.iter().take(n).map(|h| h.addr).collect()
}

/// The job tables on `db` (a SQLite file or a `postgres://` URL), every migration run.
async fn open(db: &str) -> JobStore {
    let db = Db::connect(std::path::Path::new(db), ACQUIRE)
        .await
        .expect("database");
    migrate_queue(&db).await.expect("queue migrations");
    JobStore::new(db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_postgres_one_killed_mid_scan_complete_exactly() {
    let lab = lab(1, 3);
    let pg = PgGuard::start().expect("PostgreSQL");
    let bins = xtask::stack::bin_dir().unwrap();
    let mut engines = Engines::start(&lab, &bins, &[]).expect("engines");
    let db = pg.url();
    let store = open(&db).await;
    let mut workers: Vec<Worker> = engines
        .nodes()
        .iter()
        .map(|e| Worker::start(&bins, &db, &e.socket, &format!("node{}", e.number)))
        .collect();
    let targets = hosts(&lab, 4);
    let chunks = plan_deep(&targets, 16_384);
    assert_eq!(chunks.len(), 16);
    let started = Instant::now();
    let id = submit(&store, ScanKind::Deep, &chunks).await.unwrap();

    // Kill node 2 while it runs a chunk: started by it, not committed.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        assert!(Instant::now() < deadline, "node2 never ran a chunk");
        let rows = store.chunks(&id).await.unwrap();
        if let Some(c) = rows
            .iter()
            .find(|c| c.first_node.as_deref() == Some("node2") && c.status == ChunkStatus::Pending)
        {
            break c.chunk;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    workers[1].kill();
    engines.node_mut(2).stop(true);
    let killed_at = Instant::now();

    let row = wait_finished(&store, &id, Duration::from_secs(120))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("scan not finished in 120 s:\n{}", logs(&workers)));
    let wall = started.elapsed();
    assert_eq!(row.status, Status::Complete, "{}", logs(&workers));
    let rows = store.chunks(&id).await.unwrap();
    let victim_row = &rows[victim as usize];
    assert_eq!(victim_row.status, ChunkStatus::Done);
    assert!(
        matches!(victim_row.node.as_deref(), Some("node1" | "node3")),
        "chunk {victim} committed by {:?}",
        victim_row.node
    );
    assert!(
        victim_row.runs >= 2,
        "chunk {victim} ran {} times",
        victim_row.runs
    );
    assert!(rows
        .iter()
        .all(|c| c.node.as_deref() != Some("node2") || c.first_node.as_deref() == Some("node2")));
    let per_node = |n: &str| rows.iter().filter(|c| c.node.as_deref() == Some(n)).count();
    eprintln!(
        "3 nodes, node2 killed: {} ms, {} ms after the kill; chunks node1 {} node2 {} node3 {}",
        wall.as_millis(),
        killed_at.elapsed().as_millis(),
        per_node("node1"),
        per_node("node2"),
        per_node("node3")
    );
    assert_exact(lab.truth(), &targets, &store, &id).await;
    store.close().await;
    drop(workers);
}

/// The embedded default: one `portscope-api` process (serving, its in-process worker on)
/// runs a deep job scan on SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_api_runs_a_deep_job_scan_on_sqlite_exactly() {
    let lab = lab(2, 1);
    let bins = xtask::stack::bin_dir().unwrap();
    let engines = Engines::start(&lab, &bins, &[]).expect("engine");
    let dir = jobs_support::shared_tempdir();
    let db = dir
        .path()
        .join("embedded.db")
        .to_string_lossy()
        .into_owned();
    let store = open(&db).await;
    // The worker runs unprivileged: it must write the file (and its WAL) the test made.
    for f in std::fs::read_dir(dir.path()).unwrap() {
        std::os::unix::fs::chown(f.unwrap().path(), Some(WORKER_UID), Some(WORKER_UID)).unwrap();
    }
    let worker = Worker::embedded_api(&bins, &db, &engines.node(1).socket);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let targets = hosts(&lab, 2);
    let chunks = plan_deep(&targets, 32_768);
    let id = submit(&store, ScanKind::Deep, &chunks).await.unwrap();
    let row = wait_finished(&store, &id, Duration::from_secs(90))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("not finished:\n{}", worker.log()));
    assert_eq!(row.status, Status::Complete);
    let rows = store.chunks(&id).await.unwrap();
    assert!(rows
        .iter()
        .all(|c| c.node.as_deref() == Some(host.as_str()) && c.runs == 1));
    assert_exact(lab.truth(), &targets, &store, &id).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_rides_out_a_database_outage() {
    let lab = lab(3, 1);
    let mut pg = PgGuard::start().expect("PostgreSQL");
    let bins = xtask::stack::bin_dir().unwrap();
    let engines = Engines::start(&lab, &bins, &[]).expect("engine");
    let db = pg.url();
    let store = open(&db).await;
    let mut worker = Worker::start(&bins, &db, &engines.node(1).socket, "n1");
    let targets = hosts(&lab, 2);
    let chunks = plan_deep(&targets, 16_384);
    let id = submit(&store, ScanKind::Deep, &chunks).await.unwrap();
    // Once a chunk is running, the database goes away for 3 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.chunks(&id).await.unwrap().iter().any(|c| c.runs > 0) {
        assert!(Instant::now() < deadline, "no chunk started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.close().await;
    pg.stop_server().expect("stop PostgreSQL");
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.start_server().expect("start PostgreSQL");
    let store = open(&db).await;
    let row = wait_finished(&store, &id, Duration::from_secs(90))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("not finished after the outage:\n{}", worker.log()));
    assert_eq!(row.status, Status::Complete);
    assert!(worker.running(), "the worker exited:\n{}", worker.log());
    assert_exact(lab.truth(), &targets, &store, &id).await;
    store.close().await;
}

fn logs(workers: &[Worker]) -> String {
    workers
        .iter()
        .map(Worker::log)
        .collect::<Vec<_>>()
        .join("\n")
}
