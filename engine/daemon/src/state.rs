//! The daemon's shared state: scans (queued, running, finished and retained), the queue
//! order, connected clients and their outgoing frame queues, and request handling.
//!
//! Every mutation and every event goes through one `Mutex<State>`, held only for
//! bookkeeping (no I/O, no waiting): events are encoded once and pushed into each client's
//! bounded queue with `try_send`, so a slow client can never stall the daemon; it is
//! disconnected instead (and may reconnect and replay).

use crate::chunks::{chunk_ranges, port_spec_size};
use crate::config::{DaemonConfig, RouteFn};
use crate::runner;
use portscope_core::results::{PortResult, PortState, Reason};
use portscope_engine::{Engine, ScanPlan, ScanRequest};
use portscope_proto::{encode, Counts, EngineStatus, Event, Outcome, Request, ScanKind};
use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// Fair-share group ids handed to the engine, one per scan.
static NEXT_GROUP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One encoded protocol frame, shared by every queue it goes into and by the replay store.
pub(crate) type Frame = Arc<[u8]>;

/// Results per `Ports` event, so that a frame stays far below `MAX_FRAME` (an IPv6 result
/// with ICMP fields encodes to at most about 170 bytes).
pub(crate) const PORTS_PER_EVENT: usize = 2048;

/// Reasons of `Outcome::Failed` the daemon produces.
pub(crate) mod reason {
    /// `Request::Cancel`.
    pub const CANCELLED: &str = "cancelled";
    /// The scan ran longer than `scan_timeout`.
    pub const TIMEOUT: &str = "timeout";
    /// The daemon is shutting down.
    pub const SHUTDOWN: &str = "engine_shutdown";
    /// The engine does not know the scan (it restarted, or the result expired).
    pub const RESTARTED: &str = "engine_restarted";
    /// The engine refused or lost a chunk.
    pub const ENGINE_ERROR: &str = "engine_error";
}

/// Rejection codes of the protocol.
const CODES: [&str; 4] = ["policy", "invalid", "busy", "duplicate"];

pub(crate) fn frame(e: &Event) -> Frame {
    encode(e).into()
}

/// Where a scan is in its life.
#[derive(Debug)]
enum Phase {
    /// Waiting for a running slot; the plan and its chunks are kept until it starts.
    Queued {
        plan: Box<ScanPlan>,
        ranges: Vec<Range<usize>>,
    },
    /// Its scan task runs the chunks; `stop` tells it to end early and why.
    Running {
        stop: watch::Sender<Option<&'static str>>,
    },
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

/// A connected client's outgoing side.
#[derive(Debug)]
struct ClientTx {
    frames: mpsc::Sender<Frame>,
    /// Woken when the daemon drops the client (its queue overflowed), so its connection
    /// task closes the socket even if the writer is stuck.
    kicked: Arc<Notify>,
}

/// Connected clients.
#[derive(Debug, Default)]
struct Clients {
    map: HashMap<u64, ClientTx>,
    next_id: u64,
}

impl Clients {
    /// Queues `f` for one client; a client whose queue is full is dropped.
    fn send_to(&mut self, client: u64, f: &Frame) {
        let Some(c) = self.map.get(&client) else {
            return;
        };
        match c.frames.try_send(Arc::clone(f)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                eprintln!("portscope engine: client {client} fell behind; disconnecting it");
                if let Some(c) = self.map.remove(&client) {
                    c.kicked.notify_one();
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.map.remove(&client);
            }
        }
    }

    /// Queues `f` for every client.
    fn broadcast(&mut self, f: &Frame) {
        let ids: Vec<u64> = self.map.keys().copied().collect();
        for id in ids {
            self.send_to(id, f);
        }
    }
}

/// Counters kept for metrics that are not the engine's.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    /// Scans finished complete since start.
    pub complete: u64,
    /// Scans finished failed since start.
    pub failed: u64,
    /// Rejected submits by code, in the order of `CODES`.
    pub rejected: [u64; 4],
}

/// Everything under the lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    scans: HashMap<String, Scan>,
    /// Queued scan ids, best first (priority descending, then arrival).
    queue: Vec<String>,
    running: usize,
    /// Finished scan ids, oldest first (retention order).
    finished: VecDeque<String>,
    /// Bytes of `ports` frames of finished scans.
    retained_bytes: usize,
    clients: Clients,
    shutting_down: bool,
    totals: Totals,
}

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

/// A snapshot for metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub queued: usize,
    pub running: usize,
    pub clients: usize,
    pub totals: Totals,
}

