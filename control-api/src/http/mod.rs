//! The HTTP surface: `fn app(state) -> Router`, the handlers of `/v1/fast` and `/v1/deep`,
//! and the layers every request passes (metrics, JSON errors, client address + edge limit
//! + `X-RateLimit-*`, timeout, concurrency and body limits).
//!
//! Order of checks on a POST: edge limit (429) -> opt-out (403) -> target policy (422
//! `invalid_target`) -> callback URL (422 `invalid_callback`) -> coalesce onto a live scan
//! (200, not counted) -> per-type limits (429) -> new scan (200 `queued`). GETs pass the
//! same address checks. No endpoint reads a request body; bodies above the limit get 413.

pub mod error;
pub mod managed;
pub mod openapi;
pub mod seed002;
pub mod sse;

use crate::clock::Clock;
use crate::metrics::{Metrics, RequestLabels};
use crate::model::{ScanResponse, ScanState, ScanType};
use crate::netaddr::{client_ip, CidrSet};
use crate::ratelimit::Limits;
use crate::selfscan::ScanService;
use crate::webhook::CallbackPolicy;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use error::{ApiError, ErrorBody};
use openapi::ApiDoc;
use portscope_core::policy::TargetPolicy;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;

/// `X-RateLimit-Limit`.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining`.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset`.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
/// `X-Scan-Duration-Ms`.
pub const SCAN_DURATION: HeaderName = HeaderName::from_static("x-scan-duration-ms");
/// `X-Callback-Url`.
pub const CALLBACK_URL: HeaderName = HeaderName::from_static("x-callback-url");

/// The address a request is about (after `X-Forwarded-For` from trusted proxies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest body.
    pub body_bytes: usize,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Requests in flight at most.
    pub concurrency: usize,
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct Shared {
    /// The scan service.
    pub scans: Arc<ScanService>,
    /// The managed-scan API (`/api/v1`, `/report/{id}`), with its own limit and errors.
    pub managed: Arc<managed::router::Managed>,
    /// Rate limiters.
    pub limits: Arc<Limits>,
    /// Which addresses may be scanned.
    pub policy: TargetPolicy,
    /// Opted-out addresses.
    pub opt_out: CidrSet,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted: CidrSet,
    /// Callback checks.
    pub callbacks: CallbackPolicy,
    /// Metrics.
    pub metrics: Metrics,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Request limits.
    pub http: HttpLimits,
}

/// The application state: cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Shared>);

impl AppState {
    /// 403 for opted-out addresses, 422 for addresses the target policy refuses.
    pub fn check_target(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.0.opt_out.contains(ip) {
            return Err(ApiError::NotAvailable);
        }
        self.0.policy.permits(ip).map_err(|e| {
            ApiError::InvalidTarget(format!(
                "{ip} cannot be scanned: it is in {} ({}), which is not publicly routable",
                e.range, e.name
            ))
        })
    }

    /// The scan service.
    pub fn scans(&self) -> &Arc<ScanService> {
        &self.0.scans
    }
}

/// Body, concurrency and timeout limits (one concurrency budget shared by every route).
fn request_limits<S: Clone + Send + Sync + 'static>(
    r: Router<S>,
    limits: HttpLimits,
    concurrency: &GlobalConcurrencyLimitLayer,
) -> Router<S> {
    r.layer(from_fn_with_state(limits.body_bytes, read_body))
        .layer(RequestBodyLimitLayer::new(limits.body_bytes))
        .layer(concurrency.clone())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.timeout,
        ))
}

