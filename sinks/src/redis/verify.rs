//! Compares snapshot events with what a Redis holds, chunk by chunk: memory stays flat
//! however big a key is. For each key: its type, every element (HMGET, LRANGE by
//! index, SMISMEMBER, ZMSCORE with exact scores, GETRANGE, XRANGE), its length, and its expiry
//! within a second. The same type-conflict and HyperLogLog policies as the sink decide
//! which keys are expected and under which names.
//!
//! A Pika target (found in its `INFO` as the sink finds it, `pika_target`) lacks
//! SMISMEMBER and ZMSCORE: each member is asked with SISMEMBER / ZSCORE, pipelined. A
//! 3.x target keeps every type of a name (no type-conflict policy) and its `TYPE` names
//! only the first: a string is checked by `TYPE` (string comes first), another type by
//! its length command answering more than 0. Its `PTTL` is the first type's, so the
//! expiry of a later type of a name is not checked. 4.0's `TYPE` says `streams`. A Pika
//! stream has no expiry (3.5 answers `PTTL` -2, 4.0.1 0): not checked. Names 4.0 would
//! store cut (a NUL with bytes after it) are not expected, as the sink leaves them out.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pika_migrate_core::display::display_key;
use pika_migrate_core::event::{Chunk, DataType, Event, Op, StreamEntry};
use redis::Value;

use super::config::{HyperLogLogPolicy, RedisSinkConfig};
use super::conn::{command, Connection};
use super::pika_target::{cut_by_pika_4, PikaTarget};
use super::target::Target;
use crate::encode::commands::{score_text, TypeConflict};
use crate::encode::hyperloglog::is_pika_hyperloglog;

/// Expiries may differ by this much (Pika keeps whole seconds).
const EXPIRY_TOLERANCE_MS: i64 = 1000;
/// On a Pika target: the sink rounds an expiry up to its second, and 3.5's `PTTL`
/// counts whole seconds down (`7199000`), so a second each way.
const PIKA_EXPIRY_TOLERANCE_MS: i64 = 2000;

/// What a check expects back.
enum Expect {
    Type(DataType),
    /// The type's length command answers more than 0 (a Pika 3.x name of several types).
    NonEmpty,
    /// `SISMEMBER` answers 1.
    Member,
    /// `ZSCORE` answers this score.
    Score(f64),
    Bytes(Bytes),
    Values(Vec<Bytes>),
    AllMembers(usize),
    Scores(Vec<f64>),
    Entries(Vec<StreamEntry>),
    Len(u64),
    ExpireAt(Option<i64>),
}

struct Check {
    key: Bytes,
    argv: Vec<Bytes>,
    expect: Expect,
    /// The target database it reads (the url's, plus the event's Pika database).
    db: u32,
    /// The caller's mark for the key it checks (`check_tagged`).
    tag: u64,
}

/// Progress through the key whose chunks are being checked.
struct Current {
    key: Bytes,
    data_type: DataType,
    /// Elements (bytes for a string) seen so far.
    seen: u64,
}

/// Differences found, and how many keys were compared.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub keys: u64,
    pub differing_keys: u64,
    /// The first differences, in order.
    pub differences: Vec<String>,
    pub skipped_keys: u64,
    /// The tags (`check_tagged`) of the keys that differ, and what differs of each (its
    /// first difference).
    pub differing_tags: std::collections::BTreeMap<u64, String>,
}

/// Differences kept for printing.
const KEPT_DIFFERENCES: usize = 50;

pub struct Verifier {
    /// One connection, or one per master of a cluster (indexed like `slots.nodes`).
    conns: Vec<Connection>,
    slots: Option<super::cluster::SlotMap>,
    type_conflict: TypeConflict,
    hyperloglog: HyperLogLogPolicy,
    current: Option<Current>,
    checks: Vec<Check>,
    report: VerifyReport,
    last_bad_key: Option<Bytes>,
    shift: ExpiryShift,
    /// The database the url names: a Pika database N is checked in this one + N.
    home_db: u32,
    /// The tag of the events being checked.
    tag: u64,
    /// The target is a Pika: the reads it answers (above).
    pika: Option<PikaTarget>,
}

