//! The send schedule, sans I/O: given the time, which probes go out now and when to look
//! again. Deficit round-robin over fair-share groups under one global token bucket, and
//! each scan's rounds (send, wait for stragglers, retry silent pairs or finish).
//!
//! It reads no clock, touches no socket and sleeps nowhere: the send thread
//! (`send_loop`) passes `now` in, sends the batch this fills and idles until the time
//! [`Next::Idle`] names. What was answered comes from each scan's `AnsweredSet`, how long
//! to wait from the RTT the receive thread publishes.

use crate::scan::{Outcome, ScanShared};
use portscope_core::pacer::{Pacer, RetryRate};
use portscope_core::probe::ProbeTemplate;
use portscope_core::retry;
use portscope_core::Nanos;
use portscope_transport::SendBatch;
use rand::Rng;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

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
    /// While the first retry round overlaps round 0's wait: when round 0's sending ended.
    /// A pair is retried only once its round-0 probe is a whole wait old (see `fill`).
    gate: Option<Nanos>,
    /// The sweep is held at a silent pair whose round-0 probe is younger than the wait,
    /// until this time (or until that pair is answered).
    hold: Option<Nanos>,
    /// Probes stamped into the current batch, counted into `shared.sent` once it is out.
    in_batch: u64,
    /// Whether round 0 must skip answered pairs: a resumed scan's (its earlier answers are
    /// marked before it starts). Otherwise no pair is answered before its round-0 probe,
    /// and round 0 does not read the answered set (a cache miss per probe on a bitmap the
    /// receive thread writes).
    resumed: bool,
    v4: Option<ProbeTemplate>,
    v6: Option<ProbeTemplate>,
}

/// What the send thread does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// The batch holds probes: send it, then call [`Schedule::sent`].
    Send,
    /// Nothing may go out before this time (a wait, or every scan held by its pacer).
    Idle(Nanos),
    /// No scan is active.
    Empty,
}

/// How often a sweep held at a silent pair looks again whether it was answered.
const HOLD_RECHECK: Nanos = Nanos::from_micros(250);

/// All active scans of the send thread.
#[derive(Debug)]
pub(crate) struct Schedule {
    active: Vec<Active>,
    global: Pacer,
    batch: usize,
    rr: usize,
    groups: Vec<u64>,
    /// TTL / hop limit written into every probe template.
    probe_ttl: u8,
}

impl Schedule {
    pub(crate) fn new(max_rate: u64, batch: usize, probe_ttl: u8, now: Nanos) -> Self {
        Schedule {
            active: Vec::new(),
            global: Pacer::new(max_rate, (batch * 2) as u32, now),
            batch,
            rr: 0,
            groups: Vec::new(),
            probe_ttl,
        }
    }

    /// Starts sending `shared`'s round 0 from `now`.
    pub(crate) fn add(&mut self, shared: Arc<ScanShared>, now: Nanos) {
        let sources = shared.space.sources();
        self.active.push(Active {
            pacer: Pacer::new(shared.rate, (self.batch * 2) as u32, now),
            round: 0,
            round_start: now,
            deficit: 0.0,
            retry: None,
            pos: 0,
            phase: Phase::Sending,
            gate: None,
            hold: None,
            in_batch: 0,
            resumed: shared.replies.load(Relaxed) > 0,
            v4: sources
                .v4
                .map(|s| ProbeTemplate::with_ttl(s, self.probe_ttl)),
            v6: sources
                .v6
                .map(|s| ProbeTemplate::with_ttl(s, self.probe_ttl)),
            shared,
        });
    }

    /// Ends waits that are over: starts the next round, or ends the scan (pushed to
    /// `ended` with its slot and outcome). Cancelled scans end here too.
    pub(crate) fn advance(&mut self, now: Nanos, ended: &mut Vec<(u16, Outcome)>) {
        let mut i = 0;
        while i < self.active.len() {
            match step_rounds(&mut self.active[i], now) {
                Some(o) => {
                    let a = self.active.swap_remove(i);
                    ended.push((a.shared.space.slot(), o));
                }
                None => i += 1,
            }
        }
    }

