//! Creating a job scan: plan the chunks, write the scan and chunk rows in one transaction,
//! then queue one job per chunk. The small submit path of `portscope-api jobs submit` and
//! `cargo xtask cluster`, until the HTTP APIs create their scans here.
//!
//! Rows first, then jobs: a worker never claims a job whose chunk row is missing. A
//! submitter that dies between the two leaves a scan whose unqueued chunks stay pending
//! (visible in `scan_chunks`, not lost).

use crate::jobs::plan::ChunkSpec;
use crate::jobs::queue::Queue;
use crate::jobs::{now_ms, ChunkJob};
use crate::store::jobs::{JobStore, NewChunk, NewScan};
use portscope_proto::ScanKind;
use std::time::Duration;

/// Creates a scan of `kind` made of `chunks` and queues its jobs; returns the scan id.
pub async fn submit(
    queue: &mut Queue,
    store: &JobStore,
    kind: ScanKind,
    chunks: &[ChunkSpec],
) -> Result<String, sqlx::Error> {
    let scan_id = uuid::Uuid::new_v4().to_string();
    let kind = serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "custom".into());
    let rows: Vec<NewChunk> = chunks
        .iter()
        .zip(0u32..)
        .map(|(c, n)| NewChunk {
            chunk: n,
            targets: c.targets.clone(),
            ports: c.ports.clone(),
            probes: c.probes,
            job_id: Queue::new_id(),
        })
        .collect();
    store
        .create_scan(
            &NewScan {
                id: &scan_id,
                kind: &kind,
                created_at_ms: now_ms(),
            },
            &rows,
        )
        .await?;
    for row in rows {
        let job = ChunkJob {
            scan_id: scan_id.clone(),
            chunk: row.chunk,
            targets: row.targets,
            ports: row.ports,
        };
        queue.push_with_id(&row.job_id, job).await?;
    }
    Ok(scan_id)
}

/// Waits until scan `id` is no longer running (polling every 50 ms, at most `limit`);
/// returns its final row, or `None` on timeout.
pub async fn wait_finished(
    store: &JobStore,
    id: &str,
    limit: Duration,
) -> Result<Option<crate::store::jobs::ScanRow>, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(row) = store.scan(id).await? {
            if row.status != crate::jobs::JobScanStatus::Running {
                return Ok(Some(row));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
