//! Test harness: the router in-process (`oneshot`) over a temp SQLite file, the fake
//! engine, a manual clock and fake banner / PTR sources. Nothing here touches a network
//! address other than loopback.

#![allow(dead_code)]

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use portscope_control_api::clock::{Clock, ManualClock};
use portscope_control_api::config::Config;
use portscope_control_api::engine::fake::FakeEngine;
use portscope_control_api::enrich::{BannerGrabber, PtrResolver};
use portscope_control_api::model::ScanType;
use portscope_control_api::{app, start, AppState, Services};
use serde_json::Value;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;

/// 2024-04-01T03:06:40Z.
pub const T0_MS: u64 = 1_711_940_800_000;
pub const T0: u64 = T0_MS / 1000;

/// Banners: port 22 says hello, nothing else does. Records what it was asked.
#[derive(Debug, Default)]
pub struct FakeBanners {
    pub asked: Mutex<Vec<(IpAddr, Vec<u16>)>>,
}

#[async_trait]
impl BannerGrabber for FakeBanners {
    async fn grab(&self, ip: IpAddr, ports: &[u16]) -> HashMap<u16, String> {
        self.asked.lock().unwrap().push((ip, ports.to_vec()));
        ports
            .iter()
            .filter(|&&p| p == 22)
            .map(|&p| (p, "SSH-2.0-OpenSSH_9.6".to_string()))
            .collect()
    }
}

/// PTR: one fixed name.
#[derive(Debug, Default)]
pub struct FakePtr;

#[async_trait]
impl PtrResolver for FakePtr {
    async fn ptr(&self, _ip: IpAddr) -> Option<String> {
        Some("mail.example.com".into())
    }
}

/// A lab config: the benchmarking ranges are scannable, callbacks may go to loopback,
/// background maintenance is effectively off (tests call `maintain`).
pub fn lab_config(dir: &std::path::Path) -> Config {
    Config {
        db: dir.join("portscope.db"),
        allow_target: vec![
            "198.18.0.0/15".parse().unwrap(),
            "2001:2::/48".parse().unwrap(),
        ],
        maintenance_interval_ms: 3_600_000,
        submit_wait_ms: 1000,
        webhook_backoff_ms: 50,
        webhook_timeout_ms: 2000,
        ..Config::default()
    }
}

pub struct Harness {
    pub state: AppState,
    pub router: Router,
    pub engine: Arc<FakeEngine>,
    pub clock: ManualClock,
    pub banners: Arc<FakeBanners>,
    pub config: Config,
    pub dir: Arc<tempfile::TempDir>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    /// The raw body text (field order).
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn header_u64(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("missing header {name}"))
            .parse()
            .unwrap()
    }
}

impl Harness {
    pub async fn new() -> Harness {
        Self::with(|_| {}).await
    }

    pub async fn with(tweak: impl FnOnce(&mut Config)) -> Harness {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let mut config = lab_config(dir.path());
        tweak(&mut config);
        Self::build(
            config,
            Arc::new(FakeEngine::new()),
            ManualClock::at(T0_MS),
            dir,
        )
        .await
    }

    pub async fn build(
        config: Config,
        engine: Arc<FakeEngine>,
        clock: ManualClock,
        dir: Arc<tempfile::TempDir>,
    ) -> Harness {
        let banners = Arc::new(FakeBanners::default());
        let state = start(
            &config,
            Services {
                engine: engine.clone(),
                clock: Arc::new(clock.clone()),
                banners: banners.clone(),
                ptr: Arc::new(FakePtr),
            },
        )
        .await
        .unwrap();
        Harness {
            router: app(state.clone()),
            state,
            engine,
            clock,
            banners,
            config,
            dir,
        }
    }

    /// A new app on the same database (the old one shut down first).
    pub async fn restart(self, engine: Arc<FakeEngine>) -> Harness {
        self.state.shutdown().await;
        Self::build(self.config, engine, self.clock, self.dir).await
    }

    pub fn db_path(&self) -> PathBuf {
        self.config.db.clone()
    }

    pub async fn send(&self, req: Request<Body>, from: &str) -> Reply {
        let mut req = req;
        let ip: IpAddr = from.parse().unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Reply {
            status,
            headers,
            body,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
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

    /// The id of the n-th submit the engine saw.
    pub fn submit_id(&self, n: usize) -> String {
        self.engine.submitted_ids()[n].clone()
    }

    /// Waits (without HTTP, so no rate limit is spent) until the newest scan of `ip`/`t`
    /// has `status`.
    pub async fn wait_status(&self, ip: &str, t: ScanType, status: &str) {
        let ip: IpAddr = ip.parse().unwrap();
        for _ in 0..500 {
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
        for _ in 0..500 {
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
        for _ in 0..500 {
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
