//! Handlers and JSON shapes of `/api/v1` (seeds 001-003) and the public `/report/{id}`.
//! Field names follow seed 003 (`reportUrl`, `gradeScore`, `existingId`, camelCase
//! timestamps; `created_at` in the list as in the seed) and seed 002 for findings.
//! Authentication is the [`Authed`] extractor; every handler only sees its token's rows.

use super::error::ManagedError;
use super::findings::{self, OpenPort, Severity};
use super::scope::TargetSpec;
use super::service::{profile_ports, ManagedService, ScanOrder};
use super::store::{AlertRow, MPortRow, MScanRow, TargetRow};
use super::tokens::Token;
use super::{iso_ms, report, Managed};
use crate::error::ErrorBody;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

type S = Arc<Managed>;
type R = Result<Response, ManagedError>;

/// Largest page.
pub const MAX_LIMIT: i64 = 100;
/// Default page.
pub const DEFAULT_LIMIT: i64 = 50;
/// Shortest schedule interval, seconds.
pub const MIN_INTERVAL: i64 = 300;
/// Longest schedule interval, seconds (366 days): larger values would push the next run
/// past any useful horizon and, unchecked, overflow the time arithmetic.
pub const MAX_INTERVAL: i64 = 366 * 86_400;
/// Largest `offset` of a page.
pub const MAX_OFFSET: i64 = 1_000_000_000;

/// The `/api/v1` routes (nested by the caller).
pub fn routes() -> Router<S> {
    Router::new()
        .route("/scan", post(post_scan))
        .route("/scan/{id}", get(get_scan))
        .route("/scan/{id}/retest", post(retest))
        .route("/scan/{id}/cancel", post(cancel))
        .route("/scan/{id}/fix", get(fix))
        .route("/scans", get(list_scans))
        .route("/scans/trigger-all", post(trigger_all))
        .route("/scans/{id}", get(get_scan))
        .route("/scans/{id}/results", get(results))
        .route("/scans/{id}/summary", get(summary))
        .route("/scans/{id}/fix", get(fix))
        .route("/targets", get(list_targets).post(create_target))
        .route(
            "/targets/{id}",
            get(get_target)
                .put(update_target)
                .patch(update_target)
                .delete(delete_target),
        )
        .route("/targets/{id}/scan", post(scan_target))
        .route("/alerts", get(list_alerts))
        .route("/alerts/{id}/acknowledge", post(acknowledge))
        .route("/alerts/{id}/resolve", post(resolve))
        .route("/openapi.json", get(openapi))
        .fallback(|| async { ManagedError::NotFound("no such endpoint under /api/v1".into()) })
        .method_not_allowed_fallback(|| async { ManagedError::MethodNotAllowed })
}

/// The OpenAPI document of the managed-scan API (no token needed).
pub async fn openapi() -> Response {
    use utoipa::OpenApi;
    Json(super::openapi::ManagedApiDoc::openapi()).into_response()
}

/// Routes without a bearer token.
pub fn public_routes() -> Router<S> {
    Router::new().route("/report/{id}", get(report_page))
}

/// The authenticated token of a request.
#[derive(Debug, Clone)]
pub struct Authed(pub Token);

impl FromRequestParts<S> for Authed {
    type Rejection = ManagedError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| {
                ManagedError::Unauthorized(
                    "missing API token: send `Authorization: Bearer <token>`".into(),
                )
            })?
            .to_str()
            .map_err(|_| ManagedError::Unauthorized("invalid API token".into()))?;
        let (scheme, secret) = raw.trim().split_once(' ').unwrap_or((raw, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ManagedError::Unauthorized(
                "unsupported authorization scheme: use `Bearer <token>`".into(),
            ));
        }
        state
            .service
            .authenticate(secret.trim())
            .await?
            .map(Authed)
            .ok_or_else(|| ManagedError::Unauthorized("invalid or revoked API token".into()))
    }
}

fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ManagedError> {
    b.map(|Json(v)| v)
        .map_err(|e| ManagedError::BadRequest(format!("invalid JSON body: {}", e.body_text())))
}

/// `/report/{id}?key=...`.
pub fn report_url(r: &MScanRow) -> String {
    format!("/report/{}?key={}", r.id, r.report_key)
}

fn opt_iso(secs: Option<i64>) -> Value {
    secs.map_or(Value::Null, |s| json!(iso_ms(s * 1000)))
}

/// Open ports of a scan; `new` lists the (host, port) pairs that opened since the previous
/// scan of the target (its `new_open_port` alerts).
pub(super) fn open_ports(ports: &[MPortRow], new: &[(String, i64)]) -> Vec<OpenPort> {
    ports
        .iter()
        .filter(|p| p.state == "open")
        .map(|p| OpenPort {
            host: p.host.clone(),
            port: u16::try_from(p.port).unwrap_or(0),
            banner: p.banner.clone(),
            new: new.iter().any(|(h, q)| *h == p.host && *q == p.port),
        })
        .collect()
}

/// The (host, port) pairs a scan found newly open (from its alerts).
pub(crate) async fn newly_open(s: &S, scan: &str) -> Result<Vec<(String, i64)>, ManagedError> {
    Ok(s.service
        .store()
        .alerts_of_scan(scan)
        .await?
        .into_iter()
        .filter(|a| a.kind == "new_open_port")
        .map(|a| (a.host, a.port))
        .collect())
}

fn port_json(p: &MPortRow) -> Value {
    let port = u16::try_from(p.port).unwrap_or(0);
    json!({
        "host": p.host, "port": port, "state": p.state,
        "service": crate::model::service_name(port), "banner": p.banner,
    })
}

