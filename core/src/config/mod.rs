//! The pipeline file: one source, a chain of filters, one or more sinks, in YAML with
//! `${VAR}` interpolation. Every error names the file, the line and column, and what
//! was expected.
//!
//! The sink part is generic: core knows no sink, the binary plugs in the sinks crate's
//! config type.

mod fleet;
mod interpolate;
mod locate;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::event::BinlogOffset;
use crate::pika::normalize::Dialect;
use crate::pika::storage::ChunkLimits;
use crate::replay::AsOf;

pub use fleet::{FleetConfig, FleetSettings, Member, NamedSource, OnSourceError, PipelineFile};
pub use interpolate::interpolate;
pub use locate::Locations;

/// A whole pipeline, with the sinks' config type `S`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig<S> {
    /// Where events come from.
    pub source: SourceConfig,
    /// Filters applied in order to every event (none yet by default).
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
    /// Where events go; each sink gets every event that passed the filters.
    pub sinks: Vec<S>,
    /// The status endpoint (JSON and Prometheus text over HTTP).
    #[serde(default)]
    pub status: Option<StatusConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// `IP:PORT` to serve `GET /status` (JSON) and `GET /metrics` (Prometheus) on.
    pub listen: std::net::SocketAddr,
    /// The token `POST /control/…` (pause, resume, stop) must carry
    /// (`Authorization: Bearer <token>`). Required for them when `listen` is not a
    /// loopback address.
    #[serde(default)]
    pub token: Option<String>,
}

/// A source of change events.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// A Pika dump or db directory on disk.
    Snapshot(SnapshotSourceConfig),
    /// Pika binlog files (`write2file<N>` + `manifest`).
    Binlog(BinlogSourceConfig),
    /// A running Pika 3.2–3.5 master, joined as a replica: full sync, then its binlog.
    Pika(PikaSourceConfig),
    /// A capture directory recorded by the `capture` sink.
    Capture(CaptureSourceConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSourceConfig {
    /// The capture directory.
    pub path: PathBuf,
    /// `FILENUM:OFFSET`: only events after it (binlog events ending after it, dumps
    /// taken after it).
    #[serde(default, deserialize_with = "de_offset")]
    pub from: Option<BinlogOffset>,
    /// `FILENUM:OFFSET`: events up to it, then stop.
    #[serde(default, deserialize_with = "de_offset")]
    pub to: Option<BinlogOffset>,
    /// At most this many events per second.
    #[serde(default)]
    pub rate: Option<u64>,
    /// Keep reading as the capture grows.
    #[serde(default)]
    pub follow: bool,
    /// Pass over damaged records (counted and logged) instead of stopping at the first.
    #[serde(default)]
    pub skip_corrupt: bool,
    /// Read as of this moment instead of now (unix seconds or RFC 3339 text such as
    /// `2026-11-25T01:07:48Z`): keys expired by then are left out, and the others keep
    /// the time to live they had then. Default: the wall clock.
    #[serde(default)]
    pub as_of: Option<AsOf>,
}

/// The live replica source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PikaSourceConfig {
    /// The master's client address `HOST:PORT`, as we reach it (through a port mapping,
    /// a proxy or a tunnel it may not be the master's own port).
    pub master: String,
    /// The port we reach the master's replication port at (Pika's is its own port +
    /// 2000); default: `master`'s port + 2000.
    #[serde(default)]
    pub replication_port: Option<u16>,
    /// The port we reach a Pika 3.5/4.0 master's rsync service at (Pika's is its own
    /// port + 10001); default: `master`'s port + 10001.
    #[serde(default)]
    pub rsync_port: Option<u16>,
    /// The addresses (IPs or CIDR blocks) a Pika 3.2–3.4 master pushes its dump from; our
    /// rsync daemon lets no one else in. Default: the addresses `master` names.
    #[serde(default)]
    pub push_from: Option<Vec<String>>,
    /// The master's `requirepass` (also what its rsync client authenticates with).
    #[serde(default)]
    pub password: Option<String>,
    /// The address we announce as a replica, `IP:PORT`: the master must reach IP, and
    /// pushes the dump to PORT + 1000, where our rsync daemon listens.
    pub announce: String,
    /// Where the dump is received and the checkpoint kept; one per migration. In a
    /// fleet (`sources:`) it defaults to the file's `work_dir/<name>`.
    #[serde(default)]
    pub work_dir: PathBuf,
    /// What to do when the master can no longer serve our position after a full sync
    /// was loaded: `refuse` (default; a second full sync would write dirty data),
    /// `flush` (every full sync first empties the target databases this migration
    /// writes, so keys the master deleted meanwhile go too) or `allow` (a second full
    /// sync rewrites the keys of its dump; keys deleted meanwhile stay).
    #[serde(default)]
    pub resync: ResyncPolicy,
    /// How big values of the dump are cut into events.
    #[serde(default)]
    pub chunk: ChunkConfig,
    /// At most this many events per second while a full sync's dump is loaded (to
    /// spare the target); the binlog stream is never held back.
    #[serde(default)]
    pub load_rate: Option<u64>,
    /// Threads reading a full sync's dump. Default: half the cores there are, at most
    /// 8 (`live_scan_threads`). With more than one, the keys of one database arrive in
    /// no set order (each key's own events, and a name's types, stay in order); 1
    /// reads them in key order.
    #[serde(default)]
    pub scan_threads: Option<usize>,
    /// At most this many bytes per second while the dump of a Pika 3.5 master is pulled
    /// (as its own replicas' `throttle-bytes-per-second`); a 3.2–3.4 master pushes at
    /// its own `db-sync-speed`.
    #[serde(default)]
    pub pull_rate: Option<u64>,
    /// Seconds without a new byte of the dump after which the full sync is asked for
    /// again (three times in a row: the run stops).
    #[serde(default = "default_transfer_timeout")]
    pub transfer_timeout: u64,
    /// Seconds to keep reconnecting to a master whose replication port stopped
    /// answering, before giving up (exit code 69).
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
    /// The `rsync` binary that serves the dump transfer.
    #[serde(default = "default_rsync")]
    pub rsync: PathBuf,
    /// The master's databases to follow (`[0, 2]`); default: every one it has.
    #[serde(default)]
    pub dbs: Option<Vec<u32>>,
}

