//! A run: snapshot commands of one lane encoded back to back. Nearly all of a full sync
//! is small commands safe to repeat (DEL, SET, HSET, SADD, ZADD, PEXPIREAT); carried one
//! `LaneCommand` each, their moves, queues, per-command request building and reply
//! matching cost the sink about as much CPU as encoding them. A run is written as it is
//! and its replies are only checked for errors; it is taken apart into its commands
//! (`Lane::singles`) only where one needs handling on its own: a refused command, a
//! transaction, a cluster slot that moved.

use std::ops::Range;

use bytes::Bytes;
use pika_migrate_core::event::{BinlogOffset, DataType, Position};

/// Commands encoded as RESP back to back, with what each one needs to be handled alone.
#[derive(Debug, Clone)]
pub struct Run {
    pub bytes: Bytes,
    /// One per command, in order.
    pub entries: Vec<RunEntry>,
    /// The binlog position of the dump they come from.
    pub at: BinlogOffset,
}

/// One command of a run.
#[derive(Debug, Clone, Copy)]
pub struct RunEntry {
    /// Where it ends in the run's bytes (it starts where the one before ends).
    pub end: usize,
    /// The number of its snapshot event.
    pub seq: u64,
    /// The data type it writes, for a WRONGTYPE reply.
    pub writes: Option<DataType>,
}

impl Run {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where each command ends in `bytes`.
    pub fn ends(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries.iter().map(|e| e.end)
    }

    /// Each command: its bytes, and its position.
    pub fn commands(&self) -> impl Iterator<Item = (Bytes, &RunEntry, Position)> + '_ {
        let starts = std::iter::once(0).chain(self.ends());
        starts.zip(&self.entries).map(|(start, entry)| {
            let bytes = self.bytes.slice(start.min(entry.end)..entry.end);
            let position = Position::Snapshot {
                at: self.at,
                seq: entry.seq,
            };
            (bytes, entry, position)
        })
    }

    /// The first command's key (its second argument).
    pub fn first_key(&self) -> &[u8] {
        let end = self.entries.first().map_or(0, |e| e.end);
        let first = self.bytes.get(..end).unwrap_or_default();
        argument_at(first, 1)
            .and_then(|range| first.get(range))
            .unwrap_or_default()
    }
}

/// Where argument `index` sits in the RESP command `command` (None if it has not so
/// many, or is not a well-formed command).
pub fn argument_at(command: &[u8], index: usize) -> Option<Range<usize>> {
    let mut pos = 0;
    let count = number_line(command, &mut pos, b'*')?;
    if index >= count {
        return None;
    }
    for i in 0..=index {
        let len = number_line(command, &mut pos, b'$')?;
        let end = pos.checked_add(len)?;
        if i == index {
            return (end <= command.len()).then_some(pos..end);
        }
        pos = end.checked_add(2)?;
    }
    None
}

/// `<kind><digits>\r\n` at `*pos`: the number; `*pos` moves past the line.
fn number_line(bytes: &[u8], pos: &mut usize, kind: u8) -> Option<usize> {
    if bytes.get(*pos) != Some(&kind) {
        return None;
    }
    let mut after = *pos + 1;
    let n = pika_migrate_core::resp::read_line_number(bytes, &mut after)?;
    *pos = after;
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_argument_is_found_in_a_command_and_a_bad_one_is_none() {
        let cmd = b"*3\r\n$3\r\nSET\r\n$5\r\nuser1\r\n$2\r\nhi\r\n";
        assert_eq!(&cmd[argument_at(cmd, 1).unwrap()], b"user1");
        assert_eq!(&cmd[argument_at(cmd, 2).unwrap()], b"hi");
        assert_eq!(argument_at(cmd, 3), None);
        assert_eq!(argument_at(b"*2\r\n$3\r\nDEL\r\n$9\r\nk", 1), None);
        assert_eq!(argument_at(b"+OK\r\n", 0), None);
        assert_eq!(argument_at(b"*1\r\n$99999999999999999999\r\n", 0), None);
    }
}
