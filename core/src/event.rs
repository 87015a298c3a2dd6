//! The normalized change event that every source emits and every sink takes.
//!
//! An event knows nothing of Pika's bytes or of any sink's format. Big values never
//! become one huge event: a collection of millions of elements is a first chunk and
//! many more, so memory stays flat however large a single key is.

use std::cmp::Ordering;
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A Redis data type as Pika stores it (one blackwidow database each in 3.x).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    String,
    Hash,
    List,
    Zset,
    Set,
    Stream,
}

impl DataType {
    /// The order in which Pika's own `TYPE` reports a key that exists as several types.
    /// The snapshot is emitted in this order, and "first" in `first-wins` means first here.
    /// Pika 3.5's `TYPE` never names a stream: it comes last.
    pub const TYPE_ORDER: [DataType; 6] = [
        DataType::String,
        DataType::Hash,
        DataType::List,
        DataType::Zset,
        DataType::Set,
        DataType::Stream,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DataType::String => "string",
            DataType::Hash => "hash",
            DataType::List => "list",
            DataType::Zset => "zset",
            DataType::Set => "set",
            DataType::Stream => "stream",
        }
    }

    pub fn parse(name: &str) -> Option<DataType> {
        Self::TYPE_ORDER
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A small set of data types: the other types a snapshot key also exists as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TypeSet(u8);

impl TypeSet {
    pub fn insert(&mut self, t: DataType) {
        self.0 |= t.bit();
    }

    pub fn contains(self, t: DataType) -> bool {
        self.0 & t.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = DataType> {
        DataType::TYPE_ORDER
            .into_iter()
            .filter(move |t| self.contains(*t))
    }

    /// The type among `self` that Pika's `TYPE` would report before `t`, if any.
    pub fn first_before(self, t: DataType) -> Option<DataType> {
        self.iter().find(|other| *other < t)
    }

    /// The types of the set that come before `t` in `DataType::TYPE_ORDER`.
    pub fn before(self, t: DataType) -> TypeSet {
        let mut set = TypeSet::default();
        for other in self.iter().filter(|other| *other < t) {
            set.insert(other);
        }
        set
    }
}

/// Which piece of a key's value a snapshot event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The whole value in one event.
    Whole,
    /// The first chunk of a value that continues in `More`/`Last` events.
    First,
    More,
    Last,
}

impl Part {
    /// Whether this chunk starts the key (a target must clear the old value first).
    pub fn starts_key(self) -> bool {
        matches!(self, Part::Whole | Part::First)
    }

    /// Whether this chunk ends the key (expiry is applied after it).
    pub fn ends_key(self) -> bool {
        matches!(self, Part::Whole | Part::Last)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Whole => "whole",
            Part::First => "first",
            Part::More => "more",
            Part::Last => "last",
        }
    }
}

/// A stream entry id, `ms-seq`; ids order as the pair of numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub fn new(ms: u64, seq: u64) -> StreamId {
        StreamId { ms, seq }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl std::str::FromStr for StreamId {
    type Err = String;

    /// `ms-seq`, both decimal (what [`StreamId`]'s `Display` writes).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = s
            .split_once('-')
            .ok_or_else(|| format!("expected MS-SEQ, got {s:?}"))?;
        let num = |t: &str| t.parse::<u64>().map_err(|_| format!("bad stream id {s:?}"));
        Ok(StreamId::new(num(ms)?, num(seq)?))
    }
}

/// One entry of a stream: its id and its field/value pairs in the order they were added.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    pub id: StreamId,
    pub fields: Vec<(Bytes, Bytes)>,
}

impl StreamEntry {
    fn payload_bytes(&self) -> usize {
        16 + self
            .fields
            .iter()
            .map(|(f, v)| f.len() + v.len())
            .sum::<usize>()
    }
}

/// One chunk of a value read from a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// A string, or a slice of a long one (later slices are appended).
    String(Bytes),
    Hash(Vec<(Bytes, Bytes)>),
    /// Elements in list order, head first.
    List(Vec<Bytes>),
    Set(Vec<Bytes>),
    /// Members with their exact scores (`-inf` and `inf` included).
    Zset(Vec<(Bytes, f64)>),
    /// Entries in id order, and the id the stream last generated: above the last entry's
    /// when the newest entries were deleted (a target sets it, so a later `XADD *`
    /// generates the id the source would).
    Stream {
        entries: Vec<StreamEntry>,
        last_id: StreamId,
    },
}

impl Chunk {
    pub fn data_type(&self) -> DataType {
        match self {
            Chunk::String(_) => DataType::String,
            Chunk::Hash(_) => DataType::Hash,
            Chunk::List(_) => DataType::List,
            Chunk::Set(_) => DataType::Set,
            Chunk::Zset(_) => DataType::Zset,
            Chunk::Stream { .. } => DataType::Stream,
        }
    }

