//! Admission of a managed scan: the 409 check (a live scan of the same target), the token's
//! monthly and concurrent quotas, the queue limit and the insert, as one atomic step on
//! both backends, so simultaneous requests on any number of API nodes never go over.
//!
//! - PostgreSQL: one transaction that first takes a transaction-scoped advisory lock on the
//!   token (`pg_advisory_xact_lock(QUOTA_LOCK, hashtext(token))`), so the admissions of one
//!   token are serialised across every node and the counts it reads are current; other
//!   tokens do not wait. (A conditional `INSERT ... SELECT ... WHERE count < quota` alone is
//!   not enough under READ COMMITTED: two transactions can both read count = quota - 1.)
//! - SQLite: one `BEGIN IMMEDIATE` transaction: it takes the database's single write lock
//!   before reading, so the counts cannot change until it commits (other processes on the
//!   same file wait on `busy_timeout`).
//!
//! The queue limit counts every token's live scans (queued or running: job scans whose
//! chunks wait for or run on workers), so on PostgreSQL (locked per token)
//! two tokens admitted at once may pass it by one each: it is a load brake, not a quota.

use super::jobs::{insert_job_scan, NewChunk, NewScan, QueueSpec};
use super::managed::{insert_scan, LIVE};
use super::{Db, MScanRow, MStore};

/// First key of the advisory lock (the second is the token's hash): "quota".
const QUOTA_LOCK: i32 = 0x71_75_6f_74;

/// The limits a new scan must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Start of the current month, Unix ms (scans created since count).
    pub month_since_ms: i64,
    /// New scans per month for the token.
    pub monthly: i64,
    /// Queued + running scans of the token.
    pub concurrent: i64,
    /// Queued scans of every token.
    pub queue_limit: i64,
}

/// The outcome of [`MStore::admit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Inserted.
    Admitted,
    /// The token already has this live scan of the target (its id).
    InProgress(String),
    /// The monthly quota is used up.
    Monthly,
    /// The concurrent quota is used up.
    Concurrent,
    /// The queue is full.
    QueueFull,
}

/// The checks and the insert, on a transaction `$tx` that already excludes other
/// admissions of the token.
macro_rules! admit_in {
    ($tx:ident, $row:expr, $q:expr, $job:expr, $postgres:expr) => {{
        let (row, q): (&MScanRow, &Quota) = ($row, $q);
        let live: Option<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM managed_scans WHERE token_id = $1 AND target = $2 AND {LIVE} \
             ORDER BY created_at_ms DESC LIMIT 1"
        )))
        .bind(&row.token_id)
        .bind(&row.target)
        .fetch_optional(&mut *$tx)
        .await?;
        let (month, live_n, queued): (i64, i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                // Scans the engine refused (`rejected_*`) cost no quota.
                "SELECT \
             (SELECT COUNT(*) FROM managed_scans WHERE token_id = $1 AND created_at_ms >= $2 \
              AND COALESCE(error, '') NOT LIKE 'rejected\\_%' ESCAPE '\\'), \
             (SELECT COUNT(*) FROM managed_scans WHERE token_id = $1 AND {LIVE}), \
             (SELECT COUNT(*) FROM managed_scans WHERE {LIVE})"
            )))
            .bind(&row.token_id)
            .bind(q.month_since_ms)
            .fetch_one(&mut *$tx)
            .await?;
        if let Some((id,)) = live {
            Admission::InProgress(id)
        } else if month >= q.monthly {
            Admission::Monthly
        } else if live_n >= q.concurrent {
            Admission::Concurrent
        } else if queued >= q.queue_limit {
            Admission::QueueFull
        } else {
            insert_scan!(&mut *$tx, row)?;
            if let Some(job) = $job {
                let job: &JobInsert<'_> = job;
                insert_job_scan!($tx, $postgres, &job.scan, job.chunks, job.queue);
                sqlx::query("UPDATE managed_scans SET total_chunks = $1 WHERE id = $2")
                    .bind(job.chunks.len() as i64)
                    .bind(&row.id)
                    .execute(&mut *$tx)
                    .await?;
            }
            Admission::Admitted
        }
    }};
}

/// The job scan a managed scan runs as (same id), inserted with its row.
#[derive(Debug, Clone)]
pub struct JobInsert<'a> {
    /// The job scan.
    pub scan: NewScan<'a>,
    /// Its chunks and their queue jobs.
    pub chunks: &'a [NewChunk],
    /// The queue's side.
    pub queue: QueueSpec<'a>,
}

