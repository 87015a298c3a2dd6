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
use crate::source::{Acknowledged, EventSender, Source, SourceError, SourceReport, StopSignal};
use crate::status::{Stage, Status};

/// Batches buffered between the source and the pipeline, and before each sink.
const CHANNEL_BATCHES: usize = 16;
/// How often an idle sink task asks its sink what the target has acknowledged.
const ACK_POLL: Duration = Duration::from_millis(10);

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub totals: MetricsSnapshot,
    pub elapsed: Duration,
    pub source: SourceReport,
    pub sinks: Vec<(String, SinkReport)>,
    /// Position of the last event every sink acknowledged.
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

/// One source feeding sinks.
pub struct Pipeline {
    pub source: Box<dyn Source>,
    pub sinks: Vec<Box<dyn Sink>>,
    pub metrics: Metrics,
    /// Stops the source; everything it read is still written before `run` returns.
    pub stop: StopSignal,
    pub filters: FilterChain,
}

impl Pipeline {
    pub fn new(source: Box<dyn Source>, sinks: Vec<Box<dyn Sink>>) -> Pipeline {
        Pipeline {
            source,
            sinks,
            metrics: Metrics::default(),
            stop: StopSignal::default(),
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
        let (tx, mut rx) = mpsc::channel::<Vec<Event>>(CHANNEL_BATCHES);
        tracing::info!(source = %self.source.describe(), sinks = self.sinks.len(), "pipeline starting");

        let mut lanes = Vec::new();
        let mut tasks = Vec::new();
        let mut acks = Vec::new();
        let status = self.metrics.status().clone();
        status.set_stage(Stage::Reading);
        for sink in self.sinks {
            let (lane_tx, lane_rx) = mpsc::channel::<Arc<Vec<Event>>>(CHANNEL_BATCHES);
            let (ack_tx, ack_rx) = watch::channel(None);
            lanes.push(lane_tx);
            acks.push(ack_rx);
            let slot = status.add_sink(sink.name());
            let report = (status.clone(), slot);
            tasks.push(tokio::spawn(drive_sink(sink, lane_rx, ack_tx, report)));
        }
        // What the source sees as acknowledged: a batch is done once the sinks took
        // what the filters left of it, so dropped events do not hold the source back.
        let (done_tx, done_rx) = watch::channel(None);
        let (passed_tx, passed_rx) = mpsc::channel(CHANNEL_BATCHES * 4);
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
                match rx.recv().await {
                    Some(batch) => filtering.push_back(start_filtering(&filters, batch)),
                    None => source_done = true,
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
            if let Some(last_in) = last_in {
                let last_out = batch.last().map(|e| e.position);
                let _ = passed_tx.send((last_out, last_in)).await;
            }
            if batch.is_empty() {
                if filter_error.is_some() {
                    break;
                }
                continue;
            }
            self.metrics.count(&batch);
            // The last sink is sent the batch itself: alone, it then owns it outright.
            let batch = Arc::new(batch);
            if let Some((final_lane, others)) = lanes.split_last() {
                for lane in others {
                    if lane.send(Arc::clone(&batch)).await.is_err() {
                        sink_gone = true;
                    }
                }
                if final_lane.send(batch).await.is_err() {
                    sink_gone = true;
                }
            }
            if sink_gone || filter_error.is_some() {
                break;
            }
        }
        drop(filtering);
        drop(rx);
        drop(lanes);
        drop(passed_tx);

        let mut sinks = Vec::new();
        let mut last_position: Option<Position> = None;
        let mut first_error = None;
        for task in tasks {
            match task.await.map_err(|e| PipelineError::Task(e.to_string()))? {
                Ok((name, report, last)) => {
                    last_position = match (last_position, last) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
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
            last_position,
        })
    }
}

/// One sink's task: writes every batch in order and publishes what the target has
/// acknowledged, after each batch and, while idle, every [`ACK_POLL`].
async fn drive_sink(
    mut sink: Box<dyn Sink>,
    mut batches: mpsc::Receiver<Arc<Vec<Event>>>,
    acknowledged: watch::Sender<Option<Position>>,
    (status, slot): (Status, usize),
) -> Result<(String, SinkReport, Option<Position>), SinkError> {
    let mut last = None;
    let mut written = 0;
    let mut poll = tokio::time::interval(ACK_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            batch = batches.recv() => match batch {
                Some(batch) => {
                    // A copy only when another sink still holds the same batch.
                    let batch = Arc::unwrap_or_clone(batch);
                    last = batch.last().map(|e| e.position).or(last);
                    written = batch.len();
                    sink.write(batch).await?;
                }
                None => break,
            },
            _ = poll.tick() => {}
        }
        let now = sink.acknowledged(last);
        if acknowledged.send_if_modified(|p| std::mem::replace(p, now) != now) || written > 0 {
            status.sink_wrote(slot, std::mem::take(&mut written), now);
        }
    }
    let report = sink.finish().await?;
    acknowledged.send_replace(last);
    status.sink_wrote(slot, 0, last);
    Ok((sink.name(), report, last))
}

/// Turns the sinks' acknowledged positions into the source's: each batch the source
/// sent is done once every sink acknowledged the last event the filters left of it
/// (at once when they left none), and then counts as done up to its last input event.
async fn track_batches(
    mut batches: mpsc::Receiver<(Option<Position>, Position)>,
    sinks: Acknowledged,
    done: watch::Sender<Option<Position>>,
) {
    let mut pending: std::collections::VecDeque<(Option<Position>, Position)> =
        std::collections::VecDeque::new();
    let mut poll = tokio::time::interval(ACK_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    loop {
        tokio::select! {
            b = batches.recv(), if open => match b {
                Some(b) => pending.push_back(b),
                None => open = false,
            },
            _ = poll.tick() => {}
        }
        let acked = sinks.position();
        while let Some(&(out, input)) = pending.front() {
            if out.is_some_and(|o| acked.is_none_or(|a| a < o)) {
                break;
            }
            done.send_replace(Some(input));
            pending.pop_front();
        }
    }
}

type Filtered = (Vec<Event>, Option<Position>, Result<usize, FilterError>);

/// A batch going through the filters: done at once when there are none.
enum FilterTask {
    Done(Vec<Event>, Option<Position>, Result<usize, FilterError>),
    Running(tokio::task::JoinHandle<Filtered>),
}

fn start_filtering(filters: &Arc<FilterChain>, mut batch: Vec<Event>) -> FilterTask {
    let last_in = batch.last().map(|e| e.position);
    if filters.is_empty() {
        return FilterTask::Done(batch, last_in, Ok(0));
    }
    let filters = filters.clone();
    FilterTask::Running(tokio::task::spawn_blocking(move || {
        let outcome = filters.apply(&mut batch);
        (batch, last_in, outcome)
    }))
}
