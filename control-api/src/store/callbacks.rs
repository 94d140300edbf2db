//! `X-Callback-Url` webhooks of self-scans (`callbacks`): pending, delivered or failed, so a
//! restart resumes the deliveries of scans that finished meanwhile.

use super::{on_db, Store};

/// Most callbacks one scan carries (coalesced POSTs may each add one).
pub const MAX_CALLBACKS: i64 = 8;

impl Store {
    /// Adds a callback URL to a scan. `false` (nothing added) when the scan already has
    /// [`MAX_CALLBACKS`] other URLs; `true` when added or already present.
    pub async fn add_callback(&self, id: &str, url: &str) -> Result<bool, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let (n, present): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), COUNT(CASE WHEN url = $2 THEN 1 END) FROM callbacks WHERE scan_id = $1",
            )
            .bind(id)
            .bind(url)
            .fetch_one(p)
            .await?;
            if present > 0 {
                return Ok(true);
            }
            if n >= MAX_CALLBACKS {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO callbacks (scan_id, url, state) VALUES ($1, $2, 'pending') \
                 ON CONFLICT (scan_id, url) DO NOTHING",
            )
            .bind(id)
            .bind(url)
            .execute(p)
            .await?;
            Ok(true)
        })
    }

    /// Pending callback URLs of a scan.
    pub async fn pending_callbacks(&self, id: &str) -> Result<Vec<String>, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT url FROM callbacks WHERE scan_id = $1 AND state = 'pending' ORDER BY url",
            )
            .bind(id)
            .fetch_all(p)
            .await?;
            Ok(rows.into_iter().map(|(u,)| u).collect())
        })
    }

    /// Scans in a final state that still have pending callbacks (after a restart).
    pub async fn final_with_pending_callbacks(&self) -> Result<Vec<String>, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT DISTINCT c.scan_id FROM callbacks c JOIN scans s ON s.id = c.scan_id \
                 WHERE c.state = 'pending' AND s.status IN ('complete', 'failed')",
            )
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
        state: &str,
        attempts: u32,
    ) -> Result<(), sqlx::Error> {
        on_db!(&self.pool, |p| {
            sqlx::query(
                "UPDATE callbacks SET state = $1, attempts = $2 WHERE scan_id = $3 AND url = $4",
            )
            .bind(state)
            .bind(i64::from(attempts))
            .bind(id)
            .bind(url)
            .execute(p)
            .await?;
            Ok(())
        })
    }
}
