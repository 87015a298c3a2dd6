//! The `binlog` source: Pika binlog files replayed as commands a Redis target can apply,
//! from a position, optionally following the active file as it grows.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{run_blocking, EventSender, RateLimit, Source, SourceError, SourceReport};
use crate::config::BinlogFrom;
use crate::event::{Event, Op, Position};
use crate::metrics::Metrics;
use crate::pika::binlog::{BinlogEntry, BinlogError, BinlogReader, ReadOutcome};
use crate::pika::commands;
use crate::pika::normalize::{normalize_as, Dialect, NormalizeError, Note};

pub struct BinlogSource {
    /// One database's binlog directory, or Pika's `log/` holding every `log_db<N>/`.
    pub path: PathBuf,
    pub from: BinlogFrom,
    pub follow: bool,
    /// The database of a single binlog directory.
    pub db: u32,
    /// At most this many events per second.
    pub rate: Option<u64>,
    /// Which Pika wrote the binlog.
    pub dialect: Dialect,
}

/// The database a binlog directory belongs to, from its name (`log_db3` → 3).
pub fn db_of_dir(path: &std::path::Path) -> u32 {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("log_db"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Turns one binlog entry into the event to apply, counting what normalizing did.
/// `None` when the item carries nothing to apply (padding).
pub fn entry_to_event(
    db: u32,
    entry: &BinlogEntry,
    dialect: Dialect,
    report: &mut SourceReport,
) -> Result<Option<Event>, NormalizeError> {
    let item = &entry.item;
    let normalized = normalize_as(&item.argv, item.exec_time, dialect)?;
    if let Some(note) = normalized.note {
        let count = report.notes.entry(note).or_insert(0);
        *count += 1;
        if *count == 1
            && matches!(
                note,
                Note::NonDeterministic | Note::Unrecognized | Note::EmptyAppend
            )
        {
            tracing::warn!(
                position = %entry.end,
                command = %item.command_name(),
                note = note.as_str(),
                "binlog command may not apply identically; further ones are only counted"
            );
        }
    }
    let Some(argv) = normalized.argv else {
        return Ok(None);
    };
    let name = commands::name_of(&argv);
    Ok(Some(Event {
        db,
        key: commands::first_key(&argv).unwrap_or_default(),
        data_type: commands::lookup(&name).and_then(|s| s.data_type),
        op: Op::Command { argv },
        position: Position::Binlog {
            at: entry.end,
            logic_id: item.logic_id,
            term: item.term,
        },
        exec_time: Some(item.exec_time),
    }))
}

/// Entries read from one database's binlog before the next database's turn, so that
/// following several binlogs keeps each of them moving.
const TURN: usize = 1024;

/// The binlogs under `path`: the directory itself when it is one (its `manifest`), else
/// every `log_db<N>/` in it (Pika's whole `log/`), by database; `db` names the database of
/// a single directory.
pub fn binlog_dirs(path: &Path, db: u32) -> Result<Vec<(u32, PathBuf)>, BinlogError> {
    if path.join("manifest").exists() {
        return Ok(vec![(db, path.to_owned())]);
    }
    let mut dirs = Vec::new();
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            let dir = entry.path();
            let named = dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("log_db"))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(n) = named.filter(|_| dir.join("manifest").exists()) {
                dirs.push((n, dir));
            }
        }
    }
    if dirs.is_empty() {
        // Not Pika's `log/` either: the reader says what is wrong with it.
        return Ok(vec![(db, path.to_owned())]);
    }
    dirs.sort();
    Ok(dirs)
}

/// One database's binlog being read.
struct DbLog {
    db: u32,
    dir: PathBuf,
    reader: BinlogReader,
    caught_up: bool,
}

impl BinlogSource {
    fn open(&self) -> Result<Vec<DbLog>, SourceError> {
        let dirs = binlog_dirs(&self.path, self.db)?;
        let several = dirs.len() > 1;
        if let BinlogFrom::PerDb(map) = &self.from {
            if let Some(db) = map.keys().find(|db| !dirs.iter().any(|(d, _)| d == *db)) {
                return Err(BinlogError::BadStart {
                    path: self.path.clone(),
                    reason: format!("`from` names db {db}, which has no binlog here"),
                }
                .into());
            }
        }
        let mut logs = Vec::new();
        for (db, dir) in dirs {
            let from = self
                .from
                .of(db, several)
                .map_err(|reason| BinlogError::BadStart {
                    path: self.path.clone(),
                    reason,
                })?;
            tracing::info!(db, dir = %dir.display(), from = ?from, "reading a binlog");
            let reader = BinlogReader::open(&dir, from)?;
            logs.push(DbLog {
                db,
                dir,
                reader,
                caught_up: false,
            });
        }
        Ok(logs)
    }

    fn read_into(
        &self,
        out: &mut EventSender,
        report: &mut SourceReport,
    ) -> Result<(), SourceError> {
        let mut logs = self.open()?;
        let mut pace = RateLimit::new(self.rate);
        'reading: loop {
            for log in &mut logs {
                for _ in 0..TURN {
                    match log.reader.read_next()? {
                        ReadOutcome::Entry(entry) => {
                            log.caught_up = false;
                            report.binlog_items += 1;
                            let event = entry_to_event(log.db, &entry, self.dialect, report)
                                .map_err(|e| BinlogError::Corrupt {
                                    path: log
                                        .dir
                                        .join(crate::pika::binlog::file_name(entry.start.filenum)),
                                    offset: entry.start.offset,
                                    reason: e.to_string(),
                                })?;
                            if let Some(event) = event {
                                pace.wait_blocking(out);
                                if !out.push_blocking(event) {
                                    break 'reading;
                                }
                            }
                        }
                        ReadOutcome::CaughtUp => {
                            log.caught_up = true;
                            break;
                        }
                    }
                }
            }
            if logs.iter().all(|l| l.caught_up) && (!self.follow || !out.wait_for_more_blocking()) {
                break;
            }
        }
        report.end_positions = logs.iter().map(|l| (l.db, l.reader.position())).collect();
        Ok(())
    }
}

#[async_trait]
impl Source for BinlogSource {
    fn describe(&self) -> String {
        format!("binlog {}", self.path.display())
    }

    async fn run(
        self: Box<Self>,
        out: EventSender,
        _metrics: Metrics,
    ) -> Result<SourceReport, SourceError> {
        run_blocking(out, move |out, report| self.read_into(out, report)).await
    }
}
