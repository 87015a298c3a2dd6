//! `pika-migrate run -c FILE`: runs a pipeline; offline sources exit 0 when done, with a
//! one-line summary on standard error.

use std::path::Path;
use std::process::ExitCode;

use pika_migrate_core::pipeline::RunReport;

use super::progress::Progress;
use crate::pipeline_file;

pub async fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = pipeline_file::load_fleet(path)?;
    let fleet = pipeline_file::build_fleet(&config).await?;
    let watched = fleet.status();
    let status = match &config.status {
        Some(s) => {
            let control = super::status::Control {
                stop: fleet.stop.clone(),
                pause: fleet.pause.clone(),
                token: s.token.clone(),
                loopback: s.listen.ip().is_loopback(),
            };
            Some(super::status::serve(s.listen, watched.clone(), control).await?)
        }
        None => None,
    };
    let progress = Progress::start(watched.members());
    let stop = fleet.stop.clone();
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping: finishing what was read, then exiting");
        stop.stop();
    });
    let outcomes = fleet.run().await;
    signals.abort();
    if let Some(status) = status {
        status.abort();
    }
    progress.finish();
    let mut first_error = None;
    for (name, outcome) in outcomes {
        match (outcome, name) {
            (Ok(report), name) => print_report(name.as_deref(), &report),
            // One source: its error, as it is.
            (Err(e), None) => return Err(e.into()),
            (Err(e), Some(name)) => {
                eprintln!("[{name}] failed: {e}");
                if first_error.is_none() {
                    first_error = Some(anyhow::Error::new(e).context(format!("source {name}")));
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// What a source's run did, on standard error (each line after `[name] ` in a fleet).
fn print_report(name: Option<&str>, report: &RunReport) {
    let tag = name.map(|n| format!("[{n}] ")).unwrap_or_default();
    let say = |line: String| eprintln!("{tag}{line}");
    for (_, sink) in &report.sinks {
        for line in &sink.lines {
            say(line.clone());
        }
    }
    for (note, count) in &report.source.notes {
        say(format!("binlog: {count} {}", note.describe()));
    }
    if let Some(scan) = &report.source.scan {
        if scan.expired > 0 {
            say(format!("snapshot: {} expired key(s) skipped", scan.expired));
        }
        for line in scan.unsupported_lines() {
            say(format!("snapshot: {line}"));
        }
    }
    if report.source.expired_events > 0 {
        say(format!(
            "capture: {} snapshot event(s) of expired keys skipped",
            report.source.expired_events
        ));
    }
    let late = &report.source.late_expiries;
    if late.held > 0 {
        say(format!(
            "late replay: {} expiry(ies) already past held back; {} key(s) released (deleted unless the master had kept them), {} cancelled by a later command{}",
            late.held,
            late.released,
            late.cancelled,
            if late.released_early > 0 {
                format!(", {} released early (too many held)", late.released_early)
            } else {
                String::new()
            }
        ));
    }
    if report.source.skipped_records > 0 {
        say(format!(
            "capture: {} damaged record(s) skipped",
            report.source.skipped_records
        ));
    }
    let ends = &report.source.end_positions;
    match ends.iter().next() {
        Some((_, end)) if ends.len() == 1 => say(format!("source position at the end: {end}")),
        Some(_) => {
            let each: Vec<String> = ends
                .iter()
                .map(|(db, at)| format!("{db}: \"{at}\""))
                .collect();
            say(format!(
                "source positions at the end, per database: {{{}}}",
                each.join(", ")
            ));
        }
        None => {}
    }
    say(format!(
        "{}{}",
        report.summary(),
        peak_rss()
            .map(|kib| format!(", peak RSS {} MiB", kib / 1024))
            .unwrap_or_default()
    ));
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still stops cleanly");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The process's peak resident memory in KiB (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
