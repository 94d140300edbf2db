//! The whole engine pipeline (plan -> send thread -> responder -> receive thread -> handle)
//! over the in-memory transport with a scripted target: no privileges, exact states.
//! Most tests run on simulated time (`SimClock`): waits and pacing cost no real time and
//! the outcome does not depend on how busy the machine is.

use etherparse::PacketBuilder;
use portscope_core::policy::TargetPolicy;
use portscope_core::results::{PortResult, PortState, Reason};
use portscope_core::targets::parse_net;
use portscope_engine::{
    Clock, Engine, EngineConfig, Outcome, ScanEvent, ScanRequest, ScanSummary, SimClock,
    SubmitError, SystemClock,
};
use portscope_transport::memory::{self, Injector};
use portscope_transport::scripted::{standard_answer, Answer, ScriptedTarget};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The scripted target's truth (`scripted::standard_answer`).
fn truth(dst: IpAddr, port: u16) -> PortState {
    match standard_answer(dst, port) {
        Answer::Open => PortState::Open,
        Answer::Closed => PortState::Closed,
        Answer::Prohibited | Answer::Silent => PortState::Filtered,
    }
}

/// Ports 23 and 111 answer with ICMP admin-prohibited; 135 and 445 are silent.
fn icmp_port(port: u16) -> bool {
    standard_answer("198.18.0.2".parse().unwrap(), port) == Answer::Prohibited
}

fn lab_policy() -> TargetPolicy {
    let mut p = TargetPolicy::default_deny();
    p.allow(parse_net("198.18.0.0/15").unwrap());
    p.allow(parse_net("2001:2::/48").unwrap());
    p
}

/// An engine over the scripted target on simulated time.
fn engine(loss: f64, dup: bool, seed: u64) -> (Engine, Arc<AtomicU64>, Injector) {
    engine_on(loss, dup, seed, true, 2_000_000)
}

fn engine_on(
    loss: f64,
    dup: bool,
    seed: u64,
    simulated: bool,
    max_rate: u64,
) -> (Engine, Arc<AtomicU64>, Injector) {
    let mut target = ScriptedTarget::standard().with_loss(loss, seed);
    if dup {
        target = target.with_duplicates();
    }
    let probes = target.probe_counter();
    let (sink, source, inject) = memory::pair(target);
    let quiet = source.quiet();
    let clock: Arc<dyn Clock> = if simulated {
        Arc::new(SimClock::new(move || quiet.is_quiet()))
    } else {
        Arc::new(SystemClock::new())
    };
    let cfg = EngineConfig {
        max_rate,
        policy: lab_policy(),
        ..EngineConfig::default()
    };
    (
        Engine::start_with_clock(Box::new(sink), Box::new(source), cfg, clock),
        probes,
        inject,
    )
}

fn route(dst: IpAddr) -> std::io::Result<IpAddr> {
    Ok(match dst {
        IpAddr::V4(_) => "198.18.0.1".parse().unwrap(),
        IpAddr::V6(_) => "2001:2::1".parse().unwrap(),
    })
}

fn request(targets: &[&str], ports: &str, retries: u8) -> ScanRequest {
    ScanRequest {
        targets: targets.iter().map(|s| s.to_string()).collect(),
        ports: ports.into(),
        rate: 1_000_000,
        retries,
        min_wait: Duration::from_millis(5),
        max_wait: Duration::from_millis(100),
        ..ScanRequest::default()
    }
}

/// Submits [`request`]`(targets, ports, retries)` to `e`.
fn submit(e: &Engine, targets: &[&str], ports: &str, retries: u8) -> portscope_engine::ScanHandle {
    e.submit(request(targets, ports, retries).plan(&route).unwrap())
        .unwrap()
}

fn collect(
    handle: portscope_engine::ScanHandle,
) -> (BTreeMap<(IpAddr, u16), PortResult>, ScanSummary) {
    let mut results = BTreeMap::new();
    let mut summary = None;
    for ev in handle {
        match ev {
            ScanEvent::Port(r) => {
                let key = (r.ip, r.port);
                assert!(
                    results.insert(key, r).is_none(),
                    "pair {key:?} reported twice"
                );
            }
            ScanEvent::Finished(s) => summary = Some(s),
        }
    }
    (results, summary.expect("Finished event"))
}

