//! The contract between the pipeline and a sink. A sink receives ordered batches and
//! returns from `write` only when the batch is as durable at its target as that target
//! allows; the pipeline's checkpoint never runs ahead of it.

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
    pub fn new(sink: impl Into<String>, position: Option<Position>, source: impl Into<BoxError>) -> SinkError {
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
    /// Writes `batch` in order; returns once it is durable at the target.
    async fn write(&mut self, batch: &[Event]) -> Result<(), SinkError>;
    /// Flushes everything and releases the target.
    async fn finish(&mut self) -> Result<SinkReport, SinkError>;
}
