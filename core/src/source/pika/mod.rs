//! The `pika` source: joins a running Pika 3.2–4.0 master as a replica. It takes a full
//! sync (a 3.2–3.4 master pushes its dump to our rsync daemon; from a 3.5 or 4.0 master
//! we pull it over its rsync service; we scan it, blackwidow or floyd), then follows the binlog from the dump's
//! position, acking only what every sink has acknowledged, and keeps its place in
//! `work_dir/checkpoint.json` so a restart resumes where the sinks stand, without a
//! second full sync.
//!
//! `link` is the replication connection, `rsyncd` the daemon (3.2–3.4), `pull` the 3.5/4.0
//! pull, `dump` the receiving directory, `checkpoint` the progress file, `master_info`
//! the checks made on the master's client port (and the protocol generation), `stream`
//! the binlog loop.

pub mod checkpoint;
pub mod dump;
pub mod error;
pub mod link;
pub mod listener;
pub mod master_info;
pub mod pull;
pub mod rsyncd;
mod stream;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::snapshot::SnapshotSource;
use super::{EventSender, Source, SourceError, SourceReport};
use crate::config::{PikaSourceConfig, ResyncPolicy};
use crate::event::BinlogOffset;
use crate::metrics::Metrics;
use crate::pika::repl::proto::{InnerResponse, StatusCode, TrySyncReplyCode};
use crate::pika::repl::requests::{self, Announce};
use crate::pika::storage::ChunkLimits;
use crate::status::Stage as Phase;
use checkpoint::{Checkpoint, CheckpointFile, Stage};
use dump::ReceiveDir;
pub use error::ReplicaError;
use link::Link;
use master_info::Generation;

/// The one database (classic mode, `databases 1`) we replicate.
const DB: u32 = 0;
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

