//! Portscope's control API: the self-scan HTTP API of seed 000 (`/v1/fast`, `/v1/deep`),
//! backed by SQLite and the engine daemon over a Unix socket. It never opens raw sockets
//! and needs no capabilities: the engine does the probing.
//!
//! Code map:
//! - [`http`]: `app(state) -> Router`, one module per API surface, the OpenAPI documents,
//!   the one error type, layers (edge limit, JSON errors, limits).
//! - [`selfscan`]: the self-scan service (coalescing, per-type limits, enrichment,
//!   webhooks, expiry).
//! - [`engine`]: the `EngineClient` trait, the Unix-socket client and a scripted fake.
//! - [`store`]: sqlx on SQLite (embedded default) or PostgreSQL, one module per table group.
//! - [`model`]: response shapes and scan types.
//! - [`netaddr`]: client address, CIDR sets, ASN table. [`ratelimit`]: fixed windows.
//! - [`webhook`], [`enrich`] (banners, PTR), [`metrics`], [`clock`], [`config`],
//!   [`util`] (random hex, locking).
//! - [`serve`]: the listener (connection caps, header-read and idle timeouts, JSON for
//!   hyper's own errors). [`privs`]: no-new-privs and no capabilities, at start.
//! - [`managed`]: the token-authenticated managed-scan API (`/api/v1`, `/report/{id}`).
//! - [`jobs`]: scans as durable chunk jobs on a queue (apalis), the `worker` subcommand.
//!
//! **Invariant:** a self-scan's target is always the requesting connection's address (or
//! the right-most untrusted `X-Forwarded-For` hop behind a trusted proxy); no self-scan
//! request field can name another target. A managed scan (`/api/v1`) names its target, but
//! only inside its bearer token's scope, checked in one place before anything is queued.

pub mod background;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod enrich;
pub mod http;
pub mod jobs;
pub mod managed;
pub mod metrics;
pub mod model;
pub mod netaddr;
pub mod privs;
pub mod ratelimit;
pub mod secret;
pub mod selfscan;
pub mod serve;
pub mod store;
pub mod util;
pub mod webhook;

pub use http::{app, AppState};

use clock::Clock;
use config::Config;
use engine::EngineClient;
use enrich::{BannerGrabber, PtrResolver};
use netaddr::{AsnTable, CidrSet, LoadError};
use portscope_core::policy::TargetPolicy;
use std::sync::Arc;
use std::time::Duration;

/// The parts that touch the outside world, chosen by the caller (real ones in the binary,
/// fakes in tests).
#[derive(Debug, Clone)]
pub struct Services {
    /// The engine connection.
    pub engine: Arc<dyn EngineClient>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Banner grabbing.
    pub banners: Arc<dyn BannerGrabber>,
    /// PTR lookups.
    pub ptr: Arc<dyn PtrResolver>,
}

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database {path}: {source}")]
    Db {
        /// The file.
        path: String,
        /// Why.
        source: sqlx::Error,
    },
    /// The opt-out list or ASN table could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The secret file could not be read or created.
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    /// `smtp-url` / `smtp-from` are not usable.
    #[error("{0}")]
    Smtp(String),
}

/// Options of the managed-scan API that are not in the config file.
#[derive(Debug, Clone)]
pub struct ManagedOptions {
    /// Host name resolution for token scopes (the system resolver by default).
    pub resolver: Arc<dyn managed::scope::Resolver>,
    /// Queue limit and scheduler period.
    pub settings: managed::service::ManagedSettings,
    /// Alert e-mail; `None` = SMTP from `smtp-url` when configured, else no e-mail.
    pub mailer: Option<Arc<dyn managed::mail::Mailer>>,
}

impl Default for ManagedOptions {
    fn default() -> Self {
        ManagedOptions {
            resolver: Arc::new(managed::scope::SystemResolver::default()),
            settings: managed::service::ManagedSettings::default(),
            mailer: None,
        }
    }
}

