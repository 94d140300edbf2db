//! The daemon's words on the wire: why a submit is rejected ([`RejectCode`]) and why a scan
//! failed ([`FailReason`]). Enums here, text only where a frame is built.

/// Why a submit is refused (`Event::Rejected { code }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RejectCode {
    /// A target the policy denies.
    Policy,
    /// A malformed or too large request.
    Invalid,
    /// The queue is full or the engine is shutting down.
    Busy,
    /// The id is taken by a scan the engine still knows.
    Duplicate,
}

impl RejectCode {
    /// Every code, in the order of the metrics' counters.
    pub(crate) const ALL: [RejectCode; 4] = [
        RejectCode::Policy,
        RejectCode::Invalid,
        RejectCode::Busy,
        RejectCode::Duplicate,
    ];

    /// The code as sent.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RejectCode::Policy => "policy",
            RejectCode::Invalid => "invalid",
            RejectCode::Busy => "busy",
            RejectCode::Duplicate => "duplicate",
        }
    }

    /// Position in [`RejectCode::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Why a scan ended as `Outcome::Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailReason {
    /// `Request::Cancel`.
    Cancelled,
    /// The scan ran longer than `scan_timeout`.
    Timeout,
    /// The daemon is shutting down.
    Shutdown,
    /// The engine does not know the scan (it restarted, or the result expired).
    Restarted,
    /// The engine refused or lost a chunk.
    EngineError,
    /// The engine's policy refused a chunk.
    Policy,
}

impl FailReason {
    /// The reason as sent.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailReason::Cancelled => "cancelled",
            FailReason::Timeout => "timeout",
            FailReason::Shutdown => "engine_shutdown",
            FailReason::Restarted => "engine_restarted",
            FailReason::EngineError => "engine_error",
            FailReason::Policy => "policy",
        }
    }

    /// As a protocol outcome.
    pub(crate) fn outcome(self) -> portscope_proto::Outcome {
        portscope_proto::Outcome::Failed(self.as_str().into())
    }
}
