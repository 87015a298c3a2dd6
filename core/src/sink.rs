//! The contract between the pipeline and a sink. A sink receives ordered batches.
//! `write` takes a batch over (it may still be in flight at the target when `write`
//! returns, which is what lets a sink pipeline); `finish` returns only when everything
//! written is as durable at the target as that target allows. A failure surfaces at
//! the next `write` or at `finish`.

use async_trait::async_trait;

use crate::event::{Event, Position};

/// Boxed error of a sink's own kind.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A sink failure, naming the sink and the first event it could not write.
#[derive(Debug, thiserror::Error)]
#[error("sink {sink}{}: {source}", position.map(|p| format!(" at {p}")).unwrap_or_default())]
pub struct SinkError {
    pub sink: String,
    pub position: Option<Position>,
    #[source]
    pub source: BoxError,
}

impl SinkError {
    pub fn new(
        sink: impl Into<String>,
        position: Option<Position>,
        source: impl Into<BoxError>,
    ) -> SinkError {
        SinkError {
            sink: sink.into(),
            position,
            source: source.into(),
        }
    }
}

/// Lines a sink adds to the run summary.
#[derive(Debug, Clone, Default)]
pub struct SinkReport {
    pub lines: Vec<String>,
}

#[async_trait]
pub trait Sink: Send {
    /// Name used in logs, metrics and errors (`file ./out.resp`).
    fn name(&self) -> String;
    /// Takes `batch` over, in order after every earlier batch. The sink owns it, so it
    /// can move keys and values on to its target without copying or counting them again.
    async fn write(&mut self, batch: Vec<Event>) -> Result<(), SinkError>;
    /// How many of the batches handed to `write` (`written` so far, counted from 1) the
    /// target has durably taken, all of the first ones. Counted in batches, never in
    /// positions: events of several Pika DBs interleave and their positions do not
    /// compare. A live source acks its master and checkpoints with what every sink took,
    /// so this must never run ahead of the target. Sinks done with a batch once `write`
    /// returns keep the default.
    fn acknowledged(&mut self, written: u64) -> u64 {
        written
    }
    /// Flushes everything and releases the target.
    async fn finish(&mut self) -> Result<SinkReport, SinkError>;
    /// The event databases (`Event::db`, after the filters) this sink can write, when
    /// it cannot write every one (a Redis of `databases 16` behind a url of database 2
    /// takes 0..14). A run checks its source's databases against it before anything is
    /// written.
    fn databases(&self) -> Option<std::ops::Range<u32>> {
        None
    }
    /// Asked while the sink is idle as well as between batches: an error when the sink
    /// failed for good (its next `write` or `finish` would return it), so a run stops
    /// even with nothing to write; else what is wrong now that it is riding out (a
    /// target it keeps reconnecting to), for the status.
    async fn health(&mut self) -> Result<Option<String>, SinkError> {
        Ok(None)
    }
}
