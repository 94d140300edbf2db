//! Linux credentials: checking for `CAP_NET_RAW`, dropping every other capability, and (when
//! started as root) becoming an unprivileged user that keeps only `CAP_NET_RAW`, with an
//! empty bounding set and `no_new_privs`.
//!
//! Capabilities are per thread: these functions change the calling thread (and threads it
//! spawns afterwards), so call them before spawning workers. Seccomp and Landlock are not
//! here (the engine daemon's `sandbox` module installs them after these).

use caps::{CapSet, Capability, CapsHashSet};

/// What to tell a user who started the scanner without the capability it needs.
pub const NEED_NET_RAW: &str = "portscope needs CAP_NET_RAW to open raw sockets: run it as \
     root, or grant the capability once with `sudo setcap cap_net_raw+ep $(which portscope)`";

/// Changing capability sets failed.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// The kernel refused a change to one capability set.
    #[error("could not change the {set} capability set: {source}")]
    Caps {
        /// Which set (`bounding`, `ambient`, `inheritable`, `effective`, `permitted`).
        set: &'static str,
        /// The underlying failure.
        source: caps::errors::CapsError,
    },
    /// Everything else was dropped, but `CAP_NET_RAW` was not there to keep.
    #[error("{NEED_NET_RAW}")]
    NoNetRaw,
    /// The user to run as is not in the user database.
    #[error(
        "no user `{0}` to run as: create it, or pass --user with an existing unprivileged user"
    )]
    NoSuchUser(String),
    /// Refusing to "drop" to root.
    #[error("--user {0} is uid 0: name an unprivileged user (the default is `nobody`)")]
    RootUser(String),
    /// A credential system call failed.
    #[error("could not {what}: {source}")]
    Sys {
        /// What was being done.
        what: &'static str,
        /// The error number.
        source: nix::Error,
    },
}

/// An unprivileged identity to switch to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Real, effective and saved uid after the switch.
    pub uid: u32,
    /// Real, effective and saved gid, and the only supplementary group.
    pub gid: u32,
}

/// Looks up `user` (a name, or a numeric uid) in the user database; the gid is the user's
/// primary group. Refuses uid 0. Call it before any sandbox hides `/etc/passwd`.
pub fn lookup_user(user: &str) -> Result<Identity, PrivError> {
    let sys = |what| move |source| PrivError::Sys { what, source };
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(user),
    }
    .map_err(sys("read the user database"))?
    .ok_or_else(|| PrivError::NoSuchUser(user.to_string()))?;
    if found.uid.is_root() {
        return Err(PrivError::RootUser(user.to_string()));
    }
    Ok(Identity {
        uid: found.uid.as_raw(),
        gid: found.gid.as_raw(),
    })
}

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The effective uid.
pub fn current_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// As root: becomes `who` (uids, gids, supplementary groups) keeping only `CAP_NET_RAW`,
/// permitted and effective; clears the bounding, ambient and inheritable sets. Afterwards
/// the process cannot write root-owned files, regain a capability, or gain one on `exec`.
pub fn become_user_with_net_raw(who: Identity) -> Result<(), PrivError> {
    let err = |set: &'static str| move |source| PrivError::Caps { set, source };
    let sys = |what| move |source| PrivError::Sys { what, source };
    if !caps::has_cap(None, CapSet::Permitted, Capability::CAP_NET_RAW).map_err(err("permitted"))? {
        return Err(PrivError::NoNetRaw);
    }
    // The bounding set first, all of it: shrinking it needs CAP_SETPCAP, which goes with
    // the uid switch. It only limits what exec could grant; the permitted set keeps
    // CAP_NET_RAW.
    for cap in caps::all() {
        caps::drop(None, CapSet::Bounding, cap).map_err(err("bounding"))?;
    }
    // Keep the permitted set across the switch away from uid 0 (effective is cleared).
    caps::securebits::set_keepcaps(true).map_err(err("keepcaps"))?;
    let gid = nix::unistd::Gid::from_raw(who.gid);
    let uid = nix::unistd::Uid::from_raw(who.uid);
    nix::unistd::setgroups(&[gid]).map_err(sys("set the supplementary groups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(sys("switch group ids"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(sys("switch user ids"))?;
    caps::securebits::set_keepcaps(false).map_err(err("keepcaps"))?;
    drop_except(Some(Capability::CAP_NET_RAW))?;
    let ids = nix::unistd::getresuid().map_err(sys("read the user ids"))?;
    if [ids.real, ids.effective, ids.saved]
        .iter()
        .any(|u| u.is_root())
    {
        return Err(PrivError::RootUser(who.uid.to_string()));
    }
    Ok(())
}

/// Sets `no_new_privs`: no `exec` can ever grant privileges again (set-uid bits and file
/// capabilities are ignored). Needed before an unprivileged seccomp filter.
pub fn set_no_new_privs() -> Result<(), PrivError> {
    nix::sys::prctl::set_no_new_privs().map_err(|source| PrivError::Sys {
        what: "set no_new_privs",
        source,
    })
}

/// Whether the calling thread can open raw sockets now (`CAP_NET_RAW` is effective).
pub fn has_net_raw() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_RAW).unwrap_or(false)
}

