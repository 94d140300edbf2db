//! The scan book: every scan the daemon knows (queued, running, or finished and retained for
//! replay), the queue order, and retention. Pure bookkeeping under the state lock: it
//! returns the frames to broadcast and never does I/O or knows about clients.

use crate::clients::{frame, Frame};
use crate::config::DaemonConfig;
use portscope_core::results::{PortResult, PortState};
use portscope_engine::ScanPlan;
use portscope_proto::FailReason;
use portscope_proto::{Counts, Event, Outcome};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Results per `Ports` event, so that a frame stays far below `MAX_FRAME` (an IPv6 result
/// with ICMP fields encodes to at most about 170 bytes).
pub(crate) const PORTS_PER_EVENT: usize = 2048;

/// Tells a running scan's task to stop, and why.
pub(crate) type StopTx = watch::Sender<Option<FailReason>>;
/// What the scan task watches.
pub(crate) type StopRx = watch::Receiver<Option<FailReason>>;

/// Where a scan is in its life.
#[derive(Debug)]
enum Phase {
    /// Waiting for a running slot; the plan and its chunks are kept until it starts.
    Queued {
        plan: Box<ScanPlan>,
        ranges: Vec<Range<usize>>,
    },
    /// Its scan task runs the chunks; `stop` tells it to end early and why.
    Running { stop: StopTx },
    /// Over; `event` is its encoded `Finished`, kept for replay until `at + retention`.
    Finished { at: Instant, event: Frame },
}

/// One scan the daemon knows.
#[derive(Debug)]
struct Scan {
    /// Higher runs first among queued scans (ties: arrival order, kept by the queue).
    priority: u8,
    total_chunks: u32,
    chunks_complete: u32,
    /// Last queue position announced to clients (0 once running).
    position: u32,
    counts: Counts,
    /// Encoded `Ports` events so far, for replay.
    ports: Vec<Frame>,
    /// Bytes in `ports`.
    bytes: usize,
    phase: Phase,
}

/// A scan leaving the queue for its task.
#[derive(Debug)]
pub(crate) struct Started {
    pub id: String,
    pub plan: ScanPlan,
    pub ranges: Vec<Range<usize>>,
    pub stop: StopRx,
    /// Its `Progress { 0, 0/N }`.
    pub event: Frame,
}

/// What `Cancel` found.
#[derive(Debug)]
pub(crate) enum Cancelled {
    /// Not known: answer `engine_restarted`.
    Unknown(Frame),
    /// Already over: repeat its `Finished`.
    Finished(Frame),
    /// Running: its task was told to stop and will report `Finished`.
    Stopping,
    /// Queued: finish it now.
    Queued,
}

/// `Progress` of one scan.
pub(crate) fn progress(id: &str, queue_position: u32, chunks_complete: u32, total: u32) -> Frame {
    frame(&Event::Progress {
        id: id.to_string(),
        queue_position,
        chunks_complete,
        total_chunks: total,
    })
}

/// The answer about a scan the engine does not know: it must have restarted since.
pub(crate) fn unknown(id: &str) -> Frame {
    frame(&Event::Finished {
        id: id.to_string(),
        outcome: FailReason::Restarted.outcome(),
        counts: Counts::default(),
        duration_ms: 0,
    })
}

/// Every scan the daemon knows.
#[derive(Debug, Default)]
pub(crate) struct Book {
    scans: HashMap<String, Scan>,
    /// Queued scan ids, best first (priority descending, then arrival).
    queue: Vec<String>,
    running: usize,
    /// Finished scan ids, oldest first (retention order).
    finished: VecDeque<String>,
    /// Bytes of `ports` frames of finished scans.
    retained_bytes: usize,
}

impl Book {
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.scans.contains_key(id)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// Queues a new scan after every queued scan of higher or equal priority. Returns its
    /// `Accepted` frame (position 0 when it `starts_now`).
    pub(crate) fn enqueue(
        &mut self,
        id: String,
        priority: u8,
        plan: ScanPlan,
        ranges: Vec<Range<usize>>,
        starts_now: bool,
    ) -> Frame {
        let total_chunks = ranges.len() as u32;
        let at = self
            .queue
            .iter()
            .position(|q| self.scans.get(q).is_some_and(|s| s.priority < priority))
            .unwrap_or(self.queue.len());
        let position = if starts_now { 0 } else { at as u32 + 1 };
        self.scans.insert(
            id.clone(),
            Scan {
                priority,
                total_chunks,
                chunks_complete: 0,
                position,
                counts: Counts::default(),
                ports: Vec::new(),
                bytes: 0,
                phase: Phase::Queued {
                    plan: Box::new(plan),
                    ranges,
                },
            },
        );
        self.queue.insert(at, id.clone());
        frame(&Event::Accepted {
            id,
            queue_position: position,
            total_chunks,
        })
    }

    /// Moves the best queued scan to running.
    pub(crate) fn start_next(&mut self) -> Option<Started> {
        while !self.queue.is_empty() {
            let id = self.queue.remove(0);
            let Some(scan) = self.scans.get_mut(&id) else {
                continue;
            };
            let (stop, stop_rx) = watch::channel(None);
            let Phase::Queued { plan, ranges } =
                std::mem::replace(&mut scan.phase, Phase::Running { stop })
            else {
                continue; // only queued scans are in the queue
            };
            scan.position = 0;
            self.running += 1;
            let event = progress(&id, 0, 0, scan.total_chunks);
            return Some(Started {
                id,
                plan: *plan,
                ranges,
                stop: stop_rx,
                event,
            });
        }
        None
    }

    /// `Progress` for every queued scan whose position changed.
    pub(crate) fn reposition(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        for (i, id) in self.queue.iter().enumerate() {
            let pos = i as u32 + 1;
            if let Some(s) = self.scans.get_mut(id) {
                if s.position != pos {
                    s.position = pos;
                    out.push(progress(id, pos, 0, s.total_chunks));
                }
            }
        }
        out
    }

    /// Records a complete chunk of a running scan: its `Ports` (split so frames stay
    /// small) then `Progress`.
    pub(crate) fn chunk_done(
        &mut self,
        id: &str,
        chunk: u32,
        results: Vec<PortResult>,
        closed: u64,
    ) -> Vec<Frame> {
        let Some(scan) = self.scans.get_mut(id) else {
            return Vec::new();
        };
        if !matches!(scan.phase, Phase::Running { .. }) {
            return Vec::new();
        }
        for r in &results {
            match r.state {
                PortState::Open => scan.counts.open += 1,
                PortState::Filtered => scan.counts.filtered += 1,
                PortState::Closed => scan.counts.closed += 1,
            }
        }
        scan.counts.closed += closed;
        let pieces = results.len().div_ceil(PORTS_PER_EVENT).max(1);
        let mut results = results.into_iter();
        let mut out = Vec::with_capacity(pieces + 1);
        for i in 0..pieces {
            let f = frame(&Event::Ports {
                id: id.to_string(),
                chunk,
                results: results.by_ref().take(PORTS_PER_EVENT).collect(),
                closed: if i + 1 == pieces { closed } else { 0 },
            });
            scan.bytes += f.len();
            scan.ports.push(Arc::clone(&f));
            out.push(f);
        }
        scan.chunks_complete += 1;
        out.push(progress(id, 0, scan.chunks_complete, scan.total_chunks));
        out
    }

    /// Ends a running or queued scan; its `Finished`, or `None` if it was not live.
    pub(crate) fn finish(
        &mut self,
        id: &str,
        outcome: Outcome,
        sent: u64,
        took: Duration,
    ) -> Option<Frame> {
        let scan = self.scans.get_mut(id)?;
        match scan.phase {
            Phase::Finished { .. } => return None,
            Phase::Running { .. } => self.running -= 1,
            Phase::Queued { .. } => self.queue.retain(|q| q != id),
        }
        scan.counts.sent = sent;
        let f = frame(&Event::Finished {
            id: id.to_string(),
            outcome,
            counts: scan.counts,
            duration_ms: took.as_millis().try_into().unwrap_or(u64::MAX),
        });
        scan.phase = Phase::Finished {
            at: Instant::now(),
            event: Arc::clone(&f),
        };
        self.retained_bytes += scan.bytes;
        self.finished.push_back(id.to_string());
        Some(f)
    }

    /// Drops finished scans past their retention, or beyond the count or byte bounds.
    pub(crate) fn prune(&mut self, c: &DaemonConfig) {
        let now = Instant::now();
        while let Some(id) = self.finished.front() {
            let expired = match self.scans.get(id).map(|s| &s.phase) {
                Some(Phase::Finished { at, .. }) => now.duration_since(*at) >= c.retention,
                _ => true,
            };
            let over =
                self.finished.len() > c.max_retained || self.retained_bytes > c.max_retained_bytes;
            if !expired && !over {
                break;
            }
            if let Some(id) = self.finished.pop_front() {
                if let Some(s) = self.scans.remove(&id) {
                    self.retained_bytes -= s.bytes;
                }
            }
        }
    }

    /// `Cancel`: stops a running scan; says what to do with the others.
    pub(crate) fn cancel(&mut self, id: &str) -> Cancelled {
        match self.scans.get(id).map(|s| &s.phase) {
            None => Cancelled::Unknown(unknown(id)),
            Some(Phase::Finished { event, .. }) => Cancelled::Finished(Arc::clone(event)),
            Some(Phase::Running { stop }) => {
                stop.send_replace(Some(FailReason::Cancelled));
                Cancelled::Stopping
            }
            Some(Phase::Queued { .. }) => Cancelled::Queued,
        }
    }

    /// `Status { id }`: what a client that missed the live events needs to catch up.
    pub(crate) fn replay(&self, id: &str) -> Vec<Frame> {
        let Some(s) = self.scans.get(id) else {
            return vec![unknown(id)];
        };
        match &s.phase {
            Phase::Queued { .. } => vec![progress(id, s.position, 0, s.total_chunks)],
            Phase::Running { .. } => {
                let mut v = s.ports.clone();
                v.push(progress(id, 0, s.chunks_complete, s.total_chunks));
                v
            }
            Phase::Finished { event, .. } => {
                let mut v = s.ports.clone();
                v.push(Arc::clone(event));
                v
            }
        }
    }

    /// Ids of the queued scans.
    pub(crate) fn queued_ids(&self) -> Vec<String> {
        self.queue.clone()
    }

    /// Tells every running scan to stop with `why`.
    pub(crate) fn stop_running(&self, why: FailReason) {
        for s in self.scans.values() {
            if let Phase::Running { stop } = &s.phase {
                stop.send_replace(Some(why));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portscope_core::results::Reason;

    #[test]
    fn ports_frames_stay_below_the_frame_limit() {
        let r = PortResult {
            ip: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            port: 65535,
            proto: Default::default(),
            state: PortState::Filtered,
            reason: Reason::IcmpUnreachable,
            ttl: Some(255),
            icmp_type: Some(255),
            icmp_code: Some(255),
        };
        let f = frame(&Event::Ports {
            id: "x".repeat(128),
            chunk: u32::MAX,
            results: vec![r; PORTS_PER_EVENT],
            closed: u64::MAX,
        });
        assert!(
            f.len() < portscope_proto::MAX_FRAME / 2,
            "{} bytes",
            f.len()
        );
    }
}
