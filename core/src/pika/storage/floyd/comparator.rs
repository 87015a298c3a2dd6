//! floyd's two custom key orders (Pika 4.0), registered under their names: RocksDB
//! refuses to open a column family whose recorded comparator is missing, and seeks go
//! wrong under another order. Both must never panic: RocksDB calls them on whatever a
//! damaged file holds, and on the shortened index keys Pika's separator writes.

use std::cmp::Ordering;

use super::key::{decode_user_key, user_key_end, PREFIX_RESERVE};
use crate::pika::storage::comparator::ends_first;

/// Comparator of `list_data_cf`: `reserve 8B ‖ enc(key) ‖ version u64 ‖ index u64 ‖
/// reserve 16B`.
pub const LISTS_DATA_KEY: &str = "floyd.ListsDataKeyComparator";
/// Comparator of `zset_score_cf`: `reserve 8B ‖ enc(key) ‖ version u64 ‖ score f64 ‖
/// member ‖ reserve 16B`.
pub const ZSETS_SCORE_KEY: &str = "floyd.ZSetsScoreKeyComparator";

fn take_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let head: [u8; 8] = s.get(..8)?.try_into().ok()?;
    Some((u64::from_le_bytes(head), &s[8..]))
}

/// Splits a key after its encoded user key (reserve and terminator included). Bytes
/// without a terminator are all prefix.
fn split_after_user_key(k: &[u8]) -> (&[u8], &[u8]) {
    let Some(encoded) = k.get(PREFIX_RESERVE..) else {
        return (k, &[]);
    };
    let end = user_key_end(encoded).map_or(k.len(), |e| PREFIX_RESERVE + e);
    k.split_at(end)
}

/// `floyd.ListsDataKeyComparator`: the reserve and encoded user key bytewise, then the
/// version and the index as unsigned 64-bit numbers; a key that ends sorts first.
pub fn compare_lists_data_key(a: &[u8], b: &[u8]) -> Ordering {
    if a.len() <= PREFIX_RESERVE || b.len() <= PREFIX_RESERVE {
        return a.cmp(b);
    }
    let (prefix_a, rest_a) = split_after_user_key(a);
    let (prefix_b, rest_b) = split_after_user_key(b);
    let by_prefix = prefix_a.cmp(prefix_b);
    if by_prefix != Ordering::Equal {
        return by_prefix;
    }
    if let Some(o) = ends_first(rest_a, rest_b) {
        return o;
    }
    let (Some((va, rest_a)), Some((vb, rest_b))) = (take_u64(rest_a), take_u64(rest_b)) else {
        return rest_a.cmp(rest_b);
    };
    let by_version = va.cmp(&vb);
    if by_version != Ordering::Equal {
        return by_version;
    }
    if let Some(o) = ends_first(rest_a, rest_b) {
        return o;
    }
    match (take_u64(rest_a), take_u64(rest_b)) {
        // Pika stops at the index: the reserve after it never decides.
        (Some((ia, _)), Some((ib, _))) => ia.cmp(&ib),
        _ => rest_a.cmp(rest_b),
    }
}

/// `floyd.ZSetsScoreKeyComparator`: the reserve bytewise, the decoded user key
/// bytewise, the version bytewise, the score as a double (−0.0 equals +0.0), then the
/// rest (member and reserve) bytewise.
pub fn compare_zsets_score_key(a: &[u8], b: &[u8]) -> Ordering {
    let (Some(ea), Some(eb)) = (a.get(PREFIX_RESERVE..), b.get(PREFIX_RESERVE..)) else {
        return a.cmp(b);
    };
    let by_reserve = a[..PREFIX_RESERVE].cmp(&b[..PREFIX_RESERVE]);
    if by_reserve != Ordering::Equal {
        return by_reserve;
    }
    let (Some((key_a, rest_a)), Some((key_b, rest_b))) = (decode_user_key(ea), decode_user_key(eb))
    else {
        return ea.cmp(eb);
    };
    let by_key = key_a.cmp(&key_b);
    if by_key != Ordering::Equal {
        return by_key;
    }
    let (version_a, rest_a) = rest_a.split_at(rest_a.len().min(8));
    let (version_b, rest_b) = rest_b.split_at(rest_b.len().min(8));
    let by_version = version_a.cmp(version_b);
    if by_version != Ordering::Equal {
        return by_version;
    }
    let (Some((sa, member_a)), Some((sb, member_b))) = (take_u64(rest_a), take_u64(rest_b)) else {
        return rest_a.cmp(rest_b);
    };
    let (sa, sb) = (f64::from_bits(sa), f64::from_bits(sb));
    match sa.partial_cmp(&sb) {
        Some(Ordering::Equal) | None => {}
        Some(o) => return o,
    }
    member_a.cmp(member_b)
}

