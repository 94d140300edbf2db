//! Tests of the classic BPF reply filter: an interpreter runs each program over real packets
//! built with etherparse, as the kernel would, and checks what it accepts.

use super::*;
use etherparse::icmpv4::DestUnreachableHeader as Unreach4;
use etherparse::icmpv6::DestUnreachableCode as Unreach6;
use etherparse::{IcmpEchoHeader, Icmpv4Type, Icmpv6Type, PacketBuilder};

const LO: u16 = 61440;
const HI: u16 = 65535;

/// What the kernel would tell the filter about a packet besides its bytes.
#[derive(Clone, Copy)]
struct Meta {
    protocol: u32,
    pkttype: u32,
}

const V4: Meta = Meta {
    protocol: ETH_P_IP,
    pkttype: 0,
};
const V6: Meta = Meta {
    protocol: ETH_P_IPV6,
    pkttype: 0,
};

/// A classic BPF interpreter for the opcodes above, with the kernel's rule that a load
/// out of bounds ends the program with 0.
fn run(prog: &[SockFilter], pkt: &[u8], meta: Meta) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let byte = |off: u32| pkt.get(off as usize).map(|b| u32::from(*b));
    let half = |off: u32| Some(byte(off)? << 8 | byte(off + 1)?);
    let word = |off: u32| Some(half(off)? << 16 | half(off + 2)?);
    let ancillary = |k: u32| match k - SKF_AD_OFF {
        SKF_AD_PROTOCOL => meta.protocol,
        SKF_AD_PKTTYPE => meta.pkttype,
        other => panic!("ancillary {other} not modelled"),
    };
    loop {
        let ins = prog.get(pc).expect("fell off the end of the program");
        pc += 1;
        let k = ins.k;
        let cond = |c: bool| if c { ins.jt } else { ins.jf } as usize;
        match ins.code {
            RET_K => return k,
            LD_W_ABS if k >= SKF_AD_OFF => a = ancillary(k),
            LD_W_ABS => match word(k) {
                Some(v) => a = v,
                None => return 0,
            },
            LD_H_ABS => match half(k) {
                Some(v) => a = v,
                None => return 0,
            },
            LD_B_ABS => match byte(k) {
                Some(v) => a = v,
                None => return 0,
            },
            LD_H_IND => match half(x.wrapping_add(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            LD_B_IND => match byte(x.wrapping_add(k)) {
                Some(v) => a = v,
                None => return 0,
            },
            LDX_B_MSH => match byte(k) {
                Some(v) => x = 4 * (v & 0xf),
                None => return 0,
            },
            ALU_AND_K => a &= k,
            JMP_JA => pc += k as usize,
            JMP_JEQ_K => pc += cond(a == k),
            JMP_JGT_K => pc += cond(a > k),
            JMP_JGE_K => pc += cond(a >= k),
            JMP_JSET_K => pc += cond(a & k != 0),
            other => panic!("opcode {other:#x} not modelled"),
        }
    }
}

fn accepts(pkt: &[u8], meta: Meta) -> bool {
    match run(&reply_filter(LO, HI), pkt, meta) {
        ACCEPT => true,
        0 => false,
        other => panic!("unexpected return {other:#x}"),
    }
}

const A4: [u8; 4] = [192, 0, 2, 7];
const B4: [u8; 4] = [192, 0, 2, 1];
const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Serialises an etherparse builder step (payload `pl`) into bytes.
macro_rules! bytes {
    ($step:expr, $pl:expr) => {{
        let step = $step;
        let pl: &[u8] = $pl;
        let mut v = Vec::with_capacity(step.size(pl.len()));
        step.write(&mut v, pl).unwrap();
        v
    }};
    ($step:expr) => {
        bytes!($step, &[])
    };
}

/// Sets flags named by letters: S(yn) A(ck) R(st) F(in) E(ce).
macro_rules! tcp_flags {
    ($b:expr, $flags:expr) => {{
        let mut b = $b;
        for f in $flags.chars() {
            b = match f {
                'S' => b.syn(),
                'A' => b.ack(0x1234_5679),
                'R' => b.rst(),
                'F' => b.fin(),
                'E' => b.ece(),
                other => panic!("flag {other}"),
            };
        }
        bytes!(b)
    }};
}

/// Asserts the filter accepts `tcp(port, flags)` for every port of `LO`, 61500 and `HI`
/// and every `(flags, name)` of `accepted`; rejects SYN-ACK and RST to every port of
/// `rejected_ports`; and rejects every flag set of `rejected_flags` to port 61500.
fn check_tcp(
    tcp: fn(u16, &str) -> Vec<u8>,
    meta: Meta,
    accepted: &[(&str, &str)],
    rejected_ports: &[u16],
    rejected_flags: &[&str],
) {
    for port in [LO, 61500, HI] {
        for (flags, name) in accepted {
            assert!(accepts(&tcp(port, flags), meta), "{name} to {port}");
        }
    }
    for &port in rejected_ports {
        assert!(!accepts(&tcp(port, "SA"), meta), "SYN-ACK to {port}");
        assert!(!accepts(&tcp(port, "R"), meta), "RST to {port}");
    }
    for flags in rejected_flags {
        assert!(!accepts(&tcp(61500, flags), meta), "flags {flags:?}");
    }
}

/// A reply from the target (port 80) to our source port `dport`, over IPv4 or IPv6.
fn tcp4(dport: u16, flags: &str) -> Vec<u8> {
    let b = PacketBuilder::ipv4(A4, B4, 64).tcp(80, dport, 7, 1024);
    tcp_flags!(b, flags)
}

fn tcp6(dport: u16, flags: &str) -> Vec<u8> {
    let b = PacketBuilder::ipv6(A6, B6, 64).tcp(80, dport, 7, 1024);
    tcp_flags!(b, flags)
}

/// An ICMP message from the target quoting `quote`, over IPv4 or IPv6.
fn icmp4(t: Icmpv4Type, quote: &[u8]) -> Vec<u8> {
    bytes!(PacketBuilder::ipv4(A4, B4, 64).icmpv4(t), quote)
}

fn icmp6(t: Icmpv6Type, quote: &[u8]) -> Vec<u8> {
    bytes!(PacketBuilder::ipv6(A6, B6, 64).icmpv6(t), quote)
}

/// A hand-written SYN-ACK, 192.0.2.7:80 -> 192.0.2.1:61500, with an MSS option (the
/// checksums are not meaningful; the filter does not read them).
const SYN_ACK_V4: [u8; 44] = [
    0x45, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0xb5, 0x7e, 0xc0, 0x00, 0x02, 0x07,
    0xc0, 0x00, 0x02, 0x01, 0x00, 0x50, 0xf0, 0x3c, 0x9c, 0x3b, 0x1e, 0x0a, 0x12, 0x34, 0x56, 0x79,
    0x60, 0x12, 0xfa, 0xf0, 0x4c, 0x1d, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
];

#[test]
fn program_is_well_formed() {
    for prog in [
        reply_filter(LO, HI),
        reply_filter(0, 0),
        reject_outgoing(&reply_filter(1, 2)),
    ] {
        assert!(prog.len() <= 4096, "BPF_MAXINSNS");
        assert_eq!(prog.last().unwrap().code, RET_K);
        for (i, ins) in prog.iter().enumerate() {
            let reach = match ins.code {
                RET_K => continue,
                JMP_JA => ins.k as usize,
                JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K | JMP_JSET_K => usize::from(ins.jt.max(ins.jf)),
                _ => 0,
            };
            assert!(i + 1 + reach < prog.len(), "insn {i} runs off the program");
        }
    }
    assert_eq!(std::mem::size_of::<SockFilter>(), 8);
}

#[test]
fn hand_written_syn_ack_is_accepted() {
    assert!(accepts(&SYN_ACK_V4, V4));
    // The same bytes under another ethertype are not IP.
    let arp = Meta {
        protocol: 0x0806,
        ..V4
    };
    assert!(!accepts(&SYN_ACK_V4, arp));
    // Or with the port range moved away from 61500.
    assert_eq!(run(&reply_filter(61501, 65535), &SYN_ACK_V4, V4), 0);
    assert_eq!(run(&reply_filter(61500, 61500), &SYN_ACK_V4, V4), ACCEPT);
    assert_eq!(run(&reply_filter(61440, 61499), &SYN_ACK_V4, V4), 0);
}

#[test]
fn ipv4_tcp_flags_and_ports() {
    let accepted = [
        ("SA", "SYN-ACK"),
        ("R", "RST"),
        ("RA", "RST-ACK"),
        ("SAE", "SYN-ACK-ECE"),
    ];
    let rejected_flags = ["A", "S", "", "F", "FA", "SF"];
    check_tcp(tcp4, V4, &accepted, &[LO - 1, 80, 1, 0], &rejected_flags);
}

#[test]
fn ipv4_header_length_comes_from_ihl() {
    // Insert 4 bytes of options (NOP NOP NOP EOL): IHL 6, TCP at offset 24.
    let mut pkt = SYN_ACK_V4.to_vec();
    pkt.splice(20..20, [1, 1, 1, 0]);
    pkt[0] = 0x46;
    assert!(accepts(&pkt, V4));
    // If the filter ignored IHL it would read the options as ports (0x0101 = 257).
    let mut out_of_range = tcp4(80, "SA");
    out_of_range.splice(20..20, [0xf0, 0x3c, 0xf0, 0x3c]);
    out_of_range[0] = 0x46;
    assert!(!accepts(&out_of_range, V4));
}

#[test]
fn ipv4_fragments_are_rejected() {
    let mut pkt = SYN_ACK_V4;
    pkt[6] = 0x20; // MF, offset 0 (DF cleared)
    pkt[7] = 0x00;
    assert!(!accepts(&pkt, V4));
    pkt[6] = 0x00; // offset 8 bytes
    pkt[7] = 0x01;
    assert!(!accepts(&pkt, V4));
    pkt[7] = 0x00; // neither DF nor MF
    assert!(accepts(&pkt, V4));
}

#[test]
fn ipv4_other_protocols() {
    let udp = bytes!(PacketBuilder::ipv4(A4, B4, 64).udp(80, 61500), &[0; 8]);
    assert!(!accepts(&udp, V4));
    let quote = &SYN_ACK_V4[..28];
    let unreach = icmp4(Icmpv4Type::DestinationUnreachable(Unreach4::Port), quote);
    assert!(accepts(&unreach, V4));
    let admin = icmp4(
        Icmpv4Type::DestinationUnreachable(Unreach4::FilterProhibited),
        quote,
    );
    assert!(accepts(&admin, V4));
    let echo = bytes!(PacketBuilder::ipv4(A4, B4, 64).icmpv4_echo_reply(1, 2));
    assert!(!accepts(&echo, V4));
    let echo_req = bytes!(PacketBuilder::ipv4(A4, B4, 64)
        .icmpv4(Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 2 })));
    assert!(!accepts(&echo_req, V4));
    // A non-first fragment of an ICMP error carries no ICMP header.
    let mut frag = unreach.clone();
    frag[7] = 0x03;
    assert!(!accepts(&frag, V4));
}

