//! A scripted in-memory engine for tests: records every request, answers `Submit` as told
//! (accept, reject or stay silent), and lets the test drive progress, ports, completion,
//! failure, disconnects and restarts of the chunk runs workers send it. (Nothing asks it
//! for a scan's `Status` any more: a chunk run lost with the connection is re-run, not
//! resumed, so it keeps no events to replay.)

use super::{EngineClient, EngineError, EngineNotice};
use async_trait::async_trait;
use portscope_core::results::{PortResult, PortState, Proto, Reason};
use portscope_proto::{Counts, EngineStatus, Event, Outcome, Request};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// How the fake answers a `Submit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnSubmit {
    /// `Accepted` with this position and chunk count.
    Accept {
        /// Scans ahead.
        queue_position: u32,
        /// Chunks.
        total_chunks: u32,
    },
    /// `Rejected` with this code.
    Reject {
        /// `policy`, `busy`, `invalid`, `duplicate`.
        code: String,
        /// Message.
        message: String,
    },
    /// No answer.
    Silent,
}

#[derive(Debug)]
struct Scan {
    /// Its first target's first address: the address of the ports `FakeEngine::ports` emits.
    target: IpAddr,
}

#[derive(Debug)]
struct State {
    connected: bool,
    on_submit: OnSubmit,
    requests: Vec<Request>,
    scans: HashMap<String, Scan>,
}

/// The result a real scan reports for `ip`:`port` in `state` (the reason follows the state:
/// syn-ack, reset, or no-response). Tests build `Ports` events with it.
pub fn port_result(ip: IpAddr, port: u16, state: PortState) -> PortResult {
    PortResult {
        ip,
        port,
        proto: Proto::Tcp,
        state,
        reason: match state {
            PortState::Open => Reason::SynAck,
            PortState::Closed => Reason::Reset,
            PortState::Filtered => Reason::NoResponse,
        },
        ttl: None,
        icmp_type: None,
        icmp_code: None,
    }
}

/// The fake engine.
#[derive(Debug)]
pub struct FakeEngine {
    state: Mutex<State>,
    tx: mpsc::UnboundedSender<EngineNotice>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<EngineNotice>>,
}

impl Default for FakeEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeEngine {
    /// A connected fake that accepts submits at queue position 1 with 4 chunks.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        FakeEngine {
            state: Mutex::new(State {
                connected: true,
                on_submit: OnSubmit::Accept {
                    queue_position: 1,
                    total_chunks: 4,
                },
                requests: Vec::new(),
                scans: HashMap::new(),
            }),
            tx,
            rx: tokio::sync::Mutex::new(rx),
        }
    }

    /// A fake that starts disconnected.
    pub fn disconnected() -> Self {
        let f = Self::new();
        f.state().connected = false;
        f
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake engine lock")
    }

    /// Sets how `Submit`s are answered.
    pub fn on_submit(&self, how: OnSubmit) {
        self.state().on_submit = how;
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// Ids of the `Submit`s received, in order.
    pub fn submitted_ids(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter_map(|r| match r {
                Request::Submit { id, .. } => Some(id),
                _ => None,
            })
            .collect()
    }

    fn push(&self, e: Event) {
        let _ = self.tx.send(EngineNotice::Event(e));
    }

    /// Emits any event as is, e.g. multi-host `Ports`.
    pub fn emit(&self, e: Event) {
        self.push(e);
    }

    /// Emits `Progress`.
    pub fn progress(&self, id: &str, queue_position: u32, chunks_complete: u32, total: u32) {
        self.push(Event::Progress {
            id: id.into(),
            queue_position,
            chunks_complete,
            total_chunks: total,
        });
    }

    /// Emits `Ports` for a chunk: the given (port, state) pairs of the scan's target.
    pub fn ports(&self, id: &str, chunk: u32, ports: &[(u16, PortState)], closed: u64) {
        let target = self
            .state()
            .scans
            .get(id)
            .map(|s| s.target)
            .unwrap_or(IpAddr::from([198, 18, 0, 1]));
        let results = ports
            .iter()
            .map(|&(port, state)| port_result(target, port, state))
            .collect();
        let e = Event::Ports {
            id: id.into(),
            chunk,
            results,
            closed,
        };
        self.push(e);
    }

    /// Emits `Finished` with the given outcome.
    pub fn finish(&self, id: &str, outcome: Outcome, duration_ms: u64) {
        let e = Event::Finished {
            id: id.into(),
            outcome,
            counts: Counts::default(),
            duration_ms,
        };
        self.push(e);
    }

    /// Emits `Finished { Complete }`.
    pub fn complete(&self, id: &str, duration_ms: u64) {
        self.finish(id, Outcome::Complete, duration_ms);
    }

    /// Emits `Finished { Failed(reason) }`.
    pub fn fail(&self, id: &str, reason: &str) {
        self.finish(id, Outcome::Failed(reason.into()), 0);
    }

    /// Drops the connection (scans keep running in the "engine").
    pub fn disconnect(&self) {
        self.state().connected = false;
        let _ = self.tx.send(EngineNotice::Disconnected);
    }

    /// Re-establishes the connection.
    pub fn connect(&self) {
        self.state().connected = true;
        let _ = self.tx.send(EngineNotice::Connected);
    }

    /// The engine restarts: the connection drops (runs on it are lost), every scan is
    /// forgotten, it comes back.
    pub fn restart(&self) {
        self.disconnect();
        self.state().scans.clear();
        self.connect();
    }
}

#[async_trait]
impl EngineClient for FakeEngine {
    async fn send(&self, req: Request) -> Result<(), EngineError> {
        let mut st = self.state();
        if !st.connected {
            return Err(EngineError::NotConnected);
        }
        st.requests.push(req.clone());
        let mut out = Vec::new();
        match req {
            Request::Submit { id, targets, .. } => match st.on_submit.clone() {
                OnSubmit::Accept {
                    queue_position,
                    total_chunks,
                } => {
                    let e = Event::Accepted {
                        id: id.clone(),
                        queue_position,
                        total_chunks,
                    };
                    let target = targets
                        .first()
                        .and_then(|t| portscope_core::targets::parse_target(t).ok())
                        .map(|(first, _)| first)
                        .unwrap_or(IpAddr::from([198, 18, 0, 1]));
                    st.scans.insert(id, Scan { target });
                    out.push(e);
                }
                OnSubmit::Reject { code, message } => {
                    out.push(Event::Rejected { id, code, message })
                }
                OnSubmit::Silent => {}
            },
            Request::Status { .. } => out.push(Event::Status(EngineStatus::default())),
            Request::Cancel { id } => out.push(Event::Finished {
                id,
                outcome: Outcome::Failed("cancelled".into()),
                counts: Counts::default(),
                duration_ms: 0,
            }),
        }
        drop(st);
        for e in out {
            self.push(e);
        }
        Ok(())
    }

    async fn recv(&self) -> Option<EngineNotice> {
        self.rx.lock().await.recv().await
    }

    fn is_connected(&self) -> bool {
        self.state().connected
    }
}
