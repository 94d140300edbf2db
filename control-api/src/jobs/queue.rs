//! The job queue: apalis 1's `SqliteStorage` or `PostgresStorage` on the store's database
//! ([`Db`], the queue's tables migrated by `store::queue`), for chunk jobs ([`NAMESPACE`])
//! and webhook deliveries (`crate::delivery`), and the loop that runs a queue's worker.
//!
//! How apalis 1 runs them: a worker registers, then heartbeats every
//! [`QueueTiming::heartbeat`]; each heartbeat also gives back the claimed jobs of workers of
//! the same queue silent for `heartbeat x missed` ([`QueueTiming::orphaned_after`]), and is
//! followed by a fetch. A worker fetches only when its service is ready (a free slot under
//! its concurrency), and at most `batch` jobs at once, so a busy worker claims nothing
//! other nodes could run. Between heartbeats it is woken, not polled: on PostgreSQL by the
//! storage's LISTEN on apalis's insert trigger (`Pubsub`), on SQLite by this process's
//! inserts into the queue (`store::queue::inserted_jobs`; another process's inserts are
//! seen at the next heartbeat). A failed job goes back as `Failed` and any worker fetches
//! it again while it has attempts left.

use crate::store::queue::{inserted_jobs, migrate_queue, InsertedJobs};
use crate::store::{Backend, Db};
use apalis::prelude::{BackendExt as _, PollWith, StreamStrategy};
use apalis_postgres::{PostgresStorage, Pubsub};
use apalis_sqlite::SqliteStorage;
use std::time::Duration;

/// The queue's namespace (apalis `job_type`) for chunk jobs.
pub const NAMESPACE: &str = "portscope::chunk";

/// How often a chunk may fail on engines before the queue gives it up.
pub const MAX_ATTEMPTS: i32 = 10;

/// Heartbeat and orphan timing.
#[derive(Debug, Clone, Copy)]
pub struct QueueTiming {
    /// Worker heartbeat interval (and the fetch that follows each heartbeat).
    pub heartbeat: Duration,
    /// Heartbeats a worker may miss before its claims are given back.
    pub missed: usize,
}

impl QueueTiming {
    /// The defaults, on either backend: 1 s heartbeats, orphans after 3 missed (SQLite
    /// compares whole seconds: 3-4 s), so a dead node's chunks move within about 5 s.
    pub fn for_backend(_backend: Backend) -> QueueTiming {
        QueueTiming {
            heartbeat: Duration::from_secs(1),
            missed: 3,
        }
    }

    /// A worker silent this long has its claims given back.
    pub fn orphaned_after(self) -> Duration {
        self.heartbeat * self.missed as u32
    }
}

/// A queue of `T` jobs on either backend, with its wake-ups.
pub enum Queue<T> {
    /// Embedded: woken by this process's inserts.
    Sqlite(PollWith<SqliteStorage<T>, StreamStrategy<InsertedJobs>>),
    /// Cluster: woken by NOTIFY.
    Postgres(PollWith<PostgresStorage<T>, StreamStrategy<Pubsub>>),
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Queue::Sqlite(_) => "Queue::Sqlite",
            Queue::Postgres(_) => "Queue::Postgres",
        })
    }
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        match self {
            Queue::Sqlite(s) => Queue::Sqlite(s.clone()),
            Queue::Postgres(s) => Queue::Postgres(s.clone()),
        }
    }
}

impl<T> Queue<T> {
    /// The storage of `namespace` jobs on `db` (already opened and migrated by the store),
    /// after running the queue's migrations; a fetch claims up to `batch` jobs.
    pub async fn open(
        db: &Db,
        namespace: &str,
        timing: QueueTiming,
        batch: usize,
    ) -> Result<Queue<T>, sqlx::Error> {
        migrate_queue(db).await?;
        let batch = batch.max(1);
        // The two backends' `Config`s are distinct types with the same builder.
        macro_rules! config {
            ($config:ty) => {
                <$config>::default()
                    .queue(namespace)
                    .heartbeat_interval(timing.heartbeat)
                    .missed_heartbeats(timing.missed)
                    .batch_size(batch)
            };
        }
        Ok(match db {
            Db::Sqlite(pool) => {
                let config = config!(apalis_sqlite::Config);
                Queue::Sqlite(
                    SqliteStorage::new(pool)
                        .with_config(config)
                        .poll_with_stream(inserted_jobs()),
                )
            }
            Db::Postgres(pool) => {
                let config = config!(apalis_postgres::Config);
                Queue::Postgres(PostgresStorage::new(pool).with_config(config).with_pubsub())
            }
        })
    }
}

/// A queue job id for a new job written by the store: a ULID, as apalis's are, whose time
/// part increases by at least a millisecond from one id to the next in this process
/// (apalis fetches equal priorities and due times in id order, so a scan's chunks are
/// claimed in their order; the random part stays random).
pub fn new_job_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let now = crate::jobs::now_ms().max(0) as u64;
    let ms = LAST_MS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .map_or(now, |last| now.max(last + 1));
    ulid::Ulid::from_parts(ms, rand::random()).to_string()
}

/// What the store writes into the queue's table for a new chunk job.
pub fn chunk_spec() -> crate::store::jobs::QueueSpec<'static> {
    crate::store::jobs::QueueSpec {
        job_type: NAMESPACE,
        max_attempts: MAX_ATTEMPTS,
    }
}