/// How the expiries read from the source relate to the ones the run wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpiryShift {
    /// Written as stored (a source read on the wall clock).
    None,
    /// Read as of a moment: the run moved every expiry by the same amount, now − that
    /// moment as the run saw it, at most `max_ms`; the first key with a time to live
    /// tells it.
    Learn {
        max_ms: i64,
    },
    Learned(i64),
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A `TIME` reply in unix milliseconds.
fn server_time_ms(reply: &Value) -> Option<i64> {
    let Value::Array(parts) = reply else {
        return None;
    };
    let number = |v: &Value| match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse::<i64>().ok(),
        _ => None,
    };
    let (secs, micros) = (number(parts.first()?)?, number(parts.get(1)?)?);
    secs.checked_mul(1000)?.checked_add(micros / 1000)
}

fn text(reply: &Value) -> String {
    match reply {
        Value::BulkString(v) => display_key(v),
        Value::SimpleString(s) => s.clone(),
        reply @ Value::ServerError(_) => super::conn::error_text(reply),
        other => format!("{other:?}"),
    }
}

impl Verifier {
    pub async fn connect(config: &RedisSinkConfig) -> Result<Verifier, super::RedisSinkError> {
        let target = Target::of(config)?;
        let mut seed = super::endpoint_of(&target, config.response_timeout(false))
            .connect()
            .await?
            .conn;
        let (mut conns, slots) = match (config.cluster, target.node()) {
            (true, Some(info)) => {
                let map = super::cluster::SlotMap::fetch(&mut seed)
                    .await
                    .map_err(super::RedisSinkError::Cluster)?;
                let mut conns = Vec::new();
                for i in 0..map.nodes.len() {
                    let node = super::endpoint::Endpoint::Node(
                        map.target(info, i),
                        config.response_timeout(false),
                    );
                    conns.push(node.connect().await?.conn);
                }
                (conns, Some(map))
            }
            _ => (vec![seed], None),
        };
        let pika = match slots {
            Some(_) => None,
            None => super::probe::info(&mut conns[0])
                .await
                .ok()
                .and_then(|info| PikaTarget::detect(&info)),
        };
        if let Some(p) = &pika {
            tracing::info!(pika_version = %p.version, "the target is a Pika: sets and sorted sets are checked member by member (SISMEMBER, ZSCORE)");
        }
        Ok(Verifier {
            pika,
            conns,
            slots,
            type_conflict: config.type_conflict,
            hyperloglog: config.hyperloglog,
            current: None,
            checks: Vec::new(),
            report: VerifyReport::default(),
            last_bad_key: None,
            shift: ExpiryShift::None,
            home_db: target.db(),
            tag: 0,
        })
    }

    /// The source was read as of `as_of_ms` (its events carry the expiries stored, and
    /// the keys alive then): the run wrote every expiry moved by one amount, which the
    /// first key with a time to live tells, and the others must agree with.
    pub fn expiries_as_of(mut self, as_of_ms: i64) -> Verifier {
        self.shift = ExpiryShift::Learn {
            max_ms: now_ms().saturating_sub(as_of_ms),
        };
        self
    }

    /// Learns the amount expiries were moved by from the keys of one pipeline of checks:
    /// the median of what their times to live say, so that one key changed behind the
    /// run's back does not set it.
    fn learn_shift(&mut self, checks: &[Check], replies: &[Value], nows: &[i64]) {
        let ExpiryShift::Learn { max_ms } = self.shift else {
            return;
        };
        let mut seen: Vec<i64> = checks
            .iter()
            .zip(replies)
            .zip(nows)
            .filter_map(|((check, reply), now)| match (&check.expect, reply) {
                (Expect::ExpireAt(Some(at)), Value::Int(ttl)) if *ttl >= 0 => {
                    Some(now.saturating_add(*ttl).saturating_sub(*at))
                }
                _ => None,
            })
            .filter(|shift| {
                (-EXPIRY_TOLERANCE_MS..=max_ms.saturating_add(EXPIRY_TOLERANCE_MS)).contains(shift)
            })
            .collect();
        if !seen.is_empty() {
            seen.sort_unstable();
            self.shift = ExpiryShift::Learned(seen[seen.len() / 2]);
        }
    }