fn default_rsync() -> PathBuf {
    PathBuf::from("rsync")
}

fn default_transfer_timeout() -> u64 {
    120
}

fn default_retry_seconds() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResyncPolicy {
    #[default]
    Refuse,
    /// A second full sync over what is there: the keys of its dump are rewritten.
    Allow,
    /// Every full sync (the first, a second one, a load begun again after a restart)
    /// starts by emptying the target databases its Pika database goes to.
    Flush,
}

impl ResyncPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncPolicy::Refuse => "refuse",
            ResyncPolicy::Allow => "allow",
            ResyncPolicy::Flush => "flush",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSourceConfig {
    /// A dump (`dump/<date>/`, `db0/`) or a stopped server's db directory.
    pub path: PathBuf,
    /// How big values are cut into events.
    #[serde(default)]
    pub chunk: ChunkConfig,
    /// At most this many events per second (to spare the target).
    #[serde(default)]
    pub rate: Option<u64>,
    /// Threads reading the dump. Default 1: the keys in key order, the same output on
    /// every run; more read a big dump faster, its keys then in no set order (each
    /// key's own events stay in order).
    #[serde(default)]
    pub scan_threads: Option<usize>,
    /// Read as of this moment instead of now (unix seconds or RFC 3339 text such as
    /// `2026-11-25T01:07:48Z`): keys expired by then are left out, and the others keep
    /// the time to live they had then. Default: the wall clock.
    #[serde(default)]
    pub as_of: Option<AsOf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinlogSourceConfig {
    /// A binlog directory (`log/log_db0/`), or Pika's whole `log/` (every `log_db<N>/`).
    pub path: PathBuf,
    /// Start position `FILENUM:OFFSET` (an item boundary), or one per database
    /// (`{0: "1:507340", 2: "0:309063"}`); default: each binlog's oldest file.
    #[serde(default, deserialize_with = "de_binlog_from")]
    pub from: BinlogFrom,
    /// Keep reading as the active file grows.
    #[serde(default)]
    pub follow: bool,
    /// Database index the directory belongs to (`log_db<N>`); guessed from the name.
    #[serde(default)]
    pub db: Option<u32>,
    /// At most this many events per second (a replay at a chosen pace).
    #[serde(default)]
    pub rate: Option<u64>,
    /// The Pika version that wrote the binlog (`"3.3"`, `"3.5.5"`, `"4.0"`): a few
    /// logged commands had other effects from 3.5 on. Default: 3.2–3.4.
    #[serde(default, deserialize_with = "de_dialect")]
    pub pika_version: Dialect,
    /// Read as of this moment instead of now (unix seconds or RFC 3339 text such as
    /// `2026-11-25T01:07:48Z`): expiries past by then take effect as the input reaches them, and the others keep
    /// the time to live they had then. Default: the wall clock.
    #[serde(default)]
    pub as_of: Option<AsOf>,
}

/// Chunking of big values.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkConfig {
    /// Elements per chunk of a hash, list, set or sorted set.
    pub elements: usize,
    /// Bytes per chunk; longer strings are sent as slices.
    pub bytes: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        let limits = ChunkLimits::default();
        ChunkConfig {
            elements: limits.elements,
            bytes: limits.bytes,
        }
    }
}

