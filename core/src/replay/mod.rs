//! Offline sources read at a later moment than they were written: the moment they are
//! read as of ([`clock`]), and the expiries a late replay must hold back
//! ([`late_expiry`]). The snapshot, binlog and capture sources pass their events
//! through a [`Replay`]; the live replica does not (its items arrive in time).

pub mod clock;
pub mod late_expiry;

use bytes::Bytes;

use crate::event::{Event, Op};
use crate::pika::commands::{self, CommandName};

pub use clock::{AsOf, ReplayClock};
pub use late_expiry::{LateExpiries, LateExpiryStats};

/// Which argument of a command is an absolute expiry, and in which unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Millis,
    Seconds,
}

#[derive(Debug, Clone, Copy)]
struct ExpiryArg {
    index: usize,
    unit: Unit,
    at_ms: i64,
}

fn int(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// The absolute expiry a normalized command sets: `PEXPIREAT k ms`, `EXPIREAT k s`,
/// `SET k v … PXAT ms|EXAT s`, and the compare-and-set script of Pika's `SET … VX`.
fn expiry_arg(name: &str, argv: &[Bytes]) -> Option<ExpiryArg> {
    let at = |index: usize, unit: Unit| {
        let n = int(argv.get(index)?)?;
        let at_ms = match unit {
            Unit::Millis => n,
            Unit::Seconds => n.checked_mul(1000)?,
        };
        Some(ExpiryArg { index, unit, at_ms })
    };
    match (name, argv.len()) {
        ("pexpireat", 3) => at(2, Unit::Millis),
        ("expireat", 3) => at(2, Unit::Seconds),
        ("set", n) if n > 4 => {
            let opt = argv[3..]
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"pxat") || a.eq_ignore_ascii_case(b"exat"))?
                + 3;
            let unit = if argv[opt].eq_ignore_ascii_case(b"pxat") {
                Unit::Millis
            } else {
                Unit::Seconds
            };
            at(opt + 1, unit)
        }
        ("eval", 7) if crate::pika::normalize::is_set_vx_script(&argv[1]) => at(6, Unit::Millis),
        _ => None,
    }
}

fn write_expiry(argv: &mut [Bytes], arg: ExpiryArg, at_ms: i64) {
    let value = match arg.unit {
        Unit::Millis => at_ms,
        // Whole seconds, never earlier than the time meant.
        Unit::Seconds => at_ms.saturating_add(999).div_euclid(1000),
    };
    argv[arg.index] = Bytes::from(value.to_string());
}

/// The key whose expiry `argv` sets (the script's is its first key).
fn expiry_key<'a>(name: &str, argv: &'a [Bytes]) -> Option<&'a Bytes> {
    match name {
        "eval" => argv.get(3),
        _ => argv.get(1),
    }
}

/// The moment of an offline read and the expiries it holds back.
#[derive(Debug)]
pub struct Replay {
    clock: ReplayClock,
    held: LateExpiries,
    /// Snapshot keys left out because they had expired at the moment read.
    expired_snapshot_events: u64,
}

impl Replay {
    pub fn new(clock: ReplayClock) -> Replay {
        Replay {
            clock,
            held: LateExpiries::default(),
            expired_snapshot_events: 0,
        }
    }

    pub fn clock(&self) -> &ReplayClock {
        &self.clock
    }

    /// Where `db`'s input starts (the position before its first item), so that an
    /// expiry held by its very first item knows where a resumed read must start.
    pub fn starts_at(&mut self, db: u32, at: crate::event::BinlogOffset) {
        self.held.starts_at(db, at);
    }

    /// Whether an expiry is held (a release is still to come).
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    pub fn stats(&self) -> LateExpiryStats {
        self.held.stats()
    }

    /// Snapshot events left out because their key had expired at the moment read.
    pub fn expired_snapshot_events(&self) -> u64 {
        self.expired_snapshot_events
    }

