//! The managed-scan API's harness (`M`): the whole router, the fake engine, a temp SQLite
//! file, a manual clock, a resolver and banners the test can change, and an outbox for alert
//! mail.

use super::{lab_config, oneshot, services, App, Banners, Reply, T0_MS};
use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use portscope_control_api::clock::ManualClock;
use portscope_control_api::config::Config;
use portscope_control_api::engine::fake::{port_result, FakeEngine};
use portscope_control_api::enrich::NoPtr;
use portscope_control_api::managed::scope::{Resolver, Scope};
use portscope_control_api::managed::service::ManagedSettings;
use portscope_control_api::managed::store::MScanRow;
use portscope_control_api::managed::tokens;
use portscope_control_api::model::Status;
use portscope_control_api::{start_with, AppState, ManagedOptions};
use portscope_core::results::PortState;
use portscope_core::targets::PortSet;
use portscope_proto::{Event, Request as EngineRequest};
use serde_json::Value;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A resolver the test can change (DNS moving a name out of scope).
#[derive(Debug, Default)]
pub struct Dns(pub Mutex<HashMap<String, Vec<IpAddr>>>);

impl Dns {
    pub fn set(&self, name: &str, addrs: &[&str]) {
        self.0.lock().unwrap().insert(
            name.to_string(),
            addrs.iter().map(|a| a.parse().unwrap()).collect(),
        );
    }
}

#[async_trait]
impl Resolver for Dns {
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        self.0
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| format!("{name} does not resolve"))
    }
}

/// Alert e-mail that is recorded, not sent.
#[derive(Debug, Default)]
pub struct Outbox(pub Mutex<Vec<(String, String, String)>>);

#[async_trait]
impl portscope_control_api::managed::mail::Mailer for Outbox {
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        self.0
            .lock()
            .unwrap()
            .push((to.into(), subject.into(), body.into()));
        Ok(())
    }
}

pub struct M {
    pub app: App,
    /// The mail the API sent.
    pub outbox: Arc<Outbox>,
    /// The resolver scope checks ask.
    pub dns: Arc<Dns>,
    pub dir: tempfile::TempDir,
    /// Rotates the client address so tests do not hit the per-IP limit by accident.
    next_client: AtomicU32,
}

impl std::ops::Deref for M {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

/// The self-scan lab config.
pub fn config(dir: &std::path::Path) -> Config {
    lab_config(dir)
}

/// Settings with no scheduler loop (a test runs its rounds with `run_due`) and at most
/// `queue_limit` queued scans ([`M::new`]: 1000).
pub fn unscheduled(queue_limit: i64) -> ManagedSettings {
    ManagedSettings {
        queue_limit,
        scheduler_interval: Duration::ZERO,
        ..ManagedSettings::default()
    }
}

/// The alerts of a GET `/api/v1/alerts` reply as (type, port, severity), sorted.
pub fn alert_kinds(r: &Reply) -> Vec<(String, i64, String)> {
    let mut kinds: Vec<(String, i64, String)> = r.body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["type"].as_str().unwrap().into(),
                a["port"].as_i64().unwrap(),
                a["severity"].as_str().unwrap().into(),
            )
        })
        .collect();
    kinds.sort();
    kinds
}

impl M {
    pub async fn new() -> M {
        Self::with(|_| {}, unscheduled(1000)).await
    }

    pub async fn with(tweak: impl FnOnce(&mut Config), settings: ManagedSettings) -> M {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        tweak(&mut c);
        Self::build(
            dir,
            c,
            ManualClock::at(T0_MS),
            Arc::new(Dns::default()),
            Arc::new(Banners::default()),
            settings,
        )
        .await
    }

    /// A managed API whose alert e-mail goes to the SMTP server on 127.0.0.1:`port` (the
    /// configured `smtp-url`, not the outbox), with no scheduler.
    pub async fn with_smtp(port: u16) -> M {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
        c.smtp_from = Some("Portscope <alerts@example.com>".into());
        Self::build(
            dir,
            c,
            ManualClock::at(T0_MS),
            Arc::new(Dns::default()),
            Arc::new(Banners::default()),
            unscheduled(1000),
        )
        .await
    }

