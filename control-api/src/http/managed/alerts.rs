//! `/api/v1/alerts...` and the public `/report/{id}` page.

use super::scans::Paged;
use super::*;
use super::{Authed, ScanView, R, S};
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::managed::alerts::AlertStatus;
use crate::managed::report;
use crate::managed::tokens::Token;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

/// Alerts raised by changes between scans, newest first.
#[utoipa::path(
    get, path = "/api/v1/alerts", tag = "alerts", security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "open, acknowledged, resolved"), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, description = "`{alerts, total, limit, offset}`"), (status = 400, description = "`bad_request`", body = ErrorBody), (status = 401, description = "`unauthorized`", body = ErrorBody))
)]
pub async fn list_alerts(State(s): State<S>, Authed(t): Authed, p: Paged) -> R {
    if let Some(st) = &p.filter.status {
        if AlertStatus::parse(st).is_none() {
            return Err(ApiError::BadRequest(
                "status must be open, acknowledged or resolved".into(),
            ));
        }
    }
    let (rows, total) = s
        .service
        .store()
        .alerts(&t.id, p.filter.status.as_deref(), p.limit, p.offset)
        .await?;
    Ok(p.reply("alerts", rows.iter().map(alert_json).collect(), total))
}

async fn set_alert(s: &S, t: &Token, id: &str, status: AlertStatus) -> R {
    let row = s
        .service
        .store()
        .set_alert(&t.id, id, status, s.service.now_secs())
        .await?
        .ok_or_else(|| ApiError::not_found("alert"))?;
    Ok(Json(alert_json(&row)).into_response())
}

/// Acknowledge an alert.
#[utoipa::path(
    post, path = "/api/v1/alerts/{id}/acknowledge", tag = "alerts", params(("id" = String, Path, description = "Alert id")), security(("bearer" = [])),
    responses((status = 200, description = "The alert"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn acknowledge(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    set_alert(&s, &t, &id, AlertStatus::Acknowledged).await
}

/// Resolve an alert.
#[utoipa::path(
    post, path = "/api/v1/alerts/{id}/resolve", tag = "alerts", params(("id" = String, Path, description = "Alert id")), security(("bearer" = [])),
    responses((status = 200, description = "The alert"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn resolve(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    set_alert(&s, &t, &id, AlertStatus::Resolved).await
}

/// Report query.
#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    /// The per-scan key.
    pub key: Option<String>,
}

/// The HTML report of a scan, behind its per-scan key.
#[utoipa::path(
    get, path = "/report/{id}", tag = "managed scans", params(("id" = String, Path, description = "Scan id"), ("key" = String, Query, description = "The per-scan key of reportUrl")),
    responses((status = 200, description = "HTML report", content_type = "text/html"), (status = 404, description = "Unknown scan or wrong key", body = ErrorBody))
)]
pub async fn report_page(
    State(s): State<S>,
    Path(id): Path<String>,
    Query(q): Query<KeyQuery>,
) -> R {
    use subtle::ConstantTimeEq;
    let missing = || ApiError::NotFound("report not found (wrong or missing key)".into());
    let row = s.service.store().scan(&id).await?.ok_or_else(missing)?;
    let key = q.key.unwrap_or_default();
    if !bool::from(key.as_bytes().ct_eq(row.report_key.as_bytes())) {
        return Err(missing());
    }
    let alerts = s.service.store().alerts_of_scan(&row.id).await?;
    let history = crate::managed::chart::history(s.service.store(), &row).await?;
    let v = ScanView::of(&s, row).await?;
    let html = report::html(&v.row, &v.ports, &v.open(), &alerts, &history);
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        html,
    )
        .into_response())
}
