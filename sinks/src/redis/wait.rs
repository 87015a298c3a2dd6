//! Acknowledging only what the master's replicas hold too. A master acknowledges a
//! transaction before its replicas have it; if it fails then, the replica promoted in
//! its place never saw it, and a pipeline already acknowledged to the source would be
//! lost. With `wait_replicas: N` every pipeline ends with `WAIT`, and a lane counts it
//! applied only once min(N, the replicas the master lists) confirmed it. A master with
//! fewer replicas than N (after a failover that used up the only one) is waited for by
//! as many as it has, and said so once; its replicas are counted again (`ROLE`) when a
//! connection is made, every 10 s, and whenever WAIT falls short.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::{Cmd, Value};

use super::conn::{error_text, Connection};

/// `wait_replicas`, `wait_timeout_ms`.
#[derive(Debug)]
pub struct WaitSettings {
    pub replicas: u32,
    pub timeout_ms: u64,
    /// Whether "fewer replicas than asked" was logged already.
    warned_short: AtomicBool,
}

/// How often a lane counts its master's replicas again, so one that came back is
/// waited for again.
const RECOUNT: Duration = Duration::from_secs(10);

/// What a connection's pipelines wait for: min(wait_replicas, the replicas listed).
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
    TimedOut { waited: Duration, got: i64 },
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
        if count.counted.is_some_and(|at| at.elapsed() < RECOUNT) {
            return;
        }
        if let Ok(listed) = replicas_of(conn).await {
            self.set_listed(count, listed);
        }
    }

    fn set_listed(&self, count: &mut ReplicaCount, listed: usize) {
        let listed = u32::try_from(listed).unwrap_or(u32::MAX);
        count.wanted = Some(self.replicas.min(listed));
        count.counted = Some(Instant::now());
        if listed < self.replicas && !self.warned_short.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                wait_replicas = self.replicas,
                replicas = listed,
                "the master has fewer replicas than wait_replicas: writes are acknowledged once the replicas it has confirm them"
            );
        }
    }

    /// After `WAIT` answered `reply`: waits on (WAIT again, same connection, so it
    /// covers everything this connection wrote) until enough replicas confirmed, for at
    /// most `retry_for`.
    pub async fn confirm(
        &self,
        conn: &mut Connection,
        count: &mut ReplicaCount,
        reply: Value,
        lane: usize,
        retry_for: Duration,
    ) -> Result<(), WaitFailure> {
        let started = Instant::now();
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
            self.set_listed(count, listed);
            if got >= i64::from(self.wanted(count)) {
                return Ok(());
            }
            if started.elapsed() >= retry_for {
                return Err(WaitFailure::TimedOut {
                    waited: started.elapsed(),
                    got,
                });
            }
            if started.elapsed() < Duration::from_millis(self.timeout_ms) * 2 {
                tracing::warn!(
                    lane,
                    confirmed = got,
                    needed = self.wanted(count),
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
