//! Seed 002's client surface over the managed service, so its curl, Python and JavaScript
//! snippets run unchanged: `POST /v1/scan {host, label?}` -> 201 `{run_id, status:
//! "started", target, check_status_url}`, `GET /v1/scan/{run_id}` (status `running` /
//! `completed` / `aborted` / `failed`, `summary.total`, `findings`, `fix_url`),
//! `GET /v1/scan/{run_id}/fix`, `GET|POST /v1/targets`, `DELETE /api/targets/{id}`,
//! `GET /v1/runs`, `GET|POST /api/monitors`, and seed 002's error shapes ([`errors`]).
//! [`doc`] describes them in the `/v1/openapi.json` document.
//!
//! Thin: every scan goes through [`ManagedService::submit`] with the same bearer token, so
//! scope, quotas, 409 and the per-IP limit are the `/api/v1` ones. A run is a managed
//! scan; its `run_id` is the scan's UUID (the same id works on `/api/v1/scan/{id}`).

pub mod doc;
pub mod errors;

use super::error::ApiError;
use super::managed::{
    delete_owned_target, fix_file, newly_open, open_ports, owned, query, router::Managed,
    target_list, Authed, JsonBody, ScanView,
};
use crate::managed::findings::{self, Severity};
use crate::managed::report;
use crate::managed::scope::TargetSpec;
use crate::managed::service::{ManagedService, ScanOrder};
use crate::managed::store::{MScanRow, TargetRow};
use crate::managed::tokens::Token;
use crate::model::Status;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
pub use errors::{is_seed002_path, reshape};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

type S = Arc<Managed>;
type R = Result<Response, ApiError>;

/// Runs `GET /v1/runs` returns at most (seed 002: "up to the last 50 runs").
pub const RUNS_LIMIT: i64 = 50;

/// The seed 002 routes.
pub fn routes() -> Router<S> {
    Router::new()
        .route("/v1/scan", post(start))
        .route("/v1/scan/{run_id}", get(status))
        .route("/v1/scan/{run_id}/fix", get(fix))
        .route("/v1/targets", get(list_targets).post(add_target))
        .route("/api/targets/{id}", delete(delete_target))
        .route("/v1/runs", get(runs))
        .route("/api/monitors", get(list_monitors).post(add_monitor))
}

/// Seed 002's status word for a managed scan status (queued and running are `running`).
fn run_status(status: Status) -> doc::RunStatus {
    match status {
        Status::Complete => doc::RunStatus::Completed,
        Status::Cancelled => doc::RunStatus::Aborted,
        Status::Failed => doc::RunStatus::Failed,
        Status::Queued | Status::Running => doc::RunStatus::Running,
    }
}

/// `2026-04-12T10:00:00+00:00` (seed 002's timestamps) from Unix seconds.
fn stamp(secs: i64) -> String {
    const FMT: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00");
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(FMT).ok())
        .unwrap_or_default()
}

/// The host of `https://myapp.com/path`, `myapp.com:8443`, `198.18.0.5` or a CIDR.
pub fn host_of(raw: &str) -> Result<TargetSpec, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ApiError::BadRequest("host is required".into()));
    }
    if let Ok(spec) = TargetSpec::parse(raw) {
        return Ok(spec);
    }
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| ApiError::BadRequest(format!("invalid host {raw}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::BadRequest(format!(
            "invalid host {raw}: only http and https URLs name a host"
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| ApiError::BadRequest(format!("invalid host {raw}: no host")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    TargetSpec::parse(host).map_err(ApiError::from)
}

fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()));
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    host.map_or(String::new(), |h| format!("{proto}://{h}"))
}

/// `POST /v1/scan` and `POST /v1/targets` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"host": "198.18.0.5", "label": "production"}))]
pub struct HostBody {
    /// URL or host name, with or without scheme (an IP or CIDR too).
    pub host: String,
    /// Free-text label.
    pub label: Option<String>,
}

