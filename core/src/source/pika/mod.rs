//! The `pika` source: joins a running Pika 3.2–4.0 master as a replica. It takes a full
//! sync (a 3.2–3.4 master pushes its dump to our rsync daemon; from a 3.5 or 4.0 master
//! we pull it over its rsync service; we scan it, blackwidow or floyd), then follows the binlog from the dump's
//! position, acking only what every sink has acknowledged, and keeps its place in
//! `work_dir/checkpoint.json` so a restart resumes where the sinks stand, without a
//! second full sync.
//!
//! `link` is the replication connection, `rsyncd` the daemon (3.2–3.4), `pull` the 3.5/4.0
//! pull, `dump` the receiving directory, `disk` a full one, `checkpoint` the progress
//! file, `master_info` the checks made on the master's client port (the protocol
//! generation, and who the master is), `stream` the binlog loop.
//!
//! `master` is where we reach the master, not who it is: through a port mapping its
//! replication port and rsync service are where `replication_port` and `rsync_port` say,
//! and its INFO says who it is (its own port, its run id), which the dumps and the
//! MetaSync reply must match.

pub mod checkpoint;
mod db;
pub mod disk;
pub mod dump;
pub mod error;
pub mod link;
pub mod listener;
pub mod master_info;
pub mod pull;
pub mod rsyncd;
mod stream;
pub mod turns;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

use super::{EventSender, Source, SourceError, SourceReport};
use crate::config::{PikaSourceConfig, ResyncPolicy};
use crate::event::BinlogOffset;
use crate::metrics::Metrics;
use crate::pika::repl::proto::{InnerResponse, StatusCode};
use crate::pika::repl::requests::{self, Announce};
use crate::pika::storage::ChunkLimits;
use crate::status::Stage as Phase;
use checkpoint::{Checkpoint, CheckpointFile, CheckpointStore, Stage};
use db::{Ctx, DbReplica};
use dump::ReceiveDir;
pub use error::ReplicaError;
use link::Link;
use master_info::Generation;
use turns::{FullSyncTurns, Turn};

/// Pause before retrying after a transient failure, doubling up to the maximum.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often we look for the dump's `info` file.
const DUMP_POLL: Duration = Duration::from_millis(100);
/// How often the bytes of the dump received so far are counted.
const DUMP_COUNT_EVERY: Duration = Duration::from_secs(1);
/// A master that sends nothing for this long, not even the keepalives it sends every
/// 2 s (3.3) or 10 s (3.2) to a replica with nothing outstanding, has dropped us.
const SILENCE: Duration = Duration::from_secs(30);
/// How long a replication port never reached in this run is retried: long enough for
/// a master that is just starting, short enough to report a wrong address.
const FIRST_CONNECT_FOR: Duration = Duration::from_secs(10);
/// Full syncs in a row that stall (no new byte for `transfer_timeout`) before we stop.
const STALLED_TRANSFERS: u32 = 3;
/// Full syncs in a row that run out of disk space before we stop: a few, in case
/// something else on the disk was freeing space.
const FULL_DISK_TRANSFERS: u32 = 3;

pub struct PikaSource {
    /// Where we reach the master's client port (`HOST:PORT`).
    master: String,
    /// That port: the master's own when nothing maps it (INFO says).
    client_port: u16,
    /// The port we reach its replication port at.
    repl_port: u16,
    /// The port we reach a 3.5/4.0 master's rsync service at, when there is one.
    rsync_port: Option<u16>,
    /// Who may push a 3.2–3.4 master's dump to our rsync daemon; the addresses `master`
    /// names when not set.
    push_from: Option<Vec<String>>,
    password: Option<String>,
    announce: Announce,
    work_dir: PathBuf,
    resync: ResyncPolicy,
    limits: ChunkLimits,
    load_rate: Option<u64>,
    /// Threads reading a dump.
    scan_threads: usize,
    pull_rate: Option<u64>,
    transfer_timeout: Duration,
    retry_for: Duration,
    rsync: PathBuf,
    /// The databases to follow; every one the master has when `None`.
    dbs: Option<Vec<u32>>,
    /// Whether the sinks can take the databases followed (they would mix them, or the
    /// target lacks one): the reason when they cannot.
    check_databases: Option<DatabaseCheck>,
    /// Stop once each database's dump is on disk (`plan` of a live master): the
    /// checkpoint then says `load`, and a later run loads that dump.
    dump_only: bool,
    /// The fleet's full-sync turns, when the source is one of several.
    turns: Option<Arc<FullSyncTurns>>,
}