fn assert_matches_truth(
    results: &BTreeMap<(IpAddr, u16), PortResult>,
    hosts: &[&str],
    ports: impl Iterator<Item = u16> + Clone,
) {
    let mut n = 0;
    for h in hosts {
        let ip: IpAddr = h.parse().unwrap();
        for port in ports.clone() {
            let r = results
                .get(&(ip, port))
                .unwrap_or_else(|| panic!("{ip}:{port} has no result"));
            assert_eq!(r.state, truth(ip, port), "{ip}:{port}");
            let reason = match (r.state, icmp_port(port)) {
                (PortState::Open, _) => Reason::SynAck,
                (PortState::Closed, _) => Reason::Reset,
                (PortState::Filtered, true) => Reason::IcmpUnreachable,
                (PortState::Filtered, false) => Reason::NoResponse,
            };
            assert_eq!(r.reason, reason, "{ip}:{port}");
            n += 1;
        }
    }
    assert_eq!(results.len(), n, "no results beyond the scanned pairs");
}

#[test]
fn every_pair_gets_exactly_its_true_state() {
    let (e, probes, _) = engine(0.0, false, 1);
    let h = submit(&e, &["198.18.0.2", "2001:2::2"], "1-3000", 2);
    let (results, s) = collect(h);
    assert_matches_truth(&results, &["198.18.0.2", "2001:2::2"], 1..=3000u16);
    assert_eq!(s.outcome, Outcome::Complete);
    assert_eq!((s.pairs, s.open, s.filtered, s.closed), (6000, 6, 8, 5986));
    // Round 0 probes every pair; rounds 1 and 2 only the 4 silent pairs.
    assert_eq!(s.sent, 6000 + 2 * 4);
    assert_eq!(probes.load(Ordering::Relaxed), 6008);
    assert_eq!(
        s.rounds, 3,
        "a clean scan stops after the usual two retries"
    );
    assert_eq!(s.est_loss, Some(0.0));
    assert!(s.rtt_p50.is_some(), "RTT measured from replies");
}

#[test]
fn default_retries_adapt_to_loss_and_stay_exact() {
    // 5% of probes lost, default retries: the scan measures the loss and keeps going.
    for seed in [11, 12, 13] {
        let (e, _, _) = engine(0.05, false, seed);
        let h = submit(&e, &["198.18.0.2", "2001:2::2"], "1-6000", 2);
        let (results, s) = collect(h);
        assert_matches_truth(&results, &["198.18.0.2", "2001:2::2"], 1..=6000u16);
        let q = s.est_loss.expect("loss estimated");
        assert!((0.03..0.07).contains(&q), "estimated loss {q}");
        assert!(
            (5..=11).contains(&s.rounds),
            "{} rounds for 5% loss",
            s.rounds
        );
    }
}

#[test]
fn loss_is_recovered_by_retries_and_duplicates_are_dropped() {
    let (e, _, _) = engine(0.2, true, 2);
    let hosts = ["198.19.0.1", "198.19.0.2", "198.19.0.3", "198.19.0.4"];
    let h = submit(
        &e,
        &["198.19.0.1", "198.19.0.2/31", "198.19.0.4"],
        "1-1500",
        10,
    );
    let (results, s) = collect(h);
    assert_matches_truth(&results, &hosts, 1..=1500u16);
    assert!(s.duplicates > 0, "duplicates were sent and must be counted");
    assert_eq!(s.open, 4 * 2 + 4);
}

#[test]
fn garbage_and_forgeries_are_counted_not_accepted() {
    let (e, _, inject) = engine(0.0, false, 3);
    let h = submit(&e, &["198.18.0.2"], "1-500", 1);
    // A SYN-ACK to our port range with a wrong cookie, an ICMP echo, and random bytes.
    let mut forged = Vec::new();
    PacketBuilder::ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64)
        .tcp(80, 61440, 1, 1)
        .syn()
        .ack(12345)
        .write(&mut forged, &[])
        .unwrap();
    let mut echo = Vec::new();
    PacketBuilder::ipv4([198, 18, 0, 2], [198, 18, 0, 1], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut echo, &[])
        .unwrap();
    for f in [forged, echo, vec![0x45, 1, 2], vec![]] {
        inject.send(f).unwrap();
    }
    let (results, _) = collect(h);
    assert_matches_truth(&results, &["198.18.0.2"], 1..=500u16);
    let d = e.stats().discards();
    let get = |name: &str| {
        d.nonzero()
            .find(|(n, _)| *n == name)
            .map(|x| x.1)
            .unwrap_or(0)
    };
    assert_eq!(get("bad_cookie"), 1);
    assert_eq!(get("icmp_type"), 1);
    assert_eq!(get("ip_malformed"), 2);
}

