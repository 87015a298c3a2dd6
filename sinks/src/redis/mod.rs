//! The Redis sink, the default target. Events become Redis commands (`encode::commands`).
//! The commands go to `senders` lanes chosen by a hash of the key, so every key keeps
//! its order while lanes run in parallel. A command whose keys fall in several lanes (or
//! that has none, like FLUSHDB) waits for every lane to drain and runs alone.
//!
//! Every reply is read and checked. A key Pika held as several types follows
//! `type_conflict`; anything else Redis refuses follows `on_error`. Each lane pipeline
//! is one transaction that also writes the lane's checkpoint key (a token and the last
//! binlog position applied), so a resend after a lost connection never applies anything
//! twice, and a resumed stream skips what each lane had already applied: binlog streams
//! land exactly once.
//!
//! Connections come from the `redis` crate (`conn`); `target` reads the url (one node,
//! a unix socket, or the master that sentinels name), `endpoint` is what lanes connect
//! through, `send` delivers one pipeline (reconnects, the checkpoint check, `wait` for
//! replicas), `sentinel` finds and follows the master behind Sentinel.

pub mod checkpoint;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod cross_slot;
pub mod endpoint;
mod flush;
mod guard;
pub mod lane;
pub mod memory;
pub mod pika_target;
pub mod probe;
mod queue;
mod redirect;
pub mod run;
mod send;
pub mod sentinel;
pub mod target;
pub mod verify;
pub mod wait;
pub mod wire;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pika_migrate_core::display::display_key;
use pika_migrate_core::event::{BinlogOffset, Chunk, Event, Op, Position};
use pika_migrate_core::pika::commands::{key_indexes, lookup, name_of};
use pika_migrate_core::sink::{Sink, SinkError, SinkReport};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::encode::commands::{event_commands, event_commands_keeping_types, ConflictStats};
use crate::encode::hyperloglog::is_pika_hyperloglog;
use checkpoint::{read_checkpoints, CheckpointError, Markers};
use cluster::SlotMap;
use config::{HyperLogLogPolicy, RedisSinkConfig};
use conn::reply_error;
use endpoint::{Endpoint, EndpointError};
use lane::{
    Args, ClusterSettings, Lane, LaneBatch, LaneCommand, LaneError, LaneSettings, LaneStats,
};
use pika_target::{PikaTarget, Translated};
use redis::Value;
use sentinel::Sentinels;
use target::{Target, UrlError};
use wait::WaitSettings;

/// Why the Redis sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum RedisSinkError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Connect(Box<EndpointError>),
    #[error("redis cluster: {0}")]
    Cluster(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{target}: cannot tell how many databases it has: {error}")]
    Databases { target: String, error: String },
}

impl From<EndpointError> for RedisSinkError {
    fn from(e: EndpointError) -> Self {
        RedisSinkError::Connect(Box::new(e))
    }
}

impl RedisSinkError {
    /// The process exit code (sysexits, as in the README's table): 78 a url or setting
    /// that cannot work, 77 refused credentials, 69 a server or sentinel unreachable.
    pub fn exit_code(&self) -> u8 {
        match self {
            RedisSinkError::Url(_) => 78,
            RedisSinkError::Connect(e) => e.exit_code(),
            RedisSinkError::Cluster(_)
            | RedisSinkError::Checkpoint(_)
            | RedisSinkError::Databases { .. } => 1,
        }
    }
}

/// HyperLogLog keys named in the run summary (the count covers all of them).
const LISTED_HLL_KEYS: usize = 20;
/// Batches a lane may have queued before `write` waits. `write` feeds the lanes in turn,
/// so a lane whose queue is full while it waits for Redis holds back every other lane:
/// with 2, Redis sat idle a quarter of the time. 16 holds one default pipeline (512
/// commands, 32 per lane from a 256-event batch over 8 lanes) while the previous one is
/// in flight, and bounds what waits to 16 source batches (each at most 512 KiB).
const LANE_QUEUE: usize = 16;

struct LaneHandle {
    tx: mpsc::Sender<LaneBatch>,
    done: watch::Receiver<u64>,
    task: Option<JoinHandle<Result<(), LaneError>>>,
}

