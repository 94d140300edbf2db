//! Fuzz target: `X-Callback-Url` / `webhookUrl` text never panics the URL check, and an
//! accepted IP-literal URL is refused unless its address is public (no DNS is done here).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portscope_input::callback::CallbackRules;
use portscope_input::netaddr::CidrSet;
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(url) = CallbackRules::parse(s) else {
        return;
    };
    assert!(matches!(url.scheme(), "http" | "https"));
    if let Some(ip) = CallbackRules::literal(&url) {
        let policy = CallbackRules::new(CidrSet::default());
        if policy.permitted(ip) {
            assert!(!ip.to_canonical().is_loopback(), "{s}");
            assert!(!ip.to_canonical().is_unspecified(), "{s}");
        }
        let host = url.host_str().expect("parse checked the host");
        let port = url.port_or_known_default().expect("parse checked the port");
        let checked = policy.check_addrs(host, &[SocketAddr::new(ip, port)]);
        assert_eq!(checked.is_ok(), policy.permitted(ip), "{s}");
    }
});
