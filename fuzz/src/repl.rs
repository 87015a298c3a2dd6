//! The replication link's bytes: 4-byte frames arriving split over reads, the protobuf
//! messages inside (`InnerResponse` from a master, `InnerRequest` as the test master
//! reads ours), and the binlog items a master pushes.

use bytes::{Bytes, BytesMut};
use pika_migrate_core::event::BinlogOffset;
use pika_migrate_core::pika::binlog::{BinlogEntry, BinlogItem};
use pika_migrate_core::pika::repl::frame::{self, MAX_FRAME};
use pika_migrate_core::pika::repl::proto::{InnerRequest, InnerResponse, StatusCode, Type};
use prost::Message;

use crate::events;

/// Read sizes the bytes arrive in, in turn.
const READS: [usize; 8] = [1, 3, 4, 5, 64, 1500, 17, 65536];

/// Feeds `data` to the frame decoder read by read, and decodes every whole frame. The
/// frames taken and the bytes left are exactly the input.
pub fn stream(data: &[u8]) {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut taken = 0usize;
    let mut reads = READS.iter().cycle();
    loop {
        loop {
            match frame::decode(&mut buf, MAX_FRAME) {
                Ok(Some(body)) => {
                    taken += 4 + body.len();
                    response(body.clone());
                    let _ = InnerRequest::decode(body);
                }
                Ok(None) => break,
                Err(e) => {
                    assert!(e.len > e.max, "{e}");
                    return;
                }
            }
        }
        if fed == data.len() {
            break;
        }
        let n = reads.next().copied().unwrap_or(1).min(data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
    }
    assert_eq!(
        taken + buf.len(),
        data.len(),
        "frames lost or invented bytes"
    );
}

/// One frame as the link reads it: a response, then each item pushed in it.
fn response(body: Bytes) {
    let Ok(response) = InnerResponse::decode(body) else {
        return;
    };
    let _ = (
        Type::try_from(response.r#type),
        StatusCode::try_from(response.code),
    );
    for sync in &response.binlog_sync {
        if sync.binlog.is_empty() {
            continue; // a keepalive
        }
        let Ok(item) = BinlogItem::decode(&sync.binlog) else {
            continue;
        };
        let end = BinlogOffset::new(sync.binlog_offset.filenum, sync.binlog_offset.offset);
        events::binlog_item(&BinlogEntry {
            start: end,
            end,
            item,
        });
    }
}
