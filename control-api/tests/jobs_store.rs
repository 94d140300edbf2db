//! The chunk-job store and queue on both backends, without engines: apalis's migrations and
//! ours run in either order, repeated, a scan's chunks and their apalis
//! jobs are written in one transaction and an apalis worker claims them at once, and a
//! chunk commit is one idempotent transaction keyed by (scan, address, port), moving the
//! self-scan row of the same id when there is one. PostgreSQL is a throwaway server (`xtask::pg::PgGuard`, needs Debian's
//! `postgresql` package).

use portscope_control_api::jobs::plan::ChunkSpec;
use portscope_control_api::jobs::queue::{new_job_id, Queue, QueueTiming, NAMESPACE};
use portscope_control_api::jobs::submit::submit;
use portscope_control_api::jobs::{ChunkJob, ChunkStatus};
use portscope_control_api::model::Status;
use portscope_control_api::store::jobs::{ChunkDone, Commit, JobStore, QueueSpec};
use portscope_control_api::store::Db;
use portscope_core::results::{PortResult, PortState, Reason};
use portscope_proto::ScanKind;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xtask::pg::PgGuard;

const ACQUIRE: Duration = Duration::from_secs(5);

fn result(ip: &str, port: u16, state: PortState, reason: Reason) -> PortResult {
    PortResult::tcp(ip.parse().unwrap(), port, state, reason, Some(64))
}

fn done<'a>(
    node: &'a str,
    results: &'a [PortResult],
    closed: u64,
    sent: u64,
    now_ms: i64,
) -> ChunkDone<'a> {
    ChunkDone {
        node,
        results,
        closed,
        sent,
        now_ms,
        duration_ms: 0,
    }
}

/// Chunk `chunk` of `scan_id`, on `ports` of 198.18.0.2, at priority 1.
fn chunk_job(scan_id: &str, chunk: u32, ports: &str) -> ChunkJob {
    ChunkJob {
        scan_id: scan_id.into(),
        chunk,
        targets: vec!["198.18.0.2".into()],
        ports: ports.into(),
        priority: 1,
    }
}

/// An apalis worker on `queue` that only reports the jobs it is handed (no engine), until
/// `n` came or 10 s passed; the jobs in the order claimed.
async fn claim(queue: Queue<ChunkJob>, n: usize) -> Vec<ChunkJob> {
    use apalis::prelude::{Data, WorkerBuilder};
    type Seen = Arc<Mutex<Vec<ChunkJob>>>;
    async fn seen(job: ChunkJob, got: Data<Seen>) {
        got.lock().unwrap().push(job);
    }
    let got: Seen = Arc::default();
    let got_all = got.clone();
    // Stopped, not dropped: a worker dropped mid-`BEGIN` can leave its pooled PostgreSQL
    // connection in a transaction that later statements then join.
    macro_rules! run {
        ($storage:expr) => {{
            let got = got.clone();
            let until = async move {
                let t = std::time::Instant::now();
                while got.lock().unwrap().len() < n && t.elapsed() < Duration::from_secs(10) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok::<(), std::io::Error>(())
            };
            let _ = WorkerBuilder::new("claim-test")
                .backend($storage)
                .data(got_all.clone())
                .build(seen)
                .run_until(until)
                .await;
        }};
    }
    match queue {
        Queue::Sqlite(s) => run!(s),
        Queue::Postgres(s) => run!(s),
    }
    let out = got.lock().unwrap().clone();
    out
}

