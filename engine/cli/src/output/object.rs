//! The JSON object of one [`PortResult`], written without serde: the per-port hot path of
//! the ndjson and json formats, byte for byte what `serde_json` writes for it.
//!
//! A deep scan prints a line per port (a million for 16 full hosts with `--show closed`),
//! and through serde each line cost as much CPU as a probe's user-space share: escaping
//! the enum names, a formatter for the address. Every field here is a number, an address
//! or a fixed name that needs no escaping, so the object is a few appends. The tests hold
//! it to `serde_json`'s output for every variant, which stays the reference (and still
//! writes the rare flag objects).

use portscope_core::results::PortResult;
use std::io::Write;
use std::net::IpAddr;

/// Appends `r` as one JSON object (no newline), exactly as `serde_json::to_writer` would.
pub(super) fn push(buf: &mut Vec<u8>, r: &PortResult) {
    buf.extend_from_slice(br#"{"ip":""#);
    push_ip(buf, r.ip);
    buf.extend_from_slice(br#"","port":"#);
    push_int(buf, r.port);
    buf.extend_from_slice(br#","proto":""#);
    buf.extend_from_slice(super::proto_str(r.proto).as_bytes());
    buf.extend_from_slice(br#"","state":""#);
    buf.extend_from_slice(r.state.as_str().as_bytes());
    buf.extend_from_slice(br#"","reason":""#);
    buf.extend_from_slice(r.reason.as_str().as_bytes());
    buf.push(b'"');
    for (key, value) in [
        (&br#","ttl":"#[..], r.ttl),
        (br#","icmp_type":"#, r.icmp_type),
        (br#","icmp_code":"#, r.icmp_code),
    ] {
        if let Some(v) = value {
            buf.extend_from_slice(key);
            push_int(buf, v);
        }
    }
    buf.push(b'}');
}

fn push_int(buf: &mut Vec<u8>, n: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// An address as its `Display` writes it (serde's form); IPv4 without the formatter.
fn push_ip(buf: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            let [a, b, c, d] = a.octets();
            push_int(buf, a);
            for octet in [b, c, d] {
                buf.push(b'.');
                push_int(buf, octet);
            }
        }
        // Writing into a Vec cannot fail.
        IpAddr::V6(a) => write!(buf, "{a}").expect("write to a Vec"),
    }
}

#[cfg(test)]
mod tests {
    use super::push;
    use portscope_core::results::{PortResult, PortState, Reason};
    use std::net::IpAddr;

    /// Every state, reason and optional field, on addresses whose forms differ (short and
    /// long octets, compressed and full IPv6, mapped IPv4), against serde_json's bytes.
    #[test]
    fn every_object_is_what_serde_json_writes() {
        let ips: Vec<IpAddr> = [
            "0.0.0.0",
            "198.18.0.2",
            "255.255.255.255",
            "198.19.100.9",
            "::",
            "2001:2::2",
            "2001:db8:1:2:3:4:5:6",
            "::ffff:198.18.0.1",
            "fe80::1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let states = [PortState::Open, PortState::Closed, PortState::Filtered];
        let reasons = [
            Reason::SynAck,
            Reason::Reset,
            Reason::NoResponse,
            Reason::IcmpUnreachable,
        ];
        let bytes = [None, Some(0), Some(9), Some(64), Some(255)];
        let mut buf = Vec::new();
        let mut checked = 0;
        for &ip in &ips {
            for (i, &port) in [0u16, 1, 80, 9999, 65535].iter().enumerate() {
                for &state in &states {
                    for &reason in &reasons {
                        for &ttl in &bytes {
                            let r = PortResult {
                                icmp_type: bytes[i],
                                icmp_code: bytes[(i + 2) % bytes.len()],
                                ..PortResult::tcp(ip, port, state, reason, ttl)
                            };
                            buf.clear();
                            push(&mut buf, &r);
                            assert_eq!(
                                std::str::from_utf8(&buf).unwrap(),
                                serde_json::to_string(&r).unwrap()
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 9 * 5 * 3 * 4 * 5);
    }
}
