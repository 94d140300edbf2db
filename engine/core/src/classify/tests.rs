//! Classification tests: real reply bytes, stamp -> reflect -> classify round trips, and
//! random frames that must never validate.

use super::*;
use crate::probe::{ProbeTemplate, MAX_PROBE_LEN};
use crate::reply;
use crate::targets::parse_net;
use etherparse::{IcmpEchoHeader, Icmpv4Type, Icmpv6Type, PacketBuilder};
use proptest::prelude::*;

const KEY: [u8; 16] = [0x11; 16];

fn space(targets: &[&str], ports: &str) -> ScanSpace {
    let nets: Vec<_> = targets.iter().map(|t| parse_net(t).unwrap()).collect();
    ScanSpace::new(
        CookieKey::from_bytes(KEY),
        99,
        TargetSet::new(&nets, &[]).unwrap(),
        PortSet::parse(ports).unwrap(),
        Sources {
            v4: Some("198.18.0.1".parse().unwrap()),
            v6: Some("2001:2::1".parse().unwrap()),
        },
        0,
    )
    .unwrap()
}

fn cookie(s: &str, d: &str, sp: u16, dp: u16) -> u32 {
    CookieKey::from_bytes(KEY).cookie(s.parse().unwrap(), d.parse().unwrap(), sp, dp)
}

/// `bytes` with the big-endian `u32` at `at` replaced by `value`.
fn patched(bytes: &[u8], at: usize, value: u32) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at..at + 4].copy_from_slice(&value.to_be_bytes());
    b
}

/// A Linux SYN-ACK from 198.18.0.2:22 to 198.18.0.1:61440 as captured on veth (TCP checksum
/// left partial); its ACK number (at 28) is patched to the test key's cookie + 1.
#[rustfmt::skip]
const SYN_ACK: [u8; 44] = [
    0x45, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00,
    198, 18, 0, 2, 198, 18, 0, 1,
    0x00, 0x16, 0xf0, 0x00, 0x5b, 0x3c, 0x21, 0x7e, 0, 0, 0, 0, 0x60, 0x12,
    0xfa, 0xf0, 0x5b, 0x10, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
];