/// The router with every layer.
pub fn app(state: AppState) -> Router {
    let limits = state.0.http;
    let concurrency = GlobalConcurrencyLimitLayer::new(limits.concurrency.max(1));
    let self_scan = Router::new()
        .route("/v1/fast", get(get_fast).post(post_fast))
        .route("/v1/deep", get(get_deep).post(post_deep))
        .route("/v1/openapi.json", get(openapi))
        .merge(sse::self_scan_routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // Innermost first: each `layer` call wraps everything added before it. The self-scan
    // edge limit (30/min, X-RateLimit-*) covers the self-scan routes; the managed routes
    // have their own (60/min on /api/v1, RateLimit-*).
    let self_scan = request_limits(self_scan, limits, &concurrency)
        .layer(from_fn_with_state(state.clone(), edge));
    let managed = managed::router::router(state.0.managed.clone(), |r| {
        request_limits(r, limits, &concurrency)
    });
    self_scan
        .merge(managed)
        .layer(from_fn(json_errors))
        .layer(from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Reads the whole body up to `limit` bytes before any handler runs, so a chunked body
/// (no `Content-Length` for the layer above to check) over the limit gets the same 413 on
/// every route, whether or not its handler reads a body.
async fn read_body(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(_) => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    }
}

/// `GET /metrics` alone, for its own listener (`metrics-listen`): not on the public
/// address, and not counted against any client's edge limit.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn(json_errors))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::no_endpoint()
}

async fn method_not_allowed() -> ApiError {
    ApiError::no_method()
}

/// Records latency per route, method and status.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_string();
    let method = match *req.method() {
        Method::GET
        | Method::POST
        | Method::HEAD
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::OPTIONS => req.method().to_string(),
        _ => "other".to_string(),
    };
    let start = Instant::now();
    let resp = next.run(req).await;
    s.0.metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: resp.status().as_u16(),
        })
        .observe(start.elapsed().as_secs_f64());
    resp
}

/// Turns any non-JSON error (axum's 405, the layers' 408 / 413, ...) into the JSON body,
/// keeping the status and headers such as `Allow`.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, _) = resp.into_parts();
    let body = ApiError::from_status(status).body();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let json = serde_json::to_vec(&body).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(json))
}

/// Finds the client address, applies the edge limit and sets `X-RateLimit-*` on every
/// response.
async fn edge(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return ApiError::Internal("no peer address on the connection".into()).into_response();
    };
    let client = client_ip(peer.ip(), req.headers(), &s.0.trusted);
    let key = client.as_ref().copied().unwrap_or(peer.ip().to_canonical());
    let now = s.0.clock.now_secs();
    let w = s.0.limits.edge.hit(&key.to_string(), now).await;
    let mut resp = match client {
        _ if !w.allowed => ApiError::RateLimited {
            retry_after: w.retry_after(now),
            message: "edge limit reached: 30 requests per IP per minute".into(),
        }
        .into_response(),
        Err(e) => ApiError::BadRequest(e.to_string()).into_response(),
        Ok(ip) => {
            req.extensions_mut().insert(ClientIp(ip));
            next.run(req).await
        }
    };
    let h = resp.headers_mut();
    h.insert(RATELIMIT_LIMIT, HeaderValue::from(w.limit));
    h.insert(RATELIMIT_REMAINING, HeaderValue::from(w.remaining));
    h.insert(RATELIMIT_RESET, HeaderValue::from(w.reset));
    resp
}

/// The edge limit's `X-RateLimit-*` lines for `ip`, peeked (not counted), for the protocol
/// errors hyper answers before a request reaches the edge middleware
/// (see [`crate::serve::ProtocolHeaders`]).
pub fn protocol_headers(state: &AppState) -> crate::serve::ProtocolHeaders {
    let state = state.clone();
    Arc::new(move |ip: IpAddr| {
        let now = state.0.clock.now_secs();
        let w = state
            .0
            .limits
            .edge
            .peek_local(&ip.to_canonical().to_string(), now);
        format!(
            "{RATELIMIT_LIMIT}: {}\r\n{RATELIMIT_REMAINING}: {}\r\n{RATELIMIT_RESET}: {}\r\n",
            w.limit, w.remaining, w.reset
        )
    })
}

async fn submit(
    s: AppState,
    ip: IpAddr,
    headers: &HeaderMap,
    t: ScanType,
) -> Result<Response, ApiError> {
    s.check_target(ip)?;
    let callback = match headers.get(CALLBACK_URL) {
        None => None,
        Some(v) => {
            let raw = v
                .to_str()
                .map_err(|_| ApiError::InvalidCallback("callback URL is not ASCII".into()))?;
            let dest =
                s.0.callbacks
                    .check(raw.trim())
                    .await
                    .map_err(|e| ApiError::InvalidCallback(e.to_string()))?;
            Some(dest.url.to_string())
        }
    };
    let id = s.0.scans.submit(ip, t, callback.as_deref()).await?;
    let row =
        s.0.scans
            .get(&id)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("scan {id} vanished")))?;
    Ok(Json(s.0.scans.view(&row).await?).into_response())
}

