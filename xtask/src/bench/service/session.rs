//! A lab with the stack and the agent in it, one per phase group; dropping it saves the logs
//! and tears everything down.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::lab::{truth, LabConfig, LabGuard};
use crate::stack::{Stack, StackOptions};

use super::handle::Agent;
use super::{HOOK_PORT, MAX_QUEUED, METRICS_LISTEN};

/// Extra hosts `first..first+count` (198.19.0.0 + k).
pub(super) fn hosts(first: u32, count: u32) -> Vec<Ipv4Addr> {
    (first..first + count).map(truth::extra_v4).collect()
}

/// A lab with `n_hosts` extra hosts, each its own "ASN", and the stack in it: engine
/// metrics on, the queue long enough for every scan unless `engine_extra` says otherwise.
pub(super) fn up(
    name: &str,
    n_hosts: u32,
    engine_extra: &[&str],
    bins: &Path,
) -> anyhow::Result<Stack> {
    eprintln!("bench --service: lab {name} up ({n_hosts} extra hosts) ...");
    let lab = LabGuard::up(&LabConfig::new(name, n_hosts))?;
    // Readable by the API's unprivileged user.
    let dir = lab.state_dir().join("svcbench");
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    let asn = dir.join("asn.txt");
    fs::write(&asn, asn_table(n_hosts))?;
    fs::set_permissions(&asn, fs::Permissions::from_mode(0o644))?;
    let mut engine_args: Vec<String> = vec!["--metrics-listen".into(), METRICS_LISTEN.into()];
    if !engine_extra.contains(&"--max-queued") {
        engine_args.extend(["--max-queued".into(), MAX_QUEUED.to_string()]);
    }
    engine_args.extend(engine_extra.iter().map(|s| s.to_string()));
    let opts = StackOptions {
        engine_args,
        api_args: vec!["--asn-table".into(), asn.display().to_string()],
        api_config: None,
    };
    Stack::up_with(lab, opts, bins.to_path_buf())
}

/// `CIDR ASN` lines: the primary target and every extra host its own private ASN.
pub(super) fn asn_table(n_hosts: u32) -> String {
    let mut t = String::from("# one ASN per lab host (cargo xtask bench --service)\n");
    let _ = writeln!(t, "{}/32 AS4200000000", truth::TARGET_V4);
    for k in 1..=n_hosts {
        let _ = writeln!(t, "{}/32 AS{}", truth::extra_v4(k), 4_200_000_000 + k);
    }
    t
}

/// A lab, the stack in it and the agent in its target namespace. Dropping it stops the
/// agent, saves the engine and API logs, then stops the stack and tears the lab down.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) agent: Option<Agent>,
    pub(super) stack: Stack,
    pub(super) name: String,
    pub(super) logs: PathBuf,
}

impl Session {
    /// `n_hosts` extra hosts; the last one runs the webhook receiver.
    pub(super) fn open(
        name: &str,
        n_hosts: u32,
        engine_extra: &[&str],
        bins: &Path,
        logs: &Path,
    ) -> anyhow::Result<Session> {
        let stack = up(name, n_hosts, engine_extra, bins)?;
        let hook = SocketAddr::new(truth::extra_v4(n_hosts).into(), HOOK_PORT);
        let agent = Agent::start(&stack.lab, hook, &logs.join(format!("agent-{name}.log")))?;
        Ok(Session {
            agent: Some(agent),
            stack,
            name: name.to_owned(),
            logs: logs.to_owned(),
        })
    }

    pub(super) fn agent(&self) -> anyhow::Result<&Agent> {
        self.agent.as_ref().context("the agent is gone")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.agent.take());
        let (e, a) = self.stack.log_paths();
        let _ = fs::copy(e, self.logs.join(format!("engine-{}.log", self.name)));
        let _ = fs::copy(a, self.logs.join(format!("api-{}.log", self.name)));
    }
}
