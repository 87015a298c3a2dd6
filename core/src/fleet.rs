//! Several pipelines in one process, one per source of a fleet (a Pika master per
//! Codis group, say), sharing a stop and a pause; and their status seen as one: each
//! source's report, a summary (how many stream, the total lag, the slowest), one
//! Prometheus text with a `source` label on every per-source series.
//!
//! A file with one `source:` is a fleet of one unnamed member, shown as before.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::proto::MetricFamily;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use serde::Serialize;

use crate::config::OnSourceError;
use crate::metrics::Metrics;
use crate::pipeline::{PauseSwitch, Pipeline, PipelineError, RunReport};
use crate::source::StopSignal;
use crate::status::{encode, Stage, StatusReport};

/// How often a stop asked of the fleet is passed on to its pipelines.
const STOP_POLL: Duration = Duration::from_millis(50);

/// The pipelines of a pipeline file, run together.
pub struct Fleet {
    members: Vec<(Option<String>, Pipeline)>,
    on_source_error: OnSourceError,
    /// Stops every pipeline (each writes what it read and saves its position).
    pub stop: StopSignal,
    /// Pauses and resumes every pipeline at once.
    pub pause: PauseSwitch,
}

/// What a member's run ended with.
pub type RunOutcome = Result<RunReport, PipelineError>;

/// What each member's run ended with, in the file's order.
pub type FleetOutcome = Vec<(Option<String>, RunOutcome)>;

impl Fleet {
    pub fn new(members: Vec<(Option<String>, Pipeline)>, on_source_error: OnSourceError) -> Fleet {
        let pause = PauseSwitch::default();
        let members = members
            .into_iter()
            .map(|(name, mut pipeline)| {
                pipeline.pause = pause.clone();
                (name, pipeline)
            })
            .collect();
        Fleet {
            members,
            on_source_error,
            stop: StopSignal::default(),
            pause,
        }
    }

    /// The status of every member, for the endpoint and the progress bar.
    pub fn status(&self) -> FleetStatus {
        FleetStatus {
            members: self
                .members
                .iter()
                .map(|(name, p)| (name.clone(), p.metrics.clone()))
                .collect(),
        }
    }

    /// Runs every member until each has ended. A member that fails is named in its
    /// status; with `on_source_error: stop` the others are then stopped too.
    pub async fn run(self) -> FleetOutcome {
        let stops: Vec<StopSignal> = self.members.iter().map(|(_, p)| p.stop.clone()).collect();
        let fleet_stop = self.stop.clone();
        let fan_out = tokio::spawn(async move {
            while !fleet_stop.is_stopped() {
                tokio::time::sleep(STOP_POLL).await;
            }
            for stop in &stops {
                stop.stop();
            }
        });
        let mut runs = tokio::task::JoinSet::new();
        let mut outcomes: Vec<(Option<String>, Option<RunOutcome>)> = Vec::new();
        for (i, (name, pipeline)) in self.members.into_iter().enumerate() {
            let metrics = pipeline.metrics.clone();
            outcomes.push((name, None));
            runs.spawn(async move { (i, metrics, pipeline.run().await) });
        }
        let several = outcomes.len() > 1;
        while let Some(joined) = runs.join_next().await {
            let (i, metrics, outcome) = match joined {
                Ok(done) => done,
                Err(e) => {
                    // A member's task panicked: the others stop rather than run on
                    // without anyone seeing it.
                    tracing::error!(error = %e, "a source's pipeline task failed");
                    self.stop.stop();
                    continue;
                }
            };
            if let Err(e) = &outcome {
                metrics.status().set_failed(&e.to_string());
                let name = outcomes[i].0.as_deref().unwrap_or("the source");
                match self.on_source_error {
                    OnSourceError::Stop => {
                        if several {
                            tracing::error!(source = name, error = %e, "a source failed: stopping the others (on_source_error: stop)");
                        }
                        self.stop.stop();
                    }
                    OnSourceError::Continue => {
                        tracing::error!(source = name, error = %e, "a source failed: the others go on (on_source_error: continue)");
                    }
                }
            }
            outcomes[i].1 = Some(outcome);
        }
        fan_out.abort();
        outcomes
            .into_iter()
            .map(|(name, outcome)| {
                let outcome = outcome.unwrap_or_else(|| {
                    Err(PipelineError::Task(
                        "the pipeline's task ended early".into(),
                    ))
                });
                (name, outcome)
            })
            .collect()
    }
}