pub struct RedisSink {
    config: RedisSinkConfig,
    target: Target,
    /// How many databases the target has (`databases`), outside a cluster.
    databases: Option<u32>,
    /// How to reach the url's server (behind sentinels: the current master).
    endpoint: Endpoint,
    /// The task following the sentinels' `+switch-master` announcements.
    watcher: Option<JoinHandle<()>>,
    /// In a cluster, which master serves each slot; lanes are `senders` per master.
    slots: Option<SlotMap>,
    senders: usize,
    settings: Arc<LaneSettings>,
    cross_slot: cross_slot::CrossSlot,
    lanes: Vec<LaneHandle>,
    stats: Arc<LaneStats>,
    /// Number of the last batch handed to the lanes.
    seq: u64,
    conflicts: ConflictStats,
    hyperloglogs: u64,
    hyperloglog_keys: Vec<String>,
    scratch: Vec<Vec<Bytes>>,
    /// Blocks snapshot commands are encoded into (`Args::packed`).
    packing: bytes::BytesMut,
    /// What each lane gets at the next dispatch.
    per_lane: Vec<queue::LaneQueue>,
    /// Per `write` not yet applied by every lane, the number of its last lane batch.
    unacked: VecDeque<u64>,
    /// Writes whose every command every lane applied.
    writes_acked: u64,
    /// Per target database, the scan being loaded, and whether the database held
    /// nothing when it began (its keys then need no DEL first). A snapshot event of
    /// another dump, or that does not come after the last one, or one after a binlog
    /// command there, begins a new scan (a second full sync, a reload), and the database
    /// is looked at again. Looked up for every event, among a few databases: a tree
    /// compares faster than a hash map hashes.
    scans: std::collections::BTreeMap<u32, Scan>,
    /// The target is a Pika (its `INFO` says `pika_version`): commands go in the forms
    /// it applies (`pika_target`).
    pika: Option<PikaTarget>,
    /// What translating for a Pika target left out or could not keep.
    translated: Translated,
}

/// A full sync's dump being loaded into one target database: the dump's position, the
/// number of its last event, and whether the database was empty when it began.
#[derive(Debug, Clone, Copy)]
struct Scan {
    dump_at: BinlogOffset,
    seq: u64,
    target_empty: bool,
}

/// How the sink reaches its target: the url's node, or the master the sentinels name.
pub fn endpoint_of(target: &Target, response_timeout: Duration) -> Endpoint {
    match target {
        Target::Node(info) => Endpoint::Node(info.clone(), response_timeout),
        Target::Sentinel(spec) => Endpoint::Sentinel(Sentinels::new(
            spec.clone(),
            target.to_string(),
            response_timeout,
        )),
    }
}

/// FNV-1a: stable across runs and platforms, so a key always lands in the same lane.
fn lane_of(key: &[u8], lanes: usize) -> usize {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % lanes as u64) as usize
}

/// Above any `databases` a Redis accepts (a SELECT probe looks below it).
const MAX_DATABASES: u32 = 1 << 24;

/// How many databases the server on `conn` has: `CONFIG GET databases`, or where CONFIG
/// is refused (renamed, an ACL), the highest index `SELECT` takes, probed between
/// `home` (the url's, which the handshake selected) and [`MAX_DATABASES`]. The
/// connection is back in `home` afterwards.
async fn database_count(conn: &mut conn::Connection, home: u32) -> Result<u32, String> {
    let reply = conn
        .call(&[b"CONFIG".as_slice(), b"GET", b"databases"])
        .await
        .map_err(|e| e.to_string())?;
    if let Value::Array(items) = &reply {
        if let Some(n) = items
            .get(1)
            .and_then(conn::bulk)
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
        {
            return Ok(n);
        }
    }
    let (mut lo, mut hi) = (home, MAX_DATABASES);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let reply = conn
            .call(&[b"SELECT".as_slice(), mid.to_string().as_bytes()])
            .await
            .map_err(|e| e.to_string())?;
        if reply_error(&reply).is_some() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let back = conn
        .call(&[b"SELECT".as_slice(), home.to_string().as_bytes()])
        .await
        .map_err(|e| e.to_string())?;
    if let Some(e) = reply_error(&back) {
        return Err(format!("SELECT {home}: {e}"));
    }
    Ok(lo + 1)
}

