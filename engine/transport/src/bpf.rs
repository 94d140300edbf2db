//! Classic BPF programs for the receive socket: [`reply_filter`] lets only candidate scan
//! replies (TCP SYN-ACK/RST to our source ports, ICMP/ICMPv6 destination unreachable) reach
//! user space, so the kernel drops everything else before copying it.
//!
//! This is a cheap pre-filter, not validation: the core's classifier still checks every
//! packet it is given (cookie, addresses, quotes). It is pure data: no syscalls, no unsafe;
//! attaching it to a socket is `sys`'s job.
//!
//! The programs are written for an `AF_PACKET`/`SOCK_DGRAM` socket: offset 0 is the network
//! header, and the ethertype comes from the ancillary load `SKF_AD_OFF + SKF_AD_PROTOCOL`.
//! A load past the end of the packet ends the program with 0 (reject), so truncated
//! packets are rejected without explicit length checks.

/// One classic BPF instruction, laid out like the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SockFilter {
    /// Opcode.
    pub code: u16,
    /// Jump offset if the condition is true (relative to the next instruction).
    pub jt: u8,
    /// Jump offset if the condition is false.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

/// What an accepting program returns: the number of bytes to keep (the whole packet).
pub const ACCEPT: u32 = 0x40000;

// Opcodes in use (linux/filter.h: class | size | mode, or class | op | source).
/// `ld [k]` (32-bit, absolute; used for ancillary data).
const LD_W_ABS: u16 = 0x20;
/// `ldh [k]`.
const LD_H_ABS: u16 = 0x28;
/// `ldb [k]`.
const LD_B_ABS: u16 = 0x30;
/// `ldh [x + k]`.
const LD_H_IND: u16 = 0x48;
/// `ldb [x + k]`.
const LD_B_IND: u16 = 0x50;
/// `ldxb 4 * ([k] & 0xf)` (BPF_MSH: IPv4 header length).
const LDX_B_MSH: u16 = 0xb1;
/// `and #k`.
const ALU_AND_K: u16 = 0x54;
/// `ja k` (unconditional jump by `k`).
const JMP_JA: u16 = 0x05;
/// `jeq #k, jt, jf`.
const JMP_JEQ_K: u16 = 0x15;
/// `jgt #k, jt, jf`.
const JMP_JGT_K: u16 = 0x25;
/// `jge #k, jt, jf`.
const JMP_JGE_K: u16 = 0x35;
/// `jset #k, jt, jf` (true if `A & k != 0`).
const JMP_JSET_K: u16 = 0x45;
/// `ret #k`.
const RET_K: u16 = 0x06;

/// Ancillary data base offset (`SKF_AD_OFF`, -0x1000 as u32).
const SKF_AD_OFF: u32 = 0xffff_f000;
/// Ancillary: `skb->protocol` (the ethertype, host order).
const SKF_AD_PROTOCOL: u32 = 0;
/// Ancillary: `skb->pkt_type`.
const SKF_AD_PKTTYPE: u32 = 4;
/// `pkt_type` of a packet we are transmitting.
const PACKET_OUTGOING: u32 = 4;

const ETH_P_IP: u32 = 0x0800;
const ETH_P_IPV6: u32 = 0x86dd;
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_ICMPV6: u32 = 58;
const ICMP_DEST_UNREACH: u32 = 3;
const ICMPV6_DEST_UNREACH: u32 = 1;
/// IPv4 "more fragments" flag and fragment offset, in the 16-bit word at offset 6.
const IPV4_MF_AND_OFFSET: u32 = 0x3fff;
/// IPv4 fragment offset alone.
const IPV4_OFFSET: u32 = 0x1fff;
/// Fixed IPv6 header length.
const IPV6_HDR: u32 = 40;
const TCP_RST: u32 = 0x04;
const TCP_SYN_ACK: u32 = 0x12;

/// A program that accepts (returns [`ACCEPT`]) exactly:
///
/// - IPv4, not a fragment (MF clear, offset 0), TCP, destination port in
///   `port_lo..=port_hi`, flags with RST set or with both SYN and ACK set;
/// - IPv4, first fragment or unfragmented, ICMP type 3 (destination unreachable);
/// - IPv6 whose fixed header's next header is TCP (6), with the same port and flag rule;
/// - IPv6 whose fixed header's next header is ICMPv6 (58), type 1 (destination unreachable).
///
/// Everything else returns 0. IPv6 packets with extension headers are rejected (replies
/// to our probes carry none). If `port_lo > port_hi` no TCP packet is accepted.
pub fn reply_filter(port_lo: u16, port_hi: u16) -> Vec<SockFilter> {
    use Label::*;
    let (lo, hi) = (u32::from(port_lo), u32::from(port_hi));
    let mut a = Asm::default();

    a.op(LD_W_ABS, SKF_AD_OFF + SKF_AD_PROTOCOL);
    a.jump(JMP_JEQ_K, ETH_P_IP, Next, CheckV6);
    // IPv4.
    a.op(LD_B_ABS, 9);
    a.jump(JMP_JEQ_K, IPPROTO_TCP, Next, V4NotTcp);
    a.reject_fragments(IPV4_MF_AND_OFFSET);
    a.port_in(LD_H_IND, 2, lo, hi);
    a.op(LD_B_IND, 13);
    a.ja(TcpFlags);

    a.label(V4NotTcp);
    a.jump(JMP_JEQ_K, IPPROTO_ICMP, Next, Reject);
    a.reject_fragments(IPV4_OFFSET);
    a.op(LD_B_IND, 0);
    a.jump(JMP_JEQ_K, ICMP_DEST_UNREACH, Accept, Reject);

    a.label(CheckV6);
    a.jump(JMP_JEQ_K, ETH_P_IPV6, Next, Reject);
    a.op(LD_B_ABS, 6);
    a.jump(JMP_JEQ_K, IPPROTO_TCP, Next, V6NotTcp);
    a.port_in(LD_H_ABS, IPV6_HDR + 2, lo, hi);
    a.op(LD_B_ABS, IPV6_HDR + 13);

    // A = TCP flags byte.
    a.label(TcpFlags);
    a.jump(JMP_JSET_K, TCP_RST, Accept, Next);
    a.op(ALU_AND_K, TCP_SYN_ACK);
    a.jump(JMP_JEQ_K, TCP_SYN_ACK, Accept, Reject);

    a.label(V6NotTcp);
    a.jump(JMP_JEQ_K, IPPROTO_ICMPV6, Next, Reject);
    a.op(LD_B_ABS, IPV6_HDR);
    a.jump(JMP_JEQ_K, ICMPV6_DEST_UNREACH, Accept, Reject);

    a.label(Accept);
    a.op(RET_K, ACCEPT);
    a.label(Reject);
    a.op(RET_K, 0);
    a.finish()
}

