//! `type: redis`.

use serde::Deserialize;

use crate::encode::commands::TypeConflict;

fn default_batch() -> usize {
    512
}
fn default_senders() -> usize {
    8
}
fn default_linger_ms() -> u64 {
    2
}
fn default_retry_seconds() -> u64 {
    300
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `redis://[user[:password]@]host[:port][/db]`; `rediss://` for TLS.
    pub url: String,
    /// Commands per pipeline flush (the old tool's sync-batch-num).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Parallel connections, each owning the keys that hash to it (redis-sender-num).
    #[serde(default = "default_senders")]
    pub senders: usize,
    /// What to do with a key that exists as several types.
    #[serde(default)]
    pub type_conflict: TypeConflict,
    /// Pika's own-format HyperLogLog strings: copy them (`raw`) or leave them out.
    #[serde(default)]
    pub hyperloglog: HyperLogLogPolicy,
    /// A command Redis refuses (OOM, …): stop the run (`fail`) or count and go on.
    #[serde(default)]
    pub on_error: OnError,
    /// Milliseconds a lane waits for more commands before flushing a short pipeline.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// How long a lane keeps reconnecting to a lost server before giving up.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
    /// The target is a Redis Cluster: `url` is a seed node; commands are routed by hash
    /// slot to the master serving it, `senders` lanes per master.
    #[serde(default)]
    pub cluster: bool,
    /// TLS settings for a `rediss://` url (CA file, client certificate).
    #[serde(default)]
    pub tls: Option<super::tls::TlsConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HyperLogLogPolicy {
    #[default]
    Raw,
    Skip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Fail,
    Skip,
}
