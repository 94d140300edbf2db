//! End-to-end tests of the Linux backend against the real kernel, over loopback inside
//! fresh network namespaces (see `support`): probes built by hand go out through
//! [`RawSink`], the kernel's TCP/UDP stack answers, and the receive half must deliver
//! exactly the replies its BPF filter is meant to let through, through `recvmmsg`
//! ([`PacketSocketSource`]) and through the `TPACKET_V3` ring alike: the receiving tests run
//! once per [`RxRing`] mode. Needs root; fails without.
//!
//! Not a test of scan logic: packets are built with etherparse, not the engine.

mod support;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use portscope_transport::sys::{
    self, OpenError, PacketSocketSource, RawSink, RingSource, RxRing, SysConfig, SysSource,
};
use portscope_transport::{PacketSink, PacketSource, RecvBatch, SendBatch};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};
use support::{in_netns, in_netns_pair, PAIR_A, PAIR_B, PAIR_DEV};

const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);
const SEQ: u32 = 0x1234_5678;

/// Both receive paths, each required (no fallback).
const MODES: [RxRing; 2] = [RxRing::Off, RxRing::On];

fn config() -> SysConfig {
    SysConfig {
        port_lo: 61440,
        port_hi: 65535,
        interface: None,
        rx_ring: RxRing::Off,
        expected_replies: None,
    }
}

fn open(rx_ring: RxRing) -> (RawSink, SysSource) {
    let (sink, source) = sys::open(&SysConfig {
        rx_ring,
        ..config()
    })
    .expect("open the sys backend");
    println!(
        "{rx_ring:?}: {}, PACKET_IGNORE_OUTGOING in effect: {}",
        source.kind(),
        source.ignores_outgoing()
    );
    let want = if rx_ring == RxRing::On {
        "tpacket-v3 ring"
    } else {
        "recvmmsg"
    };
    assert_eq!(source.kind(), want);
    (sink, source)
}

/// Writes an etherparse builder step into `buf`, returning the length.
macro_rules! emit {
    ($step:expr, $buf:expr) => {{
        let step = $step;
        let mut cur = std::io::Cursor::new(&mut $buf[..]);
        step.write(&mut cur, &[]).unwrap();
        cur.position() as usize
    }};
}

fn push_syn(batch: &mut SendBatch, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) {
    batch.push(dst, |buf| match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => emit!(
            PacketBuilder::ipv4(s.octets(), d.octets(), 64)
                .tcp(sport, dport, SEQ, 1024)
                .syn(),
            buf
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => emit!(
            PacketBuilder::ipv6(s.octets(), d.octets(), 64)
                .tcp(sport, dport, SEQ, 1024)
                .syn(),
            buf
        ),
        _ => unreachable!("mixed families"),
    });
}

fn push_udp(batch: &mut SendBatch, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) {
    batch.push(dst, |buf| match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => emit!(
            PacketBuilder::ipv4(s.octets(), d.octets(), 64).udp(sport, dport),
            buf
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => emit!(
            PacketBuilder::ipv6(s.octets(), d.octets(), 64).udp(sport, dport),
            buf
        ),
        _ => unreachable!("mixed families"),
    });
}

/// A received TCP segment, as far as these tests care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    src: IpAddr,
    sport: u16,
    dport: u16,
    syn: bool,
    ack: bool,
    rst: bool,
    ack_no: u32,
}

/// The answer of `addr`'s `port` to our SYN (sequence [`SEQ`]) from `dport`: a SYN-ACK, or
/// a RST-ACK when nothing listens.
fn answer(addr: IpAddr, port: u16, dport: u16, listening: bool) -> Got {
    Got::Tcp(Seg {
        src: addr,
        sport: port,
        dport,
        syn: listening,
        ack: true,
        rst: !listening,
        ack_no: SEQ.wrapping_add(1),
    })
}

/// What a received packet is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Tcp(Seg),
    Icmp4 { kind: u8, len: usize },
    Icmp6 { kind: u8, len: usize },
    Other(Vec<u8>),
}

