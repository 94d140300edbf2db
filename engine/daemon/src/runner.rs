//! Running one scan: a tokio task keeps a few chunks in flight as engine scans (each a
//! blocking job reading its `ScanHandle`), hands each complete chunk to its caller, and
//! returns how the scan ended: complete, or failed on cancel, timeout, shutdown or an engine
//! refusal.
//!
//! The engine's threads do the packet work; this module only waits on handles, off the
//! async workers (`spawn_blocking`). It knows nothing of the daemon's state: the caller
//! passes what to do with a chunk and records the end itself.

use crate::scans::StopRx;
use portscope_core::results::{PortResult, PortState, Reason};
use portscope_core::targets::PortSet;
use portscope_engine::{Engine, Outcome as EngineOutcome, ScanEvent, ScanPlan, SubmitError};
use portscope_proto::FailReason;
use portscope_proto::Outcome;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How long a stopped scan waits for its chunk jobs to wind down (they poll the cancel flag
/// every 50 ms; the engine ends a cancelled scan at its next send-loop turn).
const WIND_DOWN: Duration = Duration::from_secs(5);
/// How long a chunk waits before asking again when all engine slots are taken.
const BUSY_RETRY: Duration = Duration::from_millis(20);

/// Replies counted from port results, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Replies {
    pub syn_ack: AtomicU64,
    pub rst: AtomicU64,
    pub icmp: AtomicU64,
}

impl Replies {
    /// Counts the reply behind one result (silent pairs had none).
    pub(crate) fn count(&self, r: &PortResult) {
        let c = match (r.state, r.reason) {
            (PortState::Open, _) => &self.syn_ack,
            (PortState::Closed, _) => &self.rst,
            (PortState::Filtered, Reason::IcmpUnreachable) => &self.icmp,
            (PortState::Filtered, _) => return,
        };
        c.fetch_add(1, Relaxed);
    }
}

/// What a scan runs with besides its plan.
#[derive(Debug, Clone)]
pub(crate) struct Runner {
    pub engine: Arc<Engine>,
    pub replies: Arc<Replies>,
    /// A running scan taking longer fails with `timeout`.
    pub scan_timeout: Duration,
    /// Chunks in flight at once.
    pub chunks_in_flight: usize,
}

/// How a scan ended.
#[derive(Debug)]
pub(crate) struct Ended {
    pub outcome: Outcome,
    /// Probes sent by all its chunks.
    pub sent: u64,
    pub took: Duration,
}

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

impl Runner {
    /// Drives a scan through its chunks, calling `on_chunk(chunk, results, closed)` for
    /// each complete chunk, until it is complete or `stop` says otherwise.
    pub(crate) async fn drive(
        &self,
        plan: ScanPlan,
        ranges: Vec<Range<usize>>,
        mut stop: StopRx,
        mut on_chunk: impl FnMut(u32, Vec<PortResult>, u64) + Send,
    ) -> Ended {
        let started = Instant::now();
        // Checked: an absurd `--scan-timeout` (`1000000y`) means no deadline, not a panic.
        let deadline = tokio::time::Instant::now().checked_add(self.scan_timeout);
        let in_flight = self.chunks_in_flight.max(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let plan = Arc::new(plan);
        let mut jobs: JoinSet<(u32, Result<ChunkDone, FailReason>)> = JoinSet::new();
        let mut next = 0usize;
        let mut sent = 0u64;
        let failure: Option<FailReason> = loop {
            while jobs.len() < in_flight && next < ranges.len() {
                let (engine, plan, cancel, replies) = (
                    Arc::clone(&self.engine),
                    Arc::clone(&plan),
                    Arc::clone(&cancel),
                    Arc::clone(&self.replies),
                );
                let (chunk, range) = (next as u32, ranges[next].clone());
                jobs.spawn_blocking(move || {
                    (chunk, run_chunk(&engine, &plan, range, &cancel, &replies))
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
                        Ok(()) => stop.borrow().unwrap_or(FailReason::Cancelled),
                        Err(_) => FailReason::Shutdown,
                    });
                }
                _ = sleep_until(deadline) => break Some(FailReason::Timeout),
                joined = jobs.join_next() => match joined {
                    Some(Ok((chunk, Ok(done)))) => {
                        sent += done.sent;
                        if !done.complete {
                            break Some(FailReason::EngineError);
                        }
                        on_chunk(chunk, done.results, done.closed);
                    }
                    Some(Ok((_, Err(why)))) => break Some(why),
                    Some(Err(_)) => break Some(FailReason::EngineError), // a job panicked
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
        Ended {
            outcome: failure.map_or(Outcome::Complete, FailReason::outcome),
            sent,
            took: started.elapsed(),
        }
    }
}

/// Sleeps until `deadline`, forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs the ports `range` (indices into `base.ports`) of a scan as one engine scan and
/// collects its results. Blocking. `Err` when the engine never started it.
fn run_chunk(
    engine: &Engine,
    base: &ScanPlan,
    range: Range<usize>,
    cancel: &AtomicBool,
    replies: &Replies,
) -> Result<ChunkDone, FailReason> {
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
        source_port: base.source_port,
    };
    let mut handle = loop {
        if cancel.load(Relaxed) {
            return Err(FailReason::Cancelled);
        }
        match engine.submit(plan.clone()) {
            Ok(h) => break h,
            Err(SubmitError::Busy(_)) => std::thread::sleep(BUSY_RETRY),
            Err(SubmitError::Policy(_)) => return Err(FailReason::Policy),
            Err(_) => return Err(FailReason::EngineError),
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
