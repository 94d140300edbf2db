//! The managed-scan tables (`migrations/sqlite/0002_managed.sql`) through sqlx: scans and their
//! per-host ports, saved targets, alerts. Portable SQL as in [`crate::store`]. A managed
//! scan is a job scan of the same id: chunk commits move its row and ports
//! (`store::jobs`), only while it is live (`queued`, `running`), so a re-run chunk changes
//! nothing twice and a cancelled scan stays cancelled.

use super::{fetch_page, on_db, Db};
use crate::model::Status;
use sqlx::FromRow;

pub use super::alerts::AlertRow;
pub use super::targets::TargetRow;

/// Live statuses.
pub const LIVE: &str = "status IN ('queued', 'running')";

/// The statement of [`insert_scan!`].
pub(super) const INSERT_SCAN: &str = "INSERT INTO managed_scans (id, token_id, target_id, \
     target, domain, addresses, ports, port_count, profile, status, report_key, created_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10, $11)";

/// Inserts a queued scan (`&MScanRow`) on an executor of either backend (a transaction).
/// Its report key is derived from the server secret, never stored.
macro_rules! insert_scan {
    ($conn:expr, $row:expr) => {{
        let r: &$crate::store::MScanRow = $row;
        sqlx::query($crate::store::managed::INSERT_SCAN)
            .bind(&r.id)
            .bind(&r.token_id)
            .bind(&r.target_id)
            .bind(&r.target)
            .bind(&r.domain)
            .bind(&r.addresses)
            .bind(&r.ports)
            .bind(r.port_count)
            .bind(&r.profile)
            .bind("")
            .bind(r.created_at_ms)
            .execute($conn)
            .await
            .map(|_| ())
    }};
}
pub(super) use insert_scan;

/// A `managed_scans` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct MScanRow {
    /// Id (a hyphenated UUID), also the engine's.
    pub id: String,
    /// Owner.
    pub token_id: String,
    /// Saved target it was run for.
    pub target_id: Option<String>,
    /// As requested (IP, CIDR or name), normalised.
    pub target: String,
    /// Domain label.
    pub domain: Option<String>,
    /// What the engine was given, comma-separated.
    pub addresses: String,
    /// Engine port spec.
    pub ports: String,
    /// Ports per host.
    pub port_count: i64,
    /// `fast`, `deep`, `custom`.
    pub profile: String,
    /// `queued|running|complete|failed|cancelled`.
    pub status: Status,
    /// Submit sent.
    pub submitted: i64,
    /// Chunks done.
    pub chunks_complete: i64,
    /// Chunks.
    pub total_chunks: i64,
    /// Why it failed.
    pub error: Option<String>,
    /// Report page key.
    pub report_key: String,
    /// Grade when complete.
    pub grade: Option<String>,
    /// Score when complete.
    pub grade_score: Option<i64>,
    /// Wall time from the first chunk claim to the last chunk commit (ms).
    pub duration_ms: Option<i64>,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix seconds.
    pub started_at: Option<i64>,
    /// Unix seconds.
    pub completed_at: Option<i64>,
}

impl MScanRow {
    /// A new queued scan `id` of `target` by `token_id`, created at `created_at_ms`: given
    /// to the engine as is, no ports, profile `custom`, no saved target or domain (a submit
    /// sets those with `..MScanRow::queued(..)`).
    pub fn queued(id: String, token_id: &str, target: String, created_at_ms: i64) -> Self {
        MScanRow {
            id,
            token_id: token_id.into(),
            target_id: None,
            addresses: target.clone(),
            target,
            domain: None,
            ports: String::new(),
            port_count: 0,
            profile: "custom".into(),
            status: Status::Queued,
            submitted: 0,
            chunks_complete: 0,
            total_chunks: 0,
            error: None,
            report_key: String::new(),
            grade: None,
            grade_score: None,
            duration_ms: None,
            created_at_ms,
            started_at: None,
            completed_at: None,
        }
    }

    /// Whether the scan can still change.
    pub fn is_live(&self) -> bool {
        matches!(self.status, Status::Queued | Status::Running)
    }
}

/// A `managed_ports` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct MPortRow {
    /// Host.
    pub host: String,
    /// Port.
    pub port: i64,
    /// `open` / `filtered`.
    pub state: String,
    /// Banner.
    pub banner: Option<String>,
}

