//! Sources of change events. Each runs until its input is exhausted (offline sources)
//! or it is stopped, sending batches into a bounded channel: a slow consumer slows the
//! source, it never grows memory.

pub mod binlog;
pub mod snapshot;

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::event::{BinlogOffset, Event};
use crate::pika::binlog::BinlogError;
use crate::pika::storage::{ScanStats, StorageError};
use crate::pipeline::Metrics;

/// Events per batch handed to the pipeline.
pub const BATCH_EVENTS: usize = 256;

/// What a finished source reports for the run summary.
#[derive(Debug, Clone, Default)]
pub struct SourceReport {
    /// Snapshot scan counts, when the source read a snapshot.
    pub scan: Option<ScanStats>,
    /// Binlog items read.
    pub binlog_items: u64,
    /// Counted remarks on binlog commands (see `pika::normalize::Note`), by name.
    pub notes: BTreeMap<&'static str, u64>,
    /// Where a resumed read would start.
    pub end_position: Option<BinlogOffset>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Binlog(#[from] BinlogError),
    #[error("source task failed: {0}")]
    Task(String),
}

#[async_trait]
pub trait Source: Send {
    /// A short description for logs (`snapshot ./dump/20261124`).
    fn describe(&self) -> String;
    /// Runs to the end of the input, or until the receiver of `out` is gone.
    async fn run(self: Box<Self>, out: EventSender, metrics: Metrics) -> Result<SourceReport, SourceError>;
}

/// The sending end of the event channel, batching events for a blocking reader.
pub struct EventSender {
    tx: mpsc::Sender<Vec<Event>>,
    batch: Vec<Event>,
}

impl EventSender {
    pub fn new(tx: mpsc::Sender<Vec<Event>>) -> EventSender {
        EventSender {
            tx,
            batch: Vec::with_capacity(BATCH_EVENTS),
        }
    }

    /// Queues an event from a blocking thread; false when the pipeline is gone.
    pub fn push_blocking(&mut self, event: Event) -> bool {
        self.batch.push(event);
        self.batch.len() < BATCH_EVENTS || self.flush_blocking()
    }

    /// Sends what is queued from a blocking thread; false when the pipeline is gone.
    pub fn flush_blocking(&mut self) -> bool {
        if self.batch.is_empty() {
            return !self.tx.is_closed();
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_EVENTS));
        self.tx.blocking_send(batch).is_ok()
    }

    /// Whether the pipeline stopped listening.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
