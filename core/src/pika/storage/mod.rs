//! Pika's storage on disk, opened read-only and scanned into snapshot events: blackwidow
//! (Pika 3.2–3.5: five RocksDB databases per Pika database, six with 3.5's streams,
//! `comparator`, `format`, `scan`) and floyd (Pika 4.0: one RocksDB per instance,
//! `floyd`); `stream` is the stream layout both share. Which one a directory holds is
//! read from the directory itself (`layout`). `split` cuts a database into parts and
//! `parallel` scans them on several threads.

pub mod comparator;
pub mod db;
pub mod emit;
pub mod floyd;
pub mod format;
pub mod layout;
pub mod parallel;
mod rocks;
pub mod scan;
pub mod split;
pub mod stream;
pub mod writer;

use std::path::{Path, PathBuf};

pub use db::PikaDb;
pub use emit::{ChunkLimits, ScanStats, Unsupported, UnsupportedKey};
pub use layout::{find_databases, DbDir, DumpInfo, StorageFormat};

/// Errors reading a dump or db directory; each names the directory and, for bad data,
/// the key.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{path}: {reason}")]
    Layout { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot open as a Pika RocksDB directory: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("{path}: read failed: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("{path}: key {key:?}: {reason}")]
    Corrupt {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{path}:{line}: bad dump info file: {reason}")]
    Info {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// A snapshot on disk: every database found under a path, opened read-only.
pub struct Snapshot {
    pub dbs: Vec<PikaDb>,
    /// RocksDB's own log files land here, never in the dump; removed on drop.
    _log_dir: tempfile::TempDir,
}

impl Snapshot {
    pub fn open(path: &Path) -> Result<Snapshot, StorageError> {
        let log_dir = tempfile::Builder::new()
            .prefix("pika-migrate-rocksdb-log")
            .tempdir()
            .map_err(|source| StorageError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let dbs = find_databases(path)?
            .iter()
            .map(|dir| PikaDb::open(dir, log_dir.path()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot {
            dbs,
            _log_dir: log_dir,
        })
    }

    pub fn estimate_keys(&self) -> u64 {
        self.dbs.iter().map(PikaDb::estimate_keys).sum()
    }
}
