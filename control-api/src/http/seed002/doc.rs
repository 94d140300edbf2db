//! Seed 002's surface in the OpenAPI document served at `/v1/openapi.json` (seed 002:
//! "import /v1/openapi.json into Postman"): the response shapes as types, and the
//! modifier that merges the handlers' paths into the self-scan document.

use crate::managed::findings::{Finding, SeverityCounts};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Seed 002's run status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Queued or probing.
    Running,
    /// Final; findings and fix file are complete.
    Completed,
    /// Cancelled.
    Aborted,
    /// Ended with an error.
    Failed,
}

/// 201 of `POST /v1/scan`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunStarted {
    /// The run (a managed scan UUID).
    #[schema(format = Uuid)]
    pub run_id: String,
    /// `started`.
    pub status: String,
    /// The host scanned.
    pub target: String,
    /// `GET` this to poll.
    pub check_status_url: String,
}

/// A run without its findings (`GET /v1/runs`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    /// The run.
    pub run_id: String,
    /// Same as `run_id`.
    pub id: String,
    /// Host.
    pub target: String,
    /// Status.
    pub status: RunStatus,
    /// `2026-04-12T10:00:00+00:00`.
    pub started_at: String,
    /// When final.
    pub finished_at: Option<String>,
    /// Counts by severity.
    pub summary: SeverityCounts,
    /// When completed.
    pub fix_url: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// `GET /v1/scan/{run_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// The run.
    #[serde(flatten)]
    pub run: RunSummary,
    /// Every finding so far, most severe first.
    pub findings: Vec<Finding>,
}

/// `GET /v1/runs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// The last 50, newest first.
    pub runs: Vec<RunSummary>,
}

/// A target.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostTarget {
    /// `tg-...`.
    pub id: String,
    /// Host.
    pub host: String,
    /// Label.
    pub label: Option<String>,
    /// Created.
    pub created_at: String,
}

/// `GET /v1/targets`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HostTargetList {
    /// The token's targets.
    pub targets: Vec<HostTarget>,
    /// How many.
    pub total: u64,
}

/// A monitor (a scheduled target).
#[derive(Debug, Serialize, ToSchema)]
pub struct Monitor {
    /// The target id.
    pub id: String,
    /// Host.
    pub target: String,
    /// `daily`, `weekly` (or `custom` for an `/api/v1` interval).
    pub frequency: String,
    /// Seconds.
    pub interval: Option<i64>,
    /// Next scheduled run.
    pub next_run_at: Option<String>,
    /// Alert e-mail.
    pub alert_email: Option<String>,
    /// Alert webhook.
    pub alert_webhook: Option<String>,
    /// `HIGH`.
    pub alert_min_severity: Option<String>,
}

/// `GET /api/monitors`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MonitorList {
    /// Scheduled targets.
    pub monitors: Vec<Monitor>,
}

/// Seed 002's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Seed002Error {
    /// `unauthorized`, `not found`, `rate limit`, `target exists`, or the message.
    pub error: String,
    /// Seconds (429).
    pub retry_after: Option<u64>,
    /// The existing target (409 on `POST /v1/targets`).
    pub target_id: Option<String>,
    /// The live run (409 on `POST /v1/scan`).
    pub run_id: Option<String>,
}

/// Seed 002's paths.
#[derive(Debug, OpenApi)]
#[openapi(
    paths(
        super::start,
        super::status,
        super::fix,
        super::list_targets,
        super::add_target,
        super::delete_target,
        super::runs,
        super::add_monitor,
        super::list_monitors
    ),
    components(schemas(
        super::HostBody,
        super::MonitorBody,
        RunStarted,
        RunView,
        RunList,
        HostTarget,
        HostTargetList,
        Monitor,
        MonitorList,
        Seed002Error
    ))
)]
pub struct Seed002Doc;

/// Merges seed 002's paths and the bearer scheme into a document.
#[derive(Debug)]
pub struct Seed002Paths;

impl Modify for Seed002Paths {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.merge(Seed002Doc::openapi());
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
    }
}
