//! One engine daemon per scanner namespace of a lab (`LabConfig::scanners`): the scanning
//! nodes of the multi-node work (issue 8), started as [`crate::stack`] starts its engine.
//!
//! Each engine runs inside its own scanner namespace, so it sends from that scanner's source
//! addresses over that scanner's veth; its Unix socket is
//! `/run/portscope-lab/<lab>/nodes/<k>/engine.sock` (sockets are files: a client in any
//! namespace reaches it). Bounded: every start waits at most 10 s for the socket, and
//! dropping [`Engines`] stops every engine it started, by PID (SIGTERM, SIGKILL after 10 s).

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::lab::Lab;
use crate::stack::{engine_command, stop, wait_for};

/// How long an engine may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One running engine, in scanner `number`'s namespace.
#[derive(Debug)]
pub struct EngineNode {
    /// The scanner (1-based) whose namespace it runs in.
    pub number: u32,
    /// Its Unix socket.
    pub socket: PathBuf,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    child: Option<Child>,
}

impl EngineNode {
    /// The engine's PID while it runs (`ip netns exec` execs in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stop it: SIGTERM, or SIGKILL when `kill` (a node dying).
    pub fn stop(&mut self, kill: bool) {
        stop(&mut self.child, kill);
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An engine in every scanner namespace of `lab`; stopped when dropped (before the lab,
/// which the borrow guarantees).
#[derive(Debug)]
pub struct Engines<'lab> {
    lab: &'lab Lab,
    nodes: Vec<EngineNode>,
}

impl<'lab> Engines<'lab> {
    /// Start `bins/portscope engine` in each of `lab`'s scanner namespaces, with `extra`
    /// arguments appended (see `stack::engine_command`), and wait for every socket.
    /// On failure the engines started so far are stopped.
    pub fn start(lab: &'lab Lab, bins: &Path, extra: &[String]) -> anyhow::Result<Engines<'lab>> {
        let bin = bins.join("portscope");
        if !bin.is_file() {
            bail!("{} not built (cargo build -p portscope)", bin.display());
        }
        let root = lab.state_dir().join("nodes");
        let _ = fs::remove_dir_all(&root);
        let mut engines = Engines {
            lab,
            nodes: Vec::new(),
        };
        for scanner in lab.scanners() {
            let dir = root.join(scanner.number.to_string());
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for d in [&root, &dir] {
                fs::set_permissions(d, fs::Permissions::from_mode(0o755))?;
            }
            let (socket, log) = (dir.join("engine.sock"), dir.join("engine.log"));
            let out = File::create(&log)?;
            let child = engine_command(scanner.cmd(&bin), &socket, extra)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting the engine in {}", scanner.ns))?;
            engines.nodes.push(EngineNode {
                number: scanner.number,
                socket: socket.clone(),
                log,
                child: Some(child),
            });
            let node = engines.nodes.last().expect("just pushed");
            wait_for(START_TIMEOUT, || socket.exists()).with_context(|| {
                format!(
                    "the engine in {} made no socket: {}",
                    scanner.ns,
                    node.log_text()
                )
            })?;
        }
        Ok(engines)
    }

    /// The lab the engines run in.
    pub fn lab(&self) -> &'lab Lab {
        self.lab
    }

    /// Every engine, scanner 1's first.
    pub fn nodes(&self) -> &[EngineNode] {
        &self.nodes
    }

    /// The engine in scanner `k`'s namespace (1-based).
    ///
    /// # Panics
    /// If there is no scanner `k`.
    pub fn node(&self, k: u32) -> &EngineNode {
        self.nodes
            .iter()
            .find(|n| n.number == k)
            .unwrap_or_else(|| panic!("no engine for scanner {k}"))
    }

    /// Like `node`, mutable (to stop or kill one).
    pub fn node_mut(&mut self, k: u32) -> &mut EngineNode {
        self.nodes
            .iter_mut()
            .find(|n| n.number == k)
            .unwrap_or_else(|| panic!("no engine for scanner {k}"))
    }

    /// Every engine's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for n in &self.nodes {
            text += &format!("--- engine {} log ---\n{}\n", n.number, n.log_text());
        }
        text
    }
}

impl Drop for Engines<'_> {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop(false);
        }
    }
}
