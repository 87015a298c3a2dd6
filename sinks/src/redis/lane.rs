//! A lane: one connection that owns every key hashing to it, so each key's commands stay
//! in order while lanes run in parallel. It gathers commands into pipelines of up to
//! `batch` (or whatever arrived within `linger`), reads and checks every reply, and on a
//! lost connection reconnects with backoff and resends the pipeline in order (`send`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use pika_migrate_core::display::display_key;
use pika_migrate_core::event::{DataType, Position};
use redis::Value;
use tokio::sync::{mpsc, watch};

use super::checkpoint::{Applied, Markers};
use super::cluster::slot_of;
use super::config::OnError;
use super::conn::reply_error;
use super::endpoint::{Connected, Endpoint, EndpointError};
use super::guard::{guard, Guard};
use super::redirect::redirection;
use super::run::{argument_at, Run, RunEntry};
use super::send::Replies;
use super::wait::WaitSettings;
use super::wire::Request;
use crate::encode::commands::TypeConflict;

/// A command's arguments (name first): a list, or already encoded as RESP. Snapshot
/// commands, nearly all of a full sync, are encoded when the sink takes them, so their
/// list and the `Bytes` of each argument are freed at once instead of waiting in the
/// lanes' queues (memory the allocator then had to take fresh), and the lane copies one
/// slice per command into its request instead of each argument.
#[derive(Debug, Clone)]
pub enum Args {
    List(Vec<Bytes>),
    Resp {
        bytes: Bytes,
        /// Where the key sits in `bytes`.
        key: std::ops::Range<usize>,
    },
    /// Several snapshot commands encoded back to back (`run`).
    Run(Run),
}

impl Args {
    /// `argv` encoded into `buf` (see [`wire::pack`]); its key is `argv[1]`.
    pub fn packed(buf: &mut bytes::BytesMut, argv: &[Bytes]) -> Args {
        let (bytes, key) = super::wire::pack(buf, argv, 1);
        Args::Resp { bytes, key }
    }

    /// The arguments as a list (a RESP command parsed back into slices of it).
    pub fn list(&self) -> std::borrow::Cow<'_, [Bytes]> {
        match self {
            Args::List(argv) => argv.as_slice().into(),
            Args::Resp { bytes, .. } => pika_migrate_core::resp::parse_command(bytes)
                .unwrap_or_default()
                .into(),
            // A run's first command: a run is taken apart before anything reads one.
            Args::Run(run) => run
                .commands()
                .next()
                .and_then(|(bytes, _, _)| pika_migrate_core::resp::parse_command(&bytes).ok())
                .unwrap_or_default()
                .into(),
        }
    }

    /// The command's name, for a message.
    pub fn name(&self) -> String {
        self.list()
            .first()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default()
    }

    pub(super) fn write_to(&self, request: &mut Request) {
        match self {
            Args::List(argv) => request.push(argv),
            Args::Resp { bytes, .. } => request.push_resp(bytes),
            Args::Run(run) => request.push_run(&run.bytes, run.ends()),
        }
    }

    fn memory(&self) -> usize {
        match self {
            Args::List(argv) => argv.iter().map(|a| a.len() + 64).sum(),
            Args::Resp { bytes, .. } => bytes.len() + 64,
            Args::Run(run) => run.bytes.len() + 64 + run.len() * size_of::<RunEntry>(),
        }
    }
}

/// A command bound for Redis, with what is needed to handle its reply.
#[derive(Debug, Clone)]
pub struct LaneCommand {
    pub argv: Args,
    /// Index in `argv` of the key the lane was chosen by (None for key-less commands).
    pub key_index: Option<usize>,
    /// The data type the command writes, for a WRONGTYPE reply.
    pub writes: Option<DataType>,
    /// Applying it twice in a row leaves what applying it once does (snapshot SET,
    /// HSET, SADD, ZADD, DEL, PEXPIREAT): a pipeline of only such commands needs no
    /// transaction to be resent safely.
    pub idempotent: bool,
    /// The Redis database it goes to.
    pub db: u32,
    /// The Pika DB it comes from: the binlog its position is in.
    pub source_db: u32,
    pub position: Position,
}

