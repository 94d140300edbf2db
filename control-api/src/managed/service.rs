//! The managed-scan service: checks and queues scans for a token (scope, policy, 409,
//! quotas), keeps its rows of the engine conversation ([`crate::lifecycle`], shared with the
//! self-scan service: partial per-host ports while running), and finishes scans (banners,
//! grade, [`super::alerts`] against the previous scan, [`super::monitor`]s). The
//! [`super::scheduler`] runs saved targets. It does not parse HTTP and builds no JSON:
//! handlers pass a checked [`Token`].

use super::alerts::AlertKind;
use super::findings::{self, OpenPort};
use super::month_start_secs;
use super::scope::{Resolver, TargetSpec};
use super::store::{AlertRow, MScanRow, MStore};
use super::tokens::{self, Token};
use crate::clock::Clock;
use crate::engine::EngineClient;
use crate::enrich::BannerGrabber;
use crate::http::error::ApiError;
use crate::lifecycle::demux::new_managed_id;
use crate::lifecycle::reason::FailReason;
use crate::lifecycle::{send_submit, Book, Lifecycle, Live, Step};
use crate::model::Status;
use crate::netaddr::CidrSet;
use crate::store::quota::{Admission, Quota};
use crate::webhook::Webhooks;
use async_trait::async_trait;
use ipnet::IpNet;
use portscope_core::policy::TargetPolicy;
use portscope_core::results::{PortResult, PortState};
use portscope_core::targets::TargetSet;
use portscope_proto::{Request, ScanKind};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use super::order::{check_size, profile_ports, ScanOrder, MAX_SCAN_PAIRS};

/// Builds a monitor webhook's body from a scan and its picked alerts (the HTTP layer's
/// JSON shapes: the service builds no JSON).
pub type MonitorBody = fn(&MScanRow, &[AlertRow]) -> Vec<u8>;

/// Engine queue priority of managed scans (between deep self-scans and fast ones).
pub const PRIORITY: u8 = 3;
/// Most hosts of one scan whose banners are grabbed.
pub const BANNER_HOSTS: usize = 16;

/// Everything the service uses.
#[derive(Debug, Clone)]
pub struct ManagedDeps {
    /// Tables.
    pub store: MStore,
    /// The engine (managed side of the split connection).
    pub engine: Arc<dyn EngineClient>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Host name resolution for scope checks.
    pub resolver: Arc<dyn Resolver>,
    /// Banner grabbing after completion.
    pub banners: Arc<dyn BannerGrabber>,
    /// Monitor webhooks (same SSRF rules as self-scan callbacks).
    pub webhooks: Webhooks,
    /// The API's target policy (the engine applies its own too).
    pub policy: TargetPolicy,
    /// Opted-out addresses.
    pub opt_out: CidrSet,
    /// Alert e-mail, when SMTP is configured.
    pub mailer: Option<Arc<dyn super::mail::Mailer>>,
    /// A monitor webhook's body.
    pub monitor_body: MonitorBody,
    /// The durable queue of monitor webhook deliveries.
    pub deliveries: Arc<crate::delivery::Deliveries>,
}

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct ManagedSettings {
    /// Most queued managed scans over all tokens (`queue_full` beyond).
    pub queue_limit: i64,
    /// Scheduler and maintenance period (0 = none in the background; tests call
    /// `maintain`).
    pub scheduler_interval: Duration,
    /// How long the engine may be unreachable before live scans fail with
    /// `engine_unavailable` and new ones get 503 (set from `engine-grace-secs`).
    pub grace_ms: u64,
    /// How often the grace period is checked (0 = only in `maintain`), independent of
    /// the scheduler period, so live scans fail right after the grace period as
    /// self-scans do (set from `maintenance-interval-ms`).
    pub grace_check_interval: Duration,
}

impl Default for ManagedSettings {
    fn default() -> Self {
        ManagedSettings {
            queue_limit: 1000,
            scheduler_interval: Duration::from_secs(30),
            grace_ms: 30_000,
            grace_check_interval: Duration::from_secs(1),
        }
    }
}

/// The service.
#[derive(Debug)]
pub struct ManagedService {
    deps: ManagedDeps,
    settings: ManagedSettings,
    /// The engine conversation (its lock serialises the 409 check, quotas, insert and
    /// submit).
    lifecycle: Lifecycle,
}

