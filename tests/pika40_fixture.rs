//! Our readers against the bytes a real Pika 4.0.1 wrote (`tests/fixtures/pika-v4.0.1`):
//! its dump (floyd: three instance directories, seven column families each, times in
//! milliseconds with the top bit set) and its binlog with every form 4.0.1 logs.

mod common;

use std::collections::BTreeSet;

use common::*;
use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::pika::storage::{
    ChunkLimits, ScanStats, Snapshot, StorageFormat, Unsupported,
};
use serde_json::Value as Json;

const V: &str = "4.0.1";

/// The names of the expected file's rows of type `t`.
fn names_of_type(file: &str, t: &str) -> BTreeSet<Vec<u8>> {
    let text = std::fs::read_to_string(fixture_of(V, file)).unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<Json>(line).unwrap())
        .filter(|row| row["type"] == t)
        .map(|row| b64(row["key"].as_str().unwrap()))
        .collect()
}

/// Every event of the fixture dump and what the scan reported.
fn scan_dump(limits: ChunkLimits) -> (Vec<pika_migrate_core::event::Event>, ScanStats) {
    let snapshot = Snapshot::open(&fixture_of(V, "dump")).unwrap();
    let mut events = Vec::new();
    let mut stats = ScanStats::default();
    let mut seq = 0;
    for db in &snapshot.dbs {
        let s = db
            .scan(limits, now_ms() / 1000, &mut seq, &mut |e| {
                events.push(e);
                true
            })
            .unwrap();
        stats.add(&s);
    }
    (events, stats)
}

fn left_out(stats: &ScanStats, reason: Unsupported) -> BTreeSet<Vec<u8>> {
    (stats.unsupported.iter())
        .filter(|k| k.reason == reason)
        .map(|k| k.key.to_vec())
        .collect()
}

#[test]
fn the_4_0_dump_is_read_as_floyd_with_its_three_instances_and_position() {
    let snapshot = Snapshot::open(&fixture_of(V, "dump")).unwrap();
    assert_eq!(snapshot.dbs.len(), 1);
    let db = &snapshot.dbs[0];
    let StorageFormat::Floyd { instances } = &db.format else {
        panic!("read as {}", db.format.name());
    };
    assert_eq!(instances.len(), 3);
    let info = db.info.as_ref().expect("the dump's info");
    assert_eq!(info.position, BinlogOffset::new(1, 508595));
    assert_eq!(
        (info.master_ip.as_str(), info.master_port),
        ("127.0.0.1", 24011)
    );
}

#[test]
fn the_4_0_dump_decodes_to_exactly_what_pika_showed_streams_and_cut_names_reported() {
    let (events, stats) = scan_dump(ChunkLimits::default());
    let expected = live_at(
        &load_expected_file(&fixture_of(V, "expected.jsonl")),
        now_ms(),
    );
    assert_same(&expected, &state_from_snapshot(&events));
    // No key of 4.0 has a second type.
    assert!(events.iter().all(|e| matches!(
        &e.op,
        pika_migrate_core::event::Op::Snapshot { also_types, .. } if also_types.is_empty()
    )));
    // Streams are named, not copied.
    assert_eq!(
        left_out(&stats, Unsupported::Stream),
        names_of_type("expected.jsonl", "stream")
    );
    // The names 4.0.1 stored cut after their last NUL are the ones SCAN listed and no
    // read found (`"type": "none"`): reported, not passed on under the wrong name.
    assert_eq!(
        left_out(&stats, Unsupported::TruncatedName),
        names_of_type("expected.jsonl", "none")
    );
    let lines = stats.unsupported_lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("8 stream key(s) not copied"),
        "{lines:?}"
    );
}

#[test]
fn the_4_0_dump_in_small_chunks_rebuilds_the_same_values() {
    let limits = ChunkLimits {
        elements: 7,
        bytes: 1000,
    };
    let (small, _) = scan_dump(limits);
    let (whole, _) = scan_dump(ChunkLimits::default());
    assert!(small.len() > whole.len() + 1000, "{} events", small.len());
    assert_same(&state_from_snapshot(&whole), &state_from_snapshot(&small));
}

#[test]
fn inspect_names_the_format_and_the_keys_left_out() {
    let dump = fixture_of(V, "dump");
    let (code, stdout, stderr) = run_cli(&["inspect", "snapshot", dump.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("floyd (Pika 4.0), 3 instance(s)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("8 stream key(s) not copied (no stream support in snapshots): s1:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("cut after an embedded NUL byte"),
        "{stderr}"
    );
    assert!(stdout.contains("\tstring\ts1:ttl:pexp:0\t"), "{stdout}");
    let pexp = stdout
        .lines()
        .find(|l| l.contains("\ts1:ttl:pexp:0\t"))
        .unwrap();
    // The ms time with its top bit set, decoded exactly (README: 1798534403212).
    assert!(pexp.contains("expire_at_ms=1798534403212"), "{pexp}");
}

#[test]
fn a_4_0_dump_lands_in_redis_exactly() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!(
        "source:\n  type: snapshot\n  path: {}\nsinks:\n  - type: redis\n    url: {}\n    senders: 4\n    batch: 64\n",
        fixture_of(V, "dump").display(),
        redis.url()
    );
    let pipeline = write_pipeline(tmp.path(), &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("snapshot: 8 stream key(s) not copied"),
        "{stderr}"
    );
    assert!(
        stderr.contains("snapshot: 10 key(s) stored by Pika 4.0 with the name cut"),
        "{stderr}"
    );
    assert!(
        stderr.contains("source position at the end: 1:508595"),
        "{stderr}"
    );
    let expected = redis_view(&live_at(
        &load_expected_file(&fixture_of(V, "expected.jsonl")),
        now_ms(),
    ));
    assert_same(&expected, &redis.state());
}
