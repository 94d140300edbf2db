//! The words the engine and the API share on the wire: why a submit is rejected
//! ([`RejectCode`], `Event::Rejected { code }`) and why a scan failed ([`FailReason`],
//! `Outcome::Failed`). Enums here, text only in frames and stored rows.

/// Why a submit is refused (`Event::Rejected { code }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
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
    /// Every code.
    pub const ALL: [RejectCode; 4] = [
        RejectCode::Policy,
        RejectCode::Invalid,
        RejectCode::Busy,
        RejectCode::Duplicate,
    ];

    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Policy => "policy",
            RejectCode::Invalid => "invalid",
            RejectCode::Busy => "busy",
            RejectCode::Duplicate => "duplicate",
        }
    }

    /// Parses a code as sent (`None` for a word this version does not know).
    pub fn parse(s: &str) -> Option<RejectCode> {
        RejectCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Why a scan ended as `Outcome::Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailReason {
    /// `Request::Cancel`.
    Cancelled,
    /// The scan ran longer than the engine's scan timeout.
    Timeout,
    /// The engine is shutting down.
    Shutdown,
    /// The engine does not know the scan (it restarted, or the result expired).
    Restarted,
    /// The engine refused or lost a chunk.
    EngineError,
    /// The engine's policy refused a chunk.
    Policy,
}

impl FailReason {
    /// Every reason.
    pub const ALL: [FailReason; 6] = [
        FailReason::Cancelled,
        FailReason::Timeout,
        FailReason::Shutdown,
        FailReason::Restarted,
        FailReason::EngineError,
        FailReason::Policy,
    ];

    /// The reason as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Cancelled => "cancelled",
            FailReason::Timeout => "timeout",
            FailReason::Shutdown => "engine_shutdown",
            FailReason::Restarted => "engine_restarted",
            FailReason::EngineError => "engine_error",
            FailReason::Policy => "policy",
        }
    }

    /// Parses a reason as sent (`None` for a word this version does not know).
    pub fn parse(s: &str) -> Option<FailReason> {
        FailReason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// As a protocol outcome.
    pub fn outcome(self) -> crate::Outcome {
        crate::Outcome::Failed(self.as_str().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for c in RejectCode::ALL {
            assert_eq!(RejectCode::parse(c.as_str()), Some(c));
        }
        for r in FailReason::ALL {
            assert_eq!(FailReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(RejectCode::parse("nope"), None);
        assert_eq!(FailReason::parse("nope"), None);
    }
}
