//! `cargo xtask lab ...`: the command line over `Lab`. Hand-parsed flags, no lab logic of its own.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{list_labs, probe, serve, truth, Lab, LabConfig};

const USAGE: &str = "\
usage: cargo xtask lab <command>

  up      [--name N] [--hosts N] [--loss PCT] [--rst-limit N] [--offloads on|off] [--wide]
          [--scanners N] [--icmp-range] [--icmp-limit N]
          build the lab (tearing down a lab of the same name first); --wide makes every
          address of 198.19.0.0/16 answer (port 80 open), not only the extra hosts;
          --icmp-range makes ports 40000-40999 of every host answer ICMP unreachable too;
          --icmp-limit N lets at most N ICMP unreachables a second leave the target;
          --scanners N gives N scanner namespaces (N-s, N-s2, ...), each with its own veth
          into the target and its own source addresses
  down    [--name N | --all]
          kill the listener, delete the namespaces and the state directory
  status  [--name N]
          namespaces, addresses, routes, listener, impairments, truth summary
  impair  [--name N] [--loss PCT] [--rst-limit N] [--icmp-limit N]
          replace the impairments (omitted = none)
  exec    [--name N] [--target | --scanner K] -- CMD ARGS...
          run CMD in scanner namespace K (default 1) or the target's, exit with its code

The default name is pslab. State lives in /run/portscope-lab/<name>/.";

/// Run `lab <args>`; returns the process exit code.
pub fn run(args: &[String]) -> anyhow::Result<i32> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(2);
    };
    let mut args = Args(rest.to_vec());
    match command.as_str() {
        "up" => up(args),
        "down" => down(args),
        "status" => status(args),
        "impair" => impair(args),
        "exec" => exec(rest),
        "serve" => {
            let truth = args
                .value("--truth")?
                .context("lab serve needs --truth FILE")?;
            args.finish()?;
            serve::run(&PathBuf::from(truth))?;
            Ok(0)
        }
        "probe" => probe_cmd(args),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(0)
        }
        other => bail!("unknown lab command {other:?}\n\n{USAGE}"),
    }
}

/// Flags left to parse.
struct Args(Vec<String>);

impl Args {
    /// Remove `flag VALUE` or `flag=VALUE`.
    fn value(&mut self, flag: &str) -> anyhow::Result<Option<String>> {
        let prefix = format!("{flag}=");
        if let Some(i) = self.0.iter().position(|a| a.starts_with(&prefix)) {
            return Ok(Some(self.0.remove(i)[prefix.len()..].to_owned()));
        }
        let Some(i) = self.0.iter().position(|a| a == flag) else {
            return Ok(None);
        };
        if i + 1 >= self.0.len() {
            bail!("{flag} needs a value");
        }
        self.0.remove(i);
        Ok(Some(self.0.remove(i)))
    }

    fn parsed<T: std::str::FromStr>(&mut self, flag: &str) -> anyhow::Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.value(flag)? {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{flag} {v:?}: {e}")),
        }
    }

    fn switch(&mut self, flag: &str) -> bool {
        let found = self.0.iter().position(|a| a == flag);
        found.map(|i| self.0.remove(i)).is_some()
    }

    fn name(&mut self) -> anyhow::Result<String> {
        Ok(self
            .value("--name")?
            .unwrap_or_else(|| LabConfig::default().name))
    }

    fn finish(self) -> anyhow::Result<()> {
        if !self.0.is_empty() {
            bail!("unexpected arguments {:?}\n\n{USAGE}", self.0);
        }
        Ok(())
    }
}

