//! The scan queue: positions by priority then arrival, a full queue is busy, duplicate ids,
//! cancel, timeouts, and shutdown failing every scan.

use crate::support::*;
use portscope_daemon::DaemonConfig;
use portscope_proto::{encode, Counts, Event, Outcome, ScanKind};
use std::collections::HashMap;
use std::time::Duration;
use tokio::net::UnixStream;

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
    c.send(&status(None)).await;
    match c.until(|e| matches!(e, Event::Status(_))).await {
        Event::Status(st) => assert_eq!((st.running, st.queued, st.max_running), (1, 1, 1)),
        _ => unreachable!(),
    }
    // A queued scan's replay is its queue position.
    let mut other = h.client().await;
    other.send(&status(Some("q1"))).await;
    // (q0's live events may come first: it is running.)
    let replay = other.until(|e| e.scan_id() == Some("q1")).await;
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
        c.send(&cancel(id)).await;
        c.until_finished(id).await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_and_queued_scans() {
    let h = Harness::start(one_at_a_time(5_000)).await;
    let mut c = h.client().await;
    c.send(&deep("run")).await;
    c.send(&deep("wait")).await;
    // Cancel the queued one first: it never starts.
    c.send(&cancel("wait")).await;
    let ev = c.until_finished("wait").await;
    assert_eq!(progress(&ev, "wait"), Vec::<(u32, u32, u32)>::new());
    assert!(of(&ev, "wait").all(|e| !matches!(e, Event::Ports { .. })));
    assert_eq!(
        finished(&ev, "wait"),
        (failed("cancelled"), Counts::default(), 0)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.send(&cancel("run")).await;
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
    c.send(&cancel("run")).await;
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
async fn shutdown_fails_scans_with_engine_shutdown_and_removes_the_socket() {
    let mut h = Harness::start(one_at_a_time(5_000)).await;
    let mut c = h.client().await;
    c.send(&deep("x1")).await;
    c.send(&deep("x2")).await;
    c.until(|e| matches!(e, Event::Accepted { id, .. } if id == "x2"))
        .await;
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
