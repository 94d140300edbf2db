//! A scan's probe space and reply classification: which probe goes where, and what a reply
//! proves about which port.
//!
//! [`ScanSpace`] ties together the cookie key, the target/port sets, the visiting order and
//! the scan's block of source ports. It produces probes ([`ScanSpace::probe`]) and validates
//! replies ([`ScanSpace::classify`]) statelessly: a reply counts only if its cookie matches
//! the probe we would have sent for that exact 4-tuple. Everything else is a [`Discard`]
//! with a reason, counted by the caller and dropped. De-duplication is the caller's
//! (`results::AnsweredSet`).
//!
//! Source ports: the engine owns `SRC_PORT_BASE..=65535`, outside Linux's default ephemeral
//! range, cut into [`SLOTS`] blocks of [`ROUNDS`] ports. A scan owns one block (its slot) and
//! sends retry round `r` from `base + r`, so the port a reply comes back to says which scan
//! and which round it answers.
//!
//! A scan with a fixed source port ([`ScanSpace::with_source_port`], nmap's `-g`) sends
//! every round from that one port with the same sequence number, exactly as a TCP stack
//! retransmits a SYN, so the cookie keeps all 32 keyed bits. The port then says nothing
//! about scan or round: the caller tries each scan sending from that port (the cookie
//! picks the right one), and [`Observation::round`] of such a scan is only a placeholder
//! (0) that the caller replaces with the last round the pair was sent in (see
//! ARCHITECTURE.md, "Fixed source port").

use crate::cookie::CookieKey;
use crate::order::Permutation;
use crate::reply::{Reply, ReplyKind};
use crate::results::{PortResult, PortState, Proto, Reason};
use crate::targets::{PortSet, SpecError, TargetSet, MAX_PAIRS};
use std::net::IpAddr;

/// First source port the engine uses.
pub const SRC_PORT_BASE: u16 = 61440;
/// Ports per scan slot = the maximum number of send rounds (1 + retries).
pub const ROUNDS: u16 = 16;
/// Number of scan slots (concurrent scans an engine can hold).
pub const SLOTS: u16 = ((65536 - SRC_PORT_BASE as u32) / ROUNDS as u32) as u16;

/// The (slot, round) a local port belongs to, if it is one of the engine's.
#[inline]
pub fn split_port(local_port: u16) -> Option<(u16, u8)> {
    let off = local_port.checked_sub(SRC_PORT_BASE)?;
    Some((off / ROUNDS, (off % ROUNDS) as u8))
}

/// The source port of `round` in `slot`.
#[inline]
pub fn source_port(slot: u16, round: u8) -> u16 {
    SRC_PORT_BASE + slot * ROUNDS + u16::from(round)
}

macro_rules! discards {
    ($($(#[$doc:meta])* $name:ident => $text:literal,)*) => {
        /// Why a received packet was not accepted as a scan reply. Counted, never an error.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Discard { $($(#[$doc])* $name,)* }

        impl Discard {
            /// Every reason, in counter order.
            pub const ALL: &'static [Discard] = &[$(Discard::$name,)*];

            /// Snake-case name for summaries and metrics.
            pub fn as_str(self) -> &'static str {
                match self { $(Discard::$name => $text,)* }
            }
        }
    };
}

discards! {
    /// Not a well-formed IPv4/IPv6 packet.
    IpMalformed => "ip_malformed",
    /// An IP fragment.
    Fragment => "fragment",
    /// Neither TCP nor ICMP(v6).
    OtherProtocol => "other_protocol",
    /// Truncated or malformed TCP header.
    TcpMalformed => "tcp_malformed",
    /// TCP with neither SYN-ACK nor RST.
    TcpFlags => "tcp_flags",
    /// Truncated ICMP header.
    IcmpMalformed => "icmp_malformed",
    /// ICMP type other than destination unreachable.
    IcmpType => "icmp_type",
    /// ICMPv4 unreachable code that does not mean filtered (e.g. fragmentation needed).
    IcmpCode => "icmp_code",
    /// ICMP quote is not an IP+TCP header.
    IcmpQuote => "icmp_quote",
    /// Arrived at a port no running scan owns.
    NoScan => "no_scan",
    /// Cookie does not match: not our probe, or a forgery.
    BadCookie => "bad_cookie",
    /// From an address the scan does not target.
    UnknownTarget => "unknown_target",
    /// About a port the scan does not probe.
    UnknownPort => "unknown_port",
    /// A valid reply for a pair already answered.
    Duplicate => "duplicate",
}

/// Number of discard reasons.
pub const DISCARD_KINDS: usize = Discard::ALL.len();

impl Discard {
    /// Index into a counter array.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Counters per discard reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscardCounts(pub [u64; DISCARD_KINDS]);

impl DiscardCounts {
    /// Counts one discard.
    #[inline]
    pub fn record(&mut self, d: Discard) {
        self.0[d.index()] += 1;
    }

    /// Count for one reason.
    pub fn get(&self, d: Discard) -> u64 {
        self.0[d.index()]
    }

    /// Total of all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Non-zero counters as (name, count).
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Discard::ALL
            .iter()
            .map(|d| (d.as_str(), self.get(*d)))
            .filter(|(_, n)| *n > 0)
    }
}

/// A probe to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Pair index.
    pub pair: u64,
    /// Our source address.
    pub src: IpAddr,
    /// Target address.
    pub dst: IpAddr,
    /// Source port (slot + round, or the fixed port).
    pub src_port: u16,
    /// Target port.
    pub dst_port: u16,
    /// Sequence number = cookie.
    pub seq: u32,
}

