//! The engine connection as the API sees it: a trait with a real client over a Unix socket
//! ([`unix`]) and a scripted fake for tests ([`fake`]).
//!
//! The contract both keep: `send` writes one request or fails at once with
//! [`EngineError::NotConnected`]; `recv` yields, in order, connection changes and engine
//! events. A `Connected` notice means "ask again": the scan service then re-asks `Status`
//! for every scan it still considers live. Scans are engine-global, so they survive a
//! dropped connection; an engine that forgot a scan answers `engine_restarted`.

pub mod fake;
pub mod unix;

use async_trait::async_trait;
use portscope_proto::{Event, Request};
use std::fmt;

/// What the engine connection reports.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineNotice {
    /// A connection is up (new or re-established).
    Connected,
    /// The connection is gone; the client keeps trying to reconnect.
    Disconnected,
    /// An event from the engine.
    Event(Event),
}

/// Why a request could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// No connection right now; the request was not sent.
    #[error("not connected to the scan engine")]
    NotConnected,
    /// Writing failed; the connection is being re-established.
    #[error("engine connection failed: {0}")]
    Io(String),
}

/// A connection to the scan engine.
#[async_trait]
pub trait EngineClient: Send + Sync + fmt::Debug + 'static {
    /// Sends one request.
    async fn send(&self, req: Request) -> Result<(), EngineError>;

    /// The next notice; `None` once the client is closed. One consumer at a time.
    async fn recv(&self) -> Option<EngineNotice>;

    /// Whether a connection is up now.
    fn is_connected(&self) -> bool;

    /// Stops background work (reconnecting); further `recv`s end.
    fn close(&self) {}
}