fn parse(p: &[u8], full_len: usize) -> Got {
    let Ok(sp) = SlicedPacket::from_ip(p) else {
        // A truncated ICMP error may not parse in full; classify by hand.
        return match p.first().map(|b| b >> 4) {
            Some(4) if p.len() > 20 && p[9] == 1 => Got::Icmp4 {
                kind: p[usize::from(p[0] & 0xf) * 4],
                len: full_len,
            },
            Some(6) if p.len() > 40 && p[6] == 58 => Got::Icmp6 {
                kind: p[40],
                len: full_len,
            },
            _ => Got::Other(p.to_vec()),
        };
    };
    let src = match &sp.net {
        Some(NetSlice::Ipv4(v4)) => IpAddr::V4(v4.header().source_addr()),
        Some(NetSlice::Ipv6(v6)) => IpAddr::V6(v6.header().source_addr()),
        _ => return Got::Other(p.to_vec()),
    };
    match &sp.transport {
        Some(TransportSlice::Tcp(t)) => Got::Tcp(Seg {
            src,
            sport: t.source_port(),
            dport: t.destination_port(),
            syn: t.syn(),
            ack: t.ack(),
            rst: t.rst(),
            ack_no: t.acknowledgment_number(),
        }),
        Some(TransportSlice::Icmpv4(i)) => Got::Icmp4 {
            kind: i.type_u8(),
            len: full_len,
        },
        Some(TransportSlice::Icmpv6(i)) => Got::Icmp6 {
            kind: i.type_u8(),
            len: full_len,
        },
        _ => Got::Other(p.to_vec()),
    }
}

/// Receives until `want` packets arrived (then listens `linger` more, to catch extras) or
/// `limit` passed. Uses small batches so several `recv` calls are needed.
fn collect(source: &mut SysSource, want: usize, batch_cap: usize) -> Vec<Got> {
    let limit = Instant::now() + Duration::from_secs(5);
    let linger = Duration::from_millis(300);
    let mut batch = RecvBatch::new(batch_cap);
    let mut got = Vec::new();
    let mut full_since: Option<Instant> = None;
    while Instant::now() < limit {
        if let Some(t) = full_since {
            if t.elapsed() >= linger {
                break;
            }
        }
        source
            .recv(&mut batch, Duration::from_millis(50))
            .expect("recv");
        let n = batch.len();
        // Both paths hand over the kernel's receive stamp of every packet (the ring frame's,
        // recvmmsg's SCM_TIMESTAMPNS): its age at the read is known and short (under the
        // collection's limit).
        for i in 0..n {
            let age = batch
                .age(i)
                .expect("a packet without its kernel receive stamp");
            assert!(age < Duration::from_secs(5), "age {age:?}");
        }
        let lens: Vec<usize> = batch.raw_parts().1[..n].to_vec();
        for (i, len) in lens.into_iter().enumerate() {
            got.push(parse(batch.get(i), len));
        }
        if got.len() >= want && full_since.is_none() {
            full_since = Some(Instant::now());
        }
    }
    got
}

/// A port of `addr` that the kernel just handed out and that nothing holds any more.
fn free_port(addr: IpAddr, udp: bool) -> u16 {
    let local = if udp {
        UdpSocket::bind((addr, 0)).unwrap().local_addr()
    } else {
        TcpListener::bind((addr, 0)).unwrap().local_addr()
    };
    local.unwrap().port()
}

