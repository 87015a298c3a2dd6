//! Sources of change events. Each runs until its input is exhausted (offline sources)
//! or it is stopped, sending batches into a bounded channel: a slow consumer slows the
//! source, it never grows memory.

pub mod binlog;
pub mod capture;
pub mod master_keys;
pub mod pika;
pub mod snapshot;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};

use crate::event::{BinlogOffset, Event, Position};
use crate::metrics::Metrics;
use crate::pika::binlog::BinlogError;
use crate::pika::normalize::Note;
use crate::pika::storage::{ScanStats, StorageError};

/// Events per batch handed to the pipeline.
pub const BATCH_EVENTS: usize = 1024;
/// Estimated memory after which a batch is handed over early, so that memory stays
/// bounded however big the chunks are (channel capacity × this). Big keys fill three
/// queues of 16 batches (source, sink, Redis lanes): 24 MiB at this size; at 2 MiB,
/// peak RSS loading big keys was 112 MiB instead of 50, and no faster.
pub const BATCH_BYTES: usize = 512 << 10;

/// Runs a blocking reader on tokio's blocking pool, as every file source does. What it
/// read before an error is still sent.
pub async fn run_blocking<F>(mut out: EventSender, read: F) -> Result<SourceReport, SourceError>
where
    F: FnOnce(&mut EventSender, &mut SourceReport) -> Result<(), SourceError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut report = SourceReport::default();
        let result = read(&mut out, &mut report);
        out.flush_blocking();
        result.map(|()| report)
    })
    .await
    .map_err(|e| SourceError::Task(e.to_string()))?
}

/// How often a source following a growing input looks for more.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Holds a reader to at most `rate` events per second (none: no limit).
pub struct RateLimit {
    rate: Option<u64>,
    started: std::time::Instant,
    sent: u64,
}

impl RateLimit {
    pub fn new(rate: Option<u64>) -> RateLimit {
        RateLimit {
            rate: rate.filter(|r| *r > 0),
            started: std::time::Instant::now(),
            sent: 0,
        }
    }

    /// Waits (on this blocking thread) until the next event is due; what is queued in
    /// `out` is sent first, so the pace shows downstream.
    pub fn wait_blocking(&mut self, out: &mut EventSender) {
        if let Some(rate) = self.rate {
            let due = std::time::Duration::from_secs_f64(self.sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                out.flush_blocking();
                std::thread::sleep(wait);
            }
        }
        self.sent += 1;
    }
}

/// What a finished source reports for the run summary.
#[derive(Debug, Clone, Default)]
pub struct SourceReport {
    /// Snapshot scan counts, when the source read a snapshot.
    pub scan: Option<ScanStats>,
    /// Binlog items read.
    pub binlog_items: u64,
    /// Counted remarks on binlog commands.
    pub notes: BTreeMap<Note, u64>,
    /// Where a resumed read of each database would start.
    pub end_positions: BTreeMap<u32, BinlogOffset>,
    /// Damaged capture records passed over (`skip_corrupt`).
    pub skipped_records: u64,
    /// Expiries a late replay held back (see `crate::replay`).
    pub late_expiries: crate::replay::LateExpiryStats,
    /// Snapshot events of a capture left out because their key had expired at the
    /// moment read.
    pub expired_events: u64,
}