/// The tables.
#[derive(Debug, Clone)]
pub struct MStore {
    pub(super) pool: Db,
    /// Report keys are derived from it, never stored.
    secret: crate::secret::ServerSecret,
}

impl MStore {
    /// On an open, migrated pool, with a fresh random secret (report links do not survive
    /// a restart: tests; the server uses [`MStore::with_secret`]).
    pub fn new(pool: Db) -> Self {
        Self::with_secret(
            pool,
            crate::secret::ServerSecret::from_bytes(rand::random()),
        )
    }

    /// On an open, migrated pool, deriving report keys from `secret`.
    pub fn with_secret(pool: Db, secret: crate::secret::ServerSecret) -> Self {
        MStore { pool, secret }
    }

    /// The report key of a scan (derived from the server secret).
    pub fn report_key(&self, id: &str) -> String {
        self.secret.report_key(id)
    }

    /// A row as read, with its derived report key.
    fn keyed(&self, mut r: MScanRow) -> MScanRow {
        r.report_key = self.report_key(&r.id);
        r
    }

    /// Blanks report keys stored in the clear by earlier versions (their links now use the
    /// derived key). Run at start.
    pub async fn forget_stored_report_keys(&self) -> Result<u64, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let r = sqlx::query("UPDATE managed_scans SET report_key = '' WHERE report_key <> ''")
                .execute(p)
                .await?;
            Ok(r.rows_affected())
        })
    }

    /// The pool.
    pub fn pool(&self) -> &Db {
        &self.pool
    }

    /// A scan by id.
    pub async fn scan(&self, id: &str) -> Result<Option<MScanRow>, sqlx::Error> {
        self.pool
            .optional("SELECT * FROM managed_scans WHERE id = $1", id)
            .await
            .map(|o| o.map(|r| self.keyed(r)))
    }

    /// A scan by id, if it belongs to the token.
    pub async fn owned_scan(&self, token: &str, id: &str) -> Result<Option<MScanRow>, sqlx::Error> {
        Ok(self.scan(id).await?.filter(|r| r.token_id == token))
    }

    /// The live scan of a token's target.
    pub async fn live_for(
        &self,
        token: &str,
        target: &str,
    ) -> Result<Option<MScanRow>, sqlx::Error> {
        self.newest(token, target, LIVE, i64::MAX).await
    }

    /// The newest complete scan of a token's target created before `before_ms`.
    pub async fn previous_complete(
        &self,
        token: &str,
        target: &str,
        before_ms: i64,
    ) -> Result<Option<MScanRow>, sqlx::Error> {
        self.newest(token, target, "status = 'complete'", before_ms)
            .await
    }

    /// The newest scan of a token's target created before `before_ms` whose row meets
    /// `condition` (SQL).
    async fn newest(
        &self,
        token: &str,
        target: &str,
        condition: &str,
        before_ms: i64,
    ) -> Result<Option<MScanRow>, sqlx::Error> {
        let sql = format!(
            "SELECT * FROM managed_scans WHERE token_id = $1 AND target = $2 AND {condition} \
             AND created_at_ms < $3 ORDER BY created_at_ms DESC LIMIT 1"
        );
        on_db!(&self.pool, |p| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(token)
                .bind(target)
                .bind(before_ms)
                .fetch_optional(p)
                .await
                .map(|o| o.map(|r| self.keyed(r)))
        })
    }

    /// A page of a token's scans, newest first, and the total.
    pub async fn list_scans(
        &self,
        token: &str,
        target: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<MScanRow>, i64), sqlx::Error> {
        on_db!(&self.pool, |p| {
            let (rows, total) = fetch_page!(
                p, MScanRow from "managed_scans" newest by "created_at_ms",
                token, "target" = target, limit, offset
            );
            Ok((rows.into_iter().map(|r| self.keyed(r)).collect(), total))
        })
    }

    /// Every live scan, oldest first.
    pub async fn live(&self) -> Result<Vec<MScanRow>, sqlx::Error> {
        on_db!(&self.pool, |p| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT * FROM managed_scans WHERE {LIVE} ORDER BY created_at_ms"
            )))
            .fetch_all(p)
            .await
            .map(|v: Vec<MScanRow>| v.into_iter().map(|r| self.keyed(r)).collect())
        })
    }

    /// Live scans whose job scan completed (every chunk committed), oldest first: the
    /// finisher's work.
    pub async fn engine_complete(&self) -> Result<Vec<MScanRow>, sqlx::Error> {
        on_db!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT m.* FROM managed_scans m JOIN job_scans j ON j.id = m.id \
                 WHERE m.status IN ('queued', 'running') AND j.status = 'complete' \
                 ORDER BY m.created_at_ms",
            )
            .fetch_all(p)
            .await
            .map(|v: Vec<MScanRow>| v.into_iter().map(|r| self.keyed(r)).collect())
        })
    }

    /// A scan's ports by host and port.
    pub async fn ports(&self, id: &str) -> Result<Vec<MPortRow>, sqlx::Error> {
        self.pool
            .all(
                "SELECT host, port, state, banner FROM managed_ports WHERE scan_id = $1 \
             ORDER BY host, port",
                id,
            )
            .await
    }

    /// Completes a live scan with banners, grade and score, its alerts and its monitor
    /// delivery jobs (webhook, e-mail), in one transaction. Returns whether it changed.
    pub async fn complete(&self, id: &str, c: &Completion<'_>) -> Result<bool, sqlx::Error> {
        let Completion {
            banners,
            grade,
            score,
            duration_ms,
            now,
            alerts,
            monitor,
        } = *c;
        let postgres = matches!(self.pool, Db::Postgres(_));
        let monitor = monitor
            .iter()
            .map(|job| serde_json::to_string(job).map_err(|e| sqlx::Error::Encode(Box::new(e))))
            .collect::<Result<Vec<String>, _>>()?;
        on_db!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            for (host, port, banner) in banners {
                sqlx::query(
                    "UPDATE managed_ports SET banner = $1 WHERE scan_id = $2 AND host = $3 AND port = $4",
                )
                .bind(banner)
                .bind(id)
                .bind(host)
                .bind(i64::from(*port))
                .execute(&mut *tx)
                .await?;
            }
            let r = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE managed_scans SET status = 'complete', grade = $1, grade_score = $2, \
                 duration_ms = $3, completed_at = $4, chunks_complete = total_chunks, \
                 started_at = COALESCE(started_at, $4) WHERE id = $5 AND {LIVE}"
            )))
            .bind(grade)
            .bind(score)
            .bind(i64::try_from(duration_ms).unwrap_or(i64::MAX))
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() != 1 {
                return Ok(false); // no longer live: nothing changes (rolled back on drop)
            }
            // The alerts commit with the completion: whoever sees `complete` sees its alerts
            // (and the findings they mark as new).
            for a in alerts {
                super::alerts::insert_alert!(&mut *tx, a)?;
            }
            // The monitor deliveries are queued with them: a crash after this commit still
            // delivers them, and none is queued for a scan that did not complete.
            for payload in &monitor {
                let job_id = crate::jobs::queue::new_job_id();
                super::queue::push_queue_job!(
                    tx,
                    postgres,
                    payload,
                    &job_id,
                    crate::delivery::queue_spec()
                );
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Ends a live scan as `failed` or `cancelled`. Returns whether it changed.
    pub async fn end(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let r = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE managed_scans SET status = $1, error = $2, completed_at = $3 \
                 WHERE id = $4 AND {LIVE}"
            )))
            .bind(status)
            .bind(error)
            .bind(now)
            .bind(id)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }
}

/// What makes a managed scan `complete` ([`MStore::complete`]): all of it commits at once.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// Banners grabbed for open ports: (host, port, banner).
    pub banners: &'a [(String, u16, String)],
    /// The grade and its score.
    pub grade: &'a str,
    /// The grade's score.
    pub score: i64,
    /// The scan's duration.
    pub duration_ms: u64,
    /// Now, Unix seconds.
    pub now: i64,
    /// Alerts against the previous scan of the target.
    pub alerts: &'a [AlertRow],
    /// The target's monitor deliveries (webhook, e-mail), queued in the same transaction.
    pub monitor: &'a [crate::delivery::DeliveryJob],
}