    async fn build(
        dir: tempfile::TempDir,
        c: Config,
        clock: ManualClock,
        dns: Arc<Dns>,
        banners: Arc<Banners>,
        settings: ManagedSettings,
    ) -> M {
        let engine = Arc::new(FakeEngine::new());
        let outbox = Arc::new(Outbox::default());
        // With `smtp-url` configured, the API's own SMTP mailer (the outbox stays empty).
        let mailer: Option<Arc<dyn portscope_control_api::managed::mail::Mailer>> = match c.smtp_url
        {
            Some(_) => None,
            None => Some(outbox.clone()),
        };
        let state = start_with(
            &c,
            services(engine.clone(), &clock, banners.clone(), Arc::new(NoPtr)),
            ManagedOptions {
                resolver: dns.clone(),
                settings,
                mailer,
            },
        )
        .await
        .unwrap();
        M {
            app: App::new(state, engine, clock, banners),
            outbox,
            dns,
            dir,
            next_client: AtomicU32::new(1),
        }
    }

    /// Shuts this API down and starts a new one on the same database and clock, with a new
    /// fake engine and these settings.
    pub async fn restart(self, settings: ManagedSettings) -> M {
        self.state.shutdown().await;
        let c = config(self.dir.path());
        let App { clock, banners, .. } = self.app;
        Self::build(self.dir, c, clock, self.dns, banners, settings).await
    }

    /// A second API node on the same database, clock, resolver, banners and outbox, with
    /// no worker of its own: its managed finisher races this one's.
    pub async fn second_node(&self) -> AppState {
        let mut c = config(self.dir.path());
        c.worker = false;
        c.allow_callback = vec!["127.0.0.0/8".parse().unwrap()];
        start_with(
            &c,
            services(
                Arc::new(FakeEngine::new()),
                &self.clock,
                self.banners.clone(),
                Arc::new(NoPtr),
            ),
            ManagedOptions {
                resolver: self.dns.clone(),
                settings: ManagedSettings {
                    scheduler_interval: Duration::ZERO,
                    ..ManagedSettings::default()
                },
                mailer: Some(self.outbox.clone()),
            },
        )
        .await
        .unwrap()
    }

    /// Creates a token directly in the database (as the CLI does); returns the secret.
    pub async fn token(&self, name: &str, scope: &[&str], monthly: i64, concurrent: i64) -> String {
        let (_, secret) = tokens::create(
            self.state.managed().store().pool(),
            &tokens::NewToken {
                name: name.into(),
                scope: Scope::parse(scope.iter().copied()).unwrap(),
                monthly_scans: monthly,
                max_concurrent: concurrent,
            },
            0,
        )
        .await
        .unwrap();
        secret
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        from: &str,
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        oneshot(&self.router, b.body(body).unwrap(), from).await
    }

    fn client(&self) -> String {
        let n = self.next_client.fetch_add(1, Ordering::SeqCst);
        format!("127.0.{}.{}", (n / 250) % 250, n % 250 + 1)
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        let from = self.client();
        self.send(Method::GET, path, Some(token), None, &from).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Option<Value>) -> Reply {
        let from = self.client();
        self.send(Method::POST, path, Some(token), body, &from)
            .await
    }

    /// POSTs a JSON body.
    pub async fn post_json(&self, path: &str, token: &str, body: Value) -> Reply {
        self.post(path, token, Some(body)).await
    }

    /// POSTs a saved target (`/api/v1/targets`) with this body.
    pub async fn save_target(&self, token: &str, body: Value) -> Reply {
        self.post_json("/api/v1/targets", token, body).await
    }

    /// POSTs a scan of `target` with `token`, asserts 201, returns the scan's id.
    pub async fn scan(&self, token: &str, target: &str) -> String {
        self.scan_with(token, serde_json::json!({ "target": target }))
            .await
    }

