//! The pipeline file as the binary sees it: core's pipeline shape with the sinks crate's
//! sink configs, and how each part is built.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use pika_migrate_core::config::{self, ConfigError, PipelineConfig, SourceConfig};
use pika_migrate_core::filter::{database_after, keeps_databases_apart, FilterChain, FilterConfig};
use pika_migrate_core::fleet::Fleet;
use pika_migrate_core::pika::storage::layout::find_databases;
use pika_migrate_core::pipeline::Pipeline;
use pika_migrate_core::replay::clock::wall_now_ms;
use pika_migrate_core::replay::{AsOf, ReplayClock};
use pika_migrate_core::sink::Sink;
use pika_migrate_core::source::binlog::{binlog_dirs, db_of_dir, BinlogSource};
use pika_migrate_core::source::capture::CaptureSource;
use pika_migrate_core::source::pika::turns::FullSyncTurns;
use pika_migrate_core::source::pika::{DatabaseCheck, PikaSource, ReplicaError};
use pika_migrate_core::source::snapshot::SnapshotSource;
use pika_migrate_core::source::Source;
use pika_migrate_sinks::redis::checkpoint::{bad_migration_name, migration_name};
use pika_migrate_sinks::SinkConfig;

pub type Config = PipelineConfig<SinkConfig>;
/// A pipeline file split into one pipeline per source.
pub type FleetConfig = config::FleetConfig<SinkConfig>;

/// Source databases the sinks cannot take (a Redis without a database for one), found
/// before anything was written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DatabasesRefused(pub String);

/// Reads a pipeline file, one source or a fleet, into one checked pipeline per source.
pub fn load_fleet(path: &Path) -> Result<FleetConfig, ConfigError> {
    let mut fleet: FleetConfig = config::load_fleet(path)?;
    for member in &mut fleet.members {
        if let Some(name) = &member.name {
            sinks_of_source(&mut member.config, name).map_err(|message| ConfigError::Unplaced {
                path: path.to_owned(),
                message,
            })?;
        }
        check(path, &member.config)?;
    }
    Ok(fleet)
}

