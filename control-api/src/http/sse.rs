//! Live results as Server-Sent Events: `GET /v1/fast/events`, `GET /v1/deep/events` (the
//! requester's latest scan of that type) and `GET /api/v1/scan/{id}/events` (a managed
//! scan of the token). Each stream sends `progress` (status and chunks) whenever it
//! changes, one `port` event per port as the engine's classification of it is recorded
//! (open or filtered; closed ports are only counted), and ends with one `result` event
//! holding the same document a `GET` of the scan returns once it is final.
//!
//! A follower task per stream reads the scan's rows every [`TICK`] and sends what is new;
//! it ends when the scan is final, the client goes away, or after [`MAX_STREAM`]. The
//! database stays the one source of truth: a stream opened late replays the ports so far.
//! At most [`MAX_STREAMS`] streams are open at once (429 beyond).

use crate::http::error::ApiError;
use crate::http::managed::router::Managed;
use crate::http::managed::{newly_open, owned, scan_json, Authed};
use crate::http::{AppState, ClientIp};
use crate::model::{service_name, ScanResponse, ScanState, ScanType};
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How often a follower reads the scan's rows.
pub const TICK: Duration = Duration::from_millis(100);
/// Longest stream (a deep scan well past its expected time has failed by then).
pub const MAX_STREAM: Duration = Duration::from_secs(2 * 3600);
/// Streams open at once over the whole API; one more is refused with 429 (each stream
/// holds a follower task reading the database).
pub const MAX_STREAMS: usize = 256;

static STREAMS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_STREAMS);

/// A stream slot, or `None` when [`MAX_STREAMS`] are open.
fn slot() -> Option<tokio::sync::SemaphorePermit<'static>> {
    STREAMS.try_acquire().ok()
}

const BUSY: &str = "too many event streams are open; try again later or poll the scan";

/// What a follower sends: SSE events, then the channel closes.
type Tx = mpsc::Sender<Event>;

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// The SSE response reading `rx`, with keep-alive comments every 15 s.
fn stream(mut rx: mpsc::Receiver<Event>) -> Response {
    let s = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|e| e.map(Ok::<_, std::convert::Infallible>))
    });
    Sse::new(s)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Sends the ports not seen yet; false when the client is gone.
async fn send_ports(tx: &Tx, seen: &mut HashSet<(String, i64)>, ports: Vec<Value>) -> bool {
    for p in ports {
        let key = (
            p["host"].as_str().unwrap_or_default().to_string(),
            p["port"].as_i64().unwrap_or(0),
        );
        if seen.insert(key) && tx.send(event("port", &p)).await.is_err() {
            return false;
        }
    }
    true
}

/// One port event's data.
fn port_event(host: &str, port: i64, state: &str) -> Value {
    let port = u16::try_from(port).unwrap_or(0);
    json!({"host": host, "port": port, "state": state, "service": service_name(port)})
}

/// One read of a followed scan.
struct Read {
    /// Its `progress` event's data.
    progress: Value,
    /// Its open and filtered ports so far, as `port` event data.
    ports: Vec<Value>,
    /// Once the scan is final: its `result` event's data (`None` when that could not be
    /// read; the stream then ends without it).
    result: Option<Option<Value>>,
}