impl RedisSink {
    /// Connects every lane now, so bad credentials, unknown hosts and refused
    /// connections fail at start with a clear message.
    pub async fn connect(config: RedisSinkConfig) -> Result<RedisSink, RedisSinkError> {
        let target = Target::of(&config)?;
        // Behind sentinels a pipeline counts as applied once every replica has it too,
        // so a failover, whichever replica it promotes, loses nothing acknowledged.
        let wait_replicas = config.wait_replicas.unwrap_or(if target.is_sentinel() {
            wait::ALL_REPLICAS
        } else {
            0
        });
        let timeout = config.response_timeout(wait_replicas > 0);
        let endpoint = endpoint_of(&target, timeout);
        let senders = config.senders.max(1);
        let slots = match (&target, config.cluster) {
            (_, false) => None,
            (Target::Node(seed), true) => {
                let mut connected = endpoint.connect().await?;
                let map = SlotMap::fetch(&mut connected.conn)
                    .await
                    .map_err(|e| RedisSinkError::Cluster(format!("{target}: {e}")))?;
                tracing::info!(masters = map.nodes.len(), "redis cluster slot map loaded");
                Some((map, seed.clone()))
            }
            (Target::Sentinel(_), true) => {
                return Err(RedisSinkError::Url(target::UrlError {
                    url: target.to_string(),
                    message: "`cluster: true` does not go with a redis-sentinel:// url".into(),
                }))
            }
        };
        let run_id = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let markers = Markers::new(config.migration.as_deref().unwrap_or("default"));
        let pika = match slots {
            Some(_) => None,
            None => {
                let mut connected = endpoint.connect().await?;
                match probe::info(&mut connected.conn).await {
                    Ok(info) => PikaTarget::detect(&info),
                    Err(e) => {
                        tracing::warn!(target = %target, error = %e, "INFO failed: the target is taken for a Redis");
                        None
                    }
                }
            }
        };
        if let Some(p) = &pika {
            tracing::info!(target = %target, pika_version = %p.version, several_types_per_name = p.keeps_types, "the target is a Pika, not a Redis: commands are sent in the forms it applies (EXPIREAT for PEXPIREAT, HMSET, no Lua, no XSETID, FLUSHDB outside transactions), into the url's database only; see docs/pika-as-target.md");
        }
        let settings = Arc::new(LaneSettings {
            batch: config.batch.max(1),
            linger: Duration::from_millis(config.linger_ms),
            retry_for: Duration::from_secs(config.retry_seconds),
            on_error: config.on_error,
            type_conflict: config.type_conflict,
            pika_target: pika.is_some(),
            run_id: run_id.clone(),
            markers: markers.clone(),
            cluster: slots.as_ref().map(|_| ClusterSettings {
                tags: cluster::slot_tags(),
                moved: AtomicBool::new(false),
            }),
            wait: (wait_replicas > 0)
                .then(|| WaitSettings::new(wait_replicas, config.wait_timeout_ms)),
        });
        let stats = Arc::new(LaneStats::default());
        let nodes = slots.as_ref().map_or(1, |(m, _)| m.nodes.len());
        let mut lanes = Vec::with_capacity(senders * nodes);
        let mut checkpoints = Vec::new();
        let mut server = String::new();
        let mut databases = None;
        for id in 0..senders * nodes {
            let lane_endpoint = match &slots {
                Some((map, seed)) => Endpoint::Node(map.target(seed, id / senders), timeout),
                None => endpoint.clone(),
            };
            let mut connected = lane_endpoint.connect().await?;
            // A resumed stream skips what each lane applied; in a cluster each lane
            // reads its key of a slot when it first meets the slot.
            if id == 0 && slots.is_none() {
                let count = database_count(&mut connected.conn, target.db())
                    .await
                    .map_err(|error| RedisSinkError::Databases {
                        target: target.to_string(),
                        error,
                    })?;
                // Pika applies a SELECT inside MULTI to nothing: a transaction runs in
                // the database selected before it, so the checkpoint key could not share
                // one with another database's commands. One database: the url's.
                databases = Some(if pika.is_some() {
                    target.db() + 1
                } else {
                    count
                });
                checkpoints =
                    read_checkpoints(&mut connected.conn, &markers, senders, &run_id).await?;
                server = connected.server.clone();
            }
            let (tx, rx) = mpsc::channel(LANE_QUEUE);
            let (done_tx, done) = watch::channel(0);
            let lane = Lane {
                id,
                endpoint: lane_endpoint,
                home_db: target.db(),
                settings: settings.clone(),
                rx,
                done: done_tx,
                stats: stats.clone(),
                conn: Some(connected),
                lost: None,
                check_server: false,
                pipelines_sent: 0,
                applied: checkpoints.get(id).cloned().unwrap_or_default(),
                slot_applied: std::collections::HashMap::new(),
                lanes: senders,
                failing: false,
            };
            lanes.push(LaneHandle {
                tx,
                done,
                task: Some(tokio::spawn(lane.run())),
            });
        }
        let watcher = match &endpoint {
            Endpoint::Sentinel(sentinels) => Some(sentinels.watch()),
            Endpoint::Node(..) => None,
        };
        tracing::info!(target = %target, server = %server, lanes = lanes.len(), batch = config.batch, wait_replicas = %if wait_replicas == wait::ALL_REPLICAS { "all".to_owned() } else { wait_replicas.to_string() }, databases, migration = %markers.lane(0).trim_end_matches(":0"), "redis sink connected");
        let lane_count = lanes.len();
        Ok(RedisSink {
            config,
            target,
            databases,
            endpoint,
            watcher,
            slots: slots.map(|(map, _)| map),
            senders,
            settings,
            cross_slot: cross_slot::CrossSlot::default(),
            lanes,
            stats,
            seq: 0,
            conflicts: ConflictStats::default(),
            hyperloglogs: 0,
            hyperloglog_keys: Vec::new(),
            scratch: Vec::new(),
            packing: bytes::BytesMut::new(),
            per_lane: (0..lane_count)
                .map(|_| queue::LaneQueue::default())
                .collect(),
            unacked: VecDeque::new(),
            writes_acked: 0,
            scans: std::collections::BTreeMap::new(),
            pika,
            translated: Translated::default(),
        })
    }

