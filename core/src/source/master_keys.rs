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

/// Where the reading of one type of a key stands.
#[derive(Debug, Clone, Copy)]
enum Progress {
    Start,
    /// A string's next byte, a list's next index.
    Offset(i64),
    /// An HSCAN/SSCAN/ZSCAN cursor.
    Cursor(u64),
    /// A stream's next id.
    From(StreamId),
    Done,
}

/// One key being read, chunk by chunk: [`MasterKeys::next`] gives its events one at a
/// time, so memory holds a chunk or two however big the key is.
#[derive(Debug)]
pub struct KeyRead {
    key: Bytes,
    types: Vec<DataType>,
    all: TypeSet,
    expire_at_ms: Option<i64>,
    /// The type being read (index into `types`) and how far.
    at: usize,
    progress: Progress,
    /// A chunk held back so the last one of a type can be labelled, and whether one
    /// was sent before it.
    pending: Option<Chunk>,
    sent: bool,
    /// Gathered elements of a scanned type not yet a full chunk.
    gathered: Vec<Value>,
    ready: std::collections::VecDeque<Event>,
}

impl KeyRead {
    fn t(&self) -> Option<DataType> {
        self.types.get(self.at).copied()
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
        let reply = items(Self::send(&mut self.conn, &self.addr, &cmd, None).await?);
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
        let reply = self
            .call(redis::cmd("EXISTS").arg(key.as_ref()), key)
            .await?;
        Ok(int(&reply).is_some_and(|n| n > 0))
    }

    /// Starts reading `key`: every type it holds, in Pika's order (none when gone).
    pub async fn open(&mut self, key: &Bytes) -> Result<KeyRead, MasterReadError> {
        let probe = self.probe(key).await?;
        Ok(KeyRead {
            key: key.clone(),
            types: probe.types.iter().collect(),
            all: probe.types,
            expire_at_ms: probe.expire_at_ms,
            at: 0,
            progress: Progress::Start,
            pending: None,
            sent: false,
            gathered: Vec::new(),
            ready: std::collections::VecDeque::new(),
        })
    }

    /// The next event of `read`, as a dump would give it; `None` at the end of the key.
    pub async fn next(&mut self, read: &mut KeyRead) -> Result<Option<Event>, MasterReadError> {
        loop {
            if let Some(event) = read.ready.pop_front() {
                return Ok(Some(event));
            }
            let Some(t) = read.t() else {
                return Ok(None);
            };
            if let Progress::Done = read.progress {
                self.finish_type(read, t);
                read.at += 1;
                read.progress = Progress::Start;
                read.sent = false;
                continue;
            }
            self.page(read, t).await?;
        }
    }

    /// Every event of `key` into `out` (for keys known to be small).
    pub async fn read(&mut self, key: &Bytes, out: &mut Vec<Event>) -> Result<(), MasterReadError> {
        let mut read = self.open(key).await?;
        while let Some(event) = self.next(&mut read).await? {
            out.push(event);
        }
        Ok(())
    }

    fn event(&mut self, read: &KeyRead, t: DataType, chunk: Chunk, part: Part) -> Event {
        self.seq += 1;
        let mut also = TypeSet::default();
        for other in read.all.iter().filter(|other| *other != t) {
            also.insert(other);
        }
        // Pika's streams never expire (4.0.1's PTTL answers 0 for them).
        let expire_at_ms = read
            .expire_at_ms
            .filter(|_| t != DataType::Stream && part.ends_key());
        Event {
            db: self.db,
            source_db: self.db,
            key: read.key.clone(),
            data_type: Some(t),
            op: Op::Snapshot {
                chunk,
                part,
                expire_at_ms,
                also_types: also,
            },
            position: Position::Snapshot {
                at: BinlogOffset::default(),
                seq: self.seq,
            },
            exec_time: None,
        }
    }

    /// A chunk read: the one held back before it goes out.
    fn push(&mut self, read: &mut KeyRead, t: DataType, chunk: Chunk) {
        if let Some(previous) = read.pending.replace(chunk) {
            let part = if read.sent { Part::More } else { Part::First };
            read.sent = true;
            let e = self.event(read, t, previous, part);
            read.ready.push_back(e);
        }
    }

    fn finish_type(&mut self, read: &mut KeyRead, t: DataType) {
        self.flush_gathered(read, t);
        if let Some(last) = read.pending.take() {
            let part = if read.sent { Part::Last } else { Part::Whole };
            let e = self.event(read, t, last, part);
            read.ready.push_back(e);
        }
    }

