//! Reads every live key of one Pika database out of its five RocksDB directories and
//! emits it as snapshot events, big values in chunks.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use rocksdb::{ColumnFamilyDescriptor, DBRawIterator, Options, ReadOptions, DB};

use super::comparator::{
    compare_lists_data_key, compare_zsets_score_key, LISTS_DATA_KEY, ZSETS_SCORE_KEY,
};
use super::format::{
    data_key_prefix, parse_score, parse_string_value, CollectionMeta, Expiry, ListMeta,
};
use super::layout::{read_dump_info, DbDir, DumpInfo};
use super::StorageError;
use crate::display::display_key;
use crate::event::{BinlogOffset, Chunk, DataType, Event, Op, Part, Position, TypeSet};

/// How values are cut into events.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    /// Elements per chunk of a collection.
    pub elements: usize,
    /// Bytes per chunk (a string longer than this is sent as slices).
    pub bytes: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            elements: 512,
            bytes: 256 << 10,
        }
    }
}

/// Keys emitted and data skipped, per run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Live keys emitted, per type in [`DataType::TYPE_ORDER`] order.
    pub keys: [u64; 5],
    pub events: u64,
    /// Keys skipped because they had expired by the time of the scan.
    pub expired: u64,
    /// Lists whose data rows did not match their meta count.
    pub inconsistent_lists: u64,
}

impl ScanStats {
    pub fn keys_of(&self, t: DataType) -> u64 {
        self.keys[type_slot(t)]
    }

    pub fn total_keys(&self) -> u64 {
        self.keys.iter().sum()
    }

    pub fn add(&mut self, other: &ScanStats) {
        for (a, b) in self.keys.iter_mut().zip(other.keys) {
            *a += b;
        }
        self.events += other.events;
        self.expired += other.expired;
        self.inconsistent_lists += other.inconsistent_lists;
    }
}

fn type_slot(t: DataType) -> usize {
    DataType::TYPE_ORDER
        .iter()
        .position(|x| *x == t)
        .unwrap_or(0)
}

/// The five opened type databases of one Pika database.
pub struct PikaDb {
    pub index: u32,
    pub path: PathBuf,
    pub info: Option<DumpInfo>,
    strings: DB,
    hashes: DB,
    lists: DB,
    sets: DB,
    zsets: DB,
}

/// Name of the data column family of each collection type.
fn data_cf(t: DataType) -> &'static str {
    match t {
        DataType::Set => "member_cf",
        _ => "data_cf",
    }
}

fn type_dir(t: DataType) -> &'static str {
    match t {
        DataType::String => "strings",
        DataType::Hash => "hashes",
        DataType::List => "lists",
        DataType::Zset => "zsets",
        DataType::Set => "sets",
    }
}

fn open_type_db(db_dir: &Path, t: DataType, log_dir: &Path) -> Result<DB, StorageError> {
    let path = db_dir.join(type_dir(t));
    let mut opts = Options::default();
    // Read-only must never write into the dump: RocksDB's own log goes elsewhere.
    opts.set_db_log_dir(log_dir);
    opts.set_keep_log_file_num(1);
    let mut cfs = vec![ColumnFamilyDescriptor::new("default", Options::default())];
    match t {
        DataType::String => {}
        DataType::Hash | DataType::Set => {
            cfs.push(ColumnFamilyDescriptor::new(data_cf(t), Options::default()));
        }
        DataType::List => {
            let mut data = Options::default();
            data.set_comparator(LISTS_DATA_KEY, Box::new(compare_lists_data_key));
            cfs.push(ColumnFamilyDescriptor::new("data_cf", data));
        }
        DataType::Zset => {
            let mut score = Options::default();
            score.set_comparator(ZSETS_SCORE_KEY, Box::new(compare_zsets_score_key));
            cfs.push(ColumnFamilyDescriptor::new("data_cf", Options::default()));
            cfs.push(ColumnFamilyDescriptor::new("score_cf", score));
        }
    }
    DB::open_cf_descriptors_read_only(&opts, &path, cfs, false)
        .map_err(|source| StorageError::Open { path, source })
}

