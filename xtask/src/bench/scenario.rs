//! The benchmark's scenarios and how a scanner's answer is scored against the lab's truth. Pure: no processes, no files.
//!
//! A scenario is a contiguous IPv4 range times a contiguous port range, so every (address,
//! port) pair has a dense index and a scanner's answer fits in one byte per pair.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use serde::Serialize;

use crate::lab::{Expected, Truth};

/// The id of the loss scenario (the bench impairs the lab before it).
pub const LOSS_ID: u8 = 5;

/// One benchmark scenario: every port of `ports` on every address from `first` to `last`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// 1, 2 or 3: the number used in the brief and the table.
    pub id: u8,
    /// Short name for the table, e.g. `16x65535`.
    pub short: &'static str,
    /// What it is, in words.
    pub title: &'static str,
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub ports: RangeInclusive<u16>,
}

impl Scenario {
    /// Scenario `id`: `first..=last` x `ports`.
    fn new(
        id: u8,
        (short, title): (&'static str, &'static str),
        (first, last): ([u8; 4], [u8; 4]),
        ports: RangeInclusive<u16>,
    ) -> Scenario {
        Scenario {
            id,
            short,
            title,
            first: first.into(),
            last: last.into(),
            ports,
        }
    }

    /// The three scenarios; `quick` keeps only the first.
    pub fn all(quick: bool) -> Vec<Scenario> {
        let mut all = vec![
            Self::new(
                1,
                (
                    "1x65535",
                    "one host x 65,535 ports (198.18.0.2, ports 1-65535)",
                ),
                ([198, 18, 0, 2], [198, 18, 0, 2]),
                1..=65535,
            ),
            Self::new(
                2,
                (
                    "16x65535",
                    "16 hosts x 65,535 ports (198.19.0.1-198.19.0.16, ports 1-65535)",
                ),
                ([198, 19, 0, 1], [198, 19, 0, 16]),
                1..=65535,
            ),
            Self::new(
                3,
                (
                    "65536x1",
                    "65,536 hosts x one port (198.19.0.0/16, port 80)",
                ),
                ([198, 19, 0, 0], [198, 19, 255, 255]),
                80..=80,
            ),
        ];
        if quick {
            all.truncate(1);
        }
        all
    }

    /// The scenarios of a bench run: [`Self::all`], plus the 256-host one (`big`) and the
    /// loss one (`loss`, scenario 1 again, run last with the lab impaired).
    pub fn select(quick: bool, big: bool, loss: bool) -> Vec<Scenario> {
        let mut s = Self::all(quick);
        if big {
            s.push(Self::new(
                4,
                (
                    "256x65535",
                    "256 hosts x 65,535 ports (198.19.0.1-198.19.1.0, ports 1-65535)",
                ),
                ([198, 19, 0, 1], [198, 19, 1, 0]),
                1..=65535,
            ));
        }
        if loss {
            s.push(Scenario {
                id: LOSS_ID,
                short: "1x65535+loss",
                title: "scenario 1 through random loss in both directions (--loss)",
                ..Self::all(true).remove(0)
            });
        }
        s
    }

    /// Many hosts on one port (scenario 3): measured against a ceiling of its own
    /// (`Ceiling::measure_sweep`).
    pub fn is_sweep(&self) -> bool {
        self.port_count() == 1 && self.hosts() > 1
    }

    pub fn hosts(&self) -> u64 {
        u64::from(u32::from(self.last) - u32::from(self.first)) + 1
    }

    pub fn port_count(&self) -> u64 {
        u64::from(self.ports.end() - self.ports.start()) + 1
    }

    /// Number of (address, port) pairs.
    pub fn pairs(&self) -> u64 {
        self.hosts() * self.port_count()
    }

    pub fn addrs(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }

    /// The dense index of `addr:port`, or `None` outside the scenario.
    fn index(&self, addr: IpAddr, port: u16) -> Option<usize> {
        let IpAddr::V4(a) = addr else { return None };
        let a = u32::from(a);
        if !(u32::from(self.first)..=u32::from(self.last)).contains(&a)
            || !self.ports.contains(&port)
        {
            return None;
        }
        let host = u64::from(a - u32::from(self.first));
        let port = u64::from(port - self.ports.start());
        usize::try_from(host * self.port_count() + port).ok()
    }

    /// The targets as one address, one CIDR block, or a `first-last` range (Portscope and
    /// masscan take all three).
    pub fn range_spec(&self) -> String {
        let cidrs = self.cidrs();
        if self.first == self.last {
            self.first.to_string()
        } else if let [one] = &cidrs[..] {
            one.clone()
        } else {
            format!("{}-{}", self.first, self.last)
        }
    }

