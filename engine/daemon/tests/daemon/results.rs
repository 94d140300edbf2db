//! What a scan streams: chunks and results exactly the truth, progress per chunk, replay to
//! a client that reconnects, events to every client, and `engine_restarted` for unknown ids.

use crate::support::*;
use portscope_daemon::DaemonConfig;
use portscope_proto::{Counts, Event, Outcome, ScanKind};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

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
    assert_every_chunk(&found, 32);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_gets_every_result_by_replay() {
    let h = Harness::start(slow(20_000)).await;
    let mut a = h.client().await;
    a.send(&deep("r1")).await;
    // Leave after the first chunk: the scan is engine-global and goes on.
    a.until(|e| matches!(e, Event::Ports { .. })).await;
    drop(a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut b = h.client().await;
    b.send(&status(Some("r1"))).await;
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
    assert_every_chunk(&found, 32);
    assert_truth(&found, 1..=65_535);
    let (outcome, counts, _) = finished(&ev, "r1");
    assert_eq!(outcome, Outcome::Complete);
    assert_deep_counts(counts);
    assert_eq!(h.probes.load(Relaxed), counts.sent);
    // After it finished: all 32 Ports, then Finished.
    let mut c = h.client().await;
    c.send(&status(Some("r1"))).await;
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
    c.send(&status(Some("nope"))).await;
    assert!(restarted(&c.next().await, "nope"));
    c.send(&cancel("nope")).await;
    assert!(restarted(&c.next().await, "nope"));
    // With zero retention a finished scan is forgotten at once.
    c.send(&submit("gone", "22", ScanKind::Fast, 0)).await;
    c.until_finished("gone").await;
    c.send(&status(Some("gone"))).await;
    assert!(restarted(&c.next().await, "gone"));
}
