//! The self-scan service: turns POSTs into engine scans, engine events into rows, and rows
//! into the seed's response shapes. It owns the background work (engine event loop,
//! enrichment, webhooks, expiry purge and the engine grace check).
//!
//! Lifecycle of a scan: `queued` (inserted, `Submit` sent or pending until the engine is
//! reachable) -> `running` (engine `Progress` with queue position 0) -> engine `Finished`:
//! complete -> banners + PTR -> `complete`; failed -> `failed` with the engine's reason.
//! On every (re)connect the service re-asks `Status` for each live scan, so an API restart
//! or a dropped connection loses nothing the engine still knows; a scan it forgot comes back
//! as `engine_restarted`. If the engine stays unreachable longer than the grace period, live
//! scans fail with `engine_unavailable`.
//!
//! It does not parse HTTP or decide who may ask: the HTTP layer validates the target and
//! the callback first and hands over a checked address.

use crate::clock::Clock;
use crate::engine::{EngineClient, EngineError, EngineNotice};
use crate::enrich::{BannerGrabber, PtrResolver};
use crate::error::ApiError;
use crate::metrics::{Metrics, StateLabel};
use crate::model::{service_name, PortEntry, ScanResponse, ScanState, ScanType};
use crate::netaddr::AsnTable;
use crate::ratelimit::{Limits, Window};
use crate::store::{NewScan, ScanRow, Store};
use crate::util::lock;
use crate::webhook::Webhooks;
use portscope_core::results::PortState;
use portscope_proto::{Event, Outcome, Request};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything the service uses.
#[derive(Debug, Clone)]
pub struct ScanDeps {
    /// Results.
    pub store: Store,
    /// The engine.
    pub engine: Arc<dyn EngineClient>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Banner grabbing.
    pub banners: Arc<dyn BannerGrabber>,
    /// PTR lookups.
    pub ptr: Arc<dyn PtrResolver>,
    /// Webhook delivery.
    pub webhooks: Webhooks,
    /// Metrics.
    pub metrics: Metrics,
    /// Rate limiters (shared with the edge limit).
    pub limits: Arc<Limits>,
    /// Client grouping for per-ASN limits.
    pub asn: AsnTable,
}

/// Timings.
#[derive(Debug, Clone, Copy)]
pub struct ScanSettings {
    /// Result lifetime, seconds.
    pub ttl_secs: u64,
    /// Engine grace period, ms.
    pub grace_ms: u64,
    /// How long a POST waits for `Accepted`.
    pub submit_wait: Duration,
    /// Maintenance period.
    pub maintenance_interval: Duration,
}

/// The engine's first answer to a `Submit`.
#[derive(Debug)]
enum Answer {
    Accepted,
    Rejected { code: String, message: String },
    Finished,
}

/// The engine connection as last seen.
#[derive(Debug, Clone, Copy)]
struct Link {
    connected: bool,
    /// Unix ms since when it has been down.
    down_since_ms: u64,
}

