//! Creating a job scan: plan the chunks, then write the scan row, its chunk rows and one
//! queue job per chunk in one transaction (`JobStore::create_scan`), so a submitter that
//! dies half-way leaves nothing behind and a worker never claims a job whose chunk row is
//! missing. The submit path of `portscope-api jobs submit`, `cargo xtask cluster` and the
//! self-scan API ([`create`] with the `scans` row of the same id).

use crate::jobs::plan::ChunkSpec;
use crate::jobs::{now_ms, ChunkJob};
use crate::model::Status;
use crate::store::jobs::{JobStore, NewChunk, NewScan, ScanRow};
use crate::store::NewScan as NewSelfScan;
use portscope_proto::ScanKind;
use std::time::Duration;

/// Creates a scan of `kind` made of `chunks` with its queue jobs; returns the scan id.
pub async fn submit(
    store: &JobStore,
    kind: ScanKind,
    chunks: &[ChunkSpec],
) -> Result<String, sqlx::Error> {
    let scan_id = uuid::Uuid::new_v4().to_string();
    create(store, &scan_id, kind, 1, None, chunks).await?;
    Ok(scan_id)
}

/// Creates job scan `scan_id` of `kind` made of `chunks`, their queue jobs at engine
/// `priority`, and the self-scan row `selfscan` (same id) if given, in one transaction.
pub async fn create(
    store: &JobStore,
    scan_id: &str,
    kind: ScanKind,
    priority: u8,
    selfscan: Option<NewSelfScan<'_>>,
    chunks: &[ChunkSpec],
) -> Result<(), sqlx::Error> {
    let kind = serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "custom".into());
    let rows =
        new_chunks(scan_id, priority, chunks).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    store
        .create_scan(
            &NewScan {
                id: scan_id,
                kind: &kind,
                created_at_ms: now_ms(),
                selfscan,
            },
            &rows,
            crate::jobs::queue::chunk_spec(),
        )
        .await
}

/// The chunk rows of scan `scan_id` for `chunks`, numbered from 0, each with its queue job
/// (a fresh id, and the [`ChunkJob`] payload at engine `priority`).
pub fn new_chunks(
    scan_id: &str,
    priority: u8,
    chunks: &[ChunkSpec],
) -> Result<Vec<NewChunk>, serde_json::Error> {
    chunks
        .iter()
        .zip(0u32..)
        .map(|(c, n)| {
            let job = ChunkJob {
                scan_id: scan_id.to_owned(),
                chunk: n,
                targets: c.targets.clone(),
                ports: c.ports.clone(),
                priority,
            };
            Ok(NewChunk {
                chunk: n,
                targets: c.targets.clone(),
                ports: c.ports.clone(),
                probes: c.probes,
                job_id: crate::jobs::queue::new_job_id(),
                payload: serde_json::to_string(&job)?,
            })
        })
        .collect()
}

/// Waits until scan `id` is no longer running (polling every 50 ms, at most `limit`);
/// returns its final row, or `None` on timeout.
pub async fn wait_finished(
    store: &JobStore,
    id: &str,
    limit: Duration,
) -> Result<Option<ScanRow>, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(row) = store.scan(id).await? {
            if row.status != Status::Running {
                return Ok(Some(row));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
