//! What a dump holds, counted from its snapshot events in one pass with bounded memory:
//! per database and type the keys, elements and bytes; the biggest keys by elements and
//! by bytes; names holding several types; streams; how long keys have left to live.
//! The `plan` command reports it before anything is written.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use serde::Serialize;

use crate::event::{Chunk, DataType, Event, Op, TypeSet};

/// The biggest keys kept per measure.
pub const BIGGEST: usize = 20;
/// Names holding several types kept by name (all are counted).
pub const MULTI_TYPE_NAMED: usize = 100;

/// Keys, elements and bytes of one type in one database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub keys: u64,
    pub elements: u64,
    pub bytes: u64,
}

/// One key's size.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct KeySize {
    pub size: u64,
    pub db: u32,
    #[serde(serialize_with = "as_text")]
    pub key: Bytes,
    pub data_type: DataType,
}

fn as_text<S: serde::Serializer>(key: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::display::display_key(key))
}

/// A name Pika holds as several types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MultiType {
    pub db: u32,
    #[serde(serialize_with = "as_text")]
    pub key: Bytes,
    /// In Pika's `TYPE` order: the first is the one `first-wins` keeps.
    pub types: Vec<DataType>,
}

/// Time left to live, as a histogram: no expiry, under an hour, a day, a week, 30 days,
/// more.
pub const TTL_BUCKETS: [&str; 6] = [
    "none",
    "< 1 h",
    "< 1 day",
    "< 7 days",
    "< 30 days",
    ">= 30 days",
];

/// The keeper of the `BIGGEST` largest sizes.
#[derive(Debug, Default)]
struct Top(BinaryHeap<Reverse<KeySize>>);

impl Top {
    fn offer(&mut self, k: KeySize) {
        if self.0.len() < BIGGEST {
            self.0.push(Reverse(k));
        } else if self.0.peek().is_some_and(|Reverse(min)| k.size > min.size) {
            self.0.pop();
            self.0.push(Reverse(k));
        }
    }

    fn sorted(&self) -> Vec<KeySize> {
        let mut all: Vec<KeySize> = self.0.iter().map(|Reverse(k)| k.clone()).collect();
        all.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.key.cmp(&b.key)));
        all
    }
}

/// The profile, fed every snapshot event of a dump.
#[derive(Debug)]
pub struct Profile {
    /// Per database, per type.
    pub counts: BTreeMap<u32, BTreeMap<DataType, Counts>>,
    by_elements: Top,
    by_bytes: Top,
    pub multi_type: Vec<MultiType>,
    pub multi_type_total: u64,
    /// Keys per bucket of [`TTL_BUCKETS`].
    pub ttl: [u64; 6],
    /// The moment times to live are measured from (unix ms).
    now_ms: i64,
    /// The key being read: its elements and bytes so far.
    current: Option<(u32, Bytes, DataType, u64, u64)>,
}

impl Profile {
    /// A profile whose times to live are measured from `now_ms`.
    pub fn new(now_ms: i64) -> Profile {
        Profile {
            counts: BTreeMap::new(),
            by_elements: Top::default(),
            by_bytes: Top::default(),
            multi_type: Vec::new(),
            multi_type_total: 0,
            ttl: [0; 6],
            now_ms,
            current: None,
        }
    }

    pub fn biggest_by_elements(&self) -> Vec<KeySize> {
        self.by_elements.sorted()
    }

    pub fn biggest_by_bytes(&self) -> Vec<KeySize> {
        self.by_bytes.sorted()
    }

    /// Keys of every database and type.
    pub fn total(&self) -> Counts {
        let mut all = Counts::default();
        for c in self.counts.values().flat_map(|types| types.values()) {
            all.keys += c.keys;
            all.elements += c.elements;
            all.bytes += c.bytes;
        }
        all
    }

