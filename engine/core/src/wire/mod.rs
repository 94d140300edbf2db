//! Zero-copy views over IPv4, IPv6, TCP and ICMP headers, and the Internet checksum.
//!
//! Panic contract (as in smoltcp): every `parse`/`new_checked` function accepts untrusted
//! bytes and returns an error value for anything short or malformed; accessors on a view
//! built by a checked constructor never panic. Emitting code writes into buffers the caller
//! sized with the matching `*_LEN` constant and may panic if that contract is broken.
//! This module knows nothing about scans: cookies and classification live elsewhere.

pub mod checksum;
pub mod icmp;
pub mod ip;
pub mod tcp;

/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IPv6 next-header number of ICMPv6.
pub const PROTO_ICMPV6: u8 = 58;

#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
