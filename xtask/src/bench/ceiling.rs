//! The lab's ceiling, measured in the same run as the scanners: `ps-blast` (a minimal
//! `sendmmsg` sender, no pacing, no receiving; `benches/src/bin/ps-blast.rs`), with as many
//! sending threads as Portscope uses, at full speed into the answering target (every port
//! of 198.18.0.2: the target's kernel answers each SYN) and into a black hole (that host's
//! silently dropped ports). Every
//! scanner's probes per second are then reported as a fraction of the answering ceiling.
//! The answering leg runs again after the scanners ([`Ceiling::measure_after`]): the machine
//! moves by tens of percent within minutes, so the ratios are taken against the higher of
//! the two, and the table shows both.
//!
//! **Architecture Invariant:** the blaster runs only through `Lab::scanner_cmd`, bounded in
//! packets (`PROBES`) and by a timeout.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use super::measure::{self, End};
use crate::lab::Lab;

/// Probes per ceiling run (a few seconds at most at lab speeds).
const PROBES: u64 = 400_000;

/// One ceiling measurement.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Leg {
    /// Packets per second the blaster pushed (its own count over its own send time).
    pub pps: f64,
    /// CPU-seconds per million probes (the blaster process, user + sys).
    pub cpu_s_per_m: f64,
}

/// Both legs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ceiling {
    /// Sending threads of the blaster (each pinned to its own CPU), as many as Portscope's.
    pub threads: usize,
    /// Into the answering target, before the scanners ran: what the lab's machine can
    /// carry, replies included ([`Self::answering`] takes the higher of the two legs).
    pub answering_before: Leg,
    /// The answering leg measured after them (`None` until measured, or if it failed).
    pub answering_after: Option<Leg>,
    /// Into silent ports: sending alone.
    pub black_hole: Leg,
}

/// Runs both legs with `blast` (the release `ps-blast`, on `threads` threads) from the lab's
/// scanner namespace.
pub fn measure(lab: &Lab, blast: &Path, raw: &Path, threads: usize) -> anyhow::Result<Ceiling> {
    let truth = lab.truth();
    let src = truth.scanner_v4.to_string();
    let host = truth
        .host("198.18.0.2".parse().expect("literal"))
        .context("the lab has no 198.18.0.2")?;
    let silent: Vec<String> = host.filtered_silent.iter().map(|p| p.to_string()).collect();
    if silent.is_empty() {
        bail!("198.18.0.2 has no silent ports to use as a black hole");
    }
    let answering = leg(lab, blast, raw, threads, &src, "1-65535", "answering")?;
    let black_hole = leg(
        lab,
        blast,
        raw,
        threads,
        &src,
        &silent.join(","),
        "blackhole",
    )?;
    Ok(Ceiling {
        threads,
        answering_before: answering,
        answering_after: None,
        black_hole,
    })
}

impl Ceiling {
    /// Runs the answering leg again (after the scanners; the lab unimpaired).
    pub fn measure_after(&mut self, lab: &Lab, blast: &Path, raw: &Path) -> anyhow::Result<()> {
        let src = lab.truth().scanner_v4.to_string();
        let after = leg(
            lab,
            blast,
            raw,
            self.threads,
            &src,
            "1-65535",
            "answering-after",
        )?;
        self.answering_after = Some(after);
        Ok(())
    }

    /// The answering ceiling every ratio is taken against: the higher of the two legs, so a
    /// machine that slowed down mid-run makes a scanner look worse, never better.
    pub fn answering(&self) -> Leg {
        match self.answering_after {
            Some(a) if a.pps > self.answering_before.pps => a,
            _ => self.answering_before,
        }
    }

    /// How far the two answering legs differ, as a fraction of the higher (0 if only one).
    pub fn spread(&self) -> f64 {
        self.answering_after.map_or(0.0, |a| {
            let (lo, hi) = (
                a.pps.min(self.answering_before.pps),
                a.pps.max(self.answering_before.pps),
            );
            1.0 - lo / hi.max(1e-9)
        })
    }
}

fn leg(
    lab: &Lab,
    blast: &Path,
    raw: &Path,
    threads: usize,
    src: &str,
    ports: &str,
    tag: &str,
) -> anyhow::Result<Leg> {
    let (out, err) = (
        raw.join(format!("ceiling-{tag}.out")),
        raw.join(format!("ceiling-{tag}.err")),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut cmd = lab.scanner_cmd(blast);
    cmd.args(["--threads", &threads.to_string()]);
    cmd.args([src, "198.18.0.2", ports, &PROBES.to_string()]);
    let m = measure::run_timed(&mut cmd, Duration::from_secs(60), &out, &err)?;
    if !matches!(m.end, End::Exited(s) if s.success()) {
        bail!(
            "ps-blast ({tag}) failed: {:?}: {}",
            m.end,
            fs::read_to_string(&err).unwrap_or_default()
        );
    }
    let text = fs::read_to_string(&out)?;
    let (sent, secs) = parse(&text).with_context(|| format!("ps-blast said {text:?}"))?;
    let cpu = (m.user + m.sys).as_secs_f64();
    Ok(Leg {
        pps: sent as f64 / secs.max(1e-9),
        cpu_s_per_m: cpu / (sent.max(1) as f64 / 1e6),
    })
}

/// `ps-blast: sent N failed F in S s (...)` -> (N, S).
fn parse(text: &str) -> Option<(u64, f64)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = |w: &str| words.iter().position(|x| *x == w);
    let sent = words.get(at("sent")? + 1)?.parse().ok()?;
    let secs = words.get(at("in")? + 1)?.parse().ok()?;
    Some((sent, secs))
}

#[cfg(test)]
mod tests {
    use super::{Ceiling, Leg};

    fn leg(pps: f64) -> Leg {
        Leg {
            pps,
            cpu_s_per_m: 1.0,
        }
    }

    #[test]
    fn the_ratios_are_taken_against_the_higher_of_before_and_after() {
        let mut c = Ceiling {
            threads: 2,
            answering_before: leg(250_000.0),
            answering_after: None,
            black_hole: leg(500_000.0),
        };
        assert_eq!(c.spread(), 0.0);
        c.answering_after = Some(leg(200_000.0));
        assert_eq!(
            c.answering().pps,
            250_000.0,
            "a slower second leg lowers no ratio's base"
        );
        assert!((c.spread() - 0.2).abs() < 1e-9);
        c.answering_after = Some(leg(300_000.0));
        assert_eq!(
            c.answering().pps,
            300_000.0,
            "a faster second leg becomes the base"
        );
        assert_eq!(c.answering_before.pps, 250_000.0);
    }

    #[test]
    fn parses_the_blaster_line() {
        assert_eq!(
            super::parse("ps-blast: sent 400000 failed 0 in 2.000000 s (200000/s)\n"),
            Some((400_000, 2.0))
        );
        assert_eq!(super::parse("garbage"), None);
    }
}
