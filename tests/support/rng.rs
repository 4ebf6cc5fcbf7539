//! A deterministic xorshift64 generator: the same seed gives the same noise
//! and the same choices on every run, so a failing case can be replayed.

/// xorshift64 (shifts 13, 7, 17); the seed must not be 0.
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    /// The next state.
    pub fn next_u64(&mut self) -> u64 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.0 = s;
        s
    }

    /// A number below `m` (`m` > 0).
    pub fn below(&mut self, m: u64) -> u64 {
        self.next_u64() % m
    }

    /// An index below `m` (`m` > 0).
    pub fn index(&mut self, m: usize) -> usize {
        self.below(m as u64) as usize
    }
}

/// `len` deterministic pseudo-random bytes from `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift(seed);
    (0..len).map(|_| (rng.next_u64() >> 32) as u8).collect()
}
