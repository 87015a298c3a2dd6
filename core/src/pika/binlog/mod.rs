//! Pika 3.x binlog: the `write2file<N>` files and their `manifest`.
//!
//! Layers, bottom up: [`records`] walks the 64 KiB blocks of one file and reassembles
//! items from their physical records; [`item`] decodes an item (34-byte header plus a
//! RESP command); [`manifest`] reads the writer's position; [`reader`] strings files
//! together from a position and can follow the active file as it grows.
//! The same item decoder serves items that arrive over the replication protocol.

pub mod item;
pub mod manifest;
pub mod reader;
pub mod records;

use std::path::PathBuf;

pub use item::{BinlogItem, ItemError};
pub use manifest::Manifest;
pub use reader::{BinlogEntry, BinlogReader, ReadOutcome};

/// Size of a binlog block; a physical record never crosses a block boundary.
pub const BLOCK_SIZE: u64 = 65536;
/// Size of a physical record header: length (3 bytes LE), time (u32 LE), type (u8).
pub const RECORD_HEADER_LEN: u64 = 8;

/// Name of binlog file number `n` inside a binlog directory.
pub fn file_name(n: u32) -> String {
    format!("write2file{n}")
}

/// Errors reading binlog files; each names the file and, where it applies, the offset.
#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a Pika binlog directory: {reason}")]
    NotABinlogDir { path: PathBuf, reason: String },
    #[error("{path}: bad manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("{path} at offset {offset}: corrupt binlog: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path} at offset {offset}: truncated binlog: {reason}")]
    Truncated {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path}: offset {offset} is not the start of a binlog item")]
    NotItemBoundary { path: PathBuf, offset: u64 },
    #[error("{path} does not exist: {reason}")]
    MissingFile { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    BadStart { path: PathBuf, reason: String },
}