/// Opens the queue twice (migrations are idempotent next to each other), submits a scan of
/// two chunks, lets an apalis worker claim both jobs, and commits the chunks, one twice.
async fn exercise(path: &Path) -> (JobStore, String) {
    let db = Db::connect(path, ACQUIRE).await.expect("store open");
    let timing = QueueTiming::for_backend(db.backend());
    let _first: Queue<ChunkJob> = Queue::open(&db, NAMESPACE, timing, 1)
        .await
        .expect("queue open");
    let queue = Queue::open(&db, NAMESPACE, timing, 1)
        .await
        .expect("queue open again");
    let store = JobStore::new(db);
    let chunks = vec![
        ChunkSpec {
            targets: vec!["198.18.0.2".into()],
            ports: "1-100".into(),
            probes: 100,
        },
        ChunkSpec {
            targets: vec!["198.18.0.2".into()],
            ports: "101-200".into(),
            probes: 100,
        },
    ];
    let id = submit(&store, ScanKind::Deep, &chunks).await.unwrap();
    let scan = store.scan(&id).await.unwrap().unwrap();
    assert_eq!(
        (scan.status, scan.chunks_total, scan.chunks_done),
        (Status::Running, 2, 0)
    );
    assert_eq!(scan.kind, "deep");
    // The queue rows the submit transaction wrote are apalis jobs its worker claims at once
    // (due by the database's own clock), with the payload the chunk rows describe.
    let claimed_at = std::time::Instant::now();
    let mut claimed = claim(queue, 2).await;
    assert!(
        claimed_at.elapsed() < Duration::from_secs(3),
        "claimed after {:?}",
        claimed_at.elapsed()
    );
    claimed.sort_by_key(|j| j.chunk);
    assert_eq!(
        claimed,
        vec![chunk_job(&id, 0, "1-100"), chunk_job(&id, 1, "101-200"),]
    );

    assert_eq!(
        store.start_chunk(&id, 0, "n1", 1_000).await.unwrap(),
        Some(ChunkStatus::Pending)
    );
    assert_eq!(store.start_chunk(&id, 7, "n1", 1_000).await.unwrap(), None);
    let first = [
        result("198.18.0.2", 22, PortState::Open, Reason::SynAck),
        result("198.18.0.2", 81, PortState::Filtered, Reason::NoResponse),
    ];
    let c = store
        .commit_chunk(&id, 0, done("n1", &first, 98, 100, 1))
        .await
        .unwrap();
    assert_eq!(
        c,
        Commit::Committed {
            scan_complete: false
        }
    );
    // A re-run of the same chunk (its node died after the commit): nothing written.
    assert_eq!(
        store.start_chunk(&id, 0, "n2", 2_000).await.unwrap(),
        Some(ChunkStatus::Done)
    );
    let again = [result(
        "198.18.0.2",
        22,
        PortState::Filtered,
        Reason::NoResponse,
    )];
    assert_eq!(
        store
            .commit_chunk(&id, 0, done("n2", &again, 99, 100, 2))
            .await
            .unwrap(),
        Commit::AlreadyDone
    );
    let last = [result("2001:2::2", 150, PortState::Open, Reason::SynAck)];
    assert_eq!(
        store
            .commit_chunk(&id, 1, done("n2", &last, 99, 100, 3))
            .await
            .unwrap(),
        Commit::Committed {
            scan_complete: true
        }
    );
    let scan = store.scan(&id).await.unwrap().unwrap();
    assert_eq!(
        (scan.status, scan.chunks_done, scan.finished_at_ms),
        (Status::Complete, 2, Some(3))
    );
    let rows = store.chunks(&id).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].status, ChunkStatus::Done);
    assert_eq!(
        (
            rows[0].runs,
            rows[0].first_node.as_deref(),
            rows[0].node.as_deref()
        ),
        (2, Some("n1"), Some("n1"))
    );
    assert_eq!((rows[0].closed, rows[0].sent), (Some(98), Some(100)));
    assert_eq!((rows[1].runs, rows[1].node.as_deref()), (0, Some("n2")));
    assert!(rows.iter().all(|r| r.job_id.is_some()));
    let mut want = first.to_vec();
    want.extend(last);
    assert_eq!(store.results(&id).await.unwrap(), want);
    (store, id)
}

