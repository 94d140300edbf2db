//! Measuring one scanner run: wall time, CPU time, and the probes and replies counted on the wire at the target; and sampling counters while something runs (`sample_during`, the service benchmark's engine timeline). Knows nothing about any scanner.
//!
//! CPU time is `getrusage(RUSAGE_CHILDREN)` before and after reaping the child (through
//! `nix`'s safe wrapper; the workspace denies `unsafe`). The scanner is a direct child: `ip
//! netns exec` execs it, so the delta is the scanner's user and system time plus that of any
//! children it reaped. Nothing else is reaped in between: this thread is the only one that
//! waits, and the lab's listener, also a child, lives until the end. The kernel's softirq work
//! on the veth (much of the target's SYN/RST handling) is charged to whichever process is on
//! the CPU at the time, usually the scanner, so it lands in the scanner's system time.

use std::fs::File;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::resource::{getrusage, UsageWho};
use serde::Serialize;

use crate::lab::{nft, Lab};

/// How often the child is polled for exit: the resolution of the wall time.
const POLL: Duration = Duration::from_millis(1);

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Exited(ExitStatus),
    /// Killed (SIGKILL, to its PID only) when the timeout passed.
    TimedOut,
}

/// One run's cost.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// From just before spawn until the exit was seen (or the kill, on timeout).
    pub wall: Duration,
    /// User and system CPU time of the child and its reaped descendants.
    pub user: Duration,
    pub sys: Duration,
    pub end: End,
}

fn children_cpu() -> anyhow::Result<(Duration, Duration)> {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage(RUSAGE_CHILDREN)")?;
    let dur = |tv: nix::sys::time::TimeVal| {
        let micros = tv.tv_sec() * 1_000_000 + tv.tv_usec();
        Duration::from_micros(u64::try_from(micros).unwrap_or(0))
    };
    Ok((dur(usage.user_time()), dur(usage.system_time())))
}

/// Run `cmd` with stdout and stderr written to files, killing it after `timeout`.
pub fn run_timed(
    cmd: &mut Command,
    timeout: Duration,
    stdout: &Path,
    stderr: &Path,
) -> anyhow::Result<Measured> {
    let out = File::create(stdout).with_context(|| format!("creating {}", stdout.display()))?;
    let err = File::create(stderr).with_context(|| format!("creating {}", stderr.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let (user0, sys0) = children_cpu()?;
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let end = loop {
        if let Some(status) = child.try_wait()? {
            break End::Exited(status);
        }
        if start.elapsed() >= timeout {
            // `Child::kill` signals this PID only; `ip netns exec` exec'd the scanner, so it is
            // the scanner itself.
            child.kill().context("killing the timed-out scanner")?;
            child.wait()?;
            break End::TimedOut;
        }
        std::thread::sleep(POLL);
    };
    let wall = start.elapsed();
    let (user1, sys1) = children_cpu()?;
    Ok(Measured {
        wall,
        user: user1.saturating_sub(user0),
        sys: sys1.saturating_sub(sys0),
        end,
    })
}

/// Runs `work` while another thread calls `sample` every `every` with the time since the
/// start, until `work` returns: `work`'s result and the samples (`None`s left out).
pub fn sample_during<S: Send, T>(
    every: Duration,
    sample: impl Fn(Duration) -> Option<S> + Sync,
    work: impl FnOnce() -> T,
) -> (T, Vec<S>) {
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                out.extend(sample(t0.elapsed()));
                let next = Instant::now() + every;
                while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(every.min(Duration::from_millis(20)));
                }
            }
            out
        });
        let result = work();
        stop.store(true, Ordering::Relaxed);
        (result, sampler.join().unwrap_or_default())
    })
}

/// TCP packets counted by the target's kernel during one run (nftables counters in the target
/// namespace, ahead of the lab's own filter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Wire {
    /// Bare SYNs that reached the target: the probes actually delivered.
    pub syn_in: u64,
    /// SYN-ACKs the target sent (open ports answering).
    pub synack_out: u64,
    /// RSTs the target sent (closed ports answering).
    pub rst_out: u64,
}