/// The pipeline of a file with one source, or of the source named `name` in a fleet.
pub fn load_source(path: &Path, name: Option<&str>) -> Result<Config, ConfigError> {
    let fleet = load_fleet(path)?;
    let names = || {
        fleet
            .members
            .iter()
            .filter_map(|m| m.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unplaced = |message: String| ConfigError::Unplaced {
        path: path.to_owned(),
        message,
    };
    match name {
        None if fleet.members.len() == 1 => Ok(fleet.members[0].config.clone()),
        None => Err(unplaced(format!(
            "the file names several sources ({}): say which with --source NAME",
            names()
        ))),
        Some(name) => fleet
            .members
            .iter()
            .find(|m| m.name.as_deref() == Some(name))
            .map(|m| m.config.clone())
            .ok_or_else(|| {
                unplaced(format!(
                    "no source is named {name:?} here (the file names: {})",
                    if fleet.is_fleet() {
                        names()
                    } else {
                        "none; it has one `source:`".into()
                    }
                ))
            }),
    }
}

/// A fleet's sinks as one source's pipeline has them: a file or capture sink writes
/// the path with `{source}` replaced by the source's name (several sources cannot
/// share one file); a Redis sink given a `migration:` name adds `/<name>` to it, so
/// each source's checkpoint keys stay its own (by default each is named after its
/// master already).
fn sinks_of_source(config: &mut Config, name: &str) -> Result<(), String> {
    for (i, sink) in config.sinks.iter_mut().enumerate() {
        let path = match sink {
            SinkConfig::File(f) => &mut f.path,
            SinkConfig::Capture(c) => &mut c.path,
            SinkConfig::Redis(r) => {
                if let Some(m) = &mut r.migration {
                    *m = format!("{m}/{name}");
                }
                continue;
            }
            SinkConfig::Kafka(_) | SinkConfig::Blackhole(_) => continue,
        };
        let text = path.to_string_lossy();
        if !text.contains("{source}") {
            return Err(format!(
                "sinks[{i}].path: several sources cannot write one file: put `{{source}}` in the path ({text:?}), each source then writes its own"
            ));
        }
        *path = text.replace("{source}", name).into();
    }
    Ok(())
}

/// What serde cannot check of one pipeline: sinks, filters, databases, names.
fn check(path: &Path, config: &Config) -> Result<(), ConfigError> {
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
    check_databases_apart(config).map_err(|message| ConfigError::Unplaced {
        path: path.to_owned(),
        message,
    })?;
    for (i, sink) in config.sinks.iter().enumerate() {
        if let SinkConfig::Redis(r) = sink {
            if let Some(why) = r.migration.as_deref().and_then(bad_migration_name) {
                return Err(ConfigError::Unplaced {
                    path: path.to_owned(),
                    message: format!("sinks[{i}].migration: {why}"),
                });
            }
        }
    }
    Ok(())
}

/// The name a migration from `source` has in its Redis sinks' checkpoint keys when
/// `migration:` does not give one: what the source reads from. A live master is the
/// address it is reached at (its work_dir is bound to it too), with the databases
/// followed when `dbs` picks some; an offline source, its path made absolute. A run
/// resumed from the same source finds its keys; another source's are never read.
pub fn default_migration(source: &SourceConfig) -> String {
    let absolute = |p: &Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_owned())
            .display()
            .to_string()
    };
    let text = match source {
        SourceConfig::Pika(p) => match &p.dbs {
            None => format!("pika@{}", p.master),
            Some(dbs) => {
                let dbs: Vec<String> = dbs.iter().map(u32::to_string).collect();
                format!("pika@{}/db{}", p.master, dbs.join(","))
            }
        },
        SourceConfig::Snapshot(s) => format!("snapshot@{}", absolute(&s.path)),
        SourceConfig::Binlog(b) => format!("binlog@{}", absolute(&b.path)),
        SourceConfig::Capture(c) => format!("capture@{}", absolute(&c.path)),
    };
    migration_name(&text)
}

/// `sink` with its migration's name filled in when it is a Redis sink without one.
fn with_migration(sink: &SinkConfig, source: &SourceConfig) -> SinkConfig {
    match sink {
        SinkConfig::Redis(r) if r.migration.is_none() => {
            let mut r = r.clone();
            r.migration = Some(default_migration(source));
            SinkConfig::Redis(r)
        }
        other => other.clone(),
    }
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

/// Whether the sinks can take the events of a set of source databases: a cluster that
/// would mix them, a Redis that lacks a database for one. Plain data, so a live source
/// asks it once MetaSync names the master's databases.
struct TargetDatabases {
    /// Why several databases must not reach the sinks, if they must not.
    mixing: Option<String>,
    /// Per sink that cannot write every database: its index, name, and the event
    /// databases it can write.
    limits: Vec<(usize, String, std::ops::Range<u32>)>,
    filters: Vec<FilterConfig>,
}

impl TargetDatabases {
    fn of(config: &Config, sinks: &[Box<dyn Sink>]) -> TargetDatabases {
        TargetDatabases {
            mixing: databases_would_mix(config),
            limits: sinks
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i, s.name(), s.databases()?)))
                .collect(),
            filters: config.filters.clone(),
        }
    }

    /// The reason events of `dbs` cannot be written, if they cannot.
    fn check(&self, dbs: &[u32]) -> Result<(), String> {
        if let (Some(why), true) = (&self.mixing, dbs.len() > 1) {
            return Err(why.clone());
        }
        self.check_limits(dbs)
    }

    /// The reason a sink lacks a database for events of `dbs`, if one does.
    fn check_limits(&self, dbs: &[u32]) -> Result<(), String> {
        for (i, name, range) in &self.limits {
            let lacking: Vec<String> = dbs
                .iter()
                .filter_map(|&db| {
                    let to = database_after(&self.filters, db);
                    (!range.contains(&to)).then(|| match to == db {
                        true => format!("db{db}"),
                        false => format!("db{db} (mapped to {to})"),
                    })
                })
                .collect();
            if lacking.is_empty() {
                continue;
            }
            let has = match range.end {
                0 => "no database for it".to_owned(),
                1 => "only database 0 for it".to_owned(),
                n => format!("databases 0 to {} for it", n - 1),
            };
            return Err(format!(
                "sinks[{i}] ({name}) has {has} (after its url's database), so Pika's {} would \
                 have nowhere to go. Map {} to a database it has with a `db` filter \
                 (`map: {{{}: 0}}`), adding a `rename` that names `{{db}}` (`add_prefix: \
                 \"db{{db}}:\"`) to keep their keys apart where databases share one; or follow \
                 fewer with `dbs`",
                lacking.join(", "),
                if lacking.len() == 1 { "it" } else { "them" },
                dbs.iter()
                    .find(|db| !range.contains(&database_after(&self.filters, **db)))
                    .unwrap_or(&0),
            ));
        }
        Ok(())
    }
}