impl LaneCommand {
    /// Estimated memory: argument bytes plus a `Bytes` header and allocation each.
    pub(super) fn memory(&self) -> usize {
        self.argv.memory()
    }

    /// How many commands it is: a run's, or one.
    pub(super) fn count(&self) -> usize {
        match &self.argv {
            Args::Run(run) => run.len(),
            _ => 1,
        }
    }

    /// Its commands one by one: a run taken apart (each with its own position and
    /// type), anything else as it is.
    pub(super) fn singles(self) -> Vec<LaneCommand> {
        let Args::Run(run) = &self.argv else {
            return vec![self];
        };
        run.commands()
            .map(|(bytes, entry, position)| {
                let key = argument_at(&bytes, 1).unwrap_or(0..0);
                LaneCommand {
                    argv: Args::Resp { bytes, key },
                    key_index: Some(1),
                    writes: entry.writes,
                    idempotent: self.idempotent,
                    db: self.db,
                    source_db: self.source_db,
                    position,
                }
            })
            .collect()
    }

    pub(super) fn key(&self) -> &[u8] {
        match &self.argv {
            Args::List(argv) => self
                .key_index
                .and_then(|i| argv.get(i))
                .map_or(&[][..], |k| k.as_ref()),
            Args::Resp { bytes, key } => bytes.get(key.clone()).unwrap_or_default(),
            Args::Run(run) => run.first_key(),
        }
    }
}

/// `commands` with every run taken apart (`LaneCommand::singles`).
pub(super) fn singles(commands: Vec<LaneCommand>) -> Vec<LaneCommand> {
    if !commands.iter().any(|c| matches!(c.argv, Args::Run(_))) {
        return commands;
    }
    commands
        .into_iter()
        .flat_map(LaneCommand::singles)
        .collect()
}

/// How many commands `commands` are (a run counts its own).
pub(super) fn count(commands: &[LaneCommand]) -> usize {
    commands.iter().map(LaneCommand::count).sum()
}

/// Everything one `write` of the sink gave this lane (possibly nothing), numbered.
pub struct LaneBatch {
    pub seq: u64,
    pub commands: Vec<LaneCommand>,
}

/// Counters shared by all lanes, for the run summary and metrics.
#[derive(Debug, Default)]
pub struct LaneStats {
    pub commands: AtomicU64,
    pub pipelines: AtomicU64,
    pub reconnects: AtomicU64,
    /// Binlog writes skipped because Redis holds the key as another type (first-wins).
    pub conflicts_skipped: AtomicU64,
    /// Writes redone after deleting the other type (overwrite).
    pub conflicts_overwritten: AtomicU64,
    /// Writes redone under `key:<type>` (suffix).
    pub conflicts_renamed: AtomicU64,
    /// Commands Redis refused and `on_error: skip` let pass.
    pub errors_skipped: AtomicU64,
    /// Binlog commands not sent again because this lane's checkpoint says Redis
    /// already applied them (a resumed stream).
    pub already_applied: AtomicU64,
    /// Commands over several cluster slots run by `cross_slot`.
    pub cross_slot: AtomicU64,
    /// Transactions that ran but whose replies were lost with their connection: a
    /// command Redis refused in one of them went unseen.
    pub replies_lost: AtomicU64,
    /// Lanes failing to write right now (reconnecting, or waiting for a replica), and
    /// the last reason one gave.
    pub failing: AtomicUsize,
    pub failure: Mutex<Option<String>>,
    /// Keys already logged for a type conflict (bounded).
    logged_conflicts: Mutex<HashSet<Vec<u8>>>,
}

fn memory(commands: &[LaneCommand]) -> usize {
    commands.iter().map(LaneCommand::memory).sum()
}

/// Estimated memory after which a lane stops gathering and sends its transaction even
/// if `batch` commands have not gathered, so big values do not pile up (while it is
/// sent, the pipeline's commands and their packed form hold about as much again).
const PIPELINE_BYTES: usize = 1 << 20;

/// How long a lane waits with nothing to send before it checks its connection.
const IDLE_PING: Duration = Duration::from_secs(5);

/// How many distinct keys are logged for conflicts and errors before only counting.
const LOGGED_KEYS: usize = 1000;

