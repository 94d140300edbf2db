//! Fuzz target: port lists and profiles of managed scans (`ports`, `profile`) from
//! untrusted text never panic; an accepted list is non-empty and its count is exact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portscope_input::order::{check_size, profile_ports};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (profile, ports) = match s.split_once('|') {
        Some((p, rest)) => (Some(p), Some(rest)),
        None => (None, Some(s)),
    };
    if let Ok((name, spec, count)) = profile_ports(profile, ports) {
        assert!(count >= 1 && count <= 65_535, "{spec}: {count}");
        assert!(["fast", "deep", "custom"].contains(&name.as_str()));
        let _ = check_size(&["198.18.0.0/16".to_string()], count);
    }
    let _ = profile_ports(Some(s), None);
});
