//! The reads of the job tables ([`JobStore`]): a job scan, its chunks and its port
//! results, as the worker, the cluster tests and `jobs status` read them.

use super::jobs::{ChunkRow, JobStore, ScanRow};
use super::on_db;
use crate::jobs::ChunkStatus;
use crate::model::Status;
use portscope_core::results::{PortResult, PortState, Reason};
use sqlx::FromRow;
use std::net::IpAddr;

#[derive(FromRow)]
struct RawScan {
    id: String,
    kind: String,
    status: Status,
    fail_reason: Option<String>,
    chunks_total: i64,
    chunks_done: i64,
    created_at_ms: i64,
    finished_at_ms: Option<i64>,
}

#[derive(FromRow)]
struct RawChunk {
    chunk: i64,
    targets: String,
    ports: String,
    probes: i64,
    status: ChunkStatus,
    job_id: Option<String>,
    runs: i64,
    first_node: Option<String>,
    node: Option<String>,
    closed: Option<i64>,
    sent: Option<i64>,
}

#[derive(FromRow)]
struct RawResult {
    address: String,
    port: i32,
    state: String,
    reason: String,
    ttl: Option<i16>,
    icmp_type: Option<i16>,
    icmp_code: Option<i16>,
}

impl JobStore {
    /// The scan, if it exists.
    pub async fn scan(&self, id: &str) -> Result<Option<ScanRow>, sqlx::Error> {
        let raw: Option<RawScan> = on_db!(&self.db, |p| {
            sqlx::query_as(
                "SELECT id, kind, status, fail_reason, chunks_total, chunks_done, created_at_ms,
                        finished_at_ms
                 FROM job_scans WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
            .await?
        });
        raw.map(|r| {
            Ok(ScanRow {
                status: r.status,
                id: r.id,
                kind: r.kind,
                fail_reason: r.fail_reason,
                chunks_total: r.chunks_total as u64,
                chunks_done: r.chunks_done as u64,
                created_at_ms: r.created_at_ms,
                finished_at_ms: r.finished_at_ms,
            })
        })
        .transpose()
    }

    /// The scan's chunks, by number.
    pub async fn chunks(&self, scan_id: &str) -> Result<Vec<ChunkRow>, sqlx::Error> {
        let rows: Vec<RawChunk> = on_db!(&self.db, |p| {
            sqlx::query_as(
                "SELECT chunk, targets, ports, probes, status, job_id, runs, first_node, node,
                        closed, sent
                 FROM scan_chunks WHERE scan_id = $1 ORDER BY chunk",
            )
            .bind(scan_id)
            .fetch_all(p)
            .await?
        });
        rows.into_iter()
            .map(|r| {
                Ok(ChunkRow {
                    chunk: r.chunk as u32,
                    targets: r.targets.split(',').map(str::to_owned).collect(),
                    ports: r.ports,
                    probes: r.probes as u64,
                    status: r.status,
                    job_id: r.job_id,
                    runs: r.runs as u64,
                    first_node: r.first_node,
                    node: r.node,
                    closed: r.closed.map(|v| v as u64),
                    sent: r.sent.map(|v| v as u64),
                })
            })
            .collect()
    }

    /// The scan's stored port results (open and filtered), by address and port.
    pub async fn results(&self, scan_id: &str) -> Result<Vec<PortResult>, sqlx::Error> {
        let rows: Vec<RawResult> = on_db!(&self.db, |p| {
            sqlx::query_as(
                "SELECT address, port, state, reason, ttl, icmp_type, icmp_code
                 FROM port_results WHERE scan_id = $1 ORDER BY address, port",
            )
            .bind(scan_id)
            .fetch_all(p)
            .await?
        });
        rows.into_iter().map(result_row).collect()
    }
}

pub(super) fn decode(col: &str, e: String) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: col.to_owned(),
        source: e.into(),
    }
}

/// A stored text column parsed as one of our enums.
pub(super) fn parse<T: std::str::FromStr<Err = String>>(
    text: &str,
    col: &str,
) -> Result<T, sqlx::Error> {
    text.parse().map_err(|e: String| decode(col, e))
}

fn result_row(r: RawResult) -> Result<PortResult, sqlx::Error> {
    let small = |v: Option<i16>| v.map(|v| v as u8);
    Ok(PortResult {
        ip: r
            .address
            .parse::<IpAddr>()
            .map_err(|e| decode("address", e.to_string()))?,
        port: r.port as u16,
        proto: Default::default(),
        state: serde_json::from_value::<PortState>(r.state.into())
            .map_err(|e| decode("state", e.to_string()))?,
        reason: serde_json::from_value::<Reason>(r.reason.into())
            .map_err(|e| decode("reason", e.to_string()))?,
        ttl: small(r.ttl),
        icmp_type: small(r.icmp_type),
        icmp_code: small(r.icmp_code),
    })
}
