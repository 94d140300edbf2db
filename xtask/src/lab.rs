//! The network lab: two network namespaces joined by a veth pair, a target with known open, closed and filtered ports, and its ground truth.
//!
//! **Architecture Invariant:** the lab never touches the root namespace's interfaces, routes
//! or firewall, and neither namespace has a default route: packets from the lab can only reach
//! the lab. The veth is created directly inside the scanner namespace.
//!
//! Layout (`N` = `LabConfig::name`):
//! - `N-s` (scanner): `Ns0`, 198.18.0.1/24, 2001:2::1/64; routes to the extra hosts via the target.
//! - `N-t` (target): `Nt0`, 198.18.0.2/24, 2001:2::2/64; `local` routes make every address of
//!   198.19.0.0/16 and 2001:2:0:1::/64 its own; the nftables table `inet pslab` filters and
//!   impairs; `xtask lab serve` listens on the open ports.
//! - `N-s2` ... `N-sK` (more scanners, `LabConfig::scanners`): one veth each into the target,
//!   own addresses 198.18.(k-1).1/24, 2001:2:0:(100+k-1)::1/64 (see `scanners`).
//! - `/run/portscope-lab/N/`: truth.json, listener.pid, listener.log.

pub mod cli;
mod exec;
pub(crate) mod nft;
pub mod probe;
pub mod scanners;
pub mod serve;
mod teardown;
pub mod truth;

use std::ffi::OsStr;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub(crate) use exec::run;
pub use exec::xtask_bin;
use exec::{ip, netns_exec, ns_exists};
pub use probe::{Outcome, ProbeResult};
pub use scanners::{Scanner, MAX_SCANNERS};
use teardown::{is_listener, process_alive, teardown};
pub use truth::{assert_reports_match, Expected, HostTruth, Truth};

/// Where the state directories of all labs live.
pub const STATE_ROOT: &str = "/run/portscope-lab";

/// How long `up` waits for the listener to bind everything.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What lab to build.
#[derive(Debug, Clone, PartialEq)]
pub struct LabConfig {
    /// Lab name, 1 to 9 characters of `[a-z0-9]`; prefixes namespaces and interfaces.
    pub name: String,
    /// Extra target hosts per address family (at most `truth::MAX_EXTRA_HOSTS`).
    pub hosts: u32,
    /// Percentage of TCP packets dropped in each direction at the target, 0 to 100.
    pub loss_pct: f64,
    /// Most RSTs per second leaving the target; `None` = unlimited, `Some(0)` = none at all.
    pub rst_limit: Option<u32>,
    /// Burst room of that RST limiter in packets (default `nft::DEFAULT_RST_BURST`, at least 1).
    pub rst_burst: u32,
    /// Ports `truth::ICMP_RANGE` of every host answer ICMP administratively prohibited too
    /// (1,000 ports, enough to measure an ICMP rate limit on).
    pub icmp_range: bool,
    /// Most ICMP/ICMPv6 destination unreachables per second leaving the target; `None` =
    /// unlimited, `Some(0)` = none at all.
    pub icmp_limit: Option<u32>,
    /// Leave TSO/GSO/GRO on the veth as the kernel sets them; `false` turns them off.
    pub offloads: bool,
    /// Every address of 198.19.0.0/16 answers like a host (port 80 and the other `BASE_OPEN`
    /// ports open, the rest closed), not only the listed extra hosts: for scans of the whole
    /// range (`Truth::wide`).
    pub wide: bool,
    /// 198.19.255.254 answers SYN-ACK on every TCP port, like a SYN proxy (`nft::syn_proxy`).
    pub syn_proxy: bool,
    /// Scanner namespaces, 1 to `MAX_SCANNERS`, each with its own veth into the target and
    /// its own source addresses; scanner 1 is the lab's usual `N-s`.
    pub scanners: u32,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            name: "pslab".into(),
            hosts: 16,
            loss_pct: 0.0,
            rst_limit: None,
            rst_burst: nft::DEFAULT_RST_BURST,
            icmp_range: false,
            icmp_limit: None,
            offloads: true,
            wide: false,
            syn_proxy: false,
            scanners: 1,
        }
    }
}

impl LabConfig {
    /// Lab `name` with `hosts` extra hosts, the rest default.
    pub fn new(name: impl Into<String>, hosts: u32) -> Self {
        LabConfig {
            name: name.into(),
            hosts,
            ..LabConfig::default()
        }
    }

