//! When to stop retrying silent pairs: a fixed count, or loss-adaptive from the answers the
//! rounds themselves brought back. Pure: the caller passes the per-round answer counts.
//!
//! The model: each try of an answerable pair succeeds independently with probability
//! `1 - q` (`q` is the per-try failure, probe or reply lost); genuinely filtered pairs never
//! answer. Then the pairs first answered in round `k` form a geometric series
//! `a_k = A (1 - q) q^k`, so the share of last round's answers that reappear in the next
//! round (`a_k / a_{k-1}`) estimates `q` without knowing how many silent pairs are filtered.
//! After round `K` the pairs still silent but answerable number `a_K q / (1 - q)` in
//! expectation; retries go on while that exceeds [`EXPECTED_WRONG_BOUND`].

/// Retry rounds stop once fewer than this many pairs are expected to be still wrongly
/// reported as filtered (per scan).
pub const EXPECTED_WRONG_BOUND: f64 = 0.001;

/// The default cap on adaptive retries (`--max-retries`).
pub const DEFAULT_MAX_RETRIES: u8 = 10;

/// The retries every adaptive scan sends at least (the old fixed default): a scan whose
/// retries bring nothing back stops after these, or after the first when its first round
/// already bounds the loss tightly enough ([`quiet_first_retry_suffices`]).
pub const MIN_RETRIES: u8 = 2;

/// How many times silent pairs are probed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Exactly this many retry rounds (`--retries N`).
    Fixed(u8),
    /// At least `min`, then while the loss estimate says pairs may still be wrong, at most
    /// `max` retry rounds.
    Adaptive {
        /// Retry rounds always sent.
        min: u8,
        /// Cap.
        max: u8,
    },
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::Adaptive {
            min: MIN_RETRIES,
            max: DEFAULT_MAX_RETRIES,
        }
    }
}

/// What the answers so far say about the path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossEstimate {
    /// Estimated per-try failure probability (probe or reply lost; the point estimate, the
    /// stop rule uses an upper bound), when any retry round has been judged; `None` before.
    pub per_try_loss: Option<f64>,
    /// Expected number of answerable pairs still silent after the rounds so far.
    pub expected_wrong: f64,
}

impl RetryPolicy {
    /// The most retry rounds this policy can send.
    pub fn max_retries(self) -> u8 {
        match self {
            RetryPolicy::Fixed(n) => n,
            RetryPolicy::Adaptive { min, max } => max.max(min),
        }
    }

    /// Whether the first retry round is sent whatever round 0 brings back (as long as any
    /// pair is still silent), so it may start before round 0's last answers are in.
    pub fn first_retry_certain(self) -> bool {
        match self {
            RetryPolicy::Fixed(n) => n >= 1,
            RetryPolicy::Adaptive { min, .. } => min >= 1 && self.max_retries() >= 1,
        }
    }

    /// Whether to send another retry round, given the first replies per round so far
    /// (`answers[k]` = pairs first answered by round `k`'s probe; `answers.len()` rounds
    /// were sent). Silent pairs left is `silent`: nothing to retry when it is 0.
    pub fn another_round(self, answers: &[u64], silent: u64) -> bool {
        self.another_round_after(answers, silent, false)
    }

    /// Like [`Self::another_round`], told whether the last round saw a rate limiter drop
    /// (its windows were answered worse than its best, see `pacer::RetryRate`). Such a
    /// round left answerable pairs silent for certain, and its count says how fast the
    /// limiter is, not how lossy the path: the loss model does not judge it, and an
    /// adaptive policy sends another round (up to the cap) however few it brought back.
    pub fn another_round_after(self, answers: &[u64], silent: u64, limiter_dropped: bool) -> bool {
        let retries_done = answers.len().saturating_sub(1);
        if silent == 0 || retries_done >= usize::from(self.max_retries()) {
            return false;
        }
        match self {
            RetryPolicy::Fixed(_) => true,
            RetryPolicy::Adaptive { min, .. } => {
                limiter_dropped
                    || (retries_done < usize::from(min) && !quiet_first_retry_suffices(answers))
                    || estimate(answers).expected_wrong > EXPECTED_WRONG_BOUND
            }
        }
    }
}