fn new_target(token: &Token, target: String, label: Option<String>, now: i64) -> TargetRow {
    TargetRow {
        label: label.filter(|l| !l.is_empty()),
        ..TargetRow::new(&token.id, target, now)
    }
}

/// The token's saved target for `target`, if any.
async fn find_target(s: &S, t: &Token, target: &str) -> Result<Option<TargetRow>, ApiError> {
    Ok(s.service
        .store()
        .targets(&t.id)
        .await?
        .into_iter()
        .find(|r| r.target == target))
}

/// The host `raw` as a target of the token's scope (400 unless a host, 403 outside the
/// scope), with the token's saved target for it, if any.
async fn scoped_target(
    s: &S,
    t: &Token,
    raw: &str,
) -> Result<(TargetSpec, Option<TargetRow>), ApiError> {
    let spec = host_of(raw)?;
    s.service.authorize(t, &spec).await?;
    let saved = find_target(s, t, &spec.to_string()).await?;
    Ok((spec, saved))
}

/// Scans a host (scope-checked); creates its target first when it has none.
#[utoipa::path(post, path = "/v1/scan", tag = "seed 002", request_body = HostBody, security(("bearer" = [])),
    responses((status = 201, description = "Started", body = doc::RunStarted), (status = 400, description = "Invalid input", body = doc::Seed002Error), (status = 401, description = "`unauthorized`", body = doc::Seed002Error), (status = 402, description = "Monthly scan quota reached", body = doc::Seed002Error), (status = 403, description = "Outside the token's scope", body = doc::Seed002Error), (status = 409, description = "Conflict", body = doc::Seed002Error), (status = 429, description = "`rate limit` with `retry_after`", body = doc::Seed002Error)))]
pub async fn start(
    State(s): State<S>,
    Authed(t): Authed,
    headers: HeaderMap,
    JsonBody(b): JsonBody<HostBody>,
) -> R {
    let (spec, saved) = scoped_target(&s, &t, &b.host).await?;
    let target = spec.to_string();
    let saved = match saved {
        Some(row) => row,
        None => {
            let row = new_target(&t, target.clone(), b.label, s.service.now_secs());
            s.service.store().insert_target(&row).await?;
            row
        }
    };
    let order = ScanOrder {
        domain: matches!(spec, TargetSpec::Domain(_)).then(|| target.clone()),
        ..ManagedService::order_for(&saved)
    };
    let row = s.service.submit(&t, &order).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "run_id": row.id,
            "status": "started",
            "target": target,
            "check_status_url": format!("{}/v1/scan/{}", base_url(&headers), row.id),
        })),
    )
        .into_response())
}

/// Summary counts of a run and its findings (all of them, or one host's).
async fn findings_of(
    s: &S,
    row: &MScanRow,
    host: Option<&str>,
) -> Result<(findings::SeverityCounts, Vec<findings::Finding>), ApiError> {
    let ports = s.service.store().ports(&row.id).await?;
    let new = newly_open(s, &row.id).await?;
    let mut open = open_ports(&ports, &new);
    if let Some(h) = host {
        open.retain(|p| p.host == h);
    }
    let found = findings::findings(&open);
    Ok((findings::counts(&found), found))
}