    fn error(
        &self,
        position: Option<Position>,
        e: impl Into<pika_migrate_core::sink::BoxError>,
    ) -> SinkError {
        SinkError::new(self.name(), position, e)
    }

    /// Hands what was gathered to the lanes as batch `seq + 1` (every lane gets a
    /// message, possibly empty, so the applied watermark can pass it).
    async fn dispatch(&mut self) -> Result<(), SinkError> {
        self.seq += 1;
        for i in 0..self.lanes.len() {
            let commands = self.per_lane[i].take();
            if self.lanes[i]
                .tx
                .send(LaneBatch {
                    seq: self.seq,
                    commands,
                })
                .await
                .is_err()
            {
                return Err(self.lane_failure().await);
            }
        }
        Ok(())
    }

    /// The lowest batch number every lane has applied.
    fn applied(&self) -> u64 {
        self.lanes
            .iter()
            .map(|l| *l.done.borrow())
            .min()
            .unwrap_or(self.seq)
    }

    /// Waits until every lane has applied everything dispatched so far.
    async fn drain(&mut self) -> Result<(), SinkError> {
        while self.applied() < self.seq {
            if self
                .lanes
                .iter()
                .any(|l| l.task.as_ref().is_some_and(JoinHandle::is_finished))
            {
                return Err(self.lane_failure().await);
            }
            // The lane's own receiver, marked seen: `changed` then waits for its next
            // batch (a fresh clone saw every earlier change as new, and spun).
            let seq = self.seq;
            let mut lagging = None;
            for lane in self.lanes.iter_mut() {
                if *lane.done.borrow_and_update() < seq {
                    lagging = Some(lane);
                    break;
                }
            }
            if let Some(lane) = lagging {
                let _ = tokio::time::timeout(Duration::from_millis(50), lane.done.changed()).await;
            }
        }
        Ok(())
    }

    /// The error of the first lane that stopped.
    async fn lane_failure(&mut self) -> SinkError {
        for lane in &mut self.lanes {
            if let Some(task) = lane.task.take_if(|t| t.is_finished()) {
                return match task.await {
                    Ok(Err(e)) => {
                        let position = match &e {
                            LaneError::Command { position, .. } => Some(*position),
                            _ => None,
                        };
                        self.error(position, e)
                    }
                    Ok(Ok(())) => self.error(None, "a lane stopped early"),
                    Err(e) => self.error(None, format!("a lane panicked: {e}")),
                };
            }
        }
        self.error(None, "a lane stopped")
    }

    /// The database an event goes to: Pika's db N lands N databases after the url's
    /// (a cluster has only database 0).
    fn db_of(&self, event: &Event) -> u32 {
        if self.slots.is_some() {
            0
        } else {
            self.target.db().saturating_add(event.db)
        }
    }