impl PikaDb {
    /// Opens a database directory read-only; RocksDB's log files go to `log_dir`.
    pub fn open(dir: &DbDir, log_dir: &Path) -> Result<PikaDb, StorageError> {
        Ok(PikaDb {
            index: dir.index,
            path: dir.path.clone(),
            info: read_dump_info(&dir.path)?,
            strings: open_type_db(&dir.path, DataType::String, log_dir)?,
            hashes: open_type_db(&dir.path, DataType::Hash, log_dir)?,
            lists: open_type_db(&dir.path, DataType::List, log_dir)?,
            sets: open_type_db(&dir.path, DataType::Set, log_dir)?,
            zsets: open_type_db(&dir.path, DataType::Zset, log_dir)?,
        })
    }

    fn db(&self, t: DataType) -> &DB {
        match t {
            DataType::String => &self.strings,
            DataType::Hash => &self.hashes,
            DataType::List => &self.lists,
            DataType::Zset => &self.zsets,
            DataType::Set => &self.sets,
        }
    }

    /// RocksDB's estimate of the keys of every type (for progress; counts stale data).
    pub fn estimate_keys(&self) -> u64 {
        DataType::TYPE_ORDER
            .iter()
            .filter_map(|t| {
                self.db(*t)
                    .property_int_value("rocksdb.estimate-num-keys")
                    .ok()
                    .flatten()
            })
            .sum()
    }

    fn read_error(&self, t: DataType, source: rocksdb::Error) -> StorageError {
        StorageError::Read {
            path: self.path.join(type_dir(t)),
            source,
        }
    }

    fn corrupt(&self, t: DataType, key: &[u8], reason: String) -> StorageError {
        StorageError::Corrupt {
            path: self.path.join(type_dir(t)),
            key: display_key(key),
            reason,
        }
    }

