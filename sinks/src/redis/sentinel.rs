//! Redis behind Sentinel: which server is the master now, as the sentinels say, and a
//! watch on their `+switch-master` announcements.
//!
//! Resolution follows the Sentinel client protocol: ask each sentinel in turn for
//! `SENTINEL GET-MASTER-ADDR-BY-NAME <name>`, connect to the address given (with the
//! data nodes' credentials) and check with `ROLE` that it is a master. Every lane does
//! this whenever it (re)connects, so after a failover each lane finds the new master by
//! itself. The watcher only makes that sooner: on `+switch-master` it bumps a counter
//! that lanes compare before each pipeline, and it logs the switch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::{AsyncConnectionConfig, ConnectionAddr, Value};
use tokio::task::JoinHandle;

use super::conn::{error_text, ConnectError, Connection};
use super::target::SentinelSpec;

/// How long one sentinel may take to accept a connection.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

/// Why no master could be had from the sentinels.
#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    #[error("{target}: no sentinel answered: {errors}")]
    NoSentinel { target: String, errors: String },
    #[error("{target}: no sentinel knows a master named {name:?} (check the name after #)")]
    UnknownMaster { target: String, name: String },
    #[error("{target}: the sentinels name {addr} as the master of {name:?}, but it cannot be reached: {error}")]
    MasterUnreachable {
        target: String,
        name: String,
        addr: String,
        error: String,
    },
    #[error(
        "{target}: the sentinels name {addr} as the master of {name:?}, but it says it is a {role}"
    )]
    NotMaster {
        target: String,
        name: String,
        addr: String,
        role: String,
    },
    /// The master refused our credentials (or another setting): not worth retrying.
    #[error(transparent)]
    Master(ConnectError),
}

impl SentinelError {
    /// Whether a later try may succeed (a failover under way, a sentinel restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            SentinelError::NoSentinel { .. }
            | SentinelError::MasterUnreachable { .. }
            | SentinelError::NotMaster { .. } => true,
            SentinelError::UnknownMaster { .. } => false,
            SentinelError::Master(e) => e.is_transient(),
        }
    }
}

/// The sentinels of one sink, shared by its lanes.
pub struct Sentinels {
    spec: SentinelSpec,
    /// How long a data node's replies may take.
    response_timeout: Duration,
    /// Shown in messages: the url without password.
    shown: String,
    /// `+switch-master` announcements seen for our master.
    switches: AtomicU64,
}

fn addr_text(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(h, p)
        | ConnectionAddr::TcpTls {
            host: h, port: p, ..
        } => {
            format!("{h}:{p}")
        }
        other => other.to_string(),
    }
}

impl Sentinels {
    pub fn new(spec: SentinelSpec, shown: String, response_timeout: Duration) -> Arc<Sentinels> {
        Arc::new(Sentinels {
            spec,
            response_timeout,
            shown,
            switches: AtomicU64::new(0),
        })
    }

    /// The url, without password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// How many switches of our master were announced so far.
    pub fn switches(&self) -> u64 {
        self.switches.load(Ordering::SeqCst)
    }