impl LaneStats {
    pub(super) fn log_conflict_once(
        &self,
        key: &[u8],
        writes: Option<DataType>,
        policy: TypeConflict,
    ) {
        let Ok(mut logged) = self.logged_conflicts.lock() else {
            return;
        };
        if logged.len() < LOGGED_KEYS && logged.insert(key.to_vec()) {
            tracing::warn!(
                key = %display_key(key),
                writes = writes.map_or("?", DataType::as_str),
                policy = ?policy,
                "write to a key Redis holds as another type (Pika allowed both)"
            );
        }
    }
}

/// A lane that cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    #[error("Redis refused {command} on key {key:?} at {position}: {reply}")]
    Command {
        command: String,
        key: String,
        position: Position,
        reply: String,
    },
    #[error("lost the connection and gave up after {seconds} s: {last}")]
    GaveUp { seconds: u64, last: String },
    #[error("the master's replicas did not confirm a pipeline within {seconds} s ({got} of {wanted} confirmed); set wait_replicas lower (0 to not wait) or fix the replicas")]
    NotReplicated { seconds: u64, got: i64, wanted: u32 },
    #[error("{server} lacks writes it had acknowledged: lane {lane}'s checkpoint there is at {found}, the lane had applied up to {applied}. A restart without persistence, or a failover to a replica that had not received them, lost them (behind sentinels leave wait_replicas at `all`, its default there); restore the target or start the migration again")]
    LostOnFailover {
        server: String,
        lane: usize,
        found: String,
        applied: String,
    },
    #[error("{server} refused SELECT {db}: {reply}. It has no database {db} for the Pika database going there: map that one to a database it has with a `db` filter (`map: {{N: 0}}`), adding a `rename` that names `{{db}}` (`add_prefix: \"db{{db}}:\"`) if it then shares a database with another")]
    Database {
        server: String,
        db: u32,
        reply: String,
    },
    #[error(transparent)]
    Connect(Box<EndpointError>),
}

impl LaneError {
    /// The process exit code: 69 for a target that stayed unreachable, 78 for a
    /// database it lacks, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            LaneError::GaveUp { .. } => 69,
            LaneError::Database { .. } => 78,
            LaneError::Connect(e) => e.exit_code(),
            _ => 1,
        }
    }
}

impl From<EndpointError> for LaneError {
    fn from(e: EndpointError) -> Self {
        LaneError::Connect(Box::new(e))
    }
}

pub struct LaneSettings {
    pub batch: usize,
    pub linger: Duration,
    pub retry_for: Duration,
    pub on_error: OnError,
    pub type_conflict: TypeConflict,
    /// The target is a Pika: no Lua, so no type guards (a WRONGTYPE from Pika 4.0 is
    /// handled after the transaction, as `first-wins` always is).
    pub pika_target: bool,
    /// Distinguishes this run's transactions from an earlier run's.
    pub run_id: String,
    /// In a cluster: a hash tag per slot (transactions are cut by slot, each with the
    /// lane's checkpoint key in its slot), and the flag a MOVED reply raises so the sink
    /// reloads the slot map.
    pub cluster: Option<ClusterSettings>,
    /// `WAIT` for replicas after every pipeline (`wait_replicas`).
    pub wait: Option<WaitSettings>,
    /// The names of this migration's checkpoint keys.
    pub markers: Markers,
}

pub struct ClusterSettings {
    pub tags: Vec<String>,
    pub moved: AtomicBool,
}

