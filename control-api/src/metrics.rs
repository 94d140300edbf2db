//! Prometheus metrics served at `GET /metrics` (text exposition format).
//!
//! - `portscope_api_request_duration_seconds{route,method,status}`: latency histogram.
//! - `portscope_scans{state}`: unexpired scans by state (read from the database at scrape).
//! - `portscope_queue_depth`: scans waiting (queued).
//! - `portscope_engine_connected`: 1 while the engine connection is up.
//! - `portscope_webhook_deliveries_total{result}`: `delivered`, `failed`, `retried`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Matched route (`/v1/fast`) or `unmatched`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// A single `state` / `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The value.
    pub state: String,
}

/// A single `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// The value.
    pub result: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The API's metrics; clones share them.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Request latency.
    pub requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Scans by state.
    pub scans: Family<StateLabel, Gauge>,
    /// Queued scans.
    pub queue_depth: Gauge,
    /// Engine connection up (1) or down (0).
    pub engine_connected: Gauge,
    /// Webhook deliveries by result.
    pub webhooks: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let requests = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let scans = Family::<StateLabel, Gauge>::default();
        let queue_depth = Gauge::default();
        let engine_connected = Gauge::default();
        let webhooks = Family::<ResultLabel, Counter>::default();
        r.register(
            "portscope_api_request_duration_seconds",
            "API request latency by route, method and status",
            requests.clone(),
        );
        r.register("portscope_scans", "Unexpired scans by state", scans.clone());
        r.register(
            "portscope_queue_depth",
            "Scans waiting for the engine",
            queue_depth.clone(),
        );
        r.register(
            "portscope_engine_connected",
            "Whether the engine connection is up",
            engine_connected.clone(),
        );
        r.register(
            "portscope_webhook_deliveries",
            "Webhook deliveries by result",
            webhooks.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            requests,
            scans,
            queue_depth,
            engine_connected,
            webhooks,
        }
    }

    /// Counts one webhook outcome.
    pub fn webhook(&self, result: &str) {
        self.webhooks
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
