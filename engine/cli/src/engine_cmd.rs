//! `portscope engine`: the long-running engine daemon. Opens the raw sockets and its
//! listeners, confines itself (`portscope_daemon::sandbox`: as root it becomes `--user`
//! keeping only CAP_NET_RAW, then no_new_privs, Landlock, seccomp), and then (threads start
//! only after that) serves the engine protocol on a Unix socket with `portscope-daemon`.
//! It holds no daemon logic of its own.

use crate::{open_sockets, Refusal};
use anyhow::{Context, Result};
use clap::Args;
use portscope_core::classify::SLOTS;
use portscope_core::policy::TargetPolicy;
use portscope_core::targets::parse_net;
use portscope_daemon::sandbox::{self, Sandbox, SeccompMode};
use portscope_daemon::{DaemonConfig, PeerPolicy, ScanSettings};
use portscope_engine::{Engine, EngineConfig};
use portscope_transport::sys;
use portscope_transport::PacketSource;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args, Debug)]
pub(crate) struct EngineArgs {
    /// Unix socket to serve the control API on (a stale socket file is replaced).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Permissions of the socket file, octal.
    #[arg(long, default_value = "0660", value_parser = parse_mode)]
    socket_mode: u32,
    /// Also allow peers with this uid (root and the engine's own uid always may connect).
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Also allow peers whose primary gid is this.
    #[arg(long = "allow-gid", value_name = "GID")]
    allow_gid: Vec<u32>,
    /// Allow a range the default target policy denies (private, loopback, benchmarking, ...).
    #[arg(long = "allow", value_name = "CIDR")]
    allow: Vec<String>,
    /// Packets per second: the global ceiling, and each chunk's rate.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Scans running at once (more wait in a queue).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=64))]
    max_running: u64,
    /// Scans waiting at most (more are refused as busy).
    #[arg(long, default_value_t = 64)]
    max_queued: usize,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// A running scan taking longer fails with `timeout`, e.g. 10m, 90s.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    scan_timeout: Duration,
    /// How long finished scans are kept for replay to a reconnecting client.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    retention: Duration,
    /// Retransmissions for ports that stayed silent.
    #[arg(long, default_value_t = 2)]
    retries: u8,
    /// Upper bound on the wait for replies after each round.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    max_wait: Duration,
    /// Capture replies on this interface only (default: all).
    #[arg(long)]
    interface: Option<String>,
    /// Read replies through a memory-mapped ring (one wake-up per block) or recvmmsg.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    rx_ring: crate::args::RxRing,
    /// Threads that put probes on the wire, as for `portscope scan` (unpinned here: the
    /// sandbox allows no `sched_setaffinity`) [default: 2 where the engine may use two
    /// CPUs or more, else 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    send_threads: Option<u16>,
    #[command(flatten)]
    link: crate::args::LinkArgs,
    /// Started as root, run as this user (name or uid) once the sockets are open, keeping
    /// only CAP_NET_RAW.
    #[arg(long, default_value = "nobody")]
    user: String,
    /// A system call outside the engine's list: `enforce` kills the process (SIGSYS, named
    /// in the kernel audit log), `log` only logs it, `off` installs no filter.
    #[arg(long, default_value = "enforce")]
    seccomp: SeccompMode,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("`{s}` is not an octal permission mode like 0660")),
    }
}

pub(crate) fn run(args: EngineArgs) -> Result<ExitCode> {
    portscope_daemon::init_logging();
    let usage = |e: &dyn std::fmt::Display| Refusal::Usage(e.to_string());
    let mut policy = TargetPolicy::default_deny();
    for a in &args.allow {
        policy.allow(parse_net(a).map_err(|e| usage(&e))?);
    }
    let send_threads = args
        .send_threads
        .map_or_else(portscope_engine::default_send_threads, usize::from);
    let (sinks, source) = open_sockets(
        args.interface.clone(),
        None,
        args.rx_ring,
        args.link.via(args.interface.as_deref()),
        None,
        send_threads,
    )?;
    tracing::info!(receive = source.kind(), ring_error = ?source.ring_error().map(ToString::to_string), "capture opened");
    let socket = portscope_daemon::bind(&args.socket, args.socket_mode)
        .context("creating the control socket")?;
    let metrics = args
        .metrics_listen
        .map(portscope_daemon::bind_metrics)
        .transpose()
        .context("binding the metrics listener")?;
    // Before any thread exists: threads inherit the credentials and the filters.
    let confined = sandbox::confine(&Sandbox {
        user: args.user.clone(),
        seccomp: args.seccomp,
        socket_dir: args.socket.parent().map(PathBuf::from),
    })
    .context("confining the engine")?;
    tracing::info!(
        uid = confined.uid,
        landlock = confined.landlock,
        seccomp = ?confined.seccomp,
        "confined: CAP_NET_RAW only, no_new_privs"
    );

    let config = DaemonConfig {
        max_running: args.max_running as usize,
        max_queued: args.max_queued,
        scan_timeout: args.scan_timeout,
        retention: args.retention,
        peers: PeerPolicy {
            daemon_uid: None, // the socket file's owner, filled in by the daemon
            daemon_gid: None, // the socket file's group, likewise
            uids: args.allow_uid.clone(),
            gids: args.allow_gid.clone(),
        },
        scan: ScanSettings {
            rate: args.rate,
            retries: args.retries,
            max_wait: args.max_wait,
            ..ScanSettings::default()
        },
        ..DaemonConfig::default()
    };
    let engine_config = EngineConfig {
        max_rate: args.rate,
        max_scans: usize::from(SLOTS),
        policy,
        ..EngineConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ps-daemon")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let engine = Engine::start_sending_on(
            sinks,
            Box::new(source) as Box<dyn PacketSource>,
            engine_config,
        );
        let daemon = portscope_daemon::Daemon::new(engine, Arc::new(sys::route_source), config);
        tracing::info!(
            "serving on {} (mode {:04o})",
            socket.path().display(),
            args.socket_mode
        );
        daemon
            .run(socket, metrics, portscope_daemon::shutdown_signal())
            .await
            .context("serving the control socket")
    })?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_permissions() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o640"), Ok(0o640));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("rw").is_err());
    }
}
