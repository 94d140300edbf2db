//! `portscope-api worker`: an apalis worker that claims chunk jobs, runs each on the local
//! engine and commits it.
//!
//! Per chunk job: (1) count the run in `scan_chunks`; a chunk already done (a run that
//! committed but died before its ack) is just acked, and so is a chunk of a scan cancelled
//! or failed meanwhile (not run); (2) run it on the engine
//! (`engine_run`, bounded); (3) commit the results and the chunk's completion in one
//! transaction (`JobStore::commit_chunk`), then return, and apalis acks the job. An engine
//! failure fails the run: the queue retries the job (on any node); the last allowed attempt
//! failing fails the scan (`chunk_failed`; its self-scan row, if any, with the reason the
//! error gives, see `ChunkError::fail_reason`). A chunk the engine refuses by policy (or as
//! invalid) is not retried: it fails the scan at once. A database that goes away
//! is retried with backoff for `db_retry`; past that the run fails and the worker stops, so
//! its heartbeat stops and its claims move to other nodes.

use crate::clock::{Clock, SystemClock};
use crate::jobs::connector::EngineConnector;
use crate::jobs::engine_run::{run_chunk, RunLimits};
use crate::jobs::queue::{run_queue_worker, Pause, Queue, QueueTiming, MAX_ATTEMPTS, NAMESPACE};
use crate::jobs::reason::FailReason;
use crate::jobs::{ChunkError, ChunkJob, ChunkStatus};
use crate::model::Status;
use crate::store::jobs::{ChunkDone, Commit, JobStore};
use crate::store::Db;
use apalis::prelude::{AbortError, Attempt, BoxDynError, Data, FromRequest, Task};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a worker needs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The database (queue and job tables), opened and migrated by the store.
    pub db: Db,
    /// Where chunk runs get their engine connection (the local engine).
    pub engines: Arc<dyn EngineConnector>,
    /// This node's name, recorded on the chunks it runs.
    pub node: String,
    /// Chunks run at once.
    pub concurrency: usize,
    /// Queue jobs claimed per fetch: 1 for a cluster's workers (a busy worker does not hoard
    /// chunks other nodes could run), `concurrency` for the API's in-process worker.
    pub claims: usize,
    /// Queue heartbeat and re-enqueue timing.
    pub timing: QueueTiming,
    /// How long database errors are retried within one chunk.
    pub db_retry: Duration,
    /// How long this worker fetches nothing after a failed run (the failed job goes back
    /// to the queue at once, and an idle worker fetches at least every heartbeat).
    pub retry_pause: Duration,
    /// Longest wait for the engine connection of one run.
    pub engine_connect: Duration,
    /// Signalled after every commit and every failed scan (the API's finisher waits on it).
    pub changed: Arc<Notify>,
    /// The time commits and failures are stamped with (the API's clock in-process).
    pub clock: Arc<dyn Clock>,
}

impl WorkerOptions {
    /// Defaults for `db`: one chunk at a time, the backend's queue timing, 30 s of
    /// database retries, 5 s to reach the engine.
    pub fn new(db: Db, engines: Arc<dyn EngineConnector>, node: String) -> WorkerOptions {
        let timing = QueueTiming::for_backend(db.backend());
        WorkerOptions {
            db,
            engines,
            node,
            concurrency: 1,
            claims: 1,
            timing,
            db_retry: Duration::from_secs(30),
            retry_pause: Duration::from_secs(2),
            engine_connect: ENGINE_CONNECT,
            clock: Arc::new(SystemClock),
            changed: Arc::new(Notify::new()),
        }
    }
}

/// How a chunk job ended (the job's result in the queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkOutcome {
    /// This run committed the chunk.
    Committed,
    /// Another run had committed it.
    AlreadyDone,
    /// The scan was cancelled or failed before this run began; nothing ran.
    ScanOver,
}

/// Longest wait for the engine connection.
const ENGINE_CONNECT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Ctx {
    store: JobStore,
    engines: Arc<dyn EngineConnector>,
    node: String,
    db_retry: Duration,
    retry_pause: Duration,
    /// Holds this worker's fetches back after a failed run.
    pause: Pause,
    engine_connect: Duration,
    changed: Arc<Notify>,
    clock: Arc<dyn Clock>,
    /// Cancelled when the worker must stop (shutdown, or the database lost for good).
    stop: CancellationToken,
}