/// What the connection tasks, scan tasks and the server share.
pub(crate) struct Shared {
    pub engine: Arc<Engine>,
    pub route: RouteFn,
    pub config: DaemonConfig,
    pub replies: Replies,
    /// Runtime the scan tasks are spawned on (requests may arrive from any thread).
    rt: tokio::runtime::Handle,
    hello: Frame,
    state: Mutex<State>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why a submit is refused: (code, message).
type Refusal = (&'static str, String);

fn progress(id: &str, queue_position: u32, chunks_complete: u32, total_chunks: u32) -> Frame {
    frame(&Event::Progress {
        id: id.to_string(),
        queue_position,
        chunks_complete,
        total_chunks,
    })
}

/// The answer about a scan the engine does not know: it must have restarted since.
fn unknown(id: &str) -> Frame {
    frame(&Event::Finished {
        id: id.to_string(),
        outcome: Outcome::Failed(reason::RESTARTED.into()),
        counts: Counts::default(),
        duration_ms: 0,
    })
}

impl Shared {
    /// Must be called inside a tokio runtime.
    pub(crate) fn new(engine: Engine, route: RouteFn, config: DaemonConfig) -> Self {
        Shared {
            engine: Arc::new(engine),
            route,
            config,
            replies: Replies::default(),
            rt: tokio::runtime::Handle::current(),
            hello: frame(&Event::Hello {
                engine: format!("portscope-engine {}", env!("CARGO_PKG_VERSION")),
                protocol: portscope_proto::VERSION,
            }),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a client; its first frame is `Hello`. Returns its id and kick signal.
    pub(crate) fn register(&self, frames: mpsc::Sender<Frame>) -> (u64, Arc<Notify>) {
        let mut st = self.lock();
        let id = st.clients.next_id;
        st.clients.next_id += 1;
        let kicked = Arc::new(Notify::new());
        let _ = frames.try_send(Arc::clone(&self.hello));
        st.clients.map.insert(
            id,
            ClientTx {
                frames,
                kicked: Arc::clone(&kicked),
            },
        );
        (id, kicked)
    }

    /// Removes a client: its writer drains what is queued, then closes.
    pub(crate) fn unregister(&self, client: u64) {
        self.lock().clients.map.remove(&client);
    }

    /// Queues `e` for one client.
    pub(crate) fn send_to(&self, client: u64, e: &Event) {
        self.lock().clients.send_to(client, &frame(e));
    }

    /// Engine-wide status.
    pub(crate) fn status(&self) -> EngineStatus {
        let st = self.lock();
        EngineStatus {
            running: st.running as u32,
            queued: st.queue.len() as u32,
            max_running: self.config.max_running as u32,
            probes_sent: self.engine.stats().sent.load(Relaxed),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        Snapshot {
            queued: st.queue.len(),
            running: st.running,
            clients: st.clients.map.len(),
            totals: st.totals,
        }
    }

    pub(crate) fn running(&self) -> usize {
        self.lock().running
    }

    /// Handles one request from `client`.
    pub(crate) fn handle(self: &Arc<Self>, client: u64, req: Request) {
        match req {
            Request::Submit {
                id,
                targets,
                ports,
                kind,
                priority,
            } => self.submit(client, id, &targets, &ports, kind, priority),
            Request::Cancel { id } => self.cancel(client, &id),
            Request::Status { id: None } => {
                let s = self.status();
                self.send_to(client, &Event::Status(s));
            }
            Request::Status { id: Some(id) } => self.replay(client, &id),
        }
    }

    fn reject(&self, client: u64, id: &str, (code, message): Refusal) {
        let mut st = self.lock();
        if let Some(i) = CODES.iter().position(|c| *c == code) {
            st.totals.rejected[i] += 1;
        }
        let f = frame(&Event::Rejected {
            id: id.to_string(),
            code: code.to_string(),
            message,
        });
        st.clients.send_to(client, &f);
    }

    /// Validates a submit into a plan and its chunks, without touching the state.
    fn plan(
        &self,
        id: &str,
        targets: &[String],
        ports: &str,
        kind: ScanKind,
        priority: u8,
    ) -> Result<(ScanPlan, Vec<Range<usize>>), Refusal> {
        let c = &self.config;
        let invalid = |m: String| ("invalid", m);
        if id.is_empty() || id.len() > c.max_id_len || id.chars().any(char::is_control) {
            return Err(invalid(format!(
                "scan id must be 1 to {} bytes without control characters",
                c.max_id_len
            )));
        }
        if priority > 9 {
            return Err(invalid(format!("priority {priority} out of range 0..=9")));
        }
        if targets.is_empty() || targets.len() > c.max_targets {
            return Err(invalid(format!(
                "{} targets given: 1 to {} allowed",
                targets.len(),
                c.max_targets
            )));
        }
        let listed = port_spec_size(ports);
        if listed > 65_535 * 4 {
            return Err(invalid(format!(
                "port spec lists {listed} ports; list each port at most a few times"
            )));
        }
        let s = &c.scan;
        let request = ScanRequest {
            targets: targets.to_vec(),
            ports: ports.to_string(),
            exclude: Vec::new(),
            rate: s.rate,
            retries: s.retries,
            max_wait: s.max_wait,
            min_wait: s.min_wait,
        };
        let plan = request
            .plan(&*self.route)
            .map_err(|e| invalid(e.to_string()))?;
        let pairs = u128::from(plan.targets.len()) * u128::from(plan.ports.len());
        if pairs > u128::from(c.max_pairs) {
            return Err(invalid(format!(
                "scan too large: {pairs} target x port pairs (at most {})",
                c.max_pairs
            )));
        }
        // The engine checks again on every chunk; this answer comes before any queueing.
        self.engine
            .policy()
            .check(&plan.targets)
            .map_err(|e| ("policy", e.to_string()))?;
        let ranges = chunk_ranges(plan.ports.len() as usize, kind);
        // One fair-share group per scan: its chunks share one part of the engine's rate.
        let plan = ScanPlan {
            group: Some(NEXT_GROUP.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
            ..plan
        };
        Ok((plan, ranges))
    }

    fn submit(
        self: &Arc<Self>,
        client: u64,
        id: String,
        targets: &[String],
        ports: &str,
        kind: ScanKind,
        priority: u8,
    ) {
        let duplicate = || ("duplicate", format!("a scan with id {id:?} exists"));
        if self.lock().scans.contains_key(&id) {
            return self.reject(client, &id, duplicate());
        }
        let (plan, ranges) = match self.plan(&id, targets, ports, kind, priority) {
            Ok(p) => p,
            Err(r) => return self.reject(client, &id, r),
        };
        let mut st = self.lock();
        self.prune(&mut st);
        if st.scans.contains_key(&id) {
            drop(st);
            return self.reject(client, &id, duplicate());
        }
        if st.shutting_down {
            drop(st);
            return self.reject(client, &id, ("busy", "the engine is shutting down".into()));
        }
        let starts_now = st.running < self.config.max_running && st.queue.is_empty();
        if !starts_now && st.queue.len() >= self.config.max_queued {
            drop(st);
            let m = format!(
                "{} scans are queued (the maximum); try again later",
                self.config.max_queued
            );
            return self.reject(client, &id, ("busy", m));
        }
        let total_chunks = ranges.len() as u32;
        // Best first: after every queued scan of higher or equal priority.
        let at = st
            .queue
            .iter()
            .position(|q| st.scans.get(q).is_some_and(|s| s.priority < priority))
            .unwrap_or(st.queue.len());
        let position = if starts_now { 0 } else { at as u32 + 1 };
        st.scans.insert(
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
        st.queue.insert(at, id.clone());
        let f = frame(&Event::Accepted {
            id,
            queue_position: position,
            total_chunks,
        });
        st.clients.broadcast(&f);
        self.schedule(&mut st);
    }

    /// Starts queued scans while there is room, then announces changed queue positions.
    fn schedule(self: &Arc<Self>, st: &mut State) {
        while !st.shutting_down && st.running < self.config.max_running && !st.queue.is_empty() {
            let id = st.queue.remove(0);
            let Some(scan) = st.scans.get_mut(&id) else {
                continue;
            };
            let (stop, stop_rx) = watch::channel(None);
            let Phase::Queued { plan, ranges } =
                std::mem::replace(&mut scan.phase, Phase::Running { stop })
            else {
                continue; // only queued scans are in the queue
            };
            scan.position = 0;
            st.running += 1;
            st.clients
                .broadcast(&progress(&id, 0, 0, scan.total_chunks));
            self.rt
                .spawn(runner::drive(Arc::clone(self), id, *plan, ranges, stop_rx));
        }
        for (i, id) in st.queue.iter().enumerate() {
            let pos = i as u32 + 1;
            if let Some(s) = st.scans.get_mut(id) {
                if s.position != pos {
                    s.position = pos;
                    st.clients.broadcast(&progress(id, pos, 0, s.total_chunks));
                }
            }
        }
    }

    /// Records a complete chunk: `Ports` (split so frames stay small) then `Progress`.
    pub(crate) fn chunk_done(&self, id: &str, chunk: u32, results: Vec<PortResult>, closed: u64) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(scan) = st.scans.get_mut(id) else {
            return;
        };
        if !matches!(scan.phase, Phase::Running { .. }) {
            return;
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
        for i in 0..pieces {
            let f = frame(&Event::Ports {
                id: id.to_string(),
                chunk,
                results: results.by_ref().take(PORTS_PER_EVENT).collect(),
                closed: if i + 1 == pieces { closed } else { 0 },
            });
            scan.bytes += f.len();
            scan.ports.push(Arc::clone(&f));
            st.clients.broadcast(&f);
        }
        scan.chunks_complete += 1;
        let p = progress(id, 0, scan.chunks_complete, scan.total_chunks);
        st.clients.broadcast(&p);
    }

    /// Ends a scan (running or queued): `Finished` to everyone, then the queue moves on.
    pub(crate) fn finish(self: &Arc<Self>, id: &str, outcome: Outcome, sent: u64, took: Duration) {
        let mut st = self.lock();
        self.finish_locked(&mut st, id, outcome, sent, took);
        self.schedule(&mut st);
        self.prune(&mut st);
    }

    fn finish_locked(&self, st: &mut State, id: &str, outcome: Outcome, sent: u64, took: Duration) {
        let Some(scan) = st.scans.get_mut(id) else {
            return;
        };
        match scan.phase {
            Phase::Finished { .. } => return,
            Phase::Running { .. } => st.running -= 1,
            Phase::Queued { .. } => st.queue.retain(|q| q != id),
        }
        if outcome == Outcome::Complete {
            st.totals.complete += 1;
        } else {
            st.totals.failed += 1;
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
        st.retained_bytes += scan.bytes;
        st.finished.push_back(id.to_string());
        st.clients.broadcast(&f);
    }

    /// Drops finished scans past their retention, or beyond the count or byte bounds.
    fn prune(&self, st: &mut State) {
        let now = Instant::now();
        let c = &self.config;
        while let Some(id) = st.finished.front() {
            let expired = match st.scans.get(id).map(|s| &s.phase) {
                Some(Phase::Finished { at, .. }) => now.duration_since(*at) >= c.retention,
                _ => true,
            };
            let over =
                st.finished.len() > c.max_retained || st.retained_bytes > c.max_retained_bytes;
            if !expired && !over {
                break;
            }
            if let Some(id) = st.finished.pop_front() {
                if let Some(s) = st.scans.remove(&id) {
                    st.retained_bytes -= s.bytes;
                }
            }
        }
    }

    fn cancel(self: &Arc<Self>, client: u64, id: &str) {
        let mut st = self.lock();
        self.prune(&mut st);
        match st.scans.get(id).map(|s| &s.phase) {
            None => st.clients.send_to(client, &unknown(id)),
            Some(Phase::Finished { event, .. }) => {
                let f = Arc::clone(event);
                st.clients.send_to(client, &f);
            }
            Some(Phase::Running { stop }) => {
                stop.send_replace(Some(reason::CANCELLED));
            }
            Some(Phase::Queued { .. }) => {
                let failed = Outcome::Failed(reason::CANCELLED.into());
                self.finish_locked(&mut st, id, failed, 0, Duration::ZERO);
                self.schedule(&mut st);
            }
        }
    }

    /// `Status { id }`: what a client that missed the live events needs to catch up.
    fn replay(&self, client: u64, id: &str) {
        let mut st = self.lock();
        self.prune(&mut st);
        let st = &mut *st;
        let frames: Vec<Frame> = match st.scans.get(id) {
            None => vec![unknown(id)],
            Some(s) => match &s.phase {
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
            },
        };
        for f in &frames {
            st.clients.send_to(client, f);
        }
    }

    /// Stops taking scans: queued ones fail now, running ones are told to stop; both with
    /// `engine_shutdown`.
    pub(crate) fn begin_shutdown(self: &Arc<Self>) {
        let mut st = self.lock();
        st.shutting_down = true;
        let failed = Outcome::Failed(reason::SHUTDOWN.into());
        for id in st.queue.clone() {
            self.finish_locked(&mut st, &id, failed.clone(), 0, Duration::ZERO);
        }
        for s in st.scans.values() {
            if let Phase::Running { stop } = &s.phase {
                stop.send_replace(Some(reason::SHUTDOWN));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