pub struct PikaSource {
    master: String,
    master_port: u16,
    password: Option<String>,
    announce: Announce,
    work_dir: PathBuf,
    resync: ResyncPolicy,
    limits: ChunkLimits,
    load_rate: Option<u64>,
    pull_rate: Option<u64>,
    transfer_timeout: Duration,
    retry_for: Duration,
    rsync: PathBuf,
}

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
        if master_port > u16::MAX - 2000 || port > u16::MAX - 1000 {
            return Err(ReplicaError::Config(
                "ports too high: replication uses master port + 2000, the dump announce port + 1000"
                    .into(),
            ));
        }
        Ok(PikaSource {
            master: config.master.clone(),
            master_port,
            password: config.password.clone().filter(|p| !p.is_empty()),
            announce: Announce { ip, port },
            work_dir: config.work_dir.clone(),
            resync: config.resync,
            limits: config.chunk.into(),
            load_rate: config.load_rate,
            pull_rate: config.pull_rate.filter(|r| *r > 0),
            transfer_timeout: Duration::from_secs(config.transfer_timeout.max(1)),
            retry_for: Duration::from_secs(config.retry_seconds),
            rsync: config.rsync.clone(),
        })
    }

    fn master_host(&self) -> &str {
        self.master.rsplit_once(':').map_or("", |(h, _)| h)
    }

    fn repl_addr(&self) -> String {
        format!("{}:{}", self.master_host(), self.master_port + 2000)
    }

    /// The 3.5/4.0 master's rsync service (port + 10001, which may not fit in a port number).
    fn rsync2_addr(&self) -> Result<String, ReplicaError> {
        let port = self
            .master_port
            .checked_add(pull::RSYNC2_PORT_SHIFT)
            .ok_or_else(|| {
                ReplicaError::Config(format!(
                    "master port {} + 10001 (a Pika 3.5/4.0 master's rsync service) is not a port",
                    self.master_port
                ))
            })?;
        Ok(format!("{}:{port}", self.master_host()))
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

/// How an attempt ended when it did not fail.
enum Ended {
    /// Stopped on request; everything read was acknowledged.
    Stopped,
}

/// One run of the replica: its progress and what it reports.
struct Replica<'a> {
    source: &'a PikaSource,
    out: EventSender,
    metrics: Metrics,
    checkpoints: CheckpointFile,
    checkpoint: Option<Checkpoint>,
    report: SourceReport,
    /// The master's binlog position when we started. A DBSync names its file: the
    /// master re-uses a dump less than 50 files older rather than taking a new one.
    master_at: BinlogOffset,
    /// Whether the replication port answered once in this run (a master that did is
    /// given `retry_seconds` to come back; one that never did, a few seconds).
    connected_once: bool,
    /// Since when the replication port has been refusing us, if it is.
    unreachable_since: Option<std::time::Instant>,
    /// Full syncs in a row that stalled.
    stalled_transfers: u32,
    /// Whether the master's INFO was read since the last interruption.
    info_read: bool,
    /// How the master hands over its dump (from its version, confirmed by MetaSync).
    generation: Generation,
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
        let checkpoints = CheckpointFile::new(&self.work_dir);
        let work_dir = self.work_dir.clone();
        let file = checkpoints.clone();
        let checkpoint = blocking(move || {
            std::fs::create_dir_all(&work_dir).map_err(|e| ReplicaError::io(&work_dir, e))?;
            file.load()
        })
        .await?;
        if let Some(c) = &checkpoint {
            if c.master != self.master {
                return Err(ReplicaError::Config(format!(
                    "{} follows the master {}, not {}: use another work_dir",
                    checkpoints.path().display(),
                    c.master,
                    self.master
                ))
                .into());
            }
            tracing::info!(stage = ?c.stage, "resuming from the checkpoint");
        }
        metrics.status().set_master(&self.master);
        metrics.status().set_stage(Phase::Connecting);
        let (info, generation) = self.read_info().await?;
        let mut replica = Replica {
            source: &self,
            out,
            metrics,
            checkpoints,
            checkpoint,
            report: SourceReport::default(),
            master_at: info.binlog_offset.unwrap_or_default(),
            connected_once: false,
            unreachable_since: None,
            stalled_transfers: 0,
            info_read: true,
            generation,
        };
        replica.run().await?;
        replica.out.flush().await;
        if let Some(Checkpoint {
            stage: Stage::Stream { at },
            ..
        }) = &replica.checkpoint
        {
            replica.report.end_positions.insert(DB, *at);
        }
        Ok(replica.report)
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

    async fn save(&mut self, stage: Stage) -> Result<(), ReplicaError> {
        if let Stage::Stream { at } = stage {
            self.metrics.status().set_position(at);
        }
        let c = Checkpoint {
            master: self.source.master.clone(),
            stage,
        };
        let (file, saved) = (self.checkpoints.clone(), c.clone());
        blocking(move || file.save(&saved)).await?;
        self.checkpoint = Some(c);
        Ok(())
    }

    /// Connects, handshakes, and goes on from wherever the checkpoint says.
    async fn attempt(&mut self) -> Result<Ended, ReplicaError> {
        let s = self.source;
        if !self.info_read {
            self.read_info_again().await?;
        }
        let addr = s.repl_addr();
        let mut link = Link::connect(&addr, s.announce.clone(), DB)
            .await
            .map_err(|e| ReplicaError::Unreachable {
                addr: addr.clone(),
                error: e.to_string(),
            })?;
        self.connected_once = true;
        self.unreachable_since = None;
        self.meta_sync(&mut link).await?;
        let stage = self.checkpoint.as_ref().map(|c| c.stage.clone());
        let at = match stage {
            None | Some(Stage::Transfer) => {
                let Some(dump_at) = self.transfer(&mut link).await? else {
                    return Ok(Ended::Stopped);
                };
                self.save(Stage::Load { dump_at }).await?;
                self.load(&mut link, dump_at).await?
            }
            Some(Stage::Load { dump_at }) => self.load(&mut link, dump_at).await?,
            Some(Stage::Stream { at }) => Some(at),
        };
        let Some(at) = at else {
            return Ok(Ended::Stopped);
        };
        self.try_sync(&mut link, at).await?;
        stream::follow(self, link, at).await
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
        if let Some(at) = info.binlog_offset {
            self.master_at = at;
        }
        self.info_read = true;
        Ok(())
    }

    async fn meta_sync(&mut self, link: &mut Link) -> Result<(), ReplicaError> {
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
        if !meta.classic_mode {
            return Err(ReplicaError::Sharding {
                addr: s.master.clone(),
            });
        }
        if meta.tables_info.len() != 1 {
            return Err(ReplicaError::ManyDatabases {
                addr: s.master.clone(),
                databases: meta.tables_info.len(),
            });
        }
        Ok(())
    }

    /// Asks for a full sync and waits until the whole dump is on disk; its position, or
    /// `None` when stopped.
    async fn transfer(&mut self, link: &mut Link) -> Result<Option<BinlogOffset>, ReplicaError> {
        let s = self.source;
        self.save(Stage::Transfer).await?;
        self.metrics.status().set_stage(Phase::FullSyncTransfer);
        self.metrics.status().set_dump_bytes(0);
        let dir = ReceiveDir::new(&s.work_dir, DB);
        if self.generation.pulls() {
            // No daemon: we pull, and the pull readies the directory itself (keeping
            // the files of this dump an earlier run completed).
            return self.wait_for_dump(link, &dir).await;
        }
        let prepare = dir.clone();
        blocking(move || prepare.prepare()).await?;
        let daemon = rsyncd::RsyncDaemon::start(
            &s.rsync,
            &s.work_dir.join("rsync"),
            &dir.root,
            &s.announce.ip,
            s.announce.port + 1000,
            s.password.as_deref().unwrap_or("default"),
        )
        .await?;
        let result = self.wait_for_dump(link, &dir).await;
        daemon.stop().await;
        result
    }

    async fn wait_for_dump(
        &mut self,
        link: &mut Link,
        dir: &ReceiveDir,
    ) -> Result<Option<BinlogOffset>, ReplicaError> {
        let s = self.source;
        let r = link
            .call(requests::db_sync(&s.announce, DB, self.master_at))
            .await
            .map_err(ReplicaError::Transient)?;
        let Some(db_sync) = r.db_sync.filter(|_| r.code == StatusCode::Ok as i32) else {
            return Err(ReplicaError::Transient(format!(
                "the master refused the full sync: {}",
                r.reply.unwrap_or_default()
            )));
        };
        link.set_session(db_sync.session_id);
        tracing::info!(session = db_sync.session_id, dir = %dir.db_dir().display(), "full sync: waiting for the master's dump");
        // 3.5: we pull the dump while the link is kept alive here; it is complete when
        // the pull ends (its `info` comes early, in file name order). 3.2–3.4: the
        // master's push is complete when `info`, which it sends last, is there.
        let mut pull = match self.generation {
            Generation::Pull | Generation::PullFloyd => {
                let plan = pull::PullPlan {
                    addr: s.rsync2_addr()?,
                    db: DB,
                    db_dir: dir.db_dir(),
                    done_list: s.work_dir.join(format!("pulled-db{DB}")),
                    rate: s.pull_rate,
                };
                Some(Box::pin(async move { pull::pull(&plan).await }))
            }
            Generation::Push => None,
        };
        let mut pulled = pull.is_none();
        let status = self.metrics.status().clone();
        let mut poll = tokio::time::interval(DUMP_POLL);
        let (mut received, mut counted) = (0, std::time::Instant::now());
        let (mut last_log, mut last_byte) = (counted, counted);
        loop {
            tokio::select! {
                r = link.recv() => { keepalive_or_lost(link, r).await?; }
                _ = poll.tick() => {}
                done = async {
                    match pull.as_mut() {
                        Some(p) => p.await,
                        None => std::future::pending().await,
                    }
                }, if pull.is_some() => {
                    let snapshot = done?;
                    tracing::info!(%snapshot, "full sync: every file of the dump pulled");
                    pull = None;
                    pulled = true;
                }
            }
            if self.out.should_stop() {
                return Ok(None);
            }
            let (arrived, master_port) = (dir.clone(), s.master_port);
            if !pulled {
                // Only the pull's end says the dump is complete.
            } else if let Some(dump_at) = blocking(move || arrived.arrived(master_port)).await? {
                let counting = dir.clone();
                let bytes = blocking(move || Ok(counting.received_bytes())).await?;
                status.set_dump_bytes(bytes);
                self.stalled_transfers = 0;
                tracing::info!(position = %dump_at, bytes, "full sync: dump received");
                return Ok(Some(dump_at));
            }
            if counted.elapsed() >= DUMP_COUNT_EVERY {
                counted = std::time::Instant::now();
                let counting = dir.clone();
                let bytes = blocking(move || Ok(counting.received_bytes())).await?;
                if bytes != received {
                    (received, last_byte) = (bytes, counted);
                    status.set_dump_bytes(bytes);
                }
            }
            if last_log.elapsed() >= Duration::from_secs(10) {
                last_log = std::time::Instant::now();
                tracing::info!(bytes = received, "full sync: receiving the dump");
            }
            if last_byte.elapsed() >= s.transfer_timeout {
                self.stalled_transfers += 1;
                let check = match self.generation {
                    Generation::Push => format!(
                        "check that the master reaches {}:{} (where it pushes the dump), has \
                         the rsync binary, and what its log says",
                        s.announce.ip,
                        s.announce.port + 1000
                    ),
                    Generation::Pull | Generation::PullFloyd => format!(
                        "check that we reach the master's rsync service at {} (its port + \
                         10001), and what its log says",
                        s.rsync2_addr()?
                    ),
                };
                let stalled = ReplicaError::TransferStalled {
                    secs: s.transfer_timeout.as_secs(),
                    times: self.stalled_transfers,
                    check,
                };
                if self.stalled_transfers >= STALLED_TRANSFERS {
                    return Err(stalled);
                }
                return Err(ReplicaError::Transient(stalled.to_string()));
            }
            if link.silent_for() >= SILENCE {
                return Err(ReplicaError::Transient(format!(
                    "the master sent nothing for {SILENCE:?} while we waited for the dump; it may have dropped us"
                )));
            }
        }
    }

    /// Scans the received dump into the sinks and waits until they acknowledged all of
    /// it; then the binlog goes on from `dump_at`. `None` when stopped.
    async fn load(
        &mut self,
        link: &mut Link,
        dump_at: BinlogOffset,
    ) -> Result<Option<BinlogOffset>, ReplicaError> {
        let s = self.source;
        let dir = ReceiveDir::new(&s.work_dir, DB);
        let scan = SnapshotSource {
            path: dir.root.clone(),
            limits: s.limits,
            rate: s.load_rate,
        };
        let metrics = self.metrics.clone();
        metrics.status().set_stage(Phase::FullSyncLoad);
        let out = std::mem::replace(&mut self.out, EventSender::closed());
        tracing::info!(position = %dump_at, "full sync: loading the dump into the sinks");
        let mut task = tokio::task::spawn_blocking(move || {
            let mut out = out;
            let result = scan.scan_blocking(&mut out, &metrics);
            (out, result)
        });
        // The link only needs to live on while we load; if it breaks, the binlog is
        // asked for on a new one afterwards.
        let mut link_up = true;
        let mut silence = tokio::time::interval(Duration::from_secs(1));
        let (out, result) = loop {
            tokio::select! {
                done = &mut task => break done.map_err(|e| ReplicaError::Transient(format!("dump scan task: {e}")))?,
                r = link.recv(), if link_up => {
                    link_up = keepalive_or_lost(link, r).await.is_ok();
                }
                _ = silence.tick() => {
                    link_up &= link.silent_for() < SILENCE;
                }
            }
        };
        self.out = out;
        let scanned = result.map_err(|e| ReplicaError::DumpInfo {
            path: dir.db_dir().display().to_string(),
            reason: e.to_string(),
        })?;
        self.report.scan = scanned.scan;
        if self.out.should_stop() {
            return Ok(None);
        }
        self.out.flush().await;
        while !self.out.all_acknowledged() {
            if self.out.should_stop() {
                return Ok(None);
            }
            tokio::select! {
                r = link.recv(), if link_up => {
                    link_up = keepalive_or_lost(link, r).await.is_ok();
                }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        self.save(Stage::Stream { at: dump_at }).await?;
        tracing::info!(position = %dump_at, "full sync: loaded; following the binlog");
        Ok(Some(dump_at))
    }

    /// TrySync from `at`; on success the session is set on the link.
    async fn try_sync(&mut self, link: &mut Link, at: BinlogOffset) -> Result<(), ReplicaError> {
        let s = self.source;
        let r = link
            .call(requests::try_sync(&s.announce, DB, at))
            .await
            .map_err(ReplicaError::Transient)?;
        let t = r.try_sync.clone().unwrap_or_default();
        if r.code != StatusCode::Ok as i32 {
            return Err(ReplicaError::TrySync {
                at,
                reason: r.reply.unwrap_or_else(|| format!("code {}", r.code)),
            });
        }
        let master_at = t
            .binlog_offset
            .as_ref()
            .map(|o| BinlogOffset::new(o.filenum, o.offset));
        match TrySyncReplyCode::try_from(t.reply_code) {
            Ok(TrySyncReplyCode::Ok) => {
                let session = t.session_id.unwrap_or(0);
                link.set_session(session);
                link.send(requests::binlog_sync_first(&s.announce, DB, session, at))
                    .await
                    .map_err(ReplicaError::Transient)?;
                tracing::info!(position = %at, session, master_position = ?master_at, "streaming the binlog");
                Ok(())
            }
            Ok(TrySyncReplyCode::SyncPointBePurged) => {
                if s.resync == ResyncPolicy::Allow {
                    tracing::warn!(position = %at, "the master purged our binlog position; taking a new full sync (resync: allow)");
                    self.save(Stage::Transfer).await?;
                    return Err(ReplicaError::Transient("binlog purged; full sync again".into()));
                }
                Err(ReplicaError::Purged {
                    at,
                    work_dir: s.work_dir.display().to_string(),
                })
            }
            Ok(TrySyncReplyCode::SyncPointLarger) => Err(ReplicaError::TrySync {
                at,
                reason: format!(
                    "the master's binlog ends at {}, before our position: is this the same master, or was it reset?",
                    master_at.map(|m| m.to_string()).unwrap_or_default()
                ),
            }),
            _ => Err(ReplicaError::TrySync {
                at,
                reason: "not an item boundary in the master's binlog".into(),
            }),
        }
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
