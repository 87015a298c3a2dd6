//! The filter chain: built-in filters configured in YAML, applied in order to every
//! event between the source and the sinks. A filter keeps an event, changes it in place
//! (rename, expiry), or drops it.

mod command;
mod db;
pub mod glob;
mod key;
mod kind;
pub mod plugin;
mod rename;
mod ttl;

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::event::Event;

pub use key::{KeyFilterConfig, Pattern};

/// One filter of the `filters:` list.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum FilterConfig {
    /// Keep or drop keys by glob, prefix or regex.
    Key(KeyFilterConfig),
    /// Keep or drop data types.
    Type(KeepOrDrop),
    /// Keep or drop binlog commands by name.
    Command(KeepOrDrop),
    /// Add, strip or replace a key prefix, on every key argument.
    Rename(rename::RenameFilterConfig),
    /// Drop soon-expiring keys, or set or clear expiries.
    Ttl(ttl::TtlFilterConfig),
    /// Move a source database's events to another database.
    Db(db::DbFilterConfig),
    /// A shared library built with the `pika-migrate-plugin` SDK.
    Plugin(PluginConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The `.so` file.
    pub path: std::path::PathBuf,
    /// Handed to the plugin as JSON text.
    #[serde(default)]
    pub config: Option<serde_yaml::Value>,
}

/// What a filter made of an event.
pub enum Outcome {
    Keep,
    Drop,
    /// Replaced by these (possibly none); they go on through the later filters.
    Replace(Vec<Event>),
}

/// `keep: [...]` or `drop: [...]`, exactly one of them (the `type` and `command`
/// filters).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeepOrDrop {
    #[serde(default)]
    pub keep: Vec<String>,
    #[serde(default)]
    pub drop: Vec<String>,
}

impl KeepOrDrop {
    /// The names, and whether they are the ones to keep.
    fn names(&self) -> Result<(&[String], bool), String> {
        match (self.keep.is_empty(), self.drop.is_empty()) {
            (false, true) => Ok((&self.keep, true)),
            (true, false) => Ok((&self.drop, false)),
            _ => Err("give either `keep` or `drop`".into()),
        }
    }
}

/// What a filter does with an event: keep it (possibly changed), drop it, replace it,
/// or fail (plugins).
pub trait Filter: Send + Sync {
    fn apply(&self, event: &mut Event) -> Result<Outcome, String>;

    /// How errors name the filter.
    fn name(&self) -> String;
}

/// A built-in filter: keeps `event` (possibly changed) with `true`, drops it with
/// `false`, never fails.
pub trait Rule: Send + Sync {
    fn apply(&self, event: &mut Event) -> bool;
}

impl<R: Rule> Filter for R {
    fn apply(&self, event: &mut Event) -> Result<Outcome, String> {
        Ok(if Rule::apply(self, event) {
            Outcome::Keep
        } else {
            Outcome::Drop
        })
    }

