//! The scan runtime: one send thread and one receive thread over a transport, serving many
//! scans at once.
//!
//! ```text
//!  submit(plan) ──> Engine ──control──> send thread ──SendBatch──> PacketSink
//!                     │                     │ (fair share of a global token bucket)
//!                     │                     └─ round ends -> wait (RTT) -> retry silent pairs
//!                     └──control──> receive thread <──RecvBatch── PacketSource
//!                                         │ parse -> slot -> cookie -> de-dup
//!  ScanHandle <──────── events ───────────┘
//! ```
//!
//! The per-packet work is the pure core's (`portscope-core`); this crate owns threads,
//! clocks, randomness and channels. It does not parse command lines or print anything.

mod engine;
mod plan;
mod receiver;
mod scan;
mod sender;
mod stats;

pub use engine::{Engine, EngineConfig, SubmitError};
pub use plan::{PlanError, PlanLimits, ScanPlan, ScanRequest};
pub use scan::{Outcome, Progress, ScanEvent, ScanHandle, ScanSummary};
pub use stats::EngineStats;
