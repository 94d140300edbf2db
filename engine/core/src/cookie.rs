//! The SYN cookie: a keyed hash of a probe's 4-tuple carried in its sequence number.
//!
//! Replies are validated statelessly: a SYN-ACK must acknowledge `cookie + 1`, a RST must
//! acknowledge `cookie` or `cookie + 1`, an ICMP error must quote `cookie` as the sequence
//! number. Each scan draws a fresh 128-bit key (the runtime passes it in; this module draws
//! nothing), separate from the target-order seed, so one scan's replies never validate
//! against another's.

use siphasher::sip::SipHasher13;
use std::hash::Hasher;
use std::net::IpAddr;

/// A per-scan SipHash-1-3 key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CookieKey {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("CookieKey(..)")
    }
}

impl CookieKey {
    /// Builds a key from 16 random bytes supplied by the caller.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let mut k0 = [0u8; 8];
        let mut k1 = [0u8; 8];
        k0.copy_from_slice(&b[..8]);
        k1.copy_from_slice(&b[8..]);
        CookieKey {
            k0: u64::from_le_bytes(k0),
            k1: u64::from_le_bytes(k1),
        }
    }

    /// The 32-bit cookie for a probe from `local:local_port` to `remote:remote_port`.
    #[inline]
    pub fn cookie(&self, local: IpAddr, remote: IpAddr, local_port: u16, remote_port: u16) -> u32 {
        let mut buf = [0u8; 36];
        let n = match (local, remote) {
            (IpAddr::V4(l), IpAddr::V4(r)) => {
                buf[..4].copy_from_slice(&l.octets());
                buf[4..8].copy_from_slice(&r.octets());
                8
            }
            (l, r) => {
                buf[..16].copy_from_slice(&to_v6(l));
                buf[16..32].copy_from_slice(&to_v6(r));
                32
            }
        };
        buf[n..n + 2].copy_from_slice(&local_port.to_be_bytes());
        buf[n + 2..n + 4].copy_from_slice(&remote_port.to_be_bytes());
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(&buf[..n + 4]);
        let v = h.finish();
        (v ^ (v >> 32)) as u32
    }
}

fn to_v6(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_on_every_field_and_key() {
        let k = CookieKey::from_bytes([7; 16]);
        let l: IpAddr = "198.18.0.1".parse().unwrap();
        let r: IpAddr = "198.18.0.2".parse().unwrap();
        let base = k.cookie(l, r, 61440, 80);
        assert_eq!(base, k.cookie(l, r, 61440, 80), "deterministic");
        assert_ne!(base, k.cookie(r, l, 61440, 80));
        assert_ne!(base, k.cookie(l, r, 61441, 80));
        assert_ne!(base, k.cookie(l, r, 61440, 81));
        assert_ne!(base, CookieKey::from_bytes([8; 16]).cookie(l, r, 61440, 80));
        let l6: IpAddr = "2001:2::1".parse().unwrap();
        let r6: IpAddr = "2001:2::2".parse().unwrap();
        assert_ne!(k.cookie(l6, r6, 61440, 80), k.cookie(l6, r6, 61440, 443));
    }

    #[test]
    fn debug_hides_key() {
        assert_eq!(
            format!("{:?}", CookieKey::from_bytes([1; 16])),
            "CookieKey(..)"
        );
    }
}
