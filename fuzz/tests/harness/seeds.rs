//! Seed inputs for each target: real bytes of a Pika 3.3.6 (its binlog, dump, the
//! capture of its replication link) and of this project (examples, capture records),
//! plus hand-made edge cases the mutations start from.

use std::path::{Path, PathBuf};

use pika_migrate_core::capture::{self, record};
use pika_migrate_core::event::{DataType, Event};
use pika_migrate_core::pika::binlog::{BinlogReader, ReadOutcome};
use pika_migrate_core::pika::normalize::Dialect;
use pika_migrate_core::pika::repl::frame;
use pika_migrate_core::pika::storage::{ChunkLimits, Snapshot};
use pika_migrate_core::source::binlog::entry_to_event;
use pika_migrate_core::source::SourceReport;

#[path = "../../../tests/common/pcap.rs"]
#[allow(dead_code)]
mod pcap;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/pika-v3.3.6")
        .join(rel)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every item of the fixture binlog, encoded as Pika wrote it.
fn binlog_items() -> Vec<Vec<u8>> {
    let mut reader = BinlogReader::open(&fixture("binlog"), None).expect("the fixture binlog");
    let mut out = Vec::new();
    while let ReadOutcome::Entry(e) = reader.read_next().expect("a fixture item") {
        out.push(e.item.encode());
    }
    out
}

/// Up to `n` inputs spread evenly over `all`, the largest one included.
fn spread(mut all: Vec<Vec<u8>>, n: usize) -> Vec<Vec<u8>> {
    let largest = all.iter().map(Vec::len).max().unwrap_or(0);
    let step = (all.len() / n).max(1);
    let mut out: Vec<Vec<u8>> = all.iter().step_by(step).cloned().collect();
    if let Some(i) = all.iter().position(|x| x.len() == largest) {
        out.push(all.swap_remove(i));
    }
    out
}

fn fixture_events() -> Vec<Event> {
    let snapshot = Snapshot::open(&fixture("dump")).expect("the fixture dump");
    let mut events = Vec::new();
    let mut seq = 0;
    for db in &snapshot.dbs {
        db.scan(ChunkLimits::default(), 0, &mut seq, &mut |e| {
            events.push(e);
            true
        })
        .expect("scanning the fixture dump");
    }
    let mut reader = BinlogReader::open(&fixture("binlog"), None).expect("the fixture binlog");
    let mut report = SourceReport::default();
    while let ReadOutcome::Entry(e) = reader.read_next().expect("a fixture item") {
        events.extend(
            entry_to_event(0, e, Dialect::default(), &mut report).expect("a fixture event"),
        );
    }
    events
}

/// The streams of the Pika 3.5.5 fixture dump (the 3.3.6 one has none).
fn stream_events() -> Vec<Event> {
    let dump = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pika-v3.5.5/dump");
    let snapshot = Snapshot::open(&dump).expect("the 3.5.5 fixture dump");
    let mut events = Vec::new();
    for db in &snapshot.dbs {
        db.scan(ChunkLimits::default(), 0, &mut 0, &mut |e| {
            if e.data_type == Some(DataType::Stream) {
                events.push(e);
            }
            true
        })
        .expect("scanning the 3.5.5 fixture dump");
    }
    events
}

fn records() -> Vec<Vec<u8>> {
    encoded(&fixture_events())
}

fn encoded(events: &[Event]) -> Vec<Vec<u8>> {
    events
        .iter()
        .map(|e| {
            let mut out = Vec::new();
            record::encode(e, &mut out);
            out
        })
        .collect()
}

/// The replication link's bytes both ways (port 11221 is the master's).
fn repl_flows() -> Vec<Vec<u8>> {
    let streams = pcap::tcp_streams(&fixture("repl-capture.pcap"));
    streams
        .bytes
        .into_iter()
        .filter(|(flow, _)| flow.src_port == 11221 || flow.dst_port == 11221)
        .map(|(_, bytes)| bytes)
        .collect()
}

/// The frames of a link's bytes, each with its length prefix.
fn frames_of(flow: &[u8]) -> Vec<Vec<u8>> {
    let mut buf = bytes::BytesMut::from(flow);
    let mut out = Vec::new();
    while let Ok(Some(body)) = frame::decode(&mut buf, frame::MAX_FRAME) {
        let mut f = Vec::new();
        frame::encode(&mut f, &body);
        out.push(f);
    }
    out
}

const INFO: &str =
    "# Server\r\npika_version:3.3.6\r\npika_git_sha:bd30511\r\nos:Linux 5.10 x86_64\r\n\
arch_bits:64\r\nprocess_id:1\r\ntcp_port:9221\r\nthread_num:1\r\nsync_thread_num:6\r\n\
uptime_in_seconds:100\r\nconfig_file:/pika/conf/pika.conf\r\nserver_id:1\r\n\r\n# Data\r\n\
db_size:1234\r\nlog_size:5678\r\ncompression:snappy\r\n\r\n# Replication(MASTER)\r\n\
role:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=9231,conn_fd=88,lag=(db0:0)\r\n\
db0 binlog_offset=1 547194,safety_purge=none\r\n";