    /// A connection to the current master, and its address.
    pub async fn connect_master(&self) -> Result<(Connection, String), SentinelError> {
        let name = &self.spec.master_name;
        let mut errors = Vec::new();
        let mut unknown = 0;
        let mut master_problem = None;
        for sentinel in &self.spec.sentinels {
            let at = addr_text(&sentinel.addr);
            let (host, port) = match ask_master_addr(sentinel, name).await {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    unknown += 1;
                    errors.push(format!("{at}: no master {name:?}"));
                    continue;
                }
                Err(e) => {
                    errors.push(format!("{at}: {e}"));
                    continue;
                }
            };
            let addr = format!("{host}:{port}");
            let info = redis::ConnectionInfo {
                addr: ConnectionAddr::Tcp(host, port),
                redis: self.spec.node.clone(),
            };
            let mut conn = match Connection::open(&info, self.response_timeout).await {
                Ok(conn) => conn,
                Err(e) if e.is_transient() => {
                    master_problem = Some(SentinelError::MasterUnreachable {
                        target: self.shown.clone(),
                        name: name.clone(),
                        addr,
                        error: e.to_string(),
                    });
                    continue;
                }
                Err(e) => return Err(SentinelError::Master(e)),
            };
            match role(&mut conn).await {
                Ok(role) if role == "master" => return Ok((conn, addr)),
                Ok(role) => {
                    master_problem = Some(SentinelError::NotMaster {
                        target: self.shown.clone(),
                        name: name.clone(),
                        addr,
                        role,
                    })
                }
                Err(error) => {
                    master_problem = Some(SentinelError::MasterUnreachable {
                        target: self.shown.clone(),
                        name: name.clone(),
                        addr,
                        error,
                    })
                }
            }
        }
        if let Some(problem) = master_problem {
            return Err(problem);
        }
        if unknown > 0 && unknown == errors.len() {
            return Err(SentinelError::UnknownMaster {
                target: self.shown.clone(),
                name: name.clone(),
            });
        }
        Err(SentinelError::NoSentinel {
            target: self.shown.clone(),
            errors: errors.join("; "),
        })
    }

    /// Follows `+switch-master` on one sentinel after another (the next when one goes
    /// away), counting and logging the switches of our master. Stops when aborted.
    pub fn watch(self: &Arc<Self>) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut i = 0;
            loop {
                let sentinel = &me.spec.sentinels[i % me.spec.sentinels.len()];
                if let Err(e) = me.follow(sentinel).await {
                    tracing::debug!(sentinel = %addr_text(&sentinel.addr), error = %e, "sentinel watch interrupted");
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    }

    async fn follow(&self, sentinel: &redis::ConnectionInfo) -> redis::RedisResult<()> {
        let client = redis::Client::open(sentinel.clone())?;
        let mut pubsub = tokio::time::timeout(SENTINEL_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::IoError, "sentinel timed out"))
            })??;
        pubsub.subscribe("+switch-master").await?;
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let payload: String = message.get_payload()?;
            let mut parts = payload.split(' ');
            if parts.next() != Some(self.spec.master_name.as_str()) {
                continue;
            }
            let words: Vec<&str> = parts.collect();
            let (from, to) = match words.as_slice() {
                [oh, op, nh, np] => (format!("{oh}:{op}"), format!("{nh}:{np}")),
                _ => (String::from("?"), payload.clone()),
            };
            self.switches.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(
                master = %self.spec.master_name,
                from = %from,
                to = %to,
                "sentinel: the master switched; every lane reconnects to the new master and resumes from its checkpoint keys"
            );
        }
        Ok(())
    }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME`: the master's address, or `None` when this
/// sentinel knows no such master.
async fn ask_master_addr(
    sentinel: &redis::ConnectionInfo,
    name: &str,
) -> Result<Option<(String, u16)>, String> {
    let client = redis::Client::open(sentinel.clone()).map_err(|e| e.to_string())?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(SENTINEL_TIMEOUT)
        .set_response_timeout(SENTINEL_TIMEOUT);
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let reply: Value = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(name)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    match reply {
        Value::Nil => Ok(None),
        Value::Array(items) => match items.as_slice() {
            [host, port] => {
                let host: String = redis::from_redis_value(host).map_err(|e| e.to_string())?;
                let port: u16 = redis::from_redis_value(port).map_err(|e| e.to_string())?;
                Ok(Some((host, port)))
            }
            _ => Err(format!("unexpected answer {items:?}")),
        },
        reply @ Value::ServerError(_) => Err(error_text(&reply)),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// The first word of `ROLE`: `master`, `slave`, `sentinel`.
async fn role(conn: &mut Connection) -> Result<String, String> {
    match conn.call(&[b"ROLE".as_slice()]).await {
        Ok(Value::Array(items)) => items
            .first()
            .and_then(|r| redis::from_redis_value::<String>(r).ok())
            .ok_or_else(|| "ROLE gave no role".to_owned()),
        Ok(reply @ Value::ServerError(_)) => Err(error_text(&reply)),
        Ok(other) => Err(format!("ROLE answered {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}
