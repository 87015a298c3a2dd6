//! What both storage readers share: cutting a key's value into chunks, labelling them
//! with their `Part`, counting what was emitted or skipped, and the small-copy arena.

use bytes::{Bytes, BytesMut};
use rocksdb::DBRawIterator;

use super::rocks::seek_unless_there;
use super::stream::parse_message;
use super::StorageError;
use crate::display::display_key;
use crate::event::{
    BinlogOffset, Chunk, DataType, Event, Op, Part, Position, StreamEntry, StreamId, TypeSet,
};

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
    pub keys: [u64; DataType::TYPE_ORDER.len()],
    pub events: u64,
    /// Keys skipped because they had expired by the time of the scan.
    pub expired: u64,
    /// Lists whose data rows did not match their meta count.
    pub inconsistent_lists: u64,
    /// Keys read but not emitted because the dump cannot carry them faithfully (names
    /// Pika 4.0 stored cut short): the first [`ScanStats::NAMED_UNSUPPORTED`] of each
    /// reason by name (a store of millions of such keys must not hold all their names),
    /// ...
    pub unsupported: Vec<UnsupportedKey>,
    /// ... and how many in all, per reason in [`Unsupported::ALL`] order.
    pub unsupported_total: [u64; 1],
}

/// Why a live key was left out of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// Pika 4.0 stored the name cut after its last NUL byte (its `EncodeUserKey` bug):
    /// the real name is not in the dump, only in the binlog.
    TruncatedName,
}

impl Unsupported {
    pub const ALL: [Unsupported; 1] = [Unsupported::TruncatedName];

    fn slot(self) -> usize {
        match self {
            Unsupported::TruncatedName => 0,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Unsupported::TruncatedName => {
                "key(s) stored by Pika 4.0 with the name cut after an embedded NUL byte, not copied"
            }
        }
    }
}

/// One key left out, by its name as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedKey {
    pub key: Bytes,
    pub reason: Unsupported,
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
        for (a, b) in self
            .unsupported_total
            .iter_mut()
            .zip(other.unsupported_total)
        {
            *a += b;
        }
        for k in &other.unsupported {
            self.name_unsupported(k);
        }
    }

    /// Most keys named per reason they were left out for.
    pub const NAMED_UNSUPPORTED: usize = 1000;

    /// How many keys were left out for `reason`.
    pub fn unsupported_count(&self, reason: Unsupported) -> u64 {
        self.unsupported_total[reason.slot()]
    }

    /// Counts a key left out, and keeps its name while few are.
    pub(super) fn leave_out(&mut self, key: UnsupportedKey) {
        self.unsupported_total[key.reason.slot()] += 1;
        self.name_unsupported(&key);
    }

    fn name_unsupported(&mut self, key: &UnsupportedKey) {
        let named = (self.unsupported.iter())
            .filter(|k| k.reason == key.reason)
            .count();
        if named < Self::NAMED_UNSUPPORTED {
            self.unsupported.push(key.clone());
        }
    }

    /// Counts and reports a list whose rows are fewer than its meta says (`found` of
    /// them are emitted).
    pub(super) fn short_list(
        &mut self,
        place: &std::path::Path,
        key: &[u8],
        expected: u64,
        found: u64,
    ) {
        self.inconsistent_lists += 1;
        tracing::warn!(
            db = %place.display(),
            key = %display_key(key),
            expected,
            found,
            "list has fewer elements than its meta says; emitting those found"
        );
    }

    /// One line per reason keys were left out, naming the first few.
    pub fn unsupported_lines(&self) -> Vec<String> {
        const NAMED: usize = 5;
        Unsupported::ALL
            .into_iter()
            .filter_map(|reason| {
                let total = self.unsupported_count(reason);
                if total == 0 {
                    return None;
                }
                let keys: Vec<String> = (self.unsupported.iter())
                    .filter(|k| k.reason == reason)
                    .take(NAMED)
                    .map(|k| display_key(&k.key))
                    .collect();
                let more = if total > keys.len() as u64 {
                    ", …"
                } else {
                    ""
                };
                Some(format!(
                    "{total} {}: {}{more}",
                    reason.describe(),
                    keys.join(", ")
                ))
            })
            .collect()
    }
}

