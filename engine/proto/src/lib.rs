//! The engine <-> control-API protocol: versioned, length-prefixed JSON frames over a Unix
//! socket, and the message types. Pure: no I/O; callers feed bytes in and take frames out.
//!
//! Frame: `u32` big-endian length of what follows, then one version byte ([`VERSION`]),
//! then a UTF-8 JSON body (one [`Request`] from the API, or one [`Event`] from the engine).
//! Lengths above [`MAX_FRAME`] and unknown versions are errors, never panics; an incomplete
//! frame is `Ok(None)` (as in mini-redis: an expected condition, not an error).

pub mod codes;

pub use codes::{FailReason, RejectCode};
use portscope_core::results::PortResult;
use serde::{Deserialize, Serialize};

/// Protocol version carried in every frame.
pub const VERSION: u8 = 1;
/// Largest accepted frame body (version byte + JSON), bytes.
pub const MAX_FRAME: usize = 1 << 20;

/// Frame decoding errors. After any of these the connection should be answered with an
/// [`Event::Error`] and closed: the byte stream can no longer be trusted.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Length prefix beyond [`MAX_FRAME`] (or zero).
    #[error("frame length {0} out of range (1..={MAX_FRAME})")]
    Length(usize),
    /// Unknown version byte.
    #[error("unsupported protocol version {0} (this side speaks {VERSION})")]
    Version(u8),
    /// Body is not a valid message.
    #[error("malformed message: {0}")]
    Body(#[from] serde_json::Error),
}

/// Encodes one message as a frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("protocol messages always serialise");
    let mut out = Vec::with_capacity(5 + body.len());
    out.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    out.push(VERSION);
    out.extend_from_slice(&body);
    out
}

/// Tries to decode one frame from the front of `buf`. Returns the message and the number
/// of bytes consumed, `Ok(None)` if more bytes are needed.
pub fn decode<T: for<'de> Deserialize<'de>>(buf: &[u8]) -> Result<Option<(T, usize)>, ProtoError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(ProtoError::Length(len));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    if buf[4] != VERSION {
        return Err(ProtoError::Version(buf[4]));
    }
    let msg = serde_json::from_slice(&buf[5..4 + len])?;
    Ok(Some((msg, 4 + len)))
}

/// What kind of scan, for queue priority and chunking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanKind {
    /// A short port list.
    Fast,
    /// All 65,535 ports.
    Deep,
    /// Anything else (managed scans).
    Custom,
}

/// API -> engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Start a scan. `id` is chosen by the API and unique per engine connection lifetime.
    Submit {
        /// Scan id (the API's).
        id: String,
        /// Addresses, CIDRs or ranges.
        targets: Vec<String>,
        /// Port spec, e.g. `-` or `22,80`.
        ports: String,
        /// Kind of scan.
        kind: ScanKind,
        /// Higher runs first among queued scans (0..=9).
        priority: u8,
    },
    /// Stop a scan; the engine answers with `Finished { outcome: Failed("cancelled") }`.
    Cancel {
        /// Scan id.
        id: String,
    },
    /// Ask for a [`Event::Status`] of one scan (or of the engine when `id` is `None`).
    Status {
        /// Scan id, or none for the engine.
        id: Option<String>,
    },
}

/// How a scan ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    /// All chunks complete; every port has a state.
    Complete,
    /// Ended early: `timeout`, `cancelled`, `engine_restarted`, `policy`, ...
    Failed(String),
}

/// Counts of a finished scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Counts {
    /// Open ports.
    pub open: u64,
    /// Closed ports.
    pub closed: u64,
    /// Filtered ports.
    pub filtered: u64,
    /// Probes sent.
    pub sent: u64,
}

/// Engine-wide status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EngineStatus {
    /// Scans running now.
    pub running: u32,
    /// Scans waiting.
    pub queued: u32,
    /// Most scans run at once.
    pub max_running: u32,
    /// Probes sent since start.
    pub probes_sent: u64,
}

