//! A running Pika's keys read over its client port, as events like a dump's: what a
//! live `verify` compares with the target while writes go on.
//!
//! Pika 3.x keeps each type apart, so one name can hold a string, a hash, a list, a
//! sorted set and a set at once (3.5: and a stream): each name is probed as every type,
//! and its events come in Pika's `TYPE` order with the other types in `also_types`, as
//! the dump reader gives them, so the same type-conflict policy applies. Each type is
//! read in chunks (GETRANGE windows, HSCAN, LRANGE windows, SSCAN, ZSCAN, XRANGE with a
//! COUNT), so memory stays flat however big a key is. The reads are those every Pika
//! from 3.2 to 4.0 answers correctly: ZSCAN, not ZRANGE (3.3.6's ZRANGE skips a member
//! scored -inf and shows another key's in its place); TYPE only for strings (it names
//! the first type, and a string is always first); no time to live for streams (4.0.1's
//! PTTL answers 0 for them; Pika's streams never expire).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, Value};

use crate::event::{
    BinlogOffset, Chunk, DataType, Event, Op, Part, Position, StreamEntry, StreamId, TypeSet,
};
use crate::pika::storage::ChunkLimits;

/// Why a master's keys could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MasterReadError {
    #[error("cannot connect to the Pika master at {addr}: {error}")]
    Connect { addr: String, error: String },
    #[error("the Pika master at {addr} refused `{command}`{}: {error}", key.as_ref().map(|k| format!(" on {k}")).unwrap_or_default())]
    Command {
        addr: String,
        command: String,
        key: Option<String>,
        error: String,
    },
}

/// One database of a running master, read key by key.
pub struct MasterKeys {
    addr: String,
    db: u32,
    conn: MultiplexedConnection,
    limits: ChunkLimits,
    /// Events numbered as a dump's are (their position means nothing else here).
    seq: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        _ => None,
    }
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// A score as Pika writes it (`inf`, `-inf`, `1.5`).
fn score(v: &Value) -> Option<f64> {
    let b = bytes(v)?;
    match std::str::from_utf8(&b).ok()? {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

/// What one name holds: which types, and its time to live.
#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    types: TypeSet,
    expire_at_ms: Option<i64>,
}

/// Holds one chunk back so the last one of a key can be labelled.
struct Chunker<'a> {
    db: u32,
    key: &'a Bytes,
    t: DataType,
    also: TypeSet,
    expire_at_ms: Option<i64>,
    pending: Option<Chunk>,
    sent: bool,
    seq: &'a mut u64,
}

impl Chunker<'_> {
    fn event(&mut self, chunk: Chunk, part: Part) -> Event {
        *self.seq += 1;
        Event {
            db: self.db,
            key: self.key.clone(),
            data_type: Some(self.t),
            op: Op::Snapshot {
                chunk,
                part,
                expire_at_ms: self.expire_at_ms.filter(|_| part.ends_key()),
                also_types: self.also,
            },
            position: Position::Snapshot {
                at: BinlogOffset::default(),
                seq: *self.seq,
            },
            exec_time: None,
        }
    }

    fn push(&mut self, chunk: Chunk, out: &mut Vec<Event>) {
        if let Some(previous) = self.pending.replace(chunk) {
            let part = if self.sent { Part::More } else { Part::First };
            self.sent = true;
            let e = self.event(previous, part);
            out.push(e);
        }
    }

    fn finish(mut self, out: &mut Vec<Event>) {
        if let Some(last) = self.pending.take() {
            let part = if self.sent { Part::Last } else { Part::Whole };
            let e = self.event(last, part);
            out.push(e);
        }
    }
}

