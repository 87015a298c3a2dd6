//! The `snapshot` source: every live key of a Pika dump or db directory.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{run_blocking, EventSender, RateLimit, Source, SourceError, SourceReport};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::pika::storage::parallel::scan_parallel;
use crate::pika::storage::{ChunkLimits, ScanStats, Snapshot};
use crate::replay::ReplayClock;

pub struct SnapshotSource {
    pub path: PathBuf,
    pub limits: ChunkLimits,
    /// At most this many events per second.
    pub rate: Option<u64>,
    /// Threads reading each database (`storage::parallel`); 1 reads it in key order.
    pub threads: usize,
    /// The moment the dump is read as of: which keys have expired, and what is left of
    /// the others' time to live.
    pub clock: ReplayClock,
}

/// Current unix time in seconds: what "expired" is judged against by default.
pub fn unix_now() -> i64 {
    crate::replay::clock::wall_now_ms().div_euclid(1000)
}

impl SnapshotSource {
    /// Scans on the calling (blocking) thread; what was read before an error is still
    /// delivered.
    pub fn scan_blocking(
        &self,
        out: &mut EventSender,
        metrics: &Metrics,
    ) -> Result<SourceReport, SourceError> {
        let result = self.scan_into(out, metrics);
        out.flush_blocking();
        result
    }

    /// Reads the dump, the process at the priority of a load (`priority`).
    fn scan_into(
        &self,
        out: &mut EventSender,
        metrics: &Metrics,
    ) -> Result<SourceReport, SourceError> {
        let _loading = crate::priority::Loading::begin();
        self.read_dump(out, metrics)
    }

    fn read_dump(
        &self,
        out: &mut EventSender,
        metrics: &Metrics,
    ) -> Result<SourceReport, SourceError> {
        let snapshot = Snapshot::open(&self.path)?;
        metrics.set_expected_keys(snapshot.estimate_keys());
        let now = self.clock.now_ms().div_euclid(1000);
        let mut total = ScanStats::default();
        let mut seq = 0;
        let mut pace = RateLimit::new(self.rate);
        for db in &snapshot.dbs {
            tracing::info!(db = db.index, path = %db.path.display(), position = ?db.info.as_ref().map(|i| i.position), threads = self.threads, "scanning database");
            let pass_on = &mut |mut event: Event| {
                if let crate::event::Op::Snapshot {
                    expire_at_ms: Some(at),
                    ..
                } = &mut event.op
                {
                    *at = self.clock.rebase_ms(*at);
                }
                pace.wait_blocking(out);
                out.push_blocking(event)
            };
            let stats = scan_parallel(db, self.threads, self.limits, now, &mut seq, pass_on)?;
            total.add(&stats);
        }
        let end_positions = snapshot
            .dbs
            .iter()
            .filter_map(|db| Some((db.index, db.info.as_ref()?.position)))
            .collect();
        Ok(SourceReport {
            scan: Some(total),
            end_positions,
            ..SourceReport::default()
        })
    }
}

#[async_trait]
impl Source for SnapshotSource {
    fn describe(&self) -> String {
        format!("snapshot {}", self.path.display())
    }

    async fn run(
        self: Box<Self>,
        out: EventSender,
        metrics: Metrics,
    ) -> Result<SourceReport, SourceError> {
        run_blocking(out, move |out, report| {
            *report = self.scan_into(out, &metrics)?;
            Ok(())
        })
        .await
    }
}
