//! Our readers against the bytes a real Pika 3.5.5 wrote (`tests/fixtures/pika-v3.5.5`):
//! its dump (blackwidow, as 3.3's, plus a `streams/` database the full sync never
//! carries, read from the dump), its binlog with every form 3.5.5 logs, and the capture of a real 3.5.5
//! replica pulling a dump over `RsyncService` (master port 23751, so rsync2 on 33752).

mod common;

use bytes::Bytes;
use common::pcap::{assert_rsync2_requests_are_ours, frames, tcp_streams, Flow};
use common::*;
use pika_migrate_core::event::{BinlogOffset, DataType, Op};
use pika_migrate_core::pika::binlog::{BinlogReader, ReadOutcome};
use pika_migrate_core::pika::normalize::{normalize, Note};
use pika_migrate_core::pika::repl::rsync::{RsyncCode, RsyncResponse, RsyncType};
use pika_migrate_core::pika::storage::{ChunkLimits, Snapshot};
use prost::Message;

const V: &str = "3.5.5";
const RSYNC2_PORT: u16 = 33752;

#[test]
fn the_3_5_dump_decodes_to_exactly_what_pika_showed_streams_included() {
    let dump = fixture_of(V, "dump");
    let snapshot = Snapshot::open(&dump).unwrap();
    let info = snapshot.dbs[0].info.as_ref().expect("the dump's info");
    assert_eq!(info.position, BinlogOffset::new(1, 510266));
    let mut events = Vec::new();
    // As of the moment Pika was asked: every key it showed, those with a time to live
    // among them.
    let moment = moment_of(&fixture_of(V, "expected.jsonl"));
    let stats = snapshot.dbs[0]
        .scan(ChunkLimits::default(), moment / 1000, &mut 0, &mut |e| {
            events.push(e);
            true
        })
        .unwrap();
    let expected = load_expected_file(&fixture_of(V, "expected.jsonl"));
    assert_eq!(
        expected
            .values()
            .filter(|s| s.expire_at_ms.is_some())
            .count(),
        48
    );
    // Streams included: every entry's id and fields, in order.
    assert_same(&expected, &state_from_snapshot(&events));
    assert_eq!(stats.keys_of(DataType::Stream), 9);
    // `s1:multi` is also a stream: its other types know it, its stream knows them.
    let multi = |t: DataType| {
        events.iter().find_map(|e| match &e.op {
            Op::Snapshot { also_types, .. }
                if e.key.as_ref() == b"s1:multi" && e.data_type == Some(t) =>
            {
                Some(*also_types)
            }
            _ => None,
        })
    };
    assert!(multi(DataType::String).unwrap().contains(DataType::Stream));
    assert!(multi(DataType::Stream).unwrap().contains(DataType::String));
}

#[test]
fn the_3_5_dump_lands_in_redis_exactly_streams_included() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Read on four threads: the name that is a string and a stream still resolves
    // to its string, whichever thread reads which first.
    let yaml = format!(
        "source:\n{}\n  scan_threads: 4\nsinks:\n  - type: redis\n    url: {}\n    batch: 64\n",
        fixture_dump_source(V),
        redis.url()
    );
    let pipeline = write_pipeline(dir.path(), &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("threads=4"), "{stderr}");
    assert!(stderr.contains(", 9 stream); "), "{stderr}");
    let moment = fixture_moment_of(V);
    let expected = redis_view(&live_at(
        &load_expected_file(&fixture_of(V, "expected.jsonl")),
        moment,
    ));
    // 8 streams reach Redis; `s1:multi`'s stream gives way to its string (first-wins).
    let streams = (expected.keys()).filter(|(_, t)| t == "stream").count();
    assert_eq!(streams, 8);
    assert_same_as_of(&expected, &redis.state(), moment);
    // `verify` reads the streams back entry by entry (XRANGE, XLEN) and finds them equal,
    // and finds an entry changed behind its back.
    let (code, stdout, stderr) = run_cli(&["verify", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(" 0 differ"), "{stdout}");
    let mut con = redis.client();
    let () = redis::cmd("XDEL")
        .arg("s1:stream:ids")
        .arg("5-0")
        .query(&mut con)
        .map(|_: i64| ())
        .unwrap();
    let (code, stdout, _) = run_cli(&["verify", "-c", pipeline.to_str().unwrap()]);
    assert_ne!(code, 0, "{stdout}");
    assert!(
        stdout.contains("s1:stream:ids: 4 stream entries differ"),
        "{stdout}"
    );
}

fn items() -> Vec<pika_migrate_core::pika::binlog::BinlogEntry> {
    let mut reader = BinlogReader::open(&fixture_of(V, "binlog"), None).unwrap();
    let mut out = Vec::new();
    while let ReadOutcome::Entry(e) = reader.read_next().unwrap() {
        out.push(e);
    }
    out
}

