//! Just enough of a pcap reader to pull the TCP byte streams out of the fixture capture:
//! classic pcap (microsecond, little-endian), Ethernet, IPv4, TCP. Retransmitted
//! segments are dropped by sequence number.

use std::collections::BTreeMap;
use std::path::Path;

/// One direction of one TCP connection, by ports (the capture is all on 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flow {
    pub src_port: u16,
    pub dst_port: u16,
}

/// Every flow's payload in order, and the order in which flows first carried data.
/// Flows with a hole (a segment the capture missed or holds out of order) are listed in
/// `incomplete`; none of the replication flows has one.
pub struct Streams {
    pub bytes: BTreeMap<Flow, Vec<u8>>,
    pub first_seen: Vec<Flow>,
    pub incomplete: Vec<Flow>,
}

fn u16_be(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn u32_be(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

pub fn tcp_streams(path: &Path) -> Streams {
    let data = std::fs::read(path).unwrap();
    assert_eq!(
        u32_le(&data[0..4]),
        0xa1b2_c3d4,
        "little-endian microsecond pcap"
    );
    assert_eq!(u32_le(&data[20..24]), 1, "Ethernet link type");
    let mut next_seq: BTreeMap<Flow, u32> = BTreeMap::new();
    let mut streams = Streams {
        bytes: BTreeMap::new(),
        first_seen: Vec::new(),
        incomplete: Vec::new(),
    };
    let mut at = 24;
    while at + 16 <= data.len() {
        let captured = u32_le(&data[at + 8..]) as usize;
        let frame = &data[at + 16..at + 16 + captured];
        at += 16 + captured;
        if frame.len() < 14 || u16_be(&frame[12..]) != 0x0800 {
            continue;
        }
        let ip = &frame[14..];
        if ip[9] != 6 {
            continue;
        }
        let ip_header = usize::from(ip[0] & 0x0f) * 4;
        let ip_total = usize::from(u16_be(&ip[2..]));
        let tcp = &ip[ip_header..ip_total];
        let flow = Flow {
            src_port: u16_be(tcp),
            dst_port: u16_be(&tcp[2..]),
        };
        let seq = u32_be(&tcp[4..]);
        let payload = &tcp[usize::from(tcp[12] >> 4) * 4..];
        if payload.is_empty() {
            continue;
        }
        let expected = next_seq.entry(flow).or_insert(seq);
        if seq != *expected {
            if seq.wrapping_sub(*expected) < u32::MAX / 2 && !streams.incomplete.contains(&flow) {
                streams.incomplete.push(flow);
            }
            // Otherwise a retransmission of bytes already taken.
            continue;
        }
        *expected = seq.wrapping_add(payload.len() as u32);
        if !streams.bytes.contains_key(&flow) {
            streams.first_seen.push(flow);
        }
        streams
            .bytes
            .entry(flow)
            .or_default()
            .extend_from_slice(payload);
    }
    streams
}

/// The replication frames (4-byte length ‖ protobuf) of one direction's bytes.
pub fn frames(bytes: &[u8]) -> Vec<bytes::Bytes> {
    use pika_migrate_core::pika::repl::frame;
    let mut buf = bytes::BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = frame::decode(&mut buf, frame::MAX_FRAME).unwrap() {
        out.push(f);
    }
    assert!(buf.is_empty(), "{} bytes after the last frame", buf.len());
    out
}

/// Asserts that each rsync2 request a real replica sent (`to_master`, one connection's
/// bytes) is byte for byte the one we build for it; returns how many were Meta and
/// how many File requests.
pub fn assert_rsync2_requests_are_ours(to_master: &[u8]) -> (usize, usize) {
    use pika_migrate_core::pika::repl::rsync::{
        file_request, meta_request, RsyncRequest, RsyncType,
    };
    use prost::Message;
    let (mut metas, mut files) = (0, 0);
    for raw in frames(to_master) {
        let theirs = RsyncRequest::decode(raw.clone()).unwrap();
        let ours = if theirs.r#type == RsyncType::Meta as i32 {
            metas += 1;
            meta_request(0)
        } else {
            files += 1;
            let f = theirs.file_req.as_ref().unwrap();
            file_request(0, theirs.reader_index, &f.filename, f.offset, 4 << 20)
        };
        assert_eq!(ours.encode_to_vec(), raw.to_vec(), "{theirs:?}");
    }
    (metas, files)
}
