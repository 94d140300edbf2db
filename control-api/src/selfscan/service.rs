//! The self-scan service: turns POSTs into job scans (coalescing, limits), and rows into
//! the seed's response shapes. It owns its background work (the finisher, expiry purge,
//! gauges); [`super::finisher`] completes scans; callbacks are delivery jobs (`crate::delivery`).
//!
//! Lifecycle of a scan (a job scan with the same id, see `store::jobs`): a POST writes the
//! `scans` row (`queued`), the job scan, its chunk rows and their queue jobs in one
//! transaction (a fast scan is one chunk, a deep scan 32 chunks of 2,048 ports, as the
//! engine cuts a deep scan). Any worker (this process's, unless `--no-worker`) runs the
//! chunks on its engine; each chunk's commit moves the row (`running`, chunks, ports) and
//! the last one marks it `engine_done`. The finisher then grabs banners and the PTR name and
//! completes it (`complete`, webhooks). A chunk that fails on every attempt the queue
//! allows (or that the engine refuses by policy) fails the row with the chunk's reason.
//! Nothing here talks to the engine.
//!
//! It does not parse HTTP or decide who may ask: the HTTP layer validates the target and
//! the callback first and hands over a checked address.

use crate::background::Background;
use crate::clock::{Clock, CreatedStamps};
use crate::engine::EngineClient;
use crate::enrich::{BannerGrabber, PtrResolver};
use crate::http::error::ApiError;
use crate::jobs::plan::{host_set, plan, ChunkSpec};
use crate::jobs::worker::WorkerOptions;
use crate::metrics::{Metrics, StateLabel};
use crate::model::{service_name, PortEntry, ScanResponse, ScanState, ScanType, Status};
use crate::netaddr::AsnTable;
use crate::ratelimit::Limits;
use crate::store::address_lock::AddressLock;
use crate::store::jobs::JobStore;
use crate::store::{NewScan, ScanRow, Store};
use crate::webhook::Webhooks;
use portscope_core::results::PortState;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Everything the service uses.
#[derive(Debug, Clone)]
pub struct ScanDeps {
    /// Results (the job tables are in the same database).
    pub store: Store,
    /// The API's engine connection (only its link state is read, for a gauge).
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
    /// Maintenance period.
    pub maintenance_interval: Duration,
    /// How often the finisher looks for scans other nodes' workers moved (this process's
    /// worker wakes it at once).
    pub finisher_poll: Duration,
}

/// The service.
#[derive(Debug)]
pub struct ScanService {
    pub(super) deps: ScanDeps,
    pub(super) settings: ScanSettings,
    /// The job tables, in the store's database.
    jobs: JobStore,
    /// Signalled by this process's worker after a commit or a failed scan.
    pub(super) changed: Arc<Notify>,
    /// Scans being finished or having webhooks delivered here (no double work).
    pub(super) busy: Mutex<HashSet<String>>,
    /// Serialises the coalescing check and the insert.
    submit_lock: tokio::sync::Mutex<()>,
    /// `created_at_ms` of new scans (strictly increasing, orders scans of one ms).
    created: CreatedStamps,
    /// The finisher, maintenance, webhook deliveries and the in-process worker.
    background: Background,
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Ports of a deep self-scan per chunk: the engine's own cut of a deep scan (32 chunks).
pub const DEEP_CHUNK_PORTS: u32 = 2048;

/// The chunks of a scan of `ip`: a fast scan is one chunk, a deep one 32 of 2,048 ports.
pub fn chunks_of(ip: IpAddr, t: ScanType) -> Vec<ChunkSpec> {
    match t {
        ScanType::Fast => vec![ChunkSpec {
            targets: vec![ip.to_string()],
            ports: t.ports_spec(),
            probes: crate::jobs::plan::spec_ports(&t.ports_spec()),
        }],
        ScanType::Deep => host_set(&[ip]).map_or_else(Vec::new, |hosts| {
            plan(&hosts, 1, u16::MAX, DEEP_CHUNK_PORTS)
        }),
    }
}

impl ScanService {
    /// Starts the service and its background tasks: the finisher (which also completes
    /// what a previous run left; `changed` wakes it: the in-process worker's commits, and
    /// other nodes' on PostgreSQL), maintenance, and the in-process chunk worker when
    /// `worker` is given.
    pub async fn start(
        deps: ScanDeps,
        settings: ScanSettings,
        changed: Arc<Notify>,
        worker: Option<WorkerOptions>,
    ) -> Arc<Self> {
        let svc = Arc::new(ScanService {
            jobs: JobStore::new(deps.store.pool().clone()),
            deps,
            settings,
            changed,
            busy: Mutex::new(HashSet::new()),
            submit_lock: tokio::sync::Mutex::new(()),
            created: CreatedStamps::default(),
            background: Background::new(),
        });
        if let Some(opts) = worker {
            let stop = svc.background.child_token();
            let handle = crate::jobs::cli::spawn_in_process_worker(opts, stop);
            svc.background.track(async move {
                let _ = handle.await;
            });
        }
        let me = svc.clone();
        svc.spawn(async move { me.run_finisher().await });
        svc.background
            .every(svc.settings.maintenance_interval, &svc, |me| async move {
                me.maintain().await
            });
        svc
    }

