//! `pika-migrate verify -c FILE` on a pipeline whose source is a live master: every key
//! of the master (or a sample), read over its client port while writes go on, passed
//! through the pipeline's own filters, compared with the Redis sink's target. Keys that
//! differ are read and compared again in later rounds, after the stream had time to
//! carry the latest writes: a key is reported only if it differs in every round. Keys
//! the target holds and the master does not are found the same way, when the filters
//! keep key names as they are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use pika_migrate_core::config::{FilterConfig, PikaSourceConfig};
use pika_migrate_core::display::display_key;
use pika_migrate_core::event::Event;
use pika_migrate_core::filter::FilterChain;
use pika_migrate_core::source::master_keys::MasterKeys;
use pika_migrate_core::source::pika::master_info;
use pika_migrate_sinks::redis::config::RedisSinkConfig;
use pika_migrate_sinks::redis::verify::Verifier;
use serde_json::json;

/// Keys read and checked before their results are looked at.
const WINDOW: usize = 200;
/// Keys of the master a round reads at once (one SCAN page).
const SCAN_PAGE: usize = 500;
/// Differing keys kept for the next round; past it, the rest are only counted.
const MAX_SUSPECTS: usize = 100_000;

/// How a live verify runs.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Check this many keys of each database, drawn at random, instead of every one.
    pub sample: Option<usize>,
    /// At most this many master keys read per second.
    pub rate: Option<u64>,
    /// Rounds in all (the later ones re-check only what differed).
    pub rounds: u32,
    /// Seconds between rounds, for the stream to carry what was written meanwhile.
    pub settle: Duration,
    pub json: bool,
}

/// A key that differed: where, and what differed the last time it was compared.
#[derive(Debug, Clone)]
struct Suspect {
    /// `true`: the target holds it and the master does not.
    extra: bool,
    /// The master changed it while it was compared: not known to differ.
    changing: bool,
    difference: String,
}

/// What two reads of a key must share for the key to be unchanged between them: a
/// hash of its value, and its expiry. An expiry is read as a time to live (whole seconds
/// on 3.2) added to our clock, so two reads of one expiry land anywhere in the second
/// before it, however far apart they were: they are compared within [`SAME_EXPIRY_MS`],
/// never by buckets, whose edges a read can fall on either side of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    value: u64,
    expire_at_ms: Option<i64>,
}

/// How far apart two reads of one expiry may be: a second of truncation, and the time
/// between our clock's reading and the server's.
const SAME_EXPIRY_MS: i64 = 1100;

impl Fingerprint {
    /// Whether the key changed between the reads that gave `self` and `other`.
    fn changed_since(&self, other: &Fingerprint) -> bool {
        self.value != other.value
            || match (self.expire_at_ms, other.expire_at_ms) {
                (None, None) => false,
                (Some(a), Some(b)) => a.abs_diff(b) > SAME_EXPIRY_MS.unsigned_abs(),
                _ => true,
            }
    }
}

/// Reads fingerprints chunk by chunk.
#[derive(Default)]
struct Printer {
    value: std::hash::DefaultHasher,
    expire_at_ms: Option<i64>,
}

impl Printer {
    fn finish(&self) -> Fingerprint {
        Fingerprint {
            value: std::hash::Hasher::finish(&self.value),
            expire_at_ms: self.expire_at_ms,
        }
    }
}

/// Adds what an event says of its key to `print`: two reads of an unchanged key give
/// fingerprints that agree.
fn fingerprint(event: &Event, printer: &mut Printer) {
    use pika_migrate_core::event::{Chunk, Op};
    use std::hash::Hash;
    let print = &mut printer.value;
    event.key.hash(print);
    let Op::Snapshot {
        chunk,
        expire_at_ms,
        ..
    } = &event.op
    else {
        return;
    };
    if expire_at_ms.is_some() {
        printer.expire_at_ms = *expire_at_ms;
    }
    match chunk {
        Chunk::String(v) => v.hash(print),
        Chunk::Hash(pairs) => pairs.hash(print),
        Chunk::List(items) | Chunk::Set(items) => items.hash(print),
        Chunk::Zset(members) => {
            for (m, score) in members {
                m.hash(print);
                score.to_bits().hash(print);
            }
        }
        Chunk::Stream { entries, last_id } => {
            last_id.hash(print);
            for e in entries {
                e.id.hash(print);
                e.fields.hash(print);
            }
        }
    }
}

