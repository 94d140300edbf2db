//! Confining the engine daemon once its sockets are open: an unprivileged uid keeping only
//! `CAP_NET_RAW` (when started as root), an empty bounding set, `no_new_privs`, a Landlock
//! rule set (no file access but removing its own socket, no TCP bind or connect, no signals
//! beyond itself) where the kernel has Landlock, and a seccomp filter allowing only the system calls the daemon
//! makes (the list in [`ALLOWED`], taken with `strace -f` from a lab run).
//!
//! Call [`confine`] on the main thread before any other thread starts (the async runtime,
//! the engine's threads): threads inherit credentials and filters, and a filter installed
//! later would have to be synchronised onto threads already running.
//!
//! **Failure mode.** A system call outside the list kills the whole process with `SIGSYS`
//! ("Bad system call", exit by signal 31), never a silent `EPERM` that the code might
//! misread; the kernel audit log names it (`dmesg | grep 'type=1326'`: `syscall=N`). To
//! find a missing call without dying, run with `--seccomp log`: everything is allowed and
//! calls outside the list are logged the same way.

use portscope_transport::privs::{self, PrivError};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a system call outside the list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// Kill the process with `SIGSYS` (the default).
    #[default]
    Enforce,
    /// Allow it, but log it to the kernel audit log (to find a missing call).
    Log,
    /// No filter.
    Off,
}

impl std::str::FromStr for SeccompMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "enforce" => Ok(SeccompMode::Enforce),
            "log" => Ok(SeccompMode::Log),
            "off" => Ok(SeccompMode::Off),
            _ => Err(format!("`{s}` is not a seccomp mode: enforce, log or off")),
        }
    }
}

/// How to confine the daemon.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// The user to become when started as root (a name or a uid; `nobody` by default).
    pub user: String,
    /// The seccomp filter's failure mode.
    pub seccomp: SeccompMode,
    /// The control socket's directory: the one place the daemon may still remove a file
    /// (its socket, on exit; the directory's own permissions still apply).
    pub socket_dir: Option<PathBuf>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            user: "nobody".into(),
            seccomp: SeccompMode::Enforce,
            socket_dir: None,
        }
    }
}

/// What [`confine`] achieved, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confined {
    /// The uid now (unchanged when not started as root).
    pub uid: u32,
    /// Landlock: `full`, `partial` (an older kernel) or `unsupported`.
    pub landlock: &'static str,
    /// The seccomp mode installed.
    pub seccomp: SeccompMode,
}

/// Confining the daemon failed; it must not serve then.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Credentials or capabilities.
    #[error(transparent)]
    Privs(#[from] PrivError),
    /// Landlock refused the rule set.
    #[error("could not install the Landlock rule set: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// Opening the socket directory for its Landlock rule.
    #[error("could not open {0} for its Landlock rule: {1}")]
    LandlockPath(PathBuf, landlock::PathFdError),
    /// The seccomp filter could not be built or installed.
    #[error("could not install the seccomp filter: {0}")]
    Seccomp(String),
}

/// Confines the calling process (see the module documentation). Started as root, it
/// becomes `sandbox.user` keeping only `CAP_NET_RAW`; otherwise it keeps its uid and drops
/// every capability but `CAP_NET_RAW`.
pub fn confine(sandbox: &Sandbox) -> Result<Confined, SandboxError> {
    if privs::is_root() {
        let who = privs::lookup_user(&sandbox.user)?;
        privs::become_user_with_net_raw(who)?;
    } else {
        privs::drop_all_but_net_raw()?;
    }
    privs::set_no_new_privs()?;
    let uid = privs::current_uid();
    let landlock = restrict_files_and_tcp(sandbox)?;
    install_seccomp(sandbox.seccomp)?;
    Ok(Confined {
        uid,
        landlock,
        seccomp: sandbox.seccomp,
    })
}

