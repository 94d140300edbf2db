//! The job queue's own tables (apalis 1's `Jobs` / `apalis.jobs`) as the store sees them:
//! their migrations ([`migrate_queue`], with the one-time upgrade of an apalis 0.7
//! database), the queue rows the store writes itself (`push_queue_jobs!`: jobs inserted
//! inside the transaction that makes them due, many rows a statement), and the in-process wake-ups of SQLite
//! ([`inserted_jobs`]): an update hook on every connection of the store's SQLite pool
//! signals each insert into `Jobs`, so the queue's workers in this process fetch at once
//! instead of at their next heartbeat.

use super::Db;
use futures_util::task::AtomicWaker;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

/// Most bound parameters one statement may carry on both backends: the bundled SQLite's
/// `SQLITE_MAX_VARIABLE_NUMBER` (32,766; PostgreSQL allows 65,535). Multi-row inserts
/// (`push_queue_jobs!`, `store::jobs::insert_job_scan!`) split their rows to stay under it.
pub const MAX_BINDS: usize = 32_766;

/// Inserts queue jobs on transaction `$tx` (`$postgres`: the backend), as multi-row
/// `INSERT`s of at most [`MAX_BINDS`] parameters each: `$jobs` (a slice of `(payload, id)`:
/// JSON text, stored as bytes, and a ULID), type and attempts from `$queue` (a
/// [`super::jobs::QueueSpec`]), due now by the database's clock (apalis 1 claims jobs with
/// `run_at <= now` on SQLite, `run_at < now()` on PostgreSQL). The columns the storages'
/// own `push` writes, minus metadata and idempotency keys (none). Chunk jobs
/// (`store::jobs`), callback deliveries (`store::callbacks`) and monitor webhooks
/// (`store::managed`) are written this way. Each inserted row fires SQLite's update hook
/// ([`hook_inserts`]) and PostgreSQL's job trigger (`store::notify`) as a one-row insert
/// does.
macro_rules! push_queue_jobs {
    ($tx:expr, $postgres:expr, $jobs:expr, $queue:expr) => {{
        let postgres: bool = $postgres;
        let queue: $crate::store::jobs::QueueSpec<'_> = $queue;
        let jobs: &[(&str, &str)] = $jobs;
        let (table, now) = if postgres {
            ("apalis.jobs", "now()")
        } else {
            ("Jobs", "strftime('%s', 'now')")
        };
        for batch in jobs.chunks($crate::store::queue::MAX_BINDS / 4) {
            let mut insert = sqlx::QueryBuilder::new(format!(
                "INSERT INTO {table} (job, id, job_type, status, attempts, max_attempts, run_at, \
                 priority) "
            ));
            insert.push_values(batch, |mut row, (job, id)| {
                row.push_bind(job.as_bytes())
                    .push_bind(*id)
                    .push_bind(queue.job_type)
                    .push("'Pending'")
                    .push("0")
                    .push_bind(queue.max_attempts)
                    .push(now)
                    .push("0");
            });
            insert.build().persistent(false).execute(&mut *$tx).await?;
        }
    }};
}
pub(crate) use push_queue_jobs;

/// Inserts one queue job (`$job`, `$id`) on transaction `$tx`: [`push_queue_jobs!`] of one.
macro_rules! push_queue_job {
    ($tx:expr, $postgres:expr, $job:expr, $id:expr, $queue:expr) => {{
        let job: &str = $job;
        let id: &str = $id;
        $crate::store::queue::push_queue_jobs!($tx, $postgres, &[(job, id)], $queue);
    }};
}
pub(crate) use push_queue_job;

