//! Two real `portscope-api` processes on one PostgreSQL (a throwaway server,
//! `xtask::pg::PgGuard`): what one node writes the other answers identically, and limits and
//! quotas hold across both (exact 429 counts). Each node has its own scripted engine on a
//! Unix socket (it answers every `Submit` at once: port 22 open on each target); this test
//! is about the store, so no packet is sent anywhere. Banners and PTR are off; clients are
//! told apart by `X-Forwarded-For` from the trusted loopback proxy.

use portscope_core::results::{PortResult, PortState, Proto, Reason};
use portscope_proto::{decode, encode, Counts, Event, Outcome, Request};
use reqwest::StatusCode;
use serde_json::Value;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// A scripted engine: every submit is accepted, runs one chunk with port 22 open on each
/// target, and completes.
async fn scripted_engine(listener: UnixListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(serve_engine(stream));
    }
}

async fn serve_engine(mut s: UnixStream) {
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
                let results: Vec<PortResult> = targets
                    .iter()
                    .filter_map(|t| t.parse().ok())
                    .map(|ip| PortResult {
                        ip,
                        port: 22,
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
                            open: 1,
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

/// One API process; killed on drop.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts `portscope-api` on `db` with its own scripted engine; waits until it answers.
async fn node(dir: &Path, name: &str, db: &str) -> Node {
    let sock = dir.join(format!("{name}.sock"));
    tokio::spawn(scripted_engine(UnixListener::bind(&sock).unwrap()));
    let addr = free_addr();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "listen = [\"{addr}\"]\ndb = \"{db}\"\nengine-socket = \"{}\"\n\
             secret-file = \"{}\"\nallow-target = [\"198.18.0.0/15\"]\n\
             trusted-proxy = [\"127.0.0.1/32\"]\nbanners = false\nptr = false\n",
            sock.display(),
            dir.join("shared.secret").display()
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_portscope-api"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let n = Node {
        child,
        base: format!("http://{addr}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe = reqwest::Client::new();
    while probe
        .get(format!("{}/v1/openapi.json", n.base))
        .header("x-forwarded-for", "198.18.255.254")
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "{name} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n
}

async fn send(
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

async fn get(n: &Node, path: &str, ip: &str) -> (StatusCode, Value) {
    send(
        reqwest::Method::GET,
        format!("{}{path}", n.base),
        ip,
        None,
        None,
    )
    .await
}

async fn post(n: &Node, path: &str, ip: &str) -> (StatusCode, Value) {
    send(
        reqwest::Method::POST,
        format!("{}{path}", n.base),
        ip,
        None,
        None,
    )
    .await
}

async fn pg() -> (xtask::pg::PgGuard, String) {
    let pg = tokio::task::spawn_blocking(xtask::pg::PgGuard::start)
        .await
        .unwrap()
        .expect("PostgreSQL from /usr/lib/postgresql (.ci/setup installs it)");
    let url = pg.url();
    (pg, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_made_on_one_node_reads_the_same_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (_pg, url) = pg().await;
    let a = node(dir.path(), "a", &url).await;
    let b = node(dir.path(), "b", &url).await;
    let ip = "198.18.0.9";
    let (s, body) = post(&a, "/v1/fast", ip).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let (s, body) = get(&a, "/v1/fast", ip).await;
        assert_eq!(s, StatusCode::OK);
        if body["status"] == "complete" {
            break body;
        }
        assert!(Instant::now() < deadline, "never complete: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["ports_open"][0]["port"], 22);
    let (s, on_b) = get(&b, "/v1/fast", ip).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(on_b, done, "node B answers node A's scan identically");
    // Node B has no scan of another client, and neither has A.
    assert_eq!(get(&b, "/v1/fast", "198.18.0.10").await.1["status"], "none");
    // A deep scan started on B is visible (and coalesced) on A: one scan, not two.
    let (s, deep_b) = post(&b, "/v1/deep", ip).await;
    assert_eq!(s, StatusCode::OK, "{deep_b}");
    let (s, deep_a) = get(&a, "/v1/deep", ip).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(deep_a["status"], "none", "{deep_a}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_quotas_hold_across_two_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let (_pg, url) = pg().await;
    let a = node(dir.path(), "a", &url).await;
    let b = node(dir.path(), "b", &url).await;

    // Edge limit, 30 requests per IP per minute, every endpoint: 40 GETs alternating
    // between the nodes from one client give exactly 30 answers and 10 refusals.
    let (mut ok, mut limited) = (0, 0);
    for i in 0..40 {
        let n = if i % 2 == 0 { &a } else { &b };
        match get(n, "/v1/fast", "198.18.1.1").await.0 {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!((ok, limited), (30, 10));

    // A token with 3 scans a month: 5 new managed scans alternating between the nodes
    // give 3 created and 2 refused.
    let out = Command::new(env!("CARGO_BIN_EXE_portscope-api"))
        .args([
            "token",
            "create",
            "--name",
            "ci",
            "--scope",
            "198.18.0.0/16",
        ])
        .args(["--monthly-scans", "3", "--db", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .unwrap()
        .trim()
        .to_string();
    let mut statuses = Vec::new();
    for i in 0..5u8 {
        let n = if i % 2 == 0 { &a } else { &b };
        let (s, body) = send(
            reqwest::Method::POST,
            format!("{}/api/v1/scan", n.base),
            "198.18.2.1",
            Some(&token),
            Some(serde_json::json!({ "target": format!("198.18.0.{}", 20 + i) })),
        )
        .await;
        statuses.push((s, body["error"].clone()));
    }
    let created = statuses.iter().filter(|(s, _)| s.is_success()).count();
    let refused = statuses
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((created, refused), (3, 2), "{statuses:?}");
}

/// Fast self-scan POST-to-complete (through HTTP, scripted engine, banners and PTR off) on
/// a SQLite node and a PostgreSQL node in the same run: medians of 25 and their ratio.
/// A figure, not a check: `cargo test -p portscope-control-api --test cluster_pg -- --ignored
/// --nocapture post_to_complete`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn post_to_complete_sqlite_vs_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let (_pg, url) = pg().await;
    let lite_db = dir.path().join("lite.db").display().to_string();
    let lite = node(dir.path(), "lite", &lite_db).await;
    let pgn = node(dir.path(), "pg", &url).await;
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for i in 0..50u32 {
        let (n, slot) = if i % 2 == 0 { (&lite, 0) } else { (&pgn, 1) };
        let ip = format!("198.18.{}.{}", 10 + i / 200, 1 + i % 200);
        let t = Instant::now();
        assert_eq!(post(n, "/v1/fast", &ip).await.0, StatusCode::OK);
        loop {
            let (s, body) = get(n, "/v1/fast", &ip).await;
            assert_eq!(s, StatusCode::OK, "{body}");
            if body["status"] == "complete" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times[slot].push(t.elapsed());
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (l, p) = (median(&mut times[0]), median(&mut times[1]));
    println!(
        "fast POST-to-complete, median of 25: SQLite {l:?}, PostgreSQL {p:?}, ratio {:.2}",
        p.as_secs_f64() / l.as_secs_f64()
    );
}
