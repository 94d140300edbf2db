//! Engines as scanning nodes (`xtask::nodes`): one engine daemon in each scanner namespace of
//! a lab, each driven over its Unix socket with the real engine protocol, scanning a
//! different lab host at the same time, each result checked port by port against the truth.
//! Needs root and the workspace binaries (`cargo test --workspace` builds them).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use portscope_core::results::{PortState, Reason};
use portscope_proto::{decode, encode, Event, Outcome, Request, ScanKind};
use xtask::lab::{assert_reports_match, Expected, HostTruth, LabConfig, LabGuard};
use xtask::nodes::Engines;

/// What one engine reported for one deep scan.
struct Report {
    accepted_at: Instant,
    finished_at: Instant,
    outcome: Outcome,
    /// Open and filtered ports (the engine only counts closed ones).
    found: BTreeMap<(IpAddr, u16), (PortState, Reason)>,
    closed: u64,
    chunks: u32,
}

/// Submits a deep scan of `target` to the engine at `socket` and reads its events until it
/// finishes (at most 60 s).
fn deep_scan(socket: &Path, id: &str, target: &str) -> Report {
    let mut s = UnixStream::connect(socket).expect("connect to the engine");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let submit = Request::Submit {
        id: id.into(),
        targets: vec![target.into()],
        ports: "-".into(),
        kind: ScanKind::Deep,
        priority: 1,
    };
    s.write_all(&encode(&submit)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 65536]);
    let mut accepted_at = None;
    let (mut found, mut closed, mut chunks) = (BTreeMap::new(), 0, 0);
    loop {
        assert!(Instant::now() < deadline, "scan {id} not finished in 60 s");
        while let Some((event, used)) = decode::<Event>(&buf).expect("a valid frame") {
            buf.drain(..used);
            match event {
                Event::Accepted { queue_position, .. } => {
                    assert_eq!(queue_position, 0, "scan {id} queued");
                    accepted_at = Some(Instant::now());
                }
                Event::Rejected { message, .. } => panic!("scan {id} rejected: {message}"),
                Event::Ports {
                    results, closed: c, ..
                } => {
                    chunks += 1;
                    closed += c;
                    for r in results {
                        let dup = found.insert((r.ip, r.port), (r.state, r.reason));
                        assert!(dup.is_none(), "{}:{} reported twice", r.ip, r.port);
                    }
                }
                Event::Finished { outcome, .. } => {
                    return Report {
                        accepted_at: accepted_at.expect("accepted before finished"),
                        finished_at: Instant::now(),
                        outcome,
                        found,
                        closed,
                        chunks,
                    };
                }
                Event::Error { message } => panic!("engine error: {message}"),
                _ => {}
            }
        }
        let n = s.read(&mut chunk).expect("read from the engine");
        assert!(n > 0, "the engine closed the connection during scan {id}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The report is exactly the truth of `host` over every port.
fn assert_exact(report: &Report, host: &HostTruth) {
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(report.chunks, 32, "a deep scan is 32 chunks");
    let all: Vec<u16> = (1..=65535).collect();
    assert_reports_match(
        &[host],
        &all,
        report.found.clone(),
        |_, _, want, got| match (want, got) {
            (Expected::Open, Some(g)) => *g == (PortState::Open, Reason::SynAck),
            (Expected::FilteredSilent, Some(g)) => *g == (PortState::Filtered, Reason::NoResponse),
            (Expected::FilteredIcmp, Some(g)) => {
                *g == (PortState::Filtered, Reason::IcmpUnreachable)
            }
            (Expected::Closed, None) => true,
            _ => false,
        },
    );
    assert_eq!(report.closed, host.closed_count() as u64);
}

#[test]
fn two_engines_in_two_scanner_namespaces_scan_two_hosts_at_once_exactly() {
    let lab = LabGuard::up(&LabConfig {
        // `n`: no other test binary names its labs so.
        name: format!("n{}1", std::process::id() % 10_000),
        hosts: 3,
        scanners: 2,
        ..LabConfig::default()
    })
    .expect("lab up (needs root)");
    let bins = xtask::stack::bin_dir().unwrap();
    let engines = Engines::start(&lab, &bins, &[]).expect("engines up");
    assert_eq!(engines.nodes().len(), 2);
    let pids: Vec<u32> = engines.nodes().iter().map(|n| n.pid().unwrap()).collect();
    // Each engine runs in its own scanner namespace.
    for (node, scanner) in engines.nodes().iter().zip(lab.scanners()) {
        let ns = std::fs::read_link(format!("/proc/{}/ns/net", node.pid().unwrap())).unwrap();
        let want = std::fs::metadata(Path::new("/run/netns").join(&scanner.ns)).unwrap();
        let got = std::fs::metadata(format!("/proc/{}/ns/net", node.pid().unwrap())).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (got.dev(), got.ino()),
            (want.dev(), want.ino()),
            "{ns:?} is not {}",
            scanner.ns
        );
    }

    let (h1, h2) = ("198.19.0.1", "2001:2:0:1::2");
    let (s1, s2) = (
        engines.node(1).socket.clone(),
        engines.node(2).socket.clone(),
    );
    let t1 = std::thread::spawn(move || deep_scan(&s1, "node1", h1));
    let t2 = std::thread::spawn(move || deep_scan(&s2, "node2", h2));
    let (r1, r2) = (t1.join(), t2.join());
    let (r1, r2) = match (r1, r2) {
        (Ok(a), Ok(b)) => (a, b),
        _ => panic!("a scan failed\n{}", engines.logs()),
    };
    // At the same time: each was running before the other finished.
    assert!(r1.accepted_at < r2.finished_at && r2.accepted_at < r1.finished_at);
    assert_exact(&r1, lab.truth().host(h1.parse().unwrap()).unwrap());
    assert_exact(&r2, lab.truth().host(h2.parse().unwrap()).unwrap());

    drop(engines);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read(format!("/proc/{pid}/cmdline"))
                    .unwrap()
                    .is_empty(),
            "engine {pid} survived drop"
        );
    }
}