/// A Linux RST|ACK for a closed port 81, seq 0; ACK (at 28) patched.
#[rustfmt::skip]
const RST: [u8; 40] = [
    0x45, 0x00, 0x00, 0x28, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00,
    198, 18, 0, 2, 198, 18, 0, 1,
    0x00, 0x51, 0xf0, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x14,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// An ICMP admin-prohibited (3/13) from 198.18.0.2 quoting our SYN to port 3306; the
/// quoted sequence number (at 52) patched.
#[rustfmt::skip]
const ICMP: [u8; 56] = [
    0x45, 0xc0, 0x00, 0x38, 0x12, 0x34, 0x00, 0x00, 0x40, 0x01, 0x00, 0x00,
    198, 18, 0, 2, 198, 18, 0, 1,
    0x03, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x45, 0x00, 0x00, 0x34, 0xab, 0xcd, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00,
    198, 18, 0, 1, 198, 18, 0, 2,
    0xf0, 0x00, 0x0c, 0xea, 0, 0, 0, 0,
];

fn real_syn_ack(ack: u32) -> Vec<u8> {
    patched(&SYN_ACK, 28, ack)
}

fn real_rst(ack: u32) -> Vec<u8> {
    patched(&RST, 28, ack)
}

fn real_icmp(seq: u32) -> Vec<u8> {
    patched(&ICMP, 52, seq)
}

#[test]
fn real_syn_ack_is_open() {
    let s = space(&["198.18.0.2"], "22,81,3306");
    let c = cookie("198.18.0.1", "198.18.0.2", 61440, 22);
    let r = reply::parse(&real_syn_ack(c.wrapping_add(1))).unwrap();
    let o = s.classify(&r).unwrap();
    assert_eq!(
        (o.state, o.reason, o.ttl, o.round),
        (PortState::Open, Reason::SynAck, 64, 0)
    );
    assert_eq!(s.target_port(o.pair), ("198.18.0.2".parse().unwrap(), 22));
    // ACK = cookie (not +1) is not a valid SYN-ACK.
    let r = reply::parse(&real_syn_ack(c)).unwrap();
    assert_eq!(s.classify(&r), Err(Discard::BadCookie));
}

#[test]
fn real_rst_is_closed_for_cookie_or_cookie_plus_one() {
    let s = space(&["198.18.0.2"], "22,81,3306");
    // Round 2 of slot 0: source port 61442.
    let c = cookie("198.18.0.1", "198.18.0.2", 61442, 81);
    for ack in [c, c.wrapping_add(1)] {
        let o = s.classify(&reply::parse(&real_rst(ack)).unwrap()).unwrap();
        assert_eq!(
            (o.state, o.reason, o.round),
            (PortState::Closed, Reason::Reset, 2)
        );
        assert_eq!(s.target_port(o.pair).1, 81);
    }
    let r = reply::parse(&real_rst(c.wrapping_add(2))).unwrap();
    assert_eq!(s.classify(&r), Err(Discard::BadCookie));
}

#[test]
fn real_icmp_quote_is_filtered_with_code() {
    let s = space(&["198.18.0.2"], "22,81,3306");
    let c = cookie("198.18.0.1", "198.18.0.2", 61440, 3306);
    let o = s.classify(&reply::parse(&real_icmp(c)).unwrap()).unwrap();
    assert_eq!(
        (o.state, o.reason, o.icmp),
        (PortState::Filtered, Reason::IcmpUnreachable, Some((3, 13)))
    );
    let res = s.result(&o);
    assert_eq!(
        (res.port, res.icmp_type, res.icmp_code),
        (3306, Some(3), Some(13))
    );
    assert_eq!(
        s.classify(&reply::parse(&real_icmp(c ^ 1)).unwrap()),
        Err(Discard::BadCookie)
    );
}

#[test]
fn structural_discards() {
    let c = cookie("198.18.0.1", "198.18.0.2", 61440, 22);
    let mut b = real_syn_ack(c.wrapping_add(1));
    b[33] = tcp_ack_only();
    assert_eq!(reply::parse(&b), Err(Discard::TcpFlags));
    let mut i = real_icmp(0);
    i[21] = 4; // fragmentation needed: not "filtered"
    assert_eq!(reply::parse(&i), Err(Discard::IcmpCode));
    i[20] = 11; // time exceeded
    assert_eq!(reply::parse(&i), Err(Discard::IcmpType));
    let mut q = real_icmp(0);
    q[37] = 17; // quoted UDP
    assert_eq!(reply::parse(&q), Err(Discard::IcmpQuote));
    let mut u = real_rst(0);
    u[9] = 17;
    assert_eq!(reply::parse(&u), Err(Discard::OtherProtocol));
    assert_eq!(reply::parse(&real_rst(0)[..30]), Err(Discard::IpMalformed));
}

fn tcp_ack_only() -> u8 {
    crate::wire::tcp::ACK
}

#[test]
fn wrong_slot_target_and_port_are_discarded() {
    let s = space(&["198.18.0.2"], "22");
    // Port in another slot.
    let mut r = reply::parse(&real_rst(0)).unwrap();
    r.local_port = source_port(1, 0);
    assert_eq!(s.classify(&r), Err(Discard::NoScan));
    r.local_port = 40000;
    assert_eq!(s.classify(&r), Err(Discard::NoScan));
    // Valid cookie for a port the scan does not probe.
    let c = cookie("198.18.0.1", "198.18.0.2", 61442, 81);
    assert_eq!(
        s.classify(&reply::parse(&real_rst(c)).unwrap()),
        Err(Discard::UnknownPort)
    );
}

#[test]
fn fixed_source_port_keeps_port_and_sequence_across_rounds() {
    let s = space(&["198.18.0.2"], "22,81").with_source_port(Some(53));
    assert_eq!(s.fixed_port(), Some(53));
    let first = s.probe(0, 0);
    for round in 1..ROUNDS as u8 {
        // A retry is a true retransmission: same 4-tuple, same sequence number.
        assert_eq!(s.probe(0, round), first);
    }
    assert_eq!(first.src_port, 53);
    assert_eq!(first.seq, cookie("198.18.0.1", "198.18.0.2", 53, 22));
    // A SYN-ACK to port 53 with the cookie is open (round unknown: 0); the same answer to
    // any other port, or with the cookie of another port, is not this scan's.
    let mut frame = real_syn_ack(first.seq.wrapping_add(1));
    frame[22..24].copy_from_slice(&53u16.to_be_bytes());
    let r = reply::parse(&frame).unwrap();
    let o = s.classify(&r).unwrap();
    assert_eq!((o.pair, o.round, o.state), (0, 0, PortState::Open));
    let mut other = r;
    other.local_port = source_port(0, 0);
    assert_eq!(s.classify(&other), Err(Discard::NoScan));
    let mut forged = r;
    forged.check = cookie("198.18.0.1", "198.18.0.2", 54, 22).wrapping_add(1);
    assert_eq!(s.classify(&forged), Err(Discard::BadCookie));
    // The slot-port space of the same key rejects the fixed-port reply.
    assert_eq!(
        space(&["198.18.0.2"], "22").classify(&r),
        Err(Discard::NoScan)
    );
}

/// Builds the reply a target would send to `probe_bytes`, with etherparse.
fn reflect(probe: &Probe, probe_bytes: &[u8], kind: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let ttl = 61;
    let b = match (probe.dst, probe.src) {
        (IpAddr::V4(d), IpAddr::V4(s)) => PacketBuilder::ipv4(d.octets(), s.octets(), ttl),
        (IpAddr::V6(d), IpAddr::V6(s)) => PacketBuilder::ipv6(d.octets(), s.octets(), ttl),
        _ => unreachable!(),
    };
    match kind {
        0 => b
            .tcp(probe.dst_port, probe.src_port, 12345, 64240)
            .syn()
            .ack(probe.seq.wrapping_add(1))
            .write(&mut out, &[]),
        1 => b
            .tcp(probe.dst_port, probe.src_port, 0, 0)
            .rst()
            .ack(probe.seq.wrapping_add(1))
            .write(&mut out, &[]),
        _ if probe.dst.is_ipv4() => b
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FilterProhibited,
            ))
            .write(&mut out, probe_bytes),
        _ => b
            .icmpv6(Icmpv6Type::DestinationUnreachable(
                etherparse::icmpv6::DestUnreachableCode::Prohibited,
            ))
            .write(&mut out, probe_bytes),
    }
    .unwrap();
    let _ = IcmpEchoHeader { id: 0, seq: 0 };
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn stamp_reflect_classify_round_trip(pair in 0u64..(8 * 1000), round in 0u8..16, kind in 0u8..3, v6: bool) {
        let s = if v6 { space(&["2001:2::100/125"], "1-1000") } else { space(&["198.19.0.0/29"], "1-1000") };
        let probe = s.probe(pair, round);
        let t = ProbeTemplate::new(probe.src);
        let mut buf = [0u8; MAX_PROBE_LEN];
        let n = t.stamp(&mut buf, probe.dst, probe.src_port, probe.dst_port, probe.seq, 7);
        let frame = reflect(&probe, &buf[..n], kind);
        let r = reply::parse(&frame).unwrap();
        let o = s.classify(&r).unwrap();
        prop_assert_eq!(o.pair, pair);
        prop_assert_eq!(o.round, round);
        prop_assert_eq!(o.ttl, 61);
        // The same answer to the same probe from a fixed source port.
        let fixed = s.clone().with_source_port(Some(20 + kind as u16));
        let probe = fixed.probe(pair, round);
        let n = t.stamp(&mut buf, probe.dst, probe.src_port, probe.dst_port, probe.seq, 7);
        let f = fixed.classify(&reply::parse(&reflect(&probe, &buf[..n], kind)).unwrap()).unwrap();
        prop_assert_eq!((f.pair, f.round, f.state), (pair, 0, o.state));
        let want = [PortState::Open, PortState::Closed, PortState::Filtered][kind as usize];
        prop_assert_eq!(o.state, want);
        if kind == 2 {
            prop_assert_eq!(o.icmp, Some(if v6 { (1, 1) } else { (3, 13) }));
        }
    }

    #[test]
    fn random_frames_never_validate(mut bytes in proptest::collection::vec(any::<u8>(), 0..200), v6: bool) {
        // Bias toward frames that get past the structural checks.
        if bytes.len() > 40 {
            bytes[0] = if v6 { 0x60 } else { 0x45 };
        }
        let s = space(&["198.18.0.0/16", "2001:2::/112"], "-");
        if let Ok(r) = reply::parse(&bytes) {
            prop_assert!(s.classify(&r).is_err());
        }
    }

    #[test]
    fn tampered_replies_never_validate(pair in 0u64..8000, flip in 0usize..40) {
        let s = space(&["198.19.0.0/29"], "1-1000");
        let probe = s.probe(pair, 0);
        let mut frame = Vec::new();
        let (IpAddr::V4(d), IpAddr::V4(src)) = (probe.dst, probe.src) else { unreachable!() };
        PacketBuilder::ipv4(d.octets(), src.octets(), 64)
            .tcp(probe.dst_port, probe.src_port, 1, 1).syn().ack(probe.seq.wrapping_add(1))
            .write(&mut frame, &[]).unwrap();
        // Flip one bit in an address, port or ack byte.
        let fields = [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 28, 29, 30, 31];
        let at = fields[flip % fields.len()];
        frame[at] ^= 1 << (flip % 8);
        if let Ok(r) = reply::parse(&frame) {
            prop_assert!(s.classify(&r).is_err());
        }
    }
}
