//! What a Redis target says of itself before anything is written: its version, the memory
//! it uses and may use (per master of a cluster), the thresholds of its encodings, and
//! how many pipelined commands a second it answers. `plan` weighs a dump against it.
//! Only reads (INFO, CONFIG GET, CLUSTER SLOTS, ECHO): nothing is written.

use std::time::{Duration, Instant};

use redis::Value;

use super::cluster::SlotMap;
use super::config::RedisSinkConfig;
use super::conn::{command, Connection};
use super::memory::Encodings;
use super::target::Target;
use super::RedisSinkError;

/// One server: its address and memory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Server {
    pub addr: String,
    pub used_memory: u64,
    /// `maxmemory`; 0: no limit.
    pub maxmemory: u64,
}

/// What the target says of itself.
#[derive(Debug, Clone)]
pub struct TargetFacts {
    pub version: String,
    /// The one server, or each master of a cluster (in the slot map's order).
    pub servers: Vec<Server>,
    pub encodings: Encodings,
    /// For a cluster: which master serves each slot.
    pub slots: Option<SlotMap>,
    /// Pipelined commands the target answered per second, measured with ECHO of
    /// `sample_bytes` (it writes nothing).
    pub echo_rate: f64,
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

pub(super) async fn info(conn: &mut Connection) -> Result<String, String> {
    match conn.call(&[b"INFO".as_slice()]).await {
        Ok(Value::BulkString(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Ok(Value::VerbatimString { text, .. }) => Ok(text),
        Ok(other) => Err(format!("INFO answered {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A `CONFIG GET` value, `None` when refused (a managed Redis may refuse CONFIG).
async fn config_get(conn: &mut Connection, name: &str) -> Option<String> {
    let reply = conn
        .call(&[b"CONFIG".as_slice(), b"GET", name.as_bytes()])
        .await
        .ok()?;
    let items = match reply {
        Value::Array(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => return None,
    };
    match items.get(1)? {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

async fn encodings(conn: &mut Connection, version: &str) -> Encodings {
    let mut e = Encodings::default();
    let number = |value: Option<String>, slot: &mut usize| {
        if let Some(n) = value.and_then(|v| v.parse().ok()) {
            *slot = n;
        }
    };
    number(
        config_get(conn, "hash-max-listpack-entries").await,
        &mut e.hash_listpack_entries,
    );
    number(
        config_get(conn, "hash-max-listpack-value").await,
        &mut e.hash_listpack_value,
    );
    number(
        config_get(conn, "zset-max-listpack-entries").await,
        &mut e.zset_listpack_entries,
    );
    number(
        config_get(conn, "zset-max-listpack-value").await,
        &mut e.zset_listpack_value,
    );
    number(
        config_get(conn, "set-max-intset-entries").await,
        &mut e.set_intset_entries,
    );
    // Sets became listpacks in 7.2.
    let major_minor: Vec<u32> = version
        .split('.')
        .take(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    if major_minor.as_slice() >= [7, 2].as_slice() {
        let mut entries = 128;
        number(
            config_get(conn, "set-max-listpack-entries").await,
            &mut entries,
        );
        e.set_listpack_entries = Some(entries);
        number(
            config_get(conn, "set-max-listpack-value").await,
            &mut e.set_listpack_value,
        );
    }
    if let Some(size) = config_get(conn, "list-max-listpack-size")
        .await
        .and_then(|v| v.parse().ok())
    {
        e.list_listpack_size = size;
    }
    if let Some(policy) = config_get(conn, "maxmemory-policy").await {
        e.shared_integers = !(policy.contains("lru") || policy.contains("lfu"));
    }
    e
}

async fn server(conn: &mut Connection, addr: String) -> Result<(Server, String), String> {
    let text = info(conn).await?;
    let number = |name: &str| {
        info_field(&text, name)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((
        Server {
            addr,
            used_memory: number("used_memory"),
            maxmemory: number("maxmemory"),
        },
        info_field(&text, "redis_version").unwrap_or_default(),
    ))
}

/// Pipelined ECHOs of `bytes` bytes for about `span`: commands answered per second.
async fn echo_rate(conn: &mut Connection, bytes: usize, span: Duration) -> f64 {
    let payload = vec![b'x'; bytes.clamp(1, 64 << 10)];
    let mut pipeline = redis::Pipeline::new();
    const DEPTH: usize = 64;
    for _ in 0..DEPTH {
        pipeline.add_command(command(&[b"ECHO".as_slice(), &payload]));
    }
    let started = Instant::now();
    let mut answered = 0u64;
    while started.elapsed() < span {
        if conn.pipeline(&pipeline, DEPTH).await.is_err() {
            break;
        }
        answered += DEPTH as u64;
    }
    answered as f64 / started.elapsed().as_secs_f64().max(1e-9)
}

impl TargetFacts {
    /// Asks the sink's target; `sample_bytes` is the typical value size, for the rate.
    pub async fn read(
        config: &RedisSinkConfig,
        sample_bytes: usize,
    ) -> Result<TargetFacts, RedisSinkError> {
        let target = Target::of(config)?;
        let timeout = config.response_timeout(false);
        let mut seed = super::endpoint_of(&target, timeout).connect().await?;
        let failed = |e: String| {
            RedisSinkError::Cluster(format!("reading what the target says of itself: {e}"))
        };
        let (first, version) = server(&mut seed.conn, seed.server.clone())
            .await
            .map_err(failed)?;
        let encodings = encodings(&mut seed.conn, &version).await;
        let echo_rate = echo_rate(&mut seed.conn, sample_bytes, Duration::from_millis(500)).await;
        let (servers, slots) = match (config.cluster, target.node()) {
            (true, Some(info)) => {
                let map = SlotMap::fetch(&mut seed.conn)
                    .await
                    .map_err(RedisSinkError::Cluster)?;
                let mut servers = Vec::new();
                for i in 0..map.nodes.len() {
                    let node = super::endpoint::Endpoint::Node(map.target(info, i), timeout);
                    let mut c = node.connect().await?;
                    let (s, _) = server(&mut c.conn, c.server.clone())
                        .await
                        .map_err(failed)?;
                    servers.push(s);
                }
                (servers, Some(map))
            }
            _ => (vec![first], None),
        };
        Ok(TargetFacts {
            version,
            servers,
            encodings,
            slots,
            echo_rate,
        })
    }
}
