//! Acknowledging only what the master's replicas hold too. A master acknowledges a
//! transaction before its replicas have it; if it fails then, the replica promoted in
//! its place never saw it, and a pipeline already acknowledged to the source would be
//! lost. With `wait_replicas: N` every pipeline ends with `WAIT`, and a lane counts it
//! applied only once enough replicas confirmed it.
//!
//! How many is enough is fixed when a connection is made: min(N, the replicas the
//! master lists in `ROLE`), so a master left without replicas by a failover (the only
//! one was promoted) is not waited on forever; that is said once. It is raised again,
//! up to N, when a recount (every 10 s) finds replicas back, and never lowered on a
//! live connection: a replica that leaves may be one being promoted, and a write the
//! master then acknowledges alone would be lost with it. WAIT keeps waiting instead,
//! until the failover shows (the connection drops, the master turns replica) or
//! `retry_seconds` pass.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::{Cmd, Value};

use super::conn::{error_text, Connection};

/// `wait_replicas` meaning every replica the master lists (the default behind
/// Sentinel): whichever one Sentinel promotes then holds what was acknowledged.
pub const ALL_REPLICAS: u32 = u32::MAX;

/// How often a lane still waiting for its replicas says so.
const STILL_WAITING: Duration = Duration::from_secs(10);

/// `wait_replicas`, `wait_timeout_ms`.
#[derive(Debug)]
pub struct WaitSettings {
    pub replicas: u32,
    pub timeout_ms: u64,
    /// Whether "fewer replicas than asked" was logged already.
    warned_short: AtomicBool,
}

/// How often a connection counts its master's replicas again, so one that came back
/// is waited for again.
const RECOUNT: Duration = Duration::from_secs(10);

/// What a connection's pipelines wait for (see the module).
#[derive(Debug, Default)]
pub struct ReplicaCount {
    wanted: Option<u32>,
    counted: Option<Instant>,
}

/// Why a pipeline could not be confirmed.
#[derive(Debug)]
pub enum WaitFailure {
    /// The connection failed (or the server is no longer a master): find the master
    /// again and ask it whether the pipeline is there.
    Connection(String),
    /// The replicas did not confirm within `retry_seconds`.
    TimedOut {
        waited: Duration,
        got: i64,
        wanted: u32,
    },
}

impl WaitSettings {
    pub fn new(replicas: u32, timeout_ms: u64) -> WaitSettings {
        WaitSettings {
            replicas,
            timeout_ms: timeout_ms.max(1),
            warned_short: AtomicBool::new(false),
        }
    }

    fn wanted(&self, count: &ReplicaCount) -> u32 {
        count.wanted.unwrap_or(self.replicas)
    }

    /// `WAIT <replicas wanted> <timeout_ms>`.
    pub fn command(&self, count: &ReplicaCount) -> Cmd {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(self.wanted(count)).arg(self.timeout_ms);
        cmd
    }

    /// Counts the master's replicas when it is time (see the module).
    pub async fn recount(&self, conn: &mut Connection, count: &mut ReplicaCount) {
        let due = match (count.wanted, count.counted) {
            (None, _) => true,
            (Some(wanted), Some(at)) => wanted < self.replicas && at.elapsed() >= RECOUNT,
            (Some(_), None) => false,
        };
        if !due {
            return;
        }
        let Ok(listed) = replicas_of(conn).await else {
            return;
        };
        let listed = u32::try_from(listed).unwrap_or(u32::MAX).min(self.replicas);
        count.wanted = Some(count.wanted.map_or(listed, |w| w.max(listed)));
        count.counted = Some(Instant::now());
        let short = self.replicas != ALL_REPLICAS && listed < self.replicas;
        if short && !self.warned_short.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                wait_replicas = self.replicas,
                replicas = listed,
                "the master has fewer replicas than wait_replicas: writes are acknowledged once the replicas it has confirm them"
            );
        }
    }

    /// After `WAIT` answered `reply`: waits on (WAIT again, same connection, so it
    /// covers everything this connection wrote) until enough replicas confirmed, for at
    /// most `retry_for`. A server that is no longer a master ends the wait as a lost
    /// connection.
    pub async fn confirm(
        &self,
        conn: &mut Connection,
        count: &mut ReplicaCount,
        reply: Value,
        lane: usize,
        retry_for: Duration,
    ) -> Result<(), WaitFailure> {
        let started = Instant::now();
        let mut said = None::<Instant>;
        // A pipeline sent right after a reconnect was built before its connection
        // counted the replicas: count them now.
        self.recount(conn, count).await;
        let mut reply = reply;
        loop {
            let got = match reply {
                Value::Int(n) => n,
                reply @ Value::ServerError(_) => {
                    return Err(WaitFailure::Connection(error_text(&reply)))
                }
                other => return Err(WaitFailure::Connection(format!("WAIT answered {other:?}"))),
            };
            if got >= i64::from(self.wanted(count)) {
                return Ok(());
            }
            let listed = replicas_of(conn).await.map_err(WaitFailure::Connection)?;
            if started.elapsed() >= retry_for {
                return Err(WaitFailure::TimedOut {
                    waited: started.elapsed(),
                    got,
                    wanted: self.wanted(count),
                });
            }
            // Said at once, then every STILL_WAITING: never a silent wait.
            if said.is_none_or(|at| at.elapsed() >= STILL_WAITING) {
                said = Some(Instant::now());
                tracing::warn!(
                    lane,
                    confirmed = got,
                    needed = self.wanted(count),
                    replicas = listed,
                    "the master's replicas have not confirmed the last pipeline yet; waiting (wait_replicas)"
                );
            }
            reply = conn
                .send(&self.command(count))
                .await
                .map_err(|e| WaitFailure::Connection(e.to_string()))?;
        }
    }
}

/// How many replicas the master on `conn` lists (`ROLE`).
async fn replicas_of(conn: &mut Connection) -> Result<usize, String> {
    match conn.call(&[b"ROLE".as_slice()]).await {
        Ok(Value::Array(items)) => match (items.first(), items.get(2)) {
            (Some(Value::BulkString(role)), Some(Value::Array(replicas))) if role == b"master" => {
                Ok(replicas.len())
            }
            _ => Err("the server is no longer a master (ROLE)".into()),
        },
        Ok(reply @ Value::ServerError(_)) => Err(error_text(&reply)),
        Ok(other) => Err(format!("ROLE answered {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}
