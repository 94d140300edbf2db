//! Live numbers while a scan runs: a one-line progress display on a terminal and, with
//! `--stats-every`, a status line on stderr for logs and CI. Both show open ports found, the
//! share of the whole scan done (all rounds, not just the current one) and an ETA.
//!
//! The whole-scan estimate: round 0 sends every pair once; each retry round resends the
//! pairs still silent. The silent share measured so far predicts the retry work, and each
//! round ends with a wait of at most `--max-wait`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use portscope_engine::Progress;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A progress line never grows past this many columns.
const WIDTH: usize = 79;

/// Share of the scan done and time left, from live counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    /// 0.0 to 1.0.
    pub done: f64,
    /// Time left, if the rate is known yet.
    pub eta: Option<Duration>,
    /// Measured probes per second.
    pub pps: f64,
}

/// Estimates the whole scan from `p` after `elapsed`; `wait` is the per-round wait bound.
pub(crate) fn estimate(p: &Progress, elapsed: Duration, wait: Duration) -> Estimate {
    let pairs = p.pairs.max(1) as f64;
    let first = (p.sent.min(p.pairs)).max(1) as f64;
    let silent = (1.0 - p.answered as f64 / first).clamp(0.0, 1.0);
    let retries = f64::from(p.rounds.saturating_sub(1));
    let total = pairs * (1.0 + silent * retries);
    let sent = p.sent as f64;
    let secs = elapsed.as_secs_f64();
    let pps = if secs > 0.0 { sent / secs } else { 0.0 };
    let waits_left = f64::from(p.rounds.saturating_sub(p.round)) * wait.as_secs_f64();
    let eta = (pps > 0.0 && secs >= 0.5)
        .then(|| Duration::from_secs_f64(((total - sent).max(0.0) / pps) + waits_left));
    Estimate {
        done: (sent / total).clamp(0.0, 0.999),
        eta,
        pps,
    }
}

/// `1.2k`, `3.4M`: short counts for a narrow line.
fn short(n: f64) -> String {
    match n {
        n if n >= 1e6 => format!("{:.1}M", n / 1e6),
        n if n >= 1e4 => format!("{:.0}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

/// `1:05`, `12s`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}:{:02}", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The status text: `42.1% 27k/66k probes, 3 open, 98k pps, round 1/3, ETA 4s`.
pub(crate) fn status_line(p: &Progress, open: u64, elapsed: Duration, wait: Duration) -> String {
    let e = estimate(p, elapsed, wait);
    let mut s = format!(
        "[{}] {:.1}% {}/{} probes, {open} open, {} pps, round {}/{}, ETA {}",
        clock(elapsed),
        e.done * 100.0,
        short(p.sent as f64),
        short(p.pairs as f64),
        short(e.pps),
        p.round + 1,
        p.rounds,
        e.eta.map_or_else(|| "?".to_owned(), clock),
    );
    if s.len() > WIDTH {
        s.truncate(WIDTH);
    }
    s
}

/// The progress display and the periodic status line of one scan.
#[derive(Debug)]
pub(crate) struct Live {
    bar: ProgressBar,
    every: Option<Duration>,
    started: Instant,
    last_draw: Instant,
    last_stats: Instant,
    wait: Duration,
}

impl Live {
    /// A display on stderr if it is a terminal and `quiet` is off; a status line every
    /// `every` in any case.
    pub(crate) fn new(quiet: bool, every: Option<Duration>, wait: Duration) -> Self {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
            b.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        };
        let now = Instant::now();
        Live {
            bar,
            every,
            started: now,
            last_draw: now,
            last_stats: now,
            wait,
        }
    }

    /// Updates the display (at most 10 times a second) and prints a due status line.
    pub(crate) fn tick(&mut self, p: &Progress, open: u64) {
        let now = Instant::now();
        if now.duration_since(self.last_draw) >= Duration::from_millis(100) {
            self.last_draw = now;
            let line = status_line(p, open, self.started.elapsed(), self.wait);
            self.bar.set_message(line);
        }
        if let Some(every) = self.every {
            if now.duration_since(self.last_stats) >= every {
                self.last_stats = now;
                let line = status_line(p, open, self.started.elapsed(), self.wait);
                self.bar
                    .suspend(|| crate::note(&format!("portscope: status {line}")));
            }
        }
    }

    /// Runs `f` with the display cleared, so lines it prints to the terminal do not mix
    /// with the progress line.
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Stops drawing for good (after SIGHUP the terminal may be gone).
    pub(crate) fn hide(&self) {
        self.bar.set_draw_target(ProgressDrawTarget::hidden());
    }

    /// Clears the display.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(sent: u64, answered: u64, round: u8) -> Progress {
        Progress {
            pairs: 65_535,
            sent,
            answered,
            round,
            rounds: 3,
        }
    }

    #[test]
    fn estimate_covers_all_rounds() {
        // Half of round 0, every answer in: no retry work expected.
        let e = estimate(
            &p(32_768, 32_768, 0),
            Duration::from_secs(1),
            Duration::ZERO,
        );
        assert!((e.done - 0.5).abs() < 0.01, "{e:?}");
        assert!((e.eta.unwrap().as_secs_f64() - 1.0).abs() < 0.01, "{e:?}");
        // Half of round 0, half silent: two retries of a half each double the work.
        let e = estimate(
            &p(32_768, 16_384, 0),
            Duration::from_secs(1),
            Duration::ZERO,
        );
        assert!((e.done - 0.25).abs() < 0.01, "{e:?}");
        // Waits still to come count: 3 rounds x 1 s.
        let e = estimate(
            &p(32_768, 32_768, 0),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!((e.eta.unwrap().as_secs_f64() - 4.0).abs() < 0.01, "{e:?}");
    }

    #[test]
    fn status_line_fits_80_columns() {
        let mut big = p(12_345_678_901, 10, 1);
        big.pairs = 281_470_681_743_360;
        big.rounds = 7;
        let l = status_line(
            &big,
            123_456_789,
            Duration::from_secs(99_999),
            Duration::ZERO,
        );
        assert!(l.len() <= 79, "{} columns: {l}", l.len());
        let l = status_line(
            &p(30_000, 29_000, 0),
            3,
            Duration::from_secs(2),
            Duration::ZERO,
        );
        assert!(l.starts_with("[2s] ") && l.contains(" 3 open,"), "{l}");
        assert!(l.contains("round 1/3") && l.contains("ETA "), "{l}");
    }
}