    /// The targets as the fewest CIDR blocks (zmap takes nothing else).
    pub fn cidrs(&self) -> Vec<String> {
        let (mut lo, hi) = (
            u64::from(u32::from(self.first)),
            u64::from(u32::from(self.last)),
        );
        let mut out = Vec::new();
        while lo <= hi {
            // The largest block aligned at `lo` that does not run past `hi`.
            let mut size = if lo == 0 {
                1 << 32
            } else {
                1u64 << lo.trailing_zeros()
            };
            while lo + size - 1 > hi {
                size >>= 1;
            }
            let len = 32 - size.trailing_zeros();
            let addr = Ipv4Addr::from(u32::try_from(lo).expect("within the v4 space"));
            out.push(format!("{addr}/{len}"));
            lo += size;
        }
        out
    }

    /// The targets in nmap's syntax: one address, a CIDR block, or an octet range within one
    /// /24.
    pub fn nmap_targets(&self) -> Vec<String> {
        if self.first == self.last {
            return vec![self.first.to_string()];
        }
        let cidrs = self.cidrs();
        let [f0, f1, f2, f3] = self.first.octets();
        let [l0, l1, l2, l3] = self.last.octets();
        if cidrs.len() > 1 && (f0, f1, f2) == (l0, l1, l2) {
            vec![format!("{f0}.{f1}.{f2}.{f3}-{l3}")]
        } else {
            cidrs
        }
    }

    /// The ports as `lo-hi` or one port.
    pub fn port_spec(&self) -> String {
        if self.ports.start() == self.ports.end() {
            self.ports.start().to_string()
        } else {
            format!("{}-{}", self.ports.start(), self.ports.end())
        }
    }
}

/// A port state as a scanner reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Not reported at all.
    Missing = 0,
    Open = 1,
    Closed = 2,
    Filtered = 3,
    /// A state the truth never has, e.g. nmap's `open|filtered`.
    Other = 4,
}

impl State {
    fn from_u8(b: u8) -> State {
        match b {
            1 => State::Open,
            2 => State::Closed,
            3 => State::Filtered,
            4 => State::Other,
            _ => State::Missing,
        }
    }

    /// `open`, `closed`, `filtered`; anything else is `Other`.
    pub fn from_word(word: &str) -> State {
        match word {
            "open" => State::Open,
            "closed" => State::Closed,
            "filtered" => State::Filtered,
            _ => State::Other,
        }
    }

    fn expected(e: Expected) -> State {
        match e {
            Expected::Open => State::Open,
            Expected::Closed => State::Closed,
            Expected::FilteredSilent | Expected::FilteredIcmp => State::Filtered,
        }
    }
}

/// What a scanner said about every pair of a scenario: one byte per pair.
#[derive(Debug, Clone)]
pub struct Answer {
    scenario: Scenario,
    states: Vec<u8>,
    /// Pairs reported open that are not in the scenario at all (each one a false open).
    open_outside: u64,
}

impl Answer {
    pub fn new(scenario: &Scenario) -> Answer {
        let pairs = usize::try_from(scenario.pairs()).expect("fits in memory");
        Answer {
            scenario: scenario.clone(),
            states: vec![State::Missing as u8; pairs],
            open_outside: 0,
        }
    }

    /// Record `state` for `addr:port`; a later report of the same pair wins.
    pub fn set(&mut self, addr: IpAddr, port: u16, state: State) {
        match self.scenario.index(addr, port) {
            Some(i) => self.states[i] = state as u8,
            None if state == State::Open => self.open_outside += 1,
            None => {}
        }
    }

    /// Record `state` for every port of `addr` in the scenario.
    pub fn set_host(&mut self, addr: IpAddr, state: State) {
        for port in self.scenario.ports.clone() {
            self.set(addr, port, state);
        }
    }

    pub fn get(&self, addr: IpAddr, port: u16) -> State {
        self.scenario
            .index(addr, port)
            .map_or(State::Missing, |i| State::from_u8(self.states[i]))
    }

    /// Judge the answer against `truth`; `three_state` = the tool reports closed and
    /// filtered ports too (otherwise only the open columns mean anything).
    pub fn score(&self, truth: &Truth, three_state: bool) -> Score {
        let mut s = Score {
            pairs: self.scenario.pairs(),
            open_expected: 0,
            open_found: 0,
            false_open: self.open_outside,
            exact: three_state.then_some(0),
        };
        let ports = self.scenario.ports.clone();
        for addr in self.scenario.addrs() {
            let addr = IpAddr::V4(addr);
            for port in ports.clone() {
                // An address the lab does not have stays silent.
                let want = State::expected(
                    truth
                        .expected(addr, port)
                        .unwrap_or(Expected::FilteredSilent),
                );
                let got = self.get(addr, port);
                match (want, got) {
                    (State::Open, State::Open) => {
                        s.open_expected += 1;
                        s.open_found += 1;
                    }
                    (State::Open, _) => s.open_expected += 1,
                    (_, State::Open) => s.false_open += 1,
                    _ => {}
                }
                if let Some(exact) = s.exact.as_mut() {
                    *exact += u64::from(want == got);
                }
            }
        }
        s
    }
}

