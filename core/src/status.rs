//! What a run is doing right now, for the status endpoint and the progress bar: the
//! source's stage and positions (a live replica fills them in), each sink's counts and
//! acknowledged position, and errors. Cheap to update; read as a [`StatusReport`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::event::{BinlogOffset, Position};

/// Where a source stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Starting,
    Connecting,
    FullSyncTransfer,
    FullSyncLoad,
    Streaming,
    /// Reading files (snapshot, binlog) rather than a live master.
    Reading,
    Stopped,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Starting => "starting",
            Stage::Connecting => "connecting",
            Stage::FullSyncTransfer => "full_sync_transfer",
            Stage::FullSyncLoad => "full_sync_load",
            Stage::Streaming => "streaming",
            Stage::Reading => "reading",
            Stage::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkStatus {
    pub name: String,
    /// Events handed to the sink.
    pub events: u64,
    /// The last position the target acknowledged.
    pub acknowledged: Option<String>,
    /// Events handed to the sink per second, over the last few seconds.
    pub events_per_second: f64,
}

/// A copy of the status at one moment (the JSON of `GET /status`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusReport {
    pub stage: Stage,
    pub master: Option<String>,
    /// Our position: everything before it is acknowledged by every sink (and acked to
    /// the master).
    pub position: Option<String>,
    /// The last position the master sent us.
    pub master_sent: Option<String>,
    /// Items received and not yet acknowledged by every sink.
    pub lag_items: u64,
    /// Seconds between now and the write time of the oldest item not yet acknowledged
    /// (0 when caught up).
    pub lag_seconds: u64,
    /// Bytes of the dump received so far (full sync).
    pub dump_bytes: u64,
    pub keys_done: u64,
    pub keys_total: u64,
    pub events: u64,
    pub sinks: Vec<SinkStatus>,
    /// Interruptions recovered from (lost links, busy master).
    pub errors: u64,
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    report: StatusReport,
    /// exec_time of the oldest unacknowledged item.
    oldest_unacked_exec: Option<u32>,
    /// Per sink: when its rate was last computed, and its event count then.
    rate_samples: Vec<(std::time::Instant, u64)>,
}

/// How long a rate is averaged over.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

/// Shared handle on a run's status.
#[derive(Debug, Clone, Default)]
pub struct Status(Arc<Mutex<Inner>>);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Status {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the status down with it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_stage(&self, stage: Stage) {
        self.lock().report.stage = stage;
    }

    pub fn stage(&self) -> Stage {
        self.lock().report.stage
    }

    pub fn set_master(&self, master: &str) {
        self.lock().report.master = Some(master.to_owned());
    }

    pub fn set_position(&self, at: BinlogOffset) {
        self.lock().report.position = Some(at.to_string());
    }

    pub fn set_dump_bytes(&self, bytes: u64) {
        self.lock().report.dump_bytes = bytes;
    }

    /// The stream's state after receiving or acking: the master's last sent offset, how
    /// many items wait for the sinks, and the write time of the oldest of them.
    pub fn set_stream(
        &self,
        master_sent: Option<BinlogOffset>,
        unacked: usize,
        oldest_exec: Option<u32>,
    ) {
        let mut s = self.lock();
        if let Some(sent) = master_sent {
            s.report.master_sent = Some(sent.to_string());
        }
        s.report.lag_items = unacked as u64;
        s.oldest_unacked_exec = oldest_exec;
    }

    pub fn error(&self, e: &str) {
        let mut s = self.lock();
        s.report.errors += 1;
        s.report.last_error = Some(e.to_owned());
    }

    pub fn add_sink(&self, name: String) -> usize {
        let mut s = self.lock();
        s.report.sinks.push(SinkStatus {
            name,
            ..SinkStatus::default()
        });
        s.report.sinks.len() - 1
    }

    pub fn sink_wrote(&self, sink: usize, events: usize, acknowledged: Option<Position>) {
        let mut s = self.lock();
        if let Some(st) = s.report.sinks.get_mut(sink) {
            st.events += events as u64;
            st.acknowledged = acknowledged.map(|p| p.to_string());
        }
    }