/// Runs the queue's migrations for the backend of `db` (ours ran when `db` was opened) and
/// installs the job-change trigger of `store::notify` on PostgreSQL. Idempotent.
///
/// apalis-sqlite 1's migrations share our `_sqlx_migrations` (its first two are byte-equal
/// to apalis 0.7's, so an old database upgrades in place: its `Jobs` rows, pending ones
/// included, stay). apalis-postgres 1 keeps its history in `apalis._sqlx_migrations`
/// and its first migration changed: an apalis 0.7 history in our table is moved there and
/// that checksum re-stamped first (`upgrade_apalis07_pg`); the 0.7 trigger we added
/// goes too (1's own trigger names the job type).
pub async fn migrate_queue(db: &Db) -> Result<(), sqlx::Error> {
    match db {
        // Run by `Db::connect` already; a no-op unless the file was changed meanwhile.
        Db::Sqlite(pool) => {
            let mut queue = apalis_sqlite::SqliteStorage::migrations();
            queue.set_ignore_missing(true);
            queue.run(pool).await?;
        }
        Db::Postgres(pool) => {
            // Workers starting together would race on the catalog ("tuple concurrently
            // updated"): each step in a transaction under an advisory lock (rolled back on
            // any error). One table per transaction: submits write `job_scans` before
            // `apalis.jobs` and a failing scan queues its callbacks before `job_scans`, so
            // holding both tables' locks at once would deadlock with one or the other.
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7285001)")
                .execute(&mut *tx)
                .await?;
            upgrade_apalis07_pg(&mut tx).await?;
            tx.commit().await?;
            // Its own migrator locks the database while it runs.
            apalis_postgres::PostgresStorage::migrations()
                .run(pool)
                .await?;
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(7285001)")
                .execute(&mut *tx)
                .await?;
            for statement in super::notify::TRIGGER_SQL {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

/// apalis-sqlite 1's migrations on `conn` (they share our `_sqlx_migrations`, each
/// migrator ignoring the other's versions).
pub(super) async fn migrate_sqlite(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let mut queue = apalis_sqlite::SqliteStorage::migrations();
    queue.set_ignore_missing(true);
    queue.run(conn).await?;
    Ok(())
}

/// The checksum apalis-postgres 1 gives its first migration (its README's upgrade note).
const APALIS_PG_FIRST_CHECKSUM: &str = "d0839c6f57a379769dc27ccd581feb3d2709239c8f138e05271c9e3c760c4517a78a4d8912ab3d63b074b28d15ec74e9";

/// apalis 0.7 wrote its PostgreSQL migrations (versions from 2022 on, ours are 1..)
/// into our `public._sqlx_migrations`: move them to `apalis._sqlx_migrations`, where
/// apalis-postgres 1 looks, re-stamp the changed first one, and drop the NOTIFY trigger
/// we added for 0.7. A no-op once done, and on a database 0.7 never saw.
async fn upgrade_apalis07_pg(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> Result<(), sqlx::Error> {
    let old: Option<(i64,)> = sqlx::query_as(
        "SELECT version FROM public._sqlx_migrations WHERE version = 20220530084123",
    )
    .fetch_optional(&mut **tx)
    .await?;
    if old.is_none() {
        return Ok(());
    }
    for statement in [
        "CREATE TABLE IF NOT EXISTS apalis._sqlx_migrations
           (LIKE public._sqlx_migrations INCLUDING ALL)",
        "INSERT INTO apalis._sqlx_migrations
           SELECT * FROM public._sqlx_migrations WHERE version >= 20000000000000
           ON CONFLICT (version) DO NOTHING",
        "DELETE FROM public._sqlx_migrations WHERE version >= 20000000000000",
        "DROP TRIGGER IF EXISTS portscope_notify_job_type ON apalis.jobs",
        "DROP FUNCTION IF EXISTS apalis.portscope_notify_job_type()",
    ] {
        sqlx::query(statement).execute(&mut **tx).await?;
    }
    sqlx::query(
        "UPDATE apalis._sqlx_migrations SET checksum = decode($1, 'hex')
         WHERE version = 20220530084123",
    )
    .bind(APALIS_PG_FIRST_CHECKSUM)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One subscriber's wake-up: set by the hook, taken by the stream.
#[derive(Debug, Default)]
struct Slot {
    pending: AtomicBool,
    waker: AtomicWaker,
}

/// Every live [`InsertedJobs`] stream of this process.
static SUBSCRIBERS: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());

/// Installs the wake-up hook on one connection of the store's SQLite pool (its
/// `after_connect`): an insert into the queue's `Jobs` table wakes every [`InsertedJobs`].
/// The hook runs inside the inserting statement, before its commit; the woken fetch is a
/// write, so it waits for SQLite's write lock and sees the committed rows.
pub(super) async fn hook_inserts(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    handle.set_update_hook(|change| {
        if change.operation == sqlx::sqlite::SqliteOperation::Insert && change.table == "Jobs" {
            wake_all();
        }
    });
    Ok(())
}

fn wake_all() {
    let Ok(mut subscribers) = SUBSCRIBERS.lock() else {
        return;
    };
    subscribers.retain(|s| match s.upgrade() {
        Some(slot) => {
            slot.pending.store(true, Ordering::Release);
            slot.waker.wake();
            true
        }
        None => false,
    });
}

/// A stream that yields once after one or more jobs were inserted into SQLite's `Jobs`
/// table by this process (bursts coalesce): the wake-up of a SQLite queue's worker.
#[derive(Debug, Clone)]
pub struct InsertedJobs(Arc<Slot>);

/// A new subscription to this process's SQLite job inserts.
pub fn inserted_jobs() -> InsertedJobs {
    let slot = Arc::new(Slot::default());
    if let Ok(mut subscribers) = SUBSCRIBERS.lock() {
        subscribers.push(Arc::downgrade(&slot));
    }
    InsertedJobs(slot)
}

impl futures_util::Stream for InsertedJobs {
    type Item = ();

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        self.0.waker.register(cx.waker());
        if self.0.pending.swap(false, Ordering::AcqRel) {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}
