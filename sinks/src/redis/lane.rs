//! A lane: one connection that owns every key hashing to it, so each key's commands stay
//! in order while lanes run in parallel. It gathers commands into pipelines of up to
//! `batch` (or whatever arrived within `linger`), reads and checks every reply, and on a
//! lost connection reconnects with backoff and resends the pipeline in order.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pika_migrate_core::display::display_key;
use pika_migrate_core::event::{BinlogOffset, DataType, Position};
use pika_migrate_core::resp::encode_command;
use tokio::sync::{mpsc, watch};

use super::cluster::slot_of;
use super::config::OnError;
use super::conn::{ConnectError, Connection};
use super::reply::Reply;
use super::url::Target;
use crate::encode::commands::TypeConflict;

/// A command bound for Redis, with what is needed to handle its reply.
#[derive(Debug, Clone)]
pub struct LaneCommand {
    pub argv: Vec<Bytes>,
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
    pub position: Position,
}

impl LaneCommand {
    /// Estimated memory: argument bytes plus a `Bytes` header and allocation each.
    fn memory(&self) -> usize {
        self.argv.iter().map(|a| a.len() + 64).sum()
    }

    fn key(&self) -> &[u8] {
        self.key_index
            .and_then(|i| self.argv.get(i))
            .map_or(&[][..], |k| k.as_ref())
    }
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
    /// Keys already logged for a type conflict (bounded).
    logged_conflicts: Mutex<HashSet<Vec<u8>>>,
}

fn memory(commands: &[LaneCommand]) -> usize {
    commands.iter().map(LaneCommand::memory).sum()
}

/// Estimated memory after which a lane stops gathering and sends its transaction even
/// if `batch` commands have not gathered, so big values do not pile up (each lane also
/// keeps an encoding buffer up to twice this).
const PIPELINE_BYTES: usize = 1 << 20;

/// How many distinct keys are logged for conflicts and errors before only counting.
const LOGGED_KEYS: usize = 1000;