impl From<ChunkConfig> for ChunkLimits {
    fn from(c: ChunkConfig) -> Self {
        ChunkLimits {
            elements: c.elements.max(1),
            bytes: c.bytes.max(1),
        }
    }
}

pub use crate::filter::FilterConfig;

fn de_offset<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<BinlogOffset>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| t.parse().map_err(serde::de::Error::custom))
        .transpose()
}

/// Where a binlog replay starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BinlogFrom {
    /// Each binlog's oldest file.
    #[default]
    Oldest,
    /// One position: the directory holds one database's binlog.
    At(BinlogOffset),
    /// A position per database (those not named start at their oldest file).
    PerDb(std::collections::BTreeMap<u32, BinlogOffset>),
}

impl BinlogFrom {
    /// Where database `db`'s binlog starts, `several` telling whether the replay reads
    /// more than one; an error for a single position given to several databases.
    pub fn of(&self, db: u32, several: bool) -> Result<Option<BinlogOffset>, String> {
        match self {
            BinlogFrom::Oldest => Ok(None),
            BinlogFrom::At(_) if several => Err(
                "`from` names one position but the directory holds several databases' binlogs: \
                 give one per database, e.g. {0: \"1:507340\", 1: \"0:309063\"}"
                    .into(),
            ),
            BinlogFrom::At(at) => Ok(Some(*at)),
            BinlogFrom::PerDb(map) => Ok(map.get(&db).copied()),
        }
    }
}

fn de_binlog_from<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BinlogFrom, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        One(String),
        PerDb(std::collections::BTreeMap<u32, String>),
    }
    let parse = |t: &str| t.parse::<BinlogOffset>().map_err(serde::de::Error::custom);
    Ok(match Option::<Text>::deserialize(d)? {
        None => BinlogFrom::Oldest,
        Some(Text::One(t)) => BinlogFrom::At(parse(&t)?),
        Some(Text::PerDb(map)) => BinlogFrom::PerDb(
            map.iter()
                .map(|(db, t)| Ok((*db, parse(t)?)))
                .collect::<Result<_, D::Error>>()?,
        ),
    })
}

fn de_dialect<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Dialect, D::Error> {
    let text = String::deserialize(d)?;
    Dialect::of_version(&text).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "pika_version {text:?}: binlogs of Pika 3.2 to 4.0 are read"
        ))
    })
}

