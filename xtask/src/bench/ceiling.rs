//! The lab's ceiling, measured in the same run as the scanners: `ps-blast` (a minimal
//! `sendmmsg` sender, no pacing, no receiving; `benches/src/bin/ps-blast.rs`), with as many
//! sending threads as Portscope uses, at full speed into the answering target (every port
//! of 198.18.0.2: the target's kernel answers each SYN) and into a black hole (that host's
//! silently dropped ports). Every
//! scanner's probes per second are then reported as a fraction of the answering ceiling,
//! except in a sweep (many hosts, one port: scenario 3), whose base is a third leg into the
//! sweep's own block and port ([`Ceiling::measure_sweep`]): there every probe draws a
//! SYN-ACK that the scanner's kernel answers with an RST, three packets where the closed
//! host's ports draw two, so only a blast of that block is like for like.
//! The answering and sweep legs run again after the scanners ([`Ceiling::measure_after`]):
//! the machine moves by tens of percent within minutes, so the ratios are taken against the
//! higher of the two ([`BeforeAfter`]), and the table shows both.
//!
//! **Architecture Invariant:** the blaster runs only through `Lab::scanner_cmd`, bounded in
//! packets (`PROBES`) and by a timeout.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use super::measure::{self, End};
use super::scenario::Scenario;
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

/// Where the blaster's link-layer frames go: the lab's next hop, as Portscope finds it by
/// itself (`--auto-link`, its default) and as masscan and zmap are told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SendPath {
    pub iface: String,
    pub next_hop: String,
}

impl SendPath {
    /// `ps-blast`'s trailing arguments: `LinkSink` with `PACKET_QDISC_BYPASS`, the cheapest
    /// send path, so the ceiling is the highest the lab allows.
    fn blast_args(&self) -> [String; 3] {
        [self.iface.clone(), self.next_hop.clone(), "bypass".into()]
    }
}

/// The legs.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// Sending threads of the blaster (each pinned to its own CPU), as many as Portscope's.
    pub threads: usize,
    /// The blaster's frames' interface and next hop.
    pub path: SendPath,
    /// Into the answering target, before and after the scanners: what the lab's machine
    /// can carry, replies included ([`Self::answering`] takes the higher of the two).
    pub answering: BeforeAfter,
    /// Into silent ports: sending alone.
    pub black_hole: Leg,
    /// Into a sweep scenario's block and port, the base of that scenario's ratios (`None`
    /// when the run has no sweep, or the leg failed).
    pub sweep: Option<SweepLeg>,
}

/// One leg measured before the scanners and again after them: the machine moves by tens
/// of percent within minutes, so the higher of the two counts, and a machine that slowed
/// down mid-run makes a scanner look worse, never better.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BeforeAfter {
    pub before: Leg,
    /// `None` until measured, or if it failed.
    pub after: Option<Leg>,
}

impl BeforeAfter {
    /// Only the first measurement so far.
    pub fn new(before: Leg) -> Self {
        BeforeAfter {
            before,
            after: None,
        }
    }

    /// The faster of the two legs.
    pub fn higher(&self) -> Leg {
        match self.after {
            Some(a) if a.pps > self.before.pps => a,
            _ => self.before,
        }
    }

    /// How far the two legs differ, as a fraction of the higher (0 if only one).
    pub fn spread(&self) -> f64 {
        self.after.map_or(0.0, |a| {
            let (lo, hi) = (a.pps.min(self.before.pps), a.pps.max(self.before.pps));
            1.0 - lo / hi.max(1e-9)
        })
    }
}

/// The ceiling of one sweep scenario.
#[derive(Debug, Clone, Serialize)]
pub struct SweepLeg {
    /// The scenario whose base it is.
    pub scenario: u8,
    /// The block `ps-blast` was aimed at, e.g. `198.19.0.0/16`.
    pub block: String,
    pub port: u16,
    pub legs: BeforeAfter,
}

