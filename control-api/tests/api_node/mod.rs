//! Real `portscope-api` processes for the cluster tests: each with its own scripted engine on
//! a Unix socket (every `Submit` but one of [`REFUSED`] is accepted and completes at once
//! with port 22 open on each target; no packet is sent anywhere), a config file, and a throwaway PostgreSQL
//! (`xtask::pg::PgGuard`). Clients are told apart by `X-Forwarded-For` from the trusted
//! loopback proxy. Used by `cluster_pg.rs`, `durable_pg.rs` and `durable_webhooks.rs`.

#![allow(dead_code)]

use portscope_core::results::{PortResult, PortState, Proto, Reason};
use portscope_proto::{decode, encode, Counts, Event, Outcome, Request};
use reqwest::StatusCode;
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// The one target the scripted engine refuses by policy (its scan fails at once).
pub const REFUSED: &str = "198.18.6.66";

/// A scripted engine: every submit is accepted (but one of [`REFUSED`], rejected `policy`),
/// runs one chunk with port 22 open on each target (and from its second submit on,
/// Telnet's 23 too: a new CRITICAL finding for monitors), and completes.
pub async fn scripted_engine(listener: UnixListener) {
    let submits = Arc::new(AtomicU32::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(serve_engine(stream, submits.clone()));
    }
}

async fn serve_engine(mut s: UnixStream, submits: Arc<AtomicU32>) {
    let hello = Event::Hello {
        engine: "scripted".into(),
        protocol: portscope_proto::VERSION,
    };
    if s.write_all(&encode(&hello)).await.is_err() {
        return;
    }
    let mut buf = Vec::new();
    loop {
        while let Some((req, n)) = decode::<Request>(&buf).unwrap() {
            buf.drain(..n);
            if let Request::Submit { id, targets, .. } = req {
                if targets.iter().any(|t| t == REFUSED) {
                    let refusal = Event::Rejected {
                        id,
                        code: "policy".into(),
                        message: format!("{REFUSED} is refused by this engine's policy"),
                    };
                    if s.write_all(&encode(&refusal)).await.is_err() {
                        return;
                    }
                    continue;
                }
                let ports: &[u16] = if submits.fetch_add(1, Ordering::SeqCst) == 0 {
                    &[22]
                } else {
                    &[22, 23]
                };
                let results: Vec<PortResult> = targets
                    .iter()
                    .filter_map(|t| t.parse().ok())
                    .flat_map(|ip| ports.iter().map(move |&port| (ip, port)))
                    .map(|(ip, port)| PortResult {
                        ip,
                        port,
                        proto: Proto::Tcp,
                        state: PortState::Open,
                        reason: Reason::SynAck,
                        ttl: Some(64),
                        icmp_type: None,
                        icmp_code: None,
                    })
                    .collect();
                let events = [
                    Event::Accepted {
                        id: id.clone(),
                        queue_position: 0,
                        total_chunks: 1,
                    },
                    Event::Progress {
                        id: id.clone(),
                        queue_position: 0,
                        chunks_complete: 0,
                        total_chunks: 1,
                    },
                    Event::Ports {
                        id: id.clone(),
                        chunk: 0,
                        results,
                        closed: 31,
                    },
                    Event::Finished {
                        id,
                        outcome: Outcome::Complete,
                        counts: Counts {
                            open: ports.len() as u64,
                            closed: 31,
                            filtered: 0,
                            sent: 32,
                        },
                        duration_ms: 5,
                    },
                ];
                for e in &events {
                    if s.write_all(&encode(e)).await.is_err() {
                        return;
                    }
                }
            }
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One API process; SIGKILLed on drop.
pub struct Node {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its config file (a restart reuses it).
    pub config: PathBuf,
    /// Its stderr log.
    pub log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// SIGKILLs the process (no shutdown path runs) and waits for it.
    pub fn kill(mut self) -> PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.config.clone()
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A GET of `path` from `client_ip`, without a token.
    pub async fn get(&self, path: &str, client_ip: &str) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        send(reqwest::Method::GET, url, client_ip, None, None).await
    }

    /// A POST of `path` from `client_ip`, without a token or body.
    pub async fn post(&self, path: &str, client_ip: &str) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        send(reqwest::Method::POST, url, client_ip, None, None).await
    }
}

/// Two nodes, `a` and `b`, on one throwaway PostgreSQL (stopped after them on drop).
pub struct Pair {
    pub a: Node,
    pub b: Node,
    /// The database URL.
    pub url: String,
    _pg: xtask::pg::PgGuard,
    _dir: tempfile::TempDir,
}

impl Pair {
    /// Node `a` for even `i`, `b` for odd: requests alternating between the nodes.
    pub fn alternate(&self, i: u8) -> &Node {
        if i.is_multiple_of(2) {
            &self.a
        } else {
            &self.b
        }
    }
}

/// Starts [`Pair`]: PostgreSQL, then two nodes with no extra config.
pub async fn two_nodes() -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let (pg, url) = pg().await;
    Pair {
        a: node(dir.path(), "a", &url, "").await,
        b: node(dir.path(), "b", &url, "").await,
        url,
        _pg: pg,
        _dir: dir,
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts `portscope-api` named `name` on `db` with its own scripted engine and `extra`
/// config lines; waits until it answers.
pub async fn node(dir: &Path, name: &str, db: &str, extra: &str) -> Node {
    let sock = dir.join(format!("{name}.sock"));
    tokio::spawn(scripted_engine(UnixListener::bind(&sock).unwrap()));
    let addr = free_addr();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = [\"{addr}\"]\ndb = \"{db}\"\nengine-socket = \"{}\"\n\
             secret-file = \"{}\"\nallow-target = [\"198.18.0.0/15\"]\n\
             trusted-proxy = [\"127.0.0.1/32\"]\nbanners = false\nptr = false\n{extra}\n",
            sock.display(),
            dir.join("shared.secret").display()
        ),
    )
    .unwrap();
    start(&config, &dir.join(format!("{name}.log")), addr).await
}

/// (Re)starts the API process of `config` (listening on `addr`), logging to `log`.
pub async fn start(config: &Path, log: &Path, addr: SocketAddr) -> Node {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(api_bin())
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    let n = Node {
        child,
        base: format!("http://{addr}"),
        config: config.to_path_buf(),
        log: log.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe = reqwest::Client::new();
    while probe
        .get(format!("{}/v1/openapi.json", n.base))
        .header("x-forwarded-for", "198.19.255.254")
        .send()
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "{} did not start:\n{}",
            config.display(),
            n.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n
}

/// The `portscope-api` binary: this build's, or `PORTSCOPE_API_BIN` (figures of a release
/// build: `PORTSCOPE_API_BIN=target/release/portscope-api`).
pub fn api_bin() -> PathBuf {
    std::env::var_os("PORTSCOPE_API_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_portscope-api")))
}