/// Per host: open, filtered and (once complete) closed counts. Hosts of a CIDR appear
/// when they had an open or filtered port; named addresses always appear.
pub fn host_summary(row: &MScanRow, ports: &[MPortRow]) -> Vec<Value> {
    let mut hosts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for a in row.addresses.split(',').filter(|a| !a.contains('/')) {
        hosts.entry(a.to_string()).or_default();
    }
    for p in ports {
        let e = hosts.entry(p.host.clone()).or_default();
        if p.state == "open" {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    hosts
        .into_iter()
        .map(|(host, (open, filtered))| {
            let closed =
                (row.status == "complete").then(|| (row.port_count - open - filtered).max(0));
            json!({"host": host, "open": open, "filtered": filtered, "closed": closed})
        })
        .collect()
}

/// The full scan view (GET `/scan/{id}`), partial while running.
pub fn scan_json(row: &MScanRow, ports: &[MPortRow], new: &[(String, i64)]) -> Value {
    let found = findings::findings(&open_ports(ports, new));
    let counts = findings::counts(&found);
    let open = ports.iter().filter(|p| p.state == "open").count();
    let filtered = ports.len() - open;
    let complete = row.status == "complete";
    json!({
        "id": row.id,
        "target": row.target,
        "domain": row.domain,
        "status": row.status,
        "profile": row.profile,
        "ports": row.ports,
        "addresses": row.addresses.split(',').collect::<Vec<_>>(),
        "grade": row.grade,
        "gradeScore": row.grade_score,
        "reportUrl": report_url(row),
        "fixUrl": format!("/api/v1/scan/{}/fix", row.id),
        "createdAt": iso_ms(row.created_at_ms),
        "startedAt": opt_iso(row.started_at),
        "completedAt": opt_iso(row.completed_at),
        "error": row.error,
        "progress": {"chunksComplete": row.chunks_complete, "totalChunks": row.total_chunks},
        "partial": !complete,
        "summary": {
            "hosts": host_summary(row, ports).len(),
            "open": open,
            "filtered": filtered,
            "findings": counts,
        },
        "results": ports.iter().map(port_json).collect::<Vec<_>>(),
        "findings": found,
    })
}

fn queued_json(row: &MScanRow) -> Value {
    json!({"id": row.id, "status": row.status, "reportUrl": report_url(row)})
}

fn created(row: &MScanRow) -> Response {
    (StatusCode::CREATED, Json(queued_json(row))).into_response()
}

/// Alert JSON.
pub fn alert_json(a: &AlertRow) -> Value {
    json!({
        "id": a.id, "scanId": a.scan_id, "targetId": a.target_id, "target": a.target,
        "host": a.host, "port": a.port, "type": a.kind, "severity": a.severity,
        "message": a.message, "oldValue": a.old_value, "newValue": a.new_value,
        "status": a.status, "createdAt": iso_ms(a.created_at * 1000),
        "acknowledgedAt": opt_iso(a.acknowledged_at), "resolvedAt": opt_iso(a.resolved_at),
    })
}

fn target_json(t: &TargetRow) -> Value {
    json!({
        "id": t.id, "target": t.target, "label": t.label, "profile": t.profile,
        "ports": t.ports, "interval": t.interval_secs, "enabled": t.enabled == 1,
        "nextRunAt": opt_iso(t.next_run_at), "webhookUrl": t.webhook_url,
        "alertMinSeverity": t.alert_min_severity, "alertEmail": t.alert_email,
        "createdAt": iso_ms(t.created_at * 1000), "updatedAt": iso_ms(t.updated_at * 1000),
    })
}

pub(crate) async fn owned(s: &S, token: &Token, id: &str) -> Result<MScanRow, ManagedError> {
    s.service
        .store()
        .owned_scan(&token.id, id)
        .await?
        .ok_or_else(|| ManagedError::not_found("scan"))
}

/// POST `/scan` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    /// IP, CIDR or host name.
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
    responses((status = 201, description = "`{id, status: queued, reportUrl}`"), (status = 400, description = "`bad_request`", body = ErrorBody), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 403, description = "`out_of_scope`", body = ErrorBody), (status = 409, description = "`scan_in_progress` with `existingId`"), (status = 429, description = "`monthly_limit`, `concurrent_limit`, `queue_full`, `rate_limited`", body = ErrorBody),
        (status = 503, description = "`engine_unavailable`", body = ErrorBody))
)]
pub async fn post_scan(
    State(s): State<S>,
    Authed(t): Authed,
    b: Result<Json<ScanBody>, JsonRejection>,
) -> R {
    let b = body(b)?;
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
    let row = owned(&s, &t, &id).await?;
    let ports = s.service.store().ports(&row.id).await?;
    let new = newly_open(&s, &row.id).await?;
    Ok(Json(scan_json(&row, &ports, &new)).into_response())
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
        "id": row.id, "target": row.target, "status": row.status, "partial": row.status != "complete",
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
    let row = owned(&s, &t, &id).await?;
    let ports = s.service.store().ports(&row.id).await?;
    let new = newly_open(&s, &row.id).await?;
    let found = findings::findings(&open_ports(&ports, &new));
    Ok(Json(json!({
        "id": row.id, "target": row.target, "status": row.status,
        "portsPerHost": row.port_count,
        "hosts": host_summary(&row, &ports),
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
    Ok(Json(json!({"id": row.id, "status": "cancelled"})).into_response())
}

/// SECURITY-FIX.md for a scan.
#[utoipa::path(
    get, path = "/api/v1/scan/{id}/fix", tag = "managed scans", params(("id" = String, Path, description = "Scan id")), security(("bearer" = [])),
    responses((status = 200, description = "SECURITY-FIX.md (security-fix/v1)", content_type = "text/markdown"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn fix(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    let row = owned(&s, &t, &id).await?;
    let ports = s.service.store().ports(&row.id).await?;
    let new = newly_open(&s, &row.id).await?;
    let text = report::security_fix(&row, &open_ports(&ports, &new));
    Ok((
        [
            (header::CONTENT_TYPE, "text/markdown; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"SECURITY-FIX.md\"",
            ),
        ],
        text,
    )
        .into_response())
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

fn page(p: &Page) -> Result<(i64, i64), ManagedError> {
    let num = |v: &Option<String>, name: &str, default: i64| match v {
        None => Ok(default),
        Some(x) => x.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ManagedError::BadRequest(format!("{name} must be a non-negative integer"))
        }),
    };
    let limit = num(&p.limit, "limit", DEFAULT_LIMIT)?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ManagedError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let offset = num(&p.offset, "offset", 0)?;
    if offset > MAX_OFFSET {
        return Err(ManagedError::BadRequest(format!(
            "offset must be at most {MAX_OFFSET}"
        )));
    }
    Ok((limit, offset))
}

/// The token's scans, newest first, with the total.
#[utoipa::path(
    get, path = "/api/v1/scans", tag = "managed scans", security(("bearer" = [])),
    params(("limit" = Option<i64>, Query, description = "1-100, default 50"), ("offset" = Option<i64>, Query), ("target" = Option<String>, Query, description = "Exact target")),
    responses((status = 200, description = "`{scans, total, limit, offset}`, newest first"), (status = 400, description = "`bad_request`", body = ErrorBody), (status = 401, description = "`unauthorized`", body = ErrorBody))
)]
pub async fn list_scans(
    State(s): State<S>,
    Authed(t): Authed,
    q: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> R {
    let Query(q) = q.map_err(|e| ManagedError::BadRequest(e.body_text()))?;
    let (limit, offset) = page(&q)?;
    let target = match &q.target {
        Some(x) => Some(
            TargetSpec::parse(x)
                .map_err(|e| ManagedError::BadRequest(format!("invalid target filter: {e}")))?
                .to_string(),
        ),
        None => None,
    };
    let (rows, total) = s
        .service
        .store()
        .list_scans(&t.id, target.as_deref(), limit, offset)
        .await?;
    let scans: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"id": r.id, "target": r.target, "domain": r.domain, "status": r.status,
                   "grade": r.grade, "created_at": iso_ms(r.created_at_ms)})
        })
        .collect();
    Ok(
        Json(json!({"scans": scans, "total": total, "limit": limit, "offset": offset}))
            .into_response(),
    )
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
                if let ManagedError::InProgress { existing_id, .. } = &e {
                    v["existingId"] = json!(existing_id);
                }
                skipped.push(v);
            }
        }
    }
    Ok(Json(json!({"triggered": triggered, "skipped": skipped})).into_response())
}