/// Landlock: every file-system right and TCP bind/connect handled, nothing granted but
/// removing a file in the socket's directory; signals and abstract Unix sockets scoped to
/// the process. Best effort on older kernels.
fn restrict_files_and_tcp(sandbox: &Sandbox) -> Result<&'static str, SandboxError> {
    use landlock::{
        Access, AccessFs, AccessNet, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, Scope, ABI,
    };
    let abi = ABI::V6;
    // Scopes: no signals to processes outside the sandbox (the API may share the uid),
    // no connecting to abstract Unix sockets.
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))?
        .handle_access(AccessNet::from_all(abi))?
        .scope(Scope::from_all(abi))?
        .create()?;
    if let Some(dir) = &sandbox.socket_dir {
        let fd = PathFd::new(dir).map_err(|e| SandboxError::LandlockPath(dir.clone(), e))?;
        ruleset = ruleset.add_rule(PathBeneath::new(fd, AccessFs::RemoveFile))?;
    }
    Ok(match ruleset.restrict_self()?.ruleset {
        RulesetStatus::FullyEnforced => "full",
        RulesetStatus::PartiallyEnforced => "partial",
        RulesetStatus::NotEnforced => "unsupported",
    })
}

/// The system calls the daemon makes once confined, with the threads of the async runtime
/// and of the engine (`strace -f -c` of a lab run: daemon start, fast and deep scans, a
/// status replay, metrics, shutdown). Any other call is the failure mode above.
pub const ALLOWED: &[(&str, libc::c_long)] = &[
    // Memory.
    ("brk", libc::SYS_brk),
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("mprotect", libc::SYS_mprotect),
    ("mremap", libc::SYS_mremap),
    ("madvise", libc::SYS_madvise),
    // Threads, signals and time.
    ("clone", libc::SYS_clone),
    ("clone3", libc::SYS_clone3),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("futex", libc::SYS_futex),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("rseq", libc::SYS_rseq),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    // Thread names only (`PR_SET_NAME`, see `prctl_rules`).
    ("prctl", libc::SYS_prctl),
    ("sched_yield", libc::SYS_sched_yield),
    ("getpid", libc::SYS_getpid),
    ("gettid", libc::SYS_gettid),
    ("tgkill", libc::SYS_tgkill),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("restart_syscall", libc::SYS_restart_syscall),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("nanosleep", libc::SYS_nanosleep),
    ("getrandom", libc::SYS_getrandom),
    // File descriptors and polling.
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("close", libc::SYS_close),
    ("fcntl", libc::SYS_fcntl),
    // Only FIONBIO and FIOCLEX (see `ioctl_rules`).
    ("ioctl", libc::SYS_ioctl),
    ("eventfd2", libc::SYS_eventfd2),
    // The runtime's signal pipe.
    ("socketpair", libc::SYS_socketpair),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("ppoll", libc::SYS_ppoll),
    // Sockets already open, and accepted control connections.
    ("accept4", libc::SYS_accept4),
    ("recvfrom", libc::SYS_recvfrom),
    ("recvmsg", libc::SYS_recvmsg),
    ("recvmmsg", libc::SYS_recvmmsg),
    ("sendto", libc::SYS_sendto),
    ("sendmsg", libc::SYS_sendmsg),
    ("sendmmsg", libc::SYS_sendmmsg),
    ("getsockopt", libc::SYS_getsockopt),
    ("setsockopt", libc::SYS_setsockopt),
    ("getsockname", libc::SYS_getsockname),
    ("getpeername", libc::SYS_getpeername),
    ("shutdown", libc::SYS_shutdown),
    // Route lookups (a connected UDP socket, see `socket` below).
    ("connect", libc::SYS_connect),
    // CPU counts read from /proc and /sys by the runtime: Landlock refuses the paths
    // (EACCES) and the callers fall back, so the call itself may be made.
    ("openat", libc::SYS_openat),
    // Removing the control socket on exit.
    ("newfstatat", libc::SYS_newfstatat),
    ("statx", libc::SYS_statx),
    ("unlinkat", libc::SYS_unlinkat),
];

