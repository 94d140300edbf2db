//! Options of `cargo xtask bench --service`: the usage text and the flag parser.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::lab::truth;

pub(super) const USAGE: &str = "\
usage: cargo xtask bench --service [--repeats N] [--concurrent N] [--pollers N]
                                   [--max-running-alt N] [--skip-extra] [--bins DIR]

  --repeats N          fast and deep scans from one host, N times each; the median is reported (default 3)
  --concurrent N       deep scans started at once from N lab hosts (default 100)
  --pollers N          extra addresses that only poll during the load phase (default 200)
  --max-running-alt N  repeat the concurrent burst with engine --max-running N (default 32)
  --skip-extra         skip that repeat and the engine-default-queue check
  --bins DIR           use portscope and portscope-api from DIR instead of building target/release

Writes target/bench/service.json; logs in target/bench/service/.";

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Options {
    pub(super) repeats: usize,
    pub(super) concurrent: u32,
    pub(super) pollers: u32,
    pub(super) max_running_alt: u32,
    pub(super) skip_extra: bool,
    pub(super) bins: Option<PathBuf>,
}

impl Options {
    pub(super) fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut o = Options {
            repeats: 3,
            concurrent: 100,
            pollers: 200,
            max_running_alt: 32,
            skip_extra: false,
            bins: None,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut num = |flag: &str, lo: u64, hi: u64| -> anyhow::Result<u64> {
                it.next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|n| (lo..=hi).contains(n))
                    .with_context(|| format!("{flag} takes a number from {lo} to {hi}\n\n{USAGE}"))
            };
            match arg.as_str() {
                "--repeats" => o.repeats = num("--repeats", 1, 20)? as usize,
                // Two sets of hosts plus the single-scan host fit in the lab's 1000.
                "--concurrent" => o.concurrent = num("--concurrent", 1, 499)? as u32,
                "--pollers" => o.pollers = num("--pollers", 0, 996)? as u32,
                "--max-running-alt" => o.max_running_alt = num("--max-running-alt", 1, 64)? as u32,
                "--skip-extra" => o.skip_extra = true,
                "--bins" => {
                    o.bins = Some(
                        it.next()
                            .map(PathBuf::from)
                            .with_context(|| format!("--bins needs a directory\n\n{USAGE}"))?,
                    );
                }
                other => bail!("unknown bench --service flag {other:?}\n\n{USAGE}"),
            }
        }
        if o.main_lab_hosts() > truth::MAX_EXTRA_HOSTS {
            bail!(
                "2 x --concurrent + --pollers + 2 lab hosts is more than the lab's {}",
                truth::MAX_EXTRA_HOSTS
            );
        }
        Ok(o)
    }

    /// Extra hosts of the main lab: the burst, the single scan, the load phase's scans, the
    /// pollers (every client address must be a lab host: the lab drops packets to the
    /// others), and the webhook receiver.
    pub(super) fn main_lab_hosts(&self) -> u32 {
        2 * self.concurrent + self.pollers + 2
    }
}