async fn poll(s: AppState, ip: IpAddr, t: ScanType) -> Result<Response, ApiError> {
    s.check_target(ip)?;
    let view = match s.0.scans.latest(ip, t).await? {
        Some(row) => s.0.scans.view(&row).await?,
        None => ScanResponse {
            ip: ip.to_string(),
            scan_type: t,
            state: ScanState::None,
        },
    };
    let duration = match &view.state {
        ScanState::Complete { duration_ms, .. } => Some(*duration_ms),
        _ => None,
    };
    let mut resp = Json(view).into_response();
    if let Some(ms) = duration {
        resp.headers_mut()
            .insert(SCAN_DURATION, HeaderValue::from(ms));
    }
    Ok(resp)
}

/// The POST and GET handlers of one scan type: the same checks, answers and documentation
/// but for the type, its path and its per-type limits. utoipa wants a literal path per
/// handler, hence one macro for both types rather than one handler with a path parameter
/// (which would document `/v1/{type}` and answer unknown types with a 400).
macro_rules! scan_type_handlers {
    (
        $t:expr, $path:literal,
        $post:ident: $post_doc:literal,
        $get:ident: $get_doc:literal,
        rate_limited: $limits:literal $(,)?
    ) => {
        #[doc = $post_doc]
        #[utoipa::path(
            post, path = $path, tag = "self-scan",
            params(("X-Callback-Url" = Option<String>, Header,
                description = "http(s) URL that receives the final result (POST, same body as GET) on completion or failure")),
            responses(
                (status = 200, description = "Scan queued, or the live scan of this address and type it joined (queued / running)",
                    body = ScanResponse, headers(
                        ("X-RateLimit-Limit" = u32, description = "Edge limit: requests per window"),
                        ("X-RateLimit-Remaining" = u32, description = "Requests left in the window"),
                        ("X-RateLimit-Reset" = u64, description = "Unix time the window resets"))),
                (status = 403, description = "`not_available`: address opted out or restricted", body = ErrorBody),
                (status = 422, description = "`invalid_target` (not a public address) or `invalid_callback`", body = ErrorBody),
                (status = 429, description = $limits, body = ErrorBody,
                    headers(("Retry-After" = u64, description = "Seconds until the limit resets"))),
            )
        )]
        pub async fn $post(
            State(s): State<AppState>,
            Extension(ClientIp(ip)): Extension<ClientIp>,
            headers: HeaderMap,
        ) -> Result<Response, ApiError> {
            submit(s, ip, &headers, $t).await
        }

        #[doc = $get_doc]
        #[utoipa::path(
            get, path = $path, tag = "self-scan",
            responses(
                (status = 200, description = "`queued`, `running`, `complete`, `failed` or `none`", body = ScanResponse,
                    headers(("X-Scan-Duration-Ms" = u64, description = "Scan duration, on complete results"))),
                (status = 403, description = "`not_available`", body = ErrorBody),
                (status = 422, description = "`invalid_target`", body = ErrorBody),
                (status = 429, description = "`rate_limited`", body = ErrorBody),
            )
        )]
        pub async fn $get(
            State(s): State<AppState>,
            Extension(ClientIp(ip)): Extension<ClientIp>,
        ) -> Result<Response, ApiError> {
            poll(s, ip, $t).await
        }
    };
}

scan_type_handlers!(
    ScanType::Fast, "/v1/fast",
    post_fast: "Start a fast scan (32 ports) of the requesting address.",
    get_fast: "Poll the fast scan of the requesting address.",
    rate_limited: "`rate_limited` (2,000 fast scans per ASN per hour, edge limit)",
);

scan_type_handlers!(
    ScanType::Deep, "/v1/deep",
    post_deep: "Start a deep scan (65,535 ports) of the requesting address.",
    get_deep: "Poll the deep scan of the requesting address.",
    rate_limited: "`rate_limited` (1 per IP per 5 minutes, 200 per ASN per hour, edge limit)",
);

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi() -> Response {
    Json(ApiDoc::openapi()).into_response()
}

/// Prometheus metrics (OpenMetrics text), served by [`metrics_app`] only.
pub async fn metrics(State(s): State<AppState>) -> Response {
    s.0.scans.refresh_gauges().await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.0.metrics.render(),
    )
        .into_response()
}