    /// Stops every background task (the in-process worker included) and waits for them.
    pub async fn shutdown(&self) {
        self.background.shutdown().await;
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.deps.store
    }

    /// Runs `fut` as a background task that shutdown cancels and waits for.
    pub(super) fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.background.spawn(fut);
    }

    pub(super) fn now_secs(&self) -> i64 {
        self.deps.clock.now_secs() as i64
    }

    pub(super) fn expiry(&self) -> i64 {
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
        let _guard = self.submit_lock.lock().await;
        // Across API nodes: the look for a live scan, the limits and the insert as one step.
        let lock = AddressLock::take(store.pool(), &ip_s, t).await?;
        let submitted = self.submit_locked(ip, &ip_s, t, callback).await;
        if let Err(e) = lock.release().await {
            tracing::warn!(error = %e, "releasing the address lock");
        }
        submitted
    }

    /// [`Self::submit`] under its locks.
    async fn submit_locked(
        &self,
        ip: IpAddr,
        ip_s: &str,
        t: ScanType,
        callback: Option<&str>,
    ) -> Result<String, ApiError> {
        let store = &self.deps.store;
        if let Some(live) = store.active(ip_s, t).await? {
            return self.join(live.id, callback).await;
        }
        self.check_limits(ip, t).await?;
        let id = new_id();
        let row = NewScan {
            id: &id,
            ip: ip_s,
            scan_type: t,
            created_at_ms: self.created.next(&*self.deps.clock),
            expires_at: self.expiry(),
        };
        let created = crate::jobs::submit::create(
            &self.jobs,
            &id,
            t.kind(),
            t.priority(),
            Some(row),
            &chunks_of(ip, t),
        )
        .await;
        if let Err(e) = created {
            self.refund_limits(ip, t).await;
            return Err(e.into());
        }
        if let Some(url) = callback {
            store.add_callback(&id, url).await?;
        }
        Ok(id)
    }

    /// Joins the live scan `id` (a coalesced POST), adding `callback` to it: its id.
    async fn join(&self, id: String, callback: Option<&str>) -> Result<String, ApiError> {
        if let Some(url) = callback {
            if !self.deps.store.add_callback(&id, url).await? {
                return Err(ApiError::InvalidCallback(format!(
                    "the live scan of this address already has {} callback URLs, the most \
                     one scan carries; poll GET instead, or reuse one of its URLs",
                    crate::store::MAX_CALLBACKS
                )));
            }
        }
        Ok(id)
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
        Ok(view_of(&self.deps.store, row).await?)
    }

    /// Periodic work: purge expired results, prune limiter windows, refresh gauges.
    pub async fn maintain(self: &Arc<Self>) {
        let now = self.deps.clock.now_secs();
        self.deps.limits.prune(now).await;
        match self.deps.store.purge(now as i64).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired scans deleted"),
            Err(e) => tracing::error!(error = %e, "purge failed"),
        }
        self.refresh_gauges().await;
    }

    /// Scans by state, queue depth, engine link.
    pub async fn refresh_gauges(&self) {
        let m = &self.deps.metrics;
        m.engine_connected
            .set(i64::from(self.deps.engine.is_connected()));
        if let Ok(counts) = self.deps.store.count_by_status(self.now_secs()).await {
            let count = |st: Status| counts.iter().find(|(s, _)| *s == st).map_or(0, |(_, n)| *n);
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

/// The response body of a scan (its GET body; a callback's body).
pub async fn view_of(store: &Store, row: &ScanRow) -> Result<ScanResponse, sqlx::Error> {
    let t = row.scan_type;
    let n = |x: i64| u32::try_from(x).unwrap_or(0);
    let state = match row.status {
        Status::Queued => {
            let qp = match row.queue_position {
                Some(q) => n(q),
                None => n(store.queued_before(row.created_at_ms).await?),
            };
            ScanState::Queued {
                eta_seconds: t.eta_base() * (u64::from(qp) + 1),
                queue_position: qp,
                chunks_complete: n(row.chunks_complete),
                total_chunks: n(row.total_chunks),
            }
        }
        Status::Running => ScanState::Running {
            chunks_complete: n(row.chunks_complete),
            total_chunks: n(row.total_chunks),
        },
        Status::Complete => {
            let mut open = Vec::new();
            let mut filtered = Vec::new();
            let mut banners = BTreeMap::new();
            for p in store.ports(&row.id).await? {
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
        Status::Failed | Status::Cancelled => ScanState::Failed {
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
