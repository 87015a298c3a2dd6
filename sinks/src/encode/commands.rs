//! Events as the Redis commands that rebuild them: a snapshot key becomes DEL, then
//! SET/APPEND, HSET, RPUSH, SADD or ZADD chunks (a stream: one XADD per entry, then
//! XSETID to its last generated id), then PEXPIREAT; a binlog event is the command it
//! carries.
//!
//! Pika lets one key name hold several types, Redis does not. The snapshot tells each
//! key which other types it has, so the policy is applied here without remembering keys.

use bytes::Bytes;
use pika_migrate_core::display::display_key;
use pika_migrate_core::event::{Chunk, DataType, Event, Op, Part, StreamEntry, StreamId};
use serde::Deserialize;

/// What to do when a key exists as several types in the source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TypeConflict {
    /// Keep the type Pika's `TYPE` shows (string, hash, list, zset, set order); skip the others.
    #[default]
    FirstWins,
    /// Write every type in that order; the last one replaces the others.
    Overwrite,
    /// Write the first type under the key, each later one under `key:<type>`.
    Suffix,
}

/// Counts of what the encoder skipped or renamed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConflictStats {
    /// (key, type) pairs skipped by `first-wins`.
    pub skipped: u64,
    /// (key, type) pairs written under a suffixed name.
    pub renamed: u64,
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

pub use pika_migrate_core::resp::score_text;

/// Appends the commands for `event` to `out` as RESP (`scratch` holds them meanwhile).
pub fn event_resp(
    event: Event,
    policy: TypeConflict,
    stats: &mut ConflictStats,
    scratch: &mut Vec<Vec<Bytes>>,
    out: &mut Vec<u8>,
) {
    scratch.clear();
    event_commands(event, policy, stats, false, scratch);
    for argv in scratch.iter() {
        pika_migrate_core::resp::encode_command(out, argv);
    }
}

/// Appends the commands for `event` to `out`, moving its keys and values into them.
/// `target_empty`: the target held nothing when this dump began loading, so a snapshot key needs
/// no DEL before its first chunk (unless it must replace another type of the same name
/// this run wrote: `overwrite`).
pub fn event_commands(
    event: Event,
    policy: TypeConflict,
    stats: &mut ConflictStats,
    target_empty: bool,
    out: &mut Vec<Vec<Bytes>>,
) {
    let Some((chunk, part, expire_at_ms, also)) = snapshot_of(event.op, out) else {
        return;
    };
    let t = chunk.data_type();
    let mut key = event.key;
    if let Some(first) = also.first_before(t) {
        match policy {
            TypeConflict::FirstWins => {
                if part.starts_key() {
                    stats.skipped += 1;
                    let second = also.iter().chain([t]).filter(|x| *x != first).min();
                    if second == Some(t) {
                        let types: Vec<&str> =
                            also.iter().chain([t]).map(DataType::as_str).collect();
                        tracing::warn!(
                            key = %display_key(&key),
                            types = %types.join(","),
                            kept = first.as_str(),
                            "key exists as several types in Pika; keeping the first (type_conflict: first-wins)"
                        );
                    }
                }
                return;
            }
            TypeConflict::Suffix => {
                if part.starts_key() {
                    stats.renamed += 1;
                }
                let mut suffixed = Vec::with_capacity(key.len() + 8);
                suffixed.extend_from_slice(&key);
                suffixed.push(b':');
                suffixed.extend_from_slice(t.as_str().as_bytes());
                key = Bytes::from(suffixed);
            }
            TypeConflict::Overwrite => {}
        }
    }
    let starts = part.starts_key();
    let nothing_to_clear = target_empty && (also.is_empty() || policy != TypeConflict::Overwrite);
    if starts && t != DataType::String && !nothing_to_clear {
        out.push(vec![b("DEL"), key.clone()]);
    }
    chunk_with_expiry(key, chunk, part, expire_at_ms, out);
}

/// The commands for `event` on a target that keeps each type of a name apart, as Pika
/// 3.x does: every type is written under the key itself (no policy applies), and a DEL
/// (which empties every type of the name there) goes only before the name's first type,
/// so it never removes a type written earlier in the same scan.
pub fn event_commands_keeping_types(event: Event, target_empty: bool, out: &mut Vec<Vec<Bytes>>) {
    let Some((chunk, part, expire_at_ms, also)) = snapshot_of(event.op, out) else {
        return;
    };
    let first_type = also.first_before(chunk.data_type()).is_none();
    if part.starts_key() && first_type && !target_empty {
        out.push(vec![b("DEL"), event.key.clone()]);
    }
    chunk_with_expiry(event.key, chunk, part, expire_at_ms, out);
}

