//! The response schemas of the managed-scan OpenAPI document: one type per JSON shape the
//! handlers of [`super`] answer with (field for field, names as sent); a saved target and
//! an alert are their store rows, which serialize as their JSON. The modifier
//! in [`mod@super::openapi`] attaches them to every operation's answers. The document is
//! checked against the live API by schemathesis (`tests/schemathesis.rs`), so a shape
//! that drifts from its schema fails the suite.

use crate::managed::findings::{Finding, SeverityCounts};
/// A saved target and an alert: their rows are their JSON.
pub use crate::store::{AlertRow as AlertView, TargetRow as TargetView};
use serde::Serialize;
use utoipa::ToSchema;

/// Status of a managed scan.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScanStatus {
    /// Waiting for the engine.
    Queued,
    /// Being probed.
    Running,
    /// Finished; results, grade and findings are final.
    Complete,
    /// Ended with an error (`error` says why).
    Failed,
    /// Cancelled by the token.
    Cancelled,
}

/// 201 of POST `/scan`, retest and `POST /targets/{id}/scan`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanQueued {
    /// The scan id (a UUID).
    #[schema(format = Uuid)]
    pub id: String,
    /// `queued`.
    pub status: ScanStatus,
    /// `/report/{id}?key=...`.
    pub report_url: String,
}

/// Chunks done of a running scan.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Chunks finished.
    pub chunks_complete: i64,
    /// Chunks in all (0 until the engine accepted the scan).
    pub total_chunks: i64,
}

/// Counts of a scan.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanCounts {
    /// Hosts with a result (named addresses always).
    pub hosts: u64,
    /// Open ports.
    pub open: u64,
    /// Filtered ports.
    pub filtered: u64,
    /// Findings by severity.
    pub findings: SeverityCounts,
}

/// One open or filtered port.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortView {
    /// Host address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `open` or `filtered`.
    pub state: String,
    /// IANA service name.
    pub service: Option<String>,
    /// Banner, once grabbed.
    pub banner: Option<String>,
}

/// GET `/scan/{id}`: the scan, partial while it runs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScanView {
    /// Scan id (UUID).
    #[schema(format = Uuid)]
    pub id: String,
    /// IP, CIDR or name as given.
    pub target: String,
    /// Domain label.
    pub domain: Option<String>,
    /// Status.
    pub status: ScanStatus,
    /// `fast`, `deep` or `custom`.
    pub profile: String,
    /// Engine port spec.
    pub ports: String,
    /// What the engine was given (addresses or one CIDR).
    pub addresses: Vec<String>,
    /// Letter grade once complete.
    pub grade: Option<String>,
    /// 0-100 once complete.
    pub grade_score: Option<i64>,
    /// HTML report with its key.
    pub report_url: String,
    /// SECURITY-FIX.md.
    pub fix_url: String,
    /// ISO 8601.
    pub created_at: String,
    /// ISO 8601.
    pub started_at: Option<String>,
    /// ISO 8601.
    pub completed_at: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Chunks.
    pub progress: Progress,
    /// True until complete.
    pub partial: bool,
    /// Counts.
    pub summary: ScanCounts,
    /// Open and filtered ports.
    pub results: Vec<PortView>,
    /// Findings so far, most severe first.
    pub findings: Vec<Finding>,
}

/// One row of GET `/scans`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanListItem {
    /// UUID.
    #[schema(format = Uuid)]
    pub id: String,
    /// Target.
    pub target: String,
    /// Domain label.
    pub domain: Option<String>,
    /// Status.
    pub status: ScanStatus,
    /// Grade once complete.
    pub grade: Option<String>,
    /// ISO 8601 (snake case as in seed 003).
    pub created_at: String,
}

/// GET `/scans`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanList {
    /// Newest first.
    pub scans: Vec<ScanListItem>,
    /// All matching.
    pub total: i64,
    /// Page size.
    pub limit: i64,
    /// Skipped.
    pub offset: i64,
}

/// POST `/scan/{id}/cancel`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    /// UUID.
    pub id: String,
    /// `cancelled`.
    pub status: ScanStatus,
}

/// GET `/scans/{id}/results`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultsView {
    /// UUID.
    pub id: String,
    /// Target.
    pub target: String,
    /// Status.
    pub status: ScanStatus,
    /// True until complete.
    pub partial: bool,
    /// Open and filtered ports.
    pub results: Vec<PortView>,
}

/// Per-host counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostSummary {
    /// Address.
    pub host: String,
    /// Open ports.
    pub open: i64,
    /// Filtered ports.
    pub filtered: i64,
    /// Closed ports, once complete.
    pub closed: Option<i64>,
}

/// GET `/scans/{id}/summary`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SummaryView {
    /// UUID.
    pub id: String,
    /// Target.
    pub target: String,
    /// Status.
    pub status: ScanStatus,
    /// Ports probed per host.
    pub ports_per_host: i64,
    /// Per host.
    pub hosts: Vec<HostSummary>,
    /// Findings by severity.
    pub findings: SeverityCounts,
}

/// A target scanned by trigger-all.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Triggered {
    /// Saved target.
    pub target_id: String,
    /// New scan.
    pub id: String,
    /// `queued`.
    pub status: ScanStatus,
    /// Report.
    pub report_url: String,
}

/// A target trigger-all could not scan, with the error it got.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// Saved target.
    pub target_id: String,
    /// The HTTP status a direct request would have had.
    pub status: u16,
    /// Error code.
    pub error: String,
    /// Message.
    pub message: String,
    /// The live scan, on `scan_in_progress`.
    pub existing_id: Option<String>,
}

/// POST `/scans/trigger-all`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerAll {
    /// Scans started.
    pub triggered: Vec<Triggered>,
    /// Targets not scanned.
    pub skipped: Vec<Skipped>,
}

/// GET `/targets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetList {
    /// The token's targets.
    pub targets: Vec<TargetView>,
    /// How many.
    pub total: u64,
}

/// GET `/alerts`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// Newest first.
    pub alerts: Vec<AlertView>,
    /// All matching.
    pub total: i64,
    /// Page size.
    pub limit: i64,
    /// Skipped.
    pub offset: i64,
}

/// Every error of `/api/v1`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedErrorBody {
    /// Stable code (`bad_request`, `unauthorized`, `rate_limited`, ...).
    pub error: String,
    /// What happened and what to do.
    pub message: String,
    /// The live scan, on 409 `scan_in_progress`.
    #[schema(format = Uuid)]
    pub existing_id: Option<String>,
}
