//! The replication protocol against the capture of a real Pika 3.3.6 replica (announced
//! as 127.0.0.1:9231) syncing from a real master (replication port 11221): our decoder
//! reads every frame, the master's binlog pushes are the fixture binlog's items, and our
//! request builders produce exactly the bytes the real replica sent.

mod common;

use bytes::{Bytes, BytesMut};
use common::pcap::{tcp_streams, Flow, Streams};
use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::pika::binlog::{BinlogItem, BinlogReader, ReadOutcome};
use pika_migrate_core::pika::repl::requests::{self, Announce};
use pika_migrate_core::pika::repl::{frame, proto};
use prost::Message;

const MASTER_REPL_PORT: u16 = 11221;
/// Phase 1 (TrySync from 0:0 on an empty replica) and phase 3 (`slaveof … force`).
const FIRST_CONN: u16 = 56358;
const FORCED_CONN: u16 = 45880;

fn capture() -> Streams {
    let streams = tcp_streams(&common::fixture("repl-capture.pcap"));
    for port in [FIRST_CONN, FORCED_CONN] {
        for flow in [to_master(port), from_master(port)] {
            assert!(
                streams.bytes.contains_key(&flow),
                "{flow:?} not in the capture"
            );
            assert!(!streams.incomplete.contains(&flow), "{flow:?} has a hole");
        }
    }
    streams
}

fn to_master(port: u16) -> Flow {
    Flow {
        src_port: port,
        dst_port: MASTER_REPL_PORT,
    }
}

fn from_master(port: u16) -> Flow {
    Flow {
        src_port: MASTER_REPL_PORT,
        dst_port: port,
    }
}

fn frames(bytes: &[u8]) -> Vec<Bytes> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = frame::decode(&mut buf, frame::MAX_FRAME).unwrap() {
        out.push(f);
    }
    assert!(
        buf.is_empty(),
        "{} bytes after the last whole frame",
        buf.len()
    );
    out
}

fn requests_of(s: &Streams, port: u16) -> Vec<(Bytes, proto::InnerRequest)> {
    frames(&s.bytes[&to_master(port)])
        .into_iter()
        .map(|f| (f.clone(), proto::InnerRequest::decode(f).unwrap()))
        .collect()
}

fn responses_of(s: &Streams, port: u16) -> Vec<proto::InnerResponse> {
    frames(&s.bytes[&from_master(port)])
        .into_iter()
        .map(|f| proto::InnerResponse::decode(f).unwrap())
        .collect()
}

fn replica() -> Announce {
    Announce {
        ip: "127.0.0.1".into(),
        port: 9231,
    }
}

/// Ours against theirs: decoded field for field first (a readable failure), then the
/// bytes.
fn assert_same_request(ours: proto::InnerRequest, theirs: &(Bytes, proto::InnerRequest)) {
    assert_eq!(ours, theirs.1);
    assert_eq!(
        ours.encode_to_vec(),
        theirs.0.to_vec(),
        "same fields, other bytes"
    );
}

fn session_of(r: &proto::InnerResponse) -> i32 {
    r.try_sync
        .as_ref()
        .and_then(|t| t.session_id)
        .or(r.db_sync.as_ref().map(|d| d.session_id))
        .unwrap()
}

#[test]
fn handshake_from_the_start_matches_the_real_replica() {
    let s = capture();
    let sent = requests_of(&s, FIRST_CONN);
    let got = responses_of(&s, FIRST_CONN);

    assert_same_request(requests::meta_sync(&replica(), None), &sent[0]);
    let meta = got[0].meta_sync.as_ref().unwrap();
    assert_eq!(got[0].code, proto::StatusCode::Ok as i32);
    assert!(meta.classic_mode);
    assert_eq!(meta.tables_info.len(), 1);
    assert_eq!(meta.tables_info[0].table_name, "db0");

    let from = BinlogOffset::new(0, 0);
    assert_same_request(requests::try_sync(&replica(), 0, from), &sent[1]);
    let try_sync = got[1].try_sync.as_ref().unwrap();
    assert_eq!(try_sync.reply_code, proto::TrySyncReplyCode::Ok as i32);
    assert_same_request(
        requests::binlog_sync_first(&replica(), 0, session_of(&got[1]), from),
        &sent[2],
    );
}

