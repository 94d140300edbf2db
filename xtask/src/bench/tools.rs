//! The scanners under test: the command line each one gets per scenario (what they wrote is
//! read back by `parse`). Builds command lines; runs nothing.
//!
//! Every command is meant for `Lab::scanner_cmd`, inside the lab's scanner namespace. File
//! names are relative: the benchmark runs each scanner in its raw-output directory.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::scenario::Scenario;
use super::zmap::Zmap;

/// A scanner configuration under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    Portscope,
    Masscan,
    Zmap,
    /// `nmap -sS -Pn -n -T5`.
    Nmap,
    /// The same plus `--min-rate 100000 --max-retries 2`.
    NmapMinRate,
}

impl Tool {
    pub const ALL: [Tool; 5] = [
        Tool::Portscope,
        Tool::Masscan,
        Tool::Zmap,
        Tool::Nmap,
        Tool::NmapMinRate,
    ];

    /// The name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Tool::Portscope => "portscope",
            Tool::Masscan => "masscan",
            Tool::Zmap => "zmap",
            Tool::Nmap => "nmap -T5",
            Tool::NmapMinRate => "nmap -T5 min-rate",
        }
    }

    /// The name `--only` takes (both nmap rows are `nmap`).
    pub fn family(self) -> &'static str {
        match self {
            Tool::Portscope => "portscope",
            Tool::Masscan => "masscan",
            Tool::Zmap => "zmap",
            Tool::Nmap | Tool::NmapMinRate => "nmap",
        }
    }

    /// The peer's binary (Debian packages, or the zmap `--zmap` names); Portscope's comes
    /// from the build.
    pub fn peer_binary(self, env: &Env) -> Option<&str> {
        match self {
            Tool::Portscope => None,
            Tool::Masscan => Some("/usr/bin/masscan"),
            Tool::Zmap => Some(&env.zmap.program),
            Tool::Nmap | Tool::NmapMinRate => Some("/usr/bin/nmap"),
        }
    }

    /// Whether the tool reports closed and filtered ports as well as open ones.
    pub fn three_state(self) -> bool {
        matches!(self, Tool::Portscope | Tool::Nmap | Tool::NmapMinRate)
    }

    /// Why the tool sits out `scenario`, if it does: a zmap before 4.0 (Debian's 2.1) probes
    /// one port per run.
    pub fn skip_reason(self, scenario: &Scenario, env: &Env) -> Option<String> {
        (self == Tool::Zmap && !env.zmap.multiport() && scenario.port_count() > 1).then(|| {
            format!(
                "{} probes one port per run: this scenario would take {} runs \
                 (zmap 4 does it in one: build it from source and pass --zmap PATH)",
                env.zmap.describe(),
                scenario.port_count()
            )
        })
    }

    /// How long a run may take before it is killed. masscan gets room for its exit hang;
    /// big scenarios get a second per 50,000 pairs (a fifth of the bench rate) at least.
    pub fn timeout(self, nmap_cap: Duration, scenario: &Scenario) -> Duration {
        let floor = Duration::from_secs(scenario.pairs() / 50_000);
        match self {
            Tool::Portscope | Tool::Zmap => Duration::from_secs(60).max(floor),
            Tool::Masscan => Duration::from_secs(120).max(floor),
            Tool::Nmap | Tool::NmapMinRate => nmap_cap,
        }
    }
}

/// What every command needs to know about the lab and the run.
#[derive(Debug, Clone)]
pub struct Env {
    /// The release `portscope` binary.
    pub portscope: PathBuf,
    /// Packets per second for Portscope, masscan and zmap.
    pub rate: u64,
    /// The scanner's veth, inside the scanner namespace.
    pub iface: String,
    pub scanner_ip: Ipv4Addr,
    /// MAC of the target's end of the veth: the next hop of every lab address.
    pub router_mac: String,
    /// The benchmark's blocklist for masscan and zmap, relative to the run directory.
    pub blocklist: String,
    /// Extra arguments appended to Portscope's command line.
    pub portscope_args: Vec<String>,
    /// The zmap of this run.
    pub zmap: Zmap,
}