/// How right an answer was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Score {
    pub pairs: u64,
    pub open_expected: u64,
    /// Pairs reported open that are open.
    pub open_found: u64,
    /// Pairs reported open that are not (closed, filtered, or not scanned at all).
    pub false_open: u64,
    /// Pairs whose state (open, closed, filtered) was reported exactly right; `None` for
    /// tools that report open ports only.
    pub exact: Option<u64>,
}

impl Score {
    /// `exact` as a percentage of all pairs.
    pub fn exact_pct(&self) -> Option<f64> {
        self.exact
            .map(|e| 100.0 * e as f64 / self.pairs.max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(id: u8) -> Scenario {
        Scenario::all(false).remove(usize::from(id - 1))
    }

    #[test]
    fn target_syntax() {
        let (s1, s2, s3) = (scenario(1), scenario(2), scenario(3));
        assert_eq!(s1.range_spec(), "198.18.0.2");
        assert_eq!(s1.cidrs(), ["198.18.0.2/32"]);
        assert_eq!(s1.nmap_targets(), ["198.18.0.2"]);
        assert_eq!(s2.range_spec(), "198.19.0.1-198.19.0.16");
        assert_eq!(
            s2.cidrs(),
            [
                "198.19.0.1/32",
                "198.19.0.2/31",
                "198.19.0.4/30",
                "198.19.0.8/29",
                "198.19.0.16/32"
            ]
        );
        assert_eq!(s2.nmap_targets(), ["198.19.0.1-16"]);
        assert_eq!(s3.cidrs(), ["198.19.0.0/16"]);
        assert_eq!(s3.range_spec(), "198.19.0.0/16");
        assert_eq!(s3.nmap_targets(), ["198.19.0.0/16"]);
        assert_eq!(
            (s1.port_spec(), s3.port_spec()),
            ("1-65535".into(), "80".into())
        );
        assert_eq!(
            (s1.pairs(), s2.pairs(), s3.pairs()),
            (65535, 16 * 65535, 65536)
        );
        assert_eq!(Scenario::all(true), vec![s1]);
    }

    #[test]
    fn three_state_score_counts_every_pair() {
        let s = scenario(1);
        let truth = Truth::compute("x", 2);
        let host = truth.host(IpAddr::V4(s.first)).unwrap().clone();
        let mut a = Answer::new(&s);
        a.set_host(host.addr, State::Closed);
        for &p in &host.open {
            a.set(host.addr, p, State::Open);
        }
        for &p in host.filtered_silent.iter().chain(&host.filtered_icmp) {
            a.set(host.addr, p, State::Filtered);
        }
        let perfect = a.score(&truth, true);
        assert_eq!(perfect.exact, Some(65535));
        assert_eq!((perfect.open_found, perfect.open_expected), (13, 13));
        assert_eq!(perfect.false_open, 0);
        assert_eq!(perfect.exact_pct(), Some(100.0));

        // One open port missed, one closed port called open, one pair outside the scenario.
        a.set(host.addr, 22, State::Missing);
        a.set(host.addr, 1000, State::Open);
        a.set("198.18.0.3".parse().unwrap(), 22, State::Open);
        a.set(host.addr, 135, State::Other);
        let s2 = a.score(&truth, true);
        assert_eq!((s2.open_found, s2.false_open), (12, 2));
        assert_eq!(s2.exact, Some(65535 - 3));
        assert_eq!(a.score(&truth, false).exact, None);
    }

    #[test]
    fn wide_truth_makes_every_address_open_on_80() {
        let s = scenario(3);
        let truth = Truth::compute("x", 16).with_wide(true);
        let mut a = Answer::new(&s);
        for addr in s.addrs().take(1000) {
            a.set(IpAddr::V4(addr), 80, State::Open);
        }
        let score = a.score(&truth, false);
        assert_eq!((score.open_found, score.open_expected), (1000, 65536));
        assert_eq!(score.false_open, 0);
        // A narrow lab's unlisted addresses stay silent: their SYN-ACKs would be false.
        let narrow = a.score(&Truth::compute("x", 16), false);
        assert_eq!(narrow.open_expected, 16);
        assert_eq!(narrow.false_open, 1000 - 16);
    }
}
