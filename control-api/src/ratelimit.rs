//! Fixed-window request counters keyed by client or group, and the seed's limit table.
//!
//! A window opens at a key's first counted request and lasts `window` seconds; that start
//! plus the window is the `X-RateLimit-Reset` time. Counters never read a clock: the
//! caller passes `now` (Unix seconds), so tests move time by hand. In memory only: a
//! restart of the API forgets the counters (documented; the limits are abuse brakes, not
//! quotas).

use std::collections::HashMap;
use std::sync::Mutex;

/// The seed's limits (`Rate limits` table).
pub mod table {
    /// Edge limit: requests per client IP ...
    pub const EDGE_LIMIT: u32 = 30;
    /// ... per minute, every endpoint.
    pub const EDGE_WINDOW: u64 = 60;
    /// Fast scans per ASN ...
    pub const FAST_ASN_LIMIT: u32 = 2000;
    /// ... per hour.
    pub const FAST_ASN_WINDOW: u64 = 3600;
    /// Deep scans per IP ...
    pub const DEEP_IP_LIMIT: u32 = 1;
    /// ... per 5 minutes.
    pub const DEEP_IP_WINDOW: u64 = 300;
    /// Deep scans per ASN ...
    pub const DEEP_ASN_LIMIT: u32 = 200;
    /// ... per hour.
    pub const DEEP_ASN_WINDOW: u64 = 3600;
}

/// The state of one key's window after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Whether the request is within the limit.
    pub allowed: bool,
    /// The limit.
    pub limit: u32,
    /// Requests left in this window (after this one, if it was counted).
    pub remaining: u32,
    /// Unix seconds when the window resets.
    pub reset: u64,
}

impl Window {
    /// Seconds until the window resets (at least 1), for `Retry-After`.
    pub fn retry_after(&self, now: u64) -> u64 {
        self.reset.saturating_sub(now).max(1)
    }
}

/// One limit: `limit` requests per `window` seconds per key.
#[derive(Debug)]
pub struct FixedWindow {
    limit: u32,
    window: u64,
    /// key -> (window start, count).
    slots: Mutex<HashMap<String, (u64, u32)>>,
}

impl FixedWindow {
    /// A limiter of `limit` per `window` seconds.
    pub fn new(limit: u32, window: u64) -> Self {
        FixedWindow {
            limit,
            window,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    fn view(&self, slot: Option<&(u64, u32)>, now: u64) -> (u64, u32) {
        match slot {
            Some(&(start, count)) if now < start + self.window => (start, count),
            _ => (now, 0),
        }
    }

    /// Looks at `key`'s window without counting.
    pub fn peek(&self, key: &str, now: u64) -> Window {
        let slots = self.slots.lock().expect("rate-limit lock");
        let (start, count) = self.view(slots.get(key), now);
        Window {
            allowed: count < self.limit,
            limit: self.limit,
            remaining: self.limit.saturating_sub(count),
            reset: start + self.window,
        }
    }

    /// Counts one request for `key` if it is within the limit.
    pub fn hit(&self, key: &str, now: u64) -> Window {
        let mut slots = self.slots.lock().expect("rate-limit lock");
        let (start, count) = self.view(slots.get(key), now);
        let allowed = count < self.limit;
        let count = if allowed { count + 1 } else { count };
        slots.insert(key.to_string(), (start, count));
        Window {
            allowed,
            limit: self.limit,
            remaining: self.limit - count,
            reset: start + self.window,
        }
    }

    /// Takes back one counted request of `key` (a scan the engine refused never ran, so it
    /// must not lock its requester out).
    pub fn unhit(&self, key: &str) {
        let mut slots = self.slots.lock().expect("rate-limit lock");
        if let Some((_, count)) = slots.get_mut(key) {
            *count = count.saturating_sub(1);
        }
    }

    /// Forgets windows that have ended (bounded memory).
    pub fn prune(&self, now: u64) {
        let window = self.window;
        self.slots
            .lock()
            .expect("rate-limit lock")
            .retain(|_, (start, _)| now < *start + window);
    }
}

/// All limiters of the self-scan API.
#[derive(Debug)]
pub struct Limits {
    /// Every request, per client IP.
    pub edge: FixedWindow,
    /// New fast scans per ASN group.
    pub fast_asn: FixedWindow,
    /// New deep scans per IP.
    pub deep_ip: FixedWindow,
    /// New deep scans per ASN group.
    pub deep_asn: FixedWindow,
}

impl Default for Limits {
    fn default() -> Self {
        use table::*;
        Limits {
            edge: FixedWindow::new(EDGE_LIMIT, EDGE_WINDOW),
            fast_asn: FixedWindow::new(FAST_ASN_LIMIT, FAST_ASN_WINDOW),
            deep_ip: FixedWindow::new(DEEP_IP_LIMIT, DEEP_IP_WINDOW),
            deep_asn: FixedWindow::new(DEEP_ASN_LIMIT, DEEP_ASN_WINDOW),
        }
    }
}

impl Limits {
    /// Drops ended windows of every limiter.
    pub fn prune(&self, now: u64) {
        for l in [&self.edge, &self.fast_asn, &self.deep_ip, &self.deep_asn] {
            l.prune(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_resets_and_reports() {
        let l = FixedWindow::new(3, 60);
        let t = 1_000;
        assert_eq!(
            l.hit("a", t),
            Window {
                allowed: true,
                limit: 3,
                remaining: 2,
                reset: 1_060
            }
        );
        l.hit("a", t + 1);
        assert_eq!(l.hit("a", t + 2).remaining, 0);
        let over = l.hit("a", t + 59);
        assert!(!over.allowed);
        assert_eq!(over.retry_after(t + 59), 1);
        assert!(l.peek("b", t).allowed);
        // A new window at the reset time.
        let again = l.hit("a", t + 60);
        assert!(again.allowed);
        assert_eq!(again.reset, 1_120);
        l.prune(t + 500);
        assert_eq!(l.peek("a", t + 500).remaining, 3);
    }
}