/// Output file names of one run, relative to the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub stdout: String,
    pub stderr: String,
    /// The tool's result file (Portscope's results are its stdout).
    pub result: String,
}

impl Files {
    /// `s<scenario>-<tool>.*`.
    pub fn new(tool: Tool, scenario: &Scenario) -> Files {
        let stem = format!("s{}-{}", scenario.id, tool.label().replace(' ', ""));
        let result = match tool {
            Tool::Portscope => format!("{stem}.ndjson"),
            Tool::Masscan => format!("{stem}.list"),
            Tool::Zmap => format!("{stem}.csv"),
            Tool::Nmap | Tool::NmapMinRate => format!("{stem}.xml"),
        };
        Files {
            stdout: if tool == Tool::Portscope {
                result.clone()
            } else {
                format!("{stem}.out")
            },
            stderr: format!("{stem}.err"),
            result,
        }
    }
}

/// Program and arguments for `tool` on `scenario` (to run inside the scanner namespace).
pub fn command(tool: Tool, scenario: &Scenario, env: &Env, files: &Files) -> (String, Vec<String>) {
    let s = |x: &str| x.to_owned();
    let rate = env.rate.to_string();
    let mut args: Vec<String> = Vec::new();
    let program = match tool {
        Tool::Portscope => {
            args.extend([s("scan"), scenario.range_spec()]);
            args.extend(["-p", &scenario.port_spec(), "--rate", &rate].map(s));
            // Defaults kept: --retries 2, --max-wait 1s (the wait itself follows the RTT).
            args.extend(
                [
                    "--allow",
                    "198.18.0.0/15",
                    "--format",
                    "ndjson",
                    "--show",
                    "closed",
                    "--no-progress",
                ]
                .map(s),
            );
            args.extend(env.portscope_args.iter().cloned());
            env.portscope.to_string_lossy().into_owned()
        }
        Tool::Masscan => {
            args.push(scenario.range_spec());
            args.push(format!("-p{}", scenario.port_spec()));
            args.extend(["--rate", &rate, "--adapter", &env.iface].map(s));
            args.extend([s("--adapter-ip"), env.scanner_ip.to_string()]);
            args.extend(["--router-mac", &env.router_mac, "--wait", "1"].map(s));
            args.extend(["--excludefile", &env.blocklist, "-oL", &files.result].map(s));
            s("masscan")
        }
        Tool::Zmap => {
            args.extend(crate::bench::zmap::NO_CONFIG.map(s));
            args.extend(["-p", &scenario.port_spec(), "-i", &env.iface].map(s));
            args.extend([s("-S"), env.scanner_ip.to_string()]);
            args.extend(["-G", &env.router_mac, "-r", &rate, "--cooldown-time", "1"].map(s));
            args.extend(["-b", &env.blocklist, "--disable-syslog", "-O", "csv"].map(s));
            if env.zmap.multiport() {
                // Naming the fields drops zmap 4's default filter: ask for it back (first
                // SYN-ACK of each pair only).
                args.extend(["-f", "saddr,sport", "--output-filter"].map(s));
                args.push(s("success = 1 && repeat = 0"));
            } else {
                args.extend(["-f", "saddr"].map(s));
            }
            args.extend(["-o", &files.result].map(s));
            args.extend(scenario.cidrs());
            env.zmap.program.clone()
        }
        Tool::Nmap | Tool::NmapMinRate => {
            args.extend(["-sS", "-Pn", "-n", "-T5"].map(s));
            if tool == Tool::NmapMinRate {
                args.extend(["--min-rate", "100000", "--max-retries", "2"].map(s));
            }
            args.push(if scenario.port_count() == 65535 {
                s("-p-")
            } else {
                format!("-p{}", scenario.port_spec())
            });
            // -v makes nmap print its packet count ("Raw packets sent: N").
            args.extend(["-v", "-oX", &files.result].map(s));
            args.extend(scenario.nmap_targets());
            s("nmap")
        }
    };
    (program, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(id: u8) -> Scenario {
        Scenario::all(false).remove(usize::from(id - 1))
    }

    fn env() -> Env {
        Env {
            portscope: "/w/target/release/portscope".into(),
            rate: 250_000,
            iface: "benchs0".into(),
            scanner_ip: Ipv4Addr::new(198, 18, 0, 1),
            router_mac: "02:00:00:00:00:02".into(),
            blocklist: "../blocklist.conf".into(),
            portscope_args: Vec::new(),
            zmap: Zmap {
                program: "/usr/sbin/zmap".into(),
                version: Some([2, 1, 1]),
            },
        }
    }

    fn zmap4() -> Env {
        Env {
            zmap: Zmap {
                program: "/opt/zmap/src/zmap".into(),
                version: Some([4, 3, 4]),
            },
            ..env()
        }
    }

    fn line(tool: Tool, id: u8) -> String {
        line_in(&env(), tool, id)
    }

    fn line_in(env: &Env, tool: Tool, id: u8) -> String {
        let s = scenario(id);
        let (p, a) = command(tool, &s, env, &Files::new(tool, &s));
        format!("{p} {}", a.join(" "))
    }

    #[test]
    fn command_lines() {
        assert_eq!(
            line(Tool::Portscope, 2),
            "/w/target/release/portscope scan 198.19.0.1-198.19.0.16 -p 1-65535 --rate 250000 \
             --allow 198.18.0.0/15 --format ndjson --show closed --no-progress"
        );
        assert_eq!(
            line(Tool::Masscan, 1),
            "masscan 198.18.0.2 -p1-65535 --rate 250000 --adapter benchs0 --adapter-ip 198.18.0.1 \
             --router-mac 02:00:00:00:00:02 --wait 1 --excludefile ../blocklist.conf -oL s1-masscan.list"
        );
        assert_eq!(
            line(Tool::Zmap, 3),
            "/usr/sbin/zmap -C /dev/null -p 80 -i benchs0 -S 198.18.0.1 -G 02:00:00:00:00:02 -r 250000 --cooldown-time 1 \
             -b ../blocklist.conf --disable-syslog -O csv -f saddr -o s3-zmap.csv 198.19.0.0/16"
        );
        assert_eq!(
            line_in(&zmap4(), Tool::Zmap, 2),
            "/opt/zmap/src/zmap -C /dev/null -p 1-65535 -i benchs0 -S 198.18.0.1 -G 02:00:00:00:00:02 -r 250000 \
             --cooldown-time 1 -b ../blocklist.conf --disable-syslog -O csv -f saddr,sport \
             --output-filter success = 1 && repeat = 0 -o s2-zmap.csv \
             198.19.0.1/32 198.19.0.2/31 198.19.0.4/30 198.19.0.8/29 198.19.0.16/32"
        );
        assert_eq!(
            line(Tool::Nmap, 1),
            "nmap -sS -Pn -n -T5 -p- -v -oX s1-nmap-T5.xml 198.18.0.2"
        );
        assert_eq!(
            line(Tool::NmapMinRate, 2),
            "nmap -sS -Pn -n -T5 --min-rate 100000 --max-retries 2 -p- -v -oX s2-nmap-T5min-rate.xml 198.19.0.1-16"
        );
        assert_eq!(
            line(Tool::Nmap, 3),
            "nmap -sS -Pn -n -T5 -p80 -v -oX s3-nmap-T5.xml 198.19.0.0/16"
        );
        let why = Tool::Zmap.skip_reason(&scenario(2), &env()).unwrap();
        assert!(why.starts_with("zmap 2.1.1 (/usr/sbin/zmap) probes one port per run: this scenario would take 65535 runs"), "{why}");
        assert!(Tool::Zmap.skip_reason(&scenario(3), &env()).is_none());
        assert!(Tool::Zmap.skip_reason(&scenario(2), &zmap4()).is_none());
        assert!(Tool::Masscan.skip_reason(&scenario(2), &env()).is_none());
        assert_eq!(Tool::Zmap.peer_binary(&zmap4()), Some("/opt/zmap/src/zmap"));
        assert_eq!(
            Files::new(Tool::Portscope, &scenario(1)).stdout,
            "s1-portscope.ndjson"
        );
    }
}
