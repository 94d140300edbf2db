//! The daemon end to end over the in-memory transport with a scripted target: a real Unix
//! socket in a temp directory, a real `tokio::net::UnixStream` client speaking the protocol.
//! No privileges needed (the peer-credential test runs a child as another uid only when it
//! can); no packet ever leaves the process.

mod support;

use portscope_daemon::{bind, BindError, DaemonConfig, PeerPolicy};
use portscope_proto::{encode, Counts, Event, Outcome, Request, ScanKind, VERSION};
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_scan_streams_32_chunks_that_are_exactly_the_truth() {
    let h = Harness::start(config()).await;
    let mut c = h.client().await;
    c.send(&deep("d1")).await;
    let ev = c.until_finished("d1").await;
    assert!(matches!(
        &ev[0],
        Event::Accepted { id, queue_position: 0, total_chunks: 32 } if id == "d1"
    ));
    let found = ports_of(&ev);
    let mut chunks = found.chunks.clone();
    chunks.sort_unstable();
    assert_eq!(
        chunks,
        (0..32).collect::<Vec<_>>(),
        "one Ports event per chunk"
    );
    assert_truth(&found, 1..=65_535);
    let p = progress(&ev, "d1");
    assert_eq!(p.first(), Some(&(0, 0, 32)), "started");
    let done: Vec<u32> = p[1..].iter().map(|x| x.1).collect();
    assert_eq!(
        done,
        (1..=32).collect::<Vec<_>>(),
        "one Progress per chunk, up to 32/32"
    );
    // Every chunk's Ports comes before the Progress that counts it.
    let mut seen_ports = 0;
    for e in &ev {
        match e {
            Event::Ports { .. } => seen_ports += 1,
            Event::Progress {
                chunks_complete, ..
            } => assert!(*chunks_complete <= seen_ports),
            _ => {}
        }
    }
    let (outcome, counts, _) = finished(&ev, "d1");
    assert_eq!(outcome, Outcome::Complete);
    assert_deep_counts(counts);
    assert_eq!(h.probes.load(Relaxed), counts.sent, "probes at the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_scan_is_one_chunk() {
    let h = Harness::start(config()).await;
    let mut c = h.client().await;
    c.send(&submit("f1", "22,80,443,23", ScanKind::Fast, 5))
        .await;
    let ev = c.until_finished("f1").await;
    assert!(matches!(
        &ev[0],
        Event::Accepted {
            queue_position: 0,
            total_chunks: 1,
            ..
        }
    ));
    let found = ports_of(&ev);
    assert_eq!(found.chunks, vec![0]);
    assert_truth(&found, [22, 23, 80, 443].into_iter());
    assert_eq!(progress(&ev, "f1"), vec![(0, 0, 1), (0, 1, 1)]);
    let (outcome, counts, _) = finished(&ev, "f1");
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(
        counts,
        Counts {
            open: 2,
            closed: 1,
            filtered: 1,
            sent: 4
        }
    );
    // A long custom list is chunked like a deep scan.
    c.send(&submit("c1", "1-3000", ScanKind::Custom, 0)).await;
    let ev = c.until_finished("c1").await;
    assert!(matches!(
        &ev[0],
        Event::Accepted {
            total_chunks: 32,
            ..
        }
    ));
    assert_truth(&ports_of(&ev), 1..=3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_positions_follow_priority_then_arrival() {
    let h = Harness::start(one_at_a_time(50_000)).await;
    let mut c = h.client().await;
    c.send(&deep("a")).await;
    c.send(&submit("b", "22,80", ScanKind::Fast, 0)).await;
    c.send(&submit("c", "22,80", ScanKind::Fast, 0)).await;
    c.send(&submit("d", "22,80", ScanKind::Fast, 5)).await;
    let mut ev = c.until_finished("a").await;
    let accepted: Vec<(String, u32)> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Accepted {
                id, queue_position, ..
            } => Some((id.clone(), *queue_position)),
            _ => None,
        })
        .collect();
    let want = [("a", 0), ("b", 1), ("c", 2), ("d", 1)];
    assert_eq!(
        accepted,
        want.map(|(i, p)| (i.to_string(), p)).to_vec(),
        "d (priority 5) goes ahead of b and c"
    );
    for id in ["d", "b", "c"] {
        ev.extend(c.until_finished(id).await);
    }
    // d runs right after a, then b, then c; each queued scan hears its moves.
    let order: Vec<&str> = ev
        .iter()
        .filter_map(|e| match e {
            Event::Finished { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["a", "d", "b", "c"]);
    assert_eq!(progress(&ev, "d"), vec![(0, 0, 1), (0, 1, 1)]);
    assert_eq!(
        progress(&ev, "b"),
        vec![(2, 0, 1), (1, 0, 1), (0, 0, 1), (0, 1, 1)]
    );
    assert_eq!(
        progress(&ev, "c"),
        vec![(3, 0, 1), (2, 0, 1), (1, 0, 1), (0, 0, 1), (0, 1, 1)]
    );
    for id in ["a", "b", "c", "d"] {
        assert_eq!(finished(&ev, id).0, Outcome::Complete, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_and_queued_scans() {
    let h = Harness::start(one_at_a_time(5_000)).await;
    let mut c = h.client().await;
    c.send(&deep("run")).await;
    c.send(&deep("wait")).await;
    // Cancel the queued one first: it never starts.
    c.send(&Request::Cancel { id: "wait".into() }).await;
    let ev = c.until_finished("wait").await;
    assert_eq!(progress(&ev, "wait"), Vec::<(u32, u32, u32)>::new());
    assert!(of(&ev, "wait").all(|e| !matches!(e, Event::Ports { .. })));
    assert_eq!(
        finished(&ev, "wait"),
        (failed("cancelled"), Counts::default(), 0)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send(&Request::Cancel { id: "run".into() }).await;
    let t0 = std::time::Instant::now();
    let ev = c.until_finished("run").await;
    assert!(t0.elapsed() < Duration::from_secs(3), "cancel is prompt");
    let (outcome, counts, _) = finished(&ev, "run");
    assert_eq!(outcome, failed("cancelled"));
    assert!(
        counts.sent > 0 && counts.sent < 65_535,
        "stopped early: {counts:?}"
    );
    // Cancelling again replays the outcome.
    c.send(&Request::Cancel { id: "run".into() }).await;
    assert!(matches!(
        c.next().await,
        Event::Finished { id, outcome: Outcome::Failed(r), .. } if id == "run" && r == "cancelled"
    ));
    assert_eq!(h.daemon.status().running, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_past_its_timeout_fails_with_timeout() {
    let h = Harness::start(DaemonConfig {
        scan_timeout: Duration::from_millis(300),
        ..slow(5_000)
    })
    .await;
    let mut c = h.client().await;
    c.send(&deep("t1")).await;
    let ev = c.until_finished("t1").await;
    let (outcome, counts, ms) = finished(&ev, "t1");
    assert_eq!(outcome, failed("timeout"));
    assert!((300..3000).contains(&ms), "took {ms} ms");
    assert!(counts.sent > 0);
}

/// Timeouts too large to add to a clock (`--scan-timeout 1000000y`) mean no deadline; they
/// must not panic the scan task or the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_timeouts_mean_no_deadline() {
    let h = Harness::start(DaemonConfig {
        scan_timeout: Duration::MAX,
        frame_timeout: Duration::MAX,
        ..config()
    })
    .await;
    let mut c = h.client().await;
    let frame = encode(&submit("u1", "22,80", ScanKind::Fast, 0));
    let (head, tail) = frame.split_at(7);
    c.raw(head).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.raw(tail).await;
    let ev = c.until_finished("u1").await;
    assert_eq!(finished(&ev, "u1").0, Outcome::Complete);
    assert_truth(&ports_of(&ev), [22, 80].into_iter());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_ids_are_rejected_while_known() {
    let h = Harness::start(config()).await;
    let mut c = h.client().await;
    c.send(&submit("s1", "22", ScanKind::Fast, 0)).await;
    c.send(&submit("s1", "80", ScanKind::Fast, 0)).await;
    let ev = c.until_finished("s1").await;
    let rejected: Vec<&Event> = ev
        .iter()
        .filter(|e| matches!(e, Event::Rejected { .. }))
        .collect();
    assert!(matches!(
        rejected[..],
        [Event::Rejected { id, code, .. }] if id == "s1" && code == "duplicate"
    ));
    // Still known after it finished (kept for replay).
    c.send(&submit("s1", "80", ScanKind::Fast, 0)).await;
    assert!(matches!(c.next().await, Event::Rejected { code, .. } if code == "duplicate"));
}

/// A refused submit: what is sent, the code expected back, and words its message must
/// contain (a policy refusal names the range and the `--allow` that opens it).
struct Refused<'a> {
    id: &'a str,
    targets: &'a [&'a str],
    ports: &'a str,
    kind: ScanKind,
    priority: u8,
    code: &'a str,
    says: &'a str,
}

const fn policy<'a>(id: &'a str, targets: &'a [&'a str]) -> Refused<'a> {
    Refused {
        id,
        targets,
        ports: "80",
        kind: ScanKind::Fast,
        priority: 0,
        code: "policy",
        says: "refusing to scan",
    }
}

const fn invalid<'a>(id: &'a str, targets: &'a [&'a str], ports: &'a str) -> Refused<'a> {
    Refused {
        id,
        targets,
        ports,
        kind: ScanKind::Custom,
        priority: 0,
        code: "invalid",
        says: "",
    }
}

/// 2^128 + 1 addresses: refused by the size check (the count saturates, it never wraps to a
/// small number), before the policy and the route lookup get to see it.
const fn too_large<'a>(id: &'a str, targets: &'a [&'a str]) -> Refused<'a> {
    Refused {
        says: "scan too large",
        ..invalid(id, targets, "80")
    }
}