/// What a valid reply says about one pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Pair index.
    pub pair: u64,
    /// Which send round the reply answers.
    pub round: u8,
    /// State.
    pub state: PortState,
    /// Reason.
    pub reason: Reason,
    /// Reply TTL.
    pub ttl: u8,
    /// ICMP (type, code), for unreachables.
    pub icmp: Option<(u8, u8)>,
}

/// Our source addresses, per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sources {
    /// IPv4 source, needed if any target is IPv4.
    pub v4: Option<IpAddr>,
    /// IPv6 source, needed if any target is IPv6.
    pub v6: Option<IpAddr>,
}

/// Errors building a scan space.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpaceError {
    /// Bad targets or ports.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// No source address for a family that has targets.
    #[error("no IPv{0} source address: the scanner has no route to the IPv{0} targets")]
    NoSource(u8),
    /// The slot is out of range.
    #[error("scan slot {0} out of range (engine has {SLOTS})")]
    BadSlot(u16),
}

/// Everything needed to emit and validate one scan's probes.
#[derive(Debug, Clone)]
pub struct ScanSpace {
    key: CookieKey,
    targets: TargetSet,
    ports: PortSet,
    order: Permutation,
    sources: Sources,
    slot: u16,
    pairs: u64,
    /// Every round's source port when fixed; `None`: the slot's block.
    fixed_port: Option<u16>,
}

impl ScanSpace {
    /// Builds the space. `key` and `order_seed` must be fresh random values per scan.
    pub fn new(
        key: CookieKey,
        order_seed: u64,
        targets: TargetSet,
        ports: PortSet,
        sources: Sources,
        slot: u16,
    ) -> Result<Self, SpaceError> {
        if slot >= SLOTS {
            return Err(SpaceError::BadSlot(slot));
        }
        let pairs = u128::from(targets.len()) * u128::from(ports.len());
        if pairs > u128::from(MAX_PAIRS) {
            return Err(SpecError::TooLarge(pairs).into());
        }
        let (has4, has6) = targets.families();
        if has4 && sources.v4.is_none() {
            return Err(SpaceError::NoSource(4));
        }
        if has6 && sources.v6.is_none() {
            return Err(SpaceError::NoSource(6));
        }
        let pairs = pairs as u64;
        Ok(ScanSpace {
            key,
            order: Permutation::new(pairs, order_seed),
            targets,
            ports,
            sources,
            slot,
            pairs,
            fixed_port: None,
        })
    }

    /// The same space sending every round from `port` (`None`: the slot's own ports).
    pub fn with_source_port(self, port: Option<u16>) -> Self {
        ScanSpace {
            fixed_port: port,
            ..self
        }
    }

