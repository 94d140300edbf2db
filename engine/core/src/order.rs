//! A keyed pseudo-random permutation of `0..n` with no per-element state.
//!
//! The scan visits (target x port) pairs in the order `at(0), at(1), ...`; every pair is
//! visited exactly once and consecutive probes land on unrelated hosts and ports, so no host
//! sees a burst. It is a 4-round balanced Feistel network on the smallest even-bit power of
//! two >= n, with cycle walking to stay inside `0..n`. Being a Feistel network it is also
//! cheaply invertible: [`Permutation::position_of`] maps a pair back to the moment in the
//! send sequence it was probed, which is how the runtime measures RTT without timestamps.

/// A permutation of `0..len`.
#[derive(Debug, Clone)]
pub struct Permutation {
    len: u64,
    half_bits: u32,
    mask: u64,
    keys: [u64; 4],
}

#[inline]
fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser: a bijective avalanche mix.
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Permutation {
    /// A permutation of `0..len` chosen by `seed`. `len` may be 0.
    pub fn new(len: u64, seed: u64) -> Self {
        let bits = 64 - len.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let mut keys = [0u64; 4];
        let mut s = seed;
        for k in &mut keys {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            *k = mix(s);
        }
        Permutation {
            len,
            half_bits,
            mask: (1u64 << half_bits) - 1,
            keys,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the permutation is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn round(&self, r: u64, k: u64) -> u64 {
        mix(r ^ k) & self.mask
    }

    #[inline]
    fn encrypt(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> self.half_bits, x & self.mask);
        for &k in &self.keys {
            (l, r) = (r, l ^ self.round(r, k));
        }
        (l << self.half_bits) | r
    }

    #[inline]
    fn decrypt(&self, y: u64) -> u64 {
        let (mut l, mut r) = (y >> self.half_bits, y & self.mask);
        for &k in self.keys.iter().rev() {
            (l, r) = (r ^ self.round(l, k), l);
        }
        (l << self.half_bits) | r
    }

    /// The element at position `i` (`i < len`).
    #[inline]
    pub fn at(&self, i: u64) -> u64 {
        debug_assert!(i < self.len);
        self.walk(i, |x| self.encrypt(x))
    }

    /// The position at which `x` is visited (`x < len`): the inverse of [`Self::at`].
    #[inline]
    pub fn position_of(&self, x: u64) -> u64 {
        debug_assert!(x < self.len);
        self.walk(x, |y| self.decrypt(y))
    }

    /// Cycle-walking: `step` applied to `v` until the result falls below `len`. The cipher
    /// permutes `[0, 2^bits)`, so the walk from a value below `len` ends, and encrypting
    /// and decrypting walk the same cycle in opposite directions.
    #[inline]
    fn walk(&self, v: u64, step: impl Fn(u64) -> u64) -> u64 {
        let mut x = step(v);
        while x >= self.len {
            x = step(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn visits_each_exactly_once() {
        for len in [1u64, 2, 3, 5, 17, 255, 256, 257, 65_535, 100_000] {
            let p = Permutation::new(len, 42);
            let mut seen = vec![false; len as usize];
            for i in 0..len {
                let x = p.at(i);
                assert!(!seen[x as usize], "len {len}: {x} visited twice");
                seen[x as usize] = true;
                assert_eq!(p.position_of(x), i);
            }
        }
    }

    #[test]
    fn spreads_consecutive_positions() {
        // 16 hosts x 65,535 ports: within any 64 consecutive probes, no host gets more
        // than a fair share times a small factor.
        let ports = 65_535u64;
        let p = Permutation::new(16 * ports, 7);
        let mut worst = 0;
        for w in 0..2_000u64 {
            let mut per_host = [0u32; 16];
            for i in w * 64..(w + 1) * 64 {
                per_host[(p.at(i) / ports) as usize] += 1;
            }
            worst = worst.max(*per_host.iter().max().unwrap());
        }
        assert!(worst <= 16, "a host got {worst} of 64 consecutive probes");
    }

    #[test]
    fn seed_changes_order() {
        let a = Permutation::new(1000, 1);
        let b = Permutation::new(1000, 2);
        assert!((0..1000).any(|i| a.at(i) != b.at(i)));
    }

    proptest! {
        #[test]
        fn inverse_round_trips(len in 1u64..1u64 << 40, seed: u64, i in any::<u64>()) {
            let p = Permutation::new(len, seed);
            let i = i % len;
            let x = p.at(i);
            prop_assert!(x < len);
            prop_assert_eq!(p.position_of(x), i);
        }
    }
}
