//! The pipeline file as written: one `source:`, or a fleet of named `sources:` (a Pika
//! master per Codis group, say) that share the filters and sinks. A fleet becomes one
//! pipeline per source: each with its own work directory (`work_dir/<name>`), its own
//! migration identity in the sinks, its own positions, stage and retries.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{ConfigError, FilterConfig, Locations, PipelineConfig, SourceConfig, StatusConfig};

/// The file's top level, before it is split into one pipeline per source.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile<S> {
    /// The one source (this or `sources`).
    #[serde(default)]
    pub source: Option<SourceConfig>,
    /// Several sources into the same filters and sinks, each with a `name`.
    #[serde(default)]
    pub sources: Vec<NamedSource>,
    /// A fleet's work directory: each live source without its own `work_dir` gets
    /// `work_dir/<name>`.
    #[serde(default)]
    pub work_dir: Option<PathBuf>,
    /// At most this many full syncs (dump transfers) at once in the whole pipeline;
    /// default: no limit but the per-host one.
    #[serde(default)]
    pub max_parallel_full_syncs: Option<NonZeroUsize>,
    /// At most this many full syncs at once from masters on one host (they share its
    /// disk); default 1.
    #[serde(default = "one")]
    pub max_parallel_full_syncs_per_host: NonZeroUsize,
    /// What a source that fails for good does to the others: `stop` them (default) or
    /// let them `continue`.
    #[serde(default)]
    pub on_source_error: OnSourceError,
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
    pub sinks: Vec<S>,
    #[serde(default)]
    pub status: Option<StatusConfig>,
}

fn one() -> NonZeroUsize {
    NonZeroUsize::MIN
}

/// One source of a fleet.
#[derive(Debug, Clone, Deserialize)]
pub struct NamedSource {
    /// Names the source in the status, the metrics (`source` label), its work
    /// directory and its migration identity: letters, digits, `-`, `_`, `.`.
    pub name: String,
    #[serde(flatten)]
    pub source: SourceConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSourceError {
    /// One source failing for good stops every other (each saves its position).
    #[default]
    Stop,
    /// The others go on; the status names the failed one and why, and the run exits
    /// with its error once the others stop.
    Continue,
}

/// How the sources of a fleet share the masters' disks and react to one another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetSettings {
    pub max_parallel_full_syncs: Option<NonZeroUsize>,
    pub max_parallel_full_syncs_per_host: NonZeroUsize,
    pub on_source_error: OnSourceError,
}

/// One pipeline of the file: its source's name (`None` for a single `source:`).
#[derive(Debug, Clone)]
pub struct Member<S> {
    pub name: Option<String>,
    pub config: PipelineConfig<S>,
}

/// The file split into its pipelines.
#[derive(Debug, Clone)]
pub struct FleetConfig<S> {
    pub members: Vec<Member<S>>,
    pub settings: FleetSettings,
    pub status: Option<StatusConfig>,
}

impl<S> FleetConfig<S> {
    /// Whether the file names its sources (`sources:`), even only one.
    pub fn is_fleet(&self) -> bool {
        self.members.first().is_some_and(|m| m.name.is_some())
    }
}

/// Why `name` cannot name a source, if it cannot.
fn bad_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a source's name is empty".into());
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .map(|c| format!("the source name {name:?} holds {c:?}: use letters, digits, `-`, `_` and `.` (it names a directory and a metrics label)"))
}

impl<S: Clone> PipelineFile<S> {
    /// Splits the file into one pipeline per source, checking what serde cannot: one
    /// of `source`/`sources`, names unique and usable, work directories and announced
    /// addresses not shared. `text` is the file's text, to place the errors.
    pub fn into_fleet(self, path: &Path, text: &str) -> Result<FleetConfig<S>, ConfigError> {
        let places = Locations::of(text);
        let error = |field: &str, message: String| match places.find(field, &message) {
            Some((line, column)) => ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message: format!("{field}: {message}"),
            },
            None => ConfigError::Unplaced {
                path: path.to_owned(),
                message: format!("{field}: {message}"),
            },
        };
        let settings = FleetSettings {
            max_parallel_full_syncs: self.max_parallel_full_syncs,
            max_parallel_full_syncs_per_host: self.max_parallel_full_syncs_per_host,
            on_source_error: self.on_source_error,
        };
        let pipeline = |source: SourceConfig| PipelineConfig {
            source,
            filters: self.filters.clone(),
            sinks: self.sinks.clone(),
            status: self.status.clone(),
        };
        let members = match (self.source.clone(), self.sources.is_empty()) {
            (Some(_), false) => {
                return Err(error(
                    "sources",
                    "give `source` (one) or `sources` (a fleet), not both".into(),
                ))
            }
            (None, true) => {
                return Err(ConfigError::Unplaced {
                    path: path.to_owned(),
                    message: "missing field `source` (or `sources`, a list of named sources)"
                        .into(),
                })
            }
            (Some(source), true) => {
                if let SourceConfig::Pika(p) = &source {
                    if p.work_dir.as_os_str().is_empty() {
                        return Err(error("source", "missing field `work_dir`".into()));
                    }
                }
                vec![Member {
                    name: None,
                    config: pipeline(source),
                }]
            }
            (None, false) => {
                let mut members = Vec::new();
                let mut names = BTreeSet::new();
                let mut work_dirs = BTreeSet::new();
                let mut announced = BTreeSet::new();
                for (i, named) in self.sources.iter().enumerate() {
                    let field = format!("sources[{i}]");
                    if let Some(why) = bad_name(&named.name) {
                        return Err(error(&format!("{field}.name"), why));
                    }
                    if !names.insert(named.name.clone()) {
                        return Err(error(
                            &format!("{field}.name"),
                            format!("another source is named {:?} already", named.name),
                        ));
                    }
                    let mut source = named.source.clone();
                    if let SourceConfig::Pika(p) = &mut source {
                        if p.work_dir.as_os_str().is_empty() {
                            let Some(base) = &self.work_dir else {
                                return Err(error(
                                    &field,
                                    "no `work_dir`: give the source one, or the file a top-level `work_dir` (each source then works in work_dir/<name>)".into(),
                                ));
                            };
                            p.work_dir = base.join(&named.name);
                        }
                        if !work_dirs.insert(p.work_dir.clone()) {
                            return Err(error(
                                &format!("{field}.work_dir"),
                                format!(
                                    "{} is another source's work_dir already: one per master",
                                    p.work_dir.display()
                                ),
                            ));
                        }
                        if !announced.insert(p.announce.clone()) {
                            return Err(error(
                                &format!("{field}.announce"),
                                format!("{} is announced by another source already: each replica needs its own address (a 3.2–3.4 master pushes its dump to its port + 1000)", p.announce),
                            ));
                        }
                    }
                    members.push(Member {
                        name: Some(named.name.clone()),
                        config: pipeline(source),
                    });
                }
                members
            }
        };
        Ok(FleetConfig {
            members,
            settings,
            status: self.status,
        })
    }
}