/// An IP address, or a CIDR block (`10.0.0.0/8`), as rsync's `hosts allow` takes them.
fn is_ip_or_block(text: &str) -> bool {
    let (ip, bits) = match text.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (text, None),
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.is_none_or(|b| b.parse::<u8>().is_ok_and(|b| b <= max))
}

/// Checks the databases a run will follow, once MetaSync names the master's.
pub type DatabaseCheck = Box<dyn Fn(&[u32]) -> Result<(), String> + Send + Sync>;

fn split_addr(what: &str, addr: &str) -> Result<(String, u16), ReplicaError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| ReplicaError::Config(format!("{what} {addr:?} is not HOST:PORT")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| ReplicaError::Config(format!("{what} {addr:?}: bad port")))?;
    Ok((host.to_owned(), port))
}

impl PikaSource {
    pub fn new(config: &PikaSourceConfig) -> Result<PikaSource, ReplicaError> {
        let (_, master_port) = split_addr("master", &config.master)?;
        let (ip, port) = split_addr("announce", &config.announce)?;
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(ReplicaError::Config(format!(
                "announce {:?}: give the IP address the master reaches us at",
                config.announce
            )));
        }
        if port > u16::MAX - 1000 {
            return Err(ReplicaError::Config(format!(
                "announce port {port} too high: a 3.2–3.4 master pushes the dump to it + 1000"
            )));
        }
        let repl_port = match config.replication_port {
            Some(p) => p,
            None => master_port.checked_add(2000).ok_or_else(|| {
                ReplicaError::Config(format!(
                    "master port {master_port} + 2000 (Pika's replication port) is not a port: \
                     set `replication_port`"
                ))
            })?,
        };
        if let Some(bad) = (config.push_from.iter().flatten()).find(|a| !is_ip_or_block(a)) {
            return Err(ReplicaError::Config(format!(
                "push_from {bad:?}: give IP addresses or CIDR blocks (10.0.0.0/8)"
            )));
        }
        Ok(PikaSource {
            master: config.master.clone(),
            client_port: master_port,
            repl_port,
            rsync_port: config
                .rsync_port
                .or_else(|| master_port.checked_add(pull::RSYNC2_PORT_SHIFT)),
            push_from: config.push_from.clone(),
            password: config.password.clone().filter(|p| !p.is_empty()),
            announce: Announce { ip, port },
            work_dir: config.work_dir.clone(),
            resync: config.resync,
            limits: config.chunk.into(),
            load_rate: config.load_rate,
            scan_threads: crate::config::scan_threads(
                config.scan_threads,
                crate::config::live_scan_threads,
            ),
            pull_rate: config.pull_rate.filter(|r| *r > 0),
            transfer_timeout: Duration::from_secs(config.transfer_timeout.max(1)),
            retry_for: Duration::from_secs(config.retry_seconds),
            rsync: config.rsync.clone(),
            dbs: config.dbs.clone(),
            check_databases: None,
            dump_only: false,
            turns: None,
        })
    }

    /// Takes each database's dump from the master into `work_dir` and stops there,
    /// loading nothing (a database already past its full sync stops at once).
    pub fn dump_only(mut self) -> PikaSource {
        self.dump_only = true;
        self
    }

    /// Takes a turn of `turns` before asking the master for a dump (a fleet's masters
    /// spare their disks), and gives it back once every dump is loaded.
    pub fn with_turns(mut self, turns: Arc<FullSyncTurns>) -> PikaSource {
        self.turns = Some(turns);
        self
    }

    /// Refuses, once MetaSync names them, to follow databases `check` refuses, saying
    /// why: before anything of them is written.
    pub fn check_databases(mut self, check: DatabaseCheck) -> PikaSource {
        self.check_databases = Some(check);
        self
    }

    /// The host part of `master` (masters reached at one host share its disk).
    fn master_host(&self) -> &str {
        self.master.rsplit_once(':').map_or("", |(h, _)| h)
    }

    fn repl_addr(&self) -> String {
        format!("{}:{}", self.master_host(), self.repl_port)
    }

    /// Where we reach a 3.5/4.0 master's rsync service.
    fn rsync2_addr(&self) -> Result<String, ReplicaError> {
        let port = self.rsync_port.ok_or_else(|| {
            ReplicaError::Config(format!(
                "the master's port + {} (a Pika 3.5/4.0 master's rsync service) is not a \
                 port: set `rsync_port`",
                pull::RSYNC2_PORT_SHIFT
            ))
        })?;
        Ok(format!("{}:{port}", self.master_host()))
    }

    /// Who may push a dump to our rsync daemon: `push_from`, or the addresses `master`
    /// names.
    async fn pushers(&self) -> Result<Vec<String>, ReplicaError> {
        if let Some(list) = &self.push_from {
            return Ok(list.clone());
        }
        let addrs =
            tokio::net::lookup_host(&self.master)
                .await
                .map_err(|e| ReplicaError::Unreachable {
                    addr: self.master.clone(),
                    error: format!("cannot resolve it: {e}"),
                })?;
        let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
        ips.sort();
        ips.dedup();
        Ok(ips)
    }

    /// The master's INFO, read on its client port, and the protocol generation it
    /// speaks; an error for a master we cannot follow.
    async fn read_info(&self) -> Result<(master_info::MasterInfo, Generation), ReplicaError> {
        let info = master_info::fetch(&self.master, self.password.as_deref()).await?;
        let generation = info.check(&self.master)?;
        tracing::info!(version = info.version.as_deref().unwrap_or("?"), %generation, "the master");
        Ok((info, generation))
    }
}

