//! A scripted target for the in-memory transport (feature `scripted`): answers each SYN
//! probe the way a host with a known port table would (SYN-ACK, RST, ICMP
//! administratively prohibited, or nothing), with optional random loss and duplicated
//! replies. Replies are built with etherparse, an independent implementation, so engine
//! tests do not check our packets against our own parser. For tests and dry runs only.

use crate::memory::Responder;
use etherparse::{
    icmpv4, icmpv6, Icmpv4Type, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// How the scripted host answers a probe to one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// SYN-ACK.
    Open,
    /// RST.
    Closed,
    /// ICMP type 3 code 13 / ICMPv6 type 1 code 1.
    Prohibited,
    /// Nothing.
    Silent,
}

/// The standard script of the engine and daemon tests: ports 22, 80 and 1000 + the last
/// address octet (or segment) open; 23 and 111 prohibited; 135 and 445 silent; the rest
/// closed.
pub fn standard_answer(dst: IpAddr, port: u16) -> Answer {
    let bias = match dst {
        IpAddr::V4(a) => u16::from(a.octets()[3]),
        IpAddr::V6(a) => a.segments()[7],
    };
    match port {
        22 | 80 => Answer::Open,
        p if p == 1000 + bias => Answer::Open,
        23 | 111 => Answer::Prohibited,
        135 | 445 => Answer::Silent,
        _ => Answer::Closed,
    }
}

type Script = Box<dyn FnMut(IpAddr, u16) -> Answer + Send>;

/// A responder for [`crate::memory::pair`].
pub struct ScriptedTarget {
    script: Script,
    /// Probability (in 1/2^32) that a probe is lost.
    loss: u64,
    dup: bool,
    rng: u64,
    probes: Arc<AtomicU64>,
}

impl std::fmt::Debug for ScriptedTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedTarget")
            .field("probes", &self.probes)
            .finish_non_exhaustive()
    }
}

impl ScriptedTarget {
    /// A target answering per `script(destination, port)`.
    pub fn new(script: impl FnMut(IpAddr, u16) -> Answer + Send + 'static) -> Self {
        ScriptedTarget {
            script: Box::new(script),
            loss: 0,
            dup: false,
            rng: 0x9e37_79b9_7f4a_7c15,
            probes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The [`standard_answer`] script.
    pub fn standard() -> Self {
        Self::new(standard_answer)
    }

    /// Loses each probe with probability `loss` (0..=1), from a generator seeded by `seed`.
    pub fn with_loss(mut self, loss: f64, seed: u64) -> Self {
        self.loss = (loss.clamp(0.0, 1.0) * 4_294_967_296.0) as u64;
        self.rng ^= seed.wrapping_mul(0xbf58_476d_1ce4_e5b9) | 1;
        self
    }

    /// Sends every reply twice (as a retransmitting target would).
    pub fn with_duplicates(mut self) -> Self {
        self.dup = true;
        self
    }

    /// Counter of probes received, shared with the test.
    pub fn probe_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.probes)
    }

    fn lost(&mut self) -> bool {
        // xorshift64*: plenty for test loss.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) < self.loss
    }
}

impl Responder for ScriptedTarget {
    fn respond(&mut self, probe: &[u8], out: &mut dyn FnMut(Vec<u8>)) {
        self.probes.fetch_add(1, Relaxed);
        if self.lost() {
            return;
        }
        let p = SlicedPacket::from_ip(probe).expect("the engine sends valid IP");
        let Some(TransportSlice::Tcp(tcp)) = p.transport else {
            panic!("the engine sends TCP")
        };
        assert!(tcp.syn() && !tcp.ack(), "probes are SYNs");
        let (sport, dport, seq) = (
            tcp.source_port(),
            tcp.destination_port(),
            tcp.sequence_number(),
        );
        let (src, dst): (IpAddr, IpAddr) = match &p.net {
            Some(NetSlice::Ipv4(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                ip.header().source_addr().into(),
                ip.header().destination_addr().into(),
            ),
            _ => panic!("the engine sends IP"),
        };
        let answer = (self.script)(dst, dport);
        if answer == Answer::Silent {
            return;
        }
        let mut frame = Vec::new();
        let (b, v4) = match (dst, src) {
            (IpAddr::V4(d), IpAddr::V4(s)) => {
                (PacketBuilder::ipv4(d.octets(), s.octets(), 63), true)
            }
            (IpAddr::V6(d), IpAddr::V6(s)) => {
                (PacketBuilder::ipv6(d.octets(), s.octets(), 63), false)
            }
            _ => unreachable!("probe families match"),
        };
        let built = match answer {
            Answer::Open => b
                .tcp(dport, sport, 7, 1000)
                .syn()
                .ack(seq.wrapping_add(1))
                .write(&mut frame, &[]),
            Answer::Closed => b
                .tcp(dport, sport, 0, 0)
                .rst()
                .ack(seq.wrapping_add(1))
                .write(&mut frame, &[]),
            // The quote: the probe's IP header and the first 8 bytes of its TCP header.
            _ if v4 => b
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    icmpv4::DestUnreachableHeader::FilterProhibited,
                ))
                .write(&mut frame, &probe[..28.min(probe.len())]),
            _ => b
                .icmpv6(Icmpv6Type::DestinationUnreachable(
                    icmpv6::DestUnreachableCode::Prohibited,
                ))
                .write(&mut frame, &probe[..48.min(probe.len())]),
        };
        built.expect("reply builds");
        if self.dup {
            out(frame.clone());
        }
        out(frame);
    }
}