/// Opens the database, loads the lists, starts the scan service (and, with `worker`, the
/// in-process chunk worker). Serve `app(state)`.
pub async fn start(config: &Config, services: Services) -> Result<AppState, StartError> {
    start_with(config, services, ManagedOptions::default()).await
}

/// [`start`] with explicit managed-scan options (tests: a static resolver, no scheduler).
pub async fn start_with(
    config: &Config,
    services: Services,
    managed_opts: ManagedOptions,
) -> Result<AppState, StartError> {
    for key in config.retired_keys() {
        tracing::warn!(
            key,
            "config key {key} is retired and does nothing; remove it"
        );
    }
    let store = store::Store::open(&config.db)
        .await
        .map_err(|source| StartError::Db {
            path: config.db.display().to_string(),
            source,
        })?;
    let opt_out = match &config.opt_out {
        Some(p) => netaddr::load_cidrs(p)?,
        None => CidrSet::default(),
    };
    let asn = match &config.asn_table {
        Some(p) => netaddr::load_asn_table(p)?,
        None => AsnTable::default(),
    };
    let mut policy = TargetPolicy::default_deny();
    for c in &config.allow_target {
        policy.allow(c.0);
    }
    let callbacks =
        webhook::CallbackPolicy::new(CidrSet::new(config.allow_callback.iter().map(|c| c.0)));
    // Several API nodes share one PostgreSQL: their limits count there (see `ratelimit`).
    let shared_limits = (store.pool().backend() == store::Backend::Postgres).then(|| store.pool());
    let limits = Arc::new(
        shared_limits.map_or_else(ratelimit::Limits::default, ratelimit::Limits::in_store),
    );
    let metrics = metrics::Metrics::new();
    // One engine connection, two consumers: events are routed by scan id.
    let mailer: Option<Arc<dyn managed::mail::Mailer>> =
        match (&managed_opts.mailer, &config.smtp_url) {
            (Some(m), _) => Some(m.clone()),
            (None, Some(url)) => {
                let from = config.smtp_from.as_deref().ok_or_else(|| {
                    StartError::Smtp("smtp-url needs smtp-from (the sender address)".into())
                })?;
                Some(Arc::new(
                    managed::mail::SmtpMailer::new(url, from).map_err(StartError::Smtp)?,
                ))
            }
            (None, None) => None,
        };
    let secret = secret::ServerSecret::load_or_create(&config.secret_path())?;
    let mstore = managed::store::MStore::with_secret(store.pool().clone(), secret);
    let forgotten = mstore
        .forget_stored_report_keys()
        .await
        .map_err(|source| StartError::Db {
            path: config.db.display().to_string(),
            source,
        })?;
    if forgotten > 0 {
        tracing::info!(
            scans = forgotten,
            "report keys no longer stored; derived from the secret file"
        );
    }
    let webhooks = webhook::Webhooks {
        policy: callbacks.clone(),
        attempts: config.webhook_attempts,
        timeout: Duration::from_millis(config.webhook_timeout_ms),
        backoff: Duration::from_millis(config.webhook_backoff_ms),
    };
    let deliveries = delivery::Deliveries::start(
        store.pool(),
        webhooks.clone(),
        mstore.clone(),
        metrics.clone(),
        mailer.clone(),
    )
    .await
    .map_err(|source| StartError::Db {
        path: config.db.display().to_string(),
        source,
    })?;
    // Both services' scans are job scans: this process's worker (if any) runs their chunks
    // and wakes both finishers after each commit.
    let engine_stop = tokio_util::sync::CancellationToken::new();
    let changed = Arc::new(tokio::sync::Notify::new());
    // Other nodes' commits wake them too (PostgreSQL); the listener ends with the pool.
    if let store::Db::Postgres(pool) = store.pool() {
        let changed = changed.clone();
        tokio::spawn(store::notify::listen(pool.clone(), move || {
            changed.notify_waiters()
        }));
    }
    let finisher_poll = config.finisher_poll(store.pool().backend());
    let managed_service = managed::service::ManagedService::start(
        managed::service::ManagedDeps {
            store: mstore,
            clock: services.clock.clone(),
            resolver: managed_opts.resolver,
            banners: services.banners.clone(),
            webhooks: webhooks.clone(),
            policy: policy.clone(),
            opt_out: opt_out.clone(),
            mailer,
            monitor_body: http::managed::monitor_body,
            deliveries: deliveries.clone(),
        },
        managed::service::ManagedSettings {
            finisher_poll,
            chunk_probes: config.chunk_probes.max(1),
            ..managed_opts.settings
        },
        changed.clone(),
    )
    .await;
    let managed = Arc::new(http::managed::router::Managed {
        service: managed_service,
        limiter: {
            let (limit, window) = (
                http::managed::router::API_LIMIT,
                http::managed::router::API_WINDOW,
            );
            match shared_limits {
                Some(db) => {
                    ratelimit::FixedWindow::new(limit, window).in_store(db.clone(), "managed_api")
                }
                None => ratelimit::FixedWindow::new(limit, window),
            }
        },
        trusted: CidrSet::new(config.trusted_proxy.iter().map(|c| c.0)),
        clock: services.clock.clone(),
        last_prune: std::sync::atomic::AtomicU64::new(0),
        engine_stop: engine_stop.clone(),
    });
    // The in-process chunk worker runs its chunks on the API's own engine connection.
    let worker = config.worker.then(|| {
        let engines = Arc::new(jobs::connector::SharedConnector::new(
            services.engine.clone(),
            engine_stop,
        ));
        let mut opts =
            jobs::worker::WorkerOptions::new(store.pool().clone(), engines, jobs::cli::host_name());
        opts.concurrency = config.worker_concurrency.clamp(1, 64);
        opts.claims = opts.concurrency;
        opts.engine_connect = Duration::from_millis(config.worker_connect_ms.max(1));
        opts.retry_pause = Duration::from_millis(config.worker_retry_ms);
        opts.changed = changed.clone();
        opts.clock = services.clock.clone();
        opts
    });
    let scans = selfscan::ScanService::start(
        selfscan::ScanDeps {
            store,
            engine: services.engine,
            clock: services.clock.clone(),
            banners: services.banners,
            ptr: services.ptr,
            webhooks,
            metrics: metrics.clone(),
            limits: limits.clone(),
            asn,
        },
        selfscan::ScanSettings {
            ttl_secs: config.result_ttl_secs,
            maintenance_interval: Duration::from_millis(config.maintenance_interval_ms.max(10)),
            finisher_poll,
        },
        changed,
        worker,
    )
    .await;
    tracing::info!(
        db = %config.db.display(),
        opt_out = opt_out.len(),
        allow_target = config.allow_target.len(),
        "control API started"
    );
    Ok(AppState(Arc::new(http::Shared {
        scans,
        managed,
        limits,
        policy,
        opt_out,
        trusted: CidrSet::new(config.trusted_proxy.iter().map(|c| c.0)),
        callbacks,
        metrics,
        clock: services.clock,
        http: http::HttpLimits {
            body_bytes: config.body_limit_bytes,
            timeout: Duration::from_secs(config.request_timeout_secs.max(1)),
            concurrency: config.max_concurrent_requests,
        },
    })))
}

impl AppState {
    /// Stops background work and closes the database (the engine client is the caller's).
    pub async fn shutdown(&self) {
        self.0.managed.service.shutdown().await;
        self.0.managed.service.deliveries().shutdown().await;
        self.0.scans.shutdown().await;
        self.0.managed.engine_stop.cancel();
        self.0.scans.store().close().await;
    }

    /// The managed-scan service.
    pub fn managed(&self) -> &Arc<managed::service::ManagedService> {
        &self.0.managed.service
    }

    /// Runs one round of maintenance now (purge, grace check, gauges; managed scans: grace
    /// check and due schedules).
    pub async fn maintain(&self) {
        self.0.scans.maintain().await;
        self.0.managed.service.maintain().await;
    }
}
