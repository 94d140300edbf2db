//! The managed-scan service: checks and queues scans for a token (scope, policy, 409,
//! quotas), turns engine events into rows (partial per-host ports while running), finishes
//! scans (banners, grade, alerts against the previous scan, monitor webhooks), and runs
//! scheduled targets. It does not parse HTTP: handlers pass a checked [`Token`].

use super::demux::new_managed_id;
use super::error::ManagedError;
use super::findings::{self, OpenPort, Severity};
use super::scope::{Resolver, TargetSpec};
use super::store::{AlertRow, MScanRow, MStore, TargetRow};
use super::tokens::{self, Token};
use super::{month_start_secs, random_hex};
use crate::clock::Clock;
use crate::engine::{EngineClient, EngineError, EngineNotice};
use crate::enrich::BannerGrabber;
use crate::model::ScanType;
use crate::netaddr::CidrSet;
use crate::util::lock;
use crate::webhook::Webhooks;
use ipnet::IpNet;
use portscope_core::policy::TargetPolicy;
use portscope_core::results::PortState;
use portscope_core::targets::{PortSet, TargetSet};
use portscope_proto::{Event, Outcome, Request, ScanKind};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most target x port pairs of one managed scan: the engine daemon's default `max_pairs`
/// (it refuses larger submits), so such scans get 400 here instead of a failed row.
pub const MAX_SCAN_PAIRS: u128 = 1 << 24;

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

/// A scan to start.
#[derive(Debug, Clone, Default)]
pub struct ScanOrder {
    /// IP, CIDR or host name.
    pub target: String,
    /// Domain label (defaults to the target when it is a name).
    pub domain: Option<String>,
    /// `fast` (default), `deep` or `custom`.
    pub profile: Option<String>,
    /// Port spec (implies `custom`).
    pub ports: Option<String>,
    /// Saved target this runs for.
    pub target_id: Option<String>,
}

/// A checked profile: name and engine port spec.
pub fn profile_ports(
    profile: Option<&str>,
    ports: Option<&str>,
) -> Result<(String, String, u64), ManagedError> {
    let bad = |m: String| ManagedError::BadRequest(m);
    let (name, spec) = match (profile, ports) {
        (Some("custom") | None, Some(p)) => ("custom", p.trim().to_string()),
        (Some("custom"), None) => return Err(bad("profile custom needs `ports`".into())),
        (Some("fast") | None, None) => ("fast", ScanType::Fast.ports_spec()),
        (Some("deep"), None) => ("deep", ScanType::Deep.ports_spec()),
        (Some(p @ ("fast" | "deep")), Some(_)) => {
            return Err(bad(format!(
                "profile {p} takes no `ports`; use profile custom"
            )))
        }
        (Some(other), _) => {
            return Err(bad(format!(
                "unknown profile {other}: use fast, deep or custom"
            )))
        }
    };
    let set = PortSet::parse(&spec).map_err(|e| bad(format!("invalid ports {spec}: {e}")))?;
    if set.is_empty() {
        return Err(bad("no ports to scan".into()));
    }
    Ok((name.to_string(), spec, set.len()))
}

/// The (host, port) pairs a scan probed: its ports on its addresses.
#[derive(Debug)]
struct Coverage(Vec<(Vec<IpNet>, PortSet)>);

impl Coverage {
    fn of(row: &MScanRow) -> Coverage {
        let nets = row
            .addresses
            .split(',')
            .filter_map(|a| {
                a.parse::<IpNet>()
                    .ok()
                    .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
            })
            .collect();
        // An unparsable spec covers nothing: no alert rather than a false one.
        let ports = PortSet::parse(&row.ports).unwrap_or_else(|_| PortSet::from_ports([]));
        Coverage(vec![(nets, ports)])
    }

    /// Covered by both.
    fn and(mut self, other: Coverage) -> Coverage {
        self.0.extend(other.0);
        self
    }

    fn covers(&self, host: &str, port: u16) -> bool {
        let Ok(ip) = host.parse::<IpAddr>() else {
            return false;
        };
        let ip = crate::netaddr::normalise(ip);
        self.0.iter().all(|(nets, ports)| {
            ports.index_of(port).is_some() && nets.iter().any(|n| n.contains(&ip))
        })
    }
}

