//! The daemon's public face: binding the Unix socket (listening before its path appears,
//! mode, stale-file replacement, removal on drop), the accept loop, one task per connection
//! (peer check, framing, a writer task draining the client's queue), graceful shutdown, and
//! the metrics endpoint.

use crate::clients::Frame;
use crate::config::{DaemonConfig, RouteFn};
use crate::metrics;
use crate::peer::PeerPolicy;
use crate::state::Shared;
use portscope_engine::Engine;
use portscope_proto::{decode, encode, EngineStatus, Event, Request};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;

/// How long running scans get to report `engine_shutdown` before connections close.
const SCANS_STOP: Duration = Duration::from_secs(10);
/// How long a closing connection may take to flush what is queued for it.
const DRAIN: Duration = Duration::from_secs(5);

/// Binding the control socket failed.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A live daemon answers on the path.
    #[error("another engine is already listening on {0}; stop it first")]
    InUse(PathBuf),
    /// The path exists and is not a socket; it is not ours to delete.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The mode has bits beyond 0777.
    #[error("socket mode {0:o} is not a permission mode (at most 0777)")]
    Mode(u32),
    /// Any other failure.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// The bound control socket. Dropping it removes the socket file (if it is still the one
/// this process created).
#[derive(Debug)]
pub struct SocketListener {
    listener: Option<std::os::unix::net::UnixListener>,
    path: PathBuf,
    /// (device, inode) of the file we created, so we never delete a successor's socket.
    id: (u64, u64),
    owner_uid: u32,
    /// Group of the socket file: the daemon's group, whose members may connect.
    owner_gid: u32,
}

impl SocketListener {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The uid owning the socket file: the daemon's own (effective) uid.
    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }
}

impl Drop for SocketListener {
    fn drop(&mut self) {
        self.listener.take();
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Creates the control socket at `path` with permissions `mode` (e.g. `0o660`). A stale
/// socket file (nobody listening) is replaced; a live one or a non-socket file is an error.
/// Needs no runtime (call it before starting threads).
///
/// The socket is bound and listening under a temporary name in the same directory, gets
/// its mode there, and is then renamed into place (atomically, replacing a stale file), so
/// `path` appears only once it accepts connections and never with another mode.
pub fn bind(path: &Path, mode: u32) -> Result<SocketListener, BindError> {
    if mode > 0o777 {
        return Err(BindError::Mode(mode));
    }
    let io = |what| {
        let path = path.to_path_buf();
        move |source| BindError::Io { what, path, source }
    };
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(BindError::NotASocket(path.to_path_buf()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.to_path_buf()));
        }
    }
    let tmp = temporary_name(path);
    let _ = std::fs::remove_file(&tmp);
    // std's `bind` is socket(2), bind(2) and listen(2): the temporary file accepts from here.
    let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io("binding"))?;
    let placed = (|| {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(io("setting the mode of"))?;
        listener.set_nonblocking(true).map_err(io("configuring"))?;
        let m = std::fs::symlink_metadata(&tmp).map_err(io("reading"))?;
        std::fs::rename(&tmp, path).map_err(io("renaming the new socket to"))?;
        Ok(m)
    })();
    let m = placed.inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(SocketListener {
        listener: Some(listener),
        path: path.to_path_buf(),
        id: (m.dev(), m.ino()),
        owner_uid: m.uid(),
        owner_gid: m.gid(),
    })
}

/// `.<pid>.<n>` next to `path` (the same directory, so the rename stays within one file
/// system; short, as a socket path has at most 107 bytes); `n` counts binds in this process.
fn temporary_name(path: &Path) -> PathBuf {
    static BINDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = BINDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    path.with_file_name(format!(".{}.{n}", std::process::id()))
}

