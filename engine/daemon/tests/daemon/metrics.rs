//! `GET /metrics`: exact counters after a scripted scan, every discard reason exported.

use crate::support::*;
use portscope_proto::{Outcome, ScanKind};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

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
    c.send(&cancel("m4")).await; // cancelled at once or complete
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
    // m4's port 80 was answered if its probe went out before the cancel landed: always when
    // m4 completed, and also when the cancel came between the probe and the scan's end (the
    // reply then still counts, as every reply read before a scan closes does).
    let m4_complete = u64::from(m4.0 == Outcome::Complete);
    let m4_open = get("portscope_engine_replies_total{kind=\"syn_ack\"}") - (3 + 2);
    assert!(
        m4_open <= 1 && m4_open >= m4_complete,
        "m4: {m4:?}, answered {m4_open}"
    );
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
        ("portscope_engine_replies_total{kind=\"rst\"}", 65_528),
        ("portscope_engine_replies_total{kind=\"icmp\"}", 2),
        ("portscope_engine_kernel_drops_total", 0),
        ("portscope_engine_scans{state=\"queued\"}", 0),
        ("portscope_engine_scans{state=\"running\"}", 0),
        (
            "portscope_engine_scans{state=\"complete\"}",
            3 + m4_complete,
        ),
        ("portscope_engine_scans{state=\"failed\"}", 1 - m4_complete),
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
