//! The engine's clock, injected: the system's monotonic clock in production, a simulated
//! one in tests, so the send loop's rounds, waits and pacing run deterministically in
//! milliseconds of real time (as quinn's tests do).

use portscope_core::Nanos;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// A monotonic clock the engine threads share.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in nanoseconds since an arbitrary start.
    fn now(&self) -> Nanos;

    /// The send thread has nothing to do before `until`. Returns how long it should block
    /// (on its control channel, so a new scan wakes it): the system clock lets real time
    /// pass; a simulated clock advances itself to `until` and returns zero.
    fn pass(&self, until: Nanos) -> Duration;
}

/// The system's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock(Instant);

impl SystemClock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        SystemClock(Instant::now())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        Nanos::from(self.0.elapsed())
    }

    fn pass(&self, until: Nanos) -> Duration {
        until.since(self.now()).as_duration()
    }
}

/// Simulated time: stands still while the engine works and jumps forward when the send
/// thread idles, but only once `settled` says every packet already sent has been answered
/// and processed (the in-memory transport's [`portscope_transport::memory::Quiet`]), so a
/// jump never outruns a reply that is still on its way through real threads.
pub struct SimClock {
    now: AtomicU64,
    settled: Box<dyn Fn() -> bool + Send + Sync>,
}

impl fmt::Debug for SimClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimClock({} ns)", self.now.load(SeqCst))
    }
}

impl SimClock {
    /// A simulated clock at zero; `settled` tells when the pipeline is quiet.
    pub fn new(settled: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        SimClock {
            now: AtomicU64::new(0),
            settled: Box::new(settled),
        }
    }
}

impl Clock for SimClock {
    fn now(&self) -> Nanos {
        Nanos(self.now.load(SeqCst))
    }

    fn pass(&self, until: Nanos) -> Duration {
        // Bounded, so a pipeline that never settles (a bug) still ends in real time.
        let give_up = Instant::now() + Duration::from_secs(2);
        while !(self.settled)() && Instant::now() < give_up {
            std::thread::sleep(Duration::from_micros(20));
        }
        self.now.fetch_max(until.0, SeqCst);
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_clock_jumps_only_forward() {
        let c = SimClock::new(|| true);
        assert_eq!(c.pass(Nanos::from_millis(5)), Duration::ZERO);
        assert_eq!(c.now(), Nanos::from_millis(5));
        c.pass(Nanos::from_millis(1));
        assert_eq!(c.now(), Nanos::from_millis(5));
    }

    #[test]
    fn system_clock_passes_real_time() {
        let c = SystemClock::new();
        let d = c.pass(c.now().add(Nanos::from_millis(50)));
        assert!(d > Duration::from_millis(40) && d <= Duration::from_millis(50));
    }
}
