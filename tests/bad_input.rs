//! Bad input gets a clear error naming the place (file and offset, key, line:column),
//! never a panic, and what was accepted before the damage is kept.

mod common;

use std::fs::OpenOptions;
use std::path::Path;

use common::*;
use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::pika::binlog::{BinlogEntry, BinlogError, BinlogReader, ReadOutcome};

fn truncate(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn poke(path: &Path, offset: usize, byte: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] = byte;
    std::fs::write(path, bytes).unwrap();
}

/// Reads until the end or the first error: (entries read, the error).
fn read_until_error(dir: &Path) -> (Vec<BinlogEntry>, Option<BinlogError>) {
    let mut reader = match BinlogReader::open(dir, None) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut entries = Vec::new();
    loop {
        match reader.read_next() {
            Ok(ReadOutcome::Entry(e)) => entries.push(e),
            Ok(ReadOutcome::CaughtUp) => return (entries, None),
            Err(e) => return (entries, Some(e)),
        }
    }
}

#[test]
fn a_truncated_closed_file_names_the_file_and_the_cut_item() {
    let (_tmp, dir) = binlog_copy();
    // The 1 MiB SET starting at 0:39748 ends write2file0; cut it in the middle.
    truncate(&dir.join("write2file0"), 500_000);
    let (entries, err) = read_until_error(&dir);
    assert_eq!(
        entries.len(),
        402,
        "every whole item before the damage is read"
    );
    let msg = err.expect("an error").to_string();
    assert!(
        msg.contains("write2file0 at offset 39748: truncated binlog"),
        "{msg}"
    );
}

#[test]
fn the_tail_of_the_active_file_ends_cleanly_and_is_picked_up_when_written() {
    let (_tmp, dir) = binlog_copy();
    let active = dir.join("write2file1");
    let full = std::fs::read(&active).unwrap();
    // Cut the active file inside an item (offset 507400 lies inside 1:507340..1:507415).
    truncate(&active, 507_400);
    let mut reader = BinlogReader::open(&dir, Some(BinlogOffset::new(1, 507_000))).err();
    assert!(reader.take().is_some(), "507000 is not an item boundary");
    let mut reader = BinlogReader::open(&dir, Some(BinlogOffset::new(0, 0))).unwrap();
    let mut n = 0;
    while let ReadOutcome::Entry(_) = reader.read_next().unwrap() {
        n += 1;
    }
    assert_eq!(
        n, 1043,
        "stops at the last whole item, before the dump position"
    );
    assert_eq!(reader.position(), BinlogOffset::new(1, 507_340));
    // The writer finishes the file: a follower picks up exactly where it stopped.
    std::fs::write(&active, &full).unwrap();
    let ReadOutcome::Entry(next) = reader.read_next().unwrap() else {
        panic!("more data was written")
    };
    assert_eq!(next.start, BinlogOffset::new(1, 507_340));
    assert_eq!(next.item.argv[1].as_ref(), b"s1:p2:a");
}

#[test]
fn corrupt_records_and_items_name_the_file_and_offset() {
    let (_tmp, dir) = binlog_copy();
    poke(&dir.join("write2file0"), 7, 9);
    let (entries, err) = read_until_error(&dir);
    assert!(entries.is_empty());
    assert!(err
        .unwrap()
        .to_string()
        .contains("write2file0 at offset 0: corrupt binlog: unknown record type 9"));

    let (_tmp, dir) = binlog_copy();
    // Second item (0:84): its record header is 8 bytes, then the item type u16.
    poke(&dir.join("write2file0"), 84 + 8, 7);
    let (entries, err) = read_until_error(&dir);
    assert_eq!(entries.len(), 1);
    let msg = err.unwrap().to_string();
    assert!(
        msg.contains("write2file0 at offset 84: corrupt binlog: bad item: unknown item type 7"),
        "{msg}"
    );

    let (_tmp, dir) = binlog_copy();
    // Break the RESP of the third item (0:192): its '*' becomes '#'.
    poke(&dir.join("write2file0"), 192 + 8 + 34, b'#');
    let (entries, err) = read_until_error(&dir);
    assert_eq!(entries.len(), 2);
    let msg = err.unwrap().to_string();
    assert!(
        msg.contains("write2file0 at offset 192: corrupt binlog: bad item: command content"),
        "{msg}"
    );
}