    fn iter(&self, t: DataType, cf: &str) -> Result<DBRawIterator<'_>, StorageError> {
        let db = self.db(t);
        let handle = db.cf_handle(cf).ok_or_else(|| StorageError::Layout {
            path: self.path.join(type_dir(t)),
            reason: format!("no column family {cf}"),
        })?;
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        // No fixed readahead: its buffer grows to hold a block whole, so a big string
        // was in memory twice more (a 128 MiB one peaked at 304 MiB instead of 177).
        // RocksDB's own readahead for sequential reads scans as fast.
        Ok(db.raw_iterator_cf_opt(handle, opts))
    }

    /// Whether a meta (or string) value of type `t` is live.
    fn is_live_value(
        &self,
        t: DataType,
        key: &[u8],
        v: &[u8],
        now: i64,
    ) -> Result<bool, StorageError> {
        let live = match t {
            DataType::String => parse_string_value(v).map(|(_, e)| !e.is_stale(now)),
            DataType::List => ListMeta::parse(v).map(|m| m.is_live(now)),
            _ => CollectionMeta::parse(v).map(|m| m.is_live(now)),
        };
        live.map_err(|reason| self.corrupt(t, key, reason))
    }

    /// Emits every live key, type by type in the order Pika's `TYPE` reports them.
    /// `emit` returns false to stop early (the consumer went away).
    pub fn scan(
        &self,
        limits: ChunkLimits,
        now: i64,
        seq: &mut u64,
        emit: &mut dyn FnMut(Event) -> bool,
    ) -> Result<ScanStats, StorageError> {
        let mut stats = ScanStats::default();
        let at = self.info.as_ref().map(|i| i.position).unwrap_or_default();
        for t in DataType::TYPE_ORDER {
            let mut meta = self.iter(t, "default")?;
            meta.seek_to_first();
            // One data iterator per type, re-seeked for each key: creating one per key
            // costs more than reading a small key.
            let mut rows = match t {
                DataType::String => None,
                _ => Some(self.iter(t, data_cf(t))?),
            };
            let mut siblings = Siblings::new(self, t)?;
            let mut arena = Arena::default();
            while meta.valid() {
                let (Some(key), Some(value)) = (meta.key(), meta.value()) else {
                    break;
                };
                let key = arena.copy(key);
                let also_types = siblings.types_of(self, &key, now)?;
                let mut out = KeyEmitter {
                    db: self.index,
                    key: key.clone(),
                    at,
                    seq,
                    emit: &mut *emit,
                    stats: &mut stats,
                    arena: &mut arena,
                    expire_at_ms: None,
                    also_types,
                    pending: None,
                    started: false,
                    stopped: false,
                };
                let emitted = match (t, rows.as_mut()) {
                    (DataType::List, Some(rows)) => {
                        self.list_key(&mut out, rows, value, limits, now)?
                    }
                    (_, Some(rows)) => {
                        self.collection_key(t, &mut out, rows, value, limits, now)?
                    }
                    (_, None) => self.string_key(&mut out, value, limits, now)?,
                };
                if out.stopped {
                    return Ok(stats);
                }
                if emitted {
                    stats.keys[type_slot(t)] += 1;
                }
                meta.next();
            }
            meta.status().map_err(|e| self.read_error(t, e))?;
        }
        Ok(stats)
    }

    fn string_key(
        &self,
        out: &mut KeyEmitter,
        value: &[u8],
        limits: ChunkLimits,
        now: i64,
    ) -> Result<bool, StorageError> {
        let t = DataType::String;
        let (len, expiry) = parse_string_value(value).map_err(|r| self.corrupt(t, &out.key, r))?;
        if !out.begin(expiry, now)? {
            return Ok(false);
        }
        // Copied slice by slice: only the slices in flight are held, never a second
        // copy of a whole big value.
        let value = &value[..len];
        let step = limits.bytes.max(1);
        let mut at = 0;
        loop {
            let end = (at + step).min(value.len());
            let slice = out.arena.copy(&value[at..end]);
            out.push(Chunk::String(slice));
            at = end;
            if at >= value.len() {
                break;
            }
        }
        out.finish();
        Ok(true)
    }

    fn collection_key(
        &self,
        t: DataType,
        out: &mut KeyEmitter,
        rows: &mut DBRawIterator<'_>,
        value: &[u8],
        limits: ChunkLimits,
        now: i64,
    ) -> Result<bool, StorageError> {
        let meta = CollectionMeta::parse(value).map_err(|r| self.corrupt(t, &out.key, r))?;
        if meta.count == 0 || !out.begin(meta.expiry, now)? {
            return Ok(false);
        }
        let prefix = data_key_prefix(&out.key, meta.version);
        seek_unless_there(rows, &prefix, false);
        let mut chunk = ChunkBuf::new(t);
        while rows.valid() && !out.stopped {
            let (Some(k), Some(v)) = (rows.key(), rows.value()) else {
                break;
            };
            if !k.starts_with(&prefix) {
                break;
            }
            let element = out.arena.copy(&k[prefix.len()..]);
            match t {
                DataType::Hash => chunk.hash.push((element, out.arena.copy(v))),
                DataType::Set => chunk.members.push(element),
                _ => {
                    let score = parse_score(v).map_err(|r| self.corrupt(t, &out.key, r))?;
                    chunk.zset.push((element, score));
                }
            }
            chunk.bytes += k.len() - prefix.len() + v.len();
            if chunk.is_full(limits) {
                out.push(chunk.take());
            }
            rows.next();
        }
        rows.status().map_err(|e| self.read_error(t, e))?;
        out.finish_with(chunk);
        Ok(true)
    }

    fn list_key(
        &self,
        out: &mut KeyEmitter,
        rows: &mut DBRawIterator<'_>,
        value: &[u8],
        limits: ChunkLimits,
        now: i64,
    ) -> Result<bool, StorageError> {
        let t = DataType::List;
        let meta = ListMeta::parse(value).map_err(|r| self.corrupt(t, &out.key, r))?;
        if meta.count == 0 || !out.begin(meta.expiry, now)? {
            return Ok(false);
        }
        let prefix = data_key_prefix(&out.key, meta.version);
        let mut start = prefix.clone();
        start.extend_from_slice(&meta.left.wrapping_add(1).to_le_bytes());
        seek_unless_there(rows, &start, true);
        let mut chunk = ChunkBuf::new(t);
        let mut seen = 0u64;
        while rows.valid() && seen < meta.count && !out.stopped {
            let (Some(k), Some(v)) = (rows.key(), rows.value()) else {
                break;
            };
            if !k.starts_with(&prefix) {
                break;
            }
            chunk.members.push(out.arena.copy(v));
            chunk.bytes += v.len();
            seen += 1;
            if chunk.is_full(limits) {
                out.push(chunk.take());
            }
            rows.next();
        }
        rows.status().map_err(|e| self.read_error(t, e))?;
        if seen != meta.count && !out.stopped {
            out.stats.inconsistent_lists += 1;
            tracing::warn!(
                db = %self.path.display(),
                key = %display_key(&out.key),
                expected = meta.count,
                found = seen,
                "list has fewer elements than its meta says; emitting those found"
            );
        }
        out.finish_with(chunk);
        Ok(true)
    }
}

