//! The snapshot scan over real RocksDBs: made-up rows written with blackwidow's column
//! families and comparators, and the fixture dump with bytes of its files overwritten.

use std::path::{Path, PathBuf};

use arbitrary::Unstructured;
use pika_migrate_core::event::{BinlogOffset, DataType, Event, Op, Part};
use pika_migrate_core::pika::storage::writer::DumpWriter;
use pika_migrate_core::pika::storage::{ChunkLimits, Snapshot, StorageError};

use super::rows::rows;
use crate::{events, scratch};

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
    let rows = rows(&mut Unstructured::new(data));
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

/// The `db0` of the dump a real Pika `version` wrote (3.3.6: blackwidow; 4.0.1: floyd).
fn fixture_dump(version: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../tests/fixtures/pika-v{version}/dump/db0"))
}

/// The blackwidow fixture dump's files, relative to its `db0`, in a fixed order.
pub fn fixture_dump_files() -> Vec<PathBuf> {
    dump_files("3.3.6")
}

/// The floyd (Pika 4.0.1) fixture dump's files, relative to its `db0`.
pub fn floyd_fixture_dump_files() -> Vec<PathBuf> {
    dump_files("4.0.1")
}

fn dump_files(version: &str) -> Vec<PathBuf> {
    let root = fixture_dump(version);
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

/// The blackwidow fixture dump with patches applied: each is a file (by index), an
/// offset in it (u32 LE, wrapped to the file's length) and up to 8 bytes to write there.
/// The scan fails with an error naming the place, or gives well-formed events.
pub fn dump_patch(data: &[u8]) {
    patch_and_scan("3.3.6", data);
}

/// The same on the floyd dump of Pika 4.0.1 (three instances, seven column families).
pub fn floyd_dump_patch(data: &[u8]) {
    patch_and_scan("4.0.1", data);
}

fn patch_and_scan(version: &str, data: &[u8]) {
    let files = dump_files(version);
    scratch::with_empty_dir(|dir| {
        let db = dir.join("db0");
        for rel in &files {
            let to = db.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).expect("creating a dump directory");
            }
            std::fs::copy(fixture_dump(version).join(rel), &to).expect("copying the fixture dump");
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
