//! Fuzz target: `X-Callback-Url` / `webhookUrl` text never panics the URL check, and an
//! accepted IP-literal URL is refused unless its address is public (no DNS is done here).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portscope_control_api::netaddr::CidrSet;
use portscope_control_api::webhook::CallbackPolicy;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(url) = CallbackPolicy::parse(s) else {
        return;
    };
    assert!(matches!(url.scheme(), "http" | "https"));
    if let Some(ip) = CallbackPolicy::literal(&url) {
        let policy = CallbackPolicy::new(CidrSet::default());
        if policy.permitted(ip) {
            assert!(!ip.to_canonical().is_loopback(), "{s}");
            assert!(!ip.to_canonical().is_unspecified(), "{s}");
        }
    }
});