/// The source of `pipeline`, without the sinks' check of its databases (`validate`).
pub fn build_source(pipeline: &Config) -> Result<Box<dyn Source>, ReplicaError> {
    build_source_checked(pipeline, None, None)
}

fn build_source_checked(
    pipeline: &Config,
    targets: Option<TargetDatabases>,
    turns: Option<Arc<FullSyncTurns>>,
) -> Result<Box<dyn Source>, ReplicaError> {
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
            threads: pika_migrate_core::config::scan_threads(s.scan_threads, |_| 1),
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
            // there those the sinks cannot take (mixed in a cluster, or lacking in a
            // Redis), before anything of them is written.
            let targets = targets.unwrap_or_else(|| TargetDatabases {
                mixing: databases_would_mix(pipeline),
                limits: Vec::new(),
                filters: pipeline.filters.clone(),
            });
            let check: DatabaseCheck = Box::new(move |dbs| targets.check(dbs));
            let source = source.check_databases(check);
            match turns {
                Some(turns) => Box::new(source.with_turns(turns)),
                None => Box::new(source),
            }
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

/// Every pipeline of the file, run together; a fleet's live sources take turns for
/// their full syncs.
pub async fn build_fleet(fleet: &FleetConfig) -> anyhow::Result<Fleet> {
    let settings = &fleet.settings;
    let turns = fleet.is_fleet().then(|| {
        FullSyncTurns::new(
            settings.max_parallel_full_syncs,
            settings.max_parallel_full_syncs_per_host,
        )
    });
    let mut members = Vec::new();
    for member in &fleet.members {
        let pipeline = build_with(&member.config, turns.clone())
            .await
            .with_context(|| match &member.name {
                Some(name) => format!("source {name}"),
                None => "the pipeline".to_owned(),
            })?;
        members.push((member.name.clone(), pipeline));
    }
    Ok(Fleet::new(members, settings.on_source_error))
}

async fn build_with(
    config: &Config,
    turns: Option<Arc<FullSyncTurns>>,
) -> anyhow::Result<Pipeline> {
    let mut sinks = Vec::new();
    for (i, sink) in config.sinks.iter().enumerate() {
        sinks.push(
            pika_migrate_sinks::build(&with_migration(sink, &config.source))
                .await
                .with_context(|| format!("sinks[{i}]: cannot start"))?,
        );
    }
    let targets = TargetDatabases::of(config, &sinks);
    // An offline source's databases are known now: refused before anything is written.
    if let Some(dbs) = source_databases(&config.source) {
        let dbs: Vec<u32> = dbs.into_iter().collect();
        // (Whether they would mix in a cluster, `load` checked with the dbs themselves.)
        targets.check_limits(&dbs).map_err(|why| {
            let list: Vec<String> = dbs.iter().map(|d| format!("db{d}")).collect();
            DatabasesRefused(format!(
                "the source holds databases {}, but {why}",
                list.join(", ")
            ))
        })?;
    }
    let source = build_source_checked(config, Some(targets), turns)?;
    let filters = FilterChain::build(&config.filters)?;
    Ok(Pipeline::new(source, sinks).with_filters(filters))
}