#[tokio::test]
async fn chunk_jobs_on_sqlite_share_migrations_with_the_api_store() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jobs.db");
    // The API's store first, then the queue (apalis's migrations + ours), then the API again.
    portscope_control_api::store::Store::open(&file)
        .await
        .expect("api store on a fresh file")
        .close()
        .await;
    let (store, _) = exercise(&file).await;
    store.close().await;
    portscope_control_api::store::Store::open(&file)
        .await
        .expect("api store after the queue's migrations")
        .close()
        .await;
}

#[tokio::test]
async fn chunk_jobs_on_postgres_queue_notify_and_commit_once() {
    let pg = PgGuard::start().expect("PostgreSQL (needs the postgresql package)");
    let (store, id) = exercise(Path::new(&pg.url())).await;
    store.close().await;
    // The queue holds one apalis job per chunk (claimed above, handed back when the test's
    // worker stopped or still running), with the ids the chunk rows name.
    let jobs = pg
        .psql(
            xtask::pg::DATABASE,
            &format!(
                "SELECT count(*) FROM apalis.jobs j JOIN scan_chunks c ON c.job_id = j.id \
                 WHERE c.scan_id = '{id}' \
                 AND j.job_type = 'portscope::chunk'"
            ),
        )
        .unwrap();
    assert_eq!(jobs.trim(), "2");
    // apalis's insert trigger (its NOTIFY names the job type, which its listener matches).
    let trig = pg
        .psql(
            xtask::pg::DATABASE,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'notify_workers'",
        )
        .unwrap();
    assert_eq!(trig.trim(), "1");
    // Each migrator keeps its own history: ours in `public`, apalis-postgres 1's in `apalis`.
    let versions = pg
        .psql(
            xtask::pg::DATABASE,
            "SELECT (SELECT count(*) FROM public._sqlx_migrations WHERE version < 1000), \
                    (SELECT count(*) FROM public._sqlx_migrations WHERE version > 1000), \
                    (SELECT count(*) FROM apalis._sqlx_migrations)",
        )
        .unwrap();
    let v: Vec<&str> = versions.trim().split('|').collect();
    assert!(v[0].parse::<u32>().unwrap() >= 1, "{versions}");
    assert_eq!(&v[1..], ["0", "23"], "apalis-postgres 1.0's 23 migrations");
}

/// Two tests of `$run(path)`: `$sqlite` on a fresh SQLite file named `$file`, `$postgres` on a
/// fresh PostgreSQL database.
macro_rules! on_both_backends {
    ($run:ident, $sqlite:ident($file:literal), $postgres:ident) => {
        #[tokio::test]
        async fn $sqlite() {
            let dir = tempfile::tempdir().unwrap();
            $run(&dir.path().join($file)).await;
        }

        #[tokio::test]
        async fn $postgres() {
            let pg = PgGuard::start().expect("PostgreSQL (needs the postgresql package)");
            $run(Path::new(&pg.url())).await;
        }
    };
}

/// Chunk jobs the queue gives up after their first run.
const ONE_ATTEMPT: QueueSpec<'static> = QueueSpec {
    job_type: NAMESPACE,
    max_attempts: 1,
};

/// A fresh SQLite store at `path`, with the queue's tables migrated.
async fn migrated_sqlite(path: &Path) -> (Db, JobStore) {
    let db = Db::connect(path, ACQUIRE).await.unwrap();
    portscope_control_api::store::queue::migrate_queue(&db)
        .await
        .unwrap();
    let store = JobStore::new(db.clone());
    (db, store)
}