    /// Check every field; `up` calls this first.
    pub fn validate(&self) -> anyhow::Result<()> {
        validate_name(&self.name)?;
        if self.hosts > truth::MAX_EXTRA_HOSTS {
            bail!(
                "--hosts {} is more than {}",
                self.hosts,
                truth::MAX_EXTRA_HOSTS
            );
        }
        if !(1..=MAX_SCANNERS).contains(&self.scanners) {
            bail!(
                "--scanners {} is not between 1 and {MAX_SCANNERS}",
                self.scanners
            );
        }
        validate_loss(self.loss_pct)
    }
}

fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=9).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !ok {
        bail!("lab name {name:?} must be 1 to 9 characters of [a-z0-9]");
    }
    Ok(())
}

fn validate_loss(loss_pct: f64) -> anyhow::Result<()> {
    if !(0.0..=100.0).contains(&loss_pct) {
        bail!("loss {loss_pct}% is not between 0 and 100");
    }
    Ok(())
}

/// A running lab. Dropping it leaves the lab up (use `LabGuard` to tear down on drop).
#[derive(Debug)]
pub struct Lab {
    name: String,
    /// Scanner 1 (the lab's usual scanner namespace) first; never empty.
    scanners: Vec<Scanner>,
    target_ns: String,
    truth: Truth,
    /// The xtask binary that runs `lab serve` and `lab probe` inside the namespaces.
    xtask: PathBuf,
    /// The listener, when this process started it: `down` kills and reaps it.
    listener: Mutex<Option<Child>>,
    /// Target sysctls this kernel does not have.
    skipped_sysctls: Vec<String>,
}

impl Lab {
    /// Build the lab, tearing down any leftovers of a lab with the same name first.
    /// On failure everything built so far is torn down again.
    pub fn up(cfg: &LabConfig) -> anyhow::Result<Lab> {
        cfg.validate()?;
        let xtask = xtask_bin()?;
        teardown(&cfg.name, None).context("removing the leftovers of an earlier lab")?;
        let truth = Truth::compute(&cfg.name, cfg.hosts)
            .with_wide(cfg.wide)
            .with_icmp_range(cfg.icmp_range);
        let mut lab = Lab::handle(&cfg.name, truth, xtask, cfg.scanners);
        match lab.build(cfg) {
            Ok(()) => Ok(lab),
            Err(e) => {
                lab.down();
                Err(e.context(format!("bringing up lab {}", cfg.name)))
            }
        }
    }

    /// A handle on lab `name`, already up (e.g. from `cargo xtask lab up`).
    pub fn open(name: &str) -> anyhow::Result<Lab> {
        validate_name(name)?;
        let truth = Truth::load(name)?;
        let lab = Lab::handle(name, truth, xtask_bin()?, scanners::count_up(name));
        for ns in [lab.scanner_ns(), lab.target_ns()] {
            if !ns_exists(ns) {
                bail!("namespace {ns} does not exist: is lab {name} up?");
            }
        }
        Ok(lab)
    }

    fn handle(name: &str, truth: Truth, xtask: PathBuf, scanners: u32) -> Lab {
        Lab {
            name: name.to_owned(),
            scanners: scanners::layouts(name, scanners),
            target_ns: truth.target_ns.clone(),
            truth,
            xtask,
            listener: Mutex::new(None),
            skipped_sysctls: Vec::new(),
        }
    }

    fn build(&mut self, cfg: &LabConfig) -> anyhow::Result<()> {
        let state = self.state_dir();
        fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
        self.truth.save_to(&state.join("truth.json"))?;

        let t = self.target_ns.as_str();
        ip(&["netns", "add", t])?;
        ip(&["-n", t, "link", "set", "lo", "up"])?;
        for scanner in &self.scanners {
            scanner.build(t)?;
        }
        ip(&[
            "-n",
            t,
            "route",
            "add",
            "local",
            "198.19.0.0/16",
            "dev",
            "lo",
        ])?;
        ip(&[
            "-n",
            t,
            "-6",
            "route",
            "add",
            "local",
            "2001:2:0:1::/64",
            "dev",
            "lo",
        ])?;

        self.skipped_sysctls = self.tune_target()?;
        if !cfg.offloads {
            for sc in &self.scanners {
                for (ns, dev) in [(sc.ns.as_str(), &sc.iface), (t, &sc.peer_iface)] {
                    run(netns_exec(ns, "ethtool")
                        .args(["-K", dev, "tso", "off", "gso", "off", "gro", "off"]))?;
                }
            }
        }
        nft::apply(t, &nft::ruleset(&self.truth))?;
        if cfg.syn_proxy {
            nft::apply(t, &nft::syn_proxy())?;
        }
        let defaults = self.default_routes()?;
        if !defaults.is_empty() {
            bail!("the lab has default routes, refusing to go on: {defaults:?}");
        }

        self.start_listener()?;
        self.check_reachable()?;
        // Last, so the reachability check above is not subject to loss.
        self.set_impairments_with_burst(cfg.loss_pct, cfg.rst_limit, cfg.rst_burst)?;
        self.set_icmp_limit(cfg.icmp_limit)
    }

