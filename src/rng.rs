//! Seedable pseudo-random numbers for tools and tests: benchmark tokens,
//! `check-device`'s data, test rows. Plain xorshift64: fast and
//! reproducible, for nothing secret or statistical.

/// xorshift64 (shifts 13, 7, 17); yields the state after each step.
pub struct XorShift(u64);

impl XorShift {
    /// A generator whose state is `seed` spread by the golden-ratio
    /// constant, made odd so that it is never zero.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A generator from a raw nonzero state.
    pub fn from_state(state: u64) -> Self {
        assert_ne!(state, 0, "xorshift's state must not be zero");
        Self(state)
    }
}

impl Iterator for XorShift {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Some(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift;

    #[test]
    fn reproduces_the_sequences_the_tools_were_measured_with() {
        // Worked out apart from this code (Python, the same shifts).
        let v: Vec<u64> = XorShift::new(1).take(2).collect();
        assert_eq!(v, [0xdc1b_77ae_0bf3_4dad, 0x64f0_eeb9_026e_6076]);
        assert_eq!(XorShift::from_state(5).next(), Some(0x1_428a_a145));
    }
}