/// A worker's pause in fetching: set after a failed run, so that the job it gave back goes
/// to another worker (a failed job is fetched again by whichever worker fetches first, and
/// the one that just failed it would be first). Shared by the worker's handler and
/// [`PauseLayer`].
#[derive(Debug, Clone, Default)]
pub struct Pause(std::sync::Arc<std::sync::Mutex<Option<tokio::time::Instant>>>);

impl Pause {
    /// No fetch for `d` from now.
    pub fn pause_for(&self, d: Duration) {
        if let Ok(mut until) = self.0.lock() {
            *until = Some(tokio::time::Instant::now() + d);
        }
    }

    fn until(&self) -> Option<tokio::time::Instant> {
        self.0.lock().ok().and_then(|u| *u)
    }
}

/// The worker middleware that holds fetches back while its [`Pause`] lasts (apalis fetches
/// only when the service stack is ready).
#[derive(Debug, Clone)]
pub struct PauseLayer(pub Pause);

impl<S> tower::Layer<S> for PauseLayer {
    type Service = PauseService<S>;

    fn layer(&self, inner: S) -> PauseService<S> {
        PauseService {
            inner,
            pause: self.0.clone(),
            sleep: None,
        }
    }
}

/// See [`PauseLayer`].
#[derive(Debug)]
pub struct PauseService<S> {
    inner: S,
    pause: Pause,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S: Clone> Clone for PauseService<S> {
    fn clone(&self) -> Self {
        PauseService {
            inner: self.inner.clone(),
            pause: self.pause.clone(),
            sleep: None,
        }
    }
}

impl<S: tower::Service<R>, R> tower::Service<R> for PauseService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        if let Some(until) = self.pause.until() {
            if tokio::time::Instant::now() < until {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                sleep.as_mut().reset(until);
                if std::future::Future::poll(sleep.as_mut(), cx).is_pending() {
                    return std::task::Poll::Pending;
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.inner.call(req)
    }
}

/// Runs an apalis worker `$id` (`$concurrency` jobs at once, fetching not while `$pause`
/// lasts, `$data` and `$handler`) on
/// `$queue` (a [`Queue`]; its backends' types differ, hence a macro) until `$stop` is
/// cancelled. An apalis 1 worker ends at its first failed heartbeat or fetch (a locked
/// SQLite file, a PostgreSQL restart), after the jobs in flight: it is built anew a second
/// later (its claims stay its own, or are given back as orphans meanwhile). `$what` names
/// the queue in logs.
macro_rules! run_queue_worker {
    ($queue:expr, $id:expr, $concurrency:expr, $pause:expr, $data:expr, $handler:expr, $stop:expr, $what:literal) => {{
        use $crate::jobs::queue::{drive_worker, Queue};
        loop {
            let ended = match &$queue {
                Queue::Sqlite(s) => drive_worker!(s, $id, $concurrency, $pause, $data, $handler, $stop, $what),
                Queue::Postgres(s) => drive_worker!(s, $id, $concurrency, $pause, $data, $handler, $stop, $what),
            };
            if $stop.is_cancelled() {
                break;
            }
            match ended {
                Ok(()) => tracing::warn!(worker = %$id, queue = $what, "queue worker ended; again in 1 s"),
                Err(e) => tracing::warn!(worker = %$id, queue = $what, error = %e, "queue worker failed; again in 1 s"),
            }
            tokio::select! {
                _ = $stop.cancelled() => break,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }};
}
pub(crate) use run_queue_worker;

/// One run of `run_queue_worker!`'s worker on storage `$backend`, until it ends or `$stop`.
macro_rules! drive_worker {
    ($backend:expr, $id:expr, $concurrency:expr, $pause:expr, $data:expr, $handler:expr, $stop:expr, $what:literal) => {{
        use apalis::prelude::{EventListenerExt as _, WorkerBuilderExt as _};
        let stop = $stop.clone();
        let worker = apalis::prelude::WorkerBuilder::new(AsRef::<str>::as_ref($id))
            .backend($backend.clone())
            .data($data.clone())
            .concurrency($concurrency)
            .layer($crate::jobs::queue::PauseLayer($pause.clone()))
            .on_event(|w, e| $crate::jobs::queue::on_event(w, e, $what))
            .build($handler);
        let signal = async move {
            stop.cancelled().await;
            Ok::<(), std::io::Error>(())
        };
        $crate::jobs::queue::drive(worker.run_until(signal), &$stop).await
    }};
}
pub(crate) use drive_worker;

/// Logs a queue worker's errors (a failed job, heartbeat or fetch).
pub fn on_event(worker: &apalis::prelude::WorkerContext, e: &apalis::prelude::Event, what: &str) {
    if let apalis::prelude::Event::Error(err) = e {
        tracing::debug!(worker = %worker.name(), queue = what, error = %err, "queue error");
    }
}

/// Runs a worker (`run`, its `run_until` the cancellation of `stop`) until it ends, or
/// until `stop` and then at most 10 s more for the jobs in flight.
pub async fn drive(
    run: impl std::future::Future<Output = Result<(), apalis::prelude::WorkerError>>,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), apalis::prelude::WorkerError> {
    let mut run = std::pin::pin!(run);
    tokio::select! {
        r = &mut run => return r,
        _ = stop.cancelled() => {}
    }
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap_or(Ok(()))
}