impl ManagedService {
    /// Starts the service: engine events and the scheduler (one catch-up run of every
    /// overdue target happens on the first tick).
    pub async fn start(deps: ManagedDeps, settings: ManagedSettings) -> Arc<Self> {
        let lifecycle = Lifecycle::new(deps.engine.clone(), deps.clock.clone(), settings.grace_ms);
        let svc = Arc::new(ManagedService {
            deps,
            settings,
            lifecycle,
        });
        Lifecycle::start(&svc).await;
        let me = svc.clone();
        svc.lifecycle
            .every(svc.settings.grace_check_interval, move || {
                let me = me.clone();
                async move {
                    Lifecycle::fail_if_gone(&me).await;
                }
            });
        let me = svc.clone();
        svc.lifecycle
            .every(svc.settings.scheduler_interval, move || {
                let me = me.clone();
                async move {
                    me.maintain().await;
                }
            });
        svc
    }

    /// Stops background work.
    pub async fn shutdown(&self) {
        self.lifecycle.shutdown().await;
    }

    /// The engine conversation.
    pub(super) fn conversation(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// The monitor webhook queue.
    pub fn deliveries(&self) -> &Arc<crate::delivery::Deliveries> {
        &self.deps.deliveries
    }

    pub(super) fn deps(&self) -> &ManagedDeps {
        &self.deps
    }

    /// The tables.
    pub fn store(&self) -> &MStore {
        &self.deps.store
    }

    /// Time.
    pub fn now_secs(&self) -> i64 {
        self.deps.clock.now_secs() as i64
    }

    /// The token a bearer secret belongs to.
    pub async fn authenticate(&self, secret: &str) -> Result<Option<Token>, sqlx::Error> {
        tokens::authenticate(self.deps.store.pool(), secret).await
    }

    /// Scope (403), then the API's target policy and opt-out list (400), for every address
    /// the engine would be given. Returns those addresses.
    pub async fn authorize(
        &self,
        token: &Token,
        spec: &TargetSpec,
    ) -> Result<Vec<String>, ApiError> {
        let addrs = token
            .scope
            .authorize(spec, self.deps.resolver.as_ref())
            .await?;
        for a in &addrs {
            let net: IpNet = match a.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => a
                    .parse()
                    .map_err(|_| ApiError::Internal(format!("bad address {a}")))?,
            };
            // Every address, not only the ends: an opted-out host inside a CIDR refuses
            // the whole scan (nothing is subtracted silently).
            if let Some(out) = self.deps.opt_out.overlapping(net) {
                return Err(ApiError::OutOfScope(
                    if net.prefix_len() == net.max_prefix_len() {
                        format!("{a} is opted out of scanning")
                    } else {
                        format!(
                            "{a} includes {out}, which is opted out of scanning; scan the \
                         addresses around it as separate targets"
                        )
                    },
                ));
            }
            let set = TargetSet::new(&[net], &[])
                .map_err(|e| ApiError::BadRequest(format!("{a}: {e}")))?;
            self.deps.policy.check(&set).map_err(|e| {
                ApiError::BadRequest(format!(
                    "{a} cannot be scanned: it overlaps {} ({})",
                    e.range, e.name
                ))
            })?;
        }
        Ok(addrs)
    }

