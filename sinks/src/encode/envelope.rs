//! The JSON envelope of an event (documented in `docs/events.md`): one object with
//! `op`, `db`, `key`, `type`, `value` (snapshot) or `args` (command), `position`, and
//! `exec_time`. Byte strings that are not UTF-8 are written as `{"base64": "…"}`.

use base64::Engine;
use bytes::Bytes;
use pika_migrate_core::event::{Chunk, Event, Op, Position};
use serde_json::{json, Map, Value};

use super::commands::score_text;

/// A byte string as JSON: a plain string when it is UTF-8, else `{"base64": …}`.
pub fn bytes_value(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

fn chunk_value(chunk: &Chunk) -> Value {
    let list = |items: &[Bytes]| Value::Array(items.iter().map(|i| bytes_value(i)).collect());
    match chunk {
        Chunk::String(v) => bytes_value(v),
        Chunk::Hash(pairs) => Value::Array(
            pairs
                .iter()
                .map(|(f, v)| Value::Array(vec![bytes_value(f), bytes_value(v)]))
                .collect(),
        ),
        Chunk::List(items) | Chunk::Set(items) => list(items),
        Chunk::Zset(members) => Value::Array(
            members
                .iter()
                .map(|(m, s)| {
                    Value::Array(vec![
                        bytes_value(m),
                        Value::String(String::from_utf8_lossy(&score_text(*s)).into_owned()),
                    ])
                })
                .collect(),
        ),
        Chunk::Stream { entries, .. } => Value::Array(
            entries
                .iter()
                .map(|e| {
                    let fields = e
                        .fields
                        .iter()
                        .map(|(f, v)| Value::Array(vec![bytes_value(f), bytes_value(v)]))
                        .collect();
                    Value::Array(vec![Value::String(e.id.to_string()), Value::Array(fields)])
                })
                .collect(),
        ),
    }
}

/// The position as JSON: `{"snapshot": {filenum, offset, seq}}` or
/// `{"binlog": {filenum, offset, logic_id, term}}`.
pub fn position_value(p: &Position) -> Value {
    match p {
        Position::Snapshot { at, seq } => {
            json!({"snapshot": {"filenum": at.filenum, "offset": at.offset, "seq": seq}})
        }
        Position::Binlog { at, logic_id, term } => {
            json!({"binlog": {"filenum": at.filenum, "offset": at.offset, "logic_id": logic_id, "term": term}})
        }
    }
}

/// The envelope of one event.
pub fn envelope(event: &Event) -> Value {
    let mut obj = Map::new();
    obj.insert("op".into(), Value::String(event.kind().into()));
    obj.insert("db".into(), json!(event.db));
    obj.insert("key".into(), bytes_value(&event.key));
    obj.insert(
        "type".into(),
        event
            .data_type
            .map_or(Value::Null, |t| Value::String(t.as_str().into())),
    );
    match &event.op {
        Op::Snapshot {
            chunk,
            part,
            expire_at_ms,
            also_types,
        } => {
            obj.insert("part".into(), Value::String(part.as_str().into()));
            obj.insert("value".into(), chunk_value(chunk));
            if let Chunk::Stream { last_id, .. } = chunk {
                obj.insert("last_id".into(), Value::String(last_id.to_string()));
            }
            obj.insert("expire_at_ms".into(), json!(expire_at_ms));
            if !also_types.is_empty() {
                obj.insert(
                    "also_types".into(),
                    json!(also_types.iter().map(|t| t.as_str()).collect::<Vec<_>>()),
                );
            }
        }
        Op::Command { argv } => {
            obj.insert(
                "args".into(),
                Value::Array(argv.iter().map(|a| bytes_value(a)).collect()),
            );
        }
    }
    obj.insert("position".into(), position_value(&event.position));
    obj.insert("exec_time".into(), json!(event.exec_time));
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pika_migrate_core::event::{BinlogOffset, Part, TypeSet};

    /// A snapshot event at position 1:2 #3.
    fn snapshot(key: &'static [u8], chunk: Chunk, part: Part, expire: Option<i64>) -> Event {
        Event {
            db: 0,
            source_db: 0,
            key: Bytes::from_static(key),
            data_type: Some(chunk.data_type()),
            op: Op::Snapshot {
                chunk,
                part,
                expire_at_ms: expire,
                also_types: TypeSet::default(),
            },
            position: Position::Snapshot {
                at: BinlogOffset::new(1, 2),
                seq: 3,
            },
            exec_time: None,
        }
    }

    #[test]
    fn binary_bytes_are_marked_base64() {
        assert_eq!(bytes_value(b"abc"), json!("abc"));
        assert_eq!(bytes_value(b"\xff\x00"), json!({"base64": "/wA="}));
    }

    #[test]
    fn a_stream_chunk_is_its_entries_and_its_last_id() {
        use pika_migrate_core::event::{StreamEntry, StreamId};
        let entry = |ms, seq, fields: &[(&'static [u8], &'static [u8])]| StreamEntry {
            id: StreamId::new(ms, seq),
            fields: (fields.iter())
                .map(|(f, v)| (Bytes::from_static(f), Bytes::from_static(v)))
                .collect(),
        };
        let snap = snapshot(
            b"s",
            Chunk::Stream {
                entries: vec![
                    entry(1, 1, &[(b"a", b"1"), (b"b", b"\xff")]),
                    entry(1_700_000_000_000, 7, &[(b"e", b"")]),
                ],
                last_id: StreamId::new(1_700_000_000_001, 0),
            },
            Part::First,
            None,
        );
        assert_eq!(
            envelope(&snap),
            json!({"op": "snapshot", "db": 0, "key": "s", "type": "stream", "part": "first",
                   "value": [["1-1", [["a", "1"], ["b", {"base64": "/w=="}]]],
                             ["1700000000000-7", [["e", ""]]]],
                   "last_id": "1700000000001-0", "expire_at_ms": null,
                   "position": {"snapshot": {"filenum": 1, "offset": 2, "seq": 3}}, "exec_time": null})
        );
    }

    #[test]
    fn snapshot_and_command_envelopes() {
        let snap = snapshot(
            b"z",
            Chunk::Zset(vec![(Bytes::from_static(b"m"), f64::NEG_INFINITY)]),
            Part::Whole,
            Some(1000),
        );
        assert_eq!(
            envelope(&snap),
            json!({"op": "snapshot", "db": 0, "key": "z", "type": "zset", "part": "whole",
                   "value": [["m", "-inf"]], "expire_at_ms": 1000,
                   "position": {"snapshot": {"filenum": 1, "offset": 2, "seq": 3}}, "exec_time": null})
        );
        let cmd = Event {
            op: Op::Command {
                argv: vec![Bytes::from_static(b"DEL"), Bytes::from_static(b"z")],
            },
            data_type: None,
            position: Position::Binlog {
                at: BinlogOffset::new(1, 9),
                logic_id: 4,
                term: 0,
            },
            exec_time: Some(17),
            ..snap
        };
        assert_eq!(
            envelope(&cmd),
            json!({"op": "command", "db": 0, "key": "z", "type": null, "args": ["DEL", "z"],
                   "position": {"binlog": {"filenum": 1, "offset": 9, "logic_id": 4, "term": 0}}, "exec_time": 17})
        );
    }
}
