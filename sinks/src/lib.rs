//! Sinks of pika-migrate. Each sink owns its config, its encoding and its retries;
//! `encode` holds the encodings several sinks share. `blackhole` discards what it is
//! given, counting it.

pub mod blackhole;
pub mod capture;
pub mod encode;
pub mod file;
pub mod kafka;
pub mod redis;

use pika_migrate_core::sink::Sink;
use serde::Deserialize;

/// One entry of the pipeline's `sinks:` list.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SinkConfig {
    File(file::FileSinkConfig),
    Capture(capture::CaptureSinkConfig),
    Kafka(kafka::KafkaSinkConfig),
    Redis(redis::config::RedisSinkConfig),
    Blackhole(blackhole::BlackholeSinkConfig),
}

/// Why a sink could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    File(#[from] file::FileSinkError),
    #[error(transparent)]
    Redis(#[from] redis::RedisSinkError),
    #[error(transparent)]
    Capture(#[from] pika_migrate_core::capture::CaptureError),
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaSinkError),
}

/// Builds a sink from its config, connecting or opening what it needs.
pub async fn build(config: &SinkConfig) -> Result<Box<dyn Sink>, BuildError> {
    Ok(match config {
        SinkConfig::File(c) => Box::new(file::FileSink::open(c.clone()).await?),
        SinkConfig::Capture(c) => Box::new(capture::CaptureSink::open(c)?),
        SinkConfig::Kafka(c) => Box::new(kafka::KafkaSink::connect(c.clone())?),
        SinkConfig::Redis(c) => Box::new(redis::RedisSink::connect(c.clone()).await?),
        SinkConfig::Blackhole(c) => Box::new(blackhole::BlackholeSink::new(c.clone())),
    })
}