    /// The amount expiries were moved by, learnt from a key expiring at `at` with
    /// `ttl` left now; `None` when it cannot be what a run as of the moment wrote.
    fn shift_for(&mut self, at: i64, ttl: i64, now: i64) -> Option<i64> {
        match self.shift {
            ExpiryShift::None => Some(0),
            ExpiryShift::Learned(shift) => Some(shift),
            ExpiryShift::Learn { max_ms } => {
                let shift = now.saturating_add(ttl).saturating_sub(at);
                let plausible = (-EXPIRY_TOLERANCE_MS..=max_ms.saturating_add(EXPIRY_TOLERANCE_MS))
                    .contains(&shift);
                plausible.then(|| {
                    self.shift = ExpiryShift::Learned(shift);
                    shift
                })
            }
        }
    }

    /// Checks `event` with `tag` marking it: the report names the tags of the keys
    /// that differ (a caller that read several keys learns which differed).
    pub async fn check_tagged(&mut self, event: &Event, tag: u64) -> std::io::Result<()> {
        self.tag = tag;
        self.check(event).await
    }

    /// Queues the checks of one snapshot event; runs them in pipelines of a few hundred.
    pub async fn check(&mut self, event: &Event) -> std::io::Result<()> {
        let Op::Snapshot {
            chunk,
            part,
            expire_at_ms,
            also_types,
        } = &event.op
        else {
            return Ok(());
        };
        let t = chunk.data_type();
        let mut key = event.key.clone();
        // A cluster has database 0 only: every Pika database goes there (a rename keeps
        // their keys apart).
        let (db, tag) = (self.target_db(event.db), self.tag);
        let keeps_types = self.pika.as_ref().is_some_and(|p| p.keeps_types);
        if self
            .pika
            .as_ref()
            .is_some_and(|p| p.cuts_nul_names && cut_by_pika_4(&key))
        {
            // The sink leaves it out (Pika 4.0 would store it cut).
            if part.starts_key() {
                self.report.skipped_keys += 1;
            }
            return Ok(());
        }
        if also_types.first_before(t).is_some() && !keeps_types {
            match self.type_conflict {
                TypeConflict::FirstWins => {
                    if part.starts_key() {
                        self.report.skipped_keys += 1;
                    }
                    return Ok(());
                }
                TypeConflict::Suffix => {
                    key = Bytes::from([key.as_ref(), b":", t.as_str().as_bytes()].concat());
                }
                TypeConflict::Overwrite => {}
            }
        }
        if self.type_conflict == TypeConflict::Overwrite
            && !keeps_types
            && also_types.iter().any(|other| other > t)
        {
            // A later type replaced this one.
            if part.starts_key() {
                self.report.skipped_keys += 1;
            }
            return Ok(());
        }
        if part.starts_key() {
            if let Chunk::String(v) = chunk {
                if is_pika_hyperloglog(v) && self.hyperloglog == HyperLogLogPolicy::Skip {
                    self.report.skipped_keys += 1;
                    self.current = None;
                    return Ok(());
                }
            }
            self.report.keys += 1;
            self.current = Some(Current {
                key: key.clone(),
                data_type: t,
                seen: 0,
            });
            let (argv, expect) = match t {
                // Pika 3.x's TYPE names a name's first type only, string first.
                t if keeps_types && t != DataType::String => {
                    (vec![b(len_command(t)), key.clone()], Expect::NonEmpty)
                }
                t => (vec![b("TYPE"), key.clone()], Expect::Type(t)),
            };
            self.checks.push(Check {
                db,
                tag,
                key: key.clone(),
                argv,
                expect,
            });
        }
        let Some(current) = self
            .current
            .as_mut()
            .filter(|c| c.key == key && c.data_type == t)
        else {
            return Ok(());
        };
        let start = current.seen;
        let k = &key;
        let pika = self.pika.is_some();
        // What to read, and what it must answer.
        let reads: Vec<(Vec<Bytes>, Expect)> = match chunk {
            _ if chunk.is_empty() => Vec::new(),
            // Pika has no SMISMEMBER / ZMSCORE: a read per member.
            Chunk::Set(members) if pika => members
                .iter()
                .map(|m| (vec![b("SISMEMBER"), k.clone(), m.clone()], Expect::Member))
                .collect(),
            Chunk::Zset(members) if pika => members
                .iter()
                .map(|(m, score)| {
                    let argv = vec![b("ZSCORE"), k.clone(), m.clone()];
                    (argv, Expect::Score(*score))
                })
                .collect(),
            Chunk::String(v) => vec![(
                range("GETRANGE", k, start, v.len()),
                Expect::Bytes(v.clone()),
            )],
            Chunk::Hash(pairs) => {
                let fields = pairs.iter().map(|(f, _)| f.clone());
                let argv = [b("HMGET"), k.clone()].into_iter().chain(fields).collect();
                let values = pairs.iter().map(|(_, v)| v.clone()).collect();
                vec![(argv, Expect::Values(values))]
            }
            Chunk::List(items) => vec![(
                range("LRANGE", k, start, items.len()),
                Expect::Values(items.clone()),
            )],
            Chunk::Set(members) => {
                let argv = [vec![b("SMISMEMBER"), k.clone()], members.clone()].concat();
                vec![(argv, Expect::AllMembers(members.len()))]
            }
            Chunk::Zset(members) => {
                let names = members.iter().map(|(m, _)| m.clone());
                let argv = [b("ZMSCORE"), k.clone()].into_iter().chain(names).collect();
                let scores = members.iter().map(|(_, s)| *s).collect();
                vec![(argv, Expect::Scores(scores))]
            }
            Chunk::Stream { entries, .. } => {
                let id = |e: Option<&StreamEntry>| {
                    Bytes::from(e.map_or_else(String::new, |e| e.id.to_string()))
                };
                let argv = vec![
                    b("XRANGE"),
                    k.clone(),
                    id(entries.first()),
                    id(entries.last()),
                ];
                vec![(argv, Expect::Entries(entries.clone()))]
            }
        };
        current.seen += match chunk {
            Chunk::String(v) => v.len() as u64,
            other => other.len() as u64,
        };
        let seen = current.seen;
        self.checks
            .extend(reads.into_iter().map(|(argv, expect)| Check {
                db,
                tag,
                key: key.clone(),
                argv,
                expect,
            }));
        if part.ends_key() {
            self.checks.push(Check {
                db,
                tag,
                key: key.clone(),
                argv: vec![b(len_command(t)), key.clone()],
                expect: Expect::Len(seen),
            });
            // A Pika stream has no expiry, and a Pika 3.x PTTL answers for the name's
            // first type only.
            let pttl_of_another = keeps_types && also_types.first_before(t).is_some();
            if !(pika && t == DataType::Stream || pttl_of_another) {
                self.checks.push(Check {
                    db,
                    tag,
                    key: key.clone(),
                    argv: vec![b("PTTL"), key.clone()],
                    expect: Expect::ExpireAt(*expire_at_ms),
                });
            }
        }
        if self.checks.len() >= 256 {
            self.run_checks().await?;
        }
        Ok(())
    }

