//! The engine daemon: serves the engine protocol (`portscope-proto`) over a Unix socket to
//! allowed peers, queues scans, runs each as chunks on one shared [`Engine`], streams their
//! events to every connected client, keeps finished scans for replay, and renders
//! Prometheus metrics. It does not open raw sockets (the `portscope engine` command does,
//! then calls [`sandbox::confine`] before any thread starts) and it never sends a packet
//! itself.
//!
//! Modules by job: `server` (socket, accept loop, connections, per-frame read deadline),
//! `state` (the lock and request handling), `validate` (a submit into a plan: size,
//! policy, then route), `scans` (the scan book: queue, phases, replay, retention),
//! `clients` (per-client bounded queues), `runner` (one scan's chunks on the engine; it
//! knows nothing of `state`, which hands it closures), `chunks`, `peer`, `config`,
//! `metrics`, and `sandbox` (uid switch, capabilities, no_new_privs, Landlock, seccomp).
//! Rejection codes and failure reasons are the protocol's enums (`portscope_proto::codes`).
//!
//! ```text
//!  client ──frames──> connection task ──Request──> Shared (one Mutex<State>)
//!     ^                                              │ queue by priority, max running
//!     └──frames── writer task <── per-client queue <─┤ broadcast events, replay on Status
//!                                                    └─> scan task (tokio) per running scan
//!                                                          └─> chunk jobs (spawn_blocking):
//!                                                              Engine::submit + ScanHandle
//! ```
//!
//! **Invariant: every event of a scan goes through the state lock**, into every client's
//! queue in the same order; a `Status` replay is built and queued under the same lock, so a
//! client sees a replay followed by exactly the live events after it, with no gap and no
//! repeat.
//!
//! What a client sees (the semantics `portscope-proto` leaves open):
//! - `Hello` first; a refused peer gets only `Error { "peer uid N not allowed" }`. A bad
//!   frame gets `Error` and the connection is closed; other connections are unaffected.
//! - Scans are engine-global: ids are unique among all scans the engine still knows (queued,
//!   running, or finished and retained), whoever submitted them. `Accepted`, `Progress`,
//!   `Ports` and `Finished` go to every connected client; `Rejected`, `Status` and replies
//!   to `Status { id }` / `Cancel` go only to the asking client.
//! - `Accepted { queue_position: 0 }` is followed by `Progress { 0, 0/N }` (started); a
//!   queued scan gets `Progress` whenever its position changes, and `Progress { 0, 0/N }`
//!   when it starts. Each complete chunk gives `Ports` (open and filtered results; closed
//!   ones only counted) then `Progress { chunks_complete }`. A chunk with many results is
//!   split over several `Ports` with the same `chunk` (at most 2048 results each, `closed`
//!   on the last one), so sum them.
//! - `Finished` ends a scan: `complete`, or `failed` with `cancelled`, `timeout` (running
//!   longer than the scan timeout; queue time does not count), `engine_shutdown`,
//!   `engine_error` or `policy`. Its counts cover the chunks reported in `Ports`; `sent`
//!   counts every probe of the scan. A failed scan reports no partial chunk.
//! - `Status { id }`: queued, its `Progress`; running, every `Ports` so far then the current
//!   `Progress`, then live events; finished, every `Ports` then `Finished` (so a consumer
//!   must treat `Ports` idempotently). A scan the engine does not know (restart, or its
//!   retention expired) answers `Finished { failed: engine_restarted }`, as does `Cancel`.
//!   Cancelling a finished scan repeats its `Finished`.
//!
//! [`Engine`]: portscope_engine::Engine

mod chunks;
mod clients;
mod config;
mod metrics;
mod peer;
mod runner;
pub mod sandbox;
mod scans;
mod server;
mod state;
mod validate;

pub use chunks::{chunk_ranges, port_spec_size, CHUNK_THRESHOLD, DEEP_CHUNKS};
pub use config::{DaemonConfig, RouteFn, ScanSettings};
pub use peer::{PeerPolicy, PeerRefused};
/// Logs the daemon's `tracing` events to stderr, filtered by `RUST_LOG` (default `info`).
/// Call once, from the binary.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub use server::{bind, bind_metrics, shutdown_signal, BindError, Daemon, SocketListener};
