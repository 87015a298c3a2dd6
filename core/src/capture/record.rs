//! One event as a capture record's payload: a compact, versioned binary form (integers
//! little-endian, byte strings as u32 length + bytes).
//!
//! ```text
//! op u8 (0 snapshot, 1 command; + 2 when a `db` filter moved the event: `source_db
//! u32` follows `db`) · db u32 · position · exec_time i64 (-1: none)
//! data_type u8 (0 string 1 hash 2 list 3 zset 4 set 5 stream, 255 none) · key bytes
//! snapshot: part u8 (0 whole 1 first 2 more 3 last) · expire_at_ms i64 (i64::MIN: none)
//!           also_types u8 count + type codes · chunk: count u32 + elements
//!           (string 1 bytes; hash/zset pairs: bytes+bytes / bytes+f64 bits; list/set bytes;
//!           stream: last_id, then per entry id, field count u32, field+value bytes; an
//!           id is ms u64 + seq u64)
//! command:  argc u32 · argv bytes…
//! position: 0 snapshot (filenum u32, offset u64, seq u64) | 1 binlog (filenum u32,
//!           offset u64, logic_id u64, term u32)
//! ```

use bytes::{Buf, BufMut, Bytes};

use crate::event::{
    BinlogOffset, Chunk, DataType, Event, Op, Part, Position, StreamEntry, StreamId, TypeSet,
};

fn type_code(t: Option<DataType>) -> u8 {
    match t {
        Some(DataType::String) => 0,
        Some(DataType::Hash) => 1,
        Some(DataType::List) => 2,
        Some(DataType::Zset) => 3,
        Some(DataType::Set) => 4,
        Some(DataType::Stream) => 5,
        None => 255,
    }
}

fn type_of(code: u8) -> Result<Option<DataType>, String> {
    Ok(Some(match code {
        0 => DataType::String,
        1 => DataType::Hash,
        2 => DataType::List,
        3 => DataType::Zset,
        4 => DataType::Set,
        5 => DataType::Stream,
        255 => return Ok(None),
        other => return Err(format!("unknown type code {other}")),
    }))
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

fn put_id(out: &mut Vec<u8>, id: StreamId) {
    out.put_u64_le(id.ms);
    out.put_u64_le(id.seq);
}

pub fn encode(event: &Event, out: &mut Vec<u8>) {
    let moved = event.source_db != event.db;
    out.put_u8(matches!(event.op, Op::Command { .. }) as u8 | (u8::from(moved) << 1));
    out.put_u32_le(event.db);
    if moved {
        out.put_u32_le(event.source_db);
    }
    match event.position {
        Position::Snapshot { at, seq } => {
            out.put_u8(0);
            out.put_u32_le(at.filenum);
            out.put_u64_le(at.offset);
            out.put_u64_le(seq);
        }
        Position::Binlog { at, logic_id, term } => {
            out.put_u8(1);
            out.put_u32_le(at.filenum);
            out.put_u64_le(at.offset);
            out.put_u64_le(logic_id);
            out.put_u32_le(term);
        }
    }
    out.put_i64_le(event.exec_time.map_or(-1, i64::from));
    out.put_u8(type_code(event.data_type));
    put_bytes(out, &event.key);
    match &event.op {
        Op::Snapshot {
            chunk,
            part,
            expire_at_ms,
            also_types,
        } => {
            out.put_u8(match part {
                Part::Whole => 0,
                Part::First => 1,
                Part::More => 2,
                Part::Last => 3,
            });
            out.put_i64_le(expire_at_ms.unwrap_or(i64::MIN));
            let also: Vec<DataType> = also_types.iter().collect();
            out.put_u8(also.len() as u8);
            for t in also {
                out.put_u8(type_code(Some(t)));
            }
            out.put_u8(type_code(Some(chunk.data_type())));
            out.put_u32_le(chunk.len() as u32);
            match chunk {
                Chunk::String(v) => put_bytes(out, v),
                Chunk::Hash(pairs) => {
                    for (f, v) in pairs {
                        put_bytes(out, f);
                        put_bytes(out, v);
                    }
                }
                Chunk::List(items) | Chunk::Set(items) => {
                    for i in items {
                        put_bytes(out, i);
                    }
                }
                Chunk::Zset(members) => {
                    for (m, s) in members {
                        put_bytes(out, m);
                        out.put_u64_le(s.to_bits());
                    }
                }
                Chunk::Stream { entries, last_id } => {
                    put_id(out, *last_id);
                    for e in entries {
                        put_id(out, e.id);
                        out.put_u32_le(e.fields.len() as u32);
                        for (f, v) in &e.fields {
                            put_bytes(out, f);
                            put_bytes(out, v);
                        }
                    }
                }
            }
        }
        Op::Command { argv } => {
            out.put_u32_le(argv.len() as u32);
            for a in argv {
                put_bytes(out, a);
            }
        }
    }
}

/// Reads from a record's payload, every read checked against its end.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), String> {
        if self.0.remaining() < n {
            return Err(format!(
                "record ends early ({} bytes left, {n} needed)",
                self.0.remaining()
            ));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, String> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.need(8)?;
        Ok(self.0.get_i64_le())
    }
    fn id(&mut self) -> Result<StreamId, String> {
        Ok(StreamId::new(self.u64()?, self.u64()?))
    }
    /// Field/value pairs, each at least two empty byte strings.
    fn pairs(&mut self) -> Result<Vec<(Bytes, Bytes)>, String> {
        let n = self.count(8)?;
        (0..n).map(|_| Ok((self.bytes()?, self.bytes()?))).collect()
    }
    fn bytes(&mut self) -> Result<Bytes, String> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }
    /// A count of elements, each at least `min` bytes: bounded by what is left.
    fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.0.remaining() {
            return Err(format!("count {n} does not fit in the record"));
        }
        Ok(n)
    }
}

