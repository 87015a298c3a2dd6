//! The pipeline file as the binary sees it: core's pipeline shape with the sinks crate's
//! sink configs, and how each part is built.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use pika_migrate_core::config::{self, ConfigError, PipelineConfig, SourceConfig};
use pika_migrate_core::filter::{keeps_databases_apart, FilterChain};
use pika_migrate_core::pika::storage::layout::find_databases;
use pika_migrate_core::pipeline::Pipeline;
use pika_migrate_core::replay::clock::wall_now_ms;
use pika_migrate_core::replay::{AsOf, ReplayClock};
use pika_migrate_core::source::binlog::{binlog_dirs, db_of_dir, BinlogSource};
use pika_migrate_core::source::capture::CaptureSource;
use pika_migrate_core::source::pika::{PikaSource, ReplicaError};
use pika_migrate_core::source::snapshot::SnapshotSource;
use pika_migrate_core::source::Source;
use pika_migrate_sinks::SinkConfig;

pub type Config = PipelineConfig<SinkConfig>;

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let config: Config = config::load(path)?;
    if config.sinks.is_empty() {
        return Err(ConfigError::Unplaced {
            path: path.to_owned(),
            message: "sinks: at least one sink is needed".into(),
        });
    }
    // Bad patterns and contradictory settings are the file's errors.
    FilterChain::build(&config.filters).map_err(|e| ConfigError::Unplaced {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    check_databases_apart(&config).map_err(|message| ConfigError::Unplaced {
        path: path.to_owned(),
        message,
    })?;
    Ok(config)
}

/// The databases an offline source holds; `None` when only the run can tell (a live
/// master, a capture) or the path is unreadable (the source then says why).
fn source_databases(source: &SourceConfig) -> Option<BTreeSet<u32>> {
    match source {
        SourceConfig::Snapshot(s) => find_databases(&s.path)
            .ok()
            .map(|dbs| dbs.iter().map(|d| d.index).collect()),
        SourceConfig::Binlog(b) => binlog_dirs(&b.path, b.db.unwrap_or_else(|| db_of_dir(&b.path)))
            .ok()
            .map(|dirs| dirs.into_iter().map(|(db, _)| db).collect()),
        // A live master's databases are known from `dbs`, or only once connected.
        SourceConfig::Pika(p) => p.dbs.as_ref().map(|d| d.iter().copied().collect()),
        SourceConfig::Capture(_) => None,
    }
}

/// The first Redis Cluster sink, if any: it has only database 0.
fn first_cluster(config: &Config) -> Option<usize> {
    config
        .sinks
        .iter()
        .position(|s| matches!(s, SinkConfig::Redis(r) if r.cluster))
}

/// Why several databases must not reach the sinks (a Redis Cluster sink, and filters
/// that would not keep their keys apart); `None` when they may.
fn databases_would_mix(config: &Config) -> Option<String> {
    let sink = first_cluster(config)?;
    let two = BTreeSet::from([0, 1]);
    (keeps_databases_apart(&config.filters, &two) == Some(false)).then(|| {
        format!(
            "sinks[{sink}] is a Redis Cluster, which has only database 0: their keys would mix \
             there. Keep them apart with a `rename` filter naming the database (`add_prefix: \
             \"db{{db}}:\"`), or follow one with `dbs: [N]`"
        )
    })
}

/// A Redis Cluster has only database 0: several Pika databases written there would mix
/// their keys (one key name in two databases would become one key) unless the filters
/// keep them apart.
fn check_databases_apart(config: &Config) -> Result<(), String> {
    let (Some(first), Some(dbs)) = (first_cluster(config), source_databases(&config.source)) else {
        return Ok(());
    };
    match keeps_databases_apart(&config.filters, &dbs) {
        Some(true) => Ok(()),
        None => {
            tracing::warn!(
                ?dbs,
                "several databases go to a Redis Cluster's db 0; a plugin must keep their keys apart"
            );
            Ok(())
        }
        Some(false) => {
            let list: Vec<String> = dbs.iter().map(|d| format!("db{d}")).collect();
            Err(format!(
                "sinks[{first}]: a Redis Cluster has only database 0, but the source holds \
                 Pika databases {}: their keys would mix there. Keep them apart with a `rename` \
                 filter naming the database (`add_prefix: \"db{{db}}:\"`), or move one \
                 database at a time (its `db<N>/` or `log_db<N>/`)",
                list.join(", ")
            ))
        }
    }
}

pub fn build_source(pipeline: &Config) -> Result<Box<dyn Source>, ReplicaError> {
    let config = &pipeline.source;
    // One "now" for the whole run: every expiry read as of a moment moves by the same.
    let clock = |as_of: Option<AsOf>| {
        if let Some(at) = as_of {
            tracing::info!(as_of = %at, "reading as of a given moment: expiries are judged then, and keep the time they had left then");
        }
        ReplayClock::new(as_of, wall_now_ms())
    };
    Ok(match config {
        SourceConfig::Snapshot(s) => Box::new(SnapshotSource {
            path: s.path.clone(),
            limits: s.chunk.into(),
            rate: s.rate,
            clock: clock(s.as_of),
        }),
        SourceConfig::Binlog(b) => Box::new(BinlogSource {
            path: b.path.clone(),
            from: b.from.clone(),
            follow: b.follow,
            db: b.db.unwrap_or_else(|| db_of_dir(&b.path)),
            rate: b.rate,
            dialect: b.pika_version,
            clock: clock(b.as_of),
        }),
        SourceConfig::Pika(p) => {
            let source = PikaSource::new(p)?;
            // Which databases the master has, only MetaSync says: the source refuses
            // several there when they would mix.
            Box::new(match databases_would_mix(pipeline) {
                Some(why) => source.one_database_only(why),
                None => source,
            })
        }
        SourceConfig::Capture(c) => Box::new(CaptureSource {
            path: c.path.clone(),
            from: c.from,
            to: c.to,
            rate: c.rate,
            follow: c.follow,
            skip_corrupt: c.skip_corrupt,
            clock: clock(c.as_of),
        }),
    })
}

pub async fn build(config: &Config) -> anyhow::Result<Pipeline> {
    let source = build_source(config)?;
    let mut sinks = Vec::new();
    for (i, sink) in config.sinks.iter().enumerate() {
        sinks.push(
            pika_migrate_sinks::build(sink)
                .await
                .with_context(|| format!("sinks[{i}]: cannot start"))?,
        );
    }
    let filters = FilterChain::build(&config.filters)?;
    Ok(Pipeline::new(source, sinks).with_filters(filters))
}