/// Whether one quiet retry round is proof enough on its own: every retry so far brought
/// nothing back, after a first round with so many answers that the pairs still wrong are
/// below [`EXPECTED_WRONG_BOUND`] even at the loss's upper bound.
///
/// With `a` first-round answers and none in the retry, the per-try loss `q` is below
/// `3 / a` (the Poisson bound [`estimate`] uses, at `n = 0`); the retry then expected `q a`
/// answers, and `q` of those pairs would still be silent after it: `q^2 a / (1 - q)`, about
/// `9 / a`. So a clean scan with more than about 9,000 answers stops after one retry (the
/// second retry of a one-host, 65,535-port scan cost one more RTT-derived wait, 10 ms of a
/// 0.175 s scan in the lab); smaller scans, silent hosts and any round that a rate limiter
/// thinned still get [`MIN_RETRIES`].
pub fn quiet_first_retry_suffices(answers: &[u64]) -> bool {
    let Some((&first, retries)) = answers.split_first() else {
        return false;
    };
    if retries.is_empty() || retries.iter().any(|&a| a > 0) || first == 0 {
        return false;
    }
    let q = 3.0 / first as f64;
    q < 1.0 && q * q * first as f64 / (1.0 - q) < EXPECTED_WRONG_BOUND
}

/// Answers the loss estimate is pooled over at least (the latest retry rounds that bring
/// this many first tries together; all of them when there are fewer).
pub const ESTIMATE_WINDOW: u64 = 1_000;

