//! The managed-scan service: checks and queues scans for a token (scope, policy, 409,
//! quotas) as job scans of the same id (chunks of hosts x ports, `crate::jobs`, the one
//! lifecycle it shares with the self-scan service), and finishes them ([`super::finisher`]:
//! banners, grade, [`super::alerts`] against the previous scan, [`super::monitor`]s). The
//! [`super::scheduler`] runs saved targets. It does not parse HTTP, builds no JSON and
//! talks to no engine: handlers pass a checked [`Token`], workers run the chunks.

use super::month_start_secs;
use super::scope::{Authorize, Resolver, TargetSpec};
use super::store::{AlertRow, MScanRow, MStore};
use super::tokens::{self, Token};
use crate::background::Background;
use crate::clock::{Clock, CreatedStamps};
use crate::enrich::BannerGrabber;
use crate::http::error::ApiError;
use crate::jobs::plan::{plan_ports, DEFAULT_CHUNK_PROBES};
use crate::jobs::submit::new_chunks;
use crate::netaddr::CidrSet;
use crate::store::jobs::{JobStore, NewChunk, NewScan};
use crate::store::quota::{Admission, JobInsert, Quota};
use crate::webhook::Webhooks;
use ipnet::IpNet;
use portscope_core::policy::TargetPolicy;
use portscope_core::targets::{PortSet, TargetSet};
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub use super::order::{check_size, profile_ports, ScanOrder, MAX_SCAN_PROBES};

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
    /// Tables (the job tables are in the same database).
    pub store: MStore,
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
    /// Most live (queued or running) managed scans over all tokens (`queue_full` beyond).
    pub queue_limit: i64,
    /// Scheduler period (0 = none in the background; tests call `maintain`).
    pub scheduler_interval: Duration,
    /// How often the finisher looks for scans other nodes' workers completed (this
    /// process's worker wakes it at once).
    pub finisher_poll: Duration,
    /// Most probes per chunk (config `chunk-probes`).
    pub chunk_probes: u32,
}

impl Default for ManagedSettings {
    fn default() -> Self {
        ManagedSettings {
            queue_limit: 1000,
            scheduler_interval: Duration::from_secs(30),
            finisher_poll: Duration::from_millis(250),
            chunk_probes: DEFAULT_CHUNK_PROBES,
        }
    }
}

/// The service.
#[derive(Debug)]
pub struct ManagedService {
    deps: ManagedDeps,
    settings: ManagedSettings,
    /// The job tables, in the store's database.
    jobs: JobStore,
    /// Signalled by this process's worker after a commit or a failed scan.
    pub(super) changed: Arc<Notify>,
    /// Scans being finished here (no double work).
    pub(super) busy: Mutex<HashSet<String>>,
    /// `created_at_ms` of new scans (strictly increasing, orders scans of one ms).
    created: CreatedStamps,
    /// The finisher, the scheduler and monitor deliveries.
    background: Background,
}

/// A new managed scan id: a random (v4) UUID in its hyphenated form (seed 003).
pub fn new_managed_id() -> String {
    uuid::Uuid::new_v4().hyphenated().to_string()
}

impl ManagedService {
    /// Starts the service: the finisher (which also finishes what a previous run left) and
    /// the scheduler (one catch-up run of every overdue target happens on the first tick).
    /// `changed` is the in-process worker's signal after each commit, if any.
    pub async fn start(
        deps: ManagedDeps,
        settings: ManagedSettings,
        changed: Arc<Notify>,
    ) -> Arc<Self> {
        let svc = Arc::new(ManagedService {
            jobs: JobStore::new(deps.store.pool().clone()),
            deps,
            settings,
            changed,
            busy: Mutex::new(HashSet::new()),
            created: CreatedStamps::default(),
            background: Background::new(),
        });
        let me = svc.clone();
        svc.spawn(async move { me.run_finisher().await });
        svc.background
            .every(svc.settings.scheduler_interval, &svc, |me| async move {
                me.maintain().await;
            });
        svc
    }

    /// Stops background work and waits for it.
    pub async fn shutdown(&self) {
        self.background.shutdown().await;
    }

    /// Runs `fut` as a background task that shutdown cancels and waits for.
    pub(super) fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.background.spawn(fut);
    }

    /// The finisher's polling period.
    pub(super) fn finisher_poll(&self) -> Duration {
        self.settings.finisher_poll
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
        let spec = TargetSpec::parse(&order.target)?;
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
        let target = spec.to_string();
        let store = &self.deps.store;
        let created = self.created.next(&*self.deps.clock);
        let id = new_managed_id();
        let chunks = chunks_of(&id, &addrs, &ports, self.settings.chunk_probes)?;
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
        let job = JobInsert {
            scan: NewScan {
                id: &row.id,
                kind: crate::store::jobs::MANAGED_KIND,
                created_at_ms: crate::jobs::now_ms(),
                selfscan: None,
            },
            chunks: &chunks,
            queue: crate::jobs::queue::chunk_spec(),
        };
        match store.admit_job(&row, &quota, Some(&job)).await? {
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
                        "the scan queue is full ({} live scans); try again later",
                        self.settings.queue_limit
                    ),
                    retry_after: 30,
                })
            }
        }
        self.changed.notify_waiters();
        Ok(row)
    }

    /// Cancels a live scan (400 when final): the row and its job scan are cancelled and
    /// its chunk jobs not claimed yet leave the queue; a chunk being run records nothing.
    pub async fn cancel(&self, row: &MScanRow) -> Result<(), ApiError> {
        let now_ms = self.deps.clock.now_ms() as i64;
        if !row.is_live() || !self.jobs.cancel_scan(&row.id, now_ms).await? {
            return Err(ApiError::BadRequest(format!(
                "scan {} is already {} and cannot be cancelled",
                row.id, row.status
            )));
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

/// The chunks of managed scan `id` of `addrs` (addresses or CIDRs) x the port spec
/// `ports`, with their queue jobs: hosts x ports, at most `chunk_probes` probes each
/// (about a second of sending by default, [`DEFAULT_CHUNK_PROBES`]); a chunk names its
/// hosts as address ranges, so its payload does not grow with the CIDR.
fn chunks_of(
    id: &str,
    addrs: &[String],
    ports: &str,
    chunk_probes: u32,
) -> Result<Vec<NewChunk>, ApiError> {
    let nets: Vec<IpNet> = addrs
        .iter()
        .map(|a| {
            a.parse::<IpNet>()
                .or_else(|_| a.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| ApiError::Internal(format!("bad address {a}")))
        })
        .collect::<Result<_, _>>()?;
    let set = TargetSet::new(&nets, &[]).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let ports = PortSet::parse(ports).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let chunks = plan_ports(&set, ports.as_slice(), chunk_probes);
    new_chunks(id, PRIORITY, &chunks).map_err(|e| ApiError::Internal(e.to_string()))
}