impl MasterKeys {
    /// Connects to database `db` of the master at `addr` (`host:port`).
    pub async fn connect(
        addr: &str,
        password: Option<&str>,
        db: u32,
        limits: ChunkLimits,
    ) -> Result<MasterKeys, MasterReadError> {
        let failed = |error: String| MasterReadError::Connect {
            addr: addr.to_owned(),
            error,
        };
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| failed("expected HOST:PORT".into()))?;
        let info = redis::ConnectionInfo {
            addr: redis::ConnectionAddr::Tcp(host, port),
            redis: redis::RedisConnectionInfo {
                db: i64::from(db),
                password: password.map(str::to_owned),
                ..Default::default()
            },
        };
        let client = redis::Client::open(info).map_err(|e| failed(e.to_string()))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(std::time::Duration::from_secs(10))
            .set_response_timeout(std::time::Duration::from_secs(60));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(MasterKeys {
            addr: addr.to_owned(),
            db,
            conn,
            limits,
            seq: 0,
        })
    }

    pub fn db(&self) -> u32 {
        self.db
    }

    /// One page of the keyspace: the cursor to go on from (0 at the end) and names. A
    /// name can come twice (once per type it holds in Pika 3.x).
    pub async fn scan(
        &mut self,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<Bytes>), MasterReadError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("COUNT").arg(count);
        let reply = items(Self::call(&mut self.conn, &self.addr, &cmd, None).await?);
        let mut reply = reply.into_iter();
        let next = reply.next().as_ref().and_then(int).unwrap_or(0);
        let names = reply.next().map(items).unwrap_or_default();
        Ok((
            u64::try_from(next).unwrap_or(0),
            names.iter().filter_map(bytes).collect(),
        ))
    }

    /// Which types `key` holds, and its expiry. Every probe is one that each version
    /// answers (an error, e.g. XLEN before 3.5 or a type 4.0 refuses, reads as none).
    async fn probe(&mut self, key: &Bytes) -> Result<Probe, MasterReadError> {
        let mut pipe = redis::pipe();
        pipe.cmd("TYPE").arg(key.as_ref());
        pipe.cmd("PTTL").arg(key.as_ref());
        for len in ["HLEN", "LLEN", "ZCARD", "SCARD", "XLEN"] {
            pipe.cmd(len).arg(key.as_ref());
        }
        let replies = self
            .conn
            .send_packed_commands(&pipe, 0, 7)
            .await
            .map_err(|e| MasterReadError::Command {
                addr: self.addr.clone(),
                command: "TYPE/PTTL/…LEN".into(),
                key: Some(crate::display::display_key(key)),
                error: e.to_string(),
            })?;
        let mut probe = Probe::default();
        // TYPE names the first type a name holds, and a string comes first.
        if replies
            .first()
            .and_then(bytes)
            .is_some_and(|t| t == "string")
        {
            probe.types.insert(DataType::String);
        }
        let lens = [
            DataType::Hash,
            DataType::List,
            DataType::Zset,
            DataType::Set,
            DataType::Stream,
        ];
        for (t, reply) in lens.into_iter().zip(replies.iter().skip(2)) {
            if int(reply).is_some_and(|n| n > 0) {
                probe.types.insert(t);
            }
        }
        if let Some(ttl) = replies.get(1).and_then(int).filter(|t| *t >= 0) {
            probe.expire_at_ms = Some(now_ms().saturating_add(ttl));
        }
        Ok(probe)
    }

    /// Whether the master holds `key` as any type (`EXISTS` counts every type Pika
    /// keeps under the name).
    pub async fn holds(&mut self, key: &Bytes) -> Result<bool, MasterReadError> {
        let reply = Self::call(
            &mut self.conn,
            &self.addr,
            redis::cmd("EXISTS").arg(key.as_ref()),
            Some(key),
        )
        .await?;
        Ok(int(&reply).is_some_and(|n| n > 0))
    }

    /// The events of `key`, every type it holds, as a dump would give them; none when
    /// the key is gone.
    pub async fn read(&mut self, key: &Bytes, out: &mut Vec<Event>) -> Result<(), MasterReadError> {
        let probe = self.probe(key).await?;
        for t in probe.types.iter() {
            let mut also = TypeSet::default();
            for other in probe.types.iter().filter(|other| *other != t) {
                also.insert(other);
            }
            let expire_at_ms = probe.expire_at_ms.filter(|_| t != DataType::Stream);
            let mut seq = self.seq;
            let mut chunker = Chunker {
                db: self.db,
                key,
                t,
                also,
                expire_at_ms,
                pending: None,
                sent: false,
                seq: &mut seq,
            };
            let result = match t {
                DataType::String => {
                    Self::read_string(
                        &mut self.conn,
                        &self.addr,
                        self.limits,
                        key,
                        &mut chunker,
                        out,
                    )
                    .await
                }
                DataType::List => {
                    Self::read_list(
                        &mut self.conn,
                        &self.addr,
                        self.limits,
                        key,
                        &mut chunker,
                        out,
                    )
                    .await
                }
                DataType::Stream => {
                    Self::read_stream(
                        &mut self.conn,
                        &self.addr,
                        self.limits,
                        key,
                        &mut chunker,
                        out,
                    )
                    .await
                }
                DataType::Hash | DataType::Set | DataType::Zset => {
                    Self::read_scanned(
                        &mut self.conn,
                        &self.addr,
                        self.limits,
                        key,
                        t,
                        &mut chunker,
                        out,
                    )
                    .await
                }
            };
            chunker.finish(out);
            self.seq = seq;
            result?;
        }
        Ok(())
    }

    async fn call(
        conn: &mut MultiplexedConnection,
        addr: &str,
        cmd: &Cmd,
        key: Option<&Bytes>,
    ) -> Result<Value, MasterReadError> {
        let name = || {
            cmd.args_iter()
                .next()
                .map(|a| match a {
                    redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                    redis::Arg::Cursor => String::new(),
                })
                .unwrap_or_default()
        };
        match conn.send_packed_command(cmd).await {
            Ok(Value::ServerError(e)) => Err(MasterReadError::Command {
                addr: addr.to_owned(),
                command: name(),
                key: key.map(|k| crate::display::display_key(k)),
                error: format!("{e:?}"),
            }),
            Ok(v) => Ok(v),
            Err(e) => Err(MasterReadError::Command {
                addr: addr.to_owned(),
                command: name(),
                key: key.map(|k| crate::display::display_key(k)),
                error: e.to_string(),
            }),
        }
    }

    async fn read_string(
        conn: &mut MultiplexedConnection,
        addr: &str,
        limits: ChunkLimits,
        key: &Bytes,
        chunker: &mut Chunker<'_>,
        out: &mut Vec<Event>,
    ) -> Result<(), MasterReadError> {
        let len = int(&Self::call(
            conn,
            addr,
            redis::cmd("STRLEN").arg(key.as_ref()),
            Some(key),
        )
        .await?)
        .unwrap_or(0);
        let window = i64::try_from(limits.bytes.max(1)).unwrap_or(i64::MAX);
        if len <= window {
            let v = Self::call(conn, addr, redis::cmd("GET").arg(key.as_ref()), Some(key)).await?;
            if let Some(v) = bytes(&v) {
                chunker.push(Chunk::String(v), out);
            }
            return Ok(());
        }
        let mut at = 0i64;
        while at < len {
            let end = at.saturating_add(window).saturating_sub(1);
            let v = Self::call(
                conn,
                addr,
                redis::cmd("GETRANGE").arg(key.as_ref()).arg(at).arg(end),
                Some(key),
            )
            .await?;
            let Some(v) = bytes(&v).filter(|v| !v.is_empty()) else {
                break;
            };
            at = at.saturating_add(v.len() as i64);
            chunker.push(Chunk::String(v), out);
        }
        Ok(())
    }

    async fn read_list(
        conn: &mut MultiplexedConnection,
        addr: &str,
        limits: ChunkLimits,
        key: &Bytes,
        chunker: &mut Chunker<'_>,
        out: &mut Vec<Event>,
    ) -> Result<(), MasterReadError> {
        let window = i64::try_from(limits.elements.max(1)).unwrap_or(i64::MAX);
        let mut at = 0i64;
        loop {
            let end = at.saturating_add(window).saturating_sub(1);
            let v = Self::call(
                conn,
                addr,
                redis::cmd("LRANGE").arg(key.as_ref()).arg(at).arg(end),
                Some(key),
            )
            .await?;
            let page: Vec<Bytes> = items(v).iter().filter_map(bytes).collect();
            let n = page.len() as i64;
            if n > 0 {
                chunker.push(Chunk::List(page), out);
            }
            if n < window {
                return Ok(());
            }
            at = at.saturating_add(n);
        }
    }

    /// Hashes, sets and sorted sets: HSCAN, SSCAN and ZSCAN pages gathered into chunks.
    async fn read_scanned(
        conn: &mut MultiplexedConnection,
        addr: &str,
        limits: ChunkLimits,
        key: &Bytes,
        t: DataType,
        chunker: &mut Chunker<'_>,
        out: &mut Vec<Event>,
    ) -> Result<(), MasterReadError> {
        let command = match t {
            DataType::Hash => "HSCAN",
            DataType::Set => "SSCAN",
            _ => "ZSCAN",
        };
        let per_chunk = limits.elements.max(1);
        let mut chunk = Vec::new();
        let mut cursor = 0u64;
        let flush = |chunk: &mut Vec<Value>, chunker: &mut Chunker<'_>, out: &mut Vec<Event>| {
            let flat = std::mem::take(chunk);
            let c = match t {
                DataType::Set => Chunk::Set(flat.iter().filter_map(bytes).collect()),
                DataType::Hash => Chunk::Hash(
                    flat.chunks(2)
                        .filter_map(|p| Some((bytes(p.first()?)?, bytes(p.get(1)?)?)))
                        .collect(),
                ),
                _ => Chunk::Zset(
                    flat.chunks(2)
                        .filter_map(|p| Some((bytes(p.first()?)?, score(p.get(1)?)?)))
                        .collect(),
                ),
            };
            if !c.is_empty() {
                chunker.push(c, out);
            }
        };
        let width = if t == DataType::Set { 1 } else { 2 };
        loop {
            let v = Self::call(
                conn,
                addr,
                redis::cmd(command)
                    .arg(key.as_ref())
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(per_chunk),
                Some(key),
            )
            .await?;
            let mut reply = items(v).into_iter();
            cursor = reply
                .next()
                .as_ref()
                .and_then(int)
                .and_then(|c| u64::try_from(c).ok())
                .unwrap_or(0);
            for item in reply.next().map(items).unwrap_or_default() {
                chunk.push(item);
                if chunk.len() >= per_chunk * width {
                    flush(&mut chunk, chunker, out);
                }
            }
            if cursor == 0 {
                break;
            }
        }
        flush(&mut chunk, chunker, out);
        Ok(())
    }

    async fn read_stream(
        conn: &mut MultiplexedConnection,
        addr: &str,
        limits: ChunkLimits,
        key: &Bytes,
        chunker: &mut Chunker<'_>,
        out: &mut Vec<Event>,
    ) -> Result<(), MasterReadError> {
        let per_chunk = limits.elements.max(1);
        let mut from = StreamId::new(0, 0);
        loop {
            let v = Self::call(
                conn,
                addr,
                redis::cmd("XRANGE")
                    .arg(key.as_ref())
                    .arg(from.to_string())
                    .arg("+")
                    .arg("COUNT")
                    .arg(per_chunk),
                Some(key),
            )
            .await?;
            let mut entries = Vec::new();
            for entry in items(v) {
                let mut parts = items(entry).into_iter();
                let id = parts
                    .next()
                    .as_ref()
                    .and_then(bytes)
                    .and_then(|id| std::str::from_utf8(&id).ok()?.parse::<StreamId>().ok());
                let Some(id) = id else { continue };
                let flat = parts.next().map(items).unwrap_or_default();
                let fields = flat
                    .chunks(2)
                    .filter_map(|p| Some((bytes(p.first()?)?, bytes(p.get(1)?)?)))
                    .collect();
                entries.push(StreamEntry { id, fields });
            }
            let n = entries.len();
            let Some(last) = entries.last().map(|e| e.id) else {
                return Ok(());
            };
            chunker.push(
                Chunk::Stream {
                    entries,
                    last_id: last,
                },
                out,
            );
            if n < per_chunk {
                return Ok(());
            }
            from = match last.seq.checked_add(1) {
                Some(seq) => StreamId::new(last.ms, seq),
                None => StreamId::new(last.ms.saturating_add(1), 0),
            };
        }
    }
}