/// Engine -> API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Sent once on connect.
    Hello {
        /// Engine version string.
        engine: String,
        /// Protocol version.
        protocol: u8,
    },
    /// A submit was accepted and queued (position 0 = starts now).
    Accepted {
        /// Scan id.
        id: String,
        /// Scans ahead of it.
        queue_position: u32,
        /// Chunks it will run as.
        total_chunks: u32,
    },
    /// A submit was refused; nothing was sent.
    Rejected {
        /// Scan id.
        id: String,
        /// `policy`, `invalid`, `busy` or `duplicate`.
        code: String,
        /// Human-readable reason.
        message: String,
    },
    /// Queue position changed or the scan started (`queue_position` 0) or a chunk finished.
    Progress {
        /// Scan id.
        id: String,
        /// Scans ahead of it (0 when running).
        queue_position: u32,
        /// Chunks done.
        chunks_complete: u32,
        /// Chunks in all.
        total_chunks: u32,
    },
    /// Results of one finished chunk: open and filtered ports (closed ones only counted).
    Ports {
        /// Scan id.
        id: String,
        /// Chunk index.
        chunk: u32,
        /// Open and filtered ports of that chunk.
        results: Vec<PortResult>,
        /// Closed ports in that chunk.
        closed: u64,
    },
    /// The scan is over; no more events for `id`.
    Finished {
        /// Scan id.
        id: String,
        /// How it ended.
        #[serde(flatten)]
        outcome: Outcome,
        /// Totals.
        counts: Counts,
        /// Wall time from start to end, ms.
        duration_ms: u64,
    },
    /// Answer to `Status { id: None }`.
    Status(EngineStatus),
    /// The last frame could not be used; the engine closes the connection after this.
    Error {
        /// What was wrong.
        message: String,
    },
}

impl Event {
    /// The scan this event is about (`None` for hello, status and connection errors).
    pub fn scan_id(&self) -> Option<&str> {
        match self {
            Event::Accepted { id, .. }
            | Event::Rejected { id, .. }
            | Event::Progress { id, .. }
            | Event::Ports { id, .. }
            | Event::Finished { id, .. } => Some(id),
            Event::Hello { .. } | Event::Status(_) | Event::Error { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_partial_frames() {
        let req = Request::Submit {
            id: "s1".into(),
            targets: vec!["198.18.0.2".into()],
            ports: "-".into(),
            kind: ScanKind::Deep,
            priority: 1,
        };
        let f = encode(&req);
        for cut in 0..f.len() {
            assert!(decode::<Request>(&f[..cut]).unwrap().is_none(), "cut {cut}");
        }
        let mut two = f.clone();
        two.extend_from_slice(&encode(&Request::Cancel { id: "s1".into() }));
        let (a, n) = decode::<Request>(&two).unwrap().unwrap();
        assert_eq!((a, n), (req, f.len()));
        let (b, _) = decode::<Request>(&two[n..]).unwrap().unwrap();
        assert_eq!(b, Request::Cancel { id: "s1".into() });
    }

    #[test]
    fn wire_shape_is_stable() {
        let e = Event::Finished {
            id: "s1".into(),
            outcome: Outcome::Failed("timeout".into()),
            counts: Counts::default(),
            duration_ms: 5,
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"finished","id":"s1","outcome":"failed","reason":"timeout","counts":{"open":0,"closed":0,"filtered":0,"sent":0},"duration_ms":5}"#
        );
        let ok = Event::Finished {
            id: "s".into(),
            outcome: Outcome::Complete,
            counts: Counts::default(),
            duration_ms: 1,
        };
        let back: Event = serde_json::from_str(&serde_json::to_string(&ok).unwrap()).unwrap();
        assert_eq!(back, ok);
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        assert!(matches!(
            decode::<Request>(&[0, 0, 0, 0]),
            Err(ProtoError::Length(0))
        ));
        assert!(matches!(
            decode::<Request>(&[0xff, 0xff, 0xff, 0xff, 1]),
            Err(ProtoError::Length(_))
        ));
        assert!(matches!(
            decode::<Request>(&[0, 0, 0, 2, 9, b'{']),
            Err(ProtoError::Version(9))
        ));
        assert!(matches!(
            decode::<Request>(&[0, 0, 0, 3, 1, b'{', b'}']),
            Err(ProtoError::Body(_))
        ));
        let junk = br#"{"type":"submit","id":1}"#;
        let mut f = ((junk.len() + 1) as u32).to_be_bytes().to_vec();
        f.push(1);
        f.extend_from_slice(junk);
        assert!(matches!(decode::<Request>(&f), Err(ProtoError::Body(_))));
    }
}
