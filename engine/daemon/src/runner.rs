//! Running one scan: a tokio task keeps a few chunks in flight as engine scans (each a
//! blocking job reading its `ScanHandle`), reports each complete chunk, and ends the scan
//! as complete, or failed on cancel, timeout, shutdown or an engine refusal.
//!
//! The engine's threads do the packet work; this module only waits on handles, off the
//! async workers (`spawn_blocking`).

use crate::state::{reason, Replies, Shared};
use portscope_core::results::{PortResult, PortState};
use portscope_core::targets::PortSet;
use portscope_engine::{Engine, Outcome as EngineOutcome, ScanEvent, ScanPlan, SubmitError};
use portscope_proto::Outcome;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a stopped scan waits for its chunk jobs to wind down (they poll the cancel flag
/// every 50 ms; the engine ends a cancelled scan at its next send-loop turn).
const WIND_DOWN: Duration = Duration::from_secs(5);
/// How long a chunk waits before asking again when all engine slots are taken.
const BUSY_RETRY: Duration = Duration::from_millis(20);

/// What one chunk job found.
#[derive(Debug, Default)]
struct ChunkDone {
    /// Open and filtered results.
    results: Vec<PortResult>,
    closed: u64,
    sent: u64,
    /// The engine reported the chunk complete (not cancelled).
    complete: bool,
}

/// Drives scan `id` through its chunks, then reports how it ended.
pub(crate) async fn drive(
    shared: Arc<Shared>,
    id: String,
    plan: ScanPlan,
    ranges: Vec<Range<usize>>,
    mut stop: watch::Receiver<Option<&'static str>>,
) {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + shared.config.scan_timeout;
    let in_flight = shared.config.chunks_in_flight.max(1);
    let cancel = Arc::new(AtomicBool::new(false));
    let plan = Arc::new(plan);
    let mut jobs: JoinSet<(u32, Result<ChunkDone, &'static str>)> = JoinSet::new();
    let mut next = 0usize;
    let mut sent = 0u64;
    let failure: Option<&'static str> = loop {
        while jobs.len() < in_flight && next < ranges.len() {
            let (engine, plan, cancel) = (
                Arc::clone(&shared.engine),
                Arc::clone(&plan),
                Arc::clone(&cancel),
            );
            let shared = Arc::clone(&shared);
            let (chunk, range) = (next as u32, ranges[next].clone());
            jobs.spawn_blocking(move || {
                let r = run_chunk(&engine, &plan, range, &cancel, &shared.replies);
                (chunk, r)
            });
            next += 1;
        }
        if jobs.is_empty() {
            break None;
        }
        tokio::select! {
            biased;
            changed = stop.changed() => {
                break Some(match changed {
                    Ok(()) => stop.borrow().unwrap_or(reason::CANCELLED),
                    Err(_) => reason::SHUTDOWN,
                });
            }
            _ = tokio::time::sleep_until(deadline) => break Some(reason::TIMEOUT),
            joined = jobs.join_next() => match joined {
                Some(Ok((chunk, Ok(done)))) => {
                    sent += done.sent;
                    if !done.complete {
                        break Some(reason::ENGINE_ERROR);
                    }
                    shared.chunk_done(&id, chunk, done.results, done.closed);
                }
                Some(Ok((_, Err(why)))) => break Some(why),
                Some(Err(_)) => break Some(reason::ENGINE_ERROR), // a job panicked
                None => break None,
            },
        }
    };
    if failure.is_some() {
        cancel.store(true, Relaxed);
        let _ = tokio::time::timeout(WIND_DOWN, async {
            while let Some(j) = jobs.join_next().await {
                if let Ok((_, Ok(done))) = j {
                    sent += done.sent;
                }
            }
        })
        .await;
    }
    let outcome = match failure {
        None => Outcome::Complete,
        Some(why) => Outcome::Failed(why.to_string()),
    };
    shared.finish(&id, outcome, sent, started.elapsed());
}

/// Runs the ports `range` (indices into `base.ports`) of a scan as one engine scan and
/// collects its results. Blocking. `Err` when the engine never started it.
fn run_chunk(
    engine: &Engine,
    base: &ScanPlan,
    range: Range<usize>,
    cancel: &AtomicBool,
    replies: &Replies,
) -> Result<ChunkDone, &'static str> {
    let ports = base.ports.as_slice().get(range).unwrap_or_default();
    let plan = ScanPlan {
        targets: base.targets.clone(),
        ports: PortSet::from_ports(ports.iter().copied()),
        sources: base.sources,
        rate: base.rate,
        retries: base.retries,
        wait: base.wait,
        // All chunks of a scan share one fair share of the engine, so a deep scan with
        // several chunks in flight does not crowd out a fast scan.
        group: base.group,
    };
    let mut handle = loop {
        if cancel.load(Relaxed) {
            return Err(reason::CANCELLED);
        }
        match engine.submit(plan.clone()) {
            Ok(h) => break h,
            Err(SubmitError::Busy(_)) => std::thread::sleep(BUSY_RETRY),
            Err(SubmitError::Policy(_)) => return Err("policy"),
            Err(_) => return Err(reason::ENGINE_ERROR),
        }
    };
    let mut done = ChunkDone::default();
    let mut cancelled = false;
    loop {
        if !cancelled && cancel.load(Relaxed) {
            handle.cancel();
            cancelled = true;
        }
        match handle.next_event(Duration::from_millis(50)) {
            Some(ScanEvent::Port(r)) => {
                replies.count(&r);
                if r.state == PortState::Closed {
                    done.closed += 1;
                } else {
                    done.results.push(r);
                }
            }
            Some(ScanEvent::Finished(s)) => {
                done.sent = s.sent;
                done.complete = s.outcome == EngineOutcome::Complete;
                return Ok(done);
            }
            None => {}
        }
    }
}
