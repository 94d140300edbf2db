//! Daemon settings: limits on what a client may ask for, queueing, retention, and the scan
//! parameters every submitted scan runs with. Plain data; the CLI fills it from flags.

use crate::peer::PeerPolicy;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Which local address reaches a target: `sys::route_source` in production, a fixed map in
/// tests.
pub type RouteFn = Arc<dyn Fn(IpAddr) -> io::Result<IpAddr> + Send + Sync>;

/// Parameters of every engine scan the daemon starts (clients cannot choose them).
#[derive(Debug, Clone)]
pub struct ScanSettings {
    /// Packets per second of each chunk (the engine's global ceiling still applies).
    pub rate: u64,
    /// Retransmissions of silent pairs.
    pub retries: u8,
    /// Lower bound on the wait for replies after each round.
    pub min_wait: Duration,
    /// Upper bound on that wait.
    pub max_wait: Duration,
}

impl Default for ScanSettings {
    fn default() -> Self {
        ScanSettings {
            rate: 10_000,
            retries: 2,
            min_wait: portscope_core::rtt::DEFAULT_MIN_WAIT,
            max_wait: Duration::from_secs(1),
        }
    }
}

/// Everything the daemon needs besides the engine and the route lookup.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Scans running at once; later ones queue.
    pub max_running: usize,
    /// Scans waiting at most; a submit beyond is `busy`.
    pub max_queued: usize,
    /// Chunks of one scan running at once, so that one chunk's RTT wait overlaps another's
    /// sending. `max_running * chunks_in_flight` should not exceed the engine's scan slots.
    pub chunks_in_flight: usize,
    /// A running scan taking longer fails with `timeout` (queue time does not count).
    pub scan_timeout: Duration,
    /// Finished scans are kept this long for `Status` replays.
    pub retention: Duration,
    /// At most this many finished scans are kept (oldest dropped first).
    pub max_retained: usize,
    /// At most this many bytes of encoded results of finished scans are kept.
    pub max_retained_bytes: usize,
    /// Largest (target x port) pair count of one scan.
    pub max_pairs: u64,
    /// Largest number of target strings in one submit.
    pub max_targets: usize,
    /// Largest scan id, bytes.
    pub max_id_len: usize,
    /// Connections served at once; more are answered with an error and closed.
    pub max_connections: usize,
    /// Once a frame's first byte arrives, the whole frame must arrive within this; a client
    /// that leaves a frame truncated gets an `Error` and is disconnected. Silence between
    /// frames is not limited (clients wait for events).
    pub frame_timeout: Duration,
    /// Frames queued for one client; a client that falls this far behind is disconnected
    /// (it can reconnect and replay with `Status`).
    pub client_queue: usize,
    /// Which peers may connect.
    pub peers: PeerPolicy,
    /// Parameters of the engine scans.
    pub scan: ScanSettings,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            max_running: 8,
            max_queued: 64,
            chunks_in_flight: 4,
            scan_timeout: Duration::from_secs(600),
            retention: Duration::from_secs(3600),
            max_retained: 1024,
            max_retained_bytes: 256 << 20,
            max_pairs: 1 << 24,
            max_targets: 4096,
            max_id_len: 128,
            max_connections: 64,
            frame_timeout: Duration::from_secs(10),
            client_queue: 8192,
            peers: PeerPolicy::default(),
            scan: ScanSettings::default(),
        }
    }
}