fn run_json(
    row: &MScanRow,
    counts: &findings::SeverityCounts,
    base: &str,
) -> serde_json::Map<String, Value> {
    let mut v = json!({
        "run_id": row.id,
        "id": row.id,
        "target": row.target,
        "status": run_status(row.status),
        "started_at": stamp(row.started_at.unwrap_or(row.created_at_ms / 1000)),
        "summary": counts,
    });
    if let Some(done) = row.completed_at {
        v["finished_at"] = json!(stamp(done));
    }
    if row.status == Status::Complete {
        v["fix_url"] = json!(format!("{base}/v1/scan/{}/fix", row.id));
    }
    if let Some(e) = &row.error {
        v["error"] = json!(e);
    }
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// Status, summary and every finding so far (partial while running).
#[utoipa::path(get, path = "/v1/scan/{run_id}", tag = "seed 002", params(("run_id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "Status, summary, findings so far", body = doc::RunView), (status = 400, description = "Invalid input", body = doc::Seed002Error), (status = 401, description = "`unauthorized`", body = doc::Seed002Error), (status = 404, description = "`not found`", body = doc::Seed002Error), (status = 429, description = "`rate limit` with `retry_after`", body = doc::Seed002Error)))]
pub async fn status(
    State(s): State<S>,
    Authed(t): Authed,
    headers: HeaderMap,
    Path(run_id): Path<String>,
) -> R {
    let row = owned(&s, &t, &run_id).await?;
    let (counts, found) = findings_of(&s, &row, None).await?;
    let mut v = run_json(&row, &counts, &base_url(&headers));
    v.insert("findings".into(), json!(found));
    Ok(Json(Value::Object(v)).into_response())
}

/// `GET /v1/scan/{run_id}/fix` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FixQuery {
    /// One target's findings only.
    pub target: Option<String>,
    /// `auto` (default) or `legacy`: both are security-fix/v1 here.
    #[param(pattern = "^(auto|legacy)$")]
    pub format: Option<String>,
}

/// SECURITY-FIX.md of a run.
#[utoipa::path(get, path = "/v1/scan/{run_id}/fix", tag = "seed 002", params(("run_id" = String, Path), FixQuery), security(("bearer" = [])),
    responses((status = 200, description = "SECURITY-FIX.md", body = String, content_type = "text/markdown"), (status = 400, description = "Invalid input", body = doc::Seed002Error), (status = 401, description = "`unauthorized`", body = doc::Seed002Error), (status = 404, description = "`not found`", body = doc::Seed002Error), (status = 429, description = "`rate limit` with `retry_after`", body = doc::Seed002Error)))]
pub async fn fix(
    State(s): State<S>,
    Authed(t): Authed,
    Path(run_id): Path<String>,
    q: Result<Query<FixQuery>, axum::extract::rejection::QueryRejection>,
) -> R {
    let q = query(q)?;
    if let Some(f) = q
        .format
        .as_deref()
        .filter(|f| !matches!(*f, "auto" | "legacy"))
    {
        return Err(ApiError::BadRequest(format!(
            "format must be auto or legacy, not {f}"
        )));
    }
    let v = ScanView::owned(&s, &t, &run_id).await?;
    let mut open = v.open();
    if let Some(h) = q.target.as_deref() {
        let h = host_of(h)?.to_string();
        open.retain(|p| p.host == h);
    }
    Ok(fix_file(report::security_fix(&v.row, &open)))
}

fn target_json(t: &TargetRow) -> Value {
    json!({
        "id": t.id, "host": t.target, "label": t.label,
        "created_at": stamp(t.created_at),
    })
}

/// The token's targets.
#[utoipa::path(get, path = "/v1/targets", tag = "seed 002", security(("bearer" = [])),
    responses((status = 200, description = "The token's targets", body = doc::HostTargetList), (status = 400, description = "Invalid input", body = doc::Seed002Error), (status = 401, description = "`unauthorized`", body = doc::Seed002Error), (status = 429, description = "`rate limit` with `retry_after`", body = doc::Seed002Error)))]
pub async fn list_targets(State(s): State<S>, Authed(t): Authed) -> R {
    target_list(&s, &t, target_json).await
}

/// Adds a target (scope-checked); 409 `target exists` with its id.
#[utoipa::path(post, path = "/v1/targets", tag = "seed 002", request_body = HostBody, security(("bearer" = [])),
    responses((status = 201, description = "Added", body = doc::HostTarget), (status = 400, description = "Invalid input", body = doc::Seed002Error), (status = 401, description = "`unauthorized`", body = doc::Seed002Error), (status = 403, description = "Outside the token's scope", body = doc::Seed002Error), (status = 409, description = "Conflict", body = doc::Seed002Error), (status = 429, description = "`rate limit` with `retry_after`", body = doc::Seed002Error)))]
