//! What a plugin hands back: replacement events and messages through the host's
//! callbacks, and a verdict, for any event it was lent.

use arbitrary::Unstructured;
use bytes::Bytes;
use pika_migrate_core::event::{
    BinlogOffset, Chunk, Event, Op, Part, Position, StreamEntry, StreamId,
};
use pika_migrate_core::filter::plugin::Reply;
use pika_migrate_core::filter::Outcome;
use pika_migrate_plugin::abi::{self, PmBytes};

use crate::events;

fn bytes(u: &mut Unstructured) -> arbitrary::Result<Bytes> {
    Ok(Bytes::from(u.arbitrary::<Vec<u8>>()?))
}

/// The event lent to the plugin: a snapshot chunk of any type, or a command.
fn lent(u: &mut Unstructured) -> arbitrary::Result<Event> {
    let chunk = match u.int_in_range(0..=6u8)? {
        0 => Chunk::String(bytes(u)?),
        1 => Chunk::Hash(vec![(bytes(u)?, bytes(u)?)]),
        2 => Chunk::List(vec![bytes(u)?]),
        3 => Chunk::Set(vec![bytes(u)?]),
        4 => Chunk::Zset(vec![(bytes(u)?, u.arbitrary()?)]),
        5 => {
            let id = StreamId::new(u.arbitrary()?, u.arbitrary()?);
            Chunk::Stream {
                entries: vec![StreamEntry {
                    id,
                    fields: vec![(bytes(u)?, bytes(u)?)],
                }],
                last_id: StreamId::new(id.ms, id.seq.saturating_add(u.arbitrary::<u8>()?.into())),
            }
        }
        _ => {
            return Ok(Event {
                db: 0,
                source_db: 0,
                key: bytes(u)?,
                data_type: None,
                op: Op::Command {
                    argv: vec![Bytes::from_static(b"DEL"), bytes(u)?],
                },
                position: Position::Binlog {
                    at: BinlogOffset::new(1, 2),
                    logic_id: 3,
                    term: 0,
                },
                exec_time: Some(1_700_000_000),
            })
        }
    };
    Ok(Event {
        db: 0,
        source_db: 0,
        key: bytes(u)?,
        data_type: Some(chunk.data_type()),
        op: Op::Snapshot {
            chunk,
            part: Part::Whole,
            expire_at_ms: None,
            also_types: Default::default(),
        },
        position: Position::Snapshot {
            at: BinlogOffset::new(1, 2),
            seq: 0,
        },
        exec_time: None,
    })
}

/// Calls a plugin makes, in order.
enum Call {
    Emit(Vec<u8>, Vec<Vec<u8>>),
    Error(Vec<u8>),
}

/// Values a plugin emits: often scores in text, as a zset replacement needs.
fn value(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    const SCORES: &[&str] = &[
        "1", "-inf", "+inf", "inf", "nan", "1e400", " 2 ", "0x10", "",
    ];
    Ok(if u.ratio(1, 3)? {
        u.choose(SCORES)?.as_bytes().to_vec()
    } else {
        u.arbitrary()?
    })
}

fn calls(u: &mut Unstructured) -> arbitrary::Result<Vec<Call>> {
    let mut calls = Vec::new();
    for _ in 0..u.int_in_range(0..=4u8)? {
        calls.push(if u.ratio(4, 5)? {
            let n = u.int_in_range(0..=5u8)?;
            let values = (0..n).map(|_| value(u)).collect::<Result<_, _>>()?;
            Call::Emit(u.arbitrary()?, values)
        } else {
            Call::Error(u.arbitrary()?)
        });
    }
    Ok(calls)
}

/// Replays made-up plugin calls through the real host callbacks, then checks what the
/// host makes of them: a replacement keeps a snapshot's type and gives a command a
/// name; a plugin's error reaches the operator as a message.
pub fn reply(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(event), Ok(calls), Ok(verdict)) = (lent(&mut u), calls(&mut u), u.arbitrary::<u8>())
    else {
        return;
    };
    let verdict = match verdict % 6 {
        5 => u32::from(verdict) << 8,
        v => u32::from(v),
    };
    let mut reply = Reply::default();
    // SAFETY: `reply` lives and is left alone while the table is used, as during a
    // plugin call; every slice handed to a callback lives until it returns.
    unsafe {
        let host = reply.host();
        for call in &calls {
            match call {
                Call::Emit(key, values) => {
                    let lent: Vec<PmBytes> =
                        values.iter().map(|v| PmBytes::from_slice(v)).collect();
                    (host.emit)(
                        host.ctx,
                        PmBytes::from_slice(key),
                        lent.as_ptr(),
                        lent.len(),
                    );
                }
                Call::Error(message) => (host.error)(host.ctx, PmBytes::from_slice(message)),
            }
        }
    }
    match reply.outcome(verdict, &event) {
        Ok(Outcome::Replace(replacements)) => {
            assert_eq!(verdict, abi::VERDICT_REPLACE);
            for e in &replacements {
                match (&e.op, &event.op) {
                    (Op::Snapshot { chunk, .. }, Op::Snapshot { chunk: was, .. }) => {
                        assert_eq!(chunk.data_type(), was.data_type())
                    }
                    (Op::Command { argv }, Op::Command { .. }) => assert!(!argv.is_empty()),
                    _ => panic!("a replacement of another kind"),
                }
                events::downstream(e);
            }
        }
        Ok(_) => assert!(verdict == abi::VERDICT_KEEP || verdict == abi::VERDICT_DROP),
        Err(message) => assert!(!message.is_empty() || verdict == abi::VERDICT_ERROR),
    }
}