impl SweepLeg {
    /// What `ps-blast` was aimed at, e.g. `198.19.0.0/16 port 80`.
    pub fn target(&self) -> String {
        format!("{} port {}", self.block, self.port)
    }
}

/// Runs both legs with `blast` (the release `ps-blast`, on `threads` threads, frames through
/// `path`) from the lab's scanner namespace.
pub fn measure(
    lab: &Lab,
    blast: &Path,
    raw: &Path,
    threads: usize,
    path: SendPath,
) -> anyhow::Result<Ceiling> {
    let b = Blaster {
        bin: blast,
        threads,
        path: &path,
    };
    let truth = lab.truth();
    let src = truth.scanner_v4.to_string();
    let host = truth
        .host("198.18.0.2".parse().expect("literal"))
        .context("the lab has no 198.18.0.2")?;
    let silent: Vec<String> = host.filtered_silent.iter().map(|p| p.to_string()).collect();
    if silent.is_empty() {
        bail!("198.18.0.2 has no silent ports to use as a black hole");
    }
    let host = |ports: &str| (src.clone(), "198.18.0.2".to_owned(), ports.to_owned());
    let answering = b.leg(lab, raw, host("1-65535"), "answering")?;
    let black_hole = b.leg(lab, raw, host(&silent.join(",")), "blackhole")?;
    Ok(Ceiling {
        threads,
        answering: BeforeAfter::new(answering),
        black_hole,
        sweep: None,
        path,
    })
}

impl Ceiling {
    /// Runs the answering leg, and the sweep leg if there is one, again (after the
    /// scanners; the lab unimpaired).
    pub fn measure_after(&mut self, lab: &Lab, blast: &Path, raw: &Path) -> anyhow::Result<()> {
        let src = lab.truth().scanner_v4.to_string();
        let to = (src.clone(), "198.18.0.2".to_owned(), "1-65535".to_owned());
        let b = self.blaster(blast);
        let after = b.leg(lab, raw, to, "answering-after")?;
        let sweep_after = match &self.sweep {
            Some(w) => {
                let to = (src, w.block.clone(), w.port.to_string());
                Some(b.leg(lab, raw, to, "sweep-after")?)
            }
            None => None,
        };
        self.answering.after = Some(after);
        if let Some(w) = &mut self.sweep {
            w.legs.after = sweep_after;
        }
        Ok(())
    }

    /// Runs the sweep leg for `s`, whose targets must be one CIDR block on one port.
    pub fn measure_sweep(
        &mut self,
        lab: &Lab,
        blast: &Path,
        raw: &Path,
        s: &Scenario,
    ) -> anyhow::Result<&SweepLeg> {
        let [block] = &s.cidrs()[..] else {
            bail!("scenario {} is not one CIDR block", s.id);
        };
        if s.port_count() != 1 {
            bail!("scenario {} is not one port", s.id);
        }
        let src = lab.truth().scanner_v4.to_string();
        let port = *s.ports.start();
        let to = (src, block.clone(), port.to_string());
        let before = self.blaster(blast).leg(lab, raw, to, "sweep")?;
        Ok(self.sweep.insert(SweepLeg {
            scenario: s.id,
            block: block.clone(),
            port,
            legs: BeforeAfter::new(before),
        }))
    }

    /// The ceiling scenario `id`'s ratios are taken against: its sweep leg if it has one,
    /// else [`Self::answering`].
    pub fn base_for(&self, id: u8) -> Leg {
        match &self.sweep {
            Some(w) if w.scenario == id => w.legs.higher(),
            _ => self.answering(),
        }
    }

    /// The answering ceiling every ratio is taken against: the higher of the two legs, so a
    /// machine that slowed down mid-run makes a scanner look worse, never better.
    pub fn answering(&self) -> Leg {
        self.answering.higher()
    }

