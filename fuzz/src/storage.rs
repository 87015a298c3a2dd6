//! blackwidow bytes: values and metas, the two custom comparators, the scan of real
//! RocksDB databases holding any rows, the fixture dump with bytes overwritten, and a
//! dump's `info` file.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use arbitrary::Unstructured;
use pika_migrate_core::event::{BinlogOffset, DataType, Event, Op, Part};
use pika_migrate_core::pika::storage::comparator::{
    compare_lists_data_key, compare_zsets_score_key,
};
use pika_migrate_core::pika::storage::format::{
    data_key_prefix, parse_score, parse_string_value, CollectionMeta, ListMeta,
};
use pika_migrate_core::pika::storage::layout::parse_dump_info;
use pika_migrate_core::pika::storage::writer::DumpWriter;
use pika_migrate_core::pika::storage::{ChunkLimits, Snapshot, StorageError};
use pika_migrate_core::source::pika::dump::parse_info;

use crate::{events, scratch};

/// The parsers of stored values: each accepts exactly the lengths its layout needs.
pub fn values(data: &[u8]) {
    match parse_string_value(data) {
        Ok((len, expiry)) => {
            assert_eq!(len + 4, data.len());
            let _ = expiry.as_millis();
        }
        Err(_) => assert!(data.len() < 4),
    }
    match CollectionMeta::parse(data) {
        Ok(meta) => {
            assert!(data.len() >= 12);
            assert!(
                meta.count <= i32::MAX as u64,
                "a negative count read as huge"
            );
            let _ = (meta.is_live(i64::MAX), meta.expiry.as_millis());
        }
        Err(_) => assert!(data.len() < 12),
    }
    match ListMeta::parse(data) {
        Ok(meta) => {
            assert!(data.len() >= 32);
            let _ = (meta.is_live(0), meta.expiry.as_millis());
        }
        Err(_) => assert!(data.len() < 32),
    }
    assert_eq!(parse_score(data).is_ok(), data.len() == 8);
}

/// A key of the lists `data_cf`: `keylen ‖ key ‖ version ‖ index`.
fn list_key(key: &[u8], version: i32, index: u64) -> Vec<u8> {
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

type Compare = fn(&[u8], &[u8]) -> Ordering;

/// Never panics, and orders consistently: `a == a`, and `b` to `a` the reverse of `a`
/// to `b`. RocksDB calls these on whatever a damaged file holds.
fn consistent(cmp: Compare, keys: &[Vec<u8>]) {
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
struct Row {
    dir: &'static str,
    cf: &'static str,
    key: Vec<u8>,
    value: Vec<u8>,
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

/// Scans every database under `path` into chunks of `limits`, checking each event as
/// it comes (and sending it `downstream` when asked).
fn scan_all(path: &Path, limits: ChunkLimits, downstream: bool) {
    let snapshot = match Snapshot::open(path) {
        Ok(s) => s,
        Err(e) => return check_error(&e),
    };
    let mut seq = 0;
    for db in &snapshot.dbs {
        let mut keys = KeyParts::default();
        let result = db.scan(limits, 1_700_000_000, &mut seq, &mut |e| {
            keys.check(&e);
            if downstream {
                events::downstream(&e);
            }
            true
        });
        match result {
            Err(e) => check_error(&e),
            Ok(_) => assert!(keys.open.is_none(), "a key left unfinished"),
        }
    }
}

/// A damaged key is named; every other error names the directory.
fn check_error(e: &StorageError) {
    let text = e.to_string();
    match e {
        StorageError::Corrupt { .. } => assert!(text.contains(": key "), "{text}"),
        StorageError::Io { .. } => {}
        _ => assert!(text.contains('/'), "{text}"),
    }
}

/// Checks that each key's events are one `Whole`, or `First`, `More`…, `Last`, never
/// interleaved with another key's.
#[derive(Default)]
struct KeyParts {
    open: Option<(bytes::Bytes, DataType)>,
}

impl KeyParts {
    fn check(&mut self, e: &Event) {
        let Op::Snapshot { chunk, part, .. } = &e.op else {
            panic!("a snapshot gave a command");
        };
        let this = (e.key.clone(), chunk.data_type());
        match part {
            Part::Whole | Part::First => {
                assert!(self.open.is_none(), "a key began inside {:?}", self.open);
                if *part == Part::First {
                    self.open = Some(this);
                }
            }
            Part::More | Part::Last => {
                assert_eq!(self.open.as_ref(), Some(&this), "a chunk out of its key");
                if *part == Part::Last {
                    self.open = None;
                }
            }
        }
    }
}

/// Rows of every type, made up from `data`, written into five real RocksDBs with
/// blackwidow's column families and comparators, then scanned.
pub fn scan(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut rows = Vec::new();
    while rows.len() < 48 && !u.is_empty() {
        if u.arbitrary::<u8>().unwrap_or(0) % 4 == 0 {
            raw_row(&mut u, &mut rows);
        } else {
            key_rows(&mut u, &mut rows);
        }
    }
    scratch::with_empty_dir(|dir| {
        let db = dir.join("db0");
        let mut writer = DumpWriter::create(&db).expect("creating a dump");
        for r in &rows {
            writer
                .raw(r.dir, r.cf, &r.key, &r.value)
                .expect("writing a row");
        }
        writer
            .finish(BinlogOffset::new(1, 2))
            .expect("finishing a dump");
        // Small chunks, so the made-up values are cut too.
        let limits = ChunkLimits {
            elements: 2,
            bytes: 16,
        };
        scan_all(dir, limits, true);
    });
}

fn fixture_dump() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pika-v3.3.6/dump/db0")
}

/// The fixture dump's files, relative to its `db0`, in a fixed order.
pub fn fixture_dump_files() -> Vec<PathBuf> {
    let root = fixture_dump();
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        let entries =
            std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(rel) = path.strip_prefix(&root) {
                files.push(rel.to_owned());
            }
        }
    }
    files.sort();
    files
}

