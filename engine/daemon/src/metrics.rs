//! Prometheus text exposition (format 0.0.4) of the engine's counters and the daemon's
//! scan states, and the one-route axum app serving it. Hand-written lines: no registry.

use crate::state::Shared;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use portscope_core::classify::Discard;
use portscope_proto::RejectCode;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The content type of the exposition format.
pub(crate) const CONTENT_TYPE_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(serve))
        .with_state(shared)
}

async fn serve(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, CONTENT_TYPE_004)], render(&shared))
}

/// One metric family: HELP and TYPE lines, then `(labels, value)` samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

fn plain(v: u64) -> Vec<(String, u64)> {
    vec![(String::new(), v)]
}

fn labelled<'a>(key: &str, items: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<(String, u64)> {
    items
        .into_iter()
        .map(|(l, v)| (format!("{{{key}=\"{l}\"}}"), v))
        .collect()
}

/// The whole exposition.
pub(crate) fn render(shared: &Shared) -> String {
    let stats = shared.engine.stats();
    let snap = shared.snapshot();
    let r = &shared.replies;
    let discards = stats.discards();
    let mut out = String::with_capacity(4096);
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        family(out, name, "counter", help, &plain(v));
    };
    counter(
        &mut out,
        "portscope_engine_probes_sent_total",
        "Probes handed to the kernel.",
        stats.sent.load(Relaxed),
    );
    counter(
        &mut out,
        "portscope_engine_send_failed_total",
        "Probes the kernel refused (no route, ...).",
        stats.send_failed.load(Relaxed),
    );
    counter(
        &mut out,
        "portscope_engine_packets_received_total",
        "Packets read from the capture socket.",
        stats.received.load(Relaxed),
    );
    family(
        &mut out,
        "portscope_engine_replies_total",
        "counter",
        "First valid replies by kind, counted from port results.",
        &labelled(
            "kind",
            [
                ("syn_ack", r.syn_ack.load(Relaxed)),
                ("rst", r.rst.load(Relaxed)),
                ("icmp", r.icmp.load(Relaxed)),
            ],
        ),
    );
    family(
        &mut out,
        "portscope_engine_discards_total",
        "counter",
        "Received packets not accepted as scan replies, by reason.",
        &labelled(
            "reason",
            Discard::ALL.iter().map(|d| (d.as_str(), discards.get(*d))),
        ),
    );
    counter(
        &mut out,
        "portscope_engine_kernel_drops_total",
        "Packets the kernel dropped because the capture buffer was full.",
        stats.kernel_drops.load(Relaxed),
    );
    family(
        &mut out,
        "portscope_engine_scans",
        "gauge",
        "Scans queued and running now; complete and failed since the engine started.",
        &labelled(
            "state",
            [
                ("queued", snap.queued as u64),
                ("running", snap.running as u64),
                ("complete", snap.totals.complete),
                ("failed", snap.totals.failed),
            ],
        ),
    );
    family(
        &mut out,
        "portscope_engine_queue_depth",
        "gauge",
        "Scans waiting for a running slot.",
        &plain(snap.queued as u64),
    );
    let rejected = RejectCode::ALL.map(|c| (c.as_str(), snap.totals.rejected[c as usize]));
    family(
        &mut out,
        "portscope_engine_rejected_total",
        "counter",
        "Submits refused, by code.",
        &labelled("code", rejected),
    );
    family(
        &mut out,
        "portscope_engine_clients",
        "gauge",
        "Connected control clients.",
        &plain(snap.clients as u64),
    );
    out
}