    async fn run_checks(&mut self) -> std::io::Result<()> {
        if self.checks.is_empty() {
            return Ok(());
        }
        // Each check goes to the node serving its key, in its database; replies are put
        // back in order. Each pipeline selects its database (then the url's again), and
        // starts with TIME: a time to live is judged by the clock of the server that
        // counts it down, whatever the clock of this host says.
        let mut groups: BTreeMap<(usize, u32), Vec<usize>> = BTreeMap::new();
        for (i, c) in self.checks.iter().enumerate() {
            let node = self.slots.as_ref().map_or(0, |m| m.node_of(&c.key));
            groups.entry((node, c.db)).or_default().push(i);
        }
        let mut replies = vec![Value::Nil; self.checks.len()];
        let mut nows = vec![0; self.checks.len()];
        for ((node, db), indexes) in groups {
            let other_db = db != self.home_db;
            let mut pipeline = redis::Pipeline::new();
            if other_db {
                pipeline.add_command(redis::cmd("SELECT").arg(db).clone());
            }
            pipeline.add_command(redis::cmd("TIME"));
            for i in &indexes {
                pipeline.add_command(command(&self.checks[*i].argv));
            }
            if other_db {
                pipeline.add_command(redis::cmd("SELECT").arg(self.home_db).clone());
            }
            let extra = 1 + 2 * usize::from(other_db);
            let got = self.conns[node]
                .pipeline(&pipeline, indexes.len() + extra)
                .await
                .map_err(std::io::Error::other)?;
            let mut got = got.into_iter();
            if other_db {
                if let Some(reply @ Value::ServerError(_)) = got.next() {
                    return Err(std::io::Error::other(format!(
                        "SELECT {db}: {}",
                        super::conn::error_text(&reply)
                    )));
                }
            }
            let now = got
                .next()
                .as_ref()
                .and_then(server_time_ms)
                .unwrap_or_else(now_ms);
            for (i, reply) in indexes.into_iter().zip(got) {
                replies[i] = reply;
                nows[i] = now;
            }
        }
        let checks = std::mem::take(&mut self.checks);
        self.learn_shift(&checks, &replies, &nows);
        for ((check, reply), now) in checks.iter().zip(replies).zip(nows) {
            let moved;
            let expect = match (&check.expect, &reply) {
                (Expect::ExpireAt(Some(at)), Value::Int(ttl)) if *ttl >= 0 => {
                    match self.shift_for(*at, *ttl, now) {
                        Some(shift) => {
                            moved = Expect::ExpireAt(Some(at.saturating_add(shift)));
                            &moved
                        }
                        None => {
                            self.differ_tagged(
                                &check.key,
                                check.tag,
                                format!("expiry differs: expected {at} ms as of the moment read, PTTL {ttl}"),
                            );
                            continue;
                        }
                    }
                }
                (Expect::ExpireAt(Some(at)), _) => {
                    let shift = match self.shift {
                        ExpiryShift::Learned(shift) => shift,
                        _ => 0,
                    };
                    moved = Expect::ExpireAt(Some(at.saturating_add(shift)));
                    &moved
                }
                _ => &check.expect,
            };
            let tolerance = match self.pika {
                Some(_) => PIKA_EXPIRY_TOLERANCE_MS,
                None => EXPIRY_TOLERANCE_MS,
            };
            if let Some(problem) = judge(expect, &reply, now, tolerance) {
                self.differ_tagged(&check.key, check.tag, problem);
            }
        }
        Ok(())
    }