/// Binds the metrics listener (non-blocking, for [`Daemon::run`]). Needs no runtime.
pub fn bind_metrics(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The engine daemon. Cheap to clone; all clones serve the same state.
#[derive(Debug, Clone)]
pub struct Daemon {
    shared: Arc<Shared>,
}

impl Daemon {
    /// Wraps a started engine. Must be called inside a tokio runtime (scan tasks are
    /// spawned on it). `route` gives the local source address for a target
    /// (`sys::route_source` in production).
    pub fn new(engine: Engine, route: RouteFn, config: DaemonConfig) -> Daemon {
        Daemon {
            shared: Arc::new(Shared::new(engine, route, config)),
        }
    }

    /// The engine this daemon drives (for its counters).
    pub fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    /// Engine-wide status, as `Status { id: None }` answers it.
    pub fn status(&self) -> EngineStatus {
        self.shared.status()
    }

    /// The Prometheus exposition.
    pub fn metrics(&self) -> String {
        metrics::render(&self.shared)
    }

    /// The metrics app (`GET /metrics`), for serving or testing.
    pub fn metrics_router(&self) -> axum::Router {
        metrics::router(Arc::clone(&self.shared))
    }

    /// Serves the metrics app on `listener` until `shutdown` resolves.
    pub async fn serve_metrics(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        axum::serve(listener, self.metrics_router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Serves the control socket and, if a listener is given, the metrics endpoint on it,
    /// until `shutdown` resolves (see [`Daemon::serve`]). Both sockets are bound before
    /// the call (see [`bind_metrics`]), so the daemon can be confined first.
    pub async fn run(
        &self,
        socket: SocketListener,
        metrics: Option<std::net::TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let metrics = match metrics {
            Some(l) => {
                let l = TcpListener::from_std(l)?;
                tracing::info!("metrics on http://{}/metrics", l.local_addr()?);
                let d = self.clone();
                Some(tokio::spawn(async move {
                    let stop = async move {
                        let _ = stop_rx.wait_for(|s| *s).await;
                    };
                    if let Err(e) = d.serve_metrics(l, stop).await {
                        tracing::error!("metrics server failed: {e}");
                    }
                }))
            }
            None => None,
        };
        let r = self.serve(socket, shutdown).await;
        let _ = stop_tx.send(true);
        if let Some(m) = metrics {
            let _ = tokio::time::timeout(DRAIN, m).await;
        }
        r
    }

    /// Accepts clients on `socket` until `shutdown` resolves; then stops accepting, fails
    /// queued and running scans with `engine_shutdown` (clients get their `Finished`),
    /// closes the connections and removes the socket file.
    pub async fn serve(
        &self,
        mut socket: SocketListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let std_listener = socket
            .listener
            .take()
            .ok_or_else(|| io::Error::other("socket listener already served"))?;
        let listener = tokio::net::UnixListener::from_std(std_listener)?;
        let mut peers = self.shared.config.peers.clone();
        peers.daemon_uid = peers.daemon_uid.or(Some(socket.owner_uid));
        peers.daemon_gid = peers.daemon_gid.or(Some(socket.owner_gid));
        let peers = Arc::new(peers);
        let slots = Arc::new(Semaphore::new(self.shared.config.max_connections));
        let (close_tx, close_rx) = watch::channel(false);
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(permit) => {
                            let (shared, peers, close) =
                                (Arc::clone(&self.shared), Arc::clone(&peers), close_rx.clone());
                            conns.spawn(async move {
                                connection(shared, &peers, stream, close).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            conns.spawn(refuse(stream, "too many connections".into()));
                        }
                    },
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        self.shared.begin_shutdown();
        let deadline = tokio::time::Instant::now() + SCANS_STOP;
        while self.shared.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = close_tx.send(true);
        let _ =
            tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
        conns.shutdown().await;
        drop(socket);
        Ok(())
    }
}

/// Sends one `Error` frame and closes.
async fn refuse(mut stream: UnixStream, message: String) {
    let f = encode(&Event::Error { message });
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&f).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Serves one client until it leaves, sends a bad frame, falls behind or the daemon closes.
async fn connection(
    shared: Arc<Shared>,
    peers: &PeerPolicy,
    stream: UnixStream,
    mut close: watch::Receiver<bool>,
) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            return refuse(stream, format!("cannot read peer credentials: {e}")).await;
        }
    };
    if let Err(e) = peers.check(cred.uid(), cred.gid()) {
        tracing::warn!("refused a connection: {e}");
        return refuse(stream, e.to_string()).await;
    }
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(shared.config.client_queue.max(16));
    let (client, kicked) = shared.register(tx);
    let mut writer = tokio::spawn(write_frames(wr, rx));
    tokio::select! {
        _ = read_requests(&shared, client, rd) => {}
        _ = &mut writer => {
            shared.unregister(client);
            return;
        }
        _ = kicked_or_closed(&kicked, &mut close) => {}
    }
    shared.unregister(client);
    // The writer now drains what is queued (a final Error, Finished events) and closes.
    let abort = writer.abort_handle();
    if tokio::time::timeout(DRAIN, writer).await.is_err() {
        abort.abort();
    }
}

async fn kicked_or_closed(kicked: &Notify, close: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = kicked.notified() => {}
        _ = close.wait_for(|c| *c) => {}
    }
}

/// Reads frames and hands requests to the state, until EOF, a read error, a bad frame or a
/// frame left incomplete past `frame_timeout` (both answered with `Error`; the byte stream
/// cannot be trusted after them). Between frames a client may stay silent as long as it
/// likes (it is waiting for events); once a frame's first byte arrives, the rest must
/// follow within the deadline, so a truncated frame cannot hold a connection slot forever.
async fn read_requests(shared: &Arc<Shared>, client: u64, mut rd: OwnedReadHalf) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let limit = shared.config.frame_timeout;
    // When the frame now in `buf` is due complete (`None` while `buf` is empty).
    let mut due: Option<tokio::time::Instant> = None;
    loop {
        loop {
            match decode::<Request>(&buf) {
                Ok(Some((req, used))) => {
                    buf.drain(..used);
                    due = None;
                    shared.handle(client, req);
                }
                Ok(None) => break,
                Err(e) => {
                    let message = e.to_string();
                    shared.send_to(client, &Event::Error { message });
                    return;
                }
            }
        }
        if buf.is_empty() {
            due = None;
        } else {
            // Checked: a frame timeout too large to add means no deadline, not a panic.
            if due.is_none() {
                due = tokio::time::Instant::now().checked_add(limit);
            }
        }
        buf.reserve(8192);
        let read = rd.read_buf(&mut buf);
        let got = match due {
            None => read.await,
            Some(at) => match tokio::time::timeout_at(at, read).await {
                Ok(r) => r,
                Err(_) => {
                    let message = format!(
                        "incomplete frame: {} bytes received, the rest did not arrive within {} ms",
                        buf.len(),
                        limit.as_millis()
                    );
                    tracing::debug!(client, "{message}");
                    shared.send_to(client, &Event::Error { message });
                    return;
                }
            },
        };
        match got {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Writes queued frames until the queue closes, then shuts the write side down.
async fn write_frames(mut wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Frame>) {
    while let Some(f) = rx.recv().await {
        if wr.write_all(&f).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
