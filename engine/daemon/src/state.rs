//! The daemon's shared state and request handling: one `Mutex<State>` over the scan book
//! (`scans`), the connected clients (`clients`) and the totals, held only for bookkeeping
//! (no I/O, no waiting). Every event a scan produces is encoded once, under the lock, into
//! every client's bounded queue; starting a scan spawns its task (`runner`), which hands
//! back each chunk and its end through closures made here, so `runner` never sees this
//! module.

use crate::clients::{frame, Clients, Frame};
use crate::config::{DaemonConfig, RouteFn};
use crate::runner::{Replies, Runner};
use crate::scans::{Book, Cancelled, Started};
use crate::validate::{self, Refusal, Submit};
use portscope_core::results::PortResult;
use portscope_engine::Engine;
use portscope_proto::{EngineStatus, Event, Outcome, Request};
use portscope_proto::{FailReason, RejectCode};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Counters kept for metrics that are not the engine's.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Totals {
    /// Scans finished complete since start.
    pub complete: u64,
    /// Scans finished failed since start.
    pub failed: u64,
    /// Rejected submits by code, in the order of `RejectCode::ALL`.
    pub rejected: [u64; 4],
}

/// Everything under the lock.
#[derive(Debug, Default)]
struct State {
    book: Book,
    clients: Clients,
    shutting_down: bool,
    totals: Totals,
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
    pub replies: Arc<Replies>,
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

impl Shared {
    /// Must be called inside a tokio runtime.
    pub(crate) fn new(engine: Engine, route: RouteFn, config: DaemonConfig) -> Self {
        Shared {
            engine: Arc::new(engine),
            route,
            config,
            replies: Arc::default(),
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
        self.lock().clients.add(frames, &self.hello)
    }

    /// Removes a client: its writer drains what is queued, then closes.
    pub(crate) fn unregister(&self, client: u64) {
        self.lock().clients.remove(client);
    }

    /// Queues `e` for one client.
    pub(crate) fn send_to(&self, client: u64, e: &Event) {
        self.lock().clients.send_to(client, &frame(e));
    }

    /// Engine-wide status.
    pub(crate) fn status(&self) -> EngineStatus {
        let st = self.lock();
        EngineStatus {
            running: st.book.running() as u32,
            queued: st.book.queued() as u32,
            max_running: self.config.max_running as u32,
            probes_sent: self.engine.stats().sent.load(Relaxed),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let st = self.lock();
        Snapshot {
            queued: st.book.queued(),
            running: st.book.running(),
            clients: st.clients.len(),
            totals: st.totals,
        }
    }

    pub(crate) fn running(&self) -> usize {
        self.lock().book.running()
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
            } => self.submit(
                client,
                Submit {
                    id: &id,
                    targets: &targets,
                    ports: &ports,
                    kind,
                    priority,
                },
            ),
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
        st.totals.rejected[code as usize] += 1;
        let f = frame(&Event::Rejected {
            id: id.to_string(),
            code: code.as_str().to_string(),
            message,
        });
        st.clients.send_to(client, &f);
    }

    fn submit(self: &Arc<Self>, client: u64, s: Submit<'_>) {
        let id = s.id;
        let duplicate = || {
            let m = format!("a scan with id {id:?} exists");
            (RejectCode::Duplicate, m)
        };
        if self.lock().book.contains(id) {
            return self.reject(client, id, duplicate());
        }
        let (plan, ranges) =
            match validate::plan(&self.config, self.engine.policy(), &self.route, s) {
                Ok(p) => p,
                Err(r) => return self.reject(client, id, r),
            };
        let mut st = self.lock();
        st.book.prune(&self.config);
        if st.book.contains(id) {
            drop(st);
            return self.reject(client, id, duplicate());
        }
        if st.shutting_down {
            drop(st);
            let m = "the engine is shutting down".to_string();
            return self.reject(client, id, (RejectCode::Busy, m));
        }
        let starts_now = st.book.running() < self.config.max_running && st.book.queued() == 0;
        if !starts_now && st.book.queued() >= self.config.max_queued {
            drop(st);
            let m = format!(
                "{} scans are queued (the maximum); try again later",
                self.config.max_queued
            );
            return self.reject(client, id, (RejectCode::Busy, m));
        }
        let f = st
            .book
            .enqueue(id.to_string(), s.priority, plan, ranges, starts_now);
        st.clients.broadcast(&f);
        self.schedule(&mut st);
    }

    /// Starts queued scans while there is room, then announces changed queue positions.
    fn schedule(self: &Arc<Self>, st: &mut State) {
        while !st.shutting_down && st.book.running() < self.config.max_running {
            let Some(started) = st.book.start_next() else {
                break;
            };
            st.clients.broadcast(&started.event);
            self.spawn_scan(started);
        }
        for f in st.book.reposition() {
            st.clients.broadcast(&f);
        }
    }

    /// The scan's task: chunks are recorded as they complete, the end when it comes.
    fn spawn_scan(self: &Arc<Self>, s: Started) {
        let runner = Runner {
            engine: Arc::clone(&self.engine),
            replies: Arc::clone(&self.replies),
            scan_timeout: self.config.scan_timeout,
            chunks_in_flight: self.config.chunks_in_flight,
        };
        let shared = Arc::clone(self);
        self.rt.spawn(async move {
            let on_chunk =
                |chunk, results, closed| shared.chunk_done(&s.id, chunk, results, closed);
            let ended = runner.drive(s.plan, s.ranges, s.stop, on_chunk).await;
            shared.finish(&s.id, ended.outcome, ended.sent, ended.took);
        });
    }

    /// Records a complete chunk and sends its events.
    fn chunk_done(&self, id: &str, chunk: u32, results: Vec<PortResult>, closed: u64) {
        let mut st = self.lock();
        let st = &mut *st;
        for f in st.book.chunk_done(id, chunk, results, closed) {
            st.clients.broadcast(&f);
        }
    }

    /// Ends a scan (running or queued): `Finished` to everyone, then the queue moves on.
    fn finish(self: &Arc<Self>, id: &str, outcome: Outcome, sent: u64, took: Duration) {
        let mut st = self.lock();
        self.finish_locked(&mut st, id, outcome, sent, took);
        self.schedule(&mut st);
        st.book.prune(&self.config);
    }

    fn finish_locked(&self, st: &mut State, id: &str, outcome: Outcome, sent: u64, took: Duration) {
        let complete = outcome == Outcome::Complete;
        if let Some(f) = st.book.finish(id, outcome, sent, took) {
            if complete {
                st.totals.complete += 1;
            } else {
                st.totals.failed += 1;
            }
            st.clients.broadcast(&f);
        }
    }

    fn cancel(self: &Arc<Self>, client: u64, id: &str) {
        let mut st = self.lock();
        st.book.prune(&self.config);
        match st.book.cancel(id) {
            Cancelled::Unknown(f) | Cancelled::Finished(f) => st.clients.send_to(client, &f),
            Cancelled::Stopping => {}
            Cancelled::Queued => {
                let failed = FailReason::Cancelled.outcome();
                self.finish_locked(&mut st, id, failed, 0, Duration::ZERO);
                self.schedule(&mut st);
            }
        }
    }

    /// `Status { id }`: the replay, queued under the lock so live events follow it with no
    /// gap and no repeat.
    fn replay(&self, client: u64, id: &str) {
        let mut st = self.lock();
        st.book.prune(&self.config);
        let st = &mut *st;
        for f in st.book.replay(id) {
            st.clients.send_to(client, &f);
        }
    }

    /// Stops taking scans: queued ones fail now, running ones are told to stop; both with
    /// `engine_shutdown`.
    pub(crate) fn begin_shutdown(self: &Arc<Self>) {
        let mut st = self.lock();
        st.shutting_down = true;
        for id in st.book.queued_ids() {
            let failed = FailReason::Shutdown.outcome();
            self.finish_locked(&mut st, &id, failed, 0, Duration::ZERO);
        }
        st.book.stop_running(FailReason::Shutdown);
    }
}
