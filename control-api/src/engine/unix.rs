//! The real engine client: `portscope-proto` frames over a `tokio::net::UnixStream`,
//! reconnecting with exponential backoff for as long as it lives.
//!
//! One background task owns the read half and the reconnect loop; `send` writes whole
//! frames through the write half under a lock. A decode error drops the connection (the
//! byte stream can no longer be trusted) and reconnects.

use super::{EngineClient, EngineError, EngineNotice};
use async_trait::async_trait;
use portscope_proto::{decode, encode, Event, Request};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

/// Reconnect delays: doubling from `min` to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// Engine client over a Unix socket.
#[derive(Debug)]
pub struct UnixEngineClient {
    /// Write half of the live connection, if any.
    writer: Arc<Mutex<Option<OwnedWriteHalf>>>,
    /// Notices from the connection task.
    notices: Mutex<mpsc::Receiver<EngineNotice>>,
    /// Mirrors whether `writer` is set, readable without the lock.
    connected: Arc<AtomicBool>,
    /// Stops the connection task.
    cancel: CancellationToken,
}

impl UnixEngineClient {
    /// Starts connecting to `path` in the background (needs a Tokio runtime).
    pub fn spawn(path: PathBuf, backoff: Backoff) -> Self {
        let (tx, rx) = mpsc::channel(4096);
        let writer = Arc::new(Mutex::new(None));
        let connected = Arc::new(AtomicBool::new(false));
        let cancel = CancellationToken::new();
        let task = Connection {
            path,
            backoff,
            tx,
            writer: writer.clone(),
            connected: connected.clone(),
        };
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = c.cancelled() => {}
                _ = task.run() => {}
            }
        });
        UnixEngineClient {
            writer,
            notices: Mutex::new(rx),
            connected,
            cancel,
        }
    }
}

#[async_trait]
impl EngineClient for UnixEngineClient {
    async fn send(&self, req: Request) -> Result<(), EngineError> {
        let mut w = self.writer.lock().await;
        let Some(stream) = w.as_mut() else {
            return Err(EngineError::NotConnected);
        };
        if let Err(e) = stream.write_all(&encode(&req)).await {
            // The reader notices the broken connection and reconnects.
            *w = None;
            self.connected.store(false, Ordering::SeqCst);
            return Err(EngineError::Io(e.to_string()));
        }
        Ok(())
    }

    async fn recv(&self) -> Option<EngineNotice> {
        tokio::select! {
            _ = self.cancel.cancelled() => None,
            n = async { self.notices.lock().await.recv().await } => n,
        }
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn close(&self) {
        self.cancel.cancel();
    }
}

impl Drop for UnixEngineClient {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The background connection loop.
struct Connection {
    path: PathBuf,
    backoff: Backoff,
    tx: mpsc::Sender<EngineNotice>,
    writer: Arc<Mutex<Option<OwnedWriteHalf>>>,
    connected: Arc<AtomicBool>,
}

impl Connection {
    async fn run(self) {
        let mut delay = self.backoff.min;
        let mut warned = false;
        loop {
            match UnixStream::connect(&self.path).await {
                Ok(stream) => {
                    tracing::info!(socket = %self.path.display(), "connected to the engine");
                    delay = self.backoff.min;
                    warned = false;
                    let (mut read, write) = stream.into_split();
                    *self.writer.lock().await = Some(write);
                    self.connected.store(true, Ordering::SeqCst);
                    if self.tx.send(EngineNotice::Connected).await.is_err() {
                        return;
                    }
                    let why = self.read_events(&mut read).await;
                    *self.writer.lock().await = None;
                    self.connected.store(false, Ordering::SeqCst);
                    tracing::warn!(reason = %why, "engine connection lost; reconnecting");
                    if self.tx.send(EngineNotice::Disconnected).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(socket = %self.path.display(), error = %e,
                            "engine not reachable; retrying with backoff");
                        warned = true;
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.backoff.max);
        }
    }

    /// Reads frames until the connection ends; returns why it ended.
    async fn read_events(&self, read: &mut tokio::net::unix::OwnedReadHalf) -> String {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            loop {
                match decode::<Event>(&buf) {
                    Ok(Some((event, used))) => {
                        buf.drain(..used);
                        if self.tx.send(EngineNotice::Event(event)).await.is_err() {
                            return "client closed".into();
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return format!("protocol error: {e}"),
                }
            }
            match read.read(&mut chunk).await {
                Ok(0) => return "engine closed the connection".into(),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return e.to_string(),
            }
        }
    }
}