pub async fn add_target(
    State(s): State<S>,
    Authed(t): Authed,
    JsonBody(b): JsonBody<HostBody>,
) -> R {
    let (spec, saved) = scoped_target(&s, &t, &b.host).await?;
    if let Some(existing) = saved {
        return Ok((
            StatusCode::CONFLICT,
            Json(json!({"error": "target exists", "target_id": existing.id})),
        )
            .into_response());
    }
    let row = new_target(&t, spec.to_string(), b.label, s.service.now_secs());
    s.service.store().insert_target(&row).await?;
    Ok((StatusCode::CREATED, Json(target_json(&row))).into_response())
}

/// Removes a target (its past runs stay).
#[utoipa::path(delete, path = "/api/targets/{id}", tag = "seed 002", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), (status = 400, description = "Invalid input", body = doc::Seed002Error), (status = 401, description = "`unauthorized`", body = doc::Seed002Error), (status = 404, description = "`not found`", body = doc::Seed002Error), (status = 429, description = "`rate limit` with `retry_after`", body = doc::Seed002Error)))]
pub async fn delete_target(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    delete_owned_target(&s, &t, &id).await
}

/// The last 50 runs, most recent first, with summary counts.
#[utoipa::path(get, path = "/v1/runs", tag = "seed 002", security(("bearer" = [])),
    responses((status = 200, description = "The last 50 runs", body = doc::RunList), (status = 400, description = "Invalid input", body = doc::Seed002Error), (status = 401, description = "`unauthorized`", body = doc::Seed002Error), (status = 429, description = "`rate limit` with `retry_after`", body = doc::Seed002Error)))]
pub async fn runs(State(s): State<S>, Authed(t): Authed, headers: HeaderMap) -> R {
    let (rows, _) = s
        .service
        .store()
        .list_scans(&t.id, None, RUNS_LIMIT, 0)
        .await?;
    let base = base_url(&headers);
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let (counts, _) = findings_of(&s, row, None).await?;
        out.push(Value::Object(run_json(row, &counts, &base)));
    }
    Ok(Json(json!({"runs": out})).into_response())
}

/// `POST /api/monitors` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"target": "198.18.0.6", "frequency": "daily"}))]
pub struct MonitorBody {
    /// URL or host.
    pub target: String,
    /// `daily` or `weekly`.
    pub frequency: String,
    /// E-mail for CRITICAL/HIGH alerts (needs `smtp-url`).
    pub alert_email: Option<String>,
    /// Webhook for CRITICAL/HIGH alerts (public HTTPS).
    pub alert_webhook: Option<String>,
    /// Accepted for compatibility (1 to 3650); Portscope checks ports, not certificates.
    #[schema(minimum = 1, maximum = 3650)]
    pub alert_on_cert_expiry_days: Option<u16>,
}

fn monitor_json(t: &TargetRow) -> Value {
    let frequency = match t.interval_secs {
        Some(86_400) => "daily",
        Some(604_800) => "weekly",
        _ => "custom",
    };
    json!({
        "id": t.id, "target": t.target, "frequency": frequency,
        "interval": t.interval_secs,
        "next_run_at": t.next_run_at.map(stamp),
        "alert_email": t.alert_email, "alert_webhook": t.webhook_url,
        "alert_min_severity": t.alert_min_severity,
    })
}

/// Schedules a target daily or weekly with CRITICAL/HIGH alerts (creates the target if
/// needed, scope-checked; an existing target's schedule and alerts are replaced).
#[utoipa::path(post, path = "/api/monitors", tag = "seed 002", request_body = MonitorBody, security(("bearer" = [])),
    responses((status = 201, description = "Scheduled", body = doc::Monitor), (status = 400, description = "Invalid input", body = doc::Seed002Error), (status = 401, description = "`unauthorized`", body = doc::Seed002Error), (status = 403, description = "Outside the token's scope", body = doc::Seed002Error), (status = 429, description = "`rate limit` with `retry_after`", body = doc::Seed002Error)))]
