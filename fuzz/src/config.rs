//! The pipeline file: `${VAR}` interpolation, serde_yaml into the real config types
//! (every source, filter and sink), the line:column finder, and what `validate` builds
//! from a file that parsed.

use std::path::Path;

use bytes::Bytes;
use pika_migrate_core::config::{self, ConfigError, Locations, PipelineConfig, SourceConfig};
use pika_migrate_core::event::{BinlogOffset, Chunk, DataType, Event, Op, Part, Position};
use pika_migrate_core::filter::{FilterChain, FilterConfig};
use pika_migrate_core::source::pika::PikaSource;
use pika_migrate_sinks::SinkConfig;

/// Variables set in the environment the target sees: short names only.
fn env(name: &str) -> Option<String> {
    (name.len() <= 2).then(|| format!("v{name}"))
}

/// Two events for a chain built from the file: a snapshot chunk and a command.
fn sample_events() -> Vec<Event> {
    let at = BinlogOffset::new(1, 100);
    let event = |key: &'static [u8], data_type, op| Event {
        db: 0,
        source_db: 0,
        key: Bytes::from_static(key),
        data_type: Some(data_type),
        op,
        position: Position::Snapshot { at, seq: 0 },
        exec_time: None,
    };
    vec![
        event(
            b"user:1",
            DataType::Hash,
            Op::Snapshot {
                chunk: Chunk::Hash(vec![(Bytes::from_static(b"f"), Bytes::from_static(b"v"))]),
                part: Part::Whole,
                expire_at_ms: Some(1_700_000_000_000),
                also_types: Default::default(),
            },
        ),
        Event {
            position: Position::Binlog {
                at,
                logic_id: 1,
                term: 0,
            },
            exec_time: Some(1_700_000_000),
            ..event(
                b"k",
                DataType::String,
                Op::Command {
                    argv: ["SET", "k", "v", "PXAT", "1700000000000"]
                        .map(|a| Bytes::from_static(a.as_bytes()))
                        .to_vec(),
                },
            )
        },
    ]
}

/// Parses `data` as a pipeline file named `fuzz.yaml`. An error is placed at a line
/// and column inside the file (or says it cannot be placed) and names the file; a file
/// that parses builds its filters (plugins are not loaded: a path from the input would
/// run a library's initialisers) and its live source's addresses, or says why not.
pub fn yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.yaml");
    match config::parse::<PipelineConfig<SinkConfig>>(path, &text, env) {
        Ok(config) => {
            let filters: Vec<FilterConfig> = config
                .filters
                .into_iter()
                .filter(|f| !matches!(f, FilterConfig::Plugin(_)))
                .collect();
            if let Ok(chain) = FilterChain::build(&filters) {
                let mut batch = sample_events();
                if let Err(e) = chain.apply(&mut batch) {
                    assert!(e.to_string().contains("filters["), "{e}");
                }
            }
            if let SourceConfig::Pika(p) = &config.source {
                let _ = PikaSource::new(p);
            }
        }
        Err(ConfigError::Invalid {
            line,
            column,
            message,
            ..
        }) => {
            // YAML breaks lines at \n, \r\n and a lone \r alike.
            let lines = text
                .replace("\r\n", "\n")
                .replace('\r', "\n")
                .lines()
                .count();
            assert!(line >= 1 && column >= 1, "{line}:{column}: {message}");
            assert!(
                line <= lines + 1,
                "line {line} of a {lines}-line file: {message}"
            );
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.yaml"), "{e}"),
    }
    // The finder on its own, asked about any path and message.
    let locations = Locations::of(&text);
    let mut words = text.split_whitespace();
    let (p, m) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if let Some((line, column)) = locations.find(p, m) {
        assert!(line >= 1 && column >= 1);
    }
    let _ = config::interpolate(&text, env);
}
