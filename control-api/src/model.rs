//! The self-scan API's wire shapes (seed 000) and the two scan types' definitions.
//!
//! One response type, [`ScanResponse`]: `ip`, `scan_type`, then `status` and the fields
//! of that status, in the seed's order. The same body is served by `GET`, by `POST`
//! (queued / running / coalesced) and POSTed to webhooks.

use portscope_core::services::tcp_service;
use portscope_proto::ScanKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

pub use portscope_input::order::FAST_PORTS;

/// `fast` (32 ports) or `deep` (65,535 ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScanType {
    /// The 32 ports of [`FAST_PORTS`].
    Fast,
    /// Ports 1-65535.
    Deep,
}

impl ScanType {
    /// `fast` / `deep`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanType::Fast => "fast",
            ScanType::Deep => "deep",
        }
    }

    /// Parses `fast` / `deep`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fast" => Some(ScanType::Fast),
            "deep" => Some(ScanType::Deep),
            _ => None,
        }
    }

    /// The engine's port spec.
    pub fn ports_spec(self) -> String {
        match self {
            ScanType::Fast => portscope_input::order::fast_ports_spec(),
            ScanType::Deep => portscope_input::order::DEEP_PORTS_SPEC.to_string(),
        }
    }

    /// The engine's scan kind.
    pub fn kind(self) -> ScanKind {
        match self {
            ScanType::Fast => ScanKind::Fast,
            ScanType::Deep => ScanKind::Deep,
        }
    }

    /// Engine queue priority: fast scans go before deep ones.
    pub fn priority(self) -> u8 {
        match self {
            ScanType::Fast => 5,
            ScanType::Deep => 1,
        }
    }

    /// Indicative scanning time of one scan, seconds (the seed's lower figures).
    pub fn eta_base(self) -> u64 {
        match self {
            ScanType::Fast => 20,
            ScanType::Deep => 60,
        }
    }
}

/// A scan's status word as stored and served, self-scan and managed alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for the engine.
    Queued,
    /// Probing.
    Running,
    /// Finished with results.
    Complete,
    /// Ended with an error.
    Failed,
    /// Cancelled (managed scans).
    Cancelled,
}

impl Status {
    /// `queued`, `running`, `complete`, `failed`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Complete => "complete",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses the stored word.
    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Queued,
            Status::Running,
            Status::Complete,
            Status::Failed,
            Status::Cancelled,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The service name shown for a port: the bundled table's name in upper case.
pub fn service_name(port: u16) -> Option<String> {
    tcp_service(port).map(str::to_uppercase)
}

/// One reported port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortEntry {
    /// TCP port.
    #[schema(example = 22)]
    pub port: u16,
    /// `open` or `filtered`.
    #[schema(example = "open")]
    pub state: String,
    /// Upper-case service name, null when unknown.
    #[schema(example = "SSH", required = true)]
    pub service: Option<String>,
    /// What the service sent first (printable ASCII, other bytes as `\xNN`), or null.
    #[schema(required = true)]
    pub banner: Option<String>,
}

/// A scan's state as served: `ip`, `scan_type`, `status` and the status's fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScanResponse {
    /// The scanned (requesting) address.
    #[schema(example = "203.0.113.42")]
    pub ip: String,
    /// `fast` or `deep`.
    pub scan_type: ScanType,
    /// `status` and its fields.
    #[serde(flatten)]
    pub state: ScanState,
}

/// The fields of each status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ScanState {
    /// Waiting for the engine.
    Queued {
        /// Indicative seconds of scanning, not a guarantee: the type's typical time times
        /// (scans ahead + 1).
        eta_seconds: u64,
        /// Scans ahead of this one.
        queue_position: u32,
        /// Chunks done (0 while queued).
        chunks_complete: u32,
        /// Chunks in all (0 until the engine has accepted the scan).
        total_chunks: u32,
    },
    /// Probing.
    Running {
        /// Chunks done.
        chunks_complete: u32,
        /// Chunks in all.
        total_chunks: u32,
    },
    /// Results are ready.
    Complete {
        /// Open ports, by port.
        ports_open: Vec<PortEntry>,
        /// Filtered ports (no answer or ICMP unreachable), by port.
        ports_filtered: Vec<PortEntry>,
        /// Port -> banner, for ports that sent one.
        service_banners: BTreeMap<u16, String>,
        /// Reverse DNS name of the address, null when none answers.
        #[schema(required = true)]
        ptr_record: Option<String>,
        /// Scan time in milliseconds.
        duration_ms: u64,
        /// Unix seconds of completion.
        completed_at: u64,
        /// Unix seconds after which the result is gone.
        expires_at: u64,
    },
    /// The scan did not complete.
    Failed {
        /// Chunks done when it stopped.
        chunks_complete: u32,
        /// Chunks in all.
        total_chunks: u32,
        /// `timeout`, `cancelled`, `engine_restarted`, `engine_unavailable`,
        /// `rejected_<code>`, ...
        fail_reason: String,
    },
    /// No scan of this type for this address (or it expired).
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_ports_are_32_distinct_and_include_smtp() {
        let mut p = FAST_PORTS.to_vec();
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), 32);
        assert!(p.contains(&25));
        assert_eq!(service_name(22).as_deref(), Some("SSH"));
        assert_eq!(service_name(443).as_deref(), Some("HTTPS"));
        assert_eq!(service_name(4), None);
    }

    #[test]
    fn shapes_serialise_in_the_seed_order() {
        let r = ScanResponse {
            ip: "203.0.113.42".into(),
            scan_type: ScanType::Fast,
            state: ScanState::None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"ip":"203.0.113.42","scan_type":"fast","status":"none"}"#
        );
        let f = ScanResponse {
            ip: "203.0.113.42".into(),
            scan_type: ScanType::Deep,
            state: ScanState::Failed {
                chunks_complete: 28,
                total_chunks: 32,
                fail_reason: "timeout".into(),
            },
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"ip":"203.0.113.42","scan_type":"deep","status":"failed","chunks_complete":28,"total_chunks":32,"fail_reason":"timeout"}"#
        );
        let back: ScanResponse = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(back, f);
    }
}
