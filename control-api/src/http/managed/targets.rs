//! `/api/v1/targets...`: saved targets with profile, schedule and monitor.

use super::json::*;
use super::*;
use super::{delete_owned_target, target_list, Authed, JsonBody, R, S};
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::managed::findings::Severity;
use crate::managed::scope::TargetSpec;
use crate::managed::service::{profile_ports, ManagedService};
use crate::managed::store::TargetRow;
use crate::managed::tokens::Token;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

/// Target create / update body (every field optional on update).
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetBody {
    /// IP, CIDR or host name; with its profile or ports at most 536,870,912 probes
    /// (addresses x ports), as a scan.
    pub target: Option<String>,
    /// Label.
    pub label: Option<String>,
    /// `fast` / `deep` / `custom`.
    pub profile: Option<String>,
    /// Custom ports.
    pub ports: Option<String>,
    /// Seconds between scheduled scans; 0 or null = none.
    pub interval: Option<i64>,
    /// Included in the schedule and trigger-all.
    pub enabled: Option<bool>,
    /// Monitor webhook.
    pub webhook_url: Option<String>,
    /// Alerts at or above this severity go to the webhook and e-mail (default HIGH).
    pub alert_min_severity: Option<String>,
    /// Monitor e-mail recipient (needs `smtp-url`).
    pub alert_email: Option<String>,
}

async fn apply_target(
    s: &S,
    t: &Token,
    mut row: TargetRow,
    b: TargetBody,
    now: i64,
) -> Result<TargetRow, ApiError> {
    if let Some(x) = b.target {
        // Scope when the target is set (and again at every scan of it).
        let spec = TargetSpec::parse(&x)?;
        s.service.authorize(t, &spec).await?;
        row.target = spec.to_string();
    }
    if b.label.is_some() {
        row.label = b.label.filter(|l| !l.is_empty());
    }
    match (b.profile, b.ports) {
        (Some(p), ports) => {
            row.profile = p;
            row.ports = ports;
        }
        (None, Some(ports)) => {
            row.profile = "custom".into();
            row.ports = Some(ports);
        }
        (None, None) => {}
    }
    let (profile, _, port_count) = profile_ports(Some(&row.profile), row.ports.as_deref())?;
    if let Ok(TargetSpec::Net(n)) = TargetSpec::parse(&row.target) {
        // Refused now rather than failing at every scheduled run.
        crate::managed::service::check_size(&[n.to_string()], port_count)?;
    }
    row.profile = profile;
    if let Some(i) = b.interval {
        if i != 0 && !(MIN_INTERVAL..=MAX_INTERVAL).contains(&i) {
            return Err(ApiError::BadRequest(format!(
                "interval must be 0 (none) or between {MIN_INTERVAL} and {MAX_INTERVAL} seconds"
            )));
        }
        row.interval_secs = (i > 0).then_some(i);
        row.next_run_at = match row.interval_secs {
            None => None,
            Some(i) => Some(now.checked_add(i).ok_or_else(|| {
                ApiError::BadRequest("interval puts the next run out of range".into())
            })?),
        };
    }
    if let Some(e) = b.enabled {
        row.enabled = i64::from(e);
    }
    if let Some(u) = b.webhook_url {
        row.webhook_url = if u.is_empty() {
            None
        } else {
            Some(s.service.check_webhook(&u).await?)
        };
    }
    if let Some(to) = b.alert_email {
        row.alert_email = if to.is_empty() {
            None
        } else {
            Some(s.service.check_email(&to)?)
        };
    }
    if let Some(sev) = b.alert_min_severity {
        let v = Severity::parse(&sev).ok_or_else(|| {
            ApiError::BadRequest(
                "alertMinSeverity must be CRITICAL, HIGH, MEDIUM, LOW or INFO".into(),
            )
        })?;
        row.alert_min_severity = Some(v.as_str().to_string());
    }
    row.updated_at = now;
    Ok(row)
}

/// Save a target (IP, CIDR or domain) with profile, interval and monitor.
#[utoipa::path(
    post, path = "/api/v1/targets", tag = "targets", request_body = TargetBody, security(("bearer" = [])),
    responses((status = 201, description = "The target"), (status = 400, description = "`bad_request`", body = ErrorBody), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 403, description = "`out_of_scope`", body = ErrorBody))
)]
pub async fn create_target(
    State(s): State<S>,
    Authed(t): Authed,
    JsonBody(b): JsonBody<TargetBody>,
) -> R {
    if b.target.is_none() {
        return Err(ApiError::BadRequest("target is required".into()));
    }
    let now = s.service.now_secs();
    let row = TargetRow::new(&t.id, String::new(), now);
    let row = apply_target(&s, &t, row, b, now).await?;
    s.service.store().insert_target(&row).await?;
    Ok((StatusCode::CREATED, Json(target_json(&row))).into_response())
}

/// The token's targets.
#[utoipa::path(
    get, path = "/api/v1/targets", tag = "targets", security(("bearer" = [])),
    responses((status = 200, description = "`{targets, total}`"), (status = 401, description = "`unauthorized`", body = ErrorBody))
)]
pub async fn list_targets(State(s): State<S>, Authed(t): Authed) -> R {
    target_list(&s, &t, target_json).await
}

pub(super) async fn owned_target(s: &S, t: &Token, id: &str) -> Result<TargetRow, ApiError> {
    let row = s.service.store().target(&t.id, id).await?;
    ApiError::found(row, "target")
}

/// A target.
#[utoipa::path(
    get, path = "/api/v1/targets/{id}", tag = "targets", params(("id" = String, Path, description = "Target id")), security(("bearer" = [])),
    responses((status = 200, description = "The target"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn get_target(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    Ok(Json(target_json(&owned_target(&s, &t, &id).await?)).into_response())
}

/// Change a target (fields given replace the stored ones).
#[utoipa::path(
    patch, path = "/api/v1/targets/{id}", tag = "targets", params(("id" = String, Path, description = "Target id")), request_body = TargetBody, security(("bearer" = [])),
    responses((status = 200, description = "The target (PUT is the same)"), (status = 400, description = "`bad_request`", body = ErrorBody), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 403, description = "`out_of_scope`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn update_target(
    State(s): State<S>,
    Authed(t): Authed,
    Path(id): Path<String>,
    b: Result<JsonBody<TargetBody>, ApiError>,
) -> R {
    let row = owned_target(&s, &t, &id).await?;
    let JsonBody(b) = b?;
    let row = apply_target(&s, &t, row, b, s.service.now_secs()).await?;
    s.service.store().update_target(&row).await?;
    Ok(Json(target_json(&row)).into_response())
}

/// Delete a target.
#[utoipa::path(
    delete, path = "/api/v1/targets/{id}", tag = "targets", params(("id" = String, Path, description = "Target id")), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn delete_target(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    delete_owned_target(&s, &t, &id).await
}

/// Scan a saved target now.
#[utoipa::path(
    post, path = "/api/v1/targets/{id}/scan", tag = "targets", params(("id" = String, Path, description = "Target id")), security(("bearer" = [])),
    responses((status = 201, description = "`{id, status: queued, reportUrl}`"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 403, description = "`out_of_scope`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody), (status = 409, description = "`scan_in_progress` with `existingId`"), (status = 429, description = "`monthly_limit`, `concurrent_limit`, `queue_full`, `rate_limited`", body = ErrorBody))
)]
pub async fn scan_target(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    let target = owned_target(&s, &t, &id).await?;
    let row = s
        .service
        .submit(&t, &ManagedService::order_for(&target))
        .await?;
    Ok(created(&row))
}