    /// Target sysctls: no ICMP rate limits, deep accept and SYN queues. Returns the ones this
    /// kernel lacks (reported on stderr, not an error).
    fn tune_target(&self) -> anyhow::Result<Vec<String>> {
        const SYSCTLS: [(&str, &str); 6] = [
            ("net.ipv4.icmp_ratelimit", "0"),
            ("net.ipv4.icmp_ratemask", "0"),
            ("net.ipv6.icmp.ratelimit", "0"),
            // Without this, ICMPv6 errors still pass the global limiter (icmp_msgs_per_sec).
            ("net.ipv6.icmp.ratemask", ""),
            ("net.core.somaxconn", "65535"),
            ("net.ipv4.tcp_max_syn_backlog", "65535"),
        ];
        let mut skipped = Vec::new();
        for (key, value) in SYSCTLS {
            let out = netns_exec(&self.target_ns, "sysctl")
                .args(["-q", "-w", &format!("{key}={value}")])
                .output()
                .context("running sysctl")?;
            if out.status.success() {
                continue;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("cannot stat") || err.contains("No such file") {
                eprintln!(
                    "lab {}: this kernel has no sysctl {key}, skipped",
                    self.name
                );
                skipped.push(key.to_owned());
            } else {
                bail!("sysctl {key}={value} in {}: {}", self.target_ns, err.trim());
            }
        }
        Ok(skipped)
    }

    fn start_listener(&self) -> anyhow::Result<()> {
        let state = self.state_dir();
        let log_path = state.join("listener.log");
        let log = fs::File::create(&log_path)?;
        let mut cmd = netns_exec(&self.target_ns, &self.xtask);
        cmd.args(["lab", "serve", "--truth"])
            .arg(state.join("truth.json"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C meant for `cargo xtask` or a test run does not
            // reach it. `ip netns exec` execs the program, so the PID stays the listener's.
            .process_group(0);
        let mut child = cmd.spawn().context("starting the listener")?;
        fs::write(state.join("listener.pid"), format!("{}\n", child.id()))?;
        let start = Instant::now();
        let result = loop {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            if log.lines().any(|l| l == serve::READY) {
                break Ok(());
            }
            if let Some(status) = child.try_wait()? {
                break Err(anyhow::anyhow!(
                    "the listener exited ({status}): {}",
                    log.trim()
                ));
            }
            if start.elapsed() > READY_TIMEOUT {
                break Err(anyhow::anyhow!(
                    "the listener was not ready after {READY_TIMEOUT:?}: {}",
                    log.trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        result
    }

    /// Connect from the scanner namespace to an open port of the primary target and of the
    /// first extra host, per family, and in a wide lab of an unlisted address at each end of
    /// 198.19.0.0/16: proves addresses, routes and neighbour discovery work.
    fn check_reachable(&self) -> anyhow::Result<()> {
        let mut addrs: Vec<SocketAddr> = vec![
            SocketAddr::new(truth::TARGET_V4.into(), 22),
            SocketAddr::new(truth::TARGET_V6.into(), 22),
        ];
        if self.truth.hosts.len() > 2 {
            addrs.push(SocketAddr::new(
                truth::extra_v4(1).into(),
                truth::PER_HOST_OPEN_BASE + 1,
            ));
            addrs.push(SocketAddr::new(
                truth::extra_v6(1).into(),
                truth::PER_HOST_OPEN_BASE + 1,
            ));
        }
        if self.truth.wide {
            for last in [0, 255] {
                let addr = std::net::Ipv4Addr::new(198, 19, last, last);
                addrs.push(SocketAddr::new(addr.into(), 80));
            }
        }
        for k in 1..=self.scanners.len() as u32 {
            self.check_reachable_from(k, &addrs)?;
        }
        Ok(())
    }

    fn check_reachable_from(&self, k: u32, addrs: &[SocketAddr]) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let results = self.probe_from(k, addrs, Duration::from_secs(1))?;
            let bad: Vec<_> = results
                .iter()
                .filter(|r| r.outcome != Outcome::Open)
                .collect();
            if bad.is_empty() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(5) {
                let ns = &self.scanner(k).ns;
                bail!("the target is not reachable from scanner namespace {ns}: {bad:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Tear the lab down: kill the listener, delete both namespaces and the state directory.
    /// Best effort: problems are printed, not returned (it runs from `Drop`).
    pub fn down(&self) {
        let child = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Err(e) = teardown(&self.name, child) {
            eprintln!("lab {}: teardown: {e:#}", self.name);
        }
    }

    /// Tear down lab `name` (which may be half built or already gone), like `down`.
    pub fn down_by_name(name: &str) {
        if let Err(e) = validate_name(name).and_then(|()| teardown(name, None)) {
            eprintln!("lab {name}: teardown: {e:#}");
        }
    }

    /// Like `down_by_name`, but reports failure.
    pub fn try_down_by_name(name: &str) -> anyhow::Result<()> {
        validate_name(name)?;
        teardown(name, None)
    }

    /// Rewrite the impairment chains: `loss_pct` % of TCP packets dropped in each direction,
    /// at most `rst_limit` RSTs a second leaving the target (`None` = unlimited).
    /// The RST limiter has the default burst room (`nft::DEFAULT_RST_BURST`).
    pub fn set_impairments(&self, loss_pct: f64, rst_limit: Option<u32>) -> anyhow::Result<()> {
        self.set_impairments_with_burst(loss_pct, rst_limit, nft::DEFAULT_RST_BURST)
    }

    /// Like `set_impairments`, with an RST limiter whose burst room is `rst_burst` packets.
    pub fn set_impairments_with_burst(
        &self,
        loss_pct: f64,
        rst_limit: Option<u32>,
        rst_burst: u32,
    ) -> anyhow::Result<()> {
        validate_loss(loss_pct)?;
        nft::apply(
            &self.target_ns,
            &nft::impairments(&self.target_ifs(), loss_pct, rst_limit, rst_burst),
        )
    }

    /// At most `limit` ICMP and ICMPv6 destination unreachables a second leaving the target
    /// (`None` = unlimited, `Some(0)` = none). Kept apart from `set_impairments`, which
    /// leaves it as it is.
    pub fn set_icmp_limit(&self, limit: Option<u32>) -> anyhow::Result<()> {
        nft::apply(&self.target_ns, &nft::icmp_limit(&self.target_ifs(), limit))
    }

    /// Connect from the scanner namespace to each address in turn (`xtask lab probe`).
    pub fn probe(
        &self,
        addrs: &[SocketAddr],
        timeout: Duration,
    ) -> anyhow::Result<Vec<ProbeResult>> {
        self.probe_from(1, addrs, timeout)
    }

    /// Like `probe`, from scanner `k` (1-based).
    ///
    /// # Panics
    /// If the lab has no scanner `k`.
    pub fn probe_from(
        &self,
        k: u32,
        addrs: &[SocketAddr],
        timeout: Duration,
    ) -> anyhow::Result<Vec<ProbeResult>> {
        let mut cmd = self.scanner(k).cmd(&self.xtask);
        cmd.args([
            "lab",
            "probe",
            "--timeout-ms",
            &timeout.as_millis().to_string(),
        ]);
        cmd.args(addrs.iter().map(|a| a.to_string()));
        let out = run(&mut cmd)?;
        let results: Vec<_> = out.lines().filter_map(ProbeResult::parse_line).collect();
        if results.len() != addrs.len() {
            bail!(
                "lab probe printed {} results for {} addresses: {out}",
                results.len(),
                addrs.len()
            );
        }
        Ok(results)
    }

    /// Routes named `default` in any of the lab's namespaces, any table, either family
    /// (empty in a good lab).
    pub fn default_routes(&self) -> anyhow::Result<Vec<String>> {
        let mut found = Vec::new();
        for ns in self.namespaces() {
            for family in ["-4", "-6"] {
                let routes = ip(&["-n", ns, family, "route", "show", "table", "all"])?;
                found.extend(
                    routes
                        .lines()
                        .filter(|l| l.starts_with("default"))
                        .map(|l| format!("{ns}: {l}")),
                );
            }
        }
        Ok(found)
    }

    /// PID of the running listener, if it is alive and is this lab's `lab serve`.
    pub fn listener_pid(&self) -> Option<u32> {
        let pid = fs::read_to_string(self.state_dir().join("listener.pid")).ok()?;
        let pid = pid.trim().parse().ok()?;
        (is_listener(pid, &self.state_dir().join("truth.json")) && process_alive(pid))
            .then_some(pid)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Scanner 1's namespace (`<name>-s`).
    pub fn scanner_ns(&self) -> &str {
        &self.scanners[0].ns
    }

    pub fn target_ns(&self) -> &str {
        &self.target_ns
    }

    /// The scanner's veth interface (`<name>s0`), inside `scanner_ns`.
    pub fn scanner_if(&self) -> &str {
        &self.scanners[0].iface
    }

    /// The target's veth interface (`<name>t0`), inside `target_ns`.
    pub fn target_if(&self) -> &str {
        &self.scanners[0].peer_iface
    }

    /// Every scanner namespace with its veth and addresses, scanner 1 first.
    pub fn scanners(&self) -> &[Scanner] {
        &self.scanners
    }

    /// Scanner `k` (1-based).
    ///
    /// # Panics
    /// If the lab has no scanner `k` (see `scanners` for the count).
    pub fn scanner(&self, k: u32) -> &Scanner {
        let i = k.checked_sub(1).and_then(|i| usize::try_from(i).ok());
        i.and_then(|i| self.scanners.get(i))
            .unwrap_or_else(|| panic!("lab {} has no scanner {k}", self.name))
    }

    /// The target ends of every scanner's veth, inside `target_ns`.
    pub fn target_ifs(&self) -> Vec<&str> {
        self.scanners
            .iter()
            .map(|s| s.peer_iface.as_str())
            .collect()
    }

    /// Every namespace of the lab: the scanners' in order, then the target's.
    pub fn namespaces(&self) -> Vec<&str> {
        let scanners = self.scanners.iter().map(|s| s.ns.as_str());
        scanners.chain([self.target_ns.as_str()]).collect()
    }

    pub fn truth(&self) -> &Truth {
        &self.truth
    }

    /// Target sysctls this kernel lacks (skipped by `up`).
    pub fn skipped_sysctls(&self) -> &[String] {
        &self.skipped_sysctls
    }

    /// `ip netns exec <scanner-ns> program` (scanner 1; `scanner(k).cmd` for the others).
    pub fn scanner_cmd(&self, program: impl AsRef<OsStr>) -> Command {
        self.scanners[0].cmd(program)
    }

    /// `ip netns exec <target-ns> program`.
    pub fn target_cmd(&self, program: impl AsRef<OsStr>) -> Command {
        netns_exec(&self.target_ns, program)
    }

    /// Applies an nftables `script` inside the target namespace (a test's own counters).
    pub fn target_nft(&self, script: &str) -> anyhow::Result<()> {
        nft::apply(&self.target_ns, script)
    }

    /// `nft ARGS` inside the target namespace; its stdout (listing a test's counters).
    pub fn target_nft_query(&self, args: &[&str]) -> anyhow::Result<String> {
        nft::query(&self.target_ns, args)
    }

    /// `/run/portscope-lab/<name>/`.
    pub fn state_dir(&self) -> PathBuf {
        Lab::state_dir_for(&self.name)
    }

    /// The state directory of lab `name`.
    pub fn state_dir_for(name: &str) -> PathBuf {
        Path::new(STATE_ROOT).join(name)
    }
}

/// A lab torn down when dropped, also when a test panics.
#[derive(Debug)]
pub struct LabGuard(pub Lab);

impl LabGuard {
    /// `Lab::up` wrapped in a guard.
    pub fn up(cfg: &LabConfig) -> anyhow::Result<LabGuard> {
        Lab::up(cfg).map(LabGuard)
    }
}

impl std::ops::Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.0
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        self.0.down();
    }
}

/// Names of the labs that have a state directory.
pub fn list_labs() -> Vec<String> {
    let Ok(dir) = fs::read_dir(STATE_ROOT) else {
        return Vec::new();
    };
    let mut names: Vec<_> = dir
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| validate_name(n).is_ok())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert!(LabConfig::default().validate().is_ok());
        for name in ["", "toolongname", "Upper", "a-b"] {
            let cfg = LabConfig {
                name: name.into(),
                ..LabConfig::default()
            };
            assert!(cfg.validate().is_err(), "{name:?} accepted");
        }
        let cfg = LabConfig {
            loss_pct: 100.5,
            ..LabConfig::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = LabConfig {
            loss_pct: f64::NAN,
            ..LabConfig::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = LabConfig {
            hosts: truth::MAX_EXTRA_HOSTS + 1,
            ..LabConfig::default()
        };
        assert!(cfg.validate().is_err());
        for scanners in [0, MAX_SCANNERS + 1] {
            let cfg = LabConfig {
                scanners,
                ..LabConfig::default()
            };
            assert!(cfg.validate().is_err(), "{scanners} scanners accepted");
        }
    }
}