/// A chunk that fails its last attempt (here the only one: no engine behind the socket)
/// fails its scan with `chunk_failed`, once; the queue gives the job up.
#[tokio::test]
async fn a_chunk_failing_its_last_attempt_fails_the_scan() {
    use portscope_control_api::jobs::now_ms;
    use portscope_control_api::jobs::worker::{run, WorkerOptions};
    use portscope_control_api::store::jobs::{NewChunk, NewScan};
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = migrated_sqlite(&dir.path().join("fail.db")).await;
    let job = chunk_job("s1", 0, "1-10");
    store
        .create_scan(
            &NewScan {
                id: "s1",
                kind: "deep",
                created_at_ms: now_ms(),
                selfscan: None,
            },
            &[NewChunk {
                chunk: 0,
                targets: job.targets.clone(),
                ports: job.ports.clone(),
                probes: 10,
                job_id: new_job_id(),
                payload: serde_json::to_string(&job).unwrap(),
            }],
            ONE_ATTEMPT,
        )
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let engines = std::sync::Arc::new(portscope_control_api::jobs::connector::UnixConnector {
        socket: dir.path().join("no-engine.sock"),
    });
    let opts = WorkerOptions::new(db.clone(), engines, "n1".into());
    let worker = tokio::spawn(run(opts, stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let row = loop {
        let row = store.scan("s1").await.unwrap().unwrap();
        if row.status != Status::Running || std::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (row.status, row.fail_reason.as_deref()),
        (Status::Failed, Some("chunk_failed"))
    );
    assert_eq!(store.chunks("s1").await.unwrap()[0].runs, 1);
    assert!(
        !store.fail_scan("s1", "again", "again", 1).await.unwrap(),
        "failed once"
    );
    stop.cancel();
    worker.await.unwrap().unwrap();
    db.close().await;
}

/// `fail_scan` reads before it writes. On SQLite a deferred transaction that has read cannot
/// wait for the write lock (SQLite skips the busy handler then, and a commit by another
/// connection in between invalidates its snapshot): it failed at once with "database is
/// locked" whenever another connection wrote at that moment (an apalis worker acks and
/// re-enqueues every 100 ms), which made `a_chunk_failing_its_last_attempt_fails_the_scan`
/// flaky under load. As a write transaction from its first statement it waits its turn.
#[tokio::test]
async fn fail_scan_waits_for_another_writer_on_sqlite() {
    use portscope_control_api::jobs::now_ms;
    use portscope_control_api::store::jobs::NewScan;
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = migrated_sqlite(&dir.path().join("busy.db")).await;
    let scan = NewScan {
        id: "s1",
        kind: "deep",
        created_at_ms: now_ms(),
        selfscan: None,
    };
    store.create_scan(&scan, &[], ONE_ATTEMPT).await.unwrap();
    let Db::Sqlite(pool) = &db else {
        unreachable!("a SQLite file")
    };
    // Another connection holds the write lock (as an apalis ack does, briefly).
    let mut other = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("UPDATE job_scans SET kind = kind WHERE id = 's1'")
        .execute(&mut *other)
        .await
        .unwrap();
    let failing = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .fail_scan("s1", "chunk_failed", "chunk_failed", 1)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    other.commit().await.unwrap();
    let failed = failing.await.unwrap();
    assert!(
        matches!(failed, Ok(true)),
        "fail_scan waits for the lock, then fails the scan: {failed:?}"
    );
    let row = store.scan("s1").await.unwrap().unwrap();
    assert_eq!(
        (row.status, row.fail_reason.as_deref()),
        (Status::Failed, Some("chunk_failed"))
    );
    db.close().await;
}

/// A self-scan row with its job scan's id follows it in the commit's transaction: `queued`
/// until a chunk commits, then `running` with the chunk counts, the chunk's open and
/// filtered ports (not its closed ones), engine time summed, `engine_done` at the last
/// chunk; a re-committed chunk adds nothing. A failed job scan fails its row with the
/// self-scan's reason. Job scans without a row are untouched.
/// A `scans` row's status, chunks done and in all, whether every chunk is committed, and
/// the wall time of its chunks.
async fn progress(
    scans: &portscope_control_api::store::Store,
    id: &str,
) -> (Status, i64, i64, i64, Option<i64>) {
    let r = scans.get(id).await.unwrap().unwrap();
    (
        r.status,
        r.chunks_complete,
        r.total_chunks,
        r.engine_done,
        r.duration_ms,
    )
}

async fn selfscan_rows_follow(path: &Path) {
    use portscope_control_api::jobs::submit::create;
    use portscope_control_api::model::ScanType;
    use portscope_control_api::store::{NewScan as NewSelfScan, Store};
    let db = Db::connect(path, ACQUIRE).await.expect("store open");
    portscope_control_api::store::jobs::migrate_queue(&db)
        .await
        .unwrap();
    let jobs = JobStore::new(db.clone());
    let scans = Store::new(db.clone());
    let chunk = |ports: &str| ChunkSpec {
        targets: vec!["198.18.0.9".into()],
        ports: ports.into(),
        probes: 100,
    };
    let row = |id: &'static str| NewSelfScan {
        id,
        ip: "198.18.0.9",
        scan_type: ScanType::Deep,
        created_at_ms: 1_000,
        expires_at: i64::MAX,
    };
    create(
        &jobs,
        "a",
        ScanKind::Deep,
        1,
        Some(row("a")),
        &[chunk("1-100"), chunk("101-200")],
    )
    .await
    .unwrap();
    assert_eq!(progress(&scans, "a").await, (Status::Queued, 0, 2, 0, None));
    let first = [
        result("198.18.0.9", 22, PortState::Open, Reason::SynAck),
        result("198.18.0.9", 25, PortState::Filtered, Reason::NoResponse),
        result("198.18.0.9", 80, PortState::Closed, Reason::Reset),
    ];
    // The scan's first claim at 4,000 ms: duration_ms is the wall time since, not the
    // chunks' engine time.
    jobs.start_chunk("a", 0, "n1", 4_000).await.unwrap();
    jobs.start_chunk("a", 1, "n2", 4_500).await.unwrap();
    let mut d = done("n1", &first, 97, 100, 5_000);
    d.duration_ms = 40;
    jobs.commit_chunk("a", 0, d).await.unwrap();
    assert_eq!(
        jobs.commit_chunk("a", 0, d).await.unwrap(),
        Commit::AlreadyDone
    );
    assert_eq!(
        progress(&scans, "a").await,
        (Status::Running, 1, 2, 0, Some(1_000))
    );
    let ports: Vec<(i64, String)> = scans
        .ports("a")
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.port, p.state))
        .collect();
    assert_eq!(ports, vec![(22, "open".into()), (25, "filtered".into())]);
    let second = [result("198.18.0.9", 143, PortState::Open, Reason::SynAck)];
    let mut d = done("n1", &second, 99, 100, 6_000);
    d.duration_ms = 60;
    assert_eq!(
        jobs.commit_chunk("a", 1, d).await.unwrap(),
        Commit::Committed {
            scan_complete: true
        }
    );
    assert_eq!(
        progress(&scans, "a").await,
        (Status::Running, 2, 2, 1, Some(2_000))
    );
    assert_eq!(scans.ports("a").await.unwrap().len(), 3);

    // A failing job scan fails its row (with the self-scan's word), once.
    create(
        &jobs,
        "b",
        ScanKind::Deep,
        1,
        Some(row("b")),
        &[chunk("1-100")],
    )
    .await
    .unwrap();
    assert!(jobs
        .fail_scan("b", "chunk_failed", "engine_unavailable", 7_000)
        .await
        .unwrap());
    let r = scans.get("b").await.unwrap().unwrap();
    assert_eq!(
        (r.status.as_str(), r.fail_reason.as_deref(), r.completed_at),
        ("failed", Some("engine_unavailable"), Some(7))
    );
    assert_eq!(
        jobs.scan("b")
            .await
            .unwrap()
            .unwrap()
            .fail_reason
            .as_deref(),
        Some("chunk_failed")
    );
    // No row: nothing but the job scan moves.
    let c = submit(&jobs, ScanKind::Deep, &[chunk("1-100")])
        .await
        .unwrap();
    jobs.commit_chunk(&c, 0, done("n1", &second, 99, 100, 8_000))
        .await
        .unwrap();
    assert!(scans.get(&c).await.unwrap().is_none());
    assert_eq!(scans.count().await.unwrap(), 2);
    db.close().await;
}

