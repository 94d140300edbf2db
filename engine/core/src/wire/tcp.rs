//! TCP header view: the fields a scan reads from replies, and flag constants.
//!
//! Probes are not built here (see `probe`, which stamps a prepared template); this module
//! only reads. Options are not interpreted.

use super::{be16, be32};

/// Minimum TCP header length.
pub const TCP_HEADER_LEN: usize = 20;

/// FIN flag.
pub const FIN: u8 = 0x01;
/// SYN flag.
pub const SYN: u8 = 0x02;
/// RST flag.
pub const RST: u8 = 0x04;
/// PSH flag.
pub const PSH: u8 = 0x08;
/// ACK flag.
pub const ACK: u8 = 0x10;

/// The first bytes of a TCP header. Also used for the 8 bytes quoted in ICMP errors, where
/// only ports and sequence number are present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (0 when parsed from an 8-byte quote).
    pub ack: u32,
    /// Flag byte (0 when parsed from an 8-byte quote).
    pub flags: u8,
}

/// Why bytes did not parse as TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcpError {
    /// Fewer bytes than a header.
    #[error("truncated TCP header")]
    Truncated,
    /// Data offset below 5 words or beyond the segment.
    #[error("malformed TCP data offset")]
    BadOffset,
}

impl TcpHeader {
    /// Parses a full TCP header. The checksum is deliberately not verified: kernel-made
    /// replies on veth arrive with CHECKSUM_PARTIAL, and a forged reply is rejected by the
    /// cookie anyway.
    pub fn parse(b: &[u8]) -> Result<Self, TcpError> {
        if b.len() < TCP_HEADER_LEN {
            return Err(TcpError::Truncated);
        }
        let off = usize::from(b[12] >> 4) * 4;
        if off < TCP_HEADER_LEN || off > b.len() {
            return Err(TcpError::BadOffset);
        }
        Ok(TcpHeader {
            src_port: be16(b, 0),
            dst_port: be16(b, 2),
            seq: be32(b, 4),
            ack: be32(b, 8),
            flags: b[13],
        })
    }

    /// Parses the first 8 bytes of a TCP header as quoted by an ICMP error (RFC 792).
    pub fn parse_quoted(b: &[u8]) -> Result<Self, TcpError> {
        if b.len() < 8 {
            return Err(TcpError::Truncated);
        }
        Ok(TcpHeader {
            src_port: be16(b, 0),
            dst_port: be16(b, 2),
            seq: be32(b, 4),
            ack: 0,
            flags: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_syn_ack() {
        // SYN-ACK 80 -> 61440, seq 0x01020304, ack 0x0a0b0c0d, offset 5.
        let b = [
            0x00, 0x50, 0xf0, 0x00, 0x01, 0x02, 0x03, 0x04, 0x0a, 0x0b, 0x0c, 0x0d, 0x50, 0x12,
            0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
        ];
        let h = TcpHeader::parse(&b).unwrap();
        assert_eq!(h.src_port, 80);
        assert_eq!(h.dst_port, 61440);
        assert_eq!(h.seq, 0x01020304);
        assert_eq!(h.ack, 0x0a0b0c0d);
        assert_eq!(h.flags, SYN | ACK);
    }

    #[test]
    fn rejects_bad_offsets() {
        let mut b = [0u8; 20];
        b[12] = 0x40;
        assert_eq!(TcpHeader::parse(&b), Err(TcpError::BadOffset));
        b[12] = 0x60; // 24 bytes claimed, 20 present
        assert_eq!(TcpHeader::parse(&b), Err(TcpError::BadOffset));
        assert_eq!(TcpHeader::parse(&b[..19]), Err(TcpError::Truncated));
        assert_eq!(TcpHeader::parse_quoted(&b[..7]), Err(TcpError::Truncated));
    }
}
