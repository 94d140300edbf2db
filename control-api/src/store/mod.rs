//! The store: every table of the control API through sqlx, and the only SQL in the crate.
//! One module per table group; each runs the same statements on both backends:
//!
//! - [`scans`]: self-scan rows and their ports ([`Store`]);
//! - [`callbacks`]: `X-Callback-Url` deliveries of self-scans (queued as delivery jobs);
//! - [`queue`]: the job queue's tables: their migrations, the rows the store writes itself
//!   (jobs queued inside a transaction) and SQLite's in-process wake-ups on new jobs;
//! - [`managed`]: managed scans and their per-host ports ([`MStore`]);
//! - [`quota`]: admission of a managed scan (409, quotas, insert) in one atomic step;
//! - `targets`: saved managed targets and their schedules;
//! - `alerts`: alerts (changes between two complete scans) and their status;
//! - [`tokens`]: bearer API tokens (hashes only);
//! - [`limits`]: rate-limit windows shared by every API node (PostgreSQL);
//! - [`notify`]: PostgreSQL notifications of job changes (LISTEN/NOTIFY) between nodes.
//!
//! **Backends.** [`Db`] is an enum of typed pools: SQLite (the embedded default: a file
//! path) or PostgreSQL (a `postgres://` URL), with the same schema from
//! `migrations/sqlite/` and `migrations/postgres/` (same tables and numbers; PostgreSQL
//! uses BIGINT for every integer and `COLLATE "C"` text so orders match SQLite's). A method
//! is written once with `on_db!`, which expands its body per backend, so each statement
//! is type-checked against both drivers. Why not `sqlx::Any`: see control-api/README.md.

pub mod address_lock;
mod alerts;
pub mod callbacks;
mod job_hooks;
mod job_reads;
pub mod jobs;
pub mod limits;
pub mod managed;
pub mod notify;
pub mod queue;
pub mod quota;
pub mod scans;
mod select;
mod targets;
pub mod tokens;
mod words;

pub use callbacks::MAX_CALLBACKS;
pub use managed::{AlertRow, MPortRow, MScanRow, MStore, TargetRow, LIVE};
pub use scans::{NewScan, PortRow, ScanRow, Store};
pub use tokens::TokenRow;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Runs `$body` with `$p` bound to the typed pool of `$db` (and the type `$DB` to its
/// `sqlx::Database`), once per backend: the same statements, checked against both drivers.
macro_rules! on_db {
    ($db:expr, |$p:ident, $DB:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($p) => {
                #[allow(dead_code)]
                type $DB = sqlx::Sqlite;
                $body
            }
            $crate::store::Db::Postgres($p) => {
                #[allow(dead_code)]
                type $DB = sqlx::Postgres;
                $body
            }
        }
    };
    ($db:expr, |$p:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($p) => $body,
            $crate::store::Db::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_db;

/// A write transaction on a pool of either backend (as [`on_db!`] binds it): on SQLite
/// `BEGIN IMMEDIATE`, which takes the database's write lock at once, waiting for it up to the
/// busy timeout. A deferred SQLite transaction that reads before it writes cannot wait: once
/// it holds a read snapshot SQLite skips the busy handler, and another connection's commit
/// in between voids the snapshot, so its first write fails at once with "database is
/// locked" whenever anyone else writes (an apalis worker does every poll). PostgreSQL: a
/// plain `BEGIN` (row locks wait).
pub(crate) trait BeginWrite {
    /// The pool's database.
    type Database: sqlx::Database;
    /// Begins the transaction.
    fn begin_write(
        &self,
    ) -> impl std::future::Future<
        Output = Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>,
    > + Send;
}

/// Implements [`BeginWrite`] for `$pool` (of database `$db`) with the pool's `$begin(args)`.
macro_rules! begin_write {
    ($pool:ty, $db:ty, $begin:ident($($arg:expr),*)) => {
        impl BeginWrite for $pool {
            type Database = $db;
            fn begin_write(
                &self,
            ) -> impl std::future::Future<
                Output = Result<sqlx::Transaction<'static, $db>, sqlx::Error>,
            > + Send {
                self.$begin($($arg),*)
            }
        }
    };
}

begin_write!(SqlitePool, sqlx::Sqlite, begin_with("BEGIN IMMEDIATE"));
begin_write!(PgPool, sqlx::Postgres, begin());

/// A page of a token's rows (`$Row` of `$table`), newest first by `$order` then id, only
/// those whose `$column` equals `$value` when that is `Some`; evaluates to `(rows, total)`
/// on the pool `$p` of [`on_db!`] and returns a database error with `?`.
macro_rules! fetch_page {
    ($p:ident, $Row:ident from $table:literal newest by $order:literal,
     $token:expr, $column:literal = $value:expr, $limit:expr, $offset:expr) => {{
        let value: Option<&str> = $value;
        let (filter, lim, off) = match value {
            Some(_) => (concat!(" AND ", $column, " = $2"), "$3", "$4"),
            None => ("", "$2", "$3"),
        };
        let from = concat!("FROM ", $table, " WHERE token_id = $1");
        let count_sql = format!("SELECT COUNT(*) {from}{filter}");
        let page_sql = format!(
            "SELECT * {from}{filter} ORDER BY {} DESC, id LIMIT {lim} OFFSET {off}",
            $order
        );
        let mut count = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(count_sql)).bind($token);
        let mut page = sqlx::query_as::<_, $Row>(sqlx::AssertSqlSafe(page_sql)).bind($token);
        if let Some(v) = value {
            count = count.bind(v);
            page = page.bind(v);
        }
        let (total,) = count.fetch_one($p).await?;
        (page.bind($limit).bind($offset).fetch_all($p).await?, total)
    }};
}
pub(crate) use fetch_page;

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (the default).
    Sqlite,
    /// A PostgreSQL server, shared by any number of API nodes.
    Postgres,
}

