//! One database of the master, replicated over the run's connection: its full sync
//! (the dump received or pulled, then loaded into the sinks), then its binlog. Each
//! database goes through these stages on its own, so a full sync of one does not hold
//! up the streaming of another; its stage is kept in the shared checkpoint.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::checkpoint::{CheckpointStore, Stage};
use super::dump::ReceiveDir;
use super::error::ReplicaError;
use super::link::Link;
use super::master_info::Generation;
use super::turns::Turn;
use super::{blocking, keepalive_or_lost, pull, rsyncd, stream, Ended, PikaSource};
use super::{disk, DUMP_COUNT_EVERY, DUMP_POLL, FULL_DISK_TRANSFERS, SILENCE, STALLED_TRANSFERS};
use crate::config::ResyncPolicy;
use crate::event::BinlogOffset;
use crate::metrics::Metrics;
use crate::pika::repl::proto::{StatusCode, TrySyncReplyCode};
use crate::pika::repl::requests;
use crate::source::snapshot::SnapshotSource;
use crate::source::{EventSender, SourceReport};
use crate::status::{Stage as Phase, Status};

/// What the databases' replicas share during one connection to the master.
pub(super) struct Ctx<'a> {
    pub source: &'a PikaSource,
    pub metrics: &'a Metrics,
    pub checkpoints: &'a CheckpointStore,
    /// How the master hands over its dumps.
    pub generation: Generation,
    /// The master's own client port, which its dumps name.
    pub master_port: u16,
    /// The size of the master's databases (INFO `db_size`): about what the dumps take.
    pub master_db_size: Option<u64>,
    /// Set when one database's replica failed: the others end as if stopped (their
    /// positions saved), and the connection is made again for all.
    pub interrupted: AtomicBool,
    /// The rsync daemon a 3.2–3.4 master pushes dumps into, while any is expected.
    pub daemon: tokio::sync::Mutex<Option<rsyncd::RsyncDaemon>>,
    /// Transfers not ended yet (the daemon waits for them).
    pub transfers: AtomicUsize,
    /// Full syncs (transfer and load) not ended yet (the fleet's turn waits for them).
    pub full_syncs: AtomicUsize,
    /// The fleet's full-sync turn, given back when the last full sync ended.
    pub turn: std::sync::Mutex<Option<Turn>>,
}

impl Ctx<'_> {
    /// One database's transfer ended (done or not): the daemon stops after the last.
    async fn transfer_ended(&self) {
        if self.transfers.fetch_sub(1, Ordering::SeqCst) == 1 {
            if let Some(daemon) = self.daemon.lock().await.take() {
                daemon.stop().await;
            }
        }
    }

    /// One database's full sync is loaded (or, dump only, on disk): after the last, the
    /// fleet's turn goes to the next master. Held through the load, not only the
    /// transfer: the master has finished with the dump by then for sure (a 3.2–3.4
    /// master's rsync can still be closing when the last file is here), and the fleet
    /// loads one dump at a time into the target as well.
    pub fn full_sync_ended(&self) {
        if self.full_syncs.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.release_turn();
        }
    }

    /// Gives the fleet's full-sync turn back, if held.
    pub fn release_turn(&self) {
        if self.take_turn().is_some() {
            tracing::info!("full sync done: the turn goes to the next master");
        }
    }

    pub fn take_turn(&self) -> Option<Turn> {
        self.turn.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
    }
}

/// One database's replica: what it keeps across connections.
pub(super) struct DbReplica {
    pub db: u32,
    pub out: EventSender,
    pub report: SourceReport,
    /// This database's figures in the run's status.
    pub status: Status,
    /// The master's binlog position of this database when we last read its INFO. A
    /// DBSync names its file: the master re-uses a dump less than 50 files older
    /// rather than taking a new one.
    pub master_at: BinlogOffset,
    /// Full syncs in a row that stalled.
    pub stalled_transfers: u32,
    /// Full syncs in a row that ran out of disk space.
    pub full_disk_transfers: u32,
}

impl DbReplica {
    pub fn new(db: u32, out: EventSender, status: Status) -> DbReplica {
        DbReplica {
            db,
            out,
            report: SourceReport::default(),
            status,
            master_at: BinlogOffset::default(),
            stalled_transfers: 0,
            full_disk_transfers: 0,
        }
    }

    /// Whether to end: a stop was asked for, the pipeline is gone, or another
    /// database's replica failed.
    pub fn should_stop(&self, ctx: &Ctx<'_>) -> bool {
        self.out.should_stop() || ctx.interrupted.load(Ordering::SeqCst)
    }

