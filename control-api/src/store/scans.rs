//! Self-scan rows and their ports (`scans`, `scan_ports`): [`Store`], on either backend.
//!
//! Status values: `queued`, `running`, `complete`, `failed`. A self-scan is a job scan of
//! the same id: its row is created, moved through `running` to `engine_done = 1` and
//! failed by the job statements in `store::jobs` (in the transactions of the submit and of
//! each chunk commit); here it is read, completed (banners, PTR), expired and purged. A scan
//! whose chunks are all done but whose banners / PTR are still being fetched stays
//! `running` with `engine_done = 1`, so any API process's finisher can finish it.

use super::{on_db, Db};
use crate::model::{ScanType, Status};
use sqlx::FromRow;
use std::path::Path;

/// A `scans` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct ScanRow {
    /// API-chosen id, also the job scan's id.
    pub id: String,
    /// Target (normalised client address).
    pub ip: String,
    /// `fast` / `deep`.
    pub scan_type: ScanType,
    /// `queued` / `running` / `complete` / `failed`.
    pub status: Status,
    /// Unused since self-scans are job scans (0; the column stays for old rows).
    pub submitted: i64,
    /// Whether every chunk is committed (banners / PTR may be pending).
    pub engine_done: i64,
    /// 0 once a chunk is committed; `NULL` while queued (the position is counted).
    pub queue_position: Option<i64>,
    /// Chunks done.
    pub chunks_complete: i64,
    /// Chunks in all (0 until accepted).
    pub total_chunks: i64,
    /// Why it failed.
    pub fail_reason: Option<String>,
    /// Reverse DNS name.
    pub ptr_record: Option<String>,
    /// Wall time from the first chunk claim to the last chunk commit, ms.
    pub duration_ms: Option<i64>,
    /// Creation, Unix ms.
    pub created_at_ms: i64,
    /// Completion or failure, Unix seconds.
    pub completed_at: Option<i64>,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

impl ScanRow {
    /// Whether the status is final.
    pub fn is_final(&self) -> bool {
        matches!(self.status, Status::Complete | Status::Failed)
    }
}

/// A `scan_ports` row.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PortRow {
    /// TCP port.
    pub port: i64,
    /// `open` / `filtered`.
    pub state: String,
    /// Grabbed banner.
    pub banner: Option<String>,
}

/// A new scan.
#[derive(Debug, Clone)]
pub struct NewScan<'a> {
    /// Id.
    pub id: &'a str,
    /// Target.
    pub ip: &'a str,
    /// Type.
    pub scan_type: ScanType,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix seconds.
    pub expires_at: i64,
}

const ACTIVE: &str = "status IN ('queued', 'running')";

/// The database.
#[derive(Debug, Clone)]
pub struct Store {
    pub(super) pool: Db,
}

impl Store {
    /// Opens `db`, a SQLite file path (the default; created if missing) or a
    /// `postgres://` URL, and runs the migrations.
    pub async fn open(db: &Path) -> Result<Store, sqlx::Error> {
        Ok(Store {
            pool: Db::open(db).await?,
        })
    }

    /// On an open, migrated pool.
    pub fn new(pool: Db) -> Store {
        Store { pool }
    }