fn up(mut args: Args) -> anyhow::Result<i32> {
    let mut cfg = LabConfig {
        name: args.name()?,
        ..LabConfig::default()
    };
    cfg.hosts = args.parsed("--hosts")?.unwrap_or(cfg.hosts);
    cfg.loss_pct = args.parsed("--loss")?.unwrap_or(cfg.loss_pct);
    cfg.rst_limit = args.parsed("--rst-limit")?;
    cfg.icmp_limit = args.parsed("--icmp-limit")?;
    cfg.icmp_range = args.switch("--icmp-range");
    cfg.offloads = match args.value("--offloads")?.as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => bail!("--offloads takes on or off, not {other:?}"),
    };
    cfg.wide = args.switch("--wide");
    cfg.scanners = args.parsed("--scanners")?.unwrap_or(cfg.scanners);
    args.finish()?;
    let start = Instant::now();
    let lab = Lab::up(&cfg)?;
    let took = start.elapsed();
    let truth = lab.truth();
    println!(
        "lab {} up in {:.2} s: scanner {} ({}, {}, {}), target {} ({}, {} hosts), listener pid {}",
        lab.name(),
        took.as_secs_f64(),
        lab.scanner_ns(),
        lab.scanner_if(),
        truth.scanner_v4,
        truth.scanner_v6,
        lab.target_ns(),
        lab.target_if(),
        truth.hosts.len(),
        lab.listener_pid().map_or("?".into(), |p| p.to_string()),
    );
    for sc in &lab.scanners()[1..] {
        println!(
            "scanner {}: {} ({}, {}, {}) via {} in {}",
            sc.number,
            sc.ns,
            sc.iface,
            sc.v4,
            sc.v6,
            sc.peer_iface,
            lab.target_ns()
        );
    }
    println!("truth: {}", lab.state_dir().join("truth.json").display());
    Ok(0)
}

fn down(mut args: Args) -> anyhow::Result<i32> {
    let names = if args.switch("--all") {
        list_labs()
    } else {
        vec![args.name()?]
    };
    args.finish()?;
    for name in names {
        Lab::try_down_by_name(&name)?;
        println!("lab {name} down");
    }
    Ok(0)
}

fn status(mut args: Args) -> anyhow::Result<i32> {
    let name = args.name()?;
    args.finish()?;
    let lab = match Lab::open(&name) {
        Ok(lab) => lab,
        Err(e) => {
            println!("lab {name} is not up: {e:#}");
            let others = list_labs();
            if !others.is_empty() {
                println!("labs with state: {}", others.join(", "));
            }
            return Ok(1);
        }
    };
    println!("lab {name}: state {}", lab.state_dir().display());
    let mut namespaces: Vec<(String, &str)> = lab
        .scanners()
        .iter()
        .map(|sc| (format!("scanner {}", sc.number), sc.ns.as_str()))
        .collect();
    namespaces.push(("target".into(), lab.target_ns()));
    for (role, ns) in namespaces {
        println!("\n{role} namespace {ns}");
        for (what, args) in [
            ("addresses", &["-br", "addr"][..]),
            ("routes v4", &["-4", "route", "show", "table", "all"]),
            ("routes v6", &["-6", "route", "show", "table", "all"]),
        ] {
            println!("  {what}:");
            let mut cmd = std::process::Command::new("ip");
            cmd.args(["-n", ns]).args(args);
            for line in super::run(&mut cmd)?.lines() {
                println!("    {line}");
            }
        }
    }
    let defaults = lab.default_routes()?;
    if defaults.is_empty() {
        println!("\ndefault routes: none (good)");
    } else {
        println!("\ndefault routes: {defaults:?} (BAD: tear this lab down)");
    }
    match lab.listener_pid() {
        Some(pid) => println!("listener: pid {pid}, alive"),
        None => println!("listener: NOT running"),
    }
    let rules = super::nft::query(
        lab.target_ns(),
        &["list", "table", "inet", super::nft::TABLE],
    )?;
    let impair: Vec<&str> = rules
        .lines()
        .map(str::trim)
        .filter(|l| {
            l.contains("numgen")
                || l.contains("tcp flags rst")
                || l.contains("type destination-unreachable")
        })
        .collect();
    println!(
        "impairments: {}",
        if impair.is_empty() {
            "none".to_owned()
        } else {
            impair.join("; ")
        }
    );

    let truth = lab.truth();
    println!(
        "\ntruth: {} hosts ({})",
        truth.hosts.len(),
        if truth.wide {
            "wide: every unlisted address of 198.19.0.0/16 has the base ports open, the rest closed"
        } else {
            "an unlisted address in the extra ranges does not answer"
        }
    );
    println!(
        "  {:<18} {:>5} {:>7} {:>5} {:>7}",
        "host", "open", "silent", "icmp", "closed"
    );
    for h in &truth.hosts {
        println!(
            "  {:<18} {:>5} {:>7} {:>5} {:>7}",
            h.addr.to_string(),
            h.open.len(),
            h.filtered_silent.len(),
            h.filtered_icmp.len(),
            h.closed_count()
        );
    }
    println!(
        "  every host: open {:?}, silent {:?}, icmp {:?}; extra host k: open {}+k, silent {}+k",
        truth::BASE_OPEN,
        truth::BASE_FILTERED_SILENT,
        truth::BASE_FILTERED_ICMP,
        truth::PER_HOST_OPEN_BASE,
        truth::PER_HOST_SILENT_BASE
    );
    Ok(0)
}

