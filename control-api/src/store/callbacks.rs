//! `X-Callback-Url` webhooks of self-scans (`callbacks`), delivered as durable delivery jobs
//! (`crate::delivery`, the queue monitor webhooks use).
//!
//! A callback is `pending` while its scan is live. The transaction that makes the scan
//! final (`Store::complete`, `JobStore::fail_scan`) turns its pending callbacks `queued`
//! and writes one delivery job each (`queue_callbacks!`); a callback added to a scan that
//! is already final is queued by the same transaction that adds it. So a crash after the
//! row is final cannot lose a delivery (the job is in the queue), and two API nodes deliver
//! once (one transaction made the row final; the jobs are claimed once). The job's run
//! records `delivered` or `failed`; a job run again after that (a crash before its ack)
//! delivers nothing.

use super::{on_db, Db, Store};

/// Most callbacks one scan carries (coalesced POSTs may each add one).
pub const MAX_CALLBACKS: i64 = 8;

/// Where a callback's delivery is, stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackState {
    /// Its scan is live.
    Pending,
    /// Its scan is final; its delivery job is in the queue.
    Queued,
    /// Delivered (a 2xx answer).
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl CallbackState {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackState::Pending => "pending",
            // The same words as the scan statuses.
            CallbackState::Queued => crate::model::Status::Queued.as_str(),
            CallbackState::Delivered => "delivered",
            CallbackState::Failed => crate::model::Status::Failed.as_str(),
        }
    }
}

/// On transaction `$tx` (`$postgres`: the backend): if scan `$scan`
/// is final, turns its pending callbacks `queued` and writes one delivery job for each
/// (`crate::delivery::DeliveryJob::callback`). Claims are atomic, so the jobs are written
/// once however many transactions run it. Returns a database error with `?`.
macro_rules! queue_callbacks {
    ($tx:expr, $postgres:expr, $scan:expr) => {{
        use $crate::store::callbacks::CallbackState;
        let scan: &str = $scan;
        let urls: Vec<(String,)> = sqlx::query_as(
            "UPDATE callbacks SET state = $1 WHERE scan_id = $2 AND state = $3
               AND EXISTS (SELECT 1 FROM scans WHERE id = $4 AND status IN ($5, $6))
             RETURNING url",
        )
        .bind(CallbackState::Queued.as_str())
        .bind(scan)
        .bind(CallbackState::Pending.as_str())
        .bind(scan)
        .bind($crate::model::Status::Complete.as_str())
        .bind($crate::model::Status::Failed.as_str())
        .fetch_all(&mut *$tx)
        .await?;
        for (url,) in urls {
            let job = $crate::delivery::DeliveryJob::callback(scan, &url);
            let payload =
                serde_json::to_string(&job).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let job_id = $crate::jobs::queue::new_job_id();
            $crate::store::queue::push_queue_job!(
                $tx,
                $postgres,
                &payload,
                &job_id,
                $crate::delivery::queue_spec()
            );
        }
    }};
}
pub(crate) use queue_callbacks;

impl Store {
    /// Adds a callback URL to a scan. `false` (nothing added) when the scan already has
    /// [`MAX_CALLBACKS`] other URLs; `true` when added or already present. A callback added
    /// to a final scan is queued for delivery at once. The scan row is written first (a
    /// no-op update: SQLite's write lock, PostgreSQL's row lock), so a transaction making
    /// the row final runs wholly before this one (which then sees the row final) or after
    /// it (and sees this callback).
    pub async fn add_callback(&self, id: &str, url: &str) -> Result<bool, sqlx::Error> {
        let postgres = matches!(self.pool, Db::Postgres(_));
        on_db!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            sqlx::query("UPDATE scans SET status = status WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let (n, present): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), COUNT(CASE WHEN url = $2 THEN 1 END) FROM callbacks WHERE scan_id = $1",
            )
            .bind(id)
            .bind(url)
            .fetch_one(&mut *tx)
            .await?;
            if present > 0 {
                return Ok(true);
            }
            if n >= MAX_CALLBACKS {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO callbacks (scan_id, url, state) VALUES ($1, $2, $3) \
                 ON CONFLICT (scan_id, url) DO NOTHING",
            )
            .bind(id)
            .bind(url)
            .bind(CallbackState::Pending.as_str())
            .execute(&mut *tx)
            .await?;
            queue_callbacks!(tx, postgres, id);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// A callback's state (`None`: no such callback, e.g. its scan expired).
    pub async fn callback_state(
        &self,
        id: &str,
        url: &str,
    ) -> Result<Option<CallbackState>, sqlx::Error> {
        let state: Option<(String,)> = on_db!(&self.pool, |p| {
            sqlx::query_as("SELECT state FROM callbacks WHERE scan_id = $1 AND url = $2")
                .bind(id)
                .bind(url)
                .fetch_optional(p)
                .await?
        });
        Ok(state.and_then(|(s,)| {
            [
                CallbackState::Pending,
                CallbackState::Queued,
                CallbackState::Delivered,
                CallbackState::Failed,
            ]
            .into_iter()
            .find(|c| c.as_str() == s)
        }))
    }

    /// Queues the delivery of pending callbacks of final scans: rows an older version left
    /// (it delivered them from the finisher, not from the queue). Returns the scans.
    pub async fn queue_leftover_callbacks(&self) -> Result<Vec<String>, sqlx::Error> {
        let ids = self.final_with_pending_callbacks().await?;
        let postgres = matches!(self.pool, Db::Postgres(_));
        for id in &ids {
            on_db!(&self.pool, |p| {
                let mut tx = p.begin().await?;
                queue_callbacks!(tx, postgres, id);
                tx.commit().await?;
            });
        }
        Ok(ids)
    }

    /// Scans in a final state that still have pending callbacks.
    pub async fn final_with_pending_callbacks(&self) -> Result<Vec<String>, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT DISTINCT c.scan_id FROM callbacks c JOIN scans s ON s.id = c.scan_id \
                 WHERE c.state = $1 AND s.status IN ($2, $3)",
            )
            .bind(CallbackState::Pending.as_str())
            .bind(crate::model::Status::Complete.as_str())
            .bind(crate::model::Status::Failed.as_str())
            .fetch_all(p)
            .await?;
            Ok(rows.into_iter().map(|(u,)| u).collect())
        })
    }

    /// Records a callback's outcome.
    pub async fn set_callback(
        &self,
        id: &str,
        url: &str,
        state: CallbackState,
        attempts: u32,
    ) -> Result<(), sqlx::Error> {
        on_db!(&self.pool, |p| {
            sqlx::query(
                "UPDATE callbacks SET state = $1, attempts = $2 WHERE scan_id = $3 AND url = $4",
            )
            .bind(state.as_str())
            .bind(i64::from(attempts))
            .bind(id)
            .bind(url)
            .execute(p)
            .await?;
            Ok(())
        })
    }
}
