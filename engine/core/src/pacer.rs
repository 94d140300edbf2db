//! A token-bucket pacer that never sleeps: it answers "how many may I send now" and
//! "when may I send next" for a time the caller passes in (the shape of quinn's pacer).

use crate::Nanos;

/// Token bucket with `rate` packets per second and a burst of `burst` packets.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: u64,
    /// The burst asked for; the effective cap is at most one millisecond of packets.
    max_burst: u128,
    /// Credit in units of 1/1e9 packet, capped at `burst * 1e9`.
    credit: u128,
    cap: u128,
    last: Nanos,
    /// One packet at a time, evenly spaced, whatever the rate ([`Pacer::smooth`]).
    smooth: bool,
}

const UNIT: u128 = 1_000_000_000;

/// The burst a slow pacer may still catch up with (when the `burst` asked for allows it).
/// With a cap of one packet, every late wake-up of the send thread (timer slack, a busy
/// CPU) was lost for good: at 1,000/s, 60 us late per packet is 6% below the rate, and on
/// a loaded machine (a thread waiting several ms for a CPU) a retry round paced at a
/// target's RST limit ran at 20-50% of it. A few packets of credit make the sender's
/// average rate hold through short stalls. It stays below the bursts rate limiters allow
/// (the lab's RST limit has a burst of 10, Linux's ICMP limiter 50): at 16, catch-up
/// bunches overran the lab's 20,000/s RST limit, and a limited scan ended with 80-270
/// closed ports read as filtered (`lab::rst_rate_limited_target_is_classified_by_adaptive_retries`,
/// 5 of 5 runs); at 4 it is exact and twice as fast as with no catch-up (4.1 s vs 9.5 s).
pub const MIN_CATCH_UP: u64 = 4;

impl Pacer {
    /// A pacer allowing `rate` packets/s (at least 1) with bursts of up to `burst` packets,
    /// and never more than one millisecond's worth or [`MIN_CATCH_UP`] packets, whichever is
    /// more: at low rates (retry rounds against a rate-limited target) packets go out
    /// evenly spaced, and a late wake-up is made up. Starts with one packet of credit.
    pub fn new(rate: u64, burst: u32, now: Nanos) -> Self {
        let rate = rate.max(1);
        let max_burst = u128::from(burst.max(1));
        Pacer {
            rate,
            max_burst,
            credit: UNIT,
            cap: Self::cap_for(rate, max_burst, false),
            last: now,
            smooth: false,
        }
    }

    fn cap_for(rate: u64, max_burst: u128, smooth: bool) -> u128 {
        if smooth {
            return UNIT;
        }
        max_burst.min((u128::from(rate) / 1000).max(u128::from(MIN_CATCH_UP))) * UNIT
    }

    /// From `now` on, no catch-up and no bursts: one packet per poll and the next one no
    /// sooner than 1/rate after it, so a late wake-up costs rate instead of sending two
    /// packets closer than a limiter with a burst room of 1 lets through (it drops the
    /// second). For retry rounds that saw a limiter drop.
    pub fn smooth(&mut self, now: Nanos) {
        self.refill(now);
        self.smooth = true;
        self.cap = UNIT;
        self.credit = self.credit.min(UNIT);
    }

    /// The configured rate in packets per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    fn refill(&mut self, now: Nanos) {
        let dt = u128::from(now.since(self.last).0);
        self.last = self.last.max(now);
        self.credit = (self.credit + dt * u128::from(self.rate)).min(self.cap);
    }

    /// Takes up to `want` tokens at time `now` and returns how many were granted.
    pub fn poll(&mut self, now: Nanos, want: u32) -> u32 {
        self.refill(now);
        let avail = (self.credit / UNIT).min(u128::from(want)) as u32;
        self.credit -= u128::from(avail) * UNIT;
        if self.smooth && avail > 0 {
            // The next packet a full 1/rate after this one, however late this one was.
            self.credit = 0;
        }
        avail
    }

    /// Changes the rate from `now` on. Saved-up credit beyond one packet is dropped, so a
    /// new rate never starts with a burst (a rate-limited target would drop it).
    pub fn set_rate(&mut self, rate: u64, now: Nanos) {
        self.refill(now);
        self.credit = self.credit.min(UNIT);
        self.rate = rate.max(1);
        self.cap = Self::cap_for(self.rate, self.max_burst, self.smooth);
    }

    /// Returns unused tokens (packets that were granted but not sent).
    pub fn give_back(&mut self, n: u32) {
        self.credit = (self.credit + u128::from(n) * UNIT).min(self.cap);
    }

    /// The earliest time at which at least one token is available.
    pub fn next_ready(&self, now: Nanos) -> Nanos {
        let dt = u128::from(now.since(self.last).0);
        let credit = self.credit + dt * u128::from(self.rate);
        if credit >= UNIT {
            return now;
        }
        let missing = UNIT - credit;
        let wait = missing.div_ceil(u128::from(self.rate));
        now.add(Nanos(wait as u64))
    }
}