type SuspectKey = (u32, Bytes);

struct Pace {
    rate: Option<u64>,
    started: Instant,
    done: u64,
}

impl Pace {
    async fn one(&mut self) {
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.done as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        self.done += 1;
    }
}

/// What one round found.
#[derive(Default)]
struct Round {
    keys: u64,
    suspects: BTreeMap<SuspectKey, Suspect>,
    overflow: u64,
}

impl Round {
    fn suspect(&mut self, key: SuspectKey, suspect: Suspect) {
        if self.suspects.len() < MAX_SUSPECTS || self.suspects.contains_key(&key) {
            self.suspects.insert(key, suspect);
        } else {
            self.overflow += 1;
        }
    }
}

/// Whether the filters keep every key's name and database (no rename, no db map, no
/// plugin): then a key of the target names the master's key it came from.
fn keeps_names(filters: &[FilterConfig]) -> bool {
    filters.iter().all(|f| {
        !matches!(
            f,
            FilterConfig::Rename(_) | FilterConfig::Db(_) | FilterConfig::Plugin(_)
        )
    })
}

struct Live<'a> {
    source: &'a PikaSourceConfig,
    filters: FilterChain,
    redis: &'a RedisSinkConfig,
    pace: Pace,
}

impl Live<'_> {
    async fn master(&self, db: u32) -> anyhow::Result<MasterKeys> {
        Ok(MasterKeys::connect(
            &self.source.master,
            self.source.password.as_deref(),
            db,
            self.source.chunk.into(),
        )
        .await?)
    }

    /// Reads `key` chunk by chunk, passes each event through the filters and checks
    /// what they keep, tagged `tag`; a fingerprint of what was read.
    async fn check_key(
        &mut self,
        master: &mut MasterKeys,
        verifier: &mut Verifier,
        key: &Bytes,
        tag: u64,
    ) -> anyhow::Result<Fingerprint> {
        let mut read = master.open(key).await?;
        let mut print = Printer::default();
        while let Some(event) = master.next(&mut read).await? {
            fingerprint(&event, &mut print);
            let mut events = vec![event];
            self.filters
                .apply(&mut events)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for event in &events {
                verifier
                    .check_tagged(event, tag)
                    .await
                    .context("reading from the Redis target")?;
            }
        }
        Ok(print.finish())
    }

    /// Reads, filters and checks `keys` of `db`; those that differ go into `round`. A
    /// key that differs is read again: if the master changed it meanwhile, it is marked
    /// changing (to be compared again), not differing.
    async fn check_keys(
        &mut self,
        master: &mut MasterKeys,
        verifier: &mut Verifier,
        keys: &[Bytes],
        round: &mut Round,
    ) -> anyhow::Result<()> {
        let db = master.db();
        for window in keys.chunks(WINDOW) {
            let mut prints = Vec::with_capacity(window.len());
            for (i, key) in window.iter().enumerate() {
                self.pace.one().await;
                prints.push(self.check_key(master, verifier, key, i as u64).await?);
                round.keys += 1;
            }
            let differing = verifier
                .flush()
                .await
                .context("reading from the Redis target")?;
            for (tag, difference) in differing {
                let Some(i) = usize::try_from(tag).ok().filter(|i| *i < window.len()) else {
                    continue;
                };
                let key = &window[i];
                let mut again = master.open(key).await?;
                let mut print = Printer::default();
                while let Some(event) = master.next(&mut again).await? {
                    fingerprint(&event, &mut print);
                }
                let changing = print.finish().changed_since(&prints[i]);
                round.suspect(
                    (db, key.clone()),
                    Suspect {
                        extra: false,
                        changing,
                        difference,
                    },
                );
            }
        }
        Ok(())
    }

    /// Keys of the target's database for Pika `db` that the master does not hold.
    async fn extra_keys(
        &mut self,
        master: &mut MasterKeys,
        keys: &[Bytes],
        round: &mut Round,
    ) -> anyhow::Result<()> {
        for key in keys {
            self.pace.one().await;
            if !master.holds(key).await? {
                round.suspect(
                    (master.db(), key.clone()),
                    Suspect {
                        extra: true,
                        changing: false,
                        difference: format!(
                            "{}: in the target, not on the master",
                            display_key(key)
                        ),
                    },
                );
            }
        }
        Ok(())
    }
}

