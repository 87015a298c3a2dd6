//! What a run is doing right now, for the status endpoint and the progress bar: the
//! source's stage and positions (a live replica fills them in), each sink's counts and
//! acknowledged position, errors, and how long the sinks take to acknowledge what the
//! master sends. Cheap to update; read as a [`StatusReport`], or as Prometheus text
//! (written by the `prometheus` crate, in the text format Prometheus scrapes).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};
use serde::Serialize;

use crate::event::{BinlogOffset, Position};

/// Where a source stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Starting,
    Connecting,
    /// Waiting for a full-sync turn (`max_parallel_full_syncs`): another master on the
    /// same host, or too many in the fleet, is sending its dump.
    FullSyncWaiting,
    FullSyncTransfer,
    FullSyncLoad,
    Streaming,
    /// Reading files (snapshot, binlog) rather than a live master.
    Reading,
    Stopped,
}

impl Stage {
    /// How far a database has come: the run as a whole is as far as its least advanced
    /// database.
    fn progress(self) -> u8 {
        match self {
            Stage::Starting => 0,
            Stage::Connecting => 1,
            Stage::FullSyncWaiting => 2,
            Stage::FullSyncTransfer => 3,
            Stage::FullSyncLoad => 4,
            Stage::Streaming => 5,
            Stage::Reading => 6,
            Stage::Stopped => 7,
        }
    }

    pub const ALL: [Stage; 8] = [
        Stage::Starting,
        Stage::Connecting,
        Stage::FullSyncWaiting,
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
            Stage::FullSyncWaiting => "full_sync_waiting",
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
    /// What keeps the sink from writing now (a target it keeps reconnecting to), or
    /// why it failed; none while it writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether it failed for good (the run is stopping).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
}

/// Where one database of a live master stands.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DbReport {
    pub stage: Stage,
    /// Everything of this database before it is acknowledged by every sink.
    pub position: Option<String>,
    /// The last position of this database the master sent us.
    pub master_sent: Option<String>,
    pub lag_items: u64,
    pub lag_seconds: u64,
    pub lag_ms: u64,
    pub dump_bytes: u64,
}

/// A copy of the status at one moment (the JSON of `GET /status`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatusReport {
    /// The process answering: a restarted run is another one.
    pub pid: u32,
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
    /// Each database of a live master (the figures above sum them up: the stage of the
    /// least advanced, the lag of the most behind; the positions when there is one).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dbs: BTreeMap<u32, DbReport>,
    /// Paused by an operator (`pika-migrate pause`): nothing is applied, the link to a
    /// live master stays up.
    pub paused: bool,
    /// Why the run ended in failure (a fleet's other sources may go on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    report: StatusReport,
    /// The oldest unacknowledged item: its exec_time, and when it arrived.
    oldest_unacked: Option<(u32, Instant)>,
    /// Per sink: when its rate was last computed, and its event count then.
    rate_samples: Vec<(Instant, u64)>,
    /// Per database: its oldest unacknowledged item.
    oldest_by_db: BTreeMap<u32, (u32, Instant)>,
}

impl Inner {
    /// Updates database `db`'s figures with `change`, then the run's from all of them.
    fn update_db(&mut self, db: u32, change: impl FnOnce(&mut DbReport)) {
        change(self.report.dbs.entry(db).or_default());
        let r = &mut self.report;
        let dbs = &r.dbs;
        let least = dbs.values().map(|d| d.stage).min_by_key(|s| s.progress());
        let single = (dbs.len() == 1).then(|| dbs.values().next()).flatten();
        let position = single.and_then(|d| d.position.clone());
        let master_sent = single.and_then(|d| d.master_sent.clone());
        let lag_items = dbs.values().map(|d| d.lag_items).sum();
        let dump_bytes = dbs.values().map(|d| d.dump_bytes).sum();
        if let Some(least) = least {
            r.stage = least;
        }
        (r.position, r.master_sent, r.lag_items, r.dump_bytes) =
            (position, master_sent, lag_items, dump_bytes);
        self.oldest_unacked = self
            .oldest_by_db
            .values()
            .min_by_key(|(_, at)| *at)
            .copied();
    }
}

