//! The response schemas of the managed-scan OpenAPI document: one type per JSON shape the
//! handlers of [`super::api`] answer with (field for field, names as sent), and the
//! modifier that attaches them to every operation's 2xx, 4xx, 429 and 5xx answers and adds
//! the alias paths. The document is checked against the live API by schemathesis
//! (`tests/schemathesis.rs`), so a shape that drifts from its schema fails the suite.

use super::findings::{Finding, SeverityCounts};
use serde::Serialize;
use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::{Content, HeaderBuilder, ObjectBuilder, RefOr, Response, Type};
use utoipa::{Modify, ToSchema};

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

/// A saved target.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetView {
    /// `tg-...`.
    pub id: String,
    /// IP, CIDR or name.
    pub target: String,
    /// Label.
    pub label: Option<String>,
    /// Profile.
    pub profile: String,
    /// Custom ports.
    pub ports: Option<String>,
    /// Seconds between scheduled scans.
    pub interval: Option<i64>,
    /// In the schedule and trigger-all.
    pub enabled: bool,
    /// ISO 8601.
    pub next_run_at: Option<String>,
    /// Monitor webhook.
    pub webhook_url: Option<String>,
    /// Alert threshold.
    pub alert_min_severity: Option<String>,
    /// Monitor e-mail.
    pub alert_email: Option<String>,
    /// ISO 8601.
    pub created_at: String,
    /// ISO 8601.
    pub updated_at: String,
}

/// GET `/targets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetList {
    /// The token's targets.
    pub targets: Vec<TargetView>,
    /// How many.
    pub total: u64,
}

/// An alert.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertView {
    /// `al-...`.
    pub id: String,
    /// The scan that raised it.
    pub scan_id: String,
    /// Saved target.
    pub target_id: Option<String>,
    /// Target.
    pub target: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: i64,
    /// `new_open_port`, `port_closed`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Severity.
    pub severity: String,
    /// One line.
    pub message: String,
    /// Before.
    pub old_value: Option<String>,
    /// After.
    pub new_value: Option<String>,
    /// `open`, `acknowledged`, `resolved`.
    pub status: String,
    /// ISO 8601.
    pub created_at: String,
    /// ISO 8601.
    pub acknowledged_at: Option<String>,
    /// ISO 8601.
    pub resolved_at: Option<String>,
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

/// Paths served twice: (alias, documented path, methods).
const ALIASES: &[(&str, &str)] = &[
    ("/api/v1/scans/{id}", "/api/v1/scan/{id}"),
    ("/api/v1/scans/{id}/fix", "/api/v1/scan/{id}/fix"),
];

/// The 2xx schema of each (method, path).
fn success_schema(method: &HttpMethod, path: &str) -> Option<&'static str> {
    use HttpMethod::{Delete, Get, Patch, Post, Put};
    Some(match (method, path) {
        (Post, "/api/v1/scan")
        | (Post, "/api/v1/scan/{id}/retest")
        | (Post, "/api/v1/targets/{id}/scan") => "ScanQueued",
        (Get, "/api/v1/scan/{id}") => "ScanView",
        (Get, "/api/v1/scans") => "ScanList",
        (Post, "/api/v1/scan/{id}/cancel") => "Cancelled",
        (Get, "/api/v1/scans/{id}/results") => "ResultsView",
        (Get, "/api/v1/scans/{id}/summary") => "SummaryView",
        (Post, "/api/v1/scans/trigger-all") => "TriggerAll",
        (Get, "/api/v1/targets") => "TargetList",
        (Post, "/api/v1/targets") | (Get | Patch | Put, "/api/v1/targets/{id}") => "TargetView",
        (Get, "/api/v1/alerts") => "AlertList",
        (Post, "/api/v1/alerts/{id}/acknowledge" | "/api/v1/alerts/{id}/resolve") => "AlertView",
        (Delete, _) => return None,
        _ => return None,
    })
}

fn json_ref(name: &str) -> Content {
    Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
        name,
    ))))
}

/// The rate-limit headers every `/api/v1` answer carries.
fn with_rate_headers(mut r: Response) -> Response {
    for name in [
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ] {
        r.headers.insert(
            name.to_string(),
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .build(),
        );
    }
    r
}

fn type_operation(method: &HttpMethod, path: &str, op: &mut Operation) {
    let limited = Response::new(
        "`rate_limited` (60 requests per IP per minute), or a quota: `monthly_limit`, \
         `concurrent_limit`, `queue_full`; `Retry-After` says when to retry",
    );
    op.responses
        .responses
        .entry("429".into())
        .or_insert(RefOr::T(limited));
    if !op.responses.responses.contains_key("400") {
        op.responses.responses.insert(
            "400".into(),
            RefOr::T(Response::new(
                "`bad_request`: a malformed body, query or forwarded address",
            )),
        );
    }
    for (status, resp) in op.responses.responses.iter_mut() {
        let RefOr::T(resp) = resp else { continue };
        if status.starts_with('2') {
            if let Some(name) = success_schema(method, path) {
                resp.content
                    .insert("application/json".into(), json_ref(name));
            }
        } else if status.starts_with('4') || status.starts_with('5') {
            resp.content
                .insert("application/json".into(), json_ref("ManagedErrorBody"));
        }
        *resp = with_rate_headers(std::mem::take(resp));
    }
}

/// Attaches the response schemas and adds the alias paths.
#[derive(Debug)]
pub struct TypedResponses;

impl Modify for TypedResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (alias, of) in ALIASES {
            if let Some(mut item) = doc.paths.paths.get(*of).cloned() {
                // Operation ids stay unique: the alias's get a suffix.
                for_each_operation(&mut item, |_, op| {
                    op.operation_id = op.operation_id.take().map(|id| format!("{id}_alias"));
                });
                doc.paths.paths.insert((*alias).to_string(), item);
            }
        }
        // PUT on a target is PATCH under another method.
        if let Some(item) = doc.paths.paths.get_mut("/api/v1/targets/{id}") {
            if item.put.is_none() {
                let mut put = item.patch.clone();
                if let Some(op) = put.as_mut() {
                    op.operation_id = Some("replace_target".into());
                }
                item.put = put;
            }
        }
        doc.paths
            .paths
            .insert("/api/v1/openapi.json".into(), openapi_path());
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue;
            }
            let canonical = ALIASES
                .iter()
                .find(|(a, _)| a == path)
                .map_or(path.as_str(), |(_, of)| of);
            for_each_operation(item, |m, op| type_operation(&m, canonical, op));
        }
    }
}

/// GET `/api/v1/openapi.json` (no token).
fn openapi_path() -> PathItem {
    use utoipa::openapi::path::OperationBuilder;
    use utoipa::openapi::ResponseBuilder;
    let ok = ResponseBuilder::new()
        .description("This document (OpenAPI 3.1)")
        .content(
            "application/json",
            Content::new(Some(RefOr::T(ObjectBuilder::new().into()))),
        )
        .build();
    PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .operation_id(Some("managed_openapi"))
            .tag("managed scans")
            .summary(Some("The OpenAPI document of the managed-scan API"))
            .response("200", ok)
            .build(),
    )
}

fn for_each_operation(item: &mut PathItem, mut f: impl FnMut(HttpMethod, &mut Operation)) {
    let slots = [
        (HttpMethod::Get, &mut item.get),
        (HttpMethod::Post, &mut item.post),
        (HttpMethod::Put, &mut item.put),
        (HttpMethod::Patch, &mut item.patch),
        (HttpMethod::Delete, &mut item.delete),
    ];
    for (m, op) in slots {
        if let Some(op) = op.as_mut() {
            f(m, op);
        }
    }
}
