//! The self-scan API's harness: the router over a temp SQLite file, the fake engine, a
//! manual clock, port 22's banner and a fixed PTR. Self-scans are job scans: the API's
//! in-process worker submits each chunk to the fake engine as scan `<scan id>/<chunk>/<run>`
//! (a run of a chunk that failed and was retried gets a new `<run>`), and a test answers
//! those chunk runs (`chunk_runs`, `finish_chunks`, `finish_runs_from`, `fail_runs`).

use super::{lab_config, oneshot, services, App, Banners, FakePtr, Reply, T0_MS};
use axum::body::Body;
use axum::http::{Method, Request};
use axum::Router;
use portscope_control_api::clock::{Clock, ManualClock};
use portscope_control_api::config::Config;
use portscope_control_api::engine::fake::{FakeEngine, OnSubmit};
use portscope_control_api::model::{ScanType, Status};
use portscope_control_api::start;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub struct Harness {
    pub app: App,
    pub config: Config,
    pub dir: Arc<tempfile::TempDir>,
}

impl std::ops::Deref for Harness {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with(|_| {}).await
    }

    pub async fn with(tweak: impl FnOnce(&mut Config)) -> Harness {
        Self::with_engine(Arc::new(FakeEngine::new()), tweak).await
    }

    /// The lab config changed by `tweak`, on `engine` (which a test may keep, to hand it
    /// to [`Harness::restart`] or to start it disconnected).
    pub async fn with_engine(engine: Arc<FakeEngine>, tweak: impl FnOnce(&mut Config)) -> Harness {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = lab_config(dir.path());
        tweak(&mut config);
        Self::build(config, engine, ManualClock::at(T0_MS), dir).await
    }

    pub async fn build(
        config: Config,
        engine: Arc<FakeEngine>,
        clock: ManualClock,
        dir: Arc<tempfile::TempDir>,
    ) -> Harness {
        let banners = Arc::new(Banners::ssh());
        let services = services(engine.clone(), &clock, banners.clone(), Arc::new(FakePtr));
        let state = start(&config, services).await.unwrap();
        Harness {
            app: App::new(state, engine, clock, banners),
            config,
            dir,
        }
    }

    /// A new app on the same database (the old one shut down first).
    pub async fn restart(self, engine: Arc<FakeEngine>) -> Harness {
        self.state.shutdown().await;
        Self::build(self.config, engine, self.app.clock, self.dir).await
    }

    pub fn db_path(&self) -> PathBuf {
        self.config.db.clone()
    }

    pub async fn send(&self, req: Request<Body>, from: &str) -> Reply {
        oneshot(&self.router, req, from).await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        from: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::empty()).unwrap(), from).await
    }

    pub async fn get(&self, path: &str, from: &str) -> Reply {
        self.call(Method::GET, path, from, &[]).await
    }

    pub async fn post(&self, path: &str, from: &str) -> Reply {
        self.call(Method::POST, path, from, &[]).await
    }

    /// The fake engine rejects the next submits with `code` and `message`.
    pub fn engine_rejects(&self, code: &str, message: &str) {
        self.engine.on_submit(OnSubmit::Reject {
            code: code.into(),
            message: message.into(),
        });
    }

    /// The engine scan id of the n-th chunk run the engine was sent (waits for it).
    pub async fn submit_id(&self, n: usize) -> String {
        let engine = self.engine.clone();
        self.wait_for(&format!("chunk run {n}"), || {
            engine.submitted_ids().len() > n
        })
        .await;
        self.engine.submitted_ids()[n].clone()
    }

    /// Completes the fast scan of `ip` through its chunk run `run` (open and filtered
    /// `ports`, `closed` closed ones, engine time `ms`); returns its GET once complete.
    pub async fn complete_fast(
        &self,
        run: &str,
        ip: &str,
        ports: &[(u16, portscope_core::results::PortState)],
        closed: u64,
        ms: u64,
    ) -> Reply {
        self.engine.ports(run, 0, ports, closed);
        self.engine.complete(run, ms);
        self.wait_status(ip, ScanType::Fast, Status::Complete).await;
        self.get("/v1/fast", ip).await
    }

    /// POSTs a fast scan of `ip` and returns its chunk run's engine id (the harness's
    /// first run: call it before any other scan).
    pub async fn fast_run(&self, ip: &str) -> String {
        self.post("/v1/fast", ip).await;
        self.submit_id(0).await
    }

    /// POSTs a scan (`path`) of `ip` with `X-Callback-Url: url`.
    pub async fn post_with_callback(&self, path: &str, ip: &str, url: &str) -> Reply {
        self.call(Method::POST, path, ip, &[("x-callback-url", url)])
            .await
    }

    /// The engine (refusing since [`Harness::engine_rejects`]) accepts again: completes the
    /// runs sent from now on as [`Harness::finish_runs_from`] does, until the newest `t`
    /// scan of `ip` has `chunks` chunks committed.
    pub async fn accept_and_finish(&self, ip: &str, t: ScanType, chunks: i64, ms: u64) {
        let from = self.engine.submitted_ids().len();
        self.engine.on_submit(OnSubmit::Accept {
            queue_position: 0,
            total_chunks: 1,
        });
        self.finish_runs_from(from, ip, t, chunks, ms).await;
    }

    /// The engine ids of the chunk runs sent so far, with their chunk numbers.
    pub fn chunk_runs(&self) -> Vec<(String, u32)> {
        self.engine
            .submitted_ids()
            .into_iter()
            .map(|id| {
                let chunk = id.split('/').nth(1).and_then(|c| c.parse().ok());
                (id, chunk.expect("a chunk run's id is <scan>/<chunk>/<run>"))
            })
            .collect()
    }

    /// Completes chunk runs as the worker sends them (each with `ports(chunk)` and an
    /// engine time of `ms`), until `n` chunks are complete; returns the runs completed.
    pub async fn finish_chunks(
        &self,
        n: usize,
        ports: impl Fn(u32) -> Vec<(u16, portscope_core::results::PortState)>,
        ms: u64,
    ) -> Vec<String> {
        let mut done: Vec<String> = Vec::new();
        for _ in 0..2000 {
            for (id, chunk) in self.chunk_runs() {
                if done.len() < n && !done.contains(&id) {
                    self.engine.ports(&id, chunk, &ports(chunk), 1);
                    self.engine.complete(&id, ms);
                    done.push(id);
                }
            }
            if done.len() >= n {
                return done;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("only {} of {n} chunk runs came", done.len());
    }

    /// Completes (no ports, 10 ms each) `n` chunk runs of the deep scan of `ip` as the
    /// worker sends them, and waits until its row counts them.
    pub async fn finish_deep_chunks(&self, ip: &str, n: i64) {
        self.finish_chunks(n as usize, |_| Vec::new(), 10).await;
        self.wait_row(ip, ScanType::Deep, |r| r.chunks_complete == n)
            .await;
    }

    /// Scan rows in the store.
    pub async fn scans(&self) -> i64 {
        self.state.scans().store().count().await.unwrap()
    }

    /// Completes (no ports, engine time `ms`) every chunk run from the `from`-th on as the
    /// worker sends them, until the newest scan of `ip`/`t` has `chunks` chunks committed
    /// (a completion of a run the engine had refused is ignored by the worker).
    pub async fn finish_runs_from(&self, from: usize, ip: &str, t: ScanType, chunks: i64, ms: u64) {
        let addr: IpAddr = ip.parse().unwrap();
        let mut done: Vec<String> = Vec::new();
        for _ in 0..3000 {
            for (id, chunk) in self.chunk_runs().into_iter().skip(from) {
                if !done.contains(&id) {
                    self.engine.ports(&id, chunk, &[], 1);
                    self.engine.complete(&id, ms);
                    done.push(id);
                }
            }
            let row = self.state.scans().latest(addr, t).await.unwrap();
            if row.is_some_and(|r| r.chunks_complete >= chunks) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the scan of {ip} never reached {chunks} chunks");
    }

    /// Fails every chunk run the worker sends (and any sent before) with `reason`, until
    /// the newest scan of `ip`/`t` is failed: the first chunk whose attempts are used up
    /// fails it. Returns the runs failed. Runs completed before are not affected (their
    /// scans have ended in the worker).
    pub async fn fail_runs(&self, ip: &str, t: ScanType, reason: &str) -> usize {
        let addr: IpAddr = ip.parse().unwrap();
        let mut failed: Vec<String> = Vec::new();
        for _ in 0..3000 {
            for (id, _) in self.chunk_runs() {
                if !failed.contains(&id) {
                    self.engine.fail(&id, reason);
                    failed.push(id);
                }
            }
            let row = self.state.scans().latest(addr, t).await.unwrap();
            if row.is_some_and(|r| r.status == Status::Failed) {
                return failed.len();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the scan of {ip} never failed ({} runs failed)",
            failed.len()
        );
    }

    /// Waits (without HTTP, so no rate limit is spent) until the newest scan of `ip`/`t`
    /// has `status`.
    pub async fn wait_status(&self, ip: &str, t: ScanType, status: Status) {
        let ip: IpAddr = ip.parse().unwrap();
        for _ in 0..2000 {
            if let Some(row) = self.state.scans().latest(ip, t).await.unwrap() {
                if row.status == status {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let row = self.state.scans().latest(ip, t).await.unwrap();
        panic!("scan of {ip} never reached {status}: {row:?}");
    }

    /// Waits until the newest scan row of `ip`/`t` satisfies `f`.
    pub async fn wait_row(
        &self,
        ip: &str,
        t: ScanType,
        f: impl Fn(&portscope_control_api::store::ScanRow) -> bool,
    ) {
        let ip: IpAddr = ip.parse().unwrap();
        for _ in 0..2000 {
            if let Some(row) = self.state.scans().latest(ip, t).await.unwrap() {
                if f(&row) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let row = self.state.scans().latest(ip, t).await.unwrap();
        panic!("scan of {ip} never reached the expected state: {row:?}");
    }

    /// Waits until `f` holds.
    pub async fn wait_for(&self, what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    pub fn now(&self) -> u64 {
        self.clock.now_secs()
    }
}