/// Rate control for retry rounds, which resend only silent pairs.
///
/// Silence after round 0 has two causes that look alike from one round: the target drops
/// (filtered), or it rate-limits its answers (many hosts cap RSTs or ICMP errors per
/// second; FreeBSD's default is 200/s). Resending at full speed is right for the first and
/// hopeless for the second. So a retry round starts just under (7/8 of) the answer rate
/// measured in the previous round, and then adapts to what its own windows bring back:
///
/// - a window *and* the round so far with fewer than 1 in 8 probes answered: the silence
///   is real (filtered pairs), the rate doubles, like TCP slow start, back to full speed;
/// - a window with (nearly) every probe answered: the limit may be higher than measured
///   (a bursty round 0 measures a limiter's burst per batch, not its rate), the rate rises
///   by 1/16 (1/64 beyond the highest rate answered in full so far);
/// - a window answered worse (by 1/32) than the best window of the round: the limiter is
///   dropping, the rate falls to 31/32 of the last rate answered in full, the pacer is
///   told to stop bunching ([`RetryRate::smooth`]) and the rate stops rising for a while.
///
/// The last two only in rounds that answer nearly all they ask (at least 7/8 in their
/// best window): with many filtered pairs mixed in, a window's share varies by chance.
///
/// The round's own share, not one window's, gates the doubling: a window whose answers a
/// limiter dropped (or a receive thread that was off CPU for a window) once doubled the
/// rate, which made the limiter drop more, and within a few windows a retry round ran at
/// full speed into a 20,000/s limiter: the pairs it left silent ended the scan wrong.
#[derive(Debug, Clone)]
pub struct RetryRate {
    full: u64,
    floor: u64,
    rate: u64,
    window: Nanos,
    win_start: Nanos,
    win_sent: u64,
    win_replies: u64,
    round_sent: u64,
    round_replies: u64,
    /// Best answered share of a window this round, in 1/1024.
    best_share: u64,
    /// Windows to wait before rising again after a drop was seen.
    hold: u32,
    /// The highest rate a window was answered at without drops (0 before one was).
    good: u64,
    smooth: bool,
}

/// Probes a window must hold before it is judged (fewer say too little about a share).
pub const MIN_WINDOW_PROBES: u64 = 128;

/// Windows a retry round holds its rate after it saw the limiter drop.
const HOLD_AFTER_DROP: u32 = 4;

impl RetryRate {
    /// Starts a retry round. `answered` replies came in over `elapsed` of the previous
    /// round; `window` is how long to observe before adapting (a few RTTs; a window also
    /// waits for [`MIN_WINDOW_PROBES`]).
    pub fn start(
        full: u64,
        answered: u64,
        elapsed: Nanos,
        window: Nanos,
        now: Nanos,
        replies_now: u64,
    ) -> Self {
        // Below the usual limiters (FreeBSD: 200 RSTs/s), however few answers came back.
        let floor = (full / 1024).max(100).min(full);
        let measured = if answered == 0 || elapsed.0 == 0 {
            full
        } else {
            (u128::from(answered) * u128::from(Nanos::SECOND) * 7 / 8 / u128::from(elapsed.0))
                as u64
        };
        RetryRate {
            full,
            floor,
            rate: measured.clamp(floor, full),
            window,
            win_start: now,
            win_sent: 0,
            win_replies: replies_now,
            round_sent: 0,
            round_replies: replies_now,
            best_share: 0,
            hold: 0,
            good: 0,
            smooth: false,
        }
    }

