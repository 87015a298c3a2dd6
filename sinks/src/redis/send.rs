//! Delivering one lane pipeline exactly once. The commands go out as one pre-built
//! pipeline of the `redis` crate: `MULTI`, the commands (each with its type guard, see
//! `guard`), `SET <checkpoint key> <token lanes position>`, `EXEC` (or, for snapshot
//! commands safe to repeat, the commands alone), then `WAIT` when replicas must
//! confirm. Every reply is read: the commands', the guards', the `SELECT`s' around a
//! pipeline for another database, and the checkpoint's.
//!
//! A lost connection (or, behind sentinels, a server that turned replica: READONLY,
//! MASTERDOWN, a `+switch-master`; or one that stopped answering for the response
//! timeout) is retried with backoff for `retry_seconds`, finding the master again each
//! time. After reconnecting, the lane reads its checkpoint key on the server it
//! reached: the transaction's token there means it ran (on this server, or on the old
//! master and was replicated), and its replies are lost (said and counted, never taken
//! for success); otherwise it is sent again. A transaction that never reached EXEC was
//! discarded by Redis, so nothing runs twice. The key's position also tells whether the
//! server lacks transactions the lane counted as applied (an old master's, not
//! replicated before it failed).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pika_migrate_core::event::Position;
use redis::Value;

use super::checkpoint::{read_markers, Applied, LaneCheckpoint};
use super::conn::{command, error_text, reply_error};
use super::endpoint::Connected;
use super::lane::{count, Lane, LaneCommand, LaneError};
use super::wait::WaitFailure;
use super::wire::Request;
use crate::encode::commands::TypeConflict;

/// What a lane asks its server outside a transaction.
#[derive(Clone, Copy)]
enum Ask<'a> {
    Markers(&'a [String]),
    Ping,
    Pttl(&'a [u8]),
}

/// Its answer.
enum Answer {
    Markers(Vec<Option<LaneCheckpoint>>),
    Pong,
    Pttl(i64),
}

/// What came back of a transaction.
pub enum Replies {
    /// Each command's reply, in order.
    Known(Vec<Value>),
    /// It ran (its token is in the checkpoint key), but the connection was lost before
    /// its replies arrived.
    Lost,
}

/// What each queued command of a pipeline is, to read its reply.
#[derive(Debug, Clone, Copy)]
enum Part {
    Select(u32),
    Command(usize),
    /// A run of commands (`run`): as many replies as it has commands.
    Run(usize, usize),
    /// A command's type guard before it, and (`suffix`) after it.
    GuardBefore(usize),
    GuardAfter(usize),
    Marker,
}

/// Why an attempt failed.
enum Failure {
    /// Reconnect (finding the master again) and try again.
    Retry(String),
    Fatal(LaneError),
}

impl From<WaitFailure> for Failure {
    fn from(e: WaitFailure) -> Failure {
        match e {
            WaitFailure::Connection(e) => Failure::Retry(e),
            WaitFailure::TimedOut {
                waited,
                got,
                wanted,
            } => Failure::Fatal(LaneError::NotReplicated {
                seconds: waited.as_secs(),
                got,
                wanted,
            }),
        }
    }
}

fn is_error(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(_))
}

/// A reply saying the server is not (or no longer) a writable master.
fn not_master(reply: &Value) -> Option<String> {
    let text = reply_error(reply)?;
    (text.starts_with("READONLY ")
        || text.starts_with("MASTERDOWN ")
        || text.contains("replica instances"))
    .then_some(text)
}

impl Lane {
    /// What the checkpoint key `slot` names (the lane's own outside a cluster) holds.
    fn base(&self, slot: Option<u16>) -> Applied {
        match slot {
            Some(slot) => self.slot_applied.get(&slot).cloned().unwrap_or_default(),
            None => self.applied.clone(),
        }
    }

    fn set_base(&mut self, slot: Option<u16>, applied: Applied) {
        match slot {
            Some(slot) => {
                self.slot_applied.insert(slot, applied);
            }
            None => self.applied = applied,
        }
    }