/// Drops every capability except `CAP_NET_RAW` from the bounding (if `CAP_SETPCAP` allows
/// it), ambient, inheritable, permitted and effective sets, leaving `CAP_NET_RAW`
/// permitted and effective.
///
/// If `CAP_NET_RAW` was not permitted to begin with, everything is still dropped and
/// [`PrivError::NoNetRaw`] is returned.
pub fn drop_all_but_net_raw() -> Result<(), PrivError> {
    let had =
        caps::has_cap(None, CapSet::Permitted, Capability::CAP_NET_RAW).map_err(|source| {
            PrivError::Caps {
                set: "permitted",
                source,
            }
        })?;
    drop_except(had.then_some(Capability::CAP_NET_RAW))?;
    if had {
        Ok(())
    } else {
        Err(PrivError::NoNetRaw)
    }
}

/// Drops every capability from every set (the bounding set only if `CAP_SETPCAP` allows).
pub fn drop_all() -> Result<(), PrivError> {
    drop_except(None)
}

/// Leaves at most `keep` in permitted and effective (and bounding), nothing elsewhere.
fn drop_except(keep: Option<Capability>) -> Result<(), PrivError> {
    let err = |set: &'static str| move |source| PrivError::Caps { set, source };
    // The bounding set first: shrinking it needs CAP_SETPCAP, which we are about to drop.
    // Without CAP_SETPCAP the kernel would refuse (EPERM), so we do not try.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        let bounding = caps::read(None, CapSet::Bounding).map_err(err("bounding"))?;
        for cap in bounding.into_iter().filter(|c| Some(*c) != keep) {
            caps::drop(None, CapSet::Bounding, cap).map_err(err("bounding"))?;
        }
    }
    // Kernels before 4.3 have no ambient set, hence nothing to clear.
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(err("ambient"))?;
    }
    caps::clear(None, CapSet::Inheritable).map_err(err("inheritable"))?;
    let kept: CapsHashSet = keep.into_iter().collect();
    // Effective before permitted: effective must stay a subset of permitted.
    caps::set(None, CapSet::Effective, &kept).map_err(err("effective"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(err("permitted"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        assert!(NEED_NET_RAW.contains("CAP_NET_RAW"));
        assert!(NEED_NET_RAW.contains("setcap cap_net_raw+ep"));
        assert_eq!(PrivError::NoNetRaw.to_string(), NEED_NET_RAW);
    }

    #[test]
    fn users_are_looked_up_and_root_is_refused() {
        assert!(matches!(lookup_user("root"), Err(PrivError::RootUser(_))));
        assert!(matches!(lookup_user("0"), Err(PrivError::RootUser(_))));
        assert!(matches!(
            lookup_user("no-such-user-portscope"),
            Err(PrivError::NoSuchUser(_))
        ));
        // `nobody` exists on every system the engine supports (the default --user).
        let nobody = lookup_user("nobody").unwrap();
        assert_ne!(nobody.uid, 0);
        assert_eq!(lookup_user(&nobody.uid.to_string()).unwrap(), nobody);
    }
}
