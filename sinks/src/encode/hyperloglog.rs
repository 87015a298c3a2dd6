//! Pika 3.x keeps a HyperLogLog as a plain 131072-byte string of one-byte registers
//! (precision 17), not Redis's `HYLL` format, and marks it nowhere. A register holds at
//! most 16, so a string of exactly that size whose bytes are all ≤ 16 is taken for one.

/// Size of Pika's HyperLogLog string.
pub const PIKA_HLL_BYTES: usize = 131072;

pub fn is_pika_hyperloglog(value: &[u8]) -> bool {
    value.len() == PIKA_HLL_BYTES && value.iter().all(|b| *b <= 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_register_strings_only() {
        let mut v = vec![0u8; PIKA_HLL_BYTES];
        v[7] = 16;
        assert!(is_pika_hyperloglog(&v));
        v[9] = 17;
        assert!(!is_pika_hyperloglog(&v));
        assert!(!is_pika_hyperloglog(&[0u8; 100]));
    }
}
