//! The HTTP listener: accepts connections and serves the router over HTTP/1.1 with the
//! limits that keep hostile clients from holding the API's file descriptors.
//!
//! - **Connection caps**, checked at accept before any byte is read: at most
//!   `per_ip` open connections per client address and `total` in all. A connection over
//!   a cap gets one fixed JSON answer (429 `too_many_connections` or 503 `overloaded`)
//!   written without a task or a parser, and is closed.
//! - **Header-read timeout** (hyper's, with a timer): a request head, including the wait
//!   for the next request on a keep-alive connection, must arrive within
//!   `header_read`; slow-header (slowloris) and idle keep-alive connections are closed.
//! - **Idle timeout**: a connection on which no byte moved either way for `idle` is
//!   dropped (a client that stops reading its response, or stalls mid-body).
//! - **JSON protocol errors**: hyper answers malformed requests itself (400, 414 URI too
//!   long, 431 header fields too large) with an empty body; [`JsonErrorsIo`] replaces that
//!   answer with the API's `{"error", "message"}` body, so every error is JSON.
//!
//! Accept errors (`EMFILE`, ...) are logged and retried after a short pause, never a busy
//! loop.

use crate::http::error::ApiError;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A request head (or the next one on a keep-alive connection) must arrive within this.
    pub header_read: Duration,
    /// A connection with no I/O in either direction for this long is dropped.
    pub idle: Duration,
    /// Open connections per client address.
    pub per_ip: usize,
    /// Open connections in all.
    pub total: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            per_ip: 64,
            total: 4096,
        }
    }
}

/// Open connections per address and in all; a [`Slot`] gives its place back on drop.
#[derive(Debug, Default)]
struct Counts {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
}

/// One counted connection.
#[derive(Debug)]
struct Slot {
    counts: Arc<Counts>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counts.total.fetch_sub(1, Ordering::Relaxed);
        let mut m = crate::util::lock(&self.counts.per_ip);
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    PerIp,
    Total,
}

impl Counts {
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ConnLimits) -> Result<Slot, Refusal> {
        let mut m = crate::util::lock(&self.per_ip);
        let n = m.get(&ip).copied().unwrap_or(0);
        if n >= limits.per_ip {
            return Err(Refusal::PerIp);
        }
        if self.total.fetch_add(1, Ordering::Relaxed) >= limits.total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Total);
        }
        m.insert(ip, n + 1);
        Ok(Slot {
            counts: self.clone(),
            ip,
        })
    }
}

/// A complete HTTP/1.1 response with the API's JSON error body, closing the connection.
pub fn error_response(status: StatusCode, code: &str, message: &str, extra: &str) -> Vec<u8> {
    let body = serde_json::json!({"error": code, "message": message}).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\
         connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

fn refusal_bytes(r: Refusal, limits: &ConnLimits) -> Vec<u8> {
    match r {
        Refusal::PerIp => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_connections",
            &format!(
                "too many open connections from this address (at most {}); close idle ones \
                 or reuse one",
                limits.per_ip
            ),
            "retry-after: 1\r\n",
        ),
        Refusal::Total => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            &format!(
                "the server has {} open connections, its limit; try again shortly",
                limits.total
            ),
            "retry-after: 1\r\n",
        ),
    }
}

/// The rate-limit header lines (each ending in `\r\n`) for a client address, added to the
/// protocol errors hyper answers itself: such a request never reaches the router's limiter,
/// so it is not counted, but the client still learns where it stands.
pub type ProtocolHeaders = Arc<dyn Fn(IpAddr) -> String + Send + Sync>;

/// Serves `router` on `listener` until `shutdown` completes; open connections then finish
/// their current request (bounded by the timeouts) before this returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_with_headers(listener, router, limits, None, shutdown).await
}

/// [`serve`], with `headers` added to the protocol errors hyper answers itself.
pub async fn serve_with_headers(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    headers: Option<ProtocolHeaders>,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let counts = Arc::new(Counts::default());
    let tasks = tokio_util::task::TaskTracker::new();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE / ENFILE / ECONNABORTED: pause instead of spinning.
                    tracing::warn!(error = %e, "accept error");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ip = crate::netaddr::normalise(peer.ip());
        let slot = match counts.admit(ip, &limits) {
            Ok(s) => s,
            Err(r) => {
                // One non-blocking write into the fresh socket's send buffer, then close.
                let _ = stream.try_write(&refusal_bytes(r, &limits));
                if let Ok(s) = stream.into_std() {
                    let _ = s.shutdown(std::net::Shutdown::Write);
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        let headers = headers.clone().map(|h| (h, ip));
        tasks.spawn(async move {
            connection(stream, peer, router, limits, headers, stop).await;
            drop(slot);
        });
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnLimits,
    headers: Option<(ProtocolHeaders, IpAddr)>,
    stop: tokio_util::sync::CancellationToken,
) {
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut io = JsonErrorsIo::new(stream, start, last.clone());
    io.headers = headers;
    let io = TokioIo::new(io);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req.map(Body::new))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let idle = async {
        loop {
            let quiet = start
                .elapsed()
                .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= limits.idle {
                return;
            }
            tokio::time::sleep(limits.idle - quiet).await;
        }
    };
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = idle => tracing::debug!(%peer, "idle connection dropped"),
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.header_read, conn).await;
        }
    }
}

