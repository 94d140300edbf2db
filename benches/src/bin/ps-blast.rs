//! `ps-blast`: the lab's ceiling for `cargo xtask bench`. A minimal sender (one thread, SYNs
//! stamped by the core's template, `sendmmsg` batches of 64 through the engine's own
//! `RawSink`) at full speed: no pacing, no receive thread, no state. Sent into the answering
//! target it measures what the machine can push through the lab; into silent ports (a black
//! hole) what sending alone costs. Run only inside a lab namespace, as the bench does.
//!
//! usage: `ps-blast [--threads N] SRC DST PORTS COUNT [IFACE NEXT-HOP-MAC [bypass]]`
//! (PORTS: `lo-hi` or `p1,p2,...`; DST an address or a block such as `198.19.0.0/16`, at
//! most 2^20 addresses, swept one port after the other: probe `i` goes to port `i mod
//! |PORTS|` of address `i / |PORTS| mod |DST|`). With an interface and MAC it sends
//! through the `AF_PACKET` `LinkSink` instead (with `bypass`: `PACKET_QDISC_BYPASS`), to
//! measure those.
//! With `--threads N`, N threads (each pinned to its own allowed CPU, each with its own
//! sink) send COUNT/N probes each, as the engine's extra send threads do; the rate is all
//! probes over the longest thread's send time.

use portscope_core::probe::ProbeTemplate;
use portscope_transport::sys::{LinkSink, OpenError, RawSink};
use portscope_transport::{PacketSink, SendBatch};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::time::Instant;

fn parse_ports(spec: &str) -> Option<Vec<u16>> {
    if let Some((lo, hi)) = spec.split_once('-') {
        let (lo, hi): (u16, u16) = (lo.parse().ok()?, hi.parse().ok()?);
        return (lo >= 1 && lo <= hi).then(|| (lo..=hi).collect());
    }
    spec.split(',').map(|p| p.parse().ok()).collect()
}

/// Destinations: `count` addresses from `base` (one address, or a CIDR block).
#[derive(Clone, Copy)]
struct Dsts {
    base: IpAddr,
    count: u64,
}

impl Dsts {
    fn parse(spec: &str) -> Option<Dsts> {
        let Some((addr, len)) = spec.split_once('/') else {
            return Some(Dsts {
                base: spec.parse().ok()?,
                count: 1,
            });
        };
        let (addr, len): (IpAddr, u32) = (addr.parse().ok()?, len.parse().ok()?);
        let bits: u32 = if addr.is_ipv4() { 32 } else { 128 };
        // At most 2^20 addresses: a sweep, not a walk through an address family.
        let host_bits = bits.checked_sub(len).filter(|h| *h <= 20)?;
        let base = match addr {
            IpAddr::V4(a) => Ipv4Addr::from(u32::from(a) >> host_bits << host_bits).into(),
            IpAddr::V6(a) => Ipv6Addr::from(u128::from(a) >> host_bits << host_bits).into(),
        };
        Some(Dsts {
            base,
            count: 1 << host_bits,
        })
    }

