//! Who may talk to the engine: the peer's credentials (`SO_PEERCRED`) against the daemon's
//! own uid and the operator's allow lists. Pure; the socket file mode is the other gate.

/// Allowed peers: root, the daemon's own uid, peers whose primary group is the daemon's
/// group (how the systemd units connect the API: `Group=portscope` on both), and the listed
/// uids and gids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    /// The daemon's uid (filled in from the owner of the socket file it created).
    pub daemon_uid: Option<u32>,
    /// The daemon's gid (filled in from the group of the socket file it created).
    pub daemon_gid: Option<u32>,
    /// Extra allowed uids (`--allow-uid`).
    pub uids: Vec<u32>,
    /// Allowed primary gids of the peer (`--allow-gid`). `SO_PEERCRED` carries only the
    /// primary gid, not supplementary groups.
    pub gids: Vec<u32>,
}

/// A peer that may not talk to the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer uid {uid} not allowed")]
pub struct PeerRefused {
    /// The peer's uid.
    pub uid: u32,
    /// The peer's primary gid.
    pub gid: u32,
}

impl PeerPolicy {
    /// Whether a peer with `uid` / `gid` may talk to the engine.
    pub fn check(&self, uid: u32, gid: u32) -> Result<(), PeerRefused> {
        let ok = uid == 0
            || Some(uid) == self.daemon_uid
            || Some(gid) == self.daemon_gid
            || self.uids.contains(&uid)
            || self.gids.contains(&gid);
        if ok {
            Ok(())
        } else {
            Err(PeerRefused { uid, gid })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_self_and_listed_peers_only() {
        let p = PeerPolicy {
            daemon_uid: Some(990),
            daemon_gid: Some(991),
            uids: vec![1000],
            gids: vec![977],
        };
        assert!(p.check(0, 5).is_ok(), "root");
        assert!(p.check(990, 990).is_ok(), "the daemon's own uid");
        assert!(p.check(1000, 1000).is_ok(), "allowed uid");
        assert!(p.check(1234, 977).is_ok(), "allowed gid");
        assert!(p.check(1235, 991).is_ok(), "the daemon's own group");
        let e = p.check(65534, 65534).unwrap_err();
        assert_eq!(e.to_string(), "peer uid 65534 not allowed");
        assert!(PeerPolicy::default().check(1, 1).is_err(), "nothing else");
    }
}