    fn name(&self) -> String {
        "built-in".into()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("filters[{index}] ({kind}): {message}")]
pub struct FilterError {
    pub index: usize,
    pub kind: String,
    pub message: String,
}

/// The configured filters, in order.
#[derive(Default)]
pub struct FilterChain {
    filters: Vec<Box<dyn Filter>>,
}

impl FilterChain {
    pub fn build(configs: &[FilterConfig]) -> Result<FilterChain, FilterError> {
        let mut filters: Vec<Box<dyn Filter>> = Vec::new();
        for (index, config) in configs.iter().enumerate() {
            let (kind, built): (&'static str, Result<Box<dyn Filter>, String>) = match config {
                FilterConfig::Key(c) => ("key", c.build().map(|f| Box::new(f) as Box<dyn Filter>)),
                FilterConfig::Type(c) => (
                    "type",
                    kind::TypeFilter::build(c).map(|f| Box::new(f) as Box<dyn Filter>),
                ),
                FilterConfig::Command(c) => (
                    "command",
                    command::CommandFilter::build(c).map(|f| Box::new(f) as Box<dyn Filter>),
                ),
                FilterConfig::Rename(c) => {
                    ("rename", c.build().map(|f| Box::new(f) as Box<dyn Filter>))
                }
                FilterConfig::Ttl(c) => ("ttl", c.build().map(|f| Box::new(f) as Box<dyn Filter>)),
                FilterConfig::Db(c) => ("db", c.build().map(|f| Box::new(f) as Box<dyn Filter>)),
                FilterConfig::Plugin(c) => {
                    let json = serde_json::to_string(&c.config).unwrap_or_else(|_| "null".into());
                    (
                        "plugin",
                        plugin::PluginFilter::load(&c.path, &json)
                            .map(|f| Box::new(f) as Box<dyn Filter>),
                    )
                }
            };
            filters.push(built.map_err(|message| FilterError {
                index,
                kind: kind.to_owned(),
                message,
            })?);
        }
        Ok(FilterChain { filters })
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Applies every filter to every event of `batch`; returns how many fewer events
    /// there are. A filter's failure names it; the events before it stay in `batch`.
    pub fn apply(&self, batch: &mut Vec<Event>) -> Result<usize, FilterError> {
        if self.filters.is_empty() {
            return Ok(0);
        }
        let input = std::mem::take(batch);
        let before = input.len();
        for event in input {
            self.run_from(0, event, batch)?;
        }
        Ok(before.saturating_sub(batch.len()))
    }

    fn run_from(
        &self,
        start: usize,
        mut event: Event,
        out: &mut Vec<Event>,
    ) -> Result<(), FilterError> {
        for (index, filter) in self.filters.iter().enumerate().skip(start) {
            let outcome = filter.apply(&mut event).map_err(|message| FilterError {
                index,
                kind: filter.name(),
                message: format!(
                    "{message} (key {}, at {})",
                    crate::display::display_key(&event.key),
                    event.position
                ),
            })?;
            match outcome {
                Outcome::Keep => {}
                Outcome::Drop => return Ok(()),
                Outcome::Replace(events) => {
                    for e in events {
                        self.run_from(index + 1, e, out)?;
                    }
                    return Ok(());
                }
            }
        }
        out.push(event);
        Ok(())
    }
}

/// Whether keys of the source databases `dbs` stay apart when everything lands in one
/// Redis database (a cluster's db 0): true when there is one database, or when a
/// `rename` names `{db}` while the databases are still distinct (a `db` map merging two
/// before it would make `{db}` the same for both). `None` when a plugin runs before
/// that point: it may keep them apart or not.
pub fn keeps_databases_apart(filters: &[FilterConfig], dbs: &BTreeSet<u32>) -> Option<bool> {
    let mut now: BTreeMap<u32, u32> = dbs.iter().map(|d| (*d, *d)).collect();
    let distinct =
        |now: &BTreeMap<u32, u32>| now.values().collect::<BTreeSet<_>>().len() == now.len();
    if dbs.len() <= 1 {
        return Some(true);
    }
    for f in filters {
        match f {
            FilterConfig::Db(map) => {
                for db in now.values_mut() {
                    if let Some(to) = map.map.get(db) {
                        *db = *to;
                    }
                }
            }
            FilterConfig::Rename(r) if r.tags_database() => return Some(distinct(&now)),
            FilterConfig::Plugin(_) => return None,
            _ => {}
        }
    }
    Some(false)
}

/// The database events of source database `db` are in after the filters' `db` maps
/// (plugins replace keys and values, never an event's database).
pub fn database_after(filters: &[FilterConfig], db: u32) -> u32 {
    filters.iter().fold(db, |now, f| match f {
        FilterConfig::Db(map) => map.map.get(&now).copied().unwrap_or(now),
        _ => now,
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! Fixture events for the filters' tests.
    use std::path::PathBuf;

    use crate::event::Event;
    use crate::pika::binlog::{BinlogReader, ReadOutcome};
    use crate::pika::storage::{ChunkLimits, Snapshot};
    use crate::source::binlog::entry_to_event;
    use crate::source::SourceReport;

    fn fixture(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/pika-v3.3.6")
            .join(rel)
    }

    pub fn snapshot_events() -> Vec<Event> {
        let snapshot = Snapshot::open(&fixture("dump")).unwrap();
        let mut out = Vec::new();
        let mut seq = 0;
        for db in &snapshot.dbs {
            db.scan(ChunkLimits::default(), 0, &mut seq, &mut |e| {
                out.push(e);
                true
            })
            .unwrap();
        }
        out
    }

    /// The streams of the Pika 3.5.5 fixture dump, in chunks of at most 50 entries (its
    /// 298-entry stream in several).
    pub fn stream_events() -> Vec<Event> {
        let dump =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/pika-v3.5.5/dump");
        let snapshot = Snapshot::open(&dump).unwrap();
        let limits = ChunkLimits {
            elements: 50,
            ..ChunkLimits::default()
        };
        let mut out = Vec::new();
        snapshot.dbs[0]
            .scan(limits, 0, &mut 0, &mut |e| {
                if e.data_type == Some(crate::event::DataType::Stream) {
                    out.push(e);
                }
                true
            })
            .unwrap();
        out
    }

    pub fn binlog_events() -> Vec<Event> {
        let mut reader = BinlogReader::open(&fixture("binlog"), None).unwrap();
        let mut report = SourceReport::default();
        let mut out = Vec::new();
        while let ReadOutcome::Entry(e) = reader.read_next().unwrap() {
            out.extend(
                entry_to_event(
                    0,
                    e,
                    crate::pika::normalize::Dialect::default(),
                    &mut report,
                )
                .unwrap(),
            );
        }
        out
    }
}

#[cfg(test)]
mod database_tests {
    use super::*;

    #[test]
    fn databases_after_the_maps() {
        let filters = |yaml: &str| serde_yaml::from_str::<Vec<FilterConfig>>(yaml).unwrap();
        let maps = filters("[{type: db, map: {1: 0, 2: 5}}, {type: db, map: {5: 3}}]");
        assert_eq!(database_after(&maps, 1), 0);
        assert_eq!(database_after(&maps, 2), 3, "maps apply in turn");
        assert_eq!(database_after(&maps, 7), 7);
    }

    fn apart(yaml: &str, dbs: &[u32]) -> Option<bool> {
        let filters: Vec<FilterConfig> = serde_yaml::from_str(yaml).unwrap();
        keeps_databases_apart(&filters, &dbs.iter().copied().collect())
    }

    #[test]
    fn databases_stay_apart_only_when_a_rename_names_them_while_distinct() {
        assert_eq!(apart("[]", &[0]), Some(true));
        assert_eq!(apart("[]", &[0, 1]), Some(false));
        let tagged = "[{type: rename, add_prefix: 'db{db}:'}]";
        assert_eq!(apart(tagged, &[0, 1, 2]), Some(true));
        // A prefix without {db} does not separate them.
        assert_eq!(
            apart("[{type: rename, add_prefix: 'x:'}]", &[0, 1]),
            Some(false)
        );
        // Merged before the rename: {db} is the same for both.
        let merged = "[{type: db, map: {1: 0}}, {type: rename, add_prefix: '{db}:'}]";
        assert_eq!(apart(merged, &[0, 1]), Some(false));
        // Moved apart first, then tagged.
        let moved = "[{type: db, map: {1: 5}}, {type: rename, add_prefix: '{db}:'}]";
        assert_eq!(apart(moved, &[0, 1]), Some(true));
        assert_eq!(apart("[{type: plugin, path: x.so}]", &[0, 1]), None);
    }
}