    /// Address `i mod count` of the block.
    fn nth(&self, i: u64) -> IpAddr {
        let k = i % self.count;
        match self.base {
            IpAddr::V4(a) => Ipv4Addr::from(u32::from(a) + k as u32).into(),
            IpAddr::V6(a) => Ipv6Addr::from(u128::from(a) + u128::from(k)).into(),
        }
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let threads = if args.first().map(String::as_str) == Some("--threads") {
        match args
            .get(1)
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n >= 1)
        {
            Some(n) => {
                args.drain(..2);
                n
            }
            None => {
                eprintln!("ps-blast: --threads takes a number of at least 1");
                return ExitCode::from(64);
            }
        }
    } else {
        1
    };
    const USAGE: &str =
        "usage: ps-blast [--threads N] SRC DST PORTS COUNT [IFACE NEXT-HOP-MAC [bypass]]";
    let link_args = (args.len() > 4).then(|| args.split_off(4));
    let link = match link_args.as_deref() {
        None => None,
        Some([iface, mac, rest @ ..]) if rest.len() <= 1 => {
            let Some(mac) = parse_mac(mac) else {
                eprintln!("ps-blast: bad MAC {mac:?}");
                return ExitCode::from(64);
            };
            let bypass = rest.first().map(String::as_str) == Some("bypass");
            Some((iface.clone(), mac, bypass))
        }
        Some(_) => {
            eprintln!("{USAGE}");
            return ExitCode::from(64);
        }
    };
    let parsed = match args.as_slice() {
        [src, dst, ports, count] => (|| {
            Some((
                src.parse::<IpAddr>().ok()?,
                Dsts::parse(dst)?,
                parse_ports(ports).filter(|p| !p.is_empty())?,
                count.parse::<u64>().ok()?,
            ))
        })(),
        _ => None,
    };
    let Some((src, dsts, ports, count)) = parsed else {
        eprintln!("{USAGE}");
        return ExitCode::from(64);
    };
    let open = || -> Result<Box<dyn PacketSink>, OpenError> {
        match &link {
            None => RawSink::open().map(|s| Box::new(s) as Box<dyn PacketSink>),
            Some((iface, mac, bypass)) => LinkSink::open(iface, *mac, *bypass).map(|s| {
                eprintln!(
                    "ps-blast: AF_PACKET on {iface}, qdisc bypass {}",
                    s.qdisc_bypass()
                );
                Box::new(s) as Box<dyn PacketSink>
            }),
        }
    };
    let cpus = portscope_transport::sys::allowed_cpus().unwrap_or_default();
    let mut sinks = Vec::new();
    for _ in 0..threads {
        match open() {
            Ok(s) => sinks.push(s),
            Err(e) => {
                eprintln!("ps-blast: {e}");
                return ExitCode::from(77);
            }
        }
    }
    let share = count.div_ceil(threads);
    let ports = std::sync::Arc::new(ports);
    let runs: Vec<_> = sinks
        .into_iter()
        .enumerate()
        .map(|(t, sink)| {
            let ports = std::sync::Arc::clone(&ports);
            let cpu = (threads > 1)
                .then(|| cpus.get(t % cpus.len().max(1)).copied())
                .flatten();
            let n = share.min(count.saturating_sub(share * t as u64));
            std::thread::spawn(move || {
                if let Some(cpu) = cpu {
                    let _ = portscope_transport::sys::pin_current_thread(cpu);
                }
                blast(sink, src, dsts, &ports, t as u64 * share, n)
            })
        })
        .collect();
    let (mut sent, mut failed, mut secs) = (0u64, 0u64, 0f64);
    for r in runs {
        let (s, f, t) = r.join().expect("a blast thread panicked");
        sent += s;
        failed += f;
        secs = secs.max(t);
    }
    println!(
        "ps-blast: sent {sent} failed {failed} in {secs:.6} s ({:.0}/s)",
        sent as f64 / secs.max(1e-9)
    );
    ExitCode::SUCCESS
}

/// Sends probes `first..first + n` of the sequence through `sink`: (sent, failed, seconds).
fn blast(
    mut sink: Box<dyn PacketSink>,
    src: IpAddr,
    dsts: Dsts,
    ports: &[u16],
    first: u64,
    n: u64,
) -> (u64, u64, f64) {
    let tmpl = ProbeTemplate::new(src);
    let mut batch = SendBatch::new(64);
    let (mut sent, mut failed, mut i) = (0u64, 0u64, first);
    let end = first + n;
    let t0 = Instant::now();
    while i < end {
        batch.clear();
        while !batch.is_full() && i < end {
            let port = ports[(i % ports.len() as u64) as usize];
            let dst = dsts.nth(i / ports.len() as u64);
            // Source ports outside the engine's range; the sequence number varies per probe.
            let sport = 1024 + (i / ports.len() as u64 % 30_000) as u16;
            batch.push(dst, |buf| {
                tmpl.stamp(buf, dst, sport, port, i as u32, i as u16)
            });
            i += 1;
        }
        let r = sink.send(&batch);
        sent += r.sent as u64;
        failed += r.failed as u64;
    }
    (sent, failed, t0.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::Dsts;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_block_is_swept_from_its_base_and_wraps() {
        let one = Dsts::parse("198.18.0.2").unwrap();
        assert_eq!((one.count, one.nth(7)), (1, ip("198.18.0.2")));
        let b = Dsts::parse("198.19.7.9/16").unwrap();
        assert_eq!(b.count, 65_536);
        assert_eq!(b.nth(0), ip("198.19.0.0"));
        assert_eq!(b.nth(65_535), ip("198.19.255.255"));
        assert_eq!(b.nth(65_536 + 3), ip("198.19.0.3"));
        let v6 = Dsts::parse("2001:2::/120").unwrap();
        assert_eq!((v6.count, v6.nth(257)), (256, ip("2001:2::1")));
        assert!(
            Dsts::parse("198.18.0.0/8").is_none(),
            "more than 2^20 addresses"
        );
        assert!(Dsts::parse("198.19.0.0/33").is_none());
        assert!(Dsts::parse("nonsense/16").is_none());
    }
}