    /// Number of elements (1 for a string slice, entries for a stream).
    pub fn len(&self) -> usize {
        match self {
            Chunk::String(_) => 1,
            Chunk::Hash(v) => v.len(),
            Chunk::List(v) | Chunk::Set(v) => v.len(),
            Chunk::Zset(v) => v.len(),
            Chunk::Stream { entries, .. } => entries.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of user data carried (keys excluded), for metrics and batching.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Chunk::String(v) => v.len(),
            Chunk::Hash(v) => v.iter().map(|(f, x)| f.len() + x.len()).sum(),
            Chunk::List(v) | Chunk::Set(v) => v.iter().map(Bytes::len).sum(),
            Chunk::Zset(v) => v.iter().map(|(m, _)| m.len() + 8).sum(),
            Chunk::Stream { entries, .. } => entries.iter().map(StreamEntry::payload_bytes).sum(),
        }
    }
}

/// What happened to the key.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Dump data: a chunk of the key's value as it was at the dump's binlog position.
    Snapshot {
        chunk: Chunk,
        part: Part,
        /// Absolute expiry in unix milliseconds, `None` when the key does not expire.
        expire_at_ms: Option<i64>,
        /// Other types the same key name holds in the snapshot (Pika allows it).
        also_types: TypeSet,
    },
    /// A write from the binlog, as a command a Redis target can apply with the same
    /// effect (Pika-only forms already rewritten, relative expiries made absolute).
    Command { argv: Vec<Bytes> },
}

/// A binlog position: the byte offset just after an item, as the master reports it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct BinlogOffset {
    pub filenum: u32,
    pub offset: u64,
}

impl BinlogOffset {
    pub fn new(filenum: u32, offset: u64) -> Self {
        BinlogOffset { filenum, offset }
    }
}

impl fmt::Display for BinlogOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.filenum, self.offset)
    }
}

impl std::str::FromStr for BinlogOffset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (file, offset) = s
            .split_once(':')
            .ok_or_else(|| format!("expected FILENUM:OFFSET, got {s:?}"))?;
        let filenum = file
            .trim()
            .parse()
            .map_err(|_| format!("bad file number {file:?} in {s:?}"))?;
        let offset = offset
            .trim()
            .parse()
            .map_err(|_| format!("bad offset {offset:?} in {s:?}"))?;
        Ok(BinlogOffset { filenum, offset })
    }
}

/// Where an event sits in the source's stream. Positions are totally ordered: every
/// snapshot event of a dump comes before the binlog items that follow the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    /// The `seq`-th event of a dump taken at binlog position `at`.
    Snapshot { at: BinlogOffset, seq: u64 },
    /// A binlog item; `at` is the offset just after it, `logic_id` and `term` as Pika
    /// wrote them in the item header.
    Binlog {
        at: BinlogOffset,
        logic_id: u64,
        term: u32,
    },
}

impl Position {
    pub fn binlog_offset(&self) -> BinlogOffset {
        match self {
            Position::Snapshot { at, .. } | Position::Binlog { at, .. } => *at,
        }
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        fn rank(p: &Position) -> (BinlogOffset, u8, u64) {
            match p {
                Position::Snapshot { at, seq } => (*at, 0, *seq),
                Position::Binlog { at, logic_id, .. } => (*at, 1, *logic_id),
            }
        }
        rank(self).cmp(&rank(other))
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Snapshot { at, seq } => write!(f, "snapshot@{at}#{seq}"),
            Position::Binlog { at, .. } => write!(f, "binlog@{at}"),
        }
    }
}

/// One normalized change.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The database the event goes to: the Pika database it was read from, unless a
    /// `db` filter moved it.
    pub db: u32,
    /// The Pika database the event was read from, whose binlog `position` is in. A `db`
    /// filter moves `db`, never this: positions of two databases merged into one do not
    /// compare, and a sink that records them keeps them apart by this.
    pub source_db: u32,
    /// The key the event is about (for a multi-key command: its first key).
    pub key: Bytes,
    /// The data type written, when known (`None` for type-less commands like DEL).
    pub data_type: Option<DataType>,
    pub op: Op,
    pub position: Position,
    /// Unix seconds at which the master logged the write; `None` for snapshot data.
    pub exec_time: Option<u32>,
}

impl Event {
    /// Gives a command's key and arguments their own memory, so that they no longer
    /// keep alive the larger buffer they were sliced from.
    pub fn own_command_bytes(&mut self) {
        if let Op::Command { argv } = &mut self.op {
            self.key = Bytes::copy_from_slice(&self.key);
            for arg in argv.iter_mut() {
                *arg = Bytes::copy_from_slice(arg);
            }
        }
    }