pub(super) fn type_slot(t: DataType) -> usize {
    DataType::TYPE_ORDER
        .iter()
        .position(|x| *x == t)
        .unwrap_or(0)
}

/// Elements of one chunk being gathered.
/// Small byte strings (keys, elements, short values) copied into shared blocks: one allocation
/// per block rather than two per string (its buffer, then the shared header its first
/// clone adds). Big ones get their own allocation, so a block never pins much.
#[derive(Default)]
pub(super) struct Arena(BytesMut);

impl Arena {
    const BLOCK: usize = 64 << 10;

    pub(super) fn copy(&mut self, b: &[u8]) -> Bytes {
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

pub(super) struct ChunkBuf {
    t: DataType,
    pub(super) hash: Vec<(Bytes, Bytes)>,
    pub(super) members: Vec<Bytes>,
    pub(super) zset: Vec<(Bytes, f64)>,
    pub(super) stream: Vec<StreamEntry>,
    /// A stream's last generated id, carried by each of its chunks.
    pub(super) last_id: StreamId,
    pub(super) bytes: usize,
}

impl ChunkBuf {
    pub(super) fn new(t: DataType) -> ChunkBuf {
        ChunkBuf {
            t,
            hash: Vec::new(),
            members: Vec::new(),
            zset: Vec::new(),
            stream: Vec::new(),
            last_id: StreamId::default(),
            bytes: 0,
        }
    }

    fn len(&self) -> usize {
        self.hash.len() + self.members.len() + self.zset.len() + self.stream.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn is_full(&self, limits: ChunkLimits) -> bool {
        self.len() >= limits.elements.max(1) || self.bytes >= limits.bytes
    }

    pub(super) fn take(&mut self) -> Chunk {
        self.bytes = 0;
        match self.t {
            DataType::Hash => Chunk::Hash(std::mem::take(&mut self.hash)),
            DataType::Set => Chunk::Set(std::mem::take(&mut self.members)),
            DataType::List => Chunk::List(std::mem::take(&mut self.members)),
            DataType::Zset => Chunk::Zset(std::mem::take(&mut self.zset)),
            DataType::Stream => Chunk::Stream {
                entries: std::mem::take(&mut self.stream),
                last_id: self.last_id,
            },
            DataType::String => Chunk::String(Bytes::new()),
        }
    }
}

/// Reads the data rows of one key from where `rows` stands: those starting with
/// `prefix`, at most `max_rows`, each handed to `add` to put into `chunk` (empty, of the
/// key's type); full chunks are emitted as they fill, the rest at the end. Returns how
/// many rows were read; `read_error` names the place of a RocksDB read failure.
// Each argument is one the two readers fill differently.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_rows(
    out: &mut KeyEmitter,
    rows: &mut DBRawIterator<'_>,
    mut chunk: ChunkBuf,
    prefix: &[u8],
    max_rows: u64,
    limits: ChunkLimits,
    read_error: impl Fn(rocksdb::Error) -> StorageError,
    mut add: impl FnMut(&[u8], &[u8], &mut ChunkBuf, &mut Arena) -> Result<(), StorageError>,
) -> Result<u64, StorageError> {
    let mut seen = 0u64;
    while seen < max_rows && !out.stopped {
        let Some((k, v)) = rows.item() else {
            break;
        };
        if !k.starts_with(prefix) {
            break;
        }
        add(k, v, &mut chunk, out.arena)?;
        seen += 1;
        if chunk.is_full(limits) {
            out.push(chunk.take());
        }
        rows.next();
    }
    rows.status().map_err(read_error)?;
    out.finish_with(chunk);
    Ok(seen)
}

/// Emits a stream's entries: the rows starting with `prefix` (in id order), each chunk
/// carrying `last_id`; `entry_id` finds a row's entry id in its key, the message is
/// decoded from its value, `corrupt` names the key of bad bytes.
// Each argument is one the two readers fill differently.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_stream(
    out: &mut KeyEmitter,
    rows: &mut DBRawIterator<'_>,
    prefix: &[u8],
    last_id: StreamId,
    limits: ChunkLimits,
    read_error: impl Fn(rocksdb::Error) -> StorageError,
    entry_id: impl Fn(&[u8]) -> Result<StreamId, String>,
    corrupt: impl Fn(String) -> StorageError,
) -> Result<u64, StorageError> {
    seek_unless_there(rows, prefix, false);
    let mut chunk = ChunkBuf::new(DataType::Stream);
    chunk.last_id = last_id;
    emit_rows(
        out,
        rows,
        chunk,
        prefix,
        u64::MAX,
        limits,
        read_error,
        |k, v, chunk, arena| {
            let id = entry_id(k).map_err(&corrupt)?;
            let fields = parse_message(v, |b| arena.copy(b)).map_err(&corrupt)?;
            chunk.bytes += 16 + v.len();
            chunk.stream.push(StreamEntry { id, fields });
            Ok(())
        },
    )
}

/// Emits the chunks of one key with the right `Part` labels. It holds one chunk back,
/// because only the next one tells whether it was the last.
pub(super) struct KeyEmitter<'a> {
    db: u32,
    pub(super) key: Bytes,
    at: BinlogOffset,
    seq: &'a mut u64,
    emit: &'a mut dyn FnMut(Event) -> bool,
    pub(super) stats: &'a mut ScanStats,
    /// Where the key's elements are copied to.
    pub(super) arena: &'a mut Arena,
    expire_at_ms: Option<i64>,
    also_types: TypeSet,
    pending: Option<Chunk>,
    started: bool,
    pub(super) stopped: bool,
}