/// Who the master is, as its INFO says: what its dumps and MetaSync replies must match,
/// whatever ports we reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    /// Its own client port (`tcp_port`; the port we dial if INFO has none).
    port: u16,
    /// 3.5 and 4.0: the id it drew at its start.
    run_id: Option<String>,
    /// Its databases' size on disk (`db_size`).
    db_size: Option<u64>,
}

impl Identity {
    fn of(info: &master_info::MasterInfo, dialed_port: u16) -> Identity {
        Identity {
            port: info.tcp_port.unwrap_or(dialed_port),
            run_id: info.run_id.clone(),
            db_size: info.db_size,
        }
    }
}

/// How an attempt ended when it did not fail.
enum Ended {
    /// Stopped on request; everything read was acknowledged.
    Stopped,
}

/// One run of the replica: the connection to the master, and each database's replica.
struct Replica<'a> {
    source: &'a PikaSource,
    out: EventSender,
    metrics: Metrics,
    checkpoints: CheckpointStore,
    /// The databases followed, once MetaSync named the master's.
    dbs: Vec<DbReplica>,
    /// Each database's binlog position in the master's INFO when we last read it.
    master_at: BTreeMap<u32, BinlogOffset>,
    /// Whether the replication port answered once in this run (a master that did is
    /// given `retry_seconds` to come back; one that never did, a few seconds).
    connected_once: bool,
    /// Since when the replication port has been refusing us, if it is.
    unreachable_since: Option<std::time::Instant>,
    /// Whether the master's INFO was read since the last interruption.
    info_read: bool,
    /// How the master hands over its dump (from its version, confirmed by MetaSync).
    generation: Generation,
    /// Who the master is, from its INFO.
    identity: Identity,
    /// The fleet's full-sync turn, held from before a dump is asked for until every
    /// database's dump is loaded (across reconnections).
    turn: Option<Turn>,
}

/// Runs file work (checkpoint writes with their fsyncs, walks of the dump directory) on
/// a blocking thread: on the runtime's thread, a slow disk would stall the link's pings
/// and get us dropped by the master.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ReplicaError> + Send + 'static,
) -> Result<T, ReplicaError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ReplicaError::Transient(format!("file task: {e}")))?
}

#[async_trait]
impl Source for PikaSource {
    fn describe(&self) -> String {
        format!(
            "pika master {} as replica {}:{}",
            self.master, self.announce.ip, self.announce.port
        )
    }