fn words(argv: &[Bytes]) -> Vec<String> {
    argv.iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[test]
fn every_item_of_the_3_5_binlog_decodes_padding_included() {
    let items = items();
    // binlog-forms.md: 1996 commands gave 2011 items.
    assert_eq!(items.len(), 2011);
    assert_eq!(items.last().unwrap().end, BinlogOffset::new(1, 686537));
    // term is 0 in every 3.5.5 item header.
    assert!(items.iter().all(|e| e.item.term == 0));
    // A client's PADDING: its content is a nested item; the command inside is padding.
    let padding: Vec<_> = items
        .iter()
        .filter(|e| e.item.command_name() == "padding")
        .collect();
    assert_eq!(padding.len(), 1);
    let n = normalize(&padding[0].item.argv, padding[0].item.exec_time).unwrap();
    assert_eq!((n.argv, n.note), (None, Some(Note::Skipped)));
}

#[test]
fn the_3_5_forms_normalize_as_the_master_applied_them() {
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for e in items() {
        let item = &e.item;
        let n = normalize(&item.argv, item.exec_time).unwrap();
        let logged = words(&item.argv);
        let out = n.argv.as_deref().map(words);
        match item.command_name().as_str() {
            // INCR/APPEND: a new value, the key's expiry kept.
            "pksetexat" if logged[2] == "0" => {
                let want = vec!["SET", &logged[1], &logged[3], "KEEPTTL"];
                assert_eq!(out.unwrap(), want, "{logged:?}");
                let note = if logged[3].is_empty() {
                    Note::EmptyAppend
                } else {
                    Note::PikaOnlyRewritten
                };
                assert_eq!(n.note, Some(note));
                *seen.entry("pksetexat 0").or_default() += 1;
            }
            "pksetexat" => {
                let ms = format!("{}000", logged[2]);
                assert_eq!(out.unwrap(), ["SET", &logged[1], &logged[3], "PXAT", &ms]);
                *seen.entry("pksetexat t").or_default() += 1;
            }
            "clearcache" | "clearreplicationid" => {
                assert_eq!(out, None);
                *seen.entry("admin").or_default() += 1;
            }
            // XADD carries the id the master generated: applied as logged.
            "xadd" => {
                assert!(!logged.iter().any(|a| a == "*"), "{logged:?}");
                assert_eq!(out.unwrap(), logged);
                *seen.entry("xadd").or_default() += 1;
            }
            "lpop" | "rpop" | "srem" | "sadd" | "del" | "unlink" | "flushdb" => {
                *seen.entry("verbatim").or_default() += 1;
            }
            _ => {}
        }
    }
    for form in ["pksetexat 0", "pksetexat t", "admin", "xadd", "verbatim"] {
        assert!(seen.get(form).copied().unwrap_or(0) > 0, "{form}: {seen:?}");
    }
}

#[test]
fn our_rsync2_requests_are_the_bytes_a_real_3_5_replica_sent() {
    let streams = tcp_streams(&fixture_of(V, "repl-capture.pcap"));
    let to_master: Vec<Flow> = streams
        .bytes
        .keys()
        .filter(|f| f.dst_port == RSYNC2_PORT)
        .copied()
        .collect();
    assert_eq!(to_master.len(), 1, "one rsync2 connection: {to_master:?}");
    let flow = to_master[0];
    let back = Flow {
        src_port: RSYNC2_PORT,
        dst_port: flow.src_port,
    };
    let replies: Vec<RsyncResponse> = frames(&streams.bytes[&back])
        .into_iter()
        .map(|f| RsyncResponse::decode(f).unwrap())
        .collect();
    let (metas, files) = assert_rsync2_requests_are_ours(&streams.bytes[&flow]);
    // Two pulls of 26 files; the first Meta of the first was answered "busy".
    assert_eq!(files, 52);
    assert!(metas >= 3, "{metas}");
    // Every reply decodes; the file replies name the dump by the MD5 of its info.
    let ok_files: Vec<_> = replies
        .iter()
        .filter(|r| r.r#type == RsyncType::File as i32 && r.code == RsyncCode::Ok as i32)
        .collect();
    assert_eq!(ok_files.len(), 52);
    assert!(ok_files
        .iter()
        .all(|r| r.snapshot_uuid == "48840a8064e72dbe3c6df9a561dfdaba"));
    let info = ok_files
        .iter()
        .find_map(|r| r.file_resp.as_ref().filter(|f| f.filename == "info"))
        .unwrap();
    assert_eq!(&info.data[..], b"0s\n127.0.0.1\n23751\n0\n308987\n");
    assert_eq!(info.eof, 1);
}

#[test]
fn the_3_5_binlog_replayed_into_redis_gives_what_pika_showed() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let moment = fixture_moment_of(V);
    let yaml = format!(
        "source:\n  type: binlog\n  path: {}\n  pika_version: \"3.5.5\"{}\nsinks:\n  - type: redis\n    url: {}\n    on_error: skip\n",
        fixture_of(V, "binlog").display(),
        as_of_line(moment),
        redis.url()
    );
    let pipeline = write_pipeline(dir.path(), &yaml);
    let (code, _, stderr) = run_cli(&["run", "-c", pipeline.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    // The one command Redis refuses, as a real 3.5.5 replaying it does: 3.5.5 logged an
    // XADD whose generated id is below the stream's last.
    assert!(
        stderr.contains("1 commands refused by Redis and skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("command=XADD key=s1:p2:x"), "{stderr}");
    let shown = load_expected_file(&fixture_of(V, "binlog-expected.jsonl"));
    let mut expected = redis_view(&live_at(&shown, moment));
    let mut actual = redis.state();
    // Two keys differ, each for a reason outside the replay (the fixture README's
    // "Replaying the binlog"); each is checked for exactly that difference, then set
    // aside.
    let string = |k: &str| (k.as_bytes().to_vec(), "string".to_owned());
    // APPEND to a missing key: 3.5.5 logged `pksetexat k 0 ""`, so a real 3.5.5 replica
    // holds "" too.
    let appnew = string("s1:p2:appnew");
    assert!(matches!(&actual[&appnew].val, Val::String(v) if v.is_empty()));
    expected.remove(&appnew);
    actual.remove(&appnew);
    // SET, EXPIREAT now+1000 s, PERSIST: the key stays, with no time to live, as on the
    // master (tests/late_replay.rs replays it after that expiry, which is held back).
    let persist = string("s1:persist");
    assert_eq!(actual[&persist].expire_at_ms, None);
    without_the_refused_xadd(&mut expected, &mut actual);
    without_replayed_hyperloglogs(&mut expected, &mut actual);
    assert_same_as_of(&expected, &actual, moment);
}