/// A pipeline file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Unplaced { path: PathBuf, message: String },
}

/// Reads, interpolates and parses a YAML file into `T`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text, |name| std::env::var(name).ok())
}

/// Reads a pipeline file, one source or a fleet, into its pipelines (one per source).
pub fn load_fleet<S: DeserializeOwned + Clone>(path: &Path) -> Result<FleetConfig<S>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_fleet(path, &text, |name| std::env::var(name).ok())
}

/// Parses a pipeline file's text (named `path` in errors) into its pipelines.
pub fn parse_fleet<S: DeserializeOwned + Clone>(
    path: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<FleetConfig<S>, ConfigError> {
    let file: PipelineFile<S> = parse(path, text, lookup)?;
    file.into_fleet(path, text)
}

/// Parses YAML text (named `path` in errors), interpolating with `lookup`.
pub fn parse<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<T, ConfigError> {
    let text = interpolate(text, lookup).map_err(|unset| ConfigError::Invalid {
        path: path.to_owned(),
        line: unset.line,
        column: unset.column,
        message: format!("environment variable {} is not set", unset.name),
    })?;
    let de = serde_yaml::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let mut field = err.path().to_string();
        let inner = err.into_inner();
        let message = strip_serde_yaml_place(&inner.to_string(), &field);
        let found = Locations::of(&text).find_node(&field, &message);
        if let Some((deeper, _)) = found
            .as_ref()
            .filter(|(p, _)| p.len() > field.len() && p.starts_with(field.trim_start_matches('.')))
        {
            field = deeper.clone();
        }
        let place = found
            .map(|(_, pos)| pos)
            .or_else(|| inner.location().map(|l| (l.line(), l.column())));
        let message =
            if field.is_empty() || field == "." || message.starts_with(&format!("{field}:")) {
                message
            } else {
                format!("{field}: {message}")
            };
        match place {
            Some((line, column)) => ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message,
            },
            None => ConfigError::Unplaced {
                path: path.to_owned(),
                message,
            },
        }
    })
}

/// serde_yaml puts a partial path before its message and " at line L column C" (wrong
/// inside tagged enums) after it; the loader places errors itself.
fn strip_serde_yaml_place(message: &str, field: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(at) => &message[..at],
        None => message,
    };
    match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.contains(' ') && field.starts_with(prefix) => {
            rest.to_owned()
        }
        _ => message.to_owned(),
    }
}

/// Most threads a dump is read with.
pub const MAX_SCAN_THREADS: usize = 64;

/// The threads a dump is read with: `asked`, or else `auto` of the cores there are,
/// within 1..=`MAX_SCAN_THREADS`.
pub fn scan_threads(asked: Option<usize>, auto: impl FnOnce(usize) -> usize) -> usize {
    let threads = asked.unwrap_or_else(|| {
        auto(
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1),
        )
    });
    threads.clamp(1, MAX_SCAN_THREADS)
}

