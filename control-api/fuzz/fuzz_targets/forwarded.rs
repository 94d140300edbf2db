//! Fuzz target: `X-Forwarded-For` headers never panic the client-address logic; from an
//! untrusted peer the answer is always the peer itself.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portscope_input::netaddr::{client_ip, CidrSet};
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for part in data.split(|b| *b == b'\n').take(8) {
        if let Ok(v) = HeaderValue::from_bytes(part) {
            headers.append("x-forwarded-for", v);
        }
    }
    let trusted = CidrSet::new(["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    if let Ok(ip) = client_ip(proxy, &headers, &trusted) {
        assert_eq!(ip, ip.to_canonical());
    }
    let outsider: IpAddr = "93.184.216.34".parse().unwrap();
    assert_eq!(client_ip(outsider, &headers, &trusted), Ok(outsider));
});