on_both_backends!(
    selfscan_rows_follow,
    selfscan_rows_follow_their_job_scans_on_sqlite("self.db"),
    selfscan_rows_follow_their_job_scans_on_postgres
);

/// A database last run with apalis 0.7 (our migrations, then the queue's tables and
/// history as apalis-sql 0.7.4's migrations left them, vendored in
/// `tests/fixtures/vendor/apalis-sql-0.7.4/`) with a scan whose chunk job is pending, its row as 0.7's
/// push wrote it: opened by this version, its queue is upgraded in place, a worker claims
/// the job with its payload, and the scan completes.
async fn an_apalis07_pending_job_survives_the_upgrade(path: &Path) {
    let job = chunk_job("old", 0, "1-10");
    let payload = serde_json::to_string(&job).unwrap();
    let job_id = new_job_id();
    let now_secs = portscope_control_api::jobs::now_ms() / 1000;
    macro_rules! old_database {
        ($pool:expr, $ours:literal, $apalis:literal, $insert_job:literal, $run_at:expr) => {{
            let pool = $pool;
            let mut ours = sqlx::migrate!($ours);
            ours.set_ignore_missing(true);
            ours.run(&pool).await.expect("our migrations");
            let mut old = sqlx::migrate!($apalis);
            old.set_ignore_missing(true);
            old.run(&pool).await.expect("apalis 0.7's migrations");
            sqlx::query(
                "INSERT INTO job_scans (id, kind, status, chunks_total, chunks_done, created_at_ms)
                 VALUES ('old', 'deep', 'running', 1, 0, 1000)",
            )
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO scan_chunks (scan_id, chunk, targets, ports, probes, status, job_id)
                 VALUES ('old', 0, '198.18.0.2', '1-10', 10, 'pending', $1)",
            )
            .bind(&job_id)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query($insert_job)
                .bind(&payload)
                .bind(&job_id)
                .bind(NAMESPACE)
                .bind($run_at)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }};
    }
    let url = path.to_str().unwrap();
    if url.starts_with("postgres") {
        old_database!(
            sqlx::PgPool::connect(url).await.unwrap(),
            "migrations/postgres",
            "tests/fixtures/vendor/apalis-sql-0.7.4/postgres",
            "INSERT INTO apalis.jobs (job, id, job_type, status, attempts, max_attempts, run_at, priority)
             VALUES ($1::jsonb, $2, $3, 'Pending', 0, 10, to_timestamp($4), 0)",
            (now_secs - 1) as f64
        );
    } else {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        old_database!(
            sqlx::SqlitePool::connect_with(opts).await.unwrap(),
            "migrations/sqlite",
            "tests/fixtures/vendor/apalis-sql-0.7.4/sqlite",
            "INSERT INTO Jobs (job, id, job_type, status, attempts, max_attempts, run_at, priority)
             VALUES ($1, $2, $3, 'Pending', 0, 10, $4, 0)",
            now_secs - 1
        );
    }
    let db = Db::connect(path, ACQUIRE).await.expect("store open");
    let timing = QueueTiming::for_backend(db.backend());
    let queue = Queue::open(&db, NAMESPACE, timing, 1)
        .await
        .expect("the 1.0 queue opens on the 0.7 database");
    assert_eq!(claim(queue, 1).await, vec![job]);
    let store = JobStore::new(db);
    let found = [result("198.18.0.2", 7, PortState::Open, Reason::SynAck)];
    assert_eq!(
        store
            .commit_chunk("old", 0, done("n1", &found, 9, 10, 2_000))
            .await
            .unwrap(),
        Commit::Committed {
            scan_complete: true
        }
    );
    assert_eq!(
        store.scan("old").await.unwrap().unwrap().status,
        Status::Complete
    );
    store.close().await;
}

on_both_backends!(
    an_apalis07_pending_job_survives_the_upgrade,
    an_apalis07_sqlite_database_keeps_its_pending_jobs("old.db"),
    an_apalis07_postgres_database_keeps_its_pending_jobs
);
