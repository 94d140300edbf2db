//! The Internet checksum (RFC 1071) with the incremental helpers probe stamping needs.
//!
//! Sums are kept unfolded in a `u32`/`u64` accumulator so a template can precompute the
//! constant part once and add only the per-packet words.

/// Adds `data` as big-endian 16-bit words to `acc` (odd trailing byte padded with zero).
#[inline]
pub fn add_bytes(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Adds a 32-bit value as two 16-bit words.
#[inline]
pub fn add_u32(acc: u64, v: u32) -> u64 {
    acc + u64::from(v >> 16) + u64::from(v & 0xffff)
}

/// Folds an accumulator to 16 bits and returns the one's complement (the value to store).
#[inline]
pub fn finish(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of `data` (a header with its checksum field included reads as zero when valid).
pub fn checksum(data: &[u8]) -> u16 {
    finish(add_bytes(0, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example bytes: sum is 0xddf2, checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0xab]), !0xab00);
    }

    #[test]
    fn valid_header_sums_to_zero() {
        // A real IPv4 header (checksum 0xb861) from a capture.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0);
    }
}
