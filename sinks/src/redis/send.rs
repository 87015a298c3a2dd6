//! Delivering one lane pipeline exactly once. The commands go out as one pre-built
//! pipeline of the `redis` crate: `MULTI`, the commands, `SET <checkpoint key> <token
//! lanes position>`, `EXEC` (or, for snapshot commands safe to repeat, the commands
//! alone), then `WAIT` when replicas must confirm.
//!
//! A lost connection (or, behind sentinels, a server that turned replica: READONLY,
//! MASTERDOWN, a `+switch-master`) is retried with backoff for `retry_seconds`,
//! finding the master again each time. After reconnecting, the lane reads its
//! checkpoint key on the server it reached: the transaction's token there means it ran
//! (on this server, or on the old master and was replicated); otherwise it is sent
//! again. A transaction that never reached EXEC was discarded by Redis, so nothing runs
//! twice. The key's position also tells whether the server lacks transactions the lane
//! counted as applied (an old master's, not replicated before it failed).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pika_migrate_core::event::Position;
use redis::Value;

use super::checkpoint::{read_marker, Applied, LaneCheckpoint};
use super::conn::{command, reply_error};
use super::endpoint::Connected;
use super::lane::{Lane, LaneCommand, LaneError};
use super::wait::WaitFailure;

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
            WaitFailure::TimedOut { waited, got } => Failure::Fatal(LaneError::NotReplicated {
                seconds: waited.as_secs(),
                got,
                wanted: 0,
            }),
        }
    }
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
    /// Sends `commands` as one transaction and returns their replies (see the module).
    pub(super) async fn send(
        &mut self,
        commands: &[LaneCommand],
        marker: &str,
    ) -> Result<Vec<Value>, LaneError> {
        self.pipelines_sent += 1;
        let token = format!("{}:{}", self.settings.run_id, self.pipelines_sent);
        let mut applied = self.applied.clone();
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
        let home = self.home_db.to_string();
        let db = commands.first().map_or(self.home_db, |c| c.db);
        let select = usize::from(db != self.home_db);
        let db_text = db.to_string();
        let mut pipe = redis::Pipeline::with_capacity(commands.len() + 6);
        if !plain {
            pipe.add_command(redis::cmd("MULTI"));
        }
        if select == 1 {
            pipe.add_command(command(&[b"SELECT".as_slice(), db_text.as_bytes()]));
        }
        for c in commands {
            pipe.add_command(command(&c.argv));
        }
        if select == 1 {
            pipe.add_command(command(&[b"SELECT".as_slice(), home.as_bytes()]));
        }
        if !plain {
            pipe.add_command(command(&[
                b"SET".as_slice(),
                marker.as_bytes(),
                checkpoint.as_bytes(),
            ]));
            pipe.add_command(redis::cmd("EXEC"));
        }
        let wait = self.settings.wait.as_ref();
        if let Some(wait) = wait {
            let count = match self.conn.as_mut() {
                Some(connected) => {
                    wait.recount(&mut connected.conn, &mut connected.replicas)
                        .await;
                    &connected.replicas
                }
                None => &Default::default(),
            };
            pipe.add_command(wait.command(count));
        }
        let expected =
            commands.len() + 2 * select + if plain { 0 } else { 3 } + usize::from(wait.is_some());
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(50);
        let mut reconnected = false;
        loop {
            let Some(mut connected) = self.conn.take() else {
                match self.endpoint.connect().await {
                    Ok(connected) => {
                        tracing::info!(lane = self.id, server = %connected.server, "reconnected");
                        self.conn = Some(connected);
                        reconnected = true;
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Err(e) if e.is_transient() => {
                        self.retry_later(&mut failing_since, &mut backoff, e.to_string())
                            .await?;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            let attempt = if self.endpoint.switched_since(connected.switches) {
                Err(Failure::Retry(format!(
                    "the sentinels announced a new master (was {})",
                    connected.server
                )))
            } else if reconnected {
                reconnected = false;
                match self.ran_before(&mut connected, &token, marker, plain).await {
                    Ok(true) => {
                        self.conn = Some(connected);
                        self.applied = applied;
                        tracing::info!(
                            lane = self.id,
                            "the lost transaction had been applied; not resending"
                        );
                        return Ok(vec![Value::Okay; commands.len()]);
                    }
                    Ok(false) => {
                        self.conn = Some(connected);
                        continue;
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.attempt(&mut connected, &pipe, expected).await
            };
            match attempt {
                Ok(mut replies) => {
                    self.conn = Some(connected);
                    self.applied = applied;
                    self.stats
                        .commands
                        .fetch_add(commands.len() as u64, Ordering::Relaxed);
                    self.stats.pipelines.fetch_add(1, Ordering::Relaxed);
                    if wait.is_some() {
                        replies.pop();
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
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(last)) => {
                    drop(connected);
                    self.retry_later(&mut failing_since, &mut backoff, last)
                        .await?;
                }
            }
        }
    }

    /// One try on `connected`: the pipeline, then the replicas' confirmation.
    async fn attempt(
        &self,
        connected: &mut Connected,
        pipe: &redis::Pipeline,
        expected: usize,
    ) -> Result<Vec<Value>, Failure> {
        let mut replies = connected
            .conn
            .pipeline(pipe, expected)
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
        confirmed.map_err(|e| {
            let mut failure = Failure::from(e);
            if let Failure::Fatal(LaneError::NotReplicated { wanted, .. }) = &mut failure {
                *wanted = wait.replicas;
            }
            failure
        })
    }

    /// After a reconnect: whether the transaction `token` ran before its reply was
    /// lost (never for a plain pipeline, which is simply sent again). Also checks that
    /// the server holds everything the lane counted as applied.
    async fn ran_before(
        &self,
        connected: &mut Connected,
        token: &str,
        marker: &str,
        plain: bool,
    ) -> Result<bool, Failure> {
        let found = read_marker(&mut connected.conn, marker)
            .await
            .map_err(Failure::Retry)?;
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
        // In a cluster each slot's key holds its own last positions: no lane-wide view.
        let found = found.map(|c| c.applied).unwrap_or_default();
        let behind = self.settings.cluster.is_none() && found.is_behind(&self.applied);
        if behind {
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
                applied: show(&self.applied),
            }));
        }
        Ok(false)
    }

    /// Counts a failure against `retry_seconds`; waits the backoff, or gives up.
    async fn retry_later(
        &self,
        failing_since: &mut Option<Instant>,
        backoff: &mut Duration,
        last: String,
    ) -> Result<(), LaneError> {
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.settings.retry_for {
            return Err(LaneError::GaveUp {
                seconds: self.settings.retry_for.as_secs(),
                last,
            });
        }
        tracing::warn!(lane = self.id, error = %last, retry_in = ?*backoff, "cannot write to Redis now (unreachable, or no longer the master); retrying");
        tokio::time::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(Duration::from_secs(2));
        Ok(())
    }

    /// Takes the replies of `MULTI, commands…, SET marker, EXEC` apart. A command Redis
    /// refused while queueing aborts the whole transaction: those commands are answered
    /// with their error and the others are sent again without them.
    async fn unpack(
        &mut self,
        commands: &[LaneCommand],
        mut replies: Vec<Value>,
        marker: &str,
        select: usize,
    ) -> Result<Vec<Value>, LaneError> {
        let n = commands.len();
        let exec = if replies.len() == n + 3 + 2 * select {
            replies.pop()
        } else {
            None
        };
        match exec {
            Some(Value::Array(items)) if items.len() == n + 1 + 2 * select => {
                Ok(items.into_iter().skip(select).take(n).collect())
            }
            _ => {
                let first = 1 + select;
                let queued = &replies[first.min(replies.len())..(first + n).min(replies.len())];
                let rejected: Vec<usize> = queued
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| matches!(r, Value::ServerError(_)))
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
                            rest_replies.next().unwrap_or(Value::Nil)
                        }
                    })
                    .collect())
            }
        }
    }
}
