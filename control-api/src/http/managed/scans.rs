//! `/api/v1/scan...` and `/api/v1/scans...`: start, read, retest, cancel, fix file, list,
//! trigger-all.

use super::json::*;
use super::*;
use super::{owned, query, Authed, JsonBody, ScanView, R, S};
use crate::http::error::ApiError;
use crate::http::error::ErrorBody;
use crate::managed::findings::{self};
use crate::managed::scope::TargetSpec;
use crate::managed::service::{ManagedService, ScanOrder};
use crate::managed::{iso_ms, report};
use crate::model::Status;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// POST `/scan` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    /// IP, CIDR or host name. A scan is at most 536,870,912 probes (addresses x ports:
    /// a /8 on 32 ports, a /16 on 8,192 ports, a deep scan of a /24); more is
    /// `400 bad_request` with the numbers.
    pub target: String,
    /// Domain label.
    pub domain: Option<String>,
    /// `fast` / `deep` / `custom`.
    pub profile: Option<String>,
    /// Port spec.
    pub ports: Option<String>,
}

/// Start a scan of a target in the token's scope.
#[utoipa::path(
    post, path = "/api/v1/scan", tag = "managed scans", request_body = ScanBody, security(("bearer" = [])),
    responses((status = 201, description = "`{id, status: queued, reportUrl}`"), (status = 400, description = "`bad_request`", body = ErrorBody), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 403, description = "`out_of_scope`", body = ErrorBody), (status = 409, description = "`scan_in_progress` with `existingId`"), (status = 429, description = "`monthly_limit`, `concurrent_limit`, `queue_full`, `rate_limited`", body = ErrorBody))
)]
pub async fn post_scan(
    State(s): State<S>,
    Authed(t): Authed,
    JsonBody(b): JsonBody<ScanBody>,
) -> R {
    let row = s
        .service
        .submit(
            &t,
            &ScanOrder {
                target: b.target,
                domain: b.domain,
                profile: b.profile,
                ports: b.ports,
                target_id: None,
            },
        )
        .await?;
    Ok(created(&row))
}