    /// Fills `batch` with the probes due at `now` (call [`Self::advance`] first).
    pub(crate) fn poll(&mut self, now: Nanos, batch: &mut SendBatch, rng: &mut impl Rng) -> Next {
        if self.active.is_empty() {
            return Next::Empty;
        }
        if !self.active.iter().any(|a| a.phase == Phase::Sending) {
            let next = self
                .active
                .iter()
                .filter_map(|a| match a.phase {
                    Phase::Waiting(end) => Some(end.add(a.shared.wait())),
                    Phase::Sending => None,
                })
                .min()
                .unwrap_or(now);
            // Re-checked at least every 5 ms: cancels and a shrinking wait are prompt.
            return Next::Idle(next.min(now.add(Nanos::from_millis(5))));
        }
        let grant = self.global.poll(now, self.batch as u32);
        if grant == 0 {
            return Next::Idle(self.global.next_ready(now));
        }
        // Fair share: each sending group (a scan, or all chunks of a daemon scan) may fill
        // an equal part of the grant, split evenly among its sending scans.
        self.groups.clear();
        self.groups.extend(
            self.active
                .iter()
                .filter(|a| a.phase == Phase::Sending)
                .map(|a| a.shared.group),
        );
        self.groups.sort_unstable();
        let n_groups = 1 + self.groups.windows(2).filter(|w| w[0] != w[1]).count();
        let n = self.active.len();
        let cap = f64::from(2 * self.batch as u32);
        let mut left = grant;
        for k in 0..n {
            if left == 0 {
                break;
            }
            let a = &mut self.active[(self.rr + k) % n];
            if a.phase != Phase::Sending {
                continue;
            }
            let g = a.shared.group;
            let members =
                self.groups.partition_point(|&x| x <= g) - self.groups.partition_point(|&x| x < g);
            let share = f64::from(grant) / (n_groups * members.max(1)) as f64;
            // Unused credit is capped, so a scan held back by its own rate cannot hoard.
            a.deficit = (a.deficit + share).min(cap);
            let want = (a.deficit as u32).min(left);
            if want == 0 {
                continue;
            }
            let got = a.pacer.poll(now, want);
            let made = fill(a, batch, got, now, rng);
            if made < got {
                a.pacer.give_back(got - made);
            }
            a.deficit -= f64::from(made);
            if let Some(rr) = &mut a.retry {
                rr.on_sent(u64::from(made));
                let replies = a.shared.round_replies[usize::from(a.round)].load(Relaxed);
                let was_smooth = rr.smooth();
                let change = rr.poll(now, replies);
                if rr.smooth() && !was_smooth {
                    a.pacer.smooth(now);
                }
                if let Some(rate) = change {
                    tracing::debug!(
                        slot = a.shared.space.slot(),
                        round = a.round,
                        ms = now.since(a.round_start).0 / 1_000_000,
                        replies,
                        rate,
                        smooth = rr.smooth(),
                        "retry rate changed"
                    );
                    a.pacer.set_rate(rate, now);
                }
            }
            a.in_batch += u64::from(made);
            left -= made;
        }
        self.rr = self.rr.wrapping_add(1);
        self.global.give_back(left);
        if !batch.is_empty() {
            return Next::Send;
        }
        // Every sending scan is held back by its own rate, or held at a pair whose answer
        // may still come (looked at again soon: an answer ends the hold), or just ended
        // its round.
        let next = self
            .active
            .iter()
            .filter(|a| a.phase == Phase::Sending)
            .map(|a| match a.hold {
                Some(until) => until.min(now.add(HOLD_RECHECK)),
                None => a.pacer.next_ready(now),
            })
            .min()
            .unwrap_or(now);
        Next::Idle(next)
    }

    /// Whether a scan is waiting out a round (its wait runs from its last probe's send).
    pub(crate) fn any_waiting(&self) -> bool {
        self.active
            .iter()
            .any(|a| matches!(a.phase, Phase::Waiting(_)))
    }

