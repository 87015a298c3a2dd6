//! The snapshot reader on dumps and db directories written by a real Pika 3.3.6.

mod common;

use common::*;
use pika_migrate_core::event::{BinlogOffset, DataType, Op, Part, Position};
use pika_migrate_core::pika::storage::{ChunkLimits, Snapshot};

#[test]
fn dump_decodes_to_exactly_what_pika_showed() {
    let moment = moment_of(&fixture("expected.jsonl"));
    let events = scan_all(&fixture("dump"), ChunkLimits::default(), moment);
    let expected = load_expected("expected.jsonl");
    // Read as of the moment Pika was asked: every key it showed, the 36 with a time to
    // live among them.
    assert_eq!(
        expected
            .values()
            .filter(|s| s.expire_at_ms.is_some())
            .count(),
        36
    );
    assert_same(&expected, &state_from_snapshot(&events));
    // Expired strings (s1:ttl:short:*) and deletion tombstones (s1:gone:*) are in the
    // dump's SST files but must not come out.
    assert!(!events
        .iter()
        .any(|e| e.key.starts_with(b"s1:ttl:short:") || e.key.starts_with(b"s1:gone:")));
}

#[test]
fn live_db_directory_with_unflushed_wal_decodes_to_the_post_binlog_state() {
    let events = scan_all(&fixture("db"), ChunkLimits::default(), fixture_moment());
    let expected = load_expected("binlog-expected.jsonl");
    assert_same(&expected, &state_from_snapshot(&events));
}

/// Every expiring key of the dump, whatever the date: read as of moments between their
/// expiries, those expired by then are absent and the others there with their times.
#[test]
fn read_as_of_any_moment_the_expired_keys_are_absent_and_the_rest_keep_their_times() {
    let expected = load_expected("expected.jsonl");
    let mut expiries: Vec<i64> = expected.values().filter_map(|s| s.expire_at_ms).collect();
    expiries.sort_unstable();
    expiries.dedup();
    // Half-way between neighbouring expiries (away from both), and after the last.
    let mut moments: Vec<i64> = expiries.windows(2).map(|w| (w[0] + w[1]) / 2).collect();
    moments.retain(|m| expiries.iter().all(|e| (e - m).abs() > 2 * EXPIRY_SLACK_MS));
    moments.push(expiries[expiries.len() - 1] + 86_400_000);
    assert!(moments.len() >= 4, "{moments:?}");
    for moment in moments {
        let events = scan_all(&fixture("dump"), ChunkLimits::default(), moment);
        let state = state_from_snapshot(&events);
        let (gone, live): (Vec<_>, Vec<_>) = expected
            .iter()
            .filter(|(_, s)| s.expire_at_ms.is_some())
            .partition(|(_, s)| s.expire_at_ms.is_some_and(|at| at <= moment));
        for (key, _) in &gone {
            assert!(!state.contains_key(*key), "{key:?} had expired by {moment}");
        }
        for (key, want) in &live {
            let got = &state[*key];
            assert_eq!(got.val, want.val);
            let off = got
                .expire_at_ms
                .zip(want.expire_at_ms)
                .map(|(g, w)| (g - w).abs());
            assert!(
                off.is_some_and(|ms| ms <= EXPIRY_SLACK_MS),
                "{key:?}: {got:?}"
            );
        }
        assert_same(&live_at(&expected, moment), &state);
    }
}

#[test]
fn dump_position_comes_from_its_info_file_and_orders_events() {
    let snapshot = Snapshot::open(&fixture("dump")).unwrap();
    let info = snapshot.dbs[0]
        .info
        .as_ref()
        .expect("dump has an info file");
    assert_eq!(info.position, BinlogOffset::new(1, 507340));
    let events = scan_all(&fixture("dump"), ChunkLimits::default(), fixture_moment());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.position,
            Position::Snapshot {
                at: BinlogOffset::new(1, 507340),
                seq: i as u64
            }
        );
        assert!(e.exec_time.is_none());
    }
}

#[test]
fn keys_come_type_by_type_in_pika_type_order_with_their_sibling_types() {
    let events = scan_all(&fixture("dump"), ChunkLimits::default(), fixture_moment());
    let order: Vec<DataType> = events.iter().map(|e| e.data_type.unwrap()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        order, sorted,
        "types must come string, hash, list, zset, set"
    );
    let multi: Vec<_> = events
        .iter()
        .filter(|e| e.key.as_ref() == b"s1:multi")
        .collect();
    assert_eq!(multi.len(), 5);
    for e in multi {
        let Op::Snapshot { also_types, .. } = e.op else {
            unreachable!()
        };
        assert_eq!(also_types.iter().count(), 4, "{:?}", e.data_type);
        assert!(!also_types.contains(e.data_type.unwrap()));
    }
    let single = events
        .iter()
        .find(|e| e.key.as_ref() == b"s1:hash:big")
        .unwrap();
    let Op::Snapshot { also_types, .. } = single.op else {
        unreachable!()
    };
    assert!(also_types.is_empty());
}