    pub fn add(&mut self, event: &Event) {
        let Op::Snapshot {
            chunk,
            part,
            expire_at_ms,
            also_types,
        } = &event.op
        else {
            return;
        };
        let t = chunk.data_type();
        if part.starts_key() {
            self.current = Some((event.db, event.key.clone(), t, 0, event.key.len() as u64));
            self.multi_type_of(event.db, &event.key, t, *also_types);
        }
        let Some(current) = self.current.as_mut() else {
            return;
        };
        current.3 += chunk.len() as u64;
        current.4 += chunk.payload_bytes() as u64;
        if let Chunk::String(_) = chunk {
            current.3 = 1;
        }
        if !part.ends_key() {
            return;
        }
        let Some((db, key, t, elements, bytes)) = self.current.take() else {
            return;
        };
        let counts = self.counts.entry(db).or_default().entry(t).or_default();
        counts.keys += 1;
        counts.elements += elements;
        counts.bytes += bytes;
        let bucket = match expire_at_ms {
            None => 0,
            Some(at) => {
                const HOUR: i64 = 3_600_000;
                let left = at.saturating_sub(self.now_ms);
                // The first bound above what is left.
                [HOUR, 24 * HOUR, 7 * 24 * HOUR, 30 * 24 * HOUR]
                    .iter()
                    .position(|bound| left < *bound)
                    .map_or(5, |i| i + 1)
            }
        };
        self.ttl[bucket] += 1;
        self.by_elements.offer(KeySize {
            size: elements,
            db,
            key: key.clone(),
            data_type: t,
        });
        self.by_bytes.offer(KeySize {
            size: bytes,
            db,
            key,
            data_type: t,
        });
    }

    /// A name holding several types counts once (at its first type in Pika's order).
    fn multi_type_of(&mut self, db: u32, key: &Bytes, t: DataType, also: TypeSet) {
        if also.is_empty() || also.first_before(t).is_some() {
            return;
        }
        self.multi_type_total += 1;
        if self.multi_type.len() < MULTI_TYPE_NAMED {
            let mut types: Vec<DataType> = also.iter().collect();
            types.push(t);
            types.sort();
            self.multi_type.push(MultiType {
                db,
                key: key.clone(),
                types,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BinlogOffset, Part, Position};

    fn event(key: &'static str, chunk: Chunk, part: Part, also: &[DataType]) -> Event {
        let mut also_types = TypeSet::default();
        for t in also {
            also_types.insert(*t);
        }
        Event {
            db: 0,
            source_db: 0,
            key: Bytes::from_static(key.as_bytes()),
            data_type: Some(chunk.data_type()),
            op: Op::Snapshot {
                chunk,
                part,
                expire_at_ms: Some(7_200_000),
                also_types,
            },
            position: Position::Snapshot {
                at: BinlogOffset::default(),
                seq: 0,
            },
            exec_time: None,
        }
    }

    #[test]
    fn counts_sizes_types_and_times_to_live_of_keys_read_in_chunks() {
        let mut p = Profile::new(0);
        let items = |n: usize| Chunk::List((0..n).map(|_| Bytes::from_static(b"ab")).collect());
        p.add(&event("l", items(3), Part::First, &[]));
        p.add(&event("l", items(2), Part::Last, &[]));
        p.add(&event(
            "m",
            Chunk::String(Bytes::from_static(b"xyz")),
            Part::Whole,
            &[DataType::Hash],
        ));
        p.add(&event(
            "m",
            Chunk::Hash(vec![(Bytes::from_static(b"f"), Bytes::from_static(b"v"))]),
            Part::Whole,
            &[DataType::String],
        ));
        let lists = p.counts[&0][&DataType::List];
        assert_eq!(
            lists,
            Counts {
                keys: 1,
                elements: 5,
                bytes: 11
            }
        );
        assert_eq!(p.total().keys, 3);
        assert_eq!(p.biggest_by_elements()[0].key, "l");
        assert_eq!(p.multi_type_total, 1);
        assert_eq!(p.multi_type[0].types, [DataType::String, DataType::Hash]);
        // Two hours left: under a day.
        assert_eq!(p.ttl, [0, 0, 3, 0, 0, 0]);
    }
}
