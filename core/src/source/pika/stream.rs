//! Following the master's binlog. Items become events in order; each item waits in
//! `unacked` until every sink has acknowledged its event (or at once when it carries
//! none), and the master hears an ack for exactly the offsets it sent, as a prefix of
//! what it pushed. A slow sink therefore holds the master's window, and memory stays
//! bounded; the link's own pings keep the session alive meanwhile.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::checkpoint::Stage;
use super::db::{Ctx, DbReplica};
use super::error::ReplicaError;
use super::link::Link;
use super::Ended;
use crate::event::BinlogOffset;
use crate::pika::binlog::{BinlogEntry, BinlogItem};
use crate::pika::repl::proto::{self, Type};
use crate::pika::repl::requests;
use crate::replay::{Replay, ReplayClock};
use crate::source::binlog::entry_to_named_event;
use crate::source::Seq;
use crate::status::Status;

/// How often acks are looked for.
const ACK_POLL: Duration = Duration::from_millis(10);
/// The checkpoint file is rewritten at most this often (and when the stream ends).
const SAVE_EVERY: Duration = Duration::from_millis(200);
/// With nothing outstanding, a master that sends nothing (not even its 2-s keepalives)
/// for this long has dropped us.
const SILENCE: Duration = Duration::from_secs(30);
/// With no item for this long, the stream has read what the master had: the expiries
/// held back (items that arrived after their keys' time) are released.
const CAUGHT_UP: Duration = Duration::from_secs(1);

/// An item pushed by the master, not yet acked to it.
struct Pushed {
    /// The offset exactly as the master sent it (acks must repeat it).
    sent: proto::BinlogOffset,
    end: BinlogOffset,
    /// The order of its event among those queued (`None`: it has none).
    event: Option<Seq>,
    exec_time: u32,
    /// When it arrived: how long the sinks take to acknowledge it is measured from here.
    arrived: Instant,
}

struct Acks {
    unacked: VecDeque<Pushed>,
    /// Everything up to here is acknowledged by the sinks and acked to the master.
    at: BinlogOffset,
    saved: BinlogOffset,
    saved_when: Instant,
}

impl Acks {
    /// The oldest item still waiting: its write time on the master and its arrival.
    fn oldest(&self) -> Option<(u32, Instant)> {
        self.unacked.front().map(|p| (p.exec_time, p.arrived))
    }

    /// Takes the prefix the sinks have acknowledged (every event queued up to
    /// `sinks`); the offsets to ack, if any.
    fn take(
        &mut self,
        sinks: Seq,
        status: &Status,
    ) -> Option<(proto::BinlogOffset, proto::BinlogOffset)> {
        let mut range: Option<(proto::BinlogOffset, proto::BinlogOffset)> = None;
        while let Some(front) = self.unacked.front() {
            if front.event.is_some_and(|seq| seq > sinks) {
                break;
            }
            let Some(p) = self.unacked.pop_front() else {
                break;
            };
            status.acked_after(p.arrived.elapsed());
            // An item sent again lies behind: the position never goes back.
            self.at = self.at.max(p.end);
            range = Some(match range {
                None => (p.sent.clone(), p.sent),
                Some((first, _)) => (first, p.sent),
            });
        }
        range
    }
}

