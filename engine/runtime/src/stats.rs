//! Engine-wide counters shared between the I/O threads and observers (progress, metrics).

use portscope_core::classify::{DiscardCounts, DISCARD_KINDS};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters of the whole engine, updated by the send and receive threads once per batch.
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Probes handed to the kernel.
    pub sent: AtomicU64,
    /// Probes the kernel refused (no route, ...).
    pub send_failed: AtomicU64,
    /// Packets read from the capture socket.
    pub received: AtomicU64,
    /// Packets accepted as scan replies (including duplicates).
    pub accepted: AtomicU64,
    /// Kernel capture drops (socket buffer overflow).
    pub kernel_drops: AtomicU64,
    /// Discards by reason, indexed by `Discard::index`.
    pub discards: [AtomicU64; DISCARD_KINDS],
}

impl EngineStats {
    /// A snapshot of the discard counters.
    pub fn discards(&self) -> DiscardCounts {
        let mut d = DiscardCounts::default();
        for (out, c) in d.0.iter_mut().zip(&self.discards) {
            *out = c.load(Relaxed);
        }
        d
    }

    pub(crate) fn add_discards(&self, local: &mut DiscardCounts) {
        for (c, n) in self.discards.iter().zip(local.0.iter_mut()) {
            if *n > 0 {
                c.fetch_add(*n, Relaxed);
                *n = 0;
            }
        }
    }
}
