//! Handlers and JSON shapes of `/api/v1` (seeds 001-003) and the public `/report/{id}`.
//! Field names follow seed 003 (`reportUrl`, `gradeScore`, `existingId`, camelCase
//! timestamps; `created_at` in the list as in the seed) and seed 002 for findings.
//! Authentication is the [`Authed`] extractor; every handler only sees its token's rows.

mod alerts;
pub mod error;
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

use self::error::ManagedError;
use crate::managed::store::MScanRow;
use crate::managed::tokens::Token;
use axum::extract::rejection::JsonRejection;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use router::Managed;
use std::sync::Arc;

pub(super) type S = Arc<Managed>;
pub(super) type R = Result<Response, ManagedError>;

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
        .fallback(|| async { ManagedError::NotFound("no such endpoint under /api/v1".into()) })
        .method_not_allowed_fallback(|| async { ManagedError::MethodNotAllowed })
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

pub(super) fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ManagedError> {
    b.map(|Json(v)| v)
        .map_err(|e| ManagedError::BadRequest(format!("invalid JSON body: {}", e.body_text())))
}

pub(crate) async fn owned(s: &S, token: &Token, id: &str) -> Result<MScanRow, ManagedError> {
    s.service
        .store()
        .owned_scan(&token.id, id)
        .await?
        .ok_or_else(|| ManagedError::not_found("scan"))
}