/// Runs a worker until `shutdown` is cancelled (or the database stays unreachable past
/// `db_retry` within a chunk: then it returns an error, and a supervisor restarts it). The
/// database stays open (it may be the API's own pool).
pub async fn run(opts: WorkerOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let concurrency = opts.concurrency.max(1);
    let queue: Queue<ChunkJob> = Queue::open(
        &opts.db,
        NAMESPACE,
        opts.timing,
        opts.claims.clamp(1, concurrency),
    )
    .await?;
    let store = JobStore::new(opts.db.clone());
    let stop = shutdown.child_token();
    let ctx = Arc::new(Ctx {
        store: store.clone(),
        engines: opts.engines.clone(),
        node: opts.node.clone(),
        db_retry: opts.db_retry,
        retry_pause: opts.retry_pause,
        pause: Pause::default(),
        engine_connect: opts.engine_connect,
        changed: opts.changed.clone(),
        clock: opts.clock.clone(),
        stop: stop.clone(),
    });
    // Unique per process: a restarted node must not inherit its dead predecessor's claims.
    let id = format!(
        "{}-{}",
        opts.node,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    tracing::info!(worker = %id, backend = ?opts.db.backend(), concurrency, "chunk worker started");
    let pause = ctx.pause.clone();
    run_queue_worker!(queue, &id, concurrency, pause, ctx, handle, stop, "chunks");
    if shutdown.is_cancelled() {
        Ok(())
    } else {
        anyhow::bail!("the database stayed unreachable; stopping so other nodes take the claims")
    }
}

/// The job handler apalis calls. A run that fails its last attempt (the queue gives the
/// job up after it), or fails in a way no other run can change, fails the scan with
/// `chunk_failed` (and its self-scan row with the error's reason).
async fn handle(
    job: ChunkJob,
    ctx: Data<Arc<Ctx>>,
    attempt: Attempt,
    max: MaxAttempts,
) -> Result<ChunkOutcome, BoxDynError> {
    let ctx: Arc<Ctx> = (*ctx).clone();
    match ctx.run(&job).await {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            tracing::warn!(scan = %job.scan_id, chunk = job.chunk, attempt = attempt.current(),
                error = %e, "chunk run failed");
            let last = attempt.current() >= max.0;
            if matches!(e, ChunkError::Database(_)) {
                ctx.stop.cancel();
            } else if (last && e != ChunkError::Stopped) || e.is_final() {
                let reason = FailReason::ChunkFailed.code();
                let why = e.fail_reason().code();
                // Retried like every other write of a run: a busy SQLite file (its write
                // lock taken between this transaction's read and write) must not leave the
                // scan running with its job given up.
                let failed = ctx.with_db(|| {
                    ctx.store
                        .fail_scan(&job.scan_id, &reason, &why, ctx.now_ms())
                });
                match failed.await {
                    Ok(true) => {
                        tracing::warn!(scan = %job.scan_id, chunk = job.chunk, %why,
                            "chunk failed for good; scan failed");
                        ctx.changed.notify_waiters();
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(scan = %job.scan_id, error = %e, "cannot fail scan"),
                }
            }
            if e.is_final() {
                return Err(Box::new(AbortError::new(e)));
            }
            // Retried by whichever worker fetches it next; this one pauses first, so that is
            // another worker if one is idle (this one's engine may be the trouble).
            if e != ChunkError::Stopped {
                ctx.pause.pause_for(ctx.retry_pause);
            }
            Err(Box::new(e))
        }
    }
}

/// The attempts the queue row allows (the handler's last attempt fails the scan).
struct MaxAttempts(usize);

impl<Args: Sync> FromRequest<Task<Args>> for MaxAttempts {
    type Error = std::convert::Infallible;

    async fn from_request(task: &Task<Args>) -> Result<Self, Self::Error> {
        let max = task.ctx().max_attempts();
        Ok(MaxAttempts(max.unwrap_or(MAX_ATTEMPTS as usize)))
    }
}

impl Ctx {
    fn now_ms(&self) -> i64 {
        self.clock.now_ms() as i64
    }

    async fn run(&self, job: &ChunkJob) -> Result<ChunkOutcome, ChunkError> {
        let status = self
            .with_db(|| {
                self.store
                    .start_chunk(&job.scan_id, job.chunk, &self.node, self.now_ms())
            })
            .await?;
        match status {
            None => return Err(ChunkError::NoSuchChunk),
            Some(ChunkStatus::Done) => {
                tracing::info!(scan = %job.scan_id, chunk = job.chunk, "chunk already done");
                return Ok(ChunkOutcome::AlreadyDone);
            }
            Some(ChunkStatus::Pending) => {}
        }
        // A scan cancelled or failed meanwhile: its chunks are dropped, not run.
        let scan = self.with_db(|| self.store.scan(&job.scan_id)).await?;
        if scan.is_some_and(|s| s.status != Status::Running) {
            tracing::info!(scan = %job.scan_id, chunk = job.chunk, "scan over; chunk dropped");
            return Ok(ChunkOutcome::ScanOver);
        }
        let started = Instant::now();
        let engine_id = format!(
            "{}/{}/{}",
            job.scan_id,
            job.chunk,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (running, runs) = tokio::sync::oneshot::channel();
        let run = run_chunk(
            self.engines.as_ref(),
            &engine_id,
            job,
            limits_for(job, self.engine_connect),
            running,
        );
        // Once the engine runs the chunk, a managed row of the scan is `running` (a failed
        // write here is not the run's failure: the commit makes it running too).
        let mark = async {
            if runs.await.is_ok() {
                if let Err(e) = self.store.mark_running(&job.scan_id, self.now_ms()).await {
                    tracing::warn!(scan = %job.scan_id, error = %e, "cannot mark running");
                }
            }
            std::future::pending::<()>().await
        };
        // A worker told to stop gives its runs up (the queue hands them out again).
        let found = tokio::select! {
            r = run => r?,
            _ = mark => unreachable!("pending"),
            _ = self.stop.cancelled() => return Err(ChunkError::Stopped),
        };
        let commit = self
            .with_db(|| {
                self.store.commit_chunk(
                    &job.scan_id,
                    job.chunk,
                    ChunkDone {
                        node: &self.node,
                        results: &found.results,
                        closed: found.closed,
                        sent: found.sent,
                        now_ms: self.now_ms(),
                        duration_ms: found.duration_ms,
                    },
                )
            })
            .await?;
        tracing::info!(scan = %job.scan_id, chunk = job.chunk, ms = started.elapsed().as_millis() as u64,
            results = found.results.len(), closed = found.closed, ?commit, "chunk run");
        self.changed.notify_waiters();
        Ok(match commit {
            Commit::Committed { .. } => ChunkOutcome::Committed,
            Commit::AlreadyDone => ChunkOutcome::AlreadyDone,
        })
    }

    /// Runs `op` until it succeeds, retrying database errors with backoff (100 ms doubling
    /// to 1 s) for at most `db_retry`.
    async fn with_db<T, F, Fut>(&self, op: F) -> Result<T, ChunkError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let deadline = Instant::now() + self.db_retry;
        let mut delay = Duration::from_millis(100);
        let mut warned = false;
        loop {
            match op().await {
                Ok(v) => {
                    if warned {
                        tracing::info!("database reachable again");
                    }
                    return Ok(v);
                }
                Err(e) if Instant::now() + delay < deadline => {
                    if !warned {
                        tracing::warn!(error = %e, "database error; retrying");
                        warned = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(ChunkError::Database(e.to_string())),
            }
        }
    }
}

/// A chunk's bounds: `connect` to reach the engine; 20 s plus 1 s per 5,000 probes to finish
/// (the engine sends 250,000/s in the lab; retries and waits are the rest).
fn limits_for(job: &ChunkJob, connect: Duration) -> RunLimits {
    let ports = crate::jobs::plan::spec_ports(&job.ports);
    let probes = ports * crate::jobs::plan::target_count(&job.targets);
    RunLimits {
        connect,
        scan: Duration::from_secs(20 + probes / 5_000),
    }
}
