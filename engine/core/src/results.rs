//! Port states, reasons, per-port results and the de-duplicating answered-set.
//!
//! Every (target, port) pair of a finished scan gets exactly one [`PortResult`]: the first
//! valid reply wins ([`AnsweredSet::insert`] says whether it was first), and pairs never
//! answered become `filtered` / `no-response` when the scan ends.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The three-state answer for a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    /// A SYN-ACK came back.
    Open,
    /// A RST came back.
    Closed,
    /// An ICMP unreachable came back, or nothing did.
    Filtered,
}

impl PortState {
    /// Lower-case name as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::Filtered => "filtered",
        }
    }
}

/// Why a port got its state (nmap's `reason` vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// SYN-ACK.
    SynAck,
    /// RST.
    Reset,
    /// No answer after all retries.
    NoResponse,
    /// ICMP / ICMPv6 destination unreachable.
    IcmpUnreachable,
}

impl Reason {
    /// Kebab-case name as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SynAck => "syn-ack",
            Reason::Reset => "reset",
            Reason::NoResponse => "no-response",
            Reason::IcmpUnreachable => "icmp-unreachable",
        }
    }
}

/// One port's final answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortResult {
    /// Target address.
    pub ip: IpAddr,
    /// Target port.
    pub port: u16,
    /// Always `tcp` for now.
    pub proto: Proto,
    /// Open, closed or filtered.
    pub state: PortState,
    /// What the state is based on.
    pub reason: Reason,
    /// TTL / hop limit of the reply (absent for no-response).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ttl: Option<u8>,
    /// ICMP type, for `icmp-unreachable`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub icmp_type: Option<u8>,
    /// ICMP code, for `icmp-unreachable`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub icmp_code: Option<u8>,
}

impl PortResult {
    /// A TCP result with no ICMP details: `ttl` of the reply, `None` for no-response.
    pub fn tcp(ip: IpAddr, port: u16, state: PortState, reason: Reason, ttl: Option<u8>) -> Self {
        PortResult {
            ip,
            port,
            proto: Proto::Tcp,
            state,
            reason,
            ttl,
            icmp_type: None,
            icmp_code: None,
        }
    }
}

/// Transport protocol of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    #[default]
    Tcp,
}

/// A lock-free bitmap over pair indices: which pairs have been answered.
///
/// Shared between the receive thread (which inserts) and the send thread (which skips
/// answered pairs on retries). One bit per pair: 2^20 pairs take 128 KiB.
pub struct AnsweredSet {
    words: Box<[AtomicU64]>,
    len: u64,
}

impl std::fmt::Debug for AnsweredSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AnsweredSet({}/{})", self.count(), self.len)
    }
}

impl AnsweredSet {
    /// An empty set over `0..len`.
    pub fn new(len: u64) -> Self {
        let n = len.div_ceil(64) as usize;
        AnsweredSet {
            words: (0..n).map(|_| AtomicU64::new(0)).collect(),
            len,
        }
    }

    /// Marks `i` answered; returns true if it was not answered before.
    #[inline]
    pub fn insert(&self, i: u64) -> bool {
        let bit = 1u64 << (i % 64);
        self.words[(i / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// Whether `i` has been answered.
    #[inline]
    pub fn contains(&self, i: u64) -> bool {
        self.words[(i / 64) as usize].load(Ordering::Relaxed) & (1u64 << (i % 64)) != 0
    }

    /// Number of answered pairs.
    pub fn count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Capacity.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the capacity is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Iterates the pairs never answered, in index order.
    pub fn unanswered(&self) -> impl Iterator<Item = u64> + '_ {
        let len = self.len;
        self.words.iter().enumerate().flat_map(move |(wi, w)| {
            let mut free = !w.load(Ordering::Relaxed);
            std::iter::from_fn(move || {
                while free != 0 {
                    let b = free.trailing_zeros() as u64;
                    free &= free - 1;
                    let i = wi as u64 * 64 + b;
                    if i < len {
                        return Some(i);
                    }
                }
                None
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_dedups_and_unanswered_lists_the_rest() {
        let s = AnsweredSet::new(130);
        assert!(s.insert(0));
        assert!(!s.insert(0));
        assert!(s.insert(129));
        assert!(s.contains(129) && !s.contains(128));
        assert_eq!(s.count(), 2);
        let rest: Vec<u64> = s.unanswered().collect();
        assert_eq!(rest.len(), 128);
        assert_eq!(rest.first(), Some(&1));
        assert_eq!(rest.last(), Some(&128));
    }

    #[test]
    fn result_json_shape() {
        let r = PortResult {
            ip: "198.18.0.2".parse().unwrap(),
            port: 443,
            proto: Proto::Tcp,
            state: PortState::Filtered,
            reason: Reason::IcmpUnreachable,
            ttl: Some(64),
            icmp_type: Some(3),
            icmp_code: Some(13),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"ip":"198.18.0.2","port":443,"proto":"tcp","state":"filtered","reason":"icmp-unreachable","ttl":64,"icmp_type":3,"icmp_code":13}"#
        );
    }
}