pub struct Lane {
    pub id: usize,
    /// The server this lane writes to (in a cluster, its master; behind sentinels,
    /// whichever is master).
    pub endpoint: Endpoint,
    /// The url's database: where the checkpoint keys live, and where the connection is
    /// back after every pipeline.
    pub home_db: u32,
    pub settings: Arc<LaneSettings>,
    pub rx: mpsc::Receiver<LaneBatch>,
    /// The highest batch number whose commands are all applied.
    pub done: watch::Sender<u64>,
    pub stats: Arc<LaneStats>,
    pub conn: Option<Connected>,
    /// The connection the lane last gave up on: its server and client id there.
    pub lost: Option<(String, i64)>,
    /// Whether the lane reconnected outside a transaction (reading keys, an idle
    /// PING): the next transaction first checks the server as after any reconnect.
    pub check_server: bool,
    /// Transactions sent so far (numbers the marker tokens).
    pub pipelines_sent: u64,
    /// Per Pika DB, the last binlog position this lane applied (its checkpoint key's
    /// positions): binlog commands of that DB at or before it are already in Redis and
    /// are skipped.
    pub applied: Applied,
    /// In a cluster, the same per slot: what the lane's checkpoint key in that slot
    /// holds (read before the lane's first transaction there).
    pub slot_applied: HashMap<u16, Applied>,
    /// Lanes of the sink (per master in a cluster), recorded beside the position.
    pub lanes: usize,
    /// Whether the lane counts itself among the failing ones (`LaneStats::failing`).
    pub failing: bool,
}

/// Whether `command` is a binlog command at or before what `applied` holds of its DB.
fn already_applied(command: &LaneCommand, applied: &Applied) -> bool {
    match command.position {
        Position::Binlog { at, .. } => applied.covers(command.source_db, at),
        Position::Snapshot { .. } => false,
    }
}