#[test]
fn concurrent_scans_do_not_cross_talk() {
    let (e, _, _) = engine(0.0, false, 4);
    let a = submit(&e, &["198.18.0.2"], "1-4000", 1);
    let b = submit(&e, &["198.18.0.2", "198.19.0.7"], "10-2000", 1);
    assert_ne!(a.id(), b.id());
    let ta = std::thread::spawn(move || collect(a));
    let (rb, sb) = collect(b);
    let (ra, sa) = ta.join().unwrap();
    assert_matches_truth(&ra, &["198.18.0.2"], 1..=4000u16);
    assert_matches_truth(&rb, &["198.18.0.2", "198.19.0.7"], 10..=2000u16);
    assert_eq!((sa.pairs, sb.pairs), (4000, 2 * 1991));
}

#[test]
fn scans_sharing_a_fixed_source_port_stay_exact_through_loss() {
    // Two scans send every probe from port 53 to overlapping targets and ports, next to a
    // scan on the engine's own ports, through 20% loss with duplicated replies: the
    // cookie alone tells their replies apart, and retries recover the losses.
    let (e, _, _) = engine(0.2, true, 6);
    let fixed = |targets: &[&str], ports: &str| {
        let mut r = request(targets, ports, 10);
        r.source_port = Some(53);
        e.submit(r.plan(&route).unwrap()).unwrap()
    };
    let a = fixed(&["198.18.0.2"], "1-3000");
    let b = fixed(&["198.18.0.2", "198.19.0.7"], "10-2000");
    let c = submit(&e, &["198.18.0.2"], "1-1000", 10);
    let ta = std::thread::spawn(move || collect(a));
    let tb = std::thread::spawn(move || collect(b));
    let (rc, _) = collect(c);
    let (ra, sa) = ta.join().unwrap();
    let (rb, sb) = tb.join().unwrap();
    assert_matches_truth(&ra, &["198.18.0.2"], 1..=3000u16);
    assert_matches_truth(&rb, &["198.18.0.2", "198.19.0.7"], 10..=2000u16);
    assert_matches_truth(&rc, &["198.18.0.2"], 1..=1000u16);
    assert!(sa.rounds > 1 && sb.rounds > 1, "{sa:?} {sb:?}");
    assert!(
        sa.est_loss.is_some(),
        "loss is estimated from the retries: {sa:?}"
    );
    assert!(sa.duplicates + sb.duplicates > 0);
    assert!(sa.rtt_p50.is_some(), "RTT is sampled from pairs sent once");
}

