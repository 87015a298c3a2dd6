//! floyd (Pika 4.0) bytes: user-key escaping, meta and data keys, values, times, and
//! the two `floyd.*` comparators.

use std::cmp::Ordering;

use arbitrary::Unstructured;

use super::comparators::consistent;
use pika_migrate_core::pika::storage::floyd::comparator::{
    compare_lists_data_key, compare_zsets_score_key,
};
use pika_migrate_core::pika::storage::floyd::format::{
    data_value, meta_type, time_to_millis, zset_score, CollectionMeta, ListMeta, StringValue,
};
use pika_migrate_core::pika::storage::floyd::key::{
    data_key_element, data_key_prefix, decode_user_key, encode_user_key, parse_meta_key,
    user_key_end, SUFFIX_RESERVE,
};

/// Every floyd decoder on the same bytes: none panics, what is accepted is consistent
/// (a decoded user key encodes back to the bytes it came from, a cut name ends in NUL,
/// parsed values lie inside the input).
pub fn floyd_bytes(data: &[u8]) {
    if let Some((key, rest)) = decode_user_key(data) {
        let used = data.len() - rest.len();
        assert_eq!(
            encode_user_key(&key),
            &data[..used],
            "round trip of {key:?}"
        );
        assert_eq!(user_key_end(data), Some(used));
    }
    if let Ok(meta) = parse_meta_key(data) {
        assert!(!meta.truncated || meta.user_key.last() == Some(&0));
        let prefix = data_key_prefix(&meta.user_key, 0);
        let _ = data_key_element(data, &prefix);
    }
    let _ = data.first().map(|b| meta_type(*b));
    if let Ok(s) = StringValue::parse(data) {
        assert!(s.value.0 <= s.value.1 && s.value.1 + 32 == data.len());
    }
    if CollectionMeta::parse(data).is_ok() {
        assert_eq!(data.len(), CollectionMeta::LEN);
    }
    if ListMeta::parse(data).is_ok() {
        assert_eq!(data.len(), ListMeta::LEN);
    }
    if let Ok(v) = data_value(data) {
        assert_eq!(v.len() + SUFFIX_RESERVE + 8, data.len());
    }
    assert_eq!(zset_score(data).is_ok(), data.len() == 32);
    if let Some(head) = data.get(..8) {
        let raw = u64::from_le_bytes(head.try_into().unwrap_or_default());
        if let Ok(Some(ms)) = time_to_millis(raw) {
            assert!(ms >= 0);
        }
    }
}

/// Any bytes, then well-formed keys: on those the order is floyd's (list: encoded user
/// key bytewise, version and index as u64; score: user key, version bytewise, score as
/// a double with -0 equal to +0, then member and reserve).
pub fn floyd_comparators(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let raw: Vec<Vec<u8>> = (0..3).map(|_| u.arbitrary().unwrap_or_default()).collect();
    consistent(compare_lists_data_key, &raw);
    consistent(compare_zsets_score_key, &raw);

    let keys: [&[u8]; 4] = [b"", b"k", b"k\x00", b"k\x00a"];
    let mut lists = Vec::new();
    let mut scores = Vec::new();
    for _ in 0..3 {
        let key = keys[usize::from(u.arbitrary::<u8>().unwrap_or(0)) % keys.len()];
        let version: u64 = u.arbitrary().unwrap_or(0);
        let index: u64 = u.arbitrary().unwrap_or(0);
        let score = f64::from_bits(u.arbitrary().unwrap_or(0));
        let member: Vec<u8> = u.arbitrary().unwrap_or_default();
        lists.push((key, version, index));
        if !score.is_nan() {
            scores.push((key, version, score, member));
        }
    }
    let reserve = [0u8; SUFFIX_RESERVE];
    let list_key = |(key, version, index): (&[u8], u64, u64)| {
        let mut k = data_key_prefix(key, version);
        k.extend_from_slice(&index.to_le_bytes());
        k.extend_from_slice(&reserve);
        k
    };
    for a in &lists {
        for b in &lists {
            let expected = encode_user_key(a.0)
                .cmp(&encode_user_key(b.0))
                .then(a.1.cmp(&b.1))
                .then(a.2.cmp(&b.2));
            let got = compare_lists_data_key(&list_key(*a), &list_key(*b));
            assert_eq!(got, expected, "list keys {a:?} and {b:?}");
        }
    }
    let score_key = |(key, version, score, member): &(&[u8], u64, f64, Vec<u8>)| {
        let mut k = data_key_prefix(key, *version);
        k.extend_from_slice(&score.to_le_bytes());
        k.extend_from_slice(member);
        k.extend_from_slice(&reserve);
        k
    };
    for a in &scores {
        for b in &scores {
            let mut rest_a = a.3.clone();
            rest_a.extend_from_slice(&reserve);
            let mut rest_b = b.3.clone();
            rest_b.extend_from_slice(&reserve);
            let expected =
                a.0.cmp(b.0)
                    .then(a.1.to_le_bytes().cmp(&b.1.to_le_bytes()))
                    .then(a.2.partial_cmp(&b.2).unwrap_or(Ordering::Equal))
                    .then(rest_a.cmp(&rest_b));
            assert_eq!(
                compare_zsets_score_key(&score_key(a), &score_key(b)),
                expected,
                "score keys {a:?} and {b:?}"
            );
        }
    }
}