    /// The connection pool (every table group shares the database).
    pub fn pool(&self) -> &Db {
        &self.pool
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// One scan by id.
    pub async fn get(&self, id: &str) -> Result<Option<ScanRow>, sqlx::Error> {
        self.pool
            .optional("SELECT * FROM scans WHERE id = $1", id)
            .await
    }

    /// The queued or running scan of this target and type, if any.
    pub async fn active(&self, ip: &str, t: ScanType) -> Result<Option<ScanRow>, sqlx::Error> {
        on_db!(&self.pool, |p| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT * FROM scans WHERE ip = $1 AND scan_type = $2 AND {ACTIVE} \
                 ORDER BY created_at_ms DESC LIMIT 1"
            )))
            .bind(ip)
            .bind(t.as_str())
            .fetch_optional(p)
            .await
        })
    }

    /// The newest unexpired scan of this target and type.
    pub async fn latest(
        &self,
        ip: &str,
        t: ScanType,
        now_secs: i64,
    ) -> Result<Option<ScanRow>, sqlx::Error> {
        on_db!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT * FROM scans WHERE ip = $1 AND scan_type = $2 AND expires_at > $3 \
                 ORDER BY created_at_ms DESC LIMIT 1",
            )
            .bind(ip)
            .bind(t.as_str())
            .bind(now_secs)
            .fetch_optional(p)
            .await
        })
    }

    /// All queued and running scans, oldest first.
    pub async fn non_final(&self) -> Result<Vec<ScanRow>, sqlx::Error> {
        on_db!(&self.pool, |p| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT * FROM scans WHERE {ACTIVE} ORDER BY created_at_ms"
            )))
            .fetch_all(p)
            .await
        })
    }

    /// Queued scans created before `created_at_ms` (a local queue estimate).
    pub async fn queued_before(&self, created_at_ms: i64) -> Result<i64, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let (n,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM scans WHERE status = 'queued' AND created_at_ms < $1",
            )
            .bind(created_at_ms)
            .fetch_one(p)
            .await?;
            Ok(n)
        })
    }

    /// Completes a scan with its banners and PTR name, and queues the delivery of its
    /// callbacks in the same transaction. Returns whether it changed.
    pub async fn complete(
        &self,
        id: &str,
        ptr: Option<&str>,
        banners: &[(u16, String)],
        completed_at: i64,
        expires_at: i64,
    ) -> Result<bool, sqlx::Error> {
        let postgres = matches!(self.pool, Db::Postgres(_));
        on_db!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            for (port, banner) in banners {
                sqlx::query("UPDATE scan_ports SET banner = $1 WHERE scan_id = $2 AND port = $3")
                    .bind(banner)
                    .bind(id)
                    .bind(i64::from(*port))
                    .execute(&mut *tx)
                    .await?;
            }
            let r = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE scans SET status = 'complete', ptr_record = $1, completed_at = $2, \
                 expires_at = $3, queue_position = 0 WHERE id = $4 AND {ACTIVE}"
            )))
            .bind(ptr)
            .bind(completed_at)
            .bind(expires_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            super::callbacks::queue_callbacks!(tx, postgres, id);
            tx.commit().await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// A scan's ports, by port.
    pub async fn ports(&self, id: &str) -> Result<Vec<PortRow>, sqlx::Error> {
        self.pool
            .all(
                "SELECT port, state, banner FROM scan_ports WHERE scan_id = $1 ORDER BY port",
                id,
            )
            .await
    }

    /// Unexpired scans per status.
    pub async fn count_by_status(&self, now_secs: i64) -> Result<Vec<(Status, i64)>, sqlx::Error> {
        self.pool
            .all(
                "SELECT status, COUNT(*) FROM scans WHERE expires_at > $1 GROUP BY status",
                now_secs,
            )
            .await
    }

    /// Number of scans (any state).
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM scans")
                .fetch_one(p)
                .await?;
            Ok(n)
        })
    }

    /// Deletes every scan expired at `now_secs`, with its ports and callbacks. Returns the
    /// number of scans deleted.
    pub async fn purge(&self, now_secs: i64) -> Result<u64, sqlx::Error> {
        on_db!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            for table in ["scan_ports", "callbacks"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE scan_id IN \
                     (SELECT id FROM scans WHERE expires_at <= $1)"
                )))
                .bind(now_secs)
                .execute(&mut *tx)
                .await?;
            }
            let r = sqlx::query("DELETE FROM scans WHERE expires_at <= $1")
                .bind(now_secs)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(r.rows_affected())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::port_result;
    use crate::jobs::plan::ChunkSpec;
    use crate::store::callbacks::CallbackState;
    use crate::store::jobs::{ChunkDone, JobStore};
    use crate::store::testdb::both_backends;
    use portscope_core::results::PortState;
    use portscope_proto::ScanKind;

    /// Creates self-scan `id` of `ip` (one chunk of ports 1-100) as a POST does.
    async fn post(jobs: &JobStore, id: &str, ip: &str, t: ScanType, created_at_ms: i64) {
        let chunk = ChunkSpec {
            targets: vec![ip.into()],
            ports: "1-100".into(),
            probes: 100,
        };
        let row = NewScan {
            id,
            ip,
            scan_type: t,
            created_at_ms,
            expires_at: 100,
        };
        crate::jobs::submit::create(jobs, id, ScanKind::Fast, 5, Some(row), &[chunk])
            .await
            .unwrap();
    }

    both_backends!(lifecycle_and_numbered_placeholders, |db| async move {
        crate::store::queue::migrate_queue(&db).await.unwrap();
        let s = Store::new(db.clone());
        let jobs = JobStore::new(db);
        post(&jobs, "a", "198.18.0.7", ScanType::Fast, 1_000).await;
        assert_eq!(
            s.active("198.18.0.7", ScanType::Fast)
                .await
                .unwrap()
                .unwrap()
                .id,
            "a"
        );
        assert!(s
            .active("198.18.0.7", ScanType::Deep)
            .await
            .unwrap()
            .is_none());
        // Its one chunk commits: running, every chunk done, its open and filtered ports.
        let ip = "198.18.0.7".parse().unwrap();
        let results = [
            port_result(ip, 22, PortState::Open),
            port_result(ip, 80, PortState::Open),
            port_result(ip, 81, PortState::Filtered),
        ];
        let done = ChunkDone {
            node: "n1",
            results: &results,
            closed: 97,
            sent: 100,
            now_ms: 2_000,
            duration_ms: 55,
        };
        jobs.commit_chunk("a", 0, done).await.unwrap();
        let r = s.get("a").await.unwrap().unwrap();
        assert_eq!(
            (
                r.status.as_str(),
                r.chunks_complete,
                r.total_chunks,
                r.engine_done
            ),
            ("running", 1, 1, 1)
        );
        assert_eq!(s.ports("a").await.unwrap().len(), 3);
        assert!(s
            .complete("a", Some("x.example"), &[(22, "SSH-2.0".into())], 10, 50)
            .await
            .unwrap());
        assert!(
            !s.complete("a", None, &[], 11, 51).await.unwrap(),
            "final rows stay final"
        );
        assert!(
            !jobs.fail_scan("a", "late", "late", 11_000).await.unwrap(),
            "final rows stay final"
        );
        let r = s.get("a").await.unwrap().unwrap();
        assert_eq!((r.status.as_str(), r.expires_at), ("complete", 50));
        assert_eq!(
            s.ports("a").await.unwrap()[0].banner.as_deref(),
            Some("SSH-2.0")
        );
        assert!(s
            .latest("198.18.0.7", ScanType::Fast, 49)
            .await
            .unwrap()
            .is_some());
        assert!(s
            .latest("198.18.0.7", ScanType::Fast, 50)
            .await
            .unwrap()
            .is_none());
        assert_eq!(s.purge(50).await.unwrap(), 1);
        assert_eq!(s.count().await.unwrap(), 0);
        // Callbacks: at most MAX_CALLBACKS, a repeat is no new one; pending while the scan
        // is live, queued by the transaction that fails it.
        post(&jobs, "b", "198.18.0.8", ScanType::Deep, 2_000).await;
        for n in 0..crate::store::MAX_CALLBACKS {
            assert!(s.add_callback("b", &format!("http://h/{n}")).await.unwrap());
        }
        assert!(s.add_callback("b", "http://h/0").await.unwrap());
        assert!(!s.add_callback("b", "http://h/new").await.unwrap());
        s.set_callback("b", "http://h/1", CallbackState::Delivered, 1)
            .await
            .unwrap();
        let state = |url: &'static str| {
            let s = s.clone();
            async move { s.callback_state("b", url).await.unwrap() }
        };
        assert_eq!(state("http://h/0").await, Some(CallbackState::Pending));
        assert!(s.final_with_pending_callbacks().await.unwrap().is_empty());
        assert!(jobs
            .fail_scan("b", "timeout", "timeout", 5_000)
            .await
            .unwrap());
        assert_eq!(state("http://h/0").await, Some(CallbackState::Queued));
        assert_eq!(state("http://h/1").await, Some(CallbackState::Delivered));
        assert_eq!(state("http://h/new").await, None);
        assert!(s.final_with_pending_callbacks().await.unwrap().is_empty());
        assert_eq!(
            s.count_by_status(0).await.unwrap(),
            vec![(Status::Failed, 1)]
        );
    });
}
