//! The file sink: events written to a file (or standard output with `path: "-"`) as
//! Redis commands in RESP, loadable with `redis-cli --pipe`, or as JSON lines in the
//! documented envelope. Output streams as it goes; nothing is held back.

use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use pika_migrate_core::event::{Event, Position};
use pika_migrate_core::resp::encode_command;
use pika_migrate_core::sink::{Sink, SinkError, SinkReport};
use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use crate::encode::commands::{event_resp, ConflictStats, TypeConflict};
use crate::encode::envelope::envelope;

/// `type: file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Output file, created or truncated; `-` for standard output.
    pub path: PathBuf,
    /// `resp` (Redis commands) or `jsonl` (one JSON envelope per line).
    pub format: FileFormat,
    /// For `resp`: what to do with a key that exists as several types.
    #[serde(default)]
    pub type_conflict: TypeConflict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Resp,
    Jsonl,
}

#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct FileSink {
    config: FileSinkConfig,
    out: Box<dyn AsyncWrite + Send + Unpin>,
    buf: Vec<u8>,
    commands: Vec<Vec<Bytes>>,
    /// Database the RESP stream currently writes to (a reader starts in db 0).
    selected_db: u32,
    conflicts: ConflictStats,
    bytes_written: u64,
}

impl FileSink {
    pub async fn open(config: FileSinkConfig) -> Result<FileSink, FileSinkError> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = if config.path.as_os_str() == "-" {
            Box::new(tokio::io::stdout())
        } else {
            let file = tokio::fs::File::create(&config.path)
                .await
                .map_err(|source| FileSinkError::Io {
                    path: config.path.clone(),
                    source,
                })?;
            Box::new(file)
        };
        Ok(FileSink {
            config,
            out: Box::new(BufWriter::with_capacity(1 << 20, out)),
            buf: Vec::with_capacity(1 << 20),
            commands: Vec::new(),
            selected_db: 0,
            conflicts: ConflictStats::default(),
            bytes_written: 0,
        })
    }

    fn encode(&mut self, event: Event) {
        match self.config.format {
            FileFormat::Jsonl => {
                // Writing JSON into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut self.buf, &envelope(&event));
                self.buf.push(b'\n');
            }
            FileFormat::Resp => {
                if event.db != self.selected_db {
                    encode_command(
                        &mut self.buf,
                        &[b"SELECT".as_slice(), event.db.to_string().as_bytes()],
                    );
                    self.selected_db = event.db;
                }
                event_resp(
                    event,
                    self.config.type_conflict,
                    &mut self.conflicts,
                    &mut self.commands,
                    &mut self.buf,
                );
            }
        }
    }

    fn error(&self, position: Option<Position>, source: std::io::Error) -> SinkError {
        SinkError::new(
            self.name(),
            position,
            FileSinkError::Io {
                path: self.config.path.clone(),
                source,
            },
        )
    }
}

#[async_trait]
impl Sink for FileSink {
    fn name(&self) -> String {
        format!("file {}", self.config.path.display())
    }

    async fn write(&mut self, batch: Vec<Event>) -> Result<(), SinkError> {
        self.buf.clear();
        let first = batch.first().map(|e| e.position);
        for event in batch {
            self.encode(event);
        }
        if let Err(e) = self.out.write_all(&self.buf).await {
            return Err(self.error(first, e));
        }
        self.bytes_written += self.buf.len() as u64;
        if let Err(e) = self.out.flush().await {
            return Err(self.error(first, e));
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<SinkReport, SinkError> {
        if let Err(e) = self.out.shutdown().await {
            return Err(self.error(None, e));
        }
        let mut lines = vec![format!(
            "{}: {} bytes written",
            self.name(),
            self.bytes_written
        )];
        if self.conflicts.skipped > 0 {
            lines.push(format!(
                "{}: {} (key, type) pairs skipped: the key holds another type first (type_conflict: first-wins)",
                self.name(),
                self.conflicts.skipped
            ));
        }
        if self.conflicts.renamed > 0 {
            lines.push(format!(
                "{}: {} (key, type) pairs written as key:<type>",
                self.name(),
                self.conflicts.renamed
            ));
        }
        Ok(SinkReport { lines })
    }
}