/// Every member's live status.
#[derive(Debug, Clone)]
pub struct FleetStatus {
    members: Vec<(Option<String>, Metrics)>,
}

/// How the fleet stands, at a glance.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetSummary {
    pub sources: usize,
    pub streaming: usize,
    /// Sources that ended in failure, by name.
    pub failed: Vec<String>,
    /// Items received and not yet acknowledged, over every source.
    pub lag_items: u64,
    /// The source furthest behind (by the age of its oldest unacknowledged item).
    pub slowest: Option<String>,
    pub slowest_lag_ms: u64,
}

/// `GET /status` of a fleet: the figures summed up over its sources (as one source's
/// report has them, so what reads one reads this), the summary, and each source.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    #[serde(flatten)]
    pub total: StatusReport,
    pub fleet: FleetSummary,
    pub sources: BTreeMap<String, StatusReport>,
}

impl FleetStatus {
    /// The status of a single pipeline (one `source:`).
    pub fn single(metrics: Metrics) -> FleetStatus {
        FleetStatus {
            members: vec![(None, metrics)],
        }
    }

    /// Each member's name (none for a single source) and counters.
    pub fn members(&self) -> &[(Option<String>, Metrics)] {
        &self.members
    }

    fn is_fleet(&self) -> bool {
        self.members.first().is_some_and(|(name, _)| name.is_some())
    }

    /// The status as JSON: one source's report as it always was, or a fleet's.
    pub fn json(&self) -> serde_json::Value {
        let result = match self.fleet_report() {
            None => self
                .members
                .first()
                .map(|(_, m)| serde_json::to_value(m.report())),
            Some(report) => Some(serde_json::to_value(report)),
        };
        result
            .and_then(Result::ok)
            .unwrap_or(serde_json::Value::Null)
    }

    /// The lag and load now (for the page's chart): the most behind and the sums.
    pub fn headline(&self) -> (u64, u64, u64) {
        let reports: Vec<StatusReport> = self.members.iter().map(|(_, m)| m.report()).collect();
        (
            reports.iter().map(|r| r.lag_ms).max().unwrap_or(0),
            reports.iter().map(|r| r.lag_items).sum(),
            reports.iter().map(|r| r.keys_done).sum(),
        )
    }

    /// A fleet's report; `None` for a single source.
    pub fn fleet_report(&self) -> Option<FleetReport> {
        if !self.is_fleet() {
            return None;
        }
        let sources: BTreeMap<String, StatusReport> = self
            .members
            .iter()
            .map(|(name, m)| (name.clone().unwrap_or_default(), m.report()))
            .collect();
        Some(summed(sources))
    }

    /// Prometheus text: one source's as it always was; a fleet's with a `source`
    /// label on each source's series, and the summary's gauges.
    pub fn prometheus(&self) -> String {
        if !self.is_fleet() {
            return self
                .members
                .first()
                .map(|(_, m)| m.prometheus())
                .unwrap_or_default();
        }
        let mut merged: BTreeMap<String, MetricFamily> = BTreeMap::new();
        let mut add = |families: Vec<MetricFamily>| {
            for family in families {
                match merged.get_mut(family.name()) {
                    Some(into) => into
                        .mut_metric()
                        .extend(family.get_metric().iter().cloned()),
                    None => {
                        merged.insert(family.name().to_owned(), family);
                    }
                }
            }
        };
        let mut reports = BTreeMap::new();
        for (name, metrics) in &self.members {
            let name = name.clone().unwrap_or_default();
            let report = metrics.report();
            match metrics.status().families(&report, Some(&name)) {
                Ok(families) => add(families),
                Err(e) => return format!("# metrics unavailable: {e}\n"),
            }
            reports.insert(name, report);
        }
        match summary_families(&summed(reports).fleet) {
            Ok(families) => add(families),
            Err(e) => return format!("# metrics unavailable: {e}\n"),
        }
        encode(&merged.into_values().collect::<Vec<_>>())
    }
}