/// Streams from `at` (already accepted by TrySync) until stopped or the link breaks.
pub(super) async fn follow(
    replica: &mut DbReplica,
    ctx: &Ctx<'_>,
    mut link: Link,
    at: BinlogOffset,
) -> Result<Ended, ReplicaError> {
    let me = ctx.source.announce.clone();
    let dialect = ctx.generation.dialect();
    let db = replica.db;
    let mut acks = Acks {
        unacked: VecDeque::new(),
        at,
        saved: at,
        saved_when: Instant::now(),
    };
    let status = replica.status.clone();
    status.set_stage(crate::status::Stage::Streaming);
    status.set_position(at);
    let mut session = None;
    let mut previous_end = at;
    // Items can arrive late (a stream resumed after an outage, a master that kept its
    // binlog): an expiry past on arrival but not when the master applied it is held
    // back until the stream reaches its time, as a late binlog replay does.
    let mut replay = Replay::new(ReplayClock::wall());
    replay.starts_at(db, at);
    let mut ready = Vec::new();
    let mut last_item = Instant::now();
    let mut resent = 0u64;
    let mut poll = crate::pipeline::ack_interval(ACK_POLL);
    let mut fast = crate::pipeline::ack_interval(crate::pipeline::FAST_ACK_POLL);
    let outcome: Result<(), ReplicaError> = loop {
        tokio::select! {
            r = link.recv() => {
                let r = match r {
                    Ok(r) => r,
                    Err(e) => break Err(ReplicaError::Transient(e)),
                };
                if r.r#type != Type::BinlogSync as i32 {
                    continue;
                }
                let mut items = 0;
                let mut failure = None;
                let arrived = Instant::now();
                for entry in r.binlog_sync {
                    // The first push names the session TrySync gave us; older sessions'
                    // pushes are stale.
                    let current = *session.get_or_insert(entry.session_id);
                    if entry.session_id != current {
                        continue;
                    }
                    if entry.binlog.is_empty() {
                        continue;
                    }
                    items += 1;
                    let end = BinlogOffset::new(entry.binlog_offset.filenum, entry.binlog_offset.offset);
                    if end <= previous_end {
                        // Sent again (or from before where we asked to start): its first
                        // copy is applied, and acked in its place.
                        resent += 1;
                        if resent == 1 {
                            tracing::warn!(position = %end, after = %previous_end, "the master sent a binlog item again; not applying it twice (further ones are only counted)");
                        }
                        continue;
                    }
                    let item = match BinlogItem::decode(&entry.binlog) {
                        Ok(item) => item,
                        Err(e) => {
                            failure = Some(ReplicaError::BadItem { db, at: end, error: e.to_string() });
                            break;
                        }
                    };
                    let exec_time = item.exec_time;
                    let entry_read = BinlogEntry { start: previous_end, end, item };
                    previous_end = end;
                    replica.report.binlog_items += 1;
                    let event = match entry_to_named_event(db, entry_read, dialect, &mut replica.report) {
                        Ok(event) => event,
                        Err(e) => {
                            failure = Some(ReplicaError::BadItem { db, at: end, error: e.to_string() });
                            break;
                        }
                    };
                    let mut queued = None;
                    if let Some((event, name)) = event {
                        replay.pass_named(event, name.as_str(), &mut ready);
                        for event in ready.drain(..) {
                            replica.out.push(event).await;
                        }
                        queued = Some(replica.out.pushed());
                    }
                    last_item = arrived;
                    acks.unacked.push_back(Pushed { sent: entry.binlog_offset, end, event: queued, exec_time, arrived });
                }
                replica.out.flush().await;
                status.set_stream(Some(previous_end), acks.unacked.len(), acks.oldest());
                if let Some(e) = failure {
                    break Err(e);
                }
                if items == 0 {
                    link.ping().await;
                }
            }
            _ = poll.tick() => {
                if replay.is_holding() && last_item.elapsed() >= CAUGHT_UP {
                    replay.caught_up(&mut ready);
                    for event in ready.drain(..) {
                        replica.out.push(event).await;
                    }
                    replica.out.flush().await;
                }
            }
            _ = fast.tick(), if !acks.unacked.is_empty() => {}
        }
        if let Some((first, last)) = acks.take(replica.out.acknowledged(), &status) {
            status.set_stream(None, acks.unacked.len(), acks.oldest());
            let session = session.unwrap_or_default();
            if let Err(e) = link
                .send(requests::binlog_ack(&me, db, session, &first, &last))
                .await
            {
                break Err(ReplicaError::Transient(e));
            }
        }
        if acks.at != acks.saved && acks.saved_when.elapsed() >= SAVE_EVERY {
            if let Err(e) = save(replica, ctx, &mut acks, &replay).await {
                break Err(e);
            }
        }
        if replica.should_stop(ctx) {
            break Ok(());
        }
        if acks.unacked.is_empty() && link.silent_for() >= SILENCE {
            break Err(ReplicaError::Transient(format!(
                "the master sent nothing for {SILENCE:?}; it may have dropped us"
            )));
        }
    };
    // Whatever ended the stream, let the sinks take what was read, so the position we
    // keep (and resume from) covers it, and a resumed stream neither skips nor repeats.
    drop(link);
    replica.out.flush().await;
    while !replica.out.all_acknowledged() && !replica.out.is_closed() {
        tokio::time::sleep(ACK_POLL).await;
    }
    acks.take(replica.out.acknowledged(), &status);
    save(replica, ctx, &mut acks, &replay).await?;
    tracing::info!(position = %acks.at, "binlog position saved");
    outcome.map(|()| Ended::Stopped)
}

/// Saves the position to resume from: what the sinks took, but never past an item
/// whose expiry is still held back (resumed from there, it is held again and released
/// in its turn; the Redis sink skips what it had applied).
async fn save(
    replica: &mut DbReplica,
    ctx: &Ctx<'_>,
    acks: &mut Acks,
    replay: &Replay,
) -> Result<(), ReplicaError> {
    let at = match replay.resume_point(replica.db) {
        Some(held) => acks.at.min(held),
        None => acks.at,
    };
    replica.save(ctx, Stage::Stream { at }).await?;
    acks.saved = acks.at;
    acks.saved_when = Instant::now();
    Ok(())
}
