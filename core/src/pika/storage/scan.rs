//! Reads every live key of one blackwidow database (Pika 3.2–3.5) out of its five
//! RocksDB directories (six with 3.5's `streams/`) and emits it as snapshot events, big
//! values in chunks.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, DBRawIterator, Options, DB};

use super::comparator::{
    compare_lists_data_key, compare_zsets_score_key, LISTS_DATA_KEY, ZSETS_SCORE_KEY,
};
use super::emit::{
    emit_rows, emit_stream, type_slot, Arena, ChunkBuf, ChunkLimits, KeyEmitter, ScanStats,
};
use super::format::{data_key_prefix, parse_score, parse_string_value, CollectionMeta, ListMeta};
use super::layout::{read_dump_info, DbDir, DumpInfo};
use super::rocks::{read_only_options, scan_iter, seek_unless_there};
use super::split::{parts_of, KeyRange, NameOrder, ScanPart};
use super::stream::{parse_entry_id, StreamMeta};
use super::StorageError;
use crate::display::display_key;
use crate::event::{DataType, Event, TypeSet};

/// The opened type databases of one blackwidow database.
pub struct BlackwidowDb {
    pub index: u32,
    pub path: PathBuf,
    pub info: Option<DumpInfo>,
    strings: DB,
    hashes: DB,
    lists: DB,
    sets: DB,
    zsets: DB,
    /// Pika 3.5's `streams/`; before 3.5 there is none.
    streams: Option<DB>,
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
        DataType::Stream => "streams",
    }
}

