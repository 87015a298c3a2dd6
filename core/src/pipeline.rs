//! Wires a source to its sinks: events flow one way through bounded channels; each
//! sink runs in its own task, so a slow sink slows the source instead of growing memory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::event::{DataType, Event, Position};
use crate::filter::{FilterChain, FilterError};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::sink::{Sink, SinkError, SinkReport};
use crate::source::{
    Acknowledged, Batch, EventSender, Seq, Source, SourceError, SourceReport, StopSignal,
};
use crate::status::{Stage, Status};

/// Batches buffered between the source and the pipeline, and before each sink.
const CHANNEL_BATCHES: usize = 16;
/// How often an idle sink task asks its sink what the target has acknowledged.
const ACK_POLL: Duration = Duration::from_millis(10);
/// How often acknowledgements are looked for while writes wait for theirs: the ack of
/// a binlog item passes three such loops (sink task, batch tracking, the stream), and
/// at 10 ms each they were most of a streaming p99 above 100 ms. Idle, none of them
/// ticks this fast.
pub(crate) const FAST_ACK_POLL: Duration = Duration::from_millis(1);

/// An interval of `period` that does not burst after ticks were missed (while a
/// faster one was not polled).
pub(crate) fn ack_interval(period: Duration) -> tokio::time::Interval {
    let mut poll = tokio::time::interval(period);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub totals: MetricsSnapshot,
    pub elapsed: Duration,
    pub source: SourceReport,
    pub sinks: Vec<(String, SinkReport)>,
    /// Position of the last event every sink acknowledged (the last in the source's
    /// order, whichever Pika DB it is of).
    pub last_position: Option<Position>,
}

impl RunReport {
    /// The one-line summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let mut parts = Vec::new();
        if t.keys > 0 || self.source.scan.is_some() {
            let by_type: Vec<String> = DataType::TYPE_ORDER
                .iter()
                .zip(t.keys_by_type)
                // Streams only when there are some: most dumps (all before 3.5) have none.
                .filter(|(ty, n)| **ty != DataType::Stream || *n > 0)
                .map(|(ty, n)| format!("{n} {ty}"))
                .collect();
            parts.push(format!("{} keys ({})", t.keys, by_type.join(", ")));
        }
        if t.commands > 0 || self.source.binlog_items > 0 {
            parts.push(format!(
                "{} commands from {} binlog items",
                t.commands, self.source.binlog_items
            ));
        }
        if t.filtered > 0 {
            parts.push(format!("{} events filtered out", t.filtered));
        }
        let secs = self.elapsed.as_secs_f64();
        format!(
            "done: {}; {} events, {:.1} MiB in {:.2} s",
            if parts.is_empty() {
                "nothing to do".to_owned()
            } else {
                parts.join(", ")
            },
            t.events,
            t.bytes as f64 / (1 << 20) as f64,
            secs
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Filter(#[from] crate::filter::FilterError),
    #[error("pipeline task failed: {0}")]
    Task(String),
}

/// Holds a running pipeline's events back from its sinks, and lets them go again.
/// While paused nothing is applied; the source fills its bounded channel and waits (a
/// live replica keeps its link to the master up and acks nothing, so the master keeps
/// its binlog).
#[derive(Debug, Clone)]
pub struct PauseSwitch(Arc<watch::Sender<bool>>);

impl Default for PauseSwitch {
    fn default() -> Self {
        PauseSwitch(Arc::new(watch::Sender::new(false)))
    }
}

impl PauseSwitch {
    pub fn set(&self, paused: bool) {
        self.0.send_replace(paused);
    }

    pub fn is_paused(&self) -> bool {
        *self.0.borrow()
    }

    /// Returns once the pipeline is not paused.
    async fn resumed(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|paused| !paused).await;
    }

    /// Returns once a pause is asked for.
    async fn requested(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|paused| *paused).await;
    }

    /// While paused: waits for the sinks to apply everything handed to them before
    /// (`handed`), says so in the status, and returns once resumed.
    async fn hold(&self, sinks: &Acknowledged, handed: Seq, status: &Status) {
        if !self.is_paused() {
            return;
        }
        tracing::info!("pausing: the sinks finish what they were handed, then nothing is applied until resumed");
        while sinks.seq() < handed && self.is_paused() {
            tokio::time::sleep(ACK_POLL).await;
        }
        status.set_paused(self.is_paused());
        self.resumed().await;
        status.set_paused(false);
        tracing::info!("resumed");
    }
}

