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
use crate::pika::normalize::{Dialect, NormalizeError, Note, Plan};
use crate::replay::{Replay, ReplayClock};

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
    /// The moment the binlog is replayed as of: which expiries have passed, and what
    /// is left of the others.
    pub clock: ReplayClock,
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
/// `None` when the item carries nothing to apply (padding). The entry's arguments move
/// into the event.
pub fn entry_to_event(
    db: u32,
    entry: BinlogEntry,
    dialect: Dialect,
    report: &mut SourceReport,
) -> Result<Option<Event>, NormalizeError> {
    Ok(entry_to_named_event(db, entry, dialect, report)?.map(|(event, _)| event))
}

/// [`entry_to_event`], with the command's name as it was looked up (so the replay that
/// follows need not work it out again).
pub fn entry_to_named_event(
    db: u32,
    entry: BinlogEntry,
    dialect: Dialect,
    report: &mut SourceReport,
) -> Result<Option<(Event, commands::CommandName)>, NormalizeError> {
    let BinlogEntry { end, item, .. } = entry;
    let plan = Plan::new(&item.argv, item.exec_time, dialect)?;
    if plan.note() == Some(Note::DeletedOnMaster) {
        let n = report
            .notes
            .get(&Note::DeletedOnMaster)
            .copied()
            .unwrap_or(0)
            + 1;
        if n <= 20 {
            tracing::warn!(
                position = %end,
                key = %crate::display::display_key(item.argv.get(1).map_or(&[][..], |k| k.as_ref())),
                command = %String::from_utf8_lossy(item.argv.first().map_or(&[][..], |c| c.as_ref())),
                deleted_so_far = n,
                "the Pika 4.0 master deleted this key on a PEXPIREAT/PKSETEXAT in the future (its storage read the time in the wrong unit): deleted on the target too, as the master did; the run's summary counts them all"
            );
        }
    }
    if let Some(note) = plan.note() {
        let count = report.notes.entry(note).or_insert(0);
        *count += 1;
        if *count == 1
            && matches!(
                note,
                Note::NonDeterministic | Note::Unrecognized | Note::EmptyAppend
            )
        {
            tracing::warn!(
                position = %end,
                command = %plan.logged_name(),
                note = note.as_str(),
                "binlog command may not apply identically; further ones are only counted"
            );
        }
    }
    let Some((argv, name)) = plan.into_command(item.argv) else {
        return Ok(None);
    };
    let spec = commands::lookup(name.as_str());
    let event = Event {
        db,
        source_db: db,
        key: commands::first_key_of(spec, &argv).unwrap_or_default(),
        data_type: spec.and_then(|s| s.data_type),
        op: Op::Command { argv },
        position: Position::Binlog {
            at: end,
            logic_id: item.logic_id,
            term: item.term,
        },
        exec_time: Some(item.exec_time),
    };
    Ok(Some((event, name)))
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
        let mut replay = Replay::new(self.clock);
        for log in &logs {
            replay.starts_at(log.db, log.reader.position());
        }
        let mut ready = Vec::new();
        // Passes what the replay let through; false once the pipeline stops taking.
        let mut send = |ready: &mut Vec<Event>, out: &mut EventSender| {
            for event in ready.drain(..) {
                pace.wait_blocking(out);
                if !out.push_blocking(event) {
                    return false;
                }
            }
            true
        };
        let mut ended = false;
        'reading: loop {
            for log in &mut logs {
                for _ in 0..TURN {
                    match log.reader.read_next()? {
                        ReadOutcome::Entry(entry) => {
                            log.caught_up = false;
                            report.binlog_items += 1;
                            let start = entry.start;
                            let event = entry_to_named_event(log.db, entry, self.dialect, report)
                                .map_err(|e| BinlogError::Corrupt {
                                path: log.dir.join(crate::pika::binlog::file_name(start.filenum)),
                                offset: start.offset,
                                reason: e.to_string(),
                            })?;
                            if let Some((event, name)) = event {
                                replay.pass_named(event, name.as_str(), &mut ready);
                                if !send(&mut ready, out) {
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
            if logs.iter().all(|l| l.caught_up) {
                if !self.follow {
                    ended = true;
                    break;
                }
                replay.caught_up(&mut ready);
                if !send(&mut ready, out) || !out.wait_for_more_blocking() {
                    break;
                }
            }
        }
        if ended {
            replay.finish(&mut ready);
            send(&mut ready, out);
        }
        report.late_expiries = replay.stats();
        // A read stopped early resumes where the expiries it still holds are read again.
        report.end_positions = logs
            .iter()
            .map(|l| {
                let at = l.reader.position();
                (
                    l.db,
                    replay.resume_point(l.db).map_or(at, |held| held.min(at)),
                )
            })
            .collect();
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
