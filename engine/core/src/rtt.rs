//! Round-trip-time estimation and the retransmission wait derived from it.
//!
//! Samples come from replies (the runtime derives each from when the answered probe was
//! sent, see `order::Permutation::position_of`, and when the reply arrived, see [`sample`]);
//! the wait before a retry round, and before
//! the scan is declared finished, is a high percentile of what was measured times a safety
//! factor, clamped to the operator's bounds. With no sample yet (nothing answered) the
//! upper bound is used: silence proves nothing about the path.

use crate::Nanos;
use hdrhistogram::Histogram;

/// The default lower bound of the derived wait (`--min-wait`, the daemon's `min_wait`).
///
/// The wait itself follows the RTT measured during the scan (`2 x p99 + p50`); the floor only
/// binds on paths faster than about 1 ms. It need not cover the receive thread's own lag:
/// a scan ends only after its receive thread has read the capture socket dry (and the
/// ring's block timeout has passed), and that lag is measured and added to the wait (see
/// [`RttEstimator::wait_after`]; without kernel receive stamps the samples run to the read
/// and include it), so a late receive thread lengthens the wait it computes. Measured in
/// the lab (one host x 65,535 ports): 10 ms made the three rounds' waits 30 ms of a 0.175 s
/// scan.
pub const DEFAULT_MIN_WAIT: std::time::Duration = std::time::Duration::from_millis(3);

/// One RTT sample: from `sent` (the probe's send time) to the reply's arrival, on the
/// engine's clock. The reply was read at `read`; `age` is how long the kernel had held it by
/// then (from its receive stamp, if the transport has one), so it arrived at `read - age`.
/// Without a stamp the read time stands in. Clamped: never later than `read`, never before
/// `sent` (a sample is never negative, whatever a clock step did to the stamp).
#[inline]
pub fn sample(sent: Nanos, read: Nanos, age: Option<Nanos>) -> Nanos {
    let arrived = match age {
        Some(a) => read.since(a),
        None => read,
    };
    arrived.since(sent)
}

/// Bounds for the derived wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitBounds {
    /// Never wait less than this (covers scheduling jitter on fast paths).
    pub min: Nanos,
    /// Never wait more than this (`--max-wait`).
    pub max: Nanos,
}

impl Default for WaitBounds {
    fn default() -> Self {
        WaitBounds {
            min: Nanos::from_millis(20),
            max: Nanos::from_millis(2_000),
        }
    }
}

/// RTT histogram in microseconds (1 us .. 60 s, 2 significant digits).
#[derive(Debug, Clone)]
pub struct RttEstimator {
    hist: Histogram<u32>,
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self::new()
    }
}

impl RttEstimator {
    /// An empty estimator. Allocates once; recording never allocates.
    pub fn new() -> Self {
        RttEstimator {
            hist: Histogram::new_with_bounds(1, 60_000_000, 2).expect("static bounds are valid"),
        }
    }

    /// Records one sample.
    pub fn record(&mut self, rtt: Nanos) {
        let us = (rtt.0 / 1_000).clamp(1, 60_000_000);
        // Saturating record: a counter overflow is not worth failing a scan over.
        self.hist.saturating_record(us);
    }

    /// Number of samples.
    pub fn samples(&self) -> u64 {
        self.hist.len()
    }

    /// The value at `q` (0..=1), if any sample exists.
    pub fn quantile(&self, q: f64) -> Option<Nanos> {
        (!self.hist.is_empty()).then(|| Nanos::from_micros(self.hist.value_at_quantile(q)))
    }

    /// How long to wait for stragglers after the last probe of a round:
    /// `2 * p99 + p50`, clamped to `bounds`; `bounds.max` without samples.
    pub fn wait(&self, bounds: WaitBounds) -> Nanos {
        self.wait_after(Nanos(0), bounds)
    }

    /// [`Self::wait`] plus `lag`, how long a reply the kernel has received may take to
    /// reach the engine (a receive ring's hand-over): `2 * p99 + p50 + lag`, clamped to
    /// `bounds`; `bounds.max` without samples. Samples taken from the kernel's receive time
    /// leave that lag out, so it is added once (as its p99), not three times.
    pub fn wait_after(&self, lag: Nanos, bounds: WaitBounds) -> Nanos {
        match (self.quantile(0.99), self.quantile(0.5)) {
            (Some(p99), Some(p50)) => Nanos(2 * p99.0 + p50.0)
                .add(lag)
                .clamp(bounds.min, bounds.max),
            _ => bounds.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounds from `min_ms` to one second.
    fn bounds(min_ms: u64) -> WaitBounds {
        WaitBounds {
            min: Nanos::from_millis(min_ms),
            max: Nanos::from_millis(1000),
        }
    }

    /// Records `rtt` `n` times.
    fn record_n(e: &mut RttEstimator, n: usize, rtt: Nanos) {
        for _ in 0..n {
            e.record(rtt);
        }
    }

    #[test]
    fn a_sample_runs_from_the_send_to_the_kernels_receive_time() {
        let sent = Nanos::from_millis(100);
        let read = Nanos::from_millis(104);
        // Without a stamp: the read time.
        assert_eq!(sample(sent, read, None), Nanos::from_millis(4));
        // Held 3.7 ms in a ring block before the read: 300 us on the wire.
        assert_eq!(
            sample(sent, read, Some(Nanos::from_micros(3_700))),
            Nanos::from_micros(300)
        );
        // A stamp that puts the arrival before the send (a clock step back): 0, not less.
        assert_eq!(sample(sent, read, Some(Nanos::from_millis(5))), Nanos(0));
        assert_eq!(sample(sent, read, Some(Nanos(u64::MAX))), Nanos(0));
        // A stamp after the read reaches the sample as age 0 (the transport clamps it):
        // never later than the read.
        assert_eq!(sample(sent, read, Some(Nanos(0))), Nanos::from_millis(4));
        // A read before the send (cannot happen, but must not wrap): 0.
        assert_eq!(sample(read, sent, None), Nanos(0));
    }

    #[test]
    fn wait_follows_measurements_within_bounds() {
        let b = bounds(5);
        let mut e = RttEstimator::new();
        assert_eq!(e.wait(b), b.max, "no samples: upper bound");
        record_n(&mut e, 1000, Nanos::from_micros(100));
        assert_eq!(e.wait(b), b.min, "LAN RTT: lower bound");
        record_n(&mut e, 100, Nanos::from_millis(80));
        let w = e.wait(b);
        assert!(
            w >= Nanos::from_millis(160) && w <= Nanos::from_millis(170),
            "{w:?}"
        );
        record_n(&mut e, 10_000, Nanos::from_millis(900));
        assert_eq!(e.wait(b), b.max);
    }

    #[test]
    fn the_receive_lag_is_added_once_within_bounds() {
        let b = bounds(3);
        let mut e = RttEstimator::new();
        assert_eq!(e.wait_after(Nanos::from_millis(4), b), b.max, "no samples");
        record_n(&mut e, 1000, Nanos::from_micros(100));
        // 2 x 100 us + 100 us + 4 ms.
        assert_eq!(
            e.wait_after(Nanos::from_millis(4), b),
            Nanos::from_micros(4_300)
        );
        assert_eq!(e.wait_after(Nanos(0), b), b.min);
        assert_eq!(e.wait_after(Nanos::from_millis(5_000), b), b.max);
    }
}
