//! The control-api tests' one harness. Shared here: the start time, the lab config, fake
//! banner and PTR sources, the reply of an in-process request (`oneshot`: the router, no
//! socket). `selfscan` drives the self-scan API (`Harness`), `managed` the managed-scan API
//! (`M`, a changeable resolver, an outbox). Every test binary compiles all of it (hence
//! `allow(dead_code, unused_imports)`). Nothing here touches a network address other than loopback; scan
//! targets only ever reach the fake engine.

#![allow(dead_code, unused_imports)]

pub mod managed;
#[allow(dead_code)]
pub mod receiver;
mod selfscan;
pub mod smtp;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use portscope_control_api::clock::ManualClock;
use portscope_control_api::config::Config;
use portscope_control_api::engine::fake::FakeEngine;
use portscope_control_api::engine::EngineClient;
use portscope_control_api::enrich::{BannerGrabber, PtrResolver};
use portscope_control_api::{app, AppState, Services};
use serde_json::Value;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

pub use selfscan::Harness;

/// One round of a bounded wait: fails with `why()` once `deadline` has passed, else sleeps
/// `step`.
pub async fn wait_round(
    deadline: tokio::time::Instant,
    step: std::time::Duration,
    why: impl FnOnce() -> String,
) {
    assert!(tokio::time::Instant::now() < deadline, "{}", why());
    tokio::time::sleep(step).await;
}

/// A file `name` holding `contents`, in a fresh temporary folder that lives as long as the
/// returned `TempDir`.
pub fn temp_file(name: &str, contents: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

/// What both harnesses hold of the API under test (each derefs to it): its state (to shut
/// it down or read its metrics), the router requests go through (`oneshot`), the fake
/// engine, the clock the test moves and the banners the API is answered with.
pub struct App {
    /// The started API (shut down by `restart`).
    pub state: AppState,
    /// `app(state)`, what `oneshot` requests go through.
    pub router: Router,
    /// The fake engine the API's worker submits chunks to.
    pub engine: Arc<FakeEngine>,
    /// The API's clock; the test moves it.
    pub clock: ManualClock,
    /// The banners the API's grabber answers with.
    pub banners: Arc<Banners>,
}

impl App {
    /// The app over a started API's `state`.
    pub fn new(
        state: AppState,
        engine: Arc<FakeEngine>,
        clock: ManualClock,
        banners: Arc<Banners>,
    ) -> App {
        App {
            router: app(state.clone()),
            state,
            engine,
            clock,
            banners,
        }
    }
}

/// The services of a test API: `engine`, the test's `clock` (shared: the test moves it),
/// `banners` and `ptr`.
pub fn services(
    engine: Arc<dyn EngineClient>,
    clock: &ManualClock,
    banners: Arc<Banners>,
    ptr: Arc<dyn PtrResolver>,
) -> Services {
    Services {
        engine,
        clock: Arc::new(clock.clone()),
        banners,
        ptr,
    }
}

/// 2024-04-01T03:06:40Z.
pub const T0_MS: u64 = 1_711_940_800_000;
pub const T0: u64 = T0_MS / 1000;

/// Banners by port, changeable; records what it was asked.
#[derive(Debug, Default)]
pub struct Banners {
    pub by_port: Mutex<HashMap<u16, String>>,
    pub asked: Mutex<Vec<(IpAddr, Vec<u16>)>>,
}

impl Banners {
    /// Port 22 says hello, nothing else does (the self-scan tests' banner source).
    pub fn ssh() -> Banners {
        let b = Banners::default();
        b.set(22, "SSH-2.0-OpenSSH_9.6");
        b
    }

    pub fn set(&self, port: u16, banner: &str) {
        self.by_port.lock().unwrap().insert(port, banner.into());
    }
}

#[async_trait]
impl BannerGrabber for Banners {
    async fn grab(&self, ip: IpAddr, ports: &[u16]) -> HashMap<u16, String> {
        self.asked.lock().unwrap().push((ip, ports.to_vec()));
        let m = self.by_port.lock().unwrap();
        ports
            .iter()
            .filter_map(|p| m.get(p).map(|b| (*p, b.clone())))
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
        db: test_db(dir),
        // The default secret path derives from a SQLite file's path.
        secret_file: Some(dir.join("portscope.db.secret")),
        allow_target: vec![
            "198.18.0.0/15".parse().unwrap(),
            "2001:2::/48".parse().unwrap(),
        ],
        maintenance_interval_ms: 3_600_000,
        webhook_backoff_ms: 50,
        webhook_timeout_ms: 2000,
        // A chunk run that cannot reach the (fake) engine fails fast and is retried.
        worker_connect_ms: 200,
        ..Config::default()
    }
}

/// The database of one test: a SQLite file in `dir`, or, when `PORTSCOPE_TEST_PG` names a
/// PostgreSQL server (`cargo xtask pg -- cargo test ...`), a fresh database on it, the same
/// one for every call with this `dir` (a restarted API must find its data again).
pub fn test_db(dir: &std::path::Path) -> std::path::PathBuf {
    match std::env::var("PORTSCOPE_TEST_PG") {
        Ok(server) if !server.is_empty() => {
            let remembered = dir.join("postgres-database-url");
            if let Ok(url) = std::fs::read_to_string(&remembered) {
                return url.into();
            }
            let url = fresh_pg_database(&server);
            std::fs::write(&remembered, &url).expect("remembering the test database");
            url.into()
        }
        _ => dir.join("portscope.db"),
    }
}

/// Creates an empty database on the PostgreSQL server of `server_url`; its URL. On its
/// own thread and runtime, so a config can be built anywhere (sync code, any runtime).
pub fn fresh_pg_database(server_url: &str) -> String {
    use sqlx::{Connection, Executor};
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "t_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let server = server_url.to_string();
    let create = format!("CREATE DATABASE {name}");
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut c = sqlx::PgConnection::connect(&server).await.unwrap();
                c.execute(sqlx::AssertSqlSafe(create)).await.unwrap();
                c.close().await.unwrap();
            })
    })
    .join()
    .unwrap();
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server_url, String::new()),
    };
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{name}{query}")
}

