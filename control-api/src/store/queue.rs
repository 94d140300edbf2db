//! Rows of the job queue's own tables (apalis's `Jobs` / `apalis.jobs`) written by the
//! store rather than by apalis: a queue job inserted inside the transaction that makes it
//! due (`push_queue_job!`), and abandoned deliveries given back on SQLite.

use super::jobs::JobStore;
use super::Db;

/// Inserts one queue job on transaction `$tx` (`$postgres`: the backend), the insert
/// apalis-sql 0.7's `push_request` runs, with the same columns: payload `$job` (JSON text),
/// id `$id`, type and attempts from `$queue` (a [`super::jobs::QueueSpec`]), claimable after
/// `$run_at_secs` (Unix seconds). Chunk jobs (`store::jobs`) and self-scan callback
/// deliveries (`store::callbacks`) are written this way, inside the transaction that makes
/// them due.
macro_rules! push_queue_job {
    ($tx:expr, $postgres:expr, $job:expr, $id:expr, $queue:expr, $run_at_secs:expr) => {{
        let (postgres, run_at_secs): (bool, i64) = ($postgres, $run_at_secs);
        let queue: $crate::store::jobs::QueueSpec<'_> = $queue;
        let insert = if postgres {
            "INSERT INTO apalis.jobs (job, id, job_type, status, attempts, max_attempts, run_at, priority)
             VALUES ($1::jsonb, $2, $3, 'Pending', 0, $4, to_timestamp($5), 0)"
        } else {
            "INSERT INTO Jobs (job, id, job_type, status, attempts, max_attempts, run_at, priority)
             VALUES ($1, $2, $3, 'Pending', 0, $4, $5, 0)"
        };
        let q = sqlx::query(insert)
            .bind($job)
            .bind($id)
            .bind(queue.job_type)
            .bind(queue.max_attempts);
        let q = if postgres {
            q.bind(run_at_secs as f64)
        } else {
            q.bind(run_at_secs)
        };
        q.execute(&mut *$tx).await?;
    }};
}
pub(crate) use push_queue_job;

impl JobStore {
    /// SQLite only (a no-op on PostgreSQL): gives back to the queue the `Running` jobs of
    /// type `job_type` whose worker was last seen at or before `now_secs`. apalis 0.7 does
    /// this when a worker starts, but with `last_seen < now` in whole seconds, so the claims
    /// of a process killed in the second its worker started stayed `Running` for the
    /// 90 s orphan timeout. Returns how many.
    pub async fn requeue_abandoned_sqlite(
        &self,
        job_type: &str,
        now_secs: i64,
    ) -> Result<u64, sqlx::Error> {
        let Db::Sqlite(pool) = &self.db else {
            return Ok(0);
        };
        let r = sqlx::query(
            "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL
             WHERE status = 'Running' AND job_type = $1
               AND lock_by IN (SELECT id FROM Workers WHERE worker_type = $2 AND last_seen <= $3)",
        )
        .bind(job_type)
        .bind(job_type)
        .bind(now_secs)
        .execute(pool)
        .await?;
        Ok(r.rows_affected())
    }
}
