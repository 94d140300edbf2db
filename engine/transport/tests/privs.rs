//! Capability dropping, checked with `caps::read` in a child process (capabilities are
//! process state, so the test harness itself must keep its own). Needs root; fails without.

mod support;

use caps::{CapSet, Capability};
use portscope_transport::privs;
use support::in_child;

fn set(s: CapSet) -> Vec<Capability> {
    let mut v: Vec<Capability> = caps::read(None, s).unwrap().into_iter().collect();
    v.sort_by_key(|c| c.index());
    v
}

#[test]
fn drop_all_but_net_raw_keeps_only_net_raw() {
    in_child("drop_all_but_net_raw_keeps_only_net_raw", || {
        assert!(
            privs::has_net_raw(),
            "this test must start with CAP_NET_RAW (run as root)"
        );
        assert!(
            caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap(),
            "this test must start with CAP_SETPCAP (run as root)"
        );
        privs::drop_all_but_net_raw().expect("drop");
        let only = vec![Capability::CAP_NET_RAW];
        assert_eq!(set(CapSet::Effective), only);
        assert_eq!(set(CapSet::Permitted), only);
        assert_eq!(set(CapSet::Bounding), only);
        assert_eq!(set(CapSet::Inheritable), vec![]);
        assert_eq!(set(CapSet::Ambient), vec![]);
        assert!(privs::has_net_raw());
        // Idempotent: the bounding set can no longer be touched (no CAP_SETPCAP) and that
        // is not an error.
        privs::drop_all_but_net_raw().expect("second drop");
        assert_eq!(set(CapSet::Effective), only);
    });
}

#[test]
fn drop_all_drops_everything() {
    in_child("drop_all_drops_everything", || {
        privs::drop_all().expect("drop");
        for s in [
            CapSet::Effective,
            CapSet::Permitted,
            CapSet::Inheritable,
            CapSet::Ambient,
            CapSet::Bounding,
        ] {
            assert_eq!(set(s), vec![], "{s:?}");
        }
        assert!(!privs::has_net_raw());
        // Nothing left to keep: everything is still dropped, and the caller is told why
        // it will not be able to scan.
        match privs::drop_all_but_net_raw() {
            Err(e @ privs::PrivError::NoNetRaw) => {
                assert_eq!(e.to_string(), privs::NEED_NET_RAW)
            }
            other => panic!("expected NoNetRaw, got {other:?}"),
        }
    });
}
