//! The SQL of chunk jobs (issue 8): job scans, their chunks and their port results, on
//! SQLite and PostgreSQL through one `sqlx::AnyPool` (portable SQL, `$n` placeholders in
//! order), plus the migrations of both the queue (apalis) and these tables.
//!
//! apalis's `setup()` runs its own sqlx migrations into the same `_sqlx_migrations` table as
//! ours, so both migrators here ignore versions they do not know ([`migrate_sqlite`],
//! [`migrate_postgres`]). The one write that matters, [`JobStore::commit_chunk`], is one
//! transaction: the chunk flips to done only if it was not done yet, its results are upserted
//! on (scan, address, port), and the scan's counter (and status, at the last chunk) moves.

use portscope_core::results::{PortResult, PortState, Reason};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, PgPool, Row, SqlitePool};
use std::net::IpAddr;
use std::time::Duration;

use crate::jobs::{ChunkStatus, JobScanStatus};

/// Runs apalis's SQLite migrations and ours, each ignoring the other's versions.
pub async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), sqlx::Error> {
    sqlx::query("PRAGMA journal_mode = 'WAL'")
        .execute(pool)
        .await?;
    let mut queue = apalis_sql::sqlite::SqliteStorage::migrations();
    queue.set_ignore_missing(true);
    queue.run(pool).await?;
    // Ours: the store's set (0003 holds the job tables).
    let mut ours = sqlx::migrate!("./migrations/sqlite");
    ours.set_ignore_missing(true);
    ours.run(pool).await?;
    Ok(())
}

/// Runs apalis's PostgreSQL migrations and ours, each ignoring the other's versions, then
/// makes apalis's insert trigger name the job type in its NOTIFY payload: apalis 0.7's
/// trigger sends `insert`, while its listener wakes the storage whose namespace equals the
/// payload. Idempotent.
pub async fn migrate_postgres(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut queue = apalis_sql::postgres::PostgresStorage::migrations();
    queue.set_ignore_missing(true);
    queue.run(pool).await?;
    let mut ours = sqlx::migrate!("./migrations/postgres");
    ours.set_ignore_missing(true);
    ours.run(pool).await?;
    sqlx::raw_sql(
        // Workers starting together would race on the catalog ("tuple concurrently
        // updated"): one transaction under an advisory lock.
        "BEGIN; SELECT pg_advisory_xact_lock(7285001);
         CREATE OR REPLACE FUNCTION apalis.portscope_notify_job_type() RETURNS trigger AS $$
         BEGIN PERFORM pg_notify('apalis::job', NEW.job_type); RETURN NEW; END;
         $$ LANGUAGE plpgsql;
         CREATE OR REPLACE TRIGGER portscope_notify_job_type AFTER INSERT ON apalis.jobs
         FOR EACH ROW EXECUTE FUNCTION apalis.portscope_notify_job_type();
         COMMIT;",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// A job scan to create.
#[derive(Debug, Clone)]
pub struct NewScan<'a> {
    pub id: &'a str,
    /// `ScanKind` as text (`deep`, `custom`).
    pub kind: &'a str,
    pub created_at_ms: i64,
}

/// A chunk to create: targets, a port spec, its probe count and its queue job id.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub chunk: u32,
    pub targets: Vec<String>,
    pub ports: String,
    pub probes: u64,
    pub job_id: String,
}

/// A job scan as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRow {
    pub id: String,
    pub kind: String,
    pub status: JobScanStatus,
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
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Results written, chunk done; `scan_complete` when it was the scan's last chunk.
    Committed { scan_complete: bool },
    /// Another run committed this chunk first; nothing written.
    AlreadyDone,
}

/// The job tables, over one pool for either backend.
#[derive(Debug, Clone)]
pub struct JobStore {
    pool: AnyPool,
}