/// Every refusal is answered to the asker with its code, and not one probe is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_get_their_code_and_send_nothing() {
    let h = Harness::start(config()).await;
    let mut c = h.client().await;
    let bomb = vec!["1-65535"; 100].join(",");
    let long_id = "x".repeat(129);
    let cases = [
        policy("p0", &["10.0.0.1"]),
        policy("p1", &["127.0.0.1"]),
        policy("p2", &["192.168.1.0/24"]),
        policy("p3", &["198.18.0.2", "10.1.2.3"]),
        // No route to IPv6 in this lab: the policy must answer before the route lookup.
        policy("p4", &["fd00::1"]),
        policy("p5", &["198.18.0.2", "fe80::1"]),
        invalid("i0", &[HOST], "0"),
        invalid("i1", &[HOST], "70000"),
        invalid("i2", &[HOST], "abc"),
        invalid("i3", &[HOST], ""),
        invalid("i4", &[HOST], "90-10"),
        invalid("i5", &["not-an-ip"], "80"),
        invalid("i6", &[], "80"),
        Refused {
            priority: 10,
            ..invalid("i7", &[HOST], "80")
        },
        invalid("", &[HOST], "80"),
        invalid(&long_id, &[HOST], "80"),
        // 131,072 addresses x 65,535 ports: far above 2^24 pairs.
        invalid("i8", &["198.18.0.0/15"], "-"),
        invalid("i9", &[HOST], &bomb),
        invalid("i10", &["2001:2::1"], "80"), // no route in this lab
        too_large("big0", &[HOST, "::/0"]),
        too_large("big1", &["::/0"]),
        too_large("big2", &["0.0.0.0/0", "::/0"]),
        too_large("big3", &["::/1", "8000::/1", HOST]),
    ];
    for r in &cases {
        let req = Request::Submit {
            id: r.id.into(),
            targets: r.targets.iter().map(|s| s.to_string()).collect(),
            ports: r.ports.into(),
            kind: r.kind,
            priority: r.priority,
        };
        c.send(&req).await;
        match c.next().await {
            Event::Rejected { id, code, message } => {
                assert_eq!((id.as_str(), code.as_str()), (r.id, r.code), "{req:?}");
                assert!(message.contains(r.says), "{req:?}: {message}");
            }
            other => panic!("{req:?}: expected {}, got {other:?}", r.code),
        }
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(h.probes.load(Relaxed), 0);
    assert_eq!(h.daemon.engine().stats().sent.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_busy() {
    let h = Harness::start(DaemonConfig {
        max_queued: 1,
        ..one_at_a_time(5_000)
    })
    .await;
    let mut c = h.client().await;
    c.send(&deep("q0")).await;
    c.send(&deep("q1")).await;
    c.send(&deep("q2")).await;
    let mut codes = HashMap::new();
    while codes.len() < 3 {
        match c.next().await {
            Event::Accepted { id, .. } => codes.insert(id, "accepted".to_string()),
            Event::Rejected { id, code, .. } => codes.insert(id, code),
            _ => None,
        };
    }
    assert_eq!(codes["q2"], "busy");
    let s = h.daemon.status();
    assert_eq!((s.running, s.queued, s.max_running), (1, 1, 1));
    c.send(&Request::Status { id: None }).await;
    loop {
        if let Event::Status(st) = c.next().await {
            assert_eq!((st.running, st.queued, st.max_running), (1, 1, 1));
            break;
        }
    }
    // A queued scan's replay is its queue position.
    let mut other = h.client().await;
    other
        .send(&Request::Status {
            id: Some("q1".into()),
        })
        .await;
    // (q0's live events may come first: it is running.)
    let replay = loop {
        let e = other.next().await;
        if e.scan_id() == Some("q1") {
            break e;
        }
    };
    assert!(
        matches!(
            replay,
            Event::Progress {
                queue_position: 1,
                chunks_complete: 0,
                total_chunks: 32,
                ..
            }
        ),
        "{replay:?}"
    );
    for id in ["q1", "q0"] {
        c.send(&Request::Cancel { id: id.into() }).await;
        c.until_finished(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_an_error_and_the_daemon_keeps_serving() {
    let h = Harness::start(config()).await;
    let body = |b: &[u8]| {
        let mut f = ((b.len() + 1) as u32).to_be_bytes().to_vec();
        f.push(VERSION);
        f.extend_from_slice(b);
        f
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero length", vec![0, 0, 0, 0]),
        ("huge length", vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3]),
        ("bad version", vec![0, 0, 0, 2, 9, b'{']),
        ("bad JSON", body(b"{\"type\":")),
        ("not a request", body(br#"{"type":"submit","id":1}"#)),
        ("not UTF-8", body(&[0xff, 0xfe, 0x00])),
        (
            "garbage",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        let mut c = h.client().await;
        c.raw(&bytes).await;
        match c.next().await {
            Event::Error { message } => assert!(!message.is_empty(), "{what}"),
            other => panic!("{what}: expected Error, got {other:?}"),
        }
        assert!(c.try_next().await.is_none(), "{what}: connection closed");
    }
    // A client that hangs up mid-frame costs nothing.
    let mut c = h.client().await;
    c.raw(&[0, 0, 0, 50, 1, b'{']).await;
    drop(c);
    // A good frame followed by a bad one: the good one is served first.
    let mut c = h.client().await;
    let mut two = encode(&Request::Status { id: None });
    two.extend_from_slice(&[0, 0, 0, 0]);
    c.raw(&two).await;
    assert!(matches!(c.next().await, Event::Status(_)));
    assert!(matches!(c.next().await, Event::Error { .. }));
    // And a fresh client is served normally.
    let mut c = h.client().await;
    c.send(&submit("after", "22", ScanKind::Fast, 0)).await;
    let ev = c.until_finished("after").await;
    assert_eq!(finished(&ev, "after").0, Outcome::Complete);
}

/// A truncated frame holds its connection only until the frame deadline; silence between
/// frames is not limited, and a frame dribbled in within the deadline is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_is_dropped_at_the_frame_deadline() {
    let h = Harness::start(DaemonConfig {
        frame_timeout: Duration::from_millis(300),
        max_connections: 2,
        ..config()
    })
    .await;
    // Idle between frames for longer than the deadline: still served.
    let mut idle = h.client().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    idle.send(&Request::Status { id: None }).await;
    assert!(matches!(idle.next().await, Event::Status(_)));
    // A frame sent in pieces, each within the deadline: served.
    let frame = encode(&Request::Status { id: None });
    let (head, tail) = frame.split_at(5);
    idle.raw(head).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    idle.raw(tail).await;
    assert!(matches!(idle.next().await, Event::Status(_)));
    // A header promising 50 bytes, then nothing: Error, then the connection closes.
    let mut stuck = h.client().await;
    let started = std::time::Instant::now();
    stuck.raw(&[0, 0, 0, 50, VERSION, b'{']).await;
    match stuck.next().await {
        Event::Error { message } => {
            assert!(
                message.starts_with("incomplete frame: 6 bytes"),
                "{message}"
            )
        }
        other => panic!("expected Error, got {other:?}"),
    }
    assert!(
        stuck.try_next().await.is_none(),
        "closed after the deadline"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // Its slot is free again (max_connections is 2: `idle` and one more).
    let mut next = h.client().await;
    next.send(&Request::Status { id: None }).await;
    assert!(matches!(next.next().await, Event::Status(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_gets_every_result_by_replay() {
    let h = Harness::start(slow(20_000)).await;
    let mut a = h.client().await;
    a.send(&deep("r1")).await;
    // Leave after the first chunk: the scan is engine-global and goes on.
    loop {
        if let Event::Ports { .. } = a.next().await {
            break;
        }
    }
    drop(a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut b = h.client().await;
    b.send(&Request::Status {
        id: Some("r1".into()),
    })
    .await;
    let ev = b.until_finished("r1").await;
    // Replay of a running scan: the Ports done so far, then the current Progress; then the
    // live events follow with no gap and no repeat.
    let first_progress = ev
        .iter()
        .position(|e| matches!(e, Event::Progress { .. }))
        .expect("a Progress");
    let replayed = ev[..first_progress]
        .iter()
        .filter(|e| matches!(e, Event::Ports { .. }))
        .count();
    assert!(
        matches!(ev[first_progress], Event::Progress { chunks_complete, total_chunks: 32, .. }
            if chunks_complete as usize == replayed && (1..32).contains(&replayed)),
        "replay then progress: {:?}",
        ev[first_progress]
    );
    let found = ports_of(&ev);
    let mut chunks = found.chunks.clone();
    chunks.sort_unstable();
    assert_eq!(chunks, (0..32).collect::<Vec<_>>());
    assert_truth(&found, 1..=65_535);
    let (outcome, counts, _) = finished(&ev, "r1");
    assert_eq!(outcome, Outcome::Complete);
    assert_deep_counts(counts);
    assert_eq!(h.probes.load(Relaxed), counts.sent);
    // After it finished: all 32 Ports, then Finished.
    let mut c = h.client().await;
    c.send(&Request::Status {
        id: Some("r1".into()),
    })
    .await;
    let ev = c.until_finished("r1").await;
    assert_eq!(ev.len(), 33);
    assert_truth(&ports_of(&ev), 1..=65_535);
    let (again, replayed_counts, _) = finished(&ev, "r1");
    assert_eq!((again, replayed_counts), (Outcome::Complete, counts));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_expired_ids_report_engine_restarted() {
    let h = Harness::start(DaemonConfig {
        retention: Duration::ZERO,
        ..config()
    })
    .await;
    let mut c = h.client().await;
    let restarted = |e: &Event, want: &str| {
        matches!(e, Event::Finished { id, outcome: Outcome::Failed(r), counts, .. }
            if id == want && r == "engine_restarted" && *counts == Counts::default())
    };
    c.send(&Request::Status {
        id: Some("nope".into()),
    })
    .await;
    assert!(restarted(&c.next().await, "nope"));
    c.send(&Request::Cancel { id: "nope".into() }).await;
    assert!(restarted(&c.next().await, "nope"));
    // With zero retention a finished scan is forgotten at once.
    c.send(&submit("gone", "22", ScanKind::Fast, 0)).await;
    c.until_finished("gone").await;
    c.send(&Request::Status {
        id: Some("gone".into()),
    })
    .await;
    assert!(restarted(&c.next().await, "gone"));
}

/// The samples of a Prometheus exposition, by name and labels.
fn samples_of(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k, v.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_exact_counts_after_a_scripted_scan() {
    let h = Harness::start(config()).await;
    let mut c = h.client().await;
    let mut sent = 0;
    c.send(&deep("m1")).await;
    sent += finished(&c.until_finished("m1").await, "m1").1.sent;
    c.send(&submit("m2", "80", ScanKind::Fast, 0)).await;
    sent += finished(&c.until_finished("m2").await, "m2").1.sent;
    c.send(&submit("m3", "80", ScanKind::Fast, 0)).await;
    c.send(&submit("m3", "80", ScanKind::Fast, 0)).await; // a duplicate
    sent += finished(&c.until_finished("m3").await, "m3").1.sent;
    c.send(&submit("m4", "80", ScanKind::Fast, 0)).await;
    c.send(&Request::Cancel { id: "m4".into() }).await; // cancelled at once or complete
    let m4 = finished(&c.until_finished("m4").await, "m4");
    sent += m4.1.sent;
    assert!(sent >= DEEP_SENT + 2);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let d = h.daemon.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        d.serve_metrics(listener, async {
            let _ = stopped.await;
        })
        .await
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = samples_of(body);
    let rendered = h.daemon.metrics();
    assert_eq!(
        samples,
        samples_of(&rendered),
        "the endpoint serves the rendering"
    );
    let get = |k: &str| *samples.get(k).unwrap_or_else(|| panic!("{k} missing"));
    // m4 answered port 80 only if it completed before the cancel landed.
    let m4_open = u64::from(m4.0 == Outcome::Complete);
    // A late reply to a pair probed again is a duplicate: received, discarded.
    let duplicates = get("portscope_engine_discards_total{reason=\"duplicate\"}");
    let want = [
        ("portscope_engine_probes_sent_total", sent),
        ("portscope_engine_send_failed_total", 0),
        // Each answered pair once (3 + 2 + 65,528 for m1, port 80 for m2, m3, m4), plus
        // duplicates.
        (
            "portscope_engine_packets_received_total",
            65_533 + 2 + m4_open + duplicates,
        ),
        (
            "portscope_engine_replies_total{kind=\"syn_ack\"}",
            3 + 2 + m4_open,
        ),
        ("portscope_engine_replies_total{kind=\"rst\"}", 65_528),
        ("portscope_engine_replies_total{kind=\"icmp\"}", 2),
        ("portscope_engine_kernel_drops_total", 0),
        ("portscope_engine_scans{state=\"queued\"}", 0),
        ("portscope_engine_scans{state=\"running\"}", 0),
        ("portscope_engine_scans{state=\"complete\"}", 3 + m4_open),
        ("portscope_engine_scans{state=\"failed\"}", 1 - m4_open),
        ("portscope_engine_queue_depth", 0),
        ("portscope_engine_rejected_total{code=\"duplicate\"}", 1),
        ("portscope_engine_rejected_total{code=\"policy\"}", 0),
        ("portscope_engine_clients", 1),
    ];
    for (k, v) in want {
        assert_eq!(get(k), v, "{k}");
    }
    let other_discards: u64 = samples
        .iter()
        .filter(|(k, _)| k.starts_with("portscope_engine_discards_total{reason="))
        .map(|(_, v)| *v)
        .sum::<u64>()
        - duplicates;
    assert_eq!(other_discards, 0);
    assert_eq!(
        samples
            .keys()
            .filter(|k| k.starts_with("portscope_engine_discards_total{"))
            .count(),
        portscope_core::classify::DISCARD_KINDS,
        "every reason is exported, zero or not"
    );
    assert_eq!(
        h.probes.load(Relaxed),
        sent,
        "the engine counted what the target saw"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_scans_with_engine_shutdown_and_removes_the_socket() {
    let mut h = Harness::start(one_at_a_time(5_000)).await;
    let mut c = h.client().await;
    c.send(&deep("x1")).await;
    c.send(&deep("x2")).await;
    loop {
        if let Event::Accepted { id, .. } = c.next().await {
            if id == "x2" {
                break;
            }
        }
    }
    h.shutdown().await;
    let mut ev = Vec::new();
    while let Some(e) = c.try_next().await {
        ev.push(e);
    }
    for id in ["x1", "x2"] {
        assert_eq!(finished(&ev, id).0, failed("engine_shutdown"), "{id}");
    }
    assert!(!h.path.exists(), "socket file removed");
    assert!(UnixStream::connect(&h.path).await.is_err());
}

#[test]
fn the_socket_file_gets_its_mode_and_stale_files_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.sock");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    let s = bind(&path, 0o660).unwrap();
    assert_eq!(mode(&path), 0o660);
    assert!(
        matches!(bind(&path, 0o660), Err(BindError::InUse(_))),
        "live"
    );
    drop(s);
    assert!(!path.exists(), "removed on drop");

    // A stale socket (its listener gone, the file left behind) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let s = bind(&path, 0o600).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        s.owner_uid(),
        std::fs::metadata(dir.path())
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.uid()
            })
            .unwrap()
    );
    drop(s);

    // Anything else at the path is not ours to delete.
    std::fs::write(&path, b"keep me").unwrap();
    assert!(matches!(bind(&path, 0o660), Err(BindError::NotASocket(_))));
    assert_eq!(std::fs::read(&path).unwrap(), b"keep me");
    assert!(matches!(
        bind(&dir.path().join("m.sock"), 0o1777),
        Err(BindError::Mode(_))
    ));
}

/// Connects as `uid`/`gid` from a child process (python3 under `setpriv`) and returns the
/// first frame's JSON body. `None` when this test cannot switch users here.
async fn first_frame_as(path: &Path, uid: u32, gid: u32) -> Option<String> {
    const CLIENT: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(sys.argv[1])
def read(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit("eof")
        b += c
    return b
n = struct.unpack(">I", read(4))[0]
print(read(n)[1:].decode())
"#;
    let out = tokio::process::Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            CLIENT,
        ])
        .arg(path)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("child client finishes")
        .ok()?;
    assert!(
        out.status.success(),
        "child: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

fn can_switch_users() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    root && Path::new("/usr/bin/python3").exists()
        && std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_checked_by_their_credentials() {
    if !can_switch_users() {
        eprintln!("skipped: needs root, setpriv and /usr/bin/python3 to connect as another uid");
        return;
    }
    let peers = |uids: &[u32], gids: &[u32]| PeerPolicy {
        uids: uids.to_vec(),
        gids: gids.to_vec(),
        ..PeerPolicy::default()
    };
    // (allowed uids, allowed gids, the peer's uid and gid, whether it gets in)
    for (peers, uid, gid, allowed) in [
        (peers(&[], &[]), 65534, 65534, false),
        (peers(&[65534], &[]), 65534, 65534, true),
        (peers(&[], &[65533]), 65534, 65533, true),
        (peers(&[], &[65533]), 65534, 65534, false),
    ] {
        let cfg = DaemonConfig { peers, ..config() };
        // 0666 so that only the credential check stands between the peer and the engine.
        let h = Harness::start_with_mode(cfg, 0o666).await;
        std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let body = first_frame_as(&h.path, uid, gid).await.expect("child ran");
        let e: Event = serde_json::from_str(body.trim()).unwrap();
        if allowed {
            assert!(matches!(e, Event::Hello { .. }), "{uid}/{gid}: {e:?}");
        } else {
            assert_eq!(
                e,
                Event::Error {
                    message: format!("peer uid {uid} not allowed")
                }
            );
        }
        // Our own (root) connection is always allowed.
        let mut c = h.client().await;
        c.send(&Request::Status { id: None }).await;
        assert!(matches!(c.next().await, Event::Status(_)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_to_every_client_and_scans_outlive_their_submitter() {
    let h = Harness::start(config()).await;
    let mut a = h.client().await;
    let mut b = h.client().await;
    a.send(&submit("g1", "1-100", ScanKind::Fast, 0)).await;
    drop(a);
    let ev = b.until_finished("g1").await;
    assert!(matches!(&ev[0], Event::Accepted { id, .. } if id == "g1"));
    assert_truth(&ports_of(&ev), 1..=100);
    assert_eq!(finished(&ev, "g1").0, Outcome::Complete);
    let ids: BTreeSet<&str> = ev.iter().filter_map(Event::scan_id).collect();
    assert_eq!(ids, BTreeSet::from(["g1"]));
}
