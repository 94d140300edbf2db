//! SYN probe templates: constant bytes written once, per-probe fields stamped in place.
//!
//! A [`ProbeTemplate`] holds a complete IPv4 or IPv6 SYN with realistic options (MSS, window
//! scale, SACK-permitted, as a Windows/Linux host sends them minus timestamps) and the
//! checksum contribution of every constant field. [`ProbeTemplate::stamp`] copies it, writes
//! destination, ports, sequence number and IP ID, and finishes both checksums incrementally,
//! touching only the words that change. No allocation, no branching on options.

use crate::wire::checksum::{add_bytes, add_u32, finish};
use crate::wire::PROTO_TCP;
use std::net::IpAddr;

/// TCP options: MSS 1460, NOP, window scale 7, NOP, NOP, SACK permitted.
const OPTIONS: [u8; 12] = [2, 4, 0x05, 0xb4, 1, 3, 3, 7, 1, 1, 4, 2];
const TCP_LEN: usize = 20 + OPTIONS.len();
/// Length of an IPv4 probe.
pub const V4_PROBE_LEN: usize = 20 + TCP_LEN;
/// Length of an IPv6 probe.
pub const V6_PROBE_LEN: usize = 40 + TCP_LEN;
/// The largest probe: size send buffers with this.
pub const MAX_PROBE_LEN: usize = V6_PROBE_LEN;
/// TTL / hop limit of probes.
pub const PROBE_TTL: u8 = 64;
/// Advertised window.
pub const PROBE_WINDOW: u16 = 64240;

/// A prepared SYN for one source address.
#[derive(Debug, Clone)]
pub struct ProbeTemplate {
    bytes: [u8; MAX_PROBE_LEN],
    len: usize,
    /// Offset of the TCP header.
    tcp: usize,
    v6: bool,
    src: IpAddr,
    /// Unfolded IPv4 header sum of the constant words (0 for IPv6).
    ip_base: u64,
    /// Unfolded TCP sum of the constant words and the constant pseudo-header part.
    tcp_base: u64,
}

impl ProbeTemplate {
    /// A template for probes sent from `src`.
    pub fn new(src: IpAddr) -> Self {
        Self::with_ttl(src, PROBE_TTL)
    }

    /// A template for probes sent from `src` with IPv4 TTL / IPv6 hop limit `ttl`.
    pub fn with_ttl(src: IpAddr, ttl: u8) -> Self {
        let mut b = [0u8; MAX_PROBE_LEN];
        let (tcp, len, v6) = match src {
            IpAddr::V4(s) => {
                b[0] = 0x45;
                b[2..4].copy_from_slice(&(V4_PROBE_LEN as u16).to_be_bytes());
                b[6] = 0x40; // DF
                b[8] = ttl;
                b[9] = PROTO_TCP;
                b[12..16].copy_from_slice(&s.octets());
                (20, V4_PROBE_LEN, false)
            }
            IpAddr::V6(s) => {
                b[0] = 0x60;
                b[4..6].copy_from_slice(&(TCP_LEN as u16).to_be_bytes());
                b[6] = PROTO_TCP;
                b[7] = ttl;
                b[8..24].copy_from_slice(&s.octets());
                (40, V6_PROBE_LEN, true)
            }
        };
        let t = &mut b[tcp..tcp + TCP_LEN];
        t[12] = ((TCP_LEN / 4) as u8) << 4;
        t[13] = crate::wire::tcp::SYN;
        t[14..16].copy_from_slice(&PROBE_WINDOW.to_be_bytes());
        t[20..].copy_from_slice(&OPTIONS);

        // Constant parts of the checksums: everything except the stamped fields, which are
        // zero in the template and so contribute nothing here.
        let ip_base = if v6 { 0 } else { add_bytes(0, &b[..20]) };
        let src_bytes: &[u8] = if v6 { &b[8..24] } else { &b[12..16] };
        let mut tcp_base = add_bytes(0, src_bytes);
        tcp_base += u64::from(PROTO_TCP) + TCP_LEN as u64;
        tcp_base = add_bytes(tcp_base, &b[tcp..tcp + TCP_LEN]);
        ProbeTemplate {
            bytes: b,
            len,
            tcp,
            v6,
            src,
            ip_base,
            tcp_base,
        }
    }

    /// The source address.
    pub fn src(&self) -> IpAddr {
        self.src
    }