/// The service.
#[derive(Debug)]
pub struct ScanService {
    deps: ScanDeps,
    settings: ScanSettings,
    /// Serialises coalescing check, limits, insert and `Submit`, so two concurrent POSTs
    /// for one address and type create one scan.
    submit_lock: tokio::sync::Mutex<()>,
    /// POSTs waiting for the engine's first answer, by scan id.
    pending: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    link: Mutex<Link>,
    /// Scans whose banners / PTR are being fetched (no double work on replays).
    finalizing: Mutex<HashSet<String>>,
    /// Last `created_at_ms` handed out (strictly increasing, orders scans of one ms).
    last_created: AtomicI64,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl ScanService {
    /// Starts the service and its background tasks (engine events, maintenance, resuming
    /// unfinished enrichment and webhooks from before a restart).
    pub async fn start(deps: ScanDeps, settings: ScanSettings) -> Arc<Self> {
        let now = deps.clock.now_ms();
        let svc = Arc::new(ScanService {
            deps,
            settings,
            submit_lock: tokio::sync::Mutex::new(()),
            pending: Mutex::new(HashMap::new()),
            link: Mutex::new(Link {
                connected: false,
                down_since_ms: now,
            }),
            finalizing: Mutex::new(HashSet::new()),
            last_created: AtomicI64::new(0),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
        });
        // Finish what a previous run left: enrichment of engine-complete scans, webhooks of
        // final scans.
        match svc.deps.store.non_final().await {
            Ok(rows) => {
                for r in rows.iter().filter(|r| r.engine_done == 1) {
                    svc.spawn_finalize(r.id.clone());
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list live scans"),
        }
        match svc.deps.store.final_with_pending_callbacks().await {
            Ok(ids) => ids.into_iter().for_each(|id| svc.spawn_webhooks(id)),
            Err(e) => tracing::error!(error = %e, "cannot list pending callbacks"),
        }
        if svc.deps.engine.is_connected() {
            svc.on_connected().await;
        }
        let me = svc.clone();
        svc.spawn(async move { me.run_events().await });
        let me = svc.clone();
        svc.spawn(async move {
            let mut tick = tokio::time::interval(me.settings.maintenance_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.maintain().await;
            }
        });
        svc
    }

    /// Stops every background task and waits for them.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.deps.store
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    fn now_secs(&self) -> i64 {
        self.deps.clock.now_secs() as i64
    }

    fn expiry(&self) -> i64 {
        // Checked: a huge `result-ttl-secs` saturates instead of wrapping into the past.
        self.now_secs()
            .saturating_add(i64::try_from(self.settings.ttl_secs).unwrap_or(i64::MAX))
    }

    /// Whether the engine has been unreachable for longer than the grace period.
    fn engine_gone(&self) -> bool {
        let link = *lock(&self.link);
        !link.connected
            && self.deps.clock.now_ms().saturating_sub(link.down_since_ms) >= self.settings.grace_ms
    }

    /// Starts a scan of `ip`, or joins the live one of that address and type. Returns the
    /// scan id. `callback` must already be validated.
    pub async fn submit(
        &self,
        ip: IpAddr,
        t: ScanType,
        callback: Option<&str>,
    ) -> Result<String, ApiError> {
        let store = &self.deps.store;
        let ip_s = ip.to_string();
        let guard = self.submit_lock.lock().await;
        if let Some(live) = store.active(&ip_s, t).await? {
            if let Some(url) = callback {
                if !store.add_callback(&live.id, url).await? {
                    return Err(ApiError::InvalidCallback(format!(
                        "the live scan of this address already has {} callback URLs, the \
                         most one scan carries; poll GET instead, or reuse one of its URLs",
                        crate::store::MAX_CALLBACKS
                    )));
                }
            }
            return Ok(live.id);
        }
        if self.engine_gone() {
            return Err(ApiError::EngineUnavailable);
        }
        self.check_limits(ip, t).await?;
        let id = new_id();
        let now_ms = self.deps.clock.now_ms() as i64;
        let prev = self
            .last_created
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now_ms.max(last + 1))
            })
            .unwrap_or(now_ms);
        let created = now_ms.max(prev + 1);
        store
            .insert(&NewScan {
                id: &id,
                ip: &ip_s,
                scan_type: t,
                created_at_ms: created,
                expires_at: self.expiry(),
            })
            .await?;
        if let Some(url) = callback {
            store.add_callback(&id, url).await?;
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        let sent = self.send_submit(&id, &ip_s, t).await;
        drop(guard);
        if !sent {
            lock(&self.pending).remove(&id);
            return Ok(id);
        }
        let answer = tokio::time::timeout(self.settings.submit_wait, rx).await;
        lock(&self.pending).remove(&id);
        match answer {
            Ok(Ok(Answer::Rejected { code, message })) => match code.as_str() {
                "policy" => {
                    self.refund_limits(ip, t).await;
                    Err(ApiError::InvalidTarget(format!(
                        "the engine refused to scan {ip_s}: {message}"
                    )))
                }
                "busy" => {
                    self.refund_limits(ip, t).await;
                    Err(ApiError::EngineBusy(message))
                }
                _ => Ok(id),
            },
            _ => Ok(id),
        }
    }

    /// Takes back what [`Self::check_limits`] counted, for a scan the engine refused: the
    /// requester may try again (after `Retry-After`) without waiting out a scan limit.
    async fn refund_limits(&self, ip: IpAddr, t: ScanType) {
        let l = &self.deps.limits;
        let group = self.deps.asn.group(ip);
        match t {
            ScanType::Fast => l.fast_asn.unhit(&group).await,
            ScanType::Deep => {
                l.deep_ip.unhit(&ip.to_string()).await;
                l.deep_asn.unhit(&group).await;
            }
        }
    }

    /// Checks and counts the per-type limits of a new scan (not for coalesced POSTs).
    async fn check_limits(&self, ip: IpAddr, t: ScanType) -> Result<(), ApiError> {
        let now = self.deps.clock.now_secs();
        let l = &self.deps.limits;
        let group = self.deps.asn.group(ip);
        let ip_key = ip.to_string();
        let checks: Vec<(&crate::ratelimit::FixedWindow, &str, &str)> = match t {
            ScanType::Fast => vec![(
                &l.fast_asn,
                group.as_str(),
                "2000 fast scans per network (ASN) per hour",
            )],
            ScanType::Deep => vec![
                (
                    &l.deep_ip,
                    ip_key.as_str(),
                    "1 deep scan per IP per 5 minutes",
                ),
                (
                    &l.deep_asn,
                    group.as_str(),
                    "200 deep scans per network (ASN) per hour",
                ),
            ],
        };
        let mut over: Vec<(Window, &str)> = Vec::new();
        for (lim, key, what) in &checks {
            let w = lim.peek(key, now).await;
            if !w.allowed {
                over.push((w, *what));
            }
        }
        if let Some(retry_after) = over.iter().map(|(w, _)| w.retry_after(now)).max() {
            let what: Vec<&str> = over.iter().map(|(_, w)| *w).collect();
            return Err(ApiError::RateLimited {
                retry_after,
                message: format!("rate limit reached: {}", what.join("; ")),
            });
        }
        for (lim, key, _) in checks {
            lim.hit(key, now).await;
        }
        Ok(())
    }

    /// Sends the `Submit`; false if the engine is not reachable now (sent on reconnect).
    async fn send_submit(&self, id: &str, ip: &str, t: ScanType) -> bool {
        let req = Request::Submit {
            id: id.to_string(),
            targets: vec![ip.to_string()],
            ports: t.ports_spec(),
            kind: t.kind(),
            priority: t.priority(),
        };
        match self.deps.engine.send(req).await {
            Ok(()) => {
                if let Err(e) = self.deps.store.mark_submitted(id).await {
                    tracing::error!(error = %e, %id, "cannot mark scan submitted");
                }
                true
            }
            Err(EngineError::NotConnected) => false,
            Err(e) => {
                tracing::warn!(error = %e, %id, "submit not sent; retrying on reconnect");
                false
            }
        }
    }

    /// The newest unexpired scan of this address and type.
    pub async fn latest(&self, ip: IpAddr, t: ScanType) -> Result<Option<ScanRow>, ApiError> {
        Ok(self
            .deps
            .store
            .latest(&ip.to_string(), t, self.now_secs())
            .await?)
    }

    /// A scan by id.
    pub async fn get(&self, id: &str) -> Result<Option<ScanRow>, ApiError> {
        Ok(self.deps.store.get(id).await?)
    }

    /// The response body of a scan.
    pub async fn view(&self, row: &ScanRow) -> Result<ScanResponse, ApiError> {
        let t = row.scan_type();
        let n = |x: i64| u32::try_from(x).unwrap_or(0);
        let state = match row.status.as_str() {
            "queued" => {
                let qp = match row.queue_position {
                    Some(q) => n(q),
                    None => n(self.deps.store.queued_before(row.created_at_ms).await?),
                };
                ScanState::Queued {
                    eta_seconds: t.eta_base() * (u64::from(qp) + 1),
                    queue_position: qp,
                    chunks_complete: n(row.chunks_complete),
                    total_chunks: n(row.total_chunks),
                }
            }
            "running" => ScanState::Running {
                chunks_complete: n(row.chunks_complete),
                total_chunks: n(row.total_chunks),
            },
            "complete" => {
                let mut open = Vec::new();
                let mut filtered = Vec::new();
                let mut banners = BTreeMap::new();
                for p in self.deps.store.ports(&row.id).await? {
                    let port = u16::try_from(p.port).unwrap_or(0);
                    if let Some(b) = &p.banner {
                        banners.insert(port, b.clone());
                    }
                    let entry = PortEntry {
                        port,
                        state: p.state.clone(),
                        service: service_name(port),
                        banner: p.banner,
                    };
                    if p.state == "open" {
                        open.push(entry);
                    } else {
                        filtered.push(entry);
                    }
                }
                ScanState::Complete {
                    ports_open: open,
                    ports_filtered: filtered,
                    service_banners: banners,
                    ptr_record: row.ptr_record.clone(),
                    duration_ms: row.duration_ms.unwrap_or(0).max(0) as u64,
                    completed_at: row.completed_at.unwrap_or(0).max(0) as u64,
                    expires_at: row.expires_at.max(0) as u64,
                }
            }
            _ => ScanState::Failed {
                chunks_complete: n(row.chunks_complete),
                total_chunks: n(row.total_chunks),
                fail_reason: row.fail_reason.clone().unwrap_or_else(|| "unknown".into()),
            },
        };
        Ok(ScanResponse {
            ip: row.ip.clone(),
            scan_type: t,
            state,
        })
    }

    async fn run_events(self: Arc<Self>) {
        while let Some(n) = self.deps.engine.recv().await {
            self.handle(n).await;
        }
    }

    async fn handle(self: &Arc<Self>, n: EngineNotice) {
        match n {
            EngineNotice::Connected => self.on_connected().await,
            EngineNotice::Disconnected => {
                let mut link = lock(&self.link);
                if link.connected {
                    link.connected = false;
                    link.down_since_ms = self.deps.clock.now_ms();
                }
                self.deps.metrics.engine_connected.set(0);
            }
            EngineNotice::Event(e) => {
                if let Err(err) = self.on_event(e).await {
                    tracing::error!(error = %err, "engine event not recorded");
                }
            }
        }
    }

    /// (Re)connected: submit what was never sent, re-ask `Status` for the rest.
    async fn on_connected(self: &Arc<Self>) {
        {
            let mut link = lock(&self.link);
            link.connected = true;
        }
        self.deps.metrics.engine_connected.set(1);
        let _guard = self.submit_lock.lock().await;
        let rows = match self.deps.store.non_final().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot list live scans");
                return;
            }
        };
        for r in rows {
            if r.engine_done == 1 {
                self.spawn_finalize(r.id.clone());
            } else if r.submitted == 1 {
                let req = Request::Status {
                    id: Some(r.id.clone()),
                };
                if let Err(e) = self.deps.engine.send(req).await {
                    tracing::warn!(error = %e, id = %r.id, "status not sent");
                }
            } else {
                self.send_submit(&r.id, &r.ip, r.scan_type()).await;
            }
        }
    }

    fn answer(&self, id: &str, a: Answer) {
        if let Some(tx) = lock(&self.pending).remove(id) {
            let _ = tx.send(a);
        }
    }

    async fn on_event(self: &Arc<Self>, e: Event) -> Result<(), sqlx::Error> {
        let store = &self.deps.store;
        match e {
            Event::Hello { engine, protocol } => {
                tracing::info!(%engine, protocol, "engine says hello");
            }
            Event::Accepted {
                id,
                queue_position,
                total_chunks,
            } => {
                store
                    .progress(&id, queue_position, None, total_chunks)
                    .await?;
                self.answer(&id, Answer::Accepted);
            }
            Event::Rejected { id, code, message } => {
                tracing::warn!(%id, %code, %message, "engine rejected a scan");
                if code == "duplicate" {
                    // The engine already has this id (a submit sent just before a crash or
                    // disconnect): attach to it instead.
                    store.mark_submitted(&id).await?;
                    let req = Request::Status {
                        id: Some(id.clone()),
                    };
                    if let Err(e) = self.deps.engine.send(req).await {
                        tracing::warn!(error = %e, %id, "status not sent");
                    }
                } else {
                    let reason = format!("rejected_{code}");
                    if store
                        .fail(&id, &reason, self.now_secs(), self.expiry())
                        .await?
                    {
                        self.spawn_webhooks(id.clone());
                    }
                }
                self.answer(&id, Answer::Rejected { code, message });
            }
            Event::Progress {
                id,
                queue_position,
                chunks_complete,
                total_chunks,
            } => {
                store
                    .progress(&id, queue_position, Some(chunks_complete), total_chunks)
                    .await?;
            }
            Event::Ports { id, results, .. } => {
                let ports: Vec<(u16, &str)> = results
                    .iter()
                    .filter(|r| r.state != PortState::Closed)
                    .map(|r| (r.port, r.state.as_str()))
                    .collect();
                if !ports.is_empty() && store.get(&id).await?.is_some_and(|r| !r.is_final()) {
                    store.add_ports(&id, &ports).await?;
                }
            }
            Event::Finished {
                id,
                outcome,
                duration_ms,
                ..
            } => {
                match outcome {
                    Outcome::Complete => {
                        if store.engine_done(&id, duration_ms).await? {
                            self.spawn_finalize(id.clone());
                        }
                    }
                    Outcome::Failed(reason) => {
                        if store
                            .fail(&id, &reason, self.now_secs(), self.expiry())
                            .await?
                        {
                            tracing::info!(%id, %reason, "scan failed");
                            self.spawn_webhooks(id.clone());
                        }
                    }
                }
                self.answer(&id, Answer::Finished);
            }
            Event::Status(s) => tracing::debug!(?s, "engine status"),
            Event::Error { message } => tracing::warn!(%message, "engine reported an error"),
        }
        Ok(())
    }

    fn spawn_finalize(self: &Arc<Self>, id: String) {
        if !lock(&self.finalizing).insert(id.clone()) {
            return;
        }
        let me = self.clone();
        self.spawn(async move {
            if let Err(e) = me.finalize(&id).await {
                tracing::error!(error = %e, %id, "cannot complete scan");
            }
            lock(&me.finalizing).remove(&id);
        });
    }

    /// Banners and PTR, then `complete`, then webhooks.
    async fn finalize(self: &Arc<Self>, id: &str) -> Result<(), sqlx::Error> {
        let store = &self.deps.store;
        let Some(row) = store.get(id).await? else {
            return Ok(());
        };
        if row.is_final() || row.engine_done != 1 {
            return Ok(());
        }
        let Ok(ip) = row.ip.parse::<IpAddr>() else {
            return Ok(());
        };
        let open: Vec<u16> = store
            .ports(id)
            .await?
            .into_iter()
            .filter(|p| p.state == "open")
            .filter_map(|p| u16::try_from(p.port).ok())
            .collect();
        let (banners, ptr) = tokio::join!(self.deps.banners.grab(ip, &open), self.deps.ptr.ptr(ip));
        let mut banners: Vec<(u16, String)> = banners.into_iter().collect();
        banners.sort_unstable();
        if store
            .complete(id, ptr.as_deref(), &banners, self.now_secs(), self.expiry())
            .await?
        {
            tracing::info!(%id, open = open.len(), "scan complete");
            self.spawn_webhooks(id.to_string());
        }
        Ok(())
    }

    fn spawn_webhooks(self: &Arc<Self>, id: String) {
        let me = self.clone();
        self.spawn(async move {
            if let Err(e) = me.deliver_webhooks(&id).await {
                tracing::error!(error = %e, %id, "webhooks not delivered");
            }
        });
    }

    async fn deliver_webhooks(self: &Arc<Self>, id: &str) -> Result<(), ApiError> {
        let urls = self.deps.store.pending_callbacks(id).await?;
        if urls.is_empty() {
            return Ok(());
        }
        let Some(row) = self.deps.store.get(id).await? else {
            return Ok(());
        };
        let body = Arc::new(
            serde_json::to_vec(&self.view(&row).await?)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        );
        for url in urls {
            let me = self.clone();
            let body = body.clone();
            let id = id.to_string();
            self.spawn(async move {
                let metrics = me.deps.metrics.clone();
                let d = me
                    .deps
                    .webhooks
                    .deliver(&url, &body, || metrics.webhook("retried"))
                    .await;
                let state = if d.delivered { "delivered" } else { "failed" };
                metrics.webhook(state);
                tracing::info!(%id, %url, state, attempts = d.attempts, "webhook");
                if let Err(e) = me
                    .deps
                    .store
                    .set_callback(&id, &url, state, d.attempts)
                    .await
                {
                    tracing::error!(error = %e, "cannot record webhook outcome");
                }
            });
        }
        Ok(())
    }

    /// Periodic work: purge expired results, prune limiter windows, fail live scans once
    /// the engine has been gone past the grace period, refresh gauges.
    pub async fn maintain(self: &Arc<Self>) {
        let now = self.deps.clock.now_secs();
        self.deps.limits.prune(now).await;
        match self.deps.store.purge(now as i64).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired scans deleted"),
            Err(e) => tracing::error!(error = %e, "purge failed"),
        }
        if self.engine_gone() {
            match self.deps.store.non_final().await {
                Ok(rows) => {
                    for r in rows.into_iter().filter(|r| r.engine_done == 0) {
                        match self
                            .deps
                            .store
                            .fail(&r.id, "engine_unavailable", self.now_secs(), self.expiry())
                            .await
                        {
                            Ok(true) => {
                                tracing::warn!(id = %r.id, "engine unreachable past grace; scan failed");
                                self.spawn_webhooks(r.id);
                            }
                            Ok(false) => {}
                            Err(e) => tracing::error!(error = %e, "cannot fail scan"),
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot list live scans"),
            }
        }
        self.refresh_gauges().await;
    }

    /// Scans by state, queue depth, engine link.
    pub async fn refresh_gauges(&self) {
        let m = &self.deps.metrics;
        m.engine_connected
            .set(i64::from(lock(&self.link).connected));
        if let Ok(counts) = self.deps.store.count_by_status(self.now_secs()).await {
            let mut seen: HashMap<&str, i64> = ["queued", "running", "complete", "failed"]
                .into_iter()
                .map(|s| (s, 0))
                .collect();
            for (s, n) in &counts {
                if let Some(v) = seen.get_mut(s.as_str()) {
                    *v = *n;
                }
            }
            for (s, n) in seen {
                m.scans
                    .get_or_create(&StateLabel {
                        state: s.to_string(),
                    })
                    .set(n);
            }
            m.queue_depth.set(
                *counts
                    .iter()
                    .find(|(s, _)| s == "queued")
                    .map(|(_, n)| n)
                    .unwrap_or(&0),
            );
        }
    }
}
