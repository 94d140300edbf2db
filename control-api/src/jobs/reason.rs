//! Why a scan failed, as the API stores and serves it: the engine's reason
//! ([`portscope_proto::FailReason`], or a word a newer engine sends), `engine_unavailable`
//! (the engine was unreachable past the grace period), or `rejected_<code>` (the engine
//! refused the submit), or `chunk_failed` (a job scan's chunk failed on every attempt the
//! queue allows). Both services store the same words; a managed scan's `error`
//! adds the engine's message to a rejection (`rejected_<code>: <message>`).

use std::fmt;

/// The API's own reason: the engine was unreachable for longer than the grace period.
pub const ENGINE_UNAVAILABLE: &str = "engine_unavailable";

/// A job scan's reason: one of its chunks failed on every attempt the queue allows.
pub const CHUNK_FAILED: &str = "chunk_failed";

/// Why a scan failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// `Outcome::Failed` from the engine.
    Engine(EngineReason),
    /// Unreachable past the grace period.
    EngineUnavailable,
    /// The engine refused the submit.
    Rejected {
        /// `Event::Rejected { code }` as sent.
        code: String,
        /// The engine's message.
        message: String,
    },
    /// A chunk job failed its last attempt (the queue gives it up).
    ChunkFailed,
}

/// The engine's reason: a known word, or one a newer engine sends (kept as sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineReason {
    /// A word of [`portscope_proto::FailReason`].
    Known(portscope_proto::FailReason),
    /// Any other word.
    Other(String),
}

impl EngineReason {
    /// From `Outcome::Failed(reason)`.
    pub fn parse(s: &str) -> EngineReason {
        portscope_proto::FailReason::parse(s)
            .map_or_else(|| EngineReason::Other(s.to_string()), EngineReason::Known)
    }
}

impl FailReason {
    /// The stored word: `timeout`, `engine_unavailable`, `rejected_policy`, ...
    pub fn code(&self) -> String {
        match self {
            FailReason::Engine(EngineReason::Known(r)) => r.as_str().to_string(),
            FailReason::Engine(EngineReason::Other(r)) => r.clone(),
            FailReason::EngineUnavailable => ENGINE_UNAVAILABLE.to_string(),
            FailReason::Rejected { code, .. } => format!("rejected_{code}"),
            FailReason::ChunkFailed => CHUNK_FAILED.to_string(),
        }
    }

    /// The word with the engine's message of a rejection (`rejected_<code>: <message>`).
    pub fn detailed(&self) -> String {
        match self {
            FailReason::Rejected { message, .. } => format!("{}: {message}", self.code()),
            other => other.code(),
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_as_served() {
        let r = |s: &str| FailReason::Engine(EngineReason::parse(s));
        assert_eq!(r("timeout").code(), "timeout");
        assert_eq!(r("engine_restarted").code(), "engine_restarted");
        assert_eq!(r("something_new").code(), "something_new");
        assert_eq!(FailReason::EngineUnavailable.code(), "engine_unavailable");
        let rej = FailReason::Rejected {
            code: "policy".into(),
            message: "denied".into(),
        };
        assert_eq!(rej.code(), "rejected_policy");
        assert_eq!(rej.detailed(), "rejected_policy: denied");
    }
}
