//! Helpers of the chunk-job lab tests: `portscope-api worker` (or serving) processes (unprivileged, by
//! PID), a temporary directory they can write, and the exactness check of a job scan
//! against the lab truth.

// Shared by `jobs_lab.rs` and `selfscan_lab.rs`; each uses a part.
#![allow(dead_code)]

use portscope_control_api::store::jobs::ChunkRow;
use portscope_core::results::{PortResult, PortState, Reason};
use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use xtask::lab::{assert_reports_match, Expected, Truth};

/// The uid and gid workers run as (the lab stack's API user).
pub const WORKER_UID: u32 = xtask::stack::API_UID;

/// A temporary directory every user may write (workers run unprivileged).
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// One `portscope-api worker` process; SIGTERM (then SIGKILL) by PID on drop.
#[derive(Debug)]
pub struct Worker {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    /// Starts `portscope-api worker` as an unprivileged user against `db_url` and the
    /// engine at `socket`, named `node`. (Every spawn's last argument is a path: the
    /// engine socket, or a config file.)
    pub fn start(bins: &Path, db_url: &str, socket: &Path, node: &str) -> Worker {
        let args = ["worker", "--db", db_url, "--node", node, "--engine-socket"];
        Self::spawn(bins, &args, socket, node)
    }

    /// Starts `portscope-api` serving as the embedded default does (its in-process chunk
    /// worker on, on loopback port 0), unprivileged, against `db` and the engine at `socket`.
    /// Its node name is the host name.
    pub fn embedded_api(bins: &Path, db: &str, socket: &Path) -> Worker {
        let args = ["--db", db, "--listen", "127.0.0.1:0", "--engine-socket"];
        Self::spawn(bins, &args, socket, "api")
    }

    /// Starts `portscope-api --config CONFIG` serving, unprivileged; `name` names its log.
    pub fn api_with_config(bins: &Path, config: &Path, name: &str) -> Worker {
        Self::spawn(bins, &["--config"], config, name)
    }

    fn spawn(bins: &Path, args: &[&str], socket: &Path, node: &str) -> Worker {
        let dir = shared_tempdir();
        let log = dir.path().join(format!("{node}.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new("setpriv")
            .args([
                &format!("--reuid={WORKER_UID}"),
                &format!("--regid={WORKER_UID}"),
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(bins.join("portscope-api"))
            .args(args)
            .arg(socket)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start portscope-api worker");
        Worker {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    /// SIGKILL, as a dying node.
    pub fn kill(&mut self) {
        self.stop(true);
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        format!(
            "--- {} ---\n{}",
            self.log.display(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    fn stop(&mut self, kill: bool) {
        xtask::stack::stop_within(&mut self.child, kill, Duration::from_secs(15));
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// Every (host, port) pair of `hosts` x 1..=65535 has exactly one answer equal to the truth:
/// every chunk done, open and filtered ports stored once with the right state and reason,
/// nothing stored for other pairs, and the chunks' closed counts adding up to the truth's.
pub fn assert_exact(truth: &Truth, hosts: &[IpAddr], chunks: &[ChunkRow], results: &[PortResult]) {
    assert!(chunks
        .iter()
        .all(|c| c.status == portscope_control_api::jobs::ChunkStatus::Done));
    let probes: u64 = chunks.iter().map(|c| c.probes).sum();
    assert_eq!(
        probes,
        hosts.len() as u64 * 65_535,
        "chunks cover every pair once"
    );
    let mut stored = BTreeMap::new();
    for r in results {
        let dup = stored.insert((r.ip, r.port), (r.state, r.reason));
        assert!(dup.is_none(), "{}:{} stored twice", r.ip, r.port);
    }
    let hosts: Vec<_> = hosts
        .iter()
        .map(|&addr| truth.host(addr).expect("a lab host"))
        .collect();
    let closed_want: u64 = hosts.iter().map(|h| h.closed_count() as u64).sum();
    let ports: Vec<u16> = (1..=65535).collect();
    assert_reports_match(&hosts, &ports, stored, |_, _, want, got| {
        match (want, got) {
            (Expected::Open, Some(g)) => *g == (PortState::Open, Reason::SynAck),
            (Expected::FilteredSilent, Some(g)) => *g == (PortState::Filtered, Reason::NoResponse),
            (Expected::FilteredIcmp, Some(g)) => {
                *g == (PortState::Filtered, Reason::IcmpUnreachable)
            }
            (Expected::Closed, None) => true,
            _ => false,
        }
    });
    let closed: u64 = chunks.iter().map(|c| c.closed.unwrap_or(0)).sum();
    assert_eq!(closed, closed_want, "closed ports counted");
}