    /// The gathered elements of a scanned type as one chunk.
    fn flush_gathered(&mut self, read: &mut KeyRead, t: DataType) {
        if read.gathered.is_empty() {
            return;
        }
        let flat = std::mem::take(&mut read.gathered);
        let chunk = match t {
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
        if !chunk.is_empty() {
            self.push(read, t, chunk);
        }
    }

    /// Reads one page of the type being read.
    async fn page(&mut self, read: &mut KeyRead, t: DataType) -> Result<(), MasterReadError> {
        let key = read.key.clone();
        let elements = self.limits.elements.max(1);
        let window = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        match (t, read.progress) {
            (DataType::String, Progress::Start) => {
                let len = int(&self
                    .call(redis::cmd("STRLEN").arg(key.as_ref()), &key)
                    .await?)
                .unwrap_or(0);
                if len <= window(self.limits.bytes.max(1)) {
                    let v = self.call(redis::cmd("GET").arg(key.as_ref()), &key).await?;
                    if let Some(v) = bytes(&v) {
                        self.push(read, t, Chunk::String(v));
                    }
                    read.progress = Progress::Done;
                } else {
                    read.progress = Progress::Offset(0);
                }
            }
            (DataType::String, Progress::Offset(at)) => {
                let end = at.saturating_add(window(self.limits.bytes.max(1))) - 1;
                let v = self
                    .call(
                        redis::cmd("GETRANGE").arg(key.as_ref()).arg(at).arg(end),
                        &key,
                    )
                    .await?;
                match bytes(&v).filter(|v| !v.is_empty()) {
                    Some(v) => {
                        read.progress = Progress::Offset(at.saturating_add(v.len() as i64));
                        self.push(read, t, Chunk::String(v));
                    }
                    None => read.progress = Progress::Done,
                }
            }
            (DataType::List, Progress::Start | Progress::Offset(_)) => {
                let at = match read.progress {
                    Progress::Offset(at) => at,
                    _ => 0,
                };
                let end = at.saturating_add(window(elements)) - 1;
                let v = self
                    .call(
                        redis::cmd("LRANGE").arg(key.as_ref()).arg(at).arg(end),
                        &key,
                    )
                    .await?;
                let page: Vec<Bytes> = items(v).iter().filter_map(bytes).collect();
                let n = page.len();
                read.progress = if n < elements {
                    Progress::Done
                } else {
                    Progress::Offset(at.saturating_add(window(n)))
                };
                if n > 0 {
                    self.push(read, t, Chunk::List(page));
                }
            }
            (
                DataType::Hash | DataType::Set | DataType::Zset,
                Progress::Start | Progress::Cursor(_),
            ) => {
                let cursor = match read.progress {
                    Progress::Cursor(c) => c,
                    _ => 0,
                };
                let command = match t {
                    DataType::Hash => "HSCAN",
                    DataType::Set => "SSCAN",
                    _ => "ZSCAN",
                };
                let v = self
                    .call(
                        redis::cmd(command)
                            .arg(key.as_ref())
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(elements),
                        &key,
                    )
                    .await?;
                let mut reply = items(v).into_iter();
                let next = reply
                    .next()
                    .as_ref()
                    .and_then(int)
                    .and_then(|c| u64::try_from(c).ok())
                    .unwrap_or(0);
                let width = if t == DataType::Set { 1 } else { 2 };
                for item in reply.next().map(items).unwrap_or_default() {
                    read.gathered.push(item);
                    if read.gathered.len() >= elements * width {
                        self.flush_gathered(read, t);
                    }
                }
                read.progress = if next == 0 {
                    Progress::Done
                } else {
                    Progress::Cursor(next)
                };
            }
            (DataType::Stream, Progress::Start | Progress::From(_)) => {
                let from = match read.progress {
                    Progress::From(id) => id,
                    _ => StreamId::new(0, 0),
                };
                let v = self
                    .call(
                        redis::cmd("XRANGE")
                            .arg(key.as_ref())
                            .arg(from.to_string())
                            .arg("+")
                            .arg("COUNT")
                            .arg(elements),
                        &key,
                    )
                    .await?;
                let entries = stream_entries(v);
                let n = entries.len();
                match entries.last().map(|e| e.id) {
                    None => read.progress = Progress::Done,
                    Some(last) => {
                        read.progress = if n < elements {
                            Progress::Done
                        } else {
                            Progress::From(match last.seq.checked_add(1) {
                                Some(seq) => StreamId::new(last.ms, seq),
                                None => StreamId::new(last.ms.saturating_add(1), 0),
                            })
                        };
                        self.push(
                            read,
                            t,
                            Chunk::Stream {
                                entries,
                                last_id: last,
                            },
                        );
                    }
                }
            }
            _ => read.progress = Progress::Done,
        }
        Ok(())
    }

    async fn call(&mut self, cmd: &Cmd, key: &Bytes) -> Result<Value, MasterReadError> {
        Self::send(&mut self.conn, &self.addr, cmd, Some(key)).await
    }

    async fn send(
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
}

/// The entries of an XRANGE reply.
fn stream_entries(v: Value) -> Vec<StreamEntry> {
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
    entries
}
