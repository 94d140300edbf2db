//! The chunk-job queue: apalis-sql's `SqliteStorage` or `PostgresStorage` for [`ChunkJob`]s,
//! on the store's database ([`Db`]) with apalis's tables migrated (see `store::jobs`), and
//! configured so that a dead node's claims move within seconds.
//!
//! Claims and orphans, as apalis-sql 0.7 does them: a worker heartbeats `last_seen` every
//! `keep_alive`; every `poll_interval` each worker re-enqueues the `Running` jobs of workers
//! silent for `reenqueue_orphaned_after`. PostgreSQL claims with `FOR UPDATE SKIP LOCKED`
//! and polls every 100 ms (its LISTEN/NOTIFY path is not used: see `Queue::open`). SQLite
//! polls too, and its heartbeat is fixed at 30 s by apalis, so orphans move after 90 s there:
//! SQLite is the one-node embedded default, where a dead worker is the whole node.

use crate::jobs::ChunkJob;
use crate::store::jobs::{migrate_queue, QueueSpec};
use crate::store::{Backend, Db};
use apalis_sql::postgres::PostgresStorage;
use apalis_sql::sqlite::SqliteStorage;
use apalis_sql::Config;
use std::time::Duration;

/// The queue's namespace (apalis `job_type`) for chunk jobs.
pub const NAMESPACE: &str = "portscope::chunk";

/// How often a chunk may fail on engines before the queue gives it up.
pub const MAX_ATTEMPTS: i32 = 10;

/// Heartbeat and re-enqueue timing.
#[derive(Debug, Clone, Copy)]
pub struct QueueTiming {
    /// Worker heartbeat interval (PostgreSQL; SQLite's is apalis's fixed 30 s).
    pub keep_alive: Duration,
    /// A worker silent this long has its claimed jobs re-enqueued.
    pub orphaned_after: Duration,
    /// Poll interval (and re-enqueue check interval).
    pub poll: Duration,
}

impl QueueTiming {
    /// The defaults for `backend`: PostgreSQL 1 s heartbeats, orphans after 4 s, polling
    /// every 100 ms; SQLite polls every 100 ms, orphans after 90 s.
    pub fn for_backend(backend: Backend) -> QueueTiming {
        match backend {
            Backend::Postgres => QueueTiming {
                keep_alive: Duration::from_secs(1),
                orphaned_after: Duration::from_secs(4),
                poll: Duration::from_millis(100),
            },
            Backend::Sqlite => QueueTiming {
                keep_alive: Duration::from_secs(30),
                orphaned_after: Duration::from_secs(90),
                poll: Duration::from_millis(100),
            },
        }
    }

    /// `claims` jobs claimed per poll (a poll claims only when the worker is ready): 1 on a
    /// cluster's workers, so a busy worker does not hoard chunks other nodes could run; the
    /// in-process worker's concurrency, so it starts a deep scan's chunks together.
    fn config(self, claims: usize) -> Config {
        Config::new(NAMESPACE)
            .set_keep_alive(self.keep_alive)
            .set_reenqueue_orphaned_after(self.orphaned_after)
            .set_poll_interval(self.poll)
            .set_buffer_size(claims.max(1))
    }
}

/// The chunk-job storage of either backend.
#[derive(Debug, Clone)]
pub enum Queue {
    /// Embedded.
    Sqlite(SqliteStorage<ChunkJob>),
    /// Cluster.
    Postgres(PostgresStorage<ChunkJob>),
}

impl Queue {
    /// The chunk-job storage on `db` (already opened and migrated by the store), after
    /// running the queue's own migrations; a poll claims up to `claims` jobs.
    pub async fn open(db: &Db, timing: QueueTiming, claims: usize) -> Result<Queue, sqlx::Error> {
        migrate_queue(db).await?;
        let config = timing.config(claims);
        Ok(match db {
            Db::Sqlite(pool) => Queue::Sqlite(SqliteStorage::new_with_config(pool.clone(), config)),
            // No `PgListen` subscription: apalis 0.7 fetches on every NOTIFY whether or not
            // the worker is ready, then blocks its heartbeat loop handing the claim over;
            // busy workers hoarded chunks and missed heartbeats, and 16 of 64 chunks ran
            // twice in `xtask cluster`. Polling checks readiness first.
            Db::Postgres(pool) => {
                Queue::Postgres(PostgresStorage::new_with_config(pool.clone(), config))
            }
        })
    }

    /// A queue job id for a new job (written by `store::jobs::JobStore::create_scan`).
    pub fn new_id() -> String {
        apalis::prelude::TaskId::new().to_string()
    }

    /// What the store writes into the queue's table for a new chunk job.
    pub fn spec() -> QueueSpec<'static> {
        QueueSpec {
            job_type: NAMESPACE,
            max_attempts: MAX_ATTEMPTS,
        }
    }
}
