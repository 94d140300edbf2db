//! `cargo xtask lab ...`: the command line over `Lab` (clap), no lab logic of its own.

use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};

use super::{list_labs, nft, probe, serve, truth, Lab, LabConfig};

/// `cargo xtask lab`: the network lab.
#[derive(Debug, Parser)]
#[command(
    arg_required_else_help = true,
    after_help = "The default name is pslab. State lives in /run/portscope-lab/<name>/."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The lab's name (`--name`).
#[derive(Debug, clap::Args)]
struct Name {
    /// The lab's name.
    #[arg(long, value_name = "N", default_value_t = LabConfig::default().name)]
    name: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the lab (tearing down a lab of the same name first).
    Up(Up),
    /// Kill the listener, delete the namespaces and the state directory.
    Down {
        #[command(flatten)]
        lab: Name,
        /// Every lab with state.
        #[arg(long, conflicts_with = "name")]
        all: bool,
    },
    /// Namespaces, addresses, routes, listener, impairments, truth summary.
    Status {
        #[command(flatten)]
        lab: Name,
    },
    /// Replace the impairments (omitted = none).
    Impair {
        #[command(flatten)]
        lab: Name,
        #[command(flatten)]
        impair: Impairments,
    },
    /// Run CMD in scanner namespace K (default 1) or the target's, exit with its code.
    Exec {
        #[command(flatten)]
        lab: Name,
        /// In the target namespace.
        #[arg(long, conflicts_with = "scanner")]
        target: bool,
        /// In scanner namespace K.
        #[arg(long, value_name = "K")]
        scanner: Option<u32>,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// The listener inside the target namespace (started by `lab up`).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        truth: PathBuf,
    },
    /// Connect to each ADDR:PORT from this namespace and print the outcomes (`Lab::probe_from`).
    #[command(hide = true)]
    Probe {
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
        addrs: Vec<SocketAddr>,
    },
}

/// The impairments `lab up` starts with and `lab impair` replaces.
#[derive(Debug, clap::Args)]
struct Impairments {
    /// Random loss in percent, each way.
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    loss: f64,
    /// At most N RSTs a second leave the target.
    #[arg(long, value_name = "N")]
    rst_limit: Option<u32>,
    /// Burst room of the RST limit, in packets.
    #[arg(long, value_name = "N", default_value_t = nft::DEFAULT_RST_BURST)]
    rst_burst: u32,
    /// At most N ICMP unreachables a second leave the target.
    #[arg(long, value_name = "N")]
    icmp_limit: Option<u32>,
}

/// `lab up`'s options.
#[derive(Debug, clap::Args)]
struct Up {
    #[command(flatten)]
    lab: Name,
    /// Extra target hosts.
    #[arg(long, value_name = "N", default_value_t = LabConfig::default().hosts)]
    hosts: u32,
    #[command(flatten)]
    impair: Impairments,
    /// NIC offloads of the veths.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    offloads: OnOff,
    /// Every address of 198.19.0.0/16 answers (port 80 open), not only the extra hosts.
    #[arg(long)]
    wide: bool,
    /// N scanner namespaces (N-s, N-s2, ...), each with its own veth into the target and its
    /// own source addresses.
    #[arg(long, value_name = "N", default_value_t = LabConfig::default().scanners)]
    scanners: u32,
    /// Ports 40000-40999 of every host answer ICMP unreachable too.
    #[arg(long)]
    icmp_range: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// Run `lab <args>`; returns the process exit code.
pub fn run(args: &[String]) -> anyhow::Result<i32> {
    match crate::args::parse::<Cli>("lab", args).command {
        Command::Up(o) => up(o),
        Command::Down { lab, all } => down(lab.name, all),
        Command::Status { lab } => status(lab.name),
        Command::Impair { lab, impair: i } => impair(lab.name, i),
        Command::Exec {
            lab,
            target,
            scanner,
            command,
        } => exec(lab.name, target, scanner, &command),
        Command::Serve { truth } => {
            serve::run(&truth)?;
            Ok(0)
        }
        Command::Probe { timeout_ms, addrs } => probe_cmd(timeout_ms, &addrs),
    }
}

fn up(o: Up) -> anyhow::Result<i32> {
    let cfg = LabConfig {
        name: o.lab.name,
        hosts: o.hosts,
        loss_pct: o.impair.loss,
        rst_limit: o.impair.rst_limit,
        rst_burst: o.impair.rst_burst,
        icmp_limit: o.impair.icmp_limit,
        icmp_range: o.icmp_range,
        offloads: o.offloads == OnOff::On,
        wide: o.wide,
        scanners: o.scanners,
        ..LabConfig::default()
    };
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

fn down(name: String, all: bool) -> anyhow::Result<i32> {
    let names = if all { list_labs() } else { vec![name] };
    for name in names {
        Lab::try_down_by_name(&name)?;
        println!("lab {name} down");
    }
    Ok(0)
}

fn status(name: String) -> anyhow::Result<i32> {
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
    let rules = nft::query(
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

fn impair(name: String, i: Impairments) -> anyhow::Result<i32> {
    let Impairments {
        loss,
        rst_limit,
        rst_burst,
        icmp_limit,
    } = i;
    let lab = Lab::open(&name)?;
    lab.set_impairments_with_burst(loss, rst_limit, rst_burst)?;
    lab.set_icmp_limit(icmp_limit)?;
    let per_s = |l: Option<u32>| l.map_or("unlimited".to_owned(), |n| format!("{n}/s"));
    let rsts = match rst_limit {
        Some(n) if n > 0 => format!("{n}/s (burst {})", rst_burst.max(1)),
        other => per_s(other),
    };
    println!(
        "lab {name}: loss {loss}% each way, RSTs {rsts}, ICMP unreachables {}",
        per_s(icmp_limit)
    );
    Ok(0)
}

fn exec(
    name: String,
    target: bool,
    scanner: Option<u32>,
    command: &[String],
) -> anyhow::Result<i32> {
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

fn probe_cmd(timeout_ms: u64, addrs: &[SocketAddr]) -> anyhow::Result<i32> {
    let timeout = Duration::from_millis(timeout_ms);
    // Always exit 0: an `error` outcome is a result like the others.
    for &addr in addrs {
        println!("{}", probe::probe(addr, timeout).to_line());
    }
    Ok(0)
}