impl<'a> KeyEmitter<'a> {
    /// Where the key `key` of database `db` (consistent with binlog position `at`)
    /// goes: `emit`, numbered from `seq`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        db: u32,
        key: Bytes,
        at: BinlogOffset,
        seq: &'a mut u64,
        emit: &'a mut dyn FnMut(Event) -> bool,
        stats: &'a mut ScanStats,
        arena: &'a mut Arena,
        also_types: TypeSet,
    ) -> KeyEmitter<'a> {
        KeyEmitter {
            db,
            key,
            at,
            seq,
            emit,
            stats,
            arena,
            expire_at_ms: None,
            also_types,
            pending: None,
            started: false,
            stopped: false,
        }
    }

    /// Decides whether the key is live (`stale` = expired by the time of the scan); if
    /// so, keeps its expiry for its events.
    pub(super) fn begin(&mut self, expire_at_ms: Option<i64>, stale: bool) -> bool {
        if stale {
            self.stats.expired += 1;
            return false;
        }
        self.expire_at_ms = expire_at_ms;
        true
    }

    /// Emits a whole string value, cut into slices of at most `limits.bytes`. Copied
    /// slice by slice: only the slices in flight are held, never a second copy of a
    /// whole big value.
    pub(super) fn string_in_slices(&mut self, value: &[u8], limits: ChunkLimits) {
        let step = limits.bytes.max(1);
        let mut at = 0usize;
        loop {
            let end = at.saturating_add(step).min(value.len());
            let slice = self.arena.copy(&value[at..end]);
            self.push(Chunk::String(slice));
            at = end;
            if at >= value.len() {
                break;
            }
        }
        self.finish();
    }

    pub(super) fn push(&mut self, chunk: Chunk) {
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
    pub(super) fn finish_with(&mut self, mut chunk: ChunkBuf) {
        if !chunk.is_empty() || !self.started {
            self.push(chunk.take());
        }
        self.finish();
    }

    pub(super) fn finish(&mut self) {
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
            source_db: self.db,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_left_out_are_all_counted_and_the_first_named() {
        let mut stats = ScanStats::default();
        let n = ScanStats::NAMED_UNSUPPORTED + 5;
        for i in 0..n {
            stats.leave_out(UnsupportedKey {
                key: Bytes::from(format!("s{i}")),
                reason: Unsupported::TruncatedName,
            });
        }
        let mut merged = ScanStats::default();
        merged.add(&stats);
        merged.add(&stats);
        assert_eq!(
            merged.unsupported_count(Unsupported::TruncatedName),
            2 * n as u64
        );
        assert_eq!(merged.unsupported.len(), ScanStats::NAMED_UNSUPPORTED);
        let lines = merged.unsupported_lines();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with(&format!("{} key(s) stored by Pika 4.0", 2 * n)),
            "{lines:?}"
        );
        assert!(lines[0].ends_with("s0, s1, s2, s3, s4, …"), "{lines:?}");
    }
}