impl MStore {
    /// Inserts `row` (a queued scan) if the token has no live scan of its target and it
    /// fits `quota`; otherwise says which check refused it. Atomic across API nodes.
    pub async fn admit(&self, row: &MScanRow, quota: &Quota) -> Result<Admission, sqlx::Error> {
        self.admit_job(row, quota, None).await
    }

    /// [`MStore::admit`], inserting the row's job scan `job` (its chunks and their queue
    /// jobs) in the same transaction when admitted.
    pub async fn admit_job(
        &self,
        row: &MScanRow,
        quota: &Quota,
        job: Option<&JobInsert<'_>>,
    ) -> Result<Admission, sqlx::Error> {
        let admission = match &self.pool {
            Db::Sqlite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let a = admit_in!(tx, row, quota, job, false);
                tx.commit().await?;
                a
            }
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                    .bind(QUOTA_LOCK)
                    .bind(&row.token_id)
                    .execute(&mut *tx)
                    .await?;
                let a = admit_in!(tx, row, quota, job, true);
                tx.commit().await?;
                a
            }
        };
        Ok(admission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdb::both_backends;
    use crate::store::{tokens, TokenRow};

    fn row(id: &str, target: &str) -> MScanRow {
        MScanRow {
            ports: "22".into(),
            port_count: 1,
            ..MScanRow::queued(id.into(), "tok_a", target.into(), 1_000)
        }
    }

    fn token() -> TokenRow {
        TokenRow {
            id: "tok_a".into(),
            name: "a".into(),
            token_hash: "h".into(),
            scope: "198.18.0.0/15".into(),
            monthly_scans: 3,
            max_concurrent: 2,
            created_at: 0,
            revoked_at: None,
        }
    }

    both_backends!(admits_until_a_check_refuses, |db| async move {
        tokens::insert(&db, &token()).await.unwrap();
        let s = MStore::new(db);
        let q = Quota {
            month_since_ms: 0,
            monthly: 3,
            concurrent: 2,
            queue_limit: 100,
        };
        let admit = |id: &'static str, target: &'static str, q: Quota| {
            let s = s.clone();
            async move { s.admit(&row(id, target), &q).await.unwrap() }
        };
        assert_eq!(admit("s1", "198.18.0.1", q).await, Admission::Admitted);
        assert_eq!(
            admit("s2", "198.18.0.1", q).await,
            Admission::InProgress("s1".into())
        );
        assert_eq!(admit("s3", "198.18.0.2", q).await, Admission::Admitted);
        assert_eq!(admit("s4", "198.18.0.3", q).await, Admission::Concurrent);
        let roomy = Quota { concurrent: 9, ..q };
        let full = Quota {
            queue_limit: 2,
            ..roomy
        };
        assert_eq!(admit("s5", "198.18.0.3", full).await, Admission::QueueFull);
        assert_eq!(admit("s6", "198.18.0.3", roomy).await, Admission::Admitted);
        assert_eq!(admit("s7", "198.18.0.4", roomy).await, Admission::Monthly);
    });

    /// Deterministic: another node's admission of the same token holds the lock and has
    /// inserted, not committed; this one must wait for it and then see its row (without
    /// the lock it would read the old count and go over the quota).
    #[tokio::test]
    async fn an_admission_waits_for_another_nodes_on_postgres() {
        let t = crate::store::testdb::postgres().await;
        tokens::insert(&t.db, &token()).await.unwrap();
        let pool = t.db.postgres().unwrap().clone();
        let mut other = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(QUOTA_LOCK)
            .bind("tok_a")
            .execute(&mut *other)
            .await
            .unwrap();
        let r = row("s1", "198.18.0.1");
        insert_scan!(&mut *other, &r).unwrap();
        let s = MStore::new(t.db.clone());
        let q = Quota {
            month_since_ms: 0,
            monthly: 1,
            concurrent: 9,
            queue_limit: 100,
        };
        let mine = tokio::spawn(async move { s.admit(&row("s2", "198.18.0.2"), &q).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !mine.is_finished(),
            "the admission did not wait for the lock"
        );
        other.commit().await.unwrap();
        assert_eq!(mine.await.unwrap().unwrap(), Admission::Monthly);
    }
}