/// A snapshot event's parts; a binlog command goes to `out` as it is (`None`).
fn snapshot_of(
    op: Op,
    out: &mut Vec<Vec<Bytes>>,
) -> Option<(Chunk, Part, Option<i64>, pika_migrate_core::event::TypeSet)> {
    match op {
        Op::Command { argv } => {
            out.push(argv);
            None
        }
        Op::Snapshot {
            chunk,
            part,
            expire_at_ms,
            also_types,
        } => Some((chunk, part, expire_at_ms, also_types)),
    }
}

/// A chunk's command, then the key's expiry after its last chunk.
fn chunk_with_expiry(
    key: Bytes,
    chunk: Chunk,
    part: Part,
    expire_at_ms: Option<i64>,
    out: &mut Vec<Vec<Bytes>>,
) {
    match expire_at_ms.filter(|_| part.ends_key()) {
        Some(ms) => {
            chunk_command(key.clone(), chunk, part, out);
            out.push(vec![b("PEXPIREAT"), key, Bytes::from(ms.to_string())]);
        }
        None => chunk_command(key, chunk, part, out),
    }
}

fn chunk_command(key: Bytes, chunk: Chunk, part: Part, out: &mut Vec<Vec<Bytes>>) {
    if chunk.is_empty() {
        return;
    }
    if let Chunk::Stream { entries, last_id } = chunk {
        stream_commands(key, entries, last_id, part, out);
        return;
    }
    let mut argv = Vec::with_capacity(2 + chunk.len() * 2);
    match chunk {
        Chunk::String(value) => {
            argv.push(if part.starts_key() {
                b("SET")
            } else {
                b("APPEND")
            });
            argv.push(key);
            argv.push(value);
        }
        Chunk::Hash(pairs) => {
            argv.push(b("HSET"));
            argv.push(key);
            for (field, value) in pairs {
                argv.push(field);
                argv.push(value);
            }
        }
        Chunk::List(items) => {
            argv.push(b("RPUSH"));
            argv.push(key);
            argv.extend(items);
        }
        Chunk::Set(items) => {
            argv.push(b("SADD"));
            argv.push(key);
            argv.extend(items);
        }
        Chunk::Zset(members) => {
            argv.push(b("ZADD"));
            argv.push(key);
            for (member, score) in members {
                argv.push(score_text(score));
                argv.push(member);
            }
        }
        Chunk::Stream { .. } => {}
    }
    out.push(argv);
}

