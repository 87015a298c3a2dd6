//! A dump read on several threads (`storage::parallel`): the same events as on one
//! thread, each key's in order, numbered in the order they are passed on; a big type
//! database cut into key ranges; a consumer gone or a bad key ending every thread.

mod common;

use std::collections::BTreeMap;

use common::*;
use pika_migrate_core::event::{BinlogOffset, DataType, Event, Position};
use pika_migrate_core::pika::storage::parallel::scan_parallel;
use pika_migrate_core::pika::storage::writer::DumpWriter;
use pika_migrate_core::pika::storage::{ChunkLimits, ScanStats, Snapshot, StorageError};

/// Small chunks, so big keys come in many events whose order matters.
const LIMITS: ChunkLimits = ChunkLimits {
    elements: 100,
    bytes: 64 * 1024,
};

/// Every event of the dump at `path` read on `threads` threads as of `moment_ms`, and
/// the scan's counts.
fn scan(path: &std::path::Path, threads: usize, moment_ms: i64) -> (Vec<Event>, ScanStats) {
    let snapshot = Snapshot::open(path).unwrap();
    let mut events = Vec::new();
    let mut total = ScanStats::default();
    let mut seq = 0;
    for db in &snapshot.dbs {
        let stats = scan_parallel(db, threads, LIMITS, moment_ms / 1000, &mut seq, &mut |e| {
            events.push(e);
            true
        })
        .unwrap();
        total.add(&stats);
    }
    // The keys left out are named in the order the threads met them.
    total.unsupported.sort_by(|a, b| a.key.cmp(&b.key));
    (events, total)
}

/// The events of each key name and type, in the order they came, their numbers aside.
fn by_key(events: &[Event]) -> BTreeMap<(Vec<u8>, Option<DataType>), Vec<Event>> {
    let mut keys: BTreeMap<_, Vec<Event>> = BTreeMap::new();
    for e in events {
        let mut e = e.clone();
        e.position = Position::Snapshot {
            at: e.position.binlog_offset(),
            seq: 0,
        };
        keys.entry((e.key.to_vec(), e.data_type))
            .or_default()
            .push(e);
    }
    keys
}

/// The numbers the events carry: 0, 1, 2, … in the order they were passed on.
fn assert_numbered_in_order(events: &[Event]) {
    for (i, e) in events.iter().enumerate() {
        let Position::Snapshot { seq, .. } = e.position else {
            panic!("not a snapshot event: {e:?}")
        };
        assert_eq!(seq, i as u64, "event {i} of {}", events.len());
    }
}

#[test]
fn every_fixture_dump_read_on_four_threads_gives_the_events_of_one_each_key_in_order() {
    for version in ["3.3.6", "3.5.5", "4.0.1"] {
        let dump = fixture_of(version, "dump");
        let moment = fixture_moment_of(version);
        let (one, one_stats) = scan(&dump, 1, moment);
        let (four, four_stats) = scan(&dump, 4, moment);
        assert!(one.len() > 100, "{version}: {} events", one.len());
        assert_eq!(four.len(), one.len(), "{version}");
        assert_eq!(by_key(&four), by_key(&one), "{version}");
        assert_eq!(four_stats, one_stats, "{version}");
        assert_numbered_in_order(&four);
        let names =
            |events: &[Event]| -> Vec<Vec<u8>> { events.iter().map(|e| e.key.to_vec()).collect() };
        if version == "4.0.1" {
            // The three instances were read side by side.
            assert_ne!(names(&four), names(&one), "{version}: read on one thread?");
        } else {
            // The names that are several types get them in Pika's TYPE order,
            // whichever thread reads which type first.
            assert_types_in_pika_order(&four);
        }
    }
}

/// Every name's types come in `DataType::TYPE_ORDER`: none after a later one.
fn assert_types_in_pika_order(events: &[Event]) {
    let mut last: BTreeMap<&[u8], DataType> = BTreeMap::new();
    for e in events {
        let t = e.data_type.unwrap();
        if let Some(before) = last.insert(e.key.as_ref(), t) {
            assert!(
                before <= t,
                "{:?} came as a {t:?} after its {before:?}",
                String::from_utf8_lossy(&e.key)
            );
        }
    }
}