    /// POSTs to `path` with no body (a retest, a saved target's scan), asserts 201,
    /// returns the new scan's id.
    pub async fn post_created(&self, path: &str, token: &str) -> String {
        self.post(path, token, None).await.created_id()
    }

    /// POSTs a scan with this body, asserts 201, returns the scan's id.
    pub async fn scan_with(&self, token: &str, body: Value) -> String {
        self.post_json("/api/v1/scan", token, body)
            .await
            .created_id()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let from = self.client();
        self.send(method, path, Some(token), body, &from).await
    }

    /// The chunk runs of managed scans the engine was sent, in order: (engine id, scan
    /// id, chunk, targets, ports). A managed scan is a job scan: the API's in-process
    /// worker submits each chunk as engine scan `<scan id>/<chunk>/<run>`.
    pub fn chunk_runs(&self) -> Vec<ChunkRun> {
        self.engine
            .requests()
            .into_iter()
            .filter_map(|r| match r {
                EngineRequest::Submit {
                    id, targets, ports, ..
                } => {
                    let mut parts = id.split('/');
                    let scan = parts.next()?.to_string();
                    let chunk = parts.next()?.parse().ok()?;
                    (scan.len() == 36).then_some(ChunkRun {
                        run: id,
                        scan,
                        chunk,
                        targets,
                        ports,
                    })
                }
                _ => None,
            })
            .collect()
    }

