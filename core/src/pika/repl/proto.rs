//! The messages of Pika's `pika_inner_message.proto` (3.3 field numbers; 3.2 lacks the
//! `term`/`index` and consensus fields, which are optional here), written as prost
//! derives so no protoc is needed. proto2 `required` fields are marked as such.
//!
//! 3.5 renamed partition/table to slot/db without changing a field number, and added
//! to the MetaSync reply `run_id` (3.5.0, required there), `replication_id` (3.5.1) and,
//! in 4.0, `DBInfo.db_instance_num`: all three are optional here, so one schema reads
//! every generation's reply, and their presence tells the generations apart.

#![allow(missing_docs)]

use prost::{Enumeration, Message};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum Type {
    MetaSync = 1,
    TrySync = 2,
    DbSync = 3,
    BinlogSync = 4,
    HeatBeat = 5,
    RemoveSlaveNode = 6,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum StatusCode {
    Ok = 1,
    Error = 2,
    Other = 3,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum TrySyncReplyCode {
    Ok = 1,
    SyncPointBePurged = 2,
    SyncPointLarger = 3,
    Error = 4,
}

#[derive(Clone, PartialEq, Message)]
pub struct BinlogOffset {
    #[prost(uint32, required, tag = "1")]
    pub filenum: u32,
    #[prost(uint64, required, tag = "2")]
    pub offset: u64,
    #[prost(uint32, optional, tag = "3")]
    pub term: Option<u32>,
    #[prost(uint64, optional, tag = "4")]
    pub index: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Node {
    #[prost(string, required, tag = "1")]
    pub ip: String,
    #[prost(int32, required, tag = "2")]
    pub port: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct Partition {
    #[prost(string, required, tag = "1")]
    pub table_name: String,
    #[prost(uint32, required, tag = "2")]
    pub partition_id: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ConsensusMeta {
    #[prost(uint32, optional, tag = "1")]
    pub term: Option<u32>,
    #[prost(message, optional, tag = "2")]
    pub log_offset: Option<BinlogOffset>,
    #[prost(message, optional, tag = "3")]
    pub commit: Option<BinlogOffset>,
    #[prost(bool, optional, tag = "4")]
    pub reject: Option<bool>,
    #[prost(message, repeated, tag = "5")]
    pub hint: Vec<BinlogOffset>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetaSyncRequest {
    #[prost(message, required, tag = "1")]
    pub node: Node,
    #[prost(string, optional, tag = "2")]
    pub auth: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct SyncPointRequest {
    #[prost(message, required, tag = "1")]
    pub node: Node,
    #[prost(message, required, tag = "2")]
    pub partition: Partition,
    #[prost(message, required, tag = "3")]
    pub binlog_offset: BinlogOffset,
}

#[derive(Clone, PartialEq, Message)]
pub struct BinlogSyncRequest {
    #[prost(message, required, tag = "1")]
    pub node: Node,
    #[prost(string, required, tag = "2")]
    pub table_name: String,
    #[prost(uint32, required, tag = "3")]
    pub partition_id: u32,
    #[prost(message, required, tag = "4")]
    pub ack_range_start: BinlogOffset,
    #[prost(message, required, tag = "5")]
    pub ack_range_end: BinlogOffset,
    #[prost(int32, required, tag = "6")]
    pub session_id: i32,
    #[prost(bool, required, tag = "7")]
    pub first_send: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct RemoveSlaveNode {
    #[prost(message, required, tag = "1")]
    pub node: Node,
    #[prost(message, required, tag = "2")]
    pub partition: Partition,
}

/// Replica → master. `try_sync` and `db_sync` share one shape.
#[derive(Clone, PartialEq, Message)]
pub struct InnerRequest {
    #[prost(enumeration = "Type", required, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub meta_sync: Option<MetaSyncRequest>,
    #[prost(message, optional, tag = "3")]
    pub try_sync: Option<SyncPointRequest>,
    #[prost(message, optional, tag = "4")]
    pub db_sync: Option<SyncPointRequest>,
    #[prost(message, optional, tag = "5")]
    pub binlog_sync: Option<BinlogSyncRequest>,
    #[prost(message, repeated, tag = "6")]
    pub remove_slave_node: Vec<RemoveSlaveNode>,
    #[prost(message, optional, tag = "7")]
    pub consensus_meta: Option<ConsensusMeta>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TableInfo {
    #[prost(string, required, tag = "1")]
    pub table_name: String,
    #[prost(int32, required, tag = "2")]
    pub partition_num: i32,
    /// 4.0 only (its storage instances per DB).
    #[prost(int32, optional, tag = "3")]
    pub db_instance_num: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetaSyncResponse {
    #[prost(bool, required, tag = "1")]
    pub classic_mode: bool,
    #[prost(message, repeated, tag = "2")]
    pub tables_info: Vec<TableInfo>,
    /// 3.5 and later: the master's run id (40 hex characters).
    #[prost(string, optional, tag = "3")]
    pub run_id: Option<String>,
    /// 3.5.1 and later: the replication id (50 hex characters).
    #[prost(string, optional, tag = "4")]
    pub replication_id: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DbSyncResponse {
    #[prost(message, required, tag = "1")]
    pub partition: Partition,
    #[prost(int32, required, tag = "2")]
    pub session_id: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct TrySyncResponse {
    #[prost(enumeration = "TrySyncReplyCode", required, tag = "1")]
    pub reply_code: i32,
    #[prost(message, required, tag = "2")]
    pub partition: Partition,
    #[prost(message, optional, tag = "3")]
    pub binlog_offset: Option<BinlogOffset>,
    #[prost(int32, optional, tag = "4")]
    pub session_id: Option<i32>,
}

/// One binlog item pushed by the master; an empty `binlog` is a keepalive.
#[derive(Clone, PartialEq, Message)]
pub struct BinlogSyncResponse {
    #[prost(message, required, tag = "1")]
    pub partition: Partition,
    #[prost(message, required, tag = "2")]
    pub binlog_offset: BinlogOffset,
    #[prost(bytes = "bytes", required, tag = "3")]
    pub binlog: bytes::Bytes,
    #[prost(int32, required, tag = "4")]
    pub session_id: i32,
}

/// Master → replica.
#[derive(Clone, PartialEq, Message)]
pub struct InnerResponse {
    #[prost(enumeration = "Type", required, tag = "1")]
    pub r#type: i32,
    #[prost(enumeration = "StatusCode", required, tag = "2")]
    pub code: i32,
    #[prost(string, optional, tag = "3")]
    pub reply: Option<String>,
    #[prost(message, optional, tag = "4")]
    pub meta_sync: Option<MetaSyncResponse>,
    #[prost(message, optional, tag = "5")]
    pub db_sync: Option<DbSyncResponse>,
    #[prost(message, optional, tag = "6")]
    pub try_sync: Option<TrySyncResponse>,
    #[prost(message, repeated, tag = "7")]
    pub binlog_sync: Vec<BinlogSyncResponse>,
    #[prost(message, repeated, tag = "8")]
    pub remove_slave_node: Vec<RemoveSlaveNode>,
    #[prost(message, optional, tag = "9")]
    pub consensus_meta: Option<ConsensusMeta>,
}