    /// Every probe stamped since `since` left only by `at` (extra send threads send
    /// batches after the schedule filled them): a round that ended since then waits from
    /// `at`, so its last probes get the whole wait.
    pub(crate) fn on_wire(&mut self, since: Nanos, at: Nanos) {
        for a in &mut self.active {
            if let Phase::Waiting(end) = a.phase {
                if end >= since && end < at {
                    a.phase = Phase::Waiting(at);
                }
            }
            if let Some(end) = a.gate {
                if end >= since && end < at {
                    a.gate = Some(at);
                }
            }
        }
    }

    /// The batch went out: counts its probes into each scan's progress.
    pub(crate) fn sent(&mut self) {
        for a in &mut self.active {
            if a.in_batch > 0 {
                a.shared
                    .sent
                    .fetch_add(std::mem::take(&mut a.in_batch), Relaxed);
            }
        }
    }
}

/// One scan's round state machine at `now`; `Some` when the scan is over.
fn step_rounds(a: &mut Active, now: Nanos) -> Option<Outcome> {
    let s = &a.shared;
    if s.cancel.load(Relaxed) {
        return Some(Outcome::Cancelled);
    }
    let Phase::Waiting(end) = a.phase else {
        return None;
    };
    let replies = s.replies.load(Relaxed);
    if replies >= s.space.pairs() {
        return Some(Outcome::Complete);
    }
    // The first retry is certain, so it need not wait for round 0's last answers: it
    // starts now and each pair waits out its own round-0 probe's wait (`fill`).
    let overlap = a.round == 0 && s.retry.first_retry_certain();
    if now < end.add(s.wait()) && !overlap {
        return None;
    }
    let answers: Vec<u64> = s.round_replies[..=usize::from(a.round)]
        .iter()
        .map(|c| c.load(Relaxed))
        .collect();
    s.set_loss(retry::estimate(&answers).per_try_loss);
    tracing::debug!(
        slot = s.space.slot(),
        round = a.round,
        ?answers,
        silent = s.space.pairs() - replies,
        sent_total = s.sent.load(Relaxed),
        since_round_start_ms = now.since(a.round_start).0 / 1_000_000,
        expected_wrong = retry::estimate(&answers).expected_wrong,
        limiter_dropped = a.retry.as_ref().is_some_and(RetryRate::smooth),
        "round over"
    );
    let limiter_dropped = a.retry.as_ref().is_some_and(RetryRate::smooth);
    if !s
        .retry
        .another_round_after(&answers, s.space.pairs() - replies, limiter_dropped)
    {
        return Some(Outcome::Complete);
    }
    let answered = answers[usize::from(a.round)];
    let elapsed = now.since(a.round_start);
    a.round += 1;
    a.round_start = now;
    a.pos = 0;
    a.phase = Phase::Sending;
    a.gate = overlap.then_some(end);
    let window = s.wait().max(Nanos::from_millis(30));
    let replies_now = s.round_replies[usize::from(a.round)].load(Relaxed);
    let rr = RetryRate::start(s.rate, answered, elapsed, window, now, replies_now);
    tracing::debug!(
        slot = s.space.slot(),
        round = a.round,
        answered_last = answered,
        last_round_ms = elapsed.0 / 1_000_000,
        silent = s.space.pairs() - replies,
        rate = rr.rate(),
        "retry round"
    );
    a.pacer.set_rate(rr.rate(), now);
    a.retry = Some(rr);
    s.round.store(a.round, Relaxed);
    None
}

