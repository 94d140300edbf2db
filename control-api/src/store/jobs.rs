//! The SQL of chunk jobs (issue 8): job scans, their chunks, their port results and the
//! queue rows of their chunk jobs, on SQLite and PostgreSQL through the store's one [`Db`]
//! (typed pools, each statement checked against both drivers by `on_db!`), plus the
//! queue's migrations (`store::queue`).
//!
//! **Submit is one transaction** ([`JobStore::create_scan`]): the scan row, its chunk rows
//! and one queue row per chunk in apalis's `Jobs` table (`store::queue::push_queue_jobs!`,
//! the columns apalis 1's own push writes; `tests/jobs_store.rs` checks that apalis claims
//! what it writes). A submitter that dies half-way leaves nothing. The one write of a
//! worker that matters, [`JobStore::commit_chunk`], is one transaction too: the chunk flips
//! to done only if it was not done yet, its results are upserted on (scan, address, port),
//! and the scan's counter (and status, at the last chunk) moves.
//!
//! **A self-scan is a job scan with the same id** (`/v1/fast`, `/v1/deep`): its `scans` row
//! is created in the submit transaction (`queued`), and every commit moves it in the same
//! transaction: `running`, chunks done, the chunk's open and filtered ports into
//! `scan_ports`, `duration_ms` = wall time since the scan's first chunk claim
//! (`job_scans.started_at_ms`, stamped by [`JobStore::start_chunk`]), and `engine_done = 1`
//! at the last chunk (banners, PTR and `complete` are the API's finisher's). A job scan that fails
//! fails its `scans` row in the same transaction. Job scans without such a row (the
//! `jobs submit` path) are untouched by these hooks.
//!
//! **A managed scan is a job scan with the same id** (`/api/v1/scan`, retests, the
//! scheduler, seed 002): its `managed_scans` row is inserted with the job scan by the
//! admission (`store::quota`, the quotas and the 409 in the same transaction). A chunk run's
//! start makes it `running`; every commit adds the chunk's open and filtered ports to
//! `managed_ports` by host and moves its progress and wall time (as a self-scan's), as long
//! as the row is live. When the job scan completes the managed finisher grades it (`MStore::complete`,
//! the one transition to final); a failed job scan fails it in the same transaction;
//! [`JobStore::cancel_scan`] cancels both and drops the chunk jobs not claimed yet.

pub use super::queue::migrate_queue;

use super::job_hooks::{end_row, RowOf, MANAGED};
use super::job_reads::parse;
use super::{on_db, BeginWrite, Db};
use crate::jobs::ChunkStatus;
use crate::model::Status;
use portscope_core::results::{PortResult, PortState};

/// Inserts job scan `$scan` (a [`NewScan`]), its chunk rows and their queue jobs on
/// transaction `$tx` (`$postgres`: the backend): [`JobStore::create_scan`], and a managed
/// scan's admission (`store::quota`), which inserts them with its row.
macro_rules! insert_job_scan {
    ($tx:expr, $postgres:expr, $scan:expr, $chunks:expr, $queue:expr) => {{
        let (scan, chunks, queue): (
            &$crate::store::jobs::NewScan<'_>,
            &[$crate::store::jobs::NewChunk],
            $crate::store::jobs::QueueSpec<'_>,
        ) = ($scan, $chunks, $queue);
        let postgres: bool = $postgres;
        sqlx::query(
            "INSERT INTO job_scans (id, kind, status, chunks_total, chunks_done, created_at_ms)
             VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(scan.id)
        .bind(scan.kind)
        .bind($crate::model::Status::Running.as_str())
        .bind(chunks.len() as i64)
        .bind(scan.created_at_ms)
        .execute(&mut *$tx)
        .await?;
        if let Some(s) = &scan.selfscan {
            sqlx::query(
                "INSERT INTO scans (id, ip, scan_type, status, created_at_ms, expires_at,
                                    total_chunks)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(s.id)
            .bind(s.ip)
            .bind(s.scan_type.as_str())
            .bind($crate::model::Status::Queued.as_str())
            .bind(s.created_at_ms)
            .bind(s.expires_at)
            .bind(chunks.len() as i64)
            .execute(&mut *$tx)
            .await?;
        }
        // Multi-row inserts (a scan at the probe cap has 32,768 chunks): a few statements
        // instead of two round trips per chunk, so the transaction (SQLite's write lock)
        // stays short.
        for batch in chunks.chunks($crate::store::queue::MAX_BINDS / 7) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO scan_chunks (scan_id, chunk, targets, ports, probes, status, job_id) ",
            );
            insert.push_values(batch, |mut row, c| {
                row.push_bind(scan.id)
                    .push_bind(i64::from(c.chunk))
                    .push_bind(c.targets.join(","))
                    .push_bind(c.ports.as_str())
                    .push_bind(c.probes as i64)
                    .push_bind($crate::jobs::ChunkStatus::Pending.as_str())
                    .push_bind(c.job_id.as_str());
            });
            insert.build().persistent(false).execute(&mut *$tx).await?;
        }
        let jobs: Vec<(&str, &str)> = chunks
            .iter()
            .map(|c| (c.payload.as_str(), c.job_id.as_str()))
            .collect();
        $crate::store::queue::push_queue_jobs!($tx, postgres, &jobs, queue);
    }};
}
pub(crate) use insert_job_scan;

