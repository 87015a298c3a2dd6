//! One Pika database on disk, whichever storage format it is in.

use std::path::{Path, PathBuf};

use super::emit::{ChunkLimits, ScanStats};
use super::floyd::FloydDb;
use super::layout::{read_dump_info, DbDir, DumpInfo, StorageFormat};
use super::scan::BlackwidowDb;
use super::split::{InOrder, NameOrder, ScanPart};
use super::StorageError;
use crate::event::Event;

enum Reader {
    Blackwidow(Box<BlackwidowDb>),
    Floyd(FloydDb),
}

/// An opened Pika database: its index, directory, dump position and reader.
pub struct PikaDb {
    pub index: u32,
    pub path: PathBuf,
    pub info: Option<DumpInfo>,
    pub format: StorageFormat,
    reader: Reader,
}

impl PikaDb {
    /// Opens a database directory read-only; RocksDB's log files go to `log_dir`.
    pub fn open(dir: &DbDir, log_dir: &Path) -> Result<PikaDb, StorageError> {
        let info = read_dump_info(&dir.path)?;
        let reader = match &dir.format {
            StorageFormat::Blackwidow => {
                Reader::Blackwidow(Box::new(BlackwidowDb::open(dir, log_dir)?))
            }
            StorageFormat::Floyd { instances } => Reader::Floyd(FloydDb::open(
                dir.index,
                &dir.path,
                instances,
                info.clone(),
                log_dir,
            )?),
        };
        Ok(PikaDb {
            index: dir.index,
            path: dir.path.clone(),
            info,
            format: dir.format.clone(),
            reader,
        })
    }

    /// RocksDB's estimate of the keys (for progress; counts stale data).
    pub fn estimate_keys(&self) -> u64 {
        match &self.reader {
            Reader::Blackwidow(db) => db.estimate_keys(),
            Reader::Floyd(db) => db.estimate_keys(),
        }
    }

    /// Emits every live key (`now` in unix seconds). `emit` returns false to stop early
    /// (the consumer went away).
    pub fn scan(
        &self,
        limits: ChunkLimits,
        now: i64,
        seq: &mut u64,
        emit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<ScanStats, StorageError> {
        let mut stats = ScanStats::default();
        // Whole, in order: each of its RocksDB databases (blackwidow's types in Pika's
        // `TYPE` order, floyd's instances) one after the other.
        for part in self.parts(1)? {
            if !self.scan_part((&part, &InOrder), limits, now, seq, emit, &mut stats)? {
                break;
            }
        }
        Ok(stats)
    }

    /// The database cut into parts threads can scan on their own (`split`), each of
    /// its RocksDB databases into at most `pieces`.
    pub fn parts(&self, pieces: usize) -> Result<Vec<ScanPart>, StorageError> {
        match &self.reader {
            Reader::Blackwidow(db) => db.parts(pieces),
            Reader::Floyd(db) => db.parts(pieces),
        }
    }

    /// Emits the live keys of one part (`now` in unix seconds), a name of several
    /// types once `order` lets it; false when `emit` asked to stop.
    pub fn scan_part(
        &self,
        part: (&ScanPart, &dyn NameOrder),
        limits: ChunkLimits,
        now: i64,
        seq: &mut u64,
        emit: &mut dyn FnMut(Event) -> bool,
        stats: &mut ScanStats,
    ) -> Result<bool, StorageError> {
        match &self.reader {
            Reader::Blackwidow(db) => db.scan_part(part, limits, now, seq, emit, stats),
            Reader::Floyd(db) => db.scan_part(part, limits, now, seq, emit, stats),
        }
    }
}