/// Target create / update body (every field optional on update).
#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetBody {
    /// IP, CIDR or host name.
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
) -> Result<TargetRow, ManagedError> {
    if let Some(x) = b.target {
        // Scope when the target is set (and again at every scan of it).
        let spec = TargetSpec::parse(&x).map_err(ManagedError::BadRequest)?;
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
        super::service::check_size(&[n.to_string()], port_count)?;
    }
    row.profile = profile;
    if let Some(i) = b.interval {
        if i != 0 && !(MIN_INTERVAL..=MAX_INTERVAL).contains(&i) {
            return Err(ManagedError::BadRequest(format!(
                "interval must be 0 (none) or between {MIN_INTERVAL} and {MAX_INTERVAL} seconds"
            )));
        }
        row.interval_secs = (i > 0).then_some(i);
        row.next_run_at = match row.interval_secs {
            None => None,
            Some(i) => Some(now.checked_add(i).ok_or_else(|| {
                ManagedError::BadRequest("interval puts the next run out of range".into())
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
            ManagedError::BadRequest(
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
    b: Result<Json<TargetBody>, JsonRejection>,
) -> R {
    let b = body(b)?;
    if b.target.is_none() {
        return Err(ManagedError::BadRequest("target is required".into()));
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
    let rows = s.service.store().targets(&t.id).await?;
    Ok(Json(json!({
        "targets": rows.iter().map(target_json).collect::<Vec<_>>(),
        "total": rows.len(),
    }))
    .into_response())
}

pub(super) async fn owned_target(s: &S, t: &Token, id: &str) -> Result<TargetRow, ManagedError> {
    s.service
        .store()
        .target(&t.id, id)
        .await?
        .ok_or_else(|| ManagedError::not_found("target"))
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
    b: Result<Json<TargetBody>, JsonRejection>,
) -> R {
    let row = owned_target(&s, &t, &id).await?;
    let b = body(b)?;
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
    if !s.service.store().delete_target(&t.id, &id).await? {
        return Err(ManagedError::not_found("target"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
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

/// Alerts raised by changes between scans, newest first.
#[utoipa::path(
    get, path = "/api/v1/alerts", tag = "alerts", security(("bearer" = [])),
    params(("status" = Option<String>, Query, description = "open, acknowledged, resolved"), ("limit" = Option<i64>, Query), ("offset" = Option<i64>, Query)),
    responses((status = 200, description = "`{alerts, total, limit, offset}`"), (status = 400, description = "`bad_request`", body = ErrorBody), (status = 401, description = "`unauthorized`", body = ErrorBody))
)]
pub async fn list_alerts(
    State(s): State<S>,
    Authed(t): Authed,
    q: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> R {
    let Query(q) = q.map_err(|e| ManagedError::BadRequest(e.body_text()))?;
    let (limit, offset) = page(&q)?;
    if let Some(st) = &q.status {
        if !["open", "acknowledged", "resolved"].contains(&st.as_str()) {
            return Err(ManagedError::BadRequest(
                "status must be open, acknowledged or resolved".into(),
            ));
        }
    }
    let (rows, total) = s
        .service
        .store()
        .alerts(&t.id, q.status.as_deref(), limit, offset)
        .await?;
    Ok(Json(json!({
        "alerts": rows.iter().map(alert_json).collect::<Vec<_>>(),
        "total": total, "limit": limit, "offset": offset,
    }))
    .into_response())
}

async fn set_alert(s: &S, t: &Token, id: &str, status: &str) -> R {
    let row = s
        .service
        .store()
        .set_alert(&t.id, id, status, s.service.now_secs())
        .await?
        .ok_or_else(|| ManagedError::not_found("alert"))?;
    Ok(Json(alert_json(&row)).into_response())
}

/// Acknowledge an alert.
#[utoipa::path(
    post, path = "/api/v1/alerts/{id}/acknowledge", tag = "alerts", params(("id" = String, Path, description = "Alert id")), security(("bearer" = [])),
    responses((status = 200, description = "The alert"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn acknowledge(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    set_alert(&s, &t, &id, "acknowledged").await
}

/// Resolve an alert.
#[utoipa::path(
    post, path = "/api/v1/alerts/{id}/resolve", tag = "alerts", params(("id" = String, Path, description = "Alert id")), security(("bearer" = [])),
    responses((status = 200, description = "The alert"), (status = 401, description = "`unauthorized`", body = ErrorBody), (status = 404, description = "`not_found` (or not this token's)", body = ErrorBody))
)]
pub async fn resolve(State(s): State<S>, Authed(t): Authed, Path(id): Path<String>) -> R {
    set_alert(&s, &t, &id, "resolved").await
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
    let missing = || ManagedError::NotFound("report not found (wrong or missing key)".into());
    let row = s.service.store().scan(&id).await?.ok_or_else(missing)?;
    let key = q.key.unwrap_or_default();
    if !bool::from(key.as_bytes().ct_eq(row.report_key.as_bytes())) {
        return Err(missing());
    }
    let ports = s.service.store().ports(&row.id).await?;
    let alerts = s.service.store().alerts_of_scan(&row.id).await?;
    let new = newly_open(&s, &row.id).await?;
    let history = super::chart::history(s.service.store(), &row).await?;
    let html = report::html(&row, &ports, &open_ports(&ports, &new), &alerts, &history);
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
