//! Reads every live key of one blackwidow database (Pika 3.2–3.5) out of its five
//! RocksDB directories and emits it as snapshot events, big values in chunks.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, DBRawIterator, Options, DB};

use super::comparator::{
    compare_lists_data_key, compare_zsets_score_key, LISTS_DATA_KEY, ZSETS_SCORE_KEY,
};
use super::emit::{emit_rows, type_slot, Arena, ChunkLimits, KeyEmitter, ScanStats};
use super::format::{data_key_prefix, parse_score, parse_string_value, CollectionMeta, ListMeta};
use super::layout::{read_dump_info, DbDir, DumpInfo};
use super::rocks::{read_only_options, scan_iter, seek_unless_there};
use super::StorageError;
use crate::display::display_key;
use crate::event::{DataType, Event, TypeSet};

/// The five opened type databases of one blackwidow database.
pub struct BlackwidowDb {
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
    let opts = read_only_options(log_dir);
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
        scan_iter(self.db(t), &self.path.join(type_dir(t)), cf)
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
                let mut out = KeyEmitter::new(
                    self.index,
                    key.clone(),
                    at,
                    seq,
                    &mut *emit,
                    &mut stats,
                    &mut arena,
                    also_types,
                );
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
            t,
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
            t,
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
    fn new(db: &'a BlackwidowDb, t: DataType) -> Result<Siblings<'a>, StorageError> {
        let mut cursors = Vec::with_capacity(4);
        for other in DataType::TYPE_ORDER.into_iter().filter(|o| *o != t) {
            let mut it = db.iter(other, "default")?;
            it.seek_to_first();
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