    /// Probe length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes a probe into `buf` (at least [`Self::len`] bytes) and returns its length.
    ///
    /// Panics if `dst` is of the other address family or `buf` is too short: both are
    /// programming errors, not input errors.
    #[inline]
    pub fn stamp(
        &self,
        buf: &mut [u8],
        dst: IpAddr,
        src_port: u16,
        dst_port: u16,
        seq: u32,
        ip_id: u16,
    ) -> usize {
        let len = self.len;
        let out = &mut buf[..len];
        out.copy_from_slice(&self.bytes[..len]);
        let mut tcp_sum = self.tcp_base;
        match (dst, self.v6) {
            (IpAddr::V4(d), false) => {
                let d = d.octets();
                out[4..6].copy_from_slice(&ip_id.to_be_bytes());
                out[16..20].copy_from_slice(&d);
                let dw = u32::from_be_bytes(d);
                let ip_sum = add_u32(self.ip_base + u64::from(ip_id), dw);
                out[10..12].copy_from_slice(&finish(ip_sum).to_be_bytes());
                tcp_sum = add_u32(tcp_sum, dw);
            }
            (IpAddr::V6(d), true) => {
                let d = d.octets();
                out[24..40].copy_from_slice(&d);
                tcp_sum = add_bytes(tcp_sum, &d);
            }
            _ => panic!("probe destination family does not match the template"),
        }
        let t = &mut out[self.tcp..];
        t[0..2].copy_from_slice(&src_port.to_be_bytes());
        t[2..4].copy_from_slice(&dst_port.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp_sum += u64::from(src_port) + u64::from(dst_port);
        tcp_sum = add_u32(tcp_sum, seq);
        t[16..18].copy_from_slice(&finish(tcp_sum).to_be_bytes());
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    fn check_with_etherparse(pkt: &[u8], dst: IpAddr, sport: u16, dport: u16, seq: u32) {
        let sliced = SlicedPacket::from_ip(pkt).expect("etherparse parses our probe");
        let tcp = match sliced.transport {
            Some(TransportSlice::Tcp(t)) => t,
            other => panic!("not TCP: {other:?}"),
        };
        assert_eq!((tcp.source_port(), tcp.destination_port()), (sport, dport));
        assert_eq!(tcp.sequence_number(), seq);
        assert!(tcp.syn() && !tcp.ack() && !tcp.rst());
        assert_eq!(tcp.window_size(), PROBE_WINDOW);
        match sliced.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header();
                assert_eq!(IpAddr::V4(h.destination_addr()), dst);
                let hdr = h.to_header();
                assert_eq!(
                    hdr.header_checksum,
                    hdr.calc_header_checksum(),
                    "IPv4 checksum"
                );
                let calc = tcp
                    .to_header()
                    .calc_checksum_ipv4(&hdr, tcp.payload())
                    .unwrap();
                assert_eq!(tcp.checksum(), calc, "TCP/IPv4 checksum");
            }
            Some(NetSlice::Ipv6(ip)) => {
                let h = ip.header();
                assert_eq!(IpAddr::V6(h.destination_addr()), dst);
                let calc = tcp
                    .to_header()
                    .calc_checksum_ipv6(&h.to_header(), tcp.payload())
                    .unwrap();
                assert_eq!(tcp.checksum(), calc, "TCP/IPv6 checksum");
            }
            other => panic!("not IP: {other:?}"),
        }
    }

    #[test]
    fn real_v4_probe_bytes() {
        let t = ProbeTemplate::new("198.18.0.1".parse().unwrap());
        let mut buf = [0u8; MAX_PROBE_LEN];
        let n = t.stamp(
            &mut buf,
            "198.18.0.2".parse().unwrap(),
            61440,
            80,
            0xdeadbeef,
            0x1234,
        );
        assert_eq!(n, 52);
        #[rustfmt::skip]
        let expected_prefix = [
            0x45, 0x00, 0x00, 0x34, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, // .. checksum next
        ];
        assert_eq!(&buf[..10], &expected_prefix);
        assert_eq!(&buf[12..20], &[198, 18, 0, 1, 198, 18, 0, 2]);
        assert_eq!(
            &buf[20..28],
            &[0xf0, 0x00, 0x00, 0x50, 0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(&buf[40..52], &OPTIONS);
        check_with_etherparse(
            &buf[..n],
            "198.18.0.2".parse().unwrap(),
            61440,
            80,
            0xdeadbeef,
        );
    }

    proptest! {
        #[test]
        fn stamped_checksums_are_valid_v4(d: [u8; 4], sport: u16, dport: u16, seq: u32, id: u16) {
            let t = ProbeTemplate::new("198.18.0.1".parse().unwrap());
            let mut buf = [0u8; MAX_PROBE_LEN];
            let dst = IpAddr::from(d);
            let n = t.stamp(&mut buf, dst, sport, dport, seq, id);
            check_with_etherparse(&buf[..n], dst, sport, dport, seq);
        }

        #[test]
        fn stamped_checksums_are_valid_v6(d: [u8; 16], sport: u16, dport: u16, seq: u32) {
            let t = ProbeTemplate::new("2001:2::1".parse().unwrap());
            let mut buf = [0u8; MAX_PROBE_LEN];
            let dst = IpAddr::from(d);
            let n = t.stamp(&mut buf, dst, sport, dport, seq, 0);
            prop_assert_eq!(n, V6_PROBE_LEN);
            check_with_etherparse(&buf[..n], dst, sport, dport, seq);
        }
    }
}