    /// The fixed source port, if the scan has one.
    pub fn fixed_port(&self) -> Option<u16> {
        self.fixed_port
    }

    /// Number of (target x port) pairs.
    pub fn pairs(&self) -> u64 {
        self.pairs
    }

    /// The slot.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// Targets.
    pub fn targets(&self) -> &TargetSet {
        &self.targets
    }

    /// Ports.
    pub fn ports(&self) -> &PortSet {
        &self.ports
    }

    /// Source addresses.
    pub fn sources(&self) -> Sources {
        self.sources
    }

    /// The pair visited at send position `i`.
    #[inline]
    pub fn pair_at(&self, i: u64) -> u64 {
        self.order.at(i)
    }

    /// The send position of `pair` (inverse of [`Self::pair_at`]).
    #[inline]
    pub fn position_of(&self, pair: u64) -> u64 {
        self.order.position_of(pair)
    }

    /// Target address and port of a pair.
    #[inline]
    pub fn target_port(&self, pair: u64) -> (IpAddr, u16) {
        let n = self.ports.len();
        (self.targets.addr(pair / n), self.ports.port(pair % n))
    }

    /// The probe for `pair` in `round`.
    #[inline]
    pub fn probe(&self, pair: u64, round: u8) -> Probe {
        let (dst, dst_port) = self.target_port(pair);
        let src = match dst {
            IpAddr::V4(_) => self.sources.v4,
            IpAddr::V6(_) => self.sources.v6,
        }
        .expect("source presence checked in ScanSpace::new");
        let src_port = self
            .fixed_port
            .unwrap_or_else(|| source_port(self.slot, round));
        Probe {
            pair,
            src,
            dst,
            src_port,
            dst_port,
            seq: self.key.cookie(src, dst, src_port, dst_port),
        }
    }

    /// Validates a reply against this scan and says what it proves. For a scan with a fixed
    /// source port the observation's `round` is 0: the port does not carry it.
    #[inline]
    pub fn classify(&self, r: &Reply) -> Result<Observation, Discard> {
        let round = match self.fixed_port {
            None => {
                let (slot, round) = split_port(r.local_port).ok_or(Discard::NoScan)?;
                if slot != self.slot {
                    return Err(Discard::NoScan);
                }
                round
            }
            Some(p) if p == r.local_port => 0,
            Some(_) => return Err(Discard::NoScan),
        };
        let cookie = self
            .key
            .cookie(r.local, r.remote, r.local_port, r.remote_port);
        let (state, reason, icmp) = match r.kind {
            ReplyKind::SynAck if r.check == cookie.wrapping_add(1) => {
                (PortState::Open, Reason::SynAck, None)
            }
            ReplyKind::Rst if r.check == cookie || r.check == cookie.wrapping_add(1) => {
                (PortState::Closed, Reason::Reset, None)
            }
            ReplyKind::Unreachable { icmp_type, code } if r.check == cookie => (
                PortState::Filtered,
                Reason::IcmpUnreachable,
                Some((icmp_type, code)),
            ),
            _ => return Err(Discard::BadCookie),
        };
        let t = self
            .targets
            .index_of(r.remote)
            .ok_or(Discard::UnknownTarget)?;
        let p = self
            .ports
            .index_of(r.remote_port)
            .ok_or(Discard::UnknownPort)?;
        Ok(Observation {
            pair: t * self.ports.len() + p,
            round,
            state,
            reason,
            ttl: r.ttl,
            icmp,
        })
    }

    /// The printable result of an observation.
    pub fn result(&self, o: &Observation) -> PortResult {
        let (ip, port) = self.target_port(o.pair);
        PortResult {
            ip,
            port,
            proto: Proto::Tcp,
            state: o.state,
            reason: o.reason,
            ttl: Some(o.ttl),
            icmp_type: o.icmp.map(|i| i.0),
            icmp_code: o.icmp.map(|i| i.1),
        }
    }

    /// The result for a pair that never answered.
    pub fn silent_result(&self, pair: u64) -> PortResult {
        let (ip, port) = self.target_port(pair);
        PortResult::tcp(ip, port, PortState::Filtered, Reason::NoResponse, None)
    }
}

#[cfg(test)]
mod tests;
