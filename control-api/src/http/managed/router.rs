//! The managed API's router and its per-IP limit: `/api/v1/...`, `/report/{id}` and seed
//! 002's routes, with `RateLimit-*` and `X-RateLimit-*` on every response (seed 003).

use crate::clock::Clock;
use crate::http::error::ApiError;
use crate::managed::service::ManagedService;
use crate::netaddr::{client_ip, CidrSet};
use crate::ratelimit::FixedWindow;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;

/// Requests per client IP per window on `/api/v1` (seed 003).
pub const API_LIMIT: u32 = 60;
/// The window, seconds.
pub const API_WINDOW: u64 = 60;

/// `RateLimit-Limit`.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset` (seconds until the window resets).
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// State of the managed routes.
#[derive(Debug)]
pub struct Managed {
    /// The service.
    pub service: Arc<ManagedService>,
    /// 60 requests per minute per client IP.
    pub limiter: FixedWindow,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted: CidrSet,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// When the limiter's ended windows were last dropped (Unix seconds).
    pub last_prune: std::sync::atomic::AtomicU64,
    /// Stops the engine event router on shutdown.
    pub engine_stop: tokio_util::sync::CancellationToken,
}

/// The managed routes: `/api/v1/...` and `/report/{id}`. `inner` adds the request limits
/// (body, concurrency, timeout); the per-IP limit wraps them, so its `RateLimit-*` headers
/// are on every response, a 408 or 413 included.
pub fn router<S: Clone + Send + Sync + 'static>(
    m: Arc<Managed>,
    inner: impl FnOnce(Router<Arc<Managed>>) -> Router<Arc<Managed>>,
) -> Router<S> {
    inner(
        Router::new()
            .nest(
                "/api/v1",
                super::routes().merge(crate::http::sse::managed_routes()),
            )
            .merge(super::public_routes())
            .merge(crate::http::seed002::routes()),
    )
    .layer(from_fn_with_state(m.clone(), limit))
    .layer(axum::middleware::from_fn(crate::http::seed002::reshape))
    .with_state(m)
}

/// The per-IP limit with `RateLimit-*` and `X-RateLimit-*` on every response (429 when
/// exceeded).
async fn limit(State(m): State<Arc<Managed>>, req: Request, next: Next) -> Response {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return ApiError::Internal("no peer address on the connection".into()).into_response();
    };
    let client = client_ip(peer.ip(), req.headers(), &m.trusted);
    let key = client
        .as_ref()
        .copied()
        .unwrap_or(crate::netaddr::normalise(peer.ip()));
    let now = m.clock.now_secs();
    // Bounded memory: drop ended windows at most once per window.
    let last = m.last_prune.load(std::sync::atomic::Ordering::Relaxed);
    if now >= last + API_WINDOW
        && m.last_prune
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        m.limiter.prune(now).await;
    }
    // A request to an authenticated route without any `Authorization` gets 401 first and
    // is not counted (it costs no token lookup); one with a token, right or wrong, counts.
    let unauthenticated = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .is_some_and(|p| {
            p.as_str().starts_with("/api/v1/") && p.as_str() != "/api/v1/openapi.json"
        })
        && !req
            .headers()
            .contains_key(axum::http::header::AUTHORIZATION);
    let w = if unauthenticated {
        m.limiter.peek(&key.to_string(), now).await
    } else {
        m.limiter.hit(&key.to_string(), now).await
    };
    let mut resp = match client {
        _ if unauthenticated => {
            ApiError::Unauthorized("missing API token: send `Authorization: Bearer <token>`".into())
                .into_response()
        }
        _ if !w.allowed => ApiError::RateLimited {
            retry_after: w.retry_after(now),
            message: format!(
                "rate limit reached: {API_LIMIT} requests per minute per IP on /api/v1"
            ),
        }
        .into_response(),
        Err(e) => ApiError::BadRequest(e.to_string()).into_response(),
        Ok(_) => next.run(req).await,
    };
    // Seed 003's `RateLimit-*` and, for clients written against seed 001, the same
    // numbers as `X-RateLimit-*`.
    let h = resp.headers_mut();
    let reset = w.reset.saturating_sub(now);
    for (limit, remaining, reset_name) in [
        (RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET),
        (
            crate::http::RATELIMIT_LIMIT,
            crate::http::RATELIMIT_REMAINING,
            crate::http::RATELIMIT_RESET,
        ),
    ] {
        h.insert(limit, HeaderValue::from(w.limit));
        h.insert(remaining, HeaderValue::from(w.remaining));
        h.insert(reset_name, HeaderValue::from(reset));
    }
    resp
}