/// Each entry as `XADD key id field value …` with its own id; after the stream's last
/// entry, `XSETID key last_id` when the source generated ids past it (its newest entries
/// were deleted), so the next `XADD *` on the target generates what the source would.
fn stream_commands(
    key: Bytes,
    entries: Vec<StreamEntry>,
    last_id: StreamId,
    part: Part,
    out: &mut Vec<Vec<Bytes>>,
) {
    let newest = entries.last().map(|e| e.id);
    for entry in entries {
        let mut argv = Vec::with_capacity(3 + entry.fields.len() * 2);
        argv.push(b("XADD"));
        argv.push(key.clone());
        argv.push(Bytes::from(entry.id.to_string()));
        for (field, value) in entry.fields {
            argv.push(field);
            argv.push(value);
        }
        out.push(argv);
    }
    if part.ends_key() && newest.is_some_and(|id| last_id > id) {
        out.push(vec![b("XSETID"), key, Bytes::from(last_id.to_string())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pika_migrate_core::event::{BinlogOffset, Position, TypeSet};

    fn snapshot(
        key: &str,
        chunk: Chunk,
        part: Part,
        expire: Option<i64>,
        also: &[DataType],
    ) -> Event {
        let mut also_types = TypeSet::default();
        for t in also {
            also_types.insert(*t);
        }
        Event {
            db: 0,
            source_db: 0,
            key: Bytes::copy_from_slice(key.as_bytes()),
            data_type: Some(chunk.data_type()),
            op: Op::Snapshot {
                chunk,
                part,
                expire_at_ms: expire,
                also_types,
            },
            position: Position::Snapshot {
                at: BinlogOffset::default(),
                seq: 0,
            },
            exec_time: None,
        }
    }

    fn text(cmds: &[Vec<Bytes>]) -> Vec<String> {
        cmds.iter()
            .map(|c| {
                c.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    fn run(events: &[Event], policy: TypeConflict) -> (Vec<String>, ConflictStats) {
        let (mut out, mut stats) = (Vec::new(), ConflictStats::default());
        for e in events {
            event_commands(e.clone(), policy, &mut stats, false, &mut out);
        }
        (text(&out), stats)
    }

    #[test]
    fn rebuilds_chunked_values_then_sets_expiry() {
        let zset = Chunk::Zset(vec![(b("a"), f64::NEG_INFINITY), (b("b"), 1.5)]);
        let events = [
            snapshot("z", zset, Part::First, Some(5000), &[]),
            snapshot(
                "z",
                Chunk::Zset(vec![(b("c"), f64::INFINITY)]),
                Part::Last,
                Some(5000),
                &[],
            ),
            snapshot("s", Chunk::String(b("ab")), Part::First, None, &[]),
            snapshot("s", Chunk::String(b("cd")), Part::Last, None, &[]),
        ];
        let (cmds, _) = run(&events, TypeConflict::FirstWins);
        assert_eq!(
            cmds,
            [
                "DEL z",
                "ZADD z -inf a 1.5 b",
                "ZADD z inf c",
                "PEXPIREAT z 5000",
                "SET s ab",
                "APPEND s cd"
            ]
        );
    }

    /// An entry's ms, seq and field/value pairs.
    type Entry<'a> = (u64, u64, &'a [(&'static str, &'static str)]);

    fn stream(entries: &[Entry], last: StreamId) -> Chunk {
        Chunk::Stream {
            entries: entries
                .iter()
                .map(|(ms, seq, fields)| StreamEntry {
                    id: StreamId::new(*ms, *seq),
                    fields: fields.iter().map(|(f, v)| (b(f), b(v))).collect(),
                })
                .collect(),
            last_id: last,
        }
    }

    #[test]
    fn a_stream_is_one_xadd_per_entry_then_its_last_id_when_higher() {
        let last = StreamId::new(9, 4);
        let events = [
            snapshot(
                "x",
                stream(
                    &[(1, 0, &[("a", "1"), ("b", "2")]), (1, 1, &[("c", "")])],
                    last,
                ),
                Part::First,
                None,
                &[],
            ),
            snapshot(
                "x",
                stream(&[(5, 0, &[("d", "4")])], last),
                Part::Last,
                None,
                &[],
            ),
            // Its newest entry is its last id: nothing to set.
            snapshot(
                "y",
                stream(&[(3, 7, &[("f", "v")])], StreamId::new(3, 7)),
                Part::Whole,
                None,
                &[],
            ),
        ];
        let (cmds, _) = run(&events, TypeConflict::FirstWins);
        assert_eq!(
            cmds,
            [
                "DEL x",
                "XADD x 1-0 a 1 b 2",
                "XADD x 1-1 c ",
                "XADD x 5-0 d 4",
                "XSETID x 9-4",
                "DEL y",
                "XADD y 3-7 f v",
            ]
        );
        // A stream that also is a string in Pika: first-wins keeps the string.
        let (cmds, stats) = run(
            &[snapshot(
                "m",
                stream(&[(1, 0, &[("f", "v")])], StreamId::new(1, 0)),
                Part::Whole,
                None,
                &[DataType::String],
            )],
            TypeConflict::FirstWins,
        );
        assert!(cmds.is_empty());
        assert_eq!(stats.skipped, 1);
    }

    #[test]
    fn an_empty_target_needs_no_del_unless_another_type_is_replaced() {
        let hash = |also: &[DataType]| {
            snapshot(
                "h",
                Chunk::Hash(vec![(b("f"), b("v"))]),
                Part::Whole,
                None,
                also,
            )
        };
        let commands = |e: &Event, policy| {
            let (mut out, mut stats) = (Vec::new(), ConflictStats::default());
            event_commands(e.clone(), policy, &mut stats, true, &mut out);
            text(&out)
        };
        assert_eq!(
            commands(&hash(&[]), TypeConflict::FirstWins),
            ["HSET h f v"]
        );
        assert_eq!(
            commands(&hash(&[DataType::String]), TypeConflict::Overwrite),
            ["DEL h", "HSET h f v"]
        );
    }

    #[test]
    fn applies_each_type_conflict_policy() {
        let events = [
            snapshot(
                "m",
                Chunk::String(b("v")),
                Part::Whole,
                None,
                &[DataType::Hash, DataType::Set],
            ),
            snapshot(
                "m",
                Chunk::Hash(vec![(b("f"), b("v"))]),
                Part::Whole,
                None,
                &[DataType::String, DataType::Set],
            ),
            snapshot(
                "m",
                Chunk::Set(vec![b("x")]),
                Part::Whole,
                None,
                &[DataType::String, DataType::Hash],
            ),
        ];
        let (first, stats) = run(&events, TypeConflict::FirstWins);
        assert_eq!((first, stats.skipped), (vec!["SET m v".to_owned()], 2));
        let (over, _) = run(&events, TypeConflict::Overwrite);
        assert_eq!(
            over,
            ["SET m v", "DEL m", "HSET m f v", "DEL m", "SADD m x"]
        );
        let (suffix, stats) = run(&events, TypeConflict::Suffix);
        assert_eq!(
            suffix,
            [
                "SET m v",
                "DEL m:hash",
                "HSET m:hash f v",
                "DEL m:set",
                "SADD m:set x"
            ]
        );
        assert_eq!(stats.renamed, 2);
    }
}
