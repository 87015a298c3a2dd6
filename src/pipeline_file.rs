//! The pipeline file as the binary sees it: core's pipeline shape with the sinks crate's
//! sink configs, and how each part is built.

use std::path::Path;

use anyhow::Context;
use pika_migrate_core::config::{self, ConfigError, PipelineConfig, SourceConfig};
use pika_migrate_core::filter::FilterChain;
use pika_migrate_core::pipeline::Pipeline;
use pika_migrate_core::source::binlog::{db_of_dir, BinlogSource};
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
    Ok(config)
}

pub fn build_source(config: &SourceConfig) -> Result<Box<dyn Source>, ReplicaError> {
    Ok(match config {
        SourceConfig::Snapshot(s) => Box::new(SnapshotSource {
            path: s.path.clone(),
            limits: s.chunk.into(),
            rate: s.rate,
        }),
        SourceConfig::Binlog(b) => Box::new(BinlogSource {
            path: b.path.clone(),
            from: b.from,
            follow: b.follow,
            db: b.db.unwrap_or_else(|| db_of_dir(&b.path)),
            rate: b.rate,
            dialect: b.pika_version,
        }),
        SourceConfig::Pika(p) => Box::new(PikaSource::new(p)?),
        SourceConfig::Capture(c) => Box::new(CaptureSource {
            path: c.path.clone(),
            from: c.from,
            to: c.to,
            rate: c.rate,
            follow: c.follow,
            skip_corrupt: c.skip_corrupt,
        }),
    })
}

pub async fn build(config: &Config) -> anyhow::Result<Pipeline> {
    let source = build_source(&config.source)?;
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