/// A blackwidow database of `strings` strings (64 random bytes each), 50 of them also a
/// hash, and a 3,000-element list, written as Pika 3.x lays it out.
fn write_dump(dir: &std::path::Path, strings: u32) {
    let mut w = DumpWriter::create(dir).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..strings {
        let value: Vec<u8> = (0..8).flat_map(|_| random().to_le_bytes()).collect();
        w.string(format!("user:{i:08}").as_bytes(), &value, 0)
            .unwrap();
    }
    for i in 0..50u32 {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = (0..20u32)
            .map(|f| {
                (
                    format!("f{f}").into_bytes(),
                    random().to_le_bytes().to_vec(),
                )
            })
            .collect();
        let refs: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(f, v)| (f.as_slice(), v.as_slice()))
            .collect();
        // Names near the end of the strings: the small hash database is read long
        // before the last range of strings reaches them.
        w.hash(
            format!("user:{:08}", strings - 1 - i * 97).as_bytes(),
            &refs,
            0,
        )
        .unwrap();
    }
    let items: Vec<Vec<u8>> = (0..3000u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    w.list(b"queue", &refs, 0).unwrap();
    w.finish(BinlogOffset::new(1, 0)).unwrap();
}

#[test]
fn a_big_type_database_is_cut_into_key_ranges_each_read_on_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db0");
    write_dump(&dir, 60_000);
    let snapshot = Snapshot::open(&dir).unwrap();
    let parts = snapshot.dbs[0].parts(4).unwrap();
    // Strings are type 0: about 5 MB of them, in ranges that follow one another.
    let strings: Vec<_> = parts.iter().filter(|p| p.unit == 0).collect();
    assert!(strings.len() >= 3, "{parts:#?}");
    assert_eq!(strings[0].range.from, None);
    assert_eq!(strings.last().unwrap().range.to, None);
    for pair in strings.windows(2) {
        assert_eq!(pair[0].range.to, pair[1].range.from, "{parts:#?}");
    }
    let now = now_ms();
    let (one, one_stats) = scan(&dir, 1, now);
    // More threads than parts: the hashes are read while the strings still are.
    let (four, four_stats) = scan(&dir, 8, now);
    assert_eq!(one_stats.keys_of(DataType::String), 60_000);
    assert_eq!(four_stats, one_stats);
    assert_eq!(by_key(&four), by_key(&one));
    assert_numbered_in_order(&four);
    assert_types_in_pika_order(&four);
    // The ranges of strings were read side by side.
    let strings = |events: &[Event]| -> Vec<Vec<u8>> {
        events
            .iter()
            .filter(|e| e.data_type == Some(DataType::String))
            .map(|e| e.key.to_vec())
            .collect()
    };
    assert_ne!(strings(&four), strings(&one), "read on one thread?");
    // The 50 names that are a string and a hash know it, read from either range.
    let also = |events: &[Event]| {
        events
            .iter()
            .filter(|e| match &e.op {
                pika_migrate_core::event::Op::Snapshot { also_types, .. } => !also_types.is_empty(),
                _ => false,
            })
            .count()
    };
    assert_eq!(also(&four), also(&one));
    assert!(also(&four) >= 100);
}

#[test]
fn a_consumer_gone_stops_every_thread() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db0");
    write_dump(&dir, 60_000);
    let snapshot = Snapshot::open(&dir).unwrap();
    let mut seen = 0;
    let mut seq = 0;
    scan_parallel(
        &snapshot.dbs[0],
        4,
        LIMITS,
        now_ms() / 1000,
        &mut seq,
        &mut |_| {
            seen += 1;
            seen < 10
        },
    )
    .unwrap();
    assert_eq!(seen, 10);
}

#[test]
fn a_bad_key_in_one_part_is_named_after_what_the_others_read_was_passed_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db0");
    let mut w = DumpWriter::create(&dir).unwrap();
    for i in 0..2000u32 {
        w.string(format!("k{i:05}").as_bytes(), b"v", 0).unwrap();
    }
    // Read before the bad one: its part's keys come in order.
    w.hash(b"a:hash", &[(b"f".as_slice(), b"v".as_slice())], 0)
        .unwrap();
    // A hash meta of 3 bytes: no Pika writes that.
    w.raw("hashes", "default", b"broken", b"\x01\x02\x03")
        .unwrap();
    w.finish(BinlogOffset::new(1, 0)).unwrap();
    let snapshot = Snapshot::open(&dir).unwrap();
    let mut passed = Vec::new();
    let mut seq = 0;
    let result = scan_parallel(
        &snapshot.dbs[0],
        4,
        LIMITS,
        now_ms() / 1000,
        &mut seq,
        &mut |e| {
            passed.push(e);
            true
        },
    );
    match result {
        Err(StorageError::Corrupt { path, key, .. }) => {
            assert!(path.ends_with("hashes"), "{}", path.display());
            assert!(key.contains("broken"), "{key}");
        }
        other => panic!("expected the bad key named, got {other:?}"),
    }
    assert!(
        passed.iter().any(|e| e.key.as_ref() == b"a:hash"),
        "the hash read before the bad key was passed on"
    );
    assert_numbered_in_order(&passed);
}