#[test]
fn big_values_come_in_bounded_chunks_that_rebuild_them() {
    let limits = ChunkLimits {
        elements: 100,
        bytes: 64 * 1024,
    };
    let events = scan_all(&fixture("dump"), limits, fixture_moment());
    for e in &events {
        let Op::Snapshot { chunk, .. } = &e.op else {
            unreachable!()
        };
        assert!(chunk.len() <= 100, "chunk of {} elements", chunk.len());
        if let pika_migrate_core::event::Chunk::String(v) = chunk {
            assert!(v.len() <= 64 * 1024);
        }
    }
    let parts: Vec<Part> = events
        .iter()
        .filter(|e| e.key.as_ref() == b"s1:hash:big")
        .map(|e| match e.op {
            Op::Snapshot { part, .. } => part,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(parts.len(), 50, "5000 fields in chunks of 100");
    assert_eq!(parts[0], Part::First);
    assert!(parts[1..49].iter().all(|p| *p == Part::More));
    assert_eq!(parts[49], Part::Last);
    let big_string = events
        .iter()
        .filter(|e| e.key.as_ref() == b"s1:big")
        .count();
    assert_eq!(big_string, 16, "1 MiB string in 64 KiB slices");
    assert_same(
        &load_expected("expected.jsonl"),
        &state_from_snapshot(&events),
    );
}

#[test]
fn scan_stops_when_the_consumer_goes_away() {
    let snapshot = Snapshot::open(&fixture("dump")).unwrap();
    let mut seen = 0;
    let mut seq = 0;
    snapshot.dbs[0]
        .scan(
            ChunkLimits::default(),
            fixture_moment() / 1000,
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
fn the_dump_writer_produces_what_the_reader_reads() {
    use pika_migrate_core::pika::storage::writer::DumpWriter;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db0");
    let mut w = DumpWriter::create(&dir).unwrap();
    let future = (now_ms() / 1000 + 3600) as i32;
    w.string(b"s", b"v", future).unwrap();
    w.string(b"gone", b"v", 1_000_000).unwrap();
    w.hash(b"h", &[(b"f1", b"a"), (b"f2", b"b")], 0).unwrap();
    let items: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
    w.list(b"l", &refs, 0).unwrap();
    w.set(b"s", &[b"x", b"y"], 0).unwrap();
    w.zset(
        b"z",
        &[
            (b"lo", f64::NEG_INFINITY),
            (b"mid", 0.5),
            (b"hi", f64::INFINITY),
        ],
        0,
    )
    .unwrap();
    w.finish(BinlogOffset::new(3, 42)).unwrap();

    let events = scan_all(
        &dir,
        ChunkLimits {
            elements: 100,
            bytes: 1 << 20,
        },
        now_ms(),
    );
    let state = state_from_snapshot(&events);
    let get = |k: &[u8], t: &str| {
        state
            .get(&(k.to_vec(), t.to_owned()))
            .map(|s| s.val.clone())
    };
    assert_eq!(get(b"s", "string"), Some(Val::String(b"v".to_vec())));
    assert_eq!(
        state[&(b"s".to_vec(), "string".to_owned())].expire_at_ms,
        Some(i64::from(future) * 1000)
    );
    assert_eq!(get(b"gone", "string"), None, "expired long ago");
    assert_eq!(
        get(b"l", "list"),
        Some(Val::List(items.clone())),
        "order kept across 3 chunks"
    );
    assert_eq!(
        get(b"s", "set"),
        Some(Val::Set([b"x".to_vec(), b"y".to_vec()].into()))
    );
    assert_eq!(
        get(b"z", "zset"),
        Some(Val::Zset(
            [
                (b"lo".to_vec(), f64::NEG_INFINITY),
                (b"mid".to_vec(), 0.5),
                (b"hi".to_vec(), f64::INFINITY)
            ]
            .into()
        ))
    );
    assert_eq!(
        events[0].position,
        Position::Snapshot {
            at: BinlogOffset::new(3, 42),
            seq: 0
        }
    );
    let also = events
        .iter()
        .find(|e| e.key.as_ref() == b"s")
        .map(|e| match e.op {
            Op::Snapshot { also_types, .. } => also_types.iter().collect::<Vec<_>>(),
            _ => unreachable!(),
        });
    assert_eq!(also, Some(vec![DataType::Set]));
}