impl Lane {
    pub async fn run(mut self) -> Result<(), LaneError> {
        let mut pending: Vec<LaneCommand> = Vec::new();
        loop {
            let first = match tokio::time::timeout(IDLE_PING, self.rx.recv()).await {
                Ok(Some(first)) => first,
                Ok(None) => return Ok(()),
                Err(_) => {
                    self.ping().await?;
                    continue;
                }
            };
            let mut seq = first.seq;
            pending.extend(first.commands);
            let mut closed = false;
            if !pending.is_empty() {
                let deadline = tokio::time::Instant::now() + self.settings.linger;
                let mut gathered = memory(&pending);
                let mut commands = count(&pending);
                while commands < self.settings.batch && gathered < PIPELINE_BYTES {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(more)) => {
                            seq = more.seq;
                            gathered += memory(&more.commands);
                            commands += count(&more.commands);
                            pending.extend(more.commands);
                        }
                        Ok(None) => {
                            closed = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            if self.settings.cluster.is_none() {
                // In a cluster each slot's key holds its own positions: `apply` skips.
                let applied = std::mem::take(&mut self.applied);
                self.skip_applied(&mut pending, &applied);
                self.applied = applied;
            }
            while !pending.is_empty() {
                let take = self.next_pipeline_len(&pending);
                let chunk: Vec<LaneCommand> = pending.drain(..take).collect();
                if self.settings.pika_target {
                    self.apply_keeping_ttls(chunk).await?;
                } else {
                    self.apply(chunk).await?;
                }
            }
            let _ = self.done.send(seq);
            if closed {
                return Ok(());
            }
        }
    }

    /// How many of `pending` go into the next transaction: commands up to `batch` (a
    /// run whole), and no more than [`PIPELINE_BYTES`] of arguments (at least one).
    fn next_pipeline_len(&self, pending: &[LaneCommand]) -> usize {
        let (mut bytes, mut commands) = (0, 0);
        for (i, c) in pending.iter().enumerate() {
            if i > 0 && commands + c.count() > self.settings.batch.max(1) {
                return i;
            }
            bytes += c.memory();
            commands += c.count();
            if bytes >= PIPELINE_BYTES {
                return i + 1;
            }
        }
        pending.len()
    }

    /// Drops from `commands` the binlog commands `applied` already holds, counting them.
    fn skip_applied(&self, commands: &mut Vec<LaneCommand>, applied: &Applied) {
        let before = commands.len();
        commands.retain(|c| !already_applied(c, applied));
        if commands.len() < before {
            self.stats
                .already_applied
                .fetch_add((before - commands.len()) as u64, Ordering::Relaxed);
        }
    }

    /// Into a Pika, which has no `SET … KEEPTTL`: the commands before one are applied,
    /// then the key's time left is read (this lane is the only writer of its keys, so
    /// nothing changes it in between) and the SET goes with a PEXPIRE of that time.
    async fn apply_keeping_ttls(
        &mut self,
        mut commands: Vec<LaneCommand>,
    ) -> Result<(), LaneError> {
        while let Some(at) = commands
            .iter()
            // A binlog `SET … KEEPTTL`: snapshot commands (packed) never keep a TTL.
            .position(
                |c| matches!(&c.argv, Args::List(argv) if super::pika_target::keeps_ttl(argv)),
            )
        {
            let mut rest = commands.split_off(at);
            if !commands.is_empty() {
                self.apply(commands).await?;
            }
            let keeping = rest.remove(0);
            let left = self.pttl(keeping.key()).await?;
            commands = super::pika_target::keeping_ttl(&keeping.argv.list(), left)
                .into_iter()
                .map(|argv| LaneCommand {
                    argv: Args::List(argv),
                    idempotent: false,
                    ..keeping.clone()
                })
                .chain(rest)
                .collect();
        }
        if commands.is_empty() {
            return Ok(());
        }
        self.apply(commands).await
    }

    /// Sends one pipeline, then handles every reply. In a cluster, one transaction per
    /// slot, in order of first appearance (a key's commands keep their order).
    async fn apply(&mut self, commands: Vec<LaneCommand>) -> Result<(), LaneError> {
        let plain = commands.iter().all(|c| c.idempotent);
        let Some(cluster) = &self.settings.cluster else {
            // A transaction handles each command's reply on its own (`send::unpack`).
            let commands = if plain { commands } else { singles(commands) };
            // One pipeline per run of commands for the same database.
            let marker = self.settings.markers.lane(self.id);
            let mut run = commands;
            while let Some(db) = run.first().map(|c| c.db) {
                let same = run.iter().take_while(|c| c.db == db).count();
                let rest = run.split_off(same);
                self.apply_one(run, &marker, None).await?;
                run = rest;
            }
            return Ok(());
        };
        // The lane among its master's: slots move between masters, keys do not move
        // between hash lanes.
        let lane = self.id % self.lanes.max(1);
        if count(&commands) > 1 && plain {
            let slot = commands.first().map_or(0, |c| slot_of(c.key()));
            let marker = self
                .settings
                .markers
                .slot(lane, &cluster.tags[slot as usize]);
            if self.apply_across_slots(&commands, &marker, slot).await? {
                return Ok(());
            }
        }
        // Slot by slot, in transactions: each command on its own.
        let commands = singles(commands);
        let Some(cluster) = &self.settings.cluster else {
            return Ok(());
        };
        let mut groups: Vec<(u16, Vec<LaneCommand>)> = Vec::new();
        for c in commands {
            let slot = slot_of(c.key());
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, g)) => g.push(c),
                None => groups.push((slot, vec![c])),
            }
        }
        let markers: Vec<String> = groups
            .iter()
            .map(|(slot, _)| {
                self.settings
                    .markers
                    .slot(lane, &cluster.tags[*slot as usize])
            })
            .collect();
        // Every slot a transaction will write the key of is read first (in one round
        // trip): written without, its positions of another database would be lost.
        let unknown: Vec<u16> = groups
            .iter()
            .filter(|(slot, g)| {
                !self.slot_applied.contains_key(slot) && !g.iter().all(|c| c.idempotent)
            })
            .map(|(slot, _)| *slot)
            .collect();
        self.load_slots(&unknown, lane).await?;
        for ((slot, mut group), marker) in groups.into_iter().zip(markers) {
            if let Some(applied) = self.slot_applied.get(&slot).cloned() {
                self.skip_applied(&mut group, &applied);
                if group.is_empty() {
                    continue;
                }
            }
            self.apply_one(group, &marker, Some(slot)).await?;
        }
        Ok(())
    }

    /// Reads this lane's checkpoint keys in `slots` and keeps what they hold (none:
    /// nothing applied). A key written by a run of another lane count: the keys of
    /// every lane of that run in the slot are read and the lowest taken (a command may
    /// then apply twice, never be lost).
    async fn load_slots(&mut self, slots: &[u16], lane: usize) -> Result<(), LaneError> {
        let Some(cluster) = &self.settings.cluster else {
            return Ok(());
        };
        let tags: Vec<String> = slots
            .iter()
            .map(|slot| cluster.tags[*slot as usize].clone())
            .collect();
        let markers = self.settings.markers.clone();
        let mine: Vec<String> = tags.iter().map(|tag| markers.slot(lane, tag)).collect();
        let found = self.read_markers(&mine).await?;
        for ((slot, tag), found) in slots.iter().zip(&tags).zip(found) {
            let applied = match found {
                None => Applied::default(),
                Some(c) if c.lanes == self.lanes => c.applied,
                Some(c) => {
                    let all: Vec<String> = (0..c.lanes).map(|l| markers.slot(l, tag)).collect();
                    let positions: Vec<Applied> = self
                        .read_markers(&all)
                        .await?
                        .into_iter()
                        .map(|c| c.map(|c| c.applied).unwrap_or_default())
                        .collect();
                    Applied::lowest(positions.iter())
                }
            };
            self.slot_applied.insert(*slot, applied);
        }
        Ok(())
    }

    async fn apply_one(
        &mut self,
        commands: Vec<LaneCommand>,
        marker: &str,
        slot: Option<u16>,
    ) -> Result<(), LaneError> {
        let mut replies = match self.send(&commands, marker, slot).await? {
            Replies::Known(replies) => replies,
            Replies::Lost => {
                self.replies_lost(&commands);
                return Ok(());
            }
        };
        if let Some((addr, asking)) = redirection(&replies) {
            replies = match self
                .redirected(&commands, marker, slot, &addr, asking)
                .await?
            {
                Replies::Known(replies) => replies,
                Replies::Lost => {
                    self.replies_lost(&commands);
                    return Ok(());
                }
            };
        }
        self.settle(commands, replies, marker, slot).await
    }

    /// In a cluster, a pipeline of only snapshot commands safe to repeat goes out whole
    /// to the lane's master, whatever slots its keys are in: it writes no checkpoint
    /// key, so nothing needs it cut by slot (cut, a dump of random keys went out one
    /// command per round trip, 15 times slower). Whether it was applied (`true`), or a
    /// slot has moved: then nothing is settled, and the caller applies it again slot by
    /// slot, following the redirections (applying such commands twice leaves what once
    /// does).
    async fn apply_across_slots(
        &mut self,
        commands: &[LaneCommand],
        marker: &str,
        slot: u16,
    ) -> Result<bool, LaneError> {
        let replies = match self.send(commands, marker, Some(slot)).await? {
            Replies::Known(replies) => replies,
            Replies::Lost => {
                self.replies_lost(commands);
                return Ok(true);
            }
        };
        if redirection(&replies).is_some() {
            if let Some(cluster) = &self.settings.cluster {
                cluster.moved.store(true, Ordering::SeqCst);
            }
            return Ok(false);
        }
        self.settle(commands.to_vec(), replies, marker, Some(slot))
            .await?;
        Ok(true)
    }

    /// Handles the replies of `commands`: a refused one by the conflict policy or
    /// `on_error`, the fix-ups that needs sent after them.
    async fn settle(
        &mut self,
        commands: Vec<LaneCommand>,
        replies: Vec<Value>,
        marker: &str,
        slot: Option<u16>,
    ) -> Result<(), LaneError> {
        let mut fixups = Vec::new();
        for (command, reply) in commands.into_iter().zip(replies) {
            match (&command.argv, reply) {
                // A run with a refused command: its replies, one per command.
                (Args::Run(_), Value::Array(replies)) => {
                    for (command, reply) in command.singles().into_iter().zip(replies) {
                        if let Some(text) = reply_error(&reply) {
                            self.refused(command, text, &mut fixups)?;
                        }
                    }
                }
                (_, reply) => {
                    if let Some(text) = reply_error(&reply) {
                        self.refused(command, text, &mut fixups)?;
                    }
                }
            }
        }
        if !fixups.is_empty() {
            let replies = match self.send(&fixups, marker, slot).await? {
                Replies::Known(replies) => replies,
                Replies::Lost => {
                    self.replies_lost(&fixups);
                    return Ok(());
                }
            };
            for (command, reply) in fixups.into_iter().zip(replies) {
                if let Some(text) = reply_error(&reply) {
                    self.refused_finally(&command, text)?;
                }
            }
        }
        Ok(())
    }

    /// A transaction found applied after its connection was lost: its replies are gone,
    /// and with them any refusal `on_error` or the counts would have seen. Said, and
    /// counted, rather than taken for success.
    pub(super) fn replies_lost(&self, commands: &[LaneCommand]) {
        self.stats.replies_lost.fetch_add(1, Ordering::Relaxed);
        let first = commands.first().map(|c| c.position.to_string());
        let last = commands.last().map(|c| c.position.to_string());
        tracing::warn!(
            lane = self.id,
            commands = count(commands),
            first = first.as_deref().unwrap_or("-"),
            last = last.as_deref().unwrap_or("-"),
            "a transaction ran but its replies were lost with the connection: whether Redis refused one of its commands is unknown (on_error could not apply to them)"
        );
    }

    /// The scripts that apply `type_conflict` to `command` inside its transaction
    /// (`guard`): for a binlog command writing a type to its key, under `overwrite` or
    /// `suffix`. Snapshot commands need none: a dump's key is deleted before it is
    /// written, and each key's other types are decided when it is encoded.
    pub(super) fn guard_of(&self, command: &LaneCommand) -> Option<Guard> {
        let writes = command.writes?;
        command.key_index?;
        (!self.settings.pika_target).then_some(())?;
        matches!(command.position, Position::Binlog { .. }).then_some(())?;
        guard(self.settings.type_conflict, command.key(), writes)
    }

    fn guarded(&self, command: &LaneCommand) -> bool {
        self.guard_of(command).is_some()
    }

    /// A refused command: a type conflict follows the policy, anything else `on_error`.
    fn refused(
        &self,
        command: LaneCommand,
        text: String,
        fixups: &mut Vec<LaneCommand>,
    ) -> Result<(), LaneError> {
        if !text.starts_with("WRONGTYPE") || command.key_index.is_none() {
            return self.refused_finally(&command, text);
        }
        let stats = &self.stats;
        let policy = self.settings.type_conflict;
        if policy != TypeConflict::FirstWins && self.guarded(&command) {
            // The guard decided inside the transaction; a WRONGTYPE left is another
            // key's, which the policy does not cover.
            return self.refused_finally(&command, text);
        }
        stats.log_conflict_once(command.key(), command.writes, policy);
        match policy {
            TypeConflict::FirstWins => {
                stats.conflicts_skipped.fetch_add(1, Ordering::Relaxed);
            }
            TypeConflict::Overwrite => {
                stats.conflicts_overwritten.fetch_add(1, Ordering::Relaxed);
                fixups.push(LaneCommand {
                    argv: Args::List(vec![
                        Bytes::from_static(b"DEL"),
                        Bytes::copy_from_slice(command.key()),
                    ]),
                    key_index: Some(1),
                    writes: None,
                    idempotent: command.idempotent,
                    db: command.db,
                    source_db: command.source_db,
                    position: command.position,
                });
                fixups.push(command);
            }
            TypeConflict::Suffix => {
                stats.conflicts_renamed.fetch_add(1, Ordering::Relaxed);
                let mut command = command;
                if let Some(i) = command.key_index {
                    let t = command.writes.map_or("other", DataType::as_str);
                    let mut argv = command.argv.list().into_owned();
                    if let Some(key) = argv.get_mut(i) {
                        let mut renamed = key.to_vec();
                        renamed.push(b':');
                        renamed.extend_from_slice(t.as_bytes());
                        *key = Bytes::from(renamed);
                    }
                    command.argv = Args::List(argv);
                }
                fixups.push(command);
            }
        }
        Ok(())
    }

    fn refused_finally(&self, command: &LaneCommand, reply: String) -> Result<(), LaneError> {
        let name = command.argv.name();
        if self.settings.on_error == OnError::Skip {
            let n = self.stats.errors_skipped.fetch_add(1, Ordering::Relaxed);
            if n < LOGGED_KEYS as u64 {
                tracing::warn!(lane = self.id, command = %name, key = %display_key(command.key()), position = %command.position, reply = %reply, "Redis refused a command; skipped (on_error: skip)");
            }
            return Ok(());
        }
        Err(LaneError::Command {
            command: name,
            key: display_key(command.key()),
            position: command.position,
            reply,
        })
    }
}
