//! Splits one engine connection between the self-scan service and the managed-scan
//! service. Both send through the same client; events are routed by scan id (managed ids
//! are hyphenated UUIDs, see [`is_managed_id`]; self-scan ids are bare hex) and connection
//! changes go to both. It does not interpret events.

use crate::engine::{EngineClient, EngineError, EngineNotice};
use async_trait::async_trait;
use portscope_proto::Request;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A new managed scan id: a random (v4) UUID in its hyphenated form (seed 003).
pub fn new_managed_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// Whether a scan id is a managed one: a hyphenated UUID. Self-scan ids are 32 bare hex
/// digits, which `Uuid::try_parse` would also accept, hence the length.
pub fn is_managed_id(id: &str) -> bool {
    id.len() == uuid::fmt::Hyphenated::LENGTH && uuid::Uuid::try_parse(id).is_ok()
}

/// One side of the split: sends through the shared client, receives its own notices.
#[derive(Debug)]
pub struct Side {
    inner: Arc<dyn EngineClient>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<EngineNotice>>,
}

#[async_trait]
impl EngineClient for Side {
    async fn send(&self, req: Request) -> Result<(), EngineError> {
        self.inner.send(req).await
    }

    async fn recv(&self) -> Option<EngineNotice> {
        self.rx.lock().await.recv().await
    }

    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    fn close(&self) {
        self.inner.close();
    }
}

/// Splits `inner` into (self-scan side, managed side). Spawns the routing task, which ends
/// when `inner` closes or `stop` is cancelled (an API shutdown: the next instance reads
/// the same client).
pub fn split(inner: Arc<dyn EngineClient>, stop: CancellationToken) -> (Arc<Side>, Arc<Side>) {
    let (self_tx, self_rx) = mpsc::unbounded_channel();
    let (man_tx, man_rx) = mpsc::unbounded_channel();
    let reader = inner.clone();
    tokio::spawn(async move {
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => break,
                n = reader.recv() => match n {
                    Some(n) => n,
                    None => break,
                },
            };
            match &n {
                EngineNotice::Event(e) if e.scan_id().is_some_and(is_managed_id) => {
                    let _ = man_tx.send(n);
                }
                EngineNotice::Event(_) => {
                    let _ = self_tx.send(n);
                }
                EngineNotice::Connected | EngineNotice::Disconnected => {
                    let _ = man_tx.send(n.clone());
                    let _ = self_tx.send(n);
                }
            }
        }
    });
    let side = |rx| {
        Arc::new(Side {
            inner: inner.clone(),
            rx: tokio::sync::Mutex::new(rx),
        })
    };
    (side(self_rx), side(man_rx))
}