/// A fleet's report from its sources' reports.
fn summed(sources: BTreeMap<String, StatusReport>) -> FleetReport {
    let mut total = StatusReport {
        pid: std::process::id(),
        ..StatusReport::default()
    };
    let mut fleet = FleetSummary {
        sources: sources.len(),
        ..FleetSummary::default()
    };
    let live: Vec<&StatusReport> = sources.values().filter(|r| r.failed.is_none()).collect();
    total.stage = live
        .iter()
        .map(|r| r.stage)
        .min_by_key(|s| Stage::ALL.iter().position(|x| x == s))
        .unwrap_or(Stage::Stopped);
    // Paused once every source still running holds.
    total.paused = !live.is_empty() && live.iter().all(|r| r.paused || r.stage == Stage::Stopped);
    for (name, r) in &sources {
        total.lag_items += r.lag_items;
        total.lag_ms = total.lag_ms.max(r.lag_ms);
        total.lag_seconds = total.lag_seconds.max(r.lag_seconds);
        total.dump_bytes += r.dump_bytes;
        total.keys_done += r.keys_done;
        total.keys_total += r.keys_total;
        total.events += r.events;
        total.errors += r.errors;
        if let Some(e) = &r.last_error {
            total.last_error = Some(format!("{name}: {e}"));
        }
        total.sinks.extend(r.sinks.iter().map(|s| {
            let mut s = s.clone();
            s.name = format!("{name}: {}", s.name);
            s
        }));
        if r.stage == Stage::Streaming {
            fleet.streaming += 1;
        }
        if r.failed.is_some() {
            fleet.failed.push(name.clone());
        }
        if r.lag_ms > fleet.slowest_lag_ms || (fleet.slowest.is_none() && r.failed.is_none()) {
            fleet.slowest = Some(name.clone());
            fleet.slowest_lag_ms = r.lag_ms;
        }
    }
    fleet.lag_items = total.lag_items;
    if let Some(first) = fleet.failed.first() {
        total.failed = Some(format!(
            "{} failed: {}",
            first,
            sources[first].failed.as_deref().unwrap_or("")
        ));
    }
    FleetReport {
        total,
        fleet,
        sources,
    }
}

/// The summary as gauges (`pika_migrate_fleet_…`).
fn summary_families(summary: &FleetSummary) -> prometheus::Result<Vec<MetricFamily>> {
    let registry = Registry::new_custom(Some("pika_migrate".into()), None)?;
    let sources = IntGaugeVec::new(
        Opts::new(
            "fleet_sources",
            "sources of the fleet: all of them, those streaming, those failed",
        ),
        &["state"],
    )?;
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    sources
        .with_label_values(&["all"])
        .set(count(summary.sources));
    sources
        .with_label_values(&["streaming"])
        .set(count(summary.streaming));
    sources
        .with_label_values(&["failed"])
        .set(count(summary.failed.len()));
    registry.register(Box::new(sources))?;
    let lag = IntGauge::new(
        "fleet_lag_items",
        "items received and not yet acknowledged, over every source",
    )?;
    lag.set(i64::try_from(summary.lag_items).unwrap_or(i64::MAX));
    registry.register(Box::new(lag))?;
    let slowest = IntGauge::new(
        "fleet_slowest_lag_milliseconds",
        "the lag of the source furthest behind",
    )?;
    slowest.set(i64::try_from(summary.slowest_lag_ms).unwrap_or(i64::MAX));
    registry.register(Box::new(slowest))?;
    Ok(registry.gather())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleets_metrics_label_each_source_and_sum_up() {
        let a = Metrics::default();
        a.status().set_stage(Stage::Streaming);
        let b = Metrics::default();
        b.status().set_stage(Stage::FullSyncWaiting);
        b.status().set_failed("the master is gone");
        let status = FleetStatus {
            members: vec![(Some("g1".into()), a), (Some("g2".into()), b)],
        };
        let text = status.prometheus();
        assert!(
            text.contains(r#"pika_migrate_stage{stage="streaming",source="g1"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"pika_migrate_stage{stage="full_sync_waiting",source="g2"} 1"#),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE pika_migrate_stage gauge").count(), 1);
        assert!(text.contains(r#"pika_migrate_fleet_sources{state="failed"} 1"#));
        let json = status.json();
        assert_eq!(json["fleet"]["streaming"], 1);
        assert_eq!(json["fleet"]["failed"][0], "g2");
        assert_eq!(json["sources"]["g2"]["failed"], "the master is gone");
        assert_eq!(json["stage"], "streaming", "the failed source aside");
    }
}
