//! Our readers against the bytes a real Pika 4.0.1 wrote (`tests/fixtures/pika-v4.0.1`):
//! its dump (floyd: three instance directories, seven column families each, times in
//! milliseconds with the top bit set) and its binlog with every form 4.0.1 logs.

mod common;

use std::collections::BTreeSet;

use common::*;
use pika_migrate_core::event::{BinlogOffset, DataType};
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
            .scan(limits, fixture_moment_of(V) / 1000, &mut seq, &mut |e| {
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
fn the_4_0_dump_decodes_to_exactly_what_pika_showed_streams_included_cut_names_reported() {
    let (events, stats) = scan_dump(ChunkLimits::default());
    // Read as of the moment Pika was asked (the keys with a time to live included).
    let expected = live_at(
        &load_expected_file(&fixture_of(V, "expected.jsonl")),
        fixture_moment_of(V),
    );
    assert_eq!(
        expected
            .values()
            .filter(|s| s.expire_at_ms.is_some())
            .count(),
        46
    );
    assert_same(&expected, &state_from_snapshot(&events));
    // No key of 4.0 has a second type.
    assert!(events.iter().all(|e| matches!(
        &e.op,
        pika_migrate_core::event::Op::Snapshot { also_types, .. } if also_types.is_empty()
    )));
    // Every stream is read (the comparison above holds their entries, ids and fields).
    assert_eq!(stats.keys_of(DataType::Stream), 8);
    assert_eq!(
        names_of_type("expected.jsonl", "stream").len(),
        8,
        "the fixture's streams"
    );
    // The names 4.0.1 stored cut after their last NUL are the ones SCAN listed and no
    // read found (`"type": "none"`): reported, not passed on under the wrong name.
    assert_eq!(
        left_out(&stats, Unsupported::TruncatedName),
        names_of_type("expected.jsonl", "none")
    );
    assert_eq!(stats.unsupported_count(Unsupported::TruncatedName), 10);
    let lines = stats.unsupported_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("10 key(s) stored by Pika 4.0"),
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
fn inspect_names_the_format_shows_the_streams_and_names_the_keys_left_out() {
    let dump = fixture_of(V, "dump");
    // As of the moment Pika was asked (its keys with a time to live alive then).
    let moment = (fixture_moment_of(V) / 1000).to_string();
    let (code, stdout, stderr) = run_cli(&[
        "inspect",
        "snapshot",
        "--as-of",
        &moment,
        dump.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("floyd (Pika 4.0), 3 instance(s)"),
        "{stderr}"
    );
    assert!(!stderr.contains("stream key(s) not copied"), "{stderr}");
    assert!(
        stderr.contains("cut after an embedded NUL byte"),
        "{stderr}"
    );
    // Each stream is listed with its entry count, last id and first entries.
    let streams: Vec<&str> = (stdout.lines())
        .filter(|l| l.contains("\tstream\t"))
        .collect();
    assert_eq!(streams.len(), 8, "{streams:?}");
    assert!(
        streams
            .iter()
            .all(|l| l.contains("part=whole n=") && l.contains("last_id=")),
        "{streams:?}"
    );
    assert!(stdout.contains("\tstring\ts1:ttl:pexp:0\t"), "{stdout}");
    let pexp = stdout
        .lines()
        .find(|l| l.contains("\ts1:ttl:pexp:0\t"))
        .unwrap();
    // The ms time with its top bit set, decoded exactly (README: 1798534403212).
    assert!(pexp.contains("expire_at_ms=1798534403212"), "{pexp}");
}

/// Runs `source` (a `source:` body) into `redis` with the sink settings `extra`;
/// returns stderr of the successful run.
fn run_into(redis: &RedisServer, source: &str, extra: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!(
        "source:\n{source}\nsinks:\n  - type: redis\n    url: {}\n{extra}",
        redis.url()
    );
    let pipeline = write_pipeline(tmp.path(), &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    stderr
}

fn dump_source_4_0() -> String {
    fixture_dump_source(V)
}

#[test]
fn a_4_0_dump_lands_in_redis_exactly() {
    let redis = RedisServer::start();
    // The three instances read side by side.
    let stderr = run_into(
        &redis,
        &format!("{}\n  scan_threads: 3", dump_source_4_0()),
        "    senders: 4\n    batch: 64\n",
    );
    assert!(stderr.contains("threads=3"), "{stderr}");
    // floyd flags a HyperLogLog in its value; the sink tells them by their size, as
    // for blackwidow's, and copies them raw.
    assert!(
        stderr.contains("Pika HyperLogLog keys copied as raw strings"),
        "{stderr}"
    );
    assert!(!stderr.contains("stream key(s) not copied"), "{stderr}");
    assert!(
        stderr.contains("snapshot: 10 key(s) stored by Pika 4.0 with the name cut"),
        "{stderr}"
    );
    assert!(
        stderr.contains("source position at the end: 1:508595"),
        "{stderr}"
    );
    let moment = fixture_moment_of(V);
    let expected = redis_view(&live_at(
        &load_expected_file(&fixture_of(V, "expected.jsonl")),
        moment,
    ));
    assert_same_as_of(&expected, &redis.state(), moment);
}

/// The key as Redis holds it after the replay, taken out of `actual`.
fn take(actual: &mut State, key: &[u8], t: &str) -> Option<KeyState> {
    actual.remove(&(key.to_vec(), t.to_owned()))
}

/// Runs the fixture binlog (from `from`, or its start) into `redis`; returns stderr.
fn run_binlog_into(redis: &RedisServer, from: Option<&str>) -> String {
    let from = from
        .map(|f| format!("\n  from: \"{f}\""))
        .unwrap_or_default();
    let source = format!(
        "  type: binlog\n  path: {}{from}{}",
        fixture_of(V, "binlog").display(),
        as_of_line(fixture_moment_of(V))
    );
    // on_error: skip for the one XADD 4.0.1 logged with an id below the stream's last
    // (binlog-forms.md): Redis refuses it as Pika's own replica does.
    let stderr = run_into(redis, &source, "    on_error: skip\n");
    assert!(
        stderr.contains("1 commands refused by Redis and skipped"),
        "{stderr}"
    );
    stderr
}

/// Compares Redis after the binlog with `binlog-expected.jsonl`, once the places where
/// 4.0.1's binlog and its own state part are accounted for. `whole_dataset`: the
/// dataset part of the binlog was replayed too (not read from the dump).
fn assert_binlog_end_state_4_0(redis: &RedisServer, whole_dataset: bool) {
    let moment = fixture_moment_of(V);
    let mut expected = redis_view(&live_at(
        &load_expected_file(&fixture_of(V, "binlog-expected.jsonl")),
        moment,
    ));
    let mut actual = redis.state();
    without_replayed_hyperloglogs(&mut expected, &mut actual);
    without_the_refused_xadd(&mut expected, &mut actual);

    // The binlog's meaning is applied where the master lost the key: PEXPIREAT with a
    // future ms time and a client PKSETEXAT deleted it on the 4.0.1 master (int32
    // conversion); Redis keeps it with the time logged (moved as all times are when read
    // as of a moment: by now − that moment as the run saw it, shortly before this).
    let mut lost = vec![
        (&b"s1:p2:e4"[..], 1_924_992_000_123),
        (b"s1:p2:pk", 1_893_456_000_000),
    ];
    if whole_dataset {
        lost.push((b"s1:ttl:pexpat", 1_924_992_000_123));
    }
    for (key, at) in lost {
        let kept = take(&mut actual, key, "string").expect("kept with its TTL");
        let early = kept.expire_at_ms.map(|t| at + (now_ms() - moment) - t);
        let close = early.map(|ms| (-EXPIRY_SLACK_MS..60_000).contains(&ms));
        assert_eq!(close, Some(true), "{kept:?} {early:?}");
    }
    // APPEND on a missing key is logged with an empty value (a 4.0.1 bug).
    let appended = take(&mut actual, b"s1:p2:appnew", "string").unwrap();
    assert_eq!(appended.val, Val::String(Vec::new()));
    expected.remove(&(b"s1:p2:appnew".to_vec(), "string".to_owned()));
    // The binlog carries the whole names of the NUL-named keys; the master showed them
    // only cut (`"type": "none"`, left out of `expected`).
    let whole_nul_names: Vec<_> = (actual.keys())
        .filter(|(k, _)| k.iter().rev().skip(1).any(|b| *b == 0))
        .cloned()
        .collect();
    let written = if whole_dataset { 12 } else { 1 };
    assert_eq!(whole_nul_names.len(), written, "{whole_nul_names:?}");
    for k in whole_nul_names {
        actual.remove(&k);
    }
    assert_same_as_of(&expected, &actual, moment);
}

#[test]
fn the_4_0_binlog_replays_into_redis_as_its_commands_meant() {
    let redis = RedisServer::start();
    let stderr = run_binlog_into(&redis, None);
    // SDIFF, SINTER, SUNION, CLEARCACHE, CLEARREPLICATIONID, PADDING.
    assert!(
        stderr.contains("binlog: 6 padding, admin and read-only items skipped"),
        "{stderr}"
    );
    assert_binlog_end_state_4_0(&redis, true);
}

#[test]
fn the_4_0_dump_then_the_binlog_from_its_position_gives_the_later_state() {
    let redis = RedisServer::start();
    run_into(&redis, &dump_source_4_0(), "");
    run_binlog_into(&redis, Some("1:508595"));
    assert_binlog_end_state_4_0(&redis, false);
}

#[test]
fn every_item_of_the_4_0_binlog_decodes_and_its_forms_normalize_as_meant() {
    use pika_migrate_core::pika::binlog::{BinlogReader, ReadOutcome};
    use pika_migrate_core::pika::normalize::{normalize, Note};
    let mut reader = BinlogReader::open(&fixture_of(V, "binlog"), None).unwrap();
    let mut items = Vec::new();
    while let ReadOutcome::Entry(e) = reader.read_next().unwrap() {
        items.push(e);
    }
    // README: 1991 items; the manifest's offset is the end of the last.
    assert_eq!(items.len(), 1991);
    assert_eq!(items.last().unwrap().end, BinlogOffset::new(1, 684654));
    assert!(items.iter().all(|e| e.item.term == 0));
    let words = |argv: &[bytes::Bytes]| -> Vec<String> {
        (argv.iter())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    let mut psetex_ms = 0;
    let mut reads = 0;
    for e in &items {
        let n = normalize(&e.item.argv, e.item.exec_time).unwrap();
        let logged = words(&e.item.argv);
        match e.item.command_name().as_str() {
            // PSETEX on 4.0.1: `pksetexat k <exec ms + ms> v`, applied in milliseconds.
            "pksetexat" if logged[2].len() == 13 => {
                let out = words(&n.argv.unwrap());
                assert_eq!(out, ["SET", &logged[1], &logged[3], "PXAT", &logged[2]]);
                let at: i64 = logged[2].parse().unwrap();
                let exec_ms = i64::from(e.item.exec_time) * 1000;
                assert!((exec_ms..exec_ms + 600_000_000).contains(&at), "{logged:?}");
                psetex_ms += 1;
            }
            "sdiff" | "sinter" | "sunion" => {
                assert_eq!((n.argv, n.note), (None, Some(Note::Skipped)));
                reads += 1;
            }
            "pexpireat" => assert_eq!(words(&n.argv.unwrap()), logged),
            _ => {}
        }
    }
    // 10 PSETEX in the dataset, 2 in the second sequence; one each of the three reads.
    assert_eq!((psetex_ms, reads), (12, 3));
}

/// The master's rsync2 port in the capture (master 24051 + 10001) and its replication
/// port (+ 2000).
const RSYNC2_PORT: u16 = 34052;
const REPL_PORT: u16 = 26051;

/// The bytes of each connection to `port` in the capture: (to the master, from it).
fn connections(streams: &common::pcap::Streams, port: u16) -> Vec<(Vec<u8>, Vec<u8>)> {
    use common::pcap::Flow;
    (streams.bytes.keys())
        .filter(|f| f.dst_port == port)
        .map(|to_master| {
            let back = Flow {
                src_port: port,
                dst_port: to_master.src_port,
            };
            (
                streams.bytes[to_master].clone(),
                streams.bytes[&back].clone(),
            )
        })
        .collect()
}

#[test]
fn the_4_0_master_is_told_by_meta_sync_and_our_rsync2_requests_are_a_real_replicas() {
    use common::pcap::{assert_rsync2_requests_are_ours, frames};
    use pika_migrate_core::pika::repl::proto::InnerResponse;
    use pika_migrate_core::pika::repl::rsync::{RsyncCode, RsyncResponse, RsyncType};
    use pika_migrate_core::source::pika::master_info::Generation;
    use prost::Message;

    let streams = common::pcap::tcp_streams(&fixture_of(V, "repl-capture.pcap"));
    // MetaSync's reply (one per sync: SLAVEOF, then SLAVEOF … FORCE): db_instance_num 3
    // and a run_id make it 4.0.
    let repl = connections(&streams, REPL_PORT);
    assert_eq!(repl.len(), 2);
    for (_, from_master) in &repl {
        let first = InnerResponse::decode(frames(from_master)[0].clone()).unwrap();
        let meta = first.meta_sync.expect("the MetaSync reply first");
        assert_eq!(meta.tables_info[0].db_instance_num, Some(3));
        assert_eq!(Generation::of_meta_sync(&meta), Some(Generation::PullFloyd));
    }

    // One rsync2 connection, kept for both pulls.
    let rsync2 = connections(&streams, RSYNC2_PORT);
    assert_eq!(rsync2.len(), 1);
    let (to_master, from_master) = &rsync2[0];
    let (metas, files) = assert_rsync2_requests_are_ours(to_master);
    // Two pulls of 19 files (3 instances, then `info`); the first Meta was "busy".
    assert_eq!(files, 38);
    assert!(metas >= 3, "{metas}");
    let replies: Vec<RsyncResponse> = (frames(from_master).into_iter())
        .map(|f| RsyncResponse::decode(f).unwrap())
        .collect();
    let listed: Vec<&String> = (replies.iter())
        .filter_map(|r| r.meta_resp.as_ref())
        .flat_map(|m| &m.filenames)
        .collect();
    assert_eq!(listed.len(), 38);
    assert!(
        listed.iter().all(|n| *n == "info"
            || n.split_once('/')
                .is_some_and(|(dir, _)| ["0", "1", "2"].contains(&dir))),
        "{listed:?}"
    );
    let ok_files: Vec<_> = (replies.iter())
        .filter(|r| r.r#type == RsyncType::File as i32 && r.code == RsyncCode::Ok as i32)
        .collect();
    assert_eq!(ok_files.len(), 38);
    assert!(ok_files
        .iter()
        .all(|r| r.snapshot_uuid == "b66c398d771f1809f5a6242c467cb217"));
    let info = (ok_files.iter())
        .find_map(|r| r.file_resp.as_ref().filter(|f| f.filename == "info"))
        .unwrap();
    assert_eq!(&info.data[..], b"0s\n127.0.0.1\n24051\n0\n308987\n");
}