    /// Sends `commands` as one transaction and returns their replies (see the module).
    /// `marker` is the checkpoint key it writes, `slot` the cluster slot it is in.
    pub(super) async fn send(
        &mut self,
        commands: &[LaneCommand],
        marker: &str,
        slot: Option<u16>,
    ) -> Result<Replies, LaneError> {
        self.pipelines_sent += 1;
        let token = format!("{}:{}", self.settings.run_id, self.pipelines_sent);
        let mut applied = self.base(slot);
        for c in commands {
            if let Position::Binlog { at, .. } = c.position {
                applied.advance(c.source_db, at);
            }
        }
        let checkpoint = LaneCheckpoint {
            token: token.clone(),
            lanes: self.lanes,
            applied: applied.clone(),
        }
        .to_string();
        // Only idempotent snapshot commands: a plain pipeline, resent whole after a
        // lost connection. Anything else goes in a transaction with the checkpoint key.
        let plain = commands.iter().all(|c| c.idempotent);
        // Commands for another database than the connection's are wrapped in SELECTs,
        // so the connection is back in its own one (where the checkpoint key lives)
        // after every pipeline.
        let db = commands.first().map_or(self.home_db, |c| c.db);
        let select = (db != self.home_db).then_some(db);
        // The request is built once as RESP bytes (`wire`); `parts` says what each
        // queued command is, to read its reply.
        let bytes: usize = commands.iter().map(|c| c.memory()).sum();
        let mut request = Request::with_capacity(bytes + 128, count(commands) + 6);
        let mut parts: Vec<Part> = Vec::with_capacity(commands.len() + 3);
        if !plain {
            request.push(&[b"MULTI".as_slice()]);
        }
        let mut selecting = |request: &mut Request, db: u32| {
            parts.push(Part::Select(db));
            request.push(&[b"SELECT".as_slice(), db.to_string().as_bytes()]);
        };
        if let Some(db) = select {
            selecting(&mut request, db);
        }
        for (i, c) in commands.iter().enumerate() {
            let guard = if plain { None } else { self.guard_of(c) };
            match guard {
                Some(guard) => {
                    parts.push(Part::GuardBefore(i));
                    request.push_cmd(&guard.before);
                    parts.push(Part::Command(i));
                    c.argv.write_to(&mut request);
                    if let Some(after) = guard.after {
                        parts.push(Part::GuardAfter(i));
                        request.push_cmd(&after);
                    }
                }
                None => {
                    parts.push(match c.count() {
                        1 => Part::Command(i),
                        n => Part::Run(i, n),
                    });
                    c.argv.write_to(&mut request);
                }
            }
        }
        if select.is_some() {
            parts.push(Part::Select(self.home_db));
            request.push(&[b"SELECT".as_slice(), self.home_db.to_string().as_bytes()]);
        }
        if !plain {
            parts.push(Part::Marker);
            request.push(&[b"SET".as_slice(), marker.as_bytes(), checkpoint.as_bytes()]);
            request.push(&[b"EXEC".as_slice()]);
        }
        let settings = self.settings.clone();
        let wait = settings.wait.as_ref();
        if let Some(wait) = wait {
            let count = match self.conn.as_mut() {
                Some(connected) => {
                    wait.recount(&mut connected.conn, &mut connected.replicas)
                        .await;
                    &connected.replicas
                }
                None => &Default::default(),
            };
            request.push_cmd(&wait.command(count));
        }
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(50);
        // A server reached again since the last transaction is checked first (did it
        // lose what the lane applied? does it still have the database?).
        let mut reconnected = std::mem::take(&mut self.check_server);
        loop {
            let Some(mut connected) = self.conn.take() else {
                reconnected |= self.reconnect(&mut failing_since, &mut backoff).await?;
                continue;
            };
            let attempt = if self.endpoint.switched_since(connected.switches) {
                Err(Failure::Retry(format!(
                    "the sentinels announced a new master (was {})",
                    connected.server
                )))
            } else if reconnected {
                reconnected = false;
                let lost = self.lost.take();
                match self
                    .ran_before(
                        &mut connected,
                        lost,
                        &token,
                        (marker, slot),
                        (plain, select),
                    )
                    .await
                {
                    Ok(true) => {
                        self.conn = Some(connected);
                        self.set_base(slot, applied);
                        self.recovered();
                        tracing::info!(
                            lane = self.id,
                            "the lost transaction had been applied; not resending"
                        );
                        return Ok(Replies::Lost);
                    }
                    Ok(false) => {
                        self.conn = Some(connected);
                        continue;
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.attempt(&mut connected, &request).await
            };
            match attempt {
                Ok(mut replies) => {
                    self.conn = Some(connected);
                    self.recovered();
                    if wait.is_some() {
                        replies.pop();
                    }
                    let replies = self.unpack(commands, replies, &parts, plain).await?;
                    // Applied: the position moves only now (a refused SELECT or
                    // checkpoint stopped the lane above).
                    self.stats
                        .commands
                        .fetch_add(count(commands) as u64, Ordering::Relaxed);
                    self.stats.pipelines.fetch_add(1, Ordering::Relaxed);
                    return match replies {
                        Unpacked::Done(replies) => {
                            if !plain {
                                self.set_base(slot, applied);
                            }
                            Ok(Replies::Known(replies))
                        }
                        Unpacked::Resend { rejected, queued } => {
                            self.resend_without(commands, &rejected, queued, marker, slot)
                                .await
                        }
                    };
                }
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(last)) => {
                    self.give_up_on(connected);
                    self.retry_later(&mut failing_since, &mut backoff, last)
                        .await?;
                }
            }
        }
    }

    /// Drops a connection that failed, remembering who it was on its server.
    fn give_up_on(&mut self, connected: Connected) {
        self.lost = connected.conn.id.map(|id| (connected.server.clone(), id));
    }

    /// One try at a connection for a lane that has none: whether it has one now (made
    /// now); after a transient failure it waits the backoff first (`retry_later`).
    async fn reconnect(
        &mut self,
        failing_since: &mut Option<Instant>,
        backoff: &mut Duration,
    ) -> Result<bool, LaneError> {
        match self.endpoint.connect().await {
            Ok(connected) => {
                tracing::info!(lane = self.id, server = %connected.server, "reconnected");
                self.conn = Some(connected);
                self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) if e.is_transient() => {
                self.retry_later(failing_since, backoff, e.to_string())
                    .await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the checkpoint keys `keys` (a missing one, or not ours: `None`),
    /// reconnecting as `send` does.
    pub(super) async fn read_markers(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<Option<LaneCheckpoint>>, LaneError> {
        match self.ask(Ask::Markers(keys)).await? {
            Answer::Markers(found) => Ok(found),
            _ => Ok(vec![None; keys.len()]),
        }
    }

    /// Checks an idle lane's connection with a PING, reconnecting as `send` does: a
    /// target gone while nothing is written shows (and ends the run after
    /// `retry_seconds`) as it would with writes.
    pub(super) async fn ping(&mut self) -> Result<(), LaneError> {
        self.ask(Ask::Ping).await.map(drop)
    }

    /// `PTTL key` on the lane's connection: after everything the lane sent before
    /// (one connection runs its commands in order). Milliseconds left, or what PTTL
    /// answers for no expiry (-1) or no key (-2, 0 on Pika 4.0.1).
    pub(super) async fn pttl(&mut self, key: &[u8]) -> Result<i64, LaneError> {
        match self.ask(Ask::Pttl(key)).await? {
            Answer::Pttl(ms) => Ok(ms),
            _ => Ok(-1),
        }
    }

    /// Asks `what`, reconnecting (and in the end giving up, as `send` does) while the
    /// connection fails.
    async fn ask(&mut self, what: Ask<'_>) -> Result<Answer, LaneError> {
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some(mut connected) = self.conn.take() else {
                self.check_server |= self.reconnect(&mut failing_since, &mut backoff).await?;
                continue;
            };
            let answer = match what {
                Ask::Markers(keys) => match read_markers(&mut connected.conn, keys).await {
                    // A slot another master serves now: nothing read here (so nothing
                    // skipped); the transaction follows the MOVED, and the sink reloads
                    // the slot map before routing more.
                    Err(e) if e.contains(": MOVED ") || e.contains(": ASK ") => {
                        if let Some(cluster) = &self.settings.cluster {
                            cluster.moved.store(true, Ordering::SeqCst);
                        }
                        Ok(Answer::Markers(vec![None; keys.len()]))
                    }
                    other => other.map(Answer::Markers),
                },
                Ask::Ping => match connected.conn.call(&[b"PING".as_slice()]).await {
                    Ok(reply) => match reply_error(&reply) {
                        Some(e) => Err(e),
                        None => Ok(Answer::Pong),
                    },
                    Err(e) => Err(e.to_string()),
                },
                Ask::Pttl(key) => match connected.conn.call(&[b"PTTL".as_slice(), key]).await {
                    Ok(Value::Int(ms)) => Ok(Answer::Pttl(ms)),
                    Ok(reply) => Err(reply_error(&reply)
                        .unwrap_or_else(|| format!("PTTL answered {reply:?}, not a number"))),
                    Err(e) => Err(e.to_string()),
                },
            };
            match answer {
                Ok(found) => {
                    self.conn = Some(connected);
                    self.recovered();
                    return Ok(found);
                }
                Err(e) => {
                    self.give_up_on(connected);
                    self.retry_later(&mut failing_since, &mut backoff, e)
                        .await?;
                }
            }
        }
    }

    /// After a command Redis refused while queueing aborted the transaction: the
    /// others sent again without it; the refused ones answered with their error.
    async fn resend_without(
        &mut self,
        commands: &[LaneCommand],
        rejected: &[usize],
        queued: Vec<Value>,
        marker: &str,
        slot: Option<u16>,
    ) -> Result<Replies, LaneError> {
        let rest: Vec<LaneCommand> = commands
            .iter()
            .enumerate()
            .filter(|(i, _)| !rejected.contains(i))
            .map(|(_, c)| c.clone())
            .collect();
        let mut rest_replies = if rest.is_empty() {
            Vec::new()
        } else {
            match Box::pin(self.send(&rest, marker, slot)).await? {
                Replies::Known(replies) => replies,
                Replies::Lost => {
                    // The refused ones are known; the others' replies are lost.
                    self.replies_lost(&rest);
                    vec![Value::Nil; rest.len()]
                }
            }
        }
        .into_iter();
        let mut queued = queued.into_iter();
        Ok(Replies::Known(
            (0..commands.len())
                .map(|i| {
                    if rejected.contains(&i) {
                        queued.next().unwrap_or(Value::Nil)
                    } else {
                        rest_replies.next().unwrap_or(Value::Nil)
                    }
                })
                .collect(),
        ))
    }

    /// A lane writing again after failing: no longer counted among the failing.
    fn recovered(&mut self) {
        if self.failing {
            self.failing = false;
            self.stats.failing.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(lane = self.id, "writing again");
        }
    }

    /// One try on `connected`: the pipeline, then the replicas' confirmation.
    async fn attempt(
        &self,
        connected: &mut Connected,
        request: &Request,
    ) -> Result<Vec<Value>, Failure> {
        let mut replies = connected
            .conn
            .request(request)
            .await
            .map_err(|e| Failure::Retry(e.to_string()))?;
        if self.endpoint.may_move() {
            if let Some(reason) = replies.iter().find_map(not_master) {
                return Err(Failure::Retry(format!(
                    "{} is no longer a writable master: {reason}",
                    connected.server
                )));
            }
        }
        if self.settings.wait.is_some() {
            let reply = replies.pop().unwrap_or(Value::Nil);
            self.confirm(connected, reply).await?;
            replies.push(Value::Nil);
        }
        Ok(replies)
    }

    /// Waits (`wait`) until enough replicas hold what `connected` wrote, `reply` being
    /// the answer of the pipeline's WAIT.
    async fn confirm(&self, connected: &mut Connected, reply: Value) -> Result<(), Failure> {
        let Some(wait) = &self.settings.wait else {
            return Ok(());
        };
        let confirmed = wait
            .confirm(
                &mut connected.conn,
                &mut connected.replicas,
                reply,
                self.id,
                self.settings.retry_for,
            )
            .await;
        confirmed.map_err(Failure::from)
    }

    /// After a reconnect: whether the transaction `token` ran before its reply was
    /// lost (never for a plain pipeline, which is simply sent again). On the server of
    /// the connection given up on (`lost`), that one is closed first: a server that
    /// stopped answering may still read and run what was sent on it, and must not do
    /// so after the check. Also checks that the server holds everything the lane
    /// counted as applied, and that it still has the database the pipeline selects.
    async fn ran_before(
        &self,
        connected: &mut Connected,
        lost: Option<(String, i64)>,
        token: &str,
        (marker, slot): (&str, Option<u16>),
        (plain, select): (bool, Option<u32>),
    ) -> Result<bool, Failure> {
        if let Some((_, id)) = lost.filter(|(server, _)| *server == connected.server) {
            let id = id.to_string();
            let reply = connected
                .conn
                .call(&[b"CLIENT".as_slice(), b"KILL", b"ID", id.as_bytes()])
                .await
                .map_err(|e| Failure::Retry(e.to_string()))?;
            tracing::debug!(lane = self.id, client = %id, reply = ?reply, "closed the connection given up on");
        }
        if let Some(db) = select {
            let mut pipe = redis::Pipeline::with_capacity(2);
            for db in [db, self.home_db] {
                pipe.add_command(command(&[b"SELECT".as_slice(), db.to_string().as_bytes()]));
            }
            let replies = connected
                .conn
                .pipeline(&pipe, 2)
                .await
                .map_err(|e| Failure::Retry(e.to_string()))?;
            if let Some(reply) = replies.iter().find_map(reply_error) {
                return Err(Failure::Fatal(LaneError::Database {
                    server: connected.server.clone(),
                    db,
                    reply,
                }));
            }
        }
        let found = read_markers(&mut connected.conn, &[marker.to_owned()])
            .await
            .map_err(Failure::Retry)?
            .pop()
            .flatten();
        if !plain && found.as_ref().is_some_and(|c| c.token == token) {
            if let (Some(wait), Some(found)) = (&self.settings.wait, &found) {
                // A write of our own on this connection, so WAIT covers the transaction.
                let again = found.to_string();
                let mut pipe = redis::Pipeline::with_capacity(2);
                pipe.add_command(command(&[
                    b"SET".as_slice(),
                    marker.as_bytes(),
                    again.as_bytes(),
                ]));
                wait.recount(&mut connected.conn, &mut connected.replicas)
                    .await;
                pipe.add_command(wait.command(&connected.replicas));
                let mut replies = connected
                    .conn
                    .pipeline(&pipe, 2)
                    .await
                    .map_err(|e| Failure::Retry(e.to_string()))?;
                let reply = replies.pop().unwrap_or(Value::Nil);
                self.confirm(connected, reply).await?;
            }
            return Ok(true);
        }
        let found = found.map(|c| c.applied).unwrap_or_default();
        let had = self.base(slot);
        if found.is_behind(&had) {
            let show = |p: &Applied| {
                if p.is_empty() {
                    "nothing".to_owned()
                } else {
                    p.to_string()
                }
            };
            return Err(Failure::Fatal(LaneError::LostOnFailover {
                server: connected.server.clone(),
                lane: self.id,
                found: show(&found),
                applied: show(&had),
            }));
        }
        Ok(false)
    }

    /// Counts a failure against `retry_seconds`; waits the backoff, or gives up. While
    /// it fails the lane counts among the failing ones (for the status).
    async fn retry_later(
        &mut self,
        failing_since: &mut Option<Instant>,
        backoff: &mut Duration,
        last: String,
    ) -> Result<(), LaneError> {
        let since = *failing_since.get_or_insert_with(Instant::now);
        if let Ok(mut failure) = self.stats.failure.lock() {
            *failure = Some(format!("lane {}: {last}", self.id));
        }
        if !self.failing {
            self.failing = true;
            self.stats.failing.fetch_add(1, Ordering::Relaxed);
        }
        if since.elapsed() >= self.settings.retry_for {
            return Err(LaneError::GaveUp {
                seconds: self.settings.retry_for.as_secs(),
                last,
            });
        }
        tracing::warn!(lane = self.id, error = %last, retry_in = ?*backoff, "cannot write to Redis now (unreachable, not answering, or no longer the master); retrying");
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
        Ok(())
    }

    /// Takes the replies of a pipeline apart by `parts` (see `Part`): each command's
    /// reply, a conflict counted for each guard that met one. A refused `SELECT` or
    /// checkpoint stops the lane. In a transaction, a command Redis refused while
    /// queueing aborts the whole of it: those commands are to be answered with their
    /// error and the others sent again without them (`Unpacked::Resend`).
    async fn unpack(
        &mut self,
        commands: &[LaneCommand],
        mut replies: Vec<Value>,
        parts: &[Part],
        plain: bool,
    ) -> Result<Unpacked, LaneError> {
        // Replies each part takes: a run one per command.
        let width = |part: &Part| match part {
            Part::Run(_, n) => *n,
            _ => 1,
        };
        let replied: usize = parts.iter().map(width).sum();
        let items = if plain {
            replies.truncate(replied);
            replies
        } else {
            let exec = if replies.len() == replied + 2 {
                replies.pop()
            } else {
                None
            };
            match exec {
                Some(Value::Array(items)) if items.len() == replied => items,
                exec => return self.aborted(commands, &replies, parts, exec),
            }
        };
        let mut out = vec![Value::Nil; commands.len()];
        let mut guard_errors = Vec::new();
        let mut items = items.into_iter();
        for part in parts {
            let command = |i: usize| &commands[i];
            if let Part::Run(i, n) = *part {
                // A run's replies are kept, to be looked at one by one, only if one is
                // an error.
                let refused = items.as_slice().iter().take(n).any(is_error);
                out[i] = if refused {
                    Value::Array(items.by_ref().take(n).collect())
                } else {
                    items.by_ref().take(n).for_each(drop);
                    Value::Okay
                };
                continue;
            }
            let Some(item) = items.next() else {
                break;
            };
            match *part {
                Part::Command(i) => out[i] = item,
                Part::Run(..) => {}
                Part::Select(db) => {
                    if let Some(reply) = reply_error(&item) {
                        return Err(LaneError::Database {
                            server: self.server(),
                            db,
                            reply,
                        });
                    }
                }
                Part::GuardBefore(i) | Part::GuardAfter(i) => {
                    if reply_error(&item).is_some() {
                        // Answered as the command's own refusal (`on_error`), unless
                        // the command has one of its own.
                        guard_errors.push((i, item));
                    } else if matches!(part, Part::GuardBefore(_)) && item == Value::Int(1) {
                        self.conflict_met(command(i));
                    }
                }
                Part::Marker => {
                    if let Some(reply) = reply_error(&item) {
                        let first = commands.first().map(|c| c.position);
                        return Err(LaneError::Command {
                            command: "SET".into(),
                            key: "the checkpoint key".into(),
                            position: first.unwrap_or(Position::Snapshot {
                                at: Default::default(),
                                seq: 0,
                            }),
                            reply,
                        });
                    }
                }
            }
        }
        for (i, error) in guard_errors {
            if reply_error(&out[i]).is_none() {
                out[i] = error;
            }
        }
        Ok(Unpacked::Done(out))
    }

    /// A transaction EXEC did not run: which commands Redis refused while queueing
    /// (to be resent without them), or an error when none was.
    fn aborted(
        &self,
        commands: &[LaneCommand],
        replies: &[Value],
        parts: &[Part],
        exec: Option<Value>,
    ) -> Result<Unpacked, LaneError> {
        let queued = replies.get(1..).unwrap_or_default();
        let mut rejected = Vec::new();
        let mut rejected_replies = Vec::new();
        for (part, reply) in parts.iter().zip(queued) {
            if !is_error(reply) {
                continue;
            }
            match part {
                Part::Command(i) => {
                    rejected.push(*i);
                    rejected_replies.push(reply.clone());
                }
                Part::GuardBefore(i) | Part::GuardAfter(i) => {
                    return Err(self.command_error(
                        &commands[*i],
                        "the type guard of",
                        error_text(reply),
                    ))
                }
                // Runs are taken apart before a transaction (`Lane::apply`).
                Part::Run(i, _) => {
                    return Err(self.command_error(&commands[*i], "a run from", error_text(reply)))
                }
                Part::Select(db) => {
                    return Err(LaneError::Database {
                        server: self.server(),
                        db: *db,
                        reply: error_text(reply),
                    })
                }
                Part::Marker => {}
            }
        }
        if rejected.is_empty() {
            return Err(LaneError::Command {
                command: "EXEC".into(),
                key: String::new(),
                position: commands
                    .first()
                    .map(|c| c.position)
                    .unwrap_or(Position::Snapshot {
                        at: Default::default(),
                        seq: 0,
                    }),
                reply: format!("{exec:?}"),
            });
        }
        Ok(Unpacked::Resend {
            rejected,
            queued: rejected_replies,
        })
    }

    /// The server the lane is connected to, for a message.
    fn server(&self) -> String {
        self.conn
            .as_ref()
            .map_or_else(|| self.endpoint.shown(), |c| c.server.clone())
    }

    fn command_error(&self, c: &LaneCommand, what: &str, reply: String) -> LaneError {
        let name = c.argv.name();
        LaneError::Command {
            command: format!("{what} {name}"),
            key: pika_migrate_core::display::display_key(c.key()),
            position: c.position,
            reply,
        }
    }

    /// A type guard found the key of `c` holding another type, and applied the policy.
    fn conflict_met(&self, c: &LaneCommand) {
        let policy = self.settings.type_conflict;
        self.stats.log_conflict_once(c.key(), c.writes, policy);
        let counter = match policy {
            TypeConflict::Suffix => &self.stats.conflicts_renamed,
            _ => &self.stats.conflicts_overwritten,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A pipeline's replies taken apart.
enum Unpacked {
    Done(Vec<Value>),
    /// EXEC did not run: Redis refused `rejected` (their replies in `queued`) while
    /// queueing.
    Resend {
        rejected: Vec<usize>,
        queued: Vec<Value>,
    },
}