/// Positions `rows` at the first row at or after `target`. The rows of consecutive keys
/// usually follow one another, so after reading one key the iterator is often already on
/// the next key's first row: then the (costly) seek is skipped. That row is the first of
/// its key because the row before it belonged to another key.
fn seek_unless_there(rows: &mut DBRawIterator<'_>, target: &[u8], exact: bool) {
    let there = rows.key().is_some_and(|k| {
        if exact {
            k == target
        } else {
            k.starts_with(target)
        }
    });
    if !there {
        rows.seek(target);
    }
}

/// Cursors over the other four types' metas, walked forward alongside the scan of one
/// type: all five are sorted by the raw user key, so learning which other types a key
/// has costs a few `next()` calls instead of four point lookups.
struct Siblings<'a> {
    cursors: Vec<(DataType, DBRawIterator<'a>)>,
}

/// Steps taken with `next()` before a lagging cursor jumps with `seek()`.
const SIBLING_STEPS: usize = 8;

impl<'a> Siblings<'a> {
    fn new(db: &'a PikaDb, t: DataType) -> Result<Siblings<'a>, StorageError> {
        let mut cursors = Vec::with_capacity(4);
        for other in DataType::TYPE_ORDER.into_iter().filter(|o| *o != t) {
            let mut it = db.iter(other, "default")?;
            it.seek_to_first();
            cursors.push((other, it));
        }
        Ok(Siblings { cursors })
    }

    /// The other types `key` is live as. Keys must come in ascending order.
    fn types_of(&mut self, db: &PikaDb, key: &[u8], now: i64) -> Result<TypeSet, StorageError> {
        let mut set = TypeSet::default();
        for (t, it) in &mut self.cursors {
            let mut steps = 0;
            while it.valid() && it.key().is_some_and(|k| k < key) {
                if steps == SIBLING_STEPS {
                    it.seek(key);
                    break;
                }
                it.next();
                steps += 1;
            }
            it.status().map_err(|e| db.read_error(*t, e))?;
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                if k == key && db.is_live_value(*t, key, v, now)? {
                    set.insert(*t);
                }
            }
        }
        Ok(set)
    }
}

/// Elements of one chunk being gathered.
/// Small byte strings (keys, elements, short values) copied into shared blocks: one allocation
/// per block rather than two per string (its buffer, then the shared header its first
/// clone adds). Big ones get their own allocation, so a block never pins much.
#[derive(Default)]
struct Arena(BytesMut);

impl Arena {
    const BLOCK: usize = 64 << 10;

