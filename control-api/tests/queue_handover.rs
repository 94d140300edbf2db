//! Chunks move between workers through the queue (issue 8, apalis 1): a chunk that fails on
//! one worker is run by another, and on SQLite the chunk of a worker process SIGKILLed
//! mid-run is run again by another process once the dead one's heartbeats are missed.
//! Engines are scripted on Unix sockets (`api_node`); nothing is probed.

mod api_node;

use portscope_control_api::jobs::connector::UnixConnector;
use portscope_control_api::jobs::plan::ChunkSpec;
use portscope_control_api::jobs::submit::submit;
use portscope_control_api::jobs::worker::{run, WorkerOptions};
use portscope_control_api::model::Status;
use portscope_control_api::store::jobs::JobStore;
use portscope_control_api::store::Db;
use portscope_proto::{encode, Event, ScanKind};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

const ACQUIRE: Duration = Duration::from_secs(5);

fn chunks(n: usize) -> Vec<ChunkSpec> {
    (0..n)
        .map(|i| ChunkSpec {
            targets: vec![format!("198.18.0.{}", 10 + i)],
            ports: "22".into(),
            probes: 1,
        })
        .collect()
}

/// Polls scan `id` until it is no longer running (at most `within`); its status and how
/// long that took.
async fn wait_final(store: &JobStore, id: &str, within: Duration) -> (Status, Duration) {
    let t = Instant::now();
    loop {
        let status = store.scan(id).await.unwrap().unwrap().status;
        if status != Status::Running || t.elapsed() > within {
            return (status, t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Worker `a` has no engine (every run fails: unreachable), worker `b` a scripted one. The
/// scan's chunks are submitted while only `a` runs, so `a` claims and fails the first one;
/// `b` then starts and runs them all, the failed ones included: the queue hands a failed
/// job to any worker, and a worker pauses its fetching after a failed run (apalis 0.7
/// gave a failed job back only to the worker that had failed it, and without the pause
/// `a` fetched it again first every time: 10 runs on `a`, scan failed).
async fn a_failed_chunk_moves_to_another_worker(path: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(path, ACQUIRE).await.unwrap();
    portscope_control_api::store::queue::migrate_queue(&db)
        .await
        .unwrap();
    let store = JobStore::new(db.clone());
    let stop = CancellationToken::new();
    let mut a = WorkerOptions::new(
        db.clone(),
        Arc::new(UnixConnector {
            socket: dir.path().join("none.sock"),
        }),
        "a".into(),
    );
    // After each failed run `a` fetches nothing for 2 s (the default), while an idle
    // worker fetches at least every 1 s heartbeat.
    a.engine_connect = Duration::from_millis(300);
    let a = tokio::spawn(run(a, stop.clone()));
    let id = submit(&store, ScanKind::Deep, &chunks(4)).await.unwrap();
    // `a` has run (and failed) a chunk.
    let t = Instant::now();
    while !store.chunks(&id).await.unwrap().iter().any(|c| c.runs > 0) {
        assert!(t.elapsed() < Duration::from_secs(10), "a claimed nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sock = dir.path().join("b.sock");
    tokio::spawn(api_node::scripted_engine(
        UnixListener::bind(&sock).unwrap(),
    ));
    let b = WorkerOptions::new(
        db.clone(),
        Arc::new(UnixConnector { socket: sock }),
        "b".into(),
    );
    let b = tokio::spawn(run(b, stop.clone()));
    let (status, _) = wait_final(&store, &id, Duration::from_secs(30)).await;
    let rows = store.chunks(&id).await.unwrap();
    assert_eq!(status, Status::Complete, "{rows:?}");
    assert!(
        rows.iter().all(|c| c.node.as_deref() == Some("b")),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|c| c.first_node.as_deref() == Some("a") && c.runs >= 2),
        "a chunk first run by a, then by b: {rows:?}"
    );
    stop.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_chunk_moves_to_another_worker_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_failed_chunk_moves_to_another_worker(&dir.path().join("q.db")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_chunk_moves_to_another_worker_on_postgres() {
    let pg = xtask::pg::PgGuard::start().expect("PostgreSQL (needs the postgresql package)");
    a_failed_chunk_moves_to_another_worker(Path::new(&pg.url())).await;
}

/// An engine that accepts every submit and never finishes it; `submitted` is notified at
/// each submit.
async fn hanging_engine(listener: UnixListener, submitted: Arc<tokio::sync::Notify>) {
    while let Ok((mut s, _)) = listener.accept().await {
        let submitted = submitted.clone();
        tokio::spawn(async move {
            let hello = Event::Hello {
                engine: "hanging".into(),
                protocol: portscope_proto::VERSION,
            };
            s.write_all(&encode(&hello)).await.unwrap();
            let mut buf = Vec::new();
            loop {
                while let Some((req, n)) =
                    portscope_proto::decode::<portscope_proto::Request>(&buf).unwrap()
                {
                    buf.drain(..n);
                    if let portscope_proto::Request::Submit { id, .. } = req {
                        let accepted = Event::Accepted {
                            id,
                            queue_position: 0,
                            total_chunks: 1,
                        };
                        let _ = s.write_all(&encode(&accepted)).await;
                        submitted.notify_one();
                    }
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
    }
}

/// SQLite: a `portscope-api worker` process runs a chunk on an engine that never finishes
/// and is SIGKILLed; another worker process started then runs the chunk within seconds (its
/// heartbeat gives back the claims of workers silent for 3 s; apalis 0.7's SQLite storage
/// waited 90 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_chunk_is_run_by_another_process_within_seconds_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.db");
    let db = Db::connect(&file, ACQUIRE).await.unwrap();
    let store = JobStore::new(db.clone());
    let id = submit(&store, ScanKind::Deep, &chunks(1)).await.unwrap();
    let sock = dir.path().join("hang.sock");
    let submitted = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(hanging_engine(
        UnixListener::bind(&sock).unwrap(),
        submitted.clone(),
    ));
    let a = api_node::worker_on(dir.path(), "a", file.to_str().unwrap(), &sock);
    tokio::time::timeout(Duration::from_secs(20), submitted.notified())
        .await
        .expect("worker a runs the chunk");
    drop(a); // SIGKILL
    let killed = Instant::now();
    let _b = api_node::worker_node(dir.path(), "b", file.to_str().unwrap());
    let (status, _) = wait_final(&store, &id, Duration::from_secs(30)).await;
    let moved = killed.elapsed();
    assert_eq!(status, Status::Complete);
    println!("chunk of the killed worker committed by another {moved:?} after the SIGKILL");
    assert!(moved < Duration::from_secs(10), "{moved:?}");
    let rows = store.chunks(&id).await.unwrap();
    assert_eq!(
        (
            rows[0].runs,
            rows[0].first_node.as_deref(),
            rows[0].node.as_deref()
        ),
        (2, Some("a"), Some("b"))
    );
    db.close().await;
}
