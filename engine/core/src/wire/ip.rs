//! IPv4 and IPv6 header parsing into one family-neutral [`IpPacket`] view.
//!
//! Only what a scan reply needs is exposed: addresses, upper protocol, TTL/hop limit and the
//! payload. IPv6 extension headers that may precede TCP/ICMPv6 are skipped; fragments are
//! rejected (a scan reply is never fragmented, and a fragment cannot be validated).

use super::be16;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Length of the fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

/// Why bytes did not parse as an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IpError {
    /// Fewer bytes than the header claims.
    #[error("truncated IP header")]
    Truncated,
    /// Version nibble is neither 4 nor 6.
    #[error("not IPv4 or IPv6")]
    BadVersion,
    /// IPv4 IHL below 5, or a length field smaller than the header.
    #[error("malformed IP header")]
    Malformed,
    /// A fragment (IPv4 MF/offset, or an IPv6 fragment header).
    #[error("IP fragment")]
    Fragment,
}

/// A parsed IP packet: header fields and a payload slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPacket<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// Payload after all headers; may be shorter than the length field says when
    /// `truncated_ok` parsing was used (ICMP quotes).
    pub payload: &'a [u8],
}

/// Parses a complete IP packet (as received from the link, starting at the IP header).
///
/// Trailing link padding past the IP length field is ignored.
pub fn parse(bytes: &[u8]) -> Result<IpPacket<'_>, IpError> {
    parse_inner(bytes, false)
}

/// Parses an IP header quoted inside an ICMP error, where the payload is cut short.
pub fn parse_quoted(bytes: &[u8]) -> Result<IpPacket<'_>, IpError> {
    parse_inner(bytes, true)
}

fn parse_inner(bytes: &[u8], truncated_ok: bool) -> Result<IpPacket<'_>, IpError> {
    let first = *bytes.first().ok_or(IpError::Truncated)?;
    match first >> 4 {
        4 => parse_v4(bytes, truncated_ok),
        6 => parse_v6(bytes, truncated_ok),
        _ => Err(IpError::BadVersion),
    }
}

fn parse_v4(b: &[u8], truncated_ok: bool) -> Result<IpPacket<'_>, IpError> {
    if b.len() < IPV4_HEADER_LEN {
        return Err(IpError::Truncated);
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    if ihl < IPV4_HEADER_LEN {
        return Err(IpError::Malformed);
    }
    if b.len() < ihl {
        return Err(IpError::Truncated);
    }
    let total = usize::from(be16(b, 2));
    if total < ihl {
        return Err(IpError::Malformed);
    }
    let frag = be16(b, 6);
    // MF set or a non-zero offset: a fragment.
    if frag & 0x3fff != 0 {
        return Err(IpError::Fragment);
    }
    let end = if b.len() >= total {
        total
    } else if truncated_ok {
        b.len()
    } else {
        return Err(IpError::Truncated);
    };
    let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
    let dst = Ipv4Addr::new(b[16], b[17], b[18], b[19]);
    Ok(IpPacket {
        src: IpAddr::V4(src),
        dst: IpAddr::V4(dst),
        protocol: b[9],
        ttl: b[8],
        payload: &b[ihl..end],
    })
}

fn v6_addr(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    Ipv6Addr::from(a)
}

fn parse_v6(b: &[u8], truncated_ok: bool) -> Result<IpPacket<'_>, IpError> {
    if b.len() < IPV6_HEADER_LEN {
        return Err(IpError::Truncated);
    }
    let payload_len = usize::from(be16(b, 4));
    let end = if b.len() >= IPV6_HEADER_LEN + payload_len {
        IPV6_HEADER_LEN + payload_len
    } else if truncated_ok {
        b.len()
    } else {
        return Err(IpError::Truncated);
    };
    let mut next = b[6];
    let mut off = IPV6_HEADER_LEN;
    // Skip extension headers: hop-by-hop (0), routing (43), destination options (60).
    loop {
        match next {
            0 | 43 | 60 => {
                if end < off + 8 {
                    return Err(IpError::Truncated);
                }
                let len = (usize::from(b[off + 1]) + 1) * 8;
                next = b[off];
                off += len;
                if off > end {
                    return Err(IpError::Truncated);
                }
            }
            44 => return Err(IpError::Fragment),
            _ => break,
        }
    }
    Ok(IpPacket {
        src: IpAddr::V6(v6_addr(&b[8..24])),
        dst: IpAddr::V6(v6_addr(&b[24..40])),
        protocol: next,
        ttl: b[7],
        payload: &b[off..end],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_short_and_bad_version() {
        assert_eq!(parse(&[]), Err(IpError::Truncated));
        assert_eq!(parse(&[0x45; 10]), Err(IpError::Truncated));
        assert_eq!(parse(&[0x55; 40]), Err(IpError::BadVersion));
        assert_eq!(parse(&[0x60; 20]), Err(IpError::Truncated));
    }

    #[test]
    fn rejects_fragments_and_bad_ihl() {
        let mut h = [0u8; 20];
        h[0] = 0x44; // IHL 4
        h[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(parse(&h), Err(IpError::Malformed));
        h[0] = 0x45;
        h[6] = 0x20; // MF
        assert_eq!(parse(&h), Err(IpError::Fragment));
    }

    #[test]
    fn ignores_link_padding() {
        let mut h = [0u8; 26];
        h[0] = 0x45;
        h[2..4].copy_from_slice(&20u16.to_be_bytes());
        h[8] = 64;
        h[9] = 6;
        let p = parse(&h).unwrap();
        assert_eq!(p.payload.len(), 0);
        assert_eq!(p.ttl, 64);
    }
}
