//! `ps-blast`: the lab's ceiling for `cargo xtask bench`. A minimal sender (one thread, SYNs
//! stamped by the core's template, `sendmmsg` batches of 64 through the engine's own
//! `RawSink`) at full speed: no pacing, no receive thread, no state. Sent into the answering
//! target it measures what the machine can push through the lab; into silent ports (a black
//! hole) what sending alone costs. Run only inside a lab namespace, as the bench does.
//!
//! usage: ps-blast SRC DST PORTS COUNT   (PORTS: `lo-hi` or `p1,p2,...`)

use portscope_core::probe::ProbeTemplate;
use portscope_transport::sys::RawSink;
use portscope_transport::{PacketSink, SendBatch};
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Instant;

fn parse_ports(spec: &str) -> Option<Vec<u16>> {
    if let Some((lo, hi)) = spec.split_once('-') {
        let (lo, hi): (u16, u16) = (lo.parse().ok()?, hi.parse().ok()?);
        return (lo >= 1 && lo <= hi).then(|| (lo..=hi).collect());
    }
    spec.split(',').map(|p| p.parse().ok()).collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [src, dst, ports, count] => (|| {
            Some((
                src.parse::<IpAddr>().ok()?,
                dst.parse::<IpAddr>().ok()?,
                parse_ports(ports).filter(|p| !p.is_empty())?,
                count.parse::<u64>().ok()?,
            ))
        })(),
        _ => None,
    };
    let Some((src, dst, ports, count)) = parsed else {
        eprintln!("usage: ps-blast SRC DST PORTS COUNT");
        return ExitCode::from(64);
    };
    let mut sink = match RawSink::open() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ps-blast: {e}");
            return ExitCode::from(77);
        }
    };
    let tmpl = ProbeTemplate::new(src);
    let mut batch = SendBatch::new(64);
    let (mut sent, mut failed, mut i) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    while i < count {
        batch.clear();
        while !batch.is_full() && i < count {
            let port = ports[(i % ports.len() as u64) as usize];
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
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "ps-blast: sent {sent} failed {failed} in {secs:.6} s ({:.0}/s)",
        sent as f64 / secs.max(1e-9)
    );
    ExitCode::SUCCESS
}