impl LaneStats {
    fn log_conflict_once(&self, key: &[u8], writes: Option<DataType>, policy: TypeConflict) {
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
    #[error(transparent)]
    Connect(Box<ConnectError>),
}

impl From<ConnectError> for LaneError {
    fn from(e: ConnectError) -> Self {
        LaneError::Connect(Box::new(e))
    }
}

pub struct LaneSettings {
    pub batch: usize,
    pub linger: Duration,
    pub retry_for: Duration,
    pub on_error: OnError,
    pub type_conflict: TypeConflict,
    /// Distinguishes this run's transactions from an earlier run's.
    pub run_id: String,
    /// In a cluster: a hash tag per slot (transactions are cut by slot, each with the
    /// lane's checkpoint key in its slot), and the flag a MOVED reply raises so the sink
    /// reloads the slot map.
    pub cluster: Option<ClusterSettings>,
}

pub struct ClusterSettings {
    pub tags: Vec<String>,
    pub moved: AtomicBool,
}

pub struct Lane {
    pub id: usize,
    /// The server this lane writes to (in a cluster, its master).
    pub target: Target,
    pub settings: Arc<LaneSettings>,
    pub rx: mpsc::Receiver<LaneBatch>,
    /// The highest batch number whose commands are all applied.
    pub done: watch::Sender<u64>,
    pub stats: Arc<LaneStats>,
    pub conn: Option<Connection>,
    /// Transactions sent so far (numbers the marker tokens).
    pub pipelines_sent: u64,
    /// The encoding buffer, kept between pipelines.
    pub encoded: Vec<u8>,
    /// The last binlog position this lane applied (its checkpoint key's position):
    /// binlog commands at or before it are already in Redis and are skipped.
    pub applied_binlog: Option<BinlogOffset>,
    /// Lanes of the sink, recorded beside the position.
    pub lanes: usize,
}

/// Whether `command` is a binlog command at or before `applied`.
fn already_applied(command: &LaneCommand, applied: Option<BinlogOffset>) -> bool {
    match (command.position, applied) {
        (Position::Binlog { at, .. }, Some(applied)) => at <= applied,
        _ => false,
    }
}

impl Lane {
    pub async fn run(mut self) -> Result<(), LaneError> {
        let mut pending: Vec<LaneCommand> = Vec::new();
        loop {
            let Some(first) = self.rx.recv().await else {
                return Ok(());
            };
            let mut seq = first.seq;
            pending.extend(first.commands);
            let mut closed = false;
            if !pending.is_empty() {
                let deadline = tokio::time::Instant::now() + self.settings.linger;
                let mut gathered = memory(&pending);
                while pending.len() < self.settings.batch && gathered < PIPELINE_BYTES {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(more)) => {
                            seq = more.seq;
                            gathered += memory(&more.commands);
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
            let before = pending.len();
            let applied = self.applied_binlog;
            pending.retain(|c| !already_applied(c, applied));
            if pending.len() < before {
                self.stats
                    .already_applied
                    .fetch_add((before - pending.len()) as u64, Ordering::Relaxed);
            }
            while !pending.is_empty() {
                let take = self.next_pipeline_len(&pending);
                let chunk: Vec<LaneCommand> = pending.drain(..take).collect();
                self.apply(chunk).await?;
            }
            let _ = self.done.send(seq);
            if closed {
                return Ok(());
            }
        }
    }

    /// How many of `pending` go into the next transaction: up to `batch` commands, and
    /// no more than [`PIPELINE_BYTES`] of arguments (at least one command).
    fn next_pipeline_len(&self, pending: &[LaneCommand]) -> usize {
        let mut bytes = 0;
        let limit = pending.len().min(self.settings.batch.max(1));
        for (i, c) in pending[..limit].iter().enumerate() {
            bytes += c.memory();
            if bytes >= PIPELINE_BYTES {
                return i + 1;
            }
        }
        limit
    }

    /// Sends one pipeline, then handles every reply. In a cluster, one transaction per
    /// slot, in order of first appearance (a key's commands keep their order).
    async fn apply(&mut self, commands: Vec<LaneCommand>) -> Result<(), LaneError> {
        let Some(cluster) = &self.settings.cluster else {
            // One pipeline per run of commands for the same database.
            let marker = checkpoint_key(self.id);
            let mut run = commands;
            while let Some(db) = run.first().map(|c| c.db) {
                let same = run.iter().take_while(|c| c.db == db).count();
                let rest = run.split_off(same);
                self.apply_one(run, &marker).await?;
                run = rest;
            }
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
                format!(
                    "{}:{{{}}}",
                    checkpoint_key(self.id),
                    cluster.tags[*slot as usize]
                )
            })
            .collect();
        for ((_, group), marker) in groups.into_iter().zip(markers) {
            self.apply_one(group, &marker).await?;
        }
        Ok(())
    }

    async fn apply_one(
        &mut self,
        commands: Vec<LaneCommand>,
        marker: &str,
    ) -> Result<(), LaneError> {
        let mut replies = self.send(&commands, marker).await?;
        if let Some((addr, asking)) = redirection(&replies) {
            replies = self.redirected(&commands, marker, &addr, asking).await?;
        }
        let mut fixups = Vec::new();
        for (command, reply) in commands.into_iter().zip(replies) {
            if let Reply::Error(text) = reply {
                self.refused(command, text, &mut fixups)?;
            }
        }
        if !fixups.is_empty() {
            let replies = self.send(&fixups, marker).await?;
            for (command, reply) in fixups.into_iter().zip(replies) {
                if let Reply::Error(text) = reply {
                    self.refused_finally(&command, text)?;
                }
            }
        }
        Ok(())
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
        stats.log_conflict_once(command.key(), command.writes, policy);
        match policy {
            TypeConflict::FirstWins => {
                stats.conflicts_skipped.fetch_add(1, Ordering::Relaxed);
            }
            TypeConflict::Overwrite => {
                stats.conflicts_overwritten.fetch_add(1, Ordering::Relaxed);
                fixups.push(LaneCommand {
                    argv: vec![
                        Bytes::from_static(b"DEL"),
                        Bytes::copy_from_slice(command.key()),
                    ],
                    key_index: Some(1),
                    writes: None,
                    idempotent: command.idempotent,
                    db: command.db,
                    position: command.position,
                });
                fixups.push(command);
            }
            TypeConflict::Suffix => {
                stats.conflicts_renamed.fetch_add(1, Ordering::Relaxed);
                let mut command = command;
                if let Some(i) = command.key_index {
                    let t = command.writes.map_or("other", DataType::as_str);
                    let mut renamed = command.argv[i].to_vec();
                    renamed.push(b':');
                    renamed.extend_from_slice(t.as_bytes());
                    command.argv[i] = Bytes::from(renamed);
                }
                fixups.push(command);
            }
        }
        Ok(())
    }

    fn refused_finally(&self, command: &LaneCommand, reply: String) -> Result<(), LaneError> {
        let name = command
            .argv
            .first()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
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

    /// Sends `commands` as one transaction and returns their replies. While the server
    /// is unreachable it reconnects with backoff; after a reconnect it reads the lane's
    /// marker key to learn whether the transaction ran before the reply was lost, and
    /// resends it only if it did not. A transaction that never reached EXEC is discarded
    /// by Redis, so nothing runs twice.
    async fn send(
        &mut self,
        commands: &[LaneCommand],
        marker: &str,
    ) -> Result<Vec<Reply>, LaneError> {
        self.pipelines_sent += 1;
        let token = format!("{}:{}", self.settings.run_id, self.pipelines_sent);
        let applied = commands
            .iter()
            .filter_map(|c| match c.position {
                Position::Binlog { at, .. } => Some(at),
                Position::Snapshot { .. } => None,
            })
            .max()
            .max(self.applied_binlog);
        let checkpoint = LaneCheckpoint {
            token: token.clone(),
            lanes: self.lanes,
            applied,
        }
        .to_string();
        // The lane's buffer, reused pipeline after pipeline (given back on success).
        let mut encoded = std::mem::take(&mut self.encoded);
        encoded.clear();
        encoded.reserve(
            64 + commands
                .iter()
                .map(|c| c.argv.iter().map(|a| a.len() + 16).sum::<usize>())
                .sum::<usize>(),
        );
        // Only idempotent snapshot commands: a plain pipeline, resent whole after a
        // lost connection. Anything else goes in a transaction with the checkpoint key.
        let plain = commands.iter().all(|c| c.idempotent);
        // Commands for another database than the connection's are wrapped in SELECTs,
        // so the connection is back in its own one (where the checkpoint key lives)
        // after every pipeline.
        let home = self.target.db.to_string();
        let db = commands.first().map_or(self.target.db, |c| c.db);
        let select = usize::from(db != self.target.db);
        let db_text = db.to_string();
        if !plain {
            encode_command(&mut encoded, &[b"MULTI".as_slice()]);
        }
        if select == 1 {
            encode_command(&mut encoded, &[b"SELECT".as_slice(), db_text.as_bytes()]);
        }
        for c in commands {
            encode_command(&mut encoded, &c.argv);
        }
        if select == 1 {
            encode_command(&mut encoded, &[b"SELECT".as_slice(), home.as_bytes()]);
        }
        if !plain {
            encode_command(
                &mut encoded,
                &[b"SET".as_slice(), marker.as_bytes(), checkpoint.as_bytes()],
            );
            encode_command(&mut encoded, &[b"EXEC".as_slice()]);
        }
        let expected = commands.len() + 2 * select + if plain { 0 } else { 3 };
        let mut replies = Vec::with_capacity(expected);
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(50);
        let mut reconnected = false;
        loop {
            let attempt = match self.conn.as_mut() {
                Some(_) if reconnected && plain => {
                    reconnected = false;
                    continue;
                }
                Some(conn) if reconnected => {
                    // Did the transaction run before the connection was lost?
                    reconnected = false;
                    match conn.call(&[b"GET".as_slice(), marker.as_bytes()]).await {
                        Ok(Reply::Bulk(Some(v)))
                            if LaneCheckpoint::parse(&v).is_some_and(|c| c.token == token) =>
                        {
                            tracing::info!(
                                lane = self.id,
                                "the lost transaction had been applied; not resending"
                            );
                            self.applied_binlog = applied;
                            return Ok(vec![Reply::Status("APPLIED".into()); commands.len()]);
                        }
                        Ok(_) => continue,
                        Err(e) => Err(e.to_string()),
                    }
                }
                Some(conn) => conn
                    .pipeline(&encoded, expected, &mut replies)
                    .await
                    .map_err(|e| e.to_string()),
                None => match Connection::connect(&self.target).await {
                    Ok(conn) => {
                        self.conn = Some(conn);
                        reconnected = true;
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(lane = self.id, target = %self.target, "reconnected");
                        continue;
                    }
                    Err(e) if e.is_transient() => Err(e.to_string()),
                    Err(e) => return Err(e.into()),
                },
            };
            match attempt {
                Ok(()) => {
                    self.applied_binlog = applied;
                    self.stats
                        .commands
                        .fetch_add(commands.len() as u64, Ordering::Relaxed);
                    self.stats.pipelines.fetch_add(1, Ordering::Relaxed);
                    // Keep the buffer unless one huge pipeline made it big.
                    if encoded.capacity() <= 2 * PIPELINE_BYTES {
                        self.encoded = encoded;
                    }
                    if plain {
                        return Ok(replies
                            .into_iter()
                            .skip(select)
                            .take(commands.len())
                            .collect());
                    }
                    return self.unpack(commands, replies, marker, select).await;
                }
                Err(last) => {
                    self.conn = None;
                    replies.clear();
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.settings.retry_for {
                        return Err(LaneError::GaveUp {
                            seconds: self.settings.retry_for.as_secs(),
                            last,
                        });
                    }
                    tracing::warn!(lane = self.id, target = %self.target, error = %last, retry_in = ?backoff, "Redis unreachable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Takes the replies of `MULTI, commands…, SET marker, EXEC` apart. A command Redis
    /// refused while queueing aborts the whole transaction: those commands are answered
    /// with their error and the others are sent again without them.
    async fn unpack(
        &mut self,
        commands: &[LaneCommand],
        mut replies: Vec<Reply>,
        marker: &str,
        select: usize,
    ) -> Result<Vec<Reply>, LaneError> {
        let n = commands.len();
        let exec = if replies.len() == n + 3 + 2 * select {
            replies.pop()
        } else {
            None
        };
        match exec {
            Some(Reply::Array(Some(items))) if items.len() == n + 1 + 2 * select => {
                Ok(items.into_iter().skip(select).take(n).collect())
            }
            _ => {
                let first = 1 + select;
                let queued = &replies[first.min(replies.len())..(first + n).min(replies.len())];
                let rejected: Vec<usize> = queued
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.is_error())
                    .map(|(i, _)| i)
                    .collect();
                if rejected.is_empty() {
                    return Err(LaneError::Command {
                        command: "EXEC".into(),
                        key: String::new(),
                        position: commands.first().map(|c| c.position).unwrap_or(
                            Position::Snapshot {
                                at: Default::default(),
                                seq: 0,
                            },
                        ),
                        reply: format!("{exec:?}"),
                    });
                }
                let rest: Vec<LaneCommand> = commands
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !rejected.contains(i))
                    .map(|(_, c)| c.clone())
                    .collect();
                let mut rest_replies = if rest.is_empty() {
                    Vec::new()
                } else {
                    Box::pin(self.send(&rest, marker)).await?
                }
                .into_iter();
                Ok((0..n)
                    .map(|i| {
                        if rejected.contains(&i) {
                            queued[i].clone()
                        } else {
                            rest_replies.next().unwrap_or(Reply::Bulk(None))
                        }
                    })
                    .collect())
            }
        }
    }
}

/// `MOVED slot host:port` or `ASK slot host:port` in a cluster: the commands' slot is
/// served elsewhere (every command of a transaction shares one slot).
fn redirection(replies: &[Reply]) -> Option<(String, bool)> {
    replies.iter().find_map(|r| match r {
        Reply::Error(e) if e.starts_with("MOVED ") || e.starts_with("ASK ") => {
            let addr = e.split(' ').nth(2)?.to_owned();
            Some((addr, e.starts_with("ASK ")))
        }
        _ => None,
    })
}

impl Lane {
    /// Sends a transaction to the node a MOVED or ASK named, on a connection of its own.
    /// A MOVED also tells the sink to reload the slot map before routing anything else.
    /// During a slot migration (ASK) each command goes alone after ASKING, since the
    /// flag lasts one command.
    async fn redirected(
        &mut self,
        commands: &[LaneCommand],
        marker: &str,
        addr: &str,
        asking: bool,
    ) -> Result<Vec<Reply>, LaneError> {
        let mut target = self.target.clone();
        let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "6379"));
        target.host = host.to_owned();
        target.port = port.parse().unwrap_or(6379);
        tracing::info!(lane = self.id, node = %addr, asking, "cluster redirection");
        if let Some(cluster) = &self.settings.cluster {
            if !asking {
                cluster.moved.store(true, Ordering::SeqCst);
            }
        }
        let home = self.conn.take();
        self.conn = Some(Connection::connect(&target).await?);
        let result = if asking {
            let mut replies = Vec::with_capacity(commands.len());
            for c in commands {
                let conn = self.conn.as_mut().ok_or(LaneError::GaveUp {
                    seconds: 0,
                    last: "no connection".into(),
                })?;
                let mut buf = Vec::new();
                encode_command(&mut buf, &[b"ASKING".as_slice()]);
                encode_command(&mut buf, &c.argv);
                let mut got = Vec::with_capacity(2);
                conn.pipeline(&buf, 2, &mut got)
                    .await
                    .map_err(|e| LaneError::GaveUp {
                        seconds: 0,
                        last: e.to_string(),
                    })?;
                replies.push(got.pop().unwrap_or(Reply::Bulk(None)));
            }
            Ok(replies)
        } else {
            self.send(commands, marker).await
        };
        self.conn = home;
        result
    }
}

/// The key a lane writes in every transaction (in the same MULTI/EXEC): a token that
/// tells a resend after a lost reply whether the transaction ran, and the last binlog
/// position the lane applied, which makes a resumed stream exactly-once.
pub fn checkpoint_key(lane: usize) -> String {
    format!("pika-migrate:checkpoint:{lane}")
}

/// The value of a lane's checkpoint key: `<token> <lanes> <filenum:offset | ->`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneCheckpoint {
    pub token: String,
    /// How many lanes the sink had: a key's lane depends on it.
    pub lanes: usize,
    pub applied: Option<BinlogOffset>,
}

impl std::fmt::Display for LaneCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ", self.token, self.lanes)?;
        match self.applied {
            Some(at) => write!(f, "{at}"),
            None => f.write_str("-"),
        }
    }
}

impl LaneCheckpoint {
    pub fn parse(value: &[u8]) -> Option<LaneCheckpoint> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.split(' ');
        let token = parts.next()?.to_owned();
        let lanes = parts.next()?.parse().ok()?;
        let applied = match parts.next()? {
            "-" => None,
            at => Some(at.parse().ok()?),
        };
        Some(LaneCheckpoint {
            token,
            lanes,
            applied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_values_round_trip() {
        for applied in [None, Some(BinlogOffset::new(3, 1024))] {
            let c = LaneCheckpoint {
                token: "42-7:9".into(),
                lanes: 8,
                applied,
            };
            assert_eq!(LaneCheckpoint::parse(c.to_string().as_bytes()), Some(c));
        }
        assert_eq!(LaneCheckpoint::parse(b"old-marker-token"), None);
    }
}