/// Spawns a stream's follower: every [`TICK`] it reads the scan with `read` and sends what
/// is new, until the scan is final, `read` finds nothing (the scan or the database is
/// gone), the client goes away, or [`MAX_STREAM`] has passed. Holds `permit` till then.
fn follow<F, Fut>(permit: tokio::sync::SemaphorePermit<'static>, tx: Tx, mut read: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<Read>> + Send,
{
    tokio::spawn(async move {
        let _permit = permit;
        let start = Instant::now();
        let mut seen = HashSet::new();
        let mut last = None;
        while start.elapsed() < MAX_STREAM && !tx.is_closed() {
            let Some(now) = read().await else {
                return;
            };
            if last.as_ref() != Some(&now.progress) {
                if tx.send(event("progress", &now.progress)).await.is_err() {
                    return;
                }
                last = Some(now.progress);
            }
            if !send_ports(&tx, &mut seen, now.ports).await {
                return;
            }
            if let Some(result) = now.result {
                if let Some(result) = result {
                    let _ = tx.send(event("result", &result)).await;
                }
                return;
            }
            tokio::time::sleep(TICK).await;
        }
    });
}

/// `GET /v1/{fast,deep}/events` routes (self-scan; behind the edge limit).
#[utoipa::path(
    get, path = "/v1/{kind}/events", tag = "self-scan",
    params(("kind" = String, Path, description = "`fast` or `deep`")),
    responses(
        (status = 200, description = "Server-Sent Events of the requesting address's latest scan of this type: \
            `progress` (status, percent, counts), `port` (each open or filtered port as it is classified; closed \
            ports are counted in `progress`), then one `result` event with the final document (the GET body); \
            a `result` with status `none` at once when there is no scan", content_type = "text/event-stream", body = String),
        (status = 403, description = "`not_available`", body = crate::http::error::ErrorBody),
        (status = 422, description = "`invalid_target`", body = crate::http::error::ErrorBody),
        (status = 429, description = "`rate_limited`: too many event streams are open", body = crate::http::error::ErrorBody),
    )
)]
#[allow(dead_code)] // documents the two routes below; never routed itself
pub(crate) fn self_scan_events_doc() {}

pub fn self_scan_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/fast/events", get(fast_events))
        .route("/v1/deep/events", get(deep_events))
}

async fn fast_events(
    State(s): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
) -> Result<Response, ApiError> {
    self_scan(s, ip, ScanType::Fast).await
}

async fn deep_events(
    State(s): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
) -> Result<Response, ApiError> {
    self_scan(s, ip, ScanType::Deep).await
}

async fn self_scan(s: AppState, ip: std::net::IpAddr, t: ScanType) -> Result<Response, ApiError> {
    s.check_target(ip)?;
    let permit = slot().ok_or_else(|| ApiError::RateLimited {
        retry_after: 30,
        message: BUSY.into(),
    })?;
    let (tx, rx) = mpsc::channel(256);
    let Some(row) = s.scans().latest(ip, t).await? else {
        let none = ScanResponse {
            ip: ip.to_string(),
            scan_type: t,
            state: ScanState::None,
        };
        let _ = tx.try_send(event("result", &json!(none)));
        return Ok(stream(rx));
    };
    let (id, host) = (row.id, ip.to_string());
    follow(permit, tx, move || {
        let (s, id, host) = (s.clone(), id.clone(), host.clone());
        async move {
            let row = s.scans().get(&id).await.ok()??;
            let ports = s.scans().store().ports(&id).await.ok()?;
            let result = if row.is_final() {
                Some(s.scans().view(&row).await.ok().map(|v| json!(v)))
            } else {
                None
            };
            Some(Read {
                progress: json!({
                    "status": row.status, "chunks_complete": row.chunks_complete,
                    "total_chunks": row.total_chunks,
                }),
                ports: ports
                    .iter()
                    .map(|p| port_event(&host, p.port, &p.state))
                    .collect(),
                result,
            })
        }
    });
    Ok(stream(rx))
}

/// `GET /scan/{id}/events` (nested under `/api/v1`).
pub fn managed_routes() -> Router<Arc<Managed>> {
    Router::new().route("/scan/{id}/events", get(managed_events))
}

async fn managed_events(
    State(s): State<Arc<Managed>>,
    Authed(t): Authed,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = owned(&s, &t, &id).await?;
    let permit = slot().ok_or_else(|| ApiError::Limited {
        code: "too_many_streams",
        message: BUSY.into(),
        retry_after: 30,
    })?;
    let (tx, rx) = mpsc::channel(256);
    let id = row.id;
    follow(permit, tx, move || {
        let (s, id) = (s.clone(), id.clone());
        async move {
            let store = s.service.store();
            let row = store.scan(&id).await.ok()??;
            let ports = store.ports(&id).await.ok()?;
            let result = if row.is_live() {
                None
            } else {
                let new = newly_open(&s, &row.id).await.unwrap_or_default();
                Some(Some(scan_json(&row, &ports, &new)))
            };
            Some(Read {
                progress: json!({
                    "status": row.status, "chunksComplete": row.chunks_complete,
                    "totalChunks": row.total_chunks,
                }),
                ports: ports
                    .iter()
                    .map(|p| port_event(&p.host, p.port, &p.state))
                    .collect(),
                result,
            })
        }
    });
    Ok(stream(rx))
}
