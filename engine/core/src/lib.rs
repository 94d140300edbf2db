//! Portscope's pure scan core: packets, cookies, target order, pacing and classification.
//!
//! **Architecture invariant:** nothing in this crate does I/O, reads a clock or draws
//! randomness. Time ([`Nanos`]), keys and buffers are arguments, so every decision the
//! engine makes can be replayed in a unit test. The per-packet paths
//! ([`probe::ProbeTemplate::stamp`], [`reply::parse`], [`classify::ScanSpace::classify`])
//! do not allocate.

pub mod classify;
pub mod cookie;
pub mod order;
pub mod pacer;
pub mod policy;
pub mod ports;
pub mod probe;
pub mod reply;
pub mod results;
pub mod retry;
pub mod rtt;
pub mod services;
pub mod targets;
pub mod wire;

/// A point in time in nanoseconds on an arbitrary monotonic clock chosen by the caller.
///
/// The core never reads a clock; the runtime passes `Nanos` in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Nanos(pub u64);

impl Nanos {
    /// Nanoseconds per second.
    pub const SECOND: u64 = 1_000_000_000;

    /// Builds from microseconds.
    pub const fn from_micros(us: u64) -> Self {
        Nanos(us * 1_000)
    }

    /// Builds from milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Nanos(ms * 1_000_000)
    }

    /// Saturating difference `self - earlier`.
    pub const fn since(self, earlier: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating.
    pub const fn add(self, d: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(d.0))
    }

    /// As a [`core::time::Duration`].
    pub const fn as_duration(self) -> core::time::Duration {
        core::time::Duration::from_nanos(self.0)
    }
}

impl From<core::time::Duration> for Nanos {
    fn from(d: core::time::Duration) -> Self {
        Nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}