/// Stamps up to `budget` probes of scan `a` into `batch`. Returns how many were made; fewer
/// than `budget` when the round ended (the scan then starts waiting). Pairs already
/// answered are skipped in every round; in round 0 only a resumed scan has any.
fn fill(a: &mut Active, batch: &mut SendBatch, budget: u32, now: Nanos, rng: &mut impl Rng) -> u32 {
    let s = &a.shared;
    let pairs = s.space.pairs();
    let mut made = 0;
    let wait = s.wait();
    a.hold = None;
    if a.gate.is_some_and(|end| now >= end.add(wait)) {
        a.gate = None;
    }
    while made < budget && !batch.is_full() {
        if a.pos >= pairs {
            a.phase = Phase::Waiting(now);
            break;
        }
        let pos = a.pos;
        let pair = s.space.pair_at(pos);
        if (a.round > 0 || a.resumed) && s.answered.contains(pair) {
            a.pos += 1;
            continue;
        }
        if let Some(end) = a.gate {
            // Round 0's probe of this pair may still be answered: not before its wait.
            let due = s.log.sent_by(pos, 0, end).add(wait);
            if now < due {
                a.hold = Some(due);
                break;
            }
        }
        a.pos += 1;
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
    if a.phase == Phase::Waiting(now) {
        tracing::debug!(
            slot = s.space.slot(),
            round = a.round,
            sent_ms = now.since(a.round_start).0 / 1_000_000,
            "round sent"
        );
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;
    use portscope_core::results::{PortResult, PortState, Reason};
    use portscope_core::retry::RetryPolicy;
    use portscope_core::rtt::WaitBounds;
    use rand::{rngs::SmallRng, SeedableRng};

    const WAIT: Nanos = Nanos::from_millis(10);

    fn scan(ports: &str, rate: u64, retry: RetryPolicy) -> Arc<ScanShared> {
        let space = crate::scan::lab_space(7, ports);
        let bounds = WaitBounds {
            min: WAIT,
            max: WAIT,
        };
        let (tx, _rx) = crossbeam_channel::unbounded();
        Arc::new(ScanShared::new(1, 1, space, retry, rate, bounds, tx))
    }

    /// Drives the schedule on simulated time until the scan ends; returns the probes sent
    /// per round and the time it ended.
    fn drive(s: &Arc<ScanShared>, max_rate: u64) -> (Vec<u64>, Nanos) {
        drive_with(s, max_rate, |_| {})
    }

    /// [`drive`], calling `replies(now)` before each step (to answer pairs as the receive
    /// thread would).
    fn drive_with(
        s: &Arc<ScanShared>,
        max_rate: u64,
        mut replies: impl FnMut(Nanos),
    ) -> (Vec<u64>, Nanos) {
        let mut sched = Schedule::new(max_rate, 64, portscope_core::probe::PROBE_TTL, Nanos(0));
        sched.add(Arc::clone(s), Nanos(0));
        let mut batch = SendBatch::new(64);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut ended = Vec::new();
        let mut per_round = vec![0u64; 16];
        let mut now = Nanos(0);
        for _ in 0..100_000 {
            replies(now);
            sched.advance(now, &mut ended);
            if !ended.is_empty() {
                per_round.truncate(usize::from(s.round.load(Relaxed)) + 1);
                return (per_round, now);
            }
            match sched.poll(now, &mut batch, &mut rng) {
                Next::Send => {
                    per_round[usize::from(s.round.load(Relaxed))] += batch.len() as u64;
                    batch.clear();
                    sched.sent();
                }
                Next::Idle(t) => now = now.max(t),
                Next::Empty => unreachable!("the scan is active"),
            }
        }
        panic!("the scan never ended");
    }

    #[test]
    fn a_round_that_ended_while_its_probes_were_queued_waits_from_when_they_left() {
        // No retries: the scan ends a whole wait after its last probe left.
        let mut rng = SmallRng::seed_from_u64(1);
        for moved in [true, false] {
            let s = scan("1-10", 1_000_000, RetryPolicy::Fixed(0));
            let mut sched =
                Schedule::new(1_000_000, 64, portscope_core::probe::PROBE_TTL, Nanos(0));
            sched.add(Arc::clone(&s), Nanos(0));
            let mut batch = SendBatch::new(64);
            let mut now = Nanos(0);
            for _ in 0..1_000 {
                match sched.poll(now, &mut batch, &mut rng) {
                    Next::Send => {
                        batch.clear();
                        sched.sent();
                    }
                    Next::Idle(t) => now = now.max(t),
                    Next::Empty => unreachable!("the scan is active"),
                }
                if sched.any_waiting() {
                    break;
                }
            }
            assert!(sched.any_waiting(), "the round is sent");
            assert_eq!(s.sent.load(Relaxed), 10);
            // Handed to a helper at `now`, on the wire 2 ms later: the wait runs from then.
            // A round that ended before the first hand-off is not moved.
            let on_wire = now.add(Nanos::from_millis(2));
            let since = if moved { now } else { now.add(Nanos(1)) };
            sched.on_wire(since, on_wire);
            let ends_at = if moved { on_wire } else { now }.add(WAIT);
            let mut ended = Vec::new();
            sched.advance(Nanos(ends_at.0 - 1), &mut ended);
            assert!(ended.is_empty(), "not before a whole wait");
            sched.advance(ends_at, &mut ended);
            assert_eq!(ended.len(), 1, "over at {ends_at:?}");
        }
    }

    #[test]
    fn paces_rounds_waits_and_retries_on_given_time() {
        // 100 ports at 1,000/s, nothing answers: round 0 takes 0.1 s, then the two usual
        // retries, each followed by the wait.
        let s = scan("1-100", 1_000, RetryPolicy::default());
        let (rounds, end) = drive(&s, 1_000_000);
        assert_eq!(rounds, [100, 100, 100]);
        assert_eq!(s.sent.load(Relaxed), 300);
        // Retry rounds of a silent scan start at full rate: ~0.3 s of sending + 2 waits
        // (the first retry, certain, overlaps round 0's wait: each pair's retry still
        // comes a whole wait after its first probe).
        assert!(end >= Nanos::from_millis(290 + 20), "{end:?}");
        assert!(end <= Nanos::from_millis(305 + 20), "{end:?}");
    }

    #[test]
    fn the_first_retry_overlaps_round_0s_wait_but_never_outruns_an_answer() {
        // 100 ports at 10,000/s (round 0: 10 ms, wait 10 ms). Every pair answers 2 ms after
        // its round-0 probe, except the five sent first, which never answer.
        let s = scan("1-100", 10_000, RetryPolicy::default());
        let silent = |pos: u64| pos < 5;
        let (rounds, end) = drive_with(&s, 1_000_000, |now| {
            for pos in 0..s.space.pairs() {
                let Some(sent) = s.log.sent_at(pos, 0) else {
                    continue;
                };
                if !silent(pos)
                    && now >= sent.add(Nanos::from_millis(2))
                    && s.answered.insert(s.space.pair_at(pos))
                {
                    s.replies.fetch_add(1, Relaxed);
                    s.round_replies[0].fetch_add(1, Relaxed);
                }
            }
        });
        // The pairs answered after round 0's sending ended (its last 2 ms) are not retried:
        // the retry waited for each of them. Two retries of the five silent ones.
        assert_eq!(rounds, [100, 5, 5]);
        // The first retry started as round 0's sending ended (10 ms) and its sweep ended
        // with the last round-0 answer (12 ms), not after round 0's own wait (20 ms):
        // 12 + 10 (wait) + 0.5 (second retry) + 10 (wait), against 41 ms without overlap.
        assert!(end >= Nanos::from_millis(32), "{end:?}");
        assert!(end <= Nanos::from_millis(34), "{end:?}");
    }

    #[test]
    fn answered_pairs_are_skipped_in_every_round_including_the_first() {
        // A resumed scan: 40 of 100 pairs already answered at submit.
        let s = scan("1-100", 100_000, RetryPolicy::Fixed(1));
        let earlier: Vec<PortResult> = (0..40)
            .map(|pair| PortResult {
                state: PortState::Closed,
                reason: Reason::Reset,
                ..s.space.silent_result(pair)
            })
            .collect();
        assert_eq!(s.preseed(earlier).len(), 40);
        let (rounds, _) = drive(&s, 1_000_000);
        assert_eq!(rounds, [60, 60]);
    }

    #[test]
    fn the_global_ceiling_holds_over_the_scan_rate() {
        let s = scan("1-2000", 1_000_000, RetryPolicy::Fixed(0));
        let (rounds, end) = drive(&s, 10_000);
        assert_eq!(rounds, [2000]);
        let sending = end.since(WAIT);
        assert!(
            (Nanos::from_millis(190)..=Nanos::from_millis(201)).contains(&sending),
            "{sending:?}"
        );
    }
}
