//! Reads every live key of one Pika 4.0 database: its instance directories (`db0/0/`,
//! `db0/1/`, …), each one RocksDB with seven column families, all types' metas together
//! in `default`. Keys come instance by instance in meta-key order.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, DBRawIterator, Options, DB};

use super::comparator::{
    compare_lists_data_key, compare_zsets_score_key, LISTS_DATA_KEY, ZSETS_SCORE_KEY,
};
use super::format::{data_value, meta_type, zset_score, CollectionMeta, ListMeta, StringValue};
use super::key::{data_key_element, data_key_prefix, parse_meta_key};
use crate::display::display_key;
use crate::event::{DataType, Event, TypeSet};
use crate::pika::storage::emit::{
    emit_rows, emit_stream, type_slot, Arena, ChunkBuf, ChunkLimits, KeyEmitter, ScanStats,
    Unsupported, UnsupportedKey,
};
use crate::pika::storage::layout::DumpInfo;
use crate::pika::storage::rocks::{read_only_options, scan_iter, seek_unless_there};
use crate::pika::storage::split::{parts_of, KeyRange, NameOrder, ScanPart};
use crate::pika::storage::stream::{parse_entry_id, StreamMeta};
use crate::pika::storage::StorageError;

/// The column families of a floyd instance, in Pika's `ColumnFamilyIndex` order.
pub const COLUMN_FAMILIES: [&str; 7] = [
    "default",
    "hash_data_cf",
    "set_data_cf",
    "list_data_cf",
    "zset_data_cf",
    "zset_score_cf",
    "stream_data_cf",
];

/// Where a collection type's rows are, in the order its elements are read.
fn data_cf(t: DataType) -> Option<&'static str> {
    match t {
        DataType::String => None,
        DataType::Hash => Some("hash_data_cf"),
        DataType::Set => Some("set_data_cf"),
        DataType::List => Some("list_data_cf"),
        // Member order, as blackwidow's zsets are read; scores come with each member.
        DataType::Zset => Some("zset_data_cf"),
        DataType::Stream => Some("stream_data_cf"),
    }
}

/// One instance directory, opened read-only.
struct Instance {
    path: PathBuf,
    db: DB,
}

/// The instances of one Pika 4.0 database.
pub struct FloydDb {
    index: u32,
    info: Option<DumpInfo>,
    instances: Vec<Instance>,
}

fn open_instance(path: &Path, log_dir: &Path) -> Result<DB, StorageError> {
    let opts = read_only_options(log_dir);
    let cfs = COLUMN_FAMILIES.into_iter().map(|name| {
        let mut cf = Options::default();
        match name {
            "list_data_cf" => cf.set_comparator(LISTS_DATA_KEY, Box::new(compare_lists_data_key)),
            "zset_score_cf" => {
                cf.set_comparator(ZSETS_SCORE_KEY, Box::new(compare_zsets_score_key))
            }
            _ => {}
        }
        ColumnFamilyDescriptor::new(name, cf)
    });
    DB::open_cf_descriptors_read_only(&opts, path, cfs, false).map_err(|source| {
        StorageError::Open {
            path: path.to_owned(),
            source,
        }
    })
}

/// What a meta value says about its key before any data row is read.
struct MetaState {
    expire_at_ms: Option<i64>,
    /// A collection with no element (Pika keeps the meta of an emptied key).
    empty: bool,
}

fn meta_state(t: DataType, v: &[u8]) -> Result<MetaState, String> {
    Ok(match t {
        DataType::String => MetaState {
            expire_at_ms: StringValue::parse(v)?.expire_at_ms,
            empty: false,
        },
        DataType::List => {
            let m = ListMeta::parse(v)?;
            MetaState {
                expire_at_ms: m.expire_at_ms,
                empty: m.count == 0,
            }
        }
        // No expiry; an emptied stream does not exist for Pika.
        DataType::Stream => MetaState {
            expire_at_ms: None,
            empty: StreamMeta::parse_v40(v)?.length == 0,
        },
        _ => {
            let m = CollectionMeta::parse(v)?;
            MetaState {
                expire_at_ms: m.expire_at_ms,
                empty: m.count == 0,
            }
        }
    })
}

