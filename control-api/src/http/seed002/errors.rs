//! Seed 002's error shapes on its surface (a layer over the managed routes): the managed
//! errors every layer produces (`{error: CODE, message}`) become seed 002's bodies.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::{json, Value};

/// Whether a path belongs to this surface (its errors get seed 002's shapes).
pub fn is_seed002_path(path: &str) -> bool {
    path == "/v1/scan"
        || path.starts_with("/v1/scan/")
        || path == "/v1/targets"
        || path == "/v1/runs"
        || path == "/api/monitors"
        || path.starts_with("/api/targets/")
}

/// Seed 002's error shapes for this surface, from the managed errors (`{error: CODE,
/// message}`) every layer produces: 400/403 `{"error": MESSAGE}`, 401
/// `{"error": "unauthorized"}`, 404 `{"error": "not found"}`, 409 on a live scan
/// `{"error": "scan in progress", "run_id"}`, a monthly quota 402 `{"error": MESSAGE}`,
/// other 429s `{"error": "rate limit", "retry_after": SECONDS}`, 5xx `{"error":
/// "internal"}` (503 keeps its message). Headers (`Retry-After`, `RateLimit-*`) stay.
pub async fn reshape(req: Request, next: Next) -> Response {
    if !is_seed002_path(req.uri().path()) {
        return next.run(req).await;
    }
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (mut parts, b) = resp.into_parts();
    let bytes = axum::body::to_bytes(b, 64 * 1024).await.unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if v.get("target_id").is_some() {
        // Already seed 002's (`target exists`).
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(bytes));
    }
    let code = v.get("error").and_then(Value::as_str).unwrap_or_default();
    let message = v.get("message").and_then(Value::as_str).unwrap_or(code);
    let retry_after = parts
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<u64>().ok())
        .unwrap_or(60);
    let (status, body) = match (status, code) {
        (StatusCode::UNAUTHORIZED, _) => (status, json!({"error": "unauthorized"})),
        (StatusCode::NOT_FOUND, _) => (status, json!({"error": "not found"})),
        (StatusCode::CONFLICT, _) => (
            status,
            json!({"error": "scan in progress", "run_id": v.get("existingId")}),
        ),
        (StatusCode::TOO_MANY_REQUESTS, "monthly_limit") => {
            (StatusCode::PAYMENT_REQUIRED, json!({"error": message}))
        }
        (StatusCode::TOO_MANY_REQUESTS, _) => (
            status,
            json!({"error": "rate limit", "retry_after": retry_after}),
        ),
        (StatusCode::SERVICE_UNAVAILABLE, _) => (status, json!({"error": message})),
        (s, _) if s.is_server_error() => (s, json!({"error": "internal"})),
        (s, _) => (s, json!({"error": message})),
    };
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body.to_string()))
}
