//! Per-packet costs of the hot path in nanoseconds: probe stamping, cookie, target order,
//! reply parsing and classification. `cargo bench -p portscope-benches`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use portscope_core::classify::{ScanSpace, Sources};
use portscope_core::cookie::CookieKey;
use portscope_core::order::Permutation;
use portscope_core::probe::{ProbeTemplate, MAX_PROBE_LEN};
use portscope_core::reply;
use portscope_core::targets::{parse_net, PortSet, TargetSet};
use std::hint::black_box;
use std::net::IpAddr;

fn space(target: &str) -> ScanSpace {
    ScanSpace::new(
        CookieKey::from_bytes([5; 16]),
        1,
        TargetSet::new(&[parse_net(target).unwrap()], &[]).unwrap(),
        PortSet::parse("-").unwrap(),
        Sources {
            v4: Some("198.18.0.1".parse().unwrap()),
            v6: Some("2001:2::1".parse().unwrap()),
        },
        0,
    )
    .unwrap()
}

/// A RST|ACK reply to the probe for `pair`, as the target kernel builds it.
fn rst_for(s: &ScanSpace, pair: u64) -> Vec<u8> {
    let p = s.probe(pair, 0);
    let (IpAddr::V4(d), IpAddr::V4(src)) = (p.dst, p.src) else {
        unreachable!()
    };
    let mut b = vec![0u8; 40];
    b[0] = 0x45;
    b[2..4].copy_from_slice(&40u16.to_be_bytes());
    b[8] = 64;
    b[9] = 6;
    b[12..16].copy_from_slice(&d.octets());
    b[16..20].copy_from_slice(&src.octets());
    b[20..22].copy_from_slice(&p.dst_port.to_be_bytes());
    b[22..24].copy_from_slice(&p.src_port.to_be_bytes());
    b[28..32].copy_from_slice(&p.seq.wrapping_add(1).to_be_bytes());
    b[32] = 0x50;
    b[33] = 0x14;
    b
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_packet");
    g.throughput(Throughput::Elements(1));

    let s4 = space("198.18.0.0/28");
    let s6 = space("2001:2::/124");
    let t4 = ProbeTemplate::new("198.18.0.1".parse().unwrap());
    let t6 = ProbeTemplate::new("2001:2::1".parse().unwrap());
    let mut buf = [0u8; MAX_PROBE_LEN];
    let mut i = 0u64;
    g.bench_function("probe_v4 (order + cookie + stamp)", |b| {
        b.iter(|| {
            i = (i + 1) % s4.pairs();
            let p = s4.probe(s4.pair_at(i), 0);
            black_box(t4.stamp(&mut buf, p.dst, p.src_port, p.dst_port, p.seq, i as u16))
        })
    });
    g.bench_function("probe_v6 (order + cookie + stamp)", |b| {
        b.iter(|| {
            i = (i + 1) % s6.pairs();
            let p = s6.probe(s6.pair_at(i), 0);
            black_box(t6.stamp(&mut buf, p.dst, p.src_port, p.dst_port, p.seq, 0))
        })
    });
    let dst: IpAddr = "198.18.0.2".parse().unwrap();
    g.bench_function("stamp_v4", |b| {
        b.iter(|| black_box(t4.stamp(&mut buf, black_box(dst), 61440, 80, 0xdead_beef, 7)))
    });
    let key = CookieKey::from_bytes([9; 16]);
    let src: IpAddr = "198.18.0.1".parse().unwrap();
    g.bench_function("cookie_v4", |b| {
        b.iter(|| black_box(key.cookie(black_box(src), black_box(dst), 61440, 80)))
    });
    let perm = Permutation::new(16 * 65_535, 3);
    g.bench_function("order_at", |b| {
        b.iter(|| {
            i = (i + 1) % perm.len();
            black_box(perm.at(i))
        })
    });

    let frames: Vec<Vec<u8>> = (0..1024)
        .map(|k| rst_for(&s4, k * 7 % s4.pairs()))
        .collect();
    g.bench_function("parse_reply", |b| {
        b.iter(|| {
            i = (i + 1) % 1024;
            black_box(reply::parse(&frames[i as usize]).is_ok())
        })
    });
    g.bench_function("parse_and_classify", |b| {
        b.iter(|| {
            i = (i + 1) % 1024;
            let r = reply::parse(&frames[i as usize]).unwrap();
            black_box(s4.classify(&r).unwrap().pair)
        })
    });
    g.bench_function("classify_plus_rtt_inverse", |b| {
        b.iter_batched(
            || frames[(i as usize + 1) % 1024].clone(),
            |f| {
                let o = s4.classify(&reply::parse(&f).unwrap()).unwrap();
                black_box(s4.position_of(o.pair))
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = packet;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = benches
}
criterion_main!(packet);
