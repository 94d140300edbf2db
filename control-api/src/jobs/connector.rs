//! Where a chunk run gets its engine connection: [`EngineConnector`]. In production a fresh
//! Unix-socket connection per run ([`UnixConnector`], as `portscope-api worker` does), or
//! one long-lived connection shared by every run of a process ([`SharedConnector`]: the
//! API's own engine client, or the scripted fake of `engine/fake.rs` in tests). It only
//! hands out connections; what a run sends and reads is `engine_run`'s.

use crate::engine::unix::{Backoff, UnixEngineClient};
use crate::engine::{EngineClient, EngineError, EngineNotice};
use crate::util::lock;
use async_trait::async_trait;
use portscope_proto::Request;
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Hands a chunk run an engine connection. Its notices begin with `Connected` once the
/// engine is reachable, then carry the events of the scans the run submitted (others may
/// be mixed in: a run ignores ids that are not its own). The run calls `close` at its end.
#[async_trait]
pub trait EngineConnector: Send + Sync + fmt::Debug + 'static {
    /// A connection for one run.
    async fn connect(&self) -> Arc<dyn EngineClient>;
}

/// A fresh Unix-socket connection to the engine per run.
#[derive(Debug, Clone)]
pub struct UnixConnector {
    /// The engine's socket.
    pub socket: PathBuf,
}

#[async_trait]
impl EngineConnector for UnixConnector {
    async fn connect(&self) -> Arc<dyn EngineClient> {
        Arc::new(UnixEngineClient::spawn(
            self.socket.clone(),
            Backoff {
                min: Duration::from_millis(50),
                max: Duration::from_millis(500),
            },
        ))
    }
}

/// Runs by engine scan id, and every open run (for connection changes).
#[derive(Debug, Default)]
struct Routes {
    by_id: HashMap<String, mpsc::UnboundedSender<EngineNotice>>,
    runs: Vec<Weak<RunLink>>,
}

/// One engine connection shared by every run: each run gets a view that sends through it
/// and receives the connection's changes and the events of the scans it submitted.
#[derive(Debug, Clone)]
pub struct SharedConnector {
    inner: Arc<dyn EngineClient>,
    routes: Arc<Mutex<Routes>>,
}

impl SharedConnector {
    /// Shares `inner` (its `recv` is read here from now on) until `stop` is cancelled or
    /// it closes.
    pub fn new(inner: Arc<dyn EngineClient>, stop: CancellationToken) -> SharedConnector {
        let routes: Arc<Mutex<Routes>> = Arc::default();
        let (reader, table) = (inner.clone(), routes.clone());
        tokio::spawn(async move {
            loop {
                let n = tokio::select! {
                    _ = stop.cancelled() => break,
                    n = reader.recv() => match n { Some(n) => n, None => break },
                };
                let mut t = lock(&table);
                match &n {
                    EngineNotice::Event(e) => {
                        if let Some(tx) = e.scan_id().and_then(|id| t.by_id.get(id)) {
                            let _ = tx.send(n.clone());
                        }
                    }
                    EngineNotice::Connected | EngineNotice::Disconnected => {
                        t.runs.retain(|w| w.strong_count() > 0);
                        for run in t.runs.iter().filter_map(Weak::upgrade) {
                            let _ = run.tx.send(n.clone());
                        }
                    }
                }
            }
        });
        SharedConnector { inner, routes }
    }
}

#[async_trait]
impl EngineConnector for SharedConnector {
    async fn connect(&self) -> Arc<dyn EngineClient> {
        let (tx, rx) = mpsc::unbounded_channel();
        if self.inner.is_connected() {
            let _ = tx.send(EngineNotice::Connected);
        }
        let link = Arc::new(RunLink {
            inner: self.inner.clone(),
            routes: self.routes.clone(),
            tx,
            rx: tokio::sync::Mutex::new(rx),
            ids: Mutex::new(Vec::new()),
        });
        let mut routes = lock(&self.routes);
        routes.runs.retain(|w| w.strong_count() > 0);
        routes.runs.push(Arc::downgrade(&link));
        drop(routes);
        link
    }
}

/// One run's view of the shared connection.
#[derive(Debug)]
struct RunLink {
    inner: Arc<dyn EngineClient>,
    routes: Arc<Mutex<Routes>>,
    tx: mpsc::UnboundedSender<EngineNotice>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<EngineNotice>>,
    /// The engine scan ids this run submitted (routed to it until it closes).
    ids: Mutex<Vec<String>>,
}

#[async_trait]
impl EngineClient for RunLink {
    async fn send(&self, req: Request) -> Result<(), EngineError> {
        if let Request::Submit { id, .. } = &req {
            // Routed before the engine can answer.
            lock(&self.routes).by_id.insert(id.clone(), self.tx.clone());
            lock(&self.ids).push(id.clone());
        }
        self.inner.send(req).await
    }

    async fn recv(&self) -> Option<EngineNotice> {
        self.rx.lock().await.recv().await
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    fn close(&self) {
        let mut routes = lock(&self.routes);
        for id in lock(&self.ids).drain(..) {
            routes.by_id.remove(&id);
        }
    }
}
