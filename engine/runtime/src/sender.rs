//! The send thread: fair round-robin over active scans under one global token bucket,
//! stamping probes into batches; drives each scan's rounds (send, wait, retry silent pairs).
//!
//! Synchronous and allocation-free per packet. It never reads replies: it learns what was
//! answered from the scan's `AnsweredSet` and how long to wait from the RTT the receive
//! thread publishes.

use crate::engine::Clock;
use crate::receiver::RecvCtl;
use crate::scan::{Outcome, ScanShared};
use crate::stats::EngineStats;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use portscope_core::pacer::{Pacer, RetryRate};
use portscope_core::probe::ProbeTemplate;
use portscope_core::Nanos;
use portscope_transport::{PacketSink, SendBatch};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Messages to the send thread.
#[derive(Debug)]
pub(crate) enum SendCtl {
    Add(Arc<ScanShared>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Sending,
    /// Waiting for stragglers since the round's last probe (the given time). The wait
    /// itself is re-read from the RTT estimate on every check, so replies measured during
    /// the wait shorten it (a short chunk is often all sent before its first reply).
    Waiting(Nanos),
}

#[derive(Debug)]
struct Active {
    shared: Arc<ScanShared>,
    pacer: Pacer,
    round: u8,
    /// When the current round started (for the answer rate that paces the next one).
    round_start: Nanos,
    /// Deficit round-robin credit in packets: its fair share of each grant accrues here and
    /// whole packets are spent, so small grants are still split by share, not by turn.
    deficit: f64,
    /// Adaptive pacing of retry rounds (`None` in round 0, which runs at the full rate).
    retry: Option<RetryRate>,
    pos: u64,
    phase: Phase,
    v4: Option<ProbeTemplate>,
    v6: Option<ProbeTemplate>,
}

pub(crate) struct Sender_ {
    pub sink: Box<dyn PacketSink>,
    pub ctl: Receiver<SendCtl>,
    pub recv_ctl: Sender<RecvCtl>,
    pub stats: Arc<EngineStats>,
    pub clock: Clock,
    pub shutdown: Arc<AtomicBool>,
    pub max_rate: u64,
    pub batch: usize,
    /// TTL / hop limit written into every probe template.
    pub probe_ttl: u8,
}

impl Sender_ {
    pub(crate) fn run(mut self) {
        let mut active: Vec<Active> = Vec::new();
        let mut global = Pacer::new(self.max_rate, (self.batch * 2) as u32, self.clock.now());
        let mut batch = SendBatch::new(self.batch);
        let mut rng = SmallRng::from_rng(&mut rand::rng());
        let mut rr = 0usize;
        let mut per_scan = Vec::new();
        let mut groups: Vec<u64> = Vec::new();
        while !self.shutdown.load(Relaxed) {
            while let Ok(SendCtl::Add(s)) = self.ctl.try_recv() {
                active.push(self.activate(s));
            }
            if active.is_empty() {
                match self.ctl.recv_timeout(Duration::from_millis(50)) {
                    Ok(SendCtl::Add(s)) => active.push(self.activate(s)),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                continue;
            }
            let now = self.clock.now();
            self.advance_rounds(&mut active, now);
            if !active.iter().any(|a| a.phase == Phase::Sending) {
                let next = active
                    .iter()
                    .filter_map(|a| match a.phase {
                        Phase::Waiting(end) => Some(end.add(a.shared.wait())),
                        Phase::Sending => None,
                    })
                    .min()
                    .unwrap_or(now);
                self.idle_until(next.min(now.add(Nanos::from_millis(5))), &mut active);
                continue;
            }
            let grant = global.poll(now, self.batch as u32);
            if grant == 0 {
                self.idle_until(global.next_ready(now), &mut active);
                continue;
            }
            // Fair share: each sending group (a scan, or all chunks of a daemon scan) may
            // fill an equal part of the grant, split evenly among its sending scans.
            groups.clear();
            groups.extend(
                active
                    .iter()
                    .filter(|a| a.phase == Phase::Sending)
                    .map(|a| a.shared.group),
            );
            groups.sort_unstable();
            let n_groups = 1 + groups.windows(2).filter(|w| w[0] != w[1]).count();
            let n = active.len();
            let mut left = grant;
            per_scan.clear();
            per_scan.resize(n, 0u64);
            for k in 0..n {
                if left == 0 {
                    break;
                }
                let i = (rr + k) % n;
                let a = &mut active[i];
                if a.phase != Phase::Sending {
                    continue;
                }
                let g = a.shared.group;
                let members =
                    groups.partition_point(|&x| x <= g) - groups.partition_point(|&x| x < g);
                let share = f64::from(grant) / (n_groups * members.max(1)) as f64;
                // Unused credit is capped, so a scan held back by its own rate cannot hoard.
                a.deficit = (a.deficit + share).min(f64::from(2 * self.batch as u32));
                let want = (a.deficit as u32).min(left);
                if want == 0 {
                    continue;
                }
                let got = a.pacer.poll(now, want);
                let made = fill(a, &mut batch, got, now, &mut rng);
                if made < got {
                    a.pacer.give_back(got - made);
                }
                a.deficit -= f64::from(made);
                if let Some(rr) = &mut a.retry {
                    rr.on_sent(u64::from(made));
                    let replies = a.shared.round_replies[usize::from(a.round)].load(Relaxed);
                    if let Some(rate) = rr.poll(now, replies) {
                        a.pacer.set_rate(rate, now);
                    }
                }
                per_scan[i] = u64::from(made);
                left -= made;
            }
            rr = rr.wrapping_add(1);
            global.give_back(left);
            if batch.is_empty() {
                // Every sending scan is held back by its own rate: sleep until the first may go.
                let next = active
                    .iter()
                    .filter(|a| a.phase == Phase::Sending)
                    .map(|a| a.pacer.next_ready(now))
                    .min()
                    .unwrap_or(now);
                if next > now {
                    self.idle_until(next, &mut active);
                }
                continue;
            }
            let report = self.sink.send(&batch);
            batch.clear();
            self.stats.sent.fetch_add(report.sent as u64, Relaxed);
            self.stats
                .send_failed
                .fetch_add(report.failed as u64, Relaxed);
            for (a, n) in active.iter().zip(&per_scan) {
                if *n > 0 {
                    a.shared.sent.fetch_add(*n, Relaxed);
                }
            }
        }
    }

    fn activate(&self, shared: Arc<ScanShared>) -> Active {
        let now = self.clock.now();
        let sources = shared.space.sources();
        Active {
            pacer: Pacer::new(shared.rate, (self.batch * 2) as u32, now),
            round: 0,
            round_start: now,
            deficit: 0.0,
            retry: None,
            pos: 0,
            phase: Phase::Sending,
            v4: sources
                .v4
                .map(|s| ProbeTemplate::with_ttl(s, self.probe_ttl)),
            v6: sources
                .v6
                .map(|s| ProbeTemplate::with_ttl(s, self.probe_ttl)),
            shared,
        }
    }

    /// Ends waits that are over: start the next round or finish the scan.
    fn advance_rounds(&self, active: &mut Vec<Active>, now: Nanos) {
        let mut i = 0;
        while i < active.len() {
            let a = &mut active[i];
            let s = &a.shared;
            let all_answered = s.replies.load(Relaxed) >= s.space.pairs();
            let outcome = if s.cancel.load(Relaxed) {
                Some(Outcome::Cancelled)
            } else {
                match a.phase {
                    Phase::Waiting(_) if all_answered => Some(Outcome::Complete),
                    Phase::Waiting(end) if now >= end.add(s.wait()) => {
                        if a.round < s.retries {
                            let answered = s.round_replies[usize::from(a.round)].load(Relaxed);
                            let elapsed = now.since(a.round_start);
                            a.round += 1;
                            a.round_start = now;
                            a.pos = 0;
                            a.phase = Phase::Sending;
                            let window = s.wait().max(Nanos::from_millis(30));
                            let replies = s.round_replies[usize::from(a.round)].load(Relaxed);
                            let rr =
                                RetryRate::start(s.rate, answered, elapsed, window, now, replies);
                            a.pacer.set_rate(rr.rate(), now);
                            a.retry = Some(rr);
                            s.round.store(a.round, Relaxed);
                            None
                        } else {
                            Some(Outcome::Complete)
                        }
                    }
                    _ => None,
                }
            };
            match outcome {
                Some(o) => {
                    let a = active.swap_remove(i);
                    let _ = self
                        .recv_ctl
                        .send(RecvCtl::Remove(a.shared.space.slot(), o));
                }
                None => i += 1,
            }
        }
    }

    /// Sleeps until `until` (or a new scan arrives), in short steps so cancels are prompt.
    fn idle_until(&self, until: Nanos, active: &mut Vec<Active>) {
        let now = self.clock.now();
        let dt = until.since(now);
        if dt.0 == 0 {
            return;
        }
        if dt.0 < 50_000 {
            std::thread::yield_now();
            return;
        }
        let step = dt.as_duration().min(Duration::from_millis(5));
        match self.ctl.recv_timeout(step) {
            Ok(SendCtl::Add(s)) => active.push(self.activate(s)),
            Err(_) => {}
        }
    }
}

/// Stamps up to `budget` probes of scan `a` into `batch`. Returns how many were made; fewer
/// than `budget` when the round ended (the scan then starts waiting).
fn fill(a: &mut Active, batch: &mut SendBatch, budget: u32, now: Nanos, rng: &mut SmallRng) -> u32 {
    let s = &a.shared;
    let pairs = s.space.pairs();
    let mut made = 0;
    while made < budget && !batch.is_full() {
        if a.pos >= pairs {
            a.phase = Phase::Waiting(now);
            break;
        }
        let pos = a.pos;
        a.pos += 1;
        let pair = s.space.pair_at(pos);
        if s.answered.contains(pair) {
            continue;
        }
        let p = s.space.probe(pair, a.round);
        let tmpl = match p.dst {
            IpAddr::V4(_) => a.v4.as_ref(),
            IpAddr::V6(_) => a.v6.as_ref(),
        }
        .expect("templates exist for every family with targets");
        let ip_id: u16 = rng.random();
        batch.push(p.dst, |buf| {
            tmpl.stamp(buf, p.dst, p.src_port, p.dst_port, p.seq, ip_id)
        });
        s.log.record(pos, a.round, now);
        made += 1;
    }
    if a.pos >= pairs && a.phase == Phase::Sending && made < budget {
        a.phase = Phase::Waiting(now);
    }
    made
}
