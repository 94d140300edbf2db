//! What the daemon tests share: the scripted target and its truth, a daemon on a temp
//! socket (`Harness`), a protocol client over a real Unix stream (`Client`), and readers of
//! the event stream (results, progress, outcomes) checked against the truth.

use portscope_core::policy::TargetPolicy;
use portscope_core::results::{PortResult, PortState, Reason};
use portscope_core::targets::parse_net;
use portscope_daemon::{bind, Daemon, DaemonConfig, ScanSettings};
use portscope_engine::{Engine, EngineConfig};
use portscope_proto::{decode, encode, Counts, Event, Outcome, Request, ScanKind, VERSION};
use portscope_transport::memory;
use portscope_transport::scripted::{standard_answer, Answer, ScriptedTarget};
use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const HOST: &str = "198.18.0.2";

/// The scripted target's truth (`scripted::standard_answer`): 22, 80 and 1000 + last octet
/// open; 23 and 111 ICMP-filtered; 135 and 445 silent; everything else closed.
pub fn truth(dst: IpAddr, port: u16) -> PortState {
    match standard_answer(dst, port) {
        Answer::Open => PortState::Open,
        Answer::Closed => PortState::Closed,
        Answer::Prohibited | Answer::Silent => PortState::Filtered,
    }
}

pub fn icmp_port(port: u16) -> bool {
    standard_answer(HOST.parse().unwrap(), port) == Answer::Prohibited
}

/// The scripted target: answers each probe per [`truth`] and counts probes in `probes`.
pub fn target(probes: Arc<AtomicU64>) -> impl memory::Responder {
    let mut t = ScriptedTarget::standard();
    move |probe: &[u8], out: &mut dyn FnMut(Vec<u8>)| {
        probes.fetch_add(1, Relaxed);
        memory::Responder::respond(&mut t, probe, out)
    }
}

/// The lab's ranges, both families (the route table below has no IPv6, so an allowed IPv6
/// target is refused as "no route", a denied one by the policy).
pub fn lab_policy() -> TargetPolicy {
    let mut p = TargetPolicy::default_deny();
    p.allow(parse_net("198.18.0.0/15").unwrap());
    p.allow(parse_net("2001:2::/48").unwrap());
    p
}

pub fn route(dst: IpAddr) -> io::Result<IpAddr> {
    match dst {
        IpAddr::V4(_) => Ok("198.18.0.1".parse().unwrap()),
        IpAddr::V6(_) => Err(io::Error::other("no IPv6 in this lab")),
    }
}

/// Fast scans: 1M pps per chunk, short waits.
pub fn config() -> DaemonConfig {
    DaemonConfig {
        scan: ScanSettings {
            rate: 1_000_000,
            retries: 2,
            // Long enough that replies delayed by a loaded test machine still beat the retry.
            min_wait: Duration::from_millis(30),
            max_wait: Duration::from_millis(100),
        },
        ..DaemonConfig::default()
    }
}

/// Scans that take a while: `rate` pps per chunk.
pub fn slow(rate: u64) -> DaemonConfig {
    let mut c = config();
    c.scan.rate = rate;
    c
}

/// [`slow`] with one scan running at a time: the others queue.
pub fn one_at_a_time(rate: u64) -> DaemonConfig {
    DaemonConfig {
        max_running: 1,
        ..slow(rate)
    }
}

/// A daemon on a temp socket, served by a task until [`Harness::shutdown`].
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub daemon: Daemon,
    pub probes: Arc<AtomicU64>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<io::Result<()>>>,
}

impl Harness {
    pub async fn start(config: DaemonConfig) -> Harness {
        Self::start_with_mode(config, 0o660).await
    }

    pub async fn start_with_mode(config: DaemonConfig, mode: u32) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engine.sock");
        let socket = bind(&path, mode).unwrap();
        let probes = Arc::new(AtomicU64::new(0));
        let (sink, source, _inject) = memory::pair(target(Arc::clone(&probes)));
        let engine = Engine::start(
            Box::new(sink),
            Box::new(source),
            EngineConfig {
                max_rate: 4_000_000,
                policy: lab_policy(),
                ..EngineConfig::default()
            },
        );
        let daemon = Daemon::new(engine, Arc::new(route), config);
        let (stop, stopped) = oneshot::channel();
        let d = daemon.clone();
        let task = tokio::spawn(async move {
            d.serve(socket, async {
                let _ = stopped.await;
            })
            .await
        });
        Harness {
            dir,
            path,
            daemon,
            probes,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.path).await
    }

    pub async fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("serve ends after shutdown")
                .unwrap()
                .unwrap();
        }
    }
}

/// A protocol client over a real Unix stream.
pub struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path).await.expect("connect");
        let mut c = Client {
            stream,
            buf: Vec::new(),
        };
        match c.next().await {
            Event::Hello { protocol, engine } => {
                assert_eq!(protocol, VERSION);
                assert!(engine.starts_with("portscope-engine"));
            }
            other => panic!("expected Hello, got {other:?}"),
        }
        c
    }

    pub async fn send(&mut self, r: &Request) {
        self.stream.write_all(&encode(r)).await.unwrap();
    }

    pub async fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next event; `None` once the daemon closed the connection.
    pub async fn try_next(&mut self) -> Option<Event> {
        let fut = async {
            loop {
                match decode::<Event>(&self.buf).expect("the daemon sends valid frames") {
                    Some((e, n)) => {
                        self.buf.drain(..n);
                        return Some(e);
                    }
                    None => {
                        self.buf.reserve(64 * 1024);
                        match self.stream.read_buf(&mut self.buf).await {
                            Ok(0) => return None,
                            // Closing with unread input makes the kernel report a reset.
                            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                            Err(e) => panic!("read: {e}"),
                            Ok(_) => {}
                        }
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), fut)
            .await
            .expect("no event within 30 s")
    }

    pub async fn next(&mut self) -> Event {
        self.try_next().await.expect("connection closed early")
    }

    /// Reads events until one matches `pred`; that event.
    pub async fn until(&mut self, pred: impl Fn(&Event) -> bool) -> Event {
        loop {
            let e = self.next().await;
            if pred(&e) {
                return e;
            }
        }
    }

    /// Asks for the engine's status and asserts that the answer is a `Status`: the daemon
    /// still serves this connection.
    pub async fn assert_serves_status(&mut self) {
        self.send(&status(None)).await;
        let e = self.next().await;
        assert!(matches!(e, Event::Status(_)), "{e:?}");
    }

    /// Events until (and including) the `Finished` of `id`.
    pub async fn until_finished(&mut self, id: &str) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            let e = self.next().await;
            let done = matches!(&e, Event::Finished { id: i, .. } if i == id);
            out.push(e);
            if done {
                return out;
            }
        }
    }
}