    pub async fn save(&mut self, ctx: &Ctx<'_>, stage: Stage) -> Result<(), ReplicaError> {
        if let Stage::Stream { at } = stage {
            self.status.set_position(at);
        }
        ctx.checkpoints.save(self.db, stage).await
    }

    /// Goes on from wherever the checkpoint says this database stands.
    pub async fn attempt(&mut self, ctx: &Ctx<'_>, mut link: Link) -> Result<Ended, ReplicaError> {
        let stage = ctx.checkpoints.stage(self.db).await;
        if ctx.source.dump_only && !matches!(stage, None | Some(Stage::Transfer)) {
            return Ok(Ended::Stopped);
        }
        let at = match stage {
            None | Some(Stage::Transfer) => {
                let Some(dump_at) = self.transfer(ctx, &mut link).await? else {
                    return Ok(Ended::Stopped);
                };
                self.save(ctx, Stage::Load { dump_at }).await?;
                if ctx.source.dump_only {
                    ctx.full_sync_ended();
                    tracing::info!(
                        db = self.db,
                        "the dump is on disk; stopping there (dump only)"
                    );
                    return Ok(Ended::Stopped);
                }
                let loaded = self.load(ctx, &mut link, dump_at).await?;
                ctx.full_sync_ended();
                loaded
            }
            Some(Stage::Load { dump_at }) => self.load(ctx, &mut link, dump_at).await?,
            Some(Stage::Stream { at }) => Some(at),
        };
        let Some(at) = at else {
            return Ok(Ended::Stopped);
        };
        self.try_sync(ctx, &mut link, at).await?;
        stream::follow(self, ctx, link, at).await
    }

    /// Asks for a full sync and waits until the whole dump is on disk; its position, or
    /// `None` when stopped.
    async fn transfer(
        &mut self,
        ctx: &Ctx<'_>,
        link: &mut Link,
    ) -> Result<Option<BinlogOffset>, ReplicaError> {
        let s = ctx.source;
        self.save(ctx, Stage::Transfer).await?;
        self.status.set_stage(Phase::FullSyncTransfer);
        self.status.set_dump_bytes(0);
        let dir = ReceiveDir::new(&s.work_dir, self.db);
        if ctx.generation.pulls() {
            // No daemon: we pull, and the pull readies the directory itself (keeping
            // the files of this dump an earlier run completed).
            let result = self.wait_for_dump(ctx, link, &dir).await;
            ctx.transfer_ended().await;
            return result;
        }
        // The master pushes into the run's rsync daemon (started for every database
        // that needs a full sync), which is stopped once the last dump is here.
        let prepare = dir.clone();
        blocking(move || prepare.prepare()).await?;
        let result = self.wait_for_dump(ctx, link, &dir).await;
        ctx.transfer_ended().await;
        result
    }