/// How long a rate is averaged over.
const RATE_WINDOW: Duration = Duration::from_secs(2);

/// Upper bounds of the acknowledgement latency buckets, in seconds: 1 ms to 60 s, fine
/// between 10 and 100 ms where a streaming p99 is judged (10, 25, 50, 75 ms).
const LATENCY_BUCKETS: [f64; 18] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.025, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0,
    30.0, 60.0,
];

/// Shared handle on a run's status.
#[derive(Debug, Clone)]
pub struct Status {
    inner: Arc<Mutex<Inner>>,
    /// Seconds from a binlog item's arrival to its acknowledgement by every sink
    /// (`None` only if the prometheus crate refused our constant options).
    ack_latency: Option<Histogram>,
    /// The database this handle reports for (a live master's), if any.
    db: Option<u32>,
}

impl Default for Status {
    fn default() -> Self {
        let opts = HistogramOpts::new(
            "ack_latency_seconds",
            "time from a binlog item's arrival from the master to its acknowledgement by every sink",
        )
        .buckets(LATENCY_BUCKETS.to_vec());
        Status {
            inner: Arc::default(),
            ack_latency: Histogram::with_opts(opts).ok(),
            db: None,
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

    /// A handle whose stage, positions, lag and dump bytes are database `db`'s; the
    /// run's figures are then computed over every database.
    pub fn for_db(&self, db: u32) -> Status {
        Status {
            db: Some(db),
            ..self.clone()
        }
    }

    pub fn set_stage(&self, stage: Stage) {
        match self.db {
            Some(db) => self.lock().update_db(db, |d| d.stage = stage),
            None => self.lock().report.stage = stage,
        }
    }

    pub fn stage(&self) -> Stage {
        self.lock().report.stage
    }

    pub fn set_master(&self, master: &str) {
        self.lock().report.master = Some(master.to_owned());
    }

    pub fn set_position(&self, at: BinlogOffset) {
        match self.db {
            Some(db) => self
                .lock()
                .update_db(db, |d| d.position = Some(at.to_string())),
            None => self.lock().report.position = Some(at.to_string()),
        }
    }

    pub fn set_dump_bytes(&self, bytes: u64) {
        match self.db {
            Some(db) => self.lock().update_db(db, |d| d.dump_bytes = bytes),
            None => self.lock().report.dump_bytes = bytes,
        }
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
        let Some(db) = self.db else {
            if let Some(sent) = master_sent {
                s.report.master_sent = Some(sent.to_string());
            }
            s.report.lag_items = unacked as u64;
            s.oldest_unacked = oldest;
            return;
        };
        match oldest {
            Some(o) => s.oldest_by_db.insert(db, o),
            None => s.oldest_by_db.remove(&db),
        };
        s.update_db(db, |d| {
            if let Some(sent) = master_sent {
                d.master_sent = Some(sent.to_string());
            }
            d.lag_items = unacked as u64;
        });
    }

    /// Records how long an item took from its arrival to its acknowledgement by every
    /// sink.
    pub fn acked_after(&self, latency: Duration) {
        if let Some(h) = &self.ack_latency {
            h.observe(latency.as_secs_f64());
        }
    }

    /// Paused (nothing is handed to the sinks) or running.
    pub fn set_paused(&self, paused: bool) {
        self.lock().report.paused = paused;
    }

    /// The run ended in failure, for `why`.
    pub fn set_failed(&self, why: &str) {
        let mut s = self.lock();
        s.report.failed = Some(why.to_owned());
        s.report.last_error = Some(why.to_owned());
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

    /// What keeps sink `sink` from writing now (`None`: nothing). A new problem counts
    /// as an error of the run and is its last one.
    pub fn sink_trouble(&self, sink: usize, trouble: Option<String>) {
        let mut s = self.lock();
        let Some(st) = s.report.sinks.get_mut(sink) else {
            return;
        };
        if st.failed || st.error == trouble {
            return;
        }
        let began = st.error.is_none();
        st.error = trouble.clone();
        if let (true, Some(t)) = (began, trouble) {
            s.report.errors += 1;
            s.report.last_error = Some(format!("{}: {t}", s.report.sinks[sink].name));
        }
    }

    /// Sink `sink` failed for good with `error`.
    pub fn sink_failed(&self, sink: usize, error: &str) {
        let mut s = self.lock();
        let Some(st) = s.report.sinks.get_mut(sink) else {
            return;
        };
        st.failed = true;
        st.error = Some(error.to_owned());
        s.report.errors += 1;
        s.report.last_error = Some(error.to_owned());
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
        r.pid = std::process::id();
        r.keys_done = keys_done;
        r.keys_total = keys_total.max(keys_done);
        r.events = events;
        if let Some((exec, arrived)) = s.oldest_unacked {
            (r.lag_seconds, r.lag_ms) = lags(exec, arrived);
        }
        for (db, d) in &mut r.dbs {
            if let Some(&(exec, arrived)) = s.oldest_by_db.get(db) {
                (d.lag_seconds, d.lag_ms) = lags(exec, arrived);
            }
        }
        r
    }

    /// Prometheus text of `report` (taken from this status) and of the latency
    /// histogram, every name prefixed `pika_migrate_`.
    pub fn prometheus(&self, report: &StatusReport) -> String {
        match self.families(report, None) {
            Ok(families) => encode(&families),
            Err(e) => format!("# metrics unavailable: {e}\n"),
        }
    }

    /// The metric families of `report` and of the latency histogram, each series
    /// labelled `source="<name>"` when a name is given (one source of a fleet).
    pub fn families(
        &self,
        report: &StatusReport,
        source: Option<&str>,
    ) -> prometheus::Result<Vec<prometheus::proto::MetricFamily>> {
        let labels =
            source.map(|name| std::collections::HashMap::from([("source".into(), name.into())]));
        let registry = Registry::new_custom(Some("pika_migrate".into()), labels)?;
        if let Some(h) = &self.ack_latency {
            registry.register(Box::new(h.clone()))?;
        }
        report.register(&registry)?;
        Ok(registry.gather())
    }
}

/// Prometheus text of `families`.
pub fn encode(families: &[prometheus::proto::MetricFamily]) -> String {
    let mut out = Vec::new();
    match prometheus::TextEncoder::new().encode(families, &mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => format!("# metrics unavailable: {e}\n"),
    }
}

/// Seconds since the master wrote an item, and milliseconds since it arrived.
fn lags(exec_time: u32, arrived: Instant) -> (u64, u64) {
    (
        unix_now().saturating_sub(u64::from(exec_time)),
        u64::try_from(arrived.elapsed().as_millis()).unwrap_or(u64::MAX),
    )
}

fn offset_value(p: &Option<String>) -> Option<(i64, i64)> {
    let (f, o) = p.as_deref()?.split_once(':')?;
    Some((f.parse().ok()?, o.split(':').next()?.parse().ok()?))
}

/// A value from outside (a count, a byte total) as a Prometheus integer.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl StatusReport {
    /// Registers the report's numbers, as they are now, with `registry`.
    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        let gauge = |name: &str, help: &str, v: i64| -> prometheus::Result<()> {
            let g = IntGauge::new(name, help)?;
            g.set(v);
            registry.register(Box::new(g))
        };
        gauge(
            "paused",
            "1 while an operator has paused the run (nothing is applied)",
            i64::from(self.paused),
        )?;
        if let Some((f, o)) = offset_value(&self.position) {
            gauge(
                "position_filenum",
                "binlog file of our acknowledged position",
                f,
            )?;
            gauge(
                "position_offset",
                "binlog offset of our acknowledged position",
                o,
            )?;
        }
        if let Some((f, o)) = offset_value(&self.master_sent) {
            gauge(
                "master_sent_filenum",
                "binlog file of the last item the master sent",
                f,
            )?;
            gauge(
                "master_sent_offset",
                "binlog offset of the last item the master sent",
                o,
            )?;
        }
        gauge(
            "lag_items",
            "items received and not yet acknowledged by every sink",
            int(self.lag_items),
        )?;
        let lag = Gauge::new(
            "lag_seconds",
            "time since the oldest item not yet acknowledged by every sink arrived from the master",
        )?;
        lag.set(self.lag_ms as f64 / 1000.0);
        registry.register(Box::new(lag))?;
        gauge(
            "master_write_lag_seconds",
            "age of the oldest item not yet acknowledged by every sink since the master wrote it (whole seconds)",
            int(self.lag_seconds),
        )?;
        gauge(
            "dump_received_bytes",
            "bytes of the full-sync dump received",
            int(self.dump_bytes),
        )?;
        gauge(
            "keys_done",
            "snapshot keys sent to the sinks",
            int(self.keys_done),
        )?;
        gauge(
            "keys_expected",
            "snapshot keys the dump holds (estimate)",
            int(self.keys_total),
        )?;

        let stage = IntGaugeVec::new(
            Opts::new("stage", "1 for the stage the run is in, 0 for the others"),
            &["stage"],
        )?;
        for s in Stage::ALL {
            stage
                .with_label_values(&[s.as_str()])
                .set(i64::from(self.stage == s));
        }
        registry.register(Box::new(stage))?;

        let counter = |name: &str, help: &str, v: u64| -> prometheus::Result<()> {
            let c = IntCounter::new(name, help)?;
            c.inc_by(v);
            registry.register(Box::new(c))
        };
        counter("events_total", "events read from the source", self.events)?;
        counter(
            "errors_total",
            "interruptions recovered from (lost links, busy master)",
            self.errors,
        )?;
        let sinks = IntCounterVec::new(
            Opts::new("sink_events_total", "events handed to each sink"),
            &["sink"],
        )?;
        let failing = IntGaugeVec::new(
            Opts::new(
                "sink_failing",
                "1 while a sink cannot write (reconnecting to its target, or failed), else 0",
            ),
            &["sink"],
        )?;
        for sink in &self.sinks {
            sinks
                .with_label_values(&[sink.name.as_str()])
                .inc_by(sink.events);
            failing
                .with_label_values(&[sink.name.as_str()])
                .set(i64::from(sink.error.is_some()));
        }
        registry.register(Box::new(sinks))?;
        registry.register(Box::new(failing))?;
        self.register_dbs(registry)
    }

    /// Each database's figures, labelled `db` (only a live master reports them).
    fn register_dbs(&self, registry: &Registry) -> prometheus::Result<()> {
        if self.dbs.is_empty() {
            return Ok(());
        }
        let vec = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let stage = vec(
            "db_stage",
            "1 for the stage each database is in, 0 for the others",
            &["db", "stage"],
        )?;
        let filenum = vec(
            "db_position_filenum",
            "binlog file of each database's acknowledged position",
            &["db"],
        )?;
        let offset = vec(
            "db_position_offset",
            "binlog offset of each database's acknowledged position",
            &["db"],
        )?;
        let lag_items = vec(
            "db_lag_items",
            "items of each database received and not yet acknowledged by every sink",
            &["db"],
        )?;
        let lag_ms = vec(
            "db_lag_milliseconds",
            "time since each database's oldest unacknowledged item arrived from the master",
            &["db"],
        )?;
        for (db, d) in &self.dbs {
            let db = db.to_string();
            for s in Stage::ALL {
                stage
                    .with_label_values(&[db.as_str(), s.as_str()])
                    .set(i64::from(d.stage == s));
            }
            if let Some((f, o)) = offset_value(&d.position) {
                filenum.with_label_values(&[db.as_str()]).set(f);
                offset.with_label_values(&[db.as_str()]).set(o);
            }
            lag_items
                .with_label_values(&[db.as_str()])
                .set(int(d.lag_items));
            lag_ms.with_label_values(&[db.as_str()]).set(int(d.lag_ms));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_tell_a_p99_apart_between_10_and_100_ms() {
        let s = Status::default();
        for ms in [8, 22, 40, 60, 90] {
            s.acked_after(Duration::from_millis(ms));
        }
        let text = s.prometheus(&s.report(0, 0, 0));
        for (le, count) in [
            ("0.01", 1),
            ("0.025", 2),
            ("0.05", 3),
            ("0.075", 4),
            ("0.1", 5),
        ] {
            let line = format!("pika_migrate_ack_latency_seconds_bucket{{le=\"{le}\"}} {count}");
            assert!(text.contains(&line), "no {line} in\n{text}");
        }
    }

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
        let text = s.prometheus(&r);
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
        assert!(text.contains("pika_migrate_lag_seconds 1.5"), "{text}");
        assert!(
            text.contains("pika_migrate_ack_latency_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("pika_migrate_sink_failing{sink=\"redis r\"} 0"),
            "{text}"
        );
        s.sink_trouble(i, Some("1 of 8 lanes cannot write".into()));
        s.sink_trouble(i, Some("1 of 8 lanes cannot write".into()));
        let r = s.report(3, 2, 9);
        assert_eq!(r.errors, 1, "one problem, counted once");
        assert_eq!(
            r.last_error.as_deref(),
            Some("redis r: 1 of 8 lanes cannot write")
        );
        assert!(s
            .prometheus(&r)
            .contains("pika_migrate_sink_failing{sink=\"redis r\"} 1"));
        s.sink_trouble(i, None);
        assert_eq!(s.report(3, 2, 9).sinks[0].error, None);
        s.sink_failed(i, "lost the connection and gave up after 3 s");
        s.sink_trouble(i, None);
        let r = s.report(3, 2, 9);
        assert!(r.sinks[0].failed && r.sinks[0].error.is_some(), "{r:?}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["stage"], "streaming");
        assert!(json.get("dbs").is_none(), "no databases for an offline run");
    }

    #[test]
    fn several_databases_report_each_and_the_run_as_its_least_advanced() {
        let s = Status::default();
        let (db0, db2) = (s.for_db(0), s.for_db(2));
        db0.set_stage(Stage::Streaming);
        db0.set_position(BinlogOffset::new(3, 100));
        db0.set_stream(
            Some(BinlogOffset::new(3, 200)),
            4,
            Some((1, Instant::now())),
        );
        db2.set_stage(Stage::FullSyncLoad);
        db2.set_dump_bytes(4096);
        let r = s.report(0, 0, 0);
        assert_eq!(r.stage, Stage::FullSyncLoad, "the run is as far as db2");
        assert_eq!(r.position, None, "two databases: no single position");
        assert_eq!((r.lag_items, r.dump_bytes), (4, 4096));
        assert_eq!(r.dbs[&0].position.as_deref(), Some("3:100"));
        assert_eq!(r.dbs[&2].stage, Stage::FullSyncLoad);
        let text = s.prometheus(&r);
        for line in [
            "pika_migrate_db_stage{db=\"2\",stage=\"full_sync_load\"} 1",
            "pika_migrate_db_position_offset{db=\"0\"} 100",
            "pika_migrate_db_lag_items{db=\"0\"} 4",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        db2.set_stage(Stage::Streaming);
        assert_eq!(s.report(0, 0, 0).stage, Stage::Streaming);
    }
}