/// A job scan to create.
#[derive(Debug, Clone)]
pub struct NewScan<'a> {
    pub id: &'a str,
    /// `ScanKind` as text (`deep`, `custom`).
    pub kind: &'a str,
    pub created_at_ms: i64,
    /// The self-scan row created with it (same id), if it is one.
    pub selfscan: Option<super::NewScan<'a>>,
}

/// A chunk to create: targets, a port spec, its probe count, and its queue job (id and
/// payload, the JSON the queue hands the worker).
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub chunk: u32,
    pub targets: Vec<String>,
    pub ports: String,
    pub probes: u64,
    pub job_id: String,
    pub payload: String,
}

/// The queue's side of new jobs: apalis's job type (namespace) and attempts.
#[derive(Debug, Clone, Copy)]
pub struct QueueSpec<'a> {
    /// apalis `job_type`.
    pub job_type: &'a str,
    /// Runs before the queue gives a job up.
    pub max_attempts: i32,
}

/// A job scan as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRow {
    pub id: String,
    pub kind: String,
    pub status: Status,
    pub fail_reason: Option<String>,
    pub chunks_total: u64,
    pub chunks_done: u64,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// A chunk as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRow {
    pub chunk: u32,
    pub targets: Vec<String>,
    pub ports: String,
    pub probes: u64,
    pub status: ChunkStatus,
    pub job_id: Option<String>,
    pub runs: u64,
    pub first_node: Option<String>,
    pub node: Option<String>,
    pub closed: Option<u64>,
    pub sent: Option<u64>,
}

/// One finished run of a chunk, to commit: who ran it, what it found, when.
#[derive(Debug, Clone, Copy)]
pub struct ChunkDone<'a> {
    /// The node that ran it.
    pub node: &'a str,
    /// Open and filtered ports.
    pub results: &'a [PortResult],
    /// Closed ports (counted).
    pub closed: u64,
    /// Probes sent.
    pub sent: u64,
    /// Commit time, Unix ms.
    pub now_ms: i64,
    /// The engine's scan time of the chunk, ms.
    pub duration_ms: u64,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Results written, chunk done; `scan_complete` when it was the scan's last chunk.
    Committed { scan_complete: bool },
    /// Another run committed this chunk first; nothing written.
    AlreadyDone,
}

/// The kind of a managed scan's job scan.
pub const MANAGED_KIND: &str = "custom";

/// The job tables, on the store's pool.
#[derive(Debug, Clone)]
pub struct JobStore {
    pub(super) db: Db,
}