    /// The current rate in packets per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Whether the round has seen the limiter drop: from then on probes should go out one
    /// at a time, evenly spaced (a limiter with a burst room of 1 drops any two that come
    /// closer than its rate allows).
    pub fn smooth(&self) -> bool {
        self.smooth
    }

    /// Counts probes sent.
    pub fn on_sent(&mut self, n: u64) {
        self.win_sent += n;
        self.round_sent += n;
    }

    /// Called as time passes with the number of replies this round has had so far; returns
    /// the new rate when it changes.
    pub fn poll(&mut self, now: Nanos, replies_now: u64) -> Option<u64> {
        let dt = now.since(self.win_start);
        if dt < self.window || self.win_sent < MIN_WINDOW_PROBES {
            return None;
        }
        let got = replies_now.saturating_sub(self.win_replies);
        let sent = self.win_sent;
        let round_got = replies_now.saturating_sub(self.round_replies);
        self.win_start = now;
        self.win_sent = 0;
        self.win_replies = replies_now;
        let share = (got * 1024 / sent).min(1024);
        self.best_share = self.best_share.max(share);
        self.hold = self.hold.saturating_sub(1);
        let old = self.rate;
        // A round that answers nearly all it asks (a limited target's closed ports) shows a
        // limiter as a share below its best; in a round mixed with filtered pairs a window's
        // share varies by chance alone, and only real silence is acted on.
        let answerable = self.best_share * 8 >= 7 * 1024;
        if got * 8 < sent && round_got * 8 < self.round_sent {
            self.rate = (self.rate * 2).min(self.full);
        } else if answerable && share * 32 < self.best_share * 31 {
            // Just under the last rate answered in full, or, before there was one, what the
            // limiter let through. Not what it let through after an overshoot: a limiter
            // with a burst room of 1 passes every other packet of a smooth stream just
            // over its rate (its bucket is full at each drop and clipped), half its rate.
            let answer_rate = u128::from(got) * u128::from(Nanos::SECOND) * 1024
                / u128::from(dt.0.max(1))
                / u128::from(self.best_share);
            let back_to = if self.good > 0 {
                self.good
            } else {
                answer_rate as u64
            };
            self.rate = (back_to * 31 / 32).clamp(self.floor, self.rate);
            self.smooth = true;
            self.hold = HOLD_AFTER_DROP;
        } else if answerable {
            self.good = self.good.max(old);
            if self.hold == 0 {
                // Up by 1/16 while below the rate known good, carefully (1/64) beyond it.
                let step = if old < self.good { old / 16 } else { old / 64 };
                self.rate = (old + step.max(1)).min(self.full);
            }
        }
        (self.rate != old).then_some(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A retry round after 20,000 answers in one second at a full rate of 250k, judged in
    /// 30 ms windows.
    fn after_20k_answers_in_a_second() -> RetryRate {
        RetryRate::start(
            250_000,
            20_000,
            Nanos(Nanos::SECOND),
            Nanos::from_millis(30),
            Nanos(0),
            0,
        )
    }

    #[test]
    fn retry_rate_starts_at_the_answer_rate_and_holds_while_answered() {
        let mut r = after_20k_answers_in_a_second();
        assert_eq!(r.rate(), 17_500);
        // 600 sent, 590 answered in the window: 17,500 is known good, and the limit may be
        // higher (a bursty round 0 measures less than it): up by 1/64 beyond the known good.
        r.on_sent(600);
        assert_eq!(r.poll(Nanos::from_millis(31), 590), Some(17_773));
        assert!(!r.smooth());
        // Too early or too few probes to judge: nothing changes.
        r.on_sent(100);
        assert_eq!(r.poll(Nanos::from_millis(62), 690), None);
        // A window answered clearly worse than the best: the limiter drops. Back to 31/32 of
        // the rate known good (not of what passed), smooth pacing, and no rising for a while.
        r.on_sent(500);
        assert_eq!(r.poll(Nanos::from_millis(93), 1_090), Some(16_953));
        assert!(r.smooth());
        for k in 0..HOLD_AFTER_DROP - 1 {
            r.on_sent(600);
            let t = Nanos::from_millis(124 + 31 * u64::from(k));
            assert_eq!(r.poll(t, 1_690 + 600 * u64::from(k)), None, "held");
        }
        r.on_sent(600);
        let t = Nanos::from_millis(124 + 31 * u64::from(HOLD_AFTER_DROP));
        let replies = 1_690 + 600 * u64::from(HOLD_AFTER_DROP - 1);
        assert_eq!(
            r.poll(t, replies),
            Some(16_953 + 16_953 / 16),
            "below the good rate: 1/16"
        );
    }

    #[test]
    fn retry_rate_climbs_back_to_full_when_silence_is_real() {
        let mut r = RetryRate::start(
            256_000,
            500,
            Nanos::from_millis(250),
            Nanos::from_millis(30),
            Nanos(0),
            0,
        );
        assert_eq!(r.rate(), 1_750);
        let mut t = Nanos(0);
        let mut steps = 0;
        while r.rate() < 256_000 {
            r.on_sent((r.rate() * 30 / 1000).max(MIN_WINDOW_PROBES));
            t = t.add(Nanos::from_millis(30));
            r.poll(t, 0);
            steps += 1;
            assert!(steps < 10, "doubling reaches full rate in a few windows");
        }
        assert_eq!(steps, 8);
    }

    #[test]
    fn a_limited_round_does_not_double_itself_into_the_limiter() {
        // A retry round at 17,500/s against a limiter: windows answered 1 in 10 (the
        // limiter dropped a bunch, or the receive thread was off CPU for a window). The
        // round as a whole is answered, so the rate does not double (it did: within a few
        // windows the round ran at full speed and left hundreds of closed ports silent).
        let mut r = after_20k_answers_in_a_second();
        r.on_sent(1_000);
        r.poll(Nanos::from_millis(31), 1_000);
        let mut replies = 1_000;
        for k in 2..10u64 {
            r.on_sent(500);
            replies += 50;
            r.poll(Nanos::from_millis(31 * k), replies);
            assert!(r.rate() <= 17_500, "{} in window {k}", r.rate());
        }
        assert!(r.smooth());
        // A round of filtered pairs (nothing answers) still climbs back to full speed.
        let mut f = after_20k_answers_in_a_second();
        for k in 1..10u64 {
            f.on_sent(f.rate() * 31 / 1000);
            f.poll(Nanos::from_millis(31 * k), 0);
        }
        assert_eq!(f.rate(), 250_000);
        assert!(!f.smooth());
    }

    #[test]
    fn a_smooth_pacer_never_sends_two_closer_than_its_rate() {
        // 1,000/s, woken late and irregularly: never two packets in one poll, so never two
        // within 1 ms of each other as a limiter with a burst room of 1 requires.
        let mut p = Pacer::new(1_000, 128, Nanos(0));
        p.smooth(Nanos(0));
        let mut t = Nanos(0);
        let mut sent = 0;
        let mut last_sent: Option<Nanos> = None;
        for k in 0..2_000u64 {
            let got = p.poll(t, 128);
            assert!(got <= 1, "{got} at {t:?}");
            if got == 1 {
                if let Some(l) = last_sent {
                    assert!(t.since(l) >= Nanos(1_000_000), "{:?} apart", t.since(l));
                }
                last_sent = Some(t);
            }
            sent += got;
            // Polled often, but woken up to 0.6 ms late.
            t = p.next_ready(t).add(Nanos((k % 7) * 100_000));
        }
        assert!(sent > 1_000, "{sent}");
        // set_rate keeps it smooth.
        p.set_rate(100_000, t);
        assert_eq!(p.poll(t.add(Nanos::from_millis(10)), 128), 1);
    }

    #[test]
    fn retry_rate_without_answers_is_full_and_floor_applies() {
        // (full rate, answers in the previous round's second, starting rate). The floor is
        // below the usual limiters (FreeBSD's 200 RSTs/s).
        for (full, answers, want) in [
            (250_000, 0, 250_000),
            (250_000, 1, 244),
            (50_000, 1, 100),
            (500, 1, 100),
        ] {
            let r = RetryRate::start(full, answers, Nanos(Nanos::SECOND), Nanos(1), Nanos(0), 0);
            assert_eq!(r.rate(), want, "full {full}, {answers} answers");
        }
    }

    /// What `p` lets out in one simulated second, polled every `step_ns` for up to `want`.
    fn sent_in_a_second(p: &mut Pacer, step_ns: u64, want: u32) -> u64 {
        let mut sent = 0u64;
        let mut t = Nanos(0);
        while t.0 < Nanos::SECOND {
            sent += u64::from(p.poll(t, want));
            t = Nanos(t.0 + step_ns);
        }
        sent
    }

    #[test]
    fn holds_the_rate_over_a_simulated_second() {
        let mut p = Pacer::new(100_000, 64, Nanos(0));
        let sent = sent_in_a_second(&mut p, 50_000, 64); // poll every 50 us
        assert!((99_900..=100_100).contains(&sent), "sent {sent}");
    }

    #[test]
    fn burst_is_capped() {
        let mut p = Pacer::new(100_000, 10, Nanos(0));
        // Idle for 10 s: still only a burst of 10.
        assert_eq!(p.poll(Nanos(10 * Nanos::SECOND), 1000), 10);
        assert_eq!(p.poll(Nanos(10 * Nanos::SECOND), 1000), 0);
        // At 50,000 pps a millisecond is 50 packets: that is the burst, whatever was asked.
        let mut q = Pacer::new(50_000, 128, Nanos(0));
        assert_eq!(q.poll(Nanos(Nanos::SECOND), 1000), 50);
        // At 5,000 pps a millisecond is 5 packets, still more than the catch-up credit.
        let mut f = Pacer::new(5_000, 128, Nanos(0));
        assert_eq!(f.poll(Nanos(Nanos::SECOND), 1000), 5);
        // Slower, the catch-up credit is the cap.
        let mut r = Pacer::new(2_000, 128, Nanos(0));
        assert_eq!(r.poll(Nanos(Nanos::SECOND), 1000), MIN_CATCH_UP as u32);
    }

    #[test]
    fn a_slow_pacer_makes_up_late_wake_ups() {
        // 1,000/s polled 1.1 ms apart (a sender that always wakes 100 us late): the rate
        // still holds, because a few packets of credit carry over.
        let mut p = Pacer::new(1_000, 128, Nanos(0));
        let sent = sent_in_a_second(&mut p, 1_100_000, 128);
        assert!((999..=1_001).contains(&sent), "sent {sent}");
        // But no more than the catch-up after a long stall.
        assert_eq!(p.poll(Nanos(10 * Nanos::SECOND), 128), MIN_CATCH_UP as u32);
    }

    #[test]
    fn next_ready_is_exact() {
        let mut p = Pacer::new(1_000, 1, Nanos(0));
        assert_eq!(p.poll(Nanos(0), 1), 1);
        assert_eq!(p.next_ready(Nanos(0)), Nanos(1_000_000));
        assert_eq!(p.poll(Nanos(999_999), 1), 0);
        assert_eq!(p.poll(Nanos(1_000_000), 1), 1);
        p.give_back(1);
        assert_eq!(p.next_ready(Nanos(1_000_000)), Nanos(1_000_000));
    }

    #[test]
    fn set_rate_starts_without_a_burst() {
        let mut p = Pacer::new(1_000_000, 128, Nanos(0));
        p.set_rate(100_000, Nanos::from_millis(10));
        assert_eq!(p.poll(Nanos::from_millis(10), 128), 1, "no saved-up burst");
        assert_eq!(
            p.poll(Nanos::from_millis(11), 128),
            100,
            "one millisecond at 100k pps"
        );
        assert_eq!(
            p.poll(Nanos::from_millis(20), 128),
            100,
            "capped at a millisecond's worth"
        );
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut p = Pacer::new(1_000, 5, Nanos(5_000_000));
        assert_eq!(p.poll(Nanos(1_000), 10), 1);
        assert_eq!(p.poll(Nanos(6_000_000), 10), 1);
    }
}