    async fn run(
        self: Box<Self>,
        out: EventSender,
        metrics: Metrics,
    ) -> Result<SourceReport, SourceError> {
        let file = CheckpointFile::new(&self.work_dir);
        let work_dir = self.work_dir.clone();
        let loading = file.clone();
        let checkpoint = blocking(move || {
            std::fs::create_dir_all(&work_dir).map_err(|e| ReplicaError::io(&work_dir, e))?;
            loading.load()
        })
        .await?;
        if let Some(c) = &checkpoint {
            if c.master != self.master {
                return Err(ReplicaError::Config(format!(
                    "{} follows the master {}, not {}: use another work_dir",
                    file.path().display(),
                    c.master,
                    self.master
                ))
                .into());
            }
            tracing::info!(dbs = ?c.dbs, "resuming from the checkpoint");
        }
        let checkpoint = checkpoint.unwrap_or_else(|| Checkpoint {
            master: self.master.clone(),
            dbs: BTreeMap::new(),
        });
        metrics.status().set_master(&self.master);
        metrics.status().set_stage(Phase::Connecting);
        let (info, generation) = self.read_info().await?;
        let identity = Identity::of(&info, self.client_port);
        if identity.port != self.client_port {
            tracing::info!(master = %self.master, port = identity.port, "the master runs on another port than we reach it at");
        }
        let mut replica = Replica {
            source: &self,
            out,
            metrics,
            checkpoints: CheckpointStore::new(file, checkpoint),
            dbs: Vec::new(),
            master_at: info.binlog_offsets,
            connected_once: false,
            unreachable_since: None,
            info_read: true,
            generation,
            identity,
            turn: None,
        };
        replica.run().await?;
        let mut report = SourceReport::default();
        for db in &mut replica.dbs {
            db.out.flush().await;
            report.merge(std::mem::take(&mut db.report));
        }
        replica.out.flush().await;
        for (db, stage) in replica.checkpoints.snapshot().await.dbs {
            if let Stage::Stream { at } = stage {
                report.end_positions.insert(db, at);
            }
        }
        Ok(report)
    }
}

