//! Scans as durable chunk jobs that any worker node can run (issue 8).
//!
//! A job scan is a row plus chunk rows in the store (`store::jobs`) and one queue job per
//! chunk in apalis's SQL storage ([`queue`]). `portscope-api worker` ([`worker`]) claims
//! chunk jobs, runs each on its local engine over the Unix socket ([`engine_run`]) and
//! commits the chunk's results and its completion in one transaction, keyed by (scan,
//! address, port); apalis then acks the job. A node that dies stops heartbeating; apalis
//! re-enqueues its claimed jobs and other workers re-run them. [`plan`] cuts a scan into
//! chunks; [`submit`] creates a scan, its chunks and their queue jobs in one transaction.
//! A job scan's status is the API's [`crate::model::Status`] (`running`, `complete`,
//! `failed`); the database is the store's [`crate::store::Db`].

pub mod cli;
pub mod connector;
pub mod engine_run;
pub mod plan;
pub mod queue;
pub mod reason;
pub mod submit;
pub mod worker;

use crate::jobs::reason::{EngineReason, FailReason};
use portscope_proto::RejectCode;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The queue payload of one chunk: which scan, which chunk, and what to send (a copy of the
/// chunk row, so a worker needs no read before it starts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkJob {
    /// The job scan's id.
    pub scan_id: String,
    /// The chunk's number within the scan.
    pub chunk: u32,
    /// Addresses to scan.
    pub targets: Vec<String>,
    /// Port spec (e.g. `1-16384`).
    pub ports: String,
    /// The engine's queue priority (0..=9, higher first; a fast self-scan's chunk is 5).
    #[serde(default = "default_priority")]
    pub priority: u8,
}

fn default_priority() -> u8 {
    1
}

/// Status of one chunk, stored as text (a chunk being run is `pending` here and `Running`
/// in the queue: the queue owns claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkStatus {
    /// Not committed yet.
    Pending,
    /// Results committed.
    Done,
}

/// Why one run of a chunk failed (the queue retries the job), as its `last_error` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// No engine connection within the connect timeout.
    #[error("engine_unreachable: {0}")]
    EngineUnreachable(String),
    /// The engine refused the submit (`busy`, `policy`, ...).
    #[error("engine_rejected: {code}: {message}")]
    EngineRejected {
        /// The engine's reject code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The engine ended the scan without completing it.
    #[error("engine_failed: {0}")]
    EngineFailed(String),
    /// The engine connection dropped mid-chunk.
    #[error("engine_lost")]
    EngineLost,
    /// The chunk took longer than its bound.
    #[error("timeout after {0} s")]
    Timeout(u64),
    /// The database stayed unreachable past the retry bound.
    #[error("database: {0}")]
    Database(String),
    /// The chunk is not in the store.
    #[error("no such chunk")]
    NoSuchChunk,
    /// The worker was stopping; the run was given up.
    #[error("worker stopped")]
    Stopped,
}

impl ChunkError {
    /// Whether another run cannot end differently: the engine refused the chunk by policy
    /// or as invalid (a `busy` engine is retried like any other failure).
    pub fn is_final(&self) -> bool {
        matches!(self, ChunkError::EngineRejected { code, .. }
            if matches!(RejectCode::parse(code), Some(RejectCode::Policy | RejectCode::Invalid)))
    }

    /// What a self-scan that fails on this error says: the engine's own reason or
    /// rejection, `engine_unavailable` when it was never reached, else `chunk_failed`.
    pub fn fail_reason(&self) -> FailReason {
        match self {
            ChunkError::EngineUnreachable(_) => FailReason::EngineUnavailable,
            ChunkError::EngineRejected { code, message } => FailReason::Rejected {
                code: code.clone(),
                message: message.clone(),
            },
            ChunkError::EngineFailed(reason) => FailReason::Engine(EngineReason::parse(reason)),
            _ => FailReason::ChunkFailed,
        }
    }
}

macro_rules! text_enum {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// The stored word.
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(<$t>::$v),)*
                    other => Err(format!("unknown {} {other:?}", stringify!($t))),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(ChunkStatus { Pending => "pending", Done => "done" });

/// A finisher's loop (both services have one): `pass` runs, then again when `changed` is
/// notified (this process's worker committed a chunk, or, on PostgreSQL, any process did:
/// `store::notify`) or after `poll` (the safety net), for ever. The wake-up is registered before each pass, so a commit during a pass
/// wakes the next one.
pub async fn every_change<F, Fut>(changed: &tokio::sync::Notify, poll: std::time::Duration, pass: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        let woken = changed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        pass().await;
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_as_text() {
        for s in [ChunkStatus::Pending, ChunkStatus::Done] {
            assert_eq!(s.as_str().parse::<ChunkStatus>().unwrap(), s);
        }
        assert!("Done".parse::<ChunkStatus>().is_err());
    }
}