    /// Name of the event kind, as used in logs, metrics and the JSON envelope.
    pub fn kind(&self) -> &'static str {
        match self.op {
            Op::Snapshot { .. } => "snapshot",
            Op::Command { .. } => "command",
        }
    }

    /// Estimated memory the event holds: its bytes plus, per element, the `Bytes`
    /// header and allocation that a small element costs. Batches are bounded by this,
    /// so many tiny elements count for what they really take.
    pub fn memory_estimate(&self) -> usize {
        const PER_ELEMENT: usize = 64;
        let elements = match &self.op {
            Op::Snapshot { chunk, .. } => match chunk {
                Chunk::Hash(_) | Chunk::Zset(_) => chunk.len() * 2,
                // Each entry's field list, and its fields and values.
                Chunk::Stream { entries, .. } => {
                    entries.iter().map(|e| 1 + 2 * e.fields.len()).sum()
                }
                other => other.len(),
            },
            Op::Command { argv } => argv.len(),
        };
        self.payload_bytes() + PER_ELEMENT * (elements + 1)
    }

    /// Payload size in bytes (keys and values), for metrics.
    pub fn payload_bytes(&self) -> usize {
        self.key.len()
            + match &self.op {
                Op::Snapshot { chunk, .. } => chunk.payload_bytes(),
                Op::Command { argv } => argv.iter().map(Bytes::len).sum(),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_owning_its_bytes_no_longer_holds_the_block_it_came_from() {
        let block = Bytes::from(vec![b'x'; 64 << 10]);
        let mut e = Event {
            db: 0,
            source_db: 0,
            key: block.slice(3..4),
            data_type: None,
            op: Op::Command {
                argv: vec![block.slice(0..3), block.slice(3..4)],
            },
            position: Position::Binlog {
                at: BinlogOffset::new(0, 10),
                logic_id: 1,
                term: 0,
            },
            exec_time: None,
        };
        e.own_command_bytes();
        // Only `block` itself still refers to its memory: unique again, so it converts
        // to a Vec without copying.
        assert!(
            block.try_into_mut().is_ok(),
            "the event still shared the block"
        );
        let Op::Command { argv } = &e.op else {
            unreachable!()
        };
        assert_eq!((&argv[0][..], &e.key[..]), (&b"xxx"[..], &b"x"[..]));
    }

    #[test]
    fn snapshot_positions_sort_before_the_binlog_that_follows() {
        let at = BinlogOffset::new(1, 507340);
        let snap = Position::Snapshot { at, seq: 9 };
        let next = Position::Binlog {
            at: BinlogOffset::new(1, 507400),
            logic_id: 1,
            term: 0,
        };
        assert!(snap < next);
        assert!(Position::Snapshot { at, seq: 1 } < snap);
    }

    #[test]
    fn type_set_reports_the_type_pika_would_show_first() {
        let mut set = TypeSet::default();
        set.insert(DataType::Set);
        set.insert(DataType::Hash);
        assert_eq!(set.first_before(DataType::List), Some(DataType::Hash));
        assert_eq!(set.first_before(DataType::String), None);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [DataType::Hash, DataType::Set]
        );
    }

    #[test]
    fn stream_ids_order_as_numbers_and_read_back_as_written() {
        let (a, b) = (StreamId::new(9, 10), StreamId::new(10, 0));
        assert!(a < b && StreamId::new(9, 9) < a);
        assert_eq!(b.to_string(), "10-0");
        assert_eq!(
            "1700000000000-7".parse::<StreamId>(),
            Ok(StreamId::new(1_700_000_000_000, 7))
        );
        for bad in ["", "7", "1-", "-1", "1-x", "18446744073709551616-0"] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_stream_chunk_counts_entries_and_sizes_its_fields() {
        let entry = |seq| StreamEntry {
            id: StreamId::new(1, seq),
            fields: vec![
                (Bytes::from_static(b"f"), Bytes::from_static(b"vv")),
                (Bytes::from_static(b"g"), Bytes::new()),
            ],
        };
        let chunk = Chunk::Stream {
            entries: vec![entry(0), entry(1)],
            last_id: StreamId::new(1, 1),
        };
        assert_eq!((chunk.len(), chunk.data_type()), (2, DataType::Stream));
        // Per entry: its 16-byte id and 4 bytes of fields and values.
        assert_eq!(chunk.payload_bytes(), 2 * (16 + 4));
        let event = Event {
            db: 0,
            source_db: 0,
            key: Bytes::from_static(b"s"),
            data_type: Some(DataType::Stream),
            op: Op::Snapshot {
                chunk,
                part: Part::Whole,
                expire_at_ms: None,
                also_types: TypeSet::default(),
            },
            position: Position::Snapshot {
                at: BinlogOffset::default(),
                seq: 0,
            },
            exec_time: None,
        };
        // Each entry and each of its fields and values is an element of its own.
        assert_eq!(event.memory_estimate(), 1 + 40 + 64 * (2 * 5 + 1));
    }

    #[test]
    fn binlog_offset_parses_and_rejects() {
        assert_eq!(
            "1:507340".parse::<BinlogOffset>().unwrap(),
            BinlogOffset::new(1, 507340)
        );
        assert!("1-2".parse::<BinlogOffset>().is_err());
        assert!("x:2".parse::<BinlogOffset>().is_err());
    }
}
