//! Rows for the five type databases made up from fuzz bytes: metas and values that may
//! lie about their counts, versions and lengths, data rows that may belong to a key or
//! not, and raw rows of any column family.

use arbitrary::Unstructured;
use pika_migrate_core::pika::storage::format::data_key_prefix;

use super::comparators::list_key;

/// The column families of each type directory, as blackwidow creates them.
const FAMILIES: [(&str, &[&str]); 5] = [
    ("strings", &["default"]),
    ("hashes", &["default", "data_cf"]),
    ("lists", &["default", "data_cf"]),
    ("sets", &["default", "member_cf"]),
    ("zsets", &["default", "data_cf", "score_cf"]),
];

/// Key names shared by the rows, so one name often holds several types.
const NAMES: [&[u8]; 4] = [b"a", b"b", b"", b"k\xff"];

/// A timestamp: none, long past, far ahead, or any.
fn timestamp(u: &mut Unstructured) -> i32 {
    match u.arbitrary::<u8>().unwrap_or(0) % 4 {
        0 => 0,
        1 => 1,
        2 => i32::MAX,
        _ => u.arbitrary().unwrap_or(0),
    }
}

/// A row, as Pika would write it or not.
pub(super) struct Row {
    pub dir: &'static str,
    pub cf: &'static str,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

fn name(u: &mut Unstructured) -> Vec<u8> {
    match u.arbitrary::<u8>().unwrap_or(0) % 5 {
        4 => u.arbitrary().unwrap_or_default(),
        i => NAMES[usize::from(i)].to_vec(),
    }
}

/// A version: the usual small ones, or any.
fn version(u: &mut Unstructured) -> u32 {
    match u.arbitrary::<u8>().unwrap_or(0) % 3 {
        0 => 1,
        1 => 2,
        _ => u.arbitrary().unwrap_or(0),
    }
}

/// Rows of one made-up key of any type: a meta (or string value) that may lie about
/// its count, its version or its length, and data rows that may belong to it or not.
fn key_rows(u: &mut Unstructured, out: &mut Vec<Row>) {
    let key = name(u);
    let which = u.arbitrary::<u8>().unwrap_or(0) % 6;
    let ts = timestamp(u);
    let row = |dir, cf, key: Vec<u8>, value: Vec<u8>| Row {
        dir,
        cf,
        key,
        value,
    };
    match which {
        0 => {
            let mut value: Vec<u8> = u.arbitrary().unwrap_or_default();
            if u.arbitrary().unwrap_or(true) {
                value.extend_from_slice(&ts.to_le_bytes());
            }
            out.push(row("strings", "default", key, value));
        }
        1..=3 => {
            let (dir, data) = [
                ("hashes", "data_cf"),
                ("sets", "member_cf"),
                ("zsets", "data_cf"),
            ][usize::from(which - 1)];
            let count: i32 = match u.arbitrary::<u8>().unwrap_or(0) % 3 {
                0 => 2,
                1 => 0,
                _ => u.arbitrary().unwrap_or(0),
            };
            let version = version(u);
            let mut meta = count.to_le_bytes().to_vec();
            meta.extend_from_slice(&version.to_le_bytes());
            meta.extend_from_slice(&ts.to_le_bytes());
            meta.truncate(usize::from(u.arbitrary::<u8>().unwrap_or(12)).max(8));
            out.push(row(dir, "default", key.clone(), meta));
            let rows = u.arbitrary::<u8>().unwrap_or(0) % 5;
            for _ in 0..rows {
                let mut k = data_key_prefix(&key, self::version(u).min(version));
                let element: Vec<u8> = u.arbitrary().unwrap_or_default();
                k.extend_from_slice(&element);
                let value: Vec<u8> = if dir == "zsets" && u.arbitrary().unwrap_or(true) {
                    f64::from_bits(u.arbitrary().unwrap_or(0))
                        .to_le_bytes()
                        .to_vec()
                } else {
                    u.arbitrary().unwrap_or_default()
                };
                if dir == "zsets" && value.len() == 8 {
                    let mut s = data_key_prefix(&key, version);
                    s.extend_from_slice(&value);
                    s.extend_from_slice(&element);
                    out.push(row(dir, "score_cf", s, Vec::new()));
                }
                out.push(row(dir, data, k, value));
            }
        }
        _ => {
            let count: u64 = match u.arbitrary::<u8>().unwrap_or(0) % 3 {
                0 => 2,
                1 => 0,
                _ => u.arbitrary().unwrap_or(0),
            };
            let version = version(u);
            let left: u64 = match u.arbitrary::<u8>().unwrap_or(0) % 3 {
                0 => (1 << 63) - 1,
                1 => u64::MAX,
                _ => u.arbitrary().unwrap_or(0),
            };
            let mut meta = count.to_le_bytes().to_vec();
            meta.extend_from_slice(&version.to_le_bytes());
            meta.extend_from_slice(&ts.to_le_bytes());
            meta.extend_from_slice(&left.to_le_bytes());
            meta.extend_from_slice(&left.wrapping_add(count).wrapping_add(1).to_le_bytes());
            meta.truncate(usize::from(u.arbitrary::<u8>().unwrap_or(32)).max(24));
            out.push(row("lists", "default", key.clone(), meta));
            let rows = u.arbitrary::<u8>().unwrap_or(0) % 5;
            for i in 0..rows {
                let index = if u.arbitrary().unwrap_or(true) {
                    left.wrapping_add(1).wrapping_add(u64::from(i))
                } else {
                    u.arbitrary().unwrap_or(0)
                };
                let value: Vec<u8> = u.arbitrary().unwrap_or_default();
                out.push(row(
                    "lists",
                    "data_cf",
                    list_key(&key, version as i32, index),
                    value,
                ));
            }
        }
    }
}

/// Any row of any column family.
fn raw_row(u: &mut Unstructured, out: &mut Vec<Row>) {
    let (dir, families) = FAMILIES[usize::from(u.arbitrary::<u8>().unwrap_or(0)) % 5];
    let cf = families[usize::from(u.arbitrary::<u8>().unwrap_or(0)) % families.len()];
    out.push(Row {
        dir,
        cf,
        key: u.arbitrary().unwrap_or_default(),
        value: u.arbitrary().unwrap_or_default(),
    });
}

/// Up to 48 rows made up from `u`.
pub(super) fn rows(u: &mut Unstructured) -> Vec<Row> {
    let mut rows = Vec::new();
    while rows.len() < 48 && !u.is_empty() {
        if u.arbitrary::<u8>().unwrap_or(0) % 4 == 0 {
            raw_row(u, &mut rows);
        } else {
            key_rows(u, &mut rows);
        }
    }
    rows
}
