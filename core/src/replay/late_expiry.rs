//! Expiries that a late replay must not apply at once.
//!
//! A binlog replayed days after it was written carries `EXPIRE k 800000` made absolute
//! from its item's time: in the past by now. Sent as it is, the target deletes the key
//! at once, and a `PERSIST k` the master applied a minute later finds nothing. So an
//! expiry that was in the future when the master applied it, and is past at the moment
//! of the replay, is *held*: it is written as a marker expiry centuries ahead
//! ([`MARK_MS`] after the real time), which the target then treats as Redis treats any
//! expiry: a `PERSIST`, a `SET`, a `DEL`, a new `EXPIRE`, a collection emptied and made
//! again, all clear or replace it, and a `RENAME` carries it along. When the replay
//! reaches the master's items of that database at or past the expiry time (or the end
//! of the input), the key is *released*: a script deletes it only if it still carries a
//! marker, so whatever the master did in between decides, as it did on the master.
//!
//! What is held is remembered per key (and moved by `RENAME`), a few dozen bytes each,
//! up to [`HELD_BYTES`]: past it, the earliest expiries are released early (counted,
//! and said once in the log), which is exact unless the master cancelled one of them
//! later in the input.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;

use crate::event::{BinlogOffset, Event, Op, Position};

/// How far ahead a held expiry's marker is: about 279 years.
pub const MARK_MS: i64 = 1 << 43;
/// A key whose time to live exceeds this (about 139 years) carries a marker.
pub const MARK_THRESHOLD_MS: i64 = 1 << 42;
/// Deletes the key only if it still carries a marker expiry.
pub const RELEASE_SCRIPT: &str = "if redis.call('PTTL', KEYS[1]) > tonumber(ARGV[1]) then \
return redis.call('DEL', KEYS[1]) end return 0";
/// Memory the held expiries may take before the earliest are released early.
pub const HELD_BYTES: usize = 32 << 20;
/// Estimated memory of one held expiry besides its key (two map entries).
const ENTRY_OVERHEAD: usize = 96;
/// Releases given positions after a database's last item while its next item is not
/// known yet. Pika's smallest binlog item takes more bytes than this, so they sort
/// before whatever comes next.
const UNKNOWN_GAP: u64 = 32;

/// What the held expiries did in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LateExpiryStats {
    /// Expiries past at the replay moment but not when the master applied them.
    pub held: u64,
    /// Held keys released (deleted unless the master had cancelled the expiry).
    pub released: u64,
    /// Released before the input reached their time, because too many were held.
    pub released_early: u64,
    /// Held expiries a later command of the input replaced or cleared.
    pub cancelled: u64,
}

impl LateExpiryStats {
    pub fn add(&mut self, other: &LateExpiryStats) {
        self.held += other.held;
        self.released += other.released;
        self.released_early += other.released_early;
        self.cancelled += other.cancelled;
    }
}

type HeldKey = (u32, Bytes);

/// The held expiries and where the releases of each database may be placed.
#[derive(Debug, Default)]
pub struct LateExpiries {
    /// Per (db, key), the real expiry time in unix milliseconds.
    at: HashMap<HeldKey, i64>,
    /// Per db, where a resumed read must start to see each held expiry again (the end
    /// of the item before it), with how many held expiries started there.
    resume: HashMap<u32, std::collections::BTreeMap<BinlogOffset, usize>>,
    /// Per (db, key), that start.
    started: HashMap<HeldKey, BinlogOffset>,
    /// The same, ordered by time.
    by_time: BTreeSet<(i64, u32, Bytes)>,
    bytes: usize,
    /// Per db, the position of its last event and how many releases followed it (a
    /// few databases: a list is quicker than a map for every item).
    last: Vec<(u32, Position, u64)>,
    stats: LateExpiryStats,
    warned_early: bool,
}

