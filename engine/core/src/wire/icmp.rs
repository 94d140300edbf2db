//! ICMPv4 and ICMPv6 error messages: type, code and the quoted packet.
//!
//! Only error messages matter to a scan; echo and other informational types parse but are
//! reported as such so the caller can count and drop them.

/// ICMPv4 destination unreachable.
pub const V4_DEST_UNREACH: u8 = 3;
/// ICMPv6 destination unreachable.
pub const V6_DEST_UNREACH: u8 = 1;

/// A parsed ICMP(v6) message header and the bytes after its 8-byte header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpMessage<'a> {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// The quoted original packet (for error messages).
    pub quoted: &'a [u8],
}

/// Parses the 8-byte ICMP header. Returns `None` when fewer than 8 bytes are present.
pub fn parse(b: &[u8]) -> Option<IcmpMessage<'_>> {
    if b.len() < 8 {
        return None;
    }
    Some(IcmpMessage {
        icmp_type: b[0],
        code: b[1],
        quoted: &b[8..],
    })
}

/// Whether an ICMPv4 destination-unreachable code means "filtered" for a TCP probe:
/// net (0), host (1), protocol (2), port (3), net/host administratively prohibited (9, 10)
/// and communication administratively prohibited (13).
pub fn v4_code_means_filtered(code: u8) -> bool {
    matches!(code, 0 | 1 | 2 | 3 | 9 | 10 | 13)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_is_none() {
        assert!(parse(&[3, 13, 0, 0, 0, 0, 0]).is_none());
        let m = parse(&[3, 13, 0, 0, 0, 0, 0, 0, 0x45]).unwrap();
        assert_eq!((m.icmp_type, m.code, m.quoted), (3, 13, &[0x45u8][..]));
    }

    #[test]
    fn filtered_codes() {
        let yes: Vec<u8> = (0..=15).filter(|c| v4_code_means_filtered(*c)).collect();
        assert_eq!(yes, vec![0, 1, 2, 3, 9, 10, 13]);
    }
}
