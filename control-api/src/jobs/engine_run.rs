//! Running one chunk on the local engine: a connection from the worker's
//! [`EngineConnector`] (a fresh Unix-socket one per chunk, or the API's shared one), one
//! `Submit`, the `Ports` events collected until `Finished`. Bounded: the connection
//! must come up within the connect timeout and the scan must finish within its own bound,
//! else the scan is cancelled and the run fails (the queue retries the job). A dropped
//! connection fails the run at once: the engine may be dead, and another node can run it.

use crate::engine::{EngineClient, EngineNotice};
use crate::jobs::connector::EngineConnector;
use crate::jobs::{ChunkError, ChunkJob};
use portscope_core::results::PortResult;
use portscope_proto::{Event, Outcome, Request, ScanKind};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{timeout_at, Instant};

/// What one chunk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChunkResult {
    /// Open and filtered ports.
    pub results: Vec<PortResult>,
    /// Closed ports (counted by the engine, not listed).
    pub closed: u64,
    /// Probes sent.
    pub sent: u64,
    /// The engine's scan time of the chunk, ms.
    pub duration_ms: u64,
}

/// Bounds of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// Longest wait for the engine connection.
    pub connect: Duration,
    /// Longest a chunk may take once submitted.
    pub scan: Duration,
}

/// Closes the run's connection however the run ends (or if it is dropped).
struct Closing<'a>(&'a dyn EngineClient);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Submits `job` to an engine of `engines` as scan `engine_id` and collects its results.
/// `running` is sent once the engine says the chunk runs (queue position 0).
pub async fn run_chunk(
    engines: &dyn EngineConnector,
    engine_id: &str,
    job: &ChunkJob,
    limits: RunLimits,
    running: oneshot::Sender<()>,
) -> Result<ChunkResult, ChunkError> {
    let client = engines.connect().await;
    let _closing = Closing(client.as_ref());
    let client = client.as_ref();
    let mut running = Some(running);
    let connect_by = Instant::now() + limits.connect;
    loop {
        match timeout_at(connect_by, client.recv()).await {
            Ok(Some(EngineNotice::Connected)) => break,
            Ok(Some(_)) => {}
            Ok(None) => return Err(ChunkError::EngineLost),
            Err(_) => {
                return Err(ChunkError::EngineUnreachable(format!(
                    "{engines:?} not reachable in {} ms",
                    limits.connect.as_millis()
                )))
            }
        }
    }
    client
        .send(Request::Submit {
            id: engine_id.to_owned(),
            targets: job.targets.clone(),
            ports: job.ports.clone(),
            kind: ScanKind::Custom,
            priority: job.priority,
        })
        .await
        .map_err(|_| ChunkError::EngineLost)?;
    let deadline = Instant::now() + limits.scan;
    let mut found = ChunkResult::default();
    loop {
        let notice = match timeout_at(deadline, client.recv()).await {
            Ok(Some(n)) => n,
            Ok(None) => return Err(ChunkError::EngineLost),
            Err(_) => {
                let _ = client
                    .send(Request::Cancel {
                        id: engine_id.to_owned(),
                    })
                    .await;
                return Err(ChunkError::Timeout(limits.scan.as_secs()));
            }
        };
        let event = match notice {
            EngineNotice::Event(e) => e,
            EngineNotice::Disconnected => return Err(ChunkError::EngineLost),
            EngineNotice::Connected => continue,
        };
        if event.scan_id().is_some_and(|id| id != engine_id) {
            continue;
        }
        match event {
            Event::Rejected { code, message, .. } => {
                return Err(ChunkError::EngineRejected { code, message })
            }
            Event::Accepted {
                queue_position: 0, ..
            }
            | Event::Progress {
                queue_position: 0, ..
            } => {
                if let Some(tx) = running.take() {
                    let _ = tx.send(());
                }
            }
            Event::Ports {
                results, closed, ..
            } => {
                found.results.extend(results);
                found.closed += closed;
            }
            Event::Finished {
                outcome,
                counts,
                duration_ms,
                ..
            } => {
                return match outcome {
                    Outcome::Complete => {
                        found.sent = counts.sent;
                        found.duration_ms = duration_ms;
                        Ok(found)
                    }
                    Outcome::Failed(reason) => Err(ChunkError::EngineFailed(reason)),
                };
            }
            Event::Error { message } => return Err(ChunkError::EngineFailed(message)),
            _ => {}
        }
    }
}
