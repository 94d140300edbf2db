//! The errors of the managed-scan API (`/api/v1`): the same JSON body as the rest of the
//! API, `{"error": CODE, "message": TEXT}`, plus `existingId` on 409. Not the self-scan
//! errors: those keep their own codes in [`crate::http::error`].

use crate::http::error::ApiError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Every way a managed-scan request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    /// 400: invalid body, target, port list or query.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no bearer token, or an unknown or revoked one.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the target is outside the token's scope.
    #[error("{0}")]
    OutOfScope(String),
    /// 404: no such resource (or not this token's).
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists, the method does not.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// 409: a scan of this target is already queued or running.
    #[error("a scan of {target} is already in progress")]
    InProgress {
        /// The target.
        target: String,
        /// The live scan.
        existing_id: String,
    },
    /// 429: a quota or rate limit was hit.
    #[error("{message}")]
    Limited {
        /// `rate_limited`, `monthly_limit`, `concurrent_limit`, `queue_full`.
        code: &'static str,
        /// What and how to proceed.
        message: String,
        /// Seconds until retrying makes sense.
        retry_after: u64,
    },
    /// 503: the engine has been unreachable for longer than the grace period.
    #[error("the scan engine is unavailable; try again later")]
    EngineUnavailable,
    /// 503: the engine refused the scan as busy.
    #[error("the scan engine is busy: {0}")]
    EngineBusy(String),
    /// 500: logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ManagedError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ManagedError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ManagedError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ManagedError::OutOfScope(_) => StatusCode::FORBIDDEN,
            ManagedError::NotFound(_) => StatusCode::NOT_FOUND,
            ManagedError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ManagedError::InProgress { .. } => StatusCode::CONFLICT,
            ManagedError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ManagedError::EngineBusy(_) | ManagedError::EngineUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ManagedError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ManagedError::BadRequest(_) => "bad_request",
            ManagedError::Unauthorized(_) => "unauthorized",
            ManagedError::OutOfScope(_) => "out_of_scope",
            ManagedError::NotFound(_) => "not_found",
            ManagedError::MethodNotAllowed => "method_not_allowed",
            ManagedError::InProgress { .. } => "scan_in_progress",
            ManagedError::Limited { code, .. } => code,
            ManagedError::EngineBusy(_) => "engine_busy",
            ManagedError::EngineUnavailable => "engine_unavailable",
            ManagedError::Internal(_) => "internal",
        }
    }

    /// 404 for a resource kind.
    pub fn not_found(what: &str) -> Self {
        ManagedError::NotFound(format!("{what} not found"))
    }
}

impl IntoResponse for ManagedError {
    fn into_response(self) -> Response {
        let message = match &self {
            ManagedError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error".to_string()
            }
            e => e.to_string(),
        };
        let mut body = json!({ "error": self.code(), "message": message });
        if let ManagedError::InProgress { existing_id, .. } = &self {
            body["existingId"] = json!(existing_id);
        }
        let mut resp = (self.status(), Json(body)).into_response();
        let retry = match &self {
            ManagedError::Limited { retry_after, .. } => Some(*retry_after),
            ManagedError::EngineBusy(_) | ManagedError::EngineUnavailable => Some(30),
            _ => None,
        };
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ManagedError::Unauthorized(_) = &self {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portscope\""),
            );
        }
        resp
    }
}

impl From<sqlx::Error> for ManagedError {
    fn from(e: sqlx::Error) -> Self {
        ManagedError::Internal(format!("database: {e}"))
    }
}

impl From<ApiError> for ManagedError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotFound => ManagedError::not_found("resource"),
            ApiError::RateLimited {
                retry_after,
                message,
            } => ManagedError::Limited {
                code: "rate_limited",
                message,
                retry_after,
            },
            ApiError::BadRequest(m) | ApiError::InvalidTarget(m) => ManagedError::BadRequest(m),
            ApiError::PayloadTooLarge | ApiError::UnsupportedMediaType | ApiError::Timeout => {
                ManagedError::BadRequest(e.to_string())
            }
            ApiError::MethodNotAllowed => ManagedError::MethodNotAllowed,
            other => ManagedError::Internal(other.to_string()),
        }
    }
}