/// Estimates the per-try loss and the pairs still wrong from per-round first replies,
/// erring on the side of more rounds.
///
/// `q` is pooled over the latest rounds whose answers add up to [`ESTIMATE_WINDOW`]
/// (`sum a_k / sum a_{k-1}`), so a handful of answers in a late round does not swing it,
/// while a path whose loss changes (a rate limiter: round 0 loses most, the paced retries
/// almost nothing) is judged by what it does now. The count of later answers is raised to
/// a Poisson upper bound (`n + 2 sqrt(n + 1) + 1`) before dividing: a bound, not the point
/// estimate, is what keeps the scan exact when the sample is small or unlucky.
///
/// The answers expected from round `k` are the larger of what it brought and `q` times
/// what was expected of round `k - 1`: quiet rounds wear the expectation down by `q` each,
/// so one or two lucky quiet rounds are not proof that nothing is left (the pairs
/// still silent after a round with `n` expected answers number `n q / (1 - q)`).
/// Rate-limited targets look like high loss for a round, then stop answering, and the
/// estimate falls with them once the window has moved past the limited round.
pub fn estimate(answers: &[u64]) -> LossEstimate {
    let Some(last_round) = answers.len().checked_sub(1).filter(|&k| k > 0) else {
        return LossEstimate {
            per_try_loss: None,
            expected_wrong: 0.0,
        };
    };
    let mut first = last_round - 1;
    while first > 0 && answers[first..last_round].iter().sum::<u64>() < ESTIMATE_WINDOW {
        first -= 1;
    }
    let before: u64 = answers[first..last_round].iter().sum();
    let later: u64 = answers[first + 1..].iter().sum();
    if before == 0 || later == 0 {
        // Nothing ever answered (a silent host: no answerable pair to lose), or no retry
        // round brought anything back: no sign of loss, so the scan stops after the usual
        // rounds, however few pairs answered (a bound alone would keep a 100-port scan of a
        // clean host going for one more round).
        return LossEstimate {
            per_try_loss: Some(0.0),
            expected_wrong: 0.0,
        };
    }
    let n = later as f64;
    let point = (n / before as f64).min(0.99);
    let q = ((n + 2.0 * (n + 1.0).sqrt() + 1.0) / before as f64).min(0.99);
    let expected = answers[first + 1..]
        .iter()
        .fold(answers[first] as f64, |e, &a| (a as f64).max(q * e));
    LossEstimate {
        per_try_loss: Some(point),
        expected_wrong: q * expected / (1.0 - q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_retry_is_certain_unless_no_retry_is_asked_for() {
        assert!(RetryPolicy::default().first_retry_certain());
        assert!(RetryPolicy::Fixed(1).first_retry_certain());
        assert!(!RetryPolicy::Fixed(0).first_retry_certain());
        assert!(!RetryPolicy::Adaptive { min: 0, max: 10 }.first_retry_certain());
        // ... and then another_round agrees for any first-round count that leaves a pair silent.
        for a in [0, 1, 100, 65_534] {
            assert!(RetryPolicy::default().another_round(&[a], 1), "{a}");
            assert!(RetryPolicy::Fixed(1).another_round(&[a], 1), "{a}");
        }
    }

    /// Runs a scan of `answerable` pairs with per-try failure `q`, deterministically (each
    /// round answers the expected share, rounded), until the policy stops; returns rounds.
    fn rounds_until_stop(policy: RetryPolicy, counts: impl Fn(usize) -> u64) -> usize {
        let mut answers = Vec::new();
        loop {
            answers.push(counts(answers.len()));
            if !policy.another_round(&answers, 100) {
                return answers.len();
            }
        }
    }

    #[test]
    fn silent_host_stops_after_the_usual_rounds() {
        // Nothing ever answers: 1 + MIN_RETRIES rounds, as with the old fixed default.
        assert_eq!(rounds_until_stop(RetryPolicy::default(), |_| 0), 3);
        // A clean host with many answers: everything in round 0, the first retry brings
        // nothing back, and 65,000 answers bound the loss below 3/65,000 a try: one retry.
        assert_eq!(
            rounds_until_stop(RetryPolicy::default(), |k| if k == 0 { 65_000 } else { 0 }),
            2
        );
        // Fewer answers bound it less tightly: the usual two retries (9,000 is the edge).
        assert_eq!(
            rounds_until_stop(RetryPolicy::default(), |k| if k == 0 { 8_000 } else { 0 }),
            3
        );
        assert_eq!(
            rounds_until_stop(RetryPolicy::default(), |k| if k == 0 { 10_000 } else { 0 }),
            2
        );
        // A rate limiter's round always gets another, however clean it looks.
        assert!(RetryPolicy::default().another_round_after(&[65_000, 0], 100, true));
        // A fixed count is a fixed count.
        assert!(RetryPolicy::Fixed(2).another_round(&[65_000, 0], 100));
        let e = estimate(&[65_000, 0, 0]);
        assert_eq!(e.per_try_loss, Some(0.0));
        assert_eq!(e.expected_wrong, 0.0);
        // However few pairs answered: a clean fast scan pays no extra round either.
        assert_eq!(
            rounds_until_stop(RetryPolicy::default(), |k| if k == 0 { 100 } else { 0 }),
            3
        );
    }

    #[test]
    fn lossy_host_keeps_going() {
        // 1% loss each way: q ~ 2%. 65,000 answerable pairs: 63,700, 1,274, 25, 0 (or 1).
        let one = [63_700u64, 1_274, 25, 0, 0, 0];
        assert_eq!(rounds_until_stop(RetryPolicy::default(), |k| one[k]), 5);
        let e = estimate(&one[..3]);
        let q = e.per_try_loss.unwrap();
        assert!((0.019..0.021).contains(&q), "q {q}");
        assert!(e.expected_wrong > 0.4, "{e:?}");
        // 5% loss each way: q ~ 9.75%. Two quiet rounds after the last answer are not
        // enough at this loss (one pair in ten would still be answerable after the first).
        let five = [58_662u64, 5_720, 558, 54, 5, 1, 0, 0, 0, 0, 0];
        assert_eq!(rounds_until_stop(RetryPolicy::default(), |k| five[k]), 9);
        let q = estimate(&five[..4]).per_try_loss.unwrap();
        assert!((0.09..0.105).contains(&q), "q {q}");
    }

    #[test]
    fn a_lucky_quiet_round_is_not_proof() {
        // Round 3 happened to bring nothing although ~0.5 were expected: one more round.
        assert!(RetryPolicy::default().another_round(&[63_700, 1_274, 25, 0], 10));
        assert!(!RetryPolicy::default().another_round(&[63_700, 1_274, 25, 0, 0], 10));
    }

    #[test]
    fn quiet_rounds_wear_the_expectation_down_they_do_not_reset_it() {
        // 5% loss, and round 4 happened to bring nothing where ~5 were due: the pairs
        // behind them are still expected, so two quiet rounds do not end the scan (they
        // did before the estimate was made conservative: a miss in ~1 run of 300).
        let p = RetryPolicy::default();
        assert!(p.another_round(&[58_662, 5_720, 558, 54, 0, 0], 10));
        assert!(p.another_round(&[58_662, 5_720, 558, 54, 5, 0, 0], 10));
        assert!(p.another_round(&[58_662, 5_720, 558, 54, 5, 1, 0, 0], 10));
        assert!(!p.another_round(&[58_662, 5_720, 558, 54, 5, 1, 0, 0, 0], 10));
        // Fewer answers to judge from: the bound on q is wider, so more rounds.
        assert!(estimate(&[100, 10, 1, 0]).per_try_loss.unwrap() < 0.1);
        assert!(estimate(&[100, 10, 1, 0]).expected_wrong > 0.001);
    }

    #[test]
    fn the_stop_rule_keeps_its_bound_on_simulated_lossy_scans() {
        // 1,000 scans of 65,527 answerable pairs at 5% loss each way (q = 9.75%), per-try
        // outcomes from a fixed-seed generator: every pair must be answered when the
        // policy stops. The old rule (two quiet rounds end it) left a pair silent in about
        // one scan in 300; this one in about one in 5,000 (by a longer simulation).
        let q = 1.0 - 0.95f64 * 0.95;
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut uniform = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut rounds_total = 0;
        for _ in 0..1_000 {
            let mut silent = 65_527u64;
            let mut answers = Vec::new();
            loop {
                // Binomial(silent, 1 - q): normal approximation while large, exact below.
                let got = if silent > 1_000 {
                    let m = silent as f64 * (1.0 - q);
                    let sd = (m * q).sqrt();
                    let z = (-2.0 * uniform().max(1e-300).ln()).sqrt()
                        * (2.0 * std::f64::consts::PI * uniform()).cos();
                    (m + sd * z).round().clamp(0.0, silent as f64) as u64
                } else {
                    (0..silent).filter(|_| uniform() >= q).count() as u64
                };
                silent -= got;
                answers.push(got);
                if !RetryPolicy::default().another_round(&answers, silent + 8) {
                    break;
                }
            }
            assert_eq!(silent, 0, "stopped with pairs still silent: {answers:?}");
            rounds_total += answers.len();
        }
        // And it does not buy that with the cap: about 9 rounds on average.
        assert!(rounds_total < 1_000 * 10, "{rounds_total} rounds");
    }

    #[test]
    fn rate_limited_target_stops_when_answers_stop() {
        // Round 0 at full speed met an RST limit; paced retries then got the rest.
        let rl = [5_000u64, 40_000, 20_000, 3, 0, 0, 0, 0];
        let n = rounds_until_stop(RetryPolicy::default(), |k| rl[k]);
        assert!(n <= 6, "{n} rounds");
    }

    #[test]
    fn a_round_the_limiter_thinned_is_followed_by_another() {
        // A retry round that saw drops came back quiet after a large round: by the loss
        // model alone the scan is done (it stopped with ~200 closed ports silent).
        let answers = [5_000u64, 59_000, 1_300, 0];
        assert!(!RetryPolicy::default().another_round(&answers, 200));
        assert!(RetryPolicy::default().another_round_after(&answers, 200, true));
        // Still within the cap, and nothing to retry is nothing to retry.
        let eleven = [5_000u64, 100, 90, 80, 70, 60, 50, 40, 30, 20, 10];
        assert!(!RetryPolicy::default().another_round_after(&eleven, 200, true));
        assert!(!RetryPolicy::default().another_round_after(&answers, 0, true));
        // A fixed count stays fixed.
        assert!(!RetryPolicy::Fixed(3).another_round_after(&answers, 200, true));
    }

    #[test]
    fn cap_holds() {
        // Heavy, steady loss: the estimate never clears, the cap ends it.
        let heavy = |k: usize| 100_000u64 >> k;
        assert_eq!(
            rounds_until_stop(RetryPolicy::Adaptive { min: 2, max: 10 }, heavy),
            11
        );
        assert_eq!(
            rounds_until_stop(RetryPolicy::Adaptive { min: 2, max: 4 }, heavy),
            5
        );
        // A fixed count is exactly that, answers or not.
        assert_eq!(rounds_until_stop(RetryPolicy::Fixed(6), |_| 0), 7);
        assert_eq!(rounds_until_stop(RetryPolicy::Fixed(0), heavy), 1);
    }

    #[test]
    fn nothing_silent_nothing_to_retry() {
        assert!(!RetryPolicy::default().another_round(&[100], 0));
        assert!(!RetryPolicy::Fixed(3).another_round(&[100], 0));
    }
}
