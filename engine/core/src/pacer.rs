//! A token-bucket pacer that never sleeps: it answers "how many may I send now" and
//! "when may I send next" for a time the caller passes in (the shape of quinn's pacer).

use crate::Nanos;

/// Token bucket with `rate` packets per second and a burst of `burst` packets.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: u64,
    /// Credit in units of 1/1e9 packet, capped at `burst * 1e9`.
    credit: u128,
    cap: u128,
    last: Nanos,
}

const UNIT: u128 = 1_000_000_000;

impl Pacer {
    /// A pacer allowing `rate` packets/s (at least 1) with bursts of up to `burst` packets.
    /// The bucket starts full enough for one packet.
    pub fn new(rate: u64, burst: u32, now: Nanos) -> Self {
        let burst = u128::from(burst.max(1));
        Pacer {
            rate: rate.max(1),
            credit: UNIT,
            cap: burst * UNIT,
            last: now,
        }
    }

    /// The configured rate in packets per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    fn refill(&mut self, now: Nanos) {
        let dt = u128::from(now.since(self.last).0);
        self.last = self.last.max(now);
        self.credit = (self.credit + dt * u128::from(self.rate)).min(self.cap);
    }

    /// Takes up to `want` tokens at time `now` and returns how many were granted.
    pub fn poll(&mut self, now: Nanos, want: u32) -> u32 {
        self.refill(now);
        let avail = (self.credit / UNIT).min(u128::from(want)) as u32;
        self.credit -= u128::from(avail) * UNIT;
        avail
    }

    /// Returns unused tokens (packets that were granted but not sent).
    pub fn give_back(&mut self, n: u32) {
        self.credit = (self.credit + u128::from(n) * UNIT).min(self.cap);
    }

    /// The earliest time at which at least one token is available.
    pub fn next_ready(&self, now: Nanos) -> Nanos {
        let dt = u128::from(now.since(self.last).0);
        let credit = self.credit + dt * u128::from(self.rate);
        if credit >= UNIT {
            return now;
        }
        let missing = UNIT - credit;
        let wait = missing.div_ceil(u128::from(self.rate));
        now.add(Nanos(wait as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_rate_over_a_simulated_second() {
        let mut p = Pacer::new(100_000, 64, Nanos(0));
        let mut sent = 0u64;
        let mut t = Nanos(0);
        while t.0 < Nanos::SECOND {
            sent += u64::from(p.poll(t, 64));
            t = Nanos(t.0 + 50_000); // poll every 50 us
        }
        assert!((99_900..=100_100).contains(&sent), "sent {sent}");
    }

    #[test]
    fn burst_is_capped() {
        let mut p = Pacer::new(1_000, 10, Nanos(0));
        // Idle for 10 s: still only a burst of 10.
        assert_eq!(p.poll(Nanos(10 * Nanos::SECOND), 1000), 10);
        assert_eq!(p.poll(Nanos(10 * Nanos::SECOND), 1000), 0);
    }

    #[test]
    fn next_ready_is_exact() {
        let mut p = Pacer::new(1_000, 1, Nanos(0));
        assert_eq!(p.poll(Nanos(0), 1), 1);
        assert_eq!(p.next_ready(Nanos(0)), Nanos(1_000_000));
        assert_eq!(p.poll(Nanos(999_999), 1), 0);
        assert_eq!(p.poll(Nanos(1_000_000), 1), 1);
        p.give_back(1);
        assert_eq!(p.next_ready(Nanos(1_000_000)), Nanos(1_000_000));
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut p = Pacer::new(1_000, 5, Nanos(5_000_000));
        assert_eq!(p.poll(Nanos(1_000), 10), 1);
        assert_eq!(p.poll(Nanos(6_000_000), 10), 1);
    }
}
