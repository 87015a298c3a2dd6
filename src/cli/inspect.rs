//! `pika-migrate inspect snapshot|binlog PATH`: prints events one per line, position
//! first, like mysqlbinlog; `--json` prints JSON objects instead.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use pika_migrate_core::event::{BinlogOffset, Chunk, Event, Op};
use pika_migrate_core::pika::binlog::{BinlogError, BinlogReader, ReadOutcome};
use pika_migrate_core::pika::normalize::{normalize_as, Dialect, Normalized};
use pika_migrate_core::pika::storage::{ChunkLimits, ScanStats, Snapshot, StorageFormat};
use pika_migrate_core::replay::AsOf;
use pika_migrate_core::source::binlog::{binlog_dirs, db_of_dir};
use pika_migrate_core::source::snapshot::unix_now;
use pika_migrate_sinks::encode::envelope::{bytes_value, envelope};
use serde_json::json;

#[derive(Debug, Subcommand)]
pub enum What {
    /// Every live key of a Pika dump or db directory.
    Snapshot {
        /// A dump (`dump/<date>/`, `db0/`) or a stopped server's db directory.
        path: PathBuf,
        /// One JSON envelope per line (values included) instead of text.
        #[arg(long)]
        json: bool,
        /// List the keys alive at this moment (unix seconds or RFC 3339 text such as
        /// 2026-11-25T01:07:48Z) instead of now. Expiry times are shown as stored.
        #[arg(long)]
        as_of: Option<AsOf>,
    },
    /// Every item of a Pika binlog directory (`write2file<N>` + `manifest`), or of every
    /// database's in Pika's `log/` (each line then names its database).
    Binlog {
        /// The binlog directory (`log/log_db0/`), or `log/`.
        path: PathBuf,
        /// JSON objects instead of text.
        #[arg(long)]
        json: bool,
        /// Start at FILENUM:OFFSET, an item boundary (a position printed by this command).
        #[arg(long)]
        from: Option<BinlogOffset>,
        /// The Pika version that wrote the binlog (`3.3`, `3.5.5`, `4.0`): the Redis
        /// command shown for a few logged commands depends on it. Default: 3.2–3.4.
        #[arg(long, value_parser = parse_dialect)]
        pika_version: Option<Dialect>,
    },
}

pub async fn inspect(what: What) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || match what {
        What::Snapshot { path, json, as_of } => snapshot(path, json, as_of),
        What::Binlog {
            path,
            json,
            from,
            pika_version,
        } => binlog(path, json, from, pika_version.unwrap_or_default()),
    })
    .await
    .context("inspect task failed")?
}