fn impair(mut args: Args) -> anyhow::Result<i32> {
    let name = args.name()?;
    let loss = args.parsed("--loss")?.unwrap_or(0.0);
    let rst_limit = args.parsed("--rst-limit")?;
    let icmp_limit: Option<u32> = args.parsed("--icmp-limit")?;
    args.finish()?;
    let lab = Lab::open(&name)?;
    lab.set_impairments(loss, rst_limit)?;
    lab.set_icmp_limit(icmp_limit)?;
    let per_s = |l: Option<u32>| l.map_or("unlimited".to_owned(), |n| format!("{n}/s"));
    println!(
        "lab {name}: loss {loss}% each way, RSTs {}, ICMP unreachables {}",
        per_s(rst_limit),
        per_s(icmp_limit)
    );
    Ok(0)
}

fn exec(rest: &[String]) -> anyhow::Result<i32> {
    let Some(split) = rest.iter().position(|a| a == "--") else {
        bail!("usage: cargo xtask lab exec [--name N] [--target | --scanner K] -- CMD ARGS...");
    };
    let (flags, command) = (&rest[..split], &rest[split + 1..]);
    let mut args = Args(flags.to_vec());
    let name = args.name()?;
    let target = args.switch("--target");
    let scanner: Option<u32> = args.parsed("--scanner")?;
    args.finish()?;
    let Some((program, program_args)) = command.split_first() else {
        bail!("lab exec: no command after --");
    };
    let lab = Lab::open(&name)?;
    let mut cmd = match (target, scanner) {
        (true, Some(_)) => bail!("lab exec: --target and --scanner exclude each other"),
        (true, None) => lab.target_cmd(program),
        (false, None) => lab.scanner_cmd(program),
        (false, Some(k)) => {
            let count = lab.scanners().len();
            if k == 0 || k as usize > count {
                bail!("lab {name} has scanners 1 to {count}, not {k}");
            }
            lab.scanner(k).cmd(program)
        }
    };
    let status = cmd
        .args(program_args)
        .status()
        .context("running ip netns exec")?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

fn probe_cmd(mut args: Args) -> anyhow::Result<i32> {
    let timeout = Duration::from_millis(args.parsed("--timeout-ms")?.unwrap_or(1000));
    let addrs: Vec<SocketAddr> = args
        .0
        .iter()
        .map(|a| a.parse().with_context(|| format!("{a:?} is not ADDR:PORT")))
        .collect::<anyhow::Result<_>>()?;
    // Always exit 0: an `error` outcome is a result like the others.
    for addr in addrs {
        println!("{}", probe::probe(addr, timeout).to_line());
    }
    Ok(0)
}