impl LateExpiries {
    pub fn stats(&self) -> LateExpiryStats {
        self.stats
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Remembers that `key` of `db` now carries a marker for an expiry at `at_ms`, set
    /// by the item after `db`'s last one.
    pub fn hold(&mut self, db: u32, key: &Bytes, at_ms: i64) {
        let start = self.last_of(db).map(|(last, _)| last.binlog_offset());
        self.hold_from(db, key, at_ms, start);
        self.stats.held += 1;
    }

    fn hold_from(&mut self, db: u32, key: &Bytes, at_ms: i64, start: Option<BinlogOffset>) {
        // Its own memory: a slice would keep a whole binlog block alive.
        let key = Bytes::copy_from_slice(key);
        self.forget(db, &key);
        self.bytes += key.len() + ENTRY_OVERHEAD;
        self.by_time.insert((at_ms, db, key.clone()));
        if let Some(start) = start {
            *self.resume.entry(db).or_default().entry(start).or_insert(0) += 1;
            self.started.insert((db, key.clone()), start);
        }
        self.at.insert((db, key), at_ms);
    }

    fn forget(&mut self, db: u32, key: &[u8]) -> Option<(i64, Option<BinlogOffset>)> {
        let (held, at) = self.at.remove_entry(&(db, Bytes::copy_from_slice(key)))?;
        self.by_time.remove(&(at, db, held.1.clone()));
        self.bytes -= held.1.len() + ENTRY_OVERHEAD;
        let start = self.started.remove(&held);
        if let Some(start) = start {
            if let Some(starts) = self.resume.get_mut(&db) {
                if let Some(n) = starts.get_mut(&start) {
                    *n -= 1;
                    if *n == 0 {
                        starts.remove(&start);
                    }
                }
            }
        }
        Some((at, start))
    }

    /// Where a read of `db` stopped before its end must resume so that the expiries
    /// still held are read (and held) again: the start of the earliest one's item.
    pub fn resume_point(&self, db: u32) -> Option<BinlogOffset> {
        self.resume.get(&db)?.keys().next().copied()
    }

    fn last_of(&self, db: u32) -> Option<(Position, u64)> {
        self.last
            .iter()
            .find(|(d, _, _)| *d == db)
            .map(|(_, last, used)| (*last, *used))
    }

    /// A command that clears or replaces `key`'s expiry (the marker is gone on the
    /// target too): nothing to release any more.
    pub fn cancel(&mut self, db: u32, key: &[u8]) {
        if self.forget(db, key).is_some() {
            self.stats.cancelled += 1;
        }
    }

    /// `RENAME from to`: the marker moves with the value; `to`'s own is overwritten.
    pub fn rename(&mut self, db: u32, from: &[u8], to: &Bytes, keep_source: bool) {
        let held = (db, Bytes::copy_from_slice(from));
        let moved = if keep_source {
            self.at
                .get(&held)
                .map(|at| (*at, self.started.get(&held).copied()))
        } else {
            self.forget(db, from)
        };
        if let Some((at, start)) = moved {
            self.hold_from(db, to, at, start);
        } else if !keep_source {
            self.cancel(db, to);
        }
    }

    /// Everything of `db` is gone (`FLUSHDB`), or of every database.
    pub fn clear(&mut self, db: Option<u32>) {
        let gone: Vec<HeldKey> = self
            .at
            .keys()
            .filter(|(d, _)| db.is_none_or(|db| *d == db))
            .cloned()
            .collect();
        for (d, key) in gone {
            self.cancel(d, &key);
        }
    }

    /// Notes where `db`'s input starts, before any event of it.
    pub fn starts_at(&mut self, db: u32, at: BinlogOffset) {
        if self.last_of(db).is_none() {
            self.last.push((
                db,
                Position::Binlog {
                    at,
                    logic_id: 0,
                    term: 0,
                },
                0,
            ));
        }
    }

    /// Notes that `event` is the last one of its database passed on.
    pub fn passed(&mut self, event: &Event) {
        match self.last.iter_mut().find(|(db, _, _)| *db == event.db) {
            Some(last) => *last = (event.db, event.position, 0),
            None => self.last.push((event.db, event.position, 0)),
        }
    }

    /// Releases of `db` due before its event at `next` (its time `now_ms`): every
    /// held key whose expiry is at or before that time, then the earliest ones while
    /// too many are held. Keys in `touched` (the keys of that event) go first: they
    /// must be gone before it runs. What does not fit between the last position and
    /// `next` waits for the next chance.
    pub fn release_before(
        &mut self,
        db: u32,
        next: &Position,
        now_ms: i64,
        touched: &[Bytes],
        out: &mut Vec<Event>,
    ) {
        let mut due: Vec<(i64, Bytes, bool)> = self
            .by_time
            .iter()
            .filter(|(_, d, _)| *d == db)
            .take_while(|(at, _, _)| *at <= now_ms)
            .map(|(at, _, key)| (*at, key.clone(), false))
            .collect();
        let mut over = self.bytes.saturating_sub(HELD_BYTES);
        if over > 0 {
            for (at, _, key) in self.by_time.iter().filter(|(_, d, _)| *d == db) {
                if over == 0 {
                    break;
                }
                if *at > now_ms {
                    over = over.saturating_sub(key.len() + ENTRY_OVERHEAD);
                    due.push((*at, key.clone(), true));
                }
            }
        }
        if due.is_empty() {
            return;
        }
        // Stable: the touched keys first, each group in time order.
        due.sort_by_key(|(_, key, _)| !touched.contains(key));
        let room = self.room(db, Some(next));
        for (i, (at, key, early)) in due.into_iter().enumerate() {
            let must = touched.contains(&key);
            if i as u64 >= room && !must {
                break;
            }
            if early {
                self.stats.released_early += 1;
                if !self.warned_early {
                    self.warned_early = true;
                    tracing::warn!(
                        held_bytes = self.bytes,
                        "too many held expiries: the earliest are released before the input reaches their time (exact unless the master cancelled them later)"
                    );
                }
            }
            self.release(db, key, at, out);
        }
    }

    /// At the end of what there is to read for now (`follow`): releases every held key
    /// whose time has come at `now_ms`, as far as positions allow before the next item.
    pub fn release_caught_up(&mut self, now_ms: i64, out: &mut Vec<Event>) {
        self.release_all_due(now_ms, false, out);
    }

    /// At the end of the input: every held key is released.
    pub fn release_at_end(&mut self, out: &mut Vec<Event>) {
        self.release_all_due(i64::MAX, true, out);
    }

    fn release_all_due(&mut self, now_ms: i64, at_end: bool, out: &mut Vec<Event>) {
        let due: Vec<(i64, u32, Bytes)> = self
            .by_time
            .iter()
            .take_while(|(at, _, _)| *at <= now_ms)
            .cloned()
            .collect();
        for (at, db, key) in due {
            let room = if at_end {
                u64::MAX
            } else {
                self.room(db, None)
            };
            if room > 0 {
                self.release(db, key, at, out);
            }
        }
    }

    /// How many releases still fit after `db`'s last event, before `next`.
    fn room(&self, db: u32, next: Option<&Position>) -> u64 {
        let Some((last, used)) = self.last_of(db) else {
            return 0;
        };
        let (from, to) = (last.binlog_offset(), next.map(Position::binlog_offset));
        let gap = match to {
            Some(to) if to.filenum > from.filenum => u64::MAX,
            Some(to) => to.offset.saturating_sub(from.offset).saturating_sub(1),
            None => UNKNOWN_GAP,
        };
        gap.saturating_sub(used)
    }

    fn release(&mut self, db: u32, key: Bytes, at_ms: i64, out: &mut Vec<Event>) {
        self.forget(db, &key);
        let Some((_, last, used)) = self.last.iter_mut().find(|(d, _, _)| *d == db) else {
            return;
        };
        *used += 1;
        let base = last.binlog_offset();
        let position = Position::Binlog {
            at: BinlogOffset::new(base.filenum, base.offset.saturating_add(*used)),
            logic_id: 0,
            term: 0,
        };
        self.stats.released += 1;
        out.push(Event {
            db,
            source_db: db,
            key: key.clone(),
            data_type: None,
            op: Op::Command {
                argv: release_command(key),
            },
            position,
            exec_time: u32::try_from(at_ms.div_euclid(1000)).ok(),
        });
    }
}

/// The command that deletes `key` if it still carries a marker.
pub fn release_command(key: Bytes) -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"EVAL"),
        Bytes::from_static(RELEASE_SCRIPT.as_bytes()),
        Bytes::from_static(b"1"),
        key,
        Bytes::from(MARK_THRESHOLD_MS.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Position {
        Position::Binlog {
            at: BinlogOffset::new(1, offset),
            logic_id: offset,
            term: 0,
        }
    }

    fn event(db: u32, offset: u64) -> Event {
        Event {
            db,
            source_db: db,
            key: Bytes::from_static(b"x"),
            data_type: None,
            op: Op::Command { argv: vec![] },
            position: at(offset),
            exec_time: Some(0),
        }
    }

    fn keys(out: &[Event]) -> Vec<(&[u8], BinlogOffset)> {
        out.iter()
            .map(|e| (&e.key[..], e.position.binlog_offset()))
            .collect()
    }

    #[test]
    fn due_keys_are_released_between_the_last_item_and_the_next_touched_ones_first() {
        let mut held = LateExpiries::default();
        held.passed(&event(0, 1000));
        held.hold(0, &Bytes::from_static(b"a"), 5_000);
        held.hold(0, &Bytes::from_static(b"b"), 6_000);
        held.hold(0, &Bytes::from_static(b"c"), 9_000);
        let mut out = Vec::new();
        held.release_before(0, &at(1100), 6_000, &[Bytes::from_static(b"b")], &mut out);
        assert_eq!(
            keys(&out),
            [
                (&b"b"[..], BinlogOffset::new(1, 1001)),
                (&b"a"[..], BinlogOffset::new(1, 1002))
            ]
        );
        assert_eq!(held.len(), 1);
        // Only three positions lie between 1000 and 1004: c waits though due.
        held.passed(&event(0, 1100));
        held.hold(0, &Bytes::from_static(b"d"), 7_000);
        held.hold(0, &Bytes::from_static(b"e"), 7_000);
        held.hold(0, &Bytes::from_static(b"f"), 7_000);
        held.hold(0, &Bytes::from_static(b"g"), 7_000);
        let mut out = Vec::new();
        held.release_before(0, &at(1104), 9_000, &[], &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].position.binlog_offset(), BinlogOffset::new(1, 1103));
        // The end of the input releases the rest, after the last position.
        held.passed(&event(0, 1104));
        let mut out = Vec::new();
        held.release_at_end(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(held.stats().released, 7);
        assert_eq!(held.resume_point(0), None);
        assert!(held.is_empty());
    }

    #[test]
    fn databases_release_only_before_their_own_items() {
        let mut held = LateExpiries::default();
        held.passed(&event(0, 1000));
        held.passed(&event(1, 50));
        held.hold(1, &Bytes::from_static(b"k"), 5_000);
        let mut out = Vec::new();
        held.release_before(0, &at(1100), 9_000, &[], &mut out);
        assert!(out.is_empty());
        held.release_before(1, &at(90), 9_000, &[], &mut out);
        assert_eq!(
            (out[0].db, out[0].position.binlog_offset()),
            (1, BinlogOffset::new(1, 51))
        );
    }

    #[test]
    fn renames_move_the_hold_and_cancels_forget_it() {
        let mut held = LateExpiries::default();
        held.passed(&event(0, 1000));
        held.hold(0, &Bytes::from_static(b"a"), 5_000);
        held.passed(&event(0, 1050));
        held.hold(0, &Bytes::from_static(b"b"), 5_000);
        assert_eq!(held.resume_point(0), Some(BinlogOffset::new(1, 1000)));
        held.rename(0, b"a", &Bytes::from_static(b"z"), false);
        // Moved, it still needs the read from where it was held.
        assert_eq!(held.resume_point(0), Some(BinlogOffset::new(1, 1000)));
        held.cancel(0, b"b");
        let mut out = Vec::new();
        held.release_at_end(&mut out);
        assert_eq!(keys(&out), [(&b"z"[..], BinlogOffset::new(1, 1051))]);
        let stats = held.stats();
        assert_eq!((stats.held, stats.cancelled, stats.released), (2, 1, 1));
    }

    #[test]
    fn past_the_memory_bound_the_earliest_are_released_early() {
        let mut held = LateExpiries::default();
        held.passed(&event(0, 1000));
        let big = Bytes::from(vec![b'k'; HELD_BYTES]);
        held.hold(0, &big, 8_000);
        held.hold(0, &Bytes::from_static(b"later"), 9_000);
        let mut out = Vec::new();
        held.release_before(0, &at(2000), 1_000, &[], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key.len(), HELD_BYTES);
        assert_eq!(held.stats().released_early, 1);
        assert_eq!(held.len(), 1);
    }

    #[test]
    fn caught_up_releases_stay_below_the_smallest_next_item() {
        let mut held = LateExpiries::default();
        held.passed(&event(0, 1000));
        for i in 0..40u8 {
            held.hold(0, &Bytes::from(vec![i]), 5_000);
        }
        let mut out = Vec::new();
        held.release_caught_up(9_000, &mut out);
        assert_eq!(out.len() as u64, UNKNOWN_GAP);
        assert_eq!(
            out.last().unwrap().position.binlog_offset(),
            BinlogOffset::new(1, 1000 + UNKNOWN_GAP)
        );
    }
}