    /// The blaster `blast` on this ceiling's threads and path.
    fn blaster<'a>(&'a self, blast: &'a Path) -> Blaster<'a> {
        Blaster {
            bin: blast,
            threads: self.threads,
            path: &self.path,
        }
    }
}

/// `ps-blast` as this run uses it.
struct Blaster<'a> {
    bin: &'a Path,
    threads: usize,
    path: &'a SendPath,
}

impl Blaster<'_> {
    /// One run to `(src, dst, ports)`; its figures (files `ceiling-<tag>.*`).
    fn leg(
        &self,
        lab: &Lab,
        raw: &Path,
        (src, dst, ports): (String, String, String),
        tag: &str,
    ) -> anyhow::Result<Leg> {
        let mut cmd = lab.scanner_cmd(self.bin);
        cmd.args(["--threads", &self.threads.to_string()]);
        cmd.args([src, dst, ports, PROBES.to_string()]);
        cmd.args(self.path.blast_args());
        run_leg(cmd, raw, tag)
    }
}

/// Runs one blaster command; its figures.
fn run_leg(mut cmd: std::process::Command, raw: &Path, tag: &str) -> anyhow::Result<Leg> {
    let (out, err) = (
        raw.join(format!("ceiling-{tag}.out")),
        raw.join(format!("ceiling-{tag}.err")),
    );
    std::thread::sleep(Duration::from_millis(500));
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
pub(super) mod tests {
    use super::{BeforeAfter, Ceiling, Leg, SendPath};

    pub(in crate::bench) fn path() -> SendPath {
        SendPath {
            iface: "bn1s0".into(),
            next_hop: "02:00:00:00:00:02".into(),
        }
    }

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
            path: path(),
            answering: BeforeAfter::new(leg(250_000.0)),
            black_hole: leg(500_000.0),
            sweep: None,
        };
        assert_eq!(c.answering.spread(), 0.0);
        c.answering.after = Some(leg(200_000.0));
        assert_eq!(
            c.answering().pps,
            250_000.0,
            "a slower second leg lowers no ratio's base"
        );
        assert!((c.answering.spread() - 0.2).abs() < 1e-9);
        c.answering.after = Some(leg(300_000.0));
        assert_eq!(
            c.answering().pps,
            300_000.0,
            "a faster second leg becomes the base"
        );
        assert_eq!(c.answering.before.pps, 250_000.0);
    }

    #[test]
    fn a_sweep_scenario_is_measured_against_its_own_leg() {
        let mut c = Ceiling {
            threads: 2,
            path: path(),
            answering: BeforeAfter {
                before: leg(250_000.0),
                after: Some(leg(260_000.0)),
            },
            black_hole: leg(500_000.0),
            sweep: None,
        };
        assert_eq!(
            c.base_for(3).pps,
            260_000.0,
            "no sweep leg: the answering one"
        );
        let mut w = super::SweepLeg {
            scenario: 3,
            block: "198.19.0.0/16".into(),
            port: 80,
            legs: BeforeAfter {
                before: leg(150_000.0),
                after: Some(leg(140_000.0)),
            },
        };
        assert_eq!(w.target(), "198.19.0.0/16 port 80");
        c.sweep = Some(w.clone());
        assert_eq!(c.base_for(3).pps, 150_000.0, "the higher of its two legs");
        assert_eq!(c.base_for(1).pps, 260_000.0, "other scenarios keep theirs");
        assert_eq!(c.base_for(2).pps, 260_000.0);
        w.legs.after = Some(leg(170_000.0));
        c.sweep = Some(w);
        assert_eq!(c.base_for(3).pps, 170_000.0);
    }

    #[test]
    fn the_blaster_sends_as_portscope_does() {
        let link = path();
        assert_eq!(link.blast_args(), ["bn1s0", "02:00:00:00:00:02", "bypass"]);
        assert_eq!(
            serde_json::to_value(&link).unwrap(),
            serde_json::json!({"iface": "bn1s0", "next_hop": "02:00:00:00:00:02"})
        );
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