/// The threads a live full sync reads its dump with unless told, on `cores` cores:
/// half of them, at most 8. The target or the master often shares the host: on 2
/// cores a second thread slowed a load into a local Redis by 5–20 % and cost 10 % more
/// CPU.
pub fn live_scan_threads(cores: usize) -> usize {
    (cores / 2).clamp(1, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_full_sync_reads_on_half_the_cores_at_most_8_unless_told() {
        let by_cores: Vec<usize> = [1, 2, 3, 4, 16, 64]
            .into_iter()
            .map(live_scan_threads)
            .collect();
        assert_eq!(by_cores, [1, 1, 1, 2, 8, 8]);
        assert_eq!(scan_threads(Some(3), live_scan_threads), 3);
        assert_eq!(scan_threads(Some(0), live_scan_threads), 1);
        assert_eq!(
            scan_threads(Some(1000), live_scan_threads),
            MAX_SCAN_THREADS
        );
        assert_eq!(scan_threads(None, |_| 1), 1);
    }

    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
    enum TestSink {
        File { path: PathBuf },
    }

    fn try_parse(text: &str) -> Result<PipelineConfig<TestSink>, String> {
        parse(Path::new("p.yaml"), text, |n| {
            (n == "DIR").then(|| "/data".to_owned())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_the_documented_shape_with_interpolation() {
        let cfg = try_parse("source:\n  type: snapshot\n  path: ${DIR}/dump\nsinks:\n  - type: file\n    path: out.resp\n").unwrap();
        let TestSink::File { path } = &cfg.sinks[0];
        assert_eq!(path, &PathBuf::from("out.resp"));
        match cfg.source {
            SourceConfig::Snapshot(s) => assert_eq!(s.path, PathBuf::from("/data/dump")),
            other => panic!("{other:?}"),
        }
        let cfg = try_parse(
            "source: {type: binlog, path: b, from: '1:507340', follow: true}\nsinks: []\n",
        )
        .unwrap();
        match cfg.source {
            SourceConfig::Binlog(b) => {
                assert_eq!(b.from, BinlogFrom::At(BinlogOffset::new(1, 507340)))
            }
            other => panic!("{other:?}"),
        }
        // Pika's whole log/: a position per database.
        let cfg = try_parse(
            "source: {type: binlog, path: log, from: {0: '1:507340', 2: '0:84'}}\nsinks: []\n",
        )
        .unwrap();
        let SourceConfig::Binlog(b) = cfg.source else {
            panic!("not a binlog source");
        };
        let want = [
            (0, BinlogOffset::new(1, 507340)),
            (2, BinlogOffset::new(0, 84)),
        ];
        assert_eq!(b.from, BinlogFrom::PerDb(want.into_iter().collect()));
        assert_eq!(b.from.of(2, true), Ok(Some(BinlogOffset::new(0, 84))));
        assert_eq!(b.from.of(1, true), Ok(None));
        let one = BinlogFrom::At(BinlogOffset::new(1, 2));
        assert!(one.of(0, true).unwrap_err().contains("one per database"));
        let bad = try_parse("source: {type: binlog, path: log, from: {0: 'x'}}\nsinks: []\n");
        assert!(bad.is_err());
    }

    #[test]
    fn errors_name_line_column_and_expectation() {
        let unknown =
            try_parse("source:\n  type: snapshot\n  path: x\n  bogus: 1\nsinks: []\n").unwrap_err();
        assert_eq!(
            unknown,
            "p.yaml:4:3: source: unknown field `bogus`, expected one of `path`, `chunk`, `rate`, `scan_threads`, `as_of`"
        );
        let wrong = try_parse("source:\n  type: binlog\n  path: x\n  follow: maybe\nsinks: []\n")
            .unwrap_err();
        assert!(
            wrong.starts_with(
                "p.yaml:4:11: source.follow: invalid type: string \"maybe\", expected a boolean"
            ),
            "{wrong}"
        );
        let sink = try_parse("source: {type: snapshot, path: x}\nsinks:\n  - type: file\n    path: y\n    extra: 2\n").unwrap_err();
        assert!(
            sink.starts_with("p.yaml:5:5: sinks[0]: unknown field `extra`"),
            "{sink}"
        );
        let variant = try_parse("source:\n  type: nope\nsinks: []\n").unwrap_err();
        assert!(
            variant.starts_with("p.yaml:2:9: source.type: unknown variant `nope`"),
            "{variant}"
        );
        let unset =
            try_parse("source: {type: snapshot, path: ${MISSING}}\nsinks: []\n").unwrap_err();
        assert_eq!(
            unset,
            "p.yaml:1:32: environment variable MISSING is not set"
        );
        let missing = try_parse("source: {type: snapshot, path: x}\n").unwrap_err();
        assert!(missing.contains("missing field `sinks`"), "{missing}");
        let offset =
            try_parse("source: {type: binlog, path: b, from: 'x'}\nsinks: []\n").unwrap_err();
        assert!(offset.contains("expected FILENUM:OFFSET"), "{offset}");
    }
}
