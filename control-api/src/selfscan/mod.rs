//! What only the self-scan API (seed 000) has: the service that coalesces POSTs of one
//! address and type, its per-IP and per-ASN limits, enrichment (banners, PTR) and webhooks.

pub mod finisher;
pub mod limits;
pub mod service;

pub use service::{chunks_of, ScanDeps, ScanService, ScanSettings};