/// A scan: status, timestamps, grade, summary, and the results and findings so far.
#[utoipa::path(
    get, path = "/api/v1/scan/{id}", tag = "managed scans", params(("id" = String, Path, description = "Scan id")), security(("bearer" = [])),
    responses((status = 200, description = "Status, timestamps, grade, summary, results and findings so far"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn get_scan(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    let v = ScanView::owned(&s, &t, &id).await?;
    Ok(Json(scan_json(&v.row, &v.ports, &v.new)).into_response())
}

/// The ports found so far, per host.
#[utoipa::path(
    get, path = "/api/v1/scans/{id}/results", tag = "managed scans", params(("id" = String, Path, description = "Scan id")), security(("bearer" = [])),
    responses((status = 200, description = "Open and filtered ports per host (partial while running)"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn results(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    let row = owned(&s, &t, &id).await?;
    let ports = s.service.store().ports(&row.id).await?;
    Ok(Json(json!({
        "id": row.id, "target": row.target, "status": row.status, "partial": row.status != Status::Complete,
        "results": ports.iter().map(port_json).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// Open, filtered and closed ports per host, and findings by severity.
#[utoipa::path(
    get, path = "/api/v1/scans/{id}/summary", tag = "managed scans", params(("id" = String, Path, description = "Scan id")), security(("bearer" = [])),
    responses((status = 200, description = "Per host: open, filtered, closed; findings by severity"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn summary(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    let v = ScanView::owned(&s, &t, &id).await?;
    let (row, found) = (&v.row, findings::findings(&v.open()));
    Ok(Json(json!({
        "id": row.id, "target": row.target, "status": row.status,
        "portsPerHost": row.port_count,
        "hosts": host_summary(row, &v.ports),
        "findings": findings::counts(&found),
    }))
    .into_response())
}

/// Scan the same target again (the scope is checked again).
#[utoipa::path(
    post, path = "/api/v1/scan/{id}/retest", tag = "managed scans", params(("id" = String, Path, description = "Scan id")), security(("bearer" = [])),
    responses((status = 201, description = "A new scan of the same target (scope re-checked)"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 403, description = "`out_of_scope`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody), (status = 409, description = "`scan_in_progress` with `existingId`"), (status = 429, description = "`monthly_limit`, `concurrent_limit`, `queue_full`, `rate_limited`", body = ErrorBody))
)]
pub async fn retest(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    let old = owned(&s, &t, &id).await?;
    let order = ScanOrder {
        target: old.target.clone(),
        domain: old.domain.clone(),
        profile: Some(old.profile.clone()),
        ports: (old.profile == "custom").then(|| old.ports.clone()),
        target_id: old.target_id.clone(),
    };
    let row = s.service.submit(&t, &order).await?;
    Ok(created(&row))
}

/// Cancel a queued or running scan.
#[utoipa::path(
    post, path = "/api/v1/scan/{id}/cancel", tag = "managed scans", params(("id" = String, Path, description = "Scan id")), security(("bearer" = [])),
    responses((status = 200, description = "`{id, status: cancelled}`"), (status = 400, description = "Already complete, failed or cancelled", body = ErrorBody), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn cancel(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    let row = owned(&s, &t, &id).await?;
    s.service.cancel(&row).await?;
    Ok(Json(json!({"id": row.id, "status": Status::Cancelled.as_str()})).into_response())
}

/// SECURITY-FIX.md for a scan.
#[utoipa::path(
    get, path = "/api/v1/scan/{id}/fix", tag = "managed scans", params(("id" = String, Path, description = "Scan id")), security(("bearer" = [])),
    responses((status = 200, description = "SECURITY-FIX.md (security-fix/v1)", content_type = "text/markdown"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn fix(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    let v = ScanView::owned(&s, &t, &id).await?;
    Ok(fix_file(report::security_fix(&v.row, &v.open())))
}

/// Pagination query.
#[derive(Debug, Deserialize)]
pub struct Page {
    /// Page size (default 50, max 100).
    pub limit: Option<String>,
    /// Rows to skip.
    pub offset: Option<String>,
    /// Exact target filter (scans).
    pub target: Option<String>,
    /// Status filter (alerts).
    pub status: Option<String>,
}

/// A list route's query string, checked: its filters and its page (a 400 otherwise).
#[derive(Debug)]
pub struct Paged {
    /// The filters (and the page as given).
    pub filter: Page,
    /// Page size, 1 to [`MAX_LIMIT`].
    pub limit: i64,
    /// Rows skipped, at most [`MAX_OFFSET`].
    pub offset: i64,
}

impl FromRequestParts<S> for Paged {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        page(Query::from_request_parts(parts, state).await)
    }
}

impl Paged {
    /// The page as JSON: `{key: items, total, limit, offset}`.
    pub(super) fn reply(&self, key: &str, items: Vec<Value>, total: i64) -> Response {
        let (limit, offset) = (self.limit, self.offset);
        Json(json!({key: items, "total": total, "limit": limit, "offset": offset})).into_response()
    }
}

/// The query of a list, its page checked.
fn page(q: Result<Query<Page>, QueryRejection>) -> Result<Paged, ApiError> {
    let p = query(q)?;
    let num =
        |v: &Option<String>, name: &str, default: i64| match v {
            None => Ok(default),
            Some(x) => x.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                ApiError::BadRequest(format!("{name} must be a non-negative integer"))
            }),
        };
    let limit = num(&p.limit, "limit", DEFAULT_LIMIT)?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let offset = num(&p.offset, "offset", 0)?;
    if offset > MAX_OFFSET {
        return Err(ApiError::BadRequest(format!(
            "offset must be at most {MAX_OFFSET}"
        )));
    }
    Ok(Paged {
        filter: p,
        limit,
        offset,
    })
}

/// The token's scans, newest first, with the total.
#[utoipa::path(
    get, path = "/api/v1/scans", tag = "managed scans", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, description = "1-100, default 50"), ("offset" = Option<i64>, Query), ("target" = Option<String>, Query, description = "Exact target")),
    responses((status = 200, description = "`{scans, total, limit, offset}`, newest first"), (status = 400, description = "`bad_request`", body = ErrorBody), (status = 401, description = "`unauthorized`", body = ErrorBody))
)]
pub async fn list_scans(State(s): State<S>, Authed(t): Authed, p: Paged) -> R {
    let target = match &p.filter.target {
        Some(x) => Some(
            TargetSpec::parse(x)
                .map_err(|e| ApiError::BadRequest(format!("invalid target filter: {e}")))?
                .to_string(),
        ),
        None => None,
    };
    let (rows, total) = s
        .service
        .store()
        .list_scans(&t.id, target.as_deref(), p.limit, p.offset)
        .await?;
    let scans: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"id": r.id, "target": r.target, "domain": r.domain, "status": r.status,
                   "grade": r.grade, "created_at": iso_ms(r.created_at_ms)})
        })
        .collect();
    Ok(p.reply("scans", scans, total))
}

/// Scan every enabled target of the token.
#[utoipa::path(
    post, path = "/api/v1/scans/trigger-all", tag = "targets", security(("bearer" = [])),
    responses((status = 200, description = "`{triggered, skipped}`; each target passes the same checks"), (status = 401, description = "`unauthorized`", body = ErrorBody))
)]
pub async fn trigger_all(State(s): State<S>, Authed(t): Authed) -> R {
    let mut triggered = Vec::new();
    let mut skipped = Vec::new();
    for target in s.service.store().targets(&t.id).await? {
        if target.enabled != 1 {
            continue;
        }
        match s
            .service
            .submit(&t, &ManagedService::order_for(&target))
            .await
        {
            Ok(row) => triggered.push(json!({
                "targetId": target.id, "id": row.id, "status": row.status,
                "reportUrl": report_url(&row),
            })),
            Err(e) => {
                let mut v = json!({
                    "targetId": target.id, "status": e.status().as_u16(),
                    "error": e.code(), "message": e.to_string(),
                });
                if let ApiError::InProgress { existing_id, .. } = &e {
                    v["existingId"] = json!(existing_id);
                }
                skipped.push(v);
            }
        }
    }
    Ok(Json(json!({"triggered": triggered, "skipped": skipped})).into_response())
}
