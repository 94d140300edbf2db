//! The self-scan service: turns POSTs into engine scans (coalescing, limits), engine events
//! into rows (through [`crate::lifecycle`], the conversation it shares with the managed
//! service), and rows into the seed's response shapes. It owns its background work
//! (enrichment, expiry purge, gauges); [`super::webhooks`] delivers callbacks.
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
use crate::engine::EngineClient;
use crate::enrich::{BannerGrabber, PtrResolver};
use crate::http::error::ApiError;
use crate::lifecycle::reason::FailReason;
use crate::lifecycle::{self, Book, Lifecycle, Live, Step};
use crate::metrics::{Metrics, StateLabel};
use crate::model::{service_name, PortEntry, ScanResponse, ScanState, ScanType, Status};
use crate::netaddr::AsnTable;
use crate::ratelimit::Limits;
use crate::store::{NewScan, ScanRow, Store};
use crate::webhook::Webhooks;
use async_trait::async_trait;
use portscope_core::results::{PortResult, PortState};
use portscope_proto::{RejectCode, Request};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// The service.
#[derive(Debug)]
pub struct ScanService {
    pub(super) deps: ScanDeps,
    settings: ScanSettings,
    lifecycle: Lifecycle,
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn submit_request(id: &str, ip: &str, t: ScanType) -> Request {
    Request::Submit {
        id: id.to_string(),
        targets: vec![ip.to_string()],
        ports: t.ports_spec(),
        kind: t.kind(),
        priority: t.priority(),
    }
}

impl ScanService {
    /// Starts the service and its background tasks (engine events, maintenance, resuming
    /// unfinished enrichment and webhooks from before a restart).
    pub async fn start(deps: ScanDeps, settings: ScanSettings) -> Arc<Self> {
        let lifecycle = Lifecycle::new(deps.engine.clone(), deps.clock.clone(), settings.grace_ms);
        let svc = Arc::new(ScanService {
            deps,
            settings,
            lifecycle,
        });
        // Finish what a previous run left: enrichment of engine-complete scans, webhooks of
        // final scans.
        match svc.deps.store.non_final().await {
            Ok(rows) => {
                for r in rows.iter().filter(|r| r.engine_done == 1) {
                    Lifecycle::spawn_finish(&svc, r.id.clone(), 0);
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot list live scans"),
        }
        match svc.deps.store.final_with_pending_callbacks().await {
            Ok(ids) => ids.into_iter().for_each(|id| svc.spawn_webhooks(id)),
            Err(e) => tracing::error!(error = %e, "cannot list pending callbacks"),
        }
        Lifecycle::start(&svc).await;
        let me = svc.clone();
        svc.lifecycle
            .every(svc.settings.maintenance_interval, move || {
                let me = me.clone();
                async move { me.maintain().await }
            });
        svc
    }

    /// Stops every background task and waits for them.
    pub async fn shutdown(&self) {
        self.lifecycle.shutdown().await;
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.deps.store
    }

    pub(super) fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.lifecycle.spawn(fut);
    }

    fn now_secs(&self) -> i64 {
        self.deps.clock.now_secs() as i64
    }

    fn expiry(&self) -> i64 {
        // Checked: a huge `result-ttl-secs` saturates instead of wrapping into the past.
        self.now_secs()
            .saturating_add(i64::try_from(self.settings.ttl_secs).unwrap_or(i64::MAX))
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
        let guard = self.lifecycle.submit_lock().await;
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
        if self.lifecycle.engine_gone() {
            return Err(ApiError::EngineUnavailable);
        }
        self.check_limits(ip, t).await?;
        let id = new_id();
        let created = self.lifecycle.next_created_ms();
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
        let req = submit_request(&id, &ip_s, t);
        let answer =
            Lifecycle::submit_and_wait(self, &id, req, guard, self.settings.submit_wait).await;
        match answer.as_ref().and_then(lifecycle::Answer::rejected) {
            Some((RejectCode::Policy, message)) => {
                self.refund_limits(ip, t).await;
                Err(ApiError::InvalidTarget(format!(
                    "the engine refused to scan {ip_s}: {message}"
                )))
            }
            Some((RejectCode::Busy, message)) => {
                self.refund_limits(ip, t).await;
                Err(ApiError::EngineBusy(message.to_string()))
            }
            _ => Ok(id),
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
        let state = match Status::parse(&row.status) {
            Some(Status::Queued) => {
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
            Some(Status::Running) => ScanState::Running {
                chunks_complete: n(row.chunks_complete),
                total_chunks: n(row.total_chunks),
            },
            Some(Status::Complete) => {
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
                    if p.state == PortState::Open.as_str() {
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
            .filter(|p| p.state == PortState::Open.as_str())
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
        Lifecycle::fail_if_gone(self).await;
        self.refresh_gauges().await;
    }

    /// Scans by state, queue depth, engine link.
    pub async fn refresh_gauges(&self) {
        let m = &self.deps.metrics;
        m.engine_connected
            .set(i64::from(self.lifecycle.connected()));
        if let Ok(counts) = self.deps.store.count_by_status(self.now_secs()).await {
            let count = |st: Status| {
                counts
                    .iter()
                    .find(|(s, _)| Status::parse(s) == Some(st))
                    .map_or(0, |(_, n)| *n)
            };
            for st in [
                Status::Queued,
                Status::Running,
                Status::Complete,
                Status::Failed,
            ] {
                m.scans
                    .get_or_create(&StateLabel {
                        state: st.as_str().to_string(),
                    })
                    .set(count(st));
            }
            m.queue_depth.set(count(Status::Queued));
        }
    }
}

#[async_trait]
impl Book for ScanService {
    const KIND: &'static str = "scan";

    fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    async fn live(&self) -> Result<Vec<Live>, sqlx::Error> {
        Ok(self
            .deps
            .store
            .non_final()
            .await?
            .into_iter()
            .map(|r| Live {
                step: if r.engine_done == 1 {
                    Step::EngineDone
                } else if r.submitted == 1 {
                    Step::Submitted
                } else {
                    Step::Unsent(submit_request(&r.id, &r.ip, r.scan_type()))
                },
                id: r.id,
            })
            .collect())
    }

    async fn mark_submitted(&self, id: &str) -> Result<(), sqlx::Error> {
        self.deps.store.mark_submitted(id).await
    }

    async fn progress(
        &self,
        id: &str,
        queue_position: u32,
        chunks_complete: Option<u32>,
        total_chunks: u32,
    ) -> Result<(), sqlx::Error> {
        self.deps
            .store
            .progress(id, queue_position, chunks_complete, total_chunks)
            .await
    }

    async fn ports(&self, id: &str, results: &[&PortResult]) -> Result<(), sqlx::Error> {
        let store = &self.deps.store;
        let ports: Vec<(u16, &str)> = results.iter().map(|r| (r.port, r.state.as_str())).collect();
        if store.get(id).await?.is_some_and(|r| !r.is_final()) {
            store.add_ports(id, &ports).await?;
        }
        Ok(())
    }

    async fn engine_done(&self, id: &str, duration_ms: u64) -> Result<bool, sqlx::Error> {
        self.deps.store.engine_done(id, duration_ms).await
    }

    async fn finish(self: Arc<Self>, id: String, _duration_ms: u64) -> Result<(), sqlx::Error> {
        self.finalize(&id).await
    }

    async fn fail(&self, id: &str, reason: &FailReason) -> Result<bool, sqlx::Error> {
        self.deps
            .store
            .fail(id, &reason.code(), self.now_secs(), self.expiry())
            .await
    }

    fn failed(self: Arc<Self>, id: String) {
        self.spawn_webhooks(id);
    }

    fn link_changed(&self, connected: bool) {
        self.deps.metrics.engine_connected.set(i64::from(connected));
    }
}
