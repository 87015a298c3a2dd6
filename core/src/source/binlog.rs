//! The `binlog` source: Pika binlog files replayed as commands a Redis target can apply,
//! from a position, optionally following the active file as it grows.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{run_blocking, EventSender, RateLimit, Source, SourceError, SourceReport};
use crate::event::{BinlogOffset, Event, Op, Position};
use crate::metrics::Metrics;
use crate::pika::binlog::{BinlogEntry, BinlogError, BinlogReader, ReadOutcome};
use crate::pika::commands;
use crate::pika::normalize::{Dialect, NormalizeError, Note, Plan};

pub struct BinlogSource {
    pub path: PathBuf,
    pub from: Option<BinlogOffset>,
    pub follow: bool,
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
/// `None` when the item carries nothing to apply (padding). The entry's arguments move
/// into the event.
pub fn entry_to_event(
    db: u32,
    entry: BinlogEntry,
    dialect: Dialect,
    report: &mut SourceReport,
) -> Result<Option<Event>, NormalizeError> {
    let BinlogEntry { end, item, .. } = entry;
    let plan = Plan::new(&item.argv, item.exec_time, dialect)?;
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
    Ok(Some(Event {
        db,
        key: commands::first_key_of(spec, &argv).unwrap_or_default(),
        data_type: spec.and_then(|s| s.data_type),
        op: Op::Command { argv },
        position: Position::Binlog {
            at: end,
            logic_id: item.logic_id,
            term: item.term,
        },
        exec_time: Some(item.exec_time),
    }))
}

impl BinlogSource {
    fn read_into(
        &self,
        out: &mut EventSender,
        report: &mut SourceReport,
    ) -> Result<(), SourceError> {
        let mut reader = BinlogReader::open(&self.path, self.from)?;
        let mut pace = RateLimit::new(self.rate);
        loop {
            match reader.read_next()? {
                ReadOutcome::Entry(entry) => {
                    report.binlog_items += 1;
                    let start = entry.start;
                    let event =
                        entry_to_event(self.db, entry, self.dialect, report).map_err(|e| {
                            BinlogError::Corrupt {
                                path: self
                                    .path
                                    .join(crate::pika::binlog::file_name(start.filenum)),
                                offset: start.offset,
                                reason: e.to_string(),
                            }
                        })?;
                    if let Some(event) = event {
                        pace.wait_blocking(out);
                        if !out.push_blocking(event) {
                            break;
                        }
                    }
                }
                ReadOutcome::CaughtUp if self.follow => {
                    if !out.wait_for_more_blocking() {
                        break;
                    }
                }
                ReadOutcome::CaughtUp => break,
            }
        }
        report.end_position = Some(reader.position());
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
