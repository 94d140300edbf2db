//! Wall-clock time as a value the API is handed, so tests can move it (rate-limit windows,
//! expiry, the engine grace period). Not for measuring latency: that uses `Instant`.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of Unix time in milliseconds.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Whole seconds since the Unix epoch.
    fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `unix_ms`.
    pub fn at(unix_ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(unix_ms)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set_ms(&self, unix_ms: u64) {
        self.0.store(unix_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Hands out the `created_at_ms` of new scans: now, or one more than the last one handed
/// out, so scans created in the same millisecond keep their order.
#[derive(Debug, Default)]
pub struct CreatedStamps {
    /// The last value handed out.
    last: AtomicI64,
}

impl CreatedStamps {
    /// The next stamp, at `clock`'s now or later.
    pub fn next(&self, clock: &dyn Clock) -> i64 {
        let now_ms = clock.now_ms() as i64;
        let prev = self
            .last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now_ms.max(last + 1))
            })
            .unwrap_or(now_ms);
        now_ms.max(prev + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at(1_711_940_000_000);
        let d = c.clone();
        assert_eq!(c.now_secs(), 1_711_940_000);
        d.advance(Duration::from_secs(61));
        assert_eq!(c.now_secs(), 1_711_940_061);
    }

    #[test]
    fn created_stamps_increase_within_one_millisecond() {
        let c = ManualClock::at(5_000);
        let stamps = CreatedStamps::default();
        assert_eq!(
            [stamps.next(&c), stamps.next(&c), stamps.next(&c)],
            [5_000, 5_001, 5_002]
        );
        c.set_ms(9_000);
        assert_eq!(stamps.next(&c), 9_000);
        c.set_ms(1_000);
        assert_eq!(
            stamps.next(&c),
            9_001,
            "a clock stepping back never reorders scans"
        );
    }
}