/// A `portscope-api worker` process named `name` on `db` with its own scripted engine
/// (no finisher: another node's finisher completes what it commits); SIGKILLed on drop.
pub struct WorkerNode(Child);

impl Drop for WorkerNode {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts [`WorkerNode`] `name` on `db`, logging to `dir/NAME.log`.
pub fn worker_node(dir: &Path, name: &str, db: &str) -> WorkerNode {
    let sock = dir.join(format!("{name}.sock"));
    tokio::spawn(scripted_engine(UnixListener::bind(&sock).unwrap()));
    worker_on(dir, name, db, &sock)
}

/// Starts [`WorkerNode`] `name` on `db` with the engine of socket `sock`, logging to
/// `dir/NAME.log`.
pub fn worker_on(dir: &Path, name: &str, db: &str, sock: &Path) -> WorkerNode {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(api_bin())
        .args(["worker", "--db", db, "--node", name, "--engine-socket"])
        .arg(sock)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    WorkerNode(child)
}

/// Restarts a killed node on the same config (and so the same address).
pub async fn restart(config: &Path, log: &Path) -> Node {
    let text = std::fs::read_to_string(config).unwrap();
    let addr: SocketAddr = text
        .lines()
        .find_map(|l| l.strip_prefix("listen = [\""))
        .and_then(|l| l.strip_suffix("\"]"))
        .unwrap()
        .parse()
        .unwrap();
    start(config, log, addr).await
}

/// One request; the status and the body (JSON, or else a JSON string).
pub async fn send(
    method: reqwest::Method,
    url: String,
    client_ip: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .header("x-forwarded-for", client_ip);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A throwaway PostgreSQL server and its URL.
pub async fn pg() -> (xtask::pg::PgGuard, String) {
    let pg = tokio::task::spawn_blocking(xtask::pg::PgGuard::start)
        .await
        .unwrap()
        .expect("PostgreSQL from /usr/lib/postgresql (.ci/setup installs it)");
    let url = pg.url();
    (pg, url)
}

/// Creates a token with `portscope-api token create`; its secret.
pub fn token(db: &str, name: &str, monthly: i64, concurrent: i64) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portscope-api"))
        .args([
            "token",
            "create",
            "--name",
            name,
            "--scope",
            "198.18.0.0/15",
        ])
        .args(["--monthly-scans", &monthly.to_string()])
        .args(["--concurrent", &concurrent.to_string()])
        .args(["--db", db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .unwrap()
        .trim()
        .to_string()
}