    fn copy(&mut self, b: &[u8]) -> Bytes {
        if b.len() > Self::BLOCK / 16 {
            return Bytes::copy_from_slice(b);
        }
        if self.0.capacity() - self.0.len() < b.len() {
            self.0 = BytesMut::with_capacity(Self::BLOCK);
        }
        self.0.extend_from_slice(b);
        self.0.split().freeze()
    }
}

struct ChunkBuf {
    t: DataType,
    hash: Vec<(Bytes, Bytes)>,
    members: Vec<Bytes>,
    zset: Vec<(Bytes, f64)>,
    bytes: usize,
}

impl ChunkBuf {
    fn new(t: DataType) -> ChunkBuf {
        ChunkBuf {
            t,
            hash: Vec::new(),
            members: Vec::new(),
            zset: Vec::new(),
            bytes: 0,
        }
    }

    fn len(&self) -> usize {
        self.hash.len() + self.members.len() + self.zset.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn is_full(&self, limits: ChunkLimits) -> bool {
        self.len() >= limits.elements.max(1) || self.bytes >= limits.bytes
    }

    fn take(&mut self) -> Chunk {
        self.bytes = 0;
        match self.t {
            DataType::Hash => Chunk::Hash(std::mem::take(&mut self.hash)),
            DataType::Set => Chunk::Set(std::mem::take(&mut self.members)),
            DataType::List => Chunk::List(std::mem::take(&mut self.members)),
            DataType::Zset => Chunk::Zset(std::mem::take(&mut self.zset)),
            DataType::String => Chunk::String(Bytes::new()),
        }
    }
}

/// Emits the chunks of one key with the right `Part` labels. It holds one chunk back,
/// because only the next one tells whether it was the last.
struct KeyEmitter<'a> {
    db: u32,
    key: Bytes,
    at: BinlogOffset,
    seq: &'a mut u64,
    emit: &'a mut dyn FnMut(Event) -> bool,
    stats: &'a mut ScanStats,
    /// Where the key's elements are copied to.
    arena: &'a mut Arena,
    expire_at_ms: Option<i64>,
    also_types: TypeSet,
    pending: Option<Chunk>,
    started: bool,
    stopped: bool,
}

impl KeyEmitter<'_> {
    /// Decides whether the key is live; if so, learns its expiry.
    fn begin(&mut self, expiry: Expiry, now: i64) -> Result<bool, StorageError> {
        if expiry.is_stale(now) {
            self.stats.expired += 1;
            return Ok(false);
        }
        self.expire_at_ms = expiry.as_millis();
        Ok(true)
    }

    fn push(&mut self, chunk: Chunk) {
        if let Some(previous) = self.pending.replace(chunk) {
            let part = if self.started {
                Part::More
            } else {
                Part::First
            };
            self.send(previous, part);
            self.started = true;
        }
    }

    /// Ends the key with the elements still gathered (an empty key still gets its one
    /// event, so the target clears the old value).
    fn finish_with(&mut self, mut chunk: ChunkBuf) {
        if !chunk.is_empty() || !self.started {
            self.push(chunk.take());
        }
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(last) = self.pending.take() {
            let part = if self.started {
                Part::Last
            } else {
                Part::Whole
            };
            self.send(last, part);
        }
    }

    fn send(&mut self, chunk: Chunk, part: Part) {
        if self.stopped {
            return;
        }
        let data_type = chunk.data_type();
        let event = Event {
            db: self.db,
            key: self.key.clone(),
            data_type: Some(data_type),
            op: Op::Snapshot {
                chunk,
                part,
                expire_at_ms: self.expire_at_ms,
                also_types: self.also_types,
            },
            position: Position::Snapshot {
                at: self.at,
                seq: *self.seq,
            },
            exec_time: None,
        };
        *self.seq += 1;
        self.stats.events += 1;
        if !(self.emit)(event) {
            self.stopped = true;
        }
    }
}