pub fn submit(id: &str, ports: &str, kind: ScanKind, priority: u8) -> Request {
    Request::Submit {
        id: id.into(),
        targets: vec![HOST.into()],
        ports: ports.into(),
        kind,
        priority,
    }
}

pub fn deep(id: &str) -> Request {
    submit(id, "-", ScanKind::Deep, 0)
}

/// `Request::Status` for the engine (`None`) or one scan.
pub fn status(id: Option<&str>) -> Request {
    Request::Status {
        id: id.map(Into::into),
    }
}

pub fn cancel(id: &str) -> Request {
    Request::Cancel { id: id.into() }
}

pub fn of<'a>(events: &'a [Event], id: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
    events.iter().filter(move |e| e.scan_id() == Some(id))
}

/// Everything the `Ports` events of one scan say: results by port, closed count, and the
/// chunk index of every event.
pub struct Found {
    pub results: BTreeMap<u16, PortResult>,
    pub closed: u64,
    pub chunks: Vec<u32>,
}

pub fn ports_of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Found {
    let mut f = Found {
        results: BTreeMap::new(),
        closed: 0,
        chunks: Vec::new(),
    };
    for e in events {
        if let Event::Ports {
            chunk,
            results,
            closed,
            ..
        } = e
        {
            f.chunks.push(*chunk);
            f.closed += closed;
            for r in results {
                assert_eq!(r.ip, HOST.parse::<IpAddr>().unwrap());
                assert!(
                    f.results.insert(r.port, r.clone()).is_none(),
                    "port {} reported twice",
                    r.port
                );
            }
        }
    }
    f
}

/// Every chunk `0..total` sent exactly one `Ports` event.
pub fn assert_every_chunk(f: &Found, total: u32) {
    let mut chunks = f.chunks.clone();
    chunks.sort_unstable();
    assert_eq!(
        chunks,
        (0..total).collect::<Vec<_>>(),
        "one Ports event per chunk"
    );
}

/// The results are exactly the truth for `ports` on [`HOST`]: every open and filtered
/// port with its reason, every other port counted as closed.
pub fn assert_truth(f: &Found, ports: impl Iterator<Item = u16>) {
    let ip: IpAddr = HOST.parse().unwrap();
    let mut closed = 0;
    let mut listed = 0;
    for port in ports {
        match truth(ip, port) {
            PortState::Closed => {
                closed += 1;
                assert!(!f.results.contains_key(&port), "closed {port} listed");
            }
            state => {
                listed += 1;
                let r = f
                    .results
                    .get(&port)
                    .unwrap_or_else(|| panic!("{port} missing"));
                assert_eq!(r.state, state, "port {port}");
                let reason = match (state, icmp_port(port)) {
                    (PortState::Open, _) => Reason::SynAck,
                    (_, true) => Reason::IcmpUnreachable,
                    _ => Reason::NoResponse,
                };
                assert_eq!(r.reason, reason, "port {port}");
            }
        }
    }
    assert_eq!(f.results.len(), listed, "nothing beyond the scanned ports");
    assert_eq!(f.closed, closed);
}

pub fn finished(events: &[Event], id: &str) -> (Outcome, Counts, u64) {
    match of(events, id).last() {
        Some(Event::Finished {
            outcome,
            counts,
            duration_ms,
            ..
        }) => (outcome.clone(), *counts, *duration_ms),
        other => panic!("expected Finished last, got {other:?}"),
    }
}

pub fn failed(why: &str) -> Outcome {
    Outcome::Failed(why.into())
}

/// Progress events of `id` as (queue_position, chunks_complete, total_chunks).
pub fn progress(events: &[Event], id: &str) -> Vec<(u32, u32, u32)> {
    of(events, id)
        .filter_map(|e| match e {
            Event::Progress {
                queue_position,
                chunks_complete,
                total_chunks,
                ..
            } => Some((*queue_position, *chunks_complete, *total_chunks)),
            _ => None,
        })
        .collect()
}

/// Probes of a deep scan of [`HOST`] when every reply beats the retry: each port once, and
/// the 2 silent ports twice more.
pub const DEEP_SENT: u64 = 65_535 + 2 * 2;

/// The deep-scan counts for [`HOST`]: 3 open, 4 filtered, the rest closed. `sent` is
/// [`DEEP_SENT`] unless a reply was so late (a loaded machine) that its pair was probed
/// again; callers compare it with what the target saw.
pub fn assert_deep_counts(c: Counts) {
    assert_eq!((c.open, c.closed, c.filtered), (3, 65_535 - 7, 4), "{c:?}");
    assert!(c.sent >= DEEP_SENT, "{c:?}");
}