fn open_type_db(db_dir: &Path, t: DataType, log_dir: &Path) -> Result<DB, StorageError> {
    let path = db_dir.join(type_dir(t));
    let opts = read_only_options(log_dir);
    let mut cfs = vec![ColumnFamilyDescriptor::new("default", Options::default())];
    match t {
        DataType::String => {}
        DataType::Hash | DataType::Set | DataType::Stream => {
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

impl BlackwidowDb {
    /// Opens a database directory read-only; RocksDB's log files go to `log_dir`.
    pub fn open(dir: &DbDir, log_dir: &Path) -> Result<BlackwidowDb, StorageError> {
        Ok(BlackwidowDb {
            index: dir.index,
            path: dir.path.clone(),
            info: read_dump_info(&dir.path)?,
            strings: open_type_db(&dir.path, DataType::String, log_dir)?,
            hashes: open_type_db(&dir.path, DataType::Hash, log_dir)?,
            lists: open_type_db(&dir.path, DataType::List, log_dir)?,
            sets: open_type_db(&dir.path, DataType::Set, log_dir)?,
            zsets: open_type_db(&dir.path, DataType::Zset, log_dir)?,
            streams: if dir.path.join(type_dir(DataType::Stream)).is_dir() {
                Some(open_type_db(&dir.path, DataType::Stream, log_dir)?)
            } else {
                None
            },
        })
    }

    /// The types this database has a directory for.
    fn types(&self) -> impl Iterator<Item = DataType> + '_ {
        DataType::TYPE_ORDER
            .into_iter()
            .filter(|t| self.db(*t).is_some())
    }

    fn db(&self, t: DataType) -> Option<&DB> {
        match t {
            DataType::String => Some(&self.strings),
            DataType::Hash => Some(&self.hashes),
            DataType::List => Some(&self.lists),
            DataType::Zset => Some(&self.zsets),
            DataType::Set => Some(&self.sets),
            DataType::Stream => self.streams.as_ref(),
        }
    }

    /// RocksDB's estimate of the keys of every type (for progress; counts stale data).
    pub fn estimate_keys(&self) -> u64 {
        self.types()
            .filter_map(|t| {
                self.db(t)?
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
        let path = self.path.join(type_dir(t));
        match self.db(t) {
            Some(db) => scan_iter(db, &path, cf),
            None => Err(StorageError::Layout {
                path,
                reason: "no such database".into(),
            }),
        }
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
            DataType::Stream => StreamMeta::parse_v35(v).map(|m| m.length > 0),
            _ => CollectionMeta::parse(v).map(|m| m.is_live(now)),
        };
        live.map_err(|reason| self.corrupt(t, key, reason))
    }

    /// The parts threads can scan on their own, type by type in the order Pika's `TYPE`
    /// reports them: each type database cut into at most `pieces` key ranges
    /// (`ScanPart::unit` and `round` are the type's place in `TYPE_ORDER`).
    pub fn parts(&self, pieces: usize) -> Result<Vec<ScanPart>, StorageError> {
        let mut parts = Vec::new();
        for t in self.types().collect::<Vec<_>>() {
            if let Some(db) = self.db(t) {
                let path = self.path.join(type_dir(t));
                let slot = type_slot(t);
                parts.extend(parts_of(db, &path, (slot, slot), pieces)?);
            }
        }
        Ok(parts)
    }

    /// Emits the live keys of one part, a name of several types once `order` lets it;
    /// false when `emit` asked to stop.
    pub fn scan_part(
        &self,
        (part, order): (&ScanPart, &dyn NameOrder),
        limits: ChunkLimits,
        now: i64,
        seq: &mut u64,
        emit: &mut dyn FnMut(Event) -> bool,
        stats: &mut ScanStats,
    ) -> Result<bool, StorageError> {
        let t = DataType::TYPE_ORDER
            .get(part.unit)
            .copied()
            .ok_or_else(|| StorageError::Layout {
                path: self.path.clone(),
                reason: format!("no type database number {}", part.unit),
            })?;
        self.scan_range((t, &part.range, order), limits, now, seq, emit, stats)
    }

    /// Emits the live keys of type `t` whose names fall in `range`, a name of several
    /// types once `order` lets it; false when `emit` asked to stop.
    fn scan_range(
        &self,
        (t, range, order): (DataType, &KeyRange, &dyn NameOrder),
        limits: ChunkLimits,
        now: i64,
        seq: &mut u64,
        emit: &mut dyn FnMut(Event) -> bool,
        stats: &mut ScanStats,
    ) -> Result<bool, StorageError> {
        let at = self.info.as_ref().map(|i| i.position).unwrap_or_default();
        let mut meta = self.iter(t, "default")?;
        match &range.from {
            Some(from) => meta.seek(from),
            None => meta.seek_to_first(),
        }
        // One data iterator per type, re-seeked for each key: creating one per key
        // costs more than reading a small key.
        let mut rows = match t {
            DataType::String => None,
            _ => Some(self.iter(t, data_cf(t))?),
        };
        let mut siblings = Siblings::new(self, t, range.from.as_deref())?;
        let mut arena = Arena::default();
        while let Some((key, value)) = meta.item() {
            if range.is_past(key) {
                break;
            }
            let key = arena.copy(key);
            let also_types = siblings.types_of(self, &key, now)?;
            let earlier = also_types.before(t);
            if !earlier.is_empty() {
                order.wait_for_earlier(&key, earlier);
            }
            let mut out = KeyEmitter::new(
                self.index,
                key.clone(),
                at,
                seq,
                &mut *emit,
                stats,
                &mut arena,
                also_types,
            );
            let emitted = match (t, rows.as_mut()) {
                (DataType::List, Some(rows)) => {
                    self.list_key(&mut out, rows, value, limits, now)?
                }
                (DataType::Stream, Some(rows)) => self.stream_key(&mut out, rows, value, limits)?,
                (_, Some(rows)) => self.collection_key(t, &mut out, rows, value, limits, now)?,
                (_, None) => self.string_key(&mut out, value, limits, now)?,
            };
            if out.stopped {
                return Ok(false);
            }
            if emitted {
                stats.keys[type_slot(t)] += 1;
            }
            meta.next();
        }
        meta.status().map_err(|e| self.read_error(t, e))?;
        Ok(true)
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
        if !out.begin(expiry.as_millis(), expiry.is_stale(now)) {
            return Ok(false);
        }
        out.string_in_slices(&value[..len], limits);
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
        if meta.count == 0 || !out.begin(meta.expiry.as_millis(), meta.expiry.is_stale(now)) {
            return Ok(false);
        }
        let prefix = data_key_prefix(&out.key, meta.version);
        seek_unless_there(rows, &prefix, false);
        let key = out.key.clone();
        emit_rows(
            out,
            rows,
            ChunkBuf::new(t),
            &prefix,
            u64::MAX,
            limits,
            |e| self.read_error(t, e),
            |k, v, chunk, arena| {
                let element = arena.copy(&k[prefix.len()..]);
                match t {
                    DataType::Hash => chunk.hash.push((element, arena.copy(v))),
                    DataType::Set => chunk.members.push(element),
                    _ => {
                        let score = parse_score(v).map_err(|r| self.corrupt(t, &key, r))?;
                        chunk.zset.push((element, score));
                    }
                }
                chunk.bytes += k.len() - prefix.len() + v.len();
                Ok(())
            },
        )?;
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
        if meta.count == 0 || !out.begin(meta.expiry.as_millis(), meta.expiry.is_stale(now)) {
            return Ok(false);
        }
        let prefix = data_key_prefix(&out.key, meta.version);
        let mut start = prefix.clone();
        start.extend_from_slice(&meta.left.wrapping_add(1).to_le_bytes());
        seek_unless_there(rows, &start, true);
        let seen = emit_rows(
            out,
            rows,
            ChunkBuf::new(t),
            &prefix,
            meta.count,
            limits,
            |e| self.read_error(t, e),
            |_, v, chunk, arena| {
                chunk.members.push(arena.copy(v));
                chunk.bytes += v.len();
                Ok(())
            },
        )?;
        if seen != meta.count && !out.stopped {
            let key = out.key.clone();
            out.stats.short_list(&self.path, &key, meta.count, seen);
        }
        Ok(true)
    }

    /// A 3.5 stream: its entries in id order (the current version's rows only), each
    /// chunk carrying the stream's last generated id.
    fn stream_key(
        &self,
        out: &mut KeyEmitter,
        rows: &mut DBRawIterator<'_>,
        value: &[u8],
        limits: ChunkLimits,
    ) -> Result<bool, StorageError> {
        let t = DataType::Stream;
        let meta = StreamMeta::parse_v35(value).map_err(|r| self.corrupt(t, &out.key, r))?;
        // Streams never expire; an emptied one does not exist for Pika.
        if meta.length == 0 || !out.begin(None, false) {
            return Ok(false);
        }
        // The 3.5 version is an i32, written as its 4 bytes.
        let prefix = data_key_prefix(&out.key, meta.version as u32);
        let key = out.key.clone();
        emit_stream(
            out,
            rows,
            &prefix,
            meta.last_id,
            limits,
            |e| self.read_error(t, e),
            |k| parse_entry_id(&k[prefix.len()..]),
            |r| self.corrupt(t, &key, r),
        )?;
        Ok(true)
    }
}

/// Cursors over the other types' metas, walked forward alongside the scan of one
/// type: all five are sorted by the raw user key, so learning which other types a key
/// has costs a few `next()` calls instead of a point lookup per type.
struct Siblings<'a> {
    cursors: Vec<(DataType, DBRawIterator<'a>)>,
}

/// Steps taken with `next()` before a lagging cursor jumps with `seek()`.
const SIBLING_STEPS: usize = 8;

impl<'a> Siblings<'a> {
    /// Cursors over the other types' metas, at `from` (the first key when `None`).
    fn new(
        db: &'a BlackwidowDb,
        t: DataType,
        from: Option<&[u8]>,
    ) -> Result<Siblings<'a>, StorageError> {
        let mut cursors = Vec::with_capacity(5);
        for other in db.types().filter(|o| *o != t) {
            let mut it = db.iter(other, "default")?;
            match from {
                Some(from) => it.seek(from),
                None => it.seek_to_first(),
            }
            cursors.push((other, it));
        }
        Ok(Siblings { cursors })
    }

    /// The other types `key` is live as. Keys must come in ascending order.
    fn types_of(
        &mut self,
        db: &BlackwidowDb,
        key: &[u8],
        now: i64,
    ) -> Result<TypeSet, StorageError> {
        let mut set = TypeSet::default();
        // Four cursors for every key of a scan: each RocksDB call here counts (`key()`
        // and `value()` each ask `valid()` again through the C API).
        for (t, it) in &mut self.cursors {
            let mut steps = 0;
            loop {
                match it.key() {
                    Some(k) if k < key && steps < SIBLING_STEPS => {
                        it.next();
                        steps += 1;
                    }
                    Some(k) if k < key => {
                        it.seek(key);
                        break;
                    }
                    _ => break,
                }
            }
            match it.key() {
                Some(k) if k == key => {
                    if let Some(v) = it.value() {
                        if db.is_live_value(*t, key, v, now)? {
                            set.insert(*t);
                        }
                    }
                }
                Some(_) => {}
                None => it.status().map_err(|e| db.read_error(*t, e))?,
            }
        }
        Ok(set)
    }
}