    /// The status now; `keys`/`events` come from the pipeline's counters.
    pub fn report(&self, keys_done: u64, keys_total: u64, events: u64) -> StatusReport {
        let mut s = self.lock();
        let inner = &mut *s;
        let now = std::time::Instant::now();
        inner
            .rate_samples
            .resize(inner.report.sinks.len(), (now, 0));
        for (sink, sample) in inner.report.sinks.iter_mut().zip(&mut inner.rate_samples) {
            let elapsed = now.duration_since(sample.0);
            if elapsed >= RATE_WINDOW {
                sink.events_per_second = (sink.events - sample.1) as f64 / elapsed.as_secs_f64();
                *sample = (now, sink.events);
            }
        }
        let mut r = s.report.clone();
        r.keys_done = keys_done;
        r.keys_total = keys_total.max(keys_done);
        r.events = events;
        r.lag_seconds = s
            .oldest_unacked_exec
            .map_or(0, |t| unix_now().saturating_sub(u64::from(t)));
        r
    }
}

impl StatusReport {
    /// Prometheus text exposition of the numbers an operator graphs.
    pub fn prometheus(&self) -> String {
        fn offset_value(p: &Option<String>) -> Option<(u64, u64)> {
            let (f, o) = p.as_deref()?.split_once(':')?;
            Some((f.parse().ok()?, o.split(':').next()?.parse().ok()?))
        }
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, labels: &str, v: u64| {
            out.push_str(&format!(
                "# HELP pika_migrate_{name} {help}\n# TYPE pika_migrate_{name} gauge\npika_migrate_{name}{labels} {v}\n"
            ));
        };
        for stage in [
            Stage::Starting,
            Stage::Connecting,
            Stage::FullSyncTransfer,
            Stage::FullSyncLoad,
            Stage::Streaming,
            Stage::Reading,
            Stage::Stopped,
        ] {
            gauge(
                "stage",
                "1 for the stage the run is in",
                &format!("{{stage=\"{}\"}}", stage.as_str()),
                u64::from(self.stage == stage),
            );
        }
        if let Some((f, o)) = offset_value(&self.position) {
            gauge(
                "position_filenum",
                "binlog file of our acknowledged position",
                "",
                f,
            );
            gauge(
                "position_offset",
                "binlog offset of our acknowledged position",
                "",
                o,
            );
        }
        if let Some((f, o)) = offset_value(&self.master_sent) {
            gauge(
                "master_sent_filenum",
                "binlog file of the last item the master sent",
                "",
                f,
            );
            gauge(
                "master_sent_offset",
                "binlog offset of the last item the master sent",
                "",
                o,
            );
        }
        gauge(
            "lag_items",
            "items received and not yet acknowledged by every sink",
            "",
            self.lag_items,
        );
        gauge(
            "lag_seconds",
            "age of the oldest unacknowledged item",
            "",
            self.lag_seconds,
        );
        gauge(
            "dump_bytes",
            "bytes of the full-sync dump received",
            "",
            self.dump_bytes,
        );
        gauge(
            "keys_done",
            "snapshot keys sent to the sinks",
            "",
            self.keys_done,
        );
        gauge("keys_total", "snapshot keys expected", "", self.keys_total);
        gauge(
            "events_total",
            "events read from the source",
            "",
            self.events,
        );
        gauge(
            "errors_total",
            "interruptions recovered from",
            "",
            self.errors,
        );
        for s in &self.sinks {
            let label = format!("{{sink=\"{}\"}}", s.name.replace('"', "'"));
            gauge(
                "sink_events_total",
                "events handed to the sink",
                &label,
                s.events,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_lag_and_renders_prometheus() {
        let s = Status::default();
        s.set_stage(Stage::Streaming);
        s.set_master("127.0.0.1:9221");
        s.set_position(BinlogOffset::new(1, 507340));
        s.set_stream(Some(BinlogOffset::new(1, 600000)), 12, Some(1));
        let i = s.add_sink("redis r".into());
        s.sink_wrote(i, 5, None);
        let r = s.report(3, 2, 9);
        assert_eq!(r.keys_total, 3);
        assert_eq!(r.lag_items, 12);
        assert!(r.lag_seconds > 1_000_000);
        let text = r.prometheus();
        assert!(
            text.contains("pika_migrate_stage{stage=\"streaming\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pika_migrate_position_offset 507340"),
            "{text}"
        );
        assert!(
            text.contains("pika_migrate_master_sent_offset 600000"),
            "{text}"
        );
        assert!(
            text.contains("pika_migrate_sink_events_total{sink=\"redis r\"} 5"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["stage"], "streaming");
    }
}