/// Name of the benchmark's own nftables table in the target namespace (the lab's is `pslab`).
const TABLE: &str = "psbench";

const COUNTERS: [&str; 3] = ["syn_in", "synack_out", "rst_out"];

/// Add the counting table to the lab's target namespace. It goes away with the namespace.
pub fn install_wire_counters(lab: &Lab) -> anyhow::Result<()> {
    let script = format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tcounter syn_in {{}}\n\tcounter synack_out {{}}\n\tcounter rst_out {{}}\n\
         \tchain wire_in {{\n\t\ttype filter hook input priority filter - 20; policy accept;\n\
         \t\ttcp flags & (syn | ack | rst) == syn counter name \"syn_in\"\n\t}}\n\
         \tchain wire_out {{\n\t\ttype filter hook output priority filter - 20; policy accept;\n\
         \t\ttcp flags & (syn | ack) == (syn | ack) counter name \"synack_out\"\n\
         \t\ttcp flags & rst == rst counter name \"rst_out\"\n\t}}\n}}\n"
    );
    nft::apply(lab.target_ns(), &script)
}

/// Read the counters and zero them in one step (`nft reset` prints the values it resets).
pub fn take_wire(lab: &Lab) -> anyhow::Result<Wire> {
    let out = nft::query(
        lab.target_ns(),
        &["reset", "counters", "table", "inet", TABLE],
    )?;
    parse_counters(&out)
}

/// Parse `nft list counters` text: `counter NAME {` followed by `packets N bytes M`.
fn parse_counters(text: &str) -> anyhow::Result<Wire> {
    let mut values = [None; 3];
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix("counter ")
            .and_then(|r| r.strip_suffix('{'))
        {
            current = COUNTERS.iter().position(|c| *c == name.trim());
        } else if let (Some(i), Some(rest)) = (current, line.strip_prefix("packets ")) {
            values[i] = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            current = None;
        }
    }
    match values {
        [Some(syn_in), Some(synack_out), Some(rst_out)] => Ok(Wire {
            syn_in,
            synack_out,
            rst_out,
        }),
        _ => bail!("nft printed no counters {COUNTERS:?}: {text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse() {
        let text =
            "table inet psbench {\n\tcounter syn_in {\n\t\tpackets 65551 bytes 2622040\n\t}\n\
                    \tcounter synack_out {\n\t\tpackets 13 bytes 572\n\t}\n\
                    \tcounter rst_out {\n\t\tpackets 65509 bytes 2620360\n\t}\n}\n";
        assert_eq!(
            parse_counters(text).unwrap(),
            Wire {
                syn_in: 65551,
                synack_out: 13,
                rst_out: 65509
            }
        );
        assert!(parse_counters("table inet psbench {\n}\n").is_err());
    }

    #[test]
    fn samples_are_taken_until_the_work_ends() {
        let (got, samples) = sample_during(
            Duration::from_millis(10),
            |t| (t < Duration::from_secs(60)).then_some(t),
            || {
                std::thread::sleep(Duration::from_millis(200));
                7
            },
        );
        assert_eq!(got, 7);
        assert!(samples.len() >= 3, "{samples:?}");
        assert!(samples.windows(2).all(|w| w[0] < w[1]), "{samples:?}");
        assert!(*samples.last().unwrap() < Duration::from_secs(5));
    }

    #[test]
    fn timed_run_measures_and_times_out() {
        let dir = std::env::temp_dir().join(format!("xtask-measure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (out, err) = (dir.join("out"), dir.join("err"));
        let m = run_timed(
            Command::new("sh").args([
                "-c",
                "echo hi; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
            ]),
            Duration::from_secs(20),
            &out,
            &err,
        )
        .unwrap();
        assert!(matches!(m.end, End::Exited(s) if s.success()), "{m:?}");
        assert!(m.user + m.sys > Duration::ZERO, "{m:?}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hi\n");

        let m = run_timed(
            Command::new("sleep").arg("10"),
            Duration::from_millis(100),
            &out,
            &err,
        )
        .unwrap();
        assert_eq!(m.end, End::TimedOut);
        assert!(m.wall < Duration::from_secs(5), "{m:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