#[test]
fn ipv6_equivalents() {
    let accepted = [("SA", "SYN-ACK"), ("R", "RST"), ("RA", "RST-ACK")];
    let rejected_flags = ["A", "S", "", "F", "FA"];
    check_tcp(tcp6, V6, &accepted, &[LO - 1, 80, 0], &rejected_flags);
    let udp = bytes!(PacketBuilder::ipv6(A6, B6, 64).udp(80, 61500), &[0; 8]);
    assert!(!accepts(&udp, V6));
    let quote = &tcp6(80, "S")[..48];
    let unreach = icmp6(Icmpv6Type::DestinationUnreachable(Unreach6::Port), quote);
    assert!(accepts(&unreach, V6));
    let exceeded = icmp6(
        Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded),
        quote,
    );
    assert!(!accepts(&exceeded, V6));
    let echo = bytes!(PacketBuilder::ipv6(A6, B6, 64).icmpv6_echo_reply(1, 2));
    assert!(!accepts(&echo, V6));
    // IPv6 bytes under the IPv4 ethertype are parsed as IPv4 and rejected.
    assert!(!accepts(&tcp6(61500, "SA"), V4));
}

#[test]
fn ipv6_extension_headers_are_rejected() {
    // Hop-by-hop header (next header 0) in front of an accepted TCP segment.
    let mut pkt = tcp6(61500, "SA");
    let tcp = pkt.split_off(40);
    pkt[6] = 0;
    pkt.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    pkt.extend_from_slice(&tcp);
    assert!(!accepts(&pkt, V6));
}

