//! Fuzz target: CIDRs from flags, config and list files (opt-out list, trusted proxies,
//! allowed ranges, ASN table lines) never panic; an overlap found is a real overlap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portscope_input::netaddr::{AsnTable, Cidr, CidrSet};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let nets: Vec<ipnet::IpNet> = s
        .lines()
        .filter_map(|l| l.parse::<Cidr>().ok())
        .map(|c| c.0)
        .collect();
    let set = CidrSet::new(nets.iter().copied());
    for n in &nets {
        let hit = set.overlapping(*n).expect("a range overlaps itself");
        assert!(hit.contains(&n.network()) || n.contains(&hit.network()));
        assert!(set.contains(n.network()));
    }
    let _ = AsnTable::parse(s, "fuzz");
});
