//! The real engine client over a Unix socket (in a temp dir) against a scripted engine
//! that speaks `portscope-proto`: frames, reconnect with backoff, protocol errors, and the
//! whole API over it (a fast scan completes; a deep scan whose engine connection drops
//! mid-scan has the chunks in flight run again on the new connection, and completes).

mod support;

use portscope_control_api::clock::ManualClock;
use portscope_control_api::engine::fake::port_result;
use portscope_control_api::engine::unix::{Backoff, UnixEngineClient};
use portscope_control_api::engine::{EngineClient, EngineError, EngineNotice};
use portscope_control_api::model::{ScanType, Status};
use portscope_control_api::start;
use portscope_core::results::{PortResult, PortState};
use portscope_proto::{decode, encode, Counts, Event, Outcome, Request, ScanKind};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::timeout;

/// One engine-side connection.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn accept(l: &UnixListener) -> Conn {
        let (stream, _) = timeout(Duration::from_secs(5), l.accept())
            .await
            .expect("client connects")
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, e: &Event) {
        self.stream.write_all(&encode(e)).await.unwrap();
    }

    async fn recv(&mut self) -> Request {
        loop {
            if let Some((r, n)) = decode::<Request>(&self.buf).unwrap() {
                self.buf.drain(..n);
                return r;
            }
            let mut chunk = [0u8; 4096];
            let n = timeout(Duration::from_secs(5), self.stream.read(&mut chunk))
                .await
                .expect("a request arrives")
                .unwrap();
            assert!(n > 0, "client closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn hello() -> Event {
    Event::Hello {
        engine: "scripted".into(),
        protocol: portscope_proto::VERSION,
    }
}

fn fast_backoff() -> Backoff {
    Backoff {
        min: Duration::from_millis(10),
        max: Duration::from_millis(50),
    }
}

async fn next(c: &UnixEngineClient) -> EngineNotice {
    timeout(Duration::from_secs(5), c.recv())
        .await
        .expect("a notice")
        .expect("client open")
}

fn listener(dir: &Path) -> (UnixListener, std::path::PathBuf) {
    let path = dir.join("engine.sock");
    (UnixListener::bind(&path).unwrap(), path)
}

#[tokio::test]
async fn unix_client_frames_requests_and_events_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let (l, path) = listener(dir.path());
    let client = UnixEngineClient::spawn(path, fast_backoff());
    let mut conn = Conn::accept(&l).await;
    assert_eq!(next(&client).await, EngineNotice::Connected);
    assert!(client.is_connected());
    conn.send(&hello()).await;
    assert_eq!(next(&client).await, EngineNotice::Event(hello()));

    let submit = Request::Submit {
        id: "s1".into(),
        targets: vec!["198.18.0.2".into()],
        ports: "22,80".into(),
        kind: ScanKind::Fast,
        priority: 5,
    };
    client.send(submit.clone()).await.unwrap();
    assert_eq!(conn.recv().await, submit);
    let accepted = Event::Accepted {
        id: "s1".into(),
        queue_position: 0,
        total_chunks: 1,
    };
    conn.send(&accepted).await;
    assert_eq!(next(&client).await, EngineNotice::Event(accepted));

    // The engine goes away: Disconnected, sends fail fast, then a reconnect.
    drop(conn);
    assert_eq!(next(&client).await, EngineNotice::Disconnected);
    assert_eq!(
        client.send(Request::Status { id: None }).await,
        Err(EngineError::NotConnected)
    );
    let mut conn = Conn::accept(&l).await;
    assert_eq!(next(&client).await, EngineNotice::Connected);
    client
        .send(Request::Status {
            id: Some("s1".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        conn.recv().await,
        Request::Status {
            id: Some("s1".into())
        }
    );

    // A frame of an unknown version is a protocol error: drop and reconnect.
    conn.stream.write_all(&[0, 0, 0, 2, 9, b'{']).await.unwrap();
    assert_eq!(next(&client).await, EngineNotice::Disconnected);
    let _conn = Conn::accept(&l).await;
    assert_eq!(next(&client).await, EngineNotice::Connected);
    client.close();
    assert_eq!(client.recv().await, None);
}

/// Answers a deep scan's chunk run `id`: port 443 of `ip` open (chunk 0 holds ports
/// 1-2048), then `Finished` after 10 ms of engine time.
async fn answer(conn: &mut Conn, id: &str, ip: &str) {
    let chunk: u32 = id.split('/').nth(1).unwrap().parse().unwrap();
    if chunk == 0 {
        conn.send(&Event::Ports {
            id: id.to_string(),
            chunk,
            results: vec![port(ip, 443, PortState::Open)],
            closed: 0,
        })
        .await;
    }
    conn.send(&Event::Finished {
        id: id.to_string(),
        outcome: Outcome::Complete,
        counts: Counts::default(),
        duration_ms: 10,
    })
    .await;
}

/// Port `p` of `ip` in `state`, with the reason the fake engine gives it.
fn port(ip: &str, p: u16, state: PortState) -> PortResult {
    port_result(ip.parse().unwrap(), p, state)
}

#[tokio::test]
async fn the_api_over_the_unix_socket_completes_and_survives_an_engine_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let (l, path) = listener(dir.path());
    let mut config = support::lab_config(dir.path());
    config.engine_socket = path.clone();
    let engine = Arc::new(UnixEngineClient::spawn(path, fast_backoff()));
    let clock = ManualClock::at(support::T0_MS);
    let banners = Arc::new(support::Banners::ssh());
    let services = support::services(
        engine.clone(),
        &clock,
        banners.clone(),
        Arc::new(support::FakePtr),
    );
    let state = start(&config, services).await.unwrap();
    // The harness's fake engine is idle: this API talks to `engine` over the socket.
    let idle = Arc::new(portscope_control_api::engine::fake::FakeEngine::new());
    let h = support::Harness {
        app: support::App::new(state, idle, clock, banners),
        config,
        dir,
    };
    let mut conn = Conn::accept(&l).await;
    conn.send(&hello()).await;
    h.wait_for("engine link", || {
        h.state.0.metrics.engine_connected.get() == 1
    })
    .await;

    // A fast scan: one chunk run, answered by the scripted engine.
    let ip = "198.18.0.50";
    h.post("/v1/fast", ip)
        .await
        .assert_status(axum::http::StatusCode::OK);
    let Request::Submit {
        id, targets, kind, ..
    } = conn.recv().await
    else {
        panic!("expected a submit");
    };
    assert_eq!(targets, vec![ip.to_string()]);
    assert_eq!(kind, ScanKind::Custom);
    conn.send(&Event::Accepted {
        id: id.clone(),
        queue_position: 0,
        total_chunks: 1,
    })
    .await;
    conn.send(&Event::Ports {
        id: id.clone(),
        chunk: 0,
        results: vec![
            port(ip, 22, PortState::Open),
            port(ip, 25, PortState::Filtered),
        ],
        closed: 30,
    })
    .await;
    // duration_ms is wall time from the claim to the commit (the engine says 5 ms).
    h.clock.advance(Duration::from_millis(777));
    conn.send(&Event::Finished {
        id: id.clone(),
        outcome: Outcome::Complete,
        counts: Counts {
            open: 1,
            closed: 30,
            filtered: 1,
            sent: 40,
        },
        duration_ms: 5,
    })
    .await;
    h.wait_status(ip, ScanType::Fast, Status::Complete).await;
    let r = h.get("/v1/fast", ip).await;
    assert_eq!(r.body["ports_open"][0]["service"], "SSH");
    assert_eq!(r.body["ports_filtered"][0]["port"], 25);
    assert_eq!(r.header("x-scan-duration-ms"), Some("777"));

    // A deep scan (32 chunk runs); the connection drops after 5 chunks. The runs in flight
    // fail and are run again on the new connection; the scan completes.
    h.post("/v1/deep", ip).await;
    let mut answered = Vec::new();
    while answered.len() < 5 {
        if let Request::Submit { id, .. } = conn.recv().await {
            answer(&mut conn, &id, ip).await;
            answered.push(id);
        }
    }
    h.wait_row(ip, ScanType::Deep, |r| r.chunks_complete == 5)
        .await;
    h.clock.advance(Duration::from_millis(2000));
    drop(conn);
    let mut conn = Conn::accept(&l).await;
    conn.send(&hello()).await;
    let mut rerun = 0;
    for _ in 0..200 {
        let row = h
            .state
            .scans()
            .latest(ip.parse().unwrap(), ScanType::Deep)
            .await;
        if row.unwrap().is_some_and(|r| r.status == Status::Complete) {
            break;
        }
        if let Ok(Request::Submit { id, .. }) =
            timeout(Duration::from_millis(100), conn.recv()).await
        {
            let chunk = id.split('/').nth(1).unwrap().to_string();
            if answered
                .iter()
                .any(|a| a.split('/').nth(1) == Some(chunk.as_str()))
            {
                panic!("chunk {chunk} ran again after its commit");
            }
            answer(&mut conn, &id, ip).await;
            rerun += 1;
        }
    }
    assert!(
        rerun >= 27,
        "the other 27 chunks ran on the new connection ({rerun})"
    );
    let r = h.get("/v1/deep", ip).await;
    assert_eq!(r.body["status"], "complete", "{}", r.text);
    assert_eq!(r.body["ports_open"][0]["port"], 443);
    assert_eq!(
        r.body["duration_ms"], 2000,
        "wall time from the first chunk claim to the last commit"
    );
    h.state.shutdown().await;
    engine.close();
}
