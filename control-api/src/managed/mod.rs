//! Managed scans (issue 4): the token-authenticated `/api/v1` API of seeds 001-003 for
//! port scans of scoped targets, and the per-scan HTML report at `/report/{id}`.
//!
//! - [`tokens`]: bearer tokens (hashed, CLI-managed). [`scope`]: what a token may scan.
//! - [`service`]: checks, quotas, engine events, completion, alerts, monitors, scheduler.
//! - [`store`]: the tables. [`findings`]: the severity rubric and grade.
//! - [`api`]: handlers and JSON shapes. [`report`]: `SECURITY-FIX.md` and the HTML page.
//! - [`demux`]: shares the engine connection with the self-scan service. [`mail`]: alert
//!   e-mail (optional SMTP).
//!
//! **Invariant:** every scan, however started (POST, retest, saved target, trigger-all,
//! scheduler), passes [`service::ManagedService::submit`], which re-checks the token's
//! scope; the engine only ever gets addresses, never names. This module does not serve
//! the self-scan API and does not change it.

pub mod api;
pub mod demux;
pub mod error;
pub mod findings;
pub mod mail;
pub mod openapi;
pub mod report;
pub mod scope;
pub mod service;
pub mod store;
pub mod tokens;

use crate::clock::Clock;
use crate::netaddr::{client_ip, CidrSet};
use crate::ratelimit::FixedWindow;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use error::ManagedError;
use service::ManagedService;
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
    pub demux_stop: tokio_util::sync::CancellationToken,
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
            .nest("/api/v1", api::routes())
            .merge(api::public_routes()),
    )
    .layer(from_fn_with_state(m.clone(), limit))
    .with_state(m)
}

/// The per-IP limit with `RateLimit-*` on every response (429 when exceeded).
async fn limit(State(m): State<Arc<Managed>>, req: Request, next: Next) -> Response {
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return ManagedError::Internal("no peer address on the connection".into()).into_response();
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
        m.limiter.prune(now);
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
        m.limiter.peek(&key.to_string(), now)
    } else {
        m.limiter.hit(&key.to_string(), now)
    };
    let mut resp = match client {
        _ if unauthenticated => ManagedError::Unauthorized(
            "missing API token: send `Authorization: Bearer <token>`".into(),
        )
        .into_response(),
        _ if !w.allowed => ManagedError::Limited {
            code: "rate_limited",
            message: format!(
                "rate limit reached: {API_LIMIT} requests per minute per IP on /api/v1"
            ),
            retry_after: w.retry_after(now),
        }
        .into_response(),
        Err(e) => ManagedError::BadRequest(e.to_string()).into_response(),
        Ok(_) => next.run(req).await,
    };
    let h = resp.headers_mut();
    h.insert(RATELIMIT_LIMIT, HeaderValue::from(w.limit));
    h.insert(RATELIMIT_REMAINING, HeaderValue::from(w.remaining));
    h.insert(
        RATELIMIT_RESET,
        HeaderValue::from(w.reset.saturating_sub(now)),
    );
    resp
}

/// `n` random bytes as lower-case hex.
pub fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of a day number.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-04-03T12:00:00.000Z` from Unix ms.
pub fn iso_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        ms.rem_euclid(1000)
    )
}

/// `2026-04-03` from Unix seconds.
pub fn date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Unix seconds of the first instant of the UTC month containing `secs`.
pub fn month_start_secs(secs: i64) -> i64 {
    let (y, m, _) = civil_from_days(secs.div_euclid(86_400));
    days_from_civil(y, m, 1) * 86_400
}

/// Unix seconds of the first instant of the next UTC month.
pub fn next_month_start_secs(secs: i64) -> i64 {
    let (y, m, _) = civil_from_days(secs.div_euclid(86_400));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * 86_400
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_ms(1_711_940_800_123), "2024-04-01T03:06:40.123Z");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(month_start_secs(1_711_940_800), 1_711_929_600);
        assert_eq!(next_month_start_secs(1_711_940_800), 1_714_521_600);
        assert_eq!(next_month_start_secs(1_703_980_800), 1_704_067_200); // Dec -> Jan
    }
}