impl Replica<'_> {
    async fn run(&mut self) -> Result<(), ReplicaError> {
        let mut backoff = BACKOFF_FIRST;
        loop {
            if self.out.should_stop() {
                return Ok(());
            }
            let started = std::time::Instant::now();
            let outcome = self.attempt().await;
            // A link that lived a while was a success: the next blip starts over from a
            // short pause.
            if started.elapsed() >= BACKOFF_MAX * 3 {
                backoff = BACKOFF_FIRST;
            }
            match outcome {
                Ok(Ended::Stopped) => return Ok(()),
                Err(e) if e.is_fatal() => return Err(e),
                Err(ReplicaError::Unreachable { addr, error }) if self.gave_up_connecting() => {
                    return Err(ReplicaError::Unreachable {
                        addr,
                        error: format!(
                            "{error} (retried for {:?})",
                            self.unreachable_since
                                .map(|t| t.elapsed())
                                .unwrap_or_default()
                        ),
                    }
                    .into_fatal());
                }
                Err(e) => {
                    self.info_read = false;
                    self.metrics.status().error(&e.to_string());
                    for db in &self.dbs {
                        db.status.set_stage(Phase::Connecting);
                    }
                    self.metrics.status().set_stage(Phase::Connecting);
                    tracing::warn!(error = %e, retry_in = ?backoff, "replication interrupted; reconnecting");
                    let deadline = tokio::time::Instant::now() + backoff;
                    while tokio::time::Instant::now() < deadline && !self.out.should_stop() {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Whether a replication port that refuses us has done so for longer than we wait.
    fn gave_up_connecting(&mut self) -> bool {
        let since = *self
            .unreachable_since
            .get_or_insert_with(std::time::Instant::now);
        let budget = if self.connected_once {
            self.source.retry_for
        } else {
            FIRST_CONNECT_FOR
        };
        since.elapsed() >= budget
    }

    /// Connects, handshakes, and runs every database's replica on the connection until
    /// all stopped or one failed.
    async fn attempt(&mut self) -> Result<Ended, ReplicaError> {
        let s = self.source;
        if !self.info_read {
            self.read_info_again().await?;
        }
        if !self.wait_for_turn().await {
            return Ok(Ended::Stopped);
        }
        let addr = s.repl_addr();
        let first = s.dbs.as_ref().and_then(|d| d.first().copied()).unwrap_or(0);
        let mut link = Link::connect(&addr, s.announce.clone(), first)
            .await
            .map_err(|e| ReplicaError::Unreachable {
                addr: addr.clone(),
                error: e.to_string(),
            })?;
        self.connected_once = true;
        self.unreachable_since = None;
        let dbs = self.meta_sync(&mut link).await?;
        self.follow(&dbs);
        let ctx = Ctx {
            source: s,
            metrics: &self.metrics,
            checkpoints: &self.checkpoints,
            generation: self.generation,
            master_port: self.identity.port,
            master_db_size: self.identity.db_size,
            interrupted: AtomicBool::new(false),
            daemon: tokio::sync::Mutex::new(None),
            transfers: AtomicUsize::new(0),
            full_syncs: AtomicUsize::new(0),
            turn: std::sync::Mutex::new(self.turn.take()),
        };
        let transfers = self.transfers_needed().await;
        ctx.transfers.store(transfers, Ordering::SeqCst);
        ctx.full_syncs.store(transfers, Ordering::SeqCst);
        if transfers == 0 {
            ctx.release_turn();
        }
        self.start_daemon(&ctx, transfers).await?;
        let mut links: Vec<Link> = dbs
            .iter()
            .filter(|db| **db != first)
            .map(|db| link.for_db(*db))
            .collect();
        if dbs.contains(&first) {
            links.insert(dbs.iter().position(|d| *d == first).unwrap_or(0), link);
        } else {
            drop(link);
        }
        let ctx = &ctx;
        let runs = self.dbs.iter_mut().zip(links).map(|(db, link)| {
            db.master_at = self.master_at.get(&db.db).copied().unwrap_or_default();
            let span = tracing::info_span!("db", db = db.db);
            async move {
                let outcome = db.attempt(ctx, link).await;
                if outcome.is_err() {
                    ctx.interrupt();
                }
                outcome
            }
            .instrument(span)
        });
        let outcomes = futures_util::future::join_all(runs).await;
        if let Some(daemon) = ctx.daemon.lock().await.take() {
            daemon.stop().await;
        }
        // A turn still held (a transfer was cut short) is kept for the next attempt.
        self.turn = ctx.take_turn();
        // The first fatal error if any, else the first error: every replica ended.
        let mut first_error = None;
        for e in outcomes.into_iter().filter_map(Result::err) {
            match &first_error {
                Some(f) if ReplicaError::is_fatal(f) || !e.is_fatal() => {}
                _ => first_error = Some(e),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(Ended::Stopped),
        }
    }

    /// Makes sure each database in `dbs` has its replica, in that order.
    fn follow(&mut self, dbs: &[u32]) {
        if self.dbs.iter().map(|d| d.db).eq(dbs.iter().copied()) {
            return;
        }
        let mut old = std::mem::take(&mut self.dbs);
        for &db in dbs {
            let replica = match old.iter().position(|d| d.db == db) {
                Some(i) => old.swap_remove(i),
                None => DbReplica::new(db, self.out.share(), self.metrics.status().for_db(db)),
            };
            self.dbs.push(replica);
        }
    }

    /// The databases followed whose checkpoint says they need a dump.
    async fn transfers_needed(&self) -> usize {
        let mut transfers = 0;
        for db in &self.dbs {
            if matches!(
                self.checkpoints.stage(db.db).await,
                None | Some(Stage::Transfer)
            ) {
                transfers += 1;
            }
        }
        transfers
    }

    /// Whether a full sync may be ahead: no database known yet with a position past its
    /// dump, or one that still needs its dump.
    async fn may_need_full_sync(&self) -> bool {
        let saved = self.checkpoints.snapshot().await.dbs;
        let followed: Vec<u32> = match (&self.source.dbs, self.dbs.is_empty()) {
            (Some(dbs), _) => dbs.clone(),
            (None, false) => self.dbs.iter().map(|d| d.db).collect(),
            (None, true) => saved.keys().copied().collect(),
        };
        followed.is_empty()
            || followed
                .iter()
                .any(|db| matches!(saved.get(db), None | Some(Stage::Transfer)))
    }

    /// In a fleet, waits for a full-sync turn when a dump may be needed, saying so in
    /// the status; `false` when asked to stop meanwhile.
    async fn wait_for_turn(&mut self) -> bool {
        let Some(turns) = self.source.turns.clone() else {
            return true;
        };
        if self.turn.is_some() || !self.may_need_full_sync().await {
            return true;
        }
        let host = self.source.master_host().to_owned();
        if !turns.free_now(&host) {
            tracing::info!(master = %self.source.master, "waiting for a full-sync turn: other masters of this host or of the fleet are sending their dumps");
            self.metrics.status().set_stage(Phase::FullSyncWaiting);
            for db in &self.dbs {
                db.status.set_stage(Phase::FullSyncWaiting);
            }
        }
        let take = turns.take(&host);
        tokio::pin!(take);
        loop {
            tokio::select! {
                turn = &mut take => {
                    self.turn = Some(turn);
                    return true;
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if self.out.should_stop() {
                        return false;
                    }
                }
            }
        }
    }

    /// For a master that pushes its dumps (3.2–3.4): our rsync daemon, when a database
    /// needs a full sync. Its module is `dbsync/`; each database's dump lands in
    /// `dbsync/db<N>/`.
    async fn start_daemon(&self, ctx: &Ctx<'_>, transfers: usize) -> Result<(), ReplicaError> {
        if ctx.generation.pulls() || transfers == 0 {
            return Ok(());
        }
        let s = self.source;
        let root = ReceiveDir::new(&s.work_dir, 0).root;
        let prepare = root.clone();
        blocking(move || {
            std::fs::create_dir_all(&prepare).map_err(|e| ReplicaError::io(&prepare, e))
        })
        .await?;
        let allowed = s.pushers().await?;
        let daemon = rsyncd::RsyncDaemon::start(&rsyncd::DaemonPlan {
            rsync: &s.rsync,
            state_dir: &s.work_dir.join("rsync"),
            module_path: &root,
            ip: &s.announce.ip,
            port: s.announce.port + 1000,
            secret: s.password.as_deref().unwrap_or("default"),
            allowed: &allowed,
        })
        .await?;
        *ctx.daemon.lock().await = Some(daemon);
        Ok(())
    }

    /// After an interruption, the master is asked for INFO on its client port before we
    /// reconnect to its replication port. A restarting Pika opens the replication port
    /// before its databases (the client port only after them), and a TrySync that
    /// arrives in between crashes Pika 3.2.9 (it cannot build the error reply). It also
    /// notices a master that came back as someone's replica.
    async fn read_info_again(&mut self) -> Result<(), ReplicaError> {
        let (info, generation) = self.source.read_info().await?;
        // A master upgraded while we were away hands its dump over the new way.
        self.generation = generation;
        self.identity = Identity::of(&info, self.source.client_port);
        self.master_at.extend(info.binlog_offsets);
        self.info_read = true;
        Ok(())
    }

    /// MetaSync; the databases to follow (the master's, or those `dbs` names).
    async fn meta_sync(&mut self, link: &mut Link) -> Result<Vec<u32>, ReplicaError> {
        let s = self.source;
        let r = link
            .call(requests::meta_sync(&s.announce, s.password.as_deref()))
            .await
            .map_err(ReplicaError::Transient)?;
        let reply = r.reply.clone().unwrap_or_default();
        match StatusCode::try_from(r.code) {
            Ok(StatusCode::Ok) => {}
            Ok(StatusCode::Other) => {
                // "Slave AlreadyExist": the master has not noticed our previous
                // connection is gone yet (up to 180 s).
                return Err(ReplicaError::Transient(format!(
                    "the master still lists {}:{} as a replica ({reply}); waiting for it to let go",
                    s.announce.ip, s.announce.port
                )));
            }
            _ if reply.contains("Slave AlreadyExist") => {
                return Err(ReplicaError::Transient(format!("MetaSync: {reply}")));
            }
            _ => {
                return Err(ReplicaError::Auth {
                    addr: s.master.clone(),
                    reply,
                })
            }
        }
        let meta = r.meta_sync.unwrap_or_default();
        // INFO named the version; the reply must be of the same generation (a master
        // swapped for another version between the two, or a proxy, would not be).
        let replied = Generation::of_meta_sync(&meta);
        if replied != Some(self.generation) {
            return Err(ReplicaError::UnsupportedVersion {
                addr: s.master.clone(),
                found: format!(
                    "reports a version of {} in INFO but answers MetaSync as {}",
                    self.generation,
                    replied.map_or("no Pika (db_instance_num without run_id)".to_owned(), |g| {
                        g.to_string()
                    })
                ),
            });
        }
        // 3.5 and 4.0 name themselves: the replication port must lead to the master
        // whose INFO we read (a port mapping may lead elsewhere).
        if let (Some(replied), Some(ours)) = (&meta.run_id, &self.identity.run_id) {
            if replied != ours {
                // A master restarted since its INFO was read draws a new id: ask again.
                self.read_info_again().await?;
                if self.identity.run_id.as_ref() != Some(replied) {
                    return Err(ReplicaError::OtherMaster {
                        reached: format!("the replication port {}", s.repl_addr()),
                        master: s.master.clone(),
                        how: format!(
                            "its MetaSync reply names run_id {replied}, the master's INFO {}",
                            self.identity.run_id.as_deref().unwrap_or("none")
                        ),
                    });
                }
            }
        }
        // Sharding mode, or a database split in several partitions, is not followed.
        let master_dbs: Option<Vec<u32>> = meta
            .tables_info
            .iter()
            .map(|t| {
                let db = t.table_name.strip_prefix("db")?.parse().ok()?;
                (t.partition_num == 1).then_some(db)
            })
            .collect();
        let Some(master_dbs) = master_dbs.filter(|_| meta.classic_mode) else {
            return Err(ReplicaError::Sharding {
                addr: s.master.clone(),
            });
        };
        let has: Vec<String> = master_dbs.iter().map(|d| format!("db{d}")).collect();
        let dbs = match &s.dbs {
            None => master_dbs,
            Some(wanted) => {
                if let Some(db) = wanted.iter().find(|db| !master_dbs.contains(db)) {
                    return Err(ReplicaError::NoSuchDatabase {
                        addr: s.master.clone(),
                        db: *db,
                        has: has.join(", "),
                    });
                }
                wanted.clone()
            }
        };
        if let Some(check) = &s.check_databases {
            check(&dbs).map_err(|why| {
                ReplicaError::Config(format!(
                    "the master {} has databases {}, but {why}",
                    s.master,
                    has.join(", ")
                ))
            })?;
        }
        Ok(dbs)
    }
}

/// A response outside the binlog stream: keepalives are answered, anything else is
/// ignored; a broken link is an error.
async fn keepalive_or_lost(
    link: &mut Link,
    r: Result<InnerResponse, String>,
) -> Result<(), ReplicaError> {
    let r = r.map_err(ReplicaError::Transient)?;
    if !r.binlog_sync.is_empty() && r.binlog_sync.iter().all(|e| e.binlog.is_empty()) {
        link.ping().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &str) -> Result<PikaSource, ReplicaError> {
        let yaml = format!("master: 10.0.0.5:9221\nannounce: 10.0.0.9:9231\nwork_dir: /w\n{extra}");
        PikaSource::new(&serde_yaml::from_str(&yaml).unwrap())
    }

    #[test]
    fn ports_follow_pikas_offsets_unless_a_mapping_names_them() {
        let s = source("").unwrap();
        assert_eq!(s.repl_addr(), "10.0.0.5:11221");
        assert_eq!(s.rsync2_addr().unwrap(), "10.0.0.5:19222");
        let s = source("replication_port: 31000\nrsync_port: 31001\n").unwrap();
        assert_eq!(s.repl_addr(), "10.0.0.5:31000");
        assert_eq!(s.rsync2_addr().unwrap(), "10.0.0.5:31001");
        // A high mapped port has no room for Pika's offsets: they must be named.
        let high = |extra: &str| {
            let yaml =
                format!("master: 10.0.0.5:64000\nannounce: 10.0.0.9:9231\nwork_dir: /w\n{extra}");
            PikaSource::new(&serde_yaml::from_str(&yaml).unwrap())
        };
        let e = high("").err().unwrap();
        assert!(e.to_string().contains("replication_port"), "{e}");
        assert_eq!(e.exit_code(), 78);
        let s = high("replication_port: 31000\n").unwrap();
        assert!(s
            .rsync2_addr()
            .unwrap_err()
            .to_string()
            .contains("rsync_port"));
    }

    #[test]
    fn push_from_takes_addresses_and_blocks_only() {
        assert!(source("push_from: [10.0.0.5, 10.1.0.0/16, '::1', 'fd00::/8']\n").is_ok());
        for bad in ["pika.example", "10.0.0.0/33", "10.0.0.5/", "::1/129"] {
            let e = source(&format!("push_from: ['{bad}']\n")).err().unwrap();
            assert!(e.to_string().contains(bad), "{e}");
            assert_eq!(e.exit_code(), 78);
        }
    }
}
