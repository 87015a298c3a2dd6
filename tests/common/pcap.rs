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
