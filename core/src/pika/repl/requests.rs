//! The requests a Pika replica sends, built as a real 3.3 replica builds them.

use super::proto::{
    BinlogOffset, BinlogSyncRequest, InnerRequest, MetaSyncRequest, Node, Partition,
    SyncPointRequest, Type,
};
use crate::event;

/// Who we are to the master: the announced client address (the master pushes the dump to
/// its port + 1000).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub ip: String,
    pub port: u16,
}

fn node(a: &Announce) -> Node {
    Node {
        ip: a.ip.clone(),
        port: i32::from(a.port),
    }
}

fn partition(db: u32) -> Partition {
    Partition {
        table_name: format!("db{db}"),
        partition_id: 0,
    }
}

/// A sync point as a 3.3 replica sends it in TrySync/DBSync: file and offset only.
fn sync_point(at: event::BinlogOffset) -> BinlogOffset {
    BinlogOffset {
        filenum: at.filenum,
        offset: at.offset,
        term: None,
        index: None,
    }
}

/// A position as a 3.3 replica puts it in a BinlogSync request it makes up itself (the
/// first one, pings): term and index present and 0.
fn ack_point(at: event::BinlogOffset) -> BinlogOffset {
    BinlogOffset {
        filenum: at.filenum,
        offset: at.offset,
        term: Some(0),
        index: Some(0),
    }
}

fn request(t: Type) -> InnerRequest {
    InnerRequest {
        r#type: t as i32,
        ..InnerRequest::default()
    }
}

/// MetaSync: `auth` is the master's requirepass (omitted when empty).
pub fn meta_sync(a: &Announce, auth: Option<&str>) -> InnerRequest {
    InnerRequest {
        meta_sync: Some(MetaSyncRequest {
            node: node(a),
            auth: auth.filter(|p| !p.is_empty()).map(str::to_owned),
        }),
        ..request(Type::MetaSync)
    }
}

/// TrySync from `at` for database `db`.
pub fn try_sync(a: &Announce, db: u32, at: event::BinlogOffset) -> InnerRequest {
    InnerRequest {
        try_sync: Some(SyncPointRequest {
            node: node(a),
            partition: partition(db),
            binlog_offset: sync_point(at),
        }),
        ..request(Type::TrySync)
    }
}

/// DBSync (full sync) for database `db`; the master only reads `at.filenum`.
pub fn db_sync(a: &Announce, db: u32, at: event::BinlogOffset) -> InnerRequest {
    InnerRequest {
        db_sync: Some(SyncPointRequest {
            node: node(a),
            partition: partition(db),
            binlog_offset: sync_point(at),
        }),
        ..request(Type::DbSync)
    }
}

fn binlog_sync(
    a: &Announce,
    db: u32,
    session_id: i32,
    start: BinlogOffset,
    end: BinlogOffset,
    first_send: bool,
) -> InnerRequest {
    InnerRequest {
        binlog_sync: Some(BinlogSyncRequest {
            node: node(a),
            table_name: format!("db{db}"),
            partition_id: 0,
            ack_range_start: start,
            ack_range_end: end,
            session_id,
            first_send,
        }),
        ..request(Type::BinlogSync)
    }
}

/// The first BinlogSync after a TrySync accepted `at`: start = end = `at`.
pub fn binlog_sync_first(
    a: &Announce,
    db: u32,
    session_id: i32,
    at: event::BinlogOffset,
) -> InnerRequest {
    binlog_sync(a, db, session_id, ack_point(at), ack_point(at), true)
}

/// An ack of every item from the one whose end is `first` to the one whose end is
/// `last`, both exactly as the master sent them.
pub fn binlog_ack(
    a: &Announce,
    db: u32,
    session_id: i32,
    first: &BinlogOffset,
    last: &BinlogOffset,
) -> InnerRequest {
    binlog_sync(a, db, session_id, first.clone(), last.clone(), false)
}

/// A keepalive: an ack of nothing (`0:0` to `0:0`), which only tells the master we live.
pub fn ping(a: &Announce, db: u32, session_id: i32) -> InnerRequest {
    let zero = ack_point(event::BinlogOffset::default());
    binlog_sync(a, db, session_id, zero.clone(), zero, false)
}
