//! Fuzz target: arbitrary bytes through the reply parser and a scan's classifier must never
//! panic, and whatever validates must map back to exactly the address and port it names.
//! (libFuzzer's comparison tracing can learn the fixed test key's cookie from the compare,
//! which an off-path sender cannot; "random frames never validate" is a property test.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use portscope_core::classify::{ScanSpace, Sources};
use portscope_core::cookie::CookieKey;
use portscope_core::reply;
use portscope_core::targets::{parse_net, PortSet, TargetSet};
use std::sync::OnceLock;

fn space() -> &'static ScanSpace {
    static S: OnceLock<ScanSpace> = OnceLock::new();
    S.get_or_init(|| {
        let t = TargetSet::new(&[parse_net("198.18.0.0/16").unwrap(), parse_net("2001:2::/112").unwrap()], &[]).unwrap();
        ScanSpace::new(
            CookieKey::from_bytes([0x42; 16]),
            7,
            t,
            PortSet::parse("-").unwrap(),
            Sources { v4: Some("198.18.0.1".parse().unwrap()), v6: Some("2001:2::1".parse().unwrap()) },
            0,
        )
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = reply::parse(data) {
        if let Ok(o) = space().classify(&r) {
            assert!(o.pair < space().pairs());
            let res = space().result(&o);
            assert_eq!((res.ip, res.port), (r.remote, r.remote_port), "{r:?}");
        }
    }
});
