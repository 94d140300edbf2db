//! Fixed-window request counters keyed by client or group, and the seed's limit table.
//!
//! A window opens at a key's first counted request and lasts `window` seconds; that start
//! plus the window is the `X-RateLimit-Reset` time. Counters never read a clock: the
//! caller passes `now` (Unix seconds), so tests move time by hand.
//!
//! Where the windows live: in memory on the embedded SQLite default (one API process; a
//! restart forgets them: the limits are abuse brakes, not quotas), in the store
//! (`crate::store::limits`, one atomic upsert per hit) when it is PostgreSQL, so a limit
//! holds across every API node on that database. A store error lets the request through
//! (logged): a limiter must not turn a database hiccup into an outage of its own.

use crate::store::{limits as sql, Db};
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
    /// key -> (window start, count): the windows, or with `shared` the last seen of them.
    slots: Mutex<HashMap<String, (u64, u32)>>,
    /// The store's windows and this limiter's name in them.
    shared: Option<(Db, &'static str)>,
}

impl FixedWindow {
    /// A limiter of `limit` per `window` seconds.
    pub fn new(limit: u32, window: u64) -> Self {
        FixedWindow {
            limit,
            window,
            slots: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// The same limiter with its windows in the store under `name` (shared by API nodes).
    pub fn in_store(mut self, db: Db, name: &'static str) -> Self {
        self.shared = Some((db, name));
        self
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

    fn window(&self, allowed: bool, start: u64, count: u32) -> Window {
        Window {
            allowed,
            limit: self.limit,
            remaining: self.limit.saturating_sub(count),
            reset: start + self.window,
        }
    }

    /// Looks at `key`'s window as this process last saw it, without counting and without
    /// I/O (the headers of protocol errors, answered before any request handler runs).
    pub fn peek_local(&self, key: &str, now: u64) -> Window {
        let slots = self.slots.lock().expect("rate-limit lock");
        let (start, count) = self.view(slots.get(key), now);
        self.window(count < self.limit, start, count)
    }

    /// Looks at `key`'s window without counting.
    pub async fn peek(&self, key: &str, now: u64) -> Window {
        if let Some((db, name)) = &self.shared {
            match sql::peek(db, name, key, self.window as i64, now as i64).await {
                Ok(Some((start, count))) => {
                    let (start, count) = (start as u64, count as u32);
                    self.remember(key, start, count);
                    return self.window(count < self.limit, start, count);
                }
                Ok(None) => return self.window(self.limit > 0, now, 0),
                Err(e) => tracing::warn!(error = %e, limiter = name, "rate-limit store"),
            }
        }
        self.peek_local(key, now)
    }

    fn remember(&self, key: &str, start: u64, count: u32) {
        self.slots
            .lock()
            .expect("rate-limit lock")
            .insert(key.to_string(), (start, count));
    }

    /// Counts one request for `key` if it is within the limit.
    pub async fn hit(&self, key: &str, now: u64) -> Window {
        if let Some((db, name)) = &self.shared {
            let (limit, window) = (i64::from(self.limit), self.window as i64);
            match sql::hit(db, name, key, limit, window, now as i64).await {
                Ok(c) => {
                    let (start, count) = (c.start as u64, c.count as u32);
                    self.remember(key, start, count);
                    return self.window(c.allowed, start, count);
                }
                Err(e) => tracing::warn!(error = %e, limiter = name, "rate-limit store"),
            }
        }
        self.hit_local(key, now)
    }

    fn hit_local(&self, key: &str, now: u64) -> Window {
        let mut slots = self.slots.lock().expect("rate-limit lock");
        let (start, count) = self.view(slots.get(key), now);
        let allowed = count < self.limit;
        let count = if allowed { count + 1 } else { count };
        slots.insert(key.to_string(), (start, count));
        self.window(allowed, start, count)
    }

    /// Takes back one counted request of `key` (a scan the engine refused never ran, so it
    /// must not lock its requester out).
    pub async fn unhit(&self, key: &str) {
        if let Some((db, name)) = &self.shared {
            if let Err(e) = sql::unhit(db, name, key).await {
                tracing::warn!(error = %e, limiter = name, "rate-limit store");
            }
        }
        let mut slots = self.slots.lock().expect("rate-limit lock");
        if let Some((_, count)) = slots.get_mut(key) {
            *count = count.saturating_sub(1);
        }
    }

    /// Forgets windows that have ended (bounded memory and table).
    pub async fn prune(&self, now: u64) {
        if let Some((db, name)) = &self.shared {
            if let Err(e) = sql::prune(db, name, self.window as i64, now as i64).await {
                tracing::warn!(error = %e, limiter = name, "rate-limit store");
            }
        }
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
    /// The limiters of [`Limits::default`], with their windows in the store (PostgreSQL:
    /// the limits hold across every API node on it).
    pub fn in_store(db: &Db) -> Self {
        let l = Limits::default();
        Limits {
            edge: l.edge.in_store(db.clone(), "edge"),
            fast_asn: l.fast_asn.in_store(db.clone(), "fast_asn"),
            deep_ip: l.deep_ip.in_store(db.clone(), "deep_ip"),
            deep_asn: l.deep_asn.in_store(db.clone(), "deep_asn"),
        }
    }

    /// Drops ended windows of every limiter.
    pub async fn prune(&self, now: u64) {
        for l in [&self.edge, &self.fast_asn, &self.deep_ip, &self.deep_asn] {
            l.prune(now).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdb;

    /// The same window arithmetic in memory and in either store.
    async fn counts_resets_and_reports(l: FixedWindow) {
        let t = 1_000;
        assert_eq!(
            l.hit("a", t).await,
            Window {
                allowed: true,
                limit: 3,
                remaining: 2,
                reset: 1_060
            }
        );
        l.hit("a", t + 1).await;
        assert_eq!(l.hit("a", t + 2).await.remaining, 0);
        let over = l.hit("a", t + 59).await;
        assert!(!over.allowed);
        assert_eq!((over.remaining, over.reset), (0, 1_060));
        assert_eq!(over.retry_after(t + 59), 1);
        assert!(!l.peek("a", t + 59).await.allowed);
        assert_eq!(l.peek_local("a", t + 59).remaining, 0);
        // A refund gives one back, once.
        l.unhit("a").await;
        assert!(l.hit("a", t + 59).await.allowed);
        assert!(!l.hit("a", t + 59).await.allowed);
        assert!(l.peek("b", t).await.allowed);
        // A new window at the reset time.
        let again = l.hit("a", t + 60).await;
        assert!(again.allowed);
        assert_eq!((again.remaining, again.reset), (2, 1_120));
        l.prune(t + 500).await;
        assert_eq!(l.peek("a", t + 500).await.remaining, 3);
    }

    #[tokio::test]
    async fn window_in_memory() {
        counts_resets_and_reports(FixedWindow::new(3, 60)).await;
    }

    #[tokio::test]
    async fn window_in_sqlite() {
        let t = testdb::sqlite().await;
        counts_resets_and_reports(FixedWindow::new(3, 60).in_store(t.db.clone(), "x")).await;
    }

    #[tokio::test]
    async fn window_in_postgres_shared_by_two_nodes() {
        let t = testdb::postgres().await;
        counts_resets_and_reports(FixedWindow::new(3, 60).in_store(t.db.clone(), "x")).await;
        // Two limiters (two API nodes) on one database count one window.
        let a = FixedWindow::new(3, 60).in_store(t.db.clone(), "y");
        let b = FixedWindow::new(3, 60).in_store(t.db.clone(), "y");
        let mut allowed = 0;
        for n in 0..10 {
            let l = if n % 2 == 0 { &a } else { &b };
            allowed += usize::from(l.hit("k", 5_000).await.allowed);
        }
        assert_eq!(allowed, 3);
    }
}