impl JobStore {
    /// On an open, migrated database.
    pub fn new(db: Db) -> JobStore {
        JobStore { db }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Creates the scan row, its chunk rows and their queue jobs in one transaction.
    pub async fn create_scan(
        &self,
        scan: &NewScan<'_>,
        chunks: &[NewChunk],
        queue: QueueSpec<'_>,
    ) -> Result<(), sqlx::Error> {
        let postgres = matches!(self.db, Db::Postgres(_));
        on_db!(&self.db, |p| {
            let mut tx = p.begin().await?;
            insert_job_scan!(tx, postgres, scan, chunks, queue);
            tx.commit().await
        })
    }

    /// A worker on `node` starts a run of the chunk at `now_ms` (Unix ms): counts the run,
    /// remembers the first node and the scan's first claim, and returns the chunk's status
    /// (`None` if there is no such chunk).
    pub async fn start_chunk(
        &self,
        scan_id: &str,
        chunk: u32,
        node: &str,
        now_ms: i64,
    ) -> Result<Option<ChunkStatus>, sqlx::Error> {
        let status: Option<(String,)> = on_db!(&self.db, |p| {
            sqlx::query(
                "UPDATE job_scans SET started_at_ms = COALESCE(started_at_ms, $1) WHERE id = $2",
            )
            .bind(now_ms)
            .bind(scan_id)
            .execute(p)
            .await?;
            sqlx::query_as(
                "UPDATE scan_chunks SET runs = runs + 1, first_node = COALESCE(first_node, $1)
                 WHERE scan_id = $2 AND chunk = $3 RETURNING status",
            )
            .bind(node)
            .bind(scan_id)
            .bind(i64::from(chunk))
            .fetch_optional(p)
            .await?
        });
        status.map(|(s,)| parse(&s, "status")).transpose()
    }

    /// A run of one of its chunks begins: a managed row of the same id, if queued, is
    /// `running` from now on (`now_ms`, Unix ms).
    pub async fn mark_running(&self, scan_id: &str, now_ms: i64) -> Result<(), sqlx::Error> {
        on_db!(&self.db, |p| {
            sqlx::query(
                "UPDATE managed_scans SET status = $1, submitted = 1,
                   started_at = COALESCE(started_at, $2)
                 WHERE id = $3 AND status = $4",
            )
            .bind(Status::Running.as_str())
            .bind(now_ms / 1000)
            .bind(scan_id)
            .bind(Status::Queued.as_str())
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Cancels scan `scan_id`: its managed row (if live) and its job scan (if running)
    /// become `cancelled` and its chunk jobs not claimed yet leave the queue, in one
    /// transaction. A chunk being run still commits its chunk row, but moves no managed
    /// row (the commit only moves live ones). Returns whether the managed row changed.
    pub async fn cancel_scan(&self, scan_id: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
        let queue = match self.db {
            Db::Postgres(_) => "apalis.jobs",
            Db::Sqlite(_) => "Jobs",
        };
        on_db!(&self.db, |p| {
            let mut tx = p.begin().await?;
            let r = end_row!(
                tx,
                MANAGED,
                scan_id,
                Status::Cancelled,
                None::<&str>,
                now_ms / 1000
            )?;
            sqlx::query(
                "UPDATE job_scans SET status = $1, finished_at_ms = $2 WHERE id = $3 AND status = $4",
            )
            .bind(Status::Cancelled.as_str())
            .bind(now_ms)
            .bind(scan_id)
            .bind(Status::Running.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {queue} WHERE status = 'Pending'
                   AND id IN (SELECT job_id FROM scan_chunks WHERE scan_id = $1)"
            )))
            .bind(scan_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Commits one chunk run: in one transaction, marks the chunk done by `node` (only if it
    /// was not), upserts its results on (scan, address, port) and counts it on the scan,
    /// completing the scan at its last chunk.
    pub async fn commit_chunk(
        &self,
        scan_id: &str,
        chunk: u32,
        done: ChunkDone<'_>,
    ) -> Result<Commit, sqlx::Error> {
        let ChunkDone {
            node,
            results,
            closed,
            sent,
            now_ms,
            duration_ms,
        } = done;
        on_db!(&self.db, |p| {
            let mut tx = p.begin().await?;
            let flipped = sqlx::query(
                "UPDATE scan_chunks SET status = $1, node = $2, closed = $3, sent = $4, done_at_ms = $5
                 WHERE scan_id = $6 AND chunk = $7 AND status <> $8",
            )
            .bind(ChunkStatus::Done.as_str())
            .bind(node)
            .bind(closed as i64)
            .bind(sent as i64)
            .bind(now_ms)
            .bind(scan_id)
            .bind(i64::from(chunk))
            .bind(ChunkStatus::Done.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if flipped == 0 {
                tx.rollback().await?;
                return Ok(Commit::AlreadyDone);
            }
            for r in results {
                sqlx::query(
                    "INSERT INTO port_results
                       (scan_id, address, port, state, reason, ttl, icmp_type, icmp_code, chunk)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (scan_id, address, port) DO UPDATE SET
                       state = excluded.state, reason = excluded.reason, ttl = excluded.ttl,
                       icmp_type = excluded.icmp_type, icmp_code = excluded.icmp_code,
                       chunk = excluded.chunk",
                )
                .bind(scan_id)
                .bind(r.ip.to_string())
                .bind(i32::from(r.port))
                .bind(r.state.as_str())
                .bind(r.reason.as_str())
                .bind(r.ttl.map(i16::from))
                .bind(r.icmp_type.map(i16::from))
                .bind(r.icmp_code.map(i16::from))
                .bind(i64::from(chunk))
                .execute(&mut *tx)
                .await?;
            }
            let kind: Option<(String,)> = sqlx::query_as(
                "UPDATE job_scans SET chunks_done = chunks_done + 1 WHERE id = $1 RETURNING kind",
            )
            .bind(scan_id)
            .fetch_optional(&mut *tx)
            .await?;
            let completed = sqlx::query(
                "UPDATE job_scans SET status = $1, finished_at_ms = $2
                 WHERE id = $3 AND status = $4 AND chunks_done = chunks_total",
            )
            .bind(Status::Complete.as_str())
            .bind(now_ms)
            .bind(scan_id)
            .bind(Status::Running.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // The row of the same id, if any and live (see the module doc): the chunk's open
            // and filtered ports, its progress and its duration.
            let row = RowOf::kind(kind.as_ref().map_or("", |(k,)| k));
            sqlx::query(sqlx::AssertSqlSafe(row.ports_sql()))
                .bind(scan_id)
                .bind(i64::from(chunk))
                .bind(PortState::Closed.as_str())
                .bind(Status::Queued.as_str())
                .bind(Status::Running.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query(sqlx::AssertSqlSafe(row.commit_sql()))
                .bind(Status::Running.as_str())
                .bind(scan_id)
                .bind(i64::try_from(duration_ms).unwrap_or(i64::MAX))
                .bind(i64::from(completed > 0))
                .bind(now_ms / 1000)
                .bind(Status::Queued.as_str())
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Commit::Committed {
                scan_complete: completed > 0,
            })
        })
    }

    /// Fails a running scan with `reason` (a chunk failed for good); `true` when it was
    /// running. A later commit of another chunk leaves it failed. Its self-scan or managed
    /// row, if any and not final, fails in the same transaction with `selfscan_reason`.
    pub async fn fail_scan(
        &self,
        scan_id: &str,
        reason: &str,
        selfscan_reason: &str,
        now_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let postgres = matches!(self.db, Db::Postgres(_));
        on_db!(&self.db, |p| {
            // It reads first: a write transaction, so it waits for SQLite's lock (see
            // `BeginWrite`) instead of failing when another connection writes meanwhile.
            let mut tx = p.begin_write().await?;
            let kind: Option<(String,)> =
                sqlx::query_as("SELECT kind FROM job_scans WHERE id = $1")
                    .bind(scan_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let row = RowOf::kind(kind.as_ref().map_or("", |(k,)| k));
            end_row!(
                tx,
                row,
                scan_id,
                Status::Failed,
                Some(selfscan_reason),
                now_ms / 1000
            )?;
            super::callbacks::queue_callbacks!(tx, postgres, scan_id);
            let r = sqlx::query(
                "UPDATE job_scans SET status = $1, fail_reason = $2, finished_at_ms = $3
                 WHERE id = $4 AND status = $5",
            )
            .bind(Status::Failed.as_str())
            .bind(reason)
            .bind(now_ms)
            .bind(scan_id)
            .bind(Status::Running.as_str())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.db.close().await;
    }
}