/// An argument as redis-cli shows it: bare when printable, else quoted with escapes.
fn show_arg(arg: &[u8]) -> String {
    let plain = !arg.is_empty()
        && arg
            .iter()
            .all(|b| b.is_ascii_graphic() && *b != b'"' && *b != b'\\');
    if plain {
        return String::from_utf8_lossy(arg).into_owned();
    }
    let mut out = String::from("\"");
    for &b in arg {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b if b.is_ascii_graphic() || b == b' ' => out.push(b as char),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// Bytes of an argument shown in text output; the rest is summarized.
const SHOWN_BYTES: usize = 64;

fn show_argv<A: AsRef<[u8]>>(argv: &[A]) -> String {
    argv.iter()
        .map(|a| {
            let a = a.as_ref();
            if a.len() > SHOWN_BYTES {
                format!("{}…({} bytes)", show_arg(&a[..SHOWN_BYTES]), a.len())
            } else {
                show_arg(a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A line of text for a snapshot event; values longer than a few elements are elided.
fn snapshot_line(event: &Event) -> String {
    let Op::Snapshot {
        chunk,
        part,
        expire_at_ms,
        also_types,
    } = &event.op
    else {
        return String::new();
    };
    const SHOWN: usize = 4;
    let preview = match chunk {
        Chunk::String(v) => show_argv(&[v]),
        Chunk::Hash(p) => p
            .iter()
            .take(SHOWN)
            .map(|(f, v)| format!("{}={}", show_arg(f), show_arg(v)))
            .collect::<Vec<_>>()
            .join(" "),
        Chunk::List(v) | Chunk::Set(v) => show_argv(&v[..v.len().min(SHOWN)]),
        Chunk::Zset(v) => v
            .iter()
            .take(SHOWN)
            .map(|(m, s)| format!("{}:{s:?}", show_arg(m)))
            .collect::<Vec<_>>()
            .join(" "),
        Chunk::Stream { entries, last_id } => {
            let shown: Vec<String> = (entries.iter().take(SHOWN))
                .map(|e| {
                    let fields: Vec<String> = (e.fields.iter())
                        .map(|(f, v)| format!("{}={}", show_arg(f), show_arg(v)))
                        .collect();
                    format!("{}{{{}}}", e.id, fields.join(" "))
                })
                .collect();
            format!("last_id={last_id} {}", shown.join(" "))
        }
    };
    let more = if chunk.len() > SHOWN && !matches!(chunk, Chunk::String(_)) {
        " …"
    } else {
        ""
    };
    let expiry = expire_at_ms
        .map(|ms| format!(" expire_at_ms={ms}"))
        .unwrap_or_default();
    let also: Vec<&str> = also_types.iter().map(|t| t.as_str()).collect();
    let also = if also.is_empty() {
        String::new()
    } else {
        format!(" also_types={}", also.join(","))
    };
    format!(
        "{}\tdb{}\t{}\t{}\tpart={} n={}{expiry}{also}\t{preview}{more}",
        event.position,
        event.db,
        chunk.data_type(),
        show_arg(&event.key),
        part.as_str(),
        chunk.len(),
    )
}

fn snapshot(path: PathBuf, json: bool, as_of: Option<AsOf>) -> anyhow::Result<ExitCode> {
    let now = as_of.map_or_else(unix_now, |at| at.unix_ms.div_euclid(1000));
    let snapshot = Snapshot::open(&path)?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut write_failed = None;
    let mut seq = 0;
    let mut stats = ScanStats::default();
    for db in &snapshot.dbs {
        // On stderr: stdout stays one event per line.
        eprintln!(
            "db{} {}: {}{}",
            db.index,
            db.path.display(),
            db.format.name(),
            match &db.format {
                StorageFormat::Floyd { instances } => format!(", {} instance(s)", instances.len()),
                StorageFormat::Blackwidow => String::new(),
            }
        );
        let db_stats = db.scan(ChunkLimits::default(), now, &mut seq, &mut |event| {
            let line = if json {
                envelope(&event).to_string()
            } else {
                snapshot_line(&event)
            };
            match writeln!(out, "{line}") {
                Ok(()) => true,
                Err(e) => {
                    write_failed = Some(e);
                    false
                }
            }
        })?;
        stats.add(&db_stats);
        if write_failed.is_some() {
            break;
        }
    }
    for line in stats.unsupported_lines() {
        eprintln!("{line}");
    }
    finish_output(out, write_failed)
}

fn parse_dialect(version: &str) -> Result<Dialect, String> {
    Dialect::of_version(version)
        .ok_or_else(|| format!("{version:?}: binlogs of Pika 3.2 to 4.0 are read"))
}

fn binlog(
    path: PathBuf,
    json: bool,
    from: Option<BinlogOffset>,
    dialect: Dialect,
) -> anyhow::Result<ExitCode> {
    let dirs = binlog_dirs(&path, db_of_dir(&path))?;
    let several = dirs.len() > 1;
    if several && from.is_some() {
        anyhow::bail!(
            "{}: --from names a position in one database's binlog; give that database's `log_db<N>/`",
            path.display()
        );
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (db, dir) in dirs {
        let mut reader = BinlogReader::open(&dir, from)?;
        if let Some(e) = print_items(&mut out, &mut reader, db, several, json, dialect)? {
            return finish_output(out, Some(e));
        }
    }
    finish_output(out, None)
}

/// Prints every item `reader` has, `db` first when the listing spans several databases;
/// a write error is returned as the value (to end the listing), a read error as the error.
fn print_items(
    out: &mut impl Write,
    reader: &mut BinlogReader,
    db: u32,
    several: bool,
    json: bool,
    dialect: Dialect,
) -> Result<Option<std::io::Error>, BinlogError> {
    while let ReadOutcome::Entry(entry) = reader.read_next()? {
        let item = &entry.item;
        // A command the tool would refuse is listed with the reason, not fatal here.
        let (redis, refused) = match normalize_as(&item.argv, item.exec_time, dialect) {
            Ok(redis) => (redis, None),
            Err(e) => (
                Normalized {
                    argv: None,
                    note: None,
                },
                Some(e.reason),
            ),
        };
        let rewritten = redis.note.is_some();
        let line = if json {
            json!({
                "db": db,
                "start": entry.start.to_string(),
                "end": entry.end.to_string(),
                "logic_id": item.logic_id,
                "term": item.term,
                "exec_time": item.exec_time,
                "args": item.argv.iter().map(|a| bytes_value(a)).collect::<Vec<_>>(),
                "redis": redis.argv.as_ref().map(|argv| argv.iter().map(|a| bytes_value(a)).collect::<Vec<_>>()),
                "note": redis.note.map(|n| n.as_str()),
                "error": refused,
            })
            .to_string()
        } else {
            let applied = match (&redis.argv, rewritten, &refused) {
                (_, _, Some(reason)) => format!("\t=> (refused: {reason})"),
                (Some(argv), true, _) => format!("\t=> {}", show_argv(argv)),
                (None, _, _) => "\t=> (skipped)".to_owned(),
                _ => String::new(),
            };
            format!(
                "{}{}..{}\t#{}\texec_time={}\t{}{applied}",
                if several {
                    format!("db{db}\t")
                } else {
                    String::new()
                },
                entry.start,
                entry.end,
                item.logic_id,
                item.exec_time,
                show_argv(&item.argv)
            )
        };
        if let Err(e) = writeln!(out, "{line}") {
            return Ok(Some(e));
        }
    }
    Ok(None)
}

/// A closed pipe (`| head`) ends the listing quietly; other write errors are reported.
fn finish_output(mut out: impl Write, failed: Option<std::io::Error>) -> anyhow::Result<ExitCode> {
    let failed = failed.or_else(|| out.flush().err());
    match failed {
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Some(e) => Err(e).context("writing to standard output"),
        None => Ok(ExitCode::SUCCESS),
    }
}