pub async fn add_monitor(
    State(s): State<S>,
    Authed(t): Authed,
    JsonBody(b): JsonBody<MonitorBody>,
) -> R {
    let interval = match b.frequency.as_str() {
        "daily" => 86_400,
        "weekly" => 604_800,
        f => {
            return Err(ApiError::BadRequest(format!(
                "frequency must be daily or weekly, not {f}"
            )))
        }
    };
    if b.alert_on_cert_expiry_days
        .is_some_and(|d| !(1..=3650).contains(&d))
    {
        return Err(ApiError::BadRequest(
            "alert_on_cert_expiry_days must be between 1 and 3650".into(),
        ));
    }
    let (spec, saved) = scoped_target(&s, &t, &b.target).await?;
    let webhook = match b.alert_webhook.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => Some(s.service.check_webhook(u).await?),
        None => None,
    };
    let email = match b.alert_email.as_deref().filter(|e| !e.is_empty()) {
        Some(e) => Some(s.service.check_email(e)?),
        None => None,
    };
    let now = s.service.now_secs();
    let (mut row, existed) = match saved {
        Some(row) => (row, true),
        None => (new_target(&t, spec.to_string(), None, now), false),
    };
    row.interval_secs = Some(interval);
    row.next_run_at = Some(now.saturating_add(interval));
    row.enabled = 1;
    row.webhook_url = webhook;
    row.alert_email = email;
    row.alert_min_severity = Some(Severity::High.as_str().to_string());
    row.updated_at = now;
    if existed {
        s.service.store().update_target(&row).await?;
    } else {
        s.service.store().insert_target(&row).await?;
    }
    Ok((StatusCode::CREATED, Json(monitor_json(&row))).into_response())
}

/// The token's scheduled targets.
#[utoipa::path(get, path = "/api/monitors", tag = "seed 002", security(("bearer" = [])),
    responses((status = 200, description = "Scheduled targets", body = doc::MonitorList), (status = 400, description = "Invalid input", body = doc::Seed002Error), (status = 401, description = "`unauthorized`", body = doc::Seed002Error), (status = 429, description = "`rate limit` with `retry_after`", body = doc::Seed002Error)))]
pub async fn list_monitors(State(s): State<S>, Authed(t): Authed) -> R {
    let rows = s.service.store().targets(&t.id).await?;
    let monitors: Vec<Value> = rows
        .iter()
        .filter(|r| r.interval_secs.is_some())
        .map(monitor_json)
        .collect();
    Ok(Json(json!({"monitors": monitors})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_urls() {
        let h = |s: &str| host_of(s).map(|t| t.to_string()).map_err(|e| e.to_string());
        assert_eq!(h("https://myapp.com").unwrap(), "myapp.com");
        assert_eq!(h("https://myapp.com:8443/login?x=1").unwrap(), "myapp.com");
        assert_eq!(h("staging.myapp.com").unwrap(), "staging.myapp.com");
        assert_eq!(h("198.18.0.5").unwrap(), "198.18.0.5");
        assert_eq!(h("http://198.18.0.5:8080/").unwrap(), "198.18.0.5");
        assert_eq!(h("http://[2001:2::5]/").unwrap(), "2001:2::5");
        assert_eq!(h("198.18.0.0/28").unwrap(), "198.18.0.0/28");
        assert!(h("").is_err());
        assert!(h("ftp://myapp.com").is_err());
        assert_eq!(stamp(1_775_988_000), "2026-04-12T10:00:00+00:00");
        assert_eq!(json!(run_status(Status::Queued)), json!("running"));
        assert_eq!(json!(run_status(Status::Cancelled)), json!("aborted"));
    }
}
