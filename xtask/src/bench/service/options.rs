//! Options of `cargo xtask bench --service` (clap), and the check that they fit the lab.

use std::path::PathBuf;

use anyhow::bail;
use clap::builder::RangedU64ValueParser;

use crate::lab::truth;

/// `cargo xtask bench --service`: the service (engine daemon + API) under load in the lab.
#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(after_help = "Writes target/bench/service.json; logs in target/bench/service/.")]
pub(super) struct Options {
    /// Fast and deep scans from one host, N times each; the median is reported.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=20))]
    pub(super) repeats: usize,
    /// Deep scans started at once from N lab hosts.
    // Two sets of hosts plus the single-scan host fit in the lab's 1000.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=499))]
    pub(super) concurrent: u32,
    /// Extra addresses that only poll during the load phase.
    #[arg(long, value_name = "N", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(0..=996))]
    pub(super) pollers: u32,
    /// Repeat the concurrent burst with engine --max-running N.
    #[arg(long = "max-running-alt", value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(super) max_running_alt: u32,
    /// Skip that repeat and the engine-default-queue check.
    #[arg(long = "skip-extra")]
    pub(super) skip_extra: bool,
    /// Use portscope and portscope-api from DIR instead of building target/release.
    #[arg(long, value_name = "DIR")]
    pub(super) bins: Option<PathBuf>,
}

impl Options {
    /// Parses and checks `args` (tests; `run` lets clap print its errors and exit).
    #[cfg(test)]
    pub(super) fn parse(args: &[String]) -> anyhow::Result<Options> {
        let o: Options = crate::args::try_parse("bench --service", args)?;
        o.check()?;
        Ok(o)
    }

    /// Whether the hosts these options need fit in the lab.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.main_lab_hosts() > truth::MAX_EXTRA_HOSTS {
            bail!(
                "2 x --concurrent + --pollers + 2 lab hosts is more than the lab's {}",
                truth::MAX_EXTRA_HOSTS
            );
        }
        Ok(())
    }

    /// Extra hosts of the main lab: the burst, the single scan, the load phase's scans, the
    /// pollers (every client address must be a lab host: the lab drops packets to the
    /// others), and the webhook receiver.
    pub(super) fn main_lab_hosts(&self) -> u32 {
        2 * self.concurrent + self.pollers + 2
    }
}
