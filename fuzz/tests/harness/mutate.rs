//! Mutations of real inputs, from a seeded generator so every run is reproducible: bit
//! flips, bytes and integers set to edge values (length fields at 0 and at extremes),
//! digits of text lengths replaced, truncations, deletions, duplications, insertions,
//! and splices of two inputs.

/// SplitMix64: small, fast, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Values that length and count fields break at.
fn edge_value(rng: &mut Rng, len: usize) -> u64 {
    let edges = [
        0,
        1,
        2,
        7,
        8,
        0x7f,
        0x80,
        0xff,
        0x7fff,
        0xffff,
        65528,
        65536,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        1 << 32,
        i64::MAX as u64,
        u64::MAX,
        len as u64,
        len.wrapping_sub(1) as u64,
        len as u64 + 1,
    ];
    edges[rng.below(edges.len())]
}

/// Where to change something: half the time among the first 64 bytes, where headers
/// and their length fields are.
fn offset(rng: &mut Rng, len: usize) -> usize {
    if rng.chance(2) {
        rng.below(len.min(64))
    } else {
        rng.below(len)
    }
}

/// Texts that numbers in text formats (RESP lengths, INFO, YAML) break at.
const NUMBER_TEXTS: &[&[u8]] = &[
    b"0",
    b"-1",
    b"1",
    b"65536",
    b"2147483648",
    b"4294967296",
    b"9223372036854775807",
    b"18446744073709551615",
    b"99999999999999999999",
    b"",
];

fn mutate_once(data: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    let len = data.len();
    match rng.below(11) {
        0 if len > 0 => {
            let at = offset(rng, len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = offset(rng, len);
            data[at] = [0, 0xff, 0x7f, 0x80, 1, b'\r', b'\n', b'*', b'$'][rng.below(9)];
        }
        2 if len > 0 => {
            // An integer field, little- or big-endian, at an edge value.
            let width = [1, 2, 3, 4, 8][rng.below(5)];
            let at = offset(rng, len);
            let value = edge_value(rng, len);
            let bytes = if rng.chance(2) {
                value.to_le_bytes()
            } else {
                value.to_be_bytes()
            };
            let bytes = if rng.chance(2) {
                &bytes[..width]
            } else {
                &bytes[8 - width..]
            };
            for (i, b) in bytes.iter().enumerate() {
                if let Some(slot) = data.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        3 if len > 0 => {
            // A run of ASCII digits replaced by another number.
            let start = offset(rng, len);
            if let Some(at) = data[start..].iter().position(u8::is_ascii_digit) {
                let at = start + at;
                let end = data[at..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(len, |n| at + n);
                let text = NUMBER_TEXTS[rng.below(NUMBER_TEXTS.len())];
                data.splice(at..end, text.iter().copied());
            }
        }
        4 => data.truncate(rng.below(len + 1)),
        5 if len > 0 => data.truncate(len - 1 - rng.below(len.min(16))),
        6 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(256));
            data.drain(at..at + n);
        }
        7 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(256));
            let copy = data[at..at + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, copy);
        }
        8 => {
            let n = 1 + rng.below(16);
            let bytes = rng.bytes(n);
            let to = rng.below(len + 1);
            data.splice(to..to, bytes);
        }
        9 => {
            // Splice: our head, then another input's tail.
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        _ => {
            // The head of another input, then ours.
            let n = rng.below(other.len().min(4096) + 1);
            data.splice(0..0, other[..n].iter().copied());
        }
    }
}

/// One to four mutations of `seed`, `other` lending bytes to splices.
pub fn mutate(seed: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(&mut data, other, rng);
    }
    data
}
