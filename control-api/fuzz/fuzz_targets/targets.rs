//! Fuzz target: managed-scan targets and token scopes (IP, CIDR, host name, `*.name`) from
//! untrusted text never panic, and what parses prints back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portscope_input::scope::{parse_domain, Scope, TargetSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = TargetSpec::parse(s) {
        let again = TargetSpec::parse(&t.to_string()).expect("a parsed target re-parses");
        assert_eq!(again, t);
    }
    if let Some(d) = parse_domain(s) {
        assert!(d.len() <= 253);
        assert_eq!(parse_domain(&d).as_deref(), Some(d.as_str()));
    }
    if let Ok(scope) = Scope::parse(s.split(',')) {
        let text = scope.to_text();
        assert_eq!(
            Scope::parse_text(&text).expect("stored scope re-parses"),
            scope
        );
        if let Ok(t) = TargetSpec::parse(s) {
            if let TargetSpec::Ip(ip) = t {
                let _ = scope.contains_ip(ip);
            }
        }
    }
});