    fn differ_tagged(&mut self, key: &Bytes, tag: u64, problem: String) {
        self.report
            .differing_tags
            .entry(tag)
            .or_insert_with(|| format!("{}: {problem}", display_key(key)));
        self.differ(key, problem);
    }

    fn differ(&mut self, key: &Bytes, problem: String) {
        if self.last_bad_key.as_ref() != Some(key) {
            self.report.differing_keys += 1;
            self.last_bad_key = Some(key.clone());
        }
        let line = format!("{}: {problem}", display_key(key));
        // Checked member by member (a Pika target), a key's missing members would each
        // print the same line.
        if self.report.differences.len() < KEPT_DIFFERENCES
            && self.report.differences.last() != Some(&line)
        {
            self.report.differences.push(line);
        }
    }

    /// The target database of Pika database `db`.
    fn target_db(&self, db: u32) -> u32 {
        match self.slots {
            Some(_) => self.home_db,
            None => self.home_db.saturating_add(db),
        }
    }

    /// Runs the checks queued so far; the tags of the keys found differing since the
    /// last call, each with its first difference.
    pub async fn flush(&mut self) -> std::io::Result<BTreeMap<u64, String>> {
        self.run_checks().await?;
        Ok(std::mem::take(&mut self.report.differing_tags))
    }