/// One source feeding sinks.
pub struct Pipeline {
    pub source: Box<dyn Source>,
    pub sinks: Vec<Box<dyn Sink>>,
    pub metrics: Metrics,
    /// Stops the source; everything it read is still written before `run` returns.
    pub stop: StopSignal,
    /// Pauses and resumes what is handed to the sinks.
    pub pause: PauseSwitch,
    pub filters: FilterChain,
}

impl Pipeline {
    pub fn new(source: Box<dyn Source>, sinks: Vec<Box<dyn Sink>>) -> Pipeline {
        Pipeline {
            source,
            sinks,
            metrics: Metrics::default(),
            stop: StopSignal::default(),
            pause: PauseSwitch::default(),
            filters: FilterChain::default(),
        }
    }

    pub fn with_filters(mut self, filters: FilterChain) -> Pipeline {
        self.filters = filters;
        self
    }

    /// Runs until the source is exhausted and every sink has finished.
    pub async fn run(mut self) -> Result<RunReport, PipelineError> {
        let started = Instant::now();
        let (tx, mut rx) = mpsc::channel::<Batch>(CHANNEL_BATCHES);
        tracing::info!(source = %self.source.describe(), sinks = self.sinks.len(), "pipeline starting");

        let mut lanes = Vec::new();
        let mut tasks = Vec::new();
        let mut acks = Vec::new();
        let status = self.metrics.status().clone();
        status.set_stage(Stage::Reading);
        // A sink that fails wakes the fan-out even while the source sends nothing, so
        // the run stops at once rather than at the next batch.
        let sink_failed = Arc::new(tokio::sync::Notify::new());
        for sink in self.sinks {
            let (lane_tx, lane_rx) = mpsc::channel::<ToSink>(CHANNEL_BATCHES);
            let (ack_tx, ack_rx) = watch::channel(Seq::default());
            lanes.push(lane_tx);
            acks.push(ack_rx);
            let slot = status.add_sink(sink.name());
            let report = (status.clone(), slot);
            let failed = sink_failed.clone();
            tasks.push(tokio::spawn(async move {
                let outcome = drive_sink(sink, lane_rx, ack_tx, report.clone()).await;
                if let Err(e) = &outcome {
                    report.0.sink_failed(report.1, &e.to_string());
                    failed.notify_one();
                }
                outcome
            }));
        }
        // What the source sees as acknowledged: a batch is done once the sinks took
        // what the filters left of it, so dropped events do not hold the source back.
        let (done_tx, done_rx) = watch::channel(Seq::default());
        let (passed_tx, passed_rx) = mpsc::channel(CHANNEL_BATCHES * 4);
        // What every sink has taken, for a pause to wait on.
        let sinks_acked = Acknowledged::new(acks.clone());
        let mut last_handed = Seq::default();
        let tracker = tokio::spawn(track_batches(passed_rx, Acknowledged::new(acks), done_tx));
        let out = EventSender::new(tx, self.stop.clone())
            .with_acknowledged(Acknowledged::new(vec![done_rx]));
        let source_task = tokio::spawn(self.source.run(out, self.metrics.clone()));

        let mut sink_gone = false;
        let mut filter_error = None;
        // Filters run on blocking threads, several batches at once, and their results
        // are taken in order: the stream keeps its order without one thread doing all.
        let filters = Arc::new(std::mem::take(&mut self.filters));
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut filtering: VecDeque<FilterTask> = VecDeque::new();
        let mut source_done = false;
        loop {
            if filtering.is_empty() {
                self.pause.hold(&sinks_acked, last_handed, &status).await;
                tokio::select! {
                    got = rx.recv() => match got {
                        Some(batch) => filtering.push_back(start_filtering(&filters, batch)),
                        None => source_done = true,
                    },
                    // Paused while waiting for the source: held at the top of the loop.
                    () = self.pause.requested() => continue,
                    _ = sink_failed.notified() => {
                        sink_gone = true;
                        break;
                    }
                }
            }
            while !source_done && filtering.len() < parallel {
                match rx.try_recv() {
                    Ok(batch) => filtering.push_back(start_filtering(&filters, batch)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => source_done = true,
                }
            }
            let Some(next) = filtering.pop_front() else {
                break;
            };
            let (batch, last_in, outcome) = match next {
                FilterTask::Done(b, l, o) => (b, l, o),
                FilterTask::Running(task) => task
                    .await
                    .map_err(|e| PipelineError::Task(format!("filters: {e}")))?,
            };
            let dropped = match outcome {
                Ok(n) => n,
                Err(e) => {
                    filter_error = Some(e);
                    0
                }
            };
            self.metrics.count_filtered(dropped);
            let _ = passed_tx.send((!batch.is_empty(), last_in)).await;
            if batch.is_empty() {
                if filter_error.is_some() {
                    break;
                }
                continue;
            }
            // Paused: nothing more reaches the sinks until resumed.
            self.pause.hold(&sinks_acked, last_handed, &status).await;
            last_handed = last_in;
            self.metrics.count(&batch);
            // The last sink is sent the batch itself: alone, it then owns it outright.
            let batch = Arc::new(batch);
            if let Some((final_lane, others)) = lanes.split_last() {
                for lane in others {
                    if lane.send((last_in, Arc::clone(&batch))).await.is_err() {
                        sink_gone = true;
                    }
                }
                if final_lane.send((last_in, batch)).await.is_err() {
                    sink_gone = true;
                }
            }
            if sink_gone || filter_error.is_some() {
                break;
            }
        }
        if sink_gone {
            // Nothing more can be delivered: the source stops (a live one saves what
            // the sinks took).
            self.stop.stop();
        }
        drop(filtering);
        drop(rx);
        drop(lanes);
        drop(passed_tx);

        let mut sinks = Vec::new();
        let mut last: Option<(Seq, Option<Position>)> = None;
        let mut first_error = None;
        for task in tasks {
            match task.await.map_err(|e| PipelineError::Task(e.to_string()))? {
                Ok((name, report, taken)) => {
                    // The sink that took the least, in the source's order.
                    last = Some(last.map_or(taken, |l| l.min(taken)));
                    sinks.push((name, report));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let source = source_task
            .await
            .map_err(|e| PipelineError::Task(e.to_string()))?;
        self.metrics.status().set_stage(Stage::Stopped);
        tracker.abort();
        if let Some(e) = first_error {
            return Err(e.into());
        }
        if let Some(e) = filter_error {
            return Err(PipelineError::Filter(e));
        }
        let source = source?;
        Ok(RunReport {
            totals: self.metrics.snapshot(),
            elapsed: started.elapsed(),
            source,
            sinks,
            last_position: last.and_then(|(_, p)| p),
        })
    }
}

/// What the fan-out hands a sink task: a batch, with the order of the last event the
/// source sent in it (the filters may have left fewer).
type ToSink = (Seq, Arc<Vec<Event>>);

/// One sink's task: writes every batch in order and publishes the order the target has
/// acknowledged, after each batch and, while idle, every [`ACK_POLL`]. The sink counts
/// in batches; this task turns its count back into the source's order.
async fn drive_sink(
    mut sink: Box<dyn Sink>,
    mut batches: mpsc::Receiver<ToSink>,
    acknowledged: watch::Sender<Seq>,
    (status, slot): (Status, usize),
) -> Result<(String, SinkReport, (Seq, Option<Position>)), SinkError> {
    // Batches written and not yet acknowledged: their number, order and last position.
    let mut unacked: VecDeque<(u64, Seq, Option<Position>)> = VecDeque::new();
    let mut taken: (Seq, Option<Position>) = (Seq::default(), None);
    let mut last = taken;
    let mut batches_written = 0;
    let mut written = 0;
    let mut poll = ack_interval(ACK_POLL);
    let mut fast = ack_interval(FAST_ACK_POLL);
    loop {
        tokio::select! {
            batch = batches.recv() => match batch {
                Some((seq, batch)) => {
                    // A copy only when another sink still holds the same batch.
                    let batch = Arc::unwrap_or_clone(batch);
                    batches_written += 1;
                    last = (seq, batch.last().map(|e| e.position).or(last.1));
                    unacked.push_back((batches_written, last.0, last.1));
                    written = batch.len();
                    sink.write(batch).await?;
                }
                None => break,
            },
            _ = poll.tick() => {}
            _ = fast.tick(), if !unacked.is_empty() => {}
        }
        // A sink failed for good ends the run now, even with nothing to write; one
        // riding out a problem shows it in the status.
        let trouble = sink.health().await?;
        status.sink_trouble(slot, trouble);
        let acked_batches = sink.acknowledged(batches_written);
        while let Some(&(number, seq, position)) = unacked.front() {
            if number > acked_batches {
                break;
            }
            taken = (seq, position);
            unacked.pop_front();
        }
        let now = taken.0;
        if acknowledged.send_if_modified(|p| std::mem::replace(p, now) != now) || written > 0 {
            status.sink_wrote(slot, std::mem::take(&mut written), taken.1);
        }
    }
    let report = sink.finish().await?;
    acknowledged.send_replace(last.0);
    status.sink_wrote(slot, 0, last.1);
    Ok((sink.name(), report, last))
}

/// Turns the sinks' acknowledged order into the source's: each batch the source sent
/// is done once every sink acknowledged it (at once when the filters left nothing of
/// it to send), and then counts as done up to its last input event.
async fn track_batches(
    mut batches: mpsc::Receiver<(bool, Seq)>,
    sinks: Acknowledged,
    done: watch::Sender<Seq>,
) {
    let mut pending: VecDeque<(bool, Seq)> = VecDeque::new();
    let mut poll = ack_interval(ACK_POLL);
    let mut fast = ack_interval(FAST_ACK_POLL);
    let mut open = true;
    loop {
        tokio::select! {
            b = batches.recv(), if open => match b {
                Some(b) => pending.push_back(b),
                None => open = false,
            },
            _ = poll.tick() => {}
            _ = fast.tick(), if !pending.is_empty() => {}
        }
        let acked = sinks.seq();
        while let Some(&(sent, input)) = pending.front() {
            if sent && acked < input {
                break;
            }
            done.send_replace(input);
            pending.pop_front();
        }
    }
}

type Filtered = (Vec<Event>, Seq, Result<usize, FilterError>);

/// A batch going through the filters: done at once when there are none.
enum FilterTask {
    Done(Vec<Event>, Seq, Result<usize, FilterError>),
    Running(tokio::task::JoinHandle<Filtered>),
}

fn start_filtering(filters: &Arc<FilterChain>, batch: Batch) -> FilterTask {
    let (mut batch, last_in) = (batch.events, batch.last);
    if filters.is_empty() {
        return FilterTask::Done(batch, last_in, Ok(0));
    }
    let filters = filters.clone();
    FilterTask::Running(tokio::task::spawn_blocking(move || {
        let outcome = filters.apply(&mut batch);
        // A binlog command's arguments are slices of the 64 KiB block it was read
        // from: once filters dropped some, the few kept would each hold a whole block
        // while queued, so they get their own copies.
        if matches!(outcome, Ok(dropped) if dropped > 0) {
            batch.iter_mut().for_each(Event::own_command_bytes);
        }
        (batch, last_in, outcome)
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::event::{BinlogOffset, Op};

    /// A binlog SET of Pika DB `db` ending at offset `offset` of binlog file 1.
    fn set(db: u32, offset: u64) -> Event {
        let key = Bytes::from(format!("k{offset}"));
        Event {
            db,
            source_db: db,
            key: key.clone(),
            data_type: Some(DataType::String),
            op: Op::Command {
                argv: vec![Bytes::from_static(b"SET"), key, Bytes::from_static(b"v")],
            },
            position: binlog(offset),
            exec_time: Some(0),
        }
    }

    fn binlog(offset: u64) -> Position {
        Position::Binlog {
            at: BinlogOffset::new(1, offset),
            logic_id: offset,
            term: 0,
        }
    }

    /// What the source sees: the order acknowledged, whether all it queued is, and the
    /// last acknowledged position per DB.
    type Seen = (Seq, bool, BTreeMap<u32, Position>);

    /// Sends its batches, then answers each ask with what it sees until asks end.
    struct Scripted {
        batches: Vec<Vec<Event>>,
        asks: mpsc::Receiver<()>,
        answers: mpsc::Sender<Seen>,
    }

    #[async_trait]
    impl Source for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }

        async fn run(
            mut self: Box<Self>,
            mut out: EventSender,
            _metrics: Metrics,
        ) -> Result<SourceReport, SourceError> {
            for batch in std::mem::take(&mut self.batches) {
                for event in batch {
                    out.push(event).await;
                }
                out.flush().await;
            }
            while self.asks.recv().await.is_some() {
                let positions = out.acknowledged_positions().clone();
                let seen = (out.acknowledged(), out.all_acknowledged(), positions);
                let _ = self.answers.send(seen).await;
            }
            Ok(SourceReport::default())
        }
    }

    /// Acknowledges no more batches than the test lets it (`u64::MAX`: all at once).
    struct Gated(Arc<AtomicU64>);

    #[async_trait]
    impl Sink for Gated {
        fn name(&self) -> String {
            "gated".into()
        }
        async fn write(&mut self, _batch: Vec<Event>) -> Result<(), SinkError> {
            Ok(())
        }
        fn acknowledged(&mut self, written: u64) -> u64 {
            written.min(self.0.load(Ordering::SeqCst))
        }
        async fn finish(&mut self) -> Result<SinkReport, SinkError> {
            self.0.store(u64::MAX, Ordering::SeqCst);
            Ok(SinkReport::default())
        }
    }

    /// Asks the source until what it sees has `acked` acknowledged.
    async fn seen_at(
        asks: &mpsc::Sender<()>,
        answers: &mut mpsc::Receiver<Seen>,
        acked: Seq,
    ) -> Seen {
        for _ in 0..500 {
            asks.send(()).await.unwrap();
            let seen = answers.recv().await.unwrap();
            if seen.0 >= acked {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the source never saw {acked:?} acknowledged");
    }

    #[tokio::test]
    async fn acknowledgement_follows_the_push_order_across_pika_dbs() {
        // DB 1's binlog is far behind DB 0's: its positions are all lower, yet it is
        // the later events that are acknowledged later.
        let batches = vec![
            vec![set(0, 10_000), set(1, 100), set(0, 10_100)],
            vec![set(1, 200), set(1, 300)],
        ];
        let (ask_tx, asks) = mpsc::channel(1);
        let (answers, mut answer_rx) = mpsc::channel(1);
        let gate = Arc::new(AtomicU64::new(0));
        let source = Scripted {
            batches,
            asks,
            answers,
        };
        let eager = Gated(Arc::new(AtomicU64::new(u64::MAX)));
        let sinks: Vec<Box<dyn Sink>> = vec![Box::new(eager), Box::new(Gated(gate.clone()))];
        let run = tokio::spawn(Pipeline::new(Box::new(source), sinks).run());

        // Nothing acknowledged by the gated sink: nothing for the source.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (acked, all, positions) = seen_at(&ask_tx, &mut answer_rx, Seq(0)).await;
        assert_eq!((acked, all), (Seq(0), false));
        assert!(positions.is_empty(), "{positions:?}");

        // The first batch: its three events, not the two after, though DB 0's
        // position there is above every position of DB 1.
        gate.store(1, Ordering::SeqCst);
        let (acked, all, positions) = seen_at(&ask_tx, &mut answer_rx, Seq(3)).await;
        assert_eq!(acked, Seq(3));
        assert!(!all, "the second batch is not acknowledged yet");
        assert_eq!(
            positions,
            BTreeMap::from([(0, binlog(10_100)), (1, binlog(100))])
        );

        gate.store(2, Ordering::SeqCst);
        let (acked, all, positions) = seen_at(&ask_tx, &mut answer_rx, Seq(5)).await;
        assert_eq!(acked, Seq(5));
        assert!(all);
        assert_eq!(
            positions,
            BTreeMap::from([(0, binlog(10_100)), (1, binlog(300))])
        );

        drop(ask_tx);
        let report = run.await.unwrap().unwrap();
        assert_eq!(report.last_position, Some(binlog(300)), "the last in order");
    }
}