    /// Passes one event on into `out`, preceded by the releases due before it: its
    /// expiry moved to the clock, or held when it had not passed when the master applied
    /// it but has at the moment read. A snapshot chunk of a key expired at that moment
    /// is left out.
    pub fn pass(&mut self, event: Event, out: &mut Vec<Event>) {
        let name = match &event.op {
            Op::Command { argv } => CommandName::of(argv),
            Op::Snapshot { .. } => CommandName::of(&[]),
        };
        self.pass_named(event, name.as_str(), out);
    }

    /// [`Replay::pass`] for a command whose lowercased name is known (`name`; anything
    /// for a snapshot event).
    pub fn pass_named(&mut self, mut event: Event, name: &str, out: &mut Vec<Event>) {
        match &mut event.op {
            Op::Snapshot { expire_at_ms, .. } => {
                if let Some(at) = *expire_at_ms {
                    if self.clock.has_expired(at) {
                        self.expired_snapshot_events += 1;
                        return;
                    }
                    *expire_at_ms = Some(self.clock.rebase_ms(at));
                }
            }
            Op::Command { argv } => {
                if let Some(exec) = event.exec_time.filter(|_| !self.held.is_empty()) {
                    let exec_ms = i64::from(exec) * 1000;
                    let touched: Vec<Bytes> = commands::key_indexes(argv)
                        .into_iter()
                        .map(|i| argv[i].clone())
                        .collect();
                    self.held
                        .release_before(event.db, &event.position, exec_ms, &touched, out);
                    self.track(event.db, name, argv);
                }
                let exec_ms = event.exec_time.map(|exec| i64::from(exec) * 1000);
                self.hold_or_rebase(event.db, name, argv, exec_ms);
            }
        }
        self.held.passed(&event);
        out.push(event);
    }

    /// Where a read of `db` stopped before the end of its input must resume so that no
    /// held expiry is lost: the start of the earliest one's item, if any is held.
    pub fn resume_point(&self, db: u32) -> Option<crate::event::BinlogOffset> {
        self.held.resume_point(db)
    }

    /// The input has nothing more for now (a followed binlog or capture): keys whose
    /// time has come are released.
    pub fn caught_up(&mut self, out: &mut Vec<Event>) {
        self.held.release_caught_up(self.clock.now_ms(), out);
    }

