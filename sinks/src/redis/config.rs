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
fn default_wait_timeout_ms() -> u64 {
    1000
}
fn default_response_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `redis://[user[:password]@]host[:port][/db]`; `rediss://` for TLS;
    /// `redis+unix:///path?db=N` or `unix:///path?db=N` for a unix socket;
    /// `redis-sentinel://[[user]:password@]host1[:26379],host2[:26379][/db]#master` for
    /// the master that sentinels name (see `target`).
    pub url: String,
    /// With a redis-sentinel url: the data nodes' ACL user, when it is not the
    /// sentinels' (the url's).
    #[serde(default)]
    pub username: Option<String>,
    /// With a redis-sentinel url: the data nodes' password, when it is not the
    /// sentinels' (the url's).
    #[serde(default)]
    pub password: Option<String>,
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
    pub tls: Option<super::target::TlsConfig>,
    /// Replicas that must confirm each pipeline (`WAIT`) before it counts as applied: a
    /// number, or `all` (every replica the master lists). Default `all` behind
    /// sentinels (whichever replica is promoted holds what was acknowledged), else 0.
    #[serde(default, deserialize_with = "de_wait_replicas")]
    pub wait_replicas: Option<u32>,
    /// How long one `WAIT` blocks before the lane checks the replicas and waits again.
    #[serde(default = "default_wait_timeout_ms")]
    pub wait_timeout_ms: u64,
    /// How long a reply may take before the connection counts as lost (a server that
    /// stopped answering without closing): the lane reconnects and resumes from its
    /// checkpoint key.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// The name of this migration in the checkpoint keys
    /// (`pika-migrate:checkpoint:<migration>:<lane>`), so several migrations can share
    /// one Redis. Default: the source's identity (the binary fills it in).
    #[serde(default)]
    pub migration: Option<String>,
}

impl RedisSinkConfig {
    /// How long a reply may take: `response_timeout_ms`, and where pipelines end with
    /// `WAIT` (`waits`), at least a second more than one blocks.
    pub fn response_timeout(&self, waits: bool) -> std::time::Duration {
        let least = if waits {
            self.wait_timeout_ms.saturating_add(1000)
        } else {
            1
        };
        std::time::Duration::from_millis(self.response_timeout_ms.max(least))
    }
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

/// `wait_replicas`: a number, or `all` (`wait::ALL_REPLICAS`).
fn de_wait_replicas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Replicas {
        Count(u32),
        Word(String),
    }
    match Option::<Replicas>::deserialize(d)? {
        None => Ok(None),
        Some(Replicas::Count(n)) => Ok(Some(n)),
        Some(Replicas::Word(w)) if w == "all" => Ok(Some(super::wait::ALL_REPLICAS)),
        Some(Replicas::Word(w)) => Err(serde::de::Error::custom(format!(
            "wait_replicas: {w:?} is neither a number nor `all`"
        ))),
    }
}
