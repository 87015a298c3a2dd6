//! The blackhole sink: takes every event, counts it and its bytes, and discards it.
//! Every event written is acknowledged, so a live replica acks its master as if a
//! target had applied it. It measures a source and its filters alone (what Vector's
//! `blackhole` sink is for), or, with `rate`, stands in for a slow target.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use pika_migrate_core::event::Event;
use pika_migrate_core::sink::{Sink, SinkError, SinkReport};
use serde::Deserialize;

/// `type: blackhole`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeSinkConfig {
    /// Log the counts so far every this many seconds (0 or absent: only at the end).
    #[serde(default)]
    pub print_interval_secs: u64,
    /// Take at most this many events per second, as a slow target would (absent: as
    /// fast as they come).
    #[serde(default)]
    pub rate: Option<u64>,
}

pub struct BlackholeSink {
    config: BlackholeSinkConfig,
    events: u64,
    /// Payload bytes (keys and values), as the run's own byte count measures them.
    bytes: u64,
    started: Instant,
    last_print: Instant,
}

impl BlackholeSink {
    pub fn new(config: BlackholeSinkConfig) -> BlackholeSink {
        let now = Instant::now();
        BlackholeSink {
            config,
            events: 0,
            bytes: 0,
            started: now,
            last_print: now,
        }
    }

    /// The counts as the summary and the periodic log word them.
    fn counts(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let per_sec = if secs > 0.0 {
            self.events as f64 / secs
        } else {
            0.0
        };
        format!(
            "{} events, {} bytes ({:.1} MiB) discarded in {secs:.2} s ({per_sec:.0} events/s)",
            self.events,
            self.bytes,
            self.bytes as f64 / (1 << 20) as f64,
        )
    }

    /// With `rate`, waits until the events taken so far are due.
    async fn hold_to_rate(&self) {
        let Some(rate) = self.config.rate.filter(|r| *r > 0) else {
            return;
        };
        let due = Duration::from_secs_f64(self.events as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[async_trait]
impl Sink for BlackholeSink {
    fn name(&self) -> String {
        "blackhole".into()
    }

    async fn write(&mut self, batch: Vec<Event>) -> Result<(), SinkError> {
        self.events = self.events.saturating_add(batch.len() as u64);
        let bytes: u64 = batch.iter().map(|e| e.payload_bytes() as u64).sum();
        self.bytes = self.bytes.saturating_add(bytes);
        drop(batch);
        self.hold_to_rate().await;
        let every = self.config.print_interval_secs;
        if every > 0 && self.last_print.elapsed() >= Duration::from_secs(every) {
            self.last_print = Instant::now();
            tracing::info!("blackhole: {}", self.counts());
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<SinkReport, SinkError> {
        Ok(SinkReport {
            lines: vec![format!("blackhole: {}", self.counts())],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use pika_migrate_core::event::{BinlogOffset, Op, Position};

    fn command(i: u64) -> Event {
        Event {
            db: 0,
            source_db: 0,
            key: Bytes::from_static(b"key"),
            data_type: None,
            op: Op::Command {
                argv: vec![Bytes::from_static(b"DEL"), Bytes::from_static(b"key")],
            },
            position: Position::Binlog {
                at: BinlogOffset::new(1, i),
                logic_id: i,
                term: 0,
            },
            exec_time: Some(0),
        }
    }

    #[tokio::test]
    async fn counts_acknowledges_and_holds_to_its_rate() {
        let mut sink = BlackholeSink::new(BlackholeSinkConfig {
            print_interval_secs: 0,
            rate: Some(200),
        });
        let started = Instant::now();
        for batch in 0..4 {
            sink.write((0..25).map(|i| command(batch * 25 + i)).collect())
                .await
                .unwrap();
        }
        // 100 events at 200/s: the last batch is due after 0.5 s.
        assert!(started.elapsed() >= Duration::from_millis(450));
        assert_eq!(
            sink.acknowledged(4),
            4,
            "every batch written is acknowledged"
        );
        let report = sink.finish().await.unwrap();
        // Each event: key (3) + DEL (3) + key (3).
        assert!(
            report.lines[0].starts_with("blackhole: 100 events, 900 bytes (0.0 MiB) discarded"),
            "{:?}",
            report.lines
        );
    }
}
