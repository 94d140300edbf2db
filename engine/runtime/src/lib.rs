//! The scan runtime: one send thread and one receive thread over a transport, serving many
//! scans at once.
//!
//! ```text
//!  submit(plan) ──> Engine ──control──> send thread ──SendBatch──> PacketSink
//!                     │                     │ (schedule: fair share of a global token bucket,
//!                     │                     │  rounds: wait (RTT) -> retry silent pairs while
//!                     │                     │  the loss estimate says some may be wrong)
//!                     └──control──> receive thread <──RecvBatch── PacketSource
//!                                         │ parse -> slot -> cookie -> de-dup
//!  ScanHandle <──────── events ───────────┘
//! ```
//!
//! The per-packet work is the pure core's (`portscope-core`); this crate owns threads,
//! clocks, randomness and channels. It does not parse command lines or print anything.
//!
//! Module layering (no cycles): `clock`, `slots`, `stats` -> `scan` -> `schedule` (pure:
//! what to send when) -> `send_loop` / `recv_loop` (the threads, thin drivers) -> `engine`.

mod clock;
mod engine;
mod plan;
mod recv_loop;
mod scan;
mod schedule;
mod send_loop;
mod slots;
mod stats;
mod wire;

pub use clock::{Clock, SimClock, SystemClock};
pub use engine::{default_send_threads, pick_cpus, wire_cpus, Engine, EngineConfig, SubmitError};
pub use plan::{PlanError, PlanLimits, ScanPlan, ScanRequest};
pub use portscope_core::retry::{RetryPolicy, DEFAULT_MAX_RETRIES, MIN_RETRIES};

/// The most retry rounds a scan can send (its source-port block has this many more ports).
pub const MAX_RETRIES: u8 = (portscope_core::classify::ROUNDS - 1) as u8;
pub use scan::{AnswerSpan, Outcome, Progress, ScanEvent, ScanHandle, ScanSummary};
pub use stats::EngineStats;
