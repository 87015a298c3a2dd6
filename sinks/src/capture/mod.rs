//! The `capture` sink: records the event stream into a capture directory
//! (`core::capture`), rotating files by size, to replay later with the `capture` source.
//! Each batch is flushed (a reader following the capture sees it), and the files are
//! made durable at rotation and at the end.

use std::path::PathBuf;

use async_trait::async_trait;
use pika_migrate_core::capture::writer::CaptureWriter;
use pika_migrate_core::capture::CaptureError;
use pika_migrate_core::event::Event;
use pika_migrate_core::sink::{Sink, SinkError, SinkReport};
use serde::Deserialize;

fn default_rotate_mb() -> u64 {
    256
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSinkConfig {
    /// The capture directory (created if needed; appended to if it exists).
    pub path: PathBuf,
    /// A new file is started once the current one passes this size.
    #[serde(default = "default_rotate_mb")]
    pub rotate_mb: u64,
}

pub struct CaptureSink {
    writer: CaptureWriter,
    events: u64,
}

impl CaptureSink {
    pub fn open(config: &CaptureSinkConfig) -> Result<CaptureSink, CaptureError> {
        Ok(CaptureSink {
            writer: CaptureWriter::open(&config.path, config.rotate_mb.max(1) << 20)?,
            events: 0,
        })
    }
}

#[async_trait]
impl Sink for CaptureSink {
    fn name(&self) -> String {
        format!("capture {}", self.writer.dir().display())
    }

    async fn write(&mut self, batch: Vec<Event>) -> Result<(), SinkError> {
        let name = self.name();
        for event in &batch {
            self.writer
                .append(event)
                .map_err(|e| SinkError::new(&name, Some(event.position), e))?;
        }
        self.events += batch.len() as u64;
        self.writer
            .flush()
            .map_err(|e| SinkError::new(&name, batch.last().map(|e| e.position), e))
    }

    async fn finish(&mut self) -> Result<SinkReport, SinkError> {
        let name = self.name();
        self.writer
            .sync()
            .map_err(|e| SinkError::new(&name, None, e))?;
        Ok(SinkReport {
            lines: vec![format!("{name}: {} events recorded", self.events)],
        })
    }
}