impl JobStore {
    /// Opens a pool on `url` (`sqlite://...` or `postgres://...`), already migrated by the
    /// queue's setup. Connections are tried for at most `acquire_timeout`.
    pub async fn open(url: &str, acquire_timeout: Duration) -> Result<JobStore, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(acquire_timeout)
            .connect(url)
            .await?;
        Ok(JobStore { pool })
    }

    /// Creates the scan row and its chunk rows in one transaction.
    pub async fn create_scan(
        &self,
        scan: &NewScan<'_>,
        chunks: &[NewChunk],
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO job_scans (id, kind, status, chunks_total, chunks_done, created_at_ms)
             VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(scan.id)
        .bind(scan.kind)
        .bind(JobScanStatus::Running.as_str())
        .bind(chunks.len() as i64)
        .bind(scan.created_at_ms)
        .execute(&mut *tx)
        .await?;
        for c in chunks {
            sqlx::query(
                "INSERT INTO scan_chunks (scan_id, chunk, targets, ports, probes, status, job_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(scan.id)
            .bind(i64::from(c.chunk))
            .bind(c.targets.join(","))
            .bind(&c.ports)
            .bind(c.probes as i64)
            .bind(ChunkStatus::Pending.as_str())
            .bind(&c.job_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// A worker on `node` starts a run of the chunk: counts the run, remembers the first
    /// node, and returns the chunk's status (`None` if there is no such chunk).
    pub async fn start_chunk(
        &self,
        scan_id: &str,
        chunk: u32,
        node: &str,
    ) -> Result<Option<ChunkStatus>, sqlx::Error> {
        let row = sqlx::query(
            "UPDATE scan_chunks SET runs = runs + 1, first_node = COALESCE(first_node, $1)
             WHERE scan_id = $2 AND chunk = $3 RETURNING status",
        )
        .bind(node)
        .bind(scan_id)
        .bind(i64::from(chunk))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| parse_status::<ChunkStatus>(&r, "status"))
            .transpose()
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
        } = done;
        let mut tx = self.pool.begin().await?;
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
        sqlx::query("UPDATE job_scans SET chunks_done = chunks_done + 1 WHERE id = $1")
            .bind(scan_id)
            .execute(&mut *tx)
            .await?;
        let completed = sqlx::query(
            "UPDATE job_scans SET status = $1, finished_at_ms = $2
             WHERE id = $3 AND status = $4 AND chunks_done = chunks_total",
        )
        .bind(JobScanStatus::Complete.as_str())
        .bind(now_ms)
        .bind(scan_id)
        .bind(JobScanStatus::Running.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Commit::Committed {
            scan_complete: completed > 0,
        })
    }

    /// The scan, if it exists.
    pub async fn scan(&self, id: &str) -> Result<Option<ScanRow>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, kind, status, fail_reason, chunks_total, chunks_done, created_at_ms,
                    finished_at_ms
             FROM job_scans WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ScanRow {
                id: r.try_get("id")?,
                kind: r.try_get("kind")?,
                status: parse_status(&r, "status")?,
                fail_reason: r.try_get("fail_reason")?,
                chunks_total: r.try_get::<i64, _>("chunks_total")? as u64,
                chunks_done: r.try_get::<i64, _>("chunks_done")? as u64,
                created_at_ms: r.try_get("created_at_ms")?,
                finished_at_ms: r.try_get("finished_at_ms")?,
            })
        })
        .transpose()
    }

    /// The scan's chunks, by number.
    pub async fn chunks(&self, scan_id: &str) -> Result<Vec<ChunkRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT chunk, targets, ports, probes, status, job_id, runs, first_node, node,
                    closed, sent
             FROM scan_chunks WHERE scan_id = $1 ORDER BY chunk",
        )
        .bind(scan_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let targets: String = r.try_get("targets")?;
                Ok(ChunkRow {
                    chunk: r.try_get::<i64, _>("chunk")? as u32,
                    targets: targets.split(',').map(str::to_owned).collect(),
                    ports: r.try_get("ports")?,
                    probes: r.try_get::<i64, _>("probes")? as u64,
                    status: parse_status(r, "status")?,
                    job_id: r.try_get("job_id")?,
                    runs: r.try_get::<i64, _>("runs")? as u64,
                    first_node: r.try_get("first_node")?,
                    node: r.try_get("node")?,
                    closed: r.try_get::<Option<i64>, _>("closed")?.map(|v| v as u64),
                    sent: r.try_get::<Option<i64>, _>("sent")?.map(|v| v as u64),
                })
            })
            .collect()
    }

    /// The scan's stored port results (open and filtered), by address and port.
    pub async fn results(&self, scan_id: &str) -> Result<Vec<PortResult>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT address, port, state, reason, ttl, icmp_type, icmp_code
             FROM port_results WHERE scan_id = $1 ORDER BY address, port",
        )
        .bind(scan_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(result_row).collect()
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A stored text column parsed as one of our enums.
fn parse_status<T: std::str::FromStr<Err = String>>(
    row: &AnyRow,
    col: &str,
) -> Result<T, sqlx::Error> {
    let text: String = row.try_get(col)?;
    text.parse().map_err(|e: String| sqlx::Error::ColumnDecode {
        index: col.to_owned(),
        source: e.into(),
    })
}

fn result_row(r: &AnyRow) -> Result<PortResult, sqlx::Error> {
    let decode = |col: &str, e: String| sqlx::Error::ColumnDecode {
        index: col.to_owned(),
        source: e.into(),
    };
    let address: String = r.try_get("address")?;
    let state: String = r.try_get("state")?;
    let reason: String = r.try_get("reason")?;
    let small = |col: &str| -> Result<Option<u8>, sqlx::Error> {
        Ok(r.try_get::<Option<i64>, _>(col)?.map(|v| v as u8))
    };
    Ok(PortResult {
        ip: address
            .parse::<IpAddr>()
            .map_err(|e| decode("address", e.to_string()))?,
        port: r.try_get::<i64, _>("port")? as u16,
        proto: Default::default(),
        state: serde_json::from_value::<PortState>(state.into())
            .map_err(|e| decode("state", e.to_string()))?,
        reason: serde_json::from_value::<Reason>(reason.into())
            .map_err(|e| decode("reason", e.to_string()))?,
        ttl: small("ttl")?,
        icmp_type: small("icmp_type")?,
        icmp_code: small("icmp_code")?,
    })
}
