//! blackwidow's two custom comparators, on any bytes and on well-formed keys.

use std::cmp::Ordering;

use arbitrary::Unstructured;
use pika_migrate_core::pika::storage::comparator::{
    compare_lists_data_key, compare_zsets_score_key,
};
use pika_migrate_core::pika::storage::format::data_key_prefix;

/// A key of the lists `data_cf`: `keylen ‖ key ‖ version ‖ index`.
pub(super) fn list_key(key: &[u8], version: i32, index: u64) -> Vec<u8> {
    let mut k = data_key_prefix(key, version as u32);
    k.extend_from_slice(&index.to_le_bytes());
    k
}

/// A key of the zsets `score_cf`: `keylen ‖ key ‖ version ‖ score ‖ member`.
fn score_key(key: &[u8], version: i32, score: f64, member: &[u8]) -> Vec<u8> {
    let mut k = data_key_prefix(key, version as u32);
    k.extend_from_slice(&score.to_le_bytes());
    k.extend_from_slice(member);
    k
}

pub(super) type Compare = fn(&[u8], &[u8]) -> Ordering;

/// Never panics, and orders consistently: `a == a`, and `b` to `a` the reverse of `a`
/// to `b`. RocksDB calls these on whatever a damaged file holds.
pub(super) fn consistent(cmp: Compare, keys: &[Vec<u8>]) {
    for a in keys {
        assert_eq!(cmp(a, a), Ordering::Equal, "{a:?} is not equal to itself");
        for b in keys {
            assert_eq!(cmp(a, b), cmp(b, a).reverse(), "{a:?} and {b:?}");
        }
    }
}

/// Any bytes, then well-formed keys: on those the order is the documented one (user
/// key bytewise, then version as i32, then the index as u64 / the score as a double
/// with -0 equal to +0, then the member).
pub fn comparators(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let raw: Vec<Vec<u8>> = (0..3).map(|_| u.arbitrary().unwrap_or_default()).collect();
    consistent(compare_lists_data_key, &raw);
    consistent(compare_zsets_score_key, &raw);

    let keys: [&[u8]; 3] = [b"", b"k", b"k\x00"];
    let mut lists = Vec::new();
    let mut scores = Vec::new();
    for _ in 0..3 {
        let key = keys[usize::from(u.arbitrary::<u8>().unwrap_or(0)) % keys.len()];
        let version: i32 = u.arbitrary().unwrap_or(0);
        let index: u64 = u.arbitrary().unwrap_or(0);
        let score = f64::from_bits(u.arbitrary().unwrap_or(0));
        let member: Vec<u8> = u.arbitrary().unwrap_or_default();
        lists.push((key, version, index));
        if !score.is_nan() {
            scores.push((key, version, score, member));
        }
    }
    for a in &lists {
        for b in &lists {
            let expected = a.0.cmp(b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2));
            let got = compare_lists_data_key(&list_key(a.0, a.1, a.2), &list_key(b.0, b.1, b.2));
            assert_eq!(got, expected, "list keys {a:?} and {b:?}");
        }
    }
    for a in &scores {
        for b in &scores {
            let (ka, kb) = (
                score_key(a.0, a.1, a.2, &a.3),
                score_key(b.0, b.1, b.2, &b.3),
            );
            let prefix = |k: &[u8], key: &[u8]| k[..8 + key.len()].to_vec();
            let expected = prefix(&ka, a.0)
                .cmp(&prefix(&kb, b.0))
                .then(a.2.partial_cmp(&b.2).unwrap_or(Ordering::Equal))
                .then(a.3.cmp(&b.3));
            assert_eq!(
                compare_zsets_score_key(&ka, &kb),
                expected,
                "score keys {a:?} and {b:?}"
            );
        }
    }
}
