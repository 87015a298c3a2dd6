//! The `capture` source: replays a capture directory (recorded by the `capture` sink)
//! through any filters and sinks, from and to a position, optionally rate-limited, and
//! with `follow` keeps reading as the capture grows.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{run_blocking, EventSender, RateLimit, Source, SourceError, SourceReport};
use crate::capture::reader::{CaptureReader, ReadOutcome};
use crate::event::{BinlogOffset, Event, Position};
use crate::metrics::Metrics;
use crate::replay::{Replay, ReplayClock};

pub struct CaptureSource {
    pub path: PathBuf,
    /// Only what comes after this position: binlog events ending after it, snapshot
    /// events of dumps taken after it (a consumer at `from` has the rest).
    pub from: Option<BinlogOffset>,
    /// Up to this position: binlog events ending at or before it, snapshot events of
    /// dumps taken at or before it; reading stops at the first event past it.
    pub to: Option<BinlogOffset>,
    /// Events per second, at most.
    pub rate: Option<u64>,
    pub follow: bool,
    pub skip_corrupt: bool,
    /// The moment the capture is replayed as of.
    pub clock: ReplayClock,
}

impl CaptureSource {
    fn wanted(&self, e: &Event) -> (bool, bool) {
        let at = e.position.binlog_offset();
        let from_ok = self.from.is_none_or(|f| at > f);
        let past_end = self.to.is_some_and(|t| at > t);
        (from_ok && !past_end, past_end)
    }

    fn read_into(
        &self,
        out: &mut EventSender,
        report: &mut SourceReport,
    ) -> Result<(), SourceError> {
        let mut reader = CaptureReader::open(&self.path, self.skip_corrupt)?;
        let mut pace = RateLimit::new(self.rate);
        let mut replay = Replay::new(self.clock);
        let mut ready = Vec::new();
        let mut send = |ready: &mut Vec<Event>, out: &mut EventSender| {
            for event in ready.drain(..) {
                pace.wait_blocking(out);
                if !out.push_blocking(event) {
                    return false;
                }
            }
            true
        };
        let mut ended = false;
        loop {
            match reader.read_next()? {
                ReadOutcome::Event(event) => {
                    let (keep, past_end) = self.wanted(&event);
                    if past_end {
                        ended = true;
                        break;
                    }
                    if !keep {
                        continue;
                    }
                    if let Position::Binlog { at, .. } = event.position {
                        report.end_positions.insert(event.db, at);
                    }
                    replay.pass(*event, &mut ready);
                    if !send(&mut ready, out) {
                        break;
                    }
                }
                ReadOutcome::Skipped(e) => {
                    report.skipped_records += 1;
                    tracing::warn!(error = %e, "damaged capture record skipped (skip_corrupt)");
                }
                ReadOutcome::CaughtUp if self.follow => {
                    replay.caught_up(&mut ready);
                    if !send(&mut ready, out) || !out.wait_for_more_blocking() {
                        break;
                    }
                }
                ReadOutcome::CaughtUp => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            replay.finish(&mut ready);
            send(&mut ready, out);
        }
        report.late_expiries = replay.stats();
        report.expired_events = replay.expired_snapshot_events();
        for (db, at) in report.end_positions.iter_mut() {
            if let Some(held) = replay.resume_point(*db) {
                *at = (*at).min(held);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Source for CaptureSource {
    fn describe(&self) -> String {
        format!("capture {}", self.path.display())
    }

    async fn run(
        self: Box<Self>,
        out: EventSender,
        _metrics: Metrics,
    ) -> Result<SourceReport, SourceError> {
        run_blocking(out, move |out, report| self.read_into(out, report)).await
    }
}
