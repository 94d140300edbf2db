//! Parses a received IP packet into a candidate scan [`Reply`], or says why it is not one.
//!
//! Structure only: is it a SYN-ACK, a RST, or an ICMP/ICMPv6 destination-unreachable quoting
//! a TCP header? Which scan it belongs to and whether the cookie matches is decided in
//! `classify`. Checksums are not verified (see `wire::tcp`).

use crate::classify::Discard;
use crate::wire::{icmp, ip, tcp, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP};
use std::net::IpAddr;

/// What kind of answer a reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// SYN and ACK set, RST clear.
    SynAck,
    /// RST set.
    Rst,
    /// ICMP type 3 (filtered codes) or ICMPv6 type 1.
    Unreachable {
        /// ICMP type.
        icmp_type: u8,
        /// ICMP code.
        code: u8,
    },
}

/// A structurally valid candidate reply, oriented from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Kind of reply.
    pub kind: ReplyKind,
    /// The probed target (for ICMP: the quoted destination).
    pub remote: IpAddr,
    /// Our address the probe came from.
    pub local: IpAddr,
    /// The probed port.
    pub remote_port: u16,
    /// Our source port.
    pub local_port: u16,
    /// The number the cookie must match: ACK number for TCP, quoted SEQ for ICMP.
    pub check: u32,
    /// TTL / hop limit of the reply packet itself.
    pub ttl: u8,
}

/// Parses an IP packet (starting at the IP header) into a candidate reply.
pub fn parse(frame: &[u8]) -> Result<Reply, Discard> {
    let pkt = ip::parse(frame).map_err(|e| match e {
        ip::IpError::Fragment => Discard::Fragment,
        _ => Discard::IpMalformed,
    })?;
    match (pkt.protocol, pkt.src) {
        (PROTO_TCP, _) => {
            let h = tcp::TcpHeader::parse(pkt.payload).map_err(|_| Discard::TcpMalformed)?;
            let kind = if h.flags & tcp::RST != 0 {
                ReplyKind::Rst
            } else if h.flags & (tcp::SYN | tcp::ACK) == tcp::SYN | tcp::ACK {
                ReplyKind::SynAck
            } else {
                return Err(Discard::TcpFlags);
            };
            Ok(Reply {
                kind,
                remote: pkt.src,
                local: pkt.dst,
                remote_port: h.src_port,
                local_port: h.dst_port,
                check: h.ack,
                ttl: pkt.ttl,
            })
        }
        (PROTO_ICMP, IpAddr::V4(_)) => {
            let m = icmp::parse(pkt.payload).ok_or(Discard::IcmpMalformed)?;
            if m.icmp_type != icmp::V4_DEST_UNREACH {
                return Err(Discard::IcmpType);
            }
            if !icmp::v4_code_means_filtered(m.code) {
                return Err(Discard::IcmpCode);
            }
            quoted(m, pkt.ttl)
        }
        (PROTO_ICMPV6, IpAddr::V6(_)) => {
            let m = icmp::parse(pkt.payload).ok_or(Discard::IcmpMalformed)?;
            if m.icmp_type != icmp::V6_DEST_UNREACH {
                return Err(Discard::IcmpType);
            }
            quoted(m, pkt.ttl)
        }
        _ => Err(Discard::OtherProtocol),
    }
}

fn quoted(m: icmp::IcmpMessage<'_>, ttl: u8) -> Result<Reply, Discard> {
    let inner = ip::parse_quoted(m.quoted).map_err(|_| Discard::IcmpQuote)?;
    if inner.protocol != PROTO_TCP {
        return Err(Discard::IcmpQuote);
    }
    let h = tcp::TcpHeader::parse_quoted(inner.payload).map_err(|_| Discard::IcmpQuote)?;
    Ok(Reply {
        kind: ReplyKind::Unreachable {
            icmp_type: m.icmp_type,
            code: m.code,
        },
        remote: inner.dst,
        local: inner.src,
        remote_port: h.dst_port,
        local_port: h.src_port,
        check: h.seq,
        ttl,
    })
}