#[test]
fn empty_files_and_manifests_are_refused_clearly() {
    let (_tmp, dir) = binlog_copy();
    truncate(&dir.join("write2file0"), 0);
    let (_, err) = read_until_error(&dir);
    let msg = err.unwrap().to_string();
    assert!(
        msg.contains("write2file0 at offset 0: corrupt binlog: empty file"),
        "{msg}"
    );

    let (_tmp, dir) = binlog_copy();
    truncate(&dir.join("manifest"), 0);
    let msg = BinlogReader::open(&dir, None).err().unwrap().to_string();
    assert!(msg.contains("manifest: bad manifest: 0 bytes"), "{msg}");
}

#[test]
fn missing_and_foreign_directories_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let msg = BinlogReader::open(&missing, None)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("nope does not exist"), "{msg}");
    std::fs::write(tmp.path().join("notes.txt"), "hello").unwrap();
    let msg = BinlogReader::open(tmp.path(), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("is not a Pika binlog directory: no `manifest`"),
        "{msg}"
    );

    let (_tmp, dir) = binlog_copy();
    let msg = BinlogReader::open(&dir, Some(BinlogOffset::new(7, 0)))
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("write2file7 does not exist: the binlog only goes up to write2file1"),
        "{msg}"
    );

    let msg = pika_migrate_core::pika::storage::Snapshot::open(&missing)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("nope: no such directory"), "{msg}");
    let msg = pika_migrate_core::pika::storage::Snapshot::open(tmp.path())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("not a Pika dump or db directory"), "{msg}");
    // Type directories that are not RocksDB databases.
    let fake = tmp.path().join("db0");
    for t in ["strings", "hashes", "lists", "sets", "zsets"] {
        std::fs::create_dir_all(fake.join(t)).unwrap();
    }
    let msg = pika_migrate_core::pika::storage::Snapshot::open(&fake)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("db0/strings: cannot open as a Pika RocksDB directory"),
        "{msg}"
    );
}

#[test]
fn a_run_on_a_damaged_binlog_fails_naming_the_place_and_keeps_what_it_wrote() {
    let (tmp, dir) = binlog_copy();
    truncate(&dir.join("write2file0"), 500_000);
    let out = tmp.path().join("out.jsonl");
    let pipeline = write_pipeline(
        tmp.path(),
        &format!("source:\n  type: binlog\n  path: {}\nsinks:\n  - type: file\n    path: {}\n    format: jsonl\n", dir.display(), out.display()),
    );
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("write2file0 at offset 39748: truncated binlog"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let written = std::fs::read_to_string(out).unwrap();
    assert_eq!(
        written.lines().count(),
        402,
        "the 402 whole items before the damage were delivered"
    );
}

#[test]
fn bad_pipeline_files_name_line_and_column_and_exit_78() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = write_pipeline(
        tmp.path(),
        "source:\n  type: snapshot\n  path: ./dump\nsinks:\n  - type: file\n    path: out.resp\n    format: xml\n",
    );
    let (code, _, stderr) = run_cli(&["validate", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("pipeline.yaml:7:13: sinks[0].format: unknown variant `xml`, expected `resp` or `jsonl`"), "{stderr}");

    let pipeline = write_pipeline(
        tmp.path(),
        "source:\n  type: snapshot\n  path: ./dump\n  colour: blue\nsinks: []\n",
    );
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("pipeline.yaml:4:3: source: unknown field `colour`"),
        "{stderr}"
    );

    let (code, _, stderr) = run_cli(&[
        "validate",
        "-c",
        tmp.path().join("missing.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 78);
    assert!(
        stderr.contains("missing.yaml: No such file or directory"),
        "{stderr}"
    );

    let pipeline = write_pipeline(
        tmp.path(),
        "source:\n  type: snapshot\n  path: [unclosed\nsinks: []\n",
    );
    let (code, _, stderr) = run_cli(&["validate", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 78);
    assert!(stderr.contains("pipeline.yaml:"), "{stderr}");
}
