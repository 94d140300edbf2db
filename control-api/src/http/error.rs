//! The one error type of the HTTP API and its JSON body `{"error": CODE, "message": TEXT}`.
//!
//! User errors carry their status, a stable code (the seed's `not_available`,
//! `invalid_target`, `rate_limited`, plus ours) and a message saying what to do. Internal
//! errors are logged and answered with a generic body; nothing internal leaks.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `rate_limited`.
    #[schema(example = "rate_limited")]
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 403: the address is on the opt-out list.
    #[error("this address is opted out of scanning or restricted")]
    NotAvailable,
    /// 422: the address is not a scannable public address.
    #[error("{0}")]
    InvalidTarget(String),
    /// 422: the `X-Callback-Url` is not acceptable.
    #[error("{0}")]
    InvalidCallback(String),
    /// 429: a limit was hit; retry after that many seconds.
    #[error("{message}")]
    RateLimited {
        /// Seconds until the limiting window resets.
        retry_after: u64,
        /// Which limit.
        message: String,
    },
    /// 400: malformed request (e.g. an untrusted `X-Forwarded-For` chain).
    #[error("{0}")]
    BadRequest(String),
    /// 404: no such path.
    #[error("no such endpoint; see /v1/openapi.json")]
    NotFound,
    /// 405: the path exists, the method does not.
    #[error("method not allowed on this endpoint; see /v1/openapi.json")]
    MethodNotAllowed,
    /// 413: the body is larger than allowed.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 415: a body of the wrong type.
    #[error("unsupported media type; send application/json")]
    UnsupportedMediaType,
    /// 408: the request took too long.
    #[error("request timed out")]
    Timeout,
    /// 503: the engine has been unreachable longer than the grace period.
    #[error("the scan engine is unavailable; try again later")]
    EngineUnavailable,
    /// 503: the engine refused the scan for load.
    #[error("the scan engine is busy: {0}")]
    EngineBusy(String),
    /// 500: a bug or an infrastructure failure (logged, not shown).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotAvailable => StatusCode::FORBIDDEN,
            ApiError::InvalidTarget(_) | ApiError::InvalidCallback(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::EngineUnavailable | ApiError::EngineBusy(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable code for the `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::NotAvailable => "not_available",
            ApiError::InvalidTarget(_) => "invalid_target",
            ApiError::InvalidCallback(_) => "invalid_callback",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Timeout => "timeout",
            ApiError::EngineUnavailable => "engine_unavailable",
            ApiError::EngineBusy(_) => "engine_busy",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The error a bare status from a layer or axum's defaults stands for.
    pub fn from_status(status: StatusCode) -> ApiError {
        match status {
            StatusCode::NOT_FOUND => ApiError::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            StatusCode::REQUEST_TIMEOUT => ApiError::Timeout,
            StatusCode::BAD_REQUEST => ApiError::BadRequest("malformed request".into()),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::EngineBusy("overloaded".into()),
            s => ApiError::Internal(format!("unexpected status {s}")),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        let message = match self {
            ApiError::Internal(_) => "internal error".to_string(),
            e => e.to_string(),
        };
        ErrorBody {
            error: self.code().to_string(),
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let mut resp = (self.status(), Json(self.body())).into_response();
        let retry = match &self {
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            ApiError::EngineUnavailable | ApiError::EngineBusy(_) => Some(30),
            _ => None,
        };
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}
