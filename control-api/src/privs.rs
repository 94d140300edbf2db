//! Process hardening of the API binary, run first in `main` before any thread exists (so
//! every thread inherits it): `PR_SET_NO_NEW_PRIVS` (no exec can gain privileges, whatever
//! setuid bits or file capabilities it meets) and no capabilities at all: the bounding set
//! is emptied (when the process may, i.e. holds `CAP_SETPCAP`, as when started as root),
//! then the ambient, inheritable, effective and permitted sets. The API needs none: it
//! only serves TCP on unprivileged or pre-granted ports and talks to the engine socket.

use caps::CapSet;

/// What [`harden`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardened {
    /// `PR_SET_NO_NEW_PRIVS` is set.
    pub no_new_privs: bool,
    /// The capability bounding set is empty.
    pub bounding_empty: bool,
}

/// Sets no-new-privs and drops every capability. Fails only if no-new-privs or clearing
/// the effective / permitted sets fails; a bounding set the process may not change (no
/// `CAP_SETPCAP`: an unprivileged start) is reported, not an error, since no-new-privs
/// already keeps any exec from using it.
pub fn harden() -> Result<Hardened, String> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    let bounding_empty = caps::clear(None, CapSet::Bounding).is_ok()
        || caps::read(None, CapSet::Bounding).is_ok_and(|s| s.is_empty());
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set).map_err(|e| format!("cannot clear {set:?} capabilities: {e}"))?;
    }
    Ok(Hardened {
        no_new_privs: nix::sys::prctl::get_no_new_privs().unwrap_or(false),
        bounding_empty,
    })
}