impl FloydDb {
    /// Opens the instance directories (`0/`, `1/`, … in that order) of the database at
    /// `path`; RocksDB's log files go to `log_dir`.
    pub fn open(
        index: u32,
        path: &Path,
        instances: &[PathBuf],
        info: Option<DumpInfo>,
        log_dir: &Path,
    ) -> Result<FloydDb, StorageError> {
        let instances = instances
            .iter()
            .map(|p| {
                Ok(Instance {
                    path: p.clone(),
                    db: open_instance(p, log_dir)?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        tracing::debug!(db = %path.display(), instances = instances.len(), "opened a Pika 4.0 (floyd) database");
        Ok(FloydDb {
            index,
            info,
            instances,
        })
    }

    /// How many instance directories the database has (Pika's `db-instance-num`).
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// RocksDB's estimate of the metas (for progress; counts stale data).
    pub fn estimate_keys(&self) -> u64 {
        self.instances
            .iter()
            .filter_map(|i| {
                i.db.property_int_value("rocksdb.estimate-num-keys")
                    .ok()
                    .flatten()
            })
            .sum()
    }

    /// The parts threads can scan on their own: each instance cut into at most `pieces`
    /// ranges of meta keys (`ScanPart::unit` is the instance's number), all in one
    /// round (a floyd name has one type).
    pub fn parts(&self, pieces: usize) -> Result<Vec<ScanPart>, StorageError> {
        let mut parts = Vec::new();
        for (unit, instance) in self.instances.iter().enumerate() {
            parts.extend(parts_of(&instance.db, &instance.path, (unit, 0), pieces)?);
        }
        Ok(parts)
    }

    /// Emits the live keys of one part (`now` in unix seconds); false when `emit` asked
    /// to stop. A key whose expiry falls within the current second is still sent, with
    /// that expiry: the target drops it at once. A floyd name has one type: `_order`
    /// has nothing to hold back.
    pub fn scan_part(
        &self,
        (part, _order): (&ScanPart, &dyn NameOrder),
        limits: ChunkLimits,
        now: i64,
        seq: &mut u64,
        emit: &mut dyn FnMut(Event) -> bool,
        stats: &mut ScanStats,
    ) -> Result<bool, StorageError> {
        let instance = self
            .instances
            .get(part.unit)
            .ok_or_else(|| StorageError::Layout {
                path: PathBuf::from(format!("db{}", self.index)),
                reason: format!("no instance number {}", part.unit),
            })?;
        let reader = InstanceReader {
            db: self,
            instance,
            limits,
            now_ms: now.saturating_mul(1000),
        };
        reader.scan(&part.range, seq, emit, stats)
    }
}

/// The scan of one instance.
struct InstanceReader<'a> {
    db: &'a FloydDb,
    instance: &'a Instance,
    limits: ChunkLimits,
    now_ms: i64,
}

impl<'a> InstanceReader<'a> {
    fn corrupt(&self, key: &[u8], reason: String) -> StorageError {
        StorageError::Corrupt {
            path: self.instance.path.clone(),
            key: display_key(key),
            reason,
        }
    }

    fn read_error(&self, source: rocksdb::Error) -> StorageError {
        StorageError::Read {
            path: self.instance.path.clone(),
            source,
        }
    }

    fn iter(&self, cf: &str) -> Result<DBRawIterator<'a>, StorageError> {
        scan_iter(&self.instance.db, &self.instance.path, cf)
    }

    /// Returns false when the consumer went away.
    fn scan(
        &self,
        range: &KeyRange,
        seq: &mut u64,
        emit: &mut dyn FnMut(Event) -> bool,
        stats: &mut ScanStats,
    ) -> Result<bool, StorageError> {
        let at = self
            .db
            .info
            .as_ref()
            .map(|i| i.position)
            .unwrap_or_default();
        let mut meta = self.iter("default")?;
        match &range.from {
            Some(from) => meta.seek(from),
            None => meta.seek_to_first(),
        }
        // One data iterator per type, re-seeked for each key.
        let mut rows = Vec::with_capacity(5);
        for t in DataType::TYPE_ORDER {
            if let Some(cf) = data_cf(t) {
                rows.push((t, self.iter(cf)?));
            }
        }
        let mut arena = Arena::default();
        while meta.valid() {
            let (Some(raw_key), Some(value)) = (meta.key(), meta.value()) else {
                break;
            };
            if range.is_past(raw_key) {
                break;
            }
            let key = parse_meta_key(raw_key).map_err(|r| self.corrupt(raw_key, r))?;
            let t = value
                .first()
                .ok_or_else(|| "empty meta value".to_owned())
                .and_then(|b| meta_type(*b))
                .map_err(|r| self.corrupt(&key.user_key, r))?;
            let state = meta_state(t, value).map_err(|r| self.corrupt(&key.user_key, r))?;
            if state.empty {
                meta.next();
                continue;
            }
            if state.expire_at_ms.is_some_and(|at| at < self.now_ms) {
                stats.expired += 1;
                meta.next();
                continue;
            }
            if key.truncated {
                self.leave_out(stats, &key.user_key, Unsupported::TruncatedName);
                meta.next();
                continue;
            }
            let name = arena.copy(&key.user_key);
            let mut out = KeyEmitter::new(
                self.db.index,
                name,
                at,
                seq,
                &mut *emit,
                stats,
                &mut arena,
                TypeSet::default(),
            );
            out.begin(state.expire_at_ms, false);
            let data_rows = rows.iter_mut().find(|(rt, _)| *rt == t).map(|(_, it)| it);
            match (t, data_rows) {
                (DataType::List, Some(rows)) => self.list_key(&mut out, rows, value)?,
                (DataType::Stream, Some(rows)) => self.stream_key(&mut out, rows, value)?,
                (_, Some(rows)) => self.collection_key(t, &mut out, rows, value)?,
                (_, None) => self.string_key(&mut out, value)?,
            }
            if out.stopped {
                return Ok(false);
            }
            stats.keys[type_slot(t)] += 1;
            meta.next();
        }
        meta.status().map_err(|e| self.read_error(e))?;
        Ok(true)
    }

    fn leave_out(&self, stats: &mut ScanStats, key: &[u8], reason: Unsupported) {
        tracing::warn!(
            instance = %self.instance.path.display(),
            key = %display_key(key),
            "{}",
            reason.describe()
        );
        stats.leave_out(UnsupportedKey {
            key: key.to_vec().into(),
            reason,
        });
    }

    fn string_key(&self, out: &mut KeyEmitter, value: &[u8]) -> Result<(), StorageError> {
        let parsed = StringValue::parse(value).map_err(|r| self.corrupt(&out.key, r))?;
        // A HyperLogLog is Pika's register bytes, sent as the string they are (the
        // Redis sink recognises and reports them, as for blackwidow's).
        out.string_in_slices(&value[parsed.value.0..parsed.value.1], self.limits);
        Ok(())
    }

    fn collection_key(
        &self,
        t: DataType,
        out: &mut KeyEmitter,
        rows: &mut DBRawIterator<'_>,
        value: &[u8],
    ) -> Result<(), StorageError> {
        let meta = CollectionMeta::parse(value).map_err(|r| self.corrupt(&out.key, r))?;
        let prefix = data_key_prefix(&out.key, meta.version);
        seek_unless_there(rows, &prefix, false);
        let key = out.key.clone();
        let corrupt = |reason: String| self.corrupt(&key, reason);
        emit_rows(
            out,
            rows,
            ChunkBuf::new(t),
            &prefix,
            u64::MAX,
            self.limits,
            |e| self.read_error(e),
            |k, v, chunk, arena| {
                let element = data_key_element(k, &prefix)
                    .ok_or_else(|| corrupt(format!("data key of {} bytes", k.len())))?;
                let element = arena.copy(element);
                chunk.bytes += element.len();
                match t {
                    DataType::Hash => {
                        let field_value = data_value(v).map_err(corrupt)?;
                        chunk.bytes += field_value.len();
                        chunk.hash.push((element, arena.copy(field_value)));
                    }
                    DataType::Set => chunk.members.push(element),
                    _ => {
                        chunk.bytes += 8;
                        chunk.zset.push((element, zset_score(v).map_err(corrupt)?));
                    }
                }
                Ok(())
            },
        )?;
        Ok(())
    }

    fn list_key(
        &self,
        out: &mut KeyEmitter,
        rows: &mut DBRawIterator<'_>,
        value: &[u8],
    ) -> Result<(), StorageError> {
        let meta = ListMeta::parse(value).map_err(|r| self.corrupt(&out.key, r))?;
        let prefix = data_key_prefix(&out.key, meta.version);
        // The comparator orders a generation's rows by index: the first element sits
        // just right of the left index.
        let mut start = prefix.clone();
        start.extend_from_slice(&meta.left.wrapping_add(1).to_le_bytes());
        seek_unless_there(rows, &start, false);
        let key = out.key.clone();
        let seen = emit_rows(
            out,
            rows,
            ChunkBuf::new(DataType::List),
            &prefix,
            meta.count,
            self.limits,
            |e| self.read_error(e),
            |_, v, chunk, arena| {
                let element = data_value(v).map_err(|r| self.corrupt(&key, r))?;
                chunk.members.push(arena.copy(element));
                chunk.bytes += element.len();
                Ok(())
            },
        )?;
        if seen != meta.count && !out.stopped {
            (out.stats).short_list(&self.instance.path, &key, meta.count, seen);
        }
        Ok(())
    }

    /// A stream: its entries in id order, the current version's rows only, each chunk
    /// carrying the stream's last generated id. The message is stored as it is, without
    /// the reserve and time other data values end with.
    fn stream_key(
        &self,
        out: &mut KeyEmitter,
        rows: &mut DBRawIterator<'_>,
        value: &[u8],
    ) -> Result<(), StorageError> {
        let meta = StreamMeta::parse_v40(value).map_err(|r| self.corrupt(&out.key, r))?;
        let prefix = data_key_prefix(&out.key, meta.version);
        let key = out.key.clone();
        emit_stream(
            out,
            rows,
            &prefix,
            meta.last_id,
            self.limits,
            |e| self.read_error(e),
            |k| {
                data_key_element(k, &prefix)
                    .ok_or_else(|| format!("data key of {} bytes", k.len()))
                    .and_then(parse_entry_id)
            },
            |r| self.corrupt(&key, r),
        )?;
        Ok(())
    }
}