/// `prog` preceded by a check that rejects packets we transmit ourselves (`pkt_type ==
/// PACKET_OUTGOING`). For kernels without `PACKET_IGNORE_OUTGOING` (before 4.20); on newer
/// kernels the socket option is cheaper, since it skips outgoing packets before any filter.
pub fn reject_outgoing(prog: &[SockFilter]) -> Vec<SockFilter> {
    let mut out = Vec::with_capacity(prog.len() + 3);
    out.push(insn(LD_W_ABS, 0, 0, SKF_AD_OFF + SKF_AD_PKTTYPE));
    out.push(insn(JMP_JEQ_K, 0, 1, PACKET_OUTGOING));
    out.push(insn(RET_K, 0, 0, 0));
    out.extend_from_slice(prog);
    out
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// Jump targets of [`reply_filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    /// The next instruction (offset 0).
    Next,
    V4NotTcp,
    CheckV6,
    TcpFlags,
    V6NotTcp,
    Accept,
    Reject,
}

const LABELS: usize = Label::Reject as usize + 1;

/// A tiny assembler: instructions with symbolic forward jumps, resolved in [`Asm::finish`].
#[derive(Debug, Default)]
struct Asm {
    insns: Vec<(SockFilter, Option<(Label, Label)>)>,
    at: [Option<usize>; LABELS],
}

impl Asm {
    /// Rejects an IPv4 packet with any of the `mask` bits set in its flags and fragment
    /// offset word, then sets X to the IPv4 header length.
    fn reject_fragments(&mut self, mask: u32) {
        self.op(LD_H_ABS, 6);
        self.jump(JMP_JSET_K, mask, Label::Reject, Label::Next);
        self.op(LDX_B_MSH, 0);
    }

    /// Loads the 16-bit port at `at` with `load` and rejects it unless in `lo..=hi`.
    fn port_in(&mut self, load: u16, at: u32, lo: u32, hi: u32) {
        self.op(load, at);
        self.jump(JMP_JGE_K, lo, Label::Next, Label::Reject);
        self.jump(JMP_JGT_K, hi, Label::Reject, Label::Next);
    }

    fn op(&mut self, code: u16, k: u32) {
        self.insns.push((insn(code, 0, 0, k), None));
    }

    fn jump(&mut self, code: u16, k: u32, jt: Label, jf: Label) {
        self.insns.push((insn(code, 0, 0, k), Some((jt, jf))));
    }

    /// Unconditional jump (encoded with the target in `jt`; moved to `k` when resolved).
    fn ja(&mut self, to: Label) {
        self.insns
            .push((insn(JMP_JA, 0, 0, 0), Some((to, Label::Next))));
    }

    fn label(&mut self, l: Label) {
        assert!(self.at[l as usize].is_none(), "label {l:?} placed twice");
        self.at[l as usize] = Some(self.insns.len());
    }

    fn offset(&self, from: usize, to: Label) -> u32 {
        if to == Label::Next {
            return 0;
        }
        let target = self.at[to as usize].unwrap_or_else(|| panic!("label {to:?} never placed"));
        assert!(target > from, "classic BPF jumps only forward");
        (target - from - 1) as u32
    }

    fn finish(self) -> Vec<SockFilter> {
        let small = |o: u32| u8::try_from(o).expect("BPF jump offset over 255");
        self.insns
            .iter()
            .enumerate()
            .map(|(i, (ins, jumps))| match *jumps {
                None => *ins,
                Some((to, _)) if ins.code == JMP_JA => SockFilter {
                    k: self.offset(i, to),
                    ..*ins
                },
                Some((jt, jf)) => SockFilter {
                    jt: small(self.offset(i, jt)),
                    jf: small(self.offset(i, jf)),
                    ..*ins
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
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
        0x45, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, 0xb5, 0x7e, 0xc0, 0x00, 0x02,
        0x07, 0xc0, 0x00, 0x02, 0x01, 0x00, 0x50, 0xf0, 0x3c, 0x9c, 0x3b, 0x1e, 0x0a, 0x12, 0x34,
        0x56, 0x79, 0x60, 0x12, 0xfa, 0xf0, 0x4c, 0x1d, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
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
                    JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K | JMP_JSET_K => {
                        usize::from(ins.jt.max(ins.jf))
                    }
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
}