    /// Every managed scan that reached the engine: (scan id, targets, ports) of its first
    /// chunk's first run, oldest scan first. Waits (up to 10 s) until every live managed
    /// scan has reached it (the worker polls the queue).
    pub async fn submits(&self) -> Vec<(String, Vec<String>, String)> {
        let store = self.state.managed().store();
        for _ in 0..3000 {
            let live = store.live().await.unwrap();
            let runs = self.chunk_runs();
            if live.iter().all(|r| runs.iter().any(|c| c.scan == r.id)) {
                let mut seen: Vec<(i64, String, Vec<String>, String)> = Vec::new();
                for c in runs.into_iter().filter(|c| c.chunk == 0) {
                    if !seen.iter().any(|s| s.1 == c.scan) {
                        let created = self.row(&c.scan).await.created_at_ms;
                        seen.push((created, c.scan, c.targets, c.ports));
                    }
                }
                seen.sort();
                return seen.into_iter().map(|(_, a, b, c)| (a, b, c)).collect();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("live managed scans never reached the engine");
    }

    /// The newest run of chunk `chunk` of scan `id` (waits for it).
    pub async fn run_of(&self, id: &str, chunk: u32) -> ChunkRun {
        for _ in 0..3000 {
            if let Some(c) = self
                .chunk_runs()
                .into_iter()
                .rev()
                .find(|c| c.scan == id && c.chunk == chunk)
            {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("chunk {chunk} of scan {id} never reached the engine");
    }

    pub async fn row(&self, id: &str) -> MScanRow {
        self.state
            .managed()
            .store()
            .scan(id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits until the scan row satisfies `f`.
    pub async fn wait(&self, id: &str, f: impl Fn(&MScanRow) -> bool) {
        for _ in 0..3000 {
            if f(&self.row(id).await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "scan {id} never reached the expected state: {:?}",
            self.row(id).await
        );
    }

    pub async fn wait_status(&self, id: &str, status: Status) {
        self.wait(id, |r| r.status == status).await;
    }

    /// Emits `Ports` for several hosts in the newest run of chunk `chunk` of scan `id`.
    pub async fn ports(&self, id: &str, chunk: u32, results: &[(&str, u16, PortState)]) {
        let run = self.run_of(id, chunk).await;
        let results = results
            .iter()
            .map(|&(ip, port, state)| port_result(ip.parse().unwrap(), port, state))
            .collect();
        self.engine.emit(Event::Ports {
            id: run.run,
            chunk: 0,
            results,
            closed: 0,
        });
    }

    /// The engine starts running the newest run of chunk `chunk` of scan `id` (`Progress`
    /// at queue position 0): the scan is `running` from then on.
    pub async fn progress(&self, id: &str, chunk: u32) {
        let run = self.run_of(id, chunk).await;
        self.engine.progress(&run.run, 0, 0, 1);
    }

    /// Completes the newest run of chunk `chunk` of scan `id` (engine time `ms`).
    pub async fn finish_chunk(&self, id: &str, chunk: u32, ms: u64) {
        let run = self.run_of(id, chunk).await;
        self.engine.complete(&run.run, ms);
    }

    /// Chunks of scan `id`.
    pub async fn chunks(&self, id: &str) -> u32 {
        self.wait(id, |r| r.total_chunks > 0 || !r.is_live()).await;
        let jobs = portscope_control_api::store::jobs::JobStore::new(
            self.state.managed().store().pool().clone(),
        );
        jobs.chunks(id).await.unwrap().len() as u32
    }

    /// Fails every run of scan `id` the worker sends with `reason` until the scan is
    /// failed (the chunk's last attempt fails it); returns the runs failed.
    pub async fn fail_runs(&self, id: &str, reason: &str) -> usize {
        let mut failed: Vec<String> = Vec::new();
        for _ in 0..3000 {
            for c in self.chunk_runs().into_iter().filter(|c| c.scan == id) {
                if !failed.contains(&c.run) {
                    self.engine.fail(&c.run, reason);
                    failed.push(c.run);
                }
            }
            if self.row(id).await.status == Status::Failed {
                return failed.len();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("scan {id} never failed ({} runs failed)", failed.len());
    }

    /// Runs a scan to completion with these open ports: every chunk run of it gets the
    /// ports of its hosts and port range, then completes.
    pub async fn complete_with(&self, id: &str, open: &[(&str, u16)]) {
        let n = self.chunks(id).await;
        for chunk in 0..n {
            let run = self.run_of(id, chunk).await;
            let ports = PortSet::parse(&run.ports).unwrap();
            let results = open
                .iter()
                .filter(|(h, p)| run.covers(h) && ports.index_of(*p).is_some())
                .map(|&(h, p)| port_result(h.parse().unwrap(), p, PortState::Open))
                .collect();
            self.engine.emit(Event::Ports {
                id: run.run.clone(),
                chunk: 0,
                results,
                closed: 0,
            });
            self.engine.complete(&run.run, 1234);
        }
        self.wait_status(id, Status::Complete).await;
    }
}

impl ChunkRun {
    /// Whether `host` is one of the run's targets (an address or a `first-last` range).
    pub fn covers(&self, host: &str) -> bool {
        let h: IpAddr = host.parse().unwrap();
        self.targets.iter().any(|t| {
            let (a, b) = portscope_core::targets::parse_target(t).unwrap();
            a.is_ipv4() == h.is_ipv4() && a <= h && h <= b
        })
    }
}

/// One chunk run the engine was sent.
#[derive(Debug, Clone)]
pub struct ChunkRun {
    /// The engine's scan id, `<scan>/<chunk>/<run>`.
    pub run: String,
    /// The managed scan.
    pub scan: String,
    /// The chunk.
    pub chunk: u32,
    /// Addresses.
    pub targets: Vec<String>,
    /// Port spec.
    pub ports: String,
}

/// Every delivery job of `m`'s queue as (status, attempts), oldest first.
pub async fn delivery_jobs(m: &M) -> Vec<(String, i64)> {
    use portscope_control_api::store::Db;
    let sql = |table: &str| {
        format!(
            "SELECT status, CAST(attempts AS BIGINT) FROM {table} WHERE job_type = $1 \
             ORDER BY run_at, id"
        )
    };
    let ns = portscope_control_api::delivery::NAMESPACE;
    let rows = match m.state.managed().store().pool() {
        Db::Sqlite(p) => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql("Jobs")))
                .bind(ns)
                .fetch_all(p)
                .await
        }
        Db::Postgres(p) => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql("apalis.jobs")))
                .bind(ns)
                .fetch_all(p)
                .await
        }
    };
    rows.unwrap()
}