fn syn_ack_roundtrip(addr: IpAddr, interface: Option<&str>, rx_ring: RxRing) {
    let listener = TcpListener::bind((addr, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let cfg = SysConfig {
        interface: interface.map(str::to_owned),
        rx_ring,
        ..config()
    };
    let (mut sink, mut source) = sys::open(&cfg).expect("open");
    println!("{rx_ring:?}: {}", source.kind());
    let mut batch = SendBatch::new(4);
    push_syn(&mut batch, addr, 61500, addr, port);
    let report = sink.send(&batch);
    assert_eq!(
        (report.sent, report.failed, report.last_errno),
        (1, 0, None)
    );

    // Exactly one packet: the listener's SYN-ACK. Not our SYN (wrong flags, and outgoing),
    // not the outgoing copy of the SYN-ACK, not our kernel's RST (wrong port).
    let got = collect(&mut source, 1, 8);
    assert_eq!(got, vec![answer(addr, port, 61500, true)]);
    let stats = source.kernel_stats();
    assert_eq!((stats.received, stats.dropped), (1, 0), "{stats:?}");
    // Reading resets the kernel's counters; ours accumulate.
    assert_eq!(source.kernel_stats(), stats);
    drop(listener);
}

fn rst_roundtrip(addr: IpAddr, rx_ring: RxRing) {
    let port = free_port(addr, false);
    let (mut sink, mut source) = open(rx_ring);
    let mut batch = SendBatch::new(1);
    push_syn(&mut batch, addr, 61501, addr, port);
    assert_eq!(sink.send(&batch).sent, 1);
    let got = collect(&mut source, 1, 8);
    assert_eq!(got, vec![answer(addr, port, 61501, false)]);
    assert_eq!(source.kernel_stats().received, 1);
}

#[test]
fn syn_ack_v4() {
    in_netns("syn_ack_v4", || {
        MODES
            .into_iter()
            .for_each(|m| syn_ack_roundtrip(LO4, None, m));
    });
}

#[test]
fn syn_ack_v6() {
    in_netns("syn_ack_v6", || {
        MODES
            .into_iter()
            .for_each(|m| syn_ack_roundtrip(LO6, None, m));
    });
}

#[test]
fn syn_ack_on_named_interface() {
    in_netns("syn_ack_on_named_interface", || {
        for m in MODES {
            syn_ack_roundtrip(LO4, Some("lo"), m);
        }
        for rx_ring in [RxRing::Off, RxRing::On, RxRing::Auto] {
            let cfg = SysConfig {
                interface: Some("nosuch0".into()),
                rx_ring,
                ..config()
            };
            match sys::open(&cfg) {
                Err(OpenError::UnknownInterface(name)) => assert_eq!(name, "nosuch0"),
                other => panic!("expected UnknownInterface, got {other:?}"),
            }
        }
    });
}

#[test]
fn rst_from_closed_port_v4() {
    in_netns("rst_from_closed_port_v4", || {
        MODES.into_iter().for_each(|m| rst_roundtrip(LO4, m));
    });
}

#[test]
fn rst_from_closed_port_v6() {
    in_netns("rst_from_closed_port_v6", || {
        MODES.into_iter().for_each(|m| rst_roundtrip(LO6, m));
    });
}

#[test]
fn port_unreachable_icmp_v4_v6() {
    in_netns("port_unreachable_icmp_v4_v6", || {
        for m in MODES {
            let (mut sink, mut source) = open(m);
            let mut batch = SendBatch::new(2);
            push_udp(&mut batch, LO4, 61502, LO4, free_port(LO4, true));
            push_udp(&mut batch, LO6, 61502, LO6, free_port(LO6, true));
            assert_eq!(sink.send(&batch).sent, 2);
            let got = collect(&mut source, 2, 8);
            assert_eq!(got.len(), 2, "{got:?}");
            assert!(got.contains(&Got::Icmp4 { kind: 3, len: 56 }), "{got:?}");
            assert!(got.contains(&Got::Icmp6 { kind: 1, len: 96 }), "{got:?}");
        }
    });
}

#[test]
fn long_packets_are_truncated_with_their_length_reported() {
    in_netns(
        "long_packets_are_truncated_with_their_length_reported",
        || {
            for m in MODES {
                let (_sink, mut source) = open(m);
                // A 1000-byte datagram to a closed port: the ICMPv4 error quotes up to 576 bytes,
                // the ICMPv6 one up to 1280, both more than a RECV_SLOT.
                let payload = [0x5a; 1000];
                for addr in [LO4, LO6] {
                    let sock = UdpSocket::bind((addr, 0)).unwrap();
                    sock.send_to(&payload, (addr, free_port(addr, true)))
                        .unwrap();
                }
                let got = collect(&mut source, 2, 8);
                assert_eq!(got.len(), 2, "{got:?}");
                let ip6_quote = 40 + 8 + 1000;
                assert!(got.contains(&Got::Icmp4 { kind: 3, len: 576 }), "{got:?}");
                assert!(
                    got.contains(&Got::Icmp6 {
                        kind: 1,
                        len: 40 + 8 + ip6_quote
                    }),
                    "{got:?}"
                );
            }
        },
    );
}

#[test]
fn mixed_batch_with_a_refused_packet() {
    in_netns("mixed_batch_with_a_refused_packet", || {
        for m in MODES {
            let l4 = TcpListener::bind((LO4, 0)).unwrap();
            let l6 = TcpListener::bind((LO6, 0)).unwrap();
            let (p4, p6) = (
                l4.local_addr().unwrap().port(),
                l6.local_addr().unwrap().port(),
            );
            let (mut sink, mut source) = open(m);
            let bcast = IpAddr::V4(Ipv4Addr::new(127, 255, 255, 255));
            let mut batch = SendBatch::new(8);
            push_syn(&mut batch, LO4, 61600, LO4, p4);
            push_syn(&mut batch, LO6, 61601, LO6, p6);
            // Loopback's broadcast address without SO_BROADCAST: the kernel refuses (EACCES).
            push_syn(&mut batch, LO4, 61602, bcast, p4);
            push_syn(&mut batch, LO4, 61603, LO4, p4);
            push_syn(&mut batch, LO6, 61604, LO6, p6);
            push_syn(&mut batch, LO6, 61605, LO6, p6);
            let report = sink.send(&batch);
            assert_eq!(report.sent, 5, "{report:?}");
            assert_eq!(report.failed, 1, "{report:?}");
            assert_eq!(report.last_errno, Some(libc::EACCES), "{report:?}");
            let got = collect(&mut source, 5, 8);
            let mut ports: Vec<u16> = got
                .iter()
                .map(|g| match g {
                    Got::Tcp(s) if s.syn && s.ack => s.dport,
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            ports.sort_unstable();
            assert_eq!(ports, [61600, 61601, 61603, 61604, 61605]);
        }
    });
}

#[test]
fn many_replies_through_small_batches() {
    in_netns("many_replies_through_small_batches", || {
        for m in MODES {
            const N: u16 = 300;
            let listener = TcpListener::bind((LO4, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            let (mut sink, mut source) = open(m);
            let mut batch = SendBatch::new(usize::from(N));
            for i in 0..N {
                push_syn(&mut batch, LO4, 61440 + i, LO4, port);
            }
            let report = sink.send(&batch);
            assert_eq!((report.sent, report.failed), (usize::from(N), 0));
            let got = collect(&mut source, usize::from(N), 16);
            let mut ports: Vec<u16> = got
                .iter()
                .map(|g| match g {
                    Got::Tcp(s) if s.syn && s.ack && s.ack_no == SEQ.wrapping_add(1) => s.dport,
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            ports.sort_unstable();
            assert_eq!(ports, (61440..61440 + N).collect::<Vec<_>>());
            let stats = source.kernel_stats();
            assert_eq!((stats.received, stats.dropped), (u64::from(N), 0));
        }
    });
}

#[test]
fn recv_times_out_empty() {
    in_netns("recv_times_out_empty", || {
        for m in MODES {
            let (_sink, mut source) = open(m);
            let mut batch = RecvBatch::new(4);
            let start = Instant::now();
            source.recv(&mut batch, Duration::from_millis(100)).unwrap();
            let waited = start.elapsed();
            assert!(batch.is_empty());
            assert!(waited >= Duration::from_millis(95), "{waited:?}");
            assert!(waited < Duration::from_secs(2), "{waited:?}");
            source.recv(&mut batch, Duration::ZERO).unwrap();
            assert!(batch.is_empty());
        }
    });
}

#[test]
fn route_source_on_loopback() {
    in_netns("route_source_on_loopback", || {
        assert_eq!(sys::route_source(LO4).unwrap(), LO4);
        assert_eq!(
            sys::route_source("127.0.0.2".parse().unwrap()).unwrap(),
            LO4
        );
        assert_eq!(sys::route_source(LO6).unwrap(), LO6);
        // No route off the island: connecting a UDP socket fails (and sends nothing).
        let err = sys::route_source("192.0.2.1".parse().unwrap()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
    });
}

#[test]
fn open_without_cap_net_raw_is_a_permission_error() {
    in_netns("open_without_cap_net_raw_is_a_permission_error", || {
        portscope_transport::privs::drop_all().expect("drop capabilities");
        assert!(!portscope_transport::privs::has_net_raw());
        for result in [
            sys::open(&config()).map(drop),
            RawSink::open().map(drop),
            PacketSocketSource::open(&config()).map(drop),
            RingSource::open(&config()).map(drop),
        ] {
            match result {
                Err(e @ OpenError::Permission { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(portscope_transport::privs::NEED_NET_RAW),
                        "{msg}"
                    );
                }
                other => panic!("expected a permission error, got {other:?}"),
            }
        }
    });
}

/// Sets the root qdisc of the veth link (we are root in the child's namespace).
fn shape(rate: &str) {
    let out = std::process::Command::new("tc")
        .args([
            "qdisc", "replace", "dev", PAIR_DEV, "root", "tbf", "rate", rate,
        ])
        .args(["burst", "1600", "limit", "1600"])
        .output()
        .expect("run tc");
    assert!(out.status.success(), "tc: {out:?}");
}

#[test]
fn full_device_queue_is_retried_then_reported() {
    in_netns_pair("full_device_queue_is_retried_then_reported", || {
        let (a, b) = (IpAddr::from(PAIR_A), IpAddr::from(PAIR_B));
        let (mut sink, _source) = open(RxRing::Off);
        // Burst and queue take ~60 packets, drained at ~18000 packets/s: the back-off
        // waits the rest out.
        shape("10mbit");
        let mut batch = SendBatch::new(400);
        for i in 0..400 {
            push_syn(&mut batch, a, 61440 + i, b, 80);
        }
        let report = sink.send(&batch);
        assert_eq!((report.sent, report.failed), (400, 0), "{report:?}");
        // Drained at ~15 packets/s: the bounded back-off gives up, and says why.
        shape("8kbit");
        let mut batch = SendBatch::new(100);
        for i in 0..100 {
            push_syn(&mut batch, a, 61440 + i, b, 80);
        }
        let start = Instant::now();
        let report = sink.send(&batch);
        println!("{report:?} in {:?}", start.elapsed());
        assert_eq!(report.sent + report.failed, 100, "{report:?}");
        assert!(report.failed > 0, "{report:?}");
        assert_eq!(report.last_errno, Some(libc::ENOBUFS), "{report:?}");
    });
}

/// A `recv` waiting for packets that will never come returns as soon as another thread
/// wakes it (the engine's control messages do), and a wake-up sent while nobody waits ends
/// the next wait.
#[test]
fn a_waker_ends_a_recv_wait() {
    in_netns("a_waker_ends_a_recv_wait", || {
        for m in MODES {
            let (_sink, mut source) = open(m);
            let waker = source.waker().expect("the sys sources can be woken");
            let mut batch = RecvBatch::new(8);
            let long = Duration::from_secs(30);
            let t = Instant::now();
            std::thread::scope(|s| {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(100));
                    waker.wake();
                });
                source.recv(&mut batch, long).expect("recv");
            });
            assert!(batch.is_empty());
            assert!(
                t.elapsed() < long / 3,
                "{m:?}: woken after {:?}",
                t.elapsed()
            );
            waker.wake();
            let t = Instant::now();
            source.recv(&mut batch, long).expect("recv");
            assert!(t.elapsed() < long / 3, "{m:?}: early wake-up lost");
            // The wake-up is used up: the next wait runs to its timeout.
            let t = Instant::now();
            source
                .recv(&mut batch, Duration::from_millis(200))
                .expect("recv");
            assert!(
                t.elapsed() >= Duration::from_millis(200),
                "{m:?}: spurious wake-up"
            );
        }
    });
}

/// The ring reports packets hidden in the block the kernel is still filling (the engine
/// then waits for that block before ending a scan) and nothing once they are read; the
/// socket has nothing hidden ever.
#[test]
fn pending_tells_of_packets_in_the_open_ring_block() {
    in_netns("pending_tells_of_packets_in_the_open_ring_block", || {
        for m in MODES {
            let (mut sink, mut source) = open(m);
            assert!(!source.pending(), "{m:?}: pending before any traffic");
            let mut seen_pending = 0;
            for i in 0..10u16 {
                let port = free_port(LO4, false);
                let mut batch = SendBatch::new(1);
                push_syn(&mut batch, LO4, 61600 + i, LO4, port);
                assert_eq!(sink.send(&batch).sent, 1);
                // On loopback the kernel answers inside `send`: the RST is captured now,
                // in a block the ring hands over only when it retires (a jiffy or so).
                seen_pending += usize::from(source.pending());
                let got = collect(&mut source, 1, 8);
                assert_eq!(got, vec![answer(LO4, port, 61600 + i, false)], "{m:?}");
                assert!(
                    !source.pending(),
                    "{m:?}: pending after everything was read"
                );
            }
            match m {
                RxRing::On => assert!(seen_pending > 0, "the open block never showed"),
                _ => assert_eq!(seen_pending, 0),
            }
        }
    });
}