    /// Checks and queues a scan for `token`. Every way in (POST scan, retest, target scan,
    /// trigger-all, scheduler) goes through here, so the scope is always re-checked.
    pub async fn submit(&self, token: &Token, order: &ScanOrder) -> Result<MScanRow, ApiError> {
        let spec = TargetSpec::parse(&order.target).map_err(ApiError::BadRequest)?;
        let domain =
            match (&order.domain, &spec) {
                (Some(d), _) => Some(super::scope::parse_domain(d).ok_or_else(|| {
                    ApiError::BadRequest(format!("{d} is not a valid domain name"))
                })?),
                (None, TargetSpec::Domain(d)) => Some(d.clone()),
                (None, _) => None,
            };
        let (profile, ports, port_count) =
            profile_ports(order.profile.as_deref(), order.ports.as_deref())?;
        let addrs = self.authorize(token, &spec).await?;
        check_size(&addrs, port_count)?;
        if self.lifecycle.engine_gone() {
            return Err(ApiError::EngineUnavailable);
        }
        let target = spec.to_string();
        let store = &self.deps.store;
        let guard = self.lifecycle.submit_lock().await;
        let created = self.lifecycle.next_created_ms();
        let id = new_managed_id();
        let row = MScanRow {
            report_key: store.report_key(&id),
            target_id: order.target_id.clone(),
            domain,
            addresses: addrs.join(","),
            ports,
            port_count: port_count as i64,
            profile,
            ..MScanRow::queued(id, &token.id, target, created)
        };
        // The 409 check, the quotas and the insert in one atomic step (across API nodes).
        let now_ms = self.deps.clock.now_ms() as i64;
        let quota = Quota {
            month_since_ms: month_start_secs(now_ms / 1000) * 1000,
            monthly: token.monthly_scans,
            concurrent: token.max_concurrent,
            queue_limit: self.settings.queue_limit,
        };
        match store.admit(&row, &quota).await? {
            Admission::Admitted => {}
            Admission::InProgress(existing_id) => {
                return Err(ApiError::InProgress {
                    target: row.target,
                    existing_id,
                })
            }
            Admission::Monthly => {
                let next_month = super::next_month_start_secs(now_ms / 1000);
                return Err(ApiError::Limited {
                    code: "monthly_limit",
                    message: format!(
                        "monthly scan limit reached: {} scans this month for token {}; it \
                         resets on the 1st (UTC) or ask the operator for a larger plan",
                        token.monthly_scans, token.name
                    ),
                    retry_after: (next_month - now_ms / 1000).max(1) as u64,
                });
            }
            Admission::Concurrent => {
                return Err(ApiError::Limited {
                    code: "concurrent_limit",
                    message: format!(
                        "concurrent scan limit reached: {} scans queued or running for this \
                         token; wait for one to finish or cancel one",
                        token.max_concurrent
                    ),
                    retry_after: 30,
                })
            }
            Admission::QueueFull => {
                return Err(ApiError::Limited {
                    code: "queue_full",
                    message: format!(
                        "the scan queue is full ({} queued scans); try again later",
                        self.settings.queue_limit
                    ),
                    retry_after: 30,
                })
            }
        }
        send_submit(self, &row.id, submit_request(&row)).await;
        drop(guard);
        Ok(row)
    }

    /// Cancels a live scan (400 when final).
    pub async fn cancel(&self, row: &MScanRow) -> Result<(), ApiError> {
        if !row.is_live()
            || !self
                .deps
                .store
                .end(&row.id, Status::Cancelled.as_str(), None, self.now_secs())
                .await?
        {
            return Err(ApiError::BadRequest(format!(
                "scan {} is already {} and cannot be cancelled",
                row.id, row.status
            )));
        }
        if row.submitted == 1 {
            self.lifecycle.cancel(&row.id).await;
        }
        Ok(())
    }

    /// Banners, grade, `complete`, alerts against the previous scan, monitors.
    async fn finish_scan(self: &Arc<Self>, id: &str, duration_ms: u64) -> Result<(), sqlx::Error> {
        let store = &self.deps.store;
        let Some(row) = store.scan(id).await? else {
            return Ok(());
        };
        if !row.is_live() {
            return Ok(());
        }
        let ports = store.ports(id).await?;
        let mut by_host: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for p in ports.iter().filter(|p| p.state == PortState::Open.as_str()) {
            by_host
                .entry(p.host.clone())
                .or_default()
                .push(u16::try_from(p.port).unwrap_or(0));
        }
        let mut banners = Vec::new();
        for (host, open) in by_host.iter().take(BANNER_HOSTS) {
            let Ok(ip) = host.parse::<IpAddr>() else {
                continue;
            };
            let mut got: Vec<(u16, String)> =
                self.deps.banners.grab(ip, open).await.into_iter().collect();
            got.sort_unstable();
            banners.extend(got.into_iter().map(|(p, b)| (host.clone(), p, b)));
        }
        let mut open: Vec<OpenPort> = ports
            .iter()
            .filter(|p| p.state == PortState::Open.as_str())
            .map(|p| {
                let port = u16::try_from(p.port).unwrap_or(0);
                OpenPort {
                    host: p.host.clone(),
                    port,
                    banner: banners
                        .iter()
                        .find(|(h, q, _)| *h == p.host && *q == port)
                        .map(|(_, _, b)| b.clone()),
                    new: false,
                }
            })
            .collect();
        // Compare with the previous complete scan first: newly open ports weigh in the grade.
        let alerts = self.diff(&row, &open).await?;
        for o in &mut open {
            o.new = alerts.iter().any(|a| {
                a.kind == AlertKind::NewOpenPort.as_str()
                    && a.host == o.host
                    && a.port == i64::from(o.port)
            });
        }
        let (grade, score) = findings::grade(&findings::findings(&open));
        if !store
            .complete(
                id,
                &banners,
                (&grade, score),
                duration_ms,
                self.now_secs(),
                &alerts,
            )
            .await?
        {
            return Ok(());
        }
        tracing::info!(%id, open = open.len(), %grade, "managed scan complete");
        if !alerts.is_empty() {
            self.notify(&row, alerts).await;
        }
        Ok(())
    }

