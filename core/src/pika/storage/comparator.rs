//! blackwidow's two custom key orders. RocksDB refuses to open a column family whose
//! recorded comparator name is not registered, and seeks go wrong under another order,
//! so these must match blackwidow's ordering exactly.

use std::cmp::Ordering;

/// Comparator of the lists `data_cf`: keys are `keylen u32 ‖ key ‖ version i32 ‖ index u64`.
pub const LISTS_DATA_KEY: &str = "blackwidow.ListsDataKeyComparator";
/// Comparator of the zsets `score_cf`: `keylen u32 ‖ key ‖ version ‖ score f64 ‖ member`.
pub const ZSETS_SCORE_KEY: &str = "blackwidow.ZSetsScoreKeyComparator";

/// Splits `keylen u32 LE ‖ key ‖ rest`. A key too short for its own length prefix is
/// compared as a whole (never panics on damaged data).
fn split_user_key(k: &[u8]) -> (&[u8], &[u8]) {
    let Some(len) = k
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    else {
        return (k, &[]);
    };
    match k.get(4..4 + len) {
        Some(key) => (key, &k[4 + len..]),
        None => (k, &[]),
    }
}

/// Orders "ended here" before "continues", as blackwidow and floyd do at each field
/// boundary.
pub(super) fn ends_first(a: &[u8], b: &[u8]) -> Option<Ordering> {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Some(Ordering::Equal),
        (true, false) => Some(Ordering::Less),
        (false, true) => Some(Ordering::Greater),
        (false, false) => None,
    }
}

fn take<const N: usize>(s: &[u8]) -> Option<([u8; N], &[u8])> {
    let head: [u8; N] = s.get(..N)?.try_into().ok()?;
    Some((head, &s[N..]))
}

/// `blackwidow.ListsDataKeyComparator`: user key bytewise, then version as a signed
/// 32-bit number, then the element index as an unsigned 64-bit number.
pub fn compare_lists_data_key(a: &[u8], b: &[u8]) -> Ordering {
    let (key_a, rest_a) = split_user_key(a);
    let (key_b, rest_b) = split_user_key(b);
    let by_key = key_a.cmp(key_b);
    if by_key != Ordering::Equal {
        return by_key;
    }
    if let Some(o) = ends_first(rest_a, rest_b) {
        return o;
    }
    let (Some((va, rest_a)), Some((vb, rest_b))) = (take::<4>(rest_a), take::<4>(rest_b)) else {
        return rest_a.cmp(rest_b);
    };
    let by_version = i32::from_le_bytes(va).cmp(&i32::from_le_bytes(vb));
    if by_version != Ordering::Equal {
        return by_version;
    }
    if let Some(o) = ends_first(rest_a, rest_b) {
        return o;
    }
    match (take::<8>(rest_a), take::<8>(rest_b)) {
        (Some((ia, _)), Some((ib, _))) => u64::from_le_bytes(ia).cmp(&u64::from_le_bytes(ib)),
        _ => rest_a.cmp(rest_b),
    }
}

/// `blackwidow.ZSetsScoreKeyComparator`: the `keylen ‖ key ‖ version` prefix bytewise,
/// then the score as a double (−0.0 equals +0.0), then the member bytewise.
pub fn compare_zsets_score_key(a: &[u8], b: &[u8]) -> Ordering {
    let prefix_len = |k: &[u8]| {
        let (key, _) = split_user_key(k);
        (4 + key.len() + 4).min(k.len())
    };
    let (pa, pb) = (prefix_len(a), prefix_len(b));
    let by_prefix = a[..pa].cmp(&b[..pb]);
    if by_prefix != Ordering::Equal {
        return by_prefix;
    }
    let (rest_a, rest_b) = (&a[pa..], &b[pb..]);
    if let Some(o) = ends_first(rest_a, rest_b) {
        return o;
    }
    let (Some((sa, member_a)), Some((sb, member_b))) = (take::<8>(rest_a), take::<8>(rest_b))
    else {
        return rest_a.cmp(rest_b);
    };
    let (sa, sb) = (f64::from_le_bytes(sa), f64::from_le_bytes(sb));
    match sa.partial_cmp(&sb) {
        Some(Ordering::Equal) | None => {}
        Some(o) => return o,
    }
    if let Some(o) = ends_first(member_a, member_b) {
        return o;
    }
    member_a.cmp(member_b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_key(key: &[u8], version: i32, index: u64) -> Vec<u8> {
        let mut k = (key.len() as u32).to_le_bytes().to_vec();
        k.extend_from_slice(key);
        k.extend_from_slice(&version.to_le_bytes());
        k.extend_from_slice(&index.to_le_bytes());
        k
    }

    fn score_key(key: &[u8], score: f64, member: &[u8]) -> Vec<u8> {
        let mut k = (key.len() as u32).to_le_bytes().to_vec();
        k.extend_from_slice(key);
        k.extend_from_slice(&7i32.to_le_bytes());
        k.extend_from_slice(&score.to_le_bytes());
        k.extend_from_slice(member);
        k
    }

    #[test]
    fn list_indexes_sort_numerically_not_bytewise() {
        let (a, b) = (list_key(b"l", 1, 255), list_key(b"l", 1, 256));
        assert!(a.as_slice() > b.as_slice(), "little-endian bytes disagree");
        assert_eq!(compare_lists_data_key(&a, &b), Ordering::Less);
        assert_eq!(
            compare_lists_data_key(&list_key(b"l", 2, 0), &a),
            Ordering::Greater
        );
        assert_eq!(
            compare_lists_data_key(&list_key(b"k", 9, 9), &a),
            Ordering::Less
        );
        assert_eq!(compare_lists_data_key(&a[..5], &a), Ordering::Less);
    }

    #[test]
    fn scores_sort_as_doubles_then_members() {
        let ninf = score_key(b"z", f64::NEG_INFINITY, b"a");
        let neg = score_key(b"z", -1.5, b"a");
        let zero = score_key(b"z", 0.0, b"b");
        let negzero = score_key(b"z", -0.0, b"a");
        let inf = score_key(b"z", f64::INFINITY, b"a");
        assert_eq!(compare_zsets_score_key(&ninf, &neg), Ordering::Less);
        assert_eq!(compare_zsets_score_key(&neg, &zero), Ordering::Less);
        assert_eq!(compare_zsets_score_key(&negzero, &zero), Ordering::Less);
        assert_eq!(compare_zsets_score_key(&zero, &inf), Ordering::Less);
        assert_eq!(compare_zsets_score_key(&zero, &zero), Ordering::Equal);
        assert_eq!(compare_zsets_score_key(b"\x01", &zero), Ordering::Less);
    }
}