/// The stream of one connection: records when bytes last moved (idle timeout) and turns
/// hyper's own body-less 4xx answers into JSON errors. Writes are not vectored, so hyper
/// hands each response head over in one buffer.
pub struct JsonErrorsIo<T> {
    inner: T,
    start: Instant,
    last: Arc<AtomicU64>,
    /// A replacement answer being written, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
    /// Rate-limit headers for the replacement, and the client they are for.
    headers: Option<(ProtocolHeaders, IpAddr)>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for JsonErrorsIo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonErrorsIo")
            .field("inner", &self.inner)
            .field("replacing", &self.replacement.is_some())
            .field("client", &self.headers.as_ref().map(|(_, ip)| ip))
            .finish_non_exhaustive()
    }
}

impl<T> JsonErrorsIo<T> {
    /// Wraps `inner`; `last` receives the ms since `start` of the latest I/O.
    pub fn new(inner: T, start: Instant, last: Arc<AtomicU64>) -> Self {
        JsonErrorsIo {
            inner,
            start,
            last,
            replacement: None,
            headers: None,
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

/// The JSON answer replacing a response head hyper wrote itself, if `buf` is one: a 4xx
/// status line whose head has no `content-type` (every answer of the router has one).
/// `extra` are header lines to add, each ending in `\r\n`.
pub fn rewrite_protocol_error(buf: &[u8], extra: &str) -> Option<Vec<u8>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let status: u16 = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    if !(400..500).contains(&status)
        || head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("content-type:"))
    {
        return None;
    }
    let status = StatusCode::from_u16(status).ok()?;
    let (code, message) = match status {
        StatusCode::URI_TOO_LONG => ("uri_too_long", "request URI too long".to_string()),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "header_fields_too_large",
            "request header fields too large or too many".to_string(),
        ),
        StatusCode::BAD_REQUEST => ("bad_request", "malformed HTTP request".to_string()),
        s => {
            let e = ApiError::from_status(s);
            (e.code(), e.to_string())
        }
    };
    Some(error_response(status, code, &message, extra))
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrorsIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> JsonErrorsIo<T> {
    /// Writes what is left of a replacement answer; `Ready(Ok)` when all is written.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.replacement {
            if *done == bytes.len() {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrorsIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.replacement.is_some() {
            // After its own error answer hyper only closes; anything else is dropped.
            return match self.drain(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
        }
        if buf.starts_with(b"HTTP/1.1 4") {
            let extra = self
                .headers
                .as_ref()
                .map(|(h, ip)| h(*ip))
                .unwrap_or_default();
            if let Some(json) = rewrite_protocol_error(buf, &extra) {
                self.replacement = Some((json, 0));
                self.touch();
                return match self.drain(cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    _ => Poll::Ready(Ok(buf.len())),
                };
            }
        }
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_error_heads_become_json_and_router_answers_stay() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(
            rewrite_protocol_error(hyper_431, "x-ratelimit-limit: 30\r\n").unwrap(),
        )
        .unwrap();
        assert!(out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(out.contains("content-type: application/json\r\n"));
        assert!(out.contains("x-ratelimit-limit: 30\r\n"), "{out}");
        assert!(out.ends_with(r#"{"error":"header_fields_too_large","message":"request header fields too large or too many"}"#));
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert!(rewrite_protocol_error(ours, "").is_none());
        assert!(
            rewrite_protocol_error(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", "").is_none()
        );
    }

    #[test]
    fn caps_count_per_address_and_in_all() {
        let c = Arc::new(Counts::default());
        let l = ConnLimits {
            per_ip: 2,
            total: 3,
            ..ConnLimits::default()
        };
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let s1 = c.admit(a, &l).unwrap();
        let _s2 = c.admit(a, &l).unwrap();
        assert_eq!(c.admit(a, &l).unwrap_err(), Refusal::PerIp);
        let _s3 = c.admit(b, &l).unwrap();
        assert_eq!(c.admit(b, &l).unwrap_err(), Refusal::Total);
        drop(s1);
        assert!(c.admit(a, &l).is_ok());
    }
}