    /// A live (not revoked) token by id.
    pub async fn token_by_id(&self, id: &str) -> Result<Option<Token>, sqlx::Error> {
        let row = crate::store::tokens::live_by_id(self.deps.store.pool(), id).await?;
        Ok(row.and_then(|r| {
            Some(Token {
                scope: super::scope::Scope::parse_text(&r.scope).ok()?,
                id: r.id,
                name: r.name,
                monthly_scans: r.monthly_scans,
                max_concurrent: r.max_concurrent,
            })
        }))
    }

    /// Checks a monitor e-mail address (400 when invalid or when no SMTP is configured).
    pub fn check_email(&self, to: &str) -> Result<String, ApiError> {
        if self.deps.mailer.is_none() {
            return Err(ApiError::BadRequest(
                "alert e-mail is not configured on this server (smtp-url)".into(),
            ));
        }
        let to = to.trim();
        if !super::mail::valid_address(to) {
            return Err(ApiError::BadRequest(format!(
                "alertEmail {to:?} is not an e-mail address"
            )));
        }
        Ok(to.to_string())
    }

    /// Checks a monitor webhook URL (same rules as self-scan callbacks).
    pub async fn check_webhook(&self, url: &str) -> Result<String, ApiError> {
        self.deps
            .webhooks
            .policy
            .check(url.trim())
            .await
            .map(|d| d.url.to_string())
            .map_err(|e| ApiError::BadRequest(format!("invalid webhookUrl: {e}")))
    }
}

/// The engine's `Submit` of a managed scan.
fn submit_request(row: &MScanRow) -> Request {
    Request::Submit {
        id: row.id.clone(),
        targets: row.addresses.split(',').map(str::to_string).collect(),
        ports: row.ports.clone(),
        kind: ScanKind::Custom,
        priority: PRIORITY,
    }
}

#[async_trait]
impl Book for ManagedService {
    const KIND: &'static str = "managed scan";

    fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    async fn live(&self) -> Result<Vec<Live>, sqlx::Error> {
        Ok(self
            .deps
            .store
            .live()
            .await?
            .into_iter()
            .map(|r| Live {
                step: if r.submitted == 1 {
                    Step::Submitted
                } else {
                    Step::Unsent(submit_request(&r))
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
        let running = chunks_complete.is_some() && queue_position == 0;
        self.deps
            .store
            .progress(id, running, chunks_complete, total_chunks, self.now_secs())
            .await
    }

    async fn ports(&self, id: &str, results: &[&PortResult]) -> Result<(), sqlx::Error> {
        let store = &self.deps.store;
        let ports: Vec<(String, u16, &str)> = results
            .iter()
            .map(|r| {
                (
                    crate::netaddr::normalise(r.ip).to_string(),
                    r.port,
                    r.state.as_str(),
                )
            })
            .collect();
        if store.scan(id).await?.is_some_and(|r| r.is_live()) {
            store.add_ports(id, &ports).await?;
        }
        Ok(())
    }

    async fn engine_done(&self, _id: &str, _duration_ms: u64) -> Result<bool, sqlx::Error> {
        // Nothing to record before finishing: `finish` completes the row in one step.
        Ok(true)
    }

    async fn finish(self: Arc<Self>, id: String, duration_ms: u64) -> Result<(), sqlx::Error> {
        self.finish_scan(&id, duration_ms).await
    }

    async fn fail(&self, id: &str, reason: &FailReason) -> Result<bool, sqlx::Error> {
        self.deps
            .store
            .end(
                id,
                Status::Failed.as_str(),
                Some(&reason.detailed()),
                self.now_secs(),
            )
            .await
    }
}