    /// The input has ended: every held key is released.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        self.held.release_at_end(out);
    }

    /// Forgets held expiries that `name` clears, replaces or moves on the target.
    fn track(&mut self, db: u32, name: &str, argv: &[Bytes]) {
        if self.held.is_empty() {
            return;
        }
        let has = |word: &[u8]| argv[3..].iter().any(|a| a.eq_ignore_ascii_case(word));
        match name {
            "del" | "unlink" | "mset" => {
                for i in commands::key_indexes(argv) {
                    self.held.cancel(db, &argv[i]);
                }
            }
            // A new value without KEEPTTL clears the expiry; NX may leave the old key.
            "set" if argv.len() > 2 && !has(b"keepttl") && !has(b"nx") => {
                self.held.cancel(db, &argv[1])
            }
            "setex" | "psetex" | "getset" | "persist" | "pexpireat" | "expireat" | "expire"
            | "pexpire" => {
                if let Some(key) = argv.get(1) {
                    self.held.cancel(db, key);
                }
            }
            "sunionstore" | "sinterstore" | "sdiffstore" | "zunionstore" | "zinterstore" => {
                if let Some(dest) = argv.get(1) {
                    self.held.cancel(db, dest);
                }
            }
            "bitop" => {
                if let Some(dest) = argv.get(2) {
                    self.held.cancel(db, dest);
                }
            }
            "rename" | "renamenx" if argv.len() == 3 => {
                self.held.rename(db, &argv[1], &argv[2], name == "renamenx");
            }
            "flushdb" => self.held.clear(Some(db)),
            "flushall" => self.held.clear(None),
            _ => {}
        }
    }

    /// The command's own absolute expiry: applied as logged when already past when the
    /// master applied it, held when past only now, else moved to the clock.
    fn hold_or_rebase(&mut self, db: u32, name: &str, argv: &mut [Bytes], exec_ms: Option<i64>) {
        let Some(arg) = expiry_arg(name, argv) else {
            return;
        };
        let logged_past = exec_ms.is_some_and(|exec| arg.at_ms <= exec);
        if logged_past {
            return;
        }
        if exec_ms.is_some() && self.clock.has_expired(arg.at_ms) {
            if let Some(key) = expiry_key(name, argv).cloned() {
                self.held.hold(db, &key, arg.at_ms);
                let marker = arg.at_ms.saturating_add(late_expiry::MARK_MS);
                write_expiry(argv, arg, marker);
                return;
            }
        }
        if self.clock.is_shifted() {
            let rebased = match arg.unit {
                Unit::Millis => self.clock.rebase_ms(arg.at_ms),
                Unit::Seconds => self
                    .clock
                    .rebase_secs(arg.at_ms / 1000)
                    .saturating_mul(1000),
            };
            write_expiry(argv, arg, rebased);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{BinlogOffset, Chunk, Part, Position, TypeSet};

    const T0: u32 = 1_700_000_000;
    const T0_MS: i64 = T0 as i64 * 1000;

    fn command(offset: u64, exec: u32, words: &str) -> Event {
        let argv: Vec<Bytes> = words
            .split(' ')
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect();
        Event {
            db: 0,
            source_db: 0,
            key: commands::first_key(&argv).unwrap_or_default(),
            data_type: None,
            op: Op::Command { argv },
            position: Position::Binlog {
                at: BinlogOffset::new(0, offset),
                logic_id: offset,
                term: 0,
            },
            exec_time: Some(exec),
        }
    }

    fn text(e: &Event) -> String {
        let Op::Command { argv } = &e.op else {
            return format!("snapshot {:?}", e.key);
        };
        let words: Vec<String> = argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let line = words.join(" ");
        line.replace(late_expiry::RELEASE_SCRIPT, "<release>")
    }

    fn replay(clock: ReplayClock, events: Vec<Event>) -> Vec<String> {
        let mut replay = Replay::new(clock);
        let mut out = Vec::new();
        for e in events {
            replay.pass(e, &mut out);
        }
        replay.finish(&mut out);
        out.iter().map(text).collect()
    }

    /// Read a day after the items were logged.
    fn a_day_later() -> ReplayClock {
        ReplayClock::new(
            Some(AsOf {
                unix_ms: T0_MS + 86_400_000,
            }),
            T0_MS + 86_400_000,
        )
    }

    #[test]
    fn an_expiry_a_later_persist_cancelled_is_held_not_applied() {
        let marker = T0_MS + 800_000 + late_expiry::MARK_MS;
        let out = replay(
            a_day_later(),
            vec![
                command(100, T0, "SET k v"),
                command(200, T0, &format!("PEXPIREAT k {}", T0_MS + 800_000)),
                command(300, T0 + 5, "PERSIST k"),
            ],
        );
        assert_eq!(
            out,
            [
                "SET k v".to_owned(),
                format!("PEXPIREAT k {marker}"),
                "PERSIST k".to_owned(),
            ],
            "the hold was cancelled: nothing to release"
        );
    }

    #[test]
    fn a_held_key_is_released_when_the_input_reaches_its_time() {
        let out = replay(
            a_day_later(),
            vec![
                command(100, T0, &format!("SET k v PXAT {}", T0_MS + 10_000)),
                command(200, T0 + 5, "HSET h f v"),
                command(300, T0 + 10, "SET other v"),
                command(400, T0 + 11, "SET k again"),
            ],
        );
        let threshold = late_expiry::MARK_THRESHOLD_MS;
        assert_eq!(
            out,
            [
                format!("SET k v PXAT {}", T0_MS + 10_000 + late_expiry::MARK_MS),
                "HSET h f v".to_owned(),
                format!("EVAL <release> 1 k {threshold}"),
                "SET other v".to_owned(),
                "SET k again".to_owned(),
            ]
        );
    }

    #[test]
    fn the_release_sits_between_the_items_around_it() {
        let mut replay = Replay::new(a_day_later());
        let mut out = Vec::new();
        replay.pass(
            command(100, T0, &format!("PEXPIREAT k {}", T0_MS + 1000)),
            &mut out,
        );
        replay.pass(command(200, T0 + 2, "SET z v"), &mut out);
        let at: Vec<u64> = out
            .iter()
            .map(|e| e.position.binlog_offset().offset)
            .collect();
        assert_eq!(at, [100, 101, 200]);
        assert_eq!(out[1].key, "k");
        assert_eq!(replay.stats().released, 1);
    }

    #[test]
    fn a_rename_carries_the_hold_to_the_new_name() {
        let out = replay(
            a_day_later(),
            vec![
                command(100, T0, &format!("EXPIREAT k {}", T0 + 60)),
                command(200, T0 + 1, "RENAME k n"),
            ],
        );
        assert_eq!(
            out[0],
            format!(
                "EXPIREAT k {}",
                (T0_MS + 60_000 + late_expiry::MARK_MS + 999) / 1000
            )
        );
        assert_eq!(
            out[2],
            format!("EVAL <release> 1 n {}", late_expiry::MARK_THRESHOLD_MS)
        );
    }

    #[test]
    fn expiries_past_when_logged_apply_at_once_and_future_ones_move_to_the_clock() {
        let out = replay(
            a_day_later(),
            vec![
                command(100, T0, &format!("PEXPIREAT gone {}", T0_MS - 1)),
                command(
                    200,
                    T0,
                    &format!("PEXPIREAT later {}", T0_MS + 2 * 86_400_000),
                ),
            ],
        );
        assert_eq!(out[0], format!("PEXPIREAT gone {}", T0_MS - 1));
        // As of a day later, read a day later: what was left is left.
        assert_eq!(
            out[1],
            format!("PEXPIREAT later {}", T0_MS + 2 * 86_400_000)
        );
        // Read as of T0, today (a day later): a day more to live.
        let out = replay(
            ReplayClock::new(Some(AsOf { unix_ms: T0_MS }), T0_MS + 86_400_000),
            vec![command(
                200,
                T0,
                &format!("PEXPIREAT later {}", T0_MS + 60_000),
            )],
        );
        assert_eq!(
            out,
            [format!("PEXPIREAT later {}", T0_MS + 86_400_000 + 60_000)]
        );
    }

    #[test]
    fn snapshot_keys_expired_as_of_the_moment_are_left_out_the_rest_rebased() {
        let snapshot = |key: &'static str, expire| Event {
            db: 0,
            source_db: 0,
            key: Bytes::from_static(key.as_bytes()),
            data_type: None,
            op: Op::Snapshot {
                chunk: Chunk::String(Bytes::from_static(b"v")),
                part: Part::Whole,
                expire_at_ms: expire,
                also_types: TypeSet::default(),
            },
            position: Position::Snapshot {
                at: BinlogOffset::default(),
                seq: 0,
            },
            exec_time: None,
        };
        let clock = ReplayClock::new(Some(AsOf { unix_ms: T0_MS }), T0_MS + 1000);
        let mut replay = Replay::new(clock);
        let mut out = Vec::new();
        replay.pass(snapshot("old", Some(T0_MS)), &mut out);
        replay.pass(snapshot("live", Some(T0_MS + 5000)), &mut out);
        replay.pass(snapshot("forever", None), &mut out);
        assert_eq!(replay.expired_snapshot_events(), 1);
        let expiries: Vec<Option<i64>> = out
            .iter()
            .map(|e| match e.op {
                Op::Snapshot { expire_at_ms, .. } => expire_at_ms,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(expiries, [Some(T0_MS + 6000), None]);
    }
}