#[test]
fn cancel_reports_only_what_was_found() {
    // Real time: the cancel comes from this thread while the scan runs.
    let (e, _, _) = engine_on(0.0, false, 5, false, 2_000_000);
    let mut req = request(&["198.18.0.2"], "-", 2);
    req.rate = 20_000; // ~3 s for all ports: cancel long before
    let h = e.submit(req.plan(&route).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    h.cancel();
    let (results, s) = collect(h);
    assert_eq!(s.outcome, Outcome::Cancelled);
    assert!(s.unknown > 0 && !results.is_empty());
    assert_eq!(results.len() as u64 + s.unknown, 65_535);
    for r in results.values() {
        assert_eq!(r.state, truth(r.ip, r.port));
        assert_ne!(
            r.reason,
            Reason::NoResponse,
            "unprobed pairs are not called filtered"
        );
    }
}

#[test]
fn policy_refuses_before_any_packet() {
    let (e, probes, _) = engine(0.0, false, 6);
    for t in ["10.0.0.1", "127.0.0.1", "172.16.0.1", "::1", "2001:3::1"] {
        match e.submit(request(&[t], "80", 0).plan(&route).unwrap()) {
            Err(SubmitError::Policy(_)) => {}
            other => panic!("{t}: expected a policy refusal, got {other:?}"),
        }
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(probes.load(Ordering::Relaxed), 0);
    assert_eq!(e.stats().sent.load(Ordering::Relaxed), 0);
}

#[test]
fn rate_is_respected() {
    let (e, _, _) = engine(0.0, false, 7);
    let mut req = request(&["198.18.0.2"], "1-2000", 0);
    req.rate = 10_000;
    let (_, s) = collect(e.submit(req.plan(&route).unwrap()).unwrap());
    let secs = s.elapsed.as_secs_f64();
    // 2000 probes at 10k/s take 0.2 s (plus the final wait) of simulated time: exactly
    // paced, less would mean no pacing, much more a pacer that idles.
    assert!(
        (0.199..0.25).contains(&secs),
        "2000 probes at 10k pps took {secs:.3}s"
    );
    assert_eq!(s.sent, 2000);
}

#[test]
fn a_group_of_scans_gets_one_fair_share() {
    // A "daemon scan" of 4 chunks (one group) against a lone scan, under a global ceiling:
    // each should get about half of the probes, not 4/5 and 1/5. Real time: the test
    // samples progress while the scans run.
    let (e, _, _) = engine_on(0.0, false, 8, false, 100_000);
    let mut chunks = Vec::new();
    for c in 0..4u16 {
        let lo = 1 + c * 15_000;
        let mut plan = request(&["198.18.0.2"], &format!("{lo}-{}", lo + 14_999), 0)
            .plan(&route)
            .unwrap();
        plan.group = Some(42);
        chunks.push(e.submit(plan).unwrap());
    }
    let lone = submit(&e, &["198.18.0.3"], "1-60000", 0);
    std::thread::sleep(Duration::from_millis(300));
    let group_sent: u64 = chunks.iter().map(|h| h.progress().sent).sum();
    let lone_sent = lone.progress().sent;
    let ratio = lone_sent as f64 / group_sent as f64;
    assert!(
        (0.7..1.4).contains(&ratio),
        "lone {lone_sent} vs group {group_sent}: ratio {ratio:.2}"
    );
    for h in chunks.iter().chain([&lone]) {
        h.cancel();
    }
}

#[test]
fn a_preseeded_scan_skips_answered_pairs_and_reports_them_first() {
    // A resumed scan: the answers of ports 1-500 are handed in at submit.
    let (e, probes, _) = engine(0.0, false, 11);
    let (earlier, _) = collect(submit(&e, &["198.18.0.2"], "1-500", 0));
    let answered: Vec<PortResult> = earlier
        .into_values()
        .filter(|r| r.reason != Reason::NoResponse)
        .collect();
    let silent = 500 - answered.len() as u64;
    let before = probes.load(Ordering::Relaxed);
    let handle = e
        .submit_preseeded(
            request(&["198.18.0.2"], "1-2000", 1).plan(&route).unwrap(),
            answered.clone(),
        )
        .unwrap();
    let mut events = Vec::new();
    let mut summary = None;
    for ev in handle {
        match ev {
            ScanEvent::Port(r) => events.push(r),
            ScanEvent::Finished(s) => summary = Some(s),
        }
    }
    let summary = summary.unwrap();
    // The preseeded answers come first, in the order given.
    assert_eq!(&events[..answered.len()], &answered[..]);
    let results: BTreeMap<_, _> = events.into_iter().map(|r| ((r.ip, r.port), r)).collect();
    assert_eq!(results.len(), 2000, "every pair once");
    assert_matches_truth(&results, &["198.18.0.2"], 1..=2000);
    // Only the 1,500 new pairs and the silent old ones were probed, silent ones twice.
    let new_silent = (501..=2000u16)
        .filter(|&p| standard_answer("198.18.0.2".parse().unwrap(), p) == Answer::Silent)
        .count() as u64;
    let want = 1500 + silent + (silent + new_silent); // retries 1: one resend each
    assert_eq!(summary.sent, want);
    assert_eq!(probes.load(Ordering::Relaxed) - before, want);
    assert_eq!(summary.outcome, Outcome::Complete);
}

#[test]
fn extra_send_threads_share_the_wire_and_every_pair_stays_exact() {
    // Three sinks into one receive side: the send thread and two helpers. Real time (the
    // helpers send on their own schedule), so the rounds' waits must cover their queues.
    let (a, b, c) = (
        ScriptedTarget::standard(),
        ScriptedTarget::standard(),
        ScriptedTarget::standard(),
    );
    let counts = [a.probe_counter(), b.probe_counter(), c.probe_counter()];
    let (sink, source, _inject) = memory::pair(a);
    let sinks: Vec<Box<dyn portscope_transport::PacketSink>> = vec![
        Box::new(sink.sibling(b)),
        Box::new(sink.sibling(c)),
        Box::new(sink),
    ];
    let cfg = EngineConfig {
        max_rate: 2_000_000,
        policy: lab_policy(),
        wire_cpus: vec![None, None],
        ..EngineConfig::default()
    };
    let e = Engine::start_sending_on(sinks, Box::new(source), cfg);
    let hosts = ["198.18.0.2", "198.18.0.3", "2001:2::2"];
    let (results, s) = collect(submit(&e, &hosts, "1-20000", 2));
    assert_matches_truth(&results, &hosts, 1..=20000u16);
    assert_eq!(s.outcome, Outcome::Complete);
    let per_sink: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    assert_eq!(per_sink.iter().sum::<u64>(), s.sent, "{per_sink:?}");
    assert_eq!(e.stats().sent.load(Ordering::Relaxed), s.sent);
    assert!(
        per_sink.iter().all(|&n| n > 0),
        "every thread sent some: {per_sink:?}"
    );
}