/// The same, for calls only x86-64 has.
#[cfg(target_arch = "x86_64")]
const ALLOWED_X86_64: &[(&str, libc::c_long)] = &[
    ("epoll_wait", libc::SYS_epoll_wait),
    ("fstat", libc::SYS_fstat),
    ("poll", libc::SYS_poll),
    ("unlink", libc::SYS_unlink),
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[(&str, libc::c_long)] = &[];

/// `socket` only for the route lookup: an IPv4 or IPv6 datagram socket. No new raw,
/// packet, netlink or TCP socket can be opened once confined.
fn socket_rules() -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let cond =
        |arg, op, v: libc::c_int| SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, v as u64);
    let dgram = cond(1, SeccompCmpOp::MaskedEq(0xf), libc::SOCK_DGRAM)?;
    [libc::AF_INET, libc::AF_INET6]
        .into_iter()
        .map(|family| SeccompRule::new(vec![cond(0, SeccompCmpOp::Eq, family)?, dgram.clone()]))
        .collect()
}

/// `ioctl` only to make a descriptor non-blocking or close-on-exec (what the standard
/// library and the runtime use): no device, interface or terminal requests.
fn ioctl_rules() -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    [libc::FIONBIO, libc::FIOCLEX]
        .into_iter()
        .map(|request| {
            let cond = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request);
            SeccompRule::new(vec![cond?])
        })
        .collect()
}

/// `prctl` only to name threads: no dumpable, keepcaps or securebits changes.
fn prctl_rules() -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let name = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::PR_SET_NAME as u64,
    )?;
    Ok(vec![SeccompRule::new(vec![name])?])
}

/// Builds the filter for this machine's architecture.
pub fn seccomp_program(mode: SeccompMode) -> Result<BpfProgram, SandboxError> {
    let fail = |e: &dyn std::fmt::Display| SandboxError::Seccomp(e.to_string());
    let mut rules: BTreeMap<libc::c_long, Vec<SeccompRule>> = ALLOWED
        .iter()
        .chain(ALLOWED_X86_64)
        .map(|&(_, nr)| (nr, Vec::new()))
        .collect();
    rules.insert(libc::SYS_socket, socket_rules().map_err(|e| fail(&e))?);
    rules.insert(libc::SYS_prctl, prctl_rules().map_err(|e| fail(&e))?);
    rules.insert(libc::SYS_ioctl, ioctl_rules().map_err(|e| fail(&e))?);
    let mismatch = match mode {
        SeccompMode::Log => SeccompAction::Log,
        _ => SeccompAction::KillProcess,
    };
    let arch = std::env::consts::ARCH.try_into().map_err(|e| fail(&e))?;
    let filter =
        SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch).map_err(|e| fail(&e))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| fail(&e))
}

/// Installs the filter on every thread of the process (`no_new_privs` must be set, or the
/// caller must hold `CAP_SYS_ADMIN`). [`confine`] calls it last.
pub fn install_seccomp(mode: SeccompMode) -> Result<(), SandboxError> {
    if mode == SeccompMode::Off {
        return Ok(());
    }
    let program = seccomp_program(mode)?;
    // All threads (there should be one), so no thread escapes the filter.
    seccompiler::apply_filter_all_threads(&program)
        .map_err(|e| SandboxError::Seccomp(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_the_filter_builds() {
        assert_eq!("enforce".parse(), Ok(SeccompMode::Enforce));
        assert_eq!("log".parse(), Ok(SeccompMode::Log));
        assert_eq!("off".parse(), Ok(SeccompMode::Off));
        assert!("strict".parse::<SeccompMode>().is_err());
        let prog = seccomp_program(SeccompMode::Enforce).unwrap();
        assert!(prog.len() > ALLOWED.len(), "{} instructions", prog.len());
        let names: std::collections::HashSet<_> = ALLOWED.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), ALLOWED.len(), "no name listed twice");
        for forbidden in ["execve", "ptrace", "bind", "listen", "setuid", "mount"] {
            assert!(!names.contains(&forbidden), "{forbidden} must stay out");
        }
    }
}