/// A connection pool of either backend.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Whether `db` (the `db` setting) names a PostgreSQL server rather than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// Runs our migrations; on SQLite the job queue's own (apalis) share `_sqlx_migrations`
/// (on PostgreSQL too, in databases apalis 0.7 once migrated), so versions we do not know
/// are theirs and are ignored.
async fn run_migrations<'a, A>(mut m: sqlx::migrate::Migrator, pool: A) -> Result<(), sqlx::Error>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: sqlx::migrate::Migrate,
{
    m.set_ignore_missing(true);
    m.run(pool).await?;
    Ok(())
}

impl Db {
    /// Opens `db`, a SQLite file path (created if missing, mode 0600) or a `postgres://`
    /// URL, and runs that backend's migrations.
    pub async fn open(db: &Path) -> Result<Db, sqlx::Error> {
        Db::connect(db, Duration::from_secs(10)).await
    }

    /// [`Db::open`], waiting at most `acquire_timeout` for a connection (a worker gives a
    /// lost database a few seconds, then retries on its own terms).
    pub async fn connect(db: &Path, acquire_timeout: Duration) -> Result<Db, sqlx::Error> {
        match db.to_str() {
            Some(url) if is_postgres_url(url) => {
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(acquire_timeout)
                    .after_release(|conn, _| Box::pin(outside_a_transaction(conn)))
                    // Sessions in UTC, whatever the server's zone.
                    .connect_with(PgConnectOptions::from_str(url)?.options([("timezone", "UTC")]))
                    .await?;
                run_migrations(sqlx::migrate!("./migrations/postgres"), &pool).await?;
                Ok(Db::Postgres(pool))
            }
            _ => {
                owner_only(db)?;
                let opts = SqliteConnectOptions::new()
                    .filename(db)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(acquire_timeout)
                    // Inserts into the job queue wake this process's queue workers.
                    .after_connect(|conn, _| Box::pin(queue::hook_inserts(conn)))
                    .connect_with(opts)
                    .await?;
                // Ours and the job queue's on one connection, the pool's first: a connection
                // that had loaded the schema before an upgrade of the queue's tables would
                // prepare its statements against the old columns.
                let mut conn = pool.acquire().await?;
                run_migrations(sqlx::migrate!("./migrations/sqlite"), &mut *conn).await?;
                queue::migrate_sqlite(&mut conn).await?;
                drop(conn);
                Ok(Db::Sqlite(pool))
            }
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite pool, if that is the backend (a job queue's SQLite storage).
    pub fn sqlite(&self) -> Option<&SqlitePool> {
        match self {
            Db::Sqlite(p) => Some(p),
            Db::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, if that is the backend (a job queue's PostgreSQL storage).
    pub fn postgres(&self) -> Option<&PgPool> {
        match self {
            Db::Postgres(p) => Some(p),
            Db::Sqlite(_) => None,
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        on_db!(self, |p| p.close().await)
    }

    /// Runs one statement with no parameters and returns its first column as text, for
    /// tests and diagnostics (`SELECT token_hash FROM api_tokens`).
    pub async fn fetch_strings(&self, sql: &str) -> Result<Vec<String>, sqlx::Error> {
        on_db!(self, |p| {
            let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(p)
                .await?;
            Ok(rows.into_iter().map(|(s,)| s).collect())
        })
    }
}

/// Creates the database file readable and writable by its owner only (mode 0600), or
/// narrows an existing one to that; SQLite gives its `-wal` and `-shm` files the same mode.
/// Scan results, token hashes and webhook URLs are nobody else's business.
fn owner_only(path: &Path) -> Result<(), sqlx::Error> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
        .map_err(sqlx::Error::Io)
}

/// Whether a connection going back to the pool is outside any transaction; one that is not
/// is closed (the server rolls it back). sqlx counts a transaction only once its `BEGIN`
/// has returned, so a future dropped during `BEGIN` (an apalis worker stopped mid-fetch)
/// hands back a connection inside a transaction it no longer knows of: the next borrower's
/// writes would join it, never commit, and hold their row locks for good (seen: a chunk
/// commit waiting forever on a `start_chunk` row). Inside a transaction block the
/// transaction began before this statement; outside, this statement is its transaction.
async fn outside_a_transaction(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    // The simple protocol: one message, so both stamps are taken together outside a block.
    use sqlx::Row;
    let row = sqlx::raw_sql("SELECT transaction_timestamp() <> statement_timestamp()")
        .fetch_one(conn)
        .await?;
    Ok(!row.try_get::<bool, _>(0)?)
}

#[cfg(test)]
pub(crate) mod testdb;

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    /// A connection handed back inside a transaction (as after a future dropped during its
    /// `BEGIN`) is closed, not lent again: its uncommitted write is rolled back and no later
    /// borrower joins its transaction.
    #[tokio::test]
    async fn a_connection_left_in_a_transaction_is_not_lent_again() {
        let t = super::testdb::postgres().await;
        let pool = t.db.postgres().unwrap().clone();
        let mut c = pool.acquire().await.unwrap();
        sqlx::query("BEGIN").execute(&mut *c).await.unwrap();
        sqlx::query(
            "INSERT INTO rate_windows (limiter, key, start, count, allowed) \
             VALUES ('left', 'k', 0, 1, 1)",
        )
        .execute(&mut *c)
        .await
        .unwrap();
        drop(c);
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM rate_windows WHERE limiter = 'left'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(n, 0, "a borrower joined the left-open transaction");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND state = 'idle in transaction'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if open == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{open} transactions left open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