    async fn wait_for_dump(
        &mut self,
        ctx: &Ctx<'_>,
        link: &mut Link,
        dir: &ReceiveDir,
    ) -> Result<Option<BinlogOffset>, ReplicaError> {
        let s = ctx.source;
        if let Some(size) = ctx.master_db_size {
            let measured = dir.db_dir();
            if let Some(room) = blocking(move || Ok(disk::room(&measured))).await? {
                if room.free < size {
                    tracing::warn!(dir = %dir.db_dir().display(), free = room.free, master_db_size = size, "full sync: the master's databases take more than the room left here; the dump may not fit");
                }
            }
        }
        let r = link
            .call(requests::db_sync(&s.announce, self.db, self.master_at))
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
        let mut pull = match ctx.generation {
            Generation::Pull | Generation::PullFloyd => {
                let plan = pull::PullPlan {
                    addr: s.rsync2_addr()?,
                    db: self.db,
                    db_dir: dir.db_dir(),
                    done_list: s.work_dir.join(format!("pulled-db{}", self.db)),
                    rate: s.pull_rate,
                };
                Some(Box::pin(async move { pull::pull(&plan).await }))
            }
            Generation::Push => None,
        };
        let mut pulled = pull.is_none();
        // A 3.2–3.4 master's push fails on our side in the daemon, which says why.
        let daemon_log = match &*ctx.daemon.lock().await {
            Some(daemon) if pull.is_none() => Some(daemon.log().clone()),
            _ => None,
        };
        let status = self.status.clone();
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
                    let snapshot = match done {
                        Ok(snapshot) => snapshot,
                        Err(e) => match e.disk_full() {
                            Some((path, error)) => {
                                let cause = format!("writing {path}: {error}");
                                return Err(self.out_of_space(ctx, dir, cause, None).await);
                            }
                            None => return Err(e.into()),
                        },
                    };
                    tracing::info!(%snapshot, "full sync: every file of the dump pulled");
                    pull = None;
                    pulled = true;
                }
            }
            if self.should_stop(ctx) {
                return Ok(None);
            }
            let (arrived, master_port, master) = (dir.clone(), ctx.master_port, s.master.clone());
            if !pulled {
                // Only the pull's end says the dump is complete.
            } else if let Some(dump_at) =
                blocking(move || arrived.arrived(master_port, &master)).await?
            {
                let counting = dir.clone();
                let bytes = blocking(move || Ok(counting.received_bytes())).await?;
                status.set_dump_bytes(bytes);
                self.stalled_transfers = 0;
                self.full_disk_transfers = 0;
                tracing::info!(position = %dump_at, bytes, "full sync: dump received");
                return Ok(Some(dump_at));
            }
            if let Some(line) = daemon_log.as_ref().and_then(|log| log.disk_full()) {
                // The file cut short fills the disk; a push sends it whole again anyway,
                // and the next try needs room to start.
                let cut_short = rsyncd::failed_file(&line).and_then(|f| dir.file_within(f));
                let cause = format!("our rsync daemon says: {line}");
                return Err(self.out_of_space(ctx, dir, cause, cut_short).await);
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
                let check = match ctx.generation {
                    Generation::Push => format!(
                        "check that the master reaches {}:{} (where it pushes the dump), has \
                         the rsync binary, and what its log says{}",
                        s.announce.ip,
                        s.announce.port + 1000,
                        daemon_log.as_ref().and_then(|log| log.refused()).map_or(
                            String::new(),
                            |from| format!(
                                "; our rsync daemon refused a push from {from}: if the master \
                             pushes from there, add it to `push_from`"
                            )
                        )
                    ),
                    Generation::Pull | Generation::PullFloyd => format!(
                        "check that we reach the master's rsync service at {} (its port + \
                         10001, or `rsync_port`), and what its log says",
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

    /// A transfer that ran out of disk space: tried again a few times (something may
    /// have been freeing space), then the run stops, saying how much room is wanted.
    /// `cut_short`, a file the transfer left incomplete, is removed once measured.
    async fn out_of_space(
        &mut self,
        ctx: &Ctx<'_>,
        dir: &ReceiveDir,
        cause: String,
        cut_short: Option<std::path::PathBuf>,
    ) -> ReplicaError {
        self.full_disk_transfers += 1;
        let measured = dir.clone();
        let (received, room) = blocking(move || {
            let measured_at = (measured.received_bytes(), disk::room(&measured.db_dir()));
            if let Some(file) = cut_short {
                if let Err(e) = std::fs::remove_file(&file) {
                    tracing::warn!(file = %file.display(), error = %e, "cannot remove the file cut short");
                }
            }
            Ok(measured_at)
        })
        .await
        .unwrap_or((0, None));
        let full = ReplicaError::DiskFull {
            dir: ctx.source.work_dir.display().to_string(),
            db: self.db,
            cause,
            received,
            needed: match ctx.master_db_size {
                Some(size) if size > received => format!(
                    "It needs about {size} bytes: the master's databases take that on its disk \
                     (db_size in its INFO, every database)"
                ),
                Some(size) => format!(
                    "It needs more than that; the master's INFO says db_size {size} (every \
                     database), which Pika 3.5 and 4.0 count again only every minute or so"
                ),
                None => "It needs more than that; the master does not say how big its \
                         databases are"
                    .into(),
            },
            room: match room {
                Some(r) => format!("{} bytes, {} of them free", r.total, r.free),
                None => "an unknown number of bytes".into(),
            },
            tries: self.full_disk_transfers,
            most: FULL_DISK_TRANSFERS,
        };
        tracing::warn!(error = %full, "full sync: the disk is full");
        if self.full_disk_transfers >= FULL_DISK_TRANSFERS {
            return full;
        }
        ReplicaError::Transient(full.to_string())
    }

    /// Scans the received dump into the sinks and waits until they acknowledged all of
    /// it; then the binlog goes on from `dump_at`. `None` when stopped.
    async fn load(
        &mut self,
        ctx: &Ctx<'_>,
        link: &mut Link,
        dump_at: BinlogOffset,
    ) -> Result<Option<BinlogOffset>, ReplicaError> {
        let s = ctx.source;
        let dir = ReceiveDir::new(&s.work_dir, self.db);
        let scan = SnapshotSource {
            path: dir.db_dir(),
            limits: s.limits,
            rate: s.load_rate,
            threads: s.scan_threads,
            // A live master's dump is fresh: the wall clock judges it.
            clock: crate::replay::ReplayClock::wall(),
        };
        let metrics = ctx.metrics.clone();
        self.status.set_stage(Phase::FullSyncLoad);
        if s.resync == ResyncPolicy::Flush {
            // Before every load of a dump: the target then holds what the dump holds,
            // and nothing a second full sync would leave behind (keys deleted since
            // the first). A load begun again after a restart flushes again.
            tracing::info!(
                db = self.db,
                "resync: flush: emptying the target database(s) before loading"
            );
            self.out.push(flush_event(self.db, dump_at)).await;
        }
        let out = std::mem::replace(&mut self.out, EventSender::closed());
        tracing::info!(
            position = %dump_at,
            cpu_seconds = format!("{:.3}", crate::metrics::process_cpu_seconds()),
            "full sync: loading the dump into the sinks"
        );
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
        if self.should_stop(ctx) {
            return Ok(None);
        }
        self.out.flush().await;
        while !self.out.all_acknowledged() {
            if self.should_stop(ctx) {
                return Ok(None);
            }
            tokio::select! {
                r = link.recv(), if link_up => {
                    link_up = keepalive_or_lost(link, r).await.is_ok();
                }
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        self.save(ctx, Stage::Stream { at: dump_at }).await?;
        tracing::info!(
            position = %dump_at,
            cpu_seconds = format!("{:.3}", crate::metrics::process_cpu_seconds()),
            "full sync: loaded; following the binlog"
        );
        Ok(Some(dump_at))
    }

    /// TrySync from `at`; on success the session is set on the link.
    async fn try_sync(
        &mut self,
        ctx: &Ctx<'_>,
        link: &mut Link,
        at: BinlogOffset,
    ) -> Result<(), ReplicaError> {
        let s = ctx.source;
        let r = link
            .call(requests::try_sync(&s.announce, self.db, at))
            .await
            .map_err(ReplicaError::Transient)?;
        let t = r.try_sync.clone().unwrap_or_default();
        if r.code != StatusCode::Ok as i32 {
            return Err(ReplicaError::TrySync {
                db: self.db,
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
                link.send(requests::binlog_sync_first(&s.announce, self.db, session, at))
                    .await
                    .map_err(ReplicaError::Transient)?;
                tracing::info!(position = %at, session, master_position = ?master_at, "streaming the binlog");
                Ok(())
            }
            Ok(TrySyncReplyCode::SyncPointBePurged) => {
                if s.resync != ResyncPolicy::Refuse {
                    tracing::warn!(position = %at, "the master purged our binlog position; taking a new full sync (resync: {})", s.resync.as_str());
                    self.save(ctx, Stage::Transfer).await?;
                    return Err(ReplicaError::Transient("binlog purged; full sync again".into()));
                }
                Err(ReplicaError::Purged {
                    db: self.db,
                    at,
                    work_dir: s.work_dir.display().to_string(),
                })
            }
            Ok(TrySyncReplyCode::SyncPointLarger) => Err(ReplicaError::TrySync {
                db: self.db,
                at,
                reason: format!(
                    "the master's binlog ends at {}, before our position: is this the same master, or was it reset?",
                    master_at.map(|m| m.to_string()).unwrap_or_default()
                ),
            }),
            _ => Err(ReplicaError::TrySync {
                db: self.db,
                at,
                reason: "not an item boundary in the master's binlog".into(),
            }),
        }
    }
}

/// `FLUSHDB` of database `db`, ahead of its dump's events (taken at `dump_at`).
fn flush_event(db: u32, dump_at: BinlogOffset) -> crate::event::Event {
    let argv = vec![bytes::Bytes::from_static(b"FLUSHDB")];
    crate::event::Event {
        db,
        source_db: db,
        key: bytes::Bytes::new(),
        data_type: None,
        op: crate::event::Op::Command { argv },
        position: crate::event::Position::Snapshot {
            at: dump_at,
            seq: 0,
        },
        exec_time: None,
    }
}