    /// One page of the keys the target holds for Pika database `db` (in the url's
    /// database plus `db`; every master of a cluster in turn, the cursor naming the node
    /// in its top 16 bits): the cursor to go on from (0 at the end) and the names, the
    /// sink's own checkpoint keys left out.
    pub async fn scan_target(
        &mut self,
        db: u32,
        cursor: u64,
        count: usize,
    ) -> std::io::Result<(u64, Vec<Bytes>)> {
        let node = usize::try_from(cursor >> 48).unwrap_or(usize::MAX);
        let db = self.target_db(db);
        let home_db = self.home_db;
        let nodes = self.conns.len();
        let Some(conn) = self.conns.get_mut(node) else {
            return Ok((0, Vec::new()));
        };
        let mut pipeline = redis::Pipeline::new();
        pipeline.add_command(redis::cmd("SELECT").arg(db).clone());
        pipeline.add_command(
            redis::cmd("SCAN")
                .arg(cursor & 0xffff_ffff_ffff)
                .arg("COUNT")
                .arg(count)
                .clone(),
        );
        pipeline.add_command(redis::cmd("SELECT").arg(home_db).clone());
        let got = conn
            .pipeline(&pipeline, 3)
            .await
            .map_err(std::io::Error::other)?;
        if let Some(reply @ Value::ServerError(_)) = got.first() {
            return Err(std::io::Error::other(format!(
                "SELECT {db}: {}",
                super::conn::error_text(reply)
            )));
        }
        let (next, names) = match got.get(1) {
            Some(Value::Array(parts)) => {
                let next = match parts.first() {
                    Some(Value::BulkString(c)) => std::str::from_utf8(c)
                        .ok()
                        .and_then(|c| c.parse::<u64>().ok())
                        .unwrap_or(0),
                    _ => 0,
                };
                let names = match parts.get(1) {
                    Some(Value::Array(names)) => names
                        .iter()
                        .filter_map(|n| match n {
                            Value::BulkString(b) if !b.starts_with(b"pika-migrate:") => {
                                Some(Bytes::copy_from_slice(b))
                            }
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                (next, names)
            }
            Some(reply) => return Err(std::io::Error::other(text(reply))),
            None => (0, Vec::new()),
        };
        let next = match next {
            0 if node + 1 < nodes => ((node as u64) + 1) << 48,
            0 => 0,
            c => ((node as u64) << 48) | c,
        };
        Ok((next, names))
    }

    /// Which of `keys` the target still holds in Pika database `db`'s database.
    pub async fn target_has(&mut self, db: u32, keys: &[Bytes]) -> std::io::Result<Vec<Bytes>> {
        let mut held = Vec::new();
        let db = self.target_db(db);
        for key in keys {
            let node = self.slots.as_ref().map_or(0, |m| m.node_of(key));
            let mut pipeline = redis::Pipeline::new();
            pipeline.add_command(redis::cmd("SELECT").arg(db).clone());
            pipeline.add_command(redis::cmd("EXISTS").arg(key.as_ref()).clone());
            pipeline.add_command(redis::cmd("SELECT").arg(self.home_db).clone());
            let got = self.conns[node]
                .pipeline(&pipeline, 3)
                .await
                .map_err(std::io::Error::other)?;
            if matches!(got.get(1), Some(Value::Int(n)) if *n > 0) {
                held.push(key.clone());
            }
        }
        Ok(held)
    }

    pub async fn finish(mut self) -> std::io::Result<VerifyReport> {
        self.run_checks().await?;
        Ok(self.report)
    }
}

/// `command key start end`: the `len` elements (bytes) from `start` on.
fn range(command: &'static str, key: &Bytes, start: u64, len: usize) -> Vec<Bytes> {
    let end = (start + len as u64).saturating_sub(1);
    vec![
        b(command),
        key.clone(),
        Bytes::from(start.to_string()),
        Bytes::from(end.to_string()),
    ]
}

/// The command that answers a key's length for type `t`.
fn len_command(t: DataType) -> &'static str {
    match t {
        DataType::String => "STRLEN",
        DataType::Hash => "HLEN",
        DataType::List => "LLEN",
        DataType::Set => "SCARD",
        DataType::Zset => "ZCARD",
        DataType::Stream => "XLEN",
    }
}

fn judge(expect: &Expect, reply: &Value, now: i64, tolerance_ms: i64) -> Option<String> {
    match (expect, reply) {
        (Expect::Type(t), Value::SimpleString(got)) if got == t.as_str() => None,
        // Pika 4.0's TYPE of a stream.
        (Expect::Type(DataType::Stream), Value::SimpleString(got)) if got == "streams" => None,
        (Expect::NonEmpty, Value::Int(n)) if *n > 0 => None,
        (Expect::NonEmpty, got) => Some(format!("missing (length {})", text(got))),
        (Expect::Member, Value::Int(1)) => None,
        (Expect::Member, got) => Some(format!("a member is missing (SISMEMBER {})", text(got))),
        (Expect::Score(want), Value::BulkString(got))
            if std::str::from_utf8(got).ok().and_then(parse_score) == Some(*want) =>
        {
            None
        }
        (Expect::Score(want), got) => Some(format!(
            "a score differs: expected {:?}, got {}",
            String::from_utf8_lossy(&score_text(*want)),
            text(got)
        )),
        (Expect::Type(t), got) => Some(format!("type is {}, expected {t}", text(got))),
        (Expect::Bytes(want), Value::BulkString(got)) if got == want => None,
        (Expect::Bytes(_), got) => Some(format!("value differs (got {})", short(&text(got)))),
        (Expect::Values(want), Value::Array(items)) => {
            let mismatch = want.len() != items.len()
                || want
                    .iter()
                    .zip(items)
                    .any(|(w, g)| !matches!(g, Value::BulkString(v) if v == w));
            mismatch.then(|| format!("{} elements differ", want.len()))
        }
        (Expect::AllMembers(n), Value::Array(items)) => {
            let missing = items.iter().filter(|r| !matches!(r, Value::Int(1))).count()
                + n.saturating_sub(items.len());
            (missing > 0).then(|| format!("{missing} members missing"))
        }
        (Expect::Scores(want), Value::Array(items)) => {
            let bad = want
                .iter()
                .zip(items)
                .filter(|(w, g)| match g {
                    Value::BulkString(v) => {
                        std::str::from_utf8(v).ok().and_then(parse_score) != Some(**w)
                    }
                    _ => true,
                })
                .count();
            (bad > 0 || items.len() != want.len()).then(|| {
                format!(
                    "{bad} scores differ (e.g. expected {:?})",
                    String::from_utf8_lossy(&score_text(want[0]))
                )
            })
        }
        (Expect::Entries(want), Value::Array(items)) => {
            let same =
                want.len() == items.len() && want.iter().zip(items).all(|(w, g)| same_entry(w, g));
            (!same).then(|| format!("{} stream entries differ", want.len()))
        }
        (Expect::Len(n), Value::Int(got)) if *got as u64 == *n => None,
        (Expect::Len(n), got) => Some(format!("length is {}, expected {n}", text(got))),
        (Expect::ExpireAt(None), Value::Int(-1)) => None,
        (Expect::ExpireAt(Some(at)), Value::Int(ttl))
            if *ttl >= 0 && (now + ttl - at).abs() <= tolerance_ms =>
        {
            None
        }
        (Expect::ExpireAt(Some(at)), Value::Int(-2)) if *at <= now + tolerance_ms => None,
        (Expect::ExpireAt(want), got) => Some(format!(
            "expiry differs: expected {want:?} ms, PTTL {}",
            text(got)
        )),
        (_, got) => Some(format!("unexpected reply {}", short(&text(got)))),
    }
}

/// Whether an XRANGE reply item (`[id, [field, value, …]]`) is `want`.
fn same_entry(want: &StreamEntry, got: &Value) -> bool {
    let Value::Array(parts) = got else {
        return false;
    };
    let [Value::BulkString(id), Value::Array(fields)] = parts.as_slice() else {
        return false;
    };
    id.as_slice() == want.id.to_string().as_bytes()
        && fields.len() == want.fields.len() * 2
        && want.fields.iter().zip(fields.chunks(2)).all(|((f, v), got)| {
            matches!(got, [Value::BulkString(gf), Value::BulkString(gv)] if gf == f && gv == v)
        })
}

fn parse_score(s: &str) -> Option<f64> {
    match s {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

fn short(s: &str) -> String {
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().take(80).last().map_or(0, |(i, _)| i)]
        )
    } else {
        s.to_owned()
    }
}
