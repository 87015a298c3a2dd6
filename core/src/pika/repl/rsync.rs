//! The messages of Pika 3.5's `rsync_service.proto` (package `RsyncService`), the
//! protocol a 3.5 replica pulls the master's dump with on the master's port + 10001,
//! framed as the replication link is (4-byte big-endian length, then the message).
//! Written as prost derives so no protoc is needed; proto2 `required` fields are marked.

#![allow(missing_docs)]

use prost::{Enumeration, Message};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum RsyncType {
    /// The dump's file list.
    Meta = 1,
    /// A chunk of one file.
    File = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Enumeration)]
#[repr(i32)]
pub enum RsyncCode {
    Ok = 1,
    /// 3.5.3+: also while the master's bgsave runs (3.5.0–3.5.2 then do not answer).
    Err = 2,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetaResponse {
    #[prost(string, repeated, tag = "1")]
    pub filenames: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct FileRequest {
    #[prost(string, required, tag = "1")]
    pub filename: String,
    #[prost(uint64, required, tag = "2")]
    pub count: u64,
    #[prost(uint64, required, tag = "3")]
    pub offset: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct FileResponse {
    #[prost(int32, required, tag = "1")]
    pub eof: i32,
    #[prost(uint64, required, tag = "2")]
    pub count: u64,
    #[prost(uint64, required, tag = "3")]
    pub offset: u64,
    #[prost(bytes = "bytes", required, tag = "4")]
    pub data: bytes::Bytes,
    /// Always empty: Pika computes no checksum.
    #[prost(string, required, tag = "5")]
    pub checksum: String,
    #[prost(string, required, tag = "6")]
    pub filename: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct RsyncRequest {
    #[prost(enumeration = "RsyncType", required, tag = "1")]
    pub r#type: i32,
    /// Which of the connection's readers (0–3 on the master) serves the request.
    #[prost(int32, required, tag = "2")]
    pub reader_index: i32,
    #[prost(string, required, tag = "3")]
    pub db_name: String,
    #[prost(uint32, required, tag = "4")]
    pub slot_id: u32,
    #[prost(message, optional, tag = "5")]
    pub file_req: Option<FileRequest>,
}

#[derive(Clone, PartialEq, Message)]
pub struct RsyncResponse {
    #[prost(enumeration = "RsyncType", required, tag = "1")]
    pub r#type: i32,
    #[prost(int32, required, tag = "2")]
    pub reader_index: i32,
    /// The lowercase hex MD5 of the dump's `info` file: which dump this is.
    #[prost(string, required, tag = "3")]
    pub snapshot_uuid: String,
    #[prost(string, required, tag = "4")]
    pub db_name: String,
    #[prost(uint32, required, tag = "5")]
    pub slot_id: u32,
    #[prost(enumeration = "RsyncCode", required, tag = "6")]
    pub code: i32,
    #[prost(message, optional, tag = "7")]
    pub meta_resp: Option<MetaResponse>,
    #[prost(message, optional, tag = "8")]
    pub file_resp: Option<FileResponse>,
}

/// The file list request for database `db`.
pub fn meta_request(db: u32) -> RsyncRequest {
    RsyncRequest {
        r#type: RsyncType::Meta as i32,
        reader_index: 0,
        db_name: format!("db{db}"),
        slot_id: 0,
        file_req: None,
    }
}

/// `count` bytes of `filename` from `offset`, for the master's reader `reader`.
pub fn file_request(db: u32, reader: i32, filename: &str, offset: u64, count: u64) -> RsyncRequest {
    RsyncRequest {
        r#type: RsyncType::File as i32,
        reader_index: reader,
        db_name: format!("db{db}"),
        slot_id: 0,
        file_req: Some(FileRequest {
            filename: filename.to_owned(),
            count,
            offset,
        }),
    }
}