#[cfg(test)]
mod tests {
    use super::super::key::data_key_prefix;
    use super::*;

    fn list_key(key: &[u8], version: u64, index: u64) -> Vec<u8> {
        let mut k = data_key_prefix(key, version);
        k.extend_from_slice(&index.to_le_bytes());
        k.extend_from_slice(&[0; 16]);
        k
    }

    fn score_key(key: &[u8], version: u64, score: f64, member: &[u8]) -> Vec<u8> {
        let mut k = data_key_prefix(key, version);
        k.extend_from_slice(&score.to_le_bytes());
        k.extend_from_slice(member);
        k.extend_from_slice(&[0; 16]);
        k
    }

    #[test]
    fn list_versions_and_indexes_sort_numerically_not_bytewise() {
        let (a, b) = (list_key(b"l", 1, 255), list_key(b"l", 1, 256));
        assert!(a.as_slice() > b.as_slice(), "little-endian bytes disagree");
        assert_eq!(compare_lists_data_key(&a, &b), Ordering::Less);
        let (v255, v256) = (list_key(b"l", 255, 0), list_key(b"l", 256, 0));
        assert_eq!(compare_lists_data_key(&v255, &v256), Ordering::Less);
        // Pika's initial indexes straddle 2^63: left of it comes first.
        let (left, right) = (list_key(b"l", 1, (1 << 63) - 1), list_key(b"l", 1, 1 << 63));
        assert_eq!(compare_lists_data_key(&left, &right), Ordering::Less);
        assert_eq!(
            compare_lists_data_key(&list_key(b"k", 9, 9), &a),
            Ordering::Less
        );
        // "l\0" sorts after "l" and before "la", as the escaped bytes do.
        let nul = list_key(b"l\x00", 0, 0);
        assert_eq!(compare_lists_data_key(&a, &nul), Ordering::Less);
        assert_eq!(
            compare_lists_data_key(&nul, &list_key(b"la", 0, 0)),
            Ordering::Less
        );
        // A seek target that ends after the version comes before its rows.
        let prefix = data_key_prefix(b"l", 1);
        assert_eq!(compare_lists_data_key(&prefix, &a), Ordering::Less);
        assert_eq!(compare_lists_data_key(&a, &a), Ordering::Equal);
        assert_eq!(compare_lists_data_key(&a[..5], &a), Ordering::Less);
    }

    #[test]
    fn scores_sort_as_doubles_then_members() {
        let ninf = score_key(b"z", 7, f64::NEG_INFINITY, b"a");
        let neg = score_key(b"z", 7, -1.5, b"a");
        let zero = score_key(b"z", 7, 0.0, b"b");
        let negzero = score_key(b"z", 7, -0.0, b"a");
        let inf = score_key(b"z", 7, f64::INFINITY, b"a");
        assert_eq!(compare_zsets_score_key(&ninf, &neg), Ordering::Less);
        assert_eq!(compare_zsets_score_key(&neg, &zero), Ordering::Less);
        assert_eq!(compare_zsets_score_key(&negzero, &zero), Ordering::Less);
        assert_eq!(compare_zsets_score_key(&zero, &inf), Ordering::Less);
        assert_eq!(compare_zsets_score_key(&zero, &zero), Ordering::Equal);
        // Versions compare bytewise (little-endian), as Pika's memcmp does.
        let (v1, v256) = (
            score_key(b"z", 1, 0.0, b"a"),
            score_key(b"z", 256, 0.0, b"a"),
        );
        assert_eq!(compare_zsets_score_key(&v1, &v256), Ordering::Greater);
        // Too short for the reserve (damage): bytewise, never a panic.
        assert_eq!(compare_zsets_score_key(b"\x01", &zero), Ordering::Greater);
        // The shortened index keys Pika's separator writes (no member, no reserve).
        let short = &zero[..zero.len() - 16 - 1];
        assert_eq!(compare_zsets_score_key(short, &zero), Ordering::Less);
    }
}
