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
mod tests;