    /// An error when database `db` (where `event` goes) is not one the target has:
    /// nothing of it is sent (a plugin moved it there, or the target was restarted with
    /// fewer databases since the start checked them).
    fn check_database(&self, db: u32, event: &Event) -> Result<(), SinkError> {
        match self.databases {
            Some(_) if db != self.target.db() && self.pika.is_some() => Err(self.error(
                Some(event.position),
                format!(
                    "a Pika target takes one database, the url's ({}): Pika runs a transaction in the database selected before MULTI, so Pika's db{} (going to database {db}) cannot be written with its checkpoint; map it with a `db` filter (`map: {{{}: 0}}`), or run one migration per database with the url naming it",
                    self.target.db(),
                    event.source_db,
                    event.db
                ),
            )),
            Some(n) if db >= n => Err(self.error(
                Some(event.position),
                format!(
                    "the target has databases 0 to {}, but Pika's db{} goes to database {db}: map it to one it has with a `db` filter (`map: {{{}: 0}}`), adding a `rename` that names `{{db}}` (`add_prefix: \"db{{db}}:\"`) if it then shares a database with another",
                    n.saturating_sub(1),
                    event.source_db,
                    event.db
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The database holding the checkpoint keys: the url's (a cluster's only one).
    fn db_of_home(&self) -> u32 {
        if self.slots.is_some() {
            0
        } else {
            self.target.db()
        }
    }

    /// The lane that owns `key`: by hash among `senders`, within its master in a cluster.
    fn lane_for(&self, key: &[u8]) -> usize {
        let lane = lane_of(key, self.senders);
        match &self.slots {
            Some(map) => map.node_of(key) * self.senders + lane,
            None => lane,
        }
    }

    /// Whether `argv` is a command a cluster refuses: keys in several slots.
    fn spans_slots(&self, argv: &[Bytes], keys: &[usize]) -> bool {
        let Some((first, rest)) = keys.split_first() else {
            return false;
        };
        self.slots.is_some() && !rest.is_empty() && {
            let slot = cluster::slot_of(&argv[*first]);
            rest.iter().any(|i| cluster::slot_of(&argv[*i]) != slot)
        }
    }

    /// Runs a command spanning slots (`cross_slot`), every lane drained; a refusal
    /// follows `on_error`.
    async fn run_across_slots(
        &mut self,
        argv: &[Bytes],
        keys: &[usize],
        position: Position,
    ) -> Result<(), SinkError> {
        let (Some(map), Some(cluster), Some(seed)) =
            (&self.slots, &self.settings.cluster, self.target.node())
        else {
            return Ok(());
        };
        let outcome = self
            .cross_slot
            .run(map, seed, &cluster.tags, argv, keys)
            .await;
        let problem = match outcome.map(|reply| reply_error(&reply)) {
            Ok(Some(e)) => e,
            Ok(None) => {
                self.stats.cross_slot.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => e,
        };
        let command = String::from_utf8_lossy(&argv[0]).into_owned();
        let key = display_key(&argv[keys[0]]);
        if self.config.on_error == config::OnError::Skip {
            self.stats.errors_skipped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(command = %command, key = %key, position = %position, reply = %problem, "Redis refused a command across slots; skipped (on_error: skip)");
            return Ok(());
        }
        Err(self.error(
            Some(position),
            format!("Redis refused {command} on key {key:?} (across cluster slots) at {position}: {problem}"),
        ))
    }

    /// A key-less command in a cluster: run alone on every master, in order.
    async fn run_on_every_master(
        &mut self,
        argv: Vec<Bytes>,
        writes: Option<pika_migrate_core::event::DataType>,
        (source_db, position): (u32, Position),
    ) -> Result<(), SinkError> {
        self.dispatch().await?;
        self.drain().await?;
        for lane in (0..self.lanes.len()).step_by(self.senders) {
            self.per_lane[lane].push(LaneCommand {
                key_index: None,
                argv: Args::List(argv.clone()),
                writes,
                idempotent: false,
                db: 0,
                source_db,
                position,
            });
        }
        self.dispatch().await?;
        self.drain().await
    }

    /// After a MOVED, lets every lane finish what it has (so nothing for a moved slot
    /// is overtaken), then loads the new slot map.
    async fn reload_slots_if_moved(&mut self) -> Result<(), SinkError> {
        if self.slots.is_none() || !self.settings_moved() {
            return Ok(());
        }
        self.drain().await?;
        let mut connected = self
            .endpoint
            .connect()
            .await
            .map_err(|e| self.error(None, e))?;
        let map = SlotMap::fetch(&mut connected.conn)
            .await
            .map_err(|e| self.error(None, RedisSinkError::Cluster(e)))?;
        let known = self.slots.as_ref().map(|m| m.nodes.clone());
        if known.as_ref() != Some(&map.nodes) {
            return Err(self.error(
                None,
                RedisSinkError::Cluster(format!(
                    "the cluster's masters changed ({:?} → {:?}); restart to connect to the new ones",
                    known.unwrap_or_default(),
                    map.nodes
                )),
            ));
        }
        tracing::info!("redis cluster slot map reloaded after a MOVED");
        self.slots = Some(map);
        Ok(())
    }

    /// Whether a lane saw a MOVED since the last reload (and clears the flag).
    fn settings_moved(&self) -> bool {
        self.settings
            .cluster
            .as_ref()
            .is_some_and(|c| c.moved.swap(false, Ordering::SeqCst))
    }

    /// Whether snapshot keys of `event` (going to database `db`) need no DEL first: its
    /// scan began on an empty database. At the start of a scan, what was written before
    /// is applied first, then the database is looked at (a cluster never counts as empty).
    async fn scan_target_empty(&mut self, db: u32, event: &Event) -> Result<bool, SinkError> {
        let position = event.position;
        let Position::Snapshot { at: dump_at, seq } = position else {
            return Ok(false);
        };
        if let Some(scan) = self.scans.get_mut(&db) {
            if scan.dump_at == dump_at && scan.seq < seq {
                scan.seq = seq;
                return Ok(scan.target_empty);
            }
        }
        // Pika 3.5/4.0 update DBSIZE about once a minute: a Pika never counts as empty.
        let target_empty = if self.slots.is_some() || self.pika.is_some() {
            false
        } else {
            self.dispatch().await?;
            self.drain().await?;
            let mut connected = self
                .endpoint
                .connect()
                .await
                .map_err(|e| self.error(Some(position), e))?;
            let mut pipe = redis::Pipeline::with_capacity(2);
            pipe.add_command(conn::command(&[
                b"SELECT".as_slice(),
                db.to_string().as_bytes(),
            ]));
            pipe.add_command(redis::cmd("DBSIZE"));
            let replies = connected
                .conn
                .pipeline(&pipe, 2)
                .await
                .map_err(|e| self.error(Some(position), e))?;
            if let Some(reply) = replies.iter().find_map(reply_error) {
                return Err(self.error(
                    Some(position),
                    format!("SELECT {db} then DBSIZE (is the target database empty?): {reply}"),
                ));
            }
            matches!(replies.as_slice(), [_, Value::Int(0)])
        };
        tracing::debug!(db, target_empty, at = %position, "a dump begins loading");
        self.scans.insert(
            db,
            Scan {
                dump_at,
                seq,
                target_empty,
            },
        );
        Ok(target_empty)
    }

    /// A FLUSHDB/FLUSHALL sent to a Pika (alone: inside MULTI it kills the server) wiped
    /// every lane's checkpoint key, which a Redis keeps through a flush
    /// (`flush::keeping_markers`). Before anything else is applied, each lane writes its
    /// key again, in a transaction of a `PING` at the flush's position (every lane had
    /// applied all before it: the flush ran alone). The flushing lane goes last: until
    /// its key is back, a restart applies the flush again, which wipes whatever lanes
    /// without a key apply again from before it.
    async fn rewrite_checkpoints_after_flush(
        &mut self,
        flushing: usize,
        db: u32,
        source_db: u32,
        position: Position,
    ) -> Result<(), SinkError> {
        let others = (0..self.per_lane.len()).filter(|lane| *lane != flushing);
        for round in [others.collect::<Vec<_>>(), vec![flushing]] {
            for lane in round {
                self.per_lane[lane].push(LaneCommand {
                    argv: Args::List(vec![Bytes::from_static(b"PING")]),
                    key_index: None,
                    writes: None,
                    idempotent: false,
                    db,
                    source_db,
                    position,
                });
            }
            self.dispatch().await?;
            self.drain().await?;
        }
        Ok(())
    }

    /// Whether `event` is a Pika HyperLogLog to leave out (counting it either way).
    fn skip_hyperloglog(&mut self, event: &Event) -> bool {
        let Op::Snapshot {
            chunk: Chunk::String(value),
            part,
            ..
        } = &event.op
        else {
            return false;
        };
        if !part.starts_key() || !is_pika_hyperloglog(value) {
            return false;
        }
        self.hyperloglogs += 1;
        if self.hyperloglog_keys.len() < LISTED_HLL_KEYS {
            self.hyperloglog_keys.push(display_key(&event.key));
        }
        self.config.hyperloglog == HyperLogLogPolicy::Skip
    }
}

/// Argument bytes up to which a snapshot command is encoded when the sink takes it.
const PACK_AT_MOST: usize = 8 << 10;

#[async_trait]
impl Sink for RedisSink {
    fn name(&self) -> String {
        format!("redis {}", self.target)
    }

    async fn write(&mut self, batch: Vec<Event>) -> Result<(), SinkError> {
        self.reload_slots_if_moved().await?;
        for event in batch {
            if self.skip_hyperloglog(&event) {
                continue;
            }
            let snapshot_type = match &event.op {
                Op::Snapshot { chunk, .. } => Some(chunk.data_type()),
                Op::Command { .. } => None,
            };
            let (db, source_db, position) = (self.db_of(&event), event.source_db, event.position);
            self.check_database(db, &event)?;
            let target_empty = match snapshot_type {
                Some(_) => self.scan_target_empty(db, &event).await?,
                None => {
                    // A binlog command ends the scan of its database: a dump loaded
                    // after it is a new full sync over what is there now.
                    self.scans.remove(&db);
                    false
                }
            };
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            match &self.pika {
                // Pika 3.x keeps every type of a name: no policy applies.
                Some(p) if p.keeps_types => {
                    event_commands_keeping_types(event, target_empty, &mut scratch)
                }
                _ => event_commands(
                    event,
                    self.config.type_conflict,
                    &mut self.conflicts,
                    target_empty,
                    &mut scratch,
                ),
            }
            if let Some(p) = &self.pika {
                let now_ms = pika_migrate_core::replay::clock::wall_now_ms();
                let mut translated = Vec::with_capacity(scratch.len());
                for argv in scratch.drain(..) {
                    let keys: std::borrow::Cow<[usize]> = match snapshot_type {
                        Some(_) => (&[1][..]).into(),
                        None => key_indexes(&argv).into(),
                    };
                    let cut = keys
                        .iter()
                        .filter_map(|i| argv.get(*i))
                        .find(|k| p.cuts_nul_names && pika_target::cut_by_pika_4(k));
                    if let Some(name) = cut {
                        self.translated.nul_name_dropped(name);
                        continue;
                    }
                    pika_target::translate(argv, now_ms, &mut self.translated, &mut translated);
                }
                scratch = translated;
            }
            // An event's commands mostly share its key: its lane is hashed once.
            let mut known_lane: Option<(Bytes, usize)> = None;
            for mut argv in scratch.drain(..) {
                let mut db = db;
                // FLUSHDB inside MULTI/EXEC aborts a Pika 3.5 or 4.0 server: sent alone,
                // outside a transaction (it wipes the checkpoint keys, which every lane
                // writes again right after: `rewrite_checkpoints_after_flush`).
                let pika_flush = self.pika.is_some()
                    && (argv[0].eq_ignore_ascii_case(b"FLUSHDB")
                        || argv[0].eq_ignore_ascii_case(b"FLUSHALL"));
                if snapshot_type.is_none() && !pika_flush {
                    // A flush keeps the checkpoint keys (`flush`); FLUSHALL runs where
                    // they are.
                    let home = self.slots.is_some() || db == self.target.db();
                    if let Some(keeping) = flush::keeping_markers(&argv, home, self.slots.is_some())
                    {
                        if argv[0].eq_ignore_ascii_case(b"FLUSHALL") {
                            db = self.db_of_home();
                        }
                        argv = keeping;
                    }
                }
                // Snapshot commands (DEL, SET/APPEND, HSET, …, PEXPIREAT) all have their
                // key first; only binlog commands need the command table.
                let (keys, writes): (std::borrow::Cow<[usize]>, _) = match snapshot_type {
                    Some(t) => ((&[1][..]).into(), Some(t)),
                    None => (
                        key_indexes(&argv).into(),
                        lookup(&name_of(&argv)).and_then(|s| s.data_type),
                    ),
                };
                let first_lane = keys.first().map(|i| match &known_lane {
                    Some((key, lane)) if *key == argv[*i] => *lane,
                    _ => {
                        let lane = self.lane_for(&argv[*i]);
                        known_lane = Some((argv[*i].clone(), lane));
                        lane
                    }
                });
                let alone = match first_lane {
                    None => true,
                    Some(lane) => keys[1..].iter().any(|i| self.lane_for(&argv[*i]) != lane),
                };
                if self.spans_slots(&argv, &keys) {
                    self.dispatch().await?;
                    self.drain().await?;
                    self.run_across_slots(&argv, &keys, position).await?;
                    continue;
                }
                if first_lane.is_none() && self.slots.is_some() {
                    // FLUSHDB and the like: every master must run it.
                    self.run_on_every_master(argv, writes, (source_db, position))
                        .await?;
                    continue;
                }
                // Sent twice, RPUSH and APPEND would add twice and an XADD of an id
                // already there is refused: they go in a transaction with the checkpoint.
                let idempotent = pika_flush
                    || snapshot_type.is_some()
                        && !matches!(argv[0].as_ref(), b"RPUSH" | b"APPEND" | b"XADD");
                // A small snapshot command is encoded now, its argument list freed
                // (`Args`). A big one (a chunk of a big key) stays a list: its list costs
                // little beside its bytes, and a copy of it would be in the lanes' queues
                // beside the chunk still held upstream (peak RSS of a 137 MiB hash went
                // past the 100 MiB `tests/memory.rs` holds it to).
                let small = || argv.iter().map(Bytes::len).sum::<usize>() <= PACK_AT_MOST;
                if let (Position::Snapshot { at, seq }, Some(lane), false) =
                    (position, first_lane, alone)
                {
                    if idempotent && small() {
                        let command = queue::SnapshotCommand {
                            argv: &argv,
                            writes,
                            db,
                            source_db,
                            at,
                            seq,
                        };
                        self.per_lane[lane].push_snapshot(command, self.config.batch);
                        continue;
                    }
                }
                let argv = match snapshot_type {
                    Some(_) if small() => Args::packed(&mut self.packing, &argv),
                    _ => Args::List(argv),
                };
                let command = LaneCommand {
                    idempotent,
                    db,
                    source_db,
                    key_index: keys.first().copied(),
                    argv,
                    writes,
                    position,
                };
                if alone {
                    // Everything before must be applied first, and it must be applied
                    // before anything after: it reads or writes several lanes' keys.
                    self.dispatch().await?;
                    self.drain().await?;
                    let flushing = first_lane.unwrap_or(0);
                    self.per_lane[flushing].push(command);
                    self.dispatch().await?;
                    self.drain().await?;
                    if pika_flush {
                        self.rewrite_checkpoints_after_flush(flushing, db, source_db, position)
                            .await?;
                    }
                } else {
                    self.per_lane[first_lane.unwrap_or(0)].push(command);
                }
            }
            self.scratch = scratch;
        }
        self.dispatch().await?;
        self.unacked.push_back(self.seq);
        Ok(())
    }

    fn databases(&self) -> Option<std::ops::Range<u32>> {
        if self.pika.is_some() {
            return Some(0..1);
        }
        let n = self.databases?;
        Some(0..n.saturating_sub(self.target.db()))
    }

    async fn health(&mut self) -> Result<Option<String>, SinkError> {
        if self
            .lanes
            .iter()
            .any(|l| l.task.as_ref().is_some_and(JoinHandle::is_finished))
        {
            return Err(self.lane_failure().await);
        }
        let failing = self.stats.failing.load(Ordering::Relaxed);
        if failing == 0 {
            return Ok(None);
        }
        let last = self
            .stats
            .failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_default();
        Ok(Some(format!(
            "{failing} of {} lanes cannot write ({last}); retrying for up to {} s",
            self.lanes.len(),
            self.config.retry_seconds
        )))
    }

    fn acknowledged(&mut self, _written: u64) -> u64 {
        let applied = self.applied();
        while self.unacked.front().is_some_and(|seq| *seq <= applied) {
            self.unacked.pop_front();
            self.writes_acked += 1;
        }
        self.writes_acked
    }

    async fn finish(&mut self) -> Result<SinkReport, SinkError> {
        self.drain().await?;
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        for lane in &mut self.lanes {
            let (tx, _) = mpsc::channel(1);
            drop(std::mem::replace(&mut lane.tx, tx));
        }
        for i in 0..self.lanes.len() {
            if let Some(task) = self.lanes[i].task.take() {
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(self.error(None, e)),
                    Err(e) => return Err(self.error(None, format!("a lane panicked: {e}"))),
                }
            }
        }
        let s = &self.stats;
        let name = self.name();
        let mut lines = vec![format!(
            "{name}: {} commands in {} transactions, {} reconnects",
            s.commands.load(Ordering::Relaxed),
            s.pipelines.load(Ordering::Relaxed),
            s.reconnects.load(Ordering::Relaxed)
        )];
        let skipped = self.conflicts.skipped + s.conflicts_skipped.load(Ordering::Relaxed);
        if skipped > 0 {
            lines.push(format!("{name}: {skipped} writes skipped: the key holds another type first (type_conflict: first-wins)"));
        }
        let renamed = self.conflicts.renamed + s.conflicts_renamed.load(Ordering::Relaxed);
        if renamed > 0 {
            lines.push(format!(
                "{name}: {renamed} writes went to key:<type> (type_conflict: suffix)"
            ));
        }
        let overwritten = s.conflicts_overwritten.load(Ordering::Relaxed);
        if overwritten > 0 {
            lines.push(format!("{name}: {overwritten} writes replaced a key of another type (type_conflict: overwrite)"));
        }
        let resumed = s.already_applied.load(Ordering::Relaxed);
        if resumed > 0 {
            lines.push(format!("{name}: {resumed} binlog commands were already applied before a restart (checkpoint keys) and were not sent again"));
        }
        let lost = s.replies_lost.load(Ordering::Relaxed);
        if lost > 0 {
            lines.push(format!("{name}: {lost} transactions ran but their replies were lost with the connection: a command Redis refused in them went unseen (see the warnings for their positions)"));
        }
        let across = s.cross_slot.load(Ordering::Relaxed);
        if across > 0 {
            lines.push(format!("{name}: {across} commands over keys of several cluster slots run by copying the keys into one slot and back"));
        }
        let errors = s.errors_skipped.load(Ordering::Relaxed);
        if errors > 0 {
            lines.push(format!(
                "{name}: {errors} commands refused by Redis and skipped (on_error: skip)"
            ));
        }
        let t = &self.translated;
        if t.xsetid_dropped > 0 {
            lines.push(format!("{name}: {} XSETID left out: Pika has no XSETID (a stream's next XADD * takes the time)", t.xsetid_dropped));
        }
        if t.keepttl_dropped > 0 {
            lines.push(format!("{name}: {} SET … KEEPTTL written without it: Pika has no KEEPTTL, those keys lost their expiry on the target (INCR/APPEND a Pika 3.5/4.0 master logged)", t.keepttl_dropped));
        }
        if t.nul_names_dropped > 0 {
            lines.push(format!(
                "{name}: {} commands left out: a name with a NUL byte followed by more bytes, which Pika 4.0 stores cut after the NUL (unreadable, colliding): {}{}",
                t.nul_names_dropped,
                t.nul_names.join(", "),
                if t.nul_names.len() == 20 { ", …" } else { "" }
            ));
        }
        if self.hyperloglogs > 0 {
            let verb = match self.config.hyperloglog {
                HyperLogLogPolicy::Raw if self.pika.is_some() => {
                    "copied as raw strings, Pika's own register format, which the target's PF* commands read"
                }
                HyperLogLogPolicy::Raw => {
                    "copied as raw strings; Redis PF* commands will not read them, rebuild them"
                }
                HyperLogLogPolicy::Skip => "left out (hyperloglog: skip)",
            };
            lines.push(format!(
                "{name}: {} Pika HyperLogLog keys {verb}: {}{}",
                self.hyperloglogs,
                self.hyperloglog_keys.join(", "),
                if self.hyperloglogs as usize > self.hyperloglog_keys.len() {
                    ", …"
                } else {
                    ""
                }
            ));
        }
        Ok(SinkReport { lines })
    }
}

impl Drop for RedisSink {
    fn drop(&mut self) {
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_stable_and_spread() {
        assert_eq!(lane_of(b"user:1", 8), lane_of(b"user:1", 8));
        let used: std::collections::HashSet<usize> = (0..1000)
            .map(|i| lane_of(format!("k{i}").as_bytes(), 8))
            .collect();
        assert_eq!(used.len(), 8);
    }
}