/// The fixture dump with patches applied: each is a file (by index), an offset in it
/// (u32 LE, wrapped to the file's length) and up to 8 bytes to write there. The scan
/// fails with an error naming the place, or gives well-formed events.
pub fn dump_patch(data: &[u8]) {
    let files = fixture_dump_files();
    scratch::with_empty_dir(|dir| {
        let db = dir.join("db0");
        for rel in &files {
            let to = db.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).expect("creating a dump directory");
            }
            std::fs::copy(fixture_dump().join(rel), &to).expect("copying the fixture dump");
        }
        let mut rest = data;
        while let [file, o0, o1, o2, o3, len, tail @ ..] = rest {
            let path = db.join(&files[usize::from(*file) % files.len()]);
            let mut bytes = std::fs::read(&path).expect("reading a copied file");
            let len = usize::from(*len % 9).min(tail.len());
            if !bytes.is_empty() {
                let at = u32::from_le_bytes([*o0, *o1, *o2, *o3]) as usize % bytes.len();
                for (i, b) in tail[..len].iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = *b;
                    }
                }
                scratch::write(&path, &bytes);
            }
            rest = &tail[len..];
        }
        // Chunks of 64 elements or 4 KiB: the fixture's big string is 1 MiB. The events
        // are the fixture's own, bar the damage: the encoders see enough of those.
        let limits = ChunkLimits {
            elements: 64,
            bytes: 4096,
        };
        scan_all(dir, limits, false);
    });
}

/// A dump's `info` text, as the snapshot source and the replica read it; errors name
/// the line. Also `FILENUM:OFFSET` positions as a pipeline file gives them.
pub fn dump_info(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    if let Err((line, reason)) = parse_dump_info(&text) {
        assert!(
            (1..=lines + 1).contains(&line),
            "line {line} of {lines}: {reason}"
        );
    }
    if let Err(reason) = parse_info(&text, 9221) {
        assert!(!reason.is_empty());
    }
    let _ = text.parse::<BinlogOffset>();
}