#[test]
fn truncated_packets_are_rejected() {
    // Each accepted packet, cut just before the last byte the filter needs.
    let cases = [
        (tcp4(61500, "SA"), V4, 34),
        (tcp6(61500, "R"), V6, 54),
        (SYN_ACK_V4.to_vec(), V4, 34),
    ];
    for (pkt, meta, needed) in cases {
        assert!(accepts(&pkt[..needed], meta));
        for n in 0..needed {
            assert!(!accepts(&pkt[..n], meta), "prefix of {n} bytes accepted");
        }
    }
    let unreach4 = icmp4(
        Icmpv4Type::DestinationUnreachable(Unreach4::Host),
        &SYN_ACK_V4[..28],
    );
    assert!(accepts(&unreach4[..21], V4));
    assert!(!accepts(&unreach4[..20], V4));
    let unreach6 = icmp6(Icmpv6Type::DestinationUnreachable(Unreach6::Address), &[]);
    assert!(accepts(&unreach6[..41], V6));
    assert!(!accepts(&unreach6[..40], V6));
}

#[test]
fn empty_port_range_accepts_no_tcp() {
    let prog = reply_filter(62000, 61000);
    for port in [61000, 61500, 62000] {
        assert_eq!(run(&prog, &tcp4(port, "SA"), V4), 0);
        assert_eq!(run(&prog, &tcp6(port, "R"), V6), 0);
    }
}

#[test]
fn reject_outgoing_only_drops_our_own_transmissions() {
    let prog = reject_outgoing(&reply_filter(LO, HI));
    let pkt = tcp4(61500, "SA");
    assert_eq!(run(&prog, &pkt, V4), ACCEPT);
    for pkttype in [1, 2, 3] {
        // broadcast, multicast, otherhost: left to the reply filter
        assert_eq!(run(&prog, &pkt, Meta { pkttype, ..V4 }), ACCEPT);
    }
    let outgoing = Meta {
        pkttype: PACKET_OUTGOING,
        ..V4
    };
    assert_eq!(run(&prog, &pkt, outgoing), 0);
    assert_eq!(run(&prog, &tcp4(61500, "A"), V4), 0);
}