#[test]
fn forced_full_sync_handshake_matches_the_real_replica() {
    let s = capture();
    let sent = requests_of(&s, FORCED_CONN);
    let got = responses_of(&s, FORCED_CONN);

    assert_same_request(requests::meta_sync(&replica(), None), &sent[0]);
    // The real replica asked from its own position; the master only reads the filenum.
    assert_same_request(
        requests::db_sync(&replica(), 0, BinlogOffset::new(1, 547194)),
        &sent[1],
    );
    assert_eq!(got[1].r#type, proto::Type::DbSync as i32);
    assert_eq!(got[1].code, proto::StatusCode::Ok as i32);
    let session = session_of(&got[1]);
    assert_eq!(session, 1, "the second session on this master");

    // The dump's info file said 1:507340.
    let dump_at = BinlogOffset::new(1, 507340);
    assert_same_request(requests::try_sync(&replica(), 0, dump_at), &sent[2]);
    assert_eq!(session_of(&got[2]), session);
    assert_same_request(
        requests::binlog_sync_first(&replica(), 0, session, dump_at),
        &sent[3],
    );
}

/// Every item pushed on a connection, as (end offset as sent, item bytes).
fn pushed_items(responses: &[proto::InnerResponse]) -> Vec<(proto::BinlogOffset, Bytes)> {
    responses
        .iter()
        .filter(|r| r.r#type == proto::Type::BinlogSync as i32)
        .flat_map(|r| r.binlog_sync.iter())
        .filter(|e| !e.binlog.is_empty())
        .map(|e| (e.binlog_offset.clone(), e.binlog.clone()))
        .collect()
}

fn fixture_items(from: Option<BinlogOffset>) -> Vec<(BinlogOffset, BinlogItem)> {
    let mut reader = BinlogReader::open(&common::fixture("binlog"), from).unwrap();
    let mut out = Vec::new();
    while let ReadOutcome::Entry(e) = reader.read_next().unwrap() {
        out.push((e.end, e.item));
    }
    out
}

fn assert_pushes_are_the_binlog(
    pushed: &[(proto::BinlogOffset, Bytes)],
    from: Option<BinlogOffset>,
) {
    // The master also pushed the writes made during the capture, after the fixture's.
    let on_disk = fixture_items(from);
    assert!(
        pushed.len() > on_disk.len(),
        "{} pushed, {} on disk",
        pushed.len(),
        on_disk.len()
    );
    for pair in pushed.windows(2) {
        let (a, b) = (&pair[0].0, &pair[1].0);
        assert!(
            (a.filenum, a.offset) < (b.filenum, b.offset),
            "offsets grow"
        );
    }
    for (i, (_, bytes)) in pushed.iter().enumerate().skip(on_disk.len()) {
        BinlogItem::decode(bytes).unwrap_or_else(|e| panic!("item {i}: {e}"));
    }
    for (i, ((sent_at, bytes), (end, item))) in pushed.iter().zip(&on_disk).enumerate() {
        let decoded = BinlogItem::decode(bytes).unwrap_or_else(|e| panic!("item {i}: {e}"));
        assert_eq!(&decoded, item, "item {i}");
        assert_eq!(decoded.encode(), bytes.to_vec(), "item {i} re-encodes");
        assert_eq!(
            (sent_at.filenum, sent_at.offset),
            (end.filenum, end.offset),
            "item {i}: the master reports the END of the item"
        );
        assert_eq!(sent_at.term, Some(item.term));
        assert_eq!(sent_at.index, Some(item.logic_id));
    }
}

#[test]
fn master_pushes_the_binlog_items_with_their_end_offsets() {
    let s = capture();
    assert_pushes_are_the_binlog(&pushed_items(&responses_of(&s, FIRST_CONN)), None);
    assert_pushes_are_the_binlog(
        &pushed_items(&responses_of(&s, FORCED_CONN)),
        Some(BinlogOffset::new(1, 507340)),
    );
}

#[test]
fn acks_and_pings_are_built_as_the_real_replica_builds_them() {
    let s = capture();
    let sent = requests_of(&s, FIRST_CONN);
    // The streaming part: BinlogSync requests after the first one (the real replica
    // also sent one more MetaSync on this connection once it was told to leave).
    let binlog_syncs: Vec<&(Bytes, proto::InnerRequest)> = sent[3..]
        .iter()
        .filter(|(_, r)| r.r#type == proto::Type::BinlogSync as i32)
        .collect();
    let got = responses_of(&s, FIRST_CONN);
    let session = session_of(&got[1]);
    // Each response with items is acked once, from its first item to its last.
    let ranges: Vec<(proto::BinlogOffset, proto::BinlogOffset)> = got
        .iter()
        .filter(|r| r.binlog_sync.iter().any(|e| !e.binlog.is_empty()))
        .map(|r| {
            let items: Vec<_> = r
                .binlog_sync
                .iter()
                .filter(|e| !e.binlog.is_empty())
                .collect();
            (
                items[0].binlog_offset.clone(),
                items[items.len() - 1].binlog_offset.clone(),
            )
        })
        .collect();
    let acks: Vec<&(Bytes, proto::InnerRequest)> = binlog_syncs
        .iter()
        .copied()
        .filter(|(_, r)| {
            let b = r.binlog_sync.as_ref().unwrap();
            b.ack_range_end.filenum != 0 || b.ack_range_end.offset != 0
        })
        .collect();
    assert_eq!(acks.len(), ranges.len());
    for (ack, (first, last)) in acks.into_iter().zip(&ranges) {
        // Before any full sync the replica's own item counter equals the master's, so
        // echoing the master's index reproduces the real bytes.
        assert_same_request(
            requests::binlog_ack(&replica(), 0, session, first, last),
            ack,
        );
    }
    let pings: Vec<_> = binlog_syncs
        .iter()
        .filter(|(_, r)| {
            let b = r.binlog_sync.as_ref().unwrap();
            b.ack_range_end.filenum == 0 && b.ack_range_end.offset == 0
        })
        .collect();
    assert!(!pings.is_empty(), "the idle link was kept alive");
    for ping in pings {
        assert_same_request(requests::ping(&replica(), 0, session), ping);
    }
    let keepalives = got
        .iter()
        .flat_map(|r| r.binlog_sync.iter())
        .filter(|e| e.binlog.is_empty())
        .count();
    assert!(keepalives > 0, "the master sent keepalives");
}