/// A physical binlog record: length (3 bytes), time, type, payload.
fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut r = len.to_le_bytes()[..3].to_vec();
    r.extend_from_slice(&1_700_000_000u32.to_le_bytes());
    r.push(kind);
    r.extend_from_slice(payload);
    r
}

/// The seeds of the target `name`.
/// floyd keys and values as Pika 4.0.1 writes them (fixture README and bytes).
fn floyd_seeds() -> Vec<Vec<u8>> {
    let reserve = [0u8; 16];
    let mut meta_key = vec![0u8; 8];
    meta_key.extend_from_slice(b"s1:nul:end\x00\x01\x00\x00");
    meta_key.extend_from_slice(&reserve);
    let mut cut = vec![0u8; 8];
    cut.extend_from_slice(b"s1:nul:mid\x00\x01\x00\x00");
    cut.extend_from_slice(&reserve);
    cut.extend_from_slice(b"\xd8,");
    let ms = |t: u64| (t | 1 << 63).to_le_bytes();
    let mut string = b"\x00v-mid".to_vec();
    string.extend_from_slice(&reserve);
    string.extend_from_slice(&ms(1_796_034_403_358));
    string.extend_from_slice(&ms(1_798_534_403_212));
    let mut hash = vec![1u8];
    hash.extend_from_slice(&1i32.to_le_bytes());
    hash.extend_from_slice(&1_796_034_403_360u64.to_le_bytes());
    hash.extend_from_slice(&reserve);
    hash.extend_from_slice(&ms(1_796_034_403_360));
    hash.extend_from_slice(&0u64.to_le_bytes());
    let mut list = vec![3u8];
    list.extend_from_slice(&2u64.to_le_bytes());
    list.extend_from_slice(&1_796_034_403_360u64.to_le_bytes());
    list.extend_from_slice(&((1u64 << 63) - 1).to_le_bytes());
    list.extend_from_slice(&[0x71, 0x1e, 0x91, 0x24, 0x7f, 0, 0, 0]);
    list.extend_from_slice(&((1u64 << 63) + 2).to_le_bytes());
    list.extend_from_slice(&[0x10, 0, 0, 0, 0, 0, 0, 0]);
    list.extend_from_slice(&reserve);
    list.extend_from_slice(&ms(1_796_034_403_360));
    list.extend_from_slice(&0u64.to_le_bytes());
    let mut score = 1.5f64.to_le_bytes().to_vec();
    score.extend_from_slice(&reserve);
    score.extend_from_slice(&ms(1_796_034_403_360));
    vec![meta_key, cut, string, hash, list, score]
}

pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let text = |s: &str| s.as_bytes().to_vec();
    match name {
        "resp_command" => {
            let mut s: Vec<Vec<u8>> = spread(binlog_items(), 64)
                .into_iter()
                .map(|i| i[34..].to_vec())
                .collect();
            s.extend(
                [
                    "*1\r\n$0\r\n\r\n",
                    "*0\r\n",
                    "*99999999\r\n",
                    "*2\r\n$18446744073709551615\r\nab\r\n",
                    "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$01\r\nv\r\n",
                ]
                .map(text),
            );
            s
        }
        "binlog_item" => spread(binlog_items(), 64),
        "binlog_manifest" => vec![read(&fixture("binlog/manifest"))[..64].to_vec(), vec![]],
        "binlog_file" => {
            let f0 = read(&fixture("binlog/write2file0"));
            let f1 = read(&fixture("binlog/write2file1"));
            // The whole files are read by the fixture tests (their second item spans 16
            // blocks); mutations work on the small items before it, followed by an item
            // spanning a block boundary, and on the active file's head.
            let mut spanning = f0[..39748].to_vec();
            let item = pika_migrate_core::pika::binlog::BinlogItem {
                argv: ["SET", "k", &"v".repeat(30_000)]
                    .map(|a| bytes::Bytes::copy_from_slice(a.as_bytes()))
                    .to_vec(),
                ..BinlogReader::open(&fixture("binlog"), None)
                    .and_then(|mut r| r.read_next())
                    .map(|o| match o {
                        ReadOutcome::Entry(e) => e.item,
                        ReadOutcome::CaughtUp => panic!("an empty fixture binlog"),
                    })
                    .expect("the fixture's first item")
            }
            .encode();
            let first = 65536 - spanning.len() - 8;
            spanning.extend(record(2, &item[..first]));
            spanning.extend(record(4, &item[first..]));
            vec![spanning, f1[..f1.len().min(8192)].to_vec()]
        }
        "repl_stream" => {
            let flows = repl_flows();
            let mut s: Vec<Vec<u8>> = flows
                .iter()
                .flat_map(|f| spread(frames_of(f), 16))
                .collect();
            s.extend(flows.iter().map(|f| f[..f.len().min(64 << 10)].to_vec()));
            s.push(vec![0x1f, 0xff, 0xff, 0xff, 8, 1]);
            s
        }
        "storage_values" => {
            let mut meta = 3i32.to_le_bytes().to_vec();
            meta.extend_from_slice(&7u32.to_le_bytes());
            meta.extend_from_slice(&0i32.to_le_bytes());
            let mut list = 2u64.to_le_bytes().to_vec();
            list.extend_from_slice(&meta[4..]);
            list.extend_from_slice(&((1u64 << 63) - 1).to_le_bytes());
            list.extend_from_slice(&(1u64 << 63).to_le_bytes());
            vec![
                meta,
                list,
                b"value\x00\x00\x00\x00".to_vec(),
                1.5f64.to_le_bytes().to_vec(),
            ]
        }
        "storage_comparators"
        | "normalize"
        | "plugin_reply"
        | "storage_scan"
        | "floyd_comparators" => Vec::new(),
        "floyd_bytes" => floyd_seeds(),
        "stream_bytes" => stream_seeds(),
        "storage_dump_patch" | "floyd_dump_patch" => {
            let files = if name == "floyd_dump_patch" {
                pika_migrate_fuzz::storage::floyd_fixture_dump_files()
            } else {
                pika_migrate_fuzz::storage::fixture_dump_files()
            };
            let mut s = vec![Vec::new()];
            // Per file: its first bytes and a byte near its end (the footer) changed.
            for i in 0..files.len() {
                s.push(vec![i as u8, 0, 0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]);
                s.push(vec![i as u8, 0xf0, 0xff, 0xff, 0xff, 1, 0x55]);
            }
            s
        }
        "dump_info" => vec![
            read(&fixture("dump/db0/info")),
            text("0s\n127.0.0.1\n9221\n1\n507340\n3\n9\n"),
            text("1:507340"),
        ],
        "capture_record" => {
            let mut s = spread(records(), 96);
            s.extend(encoded(&stream_events()));
            s
        }
        "capture_file" => {
            let mut file = capture::header().to_vec();
            let small = records().into_iter().filter(|r| r.len() < 4096).collect();
            for r in spread(small, 40) {
                file.extend_from_slice(&(r.len() as u32).to_le_bytes());
                file.extend_from_slice(&crc32fast::hash(&r).to_le_bytes());
                file.extend_from_slice(&r);
            }
            vec![file, capture::header().to_vec()]
        }
        "master_info" => vec![text(INFO), text("# Server\r\nredis_version:7.0.0\r\n")],
        "info_reply" => vec![
            format!("${}\r\n{INFO}\r\n", INFO.len()).into_bytes(),
            format!("+OK\r\n${}\r\n{INFO}\r\n", INFO.len()).into_bytes(),
            text("-NOAUTH Authentication required.\r\n"),
            text("$-1\r\n"),
            text(":1\r\n"),
            text("$99999999999\r\n"),
        ],
        "config_yaml" => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
            let mut s: Vec<Vec<u8>> = std::fs::read_dir(&dir)
                .expect("the examples")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .map(|p| read(&p))
                .collect();
            s.sort();
            s.push(text(
                "source: {type: binlog, path: b, from: '1:2'}\nfilters:\n  - {type: key, include: ['a*', {regex: 'x+'}]}\n  - {type: rename, add_prefix: 'p:'}\nsinks:\n  - {type: file, path: '-', format: resp}\n  - {type: redis, url: 'redis://:${PW}@127.0.0.1:6379/0', tls: {ca_file: x}}\n",
            ));
            s
        }
        other => panic!("no seeds for {other}"),
    }
}

/// A 3.5 and a 4.0 stream meta, a message, and a data key of each version.
fn stream_seeds() -> Vec<Vec<u8>> {
    use pika_migrate_core::pika::storage::floyd::key::data_key_prefix as floyd_prefix;
    use pika_migrate_core::pika::storage::format::data_key_prefix;
    let mut fields = 0u32.to_le_bytes().to_vec();
    fields.extend_from_slice(&3u64.to_le_bytes());
    for n in [1u64, 0, 1_700_000_000_000, 7, 0, 0] {
        fields.extend_from_slice(&n.to_le_bytes());
    }
    fields.extend_from_slice(&2i32.to_le_bytes());
    let mut v35 = fields.clone();
    v35.extend_from_slice(&4i32.to_le_bytes());
    let mut v40 = vec![5u8];
    v40.extend_from_slice(&fields);
    v40.extend_from_slice(&4u64.to_le_bytes());
    let mut message = Vec::new();
    for part in [&b"field"[..], b"value", b"", b"\x00\xff"] {
        message.extend_from_slice(&(part.len() as u32).to_le_bytes());
        message.extend_from_slice(part);
    }
    let mut id = 1_700_000_000_000u64.to_be_bytes().to_vec();
    id.extend_from_slice(&7u64.to_be_bytes());
    let mut key35 = data_key_prefix(b"s1:stream", 4);
    key35.extend_from_slice(&id);
    let mut key40 = floyd_prefix(b"s1:\x00stream", 4);
    key40.extend_from_slice(&id);
    key40.extend_from_slice(&[0; 16]);
    vec![v35, v40, message, key35, key40]
}