/// The master's databases to compare: the source's `dbs`, else every one INFO names.
async fn databases(source: &PikaSourceConfig) -> anyhow::Result<Vec<u32>> {
    if let Some(dbs) = &source.dbs {
        return Ok(dbs.clone());
    }
    let info = master_info::fetch(&source.master, source.password.as_deref()).await?;
    let dbs: Vec<u32> = info.binlog_offsets.keys().copied().collect();
    Ok(if dbs.is_empty() { vec![0] } else { dbs })
}

/// A uniform sample of `n` names of `db`, drawn while scanning it once (reservoir).
async fn sample_of(master: &mut MasterKeys, n: usize) -> anyhow::Result<Vec<Bytes>> {
    let mut kept: Vec<Bytes> = Vec::with_capacity(n);
    let mut seen = 0u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(master.db());
    let mut cursor = 0;
    loop {
        let (next, names) = master.scan(cursor, SCAN_PAGE).await?;
        for name in names {
            seen += 1;
            if kept.len() < n {
                kept.push(name);
            } else {
                // xorshift: enough to spread the draw.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let slot = state % seen;
                if let Some(place) = usize::try_from(slot).ok().and_then(|s| kept.get_mut(s)) {
                    *place = name;
                }
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(kept)
}

/// What a live verify found.
#[derive(Debug, Clone)]
pub struct LiveResult {
    /// Master keys compared in the first round.
    pub keys: u64,
    /// Keys not expected in the target (type-conflict and HyperLogLog policies).
    pub skipped: u64,
    pub rounds: u32,
    /// Keys that differed in every round, with what differed the last time.
    differing: BTreeMap<SuspectKey, Suspect>,
    /// Differing keys past the number kept.
    pub overflow: u64,
    pub elapsed: Duration,
}

impl LiveResult {
    /// Keys that differ from the master, as it stood still while they were compared.
    pub fn differing_keys(&self) -> u64 {
        self.differing.values().filter(|s| !s.changing).count() as u64 + self.overflow
    }

    /// Keys the master changed every time they were compared: not known to differ.
    pub fn changing_keys(&self) -> u64 {
        self.differing.values().filter(|s| s.changing).count() as u64
    }

    pub fn is_equal(&self) -> bool {
        self.differing_keys() == 0
    }

    /// The result as JSON (what `--json` prints and a cut-over report holds).
    pub fn to_json(&self) -> serde_json::Value {
        let row = |((db, key), s): (&SuspectKey, &Suspect)| {
            json!({
                "db": db,
                "key": pika_migrate_sinks::encode::envelope::bytes_value(key),
                "in_target_only": s.extra,
                "difference": s.difference,
            })
        };
        let changing: Vec<serde_json::Value> = self
            .differing
            .iter()
            .filter(|(_, s)| s.changing)
            .map(row)
            .collect();
        let rows: Vec<serde_json::Value> = self
            .differing
            .iter()
            .filter(|(_, s)| !s.changing)
            .map(|((db, key), s)| {
                json!({
                    "db": db,
                    "key": pika_migrate_sinks::encode::envelope::bytes_value(key),
                    "in_target_only": s.extra,
                    "difference": s.difference,
                })
            })
            .collect();
        json!({
            "keys": self.keys,
            "rounds": self.rounds,
            "differing_keys": self.differing_keys(),
            "not_expected_in_target": self.skipped,
            "differences": rows,
            "changing_keys": self.changing_keys(),
            "changing": changing,
            "seconds": self.elapsed.as_secs_f64(),
            "equal": self.is_equal(),
        })
    }

    /// The differing keys, one line each, then a summary line.
    pub fn print(&self) {
        for ((db, _), s) in self.differing.iter().filter(|(_, s)| !s.changing) {
            println!("db{db} {}", s.difference);
        }
        for ((db, key), _) in self.differing.iter().filter(|(_, s)| s.changing) {
            println!(
                "db{db} {}: changed on the master every time it was compared (not known to differ)",
                display_key(key)
            );
        }
        if self.overflow > 0 {
            println!("… and {} more differing keys not kept", self.overflow);
        }
        println!(
            "verified {} keys of the live master in {} round(s), {:.1} s: {} differ{}{}",
            self.keys,
            self.rounds,
            self.elapsed.as_secs_f64(),
            self.differing_keys(),
            match self.changing_keys() {
                0 => String::new(),
                n => format!(", {n} changing on the master"),
            },
            if self.skipped > 0 {
                format!(
                    ", {} not expected in Redis (type_conflict / hyperloglog policy)",
                    self.skipped
                )
            } else {
                String::new()
            }
        );
    }
}

/// `verify` of a pipeline whose source is a live master: prints the result, exit code 0
/// only when the target equals the master.
pub async fn verify_live(
    source: &PikaSourceConfig,
    filters: &[FilterConfig],
    redis: &RedisSinkConfig,
    options: &LiveOptions,
) -> anyhow::Result<ExitCode> {
    let result = compare_live(source, filters, redis, options).await?;
    if options.json {
        println!("{}", result.to_json());
    } else {
        result.print();
    }
    Ok(if result.is_equal() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Compares the live master of `source` with the Redis target, in rounds.
pub async fn compare_live(
    source: &PikaSourceConfig,
    filters: &[FilterConfig],
    redis: &RedisSinkConfig,
    options: &LiveOptions,
) -> anyhow::Result<LiveResult> {
    let chain = FilterChain::build(filters)?;
    let names_kept = keeps_names(filters);
    let mut live = Live {
        source,
        filters: chain,
        redis,
        pace: Pace {
            rate: options.rate,
            started: Instant::now(),
            done: 0,
        },
    };
    let dbs = databases(source).await?;
    let started = Instant::now();

    // Round 1: every key (or a sample), then the target's keys the master lacks.
    let mut round = Round::default();
    let mut verifier = connect(live.redis).await?;
    for &db in &dbs {
        let mut master = live.master(db).await?;
        match options.sample {
            Some(n) => {
                let keys = sample_of(&mut master, n).await?;
                live.check_keys(&mut master, &mut verifier, &keys, &mut round)
                    .await?;
            }
            None => {
                let mut cursor = 0;
                let mut seen: BTreeSet<Bytes> = BTreeSet::new();
                loop {
                    let (next, names) = master.scan(cursor, SCAN_PAGE).await?;
                    // A name holding several types can come once per type.
                    let names: Vec<Bytes> = names
                        .into_iter()
                        .filter(|n| seen.insert(n.clone()))
                        .collect();
                    live.check_keys(&mut master, &mut verifier, &names, &mut round)
                        .await?;
                    if seen.len() > 4 * SCAN_PAGE {
                        seen.clear();
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        if names_kept && options.sample.is_none() {
            let mut cursor = 0;
            loop {
                let (next, names) = verifier
                    .scan_target(db, cursor, SCAN_PAGE)
                    .await
                    .context("reading from the Redis target")?;
                live.extra_keys(&mut master, &names, &mut round).await?;
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    let first = verifier
        .finish()
        .await
        .context("reading from the Redis target")?;
    let skipped = first.skipped_keys;
    let checked = round.keys;
    let mut overflow = round.overflow;
    let mut suspects = round.suspects;

    // Later rounds: only what differed, after the stream had time to carry it.
    let mut rounds = 1;
    while rounds < options.rounds && !suspects.is_empty() {
        tokio::time::sleep(options.settle).await;
        rounds += 1;
        let mut again = Round::default();
        let mut verifier = connect(live.redis).await?;
        let mut by_db: HashMap<u32, (Vec<Bytes>, Vec<Bytes>)> = HashMap::new();
        for ((db, key), suspect) in &suspects {
            let (mine, extra) = by_db.entry(*db).or_default();
            if suspect.extra {
                extra.push(key.clone());
            } else {
                mine.push(key.clone());
            }
        }
        for (db, (keys, extra)) in by_db {
            let mut master = live.master(db).await?;
            live.check_keys(&mut master, &mut verifier, &keys, &mut again)
                .await?;
            let still_there = verifier
                .target_has(db, &extra)
                .await
                .context("reading from the Redis target")?;
            live.extra_keys(&mut master, &still_there, &mut again)
                .await?;
        }
        verifier
            .finish()
            .await
            .context("reading from the Redis target")?;
        suspects = again.suspects;
        overflow = again.overflow.min(overflow);
    }

    Ok(LiveResult {
        keys: checked,
        skipped,
        rounds,
        differing: suspects,
        overflow,
        elapsed: started.elapsed(),
    })
}

async fn connect(redis: &RedisSinkConfig) -> anyhow::Result<Verifier> {
    Verifier::connect(redis)
        .await
        .context("connecting to the Redis target")
}
