//! What a run is doing right now, for the status endpoint and the progress bar: the
//! source's stage and positions (a live replica fills them in), each sink's counts and
//! acknowledged position, errors, and how long the sinks take to acknowledge what the
//! master sends. Cheap to update; read as a [`StatusReport`], or as Prometheus text
//! (written by `prometheus-client`, the exposition crate of the Prometheus project).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
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
    pub const ALL: [Stage; 7] = [
        Stage::Starting,
        Stage::Connecting,
        Stage::FullSyncTransfer,
        Stage::FullSyncLoad,
        Stage::Streaming,
        Stage::Reading,
        Stage::Stopped,
    ];

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
    /// (0 when caught up). Pika logs write times in whole seconds.
    pub lag_seconds: u64,
    /// Milliseconds since the oldest item not yet acknowledged by every sink arrived
    /// from the master (0 when caught up).
    pub lag_ms: u64,
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
    /// The oldest unacknowledged item: its exec_time, and when it arrived.
    oldest_unacked: Option<(u32, Instant)>,
    /// Per sink: when its rate was last computed, and its event count then.
    rate_samples: Vec<(Instant, u64)>,
}

/// How long a rate is averaged over.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// Upper bounds of the acknowledgement latency buckets, in seconds: 1 ms to 60 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Shared handle on a run's status.
#[derive(Debug, Clone)]
pub struct Status {
    inner: Arc<Mutex<Inner>>,
    /// Seconds from a binlog item's arrival to its acknowledgement by every sink.
    ack_latency: Histogram,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            inner: Arc::default(),
            ack_latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Status {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not take the status down with it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
    /// many items wait for the sinks, and the oldest of them (its write time on the
    /// master, and when it arrived).
    pub fn set_stream(
        &self,
        master_sent: Option<BinlogOffset>,
        unacked: usize,
        oldest: Option<(u32, Instant)>,
    ) {
        let mut s = self.lock();
        if let Some(sent) = master_sent {
            s.report.master_sent = Some(sent.to_string());
        }
        s.report.lag_items = unacked as u64;
        s.oldest_unacked = oldest;
    }

    /// Records how long an item took from its arrival to its acknowledgement by every
    /// sink.
    pub fn acked_after(&self, latency: Duration) {
        self.ack_latency.observe(latency.as_secs_f64());
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
        if let Some((exec, arrived)) = s.oldest_unacked {
            r.lag_seconds = unix_now().saturating_sub(u64::from(exec));
            r.lag_ms = u64::try_from(arrived.elapsed().as_millis()).unwrap_or(u64::MAX);
        }
        r
    }

    /// Prometheus text of `report` (taken from this status) and of the latency
    /// histogram, every name prefixed `pika_migrate_`.
    pub fn prometheus(&self, report: StatusReport) -> String {
        let mut registry = Registry::with_prefix("pika_migrate");
        registry.register_with_unit(
            "ack_latency",
            "time from a binlog item's arrival from the master to its acknowledgement by every sink",
            Unit::Seconds,
            self.ack_latency.clone(),
        );
        registry.register_collector(Box::new(ReportCollector(report)));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// The numbers of one [`StatusReport`], encoded at scrape time.
#[derive(Debug)]
struct ReportCollector(StatusReport);

fn offset_value(p: &Option<String>) -> Option<(u64, u64)> {
    let (f, o) = p.as_deref()?.split_once(':')?;
    Some((f.parse().ok()?, o.split(':').next()?.parse().ok()?))
}

impl Collector for ReportCollector {
    fn encode(&self, mut out: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let r = &self.0;
        let mut gauge = |name: &str, help: &str, unit: Option<Unit>, v: u64| {
            let metric = ConstGauge::new(v);
            let e = out.encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
            metric.encode(e)
        };
        if let Some((f, o)) = offset_value(&r.position) {
            gauge(
                "position_filenum",
                "binlog file of our acknowledged position",
                None,
                f,
            )?;
            gauge(
                "position_offset",
                "binlog offset of our acknowledged position",
                None,
                o,
            )?;
        }
        if let Some((f, o)) = offset_value(&r.master_sent) {
            gauge(
                "master_sent_filenum",
                "binlog file of the last item the master sent",
                None,
                f,
            )?;
            gauge(
                "master_sent_offset",
                "binlog offset of the last item the master sent",
                None,
                o,
            )?;
        }
        gauge(
            "lag_items",
            "items received and not yet acknowledged by every sink",
            None,
            r.lag_items,
        )?;
        gauge(
            "lag",
            "age of the oldest item not yet acknowledged by every sink, since the master wrote it",
            Some(Unit::Seconds),
            r.lag_seconds,
        )?;
        gauge(
            "lag_milliseconds",
            "time since the oldest item not yet acknowledged by every sink arrived",
            None,
            r.lag_ms,
        )?;
        gauge(
            "dump",
            "bytes of the full-sync dump received",
            Some(Unit::Bytes),
            r.dump_bytes,
        )?;
        gauge(
            "keys_done",
            "snapshot keys sent to the sinks",
            None,
            r.keys_done,
        )?;
        gauge(
            "keys_expected",
            "snapshot keys the dump holds (estimate)",
            None,
            r.keys_total,
        )?;

        let stage = ConstGauge::new(0i64);
        let mut e = out.encode_descriptor(
            "stage",
            "1 for the stage the run is in, 0 for the others",
            None,
            stage.metric_type(),
        )?;
        for s in Stage::ALL {
            let labels = [("stage", s.as_str())];
            ConstGauge::new(i64::from(r.stage == s)).encode(e.encode_family(&labels)?)?;
        }

        let mut counter = |name: &str, help: &str, v: u64| {
            let metric = ConstCounter::new(v);
            let e = out.encode_descriptor(name, help, None, MetricType::Counter)?;
            metric.encode(e)
        };
        counter("events", "events read from the source", r.events)?;
        counter(
            "errors",
            "interruptions recovered from (lost links, busy master)",
            r.errors,
        )?;

        let mut e = out.encode_descriptor(
            "sink_events",
            "events handed to each sink",
            None,
            MetricType::Counter,
        )?;
        for sink in &r.sinks {
            let labels = [("sink", sink.name.as_str())];
            ConstCounter::new(sink.events).encode(e.encode_family(&labels)?)?;
        }
        Ok(())
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
        let arrived = Instant::now() - Duration::from_millis(1500);
        s.set_stream(Some(BinlogOffset::new(1, 600000)), 12, Some((1, arrived)));
        s.acked_after(Duration::from_millis(3));
        s.acked_after(Duration::from_millis(300));
        let i = s.add_sink("redis r".into());
        s.sink_wrote(i, 5, None);
        let r = s.report(3, 2, 9);
        assert_eq!(r.keys_total, 3);
        assert_eq!(r.lag_items, 12);
        assert!(r.lag_seconds > 1_000_000);
        assert!((1500..10_000).contains(&r.lag_ms), "{}", r.lag_ms);
        let text = s.prometheus(r.clone());
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
        assert!(
            text.contains("pika_migrate_ack_latency_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pika_migrate_ack_latency_seconds_count 2"),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["stage"], "streaming");
    }
}
