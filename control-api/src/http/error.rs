//! The one error type of the HTTP API, self-scan and managed surfaces alike, and its JSON
//! body `{"error": CODE, "message": TEXT}` (plus `existingId` on a managed 409).
//!
//! User errors carry their status, a stable code (the seeds' `not_available`,
//! `invalid_target`, `rate_limited`, `out_of_scope`, plus ours) and a message saying what to
//! do. Seed 002's routes reshape these bodies in [`crate::http::seed002::errors`]. Internal
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

/// Every way a request can fail, on both surfaces: the self-scan API (`/v1`, `/metrics`) and
/// the managed API (`/api/v1`, `/report`, seed 002's routes).
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
    /// 429 `rate_limited`: a rate limit was hit; retry after that many seconds.
    #[error("{message}")]
    RateLimited {
        /// Seconds until the limiting window resets.
        retry_after: u64,
        /// Which limit.
        message: String,
    },
    /// 429: a managed quota or cap was hit (`monthly_limit`, `concurrent_limit`,
    /// `queue_full`, `too_many_streams`).
    #[error("{message}")]
    Limited {
        /// The quota's code.
        code: &'static str,
        /// What and how to proceed.
        message: String,
        /// Seconds until retrying makes sense.
        retry_after: u64,
    },
    /// 400: malformed request (invalid body, target, port list or query, or an untrusted
    /// `X-Forwarded-For` chain).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no bearer token, or an unknown or revoked one.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the target is outside the token's scope.
    #[error("{0}")]
    OutOfScope(String),
    /// 404: no such path, or no such resource (or not this token's).
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists, the method does not.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: a scan of this target is already queued or running.
    #[error("a scan of {target} is already in progress")]
    InProgress {
        /// The target.
        target: String,
        /// The live scan (`existingId` in the body).
        existing_id: String,
    },
    /// 413: the body is larger than allowed.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 415: a body of the wrong type.
    #[error("unsupported media type; send application/json")]
    UnsupportedMediaType,
    /// 408: the request took too long.
    #[error("request timed out")]
    Timeout,
    /// 503: the server is at a limit (a bare 503 from a layer; the listener's own
    /// connection cap answers the same code). No route answers it: scans wait in the queue
    /// for an engine, so no request waits for one.
    #[error("the server is overloaded; try again shortly")]
    Overloaded,
    /// 500: a bug or an infrastructure failure (logged, not shown).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// 404 of the self-scan API: no such path.
    pub fn no_endpoint() -> Self {
        ApiError::NotFound("no such endpoint; see /v1/openapi.json".into())
    }

    /// 405 of the self-scan API.
    pub fn no_method() -> Self {
        ApiError::MethodNotAllowed(
            "method not allowed on this endpoint; see /v1/openapi.json".into(),
        )
    }

    /// 404 for a kind of resource (`scan not found`).
    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    /// The resource in `row`, or 404 for its kind `what` ([`Self::not_found`]) when there is none.
    pub fn found<T>(row: Option<T>, what: &str) -> Result<T, Self> {
        row.ok_or_else(|| ApiError::not_found(what))
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotAvailable | ApiError::OutOfScope(_) => StatusCode::FORBIDDEN,
            ApiError::InvalidTarget(_) | ApiError::InvalidCallback(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::RateLimited { .. } | ApiError::Limited { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InProgress { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
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
            ApiError::Limited { code, .. } => code,
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::OutOfScope(_) => "out_of_scope",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::InProgress { .. } => "scan_in_progress",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Timeout => "timeout",
            ApiError::Overloaded => "overloaded",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The error a bare status from a layer or axum's defaults stands for.
    pub fn from_status(status: StatusCode) -> ApiError {
        match status {
            StatusCode::NOT_FOUND => ApiError::no_endpoint(),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::no_method(),
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            StatusCode::REQUEST_TIMEOUT => ApiError::Timeout,
            StatusCode::BAD_REQUEST => ApiError::BadRequest("malformed request".into()),
            StatusCode::SERVICE_UNAVAILABLE => ApiError::Overloaded,
            s => ApiError::Internal(format!("unexpected status {s}")),
        }
    }

    /// The JSON body's code and message (`existingId` goes with [`ApiError::json`]).
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

    /// The JSON body: `{"error", "message"}`, plus `existingId` on 409.
    pub fn json(&self) -> serde_json::Value {
        let ErrorBody { error, message } = self.body();
        let mut body = serde_json::json!({ "error": error, "message": message });
        if let ApiError::InProgress { existing_id, .. } = self {
            body["existingId"] = serde_json::json!(existing_id);
        }
        body
    }

    /// Seconds for `Retry-After`, where retrying later makes sense.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after, .. } | ApiError::Limited { retry_after, .. } => {
                Some(*retry_after)
            }
            ApiError::Overloaded => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let mut resp = (self.status(), Json(self.json())).into_response();
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::Unauthorized(_) = &self {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portscope\""),
            );
        }
        resp
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}