/// Holds the database of `db` (a path or URL from [`test_db`]) so a self-scan POST blocks:
/// SQLite's write lock (`BEGIN IMMEDIATE`), or PostgreSQL's exclusive lock on `scans`. Held
/// until the returned connection is dropped.
pub async fn hold_scans_table(db: &std::path::Path) -> Box<dyn std::any::Any + Send> {
    use sqlx::{Connection, Executor};
    let url = db.to_string_lossy().into_owned();
    if url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        c.execute("BEGIN").await.unwrap();
        c.execute("LOCK TABLE scans IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        Box::new(c)
    } else {
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{url}"))
            .await
            .unwrap();
        c.execute("BEGIN IMMEDIATE").await.unwrap();
        Box::new(c)
    }
}

/// One response, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as JSON; a non-JSON body as a JSON string, an empty one as null.
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

    /// Asserts 201 Created and returns the created resource's `id`.
    pub fn created_id(&self) -> String {
        assert_eq!(self.status, StatusCode::CREATED, "{}", self.text);
        self.body["id"].as_str().unwrap().to_string()
    }

    /// Asserts this status (the body in the failure message).
    pub fn assert_status(&self, status: StatusCode) {
        assert_eq!(self.status, status, "{}", self.text);
    }

    /// Asserts this status and a JSON `message` containing `needle`.
    pub fn assert_message(&self, status: StatusCode, needle: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        let message = self.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle:?} not in {}", self.text);
    }

    /// Asserts a JSON error reply: this status and this `error` code.
    pub fn assert_error(&self, status: StatusCode, error: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.body["error"], error, "{}", self.text);
    }
}

/// `req` through the router in-process, as if from `from` (port 40000).
pub async fn oneshot(router: &Router, mut req: Request<Body>, from: &str) -> Reply {
    let ip: IpAddr = from.parse().unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::String(text.clone()))
    };
    Reply {
        status,
        headers,
        body,
        text,
    }
}

/// A loopback webhook receiver: answers 500 to the first `fail_first` requests.
pub async fn webhook_receiver(fail_first: usize) -> (String, Arc<Mutex<Vec<Value>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (g, n) = (got.clone(), hits.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (g, n) = (g.clone(), n.clone());
            async move {
                g.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                if n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail_first {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), got)
}

/// Serves `router` with the real axum server (peer addresses included) on a fresh port of
/// 127.0.0.1, for clients that need a socket (reqwest, schemathesis, Python, node,
/// Chromium); returns `http://ADDR`.
pub async fn serve_on_loopback(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });
    base
}

/// A tool of `.ci/setup`'s PyPI venv (`/opt/portscope-pytools/bin/NAME`), or the path in the
/// environment variable `env` when set; fails with what to run when it is missing.
pub fn pytool(name: &str, env: &str) -> std::path::PathBuf {
    let p = std::env::var_os(env)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new("/opt/portscope-pytools/bin").join(name));
    assert!(
        p.exists(),
        "{name} not found at {} (run .ci/setup, or set {env})",
        p.display()
    );
    p
}