/// 400 when `addrs` x `ports` is more than the engine accepts in one scan.
pub fn check_size(addrs: &[String], ports: u64) -> Result<(), ManagedError> {
    let hosts: u128 = addrs
        .iter()
        .map(|a| match a.parse::<IpNet>() {
            Ok(n) => 1u128
                .checked_shl(u32::from(n.max_prefix_len() - n.prefix_len()))
                .unwrap_or(u128::MAX),
            Err(_) => 1,
        })
        .fold(0u128, u128::saturating_add);
    let pairs = hosts.saturating_mul(u128::from(ports));
    if pairs > MAX_SCAN_PAIRS {
        return Err(ManagedError::BadRequest(format!(
            "scan too large: {hosts} addresses x {ports} ports = {pairs} pairs; at most \
             {MAX_SCAN_PAIRS} pairs per scan (e.g. a deep scan of at most a /24, or fewer ports)"
        )));
    }
    Ok(())
}

/// The service.
#[derive(Debug)]
pub struct ManagedService {
    deps: ManagedDeps,
    settings: ManagedSettings,
    /// Serialises the 409 check, quotas, insert and submit.
    submit_lock: tokio::sync::Mutex<()>,
    /// Scans being finished (no double work on replays).
    finishing: Mutex<HashSet<String>>,
    /// Last `created_at_ms` handed out (strictly increasing).
    last_created: AtomicI64,
    /// Unix ms since when the engine has been unreachable (`None` while connected).
    down_since: Mutex<Option<u64>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl ManagedService {
    /// Starts the service: engine events and the scheduler (one catch-up run of every
    /// overdue target happens on the first tick).
    pub async fn start(deps: ManagedDeps, settings: ManagedSettings) -> Arc<Self> {
        let svc = Arc::new(ManagedService {
            deps,
            settings,
            submit_lock: tokio::sync::Mutex::new(()),
            finishing: Mutex::new(HashSet::new()),
            last_created: AtomicI64::new(0),
            down_since: Mutex::new(None),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
        });
        if svc.deps.engine.is_connected() {
            svc.on_connected().await;
        } else {
            *lock(&svc.down_since) = Some(svc.deps.clock.now_ms());
        }
        let me = svc.clone();
        svc.spawn(async move {
            while let Some(n) = me.deps.engine.recv().await {
                me.handle(n).await;
            }
        });
        if !svc.settings.grace_check_interval.is_zero() {
            let me = svc.clone();
            svc.spawn(async move {
                let mut tick = tokio::time::interval(me.settings.grace_check_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    me.fail_if_engine_gone().await;
                }
            });
        }
        if !svc.settings.scheduler_interval.is_zero() {
            let me = svc.clone();
            svc.spawn(async move {
                let mut tick = tokio::time::interval(me.settings.scheduler_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    me.maintain().await;
                }
            });
        }
        svc
    }

    /// Stops background work.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
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

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Scope (403), then the API's target policy and opt-out list (400), for every address
    /// the engine would be given. Returns those addresses.
    pub async fn authorize(
        &self,
        token: &Token,
        spec: &TargetSpec,
    ) -> Result<Vec<String>, ManagedError> {
        let addrs = token
            .scope
            .authorize(spec, self.deps.resolver.as_ref())
            .await?;
        for a in &addrs {
            let net: IpNet = match a.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => a
                    .parse()
                    .map_err(|_| ManagedError::Internal(format!("bad address {a}")))?,
            };
            // Every address, not only the ends: an opted-out host inside a CIDR refuses
            // the whole scan (nothing is subtracted silently).
            if let Some(out) = self.deps.opt_out.overlapping(net) {
                return Err(ManagedError::OutOfScope(
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
                .map_err(|e| ManagedError::BadRequest(format!("{a}: {e}")))?;
            self.deps.policy.check(&set).map_err(|e| {
                ManagedError::BadRequest(format!(
                    "{a} cannot be scanned: it overlaps {} ({})",
                    e.range, e.name
                ))
            })?;
        }
        Ok(addrs)
    }

    /// Checks and queues a scan for `token`. Every way in (POST scan, retest, target scan,
    /// trigger-all, scheduler) goes through here, so the scope is always re-checked.
    pub async fn submit(&self, token: &Token, order: &ScanOrder) -> Result<MScanRow, ManagedError> {
        let spec = TargetSpec::parse(&order.target).map_err(ManagedError::BadRequest)?;
        let domain = match (&order.domain, &spec) {
            (Some(d), _) => Some(super::scope::parse_domain(d).ok_or_else(|| {
                ManagedError::BadRequest(format!("{d} is not a valid domain name"))
            })?),
            (None, TargetSpec::Domain(d)) => Some(d.clone()),
            (None, _) => None,
        };
        let (profile, ports, port_count) =
            profile_ports(order.profile.as_deref(), order.ports.as_deref())?;
        let addrs = self.authorize(token, &spec).await?;
        check_size(&addrs, port_count)?;
        if self.engine_gone() {
            return Err(ManagedError::EngineUnavailable);
        }
        let target = spec.to_string();
        let store = &self.deps.store;
        let guard = self.submit_lock.lock().await;
        if let Some(live) = store.live_for(&token.id, &target).await? {
            return Err(ManagedError::InProgress {
                target,
                existing_id: live.id,
            });
        }
        let now_ms = self.deps.clock.now_ms() as i64;
        let (month, live, queued) = store
            .usage(&token.id, month_start_secs(now_ms / 1000) * 1000)
            .await?;
        let next_month = super::next_month_start_secs(now_ms / 1000);
        if month >= token.monthly_scans {
            return Err(ManagedError::Limited {
                code: "monthly_limit",
                message: format!(
                    "monthly scan limit reached: {} scans this month for token {}; it resets on \
                     the 1st (UTC) or ask the operator for a larger plan",
                    token.monthly_scans, token.name
                ),
                retry_after: (next_month - now_ms / 1000).max(1) as u64,
            });
        }
        if live >= token.max_concurrent {
            return Err(ManagedError::Limited {
                code: "concurrent_limit",
                message: format!(
                    "concurrent scan limit reached: {} scans queued or running for this token; \
                     wait for one to finish or cancel one",
                    token.max_concurrent
                ),
                retry_after: 30,
            });
        }
        if queued >= self.settings.queue_limit {
            return Err(ManagedError::Limited {
                code: "queue_full",
                message: format!(
                    "the scan queue is full ({} queued scans); try again later",
                    self.settings.queue_limit
                ),
                retry_after: 30,
            });
        }
        let created = {
            let prev = self
                .last_created
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                    Some(now_ms.max(last + 1))
                })
                .unwrap_or(now_ms);
            now_ms.max(prev + 1)
        };
        let id = new_managed_id();
        let row = MScanRow {
            report_key: store.report_key(&id),
            id,
            token_id: token.id.clone(),
            target_id: order.target_id.clone(),
            target,
            domain,
            addresses: addrs.join(","),
            ports,
            port_count: port_count as i64,
            profile,
            status: "queued".into(),
            submitted: 0,
            chunks_complete: 0,
            total_chunks: 0,
            error: None,
            grade: None,
            grade_score: None,
            duration_ms: None,
            created_at_ms: created,
            started_at: None,
            completed_at: None,
        };
        store.insert_scan(&row).await?;
        self.send_submit(&row).await;
        drop(guard);
        Ok(row)
    }

    async fn send_submit(&self, row: &MScanRow) -> bool {
        let req = Request::Submit {
            id: row.id.clone(),
            targets: row.addresses.split(',').map(str::to_string).collect(),
            ports: row.ports.clone(),
            kind: ScanKind::Custom,
            priority: PRIORITY,
        };
        match self.deps.engine.send(req).await {
            Ok(()) => {
                if let Err(e) = self.deps.store.mark_submitted(&row.id).await {
                    tracing::error!(error = %e, id = %row.id, "cannot mark scan submitted");
                }
                true
            }
            Err(EngineError::NotConnected) => false,
            Err(e) => {
                tracing::warn!(error = %e, id = %row.id, "submit not sent; retrying on reconnect");
                false
            }
        }
    }

    /// Cancels a live scan (400 when final).
    pub async fn cancel(&self, row: &MScanRow) -> Result<(), ManagedError> {
        if !row.is_live()
            || !self
                .deps
                .store
                .end(&row.id, "cancelled", None, self.now_secs())
                .await?
        {
            return Err(ManagedError::BadRequest(format!(
                "scan {} is already {} and cannot be cancelled",
                row.id, row.status
            )));
        }
        if row.submitted == 1 {
            if let Err(e) = self
                .deps
                .engine
                .send(Request::Cancel { id: row.id.clone() })
                .await
            {
                tracing::warn!(error = %e, id = %row.id, "cancel not sent to the engine");
            }
        }
        Ok(())
    }

    async fn handle(self: &Arc<Self>, n: EngineNotice) {
        match n {
            EngineNotice::Connected => {
                *lock(&self.down_since) = None;
                self.on_connected().await
            }
            EngineNotice::Disconnected => {
                lock(&self.down_since).get_or_insert(self.deps.clock.now_ms());
            }
            EngineNotice::Event(e) => {
                if let Err(err) = self.on_event(e).await {
                    tracing::error!(error = %err, "managed engine event not recorded");
                }
            }
        }
    }

    async fn on_connected(self: &Arc<Self>) {
        let _guard = self.submit_lock.lock().await;
        let rows = match self.deps.store.live().await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot list live managed scans");
                return;
            }
        };
        for r in rows {
            if r.submitted == 1 {
                let req = Request::Status {
                    id: Some(r.id.clone()),
                };
                if let Err(e) = self.deps.engine.send(req).await {
                    tracing::warn!(error = %e, id = %r.id, "status not sent");
                }
            } else {
                self.send_submit(&r).await;
            }
        }
    }

    async fn on_event(self: &Arc<Self>, e: Event) -> Result<(), sqlx::Error> {
        let store = &self.deps.store;
        let now = self.now_secs();
        match e {
            Event::Accepted {
                id,
                queue_position: _,
                total_chunks,
            } => store.progress(&id, false, None, total_chunks, now).await?,
            Event::Progress {
                id,
                queue_position,
                chunks_complete,
                total_chunks,
            } => {
                store
                    .progress(
                        &id,
                        queue_position == 0,
                        Some(chunks_complete),
                        total_chunks,
                        now,
                    )
                    .await?
            }
            Event::Rejected { id, code, message } => {
                if code == "duplicate" {
                    store.mark_submitted(&id).await?;
                    let _ = self
                        .deps
                        .engine
                        .send(Request::Status { id: Some(id) })
                        .await;
                } else {
                    tracing::warn!(%id, %code, %message, "engine rejected a managed scan");
                    store
                        .end(
                            &id,
                            "failed",
                            Some(&format!("rejected_{code}: {message}")),
                            now,
                        )
                        .await?;
                }
            }
            Event::Ports { id, results, .. } => {
                let ports: Vec<(String, u16, &str)> = results
                    .iter()
                    .filter(|r| r.state != PortState::Closed)
                    .map(|r| {
                        (
                            crate::netaddr::normalise(r.ip).to_string(),
                            r.port,
                            r.state.as_str(),
                        )
                    })
                    .collect();
                if !ports.is_empty() && store.scan(&id).await?.is_some_and(|r| r.is_live()) {
                    store.add_ports(&id, &ports).await?;
                }
            }
            Event::Finished {
                id,
                outcome,
                duration_ms,
                ..
            } => match outcome {
                Outcome::Complete => self.spawn_finish(id, duration_ms),
                Outcome::Failed(reason) => {
                    store.end(&id, "failed", Some(&reason), now).await?;
                }
            },
            Event::Hello { .. } | Event::Status(_) | Event::Error { .. } => {}
        }
        Ok(())
    }

    fn spawn_finish(self: &Arc<Self>, id: String, duration_ms: u64) {
        if !lock(&self.finishing).insert(id.clone()) {
            return;
        }
        let me = self.clone();
        self.spawn(async move {
            if let Err(e) = me.finish(&id, duration_ms).await {
                tracing::error!(error = %e, %id, "cannot complete managed scan");
            }
            lock(&me.finishing).remove(&id);
        });
    }

    /// Banners, grade, `complete`, alerts against the previous scan, monitors.
    async fn finish(self: &Arc<Self>, id: &str, duration_ms: u64) -> Result<(), sqlx::Error> {
        let store = &self.deps.store;
        let Some(row) = store.scan(id).await? else {
            return Ok(());
        };
        if !row.is_live() {
            return Ok(());
        }
        let ports = store.ports(id).await?;
        let mut by_host: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for p in ports.iter().filter(|p| p.state == "open") {
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
            .filter(|p| p.state == "open")
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
                a.kind == "new_open_port" && a.host == o.host && a.port == i64::from(o.port)
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

    /// Alerts: ports open now but not in the previous complete scan of the same target,
    /// ports open then but not now, and changed banners. No previous scan, no alerts.
    async fn diff(&self, row: &MScanRow, open: &[OpenPort]) -> Result<Vec<AlertRow>, sqlx::Error> {
        let store = &self.deps.store;
        let Some(prev) = store
            .previous_complete(&row.token_id, &row.target, row.created_at_ms)
            .await?
        else {
            return Ok(Vec::new());
        };
        // Only what both scans probed is compared: a fast scan after a deep one says
        // nothing about the ports it did not probe.
        let covered = Coverage::of(&prev).and(Coverage::of(row));
        let before: BTreeMap<(String, u16), Option<String>> = store
            .ports(&prev.id)
            .await?
            .into_iter()
            .filter(|p| p.state == "open")
            .map(|p| ((p.host, u16::try_from(p.port).unwrap_or(0)), p.banner))
            .filter(|((h, port), _)| covered.covers(h, *port))
            .collect();
        let now: BTreeMap<(String, u16), Option<String>> = open
            .iter()
            .map(|p| ((p.host.clone(), p.port), p.banner.clone()))
            .filter(|((h, port), _)| covered.covers(h, *port))
            .collect();
        let at = self.now_secs();
        let mk =
            |host: &str, port: u16, kind: &str, sev: Severity, msg: String, old, new| AlertRow {
                id: format!("al-{}", random_hex(12)),
                token_id: row.token_id.clone(),
                scan_id: row.id.clone(),
                target_id: row.target_id.clone(),
                target: row.target.clone(),
                host: host.to_string(),
                port: i64::from(port),
                kind: kind.to_string(),
                severity: sev.as_str().to_string(),
                message: msg,
                old_value: old,
                new_value: new,
                status: "open".into(),
                created_at: at,
                acknowledged_at: None,
                resolved_at: None,
                notified: 0,
            };
        let mut out = Vec::new();
        for ((host, port), banner) in &now {
            match before.get(&(host.clone(), *port)) {
                None => {
                    let sev = findings::new_port_severity(*port);
                    out.push(mk(
                        host,
                        *port,
                        "new_open_port",
                        sev,
                        format!("port {port}/tcp is newly open on {host}"),
                        Some("closed".into()),
                        Some("open".into()),
                    ));
                }
                Some(old) => {
                    if let (Some(o), Some(n)) = (old, banner) {
                        if o != n {
                            out.push(mk(
                                host,
                                *port,
                                "banner_changed",
                                Severity::Low,
                                format!("the banner of {host}:{port}/tcp changed"),
                                Some(o.clone()),
                                Some(n.clone()),
                            ));
                        }
                    }
                }
            }
        }
        for (host, port) in before.keys() {
            if !now.contains_key(&(host.clone(), *port)) {
                out.push(mk(
                    host,
                    *port,
                    "port_closed",
                    Severity::Info,
                    format!("port {port}/tcp is no longer open on {host}"),
                    Some("open".into()),
                    Some("not open".into()),
                ));
            }
        }
        Ok(out)
    }

    /// Monitor: POSTs new alerts at or above the target's threshold to its webhook.
    async fn notify(self: &Arc<Self>, row: &MScanRow, alerts: Vec<AlertRow>) {
        let Some(tid) = &row.target_id else {
            return;
        };
        let target = match self.deps.store.target_any(tid).await {
            Ok(Some(t)) => t,
            _ => return,
        };
        if target.webhook_url.is_none() && target.alert_email.is_none() {
            return;
        }
        let min = target
            .alert_min_severity
            .as_deref()
            .and_then(Severity::parse)
            .unwrap_or(Severity::High);
        let picked: Vec<AlertRow> = alerts
            .into_iter()
            .filter(|a| Severity::parse(&a.severity).is_some_and(|s| s >= min))
            .collect();
        if picked.is_empty() {
            return;
        }
        let ids: Vec<String> = picked.iter().map(|a| a.id.clone()).collect();
        if let Some(url) = target.webhook_url.clone() {
            let body = serde_json::json!({
                "event": "alerts",
                "scanId": row.id,
                "targetId": tid,
                "target": row.target,
                "alerts": picked.iter().map(super::api::alert_json).collect::<Vec<_>>(),
            });
            let body = serde_json::to_vec(&body).unwrap_or_default();
            let me = self.clone();
            let ids = ids.clone();
            self.spawn(async move {
                let d = me.deps.webhooks.deliver(&url, &body, || {}).await;
                tracing::info!(%url, delivered = d.delivered, attempts = d.attempts, "monitor webhook");
                if d.delivered {
                    if let Err(e) = me.deps.store.mark_notified(&ids).await {
                        tracing::error!(error = %e, "cannot record monitor delivery");
                    }
                }
            });
        }
        if let (Some(to), Some(mailer)) = (target.alert_email.clone(), self.deps.mailer.clone()) {
            let worst = picked
                .iter()
                .filter_map(|a| Severity::parse(&a.severity))
                .max()
                .unwrap_or(Severity::Info);
            let subject = format!(
                "[portscope] {} alert(s) on {} ({})",
                picked.len(),
                row.target,
                worst.as_str()
            );
            let mut text = format!(
                "Scan {} of {} found changes since the previous scan:\n\n",
                row.id, row.target
            );
            for a in &picked {
                text.push_str(&format!("- [{}] {}\n", a.severity, a.message));
            }
            text.push_str(&format!(
                "\nReport: /report/{}?key={}\n",
                row.id, row.report_key
            ));
            let attempts = self.deps.webhooks.attempts.max(1);
            let backoff = self.deps.webhooks.backoff;
            self.spawn(async move {
                let mut delay = backoff;
                for attempt in 1..=attempts {
                    match mailer.send(&to, &subject, &text).await {
                        Ok(()) => {
                            tracing::info!(%to, attempt, "monitor e-mail sent");
                            return;
                        }
                        Err(e) => tracing::warn!(%to, attempt, error = %e, "monitor e-mail failed"),
                    }
                    if attempt < attempts {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            });
        }
    }

    /// The scan order of a saved target.
    pub fn order_for(t: &TargetRow) -> ScanOrder {
        ScanOrder {
            target: t.target.clone(),
            domain: None,
            profile: Some(t.profile.clone()),
            ports: t.ports.clone(),
            target_id: Some(t.id.clone()),
        }
    }

    /// Whether the engine has been unreachable for longer than the grace period.
    pub fn engine_gone(&self) -> bool {
        lock(&self.down_since).is_some_and(|since| {
            self.deps.clock.now_ms().saturating_sub(since) >= self.settings.grace_ms
        })
    }

    /// Periodic work: fail live scans once the engine has been gone past the grace
    /// period, then run due scheduled targets.
    pub async fn maintain(&self) -> usize {
        if self.fail_if_engine_gone().await {
            return 0;
        }
        self.run_due().await
    }

    /// Fails every live scan with `engine_unavailable` once the engine has been gone past
    /// the grace period; `true` when it has.
    pub async fn fail_if_engine_gone(&self) -> bool {
        if self.engine_gone() {
            match self.deps.store.live().await {
                Ok(rows) => {
                    for r in rows {
                        let now = self.now_secs();
                        if let Err(e) = self
                            .deps
                            .store
                            .end(&r.id, "failed", Some("engine_unavailable"), now)
                            .await
                        {
                            tracing::error!(error = %e, "cannot fail managed scan");
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot list live managed scans"),
            }
            return true;
        }
        false
    }

    /// Runs every due scheduled target once, then sets its next run to now + interval, so
    /// a schedule missed during downtime runs once, not once per missed interval.
    pub async fn run_due(&self) -> usize {
        let now = self.now_secs();
        let due = match self.deps.store.due_targets(now).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot list due targets");
                return 0;
            }
        };
        let mut started = 0;
        for t in due {
            // Checked: a stored interval is bounded by the API, but a row is not trusted
            // to be (an overflow would put the next run in the past: a scan every tick).
            let interval = t
                .interval_secs
                .unwrap_or(0)
                .clamp(super::api::MIN_INTERVAL, super::api::MAX_INTERVAL);
            let next = now.saturating_add(interval);
            if let Err(e) = self.deps.store.set_next_run(&t.id, next).await {
                tracing::error!(error = %e, "cannot schedule target");
                continue;
            }
            let token = match self.token_by_id(&t.token_id).await {
                Ok(Some(tok)) => tok,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "cannot load token");
                    continue;
                }
            };
            match self.submit(&token, &Self::order_for(&t)).await {
                Ok(_) => started += 1,
                Err(e) => {
                    tracing::warn!(target_id = %t.id, error = %e, "scheduled scan not started")
                }
            }
        }
        started
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
    pub fn check_email(&self, to: &str) -> Result<String, ManagedError> {
        if self.deps.mailer.is_none() {
            return Err(ManagedError::BadRequest(
                "alert e-mail is not configured on this server (smtp-url)".into(),
            ));
        }
        let to = to.trim();
        if !super::mail::valid_address(to) {
            return Err(ManagedError::BadRequest(format!(
                "alertEmail {to:?} is not an e-mail address"
            )));
        }
        Ok(to.to_string())
    }

    /// Checks a monitor webhook URL (same rules as self-scan callbacks).
    pub async fn check_webhook(&self, url: &str) -> Result<String, ManagedError> {
        self.deps
            .webhooks
            .policy
            .check(url.trim())
            .await
            .map(|d| d.url.to_string())
            .map_err(|e| ManagedError::BadRequest(format!("invalid webhookUrl: {e}")))
    }
}
