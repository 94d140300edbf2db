//! `cargo xtask bench`'s options: what the command line may say, checked by clap.

use std::time::Duration;

use super::tools::Tool;

/// What `cargo xtask bench --help` prints after the options.
const AFTER_HELP: &str = "\
The service (engine daemon + API) instead: cargo xtask bench --service [...] (see --service --help).

Scenarios: 1 = 198.18.0.2 x ports 1-65535; 2 = 198.19.0.1-16 x 1-65535; 3 = 198.19.0.0/16 x 80;
4 = 198.19.0.1-198.19.1.0 x 1-65535; 5 = scenario 1 with loss.
Every run also measures the lab's ceiling (ps-blast into the answering target and into a black
hole); each scanner's probes/s is reported as a fraction of it, with CPU-seconds per million probes.
Writes target/bench/results.json and the scanners' raw output to target/bench/raw/.";
/// Packets per second for Portscope, masscan and zmap unless `--rate` says otherwise.
pub(super) const RATE: u64 = 250_000;

/// `cargo xtask bench`: Portscope vs masscan, zmap and nmap on the same lab scenarios.
#[derive(Debug, Clone, PartialEq, clap::Parser)]
#[command(after_help = AFTER_HELP)]
pub(super) struct Options {
    /// Scenario 1 only (one host x 65,535 ports).
    #[arg(long)]
    pub(super) quick: bool,
    /// Run only these scanners, comma-separated (both nmap configurations for nmap):
    /// portscope, masscan, zmap, nmap.
    #[arg(long, value_name = "TOOL,...", value_parser = tool_family, value_delimiter = ',')]
    pub(super) only: Vec<String>,
    /// Run each scanner N times and report the run with the median wall time.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one)]
    pub(super) runs: usize,
    /// Kill an nmap run after S seconds and report a timeout.
    #[arg(long = "nmap-cap", value_name = "S", default_value = "300", value_parser = whole_seconds)]
    pub(super) nmap_cap: Duration,
    /// Add scenario 4: 256 hosts x 65,535 ports (16.8 M probes; minutes).
    #[arg(long)]
    pub(super) big: bool,
    /// Add scenario 5: scenario 1 through PCT% random loss in both directions.
    #[arg(long, value_name = "PCT", value_parser = loss_pct)]
    pub(super) loss: Option<f64>,
    /// Append ARG to Portscope's command line (repeatable), e.g. --rx-ring=off.
    #[arg(long = "portscope-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub(super) portscope_args: Vec<String>,
    /// Run this zmap instead of Debian's /usr/sbin/zmap (2.1, one port per run): a zmap 4
    /// built from source probes every scenario (see the README).
    #[arg(long, value_name = "PATH")]
    pub(super) zmap: Option<String>,
    /// Packets per second for Portscope, masscan and zmap. Set it above the same-run
    /// ceiling to see how close each gets to it unthrottled.
    #[arg(long, value_name = "PPS", default_value_t = RATE, value_parser = clap::value_parser!(u64).range(1..))]
    pub(super) rate: u64,
}

impl Options {
    /// Portscope's send threads in this run: `--send-threads N` among the extra arguments,
    /// else its default (two on two CPUs or more, `portscope_engine::default_send_threads`).
    pub(super) fn send_threads(&self, cpus: usize) -> usize {
        let args = &self.portscope_args;
        let named =
            args.iter()
                .enumerate()
                .find_map(|(i, a)| match a.strip_prefix("--send-threads") {
                    Some("") => args.get(i + 1).and_then(|n| n.parse().ok()),
                    Some(v) => v.strip_prefix('=').and_then(|n| n.parse().ok()),
                    None => None,
                });
        named.unwrap_or(cpus.clamp(1, 2))
    }
}

/// `--only`: a `Tool::family`.
fn tool_family(s: &str) -> Result<String, String> {
    if Tool::ALL.iter().any(|t| t.family() == s) {
        Ok(s.to_owned())
    } else {
        Err("takes portscope, masscan, zmap or nmap".into())
    }
}

/// `--runs`: a number of at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|&n| n >= 1)
        .ok_or_else(|| "takes a number of at least 1".into())
}

/// `--nmap-cap`: whole seconds, at least 1.
fn whole_seconds(s: &str) -> Result<Duration, String> {
    s.parse()
        .ok()
        .filter(|&n| n >= 1)
        .map(Duration::from_secs)
        .ok_or_else(|| "takes whole seconds, at least 1".into())
}

/// `--loss`: a percentage below 50.
fn loss_pct(s: &str) -> Result<f64, String> {
    s.parse()
        .ok()
        .filter(|p: &f64| (0.0..50.0).contains(p))
        .ok_or_else(|| "takes a percentage below 50".into())
}

impl Options {
    pub(super) fn parse(args: &[String]) -> Result<Options, clap::Error> {
        crate::args::try_parse("bench", args)
    }

    pub(super) fn tools(&self) -> impl Iterator<Item = Tool> + '_ {
        Tool::ALL
            .into_iter()
            .filter(|t| self.only.is_empty() || self.only.iter().any(|o| t.family() == o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_ceiling_sends_on_as_many_threads_as_portscope() {
        let threads = |a: &[&str], cpus| Options::parse(&args(a)).unwrap().send_threads(cpus);
        assert_eq!(threads(&[], 1), 1);
        assert_eq!(threads(&[], 2), 2);
        assert_eq!(threads(&[], 8), 2, "Portscope's default stops at two");
        assert_eq!(threads(&["--portscope-arg", "--send-threads=1"], 2), 1);
        let named = ["--portscope-arg", "--send-threads", "--portscope-arg", "3"];
        assert_eq!(threads(&named, 2), 3);
    }

    #[test]
    fn options() {
        let o = Options::parse(&[]).unwrap();
        assert_eq!(
            (o.quick, o.only.clone(), o.runs, o.rate),
            (false, Vec::new(), 1, RATE)
        );
        assert_eq!(o.tools().count(), 5);
        assert_eq!(
            Options::parse(&args(&["--rate", "1000000"])).unwrap().rate,
            1_000_000
        );
        let o = Options::parse(&args(&["--only", "portscope,zmap"])).unwrap();
        assert_eq!(o.tools().collect::<Vec<_>>(), [Tool::Portscope, Tool::Zmap]);
        let o = Options::parse(&args(&["--quick", "--only", "nmap", "--runs", "3"])).unwrap();
        assert!(o.quick);
        assert_eq!(o.runs, 3);
        assert_eq!(
            o.tools().collect::<Vec<_>>(),
            [Tool::Nmap, Tool::NmapMinRate]
        );
        let o = Options::parse(&args(&["--portscope-arg", "--rx-ring=off"])).unwrap();
        assert_eq!(o.portscope_args, ["--rx-ring=off"]);
        assert_eq!(o.zmap, None);
        let o = Options::parse(&args(&["--zmap", "/opt/zmap/src/zmap"])).unwrap();
        assert_eq!(o.zmap.as_deref(), Some("/opt/zmap/src/zmap"));
        for bad in [
            &["--only", "unicornscan"][..],
            &["--only", "portscope,nmapp"],
            &["--runs", "0"],
            &["--runs"],
            &["--fast"],
            &["--nmap-cap", "x"],
            &["--rate", "0"],
            &["--rate", "fast"],
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
