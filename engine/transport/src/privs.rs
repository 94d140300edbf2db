//! Linux capabilities: checking for `CAP_NET_RAW` and dropping everything the scanner does
//! not need once it is running.
//!
//! Capabilities are per thread: these functions change the calling thread (and threads it
//! spawns afterwards), so call them before spawning workers. This module does not change
//! user ids, set `no_new_privs` or install seccomp filters; it only shrinks capability sets.

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
}
