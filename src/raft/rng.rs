//! A tiny seeded pseudo-random generator for election timeouts.
//!
//! SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
//! OOPSLA 2014): a 64-bit counter advanced by the golden-ratio constant and passed through a
//! bijective finalizer. It is not cryptographic and needs no more: Raft only needs election
//! timeouts that differ between nodes (Raft §5.2). Being seeded (never from a clock or the
//! operating system), it makes every run of the core replay exactly from its seed.

/// SplitMix64. Every seed, including 0, gives a full-period sequence.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is fixed by `seed`.
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 pseudo-random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[0, bound)` (Lemire's multiply-shift; the bias is below 2^-32 for the
    /// small bounds used here). `bound` must be positive.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "SplitMix64::below needs a positive bound");
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Mixes a node id into a seed (FNV-1a), so nodes configured with the same seed still draw
/// different election timeouts.
pub(crate) fn seed_for(seed: u64, id: &str) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    seed ^ hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::new(1);
        for bound in 1..50 {
            assert!(rng.below(bound) < bound);
        }
    }

    #[test]
    fn ids_change_the_seed() {
        assert_ne!(seed_for(1, "n1"), seed_for(1, "n2"));
    }
}