pub fn decode(payload: Bytes) -> Result<Event, String> {
    let mut r = Reader(payload);
    let op = r.u8()?;
    let db = r.u32()?;
    // Bit 1: the event was moved by a `db` filter; the database it was read from follows
    // (never the same one: the writer sets the bit only when they differ).
    let source_db = if op & 2 != 0 {
        let from = r.u32()?;
        if from == db {
            return Err(format!(
                "a moved event from database {db} into the same one"
            ));
        }
        from
    } else {
        db
    };
    let op = op & !2;
    let position = match r.u8()? {
        0 => Position::Snapshot {
            at: BinlogOffset::new(r.u32()?, r.u64()?),
            seq: r.u64()?,
        },
        1 => Position::Binlog {
            at: BinlogOffset::new(r.u32()?, r.u64()?),
            logic_id: r.u64()?,
            term: r.u32()?,
        },
        other => return Err(format!("unknown position kind {other}")),
    };
    let exec_time = match r.i64()? {
        -1 => None,
        t => Some(u32::try_from(t).map_err(|_| format!("exec_time {t} out of range"))?),
    };
    let data_type = type_of(r.u8()?)?;
    let key = r.bytes()?;
    let op = match op {
        0 => {
            let part = match r.u8()? {
                0 => Part::Whole,
                1 => Part::First,
                2 => Part::More,
                3 => Part::Last,
                other => return Err(format!("unknown part {other}")),
            };
            let expire = r.i64()?;
            // The writer lists each type once, in order.
            let mut also_types = TypeSet::default();
            let mut last = None;
            for _ in 0..r.u8()? {
                let code = r.u8()?;
                let t = type_of(code)?.ok_or("a type-less entry among the other types")?;
                if last.is_some_and(|l| l >= code) {
                    return Err(format!("other types out of order at type code {code}"));
                }
                last = Some(code);
                also_types.insert(t);
            }
            let chunk_type = type_of(r.u8()?)?.ok_or("a chunk without a type")?;
            let chunk = match chunk_type {
                DataType::String => match r.u32()? {
                    1 => Chunk::String(r.bytes()?),
                    n => return Err(format!("a string chunk of {n} elements")),
                },
                DataType::Hash => Chunk::Hash(r.pairs()?),
                DataType::List | DataType::Set => {
                    let n = r.count(4)?;
                    let items = (0..n).map(|_| r.bytes()).collect::<Result<_, _>>()?;
                    if chunk_type == DataType::List {
                        Chunk::List(items)
                    } else {
                        Chunk::Set(items)
                    }
                }
                DataType::Zset => {
                    let n = r.count(12)?;
                    Chunk::Zset(
                        (0..n)
                            .map(|_| Ok((r.bytes()?, f64::from_bits(r.u64()?))))
                            .collect::<Result<_, String>>()?,
                    )
                }
                DataType::Stream => {
                    // Each entry: an id and a field count.
                    let n = r.count(20)?;
                    let last_id = r.id()?;
                    let entries = (0..n)
                        .map(|_| {
                            Ok(StreamEntry {
                                id: r.id()?,
                                fields: r.pairs()?,
                            })
                        })
                        .collect::<Result<_, String>>()?;
                    Chunk::Stream { entries, last_id }
                }
            };
            Op::Snapshot {
                chunk,
                part,
                expire_at_ms: (expire != i64::MIN).then_some(expire),
                also_types,
            }
        }
        1 => {
            let n = r.count(4)?;
            if n == 0 {
                return Err("a command without a name".into());
            }
            Op::Command {
                argv: (0..n).map(|_| r.bytes()).collect::<Result<_, _>>()?,
            }
        }
        other => return Err(format!("unknown op {other}")),
    };
    if r.0.has_remaining() {
        return Err(format!("{} bytes after the event", r.0.remaining()));
    }
    Ok(Event {
        db,
        source_db,
        key,
        data_type,
        op,
        position,
        exec_time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Chunk, Op};
    use crate::filter::testing::{binlog_events, snapshot_events, stream_events};

    #[test]
    fn every_fixture_event_round_trips() {
        let mut buf = Vec::new();
        for e in snapshot_events().into_iter().chain(binlog_events()) {
            buf.clear();
            encode(&e, &mut buf);
            let back = decode(Bytes::from(buf.clone())).unwrap();
            // f64 NaN never occurs; -inf/inf compare fine.
            assert_eq!(back, e);
        }
        // Moved by a `db` filter, an event keeps the database its position is of.
        let mut moved = binlog_events()[3].clone();
        moved.db = 5;
        buf.clear();
        encode(&moved, &mut buf);
        let back = decode(Bytes::from(buf.clone())).unwrap();
        assert_eq!((back.db, back.source_db), (5, 0));
        assert_eq!(back, moved);
    }

    #[test]
    fn stream_chunks_round_trip_with_their_ids_fields_and_last_id() {
        let streams = stream_events();
        assert!(streams.len() > 9, "the big stream comes in several chunks");
        let mut buf = Vec::new();
        for e in &streams {
            buf.clear();
            encode(e, &mut buf);
            assert_eq!(&decode(Bytes::from(buf.clone())).unwrap(), e);
        }
        // Cut anywhere, a stream record is refused, never read short.
        for cut in 0..buf.len() {
            assert!(decode(Bytes::copy_from_slice(&buf[..cut])).is_err());
        }
    }

    #[test]
    fn a_record_the_writer_never_writes_is_refused() {
        let mut good = Vec::new();
        encode(&binlog_events()[3], &mut good);
        assert!(decode(Bytes::from(good.clone())).is_ok());
        // exec_time (after op, db, position kind and a binlog position) past u32: it
        // was read cut to 32 bits.
        let at = 1 + 4 + 1 + 4 + 8 + 8 + 4;
        let mut bad = good.clone();
        bad[at..at + 8].copy_from_slice(&0xff_6b06_34f0i64.to_le_bytes());
        let e = decode(Bytes::from(bad)).unwrap_err();
        assert!(e.contains("exec_time 1097012229360 out of range"), "{e}");

        let snapshot = snapshot_events()
            .into_iter()
            .find(|e| {
                matches!(
                    &e.op,
                    Op::Snapshot {
                        chunk: Chunk::String(_),
                        ..
                    }
                )
            })
            .unwrap();
        let mut good = Vec::new();
        encode(&snapshot, &mut good);
        // op, db, snapshot position, exec_time, type, key, part, expiry: then the
        // other types' count, the chunk type and its element count.
        let at = 1 + 4 + 1 + 4 + 8 + 8 + 8 + 1 + 4 + snapshot.key.len() + 1 + 8;
        assert_eq!(good[at..at + 6], [0, 0, 1, 0, 0, 0]);
        let mut two = good.clone();
        two[at + 2] = 2;
        assert!(decode(Bytes::from(two))
            .unwrap_err()
            .contains("string chunk of 2"));
        let mut also = good[..at].to_vec();
        also.extend_from_slice(&[2, 4, 1]);
        also.extend_from_slice(&good[at + 1..]);
        assert!(decode(Bytes::from(also))
            .unwrap_err()
            .contains("out of order"));

        // A command of no arguments: its argc is the last 4 bytes.
        let mut empty = Vec::new();
        let mut event = binlog_events()[0].clone();
        event.op = Op::Command { argv: vec![] };
        encode(&event, &mut empty);
        assert!(decode(Bytes::from(empty))
            .unwrap_err()
            .contains("without a name"));
    }

    #[test]
    fn a_truncated_record_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        encode(&binlog_events()[3], &mut buf);
        for cut in 0..buf.len() {
            assert!(
                decode(Bytes::copy_from_slice(&buf[..cut])).is_err(),
                "cut {cut}"
            );
        }
    }
}