impl SourceReport {
    /// Adds what another part of the same source (a database of a live master) read.
    pub fn merge(&mut self, other: SourceReport) {
        match (&mut self.scan, other.scan) {
            (Some(mine), Some(theirs)) => mine.add(&theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
        self.binlog_items += other.binlog_items;
        for (note, n) in other.notes {
            *self.notes.entry(note).or_insert(0) += n;
        }
        self.end_positions.extend(other.end_positions);
        self.skipped_records += other.skipped_records;
        self.late_expiries.add(&other.late_expiries);
        self.expired_events += other.expired_events;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Binlog(#[from] BinlogError),
    #[error(transparent)]
    Replica(#[from] pika::ReplicaError),
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    #[error("source task failed: {0}")]
    Task(String),
}

#[async_trait]
pub trait Source: Send {
    /// A short description for logs (`snapshot ./dump/20261124`).
    fn describe(&self) -> String;
    /// Runs to the end of the input, or until the receiver of `out` is gone.
    async fn run(
        self: Box<Self>,
        out: EventSender,
        metrics: Metrics,
    ) -> Result<SourceReport, SourceError>;
}

/// Asks a source to stop reading; what it already read is still delivered.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// An event's place in the order its source queued it: 1 for the first event of the
/// run, 0 for none yet. Acknowledgements are counted in this order, never in positions:
/// positions of different Pika DBs come from different binlogs and do not compare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

/// A batch from the source: its events, and the order of the last one.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub last: Seq,
}

/// What every sink has acknowledged: the lowest order over all sinks (see
/// [`crate::sink::Sink::acknowledged`]); everything queued up to it is taken.
#[derive(Debug, Clone, Default)]
pub struct Acknowledged(Vec<watch::Receiver<Seq>>);

impl Acknowledged {
    pub fn new(sinks: Vec<watch::Receiver<Seq>>) -> Acknowledged {
        Acknowledged(sinks)
    }

    /// The order of the last event every sink has taken (0 with no sinks, as then
    /// nothing can be taken).
    pub fn seq(&self) -> Seq {
        self.0
            .iter()
            .map(|sink| *sink.borrow())
            .min()
            .unwrap_or_default()
    }

    /// Whether nothing reports acknowledgements (a reader outside a pipeline).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Per Pika DB, the position of the last event of each batch sent and not yet known to
/// be acknowledged, and of the last acknowledged one: how a source learns what the
/// sinks hold of each DB. One entry per batch in flight, so it stays as small as the
/// channels are.
#[derive(Debug, Default)]
struct DbPositions {
    /// Last positions per DB of the batch being gathered.
    gathering: Vec<(u32, Position)>,
    in_flight: VecDeque<(Seq, Vec<(u32, Position)>)>,
    acknowledged: BTreeMap<u32, Position>,
}

impl DbPositions {
    fn queued(&mut self, event: &Event) {
        match self.gathering.iter_mut().find(|(db, _)| *db == event.db) {
            Some((_, at)) => *at = event.position,
            None => self.gathering.push((event.db, event.position)),
        }
    }

    fn sent(&mut self, last: Seq) {
        let dbs = std::mem::take(&mut self.gathering);
        self.in_flight.push_back((last, dbs));
    }

    /// Moves every batch up to `acked` into the acknowledged positions.
    fn acknowledge(&mut self, acked: Seq) {
        while self
            .in_flight
            .front()
            .is_some_and(|(last, _)| *last <= acked)
        {
            if let Some((_, dbs)) = self.in_flight.pop_front() {
                self.acknowledged.extend(dbs);
            }
        }
    }
}

/// The run-wide count of events sent into the pipeline, held while a batch is numbered
/// and put in the channel: batches enter the channel in the order of their numbers even
/// when several senders share it.
type Sequencer = Arc<tokio::sync::Mutex<Seq>>;

/// The sending end of the event channel, batching events for a blocking reader. It
/// numbers the events it queues ([`Seq`]), which is the order acknowledgements count in.
/// Senders made by [`EventSender::share`] feed the same pipeline (a live source's
/// databases): each counts its own events, and the run-wide numbers their batches get
/// when sent are translated back.
pub struct EventSender {
    tx: mpsc::Sender<Batch>,
    batch: Vec<Event>,
    batch_bytes: usize,
    stop: StopSignal,
    acknowledged: Acknowledged,
    /// Order of the last event queued, counted by this sender.
    pushed: Seq,
    positions: DbPositions,
    sequencer: Sequencer,
    /// Batches sent and not known acknowledged: the run-wide number of each one's last
    /// event, and this sender's.
    numbered: VecDeque<(Seq, Seq)>,
    /// This sender's order of the last event known acknowledged.
    acked_here: Seq,
}

impl EventSender {
    pub fn new(tx: mpsc::Sender<Batch>, stop: StopSignal) -> EventSender {
        EventSender {
            tx,
            batch: Vec::with_capacity(BATCH_EVENTS),
            batch_bytes: 0,
            stop,
            acknowledged: Acknowledged::default(),
            pushed: Seq::default(),
            positions: DbPositions::default(),
            sequencer: Sequencer::default(),
            numbered: VecDeque::new(),
            acked_here: Seq::default(),
        }
    }

    /// Another sender into the same pipeline, with its own batch and count: what it
    /// queues is numbered run-wide when sent, so acknowledgements stay in one order.
    pub fn share(&self) -> EventSender {
        EventSender {
            tx: self.tx.clone(),
            batch: Vec::with_capacity(BATCH_EVENTS),
            batch_bytes: 0,
            stop: self.stop.clone(),
            acknowledged: self.acknowledged.clone(),
            pushed: Seq::default(),
            positions: DbPositions::default(),
            sequencer: self.sequencer.clone(),
            numbered: VecDeque::new(),
            acked_here: Seq::default(),
        }
    }

    /// A sender whose pipeline is gone: a placeholder while the real one is lent to a
    /// blocking task.
    pub fn closed() -> EventSender {
        let (tx, _) = mpsc::channel(1);
        EventSender::new(tx, StopSignal::default())
    }

    /// Lets the source see what the sinks have acknowledged.
    pub fn with_acknowledged(mut self, acknowledged: Acknowledged) -> EventSender {
        self.acknowledged = acknowledged;
        self
    }

    /// The order (this sender's) of the last event every sink has taken: every event
    /// queued up to it (compare with [`EventSender::pushed`]).
    pub fn acknowledged(&self) -> Seq {
        let run_wide = self.acknowledged.seq();
        self.numbered
            .iter()
            .take_while(|(sent, _)| *sent <= run_wide)
            .last()
            .map_or(self.acked_here, |(_, here)| *here)
    }

    /// The order of the last event queued (sent or not).
    pub fn pushed(&self) -> Seq {
        self.pushed
    }

    /// Per Pika DB, the position of the last event of that DB every sink has taken.
    pub fn acknowledged_positions(&mut self) -> &BTreeMap<u32, Position> {
        self.positions.acknowledge(self.acknowledged.seq());
        &self.positions.acknowledged
    }

    /// Forgets the batches known acknowledged.
    fn forget_acknowledged(&mut self) {
        let run_wide = self.acknowledged.seq();
        while let Some(&(sent, here)) = self.numbered.front() {
            if sent > run_wide {
                break;
            }
            self.acked_here = here;
            self.numbered.pop_front();
        }
        self.positions.acknowledge(run_wide);
    }

    /// Numbers the batch run-wide (`counter`: the sequencer, held) and records it.
    fn number(&mut self, batch: &mut Batch, counter: &mut Seq) {
        let n = batch.events.len() as u64;
        *counter = Seq(counter.0 + n);
        batch.last = *counter;
        if !self.acknowledged.is_empty() {
            self.numbered.push_back((*counter, self.pushed));
            self.positions.sent(*counter);
            self.forget_acknowledged();
        }
    }

    /// Whether every event queued so far has been acknowledged by every sink.
    pub fn all_acknowledged(&self) -> bool {
        self.pushed == Seq::default()
            || (self.batch.is_empty() && self.acknowledged() >= self.pushed)
    }

    /// Queues an event from async code; false when the source should stop. The event is
    /// kept either way.
    pub async fn push(&mut self, event: Event) -> bool {
        if self.queue(event) && !self.flush().await {
            return false;
        }
        !self.stop.is_stopped()
    }

    /// Sends what is queued from async code; false when the pipeline is gone.
    pub async fn flush(&mut self) -> bool {
        let Some(mut batch) = self.take_batch() else {
            return !self.tx.is_closed();
        };
        let sequencer = self.sequencer.clone();
        let mut counter = sequencer.lock().await;
        self.number(&mut batch, &mut counter);
        self.tx.send(batch).await.is_ok()
    }

    /// Adds `event` to the batch; true when the batch is full.
    fn queue(&mut self, event: Event) -> bool {
        self.pushed = Seq(self.pushed.0 + 1);
        self.positions.queued(&event);
        self.batch_bytes += event.memory_estimate();
        self.batch.push(event);
        self.batch.len() >= BATCH_EVENTS || self.batch_bytes >= BATCH_BYTES
    }

    fn take_batch(&mut self) -> Option<Batch> {
        if self.batch.is_empty() {
            return None;
        }
        self.batch_bytes = 0;
        // What is known acknowledged is forgotten as batches are numbered, so the record
        // of batches in flight stays small even for a source that never asks; without
        // anything acknowledging, there is nothing to record.
        if self.acknowledged.is_empty() {
            self.positions.gathering.clear();
        }
        Some(Batch {
            events: std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_EVENTS)),
            last: Seq::default(),
        })
    }

    /// Queues an event from a blocking thread; false when the source should stop (the
    /// pipeline is gone or a stop was asked for). The event is kept either way.
    pub fn push_blocking(&mut self, event: Event) -> bool {
        let full = self.queue(event);
        let sent = !full || self.flush_blocking();
        sent && !self.stop.is_stopped()
    }

    /// Sends what is queued from a blocking thread; false when the pipeline is gone.
    pub fn flush_blocking(&mut self) -> bool {
        let Some(mut batch) = self.take_batch() else {
            return !self.tx.is_closed();
        };
        let sequencer = self.sequencer.clone();
        let mut counter = sequencer.blocking_lock();
        self.number(&mut batch, &mut counter);
        self.tx.blocking_send(batch).is_ok()
    }

    /// For a source following a growing input that has caught up: sends what is queued
    /// and pauses; false when it should stop instead.
    pub fn wait_for_more_blocking(&mut self) -> bool {
        if !self.flush_blocking() || self.should_stop() {
            return false;
        }
        std::thread::sleep(FOLLOW_POLL);
        true
    }

    /// Whether the pipeline stopped listening (a sink failed).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether the source should stop: the pipeline stopped listening, or a stop was
    /// asked for.
    pub fn should_stop(&self) -> bool {
        self.tx.is_closed() || self.stop.is_stopped()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::event::Op;

    fn del(db: u32, offset: u64) -> Event {
        Event {
            db,
            source_db: db,
            key: Bytes::from_static(b"k"),
            data_type: None,
            op: Op::Command {
                argv: vec![Bytes::from_static(b"DEL"), Bytes::from_static(b"k")],
            },
            position: Position::Binlog {
                at: BinlogOffset::new(1, offset),
                logic_id: offset,
                term: 0,
            },
            exec_time: Some(0),
        }
    }

    #[test]
    fn per_db_positions_follow_the_order_and_forget_what_is_acknowledged() {
        let (tx, mut rx) = mpsc::channel(1024);
        let (acked, acked_rx) = watch::channel(Seq::default());
        let mut out = EventSender::new(tx, StopSignal::default())
            .with_acknowledged(Acknowledged::new(vec![acked_rx]));
        for (db, offset) in [(0, 9_000), (1, 50), (0, 9_100)] {
            out.push_blocking(del(db, offset));
        }
        out.flush_blocking();
        out.push_blocking(del(1, 60));
        out.flush_blocking();
        assert_eq!(rx.try_recv().unwrap().last, Seq(3));
        assert_eq!(rx.try_recv().unwrap().last, Seq(4));

        acked.send_replace(Seq(3));
        assert!(!out.all_acknowledged(), "DB 1's 1:60 is not taken");
        let positions = out.acknowledged_positions().clone();
        assert_eq!(positions[&0].binlog_offset(), BinlogOffset::new(1, 9_100));
        assert_eq!(positions[&1].binlog_offset(), BinlogOffset::new(1, 50));

        acked.send_replace(Seq(4));
        assert!(out.all_acknowledged());
        let positions = out.acknowledged_positions().clone();
        assert_eq!(positions[&1].binlog_offset(), BinlogOffset::new(1, 60));

        // A source that never asks: what is acknowledged is forgotten as it sends.
        for i in 0..1000 {
            out.push_blocking(del(i % 2, 100 + u64::from(i)));
            out.flush_blocking();
            acked.send_replace(out.pushed());
            let _ = rx.try_recv();
        }
        assert!(out.positions.in_flight.len() <= 1);
    }

    #[test]
    fn a_reader_outside_a_pipeline_records_nothing() {
        let (tx, _rx) = mpsc::channel(1024);
        let mut out = EventSender::new(tx, StopSignal::default());
        for i in 0..100 {
            out.push_blocking(del(0, i));
            out.flush_blocking();
        }
        assert_eq!(out.pushed(), Seq(100));
        assert!(out.positions.in_flight.is_empty());
        assert!(!out.all_acknowledged());
    }

    #[test]
    fn shared_senders_number_their_batches_in_channel_order_and_see_their_own_acks() {
        let (tx, mut rx) = mpsc::channel(16);
        let (acked, acked_rx) = watch::channel(Seq::default());
        let mut db0 = EventSender::new(tx, StopSignal::default())
            .with_acknowledged(Acknowledged::new(vec![acked_rx]));
        let mut db1 = db0.share();
        // db0 queues first but sends last: the channel order numbers the batches.
        db0.push_blocking(del(0, 900));
        db0.push_blocking(del(0, 950));
        db1.push_blocking(del(1, 10));
        db1.flush_blocking();
        db0.flush_blocking();
        let (first, second) = (rx.try_recv().unwrap(), rx.try_recv().unwrap());
        assert_eq!((first.events[0].db, first.last), (1, Seq(1)));
        assert_eq!((second.events[0].db, second.last), (0, Seq(3)));
        assert_eq!((db0.pushed(), db1.pushed()), (Seq(2), Seq(1)));

        // The sinks took db1's batch only.
        acked.send_replace(Seq(1));
        assert!(db1.all_acknowledged());
        assert!(!db0.all_acknowledged());
        assert_eq!(db0.acknowledged(), Seq(0));
        acked.send_replace(Seq(3));
        assert!(db0.all_acknowledged());
        assert_eq!(db0.acknowledged(), Seq(2));
        let positions = db0.acknowledged_positions().clone();
        assert_eq!(positions[&0].binlog_offset(), BinlogOffset::new(1, 950));
    }
}
