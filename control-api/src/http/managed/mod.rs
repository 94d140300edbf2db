//! Handlers and JSON shapes of `/api/v1` (seeds 001-003) and the public `/report/{id}`.
//! Field names follow seed 003 (`reportUrl`, `gradeScore`, `existingId`, camelCase
//! timestamps; `created_at` in the list as in the seed) and seed 002 for findings.
//! Authentication is the [`Authed`] extractor; every handler only sees its token's rows.

mod alerts;
mod json;
pub mod openapi;
pub mod router;
mod scans;
pub mod schema;
mod targets;

pub use alerts::*;
pub use json::*;
pub use scans::*;
pub use targets::*;

use crate::http::error::ApiError;
use crate::managed::store::{MPortRow, MScanRow, TargetRow};
use crate::managed::tokens::Token;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::Query;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use router::Managed;
use serde_json::Value;
use std::sync::Arc;

pub(super) type S = Arc<Managed>;
pub(super) type R = Result<Response, ApiError>;

/// Largest page.
pub const MAX_LIMIT: i64 = 100;
/// Default page.
pub const DEFAULT_LIMIT: i64 = 50;
pub use crate::managed::{MAX_INTERVAL, MIN_INTERVAL};
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
        .fallback(|| async { ApiError::NotFound("no such endpoint under /api/v1".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
        })
}

/// The OpenAPI document of the managed-scan API (no token needed).
pub async fn openapi() -> Response {
    use utoipa::OpenApi;
    Json(openapi::ManagedApiDoc::openapi()).into_response()
}

/// Routes without a bearer token.
pub fn public_routes() -> Router<S> {
    Router::new().route("/report/{id}", get(report_page))
}

/// The authenticated token of a request.
#[derive(Debug, Clone)]
pub struct Authed(pub Token);

impl FromRequestParts<S> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| {
                ApiError::Unauthorized(
                    "missing API token: send `Authorization: Bearer <token>`".into(),
                )
            })?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("invalid API token".into()))?;
        let (scheme, secret) = raw.trim().split_once(' ').unwrap_or((raw, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ApiError::Unauthorized(
                "unsupported authorization scheme: use `Bearer <token>`".into(),
            ));
        }
        state
            .service
            .authenticate(secret.trim())
            .await?
            .map(Authed)
            .ok_or_else(|| ApiError::Unauthorized("invalid or revoked API token".into()))
    }
}

/// A JSON body (the last argument of a handler that takes one), or 400 saying why it is
/// not one.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, St: Send + Sync> FromRequest<St> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &St) -> Result<Self, ApiError> {
        Json::from_request(req, state)
            .await
            .map(|Json(v)| JsonBody(v))
            .map_err(|e: JsonRejection| {
                ApiError::BadRequest(format!("invalid JSON body: {}", e.body_text()))
            })
    }
}

/// A query string, or 400 saying why it does not parse.
pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

pub(crate) async fn owned(s: &S, token: &Token, id: &str) -> Result<MScanRow, ApiError> {
    let row = s.service.store().owned_scan(&token.id, id).await?;
    ApiError::found(row, "scan")
}

/// A scan of the token with its ports and the (host, port) pairs it found newly open.
pub(crate) struct ScanView {
    /// The scan.
    pub row: MScanRow,
    /// Its ports so far.
    pub ports: Vec<MPortRow>,
    /// Newly open since the previous scan of the target.
    pub new: Vec<(String, i64)>,
}

impl ScanView {
    /// The token's scan `id` (404 otherwise) with its ports and new ports.
    pub(crate) async fn owned(s: &S, token: &Token, id: &str) -> Result<ScanView, ApiError> {
        let row = owned(s, token, id).await?;
        Self::of(s, row).await
    }

    /// `row` with its ports and new ports.
    pub(crate) async fn of(s: &S, row: MScanRow) -> Result<ScanView, ApiError> {
        let ports = s.service.store().ports(&row.id).await?;
        let new = newly_open(s, &row.id).await?;
        Ok(ScanView { row, ports, new })
    }

    /// The open ports, new ones marked.
    pub(crate) fn open(&self) -> Vec<crate::managed::findings::OpenPort> {
        open_ports(&self.ports, &self.new)
    }
}

/// SECURITY-FIX.md as an attachment.
pub(crate) fn fix_file(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/markdown; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"SECURITY-FIX.md\"",
            ),
        ],
        text,
    )
        .into_response()
}

/// Deletes the token's target `id` (404 when it has none such).
pub(crate) async fn delete_owned_target(s: &S, token: &Token, id: &str) -> R {
    if !s.service.store().delete_target(&token.id, id).await? {
        return Err(ApiError::not_found("target"));
    }
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

/// The token's targets as `{targets, total}`, each shaped by `shape`.
pub(crate) async fn target_list(s: &S, token: &Token, shape: fn(&TargetRow) -> Value) -> R {
    let rows = s.service.store().targets(&token.id).await?;
    Ok(Json(serde_json::json!({
        "targets": rows.iter().map(shape).collect::<Vec<_>>(),
        "total": rows.len(),
    }))
    .into_response())
}
