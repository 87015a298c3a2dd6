//! What the sink has gathered for one lane since its last dispatch. Small snapshot
//! commands safe to repeat are encoded straight into the lane's open run (`run`);
//! anything else closes the run first, so the lane's commands keep their order.

use bytes::{Bytes, BytesMut};
use pika_migrate_core::event::{BinlogOffset, DataType, Position};

use super::lane::{Args, LaneCommand};
use super::run::{Run, RunEntry};
use super::wire::{encode_into, packed_size, PACK_BLOCK};

/// Bytes after which a run is closed and a new one begun: a lane's pipeline takes
/// whole runs, and stays near its byte bound with runs this size.
const RUN_BYTES: usize = 128 << 10;

#[derive(Default)]
pub struct LaneQueue {
    commands: Vec<LaneCommand>,
    open: Option<OpenRun>,
    /// The open run's bytes; the room after them is where the next runs go.
    buf: BytesMut,
}

/// The run being filled: where its commands go and come from.
struct OpenRun {
    db: u32,
    source_db: u32,
    at: BinlogOffset,
    entries: Vec<RunEntry>,
}

/// A snapshot command for a run: its arguments and where it comes from and goes.
pub struct SnapshotCommand<'a> {
    pub argv: &'a [Bytes],
    pub writes: Option<DataType>,
    pub db: u32,
    pub source_db: u32,
    pub at: BinlogOffset,
    pub seq: u64,
}

impl LaneQueue {
    /// Queues a command after everything queued before.
    pub fn push(&mut self, command: LaneCommand) {
        self.close();
        self.commands.push(command);
    }

    /// Queues a small snapshot command safe to repeat, into the open run. A run holds
    /// at most `most` commands.
    pub fn push_snapshot(&mut self, command: SnapshotCommand<'_>, most: usize) {
        let fits = self.open.as_ref().is_some_and(|open| {
            open.db == command.db
                && open.source_db == command.source_db
                && open.at == command.at
                && open.entries.len() < most
                && self.buf.len() < RUN_BYTES
        });
        if !fits {
            self.close();
        }
        let size = packed_size(command.argv);
        if self.buf.capacity() - self.buf.len() < size {
            // A new block, the open run's bytes moved into it (runs are closed at each
            // dispatch, so they are short).
            let mut fresh = BytesMut::with_capacity((self.buf.len() + size).max(PACK_BLOCK));
            fresh.extend_from_slice(&self.buf);
            self.buf = fresh;
        }
        encode_into(&mut self.buf, command.argv, 1);
        let entry = RunEntry {
            end: self.buf.len(),
            seq: command.seq,
            writes: command.writes,
        };
        match &mut self.open {
            Some(open) => open.entries.push(entry),
            None => {
                self.open = Some(OpenRun {
                    db: command.db,
                    source_db: command.source_db,
                    at: command.at,
                    entries: vec![entry],
                })
            }
        }
    }

    /// Everything queued, the open run closed; the queue starts again empty, with room
    /// for as many commands.
    pub fn take(&mut self) -> Vec<LaneCommand> {
        self.close();
        let room = self.commands.len();
        std::mem::replace(&mut self.commands, Vec::with_capacity(room))
    }

    fn close(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        let bytes = self.buf.split().freeze();
        let seq = open.entries.last().map_or(0, |e| e.seq);
        self.commands.push(LaneCommand {
            argv: Args::Run(Run {
                bytes,
                entries: open.entries,
                at: open.at,
            }),
            key_index: Some(1),
            writes: None,
            idempotent: true,
            db: open.db,
            source_db: open.source_db,
            position: Position::Snapshot { at: open.at, seq },
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str) -> Vec<Bytes> {
        vec![
            Bytes::from_static(b"SET"),
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::from_static(b"v"),
        ]
    }

    fn snapshot(argv: &[Bytes], db: u32, seq: u64) -> SnapshotCommand<'_> {
        SnapshotCommand {
            argv,
            writes: Some(DataType::String),
            db,
            source_db: 0,
            at: BinlogOffset::default(),
            seq,
        }
    }

    #[test]
    fn snapshot_commands_gather_into_runs_that_keep_the_order_of_the_lane() {
        let mut queue = LaneQueue::default();
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            queue.push_snapshot(snapshot(&set(key), 0, i as u64), 2);
        }
        queue.push(LaneCommand {
            argv: Args::List(vec![Bytes::from_static(b"PING")]),
            key_index: None,
            writes: None,
            idempotent: false,
            db: 0,
            source_db: 0,
            position: Position::Snapshot {
                at: BinlogOffset::default(),
                seq: 3,
            },
        });
        queue.push_snapshot(snapshot(&set("d"), 1, 4), 2);
        let taken = queue.take();
        let shown: Vec<(usize, u32, u64)> = taken
            .iter()
            .map(|c| match c.position {
                Position::Snapshot { seq, .. } => (c.count(), c.db, seq),
                Position::Binlog { .. } => panic!("a snapshot command at {}", c.position),
            })
            .collect();
        // At most 2 per run; the PING closes one; another database opens another.
        assert_eq!(shown, [(2, 0, 1), (1, 0, 2), (1, 0, 3), (1, 1, 4)]);
        let Args::Run(run) = &taken[0].argv else {
            panic!("not a run: {:?}", taken[0].argv);
        };
        assert_eq!(
            &run.bytes[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nv\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\nv\r\n"
        );
        assert_eq!(run.first_key(), b"a");
        let keys: Vec<Bytes> = run
            .commands()
            .map(|(bytes, _, _)| pika_migrate_core::resp::parse_command(&bytes).unwrap()[1].clone())
            .collect();
        assert_eq!(keys, [Bytes::from("a"), Bytes::from("b")]);
        assert!(queue.take().is_empty());
    }

    #[test]
    fn a_run_outgrowing_its_block_moves_whole_into_a_new_one() {
        let mut queue = LaneQueue::default();
        let big = vec![
            Bytes::from_static(b"SET"),
            Bytes::from_static(b"k"),
            Bytes::from(vec![b'x'; 6000]),
        ];
        for seq in 0..40 {
            queue.push_snapshot(snapshot(&big, 0, seq), 1000);
        }
        let taken = queue.take();
        let total: usize = taken.iter().map(LaneCommand::count).sum();
        assert_eq!(total, 40);
        for c in &taken {
            let Args::Run(run) = &c.argv else {
                panic!("not a run");
            };
            for (bytes, _, _) in run.commands() {
                let argv = pika_migrate_core::resp::parse_command(&bytes).unwrap();
                assert_eq!(argv[2].len(), 6000);
            }
        }
    }
}
